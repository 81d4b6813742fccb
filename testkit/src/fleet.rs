//! A synthetic fleet recording, built from the bundled example recordings.
//!
//! Each example recording is one scenario. A fleet recording holds many instances of the
//! scenarios; instance `i` renames everything that identifies a promotion (promotion ids,
//! namespaces, object and app names, uids, commits, digests, trace ids, Event names) and
//! shifts every timestamp, so that instances never share an object and overlap in time. All
//! instances are then merged into one time-ordered stream, exactly as a recorder would write
//! it for one busy cluster. Generation is deterministic: no clock, no random source.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use fluxtrace::correlate::EngineConfig;
use fluxtrace::replay;
use fluxtrace::story::Outcome;
use fluxtrace::trace::Stage;

use crate::bench::fail;

/// What a scenario's promotion must end as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub outcome: Outcome,
    pub divergence: Option<Stage>,
    /// `reported`, `annotated` or `missing`.
    pub traceability: &'static str,
}

/// One example recording and how to make instances of it.
pub struct Scenario {
    pub name: &'static str,
    text: &'static str,
    /// Renamed per instance (`word` becomes `word-NNNNN`) wherever it stands as a whole word:
    /// promotion ids, namespaces, object names, app names. Longer names that start with one of
    /// these (`shop-manifests`, `api-server`) are renamed with it.
    words: &'static [&'static str],
    /// The promotion id the report carries, if any.
    promotion_id: Option<&'static str>,
    pub expect: Expect,
    /// Share of the fleet, in twentieths.
    weight: u32,
}

const fn expect(outcome: Outcome, divergence: Option<Stage>, traceability: &'static str) -> Expect {
    Expect {
        outcome,
        divergence,
        traceability,
    }
}

/// The scenarios and their share of a fleet: mostly successes, some failures, some rollouts
/// nobody reported.
pub const SCENARIOS: [Scenario; 7] = [
    Scenario {
        name: "oci-success",
        text: include_str!("../../examples/recordings/oci-success.jsonl"),
        words: &["rel-2041", "shop", "checkout"],
        promotion_id: Some("rel-2041"),
        expect: expect(Outcome::Succeeded, None, "reported"),
        weight: 5,
    },
    Scenario {
        name: "git-success",
        text: include_str!("../../examples/recordings/git-success.jsonl"),
        words: &["P-2026-11-26-41", "P-2026-11-26-42", "web", "frontend"],
        promotion_id: Some("P-2026-11-26-42"),
        expect: expect(Outcome::Succeeded, None, "reported"),
        weight: 6,
    },
    Scenario {
        name: "receiver-trigger",
        text: include_str!("../../examples/recordings/receiver-trigger.jsonl"),
        words: &["P-2026-11-26-44", "api"],
        promotion_id: Some("P-2026-11-26-44"),
        expect: expect(Outcome::Succeeded, None, "reported"),
        weight: 3,
    },
    Scenario {
        name: "oci-rollout-imagepull",
        text: include_str!("../../examples/recordings/oci-rollout-imagepull.jsonl"),
        words: &["rel-2042", "payments", "ledger"],
        promotion_id: Some("rel-2042"),
        expect: expect(Outcome::Failed, Some(Stage::Rollout), "reported"),
        weight: 1,
    },
    Scenario {
        name: "git-build-failure",
        text: include_str!("../../examples/recordings/git-build-failure.jsonl"),
        words: &["P-2026-11-26-43", "infra", "ingress-nginx"],
        promotion_id: Some("P-2026-11-26-43"),
        expect: expect(Outcome::Failed, Some(Stage::Reconcile), "reported"),
        weight: 2,
    },
    Scenario {
        name: "helmrelease-upgrade-failure",
        text: include_str!("../../examples/recordings/helmrelease-upgrade-failure.jsonl"),
        words: &["rel-2050", "podinfo"],
        promotion_id: Some("rel-2050"),
        expect: expect(Outcome::Failed, Some(Stage::Apply), "reported"),
        weight: 1,
    },
    Scenario {
        name: "untraced-rollout",
        text: include_str!("../../examples/recordings/untraced-rollout.jsonl"),
        words: &["ops", "cache", "platform"],
        promotion_id: None,
        expect: expect(Outcome::Succeeded, None, "missing"),
        weight: 2,
    },
];

