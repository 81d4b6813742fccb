//! The correlation engine: delivery events in, finished spans and triage stories out.
//!
//! Pure and synchronous. [`Engine::apply`] takes one [`DeliveryEvent`], [`Engine::tick`] moves
//! the clock; both return [`Output`]s. The engine never reads the clock, never draws a random
//! number and never does IO, so a recording always yields the same spans, ids included, and
//! every rule here is testable by feeding events.
//!
//! How a promotion is assembled (DESIGN.md, "Correlation contract"):
//! - a promotion report, an OCI artifact annotation, a Flux object or Deployment annotation, or
//!   Flux event metadata names the promotion;
//! - revisions join objects to it: a source whose artifact revision names the promotion's commit
//!   or digest, a Kustomization/HelmRelease attempting that revision, a Deployment whose
//!   reconcile changed it (Flux labels) or that carries the promotion id;
//! - each stage ends on its own evidence (conditions, rollout status) or at its deadline, and
//!   the promotion reaches a verdict once nothing is open and a settle period has passed.

mod span;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use jiff::{SignedDuration, Timestamp};

use crate::model::{
    condition, CondStatus, DeliveryEvent, DeploymentObs, EventBody, FluxEventObs, Kind,
    KubeEventObs, ObjectRef, ProbeRequest, ProbeResult, ProbeVerdict, PromotionReport, ReceiverObs,
    ReconcilerObs, ReplicaSetObs, SourceObs,
};
use crate::revision;
use crate::story::{Divergence, Outcome, StageStory, Story};
use crate::trace::{
    attr, span_id_for, trace_id_for, AttrValue, Attributes, SpanEventRecord, SpanId, SpanKind,
    SpanLinkRecord, SpanRecord, SpanStatus, Stage, TraceId, Traceparent,
};
pub use span::{Failure, StageResult, StageSpan};

/// Deadlines per stage, and how long a promotion waits for late work before its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// A reconcile request must be handled within this.
    pub trigger: SignedDuration,
    /// The promoted revision must be stored by a source within this of the promotion.
    pub source: SignedDuration,
    /// A reconcile must finish within this, unless the object's `spec.timeout` says otherwise;
    /// and must start within this of the source having the revision.
    pub reconcile: SignedDuration,
    /// Added to a Deployment's `progressDeadlineSeconds`.
    pub rollout_grace: SignedDuration,
    /// A traffic probe must report within this of the rollout completing.
    pub traffic: SignedDuration,
    /// The whole promotion.
    pub promotion: SignedDuration,
    /// Quiet time after the last stage ends before the verdict (late rollouts, late events).
    pub settle: SignedDuration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            trigger: SignedDuration::from_mins(5),
            source: SignedDuration::from_mins(10),
            reconcile: SignedDuration::from_mins(10),
            rollout_grace: SignedDuration::from_mins(1),
            traffic: SignedDuration::from_mins(3),
            promotion: SignedDuration::from_mins(60),
            settle: SignedDuration::from_secs(30),
        }
    }
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// `k8s.cluster.name`, part of every span id.
    pub cluster: String,
    pub deadlines: Deadlines,
    /// How many finished promotions are remembered so that re-observations of their objects
    /// (a watch restart re-lists everything) create nothing new.
    pub retain_finished: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cluster: "default".into(),
            deadlines: Deadlines::default(),
            retain_finished: 10_000,
        }
    }
}

/// What the engine produces.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A finished span (each span is emitted once).
    Span(SpanRecord),
    /// A promotion reached its verdict; its spans were emitted just before.
    Story(Box<Story>),
    /// A rollout completed for a workload that opted in to the traffic probe: probe it and
    /// apply the [`crate::model::ProbeResult`].
    Probe(ProbeRequest),
}

/// Events buffered per object, kept while they can still land on a span.
const EVENTS_PER_OBJECT: usize = 256;
/// Events and ReplicaSets of objects with no open work are kept this long: enough for an
/// observation that arrives a little before the rollout or reconcile it belongs to.
const IDLE_RETENTION: SignedDuration = SignedDuration::from_mins(10);
/// A rollout is attributed to a reconcile that started at most this long after it.
const CLAIM_SLACK: SignedDuration = SignedDuration::from_secs(5);
/// Events this far outside a span's window still belong to it (clock skew, late writes).
const EVENT_WINDOW_SLACK: SignedDuration = SignedDuration::from_secs(5);

const SERVICE_FLUXTRACE: &str = "fluxtrace";
const SERVICE_NOTIFICATION: &str = "notification-controller";
const SERVICE_SOURCE: &str = "source-controller";
const SERVICE_KUSTOMIZE: &str = "kustomize-controller";
const SERVICE_HELM: &str = "helm-controller";
const SERVICE_KUBE: &str = "kube-controller-manager";

#[derive(Clone)]
struct Reconcile {
    span: StageSpan,
    apply: Option<StageSpan>,
    revision: String,
    /// First observation of this reconcile has been evaluated.
    seen: bool,
}

#[derive(Clone)]
struct Promotion {
    id: String,
    report: Option<PromotionReport>,
    traceability: &'static str,
    trace_id: TraceId,
    ci_parent: Option<SpanId>,
    root: SpanId,
    start: Timestamp,
    deadline: Timestamp,
    /// A report named a revision, so a source must deliver it.
    expect_source: bool,
    commit: Option<String>,
    digest: Option<String>,
    /// `org.opencontainers.image.created` of the OCI artifact a source fetched for it.
    artifact_created: Option<Timestamp>,
    keys: Vec<String>,
    target: Option<String>,
    trigger: Option<StageSpan>,
    sources: Vec<StageSpan>,
    reconciles: Vec<Reconcile>,
    rollouts: Vec<StageSpan>,
    traffic: Vec<StageSpan>,
    superseded_by: Option<(String, TraceId, SpanId)>,
    /// When a newer promotion took over.
    superseded_at: Option<Timestamp>,
}

impl Promotion {
    fn spans(&self) -> impl Iterator<Item = &StageSpan> {
        self.trigger
            .iter()
            .chain(self.sources.iter())
            .chain(
                self.reconciles
                    .iter()
                    .flat_map(|r| std::iter::once(&r.span).chain(r.apply.iter())),
            )
            .chain(self.rollouts.iter())
            .chain(self.traffic.iter())
    }

    fn spans_mut(&mut self) -> impl Iterator<Item = &mut StageSpan> {
        self.trigger
            .iter_mut()
            .chain(self.sources.iter_mut())
            .chain(
                self.reconciles
                    .iter_mut()
                    .flat_map(|r| std::iter::once(&mut r.span).chain(r.apply.iter_mut())),
            )
            .chain(self.rollouts.iter_mut())
            .chain(self.traffic.iter_mut())
    }

    fn parent_for_rollout(&self, manager: Option<&ObjectRef>) -> SpanId {
        manager
            .and_then(|m| {
                self.reconciles
                    .iter()
                    .find(|r| r.span.object.as_ref() == Some(m))
            })
            .map_or(self.root, |r| r.span.span_id)
    }
}

#[derive(Clone, Debug)]
struct TriggerDraft {
    value: String,
    start: Timestamp,
    /// The controller's own record of starting work after the request.
    working: Option<Timestamp>,
    handled: Option<Timestamp>,
    claimed: bool,
}

#[derive(Default)]
struct SourceState {
    last: Option<SourceObs>,
    trigger: Option<TriggerDraft>,
}

#[derive(Default)]
struct ReconcilerState {
    last: Option<ReconcilerObs>,
    trigger: Option<TriggerDraft>,
    joined: Option<String>,
    /// Changed objects reported by the controller's `Progressing` event, by revision.
    changes: Vec<(String, Vec<String>)>,
}

enum RolloutOwner {
    Unclaimed(Box<StageSpan>),
    Promotion(String),
    /// Belonged to a promotion that has finished; nothing more to do.
    Done,
}

struct Rollout {
    generation: i64,
    owner: RolloutOwner,
}

struct DeploymentState {
    last: DeploymentObs,
    rollout: Option<Rollout>,
}

struct RsInfo {
    uid: String,
    deployment: Option<String>,
    created: Option<Timestamp>,
}

struct BufferedEvent {
    record: SpanEventRecord,
    warning: bool,
    revision: Option<String>,
}

