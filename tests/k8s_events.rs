//! Trace links as Kubernetes Events: the live agent replays a bundled recording against the test
//! Kubernetes API server (kube's real client, as in tests/live.rs) and writes, once a promotion
//! reaches its verdict, one `DeliveryTrace` Event on the Kustomization or HelmRelease and on
//! each Deployment it rolled out. The tests assert the requests that reached the server, their
//! content, and that a second agent (a restart) writes nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use fluxtrace::agent::AgentConfig;
use fluxtrace::correlate::EngineConfig;
use fluxtrace::metrics::{ErrorType, Metrics, ResultLabel};
use fluxtrace::sources::recording::decode_line;
use fluxtrace::story::Story;
use fluxtrace_testkit::agent::{Disrupt, LiveAgent, WAIT};
use fluxtrace_testkit::kube_api::{KubeApi, ServerHandle, WriteRecord};
use fluxtrace_testkit::recordings::example;

use sha2::{Digest, Sha256};

const CLUSTER: &str = "events";
/// A template with every placeholder, so the Events prove the link was built from it.
const TEMPLATE: &str = "https://jaeger.example/trace/{trace_id}?start={start_ms}&end={end_ms}";

fn engine_config() -> EngineConfig {
    EngineConfig {
        cluster: CLUSTER.into(),
        ..EngineConfig::default()
    }
}

/// One agent (engine task, watchers, Event writer) on a test clock.
struct Live {
    agent: LiveAgent,
    announcer: Option<tokio::task::JoinHandle<()>>,
}

impl Live {
    fn start(server: &ServerHandle) -> Live {
        let metrics = Arc::new(Metrics::new());
        let (announce, announcer) = fluxtrace::announce::spawn(server.client(), metrics.clone());
        let agent = LiveAgent::start_with_metrics(
            AgentConfig {
                engine: engine_config(),
                tick: Duration::from_millis(20),
                trace_url_template: Some(TEMPLATE.into()),
                announce: Some(announce),
                ..AgentConfig::default()
            },
            metrics,
        );
        Live {
            agent,
            announcer: Some(announcer),
        }
    }

    /// Serves the recording line by line (watch lines through the server, reports and Flux
    /// events straight to the engine), each observation applied before the next line.
    async fn play(&mut self, server: &ServerHandle, text: &str) {
        self.agent.play(server, text, Disrupt::None).await;
    }

    /// Moves the clock past every deadline, waits for the verdicts, then stops: watchers,
    /// engine (drained), and the Event writer (which ends once its queue is written).
    async fn finish(&mut self, promotions: usize) -> Vec<Story> {
        self.agent.pass_deadlines();
        let start = std::time::Instant::now();
        let stories = loop {
            let s = self.agent.handle.recent(None, 100).await;
            if s.len() >= promotions {
                break s;
            }
            assert!(start.elapsed() < WAIT, "timed out waiting for the verdicts");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        self.agent.stop().await;
        if let Some(t) = self.announcer.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .expect("the Event writer ends after the engine")
                .expect("the Event writer does not panic");
        }
        stories
    }

    fn written(&self, result: &'static str) -> u64 {
        self.agent
            .metrics
            .k8s_events
            .get_or_create(&ResultLabel { result })
            .get()
    }

    fn failed(&self) -> u64 {
        [
            "forbidden",
            "invalid",
            "not_found",
            "api",
            "transport",
            "timeout",
        ]
        .into_iter()
        .map(|error_type| {
            self.agent
                .metrics
                .k8s_events_failed
                .get_or_create(&ErrorType { error_type })
                .get()
        })
        .sum()
    }
}

/// What one Event must look like.
struct Expected {
    namespace: &'static str,
    api_version: &'static str,
    kind: &'static str,
    name: &'static str,
    uid: &'static str,
}

/// `<object name>.<first 16 hex of SHA-256(promotion id, NUL, "Kind/namespace/name")>`,
/// computed here independently of the code under test.
fn event_name(promotion_id: &str, e: &Expected) -> String {
    let mut h = Sha256::new();
    h.update(promotion_id.as_bytes());
    h.update([0u8]);
    h.update(format!("{}/{}/{}", e.kind, e.namespace, e.name).as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}.{hex}", e.name)
}

/// The link the template gives for the story `fluxtrace replay` tells of the recording.
fn replayed_story(text: &str) -> Story {
    let r = fluxtrace::replay::run(text, engine_config());
    assert_eq!(r.traces.len(), 1, "one promotion per recording");
    r.traces[0].story.clone()
}

