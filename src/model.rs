//! The plain types every stage of the data flow speaks.
//!
//! Sources convert what they observe (Kubernetes objects, Flux events, promotion reports)
//! into [`DeliveryEvent`]s; the engine consumes nothing else. These types hold only the fields
//! correlation needs, owned and normalized, never whole Kubernetes objects.

use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The annotation (on OCI artifacts, Flux objects, Deployments and pod templates) naming the
/// promotion a change belongs to.
pub const PROMOTION_ANNOTATION: &str = "fluxtrace.io/promotion-id";
/// The annotation carrying the CI pipeline's W3C trace context.
pub const TRACEPARENT_ANNOTATION: &str = "fluxtrace.io/traceparent";
/// Flux's event metadata key for the promotion id (Flux strips the prefix for providers).
pub const FLUX_EVENT_PROMOTION_KEY: &str = "event.toolkit.fluxcd.io/promotion-id";
/// The annotation a Receiver (or `flux reconcile`) sets to request a reconcile.
pub const REQUESTED_AT_ANNOTATION: &str = "reconcile.fluxcd.io/requestedAt";

/// Timestamps from outside are kept within years 1970..9000, and durations within a year, so
/// that no deadline arithmetic can overflow on hostile input (jiff panics on overflow).
pub fn sane_time(t: Timestamp) -> Timestamp {
    let lo = Timestamp::UNIX_EPOCH;
    let hi = Timestamp::from_second(221_845_392_000).unwrap_or(Timestamp::MAX); // 9000-01-01
    t.clamp(lo, hi)
}

/// See [`sane_time`].
pub fn sane_duration(d: SignedDuration) -> SignedDuration {
    d.clamp(SignedDuration::ZERO, SignedDuration::from_hours(24 * 366))
}

/// The kinds of object the engine understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    GitRepository,
    OCIRepository,
    HelmRepository,
    HelmChart,
    Bucket,
    /// An artifact another controller produced (`source.toolkit.fluxcd.io/v1`, Flux 2.7+).
    ExternalArtifact,
    Kustomization,
    HelmRelease,
    Receiver,
    Deployment,
    /// An apps/v1 DaemonSet: a workload rolled out like a Deployment, one Pod per node.
    DaemonSet,
    ReplicaSet,
    Pod,
    ImageRepository,
    ImagePolicy,
    ImageUpdateAutomation,
    /// A Flagger Canary (`flagger.app/v1beta1`).
    Canary,
}

