//! OTLP/gRPC export: [`SpanRecord`]s become OpenTelemetry `SpanData`, grouped by the resource
//! (`service.name`) of the component that did the work, and are sent with opentelemetry-otlp's
//! tonic exporter (gzip, retries with backoff).
//!
//! Requests are cut to [`BatchLimits`] (estimated encoded bytes and span count), so that a
//! receiver's message size limit (gRPC's default is 4 MiB) is not reached; a request refused as
//! too large (`RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`) is split in two and sent again.
//! [`pipeline`] is the agent's buffer in front of the exporter.
//!
//! Runs on the caller's tokio runtime; never from a thread without one (tonic needs its
//! reactor). The endpoint comes from `--otlp-endpoint` or the standard `OTEL_EXPORTER_OTLP_*` variables; with
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

use crate::trace::SpanKind as RecordKind;
use crate::trace::{attr, AttrValue, Attributes, SpanRecord, SpanStatus, Stage};

pub mod pipeline;

/// What the collector's answer to a failed request means for the spans in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `RESOURCE_EXHAUSTED` or `INVALID_ARGUMENT` (gRPC-Go and the OpenTelemetry Collector),
    /// or `OUT_OF_RANGE` (tonic servers, for a message over their limit): the request was too
    /// large or held something the receiver would not take; smaller requests may pass.
    TooLarge,
    /// Any other code the OTLP specification calls permanent (`PERMISSION_DENIED`,
    /// `UNIMPLEMENTED`, ...): the same request would be refused again.
    Rejected,
    /// The collector could not be reached or did not answer in time (`UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`, ...): worth sending again later.
    Unreachable,
}

impl Refusal {
    /// Reads the gRPC code out of the exporter's error text (opentelemetry-otlp reports
    /// "... export failed with gRPC code: ResourceExhausted").
    fn of(message: &str) -> Refusal {
        let code = message
            .split("gRPC code: ")
            .nth(1)
            .map(|rest| {
                rest.split(|c: char| !c.is_ascii_alphanumeric())
                    .next()
                    .unwrap_or("")
            })
            .unwrap_or("");
        match code {
            "ResourceExhausted" | "InvalidArgument" | "OutOfRange" => Refusal::TooLarge,
            "Cancelled" | "DeadlineExceeded" | "Aborted" | "Unavailable" | "DataLoss" | "" => {
                Refusal::Unreachable
            }
            _ => Refusal::Rejected,
        }
    }
}

/// How large one export request may grow.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Estimated encoded bytes ([`encoded_len`]) of the spans of one request.
    pub max_bytes: usize,
    pub max_spans: usize,
}

/// Room left in each request for the resource, the scope and the framing.
const REQUEST_OVERHEAD: usize = 1024;

impl Default for BatchLimits {
    /// 3 MiB (under gRPC's and the OpenTelemetry Collector's default 4 MiB limit) and 4,096
    /// spans.
    fn default() -> Self {
        BatchLimits {
            max_bytes: 3 << 20,
            max_spans: 4096,
        }
    }
}

/// An upper estimate of the bytes `r` takes in an OTLP request (protobuf, uncompressed).
/// Never below the real size: every field is counted with its widest tag and length prefix.
pub fn encoded_len(r: &SpanRecord) -> usize {
    // tag + length varint (at most 5 bytes for a length under 4 GiB) + the bytes.
    fn field(len: usize) -> usize {
        6 + len
    }
    fn value_len(v: &AttrValue) -> usize {
        match v {
            AttrValue::Str(s) => field(s.len()),
            AttrValue::Int(_) | AttrValue::Bool(_) => 11,
            AttrValue::StrArray(a) => field(a.iter().map(|s| field(field(s.len()))).sum()),
        }
    }
    fn attrs_len(a: &Attributes) -> usize {
        a.0.iter()
            .map(|(k, v)| field(field(k.len()) + field(value_len(v))))
            .sum()
    }
    let events: usize = r
        .events
        .iter()
        .map(|e| field(9 + field(e.name.len()) + attrs_len(&e.attributes)))
        .sum();
    let links: usize = r
        .links
        .iter()
        .map(|l| field(field(16) + field(8) + attrs_len(&l.attributes) + 11))
        .sum();
    let status = match &r.status {
        SpanStatus::Error { description } => field(field(description.len()) + 2),
        _ => field(2),
    };
    field(
        field(16)
            + field(8)
            + field(8)
            + field(r.name.len())
            + 2 * 9
            + 2
            + 11
            + attrs_len(&r.attributes)
            + events
            + links
            + status,
    )
}

