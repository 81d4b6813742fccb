//! Kubernetes Events with the trace link, where on-call already looks (`kubectl describe`,
//! `flux events`, the UIs built on them).
//!
//! ```text
//!  engine task ──try_send(Story) (drop+count when full)──▶ announce task ──POST──▶ kube API
//! ```
//!
//! When a promotion reaches its verdict, one core/v1 Event (reason `DeliveryTrace`) is written
//! on the Kustomization or HelmRelease that applied it and on each Deployment it rolled out:
//! type `Warning` when the promotion diverged (or failed, or nothing explains the change:
//! traceability missing), `Normal` otherwise; the message names the outcome, the divergence
//! point and reason, and the trace link (or the trace id when no link template is set).
//!
//! - Written once per promotion and object: the Event's name is derived,
//!   `<object name>.<first 16 hex of SHA-256(promotion id, NUL, "Kind/namespace/name")>`, and a
//!   `409 AlreadyExists` (an agent that restarted and reached the same verdict again) counts as
//!   written. Nothing is ever patched or duplicated.
//! - The involved object carries its uid when a GET of its metadata finds it (`kubectl describe`
//!   selects Events by uid); without it the Event is still written (`flux events` and
//!   `kubectl get events` select by kind and name).
//! - Never blocks delivery or the engine: the queue is bounded and the engine only offers to it;
//!   every API error is logged and counted (`fluxtrace_k8s_events_failed_total`), never fatal,
//!   never retried.
//!
//! [`plan`] (what to write) is pure and unit-tested; [`spawn`] runs the writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use kube::Client;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::cluster::WATCHED;
use crate::metrics::{ErrorType, Metrics, ResultLabel};
use crate::story::{one_line, Outcome, Story, Traceability};

/// The Event reason.
pub const REASON: &str = "DeliveryTrace";
/// `source.component` and `reportingComponent` of the Events fluxtrace writes.
pub const COMPONENT: &str = "fluxtrace";
/// Finished promotions waiting for their Events; beyond this they are dropped and counted.
pub const QUEUE: usize = 256;
/// Annotations on each Event, for tools that look for a promotion's Events.
pub const PROMOTION_ID_ANNOTATION: &str = "fluxtrace.io/promotion-id";
pub const TRACE_ID_ANNOTATION: &str = "fluxtrace.io/trace-id";

/// Time allowed for each API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The divergence message is cut to this many characters (the link is never cut).
const MAX_DIVERGENCE_MESSAGE: usize = 512;
/// Kubernetes object names (DNS subdomains) are at most this long.
const MAX_NAME: usize = 253;

/// The kinds an Event is written on: the promotion's reconciler and its workloads.
const ANNOUNCED_KINDS: [&str; 4] = ["Kustomization", "HelmRelease", "Deployment", "DaemonSet"];

/// One Event to write, planned from a finished story.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// Event name (deterministic, see [`event_name`]).
    pub name: String,
    /// The Event's namespace: the involved object's.
    pub namespace: String,
    /// The involved object's kind and name.
    pub kind: String,
    pub object_name: String,
    pub warning: bool,
    pub message: String,
    /// When the promotion ended (`firstTimestamp`, `lastTimestamp`).
    pub time: Timestamp,
    pub promotion_id: String,
    pub trace_id: String,
}

/// The Events a finished story gets: one per Kustomization, HelmRelease or Deployment among its
/// stages, in stage order, each object once.
pub fn plan(story: &Story) -> Vec<Announcement> {
    let warning = story.divergence.is_some()
        || matches!(story.outcome, Outcome::Failed | Outcome::TimedOut)
        || story.traceability == Traceability::Missing;
    let message = message(story);
    let mut out: Vec<Announcement> = Vec::new();
    for stage in &story.stages {
        let Some(object) = stage.object.as_deref() else {
            continue;
        };
        let Some((kind, namespace, name)) = split_object(object) else {
            continue;
        };
        if !ANNOUNCED_KINDS.contains(&kind) || namespace.is_empty() {
            continue;
        }
        let event = event_name(&story.promotion_id, object, name);
        if out
            .iter()
            .any(|a| a.name == event && a.namespace == namespace)
        {
            continue;
        }
        out.push(Announcement {
            name: event,
            namespace: namespace.to_string(),
            kind: kind.to_string(),
            object_name: name.to_string(),
            warning,
            message: message.clone(),
            time: story.end,
            promotion_id: story.promotion_id.clone(),
            trace_id: story.trace_id.to_string(),
        });
    }
    out
}

