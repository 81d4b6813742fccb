//! The canary stage: a Flagger Canary whose target Deployment a promotion changed runs an
//! analysis, the data-plane truth of that promotion. One `traffic.canary` span per Canary and
//! promotion follows it from Flagger's `New revision detected!` until the Canary is
//! `Succeeded` (the template was copied to `<target>-primary` and rolled out) or `Failed`
//! (rolled back: the promotion diverges at `traffic`, whatever Flux says).
//!
//! - The span opens as soon as the target's rollout is claimed by a promotion (Flagger looks
//!   only once per analysis interval), and takes that rollout's place: the promotion cannot
//!   reach its verdict before it ends.
//! - It ends on the Canary's status, once its `Promoted` condition moved after the span began
//!   (before that the phase is the previous run's), or at its deadline: the analysis budget
//!   the Canary's spec gives plus `Deadlines::canary_grace`.
//! - The primary's rollout (`<target>-primary`, no Flux labels) is claimed by the promotion
//!   whose canary span is open, below that span.
//! - At the verdict, Flagger's Events (all reason `Synced`, told apart by their message) land
//!   as span events, the span starts at the run's `New revision detected!` Event, and its
//!   attributes (highest weight, iterations, failed checks) are read from them: what a
//!   restarted agent lists is what a watching one saw.

use jiff::{SignedDuration, Timestamp};

use super::super::config::{add, CLAIM_SLACK, EVENT_WINDOW_SLACK};
use super::super::engine::Engine;
use super::super::events::BufferedEvent;
use super::super::promotion::push_span;
use super::super::promotion::Promotion;
use super::super::span::{Failure, StageResult, StageSpan};
use super::super::Map;
use super::canary_status::{is_gate, StatusRun};
use super::rollout::RolloutOwner;
use crate::model::{condition, sane_duration, CanaryObs, Kind, ObjectRef};
use crate::trace::{attr, span_id_for, AttrValue, SpanEventRecord, Stage};

/// The span name of a canary analysis (`delivery.stage` is `traffic`).
pub const CANARY_SPAN_NAME: &str = "traffic.canary";
/// The service its spans are exported under.
pub const SERVICE_FLAGGER: &str = "flagger";

/// Canaries by name, and by the Deployment each targets.
#[derive(Default)]
pub(in crate::correlate) struct Canaries {
    by_object: Map<ObjectRef, CanaryObs>,
    by_target: Map<ObjectRef, ObjectRef>,
    /// The status steps and gates of each Canary's current run, as this agent saw them.
    runs: Map<ObjectRef, StatusRun>,
}

impl Canaries {
    fn insert(&mut self, obs: CanaryObs) {
        if let Some(old) = self.by_object.get(&obs.object) {
            if old.target != obs.target && self.by_target.get(&old.target) == Some(&obs.object) {
                self.by_target.remove(&old.target);
            }
        }
        self.by_target
            .insert(obs.target.clone(), obs.object.clone());
        self.by_object.insert(obs.object.clone(), obs);
    }

    /// A Canary is gone.
    pub fn forget(&mut self, o: &ObjectRef) {
        self.runs.remove(o);
        if let Some(c) = self.by_object.remove(o) {
            if self.by_target.get(&c.target) == Some(o) {
                self.by_target.remove(&c.target);
            }
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &ObjectRef> {
        self.by_object.keys()
    }

    pub fn len(&self) -> usize {
        self.by_object.len()
    }

    /// The Canary that targets Deployment `dep`.
    pub fn of_target(&self, dep: &ObjectRef) -> Option<&CanaryObs> {
        self.by_target.get(dep).and_then(|c| self.by_object.get(c))
    }

    /// The Canary whose primary workload `dep` is (of its target's kind).
    pub fn of_primary(&self, dep: &ObjectRef) -> Option<&CanaryObs> {
        let target = dep.name.strip_suffix("-primary")?;
        let target = ObjectRef::new(dep.kind, dep.namespace.clone(), target);
        self.of_target(&target).filter(|c| c.primary() == *dep)
    }
}

/// Whether a stage span is a canary analysis (a `traffic` span about a Canary).
pub(in crate::correlate) fn is_canary_span(s: &StageSpan) -> bool {
    s.stage == Stage::Traffic && s.object.as_ref().is_some_and(|o| o.kind == Kind::Canary)
}

fn canary_span<'a>(p: &'a mut Promotion, canary: &ObjectRef) -> Option<&'a mut StageSpan> {
    p.traffic
        .iter_mut()
        .find(|s| s.object.as_ref() == Some(canary))
}

