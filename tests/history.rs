//! History at start: what the initial lists show delivered is not a promotion in flight.
//!
//! The `history-*` recordings are bundled recordings whose initial state names promotions that
//! finished before the agent started (an OCI artifact's and a pod template's promotion-id
//! annotations, an image automation's last push, a HelmRelease at the chart it last applied, a
//! failed delivery's predecessor), with the `synced` line where the agent's initial lists were
//! in. Each must give exactly the traces of the delivery it records after the start: no trace,
//! verdict, DORA count or failure for the history.

use fluxtrace::correlate::{Engine, EngineConfig};
use fluxtrace::replay::{self, Replay, EXAMPLES};
use fluxtrace::sources::recording;
use fluxtrace::story::Outcome;
use fluxtrace::workload::WorkloadFilter;
use fluxtrace_testkit::cli;

fn cfg() -> EngineConfig {
    EngineConfig {
        cluster: "demo".into(),
        ..EngineConfig::default()
    }
}

fn text(name: &str) -> &'static str {
    EXAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no example {name}"))
}

fn replay(name: &str) -> Replay {
    let r = replay::run(text(name), cfg());
    assert!(r.bad.is_empty(), "{name}: bad lines {:?}", r.bad);
    r
}

/// Each history recording, and the recording of the same delivery without history.
const PAIRS: [(&str, &str); 5] = [
    ("history-oci.jsonl", "oci-success.jsonl"),
    ("history-git.jsonl", "git-success.jsonl"),
    (
        "history-image-automation.jsonl",
        "image-automation-success.jsonl",
    ),
    ("history-helm.jsonl", "helmrelease-chartref-success.jsonl"),
    ("history-oci-failure.jsonl", "oci-rollout-imagepull.jsonl"),
];

/// The promotion ids the initial state of each history recording names, delivered before the
/// start.
const HISTORY_IDS: [&str; 4] = [
    "rel-2040",
    "P-2026-11-26-41",
    "rel-2039",
    "automated/flux-system/web/df1395b18a2e",
];

#[test]
fn a_history_recording_gives_exactly_the_traces_of_what_happened_after_the_start() {
    for (history, base) in PAIRS {
        let h = replay(history);
        let b = replay(base);
        let ids = |r: &Replay| -> Vec<String> {
            r.traces
                .iter()
                .map(|t| t.story.promotion_id.clone())
                .collect()
        };
        assert_eq!(ids(&h), ids(&b), "{history}: the same promotions as {base}");
        for (th, tb) in h.traces.iter().zip(&b.traces) {
            assert_eq!(th.spans, tb.spans, "{history}: the spans of {base}");
            assert_eq!(th.story, tb.story, "{history}: the story of {base}");
        }
        for id in HISTORY_IDS {
            assert!(
                !ids(&h).iter().any(|i| i == id),
                "{history}: {id} was delivered before the start and is not judged"
            );
        }
    }
}

#[test]
fn the_only_failure_is_the_one_the_recording_means() {
    for (history, _) in PAIRS {
        let failed: Vec<(String, Outcome)> = replay(history)
            .traces
            .iter()
            .filter(|t| !matches!(t.story.outcome, Outcome::Succeeded | Outcome::NoChange))
            .map(|t| (t.story.promotion_id.clone(), t.story.outcome))
            .collect();
        let meant: Vec<(String, Outcome)> = if history == "history-oci-failure.jsonl" {
            vec![("rel-2042".into(), Outcome::Failed)]
        } else {
            Vec::new()
        };
        assert_eq!(failed, meant, "{history}");
    }
}

/// The initial state alone (the agent started, nothing happened since), up to `synced`.
fn initial_state(name: &str) -> String {
    let t = text(name);
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line);
        out.push('\n');
        if line.contains(r#""kind":"synced""#) {
            return out;
        }
    }
    panic!("{name} has no synced line");
}

