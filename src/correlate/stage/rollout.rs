//! The rollout stage: a Deployment rolling out a new pod template, from the generation bump
//! until it completes, fails (`ProgressDeadlineExceeded`) or times out. A DaemonSet rolls out
//! the same way, judged by its counts (it has no `Progressing` condition) within the engine's
//! rollout deadline (it has no progress deadline).
//!
//! A rollout starts unclaimed. It is claimed by the promotion its pod template annotation
//! names, or by the promotion whose reconcile applied it (the Deployment's Flux labels name
//! the Kustomization or HelmRelease). One that nobody claims within the settle period after it
//! ends becomes its own trace, `traceability=missing`.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

use super::super::config::{add, CLAIM_SLACK, IDLE_RETENTION};
use super::super::engine::Engine;
use super::super::promotion::{push_span, Promotion, Traceability};
use super::super::span::{Failure, StageResult, StageSpan};
use super::super::timers::Wake;
use super::super::Map;
use super::causes::PodLists;
use super::drift::drift_apply;
use crate::model::{
    condition, CondStatus, Condition, DeploymentObs, Kind, ObjectKey, ObjectKeyRef, ObjectRef,
    ProbeSpec,
};
use crate::trace::{attr, Attributes, SpanId, Stage};

pub(in crate::correlate) enum RolloutOwner {
    Unclaimed(Box<StageSpan>),
    Promotion(String),
    /// Belonged to a promotion that has finished; nothing more to do.
    Done,
}

pub(in crate::correlate) struct Rollout {
    pub generation: i64,
    pub owner: RolloutOwner,
    /// It had already ended when its Deployment was first seen, at this time (the agent
    /// started, or restarted, after it): a promotion may claim it once its start is known from
    /// its ReplicaSet, but it never becomes a trace of its own, since nothing says whether one
    /// was already sent for it. Forgotten a settle period after it was seen.
    pub ended_unseen: Option<Timestamp>,
    /// Its start is its new ReplicaSet's creation, not when the agent saw it.
    pub start_known: bool,
    /// When the rollout before it started: a ReplicaSet created no later is an old one (the
    /// one the Deployment controller scaled up again in a revert to an earlier template, or the
    /// one a `Progressing` message not yet updated still names), whose creation says nothing
    /// about this rollout.
    pub after: Option<Timestamp>,
    /// When it started, as far as known (its span's start).
    pub started: Timestamp,
    /// Which lists of its Pods were asked for (`causes`).
    pub pods: PodLists,
}

impl Rollout {
    /// It ended before its Deployment was first seen and nobody claimed it.
    fn unclaimed_unseen(&self) -> bool {
        self.ended_unseen.is_some() && matches!(self.owner, RolloutOwner::Unclaimed(_))
    }

    /// A promotion may claim it: a rollout the agent saw happen, or one that ended unseen whose
    /// start the objects give.
    pub(in crate::correlate) fn claimable(&self) -> bool {
        self.ended_unseen.is_none() || self.start_known
    }
}

pub(in crate::correlate) struct DeploymentState {
    pub last: DeploymentFacts,
    pub rollout: Option<Rollout>,
}

/// What is kept of a Deployment's last observation: what the next one is compared with and what
/// claims and probes read. Its status and conditions are read when it arrives, not kept.
pub(in crate::correlate) struct DeploymentFacts {
    /// A hash of the whole observation: a re-list repeating it is recognised without keeping it
    /// (two different observations share it once in 2^64).
    pub seen: u64,
    pub uid: Box<str>,
    pub generation: i64,
    pub replicas: i64,
    /// See [`DeploymentObs::template`].
    pub template: u64,
    pub manager: Option<ObjectRef>,
    pub probe: Option<Box<ProbeSpec>>,
    /// The first container image of the pod template (a probe's default expected version).
    pub image: Option<Box<str>>,
}

