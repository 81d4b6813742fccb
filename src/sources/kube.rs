//! Kubernetes watchers: list and watch every followed kind through kube's client
//! (`Config::infer`: in-cluster or kubeconfig), decode each object with [`super::object`] (the
//! decoding replay uses) and feed the engine.
//!
//! - Flux kinds: the served version is discovered (v1 or the older betas); a kind that is not
//!   installed is skipped with one warning and looked for again later, never fatal.
//! - Every watcher uses `.default_backoff()` and never ends on an error; a restart re-lists
//!   (the engine is idempotent), and an object that fails to decode is skipped and counted
//!   (`DeserializeGuard`).
//! - No reflector: nothing keeps whole objects. Observations of objects go to the engine with
//!   back-pressure; core/v1 Events are dropped (and counted) when the engine queue is full.
//! - `/readyz` waits for every watcher's initial list.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use kube::core::{ApiResource, DeserializeGuard};
use kube::runtime::watcher::Event;
use kube::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::object::{self, KubeObject};
use crate::agent::EngineHandle;
pub use crate::cluster::{cluster_role_yaml, Watched, WATCHED};
use crate::cluster::{served, watch_stream};
use crate::metrics::{KindError, KindLabel};
use crate::model::{object_key_hash, DeliveryEvent, EventBody, Kind, RelistObs};

/// Why the watchers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Config(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

impl WatchError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            WatchError::Config(_) => "config",
            WatchError::Client(_) => "client",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct WatchSettings {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    /// Label selector for Deployments and ReplicaSets.
    pub workload_selector: Option<String>,
    /// How often a kind that is not installed is looked for again.
    pub rediscover: Option<Duration>,
}

/// Starts one watcher per kind (and namespace) in `set`, with the client `Config::infer`
/// finds. Each task runs until `stop` is cancelled.
pub async fn spawn(
    set: &mut JoinSet<()>,
    settings: WatchSettings,
    handle: EngineHandle,
    stop: CancellationToken,
) -> Result<(), WatchError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| WatchError::Config(e.to_string()))?;
    let client = Client::try_from(config).map_err(WatchError::Client)?;
    spawn_with_client(set, client, settings, handle, stop);
    Ok(())
}

