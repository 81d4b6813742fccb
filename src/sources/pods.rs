//! The targeted Pod list behind [`crate::model::PodListRequest`]: the Pods of one failing
//! rollout's new ReplicaSet (one namespace, its `pod-template-hash` label, at most
//! [`POD_LIST_LIMIT`]). Never a cluster-wide watch: the engine asks only for a rollout under
//! way past half its progress deadline, or one that failed.
//!
//! Each listed Pod becomes an observation through its recording line (`record`'s
//! `recording_line`, decoded by `recording`): the agent applies it exactly as a replay of a
//! recording that carries it applies it, and `record` writes that same line.

use jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ApiResource;

use crate::model::{DeliveryEvent, PodListRequest};

/// The most Pods one list returns: enough to find what fails, bounded however many replicas.
pub const POD_LIST_LIMIT: u32 = 20;

/// Why a Pod list failed.
#[derive(Debug, thiserror::Error)]
pub enum PodListError {
    #[error("cannot list the Pods of ReplicaSet {replicaset}: {source}")]
    List {
        replicaset: String,
        #[source]
        source: kube::Error,
    },
}

impl PodListError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PodListError::List { .. } => "list_failed",
        }
    }
}

/// Lists the Pods `req` names.
pub async fn list(
    client: &kube::Client,
    req: &PodListRequest,
) -> Result<Vec<DynamicObject>, PodListError> {
    let ar = ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &req.deployment.namespace, &ar);
    let params = ListParams::default()
        .labels(&req.selector)
        .limit(POD_LIST_LIMIT);
    api.list(&params)
        .await
        .map(|l| l.items)
        .map_err(|source| PodListError::List {
            replicaset: req.replicaset.clone(),
            source,
        })
}

/// A listed Pod as a recording's `watch` line (`ADDED`, stamped `at`).
pub fn line(at: Timestamp, pod: DynamicObject) -> String {
    crate::record::recording_line(at, "ADDED", pod, "v1", "Pod")
}

/// A listed Pod as the observation its recording line gives.
pub fn observation(at: Timestamp, pod: DynamicObject) -> Option<DeliveryEvent> {
    super::recording::decode_line(&line(at, pod)).ok().flatten()
}
