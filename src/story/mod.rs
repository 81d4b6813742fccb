//! The triage story: the on-call narrative of one promotion, and its terminal renderings.
//!
//! The engine fills a [`Story`] when a promotion reaches its verdict; this module only
//! presents it ([`render`] for the narrative, [`waterfall`] for the span timeline). Pure: no IO.

use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;

use crate::model::PipelineRef;
use crate::trace::{SpanId, Stage, TraceId};

pub mod waterfall;

/// The verdict of a promotion (`delivery.outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Superseded,
    NoChange,
    /// Not decided yet (a story asked for while the promotion is still open).
    InProgress,
}

impl Outcome {
    /// Every verdict a finished promotion can have (all but [`Outcome::InProgress`]).
    pub const FINAL: [Outcome; 5] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Superseded,
        Outcome::NoChange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Superseded => "superseded",
            Outcome::NoChange => "no_change",
            Outcome::InProgress => "in_progress",
        }
    }

    /// `cicd.pipeline.result` (semantic conventions): a superseded promotion was cancelled, one
    /// with no change skipped; `None` while in progress.
    pub fn pipeline_result(self) -> Option<&'static str> {
        Some(match self {
            Outcome::Succeeded => "success",
            Outcome::Failed => "failure",
            Outcome::TimedOut => "timeout",
            Outcome::Superseded => "cancellation",
            Outcome::NoChange => "skip",
            Outcome::InProgress => return None,
        })
    }

    /// `deployment.status` (semantic conventions): `succeeded` or `failed`; `None` for a
    /// promotion that deployed nothing of its own (superseded, no change) or is in progress.
    pub fn deployment_status(self) -> Option<&'static str> {
        match self {
            Outcome::Succeeded => Some("succeeded"),
            Outcome::Failed | Outcome::TimedOut => Some("failed"),
            Outcome::Superseded | Outcome::NoChange | Outcome::InProgress => None,
        }
    }
}

/// Where the delivery path left intent, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub stage: Stage,
    /// Condition reason or timeout (`ProgressDeadlineExceeded`, `BuildFailed`, `Timeout`, …).
    pub reason: String,
    pub message: String,
    /// The Pod failure that explains a rollout divergence (`ImagePullBackOff`, …), if seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Supporting lines: conditions and events, most telling first.
    pub evidence: Vec<String>,
    /// The span that carries the divergence.
    pub span_id: SpanId,
}

/// One stage of the story.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StageStory {
    pub stage: Stage,
    pub span_id: SpanId,
    /// `Kind/namespace/name` of the object the stage is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    pub outcome: &'static str,
    pub start: Timestamp,
    pub end: Timestamp,
    /// One line on what happened.
    pub summary: String,
    /// Events worth reading (warnings first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// How the agent learned of a promotion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Traceability {
    /// CI sent a promotion report.
    Reported,
    /// An annotation or Flux event metadata named the promotion id; no report.
    Annotated,
    /// A rollout no Flux object or report explains.
    Missing,
    /// Flux delivered a revision (a source stored it, a Kustomization or HelmRelease applied
    /// it) that no report or annotation announced: the trace is complete, nobody announced it.
    Unreported,
    /// Flux image automation selected a new image and pushed the commit; no report.
    Automated,
    /// Flux reverted a change made outside Git: a periodic run at the revision it had applied
    /// changed the object back (drift correction) and the Deployment rolled out again.
    DriftCorrection,
}

impl Traceability {
    pub fn as_str(self) -> &'static str {
        match self {
            Traceability::Reported => "reported",
            Traceability::Annotated => "annotated",
            Traceability::Missing => "missing",
            Traceability::Unreported => "unreported",
            Traceability::Automated => "automated",
            Traceability::DriftCorrection => "drift_correction",
        }
    }
}

impl std::fmt::Display for Traceability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The triage story of one promotion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Story {
    pub promotion_id: String,
    pub trace_id: TraceId,
    pub root_span_id: SpanId,
    pub traceability: Traceability,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineRef>,
    /// When the promoted change was made, the start of its lead time: the report's
    /// `commit_time`, else the `org.opencontainers.image.created` of the OCI artifact fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<Timestamp>,
    /// What was promoted, as the report or annotation said it.
    pub promoted: String,
    /// The OCI manifest digest a floating tag resolved to, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_digest: Option<String>,
    pub cluster: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    pub stages: Vec<StageStory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    /// Link to the trace in the user's backend, when a URL template is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_link: Option<String>,
}

