//! Kubernetes objects → [`DeliveryEvent`]s.
//!
//! [`KubeObject`] is a trimmed, all-optional view of every kind fluxtrace follows: the fields
//! correlation needs and nothing else, so unknown fields, unknown enum values and newer API
//! versions never fail a decode, and no whole object is kept. The live watcher deserializes
//! API-server responses into the same type that replay reads from a recording, and both call
//! [`to_event`], so a watched object and a recorded one become the same event.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ApiResource;

use jiff::SignedDuration;
use serde::Deserialize;

mod canary;
mod daemonset;
mod pod;

use super::raw::{conditions, cross_ref, duration, ChartField, Meta, PodTemplate, StringMap};
pub use super::raw::{ObjectError, RawKubeObject};

use crate::model::{
    sane_time, DeploymentObs, EventBody, HistoryEntry, Kind, KubeEventObs, Marks, ObjectRef,
    ProbeSpec, ReceiverObs, ReconcilerObs, ReplicaSetObs, SourceObs,
    PROBE_EXPECTED_VERSION_ANNOTATION, PROBE_EXPECT_ANNOTATION, PROBE_URL_ANNOTATION,
    PROMOTION_ANNOTATION, REQUESTED_AT_ANNOTATION, TRACEPARENT_ANNOTATION,
};

/// Labels kustomize-controller and helm-controller put on the objects they apply.
const KUSTOMIZE_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
const KUSTOMIZE_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
const HELM_NAME: &str = "helm.toolkit.fluxcd.io/name";
const HELM_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";
/// The Deployment controller's default `progressDeadlineSeconds`.
const DEFAULT_PROGRESS_DEADLINE_SECONDS: i64 = 600;

/// A followed object as watched or recorded: the trimmed fields correlation reads, plus the
/// Kubernetes `ObjectMeta` identity (name, namespace, uid, resourceVersion) that kube's watcher
/// tracks. Implements [`kube::Resource`] over an [`ApiResource`], so the live watcher lists and
/// watches this very type.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "RawKubeObject")]
pub struct KubeObject {
    meta: ObjectMeta,
    raw: RawKubeObject,
}

impl From<RawKubeObject> for KubeObject {
    fn from(raw: RawKubeObject) -> Self {
        let m = &raw.metadata;
        let meta = ObjectMeta {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            generation: m.generation,
            ..ObjectMeta::default()
        };
        KubeObject { meta, raw }
    }
}

impl KubeObject {
    /// `kind` as the object states it.
    pub fn kind(&self) -> &str {
        &self.raw.kind
    }

    /// Fills `apiVersion` and `kind` where the API server left them out (list items often
    /// carry no type), from what was listed.
    pub fn with_type(mut self, api_version: &str, kind: &str) -> Self {
        if self.raw.kind.is_empty() {
            self.raw.kind = kind.to_string();
        }
        if self.raw.api_version.is_empty() {
            self.raw.api_version = api_version.to_string();
        }
        self
    }
}

impl kube::Resource for KubeObject {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.kind)
    }

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.group)
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.version)
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.api_version)
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        Cow::Borrowed(&dt.plural)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

fn take_annotation(map: &mut Option<StringMap>, key: &str) -> Option<String> {
    map.as_mut()
        .and_then(|m| m.remove(key))
        .filter(|v| !v.is_empty())
}

fn marks(meta: &mut Meta) -> Marks {
    Marks {
        // An id no report could carry is no id (same check as the intake's).
        promotion_id: take_annotation(&mut meta.annotations, PROMOTION_ANNOTATION)
            .and_then(super::promotion::valid_id),
        traceparent: take_annotation(&mut meta.annotations, TRACEPARENT_ANNOTATION),
    }
}

fn probe(meta: &mut Meta) -> Option<ProbeSpec> {
    Some(ProbeSpec {
        url: take_annotation(&mut meta.annotations, PROBE_URL_ANNOTATION)?,
        expect: take_annotation(&mut meta.annotations, PROBE_EXPECT_ANNOTATION),
        expected_version: take_annotation(&mut meta.annotations, PROBE_EXPECTED_VERSION_ANNOTATION),
    })
}

/// Converts a watched or recorded object. `Ok(None)` for kinds fluxtrace does not follow
/// (they are ignored, not errors); `deleted` for a watch `DELETED`.
pub fn to_event(obj: KubeObject, deleted: bool) -> Result<Option<EventBody>, ObjectError> {
    raw_to_event(obj.raw, deleted)
}

