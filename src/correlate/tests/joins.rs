//! How reports, annotations and revisions join objects to promotions.

use super::fixtures::*;

#[test]
fn report_and_git_revision_join_source_reconcile_and_rollout() {
    let mut r = Run::new();
    git_promotion(&mut r);
    r.finish();
    let s = r.story("P-1");
    assert_eq!(s.outcome, Outcome::Succeeded);
    assert!(s.divergence.is_none());
    let names: Vec<&str> = r.spans_of("P-1").iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["source.fetch", "reconcile", "apply", "rollout", "promotion"]
    );
    let root = r.span("P-1", "promotion");
    let reconcile = r.span("P-1", "reconcile");
    assert_eq!(
        r.span("P-1", "source.fetch").parent_span_id,
        Some(root.span_id)
    );
    assert_eq!(reconcile.parent_span_id, Some(root.span_id));
    assert_eq!(
        r.span("P-1", "apply").parent_span_id,
        Some(reconcile.span_id)
    );
    assert_eq!(
        r.span("P-1", "rollout").parent_span_id,
        Some(reconcile.span_id)
    );
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.start, t(1));
    assert_eq!(root.end, t(30));
    assert_eq!(root.status, SpanStatus::Ok);
    assert_eq!(
        root.attributes.get_str(attr::VCS_REF_HEAD_REVISION),
        Some(SHA)
    );
    assert_eq!(
        root.attributes.get_str(attr::DELIVERY_TRACEABILITY),
        Some("reported")
    );
    assert_eq!(root.trace_id, crate::trace::trace_id_for("P-1"));
    let rollout = r.span("P-1", "rollout");
    assert_eq!(rollout.start, t(7));
    assert_eq!(
        rollout.attributes.get_str(attr::K8S_REPLICASET_NAME),
        Some("podinfo-new")
    );
    assert_eq!(
        rollout.attributes.get_str(attr::CONTAINER_IMAGE_NAME),
        Some("ghcr.io/acme/podinfo")
    );
    // Credentials in the repository URL never reach a span.
    let url = r
        .span("P-1", "source.fetch")
        .attributes
        .get_str(attr::VCS_REPOSITORY_URL_FULL);
    assert_eq!(url, Some("https://github.com/acme/app"));
}

#[test]
fn the_same_observation_twice_and_a_full_relist_add_nothing() {
    let mut once = Run::new();
    git_promotion(&mut once);
    once.finish();

    let mut twice = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let events = vec![
        (
            0,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA2}"), -100)),
        ),
        (0, EventBody::Deployment(deploy("podinfo", 3))),
        (1, EventBody::Promotion(report("P-1", SHA))),
        (5, EventBody::Source(git(SHA, 5))),
        (6, EventBody::Reconciler(ks_progressing("apps", &rev, 6))),
        (7, EventBody::Deployment(rolling("podinfo", 4, 7))),
        (8, EventBody::Reconciler(ks_ready("apps", &rev, 8))),
        (30, EventBody::Deployment(rolled("podinfo", 4, 30))),
    ];
    for (at, e) in &events {
        twice.feed(*at, e.clone());
        twice.feed(*at, e.clone());
    }
    // A watch restart re-lists every object in its current state, during and after.
    twice.feed(31, EventBody::Promotion(report("P-1", SHA)));
    twice.feed(31, EventBody::Source(git(SHA, 5)));
    twice.feed(31, EventBody::Reconciler(ks_ready("apps", &rev, 8)));
    twice.feed(31, EventBody::Deployment(rolled("podinfo", 4, 30)));
    twice.finish();
    twice.feed(4000, EventBody::Promotion(report("P-1", SHA)));
    twice.feed(4000, EventBody::Source(git(SHA, 5)));
    twice.feed(4000, EventBody::Reconciler(ks_ready("apps", &rev, 8)));
    twice.feed(4000, EventBody::Deployment(rolled("podinfo", 4, 30)));
    twice.finish();
    assert_eq!(twice.stories().len(), 1);
    assert_eq!(
        once.spans(),
        twice.spans(),
        "same spans, same ids, no copies"
    );
}

