//! The live agent watching a large synthetic cluster through the test Kubernetes API server
//! (kube's real client, list + watch over HTTP): initial sync time, steady-state observations
//! per second, resident memory and bytes per watched object, each against a baseline that only
//! decodes the same watch stream. Issue 3, "Benchmark"; figures in docs/performance.md.
//!
//! `cargo bench --bench watch`. The binary runs itself in several roles
//! (`FLUXTRACE_BENCH_ROLE`), so that every RSS figure belongs to exactly one thing:
//!
//! - **server**: builds the cluster (`fluxtrace_testkit::cluster`; deterministic: no random source; times relative to
//!   `FLUXTRACE_BENCH_T0`) and serves it with `fluxtrace_testkit::kube_api` on 2 tokio workers.
//!   Control lines on stdin: `live`, `burst` (the two halves of the change stream, see below),
//!   `stats` (its CPU time), `quit`. Its memory and CPU are its own.
//! - **baseline**: starts a server child, then one kube watcher per kind of `WATCHED` (served
//!   version discovered the same way), deserializing into `DeserializeGuard<KubeObject>` and
//!   dropping every object. Measures sync time, objects/s of the stream and its own RSS.
//! - **agent**: starts a server child, then `Agent::start` (system clock, no OTLP export) and
//!   `spawn_with_client`. Measures the same, from the `observations` metric family.
//! - **profile**: no server, no kube: the same objects, one at a time, serialized, decoded into
//!   `KubeObject`, turned into events and applied to a bare `Engine` on one thread, held until
//!   the last one as the agent holds its initial lists, with the RSS growth after each kind and
//!   after the release: where the agent's memory goes.
//! - no role: runs baseline, agent and profile one after the other (same `T0`, so the same bytes
//!   on the wire) and prints the tables.
//!
//! Cluster (defaults: the minimum): `K` Kustomizations (`flux-system/app-NNNN`), each
//! with its GitRepository, `5 K` Deployments (5 per Kustomization, labelled
//! `kustomize.toolkit.fluxcd.io/name`/`namespace`, 10 per namespace of `team-NNN`), `15 K`
//! ReplicaSets (3 per Deployment: the current one and two scaled to zero, owner references), and
//! `25 K` core/v1 Events (Deployment, ReplicaSet and Pod events of the last 50 minutes). Shapes
//! follow examples/recordings/*.jsonl, plus the `managedFields` a real API server sends.
//!
//! Change stream: `P` promotions, each on its own Kustomization (round robin), 93 changes each:
//! the GitRepository fetches and stores a new revision (annotated with the promotion id), a
//! `NewArtifact` Event, the Kustomization fetches, builds and applies it (with its `Progressing`
//! and `ReconciliationSucceeded` Events), and each of its 5 Deployments rolls: generation bump,
//! new ReplicaSet, scale up/down, pod Events, the oldest ReplicaSet deleted (history limit 2),
//! rollout complete. Two halves, measured apart:
//!
//! - **live**: the server applies the first half one change at a time while the watches are
//!   open; the rate is bounded by the test server's own apply (clones and serializes each change).
//! - **burst**: the server ends every watch and applies the second half under its lock (a
//!   recording's `apply_rest`); the watchers come back and each gets its backlog at once. Timed
//!   from the server having applied it: the rate the watcher side sustains (steady state). If a
//!   watch came back before the server held its lock, that run is repeated (twice at most).
//!
//! Since two shared cores carry the test server too, CPU time (`/proc/self/stat`, of this process
//! and of the server) is reported next to wall time: objects per CPU-second do not depend on who
//! else is running.
//!
//! Both the baseline and the agent list as the agent does by default: streaming lists
//! (`sendInitialEvents`), which the test server serves; `FLUXTRACE_BENCH_LISTS=paged` makes
//! both list in pages of 500 instead.
//!
//! Environment: `FLUXTRACE_BENCH_KUSTOMIZATIONS` (default 2000 times `FLUXTRACE_BENCH_SCALE`,
//! default 1; 10 is the large cluster), `FLUXTRACE_BENCH_PROMOTIONS` (default 400),
//! `FLUXTRACE_BENCH_LISTS` (`streaming` or `paged`), `FLUXTRACE_BENCH_T0` (unix seconds;
//! default now).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxtrace::admin::Readiness;
use fluxtrace::agent::{Agent, AgentConfig, Clock, EngineHandle};
use fluxtrace::cluster::ListMode;
use fluxtrace::correlate::{Engine, EngineConfig};
use fluxtrace::metrics::{KindError, KindLabel, Metrics};
use fluxtrace::model::DeliveryEvent;
use fluxtrace::sources::kube::{spawn_with_client, WatchSettings, Watched, WATCHED};
use fluxtrace::sources::object::{self, KubeObject};
use fluxtrace_testkit::agent::restarts;
use fluxtrace_testkit::bench::{fail, proc_status_kib};
use fluxtrace_testkit::cluster::{
    split_stream, ts, Cluster, Shape, CHANGES_PER_PROMOTION, EVENTS_PER_DEPLOYMENT,
    STREAM_EVENT_IDS,
};
use fluxtrace_testkit::kube_api;
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::Api;
use kube::core::{ApiResource, DeserializeGuard};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const ROLE: &str = "FLUXTRACE_BENCH_ROLE";
/// Longest wait for a sync or a stream before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(900);
const MIB: f64 = 1024.0 * 1024.0;

