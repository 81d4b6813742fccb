//! The intake over HTTP (axum): promotion reports, Flux events, stories.
//!
//! | route | auth | answers |
//! |---|---|---|
//! | `POST /v1/promotions` | bearer | 202 `{promotion_id, trace_id, trace_link?}` |
//! | `POST /v1/flux/events` | HMAC `X-Signature` if a key is set, else bearer | 202 `{status: accepted\|ignored}` |
//! | `GET /v1/promotions/{id}` | bearer | 200 story JSON (`Accept: text/plain`: the narrative), 404 |
//! | `GET /v1/promotions?environment=&limit=` | bearer | 200 `{promotions: [story…]}` |
//! | `GET /v1/workloads?environment=&namespace=&app=` | bearer | 200 `{workloads: [workload…]}` (`Accept: text/plain`: the table) |
//! | `GET /v1/workloads/{namespace}/{name}/story` | bearer | 200 the story of the promotion behind what runs (`Accept: text/plain`: the narrative), 404 |
//!
//! Errors are JSON `{error, error_type, field?}`: 400 for bad JSON, a missing or ill-typed field
//! or an invalid `traceparent`; 401 without valid credentials; 413 over [`MAX_BODY_BYTES`]; 503
//! while shutting down. Unknown fields are ignored. Credentials are checked before a body is
//! read, except for HMAC-signed Flux events, whose signature covers the body.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::{Intake, IntakeError, DEFAULT_LIST_LIMIT, MAX_BODY_BYTES, MAX_LIST_LIMIT};
use crate::sources::promotion;
use crate::story::{self, Story};

/// The `route` labels of `fluxtrace_intake_requests_total`.
pub const ROUTE_REPORT: &str = "promotions_report";
pub const ROUTE_FLUX: &str = "flux_events";
/// Where notification-controller posts Flux events (a Provider's `address` ends with it).
pub const FLUX_EVENTS_PATH: &str = "/v1/flux/events";
pub const ROUTE_GET: &str = "promotions_get";
pub const ROUTE_LIST: &str = "promotions_list";
pub const ROUTE_WORKLOADS: &str = "workloads_list";
pub const ROUTE_WORKLOAD_STORY: &str = "workloads_story";

/// The intake routes; merge them with the admin routes into one app.
pub fn router(intake: Intake) -> Router {
    Router::new()
        .route("/v1/promotions", post(report).get(list))
        .route("/v1/promotions/{id}", get(get_story))
        .route(FLUX_EVENTS_PATH, post(flux_event))
        .route("/v1/workloads", get(workloads))
        .route(
            "/v1/workloads/{namespace}/{name}/story",
            get(workload_story),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(intake)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: String,
    error_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

fn status_of(e: &IntakeError) -> StatusCode {
    match e {
        IntakeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        IntakeError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        IntakeError::Body(_)
        | IntakeError::NotUtf8
        | IntakeError::Report(_)
        | IntakeError::FluxEvent(_)
        | IntakeError::Query { .. }
        | IntakeError::Path { .. } => StatusCode::BAD_REQUEST,
        IntakeError::TooManyOpen { .. } => StatusCode::TOO_MANY_REQUESTS,
        IntakeError::NotFound(_) => StatusCode::NOT_FOUND,
        IntakeError::Unavailable | IntakeError::ReadOnly | IntakeError::NotStored(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        IntakeError::Workload(crate::workload::WorkloadError::Replay) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        IntakeError::Workload(_) => StatusCode::NOT_FOUND,
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        let body = ErrorBody {
            error: self.to_string(),
            error_type: self.metric_label(),
            field: self.field(),
        };
        let mut resp = (status, Json(body)).into_response();
        if let IntakeError::TooManyOpen { .. } | IntakeError::NotStored(_) = &self {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(super::RETRY_AFTER_SECS),
            );
        }
        if let IntakeError::Unauthorized(e) = &self {
            let challenge = match e {
                super::AuthError::MissingSignature
                | super::AuthError::MalformedSignature
                | super::AuthError::InvalidSignature => "HMAC-SHA256",
                _ => "Bearer",
            };
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

/// Counts the request and turns the result into a response.
fn finish<T: IntoResponse>(
    intake: &Intake,
    route: &'static str,
    ok: &'static str,
    result: Result<T, IntakeError>,
) -> Response {
    match result {
        Ok(v) => {
            intake.count(route, ok);
            v.into_response()
        }
        Err(e) => {
            intake.count(route, e.metric_label());
            if !matches!(e, IntakeError::NotFound(_)) {
                // Debug, not info: a client sending garbage must not flood the log (the
                // refusals are counted in fluxtrace_intake_requests_total).
                tracing::debug!(message = "Intake request refused.", route, error_type = e.metric_label(), error = %e);
            }
            e.into_response()
        }
    }
}

fn authorization(h: &HeaderMap) -> Option<&[u8]> {
    h.get(header::AUTHORIZATION).map(HeaderValue::as_bytes)
}

/// Reads the whole body, at most [`MAX_BODY_BYTES`] (the router's `DefaultBodyLimit`).
/// A body that does not arrive within [`super::BODY_TIMEOUT`] is refused.
async fn read_body(req: Request) -> Result<Bytes, IntakeError> {
    let read = Bytes::from_request(req, &());
    match tokio::time::timeout(super::BODY_TIMEOUT, read).await {
        Err(_) => Err(IntakeError::Body(format!(
            "the body did not arrive within {} s",
            super::BODY_TIMEOUT.as_secs()
        ))),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(r)) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(IntakeError::TooLarge),
        Ok(Err(r)) => Err(IntakeError::Body(r.body_text())),
    }
}

fn utf8(body: &[u8]) -> Result<&str, IntakeError> {
    std::str::from_utf8(body).map_err(|_| IntakeError::NotUtf8)
}

async fn report(State(intake): State<Intake>, req: Request) -> Response {
    let result = async {
        intake.check_writable()?;
        intake.auth().check_bearer(authorization(req.headers()))?;
        let body = read_body(req).await?;
        let report = promotion::decode(utf8(&body)?).map_err(IntakeError::from);
        if let Err(e) = &report {
            intake.count_decode_error("promotion", e);
        }
        let accepted = intake.report(report?).await?;
        Ok((StatusCode::ACCEPTED, Json(accepted)))
    }
    .await;
    finish(&intake, ROUTE_REPORT, "accepted", result)
}

async fn flux_event(State(intake): State<Intake>, req: Request) -> Response {
    let mut ok = "accepted";
    let result = async {
        intake.check_writable()?;
        let headers = req.headers().clone();
        if !intake.auth().flux_uses_hmac() {
            intake.auth().check_bearer(authorization(&headers))?;
        }
        let body = read_body(req).await?;
        if intake.auth().flux_uses_hmac() {
            let sig = headers.get("x-signature").map(HeaderValue::as_bytes);
            intake
                .auth()
                .check_flux(authorization(&headers), sig, &body)?;
        }
        let outcome = async { intake.flux_event(utf8(&body)?).await }.await;
        if let Err(e) = &outcome {
            intake.count_decode_error("flux_event", e);
        }
        let outcome = outcome?;
        if outcome == super::FluxEventOutcome::Ignored {
            ok = "ignored";
        }
        Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "status": outcome })),
        ))
    }
    .await;
    finish(&intake, ROUTE_FLUX, ok, result)
}

