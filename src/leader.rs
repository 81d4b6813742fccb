//! Leader election: which replica exports spans and writes Promotion statuses and Kubernetes
//! Events. Every replica watches, correlates and serves the intake; only the leader's verdicts
//! leave the process (see `agent::gate`).
//!
//! ```text
//!   elector task ──GET, then PUT with resourceVersion, every retry period──▶ Lease
//!        │ watch::channel<Role>
//!        ▼
//!   agent gate (verdicts: export, status, Events) · Promotion feed (InProgress, InvalidSpec,
//!   pruning) · /readyz · fluxtrace_leader · the log
//! ```
//!
//! The protocol is the one of Kubernetes' own controllers (client-go's `leaderelection`) on a
//! `coordination.k8s.io/v1` Lease:
//!
//! - A candidate takes the Lease when nobody holds it, or when its record (holder and renew
//!   time) has not changed for the record's `leaseDurationSeconds`, measured on this replica's
//!   own monotonic clock from when it saw the record change: clocks of different nodes never
//!   meet.
//! - The leader renews every retry period. Every write is a replace with the `resourceVersion`
//!   it read: of two replicas writing at once, one gets `409 Conflict` and stays a candidate.
//! - A leader that has not renewed within `--lease-renew-deadline` (shorter than the lease
//!   duration) has lost: [`Role::Lost`]. The agent then exits at once, before anyone else may
//!   take the Lease, and Kubernetes starts it again as a standby. Every API call is bounded by
//!   what is left of that deadline (kube's client would otherwise retry a 503 for minutes).
//! - On a graceful shutdown the leader gives the Lease up (holder cleared, duration 1 s), so the
//!   standby takes over within one retry period instead of one lease duration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::{describe, RepeatedWarning};
use crate::metrics::Metrics;

/// What the elector does with Leases, in its own namespace only: read, create the first time,
/// replace to take and renew. The Role in `deploy/rbac/` grants exactly these.
pub const LEASE_VERBS: &[&str] = &["create", "get", "update"];

/// The rule of the election's Role: [`LEASE_VERBS`] on Leases.
pub fn lease_rule() -> crate::cluster::Rule {
    crate::cluster::Rule {
        group: "coordination.k8s.io",
        resources: vec!["leases".to_string()],
        verbs: LEASE_VERBS,
    }
}

/// The namespaced Role for the election (`deploy/rbac/role-leader-election.yaml`), bound in the
/// agent's own namespace by the Kustomize base.
pub fn role_yaml() -> String {
    format!(
        "# Generated from src/leader.rs (LEASE_VERBS): the leader election's Lease, in the agent's\n\
         # own namespace only (the Kustomize base sets it and binds this Role there).\n\
         # Regenerate with: UPDATE_RBAC=1 cargo test --test rbac\n\
         apiVersion: rbac.authorization.k8s.io/v1\n\
         kind: Role\n\
         metadata:\n  name: fluxtrace-leader-election\n  labels:\n    app.kubernetes.io/name: fluxtrace\n\
         rules:\n{}",
        lease_rule().yaml()
    )
}

/// Where a replica stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Exports, writes statuses and Events.
    Leader,
    /// Watches and correlates; holds its verdicts until it leads. `holder`: who leads, when
    /// known.
    Standby { holder: Option<String> },
    /// Was the leader and could not renew in time: must stop exporting at once.
    Lost,
}

impl Role {
    /// For `/readyz` and the log.
    pub fn describe(&self) -> String {
        match self {
            Role::Leader => "leader".to_string(),
            Role::Standby { holder: Some(h) } => format!("standby, led by {h}"),
            Role::Standby { holder: None } => "standby".to_string(),
            Role::Lost => "lost the lease".to_string(),
        }
    }
}

/// A replica's role as it changes. Cheap to clone.
#[derive(Clone)]
pub struct Leadership {
    rx: watch::Receiver<Role>,
    /// Keeps a fixed role's channel open.
    _fixed: Option<Arc<watch::Sender<Role>>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Leadership")
            .field(&*self.rx.borrow())
            .finish()
    }
}

impl Leadership {
    /// A replica that leads without an election (no cluster, or `--no-leader-election`).
    pub fn always() -> Leadership {
        let (tx, rx) = watch::channel(Role::Leader);
        Leadership {
            rx,
            _fixed: Some(Arc::new(tx)),
        }
    }

    /// A channel the caller moves by hand (tests).
    pub fn manual(initial: Role) -> (watch::Sender<Role>, Leadership) {
        let (tx, rx) = watch::channel(initial);
        (tx, Leadership { rx, _fixed: None })
    }

    pub fn role(&self) -> Role {
        self.rx.borrow().clone()
    }

    pub fn is_leader(&self) -> bool {
        *self.rx.borrow() == Role::Leader
    }

    /// Waits for the next change; never returns once the elector has ended.
    pub async fn changed(&mut self) -> Role {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.rx.borrow_and_update().clone()
    }

