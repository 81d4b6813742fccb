//! What runs now, over real HTTP and gRPC against a running agent: `fluxtrace status` (table
//! and JSON, filters), `fluxtrace explain --workload`, `GET /v1/workloads` and
//! `WorkloadService`, after two bundled recordings (one promotion rolled out, one newer that
//! failed to pull its image), with the bearer token the rest of the API needs.

use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use axum::http::{header, Method, StatusCode};
use fluxtrace::correlate::EngineConfig;
use fluxtrace::intake::grpc;
use fluxtrace::intake::grpc::proto::workload_service_client::WorkloadServiceClient;
use fluxtrace::intake::grpc::proto::{ExplainWorkloadRequest, ListWorkloadsRequest};
use fluxtrace::intake::Auth;
use fluxtrace::model::{DeliveryEvent, EventBody, Kind, ObjectRef};
use fluxtrace::sources::recording::decode_line;
use fluxtrace::story::Outcome;
use fluxtrace::trace::trace_id_for;
use fluxtrace_testkit::intake::{request, send, start_with, TestAgent, LINK_TEMPLATE, TOKEN};
use fluxtrace_testkit::recordings::{example, shift};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

const BOUND: Duration = Duration::from_secs(60);
/// git-success.jsonl: web/frontend, rolled out to staging by bob.
const DELIVERED: &str = "P-2026-11-26-42";
/// oci-rollout-imagepull.jsonl: payments/ledger, prod, alice; its new image never pulls.
const FAILED: &str = "rel-2042";

/// Both recordings, moved so that they start now, their lines in time order.
fn lines() -> Vec<String> {
    let mut all: Vec<(Timestamp, String)> = Vec::new();
    let now = Timestamp::now();
    for name in ["git-success.jsonl", "oci-rollout-imagepull.jsonl"] {
        let text = example(name);
        let first: Timestamp = serde_json::from_str::<Value>(text.lines().next().expect("a line"))
            .expect("JSON")["at"]
            .as_str()
            .expect("at")
            .parse()
            .expect("a time");
        let by = SignedDuration::from_secs(now.as_second() + 1 - first.as_second());
        for line in shift(text, by).lines() {
            let at = serde_json::from_str::<Value>(line).expect("JSON")["at"]
                .as_str()
                .expect("at")
                .parse()
                .expect("a time");
            all.push((at, line.to_string()));
        }
    }
    all.sort_by_key(|(at, _)| *at);
    all.into_iter().map(|(_, l)| l).collect()
}