#[test]
fn oci_artifact_annotation_names_the_promotion_and_resolves_the_floating_tag() {
    let mut r = Run::new();
    let rev = format!("prod@sha256:{DIG}");
    let mut oci = source(Kind::OCIRepository, "manifests", &rev, 4);
    oci.artifact_promotion_id = Some("rel-7".into());
    oci.origin_revision = Some(format!("main@sha1:{SHA}"));
    let mut k = ks_ready("apps", &rev, 9);
    k.source_ref = Some(ObjectRef::new(
        Kind::OCIRepository,
        "flux-system",
        "manifests",
    ));
    r.feed(4, EventBody::Source(oci))
        .feed(9, EventBody::Reconciler(k))
        .finish();
    let s = r.story("rel-7");
    assert_eq!(s.traceability, Traceability::Annotated);
    assert_eq!(s.outcome, Outcome::Succeeded);
    let digest = format!("sha256:{DIG}");
    for name in ["promotion", "source.fetch", "reconcile"] {
        assert_eq!(
            r.span("rel-7", name)
                .attributes
                .get_str(attr::OCI_MANIFEST_DIGEST),
            Some(digest.as_str()),
            "{name}"
        );
    }
    assert_eq!(
        r.span("rel-7", "source.fetch")
            .attributes
            .get_str(attr::DELIVERY_ARTIFACT_TAG),
        Some("prod")
    );
    assert_eq!(
        r.span("rel-7", "promotion")
            .attributes
            .get_str(attr::VCS_REF_HEAD_REVISION),
        Some(SHA)
    );
}

#[test]
fn oci_report_by_digest_joins_tag_at_digest_and_bare_digest_revisions() {
    for rev in [format!("prod@sha256:{DIG}"), format!("sha256:{DIG}")] {
        let mut r = Run::new();
        r.feed(1, EventBody::Promotion(oci_report("rel-8", DIG)))
            .feed(
                3,
                EventBody::Source(source(Kind::OCIRepository, "manifests", &rev, 3)),
            )
            .feed(4, EventBody::Reconciler(ks_ready("apps", &rev, 4)))
            .finish();
        assert_eq!(r.story("rel-8").outcome, Outcome::Succeeded, "{rev}");
        assert_eq!(
            r.spans_of("rel-8").len(),
            4,
            "{rev}: source, reconcile, apply, root"
        );
    }
}

#[test]
fn annotation_on_a_flux_object_names_the_promotion() {
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    let mut k = ks_ready("apps", &rev, 9);
    k.marks.promotion_id = Some("P-ks".into());
    r.feed(9, EventBody::Reconciler(k)).finish();
    assert_eq!(r.story("P-ks").traceability, Traceability::Annotated);
    assert_eq!(r.span("P-ks", "reconcile").status, SpanStatus::Ok);
}

#[test]
fn annotation_on_a_pod_template_names_the_promotion_of_a_rollout() {
    let mut r = Run::new();
    r.feed(0, EventBody::Deployment(deploy("web", 1)));
    let mut d = rolling("web", 2, 5);
    d.manager = None;
    d.marks.promotion_id = Some("P-pod".into());
    let mut done = rolled("web", 2, 20);
    done.manager = None;
    done.marks.promotion_id = Some("P-pod".into());
    r.feed(5, EventBody::Deployment(d))
        .feed(20, EventBody::Deployment(done))
        .finish();
    let s = r.story("P-pod");
    assert_eq!(s.traceability, Traceability::Annotated);
    assert_eq!(s.outcome, Outcome::Succeeded);
    let root = r.span("P-pod", "promotion");
    assert_eq!(
        r.span("P-pod", "rollout").parent_span_id,
        Some(root.span_id)
    );
    assert!(r
        .stories()
        .iter()
        .all(|s| s.traceability != Traceability::Missing));
}

