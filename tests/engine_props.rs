//! The engine under arbitrary interleavings, through its public API only (`Engine::new`,
//! `apply`, `tick`, `finish` and the recording decoder): several bundled recordings, each moved
//! in time so that their promotions overlap, their observations interleaved in any order that
//! keeps each recording's own order, with repeats (a report sent again, an object delivered
//! again in its latest state) and re-lists (the latest state of every object seen, as after a
//! watch restart) mixed in, and the engine's clock ticked in between.
//!
//! Half the runs start as an agent starts: the engine holds while the initial state of every
//! recording (its lines up to `synced`, else its first, settled, list) is delivered, then
//! releases it; the `history-*` recordings' initial states name promotions delivered before the
//! start.
//!
//! Whatever the order: the engine does not panic, every promotion gets exactly one verdict (one
//! `Output::Story` per promotion id, and one for every reported promotion), no span id is emitted
//! twice, every span belongs to a trace that got a verdict, and, in a run that starts held on
//! recordings that share no object, nothing delivered before the start is judged (no verdict
//! for a promotion only the initial state names).
//!
//! `FLUXTRACE_ENGINE_PROP_CASES` sets the number of cases (default 16; .ci/run runs 400).

use std::collections::{BTreeMap, BTreeSet};

use fluxtrace::correlate::{Engine, EngineConfig, Output};
use fluxtrace::model::DeliveryEvent;
use fluxtrace::replay::EXAMPLES;
use fluxtrace::sources::recording::decode_line;
use fluxtrace_testkit::fleet::shifted;
use fluxtrace_testkit::recordings::example;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

/// One step of a run.
#[derive(Clone, Debug)]
enum Op {
    /// The next line of stream `n % streams` (the next stream that has lines left).
    Next(usize),
    /// A line delivered earlier, again: a report or Flux event as it was (a retry), an object
    /// in its latest state. Stamped with the current time.
    Repeat(prop::sample::Index),
    /// Every object seen and not deleted, in its latest state, stamped with the current time.
    Relist,
    /// `Engine::tick` this many seconds after the latest time delivered.
    Tick(u16),
    /// `Engine::tick` at this second since the Unix epoch (any time `Timestamp` can hold).
    TickAt(i64),
}

/// A run: which recordings, moved by how much, and the ops.
#[derive(Clone, Debug)]
struct Case {
    /// (bundled recording, seconds added to every timestamp in it).
    streams: Vec<(&'static str, i64)>,
    /// Start as an agent starts: every stream's initial state held, then released.
    held_start: bool,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => any::<usize>().prop_map(Op::Next),
        3 => any::<prop::sample::Index>().prop_map(Op::Repeat),
        1 => Just(Op::Relist),
        2 => (0u16..90).prop_map(Op::Tick),
        1 => (0u16..3600).prop_map(Op::Tick),
    ]
}

/// Ops with ticks anywhere in time, far past and far future included.
fn far_op() -> impl Strategy<Value = Op> {
    let (lo, hi) = (Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    prop_oneof![
        8 => op(),
        1 => (lo..=hi).prop_map(Op::TickAt),
        1 => prop_oneof![Just(lo), Just(hi)].prop_map(Op::TickAt),
    ]
}

/// Two to four recordings, each moved by a shift from `shifts`, and up to 300 ops.
fn case_of(
    shifts: impl Strategy<Value = i64> + Clone,
    ops: impl Strategy<Value = Op>,
) -> impl Strategy<Value = Case> {
    let names: Vec<&'static str> = EXAMPLES.iter().map(|(n, _)| *n).collect();
    (
        proptest::sample::subsequence(names, 2..=4),
        proptest::collection::vec(shifts, 4),
        any::<bool>(),
        proptest::collection::vec(ops, 0..300),
    )
        .prop_map(|(chosen, offsets, held_start, ops)| Case {
            streams: chosen.into_iter().zip(offsets).collect(),
            held_start,
            ops,
        })
}

/// What a watch line is about: (apiVersion, kind, namespace, name).
type ObjectKey = (String, String, String, String);

fn object_key(line: &str) -> Option<(ObjectKey, bool)> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["kind"] != "watch" {
        return None;
    }
    let o = &v["object"];
    let s = |x: &Value| x.as_str().unwrap_or_default().to_string();
    let key = (
        s(&o["apiVersion"]),
        s(&o["kind"]),
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"]),
    );
    Some((key, v["type"] == "DELETED"))
}

