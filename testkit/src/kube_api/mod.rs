//! An in-process Kubernetes API server for integration tests, fed by `fluxtrace replay` recordings.
//!
//! kube 5 has no in-memory fake API with watch support, so this is a small axum
//! server that kube's real HTTP client talks to (`Config::new("http://127.0.0.1:PORT")`). It
//! serves what a Flux watcher needs and nothing more:
//!
//! - discovery: `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}`, and the
//!   aggregated (apidiscovery.k8s.io/v2) form of `/api` and `/apis` when the client asks for it;
//! - LIST and GET of the served kinds, cluster-wide or in one namespace, with label selectors
//!   (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`), `metadata.name` and
//!   `metadata.namespace` field selectors (others are ignored), `limit`/`continue` pagination
//!   and metadata-only (`PartialObjectMetadata`) responses;
//! - WATCH from a resource version, replaying every change after it, with bookmarks, streaming
//!   lists (`sendInitialEvents`; a streaming list counts as a LIST for faults, raw items and
//!   [`ServerHandle::list_count`], and can be refused as a server without the `WatchList`
//!   feature does), `timeoutSeconds`, and `410 Expired` for versions older than the compaction
//!   point;
//! - writes (POST, PATCH, PUT, DELETE) anywhere are recorded and echoed (POST answers 201), so
//!   tests can assert on the core/v1 Events a component would write; like a real API server, a
//!   POST of an Event whose name was already created in that namespace answers `409
//!   AlreadyExists` (Events are remembered by name only, not stored or served).
//! - access reviews (`SelfSubjectAccessReview`, `SubjectAccessReview`), allowed unless a test
//!   denied the permission, and `/version` (see `access`).
//!
//! The server keeps one resource-version counter and stamps every object it stores with it; the
//! versions in the recording are overwritten. Objects are keyed by group and kind, not version,
//! so an object recorded as `source.toolkit.fluxcd.io/v1` is served under whatever version the
//! kind is configured for, with `apiVersion` rewritten. Objects are kept as the JSON they are
//! served as (see `store`), so that a cluster of a million objects fits in a test process.
//!
//! ```ignore
//! let server = KubeApi::with_recording(fluxtrace_testkit::recordings::example("oci-success.jsonl"))
//!     .serve_kind_at("OCIRepository", "v1beta2")
//!     .start()
//!     .await;
//! server.apply_initial();
//! let client = server.client();
//! // ... start a watcher, then:
//! server.apply_rest();
//! ```
//!
//! It runs on the caller's tokio runtime and stops when the handle is dropped.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxumState};
use axum::http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri};
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

mod access;
mod store;
mod writes;

use store::{
    bookmark_object, event_line, expired_status, list_body, object_event_line, present,
    watch_event, ObjectKey, Store, Stored, WatchEntry,
};

pub use access::VERSION;

// ---------------------------------------------------------------------------------------------
// Kinds
// ---------------------------------------------------------------------------------------------

/// One resource type the server can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindSpec {
    /// API group; `""` for core.
    pub group: String,
    /// Versions this kind is served at; the highest-priority one is the group's preferred.
    pub versions: Vec<String>,
    pub kind: String,
    /// Resource name: the plural (`ocirepositories`).
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    /// Subresources listed in discovery (`status`); writes to `status` are served for stored
    /// kinds.
    pub subresources: Vec<String>,
}

impl KindSpec {
    /// A namespaced kind with verbs get, list and watch and a `status` subresource.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str) -> KindSpec {
        KindSpec {
            group: group.to_string(),
            versions: vec![version.to_string()],
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_ascii_lowercase(),
            namespaced: true,
            verbs: ["get", "list", "watch"].map(String::from).to_vec(),
            subresources: vec!["status".to_string()],
        }
    }

    fn api_version(&self, version: &str) -> String {
        api_version(&self.group, version)
    }
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The kinds served unless a test changes them: apps/v1 Deployment and ReplicaSet, Flux's source
/// (v1), kustomize (v1), helm (v2), notification (v1, Receiver) and image automation (v1) kinds,
/// Flagger's Canary (v1beta1), core/v1 Event and
/// Pod, coordination/v1 Lease, and fluxtrace's Promotion (v1alpha1). Leases and Promotions are
/// created, updated, patched and deleted like the API server does (see `writes`).
pub fn default_kinds() -> Vec<KindSpec> {
    const SOURCE: &str = "source.toolkit.fluxcd.io";
    const IMAGE: &str = "image.toolkit.fluxcd.io";
    let mut event = KindSpec::new("", "v1", "Event", "events");
    event.verbs = ["create", "get", "list", "watch", "patch"]
        .map(String::from)
        .to_vec();
    event.subresources.clear();
    let mut promotion = KindSpec::new("fluxtrace.io", "v1alpha1", "Promotion", "promotions");
    promotion.verbs = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ]
    .map(String::from)
    .to_vec();
    let mut lease = KindSpec::new("coordination.k8s.io", "v1", "Lease", "leases");
    lease.verbs = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ]
    .map(String::from)
    .to_vec();
    lease.subresources.clear();
    vec![
        lease,
        KindSpec::new("apps", "v1", "Deployment", "deployments"),
        KindSpec::new("apps", "v1", "ReplicaSet", "replicasets"),
        KindSpec::new(SOURCE, "v1", "GitRepository", "gitrepositories"),
        KindSpec::new(SOURCE, "v1", "OCIRepository", "ocirepositories"),
        KindSpec::new(SOURCE, "v1", "HelmRepository", "helmrepositories"),
        KindSpec::new(SOURCE, "v1", "HelmChart", "helmcharts"),
        KindSpec::new(SOURCE, "v1", "Bucket", "buckets"),
        KindSpec::new(
            "kustomize.toolkit.fluxcd.io",
            "v1",
            "Kustomization",
            "kustomizations",
        ),
        KindSpec::new(
            "helm.toolkit.fluxcd.io",
            "v2",
            "HelmRelease",
            "helmreleases",
        ),
        KindSpec::new(
            "notification.toolkit.fluxcd.io",
            "v1",
            "Receiver",
            "receivers",
        ),
        KindSpec::new(IMAGE, "v1", "ImageRepository", "imagerepositories"),
        KindSpec::new(IMAGE, "v1", "ImagePolicy", "imagepolicies"),
        KindSpec::new(
            IMAGE,
            "v1",
            "ImageUpdateAutomation",
            "imageupdateautomations",
        ),
        KindSpec::new("flagger.app", "v1beta1", "Canary", "canaries"),
        event,
        KindSpec::new("", "v1", "Pod", "pods"),
        promotion,
    ]
}

