//! What runs now, and which promotion put it there: per followed Deployment, its ReplicaSets
//! with ready replicas (images and ready counts), the last promotion whose rollout of it
//! completed, and the newest that failed after it. Read by [`Engine::workloads`] (`GET
//! /v1/workloads`, `fluxtrace status`), which adds the promotions in flight that touch each one.
//!
//! Fed by `Engine::apply` (ReplicaSets, deletions, re-lists) and by `verdict` (each finished
//! promotion's rollouts; DaemonSets, which run no ReplicaSets, are not listed). Kept small,
//! for clusters of thousands of Deployments: a few short strings per Deployment, the facts of
//! a promotion shared by every Deployment it rolled out, at most the current and one newer
//! promotion each.

use std::sync::Arc;

use jiff::Timestamp;

use super::engine::Engine;
use super::promotion::Promotion;
use super::span::StageResult;
use super::{Map, Set};
use crate::model::{object_key_hash, Kind, ObjectRef, RelistObs, ReplicaSetObs};
use crate::story::{Outcome, Story, Traceability};
use crate::trace::{Stage, TraceId};
use crate::workload::{PromotionRef, RunningReplicaSet, Workload, WorkloadFilter};

/// What a workload's line says of a finished promotion: shared by every Deployment it names.
struct Facts {
    id: Box<str>,
    actor: Option<Box<str>>,
    environment: Option<Box<str>>,
    app: Option<Box<str>>,
    traceability: Traceability,
    outcome: Outcome,
    diverged_at: Option<Stage>,
    /// The Pod cause, else the condition reason.
    reason: Option<Box<str>>,
    trace_id: TraceId,
    start: Timestamp,
    end: Timestamp,
}

impl Facts {
    /// A promotion the initial state shows delivered before the agent started (`history`):
    /// what it delivered, with no verdict of this agent's.
    fn of_history(p: &Promotion) -> Facts {
        let report = p.report.as_ref();
        let short = |v: Option<&str>| v.map(Box::from);
        let start = p.first_start();
        Facts {
            id: p.id.as_str().into(),
            actor: short(report.and_then(|r| r.actor.as_deref())),
            environment: short(p.environment()),
            app: short(report.and_then(|r| r.app.as_deref())),
            traceability: p.traceability,
            outcome: Outcome::Succeeded,
            diverged_at: None,
            reason: None,
            trace_id: p.trace_id,
            start,
            end: p
                .spans()
                .filter_map(|s| s.end)
                .max()
                .unwrap_or(start)
                .max(start),
        }
    }

    fn of(s: &Story) -> Facts {
        let short = |v: &Option<String>| v.as_deref().map(Box::from);
        Facts {
            id: s.promotion_id.as_str().into(),
            actor: short(&s.actor),
            environment: short(&s.environment),
            app: short(&s.app),
            traceability: s.traceability,
            outcome: s.outcome,
            diverged_at: s.divergence.as_ref().map(|d| d.stage),
            reason: s
                .divergence
                .as_ref()
                .map(|d| d.cause.as_deref().unwrap_or(&d.reason).into()),
            trace_id: s.trace_id,
            start: s.start,
            end: s.end,
        }
    }
}

/// A finished promotion's rollout of one Deployment: when it completed or failed.
struct Delivery {
    facts: Arc<Facts>,
    at: Timestamp,
}

/// A ReplicaSet with ready replicas.
struct Running {
    /// Its name, then its images, one a line: one allocation.
    text: Box<str>,
    /// [`object_key_hash`] of its namespace and name (re-lists name what they contain so).
    key: u64,
    /// `deployment.kubernetes.io/revision`: the newest template first.
    revision: u32,
    ready: u32,
}

impl Running {
    fn name(&self) -> &str {
        self.text.lines().next().unwrap_or_default()
    }

    fn images(&self) -> impl Iterator<Item = &str> {
        self.text.lines().skip(1)
    }
}

#[derive(Default)]
struct WorkloadState {
    /// [`object_key_hash`] of the namespace alone (a re-list scoped to one namespace leaves the
    /// others alone).
    namespace: u64,
    /// Sized to what runs (one ReplicaSet, most of the time).
    running: Box<[Running]>,
    /// Out of line: none until a promotion's rollout of it ends.
    history: Option<Box<History>>,
}

#[derive(Default)]
struct History {
    delivered: Option<Delivery>,
    /// The newest promotion that failed or timed out on it after `delivered`.
    failed: Option<Delivery>,
}

impl WorkloadState {
    fn is_empty(&self) -> bool {
        self.running.is_empty() && self.history.is_none()
    }