impl Kind {
    /// Parses a Kubernetes `kind` string; `None` for kinds fluxtrace does not follow.
    pub fn parse(kind: &str) -> Option<Kind> {
        Some(match kind {
            "GitRepository" => Kind::GitRepository,
            "OCIRepository" => Kind::OCIRepository,
            "HelmRepository" => Kind::HelmRepository,
            "HelmChart" => Kind::HelmChart,
            "Bucket" => Kind::Bucket,
            "ExternalArtifact" => Kind::ExternalArtifact,
            "Kustomization" => Kind::Kustomization,
            "HelmRelease" => Kind::HelmRelease,
            "Receiver" => Kind::Receiver,
            "Deployment" => Kind::Deployment,
            "DaemonSet" => Kind::DaemonSet,
            "ReplicaSet" => Kind::ReplicaSet,
            "Pod" => Kind::Pod,
            "ImageRepository" => Kind::ImageRepository,
            "ImagePolicy" => Kind::ImagePolicy,
            "ImageUpdateAutomation" => Kind::ImageUpdateAutomation,
            "Canary" => Kind::Canary,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GitRepository => "GitRepository",
            Kind::OCIRepository => "OCIRepository",
            Kind::HelmRepository => "HelmRepository",
            Kind::HelmChart => "HelmChart",
            Kind::Bucket => "Bucket",
            Kind::ExternalArtifact => "ExternalArtifact",
            Kind::Kustomization => "Kustomization",
            Kind::HelmRelease => "HelmRelease",
            Kind::Receiver => "Receiver",
            Kind::Deployment => "Deployment",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Pod => "Pod",
            Kind::ImageRepository => "ImageRepository",
            Kind::ImagePolicy => "ImagePolicy",
            Kind::ImageUpdateAutomation => "ImageUpdateAutomation",
            Kind::Canary => "Canary",
        }
    }

    /// Image automation kinds (image.toolkit.fluxcd.io).
    pub fn is_image(self) -> bool {
        matches!(
            self,
            Kind::ImageRepository | Kind::ImagePolicy | Kind::ImageUpdateAutomation
        )
    }

    /// Workloads whose rollouts fluxtrace follows: Deployments and DaemonSets.
    pub fn is_workload(self) -> bool {
        matches!(self, Kind::Deployment | Kind::DaemonSet)
    }

    /// Source-controller kinds: they fetch artifacts.
    pub fn is_source(self) -> bool {
        matches!(
            self,
            Kind::GitRepository
                | Kind::OCIRepository
                | Kind::HelmRepository
                | Kind::HelmChart
                | Kind::Bucket
                | Kind::ExternalArtifact
        )
    }
}

/// A namespaced object identity. Cluster-scoped objects have an empty namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// An object identity to look up maps keyed by [`ObjectRef`] with, borrowed: a lookup with
/// the names an observation carries builds no key (`map.get(&key as &dyn ObjectKey)`).
pub trait ObjectKey {
    fn parts(&self) -> (Kind, &str, &str);
}

impl ObjectKey for ObjectRef {
    fn parts(&self) -> (Kind, &str, &str) {
        (self.kind, &self.namespace, &self.name)
    }
}

/// An [`ObjectRef`] of borrowed names.
#[derive(Clone, Copy, Debug)]
pub struct ObjectKeyRef<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl<'a> ObjectKeyRef<'a> {
    pub fn new(kind: Kind, namespace: &'a str, name: &'a str) -> Self {
        ObjectKeyRef {
            kind,
            namespace,
            name,
        }
    }

    pub fn to_owned(self) -> ObjectRef {
        ObjectRef::new(self.kind, self.namespace, self.name)
    }
}

impl ObjectKey for ObjectKeyRef<'_> {
    fn parts(&self) -> (Kind, &str, &str) {
        (self.kind, self.namespace, self.name)
    }
}

impl<'a> std::borrow::Borrow<dyn ObjectKey + 'a> for ObjectRef {
    fn borrow(&self) -> &(dyn ObjectKey + 'a) {
        self
    }
}

/// Hashes as the derived `Hash` of [`ObjectRef`] does (field by field), as `Borrow` requires.
impl std::hash::Hash for dyn ObjectKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (kind, namespace, name) = self.parts();
        kind.hash(state);
        namespace.hash(state);
        name.hash(state);
    }
}

impl PartialEq for dyn ObjectKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn ObjectKey + '_ {}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// `status` of a Kubernetes condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum CondStatus {
    True,
    False,
    Unknown,
}

/// A status condition, trimmed to what correlation reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Condition {
    pub type_: String,
    pub status: CondStatus,
    pub reason: String,
    pub message: String,
    pub last_transition: Option<Timestamp>,
    pub last_update: Option<Timestamp>,
    /// The generation of the object the condition speaks for (Flux sets it on every condition).
    pub observed_generation: Option<i64>,
}

/// Finds a condition by type.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// One observation, stamped with the time it was made (the recording's `at`, or arrival).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryEvent {
    pub at: Timestamp,
    pub body: EventBody,
}

/// What was observed.
#[derive(Clone, Debug, PartialEq)]
pub enum EventBody {
    Promotion(PromotionReport),
    Source(SourceObs),
    Reconciler(ReconcilerObs),
    Deployment(DeploymentObs),
    ReplicaSet(ReplicaSetObs),
    KubeEvent(KubeEventObs),
    FluxEvent(FluxEventObs),
    /// The outcome of a traffic probe the engine asked for.
    ProbeResult(ProbeResult),
    /// A notification-controller Receiver: which objects its webhook asks to reconcile.
    Receiver(ReceiverObs),
    /// An ImagePolicy (image-reflector-controller): the image tag it selected.
    ImagePolicy(ImagePolicyObs),
    /// An ImageUpdateAutomation (image-automation-controller): the commit it pushed.
    ImageAutomation(ImageAutomationObs),
    /// A Flagger Canary: its target and where its analysis stands.
    Canary(CanaryObs),
    /// A watched object was deleted.
    Deleted(ObjectRef),
    /// A watch re-listed its kind: objects of that kind (in that namespace, if the watch is
    /// scoped to one) that the list did not contain were deleted while the watch was down.
    Relisted(RelistObs),
    /// A Pod of a failing rollout's new ReplicaSet, from the list the engine asked for
    /// ([`PodListRequest`]): what its container statuses say is wrong.
    Pod(PodObs),
}

