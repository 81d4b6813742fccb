//! The agent's own metrics, in Prometheus text format at `/metrics`.
//!
//! Label sets are bounded: routes, results, stages, outcomes, kinds and error types come from
//! fixed lists in the code, never from input. The DORA metrics' `environment` and `app` come
//! from reports, bounded by `crate::dora`'s series guard.
//!
//! Served as OpenMetrics (with exemplars) when the scraper asks for
//! `application/openmetrics-text`, as the Prometheus text format otherwise.

use prometheus_client::encoding::{prometheus_text, text::encode, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

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

/// DORA series: one environment and app (bounded by `crate::dora`'s guard).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DoraLabels {
    pub environment: String,
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DoraOutcome {
    pub environment: String,
    pub app: String,
    pub outcome: &'static str,
}

/// The exemplar of a DORA observation: the trace to jump to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

pub type DoraHistogram = Family<
    DoraLabels,
    HistogramWithExemplars<TraceExemplar>,
    fn() -> HistogramWithExemplars<TraceExemplar>,
>;

/// Lead time for changes: minutes to a month.
const LEAD_TIME_BUCKETS: [f64; 12] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 172800.0, 604800.0,
    2592000.0,
];
/// Time to restore: minutes to a week.
const RESTORE_BUCKETS: [f64; 11] = [
    60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0, 86400.0, 259200.0, 604800.0,
];

fn lead_time_histogram() -> HistogramWithExemplars<TraceExemplar> {
    HistogramWithExemplars::new(LEAD_TIME_BUCKETS.into_iter())
}

fn restore_histogram() -> HistogramWithExemplars<TraceExemplar> {
    HistogramWithExemplars::new(RESTORE_BUCKETS.into_iter())
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
    pub open_promotions: Gauge,
    pub observations: Family<KindLabel, Counter>,
    pub observations_dropped: Family<KindLabel, Counter>,
    pub decode_errors: Family<KindError, Counter>,
    pub watch_restarts: Family<KindLabel, Counter>,
    pub promotions: Family<OutcomeLabel, Counter>,
    /// Kubernetes Events with trace links: `created`, or `already_exists` (written before).
    pub k8s_events: Family<ResultLabel, Counter>,
    pub k8s_events_failed: Family<ErrorType, Counter>,
    pub k8s_events_dropped: Counter,
    pub promotion_status_dropped: Counter,
    /// 1 on the replica that holds the Lease (or runs without an election), 0 on a standby.
    pub leader: Gauge,
    /// Spans a standby holds in case it takes over (its verdicts, not yet known exported by
    /// the leader).
    pub standby_held_spans: Gauge,
    /// Verdicts a standby let go of unexported because its hold was full.
    pub standby_evicted: Counter,
    /// DORA: promotions finished, by environment, app and outcome (deployment frequency; the
    /// change failure rate is a recording rule over it).
    pub dora_promotions: Family<DoraOutcome, Counter>,
    /// DORA: commit → rollout complete of succeeded promotions that know their commit time.
    pub dora_lead_time: DoraHistogram,
    /// DORA: a failed promotion → the next succeeded one of the same environment and app.
    pub dora_time_to_restore: DoraHistogram,
    /// DORA observations filed under `other` because the series limit was reached.
    pub dora_series_overflow: Counter,
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
            open_promotions: Gauge::default(),
            observations: Family::default(),
            observations_dropped: Family::default(),
            decode_errors: Family::default(),
            watch_restarts: Family::default(),
            promotions: Family::default(),
            k8s_events: Family::default(),
            k8s_events_failed: Family::default(),
            k8s_events_dropped: Counter::default(),
            promotion_status_dropped: Counter::default(),
            leader: Gauge::default(),
            standby_held_spans: Gauge::default(),
            standby_evicted: Counter::default(),
            dora_promotions: Family::default(),
            dora_lead_time: Family::new_with_constructor(lead_time_histogram),
            dora_time_to_restore: Family::new_with_constructor(restore_histogram),
            dora_series_overflow: Counter::default(),
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
            "open_promotions",
            "Promotions waiting for a verdict (reports beyond --max-open-promotions are refused)",
            m.open_promotions.clone(),
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
        registry.register(
            "promotion_status_dropped",
            "Finished promotions whose Promotion status write was dropped because the queue was full",
            m.promotion_status_dropped.clone(),
        );
        registry.register(
            "leader",
            "1 on the replica that exports spans and writes statuses and Events, 0 on a standby",
            m.leader.clone(),
        );
        registry.register(
            "standby_held_spans",
            "Spans a standby holds until the leader is known to have exported them",
            m.standby_held_spans.clone(),
        );
        registry.register(
            "standby_evicted",
            "Verdicts a standby let go of because its hold was full",
            m.standby_evicted.clone(),
        );
        registry.register(
            "dora_promotions_finished",
            "DORA deployment frequency: promotions finished, by environment, app and outcome",
            m.dora_promotions.clone(),
        );
        registry.register_with_unit(
            "dora_lead_time",
            "DORA lead time for changes: commit time to rollout complete, succeeded promotions",
            Unit::Seconds,
            m.dora_lead_time.clone(),
        );
        registry.register_with_unit(
            "dora_time_to_restore",
            "DORA time to restore: a failed promotion to the next succeeded one of its environment and app",
            Unit::Seconds,
            m.dora_time_to_restore.clone(),
        );
        registry.register(
            "dora_series_overflow",
            "DORA observations filed under environment and app `other`: the series limit was reached",
            m.dora_series_overflow.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition, exemplars included.
    /// Flux events notification-controller forwarded to the intake that were taken (accepted,
    /// or well-formed and ignored): none means the Provider and Alert are missing, and the
    /// agent has only the core/v1 Events, which client-go's recorder folds and drops.
    pub fn flux_events_received(&self) -> u64 {
        ["accepted", "ignored"]
            .into_iter()
            .map(|result| {
                self.intake_requests
                    .get_or_create(&RouteResult {
                        route: crate::intake::http::ROUTE_FLUX,
                        result,
                    })
                    .get()
            })
            .sum()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text exposition (format 0.0.4: no exemplars).
    pub fn encode_prometheus_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}
