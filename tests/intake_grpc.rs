//! The gRPC intake over a real socket (127.0.0.1:0) with tonic's generated client: the same
//! semantics as HTTP (trace ids, idempotence, validation naming the field, auth), and refused
//! calls change nothing.

use std::time::Duration;

use fluxtrace::intake::grpc::proto::promotion_service_client::PromotionServiceClient;
use fluxtrace::intake::grpc::proto::{
    Artifact, GetRequest, Pipeline, PromotionReport, ReportRequest,
};
use fluxtrace::intake::{grpc, MAX_BODY_BYTES};
use fluxtrace::trace::{trace_id_for, Traceparent};
use fluxtrace_testkit::intake::*;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::{Code, Request};

struct Server {
    t: TestAgent,
    client: PromotionServiceClient<Channel>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn serve() -> Server {
    let t = start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let task = tokio::spawn(grpc::serve(
        listener,
        t.intake.clone(),
        stop.clone().cancelled_owned(),
    ));
    let client = PromotionServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_encoding_message_size(4 * MAX_BODY_BYTES);
    Server {
        t,
        client,
        stop,
        task,
    }
}

fn authed<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii"),
        );
    }
    r
}

fn report(id: &str) -> PromotionReport {
    PromotionReport {
        id: id.into(),
        environment: "prod".into(),
        revision: Some(SHA.into()),
        app: Some("shop".into()),
        actor: Some("alice".into()),
        pipeline: Some(Pipeline {
            name: Some("release".into()),
            run_id: Some("42".into()),
            url: None,
        }),
        ..Default::default()
    }
}

fn req(r: PromotionReport) -> ReportRequest {
    ReportRequest { report: Some(r) }
}

#[tokio::test]
async fn reports_and_stories_over_grpc() {
    let mut s = serve().await;
    // A time in the past, but well within the promotion deadline (an hour).
    let started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(90);
    let started = started.round(jiff::Unit::Second).expect("round");
    let first = PromotionReport {
        time: Some(started.to_string()),
        commit_time: Some("2026-11-26T09:15:00+01:00".into()),
        ..report("G-1")
    };
    let a = s
        .client
        .report(authed(req(first), Some(TOKEN)))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(a.promotion_id, "G-1");
    assert_eq!(a.trace_id, trace_id_for("G-1").to_string());
    assert_eq!(
        a.trace_link.as_deref(),
        Some(format!("https://tempo.example/trace/{}", a.trace_id).as_str())
    );

    let with_ci = PromotionReport {
        revision: None,
        artifact: Some(Artifact {
            repository: Some("ghcr.io/acme/app".into()),
            tag: Some("prod".into()),
            digest: Some(DIGEST.into()),
        }),
        traceparent: Some(CI_TRACEPARENT.into()),
        app: Some("payments".into()),
        ..report("G-2")
    };
    let a = s
        .client
        .report(authed(req(with_ci), Some(TOKEN)))
        .await
        .expect("accepted")
        .into_inner();
    let ci = Traceparent::parse(CI_TRACEPARENT).expect("valid");
    assert_eq!(a.trace_id, ci.trace_id.to_string());

    // Reported again: the same trace, nothing rewritten.
    let again = PromotionReport {
        actor: Some("mallory".into()),
        ..report("G-1")
    };
    let a = s
        .client
        .report(authed(req(again), Some(TOKEN)))
        .await
        .expect("accepted")
        .into_inner();
    assert_eq!(a.trace_id, trace_id_for("G-1").to_string());
    drain(&s.t).await;

    let story = s
        .client
        .get(authed(GetRequest { id: "G-1".into() }, Some(TOKEN)))
        .await
        .expect("found")
        .into_inner()
        .story
        .expect("a story");
    assert_eq!(story.promotion_id, "G-1");
    assert_eq!(story.actor.as_deref(), Some("alice"));
    assert_eq!(story.outcome, "in_progress");
    assert_eq!(story.traceability, "reported");
    assert_eq!(story.start, started.to_string());
    assert_eq!(story.commit_time.as_deref(), Some("2026-11-26T08:15:00Z"));
    assert_eq!(
        story.pipeline.and_then(|p| p.name).as_deref(),
        Some("release")
    );
    assert_eq!(story.trace_id, trace_id_for("G-1").to_string());

    let e = s
        .client
        .get(authed(
            GetRequest {
                id: "nobody".into(),
            },
            Some(TOKEN),
        ))
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        counter(
            &s.t.metrics,
            "fluxtrace_intake_requests_total",
            r#"route="grpc_report",result="ok""#
        ),
        3
    );
    s.stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.task).await;
}

