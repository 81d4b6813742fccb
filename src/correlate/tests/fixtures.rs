//! Builders for engine tests: each case states only the observations that matter.

pub(super) use jiff::{SignedDuration, Timestamp};

pub(super) use crate::correlate::*;
pub(super) use crate::model::{
    ArtifactRef, Condition, DeploymentObs, FluxEventObs, KubeEventObs, Marks, PipelineRef,
    ProbeResult, ProbeSpec, ProbeVerdict, ReconcilerObs, SourceObs,
};
pub(super) use crate::model::{
    CondStatus, DeliveryEvent, EventBody, Kind, ObjectRef, PromotionReport,
};
pub(super) use crate::story::{Outcome, Story};
pub(super) use crate::trace::SpanStatus;
pub(super) use crate::trace::{attr, AttrValue, SpanRecord, Stage};

pub(super) const SHA: &str = "450796ddb2ab6724ee1cc32a4be56da032d1cca0";
pub(super) const SHA2: &str = "67e2c98a60dc92283531412a9e604dd4bae005a9";
pub(super) const DIG: &str = "3b6cdcc7adcc9a84d3214ee1c029543789d90b5ae69debe9efa3f66e982875de";

pub(super) fn t(secs: i64) -> Timestamp {
    "2026-11-26T10:00:00Z".parse::<Timestamp>().expect("ts") + SignedDuration::from_secs(secs)
}

pub(super) fn cond(
    type_: &str,
    status: CondStatus,
    reason: &str,
    message: &str,
    at: i64,
) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        last_transition: Some(t(at)),
        last_update: Some(t(at)),
        observed_generation: None,
    }
}