/// How many lines of a recording are its initial state: through its `synced` line, else its
/// first list (the leading watch lines of its first time).
fn initial_len(lines: &[String]) -> usize {
    if let Some(i) = lines.iter().position(|l| l.contains(r#""kind":"synced""#)) {
        return i + 1;
    }
    let at = |l: &String| {
        serde_json::from_str::<Value>(l).ok().and_then(|v| {
            (v["kind"] == "watch").then(|| v["at"].as_str().unwrap_or_default().to_string())
        })
    };
    let first = lines.first().and_then(at);
    lines
        .iter()
        .take_while(|l| first.is_some() && at(l) == first)
        .count()
}

/// The promotion ids lines name: promotion-id annotations and Flux event metadata, image
/// automation's pushes (`automated/<namespace>/<automation>/<12 hex>`), and with `reports` the
/// reports.
fn named_ids(lines: &[String], reports: bool) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for l in lines {
        let Ok(v) = serde_json::from_str::<Value>(l) else {
            continue;
        };
        if let Some(id) = v["promotion"]["id"].as_str() {
            if reports {
                ids.insert(id.to_string());
            }
        }
        for key in [r#""fluxtrace.io/promotion-id":""#, r#""promotion-id":""#] {
            for (i, _) in l.match_indices(key) {
                let rest = &l[i + key.len()..];
                if let Some(end) = rest.find('"') {
                    ids.insert(rest[..end].to_string());
                }
            }
        }
        let o = &v["object"];
        if o["kind"] == "ImageUpdateAutomation" {
            if let Some(c) = o["status"]["lastPushCommit"].as_str() {
                ids.insert(format!(
                    "automated/{}/{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default(),
                    &c[..12.min(c.len())]
                ));
            }
        }
    }
    ids
}

/// The promotion ids reports name.
fn report_ids(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["promotion"]["id"].as_str().map(str::to_string))
        .collect()
}

/// Everything the engine emitted in a run.
#[derive(Default)]
struct Emitted {
    stories: Vec<(String, String)>,
    spans: Vec<(String, String, String)>,
}

impl Emitted {
    fn take(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Span(s) => self.spans.push((
                    s.span_id.to_string(),
                    s.trace_id.to_string(),
                    s.name.to_string(),
                )),
                Output::Story(s) => self
                    .stories
                    .push((s.promotion_id.clone(), s.trace_id.to_string())),
                Output::Probe(_) | Output::ListPods(_) => {}
            }
        }
    }
}

/// A run in progress.
struct Run {
    streams: Vec<Vec<String>>,
    /// The next line of each stream.
    next: Vec<usize>,
    engine: Engine,
    out: Emitted,
    /// Promotion ids the delivered reports carried.
    reported: BTreeSet<String>,
    delivered: Vec<String>,
    /// The latest state of every object delivered and not deleted.
    latest: BTreeMap<ObjectKey, String>,
    /// The latest time delivered or ticked.
    now: Timestamp,
    /// Promotions only the initial state named (a run that starts held).
    history: BTreeSet<String>,
    /// Every recording moved by less than a century.
    sane_times: bool,
}

impl Run {
    fn new(case: &Case) -> Run {
        Run {
            streams: case
                .streams
                .iter()
                .map(|&(name, shift)| shifted(name, example(name), shift))
                .collect(),
            next: vec![0; case.streams.len()],
            engine: Engine::new(EngineConfig {
                cluster: "props".into(),
                ..EngineConfig::default()
            }),
            out: Emitted::default(),
            reported: BTreeSet::new(),
            delivered: Vec::new(),
            latest: BTreeMap::new(),
            now: Timestamp::UNIX_EPOCH,
            history: BTreeSet::new(),
            sane_times: case
                .streams
                .iter()
                .all(|(_, shift)| shift.abs() < 100 * 365 * 86_400),
        }
    }

