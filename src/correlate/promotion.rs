//! One promotion while it is open: its report, ids, revisions, target and stage spans.
//!
//! Built by the registry when a report, annotation or event names a promotion; filled by the
//! stage modules; read by `verdict` and `render` when it ends.

use jiff::Timestamp;

use super::config::add;
use super::span::{Failure, StageResult, StageSpan};
use crate::model::{ObjectRef, PromotionReport};
use crate::revision;
pub use crate::story::Traceability;
use crate::trace::{span_id_for, trace_id_for, SpanId, Stage, TraceId, Traceparent};

/// A reconcile span with its apply child, for one reconciler and one revision.
#[derive(Clone)]
pub(super) struct Reconcile {
    pub span: StageSpan,
    pub apply: Option<StageSpan>,
    pub revision: String,
    /// For a reconciler joined through the Kustomization that changed its spec (a HelmRelease
    /// whose values changed in Git): the generation that change made, which the controller's
    /// conditions must speak for. `None` for one joined by its revision.
    pub generation: Option<i64>,
    /// A failed attempt the controller is retrying (a Kustomization's health check that timed
    /// out) and when it was reported: evidence, not the verdict, until the reconcile's
    /// deadline passes still failing or another stage of the promotion fails.
    pub retrying: Option<(Failure, Timestamp)>,
    /// First observation of this reconcile has been evaluated.
    pub seen: bool,
    /// Flux waits before it attempts the revision (a dependency or the source not ready).
    pub waiting: Option<Waiting>,
    /// When Flux attempted the revision after a wait (as seen live), and what it waited for:
    /// the apply began then.
    pub attempted: Option<(Timestamp, String)>,
}

/// A wait of Flux's before it attempts a revision: a `dependsOn` object not ready yet, or the
/// source not ready. Its time counts against the promotion's deadline, not the reconcile's.
#[derive(Clone)]
pub(super) struct Waiting {
    pub since: Timestamp,
    /// The controller's reason and message.
    pub reason: String,
    pub message: String,
    /// The reconcile's and its apply's deadlines when the wait began.
    deadlines: (Timestamp, Option<Timestamp>),
}

impl Reconcile {
    /// A reconcile of `revision` (or of the spec `generation` an apply made) with no verdict.
    pub fn new(
        span: StageSpan,
        apply: Option<StageSpan>,
        revision: String,
        generation: Option<i64>,
    ) -> Self {
        Reconcile {
            span,
            apply,
            revision,
            generation,
            retrying: None,
            seen: true,
            waiting: None,
            attempted: None,
        }
    }

    /// Flux waits (since `since`, for `reason`): the deadlines stop until `hold` (the
    /// promotion's deadline) while it does.
    pub fn wait(&mut self, since: Timestamp, hold: Timestamp, reason: &str, message: &str) {
        if !self.span.is_open() {
            return;
        }
        if let Some(w) = self.waiting.as_mut() {
            w.reason = reason.to_string();
            w.message = message.to_string();
            return;
        }
        let since = since.max(self.span.start);
        self.waiting = Some(Waiting {
            since,
            reason: reason.to_string(),
            message: message.to_string(),
            deadlines: (self.span.deadline, self.apply.as_ref().map(|a| a.deadline)),
        });
        self.span.deadline = self.span.deadline.max(hold);
        if let Some(a) = self.apply.as_mut().filter(|a| a.is_open()) {
            a.deadline = a.deadline.max(hold);
        }
    }

    /// The wait ended at `at`: the deadlines move on by its length.
    pub fn resume(&mut self, at: Timestamp) {
        let Some(w) = self.waiting.take() else {
            return;
        };
        let waited = at.duration_since(w.since).max(jiff::SignedDuration::ZERO);
        if self.span.is_open() {
            self.span.deadline = add(w.deadlines.0, waited);
        }
        // The apply began when Flux attempted the revision, after the wait.
        self.attempted = Some((at, format!("{}: {}", w.reason, w.message)));
        if let (Some(a), Some(d)) = (self.apply.as_mut(), w.deadlines.1) {
            if a.is_open() {
                a.deadline = add(d, waited);
                a.start = a.start.max(at);
            }
        }
    }
}

/// Who a newer promotion that superseded this one is.
#[derive(Clone)]
pub(super) struct Successor {
    pub id: String,
    pub trace_id: TraceId,
    pub root: SpanId,
    /// When it took over.
    pub at: Timestamp,
}

