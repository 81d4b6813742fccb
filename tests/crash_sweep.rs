//! Crash-point sweep: for each bundled recording the agent is killed as SIGKILL would kill it
//! (no drain, no flush: what it held in memory and had queued for export is lost) after the
//! k-th observation, for every k, and a new agent starts against the same API server state
//! (the Promotion objects and every cluster object persist there). The spans at the OTLP
//! receiver, de-duplicated by span id, equal those of a run without the kill: ids, names,
//! parents, statuses, attributes, events and times. A span received twice (a verdict whose
//! export was not confirmed before the kill is exported again) is identical to its first copy.
//!
//! Each recording is also killed once between its verdict and the export's confirmation (the
//! collector takes the spans but never answers): the new agent exports them again.
//!
//! A canary span's span events made from the Canary's status (`flagger.canary.source=status`)
//! are left out of the comparison: they are what a watching agent saw of a long analysis
//! that a restarted one cannot list again.
//!
//! Sized by `FLUXTRACE_SWEEP_STRIDE`: every stride-th kill point (default 10, and always the
//! last); `1` is every kill point, which CI runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fluxtrace::agent::AgentConfig;
use fluxtrace::correlate::EngineConfig;
use fluxtrace::replay::EXAMPLES;
use fluxtrace::resource::sync;
use fluxtrace_testkit::agent::{eventually, Disrupt, LiveAgent, WAIT};
use fluxtrace_testkit::kube_api::{KubeApi, Recording, ServerHandle};
use fluxtrace_testkit::otlp_receiver::{export_settings, OtlpReceiver};
use opentelemetry_proto::tonic::trace::v1::Span;

const CLUSTER: &str = "live";

/// An agent exporting to `receiver`, and the queues of its Promotion status writer.
fn unsynced(receiver: &OtlpReceiver) -> (LiveAgent, sync::StatusQueues) {
    let (tx, rx) = sync::channel();
    let mut live = LiveAgent::start(tx.into_config(AgentConfig {
        engine: EngineConfig {
            cluster: CLUSTER.into(),
            ..EngineConfig::default()
        },
        export: Some(export_settings(receiver.endpoint(), CLUSTER)),
        tick: Duration::from_millis(20),
        ..AgentConfig::default()
    }));
    // Reports are created as Promotion objects, as `kubectl apply` or the intake would.
    live.reports_as_objects = true;
    (live, rx)
}

/// An agent that feeds `server`'s Promotions and writes their status; its watchers start with
/// [`LiveAgent::begin`].
fn agent(server: &ServerHandle, receiver: &OtlpReceiver) -> LiveAgent {
    let (mut live, rx) = unsynced(receiver);
    live.sync_promotions(server, rx);
    live
}

