//! The Kubernetes side every component shares: which kinds fluxtrace watches ([`WATCHED`]), how
//! the served version of each is discovered ([`served`]), the resilient watch the agent and
//! `record` both read ([`KindWatch`], over [`Lenient`] objects), and the read-only ClusterRole
//! generated from the table ([`cluster_role_yaml`]).
//!
//! Depends only on kube and the Promotion resource's names: the agent's watchers
//! (`sources::kube`), `record` and `announce` use it without depending on each other.

mod lenient;
mod watch;

use std::time::Duration;

use kube::core::ApiResource;
use kube::runtime::watcher::DefaultBackoff;
use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use lenient::{Invalid, Lenient};
pub use watch::{
    bounded, describe, ApiServer, ConnectError, KindWatch, ListMode, RepeatedWarning, WatchFailure,
};

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
    /// Deployments, DaemonSets and ReplicaSets take the workload label selector.
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
        "source.toolkit.fluxcd.io",
        "ExternalArtifact",
        "externalartifacts",
        &["v1"],
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
    // Flux image automation: the image a policy selected and the commit an automation pushed.
    flux(
        "image.toolkit.fluxcd.io",
        "ImageRepository",
        "imagerepositories",
        &["v1", "v1beta2"],
    ),
    flux(
        "image.toolkit.fluxcd.io",
        "ImagePolicy",
        "imagepolicies",
        &["v1", "v1beta2"],
    ),
    flux(
        "image.toolkit.fluxcd.io",
        "ImageUpdateAutomation",
        "imageupdateautomations",
        &["v1", "v1beta2"],
    ),
    // Flagger: a canary analysis is the data-plane truth of a promotion that changed its target.
    flux("flagger.app", "Canary", "canaries", &["v1beta1"]),
    Watched {
        group: "apps",
        kind: "Deployment",
        plural: "deployments",
        versions: &["v1"],
        workload: true,
        lossy: false,
    },
    // Rolled out like a Deployment; Flagger may target one too.
    Watched {
        group: "apps",
        kind: "DaemonSet",
        plural: "daemonsets",
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
/// Waits until the cluster serves `w` and returns its resource: a kind that is not installed is
/// skipped with one warning (`missing` is called then) and looked for again every
/// `rediscover`; discovery errors are retried with backoff. `None` once `stop` is cancelled.
pub async fn served(
    server: &ApiServer,
    w: &Watched,
    rediscover: Duration,
    stop: &CancellationToken,
    missing: impl Fn(),
) -> Option<ApiResource> {
    let kind = w.kind;
    let mut warned = false;
    let mut backoff = DefaultBackoff::default();
    let mut failures = RepeatedWarning::default();
    loop {
        let wait = match resolve(&server.client, w).await {
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
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                if let Some(suppressed) = failures.due() {
                    warn!(
                        message = "API discovery failed; retrying with backoff.",
                        kind,
                        server = %server.url,
                        error = %describe(&e),
                        retry_in_ms = wait.as_millis() as u64,
                        similar_since_last = suppressed
                    );
                }
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The served version of a kind; `None` when the cluster does not serve it.
pub async fn resolve(client: &Client, w: &Watched) -> Result<Option<ApiResource>, kube::Error> {
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

/// What the agent does with Pods: list those of a failing rollout's new ReplicaSet
/// (`sources::pods`). Never watched, never read one by one.
pub const POD_VERBS: &[&str] = &["list"];

/// What `announce`'s writer needs on core/v1 `events` beyond the watch verbs (the RBAC in
/// `deploy/` grants exactly these, see [`cluster_role_yaml`]). `patch` is what Kubernetes
/// event recorders need to update an Event's series; this writer only creates.
pub const EVENT_VERBS: &[&str] = &["create", "patch"];

/// One rule of the agent's RBAC: `verbs` on `resources` of `group`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Resource names as RBAC rules name them (`promotions/status` for a subresource).
    pub resources: Vec<String>,
    pub verbs: &'static [&'static str],
}

impl Rule {
    /// The rule as `deploy/rbac/` writes it (two-space indent, a list item).
    pub fn yaml(&self) -> String {
        let quoted = |items: &mut dyn Iterator<Item = &str>| {
            items
                .map(|i| format!("\"{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "  - apiGroups: [\"{}\"]\n    resources: [{}]\n    verbs: [{}]\n",
            self.group,
            quoted(&mut self.resources.iter().map(String::as_str)),
            quoted(&mut self.verbs.iter().copied())
        )
    }

    /// The rule on one line, as YAML's flow style writes it.
    pub fn flow(&self) -> String {
        let yaml = self.yaml();
        let lines: Vec<&str> = yaml
            .lines()
            .map(|l| l.trim_start_matches([' ', '-']))
            .collect();
        format!("{{{}}}", lines.join(", "))
    }
}

/// Every rule of the agent's ClusterRole, in its order: get, list and watch on every kind of
/// [`WATCHED`] (one rule per group), [`POD_VERBS`] on Pods, [`EVENT_VERBS`] on core/v1
/// Events (the trace-link Events), and the Promotion verbs of `crate::resource`. The single
/// source of both `deploy/rbac/clusterrole.yaml` and `fluxtrace check`'s access reviews.
pub fn cluster_rules() -> Vec<Rule> {
    use crate::resource::{GROUP, PLURAL, PROMOTION_STATUS_VERBS, PROMOTION_VERBS};
    let mut rules: Vec<Rule> = Vec::new();
    for w in WATCHED {
        match rules.iter_mut().find(|r| r.group == w.group) {
            Some(r) => r.resources.push(w.plural.to_string()),
            None => rules.push(Rule {
                group: w.group,
                resources: vec![w.plural.to_string()],
                verbs: WATCH_VERBS,
            }),
        }
    }
    let rule = |group, resource: String, verbs| Rule {
        group,
        resources: vec![resource],
        verbs,
    };
    rules.push(rule("", "pods".into(), POD_VERBS));
    rules.push(rule("", "events".into(), EVENT_VERBS));
    rules.push(rule(GROUP, PLURAL.into(), PROMOTION_VERBS));
    rules.push(rule(
        GROUP,
        format!("{PLURAL}/status"),
        PROMOTION_STATUS_VERBS,
    ));
    rules
}

/// What a watcher does on every kind of [`WATCHED`].
pub const WATCH_VERBS: &[&str] = &["get", "list", "watch"];

/// The ClusterRole that grants exactly what the agent uses: the rules of [`cluster_rules`].
/// `deploy/rbac/clusterrole.yaml` is this text (a test checks it).
pub fn cluster_role_yaml() -> String {
    let mut out = String::from(
        "# Generated from src/cluster/mod.rs (WATCHED): read-only access to exactly the kinds\n\
         # fluxtrace watches, list on the Pods of a failing rollout (src/sources/pods.rs),\n\
         # create/patch on core/v1 Events for the trace-link Events (src/announce.rs), and its\n\
         # own Promotions (src/resource/).\n\
         # Regenerate with: UPDATE_RBAC=1 cargo test --test rbac\n\
         apiVersion: rbac.authorization.k8s.io/v1\n\
         kind: ClusterRole\n\
         metadata:\n  name: fluxtrace\n  labels:\n    app.kubernetes.io/name: fluxtrace\n\
         rules:\n",
    );
    for r in cluster_rules() {
        out.push_str(&r.yaml());
    }
    out
}
