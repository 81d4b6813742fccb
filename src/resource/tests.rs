use serde_json::json;

use super::*;

const SHA: &str = "450796ddb2ab6724ee1cc32a4be56da032d1cca0";

#[test]
fn a_spec_becomes_the_report_it_describes() {
    let created: Timestamp = "2026-11-30T10:00:00Z".parse().expect("a time");
    let spec = json!({
        "environment": "prod", "revision": SHA, "app": "podinfo",
        "pipeline": {"name": "deploy", "runId": "77"},
        "commitTime": "2026-11-30T09:00:00Z",
    });
    let r = to_report(&spec, "rel-1", Some(created)).expect("valid");
    assert_eq!(r.id, "rel-1", "the name is the id when the spec has none");
    assert_eq!(r.environment, "prod");
    assert_eq!(r.time, Some(created), "starts when the object was created");
    assert_eq!(r.pipeline.and_then(|p| p.run_id).as_deref(), Some("77"));
    assert_eq!(
        r.commit_time,
        Some("2026-11-30T09:00:00Z".parse().expect("a time"))
    );

    let with_id = json!({"id": "CI Run #5", "environment": "prod", "revision": SHA,
                         "time": "2026-11-30T10:05:00Z"});
    let r = to_report(&with_id, "ci-run-5", Some(created)).expect("valid");
    assert_eq!(r.id, "CI Run #5");
    assert_eq!(
        r.time,
        Some("2026-11-30T10:05:00Z".parse().expect("a time"))
    );
}

#[test]
fn a_wrong_spec_is_refused_with_the_field_named() {
    let cases = [
        (json!({"revision": SHA}), "spec.environment is required"),
        (json!({"environment": 3}), "spec.environment"),
        (
            json!({"environment": "prod", "artifact": {"digest": 5}}),
            "spec.artifact.digest",
        ),
        (
            json!({"environment": "prod", "revision": SHA, "time": "yesterday"}),
            "spec.time is not an RFC 3339 time",
        ),
        (
            json!({"environment": "prod", "revision": SHA, "commitTime": "soon"}),
            "spec.commitTime",
        ),
        (json!({"environment": "prod"}), "spec."),
        (
            json!({"environment": "prod", "revision": SHA, "traceparent": "00-zz"}),
            "spec.traceparent",
        ),
    ];
    for (spec, want) in cases {
        let e = to_report(&spec, "p", None).expect_err(&spec.to_string());
        assert!(e.to_string().contains(want), "{spec}: {e}");
    }
}

#[test]
fn object_names_are_valid_and_stable() {
    assert_eq!(object_name("rel-2041"), "rel-2041");
    let odd = object_name("GitHub Run #12/attempt 2");
    assert!(odd.starts_with("githubrun12attempt2-"), "{odd}");
    assert_eq!(odd, object_name("GitHub Run #12/attempt 2"), "stable");
    assert_ne!(odd, object_name("GitHub Run #12/attempt 3"), "distinct");
    assert!(odd.len() <= 63);
    assert!(object_name("###").starts_with("p-"));
    let long = "a".repeat(300);
    assert!(object_name(&long).len() <= 253);
}

#[test]
fn a_report_written_by_the_intake_reads_back_the_same() {
    let received: Timestamp = "2026-11-30T10:00:00Z".parse().expect("a time");
    let report = crate::sources::promotion::decode(&format!(
        r#"{{"id":"rel-9","environment":"staging","artifact":{{"repository":"ghcr.io/acme/app","tag":"1.2.3","digest":"sha256:{}"}},
            "actor":"dana","pipeline":{{"name":"ci","run_id":"4","url":"https://ci/4"}}}}"#,
        "a".repeat(64)
    ))
    .expect("a valid report");
    let spec = serde_json::to_value(spec_of(&report, received)).expect("JSON");
    let back = to_report(&spec, &object_name(&report.id), None).expect("valid");
    assert_eq!(
        back,
        PromotionReport {
            time: Some(received),
            ..report
        }
    );
}

#[test]
fn the_crd_has_the_columns_on_call_reads() {
    let crd = Promotion::crd();
    let v = &crd.spec.versions[0];
    let cols: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        cols,
        ["Environment", "App", "Phase", "Divergence", "Trace", "Age"]
    );
    assert!(v
        .subresources
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .is_some());
    assert_eq!(crd.spec.group, GROUP);
    assert_eq!(crd.spec.names.plural, PLURAL);
}