pub(super) fn report(id: &str, rev: &str) -> PromotionReport {
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

pub(super) fn oci_report(id: &str, digest: &str) -> PromotionReport {
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

pub(super) fn source(kind: Kind, name: &str, rev: &str, at: i64) -> SourceObs {
    SourceObs {
        object: ObjectRef::new(kind, "flux-system", name),
        uid: format!("uid-{name}"),
        marks: Marks::default(),
        url: Some(match kind {
            Kind::OCIRepository => "oci://ghcr.io/acme/manifests".into(),
            _ => "https://user:secret@github.com/acme/app".into(),
        }),
        ref_tag: Some("prod".into()),
        ref_branch: None,
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
        suspended: false,
        source_ref: None,
        by_revision: false,
    }
}

pub(super) fn git(rev_sha: &str, at: i64) -> SourceObs {
    source(
        Kind::GitRepository,
        "app",
        &format!("main@sha1:{rev_sha}"),
        at,
    )
}

pub(in crate::correlate) fn ks(name: &str) -> ReconcilerObs {
    ReconcilerObs {
        object: ObjectRef::new(Kind::Kustomization, "flux-system", name),
        uid: format!("uid-ks-{name}"),
        marks: Marks::default(),
        probe: None,
        source_ref: Some(ObjectRef::new(Kind::GitRepository, "flux-system", "app")),
        path: None,
        target_namespace: None,
        timeout: None,
        retry_interval: None,
        interval: None,
        suspended: false,
        last_attempted: None,
        last_applied: None,
        last_attempted_digest: None,
        requested_at: None,
        last_handled: None,
        conditions: Vec::new(),
        history: Vec::new(),
        generation: None,
        applied_by: None,
    }
}

pub(super) fn ks_progressing(name: &str, rev: &str, at: i64) -> ReconcilerObs {
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

pub(super) fn ks_ready(name: &str, rev: &str, at: i64) -> ReconcilerObs {
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

pub(super) fn ks_failed(name: &str, rev: &str, reason: &str, msg: &str, at: i64) -> ReconcilerObs {
    ReconcilerObs {
        last_attempted: Some(rev.into()),
        last_applied: Some("main@sha1:0000000000000000000000000000000000000000".into()),
        conditions: vec![cond("Ready", CondStatus::False, reason, msg, at)],
        ..ks(name)
    }
}

pub(super) fn deploy(name: &str, generation: i64) -> DeploymentObs {
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
        unavailable: 0,
        progress_deadline: SignedDuration::from_secs(600),
        manager: Some(ObjectRef::new(Kind::Kustomization, "flux-system", "apps")),
        probe: None,
        images: vec!["ghcr.io/acme/podinfo:6.6.1".into()],
        // Each generation of these builders is a new pod template (a rollout).
        template: generation as u64,
        paused: false,
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

pub(super) fn rolling(name: &str, generation: i64, at: i64) -> DeploymentObs {
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

pub(super) fn rolled(name: &str, generation: i64, at: i64) -> DeploymentObs {
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

pub(super) fn stuck(name: &str, generation: i64, at: i64) -> DeploymentObs {
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

/// DaemonSet `name` applied by Kustomization `apps`, scheduled on 3 nodes: `updated` of its Pods
/// run generation `generation`'s template, `available` are available.
pub(super) fn daemonset(
    name: &str,
    generation: i64,
    updated: i64,
    available: i64,
) -> DeploymentObs {
    DeploymentObs {
        object: ObjectRef::new(Kind::DaemonSet, "apps", name),
        uid: format!("uid-ds-{name}"),
        replicas: 3,
        updated,
        ready: available,
        available,
        unavailable: 3 - available,
        progress_deadline: SignedDuration::ZERO,
        conditions: Vec::new(),
        ..deploy(name, generation)
    }
}

pub(super) fn pod_event(pod: &str, reason: &str, message: &str, at: i64) -> KubeEventObs {
    KubeEventObs {
        uid: format!("ev-{pod}-{reason}-{at}"),
        involved_kind: "Pod".into(),
        involved_namespace: "apps".into(),
        involved_name: pod.into(),
        reason: reason.into(),
        message: message.into(),
        warning: true,
        time: Some(t(at)),
        first_time: Some(t(at)),
        count: 1,
        component: "kubelet".into(),
        revision: None,
        promotion_id: None,
    }
}

pub(super) struct Run {
    pub(super) engine: Engine,
    pub(super) out: Vec<Output>,
}

impl Run {
    pub(super) fn new() -> Self {
        Run {
            engine: Engine::new(EngineConfig {
                cluster: "test".into(),
                ..EngineConfig::default()
            }),
            out: Vec::new(),
        }
    }

    pub(super) fn with(cfg: EngineConfig) -> Self {
        Run {
            engine: Engine::new(cfg),
            out: Vec::new(),
        }
    }

    pub(super) fn feed(&mut self, at: i64, body: EventBody) -> &mut Self {
        let o = self.engine.apply(DeliveryEvent { at: t(at), body });
        self.out.extend(o);
        self
    }

    pub(super) fn finish(&mut self) -> &mut Self {
        let o = self.engine.finish();
        self.out.extend(o);
        self
    }

    pub(super) fn stories(&self) -> Vec<&Story> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Story(s) => Some(s.as_ref()),
                _ => None,
            })
            .collect()
    }

    pub(super) fn story(&self, id: &str) -> &Story {
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

    pub(super) fn spans(&self) -> Vec<&SpanRecord> {
        self.out
            .iter()
            .filter_map(|o| match o {
                Output::Span(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    pub(super) fn spans_of(&self, id: &str) -> Vec<&SpanRecord> {
        self.spans()
            .into_iter()
            .filter(|s| s.attributes.get_str(attr::DELIVERY_PROMOTION_ID) == Some(id))
            .collect()
    }

    pub(super) fn span(&self, id: &str, name: &str) -> &SpanRecord {
        self.spans_of(id)
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span for {id}"))
    }
}

/// The happy Git path: report, source, reconcile, rollout.
pub(super) fn git_promotion(r: &mut Run) {
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