/// What a completed re-list contained, as hashes of namespace and name ([`object_key_hash`]):
/// eight bytes an object, held only while the list is in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct RelistObs {
    pub kind: Kind,
    /// The namespace the watch is scoped to; `None` for all namespaces.
    pub namespace: Option<String>,
    pub present: std::collections::HashSet<u64>,
}

impl RelistObs {
    /// Whether `o` is of the re-listed kind and scope but was not listed.
    pub fn left_out(&self, o: &ObjectRef) -> bool {
        o.kind == self.kind
            && self.namespace.as_ref().is_none_or(|ns| *ns == o.namespace)
            && !self
                .present
                .contains(&object_key_hash(&o.namespace, &o.name))
    }
}

/// A stable 64-bit hash of an object's namespace and name (foldhash's full-quality variant
/// with a fixed seed: the same in every process of the same build). Computed for every Pod
/// event and every re-listed object: several times faster than SipHash on names this short.
pub fn object_key_hash(namespace: &str, name: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::default().hash_one((namespace, name))
}

/// The annotation naming the URL a traffic probe checks after a rollout.
pub const PROBE_URL_ANNOTATION: &str = "fluxtrace.io/probe-url";
/// Where the served version is read: `header:<name>`, `json:<pointer>` or `body`.
pub const PROBE_EXPECT_ANNOTATION: &str = "fluxtrace.io/probe-expect";
/// What version is expected: `image-tag` (default), `promotion-id`, or a literal version.
pub const PROBE_EXPECTED_VERSION_ANNOTATION: &str = "fluxtrace.io/probe-expected-version";

/// A workload's opt-in to the traffic probe (annotations on the Deployment or on the Flux object
/// that applies it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProbeSpec {
    pub url: String,
    /// `header:<name>`, `json:<pointer>` or `body` (the default).
    pub expect: Option<String>,
    /// `image-tag` (the default), `promotion-id`, or a literal version.
    pub expected_version: Option<String>,
}

/// What the engine asks the prober to check once a rollout completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    pub promotion_id: String,
    pub deployment: ObjectRef,
    pub generation: i64,
    pub url: String,
    /// `header:<name>`, `json:<pointer>` or `body`.
    pub expect: String,
    /// The version traffic must show.
    pub expected: String,
    /// When the rollout completed (the probe's start).
    pub requested_at: Timestamp,
}

/// How a probe ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum ProbeVerdict {
    /// The required share of the last samples served the expected version.
    Passed,
    /// The deadline passed without that: old version, mixed versions, errors or time-outs.
    Failed { reason: String, message: String },
    /// Not probed: the URL is not allowed (outside the host allow-list, bad scheme).
    Refused { reason: String, message: String },
}

/// The outcome of a traffic probe (also a recording line kind, `probe_result`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub promotion_id: String,
    pub namespace: String,
    pub deployment: String,
    pub generation: i64,
    /// The URL probed, credentials stripped.
    pub url: String,
    pub expected: String,
    pub started: Timestamp,
    pub finished: Timestamp,
    pub samples: u32,
    pub matched: u32,
    /// Versions observed, with how many samples showed each (`error` for failed requests).
    #[serde(default)]
    pub versions: std::collections::BTreeMap<String, u32>,
    /// HTTP status of the failed samples, the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_status: Option<u16>,
    pub verdict: ProbeVerdict,
}

/// Annotations fluxtrace reads on any object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Marks {
    /// `fluxtrace.io/promotion-id`.
    pub promotion_id: Option<String>,
    /// `fluxtrace.io/traceparent`.
    pub traceparent: Option<String>,
}

