//! Spans go out over real OTLP/gRPC and arrive right.
//!
//! Every bundled recording is replayed, exported with [`Exporter`] (and by the real binary) to an
//! in-process receiver, and the assertions are made on the `ExportTraceServiceRequest`s that
//! crossed the wire: ids, parents, resources, status, attributes, events. Collectors that are
//! down, refuse or hang must give errors that hand the spans back, in bounded time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use fluxtrace::correlate::EngineConfig;
use fluxtrace::export::{ExportError, ExportSettings, Exporter};
use fluxtrace::replay::{self, EXAMPLES};
use fluxtrace::trace::{AttrValue, SpanRecord, SpanStatus, Traceparent};
use fluxtrace_testkit::otlp_receiver::{
    attr, attr_str, export_settings, resource_service, silent_endpoint, unused_endpoint,
    OtlpReceiver,
};
use fluxtrace_testkit::recordings::example;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, SpanFlags};
use tonic::Code;

const CLUSTER: &str = "test-cluster";

/// The fixed span names of the stages a recording can reach (the traffic probe is in none).
const SPAN_NAMES: [&str; 8] = [
    "promotion",
    "image.update",
    "trigger",
    "source.fetch",
    "reconcile",
    "apply",
    "rollout",
    "traffic.canary",
];

/// Where each recording diverges, as examples/recordings/README.md describes it.
const DIVERGENCE: [(&str, Option<&str>); 33] = [
    ("oci-success.jsonl", None),
    ("oci-rollout-imagepull.jsonl", Some("rollout")),
    ("git-success.jsonl", None),
    ("git-build-failure.jsonl", Some("reconcile")),
    ("helmrelease-upgrade-failure.jsonl", Some("apply")),
    ("receiver-trigger.jsonl", None),
    ("untraced-rollout.jsonl", None),
    ("multi-env-oci.jsonl", None),
    ("multi-env-git.jsonl", None),
    ("monorepo-bootstrap.jsonl", None),
    ("helmrelease-chartref-success.jsonl", None),
    ("image-automation-success.jsonl", None),
    ("image-automation-push-failure.jsonl", Some("image")),
    ("unreported-git-success.jsonl", None),
    ("unreported-git-failure.jsonl", Some("reconcile")),
    ("unreported-oci-success.jsonl", None),
    ("unreported-oci-failure.jsonl", Some("rollout")),
    ("flagger-canary-success.jsonl", None),
    ("flagger-canary-rollback.jsonl", Some("traffic")),
    ("history-oci.jsonl", None),
    ("history-git.jsonl", None),
    ("history-image-automation.jsonl", None),
    ("history-helm.jsonl", None),
    ("history-oci-failure.jsonl", Some("rollout")),
    ("real-git-unreported.jsonl", None),
    ("real-helm-values.jsonl", None),
    ("real-helm-upgrade-stalled.jsonl", Some("rollout")),
    ("real-kustomize-retry.jsonl", None),
    ("real-kustomize-path-not-found.jsonl", Some("reconcile")),
    ("real-kustomize-depends-on.jsonl", None),
    ("real-git-overtaken.jsonl", None),
    ("image-automation-push-branch.jsonl", None),
    ("real-rollout-quota.jsonl", Some("rollout")),
];

/// Longest an export may take in these tests, whatever the collector does.
const EXPORT_BOUND: Duration = Duration::from_secs(20);

/// Longest a run of the binary may take.
const CLI_BOUND: Duration = Duration::from_secs(60);

type Key = ([u8; 16], [u8; 8]);

fn record_key(r: &SpanRecord) -> Key {
    (r.trace_id.0, r.span_id.0)
}

fn wire_key(s: &Span) -> Key {
    (
        s.trace_id.as_slice().try_into().expect("16-byte trace id"),
        s.span_id.as_slice().try_into().expect("8-byte span id"),
    )
}

fn spans_of(text: &str, cluster: &str) -> Vec<SpanRecord> {
    let r = replay::run(
        text,
        EngineConfig {
            cluster: cluster.into(),
            ..Default::default()
        },
    );
    assert!(r.bad.is_empty(), "a bundled recording has bad lines");
    r.spans().cloned().collect()
}

