//! Health and telemetry of the agent itself: `/healthz` (liveness), `/readyz` (every watcher
//! has finished its initial list and the listeners are bound; the body says whether this
//! replica leads), `/metrics` (Prometheus).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// Named parts that must all be ready before the agent is.
#[derive(Default)]
pub struct Readiness {
    parts: Mutex<BTreeMap<String, bool>>,
    /// Watches re-listing after they lost their place, and since when: verdicts wait for them
    /// (`agent::engine_loop`), readiness does not.
    relisting: Mutex<BTreeMap<String, std::time::Instant>>,
    /// This replica's role, when it takes part in an election.
    leadership: Mutex<Option<crate::leader::Leadership>>,
}

impl Readiness {
    /// Adds a part that is not ready yet.
    pub fn register(&self, part: impl Into<String>) {
        if let Ok(mut p) = self.parts.lock() {
            p.entry(part.into()).or_insert(false);
        }
    }

    pub fn set(&self, part: &str, ready: bool) {
        if let Ok(mut p) = self.parts.lock() {
            p.insert(part.to_string(), ready);
        }
    }

    /// A watch that had listed its kind lists it again (`part` as registered).
    pub fn relist_began(&self, part: &str) {
        if let Ok(mut r) = self.relisting.lock() {
            r.entry(part.to_string())
                .or_insert_with(std::time::Instant::now);
        }
    }

    /// The re-list of `part` is over (applied, or given up).
    pub fn relist_done(&self, part: &str) {
        if let Ok(mut r) = self.relisting.lock() {
            r.remove(part);
        }
    }

    /// When the newest re-list still in progress began. A list that never completes (a kind
    /// that keeps failing) stays here, older and older: it must not end the wait for a newer
    /// one.
    pub fn relisting_since(&self) -> Option<std::time::Instant> {
        self.relisting.lock().ok()?.values().max().copied()
    }

    /// Shows the replica's role on `/readyz` (both replicas are ready: both serve the intake).
    pub fn set_leadership(&self, l: crate::leader::Leadership) {
        if let Ok(mut r) = self.leadership.lock() {
            *r = Some(l);
        }
    }

    fn role(&self) -> Option<String> {
        let r = self.leadership.lock().ok()?;
        r.as_ref().map(|l| l.role().describe())
    }

    /// Parts that are not ready; empty when the agent is ready. With no parts registered the
    /// agent is not ready (nothing has started).
    pub fn waiting(&self) -> Option<Vec<String>> {
        let p = self.parts.lock().ok()?;
        if p.is_empty() {
            return None;
        }
        Some(
            p.iter()
                .filter(|(_, r)| !**r)
                .map(|(k, _)| k.clone())
                .collect(),
        )
    }
}

/// The readiness part of the watcher of `kind` (in `namespace`, or cluster-wide): ready once
/// its initial list is applied.
pub fn watch_part(kind: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("watch/{kind}/{ns}"),
        None => format!("watch/{kind}"),
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The admin routes.
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, readiness })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let (status, mut body) = match s.readiness.waiting() {
        Some(w) if w.is_empty() => match s.readiness.role() {
            Some(role) => (StatusCode::OK, format!("ready (role: {role})\n")),
            None => (StatusCode::OK, "ready\n".to_string()),
        },
        Some(w) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for: {}\n", w.join(", ")),
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string()),
    };
    body.push_str(&flux_events_detail(s.metrics.flux_events_received()));
    (status, body)
}

/// What `/readyz` says of Flux's events path (a detail: readiness does not depend on it).
pub fn flux_events_detail(received: u64) -> String {
    match received {
        0 => "flux events: none received yet from notification-controller (a Provider of type \
              generic-hmac and an Alert forward them; without them only core/v1 Events are \
              read, and client-go folds repeats and drops bursts)\n"
            .to_string(),
        n => format!("flux events: {n} received from notification-controller\n"),
    }
}

/// The count of Flux events a `/readyz` body says were received ([`flux_events_detail`]);
/// `None` when the body has no such line (not a fluxtrace agent).
pub fn flux_events_received_in(readyz: &str) -> Option<u64> {
    readyz.lines().find_map(|l| {
        let rest = l.strip_prefix("flux events: ")?;
        if rest.starts_with("none received") {
            return Some(0);
        }
        rest.split_once(' ')?.0.parse().ok()
    })
}

/// OpenMetrics (with the DORA exemplars) when the scraper accepts it, as Prometheus does with
/// exemplar storage enabled; the Prometheus text format otherwise.
async fn metrics_text(State(s): State<AdminState>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            s.metrics.encode(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            s.metrics.encode_prometheus_text(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flux_event_count_reads_back_from_what_readyz_says() {
        for n in [0, 1, 42, u64::MAX] {
            let body = format!("ready (role: leader)\n{}", flux_events_detail(n));
            assert_eq!(flux_events_received_in(&body), Some(n));
        }
        assert_eq!(flux_events_received_in("ok\n"), None);
        assert_eq!(flux_events_received_in("flux events: many\n"), None);
    }

    /// A kind whose re-list never completes does not end the wait for a newer re-list.
    #[test]
    fn a_stuck_relist_does_not_hide_a_newer_one() {
        let r = Readiness::default();
        r.relist_began("watch/Deployment");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let newer = std::time::Instant::now();
        r.relist_began("watch/Kustomization");
        assert!(r.relisting_since().is_some_and(|t| t >= newer));
        r.relist_done("watch/Kustomization");
        r.relist_done("watch/Deployment");
        assert_eq!(r.relisting_since(), None);
    }
}
