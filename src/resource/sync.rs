//! The Promotion objects and the engine, kept in step: every Promotion in the cluster is a
//! report, and every verdict is written back to its Promotion's status.
//!
//! ```text
//!   kube API ──watch promotions──▶ feed task ──validate (to_report)──▶ EngineHandle::submit
//!                                      │  invalid: status Ready=False, InvalidSpec
//!                                      ▼
//!                                   Index (promotion id → namespace/name)
//!                                      ▲
//!   engine ──try_send(Story)──▶ status task ──PATCH …/status──▶ kube API
//! ```
//!
//! - **Restart without loss.** After a restart the initial list holds every Promotion; those
//!   without a final phase are reports again, with the time their spec (or creation) gives, so
//!   the engine opens them with the same ids and start. A verdict is written only once the
//!   export task has said whether its spans reached the collector (`spansExported`); one whose
//!   spans did not is traced again, so its spans are exported again, identical. Other finished
//!   ones are left alone.
//! - **Writes.** A Promotion costs at most two status writes: `InProgress` with its trace id
//!   when first seen, and its verdict. Each is a merge patch of the status subresource.
//! - A Promotion that is not a report (missing or wrong fields) gets `Ready=False`, reason
//!   `InvalidSpec`, once per generation; the agent goes on.
//! - The CRD not installed: the feed task waits for it (looked for again like the Flux kinds);
//!   nothing else depends on it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::watcher::Event;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::index::{Index, ObjectRef};
use super::{invalid_status, status_of, to_report, Phase, PromotionStatus, GROUP, PLURAL};
use crate::agent::EngineHandle;
use crate::cluster::{served, ApiServer, KindWatch, RepeatedWarning, Watched};
use crate::export::pipeline::ExportOutcome;
use crate::leader::Leadership;
use crate::model::{DeliveryEvent, EventBody, PromotionReport};
use crate::story::{Outcome, Story};
use crate::trace::{trace_id_for, Traceparent};

/// Finished promotions waiting for their status write; beyond this the write is dropped (the
/// Promotion stays `InProgress` and is re-evaluated after a restart) and counted.
pub const QUEUE: usize = 1024;

/// The Promotion kind for discovery.
pub const WATCHED_PROMOTION: Watched = Watched {
    group: GROUP,
    kind: "Promotion",
    plural: PLURAL,
    versions: &[super::VERSION],
    workload: false,
    lossy: false,
};

/// What the agent sends the status task: finished stories (`AgentConfig::promotion_status`)
/// and export outcomes (`AgentConfig::export_outcomes`).
pub struct StatusInputs {
    pub stories: mpsc::Sender<Story>,
    pub outcomes: mpsc::Sender<ExportOutcome>,
}

impl StatusInputs {
    /// `cfg` with both senders set.
    pub fn into_config(self, cfg: crate::agent::AgentConfig) -> crate::agent::AgentConfig {
        crate::agent::AgentConfig {
            promotion_status: Some(self.stories),
            export_outcomes: Some(self.outcomes),
            ..cfg
        }
    }
}

/// The receiving ends, for [`spawn`].
pub struct StatusQueues {
    stories: mpsc::Receiver<Story>,
    outcomes: mpsc::Receiver<ExportOutcome>,
}

/// The queues between the agent and the status task.
pub fn channel() -> (StatusInputs, StatusQueues) {
    let (stories, stories_rx) = mpsc::channel(QUEUE);
    let (outcomes, outcomes_rx) = mpsc::channel(QUEUE);
    (
        StatusInputs { stories, outcomes },
        StatusQueues {
            stories: stories_rx,
            outcomes: outcomes_rx,
        },
    )
}

/// How long a verdict waits for its export outcome before it is written without one.
pub const OUTCOME_WAIT: Duration = Duration::from_secs(300);

/// How long finished Promotions are kept, and how many per namespace.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub max_age: Duration,
    pub max_per_namespace: usize,
    /// How often the finished ones are looked over.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_per_namespace: 1000,
            every: Duration::from_secs(60),
        }
    }
}

/// The finished Promotions the watch has seen, and which of them are past their retention.
#[derive(Debug, Default)]
pub struct Pruner {
    /// (namespace, name) → when it finished.
    finished: HashMap<(String, String), jiff::Timestamp>,
}

impl Pruner {
    pub fn finished(&mut self, namespace: &str, name: &str, at: jiff::Timestamp) {
        self.finished
            .insert((namespace.to_string(), name.to_string()), at);
    }

