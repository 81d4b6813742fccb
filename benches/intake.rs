//! Sustained promotion reports over HTTP on loopback: requests per second and p50/p99 latency
//! of `POST /v1/promotions`, against a baseline measured in the same run.
//!
//! `cargo bench --bench intake`. The server (this process) is either
//!
//! - the **baseline**: a trivial axum handler on the same route that reads the body and answers
//!   202 with a small JSON, on the same runtime settings; or
//! - the **intake**: the agent's router (bearer auth, body limit, decode and validate, submit to
//!   the running engine task, story lookup for the trace id), the engine applying every report;
//! - the **durable intake**: the same, with a cluster: each report is written as a Promotion
//!   object to the test API server (kube's real client over loopback HTTP) before the answer,
//!   the Promotion watch feeds it back, and each verdict is written to its status. It also
//!   reports the API writes per promotion (aim: at most 3).
//!
//! The load generator is a separate process (this binary re-run with
//! `FLUXTRACE_BENCH_ROLE=load`) on a single-threaded runtime with keep-alive HTTP/1.1
//! connections, so server and generator share the machine's cores as a colocated CI runner would.
//! Two modes, each after a warm-up:
//!
//! - **closed loop**: every connection sends its next report as soon as the last is answered
//!   (the most the server can take);
//! - **open loop**: reports are scheduled at a fixed rate (default 5,000/s) whatever the answers,
//!   and latency is measured from the scheduled time, so a stall shows up in p99 instead of
//!   slowing the generator down (no coordinated omission).
//!
//! Every report has its own id; apps cycle through 1,000 names, so that a report usually
//! supersedes the previous promotion of its app (a verdict, spans and a story each time) and
//! the engine's memory stays bounded as in a long-running agent.
//!
//! Environment: `FLUXTRACE_BENCH_SECONDS` (per phase, default 10), `FLUXTRACE_BENCH_WARMUP`
//! (seconds, default 2), `FLUXTRACE_BENCH_RATE` (default 5000), `FLUXTRACE_BENCH_DURABLE_RATE`
//! (the durable intake's open loop, default 500), `FLUXTRACE_BENCH_CONNECTIONS` (default 32).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use fluxtrace::admin::{self, Readiness};
use fluxtrace::agent::{Agent, AgentConfig};
use fluxtrace::intake::{self, Auth, Intake};
use fluxtrace::metrics::Metrics;
use fluxtrace_testkit::bench::{env_u64, fail, proc_status_kib};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

