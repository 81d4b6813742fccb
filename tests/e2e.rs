//! End to end on the real stack (`tests/testbed/`): a real kube-apiserver, etcd,
//! kube-controller-manager and scheduler, kwok for the nodes, Flux's source- and
//! kustomize-controller, the Collector configured by the shipped `collector-config/jaeger.yaml`
//! and Jaeger. The real `fluxtrace run` binary watches one namespace of its own per test and
//! exports through the Collector; every assertion reads the trace back from Jaeger's HTTP API.
//!
//! Without a test bed that is up, each test prints `SKIPPED <test>: …`;
//! `FLUXTRACE_REQUIRE_TOOLS=1` (`.ci/run`, which builds and starts it) makes that a failure.
//! Run by hand: `tests/testbed/build && tests/testbed/up && cargo test --test e2e`.

use std::time::Duration;

use fluxtrace::trace::trace_id_for;
use fluxtrace_testkit::testbed::{jaeger_spans, wait_for, Agent, JaegerSpan, Testbed};
use fluxtrace_testkit::tools;
use fluxtrace_testkit::{grafana, prometheus};

#[path = "e2e/helm.rs"]
mod helm;

const BIN: &str = env!("CARGO_BIN_EXE_fluxtrace");

/// Longest a delivery may take to reach Jaeger (fetch, apply, rollout, settle, export).
const DELIVERY: Duration = Duration::from_secs(180);

/// The app's manifests: a Deployment of `image` (annotated with `promotion`, if any) and the
/// kustomization that builds it.
fn manifests(image: &str, promotion: Option<&str>) -> Vec<(&'static str, String)> {
    let annotation = promotion.map_or(String::new(), |p| {
        format!("      annotations:\n        fluxtrace.io/promotion-id: \"{p}\"\n")
    });
    vec![
        (
            "deployment.yaml",
            format!(
                "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  progressDeadlineSeconds: 20
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
{annotation}    spec:
      containers:
      - name: web
        image: {image}
"
            ),
        ),
        (
            "kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- deployment.yaml\n"
                .to_string(),
        ),
    ]
}

/// A Deployment `name` of `image` whose pod template names `promotion`; `spec` holds its
/// replica and timing fields (indented as spec fields).
fn deployment_yaml(name: &str, image: &str, spec: &str, promotion: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
{spec}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{fluxtrace.io/promotion-id: \"{promotion}\"}}
    spec:
      containers:
      - name: {name}
        image: {image}
"
    )
}

/// A namespace with a Git repository of the app at `image`, a GitRepository following it and
/// a Kustomization applying it (health checks on); returns once the first delivery is Ready.
fn app(bed: &Testbed, ns: &str, image: &str) {
    let files = manifests(image, None);
    let files = borrowed(&files);
    bed.push(ns, &files, "first");
    delivered_by_kustomization(bed, ns, "GitRepository", &git_source(bed, ns));
}

/// The spec of a GitRepository following branch `main` of the test bed's repository `ns`.
fn git_source(bed: &Testbed, ns: &str) -> String {
    format!(
        "url: {git}/{ns}.git\n  ref: {{branch: main}}",
        git = bed.get("TESTBED_GIT_URL")
    )
}

/// `(path, content)` pairs borrowed, as [`Testbed::push`] takes them.
fn borrowed<P: AsRef<str>>(files: &[(P, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(p, c)| (p.as_ref(), c.as_str()))
        .collect()
}

/// Source `app` of `kind` (its spec but for the interval: `spec`) and the Kustomization `app`
/// applying it to `ns` (health checks on, with a timeout of 90 s); returns once the first
/// delivery is Ready.
fn delivered_by_kustomization(bed: &Testbed, ns: &str, kind: &str, spec: &str) {
    delivered_by_kustomization_with(bed, ns, kind, spec, "path: ./\n  timeout: 90s");
}

/// As [`delivered_by_kustomization`], the Kustomization's `path` and timing fields being
/// `fields`.
fn delivered_by_kustomization_with(bed: &Testbed, ns: &str, kind: &str, spec: &str, fields: &str) {
    bed.apply(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1
kind: {kind}
metadata: {{name: app, namespace: {ns}}}
spec:
  interval: 10m
  {spec}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: app, namespace: {ns}}}
spec:
  interval: 10m
  prune: true
  wait: true
  {fields}
  targetNamespace: {ns}
  sourceRef: {{kind: {kind}, name: app}}
"
    ));
    bed.kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "--timeout=180s",
        "kustomization/app",
    ]);
}

/// Pushes the app at `image` (its pod template naming `promotion`, if any); the commit.
fn release(bed: &Testbed, ns: &str, image: &str, promotion: Option<&str>) -> String {
    let files = manifests(image, promotion);
    let files = borrowed(&files);
    bed.push(ns, &files, &format!("web {image}"))
}

/// Asks source-controller to fetch `source` (`gitrepository/app`) now, as `flux reconcile` does.
fn fetch_now(bed: &Testbed, ns: &str, source: &str) {
    let now = jiff::Timestamp::now().to_string();
    bed.kubectl(&[
        "-n",
        ns,
        "annotate",
        "--overwrite",
        source,
        &format!("reconcile.fluxcd.io/requestedAt={now}"),
    ]);
}

