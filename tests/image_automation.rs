//! Flux image automation as its own promotion: what a user reads from the two bundled
//! recordings, and the variants around them (no push before the deadline, a repository already
//! up to date, a push long past, the automation seen before the policy, objects missing fields).

use fluxtrace::correlate::{Deadlines, EngineConfig};
use fluxtrace::replay::{self, Replay};
use fluxtrace::story::{Outcome, Traceability};
use fluxtrace::trace::{AttrValue, SpanRecord, SpanStatus, Stage};
use fluxtrace_testkit::recordings::example;
use serde_json::Value;

const COMMIT: &str = "78e7e93a2812ee6725fe1cbb2659ddc496d09657";
const PUSH_ID: &str = "automated/flux-system/web/78e7e93a2812";
const SELECTION_ID: &str = "automated/flux-system/web/frontend:3.15.0";

fn cfg() -> EngineConfig {
    EngineConfig {
        cluster: "demo".into(),
        ..EngineConfig::default()
    }
}

fn run(text: &str) -> Replay {
    replay::run(text, cfg())
}

fn lines(name: &str) -> Vec<Value> {
    example(name)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn text(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Whether a recording line is a watch line of `kind` (an object, or an Event about one).
fn is_watch_of(l: &Value, kind: &str) -> bool {
    l["kind"] == "watch" && (l["object"]["kind"] == kind)
}

fn is_event_about(l: &Value, kind: &str) -> bool {
    l["kind"] == "watch"
        && l["object"]["kind"] == "Event"
        && l["object"]["involvedObject"]["kind"] == kind
}

fn span<'a>(spans: &'a [SpanRecord], name: &str) -> &'a SpanRecord {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span"))
}

fn attr<'a>(s: &'a SpanRecord, key: &str) -> Option<&'a AttrValue> {
    s.attributes.get(key)
}

#[test]
fn a_push_is_a_promotion_of_its_own_from_the_selected_tag_to_the_rollout() {
    let r = run(example("image-automation-success.jsonl"));
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    assert_eq!(r.traces.len(), 1);
    let t = &r.traces[0];
    let s = &t.story;
    assert_eq!(s.promotion_id, PUSH_ID);
    assert_eq!(s.traceability, Traceability::Automated);
    assert_eq!(s.outcome, Outcome::Succeeded);
    assert!(s.divergence.is_none());
    let stages: Vec<Stage> = s.stages.iter().map(|st| st.stage).collect();
    assert_eq!(
        stages,
        [
            Stage::Image,
            Stage::Source,
            Stage::Reconcile,
            Stage::Apply,
            Stage::Rollout
        ]
    );
    // The image stage: the policy's selection (its Ready transition) to the push time.
    let image = span(&t.spans, "image.update");
    assert_eq!(image.start.to_string(), "2026-11-26T10:00:11Z");
    assert_eq!(image.end.to_string(), "2026-11-26T10:00:14Z");
    assert_eq!(image.service, "image-automation-controller");
    assert_eq!(image.status, SpanStatus::Ok);
    // The source fetch begins at the push: the commit exists from then on.
    let source = span(&t.spans, "source.fetch");
    assert_eq!(source.start.to_string(), "2026-11-26T10:00:14Z");
    assert_eq!(source.end.to_string(), "2026-11-26T10:00:32Z");
    let root = span(&t.spans, "promotion");
    let get = |k: &str| attr(root, k).cloned();
    assert_eq!(
        get("delivery.traceability"),
        Some(AttrValue::Str("automated".into()))
    );
    assert_eq!(
        get("container.image.name"),
        Some(AttrValue::Str("ghcr.io/acme/frontend".into()))
    );
    assert_eq!(
        get("container.image.tags"),
        Some(AttrValue::StrArray(vec!["3.15.0".into()]))
    );
    assert_eq!(
        get("oci.manifest.digest"),
        Some(AttrValue::Str(
            "sha256:5f1d0a6b2c3e4f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8".into()
        ))
    );
    assert_eq!(
        get("flux.image.policy"),
        Some(AttrValue::Str("flux-system/frontend".into()))
    );
    assert_eq!(
        get("vcs.ref.head.revision"),
        Some(AttrValue::Str(COMMIT.into()))
    );
    assert_eq!(root.start.to_string(), "2026-11-26T10:00:11Z");
}

