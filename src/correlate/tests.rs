//! Engine rules, fed event by event. Builders keep each case to the observations that matter.

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::model::{
    ArtifactRef, Condition, DeploymentObs, FluxEventObs, KubeEventObs, Marks, PipelineRef,
    ProbeResult, ProbeSpec, ProbeVerdict, ReconcilerObs, SourceObs,
};
use crate::trace::SpanStatus;

const SHA: &str = "450796ddb2ab6724ee1cc32a4be56da032d1cca0";
const SHA2: &str = "67e2c98a60dc92283531412a9e604dd4bae005a9";
const DIG: &str = "3b6cdcc7adcc9a84d3214ee1c029543789d90b5ae69debe9efa3f66e982875de";

fn t(secs: i64) -> Timestamp {
    "2026-11-26T10:00:00Z".parse::<Timestamp>().expect("ts") + SignedDuration::from_secs(secs)
}

fn cond(type_: &str, status: CondStatus, reason: &str, message: &str, at: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        last_transition: Some(t(at)),
        last_update: Some(t(at)),
    }
}

fn report(id: &str, rev: &str) -> PromotionReport {
    PromotionReport {
        id: id.into(),
        environment: "prod".into(),
        revision: Some(rev.into()),
        app: Some("podinfo".into()),
        actor: Some("alice".into()),
        pipeline: Some(PipelineRef {
            name: Some("release".into()),
            run_id: Some("42".into()),
            url: Some("https://ci.example/runs/42".into()),
        }),
        ..Default::default()
    }
}

fn oci_report(id: &str, digest: &str) -> PromotionReport {
    PromotionReport {
        id: id.into(),
        environment: "prod".into(),
        artifact: Some(ArtifactRef {
            repository: Some("ghcr.io/acme/manifests".into()),
            tag: Some("prod".into()),
            digest: Some(format!("sha256:{digest}")),
        }),
        app: Some("podinfo".into()),
        ..Default::default()
    }
}

fn source(kind: Kind, name: &str, rev: &str, at: i64) -> SourceObs {
    SourceObs {
        object: ObjectRef::new(kind, "flux-system", name),
        uid: format!("uid-{name}"),
        marks: Marks::default(),
        url: Some(match kind {
            Kind::OCIRepository => "oci://ghcr.io/acme/manifests".into(),
            _ => "https://user:secret@github.com/acme/app".into(),
        }),
        ref_tag: Some("prod".into()),
        revision: Some(rev.into()),
        artifact_updated: Some(t(at)),
        origin_revision: None,
        artifact_created: None,
        artifact_promotion_id: None,
        requested_at: None,
        last_handled: None,
        conditions: vec![cond(
            "Ready",
            CondStatus::True,
            "Succeeded",
            &format!("stored artifact for revision '{rev}'"),
            at,
        )],
    }
}

fn git(rev_sha: &str, at: i64) -> SourceObs {
    source(
        Kind::GitRepository,
        "app",
        &format!("main@sha1:{rev_sha}"),
        at,
    )
}

fn ks(name: &str) -> ReconcilerObs {
    ReconcilerObs {
        object: ObjectRef::new(Kind::Kustomization, "flux-system", name),
        uid: format!("uid-ks-{name}"),
        marks: Marks::default(),
        probe: None,
        source_ref: Some(ObjectRef::new(Kind::GitRepository, "flux-system", "app")),
        timeout: None,
        last_attempted: None,
        last_applied: None,
        last_attempted_digest: None,
        requested_at: None,
        last_handled: None,
        conditions: Vec::new(),
        history: Vec::new(),
    }
}

fn ks_progressing(name: &str, rev: &str, at: i64) -> ReconcilerObs {
    ReconcilerObs {
        last_attempted: Some(rev.into()),
        conditions: vec![cond(
            "Ready",
            CondStatus::Unknown,
            "Progressing",
            "Reconciliation in progress",
            at,
        )],
        ..ks(name)
    }
}

fn ks_ready(name: &str, rev: &str, at: i64) -> ReconcilerObs {
    ReconcilerObs {
        last_attempted: Some(rev.into()),
        last_applied: Some(rev.into()),
        conditions: vec![cond(
            "Ready",
            CondStatus::True,
            "ReconciliationSucceeded",
            &format!("Applied revision: {rev}"),
            at,
        )],
        ..ks(name)
    }
}

fn ks_failed(name: &str, rev: &str, reason: &str, msg: &str, at: i64) -> ReconcilerObs {
    ReconcilerObs {
        last_attempted: Some(rev.into()),
        last_applied: Some("main@sha1:0000000000000000000000000000000000000000".into()),
        conditions: vec![cond("Ready", CondStatus::False, reason, msg, at)],
        ..ks(name)
    }
}

