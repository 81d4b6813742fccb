//! Reconcile and apply: joins, failures, no-change.

use super::fixtures::*;
use crate::model::HistoryEntry;

#[test]
fn helmrelease_joins_by_chart_digest_suffix_and_upgrade_failure_diverges_at_apply() {
    let mut r = Run::new();
    let rev = format!("6.7.0@sha256:{DIG}");
    let chart = format!("6.7.0+{}", &DIG[..12]);
    let hr = |conds: Vec<Condition>| ReconcilerObs {
        object: ObjectRef::new(Kind::HelmRelease, "podinfo", "podinfo"),
        uid: "uid-hr".into(),
        last_attempted: Some(chart.clone()),
        last_attempted_digest: Some(format!("sha256:{DIG}")),
        conditions: conds,
        ..ks("x")
    };
    let msg = "Helm upgrade failed for release podinfo/podinfo with chart podinfo@6.7.0: cannot patch \"podinfo\"";
    r.feed(1, EventBody::Promotion(oci_report("rel-9", DIG)))
        .feed(
            3,
            EventBody::Source(source(Kind::OCIRepository, "chart", &rev, 3)),
        )
        .feed(
            5,
            EventBody::Reconciler(hr(vec![cond(
                "Ready",
                CondStatus::Unknown,
                "Progressing",
                "Running 'upgrade' action",
                5,
            )])),
        )
        .feed(
            7,
            EventBody::Reconciler(hr(vec![
                cond("Ready", CondStatus::False, "UpgradeFailed", msg, 7),
                cond("Released", CondStatus::False, "UpgradeFailed", msg, 7),
            ])),
        )
        .finish();
    let s = r.story("rel-9");
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(d.stage, Stage::Apply);
    assert_eq!(d.reason, "UpgradeFailed");
    assert_eq!(r.span("rel-9", "reconcile").service, "helm-controller");
    assert!(r.span("rel-9", "apply").is_error());
    assert_eq!(
        r.span("rel-9", "promotion")
            .attributes
            .get_str(attr::DELIVERY_DIVERGENCE_STAGE),
        Some("apply")
    );
}