    fn delivered(&self) -> Option<&Delivery> {
        self.history.as_ref().and_then(|h| h.delivered.as_ref())
    }

    fn failed(&self) -> Option<&Delivery> {
        self.history.as_ref().and_then(|h| h.failed.as_ref())
    }

    /// Keeps the ReplicaSets `keep` accepts.
    fn retain_running(&mut self, keep: impl Fn(&Running) -> bool) {
        if !self.running.iter().all(&keep) {
            let running = std::mem::take(&mut self.running).into_vec();
            self.running = running.into_iter().filter(|r| keep(r)).collect();
        }
    }
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct Workloads {
    /// Deployment, by [`object_key_hash`] of namespace and name → its state.
    by_deployment: Map<u64, WorkloadState>,
    /// The promotions some workload names, by id: what the story store keeps
    /// ([`Engine::names_promotion`]).
    named: Map<Box<str>, Arc<Facts>>,
}

fn namespace_key(namespace: &str) -> u64 {
    object_key_hash(namespace, "")
}

impl Workloads {
    /// A ReplicaSet's new state: kept while it has ready replicas.
    pub fn on_replicaset(&mut self, rs: &ReplicaSetObs) {
        let Some(dep) = rs.deployment.as_deref() else {
            return;
        };
        let ns = &rs.object.namespace;
        let key = object_key_hash(ns, dep);
        let rs_key = object_key_hash(ns, &rs.object.name);
        if rs.ready <= 0 {
            self.remove_running(key, rs_key);
            return;
        }
        let state = self.by_deployment.entry(key).or_default();
        state.namespace = namespace_key(ns);
        let revision = rs
            .revision
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let ready = u32::try_from(rs.ready).unwrap_or(u32::MAX);
        let slot = state.running.iter().position(|r| r.key == rs_key);
        // Most observations of a running ReplicaSet repeat its name and images: no new text.
        let name = rs.object.name.as_str();
        if let Some(r) = slot.map(|i| &mut state.running[i]).filter(|r| {
            let mut parts = r.text.split('\n');
            parts.next() == Some(name)
                && rs.images.iter().all(|i| parts.next() == Some(i.as_str()))
                && parts.next().is_none()
        }) {
            r.revision = revision;
            r.ready = ready;
            return;
        }
        let mut text = String::with_capacity(
            name.len() + rs.images.iter().map(|i| i.len() + 1).sum::<usize>(),
        );
        text.push_str(name);
        for image in &rs.images {
            text.push('\n');
            text.push_str(image);
        }
        let running = Running {
            text: text.into_boxed_str(),
            key: rs_key,
            revision,
            ready,
        };
        match slot {
            Some(i) => state.running[i] = running,
            None => {
                let mut all = std::mem::take(&mut state.running).into_vec();
                all.push(running);
                all.sort_by(|a, b| b.revision.cmp(&a.revision).then(a.name().cmp(b.name())));
                state.running = all.into_boxed_slice();
            }
        }
    }

    fn remove_running(&mut self, dep: u64, rs_key: u64) -> bool {
        let Some(state) = self.by_deployment.get_mut(&dep) else {
            return false;
        };
        state.retain_running(|r| r.key != rs_key);
        if state.is_empty() {
            self.by_deployment.remove(&dep);
        }
        true
    }

    /// A ReplicaSet is gone. Its Deployment is the name without the pod-template hash; else
    /// (a name that does not follow the pattern) every workload is looked at.
    pub fn forget_replicaset(&mut self, o: &ObjectRef) {
        let rs_key = object_key_hash(&o.namespace, &o.name);
        let dep = o.name.rsplit_once('-').map_or(o.name.as_str(), |(d, _)| d);
        if self.remove_running(object_key_hash(&o.namespace, dep), rs_key) {
            return;
        }
        let emptied: Vec<u64> = self
            .by_deployment
            .iter_mut()
            .filter_map(|(k, s)| {
                s.retain_running(|r| r.key != rs_key);
                s.is_empty().then_some(*k)
            })
            .collect();
        for k in emptied {
            self.by_deployment.remove(&k);
        }
    }

    /// A re-list of ReplicaSets: those it did not list are gone.
    pub fn forget_left_out(&mut self, r: &RelistObs) {
        let scope = r.namespace.as_deref().map(namespace_key);
        self.by_deployment.retain(|_, s| {
            if scope.is_none_or(|ns| ns == s.namespace) {
                s.retain_running(|rs| r.present.contains(&rs.key));
            }
            !s.is_empty()
        });
    }