    pub fn forget(&mut self, namespace: &str, name: &str) {
        self.finished
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Those to delete at `now`: finished longer ago than `max_age`, and the oldest beyond
    /// `max_per_namespace` in each namespace. They are forgotten here.
    pub fn due(&mut self, now: jiff::Timestamp, r: &Retention) -> Vec<(String, String)> {
        let max_age =
            jiff::SignedDuration::try_from(r.max_age).unwrap_or(jiff::SignedDuration::MAX);
        let oldest_kept = now.checked_sub(max_age).unwrap_or(jiff::Timestamp::MIN);
        let mut by_ns: HashMap<&str, Vec<(jiff::Timestamp, &str)>> = HashMap::new();
        for ((ns, name), at) in &self.finished {
            by_ns.entry(ns).or_default().push((*at, name));
        }
        let mut out = Vec::new();
        for (ns, mut items) in by_ns {
            // Newest first: what lies beyond the count, or is too old, goes.
            items.sort_by(|a, b| b.cmp(a));
            for (i, (at, name)) in items.into_iter().enumerate() {
                if i >= r.max_per_namespace || at < oldest_kept {
                    out.push((ns.to_string(), name.to_string()));
                }
            }
        }
        out.sort();
        for key in &out {
            self.finished.remove(key);
        }
        out
    }
}

/// How the feed and status tasks run.
#[derive(Clone, Debug)]
pub struct SyncSettings {
    /// How often a missing CRD is looked for again.
    pub rediscover: Duration,
    pub retention: Retention,
    /// Only the leader writes statuses and prunes; a standby feeds its engine alone.
    pub leadership: Leadership,
}

/// Starts the feed task in `set` (it ends when `stop` is cancelled) and the status task (it
/// ends once every story sender is dropped and the queue is written: await it after the
/// agent's shutdown, so that the last verdicts reach their Promotions). `index` is the one the
/// agent's gate reads (`AgentConfig::confirmations`).
pub fn spawn(
    set: &mut JoinSet<()>,
    server: ApiServer,
    handle: EngineHandle,
    rx: StatusQueues,
    index: Index,
    settings: SyncSettings,
    stop: CancellationToken,
) -> JoinHandle<()> {
    handle.readiness.register("watch/Promotion".to_string());
    let (starts, started) = mpsc::channel(QUEUE);
    set.spawn(feed(
        server.clone(),
        handle.clone(),
        index.clone(),
        settings.clone(),
        starts,
        stop,
    ));
    tokio::spawn(write_statuses(
        server,
        handle,
        index,
        rx,
        started,
        settings.leadership,
    ))
}

/// Writes a Promotion for each report the intake takes, before the intake answers: what was
/// acknowledged survives a restart of the agent.
#[derive(Clone)]
pub struct PromotionWriter {
    server: ApiServer,
    /// Marks what it created as fed, so that the watch does not feed the report again.
    index: Index,
    /// Where the intake's Promotions live (the agent's own namespace).
    namespace: String,
    missing: Arc<Mutex<RepeatedWarning>>,
    timeout: Duration,
}

/// Why a report could not be made durable.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the Promotion {namespace}/{name} to {server}: {cause}")]
pub struct WriteError {
    namespace: String,
    name: String,
    server: String,
    cause: String,
}

impl PromotionWriter {
    /// `index` is the one [`spawn`] returned for the same cluster.
    pub fn new(server: ApiServer, namespace: impl Into<String>, index: Index) -> PromotionWriter {
        PromotionWriter {
            server,
            index,
            namespace: namespace.into(),
            missing: Arc::default(),
            timeout: Self::TIMEOUT,
        }
    }

    /// Time allowed for the write (kube's client retries an API server that answers 429 or
    /// 503 on its own, for minutes): past it the report is refused and CI retries.
    pub const TIMEOUT: Duration = Duration::from_secs(5);

    /// Creates the Promotion for `report` (received at `now`); one that exists already (a
    /// repeated report) counts as written. Where the CRD (or the namespace) does not exist the
    /// report is taken in memory only, as without a cluster, and a warning says so.
    ///
    /// `Ok(false)` when the watch fed the new object to the engine before the create answered
    /// (a busy agent): the caller must not submit the report again.
    pub async fn write(
        &self,
        report: &PromotionReport,
        now: jiff::Timestamp,
    ) -> Result<bool, WriteError> {
        let name = super::object_name(&report.id);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.server.client.clone(), &self.namespace, &api_resource());
        let mut obj = DynamicObject::new(&name, &api_resource()).within(&self.namespace);
        obj.data = json!({ "spec": super::spec_of(report, now) });
        let created = tokio::time::timeout(
            self.timeout,
            api.create(&kube::api::PostParams::default(), &obj),
        )
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(
                format!("no answer within {}s", self.timeout.as_secs()).into(),
            ))
        });
        match created {
            // The intake submits the report itself, unless the watch was first.
            Ok(o) => Ok(o.metadata.uid.is_none_or(|uid| {
                self.index
                    .first_time(uid, o.metadata.generation.unwrap_or(0))
            })),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                let due = self.missing.lock().map(|mut w| w.due()).ok().flatten();
                if let Some(suppressed) = due {
                    warn!(
                        message = "The Promotion CRD or the namespace is missing: reports are held in memory only and lost on restart.",
                        namespace = %self.namespace,
                        server = %self.server.url,
                        similar_since_last = suppressed
                    );
                }
                Ok(true)
            }
            Err(e) => Err(WriteError {
                namespace: self.namespace.clone(),
                name,
                server: self.server.url.clone(),
                cause: crate::cluster::describe(&e),
            }),
        }
    }
}

