//! Rollouts: claims, deadlines, untraced rollouts.

use super::fixtures::*;

#[test]
fn rollout_deadline_is_progress_deadline_plus_grace() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let mut d = rolling("podinfo", 4, 5);
    d.progress_deadline = SignedDuration::from_secs(120);
    r.feed(0, EventBody::Deployment(deploy("podinfo", 3)))
        .feed(1, EventBody::Promotion(report("P-d", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(5, EventBody::Deployment(d))
        .feed(6, EventBody::Reconciler(ks_ready("apps", &rev, 6)))
        .finish();
    let s = r.story("P-d");
    assert_eq!(s.outcome, Outcome::TimedOut);
    assert_eq!(s.divergence.as_ref().map(|d| d.stage), Some(Stage::Rollout));
    assert_eq!(r.span("P-d", "rollout").end, t(5 + 120 + 60));
}

#[test]
fn a_rollout_no_promotion_explains_gets_its_own_trace() {
    let mut r = Run::new();
    let mut d = deploy("cache", 1);
    d.manager = None;
    let mut rolling_d = rolling("cache", 2, 5);
    rolling_d.manager = None;
    let mut done = rolled("cache", 2, 15);
    done.manager = None;
    r.feed(0, EventBody::Deployment(d))
        .feed(5, EventBody::Deployment(rolling_d))
        .feed(15, EventBody::Deployment(done))
        .finish();
    let s = &r.stories()[0];
    assert_eq!(s.traceability, Traceability::Missing);
    assert_eq!(s.outcome, Outcome::Succeeded);
    let spans = r.spans();
    assert_eq!(spans.len(), 2);
    for span in spans {
        assert_eq!(
            span.attributes.get_str(attr::DELIVERY_TRACEABILITY),
            Some("missing")
        );
    }
}

#[test]
fn a_rollout_of_a_reconcile_no_promotion_claims_is_untraced_too() {
    let mut r = Run::new();
    r.feed(
        0,
        EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA2}"), -100)),
    )
    .feed(0, EventBody::Deployment(deploy("podinfo", 3)))
    .feed(5, EventBody::Deployment(rolling("podinfo", 4, 5)))
    .feed(9, EventBody::Deployment(rolled("podinfo", 4, 9)))
    .finish();
    assert_eq!(r.stories().len(), 1);
    assert_eq!(r.stories()[0].traceability, Traceability::Missing);
}

#[test]
fn scaling_bumps_the_generation_but_is_not_a_rollout() {
    let mut r = Run::new();
    let mut d = deploy("web", 3);
    d.manager = None;
    r.feed(0, EventBody::Deployment(d.clone()));
    // `kubectl scale` / an HPA: a new generation, the same pod template.
    let mut scaled = d.clone();
    scaled.generation = 4;
    scaled.observed_generation = 4;
    scaled.replicas = 5;
    scaled.updated = 5;
    scaled.ready = 5;
    scaled.available = 5;
    r.feed(10, EventBody::Deployment(scaled)).finish();
    assert!(r.stories().is_empty(), "no untraced rollout for a scale");
    // A stuck rollout of a workload nobody announced still times out on its own.
    let mut r = Run::new();
    let mut d = deploy("cache", 1);
    d.manager = None;
    let mut stuck_d = rolling("cache", 2, 5);
    stuck_d.manager = None;
    r.feed(0, EventBody::Deployment(d))
        .feed(5, EventBody::Deployment(stuck_d))
        .finish();
    let s = &r.stories()[0];
    assert_eq!(s.traceability, Traceability::Missing);
    assert_eq!(s.outcome, Outcome::TimedOut);
}

#[test]
fn a_rollout_that_finished_before_the_report_arrived_joins_its_promotion() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Deployment(deploy("podinfo", 3)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(5, EventBody::Deployment(rolling("podinfo", 4, 5)))
        .feed(6, EventBody::Reconciler(ks_ready("apps", &rev, 6)))
        .feed(20, EventBody::Deployment(rolled("podinfo", 4, 20)));
    // CI reports late, with the time it started the promotion.
    let mut late = report("P-late", SHA);
    late.time = Some(t(1));
    r.feed(25, EventBody::Promotion(late)).finish();
    assert_eq!(r.stories().len(), 1, "no separate untraced trace");
    assert_eq!(r.story("P-late").outcome, Outcome::Succeeded);
    assert_eq!(r.span("P-late", "rollout").end, t(20));
}

#[test]
fn a_digest_pinned_image_names_its_repo_digest() {
    use crate::correlate::stage::rollout::image_attrs;
    use crate::trace::Attributes;
    let digest = format!("sha256:{}", "ab".repeat(32));
    let mut a = Attributes::default();
    image_attrs(
        &mut a,
        &[format!("registry.local:5000/team/api:1.4.2@{digest}")],
    );
    assert_eq!(
        a.get_str(attr::CONTAINER_IMAGE_NAME),
        Some("registry.local:5000/team/api")
    );
    assert_eq!(
        a.get(attr::CONTAINER_IMAGE_REPO_DIGESTS),
        Some(&AttrValue::StrArray(vec![format!(
            "registry.local:5000/team/api@{digest}"
        )]))
    );
    let mut untagged = Attributes::default();
    image_attrs(
        &mut untagged,
        &["registry.local:5000/team/api:1.4.2".into()],
    );
    assert_eq!(untagged.get(attr::CONTAINER_IMAGE_REPO_DIGESTS), None);
}

/// Kubernetes counts `progressDeadlineSeconds` from the last progress: a rollout of 4 minutes
/// under a 20 s deadline that keeps progressing (the Progressing condition's `lastUpdateTime`
/// refreshed every minute) has not timed out; it succeeds.
#[test]
fn a_long_rollout_that_keeps_progressing_is_not_a_timeout() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let slow = |d: DeploymentObs| DeploymentObs {
        progress_deadline: SignedDuration::from_secs(20),
        ..d
    };
    r.feed(1, EventBody::Promotion(report("P-long", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)));
    for at in [5, 60, 120, 180] {
        r.feed(at, EventBody::Deployment(slow(rolling("api", 2, at))));
    }
    r.feed(240, EventBody::Deployment(slow(rolled("api", 2, 240))))
        .feed(241, EventBody::Reconciler(ks_ready("apps", &rev, 241)))
        .finish();
    let s = r.story("P-long");
    assert_eq!(s.outcome, Outcome::Succeeded, "{:?}", s.divergence);
    let rollout = r.span("P-long", "rollout");
    assert_eq!(rollout.end, t(240));
}