/// Where to cut `records` (one service) into requests within `limits`: the end index of each
/// request. A span larger than the byte limit goes alone.
fn request_ends(records: &[SpanRecord], limits: BatchLimits) -> Vec<usize> {
    let budget = limits.max_bytes.saturating_sub(REQUEST_OVERHEAD).max(1);
    let mut ends = Vec::new();
    let (mut bytes, mut spans) = (0usize, 0usize);
    for (i, r) in records.iter().enumerate() {
        let n = encoded_len(r);
        if spans > 0 && (bytes + n > budget || spans >= limits.max_spans.max(1)) {
            ends.push(i);
            bytes = 0;
            spans = 0;
        }
        bytes += n;
        spans += 1;
    }
    if spans > 0 {
        ends.push(records.len());
    }
    ends
}

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
        refusal: Refusal,
    },
}

impl ExportError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ExportError::Build { .. } => "build",
            ExportError::Send { refusal, .. } => match refusal {
                Refusal::TooLarge => "too_large",
                Refusal::Rejected => "rejected",
                Refusal::Unreachable => "unavailable",
            },
        }
    }

    /// What the failure means for the spans; a build error is a configuration that will not
    /// change by itself.
    pub fn refusal(&self) -> Refusal {
        match self {
            ExportError::Build { .. } => Refusal::Rejected,
            ExportError::Send { refusal, .. } => *refusal,
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
    limits: BatchLimits,
    exporters: BTreeMap<&'static str, opentelemetry_otlp::SpanExporter>,
    scope: InstrumentationScope,
}

impl Exporter {
    /// Builds nothing on the network yet: channels connect lazily, so a collector that is down
    /// does not fail start-up. Must be called inside a tokio runtime.
    pub fn new(settings: ExportSettings) -> Self {
        Exporter {
            settings,
            limits: BatchLimits::default(),
            exporters: BTreeMap::new(),
            scope: InstrumentationScope::builder("fluxtrace")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    /// Requests are cut to `limits` instead of [`BatchLimits::default`].
    pub fn with_limits(mut self, limits: BatchLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> BatchLimits {
        self.limits
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

    /// Sends `records`, all of `service`, in one request. Does not split: the caller cuts
    /// requests to [`Self::limits`] and splits on [`Refusal::TooLarge`].
    pub async fn send<'a>(
        &mut self,
        service: &'static str,
        records: impl IntoIterator<Item = &'a SpanRecord>,
    ) -> Result<(), ExportError> {
        let data: Vec<SpanData> = records
            .into_iter()
            .map(|r| to_span_data(r, &self.scope))
            .collect();
        let spans = data.len();
        let exporter = self.exporter_for(service)?;
        exporter.export(data).await.map_err(|e| {
            let message = e.to_string();
            ExportError::Send {
                service,
                spans,
                refusal: Refusal::of(&message),
                message,
            }
        })
    }

    /// Exports spans: one or more requests per resource, each within the limits, a request
    /// refused as too large split in two until single spans are left. Spans whose export
    /// failed are returned with the errors, so that the caller can keep them or report them.
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
            let mut start = 0;
            // Ranges still to send, last first.
            let mut todo: Vec<(usize, usize)> = request_ends(&records, self.limits)
                .into_iter()
                .map(|end| {
                    let r = (start, end);
                    start = end;
                    r
                })
                .rev()
                .collect();
            while let Some((a, b)) = todo.pop() {
                match self.send(service, &records[a..b]).await {
                    Ok(()) => {}
                    Err(e) if e.refusal() == Refusal::TooLarge && b - a > 1 => {
                        let mid = a + (b - a) / 2;
                        todo.push((mid, b));
                        todo.push((a, mid));
                    }
                    Err(e) => {
                        errors.push(e);
                        failed.extend_from_slice(&records[a..b]);
                    }
                }
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
    let mut attrs = vec![
        KeyValue::new(attr::SERVICE_NAME, service),
        KeyValue::new(attr::K8S_CLUSTER_NAME, cluster.to_string()),
    ];
    // The agent's own spans (the promotion root, the traffic probe) carry its version and
    // instance; the controllers' spans describe work of Flux and Kubernetes, not of fluxtrace.
    if service.starts_with("fluxtrace") {
        attrs.push(KeyValue::new(
            attr::SERVICE_VERSION,
            env!("CARGO_PKG_VERSION"),
        ));
        attrs.push(KeyValue::new(attr::SERVICE_INSTANCE_ID, instance_id()));
    }
    Resource::builder_empty().with_attributes(attrs).build()
}

/// `service.instance.id`: a UUID v5 of the host name (the pod name in Kubernetes) in the
/// namespace the semantic conventions give for it, so that it is stable across exporters and
/// opaque; a random UUID v4 when the host name is unknown.
pub fn instance_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        const NAMESPACE: uuid::Uuid = uuid::uuid!("4d63009a-8d0f-11ee-aad7-4c796ed8e320");
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        match host {
            Some(h) => uuid::Uuid::new_v5(&NAMESPACE, h.as_bytes()),
            None => uuid::Uuid::new_v4(),
        }
        .to_string()
    })
    .clone()
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
        span_kind: match r.kind {
            RecordKind::Server => SpanKind::Server,
            RecordKind::Internal => SpanKind::Internal,
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use prost::Message as _;

    /// The spans of every example recording, and one with long attribute values (two-byte
    /// length prefixes).
    fn examples() -> Vec<SpanRecord> {
        let mut spans: Vec<SpanRecord> = crate::replay::EXAMPLES
            .iter()
            .flat_map(|(_, text)| {
                crate::replay::run(text, crate::correlate::EngineConfig::default())
                    .spans()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut long = spans[0].clone();
        long.attributes.set("delivery.note", "x".repeat(20_000));
        long.attributes
            .set("delivery.list", vec!["y".repeat(300), "z".repeat(3)]);
        spans.push(long);
        spans
    }

    #[test]
    fn the_size_estimate_is_never_below_the_encoded_size_nor_far_above() {
        let scope = InstrumentationScope::builder("fluxtrace").build();
        let resource: ResourceAttributesWithSchema = (&resource("fluxtrace", "c")).into();
        let spans = examples();
        assert!(spans.len() > 20);
        for r in &spans {
            let grouped =
                group_spans_by_resource_and_scope(vec![to_span_data(r, &scope)], &resource);
            let real = grouped[0].scope_spans[0].spans[0].encoded_len();
            let estimate = encoded_len(r);
            assert!(estimate >= real, "{}: {estimate} < {real}", r.name);
            assert!(
                estimate <= real * 2 + 128,
                "{}: {estimate} vs {real}",
                r.name
            );
        }
    }

    #[test]
    fn requests_are_cut_by_bytes_and_by_span_count() {
        let spans = examples();
        let limits = BatchLimits {
            max_bytes: 8 << 10,
            max_spans: 7,
        };
        let ends = request_ends(&spans, limits);
        assert_eq!(ends.last(), Some(&spans.len()));
        let mut start = 0;
        for end in ends {
            let part = &spans[start..end];
            let bytes: usize = part.iter().map(encoded_len).sum();
            assert!(part.len() <= 7);
            assert!(
                part.len() == 1 || bytes <= limits.max_bytes - REQUEST_OVERHEAD,
                "{bytes} bytes in {} spans",
                part.len()
            );
            start = end;
        }
    }

    #[test]
    fn grpc_codes_decide_what_happens_to_the_spans() {
        let of = |code: &str| {
            Refusal::of(&format!(
                "Operation failed: TonicTracesClient export failed with gRPC code: {code}: detail"
            ))
        };
        assert_eq!(of("ResourceExhausted"), Refusal::TooLarge);
        assert_eq!(of("InvalidArgument"), Refusal::TooLarge);
        assert_eq!(of("OutOfRange"), Refusal::TooLarge);
        assert_eq!(of("Unavailable"), Refusal::Unreachable);
        assert_eq!(of("DeadlineExceeded"), Refusal::Unreachable);
        assert_eq!(of("PermissionDenied"), Refusal::Rejected);
        assert_eq!(of("Unimplemented"), Refusal::Rejected);
        assert_eq!(Refusal::of("connection reset"), Refusal::Unreachable);
    }
}
