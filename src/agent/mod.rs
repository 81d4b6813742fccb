//! The live agent: sources feed the engine through a bounded channel, one task owns the engine,
//! another exports finished spans, and the HTTP server answers health, metrics and (with the
//! intake) promotion reports and story queries.
//!
//! ```text
//!  watchers ──offer (drop+count when full)──┐
//!  intake ────submit (await when full)──────┤
//!                                           ▼
//!                       engine task: Engine::apply / tick every second
//!                         │ verdicts: spans and story     │ stories
//!                         │ (waits when the gate is full) │
//!                         ▼                               ▼
//!          gate: the leader passes on, a standby holds   story store (bounded)
//!                         │ spans                  │ stories
//!                         ▼                        ▼
//!          export task (export::pipeline):   Promotion status, Kubernetes Events
//!          buffer, split, retry, drop only during an outage
//! ```
//!
//! Shutdown is ordered: sources stop, the engine drains what is queued, the export task flushes
//! what is finished, all within a deadline. Open promotions are not forced to a verdict: their
//! ids are deterministic, so the next run continues the same traces for what the objects
//! themselves name (annotations); a report held only in memory is lost with the process.

mod gate;
mod pods;

pub use pods::PodLister;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::Readiness;
use crate::correlate::{Engine, EngineConfig, Output};
use crate::export::pipeline::{self, BufferSettings, FinishedSpans};
use crate::export::{BatchLimits, ExportSettings, Exporter};
use crate::leader::Leadership;
use crate::metrics::{KindLabel, Metrics, OutcomeLabel};
use crate::model::{DeliveryEvent, EventBody, PodListRequest, ProbeRequest};
use crate::probe::Prober;
use crate::story::Story;
use crate::trace::{SpanRecord, TraceId};
use crate::workload::{Workload, WorkloadError, WorkloadFilter};

pub use crate::clock::Clock;

/// The agent is shutting down and takes no more input.
#[derive(Debug, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct Stopped;

/// Settings of the engine and export tasks.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub engine: EngineConfig,
    /// Capacity of the observation queue in front of the engine.
    pub queue: usize,
    /// How often the engine's clock moves without observations.
    pub tick: Duration,
    /// `None`: nothing is exported (said once in the log).
    pub export: Option<ExportSettings>,
    /// Size of each export request.
    pub batch_limits: BatchLimits,
    /// The export buffer: back-pressure when full, drops only while the collector is
    /// unreachable.
    pub export_buffer: BufferSettings,
    /// Finished stories kept for queries.
    pub stories: usize,
    /// Open promotions beyond which new reports are refused (`--max-open-promotions`).
    pub max_open_promotions: usize,
    /// `{trace_id}`, `{start_ms}`, `{end_ms}`.
    pub trace_url_template: Option<String>,
    /// Promotions that changed nothing are not exported (`--skip-unchanged`).
    pub skip_unchanged: bool,
    /// Observations are stamped, and the engine ticks, with this clock.
    pub clock: Clock,
    /// Traffic probes after rollouts; `None`: not probed (their traffic spans time out).
    pub probe: Option<crate::probe::ProbeSettings>,
    /// The client that lists a failing rollout's Pods (`pods`); `None`: not listed (the Pod
    /// Events still explain a rollout).
    pub pod_lister: Option<PodLister>,
    /// Where finished stories go for their Kubernetes Events (`crate::announce`); `None`: no
    /// Events. Offered without waiting: when the queue is full the story's Events are dropped
    /// and counted (`k8s_events_dropped`).
    pub announce: Option<mpsc::Sender<Story>>,
    /// Where finished stories go for their Promotion object's status (`crate::resource::sync`);
    /// offered like `announce`, dropped and counted (`promotion_status_dropped`) when full.
    pub promotion_status: Option<mpsc::Sender<Story>>,
    /// Where the export task says, per finished promotion, whether all its spans reached the
    /// collector (`crate::resource::sync` writes it to the Promotion's status).
    pub export_outcomes: Option<mpsc::Sender<pipeline::ExportOutcome>>,
    /// Environment and app pairs with DORA series of their own (`crate::dora`).
    pub dora_max_series: usize,
    /// Whether this replica leads: only the leader's verdicts are exported and written; a
    /// standby holds them (`gate`).
    pub leadership: Leadership,
    /// The Promotion objects, from which a standby learns what the leader has exported.
    pub confirmations: Option<crate::resource::index::Index>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            engine: EngineConfig::default(),
            queue: 4096,
            tick: Duration::from_secs(1),
            export: None,
            batch_limits: BatchLimits::default(),
            export_buffer: BufferSettings::default(),
            stories: 1000,
            max_open_promotions: 5000,
            trace_url_template: None,
            skip_unchanged: false,
            clock: Clock::system(),
            probe: None,
            pod_lister: None,
            announce: None,
            promotion_status: None,
            export_outcomes: None,
            dora_max_series: crate::dora::DEFAULT_MAX_SERIES,
            leadership: Leadership::always(),
            confirmations: None,
        }
    }
}

