//! Drift correction: a rollout that Flux's own run caused at a revision it had applied already
//! (a periodic or requested run changing back what was changed by hand). The rollout stage asks
//! here before it makes an unclaimed rollout an untraced change of its own.

use jiff::Timestamp;

use super::super::config::{add, CLAIM_SLACK};
use super::super::engine::Engine;
use super::super::promotion::{push_span, Promotion, Reconcile, Traceability};
use super::super::span::{StageResult, StageSpan};
use super::super::Map;
use super::reconcile::ReconcilerState;
use crate::model::{Kind, ObjectRef};
use crate::trace::{attr, SpanId, Stage};

/// A Kustomization's apply that changed Deployment `dep` back at the revision it had applied
/// already (a periodic run correcting drift), or a HelmRelease's drift correction, near
/// `start`: the reconciler, the revision, what it changed and when.
pub(super) struct DriftApply {
    reconciler: ObjectRef,
    uid: String,
    revision: String,
    changes: Vec<String>,
    at: Timestamp,
}

pub(super) fn drift_apply(
    reconcilers: &Map<ObjectRef, ReconcilerState>,
    manager: &ObjectRef,
    dep: &ObjectRef,
    start: Timestamp,
) -> Option<DriftApply> {
    let st = reconcilers.get(manager)?;
    let last = st.last.as_deref()?;
    let this = format!("Deployment/{}/{} configured", dep.namespace, dep.name);
    let near = |at: Timestamp| at <= add(start, CLAIM_SLACK) && add(at, CLAIM_SLACK) >= start;
    match manager.kind {
        Kind::Kustomization => {}
        // Only a correction of drift makes helm-controller say `DriftCorrected`: no revision
        // to compare, the chart version it names is the one released.
        Kind::HelmRelease => {
            let (revision, changes, at) = st
                .changes
                .iter()
                .find(|(_, changed, at)| changed.contains(&this) && near(*at))?;
            return Some(DriftApply {
                reconciler: manager.clone(),
                uid: last.uid.clone(),
                revision: revision.clone(),
                changes: changes.clone(),
                at: *at,
            });
        }
        _ => return None,
    }
    let applied = last.last_applied.as_deref()?;
    let (revision, changes, at) = st
        .changes
        .iter()
        .find(|(rev, changed, at)| rev == applied && changed.contains(&this) && near(*at))?;
    // The revision was applied before this run: the first time it was reconciled.
    let first = last
        .history
        .iter()
        .find(|h| h.revision == *revision)
        .and_then(|h| h.first_reconciled)?;
    (add(first, CLAIM_SLACK) < *at).then(|| DriftApply {
        reconciler: manager.clone(),
        uid: last.uid.clone(),
        revision: revision.clone(),
        changes: changes.clone(),
        at: *at,
    })
}

impl Engine {
    /// A rollout that Flux's own correction of drift caused: its trace holds the
    /// Kustomization's reconcile and apply that changed the Deployment back, and the rollout
    /// below them (`delivery.traceability=drift_correction`), not an untraced change.
    pub(super) fn drift_correction(
        &mut self,
        key: &ObjectRef,
        uid: &str,
        short_uid: &str,
        generation: i64,
        mut span: Box<StageSpan>,
        drift: DriftApply,
    ) {
        let id = format!(
            "drift/{}/{}/{}-{}",
            key.namespace, key.name, short_uid, generation
        );
        if self.reg.is_finished(&id) || self.reg.is_open(&id) {
            return;
        }
        let cluster = self.cfg.cluster.clone();
        let start = drift.at.min(span.start);
        let mut p = Promotion::new(
            id.clone(),
            start,
            None,
            Traceability::DriftCorrection,
            &cluster,
            self.cfg.deadlines.promotion,
        );
        let mk = |stage, parent| {
            let mut s = StageSpan::new(
                stage,
                SpanId::default(),
                parent,
                Some(drift.reconciler.clone()),
                drift.at,
                drift.at,
            );
            s.derive_id(&id, &cluster, &drift.uid, &drift.revision);
            s.set_object_attrs(&drift.reconciler);
            s.attrs.set(attr::FLUX_REVISION, drift.revision.clone());
            s.key.revision = Some(drift.revision.clone());
            s
        };
        let mut reconcile = mk(Stage::Reconcile, p.root);
        let mut apply = mk(Stage::Apply, reconcile.span_id);
        let msg = format!(
            "corrected drift at revision {}: {}",
            drift.revision,
            drift.changes.join(", ")
        );
        apply.finish(drift.at, StageResult::Succeeded, msg.clone());
        reconcile.finish(drift.at, StageResult::Succeeded, msg);
        span.derive_id(&id, &cluster, uid, &generation.to_string());
        span.parent = reconcile.span_id;
        span.key.manager = Some(drift.reconciler.clone());
        p.add_reconcile(Reconcile::new(reconcile, Some(apply), drift.revision, None));
        push_span(&mut p.rollouts, *span);
        self.reg.open(p);
        self.touched.insert(id);
    }
}