// ---- templates ------------------------------------------------------------------------------

enum Seg {
    /// Copied as is: a byte range of the line.
    Lit(usize, usize),
    /// Hex digits (a run, or a UUID with its dashes) mapped digit by digit with the instance key.
    Hex(usize, usize),
    /// `YYYY-MM-DD?hh:mm:ss` (`?` is `T` or a space), shifted by the instance offset.
    Time { secs: i64, sep: u8 },
    /// `words[i]`, suffixed with the instance tag.
    Word(usize),
}

struct LineTemplate {
    text: &'static str,
    /// Seconds since the Unix epoch of the line's `at`.
    at: i64,
    segs: Vec<Seg>,
}

struct Template {
    lines: Vec<LineTemplate>,
    words: &'static [&'static str],
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

fn boundary_before(b: &[u8], p: usize) -> bool {
    if p == 0 || !b[p - 1].is_ascii_alphanumeric() {
        return true;
    }
    // A JSON escape (`\n` in a multi-line message) ends the word before it.
    p >= 2 && b[p - 2] == b'\\' && matches!(b[p - 1], b'n' | b't' | b'r')
}

fn boundary_after(b: &[u8], q: usize) -> bool {
    q >= b.len() || !b[q].is_ascii_alphanumeric()
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

/// `YYYY-MM-DDThh:mm:ss` or `YYYY-MM-DD hh:mm:ss` at `p`: (seconds since epoch, separator).
fn time_at(b: &[u8], p: usize) -> Option<(i64, u8)> {
    let t = b.get(p..p + 19)?;
    if t[4] != b'-'
        || t[7] != b'-'
        || !matches!(t[10], b'T' | b' ')
        || t[13] != b':'
        || t[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(&t[0..4])?, digits(&t[5..7])?, digits(&t[8..10])?);
    let (h, mi, s) = (
        digits(&t[11..13])?,
        digits(&t[14..16])?,
        digits(&t[17..19])?,
    );
    Some((
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s,
        t[10],
    ))
}

/// Length of a UUID or of a hex run of an identifier's length (12-hex prefix, 16-hex Event
/// suffix or span id, 32-hex trace id, 40-hex commit, 64-hex digest) at `p`.
fn hex_at(b: &[u8], p: usize) -> Option<usize> {
    if let Some(u) = b.get(p..p + 36) {
        let uuid = u.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => is_hex(c),
        });
        if uuid && boundary_after(b, p + 36) {
            return Some(36);
        }
    }
    let len = b[p..].iter().take_while(|&&c| is_hex(c)).count();
    (matches!(len, 12 | 16 | 32 | 40 | 64) && boundary_after(b, p + len)).then_some(len)
}

fn word_at(b: &[u8], p: usize, words: &[&str], by_len: &[usize]) -> Option<usize> {
    by_len.iter().copied().find(|&w| {
        let w_b = words[w].as_bytes();
        b[p..].starts_with(w_b) && boundary_after(b, p + w_b.len())
    })
}

