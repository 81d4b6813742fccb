//! The wire view of every followed Kubernetes object: the trimmed, all-optional fields
//! fluxtrace reads ([`RawKubeObject`]), as the API server sends them and a recording keeps them,
//! the conditions and cross references decoded from it, and the decoding's error.
//!
//! A leaf of the object decoding: [`super::object`] and the image automation decoding (`image`)
//! both read it, and neither depends on the other's internals through it. Pure: no IO.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;

use crate::model::{sane_duration, sane_time, CondStatus, Condition, Kind, ObjectRef};

/// Labels, annotations and artifact metadata as decoded: foldhash, several times faster than
/// the standard hasher on these short keys (randomly seeded all the same).
pub type StringMap = HashMap<String, String, foldhash::fast::RandomState>;

/// Why an object could not be turned into an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    #[error("{kind} object has no {field}")]
    MissingField { kind: String, field: &'static str },
    #[error("{kind} object has an invalid {field}: {reason}")]
    InvalidField {
        kind: String,
        field: &'static str,
        reason: &'static str,
    },
}

impl ObjectError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ObjectError::MissingField { .. } => "missing_field",
            ObjectError::InvalidField { .. } => "invalid_field",
        }
    }
}

/// The fields of any followed object that fluxtrace reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawKubeObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: Meta,
    pub spec: Option<Box<Spec>>,
    pub status: Option<Box<Status>>,
    // core/v1 Event keeps its fields at the top level.
    pub involved_object: Option<ObjectReference>,
    pub reason: Option<String>,
    pub message: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub first_timestamp: Option<Timestamp>,
    pub last_timestamp: Option<Timestamp>,
    pub event_time: Option<Timestamp>,
    pub count: Option<i64>,
    pub source: Option<EventSource>,
    pub reporting_component: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Meta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub creation_timestamp: Option<Timestamp>,
    pub labels: Option<StringMap>,
    pub annotations: Option<StringMap>,
    pub owner_references: Option<Vec<OwnerReference>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OwnerReference {
    pub kind: String,
    pub name: String,
    pub controller: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectReference {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventSource {
    pub component: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Spec {
    // sources
    pub url: Option<String>,
    #[serde(rename = "ref")]
    pub ref_: Option<SourceRefSpec>,
    // Kustomization, HelmChart
    pub source_ref: Option<CrossRef>,
    /// HelmChart: `ChartVersion` (the default) or `Revision`.
    pub reconcile_strategy: Option<String>,
    // HelmRelease
    pub chart_ref: Option<CrossRef>,
    pub chart: Option<ChartField>,
    pub timeout: Option<String>,
    pub suspend: Option<bool>,
    pub interval: Option<String>,
    pub retry_interval: Option<String>,
    // Kustomization
    pub path: Option<String>,
    pub target_namespace: Option<String>,
    // Receiver
    pub resources: Option<Vec<CrossRef>>,
    // Deployment, ReplicaSet
    pub replicas: Option<i64>,
    pub progress_deadline_seconds: Option<i64>,
    pub paused: Option<bool>,
    pub template: Option<PodTemplate>,
    // ImagePolicy
    pub image_repository_ref: Option<CrossRef>,
    // ImageUpdateAutomation (also `source_ref`)
    pub git: Option<GitSpec>,
    // Flagger Canary
    pub target_ref: Option<CrossRef>,
    pub analysis: Option<AnalysisSpec>,
    /// The deprecated alias of `analysis`.
    pub canary_analysis: Option<AnalysisSpec>,
}

/// ImageUpdateAutomation `spec.git`: the branches it checks out and pushes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GitSpec {
    pub checkout: Option<GitCheckout>,
    pub push: Option<GitPush>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GitCheckout {
    #[serde(rename = "ref")]
    pub ref_: Option<GitBranch>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GitBranch {
    pub branch: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GitPush {
    pub branch: Option<String>,
}

/// An image reference in ImagePolicy and ImageUpdateAutomation status (JSON key `name`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawImageRef {
    pub name: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SourceRefSpec {
    pub tag: Option<String>,
    pub branch: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CrossRef {
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// `spec.chart`: a chart name on a HelmChart, a chart template on a HelmRelease.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ChartField {
    Name(String),
    Template(ChartTemplate),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChartTemplate {
    pub spec: Option<ChartTemplateSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChartTemplateSpec {
    pub source_ref: Option<CrossRef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodTemplate {
    pub metadata: Option<Meta>,
    pub spec: Option<PodSpec>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub image: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    pub observed_generation: Option<i64>,
    pub conditions: Option<Vec<RawCondition>>,
    pub artifact: Option<Artifact>,
    pub last_handled_reconcile_at: Option<String>,
    pub webhook_path: Option<String>,
    pub last_applied_revision: Option<String>,
    pub last_attempted_revision: Option<String>,
    pub last_attempted_revision_digest: Option<String>,
    pub history: Option<Vec<RawHistory>>,
    pub replicas: Option<i64>,
    pub updated_replicas: Option<i64>,
    pub ready_replicas: Option<i64>,
    pub available_replicas: Option<i64>,
    // DaemonSet
    pub desired_number_scheduled: Option<i64>,
    pub updated_number_scheduled: Option<i64>,
    pub number_ready: Option<i64>,
    pub number_available: Option<i64>,
    pub number_unavailable: Option<i64>,
    // ImagePolicy
    pub latest_ref: Option<RawImageRef>,
    /// ImagePolicy before image-reflector-controller v0.35: `name:tag`.
    pub latest_image: Option<String>,
    // ImageUpdateAutomation
    pub last_push_commit: Option<String>,
    pub last_push_time: Option<Timestamp>,
    pub last_automation_run_time: Option<Timestamp>,
    pub observed_policies: Option<std::collections::BTreeMap<String, RawImageRef>>,
    // Flagger Canary (its numbers are `type: number` in the CRD)
    pub phase: Option<String>,
    pub canary_weight: Option<f64>,
    pub failed_checks: Option<f64>,
    pub iterations: Option<f64>,
    pub last_applied_spec: Option<String>,
    pub last_promoted_spec: Option<String>,
    pub last_transition_time: Option<Timestamp>,
    // Pod
    pub container_statuses: Option<Vec<RawContainerStatus>>,
    pub init_container_statuses: Option<Vec<RawContainerStatus>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition_time: Option<Timestamp>,
    pub last_update_time: Option<Timestamp>,
    pub observed_generation: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Artifact {
    pub revision: Option<String>,
    pub last_update_time: Option<Timestamp>,
    pub metadata: Option<StringMap>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawHistory {
    pub metadata: Option<StringMap>,
    pub first_reconciled: Option<Timestamp>,
    pub last_reconciled: Option<Timestamp>,
    pub last_reconciled_duration: Option<String>,
    pub last_reconciled_status: Option<String>,
}

/// `spec.analysis` (or the deprecated `spec.canaryAnalysis`): the fields that bound a run.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AnalysisSpec {
    pub interval: Option<String>,
    pub threshold: Option<f64>,
    pub iterations: Option<f64>,
    pub max_weight: Option<f64>,
    pub step_weight: Option<f64>,
    pub step_weights: Option<Vec<f64>>,
}

/// `status.containerStatuses[]` and `status.initContainerStatuses[]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawContainerStatus {
    pub name: String,
    pub state: Option<RawContainerState>,
    pub last_state: Option<RawContainerState>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawContainerState {
    pub waiting: Option<RawStateDetail>,
    pub terminated: Option<RawStateDetail>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RawStateDetail {
    pub reason: Option<String>,
    pub message: Option<String>,
    pub exit_code: Option<i64>,
    pub finished_at: Option<Timestamp>,
}

/// The condition types correlation reads; others are not kept.
const CONDITIONS_READ: [&str; 7] = [
    "Ready",
    "Stalled",
    "Reconciling",
    "Healthy",
    "Released",
    "Progressing",
    // Flagger Canary
    "Promoted",
];

pub fn conditions(status: Option<&mut Status>) -> Vec<Condition> {
    let Some(raw) = status.and_then(|s| s.conditions.take()) else {
        return Vec::new();
    };
    raw.into_iter()
        .filter(|c| CONDITIONS_READ.contains(&c.type_.as_str()))
        .map(|c| Condition {
            status: match c.status.as_str() {
                "True" => CondStatus::True,
                "False" => CondStatus::False,
                _ => CondStatus::Unknown,
            },
            type_: c.type_,
            reason: c.reason.unwrap_or_default(),
            message: c.message.unwrap_or_default(),
            last_transition: c.last_transition_time.map(sane_time),
            last_update: c.last_update_time.map(sane_time),
            observed_generation: c.observed_generation,
        })
        .collect()
}

pub fn duration(s: Option<&str>) -> Option<SignedDuration> {
    s.and_then(|s| s.trim().parse::<SignedDuration>().ok())
        .map(sane_duration)
}

pub fn cross_ref(
    r: Option<CrossRef>,
    default_kind: Option<Kind>,
    default_ns: &str,
) -> Option<ObjectRef> {
    let r = r?;
    let kind = r.kind.as_deref().and_then(Kind::parse).or(default_kind)?;
    Some(ObjectRef::new(
        kind,
        r.namespace.unwrap_or_else(|| default_ns.to_string()),
        r.name?,
    ))
}
