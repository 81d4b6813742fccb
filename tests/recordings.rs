//! Every bundled recording, replayed: the span tree and the triage story (golden files), the
//! verdict a user should read, and determinism of ids.

use std::collections::HashMap;
use std::fmt::Write as _;

use fluxtrace::correlate::EngineConfig;
use fluxtrace::replay::{self, Replay, EXAMPLES};
use fluxtrace::story::{self, Outcome, Traceability};
use fluxtrace::trace::{trace_id_for, AttrValue, SpanId, SpanRecord, SpanStatus, Stage};

fn cfg() -> EngineConfig {
    EngineConfig {
        cluster: "demo".into(),
        ..EngineConfig::default()
    }
}

/// Recordings kept beside the bundled examples, outside the crash sweep (see
/// examples/recordings/README.md).
const BESIDE: [(&str, &str); 3] = [
    (
        "flagger-canary-long.jsonl",
        include_str!("../examples/recordings/flagger-canary-long.jsonl"),
    ),
    (
        "real-drift-correction.jsonl",
        include_str!("../examples/recordings/real-drift-correction.jsonl"),
    ),
    (
        "real-kustomize-health-check-canceled.jsonl",
        include_str!("../examples/recordings/real-kustomize-health-check-canceled.jsonl"),
    ),
];

fn replay(name: &str) -> Replay {
    let text = EXAMPLES
        .iter()
        .chain(BESIDE.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no example {name}"));
    let r = replay::run(text, cfg());
    assert!(r.bad.is_empty(), "{name}: bad lines {:?}", r.bad);
    r
}

/// The span tree as text: one line per span, children indented under parents, times relative
/// to the root, and the attributes on-call reads.
fn tree(spans: &[SpanRecord]) -> String {
    let t0 = spans.iter().map(|s| s.start).min().expect("spans");
    let by_id: HashMap<SpanId, &SpanRecord> = spans.iter().map(|s| (s.span_id, s)).collect();
    let mut kids: HashMap<Option<SpanId>, Vec<&SpanRecord>> = HashMap::new();
    for s in spans {
        kids.entry(s.parent_span_id.filter(|p| by_id.contains_key(p)))
            .or_default()
            .push(s);
    }
    let mut out = String::new();
    fn walk(
        s: &SpanRecord,
        depth: usize,
        t0: jiff::Timestamp,
        kids: &HashMap<Option<SpanId>, Vec<&SpanRecord>>,
        out: &mut String,
    ) {
        let status = match &s.status {
            SpanStatus::Ok => "ok".to_string(),
            SpanStatus::Unset => "unset".to_string(),
            SpanStatus::Error { description } => format!("error: {description}"),
        };
        let _ = writeln!(
            out,
            "{}{} [{}] +{}s {}s {}",
            "  ".repeat(depth),
            s.name,
            s.service,
            s.start.duration_since(t0).as_secs(),
            s.end.duration_since(s.start).as_secs(),
            status
        );
        let mut attrs: Vec<String> = s
            .attributes
            .0
            .iter()
            .map(|(k, v)| match v {
                AttrValue::Str(x) => format!("{k}={x}"),
                AttrValue::Int(x) => format!("{k}={x}"),
                AttrValue::Bool(x) => format!("{k}={x}"),
                AttrValue::StrArray(x) => format!("{k}={x:?}"),
            })
            .collect();
        attrs.sort();
        for a in attrs {
            let _ = writeln!(out, "{}  · {a}", "  ".repeat(depth));
        }
        for e in &s.events {
            let _ = writeln!(
                out,
                "{}  ! {} +{}s {}",
                "  ".repeat(depth),
                e.name,
                e.time.duration_since(t0).as_secs(),
                e.attributes.get_str("k8s.event.object").unwrap_or_default()
            );
        }
        for l in &s.links {
            let _ = writeln!(
                out,
                "{}  → link {} {}",
                "  ".repeat(depth),
                l.trace_id,
                l.span_id
            );
        }
        let mut children = kids.get(&Some(s.span_id)).cloned().unwrap_or_default();
        children.sort_by_key(|c| (c.start, c.name));
        for c in children {
            walk(c, depth + 1, t0, kids, out);
        }
    }
    for root in kids.get(&None).cloned().unwrap_or_default() {
        walk(root, 0, t0, &kids, &mut out);
    }
    out
}

fn golden(name: &str) {
    let r = replay(name);
    let mut text = String::new();
    for t in &r.traces {
        let _ = writeln!(text, "trace {}", t.spans[0].trace_id);
        text.push_str(&tree(&t.spans));
        text.push('\n');
        text.push_str(&story::render(&t.story));
        text.push('\n');
    }
    insta::assert_snapshot!(name.trim_end_matches(".jsonl"), text);
}

#[test]
fn golden_oci_success() {
    golden("oci-success.jsonl");
}

#[test]
fn golden_oci_rollout_imagepull() {
    golden("oci-rollout-imagepull.jsonl");
}

#[test]
fn golden_git_success() {
    golden("git-success.jsonl");
}

#[test]
fn golden_git_build_failure() {
    golden("git-build-failure.jsonl");
}

#[test]
fn golden_helmrelease_upgrade_failure() {
    golden("helmrelease-upgrade-failure.jsonl");
}

#[test]
fn golden_receiver_trigger() {
    golden("receiver-trigger.jsonl");
}

#[test]
fn golden_untraced_rollout() {
    golden("untraced-rollout.jsonl");
}

#[test]
fn golden_multi_env_oci() {
    golden("multi-env-oci.jsonl");
}

#[test]
fn golden_multi_env_git() {
    golden("multi-env-git.jsonl");
}

#[test]
fn golden_monorepo_bootstrap() {
    golden("monorepo-bootstrap.jsonl");
}

#[test]
fn golden_helmrelease_chartref_success() {
    golden("helmrelease-chartref-success.jsonl");
}

#[test]
fn golden_real_git_unreported() {
    golden("real-git-unreported.jsonl");
}

#[test]
fn golden_real_helm_values() {
    golden("real-helm-values.jsonl");
}

#[test]
fn golden_real_helm_upgrade_stalled() {
    golden("real-helm-upgrade-stalled.jsonl");
}

#[test]
fn golden_real_kustomize_retry() {
    golden("real-kustomize-retry.jsonl");
}

#[test]
fn golden_real_kustomize_path_not_found() {
    golden("real-kustomize-path-not-found.jsonl");
}

#[test]
fn golden_real_kustomize_depends_on() {
    golden("real-kustomize-depends-on.jsonl");
}

#[test]
fn golden_real_git_overtaken() {
    golden("real-git-overtaken.jsonl");
}

#[test]
fn golden_image_automation_push_branch() {
    golden("image-automation-push-branch.jsonl");
}

/// The one trace a recording gives, and a span of it by name.
fn only_trace(name: &str) -> replay::Trace {
    let mut r = replay(name);
    assert_eq!(r.traces.len(), 1, "{name}: one trace");
    r.traces.remove(0)
}

fn attr_of<'a>(t: &'a replay::Trace, span: &str, key: &str) -> Option<&'a str> {
    let s = t.spans.iter().find(|s| s.name == span);
    s.unwrap_or_else(|| panic!("no {span} span"))
        .attributes
        .get_str(key)
}