fn deploy(name: &str, generation: i64) -> DeploymentObs {
    DeploymentObs {
        object: ObjectRef::new(Kind::Deployment, "apps", name),
        uid: format!("uid-dep-{name}"),
        marks: Marks::default(),
        generation,
        observed_generation: generation,
        replicas: 2,
        updated: 2,
        ready: 2,
        available: 2,
        progress_deadline: SignedDuration::from_secs(600),
        manager: Some(ObjectRef::new(Kind::Kustomization, "flux-system", "apps")),
        probe: None,
        images: vec!["ghcr.io/acme/podinfo:6.6.1".into()],
        // Each generation of these builders is a new pod template (a rollout).
        template: generation as u64,
        conditions: vec![
            cond(
                "Available",
                CondStatus::True,
                "MinimumReplicasAvailable",
                "ok",
                0,
            ),
            cond(
                "Progressing",
                CondStatus::True,
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{name}-abc\" has successfully progressed."),
                0,
            ),
        ],
    }
}

fn rolling(name: &str, generation: i64, at: i64) -> DeploymentObs {
    let mut d = deploy(name, generation);
    d.observed_generation = generation;
    d.updated = 1;
    d.conditions[1] = cond(
        "Progressing",
        CondStatus::True,
        "ReplicaSetUpdated",
        &format!("ReplicaSet \"{name}-new\" is progressing."),
        at,
    );
    d
}

fn rolled(name: &str, generation: i64, at: i64) -> DeploymentObs {
    let mut d = deploy(name, generation);
    d.conditions[1] = cond(
        "Progressing",
        CondStatus::True,
        "NewReplicaSetAvailable",
        &format!("ReplicaSet \"{name}-new\" has successfully progressed."),
        at,
    );
    d
}

fn stuck(name: &str, generation: i64, at: i64) -> DeploymentObs {
    let mut d = rolling(name, generation, at);
    d.conditions[1] = cond(
        "Progressing",
        CondStatus::False,
        "ProgressDeadlineExceeded",
        &format!("ReplicaSet \"{name}-new\" has timed out progressing."),
        at,
    );
    d
}

fn pod_event(pod: &str, reason: &str, message: &str, at: i64) -> KubeEventObs {
    KubeEventObs {
        uid: format!("ev-{pod}-{reason}-{at}"),
        involved_kind: "Pod".into(),
        involved_namespace: "apps".into(),
        involved_name: pod.into(),
        reason: reason.into(),
        message: message.into(),
        warning: true,
        time: Some(t(at)),
        count: 1,
        component: "kubelet".into(),
        revision: None,
        promotion_id: None,
    }
}

struct Run {
    engine: Engine,
    out: Vec<Output>,
}

impl Run {
    fn new() -> Self {
        Run {
            engine: Engine::new(EngineConfig {
                cluster: "test".into(),
                ..EngineConfig::default()
            }),
            out: Vec::new(),
        }
    }

    fn with(cfg: EngineConfig) -> Self {
        Run {
            engine: Engine::new(cfg),
            out: Vec::new(),
        }
    }

    fn feed(&mut self, at: i64, body: EventBody) -> &mut Self {
        let o = self.engine.apply(DeliveryEvent { at: t(at), body });
        self.out.extend(o);
        self
    }

    fn finish(&mut self) -> &mut Self {
        let o = self.engine.finish();
        self.out.extend(o);
        self
    }

    fn stories(&self) -> Vec<&Story> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Story(s) => Some(s.as_ref()),
                _ => None,
            })
            .collect()
    }

    fn story(&self, id: &str) -> &Story {
        self.stories()
            .into_iter()
            .find(|s| s.promotion_id == id)
            .unwrap_or_else(|| {
                panic!(
                    "no story for {id}: {:?}",
                    self.stories()
                        .iter()
                        .map(|s| &s.promotion_id)
                        .collect::<Vec<_>>()
                )
            })
    }

    fn spans(&self) -> Vec<&SpanRecord> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Span(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn spans_of(&self, id: &str) -> Vec<&SpanRecord> {
        self.spans()
            .into_iter()
            .filter(|s| s.attributes.get_str(attr::DELIVERY_PROMOTION_ID) == Some(id))
            .collect()
    }

    fn span(&self, id: &str, name: &str) -> &SpanRecord {
        self.spans_of(id)
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span for {id}"))
    }
}

/// The happy Git path: report, source, reconcile, rollout.
fn git_promotion(r: &mut Run) {
    let rev = format!("main@sha1:{SHA}");
    r.feed(
        0,
        EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA2}"), -100)),
    )
    .feed(0, EventBody::Deployment(deploy("podinfo", 3)))
    .feed(1, EventBody::Promotion(report("P-1", SHA)))
    .feed(5, EventBody::Source(git(SHA, 5)))
    .feed(6, EventBody::Reconciler(ks_progressing("apps", &rev, 6)))
    .feed(7, EventBody::Deployment(rolling("podinfo", 4, 7)))
    .feed(8, EventBody::Reconciler(ks_ready("apps", &rev, 8)))
    .feed(30, EventBody::Deployment(rolled("podinfo", 4, 30)));
}

