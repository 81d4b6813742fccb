//! From a finished promotion to what users see: span records (attributes, status, links) and
//! the triage story.
//!
//! Called by `verdict` (and by `Engine::progress` for a story in progress). Decides nothing:
//! every outcome and divergence arrives here already decided.

use jiff::Timestamp;

use super::promotion::{Promotion, Traceability};
use super::registry::Chain;
use super::span::{StageResult, StageSpan};
use super::stage::canary::{self, is_canary_span};
use super::stage::traffic::strip_credentials;
use crate::model::Kind;
use crate::revision;
use crate::story::{Divergence, Outcome, StageStory, Story};
use crate::trace::{
    attr, Attributes, SpanEventRecord, SpanKind, SpanLinkRecord, SpanRecord, SpanStatus, Stage,
};

const SERVICE_FLUXTRACE: &str = "fluxtrace";
const SERVICE_NOTIFICATION: &str = "notification-controller";
const SERVICE_SOURCE: &str = "source-controller";
const SERVICE_KUSTOMIZE: &str = "kustomize-controller";
const SERVICE_HELM: &str = "helm-controller";
const SERVICE_KUBE: &str = "kube-controller-manager";

/// The Flux controller that reconciles objects of `kind`.
fn controller_of(kind: Option<Kind>) -> &'static str {
    match kind {
        Some(Kind::HelmRelease) => SERVICE_HELM,
        Some(k) if k.is_source() => SERVICE_SOURCE,
        _ => SERVICE_KUSTOMIZE,
    }
}

fn service_of(s: &StageSpan) -> &'static str {
    match s.stage {
        Stage::Promotion => SERVICE_FLUXTRACE,
        Stage::Image => "image-automation-controller",
        // A Receiver's webhook is notification-controller's; a request made otherwise
        // (`flux reconcile`, an annotation) is seen only as the controller handles it.
        Stage::Trigger if s.attrs.get(attr::FLUX_RECEIVER_NAME).is_some() => SERVICE_NOTIFICATION,
        Stage::Trigger => controller_of(s.object.as_ref().map(|o| o.kind)),
        Stage::Source => SERVICE_SOURCE,
        Stage::Reconcile | Stage::Apply => controller_of(s.object.as_ref().map(|o| o.kind)),
        Stage::Rollout => SERVICE_KUBE,
        Stage::Traffic if is_canary_span(s) => canary::SERVICE_FLAGGER,
        Stage::Traffic => "fluxtrace-probe",
    }
}

/// What every span record of a promotion says about the promotion: owned apart from it, so
/// that the verdict can move each span's attributes and events into its record.
pub(super) struct SpanOwner<'a> {
    pub id: &'a str,
    pub environment: Option<&'a str>,
    pub traceability: Traceability,
    pub trace_id: crate::trace::TraceId,
}

impl<'a> SpanOwner<'a> {
    pub fn of(p: &'a Promotion) -> Self {
        SpanOwner {
            id: &p.id,
            environment: p.report.as_ref().map(|r| r.environment.as_str()),
            traceability: p.traceability,
            trace_id: p.trace_id,
        }
    }
}

fn common_attrs(a: &mut Attributes, p: &SpanOwner<'_>, stage: Stage, cluster: &str) {
    a.set(attr::DELIVERY_PROMOTION_ID, p.id.to_string());
    a.set(attr::DELIVERY_STAGE, stage.as_str());
    a.set(attr::DELIVERY_PLANE, stage.plane());
    a.set(attr::K8S_CLUSTER_NAME, cluster.to_string());
    if let Some(env) = p.environment {
        a.set(attr::DEPLOYMENT_ENVIRONMENT_NAME, env.to_string());
    }
    // Reported and annotated promotions are the norm: only the others say how they were found.
    if matches!(
        p.traceability,
        Traceability::Missing | Traceability::Unreported | Traceability::DriftCorrection
    ) {
        a.set(attr::DELIVERY_TRACEABILITY, p.traceability.as_str());
    }
}