/// How the baseline and the agent list (`FLUXTRACE_BENCH_LISTS`).
fn list_mode() -> ListMode {
    match std::env::var("FLUXTRACE_BENCH_LISTS").as_deref() {
        Ok("paged") => ListMode::Paged,
        Ok("streaming") | Err(_) => ListMode::Streaming,
        Ok(other) => fail(format!(
            "FLUXTRACE_BENCH_LISTS={other:?}: streaming or paged"
        )),
    }
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("server") => server_main(),
        Ok("baseline") => measure_main(Mode::Baseline),
        Ok("agent") => measure_main(Mode::Agent),
        Ok("profile") => profile_main(),
        Ok(other) => fail(format!("unknown {ROLE}={other:?}")),
        Err(_) => parent_main(),
    }
}

// =============================================================================================
// Process memory
// =============================================================================================

/// A `/proc/self/status` field in bytes (`VmRSS`, `VmHWM`).
fn proc_status(field: &str) -> u64 {
    proc_status_kib(field).map_or(0, |kib| kib * 1024)
}

fn rss() -> u64 {
    proc_status("VmRSS")
}

fn hwm() -> u64 {
    proc_status("VmHWM")
}

// =============================================================================================
// Server role
// =============================================================================================

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ServerInfo {
    url: String,
    objects: BTreeMap<String, u64>,
    initial_objects: u64,
    initial_json_bytes: u64,
    /// Changes applied one by one while the watches are open.
    live_changes: u64,
    /// Changes applied while the watches are away, then replayed to them as a backlog.
    burst_changes: u64,
    stream_by_kind: BTreeMap<String, u64>,
    stream_json_bytes: u64,
    build_s: f64,
    /// The server's CPU time when it was ready (the build), in seconds.
    cpu_at_ready_s: f64,
    /// The server's peak RSS (VmHWM) when it was ready, in bytes.
    hwm_at_ready: u64,
}

fn server_main() {
    let shape = Shape::from_env();
    let started = Instant::now();
    let (live, burst) = split_stream(shape);
    let mut info = ServerInfo {
        live_changes: live.len() as u64,
        burst_changes: burst.len() as u64,
        ..ServerInfo::default()
    };
    let at = ts(shape.t0 + 240);
    let mut recording = String::new();
    for (_, object) in live.iter().chain(burst.iter()) {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        *info.stream_by_kind.entry(kind).or_default() += 1;
        info.stream_json_bytes += serde_json::to_vec(object).map_or(0, |v| v.len() as u64);
    }
    // Moved into each line rather than cloned: the stream's values are most of what the server
    // holds before it applies the cluster.
    for (event_type, object) in burst {
        let line = json!({"at": at, "kind": "watch", "type": event_type, "object": object});
        recording.push_str(&serde_json::to_string(&line).unwrap_or_else(|e| fail(e)));
        recording.push('\n');
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(e));
    let server = rt.block_on(kube_api::KubeApi::new().recording(&recording).start());
    drop(recording);
    info.url = server.url();
    let mut applied = 0u64;
    Cluster::new(shape).initial(|kind, object| {
        info.initial_json_bytes += serde_json::to_vec(&object).map_or(0, |v| v.len() as u64);
        *info.objects.entry(kind.to_string()).or_default() += 1;
        server.apply("ADDED", object);
        applied += 1;
        if applied.is_multiple_of(10_000) {
            server.compact(); // the store keeps every change for watches from older versions
        }
    });
    server.compact();
    info.initial_objects = applied;
    info.build_s = started.elapsed().as_secs_f64();
    info.cpu_at_ready_s = cpu_s();
    info.hwm_at_ready = hwm();
    let mut out = std::io::stdout();
    let line = serde_json::to_string(&info).unwrap_or_else(|e| fail(e));
    writeln!(out, "READY {line}").unwrap_or_else(|e| fail(e));
    out.flush().unwrap_or_else(|e| fail(e));

    let mut live = Some(live);
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_default();
        let t = Instant::now();
        let n = match line.trim() {
            "live" => {
                let changes = live.take().unwrap_or_default();
                let n = changes.len();
                for (event_type, object) in changes {
                    server.apply(event_type, object);
                }
                n
            }
            "burst" => {
                // The watches go away (as on a network blip) and come back while the server
                // applies everything under its lock; each then gets its backlog at once.
                server.drop_watches();
                server.apply_rest().len()
            }
            "stats" => {
                writeln!(out, "STATS {:.2} {}", cpu_s(), hwm()).unwrap_or_else(|e| fail(e));
                out.flush().unwrap_or_else(|e| fail(e));
                continue;
            }
            "quit" => break,
            _ => continue,
        };
        writeln!(out, "STREAMED {n} {:.3}", t.elapsed().as_secs_f64()).unwrap_or_else(|e| fail(e));
        out.flush().unwrap_or_else(|e| fail(e));
    }
    drop(server);
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// A server child process and its control lines.
struct ServerProc {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    info: ServerInfo,
    /// The server's peak RSS (VmHWM) at the last `stats`, in bytes.
    hwm: u64,
}

