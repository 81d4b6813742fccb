//! The agent's own metrics, in Prometheus text format at `/metrics`.
//!
//! Label sets are bounded: routes, results, stages, outcomes, kinds and error types come from
//! fixed lists in the code, never from input.

use prometheus_client::encoding::{text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteResult {
    pub route: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorType {
    pub error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindError {
    pub kind: &'static str,
    pub error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
    pub divergence_stage: &'static str,
}

/// Every metric the agent exposes. Cheap to share (`Arc`); updates are lock-free.
pub struct Metrics {
    registry: Registry,
    pub intake_requests: Family<RouteResult, Counter>,
    pub spans_exported: Counter,
    pub spans_export_failed: Family<ErrorType, Counter>,
    pub spans_dropped: Counter,
    pub spans_pending: Gauge,
    pub engine_queue_depth: Gauge,
    /// What the correlation engine holds, by kind (`open_promotions`, `deployments`, …).
    pub engine_objects: Family<KindLabel, Gauge>,
    pub observations: Family<KindLabel, Counter>,
    pub observations_dropped: Family<KindLabel, Counter>,
    pub decode_errors: Family<KindError, Counter>,
    pub watch_restarts: Family<KindLabel, Counter>,
    pub promotions: Family<OutcomeLabel, Counter>,
    /// Kubernetes Events with trace links: `created`, or `already_exists` (written before).
    pub k8s_events: Family<ResultLabel, Counter>,
    pub k8s_events_failed: Family<ErrorType, Counter>,
    pub k8s_events_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fluxtrace");
        let m = Metrics {
            intake_requests: Family::default(),
            spans_exported: Counter::default(),
            spans_export_failed: Family::default(),
            spans_dropped: Counter::default(),
            spans_pending: Gauge::default(),
            engine_queue_depth: Gauge::default(),
            engine_objects: Family::default(),
            observations: Family::default(),
            observations_dropped: Family::default(),
            decode_errors: Family::default(),
            watch_restarts: Family::default(),
            promotions: Family::default(),
            k8s_events: Family::default(),
            k8s_events_failed: Family::default(),
            k8s_events_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "intake_requests",
            "Intake requests by route and result",
            m.intake_requests.clone(),
        );
        registry.register(
            "spans_exported",
            "Spans accepted by the OTLP endpoint",
            m.spans_exported.clone(),
        );
        registry.register(
            "spans_export_failed",
            "Span export attempts that failed (the spans are kept and retried)",
            m.spans_export_failed.clone(),
        );
        registry.register(
            "spans_dropped",
            "Spans dropped because the export buffer was full",
            m.spans_dropped.clone(),
        );
        registry.register(
            "spans_pending",
            "Spans waiting to be exported",
            m.spans_pending.clone(),
        );
        registry.register(
            "engine_queue_depth",
            "Observations waiting for the correlation engine",
            m.engine_queue_depth.clone(),
        );
        registry.register(
            "engine_objects",
            "What the correlation engine holds, by kind",
            m.engine_objects.clone(),
        );
        registry.register(
            "observations",
            "Observations applied to the engine",
            m.observations.clone(),
        );
        registry.register(
            "observations_dropped",
            "Observations dropped because the engine queue was full",
            m.observations_dropped.clone(),
        );
        registry.register(
            "decode_errors",
            "Objects or requests that could not be decoded",
            m.decode_errors.clone(),
        );
        registry.register(
            "watch_restarts",
            "Kubernetes watch restarts (re-lists)",
            m.watch_restarts.clone(),
        );
        registry.register(
            "promotions",
            "Promotions that reached a verdict",
            m.promotions.clone(),
        );
        registry.register(
            "k8s_events",
            "Kubernetes Events with a trace link, by result (created, already_exists)",
            m.k8s_events.clone(),
        );
        registry.register(
            "k8s_events_failed",
            "Kubernetes Events with a trace link that could not be written",
            m.k8s_events_failed.clone(),
        );
        registry.register(
            "k8s_events_dropped",
            "Finished promotions whose Kubernetes Events were dropped because the queue was full",
            m.k8s_events_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
