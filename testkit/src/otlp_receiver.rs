//! An in-process OTLP/gRPC trace receiver for integration tests, and collectors that are down.
//!
//! Built on opentelemetry-proto's `TraceServiceServer` rather than fake-opentelemetry-collector,
//! because that one flattens spans and drops resources: this receiver keeps every
//! whole `ExportTraceServiceRequest`, so tests can assert on resources, grouping and parents as
//! they crossed the wire. It accepts gzip, and can be told to refuse requests so that export
//! errors can be tested. It runs on the caller's tokio runtime and stops when dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fluxtrace::export::ExportSettings;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Response, Status};

/// One export call as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub request: ExportTraceServiceRequest,
    /// The request's `grpc-encoding` header: `Some("gzip")` when it was compressed.
    pub encoding: Option<String>,
    /// The code the receiver answered with instead of success, if it refused the call.
    pub refused: Option<Code>,
    /// The request's gRPC metadata (the exporter's headers, e.g. `OTEL_EXPORTER_OTLP_HEADERS`).
    pub metadata: tonic::metadata::MetadataMap,
    /// When the call arrived.
    pub at: std::time::Instant,
}

#[derive(Clone, Debug)]
enum Refusal {
    All(Code),
    Service(String, Code),
}

#[derive(Default)]
struct State {
    calls: Mutex<Vec<Call>>,
    refusal: Mutex<Option<Refusal>>,
    /// Take calls and never answer them.
    hang: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide what was received from the next assertion.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Service(Arc<State>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let metadata = request.metadata().clone();
        let request = request.into_inner();
        let refused = match &*lock(&self.0.refusal) {
            None => None,
            Some(Refusal::All(code)) => Some(*code),
            Some(Refusal::Service(service, code)) => request
                .resource_spans
                .iter()
                .any(|rs| resource_service(rs) == Some(service.as_str()))
                .then_some(*code),
        };
        lock(&self.0.calls).push(Call {
            request,
            encoding,
            refused,
            metadata,
            at: std::time::Instant::now(),
        });
        if self.0.hang.load(std::sync::atomic::Ordering::Relaxed) {
            // Taken (and recorded), never answered.
            return std::future::pending().await;
        }
        match refused {
            Some(code) => Err(Status::new(code, "the test receiver was told to refuse")),
            None => Ok(Response::new(ExportTraceServiceResponse {
                partial_success: None,
            })),
        }
    }
}

/// The receiver; serves on 127.0.0.1 until dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
}

impl OtlpReceiver {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> OtlpReceiver {
        Self::start_on("127.0.0.1:0", None).await
    }

