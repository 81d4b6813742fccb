//! The traffic prober against real HTTP servers on 127.0.0.1: the new version served, the old
//! one still served, a canary serving both, errors, a server that hangs, a body too large, and a
//! URL outside the allow-list.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use fluxtrace::agent::Clock;
use fluxtrace::model::{Kind, ObjectRef, ProbeRequest, ProbeResult, ProbeVerdict};
use fluxtrace::probe::{ProbeSettings, Prober};

fn settings() -> ProbeSettings {
    ProbeSettings {
        samples: 10,
        interval: Duration::from_millis(10),
        timeout: Duration::from_millis(300),
        window: 5,
        ratio: 1.0,
        deadline: Duration::from_secs(3),
        allow_hosts: vec!["127.0.0.1".into()],
        max_body: 1024,
        concurrency: 4,
    }
}

async fn serve(app: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}")
}

fn request(url: String, expect: &str) -> ProbeRequest {
    ProbeRequest {
        promotion_id: "P-1".into(),
        deployment: ObjectRef::new(Kind::Deployment, "shop", "checkout"),
        generation: 4,
        url,
        expect: expect.into(),
        expected: "2.0.0".into(),
        requested_at: jiff::Timestamp::now(),
    }
}

async fn probe(s: ProbeSettings, req: ProbeRequest) -> ProbeResult {
    Prober::new(s).probe(&req, &Clock::system()).await
}

fn reason(r: &ProbeResult) -> &str {
    match &r.verdict {
        ProbeVerdict::Passed => "Passed",
        ProbeVerdict::Failed { reason, .. } | ProbeVerdict::Refused { reason, .. } => reason,
    }
}

#[tokio::test]
async fn the_new_version_served_passes() {
    let app = Router::new().route(
        "/version",
        get(|| async {
            (
                [("X-App-Version", "2.0.0")],
                r#"{"build":{"version":"2.0.0"}}"#,
            )
        }),
    );
    let base = serve(app).await;
    for expect in ["header:X-App-Version", "json:/build/version", "body"] {
        let r = probe(settings(), request(format!("{base}/version"), expect)).await;
        assert_eq!(r.verdict, ProbeVerdict::Passed, "{expect}");
        assert_eq!(
            (r.samples, r.matched),
            (5, 5),
            "{expect}: stops once the window is clear"
        );
        assert_eq!(r.versions.get("2.0.0"), Some(&5));
    }
}

#[tokio::test]
async fn the_old_version_still_served_fails_naming_what_was_seen() {
    let app = Router::new().route(
        "/version",
        get(|| async { ([("X-App-Version", "1.9.0")], "") }),
    );
    let base = serve(app).await;
    let r = probe(
        settings(),
        request(format!("{base}/version"), "header:X-App-Version"),
    )
    .await;
    assert_eq!(reason(&r), "WrongVersion");
    assert_eq!(r.samples, 10);
    assert_eq!(r.matched, 0);
    assert_eq!(r.versions.get("1.9.0"), Some(&10));
    let ProbeVerdict::Failed { message, .. } = &r.verdict else {
        panic!("failed")
    };
    assert!(
        message.contains("1.9.0") && message.contains("2.0.0"),
        "{message}"
    );
}

#[tokio::test]
async fn a_canary_serving_both_versions_fails_at_full_ratio_and_passes_at_half() {
    let n = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/version",
        get(move || {
            let n = n.clone();
            async move {
                let v = if n.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                    "2.0.0"
                } else {
                    "1.9.0"
                };
                ([("X-App-Version", v)], "")
            }
        }),
    );
    let base = serve(app).await;
    let r = probe(
        settings(),
        request(format!("{base}/version"), "header:X-App-Version"),
    )
    .await;
    assert_eq!(reason(&r), "WrongVersion");
    assert!(r.versions.contains_key("2.0.0") && r.versions.contains_key("1.9.0"));
    let half = ProbeSettings {
        ratio: 0.4,
        ..settings()
    };
    let r = probe(
        half,
        request(format!("{base}/version"), "header:X-App-Version"),
    )
    .await;
    assert_eq!(r.verdict, ProbeVerdict::Passed);
}

#[tokio::test]
async fn server_errors_fail_with_the_status_code() {
    let app = Router::new().route(
        "/version",
        get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
    );
    let base = serve(app).await;
    let r = probe(settings(), request(format!("{base}/version"), "body")).await;
    assert_eq!(reason(&r), "HTTPError");
    assert_eq!(r.failed_status, Some(500));
    assert_eq!(r.versions.get("http 500"), Some(&10));
}

#[tokio::test]
async fn a_server_that_hangs_is_bounded_by_the_timeouts() {
    let app = Router::new().route(
        "/version",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "never"
        }),
    );
    let base = serve(app).await;
    let s = ProbeSettings {
        deadline: Duration::from_secs(1),
        ..settings()
    };
    let started = std::time::Instant::now();
    let r = probe(s, request(format!("{base}/version"), "body")).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(reason(&r), "Unreachable");
    assert!(r.samples >= 1);
}

#[tokio::test]
async fn a_body_over_the_limit_is_not_read() {
    let app = Router::new().route("/version", get(|| async { "2.0.0 ".repeat(10_000) }));
    let base = serve(app).await;
    let r = probe(settings(), request(format!("{base}/version"), "body")).await;
    assert_eq!(reason(&r), "Unreachable");
    let ProbeVerdict::Failed { message, .. } = &r.verdict else {
        panic!("failed")
    };
    assert!(message.contains("over 1024 bytes"), "{message}");
}

#[tokio::test]
async fn a_url_outside_the_allow_list_is_refused_without_a_request() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().route(
        "/version",
        get(move || {
            h.fetch_add(1, Ordering::SeqCst);
            async { "2.0.0" }
        }),
    );
    let base = serve(app).await;
    let outside = base.replace("127.0.0.1", "localhost");
    let r = probe(settings(), request(format!("{outside}/version"), "body")).await;
    assert_eq!(reason(&r), "HostNotAllowed");
    assert!(matches!(r.verdict, ProbeVerdict::Refused { .. }));
    assert_eq!(r.samples, 0);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no request was sent");
    // The default allow-list admits in-cluster Services only.
    let r = probe(
        ProbeSettings::default(),
        request("http://169.254.169.254/latest/meta-data".into(), "body"),
    )
    .await;
    assert_eq!(reason(&r), "HostNotAllowed");
}

#[tokio::test]
async fn redirects_to_another_host_are_not_followed() {
    let app = Router::new()
        .route(
            "/version",
            get(|| async {
                let mut h = HeaderMap::new();
                h.insert(
                    "location",
                    "http://example.com/version".parse().expect("header"),
                );
                (StatusCode::FOUND, h).into_response()
            }),
        )
        .route(
            "/same",
            get(|| async {
                let mut h = HeaderMap::new();
                h.insert("location", "/final".parse().expect("header"));
                (StatusCode::FOUND, h).into_response()
            }),
        )
        .route(
            "/final",
            get(|| async { ([("X-App-Version", "2.0.0")], "") }),
        );
    let base = serve(app).await;
    let r = probe(settings(), request(format!("{base}/version"), "body")).await;
    assert_eq!(reason(&r), "Unreachable");
    let ProbeVerdict::Failed { message, .. } = &r.verdict else {
        panic!("failed")
    };
    assert!(
        message.contains("redirect to another host refused"),
        "{message}"
    );
    let r = probe(
        settings(),
        request(format!("{base}/same"), "header:X-App-Version"),
    )
    .await;
    assert_eq!(
        r.verdict,
        ProbeVerdict::Passed,
        "same-host redirects are followed"
    );
}