/// Like [`spawn`], with a given client (tests point it at a test API server).
pub fn spawn_with_client(
    set: &mut JoinSet<()>,
    client: Client,
    settings: WatchSettings,
    handle: EngineHandle,
    stop: CancellationToken,
) {
    let namespaces: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    for w in WATCHED {
        for ns in &namespaces {
            let name = match ns {
                Some(ns) => format!("watch/{}/{ns}", w.kind),
                None => format!("watch/{}", w.kind),
            };
            handle.readiness.register(name.clone());
            let selector = settings.workload_selector.clone().filter(|_| w.workload);
            set.spawn(watch_kind(
                client.clone(),
                *w,
                ns.clone(),
                selector,
                name,
                settings.rediscover.unwrap_or(Duration::from_secs(300)),
                handle.clone(),
                stop.clone(),
            ));
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn watch_kind(
    client: Client,
    w: Watched,
    namespace: Option<String>,
    selector: Option<String>,
    name: String,
    rediscover: Duration,
    handle: EngineHandle,
    stop: CancellationToken,
) {
    let kind = w.kind;
    // A kind that is not installed must not keep the agent unready while it is missing.
    let Some(ar) = served(&client, &w, rediscover, &stop, || {
        handle.readiness.set(&name, true)
    })
    .await
    else {
        return;
    };
    handle.readiness.set(&name, false);
    let mut stream = watch_stream::<DeserializeGuard<KubeObject>>(
        client,
        &ar,
        namespace.as_deref(),
        selector.as_deref(),
    );
    let mut listed_once = false;
    // While a (re-)list is in progress: hashes of what it delivered. At its end the engine
    // forgets objects of this kind the list left out (deleted while the watch was down). Core/v1
    // Events are never forgotten by name: the engine de-duplicates and ages them.
    let relisted_kind = Kind::parse(kind);
    let mut listing: Option<HashSet<u64>> = None;
    let mut failures = RepeatedWarning::default();
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            n = stream.next() => n,
        };
        let Some(item) = next else {
            break;
        };
        match item {
            Ok(Event::Init) => {
                if listed_once {
                    handle
                        .metrics
                        .watch_restarts
                        .get_or_create(&KindLabel { kind })
                        .inc();
                    debug!(message = "Watch restarted; re-listing.", kind);
                }
                if relisted_kind.is_some() {
                    listing = Some(HashSet::new());
                }
            }
            Ok(Event::InitApply(obj)) => {
                if let (Some(l), Some((ns, name))) = (listing.as_mut(), key_of(&obj)) {
                    l.insert(object_key_hash(&ns, &name));
                }
                if !deliver(&handle, &w, &ar, obj, false).await {
                    break;
                }
            }
            Ok(Event::Apply(obj)) => {
                if !deliver(&handle, &w, &ar, obj, false).await {
                    break;
                }
            }
            Ok(Event::Delete(obj)) => {
                if !deliver(&handle, &w, &ar, obj, true).await {
                    break;
                }
            }
            Ok(Event::InitDone) => {
                listed_once = true;
                if let (Some(k), Some(present)) = (relisted_kind, listing.take()) {
                    let ev = DeliveryEvent {
                        at: handle.now(),
                        body: EventBody::Relisted(RelistObs {
                            kind: k,
                            namespace: namespace.clone(),
                            present,
                        }),
                    };
                    if handle.submit(ev).await.is_err() {
                        break;
                    }
                }
                handle.readiness.set(&name, true);
            }
            Err(e) => {
                handle
                    .metrics
                    .watch_restarts
                    .get_or_create(&KindLabel { kind })
                    .inc();
                if let Some(suppressed) = failures.due() {
                    warn!(
                        message = "Watch failed; retrying with backoff.",
                        kind,
                        error = %bounded(&e.to_string()),
                        similar_since_last = suppressed
                    );
                }
            }
        }
    }
    debug!(message = "Watcher stopped.", kind);
}

/// A warning repeated by a failing watch: the first is logged, then at most one every
/// [`RepeatedWarning::EVERY`] with how many were left out, so that an API server failing
/// every second cannot flood the log.
#[derive(Default)]
struct RepeatedWarning {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RepeatedWarning {
    const EVERY: Duration = Duration::from_secs(30);

    /// `Some(left out since the last)` when this one is to be logged.
    fn due(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// An error message cut to 300 characters: an API error can quote a whole response body,
/// objects included, and object bodies never go to the log.
fn bounded(message: &str) -> String {
    const MAX: usize = 300;
    match message.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}… ({} bytes left out)", &message[..i], message.len() - i),
        None => message.to_string(),
    }
}

/// Namespace and name of a watched object, decodable or not.
fn key_of(obj: &DeserializeGuard<KubeObject>) -> Option<(String, String)> {
    let meta = match &obj.0 {
        Ok(o) => kube::Resource::meta(o),
        Err(invalid) => &invalid.metadata,
    };
    Some((
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone()?,
    ))
}

/// Decodes and queues one object. `false` once the engine has stopped.
async fn deliver(
    handle: &EngineHandle,
    w: &Watched,
    ar: &ApiResource,
    obj: DeserializeGuard<KubeObject>,
    deleted: bool,
) -> bool {
    let kind = w.kind;
    let obj = match obj.0 {
        Ok(o) => o.with_type(&ar.api_version, &ar.kind),
        Err(invalid) => {
            handle
                .metrics
                .decode_errors
                .get_or_create(&KindError {
                    kind,
                    error_type: "invalid_object",
                })
                .inc();
            warn!(
                message = "Object does not decode; skipped.",
                kind,
                name = invalid.metadata.name.as_deref().unwrap_or(""),
                namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
                error = %bounded(&invalid.error.to_string())
            );
            return true;
        }
    };
    let body = match object::to_event(obj, deleted) {
        Ok(Some(b)) => b,
        Ok(None) => return true,
        Err(e) => {
            handle
                .metrics
                .decode_errors
                .get_or_create(&KindError {
                    kind,
                    error_type: e.metric_label(),
                })
                .inc();
            warn!(message = "Object skipped.", kind, error = %e);
            return true;
        }
    };
    let ev = DeliveryEvent {
        at: handle.now(),
        body,
    };
    if w.lossy || matches!(ev.body, EventBody::KubeEvent(_)) {
        handle.offer(ev);
        true
    } else {
        handle.submit(ev).await.is_ok()
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;

    #[test]
    fn repeated_warnings_are_logged_once_per_interval_with_a_count() {
        let mut w = RepeatedWarning::default();
        assert_eq!(w.due(), Some(0), "the first is logged");
        for _ in 0..18 {
            assert_eq!(w.due(), None);
        }
        w.last = w.last.map(|t| t - RepeatedWarning::EVERY);
        assert_eq!(
            w.due(),
            Some(18),
            "then one line says how many were left out"
        );
    }

    #[test]
    fn long_error_messages_are_cut() {
        let body = format!(
            "Error deserializing response: {}",
            "{\"kind\":\"x\"}".repeat(1000)
        );
        let cut = bounded(&body);
        assert!(cut.chars().count() < 400, "{cut}");
        assert!(cut.ends_with("bytes left out)"));
        assert_eq!(bounded("short"), "short");
    }
}