#[derive(Clone)]
pub(super) struct Promotion {
    pub id: String,
    pub report: Option<PromotionReport>,
    pub traceability: Traceability,
    pub trace_id: TraceId,
    pub ci_parent: Option<SpanId>,
    pub root: SpanId,
    pub start: Timestamp,
    pub deadline: Timestamp,
    /// A report named a revision, so a source must deliver it.
    pub expect_source: bool,
    pub commit: Option<String>,
    pub digest: Option<String>,
    /// `org.opencontainers.image.created` of the OCI artifact a source fetched for it.
    pub artifact_created: Option<Timestamp>,
    /// Revision keys (commit, digest, 12-hex prefix) indexed for this promotion.
    pub keys: Vec<String>,
    /// Environment and app (or artifact repository): a newer report for the same target
    /// supersedes this one.
    pub target: Option<String>,
    /// Flux image automation: the policy's selection up to the pushed commit.
    pub image: Option<StageSpan>,
    /// Reconcile requests the promotion's objects handled, one per object (`flux reconcile
    /// kustomization --with-source` requests the source, then the Kustomization).
    pub triggers: Vec<StageSpan>,
    pub sources: Vec<StageSpan>,
    pub reconciles: Vec<Reconcile>,
    pub rollouts: Vec<StageSpan>,
    pub traffic: Vec<StageSpan>,
    pub superseded_by: Option<Successor>,
    /// The newer revision that delivered the reported commit, which a push overtook before the
    /// source fetched it (`main@sha1:<newer>`).
    pub delivered_as: Option<String>,
    /// Image automation: the GitRepository it commits to and the branch it pushed to.
    pub pushed_to: Option<(ObjectRef, String)>,
    /// The pushed branch no GitRepository follows: the promotion was skipped.
    pub unfollowed: Option<String>,
    /// Ids this promotion had before a report took it over (an unreported promotion keeps
    /// its trace under the report's id): probe results sent under them still land.
    pub aliases: Vec<String>,
}

