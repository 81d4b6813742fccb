//! Flagger `Canary` (`flagger.app/v1beta1`) → [`CanaryObs`]: its target, the analysis settings
//! that bound how long a run can take, and where the current run stands.
//!
//! A Canary without `spec.targetRef.name`, or with a status that has no `phase`, is skipped
//! as undecodable (counted and logged by the caller like any other). A Canary with no status
//! yet (Flagger has not initialised it) decodes with an empty phase.

use crate::model::{sane_time, CanaryObs, Kind, ObjectRef};
use crate::sources::raw::{conditions, duration, AnalysisSpec, ObjectError, RawKubeObject};
use jiff::SignedDuration;

/// Flagger's defaults (v1.44).
const DEFAULT_INTERVAL: SignedDuration = SignedDuration::from_secs(60);
const MIN_INTERVAL: SignedDuration = SignedDuration::from_secs(10);
const DEFAULT_PROGRESS_DEADLINE_SECONDS: f64 = 600.0;
const DEFAULT_MAX_WEIGHT: f64 = 100.0;
/// Flagger's iterations with the `kubernetes` provider (no progressive traffic).
const KUBERNETES_PROVIDER_ITERATIONS: i64 = 10;

/// A CRD `number` as Flagger writes it (an integer); out-of-range values saturate.
fn int(n: f64) -> i64 {
    if n.is_finite() {
        n.clamp(0.0, 1e9) as i64
    } else {
        0
    }
}

/// The fewest weight steps or iterations a run goes through.
fn steps(a: &AnalysisSpec) -> i64 {
    if let Some(i) = a.iterations.map(int).filter(|i| *i > 0) {
        return i;
    }
    if let Some(w) = a.step_weights.as_ref().filter(|w| !w.is_empty()) {
        return w.len() as i64;
    }
    let max = a.max_weight.unwrap_or(DEFAULT_MAX_WEIGHT);
    match a.step_weight.filter(|s| s.is_finite() && *s > 0.0) {
        Some(step) => int((max / step).ceil()).max(1),
        None => KUBERNETES_PROVIDER_ITERATIONS,
    }
}

/// Flagger's total weight: a canary weight never goes past it.
const TOTAL_WEIGHT: i64 = 100;

/// The canary weights a progressive-traffic run steps through (Flagger's `nextStepWeight`
/// and `maxWeight`: `stepWeight` wins over `stepWeights`; promotion comes once the weight
/// reaches the max weight); empty when the run counts iterations.
fn schedule(a: &AnalysisSpec) -> Vec<i64> {
    if a.iterations.map(int).is_some_and(|i| i > 0) {
        return Vec::new();
    }
    let listed: Vec<i64> = a
        .step_weights
        .iter()
        .flatten()
        .map(|w| int(*w).min(TOTAL_WEIGHT))
        .collect();
    let max = match (listed.last(), a.max_weight.map(int).filter(|m| *m > 0)) {
        (Some(last), _) => *last,
        (None, Some(m)) => m,
        (None, None) => TOTAL_WEIGHT,
    };
    let mut out = Vec::new();
    match a.step_weight.map(int).filter(|s| *s > 0) {
        Some(step) => {
            let mut w = 0;
            while w < max && w < TOTAL_WEIGHT {
                w = (w + step).min(TOTAL_WEIGHT);
                out.push(w);
            }
        }
        None => {
            for w in listed {
                if out.last().is_none_or(|l| w > *l) {
                    out.push(w);
                }
            }
        }
    }
    out
}

pub(super) fn canary(
    mut obj: RawKubeObject,
    object: ObjectRef,
    uid: String,
) -> Result<CanaryObs, ObjectError> {
    let missing = |field| ObjectError::MissingField {
        kind: "Canary".into(),
        field,
    };
    let conditions = conditions(obj.status.as_deref_mut());
    let mut spec = obj.spec.take().unwrap_or_default();
    let target_ref = spec.target_ref.take().unwrap_or_default();
    // Flagger targets a Deployment (the default) or a DaemonSet.
    let target_kind = match target_ref.kind.as_deref() {
        Some("DaemonSet") => Kind::DaemonSet,
        _ => Kind::Deployment,
    };
    let target = target_ref
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| missing("spec.targetRef.name"))?;
    let status = obj.status.take();
    let phase = match &status {
        // Not initialised by Flagger yet.
        None => String::new(),
        Some(s) => s.phase.clone().ok_or_else(|| missing("status.phase"))?,
    };
    let status = status.unwrap_or_default();
    let analysis = spec
        .analysis
        .take()
        .or(spec.canary_analysis.take())
        .unwrap_or_default();
    let interval = duration(analysis.interval.as_deref())
        .unwrap_or(DEFAULT_INTERVAL)
        .max(MIN_INTERVAL);
    let progress_deadline = spec
        .progress_deadline_seconds
        .map(|s| s as f64)
        .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS);
    Ok(CanaryObs {
        target: ObjectRef::new(target_kind, object.namespace.clone(), target),
        uid,
        interval,
        threshold: analysis.threshold.map(int).unwrap_or(0).max(1),
        steps: steps(&analysis),
        schedule: schedule(&analysis),
        progress_deadline: SignedDuration::from_secs(int(progress_deadline).min(366 * 24 * 3600)),
        phase,
        weight: status.canary_weight.map(int).unwrap_or(0),
        iterations: status.iterations.map(int).unwrap_or(0),
        failed_checks: status.failed_checks.map(int).unwrap_or(0),
        last_applied_spec: status.last_applied_spec,
        last_promoted_spec: status.last_promoted_spec,
        last_transition: status.last_transition_time.map(sane_time),
        conditions,
        object,
    })
}