    /// A Deployment is gone: forget what ran and who delivered it.
    pub fn forget_deployment(&mut self, o: &ObjectRef) {
        if o.kind != Kind::Deployment {
            return;
        }
        if let Some(s) = self
            .by_deployment
            .remove(&object_key_hash(&o.namespace, &o.name))
        {
            for d in s
                .history
                .into_iter()
                .flat_map(|h| [h.delivered, h.failed])
                .flatten()
            {
                self.release(d);
            }
        }
    }

    /// Drops a reference to a promotion; forgets it once no workload names it.
    fn release(&mut self, d: Delivery) {
        let id = d.facts.id.clone();
        drop(d);
        if self
            .named
            .get(&id)
            .is_some_and(|f| Arc::strong_count(f) == 1)
        {
            self.named.remove(&id);
        }
    }

    /// A promotion the initial state showed delivered (`history`): the Deployments its
    /// rollouts completed run what it delivered.
    pub fn on_history(&mut self, p: &Promotion) {
        let facts = Arc::new(Facts::of_history(p));
        for s in &p.rollouts {
            if let (Some(dep), StageResult::Succeeded, Some(end)) = (&s.object, &s.result, s.end) {
                self.delivered(dep, &facts, end);
            }
        }
        if Arc::strong_count(&facts) > 1 {
            self.named.insert(facts.id.clone(), facts);
        }
    }

    /// A promotion reached its verdict: the Deployments its rollouts completed now run what it
    /// delivered; those its rollouts failed on, or (failed before any rollout) those its
    /// reconcilers apply, keep what ran and name it as the newer failure.
    pub fn on_verdict(
        &mut self,
        p: &Promotion,
        story: &Story,
        managed: &Map<ObjectRef, Vec<ObjectRef>>,
    ) {
        let facts = Arc::new(Facts::of(story));
        let mut rolled: Set<&ObjectRef> = Set::default();
        for s in &p.rollouts {
            let Some(dep) = &s.object else { continue };
            rolled.insert(dep);
            let at = s.end.unwrap_or(story.end);
            match s.result {
                StageResult::Succeeded => self.delivered(dep, &facts, at),
                StageResult::Failed(_) | StageResult::TimedOut(_) => self.failed(dep, &facts, at),
                _ => {}
            }
        }
        if matches!(story.outcome, Outcome::Failed | Outcome::TimedOut) {
            let applied = p
                .reconciles
                .iter()
                .filter_map(|r| r.span.object.as_ref())
                .filter_map(|o| managed.get(o))
                .flatten();
            for dep in applied {
                if !rolled.contains(dep) {
                    self.failed(dep, &facts, story.end);
                }
            }
        }
        if Arc::strong_count(&facts) > 1 {
            self.named.insert(facts.id.clone(), facts);
        }
    }

    fn history(&mut self, dep: &ObjectRef) -> &mut History {
        let state = self
            .by_deployment
            .entry(object_key_hash(&dep.namespace, &dep.name))
            .or_default();
        state.namespace = namespace_key(&dep.namespace);
        state.history.get_or_insert_default()
    }

    fn delivered(&mut self, dep: &ObjectRef, facts: &Arc<Facts>, at: Timestamp) {
        if dep.kind != Kind::Deployment {
            return;
        }
        let state = self.history(dep);
        // A verdict that comes late about an older rollout changes nothing.
        if state.delivered.as_ref().is_some_and(|d| d.at > at) {
            return;
        }
        let new = Delivery {
            facts: facts.clone(),
            at,
        };
        let mut old = vec![state.delivered.replace(new)];
        if state.failed.as_ref().is_some_and(|f| f.at <= at) {
            old.push(state.failed.take());
        }
        for d in old.into_iter().flatten() {
            self.release(d);
        }
    }

    fn failed(&mut self, dep: &ObjectRef, facts: &Arc<Facts>, at: Timestamp) {
        if dep.kind != Kind::Deployment {
            return;
        }
        let state = self.history(dep);
        let newest = [&state.delivered, &state.failed]
            .into_iter()
            .flatten()
            .all(|d| d.at <= at);
        if !newest {
            return;
        }
        let old = state.failed.replace(Delivery {
            facts: facts.clone(),
            at,
        });
        if let Some(d) = old {
            self.release(d);
        }
    }

    /// (workloads with something kept, ReplicaSets running)
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.by_deployment.len(),
            self.by_deployment.values().map(|s| s.running.len()).sum(),
        )
    }
}

