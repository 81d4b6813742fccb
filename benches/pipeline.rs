//! Throughput of the recording pipeline on a synthetic fleet recording.
//!
//! `cargo bench --bench pipeline`. Builds a recording of 10,000 promotions (about half a
//! million observation lines) from the bundled examples, checks that it replays to the
//! expected stories, then times, on every line:
//!
//! - (a) `serde_json::from_str::<serde_json::Value>`: the cost of merely parsing the JSON, the
//!   floor any consumer of the format pays;
//! - (b) `sources::recording::decode_line`;
//! - (c) `decode_line` + `correlate::Engine::apply`, then `Engine::finish`.
//!
//! Environment: `FLUXTRACE_BENCH_PROMOTIONS` (default 10000), `FLUXTRACE_BENCH_ITERATIONS`
//! (default 5), `FLUXTRACE_BENCH_BREAKDOWN=1` (after the table, the engine alone on observations
//! decoded beforehand, and its time per kind of observation).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use fluxtrace::agent::body_kind;
use fluxtrace::correlate::{Engine, EngineConfig, Output};
use fluxtrace::sources::recording::decode_line;
use fluxtrace::story::Outcome;

use fluxtrace_testkit::bench::{env_usize, fail, proc_status_kib};
use fluxtrace_testkit::fleet::{self, Instance, SCENARIOS};

/// Instances replayed through `replay::run` to check the recording before timing it.
const VALIDATE_INSTANCES: usize = 400;

const OUTCOMES: [Outcome; 5] = Outcome::FINAL;

fn outcome_index(o: Outcome) -> usize {
    OUTCOMES.iter().position(|&x| x == o).unwrap_or(0)
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tally {
    events: usize,
    spans: usize,
    stories: usize,
    outcomes: [usize; 5],
    /// Outputs other than spans and stories (requests to the outside, such as probes).
    other: usize,
    open: usize,
}

impl Tally {
    fn add(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            if let Output::Story(s) = &o {
                self.stories += 1;
                self.outcomes[outcome_index(s.outcome)] += 1;
            } else if matches!(o, Output::Span(_)) {
                self.spans += 1;
            } else {
                self.other += 1;
            }
        }
    }
}

/// (a): parse every line into a `serde_json::Value`.
fn baseline(lines: &[&str]) -> usize {
    let mut n = 0;
    for line in lines {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => {
                black_box(&v);
                n += 1;
            }
            Err(e) => fail(format!("line is not JSON: {e}")),
        }
    }
    n
}

/// (b): decode every line into a `DeliveryEvent`.
fn decode(lines: &[&str]) -> usize {
    let mut n = 0;
    for line in lines {
        match decode_line(line) {
            Ok(Some(ev)) => {
                black_box(&ev);
                n += 1;
            }
            Ok(None) => {}
            Err(e) => fail(format!("line does not decode: {e}")),
        }
    }
    n
}

/// (c): decode every line and apply it to an engine, then finish.
fn pipeline(lines: &[&str]) -> Tally {
    let mut engine = Engine::new(EngineConfig::default());
    let mut tally = Tally::default();
    for line in lines {
        match decode_line(line) {
            Ok(Some(ev)) => {
                tally.events += 1;
                tally.add(engine.apply(ev));
            }
            Ok(None) => {}
            Err(e) => fail(format!("line does not decode: {e}")),
        }
    }
    tally.add(engine.finish());
    tally.open = engine.open_promotions();
    tally
}

/// The engine alone, on observations decoded beforehand: its time per kind of observation. A
/// verdict counts towards the observation that brought it about.
fn breakdown(lines: &[&str]) -> String {
    let events: Vec<_> = lines
        .iter()
        .filter_map(|line| decode_line(line).unwrap_or_else(|e| fail(e)))
        .collect();
    let mut engine = Engine::new(EngineConfig::default());
    let mut kinds: BTreeMap<&'static str, (usize, Duration)> = BTreeMap::new();
    let start = Instant::now();
    for ev in events {
        let kind = body_kind(&ev.body);
        let (d, out) = timed(|| engine.apply(ev));
        black_box(out);
        let k = kinds.entry(kind).or_default();
        k.0 += 1;
        k.1 += d;
    }
    let (finish, out) = timed(|| engine.finish());
    black_box(out);
    let total = start.elapsed();
    let mut table = format!(
        "engine alone (observations decoded beforehand): {:.2}s, finish {:.3}s\n",
        total.as_secs_f64(),
        finish.as_secs_f64()
    );
    table.push_str(&format!(
        "{:<14} {:>9} {:>9} {:>8} {:>7}\n",
        "kind", "count", "time", "us/obs", "share"
    ));
    for (kind, (n, d)) in &kinds {
        table.push_str(&format!(
            "{kind:<14} {:>9} {:>8.3}s {:>8.2} {:>6.1}%\n",
            group(*n),
            d.as_secs_f64(),
            d.as_secs_f64() * 1e6 / (*n).max(1) as f64,
            100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-9),
        ));
    }
    table
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

fn mib_kib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| {
        format!("{} MiB", group(k.div_ceil(1024) as usize))
    })
}

/// 1234567 → "1,234,567".
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn hms(secs: i64) -> String {
    format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
}

struct Row {
    label: &'static str,
    times: Vec<Duration>,
}

