//! The reconcile stage: a Kustomization or HelmRelease attempting the promoted revision, with
//! its `apply` child (objects applied, or the Helm release installed/upgraded).
//!
//! A reconciler joins a promotion when its annotation names it, or when its
//! `lastAttemptedRevision` (or HelmRelease `lastAttemptedRevisionDigest`) matches a
//! promotion's revision (`matching` decides among several). It also remembers which
//! Deployments it applies, so that their rollouts join the same promotion, and what each apply
//! changed (kustomize-controller's `Progressing` event).

use jiff::{SignedDuration, Timestamp};

use super::super::config::{add, CLAIM_SLACK};
use super::super::engine::Engine;
use super::super::promotion::{Reconcile, Successor};
use super::super::span::{Failure, StageResult, StageSpan};
use super::super::state_of;
use super::matching::{choose, Evidence};
use super::trigger::{claim_trigger, update_trigger, TriggerDraft};
use crate::model::{condition, CondStatus, Condition, Kind, ObjectRef, ReconcilerObs};
use crate::revision;
use crate::trace::{attr, SpanId, Stage};

/// How many revisions' change lists are kept per reconciler.
const CHANGES_KEPT: usize = 5;

#[derive(Default)]
pub(in crate::correlate) struct ReconcilerState {
    /// Boxed: the map of states stays small, most of its slots being empty.
    pub last: Option<Box<ReconcilerObs>>,
    pub trigger: Option<TriggerDraft>,
    /// The promotion this reconciler last joined.
    pub joined: Option<String>,
    /// Changed objects reported by the controller's `Progressing` event, by revision, and
    /// the event's time (when the apply was done).
    pub changes: Vec<(String, Vec<String>, Timestamp)>,
    /// Revisions the controller reported finished (`ReconciliationSucceeded`, "Reconciliation
    /// finished in …"): with no changes reported for one, its apply changed nothing.
    pub finished: Vec<String>,
    /// The last change of its spec seen: the generation it made and when. A first sighting
    /// counts as one; when its `Ready` condition speaks for that generation already, the
    /// change was handled by then, and it is dated by the condition (see [`SpecChange`]).
    pub spec_changed: Option<SpecChange>,
}

/// A change of a reconciler's spec: the generation it made, when it was seen, and whether that
/// time is when the controller had already handled it (a first sighting: the change came
/// earlier, at an unknown time).
#[derive(Clone, Copy)]
pub(in crate::correlate) struct SpecChange {
    pub generation: i64,
    pub at: Timestamp,
    pub handled: bool,
}

impl ReconcilerState {
    /// What the apply of `revision` changed, if the controller said.
    pub fn changes_of(&self, revision: &str) -> Option<&[String]> {
        self.changes
            .iter()
            .find(|(r, _, _)| r == revision)
            .map(|(_, c, _)| c.as_slice())
    }

    /// When the controller reported the apply of `revision` (its `Progressing` event).
    pub fn applied_at(&self, revision: &str) -> Option<Timestamp> {
        self.changes
            .iter()
            .find(|(r, _, _)| r == revision)
            .map(|(_, _, t)| *t)
    }

    /// Whether the apply of `revision` is known to have changed something (`Some(true)`),
    /// known to have changed nothing (`Some(false)`: finished with no changes reported), or
    /// not known (the controller's events were not seen).
    pub fn changed(&self, revision: &str) -> Option<bool> {
        if self.changes_of(revision).is_some() {
            Some(true)
        } else if self.finished.iter().any(|r| r == revision) {
            Some(false)
        } else {
            None
        }
    }
}

fn evidence(obs: &ReconcilerObs) -> Evidence<'_> {
    let mut words = vec![obs.object.name.as_str(), obs.object.namespace.as_str()];
    words.extend(obs.path.as_deref());
    words.extend(obs.target_namespace.as_deref());
    Evidence {
        tag: None,
        repository: None,
        source: obs.source_ref.as_ref(),
        words,
    }
}