/// The record of a finished stage span. Its attributes and events move into the record: the
/// span is not read again (its promotion's story was built first).
pub(super) fn stage_record(p: &SpanOwner<'_>, s: &mut StageSpan, cluster: &str) -> SpanRecord {
    let mut attributes = Attributes(Vec::with_capacity(s.attrs.0.len() + 12));
    common_attrs(&mut attributes, p, s.stage, cluster);
    // Both read the span's own attributes.
    let service = service_of(s);
    let vcs = vcs_attrs(&s.attrs);
    for (k, v) in std::mem::take(&mut s.attrs.0) {
        attributes.set(k, v);
    }
    // CI/CD semantic conventions: each stage is a task of the promotion's pipeline run.
    let name = if is_canary_span(s) {
        canary::CANARY_SPAN_NAME
    } else {
        s.stage.span_name()
    };
    attributes.set(attr::CICD_PIPELINE_TASK_NAME, name);
    attributes.set(
        attr::CICD_PIPELINE_TASK_TYPE,
        if s.stage == Stage::Traffic {
            "test"
        } else {
            "deploy"
        },
    );
    let result = match s.result {
        StageResult::Open => None,
        StageResult::Succeeded => Some("success"),
        StageResult::NoChange => Some("skip"),
        StageResult::Failed(_) => Some("failure"),
        StageResult::TimedOut(_) => Some("timeout"),
        StageResult::Superseded => Some("cancellation"),
    };
    attributes.set_opt(attr::CICD_PIPELINE_TASK_RUN_RESULT, result);
    for (k, v) in vcs.0 {
        attributes.set(k, v);
    }
    let status = match &s.result {
        StageResult::Failed(f) | StageResult::TimedOut(f) => {
            attributes.set(attr::ERROR_TYPE, f.reason.clone());
            SpanStatus::Error {
                description: format!("{}: {}", f.reason, f.message),
            }
        }
        StageResult::Succeeded | StageResult::NoChange => SpanStatus::Ok,
        StageResult::Superseded | StageResult::Open => SpanStatus::Unset,
    };
    SpanRecord {
        trace_id: p.trace_id,
        span_id: s.span_id,
        parent_span_id: Some(s.parent),
        service,
        name,
        kind: SpanKind::Internal,
        start: s.start,
        end: s.end.unwrap_or(s.deadline).max(s.start),
        status,
        attributes,
        events: std::mem::take(&mut s.events),
        links: Vec::new(),
    }
}

