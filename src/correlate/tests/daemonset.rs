//! DaemonSets: rolled out like Deployments, judged by their counts within the engine's rollout
//! deadline, their Pods' kubelet Events as causes, and Flagger canaries that target one.

use super::fixtures::*;
use crate::model::CanaryObs;

/// Report, source and reconcile of `apps` at `SHA`; DaemonSet `node-agent` was rolled out at
/// generation 3 and starts rolling out generation 4 at 7 (one of three Pods updated).
fn daemonset_promotion(r: &mut Run) {
    let rev = format!("main@sha1:{SHA}");
    r.feed(
        0,
        EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA2}"), -100)),
    )
    .feed(0, EventBody::Deployment(daemonset("node-agent", 3, 3, 3)))
    .feed(1, EventBody::Promotion(report("P-1", SHA)))
    .feed(5, EventBody::Source(git(SHA, 5)))
    .feed(6, EventBody::Reconciler(ks_progressing("apps", &rev, 6)))
    .feed(7, EventBody::Deployment(daemonset("node-agent", 4, 1, 2)))
    .feed(8, EventBody::Reconciler(ks_ready("apps", &rev, 8)));
}

#[test]
fn a_daemonset_rollout_joins_its_kustomizations_promotion_and_completes_on_its_counts() {
    let mut r = Run::new();
    daemonset_promotion(&mut r);
    r.feed(20, EventBody::Deployment(daemonset("node-agent", 4, 3, 2)));
    r.engine.tick(t(200));
    assert!(
        r.stories().is_empty(),
        "not complete while a Pod is unavailable"
    );
    r.feed(30, EventBody::Deployment(daemonset("node-agent", 4, 3, 3)))
        .finish();
    let s = r.story("P-1");
    assert_eq!(s.outcome, Outcome::Succeeded);
    let rollout = r.span("P-1", "rollout");
    assert_eq!((rollout.start, rollout.end), (t(7), t(30)));
    assert_eq!(
        rollout.attributes.get_str(attr::K8S_DAEMONSET_NAME),
        Some("node-agent")
    );
    assert_eq!(
        rollout.attributes.get_str(attr::K8S_DAEMONSET_UID),
        Some("uid-ds-node-agent")
    );
    assert_eq!(rollout.attributes.get_str(attr::K8S_DEPLOYMENT_NAME), None);
    assert_eq!(rollout.status, SpanStatus::Ok);
}

#[test]
fn a_daemonset_whose_pods_crash_loop_diverges_at_rollout_with_the_kubelets_cause() {
    let mut r = Run::new();
    daemonset_promotion(&mut r);
    r.feed(
        40,
        EventBody::KubeEvent(pod_event(
            "node-agent-x7k2p",
            "BackOff",
            "Back-off restarting failed container agent in pod node-agent-x7k2p_apps(u)",
            40,
        )),
    )
    .finish();
    let s = r.story("P-1");
    assert_eq!(s.outcome, Outcome::TimedOut);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(
        (d.stage, d.reason.as_str(), d.cause.as_deref()),
        (Stage::Rollout, "RolloutTimeout", Some("CrashLoopBackOff"))
    );
    assert!(
        d.message.contains("DaemonSet/apps/node-agent"),
        "{}",
        d.message
    );
    // No progress deadline: the engine's rollout deadline (10m) and the grace (1m).
    assert_eq!(r.span("P-1", "rollout").end, t(7 + 600 + 60));
}

#[test]
fn a_daemonset_and_a_deployment_of_the_same_name_are_two_workloads() {
    let mut r = Run::new();
    r.feed(0, EventBody::Deployment(deploy("node-agent", 3)));
    daemonset_promotion(&mut r);
    r.feed(30, EventBody::Deployment(daemonset("node-agent", 4, 3, 3)))
        .finish();
    assert_eq!(r.story("P-1").outcome, Outcome::Succeeded);
    let rollouts = rollouts(&r, "P-1");
    assert_eq!(
        rollouts.len(),
        1,
        "the unchanged Deployment rolled nothing out"
    );
    assert_eq!(
        rollouts[0].attributes.get_str(attr::K8S_DAEMONSET_NAME),
        Some("node-agent")
    );
}

/// Canary `apps/node-agent` targeting DaemonSet `node-agent` (iterations, no weights).
fn canary(phase: &str, status: CondStatus, at: i64) -> CanaryObs {
    CanaryObs {
        object: ObjectRef::new(Kind::Canary, "apps", "node-agent"),
        target: ObjectRef::new(Kind::DaemonSet, "apps", "node-agent"),
        schedule: Vec::new(),
        ..super::canary::canary(phase, status, 0, at)
    }
}

/// The rollout spans of `id`.
fn rollouts<'a>(r: &'a Run, id: &str) -> Vec<&'a SpanRecord> {
    r.spans_of(id)
        .into_iter()
        .filter(|s| s.name == "rollout")
        .collect()
}

#[test]
fn a_canary_targeting_a_daemonset_follows_its_analysis_and_primary() {
    let mut r = Run::new();
    r.feed(
        0,
        EventBody::Canary(canary("Succeeded", CondStatus::True, -3600)),
    )
    .feed(
        0,
        EventBody::Deployment(daemonset("node-agent-primary", 2, 3, 3)),
    );
    daemonset_promotion(&mut r);
    r.feed(
        60,
        EventBody::Canary(canary("Progressing", CondStatus::Unknown, 60)),
    );
    r.engine.tick(t(200));
    assert!(r.stories().is_empty(), "decided before the analysis ran");
    // Flagger copies the template to the primary DaemonSet (no Flux labels), then succeeds.
    let mut primary = daemonset("node-agent-primary", 3, 1, 2);
    primary.manager = None;
    r.feed(200, EventBody::Deployment(primary.clone()));
    primary.updated = 3;
    primary.available = 3;
    r.feed(230, EventBody::Deployment(primary))
        .feed(
            240,
            EventBody::Canary(canary("Succeeded", CondStatus::True, 240)),
        )
        .finish();
    let s = r.story("P-1");
    assert_eq!(s.outcome, Outcome::Succeeded);
    let c = r.span("P-1", "traffic.canary");
    assert_eq!(c.end, t(240));
    assert_eq!(
        c.attributes.get_str(attr::K8S_DAEMONSET_NAME),
        Some("node-agent")
    );
    assert_eq!(
        c.attributes.get_str(attr::FLAGGER_CANARY_PRIMARY),
        Some("node-agent-primary")
    );
    let rollouts = rollouts(&r, "P-1");
    assert_eq!(rollouts.len(), 1, "the target's rollout is the analysis");
    assert_eq!(
        rollouts[0].attributes.get_str(attr::K8S_DAEMONSET_NAME),
        Some("node-agent-primary")
    );
}