/// `Kind/namespace/name` into its parts.
fn split_object(object: &str) -> Option<(&str, &str, &str)> {
    let mut parts = object.splitn(3, '/');
    let kind = parts.next()?;
    let namespace = parts.next()?;
    let name = parts.next()?;
    (!kind.is_empty() && !name.is_empty()).then_some((kind, namespace, name))
}

/// `<object name>.<first 16 hex of SHA-256(promotion id, NUL, object)>`, where `object` is
/// `Kind/namespace/name`; the object name is shortened if the whole would exceed 253 characters.
pub fn event_name(promotion_id: &str, object: &str, object_name: &str) -> String {
    let digest = Sha256::new()
        .chain_update(promotion_id.as_bytes())
        .chain_update([0u8])
        .chain_update(object.as_bytes())
        .finalize();
    let hash = hex::encode(&digest[..8]);
    let mut end = object_name.len().min(MAX_NAME - hash.len() - 1);
    while !object_name.is_char_boundary(end) {
        end -= 1;
    }
    let base = object_name[..end].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{base}.{hash}")
}

/// The Event message: outcome, divergence point and reason, the trace link or id.
pub fn message(story: &Story) -> String {
    let mut m = if story.traceability == Traceability::Missing {
        format!(
            "Untraced change {} {}: no promotion report or promotion-id annotation explains it",
            story.promotion_id,
            story.outcome.as_str()
        )
    } else {
        let env = story
            .environment
            .as_deref()
            .map(|e| format!(" to {e}"))
            .unwrap_or_default();
        format!(
            "Promotion {}{env} {}",
            story.promotion_id,
            story.outcome.as_str()
        )
    };
    if let Some(d) = &story.divergence {
        m.push_str(&format!(
            " — diverged at {}: {}",
            d.stage.as_str(),
            d.reason
        ));
        let text = one_line(&d.message);
        if !text.is_empty() {
            m.push_str(": ");
            m.push_str(&cut(&text, MAX_DIVERGENCE_MESSAGE));
        }
        if let Some(c) = &d.cause {
            end_sentence(&mut m);
            m.push_str(&format!(" Cause: {c}"));
        }
    }
    end_sentence(&mut m);
    match &story.trace_link {
        Some(link) => m.push_str(&format!(" Trace: {link}")),
        None => m.push_str(&format!(" Trace ID: {}", story.trace_id)),
    }
    m
}

fn end_sentence(m: &mut String) {
    if !m.ends_with(['.', '!', '?']) {
        m.push('.');
    }
}

fn cut(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Why an Event could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("the API server refused the Event: {0}")]
    Api(#[source] kube::Error),
    #[error("the API server did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
}

impl AnnounceError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            AnnounceError::Api(kube::Error::Api(s)) if s.is_forbidden() => "forbidden",
            AnnounceError::Api(kube::Error::Api(s)) if s.is_invalid() => "invalid",
            AnnounceError::Api(kube::Error::Api(s)) if s.is_not_found() => "not_found",
            AnnounceError::Api(kube::Error::Api(_)) => "api",
            AnnounceError::Api(_) => "transport",
            AnnounceError::Timeout => "timeout",
        }
    }
}

/// What writing one Event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Created,
    /// Written before (by this agent or one before a restart): nothing to do.
    AlreadyExists,
}

impl Written {
    pub fn as_str(self) -> &'static str {
        match self {
            Written::Created => "created",
            Written::AlreadyExists => "already_exists",
        }
    }
}

/// Starts the writer on the current runtime. Offer finished stories to the returned sender
/// (`try_send`; `AgentConfig::announce`); the task ends once every sender is dropped and the
/// queue is empty.
pub fn spawn(client: Client, metrics: Arc<Metrics>) -> (mpsc::Sender<Story>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(announce_loop(Writer::new(client), rx, metrics));
    (tx, task)
}