#[test]
fn flux_event_metadata_names_the_promotion_with_or_without_prefix() {
    // The sources module strips the prefix; both arrive as `promotion_id`.
    let mut r = Run::new();
    let rev = format!("main@sha1:{SHA}");
    r.feed(
        6,
        EventBody::FluxEvent(FluxEventObs {
            object: ObjectRef::new(Kind::Kustomization, "flux-system", "apps"),
            error: false,
            time: t(6),
            reason: "Progressing".into(),
            message: "Deployment/apps/podinfo configured".into(),
            revision: Some(rev.clone()),
            promotion_id: Some("P-ev".into()),
            controller: "kustomize-controller".into(),
        }),
    )
    .feed(7, EventBody::Reconciler(ks_progressing("apps", &rev, 6)))
    .feed(9, EventBody::Reconciler(ks_ready("apps", &rev, 9)))
    .finish();
    let apply = r.span("P-ev", "apply");
    assert_eq!(
        apply.attributes.get(attr::DELIVERY_APPLY_CHANGED),
        Some(&AttrValue::Bool(true))
    );
    assert_eq!(
        apply.attributes.get(attr::DELIVERY_APPLY_CHANGES),
        Some(&AttrValue::StrArray(vec![
            "Deployment/apps/podinfo configured".into()
        ]))
    );
    assert!(r
        .span("P-ev", "reconcile")
        .events
        .iter()
        .any(|e| e.name == "Progressing"));
}

#[test]
fn ci_traceparent_makes_the_root_a_child_of_the_ci_span() {
    let mut r = Run::new();
    let mut rep = report("P-ci", SHA);
    rep.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    r.feed(1, EventBody::Promotion(rep))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(
            4,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 4)),
        )
        .finish();
    let root = r.span("P-ci", "promotion");
    assert_eq!(
        root.trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        root.parent_span_id.map(|p| p.to_string()).as_deref(),
        Some("00f067aa0ba902b7")
    );
    assert!(r
        .spans_of("P-ci")
        .iter()
        .all(|s| s.trace_id == root.trace_id));
}

#[test]
fn ids_depend_on_the_cluster_name() {
    let run = |cluster: &str| {
        let mut r = Run::with(EngineConfig {
            cluster: cluster.into(),
            ..EngineConfig::default()
        });
        git_promotion(&mut r);
        r.finish();
        r.spans()
            .iter()
            .map(|s| (s.trace_id, s.span_id))
            .collect::<Vec<_>>()
    };
    let (a, b) = (run("eu1"), run("us1"));
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        "one trace per promotion"
    );
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.1 != y.1),
        "span ids differ per cluster"
    );
    assert_eq!(a, run("eu1"));
}

#[test]
fn a_report_repeated_fills_gaps_but_never_rewrites() {
    let mut r = Run::new();
    let mut first = report("P-g", SHA);
    first.actor = None;
    let mut second = report("P-g", SHA);
    second.actor = Some("bob".into());
    second.app = Some("other".into());
    r.feed(1, EventBody::Promotion(first))
        .feed(2, EventBody::Promotion(second))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(
            4,
            EventBody::Reconciler(ks_ready("apps", &format!("main@sha1:{SHA}"), 4)),
        )
        .finish();
    let s = r.story("P-g");
    assert_eq!(s.actor.as_deref(), Some("bob"));
    assert_eq!(s.app.as_deref(), Some("podinfo"));
    assert_eq!(
        r.spans_of("P-g")
            .iter()
            .filter(|s| s.name == "promotion")
            .count(),
        1
    );
}

fn env_report(id: &str, env: &str, rev: &str) -> PromotionReport {
    PromotionReport {
        environment: env.into(),
        ..report(id, rev)
    }
}

fn env_ks(env: &str, rev: &str, at: i64) -> ReconcilerObs {
    ReconcilerObs {
        path: Some(format!("./deploy/{env}")),
        ..ks_ready(&format!("podinfo-{env}"), rev, at)
    }
}

fn env_deploy(env: &str, generation: i64, done: bool, at: i64) -> DeploymentObs {
    let mut d = if done {
        rolled("podinfo", generation, at)
    } else {
        rolling("podinfo", generation, at)
    };
    d.object = ObjectRef::new(Kind::Deployment, format!("podinfo-{env}"), "podinfo");
    d.uid = format!("uid-dep-{env}");
    d.manager = Some(ObjectRef::new(
        Kind::Kustomization,
        "flux-system",
        format!("podinfo-{env}"),
    ));
    d
}

