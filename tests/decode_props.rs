//! Bad input never panics: property tests on the line decoder (and the engine behind it), fed
//! arbitrary text, truncated lines, wrong types and huge messages.

use fluxtrace::correlate::{Engine, EngineConfig};
use fluxtrace::sources::recording::{decode_line, LineError, MAX_LINE_BYTES};
use fluxtrace_testkit::json::{json_value, mutate};
use fluxtrace_testkit::recordings::all_lines;
use proptest::prelude::*;
use serde_json::Value;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(line in ".{0,300}") {
        let _ = decode_line(&line);
    }

    #[test]
    fn truncated_lines_are_errors_not_panics(idx in 0usize..10_000, cut in 0usize..10_000) {
        let lines = all_lines();
        let line = lines[idx % lines.len()];
        let mut end = cut % line.len().max(1);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let truncated = &line[..end];
        if end < line.len() {
            // A strict prefix of a JSON object is never a valid line.
            let r = decode_line(truncated);
            prop_assert!(r.is_err() || truncated.trim().is_empty(), "{truncated}");
            if let Err(e) = r {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn wrong_types_anywhere_are_rejected_or_ignored_and_the_engine_survives(
        picks in proptest::collection::vec((0usize..10_000, any::<u64>(), json_value()), 1..40)
    ) {
        let lines = all_lines();
        let mut engine = Engine::new(EngineConfig::default());
        for (idx, pick, new) in picks {
            let mut v: Value = serde_json::from_str(lines[idx % lines.len()]).expect("bundled lines are JSON");
            mutate(&mut v, pick, new);
            match decode_line(&v.to_string()) {
                Ok(Some(ev)) => { let _ = engine.apply(ev); }
                Ok(None) => {}
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
        let _ = engine.finish();
        prop_assert_eq!(engine.open_promotions(), 0);
    }
}

#[test]
fn a_huge_line_is_refused_before_parsing() {
    let huge = format!(
        r#"{{"at":"2026-11-26T10:00:00Z","kind":"flux_event","event":{{"message":"{}"}}}}"#,
        "x".repeat(MAX_LINE_BYTES)
    );
    match decode_line(&huge) {
        Err(LineError::TooLong(n)) => assert_eq!(n, huge.len()),
        other => panic!("expected TooLong, got {other:?}"),
    }
}

#[test]
fn the_longest_flux_message_is_accepted() {
    // Flux messages reach 39,000 characters.
    let line = format!(
        r#"{{"at":"2026-11-26T10:00:00Z","kind":"flux_event","event":{{"involvedObject":{{"kind":"Kustomization","name":"apps","namespace":"flux-system"}},"severity":"error","timestamp":"2026-11-26T10:00:00Z","reason":"ReconciliationFailed","message":"{}"}}}}"#,
        "y".repeat(39_000)
    );
    assert!(decode_line(&line).expect("valid").is_some());
}

#[test]
fn timestamps_at_the_ends_of_time_do_not_overflow_deadlines() {
    let mut engine = Engine::new(EngineConfig::default());
    for at in [
        "9999-12-31T23:59:59Z",
        "-009999-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
    ] {
        let lines = [
            format!(
                r#"{{"at":"{at}","kind":"promotion","promotion":{{"id":"P-{at}","environment":"prod","revision":"450796ddb2ab6724ee1cc32a4be56da032d1cca0","time":"{at}"}}}}"#
            ),
            format!(
                r#"{{"at":"{at}","kind":"watch","type":"ADDED","object":{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"a","namespace":"n","generation":1}},"spec":{{"progressDeadlineSeconds":2147483647}},"status":{{"conditions":[{{"type":"Progressing","status":"True","reason":"ReplicaSetUpdated","lastTransitionTime":"{at}"}}]}}}}}}"#
            ),
            format!(
                r#"{{"at":"{at}","kind":"watch","type":"ADDED","object":{{"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization","metadata":{{"name":"k","namespace":"f"}},"spec":{{"timeout":"876000h"}},"status":{{"lastAttemptedRevision":"main@sha1:450796ddb2ab6724ee1cc32a4be56da032d1cca0","history":[{{"lastReconciled":"{at}","lastReconciledDuration":"876000h","metadata":{{"revision":"main@sha1:450796ddb2ab6724ee1cc32a4be56da032d1cca0"}}}}],"conditions":[{{"type":"Ready","status":"True","reason":"ReconciliationSucceeded","lastTransitionTime":"{at}"}}]}}}}}}"#
            ),
        ];
        for l in &lines {
            if let Ok(Some(ev)) = decode_line(l) {
                let _ = engine.apply(ev);
            }
        }
    }
    let _ = engine.finish();
    assert_eq!(engine.open_promotions(), 0);
}