impl ServerProc {
    async fn start() -> ServerProc {
        let exe = std::env::current_exe().unwrap_or_else(|e| fail(e));
        let mut child = tokio::process::Command::new(exe)
            .env(ROLE, "server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| fail(format!("cannot start the server: {e}")));
        let stdin = child.stdin.take().unwrap_or_else(|| fail("server stdin"));
        let stdout = child.stdout.take().unwrap_or_else(|| fail("server stdout"));
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let info: ServerInfo = loop {
            let line = lines
                .next_line()
                .await
                .unwrap_or_else(|e| fail(e))
                .unwrap_or_else(|| fail("the server ended before it was ready"));
            if let Some(json) = line.strip_prefix("READY ") {
                break serde_json::from_str(json).unwrap_or_else(|e| fail(e));
            }
        };
        let hwm = info.hwm_at_ready;
        ServerProc {
            child,
            stdin,
            lines,
            info,
            hwm,
        }
    }

    fn client(&self) -> Client {
        let uri = self.info.url.parse().unwrap_or_else(|e| fail(e));
        Client::try_from(kube::Config::new(uri)).unwrap_or_else(|e| fail(e))
    }

    /// Asks the server to apply part of the stream (`live` or `burst`); the answer (its own
    /// apply time) comes later.
    async fn stream(&mut self, part: &str) {
        self.stdin
            .write_all(format!("{part}\n").as_bytes())
            .await
            .unwrap_or_else(|e| fail(e));
        self.stdin.flush().await.unwrap_or_else(|e| fail(e));
    }

    /// The server's CPU time so far, in seconds (and its peak RSS so far, in `hwm`).
    async fn cpu_s(&mut self) -> f64 {
        self.stdin
            .write_all(b"stats\n")
            .await
            .unwrap_or_else(|e| fail(e));
        self.stdin.flush().await.unwrap_or_else(|e| fail(e));
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .unwrap_or_else(|e| fail(e))
                .unwrap_or_else(|| fail("the server ended"));
            if let Some(rest) = line.strip_prefix("STATS ") {
                let mut fields = rest.split_whitespace();
                let cpu = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0.0);
                self.hwm = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
                return cpu;
            }
        }
    }

    async fn streamed(&mut self) -> f64 {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .unwrap_or_else(|e| fail(e))
                .unwrap_or_else(|| fail("the server ended mid-stream"));
            if let Some(rest) = line.strip_prefix("STREAMED ") {
                return rest
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0);
            }
        }
    }

    async fn quit(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        let _ = self.stdin.flush().await;
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

// =============================================================================================
// Measuring roles: baseline and agent
// =============================================================================================

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Baseline,
    Agent,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct RunResult {
    server: ServerInfo,
    sync_s: f64,
    sync_cpu_s: f64,
    /// Objects or observations done at the end of the sync (decoded, or applied + dropped).
    synced: u64,
    /// Live part: from asking the server until everything is done.
    live_s: f64,
    live_cpu_s: f64,
    live_server_s: f64,
    /// Burst part: from the server having applied it (backlog waiting) until done.
    burst_s: f64,
    burst_cpu_s: f64,
    burst_server_s: f64,
    /// Burst changes not yet done when the server had applied the burst (normally all: the
    /// watches come back only then).
    burst_left: u64,
    /// The server's CPU time during the sync, the live part and the burst.
    server_sync_cpu_s: f64,
    server_live_cpu_s: f64,
    server_burst_cpu_s: f64,
    /// The server's peak RSS (VmHWM) at the end of the stream, in bytes.
    server_hwm: u64,
    rss_before: u64,
    rss_after_sync: u64,
    hwm_after_sync: u64,
    rss_after_stream: u64,
    hwm_after_stream: u64,
    dropped_sync: u64,
    dropped_stream: u64,
    decode_errors: u64,
    watch_restarts: u64,
    /// Agent: observations applied by kind at the end.
    observations: BTreeMap<String, u64>,
}

/// CPU time of this process so far (user + system, all threads, 10 ms ticks), in seconds.
fn cpu_s() -> f64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let tick = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok());
    (tick(14).unwrap_or(0.0) + tick(15).unwrap_or(0.0)) / 100.0
}