/// `fluxtrace promote` from CI: the report of `id`, promoting `what` (`--revision <commit>` or
/// `--artifact <ref> --digest <digest>`), under the CI span `traceparent`, to environment `env`
/// (each test's own: reports of one environment and app supersede each other).
fn promote(agent: &Agent, env: &str, id: &str, what: &[&str], traceparent: &str) {
    let out = std::process::Command::new(BIN)
        .args([
            "promote",
            "--agent",
            &agent.url,
            "--token",
            &agent.token,
            "--id",
            id,
            "--environment",
            env,
            "--app",
            "web",
            "--traceparent",
            traceparent,
        ])
        .args(what)
        .env_clear()
        .output()
        .expect("promote runs");
    assert!(
        out.status.success(),
        "promote: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CI reports `id`, `commit` to environment `ns` from a CI run of its own, then asks
/// source-controller to fetch the GitRepository now (as a webhook would); the CI run's trace id
/// and span id.
fn report_and_fetch(
    bed: &Testbed,
    agent: &Agent,
    ns: &str,
    id: &str,
    commit: &str,
) -> (String, String) {
    report_from_ci(agent, ns, id, &["--revision", commit], || {
        fetch_now(bed, ns, "gitrepository/app");
    })
}

/// CI reports `id` promoting `what` to environment `ns` from a CI run of its own, then does
/// `then`; the CI run's trace id and span id.
fn report_from_ci(
    agent: &Agent,
    ns: &str,
    id: &str,
    what: &[&str],
    then: impl FnOnce(),
) -> (String, String) {
    let ci = trace_id_for(&format!("ci/{id}")).to_string();
    // The CI step's span: any 16 hex that are not all zero; here the trace id's first half.
    let span = ci[..16].to_string();
    promote(agent, ns, id, what, &format!("00-{ci}-{span}-01"));
    then();
    (ci, span)
}

/// The trace `trace_id` from Jaeger with at least `spans` spans, or a failure that shows the
/// agent's log.
fn trace(bed: &Testbed, agent: &Agent, trace_id: &str, spans: usize) -> Vec<JaegerSpan> {
    let t = bed
        .jaeger_trace(trace_id, spans, DELIVERY)
        .unwrap_or_else(|| {
            panic!(
                "trace {trace_id} with {spans} spans did not reach Jaeger; agent log:\n{}",
                agent.log()
            )
        });
    jaeger_spans(&t)
}

/// The root of `spans`, after checking that it succeeded and how it was traced (`traceability`).
fn succeeded<'a>(spans: &'a [JaegerSpan], traceability: &str) -> &'a JaegerSpan {
    let root = span(spans, "promotion");
    assert_eq!(tag(root, "delivery.traceability"), traceability);
    assert_eq!(
        tag(root, "deployment.status"),
        "succeeded",
        "{:?}",
        root.tags
    );
    root
}

fn span<'a>(spans: &'a [JaegerSpan], name: &str) -> &'a JaegerSpan {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no {name} span in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

fn tag<'a>(s: &'a JaegerSpan, key: &str) -> &'a str {
    s.tags.get(key).map_or("", String::as_str)
}

/// An agent watching `ns`, then `web:1.1.0` released under promotion `<prefix>-<pid>`, reported
/// from CI and fetched: the CI run's trace with at least `spans` spans.
fn web_1_1_0_reported(bed: &Testbed, ns: &str, prefix: &str, spans: usize) -> Vec<JaegerSpan> {
    let agent = bed.agent(BIN, ns, None, &[]);
    let id = format!("{prefix}-{}", std::process::id());
    let commit = release(bed, ns, "ghcr.io/acme/web:1.1.0", Some(&id));
    let (ci_trace, _) = report_and_fetch(bed, &agent, ns, &id, &commit);
    trace(bed, &agent, &ci_trace, spans)
}

/// Scenario 1: a commit pushed to Git and delivered by a Kustomization to a Deployment, with a
/// `fluxtrace promote` report under a CI span; then the next commit, unreported; then an agent
/// started after both were delivered judges neither again.
#[test]
fn a_git_commit_reported_from_ci_then_one_unreported_then_a_restart() {
    let Some(bed) =
        Testbed::find("a_git_commit_reported_from_ci_then_one_unreported_then_a_restart")
    else {
        return;
    };
    let ns = bed.namespace("e2e-git");
    app(&bed, &ns, "ghcr.io/acme/web:1.0.0");
    let mut agent = bed.agent(BIN, &ns, None, &[]);

    // Reported, the pod template naming the promotion.
    let id = format!("e2e-git-{}", std::process::id());
    let commit = release(&bed, &ns, "ghcr.io/acme/web:1.1.0", Some(&id));
    let (ci_trace, ci_span_id) = report_and_fetch(&bed, &agent, &ns, &id, &commit);
    let spans = trace(&bed, &agent, &ci_trace, 5);
    let root = succeeded(&spans, "reported");
    assert_eq!(
        root.parent.as_deref(),
        Some(ci_span_id.as_str()),
        "under the CI span"
    );
    assert_eq!(tag(root, "delivery.promotion.id"), id);
    let source = span(&spans, "source.fetch");
    assert_eq!(source.service, "source-controller");
    assert!(
        tag(source, "flux.revision").ends_with(&commit),
        "{:?}",
        source.tags
    );
    // The fetch asked for by annotation (as `flux reconcile` does): seen as source-controller
    // handles it, not as a Receiver's webhook.
    let trigger = span(&spans, "trigger");
    assert_eq!(trigger.service, "source-controller");
    assert_eq!(trigger.parent.as_deref(), Some(root.span_id.as_str()));
    let reconcile = span(&spans, "reconcile");
    assert_eq!(reconcile.service, "kustomize-controller");
    let apply = span(&spans, "apply");
    assert_eq!(apply.parent.as_deref(), Some(reconcile.span_id.as_str()));
    let rollout = span(&spans, "rollout");
    assert_eq!(rollout.service, "kube-controller-manager");
    assert_eq!(rollout.parent.as_deref(), Some(reconcile.span_id.as_str()));
    assert_eq!(tag(rollout, "k8s.deployment.name"), "web");
    // The real Deployment controller's and kwok's Events on the rollout.
    for reason in ["ScalingReplicaSet", "SuccessfulCreate", "Started"] {
        assert!(
            rollout.events.iter().any(|e| e == reason),
            "rollout events {:?} lack {reason}",
            rollout.events
        );
    }

    // Unreported: nobody says anything; Flux delivers it all the same.
    let commit = release(&bed, &ns, "ghcr.io/acme/web:1.2.0", None);
    fetch_now(&bed, &ns, "gitrepository/app");
    let unreported = trace_id_for(&format!("unreported/{ns}/app/{}", &commit[..12])).to_string();
    let spans = trace(&bed, &agent, &unreported, 5);
    succeeded(&spans, "unreported");
    for name in ["source.fetch", "reconcile", "apply", "rollout"] {
        span(&spans, name);
    }
    let sent = spans.len();

    // A new agent (an upgrade, a rescheduled pod): what it lists was delivered before it
    // started. No verdict, no trace, no Event.
    agent.stop();
    let later = bed.agent(BIN, &ns, None, &[]);
    std::thread::sleep(Duration::from_secs(15));
    let log = later.log();
    assert!(
        !log.contains("Promotion finished."),
        "history was judged at start:\n{log}"
    );
    let again = jaeger_spans(
        &bed.jaeger_trace(&unreported, sent, Duration::from_secs(5))
            .expect("the trace is still there"),
    );
    assert_eq!(again.len(), sent, "nothing re-sent");
}