/// [`to_event`] of an object decoded without the identity kube's watcher tracks (a recording's).
pub(crate) fn raw_to_event(
    mut obj: RawKubeObject,
    deleted: bool,
) -> Result<Option<EventBody>, ObjectError> {
    if obj.kind == "Event" && (obj.api_version == "v1" || obj.api_version.is_empty()) {
        // An Event expiring says nothing about delivery; fluxtrace's own trace-link Events are
        // its output, not delivery.
        return if deleted || is_own_event(&obj) {
            Ok(None)
        } else {
            kube_event(obj).map(Some)
        };
    }
    let Some(kind) = Kind::parse(&obj.kind) else {
        return Ok(None);
    };
    let missing = |field| ObjectError::MissingField {
        kind: obj.kind.clone(),
        field,
    };
    let name = obj
        .metadata
        .name
        .take()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| missing("metadata.name"))?;
    let namespace = obj.metadata.namespace.take().unwrap_or_default();
    let object = ObjectRef::new(kind, namespace, name);
    if deleted {
        return Ok(Some(EventBody::Deleted(object)));
    }
    let uid = obj
        .metadata
        .uid
        .take()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| object.to_string());
    let body = match kind {
        k if k.is_source() => EventBody::Source(source(obj, object, uid)),
        Kind::Kustomization | Kind::HelmRelease => {
            EventBody::Reconciler(reconciler(obj, object, uid))
        }
        Kind::Deployment => EventBody::Deployment(deployment(obj, object, uid)),
        Kind::DaemonSet => EventBody::Deployment(daemonset::daemon_set(obj, object, uid)),
        Kind::ReplicaSet => EventBody::ReplicaSet(replica_set(obj, object, uid)),
        Kind::Receiver => EventBody::Receiver(receiver(obj, object)),
        Kind::ImagePolicy => EventBody::ImagePolicy(super::image::policy(obj, object, uid)?),
        Kind::ImageUpdateAutomation => {
            EventBody::ImageAutomation(super::image::automation(obj, object, uid)?)
        }
        Kind::Canary => EventBody::Canary(canary::canary(obj, object, uid)?),
        // Listed for a failing rollout only (`pod`).
        Kind::Pod => EventBody::Pod(pod::pod(obj, object)),
        // ImageRepositories are read through the Events about them; their own state adds
        // nothing.
        _ => return Ok(None),
    };
    Ok(Some(body))
}

fn source(mut obj: RawKubeObject, object: ObjectRef, uid: String) -> SourceObs {
    let marks = marks(&mut obj.metadata);
    let requested_at = take_annotation(&mut obj.metadata.annotations, REQUESTED_AT_ANNOTATION);
    let conditions = conditions(obj.status.as_deref_mut());
    let spec = obj.spec.map(|s| *s).unwrap_or_default();
    let mut status = obj.status.map(|s| *s).unwrap_or_default();
    let mut artifact = status.artifact.take().unwrap_or_default();
    // A HelmChart builds from a source of its own.
    let (source_ref, by_revision) = match object.kind {
        Kind::HelmChart => (
            cross_ref(spec.source_ref, None, &object.namespace).map(Box::new),
            spec.reconcile_strategy.as_deref() == Some("Revision"),
        ),
        _ => (None, false),
    };
    SourceObs {
        source_ref,
        by_revision,
        object,
        uid,
        marks,
        url: spec.url,
        ref_tag: spec.ref_.as_ref().and_then(|r| r.tag.clone()),
        ref_branch: spec.ref_.and_then(|r| r.branch),
        revision: artifact.revision.take(),
        artifact_updated: artifact.last_update_time.map(sane_time),
        origin_revision: take_annotation(
            &mut artifact.metadata,
            "org.opencontainers.image.revision",
        ),
        // Unparseable is unknown: the lead time is never guessed.
        artifact_created: take_annotation(
            &mut artifact.metadata,
            "org.opencontainers.image.created",
        )
        .and_then(|t| t.parse().ok())
        .map(sane_time),
        artifact_promotion_id: take_annotation(&mut artifact.metadata, PROMOTION_ANNOTATION)
            .and_then(super::promotion::valid_id),
        requested_at,
        last_handled: status.last_handled_reconcile_at,
        conditions,
        suspended: spec.suspend.unwrap_or(false),
    }
}