fn template(s: &Scenario) -> Template {
    let mut by_len: Vec<usize> = (0..s.words.len()).collect();
    by_len.sort_by_key(|&w| Reverse(s.words[w].len()));
    let mut lines = Vec::new();
    for (n, text) in s.text.lines().enumerate() {
        let b = text.as_bytes();
        let mut segs = Vec::new();
        let (mut lit, mut p) = (0, 0);
        while p < b.len() {
            if boundary_before(b, p) {
                let found = if let Some((secs, sep)) = time_at(b, p) {
                    Some((Seg::Time { secs, sep }, 19))
                } else if let Some(len) = hex_at(b, p) {
                    Some((Seg::Hex(p, len), len))
                } else {
                    word_at(b, p, s.words, &by_len).map(|w| (Seg::Word(w), s.words[w].len()))
                };
                if let Some((seg, len)) = found {
                    if lit < p {
                        segs.push(Seg::Lit(lit, p));
                    }
                    segs.push(seg);
                    p += len;
                    lit = p;
                    continue;
                }
            }
            p += 1;
        }
        if lit < b.len() {
            segs.push(Seg::Lit(lit, b.len()));
        }
        let at = match segs.as_slice() {
            [Seg::Lit(0, 7), Seg::Time { secs, .. }, ..] if text.starts_with(r#"{"at":""#) => *secs,
            _ => fail(format!(
                "{}.jsonl line {} does not start with `at`",
                s.name,
                n + 1
            )),
        };
        lines.push(LineTemplate { text, at, segs });
    }
    if lines.windows(2).any(|w| w[1].at < w[0].at) {
        fail(format!("{}.jsonl is not ordered by `at`", s.name));
    }
    Template {
        lines,
        words: s.words,
    }
}

// ---- instances ------------------------------------------------------------------------------

/// SplitMix64: a tiny deterministic mixer.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One scenario, renamed and moved in time.
#[derive(Clone, Debug)]
pub struct Instance {
    pub index: usize,
    pub scenario: usize,
    /// Seconds added to every timestamp.
    pub shift: i64,
}

impl Instance {
    /// The suffix that makes this instance's names unique.
    pub fn tag(&self) -> String {
        format!("{:05}", self.index)
    }

    /// Per-digit offsets for hex identifiers. The first four encode the index, so no two
    /// instances map an identifier to the same value; mapping digit by digit keeps prefixes
    /// (a 12-hex digest prefix, `6.7.0+24bae957b738`) consistent with the whole value.
    fn key(&self) -> [u8; 64] {
        let mut key = [0u8; 64];
        for (k, slot) in key.iter_mut().take(4).enumerate() {
            *slot = ((self.index >> (12 - 4 * k)) & 0xf) as u8;
        }
        for (k, slot) in key.iter_mut().enumerate().skip(4) {
            let word = mix(0xF1A7_7ACE ^ ((self.index as u64) << 8) ^ (k as u64 / 16));
            *slot = ((word >> (4 * (k % 16))) & 0xf) as u8;
        }
        key
    }
}

/// The fleet: instances until `promotions` reported promotions are in it, a new one every
/// 1 to 4 seconds of recording time (2.5 on average). Rollouts without a promotion come on top.
pub fn fleet(promotions: usize) -> Vec<Instance> {
    let slots: Vec<usize> = SCENARIOS
        .iter()
        .enumerate()
        .flat_map(|(i, s)| std::iter::repeat_n(i, s.weight as usize))
        .collect();
    let (mut out, mut reported, mut t) = (Vec::new(), 0, 0i64);
    while reported < promotions {
        let index = out.len();
        let h = mix(index as u64);
        let scenario = slots[(h % slots.len() as u64) as usize];
        t += 1 + ((h >> 32) % 4) as i64;
        if SCENARIOS[scenario].promotion_id.is_some() {
            reported += 1;
        }
        out.push(Instance {
            index,
            scenario,
            shift: t,
        });
    }
    if out.len() > 0xffff {
        fail("at most 65,535 instances (the hex key holds the index in four digits)");
    }
    out
}

/// A merged recording.
pub struct Recording {
    /// JSON Lines, `\n`-terminated.
    pub text: String,
    /// Byte ranges of the lines in `text`.
    pub lines: Vec<(usize, usize)>,
    /// Recording time from the first line to the last, in seconds.
    pub span_secs: i64,
}

impl Recording {
    pub fn lines(&self) -> Vec<&str> {
        self.lines.iter().map(|&(a, b)| &self.text[a..b]).collect()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> u8 {
    if c.is_ascii_digit() {
        c - b'0'
    } else {
        c - b'a' + 10
    }
}

fn push2(out: &mut Vec<u8>, v: i64) {
    out.push(b'0' + (v / 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// How a rendered line names things: renamed for an instance (hex key and tag), or as recorded.
#[derive(Clone, Copy)]
enum Naming<'a> {
    Instance { key: &'a [u8; 64], tag: &'a str },
    AsRecorded,
}

fn render_line(
    line: &LineTemplate,
    t: &Template,
    shift: i64,
    naming: Naming<'_>,
    out: &mut Vec<u8>,
) {
    let b = line.text.as_bytes();
    for seg in &line.segs {
        match *seg {
            Seg::Lit(a, z) => out.extend_from_slice(&b[a..z]),
            Seg::Hex(a, len) => {
                let Naming::Instance { key, .. } = naming else {
                    out.extend_from_slice(&b[a..a + len]);
                    continue;
                };
                let mut k = 0;
                for &c in &b[a..a + len] {
                    if c == b'-' {
                        out.push(c);
                    } else {
                        out.push(HEX[usize::from((nibble(c) + key[k]) & 0xf)]);
                        k += 1;
                    }
                }
            }
            Seg::Time { secs, sep } => {
                let secs = secs + shift;
                let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
                let s = secs.rem_euclid(86_400);
                push2(out, y / 100);
                push2(out, y % 100);
                out.push(b'-');
                push2(out, mo);
                out.push(b'-');
                push2(out, d);
                out.push(sep);
                push2(out, s / 3600);
                out.push(b':');
                push2(out, s / 60 % 60);
                out.push(b':');
                push2(out, s % 60);
            }
            Seg::Word(w) => {
                out.extend_from_slice(t.words[w].as_bytes());
                if let Naming::Instance { tag, .. } = naming {
                    out.push(b'-');
                    out.extend_from_slice(tag.as_bytes());
                }
            }
        }
    }
    out.push(b'\n');
}

/// Renders the instances and merges their lines by `at` (ties: earlier instance first, then
/// the scenario's own order).
pub fn render(instances: &[Instance]) -> Recording {
    let templates: Vec<Template> = SCENARIOS.iter().map(template).collect();
    let keys: Vec<[u8; 64]> = instances.iter().map(Instance::key).collect();
    let tags: Vec<String> = instances.iter().map(Instance::tag).collect();
    let bytes: usize = instances
        .iter()
        .map(|i| SCENARIOS[i.scenario].text.len() * 21 / 20)
        .sum();
    let mut out = Vec::with_capacity(bytes);
    let mut lines = Vec::new();
    let mut heap = BinaryHeap::with_capacity(instances.len());
    for (n, inst) in instances.iter().enumerate() {
        heap.push(Reverse((
            templates[inst.scenario].lines[0].at + inst.shift,
            n,
            0usize,
        )));
    }
    let (mut first, mut last) = (None, 0);
    while let Some(Reverse((at, n, l))) = heap.pop() {
        let inst = &instances[n];
        let t = &templates[inst.scenario];
        let start = out.len();
        let naming = Naming::Instance {
            key: &keys[n],
            tag: &tags[n],
        };
        render_line(&t.lines[l], t, inst.shift, naming, &mut out);
        lines.push((start, out.len() - 1));
        first.get_or_insert(at);
        last = at;
        if let Some(next) = t.lines.get(l + 1) {
            heap.push(Reverse((next.at + inst.shift, n, l + 1)));
        }
    }
    let text = String::from_utf8(out).unwrap_or_else(|_| fail("rendered text is not UTF-8"));
    Recording {
        text,
        lines,
        span_secs: last - first.unwrap_or(last),
    }
}

/// The lines of the recording `text` (`name` for messages) in their own order, every timestamp
/// in them (`at`, conditions, Events, the report's `time`) moved by `shift` seconds, names and
/// ids as recorded.
pub fn shifted(name: &'static str, text: &'static str, shift: i64) -> Vec<String> {
    let scenario = Scenario {
        name,
        text,
        words: &[],
        promotion_id: None,
        expect: expect(Outcome::Succeeded, None, "reported"),
        weight: 0,
    };
    let t = template(&scenario);
    t.lines
        .iter()
        .map(|line| {
            let mut out = Vec::with_capacity(line.text.len() + 1);
            render_line(line, &t, shift, Naming::AsRecorded, &mut out);
            out.pop(); // the newline
            String::from_utf8(out).unwrap_or_else(|_| fail("rendered text is not UTF-8"))
        })
        .collect()
}

/// Promotions whose observations are still arriving, averaged over the recording, and at most.
pub fn in_flight(instances: &[Instance]) -> (f64, usize) {
    let lengths: Vec<i64> = SCENARIOS
        .iter()
        .map(|s| {
            let t = template(s);
            t.lines.last().map_or(0, |l| l.at) - t.lines[0].at
        })
        .collect();
    let mut edges: Vec<(i64, i32)> = Vec::with_capacity(instances.len() * 2);
    let mut busy = 0i64;
    for i in instances {
        edges.push((i.shift, 1));
        edges.push((i.shift + lengths[i.scenario], -1));
        busy += lengths[i.scenario];
    }
    edges.sort_unstable();
    let (mut now, mut max) = (0i32, 0i32);
    for &(_, d) in &edges {
        now += d;
        max = max.max(now);
    }
    let span = match (edges.first(), edges.last()) {
        (Some(a), Some(z)) => (z.0 - a.0).max(1),
        _ => 1,
    };
    (busy as f64 / span as f64, max as usize)
}

// ---- validation -----------------------------------------------------------------------------

/// What one scenario yields when replayed on its own.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub spans: usize,
    pub ignored: usize,
}

/// Replays every example on its own, checks it ends as documented, and returns its shape.
pub fn shapes() -> Vec<Shape> {
    SCENARIOS
        .iter()
        .map(|s| {
            let r = replay::run(s.text, EngineConfig::default());
            if !r.bad.is_empty() || r.traces.len() != 1 {
                fail(format!(
                    "{}.jsonl: {} bad line(s), {} trace(s); want 0 and 1",
                    s.name,
                    r.bad.len(),
                    r.traces.len()
                ));
            }
            let story = &r.traces[0].story;
            let got = expect(
                story.outcome,
                story.divergence.as_ref().map(|d| d.stage),
                story.traceability.as_str(),
            );
            if got != s.expect {
                fail(format!(
                    "{}.jsonl: got {got:?}, want {:?}",
                    s.name, s.expect
                ));
            }
            Shape {
                spans: r.traces[0].spans.len(),
                ignored: r.ignored,
            }
        })
        .collect()
}

/// The instance a story belongs to: the last `-NNNNN` in its promotion id.
fn instance_of(id: &str) -> Option<usize> {
    let b = id.as_bytes();
    (0..b.len().saturating_sub(5)).rev().find_map(|p| {
        let tag = b.get(p + 1..p + 6)?;
        (b[p] == b'-' && boundary_after(b, p + 6) && tag.iter().all(u8::is_ascii_digit))
            .then(|| digits(tag).map(|v| v as usize))
            .flatten()
    })
}

/// Replays the instances through [`replay::run`] and checks that each gets exactly one story,
/// with its scenario's outcome, divergence stage, traceability and span count.
pub fn validate(instances: &[Instance], shapes: &[Shape]) {
    let rec = render(instances);
    let r = replay::run(&rec.text, EngineConfig::default());
    if let Some(b) = r.bad.first() {
        fail(format!(
            "synthetic recording: {} bad line(s), first: line {}: {}",
            r.bad.len(),
            b.line,
            b.error
        ));
    }
    let want_ignored: usize = instances.iter().map(|i| shapes[i.scenario].ignored).sum();
    if r.ignored != want_ignored {
        fail(format!(
            "synthetic recording: {} ignored lines, want {want_ignored}",
            r.ignored
        ));
    }
    let by_index: HashMap<usize, &Instance> = instances.iter().map(|i| (i.index, i)).collect();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for t in &r.traces {
        let story = &t.story;
        let inst = instance_of(&story.promotion_id)
            .and_then(|i| by_index.get(&i))
            .unwrap_or_else(|| fail(format!("story {:?} names no instance", story.promotion_id)));
        let s = &SCENARIOS[inst.scenario];
        *seen.entry(inst.index).or_default() += 1;
        let tag = inst.tag();
        let id_ok = match s.promotion_id {
            Some(id) => story.promotion_id == format!("{id}-{tag}"),
            None => s
                .words
                .iter()
                .any(|w| story.promotion_id.contains(&format!("{w}-{tag}"))),
        };
        let got = expect(
            story.outcome,
            story.divergence.as_ref().map(|d| d.stage),
            story.traceability.as_str(),
        );
        if !id_ok || got != s.expect || t.spans.len() != shapes[inst.scenario].spans {
            fail(format!(
                "instance {} ({}): story {:?} ended {got:?} with {} span(s); want {:?} with {}",
                inst.index,
                s.name,
                story.promotion_id,
                t.spans.len(),
                s.expect,
                shapes[inst.scenario].spans
            ));
        }
    }
    for i in instances {
        match seen.get(&i.index).copied().unwrap_or(0) {
            1 => {}
            n => fail(format!(
                "instance {} ({}) has {n} stories, want exactly 1",
                i.index, SCENARIOS[i.scenario].name
            )),
        }
    }
}

// ---- calendar -------------------------------------------------------------------------------

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
