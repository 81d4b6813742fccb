//! The engine under arbitrary interleavings, through its public API only (`Engine::new`,
//! `apply`, `tick`, `finish` and the recording decoder): several bundled recordings, each moved
//! in time so that their promotions overlap, their observations interleaved in any order that
//! keeps each recording's own order, with repeats (a report sent again, an object delivered
//! again in its latest state) and re-lists (the latest state of every object seen, as after a
//! watch restart) mixed in, and the engine's clock ticked in between.
//!
//! Lines also come in the shapes the real world gives them ([`Shape`], [`Op::Patch`]), as
//! client-go's event recorder and Flux's retries make them:
//! - patched Events: a delivered Event again, the same Event object MODIFIED with `count` one
//!   up, a later `lastTimestamp` and the annotations of an earlier Event about the same object
//!   (a Flux Event's `…/revision` annotation naming an earlier revision), as the recorder
//!   patches a repeat and leaves the first occurrence's annotations;
//! - merged Events: an Event replaced by the one the recorder makes after ten similar ones
//!   (its own name, message prefixed `(combined from similar events): `, no annotations), and
//!   patches of it carrying the latest similar message;
//! - dropped Events: an Event the recorder's spam filter drops, not delivered (other lines
//!   are never dropped);
//! - retries and waits: before a Kustomization or HelmRelease line that turns it ready, its
//!   previous state with the attempt's `lastAttempted…` fields and a retried failure
//!   (Kustomization `Ready=False HealthCheckFailed`, `Reconciling=True ProgressingWithRetry`;
//!   HelmRelease `Ready=False UpgradeFailed`, not `Stalled`) or a wait (`DependencyNotReady`).
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
use fluxtrace::model::{CondStatus, DeliveryEvent, EventBody};
use fluxtrace::replay::EXAMPLES;
use fluxtrace::sources::recording::decode_line;
use fluxtrace_testkit::fleet::shifted;
use fluxtrace_testkit::recordings::example;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

/// One step of a run.
#[derive(Clone, Debug)]
enum Op {
    /// The next line of stream `n % streams` (the next stream that has lines left).
    Next(usize),
    /// The next line of stream `n % streams`, as the event recorder or the controller could
    /// have shaped it instead.
    Reshaped(usize, Shape),
    /// A line delivered earlier, again: a report or Flux event as it was (a retry), an object
    /// in its latest state. Stamped with the current time.
    Repeat(prop::sample::Index),
    /// A delivered Event patched as client-go's recorder patches a repeat of it: see
    /// [`patched`].
    Patch(prop::sample::Index),
    /// Every object seen and not deleted, in its latest state, stamped with the current time.
    Relist,
    /// `Engine::tick` this many seconds after the latest time delivered.
    Tick(u16),
    /// `Engine::tick` at this second since the Unix epoch (any time `Timestamp` can hold).
    TickAt(i64),
}

/// What the real world makes of a recorded line (client-go's event recorder, Flux's retries);
/// a line the shape does not fit comes as recorded.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// An Event the recorder's spam filter drops (a burst of 25 per object, then one every five
    /// minutes): not delivered.
    Dropped,
    /// An Event as the recorder merges it after ten similar ones (same object, reason and type)
    /// within ten minutes: see [`merged`].
    Merged,
    /// A Kustomization or HelmRelease turning ready, after a retried failure: see [`retried`].
    Retried,
    /// A Kustomization or HelmRelease turning ready, after waiting for a dependency: see
    /// [`retried`].
    Waited,
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
        2 => (any::<usize>(), shape()).prop_map(|(n, s)| Op::Reshaped(n, s)),
        3 => any::<prop::sample::Index>().prop_map(Op::Repeat),
        2 => any::<prop::sample::Index>().prop_map(Op::Patch),
        1 => Just(Op::Relist),
        2 => (0u16..90).prop_map(Op::Tick),
        1 => (0u16..3600).prop_map(Op::Tick),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Dropped),
        Just(Shape::Merged),
        Just(Shape::Retried),
        Just(Shape::Waited),
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

/// How client-go's recorder begins the message of an Event it merged.
const COMBINED: &str = "(combined from similar events): ";