/// A reported commit a newer push overtook before source-controller fetched (recorded on the
/// test bed): the report's trace follows the newer revision's delivery and says so, instead of
/// ending `RevisionNotFound` beside an unreported trace of the newer commit.
#[test]
fn an_overtaken_commit_is_delivered_by_the_newer_revision() {
    let t = only_trace("real-git-overtaken.jsonl");
    let root = |key| attr_of(&t, "promotion", key);
    assert_eq!(root("delivery.promotion.id"), Some("rel-web-1.1.0"));
    assert_eq!(root("cicd.pipeline.result"), Some("success"));
    assert_eq!(
        root("delivery.revision.delivered_as"),
        Some("main@sha1:d4c9dd84d07bea42f32ad7acc835a88a11d6f9b1")
    );
    assert_eq!(
        root("vcs.ref.head.revision"),
        Some("29575e166ea17ac9618b7aad834aa4d1550d1d13"),
        "the root still names the commit CI reported"
    );
    let names: Vec<&str> = t.spans.iter().map(|s| s.name).collect();
    for stage in ["source.fetch", "reconcile", "apply", "rollout"] {
        assert!(names.contains(&stage), "{stage} missing: {names:?}");
    }
}

/// Image automation pushing to a branch no GitRepository follows: the promotion ends `skip`
/// with the branch named, not `RevisionNotFound` at the source deadline.
#[test]
fn a_push_to_a_branch_nobody_follows_is_skipped() {
    let t = only_trace("image-automation-push-branch.jsonl");
    assert_eq!(
        attr_of(&t, "promotion", "cicd.pipeline.result"),
        Some("skip")
    );
    assert_eq!(attr_of(&t, "promotion", "error.type"), None);
    let source = |key| attr_of(&t, "source.fetch", key);
    assert_eq!(source("cicd.pipeline.task.run.result"), Some("skip"));
    assert_eq!(source("vcs.ref.head.name"), Some("image-updates"));
    let stage = t.story.stages.iter().find(|s| s.stage == Stage::Source);
    let summary = &stage.expect("source stage").summary;
    assert!(summary.contains("'image-updates'"), "{summary}");
    // The push ends the trace; nothing waits for the source deadline.
    let root = t
        .spans
        .iter()
        .find(|s| s.name == "promotion")
        .expect("root");
    assert!(root.end.duration_since(root.start).as_secs() < 60);
}

#[test]
fn golden_real_rollout_quota() {
    golden("real-rollout-quota.jsonl");
}

#[test]
fn golden_real_kustomize_health_check_canceled() {
    golden("real-kustomize-health-check-canceled.jsonl");
}

#[test]
fn golden_real_drift_correction() {
    golden("real-drift-correction.jsonl");
}

/// The objects (kind/namespace/name) a trace's stage spans are about.
fn objects_of(t: &replay::Trace) -> Vec<String> {
    let mut objs: Vec<String> = t
        .story
        .stages
        .iter()
        .filter_map(|s| s.object.clone())
        .collect();
    objs.sort();
    objs.dedup();
    objs
}