/// A new agent on a cluster that holds state, started as the binary starts one: the kube
/// watchers, then the Promotion feed; returns once what they listed is applied.
async fn restarted(server: &ServerHandle, receiver: &OtlpReceiver, at: &str) -> LiveAgent {
    let (mut live, rx) = unsynced(receiver);
    live.clock.set(at);
    // Every initial list the engine waits for is known before the first one can finish.
    live.readiness.register("watch/Promotion");
    live.watch(server);
    live.sync_promotions(server, rx);
    live.ready().await;
    let h = live.handle.clone();
    eventually("the re-list to be applied", || h.queue_depth() == 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    live
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The spans received, de-duplicated by span id, and how many copies were re-sends; every
/// re-send is identical to the first copy.
fn dedup(spans: &[(Option<String>, Span)], what: &str) -> (BTreeMap<String, String>, usize) {
    let mut out = BTreeMap::new();
    let mut resends = 0;
    for (svc, s) in spans {
        let line = fluxtrace_testkit::otlp_receiver::describe(svc, &without_status_steps(s));
        match out.get(&hex(&s.span_id)) {
            Some(first) => {
                assert_eq!(
                    first, &line,
                    "{what}: a re-send differs from the first copy"
                );
                resends += 1;
            }
            None => {
                out.insert(hex(&s.span_id), line);
            }
        }
    }
    (out, resends)
}

/// `s` without the span events a canary span takes from the Canary's status writes
/// (`flagger.canary.source=status`): an agent started after such a write never saw it, and
/// docs/design.md says so. Everything else on the span must still be equal.
fn without_status_steps(s: &Span) -> Span {
    let mut s = s.clone();
    s.events.retain(|e| {
        !e.attributes.iter().any(|kv| {
            kv.key == "flagger.canary.source"
                && kv.value.as_ref().and_then(|v| v.value.as_ref())
                    == Some(
                        &opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            "status".into(),
                        ),
                    )
        })
    });
    s
}

/// The trace id of a span as [`seen`] shows it.
fn trace_of(line: &str) -> &str {
    line.split(' ')
        .next()
        .and_then(|f| f.strip_prefix("trace="))
        .unwrap_or_default()
}

/// The end (Unix nanoseconds) of a span as [`seen`] shows it.
fn end_of(line: &str) -> i128 {
    line.split(' ')
        .find_map(|f| f.strip_prefix("end="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(i128::MAX)
}

/// Traces no object records whose delivery had ended by `kill_at`: untraced rollouts
/// (`delivery.traceability=missing`) whose rollout had ended, and promotions no report named
/// (`delivery.traceability` `unreported`, `automated` or `annotated`) whose every stage had
/// ended. A new agent cannot tell whether their spans were sent before the kill, and what its
/// initial lists show delivered is history, so it does not trace a delivery that ended before
/// it saw it. Each of these traces is received whole or not at all.
fn lost_untraced(want: &BTreeMap<String, String>, kill_at: jiff::Timestamp) -> BTreeSet<String> {
    let kill_at = kill_at.as_nanosecond();
    let marked = |l: &str, how: &str| {
        l.contains(&format!(
            r#"delivery.traceability=Some(AnyValue {{ value: Some(StringValue(\"{how}\"))"#
        ))
    };
    want.values()
        .filter(|l| {
            (marked(l, "missing") && l.contains(r#"name="rollout""#))
                || (["unreported", "automated", "annotated"]
                    .iter()
                    .any(|how| marked(l, how))
                    && l.contains(r#"name="promotion""#))
        })
        .filter(|l| end_of(l) <= kill_at)
        .map(|l| trace_of(l).to_string())
        .collect()
}

/// What differs between the spans of a run without a kill (`want`) and those received
/// (`got`), a line per span; the spans of the traces in `may_lose` may be missing, each of
/// those traces as a whole. The differences and how many such traces were lost.
fn differences(
    want: &BTreeMap<String, String>,
    got: &BTreeMap<String, String>,
    may_lose: &BTreeSet<String>,
) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut lost = BTreeSet::new();
    for trace in may_lose {
        let (of, received): (Vec<_>, Vec<_>) = want
            .iter()
            .filter(|(_, w)| trace_of(w) == trace)
            .partition(|(id, _)| !got.contains_key(*id));
        if received.is_empty() {
            lost.insert(trace.clone());
        } else if !of.is_empty() {
            out.push(format!(
                "trace {trace} received in part: {} spans missing",
                of.len()
            ));
        }
    }
    for (id, w) in want {
        match got.get(id) {
            None if lost.contains(trace_of(w)) => {}
            None => out.push(format!("missing {id}: {w}")),
            Some(g) if g != w => out.push(format!("differs {id}:\n  want {w}\n  got  {g}")),
            Some(_) => {}
        }
    }
    for (id, g) in got {
        if !want.contains_key(id) {
            out.push(format!("extra {id}: {g}"));
        }
    }
    (out, lost.len())
}

/// The `at` of line `i`.
fn at(text: &str, i: usize) -> String {
    let line = text.lines().nth(i).expect("a line");
    let v: serde_json::Value = serde_json::from_str(line).expect("json");
    v["at"].as_str().expect("at").to_string()
}

/// Waits (up to [`WAIT`]) for `want` distinct spans at the receiver, then a little longer for
/// anything extra; the comparison names what is missing.
async fn settled(receiver: &OtlpReceiver, want: usize) {
    let count = || dedup(&receiver.spans(), "waiting").0.len();
    let start = Instant::now();
    while count() < want && start.elapsed() < WAIT {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// A run without a kill: the spans the sweep compares with.
async fn unbroken(text: &str) -> BTreeMap<String, String> {
    let want = fluxtrace::replay::run(
        text,
        EngineConfig {
            cluster: CLUSTER.into(),
            ..EngineConfig::default()
        },
    )
    .spans()
    .count();
    let server = KubeApi::with_recording(text).start().await;
    let receiver = OtlpReceiver::start().await;
    let mut live = agent(&server, &receiver);
    live.play(&server, text, Disrupt::None).await;
    live.pass_deadlines();
    settled(&receiver, want).await;
    live.stop().await;
    let (spans, resends) = dedup(&receiver.spans(), "the run without a kill");
    assert_eq!(resends, 0, "a run without a kill sends each span once");
    assert_eq!(spans.len(), want, "the same spans as replay");
    spans
}

/// Kills the agent after the observation on line `k - 1` (after the initial state when `k` is
/// the first line after it), starts a new one on the same server at that time, serves the rest;
/// the de-duplicated spans and the re-sends.
async fn killed_after(
    text: &str,
    k: usize,
    want: usize,
) -> (BTreeMap<String, String>, usize, jiff::Timestamp) {
    let server = KubeApi::with_recording(text).start().await;
    let receiver = OtlpReceiver::start().await;
    let mut first = agent(&server, &receiver);
    let from = first.begin(&server, text).await;
    let end = text.lines().count();
    first.serve(&server, text, from..k, Disrupt::None).await;
    first.kill();

    let mut second = restarted(&server, &receiver, &at(text, k.max(1) - 1)).await;
    let kill_at = second.clock.now();
    second.serve(&server, text, k..end, Disrupt::None).await;
    second.pass_deadlines();
    settled(&receiver, want).await;
    second.stop().await;
    let (got, again) = dedup(&receiver.spans(), &format!("kill after line {k}"));
    (got, again, kill_at)
}

/// Plays the whole recording; the collector takes the first export request of the verdicts'
/// spans and never answers (the others wait behind it); the agent is killed before it could
/// write that they were exported. The new agent (its collector answering) exports them all,
/// those the stuck collector took again. The spans de-duplicated, the re-sends, and how many
/// spans the stuck collector took.
async fn killed_before_confirmation(
    text: &str,
    want: usize,
) -> (BTreeMap<String, String>, usize, usize, jiff::Timestamp) {
    let server = KubeApi::with_recording(text).start().await;
    let stuck = OtlpReceiver::start().await;
    stuck.hang();
    let mut first = agent(&server, &stuck);
    first.play(&server, text, Disrupt::None).await;
    // The verdicts come a settle period after the last stage; a stage that never ends needs
    // its deadline.
    first.clock.advance(jiff::SignedDuration::from_secs(35));
    let started = Instant::now();
    while stuck.spans().is_empty() && started.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if stuck.spans().is_empty() {
        first.pass_deadlines();
    }
    eventually("an export request at the stuck collector", || {
        !stuck.spans().is_empty()
    })
    .await;
    let taken = stuck.spans().len();
    let now = first.clock.now();
    first.kill();
    for p in server.objects("Promotion") {
        assert_ne!(
            p["status"]["spansExported"], true,
            "not confirmed before the kill: {}",
            p["status"]
        );
    }

    let receiver = OtlpReceiver::start().await;
    let mut second = restarted(&server, &receiver, &now.to_string()).await;
    settled(&receiver, want).await;
    second.stop().await;
    // One collector behind two connections: what the stuck one took, then the rest.
    let mut spans = stuck.spans();
    spans.extend(receiver.spans());
    let (got, again) = dedup(&spans, "kill before the export was confirmed");
    (got, again, taken, now)
}

/// The first line after the initial list (the lines [`LiveAgent::begin`] applies).
fn after_initial(text: &str) -> usize {
    let rec = Recording::parse(text).expect("a bundled recording");
    let first = rec.initial_at().expect("lines").to_string();
    rec.lines
        .iter()
        .filter(|l| l.kind == "watch")
        .take_while(|l| l.at == first)
        .map(|l| l.index + 1)
        .max()
        .unwrap_or(0)
}

fn stride() -> usize {
    std::env::var("FLUXTRACE_SWEEP_STRIDE")
        .ok()
        .map(|s| {
            s.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| panic!("FLUXTRACE_SWEEP_STRIDE={s}: a whole number >= 1"))
        })
        .unwrap_or(10)
}

fn selected() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    let only = std::env::var("FLUXTRACE_SWEEP_ONLY").ok();
    EXAMPLES
        .iter()
        .filter(move |(name, _)| only.as_deref().is_none_or(|o| name.contains(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_observation_loses_nothing_and_changes_nothing() {
    let stride = stride();
    let started = Instant::now();
    let (mut points, mut resends) = (0, 0);
    for (name, text) in selected() {
        let want = unbroken(text).await;
        let from = after_initial(text);
        let end = text.lines().count();
        let mut ks: Vec<usize> = (from..=end).step_by(stride).collect();
        if ks.last() != Some(&end) {
            ks.push(end);
        }
        let (mut sent_again, mut untraced_lost) = (0, 0);
        for &k in &ks {
            let (got, again, kill_at) = killed_after(text, k, want.len()).await;
            let (diff, lost) = differences(&want, &got, &lost_untraced(&want, kill_at));
            untraced_lost += lost;
            if std::env::var_os("FLUXTRACE_SWEEP_DIAGNOSE").is_some() && !diff.is_empty() {
                println!("{name}: killed after line {k}:\n{}", diff.join("\n"));
                continue;
            }
            assert!(
                diff.is_empty(),
                "{name}: killed after line {k}:\n{}",
                diff.join("\n")
            );
            sent_again += again;
        }
        println!(
            "crash sweep: {name}: {} kill points (after lines {from}..={end}, stride {stride}), \
             {} spans, {sent_again} identical re-sends, {untraced_lost} kill points after an \
             untraced rollout or unreported delivery ended lost its trace",
            ks.len(),
            want.len(),
        );
        points += ks.len();
        resends += sent_again;
    }
    println!(
        "crash sweep: {points} kill points, {resends} identical re-sends, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A kill between the verdict and the export's confirmation: every span of the verdict is
/// exported again by the new agent, identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_before_the_export_is_confirmed_sends_the_same_spans_again() {
    for (name, text) in selected() {
        let want = unbroken(text).await;
        let (got, again, taken, _) = killed_before_confirmation(text, want.len()).await;
        // Reports (kept as Promotion resources) are derived again by the restarted agent.
        let durable = text.contains(r#""kind":"promotion""#);
        let lost = if durable {
            let (diff, _) = differences(&want, &got, &BTreeSet::new());
            assert!(
                diff.is_empty(),
                "{name}: killed before the export was confirmed:\n{}",
                diff.join("\n")
            );
            assert_eq!(
                again, taken,
                "{name}: what the stuck collector took is sent again"
            );
            0
        } else {
            // Only deliveries nothing durable records (untraced rollouts, unreported and
            // automated promotions): what arrives is identical; a delivery that had ended is
            // history to the new agent and not traced again, so the rest of its trace is lost
            // (the limit docs/design.md states); one still failing is traced again, identical.
            let wrong: Vec<&String> = got
                .iter()
                .filter(|(id, g)| want.get(*id) != Some(*g))
                .map(|(id, _)| id)
                .collect();
            assert!(wrong.is_empty(), "{name}: spans that differ: {wrong:?}");
            assert!(
                got.len() == want.len() || got.len() == taken,
                "{name}: all, or what the stuck collector took ({} of {}, took {taken})",
                got.len(),
                want.len()
            );
            want.len() - got.len()
        };
        println!(
            "crash sweep: {name}: killed before the export was confirmed: {} spans, {again} \
             identical re-sends, {lost} spans of untraced or unreported deliveries lost",
            want.len()
        );
    }
}