pub(super) fn root_record(
    p: &Promotion,
    start: Timestamp,
    end: Timestamp,
    outcome: Outcome,
    divergence: Option<&Divergence>,
    chain: Option<&Chain>,
    cluster: &str,
) -> SpanRecord {
    // Room for what a reported, chained, failed promotion's root says.
    let mut a = Attributes(Vec::with_capacity(32));
    common_attrs(&mut a, &SpanOwner::of(p), Stage::Promotion, cluster);
    a.set(attr::DELIVERY_TRACEABILITY, p.traceability.as_str());
    // CI/CD and deployment semantic conventions: the promotion is a pipeline run that deploys.
    a.set_opt(attr::CICD_PIPELINE_RESULT, outcome.pipeline_result());
    a.set(attr::DEPLOYMENT_ID, p.id.clone());
    // The first reconciler to start (by name among those that started together: the order
    // they joined in is the order a watch, or a re-list, happened to deliver them), else the
    // first rollout.
    let target = p
        .reconciles
        .iter()
        .filter_map(|r| Some((r.span.start, r.span.object.as_ref()?)))
        .min_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)))
        .map(|(_, o)| o)
        .or_else(|| p.rollouts.iter().find_map(|s| s.object.as_ref()))
        .map(|o| o.name.clone());
    a.set_opt(
        attr::DEPLOYMENT_NAME,
        p.report.as_ref().and_then(|r| r.app.clone()).or(target),
    );
    a.set_opt(attr::DEPLOYMENT_STATUS, outcome.deployment_status());
    if let Some(r) = &p.report {
        a.set_opt(attr::DELIVERY_APP, r.app.clone());
        a.set_opt(attr::DELIVERY_PROMOTION_ACTOR, r.actor.clone());
        if let Some(pl) = &r.pipeline {
            a.set_opt(attr::CICD_PIPELINE_NAME, pl.name.clone());
            a.set_opt(attr::CICD_PIPELINE_RUN_ID, pl.run_id.clone());
            a.set_opt(
                attr::CICD_PIPELINE_RUN_URL_FULL,
                pl.url.as_deref().map(strip_credentials),
            );
        }
        if let Some(art) = &r.artifact {
            a.set_opt(attr::DELIVERY_ARTIFACT_REPOSITORY, art.repository.clone());
            a.set_opt(attr::DELIVERY_ARTIFACT_TAG, art.tag.clone());
        }
    }
    a.set_opt(attr::VCS_REF_HEAD_REVISION, p.commit.clone());
    // The Git repository and ref the promotion's source fetched, when one did.
    if let Some(source) = p
        .sources
        .iter()
        .find(|s| s.attrs.get(attr::VCS_REPOSITORY_URL_FULL).is_some())
    {
        let vcs = vcs_attrs(&source.attrs);
        for key in [attr::VCS_REF_HEAD_NAME, attr::VCS_REPOSITORY_NAME] {
            a.set_opt(key, vcs.get(key).cloned());
        }
        a.set_opt(
            attr::VCS_REPOSITORY_URL_FULL,
            source.attrs.get(attr::VCS_REPOSITORY_URL_FULL).cloned(),
        );
    }
    a.set_opt(attr::OCI_MANIFEST_DIGEST, p.digest.clone());
    // Automated promotions: the image the policy selected and the policy.
    if let Some(img) = &p.image {
        for key in [
            attr::CONTAINER_IMAGE_NAME,
            attr::CONTAINER_IMAGE_TAGS,
            attr::FLUX_IMAGE_POLICY,
        ] {
            a.set_opt(key, img.attrs.get(key).cloned());
        }
    }
    let status = match divergence {
        Some(d) => {
            a.set(attr::DELIVERY_DIVERGENCE_STAGE, d.stage.as_str());
            a.set(attr::DELIVERY_DIVERGENCE_MESSAGE, d.message.clone());
            a.set_opt(attr::DELIVERY_DIVERGENCE_CAUSE, d.cause.clone());
            a.set(attr::ERROR_TYPE, d.reason.clone());
            let cause = d
                .cause
                .as_ref()
                .map_or_else(String::new, |c| format!(" (cause: {c})"));
            SpanStatus::Error {
                description: format!(
                    "diverged at {}: {}: {}{cause}",
                    d.stage.as_str(),
                    d.reason,
                    d.message
                ),
            }
        }
        None if outcome == Outcome::Superseded => SpanStatus::Unset,
        None => SpanStatus::Ok,
    };
    a.set_opt(attr::DELIVERY_REVISION_DELIVERED_AS, p.delivered_as.clone());
    let mut links = Vec::new();
    if let Some(s) = &p.superseded_by {
        a.set(attr::DELIVERY_SUPERSEDED_BY, s.id.clone());
        let mut la = Attributes::default();
        la.set(attr::DELIVERY_PROMOTION_ID, s.id.clone());
        links.push(SpanLinkRecord {
            trace_id: s.trace_id,
            span_id: s.root,
            attributes: la,
        });
    }
    // A chain: the promotion this one continues (staging's, for prod). Named by the report:
    // the trace that promotion really has when this agent saw it, else its deterministic trace
    // (the root span as this cluster would name it), marked as derived. Else the latest earlier
    // promotion of the same commit or digest to another environment of this cluster.
    let chained = chain.map(|c| match c {
        Chain::Named { id, seen: Some(e) } => {
            (id.clone(), e.trace_id, e.root, "promoted_from", false)
        }
        Chain::Named { id, seen: None } => (
            id.clone(),
            crate::trace::trace_id_for(id),
            crate::trace::span_id_for(id, Stage::Promotion, cluster, "", ""),
            "promoted_from",
            true,
        ),
        Chain::SameRevision(e) => (e.id.clone(), e.trace_id, e.root, "same_revision", false),
    });
    if let Some((from, trace_id, span_id, why, derived)) = chained {
        a.set(attr::DELIVERY_PROMOTED_FROM, from.clone());
        // Jaeger shows span links without their attributes: what the link means, on the root.
        a.set(attr::DELIVERY_PROMOTED_FROM_LINK, why);
        a.set(attr::DELIVERY_PROMOTED_FROM_TRACE_ID, trace_id.to_string());
        let mut la = Attributes::default();
        la.set(attr::DELIVERY_PROMOTION_ID, from);
        la.set(attr::DELIVERY_LINK, why);
        if derived {
            la.set(attr::DELIVERY_LINK_DERIVED, true);
        }
        links.push(SpanLinkRecord {
            trace_id,
            span_id,
            attributes: la,
        });
    }
    SpanRecord {
        trace_id: p.trace_id,
        span_id: p.root,
        parent_span_id: p.ci_parent,
        service: SERVICE_FLUXTRACE,
        name: Stage::Promotion.span_name(),
        kind: SpanKind::Server,
        start,
        end,
        status,
        attributes: a,
        events: Vec::new(),
        links,
    }
}

/// `vcs.ref.head.name` and `vcs.repository.name` implied by a Git source span's revision and URL.
fn vcs_attrs(source: &Attributes) -> Attributes {
    let mut a = Attributes::default();
    let Some(url) = source.get_str(attr::VCS_REPOSITORY_URL_FULL) else {
        return a;
    };
    a.set_opt(
        attr::VCS_REF_HEAD_NAME,
        source
            .get_str(attr::FLUX_REVISION)
            .and_then(revision::ref_name)
            .map(str::to_string),
    );
    a.set_opt(
        attr::VCS_REPOSITORY_NAME,
        revision::repository_name(url).map(str::to_string),
    );
    a
}

/// What a story line of a span event reads of its attributes, read in one pass.
struct EventFields<'a> {
    object: &'a str,
    message: Option<&'a str>,
    warning: bool,
}

