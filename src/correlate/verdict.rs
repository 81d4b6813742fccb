//! When a promotion ends and how: stage deadlines, stages that never started, the settle
//! period, and then the verdict: outcome, divergence point and its evidence.
//!
//! `check` runs for every promotion an observation touched or a timer woke; `verdict` takes
//! the promotion out of the registry, lands buffered events on its spans, and emits its span
//! records and story through `render`.

use jiff::Timestamp;

use super::config::{add, fmt_dur, EVENT_WINDOW_SLACK};
use super::engine::{Engine, Output};
use super::events::{object_rank, BufferedEvent, EventStore};
use super::promotion::{Promotion, Reconcile};
use super::registry::Delivered;
use super::render::{build_story, root_record, stage_record, SpanOwner};
use super::span::{Failure, StageResult, StageSpan};
use super::stage::branch_head::{skip_unfollowed, unfollowed_branch};
use super::stage::canary::{self, is_canary_span};
use super::stage::followers::Followers;
use super::stage::reconcile::{fail_reconcile, ReconcilerState};
use super::stage::source::SourceState;
use super::stage::trigger::receiver_attrs;
use super::{Map, Set};
use crate::model::{Kind, ObjectRef, SourceObs};
use crate::story::{Divergence, Outcome, Traceability};
use crate::trace::{attr, SpanEventRecord, Stage};