/// The CI traceparent a recording's promotion report carries, if any.
fn traceparent_in(text: &str) -> Option<Traceparent> {
    let value = text.split("\"traceparent\":\"").nth(1)?.split('"').next()?;
    Some(Traceparent::parse(value).expect("the recording's traceparent parses"))
}

fn settings(endpoint: String) -> ExportSettings {
    export_settings(endpoint, CLUSTER)
}

type ExportResult = Result<(), (Vec<SpanRecord>, Vec<ExportError>)>;

/// One export through a fresh [`Exporter`], failing the test if it does not end in time.
async fn export(settings: ExportSettings, spans: Vec<SpanRecord>) -> ExportResult {
    let mut exporter = Exporter::new(settings);
    let result = tokio::time::timeout(EXPORT_BOUND, exporter.export(spans))
        .await
        .expect("export did not finish in bounded time");
    exporter.shutdown();
    result
}

fn same_value(want: &AttrValue, got: Option<&Value>) -> bool {
    match (want, got) {
        (AttrValue::Str(w), Some(Value::StringValue(g))) => w == g,
        (AttrValue::Int(w), Some(Value::IntValue(g))) => w == g,
        (AttrValue::Bool(w), Some(Value::BoolValue(g))) => w == g,
        (AttrValue::StrArray(w), Some(Value::ArrayValue(g))) => g
            .values
            .iter()
            .map(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.as_str()),
                _ => None,
            })
            .eq(w.iter().map(|s| Some(s.as_str()))),
        _ => false,
    }
}

fn nanos(t: jiff::Timestamp) -> u64 {
    u64::try_from(t.as_nanosecond()).expect("timestamp after 1970")
}

fn id_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What arrived is exactly what was sent: every span once, one resource per `service.name`
/// (with `k8s.cluster.name`), one gzip request per resource, and each span field for field.
fn assert_arrived_as_sent(
    label: &str,
    sent: &[SpanRecord],
    receiver: &OtlpReceiver,
    cluster: &str,
) {
    let by_key: BTreeMap<Key, &SpanRecord> = sent.iter().map(|r| (record_key(r), r)).collect();
    assert_eq!(
        by_key.len(),
        sent.len(),
        "{label}: the records repeat a span id"
    );
    let services: BTreeSet<&str> = sent.iter().map(|r| r.service).collect();

    let calls = receiver.calls();
    assert_eq!(
        calls.len(),
        services.len(),
        "{label}: one request per resource (service.name) was expected"
    );
    let mut seen_services = BTreeSet::new();
    let mut arrived: BTreeMap<Key, usize> = BTreeMap::new();
    for call in &calls {
        assert_eq!(call.refused, None, "{label}: a call was refused");
        assert_eq!(call.encoding.as_deref(), Some("gzip"), "{label}: not gzip");
        for rs in &call.request.resource_spans {
            let resource = rs
                .resource
                .as_ref()
                .expect("a resource on every ResourceSpans");
            let names = resource
                .attributes
                .iter()
                .filter(|kv| kv.key == "service.name")
                .count();
            assert_eq!(
                names, 1,
                "{label}: service.name on a resource {names} times"
            );
            let service = resource_service(rs).expect("a string service.name");
            assert!(
                seen_services.insert(service.to_string()),
                "{label}: service {service} came in two resources"
            );
            assert_eq!(
                attr_str(&resource.attributes, "k8s.cluster.name"),
                Some(cluster),
                "{label}: k8s.cluster.name of resource {service}"
            );
            // The agent's own spans say which agent made them; the controllers' spans do not
            // carry fluxtrace's version.
            let own = service.starts_with("fluxtrace");
            assert_eq!(
                attr_str(&resource.attributes, "service.version"),
                own.then_some(env!("CARGO_PKG_VERSION")),
                "{label}: service.version of resource {service}"
            );
            let instance = attr_str(&resource.attributes, "service.instance.id");
            assert_eq!(
                instance.is_some_and(|i| i.len() == 36 && i.matches('-').count() == 4),
                own,
                "{label}: service.instance.id (a UUID) of resource {service}: {instance:?}"
            );
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().expect("an instrumentation scope");
                assert_eq!(scope.name, "fluxtrace", "{label}: scope name");
                for span in &ss.spans {
                    let key = wire_key(span);
                    let record = by_key.get(&key).unwrap_or_else(|| {
                        panic!(
                            "{label}: span {} arrived but was never sent",
                            id_hex(&span.span_id)
                        )
                    });
                    assert_eq!(
                        record.service, service,
                        "{label}: span {} {} arrived under the wrong resource",
                        record.name, record.span_id
                    );
                    assert_span_is_record(label, record, span, cluster);
                    *arrived.entry(key).or_default() += 1;
                }
            }
        }
    }
    assert_eq!(
        seen_services,
        services.iter().map(|s| s.to_string()).collect(),
        "{label}: resources"
    );
    for r in sent {
        let n = arrived.get(&record_key(r)).copied().unwrap_or(0);
        assert_eq!(
            n, 1,
            "{label}: span {} {} arrived {n} times",
            r.name, r.span_id
        );
    }
}