const TOKEN: &str = "bench-token-5f2a";
const SHA: &str = "450796ddb2ab6724ee1cc32a4be56da032d1cca0";
const APPS: u64 = 1000;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct LoadSpec {
    target: String,
    /// `None`: closed loop.
    rate: Option<u64>,
    seconds: u64,
    warmup: u64,
    connections: u64,
    /// Distinguishes ids between phases.
    phase: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LoadResult {
    requests: u64,
    errors: u64,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

impl LoadResult {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

fn main() {
    if std::env::var("FLUXTRACE_BENCH_ROLE").as_deref() == Ok("load") {
        let spec: LoadSpec = serde_json::from_str(
            &std::env::var("FLUXTRACE_BENCH_SPEC")
                .unwrap_or_else(|_| fail("no FLUXTRACE_BENCH_SPEC")),
        )
        .unwrap_or_else(|e| fail(format!("bad spec: {e}")));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| fail(e));
        let r = rt.block_on(generate(spec));
        println!("{}", serde_json::to_string(&r).unwrap_or_else(|e| fail(e)));
        return;
    }
    let seconds = env_u64("FLUXTRACE_BENCH_SECONDS", 10);
    let warmup = env_u64("FLUXTRACE_BENCH_WARMUP", 2);
    let rate = env_u64("FLUXTRACE_BENCH_RATE", 5000);
    let connections = env_u64("FLUXTRACE_BENCH_CONNECTIONS", 32);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "intake bench: {cores} core(s); {seconds} s per phase after {warmup} s warm-up; {connections} connections; open loop at {rate}/s"
    );

    let mut rows = Vec::new();
    let load_spec = |target: String, rate: Option<u64>, phase: &str| LoadSpec {
        target,
        rate,
        seconds,
        warmup,
        connections,
        phase: phase.to_string(),
    };
    for (mode, rate) in [("closed loop", None), ("open loop", Some(rate))] {
        let spec = |target: String, phase: &str| load_spec(target, rate, phase);
        let base = with_server(Server::Baseline, |t| run_load(spec(t, "baseline")));
        let intake = with_server(Server::Intake, |t| run_load(spec(t, "intake")));
        rows.push((mode.to_string(), "intake", base, intake));
    }
    let durable_rate = env_u64("FLUXTRACE_BENCH_DURABLE_RATE", 500);
    let mut writes = Vec::new();
    for (mode, rate) in [
        ("closed loop".to_string(), None),
        (format!("open loop at {durable_rate}/s"), Some(durable_rate)),
    ] {
        let spec = |target: String, phase: &str| load_spec(target, rate, phase);
        let base = with_server(Server::Baseline, |t| run_load(spec(t, "baseline-d")));
        let mut durable = with_server(Server::Durable, |t| run_load(spec(t, "durable")));
        writes.push((mode.clone(), durable.3.take()));
        rows.push((mode, "durable intake", base, durable));
    }

    println!();
    println!("| mode | server | reports/s | p50 | p99 | max | errors |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (mode, server, base, intake) in &rows {
        for (name, r) in [
            ("baseline (trivial axum handler)", &base.0),
            (*server, &intake.0),
        ] {
            println!(
                "| {mode} | {name} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
                r.rps(),
                r.p50_us as f64 / 1000.0,
                r.p99_us as f64 / 1000.0,
                r.max_us as f64 / 1000.0,
                r.errors
            );
        }
    }
    println!();
    println!("| mode | server | server / baseline: reports/s | p50 | p99 |");
    println!("|---|---|---:|---:|---:|");
    for (mode, server, base, intake) in &rows {
        let (b, i) = (&base.0, &intake.0);
        println!(
            "| {mode} | {server} | {:.2} | {:.2} | {:.2} |",
            i.rps() / b.rps(),
            i.p50_us as f64 / b.p50_us.max(1) as f64,
            i.p99_us as f64 / b.p99_us.max(1) as f64
        );
    }
    for (mode, server, _, intake) in &rows {
        println!(
            "{mode}, {server}: the engine applied {} of the {} reports answered; server peak RSS {} MiB",
            intake.1, intake.0.requests, intake.2
        );
    }
    for (mode, w) in &writes {
        if let Some(w) = w {
            println!(
                "{mode}, durable intake: {} Promotions created, {} status writes, {} finished: \
                 {:.2} API writes per promotion",
                w.created,
                w.status_writes,
                w.finished,
                (w.created + w.status_writes) as f64 / w.created.max(1) as f64
            );
        }
    }
    let failed = rows
        .iter()
        .any(|(_, _, b, i)| b.0.errors > 0 || i.0.errors > 0 || i.1 < i.0.requests);
    if failed {
        fail("some requests failed or some reports did not reach the engine");
    }
}

enum Server {
    Baseline,
    Intake,
    Durable,
}

/// What the durable intake wrote to the API server.
struct Writes {
    created: u64,
    status_writes: u64,
    /// Promotions whose status holds a verdict.
    finished: u64,
}

/// Runs `load` against a fresh server; returns its result, the reports the engine applied and
/// the server process's peak RSS in MiB.
fn with_server(
    kind: Server,
    load: impl FnOnce(String) -> LoadResult,
) -> (LoadResult, u64, u64, Option<Writes>) {
    // Peak RSS from here on (Linux: writing 5 to clear_refs resets VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(e));
    let metrics = Arc::new(Metrics::new());
    let (addr, agent, api) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| fail(e));
        let addr = listener.local_addr().unwrap_or_else(|e| fail(e));
        let mut api = None;
        let (app, agent) = match kind {
            Server::Baseline => (baseline(), None),
            Server::Durable => {
                let server = fluxtrace_testkit::kube_api::KubeApi::new().start().await;
                let readiness = Arc::new(Readiness::default());
                let (tx, rx) = fluxtrace::resource::sync::channel();
                let agent = Agent::start(
                    tx.into_config(AgentConfig::default()),
                    metrics.clone(),
                    readiness.clone(),
                );
                let stop = tokio_util::sync::CancellationToken::new();
                let mut tasks = tokio::task::JoinSet::new();
                let index = fluxtrace::resource::index::Index::default();
                let writer = fluxtrace::resource::sync::spawn(
                    &mut tasks,
                    server.api_server(),
                    agent.handle.clone(),
                    rx,
                    index.clone(),
                    fluxtrace::resource::sync::SyncSettings {
                        rediscover: Duration::from_secs(300),
                        retention: fluxtrace::resource::sync::Retention::default(),
                        leadership: fluxtrace::leader::Leadership::always(),
                    },
                    stop.clone(),
                );
                let intake = Intake::new(
                    agent.handle.clone(),
                    Arc::new(Auth::with_secrets(&[TOKEN], None)),
                )
                .with_store(fluxtrace::resource::sync::PromotionWriter::new(
                    server.api_server(),
                    "fluxtrace",
                    index,
                ));
                let app =
                    admin::router(metrics.clone(), readiness).merge(intake::http::router(intake));
                api = Some((server, stop, tasks, writer));
                (app, Some(agent))
            }
            Server::Intake => {
                let readiness = Arc::new(Readiness::default());
                let agent =
                    Agent::start(AgentConfig::default(), metrics.clone(), readiness.clone());
                let intake = Intake::new(
                    agent.handle.clone(),
                    Arc::new(Auth::with_secrets(&[TOKEN], None)),
                );
                let app =
                    admin::router(metrics.clone(), readiness).merge(intake::http::router(intake));
                (app, Some(agent))
            }
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, agent, api)
    });
    let result = load(format!("http://{addr}"));
    let (applied, writes) = rt.block_on(async {
        let applied = observations(&metrics);
        let Some((server, stop, mut tasks, writer)) = api else {
            if let Some(a) = agent {
                a.shutdown(Duration::from_secs(10)).await;
            }
            return (applied, None);
        };
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        if let Some(a) = agent {
            a.shutdown(Duration::from_secs(10)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), writer).await;
        let w = server.writes();
        let count = |m: &str, status: bool| {
            w.iter()
                .filter(|r| r.method == m && r.path.ends_with("/status") == status)
                .count() as u64
        };
        let finished = server
            .objects("Promotion")
            .iter()
            .filter(|o| {
                o["status"]["phase"]
                    .as_str()
                    .is_some_and(|p| p != "InProgress")
            })
            .count() as u64;
        let writes = Writes {
            created: count("POST", false),
            status_writes: count("PATCH", true),
            finished,
        };
        (applied, Some(writes))
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    (result, applied, peak_rss_mib(), writes)
}

fn observations(m: &Metrics) -> u64 {
    m.encode()
        .lines()
        .find_map(|l| l.strip_prefix(r#"fluxtrace_observations_total{kind="promotion"} "#))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn peak_rss_mib() -> u64 {
    proc_status_kib("VmHWM").map_or(0, |kib| kib / 1024)
}

/// The trivial handler: reads the body, answers 202 with a small JSON, like the intake does.
fn baseline() -> Router {
    Router::new().route(
        "/v1/promotions",
        post(|_body: Bytes| async {
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "promotion_id": "baseline",
                    "trace_id": "0123456789abcdef0123456789abcdef",
                })),
            )
        }),
    )
}