/// The longest a run can take by its spec: Flagger's detection tick, one interval per step,
/// one per tolerated failed check, the promotion and finalising ticks, and the primary's
/// progress deadline.
fn analysis_budget(c: &CanaryObs) -> SignedDuration {
    let ticks = (c.steps + c.threshold + 3).clamp(1, 100_000) as i32;
    let analysis = c.interval.checked_mul(ticks).unwrap_or(SignedDuration::MAX);
    sane_duration(analysis.saturating_add(c.progress_deadline))
}

/// The deadline of a canary span that began at `start`: the analysis budget and the grace,
/// plus the time the run spent at manual gates; while the Canary waits at one, the
/// promotion's own deadline (`promotion`) at the earliest: a person's approval is not
/// Flagger's analysis taking too long.
fn canary_deadline(
    start: Timestamp,
    c: &CanaryObs,
    run: Option<&StatusRun>,
    grace: SignedDuration,
    promotion: Timestamp,
) -> Timestamp {
    let waited = run.map_or(SignedDuration::ZERO, |r| r.waited(start));
    let due = add(
        start,
        analysis_budget(c)
            .saturating_add(grace)
            .saturating_add(waited),
    );
    if run.is_some_and(StatusRun::waiting) {
        due.max(promotion)
    } else {
        due
    }
}

impl Engine {
    pub(in crate::correlate) fn on_canary(&mut self, at: Timestamp, obs: CanaryObs) {
        let key = obs.object.clone();
        let target = obs.target.clone();
        self.canaries.insert(obs);
        if let Some((pid, generation)) = self.target_owner(&target) {
            self.open_canary(&key, &pid, generation);
        }
        if let Some(c) = self.canaries.by_object.get(&key) {
            self.canaries
                .runs
                .entry(key.clone())
                .or_default()
                .observe(c, at);
        }
        self.update_canary_spans(&key, at);
        self.claim_primary(&key);
    }

    /// The open promotion whose rollout span of `target` is still there to be taken over,
    /// and the generation of that rollout.
    fn target_owner(&self, target: &ObjectRef) -> Option<(String, i64)> {
        let r = self.rollouts.deployments.get(target)?.rollout.as_ref()?;
        let RolloutOwner::Promotion(pid) = &r.owner else {
            return None;
        };
        self.reg
            .get(pid)?
            .rollouts
            .iter()
            .any(|s| s.object.as_ref() == Some(target) && s.key.generation == Some(r.generation))
            .then(|| (pid.clone(), r.generation))
    }