    /// Waits until this replica has lost the lease.
    pub async fn lost(mut self) {
        while *self.rx.borrow_and_update() != Role::Lost {
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The Lease and its timings (`--lease-*`).
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica, as written in `holderIdentity`: unique per process.
    pub identity: String,
    /// How long a record holds without renewal (`leaseDurationSeconds`), 15 s by default.
    pub duration: Duration,
    /// The leader gives up when it has not renewed for this long (10 s); shorter than
    /// `duration`.
    pub renew_deadline: Duration,
    /// How often the leader renews and a candidate tries (2 s).
    pub retry_period: Duration,
}

/// Why the settings cannot work.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("--lease-renew-deadline ({renew:?}) must be shorter than --lease-duration ({duration:?}): a leader must stop before another may start")]
    DeadlineNotShorter { renew: Duration, duration: Duration },
    #[error(
        "--lease-retry-period ({retry:?}) must be shorter than --lease-renew-deadline ({renew:?})"
    )]
    RetryNotShorter { retry: Duration, renew: Duration },
    #[error("--lease-duration must be a whole number of seconds, at least 1 s (got {0:?})")]
    Duration(Duration),
}

impl LeaseSettings {
    /// Checks the timings against each other.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.duration < Duration::from_secs(1) || self.duration.subsec_nanos() != 0 {
            return Err(SettingsError::Duration(self.duration));
        }
        if self.renew_deadline >= self.duration {
            return Err(SettingsError::DeadlineNotShorter {
                renew: self.renew_deadline,
                duration: self.duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(SettingsError::RetryNotShorter {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        Ok(())
    }
}

/// A default identity: the host (the Pod's name in a cluster) and a random suffix, so that a
/// restarted container is a new holder.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fluxtrace".to_string());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}_{}", &id[..8])
}

/// Starts the elector. It ends when `stop` is cancelled (giving the Lease up if it leads) or
/// when the lease is lost.
pub fn spawn(
    client: kube::Client,
    settings: LeaseSettings,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> (Leadership, JoinHandle<()>) {
    let (tx, rx) = watch::channel(Role::Standby { holder: None });
    let task = tokio::spawn(elect(
        Api::namespaced(client, &settings.namespace),
        settings,
        tx,
        metrics,
        stop,
    ));
    (Leadership { rx, _fixed: None }, task)
}

/// The record a candidate last saw, and when it saw it change.
struct Observed {
    holder: Option<String>,
    renew: Option<Timestamp>,
    duration: Duration,
    since: Instant,
}

/// What one attempt found.
enum Attempt {
    Leads,
    HeldBy(Option<String>),
}

async fn elect(
    api: Api<Lease>,
    s: LeaseSettings,
    tx: watch::Sender<Role>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut observed: Option<Observed> = None;
    let mut renewed: Option<Instant> = None;
    let mut failures = RepeatedWarning::default();
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(jittered(s.retry_period)) => {}
            }
        }
        first = false;
        // A leader has what is left of its renew deadline; a candidate one retry period.
        let budget = match renewed {
            Some(at) => s.renew_deadline.saturating_sub(at.elapsed()),
            None => s.retry_period.max(Duration::from_secs(1)),
        };
        let attempt = tokio::select! {
            _ = stop.cancelled() => break,
            r = tokio::time::timeout(budget, try_acquire_or_renew(&api, &s, &mut observed)) => r,
        };
        match attempt {
            Ok(Ok(Attempt::Leads)) => {
                if renewed.is_none() {
                    info!(message = "Leading: this replica exports spans and writes Promotion statuses and Events.", lease = %s.name, namespace = %s.namespace, identity = %s.identity);
                    metrics.leader.set(1);
                    let _ = tx.send(Role::Leader);
                }
                renewed = Some(Instant::now());
                continue;
            }
            Ok(Ok(Attempt::HeldBy(holder))) => {
                if renewed.is_some() {
                    // Someone else wrote the Lease: this replica no longer leads.
                    lose(&tx, &metrics, &s, "the Lease was taken by another replica");
                    return;
                }
                let role = Role::Standby { holder };
                if *tx.borrow() != role {
                    info!(message = "Standing by: another replica leads.", lease = %s.name, leader = role_holder(&role));
                    metrics.leader.set(0);
                    let _ = tx.send(role);
                }
            }
            Ok(Err(e)) => {
                if let Some(suppressed) = failures.due() {
                    warn!(message = "Lease request failed; retrying.", lease = %s.name, namespace = %s.namespace, error = %describe(&e), similar_since_last = suppressed);
                }
            }
            Err(_) => {
                if let Some(suppressed) = failures.due() {
                    warn!(message = "Lease request not answered in time; retrying.", lease = %s.name, namespace = %s.namespace, waited_ms = budget.as_millis() as u64, similar_since_last = suppressed);
                }
            }
        }
        if renewed.is_some_and(|at| at.elapsed() >= s.renew_deadline) {
            lose(
                &tx,
                &metrics,
                &s,
                "not renewed within --lease-renew-deadline",
            );
            return;
        }
    }
    // Stopping: a leader gives the Lease up so that the standby need not wait it out.
    if renewed.is_some() {
        match tokio::time::timeout(s.retry_period, release(&api, &s)).await {
            Ok(Ok(())) => info!(message = "Lease released.", lease = %s.name),
            Ok(Err(e)) => {
                warn!(message = "Failed to release the Lease; the standby takes over when it expires.", lease = %s.name, error = %describe(&e))
            }
            Err(_) => {
                warn!(message = "Lease release not answered in time; the standby takes over when it expires.", lease = %s.name)
            }
        }
        metrics.leader.set(0);
    }
}