fn duration(start: Timestamp, end: Timestamp) -> String {
    let d = end.duration_since(start);
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Multi-line messages (Flux change sets) on one line.
pub fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether `c` reorders or hides text on a terminal: a bidirectional control (U+202A–U+202E,
/// U+2066–U+2069, the marks U+200E, U+200F, U+061C).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// `text` safe to print on a terminal or write to a log: control characters other than
/// newline and tab, and bidirectional controls, are written as `\u{..}` escapes, so that text
/// from a report or a cluster object cannot move the cursor, recolour, or reverse a line.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c);
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Renders the on-call narrative, [`terminal_safe`].
pub fn render(story: &Story) -> String {
    terminal_safe(&render_raw(story)).into_owned()
}

fn render_raw(story: &Story) -> String {
    let mut out = String::new();
    let verdict = match (&story.divergence, story.outcome) {
        (Some(d), _) => format!(
            "{} — diverged at {}",
            story.outcome.as_str(),
            d.stage.as_str()
        ),
        (None, o) => o.as_str().to_string(),
    };
    let _ = writeln!(out, "Promotion {}: {}", story.promotion_id, verdict);
    let who = story
        .actor
        .as_deref()
        .map(|a| format!(" by {a}"))
        .unwrap_or_default();
    let env = story
        .environment
        .as_deref()
        .map(|e| format!(" to {e}"))
        .unwrap_or_default();
    let app = story
        .app
        .as_deref()
        .map(|a| format!("{a} "))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  What:   {app}{}{env} (cluster {}){who}, at {}",
        story.promoted, story.cluster, story.start
    );
    if let Some(p) = &story.pipeline {
        let name = p.name.as_deref().unwrap_or("pipeline");
        let run = p
            .run_id
            .as_deref()
            .map(|r| format!(" run {r}"))
            .unwrap_or_default();
        let url = p
            .url
            .as_deref()
            .map(|u| format!(" {u}"))
            .unwrap_or_default();
        let _ = writeln!(out, "  CI:     {name}{run}{url}");
    }
    if let Some(d) = &story.resolved_digest {
        let _ = writeln!(out, "  Digest: {d}");
    }
    match story.traceability {
        Traceability::Missing => {
            let _ = writeln!(
                out,
                "  Traceability: missing — no promotion report or promotion-id annotation explains this change"
            );
        }
        Traceability::Unreported => {
            let _ = writeln!(
                out,
                "  Traceability: unreported — Flux delivered this revision; no promotion report or annotation announced it"
            );
        }
        Traceability::DriftCorrection => {
            let _ = writeln!(
                out,
                "  Traceability: drift_correction — Flux changed back what was changed outside Git, at the revision it had applied"
            );
        }
        _ => {}
    }
    if story.traceability == Traceability::Automated {
        let _ = writeln!(
            out,
            "  Traceability: automated — Flux image automation selected the image and pushed the commit; no promotion report"
        );
    }
    for s in &story.stages {
        let obj = s
            .object
            .as_deref()
            .map(|o| format!(" {o}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<9} {:<10} {:>8}{}: {}",
            s.stage.as_str(),
            s.outcome,
            duration(s.start, s.end),
            obj,
            one_line(&s.summary)
        );
        for e in s.events.iter().take(4) {
            let _ = writeln!(out, "              · {}", one_line(e));
        }
    }
    if let Some(d) = &story.divergence {
        let _ = writeln!(
            out,
            "  Divergence: {} — {}: {}",
            d.stage.as_str(),
            d.reason,
            d.message
        );
        if let Some(c) = &d.cause {
            let _ = writeln!(out, "    Cause: {c}");
        }
        for e in &d.evidence {
            let _ = writeln!(out, "    Evidence: {}", one_line(e));
        }
    }
    if let Some(s) = &story.superseded_by {
        let _ = writeln!(out, "  Superseded by promotion {s}");
    }
    let _ = writeln!(
        out,
        "  Took {} (ended {})",
        duration(story.start, story.end),
        story.end
    );
    match &story.trace_link {
        Some(link) => {
            let _ = writeln!(out, "  Trace: {link}");
        }
        None => {
            let _ = writeln!(out, "  Trace: {}", story.trace_id);
        }
    }
    out
}