    /// Opens the canary span of `canary` in promotion `pid`, once, in place of the rollout of
    /// its target (generation `generation`): the target runs at zero replicas between analyses,
    /// its own rollout says nothing, and Flagger's scaling of it (each a new generation) would
    /// make that rollout look different to an agent that restarted after it.
    fn open_canary(&mut self, canary: &ObjectRef, pid: &str, generation: i64) {
        let Some(c) = self.canaries.by_object.get(canary) else {
            return;
        };
        let Some(p) = self.reg.get_mut(pid) else {
            return;
        };
        if p.traffic.iter().any(|s| s.object.as_ref() == Some(canary)) {
            return;
        }
        let target = Some(&c.target);
        let Some(i) = p
            .rollouts
            .iter()
            .position(|s| s.object.as_ref() == target && s.key.generation == Some(generation))
        else {
            return;
        };
        let taken = p.rollouts.remove(i);
        // It begins with the new template (Flagger sees it within an interval).
        let start = taken.start;
        let span_id = span_id_for(pid, Stage::Traffic, &self.cfg.cluster, &c.uid, "canary");
        let grace = self.cfg.deadlines.canary_grace;
        let deadline = canary_deadline(start, c, None, grace, p.deadline);
        let mut s = StageSpan::new(
            Stage::Traffic,
            span_id,
            p.root,
            Some(canary.clone()),
            start,
            deadline,
        );
        s.set_object_attrs(canary);
        s.attrs.set(attr::FLAGGER_CANARY_NAME, canary.name.clone());
        s.attrs
            .set(attr::workload_keys(c.target.kind).0, c.target.name.clone());
        s.attrs.set(attr::FLAGGER_CANARY_PRIMARY, c.primary().name);
        s.attrs.set(attr::FLAGGER_CANARY_THRESHOLD, c.threshold);
        for key in [
            attr::CONTAINER_IMAGE_NAME,
            attr::CONTAINER_IMAGE_TAGS,
            attr::CONTAINER_IMAGE_REPO_DIGESTS,
        ] {
            s.attrs.set_opt(key, taken.attrs.get(key).cloned());
        }
        push_span(&mut p.traffic, s);
        // A new run: what the status showed before is the previous run's.
        self.canaries.runs.remove(canary);
        self.touched.insert(pid.to_string());
    }

    /// Ends the open canary spans of `canary` its status says are over.
    fn update_canary_spans(&mut self, canary: &ObjectRef, at: Timestamp) {
        let Some(c) = self.canaries.by_object.get(canary) else {
            return;
        };
        let ids: Vec<String> = self
            .reg
            .values()
            .filter(|p| {
                p.traffic
                    .iter()
                    .any(|s| s.object.as_ref() == Some(canary) && s.is_open())
            })
            .map(|p| p.id.clone())
            .collect();
        let run = self.canaries.runs.get(canary);
        let grace = self.cfg.deadlines.canary_grace;
        for pid in ids {
            if let Some(p) = self.reg.get_mut(&pid) {
                let promotion = p.deadline;
                if let Some(s) = canary_span(p, canary) {
                    s.deadline = canary_deadline(s.start, c, run, grace, promotion);
                    finish_if_done(s, c, at);
                }
            }
            self.touched.insert(pid);
        }
    }

    /// Claims the primary's rollout, not yet claimed, for the promotion whose analysis it
    /// finishes.
    fn claim_primary(&mut self, canary: &ObjectRef) {
        let Some(primary) = self.canaries.by_object.get(canary).map(CanaryObs::primary) else {
            return;
        };
        let start = match self
            .rollouts
            .deployments
            .get(&primary)
            .and_then(|d| d.rollout.as_ref())
        {
            Some(r) if r.claimable() => match &r.owner {
                RolloutOwner::Unclaimed(s) => s.start,
                _ => return,
            },
            _ => return,
        };
        if let Some(pid) = self.canary_claimant(&primary, start) {
            self.claim_rollout(&primary, &pid);
        }
    }

    /// The open promotion whose canary analysis explains a rollout of `dep` starting at
    /// `start`: `dep` is the Canary's primary and the analysis began before it (or ended less
    /// than a settle period before).
    pub(in crate::correlate) fn canary_claimant(
        &self,
        dep: &ObjectRef,
        start: Timestamp,
    ) -> Option<String> {
        let c = self.canaries.of_primary(dep)?;
        let settle = self.cfg.deadlines.settle;
        self.reg
            .values()
            .filter_map(|p| {
                let s = p
                    .traffic
                    .iter()
                    .find(|s| s.object.as_ref() == Some(&c.object))?;
                let fits = s.start <= add(start, CLAIM_SLACK)
                    && s.end.is_none_or(|e| add(e, settle) >= start);
                fits.then_some((s.start, p.id.as_str()))
            })
            .max()
            .map(|(_, id)| id.to_string())
    }

