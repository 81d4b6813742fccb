//! The traffic probe.

use super::fixtures::*;

fn probed(name: &str, generation: i64, at: i64) -> DeploymentObs {
    let mut d = rolled(name, generation, at);
    d.probe = Some(ProbeSpec {
        url: "http://user:pw@podinfo.apps.svc:9898/version".into(),
        expect: Some("json:/version".into()),
        expected_version: None,
    });
    d
}

fn probe_result(id: &str, verdict: ProbeVerdict, at: i64) -> ProbeResult {
    ProbeResult {
        promotion_id: id.into(),
        namespace: "apps".into(),
        deployment: "podinfo".into(),
        generation: 4,
        url: "http://podinfo.apps.svc:9898/version".into(),
        expected: "6.6.1".into(),
        started: t(30),
        finished: t(at),
        samples: 5,
        matched: if verdict == ProbeVerdict::Passed {
            5
        } else {
            0
        },
        versions: [("6.6.0".to_string(), 5u32)].into_iter().collect(),
        failed_status: None,
        verdict,
    }
}

/// A Git promotion whose workload opted in to the traffic probe; returns the probe request.
fn probed_promotion(r: &mut Run) -> Vec<crate::model::ProbeRequest> {
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Deployment(deploy("podinfo", 3)))
        .feed(1, EventBody::Promotion(report("P-p", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(5, EventBody::Deployment(rolling("podinfo", 4, 5)))
        .feed(6, EventBody::Reconciler(ks_ready("apps", &rev, 6)));
    let mark = r.out.len();
    r.feed(30, EventBody::Deployment(probed("podinfo", 4, 30)));
    r.out[mark..]
        .iter()
        .filter_map(|o| match o {
            Output::Probe(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_completed_rollout_of_an_opted_in_workload_asks_for_a_probe() {
    let mut r = Run::new();
    let reqs = probed_promotion(&mut r);
    assert_eq!(reqs.len(), 1);
    let q = &reqs[0];
    assert_eq!(q.promotion_id, "P-p");
    assert_eq!(q.expected, "6.6.1", "the new image tag by default");
    assert_eq!(q.expect, "json:/version");
    assert_eq!(q.requested_at, t(30));
    r.feed(
        40,
        EventBody::ProbeResult(probe_result("P-p", ProbeVerdict::Passed, 40)),
    )
    .finish();
    let s = r.story("P-p");
    assert_eq!(s.outcome, Outcome::Succeeded);
    let traffic = r.span("P-p", "traffic.probe");
    assert_eq!(traffic.service, "fluxtrace-probe");
    assert_eq!(
        traffic.parent_span_id,
        Some(r.span("P-p", "promotion").span_id)
    );
    assert_eq!((traffic.start, traffic.end), (t(30), t(40)));
    assert_eq!(
        traffic.attributes.get_str(attr::URL_FULL),
        Some("http://podinfo.apps.svc:9898/version"),
        "credentials stripped"
    );
    assert_eq!(
        traffic.attributes.get(attr::DELIVERY_PROBE_MATCHED),
        Some(&AttrValue::Int(5))
    );
}

#[test]
fn old_version_still_served_diverges_at_traffic() {
    let mut r = Run::new();
    probed_promotion(&mut r);
    let verdict = ProbeVerdict::Failed {
        reason: "WrongVersion".into(),
        message: "traffic served 6.6.0 ×5; expected 6.6.1".into(),
    };
    r.feed(40, EventBody::ProbeResult(probe_result("P-p", verdict, 40)))
        .finish();
    let s = r.story("P-p");
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(
        (d.stage, d.reason.as_str()),
        (Stage::Traffic, "WrongVersion")
    );
    assert_eq!(
        r.span("P-p", "rollout").status,
        SpanStatus::Ok,
        "the rollout itself succeeded"
    );
    assert_eq!(
        r.span("P-p", "traffic.probe")
            .attributes
            .get(attr::DELIVERY_PROBE_VERSIONS),
        Some(&AttrValue::StrArray(vec!["6.6.0=5".into()]))
    );
}

#[test]
fn a_probe_that_never_reports_times_out_at_traffic() {
    let mut r = Run::new();
    probed_promotion(&mut r);
    r.finish();
    let s = r.story("P-p");
    assert_eq!(s.outcome, Outcome::TimedOut);
    assert_eq!(s.divergence.as_ref().map(|d| d.stage), Some(Stage::Traffic));
    assert_eq!(
        r.span("P-p", "traffic.probe").end,
        t(30) + SignedDuration::from_mins(3)
    );
}

#[test]
fn workloads_without_the_annotation_are_not_probed() {
    let mut r = Run::new();
    git_promotion(&mut r);
    r.finish();
    assert!(r.out.iter().all(|o| !matches!(o, Output::Probe(_))));
    assert!(r.spans_of("P-1").iter().all(|s| s.name != "traffic.probe"));
}
