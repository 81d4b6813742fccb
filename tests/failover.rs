//! Two replicas of the agent's binary on one test API server: one leads (exports, writes
//! statuses), the other stands by with its watches warm. The leader dies (SIGKILL) or is
//! replaced (SIGTERM, a rolling update) mid-promotion; the standby takes over and the trace
//! completes, with no span missing and never two replicas exporting at once.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fluxtrace_testkit::kube_api::ServerHandle;
use fluxtrace_testkit::otlp_receiver::Call;
use fluxtrace_testkit::recordings::example;
use fluxtrace_testkit::replica::{sender, Cluster, Replica, FAST_LEASE};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_fluxtrace");
const WAIT: Duration = Duration::from_secs(30);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The spans of git-success's promotion as `fluxtrace replay` makes them: id → name.
fn replayed_names() -> BTreeMap<String, String> {
    let r = fluxtrace::replay::run(
        example("git-success.jsonl"),
        fluxtrace::correlate::EngineConfig::default(),
    );
    r.spans()
        .map(|s| (s.span_id.to_string(), s.name.to_string()))
        .collect()
}

/// Span id → (name, how many times it was received, by whom), for one trace.
fn received(calls: &[Call], trace_id: &str) -> BTreeMap<String, (String, usize, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, usize, BTreeSet<String>)> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.refused.is_none()) {
        let who = sender(c).unwrap_or_default();
        for rs in &c.request.resource_spans {
            for ss in &rs.scope_spans {
                for s in ss.spans.iter().filter(|s| hex(&s.trace_id) == trace_id) {
                    let e = out
                        .entry(hex(&s.span_id))
                        .or_insert_with(|| (s.name.clone(), 0, BTreeSet::new()));
                    e.1 += 1;
                    e.2.insert(who.clone());
                }
            }
        }
    }
    out
}

