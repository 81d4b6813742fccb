//! What the engine keeps, and what it forgets.

use super::fixtures::*;

#[test]
fn memory_keeps_only_what_can_still_land_on_a_span() {
    let mut r = Run::new();
    let mut idle = deploy("idle", 3);
    idle.manager = None;
    r.feed(1200, EventBody::Deployment(idle));
    // An old event about an idle workload, and an old ReplicaSet: nothing can use them.
    r.feed(
        1200,
        EventBody::KubeEvent(pod_event("idle-abc-x1", "Pulled", "old news", 0)),
    );
    r.feed(
        1200,
        EventBody::ReplicaSet(crate::model::ReplicaSetObs {
            object: ObjectRef::new(Kind::ReplicaSet, "apps", "idle-abc"),
            uid: "rs-old".into(),
            deployment: Some("idle".into()),
            created: Some(t(0)),
            revision: Some("3".into()),
            images: vec!["ghcr.io/acme/idle:1.0.0".into()],
            ready: 0,
        }),
    );
    assert_eq!(
        r.engine.size().buffered_events,
        0,
        "old events of idle objects are not kept"
    );
    assert_eq!(
        r.engine.size().replicasets,
        0,
        "old ReplicaSets are not kept"
    );
    // A workload with a rollout in progress keeps its events, old ones included.
    let mut busy = rolling("busy", 5, 1200);
    busy.manager = None;
    r.feed(1200, EventBody::Deployment(deploy("busy", 4)));
    r.feed(1201, EventBody::Deployment(busy));
    r.feed(
        1202,
        EventBody::KubeEvent(pod_event(
            "busy-new-x1",
            "Failed",
            "Error: ErrImagePull",
            1190,
        )),
    );
    assert_eq!(r.engine.size().objects_with_events, 1);
    // Once nothing waits on it, a pruning pass forgets it.
    let mut done = rolled("busy", 5, 1210);
    done.manager = None;
    r.feed(1210, EventBody::Deployment(done)).finish();
    r.out
        .extend(r.engine.tick(t(1210) + SignedDuration::from_hours(2)));
    assert_eq!(r.engine.size().objects_with_events, 0);
}

/// A deleted object (a DELETED watch event, or missing from a re-list) is forgotten.
#[test]
fn deleted_objects_are_forgotten() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(1, EventBody::Source(git(SHA, 1)))
        .feed(1, EventBody::Reconciler(ks_ready("apps", &rev, 1)))
        .feed(1, EventBody::Deployment(deploy("web", 3)))
        .feed(2, EventBody::Deployment(rolling("api", 4, 2)));
    let before = r.engine.size();
    assert_eq!(
        (before.sources, before.reconcilers, before.deployments),
        (1, 1, 2)
    );
    assert_eq!(before.unclaimed_rollouts, 1);
    for o in [
        ObjectRef::new(Kind::GitRepository, "flux-system", "app"),
        ObjectRef::new(Kind::Kustomization, "flux-system", "apps"),
        ObjectRef::new(Kind::Deployment, "apps", "web"),
        ObjectRef::new(Kind::Deployment, "apps", "api"),
    ] {
        r.feed(3, EventBody::Deleted(o));
    }
    let after = r.engine.size();
    assert_eq!(
        (
            after.sources,
            after.reconcilers,
            after.deployments,
            after.unclaimed_rollouts,
            after.timers
        ),
        (0, 0, 0, 0, 0)
    );
    // Nothing fires later for what is gone.
    r.finish();
    assert!(r.stories().is_empty());
}

/// Observations from the ends of time (a broken clock, a hostile recording) never panic the
/// engine: time arithmetic saturates.
#[test]
fn times_at_the_ends_of_the_range_do_not_panic() {
    let far_past = Timestamp::MIN;
    let far_future = Timestamp::MAX;
    let mut e = Engine::new(EngineConfig {
        deadlines: Deadlines {
            promotion: SignedDuration::MAX,
            settle: SignedDuration::MAX,
            ..Deadlines::default()
        },
        ..EngineConfig::default()
    });
    let rev = format!("main@sha1:{SHA}");
    for at in [far_past, far_future] {
        let mut rep = report("P-end", SHA);
        rep.time = Some(at);
        let mut d = rolling("web", 7, 0);
        d.progress_deadline = SignedDuration::MAX;
        for body in [
            EventBody::Promotion(rep),
            EventBody::Source(git(SHA, 0)),
            EventBody::Reconciler(ks_ready("apps", &rev, 0)),
            EventBody::Deployment(d),
        ] {
            e.apply(DeliveryEvent { at, body });
        }
        e.tick(at);
    }
    e.finish();
}

