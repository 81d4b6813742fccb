//! Flagger canaries: the analysis of a changed Deployment as the promotion's `traffic.canary`.

use super::fixtures::*;
use crate::model::CanaryObs;

/// Canary `apps/podinfo` targeting Deployment `podinfo`: analysis every 30s, threshold 2, three
/// weight steps, 60 s progress deadline; `phase` with its `Promoted` condition written at `at`.
pub(super) fn canary(phase: &str, status: CondStatus, weight: i64, at: i64) -> CanaryObs {
    CanaryObs {
        object: ObjectRef::new(Kind::Canary, "apps", "podinfo"),
        uid: "uid-canary".into(),
        target: ObjectRef::new(Kind::Deployment, "apps", "podinfo"),
        interval: SignedDuration::from_secs(30),
        threshold: 2,
        steps: 3,
        schedule: vec![10, 20, 30],
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

/// P-1 timed out, diverging at traffic with `CanaryTimeout`.
fn assert_canary_timeout(r: &Run) {
    let s = r.story("P-1");
    assert_eq!(s.outcome, Outcome::TimedOut);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(
        (d.stage, d.reason.as_str()),
        (Stage::Traffic, "CanaryTimeout")
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
    assert_canary_timeout(&r);
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

/// A confirm-promotion gate nobody answers for half an hour: past the analysis budget (10 min
/// from the target's change), the run is not judged while a person has to approve it; once
/// approved it ends well, and the span says how long the gate held it.
#[test]
fn a_manual_gate_holds_the_deadline_and_its_wait_is_a_span_event() {
    let mut r = Run::new();
    canary_promotion(&mut r);
    r.feed(
        60,
        EventBody::Canary(canary("Progressing", CondStatus::Unknown, 30, 60)),
    )
    .feed(
        100,
        EventBody::Canary(canary("WaitingPromotion", CondStatus::Unknown, 0, 100)),
    );
    r.engine.tick(t(1800));
    assert!(r.stories().is_empty(), "judged while waiting for approval");
    r.feed(
        1900,
        EventBody::Canary(canary("Promoting", CondStatus::Unknown, 0, 1900)),
    )
    .feed(
        1960,
        EventBody::Canary(canary("Succeeded", CondStatus::True, 0, 1960)),
    )
    .finish();
    assert_eq!(r.story("P-1").outcome, Outcome::Succeeded);
    let c = r.span("P-1", "traffic.canary");
    assert_eq!(c.end, t(1960));
    assert_eq!(
        c.attributes.get(attr::FLAGGER_CANARY_WEIGHT),
        Some(&crate::trace::AttrValue::Int(30)),
        "the highest weight: the last of its schedule"
    );
    let gate: Vec<(&str, jiff::Timestamp)> = c
        .events
        .iter()
        .filter(|e| e.name == "canary.waiting" || e.name == "canary.approved")
        .map(|e| (e.name.as_ref(), e.time))
        .collect();
    assert_eq!(
        gate,
        [("canary.waiting", t(100)), ("canary.approved", t(1900))]
    );
    let approved = c.events.iter().find(|e| e.name == "canary.approved");
    assert_eq!(
        approved.and_then(|e| e.attributes.get(attr::FLAGGER_CANARY_GATE_WAIT)),
        Some(&crate::trace::AttrValue::Int(1800))
    );
}

/// A gate nobody ever answers ends at the promotion's own deadline, as a canary timeout.
#[test]
fn a_gate_never_answered_times_out_with_the_promotion() {
    let mut r = Run::new();
    canary_promotion(&mut r);
    r.feed(
        100,
        EventBody::Canary(canary("Waiting", CondStatus::Unknown, 0, 100)),
    )
    .finish();
    assert_canary_timeout(&r);
    let c = r.span("P-1", "traffic.canary");
    assert!(c.end > t(3000), "held past the analysis budget: {}", c.end);
}