#[test]
fn an_agent_started_on_history_alone_emits_nothing_at_any_deadline() {
    for (history, _) in PAIRS {
        let r = replay::run(&initial_state(history), cfg());
        assert!(r.bad.is_empty(), "{history}: {:?}", r.bad);
        let judged: Vec<&str> = r
            .traces
            .iter()
            .map(|t| t.story.promotion_id.as_str())
            .collect();
        assert!(judged.is_empty(), "{history}: judged {judged:?}");
    }
}

/// An engine started on `state` as the agent starts (held, then released), past every deadline:
/// the engine and everything it emitted, probe requests included.
fn started_on(state: &str) -> (Engine, Vec<fluxtrace::correlate::Output>) {
    let mut e = Engine::new(cfg());
    let mut out = e.hold(true);
    for ev in recording::decode_all(state).events {
        out.extend(e.apply(ev));
    }
    out.extend(e.hold(false));
    out.extend(e.finish());
    (e, out)
}

/// History still says what runs now: the Deployment the history promotion delivered names it.
#[test]
fn history_feeds_what_runs_now_without_a_verdict() {
    let (e, out) = started_on(&initial_state("history-oci.jsonl"));
    assert!(out.is_empty(), "nothing emitted: {out:?}");
    let w = e.workloads(&WorkloadFilter::default(), &|_, _, _| None);
    let checkout = w
        .iter()
        .find(|w| w.name == "checkout")
        .expect("checkout is followed");
    let by = checkout.delivered_by.as_ref().expect("who delivered it");
    assert_eq!(by.id, "rel-2040");
    assert_eq!(by.outcome, "succeeded");
    assert_eq!(
        by.time.to_string(),
        "2026-11-26T09:14:02Z",
        "its rollout's end"
    );
}

/// A recording with a report appended after `synced`, at `at`.
fn with_report(name: &str, report: &str, at: &str) -> String {
    format!(
        "{}{{\"at\":\"{at}\",\"kind\":\"promotion\",\"promotion\":{report}}}\n",
        initial_state(name)
    )
}

const REL_2040: &str = r#"{"id":"rel-2040","environment":"prod","app":"shop","artifact":{"repository":"ghcr.io/acme/shop-manifests","tag":"prod","digest":"sha256:52a57332cdc79054b3b84881f3a2d3e2a95faa15e56f3564ed9a18a3f9c2ad9f"}}"#;

#[test]
fn a_report_of_a_promotion_delivered_before_the_start_is_answered_as_delivered() {
    let r = replay::run(
        &with_report("history-oci.jsonl", REL_2040, "2026-11-26T10:00:30Z"),
        cfg(),
    );
    assert_eq!(r.traces.len(), 1);
    let t = &r.traces[0];
    assert_eq!(t.story.promotion_id, "rel-2040");
    assert_eq!(t.story.outcome, Outcome::Succeeded, "{:#?}", t.story);
    assert!(t.story.divergence.is_none());
    // The times the objects recorded: stored at 09:13:31, applied at 09:14:05, the rollout
    // of its ReplicaSet complete at 09:14:02.
    let end = |stage: &str| {
        t.story
            .stages
            .iter()
            .find(|s| s.stage.as_str() == stage)
            .map(|s| s.end)
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("no {stage} stage: {:#?}", t.story.stages))
    };
    assert_eq!(end("source"), "2026-11-26T09:13:31Z");
    assert_eq!(end("reconcile"), "2026-11-26T09:14:05Z");
    assert_eq!(end("rollout"), "2026-11-26T09:14:02Z");
    assert_eq!(t.story.end.to_string(), "2026-11-26T09:14:05Z");
}