#[test]
fn a_failed_push_diverges_at_image_with_the_automation_condition_as_evidence() {
    let r = run(example("image-automation-push-failure.jsonl"));
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    assert_eq!(r.traces.len(), 1);
    let s = &r.traces[0].story;
    assert_eq!(s.promotion_id, SELECTION_ID);
    assert_eq!(s.traceability, Traceability::Automated);
    assert_eq!(s.outcome, Outcome::Failed);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(d.stage, Stage::Image);
    assert_eq!(d.reason, "GitOperationFailed");
    assert!(
        d.message.starts_with("failed to checkout source: "),
        "{d:?}"
    );
    assert!(
        d.evidence[0].starts_with(
            "ImageUpdateAutomation/flux-system/web Ready=False GitOperationFailed: failed to checkout source"
        ),
        "{:?}",
        d.evidence
    );
    assert_eq!(
        d.evidence[1],
        "ImagePolicy flux-system/frontend selected ghcr.io/acme/frontend:3.15.0 at 2026-11-26T10:00:11Z"
    );
    let image = span(&r.traces[0].spans, "image.update");
    assert_eq!(image.end.to_string(), "2026-11-26T10:00:13Z");
    assert!(image.is_error());
    // No commit, so no source, reconcile or rollout was waited for.
    assert_eq!(r.traces[0].spans.len(), 2);
}

/// The failure recording without the failure: the automation pushes nothing for the selected
/// tag, and the image stage times out at its deadline.
#[test]
fn no_push_before_the_image_deadline_times_out_at_image() {
    let quiet: Vec<Value> = lines("image-automation-push-failure.jsonl")
        .into_iter()
        .filter(|l| {
            let failing = is_watch_of(l, "ImageUpdateAutomation") && l["type"] == "MODIFIED";
            !failing && !is_event_about(l, "ImageUpdateAutomation")
        })
        .collect();
    let r = replay::run(
        &text(&quiet),
        EngineConfig {
            deadlines: Deadlines {
                image: jiff::SignedDuration::from_mins(7),
                ..Deadlines::default()
            },
            ..cfg()
        },
    );
    assert_eq!(r.traces.len(), 1);
    let s = &r.traces[0].story;
    assert_eq!(s.promotion_id, SELECTION_ID);
    assert_eq!(s.outcome, Outcome::TimedOut);
    let d = s.divergence.as_ref().expect("diverged");
    assert_eq!(d.stage, Stage::Image);
    assert_eq!(d.reason, "ImageNotPushed");
    let image = span(&r.traces[0].spans, "image.update");
    assert_eq!(image.start.to_string(), "2026-11-26T10:00:11Z");
    assert_eq!(image.end.to_string(), "2026-11-26T10:07:11Z");
}

/// The automation ran after the selection, is Ready and applied the tag, but pushed nothing:
/// Git already held that image. Nothing to trace.
#[test]
fn a_selection_git_already_holds_is_not_a_promotion() {
    let mut ls = lines("image-automation-push-failure.jsonl");
    let failed = ls
        .iter()
        .position(|l| is_watch_of(l, "ImageUpdateAutomation") && l["type"] == "MODIFIED")
        .expect("the failing automation");
    let obj = &mut ls[failed]["object"]["status"];
    obj["conditions"][0]["status"] = "True".into();
    obj["conditions"][0]["reason"] = "Succeeded".into();
    obj["conditions"][0]["message"] = "repository up-to-date".into();
    obj["observedPolicies"]["frontend"]["tag"] = "3.15.0".into();
    ls.retain(|l| !is_event_about(l, "ImageUpdateAutomation"));
    let r = run(&text(&ls));
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    assert_eq!(
        r.traces.len(),
        0,
        "{:?}",
        r.traces.first().map(|t| &t.story)
    );
}

/// A push older than the promotion deadline in the initial list (an agent started long after)
/// brings back no promotion.
#[test]
fn a_push_long_past_opens_nothing() {
    let mut ls: Vec<Value> = lines("image-automation-success.jsonl")
        .into_iter()
        .filter(|l| l["at"] == "2026-11-26T10:00:00Z")
        .collect();
    let auto = ls
        .iter_mut()
        .find(|l| is_watch_of(l, "ImageUpdateAutomation"))
        .expect("automation");
    auto["object"]["status"]["lastPushCommit"] = COMMIT.into();
    auto["object"]["status"]["lastPushTime"] = "2026-11-26T08:40:00Z".into();
    let r = run(&text(&ls));
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    assert_eq!(r.traces.len(), 0);
    // Within the promotion deadline the same push is traced.
    auto_push_at(&mut ls, "2026-11-26T09:40:00Z");
    let r = run(&text(&ls));
    assert_eq!(r.traces.len(), 1);
    assert_eq!(r.traces[0].story.promotion_id, PUSH_ID);
}

fn auto_push_at(ls: &mut [Value], t: &str) {
    for l in ls
        .iter_mut()
        .filter(|l| is_watch_of(l, "ImageUpdateAutomation"))
    {
        l["object"]["status"]["lastPushTime"] = t.into();
    }
}