    /// A rollout was claimed by promotion `pid`: the rollout of a Canary's target opens that
    /// Canary's span; the primary's rollout hangs below it.
    pub(in crate::correlate) fn on_rollout_claimed(&mut self, dep: &ObjectRef, pid: &str) {
        if let Some(canary) = self.canaries.of_target(dep).map(|c| c.object.clone()) {
            if let Some((owner, generation)) = self.target_owner(dep) {
                self.open_canary(&canary, &owner, generation);
                self.update_canary_spans(&canary, self.now);
                self.claim_primary(&canary);
            }
        }
        let Some(canary) = self.canaries.of_primary(dep).map(|c| c.object.clone()) else {
            return;
        };
        let Some(p) = self.reg.get_mut(pid) else {
            return;
        };
        let Some(parent) = canary_span(p, &canary).map(|s| s.span_id) else {
            return;
        };
        let root = p.root;
        for s in p
            .rollouts
            .iter_mut()
            .filter(|s| s.object.as_ref() == Some(dep) && s.parent == root)
        {
            s.parent = parent;
        }
    }

    /// At the verdict: the canary spans take Flagger's Events, their start and attributes.
    pub(in crate::correlate) fn settle_canaries(&self, p: &mut Promotion) {
        for s in p.traffic.iter_mut().filter(|s| is_canary_span(s)) {
            let Some(obj) = s.object.clone() else {
                continue;
            };
            let end = s.end.unwrap_or(s.deadline);
            let in_window = |e: &&BufferedEvent, start: Timestamp| {
                add(e.time, EVENT_WINDOW_SLACK) >= start && e.time <= add(end, EVENT_WINDOW_SLACK)
            };
            // The analysis began when Flagger saw the new template (it looks once per interval),
            // or halted it at a confirm-rollout gate.
            let began = self
                .events
                .of(&obj)
                .filter(|e| in_window(e, s.start))
                .filter(|e| {
                    matches!(
                        classify(e.message()),
                        EventKind::NewRevision | EventKind::Waiting
                    )
                })
                .map(|e| e.time)
                .filter(|t| *t >= s.start && *t <= end)
                .min();
            if let Some(t) = began {
                s.start = t;
            }
            let start = s.start;
            let mut tally = Tally::default();
            let mut events: Vec<(u8, SpanEventRecord)> = Vec::new();
            for e in self.events.of(&obj).filter(|e| in_window(e, start)) {
                let kind = classify(e.message());
                // A combined Event's count is of similar messages, not of this one.
                let combined = e.message().starts_with(COMBINED);
                tally.add(kind, if combined { 1 } else { e.count });
                match kind {
                    EventKind::Weight(w) if !combined => tally.said_weights.push(w),
                    EventKind::Iteration(n) if !combined => tally.said_iterations.push(n),
                    _ => {}
                }
                let mut rec = e.record();
                // Placed at its first occurrence, it says only the latest of what it stands for.
                rec.name = if combined {
                    "canary.combined"
                } else {
                    kind.name()
                }
                .into();
                match kind {
                    EventKind::Weight(w) => rec
                        .attributes
                        .0
                        .push((attr::FLAGGER_CANARY_WEIGHT, AttrValue::Int(w))),
                    EventKind::Iteration(n) => rec
                        .attributes
                        .0
                        .push((attr::FLAGGER_CANARY_ITERATIONS, AttrValue::Int(n))),
                    _ => {}
                }
                events.push((kind.rank(), rec));
            }
            // Within one second, in the order Flagger writes them (a re-list after a restart
            // gives another).
            events.sort_by(|(ra, a), (rb, b)| {
                let msg = |e: &SpanEventRecord| {
                    e.attributes
                        .get_str(attr::EVENT_MESSAGE)
                        .unwrap_or_default()
                        .to_string()
                };
                (a.time, ra, msg(a)).cmp(&(b.time, rb, msg(b)))
            });
            let c = self.canaries.by_object.get(&obj);
            let run = self.canaries.runs.get(&obj);
            let (from, to) = (
                start.checked_sub(EVENT_WINDOW_SLACK).unwrap_or(start),
                add(end, EVENT_WINDOW_SLACK),
            );
            if let Some(run) = run {
                events.extend(status_events(run, &obj, &tally, &events, (from, to)));
                events.sort_by(|(ra, a), (rb, b)| (a.time, ra).cmp(&(b.time, rb)));
            }
            mark_gate_waits(&mut events);
            for (_, e) in events {
                s.push_event(e);
            }
            if let Some(c) = c {
                s.attrs.set(attr::FLAGGER_CANARY_PHASE, c.phase.clone());
            }
            // A run that succeeded reached the last weight of its schedule, whatever Events
            // client-go folded.
            let succeeded = matches!(s.result, StageResult::Succeeded)
                && c.is_some_and(|c| c.phase == "Succeeded");
            let scheduled = c
                .filter(|_| succeeded)
                .and_then(|c| c.schedule.last().copied());
            let weight = [
                tally.weight,
                run.and_then(|r| r.highest_weight(from, to)),
                scheduled,
            ]
            .into_iter()
            .flatten()
            .max()
            .or(c.map(|c| c.weight))
            .unwrap_or(0);
            s.attrs.set(attr::FLAGGER_CANARY_WEIGHT, weight);
            if let Some(c) = c.filter(|c| !c.schedule.is_empty()) {
                let steps = c.schedule.iter().filter(|w| **w <= weight).count();
                s.attrs.set(
                    attr::FLAGGER_CANARY_STEPS,
                    i64::try_from(steps).unwrap_or(0),
                );
            }
            // Runs that count iterations (A/B testing, Blue/Green) only.
            s.attrs.set_opt(
                attr::FLAGGER_CANARY_ITERATIONS,
                tally
                    .iteration
                    .or(c.map(|c| c.iterations).filter(|n| *n > 0)),
            );
            // The status resets failed checks on a rollback: the rollback Event keeps them.
            let failed = tally
                .rollback_checks
                .or((tally.halts > 0).then_some(tally.halts))
                .or(c.map(|c| c.failed_checks))
                .unwrap_or(0);
            s.attrs.set(attr::FLAGGER_CANARY_FAILED_CHECKS, failed);
        }
    }
}

