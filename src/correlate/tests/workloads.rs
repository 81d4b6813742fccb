//! What runs on each followed Deployment, and which promotion put it there.

use super::fixtures::*;
use crate::model::{RelistObs, ReplicaSetObs};
use crate::workload::{Workload, WorkloadFilter};

fn no_link(_: crate::trace::TraceId, _: Timestamp, _: Timestamp) -> Option<String> {
    None
}

fn all(r: &Run) -> Vec<Workload> {
    r.engine.workloads(&WorkloadFilter::default(), &no_link)
}

fn rs(name: &str, image: &str, revision: &str, ready: i64, created: i64) -> EventBody {
    EventBody::ReplicaSet(ReplicaSetObs {
        object: ObjectRef::new(Kind::ReplicaSet, "apps", name),
        uid: format!("uid-{name}"),
        deployment: Some(name.rsplit_once('-').expect("a hash").0.to_string()),
        created: Some(t(created)),
        revision: Some(revision.into()),
        images: vec![image.into(), "envoy:1.31".into()],
        ready,
    })
}

/// P-1's ReplicaSet runs 2 replicas; `old`, of the template before, `old_ready`.
fn p1_running(r: &mut Run, old: &str, old_ready: i64) {
    r.feed(
        30,
        rs("podinfo-new", "ghcr.io/acme/podinfo:6.6.2", "4", 2, 7),
    )
    .feed(
        30,
        rs(old, "ghcr.io/acme/podinfo:6.6.1", "3", old_ready, -900),
    );
}

/// A promotion of `sha` reported at `at`, its source stored and its Kustomization reconciling
/// from `at + 2`; the revision.
fn reconciling(r: &mut Run, id: &str, sha: &str, at: i64) -> String {
    let rev = format!("main@sha1:{sha}");
    r.feed(at, EventBody::Promotion(report(id, sha)))
        .feed(at + 1, EventBody::Source(git(sha, at + 1)))
        .feed(
            at + 2,
            EventBody::Reconciler(ks_progressing("apps", &rev, at + 2)),
        );
    rev
}

/// A recording through the engine, then asked what runs.
fn replayed(name: &str) -> (Engine, Vec<Output>) {
    let text = crate::replay::EXAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a bundled recording")
        .1;
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    for ev in crate::sources::recording::decode_all(text).events {
        out.extend(engine.apply(ev));
    }
    out.extend(engine.finish());
    (engine, out)
}

#[test]
fn a_completed_rollout_names_its_promotion_and_what_now_runs() {
    let (engine, _) = replayed("git-success.jsonl");
    let ws = engine.workloads(&WorkloadFilter::default(), &|id, _, _| {
        Some(format!("https://tempo.example/trace/{id}"))
    });
    assert_eq!(ws.len(), 1, "{ws:#?}");
    let w = &ws[0];
    assert_eq!((w.namespace.as_str(), w.name.as_str()), ("web", "frontend"));
    assert_eq!(
        w.managed_by.as_deref(),
        Some("Kustomization/flux-system/web")
    );
    // The old ReplicaSet was scaled to zero: only the new one runs.
    assert_eq!(w.running.len(), 1, "{w:#?}");
    assert_eq!(w.running[0].name, "frontend-tk6qtjs4ts");
    assert_eq!(w.running[0].ready, 2);
    assert!(w.running[0].images[0].starts_with("ghcr.io/acme/frontend:"));
    let d = w.delivered_by.as_ref().expect("delivered");
    assert_eq!(d.id, "P-2026-11-26-42");
    assert_eq!(d.outcome, "succeeded");
    assert_eq!(d.environment.as_deref(), Some("staging"));
    assert_eq!(
        d.trace_link.as_deref(),
        Some(format!("https://tempo.example/trace/{}", d.trace_id).as_str())
    );
    assert!(d.time > "2026-11-26T10:00:34Z".parse().expect("a time"));
    assert_eq!(w.newer, None);
    assert!(engine.names_promotion("P-2026-11-26-42"));
}

