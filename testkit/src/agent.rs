//! The live agent in a test: `Agent::start` (engine task, export as configured) on a clock the
//! test sets, kube watchers on the test API server ([`crate::kube_api`]), and a player that
//! serves a recording line by line (watch lines through the server, promotion reports and Flux
//! events straight to the engine), waiting for each observation to be applied before the next.
//!
//! The agent's clock is the recording's: before each line the clock is set to that line's `at`,
//! so times that come from arrival agree with `fluxtrace replay` of the same recording.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fluxtrace::admin::Readiness;
use fluxtrace::agent::{Agent, AgentConfig, Clock, EngineHandle, OBSERVATION_KINDS};
use fluxtrace::metrics::{KindLabel, Metrics};
use fluxtrace::sources::kube::{spawn_with_client, WatchSettings, WATCHED};
use fluxtrace::sources::recording::decode_line;
use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::kube_api::ServerHandle;

/// The longest a test waits for the agent to catch up.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `done` every 5 ms; fails the test naming `what` after [`WAIT`].
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Observations the engine has applied, of every kind.
pub fn observed(m: &Metrics) -> u64 {
    OBSERVATION_KINDS
        .into_iter()
        .map(|kind| m.observations.get_or_create(&KindLabel { kind }).get())
        .sum()
}

/// Watch restarts (re-lists) of every watched kind.
pub fn restarts(m: &Metrics) -> u64 {
    WATCHED
        .iter()
        .map(|w| {
            m.watch_restarts
                .get_or_create(&KindLabel { kind: w.kind })
                .get()
        })
        .sum()
}

/// What the player does to the watches while it serves a recording.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Disrupt {
    None,
    /// Drop every watch connection after every few lines.
    Disconnect,
    /// Answer with `410 Gone` after every few lines: the watchers re-list.
    Gone,
}

/// A clock the test moves; the agent reads it through [`TestClock::clock`].
#[derive(Clone)]
pub struct TestClock(Arc<Mutex<Timestamp>>);

impl Default for TestClock {
    fn default() -> TestClock {
        TestClock(Arc::new(Mutex::new(Timestamp::UNIX_EPOCH)))
    }
}

