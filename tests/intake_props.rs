//! Bad input never panics the intake and is always refused with a 4xx: property tests on both
//! JSON bodies (promotion reports and Flux events), fed arbitrary text and bytes, truncated
//! bodies and valid bodies with a value somewhere replaced by one of another type. Whatever is
//! refused never reaches the engine: at the end, the engine has applied exactly the bodies that
//! were accepted.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use fluxtrace::correlate::EngineConfig;
use fluxtrace::intake::Auth;
use fluxtrace_testkit::intake::*;
use fluxtrace_testkit::json::{json_value, mutate};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

const FLUX_EVENT: &str = include_str!("fixtures/flux-event-generic-provider.json");
const FLUX_EVENT_DOCS: &str =
    include_str!("fixtures/flux-event-generic-provider.docs-example.json");

fn full_report() -> String {
    format!(
        r#"{{"id":"P-prop","environment":"prod","revision":"{SHA}","artifact":{{"repository":"ghcr.io/acme/app","tag":"prod","digest":"{DIGEST}"}},"app":"shop","actor":"alice","pipeline":{{"name":"release","run_id":"1","url":"https://ci.example/1"}},"traceparent":"{CI_TRACEPARENT}","time":"2026-11-26T10:00:00Z"}}"#
    )
}

/// Bodies derived from `valid`: mutated, truncated, arbitrary.
fn bodies(valid: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    let parsed: Vec<Value> = valid
        .iter()
        .map(|v| serde_json::from_str(v).expect("valid JSON"))
        .collect();
    let n = valid.len();
    let mutated = (0..n, any::<u64>(), json_value()).prop_map(move |(i, pick, new)| {
        let mut v = parsed[i].clone();
        mutate(&mut v, pick, new);
        serde_json::to_vec(&v).expect("serializable")
    });
    let truncated = (0..n, any::<prop::sample::Index>()).prop_map(move |(i, at)| {
        let b = valid[i].as_bytes();
        b[..at.index(b.len() + 1)].to_vec()
    });
    prop_oneof![
        4 => mutated,
        2 => truncated,
        1 => ".{0,200}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn check(route: &str, valid: Vec<String>, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    // A long tick: the engine's clock moves only with what the bodies say.
    let t = start_with(
        Auth::with_secrets(&[TOKEN], None),
        EngineConfig::default(),
        Duration::from_secs(3600),
    );
    let accepted = std::cell::Cell::new(0u64);
    let refused = std::cell::Cell::new(0u64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&bodies(valid), |body| {
        let (status, resp, _) = rt.block_on(send(
            &t.app,
            request(Method::POST, route, Some(TOKEN), &[], body.clone()),
        ));
        let text = String::from_utf8_lossy(&body).into_owned();
        if status == StatusCode::ACCEPTED {
            let v: Value = serde_json::from_slice(&resp).expect("a JSON answer");
            if v["status"] != "ignored" {
                accepted.set(accepted.get() + 1);
            }
            return Ok(());
        }
        refused.set(refused.get() + 1);
        prop_assert!(status.is_client_error(), "{status} for {text}");
        let v: Value = serde_json::from_slice(&resp).expect("a JSON error");
        prop_assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(drain(&t));
    let applied = if route == "/v1/promotions" {
        promotions_applied(&t.metrics) - 1
    } else {
        flux_events_applied(&t.metrics)
    };
    assert_eq!(
        applied,
        accepted.get(),
        "exactly what was accepted reached the engine"
    );
    // Both sides were exercised.
    assert!(
        accepted.get() > 0 && refused.get() > cases as u64 / 4,
        "{} accepted, {} refused",
        accepted.get(),
        refused.get()
    );
}

#[test]
fn promotion_reports_never_panic_and_every_refusal_is_4xx() {
    check(
        "/v1/promotions",
        vec![full_report(), report_json("P-min")],
        600,
    );
}

#[test]
fn flux_events_never_panic_and_every_refusal_is_4xx() {
    check(
        "/v1/flux/events",
        vec![FLUX_EVENT.to_string(), FLUX_EVENT_DOCS.to_string()],
        600,
    );
}
