//! Setbacks Flux recovers from on its own: waits before an attempt, retried Helm releases,
//! remediations, cancelled health checks.

use super::fixtures::*;

fn no_story(out: &[Output]) -> bool {
    !out.iter().any(|o| matches!(o, Output::Story(_)))
}

/// The engine's clock moves to `at`: promotion `id` diverged at `stage` for `reason`, its
/// message naming `names`.
fn assert_diverged(r: &mut Run, at: i64, id: &str, stage: Stage, reason: &str, names: &str) {
    let out = r.engine.tick(t(at));
    r.out.extend(out);
    let s = r.story(id);
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!((d.stage, d.reason.as_str()), (stage, reason));
    assert!(d.message.contains(names), "{}", d.message);
}

/// Kustomization `app`, at the previous commit, waits for `infra` before it attempts the
/// source's newest revision (kustomize-controller writes no attempt then).
fn waiting_for_infra(at: i64) -> ReconcilerObs {
    let old = "main@sha1:0000000000000000000000000000000000000000";
    ReconcilerObs {
        last_attempted: Some(old.into()),
        last_applied: Some(old.into()),
        conditions: vec![cond(
            "Ready",
            CondStatus::False,
            "DependencyNotReady",
            "dependency 'flux-system/infra' is not ready",
            at,
        )],
        ..ks("app")
    }
}