/// A source-controller object (GitRepository, OCIRepository, HelmRepository, HelmChart, Bucket).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceObs {
    pub object: ObjectRef,
    pub uid: String,
    pub marks: Marks,
    /// `spec.url` (OCI: `oci://…`).
    pub url: Option<String>,
    /// `spec.ref.tag` for OCIRepository and GitRepository.
    pub ref_tag: Option<String>,
    /// GitRepository `spec.ref.branch`: the branch whose head it fetches.
    pub ref_branch: Option<String>,
    /// `status.artifact.revision`.
    pub revision: Option<String>,
    /// `status.artifact.lastUpdateTime`.
    pub artifact_updated: Option<Timestamp>,
    /// `status.artifact.metadata["org.opencontainers.image.revision"]`.
    pub origin_revision: Option<String>,
    /// `status.artifact.metadata["org.opencontainers.image.created"]` (OCI artifacts): when the
    /// artifact was built, the start of a promotion's lead time when its report has no
    /// `commit_time`.
    pub artifact_created: Option<Timestamp>,
    /// `status.artifact.metadata["fluxtrace.io/promotion-id"]`.
    pub artifact_promotion_id: Option<String>,
    /// `metadata.annotations["reconcile.fluxcd.io/requestedAt"]`.
    pub requested_at: Option<String>,
    /// `status.lastHandledReconcileAt`.
    pub last_handled: Option<String>,
    pub conditions: Vec<Condition>,
    /// `spec.suspend`: source-controller fetches nothing and writes no status.
    pub suspended: bool,
    /// A HelmChart's `spec.sourceRef` (boxed: most sources have none).
    pub source_ref: Option<Box<ObjectRef>>,
    /// A HelmChart with `reconcileStrategy: Revision`: a new chart artifact for every revision
    /// of its source. With the default (`ChartVersion`) only a new chart version builds one.
    pub by_revision: bool,
}

/// A Kustomization or HelmRelease.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconcilerObs {
    pub object: ObjectRef,
    pub uid: String,
    pub marks: Marks,
    /// Opt-in to the traffic probe for the workloads it applies.
    pub probe: Option<ProbeSpec>,
    pub source_ref: Option<ObjectRef>,
    /// Kustomization `spec.path`: with the name and namespaces, what tells one environment's
    /// reconciler from another's on the same source.
    pub path: Option<String>,
    /// Kustomization or HelmRelease `spec.targetNamespace`.
    pub target_namespace: Option<String>,
    /// `spec.timeout`.
    pub timeout: Option<SignedDuration>,
    /// `spec.retryInterval`, else `spec.interval`: when the controller tries a failed
    /// reconcile again.
    pub retry_interval: Option<SignedDuration>,
    /// `spec.interval`.
    pub interval: Option<SignedDuration>,
    /// `spec.suspend`: the controller reconciles nothing and writes no status.
    pub suspended: bool,
    pub last_attempted: Option<String>,
    pub last_applied: Option<String>,
    /// HelmRelease `status.lastAttemptedRevisionDigest`.
    pub last_attempted_digest: Option<String>,
    pub requested_at: Option<String>,
    pub last_handled: Option<String>,
    pub conditions: Vec<Condition>,
    pub history: Vec<HistoryEntry>,
    /// `metadata.generation`: bumped by every change of the spec (a HelmRelease's values or
    /// chart version changed in Git and applied by a Kustomization).
    pub generation: Option<i64>,
    /// The Kustomization that applies this object (its `kustomize.toolkit.fluxcd.io/name` and
    /// `namespace` labels). Boxed: most objects are not applied by one.
    pub applied_by: Option<Box<ObjectRef>>,
}

/// One `status.history` entry of a Kustomization.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    pub revision: String,
    pub first_reconciled: Option<Timestamp>,
    pub last_reconciled: Option<Timestamp>,
    pub last_duration: Option<SignedDuration>,
    pub last_status: String,
}

/// A Receiver (notification.toolkit.fluxcd.io): a webhook that requests reconciles.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceiverObs {
    pub object: ObjectRef,
    /// `spec.resources`: the objects it triggers (`name` may be `*`).
    pub resources: Vec<ObjectRef>,
    /// `status.webhookPath`.
    pub webhook_path: Option<String>,
}