/// One span, field for field against the record it came from.
fn assert_span_is_record(label: &str, r: &SpanRecord, s: &Span, cluster: &str) {
    let what = format!("{label}: span {} {}", r.name, r.span_id);
    assert_eq!(s.name, r.name, "{what}: name");
    assert!(
        SPAN_NAMES.contains(&s.name.as_str()),
        "{what}: unknown name"
    );
    let parent: Vec<u8> = r.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default();
    assert_eq!(s.parent_span_id, parent, "{what}: parent span id");
    // A promotion is a pipeline run (SERVER, as the CI/CD conventions give); stages are internal.
    let kind = if r.name == "promotion" {
        SpanKind::Server
    } else {
        SpanKind::Internal
    };
    assert_eq!(s.kind, kind as i32, "{what}: kind");
    assert_eq!(s.flags & 0xff, 1, "{what}: sampled trace flag");
    // The only parent outside fluxtrace is the CI span a promotion root hangs under.
    let remote_parent = r.name == "promotion" && r.parent_span_id.is_some();
    assert_eq!(
        s.flags & SpanFlags::ContextIsRemoteMask as u32 != 0,
        remote_parent,
        "{what}: flags {:#x} must mark a CI parent (and only that) as remote",
        s.flags
    );
    assert_eq!(s.start_time_unix_nano, nanos(r.start), "{what}: start");
    assert_eq!(s.end_time_unix_nano, nanos(r.end), "{what}: end");
    assert!(
        s.start_time_unix_nano <= s.end_time_unix_nano,
        "{what}: ends before it starts"
    );

    let status = s.status.as_ref().expect("a status on every span");
    match &r.status {
        SpanStatus::Ok => assert_eq!(status.code, StatusCode::Ok as i32, "{what}: status"),
        SpanStatus::Unset => assert_eq!(status.code, StatusCode::Unset as i32, "{what}: status"),
        SpanStatus::Error { description } => {
            assert_eq!(status.code, StatusCode::Error as i32, "{what}: status");
            assert_eq!(&status.message, description, "{what}: status message");
        }
    }

    assert_eq!(
        s.attributes.len(),
        r.attributes.0.len(),
        "{what}: attribute count"
    );
    for (key, want) in &r.attributes.0 {
        assert!(
            same_value(want, attr(&s.attributes, key)),
            "{what}: attribute {key}: sent {want:?}, got {:?}",
            attr(&s.attributes, key)
        );
    }
    let result = if r.name == "promotion" {
        "cicd.pipeline.result"
    } else {
        "cicd.pipeline.task.run.result"
    };
    for key in [
        "delivery.promotion.id",
        "delivery.stage",
        result,
        "k8s.cluster.name",
    ] {
        assert!(attr_str(&s.attributes, key).is_some(), "{what}: no {key}");
    }
    assert_eq!(
        attr_str(&s.attributes, "k8s.cluster.name"),
        Some(cluster),
        "{what}: k8s.cluster.name"
    );

    assert_eq!(s.events.len(), r.events.len(), "{what}: event count");
    for (e, want) in s.events.iter().zip(&r.events) {
        assert_eq!(e.name, want.name, "{what}: event name");
        assert_eq!(
            e.time_unix_nano,
            nanos(want.time),
            "{what}: event {} time",
            e.name
        );
        for (key, v) in &want.attributes.0 {
            assert!(
                same_value(v, attr(&e.attributes, key)),
                "{what}: event {} attribute {key}",
                e.name
            );
        }
    }
    assert_eq!(s.links.len(), r.links.len(), "{what}: link count");
    for (l, want) in s.links.iter().zip(&r.links) {
        assert_eq!(
            l.trace_id,
            want.trace_id.0.to_vec(),
            "{what}: link trace id"
        );
        assert_eq!(l.span_id, want.span_id.0.to_vec(), "{what}: link span id");
    }
}