impl Row {
    fn sorted(&self) -> Vec<Duration> {
        let mut t = self.times.clone();
        t.sort();
        t
    }
    fn median(&self) -> Duration {
        let t = self.sorted();
        t[t.len() / 2]
    }
    fn fastest(&self) -> Duration {
        self.sorted()[0]
    }
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn main() {
    let promotions = env_usize("FLUXTRACE_BENCH_PROMOTIONS", 10_000);
    let iterations = env_usize("FLUXTRACE_BENCH_ITERATIONS", 5);

    // The recording, checked before it is timed.
    let shapes = fleet::shapes();
    let fleet: Vec<Instance> = fleet::fleet(promotions);
    fleet::validate(&fleet[..fleet.len().min(VALIDATE_INSTANCES)], &shapes);
    let recording = fleet::render(&fleet);
    let lines = recording.lines();
    let (avg_flight, max_flight) = fleet::in_flight(&fleet);
    let untraced = fleet
        .iter()
        .filter(|i| SCENARIOS[i.scenario].expect.traceability == "missing")
        .count();
    let mut want = Tally {
        stories: fleet.len(),
        ..Tally::default()
    };
    for i in &fleet {
        want.spans += shapes[i.scenario].spans;
        want.outcomes[outcome_index(SCENARIOS[i.scenario].expect.outcome)] += 1;
    }

    // The measurements, interleaved so that a noisy neighbour hits all three alike.
    let mut rows = [
        Row {
            label: "(a) serde_json::Value (baseline)",
            times: Vec::new(),
        },
        Row {
            label: "(b) decode_line",
            times: Vec::new(),
        },
        Row {
            label: "(c) decode_line + Engine::apply/finish",
            times: Vec::new(),
        },
    ];
    let (mut rss_before, mut rss_peak, mut hwm_reset) = (None, None, false);
    let mut result = Tally::default();
    for round in 0..iterations {
        let (d, n) = timed(|| baseline(&lines));
        if n != lines.len() {
            fail("baseline parsed fewer lines than the recording has");
        }
        rows[0].times.push(d);
        let (d, n) = timed(|| decode(&lines));
        rows[1].times.push(d);
        // Peak RSS of the first pipeline run (later runs reuse what the allocator kept):
        // reset the high-water mark to the current RSS first.
        if round == 0 {
            hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
            rss_before = proc_status_kib("VmRSS");
        }
        let (d, tally) = timed(|| pipeline(&lines));
        rows[2].times.push(d);
        if round == 0 {
            rss_peak = proc_status_kib("VmHWM");
        }
        if tally.events != n {
            fail(format!(
                "pipeline applied {} events, decode saw {n}",
                tally.events
            ));
        }
        if tally.open != 0 {
            fail(format!(
                "{} promotion(s) still open after finish",
                tally.open
            ));
        }
        let got = Tally {
            events: 0,
            other: 0,
            open: 0,
            ..tally.clone()
        };
        if got != want {
            fail(format!("pipeline produced {got:?}, want {want:?}"));
        }
        result = tally;
    }

    // The table.
    let obs = lines.len();
    let base = per_sec(obs, rows[0].median());
    let base_fast = per_sec(obs, rows[0].fastest());
    let mut out = String::new();
    let w = 40;
    out.push_str(&format!(
        "fluxtrace pipeline benchmark: {iterations} iteration(s), obs/s = observation lines per second\n\n"
    ));
    out.push_str(&format!(
        "recording  {} promotions + {} untraced rollouts, {} lines, {} MiB\n",
        group(fleet.len() - untraced),
        group(untraced),
        group(obs),
        group(recording.text.len().div_ceil(1 << 20)),
    ));
    out.push_str(&format!(
        "           {} of recording time, {avg_flight:.1} promotions in flight on average (max {max_flight})\n",
        hms(recording.span_secs)
    ));
    out.push_str(&format!(
        "validated  first {} instances via replay::run: one story each, outcomes as expected\n\n",
        group(fleet.len().min(VALIDATE_INSTANCES))
    ));
    out.push_str(&format!(
        "{:<w$} {:>9} {:>9} {:>14} {:>14} {:>9}\n",
        "", "median", "fastest", "obs/s median", "obs/s fastest", "vs (a)"
    ));
    for row in &rows {
        let (m, f) = (row.median(), row.fastest());
        out.push_str(&format!(
            "{:<w$} {:>8.2}s {:>8.2}s {:>14} {:>14} {:>8.2}x\n",
            row.label,
            m.as_secs_f64(),
            f.as_secs_f64(),
            group(per_sec(obs, m) as usize),
            group(per_sec(obs, f) as usize),
            per_sec(obs, m) / base,
        ));
    }
    out.push_str(&format!(
        "{:<w$} {:>9} {:>9} {:>14} {:>14} {:>8.2}x\n\n",
        "    (c)/(a) on the fastest runs",
        "",
        "",
        "",
        "",
        per_sec(obs, rows[2].fastest()) / base_fast,
    ));
    let outcomes: Vec<String> = OUTCOMES
        .iter()
        .zip(result.outcomes)
        .filter(|(_, n)| *n > 0)
        .map(|(o, n)| format!("{} {}", group(n), o.as_str()))
        .collect();
    let other = match result.other {
        0 => String::new(),
        n => format!(", {} other outputs", group(n)),
    };
    out.push_str(&format!(
        "pipeline   {} events applied -> {} spans, {} stories ({}){other}; open after finish: {}\n",
        group(result.events),
        group(result.spans),
        group(result.stories),
        outcomes.join(", "),
        result.open,
    ));
    let engine_kib = rss_peak.zip(rss_before).map(|(a, b)| a.saturating_sub(b));
    out.push_str(&format!(
        "memory     peak RSS {} {} ({} before it, the recording held in memory: engine +{})\n",
        mib_kib(rss_peak),
        if hwm_reset {
            "during the pipeline"
        } else {
            "of the process (VmHWM could not be reset)"
        },
        mib_kib(rss_before),
        mib_kib(engine_kib),
    ));
    if std::env::var_os("FLUXTRACE_BENCH_BREAKDOWN").is_some_and(|v| v == "1") {
        out.push('\n');
        out.push_str(&breakdown(&lines));
    }
    print!("{out}");
}