#[test]
fn report_and_git_revision_join_source_reconcile_and_rollout() {
    let mut r = Run::new();
    git_promotion(&mut r);
    r.finish();
    let s = r.story("P-1");
    assert_eq!(s.outcome, Outcome::Succeeded);
    assert!(s.divergence.is_none());
    let names: Vec<&str> = r.spans_of("P-1").iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["source.fetch", "reconcile", "apply", "rollout", "promotion"]
    );
    let root = r.span("P-1", "promotion");
    let reconcile = r.span("P-1", "reconcile");
    assert_eq!(
        r.span("P-1", "source.fetch").parent_span_id,
        Some(root.span_id)
    );
    assert_eq!(reconcile.parent_span_id, Some(root.span_id));
    assert_eq!(
        r.span("P-1", "apply").parent_span_id,
        Some(reconcile.span_id)
    );
    assert_eq!(
        r.span("P-1", "rollout").parent_span_id,
        Some(reconcile.span_id)
    );
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.start, t(1));
    assert_eq!(root.end, t(30));
    assert_eq!(root.status, SpanStatus::Ok);
    assert_eq!(
        root.attributes.get_str(attr::VCS_REF_HEAD_REVISION),
        Some(SHA)
    );
    assert_eq!(
        root.attributes.get_str(attr::DELIVERY_TRACEABILITY),
        Some("reported")
    );
    assert_eq!(root.trace_id, crate::trace::trace_id_for("P-1"));
    let rollout = r.span("P-1", "rollout");
    assert_eq!(rollout.start, t(7));
    assert_eq!(
        rollout.attributes.get_str(attr::K8S_REPLICASET_NAME),
        Some("podinfo-new")
    );
    assert_eq!(
        rollout.attributes.get_str(attr::CONTAINER_IMAGE_NAME),
        Some("ghcr.io/acme/podinfo")
    );
    // Credentials in the repository URL never reach a span.
    let url = r
        .span("P-1", "source.fetch")
        .attributes
        .get_str(attr::VCS_REPOSITORY_URL_FULL);
    assert_eq!(url, Some("https://github.com/acme/app"));
}

#[test]
fn the_same_observation_twice_and_a_full_relist_add_nothing() {
    let mut once = Run::new();
    git_promotion(&mut once);
    once.finish();

    let mut twice = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let events = vec![
        (
            0,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA2}"), -100)),
        ),
        (0, EventBody::Deployment(deploy("podinfo", 3))),
        (1, EventBody::Promotion(report("P-1", SHA))),
        (5, EventBody::Source(git(SHA, 5))),
        (6, EventBody::Reconciler(ks_progressing("apps", &rev, 6))),
        (7, EventBody::Deployment(rolling("podinfo", 4, 7))),
        (8, EventBody::Reconciler(ks_ready("apps", &rev, 8))),
        (30, EventBody::Deployment(rolled("podinfo", 4, 30))),
    ];
    for (at, e) in &events {
        twice.feed(*at, e.clone());
        twice.feed(*at, e.clone());
    }
    // A watch restart re-lists every object in its current state, during and after.
    twice.feed(31, EventBody::Promotion(report("P-1", SHA)));
    twice.feed(31, EventBody::Source(git(SHA, 5)));
    twice.feed(31, EventBody::Reconciler(ks_ready("apps", &rev, 8)));
    twice.feed(31, EventBody::Deployment(rolled("podinfo", 4, 30)));
    twice.finish();
    twice.feed(4000, EventBody::Promotion(report("P-1", SHA)));
    twice.feed(4000, EventBody::Source(git(SHA, 5)));
    twice.feed(4000, EventBody::Reconciler(ks_ready("apps", &rev, 8)));
    twice.feed(4000, EventBody::Deployment(rolled("podinfo", 4, 30)));
    twice.finish();
    assert_eq!(twice.stories().len(), 1);
    assert_eq!(
        once.spans(),
        twice.spans(),
        "same spans, same ids, no copies"
    );
}