/// What a delivery trace must look like once it has crossed the wire: one `promotion` root per
/// trace (under the CI span when the recording has a traceparent), stage spans hanging inside
/// their trace, error spans explained, failed roots naming the stage that diverged.
fn assert_delivery_shape(label: &str, text: &str, spans: &[(Option<String>, Span)]) {
    let expected_divergence = DIVERGENCE
        .iter()
        .find(|(n, _)| *n == label)
        .map(|(_, d)| *d)
        .expect("every recording has an expectation");
    let ci = traceparent_in(text);
    let mut traces: BTreeMap<Vec<u8>, Vec<&Span>> = BTreeMap::new();
    for (_, s) in spans {
        traces.entry(s.trace_id.clone()).or_default().push(s);
    }
    assert!(!traces.is_empty(), "{label}: no trace arrived");
    let mut joined_ci = false;
    for (trace_id, spans) in &traces {
        let what = format!("{label}: trace {}", id_hex(trace_id));
        let ids: BTreeSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
        let roots: Vec<&Span> = spans
            .iter()
            .copied()
            .filter(|s| s.parent_span_id.is_empty() || !ids.contains(s.parent_span_id.as_slice()))
            .collect();
        assert_eq!(roots.len(), 1, "{what}: {} roots", roots.len());
        let root = roots[0];
        assert_eq!(root.name, "promotion", "{what}: root name");
        assert_eq!(
            attr_str(&root.attributes, "delivery.stage"),
            Some("promotion")
        );
        match ci {
            Some(tp) if tp.trace_id.0.as_slice() == trace_id.as_slice() => {
                joined_ci = true;
                assert_eq!(
                    root.parent_span_id,
                    tp.span_id.0.to_vec(),
                    "{what}: the root must be a child of the CI span"
                );
            }
            _ => assert!(
                root.parent_span_id.is_empty(),
                "{what}: a root without CI context has no parent"
            ),
        }

        for s in spans {
            let status = s.status.as_ref().expect("a status");
            // The CI/CD result of the span: the root's pipeline result, a stage's task result.
            let key = if s.name == "promotion" {
                "cicd.pipeline.result"
            } else {
                "cicd.pipeline.task.run.result"
            };
            let outcome = attr_str(&s.attributes, key);
            assert!(outcome.is_some(), "{what}: {} without {key}", s.name);
            if status.code == StatusCode::Error as i32 {
                assert!(
                    !status.message.is_empty(),
                    "{what}: {} error without a description",
                    s.name
                );
                assert!(
                    matches!(outcome, Some("failure" | "timeout")),
                    "{what}: {} failed but its result is {outcome:?}",
                    s.name
                );
            } else if outcome == Some("cancellation") {
                // Superseded: neither an error nor a success.
                assert_eq!(
                    status.code,
                    StatusCode::Unset as i32,
                    "{what}: {} status",
                    s.name
                );
            } else {
                assert_eq!(
                    status.code,
                    StatusCode::Ok as i32,
                    "{what}: {} status",
                    s.name
                );
            }
            if s.name == "rollout" {
                assert!(
                    !s.events.is_empty(),
                    "{what}: a rollout span without events"
                );
            }
        }

        let failed = root.status.as_ref().map(|st| st.code) == Some(StatusCode::Error as i32);
        let divergence = attr_str(&root.attributes, "delivery.divergence.stage");
        assert_eq!(
            failed,
            divergence.is_some(),
            "{what}: failed root <=> divergence stage"
        );
        assert_eq!(divergence, expected_divergence, "{what}: divergence stage");
        if let Some(stage) = divergence {
            assert!(
                spans.iter().any(|s| {
                    attr_str(&s.attributes, "delivery.stage") == Some(stage)
                        && s.status.as_ref().map(|st| st.code) == Some(StatusCode::Error as i32)
                }),
                "{what}: diverged at {stage} but no {stage} span failed"
            );
        }
    }
    assert_eq!(
        joined_ci,
        ci.is_some(),
        "{label}: the CI trace was not continued"
    );
}