fn api_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: super::VERSION.into(),
        api_version: format!("{GROUP}/{}", super::VERSION),
        kind: "Promotion".into(),
        plural: PLURAL.into(),
    }
}

async fn feed(
    server: ApiServer,
    handle: EngineHandle,
    index: Index,
    settings: SyncSettings,
    starts: mpsc::Sender<(String, PromotionStatus)>,
    stop: CancellationToken,
) {
    let name = "watch/Promotion";
    let SyncSettings {
        rediscover,
        retention,
        leadership,
    } = settings;
    let Some(ar) = served(&server, &WATCHED_PROMOTION, rediscover, &stop, || {
        handle.readiness.set(name, true)
    })
    .await
    else {
        return;
    };
    handle.readiness.set(name, false);
    let mut watch = KindWatch::<DynamicObject>::new(&server, &ar, None, None);
    let mut failures = RepeatedWarning::default();
    let mut pruner = Pruner::default();
    let mut prune = tokio::time::interval(retention.every);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => break,
            _ = prune.tick(), if leadership.is_leader() => {
                for (ns, n) in pruner.due(handle.now(), &retention) {
                    delete(&server, &ns, &n).await;
                }
                continue;
            }
            i = watch.next() => i,
        };
        let Some(item) = item else { break };
        match item {
            Ok(Event::InitApply(obj) | Event::Apply(obj)) => match obj.0 {
                Ok(o) => {
                    let feed = Feed {
                        server: &server,
                        handle: &handle,
                        index: &index,
                        starts: &starts,
                        leads: leadership.is_leader(),
                    };
                    if !feed.seen(&mut pruner, o).await {
                        break;
                    }
                }
                Err(invalid) => warn!(
                    message = "Promotion does not decode; skipped.",
                    namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
                    name = invalid.metadata.name.as_deref().unwrap_or(""),
                    error = %crate::cluster::bounded(&invalid.error)
                ),
            },
            Ok(Event::Delete(obj)) => {
                if let Some((ns, n)) = obj.key() {
                    index.remove_object(&ns, &n);
                    pruner.forget(&ns, &n);
                }
            }
            Ok(Event::Init) => {}
            Ok(Event::InitDone) => handle.readiness.set(name, true),
            Err(e) => {
                if let Some(suppressed) = failures.due() {
                    warn!(
                        message = "Promotion watch failed; retrying with backoff.",
                        server = %server.url,
                        error = %e,
                        similar_since_last = suppressed
                    );
                }
            }
        }
    }
    debug!(message = "Promotion watcher stopped.");
}

/// Deletes a finished Promotion past its retention; a failure is logged (it is tried again
/// after the next re-list).
async fn delete(server: &ApiServer, namespace: &str, name: &str) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(server.client.clone(), namespace, &api_resource());
    let deleted = tokio::time::timeout(
        PromotionWriter::TIMEOUT,
        api.delete(name, &kube::api::DeleteParams::default()),
    )
    .await
    .unwrap_or_else(|_| Err(kube::Error::Service("no answer in time".into())));
    match deleted {
        Ok(_) => debug!(message = "Finished Promotion pruned.", namespace, name),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => warn!(
            message = "Failed to prune a finished Promotion.",
            namespace,
            name,
            server = %server.url,
            error = %crate::cluster::describe(&e)
        ),
    }
}

/// What the feed task hands on: to the engine, the index and the status task.
struct Feed<'a> {
    server: &'a ApiServer,
    handle: &'a EngineHandle,
    index: &'a Index,
    starts: &'a mpsc::Sender<(String, PromotionStatus)>,
    /// Only the leader writes.
    leads: bool,
}