/// What the rollout stage reads of the status of a Deployment observation.
struct RolloutStatus {
    generation: i64,
    /// The conditions are about this generation's pod template: the Deployment controller has
    /// observed the generation, or the ReplicaSet they name runs the template's images (a
    /// scale bumps the generation and keeps the template).
    observed: bool,
    complete: bool,
    conditions: Vec<Condition>,
    /// `spec.progressDeadlineSeconds`.
    progress_deadline: SignedDuration,
    paused: bool,
    /// A DaemonSet's progress in words ([`DeploymentObs::daemonset_progress`]).
    progress: Option<String>,
}

/// See [`DeploymentFacts::seen`] (foldhash's full-quality variant, with a fixed seed as the
/// standard hasher's `DefaultHasher::new` has).
fn fingerprint(obs: &DeploymentObs) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::default().hash_one(obs)
}

impl DeploymentFacts {
    /// Splits an observation into what is kept and the status read once.
    /// `progress`: [`DeploymentObs::daemonset_progress`], read while the observation had its
    /// names.
    fn split(
        obs: DeploymentObs,
        seen: u64,
        observed: bool,
        progress: Option<String>,
    ) -> (DeploymentFacts, RolloutStatus) {
        let status = RolloutStatus {
            generation: obs.generation,
            observed,
            complete: obs.rollout_complete(),
            conditions: obs.conditions,
            progress_deadline: obs.progress_deadline,
            paused: obs.paused,
            progress,
        };
        let facts = DeploymentFacts {
            seen,
            uid: obs.uid.into(),
            generation: obs.generation,
            replicas: obs.replicas,
            template: obs.template,
            manager: obs.manager,
            probe: obs.probe.map(Box::new),
            image: obs.images.into_iter().next().map(Into::into),
        };
        (facts, status)
    }
}

/// Deployments, the rollout each has in flight, and which reconciler manages which.
#[derive(Default)]
pub(in crate::correlate) struct Rollouts {
    pub deployments: Map<ObjectRef, DeploymentState>,
    /// Deployments with a rollout no promotion has claimed yet.
    pub unclaimed: BTreeSet<ObjectRef>,
    /// Reconciler → the Deployments it applied, sorted: a vector costs less than a B-tree
    /// node for the handful most reconcilers apply, and claims go through them in order.
    pub managed: Map<ObjectRef, Vec<ObjectRef>>,
}

impl Rollouts {
    /// A Deployment is gone: forget it and its rollout.
    pub fn forget(&mut self, o: &ObjectRef) {
        self.unclaimed.remove(o);
        if let Some(st) = self.deployments.remove(o) {
            self.set_manager(o, st.last.manager.as_ref(), None);
        }
    }

    fn set_manager(&mut self, key: &ObjectRef, old: Option<&ObjectRef>, new: Option<&ObjectRef>) {
        if old == new {
            return;
        }
        if let Some(m) = old {
            if let Some(applied) = self.managed.get_mut(m) {
                if let Ok(i) = applied.binary_search(key) {
                    applied.remove(i);
                }
                if applied.is_empty() {
                    self.managed.remove(m);
                }
            }
        }
        if let Some(m) = new {
            let applied = self.managed.entry(m.clone()).or_default();
            if let Err(i) = applied.binary_search(key) {
                applied.insert(i, key.clone());
            }
        }
    }

    /// Forgets the rollouts that ended before their Deployment was first seen and that nobody
    /// claimed; returns their Deployments.
    pub fn forget_unclaimed_unseen(&mut self) -> Vec<ObjectRef> {
        let mut gone = Vec::new();
        for (key, st) in self.deployments.iter_mut() {
            if st.rollout.as_ref().is_some_and(Rollout::unclaimed_unseen) {
                st.rollout = None;
                gone.push(key.clone());
            }
        }
        for key in &gone {
            self.unclaimed.remove(key);
        }
        gone
    }

    /// Whether `key`'s rollout ended before its Deployment was first seen and nobody claimed
    /// it: it never becomes a trace, and [`Rollouts::forget_unclaimed_unseen`] forgets it.
    pub fn is_unclaimed_unseen(&self, key: &ObjectRef) -> bool {
        self.deployments
            .get(key)
            .and_then(|d| d.rollout.as_ref())
            .is_some_and(Rollout::unclaimed_unseen)
    }

