//! The intake: where promotion reports and Flux events enter the agent, and where stories are
//! read back. An adapter at the edge of the data flow:
//!
//! ```text
//!   CI ── fluxtrace promote ──▶ POST /v1/promotions ─┐            (http.rs, axum)
//!                              gRPC PromotionService ─┤            (grpc.rs, tonic)
//!   notification-controller ─▶ POST /v1/flux/events ─┤ auth.rs: bearer token / HMAC
//!                                                     ▼
//!        sources::promotion / sources::flux_event: decode + validate (errors name the field)
//!                                                     ▼
//!                           EngineHandle::submit (awaits when the queue is full: a report is
//!                           never dropped)                          ──▶ correlate::Engine
//!   on call ── fluxtrace explain ──▶ GET /v1/promotions/{id} ◀── EngineHandle::story
//!   on call ── fluxtrace status ───▶ GET /v1/workloads ◀── EngineHandle::workloads
//!   fluxtrace explain --workload ──▶ GET /v1/workloads/{namespace}/{name}/story
//! ```
//!
//! What it must never do: let anything malformed or unauthenticated reach the engine (checks
//! happen before [`crate::agent::EngineHandle::submit`]), panic on input, or keep a request
//! body over [`MAX_BODY_BYTES`]. HTTP and gRPC share [`Intake`], so both give the same answers.

use std::sync::Arc;

use jiff::SignedDuration;
use serde::Serialize;
use tracing::info;

use crate::agent::EngineHandle;
use crate::metrics::{KindError, Metrics, RouteResult};
use crate::model::{DeliveryEvent, EventBody, PromotionReport};
use crate::resource::sync::PromotionWriter;
use crate::sources::flux_event::{self, FluxEventError};
use crate::sources::promotion::ReportError;
use crate::story::Story;
use crate::trace::{trace_id_for, TraceId, Traceparent};

pub mod auth;
pub mod grpc;
pub mod http;
pub mod listener;

pub use auth::{Auth, AuthError, SecretFileError};

/// Largest request body (HTTP) or message (gRPC) the intake reads: a report is a few hundred
/// bytes, and a Flux event message at most 39,000 characters.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Time for a request body to arrive once its headers have.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a refused report's `Retry-After` says when too many promotions are open.
pub const RETRY_AFTER_SECS: u64 = 30;

/// How often the token and HMAC key files are re-read.
pub const SECRET_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Promotions listed by `GET /v1/promotions` when no `limit` is given, and at most.
pub const DEFAULT_LIST_LIMIT: usize = 20;
pub const MAX_LIST_LIMIT: usize = 1000;

/// Why a request was refused. Each maps to one HTTP status and one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("request body is over the {MAX_BODY_BYTES}-byte limit")]
    TooLarge,
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error("request body is not UTF-8 JSON")]
    NotUtf8,
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    FluxEvent(#[from] FluxEventError),
    #[error("query parameter `{field}` is invalid: {reason}")]
    Query { field: &'static str, reason: String },
    #[error("path segment `{field}` is invalid: {reason}")]
    Path { field: &'static str, reason: String },
    #[error("{open} promotions are open, the most this agent holds (--max-open-promotions); retry when some have finished")]
    TooManyOpen { open: usize },
    #[error("no promotion {0:?} is known to this agent")]
    NotFound(String),
    #[error("the agent is shutting down")]
    Unavailable,
    #[error("the report could not be stored ({0}); retry later")]
    NotStored(String),
    #[error("this server shows a finished replay and takes no reports")]
    ReadOnly,
    #[error(transparent)]
    Workload(#[from] crate::workload::WorkloadError),
}

impl IntakeError {
    /// The `result` label of `fluxtrace_intake_requests_total` (bounded).
    pub fn metric_label(&self) -> &'static str {
        match self {
            IntakeError::Unauthorized(_) => "unauthorized",
            IntakeError::TooLarge => "too_large",
            IntakeError::Body(_) => "unreadable_body",
            IntakeError::NotUtf8 => "invalid_json",
            IntakeError::Report(e) => e.metric_label(),
            IntakeError::FluxEvent(FluxEventError::Invalid { .. }) => "invalid_json",
            IntakeError::FluxEvent(FluxEventError::Missing(_)) => "missing_field",
            IntakeError::Query { .. } => "invalid_query",
            IntakeError::Path { .. } => "invalid_path",
            IntakeError::TooManyOpen { .. } => "too_many_open",
            IntakeError::NotFound(_) => "not_found",
            IntakeError::Unavailable => "unavailable",
            IntakeError::NotStored(_) => "not_stored",
            IntakeError::ReadOnly => "read_only",
            IntakeError::Workload(crate::workload::WorkloadError::Replay) => "read_only",
            IntakeError::Workload(_) => "not_found",
        }
    }

    /// The field (or JSON path) a validation error is about, for clients that want it apart
    /// from the message.
    pub fn field(&self) -> Option<String> {
        match self {
            IntakeError::Report(ReportError::Missing(f)) => Some((*f).to_string()),
            IntakeError::Report(ReportError::Field { field, .. }) => Some((*field).to_string()),
            IntakeError::Report(ReportError::Invalid { path, message })
            | IntakeError::FluxEvent(FluxEventError::Invalid { path, message }) => {
                // serde names a missing field in the message, at the path of its parent.
                let missing = message
                    .strip_prefix("missing field `")
                    .and_then(|m| m.split('`').next());
                match (path.as_str(), missing) {
                    (".", Some(m)) => Some(m.to_string()),
                    (p, Some(m)) => Some(format!("{p}.{m}")),
                    (".", None) => None,
                    (p, None) => Some(p.to_string()),
                }
            }
            IntakeError::FluxEvent(FluxEventError::Missing(f)) => Some((*f).to_string()),
            IntakeError::Query { field, .. } | IntakeError::Path { field, .. } => {
                Some((*field).to_string())
            }
            _ => None,
        }
    }
}

/// A report the engine has queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub promotion_id: String,
    pub trace_id: TraceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_link: Option<String>,
}

/// What became of a Flux event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FluxEventOutcome {
    /// Queued for the engine.
    Accepted,
    /// Well-formed, but about a kind fluxtrace does not follow.
    Ignored,
}