/// The correlation engine. See the module documentation.
pub struct Engine {
    cfg: EngineConfig,
    open: BTreeMap<String, Promotion>,
    finished: HashMap<String, Vec<String>>,
    finished_order: VecDeque<String>,
    /// Revision keys (commit, digest, 12-hex prefix) → promotion id.
    keys: HashMap<String, String>,
    /// Promotion target (environment + app or artifact repository) → open promotion.
    targets: HashMap<String, String>,
    /// OCI repository → open promotions that named it (floating-tag resolution).
    oci_repos: HashMap<String, Vec<String>>,
    sources: HashMap<ObjectRef, SourceState>,
    reconcilers: HashMap<ObjectRef, ReconcilerState>,
    /// Revision key → sources and reconcilers currently at that revision.
    at_revision: HashMap<String, BTreeSet<ObjectRef>>,
    deployments: HashMap<ObjectRef, DeploymentState>,
    /// Receivers: which objects their webhooks trigger.
    receivers: HashMap<ObjectRef, ReceiverObs>,
    /// Deployments with a rollout no promotion has claimed yet.
    unclaimed: BTreeSet<ObjectRef>,
    /// Reconciler → the Deployments it applied.
    managed: HashMap<ObjectRef, BTreeSet<ObjectRef>>,
    replicasets: HashMap<(String, String), RsInfo>,
    events: HashMap<ObjectRef, VecDeque<BufferedEvent>>,
    /// Events already applied, by a 64-bit hash of their identity: (count, when).
    seen_events: HashMap<u64, (i64, Timestamp)>,
    now: Timestamp,
    wake: Option<Timestamp>,
    pruned: Timestamp,
    /// Probe requests to hand out with the next outputs.
    probes: Vec<ProbeRequest>,
    touched: BTreeSet<String>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Engine {
            cfg,
            open: BTreeMap::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            keys: HashMap::new(),
            targets: HashMap::new(),
            oci_repos: HashMap::new(),
            sources: HashMap::new(),
            reconcilers: HashMap::new(),
            at_revision: HashMap::new(),
            deployments: HashMap::new(),
            managed: HashMap::new(),
            unclaimed: BTreeSet::new(),
            receivers: HashMap::new(),
            replicasets: HashMap::new(),
            events: HashMap::new(),
            seen_events: HashMap::new(),
            now: Timestamp::UNIX_EPOCH,
            wake: None,
            pruned: Timestamp::UNIX_EPOCH,
            probes: Vec::new(),
            touched: BTreeSet::new(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The story so far of a promotion still waiting for its verdict (outcome `in_progress`;
    /// a divergence already seen is named). `None` for unknown or finished promotions.
    pub fn progress(&self, id: &str) -> Option<Story> {
        let p = self.open.get(id)?;
        let mut spans: Vec<&StageSpan> = p.spans().collect();
        spans.sort_by(|a, b| {
            (a.stage, a.start, &a.object, a.span_id).cmp(&(b.stage, b.start, &b.object, b.span_id))
        });
        let start = spans
            .iter()
            .map(|s| s.start)
            .min()
            .unwrap_or(p.start)
            .min(p.start);
        let end = spans
            .iter()
            .filter_map(|s| s.end)
            .max()
            .unwrap_or(self.now)
            .max(start);
        let divergence = divergence(p, &self.events).map(|(d, _)| d);
        Some(build_story(
            p,
            &spans,
            start,
            end,
            Outcome::InProgress,
            divergence,
            &self.cfg.cluster,
        ))
    }

    /// Ids of the promotions still waiting for a verdict.
    pub fn open_ids(&self) -> impl Iterator<Item = &str> {
        self.open.keys().map(String::as_str)
    }

    /// Promotions still waiting for a verdict.
    pub fn open_promotions(&self) -> usize {
        self.open.len()
    }

    /// Applies one observation, then advances the clock to its time.
    pub fn apply(&mut self, ev: DeliveryEvent) -> Vec<Output> {
        let mut out = Vec::new();
        let at = ev.at;
        self.now = self.now.max(at);
        match ev.body {
            EventBody::Promotion(r) => self.on_promotion(at, r, &mut out),
            EventBody::Source(s) => self.on_source(at, s),
            EventBody::Reconciler(r) => self.on_reconciler(at, r, &mut out),
            EventBody::Deployment(d) => self.on_deployment(at, d),
            EventBody::ReplicaSet(rs) => self.on_replicaset(rs),
            EventBody::KubeEvent(e) => self.on_kube_event(at, e),
            EventBody::FluxEvent(e) => self.on_flux_event(at, e, &mut out),
            EventBody::ProbeResult(r) => self.on_probe_result(at, r),
            EventBody::Receiver(r) => {
                self.receivers.insert(r.object.clone(), r);
            }
            EventBody::Deleted(o) => self.on_deleted(&o),
        }
        self.advance(self.now, &mut out);
        out.extend(self.probes.drain(..).map(Output::Probe));
        out
    }

    /// Moves the clock to `now`: deadlines that passed fire, settled promotions get their verdict.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Output> {
        let mut out = Vec::new();
        self.now = self.now.max(now);
        self.advance(self.now, &mut out);
        out.extend(self.probes.drain(..).map(Output::Probe));
        out
    }

    /// The next time at which [`Engine::tick`] has something to do, if any.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.wake
    }

    /// Advances past every deadline so that each open promotion reaches a verdict (the end of a
    /// recording).
    pub fn finish(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(t) = self.wake {
            let t = t.max(self.now);
            self.now = t;
            self.advance(t, &mut out);
            if self.wake.is_some_and(|w| w <= t) {
                // A deadline that does not move would loop forever: end what is left.
                break;
            }
        }
        out.extend(self.probes.drain(..).map(Output::Probe));
        out
    }

    // ---- promotions -------------------------------------------------------------------

    fn on_promotion(&mut self, at: Timestamp, report: PromotionReport, out: &mut Vec<Output>) {
        let id = report.id.clone();
        if self.finished.contains_key(&id) {
            return;
        }
        if let Some(p) = self.open.get_mut(&id) {
            merge_report(p, report);
            p.traceability = "reported";
            let keys = report_keys(p.report.as_ref());
            self.add_keys(&id, keys);
            self.touched.insert(id.clone());
            self.rejoin(&id, at, out);
            return;
        }
        let start = report.time.unwrap_or(at);
        let target = target_key(&report);
        let repo = report.artifact.as_ref().and_then(|a| a.repository.clone());
        let p = self.new_promotion(id.clone(), start, Some(report), "reported");
        if let Some(t) = &target {
            if let Some(old) = self.targets.get(t).cloned() {
                if old != id && self.open.get(&old).is_some_and(|o| o.start <= start) {
                    self.supersede(&old, &p, start.max(at), out);
                }
            }
            self.targets.insert(t.clone(), id.clone());
        }
        if let Some(repo) = repo {
            self.oci_repos.entry(repo).or_default().push(id.clone());
        }
        let keys = report_keys(p.report.as_ref());
        self.open.insert(id.clone(), p);
        self.add_keys(&id, keys);
        self.touched.insert(id.clone());
        self.rejoin(&id, at, out);
    }

    fn new_promotion(
        &self,
        id: String,
        start: Timestamp,
        report: Option<PromotionReport>,
        traceability: &'static str,
    ) -> Promotion {
        let tp = report
            .as_ref()
            .and_then(|r| r.traceparent.as_deref())
            .and_then(|t| Traceparent::parse(t).ok());
        let trace_id = tp.map_or_else(|| trace_id_for(&id), |t| t.trace_id);
        let root = span_id_for(&id, Stage::Promotion, &self.cfg.cluster, "", "");
        let commit = report
            .as_ref()
            .and_then(|r| r.revision.as_deref())
            .and_then(revision::commit_sha)
            .map(str::to_string);
        let digest = report.as_ref().and_then(|r| {
            r.artifact
                .as_ref()
                .and_then(|a| a.digest.clone())
                .or_else(|| {
                    r.revision
                        .clone()
                        .filter(|v| revision::digest_hex(v).is_some())
                })
        });
        Promotion {
            target: report.as_ref().and_then(target_key),
            expect_source: report.is_some(),
            id,
            report,
            traceability,
            trace_id,
            ci_parent: tp.map(|t| t.span_id),
            root,
            start,
            deadline: start + self.cfg.deadlines.promotion,
            commit,
            digest,
            artifact_created: None,
            keys: Vec::new(),
            trigger: None,
            sources: Vec::new(),
            reconciles: Vec::new(),
            rollouts: Vec::new(),
            traffic: Vec::new(),
            superseded_by: None,
            superseded_at: None,
        }
    }

    /// Opens a promotion named only by an annotation or event metadata.
    ///
    /// Evidence older than the promotion deadline opens nothing: after a restart, an annotation
    /// left on an object by a promotion long finished must not bring that promotion back.
    fn ensure_annotated(&mut self, id: &str, start: Timestamp) -> bool {
        if self.finished.contains_key(id) {
            return false;
        }
        if !self.open.contains_key(id) && start + self.cfg.deadlines.promotion < self.now {
            return false;
        }
        if !self.open.contains_key(id) {
            let p = self.new_promotion(id.to_string(), start, None, "annotated");
            self.open.insert(id.to_string(), p);
        }
        self.touched.insert(id.to_string());
        true
    }

    fn add_keys(&mut self, id: &str, keys: Vec<String>) {
        let Some(p) = self.open.get_mut(id) else {
            return;
        };
        for k in keys {
            if !p.keys.contains(&k) {
                p.keys.push(k.clone());
            }
            self.keys.insert(k, id.to_string());
        }
    }

    /// Joins objects that already hold one of the promotion's revisions.
    fn rejoin(&mut self, id: &str, at: Timestamp, out: &mut Vec<Output>) {
        let Some(p) = self.open.get(id) else {
            return;
        };
        let mut objects = BTreeSet::new();
        for k in &p.keys {
            if let Some(objs) = self.at_revision.get(k) {
                objects.extend(objs.iter().cloned());
            }
        }
        // Sources first: reconcilers join through the revisions sources register.
        let (srcs, recs): (Vec<_>, Vec<_>) = objects.into_iter().partition(|o| o.kind.is_source());
        for o in srcs {
            if let Some(obs) = self.sources.get(&o).and_then(|s| s.last.clone()) {
                self.correlate_source(at, &obs);
            }
        }
        for o in recs {
            if let Some(obs) = self.reconcilers.get(&o).and_then(|s| s.last.clone()) {
                self.correlate_reconciler(at, &obs, out);
            }
        }
    }

    fn promotion_by_keys<'a>(&self, revs: impl IntoIterator<Item = &'a str>) -> Option<String> {
        revs.into_iter()
            .flat_map(revision::lookup_keys)
            .find_map(|k| self.keys.get(&k).cloned())
    }

    // ---- sources ------------------------------------------------------------------------

    fn on_source(&mut self, at: Timestamp, obs: SourceObs) {
        let st = self.sources.entry(obs.object.clone()).or_default();
        update_trigger(
            &mut st.trigger,
            &obs.requested_at,
            &obs.last_handled,
            &obs.conditions,
            at,
        );
        let old_rev = st.last.as_ref().and_then(|l| l.revision.clone());
        if old_rev != obs.revision {
            reindex(
                &mut self.at_revision,
                &obs.object,
                old_rev.as_deref(),
                obs.revision.as_deref(),
            );
        }
        let unchanged = st.last.as_ref() == Some(&obs);
        st.last = Some(obs.clone());
        if unchanged {
            return; // a re-list: nothing new
        }
        self.correlate_source(at, &obs);
    }

    fn correlate_source(&mut self, at: Timestamp, obs: &SourceObs) {
        let named = obs
            .artifact_promotion_id
            .clone()
            .or_else(|| obs.marks.promotion_id.clone());
        let by_rev = self.promotion_by_keys(
            obs.revision
                .iter()
                .chain(obs.origin_revision.iter())
                .map(String::as_str),
        );
        let pid = match (named, by_rev) {
            (Some(n), _) => {
                let start = obs.artifact_updated.unwrap_or(at).min(at);
                if !self.ensure_annotated(&n, start) {
                    return;
                }
                Some(n)
            }
            (None, Some(p)) => Some(p),
            (None, None) => None,
        };
        match pid {
            Some(pid) if self.open.contains_key(&pid) => self.join_source(at, &pid, obs),
            Some(_) => {}
            None => self.source_candidate(at, obs),
        }
    }

    fn join_source(&mut self, at: Timestamp, pid: &str, obs: &SourceObs) {
        if let Some(rev) = &obs.revision {
            let keys = revision::lookup_keys(rev);
            self.add_keys(pid, keys);
        }
        let trigger = self
            .sources
            .get_mut(&obs.object)
            .and_then(|s| s.trigger.as_mut());
        let cluster = self.cfg.cluster.clone();
        let d = self.cfg.deadlines.clone();
        let via = self.receivers.values().find(|r| r.targets(&obs.object));
        let Some(p) = self.open.get_mut(pid) else {
            return;
        };
        self.touched.insert(pid.to_string());
        claim_trigger(p, trigger, &obs.object, &obs.uid, &cluster, &d, via);
        if p.digest.is_none() {
            p.digest = obs
                .revision
                .as_deref()
                .and_then(revision::digest_hex)
                .map(|h| format!("sha256:{h}"));
        }
        if p.artifact_created.is_none() {
            p.artifact_created = obs.artifact_created;
        }
        if p.commit.is_none() {
            p.commit = obs
                .origin_revision
                .iter()
                .chain(obs.revision.iter())
                .find_map(|r| revision::commit_sha(r))
                .map(str::to_string);
        }
        let rev = obs.revision.clone().unwrap_or_default();
        let idx = match p
            .sources
            .iter()
            .position(|s| s.object.as_ref() == Some(&obs.object))
        {
            Some(i) => i,
            None => {
                let start = p
                    .trigger
                    .as_ref()
                    .filter(|t| t.object.as_ref() == Some(&obs.object))
                    .and_then(|t| t.end)
                    .unwrap_or(p.start);
                let mut s = StageSpan::new(
                    Stage::Source,
                    span_id_for(pid, Stage::Source, &cluster, &obs.uid, &rev),
                    p.root,
                    Some(obs.object.clone()),
                    start,
                    start + d.source,
                );
                s.set_object_attrs(&obs.object);
                source_attrs(&mut s.attrs, obs);
                p.sources.push(s);
                p.sources.len() - 1
            }
        };
        let span = &mut p.sources[idx];
        if !span.is_open() {
            return;
        }
        source_attrs(&mut span.attrs, obs);
        let ready = condition(&obs.conditions, "Ready");
        let stored = !rev.is_empty()
            && ready.is_none_or(|c| c.status == CondStatus::True || c.message.contains(&rev));
        if stored {
            let end = obs.artifact_updated.unwrap_or(at);
            span.start = span.start.min(end);
            let summary = format!("stored artifact for revision {rev}");
            span.finish(end, StageResult::Succeeded, summary);
        }
    }

    /// A source that has not (yet) produced the promoted revision: an OCIRepository following
    /// the promoted repository and tag is the promotion's source, and its failure is the
    /// promotion's source failure.
    fn source_candidate(&mut self, at: Timestamp, obs: &SourceObs) {
        let Some(repo) = obs.url.as_deref().and_then(|u| u.strip_prefix("oci://")) else {
            return;
        };
        let Some(ids) = self.oci_repos.get(repo).cloned() else {
            return;
        };
        let Some(ready) =
            condition(&obs.conditions, "Ready").filter(|c| c.status == CondStatus::False)
        else {
            return;
        };
        let cluster = self.cfg.cluster.clone();
        let d = self.cfg.deadlines.clone();
        for id in ids {
            let Some(p) = self.open.get_mut(&id) else {
                continue;
            };
            let tag = p
                .report
                .as_ref()
                .and_then(|r| r.artifact.as_ref())
                .and_then(|a| a.tag.as_deref());
            if tag.is_some_and(|t| obs.ref_tag.as_deref().is_some_and(|r| r != t)) {
                continue;
            }
            if ready.last_transition.is_some_and(|t| t < p.start) {
                continue; // failing since before the promotion: not this promotion's fetch
            }
            if p.sources
                .iter()
                .any(|s| s.object.as_ref() == Some(&obs.object))
            {
                continue;
            }
            let end = ready.last_transition.unwrap_or(at);
            let mut s = StageSpan::new(
                Stage::Source,
                span_id_for(&id, Stage::Source, &cluster, &obs.uid, "failed"),
                p.root,
                Some(obs.object.clone()),
                p.start,
                p.start + d.source,
            );
            s.set_object_attrs(&obs.object);
            source_attrs(&mut s.attrs, obs);
            s.finish(
                end,
                StageResult::Failed(Failure {
                    reason: ready.reason.clone(),
                    message: ready.message.clone(),
                    diverges_at: Stage::Source,
                }),
                format!("{}: {}", ready.reason, ready.message),
            );
            p.sources.push(s);
            self.touched.insert(id.clone());
        }
    }