/// A HelmRelease with `driftDetection.mode: enabled` changes back a Deployment edited by hand:
/// helm-controller says so in a `DriftCorrected` Event listing the change set, with the chart
/// version it released, and the Deployment rolls out again. That rollout is Flux's correction
/// (`drift_correction`, under the HelmRelease's reconcile and apply), not an untraced change.
#[test]
fn a_helm_drift_correction_is_traced_as_fluxs_own() {
    let mut r = Run::new();
    let managed = |d: DeploymentObs| DeploymentObs {
        manager: Some(ObjectRef::new(Kind::HelmRelease, "apps", "podinfo")),
        ..d
    };
    let hr = ReconcilerObs {
        object: ObjectRef::new(Kind::HelmRelease, "apps", "podinfo"),
        uid: "uid-hr".into(),
        last_attempted: Some("6.7.0".into()),
        ..ks("x")
    };
    r.feed(0, EventBody::Reconciler(hr))
        .feed(0, EventBody::Deployment(managed(deploy("podinfo", 3))))
        // Edited by hand: generation 4 rolls out, then Flux changes it back (generation 5).
        .feed(100, EventBody::Deployment(managed(rolling("podinfo", 4, 100))))
        .feed(110, EventBody::Deployment(managed(rolled("podinfo", 4, 110))))
        .feed(
            400,
            EventBody::KubeEvent(KubeEventObs {
                involved_kind: "HelmRelease".into(),
                involved_namespace: "apps".into(),
                involved_name: "podinfo".into(),
                reason: "DriftCorrected".into(),
                message: "Cluster state of release apps/podinfo.v2 has been corrected:\nDeployment/apps/podinfo configured".into(),
                warning: false,
                component: "helm-controller".into(),
                revision: Some("6.7.0".into()),
                ..pod_event("podinfo", "DriftCorrected", "", 400)
            }),
        )
        .feed(401, EventBody::Deployment(managed(rolling("podinfo", 5, 401))))
        .feed(420, EventBody::Deployment(managed(rolled("podinfo", 5, 420))))
        .finish();
    let by_traceability = |t: Traceability| {
        r.stories()
            .into_iter()
            .filter(|s| s.traceability == t)
            .count()
    };
    assert_eq!(
        by_traceability(Traceability::Missing),
        1,
        "the edit by hand"
    );
    assert_eq!(
        by_traceability(Traceability::DriftCorrection),
        1,
        "Flux's correction"
    );
    let drift = r
        .stories()
        .into_iter()
        .find(|s| s.traceability == Traceability::DriftCorrection)
        .expect("the correction");
    assert_eq!(drift.outcome, Outcome::Succeeded);
    let apply = r.span(&drift.promotion_id, "apply");
    assert_eq!(
        apply.attributes.get_str(attr::FLUX_OBJECT_KIND),
        Some("HelmRelease")
    );
    assert_eq!(apply.attributes.get_str(attr::FLUX_REVISION), Some("6.7.0"));
    assert_eq!(r.span(&drift.promotion_id, "rollout").end, t(420));
}