/// Staging and prod of one app promoted with the same digest (two OCIRepositories on two tags)
/// or the same commit (two Kustomizations on one GitRepository): each trace holds only its own
/// environment's objects, neither supersedes the other, each gets its own verdict.
#[test]
fn the_same_artifact_promoted_to_two_environments_gives_two_separate_traces() {
    for (file, staging, prod, shared_source) in [
        ("multi-env-oci.jsonl", "rel-310", "rel-311", None),
        (
            "multi-env-git.jsonl",
            "P-2026-11-26-500",
            "P-2026-11-26-501",
            Some("GitRepository/flux-system/podinfo-deploy"),
        ),
    ] {
        let r = replay(file);
        assert_eq!(r.traces.len(), 2, "{file}");
        for (id, env, other) in [(staging, "staging", "prod"), (prod, "prod", "staging")] {
            let t = r
                .traces
                .iter()
                .find(|t| t.story.promotion_id == id)
                .expect("trace");
            assert_eq!(t.story.outcome, Outcome::Succeeded, "{file} {id}");
            assert_eq!(t.story.superseded_by, None, "{file} {id}");
            let objs = objects_of(t);
            assert!(
                objs.iter()
                    .all(|o| !o.contains(&format!("podinfo-{other}"))),
                "{file} {id} holds only {env} objects: {objs:?}"
            );
            assert!(
                objs.contains(&format!("Kustomization/flux-system/podinfo-{env}")),
                "{file} {id}: {objs:?}"
            );
            assert!(
                objs.contains(&format!("Deployment/podinfo-{env}/podinfo")),
                "{file} {id}: {objs:?}"
            );
            match shared_source {
                Some(src) => assert!(objs.contains(&src.to_string()), "{file} {id}"),
                None => assert!(
                    objs.contains(&format!("OCIRepository/flux-system/podinfo-{env}")),
                    "{file} {id}: {objs:?}"
                ),
            }
        }
    }
}

/// `flux bootstrap` layout: one GitRepository feeds flux-system, infrastructure and apps; the
/// commit changes one Deployment. Every Kustomization that reconciled the revision is in the
/// trace, the ones that changed nothing say so, and only the changed Deployment rolls out.
#[test]
fn a_monorepo_commit_shows_every_kustomization_and_marks_the_ones_that_changed_nothing() {
    let r = replay("monorepo-bootstrap.jsonl");
    assert_eq!(r.traces.len(), 1);
    let t = &r.traces[0];
    assert_eq!(t.story.outcome, Outcome::Succeeded);
    let applies: Vec<&SpanRecord> = t.spans.iter().filter(|s| s.name == "apply").collect();
    let changed = |name: &str| {
        applies
            .iter()
            .find(|s| s.attributes.get_str("flux.object.name") == Some(name))
            .and_then(|s| s.attributes.get("delivery.apply.changed").cloned())
    };
    assert_eq!(changed("flux-system"), Some(AttrValue::Bool(false)));
    assert_eq!(changed("infrastructure"), Some(AttrValue::Bool(false)));
    assert_eq!(changed("apps"), Some(AttrValue::Bool(true)));
    let reconciles = t.spans.iter().filter(|s| s.name == "reconcile").count();
    assert_eq!(reconciles, 3);
    let rollouts: Vec<&str> = t
        .spans
        .iter()
        .filter(|s| s.name == "rollout")
        .filter_map(|s| s.attributes.get_str("k8s.deployment.name"))
        .collect();
    assert_eq!(rollouts, vec!["podinfo"]);
    let story = story::render(&t.story);
    assert!(story.contains("no change"), "{story}");
}

/// What on-call must read from each recording, stated outright (not only in snapshots).
#[test]
fn each_recording_reaches_the_verdict_a_user_expects() {
    let expect: [(&str, &str, Outcome, Option<Stage>); 9] = [
        ("oci-success.jsonl", "rel-2041", Outcome::Succeeded, None),
        (
            "oci-rollout-imagepull.jsonl",
            "rel-2042",
            Outcome::Failed,
            Some(Stage::Rollout),
        ),
        (
            "git-success.jsonl",
            "P-2026-11-26-42",
            Outcome::Succeeded,
            None,
        ),
        (
            "git-build-failure.jsonl",
            "P-2026-11-26-43",
            Outcome::Failed,
            Some(Stage::Reconcile),
        ),
        (
            "helmrelease-upgrade-failure.jsonl",
            "rel-2050",
            Outcome::Failed,
            Some(Stage::Apply),
        ),
        (
            "receiver-trigger.jsonl",
            "P-2026-11-26-44",
            Outcome::Succeeded,
            None,
        ),
        (
            "untraced-rollout.jsonl",
            "untraced/ops/cache/964a170e-4",
            Outcome::Succeeded,
            None,
        ),
        (
            "monorepo-bootstrap.jsonl",
            "P-2026-11-26-700",
            Outcome::Succeeded,
            None,
        ),
        (
            "helmrelease-chartref-success.jsonl",
            "rel-2060",
            Outcome::Succeeded,
            None,
        ),
    ];
    for (file, id, outcome, stage) in expect {
        let r = replay(file);
        assert_eq!(r.traces.len(), 1, "{file}: one promotion");
        let s = &r.traces[0].story;
        assert_eq!(s.promotion_id, id, "{file}");
        assert_eq!(s.outcome, outcome, "{file}");
        assert_eq!(s.divergence.as_ref().map(|d| d.stage), stage, "{file}");
    }
    let pull = replay("oci-rollout-imagepull.jsonl");
    let d = pull.traces[0].story.divergence.clone().expect("diverged");
    assert_eq!(d.cause.as_deref(), Some("ImagePullBackOff"));
    assert!(d.evidence.iter().any(|e| e.contains("HealthCheckFailed")));
    let trigger = replay("receiver-trigger.jsonl");
    assert!(trigger
        .spans()
        .any(|s| s.name == "trigger" && s.service == "notification-controller"));
    let untraced = replay("untraced-rollout.jsonl");
    assert_eq!(untraced.traces[0].story.traceability.as_str(), "missing");
    let oci = replay("oci-success.jsonl");
    let root = oci.spans().find(|s| s.name == "promotion").expect("root");
    assert_eq!(
        root.attributes.get_str("oci.manifest.digest"),
        Some("sha256:f126ce66891eefd188e03e2c6838ac172b117bf67ed6f9605cffca950e460822"),
        "the floating tag `prod` resolved to its digest"
    );
}