/// Ends a canary span on its Canary's status: `Succeeded` (or `Initialized`, a first deploy
/// that runs no analysis) or `Failed`, written after the span began.
fn finish_if_done(s: &mut StageSpan, c: &CanaryObs, at: Timestamp) {
    let promoted = condition(&c.conditions, "Promoted");
    let when = promoted
        .filter(|p| p.reason == c.phase)
        .and_then(|p| p.last_transition)
        .or(c.last_transition);
    // Earlier, it is the previous run's outcome: Flagger has not seen the new template yet.
    let Some(when) = when.filter(|t| *t >= s.start) else {
        return;
    };
    let when = when.min(at.max(s.start));
    let primary = c.primary().name;
    match c.phase.as_str() {
        "Succeeded" => s.finish(
            when,
            StageResult::Succeeded,
            format!("canary analysis passed; promoted to {primary}"),
        ),
        "Initialized" => s.finish(
            when,
            StageResult::Succeeded,
            format!("canary initialised: {primary} created, no analysis on a first deploy"),
        ),
        "Failed" => {
            let message = promoted
                .map(|p| p.message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "Canary analysis failed.".to_string());
            s.finish(
                when,
                StageResult::Failed(Failure {
                    reason: "CanaryRolledBack".into(),
                    message: message.clone(),
                    diverges_at: Stage::Traffic,
                }),
                format!("CanaryRolledBack: {message} ({primary} keeps the previous version)"),
            );
        }
        _ => {}
    }
}