impl Engine {
    /// Ends stages past their deadlines, adds the stages that never started, and gives the
    /// verdict once the promotion is settled or past its own deadline.
    pub(super) fn check(&mut self, id: &str, now: Timestamp) {
        let d = &self.cfg.deadlines;
        let cluster = &self.cfg.cluster;
        let Some(p) = self.reg.get_mut(id) else {
            return;
        };
        // A reconcile the controller is retrying fails with the controller's reason when its
        // deadline passes still failing, or at once when another stage failed (what its
        // health checks wait for will not come).
        let failed_elsewhere = p.spans().any(|s| s.result.failure().is_some());
        // Where it failed and when: a reconcile still waiting for Flux to attempt it (its
        // dependency failed) ends there too, diverging where that failure did.
        let first_failure = p
            .spans()
            .filter_map(|s| s.result.failure().map(|f| (f.diverges_at, s.end)))
            .min_by_key(|(stage, _)| *stage);
        for r in &mut p.reconciles {
            if let (Some((stage, end)), true) = (first_failure, r.span.is_open()) {
                if let Some(w) = r.waiting.take() {
                    let end = end.unwrap_or(now).max(r.span.start);
                    let failure = Failure {
                        reason: w.reason.clone(),
                        message: format!(
                            "{}; not attempted: the promotion failed at {}",
                            w.message,
                            stage.as_str()
                        ),
                        diverges_at: stage,
                    };
                    let text = format!("{}: {}", failure.reason, failure.message);
                    // Never attempted: its apply did nothing.
                    if let Some(a) = r.apply.as_mut().filter(|a| a.is_open()) {
                        a.finish(end, StageResult::NoChange, "not attempted");
                    }
                    r.span.finish(end, StageResult::Failed(failure), text);
                    continue;
                }
            }
            let due = r.span.is_open() && (failed_elsewhere || r.span.deadline <= now);
            if let Some((f, at)) = r.retrying.take_if(|_| due) {
                let kind = r
                    .span
                    .object
                    .as_ref()
                    .map_or(Kind::Kustomization, |o| o.kind);
                let (end, why) = if failed_elsewhere {
                    (at, "")
                } else {
                    (
                        r.span.deadline,
                        " (still failing at the reconcile's deadline)",
                    )
                };
                let message = format!("{}{why}", f.message);
                fail_reconcile(r, kind, &f.reason, &message, end);
            }
        }
        // Stage deadlines.
        for s in p.spans_mut() {
            if s.is_open() && s.deadline <= now {
                let (reason, msg) = timeout_text(s);
                s.time_out(reason, msg, s.stage);
            }
        }
        // A commit pushed to a branch nobody follows will never be fetched.
        if p.expect_source && p.sources.is_empty() {
            if let Some(branch) = unfollowed_branch(&self.sources, p) {
                skip_unfollowed(p, &branch, cluster);
            }
        }
        // Stages that never started. A suspended source the report names fetches nothing.
        let suspended = p
            .sources
            .is_empty()
            .then(|| {
                suspended_source(
                    &self.sources,
                    &self.suspended_sources,
                    p.artifact_repository(),
                )
            })
            .flatten();
        if let (true, Some(src)) = (p.expect_source, suspended) {
            let what = p.commit.clone().or(p.digest.clone()).unwrap_or_default();
            let start = p.start;
            let mut s = p.placeholder(Stage::Source, cluster, start, add(start, d.source));
            s.object = Some(src.clone());
            s.set_object_attrs(&src);
            s.attrs.set(attr::FLUX_REVISION, what.clone());
            s.key.revision = Some(what.clone());
            let message =
                format!("{src} suspended (spec.suspend: true): nothing fetches revision {what}");
            s.finish(
                start,
                StageResult::Failed(Failure {
                    reason: "Suspended".into(),
                    message: message.clone(),
                    diverges_at: Stage::Source,
                }),
                format!("Suspended: {message}"),
            );
            p.sources.push(s);
        }
        if p.expect_source && p.sources.is_empty() && add(p.start, d.source) <= now {
            let what = p.commit.clone().or(p.digest.clone()).unwrap_or_default();
            let start = p.start;
            let mut s = p.placeholder(Stage::Source, cluster, start, add(start, d.source));
            s.attrs.set(attr::FLUX_REVISION, what.clone());
            s.key.revision = Some(what.clone());
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
        if let Some(end) = p.sources_done().filter(|_| p.unfollowed.is_none()) {
            // Every reconciler of the sources is suspended: nothing will reconcile it.
            let suspended = if p.reconciles.is_empty() {
                suspended_followers(&self.reconcilers, &self.followers, p)
            } else {
                Vec::new()
            };
            // Only HelmCharts building by chart version follow the sources, and none built a
            // new chart within the settle period: the revision changed no chart.
            let charts = if p.reconciles.is_empty() && add(end, d.settle) <= now {
                unchanged_charts(&self.sources, &self.followers, p, end)
            } else {
                Vec::new()
            };
            let decided = !suspended.is_empty() || !charts.is_empty();
            if p.reconciles.is_empty() && (decided || add(end, d.reconcile) <= now) {
                let rev = p
                    .sources
                    .iter()
                    .find_map(|s| s.key.revision.clone())
                    .unwrap_or_default();
                let mut span = p.placeholder(Stage::Reconcile, cluster, end, add(end, d.reconcile));
                span.attrs.set(attr::FLUX_REVISION, rev.clone());
                span.key.revision = Some(rev.clone());
                if let Some(first) = suspended.first() {
                    span.object = Some(first.clone());
                    span.set_object_attrs(first);
                    let names: Vec<String> = suspended.iter().map(ToString::to_string).collect();
                    let message = format!(
                        "{} suspended (spec.suspend: true): nothing reconciles revision {rev}",
                        names.join(", ")
                    );
                    span.finish(
                        end,
                        StageResult::Failed(Failure {
                            reason: "Suspended".into(),
                            message: message.clone(),
                            diverges_at: Stage::Reconcile,
                        }),
                        format!("Suspended: {message}"),
                    );
                } else if let Some(first) = charts.first() {
                    span.object = Some(first.clone());
                    span.set_object_attrs(first);
                    let names: Vec<String> = charts.iter().map(ToString::to_string).collect();
                    let message = format!(
                        "{} build their chart by version (reconcileStrategy: ChartVersion): \
                         revision {rev} changed no chart version, nothing to upgrade",
                        names.join(", ")
                    );
                    span.finish(end, StageResult::NoChange, message);
                } else {
                    span.time_out(
                        "ReconcileNotStarted",
                        format!(
                            "no Kustomization or HelmRelease attempted revision {rev} within {}",
                            fmt_dur(d.reconcile)
                        ),
                        Stage::Reconcile,
                    );
                }
                p.reconciles.push(Reconcile::new(span, None, rev, None));
            }
        }
        if p.deadline <= now {
            // The promotion's own deadline ends everything.
            let deadline = p.deadline;
            for s in p.spans_mut() {
                if s.is_open() {
                    s.deadline = s.deadline.min(deadline);
                    let (reason, msg) = timeout_text(s);
                    s.time_out(reason, msg, s.stage);
                }
            }
            // Past its own deadline a promotion gets its verdict, whatever is missing; the
            // first stage never seen is where it diverged.
            if !p.verdict_due() {
                let (stage, reason) = if p.sources.is_empty() {
                    (Stage::Source, "RevisionNotFound")
                } else {
                    (Stage::Reconcile, "ReconcileNotStarted")
                };
                let mut s = p.placeholder(stage, cluster, p.start, deadline);
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
                    p.reconciles
                        .push(Reconcile::new(s, None, String::new(), None));
                }
            }
            self.verdict(id);
            return;
        }
        if p.spans().any(StageSpan::is_open) {
            return;
        }
        let Some(last) = p.spans().filter_map(|s| s.end).max() else {
            return;
        };
        if p.verdict_due() && add(last, d.settle) <= now {
            self.verdict(id);
        }
    }