#[test]
fn a_failed_rollout_is_the_newer_promotion_and_the_old_images_still_run() {
    let (engine, out) = replayed("oci-rollout-imagepull.jsonl");
    let ws = engine.workloads(&WorkloadFilter::default(), &no_link);
    assert_eq!(ws.len(), 1, "{ws:#?}");
    let w = &ws[0];
    assert_eq!(
        (w.namespace.as_str(), w.name.as_str()),
        ("payments", "ledger")
    );
    let images: Vec<&str> = w.running.iter().map(|r| r.images[0].as_str()).collect();
    assert_eq!(images, ["ghcr.io/acme/ledger:2.4.0"], "{w:#?}");
    assert_eq!(w.running[0].ready, 2);
    assert_eq!(w.delivered_by, None, "delivered before the agent watched");
    let story = out
        .iter()
        .find_map(|o| match o {
            Output::Story(s) => Some(s),
            _ => None,
        })
        .expect("a story");
    let n = w.newer.as_ref().expect("the failed promotion");
    assert_eq!(n.id, story.promotion_id);
    assert_eq!(n.outcome, story.outcome.as_str());
    assert_ne!(n.outcome, "succeeded");
    assert_eq!(n.diverged_at.as_deref(), Some("rollout"));
    assert_eq!(n.reason.as_deref(), Some("ImagePullBackOff"));
    assert!(engine.names_promotion(&story.promotion_id));
}

/// The fixture's rollout, of a new ReplicaSet `podinfo-next`.
fn next(mut d: DeploymentObs) -> DeploymentObs {
    d.conditions[1].message = d.conditions[1]
        .message
        .replace("podinfo-new", "podinfo-next");
    d
}

#[test]
fn a_promotion_in_flight_is_the_newer_one_until_its_verdict() {
    let mut r = Run::new();
    git_promotion(&mut r);
    p1_running(&mut r, "podinfo-abc", 0);
    r.out.extend(r.engine.tick(t(200)));
    let w = &all(&r)[0];
    assert_eq!(w.delivered_by.as_ref().map(|d| d.id.as_str()), Some("P-1"));
    assert_eq!(
        w.delivered_by.as_ref().expect("delivered").actor.as_deref(),
        Some("alice")
    );
    assert_eq!(w.newer, None);
    // The next promotion reconciles the Kustomization that applies it: in flight.
    let rev2 = reconciling(&mut r, "P-2", SHA2, 300);
    r.feed(303, EventBody::Deployment(next(rolling("podinfo", 5, 303))))
        .feed(304, EventBody::Reconciler(ks_ready("apps", &rev2, 304)))
        .feed(
            304,
            rs("podinfo-next", "ghcr.io/acme/podinfo:6.7.0", "5", 1, 303),
        );
    let w = &all(&r)[0];
    let n = w.newer.as_ref().expect("in flight");
    assert_eq!((n.id.as_str(), n.outcome.as_str()), ("P-2", "in_progress"));
    assert_eq!(w.delivered_by.as_ref().map(|d| d.id.as_str()), Some("P-1"));
    // Mid-rollout both templates run, the newest first.
    let running: Vec<(&str, i64)> = w
        .running
        .iter()
        .map(|rs| (rs.images[0].as_str(), rs.ready))
        .collect();
    assert_eq!(
        running,
        [
            ("ghcr.io/acme/podinfo:6.7.0", 1),
            ("ghcr.io/acme/podinfo:6.6.2", 2)
        ]
    );
    // It gets stuck: what ran keeps running, P-2 is the newer failure.
    r.feed(320, EventBody::Deployment(next(stuck("podinfo", 5, 320))));
    r.finish();
    let w = &all(&r)[0];
    assert_eq!(w.delivered_by.as_ref().map(|d| d.id.as_str()), Some("P-1"));
    let n = w.newer.as_ref().expect("failed");
    assert_eq!(n.id, "P-2");
    assert_eq!(n.diverged_at.as_deref(), Some("rollout"));
    assert!(r.engine.names_promotion("P-1") && r.engine.names_promotion("P-2"));
}

