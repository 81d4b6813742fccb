//! Verdicts: superseding, deadlines, stories in progress.

use super::fixtures::*;

#[test]
fn newer_promotion_for_the_same_target_supersedes_and_links() {
    let mut r = Run::new();
    r.feed(1, EventBody::Promotion(report("P-old", SHA2)))
        .feed(3, EventBody::Promotion(report("P-new", SHA)))
        .feed(5, EventBody::Source(git(SHA, 5)))
        .feed(
            6,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 6)),
        )
        .finish();
    let old = r.story("P-old");
    assert_eq!(old.outcome, Outcome::Superseded);
    assert_eq!(old.superseded_by.as_deref(), Some("P-new"));
    let root = r.span("P-old", "promotion");
    let new_root = r.span("P-new", "promotion");
    assert_eq!(root.end, t(3));
    assert_eq!(root.links.len(), 1);
    assert_eq!(
        (root.links[0].trace_id, root.links[0].span_id),
        (new_root.trace_id, new_root.span_id)
    );
    assert_eq!(r.story("P-new").outcome, Outcome::Succeeded);
}

#[test]
fn a_promotion_named_only_by_an_event_that_nothing_delivers_times_out_at_its_deadline() {
    let mut r = Run::new();
    r.feed(
        6,
        EventBody::FluxEvent(FluxEventObs {
            object: ObjectRef::new(Kind::Kustomization, "flux-system", "apps"),
            error: false,
            time: t(6),
            reason: "Progressing".into(),
            message: "Deployment/apps/podinfo configured".into(),
            revision: Some(format!("main@sha1:{SHA}")),
            promotion_id: Some("P-lost".into()),
            controller: "kustomize-controller".into(),
        }),
    )
    .finish();
    let s = r.story("P-lost");
    assert_eq!(s.outcome, Outcome::TimedOut);
    assert_eq!(s.divergence.as_ref().map(|d| d.stage), Some(Stage::Source));
    assert_eq!(
        r.span("P-lost", "promotion").end,
        t(6) + SignedDuration::from_mins(60)
    );
}

#[test]
fn an_open_promotion_has_a_story_in_progress() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(1, EventBody::Promotion(report("P-o", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)));
    let s = r.engine.progress("P-o").expect("open");
    assert_eq!(s.outcome, Outcome::InProgress);
    let stages: Vec<(Stage, &str)> = s.stages.iter().map(|x| (x.stage, x.outcome)).collect();
    assert_eq!(
        stages,
        [
            (Stage::Source, "succeeded"),
            (Stage::Reconcile, "open"),
            (Stage::Apply, "open")
        ]
    );
    assert!(r.engine.progress("nope").is_none());
    r.finish();
    assert!(
        r.engine.progress("P-o").is_none(),
        "finished promotions are not in progress"
    );
}

#[test]
fn a_newer_promotion_does_not_hide_that_the_older_one_failed() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA2}");
    r.feed(1, EventBody::Promotion(report("P-old", SHA2)))
        .feed(3, EventBody::Source(git(SHA2, 3)))
        .feed(4, EventBody::Reconciler(ks_progressing("apps", &rev, 4)))
        .feed(
            6,
            EventBody::Reconciler(ks_failed(
                "apps",
                &rev,
                "BuildFailed",
                "kustomize build failed",
                6,
            )),
        )
        // Reported inside P-old's settle period.
        .feed(20, EventBody::Promotion(report("P-new", SHA)))
        .finish();
    let old = r.story("P-old");
    assert_eq!(old.outcome, Outcome::Failed);
    assert_eq!(
        old.divergence.as_ref().map(|d| d.stage),
        Some(Stage::Reconcile)
    );
    assert!(old.superseded_by.is_none());
}

#[test]
fn an_annotation_left_by_a_promotion_long_finished_reopens_nothing() {
    // An agent that starts (or restarts) sees the OCI artifact of a promotion from yesterday.
    let mut r = Run::new();
    let rev = format!("prod@sha256:{DIG}");
    let mut oci = source(Kind::OCIRepository, "manifests", &rev, 0);
    oci.artifact_promotion_id = Some("rel-old".into());
    let mut k = ks_ready("apps", &rev, 10);
    k.marks.promotion_id = Some("rel-old".into());
    r.feed(86_400, EventBody::Source(oci))
        .feed(86_400, EventBody::Reconciler(k))
        .finish();
    assert!(
        r.stories().is_empty(),
        "{:?}",
        r.stories()
            .iter()
            .map(|s| &s.promotion_id)
            .collect::<Vec<_>>()
    );
}
