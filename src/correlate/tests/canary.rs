//! Flagger canaries: the analysis of a changed Deployment as the promotion's `traffic.canary`.

use super::fixtures::*;
use crate::model::CanaryObs;

/// Canary `apps/podinfo` targeting Deployment `podinfo`: analysis every 30s, threshold 2, three
/// weight steps, 60 s progress deadline; `phase` with its `Promoted` condition written at `at`.
fn canary(phase: &str, status: CondStatus, weight: i64, at: i64) -> CanaryObs {
    CanaryObs {
        object: ObjectRef::new(Kind::Canary, "apps", "podinfo"),
        uid: "uid-canary".into(),
        target: ObjectRef::new(Kind::Deployment, "apps", "podinfo"),
        interval: SignedDuration::from_secs(30),
        threshold: 2,
        steps: 3,
        progress_deadline: SignedDuration::from_secs(60),
        phase: phase.into(),
        weight,
        iterations: 0,
        failed_checks: 0,
        last_applied_spec: Some("5f56684589".into()),
        last_promoted_spec: Some("4cb74184589".into()),
        last_transition: Some(t(at)),
        conditions: vec![cond("Promoted", status, phase, "", at)],
    }
}

/// The happy Git path with a Canary on the Deployment, whose last run ended before it.
fn canary_promotion(r: &mut Run) {
    r.feed(
        0,
        EventBody::Canary(canary("Succeeded", CondStatus::True, 0, -3600)),
    );
    git_promotion(r);
}

#[test]
fn the_verdict_waits_for_the_analysis_not_for_the_previous_runs_outcome() {
    let mut r = Run::new();
    canary_promotion(&mut r);
    // Flux is Ready at 8 and the rollout done at 30; Flagger has not looked yet.
    r.engine.tick(t(200));
    assert!(r.stories().is_empty(), "decided before the analysis ran");
    r.feed(
        60,
        EventBody::Canary(canary("Progressing", CondStatus::Unknown, 0, 60)),
    )
    .feed(
        300,
        EventBody::Canary(canary("Succeeded", CondStatus::True, 0, 300)),
    )
    .finish();
    let s = r.story("P-1");
    assert_eq!(s.outcome, Outcome::Succeeded);
    let c = r.span("P-1", "traffic.canary");
    assert_eq!(c.end, t(300));
    assert_eq!(c.attributes.get_str(attr::DELIVERY_STAGE), Some("traffic"));
    assert!(
        r.spans_of("P-1").iter().all(|s| s.name != "rollout"),
        "the target's rollout is the analysis"
    );
}

#[test]
fn an_analysis_that_never_ends_times_out_at_its_deadline() {
    let mut r = Run::new();
    canary_promotion(&mut r);
    r.feed(
        60,
        EventBody::Canary(canary("Progressing", CondStatus::Unknown, 10, 60)),
    )
    .finish();
    let s = r.story("P-1");
    assert_eq!(s.outcome, Outcome::TimedOut);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(
        (d.stage, d.reason.as_str()),
        (Stage::Traffic, "CanaryTimeout")
    );
    // 30 s × (3 steps + threshold 2 + 3) + 60 s + 5m grace, from the target's change at 7.
    let c = r.span("P-1", "traffic.canary");
    assert_eq!(c.end, t(7 + 240 + 60 + 300));
    assert_eq!(
        c.attributes.get_str(attr::FLAGGER_CANARY_PHASE),
        Some("Progressing")
    );
}

#[test]
fn a_rollback_fails_the_analysis_and_the_promotion_diverges_at_traffic() {
    let mut r = Run::new();
    canary_promotion(&mut r);
    let mut failed = canary("Failed", CondStatus::False, 0, 150);
    failed.conditions[0].message = "Canary analysis failed, Deployment scaled to zero.".into();
    r.feed(
        60,
        EventBody::Canary(canary("Progressing", CondStatus::Unknown, 0, 60)),
    )
    .feed(150, EventBody::Canary(failed))
    .finish();
    let s = r.story("P-1");
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(d.stage, Stage::Traffic);
    assert_eq!(
        d.message,
        "Canary analysis failed, Deployment scaled to zero."
    );
    assert_eq!(r.span("P-1", "reconcile").status, SpanStatus::Ok);
}

#[test]
fn a_deployment_no_canary_targets_rolls_out_as_before() {
    let mut r = Run::new();
    let mut other = canary("Succeeded", CondStatus::True, 0, -3600);
    other.target = ObjectRef::new(Kind::Deployment, "apps", "other");
    r.feed(0, EventBody::Canary(other));
    git_promotion(&mut r);
    r.finish();
    assert_eq!(r.story("P-1").outcome, Outcome::Succeeded);
    r.span("P-1", "rollout");
    assert!(r.spans_of("P-1").iter().all(|s| s.name != "traffic.canary"));
}