    // ---- reconcilers ----------------------------------------------------------------------

    fn on_reconciler(&mut self, at: Timestamp, obs: ReconcilerObs, out: &mut Vec<Output>) {
        let st = self.reconcilers.entry(obs.object.clone()).or_default();
        update_trigger(
            &mut st.trigger,
            &obs.requested_at,
            &obs.last_handled,
            &obs.conditions,
            at,
        );
        let old_rev = st.last.as_ref().and_then(|l| l.last_attempted.clone());
        if old_rev != obs.last_attempted {
            reindex(
                &mut self.at_revision,
                &obs.object,
                old_rev.as_deref(),
                obs.last_attempted.as_deref(),
            );
        }
        let unchanged = st.last.as_ref() == Some(&obs);
        st.last = Some(obs.clone());
        if unchanged {
            return;
        }
        self.correlate_reconciler(at, &obs, out);
    }

    fn correlate_reconciler(&mut self, at: Timestamp, obs: &ReconcilerObs, out: &mut Vec<Output>) {
        let Some(rev) = obs.last_attempted.clone() else {
            return;
        };
        let pid = match &obs.marks.promotion_id {
            Some(n) => {
                // When the reconcile happened, as far as the object says.
                let evidence = condition(&obs.conditions, "Ready")
                    .and_then(|c| c.last_transition)
                    .unwrap_or(at)
                    .min(at);
                if !self.ensure_annotated(n, evidence) {
                    return;
                }
                Some(n.clone())
            }
            None => self.promotion_by_keys(
                std::iter::once(rev.as_str()).chain(obs.last_attempted_digest.as_deref()),
            ),
        };
        let Some(pid) = pid.filter(|p| self.open.contains_key(p)) else {
            return;
        };
        // The reconciler moved on from an earlier promotion's revision: that one is superseded.
        let previous = self
            .reconcilers
            .get(&obs.object)
            .and_then(|s| s.joined.clone());
        if let Some(prev) = previous.filter(|p| *p != pid) {
            let still_open = self.open.get(&prev).is_some_and(|p| {
                p.reconciles
                    .iter()
                    .any(|r| r.span.object.as_ref() == Some(&obs.object) && r.span.is_open())
            });
            if still_open {
                if let Some(newer) = self.open.remove(&pid) {
                    self.supersede(&prev, &newer, at, out);
                    self.open.insert(pid.clone(), newer);
                }
            }
        }
        if let Some(st) = self.reconcilers.get_mut(&obs.object) {
            st.joined = Some(pid.clone());
        }
        let trigger = self
            .reconcilers
            .get_mut(&obs.object)
            .and_then(|s| s.trigger.as_mut());
        let cluster = self.cfg.cluster.clone();
        let d = self.cfg.deadlines.clone();
        let via = self.receivers.values().find(|r| r.targets(&obs.object));
        let Some(p) = self.open.get_mut(&pid) else {
            return;
        };
        self.touched.insert(pid.clone());
        claim_trigger(p, trigger, &obs.object, &obs.uid, &cluster, &d, via);
        let helm = obs.object.kind == Kind::HelmRelease;
        let idx = match p
            .reconciles
            .iter()
            .position(|r| r.span.object.as_ref() == Some(&obs.object) && r.revision == rev)
        {
            Some(i) => i,
            None => {
                let ready = condition(&obs.conditions, "Ready");
                let started = ready
                    .and_then(|c| c.last_transition)
                    .filter(|t| *t >= p.start - CLAIM_SLACK);
                let from_history = obs
                    .history
                    .iter()
                    .find(|h| h.revision == rev)
                    .and_then(|h| Some(h.last_reconciled? - h.last_duration?));
                let mut start = started.map_or(at, |t| t.min(at));
                if ready.is_some_and(|c| c.status != CondStatus::Unknown) {
                    if let Some(h) = from_history.filter(|h| *h >= p.start - CLAIM_SLACK) {
                        start = start.min(h);
                    }
                }
                let already = obs.last_applied.as_deref() == Some(rev.as_str())
                    && ready.is_some_and(|c| {
                        c.status == CondStatus::True
                            && c.last_transition.is_some_and(|t| t < p.start)
                    });
                let timeout = obs.timeout.unwrap_or(d.reconcile);
                let mk = |stage, parent| {
                    let mut s = StageSpan::new(
                        stage,
                        span_id_for(&pid, stage, &cluster, &obs.uid, &rev),
                        parent,
                        Some(obs.object.clone()),
                        start,
                        start + timeout,
                    );
                    s.set_object_attrs(&obs.object);
                    s.attrs.set(attr::FLUX_REVISION, rev.clone());
                    s
                };
                let span = mk(Stage::Reconcile, p.root);
                let apply = mk(Stage::Apply, span.span_id);
                let mut r = Reconcile {
                    span,
                    apply: Some(apply),
                    revision: rev.clone(),
                    seen: false,
                };
                if already {
                    let t = ready.and_then(|c| c.last_transition).unwrap_or(at);
                    r.span.start = t;
                    let msg = format!("revision {rev} was already applied at {t}");
                    r.span.finish(t, StageResult::NoChange, msg.clone());
                    if let Some(a) = r.apply.as_mut() {
                        a.start = t;
                        a.finish(t, StageResult::NoChange, msg);
                    }
                }
                p.reconciles.push(r);
                p.reconciles.len() - 1
            }
        };
        let digest = p.digest.clone();
        let r = &mut p.reconciles[idx];
        if let Some(dg) = digest {
            r.span.attrs.set(attr::OCI_MANIFEST_DIGEST, dg);
        }
        let first = !r.seen;
        r.seen = true;
        if helm {
            evaluate_helm(r, obs, at, first);
        } else {
            evaluate_kustomization(r, obs, at, first);
        }
        let reconcile_start = r.span.start;
        // A revision already applied changed nothing: it explains no rollout.
        let claim_until = match r.span.result {
            StageResult::NoChange => None,
            _ => Some(r.span.end.map(|e| e + self.cfg.deadlines.settle)),
        };
        // Rollouts of Deployments this reconciler applied that started before we knew.
        let managed: Vec<ObjectRef> = self
            .managed
            .get(&obs.object)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for dep in managed {
            let claimable = self.deployments.get(&dep).is_some_and(|d| {
                matches!(&d.rollout, Some(Rollout { owner: RolloutOwner::Unclaimed(s), .. })
                    if s.start + CLAIM_SLACK >= reconcile_start
                        && claim_until.is_some_and(|u| u.is_none_or(|u| s.start <= u)))
            });
            if claimable {
                self.claim_rollout(&dep, &pid);
            }
        }
    }

    // ---- rollouts -------------------------------------------------------------------------

