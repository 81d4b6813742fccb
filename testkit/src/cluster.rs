//! A large synthetic Flux cluster, built deterministically (no random source; times relative to
//! [`Shape::t0`]), for the watch benchmark and for tests that need more objects than a bundled
//! recording holds.
//!
//! `K` Kustomizations (`flux-system/app-NNNN`), each with its GitRepository; `5 K` Deployments
//! (5 per Kustomization, labelled `kustomize.toolkit.fluxcd.io/name`/`namespace`, 10
//! Kustomizations per namespace `team-NNN`); `15 K` ReplicaSets (3 per Deployment: the current
//! one and two scaled to zero, owner references); `25 K` core/v1 Events (Deployment, ReplicaSet
//! and Pod events of the last 50 minutes). Shapes follow examples/recordings/*.jsonl, plus the
//! `managedFields` a real API server sends.
//!
//! The change stream ([`Cluster::stream`]): `P` promotions, each on its own Kustomization (round
//! robin), [`CHANGES_PER_PROMOTION`] changes each: the GitRepository fetches and stores a new
//! revision (annotated with the promotion id), a `NewArtifact` Event, the Kustomization fetches,
//! builds and applies it (with its `Progressing` and `ReconciliationSucceeded` Events), and each
//! of its 5 Deployments rolls: generation bump, new ReplicaSet, scale up/down, pod Events, the
//! oldest ReplicaSet deleted (history limit 2), rollout complete.

use jiff::Timestamp;
use serde_json::{json, Value};

use crate::bench::{env_u64, fail};
use crate::fleet::mix;

/// Deployments per Kustomization.
pub const DEPLOYMENTS_PER_KUSTOMIZATION: usize = 5;
const SERVICES: [&str; DEPLOYMENTS_PER_KUSTOMIZATION] =
    ["api", "web", "worker", "cache", "gateway"];
/// Kustomizations per team namespace (50 Deployments per namespace).
const KUSTOMIZATIONS_PER_NAMESPACE: usize = 10;
/// core/v1 Events per Deployment in the initial state.
pub const EVENTS_PER_DEPLOYMENT: usize = 5;
/// Watch changes one promotion makes.
pub const CHANGES_PER_PROMOTION: usize = 6 + DEPLOYMENTS_PER_KUSTOMIZATION * 17 + 2;
/// Event ids of the change stream start here (the initial Events count from 1).
pub const STREAM_EVENT_IDS: u64 = 1 << 32;

/// How big the cluster is and when it lives.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub kustomizations: usize,
    pub promotions: usize,
    /// Unix seconds: "now" for the initial state; the stream starts 4 minutes later.
    pub t0: i64,
}

impl Shape {
    /// `FLUXTRACE_BENCH_KUSTOMIZATIONS` (default 2000 times `FLUXTRACE_BENCH_SCALE`, itself 1
    /// by default: 10 is the large cluster of 20,000 Kustomizations and 100,000 Deployments),
    /// `FLUXTRACE_BENCH_PROMOTIONS` (default 400), `FLUXTRACE_BENCH_T0` (unix seconds; default
    /// now).
    pub fn from_env() -> Shape {
        let scale = env_u64("FLUXTRACE_BENCH_SCALE", 1).max(1);
        Shape {
            kustomizations: env_u64("FLUXTRACE_BENCH_KUSTOMIZATIONS", 2000 * scale) as usize,
            promotions: env_u64("FLUXTRACE_BENCH_PROMOTIONS", 400) as usize,
            t0: env_u64("FLUXTRACE_BENCH_T0", Timestamp::now().as_second() as u64) as i64,
        }
    }

    pub fn deployments(&self) -> usize {
        self.kustomizations * DEPLOYMENTS_PER_KUSTOMIZATION
    }

    pub fn stream_changes(&self) -> usize {
        self.promotions * CHANGES_PER_PROMOTION
    }
}

// Deterministic identifiers ------------------------------------------------------------------

const GIT: u64 = 1;
const KS: u64 = 2;
const DEP: u64 = 3;
const RS: u64 = 4;
const EV: u64 = 5;
const POD: u64 = 6;
const COMMIT: u64 = 7;
const DIGEST: u64 = 8;

fn hash(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x517C_C1B7_2722_0A95, |acc, p| mix(acc ^ mix(*p)))
}

fn uuid(parts: &[u64]) -> String {
    let a = hash(parts);
    let b = mix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

fn hex(parts: &[u64], chars: usize) -> String {
    let mut out = String::with_capacity(chars + 16);
    let mut h = hash(parts);
    while out.len() < chars {
        out.push_str(&format!("{h:016x}"));
        h = mix(h);
    }
    out.truncate(chars);
    out
}

/// A pod-template-hash style suffix (the alphabet Kubernetes uses for generated names).
fn suffix(parts: &[u64], chars: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = hash(parts);
    (0..chars)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h = mix(h);
            c
        })
        .collect()
}

/// Unix seconds as RFC 3339.
pub fn ts(secs: i64) -> String {
    Timestamp::from_second(secs)
        .unwrap_or_else(|e| fail(e))
        .to_string()
}

fn ts_micros(secs: i64, micros: i64) -> String {
    Timestamp::from_microsecond(secs * 1_000_000 + micros)
        .unwrap_or_else(|e| fail(e))
        .to_string()
}

