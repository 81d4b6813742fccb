//! The trigger stage: a reconcile request (`reconcile.fluxcd.io/requestedAt`, set by a
//! Receiver webhook or `flux reconcile`) until the controller started work on it.
//!
//! Sources and reconcilers keep a [`TriggerDraft`] per object; the first promotion that object
//! joins after the request claims it as its `trigger` span.

use jiff::{SignedDuration, Timestamp};

use super::super::config::{add, sub, Deadlines, CLAIM_SLACK};
use super::super::promotion::{push_span, Promotion};
use super::super::span::{StageResult, StageSpan};
use super::super::Map;
use crate::model::{
    condition, CondStatus, Condition, ObjectKey, ObjectKeyRef, ObjectRef, ReceiverObs,
};
use crate::trace::{attr, SpanId, Stage};

/// Receivers, found by the objects they trigger: a source or reconciler joining a promotion
/// looks up the Receivers naming it (or `*` in its namespace), not every Receiver.
#[derive(Default)]
pub(in crate::correlate) struct Receivers {
    by_object: Map<ObjectRef, ReceiverObs>,
    /// A resource as a Receiver names it (name `*` for all of a kind in a namespace) → the
    /// Receivers naming it, oldest first.
    by_target: Map<ObjectRef, Vec<ObjectRef>>,
}

impl Receivers {
    pub fn insert(&mut self, r: ReceiverObs) {
        self.remove(&r.object);
        for t in &r.resources {
            let naming = self.by_target.entry(t.clone()).or_default();
            if !naming.contains(&r.object) {
                naming.push(r.object.clone());
            }
        }
        self.by_object.insert(r.object.clone(), r);
    }