    fn on_deployment(&mut self, at: Timestamp, obs: DeploymentObs) {
        let key = obs.object.clone();
        let prev = self.deployments.get(&key);
        let first = prev.is_none();
        let prev_gen = prev.map_or(0, |p| p.last.generation);
        // A re-list repeats the current state; an older generation is a stale observation.
        if prev.is_some_and(|p| p.last == obs || obs.generation < p.last.generation) {
            return;
        }
        let old_manager = prev.and_then(|p| p.last.manager.clone());
        if old_manager != obs.manager {
            if let Some(m) = &old_manager {
                if let Some(set) = self.managed.get_mut(m) {
                    set.remove(&key);
                }
            }
            if let Some(m) = &obs.manager {
                self.managed
                    .entry(m.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        let progressing = condition(&obs.conditions, "Progressing");
        let starts = if first {
            // First sight (start-up or a new Deployment): only work in progress is a rollout.
            obs.generation > 0
                && !obs.rollout_complete()
                && progressing.is_none_or(|c| c.status != CondStatus::False)
        } else {
            // A new pod template rolls out; a scale (replicas changed, same images, labels and
            // annotations) bumps the generation too and is not a rollout. A spec change that
            // keeps replicas (env, resources) is one.
            obs.generation > prev_gen
                && prev.is_some_and(|p| {
                    p.last.template != obs.template || p.last.replicas == obs.replicas
                })
        };
        let state = self
            .deployments
            .entry(key.clone())
            .or_insert(DeploymentState {
                last: obs.clone(),
                rollout: None,
            });
        state.last = obs.clone();
        if starts {
            if let Some(old) = state.rollout.take() {
                let pending = end_superseded_rollout(old, at);
                if let Some((pid, generation)) = pending {
                    if let Some(p) = self.open.get_mut(&pid) {
                        for s in p.rollouts.iter_mut().filter(|s| {
                            s.object.as_ref() == Some(&key)
                                && s.attrs.get(attr::DELIVERY_ROLLOUT_GENERATION)
                                    == Some(&AttrValue::Int(generation))
                        }) {
                            s.finish(at, StageResult::Superseded, "superseded by a newer rollout");
                        }
                        self.touched.insert(pid);
                    }
                }
            }
            let mut span = StageSpan::new(
                Stage::Rollout,
                SpanId([0; 8]),
                SpanId([0; 8]),
                Some(key.clone()),
                at,
                at + obs.progress_deadline + self.cfg.deadlines.rollout_grace,
            );
            span.set_object_attrs(&key);
            span.attrs.set(attr::K8S_DEPLOYMENT_NAME, key.name.clone());
            span.attrs.set(attr::K8S_DEPLOYMENT_UID, obs.uid.clone());
            span.attrs
                .set(attr::DELIVERY_ROLLOUT_GENERATION, obs.generation);
            image_attrs(&mut span.attrs, &obs.images);
            state.rollout = Some(Rollout {
                generation: obs.generation,
                owner: RolloutOwner::Unclaimed(Box::new(span)),
            });
            self.unclaimed.insert(key.clone());
            // Its deadline must wake the engine even with no promotion open.
            let deadline = at + obs.progress_deadline + self.cfg.deadlines.rollout_grace;
            self.wake = Some(self.wake.map_or(deadline, |w| w.min(deadline)));
            if let Some(pid) = self.rollout_claimant(&obs, at) {
                self.claim_rollout(&key, &pid);
            }
        }
        self.update_rollout(&key, at);
    }

    /// Which open promotion explains a rollout starting now.
    fn rollout_claimant(&mut self, obs: &DeploymentObs, at: Timestamp) -> Option<String> {
        if let Some(id) = &obs.marks.promotion_id {
            if !self.finished.contains_key(id) {
                self.ensure_annotated(id, at);
                return Some(id.clone());
            }
        }
        let manager = obs.manager.as_ref()?;
        let pid = self.reconcilers.get(manager)?.joined.clone()?;
        let p = self.open.get(&pid)?;
        let settle = self.cfg.deadlines.settle;
        p.reconciles
            .iter()
            .any(|r| {
                r.span.object.as_ref() == Some(manager)
                    && r.span.start <= at + CLAIM_SLACK
                    && r.span.end.is_none_or(|e| e + settle >= at)
                    && r.span.result != StageResult::NoChange
            })
            .then_some(pid)
    }

    fn claim_rollout(&mut self, dep: &ObjectRef, pid: &str) {
        let cluster = self.cfg.cluster.clone();
        let Some(state) = self.deployments.get_mut(dep) else {
            return;
        };
        let Some(rollout) = state.rollout.as_mut() else {
            return;
        };
        let Some(p) = self.open.get_mut(pid) else {
            return;
        };
        let owner = std::mem::replace(&mut rollout.owner, RolloutOwner::Promotion(pid.to_string()));
        let RolloutOwner::Unclaimed(mut span) = owner else {
            rollout.owner = owner;
            return;
        };
        self.unclaimed.remove(dep);
        span.span_id = span_id_for(
            pid,
            Stage::Rollout,
            &cluster,
            &state.last.uid,
            &rollout.generation.to_string(),
        );
        span.parent = p.parent_for_rollout(state.last.manager.as_ref());
        p.rollouts.push(*span);
        self.touched.insert(pid.to_string());
    }

    fn update_rollout(&mut self, key: &ObjectRef, at: Timestamp) {
        let Some(state) = self.deployments.get_mut(key) else {
            return;
        };
        let obs = &state.last;
        let Some(rollout) = state.rollout.as_mut() else {
            return;
        };
        // A later generation with the same pod template (a scale) continues this rollout.
        if obs.generation < rollout.generation {
            return;
        }
        let span = match &mut rollout.owner {
            RolloutOwner::Unclaimed(s) => s,
            RolloutOwner::Promotion(pid) => {
                let Some(p) = self.open.get_mut(pid.as_str()) else {
                    rollout.owner = RolloutOwner::Done;
                    return;
                };
                self.touched.insert(pid.clone());
                let generation = AttrValue::Int(rollout.generation);
                let Some(s) = p.rollouts.iter_mut().find(|s| {
                    s.object.as_ref() == Some(key)
                        && s.attrs.get(attr::DELIVERY_ROLLOUT_GENERATION) == Some(&generation)
                }) else {
                    return;
                };
                s
            }
            RolloutOwner::Done => return,
        };
        if !span.is_open() {
            return;
        }
        let progressing = condition(&obs.conditions, "Progressing");
        if let Some(rs) = progressing.and_then(|c| replicaset_in(&c.message)) {
            span.attrs.set(attr::K8S_REPLICASET_NAME, rs.to_string());
            let info = self
                .replicasets
                .get(&(key.namespace.clone(), rs.to_string()));
            if let Some(i) = info.filter(|i| !i.uid.is_empty()) {
                span.attrs.set(attr::K8S_REPLICASET_UID, i.uid.clone());
            }
            let created = info.and_then(|i| i.created);
            if let Some(c) = created
                .filter(|c| *c <= span.start && *c + SignedDuration::from_mins(1) >= span.start)
            {
                span.start = c;
            }
        }
        if obs.rollout_complete() {
            let end = progressing
                .and_then(|c| c.last_update)
                .unwrap_or(at)
                .min(at);
            let msg =
                progressing.map_or_else(|| "rollout complete".to_string(), |c| c.message.clone());
            span.finish(end.max(span.start), StageResult::Succeeded, msg);
        } else if let Some(c) = progressing.filter(|c| {
            c.status == CondStatus::False && c.last_transition.is_none_or(|t| t >= span.start)
        }) {
            let end = c.last_transition.unwrap_or(at);
            span.finish(
                end,
                StageResult::Failed(Failure {
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    diverges_at: Stage::Rollout,
                }),
                format!("{}: {}", c.reason, c.message),
            );
        }
        if !span.is_open() {
            let succeeded = span.result == StageResult::Succeeded;
            let end = span.end.unwrap_or(at);
            match &rollout.owner {
                // Not yet: the report that explains it may still come (CI reports late, a
                // watch delivers the reconcile after the rollout). After the settle period
                // it becomes its own trace (`expire_unclaimed`).
                RolloutOwner::Unclaimed(_) => {
                    let due = end + self.cfg.deadlines.settle;
                    self.wake = Some(self.wake.map_or(due, |w| w.min(due)));
                }
                RolloutOwner::Promotion(pid) if succeeded => {
                    let pid = pid.clone();
                    let generation = rollout.generation;
                    self.request_probe(key, &pid, generation, end);
                }
                _ => {}
            }
        }
    }

    /// After a successful rollout of a workload that opted in: a traffic span, and a request
    /// for the prober.
    fn request_probe(&mut self, key: &ObjectRef, pid: &str, generation: i64, end: Timestamp) {
        let Some(state) = self.deployments.get(key) else {
            return;
        };
        let obs = &state.last;
        let spec = obs.probe.clone().or_else(|| {
            let m = obs.manager.as_ref()?;
            self.reconcilers.get(m)?.last.as_ref()?.probe.clone()
        });
        let Some(spec) = spec else {
            return;
        };
        let Some(p) = self.open.get_mut(pid) else {
            return;
        };
        let attempt = generation.to_string();
        let span_id = span_id_for(pid, Stage::Traffic, &self.cfg.cluster, &obs.uid, &attempt);
        if p.traffic.iter().any(|s| s.span_id == span_id) {
            return;
        }
        let expected = match spec.expected_version.as_deref() {
            None | Some("image-tag") => obs
                .images
                .first()
                .and_then(|i| image_tag(i))
                .unwrap_or_default()
                .to_string(),
            Some("promotion-id") => pid.to_string(),
            Some(v) => v.to_string(),
        };
        let expect = spec.expect.clone().unwrap_or_else(|| "body".to_string());
        let url = strip_credentials(&spec.url);
        let mut s = StageSpan::new(
            Stage::Traffic,
            span_id,
            p.root,
            Some(key.clone()),
            end,
            end + self.cfg.deadlines.traffic,
        );
        s.set_object_attrs(key);
        s.attrs.set(attr::K8S_DEPLOYMENT_NAME, key.name.clone());
        s.attrs.set(attr::DELIVERY_ROLLOUT_GENERATION, generation);
        s.attrs.set(attr::URL_FULL, url.clone());
        s.attrs.set(attr::DELIVERY_PROBE_EXPECTED, expected.clone());
        p.traffic.push(s);
        self.touched.insert(pid.to_string());
        self.probes.push(ProbeRequest {
            promotion_id: pid.to_string(),
            deployment: key.clone(),
            generation,
            url: spec.url,
            expect,
            expected,
            requested_at: end,
        });
    }

    fn on_probe_result(&mut self, at: Timestamp, r: ProbeResult) {
        let Some(p) = self.open.get_mut(&r.promotion_id) else {
            return;
        };
        let key = ObjectRef::new(Kind::Deployment, r.namespace.clone(), r.deployment.clone());
        let generation = AttrValue::Int(r.generation);
        let Some(s) = p.traffic.iter_mut().find(|s| {
            s.object.as_ref() == Some(&key)
                && s.attrs.get(attr::DELIVERY_ROLLOUT_GENERATION) == Some(&generation)
        }) else {
            return;
        };
        if !s.is_open() {
            return;
        }
        s.attrs.set(attr::URL_FULL, strip_credentials(&r.url));
        s.attrs
            .set(attr::DELIVERY_PROBE_SAMPLES, i64::from(r.samples));
        s.attrs
            .set(attr::DELIVERY_PROBE_MATCHED, i64::from(r.matched));
        s.attrs.set(
            attr::DELIVERY_PROBE_VERSIONS,
            r.versions
                .iter()
                .map(|(v, n)| format!("{v}={n}"))
                .collect::<Vec<_>>(),
        );
        if let Some(code) = r.failed_status {
            s.attrs
                .set(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(code));
        }
        let end = r.finished.min(at).max(s.start);
        let seen = r
            .versions
            .iter()
            .map(|(v, n)| format!("{v} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        match r.verdict {
            ProbeVerdict::Passed => s.finish(
                end,
                StageResult::Succeeded,
                format!(
                    "{} of {} samples served {} ({seen})",
                    r.matched, r.samples, r.expected
                ),
            ),
            ProbeVerdict::Failed { reason, message }
            | ProbeVerdict::Refused { reason, message } => {
                let summary = format!("{reason}: {message}");
                s.finish(
                    end,
                    StageResult::Failed(Failure {
                        reason,
                        message,
                        diverges_at: Stage::Traffic,
                    }),
                    summary,
                );
            }
        }
        self.touched.insert(r.promotion_id);
    }

    /// A rollout that ended with no promotion to explain it becomes its own trace.
    fn untraced(&mut self, key: &ObjectRef) {
        self.unclaimed.remove(key);
        let cluster = self.cfg.cluster.clone();
        let Some((generation, uid, start)) = self.deployments.get(key).and_then(|d| {
            let r = d.rollout.as_ref()?;
            match &r.owner {
                RolloutOwner::Unclaimed(s) => Some((r.generation, d.last.uid.clone(), s.start)),
                _ => None,
            }
        }) else {
            return;
        };
        // The uid tells a re-created Deployment (generations start over) from the old one.
        let short_uid: String = uid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect();
        let id = format!(
            "untraced/{}/{}/{}-{}",
            key.namespace, key.name, short_uid, generation
        );
        let known = self.finished.contains_key(&id) || self.open.contains_key(&id);
        let mut p = self.new_promotion(id.clone(), start, None, "missing");
        let Some(rollout) = self
            .deployments
            .get_mut(key)
            .and_then(|d| d.rollout.as_mut())
        else {
            return;
        };
        let RolloutOwner::Unclaimed(mut span) =
            std::mem::replace(&mut rollout.owner, RolloutOwner::Done)
        else {
            return;
        };
        if known {
            return;
        }
        span.span_id = span_id_for(&id, Stage::Rollout, &cluster, &uid, &generation.to_string());
        span.parent = p.root;
        p.rollouts.push(*span);
        self.open.insert(id.clone(), p);
        self.touched.insert(id);
    }

    fn on_replicaset(&mut self, obs: ReplicaSetObs) {
        // Only a new ReplicaSet can start a rollout; Pod names lead to older ones anyway.
        if obs.created.is_some_and(|c| c + IDLE_RETENTION < self.now) {
            self.replicasets
                .remove(&(obs.object.namespace.clone(), obs.object.name.clone()));
            return;
        }
        self.replicasets.insert(
            (obs.object.namespace.clone(), obs.object.name.clone()),
            RsInfo {
                uid: obs.uid,
                deployment: obs.deployment,
                created: obs.created,
            },
        );
    }

    fn on_deleted(&mut self, o: &ObjectRef) {
        match o.kind {
            Kind::Deployment => {
                self.unclaimed.remove(o);
                if let Some(st) = self.deployments.remove(o) {
                    if let Some(m) = st.last.manager {
                        if let Some(set) = self.managed.get_mut(&m) {
                            set.remove(o);
                        }
                    }
                }
                self.events.remove(o);
            }
            Kind::Receiver => {
                self.receivers.remove(o);
            }
            Kind::ReplicaSet => {
                self.replicasets
                    .remove(&(o.namespace.clone(), o.name.clone()));
            }
            k if k.is_source() => {
                if let Some(st) = self.sources.remove(o) {
                    let rev = st.last.and_then(|l| l.revision);
                    reindex(&mut self.at_revision, o, rev.as_deref(), None);
                }
                self.events.remove(o);
            }
            Kind::Kustomization | Kind::HelmRelease => {
                if let Some(st) = self.reconcilers.remove(o) {
                    let rev = st.last.and_then(|l| l.last_attempted);
                    reindex(&mut self.at_revision, o, rev.as_deref(), None);
                }
                self.managed.remove(o);
                self.events.remove(o);
            }
            _ => {}
        }
    }

    // ---- events ---------------------------------------------------------------------------

    fn on_kube_event(&mut self, at: Timestamp, ev: KubeEventObs) {
        let seen_key = identity_hash(&[&ev.uid]);
        if self
            .seen_events
            .get(&seen_key)
            .is_some_and(|(c, _)| *c >= ev.count)
        {
            return;
        }
        self.seen_events.insert(seen_key, (ev.count, at));
        let ns = ev.involved_namespace.clone();
        let target = match Kind::parse(&ev.involved_kind) {
            Some(Kind::Pod) => Some(self.deployment_of_pod(&ns, &ev.involved_name)),
            Some(Kind::ReplicaSet) => Some(self.deployment_of_rs(&ns, &ev.involved_name)),
            Some(Kind::Deployment) => Some(ObjectRef::new(
                Kind::Deployment,
                ns.clone(),
                ev.involved_name.clone(),
            )),
            Some(k) if k.is_source() || matches!(k, Kind::Kustomization | Kind::HelmRelease) => {
                Some(ObjectRef::new(k, ns.clone(), ev.involved_name.clone()))
            }
            _ => None,
        };
        let Some(target) = target else {
            return;
        };
        let mut attrs = Attributes::default();
        attrs.set(attr::EVENT_REASON, ev.reason.clone());
        attrs.set(attr::EVENT_MESSAGE, ev.message.clone());
        attrs.set(
            attr::EVENT_TYPE,
            if ev.warning { "Warning" } else { "Normal" },
        );
        attrs.set(
            attr::EVENT_OBJECT,
            format!("{}/{}", ev.involved_kind, ev.involved_name),
        );
        if ev.count > 1 {
            attrs.set(attr::EVENT_COUNT, ev.count);
        }
        if !ev.component.is_empty() {
            attrs.set(attr::EVENT_COMPONENT, ev.component.clone());
        }
        if ev.involved_kind == "Pod" {
            attrs.set(attr::K8S_POD_NAME, ev.involved_name.clone());
        }
        let record = SpanEventRecord {
            name: ev.reason.clone(),
            time: ev.time.unwrap_or(at),
            attributes: attrs,
        };
        self.buffer_event(target, record, ev.warning, ev.revision);
    }

    fn on_flux_event(&mut self, at: Timestamp, ev: FluxEventObs, out: &mut Vec<Output>) {
        let time = ev.time.to_string();
        let key = identity_hash(&[
            "flux",
            ev.object.kind.as_str(),
            &ev.object.namespace,
            &ev.object.name,
            &time,
            &ev.reason,
            &ev.message,
        ]);
        if self.seen_events.contains_key(&key) {
            return;
        }
        self.seen_events.insert(key, (1, at));
        if ev.reason == "Progressing" {
            let changed = changed_objects(&ev.message);
            if !changed.is_empty() {
                if let Some(rev) = &ev.revision {
                    let st = self.reconcilers.entry(ev.object.clone()).or_default();
                    if !st.changes.iter().any(|(r, _)| r == rev) {
                        st.changes.push((rev.clone(), changed));
                        if st.changes.len() > 5 {
                            st.changes.remove(0);
                        }
                    }
                }
            }
        }
        if let (Some(pid), Some(rev)) = (&ev.promotion_id, &ev.revision) {
            if self.ensure_annotated(pid, ev.time.min(at)) {
                let keys = revision::lookup_keys(rev);
                self.add_keys(pid, keys);
                self.rejoin(pid, at, out);
            }
        }
        let mut attrs = Attributes::default();
        attrs.set(attr::EVENT_REASON, ev.reason.clone());
        attrs.set(attr::EVENT_MESSAGE, ev.message.clone());
        attrs.set(
            attr::EVENT_TYPE,
            if ev.error { "Warning" } else { "Normal" },
        );
        attrs.set(
            attr::EVENT_OBJECT,
            format!("{}/{}", ev.object.kind.as_str(), ev.object.name),
        );
        if !ev.controller.is_empty() {
            attrs.set(attr::EVENT_COMPONENT, ev.controller.clone());
        }
        let record = SpanEventRecord {
            name: ev.reason.clone(),
            time: ev.time,
            attributes: attrs,
        };
        self.buffer_event(ev.object, record, ev.error, ev.revision);
    }

    fn buffer_event(
        &mut self,
        target: ObjectRef,
        record: SpanEventRecord,
        warning: bool,
        revision: Option<String>,
    ) {
        // An old event about an object nothing is waiting on cannot land on any span.
        if record.time + IDLE_RETENTION < self.now && !self.active(&target) {
            return;
        }
        let horizon = self.now - self.cfg.deadlines.promotion - self.cfg.deadlines.settle;
        let buf = self.events.entry(target).or_default();
        // Flux controllers write each notification twice: as a core/v1 Event and to
        // notification-controller. Keep one.
        let same = |e: &BufferedEvent| {
            e.record.name == record.name
                && e.record.attributes.get(attr::EVENT_MESSAGE)
                    == record.attributes.get(attr::EVENT_MESSAGE)
                && e.record.attributes.get(attr::EVENT_OBJECT)
                    == record.attributes.get(attr::EVENT_OBJECT)
                && e.record.time.duration_since(record.time).abs() <= EVENT_WINDOW_SLACK
        };
        if buf.iter().rev().take(32).any(same) {
            return;
        }
        while buf.front().is_some_and(|e| e.record.time < horizon) || buf.len() >= EVENTS_PER_OBJECT
        {
            buf.pop_front();
        }
        buf.push_back(BufferedEvent {
            record,
            warning,
            revision,
        });
    }

    fn deployment_of_rs(&self, ns: &str, rs: &str) -> ObjectRef {
        let name = self
            .replicasets
            .get(&(ns.to_string(), rs.to_string()))
            .and_then(|i| i.deployment.clone())
            .unwrap_or_else(|| rs.rsplit_once('-').map_or(rs, |(d, _)| d).to_string());
        ObjectRef::new(Kind::Deployment, ns, name)
    }

    fn deployment_of_pod(&self, ns: &str, pod: &str) -> ObjectRef {
        let rs = pod.rsplit_once('-').map_or(pod, |(r, _)| r);
        self.deployment_of_rs(ns, rs)
    }

    // ---- time -----------------------------------------------------------------------------

    fn advance(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        let full = self.wake.is_some_and(|w| w <= now);
        let ids: Vec<String> = if full {
            self.open.keys().cloned().collect()
        } else {
            std::mem::take(&mut self.touched).into_iter().collect()
        };
        self.touched.clear();
        if full {
            self.expire_unclaimed(now);
            // `expire_unclaimed` may open untraced promotions.
            let extra: Vec<String> = std::mem::take(&mut self.touched).into_iter().collect();
            let mut all: BTreeSet<String> = ids.iter().cloned().collect();
            all.extend(extra);
            for id in &all {
                self.check(id, now, out);
            }
            self.recompute_wake();
        } else {
            for id in &ids {
                self.check(id, now, out);
            }
            for id in &ids {
                if let Some(w) = self.open.get(id).map(|p| self.wake_of(p)) {
                    self.wake = Some(self.wake.map_or(w, |x| x.min(w)));
                }
            }
        }
        // After the verdicts: what they needed is no longer needed.
        self.prune(now);
    }

    fn expire_unclaimed(&mut self, now: Timestamp) {
        let settle = self.cfg.deadlines.settle;
        let expired: Vec<ObjectRef> = self
            .unclaimed
            .iter()
            .filter(|k| {
                self.deployments.get(*k).is_some_and(|d| {
                    matches!(&d.rollout, Some(Rollout { owner: RolloutOwner::Unclaimed(s), .. })
                        if unclaimed_due(s, settle) <= now)
                })
            })
            .cloned()
            .collect();
        for key in expired {
            if let Some(Rollout {
                owner: RolloutOwner::Unclaimed(s),
                ..
            }) = self
                .deployments
                .get_mut(&key)
                .and_then(|d| d.rollout.as_mut())
            {
                if s.is_open() {
                    let msg = format!(
                        "rollout did not complete within its deadline ({})",
                        s.deadline
                    );
                    s.time_out("RolloutTimeout", msg, Stage::Rollout);
                }
            }
            self.untraced(&key);
        }
    }

    fn recompute_wake(&mut self) {
        let mut wake: Option<Timestamp> = None;
        let mut min = |t: Timestamp| wake = Some(wake.map_or(t, |w| w.min(t)));
        for p in self.open.values() {
            min(self.wake_of(p));
        }
        for d in self
            .unclaimed
            .iter()
            .filter_map(|k| self.deployments.get(k))
        {
            if let Some(Rollout {
                owner: RolloutOwner::Unclaimed(s),
                ..
            }) = &d.rollout
            {
                min(unclaimed_due(s, self.cfg.deadlines.settle));
            }
        }
        self.wake = wake;
    }

    /// The earliest time after now at which something can change for `p` without a new
    /// observation (anything due by now was handled when `check` ran).
    fn wake_of(&self, p: &Promotion) -> Timestamp {
        let d = &self.cfg.deadlines;
        let mut due = vec![p.deadline];
        due.extend(p.spans().filter(|s| s.is_open()).map(|s| s.deadline));
        if p.expect_source && p.sources.is_empty() {
            due.push(p.start + d.source);
        }
        if let Some(end) = sources_done(p) {
            if p.reconciles.is_empty() {
                due.push(end + d.reconcile);
            }
        }
        if p.spans().all(|s| !s.is_open()) && verdict_due(p) {
            if let Some(last) = p.spans().filter_map(|s| s.end).max() {
                due.push(last + d.settle);
            }
        }
        due.into_iter()
            .filter(|t| *t > self.now)
            .min()
            .unwrap_or(self.now + d.settle)
    }

    /// Whether an object has work that events about it may still land on: a span of an open
    /// promotion, or a rollout no promotion has claimed yet.
    fn active(&self, obj: &ObjectRef) -> bool {
        self.unclaimed.contains(obj)
            || self
                .open
                .values()
                .any(|p| p.spans().any(|s| s.object.as_ref() == Some(obj)))
    }

    /// Forgets what can no longer matter: events past the promotion deadline, and events and
    /// ReplicaSets of idle objects past [`IDLE_RETENTION`]. Runs at most once a minute.
    fn prune(&mut self, now: Timestamp) {
        if now < self.pruned + SignedDuration::from_mins(1) {
            return;
        }
        self.pruned = now;
        let horizon = now - self.cfg.deadlines.promotion - self.cfg.deadlines.settle;
        let idle = now - IDLE_RETENTION;
        let mut active: HashSet<&ObjectRef> = self.unclaimed.iter().collect();
        for p in self.open.values() {
            active.extend(p.spans().filter_map(|s| s.object.as_ref()));
        }
        self.seen_events.retain(|_, (_, t)| *t >= idle);
        self.events.retain(|obj, buf| {
            let keep_from = if active.contains(obj) { horizon } else { idle };
            while buf.front().is_some_and(|e| e.record.time < keep_from) {
                buf.pop_front();
            }
            !buf.is_empty()
        });
        self.replicasets
            .retain(|_, rs| rs.created.is_none_or(|c| c >= idle));
    }

    fn check(&mut self, id: &str, now: Timestamp, out: &mut Vec<Output>) {
        let d = &self.cfg.deadlines;
        let cluster = &self.cfg.cluster;
        let Some(p) = self.open.get_mut(id) else {
            return;
        };
        // Stage deadlines.
        for s in p.spans_mut() {
            if s.is_open() && s.deadline <= now {
                let (reason, msg) = timeout_text(s);
                s.time_out(reason, msg, s.stage);
            }
        }
        // Stages that never started.
        if p.expect_source && p.sources.is_empty() && p.start + d.source <= now {
            let what = p.commit.clone().or(p.digest.clone()).unwrap_or_default();
            let start = p.start;
            let mut s = placeholder(p, Stage::Source, cluster, start, start + d.source);
            s.attrs.set(attr::FLUX_REVISION, what.clone());
            s.time_out(
                "RevisionNotFound",
                format!(
                    "no source stored revision {what} within {}",
                    fmt_dur(d.source)
                ),
                Stage::Source,
            );
            p.sources.push(s);
        }
        if let Some(end) = sources_done(p) {
            if p.reconciles.is_empty() && end + d.reconcile <= now {
                let rev = p
                    .sources
                    .iter()
                    .find_map(|s| s.attrs.get_str(attr::FLUX_REVISION).map(str::to_string))
                    .unwrap_or_default();
                let mut span = placeholder(p, Stage::Reconcile, cluster, end, end + d.reconcile);
                span.attrs.set(attr::FLUX_REVISION, rev.clone());
                span.time_out(
                    "ReconcileNotStarted",
                    format!(
                        "no Kustomization or HelmRelease attempted revision {rev} within {}",
                        fmt_dur(d.reconcile)
                    ),
                    Stage::Reconcile,
                );
                p.reconciles.push(Reconcile {
                    span,
                    apply: None,
                    revision: rev,
                    seen: true,
                });
            }
        }
        // The promotion's own deadline ends everything.
        if p.deadline <= now {
            let deadline = p.deadline;
            for s in p.spans_mut() {
                if s.is_open() {
                    s.deadline = s.deadline.min(deadline);
                    let (reason, msg) = timeout_text(s);
                    s.time_out(reason, msg, s.stage);
                }
            }
        }
        if p.deadline <= now {
            // Past its own deadline a promotion gets its verdict, whatever is missing; the
            // first stage never seen is where it diverged.
            if !verdict_due(p) {
                let (stage, reason) = if p.sources.is_empty() {
                    (Stage::Source, "RevisionNotFound")
                } else {
                    (Stage::Reconcile, "ReconcileNotStarted")
                };
                let deadline = p.deadline;
                let mut s = placeholder(p, stage, cluster, p.start, deadline);
                s.time_out(
                    reason,
                    format!(
                        "no {} observed within the promotion deadline ({})",
                        stage.as_str(),
                        fmt_dur(d.promotion)
                    ),
                    stage,
                );
                if stage == Stage::Source {
                    p.sources.push(s);
                } else {
                    p.reconciles.push(Reconcile {
                        revision: String::new(),
                        span: s,
                        apply: None,
                        seen: true,
                    });
                }
            }
            self.verdict(id, out);
            return;
        }
        if p.spans().any(StageSpan::is_open) {
            return;
        }
        let Some(last) = p.spans().filter_map(|s| s.end).max() else {
            return;
        };
        if verdict_due(p) && last + d.settle <= now {
            self.verdict(id, out);
        }
    }

    fn supersede(&mut self, old: &str, newer: &Promotion, at: Timestamp, out: &mut Vec<Output>) {
        let Some(p) = self.open.get_mut(old) else {
            return;
        };
        // A promotion that already failed, or whose work is all done, reaches its own verdict:
        // a newer one does not hide what happened to it.
        let failed = p.spans().any(|s| s.result.failure().is_some());
        let done = p.spans().next().is_some() && !p.spans().any(StageSpan::is_open);
        if failed || done {
            return;
        }
        let msg = format!("superseded by promotion {}", newer.id);
        for s in p.spans_mut() {
            if s.is_open() {
                s.finish(at.max(s.start), StageResult::Superseded, msg.clone());
            }
        }
        p.superseded_by = Some((newer.id.clone(), newer.trace_id, newer.root));
        p.superseded_at = Some(at);
        self.verdict(old, out);
    }

    // ---- verdict ----------------------------------------------------------------------------

    fn verdict(&mut self, id: &str, out: &mut Vec<Output>) {
        let Some(mut p) = self.open.remove(id) else {
            return;
        };
        // Events land on the span of the object they are about, within its window.
        for s in p.spans_mut() {
            let (Some(obj), Some(end)) = (s.object.clone(), s.end) else {
                continue;
            };
            let Some(buf) = self.events.get(&obj) else {
                continue;
            };
            let rev = s.attrs.get_str(attr::FLUX_REVISION).map(str::to_string);
            for e in buf {
                let in_window = e.record.time + EVENT_WINDOW_SLACK >= s.start
                    && e.record.time <= end + EVENT_WINDOW_SLACK;
                let same_rev = match (&e.revision, &rev) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if in_window
                    && same_rev
                    && !matches!(s.stage, Stage::Apply | Stage::Trigger | Stage::Traffic)
                {
                    s.push_event(e.record.clone());
                }
            }
            s.events.sort_by_key(|e| e.time);
        }
        // The changes each apply made, as the controller reported them.
        for r in &mut p.reconciles {
            let Some(obj) = r.span.object.as_ref() else {
                continue;
            };
            let changes = self
                .reconcilers
                .get(obj)
                .and_then(|st| st.changes.iter().find(|(rev, _)| *rev == r.revision))
                .map(|(_, c)| c.clone());
            if let (Some(a), Some(c)) = (r.apply.as_mut(), changes) {
                a.attrs.set(attr::DELIVERY_APPLY_CHANGED, c);
            }
        }
        // A reconcile that failed before applying anything has no apply span.
        for r in &mut p.reconciles {
            if r.span
                .result
                .failure()
                .is_some_and(|f| f.diverges_at == Stage::Reconcile)
                && r.apply.as_ref().is_some_and(|a| {
                    a.result.failure().is_some()
                        || a.result == StageResult::Superseded
                        || a.is_open()
                })
            {
                r.apply = None;
            }
        }
        let divergence = divergence(&p, &self.events);
        let outcome = if p.superseded_by.is_some() {
            Outcome::Superseded
        } else if let Some((_, timed_out)) = &divergence {
            if *timed_out {
                Outcome::TimedOut
            } else {
                Outcome::Failed
            }
        } else if !p.reconciles.is_empty()
            && p.reconciles
                .iter()
                .all(|r| r.span.result == StageResult::NoChange)
            && p.rollouts.is_empty()
        {
            Outcome::NoChange
        } else {
            Outcome::Succeeded
        };
        let divergence = divergence.map(|(d, _)| d);
        let start = p
            .spans()
            .map(|s| s.start)
            .min()
            .unwrap_or(p.start)
            .min(p.start);
        let end = p
            .spans()
            .filter_map(|s| s.end)
            .chain(p.superseded_at)
            .max()
            .unwrap_or(p.start)
            .max(start);
        let cluster = self.cfg.cluster.clone();

        let mut stage_spans: Vec<&StageSpan> = p.spans().collect();
        stage_spans.sort_by(|a, b| {
            (a.stage, a.start, &a.object, a.span_id).cmp(&(b.stage, b.start, &b.object, b.span_id))
        });
        for s in &stage_spans {
            out.push(Output::Span(stage_record(&p, s, &cluster)));
        }
        out.push(Output::Span(root_record(
            &p,
            start,
            end,
            outcome,
            divergence.as_ref(),
            &cluster,
        )));
        let story = build_story(&p, &stage_spans, start, end, outcome, divergence, &cluster);
        out.push(Output::Story(Box::new(story)));

        if let Some(t) = &p.target {
            if self.targets.get(t).is_some_and(|x| x == id) {
                self.targets.remove(t);
            }
        }
        if let Some(repo) = p
            .report
            .as_ref()
            .and_then(|r| r.artifact.as_ref())
            .and_then(|a| a.repository.as_ref())
        {
            if let Some(ids) = self.oci_repos.get_mut(repo) {
                ids.retain(|x| x != id);
                if ids.is_empty() {
                    self.oci_repos.remove(repo);
                }
            }
        }
        for dep in p.rollouts.iter().filter_map(|s| s.object.as_ref()) {
            if let Some(Rollout { owner, .. }) = self
                .deployments
                .get_mut(dep)
                .and_then(|d| d.rollout.as_mut())
            {
                if matches!(owner, RolloutOwner::Promotion(x) if x == id) {
                    *owner = RolloutOwner::Done;
                }
            }
        }
        self.finished.insert(id.to_string(), p.keys);
        self.finished_order.push_back(id.to_string());
        while self.finished_order.len() > self.cfg.retain_finished {
            if let Some(old) = self.finished_order.pop_front() {
                if let Some(keys) = self.finished.remove(&old) {
                    for k in keys {
                        if self.keys.get(&k).is_some_and(|x| *x == old) {
                            self.keys.remove(&k);
                        }
                    }
                }
            }
        }
    }
}

// ---- helpers ------------------------------------------------------------------------------

fn merge_report(p: &mut Promotion, r: PromotionReport) {
    let cur = p.report.get_or_insert_with(|| PromotionReport {
        id: r.id.clone(),
        environment: r.environment.clone(),
        ..Default::default()
    });
    cur.revision = cur.revision.take().or(r.revision);
    cur.app = cur.app.take().or(r.app);
    cur.actor = cur.actor.take().or(r.actor);
    cur.pipeline = cur.pipeline.take().or(r.pipeline);
    cur.time = cur.time.or(r.time);
    cur.commit_time = cur.commit_time.or(r.commit_time);
    cur.artifact = match (cur.artifact.take(), r.artifact) {
        (Some(mut a), Some(b)) => {
            a.repository = a.repository.or(b.repository);
            a.tag = a.tag.or(b.tag);
            a.digest = a.digest.or(b.digest);
            Some(a)
        }
        (a, b) => a.or(b),
    };
    // The trace id and the CI parent were fixed when the promotion opened: a later
    // traceparent cannot move spans already derived to another trace.
    if p.commit.is_none() {
        p.commit = p
            .report
            .as_ref()
            .and_then(|r| r.revision.as_deref())
            .and_then(revision::commit_sha)
            .map(str::to_string);
    }
    if p.digest.is_none() {
        p.digest = p
            .report
            .as_ref()
            .and_then(|r| r.artifact.as_ref())
            .and_then(|a| a.digest.clone());
    }
    p.expect_source = true;
    if p.target.is_none() {
        p.target = p.report.as_ref().and_then(target_key);
    }
}

fn report_keys(r: Option<&PromotionReport>) -> Vec<String> {
    let Some(r) = r else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    let revs = r
        .revision
        .iter()
        .chain(r.artifact.as_ref().and_then(|a| a.digest.as_ref()));
    for rev in revs {
        let hex = revision::commit_sha(rev).or_else(|| revision::digest_hex(rev));
        if let Some(h) = hex {
            keys.extend(revision::promotion_keys(h));
        }
    }
    keys
}

fn target_key(r: &PromotionReport) -> Option<String> {
    let what = r
        .app
        .clone()
        .or_else(|| r.artifact.as_ref().and_then(|a| a.repository.clone()))?;
    Some(format!("{}\u{0}{}", r.environment, what))
}

fn reindex(
    index: &mut HashMap<String, BTreeSet<ObjectRef>>,
    object: &ObjectRef,
    old: Option<&str>,
    new: Option<&str>,
) {
    for k in old.map(revision::lookup_keys).unwrap_or_default() {
        if let Some(set) = index.get_mut(&k) {
            set.remove(object);
            if set.is_empty() {
                index.remove(&k);
            }
        }
    }
    for k in new.map(revision::lookup_keys).unwrap_or_default() {
        index.entry(k).or_default().insert(object.clone());
    }
}

/// Follows a reconcile request on one object: requested when a new
/// `reconcile.fluxcd.io/requestedAt` value appears, handled when the controller started working
/// on it (its `Reconciling`/`Ready=Unknown` transition) or, failing that, when
/// `status.lastHandledReconcileAt` shows the same string.
fn update_trigger(
    draft: &mut Option<TriggerDraft>,
    requested: &Option<String>,
    handled: &Option<String>,
    conditions: &[crate::model::Condition],
    at: Timestamp,
) {
    if let Some(value) = requested {
        let is_new = draft.as_ref().is_none_or(|d| d.value != *value);
        // A request that was already handled when first seen is history, not a trigger.
        if is_new && handled.as_deref() != Some(value.as_str()) {
            *draft = Some(TriggerDraft {
                value: value.clone(),
                start: at,
                working: None,
                handled: None,
                claimed: false,
            });
        }
    }
    let Some(d) = draft.as_mut() else {
        return;
    };
    if d.handled.is_some() {
        return;
    }
    if d.working.is_none() {
        let busy = condition(conditions, "Reconciling")
            .filter(|c| c.status == CondStatus::True)
            .or_else(|| condition(conditions, "Ready").filter(|c| c.status == CondStatus::Unknown));
        d.working = busy
            .and_then(|c| c.last_transition)
            .filter(|t| *t >= d.start && *t <= at);
    }
    if handled.as_deref() == Some(d.value.as_str()) {
        d.handled = Some(d.working.unwrap_or(at).min(at));
    }
}

fn claim_trigger(
    p: &mut Promotion,
    draft: Option<&mut TriggerDraft>,
    object: &ObjectRef,
    uid: &str,
    cluster: &str,
    d: &Deadlines,
    via: Option<&ReceiverObs>,
) {
    let Some(draft) = draft else {
        return;
    };
    if let Some(t) = p.trigger.as_mut() {
        if t.object.as_ref() == Some(object)
            && t.attrs.get_str(attr::DELIVERY_TRIGGER_REQUESTED_AT) == Some(draft.value.as_str())
        {
            if let Some(h) = draft.handled {
                t.finish(h, StageResult::Succeeded, "reconcile request handled");
            }
        }
        return;
    }
    if draft.claimed || draft.start + CLAIM_SLACK < p.start {
        return;
    }
    draft.claimed = true;
    let mut s = StageSpan::new(
        Stage::Trigger,
        span_id_for(&p.id, Stage::Trigger, cluster, uid, &draft.value),
        p.root,
        Some(object.clone()),
        draft.start,
        draft.start + d.trigger,
    );
    s.set_object_attrs(object);
    s.attrs
        .set(attr::DELIVERY_TRIGGER_REQUESTED_AT, draft.value.clone());
    if let Some(r) = via {
        s.attrs.set(attr::FLUX_RECEIVER_NAME, r.object.name.clone());
        s.attrs
            .set(attr::FLUX_RECEIVER_NAMESPACE, r.object.namespace.clone());
    }
    if let Some(h) = draft.handled {
        s.finish(h, StageResult::Succeeded, "reconcile request handled");
    }
    p.trigger = Some(s);
}

/// Nothing more is expected once a stage failed, or once the revision was applied (or, for a
/// promotion no report announced, once its rollouts ended): only the settle period remains.
fn verdict_due(p: &Promotion) -> bool {
    let failed = p.spans().any(|s| s.result.failure().is_some());
    let delivered = !p.reconciles.is_empty() || (!p.expect_source && !p.rollouts.is_empty());
    failed || delivered || p.superseded_by.is_some()
}

/// A 64-bit identity for de-duplication (collisions only make a repeat look new or a new one
/// look repeated, once in 2^64).
fn identity_hash(parts: &[&str]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

fn sources_done(p: &Promotion) -> Option<Timestamp> {
    if p.sources.is_empty()
        || p.sources
            .iter()
            .any(|s| s.result != StageResult::Succeeded && s.result != StageResult::NoChange)
    {
        return None;
    }
    p.sources.iter().filter_map(|s| s.end).max()
}

fn placeholder(
    p: &Promotion,
    stage: Stage,
    cluster: &str,
    start: Timestamp,
    deadline: Timestamp,
) -> StageSpan {
    StageSpan::new(
        stage,
        span_id_for(&p.id, stage, cluster, "", "missing"),
        p.root,
        None,
        start,
        deadline,
    )
}

fn timeout_text(s: &StageSpan) -> (&'static str, String) {
    let what = s
        .object
        .as_ref()
        .map_or_else(String::new, |o| format!(" on {o}"));
    let took = fmt_dur(s.deadline.duration_since(s.start));
    match s.stage {
        Stage::Trigger => (
            "TriggerNotHandled",
            format!("reconcile request was not handled within {took}{what}"),
        ),
        Stage::Source => (
            "SourceTimeout",
            format!("revision was not stored within {took}{what}"),
        ),
        Stage::Reconcile => (
            "ReconcileTimeout",
            format!("reconcile did not finish within {took}{what}"),
        ),
        Stage::Apply => (
            "ApplyTimeout",
            format!("apply did not finish within {took}{what}"),
        ),
        Stage::Rollout => (
            "RolloutTimeout",
            format!("rollout did not complete within {took}{what}"),
        ),
        _ => ("Timeout", format!("did not finish within {took}{what}")),
    }
}

fn fmt_dur(d: SignedDuration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url
            .rsplit_once('@')
            .filter(|(u, _)| !u.contains('/'))
            .map_or(url.to_string(), |(_, h)| h.to_string()),
    }
}

fn source_attrs(a: &mut Attributes, obs: &SourceObs) {
    if let Some(rev) = &obs.revision {
        a.set(attr::FLUX_REVISION, rev.clone());
        if let Some(h) = revision::digest_hex(rev) {
            a.set(attr::OCI_MANIFEST_DIGEST, format!("sha256:{h}"));
        }
        if let Some(t) = revision::oci_tag(rev) {
            a.set(attr::DELIVERY_ARTIFACT_TAG, t.to_string());
        }
    }
    let commit = obs
        .origin_revision
        .iter()
        .chain(obs.revision.iter())
        .find_map(|r| revision::commit_sha(r));
    a.set_opt(attr::VCS_REF_HEAD_REVISION, commit.map(str::to_string));
    if let Some(url) = &obs.url {
        match url.strip_prefix("oci://") {
            Some(repo) => a.set(attr::DELIVERY_ARTIFACT_REPOSITORY, strip_credentials(repo)),
            None => a.set(attr::VCS_REPOSITORY_URL_FULL, strip_credentials(url)),
        }
    }
}

fn image_attrs(a: &mut Attributes, images: &[String]) {
    let Some(image) = images.first() else {
        return;
    };
    let name = image.split_once('@').map_or(image.as_str(), |(n, _)| n);
    // A tag follows the last ':' after the last '/' (a registry port is not a tag).
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
        None => (name, None),
    };
    a.set(attr::CONTAINER_IMAGE_NAME, name.to_string());
    if let Some(t) = tag {
        a.set(attr::CONTAINER_IMAGE_TAGS, vec![t.to_string()]);
    }
    // A digest-pinned reference names its repo digest (`repo@sha256:…`).
    if let Some((_, digest)) = image
        .split_once('@')
        .filter(|(_, d)| d.starts_with("sha256:"))
    {
        a.set(
            attr::CONTAINER_IMAGE_REPO_DIGESTS,
            vec![format!("{name}@{digest}")],
        );
    }
}

/// The tag of an image reference (`repo:tag`, `repo:tag@sha256:…`), if any.
fn image_tag(image: &str) -> Option<&str> {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    name[slash..].rfind(':').map(|i| &name[slash + i + 1..])
}

fn replicaset_in(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("ReplicaSet \"")?;
    rest.split_once('"').map(|(n, _)| n)
}

/// When a rollout no promotion claimed becomes its own trace: at its deadline while open, a
/// settle period after it ended otherwise.
fn unclaimed_due(s: &StageSpan, settle: SignedDuration) -> Timestamp {
    match s.end {
        Some(end) if !s.is_open() => end + settle,
        _ => s.deadline,
    }
}

/// `Kind/namespace/name configured|created|deleted` lines of a kustomize-controller
/// `Progressing` event; unchanged objects are left out.
fn changed_objects(message: &str) -> Vec<String> {
    message
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.split_once(' ').is_some_and(|(obj, action)| {
                obj.contains('/') && matches!(action, "configured" | "created" | "deleted")
            })
        })
        .map(str::to_string)
        .collect()
}

fn classify(kind: Kind, reason: &str, message: &str) -> Stage {
    let waited = message.contains("timed out waiting for the condition")
        || message.contains("context deadline exceeded")
        || message.contains("resources not ready");
    match (kind, reason) {
        (Kind::Kustomization, "HealthCheckFailed") => Stage::Rollout,
        (Kind::Kustomization, "ReconciliationFailed" | "PruneFailed") => Stage::Apply,
        (Kind::HelmRelease, "TestFailed") => Stage::Rollout,
        (
            Kind::HelmRelease,
            "InstallFailed" | "UpgradeFailed" | "RollbackFailed" | "UninstallFailed"
            | "RollbackSucceeded" | "UninstallSucceeded" | "RemediationFailed",
        ) => {
            if waited {
                Stage::Rollout
            } else {
                Stage::Apply
            }
        }
        _ => Stage::Reconcile,
    }
}

fn fail_reconcile(r: &mut Reconcile, kind: Kind, reason: &str, message: &str, end: Timestamp) {
    let stage = classify(kind, reason, message);
    let failure = Failure {
        reason: reason.to_string(),
        message: message.to_string(),
        diverges_at: stage,
    };
    if let Some(a) = r.apply.as_mut() {
        match stage {
            Stage::Apply => a.finish(
                end,
                StageResult::Failed(failure.clone()),
                format!("{reason}: {message}"),
            ),
            Stage::Rollout => a.finish(end, StageResult::Succeeded, "applied"),
            _ => a.finish(end, StageResult::Failed(failure.clone()), "not applied"),
        }
    }
    r.span.finish(
        end,
        StageResult::Failed(failure),
        format!("{reason}: {message}"),
    );
}

fn evaluate_kustomization(r: &mut Reconcile, obs: &ReconcilerObs, at: Timestamp, first: bool) {
    if !r.span.is_open() {
        return;
    }
    let rev = r.revision.clone();
    if obs.last_attempted.as_deref() != Some(rev.as_str()) {
        return;
    }
    let healthy = condition(&obs.conditions, "Healthy");
    let reconciling = condition(&obs.conditions, "Reconciling");
    if let Some(a) = r.apply.as_mut().filter(|a| a.is_open()) {
        let checking = reconciling.is_some_and(|c| c.message.starts_with("Running health checks"))
            || healthy.is_some_and(|c| c.status == CondStatus::Unknown);
        if checking {
            let t = healthy
                .filter(|c| c.status == CondStatus::Unknown)
                .and_then(|c| c.last_transition)
                .filter(|t| *t >= a.start)
                .unwrap_or(at);
            a.finish(
                t,
                StageResult::Succeeded,
                format!("applied revision {rev}; health checks started"),
            );
        }
    }
    let Some(ready) = condition(&obs.conditions, "Ready") else {
        return;
    };
    let end = ready.last_transition.unwrap_or(at).max(r.span.start);
    let fresh = !first
        || ready
            .last_transition
            .is_none_or(|t| t + CLAIM_SLACK >= r.span.start);
    match ready.status {
        CondStatus::True if obs.last_applied.as_deref() == Some(rev.as_str()) && fresh => {
            if let Some(a) = r.apply.as_mut() {
                a.finish(
                    end,
                    StageResult::Succeeded,
                    format!("applied revision {rev}"),
                );
            }
            r.span
                .finish(end, StageResult::Succeeded, ready.message.clone());
        }
        CondStatus::False if fresh => {
            fail_reconcile(r, Kind::Kustomization, &ready.reason, &ready.message, end);
        }
        _ => {}
    }
}

fn evaluate_helm(r: &mut Reconcile, obs: &ReconcilerObs, at: Timestamp, first: bool) {
    if !r.span.is_open() {
        return;
    }
    let rev = r.revision.clone();
    if obs.last_attempted.as_deref() != Some(rev.as_str()) {
        return;
    }
    let start = r.span.start;
    let fresh = |c: &crate::model::Condition| {
        !first || c.last_transition.is_none_or(|t| t + CLAIM_SLACK >= start)
    };
    if let Some(rel) = condition(&obs.conditions, "Released").filter(|c| fresh(c)) {
        let end = rel.last_transition.unwrap_or(at).max(start);
        if let Some(a) = r.apply.as_mut() {
            match rel.status {
                CondStatus::True => a.finish(end, StageResult::Succeeded, rel.message.clone()),
                CondStatus::False
                    if classify(Kind::HelmRelease, &rel.reason, &rel.message) == Stage::Apply =>
                {
                    a.finish(
                        end,
                        StageResult::Failed(Failure {
                            reason: rel.reason.clone(),
                            message: rel.message.clone(),
                            diverges_at: Stage::Apply,
                        }),
                        format!("{}: {}", rel.reason, rel.message),
                    )
                }
                _ => {}
            }
        }
    }
    let Some(ready) = condition(&obs.conditions, "Ready").filter(|c| fresh(c)) else {
        return;
    };
    let end = ready.last_transition.unwrap_or(at).max(start);
    match ready.status {
        CondStatus::True => {
            if let Some(a) = r.apply.as_mut() {
                a.finish(end, StageResult::Succeeded, format!("released {rev}"));
            }
            r.span
                .finish(end, StageResult::Succeeded, ready.message.clone());
        }
        CondStatus::False => {
            fail_reconcile(r, Kind::HelmRelease, &ready.reason, &ready.message, end)
        }
        CondStatus::Unknown => {}
    }
}

fn end_superseded_rollout(old: Rollout, at: Timestamp) -> Option<(String, i64)> {
    match old.owner {
        RolloutOwner::Promotion(pid) => Some((pid, old.generation)),
        RolloutOwner::Unclaimed(mut s) => {
            s.finish(at, StageResult::Superseded, "superseded by a newer rollout");
            None
        }
        RolloutOwner::Done => None,
    }
}

/// Pod failure reasons, most telling first.
const POD_CAUSES: [&str; 9] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "CrashLoopBackOff",
    "OOMKilled",
    "CreateContainerConfigError",
    "InvalidImageName",
    "FailedScheduling",
    "FailedMount",
    "FailedCreate",
];