    /// The agent's start: the initial state of every stream, held, then released.
    fn start_held(&mut self) {
        let mut before = BTreeSet::new();
        let mut after = BTreeSet::new();
        let out = self.engine.hold(true);
        self.out.take(out);
        for i in 0..self.streams.len() {
            let n = initial_len(&self.streams[i]);
            // A report, even one listed at start (a Promotion without a verdict), is judged.
            before.extend(named_ids(&self.streams[i][..n], false));
            after.extend(named_ids(&self.streams[i][n..], true));
            after.extend(report_ids(&self.streams[i][..n]));
            for _ in 0..n {
                self.send_next(i);
            }
        }
        let out = self.engine.hold(false);
        self.out.take(out);
        // Each recording's initial state is settled on its own; two that share objects make a
        // state neither had (one's automation with the other's source), where nothing says
        // what was delivered.
        let mut owners: BTreeMap<ObjectKey, usize> = BTreeMap::new();
        let shared = self.streams.iter().enumerate().any(|(i, lines)| {
            lines
                .iter()
                .filter_map(|l| object_key(l))
                .any(|(k, _)| *owners.entry(k).or_insert(i) != i)
        });
        // The decoder keeps `at` within 1970 to 9000, not the times inside objects: moved
        // beyond, a push long past reads as one to come, and nothing says it was delivered.
        if !shared && self.sane_times {
            self.history = before.difference(&after).cloned().collect();
        }
    }

    /// Streams with lines left.
    fn open(&self) -> Vec<usize> {
        (0..self.streams.len())
            .filter(|&i| self.next[i] < self.streams[i].len())
            .collect()
    }

    /// Decodes and applies `line`, stamped `at` when given.
    fn deliver(&mut self, line: &str, at: Option<Timestamp>) {
        let decoded: Option<DeliveryEvent> = decode_line(line).expect("bundled lines decode");
        let Some(mut ev) = decoded else {
            return;
        };
        if let Some(at) = at {
            ev.at = at;
        }
        self.now = self.now.max(ev.at);
        let outputs = self.engine.apply(ev);
        self.out.take(outputs);
    }

    /// The next line of stream `i`.
    fn send_next(&mut self, i: usize) {
        let line = self.streams[i][self.next[i]].clone();
        self.next[i] += 1;
        let v: Value = serde_json::from_str(&line).expect("json");
        if let Some(id) = v["promotion"]["id"].as_str() {
            self.reported.insert(id.to_string());
        }
        if let Some((key, deleted)) = object_key(&line) {
            if deleted {
                self.latest.remove(&key);
            } else {
                self.latest.insert(key, line.clone());
            }
        }
        self.deliver(&line, None);
        self.delivered.push(line);
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Next(n) => {
                let open = self.open();
                if !open.is_empty() {
                    self.send_next(open[n % open.len()]);
                }
            }
            Op::Repeat(k) => {
                if self.delivered.is_empty() {
                    return;
                }
                let line = self.delivered[k.index(self.delivered.len())].clone();
                let line = match object_key(&line) {
                    // An object comes again only in its latest state, and not once deleted.
                    Some((key, _)) => match self.latest.get(&key) {
                        Some(l) => l.clone(),
                        None => return,
                    },
                    None => line,
                };
                self.deliver(&line, Some(self.now));
            }
            Op::Relist => {
                let lines: Vec<String> = self.latest.values().cloned().collect();
                for line in lines {
                    self.deliver(&line, Some(self.now));
                }
            }
            Op::Tick(secs) => {
                self.now = self
                    .now
                    .checked_add(SignedDuration::from_secs(i64::from(secs)))
                    .unwrap_or(Timestamp::MAX);
                let outputs = self.engine.tick(self.now);
                self.out.take(outputs);
            }
            Op::TickAt(secs) => {
                let at = Timestamp::from_second(secs).expect("within Timestamp's range");
                self.now = self.now.max(at);
                let outputs = self.engine.tick(at);
                self.out.take(outputs);
            }
        }
    }
}

/// The run itself: returns what was emitted and the promotion ids the reports carried.
fn run(case: &Case) -> (Emitted, BTreeSet<String>, BTreeSet<String>) {
    let mut r = Run::new(case);
    if case.held_start {
        r.start_held();
    }
    for op in &case.ops {
        r.step(op);
    }
    // Whatever the ops left undelivered comes last, round robin.
    while !r.open().is_empty() {
        for i in r.open() {
            r.send_next(i);
        }
    }
    let outputs = r.engine.finish();
    r.out.take(outputs);
    (r.out, r.reported, r.history)
}