fn phase(server: &ServerHandle, id: &str) -> Option<String> {
    server
        .objects("Promotion")
        .into_iter()
        .find(|o| o["spec"]["id"] == id)
        .and_then(|o| o["status"]["phase"].as_str().map(str::to_string))
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A report whose revision never comes, for the same environment and app: the next report
/// supersedes it, on the leader.
fn doomed(c: &Cluster) -> Value {
    let before: jiff::Timestamp = c.report["time"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("the report's time");
    let before = before - jiff::SignedDuration::from_secs(60);
    json!({"id": "P-doomed", "environment": "staging", "app": "frontend",
           "revision": "0000000000000000000000000000000000000001",
           "time": before.to_string()})
}

/// Applies the next `n` recording lines a line at a time, as a cluster makes them. All at once,
/// the Kustomization's watch could deliver the end of its reconcile before the Deployment's
/// watch delivers the rollout it started, to replicas whose recorded times are already past
/// the settle period (the recording is shifted to end when the test starts).
async fn paced(server: &ServerHandle, n: usize) {
    for _ in 0..n {
        server.apply_next_n(1);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn exported(server: &ServerHandle, id: &str) -> bool {
    server
        .objects("Promotion")
        .into_iter()
        .any(|o| o["spec"]["id"] == id && o["status"]["spansExported"] == true)
}

fn replica(c: &Cluster, name: &str) -> Replica {
    // Watches of different kinds deliver in no fixed order: a settle period lets the rollout
    // arrive before the verdict, as in production (30 s by default), on a loaded machine too.
    let mut args = vec!["--settle", "5s"];
    args.extend(FAST_LEASE);
    c.replica(BIN, name, &args)
}

/// Runs the scenario; `stop` ends the leader (SIGKILL or SIGTERM) mid-promotion.
async fn take_over(tag: &str, graceful: bool) {
    let c = Cluster::start(tag, "git-success.jsonl").await;
    let mut a = replica(&c, "agent-a");
    a.wait_for_role("leader", WAIT).await;
    let b = replica(&c, "agent-b");
    b.wait_for_role("standby", WAIT).await;

    // A promotion the leader finishes and exports (superseded by the next report): the standby
    // holds its copy until the Promotion's status says it was exported, and never sends it.
    let answer = b.promote(&doomed(&c)).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    // The promotion in flight, reported to the standby (both serve the intake).
    let answer = b.promote(&c.report).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let trace_id = fluxtrace::trace::trace_id_for("P-2026-11-26-42").to_string();
    assert!(answer.contains(&trace_id), "{answer}");
    eventually("the doomed promotion's verdict, exported", || {
        phase(&c.server, "P-doomed").as_deref() == Some("Superseded")
            && exported(&c.server, "P-doomed")
    })
    .await;
    let half = c.server.remaining() / 2;
    paced(&c.server, half).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopped_at = Instant::now();
    if graceful {
        let status = a.terminate().await.expect("the leader stops on SIGTERM");
        assert!(
            a.log_text().contains("Lease released."),
            "the leader gives the Lease up; log:\n{}",
            a.log_text()
        );
        assert!(status.success(), "{status:?}; log:\n{}", a.log_text());
    } else {
        a.kill().await;
    }
    let gone = Instant::now();
    paced(&c.server, c.server.remaining()).await;
    let led_at = b.wait_for_role("leader", WAIT).await;
    let verdict = async {
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if phase(&c.server, "P-2026-11-26-42").as_deref() == Some("Succeeded") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    assert!(
        verdict.await,
        "no Succeeded verdict: {:?}; new leader's log:\n{}",
        c.server.objects("Promotion"),
        b.log_text()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let calls = c.receiver.calls();
    // Never two at once: everything the old leader sent arrived before it was gone, everything
    // the new one sent after.
    for call in &calls {
        match sender(call).as_deref() {
            Some("agent-a") => assert!(call.at <= gone, "agent-a exported after it stopped"),
            Some("agent-b") => assert!(call.at >= stopped_at, "agent-b exported while agent-a led"),
            other => panic!("an export from {other:?}"),
        }
    }
    let got = received(&calls, &trace_id);
    let want = replayed_names();
    let names: BTreeMap<String, String> = got
        .iter()
        .map(|(id, (n, _, _))| (id.clone(), n.clone()))
        .collect();
    assert_eq!(names, want, "every span of the trace, none missing");
    let resent = got.values().filter(|(_, n, _)| *n > 1).count();
    println!(
        "failover ({}): {} spans, {resent} received twice; leading {} ms after the leader was gone",
        if graceful { "SIGTERM" } else { "SIGKILL" },
        got.len(),
        led_at.duration_since(gone).as_millis()
    );
    assert!(
        got.values()
            .all(|(_, _, who)| who.len() == 1 && who.contains("agent-b")),
        "the in-flight promotion is exported by the new leader alone: {got:?}"
    );
    let doomed = received(
        &calls,
        &fluxtrace::trace::trace_id_for("P-doomed").to_string(),
    );
    assert!(!doomed.is_empty(), "the doomed promotion was exported");
    assert!(
        doomed
            .values()
            .all(|(_, n, who)| *n == 1 && who.len() == 1 && who.contains("agent-a")),
        "exported once, by the leader of the time; the standby let its copy go: {doomed:?}"
    );
    assert!(
        b.log_text().contains("Leading"),
        "the log says which replica leads"
    );
    let metrics = b.request("GET", "/metrics", None).await.unwrap_or_default();
    assert!(metrics.contains("fluxtrace_leader 1"), "{metrics}");
}

/// The leader is killed with SIGKILL mid-promotion: the standby takes over once the Lease runs
/// out and finishes the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_a_killed_leader_and_finishes_the_trace() {
    take_over("failover-kill", false).await;
}

/// A rolling update: the leader gets SIGTERM mid-promotion, finishes what it can, gives the
/// Lease up, and the replica of the new version that stood by continues every open promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_hands_open_promotions_to_the_new_replica() {
    take_over("failover-term", true).await;
}

/// The API server stops taking writes: the leader cannot renew, and exits within its renew
/// deadline, before its Lease runs out for anyone else; once writes are taken again the other
/// replica leads. Never two leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_before_another_may_lead() {
    let c = Cluster::start("failover-renew", "git-success.jsonl").await;
    let args = [
        "--lease-duration",
        "4s",
        "--lease-renew-deadline",
        "1500ms",
        "--lease-retry-period",
        "200ms",
    ];
    let mut a = c.replica(BIN, "agent-a", &args);
    a.wait_for_role("leader", WAIT).await;
    let b = c.replica(BIN, "agent-b", &args);
    b.wait_for_role("standby", WAIT).await;

    c.server.fail_writes(Some(503));
    let failing = Instant::now();
    let status = tokio::time::timeout(WAIT, a.child.wait())
        .await
        .expect("the leader exits")
        .expect("an exit status");
    let exited = Instant::now();
    assert!(!status.success(), "lost the lease: a failure exit");
    let log = a.log_text();
    assert!(log.contains("Lost the lease"), "{log}");
    assert!(log.contains("Exiting at once"), "{log}");
    // Renew deadline 1.5 s, lease duration 4 s: gone before anyone could take over.
    assert!(
        exited.duration_since(failing) < Duration::from_secs(4),
        "the leader outlived its Lease: {:?}",
        exited.duration_since(failing)
    );
    assert!(
        b.ready().await.is_some_and(|r| r.contains("role: standby")),
        "no one else leads while writes fail"
    );

    c.server.fail_writes(None);
    b.wait_for_role("leader", WAIT).await;
}