#[test]
fn build_failure_diverges_at_reconcile_without_an_apply_span() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(1, EventBody::Promotion(report("P-b", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(
            5,
            EventBody::Reconciler(ks_failed(
                "apps",
                &rev,
                "BuildFailed",
                "kustomize build failed: x",
                5,
            )),
        )
        .finish();
    let s = r.story("P-b");
    assert_eq!(s.outcome, Outcome::Failed);
    assert_eq!(
        s.divergence.as_ref().map(|d| d.stage),
        Some(Stage::Reconcile)
    );
    assert!(r.spans_of("P-b").iter().all(|s| s.name != "apply"));
    assert_eq!(
        r.span("P-b", "reconcile")
            .attributes
            .get_str(attr::ERROR_TYPE),
        Some("BuildFailed")
    );
}

#[test]
fn health_check_failure_diverges_at_rollout_with_the_pod_event_as_cause() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Deployment(deploy("podinfo", 3)))
        .feed(1, EventBody::Promotion(report("P-h", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(5, EventBody::Deployment(rolling("podinfo", 4, 5)))
        .feed(
            8,
            EventBody::KubeEvent(pod_event(
                "podinfo-new-x7k2p",
                "Failed",
                "Error: ErrImagePull",
                8,
            )),
        )
        .feed(
            9,
            EventBody::KubeEvent(pod_event(
                "podinfo-new-x7k2p",
                "Failed",
                "Error: ImagePullBackOff",
                9,
            )),
        )
        .feed(
            100,
            EventBody::Reconciler(ks_failed(
                "apps",
                &rev,
                "HealthCheckFailed",
                "health check failed after 1m35s: [Deployment/apps/podinfo status: 'Failed']",
                100,
            )),
        )
        .feed(120, EventBody::Deployment(stuck("podinfo", 4, 120)))
        .finish();
    let s = r.story("P-h");
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(d.stage, Stage::Rollout);
    assert_eq!(d.reason, "ProgressDeadlineExceeded");
    assert_eq!(d.cause.as_deref(), Some("ImagePullBackOff"));
    assert!(
        d.evidence.iter().any(|e| e.contains("HealthCheckFailed")),
        "{:?}",
        d.evidence
    );
    assert!(
        d.evidence.iter().any(|e| e.contains("ImagePullBackOff")),
        "{:?}",
        d.evidence
    );
    // The reconcile span still carries its error; the apply itself succeeded.
    assert!(r.span("P-h", "reconcile").is_error());
    assert_eq!(r.span("P-h", "apply").status, SpanStatus::Ok);
    let rollout = r.span("P-h", "rollout");
    assert!(rollout.is_error());
    assert!(rollout
        .events
        .iter()
        .any(|e| e.attributes.get_str(attr::K8S_POD_NAME) == Some("podinfo-new-x7k2p")));
}

#[test]
fn every_deployment_the_reconcile_changed_gets_a_rollout() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Deployment(deploy("api", 1)))
        .feed(0, EventBody::Deployment(deploy("worker", 5)))
        .feed(0, EventBody::Deployment(deploy("unrelated", 2)))
        .feed(1, EventBody::Promotion(report("P-m", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(5, EventBody::Deployment(rolling("api", 2, 5)))
        .feed(5, EventBody::Deployment(rolling("worker", 6, 5)))
        .feed(6, EventBody::Reconciler(ks_ready("apps", &rev, 6)))
        .feed(20, EventBody::Deployment(rolled("api", 2, 20)))
        .feed(25, EventBody::Deployment(rolled("worker", 6, 25)))
        .finish();
    let rollouts: Vec<&str> = r
        .spans_of("P-m")
        .iter()
        .filter(|s| s.name == "rollout")
        .filter_map(|s| s.attributes.get_str(attr::K8S_DEPLOYMENT_NAME))
        .collect();
    assert_eq!(rollouts, ["api", "worker"]);
    assert_eq!(r.span("P-m", "promotion").end, t(25));
}

#[test]
fn reconcile_deadline_comes_from_spec_timeout() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let mut k = ks_progressing("apps", &rev, 4);
    k.timeout = Some(SignedDuration::from_mins(2));
    k.retry_interval = Some(SignedDuration::from_mins(1));
    r.feed(1, EventBody::Promotion(report("P-r", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(k))
        .finish();
    let s = r.story("P-r");
    assert_eq!(s.outcome, Outcome::TimedOut);
    assert_eq!(
        s.divergence.as_ref().map(|d| d.stage),
        Some(Stage::Reconcile)
    );
    // Counted from the reconcile's start (when the source stored the revision): the first
    // attempt and one retry, as kustomize-controller runs them (2 × 2m + 1m + 10 s).
    assert_eq!(
        r.span("P-r", "reconcile").end,
        t(3) + SignedDuration::from_secs(5 * 60 + 10)
    );
}

#[test]
fn a_revision_already_applied_is_no_change() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Source(git(SHA, -300)))
        .feed(0, EventBody::Reconciler(ks_ready("apps", &rev, -200)))
        .feed(0, EventBody::Deployment(deploy("podinfo", 3)))
        .feed(5, EventBody::Promotion(report("P-same", SHA)))
        .finish();
    let s = r.story("P-same");
    assert_eq!(s.outcome, Outcome::NoChange);
    assert!(s.divergence.is_none());
    assert_eq!(
        r.span("P-same", "reconcile")
            .attributes
            .get_str(attr::CICD_PIPELINE_TASK_RUN_RESULT),
        Some("skip")
    );
    assert!(r.spans_of("P-same").iter().all(|s| s.name != "rollout"));
}

#[test]
fn a_revision_already_applied_claims_no_rollout_in_progress() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(0, EventBody::Source(git(SHA, -300)))
        .feed(0, EventBody::Reconciler(ks_ready("apps", &rev, -200)))
        .feed(0, EventBody::Deployment(deploy("podinfo", 3)))
        // Someone restarts the Deployment by hand...
        .feed(2, EventBody::Deployment(rolling("podinfo", 4, 2)))
        // ...while a promotion of the revision already applied arrives.
        .feed(5, EventBody::Promotion(report("P-same", SHA)))
        .feed(20, EventBody::Deployment(rolled("podinfo", 4, 20)))
        .finish();
    assert_eq!(r.story("P-same").outcome, Outcome::NoChange);
    assert!(r.spans_of("P-same").iter().all(|s| s.name != "rollout"));
    assert!(
        r.stories()
            .iter()
            .any(|s| s.traceability == Traceability::Missing),
        "the restart is its own trace"
    );
}

/// A Kustomization with `timeout: 10s` (30 s for kustomize-controller) and `retryInterval: 10s`
/// whose health check failed: evidence while the controller retries, the verdict once the first
/// attempt and one retry (2 × 30 s + 10 s + 10 s of polling) have passed still failing.
#[test]
fn a_health_check_still_failing_after_the_retry_window_fails_the_reconcile() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let timed = |o: ReconcilerObs| ReconcilerObs {
        timeout: Some(SignedDuration::from_secs(10)),
        retry_interval: Some(SignedDuration::from_secs(10)),
        ..o
    };
    let msg = "health check failed after 30.01s: timeout waiting for: [Deployment/apps/web status: 'InProgress']";
    r.feed(1, EventBody::Promotion(report("P-r", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(
            4,
            EventBody::Reconciler(timed(ks_progressing("apps", &rev, 4))),
        )
        .feed(
            34,
            EventBody::Reconciler(timed(ks_failed("apps", &rev, "HealthCheckFailed", msg, 34))),
        );
    // Retrying: no verdict yet, well after the failed attempt and the settle period.
    let out = r.engine.tick(t(70));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Story(_))),
        "a retried health check is not the verdict"
    );
    r.out.extend(out);
    r.out.extend(r.engine.tick(t(90)));
    r.finish();
    let s = r.story("P-r");
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(d.reason, "HealthCheckFailed");
    assert_eq!(d.stage, Stage::Rollout);
    assert!(d.message.contains("still failing"), "{}", d.message);
}

/// Every Kustomization following the source is suspended: the controller writes nothing, so no
/// reconcile would ever start. The promotion diverges at reconcile as soon as the source stored
/// the revision, with reason `Suspended` naming the object, not `ReconcileNotStarted` after the
/// deadline.
#[test]
fn a_suspended_reconciler_diverges_at_once_naming_it() {
    let mut r = Run::new();
    let old = "main@sha1:0000000000000000000000000000000000000000";
    let suspended = ReconcilerObs {
        suspended: true,
        ..ks_ready("apps", old, 0)
    };
    r.feed(0, EventBody::Reconciler(suspended))
        .feed(1, EventBody::Promotion(report("P-s", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)));
    let out = r.engine.tick(t(40));
    r.out.extend(out);
    let s = r.story("P-s");
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(
        (d.stage, d.reason.as_str()),
        (Stage::Reconcile, "Suspended")
    );
    assert!(
        d.message.contains("Kustomization/flux-system/apps"),
        "{}",
        d.message
    );
}

/// A report of a revision the Kustomization applied five minutes before it, after a periodic
/// run moved its `Ready` transition past the report: the apply is dated by `status.history`
/// (when the revision was first reconciled), not by the periodic run.
#[test]
fn an_already_applied_revision_is_dated_by_the_history_not_a_periodic_run() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let periodic = ReconcilerObs {
        history: vec![HistoryEntry {
            revision: rev.clone(),
            first_reconciled: Some(t(-300)),
            last_reconciled: Some(t(30)),
            last_duration: None,
            last_status: "ReconciliationSucceeded".into(),
        }],
        ..ks_ready("apps", &rev, 30)
    };
    r.feed(-310, EventBody::Source(git(SHA, -310)))
        .feed(31, EventBody::Reconciler(periodic))
        .feed(40, EventBody::Promotion(report("P-late", SHA)))
        .finish();
    let reconcile = r.span("P-late", "reconcile");
    assert_eq!((reconcile.start, reconcile.end), (t(-300), t(-300)));
}
