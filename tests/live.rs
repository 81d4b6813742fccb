//! The agent against a test Kubernetes API server (kube's real HTTP client, list and watch,
//! disconnects and `410 Gone`), exporting to an in-process OTLP receiver: what it sends must be
//! what `fluxtrace replay` of the same recording sends.
//!
//! The agent's clock is driven by the test (the recording's `at` of the line being served), so
//! times that come from arrival agree with the recording too.

use std::collections::BTreeMap;
use std::time::Duration;

use fluxtrace::agent::AgentConfig;
use fluxtrace::correlate::EngineConfig;
use fluxtrace::export::Exporter;
use fluxtrace::metrics::{KindLabel, Metrics};
use fluxtrace::replay::EXAMPLES;
use fluxtrace::sources::kube::WATCHED;
use fluxtrace_testkit::agent::{eventually, restarts, Disrupt, LiveAgent, TestClock};
use fluxtrace_testkit::kube_api::{KubeApi, ServerHandle};
use fluxtrace_testkit::otlp_receiver::{export_settings, OtlpReceiver};
use fluxtrace_testkit::recordings::example;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio_util::sync::CancellationToken;

const CLUSTER: &str = "live";

fn engine_config() -> EngineConfig {
    EngineConfig {
        cluster: CLUSTER.into(),
        ..EngineConfig::default()
    }
}

/// A span as it crossed the wire, in a form that compares whole.
type WireSpan = (
    String,
    String,
    String,
    String,
    u64,
    u64,
    i32,
    String,
    Vec<String>,
    usize,
    usize,
);