fn run_load(spec: LoadSpec) -> LoadResult {
    let exe = std::env::current_exe().unwrap_or_else(|e| fail(e));
    let out = Command::new(exe)
        .env("FLUXTRACE_BENCH_ROLE", "load")
        .env(
            "FLUXTRACE_BENCH_SPEC",
            serde_json::to_string(&spec).unwrap_or_else(|e| fail(e)),
        )
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| fail(format!("cannot start the load generator: {e}")));
    if !out.status.success() {
        fail(format!("the load generator failed: {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| fail(format!("{e}: {text}")))
}

// ---- the load generator (its own process) -----------------------------------------------

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(target: &str) -> Sender {
    let addr = target.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| fail(format!("connect {addr}: {e}")));
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap_or_else(|e| fail(format!("handshake: {e}")));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

fn report(phase: &str, i: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"bench-{phase}-{pid}-{i}","environment":"bench","revision":"{SHA}","app":"app-{app}","actor":"ci","pipeline":{{"name":"release","run_id":"{i}","url":"https://ci.example/runs/{i}"}}}}"#,
        pid = std::process::id(),
        app = i % APPS
    ))
}

/// Sends one report; `Err` on a transport error or a status other than 202.
async fn send(sender: &mut Sender, host: &str, body: Bytes) -> Result<(), ()> {
    let req = Request::post("/v1/promotions")
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Full::new(body))
        .map_err(|_| ())?;
    sender.ready().await.map_err(|_| ())?;
    let resp = sender.send_request(req).await.map_err(|_| ())?;
    let ok = resp.status() == StatusCode::ACCEPTED;
    resp.into_body().collect().await.map_err(|_| ())?;
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    errors: u64,
    /// When the last measured request was answered.
    last: Option<Instant>,
}