#[tokio::test]
async fn every_recording_arrives_whole_over_otlp_grpc() {
    for (name, text) in EXAMPLES {
        let sent = spans_of(text, CLUSTER);
        assert!(!sent.is_empty(), "{name}: no spans");
        let receiver = OtlpReceiver::start().await;
        export(settings(receiver.endpoint()), sent.clone())
            .await
            .unwrap_or_else(|(_, errors)| panic!("{name}: export failed: {errors:?}"));
        assert_arrived_as_sent(name, &sent, &receiver, CLUSTER);
        assert_delivery_shape(name, text, &receiver.spans());
    }
}

#[tokio::test]
async fn all_recordings_in_one_export_group_by_resource() {
    // A history recording's trace is the one of the recording it adds history to: sent once.
    let sent: Vec<SpanRecord> = EXAMPLES
        .iter()
        .filter(|(name, _)| !name.starts_with("history-"))
        .flat_map(|(_, text)| spans_of(text, CLUSTER))
        .collect();
    let receiver = OtlpReceiver::start().await;
    export(settings(receiver.endpoint()), sent.clone())
        .await
        .unwrap_or_else(|(_, errors)| panic!("export failed: {errors:?}"));
    assert_arrived_as_sent("all recordings", &sent, &receiver, CLUSTER);
    // One trace per promotion (two recordings hold two; a history recording's trace is the
    // one of the recording it adds history to), one resource per component that did the work.
    let traces: BTreeSet<_> = receiver
        .spans()
        .into_iter()
        .map(|(_, s)| s.trace_id)
        .collect();
    let promotions: Vec<(String, usize)> = EXAMPLES
        .iter()
        .map(|(name, text)| {
            let n = fluxtrace::replay::run(text, EngineConfig::default())
                .traces
                .len();
            (name.to_string(), n)
        })
        .collect();
    let count = |history: bool| -> usize {
        promotions
            .iter()
            .filter(|(n, _)| n.starts_with("history-") == history)
            .map(|(_, c)| c)
            .sum()
    };
    let histories = promotions
        .iter()
        .filter(|(n, _)| n.starts_with("history-"))
        .count();
    // The multi-environment recordings hold two promotions each.
    assert_eq!(count(false), EXAMPLES.len() - histories + 2);
    assert_eq!(count(true), histories);
    assert_eq!(traces.len(), count(false));
}

