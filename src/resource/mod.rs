//! `Promotion` (`fluxtrace.io/v1alpha1`): a promotion as a Kubernetes object, so that a report
//! survives restarts of the agent and can come from anyone allowed to create one.
//!
//! ```text
//!   intake (POST /v1/promotions) ──create──▶ Promotion ◀── kubectl apply / Flux applies one
//!                                               │ watch (resource::sync)
//!                                               ▼
//!                         spec ──to_report──▶ PromotionReport ──▶ engine
//!                         status ◀──status_of── Story (the verdict)
//! ```
//!
//! This module is pure: the types (the CRD is generated from them, [`crd_yaml`]), the spec's
//! validation into a [`PromotionReport`] with errors that name the field, the object name an id
//! gets, and the status a finished [`Story`] becomes. [`sync`] does the IO.

pub mod index;
pub mod sync;

use jiff::Timestamp;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{ArtifactRef, PipelineRef, PromotionReport};
use crate::sources::promotion::{self, ReportError};
use crate::story::{Outcome, Story};

/// The API group and version.
pub const GROUP: &str = "fluxtrace.io";
pub const VERSION: &str = "v1alpha1";
pub const PLURAL: &str = "promotions";

/// What the agent does on `promotions`: watch them, create them for reports the intake takes,
/// and delete finished ones past their retention. The RBAC in `deploy/` grants exactly these.
pub const PROMOTION_VERBS: &[&str] = &["get", "list", "watch", "create", "delete"];
/// What the agent does on `promotions/status`: write the phase and verdict.
pub const PROMOTION_STATUS_VERBS: &[&str] = &["get", "patch"];

/// What CI (or anyone with RBAC) says was promoted: the promotion report, as a spec.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "fluxtrace.io",
    version = "v1alpha1",
    kind = "Promotion",
    plural = "promotions",
    shortname = "promo",
    namespaced,
    status = "PromotionStatus",
    printcolumn = r#"{"name":"Environment","type":"string","jsonPath":".spec.environment"}"#,
    printcolumn = r#"{"name":"App","type":"string","jsonPath":".spec.app"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Divergence","type":"string","jsonPath":".status.divergence.stage"}"#,
    printcolumn = r#"{"name":"Trace","type":"string","jsonPath":".status.traceId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PromotionSpec {
    /// The promotion id; the object's name when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The environment promoted to (`staging`, `prod`). Required.
    #[serde(default)]
    pub environment: String,
    /// The Git commit (or `branch@sha1:…`) promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The OCI artifact promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<ArtifactRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Who promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The CI pipeline run that promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineSpec>,
    /// W3C traceparent of the CI span the trace continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// When the promotion started (RFC 3339); the object's creation time when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// When the promoted commit was made (RFC 3339), for the lead time of changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<String>,
    /// The promotion this one continues (e.g. staging's, for prod): the root span links to
    /// its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_from: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Where the promotion stands, written by the agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<DivergenceStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_link: Option<String>,
    /// When the verdict was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Whether every span of the verdict reached the collector; absent while unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans_exported: Option<bool>,
    /// One line per stage, in trace order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The promotion's phase: in progress, or its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    InProgress,
    Succeeded,
    Failed,
    TimedOut,
    Superseded,
    NoChange,
}

impl Phase {
    pub fn of(outcome: Outcome) -> Phase {
        match outcome {
            Outcome::Succeeded => Phase::Succeeded,
            Outcome::Failed => Phase::Failed,
            Outcome::TimedOut => Phase::TimedOut,
            Outcome::Superseded => Phase::Superseded,
            Outcome::NoChange => Phase::NoChange,
            Outcome::InProgress => Phase::InProgress,
        }
    }

