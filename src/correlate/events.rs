//! Kubernetes and Flux events: de-duplication, buffering per object until a span can take
//! them, and the Pod → ReplicaSet → Deployment (or Pod → DaemonSet) mapping that tells which
//! rollout a Pod event is about.
//!
//! Fed by `Engine::apply`; read by `verdict` (events land on spans when a promotion ends) and
//! by the rollout stage (ReplicaSet creation times).

use std::borrow::Cow;
use std::collections::VecDeque;

use jiff::Timestamp;

use super::config::{EVENTS_PER_OBJECT, EVENT_WINDOW_SLACK};
use super::engine::Engine;
use super::{Map, Set};
use crate::model::{
    object_key_hash, FluxEventObs, Kind, KubeEventObs, ObjectKey, ObjectKeyRef, ObjectRef,
    RelistObs, ReplicaSetObs,
};
use crate::trace::{attr, AttrValue, Attributes, SpanEventRecord};

/// How client-go's event recorder begins the message of Events it merged (ten similar ones,
/// same object and reason, within ten minutes).
const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// A Kubernetes or Flux event waiting for a span to land on: only the fields its span event is
/// made of. The span event itself is built when the event lands, which most never do.
pub(super) struct BufferedEvent {
    pub time: Timestamp,
    /// Reason, message, object (`Kind/name`) and component one after the other: one allocation
    /// an event.
    text: Box<str>,
    /// Where the message, the object and the component start in `text`.
    starts: [usize; 3],
    pub count: i64,
    pub warning: bool,
    /// About a Pod: the span event names it (`k8s.pod.name`).
    pub pod: bool,
    pub revision: Option<Box<str>>,
    /// The core/v1 Event this is the latest state of (0 for a Flux notification): a repeat
    /// (`count` up, `lastTimestamp` later) replaces it, since a re-list after a restart shows
    /// only the Event's last state.
    pub series: u64,
}

/// What an event says, as [`BufferedEvent::new`] takes it.
pub(super) struct EventText<'a> {
    pub reason: &'a str,
    pub message: &'a str,
    /// Kind and name of the object.
    pub object: (&'a str, &'a str),
    /// Empty when not named.
    pub component: &'a str,
}

impl BufferedEvent {
    pub fn new(time: Timestamp, t: EventText<'_>, count: i64, warning: bool) -> Self {
        let (kind, name) = t.object;
        let mut text = String::with_capacity(
            t.reason.len() + t.message.len() + kind.len() + 1 + name.len() + t.component.len(),
        );
        text.push_str(t.reason);
        let message = text.len();
        text.push_str(t.message);
        let object = text.len();
        text.push_str(kind);
        text.push('/');
        text.push_str(name);
        let component = text.len();
        text.push_str(t.component);
        BufferedEvent {
            time,
            text: text.into_boxed_str(),
            starts: [message, object, component],
            count,
            warning,
            pod: kind == "Pod",
            revision: None,
            series: 0,
        }
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.starts[i - 1] };
        let end = self.starts.get(i).copied().unwrap_or(self.text.len());
        self.text.get(start..end).unwrap_or_default()
    }

    pub fn reason(&self) -> &str {
        self.part(0)
    }

    pub fn message(&self) -> &str {
        self.part(1)
    }

    /// `Kind/name` of the object, as the event names it.
    pub fn object(&self) -> &str {
        self.part(2)
    }

    /// The component that reported it; empty when not named.
    pub fn component(&self) -> &str {
        self.part(3)
    }

    /// The span event it becomes on the span it lands on.
    pub fn record(&self) -> SpanEventRecord {
        let str = |v: &str| AttrValue::from(v.to_owned());
        let (object, component) = (self.object(), self.component());
        let reason = known(self.reason(), KNOWN_REASONS);
        let pod = self.pod.then(|| object.split_once('/')).flatten();
        let mut attrs = Vec::with_capacity(
            4 + usize::from(self.count > 1)
                + usize::from(!component.is_empty())
                + usize::from(pod.is_some()),
        );
        attrs.push((attr::EVENT_REASON, AttrValue::Str(reason.clone())));
        attrs.push((attr::EVENT_MESSAGE, str(self.message())));
        let type_ = if self.warning { "Warning" } else { "Normal" };
        attrs.push((attr::EVENT_TYPE, AttrValue::from(type_)));
        attrs.push((attr::EVENT_OBJECT, str(object)));
        if self.count > 1 {
            attrs.push((attr::EVENT_COUNT, AttrValue::Int(self.count)));
        }
        if !component.is_empty() {
            attrs.push((
                attr::EVENT_COMPONENT,
                AttrValue::Str(known(component, KNOWN_COMPONENTS)),
            ));
        }
        if let Some((_, pod)) = pod {
            attrs.push((attr::K8S_POD_NAME, str(pod)));
        }
        SpanEventRecord {
            name: reason,
            time: self.time,
            attributes: Attributes(attrs),
        }
    }

    /// Where its span event goes among the span's events: the key [`SpanEventRecord`]s of
    /// landed events sort by (time; owners before what they own; object, reason, message).
    pub fn order(&self) -> (Timestamp, u8, &str, &str, &str) {
        let object = self.object();
        (
            self.time,
            object_rank(object),
            object,
            self.reason(),
            self.message(),
        )
    }
}