struct Agent {
    t: TestAgent,
    base: String,
    grpc: SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

/// An agent (bearer token [`TOKEN`], trace links) on real sockets, fed both recordings up to
/// both verdicts.
async fn agent() -> Agent {
    let t = start_with(
        Auth::with_secrets(&[TOKEN], None),
        EngineConfig::default(),
        Duration::from_millis(50),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = t.app.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let grpc = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    tokio::spawn(grpc::serve(
        listener,
        t.intake.clone(),
        stop.clone().cancelled_owned(),
    ));
    let mut last = Timestamp::UNIX_EPOCH;
    for line in lines() {
        if let Some(ev) = decode_line(&line).expect("a good line") {
            last = last.max(ev.at);
            t.handle.submit(ev).await.expect("the engine runs");
        }
    }
    // Past every deadline, with an observation about nothing followed.
    t.handle
        .submit(DeliveryEvent {
            at: last + SignedDuration::from_hours(3),
            body: EventBody::Deleted(ObjectRef::new(Kind::Pod, "elsewhere", "nothing")),
        })
        .await
        .expect("the engine runs");
    for id in [DELIVERED, FAILED] {
        let until = Instant::now() + BOUND;
        while t
            .handle
            .story(id)
            .await
            .is_none_or(|s| s.outcome == Outcome::InProgress)
        {
            assert!(Instant::now() < until, "no verdict for {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Agent {
        t,
        base,
        grpc,
        _stop: stop.drop_guard(),
    }
}

/// Runs the binary with exactly `env` (nothing inherited).
async fn fluxtrace(args: &[&str], env: &[(&str, &str)]) -> Output {
    fluxtrace_testkit::cli::run(env!("CARGO_BIN_EXE_fluxtrace"), args, env).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn link(id: &str) -> String {
    LINK_TEMPLATE.replace("{trace_id}", &trace_id_for(id).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_explain_workload_tell_what_runs_and_who_put_it_there() {
    let a = agent().await;
    let env = [("FLUXTRACE_TOKEN", TOKEN)];
    let status = |extra: &'static [&'static str]| {
        let mut args = vec!["status", "--agent", a.base.as_str()];
        args.extend(extra);
        let env = &env;
        async move { fluxtrace(&args, env).await }
    };

    // The table: one row per Deployment, a row for the newer failed promotion.
    let out = status(&[]).await;
    assert!(out.status.success());
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert!(rows[0].starts_with("WORKLOAD") && rows[0].contains("DELIVERED BY"));
    let ledger = rows[1];
    assert!(ledger.starts_with("payments/ledger "), "{text}");
    assert!(
        ledger.contains("ghcr.io/acme/ledger:2.4.0 (2 ready)"),
        "the old image still runs: {text}"
    );
    assert!(!ledger.contains("2.4.1"), "{text}");
    assert!(ledger.contains("no completed rollout seen"), "{text}");
    let failed = rows[2];
    assert!(failed.trim_start().starts_with("↳ failed"), "{text}");
    assert!(
        failed.contains(&format!("{FAILED} (alice, "))
            && failed.contains("failed at rollout: ImagePullBackOff)"),
        "{text}"
    );
    assert!(failed.ends_with(&link(FAILED)), "{text}");
    let frontend = rows[3];
    assert!(frontend.starts_with("web/frontend "), "{text}");
    assert!(frontend.contains("ghcr.io/acme/frontend:"), "{text}");
    assert!(frontend.contains("(2 ready)"), "{text}");
    assert!(
        frontend.contains(&format!("{DELIVERED} (bob, ")) && frontend.contains(", succeeded)"),
        "{text}"
    );
    assert!(frontend.ends_with(&link(DELIVERED)), "{text}");

    // JSON: the agent's answer.
    let out = status(&["--output", "json"]).await;
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ws = v["workloads"].as_array().expect("workloads");
    assert_eq!(ws.len(), 2);
    assert_eq!(ws[0]["namespace"], "payments");
    assert_eq!(
        ws[0]["running"][0]["images"][0],
        "ghcr.io/acme/ledger:2.4.0"
    );
    assert_eq!(ws[0]["running"][0]["ready"], 2);
    assert_eq!(ws[0].get("delivered_by"), None);
    assert_eq!(ws[0]["newer"]["id"], FAILED);
    assert_eq!(ws[0]["newer"]["environment"], "prod");
    assert_eq!(ws[0]["newer"]["reason"], "ImagePullBackOff");
    assert_eq!(ws[1]["name"], "frontend");
    assert_eq!(ws[1]["managed_by"], "Kustomization/flux-system/web");
    assert_eq!(ws[1]["delivered_by"]["id"], DELIVERED);
    assert_eq!(ws[1]["delivered_by"]["actor"], "bob");
    assert_eq!(ws[1]["delivered_by"]["outcome"], "succeeded");
    assert_eq!(
        ws[1]["delivered_by"]["trace_id"],
        trace_id_for(DELIVERED).to_string()
    );
    assert_eq!(ws[1]["delivered_by"]["trace_link"], link(DELIVERED));
    assert_eq!(ws[1].get("newer"), None);

    // Filters.
    let names = |out: Output| -> Vec<String> {
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        v["workloads"]
            .as_array()
            .expect("workloads")
            .iter()
            .map(|w| {
                format!(
                    "{}/{}",
                    w["namespace"].as_str().unwrap_or(""),
                    w["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let json = ["--output", "json"];
    for (filter, want) in [
        (["--environment", "prod"], vec!["payments/ledger"]),
        (["--environment", "staging"], vec!["web/frontend"]),
        (["--namespace", "web"], vec!["web/frontend"]),
        (["--app", "ledger"], vec!["payments/ledger"]),
        (["--app", "nothing"], vec![]),
    ] {
        let args: Vec<&str> = ["status", "--agent", a.base.as_str()]
            .into_iter()
            .chain(filter)
            .chain(json)
            .collect();
        let out = fluxtrace(&args, &env).await;
        assert!(out.status.success());
        assert_eq!(names(out), want, "{filter:?}");
    }
    let out = status(&["--namespace", "nowhere"]).await;
    assert!(out.status.success());
    assert_eq!(stdout(&out), "No followed Deployment matches.\n");

    // The story behind what runs.
    let explain = |w: &'static str, json: bool| {
        let mut args = vec!["explain", "--workload", w, "--agent", a.base.as_str()];
        if json {
            args.push("--json");
        }
        let env = &env;
        async move { fluxtrace(&args, env).await }
    };
    let out = explain("web/frontend", false).await;
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("Promotion {DELIVERED}: succeeded")),
        "{text}"
    );
    assert!(text.contains("by bob"), "{text}");
    assert!(
        text.contains(&format!("Trace: {}", link(DELIVERED))),
        "{text}"
    );
    let out = explain("web/frontend", true).await;
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["promotion_id"], DELIVERED);
    // No promotion rolled out what runs on the ledger since the agent watched.
    let out = explain("payments/ledger", false).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no promotion is known to have rolled out Deployment payments/ledger"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "a newer promotion failed: fluxtrace explain {FAILED}"
        )),
        "{err}"
    );
    let out = explain("payments/unknown", false).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no Deployment payments/unknown is followed by this agent"),
        "{err}"
    );
    let out = explain("ledger", false).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAMESPACE/NAME"));

    // The table over HTTP, for curl.
    let (code, body, headers) = send(
        &a.t.app,
        request(
            Method::GET,
            "/v1/workloads?namespace=web&environment=",
            Some(TOKEN),
            &[("accept", "text/plain")],
            "",
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .is_ok_and(|c| c.starts_with("text/plain")));
    let table = String::from_utf8(body).expect("UTF-8");
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table
        .lines()
        .nth(1)
        .is_some_and(|l| l.starts_with("web/frontend ")));

    // Without the token, nothing.
    let out = fluxtrace(&["status", "--agent", &a.base], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    for path in ["/v1/workloads", "/v1/workloads/web/frontend/story"] {
        let (code, _, _) = send(&a.t.app, request(Method::GET, path, None, &[], "")).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{path}");
    }
    let out = fluxtrace(
        &["explain", "--workload", "web/frontend", "--agent", &a.base],
        &[("FLUXTRACE_TOKEN", "wrong")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    drop(a.t);
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii"),
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workload_service_answers_as_the_http_api_does() {
    let a = agent().await;
    let mut client = WorkloadServiceClient::connect(format!("http://{}", a.grpc))
        .await
        .expect("connect");
    let all = client
        .list(authed(ListWorkloadsRequest::default()))
        .await
        .expect("listed")
        .into_inner()
        .workloads;
    let names: Vec<String> = all
        .iter()
        .map(|w| format!("{}/{}", w.namespace, w.name))
        .collect();
    assert_eq!(names, ["payments/ledger", "web/frontend"]);
    let ledger = &all[0];
    assert_eq!(ledger.running[0].images, ["ghcr.io/acme/ledger:2.4.0"]);
    assert_eq!(ledger.running[0].ready, 2);
    assert!(ledger.delivered_by.is_none());
    let newer = ledger.newer.as_ref().expect("the failed promotion");
    assert_eq!(newer.id, FAILED);
    assert_eq!(newer.diverged_at.as_deref(), Some("rollout"));
    assert_eq!(newer.trace_link.as_deref(), Some(link(FAILED).as_str()));
    let frontend = &all[1];
    assert_eq!(
        frontend.delivered_by.as_ref().map(|d| d.id.as_str()),
        Some(DELIVERED)
    );
    // The same answer as HTTP, field for field.
    let http =
        a.t.intake
            .workloads(Default::default())
            .await
            .expect("the workloads");
    let as_proto: Vec<_> = http.into_iter().map(grpc::workload_to_proto).collect();
    assert_eq!(all, as_proto);

    let staging = client
        .list(authed(ListWorkloadsRequest {
            environment: Some("staging".into()),
            ..Default::default()
        }))
        .await
        .expect("listed")
        .into_inner()
        .workloads;
    assert_eq!(staging.len(), 1);
    assert_eq!(staging[0].name, "frontend");

    let story = client
        .explain(authed(ExplainWorkloadRequest {
            namespace: "web".into(),
            name: "frontend".into(),
        }))
        .await
        .expect("explained")
        .into_inner()
        .story
        .expect("a story");
    assert_eq!(story.promotion_id, DELIVERED);
    let missing = client
        .explain(authed(ExplainWorkloadRequest {
            namespace: "web".into(),
            name: "backend".into(),
        }))
        .await
        .expect_err("not followed");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("web/backend"),
        "{}",
        missing.message()
    );
    let anonymous = client
        .list(Request::new(ListWorkloadsRequest::default()))
        .await
        .expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
}

/// The agent's binary, two replicas watching the test API server: the standby answers from its
/// own engine as the leader does (both serve the API; only the leader exports), with what the
/// watch decoded of the ReplicaSets.
///
/// Watches of different kinds deliver in no fixed order and the recording's times are in the
/// past: a replica may reach the verdict of the report before the rollout arrives, and then
/// trace the rollout on its own (`untraced/…`). Each replica's answers are checked against its
/// own verdict.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_standby_both_tell_what_runs() {
    use fluxtrace_testkit::replica::{Cluster, FAST_LEASE};
    const BIN: &str = env!("CARGO_BIN_EXE_fluxtrace");
    let wait = Duration::from_secs(30);
    let c = Cluster::start("workloads", "git-success.jsonl").await;
    let mut args = vec!["--settle", "5s"];
    args.extend(FAST_LEASE);
    let a = c.replica(BIN, "agent-a", &args);
    a.wait_for_role("leader", wait).await;
    let b = c.replica(BIN, "agent-b", &args);
    b.wait_for_role("standby", wait).await;
    let answer = b.promote(&c.report).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    c.server.apply_rest();
    for r in [&a, &b] {
        let started = Instant::now();
        let base = format!("http://{}", r.addr);
        let v = loop {
            let answer = r
                .request("GET", "/v1/workloads?namespace=web", None)
                .await
                .unwrap_or_default();
            let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
            let v = serde_json::from_str::<Value>(body).unwrap_or_default();
            if v["workloads"][0]["delivered_by"]["id"].is_string() {
                break v;
            }
            assert!(
                started.elapsed() < wait,
                "{}: no delivered workload; log:\n{}",
                r.name,
                r.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let w = &v["workloads"][0];
        assert_eq!(w["name"], "frontend", "{}: {v}", r.name);
        assert_eq!(w["running"].as_array().map(Vec::len), Some(1), "{v}");
        assert_eq!(w["running"][0]["name"], "frontend-tk6qtjs4ts", "{v}");
        assert_eq!(w["running"][0]["ready"], 2, "{v}");
        let id = w["delivered_by"]["id"].as_str().expect("an id");
        assert!(
            id == DELIVERED || id.starts_with("untraced/web/frontend/"),
            "{}: {v}",
            r.name
        );
        let out = fluxtrace(&["status", "--agent", &base], &[]).await;
        assert!(out.status.success());
        let text = stdout(&out);
        assert!(text.contains("web/frontend"), "{text}");
        assert!(text.contains(&format!("{id} (")), "{text}");
        let out = fluxtrace(
            &["explain", "--workload", "web/frontend", "--agent", &base],
            &[],
        )
        .await;
        assert!(out.status.success());
        assert!(
            stdout(&out).starts_with(&format!("Promotion {id}: succeeded")),
            "{}",
            stdout(&out)
        );
    }
}