fn divergence(
    p: &Promotion,
    events: &HashMap<ObjectRef, VecDeque<BufferedEvent>>,
) -> Option<(Divergence, bool)> {
    let candidates = p.spans().filter_map(|s| s.result.failure().map(|f| (s, f)));
    // The first stage in path order; within it, prefer the span of that stage itself (the
    // rollout over the reconcile that waited for it), then the earliest.
    let (span, failure) = candidates
        .min_by_key(|(s, f)| (f.diverges_at, s.stage != f.diverges_at, s.end, s.span_id))?;
    let timed_out = matches!(span.result, StageResult::TimedOut(_));
    let mut evidence = Vec::new();
    let mut cause = None;
    if failure.diverges_at == Stage::Rollout {
        // The reconcile that waited on the rollout, and the Pod events that explain it.
        for s in p.spans().filter(|s| s.span_id != span.span_id) {
            if let Some(f) = s
                .result
                .failure()
                .filter(|f| f.diverges_at == Stage::Rollout)
            {
                let obj = s
                    .object
                    .as_ref()
                    .map_or_else(String::new, |o| format!("{o}: "));
                evidence.push(format!("{obj}{}: {}", f.reason, f.message));
            }
        }
        let mut warnings: Vec<(usize, &SpanEventRecord)> = Vec::new();
        for s in p.rollouts.iter() {
            let Some(obj) = &s.object else { continue };
            let end = s.end.unwrap_or(s.deadline);
            for e in events.get(obj).into_iter().flatten() {
                if !e.warning
                    || e.record.time + EVENT_WINDOW_SLACK < s.start
                    || e.record.time > end + EVENT_WINDOW_SLACK
                {
                    continue;
                }
                let text = format!(
                    "{} {}",
                    e.record.name,
                    e.record
                        .attributes
                        .get_str(attr::EVENT_MESSAGE)
                        .unwrap_or_default()
                );
                let rank = POD_CAUSES
                    .iter()
                    .position(|c| text.contains(c))
                    .unwrap_or(POD_CAUSES.len());
                warnings.push((rank, &e.record));
            }
        }
        warnings.sort_by_key(|(rank, e)| (*rank, e.time));
        if let Some((rank, _)) = warnings.first().filter(|(r, _)| *r < POD_CAUSES.len()) {
            cause = Some(POD_CAUSES[*rank].to_string());
        }
        let mut seen = HashSet::new();
        for (_, e) in warnings {
            let msg = e
                .attributes
                .get_str(attr::EVENT_MESSAGE)
                .unwrap_or_default();
            let obj = e.attributes.get_str(attr::EVENT_OBJECT).unwrap_or_default();
            if seen.insert(msg.to_string()) && seen.len() <= 3 {
                evidence.push(format!("{obj} {}: {msg}", e.name));
            }
        }
    } else {
        for e in &span.events {
            let repeats =
                e.attributes.get_str(attr::EVENT_MESSAGE) == Some(failure.message.as_str());
            if e.attributes.get_str(attr::EVENT_TYPE) == Some("Warning")
                && !repeats
                && evidence.len() < 3
            {
                evidence.push(format!(
                    "{} {}: {}",
                    e.attributes.get_str(attr::EVENT_OBJECT).unwrap_or_default(),
                    e.name,
                    e.attributes
                        .get_str(attr::EVENT_MESSAGE)
                        .unwrap_or_default()
                ));
            }
        }
    }
    Some((
        Divergence {
            stage: failure.diverges_at,
            reason: failure.reason.clone(),
            message: failure.message.clone(),
            cause,
            evidence,
            span_id: span.span_id,
        },
        timed_out,
    ))
}

