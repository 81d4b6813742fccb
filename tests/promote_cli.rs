//! `fluxtrace promote` and `fluxtrace explain`, the real binary, against the agent's API on
//! 127.0.0.1 (engine, intake and OTLP export in this process, spans into an in-process
//! receiver).
//!
//! The end-to-end tests play a bundled recording as a cluster would: the objects watched before
//! the promotion go in first, then CI runs `fluxtrace promote` (with a CI environment), then
//! the rest of the recording's Flux and Kubernetes objects. The recording is shifted to the
//! present so that the agent's real clock and the recording agree. The assertions are on the
//! spans that crossed the wire: the report is the root of the trace the Flux objects continue,
//! and with a `TRACEPARENT` the root's parent is the CI span.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use fluxtrace::admin::{self, Readiness};
use fluxtrace::agent::{Agent, AgentConfig, EngineHandle};
use fluxtrace::correlate::EngineConfig;
use fluxtrace::export::ExportSettings;
use fluxtrace::intake::{self, Auth, Intake};
use fluxtrace::metrics::Metrics;
use fluxtrace::model::{DeliveryEvent, EventBody, Kind, ObjectRef};
use fluxtrace::sources::recording::decode_line;
use fluxtrace::story::{Outcome, Story};
use fluxtrace::trace::{trace_id_for, Traceparent};
use fluxtrace_testkit::otlp_receiver::{attr_str, OtlpReceiver};
use fluxtrace_testkit::recordings::{example, shift};
use jiff::{SignedDuration, Timestamp};
use opentelemetry_proto::tonic::trace::v1::Span;

const TOKEN: &str = "ci-token-0e5d";
const CLUSTER: &str = "test-cluster";
const CI_TRACEPARENT: &str = "00-bcc6fef14921ca4b919966fea2f61b03-cd43ae110eed53d9-01";
const BOUND: Duration = Duration::from_secs(60);

fn line_kind(line: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()?
        .get("kind")?
        .as_str()
        .map(str::to_string)
}

/// The recording moved so that it starts now; split around its promotion line: (before, the
/// promotion's `time`, after). The promotion line itself is left out: `promote` sends it.
fn present(name: &str) -> (Vec<String>, Timestamp, Vec<String>) {
    let text = example(name);
    let first: Timestamp =
        serde_json::from_str::<serde_json::Value>(text.lines().next().expect("a line"))
            .expect("JSON")["at"]
            .as_str()
            .expect("at")
            .parse()
            .expect("a time");
    let now = Timestamp::now();
    let by = SignedDuration::from_secs(now.as_second() + 1 - first.as_second());
    let shifted = shift(text, by);
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut time = None;
    for line in shifted.lines() {
        if line_kind(line).as_deref() == Some("promotion") {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
            time = Some(
                v["promotion"]["time"]
                    .as_str()
                    .expect("a promotion time")
                    .parse()
                    .expect("a time"),
            );
            continue;
        }
        if time.is_none() {
            before.push(line.to_string());
        } else {
            after.push(line.to_string());
        }
    }
    (before, time.expect("a promotion line"), after)
}

struct TestAgent {
    handle: EngineHandle,
    receiver: OtlpReceiver,
    base: String,
    _agent: Agent,
}

