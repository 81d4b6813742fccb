//! Attribute keys. OpenTelemetry semantic-convention names where one exists, `delivery.*` and
//! `flux.*` for the rest. Collector configs and alert rules use these names: change one only
//! together with them.

pub const SERVICE_NAME: &str = "service.name";
pub const K8S_CLUSTER_NAME: &str = "k8s.cluster.name";
pub const K8S_NAMESPACE_NAME: &str = "k8s.namespace.name";
pub const K8S_DEPLOYMENT_NAME: &str = "k8s.deployment.name";
pub const K8S_REPLICASET_NAME: &str = "k8s.replicaset.name";
pub const K8S_POD_NAME: &str = "k8s.pod.name";
pub const DEPLOYMENT_ENVIRONMENT_NAME: &str = "deployment.environment.name";
pub const CICD_PIPELINE_NAME: &str = "cicd.pipeline.name";
pub const CICD_PIPELINE_RUN_ID: &str = "cicd.pipeline.run.id";
pub const CICD_PIPELINE_RUN_URL_FULL: &str = "cicd.pipeline.run.url.full";
pub const VCS_REF_HEAD_REVISION: &str = "vcs.ref.head.revision";
pub const VCS_REPOSITORY_URL_FULL: &str = "vcs.repository.url.full";
pub const OCI_MANIFEST_DIGEST: &str = "oci.manifest.digest";
pub const CONTAINER_IMAGE_NAME: &str = "container.image.name";
pub const CONTAINER_IMAGE_TAGS: &str = "container.image.tags";
pub const ERROR_TYPE: &str = "error.type";

pub const DELIVERY_PROMOTION_ID: &str = "delivery.promotion.id";
pub const DELIVERY_PROMOTION_ACTOR: &str = "delivery.promotion.actor";
pub const DELIVERY_APP: &str = "delivery.app";
pub const DELIVERY_ARTIFACT_REPOSITORY: &str = "delivery.artifact.repository";
pub const DELIVERY_ARTIFACT_TAG: &str = "delivery.artifact.tag";
pub const DELIVERY_STAGE: &str = "delivery.stage";
pub const DELIVERY_PLANE: &str = "delivery.plane";
pub const DELIVERY_OUTCOME: &str = "delivery.outcome";
pub const DELIVERY_DIVERGENCE_STAGE: &str = "delivery.divergence.stage";
pub const DELIVERY_DIVERGENCE_REASON: &str = "delivery.divergence.reason";
pub const DELIVERY_DIVERGENCE_MESSAGE: &str = "delivery.divergence.message";
pub const DELIVERY_TRACEABILITY: &str = "delivery.traceability";
pub const DELIVERY_APPLY_CHANGED: &str = "delivery.apply.changed";
pub const DELIVERY_APPLY_CHANGES: &str = "delivery.apply.changes";
pub const DELIVERY_TRIGGER_REQUESTED_AT: &str = "delivery.trigger.requested_at";
pub const DELIVERY_ROLLOUT_GENERATION: &str = "delivery.rollout.generation";
pub const DELIVERY_SUPERSEDED_BY: &str = "delivery.superseded_by";

pub const FLUX_OBJECT_KIND: &str = "flux.object.kind";
pub const FLUX_OBJECT_NAME: &str = "flux.object.name";
pub const FLUX_OBJECT_NAMESPACE: &str = "flux.object.namespace";
pub const FLUX_REVISION: &str = "flux.revision";
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
