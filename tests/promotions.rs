//! Promotion objects against the test API server through kube's real client: a Promotion made
//! by anyone is a report, its verdict is written back to its status, a wrong one is marked
//! `InvalidSpec`, the intake stores each report before it answers, and an agent that restarts
//! mid-promotion finishes the same trace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fluxtrace::agent::AgentConfig;
use fluxtrace::correlate::EngineConfig;
use fluxtrace::export::Exporter;
use fluxtrace::intake::{Auth, Intake};
use fluxtrace::replay::EXAMPLES;
use fluxtrace::resource::sync::{self, PromotionWriter};
use fluxtrace_testkit::agent::{eventually, Disrupt, LiveAgent};
use fluxtrace_testkit::kube_api::{KubeApi, ServerHandle};
use fluxtrace_testkit::otlp_receiver::{export_settings, OtlpReceiver};
use fluxtrace_testkit::recordings::example;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{json, Value};
use tower::ServiceExt as _;

const CLUSTER: &str = "live";

fn engine_config() -> EngineConfig {
    EngineConfig {
        cluster: CLUSTER.into(),
        ..EngineConfig::default()
    }
}

/// Span id → everything a user could see of the span.
fn by_id(spans: &[(Option<String>, Span)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (svc, s) in spans {
        let id = hex(&s.span_id);
        let seen = fluxtrace_testkit::otlp_receiver::describe(svc, s);
        assert!(out.insert(id.clone(), seen).is_none(), "span {id} twice");
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn replayed(text: &str) -> BTreeMap<String, String> {
    let receiver = OtlpReceiver::start().await;
    let r = fluxtrace::replay::run(text, engine_config());
    let mut exporter = Exporter::new(export_settings(receiver.endpoint(), CLUSTER));
    exporter
        .export(r.spans().cloned().collect())
        .await
        .expect("export to the receiver");
    exporter.shutdown();
    by_id(&receiver.spans())
}

/// An agent exporting to `receiver` that feeds `server`'s Promotions and writes their status.
fn agent(server: &ServerHandle, receiver: &OtlpReceiver) -> LiveAgent {
    agent_with(server, receiver, sync::Retention::default())
}

fn agent_with(
    server: &ServerHandle,
    receiver: &OtlpReceiver,
    retention: sync::Retention,
) -> LiveAgent {
    let (tx, rx) = sync::channel();
    let mut live = LiveAgent::start(tx.into_config(AgentConfig {
        engine: engine_config(),
        export: Some(export_settings(receiver.endpoint(), CLUSTER)),
        tick: Duration::from_millis(20),
        ..AgentConfig::default()
    }));
    live.retention = retention;
    live.sync_promotions(server, rx);
    live.reports_as_objects = true;
    live
}

fn promotions(server: &ServerHandle) -> Vec<Value> {
    server.objects("Promotion")
}

fn status_writes(server: &ServerHandle, name: &str) -> usize {
    server
        .writes()
        .iter()
        .filter(|w| w.path.ends_with(&format!("/promotions/{name}/status")))
        .count()
}

/// Every bundled recording with a CI report, the report given as a Promotion object (as
/// `kubectl apply` or Flux would create it): the same spans as replay, and the verdict, the
/// trace id and the stages in the object's status, in two status writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_object_is_a_report_and_its_status_shows_the_verdict() {
    let mut traced = 0;
    for (name, text) in EXAMPLES {
        if !text.contains(r#""kind":"promotion""#) {
            continue;
        }
        traced += 1;
        let want = replayed(text).await;
        let server = KubeApi::with_recording(text).start().await;
        let receiver = OtlpReceiver::start().await;
        let mut live = agent(&server, &receiver);
        live.play(&server, text, Disrupt::None).await;
        live.pass_deadlines();
        eventually("the spans", || receiver.spans().len() >= want.len()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        live.stop().await;
        assert_eq!(by_id(&receiver.spans()), want, "{name}");

        let replay = fluxtrace::replay::run(text, engine_config());
        for story in replay
            .traces
            .iter()
            .map(|t| &t.story)
            .filter(|s| s.traceability == fluxtrace::story::Traceability::Reported)
        {
            let object_name = fluxtrace::resource::object_name(&story.promotion_id);
            let obj = promotions(&server)
                .into_iter()
                .find(|o| o["metadata"]["name"] == object_name)
                .unwrap_or_else(|| panic!("{name}: Promotion {object_name}"));
            let status = &obj["status"];
            let phase = format!("{:?}", fluxtrace::resource::Phase::of(story.outcome));
            assert_eq!(status["phase"], json!(phase), "{name}: {status}");
            assert_eq!(status["traceId"], json!(story.trace_id.to_string()));
            assert_eq!(
                status["stages"].as_array().map(Vec::len),
                Some(story.stages.len()),
                "{name}: a line per stage"
            );
            assert_eq!(
                status["spansExported"], true,
                "{name}: the collector took every span"
            );
            let ready = &status["conditions"][0];
            assert_eq!(ready["type"], "Ready");
            let want_ready = if matches!(phase.as_str(), "Succeeded" | "NoChange") {
                "True"
            } else {
                "False"
            };
            assert_eq!(ready["status"], want_ready, "{name}: {ready}");
            match &story.divergence {
                Some(d) => assert_eq!(status["divergence"]["stage"], d.stage.as_str()),
                None => assert!(status.get("divergence").is_none()),
            }
            assert_eq!(
                status_writes(&server, &object_name),
                2,
                "{name}: InProgress, then the verdict"
            );
        }
    }
    assert!(traced >= 5, "the bundled recordings with a report");
}

/// A Promotion that is not a report gets `Ready=False`, `InvalidSpec`, with the field named,
/// once per generation; a change that does not touch the spec writes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_with_a_wrong_spec_is_marked_invalid_once() {
    let server = KubeApi::new().start().await;
    let receiver = OtlpReceiver::start().await;
    let mut live = agent(&server, &receiver);
    live.rejoin(&server).await;
    let object = |labels: Value| {
        json!({
            "apiVersion": "fluxtrace.io/v1alpha1", "kind": "Promotion",
            "metadata": {"name": "no-env", "namespace": "ci", "uid": "u-1", "generation": 1,
                         "labels": labels},
            "spec": {"revision": "450796ddb2ab6724ee1cc32a4be56da032d1cca0"},
        })
    };
    server.apply("ADDED", object(json!({})));
    let s = &server;
    eventually("the InvalidSpec condition", || {
        promotions(s)[0]["status"]["conditions"][0]["reason"] == "InvalidSpec"
    })
    .await;
    let ready = promotions(&server)[0]["status"]["conditions"][0].clone();
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.environment is required")),
        "{ready}"
    );
    assert_eq!(ready["observedGeneration"], 1);
    server.apply("MODIFIED", object(json!({"team": "web"})));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_writes(&server, "no-env"), 1, "written once");
    live.stop().await;
    assert!(receiver.spans().is_empty(), "nothing traced for it");
}