/// The object a watch line of a core/v1 Event is about (its `involvedObject`).
fn involved(v: &Value) -> Option<ObjectKey> {
    if v["kind"] != "watch" || v["object"]["kind"] != "Event" {
        return None;
    }
    let o = &v["object"]["involvedObject"];
    let s = |x: &Value| x.as_str().unwrap_or_default().to_string();
    Some((
        s(&o["apiVersion"]),
        s(&o["kind"]),
        s(&o["namespace"]),
        s(&o["name"]),
    ))
}

/// client-go's patch of a repeated Event (same object, reason, message, type and source): the
/// same Event (name, uid) MODIFIED, `count` one up, `lastTimestamp` later than its time and than
/// `now` (to the second, as the API server keeps it), and the annotations of the first
/// occurrence, which the patch leaves alone: `stale`, those of an earlier Event of the object
/// (for a Flux controller's Event, an earlier revision). A merged Event (see [`merged`]) has
/// none; its patch carries `message`, the latest similar one, behind the prefix.
fn patched(
    line: &str,
    now: Timestamp,
    stale: Option<&Value>,
    message: Option<&str>,
) -> Option<String> {
    let mut v: Value = serde_json::from_str(line).ok()?;
    involved(&v)?;
    let o = &mut v["object"];
    let last = ["lastTimestamp", "eventTime", "firstTimestamp"]
        .iter()
        .find_map(|f| o[f].as_str())
        .and_then(|t| t.parse::<Timestamp>().ok())
        .and_then(|t| t.checked_add(SignedDuration::from_secs(1)).ok());
    let t = last.unwrap_or(now).max(now);
    let t = Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string();
    o["count"] = o["count"].as_i64().unwrap_or(1).saturating_add(1).into();
    o["lastTimestamp"] = t.clone().into();
    let merged = o["message"]
        .as_str()
        .is_some_and(|m| m.starts_with(COMBINED));
    match (merged, message, stale) {
        (true, Some(m), _) => o["message"] = format!("{COMBINED}{m}").into(),
        (false, _, Some(a)) => o["metadata"]["annotations"] = a.clone(),
        _ => {}
    }
    v["at"] = t.into();
    v["type"] = "MODIFIED".into();
    Some(v.to_string())
}

/// The Event client-go makes instead of the eleventh similar one (same object, reason and
/// type, other messages) within ten minutes: an Event of its own (name and uid), `count` 1 and
/// `firstTimestamp` its `lastTimestamp`, the message prefixed [`COMBINED`], no annotations (so
/// no revision).
fn merged(line: &str) -> Option<String> {
    let mut v: Value = serde_json::from_str(line).ok()?;
    involved(&v)?;
    let o = &mut v["object"];
    let message = o["message"].as_str().unwrap_or_default();
    if !message.starts_with(COMBINED) {
        o["message"] = format!("{COMBINED}{message}").into();
    }
    o["count"] = 1.into();
    if o["lastTimestamp"].is_string() {
        o["firstTimestamp"] = o["lastTimestamp"].clone();
    }
    let meta = o["metadata"].as_object_mut()?;
    meta.remove("annotations");
    for field in ["name", "uid"] {
        if let Some(x) = meta.get(field).and_then(Value::as_str) {
            let own = format!("{x}-combined");
            meta.insert(field.into(), own.into());
        }
    }
    Some(v.to_string())
}

