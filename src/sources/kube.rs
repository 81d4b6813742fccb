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
use kube::api::Api;
use kube::core::{ApiResource, DeserializeGuard};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::object::{self, KubeObject};
use crate::agent::EngineHandle;
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

/// A kind fluxtrace watches. The RBAC in `deploy/` grants exactly these (a test checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watched {
    /// API group (`""` for core).
    pub group: &'static str,
    pub kind: &'static str,
    /// Resource name, as RBAC rules name it.
    pub plural: &'static str,
    /// Versions in order of preference; the first one the cluster serves is used.
    pub versions: &'static [&'static str],
    /// Deployments and ReplicaSets take the workload label selector.
    pub workload: bool,
    /// Dropped rather than waited for when the engine is busy.
    pub lossy: bool,
}

const fn flux(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    versions: &'static [&'static str],
) -> Watched {
    Watched {
        group,
        kind,
        plural,
        versions,
        workload: false,
        lossy: false,
    }
}

/// Every kind the agent watches.
pub const WATCHED: &[Watched] = &[
    flux(
        "source.toolkit.fluxcd.io",
        "GitRepository",
        "gitrepositories",
        &["v1", "v1beta2"],
    ),
    flux(
        "source.toolkit.fluxcd.io",
        "OCIRepository",
        "ocirepositories",
        &["v1", "v1beta2"],
    ),
    flux(
        "source.toolkit.fluxcd.io",
        "HelmRepository",
        "helmrepositories",
        &["v1", "v1beta2"],
    ),
    flux(
        "source.toolkit.fluxcd.io",
        "HelmChart",
        "helmcharts",
        &["v1", "v1beta2"],
    ),
    flux(
        "source.toolkit.fluxcd.io",
        "Bucket",
        "buckets",
        &["v1", "v1beta2"],
    ),
    flux(
        "kustomize.toolkit.fluxcd.io",
        "Kustomization",
        "kustomizations",
        &["v1", "v1beta2"],
    ),
    flux(
        "helm.toolkit.fluxcd.io",
        "HelmRelease",
        "helmreleases",
        &["v2", "v2beta2", "v2beta1"],
    ),
    // For its status and targets: which webhook requested a reconcile.
    flux(
        "notification.toolkit.fluxcd.io",
        "Receiver",
        "receivers",
        &["v1", "v1beta2"],
    ),
    Watched {
        group: "apps",
        kind: "Deployment",
        plural: "deployments",
        versions: &["v1"],
        workload: true,
        lossy: false,
    },
    Watched {
        group: "apps",
        kind: "ReplicaSet",
        plural: "replicasets",
        versions: &["v1"],
        workload: true,
        lossy: false,
    },
    Watched {
        group: "",
        kind: "Event",
        plural: "events",
        versions: &["v1"],
        workload: false,
        lossy: true,
    },
];

/// What to watch.
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

/// Waits until the cluster serves `w` and returns its resource: a kind that is not installed is
/// skipped with one warning (`missing` is called then) and looked for again every
/// `rediscover`; discovery errors are retried with backoff. `None` once `stop` is cancelled.
pub(crate) async fn served(
    client: &Client,
    w: &Watched,
    rediscover: Duration,
    stop: &CancellationToken,
    missing: impl Fn(),
) -> Option<ApiResource> {
    let kind = w.kind;
    let mut warned = false;
    let mut backoff = Duration::from_millis(500);
    loop {
        let wait = match resolve(client, w).await {
            Ok(Some(ar)) => {
                if warned {
                    info!(message = "Kind is now served; watching it.", kind, version = %ar.version);
                }
                return Some(ar);
            }
            Ok(None) => {
                if !warned {
                    warn!(
                        message = "Kind is not served by this cluster; skipping it for now.",
                        kind,
                        group = w.group,
                        retry_in_s = rediscover.as_secs()
                    );
                    warned = true;
                }
                missing();
                rediscover
            }
            Err(e) => {
                warn!(message = "API discovery failed.", kind, error = %e);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                backoff
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The served version of a kind; `None` when the cluster does not serve it.
pub(crate) async fn resolve(
    client: &Client,
    w: &Watched,
) -> Result<Option<ApiResource>, kube::Error> {
    let group = match kube::discovery::group(client, w.group).await {
        Ok(g) => g,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
        Err(kube::Error::Discovery(
            kube::error::DiscoveryError::MissingApiGroup(_)
            | kube::error::DiscoveryError::EmptyApiGroup(_)
            | kube::error::DiscoveryError::MissingKind(_)
            | kube::error::DiscoveryError::MissingResource(_),
        )) => return Ok(None),
        Err(e) => return Err(e),
    };
    for v in w.versions {
        if let Some((ar, _)) = group
            .versioned_resources(v)
            .into_iter()
            .find(|(ar, _)| ar.kind == w.kind)
        {
            return Ok(Some(ar));
        }
    }
    Ok(None)
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
                warn!(message = "Watch failed; retrying with backoff.", kind, error = %e);
            }
        }
    }
    debug!(message = "Watcher stopped.", kind);
}

/// A watcher of `ar` (all namespaces, or one) with `.default_backoff()`, optionally narrowed by
/// a label selector: the agent and `record` watch alike.
pub(crate) fn watch_stream<K>(
    client: Client,
    ar: &ApiResource,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> futures::stream::BoxStream<'static, Result<Event<K>, watcher::Error>>
where
    K: kube::Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced_with(client, ns, ar),
        None => Api::all_with(client, ar),
    };
    let mut cfg = watcher::Config::default();
    if let Some(sel) = selector {
        cfg = cfg.labels(sel);
    }
    watcher::watcher(api, cfg).default_backoff().boxed()
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
                error = %invalid.error
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

/// The ClusterRole that grants exactly what the agent uses: get, list and watch on every kind of
/// [`WATCHED`], and [`crate::announce::EVENT_VERBS`] on core/v1 Events (the trace-link Events).
/// `deploy/rbac/clusterrole.yaml` is this text (a test checks it).
pub fn cluster_role_yaml() -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for w in WATCHED {
        match groups.iter_mut().find(|(g, _)| *g == w.group) {
            Some((_, r)) => r.push(w.plural),
            None => groups.push((w.group, vec![w.plural])),
        }
    }
    let mut out = String::from(
        "# Generated from src/sources/kube.rs (WATCHED): read-only access to exactly the kinds\n\
         # fluxtrace watches, and create/patch on core/v1 Events for the trace-link Events\n\
         # (src/announce.rs). Regenerate with: UPDATE_RBAC=1 cargo test --test rbac\n\
         apiVersion: rbac.authorization.k8s.io/v1\n\
         kind: ClusterRole\n\
         metadata:\n  name: fluxtrace\n  labels:\n    app.kubernetes.io/name: fluxtrace\n\
         rules:\n",
    );
    for (group, resources) in groups {
        out.push_str(&format!("  - apiGroups: [\"{group}\"]\n"));
        out.push_str(&format!(
            "    resources: [{}]\n",
            resources
                .iter()
                .map(|r| format!("\"{r}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str("    verbs: [\"get\", \"list\", \"watch\"]\n");
    }
    out.push_str("  - apiGroups: [\"\"]\n    resources: [\"events\"]\n");
    out.push_str(&format!(
        "    verbs: [{}]\n",
        crate::announce::EVENT_VERBS
            .iter()
            .map(|v| format!("\"{v}\""))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out
}
