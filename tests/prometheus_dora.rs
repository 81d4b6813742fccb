//! DORA's four keys through a real Prometheus server: `fluxtrace replay --serve` keeps the
//! replay's `/metrics` up, Prometheus (Debian's `prometheus`, exemplar storage on) scrapes it
//! every second and evaluates collector-config/prometheus/fluxtrace-dora.yaml, and its HTTP API
//! must give back what the recordings imply:
//!
//! - `prod`/`ledger`: a rollout that failed (ImagePullBackOff), then, two hours later, a
//!   promotion that succeeded and reported its commit time: two deployments, change failure
//!   rate 1/2, a lead time from that commit to its rollout, a time to restore from the failure
//!   to the success, and the success's trace id as the exemplar of both;
//! - `staging`/`frontend`: one success without a commit time: a deployment, change failure
//!   rate 0, no lead time (never guessed), nothing to restore.
//!
//! The expected values come from replaying the same recordings in this process. Skipped,
//! saying so, when prometheus is not installed (`.ci/run` installs it and sets
//! `FLUXTRACE_REQUIRE_TOOLS=1`, which turns the skip into a failure).

use fluxtrace_testkit::cli::{self, get, Running};
use fluxtrace_testkit::prometheus::{self, api, query};
use fluxtrace_testkit::tools;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fluxtrace::client::encode_segment;
use fluxtrace::correlate::EngineConfig;
use fluxtrace::replay;
use fluxtrace::story::{Outcome, Story};
use fluxtrace::trace::Stage;
use fluxtrace_testkit::recordings::{example as recording, shift};
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

const BOUND: Duration = Duration::from_secs(90);