/// Sync, then the live and the burst part of the stream; `done` counts finished objects,
/// `idle` says nothing is left in flight.
async fn phases(
    server: &mut ServerProc,
    r: &mut RunResult,
    start: Instant,
    done: impl Fn() -> u64,
    idle: impl Fn() -> bool,
    dropped: impl Fn() -> u64,
) {
    let cpu = cpu_s();
    let initial = server.info.initial_objects;
    let mut last = u64::MAX;
    wait_for("the initial sync", || {
        let n = done();
        let stable = n == last;
        last = n;
        n >= initial && idle() && stable
    })
    .await;
    r.sync_s = start.elapsed().as_secs_f64();
    r.sync_cpu_s = cpu_s() - cpu;
    r.synced = done();
    r.dropped_sync = dropped();
    (r.rss_after_sync, r.hwm_after_sync) = (rss(), hwm());
    let server_cpu = server.cpu_s().await;
    r.server_sync_cpu_s = server_cpu - server.info.cpu_at_ready_s;

    let (cpu, t) = (cpu_s(), Instant::now());
    let target = done() + server.info.live_changes;
    server.stream("live").await;
    wait_for("the live stream", || done() >= target && idle()).await;
    r.live_s = t.elapsed().as_secs_f64();
    r.live_cpu_s = cpu_s() - cpu;
    r.live_server_s = server.streamed().await;
    let server_cpu_live = server.cpu_s().await;
    r.server_live_cpu_s = server_cpu_live - server_cpu;

    let target = done() + server.info.burst_changes;
    let cpu = cpu_s();
    server.stream("burst").await;
    r.burst_server_s = server.streamed().await;
    let t = Instant::now();
    r.burst_left = target.saturating_sub(done());
    wait_for("the burst", || done() >= target && idle()).await;
    r.burst_s = t.elapsed().as_secs_f64();
    r.burst_cpu_s = cpu_s() - cpu;
    r.server_burst_cpu_s = server.cpu_s().await - server_cpu_live;
    r.server_hwm = server.hwm;
    r.dropped_stream = dropped() - r.dropped_sync;
    (r.rss_after_stream, r.hwm_after_stream) = (rss(), hwm());
}