enum Query {
    Story(String, oneshot::Sender<Option<Story>>),
    Recent(Option<String>, usize, oneshot::Sender<Vec<Story>>),
    Workloads(WorkloadFilter, oneshot::Sender<Vec<Workload>>),
    /// Namespace and name of a Deployment: the story of the promotion behind what runs.
    WorkloadStory(
        String,
        String,
        oneshot::Sender<Result<Story, WorkloadError>>,
    ),
}

/// A cheap, cloneable handle to the running engine.
#[derive(Clone)]
pub struct EngineHandle {
    events: mpsc::Sender<DeliveryEvent>,
    queries: mpsc::Sender<Query>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    trace_url_template: Option<Arc<str>>,
    cluster: Arc<str>,
    clock: Clock,
    /// Promotions open in the engine, as of its last step.
    open: Arc<std::sync::atomic::AtomicUsize>,
    max_open: usize,
}

impl EngineHandle {
    /// `Some(open)` when the engine holds as many open promotions as it may: new ones are to
    /// be refused.
    pub fn over_open_cap(&self) -> Option<usize> {
        let open = self.open.load(std::sync::atomic::Ordering::Relaxed);
        (open >= self.max_open).then_some(open)
    }

    /// Queues an observation, waiting while the queue is full (for promotion reports: they
    /// must not be lost).
    pub async fn submit(&self, ev: DeliveryEvent) -> Result<(), Stopped> {
        self.events.send(ev).await.map_err(|_| Stopped)
    }

    /// Queues an observation if there is room; otherwise drops it and counts the drop (for
    /// Kubernetes Events and watch updates under overload). Returns whether it was queued.
    pub fn offer(&self, ev: DeliveryEvent) -> bool {
        let kind = body_kind(&ev.body);
        match self.events.try_send(ev) {
            Ok(()) => true,
            Err(_) => {
                self.metrics
                    .observations_dropped
                    .get_or_create(&KindLabel { kind })
                    .inc();
                false
            }
        }
    }

