//! Re-lists while the agent runs: a watch that lost its place lists every object again, kinds
//! in any order, each object in its last state; verdicts wait for the whole list.

use super::fixtures::*;

/// `podinfo` rolls out; the watches go down before it ends and come back long after with a
/// re-list: the Deployment, done, comes before the Deployment controller's Event about the
/// rollout. Judged at the Deployment, the rollout would miss the Event; paused for the re-list,
/// nothing is judged (however late it is) until the list is in, and the Event is on the span.
#[test]
fn a_relist_is_judged_once_it_is_all_in() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(
        0,
        EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA2}"), -100)),
    )
    .feed(0, EventBody::Deployment(deploy("podinfo", 3)))
    .feed(1, EventBody::Promotion(report("P-gap", SHA)))
    .feed(5, EventBody::Source(git(SHA, 5)))
    .feed(6, EventBody::Reconciler(ks_progressing("apps", &rev, 6)))
    .feed(7, EventBody::Deployment(rolling("podinfo", 4, 7)))
    .feed(8, EventBody::Reconciler(ks_ready("apps", &rev, 8)));
    // Down from here; back at 300 with a re-list.
    r.out.extend(r.engine.pause(true));
    r.feed(300, EventBody::Deployment(rolled("podinfo", 4, 30)));
    let out = r.engine.tick(t(5000));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Story(_))),
        "nothing is judged while the re-list is in progress"
    );
    r.out.extend(out);
    let scaled = KubeEventObs {
        involved_kind: "Deployment".into(),
        involved_name: "podinfo".into(),
        reason: "ScalingReplicaSet".into(),
        warning: false,
        component: "deployment-controller".into(),
        ..pod_event(
            "podinfo",
            "ScalingReplicaSet",
            "Scaled down replica set podinfo-old from 1 to 0",
            25,
        )
    };
    r.feed(300, EventBody::KubeEvent(scaled));
    r.out.extend(r.engine.pause(false));
    r.finish();
    assert_eq!(r.stories().len(), 1);
    assert_eq!(r.story("P-gap").outcome, Outcome::Succeeded);
    let rollout = r.span("P-gap", "rollout");
    assert_eq!(rollout.end, t(30));
    assert!(
        rollout
            .events
            .iter()
            .any(|e| format!("{e:?}").contains("Scaled down replica set podinfo-old")),
        "the Event the re-list brought is on the rollout: {:?}",
        rollout.events
    );
}