fn role_holder(r: &Role) -> &str {
    match r {
        Role::Standby { holder: Some(h) } => h,
        _ => "",
    }
}

fn lose(tx: &watch::Sender<Role>, metrics: &Metrics, s: &LeaseSettings, why: &str) {
    warn!(message = "Lost the lease; stopping at once so that only one replica exports.", lease = %s.name, reason = why);
    metrics.leader.set(0);
    let _ = tx.send(Role::Lost);
}

/// Up to 10 % more, so that candidates do not move in step.
fn jittered(d: Duration) -> Duration {
    let spread = d.as_millis() as u64 / 10;
    if spread == 0 {
        return d;
    }
    let r = uuid::Uuid::new_v4().as_u128() as u64 % spread;
    d + Duration::from_millis(r)
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One round: read the Lease, take or renew it when this replica may.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    s: &LeaseSettings,
    observed: &mut Option<Observed>,
) -> Result<Attempt, kube::Error> {
    let duration_secs = i32::try_from(s.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                namespace: Some(s.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(s.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(micro_now()),
                renew_time: Some(micro_now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(l) => {
                *observed = Some(observe(&l, None));
                Ok(Attempt::Leads)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldBy(None)),
            Err(e) => Err(e),
        };
    };
    let seen = observe(&lease, observed.take());
    let holder = seen.holder.clone();
    let mine = holder.as_deref() == Some(s.identity.as_str());
    let expired = seen.since.elapsed() >= seen.duration;
    *observed = Some(seen);
    if !mine && holder.is_some() && !expired {
        return Ok(Attempt::HeldBy(holder));
    }
    let mut spec = lease.spec.take().unwrap_or_default();
    if !mine {
        spec.acquire_time = Some(micro_now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
    }
    spec.holder_identity = Some(s.identity.clone());
    spec.renew_time = Some(micro_now());
    spec.lease_duration_seconds = Some(duration_secs);
    lease.spec = Some(spec);
    // The resourceVersion read above makes this a compare-and-swap.
    match api.replace(&s.name, &PostParams::default(), &lease).await {
        Ok(l) => {
            *observed = Some(observe(&l, None));
            Ok(Attempt::Leads)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::HeldBy(holder)),
        Err(e) => Err(e),
    }
}

/// The record of `lease`; `since` stays that of `before` when the record did not change.
fn observe(lease: &Lease, before: Option<Observed>) -> Observed {
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty());
    let renew = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
    let duration = Duration::from_secs(
        spec.and_then(|s| s.lease_duration_seconds)
            .and_then(|d| u64::try_from(d).ok())
            .unwrap_or(15),
    );
    let since = match before {
        Some(b) if b.holder == holder && b.renew == renew => b.since,
        _ => Instant::now(),
    };
    Observed {
        holder,
        renew,
        duration,
        since,
    }
}

/// Gives the Lease up: no holder, a duration of 1 s.
async fn release(api: &Api<Lease>, s: &LeaseSettings) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&s.name).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(micro_now());
    api.replace(&s.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(duration: u64, renew: u64, retry: u64) -> LeaseSettings {
        LeaseSettings {
            name: "fluxtrace".into(),
            namespace: "fluxtrace".into(),
            identity: "a".into(),
            duration: Duration::from_secs(duration),
            renew_deadline: Duration::from_secs(renew),
            retry_period: Duration::from_secs(retry),
        }
    }

    #[test]
    fn timings_must_nest() {
        assert!(settings(15, 10, 2).validate().is_ok());
        let e = settings(10, 10, 2)
            .validate()
            .expect_err("refused")
            .to_string();
        assert!(e.contains("--lease-renew-deadline"), "{e}");
        let e = settings(15, 10, 10)
            .validate()
            .expect_err("refused")
            .to_string();
        assert!(e.contains("--lease-retry-period"), "{e}");
    }

    #[test]
    fn a_record_that_did_not_change_keeps_its_first_sighting() {
        let lease = |holder: &str, renew: i64| Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(Timestamp::from_second(renew).expect("a time"))),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
        };
        let first = observe(&lease("a", 1), None);
        let since = first.since;
        std::thread::sleep(Duration::from_millis(5));
        let same = observe(&lease("a", 1), Some(first));
        assert_eq!(same.since, since, "unchanged: the wait goes on");
        let renewed = observe(&lease("a", 2), Some(same));
        assert!(renewed.since > since, "renewed: the wait starts again");
        assert_eq!(renewed.duration, Duration::from_secs(15));
    }
}