async fn start_agent() -> TestAgent {
    let receiver = OtlpReceiver::start().await;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let cfg = AgentConfig {
        engine: EngineConfig {
            cluster: CLUSTER.into(),
            ..EngineConfig::default()
        },
        export: Some(ExportSettings {
            endpoint: Some(receiver.endpoint()),
            cluster: CLUSTER.into(),
            timeout: Some(Duration::from_secs(5)),
            gzip: Some(false),
            retries: 0,
        }),
        trace_url_template: Some("https://tempo.example/trace/{trace_id}".into()),
        ..AgentConfig::default()
    };
    let agent = Agent::start(cfg, metrics.clone(), readiness.clone());
    let intake = Intake::new(
        agent.handle.clone(),
        Arc::new(Auth::with_secrets(&[TOKEN], None)),
    );
    let app = admin::router(metrics, readiness).merge(intake::http::router(intake));
    let base = serve(app).await;
    TestAgent {
        handle: agent.handle.clone(),
        receiver,
        base,
        _agent: agent,
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// Runs the binary with exactly `env` (nothing inherited: the tests may themselves run in CI).
async fn fluxtrace(args: &[&str], env: &[(&str, &str)]) -> Output {
    fluxtrace_testkit::cli::run(env!("CARGO_BIN_EXE_fluxtrace"), args, env).await
}

async fn feed(handle: &EngineHandle, lines: &[String]) -> Timestamp {
    let mut last = Timestamp::UNIX_EPOCH;
    for line in lines {
        if let Some(ev) = decode_line(line).expect("a good line") {
            last = last.max(ev.at);
            handle.submit(ev).await.expect("the engine runs");
        }
    }
    last
}

/// Moves the engine's clock far past every deadline, as the end of a replay does, with an
/// observation about nothing it follows.
async fn finish(handle: &EngineHandle, after: Timestamp) {
    handle
        .submit(DeliveryEvent {
            at: after + SignedDuration::from_hours(3),
            body: EventBody::Deleted(ObjectRef::new(Kind::Pod, "elsewhere", "nothing")),
        })
        .await
        .expect("the engine runs");
}

async fn verdict(handle: &EngineHandle, id: &str) -> Story {
    let until = Instant::now() + BOUND;
    loop {
        if let Some(s) = handle.story(id).await {
            if s.outcome != Outcome::InProgress {
                return s;
            }
        }
        assert!(Instant::now() < until, "no verdict for {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The spans of `trace` the receiver got, once all `n` have arrived.
async fn spans_of(
    receiver: &OtlpReceiver,
    trace: [u8; 16],
    n: usize,
) -> Vec<(Option<String>, Span)> {
    let until = Instant::now() + BOUND;
    loop {
        let spans: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|(_, s)| s.trace_id == trace)
            .collect();
        if spans.len() >= n {
            assert_eq!(spans.len(), n, "each span exported once");
            return spans;
        }
        assert!(
            Instant::now() < until,
            "{} of {n} spans arrived",
            spans.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every span hangs off the promotion root; returns the root.
fn check_tree(spans: &[(Option<String>, Span)], story: &Story) -> Span {
    let roots: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "promotion")
        .collect();
    assert_eq!(roots.len(), 1, "one root span");
    let root = roots[0].clone();
    assert_eq!(root.span_id, story.root_span_id.0.to_vec());
    let by_id: HashMap<Vec<u8>, &Span> =
        spans.iter().map(|(_, s)| (s.span_id.clone(), s)).collect();
    for (_, s) in spans {
        if s.name == "promotion" {
            continue;
        }
        // Follow the parents up to the root, within the trace.
        let mut cur = s;
        for _ in 0..8 {
            if cur.span_id == root.span_id {
                break;
            }
            cur = by_id
                .get(&cur.parent_span_id)
                .unwrap_or_else(|| panic!("{}: parent not in the trace", s.name));
        }
        assert_eq!(cur.span_id, root.span_id, "{} hangs off the root", s.name);
    }
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_traceparent_the_report_roots_the_trace_under_the_ci_span() {
    let t = start_agent().await;
    let (before, time, after) = present("receiver-trigger.jsonl");
    feed(&t.handle, &before).await;
    let time = time.to_string();
    let out = fluxtrace(
        &[
            "promote",
            "--agent",
            &t.base,
            "--environment",
            "prod",
            "--app",
            "api",
            "--time",
            &time,
        ],
        &[
            ("FLUXTRACE_TOKEN", TOKEN),
            ("TRACEPARENT", CI_TRACEPARENT),
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "8812419"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_REPOSITORY", "acme/api"),
            ("GITHUB_WORKFLOW", "release"),
            ("GITHUB_ACTOR", "dave"),
            // The commit the run built is what it promotes: no --revision needed.
            ("GITHUB_SHA", "c7c2092893747eb884948ce02d076f0cf91da125"),
        ],
    )
    .await;
    assert!(out.status.success());
    let ci = Traceparent::parse(CI_TRACEPARENT).expect("valid");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("promotion 8812419-1 reported"), "{stdout}");
    assert!(
        stdout.contains(&format!("trace id:   {}", ci.trace_id)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "trace link: https://tempo.example/trace/{}",
            ci.trace_id
        )),
        "{stdout}"
    );

    let last = feed(&t.handle, &after).await;
    finish(&t.handle, last).await;
    let story = verdict(&t.handle, "8812419-1").await;
    assert_eq!(
        story.outcome,
        Outcome::Succeeded,
        "{}",
        fluxtrace::story::render(&story)
    );
    assert_eq!(story.traceability.as_str(), "reported");
    assert_eq!(story.trace_id, ci.trace_id);
    let stages: Vec<&str> = story.stages.iter().map(|s| s.stage.as_str()).collect();
    for want in ["trigger", "source", "reconcile", "apply", "rollout"] {
        assert!(stages.contains(&want), "{want} in {stages:?}");
    }

    let spans = spans_of(&t.receiver, ci.trace_id.0, story.stages.len() + 1).await;
    let root = check_tree(&spans, &story);
    assert_eq!(
        root.parent_span_id,
        ci.span_id.0.to_vec(),
        "the CI span is the parent"
    );
    let a = &root.attributes;
    assert_eq!(attr_str(a, "delivery.promotion.id"), Some("8812419-1"));
    assert_eq!(attr_str(a, "cicd.pipeline.name"), Some("release"));
    assert_eq!(attr_str(a, "cicd.pipeline.run.id"), Some("8812419"));
    assert_eq!(
        attr_str(a, "cicd.pipeline.run.url.full"),
        Some("https://github.com/acme/api/actions/runs/8812419")
    );
    assert_eq!(attr_str(a, "delivery.promotion.actor"), Some("dave"));
    assert_eq!(attr_str(a, "deployment.environment.name"), Some("prod"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_traceparent_the_report_is_the_root_and_explain_tells_the_story() {
    let t = start_agent().await;
    let (before, time, after) = present("oci-success.jsonl");
    feed(&t.handle, &before).await;
    let time = time.to_string();
    let digest = "sha256:f126ce66891eefd188e03e2c6838ac172b117bf67ed6f9605cffca950e460822";
    let gitlab = [
        ("FLUXTRACE_TOKEN", TOKEN),
        ("GITLAB_CI", "true"),
        ("CI_PIPELINE_ID", "90300"),
        (
            "CI_PIPELINE_URL",
            "https://gitlab.example.com/acme/shop/-/pipelines/90300",
        ),
        ("CI_PROJECT_URL", "https://gitlab.example.com/acme/shop"),
        ("GITLAB_USER_LOGIN", "alice"),
        ("CI_COMMIT_SHA", "b66600c3599b6f77b1a8749101e556b86c5df749"),
    ];
    let out = fluxtrace(
        &[
            "promote",
            "--agent",
            &t.base,
            "--id",
            "rel-2041",
            "--environment",
            "prod",
            "--app",
            "checkout",
            "--artifact",
            "oci://ghcr.io/acme/shop-manifests:prod",
            "--digest",
            digest,
            "--time",
            &time,
        ],
        &gitlab,
    )
    .await;
    assert!(out.status.success());
    let want = trace_id_for("rel-2041");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&want.to_string()));
    // Reporting again (a retried CI job) changes nothing.
    let again = fluxtrace(
        &[
            "promote",
            "--agent",
            &t.base,
            "--id",
            "rel-2041",
            "--environment",
            "prod",
            "--digest",
            digest,
            "--json",
        ],
        &gitlab,
    )
    .await;
    assert!(again.status.success());
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).expect("JSON");
    assert_eq!(v["trace_id"], want.to_string().as_str());

    let last = feed(&t.handle, &after).await;
    finish(&t.handle, last).await;
    let story = verdict(&t.handle, "rel-2041").await;
    assert_eq!(
        story.outcome,
        Outcome::Succeeded,
        "{}",
        fluxtrace::story::render(&story)
    );
    assert_eq!(story.trace_id, want);
    assert_eq!(story.actor.as_deref(), Some("alice"));
    let spans = spans_of(&t.receiver, want.0, story.stages.len() + 1).await;
    let root = check_tree(&spans, &story);
    assert!(root.parent_span_id.is_empty(), "no CI parent");
    assert_eq!(
        attr_str(&root.attributes, "cicd.pipeline.run.id"),
        Some("90300")
    );
    assert_eq!(
        attr_str(&root.attributes, "cicd.pipeline.name"),
        Some("acme/shop")
    );
    // The digest was promoted, not the commit the CI run built (the engine takes the commit
    // from the artifact Flux fetched).
    assert!(!story.promoted.contains("b66600c3"), "{}", story.promoted);
    assert_ne!(
        attr_str(&root.attributes, "vcs.ref.head.revision"),
        Some("b66600c3599b6f77b1a8749101e556b86c5df749")
    );
    assert!(
        spans.iter().any(|(_, s)| s.name == "rollout"),
        "the rollout continues the trace"
    );

    // On call.
    let env = [("FLUXTRACE_TOKEN", TOKEN)];
    let out = fluxtrace(&["explain", "rel-2041", "--agent", &t.base], &env).await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Promotion rel-2041: succeeded"), "{text}");
    assert!(
        text.contains("checkout ghcr.io/acme/shop-manifests:prod"),
        "{text}"
    );
    assert!(text.contains("by alice"), "{text}");
    assert!(text.contains("CI:     acme/shop run 90300"), "{text}");
    assert!(text.contains("rollout"), "{text}");
    assert!(
        text.contains(&format!("Trace: https://tempo.example/trace/{want}")),
        "{text}"
    );
    let out = fluxtrace(&["explain", "rel-2041", "--agent", &t.base, "--json"], &env).await;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["promotion_id"], "rel-2041");
    assert_eq!(v["outcome"], "succeeded");
    assert_eq!(v["trace_id"], want.to_string().as_str());
    let out = fluxtrace(&["explain", "rel-9999", "--agent", &t.base], &env).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no promotion \"rel-9999\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_stops_at_a_4xx_with_the_agents_message() {
    let t = start_agent().await;
    let sha = "450796ddb2ab6724ee1cc32a4be56da032d1cca0";
    let out = fluxtrace(
        &[
            "promote",
            "--agent",
            &t.base,
            "--id",
            "P-1",
            "--environment",
            "prod",
            "--revision",
            sha,
        ],
        &[("FLUXTRACE_TOKEN", "wrong")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(401)") && stderr.contains("bearer token is not valid"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("retrying"),
        "a 4xx is not retried: {stderr}"
    );

    // Refused before sending: the same rules as the agent, naming the field.
    let out = fluxtrace(
        &[
            "promote",
            "--agent",
            &t.base,
            "--id",
            "P-1",
            "--environment",
            "prod",
            "--revision",
            sha,
            "--traceparent",
            "00-nope",
        ],
        &[("FLUXTRACE_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`traceparent`"));
    let out = fluxtrace(
        &[
            "promote",
            "--agent",
            &t.base,
            "--environment",
            "prod",
            "--revision",
            sha,
        ],
        &[("FLUXTRACE_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "no id outside CI");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--id"));
    assert!(t.handle.story("P-1").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_retries_5xx_and_gives_up_on_an_unreachable_agent() {
    // An agent that is not ready for the first two calls.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = Router::new().route(
        "/v1/promotions",
        post(move |body: String| {
            let c = c.clone();
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
                if n < 2 {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(serde_json::json!({"error": "warming up"})),
                    )
                } else {
                    (
                        StatusCode::ACCEPTED,
                        Json(serde_json::json!({
                            "promotion_id": v["id"],
                            "trace_id": "0123456789abcdef0123456789abcdef",
                        })),
                    )
                }
            }
        }),
    );
    let base = serve(app).await;
    let sha = "450796ddb2ab6724ee1cc32a4be56da032d1cca0";
    let out = fluxtrace(
        &[
            "promote",
            "--agent",
            &base,
            "--id",
            "P-9",
            "--environment",
            "prod",
            "--revision",
            sha,
        ],
        &[],
    )
    .await;
    assert!(out.status.success());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("retrying").count(), 2, "{stderr}");
    assert!(stderr.contains("503: warming up"), "{stderr}");

    // Nothing listens: connection errors are retried, then it gives up with exit code 1.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", free.local_addr().expect("address"));
    drop(free);
    let out = fluxtrace(
        &[
            "promote",
            "--agent",
            &dead,
            "--id",
            "P-9",
            "--environment",
            "prod",
            "--revision",
            sha,
            "--retries",
            "1",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not answer after 2 attempt(s)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_shows_the_report_built_from_the_ci_environment() {
    let staging = [
        "promote",
        "--agent",
        "http://unused:1",
        "--environment",
        "staging",
        "--dry-run",
    ];
    let github = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_RUN_ID", "777"),
        ("GITHUB_RUN_ATTEMPT", "3"),
        ("GITHUB_SERVER_URL", "https://github.example"),
        ("GITHUB_REPOSITORY", "acme/web"),
        ("GITHUB_WORKFLOW", "deploy"),
        ("GITHUB_ACTOR", "bob"),
        ("GITHUB_SHA", "78e7e93a2812ee6725fe1cbb2659ddc496d09657"),
        ("TRACEPARENT", CI_TRACEPARENT),
    ];
    let out = fluxtrace(&staging, &github).await;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!({
            "id": "777-3",
            "environment": "staging",
            "revision": "78e7e93a2812ee6725fe1cbb2659ddc496d09657",
            "actor": "bob",
            "pipeline": {"name": "deploy", "run_id": "777", "url": "https://github.example/acme/web/actions/runs/777"},
            "traceparent": CI_TRACEPARENT,
        })
    );
    // Flags win over the CI environment; --no-ci ignores it.
    let out = fluxtrace(
        &[
            "promote",
            "--agent",
            "http://unused:1",
            "--environment",
            "prod",
            "--id",
            "mine",
            "--actor",
            "carol",
            "--no-ci",
            "--revision",
            "78e7e93a2812ee6725fe1cbb2659ddc496d09657",
            "--dry-run",
        ],
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "777"),
            ("GITHUB_ACTOR", "bob"),
        ],
    )
    .await;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["id"], "mine");
    assert_eq!(v["actor"], "carol");
    assert!(v.get("pipeline").is_none());
    // --no-ci-parent leaves the CI's trace context out: the promotion roots its own trace.
    let out = fluxtrace(&[&staging[..], &["--no-ci-parent"]].concat(), &github).await;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(v.get("traceparent").is_none(), "{v}");
    assert_eq!(v["id"], "777-3", "the rest of the CI context is kept: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_time_comes_from_ci_or_git_and_is_never_guessed() {
    let sha = "78e7e93a2812ee6725fe1cbb2659ddc496d09657";
    let promote = [
        "promote",
        "--agent",
        "http://unused:1",
        "--environment",
        "prod",
        "--dry-run",
    ];
    // GitLab names the commit's time.
    let out = fluxtrace(
        &promote,
        &[
            ("GITLAB_CI", "true"),
            ("CI_PIPELINE_ID", "9"),
            ("CI_COMMIT_SHA", sha),
            ("CI_COMMIT_TIMESTAMP", "2026-11-26T09:15:00+01:00"),
        ],
    )
    .await;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["commit_time"], "2026-11-26T08:15:00Z");
    // GitHub does not, and outside a checkout nothing else can: left out.
    let out = fluxtrace(
        &promote,
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_RUN_ID", "7"),
            ("GITHUB_SHA", sha),
        ],
    )
    .await;
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(v.get("commit_time").is_none(), "{v}");

    // In a checkout, `git log` gives the committer date of the promoted commit.
    let dir = std::env::temp_dir().join(format!("fluxtrace-commit-time-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&dir)
            .env("GIT_AUTHOR_NAME", "a")
            .env("GIT_AUTHOR_EMAIL", "a@example.com")
            .env("GIT_COMMITTER_NAME", "a")
            .env("GIT_COMMITTER_EMAIL", "a@example.com")
            .env("GIT_COMMITTER_DATE", "2026-11-25T17:00:00Z")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "change"]);
    let head = git(&["rev-parse", "HEAD"]);
    let out = Command::new(env!("CARGO_BIN_EXE_fluxtrace"))
        .args(promote)
        .args(["--id", "P-git", "--revision", &head])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("the binary runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["commit_time"], "2026-11-25T17:00:00Z");
}