/// The state Flux writes before `line`, a Kustomization or HelmRelease turning ready, when the
/// attempt failed or waited first (real shapes: `real-kustomize-retry`,
/// `real-helm-upgrade-stalled`, `real-kustomize-depends-on`): the object's state before,
/// `previous`, with the attempt's `lastAttempted…` fields and the conditions of a retried
/// failure (a Kustomization's health check failing with `Reconciling=True`
/// `ProgressingWithRetry`, a HelmRelease's upgrade failing, not `Stalled`) or of a wait
/// (`DependencyNotReady`). None for any other line.
fn retried(line: &str, previous: &str, shape: Shape) -> Option<String> {
    let mut v: Value = serde_json::from_str(line).ok()?;
    let o = &v["object"];
    let kind = o["kind"]
        .as_str()
        .filter(|k| matches!(*k, "Kustomization" | "HelmRelease"))?;
    let ready = o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")?;
    let (at, generation) = (
        ready["lastTransitionTime"].clone(),
        o["metadata"]["generation"].clone(),
    );
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": at, "observedGeneration": generation})
    };
    let conditions = if matches!(shape, Shape::Waited) {
        let wait = "dependency is not ready";
        vec![condition("Ready", "False", "DependencyNotReady", wait)]
    } else {
        // Reconciling's reason and message; the other condition that fails, its reason, message.
        let (retry, running, other, reason, failure) = if kind == "Kustomization" {
            let failure =
                "health check failed after 30s: timeout waiting for: [Deployment status: 'InProgress']";
            let running = "Running health checks with a timeout of 30s";
            (
                "ProgressingWithRetry",
                running,
                "Healthy",
                "HealthCheckFailed",
                failure,
            )
        } else {
            let failure = "Helm upgrade failed: context deadline exceeded";
            let running = "Running 'upgrade' action with timeout of 1m0s";
            ("Progressing", running, "Released", "UpgradeFailed", failure)
        };
        vec![
            condition("Reconciling", "True", retry, running),
            condition("Ready", "False", reason, failure),
            condition(other, "False", reason, failure),
        ]
    };
    let previous: Value = serde_json::from_str(previous).ok()?;
    let mut status = previous["object"]["status"].as_object()?.clone();
    for (k, x) in o["status"].as_object()? {
        if k.starts_with("lastAttempted") {
            status.insert(k.clone(), x.clone());
        }
    }
    status.insert("conditions".into(), conditions.into());
    v["object"]["status"] = status.into();
    v["type"] = "MODIFIED".into();
    Some(v.to_string())
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
    /// Every Event delivered (its own key), to patch.
    events: Vec<ObjectKey>,
    /// The annotations of the first annotated Event delivered about each object.
    first_annotations: BTreeMap<ObjectKey, Value>,
    /// The latest message of an Event delivered about each object, by reason.
    messages: BTreeMap<(ObjectKey, String), String>,
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
            events: Vec::new(),
            first_annotations: BTreeMap::new(),
            messages: BTreeMap::new(),
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

    /// The next line of stream `i`, delivered.
    fn send_next(&mut self, i: usize) {
        let line = self.take_next(i);
        self.send(line);
    }

    /// The next line of stream `i`, not delivered.
    fn take_next(&mut self, i: usize) -> String {
        self.next[i] += 1;
        self.streams[i][self.next[i] - 1].clone()
    }

    /// The next line of the `n`th stream with lines left, if any.
    fn take_open(&mut self, n: usize) -> Option<String> {
        let open = self.open();
        let i = *open.get(n % open.len().max(1))?;
        Some(self.take_next(i))
    }

    /// Delivers a line of a stream, and keeps what repeats, re-lists and patches need.
    fn send(&mut self, line: String) {
        let v: Value = serde_json::from_str(&line).expect("json");
        if let Some(id) = v["promotion"]["id"].as_str() {
            self.reported.insert(id.to_string());
        }
        if let Some((key, deleted)) = object_key(&line) {
            if deleted {
                self.latest.remove(&key);
            } else {
                self.latest.insert(key.clone(), line.clone());
            }
            if let Some(about) = involved(&v) {
                self.events.push(key);
                let o = &v["object"];
                if let Some(m) = o["message"].as_str().filter(|m| !m.starts_with(COMBINED)) {
                    let reason = o["reason"].as_str().unwrap_or_default().to_string();
                    self.messages.insert((about.clone(), reason), m.to_string());
                }
                let annotations = &o["metadata"]["annotations"];
                if annotations.is_object() {
                    self.first_annotations
                        .entry(about)
                        .or_insert_with(|| annotations.clone());
                }
            }
        }
        self.deliver(&line, None);
        self.delivered.push(line);
    }

    /// The next line of a stream, shaped.
    fn send_reshaped(&mut self, n: usize, shape: Shape) {
        let Some(line) = self.take_open(n) else {
            return;
        };
        match shape {
            Shape::Dropped => {
                let v: Value = serde_json::from_str(&line).expect("json");
                if involved(&v).is_none() {
                    self.send(line);
                }
            }
            Shape::Merged => self.send(merged(&line).unwrap_or(line)),
            Shape::Retried | Shape::Waited => {
                let before = object_key(&line)
                    .and_then(|(key, _)| self.latest.get(&key))
                    .and_then(|previous| retried(&line, previous, shape));
                if let Some(before) = before {
                    self.send(before);
                }
                self.send(line);
            }
        }
    }

    /// A patch of the `k`th Event delivered, in its latest state (none once deleted).
    fn patch(&mut self, k: prop::sample::Index) {
        if self.events.is_empty() {
            return;
        }
        let key = self.events[k.index(self.events.len())].clone();
        let Some(line) = self.latest.get(&key) else {
            return;
        };
        let v: Value = serde_json::from_str(line).expect("json");
        let Some(about) = involved(&v) else {
            return;
        };
        let reason = v["object"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let stale = self.first_annotations.get(&about);
        let message = self
            .messages
            .get(&(about.clone(), reason))
            .map(String::as_str);
        let Some(line) = patched(line, self.now, stale, message) else {
            return;
        };
        self.latest.insert(key, line.clone());
        self.deliver(&line, None);
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Next(n) => {
                if let Some(line) = self.take_open(n) {
                    self.send(line);
                }
            }
            Op::Reshaped(n, shape) => self.send_reshaped(n, shape),
            Op::Patch(k) => self.patch(k),
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

/// The shapes apply to the bundled recordings and decode as the engine reads them: a merged
/// Event has no revision, a patch counts one more with stale annotations, a retried or waited
/// attempt is not ready; each happens somewhere.
#[test]
fn the_shapes_apply_to_the_bundled_recordings() {
    let decode = |line: &str| -> Option<EventBody> {
        let decoded = decode_line(line).expect("a shaped line decodes");
        decoded.map(|ev| ev.body)
    };
    let (mut merges, mut patches, mut retries) = (0, 0, 0);
    for (name, text) in EXAMPLES {
        let mut latest: BTreeMap<ObjectKey, &str> = BTreeMap::new();
        let mut first: BTreeMap<ObjectKey, Value> = BTreeMap::new();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("json");
            let event = involved(&v).zip(decode(line));
            if let Some((about, EventBody::KubeEvent(e))) = event {
                let Some(EventBody::KubeEvent(m)) = decode(&merged(line).expect("merges")) else {
                    panic!("{name}: a merged Event is an Event");
                };
                assert!(
                    m.message.starts_with(COMBINED) && m.revision.is_none(),
                    "{name}"
                );
                let stale = first
                    .entry(about)
                    .or_insert(v["object"]["metadata"]["annotations"].clone());
                let at: Timestamp = v["at"].as_str().expect("at").parse().expect("a time");
                let p = patched(line, at, Some(stale), Some("later")).expect("patches");
                let Some(EventBody::KubeEvent(p)) = decode(&p) else {
                    panic!("{name}: a patched Event is an Event");
                };
                // A recorded merged Event's patch carries the latest similar message.
                let message = match e.message.strip_prefix(COMBINED) {
                    Some(_) => format!("{COMBINED}later"),
                    None => e.message,
                };
                assert_eq!(
                    (p.uid, p.count, p.message),
                    (e.uid, e.count + 1, message),
                    "{name}"
                );
                assert!(p.time > e.time, "{name}: a patch is later");
                patches += usize::from(p.revision != e.revision);
                merges += 1;
            }
            if let Some((key, _)) = object_key(line) {
                let before = latest
                    .get(&key)
                    .and_then(|prev| retried(line, prev, Shape::Retried));
                if let Some(before) = before {
                    let Some(EventBody::Reconciler(r)) = decode(&before) else {
                        panic!("{name}: a retry is a Kustomization or HelmRelease");
                    };
                    assert!(
                        r.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == CondStatus::False),
                        "{name}"
                    );
                    assert!(
                        retried(line, latest[&key], Shape::Waited).is_some(),
                        "{name}"
                    );
                    retries += 1;
                }
                latest.insert(key, line);
            }
        }
    }
    assert!(
        merges > 0 && patches > 0 && retries > 0,
        "{merges} {patches} {retries}"
    );
}
