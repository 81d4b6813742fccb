//! The engine's public face and its dispatch: one observation in, outputs out.
//!
//! `apply` routes each observation to the concern that owns it, then `advance` checks the
//! promotions it touched and the timers that came due. Nothing here decides a join or a
//! verdict: the stage modules and `verdict` do.

use std::collections::BTreeSet;

use jiff::Timestamp;

use super::config::{sub, EngineConfig, IDLE_RETENTION};
use super::events::EventStore;
use super::packed::{Packed, PackedEvents};
use super::registry::Registry;
use super::render::build_story;
use super::revisions::RevisionIndex;
use super::stage::canary::Canaries;
use super::stage::followers::Followers;
use super::stage::image::Images;
use super::stage::reconcile::ReconcilerState;
use super::stage::rollout::Rollouts;
use super::stage::source::SourceState;
use super::stage::trigger::Receivers;
use super::timers::{Timers, Wake};
use super::verdict::divergence;
use super::workloads::Workloads;
use super::{Map, Set};
use crate::model::{
    DeliveryEvent, DeploymentObs, EventBody, ObjectRef, PodListRequest, ProbeRequest,
    ReconcilerObs, RelistObs, SourceObs,
};
use crate::story::{Outcome, Story};
use crate::trace::SpanRecord;

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
    /// A rollout is failing or stuck: list its new ReplicaSet's Pods and apply each as an
    /// [`EventBody::Pod`] observation.
    ListPods(PodListRequest),
}

/// How much the engine holds, for `/metrics` and for tests that check nothing leaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineSize {
    pub open_promotions: usize,
    pub finished_promotions: usize,
    pub sources: usize,
    pub reconcilers: usize,
    pub deployments: usize,
    pub receivers: usize,
    /// ImagePolicies and ImageUpdateAutomations.
    pub image_objects: usize,
    pub canaries: usize,
    pub unclaimed_rollouts: usize,
    pub objects_with_events: usize,
    pub buffered_events: usize,
    pub replicasets: usize,
    pub revision_keys: usize,
    pub timers: usize,
    /// Deployments with something kept for `workloads`, and their ReplicaSets running.
    pub workloads: usize,
    pub running_replicasets: usize,
}

/// The correlation engine. See the module documentation.
pub struct Engine {
    pub(super) cfg: EngineConfig,
    pub(super) reg: Registry,
    pub(super) revs: RevisionIndex,
    pub(super) sources: Map<ObjectRef, SourceState>,
    /// The sources whose last observation says suspended: a few, if any.
    pub(super) suspended_sources: Set<ObjectRef>,
    pub(super) reconcilers: Map<ObjectRef, ReconcilerState>,
    /// `reconcilers` by the source they follow and the Kustomization that applied them.
    pub(super) followers: Followers,
    pub(super) rollouts: Rollouts,
    /// What runs on each followed Deployment and which promotion put it there.
    pub(super) workloads: Workloads,
    /// Receivers: which objects their webhooks trigger.
    pub(super) receivers: Receivers,
    /// ImagePolicies and ImageUpdateAutomations.
    pub(super) images: Images,
    /// Flagger Canaries: which Deployments they follow.
    pub(super) canaries: Canaries,
    pub(super) events: EventStore,
    pub(super) timers: Timers,
    /// Outputs of the current `apply` or `tick`, in the order they happened.
    pub(super) out: Vec<Output>,
    /// Promotions changed by the current observation: checked before it returns.
    pub(super) touched: BTreeSet<String>,
    pub(super) now: Timestamp,
    pruned: Timestamp,
    /// See [`Engine::hold`].
    held: bool,
    /// See [`Engine::pause`].
    paused: bool,
    /// Observations kept while held or paused, in the order they came.
    kept: Vec<Kept>,
    /// The Deployments and DaemonSets of `kept`, packed, in the order they came.
    kept_deployments: Packed<DeploymentObs>,
    /// Core Events about workloads kept while held, until history is known at the release.
    held_events: PackedEvents,
    /// While the release applies `held_events`: the objects open work is about, once.
    release_active: Option<Set<ObjectRef>>,
    /// Applying what was kept: nothing is kept again, nothing decided yet.
    releasing: bool,
    /// While releasing, the promotions whose joins wait until every kept one is open.
    pub(super) deferred_rejoins: Option<Vec<String>>,
    /// Kustomizations that failed for good, or wait, before recording an attempt (see
    /// `stage::reconcile`): a promotion that opens later still finds them through their source.
    pub(super) failed_early: Set<ObjectRef>,
}