fn service_of(s: &StageSpan) -> &'static str {
    match s.stage {
        Stage::Promotion => SERVICE_FLUXTRACE,
        Stage::Trigger => SERVICE_NOTIFICATION,
        Stage::Source => SERVICE_SOURCE,
        Stage::Reconcile | Stage::Apply => match s.object.as_ref().map(|o| o.kind) {
            Some(Kind::HelmRelease) => SERVICE_HELM,
            _ => SERVICE_KUSTOMIZE,
        },
        Stage::Rollout => SERVICE_KUBE,
        Stage::Traffic => "fluxtrace-probe",
    }
}

fn common_attrs(a: &mut Attributes, p: &Promotion, stage: Stage, cluster: &str) {
    a.set(attr::DELIVERY_PROMOTION_ID, p.id.clone());
    a.set(attr::DELIVERY_STAGE, stage.as_str());
    a.set(attr::DELIVERY_PLANE, stage.plane());
    a.set(attr::K8S_CLUSTER_NAME, cluster.to_string());
    if let Some(r) = &p.report {
        a.set(attr::DEPLOYMENT_ENVIRONMENT_NAME, r.environment.clone());
    }
    if p.traceability == "missing" {
        a.set(attr::DELIVERY_TRACEABILITY, "missing");
    }
}