    /// The story of a promotion: finished, or in progress. `None` when unknown.
    pub async fn story(&self, id: &str) -> Option<Story> {
        let (tx, rx) = oneshot::channel();
        self.queries
            .send(Query::Story(id.to_string(), tx))
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// The most recent finished promotions, newest first, optionally for one environment.
    pub async fn recent(&self, environment: Option<String>, limit: usize) -> Vec<Story> {
        let (tx, rx) = oneshot::channel();
        if self
            .queries
            .send(Query::Recent(environment, limit, tx))
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The followed Deployments `filter` matches: what runs, who delivered it, what is newer.
    pub async fn workloads(&self, filter: WorkloadFilter) -> Vec<Workload> {
        let (tx, rx) = oneshot::channel();
        if self
            .queries
            .send(Query::Workloads(filter, tx))
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The story of the promotion that delivered what runs on Deployment `namespace/name`.
    /// `None` when the agent is shutting down.
    pub async fn workload_story(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Result<Story, WorkloadError>> {
        let (tx, rx) = oneshot::channel();
        let q = Query::WorkloadStory(namespace.to_string(), name.to_string(), tx);
        self.queries.send(q).await.ok()?;
        rx.await.ok()
    }

    /// Observations waiting for the engine.
    pub fn queue_depth(&self) -> usize {
        self.events.max_capacity() - self.events.capacity()
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The agent's time: when an observation arriving now was made.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The link to a trace, when a URL template is configured.
    pub fn trace_link(
        &self,
        trace_id: TraceId,
        start: Timestamp,
        end: Timestamp,
    ) -> Option<String> {
        trace_link(self.trace_url_template.as_deref(), trace_id, start, end)
    }
}

/// Fills a trace URL template.
pub fn trace_link(
    template: Option<&str>,
    trace_id: TraceId,
    start: Timestamp,
    end: Timestamp,
) -> Option<String> {
    Some(crate::links::fill(template?, trace_id, start, end))
}

/// Every `kind` label of the `observations` metrics (see [`body_kind`]).
pub const OBSERVATION_KINDS: [&str; 14] = [
    "promotion",
    "source",
    "reconciler",
    "deployment",
    "replicaset",
    "event",
    "flux_event",
    "probe_result",
    "receiver",
    "image_policy",
    "image_automation",
    "deleted",
    "canary",
    "pod",
];

/// The `kind` label an observation is counted under.
pub fn body_kind(b: &EventBody) -> &'static str {
    match b {
        EventBody::Promotion(_) => "promotion",
        EventBody::Source(_) => "source",
        EventBody::Reconciler(_) => "reconciler",
        EventBody::Deployment(_) => "deployment",
        EventBody::ReplicaSet(_) => "replicaset",
        EventBody::KubeEvent(_) => "event",
        EventBody::FluxEvent(_) => "flux_event",
        EventBody::ProbeResult(_) => "probe_result",
        EventBody::Receiver(_) => "receiver",
        EventBody::ImagePolicy(_) => "image_policy",
        EventBody::ImageAutomation(_) => "image_automation",
        EventBody::Canary(_) => "canary",
        EventBody::Pod(_) => "pod",
        EventBody::Deleted(_) => "deleted",
        EventBody::Relisted(_) => "relisted",
    }
}

/// The running engine and export tasks.
pub struct Agent {
    pub handle: EngineHandle,
    drain: tokio_util::sync::CancellationToken,
    engine_task: JoinHandle<()>,
    gate_task: JoinHandle<()>,
    export_task: JoinHandle<()>,
}

impl Agent {
    /// Starts the engine and export tasks on the current tokio runtime.
    pub fn start(cfg: AgentConfig, metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Agent {
        let (ev_tx, ev_rx) = mpsc::channel(cfg.queue.max(1));
        let (q_tx, q_rx) = mpsc::channel(64);
        let (span_tx, span_rx) = mpsc::channel::<FinishedSpans>(256);
        let (verdict_tx, verdict_rx) = mpsc::channel::<gate::Verdict>(256);
        let drain = tokio_util::sync::CancellationToken::new();
        let handle = EngineHandle {
            events: ev_tx,
            queries: q_tx,
            metrics: metrics.clone(),
            readiness,
            trace_url_template: cfg.trace_url_template.as_deref().map(Arc::from),
            cluster: Arc::from(cfg.engine.cluster.as_str()),
            clock: cfg.clock.clone(),
            open: Arc::default(),
            max_open: cfg.max_open_promotions.max(1),
        };
        let exporter = match cfg.export.clone() {
            Some(s) => Some(Exporter::new(s).with_limits(cfg.batch_limits)),
            None => {
                warn!(message = "No OTLP endpoint configured: spans are not exported.");
                None
            }
        };
        let probes = cfg.probe.clone().map(|settings| {
            let (tx, rx) = mpsc::channel::<ProbeRequest>(256);
            tokio::spawn(probe_loop(rx, Prober::new(settings), handle.clone()));
            tx
        });
        let pod_lists = cfg.pod_lister.clone().map(|client| {
            let (tx, rx) = mpsc::channel::<PodListRequest>(64);
            tokio::spawn(pods::pod_loop(rx, client.0, handle.clone()));
            tx
        });
        let engine_task = tokio::spawn(engine_loop(
            Engine::new(cfg.engine.clone()),
            ev_rx,
            q_rx,
            Outlets {
                verdicts: verdict_tx,
                probes,
                pod_lists,
                open: handle.open.clone(),
                readiness: handle.readiness.clone(),
            },
            metrics.clone(),
            cfg.clone(),
            drain.clone(),
        ));
        let gate_task = tokio::spawn(gate::run(
            verdict_rx,
            gate::Sinks {
                spans: span_tx,
                announce: cfg.announce.clone(),
                promotion_status: cfg.promotion_status.clone(),
                confirmations: cfg.confirmations.clone(),
            },
            cfg.leadership.clone(),
            crate::dora::Dora::new(metrics.clone(), cfg.dora_max_series),
            metrics.clone(),
        ));
        let export_task = tokio::spawn(pipeline::run(
            span_rx,
            exporter,
            metrics,
            cfg.export_buffer.clone(),
            cfg.export_outcomes.clone(),
        ));
        Agent {
            handle,
            drain,
            engine_task,
            gate_task,
            export_task,
        }
    }

    /// Ends the engine and export tasks where they are, as SIGKILL would: nothing queued is
    /// applied, nothing finished is exported, nothing in flight is awaited.
    pub fn kill(self) {
        self.engine_task.abort();
        self.gate_task.abort();
        self.export_task.abort();
    }

    /// Stops taking input, applies what is queued, exports what is finished. Returns when done
    /// or at the deadline, whichever comes first.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        self.drain.cancel();
        let Agent {
            handle,
            engine_task,
            gate_task,
            export_task,
            ..
        } = self;
        let metrics = handle.metrics.clone();
        drop(handle);
        let work = async {
            let _ = engine_task.await;
            let _ = gate_task.await;
            let _ = export_task.await;
        };
        let in_time = tokio::time::timeout(deadline, work).await.is_ok();
        ShutdownReport {
            in_time,
            spans_lost: metrics.spans_pending.get().max(0) as u64,
        }
    }
}

/// How shutdown went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// `false`: the deadline cut it short.
    pub in_time: bool,
    /// Finished spans that were neither delivered nor already counted as dropped.
    pub spans_lost: u64,
}

impl ShutdownReport {
    pub fn clean(&self) -> bool {
        self.in_time && self.spans_lost == 0
    }
}

struct StoryStore {
    capacity: usize,
    stories: VecDeque<Story>,
}

impl StoryStore {
    /// Keeps `s`, and beyond the capacity forgets the oldest stories, except those `named`
    /// (the promotion behind what runs on some workload, or a newer failure there: at most a
    /// few per followed Deployment, kept for `explain --workload`).
    fn push(&mut self, s: Story, named: impl Fn(&str) -> bool) {
        self.stories.retain(|x| x.promotion_id != s.promotion_id);
        self.stories.push_front(s);
        while self.stories.len() > self.capacity {
            let Some(i) = self.stories.iter().rposition(|x| !named(&x.promotion_id)) else {
                break;
            };
            self.stories.remove(i);
        }
    }

    fn get(&self, id: &str) -> Option<&Story> {
        self.stories.iter().find(|s| s.promotion_id == id)
    }
}

/// Where the engine task sends what it produces.
struct Outlets {
    /// Verdicts (story and spans), to the gate.
    verdicts: mpsc::Sender<gate::Verdict>,
    /// Probe requests, when probing is on.
    probes: Option<mpsc::Sender<ProbeRequest>>,
    /// Pod list requests, when a client can list them.
    pod_lists: Option<mpsc::Sender<PodListRequest>>,
    /// How many promotions are open, for the intake's cap.
    open: Arc<std::sync::atomic::AtomicUsize>,
    /// While a watcher has not finished its initial list (or what it listed is still queued),
    /// verdicts wait ([`Engine::hold`]).
    readiness: Arc<Readiness>,
}

/// How long after start verdicts wait for the watchers' initial lists at most.
const LIST_HOLD: Duration = Duration::from_secs(60);

/// Whether a watcher's initial list is still to come ([`Engine::hold`]). Bounded: a kind that
/// cannot be listed (forbidden, failing) must not stop every verdict.
fn listing(readiness: &Readiness, started: std::time::Instant) -> bool {
    started.elapsed() < LIST_HOLD
        && readiness
            .waiting()
            .is_some_and(|w| w.iter().any(|p| p.starts_with("watch/")))
}

/// How long verdicts wait for a watch's re-list at most.
const RELIST_HOLD: Duration = Duration::from_secs(60);

/// Whether a watch that lost its place is still re-listing ([`Engine::pause`]). Bounded: a list
/// that keeps failing must not stop every verdict.
fn relisting(readiness: &Readiness) -> bool {
    readiness
        .relisting_since()
        .is_some_and(|since| since.elapsed() < RELIST_HOLD)
}

async fn engine_loop(
    mut engine: Engine,
    mut events: mpsc::Receiver<DeliveryEvent>,
    mut queries: mpsc::Receiver<Query>,
    outlets: Outlets,
    metrics: Arc<Metrics>,
    cfg: AgentConfig,
    drain: tokio_util::sync::CancellationToken,
) {
    let mut store = StoryStore {
        capacity: cfg.stories.max(1),
        stories: VecDeque::new(),
    };
    let mut interval = tokio::time::interval(cfg.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Vec<SpanRecord> = Vec::new();
    let mut draining = false;
    let started = std::time::Instant::now();
    loop {
        let hold = listing(&outlets.readiness, started) || (engine.held() && !events.is_empty());
        let pause = relisting(&outlets.readiness) || (engine.paused() && !events.is_empty());
        let outputs = if hold != engine.held() {
            engine.hold(hold)
        } else if pause != engine.paused() {
            engine.pause(pause)
        } else {
            tokio::select! {
                biased;
                _ = drain.cancelled(), if !draining => {
                    draining = true;
                    events.close();
                    continue;
                }
                Some(q) = queries.recv() => {
                    answer(q, &engine, &store, &cfg);
                    continue;
                }
                ev = events.recv() => match ev {
                    Some(ev) => {
                        metrics.observations.get_or_create(&KindLabel { kind: body_kind(&ev.body) }).inc();
                        // Watchers may have registered since the loop last looked.
                        if !engine.held() && listing(&outlets.readiness, started) {
                            engine.hold(true);
                        }
                        // A watch began to re-list since the loop last looked.
                        if !engine.paused() && relisting(&outlets.readiness) {
                            engine.pause(true);
                        }
                        // The end of a watcher's list, behind everything it listed: only now
                        // is that list applied (or kept by the hold).
                        let listed = match &ev.body {
                            EventBody::Relisted(r) => Some(crate::admin::watch_part(
                                r.kind.as_str(),
                                r.namespace.as_deref(),
                            )),
                            _ => None,
                        };
                        let out = engine.apply(ev);
                        if let Some(part) = listed {
                            outlets.readiness.set(&part, true);
                            outlets.readiness.relist_done(&part);
                        }
                        out
                    }
                    None => break,
                },
                _ = interval.tick() => {
                    let outputs = engine.tick(cfg.clock.now());
                    report_size(&engine, &metrics);
                    outputs
                }
            }
        };
        metrics.engine_queue_depth.set(events.len() as i64);
        let n = engine.open_promotions();
        outlets.open.store(n, std::sync::atomic::Ordering::Relaxed);
        metrics.open_promotions.set(n as i64);
        for o in outputs {
            match o {
                Output::Span(s) => pending.push(s),
                Output::Probe(req) => {
                    let queued = outlets
                        .probes
                        .as_ref()
                        .is_some_and(|p| p.try_send(req).is_ok());
                    if !queued {
                        metrics
                            .observations_dropped
                            .get_or_create(&KindLabel {
                                kind: "probe_request",
                            })
                            .inc();
                    }
                }
                Output::ListPods(req) => {
                    let queued = outlets
                        .pod_lists
                        .as_ref()
                        .is_some_and(|p| p.try_send(req).is_ok());
                    if !queued && outlets.pod_lists.is_some() {
                        metrics
                            .observations_dropped
                            .get_or_create(&KindLabel {
                                kind: "pod_list_request",
                            })
                            .inc();
                    }
                }
                Output::Story(mut story) => {
                    story.trace_link = trace_link(
                        cfg.trace_url_template.as_deref(),
                        story.trace_id,
                        story.start,
                        story.end,
                    );
                    log_story(&story);
                    if cfg.skip_unchanged && story.outcome == crate::story::Outcome::NoChange {
                        // Still a verdict (counted, its status written); only its trace stays out.
                        pending.clear();
                    }
                    let verdict = gate::Verdict {
                        story: (*story).clone(),
                        spans: FinishedSpans {
                            promotion_id: story.promotion_id.clone(),
                            spans: std::mem::take(&mut pending),
                        },
                    };
                    // Waits while the gate (then the export buffer) is full: back-pressure.
                    if let Err(lost) = outlets.verdicts.send(verdict).await {
                        metrics
                            .spans_dropped
                            .inc_by(lost.0.spans.spans.len() as u64);
                    }
                    store.push(*story, |id| engine.names_promotion(id));
                }
            }
        }
    }
    info!(
        message = "Engine drained.",
        open_promotions = engine.open_promotions()
    );
}

/// What the engine holds, on `/metrics` (`fluxtrace_engine_objects`).
fn report_size(engine: &Engine, metrics: &Metrics) {
    let size = engine.size();
    for (kind, n) in [
        ("open_promotions", size.open_promotions),
        ("finished_promotions", size.finished_promotions),
        ("sources", size.sources),
        ("reconcilers", size.reconcilers),
        ("deployments", size.deployments),
        ("receivers", size.receivers),
        ("image_objects", size.image_objects),
        ("canaries", size.canaries),
        ("unclaimed_rollouts", size.unclaimed_rollouts),
        ("replicasets", size.replicasets),
        ("buffered_events", size.buffered_events),
    ] {
        metrics
            .engine_objects
            .get_or_create(&KindLabel { kind })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Counts a verdict in `fluxtrace_promotions_total`: on the replica that passes it on (the
/// leader), so that a scrape of every replica counts it once.
fn count_story(story: &Story, metrics: &Metrics) {
    metrics
        .promotions
        .get_or_create(&OutcomeLabel {
            outcome: story.outcome.as_str(),
            divergence_stage: divergence_stage(story),
        })
        .inc();
}

fn divergence_stage(story: &Story) -> &'static str {
    story
        .divergence
        .as_ref()
        .map_or("none", |d| d.stage.as_str())
}

/// Logs a verdict (on every replica: each says what it saw).
fn log_story(story: &Story) {
    let stage = divergence_stage(story);
    info!(
        message = "Promotion finished.",
        promotion_id = %story.promotion_id,
        outcome = story.outcome.as_str(),
        divergence_stage = stage,
        divergence_reason = story.divergence.as_ref().map(|d| d.reason.as_str()).unwrap_or(""),
        trace_id = %story.trace_id,
        trace_link = story.trace_link.as_deref().unwrap_or(""),
    );
}

/// The story of the promotion that delivered what runs on a workload.
fn workload_story(
    engine: &Engine,
    store: &StoryStore,
    namespace: &str,
    name: &str,
    link: crate::correlate::LinkFn<'_>,
) -> Result<Story, WorkloadError> {
    let workload = format!("{namespace}/{name}");
    let w = engine
        .workload(namespace, name, link)
        .ok_or_else(|| WorkloadError::NotFollowed(workload.clone()))?;
    let Some(delivered) = w.delivered_by else {
        return Err(WorkloadError::NoPromotion {
            workload,
            newer: w.newer.map(|n| (n.id, n.outcome)),
        });
    };
    let id = delivered.id;
    store
        .get(&id)
        .cloned()
        .ok_or(WorkloadError::NotKept { workload, id })
}

fn answer(q: Query, engine: &Engine, store: &StoryStore, cfg: &AgentConfig) {
    let template = cfg.trace_url_template.as_deref();
    let link = |id, start, end| trace_link(template, id, start, end);
    match q {
        Query::Story(id, tx) => {
            let s = store.get(&id).cloned().or_else(|| {
                engine.progress(&id).map(|mut s| {
                    s.trace_link = trace_link(
                        cfg.trace_url_template.as_deref(),
                        s.trace_id,
                        s.start,
                        s.end,
                    );
                    s
                })
            });
            let _ = tx.send(s);
        }
        Query::Workloads(filter, tx) => {
            let _ = tx.send(engine.workloads(&filter, &link));
        }
        Query::WorkloadStory(namespace, name, tx) => {
            let _ = tx.send(workload_story(engine, store, &namespace, &name, &link));
        }
        Query::Recent(env, limit, tx) => {
            let list = store
                .stories
                .iter()
                .filter(|s| {
                    env.as_deref()
                        .is_none_or(|e| s.environment.as_deref() == Some(e))
                })
                .take(limit)
                .cloned()
                .collect();
            let _ = tx.send(list);
        }
    }
}

/// Runs each requested probe in its own task (the prober bounds how many run at once) and
/// hands the result back to the engine.
async fn probe_loop(
    mut requests: mpsc::Receiver<ProbeRequest>,
    prober: Prober,
    handle: EngineHandle,
) {
    while let Some(req) = requests.recv().await {
        let prober = prober.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            let result = prober.probe(&req, &handle.clock).await;
            info!(
                message = "Traffic probed.",
                promotion_id = %result.promotion_id,
                url = %result.url,
                verdict = ?result.verdict,
                matched = result.matched,
                samples = result.samples
            );
            let ev = DeliveryEvent {
                at: result.finished,
                body: EventBody::ProbeResult(result),
            };
            let _ = handle.submit(ev).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Beyond its capacity the store forgets the oldest stories, except those a workload names.
    #[test]
    fn the_story_store_keeps_the_stories_workloads_name() {
        let (_, text) = crate::replay::EXAMPLES
            .iter()
            .find(|(n, _)| *n == "git-success.jsonl")
            .expect("the git-success recording");
        let r = crate::replay::run(text, crate::correlate::EngineConfig::default());
        let story = |id: &str| Story {
            promotion_id: id.to_string(),
            ..r.traces[0].story.clone()
        };
        let mut store = StoryStore {
            capacity: 2,
            stories: VecDeque::new(),
        };
        let named = |id: &str| id == "delivered";
        for id in ["old", "delivered", "a", "b", "c"] {
            store.push(story(id), named);
        }
        let ids = |store: &StoryStore| -> Vec<String> {
            store
                .stories
                .iter()
                .map(|s| s.promotion_id.clone())
                .collect()
        };
        assert_eq!(ids(&store), ["c", "delivered"]);
        // Once nothing names it, it goes like any other.
        store.push(story("d"), |_| false);
        assert_eq!(ids(&store), ["d", "c"]);
        // Stories workloads name are kept beyond the capacity.
        for id in ["x", "y", "z"] {
            store.push(story(id), |_| true);
        }
        assert_eq!(store.stories.len(), 5);
    }
}