impl ReceiverObs {
    /// Whether a call to this Receiver requests a reconcile of `object`.
    pub fn targets(&self, object: &ObjectRef) -> bool {
        self.resources.iter().any(|r| {
            r.kind == object.kind
                && r.namespace == object.namespace
                && (r.name == object.name || r.name == "*")
        })
    }
}

/// An apps/v1 Deployment or DaemonSet (`object.kind` tells which): a workload whose rollout
/// the rollout stage follows. A DaemonSet's counts are its scheduled Pods: `replicas` is
/// `status.desiredNumberScheduled`, `updated` `updatedNumberScheduled`, `ready`
/// `numberReady`, `available` `numberAvailable`.
#[derive(Clone, Debug, PartialEq, Hash)]
pub struct DeploymentObs {
    pub object: ObjectRef,
    pub uid: String,
    /// Marks on the workload, or else on its pod template.
    pub marks: Marks,
    pub generation: i64,
    pub observed_generation: i64,
    pub replicas: i64,
    pub updated: i64,
    pub ready: i64,
    pub available: i64,
    /// A DaemonSet's `status.numberUnavailable`: nodes that should run its Pod and have none
    /// available (0 for a Deployment).
    pub unavailable: i64,
    /// `spec.progressDeadlineSeconds`; a DaemonSet has none (zero here): the engine's rollout
    /// deadline applies.
    pub progress_deadline: SignedDuration,
    /// The Kustomization or HelmRelease that applied it (from its labels).
    pub manager: Option<ObjectRef>,
    /// Opt-in to the traffic probe.
    pub probe: Option<ProbeSpec>,
    /// Container images of the pod template, in order.
    pub images: Vec<String>,
    /// A fingerprint of the pod template's images, labels and annotations (tells a new
    /// template from a scale).
    pub template: u64,
    pub conditions: Vec<Condition>,
    /// `spec.paused`: the Deployment controller rolls nothing out until it is resumed.
    pub paused: bool,
}

impl DeploymentObs {
    /// The rollout of the current generation is complete. A DaemonSet's, as `kubectl rollout
    /// status` judges it: the controller observed the generation and every Pod it schedules is
    /// updated and available.
    pub fn rollout_complete(&self) -> bool {
        if self.object.kind == Kind::DaemonSet {
            return self.observed_generation >= self.generation
                && self.updated >= self.replicas
                && self.available >= self.replicas;
        }
        self.observed_generation >= self.generation
            && self.updated == self.replicas
            && self.ready == self.replicas
            && self.available == self.replicas
            && condition(&self.conditions, "Progressing")
                .is_some_and(|c| c.reason == "NewReplicaSetAvailable")
    }

    /// Where a DaemonSet's rollout stands, in `kubectl rollout status` words (a DaemonSet has
    /// no `Progressing` condition to say it); `None` for a Deployment.
    pub fn daemonset_progress(&self) -> Option<String> {
        if self.object.kind != Kind::DaemonSet {
            return None;
        }
        let name = &self.object.name;
        Some(if self.observed_generation < self.generation {
            "Waiting for daemon set spec update to be observed".to_string()
        } else if self.updated < self.replicas {
            format!(
                "Waiting for daemon set \"{name}\" rollout to finish: {} out of {} new pods have \
                 been updated",
                self.updated, self.replicas
            )
        } else if self.available < self.replicas {
            format!(
                "Waiting for daemon set \"{name}\" rollout to finish: {} of {} updated pods are \
                 available ({} unavailable)",
                self.available, self.replicas, self.unavailable
            )
        } else {
            format!("daemon set \"{name}\" successfully rolled out")
        })
    }
}

/// An apps/v1 ReplicaSet.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaSetObs {
    pub object: ObjectRef,
    pub uid: String,
    /// Name of the owning Deployment.
    pub deployment: Option<String>,
    pub created: Option<Timestamp>,
    /// `deployment.kubernetes.io/revision`.
    pub revision: Option<String>,
    /// Container images of its pod template, in order.
    pub images: Vec<String>,
    /// `status.readyReplicas`.
    pub ready: i64,
}