#[test]
fn a_report_listed_at_start_whose_delivery_had_ended_is_judged_from_the_objects() {
    // The Promotion object was created before the agent started (the agent that took the
    // report stopped before its verdict): it is judged, from what the objects recorded.
    let report = REL_2040.replace(r#""id""#, r#""time":"2026-11-26T09:12:00Z","id""#);
    let state = initial_state("history-oci.jsonl");
    let (before, synced) = state.trim_end().rsplit_once('\n').expect("lines");
    let text = format!(
        "{before}\n{{\"at\":\"2026-11-26T10:00:00Z\",\"kind\":\"promotion\",\"promotion\":{report}}}\n{synced}\n"
    );
    let r = replay::run(&text, cfg());
    assert_eq!(r.traces.len(), 1);
    let t = &r.traces[0];
    assert_eq!(t.story.outcome, Outcome::Succeeded, "{:#?}", t.story);
    assert_eq!(t.story.start.to_string(), "2026-11-26T09:12:00Z");
    assert_eq!(t.story.end.to_string(), "2026-11-26T09:14:05Z");
}

#[test]
fn an_old_flux_event_or_a_relist_does_not_bring_history_back() {
    // After the start: the OCIRepository re-listed (a watch restart) with the same artifact,
    // and notification-controller forwarding an old event naming rel-2040.
    let state = initial_state("history-oci.jsonl");
    let source = state
        .lines()
        .find(|l| l.contains(r#""kind":"OCIRepository""#))
        .expect("the source")
        .replace("2026-11-26T10:00:00Z", "2026-11-26T10:05:00Z")
        // A periodic reconcile under way: an observation that differs from the listed one.
        .replace(
            r#""conditions":["#,
            r#""conditions":[{"lastTransitionTime":"2026-11-26T10:05:00Z","message":"reconciliation in progress","observedGeneration":1,"reason":"Progressing","status":"True","type":"Reconciling"},"#,
        );
    assert!(source.contains("Reconciling"), "the source changed");
    let event = r#"{"at":"2026-11-26T10:06:00Z","kind":"flux_event","event":{"involvedObject":{"kind":"Kustomization","namespace":"flux-system","name":"shop"},"severity":"info","timestamp":"2026-11-26T09:14:05Z","message":"Reconciliation finished","reason":"ReconciliationSucceeded","reportingController":"kustomize-controller","metadata":{"revision":"prod@sha256:52a57332cdc79054b3b84881f3a2d3e2a95faa15e56f3564ed9a18a3f9c2ad9f","promotion-id":"rel-2040"}}}"#;
    let text = format!("{state}{source}\n{event}\n");
    let r = replay::run(&text, cfg());
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    let judged: Vec<&str> = r
        .traces
        .iter()
        .map(|t| t.story.promotion_id.as_str())
        .collect();
    assert!(judged.is_empty(), "judged {judged:?}");
}

/// A recording restarted after line `k`: the latest state of every object it delivered
/// before, listed at that line's time as an agent that starts then lists it, then the rest;
/// `drop_reports` leaves its promotion reports out (a delivery nobody announced).
fn restarted_at(name: &str, k: usize, drop_reports: bool) -> String {
    let lines: Vec<serde_json::Value> = text(name)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .filter(|v: &serde_json::Value| !(drop_reports && v["kind"] == "promotion"))
        .collect();
    let key = |v: &serde_json::Value| {
        let o = &v["object"];
        format!(
            "{}/{}/{}",
            o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]
        )
    };
    let at = lines[k - 1]["at"].clone();
    let mut latest: Vec<(String, serde_json::Value)> = Vec::new();
    for v in lines[..k].iter().filter(|v| v["kind"] == "watch") {
        latest.retain(|(k, _)| *k != key(v));
        if v["type"] != "DELETED" {
            latest.push((key(v), v.clone()));
        }
    }
    let mut out = String::new();
    for (_, mut v) in latest {
        v["at"] = at.clone();
        v["type"] = "ADDED".into();
        out.push_str(&format!("{v}\n"));
    }
    out.push_str(&format!("{{\"at\":{at},\"kind\":\"synced\"}}\n"));
    for v in &lines[k..] {
        out.push_str(&format!("{v}\n"));
    }
    out
}

#[test]
fn a_flagger_analysis_under_way_at_start_is_followed_to_its_end() {
    // Nobody reported it. Watched from before the commit, and from a start at 10:02:00 with
    // the Kustomization Ready and the target rolled out, Flagger at weight 20 of its analysis.
    let watched = replay::run(
        &restarted_at("flagger-canary-success.jsonl", 7, true),
        cfg(),
    );
    let started = replay::run(
        &restarted_at("flagger-canary-success.jsonl", 34, true),
        cfg(),
    );
    assert_eq!(
        watched.traces.len(),
        1,
        "the delivery, watched from its start"
    );
    assert_eq!(
        started.traces.len(),
        1,
        "the delivery, seen from mid-analysis"
    );
    let (w, s) = (&watched.traces[0], &started.traces[0]);
    assert_eq!(
        s.story.promotion_id,
        "unreported/flux-system/web/78e7e93a2812"
    );
    assert_eq!(s.story.outcome, Outcome::Succeeded);
    let stages = |t: &replay::Trace| -> Vec<(String, String)> {
        t.story
            .stages
            .iter()
            .map(|st| (st.stage.as_str().to_string(), st.outcome.to_string()))
            .collect()
    };
    assert_eq!(
        stages(s),
        stages(w),
        "the same stages, the analysis included"
    );
    assert_eq!(s.story.end, w.story.end, "it ends with the analysis");
}

#[test]
fn no_traffic_probe_is_sent_for_history() {
    // The Deployment opts in to the traffic probe; its rollout ended before the start.
    let state = initial_state("history-oci.jsonl").replace(
        r#""annotations":{"deployment.kubernetes.io/revision":"6"}"#,
        r#""annotations":{"deployment.kubernetes.io/revision":"6","fluxtrace.io/probe-url":"http://checkout.shop.svc:8080/version"}"#,
    );
    assert!(state.contains("probe-url"), "the Deployment opts in");
    let (_, out) = started_on(&state);
    assert!(out.is_empty(), "no probe, no span, no story: {out:?}");
}

#[test]
fn an_automation_push_a_later_commit_overtook_is_history() {
    // The automation pushed df1395b1 at 09:21:31; the GitRepository has stored a later commit
    // (someone else's) since, at 09:40:00, and never df1395b1 itself.
    let pushed = "df1395b18a2e85c907474de46f1167d7310d0e15";
    let later = "0123456789abcdef0123456789abcdef01234567";
    let state = initial_state("history-image-automation.jsonl")
        .replace(pushed, later)
        .replace(
            &format!(r#""lastPushCommit":"{later}""#),
            &format!(r#""lastPushCommit":"{pushed}""#),
        )
        .replace("2026-11-26T09:21:47Z", "2026-11-26T09:40:00Z");
    assert!(state.contains(&format!(r#""lastPushCommit":"{pushed}""#)));
    assert!(state.contains(&format!("main@sha1:{later}")));
    let r = replay::run(&state, cfg());
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    let judged: Vec<(&str, Outcome)> = r
        .traces
        .iter()
        .map(|t| (t.story.promotion_id.as_str(), t.story.outcome))
        .collect();
    assert!(judged.is_empty(), "judged {judged:?}");
}

// ---- DORA through the binary ----------------------------------------------------------------

#[test]
fn dora_counts_only_the_promotions_after_the_start() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recordings");
    let files: Vec<std::path::PathBuf> = PAIRS.iter().map(|(h, _)| dir.join(h)).collect();
    let (_running, addr) = cli::serve_replay(env!("CARGO_BIN_EXE_fluxtrace"), &files);
    let (_, metrics) = cli::get(&addr, "/metrics", None).expect("/metrics answers");
    let finished: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("fluxtrace_dora_promotions_finished_total{"))
        .collect();
    let count = |outcome: Option<&str>| -> f64 {
        finished
            .iter()
            .filter(|l| outcome.is_none_or(|o| l.contains(&format!(r#"outcome="{o}""#))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    // rel-2041, P-2026-11-26-42, the automated push of 78e7e93a (no environment or app:
    // `unknown`), rel-2060 and rel-2042: one each; only rel-2042 failed.
    assert_eq!(count(Some("failed")), 1.0, "{}", finished.join("\n"));
    assert_eq!(count(None), 5.0, "{}", finished.join("\n"));
    for id in HISTORY_IDS {
        assert!(!metrics.contains(id), "{id} is in no exemplar");
    }
}
