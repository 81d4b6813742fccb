//! OTLP/gRPC export: [`SpanRecord`]s become OpenTelemetry `SpanData`, grouped by the resource
//! (`service.name`) of the component that did the work, and are sent with opentelemetry-otlp's
//! tonic exporter (gzip, retries with backoff).
//!
//! Runs on the caller's tokio runtime; never from a thread without one (tonic needs its reactor). The
//! endpoint comes from `--otlp-endpoint` or the standard `OTEL_EXPORTER_OTLP_*` variables; with
//! neither, nothing is exported and the caller says so.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, SpanKind, Status, TraceFlags, TraceId as OtelTraceId,
    TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;

use crate::trace::{attr, AttrValue, Attributes, SpanRecord, SpanStatus, Stage};

/// Why export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("could not build the OTLP exporter for {endpoint}: {message}")]
    Build { endpoint: String, message: String },
    #[error("OTLP export of {spans} span(s) for service {service} failed: {message}")]
    Send {
        service: &'static str,
        spans: usize,
        message: String,
    },
}

impl ExportError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ExportError::Build { .. } => "build",
            ExportError::Send { .. } => "send",
        }
    }
}

/// Where and how to export.
#[derive(Clone, Debug)]
pub struct ExportSettings {
    /// Explicit endpoint (`--otlp-endpoint`); `None` lets the `OTEL_EXPORTER_OTLP_*` variables
    /// decide.
    pub endpoint: Option<String>,
    /// `k8s.cluster.name` on every resource.
    pub cluster: String,
    /// Per-request timeout; `None` leaves it to `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` (10 s
    /// when unset).
    pub timeout: Option<Duration>,
    /// `Some(true)`: gzip; `Some(false)`: uncompressed; `None` leaves it to
    /// `OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION`.
    pub gzip: Option<bool>,
    /// Retries of a failed request, with exponential backoff (0 in tests).
    pub retries: usize,
}

/// The endpoint export would use, or `None` when nothing configures one.
pub fn configured_endpoint(explicit: Option<&str>) -> Option<String> {
    // An empty source counts as unset and the next one decides, as in opentelemetry-otlp: an
    // empty OTEL_EXPORTER_OTLP_TRACES_ENDPOINT must not hide OTEL_EXPORTER_OTLP_ENDPOINT.
    let set = |e: String| (!e.trim().is_empty()).then_some(e);
    explicit
        .map(str::to_string)
        .and_then(set)
        .or_else(|| {
            std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .ok()
                .and_then(set)
        })
        .or_else(|| {
            std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .ok()
                .and_then(set)
        })
}

/// Sends span records over OTLP/gRPC, one exporter (one resource) per `service.name`.
pub struct Exporter {
    settings: ExportSettings,
    exporters: BTreeMap<&'static str, opentelemetry_otlp::SpanExporter>,
    scope: InstrumentationScope,
}