#[test]
fn oci_artifact_annotation_names_the_promotion_and_resolves_the_floating_tag() {
    let mut r = Run::new();
    let rev = format!("prod@sha256:{DIG}");
    let mut oci = source(Kind::OCIRepository, "manifests", &rev, 4);
    oci.artifact_promotion_id = Some("rel-7".into());
    oci.origin_revision = Some(format!("main@sha1:{SHA}"));
    let mut k = ks_ready("apps", &rev, 9);
    k.source_ref = Some(ObjectRef::new(
        Kind::OCIRepository,
        "flux-system",
        "manifests",
    ));
    r.feed(4, EventBody::Source(oci))
        .feed(9, EventBody::Reconciler(k))
        .finish();
    let s = r.story("rel-7");
    assert_eq!(s.traceability, "annotated");
    assert_eq!(s.outcome, Outcome::Succeeded);
    let digest = format!("sha256:{DIG}");
    for name in ["promotion", "source.fetch", "reconcile"] {
        assert_eq!(
            r.span("rel-7", name)
                .attributes
                .get_str(attr::OCI_MANIFEST_DIGEST),
            Some(digest.as_str()),
            "{name}"
        );
    }
    assert_eq!(
        r.span("rel-7", "source.fetch")
            .attributes
            .get_str(attr::DELIVERY_ARTIFACT_TAG),
        Some("prod")
    );
    assert_eq!(
        r.span("rel-7", "promotion")
            .attributes
            .get_str(attr::VCS_REF_HEAD_REVISION),
        Some(SHA)
    );
}

#[test]
fn oci_report_by_digest_joins_tag_at_digest_and_bare_digest_revisions() {
    for rev in [format!("prod@sha256:{DIG}"), format!("sha256:{DIG}")] {
        let mut r = Run::new();
        r.feed(1, EventBody::Promotion(oci_report("rel-8", DIG)))
            .feed(
                3,
                EventBody::Source(source(Kind::OCIRepository, "manifests", &rev, 3)),
            )
            .feed(4, EventBody::Reconciler(ks_ready("apps", &rev, 4)))
            .finish();
        assert_eq!(r.story("rel-8").outcome, Outcome::Succeeded, "{rev}");
        assert_eq!(
            r.spans_of("rel-8").len(),
            4,
            "{rev}: source, reconcile, apply, root"
        );
    }
}

#[test]
fn annotation_on_a_flux_object_names_the_promotion() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let mut k = ks_ready("apps", &rev, 9);
    k.marks.promotion_id = Some("P-ks".into());
    r.feed(9, EventBody::Reconciler(k)).finish();
    assert_eq!(r.story("P-ks").traceability, "annotated");
    assert_eq!(r.span("P-ks", "reconcile").status, SpanStatus::Ok);
}

#[test]
fn annotation_on_a_pod_template_names_the_promotion_of_a_rollout() {
    let mut r = Run::new();
    r.feed(0, EventBody::Deployment(deploy("web", 1)));
    let mut d = rolling("web", 2, 5);
    d.manager = None;
    d.marks.promotion_id = Some("P-pod".into());
    let mut done = rolled("web", 2, 20);
    done.manager = None;
    done.marks.promotion_id = Some("P-pod".into());
    r.feed(5, EventBody::Deployment(d))
        .feed(20, EventBody::Deployment(done))
        .finish();
    let s = r.story("P-pod");
    assert_eq!(s.traceability, "annotated");
    assert_eq!(s.outcome, Outcome::Succeeded);
    let root = r.span("P-pod", "promotion");
    assert_eq!(
        r.span("P-pod", "rollout").parent_span_id,
        Some(root.span_id)
    );
    assert!(r.stories().iter().all(|s| s.traceability != "missing"));
}

#[test]
fn flux_event_metadata_names_the_promotion_with_or_without_prefix() {
    // The sources module strips the prefix; both arrive as `promotion_id`.
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(
        6,
        EventBody::FluxEvent(FluxEventObs {
            object: ObjectRef::new(Kind::Kustomization, "flux-system", "apps"),
            error: false,
            time: t(6),
            reason: "Progressing".into(),
            message: "Deployment/apps/podinfo configured".into(),
            revision: Some(rev.clone()),
            promotion_id: Some("P-ev".into()),
            controller: "kustomize-controller".into(),
        }),
    )
    .feed(7, EventBody::Reconciler(ks_progressing("apps", &rev, 6)))
    .feed(9, EventBody::Reconciler(ks_ready("apps", &rev, 9)))
    .finish();
    let apply = r.span("P-ev", "apply");
    assert_eq!(
        apply.attributes.get(attr::DELIVERY_APPLY_CHANGED),
        Some(&AttrValue::StrArray(vec![
            "Deployment/apps/podinfo configured".into()
        ]))
    );
    assert!(r
        .span("P-ev", "reconcile")
        .events
        .iter()
        .any(|e| e.name == "Progressing"));
}