/// A core/v1 Pod, as far as it explains a rollout: its ReplicaSet and its containers'
/// trouble.
#[derive(Clone, Debug, PartialEq)]
pub struct PodObs {
    pub object: ObjectRef,
    /// Name of the owning ReplicaSet.
    pub replicaset: Option<String>,
    /// Containers (init containers first) whose status names a failure, in status order.
    pub problems: Vec<ContainerProblem>,
}

/// A container whose status names a failure: waiting (`CreateContainerConfigError`,
/// `ImagePullBackOff`, `CrashLoopBackOff`, …) or last terminated `OOMKilled`.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerProblem {
    pub container: String,
    /// The kubelet's reason (`OOMKilled`, `CreateContainerConfigError`, …).
    pub reason: String,
    pub message: String,
    /// Of a terminated container.
    pub exit_code: Option<i64>,
    /// When it terminated (`finishedAt`); unknown for a waiting one.
    pub at: Option<Timestamp>,
}

/// What the engine asks the adapter to list: the Pods of a rollout's new ReplicaSet, while the
/// rollout fails or is stuck. Targeted: one namespace, one label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodListRequest {
    pub deployment: ObjectRef,
    pub replicaset: String,
    /// `pod-template-hash=<hash>`: the label the Deployment controller puts on the
    /// ReplicaSet's Pods.
    pub selector: String,
}

/// An image reference as Flux image automation writes it (`status.latestRef`,
/// `status.observedPolicies`): the image name as the ImageRepository spells it, the tag, and
/// the manifest digest when the policy reflects digests.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub name: String,
    pub tag: String,
    pub digest: Option<String>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.tag)
    }
}

/// An ImagePolicy (image.toolkit.fluxcd.io).
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePolicyObs {
    pub object: ObjectRef,
    pub uid: String,
    /// `status.latestRef` (older APIs: `status.latestImage`); `None` before the first selection.
    pub latest: Option<ImageRef>,
    pub conditions: Vec<Condition>,
}

/// An ImageUpdateAutomation (image.toolkit.fluxcd.io).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageAutomationObs {
    pub object: ObjectRef,
    pub uid: String,
    /// `spec.sourceRef`: the GitRepository it commits to.
    pub source_ref: Option<ObjectRef>,
    /// `spec.git.push.branch`, else `spec.git.checkout.ref.branch`.
    pub push_branch: Option<String>,
    /// `status.lastPushCommit`: 40 hex, lower case.
    pub last_push_commit: Option<String>,
    /// `status.lastPushTime`.
    pub last_push_time: Option<Timestamp>,
    /// `status.lastAutomationRunTime`: the start of its latest run, pushed or not.
    pub last_run: Option<Timestamp>,
    /// `status.observedPolicies`: policy name → the reference it applied, by name.
    pub observed_policies: Vec<(String, ImageRef)>,
    pub conditions: Vec<Condition>,
}

/// A Flagger Canary (`flagger.app/v1beta1`), trimmed to what following its analysis needs.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryObs {
    pub object: ObjectRef,
    pub uid: String,
    /// `spec.targetRef`: the Deployment or DaemonSet whose pod-template changes start an
    /// analysis. Flagger rolls what passes out to `<name>-primary`, of the same kind.
    pub target: ObjectRef,
    /// `spec.analysis.interval` (Flagger's default 60s, at least 10s): Flagger looks at the
    /// Canary once per interval.
    pub interval: SignedDuration,
    /// `spec.analysis.threshold`: failed checks before a rollback (at least 1).
    pub threshold: i64,
    /// How many weight steps or iterations a run takes at least (`iterations`, `stepWeights`,
    /// or `maxWeight / stepWeight`).
    pub steps: i64,
    /// The canary weights a progressive-traffic run steps through, in order, as Flagger's
    /// `nextStepWeight` gives them (the last is at least the max weight); empty for runs that
    /// count iterations (A/B testing, Blue/Green, the `kubernetes` provider).
    pub schedule: Vec<i64>,
    /// `spec.progressDeadlineSeconds` (default 600): how long Flagger waits for a Deployment.
    pub progress_deadline: SignedDuration,
    /// `status.phase` (`Initialized`, `Progressing`, `Promoting`, `Succeeded`, `Failed`, …).
    pub phase: String,
    /// `status.canaryWeight`, `status.iterations`, `status.failedChecks`.
    pub weight: i64,
    pub iterations: i64,
    pub failed_checks: i64,
    /// `status.lastAppliedSpec` and `status.lastPromotedSpec`: hashes of the target's pod
    /// template (equal once a run succeeded, different after a rollback).
    pub last_applied_spec: Option<String>,
    pub last_promoted_spec: Option<String>,
    /// `status.lastTransitionTime`: the last status write.
    pub last_transition: Option<Timestamp>,
    /// The `Promoted` condition.
    pub conditions: Vec<Condition>,
}