#[test]
fn replaying_twice_gives_identical_ids_and_spans() {
    for (name, text) in EXAMPLES {
        let a = replay::run(text, cfg());
        let b = replay::run(text, cfg());
        let sa: Vec<&SpanRecord> = a.spans().collect();
        let sb: Vec<&SpanRecord> = b.spans().collect();
        assert!(!sa.is_empty(), "{name}");
        assert_eq!(sa, sb, "{name}");
    }
}

#[test]
fn without_traceparent_the_trace_id_is_derived_from_the_promotion_id() {
    use sha2::{Digest, Sha256};
    for (name, text) in EXAMPLES {
        for t in replay::run(text, cfg()).traces {
            let root = t
                .spans
                .iter()
                .find(|s| s.name == "promotion")
                .expect("root");
            if root.parent_span_id.is_some() {
                continue; // a CI traceparent decides the trace id
            }
            let digest = Sha256::digest(format!("fluxtrace/v1/trace/{}", t.story.promotion_id));
            assert_eq!(root.trace_id.0[..], digest[..16], "{name}");
            assert_eq!(root.trace_id, trace_id_for(&t.story.promotion_id));
            assert!(
                t.spans.iter().all(|s| s.trace_id == root.trace_id),
                "{name}"
            );
        }
    }
}

#[test]
fn the_ci_traceparent_parents_the_root() {
    let r = replay("oci-success.jsonl");
    let root = r.spans().find(|s| s.name == "promotion").expect("root");
    assert_eq!(
        root.trace_id.to_string(),
        "bcc6fef14921ca4b919966fea2f61b03"
    );
    assert_eq!(
        root.parent_span_id.map(|p| p.to_string()).as_deref(),
        Some("cd43ae110eed53d9")
    );
}

#[test]
fn a_relisted_recording_adds_no_span() {
    // A watch restart replays every object: append the whole recording's objects again,
    // later in time, and nothing new may appear.
    for (name, text) in EXAMPLES {
        let once = replay::run(text, cfg());
        let last_at = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["at"].as_str().map(str::to_string))
            .max()
            .expect("times");
        let later: jiff::Timestamp =
            last_at.parse::<jiff::Timestamp>().expect("ts") + jiff::SignedDuration::from_secs(5);
        // The re-list: the last state of every object, plus every report and Flux event again
        // (CI retries, notification-controller retries).
        let mut last: Vec<(String, serde_json::Value)> = Vec::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let key = match v["kind"].as_str() {
                Some("watch") => format!(
                    "{}/{}/{}",
                    v["object"]["kind"],
                    v["object"]["metadata"]["namespace"],
                    v["object"]["metadata"]["name"]
                ),
                _ => line.to_string(),
            };
            last.retain(|(k, _)| *k != key);
            last.push((key, v));
        }
        let mut doubled = text.to_string();
        for (_, mut v) in last {
            if v["type"] == "DELETED" {
                continue;
            }
            v["type"] = serde_json::Value::String("ADDED".into());
            v["at"] = serde_json::Value::String(later.to_string());
            doubled.push_str(&v.to_string());
            doubled.push('\n');
        }
        let twice = replay::run(&doubled, cfg());
        let a: Vec<&SpanRecord> = once.spans().collect();
        let b: Vec<&SpanRecord> = twice.spans().collect();
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn golden_unreported_git_success() {
    golden("unreported-git-success.jsonl");
}

#[test]
fn golden_unreported_git_failure() {
    golden("unreported-git-failure.jsonl");
}

#[test]
fn golden_unreported_oci_success() {
    golden("unreported-oci-success.jsonl");
}

#[test]
fn golden_unreported_oci_failure() {
    golden("unreported-oci-failure.jsonl");
}