#[test]
fn helmrelease_joins_by_chart_digest_suffix_and_upgrade_failure_diverges_at_apply() {
    let mut r = Run::new();
    let rev = format!("6.7.0@sha256:{DIG}");
    let chart = format!("6.7.0+{}", &DIG[..12]);
    let hr = |conds: Vec<Condition>| ReconcilerObs {
        object: ObjectRef::new(Kind::HelmRelease, "podinfo", "podinfo"),
        uid: "uid-hr".into(),
        last_attempted: Some(chart.clone()),
        last_attempted_digest: Some(format!("sha256:{DIG}")),
        conditions: conds,
        ..ks("x")
    };
    let msg = "Helm upgrade failed for release podinfo/podinfo with chart podinfo@6.7.0: cannot patch \"podinfo\"";
    r.feed(1, EventBody::Promotion(oci_report("rel-9", DIG)))
        .feed(
            3,
            EventBody::Source(source(Kind::OCIRepository, "chart", &rev, 3)),
        )
        .feed(
            5,
            EventBody::Reconciler(hr(vec![cond(
                "Ready",
                CondStatus::Unknown,
                "Progressing",
                "Running 'upgrade' action",
                5,
            )])),
        )
        .feed(
            7,
            EventBody::Reconciler(hr(vec![
                cond("Ready", CondStatus::False, "UpgradeFailed", msg, 7),
                cond("Released", CondStatus::False, "UpgradeFailed", msg, 7),
            ])),
        )
        .finish();
    let s = r.story("rel-9");
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(d.stage, Stage::Apply);
    assert_eq!(d.reason, "UpgradeFailed");
    assert_eq!(r.span("rel-9", "reconcile").service, "helm-controller");
    assert!(r.span("rel-9", "apply").is_error());
    assert_eq!(
        r.span("rel-9", "promotion")
            .attributes
            .get_str(attr::DELIVERY_DIVERGENCE_STAGE),
        Some("apply")
    );
}

#[test]
fn build_failure_diverges_at_reconcile_without_an_apply_span() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(1, EventBody::Promotion(report("P-b", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(
            5,
            EventBody::Reconciler(ks_failed(
                "apps",
                &rev,
                "BuildFailed",
                "kustomize build failed: x",
                5,
            )),
        )
        .finish();
    let s = r.story("P-b");
    assert_eq!(s.outcome, Outcome::Failed);
    assert_eq!(
        s.divergence.as_ref().map(|d| d.stage),
        Some(Stage::Reconcile)
    );
    assert!(r.spans_of("P-b").iter().all(|s| s.name != "apply"));
    assert_eq!(
        r.span("P-b", "reconcile")
            .attributes
            .get_str(attr::ERROR_TYPE),
        Some("BuildFailed")
    );
}

#[test]
fn health_check_failure_diverges_at_rollout_with_the_pod_event_as_cause() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Deployment(deploy("podinfo", 3)))
        .feed(1, EventBody::Promotion(report("P-h", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(5, EventBody::Deployment(rolling("podinfo", 4, 5)))
        .feed(
            8,
            EventBody::KubeEvent(pod_event(
                "podinfo-new-x7k2p",
                "Failed",
                "Error: ErrImagePull",
                8,
            )),
        )
        .feed(
            9,
            EventBody::KubeEvent(pod_event(
                "podinfo-new-x7k2p",
                "Failed",
                "Error: ImagePullBackOff",
                9,
            )),
        )
        .feed(
            100,
            EventBody::Reconciler(ks_failed(
                "apps",
                &rev,
                "HealthCheckFailed",
                "health check failed after 1m35s: [Deployment/apps/podinfo status: 'Failed']",
                100,
            )),
        )
        .feed(120, EventBody::Deployment(stuck("podinfo", 4, 120)))
        .finish();
    let s = r.story("P-h");
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(d.stage, Stage::Rollout);
    assert_eq!(d.reason, "ProgressDeadlineExceeded");
    assert_eq!(d.cause.as_deref(), Some("ImagePullBackOff"));
    assert!(
        d.evidence.iter().any(|e| e.contains("HealthCheckFailed")),
        "{:?}",
        d.evidence
    );
    assert!(
        d.evidence.iter().any(|e| e.contains("ImagePullBackOff")),
        "{:?}",
        d.evidence
    );
    // The reconcile span still carries its error; the apply itself succeeded.
    assert!(r.span("P-h", "reconcile").is_error());
    assert_eq!(r.span("P-h", "apply").status, SpanStatus::Ok);
    let rollout = r.span("P-h", "rollout");
    assert!(rollout.is_error());
    assert!(rollout
        .events
        .iter()
        .any(|e| e.attributes.get_str(attr::K8S_POD_NAME) == Some("podinfo-new-x7k2p")));
}

#[test]
fn every_deployment_the_reconcile_changed_gets_a_rollout() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Deployment(deploy("api", 1)))
        .feed(0, EventBody::Deployment(deploy("worker", 5)))
        .feed(0, EventBody::Deployment(deploy("unrelated", 2)))
        .feed(1, EventBody::Promotion(report("P-m", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(5, EventBody::Deployment(rolling("api", 2, 5)))
        .feed(5, EventBody::Deployment(rolling("worker", 6, 5)))
        .feed(6, EventBody::Reconciler(ks_ready("apps", &rev, 6)))
        .feed(20, EventBody::Deployment(rolled("api", 2, 20)))
        .feed(25, EventBody::Deployment(rolled("worker", 6, 25)))
        .finish();
    let rollouts: Vec<&str> = r
        .spans_of("P-m")
        .iter()
        .filter(|s| s.name == "rollout")
        .filter_map(|s| s.attributes.get_str(attr::K8S_DEPLOYMENT_NAME))
        .collect();
    assert_eq!(rollouts, ["api", "worker"]);
    assert_eq!(r.span("P-m", "promotion").end, t(25));
}

#[test]
fn receiver_trigger_is_a_span_from_request_to_handling() {
    let mut r = Run::new();
    let value = "2026-11-26 10:00:05.123456789 +0000 UTC m=+3605.24";
    let mut requested = git(SHA2, -50);
    requested.requested_at = Some(value.into());
    let mut handled = git(SHA, 7);
    handled.requested_at = Some(value.into());
    handled.last_handled = Some(value.into());
    r.feed(0, EventBody::Source(git(SHA2, -50)))
        .feed(1, EventBody::Promotion(report("P-t", SHA)))
        .feed(5, EventBody::Source(requested))
        .feed(7, EventBody::Source(handled))
        .feed(
            9,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 9)),
        )
        .finish();
    let trigger = r.span("P-t", "trigger");
    assert_eq!((trigger.start, trigger.end), (t(5), t(7)));
    assert_eq!(trigger.service, "notification-controller");
    assert_eq!(
        trigger
            .attributes
            .get_str(attr::DELIVERY_TRIGGER_REQUESTED_AT),
        Some(value)
    );
    assert_eq!(
        r.span("P-t", "source.fetch").start,
        t(7),
        "fetch starts when the request is handled"
    );
}

#[test]
fn unhandled_trigger_times_out() {
    let mut r = Run::new();
    let mut requested = git(SHA2, -50);
    requested.requested_at = Some("2026-11-26T10:00:05Z".into());
    r.feed(0, EventBody::Source(git(SHA2, -50)))
        .feed(1, EventBody::Promotion(report("P-tt", SHA)))
        .feed(5, EventBody::Source(requested))
        .feed(6, EventBody::Source(git(SHA, 6)))
        .feed(
            8,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 8)),
        )
        .finish();
    let s = r.story("P-tt");
    assert_eq!(s.outcome, Outcome::TimedOut);
    assert_eq!(s.divergence.as_ref().map(|d| d.stage), Some(Stage::Trigger));
    assert_eq!(
        r.span("P-tt", "trigger").end,
        t(5) + SignedDuration::from_mins(5)
    );
}