/// Scenario 2: a kustomization.yaml that does not build: the trace diverges at reconcile with
/// kustomize-controller's own message.
#[test]
fn a_broken_kustomization_diverges_at_reconcile() {
    let Some(bed) = Testbed::find("a_broken_kustomization_diverges_at_reconcile") else {
        return;
    };
    let ns = bed.namespace("e2e-build");
    app(&bed, &ns, "ghcr.io/acme/web:1.0.0");
    let jaeger = bed.get("TESTBED_JAEGER_QUERY_URL").to_string();
    let agent = bed.agent(
        BIN,
        &ns,
        None,
        &["--trace-backend", "jaeger", "--trace-base-url", &jaeger],
    );
    let id = format!("e2e-build-{}", std::process::id());
    let commit = bed.push(
        &ns,
        &[(
            "kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- deployment.yaml\n- nothere.yaml\n",
        )],
        "a resource that does not exist",
    );
    let (ci_trace, _) = report_and_fetch(&bed, &agent, &ns, &id, &commit);
    let spans = trace(&bed, &agent, &ci_trace, 3);
    let root = span(&spans, "promotion");
    assert_eq!(
        tag(root, "delivery.divergence.stage"),
        "reconcile",
        "{:?}",
        root.tags
    );
    let message = tag(root, "delivery.divergence.message");
    assert!(
        message.contains("nothere.yaml"),
        "kustomize-controller's message: {message}"
    );
    let reconcile = span(&spans, "reconcile");
    assert_eq!(
        tag(reconcile, "otel.status_code"),
        "ERROR",
        "{:?}",
        reconcile.tags
    );
    assert!(
        !spans.iter().any(|s| s.name == "rollout"),
        "nothing rolled out"
    );
    trace_links_open_the_trace(&agent, &id, &ci_trace, &jaeger);
}

/// The finished promotion `id`'s trace link (the agent runs the `jaeger` preset on the test
/// bed's Jaeger) opens its trace: the Jaeger UI serves the link's route, and Jaeger's API under
/// the link's trace id holds the promotion. (The test bed's Jaeger serves a placeholder page
/// for its UI routes, so the API stands where a browser would read the page.) The `tempo` and
/// `grafana` presets' links for the same promotion, read as Grafana reads them, open one pane
/// whose query is that trace id, over the promotion's time.
fn trace_links_open_the_trace(agent: &Agent, id: &str, trace_id: &str, jaeger: &str) {
    let out = std::process::Command::new(BIN)
        .args([
            "explain",
            id,
            "--agent",
            &agent.url,
            "--token",
            &agent.token,
            "--json",
        ])
        .env_clear()
        .output()
        .expect("explain runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let story: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a story");
    let link = story["trace_link"]
        .as_str()
        .expect("a trace link")
        .to_string();
    let time = |k: &str| -> jiff::Timestamp {
        story[k]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {story}"))
    };
    let (start, end) = (time("start"), time("end"));
    let ci = fluxtrace::trace::Traceparent::parse(&format!("00-{trace_id}-{}-01", &trace_id[..16]))
        .expect("the trace id");
    assert_eq!(link, format!("{jaeger}/trace/{trace_id}"));
    let page = fluxtrace_testkit::cli::get(
        link.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |(a, _)| a),
        &format!("/trace/{trace_id}"),
        None,
    )
    .expect("Jaeger answers");
    assert!(page.0.contains(" 200 "), "{}", page.0);
    let api = link.replace("/trace/", "/api/traces/");
    let t = fluxtrace_testkit::testbed::http_json(&api).expect("the trace by the link's id");
    assert!(
        jaeger_spans(&t).iter().any(|s| s.name == "promotion"
            && s.tags.get("delivery.promotion.id").map(String::as_str) == Some(id)),
        "the link's trace holds promotion {id}"
    );
    for (backend, datasource) in [
        (fluxtrace::links::TraceBackend::Tempo, None),
        (fluxtrace::links::TraceBackend::Grafana, Some("jaeger")),
    ] {
        let template = fluxtrace::links::template(fluxtrace::links::LinkOptions {
            backend: Some(backend),
            base_url: Some("https://grafana.example"),
            datasource,
            ..Default::default()
        })
        .expect("a template")
        .expect("a template");
        let link = fluxtrace::links::fill(&template, ci.trace_id, start, end);
        let panes = grafana::explore_panes(&link).unwrap_or_else(|e| panic!("{e}"));
        let panes = panes.as_object().expect("panes");
        assert_eq!(panes.len(), 1, "{link}");
        let pane = panes.values().next().expect("a pane");
        assert_eq!(pane["queries"][0]["query"], trace_id, "{link}");
        assert!(pane["queries"][0].get("datasource").is_none(), "{link}");
        assert_eq!(
            pane["range"]["from"],
            start.as_millisecond().to_string(),
            "{link}"
        );
    }
}