/// A re-list that leaves objects out: they were deleted while the watch was down.
#[test]
fn a_relist_forgets_what_it_did_not_list_within_its_scope() {
    use crate::model::{object_key_hash, RelistObs};
    let mut r = Run::new();
    let mut other_ns = deploy("web", 3);
    other_ns.object = ObjectRef::new(Kind::Deployment, "other", "web");
    r.feed(1, EventBody::Deployment(deploy("web", 3)))
        .feed(1, EventBody::Deployment(deploy("api", 3)))
        .feed(1, EventBody::Deployment(other_ns));
    // The watch of namespace `apps` re-lists and finds only `web`.
    r.feed(
        2,
        EventBody::Relisted(RelistObs {
            kind: Kind::Deployment,
            namespace: Some("apps".into()),
            present: [object_key_hash("apps", "web")].into_iter().collect(),
        }),
    );
    assert_eq!(
        r.engine.size().deployments,
        2,
        "api is gone; other/web is out of scope"
    );
    // A re-list of another kind forgets no Deployment.
    r.feed(
        3,
        EventBody::Relisted(RelistObs {
            kind: Kind::Kustomization,
            namespace: None,
            present: Default::default(),
        }),
    );
    assert_eq!(r.engine.size().deployments, 2);
}

#[test]
fn a_relist_of_replicasets_forgets_the_ones_it_did_not_list() {
    use crate::model::{object_key_hash, RelistObs, ReplicaSetObs};
    let rs = |name: &str| ReplicaSetObs {
        object: ObjectRef::new(Kind::ReplicaSet, "apps", name),
        uid: format!("uid-{name}"),
        deployment: Some("web".into()),
        created: Some(t(0)),
        revision: Some("2".into()),
        images: vec!["ghcr.io/acme/web:1.0.0".into()],
        ready: 0,
    };
    let mut r = Run::new();
    r.feed(1, EventBody::ReplicaSet(rs("web-a")))
        .feed(1, EventBody::ReplicaSet(rs("web-b")));
    assert_eq!(r.engine.size().replicasets, 2);
    r.feed(
        2,
        EventBody::Relisted(RelistObs {
            kind: Kind::ReplicaSet,
            namespace: None,
            present: [object_key_hash("apps", "web-b")].into_iter().collect(),
        }),
    );
    assert_eq!(r.engine.size().replicasets, 1);
}

/// A re-list of Events repeats old ones after the de-duplication memory has aged out: they must
/// not bring back state for an object that was deleted.
#[test]
fn old_events_repeated_after_a_deletion_bring_nothing_back() {
    let rev = format!("main@sha1:{SHA}");
    let finished = KubeEventObs {
        uid: "ev-apps-finished".into(),
        involved_kind: "Kustomization".into(),
        involved_namespace: "flux-system".into(),
        involved_name: "apps".into(),
        reason: "ReconciliationSucceeded".into(),
        message: "Reconciliation finished in 1.2s, next run in 10m0s".into(),
        warning: false,
        time: Some(t(1)),
        first_time: Some(t(1)),
        count: 1,
        component: "kustomize-controller".into(),
        revision: Some(rev.clone()),
        promotion_id: None,
    };
    let mut r = Run::new();
    r.feed(1, EventBody::Reconciler(ks_ready("apps", &rev, 1)))
        .feed(1, EventBody::KubeEvent(finished.clone()))
        .feed(
            2,
            EventBody::Deleted(ObjectRef::new(Kind::Kustomization, "flux-system", "apps")),
        );
    assert_eq!(r.engine.size().reconcilers, 0);
    // Hours later (the de-duplication memory has aged out) the Event watch re-lists and
    // delivers the same Event again.
    r.out.extend(r.engine.tick(t(7100)));
    r.feed(7200, EventBody::KubeEvent(finished));
    assert_eq!(r.engine.size().reconcilers, 0);
}

/// What an initial list holds is kept past the release only if it can still land on a span: a
/// Pod Event older than the idle retention about a workload whose rollout had ended before the
/// list is dropped, a recent one is kept, and a ReplicaSet older than any open promotion is not
/// kept even while held.
#[test]
fn an_initial_list_keeps_only_what_can_still_land() {
    let rs = |name: &str, created: i64| crate::model::ReplicaSetObs {
        object: ObjectRef::new(Kind::ReplicaSet, "apps", name),
        uid: format!("uid-{name}"),
        deployment: Some("idle".into()),
        created: Some(t(created)),
        revision: Some("3".into()),
        images: vec!["ghcr.io/acme/idle:1.0.0".into()],
        ready: 0,
    };
    let mut r = Run::new();
    r.out.extend(r.engine.hold(true));
    let mut idle = rolled("idle", 3, 100);
    idle.manager = None;
    r.feed(9000, EventBody::Deployment(idle))
        // Older than the promotion deadline: no open promotion can have claimed its rollout.
        .feed(9000, EventBody::ReplicaSet(rs("idle-old", 100)))
        .feed(9000, EventBody::ReplicaSet(rs("idle-new", 8000)))
        .feed(
            9000,
            EventBody::KubeEvent(pod_event("idle-new-x1", "Pulled", "long ago", 7000)),
        )
        .feed(
            9000,
            EventBody::KubeEvent(pod_event("idle-new-x2", "Started", "just now", 8950)),
        );
    assert_eq!(
        r.engine.size().replicasets,
        1,
        "the old ReplicaSet is not kept"
    );
    assert_eq!(
        r.engine.size().buffered_events,
        0,
        "held Events wait packed for the release"
    );
    r.out.extend(r.engine.hold(false));
    assert_eq!(
        r.engine.size().buffered_events,
        1,
        "only the recent Event is buffered at the release"
    );
}
