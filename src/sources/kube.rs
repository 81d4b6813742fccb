//! Kubernetes watchers: list and watch every followed kind through kube's client
//! (`Config::infer`: in-cluster or kubeconfig), decode each object with [`super::object`] (the
//! decoding replay uses) and feed the engine.
//!
//! - Flux kinds: the served version is discovered (v1 or the older betas); a kind that is not
//!   installed is skipped with one warning and looked for again later, never fatal.
//! - Every watcher reads a [`KindWatch`]: it never ends on an error, backs off (growing, with
//!   jitter) while the API server fails, times out a LIST that hangs, and re-lists after a
//!   restart (the engine is idempotent). An object that fails to decode, even one whose metadata
//!   does not, is skipped and counted; the rest of its list goes on. Failures are logged with the
//!   kind and the server, at most once per 30 s with a count of the ones left out.
//! - No reflector: nothing keeps whole objects. Observations of objects go to the engine with
//!   back-pressure; core/v1 Events are dropped (and counted) when the engine queue is full,
//!   except those of an initial list or re-list: a streaming list sends a whole kind as fast as
//!   the connection goes, and what it lists is the state the engine starts from.
//! - `/readyz` waits for every watcher's initial list.

use std::collections::HashSet;
use std::time::Duration;

use kube::core::ApiResource;
use kube::runtime::watcher::Event;
use kube::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::object::{self, KubeObject};
use crate::admin::watch_part;
use crate::agent::EngineHandle;
use crate::cluster::{
    bounded, served, ApiServer, KindWatch, Lenient, ListMode, RepeatedWarning, WatchFailure,
};
pub use crate::cluster::{cluster_role_yaml, Watched, WATCHED};
use crate::metrics::{KindError, KindLabel};
use crate::model::{object_key_hash, DeliveryEvent, EventBody, Kind, RelistObs};

#[derive(Clone, Debug, Default)]
pub struct WatchSettings {
    /// Namespaces to watch; all when empty.
    pub namespaces: Vec<String>,
    /// Label selector for Deployments and ReplicaSets.
    pub workload_selector: Option<String>,
    /// How often a kind that is not installed is looked for again.
    pub rediscover: Option<Duration>,
    /// The API server's address for log lines.
    pub server_url: Option<String>,
    /// How long a LIST may go without an answer; [`ApiServer::DEFAULT_LIST_TIMEOUT`] if unset.
    pub list_timeout: Option<Duration>,
    /// How the watchers list first (streaming where served, by default).
    pub lists: ListMode,
}

/// Starts one watcher per kind (and namespace) in `set` on `client` (`cluster::ApiServer`
/// infers it in the agent; tests point it at a test API server). Each task runs until `stop`
/// is cancelled.
pub fn spawn_with_client(
    set: &mut JoinSet<()>,
    client: Client,
    settings: WatchSettings,
    handle: EngineHandle,
    stop: CancellationToken,
) {
    let server = ApiServer::new(
        client,
        settings
            .server_url
            .clone()
            .unwrap_or_else(|| "the API server".to_string()),
    )
    .with_list_timeout(
        settings
            .list_timeout
            .unwrap_or(ApiServer::DEFAULT_LIST_TIMEOUT),
    )
    .with_lists(settings.lists);
    let namespaces: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    for w in WATCHED {
        for ns in &namespaces {
            let name = watch_part(w.kind, ns.as_deref());
            handle.readiness.register(name.clone());
            let selector = settings.workload_selector.clone().filter(|_| w.workload);
            set.spawn(watch_kind(
                server.clone(),
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
    server: ApiServer,
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
    let Some(ar) = served(&server, &w, rediscover, &stop, || {
        handle.readiness.set(&name, true)
    })
    .await
    else {
        return;
    };
    handle.readiness.set(&name, false);
    let mut stream =
        KindWatch::<KubeObject>::new(&server, &ar, namespace.as_deref(), selector.as_deref());
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
                    // Before the list's first object is queued: the engine pauses for it.
                    handle.readiness.relist_began(&name);
                }
                if relisted_kind.is_some() {
                    listing = Some(HashSet::new());
                }
            }
            Ok(Event::InitApply(obj)) => {
                if let (Some(l), Some((ns, name))) = (listing.as_mut(), obj.key()) {
                    l.insert(object_key_hash(&ns, &name));
                }
                if !deliver(&handle, &w, &ar, obj, Delivery::Listed).await {
                    break;
                }
            }
            Ok(Event::Apply(obj)) => {
                if !deliver(&handle, &w, &ar, obj, Delivery::Changed).await {
                    break;
                }
            }
            Ok(Event::Delete(obj)) => {
                if !deliver(&handle, &w, &ar, obj, Delivery::Deleted).await {
                    break;
                }
            }
            Ok(Event::InitDone) => {
                listed_once = true;
                if let (Some(k), Some(present)) = (relisted_kind, listing.take()) {
                    // The engine marks this watcher listed when it applies this, behind every
                    // object the list delivered (`agent::engine_loop`): the start-up hold
                    // cannot end while what was listed is still queued.
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
                } else {
                    handle.readiness.set(&name, true);
                    handle.readiness.relist_done(&name);
                }
            }
            Err(e) => {
                handle
                    .metrics
                    .watch_restarts
                    .get_or_create(&KindLabel { kind })
                    .inc();
                if let Some(suppressed) = failures.due() {
                    let message = match e {
                        WatchFailure::ListTimeout(_) => "LIST got no answer; listing again.",
                        WatchFailure::Api(_) => "Watch failed; retrying with backoff.",
                    };
                    warn!(
                        message,
                        kind,
                        server = %server.url,
                        error = %e,
                        retry_in_ms = stream.retry_in().unwrap_or_default().as_millis() as u64,
                        similar_since_last = suppressed
                    );
                }
            }
        }
    }
    debug!(message = "Watcher stopped.", kind);
}

/// How an object came.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// In an initial list or a re-list.
    Listed,
    Changed,
    Deleted,
}

/// Decodes and queues one object. `false` once the engine has stopped.
async fn deliver(
    handle: &EngineHandle,
    w: &Watched,
    ar: &ApiResource,
    obj: Lenient<KubeObject>,
    how: Delivery,
) -> bool {
    let deleted = how == Delivery::Deleted;
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
                error = %bounded(&invalid.error)
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
    if how != Delivery::Listed && (w.lossy || matches!(ev.body, EventBody::KubeEvent(_))) {
        handle.offer(ev);
        true
    } else {
        handle.submit(ev).await.is_ok()
    }
}
