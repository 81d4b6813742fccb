//! Why a rollout fails, beyond Events: its Pods' statuses (listed only while it fails), its
//! Deployment's `ReplicaFailure`, a paused Deployment; and the messages that name its new
//! ReplicaSet before the first progress.

use super::fixtures::*;
use crate::model::{ContainerProblem, PodListRequest, PodObs};

fn pod_lists(r: &Run) -> Vec<&PodListRequest> {
    r.out
        .iter()
        .filter_map(|o| match o {
            Output::ListPods(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn tick(r: &mut Run, at: i64) {
    let o = r.engine.tick(t(at));
    r.out.extend(o);
}

/// A promotion of `podinfo` whose rollout (deadline 120 s) starts at 5.
fn rolling_out(r: &mut Run, id: &str, d: DeploymentObs) {
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Deployment(deploy("podinfo", 3)))
        .feed(1, EventBody::Promotion(report(id, SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(5, EventBody::Deployment(d));
}

/// Flux's health check gives up on the rollout.
fn health_check_failed(r: &mut Run, at: i64) {
    let rev = format!("main@sha1:{SHA}");
    let msg = "health check failed after 2m0s: [Deployment/apps/podinfo status: 'Failed']";
    r.feed(
        at,
        EventBody::Reconciler(ks_failed("apps", &rev, "HealthCheckFailed", msg, at)),
    );
}

fn slow(mut d: DeploymentObs) -> DeploymentObs {
    d.progress_deadline = SignedDuration::from_secs(120);
    d
}

fn oom_killed(at: i64) -> PodObs {
    let problem = |reason: &str, message: &str, when: Option<i64>| ContainerProblem {
        container: "podinfo".into(),
        reason: reason.into(),
        message: message.into(),
        exit_code: Some(137),
        at: when.map(t),
    };
    PodObs {
        object: ObjectRef::new(Kind::Pod, "apps", "podinfo-new-x7k2p"),
        replicaset: Some("podinfo-new".into()),
        problems: vec![
            problem("OOMKilled", "", Some(at - 2)),
            problem(
                "CrashLoopBackOff",
                "back-off 20s restarting failed container=podinfo pod=podinfo-new-x7k2p_apps(u)",
                None,
            ),
        ],
    }
}

#[test]
fn a_stuck_rollouts_pods_are_listed_halfway_and_oom_killed_is_named_the_cause() {
    let mut r = Run::new();
    rolling_out(&mut r, "P-oom", slow(rolling("podinfo", 4, 5)));
    tick(&mut r, 64);
    assert!(pod_lists(&r).is_empty(), "not before half the deadline");
    tick(&mut r, 65);
    let asked: Vec<PodListRequest> = pod_lists(&r).into_iter().cloned().collect();
    assert_eq!(
        asked,
        [PodListRequest {
            deployment: ObjectRef::new(Kind::Deployment, "apps", "podinfo"),
            replicaset: "podinfo-new".into(),
            selector: "pod-template-hash=new".into(),
        }]
    );
    r.feed(66, EventBody::Pod(oom_killed(66)));
    // Listed again once it fails.
    r.feed(125, EventBody::Deployment(slow(stuck("podinfo", 4, 125))));
    assert_eq!(pod_lists(&r).len(), 2);
    health_check_failed(&mut r, 126);
    r.finish();
    let d = r
        .story("P-oom")
        .divergence
        .clone()
        .expect("diverged at the rollout");
    assert_eq!(d.stage, Stage::Rollout);
    assert_eq!(d.reason, "ProgressDeadlineExceeded");
    assert_eq!(d.cause.as_deref(), Some("OOMKilled"), "{:?}", d.evidence);
    assert!(
        d.evidence
            .iter()
            .any(|e| e
                == "Pod/podinfo-new-x7k2p OOMKilled: container podinfo OOMKilled (exit code 137)"),
        "{:?}",
        d.evidence
    );
    let rollout = r.span("P-oom", "rollout");
    assert_eq!(
        rollout.attributes.get_str(attr::DELIVERY_DIVERGENCE_CAUSE),
        Some("OOMKilled")
    );
    let oom = rollout
        .events
        .iter()
        .find(|e| e.name == "OOMKilled")
        .expect("the OOMKilled status as a span event");
    assert_eq!(oom.time, t(64), "when the container was killed");
    assert_eq!(
        oom.attributes.get_str(attr::K8S_POD_NAME),
        Some("podinfo-new-x7k2p")
    );
    let root = r.span("P-oom", "promotion");
    assert_eq!(
        root.attributes.get_str(attr::DELIVERY_DIVERGENCE_CAUSE),
        Some("OOMKilled")
    );
    assert!(
        matches!(&root.status, SpanStatus::Error { description } if description.ends_with("(cause: OOMKilled)")),
        "{:?}",
        root.status
    );
}

#[test]
fn a_rollout_that_completes_lists_no_pods() {
    let mut r = Run::new();
    rolling_out(&mut r, "P-ok", slow(rolling("podinfo", 4, 5)));
    r.feed(30, EventBody::Deployment(slow(rolled("podinfo", 4, 30))))
        .feed(
            31,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 31)),
        );
    tick(&mut r, 65);
    tick(&mut r, 600);
    r.finish();
    assert_eq!(r.story("P-ok").outcome, Outcome::Succeeded);
    assert!(pod_lists(&r).is_empty(), "{:?}", pod_lists(&r));
}

#[test]
fn pods_a_quota_refuses_name_failed_create_the_cause() {
    let mut r = Run::new();
    let refused = "pods \"podinfo-new-abcde\" is forbidden: exceeded quota: pods, \
                   requested: pods=1, used: pods=2, limited: pods=2";
    let refusing = |mut d: DeploymentObs| {
        let c = cond(
            "ReplicaFailure",
            CondStatus::True,
            "FailedCreate",
            refused,
            5,
        );
        d.conditions.push(c);
        slow(d)
    };
    rolling_out(&mut r, "P-quota", refusing(rolling("podinfo", 4, 5)));
    let failed = refusing(stuck("podinfo", 4, 125));
    r.feed(125, EventBody::Deployment(failed));
    health_check_failed(&mut r, 126);
    r.finish();
    let d = r.story("P-quota").divergence.clone().expect("diverged");
    assert_eq!(d.stage, Stage::Rollout);
    assert_eq!(d.cause.as_deref(), Some("FailedCreate"));
    assert!(
        d.evidence
            .iter()
            .any(|e| e.starts_with("Deployment/podinfo FailedCreate: ")
                && e.contains("exceeded quota")),
        "{:?}",
        d.evidence
    );
    let events = &r.span("P-quota", "rollout").events;
    assert_eq!(
        events.iter().filter(|e| e.name == "FailedCreate").count(),
        1,
        "one warning however often the condition is seen: {events:?}"
    );
}

#[test]
fn a_paused_deployment_diverges_at_once_and_pausing_alone_is_no_rollout() {
    let mut r = Run::new();
    let mut d = rolling("podinfo", 4, 5);
    d.paused = true;
    d.conditions[1] = cond(
        "Progressing",
        CondStatus::Unknown,
        "DeploymentPaused",
        "Deployment is paused",
        5,
    );
    rolling_out(&mut r, "P-paused", d.clone());
    r.feed(
        6,
        EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 6)),
    );
    r.finish();
    let s = r.story("P-paused");
    assert_eq!(s.outcome, Outcome::Failed);
    let div = s.divergence.as_ref().expect("diverged");
    assert_eq!(
        (div.stage, div.reason.as_str()),
        (Stage::Rollout, "DeploymentPaused")
    );
    assert_eq!(
        r.span("P-paused", "rollout").end,
        t(5),
        "at once, not at the deadline"
    );

    // `kubectl rollout pause`: a new generation, the same pod template.
    let mut r = Run::new();
    let mut before = deploy("cache", 3);
    before.manager = None;
    let mut paused = before.clone();
    paused.generation = 4;
    paused.observed_generation = 4;
    paused.template = before.template;
    paused.paused = true;
    r.feed(0, EventBody::Deployment(before))
        .feed(10, EventBody::Deployment(paused))
        .finish();
    assert!(r.stories().is_empty(), "pausing rolls nothing out");
}

#[test]
fn created_and_found_new_replica_set_messages_name_the_rollouts_replicaset() {
    for message in [
        "Created new replica set \"podinfo-7d9f8b8c5\"",
        "Found new replica set \"podinfo-7d9f8b8c5\"",
    ] {
        let mut r = Run::new();
        let mut d = rolling("podinfo", 4, 5);
        d.conditions[1] = cond(
            "Progressing",
            CondStatus::True,
            if message.starts_with("Created") {
                "NewReplicaSetCreated"
            } else {
                "FoundNewReplicaSet"
            },
            message,
            5,
        );
        rolling_out(&mut r, "P-rs", slow(d));
        // Before the first progress: the Pods listed are this ReplicaSet's.
        tick(&mut r, 65);
        assert_eq!(
            pod_lists(&r).first().map(|l| l.replicaset.as_str()),
            Some("podinfo-7d9f8b8c5"),
            "{message}"
        );
    }
}