/// Stories of a replay that has finished, for `fluxtrace replay --serve`.
struct Replayed {
    /// Newest first, as `GET /v1/promotions` lists them.
    stories: Vec<Story>,
}

#[derive(Clone)]
enum Backend {
    Engine(EngineHandle),
    Replay(Arc<Replayed>),
}

/// The intake's shared state: where reports go, who may send them, what is counted. Cheap to
/// clone; the HTTP router and the gRPC service each hold one.
#[derive(Clone)]
pub struct Intake {
    backend: Backend,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
    /// With a cluster: each report is written as a Promotion before it is acknowledged.
    store: Option<PromotionWriter>,
}

impl Intake {
    /// Feeds the running engine.
    pub fn new(handle: EngineHandle, auth: Arc<Auth>) -> Intake {
        let metrics = Arc::clone(&handle.metrics);
        Intake {
            backend: Backend::Engine(handle),
            auth,
            metrics,
            store: None,
        }
    }

    /// Writes each report as a Promotion object before acknowledging it; when that fails the
    /// report is refused with [`IntakeError::NotStored`] (503, Retry-After) and nothing is
    /// queued, so a client's retry is the only copy.
    pub fn with_store(mut self, store: PromotionWriter) -> Intake {
        self.store = Some(store);
        self
    }