fn wire(service: Option<String>, s: &Span) -> (String, WireSpan) {
    let attrs = fluxtrace_testkit::otlp_receiver::sorted_attributes(s);
    let status = s.status.clone().unwrap_or_default();
    (
        hex(&s.span_id),
        (
            hex(&s.trace_id),
            hex(&s.parent_span_id),
            s.name.clone(),
            service.unwrap_or_default(),
            s.start_time_unix_nano,
            s.end_time_unix_nano,
            status.code,
            status.message,
            attrs,
            s.events.len(),
            s.links.len(),
        ),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What `fluxtrace replay` sends for a recording.
async fn replayed(text: &str) -> BTreeMap<String, WireSpan> {
    let receiver = OtlpReceiver::start().await;
    let r = fluxtrace::replay::run(text, engine_config());
    let spans: Vec<_> = r.spans().cloned().collect();
    let mut exporter = Exporter::new(export_settings(receiver.endpoint(), CLUSTER));
    exporter
        .export(spans)
        .await
        .expect("export to the receiver");
    exporter.shutdown();
    receiver
        .spans()
        .iter()
        .map(|(svc, s)| wire(svc.clone(), s))
        .collect()
}

/// The test API server, the OTLP receiver, and the agent watching the one and exporting to the
/// other.
struct Live {
    server: ServerHandle,
    receiver: OtlpReceiver,
    agent: LiveAgent,
}

impl Live {
    async fn start(api: KubeApi) -> Live {
        Live::start_with(api, None).await
    }

    async fn start_with(api: KubeApi, probe: Option<fluxtrace::probe::ProbeSettings>) -> Live {
        let server = api.start().await;
        let receiver = OtlpReceiver::start().await;
        let agent = LiveAgent::start(AgentConfig {
            engine: engine_config(),
            export: Some(export_settings(receiver.endpoint(), CLUSTER)),
            tick: Duration::from_millis(20),
            probe,
            ..AgentConfig::default()
        });
        Live {
            server,
            receiver,
            agent,
        }
    }

    /// Serves the recording line by line, each observation applied before the next line.
    async fn play(&mut self, text: &str, disrupt: Disrupt) {
        self.agent.play(&self.server, text, disrupt).await;
    }

    /// Moves the clock past every deadline and waits for the spans.
    async fn finish(&mut self, want: usize) -> Vec<(Option<String>, Span)> {
        self.agent.pass_deadlines();
        let r = &self.receiver;
        eventually("the spans at the receiver", || r.spans().len() >= want).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.agent.stop().await;
        self.receiver.spans()
    }
}

fn by_id(spans: &[(Option<String>, Span)]) -> BTreeMap<String, WireSpan> {
    let mut map = BTreeMap::new();
    for (svc, s) in spans {
        let (id, w) = wire(svc.clone(), s);
        assert!(
            map.insert(id.clone(), w).is_none(),
            "span {id} arrived twice"
        );
    }
    map
}

async fn live_equals_replay(disrupt: Disrupt) {
    for (name, text) in EXAMPLES {
        let want = replayed(text).await;
        let mut live = Live::start(KubeApi::with_recording(text)).await;
        live.play(text, disrupt).await;
        let got = by_id(&live.finish(want.len()).await);
        assert_eq!(got.len(), want.len(), "{name}: span count");
        for (id, w) in &want {
            assert_eq!(
                got.get(id),
                Some(w),
                "{name}: span {id} differs ({disrupt:?})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_equals_replay_for_every_recording() {
    live_equals_replay(Disrupt::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnects_mid_recording_change_nothing() {
    live_equals_replay(Disrupt::Disconnect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_mid_recording_relists_without_duplicates() {
    live_equals_replay(Disrupt::Gone).await;
}

/// One LIST item whose metadata does not decode (a number for a name) is skipped and counted;
/// the rest of its list, and the watch of its kind, go on: every re-list after `410 Gone` meets
/// it again, and the trace is still the one replay gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_that_does_not_decode_is_skipped_and_its_kind_still_watched() {
    let name = "oci-success.jsonl";
    let text = example(name);
    let want = replayed(text).await;
    let mut live = Live::start(KubeApi::with_recording(text)).await;
    live.server.add_raw_list_item(
        "Deployment",
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": 42, "namespace": "apps", "uid": "bad-1"},
            "spec": {"replicas": "three"},
        }),
    );
    live.play(text, Disrupt::Gone).await;
    let skipped = live
        .agent
        .metrics
        .decode_errors
        .get_or_create(&fluxtrace::metrics::KindError {
            kind: "Deployment",
            error_type: "invalid_object",
        })
        .get();
    let deployments = "/apis/apps/v1/deployments";
    assert!(
        live.server.list_count(deployments) >= 2,
        "the Deployments were listed again after 410"
    );
    assert_eq!(
        skipped,
        live.server.list_count(deployments) as u64,
        "the bad item is skipped and counted once per list that holds it"
    );
    let got = by_id(&live.finish(want.len()).await);
    assert_eq!(got, want, "{name}");
}

/// A LIST that never answers is given up after the list timeout and made again; the kind is
/// then watched as if nothing had happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_that_hangs_is_timed_out_and_made_again() {
    let name = "git-success.jsonl";
    let text = example(name);
    let want = replayed(text).await;
    let mut live = Live::start(KubeApi::with_recording(text)).await;
    let kustomizations = "/apis/kustomize.toolkit.fluxcd.io/v1/kustomizations";
    live.server
        .hang_lists("kustomizations", Duration::from_secs(600), 1);
    live.agent.watch_settings.list_timeout = Some(Duration::from_millis(500));
    let before = restarts(&live.agent.metrics);
    live.play(text, Disrupt::None).await;
    assert_eq!(
        live.server.list_count(kustomizations),
        2,
        "the hung LIST, then one that was answered"
    );
    assert!(
        restarts(&live.agent.metrics) > before,
        "the timeout is counted"
    );
    let got = by_id(&live.finish(want.len()).await);
    assert_eq!(got, want, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_crd_is_skipped_and_the_rest_is_traced() {
    let name = "oci-success.jsonl";
    let text = example(name);
    let want = replayed(text).await;
    let api = KubeApi::with_recording(text)
        .without_group("helm.toolkit.fluxcd.io")
        .without_kind("Bucket");
    let mut live = Live::start(api).await;
    live.play(text, Disrupt::None).await;
    // Ready although two kinds are missing: they are skipped, not waited for.
    assert_eq!(live.agent.readiness.waiting(), Some(vec![]));
    let got = by_id(&live.finish(want.len()).await);
    assert_eq!(got, want, "{name}");
    assert_eq!(
        live.server
            .list_count("/apis/helm.toolkit.fluxcd.io/v2/helmreleases"),
        0,
        "nothing listed for a kind that is not served"
    );
}

/// `fluxtrace record` against the test API server, then `replay` of what it wrote (with the
/// promotion reports and Flux events put back where they came): the same spans as the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_then_replay_gives_the_same_spans() {
    use fluxtrace::record::{record, RecordSettings};
    let watched = |kind: &str| WATCHED.iter().any(|w| w.kind == kind);
    for (name, text) in EXAMPLES {
        let want = replayed(text).await;
        let server = KubeApi::with_recording(text).start().await;
        let clock = TestClock::default();
        let set = |at: &str| clock.set(at);
        let dir =
            std::env::temp_dir().join(format!("fluxtrace-record-{}-{name}", std::process::id()));
        let file = tokio::fs::File::create(&dir).await.expect("temp file");
        let lines: Vec<&str> = text.lines().collect();
        set(server.recording().initial_at().expect("lines"));
        let initial = server.apply_initial();
        let stop = CancellationToken::new();
        let task = tokio::spawn(record(
            server.api_server(),
            RecordSettings {
                clock: clock.clock(),
                rediscover: Some(Duration::from_millis(200)),
                ..RecordSettings::default()
            },
            file,
            stop.clone(),
        ));
        let written = |path: &std::path::Path| {
            std::fs::read_to_string(path)
                .map(|t| t.lines().count())
                .unwrap_or(0)
        };
        // The initial state, then the line that says every initial list is in.
        let mut expected = initial.iter().filter(|a| watched(&a.kind)).count() + 1;
        eventually("the initial state recorded", || {
            written(&dir) >= expected
                && std::fs::read_to_string(&dir).is_ok_and(|t| t.contains(r#""kind":"synced""#))
        })
        .await;
        let mut others: Vec<(usize, &str)> = Vec::new();
        let first_after = initial
            .iter()
            .filter_map(|a| a.index)
            .max()
            .map_or(0, |i| i + 1);
        for line in lines.iter().skip(first_after) {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            if v["kind"] == "synced" {
                continue; // the recorder writes its own
            }
            set(v["at"].as_str().expect("at"));
            if v["kind"] == "watch" {
                let a = server.apply_next().expect("watch line");
                if watched(&a.kind) {
                    expected += 1;
                    eventually("the line recorded", || written(&dir) >= expected).await;
                }
            } else {
                others.push((expected, line));
            }
        }
        stop.cancel();
        let summary = task.await.expect("record task").expect("recorded");
        let recorded = std::fs::read_to_string(&dir).expect("recording");
        let _ = std::fs::remove_file(&dir);
        assert_eq!(
            summary.lines.values().sum::<u64>() as usize,
            expected,
            "{name}"
        );
        // Put the reports and Flux events back between the recorded lines.
        let mut merged = String::new();
        let mut rec = recorded.lines();
        let mut done = 0;
        for (pos, line) in others {
            while done < pos {
                merged.push_str(rec.next().expect("line"));
                merged.push('\n');
                done += 1;
            }
            merged.push_str(line);
            merged.push('\n');
        }
        for l in rec {
            merged.push_str(l);
            merged.push('\n');
        }
        assert!(!recorded.contains("managedFields"));
        let got = replayed(&merged).await;
        assert_eq!(got, want, "{name}: replay of the recording");
    }
}

/// The real binary: `fluxtrace run` watching the test API server, SIGTERM while a promotion is
/// still open. It exits within its shutdown deadline and the finished traces reach the receiver.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_recording_exits_in_time_with_finished_spans_delivered() {
    let text = example("untraced-rollout.jsonl");
    let server = KubeApi::with_recording(text).start().await;
    let receiver = OtlpReceiver::start().await;
    server.apply_initial();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = server.kubeconfig("live");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fluxtrace"))
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cluster-name",
            "sig",
            "--settle",
            "1s",
            "--shutdown-timeout",
            "5s",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-retries",
            "0",
        ])
        .env("KUBECONFIG", &config)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("fluxtrace run");
    // Ready once every watcher has listed.
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let start = std::time::Instant::now();
    loop {
        let ok = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
            && http_status(&ready).await == Some(200);
        if ok {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.apply_rest();
    let r = &receiver;
    let start = std::time::Instant::now();
    while r.spans().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the finished trace never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A change that starts another rollout: still open when the signal comes.
    server.apply(
        "MODIFIED",
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "cache", "namespace": "ops", "uid": "late", "generation": 9},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": "redis:8"}]}}},
            "status": {"observedGeneration": 8, "replicas": 1}
        }),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().expect("pid");
    let sent = std::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(7), child.wait())
        .await
        .expect("exits within the 5 s shutdown deadline (plus start-up slack)")
        .expect("exit status");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "took {:?}",
        sent.elapsed()
    );
    let names: Vec<String> = receiver
        .spans()
        .iter()
        .map(|(_, s)| s.name.clone())
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == "promotion").count(),
        1,
        "{names:?}"
    );
    assert!(names.contains(&"rollout".to_string()));
    let _ = std::fs::remove_file(config);
}

/// A bare HTTP/1.1 GET (no client crate needed for a status line).
async fn http_status(url: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_flux_serving_only_betas_is_discovered_and_traced() {
    let name = "oci-success.jsonl";
    let text = example(name);
    let want = replayed(text).await;
    // OCIRepository was v1beta2-only before source-controller v1.6.0.
    let api = KubeApi::with_recording(text).serve_kind_at("OCIRepository", "v1beta2");
    let mut live = Live::start(api).await;
    live.play(text, Disrupt::None).await;
    let got = by_id(&live.finish(want.len()).await);
    assert_eq!(got, want, "{name}");
    assert!(
        live.server
            .list_count("/apis/source.toolkit.fluxcd.io/v1beta2/ocirepositories")
            >= 1
    );
    assert_eq!(
        live.server
            .list_count("/apis/source.toolkit.fluxcd.io/v1/ocirepositories"),
        0
    );
}

/// A workload that opted in to the traffic probe: after its rollout the agent probes a real
/// HTTP server and the trace gets a `traffic.probe` span with what traffic served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_probes_traffic_after_a_rollout() {
    // The checkout Deployment opts in.
    let (annotated, settings) =
        fluxtrace_testkit::agent::probed(example("oci-success.jsonl"), "1.8.0", |_| true).await;
    let mut live = Live::start_with(KubeApi::with_recording(&annotated), Some(settings)).await;
    live.play(&annotated, Disrupt::None).await;
    let m = live.agent.metrics.clone();
    eventually("the probe result", || {
        m.observations
            .get_or_create(&KindLabel {
                kind: "probe_result",
            })
            .get()
            == 1
    })
    .await;
    let spans = live.finish(6).await;
    let traffic: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "traffic.probe")
        .collect();
    assert_eq!(traffic.len(), 1);
    let t = traffic[0];
    assert_eq!(t.status.clone().unwrap_or_default().code, 1, "status OK");
    let attr = |k: &str| {
        t.attributes
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| format!("{:?}", kv.value))
    };
    assert!(attr("url.full").is_some_and(|v| v.contains("/version")));
    assert!(attr("delivery.probe.expected").is_some_and(|v| v.contains("1.8.0")));
    assert!(attr("delivery.probe.matched").is_some_and(|v| v.contains('5')));
    let root = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "promotion")
        .expect("root");
    assert_eq!(t.parent_span_id, root.span_id);
}