/// Scenarios 3 and 11: an image that cannot be pulled (kwok plays the kubelet): the real
/// Deployment controller's `ProgressDeadlineExceeded`, the pull failure as its cause. The agent
/// exports through the Collector of the shipped `collector-config/spanmetrics.yaml` (traces on
/// to Jaeger, span metrics to its Prometheus exporter); Prometheus scrapes it and evaluates the
/// shipped `fluxtrace-alerts.yaml`, and `FluxtraceRolloutFailed` fires for this environment.
#[test]
fn an_image_that_cannot_be_pulled_diverges_at_rollout_and_the_alert_fires() {
    let test = "an_image_that_cannot_be_pulled_diverges_at_rollout_and_the_alert_fires";
    let Some(bed) = Testbed::find(test) else {
        return;
    };
    let Some(prometheus) = tools::tool(test, "prometheus", "PROMETHEUS", &["--version"]) else {
        return;
    };
    let ns = bed.namespace("e2e-pull");
    app(&bed, &ns, "ghcr.io/acme/web:1.0.0");
    let agent = bed.agent(
        BIN,
        &ns,
        None,
        &["--otlp-endpoint", bed.get("TESTBED_SPANMETRICS_OTLP_GRPC")],
    );
    let id = format!("e2e-pull-{}", std::process::id());
    let commit = release(&bed, &ns, "registry.invalid/web:missing", Some(&id));
    let (ci_trace, _) = report_and_fetch(&bed, &agent, &ns, &id, &commit);
    let spans = trace(&bed, &agent, &ci_trace, 5);
    let root = span(&spans, "promotion");
    assert_eq!(
        tag(root, "delivery.divergence.stage"),
        "rollout",
        "{:?}",
        root.tags
    );
    assert_eq!(
        tag(root, "error.type"),
        "ProgressDeadlineExceeded",
        "the Deployment controller's reason: {:?}",
        root.tags
    );
    assert!(
        tag(root, "delivery.divergence.message").contains("has timed out progressing"),
        "{:?}",
        root.tags
    );
    let rollout = span(&spans, "rollout");
    assert_eq!(tag(rollout, "otel.status_code"), "ERROR");
    assert!(
        rollout
            .events
            .iter()
            .any(|e| e == "Failed" || e == "BackOff"),
        "the pull failure as evidence: {:?}",
        rollout.events
    );
    wait_for(
        "the Deployment to report the deadline",
        Duration::from_secs(5),
        || {
            bed.object("deployment", &ns, "web").is_some_and(|d| {
                d["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["reason"] == "ProgressDeadlineExceeded")
            })
        },
    );

    // Scenario 11: the span metrics reach Prometheus and the shipped rule fires.
    let exposition = bed.get("TESTBED_SPANMETRICS_PROMETHEUS_URL");
    let target = exposition
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("collector-config/prometheus/fluxtrace-alerts.yaml");
    let dir = std::env::temp_dir().join(format!("fluxtrace-e2e-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (_prometheus, prom) = prometheus::start(&prometheus, &dir, &rules, target);
    let mut seen = Vec::new();
    wait_for(
        "FluxtraceRolloutFailed to fire for the environment",
        Duration::from_secs(90),
        || {
            seen = prometheus::alerts(&prom);
            seen.iter().any(|a| {
                a["labels"]["alertname"] == "FluxtraceRolloutFailed"
                    && a["labels"]["deployment_environment_name"] == ns.as_str()
                    && a["labels"]["k8s_cluster_name"] == "e2e"
                    && a["state"] == "firing"
            })
        },
    );
    let failed = prometheus::query(
        &prom,
        &format!(
            "fluxtrace_delivery_calls_total{{span_name=\"promotion\",deployment_environment_name=\"{ns}\",delivery_divergence_stage=\"rollout\"}}"
        ),
    );
    assert_eq!(failed.len(), 1, "one failed promotion counted: {failed:?}");
}

/// Scenario 9: the shipped manifests applied for real (`kubectl apply -k deploy/kustomize/base`:
/// the CRD's structural schema, RBAC, PDB, NetworkPolicy accepted by the API server), and the
/// agent running as the shipped ServiceAccount with exactly the shipped ClusterRole and
/// leader-election Role (its own token, not the admin's): a reported delivery is traced, its
/// Promotion gets its verdict, the leader takes its Lease, and nothing is forbidden.
#[test]
fn the_shipped_manifests_install_and_the_agent_runs_as_its_service_account() {
    let Some(bed) =
        Testbed::find("the_shipped_manifests_install_and_the_agent_runs_as_its_service_account")
    else {
        return;
    };
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kustomize/base");
    let applied = bed.kubectl(&["apply", "-k", base]);
    for kind in [
        "customresourcedefinition.apiextensions.k8s.io/promotions.fluxtrace.io",
        "clusterrole.rbac.authorization.k8s.io/fluxtrace",
        "clusterrolebinding.rbac.authorization.k8s.io/fluxtrace",
        "rolebinding.rbac.authorization.k8s.io/fluxtrace-leader-election",
        "poddisruptionbudget.policy/fluxtrace",
        "networkpolicy.networking.k8s.io/fluxtrace",
        "deployment.apps/fluxtrace",
        "service/fluxtrace",
        "serviceaccount/fluxtrace",
    ] {
        assert!(applied.contains(kind), "{kind} not applied:\n{applied}");
    }
    // The ServiceAccount's own token, as the Pod would have it.
    let kubeconfig = bed.service_account_kubeconfig("fluxtrace", "fluxtrace");

    let ns = bed.namespace("e2e-rbac");
    app(&bed, &ns, "ghcr.io/acme/web:1.0.0");
    let lease = format!("fluxtrace-e2e-{}", std::process::id());
    let agent = bed.agent(
        BIN,
        &ns,
        Some(&kubeconfig),
        &[
            "--promotion-namespace",
            "fluxtrace",
            "--lease-namespace",
            "fluxtrace",
            "--lease-name",
            &lease,
            "--lease-duration",
            "6s",
            "--lease-renew-deadline",
            "4s",
            "--lease-retry-period",
            "1s",
        ],
    );
    let id = format!("e2e-rbac-{}", std::process::id());
    let commit = release(&bed, &ns, "ghcr.io/acme/web:1.1.0", Some(&id));
    let (ci_trace, _) = report_and_fetch(&bed, &agent, &ns, &id, &commit);
    let spans = trace(&bed, &agent, &ci_trace, 5);
    let root = span(&spans, "promotion");
    assert_eq!(
        tag(root, "deployment.status"),
        "succeeded",
        "{:?}",
        root.tags
    );
    // The verdict in the Promotion the intake wrote, and kubectl's printer columns.
    wait_for("the Promotion's verdict", Duration::from_secs(30), || {
        bed.object("promotion", "fluxtrace", &id)
            .is_some_and(|p| p["status"]["phase"] == "Succeeded")
    });
    let table = bed.kubectl(&["-n", "fluxtrace", "get", "promotions", &id]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["ENVIRONMENT", "APP", "PHASE", "TRACE"] {
        assert!(header.contains(column), "printer columns: {table}");
    }
    assert!(
        table.contains("Succeeded") && table.contains(&ci_trace),
        "{table}"
    );
    let held = bed
        .object("lease", "fluxtrace", &lease)
        .expect("the leader's Lease");
    assert!(held["spec"]["holderIdentity"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));
    let log = agent.log();
    // RBAC refusals say "forbidden" (a bare "403" would match timestamps).
    for denied in ["Forbidden", "forbidden", " 403 "] {
        assert!(
            !log.contains(denied),
            "the agent was refused something:\n{log}"
        );
    }
}

/// Scenario 8 (one replica): the agent SIGKILLed in the middle of a reported promotion (the
/// fetch asked for, nothing applied yet) and started again: the new agent finishes the trace,
/// whole, each span once, and judges nothing that was delivered before it started.
#[test]
fn an_agent_killed_mid_promotion_and_started_again_completes_the_trace() {
    let Some(bed) =
        Testbed::find("an_agent_killed_mid_promotion_and_started_again_completes_the_trace")
    else {
        return;
    };
    let ns = bed.namespace("e2e-kill");
    app(&bed, &ns, "ghcr.io/acme/web:1.0.0");
    let mut first = bed.agent(BIN, &ns, None, &[]);
    let id = format!("e2e-kill-{}", std::process::id());
    let commit = release(&bed, &ns, "ghcr.io/acme/web:1.1.0", Some(&id));
    let (ci_trace, ci_span_id) = report_and_fetch(&bed, &first, &ns, &id, &commit);
    first.kill();
    let second = bed.agent(BIN, &ns, None, &[]);
    finished_whole(&bed, &second, &ci_trace, &ci_span_id);
}

/// The trace `ci_trace` that `agent` finished after another agent was killed: whole (every
/// stage), each span once, one root under the CI span, succeeded; and the agent judged only
/// that promotion, once.
fn finished_whole(bed: &Testbed, agent: &Agent, ci_trace: &str, ci_span_id: &str) {
    let spans = trace(bed, agent, ci_trace, 5);
    let mut ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), spans.len(), "each span once");
    let roots: Vec<&JaegerSpan> = spans.iter().filter(|s| s.name == "promotion").collect();
    assert_eq!(roots.len(), 1);
    assert_eq!(
        roots[0].parent.as_deref(),
        Some(ci_span_id),
        "the agent that finished keeps the CI parent"
    );
    assert_eq!(
        tag(roots[0], "deployment.status"),
        "succeeded",
        "{:?}",
        roots[0].tags
    );
    for name in ["source.fetch", "reconcile", "apply", "rollout"] {
        span(&spans, name);
    }
    let log = agent.log();
    assert_eq!(
        log.matches("Promotion finished.").count(),
        1,
        "only the promotion in flight is judged, once:\n{log}"
    );
}

/// Scenario 7: OCI artifacts pushed to the registry under the floating tag `latest`, followed by
/// an OCIRepository and applied by a Kustomization. First a push that CI reports by tag and
/// digest, then one that only the artifact's own annotation names.
#[test]
fn oci_artifacts_under_a_floating_tag_reported_then_annotated() {
    let Some(bed) = Testbed::find("oci_artifacts_under_a_floating_tag_reported_then_annotated")
    else {
        return;
    };
    let ns = bed.namespace("e2e-oci");
    let repo = format!("{ns}/web");
    let push = |image: &str, annotations: &[(&str, &str)]| {
        let files = manifests(image, None);
        let files = borrowed(&files);
        bed.push_oci(&repo, "latest", &files, annotations)
    };
    push("ghcr.io/acme/web:1.0.0", &[]);
    delivered_by_kustomization(
        &bed,
        &ns,
        "OCIRepository",
        &format!(
            "url: oci://{registry}/{repo}\n  ref: {{tag: latest}}\n  insecure: true",
            registry = bed.get("TESTBED_REGISTRY")
        ),
    );
    let agent = bed.agent(BIN, &ns, None, &[]);

    // Reported: CI pushed `latest` and says which digest that was.
    let id = format!("e2e-oci-{}", std::process::id());
    let digest = push("ghcr.io/acme/web:1.1.0", &[]);
    let artifact = format!("{}/{repo}:latest", bed.get("TESTBED_REGISTRY"));
    let (ci_trace, _) = report_from_ci(
        &agent,
        &ns,
        &id,
        &["--artifact", &artifact, "--digest", &digest],
        || fetch_now(&bed, &ns, "ocirepository/app"),
    );
    let spans = trace(&bed, &agent, &ci_trace, 5);
    succeeded(&spans, "reported");
    let source = span(&spans, "source.fetch");
    assert_eq!(source.service, "source-controller");
    assert_eq!(tag(source, "flux.object.kind"), "OCIRepository");
    assert_eq!(
        tag(source, "oci.manifest.digest"),
        digest,
        "the tag resolved to the digest pushed: {:?}",
        source.tags
    );
    let reconcile = span(&spans, "reconcile");
    assert_eq!(tag(reconcile, "oci.manifest.digest"), digest);
    for name in ["apply", "rollout"] {
        span(&spans, name);
    }

    // Annotated: the artifact names its promotion; nobody reports it.
    let annotated = format!("e2e-oci-annotated-{}", std::process::id());
    let digest = push(
        "ghcr.io/acme/web:1.2.0",
        &[("fluxtrace.io/promotion-id", &annotated)],
    );
    fetch_now(&bed, &ns, "ocirepository/app");
    let spans = trace(&bed, &agent, &trace_id_for(&annotated).to_string(), 5);
    let root = succeeded(&spans, "annotated");
    assert_eq!(tag(root, "delivery.promotion.id"), annotated);
    assert_eq!(
        tag(span(&spans, "source.fetch"), "oci.manifest.digest"),
        digest
    );
    let rollout = span(&spans, "rollout");
    assert_eq!(tag(rollout, "k8s.deployment.name"), "web");
}

/// Scenario 8 (two replicas): two agents share a Lease; the leader is SIGKILLed in the middle of
/// a reported promotion (reported to the standby, as a Service may route it); the standby takes
/// the Lease when it expires and finishes the trace, whole, each span once, under the CI parent.
#[test]
fn the_leader_killed_mid_promotion_the_standby_finishes_the_trace() {
    let Some(bed) = Testbed::find("the_leader_killed_mid_promotion_the_standby_finishes_the_trace")
    else {
        return;
    };
    let ns = bed.namespace("e2e-ha");
    app(&bed, &ns, "ghcr.io/acme/web:1.0.0");
    let lease = "fluxtrace-e2e-ha";
    let replica = |identity: &'static str| {
        bed.agent(
            BIN,
            &ns,
            None,
            &[
                "--lease-namespace",
                &ns,
                "--lease-name",
                lease,
                "--lease-identity",
                identity,
                "--lease-duration",
                "6s",
                "--lease-renew-deadline",
                "4s",
                "--lease-retry-period",
                "1s",
            ],
        )
    };
    let holder = || {
        bed.object("lease", &ns, lease)
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    };
    let mut leader = replica("replica-a");
    wait_for("replica-a to lead", Duration::from_secs(30), || {
        holder().as_deref() == Some("replica-a")
    });
    let standby = replica("replica-b");

    let id = format!("e2e-ha-{}", std::process::id());
    let commit = release(&bed, &ns, "ghcr.io/acme/web:1.1.0", Some(&id));
    let (ci_trace, ci_span_id) = report_and_fetch(&bed, &standby, &ns, &id, &commit);
    leader.kill();
    wait_for(
        "replica-b to take the Lease",
        Duration::from_secs(30),
        || holder().as_deref() == Some("replica-b"),
    );
    finished_whole(&bed, &standby, &ci_trace, &ci_span_id);
    let log = standby.log();
    assert!(log.contains("Leading"), "the standby leads:\n{log}");
    wait_for("the Promotion's verdict", Duration::from_secs(30), || {
        bed.object("promotion", &ns, &id)
            .is_some_and(|p| p["status"]["phase"] == "Succeeded")
    });
}

/// Scenario 4: a health check that fails once and passes on retry. The Deployment's
/// `minReadySeconds` (35 s) outlasts the Kustomization's health check (`timeout: 10s`, which
/// kustomize-controller raises to its minimum of 30 s); the controller reports
/// `HealthCheckFailed` and retries 10 s later (`retryInterval`), when the rollout is done. The
/// failed attempt is evidence on the reconcile span; the promotion succeeds.
#[test]
fn a_health_check_that_fails_once_and_passes_on_retry_is_not_a_failure() {
    let Some(bed) =
        Testbed::find("a_health_check_that_fails_once_and_passes_on_retry_is_not_a_failure")
    else {
        return;
    };
    let ns = bed.namespace("e2e-retry");
    let deployment = |image: &str, min_ready: u32, promotion: &str| {
        let spec = format!(
            "  replicas: 1\n  minReadySeconds: {min_ready}\n  progressDeadlineSeconds: 120"
        );
        deployment_yaml("web", image, &spec, promotion)
    };
    let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- deployment.yaml\n";
    bed.push(
        &ns,
        &[
            (
                "deployment.yaml",
                &deployment("ghcr.io/acme/web:1.0.0", 0, "first"),
            ),
            ("kustomization.yaml", kustomization),
        ],
        "first",
    );
    delivered_by_kustomization_with(
        &bed,
        &ns,
        "GitRepository",
        &git_source(&bed, &ns),
        "path: ./\n  timeout: 10s\n  retryInterval: 10s",
    );
    let agent = bed.agent(BIN, &ns, None, &[]);
    let id = format!("e2e-retry-{}", std::process::id());
    let commit = bed.push(
        &ns,
        &[(
            "deployment.yaml",
            &deployment("ghcr.io/acme/web:1.1.0", 35, &id),
        )],
        "web 1.1.0, slow to become available",
    );
    let (ci_trace, _) = report_and_fetch(&bed, &agent, &ns, &id, &commit);
    let spans = trace(&bed, &agent, &ci_trace, 5);
    succeeded(&spans, "reported");
    let reconcile = span(&spans, "reconcile");
    assert_ne!(
        tag(reconcile, "otel.status_code"),
        "ERROR",
        "the reconcile is not an error: {:?}",
        reconcile.tags
    );
    assert!(
        reconcile.events.iter().any(|e| e == "HealthCheckFailed"),
        "the failed attempt as evidence: {:?}",
        reconcile.events
    );
    let rollout = span(&spans, "rollout");
    assert_eq!(rollout.parent.as_deref(), Some(reconcile.span_id.as_str()));
}

/// A commit that moves the app out of the Kustomization's `spec.path`.
/// kustomize-controller fails (`ArtifactFailed`, "kustomization path not found") before it
/// records the attempt, so `lastAttemptedRevision` never names the commit: the trace diverges
/// at reconcile at once, with the controller's reason and message.
#[test]
fn a_commit_without_the_kustomization_path_diverges_at_reconcile_at_once() {
    let Some(bed) =
        Testbed::find("a_commit_without_the_kustomization_path_diverges_at_reconcile_at_once")
    else {
        return;
    };
    let ns = bed.namespace("e2e-path");
    let files = manifests("ghcr.io/acme/web:1.0.0", None);
    let at = |dir: &str| -> Vec<(String, String)> {
        files
            .iter()
            .map(|(p, c)| (format!("{dir}/{p}"), c.clone()))
            .collect()
    };
    let first = at("app");
    let first = borrowed(&first);
    bed.push(&ns, &first, "first");
    delivered_by_kustomization_with(
        &bed,
        &ns,
        "GitRepository",
        &git_source(&bed, &ns),
        "path: ./app\n  timeout: 90s",
    );
    let agent = bed.agent(BIN, &ns, None, &[]);
    // The app moves to ./apps/web; the Kustomization still points at ./app.
    let moved = at("apps/web");
    let moved = borrowed(&moved);
    let commit = bed.push_replacing(&ns, "app", &moved, "move the app to apps/web");
    let id = format!("e2e-path-{}", std::process::id());
    let (ci_trace, _) = report_and_fetch(&bed, &agent, &ns, &id, &commit);
    let spans = trace(&bed, &agent, &ci_trace, 3);
    let root = span(&spans, "promotion");
    assert_eq!(
        tag(root, "delivery.divergence.stage"),
        "reconcile",
        "{:?}",
        root.tags
    );
    assert_eq!(tag(root, "error.type"), "ArtifactFailed", "{:?}", root.tags);
    assert!(
        tag(root, "delivery.divergence.message").contains("kustomization path not found"),
        "{:?}",
        root.tags
    );
    assert_ne!(
        tag(root, "deployment.status"),
        "succeeded",
        "{:?}",
        root.tags
    );
    let reconcile = span(&spans, "reconcile");
    assert_eq!(reconcile.service, "kustomize-controller");
    assert!(
        !spans.iter().any(|s| s.name == "rollout"),
        "nothing rolled out"
    );
}

/// The Kustomization is suspended (`flux suspend kustomization`) when a
/// reported commit arrives: kustomize-controller writes nothing, and the trace diverges at
/// reconcile as soon as the source stored the commit, reason `Suspended`, naming it.
#[test]
fn a_suspended_kustomization_diverges_at_once_naming_it() {
    let Some(bed) = Testbed::find("a_suspended_kustomization_diverges_at_once_naming_it") else {
        return;
    };
    let ns = bed.namespace("e2e-suspend");
    app(&bed, &ns, "ghcr.io/acme/web:1.0.0");
    bed.kubectl(&[
        "-n",
        &ns,
        "patch",
        "kustomization",
        "app",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    let spans = web_1_1_0_reported(&bed, &ns, "e2e-suspend", 3);
    let root = span(&spans, "promotion");
    assert_eq!(
        tag(root, "delivery.divergence.stage"),
        "reconcile",
        "{:?}",
        root.tags
    );
    assert_eq!(tag(root, "error.type"), "Suspended", "{:?}", root.tags);
    assert!(
        tag(root, "delivery.divergence.message").contains(&format!("Kustomization/{ns}/app")),
        "{:?}",
        root.tags
    );
}

/// Someone changes the Deployment `web` of `ns` by hand (`kubectl set image`): an untraced
/// rollout (`delivery.traceability=missing`). Then `reconciler` (`kustomization/app`,
/// `helmrelease/web`) runs again, as its interval would, and changes it back: that rollout is
/// Flux's own correction, traced with the reconcile and apply of `controller` that caused it
/// (`delivery.traceability=drift_correction`), not another untraced change.
fn edited_by_hand_then_corrected(
    bed: &Testbed,
    agent: &Agent,
    ns: &str,
    reconciler: &str,
    controller: &str,
) {
    let deployment = || bed.object("deployment", ns, "web").expect("the Deployment");
    let uid8: String = deployment()["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let generation = |d: &serde_json::Value| d["metadata"]["generation"].as_i64().unwrap_or(0);
    // The delivery has just ended: a change within its settle period would be taken for a late
    // part of it.
    std::thread::sleep(Duration::from_secs(20));

    bed.kubectl(&[
        "-n",
        ns,
        "set",
        "image",
        "deployment/web",
        "web=ghcr.io/acme/web:by-hand",
    ]);
    let manual = generation(&deployment());
    let untraced = format!("untraced/{ns}/web/{uid8}-{manual}");
    let spans = trace(bed, agent, &trace_id_for(&untraced).to_string(), 2);
    assert_eq!(
        tag(span(&spans, "promotion"), "delivery.traceability"),
        "missing"
    );

    // Flux runs again (as its interval would) and changes the Deployment back.
    bed.kubectl(&[
        "-n",
        ns,
        "annotate",
        "--overwrite",
        reconciler,
        &format!("reconcile.fluxcd.io/requestedAt={}", jiff::Timestamp::now()),
    ]);
    wait_for(
        "Flux to change the image back",
        Duration::from_secs(90),
        || generation(&deployment()) > manual,
    );
    let corrected = generation(&deployment());
    let drift = format!("drift/{ns}/web/{uid8}-{corrected}");
    let spans = trace(bed, agent, &trace_id_for(&drift).to_string(), 4);
    let root = span(&spans, "promotion");
    assert_eq!(
        tag(root, "delivery.traceability"),
        "drift_correction",
        "{:?}",
        root.tags
    );
    let reconcile = span(&spans, "reconcile");
    assert_eq!(reconcile.service, controller);
    let rollout = span(&spans, "rollout");
    assert_eq!(rollout.parent.as_deref(), Some(reconcile.span_id.as_str()));
    let log = agent.log();
    assert!(
        !log.contains(&format!("untraced/{ns}/web/{uid8}-{corrected}")),
        "the correction is not an untraced change:\n{log}"
    );
}

/// A Kustomization's next run, at the revision it had applied, changes back a Deployment
/// edited by hand.
#[test]
fn a_manual_change_is_untraced_and_fluxs_correction_of_it_is_drift_correction() {
    let Some(bed) =
        Testbed::find("a_manual_change_is_untraced_and_fluxs_correction_of_it_is_drift_correction")
    else {
        return;
    };
    let ns = bed.namespace("e2e-drift");
    app(&bed, &ns, "ghcr.io/acme/web:1.0.0");
    let agent = bed.agent(BIN, &ns, None, &[]);
    edited_by_hand_then_corrected(
        &bed,
        &agent,
        &ns,
        "kustomization/app",
        "kustomize-controller",
    );
}

/// A ResourceQuota leaves no room for the rollout's surge Pod. The real
/// ReplicaSet controller's creates are refused (`FailedCreate`, `exceeded quota`), the
/// Deployment controller copies that into `ReplicaFailure` and then gives up
/// (`ProgressDeadlineExceeded`): the trace diverges at the rollout and names the refusal as the
/// cause.
#[test]
fn a_rollout_a_resource_quota_refuses_names_failed_create_the_cause() {
    let test = "a_rollout_a_resource_quota_refuses_names_failed_create_the_cause";
    let Some(bed) = Testbed::find(test) else {
        return;
    };
    let ns = bed.namespace("pods-quota");
    app(&bed, &ns, "ghcr.io/acme/web:1.0.0");
    // Two Pods run: the quota is full, and a rolling update needs one more (maxSurge 25%).
    bed.apply(&format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: pods, namespace: {ns}}}\nspec:\n  hard: {{pods: \"2\"}}\n"
    ));
    // The test bed runs no resourcequota controller: its usage, as that controller would write
    // it. The API server's quota admission then refuses the surge Pod itself.
    bed.kubectl(&[
        "-n",
        &ns,
        "patch",
        "resourcequota",
        "pods",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"hard":{"pods":"2"},"used":{"pods":"2"}}}"#,
    ]);
    let spans = web_1_1_0_reported(&bed, &ns, "pods-quota", 5);
    let root = span(&spans, "promotion");
    assert_eq!(
        tag(root, "delivery.divergence.stage"),
        "rollout",
        "{:?}",
        root.tags
    );
    assert_eq!(tag(root, "error.type"), "ProgressDeadlineExceeded");
    assert_eq!(
        tag(root, "delivery.divergence.cause"),
        "FailedCreate",
        "the quota's refusal is the cause: {:?}",
        root.tags
    );
    let rollout = span(&spans, "rollout");
    assert_eq!(tag(rollout, "otel.status_code"), "ERROR");
    assert_eq!(tag(rollout, "delivery.divergence.cause"), "FailedCreate");
    assert!(
        rollout.events.iter().any(|e| e == "FailedCreate"),
        "the refusal as evidence: {:?}",
        rollout.events
    );
}

/// Apps that wait on infra. One commit changes both; `app` depends on
/// `infra`, whose new Deployment takes a minute to become available. kustomize-controller keeps
/// `app` at `DependencyNotReady` (requeued every 30 s) before it records the attempt, longer
/// than `app`'s own reconcile window (10 s timeout: 80 s). The wait is evidence on `app`'s
/// reconcile, not its time: the promotion succeeds, and the span says how long it waited.
#[test]
fn a_kustomization_waiting_for_its_dependency_is_not_a_timeout() {
    let Some(bed) = Testbed::find("a_kustomization_waiting_for_its_dependency_is_not_a_timeout")
    else {
        return;
    };
    let ns = bed.namespace("e2e-deps");
    let deployment = |name: &str, image: &str, min_ready: u32, promotion: &str| {
        let spec = format!(
            "  replicas: 1\n  minReadySeconds: {min_ready}\n  progressDeadlineSeconds: 300"
        );
        deployment_yaml(name, image, &spec, promotion)
    };
    let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- deployment.yaml\n";
    let files = |version: &str, min_ready: u32, promotion: &str| {
        vec![
            (
                "infra/deployment.yaml".to_string(),
                deployment(
                    "db",
                    &format!("ghcr.io/acme/db:{version}"),
                    min_ready,
                    promotion,
                ),
            ),
            (
                "infra/kustomization.yaml".to_string(),
                kustomization.to_string(),
            ),
            (
                "app/deployment.yaml".to_string(),
                deployment("web", &format!("ghcr.io/acme/web:{version}"), 0, promotion),
            ),
            (
                "app/kustomization.yaml".to_string(),
                kustomization.to_string(),
            ),
        ]
    };
    let first = files("1.0.0", 0, "first");
    bed.push(&ns, &borrowed(&first), "first");
    bed.apply(&format!(
        "apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: app, namespace: {ns}}}
spec:
  interval: 10m
  {source}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: infra, namespace: {ns}}}
spec: {{interval: 10m, path: ./infra, prune: true, wait: true, timeout: 2m, targetNamespace: {ns}, sourceRef: {{kind: GitRepository, name: app}}}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: app, namespace: {ns}}}
spec: {{interval: 10m, retryInterval: 10s, dependsOn: [{{name: infra}}], path: ./app, prune: true, wait: true, timeout: 10s, targetNamespace: {ns}, sourceRef: {{kind: GitRepository, name: app}}}}
",
        source = git_source(&bed, &ns)
    ));
    bed.kubectl(&[
        "-n",
        &ns,
        "wait",
        "--for=condition=Ready",
        "--timeout=180s",
        "kustomization/infra",
        "kustomization/app",
    ]);
    let agent = bed.agent(BIN, &ns, None, &[]);
    let id = format!("e2e-deps-{}", std::process::id());
    let second = files("1.1.0", 60, &id);
    let commit = bed.push(
        &ns,
        &borrowed(&second),
        "1.1.0: db slow to become available",
    );
    let (ci_trace, _) = report_and_fetch(&bed, &agent, &ns, &id, &commit);
    let spans = trace(&bed, &agent, &ci_trace, 9);
    succeeded(&spans, "reported");
    let app = spans
        .iter()
        .find(|s| s.name == "reconcile" && tag(s, "flux.object.name") == "app")
        .expect("app's reconcile");
    assert_ne!(tag(app, "otel.status_code"), "ERROR", "{:?}", app.tags);
    let waited: u64 = tag(app, "delivery.reconcile.waited_seconds")
        .parse()
        .unwrap_or_else(|_| panic!("the wait on the span: {:?}", app.tags));
    assert!(waited >= 60, "waited {waited} s for infra");
    assert!(
        tag(app, "delivery.reconcile.waited_for").starts_with("DependencyNotReady"),
        "{:?}",
        app.tags
    );
}