impl Feed<'_> {
    /// One Promotion listed or changed. `false` once the engine has stopped.
    async fn seen(&self, pruner: &mut Pruner, o: DynamicObject) -> bool {
        let Feed {
            server,
            handle,
            index,
            starts,
            leads,
        } = *self;
        let namespace = o.metadata.namespace.clone().unwrap_or_default();
        let name = o.metadata.name.clone().unwrap_or_default();
        let generation = o.metadata.generation;
        let first = index.first_time(
            o.metadata.uid.clone().unwrap_or_else(|| name.clone()),
            generation.unwrap_or(0),
        );
        let status: PromotionStatus = o
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        let created = o.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if status.phase.is_some_and(Phase::is_final) {
            // Pruned this long after its verdict (its creation when the status has no time).
            let at = status
                .finished_at
                .as_deref()
                .and_then(|t| t.parse().ok())
                .or(created);
            if let Some(at) = at {
                pruner.finished(&namespace, &name, at);
            }
        }
        // A verdict whose spans did not all reach the collector is traced again: the same spans,
        // exported again.
        let finished =
            status.phase.is_some_and(Phase::is_final) && status.spans_exported != Some(false);
        let spec = o.data.get("spec").cloned().unwrap_or(Value::Null);
        let report = match to_report(&spec, &name, created) {
            Ok(r) => r,
            Err(e) => {
                let marked = status
                    .conditions
                    .iter()
                    .any(|c| c.reason == "InvalidSpec" && c.observed_generation == generation);
                if first && !marked && leads {
                    warn!(
                        message = "Promotion is not a valid report; marked InvalidSpec.",
                        namespace = %namespace,
                        name = %name,
                        error = %e
                    );
                    let st = invalid_status(&e, generation, handle.now());
                    patch_status(server, &namespace, &name, &st).await;
                }
                return true;
            }
        };
        index.insert(
            report.id.clone(),
            ObjectRef {
                namespace: namespace.clone(),
                name: name.clone(),
                generation,
                exported: finished && status.spans_exported == Some(true),
            },
        );
        if finished {
            return true;
        }
        let id = report.id.clone();
        let trace_id = report
            .traceparent
            .as_deref()
            .and_then(|t| Traceparent::parse(t).ok())
            .map_or_else(|| trace_id_for(&id), |t| t.trace_id);
        // What the intake created it submitted itself; a status write's echo is not new either.
        if first && !submit(handle, report).await {
            return false;
        }
        if status.phase.is_none() {
            let st = PromotionStatus {
                phase: Some(Phase::InProgress),
                trace_id: Some(trace_id.to_string()),
                observed_generation: generation,
                ..PromotionStatus::default()
            };
            // Written by the status task, in order with the verdicts; best effort when it is busy.
            let _ = starts.try_send((id.clone(), st));
        }
        debug!(message = "Promotion object fed to the engine.", promotion_id = %id, namespace = %namespace, name = %name);
        true
    }
}

/// Queues a report as the intake does: its time, never later than now.
async fn submit(handle: &EngineHandle, report: PromotionReport) -> bool {
    let now = handle.now();
    let at = report.time.map_or(now, |t| t.min(now));
    handle
        .submit(DeliveryEvent {
            at,
            body: EventBody::Promotion(report),
        })
        .await
        .is_ok()
}