    /// A promotion ended: rollouts it owned need nothing more.
    pub fn release(&mut self, p: &Promotion) {
        for dep in p.rollouts.iter().filter_map(|s| s.object.as_ref()) {
            if let Some(Rollout { owner, .. }) = self
                .deployments
                .get_mut(dep)
                .and_then(|d| d.rollout.as_mut())
            {
                if matches!(owner, RolloutOwner::Promotion(x) if *x == p.id) {
                    *owner = RolloutOwner::Done;
                }
            }
        }
    }
}

fn rollout_span<'a>(
    p: &'a mut Promotion,
    key: &ObjectRef,
    generation: i64,
) -> Option<&'a mut StageSpan> {
    p.rollouts
        .iter_mut()
        .find(|s| s.object.as_ref() == Some(key) && s.key.generation == Some(generation))
}

impl Engine {
    pub(in crate::correlate) fn on_deployment(&mut self, at: Timestamp, mut obs: DeploymentObs) {
        // A DaemonSet has no progress deadline of its own: the engine's rollout deadline.
        if obs.object.kind == Kind::DaemonSet {
            obs.progress_deadline = self.cfg.deadlines.rollout;
        }
        let seen = fingerprint(&obs);
        let prev = self.rollouts.deployments.get(&obs.object).map(|p| &p.last);
        // A re-list repeats the current state; an older generation is a stale observation.
        if prev.is_some_and(|p| p.seen == seen || obs.generation < p.generation) {
            return;
        }
        // Past this point the observation's names are read from the key (its kind stays).
        let progress = obs.daemonset_progress();
        let kind = obs.object.kind;
        let key = std::mem::replace(&mut obs.object, ObjectRef::new(kind, "", ""));
        let progressing = condition(&obs.conditions, "Progressing");
        let ended =
            obs.rollout_complete() || progressing.is_some_and(|c| c.status == CondStatus::False);
        let starts = match prev {
            // First sight (start-up, a restart, or a new Deployment): its current rollout,
            // whether in progress or ended while the agent was not watching.
            None => obs.generation > 0,
            // A new pod template rolls out; a scale (replicas changed, same images, labels and
            // annotations) bumps the generation too and is not a rollout. A spec change that
            // keeps replicas (env, resources) is one.
            // Pausing, or a change while paused that keeps the template, rolls nothing out.
            Some(p) => {
                let new_template = p.template != obs.template;
                obs.generation > p.generation
                    && (new_template || (p.replicas == obs.replicas && !obs.paused))
            }
        };
        let prev_none = prev.is_none();
        if prev.and_then(|p| p.manager.as_ref()) != obs.manager.as_ref() {
            let old_manager = prev.and_then(|p| p.manager.clone());
            self.rollouts
                .set_manager(&key, old_manager.as_ref(), obs.manager.as_ref());
        }
        // What the rest needs of the observation, before it is split into what is kept.
        let generation = obs.generation;
        let named = obs.marks.promotion_id.take();
        // The ReplicaSet the `Progressing` message names is this generation's only once the
        // Deployment controller has observed it: the apply that bumps the generation is seen
        // first, with the conditions (and the ReplicaSet) of the rollout before. Unless that
        // ReplicaSet runs the template's images (a scale keeps the template).
        let observed = obs.observed_generation >= obs.generation
            || progressing.is_some_and(|c| self.names_current(&key, &c.message, &obs.images));
        let after = self
            .rollouts
            .deployments
            .get(&key)
            .and_then(|d| d.rollout.as_ref())
            .filter(|r| r.generation < obs.generation)
            .map(|r| r.started);
        let created = progressing
            .filter(|_| observed)
            .and_then(|c| self.replicaset_created(&key, &c.message, at, prev_none && ended))
            .filter(|c| after.is_none_or(|a| *c > a));
        // Not known yet (its ReplicaSet not seen): when the agent saw it, or for one that ended
        // unseen its end, until the ReplicaSet says.
        let provisional = match progressing.and_then(|c| c.last_update) {
            Some(t) if prev_none && ended => t.min(at),
            _ => at,
        };
        let start = created.unwrap_or(provisional);
        let span = starts.then(|| {
            let deadline = add(
                add(start, obs.progress_deadline),
                self.cfg.deadlines.rollout_grace,
            );
            let mut span = StageSpan::new(
                Stage::Rollout,
                SpanId([0; 8]),
                SpanId([0; 8]),
                Some(key.clone()),
                start,
                deadline,
            );
            span.set_object_attrs(&key);
            let (name_key, uid_key) = attr::workload_keys(key.kind);
            span.attrs.set(name_key, key.name.clone());
            span.attrs.set(uid_key, obs.uid.clone());
            span.attrs
                .set(attr::DELIVERY_ROLLOUT_GENERATION, generation);
            span.key.generation = Some(generation);
            image_attrs(&mut span.attrs, &obs.images);
            span
        });
        // A rollout that ended unclaimed and is now followed by another becomes its own trace
        // now: the newer one takes its place (two changes by hand in a row are two traces).
        let ended_unclaimed = self
            .rollouts
            .deployments
            .get(&key)
            .and_then(|d| d.rollout.as_ref())
            .is_some_and(|r| {
                r.ended_unseen.is_none()
                    && matches!(&r.owner, RolloutOwner::Unclaimed(s) if !s.is_open())
            });
        if span.is_some() && ended_unclaimed {
            self.untraced(&key);
        }
        let keep_ended = self.reg.open_count() > 0
            || (self.held() && add(start, self.cfg.deadlines.promotion) >= self.now);
        let (facts, status) = DeploymentFacts::split(obs, seen, observed, progress);
        // The key is copied only for a Deployment seen the first time.
        let state = match self.rollouts.deployments.get_mut(&key) {
            Some(state) => {
                state.last = facts;
                state
            }
            None => self
                .rollouts
                .deployments
                .entry(key.clone())
                .or_insert(DeploymentState {
                    last: facts,
                    rollout: None,
                }),
        };
        // One that ended before the agent saw it matters only to a promotion already open, or,
        // in an initial list, to an unreported one opened once the lists are in if it ended
        // recently.
        let span = span.filter(|_| !(prev_none && ended) || keep_ended);
        if let Some(span) = span {
            let deadline = span.deadline;
            let old = state.rollout.replace(Rollout {
                generation,
                owner: RolloutOwner::Unclaimed(Box::new(span)),
                ended_unseen: (prev_none && ended).then_some(at),
                start_known: created.is_some(),
                after,
                started: start,
                pods: PodLists::default(),
            });
            let claimable = state.rollout.as_ref().is_some_and(Rollout::claimable);
            if let Some(Rollout {
                owner: RolloutOwner::Promotion(pid),
                generation: old_generation,
                ..
            }) = old
            {
                if let Some(s) = self
                    .reg
                    .get_mut(&pid)
                    .and_then(|p| rollout_span(p, &key, old_generation))
                {
                    s.finish(at, StageResult::Superseded, "superseded by a newer rollout");
                }
                self.touched.insert(pid);
            }
            if claimable || !prev_none {
                // One that ended unseen is not work in progress: it keeps nothing alive.
                self.rollouts.unclaimed.insert(key.clone());
            }
            // Its deadline must wake the engine even with no promotion open.
            self.timers.schedule(Wake::Unclaimed(key.clone()), deadline);
            // One that ended unseen opens no promotion of its own (its annotation may name one
            // long traced): only an open promotion claims it.
            let manager = self
                .rollouts
                .deployments
                .get(&key)
                .and_then(|d| d.last.manager.clone());
            let claimant = match (claimable, prev_none && ended) {
                (false, _) => None,
                (true, false) => self.rollout_claimant(named.as_deref(), manager.as_ref(), start),
                (true, true) => named
                    .filter(|id| self.reg.is_open(id))
                    .or_else(|| self.managing_promotion(manager.as_ref(), start)),
            }
            // A Canary's primary: the promotion whose analysis it finishes.
            .or_else(|| self.canary_claimant(&key, start));
            if let Some(pid) = claimant {
                self.claim_rollout(&key, &pid);
            }
        }
        self.on_replica_failure(at, &key, &status.conditions);
        self.update_rollout(&key, &status, at);
        self.follow_pods(&key, status.progress_deadline);
    }