    /// The earliest time after now at which something can change for `p` without a new
    /// observation (anything due by now was handled when `check` ran).
    pub(super) fn wake_of(&self, p: &Promotion) -> Timestamp {
        let d = &self.cfg.deadlines;
        let now = self.now;
        let mut next: Option<Timestamp> = None;
        let mut due = |t: Timestamp| {
            if t > now && next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        due(p.deadline);
        let mut open = false;
        for s in p.spans().filter(|s| s.is_open()) {
            open = true;
            due(s.deadline);
        }
        if p.expect_source && p.sources.is_empty() {
            due(add(p.start, d.source));
        }
        if let Some(end) = p.sources_done() {
            if p.reconciles.is_empty() {
                // Whether only unchanged charts follow the sources.
                due(add(end, d.settle));
                due(add(end, d.reconcile));
            }
        }
        if !open && p.verdict_due() {
            if let Some(last) = p.spans().filter_map(|s| s.end).max() {
                due(add(last, d.settle));
            }
        }
        next.unwrap_or(add(now, d.settle))
    }

    /// The verdict: the promotion leaves the registry, its spans and story go out.
    pub(super) fn verdict(&mut self, id: &str) {
        let Some(mut p) = self.reg.take_for_verdict(id) else {
            return;
        };
        settle_reconcile_times(&mut p, &self.reconcilers, &self.events);
        // The digest the promotion delivered, on every reconcile of it: known by now even when
        // the policy or source that names it was seen after the reconciler.
        if let Some(dg) = &p.digest {
            for r in &mut p.reconciles {
                r.span.attrs.set(attr::OCI_MANIFEST_DIGEST, dg.clone());
            }
        }
        for t in &mut p.triggers {
            let via = t.object.as_ref().and_then(|o| self.receivers.targeting(o));
            receiver_attrs(t, via);
        }
        super::stage::image::land_policy_events(&mut p, &self.events);
        land_events(&mut p, &self.events);
        self.settle_canaries(&mut p);
        // What each apply changed, as kustomize-controller reported it. An apply that
        // succeeded with no change reported changed nothing (a monorepo commit reconciles
        // every Kustomization on the source; most apply nothing new).
        for r in &mut p.reconciles {
            let Some(obj) = r.span.object.as_ref() else {
                continue;
            };
            let Some(st) = self.reconcilers.get(obj) else {
                continue;
            };
            let Some(a) = r.apply.as_mut() else {
                continue;
            };
            match st.changed(&r.revision) {
                Some(true) => {
                    a.attrs.set(attr::DELIVERY_APPLY_CHANGED, true);
                    let changes = st.changes_of(&r.revision).unwrap_or_default().to_vec();
                    a.attrs.set(attr::DELIVERY_APPLY_CHANGES, changes);
                }
                Some(false) if a.result == StageResult::Succeeded => {
                    a.attrs.set(attr::DELIVERY_APPLY_CHANGED, false);
                    a.result = StageResult::NoChange;
                    a.summary = format!("no change: {}", a.summary);
                }
                _ => {}
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
        // The span that diverged names the cause too.
        if let Some((d, c)) = divergence
            .as_ref()
            .and_then(|(d, _)| d.cause.as_ref().map(|c| (d, c)))
        {
            if let Some(s) = p.spans_mut().find(|s| s.span_id == d.span_id) {
                s.attrs.set(attr::DELIVERY_DIVERGENCE_CAUSE, c.clone());
            }
        }
        let changed_nothing = |r: &Reconcile| {
            r.span.result == StageResult::NoChange
                || r.apply
                    .as_ref()
                    .is_some_and(|a| a.result == StageResult::NoChange)
        };
        let outcome = if p.superseded_by.is_some() {
            Outcome::Superseded
        } else if let Some((_, timed_out)) = &divergence {
            if *timed_out {
                Outcome::TimedOut
            } else {
                Outcome::Failed
            }
        } else if (!p.reconciles.is_empty()
            && p.rollouts.is_empty()
            && (p.reconciles.iter().all(changed_nothing)
                // Nobody asked for it: a revision that rolled out no workload changed nothing
                // on-call looks for (a commit to docs, a ConfigMap for another cluster).
                || p.traceability == Traceability::Unreported))
            // Pushed to a branch nobody follows: nothing in the cluster will fetch it.
            || p.unfollowed.is_some()
        {
            Outcome::NoChange
        } else {
            Outcome::Succeeded
        };
        let divergence = divergence.map(|(d, _)| d);
        let start = p.first_start();
        let end = p
            .spans()
            .filter_map(|s| s.end)
            .chain(p.superseded_by.as_ref().map(|s| s.at))
            .max()
            .unwrap_or(p.start)
            .max(start);
        let cluster = &self.cfg.cluster;
        let chain = self.reg.chain(&p);
        let root = root_record(
            &p,
            start,
            end,
            outcome,
            divergence.as_ref(),
            chain.as_ref(),
            cluster,
        );
        let order = p.span_order();
        let story = {
            let spans: Vec<&StageSpan> = p.spans().collect();
            let stage_spans: Vec<&StageSpan> = order.iter().map(|&i| spans[i]).collect();
            build_story(&p, &stage_spans, start, end, outcome, divergence, cluster)
        };
        // The story and the root read the spans: now each span's attributes and events move
        // into its record, not copied.
        let (id, environment) = (
            p.id.clone(),
            p.report.as_ref().map(|r| r.environment.clone()),
        );
        let owner = SpanOwner {
            id: &id,
            environment: environment.as_deref(),
            traceability: p.traceability,
            trace_id: p.trace_id,
        };
        let mut spans: Vec<&mut StageSpan> = p.spans_mut().collect();
        self.out.reserve(order.len() + 2);
        for &i in &order {
            self.out
                .push(Output::Span(stage_record(&owner, spans[i], cluster)));
        }
        self.out.push(Output::Span(root));
        let delivered = (p.traceability == Traceability::Unreported).then(|| Delivered {
            id: p.id.clone(),
            trace_id: p.trace_id,
            root: p.root,
            start,
            end,
            outcome,
            divergence: story.divergence.clone(),
        });
        self.workloads
            .on_verdict(&p, &story, &self.rollouts.managed);
        self.out.push(Output::Story(Box::new(story)));
        self.rollouts.release(&p);
        let retain = self.cfg.retain_finished;
        self.reg.finish(p, retain);
        if let Some(d) = delivered {
            self.reg.delivered(d);
        }
    }
}

/// Reconcile and apply times from what the objects say, whatever order they were seen in (a
/// re-list after a restart delivers them in any order, and only their last state):
/// - a reconcile (and its apply) starts when the stage before it ended
///   ([`Promotion::reconcile_start`]), never after its own end;
/// - a Kustomization's successful apply ends when kustomize-controller reported it (the time of
///   its `Progressing` event listing the changes), else with its reconcile.
///
/// A reconcile Flux made wait (a dependency or the source not ready: its Event landed on the
/// span, or the wait was seen) was attempted when `status.history` says its first run of the
/// revision began; its apply starts then, and the span says how long it waited and for what.
fn settle_reconcile_times(
    p: &mut Promotion,
    reconcilers: &Map<ObjectRef, ReconcilerState>,
    events: &EventStore,
) {
    let starts: Vec<Option<Timestamp>> = p
        .reconciles
        .iter()
        .map(|r| {
            let obj = r.span.object.as_ref()?;
            (r.span.result != StageResult::NoChange).then(|| p.reconcile_start(obj))
        })
        .collect();
    for (r, start) in p.reconciles.iter_mut().zip(starts) {
        let Some(start) = start else {
            continue;
        };
        let start = start.min(r.span.end.unwrap_or(start));
        r.span.start = start;
        let applied_at = r
            .span
            .object
            .as_ref()
            .filter(|o| o.kind == Kind::Kustomization)
            .and_then(|o| reconcilers.get(o))
            .and_then(|st| st.applied_at(&r.revision));
        let kustomization = r
            .span
            .object
            .as_ref()
            .is_some_and(|o| o.kind == Kind::Kustomization);
        let reconcile_end = r.span.end;
        let wait_event = r.span.object.as_ref().and_then(|o| {
            events.of(o).find(|e| {
                is_wait_reason(e.reason())
                    && e.time >= start
                    && reconcile_end.is_none_or(|end| e.time <= end)
            })
        });
        let waited_for = wait_event
            .map(|e| format!("{}: {}", e.reason(), e.message()))
            .or_else(|| r.attempted.as_ref().map(|(_, why)| why.clone()));
        let attempted = waited_for.as_ref().and_then(|_| {
            let by_history = r
                .span
                .object
                .as_ref()
                .and_then(|o| reconcilers.get(o))
                .and_then(|st| st.last.as_deref())
                .and_then(|l| l.history.iter().find(|h| h.revision == r.revision))
                .filter(|h| h.first_reconciled == h.last_reconciled)
                .and_then(|h| h.first_reconciled?.checked_sub(h.last_duration?).ok());
            by_history.or(r.attempted.as_ref().map(|(t, _)| *t))
        });
        let attempted = attempted
            .unwrap_or(start)
            .max(start)
            .min(reconcile_end.unwrap_or(Timestamp::MAX));
        if let Some(why) = waited_for {
            let waited = attempted.duration_since(start).as_secs();
            r.span
                .attrs
                .set(attr::DELIVERY_RECONCILE_WAITED_SECONDS, waited);
            r.span.attrs.set(attr::DELIVERY_RECONCILE_WAITED_FOR, why);
        }
        if let Some(a) = r.apply.as_mut() {
            a.start = attempted.min(a.end.unwrap_or(attempted));
            let applied = matches!(a.result, StageResult::Succeeded | StageResult::NoChange);
            if kustomization && applied {
                if let Some(end) = applied_at.or(reconcile_end) {
                    let end = reconcile_end.map_or(end, |e| end.min(e));
                    a.end = Some(end.max(a.start));
                }
            }
        }
    }
}

/// A reason Flux controllers give when they wait before attempting a revision.
fn is_wait_reason(reason: &str) -> bool {
    matches!(reason, "DependencyNotReady" | "SourceNotReady")
}

/// Events land on the span of the object they are about, within its window (and, when both
/// name one, of the same revision).
fn land_events(p: &mut Promotion, events: &EventStore) {
    let mut landing: Vec<&BufferedEvent> = Vec::new();
    for s in p.spans_mut() {
        let (Some(obj), Some(end)) = (s.object.as_ref(), s.end) else {
            continue;
        };
        if matches!(s.stage, Stage::Apply | Stage::Trigger | Stage::Traffic) {
            continue;
        }
        let rev = s.key.revision.as_deref();
        landing.clear();
        landing.extend(events.of(obj).filter(|e| {
            let in_window = add(e.time, EVENT_WINDOW_SLACK) >= s.start
                && e.time <= add(end, EVENT_WINDOW_SLACK);
            let same_rev = match (e.revision.as_deref(), rev) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            in_window && same_rev
        }));
        // A span holding events already (an image span, its policy's) is sorted all the same.
        if landing.is_empty() && s.events.is_empty() {
            continue;
        }
        // Events of the same second in an order their content gives: a watch delivers them
        // in the order they were written, a re-list after a restart in another.
        s.events.reserve(landing.len());
        if s.events.is_empty() {
            // Sorted before they become span events, by the same key: equal span events sort
            // together, so leaving out repeats after the sort keeps what it keeps before.
            // Most differ in time: the rest of the key only for those that do not.
            landing.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.order().cmp(&b.order())));
            for e in &landing {
                s.push_event(e.record());
            }
        } else {
            for e in &landing {
                s.push_event(e.record());
            }
            s.events.sort_by(|a, b| event_order(a).cmp(&event_order(b)));
        }
    }
}

/// Span events by time; within one time, owners before what they own (a Deployment's events,
/// then its ReplicaSets', then its Pods'), then by object, reason and message: the order of
/// [`BufferedEvent::order`].
fn event_order(e: &SpanEventRecord) -> (Timestamp, u8, &str, &str, &str) {
    let object = e.attributes.get_str(attr::EVENT_OBJECT).unwrap_or_default();
    (
        e.time,
        object_rank(object),
        object,
        &e.name,
        e.attributes
            .get_str(attr::EVENT_MESSAGE)
            .unwrap_or_default(),
    )
}

/// The HelmCharts following the sources of `p` when nothing else follows them, every one
/// builds by chart version and none stored a new chart since the sources stored the
/// revision (`end`): source-controller builds a new chart artifact only for a new version.
fn unchanged_charts(
    sources: &Map<ObjectRef, SourceState>,
    index: &Followers,
    p: &Promotion,
    end: Timestamp,
) -> Vec<ObjectRef> {
    let fed: Vec<&ObjectRef> = p.sources.iter().filter_map(|s| s.object.as_ref()).collect();
    if fed.iter().any(|src| !index.of_source(src).is_empty()) {
        return Vec::new();
    }
    let mut charts: Vec<(&ObjectRef, &SourceObs)> = fed
        .iter()
        .flat_map(|src| index.charts_of(src))
        .filter_map(|o| Some((o, sources.get(o)?.last.as_deref()?)))
        .collect();
    charts.sort_by(|a, b| a.0.cmp(b.0));
    charts.dedup_by(|a, b| a.0 == b.0);
    let unchanged = |c: &SourceObs| !c.by_revision && c.artifact_updated.is_some_and(|t| t < end);
    if charts.is_empty() || !charts.iter().all(|(_, c)| unchanged(c)) {
        return Vec::new();
    }
    let mut names: Vec<ObjectRef> = charts.into_iter().map(|(o, _)| o.clone()).collect();
    names.sort();
    names
}

/// The suspended source whose `spec.url` is the repository a report named (the OCI
/// artifact's; schemes, credentials and a `.git` suffix aside).
fn suspended_source(
    sources: &Map<ObjectRef, SourceState>,
    suspended: &Set<ObjectRef>,
    repository: Option<&str>,
) -> Option<ObjectRef> {
    fn bare(url: &str) -> &str {
        let url = url.split_once("://").map_or(url, |(_, rest)| rest);
        let url = url.rsplit_once('@').map_or(url, |(_, host)| host);
        url.trim_end_matches('/').trim_end_matches(".git")
    }
    let repository = bare(repository?);
    suspended
        .iter()
        .filter_map(|o| Some((o, sources.get(o)?.last.as_deref()?)))
        .find(|(_, obs)| obs.suspended && obs.url.as_deref().is_some_and(|u| bare(u) == repository))
        .map(|(o, _)| o.clone())
}

/// The reconcilers following the sources of `p` when every one of them is suspended (none
/// otherwise, or when nothing follows them).
fn suspended_followers(
    reconcilers: &Map<ObjectRef, ReconcilerState>,
    index: &Followers,
    p: &Promotion,
) -> Vec<ObjectRef> {
    let mut followers: Vec<(&ObjectRef, bool)> = p
        .sources
        .iter()
        .filter_map(|s| s.object.as_ref())
        .flat_map(|src| index.of_source(src))
        .filter_map(|o| Some((o, reconcilers.get(o)?.last.as_deref()?.suspended)))
        .collect();
    if followers.is_empty() || followers.iter().any(|(_, s)| !s) {
        return Vec::new();
    }
    followers.sort();
    followers.dedup();
    followers.into_iter().map(|(o, _)| o.clone()).collect()
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
        Stage::Image => (
            "ImageNotPushed",
            format!("no commit was pushed for the selected image within {took}{what}"),
        ),
        Stage::Traffic if is_canary_span(s) => (
            "CanaryTimeout",
            format!("canary analysis did not finish within {took}{what}"),
        ),
        _ => ("Timeout", format!("did not finish within {took}{what}")),
    }
}

