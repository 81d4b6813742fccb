//! What a watching agent learns from a Canary's status writes, beside Flagger's Events: the
//! weight and iteration steps of the current run and its manual gates. Fed by
//! `Engine::on_canary` (the canary stage), read by it when a canary span's deadline moves and
//! at the verdict; never a source of a span's start, end or attributes, only of span events
//! marked `flagger.canary.source=status` (and of the deadline while a gate holds the run).
//!
//! Why: client-go's event recorder folds the eleventh and later distinct messages of one
//! Canary (all reason `Synced`, within ten minutes) into one `(combined from similar events)`
//! Event it keeps patching, so a run of ten or more steps leaves no Event per step; Flagger
//! writes `status.canaryWeight` (or `status.iterations`) and `status.lastTransitionTime` at
//! every step. An agent restarted mid-run sees only the status of the moment it re-lists:
//! the steps before it are lost to it (docs/design.md says which).

use jiff::{SignedDuration, Timestamp};

use crate::model::{condition, CanaryObs};

/// The most status steps kept for one run (Flagger's weights are at most 100 steps).
const MAX_STEPS: usize = 256;

/// Flagger's manual gates: `Waiting` (confirm-rollout, before the analysis) and
/// `WaitingPromotion` (confirm-promotion, at the max weight).
pub(super) fn is_gate(phase: &str) -> bool {
    matches!(phase, "Waiting" | "WaitingPromotion")
}

/// A step of the run the status showed: a new canary weight or iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StatusStep {
    /// `status.lastTransitionTime` of the write (Flagger sets it with the step).
    pub at: Timestamp,
    pub weight: i64,
    pub iterations: i64,
}

/// A manual gate the status showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Gate {
    pub phase: String,
    /// When the `Promoted` condition took the gate's phase as its reason.
    pub start: Timestamp,
    /// When it left it; `None` while the Canary still waits.
    pub end: Option<Timestamp>,
}

/// The status history of a Canary's current run, as this agent saw it.
#[derive(Clone, Debug, Default)]
pub(super) struct StatusRun {
    pub steps: Vec<StatusStep>,
    pub gates: Vec<Gate>,
}

/// When the Canary's status says its phase was entered: the `Promoted` condition's
/// `lastUpdateTime` when its reason is that phase (Flagger rewrites the condition only on a
/// phase change, while `status.lastTransitionTime` moves at every write), else the last write.
fn phase_since(c: &CanaryObs, at: Timestamp) -> Timestamp {
    condition(&c.conditions, "Promoted")
        .filter(|p| p.reason == c.phase)
        .and_then(|p| p.last_update.or(p.last_transition))
        .or(c.last_transition)
        .unwrap_or(at)
        .min(at)
}

impl StatusRun {
    /// Takes the status `c` observed at `at`.
    pub fn observe(&mut self, c: &CanaryObs, at: Timestamp) {
        let when = c.last_transition.unwrap_or(at).min(at);
        let last = self.steps.last().copied();
        let moved = last.is_none_or(|l| l.weight != c.weight || l.iterations != c.iterations);
        if (c.weight > 0 || c.iterations > 0) && moved && self.steps.len() < MAX_STEPS {
            self.steps.push(StatusStep {
                at: when,
                weight: c.weight,
                iterations: c.iterations,
            });
        }
        let open = self.gates.last_mut().filter(|g| g.end.is_none());
        match open {
            Some(g) if g.phase != c.phase => {
                g.end = Some(phase_since(c, at).max(g.start));
                if is_gate(&c.phase) {
                    self.open_gate(c, at);
                }
            }
            Some(_) => {}
            None if is_gate(&c.phase) => self.open_gate(c, at),
            None => {}
        }
    }

    fn open_gate(&mut self, c: &CanaryObs, at: Timestamp) {
        if self.gates.len() < MAX_STEPS {
            self.gates.push(Gate {
                phase: c.phase.clone(),
                start: phase_since(c, at),
                end: None,
            });
        }
    }

    /// Whether the Canary waits at a gate now.
    pub fn waiting(&self) -> bool {
        self.gates.last().is_some_and(|g| g.end.is_none())
    }

    /// The time the run has spent at closed gates that began at or after `since`.
    pub fn waited(&self, since: Timestamp) -> SignedDuration {
        self.gates
            .iter()
            .filter(|g| g.start >= since)
            .filter_map(|g| g.end.map(|e| e.duration_since(g.start)))
            .fold(SignedDuration::ZERO, SignedDuration::saturating_add)
    }

    /// The highest canary weight among the steps within `[from, to]`.
    pub fn highest_weight(&self, from: Timestamp, to: Timestamp) -> Option<i64> {
        self.steps
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .map(|s| s.weight)
            .max()
            .filter(|w| *w > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CondStatus, Condition, Kind, ObjectRef};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn obs(phase: &str, weight: i64, written: i64, phase_since: i64) -> CanaryObs {
        CanaryObs {
            object: ObjectRef::new(Kind::Canary, "apps", "podinfo"),
            uid: "u".into(),
            target: ObjectRef::new(Kind::Deployment, "apps", "podinfo"),
            interval: SignedDuration::from_secs(30),
            threshold: 1,
            steps: 2,
            schedule: vec![50, 100],
            progress_deadline: SignedDuration::from_secs(60),
            phase: phase.into(),
            weight,
            iterations: 0,
            failed_checks: 0,
            last_applied_spec: None,
            last_promoted_spec: None,
            last_transition: Some(t(written)),
            conditions: vec![Condition {
                type_: "Promoted".into(),
                status: CondStatus::Unknown,
                reason: phase.into(),
                message: String::new(),
                last_transition: Some(t(0)),
                last_update: Some(t(phase_since)),
                observed_generation: None,
            }],
        }
    }

    #[test]
    fn steps_and_a_gate_are_taken_once_each() {
        let mut run = StatusRun::default();
        run.observe(&obs("Progressing", 50, 30, 0), t(30));
        // A watch restart replays the same status: no second step.
        run.observe(&obs("Progressing", 50, 30, 0), t(31));
        run.observe(&obs("Progressing", 100, 60, 0), t(60));
        // The gate resets the weight; Flagger rewrites lastTransitionTime at every tick.
        run.observe(&obs("WaitingPromotion", 0, 90, 90), t(90));
        run.observe(&obs("WaitingPromotion", 0, 120, 90), t(120));
        assert!(run.waiting());
        run.observe(&obs("Promoting", 0, 200, 200), t(200));
        assert!(!run.waiting());
        let weights: Vec<i64> = run.steps.iter().map(|s| s.weight).collect();
        assert_eq!(weights, [50, 100]);
        assert_eq!(run.gates.len(), 1);
        assert_eq!(
            (run.gates[0].start, run.gates[0].end),
            (t(90), Some(t(200)))
        );
        assert_eq!(run.waited(t(0)), SignedDuration::from_secs(110));
        assert_eq!(run.highest_weight(t(0), t(300)), Some(100));
    }
}