#[tokio::test]
async fn collector_down_hands_every_span_back() {
    let sent = spans_of(example("oci-rollout-imagepull.jsonl"), CLUSTER);
    let started = Instant::now();
    let (failed, errors) = export(settings(unused_endpoint()), sent.clone())
        .await
        .expect_err("nothing listens there");
    assert_failed_per_service(&sent, &failed, &errors);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn collector_refusing_hands_spans_back_for_a_later_retry() {
    let sent = spans_of(example("oci-success.jsonl"), CLUSTER);
    let services: BTreeSet<&str> = sent.iter().map(|r| r.service).collect();
    let receiver = OtlpReceiver::start().await;
    receiver.refuse_all(Code::Unavailable);
    let (failed, errors) = export(settings(receiver.endpoint()), sent.clone())
        .await
        .expect_err("the collector refused");
    assert_failed_per_service(&sent, &failed, &errors);
    for e in &errors {
        assert!(e.to_string().contains("Unavailable"), "{e}");
    }
    // retries: 0 means one attempt per resource, and no more.
    assert_eq!(receiver.calls().len(), services.len());
    assert!(receiver.accepted().is_empty());

    receiver.accept_all();
    receiver.clear();
    export(settings(receiver.endpoint()), failed)
        .await
        .unwrap_or_else(|(_, errors)| panic!("the retry failed: {errors:?}"));
    assert_arrived_as_sent("retry of oci-success", &sent, &receiver, CLUSTER);
}

#[tokio::test]
async fn one_refused_resource_hands_back_only_its_spans() {
    let sent = spans_of(example("oci-success.jsonl"), CLUSTER);
    let refused = "kube-controller-manager";
    assert!(sent.iter().any(|r| r.service == refused));
    let receiver = OtlpReceiver::start().await;
    receiver.refuse_service(refused, Code::Unavailable);
    let (failed, errors) = export(settings(receiver.endpoint()), sent.clone())
        .await
        .expect_err("one resource was refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].to_string().contains(refused), "{}", errors[0]);
    let want: BTreeSet<Key> = sent
        .iter()
        .filter(|r| r.service == refused)
        .map(record_key)
        .collect();
    let got: BTreeSet<Key> = failed.iter().map(record_key).collect();
    assert_eq!(got, want, "exactly the refused resource's spans come back");
    assert_eq!(failed.len(), want.len());
    let arrived: BTreeSet<Key> = receiver.spans().iter().map(|(_, s)| wire_key(s)).collect();
    let others: BTreeSet<Key> = sent
        .iter()
        .filter(|r| r.service != refused)
        .map(record_key)
        .collect();
    assert_eq!(arrived, others, "the other resources still arrive");
}

#[tokio::test]
async fn retries_follow_the_settings() {
    let sent: Vec<SpanRecord> = spans_of(example("oci-success.jsonl"), CLUSTER)
        .into_iter()
        .filter(|r| r.name == "promotion")
        .collect();
    let receiver = OtlpReceiver::start().await;
    receiver.refuse_all(Code::Unavailable);
    let (failed, _) = export(
        ExportSettings {
            retries: 2,
            ..settings(receiver.endpoint())
        },
        sent.clone(),
    )
    .await
    .expect_err("the collector refused");
    assert_eq!(failed.len(), sent.len());
    assert_eq!(receiver.calls().len(), 3, "one attempt and two retries");
}

#[tokio::test]
async fn hung_collector_times_out() {
    let sent = spans_of(example("oci-success.jsonl"), CLUSTER);
    let started = Instant::now();
    let (failed, errors) = export(
        ExportSettings {
            timeout: Some(Duration::from_millis(500)),
            ..settings(silent_endpoint().await)
        },
        sent.clone(),
    )
    .await
    .expect_err("the collector never answers");
    assert_failed_per_service(&sent, &failed, &errors);
    let services = sent
        .iter()
        .map(|r| r.service)
        .collect::<BTreeSet<_>>()
        .len();
    // Each resource may take its timeout, and a little more.
    let bound = Duration::from_millis(500 * services as u64) + Duration::from_secs(3);
    assert!(started.elapsed() < bound, "took {:?}", started.elapsed());
}

/// Every span came back, and each resource has its own error that names its service.
fn assert_failed_per_service(sent: &[SpanRecord], failed: &[SpanRecord], errors: &[ExportError]) {
    let want: BTreeSet<Key> = sent.iter().map(record_key).collect();
    let got: BTreeSet<Key> = failed.iter().map(record_key).collect();
    assert_eq!(got, want, "every span is handed back");
    assert_eq!(failed.len(), sent.len(), "each span handed back once");
    for r in failed {
        let original = sent.iter().find(|s| record_key(s) == record_key(r));
        assert_eq!(original, Some(r), "handed back unchanged");
    }
    let mut per_service: BTreeMap<&str, usize> = BTreeMap::new();
    for r in sent {
        *per_service.entry(r.service).or_default() += 1;
    }
    assert_eq!(
        errors.len(),
        per_service.len(),
        "one error per resource: {errors:?}"
    );
    for e in errors {
        let ExportError::Send { service, spans, .. } = e else {
            panic!("not a send error: {e}");
        };
        assert_eq!(per_service.get(service), Some(spans), "{e}");
        assert!(
            e.to_string().contains(service),
            "the error must name {service}: {e}"
        );
        // Refused as unavailable, or no answer within the timeout: worth retrying later.
        assert_eq!(e.metric_label(), "unavailable", "{e}");
    }
}

// The binary.

/// `fluxtrace ARGS` from the crate root, with no OTLP or fluxtrace settings from this
/// environment.
fn fluxtrace(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fluxtrace"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("OTEL_") || k.starts_with("FLUXTRACE_") || k == "RUST_LOG" {
            cmd.env_remove(&key);
        }
    }
    cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    cmd
}

/// Runs the binary off the runtime (the receiver keeps serving meanwhile), killing it if it
/// outlives [`CLI_BOUND`].
async fn run(cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || run_bounded(cmd))
        .await
        .expect("the runner thread")
}