/// What is wrong, the report, the token, the code expected, the field the message names.
type Refusal = (
    &'static str,
    PromotionReport,
    Option<&'static str>,
    Code,
    Option<&'static str>,
);

#[tokio::test]
async fn refused_calls_get_their_codes_and_change_nothing() {
    let mut s = serve().await;
    let cases: Vec<Refusal> = vec![
        (
            "no token",
            report("G-x1"),
            None,
            Code::Unauthenticated,
            None,
        ),
        (
            "wrong token",
            report("G-x2"),
            Some("nope"),
            Code::Unauthenticated,
            None,
        ),
        (
            "missing environment",
            PromotionReport {
                environment: String::new(),
                ..report("G-x3")
            },
            Some(TOKEN),
            Code::InvalidArgument,
            Some("environment"),
        ),
        (
            "missing revision",
            PromotionReport {
                revision: None,
                ..report("G-x4")
            },
            Some(TOKEN),
            Code::InvalidArgument,
            Some("revision"),
        ),
        (
            "invalid traceparent",
            PromotionReport {
                traceparent: Some("00-zz-zz-01".into()),
                ..report("G-x5")
            },
            Some(TOKEN),
            Code::InvalidArgument,
            Some("traceparent"),
        ),
        (
            "bad time",
            PromotionReport {
                time: Some("yesterday".into()),
                ..report("G-x6")
            },
            Some(TOKEN),
            Code::InvalidArgument,
            Some("time"),
        ),
        (
            "bad commit time",
            PromotionReport {
                commit_time: Some("last tuesday".into()),
                ..report("G-x9")
            },
            Some(TOKEN),
            Code::InvalidArgument,
            Some("commit_time"),
        ),
        (
            "bad digest",
            PromotionReport {
                revision: None,
                artifact: Some(Artifact {
                    digest: Some("sha256:12".into()),
                    ..Default::default()
                }),
                ..report("G-x7")
            },
            Some(TOKEN),
            Code::InvalidArgument,
            Some("artifact.digest"),
        ),
        (
            "over 1 MiB",
            PromotionReport {
                app: Some("x".repeat(MAX_BODY_BYTES + 1)),
                ..report("G-x8")
            },
            Some(TOKEN),
            // tonic's size limit: OUT_OF_RANGE, or RESOURCE_EXHAUSTED when gzip-compressed.
            Code::ResourceExhausted,
            None,
        ),
    ];
    for (what, r, token, code, field) in cases {
        let e = s
            .client
            .report(authed(req(r), token))
            .await
            .expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e:?}");
        if let Some(f) = field {
            assert!(e.message().contains(f), "{what}: {}", e.message());
        }
    }
    // An empty request: the first required field is named.
    let e = s
        .client
        .report(authed(ReportRequest { report: None }, Some(TOKEN)))
        .await
        .expect_err("empty");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("`id`"), "{}", e.message());
    let e = s
        .client
        .get(authed(GetRequest { id: "G-1".into() }, None))
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);

    // The server is still up, and nothing refused reached the engine.
    drain(&s.t).await;
    assert_eq!(promotions_applied(&s.t.metrics), 1, "only the sentinel");
    for i in 1..=8 {
        assert!(s.t.handle.story(&format!("G-x{i}")).await.is_none());
    }
    let ok = s
        .client
        .report(authed(req(report("G-after")), Some(TOKEN)))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(
        counter(
            &s.t.metrics,
            "fluxtrace_intake_requests_total",
            r#"route="grpc_report",result="unauthorized""#
        ),
        2
    );
}