/// A rollout longer than its `progressDeadlineSeconds` that keeps
/// progressing. The Deployment controller measures the deadline from the `Progressing`
/// condition's `lastUpdateTime`, refreshed at every step (four replicas, one at a time, each
/// available 6 s after it is ready), so it never reports `ProgressDeadlineExceeded`: nor does
/// the trace fail.
#[test]
fn a_rollout_that_keeps_progressing_past_its_deadline_succeeds() {
    let Some(bed) = Testbed::find("a_rollout_that_keeps_progressing_past_its_deadline_succeeds")
    else {
        return;
    };
    let ns = bed.namespace("e2e-long");
    let deployment = |image: &str, promotion: &str| {
        let spec = "  replicas: 4\n  minReadySeconds: 6\n  progressDeadlineSeconds: 15\n  strategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}";
        deployment_yaml("web", image, spec, promotion)
    };
    let kustomization = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- deployment.yaml\n";
    let first = deployment("ghcr.io/acme/web:1.0.0", "first");
    bed.push(
        &ns,
        &[
            ("deployment.yaml", &first),
            ("kustomization.yaml", kustomization),
        ],
        "first",
    );
    delivered_by_kustomization(&bed, &ns, "GitRepository", &git_source(&bed, &ns));
    let agent = bed.agent(BIN, &ns, None, &[]);
    let id = format!("e2e-long-{}", std::process::id());
    let next = deployment("ghcr.io/acme/web:1.1.0", &id);
    let commit = bed.push(&ns, &[("deployment.yaml", &next)], "web 1.1.0");
    let (ci_trace, _) = report_and_fetch(&bed, &agent, &ns, &id, &commit);
    let spans = trace(&bed, &agent, &ci_trace, 5);
    succeeded(&spans, "reported");
    let rollout = span(&spans, "rollout");
    assert_ne!(
        tag(rollout, "otel.status_code"),
        "ERROR",
        "{:?}",
        rollout.tags
    );
    assert!(
        rollout.duration_us > 15_000_000,
        "longer than its progress deadline: {} µs",
        rollout.duration_us
    );
}