impl Engine {
    /// `obs` comes boxed as the state keeps it (`Engine::hold` keeps it so).
    pub(in crate::correlate) fn on_reconciler(&mut self, at: Timestamp, obs: Box<ReconcilerObs>) {
        // The key is copied only for a reconciler seen the first time.
        let Some(st) = state_of(&mut self.reconcilers, &obs.object) else {
            return;
        };
        update_trigger(
            &mut st.trigger,
            &obs.requested_at,
            &obs.last_handled,
            &obs.conditions,
            at,
        );
        if st.last.as_deref() == Some(&*obs) {
            return; // a re-list: nothing new
        }
        if let Some(g) = obs.generation {
            let before = st.last.as_ref().map(|l| l.generation);
            let handled = condition(&obs.conditions, "Ready")
                .filter(|c| c.observed_generation == Some(g))
                .and_then(|c| c.last_transition);
            let change = match before {
                Some(Some(b)) => (g > b).then_some(SpecChange {
                    generation: g,
                    at,
                    handled: false,
                }),
                Some(None) => None,
                None => Some(SpecChange {
                    generation: g,
                    at: handled.map_or(at, |t| t.min(at)),
                    handled: handled.is_some(),
                }),
            };
            if change.is_some() {
                st.spec_changed = change;
            }
        }
        let old_rev = st.last.as_ref().and_then(|l| l.last_attempted.as_deref());
        self.revs
            .reindex(&obs.object, old_rev, obs.last_attempted.as_deref());
        // Joining reads the object's trigger and joined promotion, not its last observation:
        // store it after.
        self.correlate_reconciler(at, &obs);
        let early = condition(&obs.conditions, "Ready").is_some_and(|c| {
            c.status == CondStatus::False
                && (terminal_before_attempt(&c.reason, &c.message)
                    || setback(obs.object.kind, &c.reason, &c.message, &obs) == Setback::Waits)
        });
        if early {
            self.failed_early.insert(obs.object.clone());
        } else {
            self.failed_early.remove(&obs.object);
        }
        if let Some(st) = self.reconcilers.get_mut(&obs.object) {
            self.followers
                .update(&obs.object, st.last.as_deref(), Some(&obs));
            st.last = Some(obs);
        }
    }

    /// Reads what a kustomize-controller event says about an apply: the objects a
    /// `Progressing` event lists as changed, or that a `ReconciliationSucceeded` event finished
    /// the revision; and what a helm-controller `DriftCorrected` event changed back. Both the
    /// core/v1 Event and the notification carry it.
    pub(in crate::correlate) fn record_apply_event(
        &mut self,
        object: &ObjectRef,
        revision: &str,
        reason: &str,
        message: &str,
        time: Timestamp,
    ) {
        // helm-controller corrects drift (`driftDetection.mode: enabled`) outside any upgrade
        // and says what it changed back in a `DriftCorrected` Event, in the same change-set
        // form as kustomize-controller's.
        let helm_drift = object.kind == Kind::HelmRelease && reason == "DriftCorrected";
        if object.kind != Kind::Kustomization && !helm_drift {
            return;
        }
        let Some(st) = state_of(&mut self.reconcilers, object) else {
            return;
        };
        match reason {
            "Progressing" | "DriftCorrected" => {
                let changed = changed_objects(message);
                if changed.is_empty() {
                    return;
                }
                // The notification and the core/v1 Event of one report: the earlier time. A
                // later apply of the same revision (a periodic run correcting drift) is one
                // of its own.
                let same =
                    |t: Timestamp| add(t, CLAIM_SLACK) >= time && add(time, CLAIM_SLACK) >= t;
                if let Some(c) = st
                    .changes
                    .iter_mut()
                    .find(|(r, _, t)| r == revision && same(*t))
                {
                    c.2 = c.2.min(time);
                } else {
                    st.changes.push((revision.to_string(), changed, time));
                    if st.changes.len() > CHANGES_KEPT {
                        st.changes.remove(0);
                    }
                }
            }
            "ReconciliationSucceeded" if !st.finished.iter().any(|r| r == revision) => {
                st.finished.push(revision.to_string());
                if st.finished.len() > CHANGES_KEPT {
                    st.finished.remove(0);
                }
            }
            _ => {}
        }
    }