#[test]
fn a_revision_never_seen_times_out_at_source_after_the_configured_deadline() {
    let mut cfg = EngineConfig::default();
    cfg.deadlines.source = SignedDuration::from_mins(2);
    let mut r = Run::with(cfg);
    r.feed(1, EventBody::Promotion(report("P-s", SHA)));
    r.out.extend(r.engine.tick(t(100)));
    assert!(r.stories().is_empty(), "not before the deadline");
    r.out.extend(r.engine.tick(t(121)));
    assert!(
        r.stories().is_empty(),
        "the verdict waits for the settle period"
    );
    r.out.extend(r.engine.tick(t(151)));
    let s = r.story("P-s");
    assert_eq!(s.outcome, Outcome::TimedOut);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(
        (d.stage, d.reason.as_str()),
        (Stage::Source, "RevisionNotFound")
    );
    assert_eq!(r.span("P-s", "source.fetch").end, t(121));
}

#[test]
fn failing_oci_source_is_the_promotions_source_failure() {
    let mut r = Run::new();
    let mut oci = source(
        Kind::OCIRepository,
        "manifests",
        &format!("prod@sha256:{}", "1".repeat(64)),
        -100,
    );
    oci.conditions = vec![cond(
        "Ready",
        CondStatus::False,
        "OCIArtifactPullFailed",
        "failed to pull artifact: unauthorized",
        3,
    )];
    r.feed(1, EventBody::Promotion(oci_report("rel-f", DIG)))
        .feed(3, EventBody::Source(oci))
        .finish();
    let d = r.story("rel-f").divergence.clone().expect("diverged");
    assert_eq!(
        (d.stage, d.reason.as_str()),
        (Stage::Source, "OCIArtifactPullFailed")
    );
    assert_eq!(r.story("rel-f").outcome, Outcome::Failed);
}