/// Reasons the Kubernetes controllers, the kubelet and Flux commonly give: a span event names
/// its reason twice (its name and `k8s.event.reason`), with no allocation for these.
const KNOWN_REASONS: &[&str] = &[
    "ScalingReplicaSet",
    "SuccessfulCreate",
    "SuccessfulDelete",
    "FailedCreate",
    "Scheduled",
    "FailedScheduling",
    "Pulling",
    "Pulled",
    "Created",
    "Started",
    "Killing",
    "BackOff",
    "Failed",
    "Unhealthy",
    "FailedMount",
    "SandboxChanged",
    "ReconciliationSucceeded",
    "ReconciliationFailed",
    "Progressing",
    "ProgressingWithRetry",
    "NewArtifact",
    "ArtifactUpToDate",
    "ArtifactFailed",
    "DependencyNotReady",
    "SourceNotReady",
    "HealthCheckFailed",
    "InstallSucceeded",
    "InstallFailed",
    "UpgradeSucceeded",
    "UpgradeFailed",
    "Succeeded",
    "NewRevision",
    "GitOperationSucceeded",
    "Synced",
];

/// The components that report most events.
const KNOWN_COMPONENTS: &[&str] = &[
    "kubelet",
    "default-scheduler",
    "deployment-controller",
    "replicaset-controller",
    "daemonset-controller",
    "statefulset-controller",
    "kustomize-controller",
    "helm-controller",
    "source-controller",
    "image-reflector-controller",
    "image-automation-controller",
    "notification-controller",
    "flagger",
];