    /// Which open promotion this reconcile belongs to.
    fn reconciler_promotion(
        &mut self,
        at: Timestamp,
        obs: &ReconcilerObs,
        rev: &str,
    ) -> Option<String> {
        if let Some(n) = &obs.marks.promotion_id {
            // When the reconcile happened, as far as the object says.
            let evidence = condition(&obs.conditions, "Ready")
                .and_then(|c| c.last_transition)
                .unwrap_or(at)
                .min(at);
            if self.adopt_annotation(at, n, rev) {
                return Some(n.clone());
            }
            return self.ensure_annotated(n, evidence).then(|| n.clone());
        }
        let keys: Vec<_> = std::iter::once(rev)
            .chain(obs.last_attempted_digest.as_deref())
            .flat_map(revision::lookup_key_refs)
            .collect();
        let candidates = self.reg.by_keys(keys.iter().map(|k| &**k));
        // Several left: the newest (the one a later report asked for).
        choose(&self.reg, candidates, || evidence(obs)).pop()
    }

    /// The open promotion whose apply changed `obs`'s spec (a HelmRelease whose values changed
    /// in Git, applied by a Kustomization): the Kustomization that applies it joined that
    /// promotion, and the change came while its reconcile ran (or within the settle period
    /// after). The generation the change made and when it came.
    fn applier_promotion(&self, obs: &ReconcilerObs) -> Option<(String, i64, Timestamp)> {
        let applier = obs.applied_by.as_deref()?;
        let change = self.reconcilers.get(&obs.object)?.spec_changed?;
        let (g, t) = (change.generation, change.at);
        let pid = self.reconcilers.get(applier)?.joined.clone()?;
        let p = self.reg.get(&pid).filter(|_| self.reg.is_open(&pid))?;
        let settle = self.cfg.deadlines.settle;
        // A change seen as it came may be seen a little before the apply is known; one the
        // controller had handled already came earlier still, so its time gets no slack.
        let slack = if change.handled {
            jiff::SignedDuration::ZERO
        } else {
            CLAIM_SLACK
        };
        let applying = p.reconciles.iter().find(|r| {
            r.span.object.as_ref() == Some(applier)
                && r.generation.is_none()
                && r.span.result != StageResult::NoChange
                && r.span.start <= add(t, slack)
                && r.span.end.is_none_or(|e| add(e, settle) >= t)
        })?;
        // When the change came: as seen, or, for one handled before it was seen, when the
        // apply that made it began (its rollouts came after that, not after the handling).
        let start = if change.handled {
            applying
                .apply
                .as_ref()
                .map_or(applying.span.start, |a| a.start)
        } else {
            t
        };
        Some((pid, g, start))
    }

    /// A Kustomization that failed for good, or waits, on its source's newest artifact before
    /// recording the attempt (kustomize-controller checks the artifact, `spec.dependsOn` and
    /// `spec.path` before it sets `lastAttemptedRevision`): the open promotion of that
    /// revision, and the revision.
    fn before_attempt(&mut self, at: Timestamp, obs: &ReconcilerObs) -> Option<(String, String)> {
        if obs.object.kind != Kind::Kustomization {
            return None;
        }
        let ready = condition(&obs.conditions, "Ready").filter(|c| {
            c.status == CondStatus::False
                && (terminal_before_attempt(&c.reason, &c.message)
                    || setback(obs.object.kind, &c.reason, &c.message, obs) == Setback::Waits)
        })?;
        let src = self
            .sources
            .get(obs.source_ref.as_ref()?)?
            .last
            .as_deref()?;
        let rev = src.revision.clone()?;
        if obs.last_attempted.as_deref() == Some(rev.as_str()) {
            return None;
        }
        // A failure from before the artifact was stored is about an older one.
        let stored = src.artifact_updated?;
        if ready
            .last_transition
            .is_some_and(|t| add(t, CLAIM_SLACK) < stored)
        {
            return None;
        }
        let pid = self
            .reconciler_promotion(at, obs, &rev)
            .filter(|p| self.reg.is_open(p))?;
        Some((pid, rev))
    }

