//! Attribute keys. OpenTelemetry semantic-convention names (semconv 1.44) where one exists,
//! `delivery.*` and `flux.*` for the rest; no deprecated names. Collector configs, alert rules,
//! the dashboard and docs/queries.md use these names: change one only together with them.

pub const SERVICE_NAME: &str = "service.name";
/// Resource of the agent's own spans (`fluxtrace`, `fluxtrace-probe`).
pub const SERVICE_VERSION: &str = "service.version";
pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";
pub const K8S_CLUSTER_NAME: &str = "k8s.cluster.name";
pub const K8S_NAMESPACE_NAME: &str = "k8s.namespace.name";
pub const K8S_DEPLOYMENT_NAME: &str = "k8s.deployment.name";
pub const K8S_DEPLOYMENT_UID: &str = "k8s.deployment.uid";
pub const K8S_DAEMONSET_NAME: &str = "k8s.daemonset.name";
pub const K8S_DAEMONSET_UID: &str = "k8s.daemonset.uid";

/// The name and uid keys of a workload of kind `kind`: a DaemonSet's, else a Deployment's.
pub fn workload_keys(kind: crate::model::Kind) -> (&'static str, &'static str) {
    match kind {
        crate::model::Kind::DaemonSet => (K8S_DAEMONSET_NAME, K8S_DAEMONSET_UID),
        _ => (K8S_DEPLOYMENT_NAME, K8S_DEPLOYMENT_UID),
    }
}
pub const K8S_REPLICASET_NAME: &str = "k8s.replicaset.name";
pub const K8S_REPLICASET_UID: &str = "k8s.replicaset.uid";
pub const K8S_POD_NAME: &str = "k8s.pod.name";
pub const DEPLOYMENT_ENVIRONMENT_NAME: &str = "deployment.environment.name";
/// Root span: the promotion id.
pub const DEPLOYMENT_ID: &str = "deployment.id";
/// Root span: the app, else the Flux object or Deployment the promotion delivered.
pub const DEPLOYMENT_NAME: &str = "deployment.name";
/// Root span: `succeeded` or `failed` (absent for superseded and no-change promotions).
pub const DEPLOYMENT_STATUS: &str = "deployment.status";
pub const CICD_PIPELINE_NAME: &str = "cicd.pipeline.name";
pub const CICD_PIPELINE_RUN_ID: &str = "cicd.pipeline.run.id";
pub const CICD_PIPELINE_RUN_URL_FULL: &str = "cicd.pipeline.run.url.full";
/// Root span: `success`, `failure`, `timeout`, `cancellation` (superseded), `skip` (no change).
pub const CICD_PIPELINE_RESULT: &str = "cicd.pipeline.result";
/// Stage spans: the stage's span name.
pub const CICD_PIPELINE_TASK_NAME: &str = "cicd.pipeline.task.name";
/// Stage spans: the values of [`CICD_PIPELINE_RESULT`].
pub const CICD_PIPELINE_TASK_RUN_RESULT: &str = "cicd.pipeline.task.run.result";
/// Stage spans: `deploy`, or `test` for the traffic probe.
pub const CICD_PIPELINE_TASK_TYPE: &str = "cicd.pipeline.task.type";
pub const VCS_REF_HEAD_REVISION: &str = "vcs.ref.head.revision";
pub const VCS_REF_HEAD_NAME: &str = "vcs.ref.head.name";
pub const VCS_REPOSITORY_URL_FULL: &str = "vcs.repository.url.full";
pub const VCS_REPOSITORY_NAME: &str = "vcs.repository.name";
pub const OCI_MANIFEST_DIGEST: &str = "oci.manifest.digest";
pub const CONTAINER_IMAGE_NAME: &str = "container.image.name";
pub const CONTAINER_IMAGE_TAGS: &str = "container.image.tags";
pub const CONTAINER_IMAGE_REPO_DIGESTS: &str = "container.image.repo_digests";
/// The divergence reason on the root span, the failure reason on a stage span.
pub const ERROR_TYPE: &str = "error.type";