    pub fn remove(&mut self, o: &ObjectRef) {
        let Some(r) = self.by_object.remove(o) else {
            return;
        };
        for t in &r.resources {
            if let Some(naming) = self.by_target.get_mut(t) {
                naming.retain(|x| x != o);
                if naming.is_empty() {
                    self.by_target.remove(t);
                }
            }
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &ObjectRef> {
        self.by_object.keys()
    }

    pub fn len(&self) -> usize {
        self.by_object.len()
    }

    /// A Receiver whose webhook requests a reconcile of `object`.
    pub fn targeting(&self, object: &ObjectRef) -> Option<&ReceiverObs> {
        let every = ObjectKeyRef::new(object.kind, &object.namespace, "*");
        let found = [object as &dyn ObjectKey, &every]
            .into_iter()
            .filter_map(|t| self.by_target.get(t))
            .flatten()
            .filter_map(|k| self.by_object.get(k))
            .find(|r| r.targets(object));
        found
    }
}

#[derive(Clone, Debug)]
pub(in crate::correlate) struct TriggerDraft {
    value: String,
    start: Timestamp,
    handled: Option<Timestamp>,
    claimed: bool,
}

/// The time a `reconcile.fluxcd.io/requestedAt` value names: RFC 3339 (`flux reconcile`), or
/// Go's `time.Time` string (`2026-11-26 10:00:05.123456789 +0000 UTC m=+3605.24`, a Receiver).
pub(in crate::correlate) fn requested_time(value: &str) -> Option<Timestamp> {
    if let Ok(t) = value.parse::<Timestamp>() {
        return Some(t);
    }
    let mut parts = value.split_whitespace();
    let go = format!("{} {} {}", parts.next()?, parts.next()?, parts.next()?);
    Timestamp::strptime("%Y-%m-%d %H:%M:%S%.f %z", &go).ok()
}

/// Follows a reconcile request on one object: requested at the time its
/// `reconcile.fluxcd.io/requestedAt` value names (when it appears, for a value that names
/// none), handled when `status.lastHandledReconcileAt` shows the same string, at that status's
/// `Ready` transition (when the controller finished the work the request asked for). Both
/// survive a restart: a request already handled when first seen is a trigger if its time is
/// recent enough for a promotion to claim it.
/// The precision of a condition's `lastTransitionTime`.
const SECOND: SignedDuration = SignedDuration::from_secs(1);

pub(in crate::correlate) fn update_trigger(
    draft: &mut Option<TriggerDraft>,
    requested: &Option<String>,
    handled: &Option<String>,
    conditions: &[Condition],
    at: Timestamp,
) {
    if let Some(value) = requested {
        let is_new = draft.as_ref().is_none_or(|d| d.value != *value);
        // Read once a request: every later observation repeats it.
        let named = is_new.then(|| requested_time(value)).flatten();
        // A request with no time of its own that was already handled when first seen is
        // history, not a trigger.
        if is_new && (named.is_some() || handled.as_deref() != Some(value.as_str())) {
            *draft = Some(TriggerDraft {
                value: value.clone(),
                start: named.unwrap_or(at),
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
    if handled.as_deref() == Some(d.value.as_str()) {
        // Conditions are dated to the second, requests (`flux reconcile`) to the nanosecond:
        // a transition in the request's second may be the handling of it.
        let done = condition(conditions, "Ready")
            .filter(|c| c.status != CondStatus::Unknown)
            .and_then(|c| c.last_transition)
            .filter(|t| add(*t, SECOND) > d.start)
            .map(|t| t.max(d.start));
        d.handled = Some(done.unwrap_or(at).min(at));
    }
}

/// Gives the promotion a trigger span from the object's pending request, once per object.
pub(in crate::correlate) fn claim_trigger(
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
    if let Some(t) = p
        .triggers
        .iter_mut()
        .find(|t| t.object.as_ref() == Some(object))
    {
        if t.key.requested_at.as_deref() == Some(draft.value.as_str()) {
            if let Some(h) = draft.handled {
                t.finish(h, StageResult::Succeeded, "reconcile request handled");
            }
        }
        return;
    }
    if draft.claimed || draft.start < sub(p.start, CLAIM_SLACK) {
        return;
    }
    draft.claimed = true;
    let mut s = StageSpan::new(
        Stage::Trigger,
        SpanId::default(),
        p.root,
        Some(object.clone()),
        draft.start,
        add(draft.start, d.trigger),
    );
    s.derive_id(&p.id, cluster, uid, &draft.value);
    s.set_object_attrs(object);
    s.attrs
        .set(attr::DELIVERY_TRIGGER_REQUESTED_AT, draft.value.clone());
    s.key.requested_at = Some(draft.value.clone());
    receiver_attrs(&mut s, via);
    if let Some(h) = draft.handled {
        s.finish(h, StageResult::Succeeded, "reconcile request handled");
    }
    push_span(&mut p.triggers, s);
}

/// Names the Receiver whose webhook requested the reconcile, once one is known (a re-list
/// after a restart may deliver the Receiver after the object it triggers).
pub(in crate::correlate) fn receiver_attrs(s: &mut StageSpan, via: Option<&ReceiverObs>) {
    if let Some(r) = via.filter(|_| s.attrs.get(attr::FLUX_RECEIVER_NAME).is_none()) {
        s.attrs.set(attr::FLUX_RECEIVER_NAME, r.object.name.clone());
        s.attrs
            .set(attr::FLUX_RECEIVER_NAMESPACE, r.object.namespace.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn receiver(name: &str, resources: Vec<ObjectRef>) -> ReceiverObs {
        ReceiverObs {
            object: ObjectRef::new(Kind::Receiver, "flux-system", name),
            resources,
            webhook_path: None,
        }
    }

    #[test]
    fn receivers_are_found_by_what_they_trigger_until_changed_or_deleted() {
        let mut r = Receivers::default();
        let app = ObjectRef::new(Kind::GitRepository, "flux-system", "app");
        let every_git = ObjectRef::new(Kind::GitRepository, "flux-system", "*");
        r.insert(receiver("github", vec![every_git]));
        let elsewhere = ObjectRef::new(Kind::GitRepository, "team-a", "app");
        r.insert(receiver("team-a", vec![elsewhere.clone()]));
        let found = |r: &Receivers, o: &ObjectRef| r.targeting(o).map(|x| x.object.name.clone());
        assert_eq!(found(&r, &app).as_deref(), Some("github"));
        assert_eq!(found(&r, &elsewhere).as_deref(), Some("team-a"));
        let same_name_other_kind = ObjectRef::new(Kind::Kustomization, "flux-system", "app");
        assert_eq!(found(&r, &same_name_other_kind), None);
        // Changed to trigger OCI repositories only: it no longer triggers `app`.
        let every_oci = ObjectRef::new(Kind::OCIRepository, "flux-system", "*");
        r.insert(receiver("github", vec![every_oci]));
        assert_eq!(found(&r, &app), None);
        r.remove(&ObjectRef::new(Kind::Receiver, "flux-system", "github"));
        assert_eq!(r.len(), 1);
        assert_eq!(r.by_target.len(), 1);
    }
}