fn link(story: &Story) -> String {
    format!(
        "https://jaeger.example/trace/{}?start={}&end={}",
        story.trace_id,
        story.start.as_millisecond(),
        story.end.as_millisecond()
    )
}

fn posts(writes: &[WriteRecord]) -> Vec<&WriteRecord> {
    writes.iter().filter(|w| w.method == "POST").collect()
}

/// Checks every Event request against the expected objects: one each, nothing else.
fn check_events(
    recording: &str,
    writes: &[WriteRecord],
    story: &Story,
    expected: &[Expected],
    warning: bool,
) -> Vec<String> {
    assert!(
        writes.iter().all(|w| w.method == "POST"),
        "{recording}: only creations, no patch, update or delete: {writes:?}"
    );
    let posts = posts(writes);
    assert_eq!(
        posts.len(),
        expected.len(),
        "{recording}: one Event per object: {:#?}",
        posts.iter().map(|w| &w.body).collect::<Vec<_>>()
    );
    let want_link = link(story);
    let mut names = Vec::new();
    for e in expected {
        let name = event_name(&story.promotion_id, e);
        let w = posts
            .iter()
            .find(|w| w.body["involvedObject"]["kind"] == e.kind)
            .unwrap_or_else(|| panic!("{recording}: no Event on the {}", e.kind));
        let b = &w.body;
        assert_eq!(
            w.path,
            format!("/api/v1/namespaces/{}/events", e.namespace),
            "{recording}: the Event lives in the object's namespace"
        );
        assert_eq!(w.status, 201, "{recording}: created");
        assert_eq!(b["metadata"]["name"], name.as_str(), "{recording}");
        assert_eq!(b["metadata"]["namespace"], e.namespace, "{recording}");
        assert_eq!(
            b["metadata"]["annotations"]["fluxtrace.io/promotion-id"],
            story.promotion_id.as_str()
        );
        assert_eq!(b["reason"], "DeliveryTrace", "{recording}");
        assert_eq!(
            b["type"],
            if warning { "Warning" } else { "Normal" },
            "{recording}"
        );
        assert_eq!(b["source"]["component"], "fluxtrace", "{recording}");
        assert_eq!(b["reportingComponent"], "fluxtrace", "{recording}");
        assert_eq!(b["count"], 1);
        assert_eq!(
            b["lastTimestamp"],
            story.end.to_string().as_str(),
            "{recording}: the Event is dated at the promotion's end"
        );
        let io = &b["involvedObject"];
        assert_eq!(io["apiVersion"], e.api_version, "{recording}");
        assert_eq!(io["namespace"], e.namespace, "{recording}");
        assert_eq!(io["name"], e.name, "{recording}");
        assert_eq!(
            io["uid"], e.uid,
            "{recording}: the uid, so that kubectl describe shows it"
        );
        let message = b["message"].as_str().expect("message");
        assert!(
            message.contains(&want_link),
            "{recording}: the link built from the template, {want_link}: {message}"
        );
        assert!(
            message.contains(&story.promotion_id) && message.contains(story.outcome.as_str()),
            "{recording}: promotion and outcome: {message}"
        );
        names.push(name);
    }
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{recording}: distinct names");
    names
}

