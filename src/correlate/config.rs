//! Engine settings: stage deadlines, retention, and the fixed tolerances correlation uses.
//!
//! Read by every concern of the engine; written only when the engine is built.

use jiff::{SignedDuration, Timestamp};

/// Deadlines per stage, and how long a promotion waits for late work before its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Flux image automation must push a commit for a newly selected image tag within this.
    pub image: SignedDuration,
    /// A reconcile request must be handled within this.
    pub trigger: SignedDuration,
    /// The promoted revision must be stored by a source within this of the promotion.
    pub source: SignedDuration,
    /// A reconcile must finish within this, unless the object's `spec.timeout` says otherwise;
    /// and must start within this of the source having the revision.
    pub reconcile: SignedDuration,
    /// Added to a Deployment's `progressDeadlineSeconds`, and to [`Deadlines::rollout`].
    pub rollout_grace: SignedDuration,
    /// A rollout of a workload with no progress deadline of its own (a DaemonSet) must
    /// complete within this (and the grace).
    pub rollout: SignedDuration,
    /// A traffic probe must report within this of the rollout completing.
    pub traffic: SignedDuration,
    /// Added to the longest a Flagger canary analysis can take by its Canary's spec (interval
    /// × (steps + threshold + 3) + `progressDeadlineSeconds`).
    pub canary_grace: SignedDuration,
    /// The whole promotion.
    pub promotion: SignedDuration,
    /// Quiet time after the last stage ends before the verdict (late rollouts, late events).
    pub settle: SignedDuration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            image: SignedDuration::from_mins(10),
            trigger: SignedDuration::from_mins(5),
            source: SignedDuration::from_mins(10),
            reconcile: SignedDuration::from_mins(10),
            rollout_grace: SignedDuration::from_mins(1),
            rollout: SignedDuration::from_mins(10),
            traffic: SignedDuration::from_mins(3),
            canary_grace: SignedDuration::from_mins(5),
            promotion: SignedDuration::from_mins(60),
            settle: SignedDuration::from_secs(30),
        }
    }
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// `k8s.cluster.name`, part of every span id.
    pub cluster: String,
    pub deadlines: Deadlines,
    /// How many finished promotions are remembered so that re-observations of their objects
    /// (a watch restart re-lists everything) create nothing new.
    pub retain_finished: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cluster: "default".into(),
            deadlines: Deadlines::default(),
            retain_finished: 10_000,
        }
    }
}

/// Events buffered per object, kept while they can still land on a span.
pub(super) const EVENTS_PER_OBJECT: usize = 256;
/// Events and ReplicaSets of objects with no open work are kept this long: enough for an
/// observation that arrives a little before the rollout or reconcile it belongs to.
pub(super) const IDLE_RETENTION: SignedDuration = SignedDuration::from_mins(10);
/// A rollout is attributed to a reconcile that started at most this long after it.
pub(super) const CLAIM_SLACK: SignedDuration = SignedDuration::from_secs(5);
/// Events this far outside a span's window still belong to it (clock skew, late writes).
pub(super) const EVENT_WINDOW_SLACK: SignedDuration = SignedDuration::from_secs(5);

/// `t + d`, saturating at the ends of time: no input, however far in the past or future, can
/// make the engine panic on arithmetic.
pub(super) fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// `t - d`, saturating like [`add`].
pub(super) fn sub(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_sub(d).unwrap_or(if d.is_negative() {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    })
}

/// A duration for messages: `5m`, `1h`, `90s`.
pub(super) fn fmt_dur(d: SignedDuration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
