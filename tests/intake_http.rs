//! The HTTP intake, driven through the axum router with `oneshot` (no network): every status
//! code of the API, idempotent reports, auth (bearer and generic-hmac), and proof that a refused
//! request changes nothing in the engine.

use std::time::{Duration, Instant};

use axum::http::{header, Method, StatusCode};
use fluxtrace::correlate::EngineConfig;
use fluxtrace::intake::{Auth, Intake, MAX_BODY_BYTES};
use fluxtrace::replay::{self, EXAMPLES};
use fluxtrace::trace::{trace_id_for, Traceparent};
use fluxtrace_testkit::intake::*;
use jiff::SignedDuration;

const FLUX_EVENT: &str = include_str!("fixtures/flux-event-generic-provider.json");
const FLUX_EVENT_DOCS: &str =
    include_str!("fixtures/flux-event-generic-provider.docs-example.json");

#[tokio::test]
async fn a_report_is_accepted_with_its_trace_id_and_link() {
    let t = start();
    let (status, v) = send_json(
        &t.app,
        request(
            Method::POST,
            "/v1/promotions",
            Some(TOKEN),
            &[],
            report_json("P-1"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let want = trace_id_for("P-1").to_string();
    assert_eq!(v["promotion_id"], "P-1");
    assert_eq!(v["trace_id"], want.as_str());
    assert_eq!(
        v["trace_link"],
        format!("https://tempo.example/trace/{want}").as_str()
    );

    // With a CI traceparent the trace is the CI's.
    let body = format!(
        r#"{{"id":"P-2","environment":"prod","artifact":{{"repository":"ghcr.io/acme/app","tag":"prod","digest":"{DIGEST}"}},"traceparent":"{CI_TRACEPARENT}","unknown":{{"ignored":true}}}}"#
    );
    let (status, v) = send_json(
        &t.app,
        request(Method::POST, "/v1/promotions", Some(TOKEN), &[], body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let ci = Traceparent::parse(CI_TRACEPARENT).expect("valid");
    assert_eq!(v["trace_id"], ci.trace_id.to_string().as_str());
    drain(&t).await;
    for id in ["P-1", "P-2"] {
        let s = t.handle.story(id).await.expect("the engine knows it");
        assert_eq!(s.traceability.as_str(), "reported");
    }
}

#[tokio::test]
async fn the_same_id_twice_is_one_promotion_whose_fields_fill_gaps_but_never_change() {
    let t = start();
    let first =
        format!(r#"{{"id":"P-7","environment":"prod","revision":"{SHA}","actor":"alice"}}"#);
    let second = format!(
        r#"{{"id":"P-7","environment":"prod","revision":"{SHA}","actor":"mallory","app":"shop","traceparent":"{CI_TRACEPARENT}"}}"#
    );
    let (s1, v1) = send_json(
        &t.app,
        request(Method::POST, "/v1/promotions", Some(TOKEN), &[], first),
    )
    .await;
    drain(&t).await;
    let (s2, v2) = send_json(
        &t.app,
        request(Method::POST, "/v1/promotions", Some(TOKEN), &[], second),
    )
    .await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    // The promotion opened without a traceparent: its trace stays the derived one, and the
    // answer to the second report says so.
    assert_eq!(v1["trace_id"], v2["trace_id"]);
    assert_eq!(v2["trace_id"], trace_id_for("P-7").to_string().as_str());
    drain(&t).await;
    let s = t.handle.story("P-7").await.expect("known");
    assert_eq!(s.actor.as_deref(), Some("alice"), "never rewritten");
    assert_eq!(s.app.as_deref(), Some("shop"), "gap filled");
    assert_eq!(s.trace_id, trace_id_for("P-7"));
    assert_eq!(
        promotions_applied(&t.metrics),
        2 + 2,
        "two reports and two sentinels"
    );
}

#[tokio::test]
async fn stories_are_read_back_as_json_or_as_the_narrative() {
    let t = start();
    let (status, _) = send_json(
        &t.app,
        request(
            Method::POST,
            "/v1/promotions",
            Some(TOKEN),
            &[],
            report_json("rel/2041 a"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    drain(&t).await;
    let uri = "/v1/promotions/rel%2F2041%20a";
    let (status, v) = send_json(&t.app, request(Method::GET, uri, Some(TOKEN), &[], "")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["promotion_id"], "rel/2041 a");
    assert_eq!(v["outcome"], "in_progress");
    assert_eq!(v["environment"], "prod");
    assert!(v["root_span_id"].as_str().is_some_and(|s| s.len() == 16));

    let (status, body, headers) = send(
        &t.app,
        request(
            Method::GET,
            uri,
            Some(TOKEN),
            &[("accept", "text/plain")],
            "",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    let text = String::from_utf8(body).expect("utf-8");
    assert!(
        text.starts_with("Promotion rel/2041 a: in_progress"),
        "{text}"
    );
    assert!(text.contains("by alice"), "{text}");

    let (status, v) = send_json(
        &t.app,
        request(Method::GET, "/v1/promotions/nobody", Some(TOKEN), &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error_type"], "not_found");
}

#[tokio::test]
async fn recent_promotions_are_listed_by_environment_and_limit() {
    // Short deadlines (whatever other deadlines the engine has keep their defaults).
    let mut engine = EngineConfig::default();
    let d = &mut engine.deadlines;
    d.trigger = SignedDuration::from_millis(200);
    d.source = SignedDuration::from_millis(200);
    d.reconcile = SignedDuration::from_millis(200);
    d.rollout_grace = SignedDuration::from_millis(200);
    d.promotion = SignedDuration::from_millis(500);
    d.settle = SignedDuration::from_millis(100);
    let t = start_with(
        Auth::with_secrets(&[TOKEN], None),
        engine,
        Duration::from_millis(50),
    );
    for (id, env) in [("L-1", "prod"), ("L-2", "staging"), ("L-3", "prod")] {
        let body =
            format!(r#"{{"id":"{id}","environment":"{env}","revision":"{SHA}","app":"{id}"}}"#);
        let (status, _) = send_json(
            &t.app,
            request(Method::POST, "/v1/promotions", Some(TOKEN), &[], body),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    // No source ever stores the revision: each promotion times out, quickly here.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, v) = send_json(
            &t.app,
            request(
                Method::GET,
                "/v1/promotions?environment=prod&limit=5",
                Some(TOKEN),
                &[],
                "",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<&str> = v["promotions"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|s| s["promotion_id"].as_str())
            .collect();
        if ids.len() == 2 {
            assert!(ids.contains(&"L-1") && ids.contains(&"L-3"), "{ids:?}");
            break;
        }
        assert!(Instant::now() < until, "no verdicts: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, v) = send_json(
        &t.app,
        request(Method::GET, "/v1/promotions?limit=1", Some(TOKEN), &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["promotions"].as_array().map(Vec::len), Some(1));
    for bad in ["limit=0", "limit=many", "limit=100000"] {
        let (status, v) = send_json(
            &t.app,
            request(
                Method::GET,
                &format!("/v1/promotions?{bad}"),
                Some(TOKEN),
                &[],
                "",
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(v["field"], "limit");
    }
}

/// What is wrong, the token, the body, the status and `error_type` expected, the field named.
type Refusal = (
    &'static str,
    Option<&'static str>,
    String,
    StatusCode,
    &'static str,
    Option<&'static str>,
);

/// Every refusal the API can give, with its status, what the message names, and the metric it
/// counts under; and not one of them reaches the engine.
#[tokio::test]
async fn every_refusal_has_its_status_and_changes_nothing() {
    let t = start();
    let big = format!(
        r#"{{"id":"P-big","environment":"prod","revision":"{SHA}","app":"{}"}}"#,
        "x".repeat(MAX_BODY_BYTES)
    );
    let cases: Vec<Refusal> = vec![
        (
            "no token",
            None,
            report_json("P-x1"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            None,
        ),
        (
            "wrong token",
            Some("not-the-token"),
            report_json("P-x2"),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            None,
        ),
        (
            "not JSON",
            Some(TOKEN),
            "{\"id\":".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            None,
        ),
        (
            "missing environment",
            Some(TOKEN),
            format!(r#"{{"id":"P-x4","revision":"{SHA}"}}"#),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            Some("environment"),
        ),
        (
            "missing revision and digest",
            Some(TOKEN),
            r#"{"id":"P-x5","environment":"prod"}"#.into(),
            StatusCode::BAD_REQUEST,
            "missing_field",
            Some("revision"),
        ),
        (
            "ill-typed field",
            Some(TOKEN),
            format!(
                r#"{{"id":"P-x6","environment":"prod","revision":"{SHA}","pipeline":{{"run_id":7}}}}"#
            ),
            StatusCode::BAD_REQUEST,
            "invalid_json",
            Some("pipeline.run_id"),
        ),
        (
            "invalid traceparent",
            Some(TOKEN),
            format!(
                r#"{{"id":"P-x7","environment":"prod","revision":"{SHA}","traceparent":"00-abc-def-01"}}"#
            ),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("traceparent"),
        ),
        (
            "bad digest",
            Some(TOKEN),
            r#"{"id":"P-x8","environment":"prod","artifact":{"digest":"sha256:12"}}"#.into(),
            StatusCode::BAD_REQUEST,
            "invalid_field",
            Some("artifact.digest"),
        ),
        (
            "over 1 MiB",
            Some(TOKEN),
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            None,
        ),
    ];
    for (what, token, body, status, error_type, field) in &cases {
        let (got, body, headers) = send(
            &t.app,
            request(Method::POST, "/v1/promotions", *token, &[], body.clone()),
        )
        .await;
        assert_eq!(got, *status, "{what}: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
        assert_eq!(v["error_type"], *error_type, "{what}: {v}");
        if let Some(f) = field {
            assert!(
                v["error"].as_str().is_some_and(|e| e.contains(f)),
                "{what}: {v}"
            );
            assert!(
                v["field"].as_str().is_some_and(|x| x.contains(f)),
                "{what}: {v}"
            );
        }
        if *status == StatusCode::UNAUTHORIZED {
            assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer", "{what}");
        }
    }
    // Not UTF-8 (a body, not a String, so it can hold any bytes).
    let (got, body, _) = send(
        &t.app,
        request(
            Method::POST,
            "/v1/promotions",
            Some(TOKEN),
            &[],
            b"{\"id\":\"P-x3\xff\"}".to_vec(),
        ),
    )
    .await;
    assert_eq!(
        got,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&body)
    );

    // Queries need the token too.
    for uri in ["/v1/promotions/P-1", "/v1/promotions"] {
        let (got, _, headers) = send(&t.app, request(Method::GET, uri, None, &[], "")).await;
        assert_eq!(got, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    // Wrong method, unknown route: axum's own answers.
    let (got, _, _) = send(
        &t.app,
        request(Method::DELETE, "/v1/promotions", Some(TOKEN), &[], ""),
    )
    .await;
    assert_eq!(got, StatusCode::METHOD_NOT_ALLOWED);
    let (got, _, _) = send(
        &t.app,
        request(Method::GET, "/v2/promotions", Some(TOKEN), &[], ""),
    )
    .await;
    assert_eq!(got, StatusCode::NOT_FOUND);

    drain(&t).await;
    assert_eq!(
        promotions_applied(&t.metrics),
        1,
        "only the sentinel reached the engine"
    );
    for i in 1..=8 {
        let id = format!("P-x{i}");
        assert!(t.handle.story(&id).await.is_none(), "{id} must not exist");
    }
    assert!(t.handle.story("P-big").await.is_none());
    let m = |result: &str| {
        counter(
            &t.metrics,
            "fluxtrace_intake_requests_total",
            &format!(r#"route="promotions_report",result="{result}""#),
        )
    };
    assert_eq!(m("unauthorized"), 2);
    assert_eq!(m("too_large"), 1);
    assert_eq!(m("accepted"), 1, "the sentinel");
    assert!(m("invalid_json") >= 3);
    assert_eq!(
        counter(
            &t.metrics,
            "fluxtrace_intake_requests_total",
            r#"route="promotions_get",result="unauthorized""#
        ),
        1
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_next_to_the_intake() {
    let t = start();
    let (status, _, _) = send(&t.app, request(Method::GET, "/healthz", None, &[], "")).await;
    assert_eq!(status, StatusCode::OK);
    t.readiness.register("http");
    let (status, _, _) = send(&t.app, request(Method::GET, "/readyz", None, &[], "")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    t.readiness.set("http", true);
    let (status, _, _) = send(&t.app, request(Method::GET, "/readyz", None, &[], "")).await;
    assert_eq!(status, StatusCode::OK);
    drain(&t).await;
    let (status, body, _) = send(&t.app, request(Method::GET, "/metrics", None, &[], "")).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).expect("utf-8");
    assert!(
        text.contains(
            r#"fluxtrace_intake_requests_total{route="promotions_report",result="accepted"} 1"#
        ),
        "{text}"
    );
}

// ---- Flux events ------------------------------------------------------------------------

#[tokio::test]
async fn a_flux_event_signed_by_an_independently_computed_hmac_is_accepted() {
    // The HMAC written out from RFC 2104 must itself be right: RFC 4231, test case 2.
    assert_eq!(
        hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let t = start();
    for body in [FLUX_EVENT, FLUX_EVENT_DOCS] {
        let sig = signature(HMAC_KEY, body.as_bytes());
        let (status, v) = send_json(
            &t.app,
            request(
                Method::POST,
                "/v1/flux/events",
                None,
                &[
                    ("x-signature", &sig),
                    ("gotk-component", "kustomize-controller"),
                ],
                body,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["status"], "accepted");
    }
    // A key file with a trailing newline (as `echo` writes it) is the same key: Flux trims it.
    let padded = Auth::with_secrets(&[], Some(b"flux-hmac-key-for-tests\n"));
    assert!(padded
        .check_flux(None, Some(signature(HMAC_KEY, b"x").as_bytes()), b"x")
        .is_ok());
    drain(&t).await;
    assert_eq!(flux_events_applied(&t.metrics), 2);
}

/// What is wrong, the headers sent, the bearer token sent.
type SignatureCase = (
    &'static str,
    Vec<(&'static str, String)>,
    Option<&'static str>,
);

#[tokio::test]
async fn a_flux_event_with_a_wrong_missing_or_foreign_signature_is_refused() {
    let t = start();
    let body = FLUX_EVENT.as_bytes();
    let other_body = FLUX_EVENT_DOCS.as_bytes();
    let good = signature(HMAC_KEY, body);
    let cases: Vec<SignatureCase> = vec![
        ("missing", vec![], None),
        (
            "wrong key",
            vec![("x-signature", signature(b"another key", body))],
            None,
        ),
        (
            "for another body",
            vec![("x-signature", signature(HMAC_KEY, other_body))],
            None,
        ),
        (
            "truncated",
            vec![("x-signature", good[..good.len() - 2].to_string())],
            None,
        ),
        ("not hex", vec![("x-signature", "sha256=zz".into())], None),
        (
            "another algorithm",
            vec![("x-signature", good.replace("sha256=", "sha1="))],
            None,
        ),
        // With an HMAC key configured, a bearer token is not a substitute.
        ("bearer instead", vec![], Some(TOKEN)),
    ];
    for (what, headers, token) in &cases {
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, resp_headers) = send(
            &t.app,
            request(Method::POST, "/v1/flux/events", *token, &hs, FLUX_EVENT),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            resp_headers[header::WWW_AUTHENTICATE],
            "HMAC-SHA256",
            "{what}"
        );
    }
    // Upper-case hex is still the same signature.
    let upper = format!("sha256={}", hex::encode_upper(hmac_sha256(HMAC_KEY, body)));
    let (status, _, _) = send(
        &t.app,
        request(
            Method::POST,
            "/v1/flux/events",
            None,
            &[("x-signature", &upper)],
            FLUX_EVENT,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    drain(&t).await;
    assert_eq!(
        flux_events_applied(&t.metrics),
        1,
        "only the correctly signed one"
    );
    assert_eq!(
        counter(
            &t.metrics,
            "fluxtrace_intake_requests_total",
            r#"route="flux_events",result="unauthorized""#
        ),
        cases.len() as u64
    );
}

/// The example Flux event, with the bearer token.
async fn flux_with_token(t: &TestAgent) -> (StatusCode, serde_json::Value) {
    send_json(
        &t.app,
        request(
            Method::POST,
            "/v1/flux/events",
            Some(TOKEN),
            &[],
            FLUX_EVENT,
        ),
    )
    .await
}

/// `/readyz` tells whether Flux's events come through notification-controller (the lossless
/// path); readiness itself does not depend on it.
#[tokio::test]
async fn readiness_says_whether_flux_events_arrive() {
    let t = start_with(
        Auth::with_secrets(&[TOKEN], None),
        EngineConfig::default(),
        Duration::from_secs(1),
    );
    t.readiness.register("http");
    t.readiness.set("http", true);
    let readyz = || async {
        let (status, body, _) = send(&t.app, request(Method::GET, "/readyz", None, &[], "")).await;
        (status, String::from_utf8(body).expect("utf-8"))
    };
    let (status, body) = readyz().await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("flux events: none received yet") && body.contains("generic-hmac"),
        "{body}"
    );
    let (status, _) = flux_with_token(&t).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = readyz().await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("flux events: 1 received from notification-controller"),
        "{body}"
    );
}

#[tokio::test]
async fn without_an_hmac_key_flux_events_need_the_bearer_token() {
    let t = start_with(
        Auth::with_secrets(&[TOKEN], None),
        EngineConfig::default(),
        Duration::from_secs(1),
    );
    let (status, _, _) = send(
        &t.app,
        request(Method::POST, "/v1/flux/events", None, &[], FLUX_EVENT),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, v) = flux_with_token(&t).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");

    // A kind fluxtrace does not follow: well-formed, accepted, ignored.
    let alert = FLUX_EVENT.replace("\"Kustomization\"", "\"Alert\"");
    let (status, v) = send_json(
        &t.app,
        request(Method::POST, "/v1/flux/events", Some(TOKEN), &[], alert),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(v["status"], "ignored");

    // Malformed: 400 naming the field.
    for (body, field) in [
        (
            r#"{"involvedObject":{"name":"a"},"timestamp":"2026-11-26T10:00:00Z"}"#,
            "involvedObject.kind",
        ),
        (
            r#"{"involvedObject":{"kind":"Kustomization","name":"a"}}"#,
            "timestamp",
        ),
        (
            r#"{"involvedObject":{"kind":"Kustomization","name":"a"},"timestamp":5}"#,
            "timestamp",
        ),
    ] {
        let (status, v) = send_json(
            &t.app,
            request(Method::POST, "/v1/flux/events", Some(TOKEN), &[], body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(field)),
            "{v}"
        );
    }
    let big = format!(r#"{{"message":"{}"}}"#, "m".repeat(MAX_BODY_BYTES));
    let (status, _, _) = send(
        &t.app,
        request(Method::POST, "/v1/flux/events", Some(TOKEN), &[], big),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    drain(&t).await;
    assert_eq!(flux_events_applied(&t.metrics), 1);
    assert_eq!(
        counter(
            &t.metrics,
            "fluxtrace_intake_requests_total",
            r#"route="flux_events",result="ignored""#
        ),
        1
    );
}

#[tokio::test]
async fn with_auth_switched_off_everything_gets_in() {
    let t = start_with(
        Auth::disabled(),
        EngineConfig::default(),
        Duration::from_secs(1),
    );
    let (status, _) = send_json(
        &t.app,
        request(
            Method::POST,
            "/v1/promotions",
            None,
            &[],
            report_json("P-open"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = send_json(
        &t.app,
        request(Method::POST, "/v1/flux/events", None, &[], FLUX_EVENT),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn with_no_token_file_nothing_gets_in() {
    let t = start_with(
        Auth::with_secrets(&[], None),
        EngineConfig::default(),
        Duration::from_secs(1),
    );
    let (status, v) = send_json(
        &t.app,
        request(
            Method::POST,
            "/v1/promotions",
            Some("anything"),
            &[],
            report_json("P-shut"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("--token-file")),
        "{v}"
    );
}

#[tokio::test]
async fn a_shutting_down_agent_answers_503() {
    let t = start();
    let app = t.app.clone();
    assert!(t.agent.shutdown(Duration::from_secs(5)).await.clean());
    let (status, v) = send_json(
        &app,
        request(
            Method::POST,
            "/v1/promotions",
            Some(TOKEN),
            &[],
            report_json("P-late"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error_type"], "unavailable");
}

// ---- replay --serve ---------------------------------------------------------------------

#[tokio::test]
async fn a_replay_is_served_read_only() {
    let stories: Vec<_> = EXAMPLES
        .iter()
        .flat_map(|(_, text)| replay::run(text, EngineConfig::default()).traces)
        .map(|t| t.story)
        .collect();
    let n = stories.len();
    let metrics = std::sync::Arc::new(fluxtrace::metrics::Metrics::new());
    let app = fluxtrace::intake::http::router(Intake::replayed(stories, metrics));
    let (status, v) = send_json(
        &app,
        request(Method::GET, "/v1/promotions/rel-2042", None, &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["outcome"], "failed");
    assert_eq!(v["divergence"]["stage"], "rollout");
    let (status, v) = send_json(
        &app,
        request(Method::GET, "/v1/promotions?limit=1000", None, &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["promotions"].as_array().map(Vec::len), Some(n));
    let (status, v) = send_json(
        &app,
        request(
            Method::POST,
            "/v1/promotions",
            None,
            &[],
            report_json("P-1"),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(v["error_type"], "read_only");
    for (uri, body) in [("/v1/promotions", "{}"), ("/v1/flux/events", FLUX_EVENT)] {
        let (status, _, _) = send(&app, request(Method::POST, uri, None, &[], body)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
    }
}
