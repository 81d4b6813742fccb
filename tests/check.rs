//! `fluxtrace check` as a user runs it: the real binary against the test API server
//! (`testkit::kube_api`), one failure at a time, and against the real test bed
//! (`tests/testbed/`) for the case where everything the agent needs is there.

use std::process::Output;

use fluxtrace_testkit::cli;
use fluxtrace_testkit::kube_api::{KindSpec, KubeApi, ServerHandle};
use fluxtrace_testkit::otlp_receiver::{unused_endpoint, OtlpReceiver};
use fluxtrace_testkit::testbed::Testbed;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_fluxtrace");

/// The agent's ServiceAccount as deploy/ creates it.
const AGENT: &str = "system:serviceaccount:fluxtrace:fluxtrace";

/// The test API server with every kind fluxtrace watches (its defaults lack DaemonSet and
/// ExternalArtifact).
fn full() -> KubeApi {
    let mut daemonset = KindSpec::new("apps", "v1", "DaemonSet", "daemonsets");
    daemonset.subresources.clear();
    KubeApi::new().with_kind(daemonset).with_kind(KindSpec::new(
        "source.toolkit.fluxcd.io",
        "v1",
        "ExternalArtifact",
        "externalartifacts",
    ))
}

async fn check(server: &ServerHandle, tag: &str, args: &[&str]) -> Output {
    let kubeconfig = server.kubeconfig(tag);
    let kubeconfig = kubeconfig.to_str().expect("a UTF-8 path");
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    cli::run(BIN, &all, &[("KUBECONFIG", kubeconfig)]).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The line of check `name` whose summary contains `text`, with its mark.
fn line(out: &str, check: &str, text: &str) -> String {
    out.lines()
        .find(|l| l.get(5..).is_some_and(|r| r.starts_with(check)) && l.contains(text))
        .unwrap_or_else(|| panic!("no `{check}` line with {text:?} in:\n{out}"))
        .to_string()
}

/// The findings of a `--output json` run.
fn findings(o: &Output) -> (bool, Vec<Value>) {
    let v: Value = serde_json::from_slice(&o.stdout).expect("check --output json prints JSON");
    let findings = v["findings"].as_array().expect("findings").clone();
    (v["ok"].as_bool().expect("ok"), findings)
}

#[tokio::test]
async fn an_unreachable_api_server_fails_and_names_it() {
    // A kubeconfig whose server is a port where nothing listens.
    let server = full().start().await;
    let path = std::env::temp_dir().join(format!("fluxtrace-check-down-{}", std::process::id()));
    let down = unused_endpoint();
    let text = std::fs::read_to_string(server.kubeconfig("down")).expect("kubeconfig");
    std::fs::write(&path, text.replace(&server.url(), &down)).expect("kubeconfig");
    let out = cli::run(
        BIN,
        &["check"],
        &[("KUBECONFIG", path.to_str().expect("UTF-8"))],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        line(&text, "api-server", "not reachable").contains(&down),
        "{text}"
    );
    assert!(line(&text, "api-server", "").starts_with("FAIL"));
}

#[tokio::test]
async fn with_everything_served_and_granted_check_passes_and_lists_versions() {
    let server = full().start().await;
    let out = check(&server, "good", &["--as", AGENT]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let api = line(&text, "api-server", "answers");
    assert!(api.contains(fluxtrace_testkit::kube_api::VERSION), "{api}");
    assert!(line(&text, "kinds", "Flux helm").contains("HelmRelease v2"));
    assert!(line(&text, "promotion-crd", "").starts_with("ok"));
    assert!(
        text.lines()
            .filter(|l| l.get(5..).is_some_and(|r| r.starts_with("kinds")))
            .all(|l| l.starts_with("ok")),
        "every kind served at a version fluxtrace reads:\n{text}"
    );
    let rbac = line(&text, "rbac", AGENT);
    assert!(
        rbac.starts_with("ok") && rbac.contains("are granted"),
        "{rbac}"
    );
    // The test API server serves no Provider or Alert: a warning, not a failure.
    assert!(line(&text, "notification", "not served").starts_with("warn"));
    assert!(text.lines().count() <= 24, "one screen:\n{text}");
}

#[tokio::test]
async fn a_missing_promotion_crd_fails() {
    let server = full().without_kind("Promotion").start().await;
    let out = check(&server, "nocrd", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let l = line(&text, "promotion-crd", "promotions.fluxtrace.io");
    assert!(
        l.starts_with("FAIL") && l.ends_with("is not installed"),
        "{l}"
    );
    assert!(text.contains("kubectl apply -k deploy/crds"), "{text}");
}

#[tokio::test]
async fn a_promotion_crd_at_another_version_fails_naming_both() {
    let server = full().serve_kind_at("Promotion", "v1beta1").start().await;
    let out = check(&server, "crdver", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let l = line(&stdout(&out), "promotion-crd", "served at");
    assert!(
        l.ends_with("served at v1beta1, this binary writes v1alpha1"),
        "{l}"
    );
}

#[tokio::test]
async fn a_flux_kind_served_only_at_an_unread_version_is_a_warning() {
    let server = full().serve_kind_at("HelmRelease", "v3").start().await;
    let out = check(&server, "helmv3", &[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(line(&text, "kinds", "Flux helm").starts_with("warn"));
    assert!(
        text.contains("HelmRelease: served at v3, fluxtrace reads v2, v2beta2, v2beta1"),
        "{text}"
    );
    let out = check(&server, "helmv3json", &["--output", "json"]).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let helm = v["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .find(|k| k["kind"] == "HelmRelease")
        .expect("HelmRelease")
        .clone();
    assert_eq!(
        helm,
        json!({"group": "helm.toolkit.fluxcd.io", "kind": "HelmRelease", "served": ["v3"],
               "understood": ["v2", "v2beta2", "v2beta1"], "reads": null})
    );
}

#[tokio::test]
async fn each_missing_permission_is_named_with_the_rule_that_grants_it() {
    let server = full().start().await;
    server.deny("patch", "fluxtrace.io", "promotions/status");
    server.deny("watch", "apps", "deployments");
    server.deny("update", "coordination.k8s.io", "leases");
    let out = check(&server, "rbac", &["--as", AGENT]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(line(&text, "rbac", "3 of").starts_with("FAIL"), "{text}");
    for (missing, rule) in [
        (
            "missing patch on promotions/status (fluxtrace.io); granted by ClusterRole fluxtrace:",
            r#"{apiGroups: ["fluxtrace.io"], resources: ["promotions/status"], verbs: ["get", "patch"]}"#,
        ),
        (
            "missing watch on deployments (apps); granted by ClusterRole fluxtrace:",
            r#"{apiGroups: ["apps"], resources: ["deployments", "daemonsets", "replicasets"], verbs: ["get", "list", "watch"]}"#,
        ),
        (
            "missing update on leases (coordination.k8s.io); granted by Role fluxtrace-leader-election (namespace fluxtrace):",
            r#"{apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["create", "get", "update"]}"#,
        ),
    ] {
        let at = text
            .find(missing)
            .unwrap_or_else(|| panic!("{missing} in:\n{text}"));
        let next = text[at..].lines().nth(1).unwrap_or_default();
        assert_eq!(next.trim(), rule);
    }
    // The same for scripts.
    let out = check(&server, "rbacjson", &["--as", AGENT, "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut missing: Vec<String> = v["missing_permissions"]
        .as_array()
        .expect("missing_permissions")
        .iter()
        .map(|m| {
            format!(
                "{} {} {} {}",
                m["verb"], m["group"], m["resource"], m["granted_by"]
            )
        })
        .collect();
    missing.sort();
    assert_eq!(
        missing,
        [
            r#""patch" "fluxtrace.io" "promotions/status" "ClusterRole fluxtrace""#,
            r#""update" "coordination.k8s.io" "leases" "Role fluxtrace-leader-election""#,
            r#""watch" "apps" "deployments" "ClusterRole fluxtrace""#,
        ]
    );
    // Every permission of the shipped roles was reviewed (twice: text, then JSON), as the
    // ServiceAccount.
    let reviews = server.access_reviews();
    assert_eq!(
        reviews.len(),
        2 * fluxtrace::check::permissions(Some("fluxtrace")).len()
    );
    for r in &reviews {
        assert_eq!(r["spec"]["user"], AGENT);
        let groups = r["spec"]["groups"].as_array().expect("groups");
        assert!(groups.contains(&json!("system:serviceaccounts:fluxtrace")));
    }
    let rules = fluxtrace::cluster::cluster_role_yaml();
    for r in &reviews {
        let a = &r["spec"]["resourceAttributes"];
        let resource = match a["subresource"].as_str() {
            Some(s) => format!("{}/{s}", a["resource"].as_str().unwrap_or_default()),
            None => a["resource"].as_str().unwrap_or_default().to_string(),
        };
        assert!(
            resource == "leases" || rules.contains(&format!("\"{resource}\"")),
            "{resource} is not in deploy/rbac/clusterrole.yaml"
        );
    }
}

#[tokio::test]
async fn without_as_the_caller_reviews_its_own_access() {
    let server = full().start().await;
    server.deny("list", "", "pods");
    let out = check(&server, "self", &["--no-leader-election"]).await;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(line(&text, "rbac", "yourself: 1 of").starts_with("FAIL"));
    assert!(text.contains("missing list on pods (core)"), "{text}");
    assert!(!text.contains("Lease"), "no election, no Lease: {text}");
    let paths: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("accessreviews"))
        .map(|r| r.path)
        .collect();
    assert!(!paths.is_empty());
    assert!(paths
        .iter()
        .all(|p| p.ends_with("/selfsubjectaccessreviews")));
}

fn notification_kinds() -> KubeApi {
    const GROUP: &str = "notification.toolkit.fluxcd.io";
    full()
        .with_kind(KindSpec::new(GROUP, "v1beta3", "Provider", "providers"))
        .with_kind(KindSpec::new(GROUP, "v1beta3", "Alert", "alerts"))
}

fn provider(address: &str) -> Value {
    json!({
        "apiVersion": "notification.toolkit.fluxcd.io/v1beta3", "kind": "Provider",
        "metadata": {"name": "fluxtrace", "namespace": "flux-system"},
        "spec": {"type": "generic-hmac", "address": address, "secretRef": {"name": "fluxtrace-hmac"}}
    })
}

#[tokio::test]
async fn the_notification_path_needs_a_provider_to_the_intake_and_an_alert_using_it() {
    let server = notification_kinds().start().await;
    let out = check(&server, "notif0", &[]).await;
    let l = line(&stdout(&out), "notification", "");
    assert!(l.starts_with("warn") && l.contains("no Provider"), "{l}");

    // A Provider that posts somewhere else does not count.
    server.apply("ADDED", provider("http://hooks.example/slack"));
    let out = check(&server, "notif1", &[]).await;
    assert!(line(&stdout(&out), "notification", "no Provider").starts_with("warn"));

    let intake = "http://fluxtrace.fluxtrace.svc.cluster.local:8080/v1/flux/events";
    server.apply("MODIFIED", provider(intake));
    let out = check(&server, "notif2", &[]).await;
    let l = line(&stdout(&out), "notification", "no Alert uses it");
    assert!(l.starts_with("warn"), "{l}");

    server.apply(
        "ADDED",
        json!({
            "apiVersion": "notification.toolkit.fluxcd.io/v1beta3", "kind": "Alert",
            "metadata": {"name": "fluxtrace", "namespace": "flux-system"},
            "spec": {"providerRef": {"name": "fluxtrace"}, "eventSeverity": "info",
                     "eventSources": [{"kind": "Kustomization", "name": "*"},
                                      {"kind": "HelmRelease", "name": "*"}]}
        }),
    );
    let out = check(&server, "notif3", &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let l = line(&stdout(&out), "notification", "forwards");
    assert_eq!(
        l,
        format!(
            "ok   notification  Alert flux-system/fluxtrace (Kustomization, HelmRelease) forwards to \
             Provider flux-system/fluxtrace (generic-hmac) at {intake}"
        )
    );
}

#[tokio::test]
async fn an_otlp_endpoint_that_does_not_answer_fails_and_one_that_does_passes() {
    let server = full().start().await;
    let down = unused_endpoint();
    let out = check(&server, "otlpdown", &["--otlp-endpoint", &down]).await;
    assert_eq!(out.status.code(), Some(1));
    let l = line(&stdout(&out), "otlp", &down);
    assert!(l.starts_with("FAIL") && l.contains("cannot connect"), "{l}");

    let receiver = OtlpReceiver::start().await;
    let out = check(
        &server,
        "otlpup",
        &["--otlp-endpoint", &receiver.endpoint()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert!(line(&stdout(&out), "otlp", "accepts").starts_with("ok"));
    // The check is an empty export: nothing reaches the backend.
    assert!(receiver.spans().is_empty());

    receiver.refuse_all(tonic::Code::Unavailable);
    let out = check(
        &server,
        "otlpno",
        &["--otlp-endpoint", &receiver.endpoint()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(line(&stdout(&out), "otlp", "refused").contains("Unavailable"));
}

#[tokio::test]
async fn the_lease_holder_and_the_agents_flux_events_are_reported() {
    let server = full().start().await;
    let out = check(&server, "nolease", &[]).await;
    assert!(line(&stdout(&out), "lease", "does not exist yet").starts_with("info"));
    server.apply(
        "ADDED",
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "fluxtrace", "namespace": "fluxtrace"},
            "spec": {"holderIdentity": "fluxtrace-7d9c-abcde", "leaseDurationSeconds": 15,
                     "renewTime": "2026-12-07T14:00:00.000000Z"}
        }),
    );
    // An agent that has received no Flux events yet (a replay serves the same /readyz).
    let recording = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples/recordings/oci-success.jsonl");
    let (_agent, addr) = cli::serve_replay(BIN, &[recording]);
    let agent = format!("http://{addr}");
    let out = check(&server, "lease", &["--agent", &agent, "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let (ok, findings) = findings(&out);
    assert!(ok);
    let of = |c: &str| {
        findings
            .iter()
            .find(|f| f["check"] == c)
            .unwrap_or_else(|| panic!("no {c} in {findings:?}"))
            .clone()
    };
    assert_eq!(of("lease")["level"], "ok");
    assert_eq!(
        of("lease")["summary"],
        "Lease fluxtrace/fluxtrace held by fluxtrace-7d9c-abcde, renewed 2026-12-07T14:00:00Z"
    );
    assert_eq!(of("agent")["level"], "warn");
    assert_eq!(
        of("agent")["summary"],
        format!("{agent}: ready; no Flux events received yet from notification-controller")
    );

    // An agent URL where nothing answers is a failure.
    let down = unused_endpoint();
    let out = check(&server, "agentdown", &["--agent", &down]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(line(&stdout(&out), "agent", &down).starts_with("FAIL"));
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_flag() {
    let server = full().start().await;
    let out = check(&server, "badas", &["--as", " "]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--as is empty"));
    let out = check(&server, "badtimeout", &["--timeout", "0s"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeout must be more than zero"));
}

/// The real stack: a ServiceAccount of the test's own bound to the ClusterRole and Role that
/// deploy/rbac ships (under names of the test's own), the real Collector, a Lease held.
#[test]
fn on_the_test_bed_everything_the_agent_needs_is_in_place() {
    let Some(bed) = Testbed::find("on_the_test_bed_everything_the_agent_needs_is_in_place") else {
        return;
    };
    let ns = bed.namespace("fluxtrace-check-e2e");
    let name = "fluxtrace-check-e2e";
    let cluster_role = fluxtrace::cluster::cluster_role_yaml()
        .replace("  name: fluxtrace\n", &format!("  name: {name}\n"));
    let role = fluxtrace::leader::role_yaml().replace(
        "  name: fluxtrace-leader-election\n",
        &format!("  name: {name}\n  namespace: {ns}\n"),
    );
    bed.apply(&cluster_role);
    bed.apply(&role);
    bed.apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: fluxtrace\n  namespace: {ns}\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata:\n  name: {name}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  \
         kind: ClusterRole\n  name: {name}\nsubjects:\n- kind: ServiceAccount\n  name: fluxtrace\n  \
         namespace: {ns}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata:\n  name: {name}\n  namespace: {ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  \
         kind: Role\n  name: {name}\nsubjects:\n- kind: ServiceAccount\n  name: fluxtrace\n  \
         namespace: {ns}\n---\napiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  \
         name: fluxtrace\n  namespace: {ns}\nspec:\n  holderIdentity: replica-a\n  \
         leaseDurationSeconds: 15\n"
    ));
    let sa = format!("system:serviceaccount:{ns}:fluxtrace");
    let run = |output: &str| {
        let out = std::process::Command::new(BIN)
            .args(["check", "--as", &sa, "--promotion-namespace", &ns])
            .args(["--otlp-endpoint", bed.get("TESTBED_OTELCOL_OTLP_GRPC")])
            .args(["--output", output])
            .env_clear()
            .env("KUBECONFIG", bed.get("KUBECONFIG"))
            .output()
            .expect("the binary runs");
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        out
    };
    let out = run("text");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(line(&text, "api-server", "answers").starts_with("ok"));
    assert!(line(&text, "kinds", "Flux sources").contains("GitRepository v1"));
    assert!(line(&text, "kinds", "Flux kustomize").contains("Kustomization v1"));
    assert!(line(&text, "promotion-crd", "v1alpha1").starts_with("ok"));
    assert!(line(&text, "rbac", &sa).contains("are granted"));
    assert!(line(&text, "otlp", "accepts").starts_with("ok"));
    assert!(line(&text, "lease", "held by replica-a").starts_with("ok"));
    assert!(text.lines().count() <= 24, "one screen:\n{text}");

    let (ok, findings) = findings(&run("json"));
    assert!(ok);
    assert!(
        findings.iter().all(|f| f["level"] != "fail"),
        "{findings:?}"
    );

    // The real authorizer says no to a ServiceAccount nothing is bound to.
    let unbound = format!("system:serviceaccount:{ns}:unbound");
    let out = std::process::Command::new(BIN)
        .args(["check", "--as", &unbound, "--promotion-namespace", &ns])
        .env_clear()
        .env("KUBECONFIG", bed.get("KUBECONFIG"))
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(1));
    let all = fluxtrace::check::permissions(Some(&ns)).len();
    let text = stdout(&out);
    let rbac = line(&text, "rbac", &unbound);
    assert!(
        rbac.ends_with(&format!(
            "{all} of {all} permissions the agent uses are missing"
        )),
        "{text}"
    );

    bed.kubectl(&["delete", "clusterrolebinding,clusterrole", name]);
    bed.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[tokio::test]
async fn a_request_that_hangs_is_given_up_after_the_timeout() {
    let server = notification_kinds().start().await;
    server.hang_lists("providers", std::time::Duration::from_secs(60), 1);
    let started = std::time::Instant::now();
    let out = check(&server, "hang", &["--timeout", "1s"]).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let l = line(&stdout(&out), "notification", "cannot list");
    assert!(
        l.starts_with("warn") && l.ends_with("no answer within 1s"),
        "{l}"
    );
}