    /// Serves on `addr` (e.g. the address of an [`unused_endpoint`], for a collector that
    /// comes up late), refusing messages larger than `max_decoding` bytes with
    /// RESOURCE_EXHAUSTED as any gRPC server does (`None`: tonic's default, 4 MiB).
    pub async fn start_on(addr: &str, max_decoding: Option<usize>) -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let state = Arc::new(State::default());
        let mut service = TraceServiceServer::new(Service(Arc::clone(&state)))
            .accept_compressed(CompressionEncoding::Gzip);
        if let Some(max) = max_decoding {
            service = service.max_decoding_message_size(max);
        }
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("the OTLP receiver stopped with an error");
        });
        OtlpReceiver {
            addr,
            state,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call so far, refused ones included, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state.calls).clone()
    }

    /// The requests that were accepted.
    pub fn accepted(&self) -> Vec<ExportTraceServiceRequest> {
        self.calls()
            .into_iter()
            .filter(|c| c.refused.is_none())
            .map(|c| c.request)
            .collect()
    }

    /// Every `ResourceSpans` of the accepted requests.
    pub fn resource_spans(&self) -> Vec<ResourceSpans> {
        self.accepted()
            .into_iter()
            .flat_map(|r| r.resource_spans)
            .collect()
    }

    /// Every span that was accepted, with the `service.name` of its resource.
    pub fn spans(&self) -> Vec<(Option<String>, Span)> {
        self.resource_spans()
            .into_iter()
            .flat_map(|rs| {
                let service = resource_service(&rs).map(str::to_string);
                rs.scope_spans
                    .into_iter()
                    .flat_map(|ss| ss.spans)
                    .map(move |s| (service.clone(), s))
            })
            .collect()
    }

    /// Forgets what was received.
    pub fn clear(&self) {
        lock(&self.state.calls).clear();
    }

    /// Answers every later call with `code`.
    pub fn refuse_all(&self, code: Code) {
        *lock(&self.state.refusal) = Some(Refusal::All(code));
    }

    /// Answers later calls carrying a resource of `service` with `code`.
    pub fn refuse_service(&self, service: &str, code: Code) {
        *lock(&self.state.refusal) = Some(Refusal::Service(service.to_string(), code));
    }

    /// Accepts every later call again.
    pub fn accept_all(&self) {
        *lock(&self.state.refusal) = None;
    }

    /// Takes every later call, records it, and never answers it (a collector stuck behind a
    /// full queue).
    pub fn hang(&self) {
        self.state
            .hang
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An endpoint on 127.0.0.1 where nothing listens: a port that was free a moment ago.
pub fn unused_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("free port address");
    drop(listener);
    format!("http://{addr}")
}

/// A collector that accepts TCP connections and then never says a word (a hung process, a
/// black-holing proxy). Holds every connection open until the runtime ends.
pub async fn silent_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the silent collector");
    let addr = listener.local_addr().expect("silent collector address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("http://{addr}")
}

/// Export settings for a test: `endpoint`, spans of `cluster`, gzip, a 5 s timeout and no
/// retries (a test that wants retries says so).
pub fn export_settings(endpoint: String, cluster: &str) -> ExportSettings {
    ExportSettings {
        endpoint: Some(endpoint),
        cluster: cluster.into(),
        timeout: Some(Duration::from_secs(5)),
        gzip: Some(true),
        retries: 0,
    }
}

/// The value of attribute `key`.
pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The value of string attribute `key`.
pub fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// The `service.name` of a resource.
pub fn resource_service(rs: &ResourceSpans) -> Option<&str> {
    rs.resource
        .as_ref()
        .and_then(|r| attr_str(&r.attributes, "service.name"))
}

/// A span's attributes as sorted `key=value` lines: compares whole, and shows what differs.
pub fn sorted_attributes(s: &Span) -> Vec<String> {
    let mut attrs: Vec<String> = s
        .attributes
        .iter()
        .map(|kv| format!("{}={:?}", kv.key, kv.value))
        .collect();
    attrs.sort();
    attrs
}

/// Everything a received span says, as one comparable line (its id aside): trace, parent, name,
/// kind, service, times, status, attributes, events and links.
pub fn describe(service: &Option<String>, s: &Span) -> String {
    let events: Vec<String> = s
        .events
        .iter()
        .map(|e| {
            let attrs: Vec<String> = e
                .attributes
                .iter()
                .map(|kv| format!("{}={:?}", kv.key, kv.value))
                .collect();
            format!("{}@{} {attrs:?}", e.name, e.time_unix_nano)
        })
        .collect();
    let links: Vec<String> = s
        .links
        .iter()
        .map(|l| format!("{}/{}", hex::encode(&l.trace_id), hex::encode(&l.span_id)))
        .collect();
    format!(
        "trace={} parent={} name={:?} kind={} service={service:?} start={} end={} status={:?} \
         attrs={:?} events={events:?} links={links:?}",
        hex::encode(&s.trace_id),
        hex::encode(&s.parent_span_id),
        s.name,
        s.kind,
        s.start_time_unix_nano,
        s.end_time_unix_nano,
        s.status,
        sorted_attributes(s),
    )
}