/// The intake writes the Promotion before it answers 202; when the API server cannot write,
/// it answers 503 with Retry-After and queues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_report_is_stored_and_one_that_cannot_be_is_refused() {
    let server = KubeApi::new().start().await;
    let receiver = OtlpReceiver::start().await;
    let mut live = agent(&server, &receiver);
    let intake = Intake::new(live.handle.clone(), Arc::new(Auth::disabled())).with_store(
        PromotionWriter::new(
            server.api_server(),
            "fluxtrace",
            live.promotions.clone().expect("Promotions synced"),
        ),
    );
    let app = fluxtrace::intake::http::router(intake);
    let post = |id: &str| {
        Request::post("/v1/promotions")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"id": id, "environment": "prod",
                       "revision": "450796ddb2ab6724ee1cc32a4be56da032d1cca0"})
                .to_string(),
            ))
            .expect("a request")
    };

    let answer = app.clone().oneshot(post("rel-1")).await.expect("answer");
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    let stored = promotions(&server);
    assert_eq!(stored.len(), 1, "stored before the answer");
    assert_eq!(stored[0]["metadata"]["name"], "rel-1");
    assert_eq!(stored[0]["metadata"]["namespace"], "fluxtrace");
    assert!(
        stored[0]["spec"]["time"].is_string(),
        "with its start: {}",
        stored[0]
    );
    // The watch sees the object it created (it writes InProgress) but does not feed the report
    // again: the engine applied it once.
    let s = &server;
    eventually("the InProgress status", || {
        promotions(s)[0]["status"]["phase"] == "InProgress"
    })
    .await;
    let h = live.handle.clone();
    eventually("the engine's queue", || h.queue_depth() == 0).await;
    assert_eq!(fluxtrace_testkit::agent::observed(&live.metrics), 1);
    // A repeat is no error: the object exists already.
    let again = app.clone().oneshot(post("rel-1")).await.expect("answer");
    assert_eq!(again.status(), StatusCode::ACCEPTED);

    server.fail_writes(Some(503));
    let refused = app.clone().oneshot(post("rel-2")).await.expect("answer");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let body = axum::body::to_bytes(refused.into_body(), 1 << 20)
        .await
        .expect("body");
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("could not be stored"), "{body}");
    assert!(live.handle.story("rel-2").await.is_none(), "nothing queued");
    assert_eq!(promotions(&server).len(), 1);
    server.fail_writes(None);
    live.stop().await;
}

