//! Runs a recording through the engine on the recording's own clock.
//!
//! Used by `fluxtrace replay`, `fluxtrace demo` and the tests. No waiting: observations are
//! applied in order, then the clock is advanced past every deadline so each promotion reaches
//! a verdict. The same recording always gives the same spans, ids included. A recording with a
//! `synced` line starts as an agent starts: what comes before it is held until it.

use crate::correlate::{Engine, EngineConfig, Output};
use crate::sources::recording::{self, BadLine};
use crate::story::Story;
use crate::trace::SpanRecord;

/// The built-in example recordings, embedded so that `demo` works from any directory.
pub const EXAMPLES: [(&str, &str); 33] = [
    (
        "oci-success.jsonl",
        include_str!("../examples/recordings/oci-success.jsonl"),
    ),
    (
        "oci-rollout-imagepull.jsonl",
        include_str!("../examples/recordings/oci-rollout-imagepull.jsonl"),
    ),
    (
        "git-success.jsonl",
        include_str!("../examples/recordings/git-success.jsonl"),
    ),
    (
        "git-build-failure.jsonl",
        include_str!("../examples/recordings/git-build-failure.jsonl"),
    ),
    (
        "helmrelease-upgrade-failure.jsonl",
        include_str!("../examples/recordings/helmrelease-upgrade-failure.jsonl"),
    ),
    (
        "receiver-trigger.jsonl",
        include_str!("../examples/recordings/receiver-trigger.jsonl"),
    ),
    (
        "untraced-rollout.jsonl",
        include_str!("../examples/recordings/untraced-rollout.jsonl"),
    ),
    (
        "multi-env-oci.jsonl",
        include_str!("../examples/recordings/multi-env-oci.jsonl"),
    ),
    (
        "multi-env-git.jsonl",
        include_str!("../examples/recordings/multi-env-git.jsonl"),
    ),
    (
        "monorepo-bootstrap.jsonl",
        include_str!("../examples/recordings/monorepo-bootstrap.jsonl"),
    ),
    (
        "helmrelease-chartref-success.jsonl",
        include_str!("../examples/recordings/helmrelease-chartref-success.jsonl"),
    ),
    (
        "unreported-git-success.jsonl",
        include_str!("../examples/recordings/unreported-git-success.jsonl"),
    ),
    (
        "unreported-git-failure.jsonl",
        include_str!("../examples/recordings/unreported-git-failure.jsonl"),
    ),
    (
        "unreported-oci-success.jsonl",
        include_str!("../examples/recordings/unreported-oci-success.jsonl"),
    ),
    (
        "unreported-oci-failure.jsonl",
        include_str!("../examples/recordings/unreported-oci-failure.jsonl"),
    ),
    (
        "image-automation-success.jsonl",
        include_str!("../examples/recordings/image-automation-success.jsonl"),
    ),
    (
        "image-automation-push-failure.jsonl",
        include_str!("../examples/recordings/image-automation-push-failure.jsonl"),
    ),
    (
        "flagger-canary-success.jsonl",
        include_str!("../examples/recordings/flagger-canary-success.jsonl"),
    ),
    (
        "flagger-canary-rollback.jsonl",
        include_str!("../examples/recordings/flagger-canary-rollback.jsonl"),
    ),
    (
        "history-oci.jsonl",
        include_str!("../examples/recordings/history-oci.jsonl"),
    ),
    (
        "history-git.jsonl",
        include_str!("../examples/recordings/history-git.jsonl"),
    ),
    (
        "history-image-automation.jsonl",
        include_str!("../examples/recordings/history-image-automation.jsonl"),
    ),
    (
        "history-helm.jsonl",
        include_str!("../examples/recordings/history-helm.jsonl"),
    ),
    (
        "history-oci-failure.jsonl",
        include_str!("../examples/recordings/history-oci-failure.jsonl"),
    ),
    (
        "real-git-unreported.jsonl",
        include_str!("../examples/recordings/real-git-unreported.jsonl"),
    ),
    (
        "real-helm-values.jsonl",
        include_str!("../examples/recordings/real-helm-values.jsonl"),
    ),
    (
        "real-helm-upgrade-stalled.jsonl",
        include_str!("../examples/recordings/real-helm-upgrade-stalled.jsonl"),
    ),
    (
        "real-kustomize-retry.jsonl",
        include_str!("../examples/recordings/real-kustomize-retry.jsonl"),
    ),
    (
        "real-kustomize-path-not-found.jsonl",
        include_str!("../examples/recordings/real-kustomize-path-not-found.jsonl"),
    ),
    (
        "real-kustomize-depends-on.jsonl",
        include_str!("../examples/recordings/real-kustomize-depends-on.jsonl"),
    ),
    (
        "real-git-overtaken.jsonl",
        include_str!("../examples/recordings/real-git-overtaken.jsonl"),
    ),
    (
        "image-automation-push-branch.jsonl",
        include_str!("../examples/recordings/image-automation-push-branch.jsonl"),
    ),
    (
        "real-rollout-quota.jsonl",
        include_str!("../examples/recordings/real-rollout-quota.jsonl"),
    ),
];
/// One promotion's trace: its spans (stage spans, then the root) and its story.
#[derive(Debug)]
pub struct Trace {
    pub spans: Vec<SpanRecord>,
    pub story: Story,
}