    /// A verdict: nothing more happens to the promotion.
    pub fn is_final(self) -> bool {
        self != Phase::InProgress
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DivergenceStatus {
    /// `promotion`, `source`, `reconcile`, `apply`, `rollout` or `traffic`.
    pub stage: String,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StageStatus {
    pub name: String,
    pub result: String,
    /// `Kind/namespace/name` of the object the stage is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub summary: String,
}

/// A Kubernetes-style condition (`Ready`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD as YAML, as shipped in `deploy/crds/` (a test keeps them equal).
pub fn crd_yaml() -> String {
    let crd = Promotion::crd();
    let body = serde_yaml_ng::to_string(&crd).unwrap_or_default();
    format!(
        "# Generated from src/resource/mod.rs (the Promotion types). Regenerate with:\n\
         # UPDATE_CRD=1 cargo test --test crd\n---\n{body}"
    )
}

/// Why a Promotion's spec cannot be a report. The message names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("spec does not decode: {path}: {message}")]
    Decode { path: String, message: String },
    #[error("spec.{field} is not an RFC 3339 time: {reason}")]
    Time { field: &'static str, reason: String },
    #[error("spec.{0}")]
    Report(String),
}

/// Decodes a Promotion's `spec` (any JSON) and validates it as a report. `name` is the object's
/// name (the id when the spec has none); `created` its creation time (the promotion's start
/// when the spec has no `time`).
pub fn to_report(
    spec: &serde_json::Value,
    name: &str,
    created: Option<Timestamp>,
) -> Result<PromotionReport, SpecError> {
    let spec: PromotionSpec =
        serde_path_to_error::deserialize(spec).map_err(|e| SpecError::Decode {
            path: match e.path().to_string().as_str() {
                "." => "spec".to_string(),
                p => format!("spec.{p}"),
            },
            message: e.inner().to_string(),
        })?;
    let time = |field: &'static str, v: &Option<String>| -> Result<Option<Timestamp>, SpecError> {
        v.as_deref()
            .map(|t| {
                t.parse::<Timestamp>().map_err(|e| SpecError::Time {
                    field,
                    reason: e.to_string(),
                })
            })
            .transpose()
    };
    let report = PromotionReport {
        id: spec.id.clone().unwrap_or_else(|| name.to_string()),
        environment: spec.environment.clone(),
        revision: spec.revision.clone(),
        artifact: spec.artifact.clone(),
        app: spec.app.clone(),
        actor: spec.actor.clone(),
        pipeline: spec.pipeline.clone().map(|p| PipelineRef {
            name: p.name,
            run_id: p.run_id,
            url: p.url,
        }),
        traceparent: spec.traceparent.clone(),
        time: time("time", &spec.time)?.or(created),
        commit_time: time("commitTime", &spec.commit_time)?,
        promoted_from: spec.promoted_from.clone(),
    };
    promotion::validate(report).map_err(|e| SpecError::Report(spec_message(&e)))
}

/// A report error told in the spec's terms ("spec.environment is required").
fn spec_message(e: &ReportError) -> String {
    let camel = |f: &str| match f {
        "commit_time" => "commitTime".to_string(),
        "promoted_from" => "promotedFrom".to_string(),
        "run_id" => "pipeline.runId".to_string(),
        other => other.to_string(),
    };
    match e {
        ReportError::Missing(f) => format!("{} is required", camel(f)),
        ReportError::Field { field, reason } => format!("{} is invalid: {reason}", camel(field)),
        ReportError::Invalid { path, message } => format!("{path}: {message}"),
    }
}

/// The spec a report becomes when the intake writes it; its `time` is always set, so that the
/// promotion starts at the same instant after a restart.
pub fn spec_of(report: &PromotionReport, received: Timestamp) -> PromotionSpec {
    PromotionSpec {
        id: Some(report.id.clone()),
        environment: report.environment.clone(),
        revision: report.revision.clone(),
        artifact: report.artifact.clone(),
        app: report.app.clone(),
        actor: report.actor.clone(),
        pipeline: report.pipeline.clone().map(|p| PipelineSpec {
            name: p.name,
            run_id: p.run_id,
            url: p.url,
        }),
        traceparent: report.traceparent.clone(),
        time: Some(report.time.unwrap_or(received).to_string()),
        commit_time: report.commit_time.map(|t| t.to_string()),
        promoted_from: report.promoted_from.clone(),
    }
}

/// The object name for a promotion id: the id itself when it is a valid name (lowercase
/// letters, digits, `-` and `.`, at most 253), else a readable prefix of it and a hash.
pub fn object_name(id: &str) -> String {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if valid(id) {
        return id.to_string();
    }
    let prefix: String = id
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .take(40)
        .collect();
    let prefix = prefix.trim_matches('-');
    let hash = Sha256::digest(id.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    if prefix.is_empty() {
        format!("p-{hex}")
    } else {
        format!("{prefix}-{hex}")
    }
}

/// The status of a finished (or open) promotion, from its story.
pub fn status_of(story: &Story, generation: Option<i64>, now: Timestamp) -> PromotionStatus {
    let phase = Phase::of(story.outcome);
    let (ready, reason) = match phase {
        Phase::Succeeded => ("True", "Succeeded"),
        Phase::NoChange => ("True", "NoChange"),
        Phase::InProgress => ("Unknown", "InProgress"),
        Phase::Failed => ("False", "Failed"),
        Phase::TimedOut => ("False", "TimedOut"),
        Phase::Superseded => ("False", "Superseded"),
    };
    let message = match &story.divergence {
        Some(d) => format!(
            "diverged at {}: {}: {}",
            d.stage.as_str(),
            d.reason,
            d.message
        ),
        None => format!("{:?}", phase),
    };
    PromotionStatus {
        phase: Some(phase),
        divergence: story.divergence.as_ref().map(|d| DivergenceStatus {
            stage: d.stage.as_str().to_string(),
            reason: d.reason.clone(),
            message: d.message.clone(),
        }),
        trace_id: Some(story.trace_id.to_string()),
        trace_link: story.trace_link.clone(),
        finished_at: phase.is_final().then(|| story.end.to_string()),
        spans_exported: None,
        stages: story
            .stages
            .iter()
            .map(|s| StageStatus {
                name: s.stage.as_str().to_string(),
                result: s.outcome.to_string(),
                object: s.object.clone(),
                summary: s.summary.clone(),
            })
            .collect(),
        observed_generation: generation,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason: reason.into(),
            message: short(&crate::story::one_line(&message)),
            last_transition_time: now.to_string(),
            observed_generation: generation,
        }],
    }
}

/// A condition message of at most 1,024 characters.
fn short(s: &str) -> String {
    s.chars().take(1024).collect()
}

/// The status of a Promotion whose spec is not a report: `Ready=False`, reason `InvalidSpec`,
/// the message naming the field.
pub fn invalid_status(
    error: &SpecError,
    generation: Option<i64>,
    now: Timestamp,
) -> PromotionStatus {
    PromotionStatus {
        observed_generation: generation,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "InvalidSpec".into(),
            message: short(&error.to_string()),
            last_transition_time: now.to_string(),
            observed_generation: generation,
        }],
        ..PromotionStatus::default()
    }
}

#[cfg(test)]
mod tests;