/// The agent stops mid-promotion (after the report and the source fetch) and a new one starts
/// on the same cluster: the new agent finds the report in its Promotion object and finishes the
/// same trace. Its spans are those of a run without the stop: ids, names, parents, statuses,
/// attributes and times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_promotion_finishes_the_same_trace() {
    for name in ["git-success.jsonl", "oci-success.jsonl"] {
        let text = example(name);
        let want = replayed(text).await;
        let server = KubeApi::with_recording(text).start().await;
        let receiver = OtlpReceiver::start().await;
        let mut first = agent(&server, &receiver);
        let from = first.begin(&server, text).await;
        let end = text.lines().count();
        let half = from + (end - from) / 2;
        first.serve(&server, text, from..half, Disrupt::None).await;
        first.stop().await;
        assert!(receiver.spans().is_empty(), "{name}: nothing finished yet");
        let stored = promotions(&server);
        assert_eq!(stored[0]["status"]["phase"], "InProgress", "{name}");

        let mut second = agent(&server, &receiver);
        second.clock.set(
            text.lines()
                .nth(half)
                .and_then(|l| {
                    serde_json::from_str::<Value>(l).ok()?["at"]
                        .as_str()
                        .map(str::to_string)
                })
                .as_deref()
                .expect("a line"),
        );
        second.rejoin(&server).await;
        second.serve(&server, text, half..end, Disrupt::None).await;
        second.pass_deadlines();
        eventually("the spans", || receiver.spans().len() >= want.len()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        second.stop().await;
        // Every span identical, times included: they come from the objects, not from when
        // the agent saw them.
        assert_eq!(by_id(&receiver.spans()), want, "{name}");
        assert_eq!(
            promotions(&server)[0]["status"]["phase"],
            "Succeeded",
            "{name}"
        );
    }
}

/// Finished Promotions past `--promotion-retention`, or beyond the count per namespace, are
/// deleted; one in progress never is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_promotions_are_pruned_by_age_and_count() {
    let server = KubeApi::new().start().await;
    let receiver = OtlpReceiver::start().await;
    // Each started an hour before it finished; "running" started at the agent's now.
    let object = |name: &str, phase: &str, finished: &str| {
        let finished: jiff::Timestamp = finished.parse().expect("a time");
        let start = finished - jiff::SignedDuration::from_hours(1);
        json!({
            "apiVersion": "fluxtrace.io/v1alpha1", "kind": "Promotion",
            "metadata": {"name": name, "namespace": "ci", "uid": format!("u-{name}"),
                         "generation": 1, "creationTimestamp": start.to_string()},
            "spec": {"environment": "prod", "revision": "450796ddb2ab6724ee1cc32a4be56da032d1cca0",
                     "time": start.to_string()},
            "status": {"phase": phase, "finishedAt": finished.to_string()},
        })
    };
    server.apply("ADDED", object("old", "Succeeded", "2026-11-20T00:00:00Z"));
    server.apply(
        "ADDED",
        object("older-of-two", "Failed", "2026-11-30T10:00:00Z"),
    );
    server.apply(
        "ADDED",
        object("newest", "Succeeded", "2026-11-30T11:00:00Z"),
    );
    server.apply(
        "ADDED",
        object("running", "InProgress", "2026-12-01T01:00:00Z"),
    );
    let retention = sync::Retention {
        max_age: Duration::from_secs(7 * 24 * 3600),
        max_per_namespace: 1,
        every: Duration::from_millis(100),
    };
    let mut live = agent_with(&server, &receiver, retention);
    live.clock.set("2026-12-01T00:00:00Z");
    live.rejoin(&server).await;
    let s = &server;
    eventually("the pruning", || promotions(s).len() == 2).await;
    let deletes = server
        .writes()
        .iter()
        .filter(|w| w.method == "DELETE")
        .count();
    assert_eq!(deletes, 2, "each deleted once");
    let mut left: Vec<String> = promotions(&server)
        .iter()
        .map(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    left.sort();
    assert_eq!(left, ["newest", "running"]);
    live.stop().await;
}