async fn announce_loop(mut writer: Writer, mut stories: mpsc::Receiver<Story>, m: Arc<Metrics>) {
    while let Some(story) = stories.recv().await {
        for a in plan(&story) {
            match writer.write(&a).await {
                Ok(w) => {
                    m.k8s_events
                        .get_or_create(&ResultLabel { result: w.as_str() })
                        .inc();
                    debug!(
                        message = "Kubernetes Event written.",
                        result = w.as_str(),
                        namespace = %a.namespace,
                        name = %a.name,
                        promotion_id = %a.promotion_id
                    );
                }
                Err(e) => {
                    m.k8s_events_failed
                        .get_or_create(&ErrorType {
                            error_type: e.metric_label(),
                        })
                        .inc();
                    warn!(
                        message = "Failed to write a Kubernetes Event.",
                        error = %e,
                        error_type = e.metric_label(),
                        namespace = %a.namespace,
                        name = %a.name,
                        kind = %a.kind,
                        object = %a.object_name,
                        promotion_id = %a.promotion_id
                    );
                }
            }
        }
    }
    info!(message = "Kubernetes Event writer stopped.");
}

/// Writes Events; remembers which API version each involved kind is served at.
struct Writer {
    client: Client,
    served: HashMap<&'static str, ApiResource>,
}

impl Writer {
    fn new(client: Client) -> Writer {
        Writer {
            client,
            served: HashMap::new(),
        }
    }

    async fn write(&mut self, a: &Announcement) -> Result<Written, AnnounceError> {
        let involved = self.involved(a).await;
        let event = to_event(a, involved);
        let api = Api::<Event>::namespaced(self.client.clone(), &a.namespace);
        let created =
            tokio::time::timeout(REQUEST_TIMEOUT, api.create(&PostParams::default(), &event))
                .await
                .map_err(|_| AnnounceError::Timeout)?;
        match created {
            Ok(_) => Ok(Written::Created),
            Err(kube::Error::Api(s)) if s.is_already_exists() || s.code == 409 => {
                Ok(Written::AlreadyExists)
            }
            Err(e) => Err(AnnounceError::Api(e)),
        }
    }

    /// The involved object, with its uid and served `apiVersion` when they can be found.
    async fn involved(&mut self, a: &Announcement) -> ObjectReference {
        let mut r = ObjectReference {
            kind: Some(a.kind.clone()),
            name: Some(a.object_name.clone()),
            namespace: Some(a.namespace.clone()),
            ..ObjectReference::default()
        };
        let Some(w) = WATCHED.iter().find(|w| w.kind == a.kind) else {
            return r;
        };
        let version = w.versions.first().copied().unwrap_or("v1");
        r.api_version = Some(if w.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", w.group)
        });
        let ar = match self.served.get(w.kind) {
            Some(ar) => ar.clone(),
            None => {
                let found =
                    tokio::time::timeout(REQUEST_TIMEOUT, crate::cluster::resolve(&self.client, w))
                        .await;
                match found {
                    Ok(Ok(Some(ar))) => {
                        self.served.insert(w.kind, ar.clone());
                        ar
                    }
                    other => {
                        debug!(message = "Kind not resolved; Event without uid.", kind = w.kind, result = ?other.map(|r| r.map(|o| o.is_some())));
                        return r;
                    }
                }
            }
        };
        r.api_version = Some(ar.api_version.clone());
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &a.namespace, &ar);
        match tokio::time::timeout(REQUEST_TIMEOUT, api.get_metadata_opt(&a.object_name)).await {
            Ok(Ok(Some(meta))) => r.uid = meta.metadata.uid,
            Ok(Ok(None)) => {
                debug!(message = "Object gone; Event without uid.", kind = %a.kind, name = %a.object_name)
            }
            Ok(Err(e)) => {
                debug!(message = "Object lookup failed; Event without uid.", kind = %a.kind, name = %a.object_name, error = %e)
            }
            Err(_) => {
                debug!(message = "Object lookup timed out; Event without uid.", kind = %a.kind, name = %a.object_name)
            }
        }
        r
    }
}