/// What a watch line carries: `ADDED`, `MODIFIED` or `DELETED`, and the object.
pub type Change = (&'static str, Value);

/// The cluster's state as the change stream moves it on.
pub struct Cluster {
    shape: Shape,
    /// Template revision index of every Kustomization's apps (0 at the start).
    revision: Vec<i64>,
    /// Event counter for unique Event names and uids.
    pub events: u64,
}

/// What a Deployment's status says.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DepStatus {
    /// Rolled out at the spec's revision.
    Complete,
    /// Spec changed, the controller has not seen it yet.
    Stale,
    /// The new ReplicaSet is scaling up.
    Rolling,
}

/// A Kustomization's state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KsPhase {
    Ready,
    Fetching,
    Building,
}

/// One core/v1 Event.
struct EventSpec<'a> {
    namespace: &'a str,
    kind: &'a str,
    name: &'a str,
    object_uid: String,
    api_version: &'a str,
    field_path: Option<&'a str>,
    reason: &'a str,
    message: String,
    component: &'a str,
    host: Option<&'a str>,
    time: i64,
    count: i64,
    warning: bool,
    annotations: Option<Value>,
    /// events.k8s.io shape: `eventTime`, `action`, no timestamps or count.
    scheduler: bool,
}

impl Cluster {
    /// The cluster of `shape`, before any change.
    pub fn new(shape: Shape) -> Cluster {
        Cluster {
            shape,
            revision: vec![0; shape.kustomizations],
            events: 0,
        }
    }

    // ---- names ---------------------------------------------------------------------------

    fn ks_name(k: usize) -> String {
        format!("app-{k:04}")
    }

    fn namespace(k: usize) -> String {
        format!("team-{:03}", k / KUSTOMIZATIONS_PER_NAMESPACE)
    }

    fn dep_name(k: usize, j: usize) -> String {
        format!("app-{k:04}-{}", SERVICES[j])
    }

    fn rs_name(k: usize, j: usize, r: i64) -> String {
        format!(
            "{}-{}",
            Self::dep_name(k, j),
            suffix(&[RS, k as u64, j as u64, r as u64], 10)
        )
    }

    fn pod_name(k: usize, j: usize, r: i64, p: u64) -> String {
        format!(
            "{}-{}",
            Self::rs_name(k, j, r),
            suffix(&[POD, k as u64, j as u64, r as u64, p], 5)
        )
    }

    fn commit(k: usize, n: i64) -> String {
        hex(&[COMMIT, k as u64, n as u64], 40)
    }

    fn revision(k: usize, n: i64) -> String {
        format!("main@sha1:{}", Self::commit(k, n))
    }

    fn promotion_id(k: usize, n: i64) -> String {
        format!("P-{k:04}-{n}")
    }

    fn image(k: usize, j: usize, r: i64) -> String {
        format!("ghcr.io/acme/app-{k:04}-{}:1.{}.0", SERVICES[j], 40 + r)
    }

    fn replicas(k: usize, j: usize) -> i64 {
        2 + ((k + j) % 3) as i64
    }

    fn generation(r: i64) -> i64 {
        20 + r
    }

    /// `deployment.kubernetes.io/revision` of template revision `r`.
    fn dep_revision(r: i64) -> i64 {
        10 + r
    }

    // ---- Flux objects ----------------------------------------------------------------------

