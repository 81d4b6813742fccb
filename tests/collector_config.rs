//! The OpenTelemetry Collector side (collector-config/), checked against the code rather than by
//! eye:
//!
//! - every YAML and JSON file parses;
//! - every collector config passes the `validate` of the real Collector the test bed builds
//!   (`tests/testbed/otelcol`), names only components that Collector registers under their
//!   current names, and starts in it without a deprecation warning (a component that build cannot
//!   hold is listed in [`NOT_IN_THE_TEST_BED`], with why, and stood in for);
//! - the `span_metrics` connector's dimensions are attributes the agent really emits (the
//!   constants of `fluxtrace::trace::attr`, found on the spans of the bundled recordings), and
//!   its buckets cover delivery (seconds to past the promotion deadline);
//! - the alert rules, their promtool tests and the Grafana dashboard use only the metric and
//!   label names the spanmetrics connector and the Prometheus exporter derive from that config
//!   (computed here, [`exposition`]) or the agent's own metrics (`fluxtrace::metrics`), and only
//!   label values the agent emits (stages, span names, outcomes, traceability);
//! - the dashboard keeps control plane and data plane in separate rows and links every panel to
//!   its traces, and every link, its variables filled as Grafana fills them, parses as Grafana
//!   parses it (split on `&`, decoded, JSON) into a Tempo pane whose TraceQL strings unquote;
//! - with promtool installed, the rules pass `promtool check rules` and their unit tests;
//! - docs/queries.md names only attributes (the constants of `fluxtrace::trace::attr`, seen on
//!   replayed spans), services, span names and metrics (the registry, the span metrics and the
//!   recording rules) the agent and the configs produce.

use fluxtrace_testkit::{grafana, otelcol, tools};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fluxtrace::correlate::EngineConfig;
use fluxtrace::metrics::{DoraLabels, DoraOutcome, ErrorType, Metrics};
use fluxtrace::replay::{self, EXAMPLES};
use fluxtrace::story::Outcome;
use fluxtrace::trace::attr::{
    CICD_PIPELINE_RESULT, CICD_PIPELINE_RUN_ID, CICD_PIPELINE_RUN_URL_FULL,
    CICD_PIPELINE_TASK_RUN_RESULT, DELIVERY_DIVERGENCE_MESSAGE, DELIVERY_DIVERGENCE_STAGE,
    DELIVERY_PROMOTION_ID, DELIVERY_STAGE, DELIVERY_TRACEABILITY, DEPLOYMENT_ENVIRONMENT_NAME,
    DEPLOYMENT_ID, ERROR_TYPE, K8S_CLUSTER_NAME, K8S_DAEMONSET_UID, K8S_DEPLOYMENT_UID,
    K8S_POD_NAME, K8S_REPLICASET_NAME, K8S_REPLICASET_UID, OCI_MANIFEST_DIGEST, SERVICE_NAME,
    VCS_REF_HEAD_REVISION,
};
use fluxtrace::trace::{AttrValue, SpanRecord, Stage};
use fluxtrace_testkit::files::files;
use serde_json::Value as Json;
use serde_yaml_ng::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/collector-config");

// ---------------------------------------------------------------------------------------------
// The real Collector.

/// The component sections of a Collector config.
const SECTIONS: [&str; 5] = [
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "extensions",
];

/// Components a shipped config names that the test bed's Collector cannot hold, and why. Each is
/// replaced, in the copy the Collector validates and starts, by an `otlp_grpc` exporter of the
/// same pipelines, so that the rest of the config is still checked by the real program; its own
/// settings are checked by hand (`the_gateway_routes_by_trace_id_and_the_others_export_traces`).
const NOT_IN_THE_TEST_BED: &[(&str, &str, &str)] = &[(
    "exporters",
    "loadbalancing",
    "the Go module proxy serves no version of the contrib loadbalancingexporter module, so the \
     test bed's Collector cannot be built with it",
)];

// ---------------------------------------------------------------------------------------------
// Files.

