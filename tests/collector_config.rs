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
//! - the alert rules and their promtool tests use only the metric and label names the
//!   span_metrics connector and the Prometheus exporter derive from that config (computed in
//!   `collector_names`, shared with tests/grafana_dashboard.rs, which checks the dashboard) or the
//!   agent's own metrics (`fluxtrace::metrics`), and only label values the agent emits (stages,
//!   span names, outcomes, traceability);
//! - with promtool installed, the rules pass `promtool check rules` and their unit tests;
//! - docs/queries.md names only attributes (the constants of `fluxtrace::trace::attr`, seen on
//!   replayed spans), services, span names and metrics (the registry, the span metrics and the
//!   recording rules) the agent and the configs produce.

mod collector_names;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use collector_names::promql::*;
use collector_names::*;
use fluxtrace::correlate::EngineConfig;
use fluxtrace::replay::{self, EXAMPLES};
use fluxtrace::story::Outcome;
use fluxtrace::trace::attr::*;
use fluxtrace::trace::Stage;
use fluxtrace_testkit::{otelcol, tools};
use serde_json::Value as Json;
use serde_yaml_ng::Value;

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
