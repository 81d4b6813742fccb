//! What the tests of collector-config/ share (`tests/collector_config.rs`, the configs and rules;
//! `tests/grafana_dashboard.rs`, the dashboard): the shipped files, the attributes the agent
//! emits, the metric and label names Prometheus sees, and readers of PromQL and TraceQL.
// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

pub mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fluxtrace::correlate::EngineConfig;
use fluxtrace::metrics::{DoraLabels, DoraOutcome, ErrorType, Metrics};
use fluxtrace::replay::{self, EXAMPLES};
use fluxtrace::story::Outcome;
use fluxtrace::trace::attr::*;
use fluxtrace::trace::{AttrValue, SpanRecord, Stage};
use fluxtrace_testkit::files::files;
use serde_yaml_ng::Value;

use promql::{check_promql, parse_promql};

pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/collector-config");

// ---------------------------------------------------------------------------------------------
// Files.

pub fn all_files() -> Vec<PathBuf> {
    files(Path::new(DIR))
}

pub fn rel(p: &Path) -> String {
    p.strip_prefix(DIR).unwrap_or(p).display().to_string()
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn yaml(p: &Path) -> Value {
    serde_yaml_ng::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", rel(p)))
}

pub fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// The collector configs: YAML files with `service.pipelines`.
pub fn collector_configs() -> Vec<(String, Value)> {
    all_files()
        .into_iter()
        .filter(|p| is_yaml(p))
        .map(|p| (rel(&p), yaml(&p)))
        .filter(|(_, v)| v["service"]["pipelines"].is_mapping())
        .collect()
}

pub fn keys(v: &Value) -> Vec<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .map(|k| k.as_str().expect("string keys").to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("a list of strings").to_string())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// What the agent emits: the spans of every bundled recording.

pub fn replayed_spans() -> Vec<SpanRecord> {
    let cfg = EngineConfig {
        cluster: "test".into(),
        ..EngineConfig::default()
    };
    EXAMPLES
        .iter()
        .flat_map(|(name, text)| {
            let r = replay::run(text, cfg.clone());
            assert!(r.bad.is_empty(), "{name}: {:?}", r.bad);
            r.spans().cloned().collect::<Vec<_>>()
        })
        .collect()
}

/// Attribute key → string values seen on the replayed spans, with the resource attributes each
/// span is exported under (src/export/mod.rs: `service.name` and `k8s.cluster.name`).
pub fn emitted() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in replayed_spans() {
        out.entry(SERVICE_NAME.into())
            .or_default()
            .insert(s.service.to_string());
        out.entry(K8S_CLUSTER_NAME.into())
            .or_default()
            .insert("test".into());
        for (k, v) in &s.attributes.0 {
            let e = out.entry(k.to_string()).or_default();
            if let AttrValue::Str(s) = v {
                e.insert(s.to_string());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What Prometheus sees.

/// Metric name → the labels its series carry.
pub type Exposition = BTreeMap<String, BTreeSet<String>>;

/// Prometheus label name of an OpenTelemetry attribute, as the Prometheus exporter writes it
/// (otlptranslator `NormalizeLabel`): every character outside `[A-Za-z0-9_]` becomes `_`, and a
/// leading digit gets `key_`.
pub fn label_name(attr: &str) -> String {
    let s: String = attr
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{s}")
    } else {
        s
    }
}

/// Prometheus metric name of an OpenTelemetry metric (otlptranslator, the exporter's default
/// `UnderscoreEscapingWithSuffixes`): the name split at characters outside `[A-Za-z0-9_:]`
/// and joined with `_`, the unit's word appended (`s` → `seconds`), and `_total` for monotonic
/// sums.
pub fn metric_name(prefix: Option<&str>, name: &str, unit: Option<&str>, counter: bool) -> String {
    let mut parts: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(u) = unit {
        let word = match u {
            "s" => "seconds",
            "ms" => "milliseconds",
            other => panic!("no Prometheus word for unit {other}"),
        };
        if parts.last().map(String::as_str) != Some(word) {
            parts.push(word.into());
        }
    }
    if counter && parts.last().map(String::as_str) != Some("total") {
        parts.push("total".into());
    }
    let name = parts.join("_");
    match prefix {
        Some(p) if !p.is_empty() => format!("{p}_{name}"),
        _ => name,
    }
}

/// The series the `spanmetrics` connector (as configured in `cfg`) produces, once through the
/// `prometheus` exporter (`exporter`): the connector emits `<namespace>.calls` (a monotonic
/// sum, no unit) and `<namespace>.duration` (a histogram in `histogram.unit`, default `ms`),
/// with the attributes `service.name`, `span.name`, `span.kind`, `status.code` and one per
/// dimension (connector.go; the default namespace is its `DefaultNamespace`,
/// `traces.span.metrics`).
pub fn exposition(cfg: &Value, exporter: &Value) -> Exposition {
    let namespace = cfg["namespace"].as_str().unwrap_or("traces.span.metrics");
    let unit = cfg["histogram"]["unit"].as_str().unwrap_or("ms");
    let prefix = exporter["namespace"].as_str();
    let mut labels: BTreeSet<String> = ["service.name", "span.name", "span.kind", "status.code"]
        .iter()
        .map(|a| label_name(a))
        .collect();
    for d in cfg["dimensions"].as_sequence().expect("dimensions") {
        labels.insert(label_name(d["name"].as_str().expect("a dimension name")));
    }
    if exporter["resource_to_telemetry_conversion"]["enabled"].as_bool() == Some(true) {
        labels.insert(label_name(SERVICE_NAME));
        labels.insert(label_name(K8S_CLUSTER_NAME));
    }
    let ns = |m: &str| format!("{namespace}.{m}");
    let mut out = Exposition::new();
    out.insert(
        metric_name(prefix, &ns("calls"), None, true),
        labels.clone(),
    );
    if cfg["histogram"]["disable"].as_bool() != Some(true) {
        let base = metric_name(prefix, &ns("duration"), Some(unit), false);
        let mut with_le = labels.clone();
        with_le.insert("le".into());
        out.insert(format!("{base}_bucket"), with_le);
        out.insert(format!("{base}_sum"), labels.clone());
        out.insert(format!("{base}_count"), labels);
    }
    out
}

/// The agent's own metrics, from the real registry's text exposition: counters as `<name>_total`.
/// The families whose labels the rules use get one child first, so that their labels show.
pub fn agent_exposition() -> Exposition {
    let m = Metrics::new();
    m.spans_export_failed
        .get_or_create(&ErrorType {
            error_type: "unavailable",
        })
        .inc();
    // One DORA observation, so that the histograms' series and the labels show.
    let labels = DoraLabels {
        environment: "prod".into(),
        app: "web".into(),
    };
    m.dora_promotions
        .get_or_create(&DoraOutcome {
            environment: "prod".into(),
            app: "web".into(),
            outcome: "failed",
        })
        .inc();
    m.dora_lead_time
        .get_or_create(&labels)
        .observe(60.0, None, None);
    m.dora_time_to_restore
        .get_or_create(&labels)
        .observe(60.0, None, None);
    let text = m.encode();
    let mut out = Exposition::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, ty) = (it.next().expect("name"), it.next().expect("type"));
            let name = match ty {
                "counter" => format!("{name}_total"),
                _ => name.to_string(),
            };
            out.entry(name).or_default();
        } else if !line.starts_with('#') && !line.is_empty() {
            let name = line
                .split(['{', ' '])
                .next()
                .expect("a sample name")
                .to_string();
            let labels = out.entry(name).or_default();
            if let (Some(a), Some(b)) = (line.find('{'), line.find('}')) {
                for pair in line[a + 1..b].split(',') {
                    labels.insert(pair.split('=').next().expect("label").to_string());
                }
            }
        }
    }
    assert!(
        out.keys().all(|k| k.starts_with("fluxtrace_")),
        "agent metrics carry the fluxtrace_ prefix: {out:?}"
    );
    out
}