/// Kubernetes version priority: GA above beta above alpha, higher numbers first.
fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    let (level, minor) = if tail.is_empty() {
        (3, 0)
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n.parse().unwrap_or(0))
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n.parse().unwrap_or(0))
    } else {
        return (0, 0, 0);
    };
    (level, major, minor)
}

// ---------------------------------------------------------------------------------------------
// Recordings
// ---------------------------------------------------------------------------------------------

/// One line of a recording.
#[derive(Clone, Debug)]
pub struct RecordedLine {
    /// 0-based line number in the recording (blank lines count but are never returned).
    pub index: usize,
    /// The line's `at` (RFC 3339).
    pub at: String,
    /// The line's `kind`: `watch`, `promotion`, `flux_event`, ...
    pub kind: String,
    /// The whole line.
    pub value: Value,
}

/// A parsed recording (JSON Lines, as `fluxtrace replay` reads it).
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub lines: Vec<RecordedLine>,
}

impl Recording {
    /// Parses JSON Lines; every non-blank line must be an object with string `at` and `kind`, and
    /// a `watch` line needs `type` and `object` with `apiVersion`, `kind` and `metadata.name`.
    pub fn parse(text: &str) -> Result<Recording, String> {
        let mut lines = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line)
                .map_err(|e| format!("recording line {}: {e}", index + 1))?;
            let field = |name: &str| {
                value
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| format!("recording line {}: no string `{name}`", index + 1))
            };
            let at = field("at")?;
            let kind = field("kind")?;
            if kind == "watch" {
                field("type")?;
                let object = value
                    .get("object")
                    .ok_or_else(|| format!("recording line {}: no `object`", index + 1))?;
                ObjectKey::of(object).map_err(|e| format!("recording line {}: {e}", index + 1))?;
            }
            lines.push(RecordedLine {
                index,
                at,
                kind,
                value,
            });
        }
        Ok(Recording { lines })
    }

    /// The `watch` lines, in order.
    pub fn watch_lines(&self) -> Vec<RecordedLine> {
        self.lines
            .iter()
            .filter(|l| l.kind == "watch")
            .cloned()
            .collect()
    }

    /// The lines that are not `watch` lines (promotions, Flux events, ...), in order.
    pub fn others(&self) -> Vec<RecordedLine> {
        self.lines
            .iter()
            .filter(|l| l.kind != "watch")
            .cloned()
            .collect()
    }

    /// The `at` of the first line: the time of the initial list.
    pub fn initial_at(&self) -> Option<&str> {
        self.lines.first().map(|l| l.at.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------------------------

/// Configures a server before it starts.
#[derive(Clone, Debug)]
pub struct KubeApi {
    kinds: Vec<KindSpec>,
    recording: Recording,
    bookmark_interval: Option<Duration>,
}

impl Default for KubeApi {
    fn default() -> Self {
        KubeApi::new()
    }
}

impl KubeApi {
    /// The default kinds, an empty recording, bookmarks every 2 s.
    pub fn new() -> KubeApi {
        KubeApi {
            kinds: default_kinds(),
            recording: Recording::default(),
            bookmark_interval: Some(Duration::from_secs(2)),
        }
    }

    /// `new()` fed by a recording; panics if the recording does not parse.
    pub fn with_recording(text: &str) -> KubeApi {
        KubeApi::new().recording(text)
    }

    /// Replaces the recording; panics if it does not parse.
    pub fn recording(mut self, text: &str) -> KubeApi {
        self.recording = Recording::parse(text).unwrap_or_else(|e| panic!("{e}"));
        self
    }

    /// Stops serving `kind` (a CRD that is not installed). Panics if it is not served.
    pub fn without_kind(mut self, kind: &str) -> KubeApi {
        let before = self.kinds.len();
        self.kinds.retain(|k| k.kind != kind);
        assert!(self.kinds.len() < before, "kind {kind} is not served");
        self
    }

    /// Stops serving every kind of `group`. Panics if nothing of it is served.
    pub fn without_group(mut self, group: &str) -> KubeApi {
        let before = self.kinds.len();
        self.kinds.retain(|k| k.group != group);
        assert!(self.kinds.len() < before, "group {group} is not served");
        self
    }

    /// Serves `kind` at `version` only (e.g. OCIRepository at `v1beta2`, as before
    /// source-controller v1.6.0). Panics if the kind is not served.
    pub fn serve_kind_at(mut self, kind: &str, version: &str) -> KubeApi {
        self.kind_mut(kind).versions = vec![version.to_string()];
        self
    }

    /// Serves `kind` at `version` as well as its other versions.
    pub fn also_serve_kind_at(mut self, kind: &str, version: &str) -> KubeApi {
        let spec = self.kind_mut(kind);
        if !spec.versions.iter().any(|v| v == version) {
            spec.versions.push(version.to_string());
        }
        self
    }

    /// Serves one more kind (or replaces the one with the same group and kind).
    pub fn with_kind(mut self, spec: KindSpec) -> KubeApi {
        self.kinds
            .retain(|k| !(k.group == spec.group && k.kind == spec.kind));
        self.kinds.push(spec);
        self
    }

    /// How often open watches that allow bookmarks get one; `None`: only on `send_bookmarks()`.
    pub fn bookmark_interval(mut self, interval: Option<Duration>) -> KubeApi {
        self.bookmark_interval = interval;
        self
    }

    fn kind_mut(&mut self, kind: &str) -> &mut KindSpec {
        self.kinds
            .iter_mut()
            .find(|k| k.kind == kind)
            .unwrap_or_else(|| panic!("kind {kind} is not served"))
    }

    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start(self) -> ServerHandle {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test kube API");
        let addr = listener.local_addr().expect("test kube API address");
        let shared = Arc::new(Shared {
            addr,
            kinds: self.kinds,
            recording: self.recording,
            state: Mutex::new(Store::default()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("the test kube API stopped with an error");
        });
        let bookmarks = self.bookmark_interval.map(|interval| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    shared.lock().send_bookmarks();
                }
            })
        });
        ServerHandle {
            shared,
            stop: Some(stop),
            server: Some(server),
            bookmarks,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// Every request the server saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Query parameters, decoded.
    pub query: BTreeMap<String, String>,
    /// A GET with `watch=true` or `watch=1`.
    pub watch: bool,
    pub accept: Option<String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl RequestRecord {
    /// A LIST: a GET without watch, or a streaming list (a watch with `sendInitialEvents`).
    pub fn is_list(&self) -> bool {
        self.method == "GET" && (!self.watch || is_true(&self.query, "sendInitialEvents"))
    }
}

/// A request that was not a GET.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteRecord {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    /// The body as JSON, or as a JSON string when it was not JSON.
    pub body: Value,
    /// The status the server answered with.
    pub status: u16,
}

/// What applying one change did.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The recording line it came from (`None` for `ServerHandle::apply`).
    pub index: Option<usize>,
    pub at: Option<String>,
    /// The event type the server derived from its store: `ADDED`, `MODIFIED` or `DELETED`.
    pub event_type: String,
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    /// The resource version the server gave it.
    pub resource_version: u64,
}