    /// Whether the ReplicaSet a `Progressing` message names runs `images` (unknown ones do:
    /// nothing says otherwise).
    fn names_current(&self, key: &ObjectRef, message: &str, images: &[String]) -> bool {
        replicaset_in(message)
            .and_then(|rs| self.events.replicaset(&key.namespace, rs))
            .is_none_or(|i| i.images == super::super::events::images_hash(images))
    }

    /// When the new ReplicaSet a Deployment's `Progressing` message names was created: the
    /// rollout's start, as the objects say (the ReplicaSet is kept while it can matter).
    /// `ended_unseen`: for a rollout that ended before the agent saw it, however long ago (a
    /// claim still has to fit the reconcile that applied it); otherwise only a ReplicaSet
    /// created shortly before (not an old one a rollback returns to).
    fn replicaset_created(
        &self,
        key: &ObjectRef,
        message: &str,
        at: Timestamp,
        ended_unseen: bool,
    ) -> Option<Timestamp> {
        let rs = replicaset_in(message)?;
        self.events
            .replicaset(&key.namespace, rs)
            .and_then(|i| i.created)
            .filter(|c| recent_enough(*c, at, ended_unseen))
    }

    /// A ReplicaSet arrived: a rollout of its Deployment that names it and started before its
    /// creation was known starts at that creation (a re-list delivers kinds in any order), and,
    /// unclaimed, may now be claimed by the reconcile that applied it.
    pub(in crate::correlate) fn on_replicaset_seen(&mut self, namespace: &str, name: &str) {
        let Some(created) = self
            .events
            .replicaset(namespace, name)
            .and_then(|i| i.created)
        else {
            return;
        };
        // Most ReplicaSets seen belong to no rollout still open: told without building a key.
        let dep_name = self.events.deployment_name(namespace, name);
        let dep = ObjectKeyRef::new(Kind::Deployment, namespace, dep_name);
        let open = self
            .rollouts
            .deployments
            .get(&dep as &dyn ObjectKey)
            .and_then(|d| d.rollout.as_ref())
            .is_some_and(|r| !matches!(r.owner, RolloutOwner::Done));
        if !open {
            return;
        }
        let dep = dep.to_owned();
        let now = self.now;
        let Some(state) = self.rollouts.deployments.get_mut(&dep) else {
            return;
        };
        let manager = state.last.manager.clone();
        let Some(rollout) = state.rollout.as_mut() else {
            return;
        };
        let generation = rollout.generation;
        let unseen = rollout.ended_unseen.is_some();
        if rollout.after.is_some_and(|a| created <= a) {
            return; // an old ReplicaSet scaled up again
        }
        let span = match &mut rollout.owner {
            RolloutOwner::Unclaimed(s) => Some(&mut **s),
            RolloutOwner::Promotion(pid) => self
                .reg
                .get_mut(pid.as_str())
                .and_then(|p| rollout_span(p, &dep, generation)),
            RolloutOwner::Done => None,
        };
        let Some(span) = span.filter(|s| {
            s.attrs.get_str(attr::K8S_REPLICASET_NAME) == Some(name)
                && created < s.start
                && recent_enough(created, now, unseen)
        }) else {
            return;
        };
        move_start(span, created);
        rollout.started = created;
        if let Some(uid) = self
            .events
            .replicaset(namespace, name)
            .map(|i| i.uid.clone())
            .filter(|u| !u.is_empty())
        {
            span.attrs.set(attr::K8S_REPLICASET_UID, uid);
        }
        let start = span.start;
        rollout.start_known = true;
        if matches!(rollout.owner, RolloutOwner::Unclaimed(_)) {
            if let Some(pid) = self.managing_promotion(manager.as_ref(), start) {
                self.claim_rollout(&dep, &pid);
            }
        }
    }