impl<'a> EventFields<'a> {
    fn of(e: &'a SpanEventRecord) -> Self {
        let a = &e.attributes;
        EventFields {
            object: a.get_str(attr::EVENT_OBJECT).unwrap_or_default(),
            message: a.get_str(attr::EVENT_MESSAGE),
            warning: a.get_str(attr::EVENT_TYPE) == Some("Warning"),
        }
    }
}

/// `<time> <object> <reason>: <message>`.
fn story_line(e: &SpanEventRecord, f: &EventFields<'_>) -> String {
    use std::fmt::Write;
    let message = f.message.unwrap_or_default();
    // Sized up front (a timestamp takes at most 32 characters): `format!` would grow it
    // several times.
    let mut line = String::with_capacity(32 + 4 + f.object.len() + e.name.len() + message.len());
    // Writing to a String cannot fail.
    let _ = write!(line, "{}", e.time);
    for part in [" ", f.object, " ", &e.name, ": ", message] {
        line.push_str(part);
    }
    line
}

pub(super) fn build_story(
    p: &Promotion,
    spans: &[&StageSpan],
    start: Timestamp,
    end: Timestamp,
    outcome: Outcome,
    divergence: Option<Divergence>,
    cluster: &str,
) -> Story {
    let report = p.report.as_ref();
    let promoted = match report {
        Some(r) => {
            let art = r.artifact.as_ref().map(|a| {
                let repo = a.repository.as_deref().unwrap_or("artifact");
                match &a.tag {
                    Some(t) => format!("{repo}:{t}"),
                    None => repo.to_string(),
                }
            });
            let rev = r
                .revision
                .clone()
                .or(r.artifact.as_ref().and_then(|a| a.digest.clone()));
            match (art, rev) {
                (Some(a), Some(v)) if !v.starts_with("sha256:") || a.contains(':') => {
                    format!("{a} ({v})")
                }
                (Some(a), _) => a,
                (None, Some(v)) => format!("revision {v}"),
                (None, None) => "unknown revision".into(),
            }
        }
        None if p.image.is_some() => {
            super::stage::image::promoted(p).unwrap_or_else(|| "an image update".into())
        }
        None => match (&p.commit, &p.digest) {
            // What Flux delivered unannounced: the revision as its source names it.
            _ if p.traceability == Traceability::Unreported && !p.sources.is_empty() => {
                let s = &p.sources[0];
                let rev = s.key.revision.as_deref().unwrap_or("unknown revision");
                match &s.object {
                    Some(o) => format!("{rev} from {o}"),
                    None => rev.to_string(),
                }
            }
            (Some(c), _) => format!("revision {c}"),
            (None, Some(d)) => format!("artifact {d}"),
            (None, None) => p
                .rollouts
                .first()
                .and_then(|s| s.object.as_ref())
                .map_or_else(|| "unknown change".into(), |o| format!("a change to {o}")),
        },
    };
    let promoted = match &p.delivered_as {
        Some(rev) => format!("{promoted}, delivered as {rev}"),
        None => promoted,
    };
    let stages = spans
        .iter()
        .map(|s| {
            let failure = s.result.failure().map(|f| f.message.as_str());
            // Warnings first (but the one the failure repeats), then the others.
            let mut events: Vec<String> = Vec::with_capacity(s.events.len());
            for e in &s.events {
                let f = EventFields::of(e);
                if f.warning && f.message != failure {
                    events.push(story_line(e, &f));
                }
            }
            for e in &s.events {
                let f = EventFields::of(e);
                if !f.warning {
                    events.push(story_line(e, &f));
                }
            }
            events.dedup();
            StageStory {
                stage: s.stage,
                span_id: s.span_id,
                object: s.object.as_ref().map(ToString::to_string),
                outcome: s.result.outcome(),
                start: s.start,
                end: s.end.unwrap_or(s.deadline),
                summary: s.summary.clone(),
                events,
            }
        })
        .collect();
    Story {
        promotion_id: p.id.clone(),
        trace_id: p.trace_id,
        root_span_id: p.root,
        traceability: p.traceability,
        environment: report.map(|r| r.environment.clone()),
        app: report.and_then(|r| r.app.clone()),
        actor: report.and_then(|r| r.actor.clone()),
        pipeline: report.and_then(|r| r.pipeline.clone()),
        commit_time: report.and_then(|r| r.commit_time).or(p.artifact_created),
        promoted,
        resolved_digest: p.digest.clone(),
        cluster: cluster.to_string(),
        start,
        end,
        outcome,
        divergence,
        stages,
        superseded_by: p.superseded_by.as_ref().map(|s| s.id.clone()),
        trace_link: None,
    }
}