pub const OUTCOMES: [Outcome; 5] = Outcome::FINAL;

/// Labels every scraped series carries.
pub const SCRAPE_LABELS: &[&str] = &["job", "instance"];

/// Which label values are real, per label: what the agent emits.
pub struct Values {
    pub known: BTreeMap<String, BTreeSet<String>>,
}

impl Values {
    pub fn new() -> Values {
        let emitted = emitted();
        let mut known: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let stages: BTreeSet<String> = Stage::ALL.iter().map(|s| s.as_str().into()).collect();
        known.insert(label_name(DELIVERY_STAGE), stages.clone());
        known.insert(label_name(DELIVERY_DIVERGENCE_STAGE), stages);
        known.insert(
            "span_name".into(),
            Stage::ALL.iter().map(|s| s.span_name().into()).collect(),
        );
        // Root and stage results share the CI/CD conventions' values: every verdict's.
        let results: BTreeSet<String> = OUTCOMES
            .iter()
            .filter_map(|o| o.pipeline_result())
            .map(str::to_string)
            .collect();
        for key in [CICD_PIPELINE_RESULT, CICD_PIPELINE_TASK_RUN_RESULT] {
            let mut values = results.clone();
            values.extend(emitted.get(key).cloned().unwrap_or_default());
            known.insert(label_name(key), values);
        }
        known.insert(
            "outcome".into(),
            OUTCOMES.iter().map(|o| o.as_str().to_string()).collect(),
        );
        known.insert(
            label_name(DELIVERY_TRACEABILITY),
            emitted
                .get(DELIVERY_TRACEABILITY)
                .cloned()
                .expect("traceability is emitted"),
        );
        // service.name of each stage: what the recordings show, and the traffic probe's
        // (docs/design.md's span catalog; no bundled recording has a probe result).
        let mut services = emitted.get(SERVICE_NAME).cloned().expect("services");
        services.insert("fluxtrace-probe".into());
        known.insert(label_name(SERVICE_NAME), services);
        // traceutil.StatusCodeStr and SpanKindStr of the collector (promotion roots are SERVER,
        // stages INTERNAL, src/export/mod.rs).
        known.insert(
            "status_code".into(),
            ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        known.insert(
            "span_kind".into(),
            [
                "SPAN_KIND_INTERNAL".to_string(),
                "SPAN_KIND_SERVER".to_string(),
            ]
            .into(),
        );
        Values { known }
    }

    /// Checks a matcher's value; free-form labels (cluster, environment, job) pass.
    pub fn check(&self, what: &str, label: &str, op: &str, value: &str) {
        let Some(known) = self.known.get(label) else {
            return;
        };
        if value.is_empty() && (op == "!=" || op == "=") || value.contains('$') {
            return;
        }
        let alternatives: Vec<&str> = if op.contains('~') {
            if !value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '|'))
            {
                return;
            }
            value.split('|').collect()
        } else {
            vec![value]
        };
        for a in alternatives {
            let a = a.replace("\\.", ".");
            assert!(
                known.contains(&a),
                "{what}: {label}{op}\"{value}\": {a:?} is not a value the agent emits ({known:?})"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The spanmetrics connector, and the exposition everything else is checked against.

/// The `spanmetrics` connector and `prometheus` exporter of the span-metrics configs; they must
/// be the same in every config that has them.
pub fn spanmetrics() -> (Value, Value) {
    let mut found: Vec<(String, Value, Value)> = Vec::new();
    for (name, cfg) in collector_configs() {
        if let Some(sm) = cfg["connectors"].get("span_metrics") {
            let prom = cfg["exporters"]
                .get("prometheus")
                .unwrap_or_else(|| panic!("{name}: span metrics without a prometheus exporter"))
                .clone();
            found.push((name, sm.clone(), prom));
        }
    }
    assert!(
        found.len() >= 2,
        "spanmetrics.yaml and gateway/gateway.yaml both derive span metrics"
    );
    let (first, sm, prom) = found[0].clone();
    for (name, other_sm, other_prom) in &found[1..] {
        assert_eq!(
            other_sm, &sm,
            "{name} and {first}: the spanmetrics connectors differ, so the rules fit only one"
        );
        assert_eq!(
            other_prom["namespace"], prom["namespace"],
            "{name} and {first}: the exporters name metrics differently"
        );
    }
    (sm, prom)
}

pub fn known_metrics() -> Exposition {
    let (sm, prom) = spanmetrics();
    let mut known = exposition(&sm, &prom);
    let agent = agent_exposition();
    for k in agent.keys() {
        assert!(
            !known.contains_key(k),
            "span metric {k} collides with one of the agent's own metrics"
        );
    }
    known.extend(agent);
    known
}

/// Go's `time.ParseDuration` for the forms the configs use (`500ms`, `5s`, `1m`, `1h`, `90m`).
pub fn go_duration_secs(s: &str) -> f64 {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .unwrap_or_else(|| panic!("{s}: no unit"));
    let n: f64 = num.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
    n * match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => panic!("{s}: unit {other}"),
    }
}

pub fn default_promotion_deadline_secs() -> f64 {
    use clap::CommandFactory;
    let cmd = fluxtrace::config::Cli::command();
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_id() == "promotion_deadline")
        .expect("--promotion-deadline");
    let d = arg.get_default_values()[0]
        .to_str()
        .expect("a string default");
    fluxtrace::config::parse_duration(d)
        .expect("a valid default")
        .as_secs_f64()
}

pub fn rules() -> Vec<Value> {
    RULE_FILES
        .iter()
        .flat_map(|f| {
            let v = yaml(&Path::new(DIR).join("prometheus").join(f));
            v["groups"]
                .as_sequence()
                .expect("groups")
                .iter()
                .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The Prometheus rule files of collector-config/prometheus/.
pub const RULE_FILES: [&str; 2] = ["fluxtrace-alerts.yaml", "fluxtrace-dora.yaml"];

pub fn known_with_recordings() -> Exposition {
    let mut known = known_metrics();
    let values = Values::new();
    for r in rules() {
        if let Some(name) = r["record"].as_str() {
            let expr = r["expr"].as_str().expect("expr");
            check_promql(name, expr, &known, &values);
            let q = parse_promql(expr);
            // An aggregation keeps the labels it groups by; anything else every label of
            // what it records.
            let labels: BTreeSet<String> = if expr.contains(" by ") {
                q.grouping.iter().filter(|l| *l != "le").cloned().collect()
            } else {
                q.selectors
                    .iter()
                    .flat_map(|(m, _)| known[m].clone())
                    .collect()
            };
            assert!(
                !expr.contains("without"),
                "{name}: names the labels it keeps"
            );
            known.insert(name.to_string(), labels);
        }
    }
    known
}