    /// Which open promotion explains a rollout starting at `at`.
    fn rollout_claimant(
        &mut self,
        named: Option<&str>,
        manager: Option<&ObjectRef>,
        at: Timestamp,
    ) -> Option<String> {
        if let Some(id) = named {
            if !self.reg.is_finished(id) {
                self.ensure_annotated(id, at);
                return Some(id.to_string());
            }
        }
        self.managing_promotion(manager, at)
    }

    /// The open promotion whose reconcile by `manager` explains a rollout starting at `at`.
    fn managing_promotion(&self, manager: Option<&ObjectRef>, at: Timestamp) -> Option<String> {
        let manager = manager?;
        let pid = self.reconcilers.get(manager)?.joined.clone()?;
        let p = self.reg.get(&pid)?;
        let settle = self.cfg.deadlines.settle;
        p.reconciles
            .iter()
            .any(|r| {
                r.span.object.as_ref() == Some(manager)
                    && r.span.start <= add(at, CLAIM_SLACK)
                    && r.span.end.is_none_or(|e| add(e, settle) >= at)
                    && r.span.result != StageResult::NoChange
            })
            .then_some(pid)
    }

    /// Rollouts of Deployments `reconciler` applied that started before the reconcile was
    /// known (a watch delivers the rollout first) join the promotion now.
    pub(in crate::correlate) fn claim_managed_rollouts(
        &mut self,
        reconciler: &ObjectRef,
        pid: &str,
        reconcile_start: Timestamp,
        claim_until: Option<Option<Timestamp>>,
    ) {
        // Most reconciles find nothing to claim: only what can be claimed is copied.
        let deployments = &self.rollouts.deployments;
        let claimable: Vec<ObjectRef> = self
            .rollouts
            .managed
            .get(reconciler)
            .into_iter()
            .flatten()
            .filter(|dep| {
                deployments.get(*dep).is_some_and(|d| {
                    matches!(&d.rollout, Some(r @ Rollout { owner: RolloutOwner::Unclaimed(s), .. })
                        if r.claimable()
                            && add(s.start, CLAIM_SLACK) >= reconcile_start
                            && claim_until.is_some_and(|u| u.is_none_or(|u| s.start <= u)))
                })
            })
            .cloned()
            .collect();
        for dep in claimable {
            self.claim_rollout(&dep, pid);
        }
    }