/// Makes a trace link from a trace id and the promotion's start and end, if links are set up.
pub type LinkFn<'a> = &'a dyn Fn(TraceId, Timestamp, Timestamp) -> Option<String>;

fn finished_ref(d: &Delivery, link: LinkFn<'_>) -> PromotionRef {
    let f = &d.facts;
    let text = |v: &Option<Box<str>>| v.as_deref().map(str::to_string);
    PromotionRef {
        id: f.id.to_string(),
        actor: text(&f.actor),
        environment: text(&f.environment),
        app: text(&f.app),
        traceability: f.traceability.as_str().to_string(),
        outcome: f.outcome.as_str().to_string(),
        diverged_at: f.diverged_at.map(|s| s.as_str().to_string()),
        reason: text(&f.reason),
        time: d.at,
        trace_id: f.trace_id.to_string(),
        trace_link: link(f.trace_id, f.start, f.end),
    }
}

fn open_ref(p: &Promotion, now: Timestamp, link: LinkFn<'_>) -> PromotionRef {
    let report = p.report.as_ref();
    let start = p.first_start();
    PromotionRef {
        id: p.id.clone(),
        actor: report.and_then(|r| r.actor.clone()),
        environment: p.environment().map(str::to_string),
        app: report.and_then(|r| r.app.clone()),
        traceability: p.traceability.as_str().to_string(),
        outcome: Outcome::InProgress.as_str().to_string(),
        diverged_at: None,
        reason: None,
        time: p.start,
        trace_id: p.trace_id.to_string(),
        trace_link: link(p.trace_id, start, now.max(start)),
    }
}

impl Engine {
    /// The followed Deployments `filter` matches, by namespace and name: what runs, the
    /// promotion that delivered it, and a newer one in flight (else failed), if any.
    pub fn workloads(&self, filter: &WorkloadFilter, link: LinkFn<'_>) -> Vec<Workload> {
        // The newest open promotion touching each Deployment: by its rollout, or by a
        // reconcile (that changed something) of the Flux object that applies it.
        let mut in_flight: Map<&ObjectRef, &Promotion> = Map::default();
        for p in self.reg.values() {
            let rollouts = p.rollouts.iter().filter_map(|s| s.object.as_ref());
            let applied = p
                .reconciles
                .iter()
                .filter(|r| r.span.result != StageResult::NoChange)
                .filter_map(|r| r.span.object.as_ref())
                .filter_map(|o| self.rollouts.managed.get(o))
                .flatten();
            for dep in rollouts.chain(applied) {
                let e = in_flight.entry(dep).or_insert(p);
                if (p.start, &p.id) > (e.start, &e.id) {
                    *e = p;
                }
            }
        }
        let mut out = Vec::new();
        for (dep, st) in &self.rollouts.deployments {
            if filter
                .namespace
                .as_deref()
                .is_some_and(|n| n != dep.namespace)
            {
                continue;
            }
            let kept = self
                .workloads
                .by_deployment
                .get(&object_key_hash(&dep.namespace, &dep.name));
            let delivered_by = kept
                .and_then(WorkloadState::delivered)
                .map(|d| finished_ref(d, link));
            let newer = match in_flight.get(dep) {
                Some(p) => Some(open_ref(p, self.now, link)),
                None => kept
                    .and_then(WorkloadState::failed)
                    .map(|d| finished_ref(d, link)),
            };
            let named: Vec<&PromotionRef> = delivered_by.iter().chain(newer.iter()).collect();
            if !filter.matches(&dep.namespace, &named) {
                continue;
            }
            let running = kept
                .map(|k| {
                    k.running
                        .iter()
                        .map(|r| RunningReplicaSet {
                            name: r.name().to_string(),
                            images: r.images().map(str::to_string).collect(),
                            ready: i64::from(r.ready),
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Workload {
                namespace: dep.namespace.clone(),
                name: dep.name.clone(),
                managed_by: st.last.manager.as_ref().map(ToString::to_string),
                running,
                delivered_by,
                newer,
            });
        }
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// One followed Deployment; `None` when the engine does not follow it.
    pub fn workload(&self, namespace: &str, name: &str, link: LinkFn<'_>) -> Option<Workload> {
        let filter = WorkloadFilter {
            namespace: Some(namespace.to_string()),
            ..WorkloadFilter::default()
        };
        self.workloads(&filter, link)
            .into_iter()
            .find(|w| w.name == name)
    }

    /// Whether some workload names this finished promotion (as the one that delivered what
    /// runs, or a newer failure): its story is worth keeping.
    pub fn names_promotion(&self, id: &str) -> bool {
        self.workloads.named.contains_key(id)
    }
}