/// The core/v1 Event for an announcement.
pub fn to_event(a: &Announcement, involved: ObjectReference) -> Event {
    let time = Time(a.time);
    Event {
        metadata: ObjectMeta {
            name: Some(a.name.clone()),
            namespace: Some(a.namespace.clone()),
            annotations: Some(
                [
                    (PROMOTION_ID_ANNOTATION.to_string(), a.promotion_id.clone()),
                    (TRACE_ID_ANNOTATION.to_string(), a.trace_id.clone()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(REASON.to_string()),
        message: Some(a.message.clone()),
        type_: Some(if a.warning { "Warning" } else { "Normal" }.to_string()),
        source: Some(EventSource {
            component: Some(COMPONENT.to_string()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.to_string()),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time),
        count: Some(1),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::story::{Divergence, StageStory};
    use crate::trace::{SpanId, Stage, TraceId};

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn stage(stage: Stage, object: Option<&str>) -> StageStory {
        StageStory {
            stage,
            span_id: SpanId([1; 8]),
            object: object.map(str::to_string),
            outcome: "succeeded",
            start: at("2026-11-26T10:00:00Z"),
            end: at("2026-11-26T10:01:00Z"),
            summary: String::new(),
            events: Vec::new(),
        }
    }

    fn story(id: &str) -> Story {
        Story {
            promotion_id: id.into(),
            trace_id: TraceId([0xab; 16]),
            root_span_id: SpanId([2; 8]),
            traceability: Traceability::Reported,
            environment: Some("prod".into()),
            app: None,
            actor: None,
            pipeline: None,
            commit_time: None,
            promoted: "x".into(),
            resolved_digest: None,
            cluster: "c".into(),
            start: at("2026-11-26T10:00:00Z"),
            end: at("2026-11-26T10:02:11Z"),
            outcome: Outcome::Succeeded,
            divergence: None,
            stages: vec![
                stage(
                    Stage::Source,
                    Some("OCIRepository/flux-system/shop-manifests"),
                ),
                stage(Stage::Reconcile, Some("Kustomization/flux-system/shop")),
                stage(Stage::Apply, Some("Kustomization/flux-system/shop")),
                stage(Stage::Rollout, Some("Deployment/shop/checkout")),
                stage(Stage::Rollout, Some("Deployment/shop/cart")),
                stage(Stage::Traffic, None),
            ],
            superseded_by: None,
            trace_link: Some("https://jaeger.example/trace/abab".into()),
        }
    }

    fn hash16(promotion: &str, object: &str) -> String {
        let mut h = Sha256::new();
        h.update(format!("{promotion}\0{object}"));
        hex::encode(&h.finalize()[..8])
    }

    #[test]
    fn one_event_on_the_reconciler_and_on_each_deployment() {
        let plan = plan(&story("rel-1"));
        let got: Vec<(&str, &str, &str, &str)> = plan
            .iter()
            .map(|a| {
                (
                    a.namespace.as_str(),
                    a.kind.as_str(),
                    a.object_name.as_str(),
                    a.name.as_str(),
                )
            })
            .collect();
        let ks = format!("shop.{}", hash16("rel-1", "Kustomization/flux-system/shop"));
        let checkout = format!("checkout.{}", hash16("rel-1", "Deployment/shop/checkout"));
        let cart = format!("cart.{}", hash16("rel-1", "Deployment/shop/cart"));
        assert_eq!(
            got,
            vec![
                ("flux-system", "Kustomization", "shop", ks.as_str()),
                ("shop", "Deployment", "checkout", checkout.as_str()),
                ("shop", "Deployment", "cart", cart.as_str()),
            ]
        );
        for a in &plan {
            assert!(!a.warning);
            assert_eq!(a.time, at("2026-11-26T10:02:11Z"));
            assert_eq!(
                a.message,
                "Promotion rel-1 to prod succeeded. Trace: https://jaeger.example/trace/abab"
            );
        }
    }

    #[test]
    fn names_are_deterministic_and_differ_by_promotion_and_object() {
        let a = plan(&story("rel-1"));
        assert_eq!(a, plan(&story("rel-1")));
        let b = plan(&story("rel-2"));
        for (x, y) in a.iter().zip(&b) {
            assert_ne!(x.name, y.name);
            assert_eq!(x.name.len(), y.name.len());
        }
        assert_ne!(
            event_name("p", "Deployment/a/x", "x"),
            event_name("p", "Deployment/b/x", "x")
        );
    }

    #[test]
    fn long_names_stay_valid() {
        let long = "a".repeat(250);
        let n = event_name("p", &format!("Deployment/ns/{long}"), &long);
        assert_eq!(n.len(), 253);
        let dashed = format!("{}-{}", "a".repeat(235), "b".repeat(20));
        let n = event_name("p", &format!("Deployment/ns/{dashed}"), &dashed);
        assert!(n.len() <= 253);
        assert!(!n.contains("-."), "{n}");
    }

    #[test]
    fn a_divergence_makes_a_warning_naming_the_point_reason_and_cause() {
        let mut s = story("rel-2042");
        s.outcome = Outcome::Failed;
        s.trace_link = None;
        s.divergence = Some(Divergence {
            stage: Stage::Rollout,
            reason: "ProgressDeadlineExceeded".into(),
            message: "ReplicaSet \"ledger-fbq5825668\" has timed out progressing.".into(),
            cause: Some("ImagePullBackOff".into()),
            evidence: vec![],
            span_id: SpanId([3; 8]),
        });
        let plan = plan(&s);
        assert_eq!(plan.len(), 3);
        assert!(plan.iter().all(|a| a.warning));
        assert_eq!(
            plan[0].message,
            "Promotion rel-2042 to prod failed — diverged at rollout: ProgressDeadlineExceeded: \
             ReplicaSet \"ledger-fbq5825668\" has timed out progressing. Cause: ImagePullBackOff. \
             Trace ID: abababababababababababababababab"
        );
    }

    #[test]
    fn long_divergence_messages_are_cut_but_the_link_is_kept() {
        let mut s = story("rel-3");
        s.outcome = Outcome::Failed;
        s.divergence = Some(Divergence {
            stage: Stage::Reconcile,
            reason: "BuildFailed".into(),
            message: format!("first line\n{}", "é".repeat(5000)),
            cause: None,
            evidence: vec![],
            span_id: SpanId([3; 8]),
        });
        let m = message(&s);
        assert!(m.contains("BuildFailed: first line; éé"), "{m}");
        assert!(m.chars().count() < 700, "{}", m.chars().count());
        assert!(
            m.ends_with("…. Trace: https://jaeger.example/trace/abab"),
            "{m}"
        );
    }

    #[test]
    fn an_untraced_rollout_is_a_warning_on_its_deployment() {
        let mut s = story("untraced/ops/cache/4");
        s.traceability = Traceability::Missing;
        s.environment = None;
        s.stages = vec![stage(Stage::Rollout, Some("Deployment/ops/cache"))];
        let plan = plan(&s);
        assert_eq!(plan.len(), 1);
        assert!(plan[0].warning);
        assert_eq!(plan[0].namespace, "ops");
        assert_eq!(
            plan[0].message,
            "Untraced change untraced/ops/cache/4 succeeded: no promotion report or promotion-id \
             annotation explains it. Trace: https://jaeger.example/trace/abab"
        );
    }

    #[test]
    fn a_story_without_reconciler_or_deployment_gets_no_event() {
        let mut s = story("rel-4");
        s.stages = vec![
            stage(Stage::Source, Some("GitRepository/flux-system/web")),
            stage(Stage::Rollout, Some("malformed")),
        ];
        assert!(plan(&s).is_empty());
    }

    #[test]
    fn the_event_carries_reason_type_source_and_times() {
        let a = &plan(&story("rel-1"))[0];
        let e = to_event(a, ObjectReference::default());
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(v["reason"], "DeliveryTrace");
        assert_eq!(v["type"], "Normal");
        assert_eq!(v["source"]["component"], "fluxtrace");
        assert_eq!(v["reportingComponent"], "fluxtrace");
        assert_eq!(v["firstTimestamp"], "2026-11-26T10:02:11Z");
        assert_eq!(v["lastTimestamp"], "2026-11-26T10:02:11Z");
        assert_eq!(v["count"], 1);
        assert_eq!(
            v["metadata"]["annotations"]["fluxtrace.io/promotion-id"],
            "rel-1"
        );
    }
}