#[test]
fn a_failure_before_any_rollout_is_named_on_the_workloads_its_reconciler_applies() {
    let mut r = Run::new();
    git_promotion(&mut r);
    r.finish();
    let rev2 = reconciling(&mut r, "P-2", SHA2, 300);
    r.feed(
        303,
        EventBody::Reconciler(ks_failed(
            "apps",
            &rev2,
            "BuildFailed",
            "kustomize build failed",
            303,
        )),
    );
    r.finish();
    assert_eq!(r.story("P-2").outcome, Outcome::Failed);
    let w = &all(&r)[0];
    assert_eq!(w.delivered_by.as_ref().map(|d| d.id.as_str()), Some("P-1"));
    let n = w.newer.as_ref().expect("the failed promotion");
    assert_eq!(n.id, "P-2");
    assert_eq!(n.diverged_at.as_deref(), Some("reconcile"));
    // A later successful rollout replaces both.
    git_again(&mut r);
    let w = &all(&r)[0];
    assert_eq!(w.delivered_by.as_ref().map(|d| d.id.as_str()), Some("P-3"));
    assert_eq!(w.newer, None);
    assert!(
        !r.engine.names_promotion("P-1"),
        "nothing names it any more"
    );
    assert!(!r.engine.names_promotion("P-2"));
}

fn git_again(r: &mut Run) {
    let sha3 = "9b2c3d4e5f60718293a4b5c6d7e8f90123456789";
    let rev3 = reconciling(r, "P-3", sha3, 1000);
    r.feed(1003, EventBody::Deployment(rolling("podinfo", 6, 1003)))
        .feed(1004, EventBody::Reconciler(ks_ready("apps", &rev3, 1004)))
        .feed(1030, EventBody::Deployment(rolled("podinfo", 6, 1030)));
    r.finish();
}

#[test]
fn filters_select_by_environment_namespace_and_app() {
    let mut r = Run::new();
    git_promotion(&mut r);
    r.feed(0, EventBody::Deployment(deploy("idle", 2)));
    r.finish();
    let names = |f: WorkloadFilter| -> Vec<String> {
        r.engine
            .workloads(&f, &no_link)
            .into_iter()
            .map(|w| w.name)
            .collect()
    };
    assert_eq!(names(WorkloadFilter::default()), ["idle", "podinfo"]);
    let env = |e: &str| WorkloadFilter {
        environment: Some(e.into()),
        ..WorkloadFilter::default()
    };
    assert_eq!(names(env("prod")), ["podinfo"]);
    assert!(names(env("staging")).is_empty());
    let app = WorkloadFilter {
        app: Some("podinfo".into()),
        namespace: Some("apps".into()),
        ..WorkloadFilter::default()
    };
    assert_eq!(names(app), ["podinfo"]);
    let ns = WorkloadFilter {
        namespace: Some("web".into()),
        ..WorkloadFilter::default()
    };
    assert!(names(ns).is_empty());
    assert!(r.engine.workload("apps", "idle", &no_link).is_some());
    assert!(r.engine.workload("apps", "gone", &no_link).is_none());
}

#[test]
fn deleted_and_unlisted_objects_are_forgotten() {
    let mut r = Run::new();
    git_promotion(&mut r);
    p1_running(&mut r, "podinfo-old", 1);
    r.finish();
    assert_eq!(r.engine.size().running_replicasets, 2);
    // A re-list that no longer holds the old ReplicaSet.
    r.feed(
        40,
        EventBody::Relisted(RelistObs {
            kind: Kind::ReplicaSet,
            namespace: Some("apps".into()),
            present: [crate::model::object_key_hash("apps", "podinfo-new")]
                .into_iter()
                .collect(),
        }),
    );
    assert_eq!(r.engine.size().running_replicasets, 1);
    r.feed(
        41,
        EventBody::Deleted(ObjectRef::new(Kind::ReplicaSet, "apps", "podinfo-new")),
    );
    assert_eq!(r.engine.size().running_replicasets, 0);
    assert_eq!(r.engine.size().workloads, 1, "who delivered it stays");
    r.feed(
        42,
        EventBody::Deleted(ObjectRef::new(Kind::Deployment, "apps", "podinfo")),
    );
    assert_eq!(r.engine.size().workloads, 0);
    assert!(all(&r).is_empty());
    assert!(!r.engine.names_promotion("P-1"));
}