impl TestClock {
    fn lock(&self) -> MutexGuard<'_, Timestamp> {
        // A panicking test thread must not stop the agent's clock for the next assertion.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent's view of this clock.
    pub fn clock(&self) -> Clock {
        let now = self.0.clone();
        Clock::from_fn(move || *now.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn now(&self) -> Timestamp {
        *self.lock()
    }

    /// Sets the time to `at` (RFC 3339, as a recording's `at`).
    pub fn set(&self, at: &str) {
        *self.lock() = at.parse().expect("recording time");
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.lock();
        *now += by;
    }
}

/// One agent on a [`TestClock`], with the kube watchers the test starts.
pub struct LiveAgent {
    /// `None` once [`LiveAgent::stop`] has shut it down.
    pub agent: Option<Agent>,
    pub handle: EngineHandle,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub clock: TestClock,
    /// What [`LiveAgent::watch`] (and so [`LiveAgent::play`]) starts the watchers with.
    pub watch_settings: WatchSettings,
    /// [`LiveAgent::serve`] creates a Promotion object for each report line.
    pub reports_as_objects: bool,
    /// What [`LiveAgent::sync_promotions`] keeps of finished Promotions.
    pub retention: fluxtrace::resource::sync::Retention,
    stop: CancellationToken,
    watchers: tokio::task::JoinSet<()>,
    /// Where [`LiveAgent::sync_promotions`] indexes Promotions (for an intake that stores).
    pub promotions: Option<fluxtrace::resource::index::Index>,
    /// The Promotion status writer, when [`LiveAgent::sync_promotions`] started one.
    status_writer: Option<tokio::task::JoinHandle<()>>,
}

impl LiveAgent {
    /// Starts the agent with `config`, its clock replaced by a [`TestClock`] at the epoch.
    pub fn start(config: AgentConfig) -> LiveAgent {
        LiveAgent::start_with_metrics(config, Arc::new(Metrics::new()))
    }

    /// [`LiveAgent::start`] with metrics the test shares with other components (the Event
    /// writer).
    pub fn start_with_metrics(config: AgentConfig, metrics: Arc<Metrics>) -> LiveAgent {
        let clock = TestClock::default();
        let readiness = Arc::new(Readiness::default());
        let agent = Agent::start(
            AgentConfig {
                clock: clock.clock(),
                ..config
            },
            metrics.clone(),
            readiness.clone(),
        );
        LiveAgent {
            handle: agent.handle.clone(),
            agent: Some(agent),
            metrics,
            readiness,
            clock,
            watch_settings: WatchSettings::default(),
            reports_as_objects: false,
            retention: fluxtrace::resource::sync::Retention::default(),
            stop: CancellationToken::new(),
            watchers: tokio::task::JoinSet::new(),
            promotions: None,
            status_writer: None,
        }
    }

    /// Starts the kube watchers on `server` with [`LiveAgent::watch_settings`].
    pub fn watch(&mut self, server: &ServerHandle) {
        self.watch_with(server, self.watch_settings.clone());
    }

    /// Starts the kube watchers on `server` with `settings` (rediscovery every 200 ms unless
    /// set; the server's URL for log lines).
    pub fn watch_with(&mut self, server: &ServerHandle, settings: WatchSettings) {
        spawn_with_client(
            &mut self.watchers,
            server.client(),
            WatchSettings {
                rediscover: settings.rediscover.or(Some(Duration::from_millis(200))),
                server_url: settings.server_url.clone().or_else(|| Some(server.url())),
                ..settings
            },
            self.handle.clone(),
            self.stop.clone(),
        );
    }

    /// Feeds the Promotion objects of `server` to the agent and writes their statuses; `rx` are
    /// the queues whose senders the agent was started with (`StatusInputs::into_config`).
    pub fn sync_promotions(
        &mut self,
        server: &ServerHandle,
        rx: fluxtrace::resource::sync::StatusQueues,
    ) -> fluxtrace::resource::index::Index {
        let index = fluxtrace::resource::index::Index::default();
        let writer = fluxtrace::resource::sync::spawn(
            &mut self.watchers,
            server.api_server(),
            self.handle.clone(),
            rx,
            index.clone(),
            fluxtrace::resource::sync::SyncSettings {
                rediscover: Duration::from_millis(200),
                retention: self.retention,
                leadership: fluxtrace::leader::Leadership::always(),
            },
            self.stop.clone(),
        );
        self.status_writer = Some(writer);
        self.promotions = Some(index.clone());
        index
    }

    /// Waits until every watcher has finished its initial list.
    pub async fn ready(&self) {
        let r = self.readiness.clone();
        eventually("every watcher's initial list", move || {
            r.waiting().is_some_and(|w| w.is_empty())
        })
        .await;
    }

    /// Serves the server's recording (`text`, the same text) line by line: the initial state
    /// before the watchers start, then each later line with the clock at its `at`, each
    /// observation applied before the next line. `disrupt` acts on the watches every 7 lines.
    pub async fn play(&mut self, server: &ServerHandle, text: &str, disrupt: Disrupt) {
        let first_after = self.begin(server, text).await;
        let end = text.lines().count();
        self.serve(server, text, first_after..end, disrupt).await;
    }

    /// Applies the recording's initial state, starts the watchers and waits for them to have
    /// listed it; the index of the first line after the initial state.
    pub async fn begin(&mut self, server: &ServerHandle, text: &str) -> usize {
        let lines: Vec<&str> = text.lines().collect();
        self.clock
            .set(server.recording().initial_at().expect("lines"));
        let initial = server.apply_initial();
        self.watch(server);
        self.ready().await;
        let expected = initial
            .iter()
            .filter(|a| {
                a.index
                    .is_some_and(|i| decode_line(lines[i]).ok().flatten().is_some())
            })
            .count() as u64;
        let m = self.metrics.clone();
        eventually("the initial state", || observed(&m) >= expected).await;
        initial
            .iter()
            .filter_map(|a| a.index)
            .max()
            .map_or(0, |i| i + 1)
    }

    /// Starts the watchers on a server that already holds state (a restarted agent) and waits
    /// until what they listed is applied.
    pub async fn rejoin(&mut self, server: &ServerHandle) {
        self.watch(server);
        self.ready().await;
        let h = self.handle.clone();
        eventually("the re-list to be applied", || h.queue_depth() == 0).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Serves the recording's lines `range` (after the initial state), one at a time. With
    /// [`LiveAgent::reports_as_objects`], promotion reports are created as Promotion objects
    /// (as `kubectl apply` would) instead of being sent to the engine.
    pub async fn serve(
        &mut self,
        server: &ServerHandle,
        text: &str,
        range: std::ops::Range<usize>,
        disrupt: Disrupt,
    ) {
        let lines: Vec<&str> = text.lines().collect();
        let mut expected = observed(&self.metrics);
        for (n, i) in range.enumerate() {
            let line = lines[i];
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            self.clock.set(v["at"].as_str().expect("at"));
            let decoded = decode_line(line).expect("bundled lines decode");
            if v["kind"] == "watch" {
                let applied = server.apply_next().expect("a watch line");
                assert_eq!(applied.index, Some(i), "the server serves lines in order");
            } else if v["kind"] == "promotion" && self.reports_as_objects {
                server.apply("ADDED", promotion_object(&v));
            } else if let Some(ev) = decoded.clone() {
                self.handle.submit(ev).await.expect("agent running");
            }
            if decoded.is_some() {
                expected += 1;
                let m = self.metrics.clone();
                eventually(&format!("line {}", i + 1), || observed(&m) >= expected).await;
            }
            if n % 7 == 6 {
                expected = self.disrupt(server, disrupt, expected).await;
            }
        }
    }

    /// Acts on the watches; returns the observations to expect from now on.
    async fn disrupt(&self, server: &ServerHandle, disrupt: Disrupt, expected: u64) -> u64 {
        match disrupt {
            Disrupt::None => expected,
            Disrupt::Disconnect => {
                let open = server.drop_watches();
                assert!(open > 0, "watches were open");
                eventually("watches to reconnect", || server.open_watches() >= open).await;
                expected
            }
            Disrupt::Gone => {
                let before = restarts(&self.metrics);
                let open = server.expire_watches();
                self.relisted(server, before, open).await
            }
        }
    }

    /// Serves the recording's lines `gap` as if every watch were down meanwhile: the promotion
    /// reports and Flux events in it reach the agent as they come; the objects' changes are
    /// seen only through the re-list after `410 Gone` at its end, each object's last state.
    pub async fn serve_through_watch_gap(
        &mut self,
        server: &ServerHandle,
        text: &str,
        gap: std::ops::Range<usize>,
    ) {
        let lines: Vec<&str> = text.lines().collect();
        for &line in &lines[gap.clone()] {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            self.clock.set(v["at"].as_str().expect("at"));
            if v["kind"] == "watch" {
                continue;
            }
            if let Some(ev) = decode_line(line).expect("bundled lines decode") {
                self.handle.submit(ev).await.expect("agent running");
            }
        }
        let before = restarts(&self.metrics);
        let open = server.apply_until_while_watches_down(gap.end);
        self.relisted(server, before, open).await;
    }

    /// Waits until the `open` watches ended with `410 Gone` have re-listed (watch restarts
    /// counted from `before`) and what they listed is applied; the observations so far.
    async fn relisted(&self, server: &ServerHandle, before: u64, open: usize) -> u64 {
        assert!(open > 0, "watches were open");
        let m = self.metrics.clone();
        // Every watcher re-lists; what the re-list delivers again is counted too.
        eventually("re-lists after 410", || {
            restarts(&m) >= before + open as u64
        })
        .await;
        eventually("watches to reopen", || server.open_watches() >= open).await;
        let h = self.handle.clone();
        eventually("the re-list to be applied", || h.queue_depth() == 0).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        observed(&self.metrics)
    }

    /// Moves the clock past every deadline (3 hours on).
    pub fn pass_deadlines(&self) {
        self.clock.advance(SignedDuration::from_hours(3));
    }

    /// Ends the agent as SIGKILL would: its watchers, Promotion feed, status writer, engine and
    /// export tasks are aborted where they stand; what was queued, finished but not exported,
    /// or not yet written to a Promotion is lost. Only the API server's objects remain.
    pub fn kill(mut self) {
        self.watchers.abort_all();
        if let Some(w) = self.status_writer.take() {
            w.abort();
        }
        if let Some(a) = self.agent.take() {
            a.kill();
        }
    }

    /// Stops the watchers, then the agent (engine drained, exports flushed); asserts that the
    /// shutdown was clean.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        while self.watchers.join_next().await.is_some() {}
        if let Some(a) = self.agent.take() {
            assert!(
                a.shutdown(Duration::from_secs(5)).await.clean(),
                "clean shutdown"
            );
        }
        // The engine has stopped: the last verdicts reach their Promotions.
        if let Some(w) = self.status_writer.take() {
            // Each write is bounded by its own 5 s deadline.
            tokio::time::timeout(Duration::from_secs(15), w)
                .await
                .expect("the status writer ends after the agent")
                .expect("the status writer does not panic");
        }
    }
}

/// The Promotion object a recording's report line becomes: named as the intake names it, in
/// namespace `fluxtrace`, created at the line's `at`, its spec the report with that start.
pub fn promotion_object(line: &serde_json::Value) -> serde_json::Value {
    let report: fluxtrace::model::PromotionReport =
        serde_json::from_value(line["promotion"].clone()).expect("a report line");
    let at: jiff::Timestamp = line["at"].as_str().expect("at").parse().expect("a time");
    let name = fluxtrace::resource::object_name(&report.id);
    serde_json::json!({
        "apiVersion": "fluxtrace.io/v1alpha1",
        "kind": "Promotion",
        "metadata": {
            "name": name, "namespace": "fluxtrace", "generation": 1,
            "uid": format!("uid-{name}"), "creationTimestamp": at.to_string(),
        },
        "spec": fluxtrace::resource::spec_of(&report, at),
    })
}

/// For the traffic probe: a workload on 127.0.0.1 that serves `version` in `X-App-Version` at
/// `/version`, `text` with the Deployment objects `opt_in` picks annotated to be probed there
/// (`fluxtrace.io/probe-url`, `fluxtrace.io/probe-expect: header:X-App-Version`), and probe
/// settings that allow that host and probe every 10 ms.
pub async fn probed(
    text: &str,
    version: &'static str,
    opt_in: impl Fn(&serde_json::Value) -> bool,
) -> (String, fluxtrace::probe::ProbeSettings) {
    use axum::routing::get;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/version",
        get(move || async move { ([("X-App-Version", version)], "") }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let mut annotated = String::new();
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
        let o = &mut v["object"];
        if o["kind"] == "Deployment" && opt_in(o) {
            let a = &mut o["metadata"]["annotations"];
            a["fluxtrace.io/probe-url"] = format!("http://{addr}/version").into();
            a["fluxtrace.io/probe-expect"] = "header:X-App-Version".into();
        }
        annotated.push_str(&v.to_string());
        annotated.push('\n');
    }
    let settings = fluxtrace::probe::ProbeSettings {
        interval: Duration::from_millis(10),
        allow_hosts: vec!["127.0.0.1".into()],
        ..fluxtrace::probe::ProbeSettings::default()
    };
    (annotated, settings)
}
