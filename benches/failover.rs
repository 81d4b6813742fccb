//! Failover time: from the leader's death to the first span exported by the new leader, with
//! the default Lease timings (`--lease-duration 15s`, `--lease-renew-deadline 10s`,
//! `--lease-retry-period 2s`; aim: under 20 s).
//!
//! Each round starts two replicas of the agent's binary on a test API server serving
//! `git-success.jsonl`, waits for one to lead and the other to stand by, reports the promotion,
//! then ends the leader and delivers the rest of the recording: the standby finishes the
//! promotion and exports it once it leads. Two ways to end the leader, in the same run:
//!
//! - SIGTERM, a rolling update (the baseline): the leader gives the Lease up as it stops;
//! - SIGKILL, a crash or a lost node: the standby waits for the Lease to run out.
//!
//! `FLUXTRACE_BENCH_FAILOVERS` rounds of each (default 3). Prints each round and the medians,
//! SIGKILL as a ratio to the baseline and to the lease duration.

use std::time::{Duration, Instant};

use fluxtrace_testkit::bench::{env_usize, fail};
use fluxtrace_testkit::replica::{sender, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_fluxtrace");
const LEASE: Duration = Duration::from_secs(15);

/// Seconds from the leader's end to the first export call of the new leader.
async fn round(kill: bool, n: usize) -> f64 {
    let tag = format!("bench-failover-{n}-{kill}");
    let c = Cluster::start(&tag, "git-success.jsonl").await;
    let args = ["--settle", "0s"];
    let mut a = c.replica(BIN, "agent-a", &args);
    a.wait_for_role("leader", Duration::from_secs(60)).await;
    let b = c.replica(BIN, "agent-b", &args);
    b.wait_for_role("standby", Duration::from_secs(60)).await;
    let answer = b.promote(&c.report).await;
    if !answer.starts_with("HTTP/1.1 202") {
        fail(format!("report refused: {answer}"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gone = if kill {
        a.kill().await;
        Instant::now()
    } else {
        let stopping = Instant::now();
        if a.terminate().await.is_none() {
            fail("the leader did not stop on SIGTERM");
        }
        stopping
    };
    c.server.apply_rest();
    let deadline = gone + Duration::from_secs(60);
    loop {
        let first = c
            .receiver
            .calls()
            .into_iter()
            .filter(|call| sender(call).as_deref() == Some("agent-b"))
            .map(|call| call.at)
            .min();
        if let Some(at) = first {
            return at.saturating_duration_since(gone).as_secs_f64();
        }
        if Instant::now() > deadline {
            fail(format!(
                "no span from the new leader within 60 s; its log:\n{}",
                b.log_text()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: a quick check is enough there.
    let rounds = if std::env::args().any(|a| a == "--bench") {
        env_usize("FLUXTRACE_BENCH_FAILOVERS", 3).max(1)
    } else {
        1
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("runtime: {e}")));
    rt.block_on(async {
        let mut term = Vec::new();
        let mut kill = Vec::new();
        for n in 0..rounds {
            let t = round(false, n).await;
            println!("round {n}: SIGTERM (rolling update) → first span of the new leader: {t:.2} s");
            term.push(t);
            let k = round(true, n).await;
            println!("round {n}: SIGKILL (crash)          → first span of the new leader: {k:.2} s");
            kill.push(k);
        }
        let (t, k) = (median(term), median(kill));
        println!(
            "failover, median of {rounds}: SIGTERM {t:.2} s (baseline), SIGKILL {k:.2} s = {:.1}× the baseline, {:.2}× the lease duration ({} s); aim: under 20 s",
            k / t.max(1e-3),
            k / LEASE.as_secs_f64(),
            LEASE.as_secs()
        );
        if k >= 20.0 {
            fail(format!("failover took {k:.2} s, the aim is under 20 s"));
        }
    });
}