impl CanaryObs {
    /// The workload Flagger rolls a passed analysis out to (of the target's kind).
    pub fn primary(&self) -> ObjectRef {
        ObjectRef::new(
            self.target.kind,
            self.target.namespace.clone(),
            format!("{}-primary", self.target.name),
        )
    }
}

/// A core/v1 Event.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeEventObs {
    /// `metadata.uid` (or namespace/name when absent): identifies repeats of the same Event.
    pub uid: String,
    /// Kind of the involved object as written (may be one fluxtrace does not follow).
    pub involved_kind: String,
    pub involved_namespace: String,
    pub involved_name: String,
    pub reason: String,
    pub message: String,
    pub warning: bool,
    /// `lastTimestamp`, `eventTime` or `firstTimestamp`.
    pub time: Option<Timestamp>,
    /// `firstTimestamp`: when a repeated Event (`count` > 1) first happened.
    pub first_time: Option<Timestamp>,
    pub count: i64,
    pub component: String,
    /// Group-prefixed `…/revision` annotation written by Flux controllers.
    pub revision: Option<String>,
    /// `event.toolkit.fluxcd.io/promotion-id` annotation.
    pub promotion_id: Option<String>,
}

/// A Flux event as notification-controller forwards it to a generic provider.
#[derive(Clone, Debug, PartialEq)]
pub struct FluxEventObs {
    pub object: ObjectRef,
    pub error: bool,
    pub time: Timestamp,
    pub reason: String,
    pub message: String,
    pub revision: Option<String>,
    pub promotion_id: Option<String>,
    pub controller: String,
}

/// The promotion report (POST /v1/promotions, `fluxtrace promote`, recording `promotion` line).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PromotionReport {
    pub id: String,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// When the promoted commit was made (its committer date), for the lead time of changes.
    /// Unknown is left out, never guessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<Timestamp>,
    /// The promotion this one continues (the same artifact, promoted from staging to prod):
    /// the root span links to that promotion's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ArtifactRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PipelineRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn a_borrowed_key_finds_what_its_object_ref_keys() {
        let deployment = ObjectRef::new(Kind::Deployment, "shop", "web");
        let daemonset = ObjectRef::new(Kind::DaemonSet, "shop", "web");
        let mut foldhashed: HashMap<ObjectRef, u8, foldhash::fast::RandomState> =
            HashMap::default();
        let mut std_hashed: HashMap<ObjectRef, u8> = HashMap::new();
        for (map_value, o) in [(1, &deployment), (2, &daemonset)] {
            foldhashed.insert(o.clone(), map_value);
            std_hashed.insert(o.clone(), map_value);
        }
        let key = ObjectKeyRef::new(Kind::DaemonSet, "shop", "web");
        assert_eq!(foldhashed.get(&key as &dyn ObjectKey), Some(&2));
        assert_eq!(std_hashed.get(&key as &dyn ObjectKey), Some(&2));
        // Names that concatenate alike are other objects.
        let shifted = ObjectKeyRef::new(Kind::Deployment, "shopw", "eb");
        assert_eq!(foldhashed.get(&shifted as &dyn ObjectKey), None);
        assert_eq!(std_hashed.get(&shifted as &dyn ObjectKey), None);
        assert_eq!(key.to_owned(), daemonset);
    }
}
