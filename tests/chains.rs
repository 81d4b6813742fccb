//! Promotion chains: a report names the promotion it continues (`promoted_from`: staging's, for
//! prod), and the root span links to that promotion's trace, from every way a report enters
//! (JSON, gRPC's message, a Promotion object, `fluxtrace promote --from`).

use fluxtrace::correlate::EngineConfig;
use fluxtrace::model::PromotionReport;
use fluxtrace::sources::promotion::{decode, ReportError};
use fluxtrace::trace::{attr, span_id_for, trace_id_for, SpanLinkRecord, SpanRecord, Stage};
use fluxtrace_testkit::recordings::example;

const STAGING: &str = "P-2026-11-26-500";
const PROD: &str = "P-2026-11-26-501";

/// `multi-env-git.jsonl` with the prod report naming the staging promotion it continues.
fn chained() -> String {
    let text = example("multi-env-git.jsonl");
    let needle = format!(r#""id":"{PROD}","#);
    assert!(text.contains(&needle), "the prod report");
    text.replacen(
        &needle,
        &format!(r#""id":"{PROD}","promoted_from":"{STAGING}","#),
        1,
    )
}

fn root<'a>(spans: &'a [&'a SpanRecord], id: &str) -> &'a SpanRecord {
    spans
        .iter()
        .find(|s| s.name == "promotion" && s.trace_id == trace_id_for(id))
        .unwrap_or_else(|| panic!("the root span of {id}"))
}

/// A root span's link of kind `why` (`delivery.link`).
fn link_of<'a>(root: &'a SpanRecord, why: &str) -> &'a SpanLinkRecord {
    root.links
        .iter()
        .find(|l| l.attributes.get_str(attr::DELIVERY_LINK) == Some(why))
        .unwrap_or_else(|| panic!("a {why} link"))
}

/// Prod's and staging's root spans, and prod's link of kind `why`, with `delivery.promoted_from`
/// checked on prod's root.
fn chain_of<'a>(
    spans: &'a [&'a SpanRecord],
    why: &str,
) -> (&'a SpanRecord, &'a SpanRecord, &'a SpanLinkRecord) {
    let prod = root(spans, PROD);
    assert_eq!(
        prod.attributes.get_str(attr::DELIVERY_PROMOTED_FROM),
        Some(STAGING)
    );
    let link = link_of(prod, why);
    // What the link means, on the root too: Jaeger shows span links without attributes.
    assert_eq!(
        prod.attributes.get_str(attr::DELIVERY_PROMOTED_FROM_LINK),
        Some(why)
    );
    assert_eq!(
        prod.attributes
            .get_str(attr::DELIVERY_PROMOTED_FROM_TRACE_ID),
        Some(link.trace_id.to_string().as_str())
    );
    (prod, root(spans, STAGING), link)
}