/// What a replay produced.
#[derive(Debug, Default)]
pub struct Replay {
    pub traces: Vec<Trace>,
    /// Lines that were rejected, with their numbers.
    pub bad: Vec<BadLine>,
    /// Lines that carry nothing fluxtrace follows.
    pub ignored: usize,
    /// Observations applied to the engine.
    pub observations: usize,
}

impl Replay {
    pub fn spans(&self) -> impl Iterator<Item = &SpanRecord> {
        self.traces.iter().flat_map(|t| t.spans.iter())
    }
}

/// Groups engine outputs into traces: a promotion's spans precede its story.
pub fn collect(
    outputs: impl IntoIterator<Item = Output>,
    traces: &mut Vec<Trace>,
    pending: &mut Vec<SpanRecord>,
) {
    for o in outputs {
        match o {
            Output::Span(s) => pending.push(s),
            Output::Story(story) => traces.push(Trace {
                spans: std::mem::take(pending),
                story: *story,
            }),
            // A replay cannot probe or list: recordings carry probe outcomes as `probe_result`
            // lines and the Pods listed as `watch` lines.
            Output::Probe(_) | Output::ListPods(_) => {}
        }
    }
}

/// Replays a whole recording.
pub fn run(text: &str, cfg: EngineConfig) -> Replay {
    run_decoded(recording::decode_all(text), cfg)
}

/// Replays a recording already decoded (see [`recording::decode_reader`]).
pub fn run_decoded(decoded: recording::Decoded, cfg: EngineConfig) -> Replay {
    let mut engine = Engine::new(cfg);
    let mut out = Replay {
        bad: decoded.bad,
        ignored: decoded.ignored,
        observations: decoded.events.len(),
        ..Replay::default()
    };
    let mut pending = Vec::new();
    // A recording that marks its initial state is replayed as its agent started: what the
    // initial lists showed is held, then applied at once (`Engine::hold`).
    let synced = decoded.synced;
    if synced.is_some_and(|n| n > 0) {
        collect(engine.hold(true), &mut out.traces, &mut pending);
    }
    for (i, ev) in decoded.events.into_iter().enumerate() {
        if synced == Some(i) && engine.held() {
            collect(engine.hold(false), &mut out.traces, &mut pending);
        }
        collect(engine.apply(ev), &mut out.traces, &mut pending);
    }
    if engine.held() {
        collect(engine.hold(false), &mut out.traces, &mut pending);
    }
    collect(engine.finish(), &mut out.traces, &mut pending);
    out
}