fn measure_main(mode: Mode) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(e));
    let r = rt.block_on(async move {
        let server = ServerProc::start().await;
        match mode {
            Mode::Baseline => run_baseline(server).await,
            Mode::Agent => run_agent(server).await,
        }
    });
    println!(
        "RESULT {}",
        serde_json::to_string(&r).unwrap_or_else(|e| fail(e))
    );
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > PATIENCE {
            fail(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

const OBS_KINDS: [&str; fluxtrace::agent::OBSERVATION_KINDS.len()] =
    fluxtrace::agent::OBSERVATION_KINDS;

fn sum_kinds(f: &Family<KindLabel, Counter>) -> u64 {
    OBS_KINDS
        .iter()
        .map(|kind| f.get_or_create(&KindLabel { kind }).get())
        .sum()
}

fn decode_errors(m: &Metrics) -> u64 {
    WATCHED
        .iter()
        .flat_map(|w| {
            ["invalid_object", "missing_field"].map(|error_type| {
                m.decode_errors
                    .get_or_create(&KindError {
                        kind: w.kind,
                        error_type,
                    })
                    .get()
            })
        })
        .sum()
}

/// Observations applied, dropped (queue full) or skipped (decode errors).
fn agent_done(m: &Metrics) -> u64 {
    sum_kinds(&m.observations) + sum_kinds(&m.observations_dropped) + decode_errors(m)
}

async fn run_agent(mut server: ServerProc) -> RunResult {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let mut r = RunResult {
        server: server.info.clone(),
        rss_before: rss(),
        ..RunResult::default()
    };
    let client = server.client();
    let agent = Agent::start(
        AgentConfig {
            engine: EngineConfig {
                cluster: "bench".into(),
                ..EngineConfig::default()
            },
            export: None,
            clock: Clock::system(),
            ..AgentConfig::default()
        },
        metrics.clone(),
        readiness.clone(),
    );
    let handle: EngineHandle = agent.handle.clone();
    let stop = CancellationToken::new();
    let mut watchers = tokio::task::JoinSet::new();
    let start = Instant::now();
    spawn_with_client(
        &mut watchers,
        client,
        WatchSettings {
            lists: list_mode(),
            ..WatchSettings::default()
        },
        handle.clone(),
        stop.clone(),
    );
    phases(
        &mut server,
        &mut r,
        start,
        || agent_done(&metrics),
        || readiness.waiting().is_some_and(|w| w.is_empty()) && handle.queue_depth() == 0,
        || sum_kinds(&metrics.observations_dropped),
    )
    .await;
    r.decode_errors = decode_errors(&metrics);
    r.watch_restarts = restarts(&metrics);
    r.observations = OBS_KINDS
        .iter()
        .map(|kind| {
            (
                kind.to_string(),
                metrics
                    .observations
                    .get_or_create(&KindLabel { kind })
                    .get(),
            )
        })
        .collect();
    stop.cancel();
    while watchers.join_next().await.is_some() {}
    drop(handle);
    agent.shutdown(Duration::from_secs(10)).await;
    server.quit().await;
    r
}

#[derive(Default)]
struct Counts {
    decoded: AtomicU64,
    invalid: AtomicU64,
    listed: AtomicU64,
    restarts: AtomicU64,
}

/// The version of `w` the cluster serves, found as the agent finds it (API discovery); `None`
/// when it is not served (the test server serves no DaemonSets), as the agent skips it.
async fn discover(client: &Client, w: &Watched) -> Option<ApiResource> {
    let start = Instant::now();
    loop {
        match kube::discovery::group(client, w.group).await {
            Ok(group) => {
                return w.versions.iter().find_map(|v| {
                    group
                        .versioned_resources(v)
                        .into_iter()
                        .find(|(ar, _)| ar.kind == w.kind)
                        .map(|(ar, _)| ar)
                })
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return None,
            Err(_) => {}
        }
        if start.elapsed() > PATIENCE {
            fail(format!("{} is not served", w.kind));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A watcher that decodes every object as the agent's does, and drops it.
async fn decode_only(client: Client, w: Watched, counts: Arc<Counts>, stop: CancellationToken) {
    let Some(ar) = discover(&client, &w).await else {
        counts.listed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let api: Api<DeserializeGuard<KubeObject>> = Api::all_with(client, &ar);
    let config = match list_mode() {
        ListMode::Streaming => watcher::Config::default().streaming_lists(),
        ListMode::Paged => watcher::Config::default(),
    };
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed = false;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            n = stream.next() => n,
        };
        match next {
            None => break,
            Some(Ok(Event::InitApply(o) | Event::Apply(o) | Event::Delete(o))) => {
                if o.0.is_err() {
                    counts.invalid.fetch_add(1, Ordering::Relaxed);
                }
                drop(std::hint::black_box(o));
                counts.decoded.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(Event::InitDone)) => {
                if !listed {
                    listed = true;
                    counts.listed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Ok(Event::Init)) => {}
            Some(Err(_)) => {
                counts.restarts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn run_baseline(mut server: ServerProc) -> RunResult {
    let counts = Arc::new(Counts::default());
    let mut r = RunResult {
        server: server.info.clone(),
        rss_before: rss(),
        ..RunResult::default()
    };
    let client = server.client();
    let stop = CancellationToken::new();
    let mut watchers = tokio::task::JoinSet::new();
    let start = Instant::now();
    for w in WATCHED {
        watchers.spawn(decode_only(
            client.clone(),
            *w,
            counts.clone(),
            stop.clone(),
        ));
    }
    drop(client);
    phases(
        &mut server,
        &mut r,
        start,
        || counts.decoded.load(Ordering::Relaxed),
        || counts.listed.load(Ordering::Relaxed) == WATCHED.len() as u64,
        || 0,
    )
    .await;
    r.decode_errors = counts.invalid.load(Ordering::Relaxed);
    r.watch_restarts = counts.restarts.load(Ordering::Relaxed);
    stop.cancel();
    while watchers.join_next().await.is_some() {}
    server.quit().await;
    r
}

// =============================================================================================
// Profile role: where the engine's memory goes
// =============================================================================================

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ProfileRow {
    what: String,
    objects: u64,
    rss_growth: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Profile {
    rows: Vec<ProfileRow>,
    decode_s: f64,
}

/// One object through the agent's decoding and into the engine, as `deliver` does.
fn feed(engine: &mut Engine, object: &Value) -> usize {
    let bytes = serde_json::to_vec(object).unwrap_or_else(|e| fail(e));
    let obj: KubeObject = serde_json::from_slice(&bytes).unwrap_or_else(|e| fail(e));
    let deleted = false;
    match object::to_event(obj, deleted) {
        Ok(Some(body)) => engine
            .apply(DeliveryEvent {
                at: Timestamp::now(),
                body,
            })
            .len(),
        _ => 0,
    }
}

/// Ends a profile phase: `(kind, objects, RSS at its start)`.
fn close_phase(current: &mut Option<(&'static str, u64, u64)>, rows: &mut Vec<ProfileRow>) {
    if let Some((what, n, before)) = current.take() {
        rows.push(ProfileRow {
            what: what.to_string(),
            objects: n,
            rss_growth: rss() as i64 - before as i64,
        });
    }
}

fn profile_main() {
    let shape = Shape::from_env();
    let mut cluster = Cluster::new(shape);
    let mut engine = Engine::new(EngineConfig {
        cluster: "bench".into(),
        ..EngineConfig::default()
    });
    let mut rows: Vec<ProfileRow> = Vec::new();
    let mut current: Option<(&'static str, u64, u64)> = None;
    let started = Instant::now();
    let base = rss();
    // As the agent after a start: the initial lists are held, then released at once.
    engine.hold(true);
    cluster.initial(|kind, object| {
        if current.as_ref().is_none_or(|(k, _, _)| *k != kind) {
            close_phase(&mut current, &mut rows);
            current = Some((kind, 0, rss()));
        }
        feed(&mut engine, &object);
        if let Some(c) = current.as_mut() {
            c.1 += 1;
        }
    });
    close_phase(&mut current, &mut rows);
    let before = rss();
    let released = engine.hold(false).len();
    std::hint::black_box(released);
    rows.push(ProfileRow {
        what: "release of the hold".into(),
        objects: 0,
        rss_growth: rss() as i64 - before as i64,
    });
    let decode_s = started.elapsed().as_secs_f64();
    rows.push(ProfileRow {
        what: "engine after the initial state".into(),
        objects: rows.iter().map(|r| r.objects).sum(),
        rss_growth: rss() as i64 - base as i64,
    });
    // The stream as the agent gets it, generated one promotion at a time.
    let before = rss();
    cluster.events = STREAM_EVENT_IDS;
    let mut changes = Vec::with_capacity(CHANGES_PER_PROMOTION);
    for i in 0..shape.promotions {
        changes.clear();
        cluster.promotion(i, &mut changes);
        for (event_type, object) in changes.drain(..) {
            if event_type == "DELETED" {
                let obj: KubeObject = serde_json::from_value(object).unwrap_or_else(|e| fail(e));
                if let Ok(Some(body)) = object::to_event(obj, true) {
                    engine.apply(DeliveryEvent {
                        at: Timestamp::now(),
                        body,
                    });
                }
            } else {
                feed(&mut engine, &object);
            }
        }
    }
    rows.push(ProfileRow {
        what: "the change stream".into(),
        objects: shape.stream_changes() as u64,
        rss_growth: rss() as i64 - before as i64,
    });
    // The same Events again, about objects nothing correlates (ConfigMaps): only the
    // deduplication map (`seen_events`) keeps anything of them.
    let mut other = Engine::new(EngineConfig::default());
    let mut cluster = Cluster::new(shape);
    cluster.events = 10_000_000;
    let before = rss();
    let mut events = 0u64;
    cluster.initial(|kind, mut object| {
        if kind == "Event" {
            object["involvedObject"]["kind"] = json!("ConfigMap");
            feed(&mut other, &object);
            events += 1;
        }
    });
    rows.push(ProfileRow {
        what: "Events with nothing to attach to (seen_events only)".into(),
        objects: events,
        rss_growth: rss() as i64 - before as i64,
    });
    drop(other);
    let p = Profile { rows, decode_s };
    std::hint::black_box(&engine);
    println!(
        "RESULT {}",
        serde_json::to_string(&p).unwrap_or_else(|e| fail(e))
    );
}

// =============================================================================================
// Parent: run everything, print the tables
// =============================================================================================

fn run_child<T: for<'de> Deserialize<'de>>(role: &str, t0: i64) -> T {
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(e));
    let out = std::process::Command::new(exe)
        .env(ROLE, role)
        .env("FLUXTRACE_BENCH_T0", t0.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| fail(format!("cannot run the {role}: {e}")));
    if !out.status.success() {
        fail(format!("the {role} failed: {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| fail(format!("no result from the {role}: {text}")));
    serde_json::from_str(line).unwrap_or_else(|e| fail(format!("{e}: {line}")))
}

/// A measuring child; run again (twice at most) when a watch came back before the server held
/// its lock for the burst, so that the burst was not a backlog.
fn run_measured(role: &str, t0: i64) -> RunResult {
    let mut r: RunResult = run_child(role, t0);
    for _ in 0..2 {
        if r.burst_left * 10 >= r.server.burst_changes * 9 {
            break;
        }
        println!(
            "  (only {} of {} burst changes were left as a backlog; running the {role} again)",
            r.burst_left, r.server.burst_changes
        );
        r = run_child(role, t0);
    }
    r
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB)
}

fn signed_mib(b: i64) -> String {
    format!("{:+.1} MiB", b as f64 / MIB)
}

fn secs(s: f64) -> String {
    format!("{s:.2} s")
}

fn rate(r: f64) -> String {
    format!("{r:.0}/s")
}

fn ratio(agent: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}x", agent / base)
    } else {
        "-".into()
    }
}

fn parent_main() {
    let shape = Shape::from_env();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "watch bench: {cores} core(s), {cpu}; lists: {:?}",
        list_mode()
    );
    println!(
        "cluster: {k} Kustomizations, {k} GitRepositories, {d} Deployments, {rs} ReplicaSets, {e} Events; stream: {p} promotions, {c} changes",
        k = shape.kustomizations,
        d = shape.deployments(),
        rs = shape.deployments() * 3,
        e = shape.deployments() * EVENTS_PER_DEPLOYMENT,
        p = shape.promotions,
        c = shape.stream_changes(),
    );
    let t0 = shape.t0;
    println!("running the baseline (decode only) ...");
    let base = run_measured("baseline", t0);
    println!("running the agent ...");
    let agent = run_measured("agent", t0);
    println!("profiling the engine ...");
    let profile: Profile = run_child("profile", t0);
    let s = &agent.server;
    let objects = s.initial_objects;
    println!();
    println!(
        "served: {objects} objects, {} of JSON in the initial lists; stream {} + {} changes ({}); server build {}",
        mib(s.initial_json_bytes),
        s.live_changes,
        s.burst_changes,
        mib(s.stream_json_bytes),
        secs(s.build_s)
    );
    let per_object = |r: &RunResult| {
        format!(
            "{:.0} B",
            (r.rss_after_sync as f64 - r.rss_before as f64) / objects as f64
        )
    };
    let per_object_peak = |r: &RunResult| {
        format!(
            "{:.0} B",
            (r.hwm_after_sync as f64 - r.rss_before as f64) / objects as f64
        )
    };
    let live_rate = |r: &RunResult| s.live_changes as f64 / r.live_s;
    let burst_rate = |r: &RunResult| r.burst_left as f64 / r.burst_s;
    let burst_cpu_rate = |r: &RunResult| s.burst_changes as f64 / r.burst_cpu_s;
    let sync_cpu_rate = |r: &RunResult| objects as f64 / r.sync_cpu_s;
    println!();
    println!("| | baseline (decode only) | agent | agent / baseline |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, b: String, a: String, r: String| {
        println!("| {name} | {b} | {a} | {r} |");
    };
    row(
        "initial sync (wall)",
        secs(base.sync_s),
        secs(agent.sync_s),
        ratio(agent.sync_s, base.sync_s),
    );
    row(
        "initial sync: objects per CPU-second",
        rate(sync_cpu_rate(&base)),
        rate(sync_cpu_rate(&agent)),
        ratio(sync_cpu_rate(&agent), sync_cpu_rate(&base)),
    );
    row(
        "live stream: obs/s (server applying one by one)",
        rate(live_rate(&base)),
        rate(live_rate(&agent)),
        ratio(live_rate(&agent), live_rate(&base)),
    );
    row(
        "server's own apply time: live / burst",
        format!(
            "{} / {}",
            secs(base.live_server_s),
            secs(base.burst_server_s)
        ),
        format!(
            "{} / {}",
            secs(agent.live_server_s),
            secs(agent.burst_server_s)
        ),
        "".into(),
    );
    row(
        "burst backlog: obs/s (steady state)",
        rate(burst_rate(&base)),
        rate(burst_rate(&agent)),
        ratio(burst_rate(&agent), burst_rate(&base)),
    );
    row(
        "burst backlog: obs per CPU-second",
        rate(burst_cpu_rate(&base)),
        rate(burst_cpu_rate(&agent)),
        ratio(burst_cpu_rate(&agent), burst_cpu_rate(&base)),
    );
    row(
        "test server CPU: sync / live / burst",
        format!(
            "{:.1} / {:.1} / {:.1} s",
            base.server_sync_cpu_s, base.server_live_cpu_s, base.server_burst_cpu_s
        ),
        format!(
            "{:.1} / {:.1} / {:.1} s",
            agent.server_sync_cpu_s, agent.server_live_cpu_s, agent.server_burst_cpu_s
        ),
        "".into(),
    );
    row(
        "test server peak RSS (VmHWM): ready / end",
        format!(
            "{} / {}",
            mib(base.server.hwm_at_ready),
            mib(base.server_hwm)
        ),
        format!(
            "{} / {}",
            mib(agent.server.hwm_at_ready),
            mib(agent.server_hwm)
        ),
        "".into(),
    );
    row(
        "this process's CPU: sync / live / burst",
        format!(
            "{:.1} / {:.1} / {:.1} s",
            base.sync_cpu_s, base.live_cpu_s, base.burst_cpu_s
        ),
        format!(
            "{:.1} / {:.1} / {:.1} s",
            agent.sync_cpu_s, agent.live_cpu_s, agent.burst_cpu_s
        ),
        ratio(agent.sync_cpu_s, base.sync_cpu_s),
    );
    row(
        "RSS before start",
        mib(base.rss_before),
        mib(agent.rss_before),
        "".into(),
    );
    row(
        "RSS after sync",
        mib(base.rss_after_sync),
        mib(agent.rss_after_sync),
        ratio(agent.rss_after_sync as f64, base.rss_after_sync as f64),
    );
    row(
        "peak RSS (VmHWM) after sync",
        mib(base.hwm_after_sync),
        mib(agent.hwm_after_sync),
        ratio(agent.hwm_after_sync as f64, base.hwm_after_sync as f64),
    );
    row(
        "RSS after stream",
        mib(base.rss_after_stream),
        mib(agent.rss_after_stream),
        ratio(agent.rss_after_stream as f64, base.rss_after_stream as f64),
    );
    row(
        "peak RSS (VmHWM) after stream",
        mib(base.hwm_after_stream),
        mib(agent.hwm_after_stream),
        ratio(agent.hwm_after_stream as f64, base.hwm_after_stream as f64),
    );
    row(
        "bytes/object (RSS after sync − before)",
        per_object(&base),
        per_object(&agent),
        ratio(
            agent.rss_after_sync as f64 - agent.rss_before as f64,
            base.rss_after_sync as f64 - base.rss_before as f64,
        ),
    );
    row(
        "bytes/object (peak after sync − before)",
        per_object_peak(&base),
        per_object_peak(&agent),
        "".into(),
    );
    row(
        "Events dropped (queue full): sync / stream",
        "-".into(),
        format!("{} / {}", agent.dropped_sync, agent.dropped_stream),
        "".into(),
    );
    row(
        "decode errors, watch restarts",
        format!("{}, {}", base.decode_errors, base.watch_restarts),
        format!("{}, {}", agent.decode_errors, agent.watch_restarts),
        "".into(),
    );
    let aim = 64.0 * MIB;
    println!();
    println!(
        "aim: peak RSS under 64 MiB: {} (peak {} after the stream)",
        if (agent.hwm_after_stream as f64) < aim {
            "met"
        } else {
            "MISSED"
        },
        mib(agent.hwm_after_stream)
    );
    println!(
        "agent observations: {}",
        agent
            .observations
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        "engine alone (profile: one thread, objects decoded one at a time, {}):",
        secs(profile.decode_s)
    );
    println!("| what | objects | RSS growth | per object |");
    println!("|---|---:|---:|---:|");
    for r in &profile.rows {
        // A step that applies no object of its own (the release) has no per-object figure.
        let per_object = if r.objects == 0 {
            "–".to_string()
        } else {
            format!("{:.0} B", r.rss_growth as f64 / r.objects as f64)
        };
        println!(
            "| {} | {} | {} | {per_object} |",
            r.what,
            r.objects,
            signed_mib(r.rss_growth),
        );
    }
}
