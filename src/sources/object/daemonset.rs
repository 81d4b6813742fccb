//! apps/v1 `DaemonSet` → [`DeploymentObs`] of kind DaemonSet: the workload observation the
//! rollout stage follows, with a DaemonSet's counts in a Deployment's places (Pods scheduled
//! per node rather than replicas). A DaemonSet has no `Progressing` condition and no progress
//! deadline: the rollout stage judges it by its counts and the engine's rollout deadline.

use super::{workload, RawKubeObject};
use crate::model::{DeploymentObs, ObjectRef};

pub(super) fn daemon_set(mut obj: RawKubeObject, object: ObjectRef, uid: String) -> DeploymentObs {
    let base = workload(&mut obj, object, uid);
    let status = obj.status.map(|s| *s).unwrap_or_default();
    let count = |n: Option<i64>| n.unwrap_or(0).max(0);
    DeploymentObs {
        replicas: count(status.desired_number_scheduled),
        updated: count(status.updated_number_scheduled),
        ready: count(status.number_ready),
        available: count(status.number_available),
        unavailable: count(status.number_unavailable),
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::super::raw_to_event;
    use crate::model::{EventBody, Kind, ObjectRef};

    fn daemon_set(status: serde_json::Value) -> crate::model::DeploymentObs {
        let json = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "node-agent", "namespace": "ds-apps", "uid": "u1",
                "generation": 2,
                "labels": {"kustomize.toolkit.fluxcd.io/name": "apps",
                    "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}},
            "spec": {
                "updateStrategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"annotations": {"fluxtrace.io/promotion-id": "P-7"}},
                    "spec": {"containers": [{"name": "agent", "image": "ghcr.io/acme/agent:1.2.0"}]}
                }
            },
            "status": status
        });
        match raw_to_event(serde_json::from_value(json).expect("shape"), false) {
            Ok(Some(EventBody::Deployment(d))) => d,
            other => panic!("not a workload: {other:?}"),
        }
    }

    #[test]
    fn a_daemonset_is_a_workload_of_its_own_kind_counted_in_scheduled_pods() {
        let d = daemon_set(serde_json::json!({
            "observedGeneration": 2, "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3, "numberReady": 3, "numberAvailable": 2,
            "numberUnavailable": 1
        }));
        // Not the Deployment of the same name.
        assert_eq!(
            d.object,
            ObjectRef::new(Kind::DaemonSet, "ds-apps", "node-agent")
        );
        assert_eq!(
            (d.replicas, d.updated, d.ready, d.available, d.unavailable),
            (3, 3, 3, 2, 1)
        );
        assert_eq!(d.marks.promotion_id.as_deref(), Some("P-7"));
        assert_eq!(d.images, ["ghcr.io/acme/agent:1.2.0"]);
        assert_eq!(
            d.manager,
            Some(ObjectRef::new(Kind::Kustomization, "flux-system", "apps"))
        );
        // One Pod not yet available: not complete.
        assert!(!d.rollout_complete());
        assert!(d
            .daemonset_progress()
            .is_some_and(|m| m.contains("2 of 3 updated pods are available")));
    }

    #[test]
    fn a_daemonset_rollout_completes_once_every_scheduled_pod_is_updated_and_available() {
        let done = daemon_set(serde_json::json!({
            "observedGeneration": 2, "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3, "numberReady": 3, "numberAvailable": 3
        }));
        assert!(done.rollout_complete());
        let unobserved = daemon_set(serde_json::json!({
            "observedGeneration": 1, "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3, "numberReady": 3, "numberAvailable": 3
        }));
        assert!(!unobserved.rollout_complete());
        let updating = daemon_set(serde_json::json!({
            "observedGeneration": 2, "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 1, "numberReady": 3, "numberAvailable": 3
        }));
        assert!(!updating.rollout_complete());
    }
}