/// An object that does not decode (a wrong type in a field the agent reads) is skipped and
/// counted; the watch goes on and the traces are whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_does_not_decode_is_skipped_and_counted() {
    skipped_and_counted(
        "git-success.jsonl",
        &[serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "broken", "namespace": "web", "uid": "b1", "generation": 1},
            "spec": {"replicas": "many"}
        })],
        &[("Deployment", "invalid_object")],
    )
    .await;
}

/// Plays bundled recording `name`, applies `bad` objects after it, and checks that each is
/// counted as `counted` says (kind, error type) exactly once, that no watch restarted, and that
/// the traces are those of the replay.
async fn skipped_and_counted(
    name: &str,
    bad: &[serde_json::Value],
    counted: &[(&'static str, &'static str)],
) {
    let text = example(name);
    let want = replayed(text).await;
    let mut live = Live::start(KubeApi::with_recording(text)).await;
    live.play(text, Disrupt::None).await;
    for object in bad {
        live.server.apply("ADDED", object.clone());
    }
    let m = live.agent.metrics.clone();
    let errors = move || -> Vec<u64> {
        counted
            .iter()
            .map(|&(kind, error_type)| {
                m.decode_errors
                    .get_or_create(&fluxtrace::metrics::KindError { kind, error_type })
                    .get()
            })
            .collect()
    };
    let once = vec![1; counted.len()];
    let e = errors.clone();
    let o = once.clone();
    eventually("the decode errors to be counted", move || e() == o).await;
    let got = by_id(&live.finish(want.len()).await);
    assert_eq!(got, want, "{name}");
    assert_eq!(errors(), once, "each counted once: {counted:?}");
    assert_eq!(
        restarts(&live.agent.metrics),
        0,
        "a bad object does not restart the watch"
    );
}