impl Tally {
    fn record(&mut self, r: Result<(), ()>, since: Instant) {
        match r {
            Ok(()) => self.latencies.push(since.elapsed().as_micros() as u32),
            Err(()) => self.errors += 1,
        }
        self.last = Some(Instant::now());
    }
}

async fn generate(spec: LoadSpec) -> LoadResult {
    let host = spec.target.trim_start_matches("http://").to_string();
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + Duration::from_secs(spec.warmup);
    let end = measure_from + Duration::from_secs(spec.seconds);
    let counter = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..spec.connections {
        senders.push(connect(&spec.target).await);
    }
    let mut tasks = Vec::new();
    match spec.rate {
        None => {
            for mut sender in senders {
                let (counter, host, phase) = (counter.clone(), host.clone(), spec.phase.clone());
                tasks.push(tokio::spawn(async move {
                    let mut t = Tally::default();
                    tokio::time::sleep_until(start.into()).await;
                    loop {
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        let i = counter.fetch_add(1, Ordering::Relaxed);
                        let r = send(&mut sender, &host, report(&phase, i)).await;
                        if now >= measure_from {
                            t.record(r, now);
                        }
                    }
                    t
                }));
            }
        }
        Some(rate) => {
            // A shared queue of (index, scheduled time): a busy connection does not hold up
            // the schedule, and waiting in the queue counts as latency.
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            for mut sender in senders {
                let (rx, host, phase) = (rx.clone(), host.clone(), spec.phase.clone());
                tasks.push(tokio::spawn(async move {
                    let mut t = Tally::default();
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some((i, scheduled)) = next else { break };
                        let r = send(&mut sender, &host, report(&phase, i)).await;
                        if scheduled >= measure_from {
                            t.record(r, scheduled);
                        }
                    }
                    t
                }));
            }
            let at = |i: u64| start + Duration::from_nanos(i * 1_000_000_000 / rate);
            let mut i = 0u64;
            let mut tick = tokio::time::interval_at(start.into(), Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let now = Instant::now();
                // Everything scheduled up to now goes out, stamped with its scheduled time.
                loop {
                    let t = at(i);
                    if t > now || t >= end {
                        break;
                    }
                    let _ = tx.send((i, t));
                    i += 1;
                }
                if at(i) >= end {
                    break;
                }
            }
            drop(tx);
        }
    }
    let mut all = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            all.latencies.extend(t.latencies);
            all.errors += t.errors;
            all.last = all.last.max(t.last);
        }
    }
    // A server that falls behind answers after the window: the rate is what it achieved.
    let took = all
        .last
        .map_or(0.0, |l| {
            l.saturating_duration_since(measure_from).as_secs_f64()
        })
        .max(spec.seconds as f64);
    all.latencies.sort_unstable();
    let pct = |p: f64| {
        if all.latencies.is_empty() {
            0
        } else {
            let i = ((all.latencies.len() as f64 * p).ceil() as usize)
                .clamp(1, all.latencies.len())
                - 1;
            u64::from(all.latencies[i])
        }
    };
    LoadResult {
        requests: all.latencies.len() as u64,
        errors: all.errors,
        seconds: took,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: all.latencies.last().copied().map_or(0, u64::from),
    }
}