/// What a Flagger Event says (every one has reason `Synced`: the message tells them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventKind {
    NewRevision,
    Restarted,
    Started,
    Weight(i64),
    PrimaryWeight,
    Iteration(i64),
    /// A failed metric or webhook check (`Halt … advancement …`).
    CheckFailed,
    /// Halted for an approval gate.
    Waiting,
    /// An approval gate passed (`Confirm-rollout`, `Confirm-promotion`,
    /// `Confirm-traffic-increase check … passed`).
    Approved,
    NotReady,
    Webhook,
    Promoting,
    Routing,
    Promoted,
    Rollback(i64),
    Failed,
    Other,
}

impl EventKind {
    /// The order of a run's steps.
    fn rank(self) -> u8 {
        match self {
            EventKind::NewRevision | EventKind::Restarted | EventKind::Approved => 0,
            EventKind::Webhook => 1,
            EventKind::Started => 2,
            EventKind::NotReady | EventKind::Waiting | EventKind::Other => 3,
            EventKind::CheckFailed => 4,
            EventKind::Weight(_) | EventKind::Iteration(_) => 5,
            EventKind::Promoting => 6,
            EventKind::PrimaryWeight | EventKind::Routing => 7,
            EventKind::Promoted => 8,
            EventKind::Rollback(_) => 9,
            EventKind::Failed => 10,
        }
    }

    fn name(self) -> &'static str {
        match self {
            EventKind::NewRevision => "canary.new_revision",
            EventKind::Restarted => "canary.restarted",
            EventKind::Started => "canary.started",
            EventKind::Weight(_) => "canary.weight",
            EventKind::PrimaryWeight => "canary.primary_weight",
            EventKind::Iteration(_) => "canary.iteration",
            EventKind::CheckFailed => "canary.check_failed",
            EventKind::Waiting => "canary.waiting",
            EventKind::Approved => "canary.approved",
            EventKind::NotReady => "canary.not_ready",
            EventKind::Webhook => "canary.webhook",
            EventKind::Promoting => "canary.promoting",
            EventKind::Routing => "canary.routing",
            EventKind::Promoted => "canary.promoted",
            EventKind::Rollback(_) => "canary.rollback",
            EventKind::Failed => "canary.failed",
            EventKind::Other => "canary.event",
        }
    }
}

/// The prefix client-go's event aggregator gives the Event that stands for ten or more
/// similar ones (same object, type and reason: every Normal Event of a Canary) within ten
/// minutes; it keeps patching that Event's count, `lastTimestamp` and message.
const COMBINED: &str = "(combined from similar events): ";

/// Flagger's message templates (v1.44), the `(combined from similar events): ` prefix of
/// client-go's aggregation removed.
fn classify(message: &str) -> EventKind {
    let m = message.strip_prefix(COMBINED).unwrap_or(message);
    let last_number = |s: &str| {
        s.rsplit(' ')
            .next()
            .and_then(|w| w.split('/').next())
            .and_then(|n| n.parse::<i64>().ok())
    };
    if m.starts_with("New revision detected! Restarting analysis") {
        EventKind::Restarted
    } else if m.starts_with("New revision detected!") {
        EventKind::NewRevision
    } else if m.starts_with("Starting canary analysis") {
        EventKind::Started
    } else if m.starts_with("Advance ") && m.contains(" canary weight ") {
        last_number(m).map_or(EventKind::Other, EventKind::Weight)
    } else if m.starts_with("Advance ") && m.contains(" canary iteration ") {
        last_number(m).map_or(EventKind::Other, EventKind::Iteration)
    } else if m.starts_with("Advance ") && m.contains(" primary weight ") {
        EventKind::PrimaryWeight
    } else if m.starts_with("Halt ") && m.contains(" waiting for ") {
        EventKind::Waiting
    } else if m.starts_with("Halt ") {
        EventKind::CheckFailed
    } else if m.contains(" not ready: ") || m.starts_with("halt ") {
        EventKind::NotReady
    } else if m.starts_with("Copying ") && m.contains(" template spec to ") {
        EventKind::Promoting
    } else if m.starts_with("Routing all traffic to") || m.starts_with("Stop traffic mirroring") {
        EventKind::Routing
    } else if m.starts_with("Promotion completed!") {
        EventKind::Promoted
    } else if m.starts_with("Rolling back ") {
        let reached = m.contains("failed checks threshold reached");
        EventKind::Rollback(if reached {
            last_number(m).unwrap_or(0)
        } else {
            -1
        })
    } else if m.starts_with("Canary failed!") || m.starts_with("Promotion of ") {
        EventKind::Failed
    } else if m.starts_with("Confirm-") && m.ends_with(" passed") {
        EventKind::Approved
    } else if m.ends_with(" passed") || (m.contains(" hook ") && m.contains(" failed")) {
        EventKind::Webhook
    } else {
        EventKind::Other
    }
}