/// `v` borrowed from `known` when it is one of them, else a copy.
fn known(v: &str, known: &[&'static str]) -> Cow<'static, str> {
    match known.iter().find(|k| **k == v) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(v.to_owned()),
    }
}

/// Within one time, a Deployment's events come before its ReplicaSets', and those before its
/// Pods'.
pub(super) fn object_rank(object: &str) -> u8 {
    match object.split_once('/').map(|(kind, _)| kind) {
        Some("ReplicaSet") => 1,
        Some("Pod") => 2,
        _ => 0,
    }
}

pub(super) struct RsInfo {
    /// [`object_key_hash`] of the namespace alone.
    pub namespace: u64,
    pub uid: String,
    pub deployment: Option<String>,
    pub created: Option<Timestamp>,
    /// [`images_hash`] of its pod template's images.
    pub images: u64,
}

/// A hash of a pod template's container images: which of a Deployment's ReplicaSets runs its
/// current template, as far as images tell.
pub(super) fn images_hash(images: &[String]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::default().hash_one(images)
}

#[derive(Default)]
pub(super) struct EventStore {
    by_object: Map<ObjectRef, VecDeque<BufferedEvent>>,
    /// Events already applied, by a 64-bit hash of their identity: (count, when).
    seen: Map<u64, (i64, Timestamp)>,
    /// Recent ReplicaSets by [`object_key_hash`] of namespace and name: looked up for every Pod
    /// event, with no allocation.
    replicasets: Map<u64, RsInfo>,
}

impl EventStore {
    pub fn of(&self, obj: &ObjectRef) -> impl Iterator<Item = &BufferedEvent> {
        self.by_object.get(obj).into_iter().flatten()
    }

    /// Whether an event with this identity and at least this count was applied before; records
    /// it otherwise.
    pub(super) fn seen_before(&mut self, identity: u64, count: i64, at: Timestamp) -> bool {
        let seen = self.seen.entry(identity).or_insert((i64::MIN, at));
        if seen.0 >= count {
            return true;
        }
        *seen = (count, at);
        false
    }

    fn buffer(&mut self, target: ObjectRef, ev: BufferedEvent, horizon: Timestamp) {
        // Most objects have an event or two buffered at a time: no room for four to start with.
        let buf = self
            .by_object
            .entry(target)
            .or_insert_with(|| VecDeque::with_capacity(1));
        if ev.series != 0 {
            if let Some(e) = buf.iter_mut().rev().find(|e| e.series == ev.series) {
                *e = ev;
                return;
            }
        }
        // Flux controllers write each notification twice: as a core/v1 Event and to
        // notification-controller. Keep one.
        // The time first: it rules out most, without comparing text.
        let same = |e: &BufferedEvent| {
            e.time.duration_since(ev.time).abs() <= EVENT_WINDOW_SLACK
                && e.reason() == ev.reason()
                && e.message() == ev.message()
                && e.object() == ev.object()
        };
        if buf.iter().rev().take(32).any(same) {
            return;
        }
        while buf.front().is_some_and(|e| e.time < horizon) || buf.len() >= EVENTS_PER_OBJECT {
            buf.pop_front();
        }
        buf.push_back(ev);
    }

    pub fn replicaset(&self, ns: &str, rs: &str) -> Option<&RsInfo> {
        self.replicasets.get(&object_key_hash(ns, rs))
    }

    /// Keeps what a ReplicaSet tells while it can matter; gives back its identity.
    pub fn on_replicaset(&mut self, obs: ReplicaSetObs, idle_since: Timestamp) -> ObjectRef {
        let key = object_key_hash(&obs.object.namespace, &obs.object.name);
        // Only a new ReplicaSet can start a rollout; Pod names lead to older ones anyway.
        if obs.created.is_some_and(|c| c < idle_since) {
            self.replicasets.remove(&key);
            return obs.object;
        }
        self.replicasets.insert(
            key,
            RsInfo {
                namespace: object_key_hash(&obs.object.namespace, ""),
                uid: obs.uid,
                deployment: obs.deployment,
                created: obs.created,
                images: images_hash(&obs.images),
            },
        );
        obs.object
    }

    /// Forgets the ReplicaSets a re-list of ReplicaSets left out.
    pub fn forget_replicasets_left_out(&mut self, r: &RelistObs) {
        let namespace = r.namespace.as_ref().map(|ns| object_key_hash(ns, ""));
        self.replicasets.retain(|key, rs| {
            namespace.is_some_and(|ns| ns != rs.namespace) || r.present.contains(key)
        });
    }

    pub fn forget_replicaset(&mut self, o: &ObjectRef) {
        self.replicasets
            .remove(&object_key_hash(&o.namespace, &o.name));
    }

    /// Drops what was buffered for an object that is gone.
    pub fn forget(&mut self, o: &ObjectRef) {
        self.by_object.remove(o);
    }

    /// The name of the Deployment a ReplicaSet belongs to: its owner, else its name without
    /// the pod-template hash.
    pub fn deployment_name<'a>(&'a self, ns: &str, rs: &'a str) -> &'a str {
        self.replicasets
            .get(&object_key_hash(ns, rs))
            .and_then(|i| i.deployment.as_deref())
            .unwrap_or_else(|| rs.rsplit_once('-').map_or(rs, |(d, _)| d))
    }

    pub fn deployment_of_rs(&self, ns: &str, rs: &str) -> ObjectRef {
        ObjectRef::new(Kind::Deployment, ns, self.deployment_name(ns, rs))
    }

    pub fn deployment_of_pod(&self, ns: &str, pod: &str) -> ObjectRef {
        let rs = pod.rsplit_once('-').map_or(pod, |(r, _)| r);
        self.deployment_of_rs(ns, rs)
    }

    /// Forgets events past `horizon` (or past `idle` for objects no open work is about), and
    /// ReplicaSets created before `idle`.
    pub fn prune(&mut self, horizon: Timestamp, idle: Timestamp, active: &Set<&ObjectRef>) {
        self.seen.retain(|_, (_, t)| *t >= idle);
        let recent = horizon.max(idle);
        self.by_object.retain(|obj, buf| {
            // Most buffers hold nothing old enough to go, active or not.
            if buf.front().is_some_and(|e| e.time >= recent) {
                return true;
            }
            let keep_from = if active.contains(obj) { horizon } else { idle };
            while buf.front().is_some_and(|e| e.time < keep_from) {
                buf.pop_front();
            }
            !buf.is_empty()
        });
        self.replicasets
            .retain(|_, rs| rs.created.is_none_or(|c| c >= idle));
    }

    /// (objects with buffered events, buffered events, remembered identities, ReplicaSets)
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.by_object.len(),
            self.by_object.values().map(VecDeque::len).sum(),
            self.seen.len(),
            self.replicasets.len(),
        )
    }
}