fn stage_record(p: &Promotion, s: &StageSpan, cluster: &str) -> SpanRecord {
    let mut attributes = Attributes::default();
    common_attrs(&mut attributes, p, s.stage, cluster);
    for (k, v) in &s.attrs.0 {
        attributes.set(k, v.clone());
    }
    // CI/CD semantic conventions: each stage is a task of the promotion's pipeline run.
    attributes.set(attr::CICD_PIPELINE_TASK_NAME, s.stage.span_name());
    attributes.set(
        attr::CICD_PIPELINE_TASK_TYPE,
        if s.stage == Stage::Traffic {
            "test"
        } else {
            "deploy"
        },
    );
    let result = match s.result {
        StageResult::Open => None,
        StageResult::Succeeded => Some("success"),
        StageResult::NoChange => Some("skip"),
        StageResult::Failed(_) => Some("failure"),
        StageResult::TimedOut(_) => Some("timeout"),
        StageResult::Superseded => Some("cancellation"),
    };
    attributes.set_opt(attr::CICD_PIPELINE_TASK_RUN_RESULT, result);
    let vcs = vcs_attrs(&s.attrs);
    for (k, v) in vcs.0 {
        attributes.set(k, v);
    }
    let status = match &s.result {
        StageResult::Failed(f) | StageResult::TimedOut(f) => {
            attributes.set(attr::ERROR_TYPE, f.reason.clone());
            SpanStatus::Error {
                description: format!("{}: {}", f.reason, f.message),
            }
        }
        StageResult::Succeeded | StageResult::NoChange => SpanStatus::Ok,
        StageResult::Superseded | StageResult::Open => SpanStatus::Unset,
    };
    SpanRecord {
        trace_id: p.trace_id,
        span_id: s.span_id,
        parent_span_id: Some(s.parent),
        service: service_of(s),
        name: s.stage.span_name(),
        kind: SpanKind::Internal,
        start: s.start,
        end: s.end.unwrap_or(s.deadline).max(s.start),
        status,
        attributes,
        events: s.events.clone(),
        links: Vec::new(),
    }
}