/// What a run's Events add up to.
#[derive(Default)]
struct Tally {
    weight: Option<i64>,
    iteration: Option<i64>,
    halts: i64,
    rollback_checks: Option<i64>,
    /// Weights and iterations an Event of their own says (not a combined one).
    said_weights: Vec<i64>,
    said_iterations: Vec<i64>,
}

impl Tally {
    fn add(&mut self, kind: EventKind, count: i64) {
        match kind {
            EventKind::Weight(w) => self.weight = Some(self.weight.unwrap_or(0).max(w)),
            EventKind::Iteration(n) => self.iteration = Some(self.iteration.unwrap_or(0).max(n)),
            EventKind::CheckFailed => self.halts = self.halts.saturating_add(count.max(1)),
            EventKind::Rollback(n) if n >= 0 => self.rollback_checks = Some(n),
            _ => {}
        }
    }
}

/// The span events the status adds to Flagger's Events of a run within `window`: a weight or
/// iteration step no Event of its own says (client-go folded it into a combined Event), and
/// a gate's start and end when no Event says them.
fn status_events(
    run: &StatusRun,
    obj: &ObjectRef,
    tally: &Tally,
    events: &[(u8, SpanEventRecord)],
    (from, to): (Timestamp, Timestamp),
) -> Vec<(u8, SpanEventRecord)> {
    let near = |name: &str, at: Timestamp| {
        events
            .iter()
            .any(|(_, e)| e.name == name && e.time.duration_since(at).abs() <= EVENT_WINDOW_SLACK)
    };
    let record = |kind: EventKind, at: Timestamp, extra: Vec<(&'static str, AttrValue)>| {
        let mut attrs = vec![
            (
                attr::EVENT_OBJECT,
                AttrValue::from(format!("Canary/{}", obj.name)),
            ),
            (attr::FLAGGER_CANARY_SOURCE, AttrValue::from("status")),
        ];
        attrs.extend(extra);
        (
            kind.rank(),
            SpanEventRecord {
                name: kind.name().into(),
                time: at,
                attributes: crate::trace::Attributes(attrs),
            },
        )
    };
    let within = |t: Timestamp| t >= from && t <= to;
    let mut out = Vec::new();
    for st in run.steps.iter().filter(|st| within(st.at)) {
        if st.weight > 0 && !tally.said_weights.contains(&st.weight) {
            let w = (attr::FLAGGER_CANARY_WEIGHT, AttrValue::Int(st.weight));
            out.push(record(EventKind::Weight(st.weight), st.at, vec![w]));
        } else if st.weight == 0
            && st.iterations > 0
            && !tally.said_iterations.contains(&st.iterations)
        {
            let n = (
                attr::FLAGGER_CANARY_ITERATIONS,
                AttrValue::Int(st.iterations),
            );
            out.push(record(EventKind::Iteration(st.iterations), st.at, vec![n]));
        }
    }
    for g in run
        .gates
        .iter()
        .filter(|g| within(g.start) && is_gate(&g.phase))
    {
        let phase = (attr::FLAGGER_CANARY_PHASE, AttrValue::from(g.phase.clone()));
        if !near(EventKind::Waiting.name(), g.start) {
            out.push(record(EventKind::Waiting, g.start, vec![phase.clone()]));
        }
        if let Some(end) = g.end.filter(|e| !near(EventKind::Approved.name(), *e)) {
            out.push(record(EventKind::Approved, end, vec![phase]));
        }
    }
    out
}