/// The automation's push seen before the policy's selection (two watches, any order): the same
/// trace, span for span.
#[test]
fn the_push_seen_before_the_selection_gives_the_same_trace() {
    let ls = lines("image-automation-success.jsonl");
    let want = run(&text(&ls));
    let (policy, rest): (Vec<Value>, Vec<Value>) = ls
        .into_iter()
        .partition(|l| l["at"] == "2026-11-26T10:00:11Z");
    assert_eq!(policy.len(), 2, "the policy and its Event");
    let push = rest
        .iter()
        .rposition(|l| l["at"] == "2026-11-26T10:00:14Z")
        .expect("the push");
    let mut reordered = rest.clone();
    for (i, mut l) in policy.into_iter().enumerate() {
        l["at"] = "2026-11-26T10:00:14Z".into();
        reordered.insert(push + 1 + i, l);
    }
    let got = run(&text(&reordered));
    assert_eq!(got.traces.len(), 1);
    assert_eq!(got.traces[0].spans, want.traces[0].spans);
}

/// An ImagePolicy without `latestRef.name` and an ImageUpdateAutomation without
/// `lastPushTime` are rejected lines naming the field; the push still opens the promotion and
/// the rest of the trace forms.
#[test]
fn image_objects_missing_fields_are_skipped_and_the_trace_still_forms() {
    let mut ls = lines("image-automation-success.jsonl");
    let policy = ls
        .iter()
        .position(|l| is_watch_of(l, "ImagePolicy") && l["type"] == "MODIFIED")
        .expect("policy selection");
    ls[policy]["object"]["status"]["latestRef"]
        .as_object_mut()
        .expect("latestRef")
        .remove("name");
    let initial = ls
        .iter()
        .position(|l| is_watch_of(l, "ImageUpdateAutomation"))
        .expect("automation");
    ls[initial]["object"]["status"]
        .as_object_mut()
        .expect("status")
        .remove("lastPushTime");
    let r = run(&text(&ls));
    let errors: Vec<String> = r.bad.iter().map(|b| b.error.to_string()).collect();
    assert_eq!(r.bad.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("ImageUpdateAutomation object has no status.lastPushTime"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("ImagePolicy object has no status.latestRef.name"),
        "{errors:?}"
    );
    assert_eq!(r.traces.len(), 1);
    let t = &r.traces[0];
    assert_eq!(t.story.promotion_id, PUSH_ID);
    assert_eq!(t.story.outcome, Outcome::Succeeded);
    assert_eq!(t.story.stages.len(), 5);
    // The selection was not seen: the image stage is the push itself, the image as the
    // automation applied it.
    let image = span(&t.spans, "image.update");
    assert_eq!(image.start.to_string(), "2026-11-26T10:00:14Z");
    assert_eq!(
        attr(image, "container.image.tags"),
        Some(&AttrValue::StrArray(vec!["3.15.0".into()]))
    );
}

/// A second push of the same automation while the first is still on its way supersedes it, as
/// a newer report of the same target does.
#[test]
fn a_newer_push_supersedes_one_still_in_progress() {
    let ls = lines("image-automation-success.jsonl");
    let push = ls
        .iter()
        .position(|l| is_watch_of(l, "ImageUpdateAutomation") && l["type"] == "MODIFIED")
        .expect("the push");
    let mut second = ls[push].clone();
    second["at"] = "2026-11-26T10:00:20Z".into();
    let status = &mut second["object"]["status"];
    status["lastPushCommit"] = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678".into();
    status["lastPushTime"] = "2026-11-26T10:00:20Z".into();
    second["object"]["metadata"]["resourceVersion"] = "23904170".into();
    let mut ls2 = ls.clone();
    let at = ls2
        .iter()
        .position(|l| l["at"].as_str().is_some_and(|t| t > "2026-11-26T10:00:20Z"))
        .expect("later lines");
    ls2.insert(at, second);
    let r = run(&text(&ls2));
    let first = r
        .traces
        .iter()
        .find(|t| t.story.promotion_id == PUSH_ID)
        .expect("the first push");
    assert_eq!(first.story.outcome, Outcome::Superseded);
    assert_eq!(
        first.story.superseded_by.as_deref(),
        Some("automated/flux-system/web/a1b2c3d4e5f6")
    );
}

/// The engine holds one entry per ImagePolicy and ImageUpdateAutomation, and forgets each when
/// it is deleted.
#[test]
fn deleted_image_objects_are_forgotten() {
    use fluxtrace::correlate::Engine;
    use fluxtrace::model::{DeliveryEvent, EventBody, Kind, ObjectRef};
    let decoded =
        fluxtrace::sources::recording::decode_all(example("image-automation-success.jsonl"));
    let mut e = Engine::new(cfg());
    let mut at = jiff::Timestamp::UNIX_EPOCH;
    for ev in decoded.events {
        at = ev.at;
        e.apply(ev);
    }
    assert_eq!(e.size().image_objects, 2, "the policy and the automation");
    for (kind, name) in [
        (Kind::ImagePolicy, "frontend"),
        (Kind::ImageUpdateAutomation, "web"),
        (Kind::ImageRepository, "frontend"),
    ] {
        e.apply(DeliveryEvent {
            at,
            body: EventBody::Deleted(ObjectRef::new(kind, "flux-system", name)),
        });
    }
    assert_eq!(e.size().image_objects, 0);
}

/// A selection the automation failed to push, seen only in an initial list: older than the
/// promotion deadline it opens nothing; within it, the same failed trace as when watched.
#[test]
fn a_failed_selection_seen_after_a_restart_is_traced_only_within_the_deadline() {
    let watched = run(example("image-automation-push-failure.jsonl"));
    let last_state = |selected: &str, failed: &str| -> String {
        let mut latest: Vec<Value> = Vec::new();
        for l in lines("image-automation-push-failure.jsonl") {
            let key = |v: &Value| {
                let o = &v["object"];
                (
                    o["kind"].clone(),
                    o["metadata"]["namespace"].clone(),
                    o["metadata"]["name"].clone(),
                )
            };
            latest.retain(|x| key(x) != key(&l));
            latest.push(l);
        }
        let mut out = Vec::new();
        for mut l in latest {
            l["at"] = "2026-11-26T10:05:00Z".into();
            l["type"] = "ADDED".into();
            let text = l
                .to_string()
                .replace("2026-11-26T10:00:11Z", selected)
                .replace("2026-11-26T10:00:12Z", failed)
                .replace("2026-11-26T10:00:13Z", failed);
            out.push(serde_json::from_str::<Value>(&text).expect("json"));
        }
        text(&out)
    };
    // A restarted agent holds the initial lists, then applies them (`Engine::hold`).
    let restart = |text: &str| -> Vec<replay::Trace> {
        let decoded = fluxtrace::sources::recording::decode_all(text);
        assert!(decoded.bad.is_empty(), "{:?}", decoded.bad);
        let mut e = fluxtrace::correlate::Engine::new(cfg());
        let (mut traces, mut pending) = (Vec::new(), Vec::new());
        replay::collect(e.hold(true), &mut traces, &mut pending);
        for ev in decoded.events {
            replay::collect(e.apply(ev), &mut traces, &mut pending);
        }
        replay::collect(e.hold(false), &mut traces, &mut pending);
        replay::collect(e.finish(), &mut traces, &mut pending);
        traces
    };
    let old = restart(&last_state("2026-11-26T08:00:11Z", "2026-11-26T08:00:13Z"));
    assert_eq!(old.len(), 0);
    let restarted = restart(&last_state("2026-11-26T10:00:11Z", "2026-11-26T10:00:13Z"));
    assert_eq!(restarted.len(), 1);
    assert_eq!(restarted[0].story.promotion_id, SELECTION_ID);
    assert_eq!(
        restarted[0].spans, watched.traces[0].spans,
        "the same spans as an agent that watched"
    );
}

#[test]
fn the_policys_events_on_the_image_span_are_in_their_order_whatever_order_they_came_in() {
    // Only the policy's Events land on the image span (none of the automation's): two of the
    // same second, the one that sorts first delivered last, as a re-list after a restart may.
    let mut all = lines("image-automation-success.jsonl");
    all.retain(|l| !is_event_about(l, "ImageUpdateAutomation"));
    let at = all
        .iter()
        .position(|l| is_event_about(l, "ImagePolicy"))
        .expect("a policy Event");
    let mut late = all[at].clone();
    late["object"]["metadata"]["name"] = "frontend.late".into();
    late["object"]["metadata"]["uid"] = "0f1e2d3c-late-4b5a-9687-a1b2c3d4e5f6".into();
    late["object"]["message"] = "A tag resolved before the one above".into();
    all.insert(at + 1, late);
    let r = run(&text(&all));
    assert!(r.bad.is_empty(), "{:?}", r.bad);
    let image = span(&r.traces[0].spans, "image.update");
    let messages: Vec<&str> = image
        .events
        .iter()
        .filter_map(|e| e.attributes.get_str("k8s.event.message"))
        .collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0], "A tag resolved before the one above");
}