async fn replay_with_events(recording: &str) -> (ServerHandle, Story, Vec<WriteRecord>) {
    let text = example(recording);
    let server = KubeApi::with_recording(text).start().await;
    let mut live = Live::start(&server);
    live.play(&server, text).await;
    let stories = live.finish(1).await;
    let story = replayed_story(text);
    assert_eq!(
        stories[0].trace_link.as_deref(),
        Some(link(&story).as_str()),
        "{recording}: the live story has the link replay gives"
    );
    assert_eq!(live.failed(), 0, "{recording}: no Event failed");
    assert_eq!(live.agent.metrics.k8s_events_dropped.get(), 0);
    let writes = server.writes();
    assert_eq!(live.written("created"), posts(&writes).len() as u64);
    assert_eq!(live.written("already_exists"), 0);
    (server, story, writes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_promotion_gets_warning_events_naming_the_divergence() {
    let name = "oci-rollout-imagepull.jsonl";
    let (_server, story, writes) = replay_with_events(name).await;
    assert_eq!(story.promotion_id, "rel-2042");
    check_events(
        name,
        &writes,
        &story,
        &[
            Expected {
                namespace: "flux-system",
                api_version: "kustomize.toolkit.fluxcd.io/v1",
                kind: "Kustomization",
                name: "payments",
                uid: "863c351b-dc14-4019-af2b-6ff61f6b949e",
            },
            Expected {
                namespace: "payments",
                api_version: "apps/v1",
                kind: "Deployment",
                name: "ledger",
                uid: "f527f243-d886-4584-b7aa-09e90fa339d2",
            },
        ],
        true,
    );
    for w in posts(&writes) {
        let m = w.body["message"].as_str().expect("message");
        assert!(
            m.starts_with(
                "Promotion rel-2042 to prod failed — diverged at rollout: ProgressDeadlineExceeded: \
                 ReplicaSet \"ledger-fbq5825668\" has timed out progressing. Cause: ImagePullBackOff. \
                 Trace: https://jaeger.example/trace/"
            ),
            "{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_promotion_gets_normal_events_with_the_link() {
    let name = "oci-success.jsonl";
    let (_server, story, writes) = replay_with_events(name).await;
    check_events(
        name,
        &writes,
        &story,
        &[
            Expected {
                namespace: "flux-system",
                api_version: "kustomize.toolkit.fluxcd.io/v1",
                kind: "Kustomization",
                name: "shop",
                uid: "7ac2c738-34d7-4962-8ac0-e0db9d98e474",
            },
            Expected {
                namespace: "shop",
                api_version: "apps/v1",
                kind: "Deployment",
                name: "checkout",
                uid: "cc363357-dd1d-4690-9f3d-026ec8b11375",
            },
        ],
        false,
    );
    for w in posts(&writes) {
        assert_eq!(
            w.body["message"],
            format!(
                "Promotion rel-2041 to prod succeeded. Trace: {}",
                link(&story)
            )
            .as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helm_release_that_failed_gets_a_warning_event() {
    let name = "helmrelease-upgrade-failure.jsonl";
    let (_server, story, writes) = replay_with_events(name).await;
    check_events(
        name,
        &writes,
        &story,
        &[Expected {
            namespace: "podinfo",
            api_version: "helm.toolkit.fluxcd.io/v2",
            kind: "HelmRelease",
            name: "podinfo",
            uid: "36149638-8f86-4693-bdff-c1950705c081",
        }],
        true,
    );
    let m = posts(&writes)[0].body["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(
        m.contains("diverged at apply: UpgradeFailed: Helm upgrade failed"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untraced_rollout_gets_a_warning_event_on_its_deployment() {
    let name = "untraced-rollout.jsonl";
    let (_server, story, writes) = replay_with_events(name).await;
    assert_eq!(story.traceability.as_str(), "missing");
    check_events(
        name,
        &writes,
        &story,
        &[Expected {
            namespace: "ops",
            api_version: "apps/v1",
            kind: "Deployment",
            name: "cache",
            uid: "964a170e-7a90-44c8-84ce-28c75b0ea527",
        }],
        true,
    );
    let m = posts(&writes)[0].body["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(
        m.contains("no promotion report or promotion-id annotation explains it"),
        "{m}"
    );
}

/// A second agent that sees the same delivery (the restarted agent, here by replaying the
/// recording again on the same API server) posts the same Event names; the server answers 409
/// AlreadyExists, which is no error, and nothing is created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_writes_no_event_twice() {
    let name = "oci-rollout-imagepull.jsonl";
    let text = example(name);
    let server = KubeApi::with_recording(text).start().await;

    let mut first = Live::start(&server);
    first.play(&server, text).await;
    first.finish(1).await;
    let after_first = server.writes();
    let created: BTreeSet<(String, String)> = posts(&after_first)
        .iter()
        .map(|w| (w.path.clone(), w.body["metadata"]["name"].to_string()))
        .collect();
    assert_eq!(created.len(), 2, "{after_first:?}");
    assert_eq!(first.written("created"), 2);

    server.rewind();
    let mut second = Live::start(&server);
    second.play(&server, text).await;
    second.finish(1).await;
    let all = server.writes();
    let again: Vec<&WriteRecord> = posts(&all).into_iter().skip(after_first.len()).collect();
    let reposted: BTreeSet<(String, String)> = again
        .iter()
        .map(|w| (w.path.clone(), w.body["metadata"]["name"].to_string()))
        .collect();
    assert_eq!(reposted, created, "the same names, in the same namespaces");
    assert_eq!(again.len(), 2, "one attempt per object");
    assert!(
        again.iter().all(|w| w.status == 409),
        "answered 409 AlreadyExists: {:?}",
        again.iter().map(|w| w.status).collect::<Vec<_>>()
    );
    assert_eq!(second.written("already_exists"), 2, "counted as written");
    assert_eq!(second.written("created"), 0);
    assert_eq!(second.failed(), 0, "a 409 is not an error");
    let mut per_name: BTreeMap<(String, String), usize> = BTreeMap::new();
    for w in posts(&all).iter().filter(|w| w.status == 201) {
        *per_name
            .entry((w.path.clone(), w.body["metadata"]["name"].to_string()))
            .or_default() += 1;
    }
    assert!(
        per_name.values().all(|n| *n == 1),
        "no Event created twice: {per_name:?}"
    );
    assert!(all.iter().all(|w| w.method == "POST"), "nothing patched");
}

/// The Events fluxtrace writes come back through its own Event watch: they are skipped, so they
/// never become span events of a later promotion. The same reason from someone else is read.
#[test]
fn own_delivery_trace_events_are_not_read_back() {
    let line = |component: &str| {
        serde_json::json!({
            "at": "2026-11-26T10:05:00Z", "kind": "watch", "type": "ADDED",
            "object": {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "ledger.0123456789abcdef", "namespace": "payments", "uid": "e1"},
                "involvedObject": {"kind": "Deployment", "name": "ledger", "namespace": "payments"},
                "reason": "DeliveryTrace", "type": "Warning", "message": "Promotion rel-2042 failed",
                "source": {"component": component}, "reportingComponent": component,
                "lastTimestamp": "2026-11-26T10:05:00Z", "count": 1
            }
        })
        .to_string()
    };
    assert_eq!(decode_line(&line("fluxtrace")).expect("decodes"), None);
    assert!(decode_line(&line("someone-else"))
        .expect("decodes")
        .is_some());
}

// ---- the binary ---------------------------------------------------------------------------

/// `fluxtrace run` against the test API server with the untraced recording, until the trace
/// reached the OTLP receiver; then SIGTERM. Returns the server's writes.
#[cfg(unix)]
async fn run_binary(tag: &str, extra: &[&str]) -> Vec<WriteRecord> {
    let text = example("untraced-rollout.jsonl");
    let server = KubeApi::with_recording(text).start().await;
    let receiver = fluxtrace_testkit::otlp_receiver::OtlpReceiver::start().await;
    server.apply_initial();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = server.kubeconfig(&format!("events-{tag}"));
    let listen = format!("127.0.0.1:{port}");
    let endpoint = receiver.endpoint();
    let mut args = vec![
        "run",
        "--listen",
        &listen,
        "--cluster-name",
        CLUSTER,
        "--settle",
        "1s",
        "--shutdown-timeout",
        "5s",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-retries",
        "0",
    ];
    args.extend_from_slice(extra);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fluxtrace"))
        .args(&args)
        .env("KUBECONFIG", &config)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("fluxtrace run");
    let watching = Duration::from_secs(20);
    let start = std::time::Instant::now();
    // Ready once every watcher has listed (all kinds were listed at least once).
    while server.list_count("/apis/apps/v1/deployments") == 0
        || server.watch_count("/apis/apps/v1/deployments") == 0
    {
        assert!(start.elapsed() < watching, "never started watching");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.apply_rest();
    while receiver.spans().len() < 2 {
        assert!(
            start.elapsed() < watching,
            "the finished trace never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The Event (if any) is written right after the verdict.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(7), child.wait())
        .await
        .expect("exits within the shutdown deadline")
        .expect("exit status");
    assert!(status.success(), "clean exit: {status:?}");
    let _ = std::fs::remove_file(config);
    // The leader election's Lease writes are not what these tests are about.
    server
        .writes()
        .into_iter()
        .filter(|w| !w.path.starts_with("/apis/coordination.k8s.io/"))
        .collect()
}

/// `fluxtrace run` writes Events by default, with the link of the `--trace-backend` preset.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_writes_events_with_the_preset_link_by_default() {
    let writes = run_binary(
        "on",
        &[
            "--trace-backend",
            "jaeger",
            "--trace-base-url",
            "https://jaeger.example/",
        ],
    )
    .await;
    let story = replayed_story(example("untraced-rollout.jsonl"));
    let posts = posts(&writes);
    assert_eq!(posts.len(), 1, "{writes:?}");
    assert_eq!(posts[0].path, "/api/v1/namespaces/ops/events");
    assert_eq!(posts[0].body["type"], "Warning");
    let m = posts[0].body["message"].as_str().expect("message");
    assert!(
        m.ends_with(&format!(
            "Trace: https://jaeger.example/trace/{}",
            story.trace_id
        )),
        "{m}"
    );
}

/// `--no-k8s-events`: nothing is written.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_no_k8s_events_writes_nothing() {
    let writes = run_binary("off", &["--no-k8s-events"]).await;
    assert!(writes.is_empty(), "{writes:?}");
}