/// The properties; an error names the first one broken.
fn check(case: &Case) -> Result<(), TestCaseError> {
    let (out, reported, history) = run(case);
    let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in &out.stories {
        *verdicts.entry(id).or_default() += 1;
    }
    for (id, n) in &verdicts {
        prop_assert_eq!(*n, 1, "promotion {} got {} verdicts", id, n);
    }
    for id in &history {
        prop_assert!(
            !verdicts.contains_key(id.as_str()),
            "promotion {} was delivered before the start and got a verdict",
            id
        );
    }
    for id in &reported {
        prop_assert!(
            verdicts.contains_key(id.as_str()),
            "reported promotion {} got no verdict",
            id
        );
    }
    let mut seen = BTreeSet::new();
    for (span, _, name) in &out.spans {
        prop_assert!(
            seen.insert(span.as_str()),
            "span {} ({}) emitted twice",
            span,
            name
        );
    }
    let traces: BTreeSet<&str> = out.stories.iter().map(|(_, t)| t.as_str()).collect();
    for (span, trace, name) in &out.spans {
        prop_assert!(
            traces.contains(trace.as_str()),
            "span {} ({}) is in trace {}, which got no verdict",
            span,
            name,
            trace
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("FLUXTRACE_ENGINE_PROP_CASES")
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("FLUXTRACE_ENGINE_PROP_CASES={v:?} is not a number"))
        })
        .unwrap_or(16)
}

/// Runs [`check`] on [`cases`] cases of `strategy`; fails with the minimal failing case.
fn check_all(strategy: impl Strategy<Value = Case>) {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, |c| check(&c)) {
        panic!("{e}");
    }
}

#[test]
fn interleaved_recordings_give_one_verdict_per_promotion_and_unique_spans() {
    check_all(case_of(0i64..300, op()));
}

/// Recordings moved anywhere from year 1 to year 9999 (the decoder keeps `at` within 1970..9000,
/// but times inside objects and reports arrive as written), repeats stamped with those times,
/// and ticks at any time `Timestamp` can hold, the extremes included: `apply` and `tick` are
/// public, so no time may panic them.
#[test]
fn far_past_and_future_times_never_panic() {
    // 2026-11-26 moved back to 0001 and on to 9998.
    let shifts = prop_oneof![
        0i64..300,
        -63_800_000_000i64..251_500_000_000,
        Just(-63_800_000_000i64),
        Just(251_500_000_000i64),
    ];
    check_all(case_of(shifts, far_op()));
}

/// Every bundled recording alone, unshifted, in order, gives what `fluxtrace replay` gives (the
/// same verdicts and span ids) and passes the checks: the baseline the interleavings stray from.
#[test]
fn each_recording_alone_is_its_replay() {
    for (name, text) in EXAMPLES {
        // A recording that marks its initial state replays as an agent starts.
        let case = Case {
            streams: vec![(name, 0)],
            held_start: text.contains(r#""kind":"synced""#),
            ops: Vec::new(),
        };
        check(&case).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (out, _, _) = run(&case);
        let replay = fluxtrace::replay::run(
            text,
            EngineConfig {
                cluster: "props".into(),
                ..EngineConfig::default()
            },
        );
        let ids: Vec<&str> = out.stories.iter().map(|(id, _)| id.as_str()).collect();
        let want: Vec<&str> = replay
            .traces
            .iter()
            .map(|t| t.story.promotion_id.as_str())
            .collect();
        assert_eq!(ids, want, "{name}: verdicts");
        let spans: BTreeSet<String> = out.spans.iter().map(|(id, _, _)| id.clone()).collect();
        let want: BTreeSet<String> = replay.spans().map(|s| s.span_id.to_string()).collect();
        assert!(!want.is_empty(), "{name}: spans");
        assert_eq!(spans, want, "{name}: span ids");
    }
}

/// Found by `far_past_and_future_times_never_panic` in the engine before its rebuild: after a
/// tick at the last instant `Timestamp` can hold, the next `apply` or `tick` panicked (time
/// arithmetic overflowed). Minimal input then: recordings git-build-failure and untraced-rollout,
/// shift 0, ops `[TickAt(253402207200)]`; it needs no recording at all, only two ticks (or two
/// observations stamped) at `Timestamp::MAX`.
#[test]
fn a_tick_at_the_end_of_time_does_not_panic_the_next_call() {
    let mut engine = Engine::new(EngineConfig::default());
    engine.tick(Timestamp::MAX);
    engine.tick(Timestamp::MAX);

    let mut engine = Engine::new(EngineConfig::default());
    for line in example("oci-success.jsonl").lines().take(2) {
        let mut ev = decode_line(line).expect("decodes").expect("an observation");
        ev.at = Timestamp::MAX;
        engine.apply(ev);
    }

    let case = Case {
        streams: vec![
            ("git-build-failure.jsonl", 0),
            ("untraced-rollout.jsonl", 0),
        ],
        held_start: false,
        ops: vec![Op::TickAt(Timestamp::MAX.as_second())],
    };
    check(&case).expect("the checks");
}