    /// Reconcilers whose spec `applier`'s apply changed, seen before that apply joined `pid`
    /// (a watch may deliver them first), join it now.
    fn claim_applied(&mut self, at: Timestamp, applier: &ObjectRef, pid: &str) {
        let Some(p) = self.reg.get(pid) else {
            return;
        };
        let waiting: Vec<ReconcilerObs> = self
            .followers
            .applied_by(applier)
            .iter()
            .filter_map(|o| self.reconcilers.get(o))
            .filter(|s| s.spec_changed.is_some())
            .filter_map(|s| s.last.as_deref())
            .filter(|o| o.applied_by.as_deref() == Some(applier) && !p.touches(&o.object))
            .cloned()
            .collect();
        for obs in waiting {
            self.correlate_reconciler(at, &obs);
        }
    }

    pub(in crate::correlate) fn correlate_reconciler(
        &mut self,
        at: Timestamp,
        obs: &ReconcilerObs,
    ) {
        // By the revision it attempts; else through the apply that changed its spec.
        let by_revision = obs.last_attempted.as_deref().and_then(|rev| {
            self.reconciler_promotion(at, obs, rev)
                .filter(|p| self.reg.is_open(p))
                .map(|pid| (pid, rev.to_string(), None))
        });
        let by_change = || {
            self.applier_promotion(obs).map(|(pid, g, t)| {
                let rev = obs.last_attempted.clone().unwrap_or_default();
                (pid, rev, Some((g, t)))
            })
        };
        let joined = by_revision.or_else(by_change);
        // Else a failure or wait before the attempt was recorded, on the source's newest
        // revision.
        let before_attempt = joined.is_none();
        let Some((pid, rev, change)) = joined.or_else(|| {
            self.before_attempt(at, obs)
                .map(|(pid, rev)| (pid, rev, None))
        }) else {
            return;
        };
        // The reconciler moved on from an earlier promotion's revision: that one is superseded.
        let previous = self
            .reconcilers
            .get(&obs.object)
            .and_then(|s| s.joined.clone());
        if let Some(prev) = previous.filter(|p| *p != pid) {
            let still_open = self.reg.get(&prev).is_some_and(|p| {
                p.reconciles
                    .iter()
                    .any(|r| r.span.object.as_ref() == Some(&obs.object) && r.span.is_open())
            });
            let newer = self.reg.get(&pid).map(|n| Successor {
                id: n.id.clone(),
                trace_id: n.trace_id,
                root: n.root,
                at,
            });
            if let (true, Some(newer)) = (still_open, newer) {
                self.supersede(&prev, newer);
            }
        }
        if let Some(st) = self.reconcilers.get_mut(&obs.object) {
            st.joined = Some(pid.clone());
        }
        let trigger = self
            .reconcilers
            .get_mut(&obs.object)
            .and_then(|s| s.trigger.as_mut());
        let cluster = &self.cfg.cluster;
        let d = &self.cfg.deadlines;
        let via = self.receivers.targeting(&obs.object);
        let Some(p) = self.reg.get_mut(&pid) else {
            return;
        };
        let hold = p.deadline;
        self.touched.insert(pid.clone());
        claim_trigger(p, trigger, &obs.object, &obs.uid, cluster, d, via);
        let helm = obs.object.kind == Kind::HelmRelease;
        let generation = change.map(|(g, _)| g);
        let idx = match p.reconciles.iter().position(|r| {
            r.span.object.as_ref() == Some(&obs.object)
                && r.generation == generation
                && (generation.is_some() || r.revision == rev)
        }) {
            Some(i) => i,
            None => {
                let ready = condition(&obs.conditions, "Ready");
                let start =
                    change.map_or_else(|| p.reconcile_start(&obs.object), |(_, t)| t.max(p.start));
                // When the revision was first applied: a Kustomization's `status.history` says;
                // its `Ready` transition moves with every periodic run, so it only bounds it.
                let first_applied = obs
                    .history
                    .iter()
                    .find(|h| h.revision == rev)
                    .and_then(|h| h.first_reconciled);
                let ready_before = ready.is_some_and(|c| {
                    c.status == CondStatus::True && c.last_transition.is_some_and(|t| t < p.start)
                });
                let already = change.is_none()
                    && obs.last_applied.as_deref() == Some(rev.as_str())
                    && ready.is_some_and(|c| c.status == CondStatus::True)
                    && first_applied.map_or(ready_before, |f| f < p.start);
                // Joined through an apply: below that apply, keyed by the generation it made.
                let (parent, key) = match (change, obs.applied_by.as_deref()) {
                    (Some((g, _)), Some(applier)) => (
                        p.reconciles
                            .iter()
                            .find(|r| r.span.object.as_ref() == Some(applier))
                            .and_then(|r| r.apply.as_ref())
                            .map_or(p.root, |a| a.span_id),
                        format!("generation/{g}"),
                    ),
                    _ => (p.root, rev.clone()),
                };
                let timeout = reconcile_window(obs, d.reconcile);
                let mk = |stage, parent| {
                    let mut s = StageSpan::new(
                        stage,
                        SpanId::default(),
                        parent,
                        Some(obs.object.clone()),
                        start,
                        add(start, timeout),
                    );
                    s.derive_id(&pid, cluster, &obs.uid, &key);
                    s.set_object_attrs(&obs.object);
                    if !rev.is_empty() {
                        s.attrs.set(attr::FLUX_REVISION, rev.clone());
                        s.key.revision = Some(rev.clone());
                    }
                    s
                };
                let span = mk(Stage::Reconcile, parent);
                let apply = mk(Stage::Apply, span.span_id);
                let mut r = Reconcile::new(span, Some(apply), rev.clone(), generation);
                r.seen = false;
                if already {
                    let t = first_applied
                        .or_else(|| ready.and_then(|c| c.last_transition))
                        .unwrap_or(at);
                    r.span.start = t;
                    let msg = format!("revision {rev} was already applied at {t}");
                    r.span.finish(t, StageResult::NoChange, msg.clone());
                    if let Some(a) = r.apply.as_mut() {
                        a.start = t;
                        a.finish(t, StageResult::NoChange, msg);
                    }
                }
                p.add_reconcile(r);
                p.reconciles.len() - 1
            }
        };
        let r = &mut p.reconciles[idx];
        let first = !r.seen;
        r.seen = true;
        let ready = condition(&obs.conditions, "Ready");
        let waits = ready.filter(|c| {
            c.status == CondStatus::False
                && (before_attempt || speaks_for(r, obs))
                && setback(obs.object.kind, &c.reason, &c.message, obs) == Setback::Waits
        });
        match waits {
            Some(c) => r.wait(c.last_transition.unwrap_or(at), hold, &c.reason, &c.message),
            None => {
                // Flux went on: from the `Ready` transition that ended the wait, if seen.
                let since = r.waiting.as_ref().map(|w| w.since);
                let moved = ready
                    .and_then(|c| c.last_transition)
                    .filter(|t| since.is_some_and(|s| *t > s));
                r.resume(moved.unwrap_or(at).min(at));
            }
        }
        // The reconcile's time runs from when Flux attempted the revision (`Reconciling` went
        // True): an agent that did not see a wait before it still gives it its whole window.
        // Once done, `status.history` says when its run began (it ended at `firstReconciled`
        // and took `lastReconciledDuration`).
        let ran = obs
            .history
            .iter()
            .find(|h| h.revision == r.revision && h.first_reconciled == h.last_reconciled)
            .and_then(|h| h.first_reconciled?.checked_sub(h.last_duration?).ok());
        let attempt = condition(&obs.conditions, "Reconciling")
            .filter(|c| c.status == CondStatus::True)
            .and_then(|c| c.last_transition)
            .or(ran)
            .filter(|t| {
                *t > r.span.start && r.waiting.is_none() && !before_attempt && speaks_for(r, obs)
            });
        if let Some(t) = attempt {
            let deadline = add(t, reconcile_window(obs, d.reconcile));
            for s in std::iter::once(&mut r.span).chain(r.apply.as_mut()) {
                if s.is_open() {
                    s.deadline = s.deadline.max(deadline);
                }
            }
        }
        if before_attempt {
            if let Some(ready) =
                ready.filter(|c| r.span.is_open() && terminal_before_attempt(&c.reason, &c.message))
            {
                let end = ready.last_transition.unwrap_or(at).max(r.span.start);
                fail_reconcile(r, obs.object.kind, &ready.reason, &ready.message, end);
            }
        } else if helm {
            evaluate_helm(r, obs, at, first);
        } else {
            evaluate_kustomization(r, obs, at, first);
        }
        let reconcile_start = r.span.start;
        // A revision already applied changed nothing: it explains no rollout.
        let claim_until = match r.span.result {
            StageResult::NoChange => None,
            _ => Some(r.span.end.map(|e| add(e, self.cfg.deadlines.settle))),
        };
        self.claim_managed_rollouts(&obs.object, &pid, reconcile_start, claim_until);
        if obs.object.kind == Kind::Kustomization {
            self.claim_applied(at, &obs.object, &pid);
        }
    }
}

