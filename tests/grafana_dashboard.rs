//! The Grafana dashboard (collector-config/grafana/fluxtrace-delivery.json), checked against the
//! configs and the agent rather than by eye:
//!
//! - it keeps control plane and data plane in separate rows, queries only the metric and label
//!   names the span metrics and the agent produce, and links every panel to its traces;
//! - every link, its variables filled as Grafana fills them, parses as Grafana parses it (split
//!   on `&`, decoded, JSON) into a Tempo pane whose TraceQL strings unquote;
//! - its counts hold across agent and collector restarts (promtool evaluates them);
//! - it takes its data sources from its variables (no `__inputs`), as collector-config/README.md
//!   says.

mod collector_names;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use collector_names::promql::*;
use collector_names::*;
use fluxtrace::trace::attr::*;
use fluxtrace::trace::Stage;
use fluxtrace_testkit::{grafana, tools};
use serde_json::Value as Json;

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