fn held(m: &Metrics, kind: &'static str) -> i64 {
    m.engine_objects.get_or_create(&KindLabel { kind }).get()
}

/// Objects deleted while every watch was down: the re-list after `410 Gone` leaves them out,
/// the agent takes them as deleted (kube-runtime's `InitDone` contract), and the engine forgets
/// them: `fluxtrace_engine_objects` goes down, and the traces already sent are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_deleted_while_the_watch_was_down_are_forgotten_after_the_relist() {
    let name = "multi-env-oci.jsonl";
    let text = example(name);
    let want = replayed(text).await;
    let mut live = Live::start(KubeApi::with_recording(text)).await;
    live.play(text, Disrupt::None).await;
    // Every promotion reaches its verdict first.
    live.agent.pass_deadlines();
    let r = &live.receiver;
    eventually("the spans at the receiver", || {
        r.spans().len() >= want.len()
    })
    .await;
    let m = live.agent.metrics.clone();
    eventually("the engine's size on /metrics", || {
        held(&m, "deployments") == 2
            && held(&m, "reconcilers") == 2
            && held(&m, "sources") == 2
            && held(&m, "open_promotions") == 0
    })
    .await;
    // The staging environment is torn down while the agent cannot watch.
    for (kind, ns, obj) in [
        ("Deployment", "podinfo-staging", "podinfo"),
        ("Kustomization", "flux-system", "podinfo-staging"),
        ("OCIRepository", "flux-system", "podinfo-staging"),
    ] {
        let before = restarts(&m);
        let ended = live.server.delete_while_watches_down(kind, ns, obj);
        assert!(ended > 0, "watches were open");
        eventually("re-lists after 410", || restarts(&m) > before).await;
        let s = &live.server;
        eventually("watches to reopen", || s.open_watches() >= ended).await;
    }
    eventually("the engine to forget what was deleted", || {
        held(&m, "deployments") == 1 && held(&m, "reconcilers") == 1 && held(&m, "sources") == 1
    })
    .await;
    live.agent.stop().await;
    assert_eq!(
        by_id(&live.receiver.spans()),
        want,
        "{name}: no span added or lost"
    );
}
/// `fluxtrace record` writes what a re-list reveals: an object deleted while its watch was
/// down becomes a DELETED line, so a replay of the recording forgets it as the agent does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_writes_objects_deleted_during_a_watch_gap_as_deleted_lines() {
    use fluxtrace::record::{record, RecordSettings};
    let server = KubeApi::with_recording(example("oci-success.jsonl"))
        .start()
        .await;
    let initial = server.apply_initial();
    let path = std::env::temp_dir().join(format!("fluxtrace-record-gap-{}", std::process::id()));
    let file = tokio::fs::File::create(&path).await.expect("temp file");
    let stop = CancellationToken::new();
    let task = tokio::spawn(record(
        server.api_server(),
        RecordSettings {
            rediscover: Some(Duration::from_millis(200)),
            ..RecordSettings::default()
        },
        file,
        stop.clone(),
    ));
    let watched = |kind: &str| WATCHED.iter().any(|w| w.kind == kind);
    let expected = initial.iter().filter(|a| watched(&a.kind)).count();
    let written = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    eventually("the initial state recorded", || {
        written(&path).lines().count() >= expected
    })
    .await;
    let dep = initial
        .iter()
        .find(|a| a.kind == "Deployment")
        .expect("a Deployment in the initial list");
    let ns = dep.namespace.clone().unwrap_or_default();
    let ended = server.delete_while_watches_down("Deployment", &ns, &dep.name);
    assert!(ended > 0, "watches were open");
    let deleted = |t: &str| {
        t.lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["type"] == "DELETED"
                && v["object"]["kind"] == "Deployment"
                && v["object"]["metadata"]["name"] == dep.name.as_str()
                && v["object"]["metadata"]["namespace"] == ns.as_str()
        })
    };
    eventually("the DELETED line", || deleted(&written(&path))).await;
    stop.cancel();
    task.await.expect("record task").expect("recorded");
    let recorded = written(&path);
    let _ = std::fs::remove_file(&path);
    // Every line decodes; the deletion is one of them.
    let decoded = fluxtrace::sources::recording::decode_all(&recorded);
    assert!(decoded.bad.is_empty(), "{:?}", decoded.bad);
    assert!(decoded.events.iter().any(|e| matches!(
        &e.body,
        fluxtrace::model::EventBody::Deleted(o) if o.name == dep.name
    )));
}