/// How long a reconcile of `obs` may take. A Kustomization with `spec.timeout` gets its first
/// attempt and one retry, as kustomize-controller runs them: health checks with a timeout of
/// `spec.timeout` but at least 30 s, polled every 5 s, and a failed one retried after
/// `spec.retryInterval` (default `spec.interval`); a slow rollout often passes on the retry.
/// Otherwise `spec.timeout`, or the reconcile deadline without one.
fn reconcile_window(obs: &ReconcilerObs, reconcile: SignedDuration) -> SignedDuration {
    const MIN_TIMEOUT: SignedDuration = SignedDuration::from_secs(30);
    const POLLS: SignedDuration = SignedDuration::from_secs(10);
    match (obs.object.kind, obs.timeout) {
        (Kind::Kustomization, Some(t)) => {
            let attempt = t.max(MIN_TIMEOUT);
            let retry = obs.retry_interval.unwrap_or(SignedDuration::ZERO);
            attempt
                .checked_mul(2)
                .and_then(|a| a.checked_add(retry))
                .and_then(|w| w.checked_add(POLLS))
                .unwrap_or(SignedDuration::MAX)
        }
        (_, Some(t)) => t,
        (_, None) => reconcile,
    }
}

/// What a reconciler's `Ready=False` means for the reconcile of a promotion.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::correlate) enum Setback {
    /// Flux waits before it attempts: a `dependsOn` object or the source is not ready (it
    /// requeues on its own). Evidence; its time does not count against the reconcile.
    Waits,
    /// A failed attempt Flux retries on its own: a Kustomization's health check (its rollout
    /// may still finish; a newer revision may cancel it), a Helm install, upgrade or test that
    /// neither stalled nor was remediated. Evidence until the reconcile's deadline.
    Retried,
    /// The verdict: Flux stalled, remediated, or the failure needs a new revision.
    Terminal,
}