/// Pod failure reasons, most telling first: a container `OOMKilled` explains the crash loop
/// it is in.
const POD_CAUSES: [&str; 10] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "OOMKilled",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "FailedScheduling",
    "FailedMount",
    "FailedCreate",
];

/// The rank in [`POD_CAUSES`] of what a warning Event says. The kubelet reports a crash loop
/// as `BackOff` "Back-off restarting failed container …" and a pull that keeps failing as
/// `BackOff` "Back-off pulling image …": neither names the waiting reason Pods show.
fn pod_cause(text: &str) -> Option<usize> {
    let named = |c: &str| POD_CAUSES.iter().position(|p| *p == c);
    POD_CAUSES
        .iter()
        .position(|c| text.contains(c))
        .or_else(|| {
            text.contains("Back-off restarting failed container")
                .then(|| named("CrashLoopBackOff"))
                .flatten()
        })
        .or_else(|| {
            text.contains("Back-off pulling image")
                .then(|| named("ImagePullBackOff"))
                .flatten()
        })
}

/// The divergence point: the first stage in path order whose own work failed, its evidence
/// and (for rollouts) the Pod cause. The flag says whether it timed out.
pub(super) fn divergence(p: &Promotion, events: &EventStore) -> Option<(Divergence, bool)> {
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
        let mut warnings: Vec<(usize, &BufferedEvent)> = Vec::new();
        for s in p.rollouts.iter() {
            let Some(obj) = &s.object else { continue };
            let end = s.end.unwrap_or(s.deadline);
            for e in events.of(obj) {
                if !e.warning
                    || add(e.time, EVENT_WINDOW_SLACK) < s.start
                    || e.time > add(end, EVENT_WINDOW_SLACK)
                {
                    continue;
                }
                let text = format!("{} {}", e.reason(), e.message());
                let rank = pod_cause(&text).unwrap_or(POD_CAUSES.len());
                warnings.push((rank, e));
            }
        }
        warnings.sort_by_key(|(rank, e)| (*rank, e.time));
        if let Some((rank, _)) = warnings.first().filter(|(r, _)| *r < POD_CAUSES.len()) {
            cause = Some(POD_CAUSES[*rank].to_string());
        }
        let mut seen = Set::default();
        for (_, e) in warnings {
            let (obj, msg) = (e.object(), e.message());
            if seen.insert(msg) && seen.len() <= 3 {
                evidence.push(format!("{obj} {}: {msg}", e.reason()));
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
    if failure.diverges_at == Stage::Image {
        let mut first = super::stage::image::evidence(span);
        first.append(&mut evidence);
        evidence = first;
    } else if is_canary_span(span) {
        evidence = canary::evidence(span);
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

#[cfg(test)]
mod tests {
    use super::pod_cause;

    #[test]
    fn the_kubelets_back_off_events_name_their_causes() {
        let cause = |t: &str| pod_cause(t).map(|r| super::POD_CAUSES[r]);
        assert_eq!(
            cause("BackOff Back-off restarting failed container web in pod web-1_apps(uid)"),
            Some("CrashLoopBackOff")
        );
        assert_eq!(
            cause("BackOff Back-off pulling image \"registry.invalid/web:missing\""),
            Some("ImagePullBackOff")
        );
        assert_eq!(cause("Failed Error: ErrImagePull"), Some("ErrImagePull"));
        assert_eq!(
            cause("FailedCreate pods \"web-1\" is forbidden: exceeded quota"),
            Some("FailedCreate")
        );
        assert_eq!(cause("Unhealthy Readiness probe failed"), None);
    }
}