#[test]
fn reconcile_deadline_comes_from_spec_timeout() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let mut k = ks_progressing("apps", &rev, 4);
    k.timeout = Some(SignedDuration::from_mins(2));
    r.feed(1, EventBody::Promotion(report("P-r", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(k))
        .finish();
    let s = r.story("P-r");
    assert_eq!(s.outcome, Outcome::TimedOut);
    assert_eq!(
        s.divergence.as_ref().map(|d| d.stage),
        Some(Stage::Reconcile)
    );
    assert_eq!(
        r.span("P-r", "reconcile").end,
        t(4) + SignedDuration::from_mins(2)
    );
}

#[test]
fn no_reconcile_after_the_source_times_out_at_reconcile() {
    let mut r = Run::new();
    r.feed(1, EventBody::Promotion(report("P-n", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .finish();
    let s = r.story("P-n");
    assert_eq!(
        s.divergence.as_ref().map(|d| (d.stage, d.reason.as_str())),
        Some((Stage::Reconcile, "ReconcileNotStarted"))
    );
    assert_eq!(
        r.span("P-n", "reconcile").end,
        t(3) + SignedDuration::from_mins(10)
    );
}

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
fn newer_promotion_for_the_same_target_supersedes_and_links() {
    let mut r = Run::new();
    r.feed(1, EventBody::Promotion(report("P-old", SHA2)))
        .feed(3, EventBody::Promotion(report("P-new", SHA)))
        .feed(5, EventBody::Source(git(SHA, 5)))
        .feed(
            6,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 6)),
        )
        .finish();
    let old = r.story("P-old");
    assert_eq!(old.outcome, Outcome::Superseded);
    assert_eq!(old.superseded_by.as_deref(), Some("P-new"));
    let root = r.span("P-old", "promotion");
    let new_root = r.span("P-new", "promotion");
    assert_eq!(root.end, t(3));
    assert_eq!(root.links.len(), 1);
    assert_eq!(
        (root.links[0].trace_id, root.links[0].span_id),
        (new_root.trace_id, new_root.span_id)
    );
    assert_eq!(r.story("P-new").outcome, Outcome::Succeeded);
}

#[test]
fn a_revision_already_applied_is_no_change() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Source(git(SHA, -300)))
        .feed(0, EventBody::Reconciler(ks_ready("apps", &rev, -200)))
        .feed(0, EventBody::Deployment(deploy("podinfo", 3)))
        .feed(5, EventBody::Promotion(report("P-same", SHA)))
        .finish();
    let s = r.story("P-same");
    assert_eq!(s.outcome, Outcome::NoChange);
    assert!(s.divergence.is_none());
    assert_eq!(
        r.span("P-same", "reconcile")
            .attributes
            .get_str(attr::CICD_PIPELINE_TASK_RUN_RESULT),
        Some("skip")
    );
    assert!(r.spans_of("P-same").iter().all(|s| s.name != "rollout"));
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
    assert_eq!(s.traceability, "missing");
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
    assert_eq!(r.stories()[0].traceability, "missing");
}

#[test]
fn ci_traceparent_makes_the_root_a_child_of_the_ci_span() {
    let mut r = Run::new();
    let mut rep = report("P-ci", SHA);
    rep.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    r.feed(1, EventBody::Promotion(rep))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(
            4,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 4)),
        )
        .finish();
    let root = r.span("P-ci", "promotion");
    assert_eq!(
        root.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        root.parent_span_id.map(|p| p.to_string()).as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert!(r
        .spans_of("P-ci")
        .iter()
        .all(|s| s.trace_id == root.trace_id));
}

#[test]
fn ids_depend_on_the_cluster_name() {
    let run = |cluster: &str| {
        let mut r = Run::with(EngineConfig {
            cluster: cluster.into(),
            ..EngineConfig::default()
        });
        git_promotion(&mut r);
        r.finish();
        r.spans()
            .iter()
            .map(|s| (s.trace_id, s.span_id))
            .collect::<Vec<_>>()
    };
    let (a, b) = (run("eu1"), run("us1"));
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        "one trace per promotion"
    );
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.1 != y.1),
        "span ids differ per cluster"
    );
    assert_eq!(a, run("eu1"));
}

#[test]
fn a_report_repeated_fills_gaps_but_never_rewrites() {
    let mut r = Run::new();
    let mut first = report("P-g", SHA);
    first.actor = None;
    let mut second = report("P-g", SHA);
    second.actor = Some("bob".into());
    second.app = Some("other".into());
    r.feed(1, EventBody::Promotion(first))
        .feed(2, EventBody::Promotion(second))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(
            4,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 4)),
        )
        .finish();
    let s = r.story("P-g");
    assert_eq!(s.actor.as_deref(), Some("bob"));
    assert_eq!(s.app.as_deref(), Some("podinfo"));
    assert_eq!(
        r.spans_of("P-g")
            .iter()
            .filter(|s| s.name == "promotion")
            .count(),
        1
    );
}

#[test]
fn a_promotion_named_only_by_an_event_that_nothing_delivers_times_out_at_its_deadline() {
    let mut r = Run::new();
    r.feed(
        6,
        EventBody::FluxEvent(FluxEventObs {
            object: ObjectRef::new(Kind::Kustomization, "flux-system", "apps"),
            error: false,
            time: t(6),
            reason: "Progressing".into(),
            message: "Deployment/apps/podinfo configured".into(),
            revision: Some(format!("main@sha1:{SHA}")),
            promotion_id: Some("P-lost".into()),
            controller: "kustomize-controller".into(),
        }),
    )
    .finish();
    let s = r.story("P-lost");
    assert_eq!(s.outcome, Outcome::TimedOut);
    assert_eq!(s.divergence.as_ref().map(|d| d.stage), Some(Stage::Source));
    assert_eq!(
        r.span("P-lost", "promotion").end,
        t(6) + SignedDuration::from_mins(60)
    );
}