/// What the next LIST of a resource does instead of answering.
#[derive(Clone, Copy, Debug)]
enum ListFault {
    /// Answers with this status code and a `Status` body.
    Fail(u16),
    /// Sends nothing for this long, then answers normally.
    Hang(Duration),
}

struct Shared {
    addr: SocketAddr,
    kinds: Vec<KindSpec>,
    recording: Recording,
    state: Mutex<Store>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panicking test thread must not hide the server's state from the next assertion.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The kinds served at group/version, in table order.
    fn kinds_at<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a KindSpec> + 'a {
        self.kinds
            .iter()
            .filter(move |k| k.group == group && k.versions.iter().any(|v| v == version))
    }

    /// Non-core groups in table order, each with its versions, preferred first.
    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for spec in self.kinds.iter().filter(|k| !k.group.is_empty()) {
            let at = match groups.iter().position(|(g, _)| *g == spec.group) {
                Some(at) => at,
                None => {
                    groups.push((spec.group.clone(), Vec::new()));
                    groups.len() - 1
                }
            };
            for v in &spec.versions {
                if !groups[at].1.contains(v) {
                    groups[at].1.push(v.clone());
                }
            }
        }
        for (_, versions) in &mut groups {
            versions.sort_by_key(|v| Reverse(version_priority(v)));
        }
        groups
    }

    fn core_versions(&self) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        for spec in self.kinds.iter().filter(|k| k.group.is_empty()) {
            for v in &spec.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        versions.sort_by_key(|v| Reverse(version_priority(v)));
        versions
    }
}

// ---------------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A namespace, a label selector and the supported field selectors.
#[derive(Clone, Debug, Default)]
struct Filter {
    namespace: Option<String>,
    labels: Vec<Requirement>,
    fields: Vec<(String, String)>,
}