/// A change nobody reported is a whole promotion: the source that stored it, the reconcile,
/// the rollout, a verdict and a divergence, under an id derived from the source and revision.
#[test]
fn unreported_changes_are_whole_promotions_with_their_verdicts() {
    let expect = [
        (
            "unreported-git-success.jsonl",
            "unreported/flux-system/web/78e7e93a2812",
            Outcome::Succeeded,
            None,
        ),
        (
            "unreported-git-failure.jsonl",
            "unreported/flux-system/infra/6887e3d769a0",
            Outcome::Failed,
            Some(Stage::Reconcile),
        ),
        (
            "unreported-oci-success.jsonl",
            "unreported/flux-system/shop-manifests/f126ce66891e",
            Outcome::Succeeded,
            None,
        ),
        (
            "unreported-oci-failure.jsonl",
            "unreported/flux-system/payments-manifests/2a8e96061287",
            Outcome::Failed,
            Some(Stage::Rollout),
        ),
    ];
    for (file, id, outcome, diverged) in expect {
        let r = replay(file);
        assert_eq!(r.traces.len(), 1, "{file}: one trace");
        let t = &r.traces[0];
        assert_eq!(t.story.promotion_id, id, "{file}");
        assert_eq!(t.story.outcome, outcome, "{file}");
        assert_eq!(
            t.story.divergence.as_ref().map(|d| d.stage),
            diverged,
            "{file}"
        );
        assert_eq!(t.story.traceability, Traceability::Unreported, "{file}");
        let stages: Vec<&str> = t.story.stages.iter().map(|s| s.stage.as_str()).collect();
        assert!(
            stages.contains(&"source"),
            "{file}: the source fetch is in the trace: {stages:?}"
        );
        assert!(stages.contains(&"reconcile"), "{file}: {stages:?}");
        for s in &t.spans {
            assert_eq!(
                s.attributes.get_str("delivery.traceability"),
                Some("unreported"),
                "{file}: {}",
                s.name
            );
        }
    }
}