    pub(in crate::correlate) fn claim_rollout(&mut self, dep: &ObjectRef, pid: &str) {
        let cluster = &self.cfg.cluster;
        let Some(state) = self.rollouts.deployments.get_mut(dep) else {
            return;
        };
        let Some(rollout) = state.rollout.as_mut() else {
            return;
        };
        let Some(p) = self.reg.get_mut(pid) else {
            return;
        };
        let owner = std::mem::replace(&mut rollout.owner, RolloutOwner::Promotion(pid.to_string()));
        let RolloutOwner::Unclaimed(mut span) = owner else {
            rollout.owner = owner;
            return;
        };
        self.rollouts.unclaimed.remove(dep);
        self.timers.cancel(&Wake::Unclaimed(dep.clone()));
        span.derive_id(
            pid,
            cluster,
            &state.last.uid,
            &rollout.generation.to_string(),
        );
        span.parent = p.parent_for_rollout(state.last.manager.as_ref());
        span.key.manager = state.last.manager.clone();
        push_span(&mut p.rollouts, *span);
        self.touched.insert(pid.to_string());
        self.on_rollout_claimed(dep, pid);
    }

    fn update_rollout(&mut self, key: &ObjectRef, obs: &RolloutStatus, at: Timestamp) {
        let Some(state) = self.rollouts.deployments.get_mut(key) else {
            return;
        };
        let Some(rollout) = state.rollout.as_mut() else {
            return;
        };
        // A later generation with the same pod template (a scale) continues this rollout.
        if obs.generation < rollout.generation {
            return;
        }
        let generation = rollout.generation;
        let span = match &mut rollout.owner {
            RolloutOwner::Unclaimed(s) => s,
            RolloutOwner::Promotion(pid) => {
                let Some(p) = self.reg.get_mut(pid.as_str()) else {
                    rollout.owner = RolloutOwner::Done;
                    return;
                };
                self.touched.insert(pid.clone());
                let Some(s) = rollout_span(p, key, generation) else {
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
        // Until the controller observed the generation, the message names the ReplicaSet of
        // the rollout before.
        if let Some(rs) = progressing
            .filter(|_| obs.observed)
            .and_then(|c| replicaset_in(&c.message))
        {
            // Most observations of a rollout name the ReplicaSet they named before.
            if span.attrs.get_str(attr::K8S_REPLICASET_NAME) != Some(rs) {
                span.attrs.set(attr::K8S_REPLICASET_NAME, rs.to_string());
            }
            let info = self.events.replicaset(&key.namespace, rs);
            if let Some(i) = info.filter(|i| !i.uid.is_empty()) {
                if span.attrs.get_str(attr::K8S_REPLICASET_UID) != Some(i.uid.as_str()) {
                    span.attrs.set(attr::K8S_REPLICASET_UID, i.uid.clone());
                }
            }
            let created = info.and_then(|i| i.created);
            let unseen = rollout.ended_unseen.is_some();
            let fresh = |c: &Timestamp| rollout.after.is_none_or(|a| *c > a);
            if let Some(c) =
                created.filter(|c| *c <= span.start && recent_enough(*c, at, unseen) && fresh(c))
            {
                move_start(span, c);
                rollout.started = c;
                rollout.start_known = true;
            }
        }
        // Kubernetes counts the progress deadline from the last progress (the Progressing
        // condition's `lastUpdateTime`, refreshed as pods become ready): a long rollout that
        // keeps progressing has not timed out.
        if let Some(progressed) = progressing
            .filter(|c| obs.observed && c.status == CondStatus::True)
            .and_then(|c| c.last_update)
            .filter(|t| *t >= span.start)
        {
            let later = add(
                add(progressed, obs.progress_deadline),
                self.cfg.deadlines.rollout_grace,
            );
            span.deadline = span.deadline.max(later);
        }
        if obs.complete {
            let end = progressing
                .and_then(|c| c.last_update)
                .unwrap_or(at)
                .min(at);
            let msg = progressing
                .map(|c| c.message.clone())
                .or_else(|| obs.progress.clone())
                .unwrap_or_else(|| "rollout complete".to_string());
            span.finish(end.max(span.start), StageResult::Succeeded, msg);
        } else if obs.paused {
            // The Deployment controller creates no new ReplicaSet while paused and
            // does not count the progress deadline (`DeploymentPaused`): nothing will come
            // before someone resumes it.
            span.finish(
                at,
                StageResult::Failed(Failure {
                    reason: "DeploymentPaused".into(),
                    message: "Deployment is paused: its new pod template rolls out once it is \
                              resumed"
                        .into(),
                    diverges_at: Stage::Rollout,
                }),
                "DeploymentPaused: Deployment is paused",
            );
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
        if span.is_open() {
            return;
        }
        let succeeded = span.result == StageResult::Succeeded;
        let end = span.end.unwrap_or(at);
        match &rollout.owner {
            // Not yet: the report that explains it may still come (CI reports late, a watch
            // delivers the reconcile after the rollout). After the settle period it becomes
            // its own trace (`expire_unclaimed`).
            RolloutOwner::Unclaimed(_) => {
                let due = add(end, self.cfg.deadlines.settle);
                self.timers.schedule(Wake::Unclaimed(key.clone()), due);
            }
            RolloutOwner::Promotion(pid) if succeeded => {
                let pid = pid.clone();
                self.request_probe(key, &pid, generation, end);
            }
            _ => {}
        }
    }

    /// The timer of an unclaimed rollout fired: time it out if still open, and make it its own
    /// trace once its settle period is over.
    pub(in crate::correlate) fn expire_unclaimed(&mut self, key: &ObjectRef, now: Timestamp) {
        let settle = self.cfg.deadlines.settle;
        let Some(Rollout {
            owner: RolloutOwner::Unclaimed(s),
            ended_unseen,
            ..
        }) = self
            .rollouts
            .deployments
            .get_mut(key)
            .and_then(|d| d.rollout.as_mut())
        else {
            return;
        };
        let due = match s.end {
            Some(end) if !s.is_open() => add(end, settle),
            _ => s.deadline,
        };
        // Room for the rest of a re-list (its ReplicaSet, the reconcile that applied it).
        let due = due.max(ended_unseen.map_or(due, |seen| add(seen, settle)));
        if due > now {
            self.timers.schedule(Wake::Unclaimed(key.clone()), due);
            return;
        }
        if s.is_open() {
            let msg = format!(
                "rollout did not complete within its deadline ({})",
                s.deadline
            );
            s.time_out("RolloutTimeout", msg, Stage::Rollout);
        }
        self.untraced(key);
    }

    /// A rollout that ended with no promotion to explain it becomes its own trace (unless it
    /// had ended before the agent saw it).
    fn untraced(&mut self, key: &ObjectRef) {
        self.rollouts.unclaimed.remove(key);
        let Some(state) = self.rollouts.deployments.get_mut(key) else {
            return;
        };
        let uid = state.last.uid.to_string();
        let Some(rollout) = state.rollout.as_mut() else {
            return;
        };
        if rollout.ended_unseen.is_some() {
            rollout.owner = RolloutOwner::Done;
            return;
        }
        let generation = rollout.generation;
        let RolloutOwner::Unclaimed(mut span) =
            std::mem::replace(&mut rollout.owner, RolloutOwner::Done)
        else {
            return;
        };
        // The uid tells a re-created Deployment (generations start over) from the old one.
        let short_uid: String = uid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect();
        let manager = state.last.manager.clone();
        if let Some(drift) = manager
            .as_ref()
            .and_then(|m| drift_apply(&self.reconcilers, m, key, span.start))
        {
            self.drift_correction(key, &uid, &short_uid, generation, span, drift);
            return;
        }
        let id = format!(
            "untraced/{}/{}/{}-{}",
            key.namespace, key.name, short_uid, generation
        );
        if self.reg.is_finished(&id) || self.reg.is_open(&id) {
            return;
        }
        let mut p = Promotion::new(
            id.clone(),
            span.start,
            None,
            Traceability::Missing,
            &self.cfg.cluster,
            self.cfg.deadlines.promotion,
        );
        span.derive_id(&id, &self.cfg.cluster, &uid, &generation.to_string());
        span.parent = p.root;
        push_span(&mut p.rollouts, *span);
        self.reg.open(p);
        self.touched.insert(id);
    }
}

/// Whether a ReplicaSet created at `created` can be the new one of a rollout seen at `at` (see
/// [`Engine::replicaset_created`]).
fn recent_enough(created: Timestamp, at: Timestamp, ended_unseen: bool) -> bool {
    created <= at && (ended_unseen || add(created, IDLE_RETENTION) >= at)
}

/// Moves a rollout's start earlier, and its deadline with it (both count from the start).
fn move_start(span: &mut StageSpan, start: Timestamp) {
    let by = span.start.duration_since(start);
    span.start = start;
    span.deadline = span.deadline.checked_sub(by).unwrap_or(span.deadline);
}

pub(in crate::correlate) fn image_attrs(a: &mut Attributes, images: &[String]) {
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

/// The ReplicaSet a `Progressing` message names: `ReplicaSet "x" is progressing.` (`has
/// successfully progressed.`, `has timed out progressing.`), and, before the first progress,
/// `Created new replica set "x"` or `Found new replica set "x"` (the Deployment controller's
/// messages).
fn replicaset_in(message: &str) -> Option<&str> {
    let rest = [
        "ReplicaSet \"",
        "Created new replica set \"",
        "Found new replica set \"",
    ]
    .iter()
    .find_map(|p| message.strip_prefix(p))?;
    rest.split_once('"').map(|(n, _)| n)
}