fn run_bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fluxtrace");
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for fluxtrace") {
            break status;
        }
        if started.elapsed() > CLI_BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fluxtrace {cmd:?} ran longer than {CLI_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const OCI_SUCCESS: &str = "examples/recordings/oci-success.jsonl";

/// The binary exported oci-success for cluster `c1` to `receiver`, whole.
fn assert_cli_exported(o: &Output, receiver: &OtlpReceiver) {
    assert!(
        o.status.success(),
        "exit {:?}, stderr:\n{}",
        o.status,
        stderr(o)
    );
    let sent = spans_of(example("oci-success.jsonl"), "c1");
    assert_arrived_as_sent("fluxtrace replay oci-success", &sent, receiver, "c1");
    assert_delivery_shape(
        "oci-success.jsonl",
        example("oci-success.jsonl"),
        &receiver.spans(),
    );
    let said = format!("exported {} span(s) to {}", sent.len(), receiver.endpoint());
    assert!(stderr(o).contains(&said), "stderr:\n{}", stderr(o));
}

#[tokio::test]
async fn cli_replay_exports_to_the_flag_endpoint() {
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let o = run(fluxtrace(&[
        "--cluster-name",
        "c1",
        "replay",
        OCI_SUCCESS,
        "--otlp-endpoint",
        &endpoint,
    ]))
    .await;
    assert_cli_exported(&o, &receiver);
}

#[tokio::test]
async fn cli_replay_exports_to_the_env_endpoint() {
    let receiver = OtlpReceiver::start().await;
    let mut cmd = fluxtrace(&["--cluster-name", "c1", "replay", OCI_SUCCESS]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
    let o = run(cmd).await;
    assert_cli_exported(&o, &receiver);
}

#[tokio::test]
async fn cli_traces_endpoint_wins_over_the_general_one() {
    let receiver = OtlpReceiver::start().await;
    let mut cmd = fluxtrace(&["--cluster-name", "c1", "replay", OCI_SUCCESS]);
    cmd.env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", unused_endpoint());
    let o = run(cmd).await;
    assert_cli_exported(&o, &receiver);
}

#[tokio::test]
async fn cli_empty_traces_endpoint_does_not_hide_the_general_one() {
    // An empty variable is unset for the OTLP exporter (and for the spec); fluxtrace must not
    // decide from it that no endpoint is configured.
    let receiver = OtlpReceiver::start().await;
    let mut cmd = fluxtrace(&["--cluster-name", "c1", "replay", OCI_SUCCESS]);
    cmd.env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint());
    let o = run(cmd).await;
    assert_cli_exported(&o, &receiver);
}

#[tokio::test]
async fn cli_without_endpoint_says_so_once_and_succeeds() {
    let o = run(fluxtrace(&["--cluster-name", "c1", "replay", OCI_SUCCESS])).await;
    assert!(
        o.status.success(),
        "exit {:?}, stderr:\n{}",
        o.status,
        stderr(&o)
    );
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr:\n{err}");
    assert!(
        lines[0].contains("no OTLP endpoint configured"),
        "stderr:\n{err}"
    );
    assert!(
        stdout(&o).contains("rel-2041"),
        "the story is still printed"
    );
}

#[tokio::test]
async fn cli_collector_down_fails_naming_the_endpoint() {
    let endpoint = unused_endpoint();
    let started = Instant::now();
    // Default retries and timeout, as a user would run it.
    let o = run(fluxtrace(&[
        "replay",
        OCI_SUCCESS,
        "--otlp-endpoint",
        &endpoint,
    ]))
    .await;
    assert!(!o.status.success(), "exit {:?}", o.status);
    let err = stderr(&o);
    assert!(
        err.contains(&endpoint),
        "stderr must name {endpoint}:\n{err}"
    );
    assert!(!err.contains("panicked"), "stderr:\n{err}");
    assert!(
        stdout(&o).contains("rel-2041"),
        "the story is still printed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cli_collector_refusing_fails() {
    let receiver = OtlpReceiver::start().await;
    receiver.refuse_all(Code::Unavailable);
    let endpoint = receiver.endpoint();
    let o = run(fluxtrace(&[
        "replay",
        OCI_SUCCESS,
        "--otlp-endpoint",
        &endpoint,
        "--otlp-retries",
        "0",
    ]))
    .await;
    assert!(!o.status.success(), "exit {:?}", o.status);
    let err = stderr(&o);
    assert!(
        err.contains(&endpoint),
        "stderr must name {endpoint}:\n{err}"
    );
    assert!(err.contains("could not be exported"), "stderr:\n{err}");
    assert!(!receiver.calls().is_empty(), "the collector was asked");
}

#[tokio::test]
async fn cli_replay_reports_a_bad_line_and_keeps_the_good_ones() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let good = dir.join("otlp-good.jsonl");
    let bad = dir.join("otlp-bad-line.jsonl");
    let text = example("oci-success.jsonl");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(2, r#"{"at":"2026-11-26T10:00:00Z","kind":"watch","type":"#);
    std::fs::write(&good, text).expect("write the clean recording");
    std::fs::write(&bad, lines.join("\n") + "\n").expect("write the broken recording");
    let (good, bad) = (good.display().to_string(), bad.display().to_string());

    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let clean = run(fluxtrace(&["--cluster-name", "c1", "replay", &good])).await;
    let o = run(fluxtrace(&[
        "--cluster-name",
        "c1",
        "replay",
        &bad,
        "--otlp-endpoint",
        &endpoint,
    ]))
    .await;
    assert!(!o.status.success(), "a rejected line must fail the run");
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{bad}:3:")),
        "stderr must say {bad}:3:\n{err}"
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.contains(&format!("{bad}:")))
            .count(),
        1,
        "only line 3 is bad:\n{err}"
    );
    assert!(clean.status.success(), "stderr:\n{}", stderr(&clean));
    assert_eq!(
        stdout(&o).replace(&bad, "FILE"),
        stdout(&clean).replace(&good, "FILE"),
        "the good lines tell the same story as the clean recording"
    );
    // And the good lines' spans still go out.
    let sent = spans_of(text, "c1");
    assert_arrived_as_sent("replay with a bad line", &sent, &receiver, "c1");
}