/// `app` depends on a Kustomization that is not ready for longer than `app`'s own reconcile
/// window (10 s timeout: 80 s): kustomize-controller waits (`DependencyNotReady`, requeued every
/// 30 s) before it records the attempt. The wait is evidence and does not count against the
/// reconcile: the promotion succeeds, and the span says how long it waited and for what.
#[test]
fn a_wait_for_a_dependency_is_not_the_reconciles_time() {
    let mut r = Run::new();
    let old = "main@sha1:0000000000000000000000000000000000000000";
    let rev = format!("main@sha1:{SHA}");
    let timed = |o: ReconcilerObs| ReconcilerObs {
        timeout: Some(SignedDuration::from_secs(10)),
        retry_interval: Some(SignedDuration::from_secs(10)),
        ..o
    };
    let waiting = |at| timed(waiting_for_infra(at));
    r.feed(0, EventBody::Reconciler(timed(ks_ready("app", old, 0))))
        .feed(1, EventBody::Promotion(report("P-w", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(waiting(4)))
        .feed(34, EventBody::Reconciler(waiting(34)));
    let out = r.engine.tick(t(150));
    assert!(
        no_story(&out),
        "a wait past the reconcile window is no verdict"
    );
    r.out.extend(out);
    let mut attempt = timed(ks_progressing("app", &rev, 154));
    attempt.conditions.push(cond(
        "Reconciling",
        CondStatus::True,
        "Progressing",
        "Running health checks",
        154,
    ));
    r.feed(154, EventBody::Reconciler(attempt))
        .feed(
            160,
            EventBody::Reconciler(timed(ks_ready("app", &rev, 160))),
        )
        .finish();
    assert_eq!(r.story("P-w").outcome, Outcome::Succeeded);
    let span = r.span("P-w", "reconcile");
    let waited = match span.attributes.get(attr::DELIVERY_RECONCILE_WAITED_SECONDS) {
        Some(AttrValue::Int(s)) => *s,
        other => panic!("no wait recorded: {other:?}"),
    };
    assert_eq!(waited, 151, "from the fetch (3 s) to the attempt (154 s)");
    assert!(span
        .attributes
        .get_str(attr::DELIVERY_RECONCILE_WAITED_FOR)
        .is_some_and(|w| w.contains("DependencyNotReady")));
}

/// A Kustomization waiting for a dependency whose own reconcile failed will never attempt: it
/// ends with that failure, and the promotion diverges where the dependency failed.
#[test]
fn a_wait_ends_where_its_dependency_failed() {
    let mut r = Run::new();
    let old = "main@sha1:0000000000000000000000000000000000000000";
    let rev = format!("main@sha1:{SHA}");
    let waiting = waiting_for_infra(5);
    let msg = "Deployment/infra/db dry-run failed: field is immutable";
    r.feed(0, EventBody::Reconciler(ks_ready("app", old, 0)))
        .feed(0, EventBody::Reconciler(ks_ready("infra", old, 0)))
        .feed(1, EventBody::Promotion(report("P-d", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("infra", &rev, 4)))
        .feed(5, EventBody::Reconciler(waiting))
        .feed(
            8,
            EventBody::Reconciler(ks_failed("infra", &rev, "ReconciliationFailed", msg, 8)),
        );
    let out = r.engine.tick(t(60));
    r.out.extend(out);
    let s = r.story("P-d");
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(
        (d.stage, d.reason.as_str()),
        (Stage::Apply, "ReconciliationFailed")
    );
    let app = r
        .spans_of("P-d")
        .into_iter()
        .find(|s| {
            s.name == "reconcile" && s.attributes.get_str(attr::FLUX_OBJECT_NAME) == Some("app")
        })
        .expect("app's reconcile");
    assert!(app.is_error());
}

fn helm(conds: Vec<Condition>) -> ReconcilerObs {
    ReconcilerObs {
        object: ObjectRef::new(Kind::HelmRelease, "podinfo", "podinfo"),
        uid: "uid-hr".into(),
        last_attempted: Some(format!("6.7.0+{}", &DIG[..12])),
        last_attempted_digest: Some(format!("sha256:{DIG}")),
        conditions: conds,
        ..ks("x")
    }
}

fn helm_run(r: &mut Run) {
    let rev = format!("6.7.0@sha256:{DIG}");
    r.feed(1, EventBody::Promotion(oci_report("rel-h", DIG)))
        .feed(
            3,
            EventBody::Source(source(Kind::OCIRepository, "chart", &rev, 3)),
        )
        .feed(
            5,
            EventBody::Reconciler(helm(vec![cond(
                "Ready",
                CondStatus::Unknown,
                "Progressing",
                "Running 'upgrade' action",
                5,
            )])),
        );
}

const WAITED: &str = "Helm upgrade failed for release podinfo/podinfo with chart podinfo@6.7.0: failed early due to stalled resources: [Deployment/podinfo/podinfo status: 'Failed']";

fn upgrade_failed(at: i64) -> Vec<Condition> {
    vec![
        cond(
            "Reconciling",
            CondStatus::True,
            "ProgressingWithRetry",
            WAITED,
            at,
        ),
        cond("Ready", CondStatus::False, "UpgradeFailed", WAITED, at),
        cond("Released", CondStatus::False, "UpgradeFailed", WAITED, at),
    ]
}

/// By 70 s `rel-h` diverged at rollout, where its upgrade's wait failed.
fn upgrade_diverged(r: &mut Run, names: &str) {
    assert_diverged(r, 70, "rel-h", Stage::Rollout, "UpgradeFailed", names);
}

/// An upgrade helm-controller retries (no `Stalled` yet) that passes on the retry: the failed
/// attempt is no verdict.
#[test]
fn a_helm_upgrade_that_passes_on_retry_succeeds() {
    let mut r = Run::new();
    helm_run(&mut r);
    r.feed(30, EventBody::Reconciler(helm(upgrade_failed(30))));
    let out = r.engine.tick(t(80));
    assert!(no_story(&out), "a retried upgrade is not the verdict");
    r.out.extend(out);
    r.feed(
        90,
        EventBody::Reconciler(helm(vec![
            cond(
                "Ready",
                CondStatus::True,
                "UpgradeSucceeded",
                "Helm upgrade succeeded",
                90,
            ),
            cond(
                "Released",
                CondStatus::True,
                "UpgradeSucceeded",
                "Helm upgrade succeeded",
                90,
            ),
        ])),
    )
    .finish();
    assert_eq!(r.story("rel-h").outcome, Outcome::Succeeded);
}

/// A rollback remediation that completed is the verdict at once: the promotion diverges where
/// the upgrade failed (its wait found the Deployment stalled: the rollout), the rollback named.
#[test]
fn a_completed_rollback_diverges_where_the_upgrade_failed() {
    let mut r = Run::new();
    helm_run(&mut r);
    let rolled_back =
        "Helm rollback to previous release podinfo/podinfo.v1 with chart podinfo@6.6.0 succeeded";
    r.feed(30, EventBody::Reconciler(helm(upgrade_failed(30))))
        .feed(
            35,
            EventBody::Reconciler(helm(vec![
                cond(
                    "Reconciling",
                    CondStatus::True,
                    "ProgressingWithRetry",
                    rolled_back,
                    35,
                ),
                cond(
                    "Ready",
                    CondStatus::False,
                    "RollbackSucceeded",
                    rolled_back,
                    35,
                ),
                cond("Released", CondStatus::False, "UpgradeFailed", WAITED, 30),
                cond(
                    "Remediated",
                    CondStatus::True,
                    "RollbackSucceeded",
                    rolled_back,
                    35,
                ),
            ])),
        );
    upgrade_diverged(&mut r, "remediated: Helm rollback");
}

/// `Stalled=True` (`RetriesExceeded`) is the final word: the verdict at once.
#[test]
fn a_stalled_helm_release_fails_at_once() {
    let mut r = Run::new();
    helm_run(&mut r);
    let mut conds = upgrade_failed(30);
    conds[0] = cond(
        "Stalled",
        CondStatus::True,
        "RetriesExceeded",
        "Failed to upgrade after 1 attempt(s)",
        30,
    );
    r.feed(30, EventBody::Reconciler(helm(conds)));
    upgrade_diverged(&mut r, "stalled");
}

/// With `CancelHealthCheckOnNewRevision`, a newer revision cancels the health checks of the
/// older one (`HealthCheckCanceled`): the older promotion is superseded, not failed.
#[test]
fn a_cancelled_health_check_is_superseded_not_failed() {
    let mut r = Run::new();
    const NEWER: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b";
    let rev = format!("main@sha1:{SHA}");
    let newer = format!("main@sha1:{NEWER}");
    let canceled = ks_failed(
        "apps",
        &rev,
        "HealthCheckCanceled",
        "New reconciliation triggered by GitRepository/flux-system/app",
        20,
    );
    r.feed(1, EventBody::Promotion(report("P-old", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(15, EventBody::Promotion(report("P-new", NEWER)))
        .feed(19, EventBody::Source(git(NEWER, 19)))
        .feed(20, EventBody::Reconciler(canceled))
        .feed(
            21,
            EventBody::Reconciler(ks_progressing("apps", &newer, 21)),
        )
        .feed(30, EventBody::Reconciler(ks_ready("apps", &newer, 30)))
        .finish();
    assert_eq!(r.story("P-old").outcome, Outcome::Superseded);
    assert_eq!(r.story("P-new").outcome, Outcome::Succeeded);
}

/// The OCIRepository the report names is suspended: source-controller fetches nothing and
/// writes nothing, so the promotion diverges at source at once, reason `Suspended`, naming it,
/// not `RevisionNotFound` after the source deadline.
#[test]
fn a_suspended_source_diverges_at_once_naming_it() {
    let mut r = Run::new();
    let old = format!("prod@sha256:{}", "0".repeat(64));
    let suspended = SourceObs {
        suspended: true,
        ..source(Kind::OCIRepository, "manifests", &old, 0)
    };
    r.feed(0, EventBody::Source(suspended))
        .feed(1, EventBody::Promotion(oci_report("rel-s", DIG)));
    assert_diverged(
        &mut r,
        40,
        "rel-s",
        Stage::Source,
        "Suspended",
        "OCIRepository/flux-system/manifests",
    );
}

/// Only a HelmChart building by chart version (the default `reconcileStrategy`) follows the
/// GitRepository, and the commit did not bump the chart's version: source-controller builds no
/// new chart, helm-controller has nothing to upgrade. The promotion changed nothing; it is not
/// `ReconcileNotStarted` after the deadline.
#[test]
fn a_commit_that_bumps_no_chart_version_changes_nothing() {
    let mut r = Run::new();
    let chart = SourceObs {
        source_ref: Some(Box::new(ObjectRef::new(
            Kind::GitRepository,
            "flux-system",
            "app",
        ))),
        ..source(Kind::HelmChart, "flux-system-web", "0.1.0", 0)
    };
    r.feed(0, EventBody::Source(chart.clone()))
        .feed(1, EventBody::Promotion(report("P-c", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)));
    let out = r.engine.tick(t(70));
    r.out.extend(out);
    let s = r.story("P-c");
    assert_eq!(s.outcome, Outcome::NoChange, "{s:?}");
    // With `reconcileStrategy: Revision` every commit builds a chart: the promotion waits for it.
    let mut r = Run::new();
    let by_revision = SourceObs {
        by_revision: true,
        ..chart
    };
    r.feed(0, EventBody::Source(by_revision))
        .feed(1, EventBody::Promotion(report("P-c", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)));
    let out = r.engine.tick(t(70));
    assert!(no_story(&out));
}