/// `Accept: text/plain` (and not JSON) asks for the narrative instead of the JSON story.
fn wants_text(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/plain") && !a.contains("application/json"))
}

async fn get_story(
    State(intake): State<Intake>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let result = async {
        intake.auth().check_bearer(authorization(&headers))?;
        let Path(id) = id.map_err(|e| IntakeError::Path {
            field: "id",
            reason: match e {
                PathRejection::FailedToDeserializePathParams(_) => {
                    "not valid percent-encoded UTF-8".to_string()
                }
                other => other.body_text(),
            },
        })?;
        let s = intake.story(&id).await?;
        Ok(story_response(&headers, &s))
    }
    .await;
    finish(&intake, ROUTE_GET, "ok", result)
}

#[derive(Serialize)]
struct List {
    promotions: Vec<Story>,
}

async fn list(
    State(intake): State<Intake>,
    headers: HeaderMap,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let result = async {
        intake.auth().check_bearer(authorization(&headers))?;
        let params = query_params(params)?;
        let limit = match params.get("limit") {
            None => DEFAULT_LIST_LIMIT,
            Some(l) => l
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
                .ok_or_else(|| IntakeError::Query {
                    field: "limit",
                    reason: format!("expected a number from 1 to {MAX_LIST_LIMIT}"),
                })?,
        };
        let promotions = intake.recent(param(&params, "environment"), limit).await;
        Ok(Json(List { promotions }))
    }
    .await;
    finish(&intake, ROUTE_LIST, "ok", result)
}

/// A story as JSON, or its narrative for `Accept: text/plain`.
fn story_response(headers: &HeaderMap, s: &Story) -> Response {
    if wants_text(headers) {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            story::render(s),
        )
            .into_response()
    } else {
        Json(s).into_response()
    }
}

#[derive(Serialize)]
struct Workloads {
    workloads: Vec<crate::workload::Workload>,
}

/// The query string's parameters.
fn query_params(
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, IntakeError> {
    params.map(|Query(p)| p).map_err(|e| IntakeError::Query {
        field: "query",
        reason: e.body_text(),
    })
}

/// A query parameter, trimmed; empty is unset.
fn param(params: &HashMap<String, String>, name: &str) -> Option<String> {
    params
        .get(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

async fn workloads(
    State(intake): State<Intake>,
    headers: HeaderMap,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let result = async {
        intake.auth().check_bearer(authorization(&headers))?;
        let params = query_params(params)?;
        let filter = crate::workload::WorkloadFilter {
            environment: param(&params, "environment"),
            namespace: param(&params, "namespace"),
            app: param(&params, "app"),
        };
        let workloads = intake.workloads(filter).await?;
        Ok(if wants_text(&headers) {
            (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                crate::workload::render(&workloads),
            )
                .into_response()
        } else {
            Json(Workloads { workloads }).into_response()
        })
    }
    .await;
    finish(&intake, ROUTE_WORKLOADS, "ok", result)
}

async fn workload_story(
    State(intake): State<Intake>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let result = async {
        intake.auth().check_bearer(authorization(&headers))?;
        let Path((namespace, name)) = path.map_err(|e| IntakeError::Path {
            field: "workload",
            reason: e.body_text(),
        })?;
        let s = intake.workload_story(&namespace, &name).await?;
        Ok(story_response(&headers, &s))
    }
    .await;
    finish(&intake, ROUTE_WORKLOAD_STORY, "ok", result)
}
