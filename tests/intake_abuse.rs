//! Input that tries to mislead a terminal or a client: escapes in report fields, bad
//! percent-encoding in a path, over-long ids in Flux event metadata.

use axum::http::{header, Method, StatusCode};
use fluxtrace_testkit::intake::*;

#[tokio::test]
async fn the_text_story_escapes_terminal_controls_from_the_report() {
    let t = start();
    let body = format!(
        r#"{{"id":"P-esc","environment":"prod","revision":"{SHA}","app":"shop\u202eevil","actor":"mallory\u001b[2J\u001b]0;pwned\u0007"}}"#
    );
    let (status, _) = send_json(
        &t.app,
        request(Method::POST, "/v1/promotions", Some(TOKEN), &[], body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    drain(&t).await;
    let (status, text, _) = send(
        &t.app,
        request(
            Method::GET,
            "/v1/promotions/P-esc",
            Some(TOKEN),
            &[(header::ACCEPT.as_str(), "text/plain")],
            "",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(text).expect("UTF-8");
    assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}') && !text.contains('\u{7}'));
    assert!(text.contains("mallory\\u{1b}[2J"), "{text}");
    assert!(text.contains("shop\\u{202e}evil"), "{text}");
}

#[tokio::test]
async fn a_bad_percent_escape_in_the_path_is_named_as_a_path_segment() {
    let t = start();
    let (status, v) = send_json(
        &t.app,
        request(Method::GET, "/v1/promotions/P-%ff", Some(TOKEN), &[], ""),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = v["error"].as_str().expect("an error");
    assert!(error.starts_with("path segment `id` is invalid"), "{error}");
    assert!(!error.contains("query"), "{error}");
    assert_eq!(v["error_type"], "invalid_path");
}

#[tokio::test]
async fn a_flux_event_with_a_huge_promotion_id_is_refused_like_a_report() {
    let t = start_with(
        fluxtrace::intake::Auth::with_secrets(&[TOKEN], None),
        fluxtrace::correlate::EngineConfig::default(),
        std::time::Duration::from_secs(1),
    );
    let body = serde_json::json!({
        "involvedObject": {"kind": "Kustomization", "name": "apps", "namespace": "flux-system"},
        "severity": "info", "timestamp": "2026-11-26T10:00:00Z", "reason": "Progressing",
        "message": "m", "metadata": {"promotion-id": "p".repeat(900_000)}
    })
    .to_string();
    let (status, v) = send_json(
        &t.app,
        request(Method::POST, "/v1/flux/events", Some(TOKEN), &[], body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("promotion-id")),
        "{v}"
    );
    assert_eq!(flux_events_applied(&t.metrics), 0);
}