#[tokio::test]
async fn cli_demo_json_prints_every_span() {
    let o = run(fluxtrace(&["demo", "--format", "json"])).await;
    assert!(
        o.status.success(),
        "exit {:?}, stderr:\n{}",
        o.status,
        stderr(&o)
    );
    let printed: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON document");
    let printed = printed.as_array().expect("a JSON array");
    let expected: Vec<SpanRecord> = EXAMPLES
        .iter()
        .flat_map(|(_, text)| spans_of(text, "default"))
        .collect();
    assert_eq!(printed.len(), expected.len(), "every span of every example");
    let is_hex = |v: &serde_json::Value, n: usize| {
        v.as_str()
            .is_some_and(|s| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    for (s, r) in printed.iter().zip(&expected) {
        let what = format!("{s}");
        for key in [
            "trace_id",
            "span_id",
            "parent_span_id",
            "service.name",
            "name",
            "start",
            "end",
            "status",
            "attributes",
            "events",
        ] {
            assert!(s.get(key).is_some(), "no {key} in {what}");
        }
        assert!(is_hex(&s["trace_id"], 32), "{what}");
        assert!(is_hex(&s["span_id"], 16), "{what}");
        assert!(
            s["parent_span_id"].is_null() || is_hex(&s["parent_span_id"], 16),
            "{what}"
        );
        assert_eq!(s["trace_id"], r.trace_id.to_string());
        assert_eq!(s["span_id"], r.span_id.to_string());
        assert_eq!(
            s["parent_span_id"].as_str(),
            r.parent_span_id.map(|p| p.to_string()).as_deref()
        );
        assert_eq!(s["service.name"], r.service);
        assert_eq!(s["name"], r.name);
        let start: jiff::Timestamp = s["start"]
            .as_str()
            .expect("start")
            .parse()
            .expect("RFC 3339");
        let end: jiff::Timestamp = s["end"].as_str().expect("end").parse().expect("RFC 3339");
        assert_eq!((start, end), (r.start, r.end), "{what}");
        assert!(start <= end, "{what}");
        assert!(
            matches!(s["status"]["code"].as_str(), Some("ok" | "error" | "unset")),
            "{what}"
        );
        assert!(s["attributes"].is_object(), "{what}");
        assert!(
            s["attributes"]["delivery.promotion.id"].is_string(),
            "{what}"
        );
        assert!(s["events"].is_array(), "{what}");
        assert_eq!(
            s["events"].as_array().map(Vec::len),
            Some(r.events.len()),
            "{what}"
        );
    }
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "stderr:\n{err}");
    assert!(
        err.contains("no OTLP endpoint configured"),
        "stderr:\n{err}"
    );
}