/// Puts on each `canary.approved` span event the seconds since the `canary.waiting` before it.
fn mark_gate_waits(events: &mut [(u8, SpanEventRecord)]) {
    let mut since: Option<Timestamp> = None;
    for (_, e) in events.iter_mut() {
        if e.name == EventKind::Waiting.name() {
            since = since.or(Some(e.time));
        } else if e.name == EventKind::Approved.name() {
            if let Some(w) = since.take() {
                let secs = e.time.duration_since(w).as_secs().max(0);
                e.attributes
                    .0
                    .push((attr::FLAGGER_CANARY_GATE_WAIT, AttrValue::Int(secs)));
            }
        }
    }
}

/// The evidence of a rolled-back analysis: the rollback, the scale-down, and the last failed
/// check, as `Canary/<name> <reason>: <message>`.
pub(in crate::correlate) fn evidence(span: &StageSpan) -> Vec<String> {
    let text = |e: &SpanEventRecord| {
        format!(
            "{} {}: {}",
            e.attributes.get_str(attr::EVENT_OBJECT).unwrap_or_default(),
            e.attributes.get_str(attr::EVENT_REASON).unwrap_or_default(),
            e.attributes
                .get_str(attr::EVENT_MESSAGE)
                .unwrap_or_default()
        )
    };
    let named = |name: &'static str| span.events.iter().filter(move |e| e.name == name);
    named(EventKind::Rollback(0).name())
        .chain(named(EventKind::Failed.name()))
        .chain(named(EventKind::CheckFailed.name()).next_back())
        .map(text)
        .take(3)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{classify, EventKind};

    #[test]
    fn flagger_messages_are_told_apart() {
        for (m, k) in [
            ("New revision detected! Scaling up podinfo.test", EventKind::NewRevision),
            ("New revision detected! Restarting analysis for podinfo.test", EventKind::Restarted),
            ("Starting canary analysis for podinfo.test", EventKind::Started),
            ("Advance podinfo.test canary weight 15", EventKind::Weight(15)),
            ("Advance podinfo.test canary iteration 3/10", EventKind::Iteration(3)),
            ("Advance podinfo.test primary weight 50", EventKind::PrimaryWeight),
            ("Halt podinfo.test advancement success rate 69.17% < 99%", EventKind::CheckFailed),
            (
                "(combined from similar events): Halt podinfo.test advancement success rate 38.08% < 99%",
                EventKind::CheckFailed,
            ),
            ("Halt podinfo.test advancement waiting for approval gate", EventKind::Waiting),
            (
                "canary deployment podinfo.test not ready: waiting for rollout to finish: 0 of 2 (readyThreshold 100%) updated replicas are available",
                EventKind::NotReady,
            ),
            ("Pre-rollout check conformance-test passed", EventKind::Webhook),
            ("Confirm-promotion check approve passed", EventKind::Approved),
            (
                "(combined from similar events): Confirm-rollout check gate passed",
                EventKind::Approved,
            ),
            (
                "Halt frontend.web advancement waiting for promotion approval approve",
                EventKind::Waiting,
            ),
            ("Copying podinfo.test template spec to podinfo-primary.test", EventKind::Promoting),
            ("Routing all traffic to primary", EventKind::Routing),
            ("Promotion completed! Scaling down podinfo.test", EventKind::Promoted),
            ("Rolling back podinfo.test failed checks threshold reached 10", EventKind::Rollback(10)),
            ("Rolling back podinfo.test manual webhook invoked", EventKind::Rollback(-1)),
            ("Canary failed! Scaling down podinfo.test", EventKind::Failed),
            ("all the metrics providers are available!", EventKind::Other),
        ] {
            assert_eq!(classify(m), k, "{m}");
        }
    }
}