impl Filter {
    fn new(namespace: Option<&str>, query: &BTreeMap<String, String>) -> Result<Filter, String> {
        let labels = match query.get("labelSelector") {
            Some(s) => parse_label_selector(s)?,
            None => Vec::new(),
        };
        let fields = query
            .get("fieldSelector")
            .map(|s| {
                split_terms(s)
                    .into_iter()
                    .filter_map(|t| {
                        let (k, v) = t.split_once("==").or_else(|| t.split_once('='))?;
                        matches!(k.trim(), "metadata.name" | "metadata.namespace")
                            .then(|| (k.trim().to_string(), v.trim().to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Filter {
            namespace: namespace.map(str::to_string),
            labels,
            fields,
        })
    }

    /// Whether the object stored under `key` matches (its key holds its name and namespace).
    fn matches(&self, key: &ObjectKey, object: &Stored) -> bool {
        if let Some(ns) = &self.namespace {
            if key.namespace != *ns {
                return false;
            }
        }
        for (field, value) in &self.fields {
            let actual = match field.as_str() {
                "metadata.name" => &key.name,
                _ => &key.namespace,
            };
            if actual != value {
                return false;
            }
        }
        let label = |k: &str| object.label(k);
        self.labels.iter().all(|r| match r {
            Requirement::Eq(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => label(k) != Some(v.as_str()),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_label_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let set = |key: &str, values: &str| -> Result<(String, Vec<String>), String> {
        let values = values
            .trim()
            .strip_prefix('(')
            .and_then(|v| v.strip_suffix(')'))
            .ok_or_else(|| format!("invalid label selector {s:?}"))?;
        Ok((
            key.trim().to_string(),
            values.split(',').map(|v| v.trim().to_string()).collect(),
        ))
    };
    split_terms(s)
        .into_iter()
        .map(|term| {
            if let Some(key) = term.strip_prefix('!') {
                Ok(Requirement::NotExists(key.trim().to_string()))
            } else if let Some((k, v)) = term.split_once(" notin ") {
                let (k, vs) = set(k, v)?;
                Ok(Requirement::NotIn(k, vs))
            } else if let Some((k, v)) = term.split_once(" in ") {
                let (k, vs) = set(k, v)?;
                Ok(Requirement::In(k, vs))
            } else if let Some((k, v)) = term.split_once("!=") {
                Ok(Requirement::NotEq(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Ok(Requirement::Eq(k.trim().into(), v.trim().into()))
            } else if term.contains(|c: char| c.is_whitespace() || "()<>".contains(c)) {
                Err(format!("invalid label selector {s:?}"))
            } else {
                Ok(Requirement::Exists(term.to_string()))
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let body = serde_json::to_vec(body).expect("a JSON value serializes");
    json_bytes_response(status, body)
}

/// A response of JSON already serialized.
fn json_bytes_response(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("a valid response")
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {},
            "code": code.as_u16(),
        }),
    )
}

fn not_found() -> Response<Body> {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
    )
}

fn query_of(uri: &Uri) -> BTreeMap<String, String> {
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0.into_iter().collect())
        .unwrap_or_default()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn is_true(query: &BTreeMap<String, String>, name: &str) -> bool {
    matches!(query.get(name).map(String::as_str), Some("true" | "1"))
}

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = query_of(&parts.uri);
    let accept = header_str(&parts.headers, header::ACCEPT);
    let watch = parts.method == Method::GET && is_true(&query, "watch");
    shared.lock().requests.push(RequestRecord {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        watch,
        accept: accept.clone(),
        at: std::time::Instant::now(),
    });

    if parts.method != Method::GET {
        let bytes = axum::body::to_bytes(body, 64 << 20)
            .await
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let Some((status, answer)) = access::review(&shared, &segments, &body) {
            return json_response(status, &answer);
        }
        if let Some((status, answer)) = writes::write(&shared, &parts.method, &segments, &body) {
            shared.lock().writes.push(WriteRecord {
                method: parts.method.to_string(),
                path,
                query,
                content_type: header_str(&parts.headers, header::CONTENT_TYPE),
                body,
                status: status.as_u16(),
            });
            return json_response(status, &answer);
        }
        let mut store = shared.lock();
        let exists = match (parts.method == Method::POST, event_create(&path, &body)) {
            (true, Some(key)) => !store.created_events.insert(key),
            _ => false,
        };
        let status = if exists {
            StatusCode::CONFLICT
        } else if parts.method == Method::POST {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        store.writes.push(WriteRecord {
            method: parts.method.to_string(),
            path,
            query,
            content_type: header_str(&parts.headers, header::CONTENT_TYPE),
            body: body.clone(),
            status: status.as_u16(),
        });
        drop(store);
        if exists {
            let name = body["metadata"]["name"].as_str().unwrap_or_default();
            return json_response(
                status,
                &json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": format!("events \"{name}\" already exists"),
                    "reason": "AlreadyExists",
                    "details": {"name": name, "kind": "events"},
                    "code": 409,
                }),
            );
        }
        return json_response(status, &body);
    }

    // A streaming list is a LIST: it can be refused, and list faults apply to it.
    let streaming_list = watch && is_true(&query, "sendInitialEvents");
    if streaming_list && shared.lock().refuse_streaming_lists {
        return status_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
        );
    }
    if !watch || streaming_list {
        let fault = path
            .rsplit('/')
            .next()
            .and_then(|plural| shared.lock().list_faults.get_mut(plural)?.pop_front());
        match fault {
            Some(ListFault::Fail(code)) => {
                let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return status_response(code, "InternalError", "injected failure of this LIST");
            }
            Some(ListFault::Hang(d)) => tokio::time::sleep(d).await,
            None => {}
        }
    }
    let accept = accept.unwrap_or_default();
    let aggregated = accept.contains("as=APIGroupDiscoveryList");
    let metadata_only = accept.contains("as=PartialObjectMetadata");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["version"] => json_response(StatusCode::OK, &access::version()),
        ["api"] if aggregated => json_response(StatusCode::OK, &aggregated_core(&shared)),
        ["api"] => json_response(StatusCode::OK, &api_versions(&shared)),
        ["api", version] => resource_list(&shared, "", version),
        ["apis"] if aggregated => json_response(StatusCode::OK, &aggregated_groups(&shared)),
        ["apis"] => json_response(StatusCode::OK, &api_group_list(&shared)),
        ["apis", group] => match shared.groups().into_iter().find(|(g, _)| g == group) {
            Some((name, versions)) => json_response(StatusCode::OK, &api_group(&name, &versions)),
            None => not_found(),
        },
        ["apis", group, version] => resource_list(&shared, group, version),
        ["api", version, rest @ ..] => resource(&shared, "", version, rest, &query, metadata_only),
        ["apis", group, version, rest @ ..] => {
            resource(&shared, group, version, rest, &query, metadata_only)
        }
        _ => not_found(),
    }
}

/// (namespace, name) when a POST creates a named core/v1 or events.k8s.io/v1 Event.
fn event_create(path: &str, body: &Value) -> Option<(String, String)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ns = match segments.as_slice() {
        ["api", "v1", "namespaces", ns, "events"] => ns,
        ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] => ns,
        _ => return None,
    };
    let name = body["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())?;
    Some((ns.to_string(), name.to_string()))
}

// Discovery --------------------------------------------------------------------------------

fn api_versions(shared: &Shared) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": shared.core_versions(),
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}
        ],
    })
}