/// A 64-bit identity for de-duplication (collisions only make a repeat look new or a new one
/// look repeated, once in 2^64).
pub(super) fn identity_hash(parts: &[&str]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::default().hash_one(parts)
}

impl Engine {
    /// The workload a Pod belongs to. The DaemonSet controller names its Pods
    /// `<daemonset>-<5 random characters>`, the ReplicaSet controller `<replicaset>-<5 random
    /// characters>`: a followed DaemonSet of the Pod's name without its suffix, unless a
    /// ReplicaSet has that name; else the Deployment of its ReplicaSet.
    pub(super) fn workload_of_pod(&self, ns: &str, pod: &str) -> ObjectRef {
        if let Some((owner, _)) = pod.rsplit_once('-') {
            let ds = ObjectKeyRef::new(Kind::DaemonSet, ns, owner);
            if self.events.replicaset(ns, owner).is_none()
                && self
                    .rollouts
                    .deployments
                    .contains_key(&ds as &dyn ObjectKey)
            {
                return ds.to_owned();
            }
        }
        self.events.deployment_of_pod(ns, pod)
    }

    pub(super) fn on_kube_event(&mut self, at: Timestamp, ev: KubeEventObs) {
        let series = identity_hash(&[&ev.uid]);
        self.on_kube_event_of(at, ev, series);
    }

    /// [`Engine::on_kube_event`] of an Event whose series (the hash of its uid) is known.
    pub(super) fn on_kube_event_of(&mut self, at: Timestamp, ev: KubeEventObs, series: u64) {
        if self.events.seen_before(series, ev.count, at) {
            return;
        }
        let ns = &ev.involved_namespace;
        let target = match Kind::parse(&ev.involved_kind) {
            Some(Kind::Pod) => self.workload_of_pod(ns, &ev.involved_name),
            Some(Kind::ReplicaSet) => self.events.deployment_of_rs(ns, &ev.involved_name),
            Some(k) if k.is_workload() => ObjectRef::new(k, ns.clone(), ev.involved_name.clone()),
            Some(k)
                if k.is_source()
                    || k.is_image()
                    || matches!(k, Kind::Kustomization | Kind::HelmRelease | Kind::Canary) =>
            {
                ObjectRef::new(k, ns.clone(), ev.involved_name.clone())
            }
            _ => return,
        };
        if self.stale(ev.time.unwrap_or(at), &target) {
            return;
        }
        let mut ev = ev;
        let repeat = self.repeat_revision(&target, &ev);
        // A repeat whose annotation is stale is about what the controller does now: dated by
        // its `lastTimestamp`, not by the first occurrence (about another revision).
        let restated = repeat.as_ref().is_some_and(|r| *r != ev.revision);
        if let Some(revision) = repeat {
            ev.revision = revision;
        }
        if let Some(rev) = &ev.revision {
            let time = ev.time.unwrap_or(at);
            self.record_apply_event(&target, rev, &ev.reason, &ev.message, time);
        }
        let text = EventText {
            reason: &ev.reason,
            message: &ev.message,
            object: (&ev.involved_kind, &ev.involved_name),
            component: &ev.component,
        };
        // A repeated Event is one span event, at its first occurrence, with its last count: a
        // re-list after a restart shows only its last state, the earlier repeats are gone.
        let time = if restated {
            ev.time.unwrap_or(at)
        } else {
            ev.first_time.or(ev.time).unwrap_or(at)
        };
        let mut buffered = BufferedEvent::new(time, text, ev.count, ev.warning);
        buffered.revision = ev.revision.map(Into::into);
        buffered.series = series.max(1);
        self.buffer_event(target, buffered);
    }