fn reconciler(mut obj: RawKubeObject, object: ObjectRef, uid: String) -> ReconcilerObs {
    let marks = marks(&mut obj.metadata);
    let probe = probe(&mut obj.metadata);
    let requested_at = take_annotation(&mut obj.metadata.annotations, REQUESTED_AT_ANNOTATION);
    let conditions = conditions(obj.status.as_deref_mut());
    let applied_by = manager(obj.metadata.labels.as_ref())
        .filter(|m| m.kind == Kind::Kustomization)
        .map(Box::new);
    let spec = obj.spec.map(|s| *s).unwrap_or_default();
    let status = obj.status.map(|s| *s).unwrap_or_default();
    let source_ref = match object.kind {
        Kind::HelmRelease => {
            cross_ref(spec.chart_ref, None, &object.namespace).or_else(|| match spec.chart {
                Some(ChartField::Template(t)) => {
                    cross_ref(t.spec.and_then(|s| s.source_ref), None, &object.namespace)
                }
                _ => None,
            })
        }
        _ => cross_ref(spec.source_ref, None, &object.namespace),
    };
    let history = status
        .history
        .unwrap_or_default()
        .into_iter()
        .filter_map(|mut h| {
            Some(HistoryEntry {
                revision: take_annotation(&mut h.metadata, "revision")?,
                first_reconciled: h.first_reconciled.map(sane_time),
                last_reconciled: h.last_reconciled.map(sane_time),
                last_duration: duration(h.last_reconciled_duration.as_deref()),
                last_status: h.last_reconciled_status.unwrap_or_default(),
            })
        })
        .collect();
    ReconcilerObs {
        uid,
        marks,
        probe,
        source_ref,
        path: spec.path,
        target_namespace: spec.target_namespace,
        timeout: duration(spec.timeout.as_deref()),
        retry_interval: duration(spec.retry_interval.as_deref())
            .or_else(|| duration(spec.interval.as_deref())),
        interval: duration(spec.interval.as_deref()),
        suspended: spec.suspend.unwrap_or(false),
        last_attempted: status.last_attempted_revision,
        last_applied: status.last_applied_revision,
        last_attempted_digest: status.last_attempted_revision_digest,
        requested_at,
        last_handled: status.last_handled_reconcile_at,
        conditions,
        history,
        generation: obj.metadata.generation,
        applied_by,
        object,
    }
}

fn receiver(obj: RawKubeObject, object: ObjectRef) -> ReceiverObs {
    let spec = obj.spec.map(|s| *s).unwrap_or_default();
    let resources = spec
        .resources
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| cross_ref(Some(r), None, &object.namespace))
        .collect();
    ReceiverObs {
        resources,
        webhook_path: obj.status.and_then(|s| s.webhook_path),
        object,
    }
}

fn manager(labels: Option<&StringMap>) -> Option<ObjectRef> {
    let labels = labels?;
    if let (Some(n), Some(ns)) = (labels.get(KUSTOMIZE_NAME), labels.get(KUSTOMIZE_NAMESPACE)) {
        return Some(ObjectRef::new(Kind::Kustomization, ns.clone(), n.clone()));
    }
    if let (Some(n), Some(ns)) = (labels.get(HELM_NAME), labels.get(HELM_NAMESPACE)) {
        return Some(ObjectRef::new(Kind::HelmRelease, ns.clone(), n.clone()));
    }
    None
}

/// What a Deployment and a DaemonSet observation share: identity, marks (the workload's, else
/// its pod template's), probe opt-in, manager, conditions and pod template; no counts yet.
fn workload(obj: &mut RawKubeObject, object: ObjectRef, uid: String) -> DeploymentObs {
    let mut marks = marks(&mut obj.metadata);
    let probe = probe(&mut obj.metadata);
    let conditions = conditions(obj.status.as_deref_mut());
    let mut template = obj
        .spec
        .as_mut()
        .and_then(|s| s.template.take())
        .unwrap_or_default();
    let fingerprint = template_fingerprint(&template);
    if let Some(meta) = template.metadata.as_mut() {
        let pod = self::marks(meta);
        marks.promotion_id = marks.promotion_id.or(pod.promotion_id);
        marks.traceparent = marks.traceparent.or(pod.traceparent);
    }
    DeploymentObs {
        uid,
        marks,
        generation: obj.metadata.generation.unwrap_or(0),
        observed_generation: obj
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0),
        replicas: 0,
        updated: 0,
        ready: 0,
        available: 0,
        unavailable: 0,
        progress_deadline: SignedDuration::ZERO,
        manager: manager(obj.metadata.labels.as_ref()),
        probe,
        images: images_of(template),
        template: fingerprint,
        conditions,
        paused: false,
        object,
    }
}