/// An observation kept while held ([`Engine::hold`]): a few words each, whatever its kind.
/// Sources and reconcilers are boxed as their state keeps them, so that the release moves
/// them in without a copy and a whole cluster's objects are never held twice. Workloads, the
/// most numerous, are packed (`Engine::kept_deployments`): the state keeps a summary of them.
enum Kept {
    Source(Timestamp, Box<SourceObs>),
    Reconciler(Timestamp, Box<ReconcilerObs>),
    /// The next of `Engine::kept_deployments`.
    Deployment,
    Other(Box<DeliveryEvent>),
}

impl Kept {
    fn new(ev: DeliveryEvent) -> Kept {
        match ev.body {
            EventBody::Source(s) => Kept::Source(ev.at, Box::new(s)),
            EventBody::Reconciler(r) => Kept::Reconciler(ev.at, Box::new(r)),
            body => Kept::Other(Box::new(DeliveryEvent { at: ev.at, body })),
        }
    }

    /// See [`delivery_rank`].
    fn rank(&self) -> u8 {
        match self {
            Kept::Source(..) => 2,
            Kept::Reconciler(..) => 3,
            Kept::Deployment => 4,
            Kept::Other(ev) => delivery_rank(&ev.body),
        }
    }
}

/// A core Event about a Pod, a ReplicaSet or a workload: what it says lands on rollouts only,
/// and nothing it says decides a join, so it waits for the end of a release
/// ([`Engine::apply_held_events`]).
fn about_workload(e: &crate::model::KubeEventObs) -> bool {
    use crate::model::Kind;
    Kind::parse(&e.involved_kind)
        .is_some_and(|k| k.is_workload() || matches!(k, Kind::Pod | Kind::ReplicaSet))
}

/// The objects of [`Engine::active`], at once: the spans' objects of open promotions and the
/// Deployments of rollouts nobody claimed yet (those that ended unseen only if `unseen`).
fn active_objects<'a>(
    rollouts: &'a Rollouts,
    reg: &'a Registry,
    unseen: bool,
) -> Set<&'a ObjectRef> {
    let mut active: Set<&ObjectRef> = rollouts
        .unclaimed
        .iter()
        .filter(|o| unseen || !rollouts.is_unclaimed_unseen(o))
        .collect();
    for p in reg.values() {
        active.extend(p.spans().filter_map(|s| s.object.as_ref()));
    }
    active
}

