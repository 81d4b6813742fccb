//! Flagger canaries with the agent against the test Kubernetes API server (kube's real HTTP
//! client, list and watch) and a real OTLP receiver: the traffic probe of a canary workload
//! runs after Flagger promoted it, a cluster without Flagger is traced without canaries, and a
//! Canary missing its target is skipped and counted. (That live equals replay for the canary
//! recordings is checked with every other recording in `tests/live.rs`.)

use std::time::Duration;

use fluxtrace::agent::AgentConfig;
use fluxtrace::correlate::EngineConfig;
use fluxtrace::metrics::{KindError, KindLabel};
use fluxtrace_testkit::agent::{eventually, Disrupt, LiveAgent};
use fluxtrace_testkit::kube_api::{KubeApi, ServerHandle};
use fluxtrace_testkit::otlp_receiver::{export_settings, OtlpReceiver};
use fluxtrace_testkit::recordings::example;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

const CLUSTER: &str = "live";
const RECORDING: &str = "flagger-canary-success.jsonl";

struct Live {
    server: ServerHandle,
    receiver: OtlpReceiver,
    agent: LiveAgent,
}

impl Live {
    async fn start(api: KubeApi, probe: Option<fluxtrace::probe::ProbeSettings>) -> Live {
        let server = api.start().await;
        let receiver = OtlpReceiver::start().await;
        let agent = LiveAgent::start(AgentConfig {
            engine: EngineConfig {
                cluster: CLUSTER.into(),
                ..EngineConfig::default()
            },
            export: Some(export_settings(receiver.endpoint(), CLUSTER)),
            tick: Duration::from_millis(20),
            probe,
            ..AgentConfig::default()
        });
        Live {
            server,
            receiver,
            agent,
        }
    }

    async fn finish(&mut self, want: usize) -> Vec<Span> {
        self.agent.pass_deadlines();
        let r = &self.receiver;
        eventually("the spans at the receiver", || r.spans().len() >= want).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.agent.stop().await;
        self.receiver.spans().into_iter().map(|(_, s)| s).collect()
    }
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            Value::IntValue(n) => Some(n.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// Users get the new version only once Flagger copied it to the primary: the probe checks
/// the primary after its rollout (the target opted in; Flagger copies no Flux labels), beside
/// the `traffic.canary` span, and the promotion waits for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_checks_the_primary_after_flagger_promoted_it() {
    // The target Deployment opts in.
    let (annotated, settings) =
        fluxtrace_testkit::agent::probed(example(RECORDING), "3.15.0", |o| {
            o["metadata"]["name"] == "frontend"
        })
        .await;
    let mut live = Live::start(KubeApi::with_recording(&annotated), Some(settings)).await;
    live.agent
        .play(&live.server, &annotated, Disrupt::None)
        .await;
    let m = live.agent.metrics.clone();
    eventually("the probe result", || {
        m.observations
            .get_or_create(&KindLabel {
                kind: "probe_result",
            })
            .get()
            == 1
    })
    .await;
    let spans = live.finish(7).await;
    let probes = named(&spans, "traffic.probe");
    assert_eq!(probes.len(), 1, "one probe, of the primary only");
    let probe = probes[0];
    assert_eq!(
        attr(probe, "k8s.deployment.name").as_deref(),
        Some("frontend-primary")
    );
    assert_eq!(
        attr(probe, "delivery.probe.expected").as_deref(),
        Some("3.15.0")
    );
    assert_eq!(
        probe.status.clone().unwrap_or_default().code,
        1,
        "status OK"
    );
    let canary = named(&spans, "traffic.canary");
    assert_eq!(canary.len(), 1);
    assert_eq!(
        attr(canary[0], "delivery.stage").as_deref(),
        Some("traffic")
    );
    let primary = named(&spans, "rollout")
        .into_iter()
        .find(|s| attr(s, "k8s.deployment.name").as_deref() == Some("frontend-primary"))
        .expect("the primary's rollout");
    assert_eq!(
        probe.start_time_unix_nano, primary.end_time_unix_nano,
        "probed once the primary rolled out"
    );
    let root = named(&spans, "promotion");
    assert_eq!(
        root.len(),
        1,
        "the primary's rollout is no trace of its own"
    );
    assert!(root[0].end_time_unix_nano >= probe.end_time_unix_nano);
}

/// Without Flagger's CRD the Canary kind is skipped (not waited for): the rollouts are traced
/// as they would be without Flagger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_flagger_the_canary_kind_is_skipped_and_the_rollouts_traced() {
    // The recording without its Canary (Flagger's Events about it are still there).
    let text: String = example(RECORDING)
        .lines()
        .filter(|l| !l.contains(r#""kind":"Canary","metadata""#))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = text.as_str();
    let api = KubeApi::with_recording(text).without_group("flagger.app");
    let mut live = Live::start(api, None).await;
    live.agent.play(&live.server, text, Disrupt::None).await;
    assert_eq!(live.agent.readiness.waiting(), Some(vec![]));
    assert_eq!(
        live.server.list_count("/apis/flagger.app/v1beta1/canaries"),
        0,
        "nothing listed for a kind that is not served"
    );
    // The promotion (source, reconcile, apply, the target's rollout) and the primary's rollout
    // as an untraced change: no promotion explains it without its Canary.
    let spans = live.finish(7).await;
    assert!(named(&spans, "traffic.canary").is_empty());
    let roots = named(&spans, "promotion");
    assert_eq!(roots.len(), 2);
    let deployments: Vec<Option<String>> = named(&spans, "rollout")
        .into_iter()
        .map(|s| attr(s, "k8s.deployment.name"))
        .collect();
    assert!(
        deployments.contains(&Some("frontend".into())),
        "{deployments:?}"
    );
    assert!(roots
        .iter()
        .any(|r| attr(r, "delivery.traceability").as_deref() == Some("missing")));
}

/// A Canary without `spec.targetRef` is skipped and counted (`missing_field`); the watch goes on
/// and the trace of the canary that is whole still forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_missing_its_target_is_skipped_and_counted() {
    let text = example(RECORDING);
    let mut live = Live::start(KubeApi::with_recording(text), None).await;
    live.server.apply(
        "ADDED",
        serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": "orphan", "namespace": "web", "uid": "c0ffee00-1", "generation": 1},
            "spec": {"analysis": {"interval": "30s", "threshold": 2, "stepWeight": 10}},
            "status": {"phase": "Initialized"}
        }),
    );
    live.agent.play(&live.server, text, Disrupt::None).await;
    let m = live.agent.metrics.clone();
    let errors = move || {
        m.decode_errors
            .get_or_create(&KindError {
                kind: "Canary",
                error_type: "missing_field",
            })
            .get()
    };
    let e = errors.clone();
    eventually("the decode error to be counted", move || e() >= 1).await;
    let spans = live.finish(6).await;
    assert_eq!(errors(), 1, "counted once");
    let canary = named(&spans, "traffic.canary");
    assert_eq!(canary.len(), 1);
    assert_eq!(
        attr(canary[0], "flagger.canary.name").as_deref(),
        Some("frontend")
    );
    assert_eq!(named(&spans, "promotion").len(), 1);
}