/// Image automation objects missing fields, live: an ImagePolicy whose `latestRef` has no
/// `name` and an ImageUpdateAutomation with a push commit that is not 40 hex are skipped and
/// counted; the watches go on and the automated trace is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_objects_missing_fields_are_skipped_and_counted() {
    skipped_and_counted(
        "image-automation-success.jsonl",
        &[
            serde_json::json!({
                "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
                "metadata": {"name": "broken", "namespace": "flux-system", "uid": "p1", "generation": 1},
                "status": {"latestRef": {"tag": "3.15.0"}}
            }),
            serde_json::json!({
                "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageUpdateAutomation",
                "metadata": {"name": "broken", "namespace": "flux-system", "uid": "a1", "generation": 1},
                "status": {"lastPushCommit": "78e7e93", "lastPushTime": "2026-11-26T10:00:14Z"}
            }),
        ],
        &[
            ("ImagePolicy", "missing_field"),
            ("ImageUpdateAutomation", "invalid_field"),
        ],
    )
    .await;
}

/// `--skip-unchanged` on the agent: a promotion that changed nothing still gets its verdict,
/// and its trace stays out; without the flag the same trace is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_unchanged_keeps_the_verdict_and_leaves_the_trace_out() {
    let text = fluxtrace_testkit::recordings::unreported_without_rollout();
    let id = "unreported/flux-system/web/78e7e93a2812";
    for skip in [true, false] {
        let server = KubeApi::with_recording(&text).start().await;
        let receiver = OtlpReceiver::start().await;
        let mut agent = LiveAgent::start(AgentConfig {
            engine: engine_config(),
            export: Some(export_settings(receiver.endpoint(), CLUSTER)),
            tick: Duration::from_millis(20),
            skip_unchanged: skip,
            ..AgentConfig::default()
        });
        agent.play(&server, &text, Disrupt::None).await;
        agent.pass_deadlines();
        let handle = agent.handle.clone();
        let mut story = None;
        for _ in 0..250 {
            story = handle
                .story(id)
                .await
                .filter(|s| s.outcome != fluxtrace::story::Outcome::InProgress);
            if story.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let story = story.expect("the verdict");
        assert_eq!(story.outcome, fluxtrace::story::Outcome::NoChange);
        if !skip {
            let r = &receiver;
            eventually("the no_change trace", || r.spans().len() >= 4).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        agent.stop().await;
        let spans = receiver.spans().len();
        if skip {
            assert_eq!(
                spans, 0,
                "--skip-unchanged: no span of a no_change promotion"
            );
        } else {
            assert_eq!(spans, 4, "source, reconcile, apply and the root");
        }
    }
}

/// The watches go down after any line of the image-automation recordings (every
/// `FLUXTRACE_RELIST_STRIDE`-th line after the initial list, default 20, and the last) and come
/// back with `410 Gone` at once, three lines later or at the end: the re-list shows each object
/// as it is then, and the agent sends what replay of the recording sends. While a watch
/// re-lists, verdicts wait for the whole list, applied in delivery order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_down_and_gone_410_anywhere_in_image_automation_change_nothing() {
    let stride = std::env::var("FLUXTRACE_RELIST_STRIDE")
        .ok()
        .map(|s| {
            s.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| panic!("FLUXTRACE_RELIST_STRIDE={s}: a whole number >= 1"))
        })
        .unwrap_or(20);
    for (name, text) in EXAMPLES
        .iter()
        .filter(|(n, _)| n.contains("image-automation"))
    {
        let want = replayed(text).await;
        let end = text.lines().count();
        // Down for no line, a few, or the rest of the recording (the re-list then delivers
        // the whole delivery at once, kinds in any order).
        for gap in [0, 3, end] {
            let mut next = None;
            loop {
                let mut live = Live::start(KubeApi::with_recording(text)).await;
                let from = live.agent.begin(&live.server, text).await;
                let down = next.unwrap_or(from).min(end);
                let back = (down + gap).min(end);
                let agent = &mut live.agent;
                agent
                    .serve(&live.server, text, from..down, Disrupt::None)
                    .await;
                agent
                    .serve_through_watch_gap(&live.server, text, down..back)
                    .await;
                agent
                    .serve(&live.server, text, back..end, Disrupt::None)
                    .await;
                let got = by_id(&live.finish(want.len()).await);
                let differ: Vec<&str> = want
                    .iter()
                    .filter(|(id, w)| got.get(*id) != Some(*w))
                    .map(|(_, w)| w.2.as_str())
                    .collect();
                assert!(
                    differ.is_empty() && got.len() == want.len(),
                    "{name}: watches down after line {down}, back with 410 after line {back}: \
                     {} spans, {} expected; these differ: {differ:?}",
                    got.len(),
                    want.len()
                );
                if down == end {
                    break;
                }
                next = Some(down + stride);
            }
        }
    }
}
