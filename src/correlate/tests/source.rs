//! Trigger and source stages.

use super::fixtures::*;

/// A reconcile request no Receiver explains (`flux reconcile`, an annotation): a span from the
/// request to its handling, seen as the controller that handled it.
#[test]
fn a_reconcile_request_is_a_span_from_request_to_handling() {
    let mut r = Run::new();
    let value = "2026-11-26 10:00:05.123456789 +0000 UTC m=+3605.24";
    let mut requested = git(SHA2, -50);
    requested.requested_at = Some(value.into());
    let mut handled = git(SHA, 7);
    handled.requested_at = Some(value.into());
    handled.last_handled = Some(value.into());
    r.feed(0, EventBody::Source(git(SHA2, -50)))
        .feed(1, EventBody::Promotion(report("P-t", SHA)))
        .feed(5, EventBody::Source(requested))
        .feed(7, EventBody::Source(handled))
        .feed(
            9,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 9)),
        )
        .finish();
    // From the time the request names to the status that shows it handled.
    let trigger = r.span("P-t", "trigger");
    let named: Timestamp = "2026-11-26T10:00:05.123456789Z".parse().expect("a time");
    assert_eq!((trigger.start, trigger.end), (named, t(7)));
    assert_eq!(trigger.service, "source-controller");
    assert_eq!(
        trigger
            .attributes
            .get_str(attr::DELIVERY_TRIGGER_REQUESTED_AT),
        Some(value)
    );
    assert_eq!(
        r.span("P-t", "source.fetch").start,
        named,
        "the fetch starts with the request that asked for it"
    );
}

#[test]
fn unhandled_trigger_times_out() {
    let mut r = Run::new();
    let mut requested = git(SHA2, -50);
    requested.requested_at = Some("2026-11-26T10:00:05Z".into());
    r.feed(0, EventBody::Source(git(SHA2, -50)))
        .feed(1, EventBody::Promotion(report("P-tt", SHA)))
        .feed(5, EventBody::Source(requested))
        .feed(6, EventBody::Source(git(SHA, 6)))
        .feed(
            8,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 8)),
        )
        .finish();
    let s = r.story("P-tt");
    assert_eq!(s.outcome, Outcome::TimedOut);
    assert_eq!(s.divergence.as_ref().map(|d| d.stage), Some(Stage::Trigger));
    assert_eq!(
        r.span("P-tt", "trigger").end,
        t(5) + SignedDuration::from_mins(5)
    );
}

#[test]
fn a_revision_never_seen_times_out_at_source_after_the_configured_deadline() {
    let mut cfg = EngineConfig::default();
    cfg.deadlines.source = SignedDuration::from_mins(2);
    let mut r = Run::with(cfg);
    r.feed(1, EventBody::Promotion(report("P-s", SHA)));
    r.out.extend(r.engine.tick(t(100)));
    assert!(r.stories().is_empty(), "not before the deadline");
    r.out.extend(r.engine.tick(t(121)));
    assert!(
        r.stories().is_empty(),
        "the verdict waits for the settle period"
    );
    r.out.extend(r.engine.tick(t(151)));
    let s = r.story("P-s");
    assert_eq!(s.outcome, Outcome::TimedOut);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(
        (d.stage, d.reason.as_str()),
        (Stage::Source, "RevisionNotFound")
    );
    assert_eq!(r.span("P-s", "source.fetch").end, t(121));
}

#[test]
fn failing_oci_source_is_the_promotions_source_failure() {
    let mut r = Run::new();
    let mut oci = source(
        Kind::OCIRepository,
        "manifests",
        &format!("prod@sha256:{}", "1".repeat(64)),
        -100,
    );
    oci.conditions = vec![cond(
        "Ready",
        CondStatus::False,
        "OCIArtifactPullFailed",
        "failed to pull artifact: unauthorized",
        3,
    )];
    r.feed(1, EventBody::Promotion(oci_report("rel-f", DIG)))
        .feed(3, EventBody::Source(oci))
        .finish();
    let d = r.story("rel-f").divergence.clone().expect("diverged");
    assert_eq!(
        (d.stage, d.reason.as_str()),
        (Stage::Source, "OCIArtifactPullFailed")
    );
    assert_eq!(r.story("rel-f").outcome, Outcome::Failed);
}

#[test]
fn no_reconcile_after_the_source_times_out_at_reconcile() {
    let mut r = Run::new();
    r.feed(1, EventBody::Promotion(report("P-n", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .finish();
    let s = r.story("P-n");
    assert_eq!(
        s.divergence.as_ref().map(|d| (d.stage, d.reason.as_str())),
        Some((Stage::Reconcile, "ReconcileNotStarted"))
    );
    assert_eq!(
        r.span("P-n", "reconcile").end,
        t(3) + SignedDuration::from_mins(10)
    );
}

/// `flux reconcile kustomization apps --with-source` requests the source, then the
/// Kustomization: one trigger span each, both in the trace, the reconcile starting at its own
/// request.
#[test]
fn a_request_with_source_gives_two_trigger_spans() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let source_request = "2026-11-26T10:00:05Z";
    let ks_request = "2026-11-26T10:00:08Z";
    let mut requested = git(SHA2, -50);
    requested.requested_at = Some(source_request.into());
    let mut fetched = git(SHA, 7);
    fetched.requested_at = Some(source_request.into());
    fetched.last_handled = Some(source_request.into());
    let mut ks_requested = ks_ready("apps", &format!("main@sha1:{SHA2}"), -50);
    ks_requested.requested_at = Some(ks_request.into());
    let mut ks_done = ks_ready("apps", &rev, 12);
    ks_done.requested_at = Some(ks_request.into());
    ks_done.last_handled = Some(ks_request.into());
    r.feed(0, EventBody::Source(git(SHA2, -50)))
        .feed(
            0,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA2}"), -50)),
        )
        .feed(1, EventBody::Promotion(report("P-w", SHA)))
        .feed(5, EventBody::Source(requested))
        .feed(7, EventBody::Source(fetched))
        .feed(8, EventBody::Reconciler(ks_requested))
        .feed(12, EventBody::Reconciler(ks_done))
        .finish();
    let triggers: Vec<_> = r
        .spans_of("P-w")
        .into_iter()
        .filter(|s| s.name == "trigger")
        .map(|s| (s.service, s.start, s.end))
        .collect();
    assert_eq!(
        triggers,
        [
            ("source-controller", t(5), t(7)),
            ("kustomize-controller", t(8), t(12)),
        ]
    );
    assert_eq!(r.span("P-w", "reconcile").start, t(8));
    assert_eq!(r.story("P-w").outcome, Outcome::Succeeded);
}