/// The real binary: a report answered 202, then SIGKILL at once. The Promotion was written
/// before the answer, so the agent started again traces it in the trace the answer named, and
/// only once.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_acknowledged_then_killed_is_traced_after_the_restart() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let text = example("git-success.jsonl");
    let server = KubeApi::with_recording(text).start().await;
    server.apply_initial();
    let receiver = OtlpReceiver::start().await;
    let kubeconfig = server.kubeconfig("promotions-sigkill");
    let start = || {
        let addr = fluxtrace_testkit::files::free_loopback_addr();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fluxtrace"))
            .args(["run", "--no-k8s-events", "--insecure-no-auth", "--listen"])
            .arg(addr.to_string())
            .args(["--otlp-endpoint", &receiver.endpoint(), "--settle", "0s"])
            .args(["--source-deadline", "3s", "--promotion-deadline", "3s"])
            .args(["--cluster-name", CLUSTER])
            // The killed replica's Lease runs out after 2 s; the next one then leads.
            .args(["--lease-duration", "2s", "--lease-renew-deadline", "1s"])
            .args(["--lease-retry-period", "200ms"])
            .env_clear()
            .env("KUBECONFIG", &kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("fluxtrace run");
        (child, addr)
    };
    let request = |addr: std::net::SocketAddr, req: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    let ready = |addr| async move {
        let started = std::time::Instant::now();
        loop {
            let r = request(
                addr,
                "GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into(),
            )
            .await;
            if r.is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    let (mut first, addr) = start();
    ready(addr).await;
    let body = json!({"id": "P-2026-11-26-42", "environment": "staging", "app": "frontend",
                      "revision": "78e7e93a2812ee6725fe1cbb2659ddc496d09657"})
    .to_string();
    let answer = request(
        addr,
        format!(
            "POST /v1/promotions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
    .expect("an answer");
    first.start_kill().expect("SIGKILL");
    let _ = first.wait().await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let trace_id = fluxtrace::trace::trace_id_for("P-2026-11-26-42").to_string();
    assert!(answer.contains(&trace_id), "{answer}");
    assert_eq!(promotions(&server).len(), 1, "stored before the 202");
    assert!(receiver.spans().is_empty(), "killed before any verdict");

    // Flux goes on while the agent is down: the new agent finds the delivery in its initial
    // lists (its deadlines, 3 s from the report, cannot pass before it has listed them).
    server.apply_rest();
    let (_second, addr) = start();
    ready(addr).await;
    let r = &receiver;
    eventually("the trace after the restart", || {
        r.spans().iter().any(|(_, s)| s.name == "promotion")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = receiver.spans();
    // The recording's objects carry their own (past) times while the binary runs on the
    // system clock: what is checked is that the acknowledged report was traced, once, in the
    // trace the 202 named, with the delivery that followed.
    let roots: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| {
            s.name == "promotion"
                && fluxtrace_testkit::otlp_receiver::sorted_attributes(s)
                    .iter()
                    .any(|a| {
                        a.starts_with("delivery.promotion.id=") && a.contains("P-2026-11-26-42")
                    })
        })
        .collect();
    assert_eq!(roots.len(), 1, "traced once");
    assert_eq!(
        hex(&roots[0].trace_id),
        trace_id,
        "in the trace the answer named"
    );
    assert!(
        spans
            .iter()
            .any(|(_, s)| s.name == "source.fetch" && hex(&s.trace_id) == trace_id),
        "with the delivery that followed"
    );
    let _ = std::fs::remove_file(kubeconfig);
}

/// An API server that answers every write with 503 (kube's client retries those on its own for
/// minutes) neither blocks the feed nor holds the agent's shutdown: each status write gives up
/// after its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_cannot_write_does_not_hold_the_shutdown() {
    let server = KubeApi::new().start().await;
    let receiver = OtlpReceiver::start().await;
    let mut live = agent(&server, &receiver);
    live.rejoin(&server).await;
    server.fail_writes(Some(503));
    server.apply(
        "ADDED",
        json!({
            "apiVersion": "fluxtrace.io/v1alpha1", "kind": "Promotion",
            "metadata": {"name": "rel-7", "namespace": "ci", "uid": "u-7", "generation": 1},
            "spec": {"environment": "prod", "revision": "450796ddb2ab6724ee1cc32a4be56da032d1cca0"},
        }),
    );
    let s = &server;
    eventually("the InProgress write to be tried", || {
        s.writes().iter().any(|w| w.path.ends_with("/rel-7/status"))
    })
    .await;
    assert!(
        live.handle.story("rel-7").await.is_some(),
        "the report reached the engine"
    );
    let started = std::time::Instant::now();
    live.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "stopped in {:?}",
        started.elapsed()
    );
}