    fn flux_managed_fields(&self, apply_time: i64, status_time: i64, controller: &str) -> Value {
        json!([
            {
                "manager": "kustomize-controller",
                "operation": "Apply",
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "time": ts(apply_time),
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {
                        "f:kustomize.toolkit.fluxcd.io/name": {},
                        "f:kustomize.toolkit.fluxcd.io/namespace": {}
                    }},
                    "f:spec": {"f:interval": {}, "f:ref": {"f:branch": {}}, "f:secretRef": {"f:name": {}},
                               "f:timeout": {}, "f:url": {}, "f:path": {}, "f:prune": {},
                               "f:sourceRef": {"f:kind": {}, "f:name": {}}, "f:targetNamespace": {}}
                }
            },
            {
                "manager": controller,
                "operation": "Update",
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "time": ts(apply_time + 1),
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:finalizers": {".": {}, "v:\"finalizers.fluxcd.io\"": {}}}}
            },
            {
                "manager": controller,
                "operation": "Update",
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "time": ts(status_time),
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {
                    "f:artifact": {".": {}, "f:digest": {}, "f:lastUpdateTime": {}, "f:path": {},
                                   "f:revision": {}, "f:size": {}, "f:url": {}},
                    "f:conditions": {}, "f:history": {}, "f:inventory": {".": {}, "f:entries": {}},
                    "f:lastAppliedRevision": {}, "f:lastAttemptedRevision": {},
                    "f:observedGeneration": {}
                }},
                "subresource": "status"
            }
        ])
    }

    fn git_artifact(k: usize, n: i64, time: i64) -> Value {
        let commit = Self::commit(k, n);
        let name = Self::ks_name(k);
        json!({
            "digest": format!("sha256:{}", hex(&[DIGEST, k as u64, n as u64], 64)),
            "lastUpdateTime": ts(time),
            "path": format!("gitrepository/flux-system/{name}/{commit}.tar.gz"),
            "revision": Self::revision(k, n),
            "size": 40_000 + (k as i64 * 7919 + n * 104_729) % 900_000,
            "url": format!("http://source-controller.flux-system.svc.cluster.local./gitrepository/flux-system/{name}/{commit}.tar.gz"),
        })
    }

    /// At revision `n` (stored), or fetching `n + 1` when `building`.
    fn git_repository(&self, k: usize, n: i64, building: bool, time: i64) -> Value {
        let t0 = self.shape.t0;
        let name = Self::ks_name(k);
        let stored_at = if n == 0 { t0 - 7200 - k as i64 } else { time };
        let stored = Self::revision(k, n);
        let ready = |status: &str, reason: &str, message: String, at: i64| {
            json!({"lastTransitionTime": ts(at), "message": message, "observedGeneration": 1,
                   "reason": reason, "status": status, "type": "Ready"})
        };
        let in_storage = json!({"lastTransitionTime": ts(stored_at),
            "message": format!("stored artifact for revision '{stored}'"), "observedGeneration": 1,
            "reason": "Succeeded", "status": "True", "type": "ArtifactInStorage"});
        let conditions = if building {
            let next = Self::revision(k, n + 1);
            json!([
                ready(
                    "Unknown",
                    "Progressing",
                    format!("building artifact: new upstream revision '{next}'"),
                    time
                ),
                json!({"lastTransitionTime": ts(time), "message": format!("new upstream revision '{next}'"),
                       "observedGeneration": 1, "reason": "NewRevision", "status": "True", "type": "ArtifactOutdated"}),
                in_storage,
                json!({"lastTransitionTime": ts(time), "message": format!("building artifact: new upstream revision '{next}'"),
                       "observedGeneration": 1, "reason": "ProgressingWithRetry", "status": "True", "type": "Reconciling"}),
            ])
        } else {
            json!([
                ready(
                    "True",
                    "Succeeded",
                    format!("stored artifact for revision '{stored}'"),
                    stored_at
                ),
                in_storage,
            ])
        };
        let mut metadata = json!({
            "name": name,
            "namespace": "flux-system",
            "uid": uuid(&[GIT, k as u64]),
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": ts(t0 - 40 * 86_400),
            "finalizers": ["finalizers.fluxcd.io"],
            "labels": {"kustomize.toolkit.fluxcd.io/name": "flux-system",
                       "kustomize.toolkit.fluxcd.io/namespace": "flux-system"},
            "managedFields": self.flux_managed_fields(t0 - 40 * 86_400, stored_at, "source-controller"),
        });
        let promoted = if building { n + 1 } else { n };
        if promoted > 0 {
            metadata["annotations"] =
                json!({"fluxtrace.io/promotion-id": Self::promotion_id(k, promoted)});
        }
        json!({
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": metadata,
            "spec": {
                "interval": "1m",
                "ref": {"branch": "main"},
                "secretRef": {"name": "github-deploy-key"},
                "timeout": "60s",
                "url": format!("ssh://git@github.com/acme/{name}"),
            },
            "status": {
                "observedGeneration": 1,
                "conditions": conditions,
                "artifact": Self::git_artifact(k, n, stored_at),
            }
        })
    }

    /// Applied at `n`; fetching or building `n + 1`.
    fn kustomization(&self, k: usize, n: i64, phase: KsPhase, time: i64) -> Value {
        let t0 = self.shape.t0;
        let name = Self::ks_name(k);
        let ns = Self::namespace(k);
        let applied = Self::revision(k, n);
        let next = Self::revision(k, n + 1);
        let applied_at = if n == 0 { t0 - 7190 - k as i64 } else { time };
        let attempted = match phase {
            KsPhase::Building => next.clone(),
            _ => applied.clone(),
        };
        let conditions = match phase {
            KsPhase::Ready => json!([{
                "lastTransitionTime": ts(applied_at), "message": format!("Applied revision: {applied}"),
                "observedGeneration": 1, "reason": "ReconciliationSucceeded", "status": "True", "type": "Ready"
            }]),
            KsPhase::Fetching | KsPhase::Building => {
                let verb = if phase == KsPhase::Fetching {
                    "Fetching"
                } else {
                    "Building"
                };
                json!([
                    {"lastTransitionTime": ts(time), "message": "Reconciliation in progress",
                     "observedGeneration": 1, "reason": "Progressing", "status": "Unknown", "type": "Ready"},
                    {"lastTransitionTime": ts(time),
                     "message": format!("{verb} manifests for revision {next} with a timeout of 5m0s"),
                     "observedGeneration": 1, "reason": "Progressing", "status": "True", "type": "Reconciling"}
                ])
            }
        };
        let inventory: Vec<Value> = (0..DEPLOYMENTS_PER_KUSTOMIZATION)
            .flat_map(|j| {
                let d = Self::dep_name(k, j);
                [
                    json!({"id": format!("{ns}_{d}__Service"), "v": "v1"}),
                    json!({"id": format!("{ns}_{d}_apps_Deployment"), "v": "v1"}),
                ]
            })
            .collect();
        let mut history = vec![json!({
            "digest": format!("sha256:{}", hex(&[DIGEST, 99, k as u64, n as u64], 64)),
            "firstReconciled": ts(applied_at),
            "lastReconciled": ts(applied_at.max(t0 - 600)),
            "lastReconciledDuration": "1.384472905s",
            "lastReconciledStatus": "ReconciliationSucceeded",
            "metadata": {"revision": applied},
            "totalReconciliations": 12,
        })];
        if n > 0 {
            history.push(json!({
                "digest": format!("sha256:{}", hex(&[DIGEST, 99, k as u64, (n - 1) as u64], 64)),
                "firstReconciled": ts(t0 - 7190 - k as i64),
                "lastReconciled": ts(t0 - 600),
                "lastReconciledDuration": "2.101934451s",
                "lastReconciledStatus": "ReconciliationSucceeded",
                "metadata": {"revision": Self::revision(k, n - 1)},
                "totalReconciliations": 12,
            }));
        }
        json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {
                "name": name,
                "namespace": "flux-system",
                "uid": uuid(&[KS, k as u64]),
                "generation": 1,
                "resourceVersion": "1",
                "creationTimestamp": ts(t0 - 40 * 86_400),
                "finalizers": ["finalizers.fluxcd.io"],
                "labels": {"kustomize.toolkit.fluxcd.io/name": "flux-system",
                           "kustomize.toolkit.fluxcd.io/namespace": "flux-system"},
                "managedFields": self.flux_managed_fields(t0 - 40 * 86_400, applied_at.max(time), "kustomize-controller"),
            },
            "spec": {
                "force": false,
                "interval": "10m",
                "path": format!("./apps/{name}/prod"),
                "prune": true,
                "sourceRef": {"kind": "GitRepository", "name": name},
                "targetNamespace": ns,
                "timeout": "5m",
            },
            "status": {
                "observedGeneration": 1,
                "conditions": conditions,
                "history": history,
                "inventory": {"entries": inventory},
                "lastAppliedRevision": applied,
                "lastAttemptedRevision": attempted,
            }
        })
    }

    // ---- workloads -------------------------------------------------------------------------

    fn container(k: usize, j: usize, r: i64) -> Value {
        json!([{
            "name": "app",
            "image": Self::image(k, j, r),
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": "LOG_LEVEL", "value": "info"},
                    {"name": "OTEL_SERVICE_NAME", "value": Self::dep_name(k, j)}],
            "resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
                          "requests": {"cpu": "100m", "memory": "128Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                               "initialDelaySeconds": 5, "timeoutSeconds": 1, "periodSeconds": 5,
                               "successThreshold": 1, "failureThreshold": 3},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
        }])
    }

    fn pod_spec(k: usize, j: usize, r: i64) -> Value {
        json!({
            "containers": Self::container(k, j, r),
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": Self::dep_name(k, j),
            "serviceAccount": Self::dep_name(k, j),
            "securityContext": {},
            "schedulerName": "default-scheduler",
        })
    }

    fn container_fields() -> Value {
        json!({"f:containers": {"k:{\"name\":\"app\"}": {
            ".": {}, "f:env": {".": {},
                "k:{\"name\":\"LOG_LEVEL\"}": {".": {}, "f:name": {}, "f:value": {}},
                "k:{\"name\":\"OTEL_SERVICE_NAME\"}": {".": {}, "f:name": {}, "f:value": {}}},
            "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
            "f:ports": {".": {}, "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {
                ".": {}, "f:containerPort": {}, "f:name": {}, "f:protocol": {}}},
            "f:readinessProbe": {".": {}, "f:failureThreshold": {}, "f:httpGet": {".": {}, "f:path": {},
                "f:port": {}, "f:scheme": {}}, "f:initialDelaySeconds": {}, "f:periodSeconds": {},
                "f:successThreshold": {}, "f:timeoutSeconds": {}},
            "f:resources": {".": {}, "f:limits": {".": {}, "f:cpu": {}, "f:memory": {}},
                "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}},
            "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}},
            "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {},
            "f:serviceAccount": {}, "f:serviceAccountName": {}, "f:terminationGracePeriodSeconds": {}})
    }

    fn status_fields(conditions: &[&str]) -> Value {
        let mut conds = serde_json::Map::new();
        conds.insert(".".into(), json!({}));
        for c in conditions {
            conds.insert(
                format!("k:{{\"type\":\"{c}\"}}"),
                json!({".": {}, "f:lastTransitionTime": {}, "f:lastUpdateTime": {}, "f:message": {},
                       "f:reason": {}, "f:status": {}, "f:type": {}}),
            );
        }
        json!({"f:status": {"f:availableReplicas": {}, "f:conditions": conds, "f:fullyLabeledReplicas": {},
                            "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {},
                            "f:updatedReplicas": {}}})
    }

    /// Spec at template revision `r`, with the given status.
    fn deployment(&self, k: usize, j: usize, r: i64, status: DepStatus, time: i64) -> Value {
        let t0 = self.shape.t0;
        let name = Self::dep_name(k, j);
        let ns = Self::namespace(k);
        let replicas = Self::replicas(k, j);
        let created = t0 - 30 * 86_400 - (k * 5 + j) as i64;
        let settled = if r == 0 {
            t0 - 7000 - ((k * 5 + j) % 3600) as i64
        } else {
            time
        };
        let (observed, status_rev, progressing, updated, total, ready, unavailable) = match status {
            DepStatus::Complete => (
                r,
                r,
                (
                    "NewReplicaSetAvailable",
                    format!(
                        "ReplicaSet \"{}\" has successfully progressed.",
                        Self::rs_name(k, j, r)
                    ),
                    settled,
                ),
                replicas,
                replicas,
                replicas,
                0,
            ),
            DepStatus::Stale => (
                r - 1,
                r - 1,
                (
                    "NewReplicaSetAvailable",
                    format!(
                        "ReplicaSet \"{}\" has successfully progressed.",
                        Self::rs_name(k, j, r - 1)
                    ),
                    if r == 1 {
                        t0 - 7000 - ((k * 5 + j) % 3600) as i64
                    } else {
                        time - 60
                    },
                ),
                replicas,
                replicas,
                replicas,
                0,
            ),
            DepStatus::Rolling => (
                r,
                r,
                (
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{}\" is progressing.", Self::rs_name(k, j, r)),
                    time,
                ),
                1,
                replicas + 1,
                replicas,
                1,
            ),
        };
        let mut st = json!({
            "observedGeneration": Self::generation(observed),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {"type": "Available", "status": "True", "lastUpdateTime": ts(created + 40),
                 "lastTransitionTime": ts(created + 40), "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "lastUpdateTime": ts(progressing.2),
                 "lastTransitionTime": ts(created), "reason": progressing.0, "message": progressing.1}
            ]
        });
        if unavailable > 0 {
            st["unavailableReplicas"] = json!(unavailable);
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": uuid(&[DEP, k as u64, j as u64]),
                "generation": Self::generation(r),
                "resourceVersion": "1",
                "creationTimestamp": ts(created),
                "labels": {
                    "app.kubernetes.io/name": name,
                    "app.kubernetes.io/part-of": Self::ks_name(k),
                    "kustomize.toolkit.fluxcd.io/name": Self::ks_name(k),
                    "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
                },
                "annotations": {"deployment.kubernetes.io/revision": Self::dep_revision(status_rev).to_string()},
                "managedFields": [
                    {"manager": "kustomize-controller", "operation": "Apply", "apiVersion": "apps/v1",
                     "time": ts(settled), "fieldsType": "FieldsV1", "fieldsV1": {
                        "f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/part-of": {},
                            "f:kustomize.toolkit.fluxcd.io/name": {}, "f:kustomize.toolkit.fluxcd.io/namespace": {}}},
                        "f:spec": {"f:progressDeadlineSeconds": {}, "f:replicas": {}, "f:revisionHistoryLimit": {},
                            "f:selector": {}, "f:strategy": {"f:rollingUpdate": {"f:maxSurge": {}, "f:maxUnavailable": {}},
                            "f:type": {}}, "f:template": {"f:metadata": {"f:annotations": {"f:fluxtrace.io/promotion-id": {}},
                            "f:labels": {"f:app.kubernetes.io/name": {}}}, "f:spec": Self::container_fields()}}}},
                    {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                     "time": ts(settled), "fieldsType": "FieldsV1", "fieldsV1": {
                        "f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}}}}},
                    {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                     "time": ts(settled), "fieldsType": "FieldsV1",
                     "fieldsV1": Self::status_fields(&["Available", "Progressing"]), "subresource": "status"}
                ],
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {
                    "metadata": {
                        "labels": {"app.kubernetes.io/name": name},
                        "annotations": {"fluxtrace.io/promotion-id": Self::promotion_id(k, r)},
                    },
                    "spec": Self::pod_spec(k, j, r),
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                "revisionHistoryLimit": 2,
                "progressDeadlineSeconds": 600,
            },
            "status": st,
        })
    }

    /// The ReplicaSet of template revision `r`, with `replicas` desired and `ready` ready.
    fn replica_set(
        &self,
        k: usize,
        j: usize,
        r: i64,
        replicas: i64,
        ready: i64,
        time: i64,
    ) -> Value {
        let t0 = self.shape.t0;
        let dep = Self::dep_name(k, j);
        let ns = Self::namespace(k);
        let name = Self::rs_name(k, j, r);
        let hash = name.rsplit_once('-').map_or("", |(_, h)| h).to_string();
        let created = if r <= 0 {
            t0 - 7000 - ((k * 5 + j) % 3600) as i64 + r * 86_400
        } else {
            time
        };
        let mut status = json!({"replicas": replicas, "observedGeneration": 1 + (r.rem_euclid(3))});
        if replicas > 0 {
            status["fullyLabeledReplicas"] = json!(replicas);
        }
        if ready > 0 {
            status["readyReplicas"] = json!(ready);
            status["availableReplicas"] = json!(ready);
        }
        let max = Self::replicas(k, j) + 1;
        json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": uuid(&[RS, k as u64, j as u64, r as u64]),
                "generation": 1 + r.rem_euclid(3),
                "resourceVersion": "1",
                "creationTimestamp": ts(created),
                "labels": {"app.kubernetes.io/name": dep, "pod-template-hash": hash},
                "annotations": {
                    "deployment.kubernetes.io/desired-replicas": Self::replicas(k, j).to_string(),
                    "deployment.kubernetes.io/max-replicas": max.to_string(),
                    "deployment.kubernetes.io/revision": Self::dep_revision(r).to_string(),
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": dep,
                    "uid": uuid(&[DEP, k as u64, j as u64]), "controller": true, "blockOwnerDeletion": true}],
                "managedFields": [
                    {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                     "time": ts(created), "fieldsType": "FieldsV1", "fieldsV1": {
                        "f:metadata": {
                            "f:annotations": {".": {}, "f:deployment.kubernetes.io/desired-replicas": {},
                                "f:deployment.kubernetes.io/max-replicas": {}, "f:deployment.kubernetes.io/revision": {}},
                            "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:pod-template-hash": {}},
                            "f:ownerReferences": {".": {}, format!("k:{{\"uid\":\"{}\"}}", uuid(&[DEP, k as u64, j as u64])): {}}},
                        "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {
                            "f:metadata": {"f:annotations": {".": {}, "f:fluxtrace.io/promotion-id": {}},
                                "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:pod-template-hash": {}}},
                            "f:spec": Self::container_fields()}}}},
                    {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                     "time": ts(time.max(created)), "fieldsType": "FieldsV1",
                     "fieldsV1": Self::status_fields(&[]), "subresource": "status"}
                ],
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app.kubernetes.io/name": dep, "pod-template-hash": hash}},
                "template": {
                    "metadata": {
                        "labels": {"app.kubernetes.io/name": dep, "pod-template-hash": hash},
                        "annotations": {"fluxtrace.io/promotion-id": Self::promotion_id(k, r)},
                    },
                    "spec": Self::pod_spec(k, j, r),
                },
            },
            "status": status,
        })
    }

    // ---- Events ------------------------------------------------------------------------------

    fn event(&mut self, e: EventSpec<'_>) -> Value {
        self.events += 1;
        let id = self.events;
        let name = format!("{}.{}", e.name, hex(&[EV, id], 16));
        let mut source = json!({});
        if !e.scheduler {
            source["component"] = json!(e.component);
            if let Some(h) = e.host {
                source["host"] = json!(h);
            }
        }
        let mut involved = json!({
            "kind": e.kind, "namespace": e.namespace, "name": e.name, "uid": e.object_uid,
            "apiVersion": e.api_version, "resourceVersion": (1000 + id).to_string(),
        });
        if let Some(f) = e.field_path {
            involved["fieldPath"] = json!(f);
        }
        let first = e.time - (e.count - 1) * 37;
        let manager = match e.component {
            "default-scheduler" => "kube-scheduler",
            "deployment-controller" | "replicaset-controller" => "kube-controller-manager",
            c => c,
        };
        let fields = if e.scheduler {
            json!({"f:action": {}, "f:eventTime": {}, "f:involvedObject": {}, "f:message": {},
                   "f:reason": {}, "f:reportingComponent": {}, "f:reportingInstance": {}, "f:type": {}})
        } else {
            json!({"f:count": {}, "f:firstTimestamp": {}, "f:involvedObject": {}, "f:lastTimestamp": {},
                   "f:message": {}, "f:reason": {}, "f:reportingComponent": {}, "f:reportingInstance": {},
                   "f:source": {"f:component": {}, "f:host": {}}, "f:type": {}})
        };
        let mut metadata = json!({
            "name": name,
            "namespace": e.namespace,
            "uid": uuid(&[EV, id]),
            "resourceVersion": "1",
            "creationTimestamp": ts(first),
            "managedFields": [{"manager": manager, "operation": "Update", "apiVersion": "v1",
                "time": ts(e.time), "fieldsType": "FieldsV1", "fieldsV1": fields}],
        });
        if let Some(a) = e.annotations {
            metadata["annotations"] = a;
        }
        let mut ev = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": metadata,
            "involvedObject": involved,
            "reason": e.reason,
            "message": e.message,
            "source": source,
            "type": if e.warning { "Warning" } else { "Normal" },
            "reportingComponent": e.component,
            "reportingInstance": e.host.unwrap_or(""),
        });
        if e.scheduler {
            ev["firstTimestamp"] = Value::Null;
            ev["lastTimestamp"] = Value::Null;
            ev["eventTime"] = json!(ts_micros(e.time, (id * 7919 % 1_000_000) as i64));
            ev["action"] = json!("Binding");
        } else {
            ev["firstTimestamp"] = json!(ts(first));
            ev["lastTimestamp"] = json!(ts(e.time));
            ev["count"] = json!(e.count);
            ev["eventTime"] = Value::Null;
        }
        ev
    }

    fn node(k: usize, j: usize, p: u64) -> String {
        let h = hash(&[POD, 77, k as u64, j as u64, p]);
        format!("ip-10-42-{}-{}.ec2.internal", h % 16, (h >> 8) % 250 + 2)
    }

    fn deployment_event(
        &mut self,
        k: usize,
        j: usize,
        reason: &str,
        message: String,
        time: i64,
    ) -> Value {
        let ns = Self::namespace(k);
        let name = Self::dep_name(k, j);
        self.event(EventSpec {
            namespace: &ns,
            kind: "Deployment",
            name: &name,
            object_uid: uuid(&[DEP, k as u64, j as u64]),
            api_version: "apps/v1",
            field_path: None,
            reason,
            message,
            component: "deployment-controller",
            host: None,
            time,
            count: 1,
            warning: false,
            annotations: None,
            scheduler: false,
        })
    }

    fn rs_event(
        &mut self,
        k: usize,
        j: usize,
        r: i64,
        reason: &str,
        message: String,
        time: i64,
    ) -> Value {
        let ns = Self::namespace(k);
        let name = Self::rs_name(k, j, r);
        self.event(EventSpec {
            namespace: &ns,
            kind: "ReplicaSet",
            name: &name,
            object_uid: uuid(&[RS, k as u64, j as u64, r as u64]),
            api_version: "apps/v1",
            field_path: None,
            reason,
            message,
            component: "replicaset-controller",
            host: None,
            time,
            count: 1,
            warning: false,
            annotations: None,
            scheduler: false,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn pod_event(
        &mut self,
        k: usize,
        j: usize,
        r: i64,
        p: u64,
        reason: &str,
        message: String,
        time: i64,
        count: i64,
        warning: bool,
    ) -> Value {
        let ns = Self::namespace(k);
        let name = Self::pod_name(k, j, r, p);
        let node = Self::node(k, j, p);
        let scheduler = reason == "Scheduled";
        self.event(EventSpec {
            namespace: &ns,
            kind: "Pod",
            name: &name,
            object_uid: uuid(&[POD, k as u64, j as u64, r as u64, p]),
            api_version: "v1",
            field_path: (!scheduler).then_some("spec.containers{app}"),
            reason,
            message,
            component: if scheduler {
                "default-scheduler"
            } else {
                "kubelet"
            },
            host: if scheduler { None } else { Some(&node) },
            time,
            count,
            warning,
            annotations: None,
            scheduler,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn flux_event(
        &mut self,
        k: usize,
        kind: &str,
        reason: &str,
        message: String,
        component: &str,
        annotations: Value,
        time: i64,
    ) -> Value {
        let name = Self::ks_name(k);
        let (tag, api) = if kind == "GitRepository" {
            (GIT, "source.toolkit.fluxcd.io/v1")
        } else {
            (KS, "kustomize.toolkit.fluxcd.io/v1")
        };
        self.event(EventSpec {
            namespace: "flux-system",
            kind,
            name: &name,
            object_uid: uuid(&[tag, k as u64]),
            api_version: api,
            field_path: None,
            reason,
            message,
            component,
            host: None,
            time,
            count: 1,
            warning: false,
            annotations: Some(annotations),
            scheduler: false,
        })
    }

    // ---- the initial state -------------------------------------------------------------------

    /// Every object of the initial state, kind by kind, to `sink`.
    pub fn initial(&mut self, mut sink: impl FnMut(&'static str, Value)) {
        let t0 = self.shape.t0;
        let ks = self.shape.kustomizations;
        for k in 0..ks {
            sink("GitRepository", self.git_repository(k, 0, false, t0));
        }
        for k in 0..ks {
            sink(
                "Kustomization",
                self.kustomization(k, 0, KsPhase::Ready, t0),
            );
        }
        for k in 0..ks {
            for j in 0..DEPLOYMENTS_PER_KUSTOMIZATION {
                sink(
                    "Deployment",
                    self.deployment(k, j, 0, DepStatus::Complete, t0),
                );
            }
        }
        for k in 0..ks {
            for j in 0..DEPLOYMENTS_PER_KUSTOMIZATION {
                for r in [-2, -1, 0] {
                    let n = if r == 0 { Self::replicas(k, j) } else { 0 };
                    sink("ReplicaSet", self.replica_set(k, j, r, n, n, t0 - 7000));
                }
            }
        }
        // Events of the last 50 minutes (the API server keeps them for an hour).
        let total = (self.shape.deployments() * EVENTS_PER_DEPLOYMENT) as i64;
        let mut i = 0i64;
        let at = |i: &mut i64| {
            *i += 1;
            t0 - 3000 + (*i * 3000) / total
        };
        for k in 0..ks {
            for j in 0..DEPLOYMENTS_PER_KUSTOMIZATION {
                let rs = Self::rs_name(k, j, 0);
                let replicas = Self::replicas(k, j);
                let pod = Self::pod_name(k, j, 0, 0);
                let image = Self::image(k, j, 0);
                let e = self.deployment_event(
                    k,
                    j,
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {rs} from 0 to {replicas}"),
                    at(&mut i),
                );
                sink("Event", e);
                let e = self.rs_event(
                    k,
                    j,
                    0,
                    "SuccessfulCreate",
                    format!("Created pod: {pod}"),
                    at(&mut i),
                );
                sink("Event", e);
                if (k * DEPLOYMENTS_PER_KUSTOMIZATION + j).is_multiple_of(10) {
                    let ns = Self::namespace(k);
                    let uid = uuid(&[POD, k as u64, j as u64, 0, 0]);
                    let e = self.pod_event(
                        k,
                        j,
                        0,
                        0,
                        "BackOff",
                        format!(
                            "Back-off restarting failed container app in pod {pod}_{ns}({uid})"
                        ),
                        at(&mut i),
                        14,
                        true,
                    );
                    sink("Event", e);
                    let e = self.pod_event(k, j, 0, 0, "Unhealthy",
                        "Readiness probe failed: Get \"http://10.42.7.19:8080/healthz\": dial tcp 10.42.7.19:8080: connect: connection refused".to_string(),
                        at(&mut i), 31, true);
                    sink("Event", e);
                    let node = Self::node(k, j, 0);
                    let e = self.pod_event(
                        k,
                        j,
                        0,
                        0,
                        "Scheduled",
                        format!("Successfully assigned {ns}/{pod} to {node}"),
                        at(&mut i),
                        1,
                        false,
                    );
                    sink("Event", e);
                } else {
                    let e = self.pod_event(
                        k,
                        j,
                        0,
                        0,
                        "Pulled",
                        format!("Container image \"{image}\" already present on machine"),
                        at(&mut i),
                        1,
                        false,
                    );
                    sink("Event", e);
                    let e = self.pod_event(
                        k,
                        j,
                        0,
                        0,
                        "Created",
                        "Created container: app".to_string(),
                        at(&mut i),
                        1,
                        false,
                    );
                    sink("Event", e);
                    let e = self.pod_event(
                        k,
                        j,
                        0,
                        0,
                        "Started",
                        "Started container app".to_string(),
                        at(&mut i),
                        1,
                        false,
                    );
                    sink("Event", e);
                }
            }
        }
    }

    // ---- the change stream ---------------------------------------------------------------------

    /// Promotion `i`: the next revision of one Kustomization's apps, start to finish.
    pub fn promotion(&mut self, i: usize, out: &mut Vec<Change>) {
        let ks = self.shape.kustomizations;
        let k = (i * 7) % ks;
        let n = self.revision[k];
        let m = n + 1;
        self.revision[k] = m;
        let t = self.shape.t0 + 240 + 2 * i as i64;
        let ns = Self::namespace(k);
        let next = Self::revision(k, m);
        let pid = Self::promotion_id(k, m);
        let dj = 0..DEPLOYMENTS_PER_KUSTOMIZATION;

        out.push(("MODIFIED", self.git_repository(k, n, true, t)));
        out.push(("MODIFIED", self.git_repository(k, m, false, t + 1)));
        let e = self.flux_event(k, "GitRepository", "NewArtifact",
            format!("stored artifact for commit 'release {pid}'"), "source-controller",
            json!({"source.toolkit.fluxcd.io/revision": next,
                   "source.toolkit.fluxcd.io/digest": format!("sha256:{}", hex(&[DIGEST, k as u64, m as u64], 64))}),
            t + 1);
        out.push(("ADDED", e));
        out.push((
            "MODIFIED",
            self.kustomization(k, n, KsPhase::Fetching, t + 2),
        ));
        out.push((
            "MODIFIED",
            self.kustomization(k, n, KsPhase::Building, t + 2),
        ));
        let changed: Vec<String> = dj
            .clone()
            .map(|j| format!("Deployment/{ns}/{} configured", Self::dep_name(k, j)))
            .collect();
        let e = self.flux_event(
            k,
            "Kustomization",
            "Progressing",
            changed.join("\n"),
            "kustomize-controller",
            json!({"kustomize.toolkit.fluxcd.io/revision": next}),
            t + 3,
        );
        out.push(("ADDED", e));
        for j in dj.clone() {
            out.push((
                "MODIFIED",
                self.deployment(k, j, m, DepStatus::Stale, t + 3),
            ));
        }
        for j in dj.clone() {
            out.push(("ADDED", self.replica_set(k, j, m, 1, 0, t + 3)));
        }
        for j in dj.clone() {
            let rs = Self::rs_name(k, j, m);
            let e = self.deployment_event(
                k,
                j,
                "ScalingReplicaSet",
                format!("Scaled up replica set {rs} from 0 to 1"),
                t + 3,
            );
            out.push(("ADDED", e));
        }
        for j in dj.clone() {
            out.push((
                "MODIFIED",
                self.deployment(k, j, m, DepStatus::Rolling, t + 3),
            ));
        }
        for j in dj.clone() {
            let pod = Self::pod_name(k, j, m, 0);
            let e = self.rs_event(
                k,
                j,
                m,
                "SuccessfulCreate",
                format!("Created pod: {pod}"),
                t + 3,
            );
            out.push(("ADDED", e));
        }
        for j in dj.clone() {
            let pod = Self::pod_name(k, j, m, 0);
            let node = Self::node(k, j, 0);
            let image = Self::image(k, j, m);
            let e = self.pod_event(
                k,
                j,
                m,
                0,
                "Scheduled",
                format!("Successfully assigned {ns}/{pod} to {node}"),
                t + 4,
                1,
                false,
            );
            out.push(("ADDED", e));
            let e = self.pod_event(
                k,
                j,
                m,
                0,
                "Pulling",
                format!("Pulling image \"{image}\""),
                t + 4,
                1,
                false,
            );
            out.push(("ADDED", e));
            let e = self.pod_event(k, j, m, 0, "Pulled",
                format!("Successfully pulled image \"{image}\" in 2.186s (2.186s including waiting). Image size: 38411902 bytes."),
                t + 6, 1, false);
            out.push(("ADDED", e));
            let e = self.pod_event(
                k,
                j,
                m,
                0,
                "Created",
                "Created container: app".into(),
                t + 6,
                1,
                false,
            );
            out.push(("ADDED", e));
            let e = self.pod_event(
                k,
                j,
                m,
                0,
                "Started",
                "Started container app".into(),
                t + 6,
                1,
                false,
            );
            out.push(("ADDED", e));
        }
        for j in dj.clone() {
            let r = Self::replicas(k, j);
            out.push(("MODIFIED", self.replica_set(k, j, m, r, r, t + 15)));
        }
        for j in dj.clone() {
            let old = Self::rs_name(k, j, n);
            let r = Self::replicas(k, j);
            let e = self.deployment_event(
                k,
                j,
                "ScalingReplicaSet",
                format!("Scaled down replica set {old} from {r} to 0"),
                t + 15,
            );
            out.push(("ADDED", e));
        }
        for j in dj.clone() {
            out.push(("MODIFIED", self.replica_set(k, j, n, 0, 0, t + 15)));
        }
        for j in dj.clone() {
            let old_pod = Self::pod_name(k, j, n, 0);
            let e = self.rs_event(
                k,
                j,
                n,
                "SuccessfulDelete",
                format!("Deleted pod: {old_pod}"),
                t + 15,
            );
            out.push(("ADDED", e));
            let e = self.pod_event(
                k,
                j,
                n,
                0,
                "Killing",
                "Stopping container app".into(),
                t + 15,
                1,
                false,
            );
            out.push(("ADDED", e));
        }
        for j in dj.clone() {
            out.push(("DELETED", self.replica_set(k, j, n - 2, 0, 0, t + 16)));
        }
        for j in dj {
            out.push((
                "MODIFIED",
                self.deployment(k, j, m, DepStatus::Complete, t + 16),
            ));
        }
        out.push(("MODIFIED", self.kustomization(k, m, KsPhase::Ready, t + 17)));
        let e = self.flux_event(
            k,
            "Kustomization",
            "ReconciliationSucceeded",
            "Reconciliation finished in 14.212735508s, next run in 10m0s".into(),
            "kustomize-controller",
            json!({"kustomize.toolkit.fluxcd.io/revision": next,
                   "kustomize.toolkit.fluxcd.io/commit_status": "update"}),
            t + 17,
        );
        out.push(("ADDED", e));
    }

    pub fn stream(&mut self) -> Vec<Change> {
        let mut out = Vec::with_capacity(self.shape.stream_changes());
        for i in 0..self.shape.promotions {
            self.promotion(i, &mut out);
        }
        assert_eq!(
            out.len(),
            self.shape.stream_changes(),
            "changes per promotion"
        );
        out
    }
}
/// The change stream's first half is applied live; the second becomes the recording the test
/// server applies in one go (`apply_rest`, under its lock).
pub fn split_stream(shape: Shape) -> (Vec<Change>, Vec<Change>) {
    let mut cluster = Cluster::new(shape);
    cluster.events = STREAM_EVENT_IDS;
    let mut stream = cluster.stream();
    let burst = stream.split_off((shape.promotions / 2) * CHANGES_PER_PROMOTION);
    (stream, burst)
}