/// One commit promoted to staging and then, before staging finished, to prod; one
/// GitRepository feeds both environments' Kustomizations (`spec.path` tells them apart).
#[test]
fn the_same_commit_promoted_to_two_environments_joins_each_its_own_objects() {
    let rev = format!("main@sha1:{SHA}");
    let mut r = Run::new();
    r.feed(1, EventBody::Promotion(env_report("P-stg", "staging", SHA)))
        .feed(2, EventBody::Promotion(env_report("P-prd", "prod", SHA)))
        .feed(3, EventBody::Source(git(SHA, 3)))
        .feed(4, EventBody::Deployment(env_deploy("staging", 1, true, 0)))
        .feed(4, EventBody::Deployment(env_deploy("prod", 1, true, 0)))
        .feed(5, EventBody::Reconciler(env_ks("prod", &rev, 5)))
        .feed(5, EventBody::Deployment(env_deploy("prod", 2, false, 5)))
        .feed(6, EventBody::Reconciler(env_ks("staging", &rev, 6)))
        .feed(6, EventBody::Deployment(env_deploy("staging", 2, false, 6)))
        .feed(
            20,
            EventBody::Deployment(env_deploy("staging", 2, true, 20)),
        )
        .feed(30, EventBody::Deployment(env_deploy("prod", 2, true, 30)))
        .finish();
    for (id, env, other) in [("P-stg", "staging", "prod"), ("P-prd", "prod", "staging")] {
        let s = r.story(id);
        assert_eq!(s.outcome, Outcome::Succeeded, "{id}");
        assert_eq!(s.superseded_by, None, "{id}");
        let objects: Vec<String> = s.stages.iter().filter_map(|x| x.object.clone()).collect();
        assert!(
            objects.contains(&format!("Kustomization/flux-system/podinfo-{env}")),
            "{id}: {objects:?}"
        );
        assert!(
            objects.contains(&format!("Deployment/podinfo-{env}/podinfo")),
            "{id}: {objects:?}"
        );
        assert!(
            objects.iter().all(|o| !o.contains(other)),
            "{id} holds nothing of {other}: {objects:?}"
        );
        assert!(
            objects.contains(&"GitRepository/flux-system/app".to_string()),
            "the shared source fetch is in both traces"
        );
    }
}

/// Two OCIRepositories follow two tags of one artifact repository; the same digest is promoted
/// to both tags. Each source joins the promotion of its own tag only.
#[test]
fn the_same_digest_on_two_tags_joins_each_tag_to_its_own_promotion() {
    let tagged = |id: &str, tag: &str| {
        let mut r = oci_report(id, DIG);
        r.environment = tag.into();
        if let Some(a) = r.artifact.as_mut() {
            a.tag = Some(tag.into());
        }
        r
    };
    let src = |tag: &str, at: i64| {
        let mut s = source(
            Kind::OCIRepository,
            &format!("manifests-{tag}"),
            &format!("{tag}@sha256:{DIG}"),
            at,
        );
        s.ref_tag = Some(tag.into());
        s
    };
    let mut r = Run::new();
    r.feed(1, EventBody::Promotion(tagged("R-stg", "staging")))
        .feed(2, EventBody::Promotion(tagged("R-prd", "prod")))
        .feed(3, EventBody::Source(src("staging", 3)))
        .feed(4, EventBody::Source(src("prod", 4)))
        .finish();
    let sources = |id: &str| -> Vec<String> {
        r.story(id)
            .stages
            .iter()
            .filter(|s| s.stage == Stage::Source)
            .filter_map(|s| s.object.clone())
            .collect()
    };
    assert_eq!(
        sources("R-stg"),
        vec!["OCIRepository/flux-system/manifests-staging".to_string()]
    );
    assert_eq!(
        sources("R-prd"),
        vec!["OCIRepository/flux-system/manifests-prod".to_string()]
    );
}