impl Promotion {
    /// A promotion with no stage yet. Ids are derived: the trace id from the promotion id (or
    /// the CI traceparent), the root span id from the promotion id and cluster.
    pub fn new(
        id: String,
        start: Timestamp,
        report: Option<PromotionReport>,
        traceability: Traceability,
        cluster: &str,
        deadline: jiff::SignedDuration,
    ) -> Self {
        let tp = report
            .as_ref()
            .and_then(|r| r.traceparent.as_deref())
            .and_then(|t| Traceparent::parse(t).ok());
        let trace_id = tp.map_or_else(|| trace_id_for(&id), |t| t.trace_id);
        let root = span_id_for(&id, Stage::Promotion, cluster, "", "");
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
            deadline: add(start, deadline),
            commit,
            digest,
            artifact_created: None,
            keys: Vec::new(),
            image: None,
            triggers: Vec::new(),
            sources: Vec::new(),
            reconciles: Vec::new(),
            rollouts: Vec::new(),
            traffic: Vec::new(),
            superseded_by: None,
            delivered_as: None,
            pushed_to: None,
            unfollowed: None,
            aliases: Vec::new(),
        }
    }

    /// Takes another promotion id: the trace id, the root and every span id are derived again
    /// from it, as if the promotion had had that id from the start (parents follow).
    pub fn rekey(&mut self, id: String, tp: Option<Traceparent>, cluster: &str) {
        let root = span_id_for(&id, Stage::Promotion, cluster, "", "");
        let mut new_ids = vec![(self.root, root)];
        new_ids.extend(self.spans().map(|s| (s.span_id, s.id_in(&id, cluster))));
        let moved = |old: SpanId| {
            new_ids
                .iter()
                .find(|(o, _)| *o == old)
                .map_or(old, |(_, n)| *n)
        };
        let spans: Vec<&mut StageSpan> = self.spans_mut().collect();
        for s in spans {
            s.span_id = moved(s.span_id);
            s.parent = moved(s.parent);
        }
        self.root = root;
        self.trace_id = tp.map_or_else(|| trace_id_for(&id), |t| t.trace_id);
        self.ci_parent = tp.map(|t| t.span_id);
        self.aliases.push(std::mem::replace(&mut self.id, id));
    }

    pub fn spans(&self) -> impl Iterator<Item = &StageSpan> {
        self.image
            .iter()
            .chain(self.triggers.iter())
            .chain(self.sources.iter())
            .chain(
                self.reconciles
                    .iter()
                    .flat_map(|r| std::iter::once(&r.span).chain(r.apply.iter())),
            )
            .chain(self.rollouts.iter())
            .chain(self.traffic.iter())
    }

    pub fn spans_mut(&mut self) -> impl Iterator<Item = &mut StageSpan> {
        self.image
            .iter_mut()
            .chain(self.triggers.iter_mut())
            .chain(self.sources.iter_mut())
            .chain(
                self.reconciles
                    .iter_mut()
                    .flat_map(|r| std::iter::once(&mut r.span).chain(r.apply.iter_mut())),
            )
            .chain(self.rollouts.iter_mut())
            .chain(self.traffic.iter_mut())
    }

    /// Stage spans in path order (stage, start, object, id): the order of records and stories.
    pub fn ordered_spans(&self) -> Vec<&StageSpan> {
        let spans: Vec<&StageSpan> = self.spans().collect();
        self.span_order().into_iter().map(|i| spans[i]).collect()
    }

    /// The positions in [`Promotion::spans`] (as in [`Promotion::spans_mut`]) of
    /// [`Promotion::ordered_spans`], first to last.
    pub fn span_order(&self) -> Vec<usize> {
        let spans: Vec<&StageSpan> = self.spans().collect();
        let mut order: Vec<usize> = (0..spans.len()).collect();
        // Stable, as the order of equal keys is that of `spans`.
        order.sort_by(|&a, &b| {
            let (a, b) = (spans[a], spans[b]);
            (a.stage, a.start, &a.object, a.span_id).cmp(&(b.stage, b.start, &b.object, b.span_id))
        });
        order
    }

    /// When the promotion or its earliest span started.
    pub fn first_start(&self) -> Timestamp {
        self.spans()
            .map(|s| s.start)
            .min()
            .unwrap_or(self.start)
            .min(self.start)
    }

    /// Rollouts hang below the reconcile of the object that applied them, if it is part of
    /// this promotion.
    /// Adds a reconcile; rollouts of Deployments it manages that were claimed before it was
    /// seen (a re-list delivers kinds in any order) move under it, where they would have been.
    pub fn add_reconcile(&mut self, r: Reconcile) {
        for span in &mut self.rollouts {
            if span.parent == self.root
                && span.key.manager.is_some()
                && span.key.manager == r.span.object
            {
                span.parent = r.span.span_id;
            }
        }
        push_span(&mut self.reconciles, r);
    }

    pub fn parent_for_rollout(&self, manager: Option<&ObjectRef>) -> SpanId {
        manager
            .and_then(|m| {
                self.reconciles
                    .iter()
                    .find(|r| r.span.object.as_ref() == Some(m))
            })
            .map_or(self.root, |r| r.span.span_id)
    }

    /// Whether the promotion holds a span about `obj`.
    pub fn touches(&self, obj: &ObjectRef) -> bool {
        self.spans().any(|s| s.object.as_ref() == Some(obj))
    }

    pub fn environment(&self) -> Option<&str> {
        self.report.as_ref().map(|r| r.environment.as_str())
    }

    /// The artifact tag the report named, if any.
    pub fn artifact_tag(&self) -> Option<&str> {
        self.report
            .as_ref()
            .and_then(|r| r.artifact.as_ref())
            .and_then(|a| a.tag.as_deref())
    }

    pub fn artifact_repository(&self) -> Option<&str> {
        self.report
            .as_ref()
            .and_then(|r| r.artifact.as_ref())
            .and_then(|a| a.repository.as_deref())
    }

    /// Nothing more is expected once a stage failed, or once the revision was applied (or, for
    /// a promotion no report announced, once its rollouts ended): only the settle period
    /// remains.
    pub fn verdict_due(&self) -> bool {
        let failed = self.spans().any(|s| s.result.failure().is_some());
        let delivered =
            !self.reconciles.is_empty() || (!self.expect_source && !self.rollouts.is_empty());
        failed || delivered || self.superseded_by.is_some() || self.unfollowed.is_some()
    }

    /// When every source stored the revision, if all did.
    pub fn sources_done(&self) -> Option<Timestamp> {
        if self.sources.is_empty()
            || self
                .sources
                .iter()
                .any(|s| s.result != StageResult::Succeeded && s.result != StageResult::NoChange)
        {
            return None;
        }
        self.sources.iter().filter_map(|s| s.end).max()
    }

    /// Where a reconcile of `obj` begins: when the stage before it ended, as the objects say
    /// (the latest source that stored one of the promotion's revisions), or when a request to
    /// reconcile this reconciler was made, whichever is later; the promotion's start when
    /// neither is known. When the controller began its work is visible only while it works (a
    /// transient `Ready=Unknown`), which a re-list after a restart does not see.
    pub fn reconcile_start(&self, obj: &ObjectRef) -> Timestamp {
        let trigger = self
            .triggers
            .iter()
            .find(|t| t.object.as_ref() == Some(obj))
            .map(|t| t.start);
        let source = self
            .sources
            .iter()
            .filter(|s| matches!(s.result, StageResult::Succeeded | StageResult::NoChange))
            .filter_map(|s| s.end)
            .max();
        trigger
            .into_iter()
            .chain(source)
            .max()
            .unwrap_or(self.start)
    }

    /// Fills what a repeated or late report adds; never rewrites what is known, except that a
    /// promotion an annotation opened takes the ids and start its report gives: after a
    /// restart the re-list may deliver the annotated objects before the Promotion, and the
    /// trace must be the one the report opens.
    pub fn merge_report(&mut self, r: PromotionReport, deadline: jiff::SignedDuration) {
        if matches!(
            self.traceability,
            Traceability::Annotated | Traceability::Unreported
        ) {
            if let Some(tp) = r
                .traceparent
                .as_deref()
                .and_then(|t| Traceparent::parse(t).ok())
            {
                self.trace_id = tp.trace_id;
                self.ci_parent = Some(tp.span_id);
            }
            if let Some(start) = r.time {
                self.start_at(start, deadline);
            }
        }
        let cur = self.report.get_or_insert_with(|| PromotionReport {
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
        cur.promoted_from = cur.promoted_from.take().or(r.promoted_from);
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
        if self.commit.is_none() {
            self.commit = self
                .report
                .as_ref()
                .and_then(|r| r.revision.as_deref())
                .and_then(revision::commit_sha)
                .map(str::to_string);
        }
        if self.digest.is_none() {
            self.digest = self
                .report
                .as_ref()
                .and_then(|r| r.artifact.as_ref())
                .and_then(|a| a.digest.clone());
        }
        self.expect_source = true;
        self.traceability = Traceability::Reported;
        if self.target.is_none() {
            self.target = self.report.as_ref().and_then(target_key);
        }
    }

    /// Moves the promotion's start (what takes it over knows better when it began); the stages
    /// that began at the old start begin at the new one, never after their end.
    pub fn start_at(&mut self, start: Timestamp, deadline: jiff::SignedDuration) {
        let old = std::mem::replace(&mut self.start, start);
        self.deadline = add(start, deadline);
        for s in self.spans_mut().filter(|s| s.start == old) {
            s.start = start.min(s.end.unwrap_or(start));
        }
    }

    /// A span for a stage that never found its object.
    pub fn placeholder(
        &self,
        stage: Stage,
        cluster: &str,
        start: Timestamp,
        deadline: Timestamp,
    ) -> StageSpan {
        let mut s = StageSpan::new(stage, SpanId::default(), self.root, None, start, deadline);
        s.derive_id(&self.id, cluster, "", "missing");
        s
    }
}

/// The revision keys a report names (commit or digest, and the chart-version prefix).
pub(super) fn report_keys(r: Option<&PromotionReport>) -> Vec<String> {
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

/// Environment and app (or artifact repository and tag): what a report targets.
pub(super) fn target_key(r: &PromotionReport) -> Option<String> {
    let what = r.app.clone().or_else(|| {
        r.artifact.as_ref().and_then(|a| {
            let repo = a.repository.clone()?;
            Some(match &a.tag {
                Some(t) => format!("{repo}:{t}"),
                None => repo,
            })
        })
    })?;
    Some(format!("{}\u{0}{}", r.environment, what))
}

// ---- opening promotions -------------------------------------------------------------------

use super::engine::Engine;
use super::timers::Wake;
use crate::model::PromotionReport as Report;

impl Engine {
    /// A promotion report: opens the promotion (or completes one that annotations opened),
    /// supersedes an older open promotion of the same target, and joins objects already at
    /// its revision.
    pub(super) fn on_promotion(&mut self, at: Timestamp, report: Report) {
        let id = report.id.clone();
        // History (delivered before the agent started) is answered when a report names it.
        if self.reg.is_finished(&id) && !self.reg.is_history(&id) {
            return;
        }
        if self.reg.is_history(&id) && self.report_history(at, report.clone()) {
            return;
        }
        if let Some(p) = self.reg.get_mut(&id) {
            p.merge_report(report, self.cfg.deadlines.promotion);
            let keys = report_keys(p.report.as_ref());
            self.reg.index_target(&id);
            self.reg.add_keys(&id, keys);
            self.touched.insert(id.clone());
            self.rejoin(&id, at);
            return;
        }
        if self.adopt_report(at, &report) {
            return;
        }
        let start = report.time.unwrap_or(at);
        let p = Promotion::new(
            id.clone(),
            start,
            Some(report),
            Traceability::Reported,
            &self.cfg.cluster,
            self.cfg.deadlines.promotion,
        );
        let successor = Successor {
            id: id.clone(),
            trace_id: p.trace_id,
            root: p.root,
            at: start.max(at),
        };
        let keys = report_keys(p.report.as_ref());
        if let Some(old) = self.reg.open(p) {
            if self.reg.get(&old).is_some_and(|o| o.start <= start) {
                self.supersede(&old, successor);
            }
        }
        self.reg.add_keys(&id, keys);
        self.touched.insert(id.clone());
        self.rejoin(&id, at);
    }

    /// Opens a promotion named only by an annotation or event metadata.
    ///
    /// Evidence older than the promotion deadline opens nothing: after a restart, an annotation
    /// left on an object by a promotion long finished must not bring that promotion back.
    pub(super) fn ensure_annotated(&mut self, id: &str, start: Timestamp) -> bool {
        if self.reg.is_finished(id) {
            return false;
        }
        if !self.reg.is_open(id) {
            if add(start, self.cfg.deadlines.promotion) < self.now {
                return false;
            }
            let p = Promotion::new(
                id.to_string(),
                start,
                None,
                Traceability::Annotated,
                &self.cfg.cluster,
                self.cfg.deadlines.promotion,
            );
            self.reg.open(p);
        }
        self.touched.insert(id.to_string());
        true
    }

    /// Joins objects that already hold one of the promotion's revisions.
    pub(super) fn rejoin(&mut self, id: &str, at: Timestamp) {
        if let Some(later) = self.deferred_rejoins.as_mut() {
            if !later.iter().any(|l| l == id) {
                later.push(id.to_string());
            }
            return;
        }
        let Some(p) = self.reg.get(id) else {
            return;
        };
        let objects = self.revs.objects(&p.keys);
        // Sources first: reconcilers join through the revisions sources register.
        let (srcs, recs): (Vec<_>, Vec<_>) = objects.into_iter().partition(|o| o.kind.is_source());
        // Kustomizations that failed or wait on these sources before recording an attempt: no
        // revision of theirs names the promotion.
        let early: Vec<ObjectRef> = self
            .failed_early
            .iter()
            .filter(|k| {
                self.reconcilers
                    .get(*k)
                    .and_then(|s| s.last.as_ref())
                    .and_then(|l| l.source_ref.as_ref())
                    .is_some_and(|src| srcs.contains(src))
            })
            .cloned()
            .collect();
        for o in srcs {
            if let Some(obs) = self.sources.get(&o).and_then(|s| s.last.clone()) {
                self.correlate_source(at, &obs);
            }
        }
        for o in recs {
            // Already evaluated for this promotion: the same observation again would take
            // conditions from before the reconcile for fresh ones.
            let seen = self.reg.get(id).is_some_and(|p| {
                p.reconciles
                    .iter()
                    .any(|r| r.seen && r.span.object.as_ref() == Some(&o))
            });
            if seen {
                continue;
            }
            if let Some(obs) = self.reconcilers.get(&o).and_then(|s| s.last.clone()) {
                self.correlate_reconciler(at, &obs);
            }
        }
        for o in early {
            if let Some(obs) = self.reconcilers.get(&o).and_then(|s| s.last.clone()) {
                self.correlate_reconciler(at, &obs);
            }
        }
    }

    /// Ends an open promotion because a newer one took over its target or its objects. A
    /// promotion that already failed, or whose work is all done, reaches its own verdict: a
    /// newer one does not hide what happened to it.
    pub(super) fn supersede(&mut self, old: &str, newer: Successor) {
        let Some(p) = self.reg.get_mut(old) else {
            return;
        };
        let failed = p.spans().any(|s| s.result.failure().is_some());
        // An image update alone is not the delivery: its promotion still waits for its source.
        let done = p.spans().any(|s| s.stage != Stage::Image) && !p.spans().any(StageSpan::is_open);
        if failed || done {
            return;
        }
        let msg = format!("superseded by promotion {}", newer.id);
        let at = newer.at;
        for s in p.spans_mut() {
            if s.is_open() {
                s.finish(at.max(s.start), StageResult::Superseded, msg.clone());
            }
        }
        p.superseded_by = Some(newer);
        self.timers.cancel(&Wake::Promotion(old.to_string()));
        self.verdict(old);
    }
}

/// Adds a span to one of a promotion's lists. Spans are large and most promotions hold one or
/// two of each kind: room for one more, not for four (a first push would take 2 KB, out of
/// the allocator's fast sizes). Past a few, the list doubles as usual (a promotion may hold
/// hundreds of reconciles).
pub(in crate::correlate) fn push_span<T>(list: &mut Vec<T>, span: T) {
    if list.len() < 4 {
        list.reserve_exact(1);
    }
    list.push(span);
}