pub(in crate::correlate) fn setback(
    kind: Kind,
    reason: &str,
    message: &str,
    obs: &ReconcilerObs,
) -> Setback {
    let stalled =
        condition(&obs.conditions, "Stalled").is_some_and(|c| c.status == CondStatus::True);
    if stalled || terminal_before_attempt(reason, message) {
        return Setback::Terminal;
    }
    match (kind, reason) {
        (_, "DependencyNotReady") | (Kind::HelmRelease, "SourceNotReady") => Setback::Waits,
        (_, "ArtifactFailed") if message.contains("artifact not found") => Setback::Waits,
        (Kind::Kustomization, "HealthCheckFailed" | "HealthCheckCanceled") => Setback::Retried,
        (Kind::HelmRelease, "InstallFailed" | "UpgradeFailed" | "TestFailed") => Setback::Retried,
        _ => Setback::Terminal,
    }
}

/// A Helm remediation that completed: the release is back where it was, so the upgrade failed
/// for good (helm-controller sets `Ready=False` with the `Remediated` condition's reason).
fn remediated(reason: &str) -> bool {
    matches!(reason, "RollbackSucceeded" | "UninstallSucceeded")
}

/// A failure kustomize-controller reports before it records the attempt, and that retrying the
/// same revision cannot mend: the Kustomization's `spec.path` is not in the artifact.
fn terminal_before_attempt(reason: &str, message: &str) -> bool {
    reason == "ArtifactFailed" && message.contains("kustomization path not found")
}