#[cfg(test)]
mod tests {
    use super::super::raw_to_event;
    use crate::model::EventBody;

    fn decode(json: serde_json::Value) -> Result<Option<EventBody>, super::ObjectError> {
        raw_to_event(serde_json::from_value(json).expect("shape"), false)
    }

    #[test]
    fn a_canary_decodes_its_target_analysis_and_status() {
        let body = decode(serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "progressDeadlineSeconds": 120,
                "analysis": {"interval": "30s", "threshold": 5, "maxWeight": 50, "stepWeight": 5}
            },
            "status": {
                "phase": "Progressing", "canaryWeight": 15, "failedChecks": 1.0, "iterations": 0,
                "lastAppliedSpec": "5f56684589", "lastPromotedSpec": "4cb74184589",
                "lastTransitionTime": "2026-07-21T10:04:10Z",
                "conditions": [{"type": "Promoted", "status": "Unknown", "reason": "Progressing",
                    "message": "New revision detected, progressing canary analysis.",
                    "lastUpdateTime": "2026-07-21T10:02:10Z",
                    "lastTransitionTime": "2026-07-21T10:02:10Z"}]
            }
        }));
        let Ok(Some(EventBody::Canary(c))) = body else {
            panic!("{body:?}")
        };
        assert_eq!(c.target.to_string(), "Deployment/test/podinfo");
        assert_eq!(c.primary().to_string(), "Deployment/test/podinfo-primary");
        assert_eq!(c.interval, jiff::SignedDuration::from_secs(30));
        assert_eq!((c.threshold, c.steps), (5, 10));
        assert_eq!(c.schedule, [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]);
        assert_eq!(c.progress_deadline, jiff::SignedDuration::from_secs(120));
        assert_eq!(
            (c.phase.as_str(), c.weight, c.failed_checks),
            ("Progressing", 15, 1)
        );
        assert_eq!(c.conditions[0].reason, "Progressing");
        assert_ne!(c.last_applied_spec, c.last_promoted_spec);
    }

    #[test]
    fn defaults_follow_flagger() {
        let body = decode(serde_json::json!({
            "kind": "Canary", "metadata": {"name": "ab", "namespace": "t"},
            "spec": {"targetRef": {"name": "ab"}, "analysis": {"interval": "5s", "iterations": 10}}
        }));
        let Ok(Some(EventBody::Canary(c))) = body else {
            panic!("{body:?}")
        };
        // At least 10 s, threshold at least 1, no status yet.
        assert_eq!(c.interval, jiff::SignedDuration::from_secs(10));
        assert_eq!((c.threshold, c.steps), (1, 10));
        assert!(c.schedule.is_empty(), "iterations, not weights");
        assert_eq!(c.phase, "");
        assert_eq!(c.progress_deadline, jiff::SignedDuration::from_secs(600));
        // A target of no kind is a Deployment, Flagger's default.
        assert_eq!(c.target.to_string(), "Deployment/t/ab");
    }

    #[test]
    fn a_canary_targeting_a_daemonset_follows_the_daemonset_not_a_deployment() {
        let body = decode(serde_json::json!({
            "kind": "Canary", "metadata": {"name": "agent", "namespace": "t"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent"},
                "analysis": {"interval": "1m", "iterations": 5}}
        }));
        let Ok(Some(EventBody::Canary(c))) = body else {
            panic!("{body:?}")
        };
        assert_eq!(c.target.to_string(), "DaemonSet/t/agent");
        assert_eq!(c.primary().to_string(), "DaemonSet/t/agent-primary");
    }

    #[test]
    fn a_canary_missing_its_target_or_phase_is_an_error_that_names_the_field() {
        for (json, field) in [
            (
                serde_json::json!({"kind": "Canary", "metadata": {"name": "x", "namespace": "t"},
                    "spec": {"analysis": {}}, "status": {"phase": "Succeeded"}}),
                "spec.targetRef.name",
            ),
            (
                serde_json::json!({"kind": "Canary", "metadata": {"name": "x", "namespace": "t"},
                    "spec": {"targetRef": {"name": "x"}}, "status": {"canaryWeight": 5}}),
                "status.phase",
            ),
        ] {
            let err = decode(json).expect_err("skipped");
            assert_eq!(err.to_string(), format!("Canary object has no {field}"));
            assert_eq!(err.metric_label(), "missing_field");
        }
    }
}
