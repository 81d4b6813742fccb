//! Shared by the intake tests: an in-process agent (engine task, no export) behind the intake,
//! request helpers for the axum router, and a way to know the engine has applied everything
//! queued so far.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use fluxtrace::admin::{self, Readiness};
use fluxtrace::agent::{Agent, AgentConfig, EngineHandle};
use fluxtrace::correlate::EngineConfig;
use fluxtrace::intake::{self, Auth, Intake};
use fluxtrace::metrics::Metrics;
use serde_json::Value;
use tower::ServiceExt as _;

pub const TOKEN: &str = "test-token-6b1f";
pub const HMAC_KEY: &[u8] = b"flux-hmac-key-for-tests";
pub const SHA: &str = "450796ddb2ab6724ee1cc32a4be56da032d1cca0";
pub const DIGEST: &str = "sha256:f126ce66891eefd188e03e2c6838ac172b117bf67ed6f9605cffca950e460822";
pub const CI_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
pub const LINK_TEMPLATE: &str = "https://tempo.example/trace/{trace_id}";

/// An agent with the admin and intake routes merged, as `fluxtrace run` serves them.
pub struct TestAgent {
    pub agent: Agent,
    pub handle: EngineHandle,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub intake: Intake,
    pub app: Router,
}

/// Starts the engine task with `engine` settings and the intake with `auth`.
pub fn start_with(auth: Auth, engine: EngineConfig, tick: Duration) -> TestAgent {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let cfg = AgentConfig {
        engine,
        tick,
        trace_url_template: Some(LINK_TEMPLATE.into()),
        ..AgentConfig::default()
    };
    let agent = Agent::start(cfg, metrics.clone(), readiness.clone());
    let handle = agent.handle.clone();
    let intake = Intake::new(handle.clone(), Arc::new(auth));
    let app = admin::router(metrics.clone(), readiness.clone())
        .merge(intake::http::router(intake.clone()));
    TestAgent {
        agent,
        handle,
        metrics,
        readiness,
        intake,
        app,
    }
}

/// Bearer token [`TOKEN`] and HMAC key [`HMAC_KEY`]; default engine.
pub fn start() -> TestAgent {
    start_with(
        Auth::with_secrets(&[TOKEN], Some(HMAC_KEY)),
        EngineConfig::default(),
        Duration::from_secs(1),
    )
}

/// A request; `token` becomes `Authorization: Bearer <token>`.
pub fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("a valid request")
}

/// Sends a request through the router (no network).
pub async fn send(
    app: &Router,
    req: Request<Body>,
) -> (StatusCode, Vec<u8>, axum::http::HeaderMap) {
    let resp = app.clone().oneshot(req).await.expect("the router answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("a readable body");
    (status, body.to_vec(), headers)
}

/// Sends and parses the JSON answer.
pub async fn send_json(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let (status, body, _) = send(app, req).await;
    let v = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{status}: not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, v)
}

pub fn report_json(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","environment":"prod","revision":"{SHA}","app":"shop","actor":"alice"}}"#
    )
}

/// Waits until the engine has applied everything queued before this call: a sentinel report
/// goes in last, and the queue is first in, first out.
pub async fn drain(t: &TestAgent) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "sentinel-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let (status, _) = send_json(
        &t.app,
        request(
            Method::POST,
            "/v1/promotions",
            Some(TOKEN),
            &[],
            format!(r#"{{"id":"{id}","environment":"sentinel","revision":"{SHA}","app":"{id}"}}"#),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "the sentinel report");
    let until = Instant::now() + Duration::from_secs(10);
    while t.handle.story(&id).await.is_none() {
        assert!(
            Instant::now() < until,
            "the engine did not apply the sentinel"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The value of a counter in the Prometheus text (0 when absent).
pub fn counter(metrics: &Metrics, name: &str, labels: &str) -> u64 {
    let text = metrics.encode();
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse::<f64>().expect("a number") as u64)
}

/// Promotion reports the engine has applied.
pub fn promotions_applied(metrics: &Metrics) -> u64 {
    counter(
        metrics,
        "fluxtrace_observations_total",
        r#"kind="promotion""#,
    )
}

/// Flux events the engine has applied.
pub fn flux_events_applied(metrics: &Metrics) -> u64 {
    counter(
        metrics,
        "fluxtrace_observations_total",
        r#"kind="flux_event""#,
    )
}

/// HMAC-SHA256 written out from its definition (RFC 2104) on top of `sha2`, so that the tests
/// do not check the agent's `hmac` crate against itself.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

/// `sha256=<hex>`, as notification-controller's generic-hmac provider sends it.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(key, body)))
}