/// Whether `obs` reports on the reconcile `r` waits for: the revision it attempted, or, for a
/// reconcile joined through the apply that changed its spec, a `Ready` condition of that
/// generation or a later one.
fn speaks_for(r: &Reconcile, obs: &ReconcilerObs) -> bool {
    match r.generation {
        Some(_) => condition(&obs.conditions, "Ready").is_some_and(|c| of_generation(r, c)),
        None => obs.last_attempted.as_deref() == Some(r.revision.as_str()),
    }
}

/// Whether condition `c` is about the generation reconcile `r` waits for (always, for one
/// joined by its revision).
fn of_generation(r: &Reconcile, c: &Condition) -> bool {
    r.generation
        .is_none_or(|g| c.observed_generation.is_some_and(|o| o >= g))
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

/// The stage a reconciler's failure diverges at: a health check or a Helm wait that timed out
/// or found its resources stalled is the rollout's failure; an apply error is the apply's;
/// anything else the reconcile's. helm-controller 1.5+ waits with a kstatus poller: "timeout
/// waiting for: [...]" or "failed early due to stalled resources: [...]".
fn classify(kind: Kind, reason: &str, message: &str) -> Stage {
    let waited = message.contains("timed out waiting for the condition")
        || message.contains("context deadline exceeded")
        || message.contains("resources not ready")
        || message.contains("timeout waiting for:")
        || message.contains("failed early due to stalled resources");
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

pub(in crate::correlate) fn fail_reconcile(
    r: &mut Reconcile,
    kind: Kind,
    reason: &str,
    message: &str,
    end: Timestamp,
) {
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
    if !r.span.is_open() || !speaks_for(r, obs) {
        return;
    }
    // Conditions of the generation waited for are this reconcile's, however old they look.
    let first = first && r.generation.is_none();
    let rev = r.revision.clone();
    let healthy = condition(&obs.conditions, "Healthy");
    let reconciling = condition(&obs.conditions, "Reconciling");
    if let Some(a) = r.apply.as_mut().filter(|a| a.is_open()) {
        let checking = reconciling.is_some_and(|c| c.message.starts_with("Running health checks"))
            || healthy.is_some_and(|c| c.status == CondStatus::Unknown);
        if checking {
            // Provisional (the verdict takes the controller's report of the apply), but from
            // the object: a time of arrival would hold the verdict a settle period after it.
            let t = healthy
                .filter(|c| c.status == CondStatus::Unknown)
                .and_then(|c| c.last_transition)
                .or(reconciling.and_then(|c| c.last_transition))
                .filter(|t| *t >= a.start)
                .unwrap_or(at)
                .min(at);
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
            .is_none_or(|t| add(t, CLAIM_SLACK) >= r.span.start);
    match ready.status {
        CondStatus::True if fresh && obs.last_applied.as_deref() != Some(rev.as_str()) => {
            // Ready at the attempted revision: kustomize-controller writes
            // `lastAppliedRevision` in its next patch; the deadline waits for it.
            let wait = add(end.max(at), CLAIM_SLACK);
            for s in std::iter::once(&mut r.span).chain(r.apply.as_mut()) {
                if s.is_open() {
                    s.deadline = s.deadline.max(wait);
                }
            }
        }
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
            match setback(Kind::Kustomization, &ready.reason, &ready.message, obs) {
                // Evidence until the deadline (see `Engine::check`); the Event is on the span.
                Setback::Retried => retry(r, Kind::Kustomization, ready, end),
                // See `Engine::correlate_reconciler`.
                Setback::Waits => {}
                Setback::Terminal => {
                    fail_reconcile(r, Kind::Kustomization, &ready.reason, &ready.message, end)
                }
            }
        }
        _ => {}
    }
}

/// A failed attempt Flux retries: evidence on `r` until its deadline.
fn retry(r: &mut Reconcile, kind: Kind, ready: &Condition, end: Timestamp) {
    let failure = Failure {
        reason: ready.reason.clone(),
        message: ready.message.clone(),
        diverges_at: classify(kind, &ready.reason, &ready.message),
    };
    r.retrying = Some((failure, end));
}

fn evaluate_helm(r: &mut Reconcile, obs: &ReconcilerObs, at: Timestamp, first: bool) {
    if !r.span.is_open() || !speaks_for(r, obs) {
        return;
    }
    let first = first && r.generation.is_none();
    let rev = obs
        .last_attempted
        .clone()
        .unwrap_or_else(|| r.revision.clone());
    let start = r.span.start;
    let fresh = |c: &Condition| {
        !first
            || c.last_transition
                .is_none_or(|t| add(t, CLAIM_SLACK) >= start)
    };
    let ready = condition(&obs.conditions, "Ready").filter(|c| fresh(c));
    let setback = ready
        .filter(|c| c.status == CondStatus::False)
        .map(|c| setback(Kind::HelmRelease, &c.reason, &c.message, obs));
    // A failed release Flux retries is not the apply's verdict yet.
    let retried = setback == Some(Setback::Retried);
    if let Some(rel) = condition(&obs.conditions, "Released")
        .filter(|c| fresh(c) && of_generation(r, c) && !retried)
    {
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
    let Some(ready) = ready else {
        return;
    };
    let end = ready.last_transition.unwrap_or(at).max(start);
    match (ready.status, setback) {
        (CondStatus::True, _) => {
            if let Some(a) = r.apply.as_mut() {
                a.finish(end, StageResult::Succeeded, format!("released {rev}"));
            }
            r.span
                .finish(end, StageResult::Succeeded, ready.message.clone());
        }
        (CondStatus::False, Some(Setback::Retried)) => retry(r, Kind::HelmRelease, ready, end),
        (CondStatus::False, Some(Setback::Waits)) => {}
        (CondStatus::False, _) if remediated(&ready.reason) => {
            // Diverges where the release failed; the remediation is evidence.
            let failed = r.retrying.take().map(|(f, _)| (f.reason, f.message));
            let released = condition(&obs.conditions, "Released")
                .filter(|c| c.status == CondStatus::False)
                .map(|c| (c.reason.clone(), c.message.clone()));
            let (reason, message) = failed
                .or(released)
                .unwrap_or_else(|| (ready.reason.clone(), ready.message.clone()));
            let message = format!("{message}; remediated: {}", ready.message);
            fail_reconcile(r, Kind::HelmRelease, &reason, &message, end);
        }
        (CondStatus::False, _) => {
            fail_reconcile(r, Kind::HelmRelease, &ready.reason, &ready.message, end)
        }
        (CondStatus::Unknown, _) => {}
    }
}