fn root_record(
    p: &Promotion,
    start: Timestamp,
    end: Timestamp,
    outcome: Outcome,
    divergence: Option<&Divergence>,
    cluster: &str,
) -> SpanRecord {
    let mut a = Attributes::default();
    common_attrs(&mut a, p, Stage::Promotion, cluster);
    a.set(attr::DELIVERY_TRACEABILITY, p.traceability);
    // CI/CD and deployment semantic conventions: the promotion is a pipeline run that deploys.
    a.set_opt(attr::CICD_PIPELINE_RESULT, outcome.pipeline_result());
    a.set(attr::DEPLOYMENT_ID, p.id.clone());
    let target = p
        .reconciles
        .iter()
        .map(|r| &r.span)
        .chain(p.rollouts.iter())
        .find_map(|s| s.object.as_ref())
        .map(|o| o.name.clone());
    a.set_opt(
        attr::DEPLOYMENT_NAME,
        p.report.as_ref().and_then(|r| r.app.clone()).or(target),
    );
    a.set_opt(attr::DEPLOYMENT_STATUS, outcome.deployment_status());
    if let Some(r) = &p.report {
        a.set_opt(attr::DELIVERY_APP, r.app.clone());
        a.set_opt(attr::DELIVERY_PROMOTION_ACTOR, r.actor.clone());
        if let Some(pl) = &r.pipeline {
            a.set_opt(attr::CICD_PIPELINE_NAME, pl.name.clone());
            a.set_opt(attr::CICD_PIPELINE_RUN_ID, pl.run_id.clone());
            a.set_opt(
                attr::CICD_PIPELINE_RUN_URL_FULL,
                pl.url.as_deref().map(strip_credentials),
            );
        }
        if let Some(art) = &r.artifact {
            a.set_opt(attr::DELIVERY_ARTIFACT_REPOSITORY, art.repository.clone());
            a.set_opt(attr::DELIVERY_ARTIFACT_TAG, art.tag.clone());
        }
    }
    a.set_opt(attr::VCS_REF_HEAD_REVISION, p.commit.clone());
    // The Git repository and ref the promotion's source fetched, when one did.
    if let Some(source) = p
        .sources
        .iter()
        .find(|s| s.attrs.get(attr::VCS_REPOSITORY_URL_FULL).is_some())
    {
        let vcs = vcs_attrs(&source.attrs);
        for key in [attr::VCS_REF_HEAD_NAME, attr::VCS_REPOSITORY_NAME] {
            a.set_opt(key, vcs.get(key).cloned());
        }
        a.set_opt(
            attr::VCS_REPOSITORY_URL_FULL,
            source.attrs.get(attr::VCS_REPOSITORY_URL_FULL).cloned(),
        );
    }
    a.set_opt(attr::OCI_MANIFEST_DIGEST, p.digest.clone());
    let status = match divergence {
        Some(d) => {
            a.set(attr::DELIVERY_DIVERGENCE_STAGE, d.stage.as_str());
            a.set(attr::DELIVERY_DIVERGENCE_MESSAGE, d.message.clone());
            a.set(attr::ERROR_TYPE, d.reason.clone());
            SpanStatus::Error {
                description: format!(
                    "diverged at {}: {}: {}",
                    d.stage.as_str(),
                    d.reason,
                    d.message
                ),
            }
        }
        None if outcome == Outcome::Superseded => SpanStatus::Unset,
        None => SpanStatus::Ok,
    };
    let mut links = Vec::new();
    if let Some((id, trace, span)) = &p.superseded_by {
        a.set(attr::DELIVERY_SUPERSEDED_BY, id.clone());
        let mut la = Attributes::default();
        la.set(attr::DELIVERY_PROMOTION_ID, id.clone());
        links.push(SpanLinkRecord {
            trace_id: *trace,
            span_id: *span,
            attributes: la,
        });
    }
    SpanRecord {
        trace_id: p.trace_id,
        span_id: p.root,
        parent_span_id: p.ci_parent,
        service: SERVICE_FLUXTRACE,
        name: Stage::Promotion.span_name(),
        kind: SpanKind::Server,
        start,
        end,
        status,
        attributes: a,
        events: Vec::new(),
        links,
    }
}

/// `vcs.ref.head.name` and `vcs.repository.name` implied by a Git source span's revision and URL.
fn vcs_attrs(source: &Attributes) -> Attributes {
    let mut a = Attributes::default();
    let Some(url) = source.get_str(attr::VCS_REPOSITORY_URL_FULL) else {
        return a;
    };
    a.set_opt(
        attr::VCS_REF_HEAD_NAME,
        source
            .get_str(attr::FLUX_REVISION)
            .and_then(revision::ref_name)
            .map(str::to_string),
    );
    a.set_opt(
        attr::VCS_REPOSITORY_NAME,
        revision::repository_name(url).map(str::to_string),
    );
    a
}

fn build_story(
    p: &Promotion,
    spans: &[&StageSpan],
    start: Timestamp,
    end: Timestamp,
    outcome: Outcome,
    divergence: Option<Divergence>,
    cluster: &str,
) -> Story {
    let report = p.report.as_ref();
    let promoted = match report {
        Some(r) => {
            let art = r.artifact.as_ref().map(|a| {
                let repo = a.repository.as_deref().unwrap_or("artifact");
                match &a.tag {
                    Some(t) => format!("{repo}:{t}"),
                    None => repo.to_string(),
                }
            });
            let rev = r
                .revision
                .clone()
                .or(r.artifact.as_ref().and_then(|a| a.digest.clone()));
            match (art, rev) {
                (Some(a), Some(v)) if !v.starts_with("sha256:") || a.contains(':') => {
                    format!("{a} ({v})")
                }
                (Some(a), _) => a,
                (None, Some(v)) => format!("revision {v}"),
                (None, None) => "unknown revision".into(),
            }
        }
        None => match (&p.commit, &p.digest) {
            (Some(c), _) => format!("revision {c}"),
            (None, Some(d)) => format!("artifact {d}"),
            (None, None) => p
                .rollouts
                .first()
                .and_then(|s| s.object.as_ref())
                .map_or_else(|| "unknown change".into(), |o| format!("a change to {o}")),
        },
    };
    let stages = spans
        .iter()
        .map(|s| {
            let failure = s.result.failure().map(|f| f.message.as_str());
            let mut events: Vec<String> = s
                .events
                .iter()
                .filter(|e| e.attributes.get_str(attr::EVENT_MESSAGE) != failure)
                .filter(|e| e.attributes.get_str(attr::EVENT_TYPE) == Some("Warning"))
                .chain(
                    s.events
                        .iter()
                        .filter(|e| e.attributes.get_str(attr::EVENT_TYPE) != Some("Warning")),
                )
                .map(|e| {
                    format!(
                        "{} {} {}: {}",
                        e.time,
                        e.attributes.get_str(attr::EVENT_OBJECT).unwrap_or_default(),
                        e.name,
                        e.attributes
                            .get_str(attr::EVENT_MESSAGE)
                            .unwrap_or_default()
                    )
                })
                .collect();
            events.dedup();
            StageStory {
                stage: s.stage,
                span_id: s.span_id,
                object: s.object.as_ref().map(ToString::to_string),
                outcome: s.result.outcome(),
                start: s.start,
                end: s.end.unwrap_or(s.deadline),
                summary: s.summary.clone(),
                events,
            }
        })
        .collect();
    Story {
        promotion_id: p.id.clone(),
        trace_id: p.trace_id,
        root_span_id: p.root,
        traceability: p.traceability,
        environment: report.map(|r| r.environment.clone()),
        app: report.and_then(|r| r.app.clone()),
        actor: report.and_then(|r| r.actor.clone()),
        pipeline: report.and_then(|r| r.pipeline.clone()),
        commit_time: report.and_then(|r| r.commit_time).or(p.artifact_created),
        promoted,
        resolved_digest: p.digest.clone(),
        cluster: cluster.to_string(),
        start,
        end,
        outcome,
        divergence,
        stages,
        superseded_by: p.superseded_by.as_ref().map(|(id, _, _)| id.clone()),
        trace_link: None,
    }
}

#[cfg(test)]
mod tests;
