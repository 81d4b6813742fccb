//! Lists the Pods of a failing rollout when the engine asks ([`crate::correlate::Output::ListPods`])
//! and hands each back as an observation (`sources::pods`). One list at a time: the requests
//! are few (one or two per failing rollout) and must not load the API server.

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::EngineHandle;
use crate::model::PodListRequest;
use crate::sources::pods;

/// The client that lists a failing rollout's Pods.
#[derive(Clone)]
pub struct PodLister(pub kube::Client);

impl std::fmt::Debug for PodLister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodLister")
    }
}

pub(super) async fn pod_loop(
    mut requests: mpsc::Receiver<PodListRequest>,
    client: kube::Client,
    handle: EngineHandle,
) {
    while let Some(req) = requests.recv().await {
        match pods::list(&client, &req).await {
            Ok(items) => {
                debug!(
                    message = "Pods of a failing rollout listed.",
                    deployment = %req.deployment,
                    replicaset = %req.replicaset,
                    pods = items.len()
                );
                for pod in items {
                    if let Some(ev) = pods::observation(handle.clock.now(), pod) {
                        let _ = handle.submit(ev).await;
                    }
                }
            }
            Err(error) => warn!(
                message = "Cannot list the Pods of a failing rollout.",
                deployment = %req.deployment,
                error_type = error.metric_label(),
                %error
            ),
        }
    }
}