/// Writes statuses one at a time, in the order they come: `InProgress` from the feed, verdicts
/// from the engine. A verdict is written once its export outcome is known (so that a Promotion
/// whose spans may not have reached the collector stays `InProgress` and is traced again after
/// a restart), or after [`OUTCOME_WAIT`] without it. A promotion whose verdict is written never
/// goes back to `InProgress`.
async fn write_statuses(
    server: ApiServer,
    handle: EngineHandle,
    index: Index,
    mut rx: StatusQueues,
    mut started: mpsc::Receiver<(String, PromotionStatus)>,
    leadership: Leadership,
) {
    /// Ids remembered (verdicts written, outcomes that came first) before they are forgotten.
    const REMEMBERED: usize = 100_000;
    let mut finished: HashSet<String> = HashSet::new();
    let mut waiting: HashMap<String, (PromotionStatus, std::time::Instant)> = HashMap::new();
    let mut early: HashMap<String, bool> = HashMap::new();
    let mut feed_open = true;
    let mut stories_open = true;
    let mut outcomes_open = true;
    let mut sweep = tokio::time::interval(Duration::from_secs(10));
    // Until the engine has stopped and the export task has said all it will.
    while stories_open || outcomes_open {
        let (id, st) = tokio::select! {
            biased;
            story = rx.stories.recv(), if stories_open => {
                let Some(story) = story else {
                    stories_open = false;
                    continue;
                };
                if story.outcome == Outcome::InProgress {
                    continue;
                }
                if finished.len() >= REMEMBERED {
                    finished.clear();
                }
                finished.insert(story.promotion_id.clone());
                let generation = index.get(&story.promotion_id).and_then(|o| o.generation);
                let mut st = status_of(&story, generation, handle.now());
                if outcomes_open {
                    match early.remove(&story.promotion_id) {
                        Some(exported) => st.spans_exported = Some(exported),
                        None => {
                            waiting.insert(story.promotion_id, (st, std::time::Instant::now()));
                            continue;
                        }
                    }
                }
                (story.promotion_id, st)
            }
            outcome = rx.outcomes.recv(), if outcomes_open => {
                let Some(o) = outcome else {
                    outcomes_open = false;
                    continue;
                };
                match waiting.remove(&o.promotion_id) {
                    Some((mut st, _)) => {
                        st.spans_exported = Some(o.exported);
                        (o.promotion_id, st)
                    }
                    None => {
                        if early.len() >= REMEMBERED {
                            early.clear();
                        }
                        early.insert(o.promotion_id, o.exported);
                        continue;
                    }
                }
            }
            start = started.recv(), if feed_open => {
                let Some((id, st)) = start else {
                    feed_open = false;
                    continue;
                };
                // A standby's InProgress is the leader's to write.
                if finished.contains(&id) || !leadership.is_leader() {
                    continue;
                }
                (id, st)
            }
            _ = sweep.tick() => {
                let stale: Vec<String> = waiting
                    .iter()
                    .filter(|(_, (_, since))| since.elapsed() >= OUTCOME_WAIT)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in stale {
                    if let (Some((st, _)), Some(at)) = (waiting.remove(&id), index.get(&id)) {
                        patch_status(&server, &at.namespace, &at.name, &st).await;
                    }
                }
                continue;
            }
        };
        let Some(at) = index.get(&id) else {
            continue;
        };
        patch_status(&server, &at.namespace, &at.name, &st).await;
    }
    // What still waits for an outcome (none came: the export task ended without one) is
    // written as it stands.
    for (id, (st, _)) in waiting {
        if let Some(at) = index.get(&id) {
            patch_status(&server, &at.namespace, &at.name, &st).await;
        }
    }
    info!(message = "Promotion status writer stopped.");
}

/// Merge-patches the status subresource; logs a failure. `true` when written.
async fn patch_status(
    server: &ApiServer,
    namespace: &str,
    name: &str,
    st: &PromotionStatus,
) -> bool {
    let api: Api<DynamicObject> =
        Api::namespaced_with(server.client.clone(), namespace, &api_resource());
    let body = json!({ "status": st });
    // kube's client retries a 503 for minutes on its own: a write that does not land within
    // the deadline is given up (the Promotion is traced again after a restart).
    let written = tokio::time::timeout(
        PromotionWriter::TIMEOUT,
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body)),
    )
    .await
    .unwrap_or_else(|_| {
        Err(kube::Error::Service(
            format!("no answer within {}s", PromotionWriter::TIMEOUT.as_secs()).into(),
        ))
    });
    match written {
        Ok(_) => true,
        Err(e) => {
            warn!(
                message = "Failed to write a Promotion's status.",
                namespace,
                name,
                server = %server.url,
                error = %crate::cluster::describe(&e)
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().expect("a time")
    }

    #[test]
    fn finished_promotions_go_after_their_age_or_beyond_the_count() {
        let r = Retention {
            max_age: Duration::from_secs(3600),
            max_per_namespace: 2,
            every: Duration::from_secs(60),
        };
        let mut p = Pruner::default();
        p.finished("ci", "old", at("2026-12-01T08:00:00Z"));
        p.finished("ci", "a", at("2026-12-01T09:30:00Z"));
        p.finished("ci", "b", at("2026-12-01T09:40:00Z"));
        p.finished("ci", "c", at("2026-12-01T09:50:00Z"));
        p.finished("other", "d", at("2026-12-01T09:10:00Z"));
        p.finished("other", "gone", at("2026-12-01T09:00:00Z"));
        p.forget("other", "gone");
        let due = p.due(at("2026-12-01T10:00:00Z"), &r);
        let names: Vec<&str> = due.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["a", "old"], "past the count of 2, and past an hour");
        assert!(p.due(at("2026-12-01T10:00:00Z"), &r).is_empty(), "once");
        let later = p.due(at("2026-12-01T11:00:00Z"), &r);
        assert_eq!(
            later.len(),
            3,
            "b, c and d are an hour old by then: {later:?}"
        );
    }
}