/// `unreported-git-success.jsonl` with git-success's report for the same commit put after
/// line `after` (0: before everything the recording changes).
fn reported_at(after: usize) -> String {
    let report = EXAMPLES
        .iter()
        .find(|(n, _)| *n == "git-success.jsonl")
        .and_then(|(_, t)| t.lines().find(|l| l.contains(r#""kind":"promotion""#)))
        .expect("git-success has a report");
    let base = EXAMPLES
        .iter()
        .find(|(n, _)| *n == "unreported-git-success.jsonl")
        .map(|(_, t)| *t)
        .expect("recording");
    let lines: Vec<&str> = base.lines().collect();
    let at = |l: &str| l[7..27].to_string();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        out.push(l.to_string());
        if i + 1 == after.max(4) {
            // Same time as the line before it: the recording's times never decrease.
            let moved = report.replacen(&at(report), &at(l), 1);
            out.push(moved);
        }
    }
    out.join("\n") + "\n"
}

/// A report that arrives after Flux began delivering its commit takes the unreported promotion
/// over: one trace, the report's, with the same spans and ids as when the report came first.
#[test]
fn a_late_report_takes_the_unreported_promotion_over_with_the_same_trace() {
    let first = replay::run(&reported_at(4), cfg());
    assert_eq!(first.traces.len(), 1);
    assert_eq!(first.traces[0].story.promotion_id, "P-2026-11-26-42");
    let want: Vec<&SpanRecord> = first.spans().collect();
    let lines = reported_at(0).lines().count();
    // After the source stored the commit, after the apply, mid-rollout.
    for after in [6, 8, 12, 20] {
        assert!(after < lines);
        let late = replay::run(&reported_at(after), cfg());
        assert!(late.bad.is_empty(), "{:?}", late.bad);
        assert_eq!(
            late.traces.len(),
            1,
            "report after line {after}: one trace, not two"
        );
        let t = &late.traces[0];
        assert_eq!(
            t.story.promotion_id, "P-2026-11-26-42",
            "after line {after}"
        );
        assert_eq!(t.story.traceability, Traceability::Reported);
        let got: Vec<&SpanRecord> = late.spans().collect();
        assert_eq!(
            got, want,
            "report after line {after}: the report's trace, span for span"
        );
    }
}

/// A commit nobody reported that rolls out no workload ends `no_change`; `--skip-unchanged`
/// leaves its trace out, and leaves a failure in.
#[test]
fn an_unreported_commit_that_rolls_out_nothing_is_no_change_and_can_be_left_out() {
    let text = fluxtrace_testkit::recordings::unreported_without_rollout();
    let r = replay::run(&text, cfg());
    assert_eq!(r.traces.len(), 1);
    assert_eq!(r.traces[0].story.outcome, Outcome::NoChange);

    let dir = std::env::temp_dir().join(format!("fluxtrace-skip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let quiet = dir.join("no-change.jsonl");
    std::fs::write(&quiet, &text).expect("write");
    let failing = dir.join("failure.jsonl");
    let failure = EXAMPLES
        .iter()
        .find(|(n, _)| *n == "unreported-git-failure.jsonl")
        .map(|(_, t)| *t)
        .expect("recording");
    std::fs::write(&failing, failure).expect("write");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fluxtrace"))
            .args(args)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .output()
            .expect("fluxtrace runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let (q, f) = (
        quiet.to_str().expect("utf-8 path"),
        failing.to_str().expect("utf-8 path"),
    );
    let all = run(&["replay", q, f]);
    assert!(
        all.contains("unreported/flux-system/web/78e7e93a2812: no_change"),
        "{all}"
    );
    let skipped = run(&["replay", "--skip-unchanged", q, f]);
    assert!(!skipped.contains("unreported/flux-system/web"), "{skipped}");
    assert!(
        skipped.contains("unreported/flux-system/infra/6887e3d769a0: failed"),
        "failures are always traced: {skipped}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A report that arrives after the unreported promotion of its commit has its verdict gets that
/// verdict and that trace, with no second trace of the same delivery.
#[test]
fn a_report_after_the_verdict_points_at_the_unreported_trace() {
    // The last observation again minutes later (the verdict comes a settle period after the
    // rollout), then the report.
    let base = reported_at(0);
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    let report = lines.remove(4);
    let last = lines.last().expect("lines").clone();
    lines.push(last.replacen(&last[7..27], "2026-11-26T10:04:00Z", 1));
    lines.push(report.replacen(&report[7..27], "2026-11-26T10:05:00Z", 1));
    let text = lines.join("\n") + "\n";
    let r = replay::run(&text, cfg());
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    let unreported = replay("unreported-git-success.jsonl");
    let want: Vec<&SpanRecord> = unreported.spans().collect();
    let got: Vec<&SpanRecord> = r.spans().collect();
    assert_eq!(got, want, "the spans are the unreported promotion's, once");
    assert_eq!(
        r.traces.len(),
        2,
        "{:?}",
        r.traces
            .iter()
            .map(|t| &t.story.promotion_id)
            .collect::<Vec<_>>()
    );
    let late = r
        .traces
        .iter()
        .find(|t| t.story.promotion_id == "P-2026-11-26-42")
        .expect("the report's verdict");
    assert!(late.spans.is_empty());
    assert_eq!(late.story.trace_id, unreported.traces[0].story.trace_id);
    assert_eq!(late.story.outcome, Outcome::Succeeded);
    assert_eq!(late.story.actor.as_deref(), Some("bob"));
    assert!(
        late.story
            .promoted
            .contains("unreported/flux-system/web/78e7e93a2812"),
        "{}",
        late.story.promoted
    );
}

#[test]
fn golden_image_automation_success() {
    golden("image-automation-success.jsonl");
}

#[test]
fn golden_image_automation_push_failure() {
    golden("image-automation-push-failure.jsonl");
}

/// Image automation's push seen only after the GitRepository stored the commit (and an
/// unreported promotion of that commit opened): the automated promotion takes it over, and the
/// trace is the one seen in order, span for span.
#[test]
fn a_push_seen_after_its_commit_was_stored_gives_the_same_automated_trace() {
    let text = EXAMPLES
        .iter()
        .find(|(n, _)| *n == "image-automation-success.jsonl")
        .map(|(_, t)| *t)
        .expect("recording");
    let want = replay::run(text, cfg());
    assert_eq!(want.traces.len(), 1);
    assert_eq!(want.traces[0].story.traceability, Traceability::Automated);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Line 12 is the automation's status with the push; the commit is stored on line 15.
    assert!(
        lines[11].contains(r#""lastPushCommit":"78e7e93a"#),
        "{}",
        &lines[11][..120]
    );
    assert!(lines[14].contains("main@sha1:78e7e93a"));
    let push = lines.remove(11);
    // Without the push, the commit is an unreported promotion of its own.
    let unseen = replay::run(&(lines.join("\n") + "\n"), cfg());
    assert_eq!(
        unseen.traces[0].story.traceability,
        Traceability::Unreported
    );
    let at = lines[14][7..27].to_string();
    lines.insert(15, push.replacen(&push[7..27], &at, 1));
    let late = replay::run(&(lines.join("\n") + "\n"), cfg());
    assert!(late.bad.is_empty(), "{:?}", late.bad);
    assert_eq!(
        late.traces.len(),
        1,
        "one trace, not an unreported one beside it"
    );
    assert_eq!(
        late.traces[0].story.promotion_id,
        want.traces[0].story.promotion_id
    );
    let got: Vec<&SpanRecord> = late.spans().collect();
    let exp: Vec<&SpanRecord> = want.spans().collect();
    assert_eq!(got, exp);
}

#[test]
fn golden_flagger_canary_success() {
    golden("flagger-canary-success.jsonl");
}

#[test]
fn golden_flagger_canary_rollback() {
    golden("flagger-canary-rollback.jsonl");
}

#[test]
fn golden_flagger_canary_long() {
    golden("flagger-canary-long.jsonl");
}

fn span<'a>(r: &'a Replay, name: &str, object: &str) -> &'a SpanRecord {
    r.spans()
        .find(|s| {
            s.name == name
                && [
                    "flagger.canary.name",
                    "k8s.deployment.name",
                    "flux.object.name",
                ]
                .iter()
                .any(|k| s.attributes.get_str(k) == Some(object))
        })
        .unwrap_or_else(|| panic!("no {name} span of {object}"))
}

fn int(s: &SpanRecord, key: &str) -> Option<i64> {
    match s.attributes.get(key) {
        Some(AttrValue::Int(n)) => Some(*n),
        _ => None,
    }
}

/// Flux is Ready seconds after the apply; the promotion still waits for the analysis, which
/// passes, and for the primary's rollout below it.
#[test]
fn a_flagger_canary_that_passes_ends_the_promotion_when_the_primary_is_promoted() {
    let r = replay("flagger-canary-success.jsonl");
    assert_eq!(r.traces.len(), 1, "no untraced rollout of the primary");
    let s = &r.traces[0].story;
    assert_eq!(
        (s.promotion_id.as_str(), s.outcome),
        ("P-2026-11-26-45", Outcome::Succeeded)
    );
    let canary = span(&r, "traffic.canary", "frontend");
    assert_eq!(canary.service, "flagger");
    assert_eq!(canary.stage(), Some("traffic"));
    assert_eq!(canary.status, SpanStatus::Ok);
    assert_eq!(
        canary.attributes.get_str("flagger.canary.phase"),
        Some("Succeeded")
    );
    assert_eq!(
        canary.attributes.get_str("flagger.canary.primary"),
        Some("frontend-primary")
    );
    assert_eq!(
        int(canary, "flagger.canary.weight"),
        Some(30),
        "the highest weight reached"
    );
    assert_eq!(int(canary, "flagger.canary.failed_checks"), Some(0));
    // From Flagger's first look at the new template to the Canary's Succeeded.
    assert_eq!(canary.start.to_string(), "2026-11-26T10:01:00Z");
    assert_eq!(canary.end.to_string(), "2026-11-26T10:04:00Z");
    let weights: Vec<&AttrValue> = canary
        .events
        .iter()
        .filter(|e| e.name == "canary.weight")
        .filter_map(|e| e.attributes.get("flagger.canary.weight"))
        .collect();
    let want = [10, 20, 30].map(AttrValue::Int);
    assert_eq!(weights, want.iter().collect::<Vec<_>>());
    assert_eq!(
        canary.events.last().map(|e| e.name.as_ref()),
        Some("canary.promoted")
    );
    let reconcile = span(&r, "reconcile", "web");
    assert!(
        reconcile.end < canary.start,
        "Flux was Ready before the analysis began"
    );
    let primary = span(&r, "rollout", "frontend-primary");
    assert_eq!(
        primary.parent_span_id,
        Some(canary.span_id),
        "the primary's rollout is the analysis's last step"
    );
    assert_eq!(primary.status, SpanStatus::Ok);
    assert!(
        r.spans().all(
            |s| s.attributes.get_str("k8s.deployment.name") != Some("frontend")
                || s.name == "traffic.canary"
        ),
        "the target's own zero-replica rollout is the analysis, not a span of its own"
    );
    let root = r.spans().find(|s| s.name == "promotion").expect("root");
    assert_eq!(root.end, canary.end, "the verdict waited for the analysis");
}

/// The analysis fails its checks and Flagger rolls back: Flux still shows the Kustomization
/// Ready, but the promotion diverges at traffic, with Flagger's rollback as the evidence.
#[test]
fn a_flagger_rollback_diverges_at_traffic_although_flux_is_ready() {
    let r = replay("flagger-canary-rollback.jsonl");
    let s = &r.traces[0].story;
    assert_eq!(
        (s.promotion_id.as_str(), s.outcome),
        ("P-2026-11-26-46", Outcome::Failed)
    );
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(d.stage, Stage::Traffic);
    assert_eq!(d.reason, "CanaryRolledBack");
    assert_eq!(
        d.message,
        "Canary analysis failed, Deployment scaled to zero."
    );
    assert_eq!(
        d.evidence.first().map(String::as_str),
        Some("Canary/frontend Synced: Rolling back frontend.web failed checks threshold reached 2")
    );
    let canary = span(&r, "traffic.canary", "frontend");
    assert_eq!(d.span_id, canary.span_id);
    assert!(canary.is_error());
    assert_eq!(
        canary.attributes.get_str("error.type"),
        Some("CanaryRolledBack")
    );
    assert_eq!(
        canary.attributes.get_str("flagger.canary.phase"),
        Some("Failed")
    );
    // The status resets them on a rollback; the rollback Event keeps the count.
    assert_eq!(int(canary, "flagger.canary.failed_checks"), Some(2));
    assert_eq!(canary.end.to_string(), "2026-11-26T10:03:00Z");
    let halts = canary
        .events
        .iter()
        .filter(|e| e.name == "canary.check_failed")
        .count();
    assert_eq!(halts, 2);
    assert_eq!(
        span(&r, "reconcile", "web").status,
        SpanStatus::Ok,
        "Flux is Ready"
    );
    assert!(
        r.spans().all(|s| s.name != "rollout"),
        "the primary keeps the old version: nothing rolled out"
    );
}

/// A Canary missing its target, or a status without a phase, is skipped and reported with
/// the field it lacks; the trace still forms from the rest.
#[test]
fn a_canary_missing_fields_is_skipped_and_the_trace_still_forms() {
    let (_, text) = EXAMPLES
        .iter()
        .find(|(n, _)| *n == "flagger-canary-success.jsonl")
        .expect("recording");
    let mut broken = String::new();
    let mut dropped_phase = false;
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
        let weight_20 =
            v["object"]["kind"] == "Canary" && v["object"]["status"]["canaryWeight"] == 20;
        if weight_20 && !dropped_phase {
            // A status write whose phase is missing.
            v["object"]["status"]
                .as_object_mut()
                .expect("status")
                .remove("phase");
            dropped_phase = true;
            broken.push_str(&v.to_string());
            broken.push('\n');
            // And another Canary with no target at all.
            let mut no_target = v.clone();
            no_target["object"]["metadata"]["name"] = "orphan".into();
            no_target["object"]["metadata"]["uid"] = "0c4e1d0a-0000-4000-8000-000000000001".into();
            no_target["object"]["spec"]
                .as_object_mut()
                .expect("spec")
                .remove("targetRef");
            no_target["type"] = "ADDED".into();
            broken.push_str(&no_target.to_string());
            broken.push('\n');
            continue;
        }
        broken.push_str(line);
        broken.push('\n');
    }
    assert!(dropped_phase);
    let r = replay::run(&broken, cfg());
    let errors: Vec<String> = r.bad.iter().map(|b| b.error.to_string()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("Canary object has no status.phase"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("Canary object has no spec.targetRef.name"),
        "{errors:?}"
    );
    let whole = replay("flagger-canary-success.jsonl");
    let a: Vec<&SpanRecord> = whole.spans().collect();
    let b: Vec<&SpanRecord> = r.spans().collect();
    assert_eq!(
        a, b,
        "the skipped observations changed nothing the trace shows"
    );
}

/// An ExternalArtifact (Flux 2.7+: an artifact another controller produced) is a source like
/// the others: a Kustomization applying its new revision gives a trace whose `source.fetch`
/// is the ExternalArtifact's.
#[test]
fn an_external_artifact_is_a_source() {
    let digest = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    let (old, new) = (
        format!("latest@sha256:{}", digest('a')),
        format!("latest@sha256:{}", digest('b')),
    );
    let ea = |rev: &str, at: &str, rv: u32| {
        format!(
            r#"{{"at":"{at}","kind":"watch","type":"MODIFIED","object":{{"apiVersion":"source.toolkit.fluxcd.io/v1","kind":"ExternalArtifact","metadata":{{"name":"app","namespace":"apps","uid":"ea-1","resourceVersion":"{rv}","generation":1}},"spec":{{"sourceRef":{{"apiVersion":"example.com/v1","kind":"Builder","name":"app"}}}},"status":{{"artifact":{{"revision":"{rev}","digest":"sha256:{d}","lastUpdateTime":"{at}","path":"x","url":"http://x"}},"conditions":[{{"type":"Ready","status":"True","reason":"Succeeded","message":"ok","lastTransitionTime":"{at}","observedGeneration":1}}]}}}}}}"#,
            d = digest('c')
        )
    };
    let ks = |attempted: &str, applied: &str, ready: &str, at: &str, rv: u32| {
        format!(
            r#"{{"at":"{at}","kind":"watch","type":"MODIFIED","object":{{"apiVersion":"kustomize.toolkit.fluxcd.io/v1","kind":"Kustomization","metadata":{{"name":"app","namespace":"apps","uid":"ks-1","resourceVersion":"{rv}","generation":1}},"spec":{{"interval":"10m","path":"./","sourceRef":{{"kind":"ExternalArtifact","name":"app"}}}},"status":{{"lastAttemptedRevision":"{attempted}","lastAppliedRevision":"{applied}","conditions":[{{"type":"Ready","status":"{ready}","reason":"ReconciliationSucceeded","message":"Applied revision: {applied}","lastTransitionTime":"{at}","observedGeneration":1}}]}}}}}}"#
        )
    };
    let text = [
        ea(&old, "2026-11-26T09:00:00Z", 1).replace("MODIFIED", "ADDED"),
        ks(&old, &old, "True", "2026-11-26T09:00:01Z", 2).replace("MODIFIED", "ADDED"),
        r#"{"at":"2026-11-26T10:00:00Z","kind":"synced"}"#.to_string(),
        ea(&new, "2026-11-26T10:00:01Z", 3),
        ks(&new, &old, "Unknown", "2026-11-26T10:00:02Z", 4),
        ks(&new, &new, "True", "2026-11-26T10:00:05Z", 5),
    ]
    .join("\n");
    let r = replay::run(&text, EngineConfig::default());
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    assert_eq!(r.traces.len(), 1, "one unreported promotion");
    let t = &r.traces[0];
    // Nothing said what the apply changed and nothing rolled out.
    assert_eq!(t.story.outcome, Outcome::NoChange);
    let source = t
        .spans
        .iter()
        .find(|s| s.name == "source.fetch")
        .expect("a source span");
    assert_eq!(
        source.attributes.get_str("flux.object.kind"),
        Some("ExternalArtifact")
    );
    assert!(t.spans.iter().any(|s| s.name == "reconcile"));
}

/// A commit whose health checks the next commit cancelled (kustomize-controller's
/// `CancelHealthCheckOnNewRevision`: `Ready=False`, `HealthCheckCanceled`) is superseded by it,
/// not failed; the next one succeeds.
#[test]
fn cancelled_health_checks_supersede_the_older_commit() {
    let r = replay("real-kustomize-health-check-canceled.jsonl");
    let outcomes: Vec<(&str, Outcome)> = r
        .traces
        .iter()
        .map(|t| (t.story.promotion_id.as_str(), t.story.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            (
                "unreported/e2e-cancel-rec/app/fd43778ff67b",
                Outcome::Superseded
            ),
            (
                "unreported/e2e-cancel-rec/app/aaa368d02f6f",
                Outcome::Succeeded
            ),
        ]
    );
    assert_eq!(
        r.traces[0].story.superseded_by.as_deref(),
        Some("unreported/e2e-cancel-rec/app/aaa368d02f6f")
    );
}
