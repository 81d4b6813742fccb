//! A Flagger analysis of twelve weight steps with a confirm-promotion gate
//! (`flagger-canary-long.jsonl`; its golden is in `recordings.rs`): what a user reads of it,
//! from an agent that watched it all and from one that started during the gate.

use std::fmt::Write as _;

use fluxtrace::correlate::EngineConfig;
use fluxtrace::replay::{self, Replay};
use fluxtrace::story::Outcome;
use fluxtrace::trace::{AttrValue, SpanEventRecord, SpanRecord};

fn text() -> &'static str {
    include_str!("../examples/recordings/flagger-canary-long.jsonl")
}

fn run(text: &str) -> Replay {
    let r = replay::run(
        text,
        EngineConfig {
            cluster: "demo".into(),
            ..EngineConfig::default()
        },
    );
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    r
}

fn canary(r: &Replay) -> &SpanRecord {
    r.spans()
        .find(|s| s.name == "traffic.canary")
        .expect("a canary span")
}

fn int(attrs: &fluxtrace::trace::Attributes, key: &str) -> Option<i64> {
    match attrs.get(key) {
        Some(AttrValue::Int(n)) => Some(*n),
        _ => None,
    }
}

fn int_event(e: &SpanEventRecord, key: &str) -> Option<i64> {
    int(&e.attributes, key)
}

/// The `canary.weight` steps of a canary span, in order.
fn weights(canary: &SpanRecord) -> Vec<i64> {
    canary
        .events
        .iter()
        .filter(|e| e.name == "canary.weight")
        .filter_map(|e| match e.attributes.get("flagger.canary.weight") {
            Some(AttrValue::Int(n)) => Some(*n),
            _ => None,
        })
        .collect()
}

/// `text` as an agent started at `at` sees it: the last state of every object (Events
/// included) then as its initial list, the report, a `synced` line, and the rest. Flux's
/// notifications before `at` are gone, as they are for a restarted agent.
fn started_at(text: &str, at: &str) -> String {
    let mut initial: Vec<(String, serde_json::Value)> = Vec::new();
    let (mut head, mut rest) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        if v["at"].as_str().expect("at") >= at {
            rest.push(line.to_string());
            continue;
        }
        match v["kind"].as_str() {
            Some("watch") => {
                let o = &v["object"];
                let key = format!(
                    "{}/{}/{}",
                    o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]
                );
                initial.retain(|(k, _)| *k != key);
                if v["type"] != "DELETED" {
                    initial.push((key, o.clone()));
                }
            }
            Some("promotion") => head.push(v),
            _ => {}
        }
    }
    let mut out = String::new();
    for (_, o) in initial {
        let line = serde_json::json!({"at": at, "kind": "watch", "type": "ADDED", "object": o});
        writeln!(out, "{line}").expect("write");
    }
    for mut v in head {
        v["at"] = at.into();
        writeln!(out, "{v}").expect("write");
    }
    writeln!(out, r#"{{"at":"{at}","kind":"synced"}}"#).expect("write");
    for line in rest {
        writeln!(out, "{line}").expect("write");
    }
    out
}

/// Stepweight 5 to 60: client-go folds the tenth and later distinct messages of the Canary
/// into one combined Event, yet the trace shows every weight step (the last five from the
/// Canary's status), the highest weight and the steps once each, and the confirm-promotion
/// gate with how long it held the run.
#[test]
fn a_long_flagger_analysis_shows_every_weight_step_and_the_promotion_gate() {
    let r = run(text());
    assert_eq!(r.traces[0].story.promotion_id, "P-2026-11-26-47");
    assert_eq!(r.traces[0].story.outcome, Outcome::Succeeded);
    let canary = canary(&r);
    let all: Vec<i64> = (1..=12).map(|k| k * 5).collect();
    assert_eq!(weights(canary), all, "each step once, in order");
    assert_eq!(int(&canary.attributes, "flagger.canary.weight"), Some(60));
    assert_eq!(int(&canary.attributes, "flagger.canary.steps"), Some(12));
    let from_status = canary
        .events
        .iter()
        .filter(|e| e.attributes.get_str("flagger.canary.source") == Some("status"))
        .filter(|e| e.name == "canary.weight")
        .count();
    assert_eq!(from_status, 5, "40 to 60 have no Event of their own");
    let combined: Vec<_> = canary
        .events
        .iter()
        .filter(|e| e.name == "canary.combined")
        .collect();
    assert_eq!(combined.len(), 1, "one patched Event, one span event");
    assert_eq!(int_event(combined[0], "k8s.event.count"), Some(9));
    assert_eq!(
        int(&canary.attributes, "flagger.canary.failed_checks"),
        Some(0),
        "a combined Event's count is not of failed checks"
    );
    let at = |name: &str| {
        canary
            .events
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.time.to_string())
    };
    assert_eq!(
        at("canary.waiting").as_deref(),
        Some("2026-11-26T10:07:30Z")
    );
    assert_eq!(
        at("canary.approved").as_deref(),
        Some("2026-11-26T10:10:00Z")
    );
    let approved = canary.events.iter().find(|e| e.name == "canary.approved");
    assert_eq!(
        approved.and_then(|e| int_event(e, "flagger.canary.gate.wait_seconds")),
        Some(150)
    );
    assert_eq!(canary.end.to_string(), "2026-11-26T10:11:00Z");
}

/// An agent that starts during the gate agrees on the verdict, the highest weight, the steps
/// and the gate; of the weight steps it has those with an Event of their own (5 to 35), not
/// those only the status showed before it started (40 to 60).
#[test]
fn an_agent_started_during_the_gate_agrees_on_what_it_can_know() {
    let watching = run(text());
    let late = run(&started_at(text(), "2026-11-26T10:08:00Z"));
    assert_eq!(late.traces.len(), 1);
    assert_eq!(late.traces[0].story.outcome, Outcome::Succeeded);
    let (a, b) = (canary(&watching), canary(&late));
    assert_eq!((a.start, a.end), (b.start, b.end));
    assert_eq!(a.attributes, b.attributes);
    let seen: Vec<i64> = (1..=7).map(|k| k * 5).collect();
    assert_eq!(weights(b), seen);
    let approved = b.events.iter().find(|e| e.name == "canary.approved");
    assert_eq!(
        approved.and_then(|e| int_event(e, "flagger.canary.gate.wait_seconds")),
        Some(150),
        "the gate's start is in the Canary's Promoted condition"
    );
}