pub const DELIVERY_PROMOTION_ID: &str = "delivery.promotion.id";
pub const DELIVERY_PROMOTION_ACTOR: &str = "delivery.promotion.actor";
pub const DELIVERY_APP: &str = "delivery.app";
pub const DELIVERY_ARTIFACT_REPOSITORY: &str = "delivery.artifact.repository";
pub const DELIVERY_ARTIFACT_TAG: &str = "delivery.artifact.tag";
pub const DELIVERY_STAGE: &str = "delivery.stage";
pub const DELIVERY_PLANE: &str = "delivery.plane";
pub const DELIVERY_DIVERGENCE_STAGE: &str = "delivery.divergence.stage";
pub const DELIVERY_DIVERGENCE_MESSAGE: &str = "delivery.divergence.message";
/// What explains a rollout divergence (`OOMKilled`, `ImagePullBackOff`, `FailedCreate`, …): on
/// the root and on the span that diverged.
pub const DELIVERY_DIVERGENCE_CAUSE: &str = "delivery.divergence.cause";
pub const DELIVERY_TRACEABILITY: &str = "delivery.traceability";
pub const DELIVERY_APPLY_CHANGED: &str = "delivery.apply.changed";
pub const DELIVERY_APPLY_CHANGES: &str = "delivery.apply.changes";
pub const DELIVERY_TRIGGER_REQUESTED_AT: &str = "delivery.trigger.requested_at";
pub const DELIVERY_ROLLOUT_GENERATION: &str = "delivery.rollout.generation";
/// On a reconcile span: how long Flux waited before it attempted the revision (a `dependsOn`
/// object or the source not ready), in whole seconds, and for what (the controller's reason
/// and message). The wait does not count against the reconcile's deadline.
pub const DELIVERY_RECONCILE_WAITED_SECONDS: &str = "delivery.reconcile.waited_seconds";
pub const DELIVERY_RECONCILE_WAITED_FOR: &str = "delivery.reconcile.waited_for";
pub const DELIVERY_SUPERSEDED_BY: &str = "delivery.superseded_by";
/// On the root and source span: the newer revision that delivered the reported commit, which
/// a push overtook before the source fetched it (`main@sha1:<newer>`).
pub const DELIVERY_REVISION_DELIVERED_AS: &str = "delivery.revision.delivered_as";
/// On the root span: the promotion this one continues (a report's `promoted_from`).
pub const DELIVERY_PROMOTED_FROM: &str = "delivery.promoted_from";
/// On a span link: why it links: `promoted_from` (the report named the promotion it
/// continues) or `same_revision` (an earlier promotion of the same commit or digest to another
/// environment of this cluster).
pub const DELIVERY_LINK: &str = "delivery.link";
/// On a `promoted_from` span link: `true` when the linked trace and span ids are derived from
/// the named promotion's id, because this agent did not see that promotion (another cluster's,
/// or forgotten); a promotion that joined a CI trace has the CI's trace id instead.
pub const DELIVERY_LINK_DERIVED: &str = "delivery.link.derived";
/// On the root span, for UIs that show span links without their attributes (Jaeger shows them
/// as FOLLOWS_FROM references): why it links to the promotion it continues (`promoted_from`
/// or `same_revision`, as the link's `delivery.link`) and that promotion's trace id.
pub const DELIVERY_PROMOTED_FROM_LINK: &str = "delivery.promoted_from.link";
pub const DELIVERY_PROMOTED_FROM_TRACE_ID: &str = "delivery.promoted_from.trace_id";

pub const FLUX_OBJECT_KIND: &str = "flux.object.kind";
pub const FLUX_OBJECT_NAME: &str = "flux.object.name";
pub const FLUX_OBJECT_NAMESPACE: &str = "flux.object.namespace";
pub const FLUX_REVISION: &str = "flux.revision";
/// The ImagePolicy (`<namespace>/<name>`) that selected the image of an automated promotion
/// (on its root and `image.update` spans).
pub const FLUX_IMAGE_POLICY: &str = "flux.image.policy";
/// The Receiver whose webhook requested the reconcile (on `trigger` spans).
pub const FLUX_RECEIVER_NAME: &str = "flux.receiver.name";
pub const FLUX_RECEIVER_NAMESPACE: &str = "flux.receiver.namespace";

/// Span event attributes.
pub const EVENT_REASON: &str = "k8s.event.reason";
pub const EVENT_MESSAGE: &str = "k8s.event.message";
pub const EVENT_TYPE: &str = "k8s.event.type";
pub const EVENT_COUNT: &str = "k8s.event.count";
pub const EVENT_OBJECT: &str = "k8s.event.object";
pub const EVENT_COMPONENT: &str = "k8s.event.component";

/// Traffic probe.
pub const URL_FULL: &str = "url.full";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub const DELIVERY_PROBE_EXPECTED: &str = "delivery.probe.expected";
pub const DELIVERY_PROBE_SAMPLES: &str = "delivery.probe.samples";
pub const DELIVERY_PROBE_MATCHED: &str = "delivery.probe.matched";
pub const DELIVERY_PROBE_VERSIONS: &str = "delivery.probe.versions";

// Flagger canary analysis (`traffic.canary`)
pub const FLAGGER_CANARY_NAME: &str = "flagger.canary.name";
pub const FLAGGER_CANARY_PRIMARY: &str = "flagger.canary.primary";
pub const FLAGGER_CANARY_PHASE: &str = "flagger.canary.phase";
/// The highest canary weight the run reached (on a `canary.weight` span event: that step's).
pub const FLAGGER_CANARY_WEIGHT: &str = "flagger.canary.weight";
/// Iterations done (A/B testing, Blue/Green); on a `canary.iteration` span event: that one.
pub const FLAGGER_CANARY_ITERATIONS: &str = "flagger.canary.iterations";
pub const FLAGGER_CANARY_FAILED_CHECKS: &str = "flagger.canary.failed_checks";
pub const FLAGGER_CANARY_THRESHOLD: &str = "flagger.canary.threshold";
/// Weight steps the run went through (progressive traffic runs): the steps of the Canary's
/// schedule up to the highest weight reached.
pub const FLAGGER_CANARY_STEPS: &str = "flagger.canary.steps";
/// On a span event the agent made from the Canary's status rather than from an Event:
/// `status` (an agent restarted after the step does not have it).
pub const FLAGGER_CANARY_SOURCE: &str = "flagger.canary.source";
/// On a `canary.approved` span event: seconds the run waited at that manual gate.
pub const FLAGGER_CANARY_GATE_WAIT: &str = "flagger.canary.gate.wait_seconds";

#[cfg(test)]
mod tests {
    /// Deprecated semantic-convention names (semconv 1.44) are never emitted.
    #[test]
    fn no_deprecated_names() {
        let keys: Vec<&str> = include_str!("attr.rs")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub const "))
            .filter_map(|l| l.split_once("&str = \""))
            .filter_map(|(_, v)| v.split_once('"').map(|(k, _)| k))
            .collect();
        assert!(keys.len() > 40, "{keys:?}");
        for key in keys {
            assert!(
                key != "deployment.environment"
                    && !key.starts_with("vcs.repository.ref.")
                    && !key.starts_with("vcs.repository.change.")
                    && key != "container.image.tag",
                "{key} is deprecated"
            );
        }
    }
}