impl Exporter {
    /// Builds nothing on the network yet: channels connect lazily, so a collector that is down
    /// does not fail start-up. Must be called inside a tokio runtime.
    pub fn new(settings: ExportSettings) -> Self {
        Exporter {
            settings,
            exporters: BTreeMap::new(),
            scope: InstrumentationScope::builder("fluxtrace")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    fn exporter_for(
        &mut self,
        service: &'static str,
    ) -> Result<&mut opentelemetry_otlp::SpanExporter, ExportError> {
        if !self.exporters.contains_key(service) {
            let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if let Some(t) = self.settings.timeout {
                b = b.with_timeout(t);
            }
            if let Some(e) = &self.settings.endpoint {
                b = b.with_endpoint(e.clone());
            }
            b = b.with_retry_policy(
                opentelemetry_otlp::RetryPolicy::recommended()
                    .with_max_retries(self.settings.retries),
            );
            if self.settings.gzip == Some(true) {
                b = b.with_compression(opentelemetry_otlp::Compression::Gzip);
            }
            let mut exporter = b.build().map_err(|e| ExportError::Build {
                endpoint: self
                    .settings
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "from OTEL_EXPORTER_OTLP_*".into()),
                message: e.to_string(),
            })?;
            exporter.set_resource(&resource(service, &self.settings.cluster));
            self.exporters.insert(service, exporter);
        }
        self.exporters
            .get_mut(service)
            .ok_or_else(|| ExportError::Build {
                endpoint: String::new(),
                message: "exporter vanished".into(),
            })
    }

    /// Exports spans, one request per resource. Spans of resources whose export failed are
    /// returned with the errors, so that the caller can keep them and try again later.
    pub async fn export(
        &mut self,
        spans: Vec<SpanRecord>,
    ) -> Result<(), (Vec<SpanRecord>, Vec<ExportError>)> {
        let mut by_service: BTreeMap<&'static str, Vec<SpanRecord>> = BTreeMap::new();
        for s in spans {
            by_service.entry(s.service).or_default().push(s);
        }
        let mut failed = Vec::new();
        let mut errors = Vec::new();
        for (service, records) in by_service {
            let data: Vec<SpanData> = records
                .iter()
                .map(|r| to_span_data(r, &self.scope))
                .collect();
            let n = data.len();
            let result = match self.exporter_for(service) {
                Ok(exporter) => exporter.export(data).await.map_err(|e| ExportError::Send {
                    service,
                    spans: n,
                    message: e.to_string(),
                }),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                errors.push(e);
                failed.extend(records);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err((failed, errors))
        }
    }

    /// Shuts every exporter down (closes channels).
    pub fn shutdown(&mut self) {
        for (_, e) in std::mem::take(&mut self.exporters) {
            let _ = e.shutdown();
        }
    }
}

fn resource(service: &'static str, cluster: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new(attr::SERVICE_NAME, service),
            KeyValue::new(attr::K8S_CLUSTER_NAME, cluster.to_string()),
        ])
        .build()
}

fn value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => Value::from(s.clone()),
        AttrValue::Int(i) => Value::from(*i),
        AttrValue::Bool(b) => Value::from(*b),
        AttrValue::StrArray(a) => Value::Array(
            a.iter()
                .map(|s| opentelemetry::StringValue::from(s.clone()))
                .collect::<Vec<_>>()
                .into(),
        ),
    }
}

fn key_values(a: &Attributes) -> Vec<KeyValue> {
    a.0.iter()
        .map(|(k, v)| KeyValue::new(*k, value(v)))
        .collect()
}

fn system_time(t: jiff::Timestamp) -> SystemTime {
    SystemTime::from(t)
}

/// Converts one record; the ids are the record's own, never new ones.
pub fn to_span_data(r: &SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let trace_id = OtelTraceId::from_bytes(r.trace_id.0);
    let ctx = SpanContext::new(
        trace_id,
        OtelSpanId::from_bytes(r.span_id.0),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let mut events = SpanEvents::default();
    for e in &r.events {
        events.events.push(opentelemetry::trace::Event::new(
            e.name.clone(),
            system_time(e.time),
            key_values(&e.attributes),
            0,
        ));
    }
    let mut links = SpanLinks::default();
    for l in &r.links {
        links.links.push(opentelemetry::trace::Link::new(
            SpanContext::new(
                OtelTraceId::from_bytes(l.trace_id.0),
                OtelSpanId::from_bytes(l.span_id.0),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            ),
            key_values(&l.attributes),
            0,
        ));
    }
    SpanData {
        span_context: ctx,
        parent_span_id: r
            .parent_span_id
            .map_or(OtelSpanId::INVALID, |p| OtelSpanId::from_bytes(p.0)),
        // The one parent outside fluxtrace is the CI span a promotion root continues
        // (its traceparent); OTLP flags say so, so that backends do not look for it here.
        parent_span_is_remote: r.parent_span_id.is_some()
            && r.stage() == Some(Stage::Promotion.as_str()),
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed(r.name),
        start_time: system_time(r.start),
        end_time: system_time(r.end),
        attributes: key_values(&r.attributes),
        dropped_attributes_count: 0,
        events,
        links,
        status: match &r.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Ok => Status::Ok,
            SpanStatus::Error { description } => Status::error(description.clone()),
        },
        instrumentation_scope: scope.clone(),
    }
}