fn deployment(mut obj: RawKubeObject, object: ObjectRef, uid: String) -> DeploymentObs {
    let base = workload(&mut obj, object, uid);
    let spec = obj.spec.map(|s| *s).unwrap_or_default();
    let status = obj.status.map(|s| *s).unwrap_or_default();
    DeploymentObs {
        replicas: spec.replicas.unwrap_or(1),
        updated: status.updated_replicas.unwrap_or(0),
        ready: status.ready_replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        progress_deadline: SignedDuration::from_secs(
            spec.progress_deadline_seconds
                .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS)
                .clamp(0, 366 * 24 * 3600),
        ),
        paused: spec.paused.unwrap_or(false),
        ..base
    }
}

/// The container images of a pod template, in order.
fn images_of(t: PodTemplate) -> Vec<String> {
    t.spec
        .map(|s| s.containers.into_iter().filter_map(|c| c.image).collect())
        .unwrap_or_default()
}

/// What tells a new pod template from a scale without keeping the template: its images, labels
/// and annotations (where tools put config checksums and promotion ids). Order-independent.
fn template_fingerprint(t: &PodTemplate) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for map in t
        .metadata
        .iter()
        .flat_map(|m| [m.labels.as_ref(), m.annotations.as_ref()])
    {
        let mut pairs: Vec<(&String, &String)> = map.into_iter().flatten().collect();
        pairs.sort();
        pairs.hash(&mut h);
        0xffu8.hash(&mut h);
    }
    for c in t.spec.iter().flat_map(|s| s.containers.iter()) {
        c.image.hash(&mut h);
    }
    h.finish()
}

fn replica_set(mut obj: RawKubeObject, object: ObjectRef, uid: String) -> ReplicaSetObs {
    let deployment = obj
        .metadata
        .owner_references
        .take()
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.kind == "Deployment" && o.controller != Some(false))
        .map(|o| o.name);
    let images = obj
        .spec
        .and_then(|s| s.template)
        .map(images_of)
        .unwrap_or_default();
    ReplicaSetObs {
        uid,
        deployment,
        created: obj.metadata.creation_timestamp.map(sane_time),
        revision: take_annotation(
            &mut obj.metadata.annotations,
            "deployment.kubernetes.io/revision",
        ),
        images,
        ready: obj
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
            .max(0),
        object,
    }
}

/// A `DeliveryTrace` Event written by fluxtrace (`crate::announce`).
fn is_own_event(obj: &RawKubeObject) -> bool {
    let component = obj
        .reporting_component
        .as_deref()
        .filter(|c| !c.is_empty())
        .or(obj.source.as_ref().and_then(|s| s.component.as_deref()));
    obj.reason.as_deref() == Some(crate::announce::REASON)
        && component == Some(crate::announce::COMPONENT)
}

fn kube_event(mut obj: RawKubeObject) -> Result<EventBody, ObjectError> {
    let missing = |field| ObjectError::MissingField {
        kind: "Event".into(),
        field,
    };
    let involved = obj
        .involved_object
        .take()
        .ok_or_else(|| missing("involvedObject"))?;
    let involved_kind = involved
        .kind
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("involvedObject.kind"))?;
    let involved_name = involved
        .name
        .filter(|k| !k.is_empty())
        .ok_or_else(|| missing("involvedObject.name"))?;
    let involved_namespace = involved
        .namespace
        .or(obj.metadata.namespace.clone())
        .unwrap_or_default();
    let uid = obj.metadata.uid.take().unwrap_or_else(|| {
        format!(
            "{}/{}",
            obj.metadata.namespace.as_deref().unwrap_or_default(),
            obj.metadata.name.as_deref().unwrap_or_default()
        )
    });
    // Flux controllers write their event metadata as group-prefixed annotations.
    let mut revision = None;
    let mut promotion_id = None;
    for (k, v) in obj.metadata.annotations.take().unwrap_or_default() {
        if k == crate::model::FLUX_EVENT_PROMOTION_KEY {
            promotion_id = super::promotion::valid_id(v);
        } else if k.ends_with(".toolkit.fluxcd.io/revision") {
            revision = Some(v);
        }
    }
    Ok(EventBody::KubeEvent(KubeEventObs {
        uid,
        involved_kind,
        involved_namespace,
        involved_name,
        reason: obj.reason.unwrap_or_default(),
        message: obj.message.unwrap_or_default(),
        warning: obj.type_.as_deref() == Some("Warning"),
        time: obj
            .last_timestamp
            .or(obj.event_time)
            .or(obj.first_timestamp)
            .or(obj.metadata.creation_timestamp)
            .map(sane_time),
        first_time: obj.first_timestamp.map(sane_time),
        count: obj.count.unwrap_or(1),
        component: obj
            .reporting_component
            .filter(|c| !c.is_empty())
            .or(obj.source.and_then(|s| s.component))
            .unwrap_or_default(),
        revision,
        promotion_id,
    }))
}