    /// The revision a Flux controller's Event is about. client-go's recorder folds a repeat
    /// of an Event (same reason and message, within ten minutes) into the Event object it
    /// made first: `count` and `lastTimestamp` move, the annotations stay those of the first
    /// occurrence. So the second "Deployment/web configured" of a Kustomization still names
    /// the revision of the first; a repeat is about the revision the Kustomization or
    /// HelmRelease is attempting now.
    ///
    /// After ten similar Events (same reason, other messages) within ten minutes the recorder
    /// merges the rest into one Event without annotations, its message prefixed
    /// `(combined from similar events): `: about what the controller attempts now too.
    ///
    /// Before an attempt (a dependency or the source not ready) that is the source's newest
    /// revision, not the one last attempted.
    ///
    /// `None` for an Event that is no such repeat: its annotation holds.
    fn repeat_revision(&self, target: &ObjectRef, ev: &KubeEventObs) -> Option<Option<String>> {
        let merged = ev.message.starts_with(COMBINED_PREFIX);
        let repeat = (ev.count > 1 || merged)
            && matches!(target.kind, Kind::Kustomization | Kind::HelmRelease);
        if !repeat {
            return None;
        }
        let last = self.reconcilers.get(target).and_then(|st| st.last.as_ref());
        let waits = matches!(
            ev.reason.as_str(),
            "DependencyNotReady" | "ArtifactFailed" | "SourceNotReady"
        );
        let newest = last
            .filter(|_| waits && target.kind == Kind::Kustomization)
            .and_then(|l| l.source_ref.as_ref())
            .and_then(|s| self.sources.get(s))
            .and_then(|s| s.last.as_ref())
            .and_then(|s| s.revision.clone());
        Some(
            newest
                .or_else(|| last.and_then(|l| l.last_attempted.clone()))
                .or_else(|| ev.revision.clone()),
        )
    }

    pub(super) fn on_flux_event(&mut self, at: Timestamp, ev: FluxEventObs) {
        let time = ev.time.to_string();
        let identity = identity_hash(&[
            "flux",
            ev.object.kind.as_str(),
            &ev.object.namespace,
            &ev.object.name,
            &time,
            &ev.reason,
            &ev.message,
        ]);
        if self.events.seen_before(identity, 1, at) {
            return;
        }
        let stale = self.stale(ev.time, &ev.object);
        if let Some(rev) = ev.revision.as_ref().filter(|_| !stale) {
            self.record_apply_event(&ev.object, rev, &ev.reason, &ev.message, ev.time);
        }
        if let (Some(pid), Some(rev)) = (&ev.promotion_id, &ev.revision) {
            if self.ensure_annotated(pid, ev.time.min(at)) {
                self.reg.add_keys(pid, crate::revision::lookup_keys(rev));
                self.rejoin(pid, at);
            }
        }
        if !stale {
            let text = EventText {
                reason: &ev.reason,
                message: &ev.message,
                object: (ev.object.kind.as_str(), &ev.object.name),
                component: &ev.controller,
            };
            let mut buffered = BufferedEvent::new(ev.time, text, 1, ev.error);
            buffered.revision = ev.revision.map(Into::into);
            // A Flux event's span event never names a Pod.
            buffered.pod = false;
            self.buffer_event(ev.object, buffered);
        }
    }

    /// An old event about an object nothing waits on can land on no span and says nothing
    /// about an apply that can still matter (a re-list of Events repeats old ones once their
    /// de-duplication memory has aged out: they must not bring back state of deleted objects).
    ///
    /// While verdicts are held (an initial list after a start or restart), nothing is stale:
    /// the promotion an event belongs to may be among what is still to be listed.
    pub(super) fn stale(&self, time: Timestamp, obj: &ObjectRef) -> bool {
        if self.held() {
            // An initial list: nothing is open yet, but nothing this old can land on a span of
            // a promotion still open.
            return time < self.horizon();
        }
        time < self.idle_since() && !self.active(obj)
    }

    /// Buffers an event that is not [`stale`](Self::stale) (the caller checked).
    pub(super) fn buffer_event(&mut self, target: ObjectRef, ev: BufferedEvent) {
        let horizon = if self.held() {
            Timestamp::MIN
        } else {
            self.horizon()
        };
        self.events.buffer(target, ev, horizon);
    }
}