/// `text` with its promotion report edited by `edit`.
fn edit_report(text: &str, edit: impl Fn(&mut serde_json::Map<String, Value>)) -> String {
    text.lines()
        .map(|line| {
            let mut v: Value = serde_json::from_str(line).expect("a JSON line");
            if v["kind"] == "promotion" {
                edit(v["promotion"].as_object_mut().expect("a report"));
            }
            v.to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The single story a recording gives, replayed in this process.
fn story_of(text: &str) -> Story {
    let r = replay::run(text, EngineConfig::default());
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    assert_eq!(r.traces.len(), 1);
    r.traces[0].story.clone()
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fluxtrace-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The one value of `promql`, once Prometheus has it (rules need a few evaluations).
fn value(addr: &str, promql: &str) -> f64 {
    let deadline = Instant::now() + BOUND;
    loop {
        let v = query(addr, promql);
        if let [(_, x)] = v[..] {
            return x;
        }
        assert!(
            Instant::now() < deadline,
            "no single value for {promql} in time: {v:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn assert_close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() < 1e-6,
        "{what}: Prometheus says {got}, the recordings imply {want}"
    );
}

/// Trace ids of the exemplars Prometheus stored for `metric`.
fn exemplar_traces(addr: &str, metric: &str) -> Vec<String> {
    let now = Timestamp::now();
    let range = format!(
        "start={}&end={}",
        (now - SignedDuration::from_hours(1)).as_second(),
        (now + SignedDuration::from_hours(1)).as_second()
    );
    let Some(data) = api(
        addr,
        &format!(
            "/api/v1/query_exemplars?query={}&{range}",
            encode_segment(metric)
        ),
    ) else {
        return Vec::new();
    };
    data.as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["exemplars"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_string))
        .collect()
}

/// Starts `fluxtrace replay --serve 127.0.0.1:0 <files>`; its address once it serves.
fn serve_replay(files: &[PathBuf]) -> (Running, String) {
    cli::serve_replay(env!("CARGO_BIN_EXE_fluxtrace"), files)
}

#[test]
fn prometheus_scrapes_the_four_keys_and_their_exemplars() {
    let test = "prometheus_scrapes_the_four_keys_and_their_exemplars";
    let Some(prometheus) = tools::tool(test, "prometheus", "PROMETHEUS", &["--version"]) else {
        return;
    };
    let dir = scratch_dir();

    // prod/ledger fails, then two hours later succeeds with a commit 45 minutes before its
    // report; staging/frontend succeeds without a commit time.
    let failed = recording("oci-rollout-imagepull.jsonl").to_string();
    let fixed = edit_report(
        &shift(
            recording("oci-success.jsonl"),
            SignedDuration::from_hours(2),
        ),
        |r| {
            let time: Timestamp = r["time"].as_str().expect("time").parse().expect("time");
            r.insert("app".into(), "ledger".into());
            r.insert(
                "commit_time".into(),
                (time - SignedDuration::from_mins(45)).to_string().into(),
            );
        },
    );
    let other = recording("git-success.jsonl").to_string();
    let (failed_story, fixed_story, other_story) =
        (story_of(&failed), story_of(&fixed), story_of(&other));
    assert_eq!(failed_story.outcome, Outcome::Failed);
    assert_eq!(fixed_story.outcome, Outcome::Succeeded);
    assert_eq!(other_story.outcome, Outcome::Succeeded);
    assert_eq!(
        (
            failed_story.environment.as_deref(),
            failed_story.app.as_deref()
        ),
        (Some("prod"), Some("ledger"))
    );
    assert_eq!(fixed_story.app.as_deref(), Some("ledger"));
    let rollout_done = fixed_story
        .stages
        .iter()
        .filter(|s| s.stage == Stage::Rollout)
        .map(|s| s.end)
        .max()
        .expect("a rollout");
    let commit = fixed_story.commit_time.expect("the reported commit time");
    let lead = rollout_done.duration_since(commit).as_secs_f64();
    let restore = fixed_story
        .end
        .duration_since(failed_story.end)
        .as_secs_f64();
    assert!(lead > 45.0 * 60.0 && restore > 3600.0, "{lead} {restore}");

    let files: Vec<PathBuf> = [
        ("failed.jsonl", &failed),
        ("fixed.jsonl", &fixed),
        ("other.jsonl", &other),
    ]
    .iter()
    .map(|(name, text)| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("recording");
        p
    })
    .collect();
    let (_agent, agent) = serve_replay(&files);

    // Without an OpenMetrics Accept header: the Prometheus text format, no exemplars.
    let (head, body) = get(&agent, "/metrics", None).expect("/metrics");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(body.contains("fluxtrace_dora_promotions_finished_total{"));
    assert!(!body.contains("trace_id"), "exemplars only in OpenMetrics");

    let rules = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("collector-config/prometheus/fluxtrace-dora.yaml");
    let (_prometheus, prom) = prometheus::start(&prometheus, &dir, &rules, &agent);
    let prod = r#"environment="prod",app="ledger""#;
    let staging = r#"environment="staging",app="frontend""#;

    // Deployment frequency: the counter, and the recording rule (deployments per day, 7 days).
    for (labels, outcome, want) in [
        (prod, "failed", 1.0),
        (prod, "succeeded", 1.0),
        (staging, "succeeded", 1.0),
    ] {
        let q =
            format!(r#"fluxtrace_dora_promotions_finished_total{{{labels},outcome="{outcome}"}}"#);
        assert_close(&q, value(&prom, &q), want);
    }
    let q = format!("fluxtrace_dora:deployments:per_day_7d{{{prod}}}");
    assert_close(&q, value(&prom, &q), 2.0 / 7.0);
    // Change failure rate.
    let q = format!("fluxtrace_dora:change_failure_rate:ratio_7d{{{prod}}}");
    assert_close(&q, value(&prom, &q), 0.5);
    let q = format!("fluxtrace_dora:change_failure_rate:ratio_7d{{{staging}}}");
    assert_close(&q, value(&prom, &q), 0.0);
    // Lead time for changes: one observation, prod only.
    let q = format!("fluxtrace_dora:lead_time_seconds:mean_7d{{{prod}}}");
    assert_close(&q, value(&prom, &q), lead);
    let q = format!("fluxtrace_dora_lead_time_seconds_count{{{staging}}}");
    assert!(
        query(&prom, &q).is_empty(),
        "{q}: no commit time, no lead time"
    );
    // Time to restore: the failure to the success.
    let q = format!("fluxtrace_dora:time_to_restore_seconds:mean_7d{{{prod}}}");
    assert_close(&q, value(&prom, &q), restore);
    let q = format!("fluxtrace_dora_time_to_restore_seconds_count{{{staging}}}");
    assert!(query(&prom, &q).is_empty(), "{q}: nothing failed there");

    // Exemplars: the success's trace on both histograms.
    let want = fixed_story.trace_id.to_string();
    for metric in [
        "fluxtrace_dora_lead_time_seconds_bucket",
        "fluxtrace_dora_time_to_restore_seconds_bucket",
    ] {
        let deadline = Instant::now() + BOUND;
        loop {
            let traces = exemplar_traces(&prom, metric);
            if !traces.is_empty() {
                assert!(
                    traces.iter().all(|t| *t == want),
                    "{metric}: exemplars {traces:?}, want {want}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{metric}: no exemplar stored");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
