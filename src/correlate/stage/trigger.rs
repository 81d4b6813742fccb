//! The trigger stage: a reconcile request (`reconcile.fluxcd.io/requestedAt`, set by a
//! Receiver webhook or `flux reconcile`) until the controller started work on it.
//!
//! Sources and reconcilers keep a [`TriggerDraft`] per object; the first promotion that object
//! joins after the request claims it as its `trigger` span.

use jiff::Timestamp;

use super::super::config::{add, sub, Deadlines, CLAIM_SLACK};
use super::super::promotion::Promotion;
use super::super::span::{StageResult, StageSpan};
use crate::model::{condition, CondStatus, Condition, ObjectRef, ReceiverObs};
use crate::trace::{attr, span_id_for, Stage};

#[derive(Clone, Debug)]
pub(in crate::correlate) struct TriggerDraft {
    value: String,
    start: Timestamp,
    /// The controller's own record of starting work after the request.
    working: Option<Timestamp>,
    handled: Option<Timestamp>,
    claimed: bool,
}

/// Follows a reconcile request on one object: requested when a new
/// `reconcile.fluxcd.io/requestedAt` value appears, handled when the controller started working
/// on it (its `Reconciling`/`Ready=Unknown` transition) or, failing that, when
/// `status.lastHandledReconcileAt` shows the same string.
pub(in crate::correlate) fn update_trigger(
    draft: &mut Option<TriggerDraft>,
    requested: &Option<String>,
    handled: &Option<String>,
    conditions: &[Condition],
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

/// Gives the promotion its trigger span from the object's pending request, once.
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
    if let Some(t) = p.trigger.as_mut() {
        if t.object.as_ref() == Some(object)
            && t.key.requested_at.as_deref() == Some(draft.value.as_str())
        {
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
        span_id_for(&p.id, Stage::Trigger, cluster, uid, &draft.value),
        p.root,
        Some(object.clone()),
        draft.start,
        add(draft.start, d.trigger),
    );
    s.set_object_attrs(object);
    s.attrs
        .set(attr::DELIVERY_TRIGGER_REQUESTED_AT, draft.value.clone());
    s.key.requested_at = Some(draft.value.clone());
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