#[test]
fn the_root_span_links_to_the_promotion_it_continues() {
    let cfg = EngineConfig::default();
    let cluster = cfg.cluster.clone();
    let r = fluxtrace::replay::run(&chained(), cfg);
    let spans: Vec<&SpanRecord> = r.spans().collect();
    let (_, staging, link) = chain_of(&spans, "promoted_from");
    // One click from prod's trace opens staging's: the same trace, the same root span.
    assert_eq!(link.trace_id, staging.trace_id);
    assert_eq!(link.span_id, staging.span_id);
    assert_eq!(
        link.span_id,
        span_id_for(STAGING, Stage::Promotion, &cluster, "", "")
    );
    assert_eq!(
        link.attributes.get_str(attr::DELIVERY_PROMOTION_ID),
        Some(STAGING)
    );
    assert!(
        link.attributes.get(attr::DELIVERY_LINK_DERIVED).is_none(),
        "staging's trace as this agent saw it"
    );
    assert!(
        staging
            .links
            .iter()
            .all(|l| l.attributes.get_str(attr::DELIVERY_LINK) != Some("promoted_from")),
        "staging continues nothing"
    );
    // The rest of prod's trace is what it was without the chain.
    let plain = fluxtrace::replay::run(example("multi-env-git.jsonl"), EngineConfig::default());
    let ids = |spans: Vec<&SpanRecord>| -> Vec<String> {
        let mut v: Vec<String> = spans.iter().map(|s| s.span_id.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(plain.spans().collect()), ids(spans.clone()));
}

#[test]
fn a_promoted_from_that_is_not_a_promotion_id_is_refused_by_name() {
    const SHA: &str = "78e7e93a2812ee6725fe1cbb2659ddc496d09657";
    let report = |from: &str| {
        format!(r#"{{"id":"P-9","environment":"prod","revision":"{SHA}","promoted_from":{from}}}"#)
    };
    for bad in [r#""P-9""#.to_string(), format!("\"{}\"", "x".repeat(300))] {
        match decode(&report(&bad)) {
            Err(ReportError::Field { field, reason }) => {
                assert_eq!(field, "promoted_from", "{reason}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    let ok = decode(&report(r#"" P-8 ""#)).expect("valid");
    assert_eq!(ok.promoted_from.as_deref(), Some("P-8"), "trimmed");
    let empty = decode(&report(r#""""#)).expect("valid");
    assert_eq!(empty.promoted_from, None, "empty is unset");
}

#[test]
fn a_promotion_object_and_the_grpc_message_carry_it_too() {
    let spec = serde_json::json!({
        "environment": "prod",
        "revision": "78e7e93a2812ee6725fe1cbb2659ddc496d09657",
        "promotedFrom": STAGING,
    });
    let r = fluxtrace::resource::to_report(&spec, "p-9", None).expect("a report");
    assert_eq!(r.promoted_from.as_deref(), Some(STAGING));
    let back = fluxtrace::resource::spec_of(&r, jiff::Timestamp::UNIX_EPOCH);
    assert_eq!(back.promoted_from.as_deref(), Some(STAGING));
    let bad = serde_json::json!({
        "environment": "prod",
        "revision": "78e7e93a2812ee6725fe1cbb2659ddc496d09657",
        "promotedFrom": "p-9",
    });
    let e = fluxtrace::resource::to_report(&bad, "p-9", None)
        .expect_err("continues itself")
        .to_string();
    assert!(e.contains("promotedFrom"), "{e}");

    let msg = fluxtrace::intake::grpc::proto::PromotionReport {
        id: "P-9".into(),
        environment: "prod".into(),
        revision: Some("78e7e93a2812ee6725fe1cbb2659ddc496d09657".into()),
        promoted_from: Some(STAGING.into()),
        ..Default::default()
    };
    let r: PromotionReport = fluxtrace::intake::grpc::report_from_proto(msg).expect("valid");
    assert_eq!(r.promoted_from.as_deref(), Some(STAGING));
}

#[test]
fn promote_from_puts_it_in_the_report() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fluxtrace"))
        .args([
            "promote",
            "--agent",
            "http://unused:1",
            "--environment",
            "prod",
            "--id",
            PROD,
            "--from",
            STAGING,
            "--no-ci",
            "--revision",
            "78e7e93a2812ee6725fe1cbb2659ddc496d09657",
            "--dry-run",
        ])
        .env_clear()
        .output()
        .expect("fluxtrace promote");
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["promoted_from"], STAGING);
}

/// Without being told: the same commit promoted to staging, then to prod, in this cluster. Prod's
/// root links to staging's as `same_revision`; staging, the first, links to nothing.
#[test]
fn an_earlier_promotion_of_the_same_revision_elsewhere_is_linked_without_being_told() {
    let r = fluxtrace::replay::run(example("multi-env-git.jsonl"), EngineConfig::default());
    let spans: Vec<&SpanRecord> = r.spans().collect();
    let (_, staging, link) = chain_of(&spans, "same_revision");
    assert_eq!(
        (link.trace_id, link.span_id),
        (staging.trace_id, staging.span_id)
    );
    assert!(
        staging.links.is_empty(),
        "the first of the chain links to nothing"
    );
    assert_eq!(
        staging.attributes.get_str(attr::DELIVERY_PROMOTED_FROM),
        None
    );
}

/// Staging joined its CI pipeline's trace (its report carried a `traceparent`), so its trace id
/// is the CI's, not the one derived from its id: prod's `promoted_from` link opens that trace.
#[test]
fn a_named_promotion_that_joined_a_ci_trace_is_linked_where_it_really_is() {
    const CI_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let needle = format!(r#""id":"{STAGING}","#);
    let text = chained();
    assert!(text.contains(&needle), "the staging report");
    let text = text.replacen(
        &needle,
        &format!(r#""id":"{STAGING}","traceparent":"00-{CI_TRACE}-00f067aa0ba902b7-01","#),
        1,
    );
    let r = fluxtrace::replay::run(&text, EngineConfig::default());
    let spans: Vec<&SpanRecord> = r.spans().collect();
    let staging = spans
        .iter()
        .find(|s| s.name == "promotion" && s.trace_id.to_string() == CI_TRACE)
        .expect("staging's root in the CI's trace");
    let prod = root(&spans, PROD);
    let link = link_of(prod, "promoted_from");
    assert_eq!(
        (link.trace_id, link.span_id),
        (staging.trace_id, staging.span_id),
        "the trace staging really has, not {}",
        trace_id_for(STAGING)
    );
    assert!(link.attributes.get(attr::DELIVERY_LINK_DERIVED).is_none());
    assert_eq!(
        prod.attributes
            .get_str(attr::DELIVERY_PROMOTED_FROM_TRACE_ID),
        Some(CI_TRACE)
    );
}

/// A promotion this agent never saw (another cluster's staging): the link goes to the trace and
/// root span derived from its id, and says so.
#[test]
fn a_named_promotion_this_agent_never_saw_is_linked_by_derived_ids_and_says_so() {
    const ELSEWHERE: &str = "P-2026-11-26-400";
    let text = chained().replacen(
        &format!(r#""promoted_from":"{STAGING}""#),
        &format!(r#""promoted_from":"{ELSEWHERE}""#),
        1,
    );
    let cfg = EngineConfig::default();
    let cluster = cfg.cluster.clone();
    let r = fluxtrace::replay::run(&text, cfg);
    let spans: Vec<&SpanRecord> = r.spans().collect();
    let prod = root(&spans, PROD);
    let link = link_of(prod, "promoted_from");
    assert_eq!(link.trace_id, trace_id_for(ELSEWHERE));
    assert_eq!(
        link.span_id,
        span_id_for(ELSEWHERE, Stage::Promotion, &cluster, "", "")
    );
    assert_eq!(
        link.attributes.get(attr::DELIVERY_LINK_DERIVED),
        Some(&fluxtrace::trace::AttrValue::Bool(true))
    );
}