    /// Serves the stories of a finished replay, read-only and without authentication:
    /// reports and Flux events are refused with [`IntakeError::ReadOnly`].
    pub fn replayed(mut stories: Vec<Story>, metrics: Arc<Metrics>) -> Intake {
        stories.sort_by(|a, b| b.end.cmp(&a.end).then(a.promotion_id.cmp(&b.promotion_id)));
        Intake {
            backend: Backend::Replay(Arc::new(Replayed { stories })),
            auth: Arc::new(Auth::disabled()),
            metrics,
            store: None,
        }
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Whether reports and Flux events are taken (not for a served replay).
    pub fn check_writable(&self) -> Result<(), IntakeError> {
        match self.backend {
            Backend::Engine(_) => Ok(()),
            Backend::Replay(_) => Err(IntakeError::ReadOnly),
        }
    }

    /// Counts one request in `fluxtrace_intake_requests_total{route, result}`.
    pub(crate) fn count(&self, route: &'static str, result: &'static str) {
        self.metrics
            .intake_requests
            .get_or_create(&RouteResult { route, result })
            .inc();
    }

    /// Counts a body that did not decode in `fluxtrace_decode_errors_total`.
    pub(crate) fn count_decode_error(&self, kind: &'static str, e: &IntakeError) {
        if matches!(e, IntakeError::Report(_) | IntakeError::FluxEvent(_)) {
            self.metrics
                .decode_errors
                .get_or_create(&KindError {
                    kind,
                    error_type: e.metric_label(),
                })
                .inc();
        }
    }

    /// Queues a validated report (see [`crate::sources::promotion::validate`]) for the engine,
    /// waiting while the engine's queue is full. Returns the promotion's trace id: the trace it
    /// already has if the engine knows it, else the CI trace (from `traceparent`), else the id
    /// derived from the promotion id.
    pub async fn report(&self, mut report: PromotionReport) -> Result<Accepted, IntakeError> {
        let Backend::Engine(handle) = &self.backend else {
            return Err(IntakeError::ReadOnly);
        };
        let now = handle.now();
        // A report time in the future (a CI clock ahead of ours, or a typo) must not move the
        // engine's clock past deadlines that have not passed.
        let at = report.time.map_or(now, |t| t.min(now));
        let start = report.time.unwrap_or(now);
        let id = report.id.clone();
        // Beyond the cap a new promotion is refused; one the engine already holds (a repeated
        // report) is not, and nothing open is ever evicted.
        if let Some(open) = handle.over_open_cap() {
            if handle.story(&id).await.is_none() {
                return Err(IntakeError::TooManyOpen { open });
            }
        }
        let derived = report
            .traceparent
            .as_deref()
            .and_then(|t| Traceparent::parse(t).ok())
            .map_or_else(|| trace_id_for(&id), |t| t.trace_id);
        let mut submit = true;
        if let Some(store) = &self.store {
            // Stored with its start, so that it starts at the same instant after a restart.
            report.time = Some(start);
            submit = store
                .write(&report, now)
                .await
                .map_err(|e| IntakeError::NotStored(e.to_string()))?;
        }
        if submit {
            handle
                .submit(DeliveryEvent {
                    at,
                    body: EventBody::Promotion(report),
                })
                .await
                .map_err(|_| IntakeError::Unavailable)?;
        }
        // The engine fixes a promotion's trace id when the promotion opens; if it was opened
        // before (an earlier report, an annotation), that is the trace to link to.
        let (trace_id, link) = match handle.story(&id).await {
            Some(s) => (
                s.trace_id,
                s.trace_link
                    .or_else(|| handle.trace_link(s.trace_id, s.start, s.end)),
            ),
            None => (
                derived,
                handle.trace_link(derived, start, start + SignedDuration::from_hours(1)),
            ),
        };
        info!(message = "Promotion reported.", promotion_id = %id, trace_id = %trace_id);
        Ok(Accepted {
            promotion_id: id,
            trace_id,
            trace_link: link,
        })
    }

    /// Decodes a Flux event body (both metadata shapes) and queues it for the engine.
    pub async fn flux_event(&self, body: &str) -> Result<FluxEventOutcome, IntakeError> {
        let Backend::Engine(handle) = &self.backend else {
            return Err(IntakeError::ReadOnly);
        };
        let Some(ev) = flux_event::decode(body)? else {
            return Ok(FluxEventOutcome::Ignored);
        };
        handle
            .submit(DeliveryEvent {
                at: handle.now(),
                body: EventBody::FluxEvent(ev),
            })
            .await
            .map_err(|_| IntakeError::Unavailable)?;
        Ok(FluxEventOutcome::Accepted)
    }

    /// The story of a promotion, finished or in progress.
    pub async fn story(&self, id: &str) -> Result<Story, IntakeError> {
        let found = match &self.backend {
            Backend::Engine(h) => h.story(id).await,
            Backend::Replay(r) => r.stories.iter().find(|s| s.promotion_id == id).cloned(),
        };
        found.ok_or_else(|| IntakeError::NotFound(id.chars().take(256).collect()))
    }

    /// The most recent finished promotions, newest first.
    pub async fn recent(&self, environment: Option<String>, limit: usize) -> Vec<Story> {
        match &self.backend {
            Backend::Engine(h) => h.recent(environment, limit).await,
            Backend::Replay(r) => r
                .stories
                .iter()
                .filter(|s| {
                    environment
                        .as_deref()
                        .is_none_or(|e| s.environment.as_deref() == Some(e))
                })
                .take(limit)
                .cloned()
                .collect(),
        }
    }
}

impl Intake {
    /// The followed Deployments `filter` matches (`GET /v1/workloads`).
    pub async fn workloads(
        &self,
        filter: crate::workload::WorkloadFilter,
    ) -> Result<Vec<crate::workload::Workload>, IntakeError> {
        match &self.backend {
            Backend::Engine(h) => Ok(h.workloads(filter).await),
            Backend::Replay(_) => Err(crate::workload::WorkloadError::Replay.into()),
        }
    }

    /// The story of the promotion behind what runs on Deployment `namespace/name`.
    pub async fn workload_story(&self, namespace: &str, name: &str) -> Result<Story, IntakeError> {
        match &self.backend {
            Backend::Engine(h) => Ok(h
                .workload_story(namespace, name)
                .await
                .ok_or(IntakeError::Unavailable)??),
            Backend::Replay(_) => Err(crate::workload::WorkloadError::Replay.into()),
        }
    }
}

/// The intake's credentials from the command line, with a warning when authentication is off
/// or nothing can get in.
pub fn auth_from_args(args: &crate::config::IntakeArgs) -> Result<Auth, SecretFileError> {
    if args.insecure_no_auth {
        tracing::warn!(
            message = "Intake authentication is off (--insecure-no-auth): anyone who can reach the agent can report promotions, post Flux events and read stories."
        );
        return Ok(Auth::disabled());
    }
    if args.token_file.is_none() {
        tracing::warn!(
            message = "No --token-file: the intake refuses every promotion report and query (give --token-file, or --insecure-no-auth for a local trial)."
        );
    }
    Auth::from_files(args.token_file.as_deref(), args.hmac_key_file.as_deref())
}