fn group_version(group: &str, version: &str) -> Value {
    json!({"groupVersion": api_version(group, version), "version": version})
}

fn api_group(name: &str, versions: &[String]) -> Value {
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": versions.iter().map(|v| group_version(name, v)).collect::<Vec<_>>(),
        "preferredVersion": group_version(name, &versions[0]),
    })
}

fn api_group_list(shared: &Shared) -> Value {
    let groups: Vec<Value> = shared
        .groups()
        .iter()
        .map(|(name, versions)| {
            let mut g = api_group(name, versions);
            if let Some(g) = g.as_object_mut() {
                g.remove("kind");
                g.remove("apiVersion");
            }
            g
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(shared: &Shared, group: &str, version: &str) -> Response<Body> {
    let mut resources = Vec::new();
    for spec in shared.kinds_at(group, version) {
        resources.push(json!({
            "name": spec.plural,
            "singularName": spec.singular,
            "namespaced": spec.namespaced,
            "kind": spec.kind,
            "verbs": spec.verbs,
        }));
        for sub in &spec.subresources {
            resources.push(json!({
                "name": format!("{}/{sub}", spec.plural),
                "singularName": "",
                "namespaced": spec.namespaced,
                "kind": spec.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return not_found();
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": api_version(group, version),
            "resources": resources,
        }),
    )
}

fn aggregated_group(shared: &Shared, name: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = shared
                .kinds_at(name, version)
                .map(|spec| {
                    let gvk = json!({"group": name, "version": version, "kind": spec.kind});
                    json!({
                        "resource": spec.plural,
                        "responseKind": gvk,
                        "scope": if spec.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": spec.singular,
                        "verbs": spec.verbs,
                        "subresources": spec.subresources.iter().map(|sub| json!({
                            "subresource": sub,
                            "responseKind": gvk,
                            "verbs": ["get", "patch", "update"],
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": name}, "versions": versions})
}

fn aggregated_list(items: Vec<Value>) -> Value {
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

fn aggregated_groups(shared: &Shared) -> Value {
    aggregated_list(
        shared
            .groups()
            .iter()
            .map(|(name, versions)| aggregated_group(shared, name, versions))
            .collect(),
    )
}

fn aggregated_core(shared: &Shared) -> Value {
    aggregated_list(vec![aggregated_group(shared, "", &shared.core_versions())])
}

// Objects ----------------------------------------------------------------------------------

fn resource(
    shared: &Shared,
    group: &str,
    version: &str,
    rest: &[&str],
    query: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Response<Body> {
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return not_found(),
    };
    let Some(spec) = shared.kinds_at(group, version).find(|k| k.plural == plural) else {
        return not_found();
    };
    if namespace.is_some() && !spec.namespaced {
        return not_found();
    }
    if let Some(name) = name {
        return get_one(shared, spec, version, namespace, name, metadata_only);
    }
    let filter = match Filter::new(namespace, query) {
        Ok(f) => f,
        Err(e) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    if is_true(query, "watch") {
        watch(shared, spec, version, filter, query, metadata_only)
    } else {
        list(shared, spec, version, &filter, query, metadata_only)
    }
}

fn get_one(
    shared: &Shared,
    spec: &KindSpec,
    version: &str,
    namespace: Option<&str>,
    name: &str,
    metadata_only: bool,
) -> Response<Body> {
    let key = ObjectKey {
        group: spec.group.clone(),
        kind: spec.kind.clone(),
        namespace: namespace.unwrap_or("").to_string(),
        name: name.to_string(),
    };
    let found = shared.lock().objects.get(&key).cloned();
    match found {
        Some(object) => json_bytes_response(
            StatusCode::OK,
            present(&object, &spec.group, version, metadata_only),
        ),
        None => {
            let what = if spec.group.is_empty() {
                spec.plural.clone()
            } else {
                format!("{}.{}", spec.plural, spec.group)
            };
            status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{what} \"{name}\" not found"),
            )
        }
    }
}

/// The `resourceVersion` parameter; a bad one is answered 400 Bad Request.
fn parse_rv(query: &BTreeMap<String, String>) -> Result<Option<u64>, Box<Response<Body>>> {
    match query.get("resourceVersion").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s.parse::<u64>().map(Some).map_err(|_| {
            Box::new(status_response(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("invalid resource version {s:?}"),
            ))
        }),
    }
}

fn list(
    shared: &Shared,
    spec: &KindSpec,
    version: &str,
    filter: &Filter,
    query: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Response<Body> {
    let requested = match parse_rv(query) {
        Ok(rv) => rv,
        Err(response) => return *response,
    };
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // A continue token is `{list rv}/{namespace}/{name}` of the last item sent.
    let after = match query.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(token) => {
            let mut parts = token.splitn(3, '/');
            match (
                parts.next().and_then(|rv| rv.parse::<u64>().ok()),
                parts.next(),
                parts.next(),
            ) {
                (Some(rv), Some(ns), Some(name)) => Some((rv, ns.to_string(), name.to_string())),
                _ => {
                    return status_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "invalid continue token",
                    )
                }
            }
        }
    };
    let store = shared.lock();
    if let Some((rv, _, _)) = &after {
        if *rv < store.compacted {
            return status_response(
                StatusCode::GONE,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result.",
            );
        }
    }
    // Without a match, or with NotOlderThan, any version is answered with the current state; an
    // Exact version older than the compaction point is gone.
    let exact = query.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
    if let Some(rv) = requested.filter(|rv| exact && *rv > 0 && *rv < store.compacted) {
        let status = expired_status(rv, store.compacted);
        return json_response(StatusCode::GONE, &status);
    }
    let list_rv = after.as_ref().map_or(store.rv, |(rv, _, _)| *rv);
    let mut items: Vec<(&ObjectKey, &Arc<Stored>)> = store
        .objects
        .iter()
        .filter(|(k, o)| k.group == spec.group && k.kind == spec.kind && filter.matches(k, o))
        .filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|(_, ns, name)| (&k.namespace, &k.name) > (ns, name))
        })
        .collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(limit) = limit {
        if items.len() > limit {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let (last, _) = items[limit - 1];
            metadata["continue"] = json!(format!("{list_rv}/{}/{}", last.namespace, last.name));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let (list_api_version, list_kind) = if metadata_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadataList".to_string(),
        )
    } else {
        (spec.api_version(version), format!("{}List", spec.kind))
    };
    let last_page = metadata.get("continue").is_none();
    let mut items: Vec<Bytes> = items
        .into_iter()
        .map(|(_, o)| present(o, &spec.group, version, metadata_only))
        .collect();
    if last_page {
        items.extend(raw_items(&store, &spec.kind));
    }
    drop(store);
    let body = list_body(&list_api_version, &list_kind, &metadata, &items);
    json_bytes_response(StatusCode::OK, body)
}

/// The raw items added to every LIST of `kind`, serialized.
fn raw_items<'a>(store: &'a Store, kind: &str) -> impl Iterator<Item = Bytes> + 'a {
    store
        .raw_items
        .get(kind)
        .into_iter()
        .flatten()
        .map(|item| Bytes::from(serde_json::to_vec(item).expect("a JSON value serializes")))
}

fn watch(
    shared: &Shared,
    spec: &KindSpec,
    version: &str,
    filter: Filter,
    query: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Response<Body> {
    let requested = match parse_rv(query) {
        Ok(rv) => rv,
        Err(response) => return *response,
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let mut entry = WatchEntry {
        group: spec.group.clone(),
        kind: spec.kind.clone(),
        version: version.to_string(),
        filter,
        bookmarks: is_true(query, "allowWatchBookmarks"),
        metadata_only,
        last_rv: 0,
        tx,
    };
    // The current state a watch starts with, as ADDED events (the stored objects' bytes, shared),
    // then the initial-events-end bookmark of a streaming list: written out as the client reads
    // them, not queued whole, since a kind can hold gigabytes.
    let mut initial: Vec<Bytes> = Vec::new();
    let mut initial_end = None;
    {
        let mut store = shared.lock();
        let initial_events = is_true(query, "sendInitialEvents");
        match requested {
            Some(rv) if rv > 0 && rv < store.compacted && !initial_events => {
                // Sent as the only event; the stream then ends, as the API server does.
                let event = json!({"type": "ERROR", "object": expired_status(rv, store.compacted)});
                entry.send(&event, rv);
                drop(entry);
            }
            Some(rv) if rv > 0 && !initial_events => {
                for change in store.history.iter().filter(|c| c.rv > rv) {
                    if let Some(line) = watch_event(&entry, change) {
                        entry.send_line(line, change.rv);
                    }
                }
                store.watches.push(entry);
            }
            _ => {
                // No version, "0", or a streaming list: the current state as ADDED events.
                let current = store.rv;
                initial = store
                    .objects
                    .iter()
                    .filter(|(k, o)| {
                        k.group == entry.group && k.kind == entry.kind && entry.filter.matches(k, o)
                    })
                    .map(|(_, o)| present(o, &entry.group, &entry.version, metadata_only))
                    .collect();
                if initial_events {
                    initial.extend(raw_items(&store, &spec.kind));
                    let object = bookmark_object(&entry, current, true);
                    initial_end = Some(event_line(&json!({"type": "BOOKMARK", "object": object})));
                }
                if !initial.is_empty() || initial_end.is_some() {
                    entry.last_rv = current;
                }
                store.watches.push(entry);
            }
        }
    }
    let initial = futures::stream::iter(
        initial
            .into_iter()
            .map(|object| object_event_line("ADDED", &object))
            .chain(initial_end)
            .map(Ok::<Bytes, std::convert::Infallible>),
    );
    let changes = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<Bytes, std::convert::Infallible>(line), rx))
    });
    let lines = initial.chain(changes);
    let body = match timeout {
        Some(timeout) => Body::from_stream(lines.take_until(Box::pin(tokio::time::sleep(timeout)))),
        None => Body::from_stream(lines),
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a valid response")
}

// ---------------------------------------------------------------------------------------------
// Handle
// ---------------------------------------------------------------------------------------------

/// A running server; stops when dropped.
pub struct ServerHandle {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    bookmarks: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The next `n` LISTs of `plural` (e.g. `deployments`) answer `code` instead.
    pub fn fail_lists(&self, plural: &str, code: u16, n: usize) {
        self.push_list_faults(plural, ListFault::Fail(code), n);
    }

    /// The next `n` LISTs of `plural` send nothing for `hang`, then answer.
    pub fn hang_lists(&self, plural: &str, hang: Duration, n: usize) {
        self.push_list_faults(plural, ListFault::Hang(hang), n);
    }

    /// Writes to stored kinds (everything but core/v1 Events) answer `code` while it is set:
    /// an API server that cannot write.
    /// Access reviews of `verb` on `resource` (`promotions/status` for a subresource) of
    /// `group` (`""` for core) answer "denied" from now on; every other is allowed.
    pub fn deny(&self, verb: &str, group: &str, resource: &str) {
        let p = (verb.to_string(), group.to_string(), resource.to_string());
        self.shared.lock().denied.insert(p);
    }

    /// Every access review received, as posted.
    pub fn access_reviews(&self) -> Vec<Value> {
        self.shared.lock().reviews.clone()
    }

    pub fn fail_writes(&self, code: Option<u16>) {
        self.shared.lock().fail_writes = code.and_then(|c| StatusCode::from_u16(c).ok());
    }

    /// Whether watches with `sendInitialEvents` are refused with `422 Invalid`, as by an API
    /// server older than 1.27 or with the `WatchList` feature off.
    pub fn refuse_streaming_lists(&self, refuse: bool) {
        self.shared.lock().refuse_streaming_lists = refuse;
    }

    /// Answers every LIST normally again.
    pub fn clear_list_faults(&self) {
        self.shared.lock().list_faults.clear();
    }

    fn push_list_faults(&self, plural: &str, fault: ListFault, n: usize) {
        let mut store = self.shared.lock();
        let queue = store.list_faults.entry(plural.to_string()).or_default();
        queue.extend(std::iter::repeat_n(fault, n));
    }

    /// Adds `item` as it is to every LIST of `kind` from now on (streaming lists included, not
    /// to other watches): an object
    /// the API server holds but a client may not decode.
    pub fn add_raw_list_item(&self, kind: &str, item: Value) {
        let mut store = self.shared.lock();
        store
            .raw_items
            .entry(kind.to_string())
            .or_default()
            .push(item);
    }

    /// The client and address as the agent's watchers take them.
    pub fn api_server(&self) -> fluxtrace::cluster::ApiServer {
        fluxtrace::cluster::ApiServer::new(self.client(), self.url())
    }

    /// A kube client for this server (`Config::new(url)`, default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let uri: Uri = self.url().parse().expect("the server URL parses");
        kube::Client::try_from(kube::Config::new(uri)).expect("a kube client for the test API")
    }

    /// Writes a kubeconfig for this server (no credentials) to a temporary file named after
    /// `tag` and this process, for the `fluxtrace` binary; returns its path.
    pub fn kubeconfig(&self, tag: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("fluxtrace-kubeconfig-{}-{tag}", std::process::id()));
        let url = self.url();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             current-context: test\nusers:\n- name: test\n  user: {{}}\n"
        );
        std::fs::write(&path, text).expect("kubeconfig");
        path
    }

    /// The kinds being served.
    pub fn kinds(&self) -> &[KindSpec] {
        &self.shared.kinds
    }

    /// The recording the server was fed.
    pub fn recording(&self) -> &Recording {
        &self.shared.recording
    }

    /// The recording's non-watch lines with their line numbers, for a test to post elsewhere
    /// (`apply_until(line.index)` first, to get the timing right).
    pub fn others(&self) -> Vec<RecordedLine> {
        self.shared.recording.others()
    }

    /// Applies recording lines from the cursor while `take` says so; skips non-watch lines.
    fn apply_while(&self, mut take: impl FnMut(&RecordedLine, usize) -> bool) -> Vec<Applied> {
        let lines = &self.shared.recording.lines;
        let mut store = self.shared.lock();
        let mut applied = Vec::new();
        while let Some(line) = lines.get(store.cursor) {
            if line.kind == "watch" && !take(line, applied.len()) {
                break;
            }
            store.cursor += 1;
            if line.kind != "watch" {
                continue;
            }
            let event_type = line.value["type"].as_str().unwrap_or_default();
            let object = line.value["object"].clone();
            let mut done = store
                .apply(event_type, object)
                .expect("watch lines were checked when parsed");
            done.index = Some(line.index);
            done.at = Some(line.at.clone());
            applied.push(done);
        }
        applied
    }

    /// Applies the initial list: every watch line at the recording's first timestamp.
    pub fn apply_initial(&self) -> Vec<Applied> {
        let Some(first) = self.shared.recording.initial_at().map(str::to_string) else {
            return Vec::new();
        };
        self.apply_while(|line, _| line.at == first)
    }

    /// Applies the next watch line, if any.
    pub fn apply_next(&self) -> Option<Applied> {
        self.apply_while(|_, done| done < 1).pop()
    }

    /// Applies the next `n` watch lines (fewer if the recording ends).
    pub fn apply_next_n(&self, n: usize) -> Vec<Applied> {
        self.apply_while(|_, done| done < n)
    }

    /// Applies the watch lines before recording line `index` (0-based).
    pub fn apply_until(&self, index: usize) -> Vec<Applied> {
        self.apply_while(|line, _| line.index < index)
    }

    /// Applies the watch lines whose `at` is not after `at` (same RFC 3339 form as the recording).
    pub fn apply_through_at(&self, at: &str) -> Vec<Applied> {
        self.apply_while(|line, _| line.at.as_str() <= at)
    }

    /// Applies every remaining watch line.
    pub fn apply_rest(&self) -> Vec<Applied> {
        self.apply_while(|_, _| true)
    }

    /// How many watch lines are still to be applied.
    pub fn remaining(&self) -> usize {
        let cursor = self.shared.lock().cursor;
        self.shared.recording.lines[cursor.min(self.shared.recording.lines.len())..]
            .iter()
            .filter(|l| l.kind == "watch")
            .count()
    }

    /// Applies a change that is not in the recording (`ADDED`, `MODIFIED` or `DELETED`; the type
    /// sent to watches follows the store, as with recording lines). Panics on an object without
    /// apiVersion, kind or metadata.name.
    pub fn apply(&self, event_type: &str, object: Value) -> Applied {
        self.shared
            .lock()
            .apply(event_type, object)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the recording over, as if the same delivery were observed again (a test device for
    /// an agent restart): the stored objects, their history and the open watches are dropped,
    /// the cursor goes back to the first line, resource versions keep counting up (older ones
    /// get 410 Expired). Requests, writes and the Events created so far are kept, so a second
    /// agent meets the Events the first one wrote.
    pub fn rewind(&self) {
        let mut store = self.shared.lock();
        store.objects.clear();
        store.history.clear();
        store.watches.clear();
        store.cursor = 0;
        store.compact();
    }

    /// Ends every open watch response; clients see the stream end. Returns how many there were.
    pub fn drop_watches(&self) -> usize {
        let mut store = self.shared.lock();
        let open = store.watches.iter().filter(|w| !w.tx.is_closed()).count();
        store.watches.clear();
        open
    }

    /// Compacts (see `compact`) and ends every open watch with a `410 Expired` ERROR event, as
    /// the API server does when a watcher falls too far behind. Returns how many there were.
    pub fn expire_watches(&self) -> usize {
        let mut store = self.shared.lock();
        store.expire_watches()
    }

    /// Applies the watch lines before recording line `index` (0-based) as if every watch were
    /// down meanwhile: no watch is sent them; then history is compacted past them and the open
    /// watches end with `410 Expired`, so clients re-list and see only the objects' last state.
    /// Returns how many watches were ended.
    pub fn apply_until_while_watches_down(&self, index: usize) -> usize {
        let lines = &self.shared.recording.lines;
        let mut store = self.shared.lock();
        let watches = std::mem::take(&mut store.watches);
        while let Some(line) = lines.get(store.cursor).filter(|l| l.index < index) {
            store.cursor += 1;
            if line.kind == "watch" {
                let event_type = line.value["type"].as_str().unwrap_or_default();
                store
                    .apply(event_type, line.value["object"].clone())
                    .expect("watch lines were checked when parsed");
            }
        }
        store.watches = watches;
        store.expire_watches()
    }

    /// Deletes an object as if that happened while every watch was down: no watch is sent the
    /// DELETED event; history is compacted past it and open watches end with `410 Expired`, so
    /// clients re-list and find it missing. Returns how many watches were ended.
    pub fn delete_while_watches_down(&self, kind: &str, namespace: &str, name: &str) -> usize {
        let mut store = self.shared.lock();
        let before = store.objects.len();
        store
            .objects
            .retain(|k, _| !(k.kind == kind && k.namespace == namespace && k.name == name));
        assert_eq!(
            store.objects.len() + 1,
            before,
            "{kind} {namespace}/{name} was stored"
        );
        store.expire_watches()
    }

    /// Gives out one more resource version (as a write elsewhere would) and compacts there: a
    /// watch from any version handed out before gets 410 Expired; open watches carry on (a
    /// bookmark moves a client past the compaction point). Returns the new compaction point.
    pub fn compact(&self) -> u64 {
        self.shared.lock().compact()
    }

    /// Sets the compaction point to `rv` (it never moves back): watches from older versions get
    /// 410 Expired.
    pub fn compact_to(&self, rv: u64) {
        self.shared.lock().compact_to(rv);
    }

    /// Sends a bookmark at the current version to every open watch that allows them.
    pub fn send_bookmarks(&self) -> usize {
        self.shared.lock().send_bookmarks()
    }

    /// The current resource version (the last one given out; 0 before any change).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// The compaction point.
    pub fn compacted(&self) -> u64 {
        self.shared.lock().compacted
    }

    /// The stored objects of `kind` (any group), as stored (recorded apiVersion, server's
    /// resourceVersion), ordered by namespace and name.
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        self.shared
            .lock()
            .objects
            .iter()
            .filter(|(k, _)| k.kind == kind)
            .map(|(_, o)| o.value())
            .collect()
    }

    /// Watch responses still open (whose client has not gone away).
    pub fn open_watches(&self) -> usize {
        let mut store = self.shared.lock();
        store.watches.retain(|w| !w.tx.is_closed());
        store.watches.len()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Requests of any method to exactly `path` (no query).
    pub fn request_count(&self, path: &str) -> usize {
        self.count(|r| r.path == path)
    }

    /// LIST requests to `path`: GETs without watch and streaming lists
    /// ([`RequestRecord::is_list`]).
    pub fn list_count(&self, path: &str) -> usize {
        self.count(|r| r.path == path && r.is_list())
    }

    /// WATCH requests to `path`.
    pub fn watch_count(&self, path: &str) -> usize {
        self.count(|r| r.path == path && r.watch)
    }

    fn count(&self, f: impl Fn(&RequestRecord) -> bool) -> usize {
        self.shared.lock().requests.iter().filter(|r| f(r)).count()
    }

    /// Every non-GET request, in arrival order.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.shared.lock().writes.clone()
    }

    /// Waits up to `timeout` for `condition` to hold; returns whether it did.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&ServerHandle) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits up to `timeout` for at least `n` open watches.
    pub async fn wait_for_watches(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| s.open_watches() >= n).await
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shared.lock().watches.clear();
        if let Some(bookmarks) = self.bookmarks.take() {
            bookmarks.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Graceful shutdown lets idle keep-alive connections close; the task ends on its own.
        drop(self.server.take());
    }
}

/// Counts requests by path; handy in assertion messages.
pub fn paths_histogram(requests: &[RequestRecord]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in requests {
        *counts.entry(r.path.clone()).or_insert(0) += 1;
    }
    counts
}
