//! Stage spans while they are being built: open, then finished once with a result.
//!
//! Every stage module builds these; `render` turns them into span records at the verdict.

use jiff::Timestamp;

use crate::model::ObjectRef;
use crate::trace::{attr, span_id_for, Attributes, SpanEventRecord, SpanId, Stage};

/// A stage's own failure, and the stage the divergence is attributed to (a Kustomization whose
/// health check failed carries the error on its reconcile span but diverges at `rollout`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
    pub diverges_at: Stage,
}

/// Where a stage stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageResult {
    Open,
    Succeeded,
    NoChange,
    Failed(Failure),
    TimedOut(Failure),
    Superseded,
}

impl StageResult {
    pub fn outcome(&self) -> &'static str {
        match self {
            StageResult::Open => "open",
            StageResult::Succeeded => "succeeded",
            StageResult::NoChange => "no_change",
            StageResult::Failed(_) => "failed",
            StageResult::TimedOut(_) => "timed_out",
            StageResult::Superseded => "superseded",
        }
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            StageResult::Failed(f) | StageResult::TimedOut(f) => Some(f),
            _ => None,
        }
    }
}

/// A stage span under construction.
#[derive(Clone, Debug)]
pub struct StageSpan {
    pub stage: Stage,
    pub span_id: SpanId,
    pub parent: SpanId,
    /// The object the stage is about (none for a stage that never found its object).
    pub object: Option<ObjectRef>,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub deadline: Timestamp,
    pub result: StageResult,
    /// Stage-specific attributes; the common ones are added when the record is built.
    pub attrs: Attributes,
    pub events: Vec<SpanEventRecord>,
    /// A one-line account for the story.
    pub summary: String,
    /// What this span is about, as typed keys (never read back from `attrs`): the revision a
    /// source stored or a reconciler attempted, the Deployment generation a rollout or probe
    /// belongs to, the `requestedAt` value of a trigger.
    pub key: SpanKey,
    /// What the span id was derived from besides the promotion id and stage.
    pub seed: IdSeed,
}

/// The object uid and attempt a stage span's id is derived from (with the promotion id, stage
/// and cluster): kept so that a promotion that takes another id (a report merging into an
/// unreported promotion) derives every span id again, as if it had had that id from the start.
#[derive(Clone, Debug, Default)]
pub struct IdSeed {
    pub uid: Box<str>,
    pub attempt: Box<str>,
}

/// The domain values that identify a stage span among its promotion's spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanKey {
    pub revision: Option<String>,
    pub generation: Option<i64>,
    pub requested_at: Option<String>,
    /// The Flux object (Kustomization or HelmRelease) that manages a rollout's Deployment.
    pub manager: Option<ObjectRef>,
    /// The ImagePolicy whose selection an `image.update` span follows.
    pub policy: Option<ObjectRef>,
}

impl StageSpan {
    /// An open span with no attributes or events yet.
    pub fn new(
        stage: Stage,
        span_id: SpanId,
        parent: SpanId,
        object: Option<ObjectRef>,
        start: Timestamp,
        deadline: Timestamp,
    ) -> Self {
        StageSpan {
            stage,
            span_id,
            parent,
            object,
            start,
            end: None,
            deadline,
            result: StageResult::Open,
            attrs: Attributes::default(),
            events: Vec::new(),
            summary: String::new(),
            key: SpanKey::default(),
            seed: IdSeed::default(),
        }
    }

    /// Derives the span id from the promotion id, the stage, the cluster, the object's uid and
    /// the attempt (a revision, a generation), and keeps what it was derived from.
    pub fn derive_id(&mut self, pid: &str, cluster: &str, uid: &str, attempt: &str) {
        self.span_id = span_id_for(pid, self.stage, cluster, uid, attempt);
        self.seed = IdSeed {
            uid: uid.into(),
            attempt: attempt.into(),
        };
    }

    /// The id this span would have in promotion `pid`.
    pub fn id_in(&self, pid: &str, cluster: &str) -> SpanId {
        span_id_for(pid, self.stage, cluster, &self.seed.uid, &self.seed.attempt)
    }

    pub fn is_open(&self) -> bool {
        self.result == StageResult::Open
    }

    /// Ends the span, once; later calls change nothing (idempotent re-observation).
    pub fn finish(&mut self, end: Timestamp, result: StageResult, summary: impl Into<String>) {
        if !self.is_open() {
            return;
        }
        self.end = Some(end.max(self.start));
        self.result = result;
        self.summary = summary.into();
    }

    /// Ends the span at its deadline.
    pub fn time_out(&mut self, reason: &str, message: String, diverges_at: Stage) {
        let deadline = self.deadline;
        self.finish(
            deadline,
            StageResult::TimedOut(Failure {
                reason: reason.to_string(),
                message: message.clone(),
                diverges_at,
            }),
            message,
        );
    }

    pub fn set_object_attrs(&mut self, object: &ObjectRef) {
        if object.kind.is_source()
            || object.kind.is_image()
            || matches!(
                object.kind,
                crate::model::Kind::Kustomization | crate::model::Kind::HelmRelease
            )
        {
            self.attrs.set(attr::FLUX_OBJECT_KIND, object.kind.as_str());
            self.attrs.set(attr::FLUX_OBJECT_NAME, object.name.clone());
            self.attrs
                .set(attr::FLUX_OBJECT_NAMESPACE, object.namespace.clone());
        }
        self.attrs
            .set(attr::K8S_NAMESPACE_NAME, object.namespace.clone());
    }

    /// Adds an event unless the same one is there already.
    pub fn push_event(&mut self, ev: SpanEventRecord) {
        // The time first: it rules out most without comparing text.
        if !self.events.iter().any(|e| e.time == ev.time && *e == ev) {
            self.events.push(ev);
        }
    }
}