#[test]
fn an_open_promotion_has_a_story_in_progress() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(1, EventBody::Promotion(report("P-o", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)));
    let s = r.engine.progress("P-o").expect("open");
    assert_eq!(s.outcome, Outcome::InProgress);
    let stages: Vec<(Stage, &str)> = s.stages.iter().map(|x| (x.stage, x.outcome)).collect();
    assert_eq!(
        stages,
        [
            (Stage::Source, "succeeded"),
            (Stage::Reconcile, "open"),
            (Stage::Apply, "open")
        ]
    );
    assert!(r.engine.progress("nope").is_none());
    r.finish();
    assert!(
        r.engine.progress("P-o").is_none(),
        "finished promotions are not in progress"
    );
}

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
        }),
    );
    assert!(
        r.engine.events.is_empty(),
        "old events of idle objects are not kept"
    );
    assert!(
        r.engine.replicasets.is_empty(),
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
    assert_eq!(r.engine.events.len(), 1);
    // Once nothing waits on it, a pruning pass forgets it.
    let mut done = rolled("busy", 5, 1210);
    done.manager = None;
    r.feed(1210, EventBody::Deployment(done)).finish();
    r.out
        .extend(r.engine.tick(t(1210) + SignedDuration::from_hours(2)));
    assert!(
        r.engine.events.is_empty(),
        "{:?}",
        r.engine.events.keys().collect::<Vec<_>>()
    );
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
    assert_eq!(s.traceability, "missing");
    assert_eq!(s.outcome, Outcome::TimedOut);
}

#[test]
fn a_newer_promotion_does_not_hide_that_the_older_one_failed() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA2}");
    r.feed(1, EventBody::Promotion(report("P-old", SHA2)))
        .feed(3, EventBody::Source(git(SHA2, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(
            6,
            EventBody::Reconciler(ks_failed(
                "apps",
                &rev,
                "BuildFailed",
                "kustomize build failed",
                6,
            )),
        )
        // Reported inside P-old's settle period.
        .feed(20, EventBody::Promotion(report("P-new", SHA)))
        .finish();
    let old = r.story("P-old");
    assert_eq!(old.outcome, Outcome::Failed);
    assert_eq!(
        old.divergence.as_ref().map(|d| d.stage),
        Some(Stage::Reconcile)
    );
    assert!(old.superseded_by.is_none());
}

#[test]
fn a_revision_already_applied_claims_no_rollout_in_progress() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Source(git(SHA, -300)))
        .feed(0, EventBody::Reconciler(ks_ready("apps", &rev, -200)))
        .feed(0, EventBody::Deployment(deploy("podinfo", 3)))
        // Someone restarts the Deployment by hand...
        .feed(2, EventBody::Deployment(rolling("podinfo", 4, 2)))
        // ...while a promotion of the revision already applied arrives.
        .feed(5, EventBody::Promotion(report("P-same", SHA)))
        .feed(20, EventBody::Deployment(rolled("podinfo", 4, 20)))
        .finish();
    assert_eq!(r.story("P-same").outcome, Outcome::NoChange);
    assert!(r.spans_of("P-same").iter().all(|s| s.name != "rollout"));
    assert!(
        r.stories().iter().any(|s| s.traceability == "missing"),
        "the restart is its own trace"
    );
}

#[test]
fn an_annotation_left_by_a_promotion_long_finished_reopens_nothing() {
    // An agent that starts (or restarts) sees the OCI artifact of a promotion from yesterday.
    let mut r = Run::new();
    let rev = format!("prod@sha256:{DIG}");
    let mut oci = source(Kind::OCIRepository, "manifests", &rev, 0);
    oci.artifact_promotion_id = Some("rel-old".into());
    let mut k = ks_ready("apps", &rev, 10);
    k.marks.promotion_id = Some("rel-old".into());
    r.feed(86_400, EventBody::Source(oci))
        .feed(86_400, EventBody::Reconciler(k))
        .finish();
    assert!(
        r.stories().is_empty(),
        "{:?}",
        r.stories()
            .iter()
            .map(|s| &s.promotion_id)
            .collect::<Vec<_>>()
    );
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
    let digest = format!("sha256:{}", "ab".repeat(32));
    let mut a = Attributes::default();
    super::image_attrs(
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
    super::image_attrs(
        &mut untagged,
        &["registry.local:5000/team/api:1.4.2".into()],
    );
    assert_eq!(untagged.get(attr::CONTAINER_IMAGE_REPO_DIGESTS), None);
}