fn all_files() -> Vec<PathBuf> {
    files(Path::new(DIR))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(DIR).unwrap_or(p).display().to_string()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml(p: &Path) -> Value {
    serde_yaml_ng::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", rel(p)))
}

fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// The collector configs: YAML files with `service.pipelines`.
fn collector_configs() -> Vec<(String, Value)> {
    all_files()
        .into_iter()
        .filter(|p| is_yaml(p))
        .map(|p| (rel(&p), yaml(&p)))
        .filter(|(_, v)| v["service"]["pipelines"].is_mapping())
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .map(|k| k.as_str().expect("string keys").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
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

fn replayed_spans() -> Vec<SpanRecord> {
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
fn emitted() -> BTreeMap<String, BTreeSet<String>> {
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
                e.insert(s.clone());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What Prometheus sees.

/// Metric name → the labels its series carry.
type Exposition = BTreeMap<String, BTreeSet<String>>;

/// Prometheus label name of an OpenTelemetry attribute, as the Prometheus exporter writes it
/// (otlptranslator `NormalizeLabel`): every character outside `[A-Za-z0-9_]` becomes `_`, and a
/// leading digit gets `key_`.
fn label_name(attr: &str) -> String {
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
fn metric_name(prefix: Option<&str>, name: &str, unit: Option<&str>, counter: bool) -> String {
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
fn exposition(cfg: &Value, exporter: &Value) -> Exposition {
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
fn agent_exposition() -> Exposition {
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

const OUTCOMES: [Outcome; 5] = Outcome::FINAL;

/// Labels every scraped series carries.
const SCRAPE_LABELS: &[&str] = &["job", "instance"];

/// Which label values are real, per label: what the agent emits.
struct Values {
    known: BTreeMap<String, BTreeSet<String>>,
}

impl Values {
    fn new() -> Values {
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
    fn check(&self, what: &str, label: &str, op: &str, value: &str) {
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
// A PromQL reader: enough to find every metric name, label name and matcher in an expression.

/// A label matcher: label, operator, value.
type Matcher = (String, String, String);

#[derive(Debug, Default)]
struct Promql {
    /// Metric name → matchers.
    selectors: Vec<(String, Vec<Matcher>)>,
    /// Labels in `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
    grouping: BTreeSet<String>,
}

const PROMQL_KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "inf",
    "nan",
];

fn parse_promql(expr: &str) -> Promql {
    let b: Vec<char> = expr.chars().collect();
    let mut out = Promql::default();
    let mut i = 0;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let read_string = |i: usize| -> (String, usize) {
        let q = b[i];
        let mut j = i + 1;
        let mut s = String::new();
        while j < b.len() && b[j] != q {
            if b[j] == '\\' && q != '`' && j + 1 < b.len() {
                s.push(b[j]);
                j += 1;
            }
            s.push(b[j]);
            j += 1;
        }
        assert!(j < b.len(), "unterminated string in {expr}");
        (s, j + 1)
    };
    let read_matchers = |mut i: usize| -> (Vec<Matcher>, usize) {
        // b[i] == '{'
        i += 1;
        let mut m = Vec::new();
        loop {
            i = skip_ws(i);
            assert!(i < b.len(), "unterminated matchers in {expr}");
            if b[i] == '}' {
                return (m, i + 1);
            }
            if b[i] == ',' {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let label: String = b[start..i].iter().collect();
            assert!(!label.is_empty(), "a label name at {start} in {expr}");
            i = skip_ws(i);
            let op_start = i;
            while i < b.len() && matches!(b[i], '=' | '!' | '~') {
                i += 1;
            }
            let op: String = b[op_start..i].iter().collect();
            assert!(
                ["=", "!=", "=~", "!~"].contains(&op.as_str()),
                "matcher operator {op:?} in {expr}"
            );
            i = skip_ws(i);
            let (value, next) = read_string(i);
            m.push((label, op, value));
            i = next;
        }
    };
    let mut after_offset = false;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            i = read_string(i).1;
        } else if c == '[' {
            while i < b.len() && b[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // A selector without a metric name.
            let (m, next) = read_matchers(i);
            out.selectors.push((String::new(), m));
            i = next;
        } else if c.is_ascii_digit() || (c == '.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
            after_offset = false;
        } else if ident(c) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if after_offset {
                after_offset = false;
                continue;
            }
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&lower.as_str())
            {
                if next < b.len() && b[next] == '(' {
                    let close = next
                        + b[next..]
                            .iter()
                            .position(|&c| c == ')')
                            .expect("a closing parenthesis");
                    let inner: String = b[next + 1..close].iter().collect();
                    for l in inner.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                        out.grouping.insert(l.to_string());
                    }
                    i = close + 1;
                }
                continue;
            }
            if lower == "offset" {
                after_offset = true;
                continue;
            }
            if PROMQL_KEYWORDS.contains(&lower.as_str()) || (next < b.len() && b[next] == '(') {
                continue; // an operator, aggregation or function
            }
            // A metric name, maybe with matchers.
            if next < b.len() && b[next] == '{' {
                let (m, after) = read_matchers(next);
                out.selectors.push((word, m));
                i = after;
            } else {
                out.selectors.push((word, Vec::new()));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Checks an expression against the exposition: known metrics, their labels, real values.
/// Returns the expression's matchers, by label.
fn check_promql(
    what: &str,
    expr: &str,
    known: &Exposition,
    values: &Values,
) -> BTreeMap<String, BTreeSet<String>> {
    let q = parse_promql(expr);
    assert!(!q.selectors.is_empty(), "{what}: no metric in {expr}");
    let mut labels_in_use: BTreeSet<String> = SCRAPE_LABELS.iter().map(|s| s.to_string()).collect();
    let mut matched: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, matchers) in &q.selectors {
        let labels = known.get(name).unwrap_or_else(|| {
            panic!(
                "{what}: metric {name:?} is neither a span metric the collector config produces \
                 nor one of the agent's metrics; known: {:?}",
                known.keys().collect::<Vec<_>>()
            )
        });
        labels_in_use.extend(labels.iter().cloned());
        for (label, op, value) in matchers {
            assert!(
                labels.contains(label) || SCRAPE_LABELS.contains(&label.as_str()),
                "{what}: {name} has no label {label:?} (it has {labels:?})"
            );
            values.check(what, label, op, value);
            if !op.starts_with('!') {
                matched
                    .entry(label.clone())
                    .or_default()
                    .extend(value.split('|').map(str::to_string));
            }
        }
    }
    for g in &q.grouping {
        assert!(
            labels_in_use.contains(g),
            "{what}: grouping by {g:?}, a label none of its metrics has ({labels_in_use:?})"
        );
    }
    matched
}

// ---------------------------------------------------------------------------------------------
// TraceQL (dashboard links, alert annotations): attribute names and stage values.

/// The `span.<attr>` and `resource.<attr>` references of a TraceQL query, with the literal
/// compared to each when there is one.
fn traceql_refs(q: &str) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for scope in ["span.", "resource."] {
        let mut rest = q;
        while let Some(at) = rest.find(scope) {
            let before = rest[..at].chars().last();
            let after = &rest[at + scope.len()..];
            rest = after;
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_') {
                continue;
            }
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                .unwrap_or(after.len());
            let attr = after[..end].to_string();
            let tail = after[end..].trim_start();
            let tail = tail
                .trim_start_matches(['=', '!', '~', '<', '>'])
                .trim_start();
            let literal = tail
                .strip_prefix('"')
                .and_then(|t| t.find('"').map(|e| t[..e].to_string()));
            out.push((scope.trim_end_matches('.').to_string(), attr, literal));
        }
    }
    out
}

fn check_traceql(what: &str, q: &str, emitted: &BTreeMap<String, BTreeSet<String>>) {
    let refs = traceql_refs(q);
    assert!(!refs.is_empty(), "{what}: no attribute in TraceQL {q}");
    let stages: BTreeSet<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
    for (scope, attr, literal) in refs {
        if scope == "resource" {
            assert!(
                [SERVICE_NAME, K8S_CLUSTER_NAME].contains(&attr.as_str()),
                "{what}: resource.{attr} is not a resource attribute of the agent's spans"
            );
        } else {
            assert!(
                emitted.contains_key(&attr),
                "{what}: span.{attr} is not an attribute the agent emits (TraceQL {q})"
            );
        }
        if let Some(v) = literal.filter(|v| !v.contains('$')) {
            let allowed: BTreeSet<String> =
                if attr == DELIVERY_STAGE || attr == DELIVERY_DIVERGENCE_STAGE {
                    stages.iter().map(|s| s.to_string()).collect()
                } else if let Some(seen) = Values::new().known.get(&label_name(&attr)) {
                    seen.clone()
                } else {
                    continue;
                };
            for alt in v.split('|') {
                assert!(
                    allowed.contains(alt),
                    "{what}: {attr} = {alt:?} is never emitted ({allowed:?})"
                );
            }
        }
    }
}

fn stages_in(matched: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<Stage> {
    let mut out = BTreeSet::new();
    for s in Stage::ALL {
        if matched
            .get(&label_name(DELIVERY_STAGE))
            .is_some_and(|v| v.contains(s.as_str()))
            || matched
                .get("span_name")
                .is_some_and(|v| v.contains(s.span_name()))
        {
            out.insert(s);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The spanmetrics connector, and the exposition everything else is checked against.

/// The `spanmetrics` connector and `prometheus` exporter of the span-metrics configs; they must
/// be the same in every config that has them.
fn spanmetrics() -> (Value, Value) {
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

fn known_metrics() -> Exposition {
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
fn go_duration_secs(s: &str) -> f64 {
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

fn default_promotion_deadline_secs() -> f64 {
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

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn every_yaml_and_json_file_parses() {
    let files = all_files();
    let mut n = 0;
    for p in &files {
        match p.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => {
                yaml(p);
                n += 1;
            }
            Some("json") => {
                serde_json::from_str::<Json>(&read(p))
                    .unwrap_or_else(|e| panic!("{}: {e}", rel(p)));
                n += 1;
            }
            _ => {}
        }
    }
    assert!(
        n >= 8,
        "collector-config/ holds the configs, rules and dashboard ({n})"
    );
}

/// `cfg` as the test Collector runs it: every listen address on 127.0.0.1, port 0 (chosen by the
/// system), and each component of [`NOT_IN_THE_TEST_BED`] replaced by an `otlp_grpc` exporter.
fn for_the_test_collector(name: &str, cfg: &str) -> String {
    let mut text = cfg.to_string();
    while let Some(at) = text.find("0.0.0.0:") {
        let end = text[at + 8..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(text.len(), |e| at + 8 + e);
        text.replace_range(at..end, "127.0.0.1:0");
    }
    let mut v: Value = serde_yaml_ng::from_str(&text).expect("parses");
    for (section, ty, why) in NOT_IN_THE_TEST_BED {
        let ids: Vec<String> = keys(&v[*section])
            .into_iter()
            .filter(|id| id.split('/').next() == Some(ty))
            .collect();
        for id in ids {
            eprintln!("{name}: {section}.{id} is not in the test bed's Collector ({why}); an otlp_grpc exporter stands in for it");
            let stand_in = format!("otlp_grpc/stand-in-for-{}", id.replace('/', "-"));
            let m = v[*section].as_mapping_mut().expect("a section");
            m.remove(id.as_str());
            m.insert(
                stand_in.as_str().into(),
                serde_yaml_ng::from_str("{endpoint: 127.0.0.1:4317, tls: {insecure: true}}")
                    .expect("yaml"),
            );
            let pipelines = v["service"]["pipelines"]
                .as_mapping_mut()
                .expect("pipelines");
            for (_, p) in pipelines.iter_mut() {
                for list in ["receivers", "processors", "exporters"] {
                    if let Some(seq) = p.get_mut(list).and_then(Value::as_sequence_mut) {
                        for item in seq.iter_mut().filter(|i| i.as_str() == Some(id.as_str())) {
                            *item = stand_in.as_str().into();
                        }
                    }
                }
            }
        }
    }
    serde_yaml_ng::to_string(&v).expect("yaml")
}

#[test]
fn every_shipped_config_passes_the_real_collectors_validate_and_starts_without_a_deprecation_warning(
) {
    let test = "every_shipped_config_passes_the_real_collectors_validate";
    let Some(otelcol) = otelcol::Otelcol::find(test) else {
        return;
    };
    let configs = collector_configs();
    let names: BTreeSet<&str> = configs.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "tempo.yaml",
        "jaeger.yaml",
        "spanmetrics.yaml",
        "gateway/loadbalancer.yaml",
        "gateway/gateway.yaml",
    ] {
        assert!(
            names.contains(want),
            "collector-config/{want} is a collector config"
        );
    }
    let components = otelcol.components();
    let dir = std::env::temp_dir().join(format!("fluxtrace-otelcol-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    for (name, cfg) in &configs {
        for section in SECTIONS {
            for id in keys(&cfg[section]) {
                let ty = id.split('/').next().unwrap_or(&id);
                let known = components.get(section).is_some_and(|c| c.contains(ty));
                let excused = NOT_IN_THE_TEST_BED
                    .iter()
                    .any(|(s, t, _)| *s == section && *t == ty);
                assert!(
                    known || excused,
                    "{name}: {section}.{id}: not a type name the test bed's Collector registers \
                     (deprecated aliases are not among them; it has {:?})",
                    components.get(section)
                );
            }
        }
        let file = dir.join(name.replace('/', "-"));
        std::fs::write(
            &file,
            for_the_test_collector(name, &read(&Path::new(DIR).join(name))),
        )
        .expect("write the config");
        let checked = otelcol
            .validate(&file)
            .unwrap_or_else(|e| panic!("{name}: the Collector refuses it:\n{e}"));
        assert!(
            !checked.to_lowercase().contains("deprecated"),
            "{name}: validate warns:\n{checked}"
        );
        let start = otelcol.start(&file, std::time::Duration::from_secs(60));
        assert!(
            start.ready,
            "{name}: the Collector did not get ready:\n{}",
            start.log
        );
        let warnings: Vec<&str> = start
            .log
            .lines()
            .filter(|l| l.to_lowercase().contains("deprecat"))
            .collect();
        assert!(
            warnings.is_empty(),
            "{name}: the Collector warns of deprecated names:\n{}",
            warnings.join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the Collector accepts but these configs hold to: memory_limiter first in every pipeline
/// that has it, and no component defined that no pipeline uses (the Collector ignores those).
#[test]
fn pipelines_start_with_the_memory_limiter_and_use_every_component() {
    for (name, cfg) in collector_configs() {
        let service = &cfg["service"];
        let mut used: BTreeSet<String> = strings(&service["extensions"]).into_iter().collect();
        for pipeline in keys(&service["pipelines"]) {
            let p = &service["pipelines"][pipeline.as_str()];
            let ps = strings(&p["processors"]);
            if let Some(i) = ps.iter().position(|x| x.starts_with("memory_limiter")) {
                assert_eq!(i, 0, "{name}: {pipeline}: memory_limiter comes first");
            }
            for list in ["receivers", "processors", "exporters"] {
                used.extend(strings(&p[list]));
            }
        }
        for section in SECTIONS {
            for id in keys(&cfg[section]) {
                assert!(
                    used.contains(&id),
                    "{name}: {section}.{id} is defined but unused"
                );
            }
        }
    }
}

#[test]
fn the_gateway_routes_by_trace_id_and_the_others_export_traces() {
    let configs: BTreeMap<String, Value> = collector_configs().into_iter().collect();
    let lb = &configs["gateway/loadbalancer.yaml"]["exporters"]["loadbalancing"];
    assert_eq!(lb["routing_key"].as_str(), Some("traceID"));
    assert!(
        lb["protocol"]["otlp"].is_mapping(),
        "forwards OTLP to the gateway"
    );
    assert!(
        lb["resolver"].is_mapping(),
        "resolves the gateway collectors"
    );
    for (name, exporter) in [
        ("tempo.yaml", "otlp_grpc/tempo"),
        ("jaeger.yaml", "otlp_grpc/jaeger"),
        ("spanmetrics.yaml", "otlp_grpc/tempo"),
        ("gateway/gateway.yaml", "otlp_grpc/tempo"),
    ] {
        let traces = strings(&configs[name]["service"]["pipelines"]["traces"]["exporters"]);
        assert!(
            traces.contains(&exporter.to_string()),
            "{name}: traces go to {exporter}"
        );
        // The agent speaks OTLP/gRPC: every config receives it on 4317.
        assert!(
            configs[name]["receivers"]["otlp"]["protocols"]["grpc"].is_mapping(),
            "{name}: OTLP/gRPC receiver"
        );
    }
}

#[test]
fn span_metric_dimensions_are_attributes_the_agent_emits() {
    let (sm, _) = spanmetrics();
    let dims: BTreeSet<String> = sm["dimensions"]
        .as_sequence()
        .expect("dimensions")
        .iter()
        .map(|d| d["name"].as_str().expect("name").to_string())
        .collect();
    for want in [
        DELIVERY_STAGE,
        CICD_PIPELINE_RESULT,
        CICD_PIPELINE_TASK_RUN_RESULT,
        DELIVERY_DIVERGENCE_STAGE,
        DEPLOYMENT_ENVIRONMENT_NAME,
        DELIVERY_TRACEABILITY,
    ] {
        assert!(
            dims.contains(want),
            "span metrics need the dimension {want}"
        );
    }
    let emitted = emitted();
    for d in &dims {
        assert!(
            emitted.contains_key(d),
            "dimension {d} is not an attribute of any span the agent emits \
             (attributes seen: {:?})",
            emitted.keys().collect::<Vec<_>>()
        );
    }
    // Per-promotion values would make one series per promotion.
    for unbounded in [
        DELIVERY_PROMOTION_ID,
        DEPLOYMENT_ID,
        ERROR_TYPE,
        DELIVERY_DIVERGENCE_MESSAGE,
        VCS_REF_HEAD_REVISION,
        OCI_MANIFEST_DIGEST,
        CICD_PIPELINE_RUN_ID,
        CICD_PIPELINE_RUN_URL_FULL,
        K8S_POD_NAME,
        K8S_REPLICASET_NAME,
        K8S_REPLICASET_UID,
        K8S_DEPLOYMENT_UID,
        K8S_DAEMONSET_UID,
    ] {
        assert!(
            !dims.contains(unbounded),
            "{unbounded} is unbounded: not a dimension"
        );
    }
    // The filter in front of the connector keeps exactly the delivery spans: every span the
    // agent emits carries the attribute it tests.
    for (name, cfg) in collector_configs() {
        let Some(filter) = cfg["processors"].get("filter/delivery-spans") else {
            continue;
        };
        let conds = strings(&filter["trace_conditions"]);
        assert!(!conds.is_empty(), "{name}: the filter has span conditions");
        for cond in conds {
            let at = cond
                .find("span.attributes[\"")
                .expect("a span attribute condition")
                + 17;
            let attr = &cond[at..at + cond[at..].find('"').expect("closing quote")];
            assert_eq!(attr, DELIVERY_STAGE, "{name}: {cond}");
            assert!(
                cond.ends_with("== nil"),
                "{name}: drops spans without it: {cond}"
            );
        }
    }
    for s in replayed_spans() {
        assert!(
            s.attributes.get(DELIVERY_STAGE).is_some(),
            "{} has no {DELIVERY_STAGE}: the filter would drop it",
            s.name
        );
    }
}

#[test]
fn span_metric_buckets_fit_delivery_from_seconds_to_past_the_promotion_deadline() {
    let (sm, _) = spanmetrics();
    assert_eq!(
        sm["histogram"]["unit"].as_str(),
        Some("s"),
        "durations in seconds"
    );
    let buckets: Vec<f64> = strings(&sm["histogram"]["explicit"]["buckets"])
        .iter()
        .map(|b| go_duration_secs(b))
        .collect();
    assert!(
        buckets.windows(2).all(|w| w[0] < w[1]),
        "buckets increase: {buckets:?}"
    );
    assert!(buckets[0] <= 1.0, "the first bucket resolves seconds");
    let deadline = default_promotion_deadline_secs();
    let last = *buckets.last().expect("buckets");
    assert!(
        last > deadline && last >= 3600.0,
        "the last bucket ({last}s) lies past the default promotion deadline ({deadline}s)"
    );
    assert!(
        buckets.iter().filter(|&&b| b > 15.0).count() >= 8,
        "most buckets lie past the connector's default 15s: {buckets:?}"
    );
    // Every span of the bundled recordings lands in a finite bucket.
    for s in replayed_spans() {
        let secs = s.end.duration_since(s.start).as_secs_f64();
        assert!(
            secs <= last,
            "{} lasted {secs}s, past the last bucket",
            s.name
        );
    }
}

#[test]
fn the_exposition_is_derived_as_the_prometheus_exporter_names_it() {
    // The derivation itself, on the connector's documented defaults: `traces.span.metrics`,
    // unit ms (its README: traces_span_metrics_calls_total,
    // traces_span_metrics_duration_milliseconds_bucket).
    let defaults: Value = serde_yaml_ng::from_str("dimensions: []").expect("yaml");
    let e = exposition(&defaults, &Value::Null);
    assert!(e.contains_key("traces_span_metrics_calls_total"), "{e:?}");
    assert!(e.contains_key("traces_span_metrics_duration_milliseconds_bucket"));
    assert_eq!(
        label_name("deployment.environment.name"),
        "deployment_environment_name"
    );
    assert_eq!(label_name("k8s.cluster.name"), "k8s_cluster_name");
    // And on this repository's config.
    let known = known_metrics();
    for want in [
        "fluxtrace_delivery_calls_total",
        "fluxtrace_delivery_duration_seconds_bucket",
        "fluxtrace_spans_dropped_total",
    ] {
        assert!(known.contains_key(want), "{want}: {:?}", known.keys());
    }
    let calls = &known["fluxtrace_delivery_calls_total"];
    for l in [
        "service_name",
        "span_name",
        "status_code",
        "delivery_stage",
        "cicd_pipeline_result",
        "cicd_pipeline_task_run_result",
        "delivery_divergence_stage",
        "delivery_traceability",
        "deployment_environment_name",
    ] {
        assert!(calls.contains(l), "{l}: {calls:?}");
    }
}

#[test]
fn the_reader_catches_wrong_names_and_values() {
    let known = known_metrics();
    let values = Values::new();
    let ok = r#"sum by (delivery_stage) (increase(fluxtrace_delivery_calls_total{delivery_stage=~"rollout|traffic", cicd_pipeline_task_run_result="failure"}[15m]))"#;
    let m = check_promql("ok", ok, &known, &values);
    assert_eq!(
        stages_in(&m),
        [Stage::Rollout, Stage::Traffic].into_iter().collect()
    );
    for bad in [
        r#"sum(traces_span_metrics_calls_total)"#,
        r#"sum(fluxtrace_delivery_calls_total{stage="rollout"})"#,
        r#"sum(fluxtrace_delivery_calls_total{delivery_stage="deploy"})"#,
        r#"sum(fluxtrace_delivery_calls_total{delivery_outcome="failed"})"#,
        r#"sum(fluxtrace_delivery_calls_total{cicd_pipeline_task_run_result="failed"})"#,
        r#"sum by (delivery_phase) (fluxtrace_delivery_calls_total)"#,
        r#"sum(fluxtrace_delivery_calls_total{span_name="source"})"#,
        r#"sum(fluxtrace_delivery_calls_total{delivery_traceability="absent"})"#,
    ] {
        let r = std::panic::catch_unwind(|| check_promql("bad", bad, &known, &values));
        assert!(r.is_err(), "not caught: {bad}");
    }
}

/// The rule files: recording rules add their names (with the labels of what they record).
fn rules() -> Vec<Value> {
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
const RULE_FILES: [&str; 2] = ["fluxtrace-alerts.yaml", "fluxtrace-dora.yaml"];

fn known_with_recordings() -> Exposition {
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

#[test]
fn alert_rules_use_only_emitted_metrics_labels_and_values() {
    let known = known_with_recordings();
    let values = Values::new();
    let emitted = emitted();
    let mut alerts: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for r in rules() {
        let Some(name) = r["alert"].as_str() else {
            continue;
        };
        let expr = r["expr"].as_str().expect("expr");
        let matched = check_promql(name, expr, &known, &values);
        assert!(
            matches!(
                r["labels"]["severity"].as_str(),
                Some("warning" | "critical" | "info")
            ),
            "{name}: severity"
        );
        for a in ["summary", "description"] {
            assert!(
                r["annotations"][a].as_str().is_some(),
                "{name}: annotation {a}"
            );
        }
        // Templates name only labels the expression keeps.
        let q = parse_promql(expr);
        for a in keys(&r["annotations"]) {
            let text = r["annotations"][a.as_str()].as_str().expect("text");
            let mut rest = text;
            while let Some(at) = rest.find("$labels.") {
                let after = &rest[at + 8..];
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                let l = &after[..end];
                assert!(
                    q.grouping.contains(l) || SCRAPE_LABELS.contains(&l),
                    "{name}: {a} uses $labels.{l}, which the expression does not keep"
                );
                rest = &after[end..];
            }
        }
        if let Some(tq) = r["annotations"]["traces"].as_str() {
            check_traceql(name, tq, &emitted);
        }
        alerts.insert(name.to_string(), matched);
    }
    let stage = label_name(DELIVERY_STAGE);
    let outcome = label_name(CICD_PIPELINE_TASK_RUN_RESULT);
    let failure = Outcome::Failed.pipeline_result().expect("failure");
    let has = |alert: &str, label: &str, value: &str| {
        let m = alerts
            .get(alert)
            .unwrap_or_else(|| panic!("alert {alert} is missing"));
        assert!(
            m.get(label).is_some_and(|v| v.contains(value)),
            "{alert} selects {label}={value}: {m:?}"
        );
    };
    has(
        "FluxtraceReconcileFailed",
        &stage,
        Stage::Reconcile.as_str(),
    );
    has("FluxtraceReconcileFailed", &outcome, failure);
    has("FluxtraceRolloutFailed", &stage, Stage::Rollout.as_str());
    has("FluxtraceRolloutFailed", &outcome, failure);
    has(
        "FluxtraceProlongedNotReady",
        &outcome,
        Outcome::TimedOut.pipeline_result().expect("timeout"),
    );
    has(
        "FluxtraceTrafficProbeFailed",
        &stage,
        Stage::Traffic.as_str(),
    );
    has("FluxtraceTrafficProbeFailed", &outcome, failure);
    has(
        "FluxtraceUntraceableChange",
        &label_name(DELIVERY_TRACEABILITY),
        "missing",
    );
    has(
        "FluxtraceUntraceableChange",
        "span_name",
        Stage::Promotion.span_name(),
    );
    // The untraced recording's root span really says so.
    let untraced = EXAMPLES
        .iter()
        .find(|(n, _)| n.contains("untraced"))
        .expect("the untraced-rollout recording");
    let r = replay::run(untraced.1, EngineConfig::default());
    assert!(r.spans().any(|s| s.name == Stage::Promotion.span_name()
        && s.attributes.get_str(DELIVERY_TRACEABILITY) == Some("missing")));
}

#[test]
fn promtool_tests_feed_series_named_as_the_collector_exposes_them() {
    let known = known_with_recordings();
    let values = Values::new();
    for file in ["fluxtrace-alerts.test.yaml", "fluxtrace-dora.test.yaml"] {
        let tests = yaml(&Path::new(DIR).join("prometheus").join(file));
        let mut n = 0;
        for t in tests["tests"].as_sequence().expect("tests") {
            for s in t["input_series"].as_sequence().expect("input_series") {
                let series = s["series"].as_str().expect("series");
                check_promql(file, series, &known, &values);
                n += 1;
            }
            for e in t["promql_expr_test"].as_sequence().into_iter().flatten() {
                check_promql(file, e["expr"].as_str().expect("expr"), &known, &values);
            }
        }
        assert!(n >= 5, "{file}: series");
    }
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let Some(promtool) = tools::tool(
        "promtool_checks_and_unit_tests_the_rules",
        "promtool",
        "PROMTOOL",
        &["--version"],
    ) else {
        return;
    };
    let dir = Path::new(DIR).join("prometheus");
    let run = |args: &[&str]| {
        Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
    };
    for args in [
        &[
            "check",
            "rules",
            "fluxtrace-alerts.yaml",
            "fluxtrace-dora.yaml",
        ][..],
        &["test", "rules", "fluxtrace-alerts.test.yaml"][..],
        &["test", "rules", "fluxtrace-dora.test.yaml"][..],
    ] {
        let o = run(args).expect("promtool runs");
        assert!(
            o.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// The dashboard's counts over a restart, evaluated by promtool: an agent and its collector
/// restart at minute 90, so that the series they wrote stop and new ones (new `instance` and
/// `collector_instance_id`) start at 1; a third series appears once with its first count. Over
/// the last hour the panels must count every promotion: what the old series added, and each new
/// series from zero, as the alert rules do.
#[test]
fn dashboard_counts_hold_across_agent_and_collector_restarts() {
    let Some(promtool) = tools::tool(
        "dashboard_counts_hold_across_agent_and_collector_restarts",
        "promtool",
        "PROMTOOL",
        &["--version"],
    ) else {
        return;
    };
    let d = dashboard();
    // Every count of the dashboard is made the same way: the pattern the promtool test proves.
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().expect("expr");
            let increases = e.matches("increase(fluxtrace_delivery_calls_total").count();
            assert_eq!(
                e.matches("(max_over_time(fluxtrace_delivery_calls_total")
                    .count(),
                increases,
                "{}: each increase() of a count also counts new series from zero: {e}",
                p["title"]
            );
        }
    }
    let expr = |title: &str| -> String {
        let p = d["panels"]
            .as_array()
            .expect("panels")
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("a panel {title:?}"));
        p["targets"][0]["expr"]
            .as_str()
            .expect("expr")
            .replace("$__range", "1h")
            .replace("$__rate_interval", "1h")
            .replace("$cluster", ".*")
            .replace("$environment", ".*")
    };
    let series = |instance: &str, collector: &str, result: &str, values: &str| {
        format!(
            "      - series: 'fluxtrace_delivery_calls_total{{job=\"fluxtrace\", instance=\"{instance}\", \
             collector_instance_id=\"{collector}\", service_name=\"fluxtrace\", span_name=\"promotion\", \
             span_kind=\"SPAN_KIND_INTERNAL\", status_code=\"STATUS_CODE_UNSET\", delivery_stage=\"promotion\", \
             cicd_pipeline_result=\"{result}\", deployment_environment_name=\"prod\", k8s_cluster_name=\"prod-eu1\"}}'\n\
             \x20       values: '{values}'\n"
        )
    };
    let tests = format!(
        "rule_files: []\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n\
         {}{}{}{}\
         \x20   promql_expr_test:\n\
         \x20     - expr: 'round({})'\n        eval_time: 2h\n        exp_samples:\n          - labels: '{{}}'\n            value: 6\n\
         \x20     - expr: 'round({})'\n        eval_time: 2h\n        exp_samples:\n\
         \x20         - labels: '{{cicd_pipeline_result=\"failure\"}}'\n            value: 1\n\
         \x20         - labels: '{{cicd_pipeline_result=\"success\"}}'\n            value: 5\n",
        // 5 before the window, 8 when the agent and collector stop at minute 90: 3 in the hour.
        series("agent-a", "collector-1", "success", "5x60 6x9 7x9 8x9"),
        // Their successors, from minute 95: 2.
        series("agent-b", "collector-2", "success", "_x94 1x14 2x10"),
        // A failure counted before the window, none in it: 0.
        series("agent-a", "collector-1", "failure", "1x90"),
        // A series seen once, with its first count: 1.
        series("agent-c", "collector-2", "failure", "_x100 1"),
        expr("Promotions").replace('\'', "\\'"),
        expr("Promotions by outcome").replace('\'', "\\'"),
    );
    let dir = std::env::temp_dir().join(format!("fluxtrace-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let file = dir.join("restarts.test.yaml");
    std::fs::write(&file, &tests).expect("write the promtool test");
    let o = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        o.status.success(),
        "the dashboard miscounts across restarts:\n{}{}\n{tests}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn dashboard() -> Json {
    serde_json::from_str(&read(
        &Path::new(DIR).join("grafana/fluxtrace-delivery.json"),
    ))
    .expect("the dashboard parses")
}

/// The TraceQL queries of a panel's links (Grafana Explore URLs with a `panes` JSON), with the
/// dashboard's variables still in them.
fn link_queries(panel: &Json) -> Vec<String> {
    let mut out = Vec::new();
    for l in panel["links"].as_array().into_iter().flatten() {
        let url = l["url"].as_str().expect("a link url");
        let panes = grafana::explore_panes(url).unwrap_or_else(|e| panic!("{e}"));
        for pane in panes.as_object().expect("panes").values() {
            for q in pane["queries"].as_array().expect("queries") {
                out.push(q["query"].as_str().expect("query").to_string());
            }
        }
    }
    out
}

/// The dashboard variables a link can be opened with: one cluster, two, or "All", with names
/// that hold what regex escaping would turn into invalid JSON and TraceQL (`.`, `-`).
fn link_scenarios() -> Vec<(BTreeMap<&'static str, grafana::Var>, &'static str)> {
    use grafana::Var;
    let common = |cluster: Var, environment: Var| {
        BTreeMap::from([
            ("tempo", Var::One("P214B5B846CF3925F".into())),
            ("prometheus", Var::One("PBFA97CFB590B2093".into())),
            ("__org", Var::One("3".into())),
            ("__from", Var::One("1795687201000".into())),
            ("__to", Var::One("1795687331000".into())),
            ("cluster", cluster),
            ("environment", environment),
        ])
    };
    vec![
        (
            common(Var::One("eu-west.prod".into()), Var::One("prod.eu".into())),
            "eu-west.prod",
        ),
        (
            common(
                Var::Many(vec!["eu-west.prod".into(), "us-1".into()]),
                Var::Many(vec!["prod.eu".into(), "staging".into()]),
            ),
            "eu-west.prod|us-1",
        ),
        (common(Var::All(".*".into()), Var::All(".*".into())), ".*"),
    ]
}

/// Why a panel link, filled with `vars`, does not open a Tempo pane with its TraceQL query.
fn link_problem(
    url: &str,
    vars: &BTreeMap<&str, grafana::Var>,
    cluster: &str,
) -> Result<(), String> {
    let filled = grafana::interpolate(url, vars);
    let params = grafana::query_params(&filled);
    if params.get("orgId").map(String::as_str) != Some("3") {
        return Err(format!(
            "orgId is not the dashboard's organisation: {params:?}"
        ));
    }
    let panes = grafana::explore_panes(&filled)?;
    let panes = panes.as_object().ok_or("panes is not an object")?;
    let [pane] = panes.values().collect::<Vec<_>>()[..] else {
        return Err(format!("{} panes, not one", panes.len()));
    };
    if pane["datasource"] != "P214B5B846CF3925F" {
        return Err(format!("the pane's data source is {}", pane["datasource"]));
    }
    if pane["range"]["from"] != "1795687201000" || pane["range"]["to"] != "1795687331000" {
        return Err(format!("the range is {}", pane["range"]));
    }
    let queries = pane["queries"].as_array().ok_or("no queries")?;
    if queries.is_empty() {
        return Err("no queries".into());
    }
    for q in queries {
        if q["queryType"] != "traceql" {
            return Err(format!("queryType {}", q["queryType"]));
        }
        // Explore drops a query whose own data source differs from the pane's.
        if q.get("datasource").is_some() && q["datasource"]["uid"] != pane["datasource"] {
            return Err(format!("the query's data source {}", q["datasource"]));
        }
        let traceql = q["query"].as_str().ok_or("no query text")?;
        let strings = grafana::traceql_strings(traceql)?;
        if traceql.contains("k8s.cluster.name") && !strings.iter().any(|s| s == cluster) {
            return Err(format!(
                "the cluster variable reaches TraceQL as {strings:?}, not {cluster:?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_dashboard_link_opens_an_explore_pane_with_its_traceql_query_as_grafana_parses_it() {
    let d = dashboard();
    let (mut links, mut broken) = (0, Vec::new());
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or("");
        for l in p["links"].as_array().into_iter().flatten() {
            links += 1;
            let url = l["url"].as_str().expect("a link url");
            for (vars, cluster) in link_scenarios() {
                if let Err(e) = link_problem(url, &vars, cluster) {
                    broken.push(format!("{title}: {e}"));
                    break;
                }
            }
        }
    }
    assert!(links >= 18, "every panel links to its traces ({links})");
    assert!(
        broken.is_empty(),
        "{} of {links} links do not open their traces in Grafana:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn the_dashboard_keeps_the_planes_apart_and_links_every_panel_to_its_traces() {
    let d = dashboard();
    // Import asks for data sources only when the dashboard has `__inputs`; this one takes them
    // from its data source variables, as collector-config/README.md tells the user.
    assert!(d.get("__inputs").is_none(), "no __inputs");
    let readme = read(&Path::new(DIR).join("README.md"));
    assert!(
        readme.contains("asks for nothing on import"),
        "the README says how the dashboard gets its data sources"
    );
    for ds in ["prometheus", "tempo"] {
        let vars = d["templating"]["list"].as_array().expect("variables");
        assert!(
            vars.iter()
                .any(|v| v["name"] == ds && v["type"] == "datasource" && v["query"] == ds),
            "a {ds} data source variable"
        );
    }
    let known = known_with_recordings();
    let values = Values::new();
    let emitted = emitted();
    for v in d["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = v["definition"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .expect("label_values(metric, label)");
            let (metric, label) = inner.split_once(',').expect("two arguments");
            let labels = known.get(metric.trim()).expect("a known metric");
            assert!(labels.contains(label.trim()), "{q}");
        }
    }
    let mut plane: Option<&str> = None;
    let mut covered: BTreeMap<&str, BTreeSet<Stage>> = BTreeMap::new();
    let mut rows = 0;
    for p in d["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().unwrap_or("");
        if p["type"] == "row" {
            rows += 1;
            assert_eq!(
                p["collapsed"], false,
                "{title}: open rows hold their panels inline"
            );
            plane = if title.starts_with("Control plane") {
                Some("control")
            } else if title.starts_with("Data plane") {
                Some("data")
            } else if title.starts_with("DORA") {
                Some("dora")
            } else {
                panic!("row {title:?} names its plane");
            };
            continue;
        }
        let plane = plane.unwrap_or_else(|| panic!("{title}: every panel sits in a row"));
        let mut stages = BTreeSet::new();
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: queries");
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let m = check_promql(title, expr, &known, &values);
            stages.extend(stages_in(&m));
            if expr.contains("_bucket") {
                assert_eq!(
                    t["exemplar"], true,
                    "{title}: histograms show exemplars (traces)"
                );
            }
        }
        let queries = link_queries(p);
        assert!(
            !queries.is_empty(),
            "{title}: links to the traces behind it"
        );
        for q in &queries {
            check_traceql(title, q, &emitted);
            for (_, attr, lit) in traceql_refs(q) {
                if attr == DELIVERY_STAGE {
                    for s in lit.iter().flat_map(|l| l.split('|')) {
                        stages.extend(Stage::ALL.into_iter().filter(|x| x.as_str() == s));
                    }
                }
            }
        }
        assert!(!stages.is_empty(), "{title}: selects stages");
        if plane == "dora" {
            // The four keys are about whole promotions: their links open root spans.
            assert_eq!(
                stages,
                [Stage::Promotion].into(),
                "{title}: links to promotions"
            );
            continue;
        }
        for s in &stages {
            assert_eq!(
                s.plane(),
                plane,
                "{title}: {} belongs to the {} plane, not this row's",
                s.as_str(),
                s.plane()
            );
        }
        covered.entry(plane).or_default().extend(stages);
    }
    assert!(rows >= 3, "rows for both planes and DORA");
    for s in Stage::ALL {
        assert!(
            covered.get(s.plane()).is_some_and(|c| c.contains(&s)),
            "no panel shows the {} stage",
            s.as_str()
        );
    }
}

#[test]
fn the_readme_points_at_every_config() {
    let readme = read(&Path::new(DIR).join("README.md"));
    for p in all_files() {
        let r = rel(&p);
        if r != "README.md" {
            assert!(
                readme.contains(&r),
                "collector-config/README.md describes {r}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// docs/queries.md, the on-call cookbook.

/// The attribute keys the agent can emit: the constants of src/trace/attr.rs, read from the
/// source so that a key added there needs no list here.
fn attribute_constants() -> BTreeSet<String> {
    let src = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/trace/attr.rs"));
    let keys: BTreeSet<String> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split_once("&str = \""))
        .filter_map(|(_, v)| v.split_once('"').map(|(k, _)| k.to_string()))
        .collect();
    assert!(keys.len() > 40, "attribute constants: {keys:?}");
    keys
}

/// The fenced code blocks of a Markdown text: (info string, body).
fn code_blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in md.lines() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    out
}

#[test]
fn every_name_in_the_query_cookbook_is_one_the_agent_emits() {
    let md = read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/queries.md"));
    let attrs = attribute_constants();
    let emitted = emitted();
    let known = known_with_recordings();
    let values = Values::new();
    let services = &values.known[&label_name(SERVICE_NAME)];
    let span_names: BTreeSet<&str> = Stage::ALL.iter().map(|s| s.span_name()).collect();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (lang, body) in code_blocks(&md) {
        *seen
            .entry(match lang.as_str() {
                "traceql" => "traceql",
                "promql" => "promql",
                "jaeger" => "jaeger",
                other => panic!("docs/queries.md: a code block in {other:?}"),
            })
            .or_default() += 1;
        match lang.as_str() {
            "traceql" => {
                let q = body.trim();
                for (_, attr, _) in traceql_refs(q) {
                    assert!(
                        attrs.contains(&attr),
                        "{q}: {attr} is no attribute constant"
                    );
                }
                check_traceql("docs/queries.md", q, &emitted);
            }
            "promql" => {
                check_promql("docs/queries.md", body.trim(), &known, &values);
            }
            _ => {
                for search in body.lines().filter(|l| !l.trim().is_empty()) {
                    for field in search.split('|').map(str::trim) {
                        let (name, v) = field.split_once(": ").expect("Field: value");
                        match name {
                            "Service" => assert!(services.contains(v), "{search}: service {v}"),
                            "Operation" => {
                                assert!(span_names.contains(v), "{search}: operation {v}")
                            }
                            "Tags" => {
                                for tag in v.split_whitespace() {
                                    let (k, val) = tag.split_once('=').expect("key=value");
                                    assert!(attrs.contains(k), "{search}: {k} is no attribute");
                                    assert!(emitted.contains_key(k), "{search}: {k} never emitted");
                                    values.check(search, &label_name(k), "=", val);
                                }
                            }
                            "Lookback" | "Min Duration" => {}
                            other => panic!("{search}: unknown search field {other}"),
                        }
                    }
                }
            }
        }
    }
    for lang in ["traceql", "jaeger", "promql"] {
        assert!(
            seen.get(lang).is_some_and(|n| *n > 0),
            "no {lang} in the cookbook"
        );
    }
    // Names in the prose: every backticked attribute-like or metric-like name.
    let prefixes = [
        "delivery.",
        "flux.",
        "cicd.",
        "vcs.",
        "k8s.",
        "deployment.",
        "container.",
        "service.",
        "oci.",
        "error.",
    ];
    for chunk in md.split('`').skip(1).step_by(2) {
        let word = chunk.trim();
        if word.contains(char::is_whitespace) || word.contains(['(', '{', '"', '/']) {
            continue;
        }
        if prefixes.iter().any(|p| word.starts_with(p)) {
            assert!(
                attrs.contains(word),
                "docs/queries.md names `{word}`: no such attribute"
            );
        } else if word.starts_with("fluxtrace_") {
            assert!(
                known.contains_key(word) || known.contains_key(&format!("{word}_total")),
                "docs/queries.md names `{word}`: no such metric"
            );
        }
    }
}