/// Where an observation kept while held goes when released ([`Engine::hold`]).
fn delivery_rank(body: &EventBody) -> u8 {
    use crate::model::Kind;
    let of_kind = |k: Kind| match k {
        Kind::Receiver | Kind::ReplicaSet => 0,
        k if k.is_image() => 1,
        k if k.is_source() => 2,
        Kind::Kustomization | Kind::HelmRelease => 3,
        Kind::Deployment | Kind::DaemonSet => 4,
        Kind::Canary => 5,
        _ => 6,
    };
    match body {
        // Core Events only go to the event buffer (in its compact form), keyed by object: the
        // order they come in changes nothing, and a cluster's Events are most of what an
        // initial list holds.
        // A Flux controller's repeated Event names, in its annotations, the revision of its
        // first occurrence: it is read against the reconciler's state, so after the
        // reconcilers (`Engine::repeat_revision`).
        EventBody::KubeEvent(e)
            if e.count > 1
                && matches!(e.involved_kind.as_str(), "Kustomization" | "HelmRelease") =>
        {
            4
        }
        EventBody::Receiver(_) | EventBody::ReplicaSet(_) | EventBody::KubeEvent(_) => 0,
        EventBody::Promotion(_) | EventBody::ImagePolicy(_) | EventBody::ImageAutomation(_) => 1,
        EventBody::Source(_) => 2,
        EventBody::Reconciler(_) => 3,
        EventBody::Deployment(_) => 4,
        // After the target's rollout, which its analysis follows.
        EventBody::Canary(_) => 5,
        EventBody::FluxEvent(_) | EventBody::ProbeResult(_) | EventBody::Pod(_) => 6,
        EventBody::Deleted(o) => of_kind(o.kind),
        EventBody::Relisted(r) => of_kind(r.kind),
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Engine {
            cfg,
            reg: Registry::default(),
            revs: RevisionIndex::default(),
            sources: Map::default(),
            suspended_sources: Set::default(),
            reconcilers: Map::default(),
            followers: Followers::default(),
            rollouts: Rollouts::default(),
            workloads: Workloads::default(),
            receivers: Receivers::default(),
            images: Images::default(),
            canaries: Canaries::default(),
            events: EventStore::default(),
            timers: Timers::default(),
            out: Vec::new(),
            touched: BTreeSet::new(),
            now: Timestamp::UNIX_EPOCH,
            pruned: Timestamp::UNIX_EPOCH,
            held: false,
            kept: Vec::new(),
            kept_deployments: Packed::default(),
            held_events: PackedEvents::default(),
            release_active: None,
            paused: false,
            releasing: false,
            deferred_rejoins: None,
            failed_early: Set::default(),
        }
    }

    /// While held, observations are kept, not applied, and nothing is decided: an agent that
    /// (re)starts holds until its initial lists are in, since they deliver kinds in any order
    /// and only each object's last state. Released, what was kept is applied in the order the
    /// objects happen in a delivery (the Promotions' reports with ImagePolicies and
    /// ImageUpdateAutomations, sources, reconcilers, Deployments, Canaries, then Flux
    /// notifications and probe results; each object's own observations in the order they
    /// came), with nothing stale yet. Core Events about Pods, ReplicaSets and workloads come
    /// last, once the promotions in flight are open and history is forgotten, so that only
    /// those that can still land on a span are buffered; then every open promotion is
    /// checked. Receivers, ReplicaSets and other core Events are applied as they come: their
    /// order changes nothing. ReplicaSets created before any promotion still open can have
    /// started are not kept.
    pub fn hold(&mut self, held: bool) -> Vec<Output> {
        if self.held && !held {
            let before: super::Set<String> = self.reg.ids().map(str::to_string).collect();
            self.releasing = true;
            // Promotions join what is already there once all of them are open: a source of one
            // revision must be told apart among every promotion of that revision.
            self.deferred_rejoins = Some(Vec::new());
            // Nothing is decided while held: what applying them output is not wanted.
            drop(self.apply_kept());
            let now = self.now;
            for id in self.deferred_rejoins.take().unwrap_or_default() {
                self.rejoin(&id, now);
            }
            self.open_unreported_in_flight(now);
            // What the initial state shows delivered is history, not a promotion in flight.
            self.forget_history(&before);
            self.releasing = false;
            self.held = false;
            self.apply_held_events();
            let open: Vec<String> = self.reg.ids().map(str::to_string).collect();
            self.touched.extend(open);
            self.advance(self.now);
            // Rollouts that ended before the agent listed them and that no open promotion
            // claimed can never be claimed or traced: every report and reconcile the lists
            // hold has joined. Kept, they would cost a span per Deployment of the cluster.
            for key in self.rollouts.forget_unclaimed_unseen() {
                self.timers.cancel(&Wake::Unclaimed(key));
            }
        }
        self.held = held;
        std::mem::take(&mut self.out)
    }

    /// The release's last step before its verdicts: the core Events about workloads that the
    /// initial lists held, each buffered as if it had come now, with the promotions in flight
    /// open and history forgotten. What can land on no span of theirs and is older than the
    /// idle retention is dropped here rather than kept for the first prune.
    fn apply_held_events(&mut self) {
        if self.held_events.len() == 0 {
            return;
        }
        // Rollouts that ended before the lists showed them and that nobody claimed are
        // forgotten once the release's verdicts are in (`hold`): nothing lands on them.
        let active = active_objects(&self.rollouts, &self.reg, false)
            .into_iter()
            .cloned()
            .collect();
        self.release_active = Some(active);
        let mut held = std::mem::take(&mut self.held_events);
        for (at, (series, ev)) in held.take() {
            self.on_kube_event_of(at, ev, series);
        }
        self.release_active = None;
    }

    /// Whether [`Engine::hold`] holds verdicts.
    pub fn held(&self) -> bool {
        self.held
    }

    /// While paused, nothing is decided and observations of delivery objects are kept: a watch
    /// re-lists after it lost its place (`410 Gone`, a dropped connection it could not resume),
    /// and the re-list delivers each object's last state, kinds in any order. Judged halfway,
    /// a promotion would end before the rest of the list (its Deployment's Events, the policy
    /// that names its digest) came in. Released, what was kept is applied in delivery order, as
    /// [`Engine::hold`] does, but as live observations: unlike an agent's first lists, what the
    /// re-list shows delivered happened while the agent was running, so it is traced, not
    /// taken as history. Then deadlines that passed meanwhile fire.
    pub fn pause(&mut self, paused: bool) -> Vec<Output> {
        if self.paused && !paused {
            self.releasing = true;
            let out = self.apply_kept();
            self.out.extend(out);
            self.releasing = false;
        }
        self.paused = paused;
        self.advance(self.now);
        std::mem::take(&mut self.out)
    }

    /// Applies what was kept while held or paused, in delivery order; what that applying
    /// output.
    fn apply_kept(&mut self) -> Vec<Output> {
        let mut kept = std::mem::take(&mut self.kept);
        // Stable: each kind's observations stay in the order they came, as the packed
        // Deployments are read.
        kept.sort_by_key(Kept::rank);
        let mut deployments = self.kept_deployments.take();
        let mut out = Vec::new();
        for k in kept {
            match k {
                Kept::Source(at, s) => self.apply_boxed(at, |e| e.on_source(at, s)),
                Kept::Reconciler(at, r) => self.apply_boxed(at, |e| e.on_reconciler(at, r)),
                Kept::Deployment => {
                    if let Some((at, d)) = deployments.next() {
                        self.apply_boxed(at, |e| e.on_deployment(at, d));
                    }
                }
                Kept::Other(ev) => {
                    let o = self.apply(*ev);
                    self.out.extend(o);
                }
            }
            out.append(&mut self.out);
        }
        out
    }

    /// Whether [`Engine::pause`] pauses verdicts.
    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The story so far of a promotion still waiting for its verdict (outcome `in_progress`;
    /// a divergence already seen is named). `None` for unknown or finished promotions.
    pub fn progress(&self, id: &str) -> Option<Story> {
        let p = self.reg.get(id)?;
        let spans = p.ordered_spans();
        let start = p.first_start();
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
        self.reg.ids()
    }

    /// Promotions still waiting for a verdict.
    pub fn open_promotions(&self) -> usize {
        self.reg.open_count()
    }

    /// How much the engine holds.
    pub fn size(&self) -> EngineSize {
        let (objects_with_events, buffered_events, _, replicasets) = self.events.sizes();
        let (workloads, running_replicasets) = self.workloads.sizes();
        EngineSize {
            open_promotions: self.reg.open_count(),
            finished_promotions: self.reg.finished_count(),
            sources: self.sources.len(),
            reconcilers: self.reconcilers.len(),
            deployments: self.rollouts.deployments.len(),
            receivers: self.receivers.len(),
            image_objects: self.images.len(),
            canaries: self.canaries.len(),
            unclaimed_rollouts: self.rollouts.unclaimed.len(),
            objects_with_events,
            buffered_events,
            replicasets,
            revision_keys: self.revs.len() + self.reg.index_entries(),
            timers: self.timers.len(),
            workloads,
            running_replicasets,
        }
    }

    /// Applies one observation, then advances the clock to its time.
    pub fn apply(&mut self, ev: DeliveryEvent) -> Vec<Output> {
        let at = ev.at;
        self.now = self.now.max(at);
        // What the release would apply first (Receivers, ReplicaSets, core Events) is applied
        // at once: in the same order, without keeping a whole cluster's observations.
        if self.held && !self.releasing {
            if let EventBody::KubeEvent(e) = &ev.body {
                if about_workload(e) {
                    // Nothing this old can land on a span of a promotion still open.
                    if e.time.unwrap_or(at) >= self.horizon() {
                        self.held_events.push(at, e);
                    }
                    return Vec::new();
                }
            }
        }
        if (self.held || self.paused) && !self.releasing && delivery_rank(&ev.body) > 0 {
            if let EventBody::Deployment(d) = &ev.body {
                self.kept_deployments.push(at, d);
                self.kept.push(Kept::Deployment);
            } else {
                self.kept.push(Kept::new(ev));
            }
            return Vec::new();
        }
        match ev.body {
            EventBody::Promotion(r) => self.on_promotion(at, r),
            EventBody::Source(s) => self.on_source(at, Box::new(s)),
            EventBody::Reconciler(r) => self.on_reconciler(at, Box::new(r)),
            EventBody::Deployment(d) => self.on_deployment(at, d),
            EventBody::ReplicaSet(rs) => {
                // While held (an initial list), a rollout that ended unseen may need an old one,
                // if a promotion still open can have claimed it.
                let idle = if self.held {
                    self.horizon()
                } else {
                    self.idle_since()
                };
                self.workloads.on_replicaset(&rs);
                let object = self.events.on_replicaset(rs, idle);
                self.on_replicaset_seen(&object.namespace, &object.name);
            }
            EventBody::KubeEvent(e) => self.on_kube_event(at, e),
            EventBody::FluxEvent(e) => self.on_flux_event(at, e),
            EventBody::ProbeResult(r) => self.on_probe_result(at, r),
            EventBody::Receiver(r) => self.receivers.insert(r),
            EventBody::ImagePolicy(p) => self.on_image_policy(p),
            EventBody::ImageAutomation(a) => self.on_image_automation(a),
            EventBody::Canary(c) => self.on_canary(at, c),
            EventBody::Deleted(o) => self.on_deleted(&o),
            EventBody::Relisted(r) => self.on_relisted(&r),
            EventBody::Pod(p) => self.on_pod(at, p),
        }
        self.advance(self.now);
        std::mem::take(&mut self.out)
    }

    /// What [`Engine::apply`] does with an observation the hold kept, `on` being its handler;
    /// its outputs stay in `out`.
    fn apply_boxed(&mut self, at: Timestamp, on: impl FnOnce(&mut Engine)) {
        self.now = self.now.max(at);
        on(self);
        self.advance(self.now);
    }

    /// Moves the clock to `now`: deadlines that passed fire, settled promotions get their verdict.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Output> {
        self.now = self.now.max(now);
        self.advance(self.now);
        std::mem::take(&mut self.out)
    }

    /// The next time at which [`Engine::tick`] has something to do, if any.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.next()
    }

    /// Advances past every deadline so that each open promotion reaches a verdict (the end of a
    /// recording).
    pub fn finish(&mut self) -> Vec<Output> {
        while let Some(t) = self.timers.next() {
            let t = t.max(self.now);
            self.now = t;
            self.advance(t);
            if self.timers.next().is_some_and(|w| w <= t) {
                // A deadline that does not move would loop forever: end what is left.
                break;
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Checks what the last observation touched and what came due, then re-arms the timers of
    /// the promotions still open.
    fn advance(&mut self, now: Timestamp) {
        if self.held || self.paused {
            return;
        }
        let mut ids = std::mem::take(&mut self.touched);
        for wake in self.timers.pop_due(now) {
            match wake {
                Wake::Promotion(id) => {
                    ids.insert(id);
                }
                Wake::Unclaimed(key) => self.expire_unclaimed(&key, now),
                Wake::Pods(key) => self.pods_due(&key),
            }
        }
        // `expire_unclaimed` may have opened untraced promotions.
        ids.append(&mut self.touched);
        for id in ids {
            self.check(&id, now);
            if let Some(when) = self.reg.get(&id).map(|p| self.wake_of(p)) {
                self.timers.schedule(Wake::Promotion(id), when);
            } else {
                self.timers.cancel(&Wake::Promotion(id));
            }
        }
        // After the verdicts: what they needed is no longer needed.
        self.prune(now);
    }

    /// Before this, an event or ReplicaSet of an object no open work is about cannot matter.
    pub(super) fn idle_since(&self) -> Timestamp {
        sub(self.now, IDLE_RETENTION)
    }

    /// Before this, nothing can land on a span of a promotion still open.
    pub(super) fn horizon(&self) -> Timestamp {
        sub(
            sub(self.now, self.cfg.deadlines.promotion),
            self.cfg.deadlines.settle,
        )
    }

    /// Whether an object has work that events about it may still land on: a span of an open
    /// promotion, or a rollout no promotion has claimed yet.
    pub(super) fn active(&self, obj: &ObjectRef) -> bool {
        if let Some(active) = &self.release_active {
            return active.contains(obj);
        }
        self.rollouts.unclaimed.contains(obj) || self.reg.values().any(|p| p.touches(obj))
    }

    /// Forgets what can no longer matter: events past the promotion deadline, and events and
    /// ReplicaSets of idle objects past the idle retention. Runs at most once a minute.
    fn prune(&mut self, now: Timestamp) {
        if now < super::config::add(self.pruned, jiff::SignedDuration::from_mins(1)) {
            return;
        }
        self.pruned = now;
        let (horizon, idle) = (self.horizon(), self.idle_since());
        let active = active_objects(&self.rollouts, &self.reg, true);
        self.events.prune(horizon, idle, &active);
    }

    /// A watch re-listed its kind: what it held of that kind and did not list again was
    /// deleted while the watch was down (kube-runtime's `InitDone` contract).
    fn on_relisted(&mut self, r: &RelistObs) {
        use crate::model::Kind;
        let left_out = |o: &&ObjectRef| r.left_out(o);
        let gone: Vec<ObjectRef> = match r.kind {
            Kind::Deployment | Kind::DaemonSet => self
                .rollouts
                .deployments
                .keys()
                .filter(left_out)
                .cloned()
                .collect(),
            Kind::Receiver => self.receivers.keys().filter(left_out).cloned().collect(),
            Kind::Canary => self.canaries.keys().filter(left_out).cloned().collect(),
            Kind::Kustomization | Kind::HelmRelease => {
                self.reconcilers.keys().filter(left_out).cloned().collect()
            }
            k if k.is_source() => self.sources.keys().filter(left_out).cloned().collect(),
            Kind::ReplicaSet => {
                self.workloads.forget_left_out(r);
                self.events.forget_replicasets_left_out(r);
                Vec::new()
            }
            k if k.is_image() => self
                .images
                .keys(k)
                .into_iter()
                .filter(|o| r.left_out(o))
                .collect(),
            _ => Vec::new(),
        };
        for o in gone {
            self.on_deleted(&o);
        }
    }

    /// An object is gone (a DELETED watch event, or not listed again after a re-list): forget
    /// everything held for it. Spans of open promotions about it stay: they end on their own
    /// evidence or deadline.
    fn on_deleted(&mut self, o: &ObjectRef) {
        use crate::model::Kind;
        match o.kind {
            Kind::Deployment | Kind::DaemonSet => {
                self.rollouts.forget(o);
                self.workloads.forget_deployment(o);
                self.timers.cancel(&Wake::Unclaimed(o.clone()));
                self.timers.cancel(&Wake::Pods(o.clone()));
                self.events.forget(o);
            }
            Kind::Receiver => {
                self.receivers.remove(o);
            }
            Kind::Canary => self.canaries.forget(o),
            Kind::ReplicaSet => {
                self.workloads.forget_replicaset(o);
                self.events.forget_replicaset(o);
            }
            k if k.is_source() => {
                self.suspended_sources.remove(o);
                if let Some(st) = self.sources.remove(o) {
                    self.followers.update_chart(o, st.last.as_deref(), None);
                    let rev = st.last.and_then(|l| l.revision);
                    self.revs.reindex(o, rev.as_deref(), None);
                }
                self.events.forget(o);
            }
            Kind::Kustomization | Kind::HelmRelease => {
                self.failed_early.remove(o);
                if let Some(st) = self.reconcilers.remove(o) {
                    self.followers.update(o, st.last.as_deref(), None);
                    let rev = st.last.and_then(|l| l.last_attempted);
                    self.revs.reindex(o, rev.as_deref(), None);
                }
                self.rollouts.managed.remove(o);
                self.events.forget(o);
            }
            k if k.is_image() => {
                self.images.forget(o);
                self.events.forget(o);
            }
            _ => {}
        }
    }
}
