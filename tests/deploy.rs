//! deploy/: the image, the Kustomize base and overlays, the Flux install and the examples,
//! checked for real where something real can run here:
//!
//! - every YAML and JSON file parses;
//! - `kubectl kustomize` renders every kustomization (base, overlays, Flux install, examples);
//!   it is skipped, with the reason printed, only when kubectl is missing (.ci/run installs it);
//! - the rendered base and overlays carry the security settings (non-root, read-only root
//!   filesystem, no capabilities, RuntimeDefault seccomp, requests and limits), health probes
//!   on paths the agent's router serves, `fluxtrace run` arguments that the real CLI parses,
//!   environment variables the agent reads, intake Secrets mounted where the flags point;
//! - the RBAC they install is exactly the ClusterRole generated from the code
//!   (`cluster_role_yaml()`, the drift test of tests/rbac.rs carried to what is applied), bound
//!   cluster-wide, or per watched namespace in the namespace-scoped overlay;
//! - the Flux install points notification-controller at a path the intake serves, with the
//!   Secret the agent mounts; the examples' CI steps are `fluxtrace promote` invocations the real
//!   CLI accepts, and use the annotation the agent reads;
//! - README.md documents installing with Kustomize and with Flux.

use fluxtrace_testkit::tools;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use clap::{CommandFactory, Parser};
use fluxtrace::admin::{self, Readiness};
use fluxtrace::config::{Cli, Command as Sub, PromoteArgs, RunArgs};
use fluxtrace::intake::{self, Intake};
use fluxtrace::metrics::Metrics;
use fluxtrace::model::{Kind, PROMOTION_ANNOTATION};
use fluxtrace::sources::kube::cluster_role_yaml;
use fluxtrace_testkit::files::files;
use serde_json::Value as Json;
use serde_yaml_ng::Value;
use tower::ServiceExt as _;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn deploy() -> PathBuf {
    Path::new(ROOT).join("deploy")
}

fn rel(p: &Path) -> String {
    p.strip_prefix(ROOT).unwrap_or(p).display().to_string()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every document of a YAML stream (`---`-separated), empty ones left out.
fn documents(text: &str, what: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml(p: &Path) -> Value {
    let mut docs = documents(&read(p), &rel(p));
    assert_eq!(docs.len(), 1, "{}: one document", rel(p));
    docs.remove(0)
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v:?}"))
}

fn seq(v: &Value) -> Vec<Value> {
    v.as_sequence().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// kubectl.

/// kubectl: `$KUBECTL`, else `kubectl` on PATH; `None` (and the skip announced) when missing.
fn kubectl(test: &str) -> Option<std::ffi::OsString> {
    tools::tool(test, "kubectl", "KUBECTL", &["version", "--client"])
}

/// `kubectl kustomize <dir>`: the rendered objects.
fn render(kubectl: &std::ffi::OsStr, dir: &Path) -> Vec<Value> {
    let o = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl runs");
    assert!(
        o.status.success(),
        "kubectl kustomize {}:\n{}",
        rel(dir),
        String::from_utf8_lossy(&o.stderr)
    );
    let docs = documents(&String::from_utf8_lossy(&o.stdout), &rel(dir));
    assert!(!docs.is_empty(), "{}: renders objects", rel(dir));
    docs
}

/// Every directory under deploy/ with a kustomization.yaml, Components (which render only as
/// part of another kustomization) left out.
fn kustomizations() -> Vec<PathBuf> {
    let all = files(&deploy());
    all.into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .filter(|p| yaml(p)["kind"].as_str() != Some("Component"))
        .map(|p| p.parent().expect("a directory").to_path_buf())
        .collect()
}

/// The base and every overlay: what a user applies to install the agent.
fn installs() -> Vec<PathBuf> {
    let k = deploy().join("kustomize");
    let mut out = vec![k.join("base")];
    let mut overlays: Vec<_> = std::fs::read_dir(k.join("overlays"))
        .expect("deploy/kustomize/overlays")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.join("kustomization.yaml").exists())
        .collect();
    overlays.sort();
    assert!(
        overlays.len() >= 3,
        "overlays for namespace scope, no intake and ServiceMonitor"
    );
    out.extend(overlays);
    out
}

fn of_kind<'a>(objs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn ns(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// The agent's CLI: which flags `run` takes, which variables it reads.

/// Environment variables the agent reads: those clap declares for `run` and the global flags,
/// the standard OpenTelemetry ones, and `RUST_LOG` (src/main.rs, tracing's EnvFilter).
fn run_env() -> BTreeSet<String> {
    let cmd = Cli::command();
    let run = cmd
        .get_subcommands()
        .find(|s| s.get_name() == "run")
        .expect("a run subcommand");
    let mut out: BTreeSet<String> = cmd
        .get_arguments()
        .chain(run.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    out.insert("RUST_LOG".into());
    out
}

fn parse_run(args: &[String]) -> RunArgs {
    let cli =
        Cli::try_parse_from(std::iter::once("fluxtrace".to_string()).chain(args.iter().cloned()))
            .unwrap_or_else(|e| {
                panic!("the container's args are not a valid fluxtrace command: {e}")
            });
    match cli.command {
        Sub::Run(r) => *r,
        other => panic!("the container runs `fluxtrace run`, not {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn every_yaml_and_json_file_parses() {
    let all = files(&deploy());
    let mut n = 0;
    // The Helm chart's templates are Go templates, not YAML until rendered: tests/helm.rs
    // renders them with the real helm.
    let templates = deploy().join("helm/fluxtrace/templates");
    for p in all.iter().filter(|p| !p.starts_with(&templates)) {
        match p.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => {
                documents(&read(p), &rel(p));
                n += 1;
            }
            Some("json") => {
                serde_json::from_str::<Json>(&read(p))
                    .unwrap_or_else(|e| panic!("{}: {e}", rel(p)));
                n += 1;
            }
            _ => {}
        }
    }
    assert!(n >= 30, "deploy/ holds the manifests ({n} files)");
}

#[test]
fn kubectl_kustomize_renders_every_kustomization() {
    let Some(k) = kubectl("kubectl_kustomize_renders_every_kustomization") else {
        return;
    };
    let dirs = kustomizations();
    assert!(dirs.len() >= 10, "{dirs:?}");
    for dir in dirs {
        render(&k, &dir);
    }
}

/// The pod template's containers: one, the agent.
fn agent_container(deployment: &Value) -> &Value {
    let cs = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(cs.len(), 1, "one container: the agent");
    &cs[0]
}

fn port_named(container: &Value, port: &str) -> Option<u64> {
    seq(&container["ports"])
        .iter()
        .find(|p| p["name"] == port)
        .and_then(|p| p["containerPort"].as_u64())
}

fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let m = selector.as_mapping().expect("a label selector");
    !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn the_base_and_every_overlay_render_a_locked_down_agent() {
    let Some(k) = kubectl("the_base_and_every_overlay_render_a_locked_down_agent") else {
        return;
    };
    let dockerfile = read(&deploy().join("Dockerfile"));
    let image_user: i64 = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER")
        .split(':')
        .next()
        .expect("a uid")
        .trim()
        .parse()
        .expect("a numeric uid");
    let env_known = run_env();
    for dir in installs() {
        let what = rel(&dir);
        let objs = render(&k, &dir);
        let deployments = of_kind(&objs, "Deployment");
        assert_eq!(deployments.len(), 1, "{what}: one Deployment");
        let d = deployments[0];
        let pod = &d["spec"]["template"]["spec"];
        let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
        assert!(
            selector_matches(&d["spec"]["selector"]["matchLabels"], pod_labels),
            "{what}: the Deployment selects its pods"
        );
        // Two replicas elect a leader; a drain or a rolling update keeps one running.
        assert_eq!(
            d["spec"]["replicas"].as_u64(),
            Some(2),
            "{what}: two replicas"
        );
        let rolling = &d["spec"]["strategy"]["rollingUpdate"];
        assert_eq!(
            rolling["maxUnavailable"].as_u64(),
            Some(0),
            "{what}: a rolling update starts the new pod before the old one stops"
        );
        let pdbs = of_kind(&objs, "PodDisruptionBudget");
        assert_eq!(pdbs.len(), 1, "{what}: a PodDisruptionBudget");
        assert_eq!(pdbs[0]["spec"]["minAvailable"].as_u64(), Some(1));
        assert!(
            selector_matches(&pdbs[0]["spec"]["selector"]["matchLabels"], pod_labels),
            "{what}: the PodDisruptionBudget covers the agent's pods"
        );
        assert!(
            !agent_container(d)["args"]
                .as_sequence()
                .is_some_and(|a| a.iter().any(|x| x == "--no-leader-election")),
            "{what}: the replicas elect a leader"
        );

        // Pod security.
        let psc = &pod["securityContext"];
        assert_eq!(
            psc["runAsNonRoot"].as_bool(),
            Some(true),
            "{what}: runAsNonRoot"
        );
        let uid = psc["runAsUser"].as_i64().expect("a numeric runAsUser");
        assert!(uid > 0, "{what}: non-root uid");
        assert_eq!(
            uid, image_user,
            "{what}: the image's USER and runAsUser agree"
        );
        assert_eq!(
            psc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{what}: seccomp"
        );
        for host in ["hostNetwork", "hostPID", "hostIPC"] {
            assert_ne!(pod[host].as_bool(), Some(true), "{what}: {host}");
        }
        let c = agent_container(d);
        let sc = &c["securityContext"];
        assert_eq!(
            sc["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{what}: read-only root"
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{what}: escalation"
        );
        assert_ne!(sc["privileged"].as_bool(), Some(true), "{what}: privileged");
        assert_eq!(
            sc["runAsNonRoot"].as_bool(),
            Some(true),
            "{what}: container runAsNonRoot"
        );
        assert_eq!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{what}: container seccomp"
        );
        assert!(
            seq(&sc["capabilities"]["drop"]).contains(&Value::from("ALL")),
            "{what}: all capabilities dropped"
        );
        assert!(
            seq(&sc["capabilities"]["add"]).is_empty(),
            "{what}: none added"
        );
        for (section, resource) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "cpu"),
            ("limits", "memory"),
        ] {
            assert!(
                !c["resources"][section][resource].is_null(),
                "{what}: resources.{section}.{resource}"
            );
        }
        let image = str_of(&c["image"], "image");
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert_eq!(
            tag,
            env!("CARGO_PKG_VERSION"),
            "{what}: the image is pinned to this version ({image})"
        );

        // `fluxtrace run` as the real CLI parses it; ports and probes agree with it.
        let args: Vec<String> = seq(&c["args"])
            .iter()
            .map(|a| str_of(a, "an arg").to_string())
            .collect();
        let run = parse_run(&args);
        assert_eq!(
            port_named(c, "http"),
            Some(u64::from(run.listen.port())),
            "{what}: the http port is --listen's"
        );
        // The kubelet probes the health listener, which intake traffic cannot starve.
        let health = run
            .health_listen
            .unwrap_or_else(|| panic!("{what}: --health-listen is set"));
        assert_eq!(
            port_named(c, "health"),
            Some(u64::from(health.port())),
            "{what}: the health port is --health-listen's"
        );
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let g = &c[probe]["httpGet"];
            assert_eq!(g["path"].as_str(), Some(path), "{what}: {probe}");
            assert_eq!(g["port"].as_str(), Some("health"), "{what}: {probe} port");
        }
        assert!(!run.intake.insecure_no_auth, "{what}: intake auth stays on");

        // Environment: only variables the agent reads; the endpoint and the cluster as values.
        let mut env = BTreeMap::new();
        for e in seq(&c["env"]) {
            let n = str_of(&e["name"], "env name").to_string();
            assert!(
                n.starts_with("OTEL_") || env_known.contains(&n),
                "{what}: env {n} is read by nothing in the agent"
            );
            env.insert(n, e["value"].as_str().map(str::to_string));
        }
        let endpoint = env
            .get("OTEL_EXPORTER_OTLP_ENDPOINT")
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("{what}: OTEL_EXPORTER_OTLP_ENDPOINT as a value"));
        assert!(endpoint.starts_with("http"), "{what}: {endpoint}");
        let cluster = env
            .get("FLUXTRACE_CLUSTER_NAME")
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("{what}: FLUXTRACE_CLUSTER_NAME as a value"));
        assert!(!cluster.is_empty());

        // Intake Secrets: mounted as directories (updates arrive; the agent re-reads them),
        // read-only, where the flags point.
        let volumes = seq(&pod["volumes"]);
        let mounts = seq(&c["volumeMounts"]);
        let secret_of_file = |file: &Path| -> String {
            let m = mounts
                .iter()
                .find(|m| file.starts_with(str_of(&m["mountPath"], "mountPath")))
                .unwrap_or_else(|| panic!("{what}: {} is not on a mounted volume", file.display()));
            assert!(
                m["subPath"].is_null(),
                "{what}: no subPath, so Secret updates arrive"
            );
            assert_eq!(
                m["readOnly"].as_bool(),
                Some(true),
                "{what}: read-only mount"
            );
            let v = volumes
                .iter()
                .find(|v| v["name"] == m["name"])
                .expect("the mount's volume");
            str_of(&v["secret"]["secretName"], "a Secret volume").to_string()
        };
        let services = of_kind(&objs, "Service");
        let intake_service = services.iter().find(|s| name(s) == name(d)).copied();
        let policy = of_kind(&objs, "NetworkPolicy")
            .into_iter()
            .find(|p| name(p) == "fluxtrace-intake")
            .unwrap_or_else(|| panic!("{what}: the intake NetworkPolicy"));
        assert!(
            selector_matches(&policy["spec"]["podSelector"]["matchLabels"], pod_labels),
            "{what}: the NetworkPolicy applies to the agent"
        );
        match intake_service {
            Some(svc) => {
                let tokens = run.intake.token_file.as_deref().expect("--token-file");
                let hmac = run
                    .intake
                    .hmac_key_file
                    .as_deref()
                    .expect("--hmac-key-file");
                assert_ne!(secret_of_file(tokens), secret_of_file(hmac));
                let grpc = run.intake.grpc_listen.expect("--grpc-listen");
                assert_eq!(
                    port_named(c, "grpc"),
                    Some(u64::from(grpc.port())),
                    "{what}: grpc"
                );
                assert!(
                    selector_matches(&svc["spec"]["selector"], pod_labels),
                    "{what}: the Service selects the agent"
                );
                let targets: BTreeSet<&str> = seq(&svc["spec"]["ports"])
                    .iter()
                    .map(|p| p["targetPort"].as_str().expect("named target ports"))
                    .map(|t| match t {
                        "http" => "http",
                        "grpc" => "grpc",
                        other => panic!("{what}: target port {other}"),
                    })
                    .collect();
                assert_eq!(
                    targets,
                    ["grpc", "http"].into(),
                    "{what}: HTTP and gRPC intake"
                );
                // Ingress from notification-controller, and from the namespaces the user names.
                let rules = seq(&policy["spec"]["ingress"]);
                let from_flux = rules.iter().any(|r| {
                    seq(&r["from"]).iter().any(|f| {
                        f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                            == "flux-system"
                            && f["podSelector"]["matchLabels"]["app"] == "notification-controller"
                    }) && seq(&r["ports"]).iter().any(|p| p["port"] == "http")
                });
                assert!(from_flux, "{what}: notification-controller may post events");
                let named = rules.iter().any(|r| {
                    seq(&r["from"]).iter().any(|f| {
                        seq(&f["namespaceSelector"]["matchExpressions"])
                            .iter()
                            .any(|e| {
                                e["key"] == "kubernetes.io/metadata.name"
                                    && e["operator"] == "In"
                                    && !seq(&e["values"]).is_empty()
                            })
                    })
                });
                assert!(
                    named,
                    "{what}: the namespaces the user names may report promotions"
                );
            }
            None => {
                assert!(
                    run.intake.grpc_listen.is_none(),
                    "{what}: no gRPC without a Service"
                );
                assert!(run.intake.token_file.is_none() && run.intake.hmac_key_file.is_none());
                assert!(volumes.is_empty(), "{what}: no Secrets to create");
                assert!(
                    seq(&policy["spec"]["ingress"]).is_empty(),
                    "{what}: no ingress admitted"
                );
                assert!(
                    policy["spec"]["policyTypes"]
                        .as_sequence()
                        .is_some_and(|t| t.contains(&Value::from("Ingress"))),
                    "{what}: the empty policy denies ingress"
                );
            }
        }
        // Optional monitoring: a ServiceMonitor scrapes /metrics through a Service on the
        // http port, which a NetworkPolicy admits.
        for sm in of_kind(&objs, "ServiceMonitor") {
            let svc = services
                .iter()
                .find(|s| {
                    selector_matches(
                        &sm["spec"]["selector"]["matchLabels"],
                        &s["metadata"]["labels"],
                    )
                })
                .unwrap_or_else(|| panic!("{what}: the ServiceMonitor selects a Service"));
            assert!(selector_matches(&svc["spec"]["selector"], pod_labels));
            let ep = &seq(&sm["spec"]["endpoints"])[0];
            assert_eq!(ep["path"].as_str(), Some("/metrics"));
            assert!(seq(&svc["spec"]["ports"])
                .iter()
                .any(|p| p["name"] == ep["port"]));
            assert!(
                of_kind(&objs, "NetworkPolicy")
                    .iter()
                    .any(|p| seq(&p["spec"]["ingress"])
                        .iter()
                        .any(|r| seq(&r["ports"]).iter().any(|p| p["port"] == "http"))),
                "{what}: the scraper is admitted"
            );
        }
        let namespace = of_kind(&objs, "Namespace");
        assert_eq!(namespace.len(), 1, "{what}: its namespace");
        assert_eq!(ns(d), name(namespace[0]));
        assert_eq!(
            namespace[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].as_str(),
            Some("restricted"),
            "{what}: the namespace enforces the restricted Pod Security Standard"
        );
    }
}

#[test]
fn the_rbac_installed_is_exactly_the_generated_cluster_role_bound_to_the_agent() {
    let Some(k) =
        kubectl("the_rbac_installed_is_exactly_the_generated_cluster_role_bound_to_the_agent")
    else {
        return;
    };
    let generated: Value = serde_yaml_ng::from_str(&cluster_role_yaml()).expect("generated YAML");
    for dir in installs() {
        let what = rel(&dir);
        let objs = render(&k, &dir);
        let roles = of_kind(&objs, "ClusterRole");
        assert_eq!(roles.len(), 1, "{what}: one ClusterRole");
        let role = roles[0];
        assert_eq!(
            name(role),
            name(&generated),
            "{what}: the generated role's name"
        );
        assert_eq!(
            role["rules"], generated["rules"],
            "{what}: the ClusterRole applied differs from cluster_role_yaml(); \
             the base must include deploy/rbac, not a copy"
        );
        // The one other grant: the election's Lease, in the agent's own namespace.
        let election: Value =
            serde_yaml_ng::from_str(&fluxtrace::leader::role_yaml()).expect("generated YAML");
        let roles = of_kind(&objs, "Role");
        assert_eq!(roles.len(), 1, "{what}: no other grants");
        assert_eq!(name(roles[0]), name(&election));
        assert_eq!(
            roles[0]["rules"], election["rules"],
            "{what}: the Role applied differs from leader::role_yaml()"
        );
        assert!(
            !of_kind(&objs, "Secret").iter().any(|_| true),
            "{what}: no Secret shipped"
        );

        let d = of_kind(&objs, "Deployment")[0];
        let sa = str_of(
            &d["spec"]["template"]["spec"]["serviceAccountName"],
            "serviceAccountName",
        );
        assert!(
            of_kind(&objs, "ServiceAccount")
                .iter()
                .any(|s| name(s) == sa && ns(s) == ns(d)),
            "{what}: the ServiceAccount exists"
        );
        let binds_agent = |b: &Value| {
            b["roleRef"]["kind"] == "ClusterRole"
                && b["roleRef"]["name"] == name(role)
                && seq(&b["subjects"]).iter().any(|s| {
                    s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == ns(d)
                })
        };
        let args: Vec<String> = seq(&agent_container(d)["args"])
            .iter()
            .map(|a| str_of(a, "arg").to_string())
            .collect();
        let run = parse_run(&args);
        let cluster_bindings: Vec<_> = of_kind(&objs, "ClusterRoleBinding")
            .into_iter()
            .filter(|b| binds_agent(b))
            .collect();
        let d_ns = ns(d).to_string();
        let election_bound = of_kind(&objs, "RoleBinding").into_iter().any(|b| {
            b["roleRef"]["kind"] == "Role"
                && b["roleRef"]["name"] == name(roles[0])
                && ns(b) == d_ns
                && ns(roles[0]) == d_ns
                && seq(&b["subjects"]).iter().any(|s| {
                    s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == d_ns
                })
        });
        assert!(
            election_bound,
            "{what}: the election's Role is bound to the agent in its own namespace"
        );
        let namespaced: BTreeSet<String> = of_kind(&objs, "RoleBinding")
            .into_iter()
            .filter(|b| binds_agent(b))
            .map(|b| ns(b).to_string())
            .collect();
        if run.watch.namespaces.is_empty() {
            assert_eq!(cluster_bindings.len(), 1, "{what}: bound cluster-wide");
            assert!(namespaced.is_empty(), "{what}: {namespaced:?}");
        } else {
            assert!(
                cluster_bindings.is_empty(),
                "{what}: a namespace-scoped agent has no cluster-wide grant"
            );
            let watched: BTreeSet<String> = run.watch.namespaces.iter().cloned().collect();
            assert_eq!(
                namespaced, watched,
                "{what}: RoleBindings in exactly the watched namespaces"
            );
        }
    }
}

async fn status(app: axum::Router, method: Method, path: &str) -> StatusCode {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .expect("a request");
    app.oneshot(req).await.expect("infallible").status()
}

/// The URL path of `http://host:port/path`.
fn url_parts(url: &str) -> (String, u16, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority.split_once(':').expect("host:port");
    (
        host.to_string(),
        port.parse().expect("a port"),
        path.to_string(),
    )
}

#[tokio::test]
async fn probes_and_the_flux_provider_use_paths_the_agent_serves() {
    let metrics = Arc::new(Metrics::new());
    let admin = admin::router(metrics.clone(), Arc::new(Readiness::default()));
    assert_eq!(
        status(admin.clone(), Method::GET, "/healthz").await,
        StatusCode::OK
    );
    let ready = status(admin.clone(), Method::GET, "/readyz").await;
    assert!(
        ready == StatusCode::OK || ready == StatusCode::SERVICE_UNAVAILABLE,
        "/readyz answers ({ready})"
    );
    assert_eq!(
        status(admin, Method::GET, "/ready").await,
        StatusCode::NOT_FOUND,
        "a path the agent does not serve is told apart"
    );

    let provider = yaml(&deploy().join("flux/provider.yaml"));
    assert_eq!(provider["spec"]["type"].as_str(), Some("generic-hmac"));
    let (host, port, path) = url_parts(str_of(&provider["spec"]["address"], "address"));
    let intake = intake::http::router(Intake::replayed(Vec::new(), metrics));
    let st = status(intake.clone(), Method::POST, &path).await;
    assert!(
        st != StatusCode::NOT_FOUND && st != StatusCode::METHOD_NOT_ALLOWED,
        "the Provider posts to {path}, which the intake must serve ({st})"
    );
    assert_eq!(
        status(intake, Method::POST, "/v1/flux/event").await,
        StatusCode::NOT_FOUND
    );

    // The address names the base's Service, on its http port.
    let base = deploy().join("kustomize/base");
    let svc = yaml(&base.join("service.yaml"));
    let namespace = str_of(
        &yaml(&base.join("kustomization.yaml"))["namespace"],
        "namespace",
    )
    .to_string();
    assert_eq!(
        host,
        format!("{}.{namespace}.svc.cluster.local", name(&svc))
    );
    assert!(
        seq(&svc["spec"]["ports"])
            .iter()
            .any(|p| p["name"] == "http" && p["port"].as_u64() == Some(u64::from(port))),
        "port {port} is the Service's http port"
    );
}

#[test]
fn the_flux_install_and_alert_fit_the_agent() {
    let flux = deploy().join("flux");
    let provider = yaml(&flux.join("provider.yaml"));
    let alert = yaml(&flux.join("alert.yaml"));
    let source = yaml(&flux.join("source.yaml"));
    let install = yaml(&flux.join("fluxtrace.yaml"));
    // The HMAC Secret: the Provider's secretRef is the one the agent mounts for --hmac-key-file
    // (same name, one in each namespace), with the key `token`.
    let base = deploy().join("kustomize/base");
    let d = yaml(&base.join("deployment.yaml"));
    let pod = &d["spec"]["template"]["spec"];
    let hmac_volume = seq(&pod["volumes"])
        .into_iter()
        .find(|v| v["secret"]["secretName"] == provider["spec"]["secretRef"]["name"])
        .expect("the agent mounts the Provider's Secret");
    assert!(seq(&hmac_volume["secret"]["items"])
        .iter()
        .any(|i| i["key"] == "token"));
    // The Alert forwards the delivery objects' events, and only kinds the agent follows.
    assert_eq!(
        alert["spec"]["providerRef"]["name"],
        provider["metadata"]["name"]
    );
    assert_eq!(
        alert["spec"]["eventSeverity"].as_str(),
        Some("info"),
        "every event"
    );
    let kinds: BTreeSet<String> = seq(&alert["spec"]["eventSources"])
        .iter()
        .map(|s| str_of(&s["kind"], "kind").to_string())
        .collect();
    for want in [
        "Kustomization",
        "HelmRelease",
        "GitRepository",
        "OCIRepository",
    ] {
        assert!(kinds.contains(want), "the Alert forwards {want} events");
    }
    for k in &kinds {
        assert!(
            Kind::parse(k).is_some(),
            "{k}: a kind the agent does not follow"
        );
    }
    assert!(alert["spec"]["eventMetadata"].is_mapping(), "eventMetadata");
    // The install: its source, a path that exists in the pushed deploy/ directory, and the two
    // values every cluster sets.
    assert_eq!(install["spec"]["sourceRef"]["kind"], source["kind"]);
    assert_eq!(
        install["spec"]["sourceRef"]["name"],
        source["metadata"]["name"]
    );
    let path = str_of(&install["spec"]["path"], "path");
    assert!(
        deploy().join(path).join("kustomization.yaml").exists(),
        "{path} exists in deploy/ (the artifact's root)"
    );
    let patches = seq(&install["spec"]["patches"]);
    let patch = str_of(&patches[0]["patch"], "patch");
    for var in ["FLUXTRACE_CLUSTER_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT"] {
        assert!(patch.contains(var), "the install sets {var}");
    }
    assert_eq!(install["spec"]["prune"].as_bool(), Some(true));
}

#[test]
fn the_dockerfile_builds_the_binary_only_on_a_static_non_root_image() {
    let text = read(&deploy().join("Dockerfile"));
    let stages: Vec<&str> = text.split("\nFROM ").skip(1).collect();
    assert!(stages.len() >= 2, "multi-stage");
    let build = stages[0];
    assert!(
        build.contains("cargo build --release --locked"),
        "a locked release build"
    );
    let instructions: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !instructions.to_lowercase().contains("protoc"),
        "no protoc: build.rs uses protox"
    );
    let last = stages.last().expect("a final stage");
    let base = last.lines().next().expect("FROM line");
    assert!(
        base.starts_with("gcr.io/distroless/static") || base.starts_with("scratch"),
        "a static, shell-less final stage: {base}"
    );
    assert!(
        !last.lines().any(|l| l.trim_start().starts_with("RUN ")),
        "nothing runs in the final stage (it has no shell)"
    );
    let copies: Vec<&str> = last.lines().filter(|l| l.starts_with("COPY ")).collect();
    assert_eq!(copies.len(), 1, "the binary only: {copies:?}");
    assert!(copies[0].ends_with("/fluxtrace"));
    let user = last
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert!(
        user.split(':')
            .all(|p| p.parse::<u32>().is_ok_and(|n| n > 0)),
        "a numeric non-root user: {user}"
    );
    assert!(
        last.contains("ENTRYPOINT [\"/fluxtrace\"]"),
        "exec-form entrypoint"
    );
    let ignore = read(&deploy().join("Dockerfile.dockerignore"));
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        "target/ stays out of the context"
    );
}

// ---------------------------------------------------------------------------------------------
// Examples: the CI steps.

/// Splits a shell command line into words: quotes, backslash-newline, and stops at `|`, `||`,
/// `&&`, `;`, `>` and comments.
fn shell_commands(script: &str) -> Vec<Vec<String>> {
    fluxtrace_testkit::shell::commands(script)
        .into_iter()
        .map(|c| c.words)
        .collect()
}

/// A CI file's scripts, and the environment its jobs see (names → values as written).
struct Ci {
    file: String,
    scripts: Vec<String>,
    env: BTreeMap<String, String>,
}

fn ci_files() -> Vec<Ci> {
    let all = files(&deploy().join("examples"));
    let mut out = Vec::new();
    for p in all
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("ci")))
    {
        let text = read(p);
        let v = yaml(p);
        let mut ci = Ci {
            file: rel(p),
            scripts: Vec::new(),
            env: BTreeMap::new(),
        };
        let add_env = |env: &mut BTreeMap<String, String>, m: &Value| {
            for (k, val) in m.as_mapping().into_iter().flatten() {
                let val = match val {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other)
                        .expect("a value")
                        .trim()
                        .to_string(),
                };
                env.insert(str_of(k, "env name").to_string(), val);
            }
        };
        if v["jobs"].is_mapping() {
            // GitHub Actions.
            add_env(&mut ci.env, &v["env"]);
            for (_, job) in v["jobs"].as_mapping().expect("jobs") {
                add_env(&mut ci.env, &job["env"]);
                for step in seq(&job["steps"]) {
                    add_env(&mut ci.env, &step["env"]);
                    if let Some(run) = step["run"].as_str() {
                        ci.scripts.push(run.to_string());
                    }
                }
            }
        } else {
            // GitLab CI: `variables`, and CI/CD variables the file's header names.
            add_env(&mut ci.env, &v["variables"]);
            for var in ["FLUXTRACE_AGENT", "FLUXTRACE_TOKEN"] {
                if text
                    .lines()
                    .take_while(|l| l.starts_with('#'))
                    .any(|l| l.contains(var))
                {
                    ci.env.insert(var.into(), format!("${var}"));
                }
            }
            for (_, job) in v.as_mapping().expect("jobs") {
                add_env(&mut ci.env, &job["variables"]);
                for line in seq(&job["script"]) {
                    ci.scripts.push(str_of(&line, "a script line").to_string());
                }
            }
        }
        out.push(ci);
    }
    out
}

/// `fluxtrace promote` as the real CLI parses it, with the flags the job's environment sets
/// (clap reads them from `FLUXTRACE_*`; here they are passed explicitly, so that the test's
/// own environment does not matter).
fn parse_promote(ci: &Ci, words: &[String]) -> PromoteArgs {
    let cmd = Cli::command();
    let promote = cmd
        .get_subcommands()
        .find(|s| s.get_name() == "promote")
        .expect("promote");
    let mut args: Vec<String> = vec!["fluxtrace".into(), "promote".into()];
    args.extend(words.iter().cloned());
    for a in promote.get_arguments() {
        let (Some(env), Some(long)) = (a.get_env(), a.get_long()) else {
            continue;
        };
        let given = words
            .iter()
            .any(|w| w == &format!("--{long}") || w.starts_with(&format!("--{long}=")));
        if let Some(v) = ci.env.get(env.to_str().expect("utf-8")) {
            if !given {
                args.push(format!("--{long}={v}"));
            }
        }
    }
    match Cli::try_parse_from(&args) {
        Ok(Cli {
            command: Sub::Promote(p),
            ..
        }) => *p,
        Ok(other) => panic!("{}: not promote: {other:?}", ci.file),
        Err(e) => panic!(
            "{}: `{}` is not a valid fluxtrace promote: {e}",
            ci.file,
            args.join(" ")
        ),
    }
}

fn flag<'a>(words: &'a [String], name: &str) -> Option<&'a str> {
    words.iter().enumerate().find_map(|(i, w)| {
        w.strip_prefix(&format!("{name}=")).or_else(|| {
            (w == name)
                .then(|| words.get(i + 1).map(String::as_str))
                .flatten()
        })
    })
}

#[test]
fn the_examples_ci_steps_are_promotions_the_cli_accepts_with_the_annotation_the_agent_reads() {
    let cis = ci_files();
    assert_eq!(cis.len(), 4, "GitHub Actions and GitLab CI for both apps");
    for ci in &cis {
        let commands: Vec<Vec<String>> =
            ci.scripts.iter().flat_map(|s| shell_commands(s)).collect();
        let promotes: Vec<&Vec<String>> = commands
            .iter()
            .filter(|c| c.len() > 1 && c[0].ends_with("fluxtrace") && c[1] == "promote")
            .collect();
        assert_eq!(promotes.len(), 1, "{}: one fluxtrace promote", ci.file);
        let p = parse_promote(ci, &promotes[0][2..]);
        assert!(!p.agent.agent.is_empty(), "{}: the agent's URL", ci.file);
        assert!(p.agent.token.is_some(), "{}: a bearer token", ci.file);
        assert_eq!(p.environment, "prod");
        let id =
            p.id.clone()
                .unwrap_or_else(|| panic!("{}: an explicit id", ci.file));
        assert!(
            id.contains("PROMOTION_ID"),
            "{}: the shared id variable",
            ci.file
        );
        assert!(
            ci.env.contains_key("PROMOTION_ID"),
            "{}: PROMOTION_ID is set for the job",
            ci.file
        );

        let annotation = format!("{PROMOTION_ANNOTATION}=");
        if ci.file.contains("oci-app") {
            assert!(
                p.digest.is_some() && p.artifact.is_some(),
                "{}: OCI report",
                ci.file
            );
            let push = commands
                .iter()
                .find(|c| c.len() > 2 && c[0] == "flux" && c[1] == "push" && c[2] == "artifact")
                .unwrap_or_else(|| panic!("{}: flux push artifact", ci.file));
            let ann = flag(push, "--annotations").expect("--annotations");
            assert_eq!(
                ann.strip_prefix(&annotation),
                Some(id.as_str()),
                "{}: the artifact carries the reported id under {PROMOTION_ANNOTATION}",
                ci.file
            );
            let path = flag(push, "--path").expect("--path");
            assert!(
                Path::new(ROOT)
                    .join(path)
                    .join("kustomization.yaml")
                    .exists(),
                "{}: pushes {path}, which exists",
                ci.file
            );
            let tag = commands
                .iter()
                .find(|c| c.len() > 2 && c[0] == "flux" && c[1] == "tag")
                .and_then(|c| flag(c, "--tag").map(str::to_string))
                .unwrap_or_else(|| panic!("{}: flux tag artifact --tag", ci.file));
            let source = yaml(&deploy().join("examples/oci-app/flux/source.yaml"));
            assert_eq!(source["spec"]["ref"]["tag"].as_str(), Some(tag.as_str()));
            assert!(
                p.artifact
                    .as_deref()
                    .is_some_and(|a| a.ends_with(&format!(":{tag}"))),
                "{}: reports the tag the cluster follows",
                ci.file
            );
            if let Some(artifact) = ci.env.get("ARTIFACT").filter(|a| !a.contains('$')) {
                assert_eq!(
                    source["spec"]["url"].as_str(),
                    Some(format!("oci://{artifact}").as_str()),
                    "{}: pushes where the cluster pulls",
                    ci.file
                );
            }
        } else {
            assert!(
                p.revision.is_some(),
                "{}: a Git report names the commit",
                ci.file
            );
            let yq: Vec<&Vec<String>> = commands.iter().filter(|c| c[0] == "yq").collect();
            let sets_annotation = yq.iter().any(|c| {
                c.iter().any(|w| {
                    w.contains(&format!(
                        ".spec.template.metadata.annotations.\"{PROMOTION_ANNOTATION}\" = strenv(PROMOTION_ID)"
                    ))
                })
            });
            assert!(
                sets_annotation,
                "{}: sets the pod template annotation",
                ci.file
            );
            let manifests = ci.env.get("MANIFESTS").expect("MANIFESTS");
            let d = yaml(&Path::new(ROOT).join(manifests).join("deployment.yaml"));
            assert!(
                d["spec"]["template"]["metadata"]["annotations"][PROMOTION_ANNOTATION].is_string(),
                "{manifests}/deployment.yaml carries {PROMOTION_ANNOTATION} on its pod template"
            );
            let sync = yaml(&deploy().join("examples/git-app/flux/sync.yaml"));
            assert_eq!(
                sync["spec"]["path"]
                    .as_str()
                    .map(|p| p.trim_start_matches("./")),
                Some(manifests.as_str()),
                "the cluster applies what CI commits"
            );
        }
    }
}

#[test]
fn the_shell_reader_splits_as_a_shell_does() {
    let cmds = shell_commands(
        "fluxtrace promote \\\n  --id \"$A-1\" --app 'x y' # note\nflux tag a --tag prod || echo no > f",
    );
    assert_eq!(
        cmds,
        vec![
            vec!["fluxtrace", "promote", "--id", "$A-1", "--app", "x y"],
            vec!["flux", "tag", "a", "--tag", "prod"],
            vec!["echo", "no"],
            vec!["f"],
        ]
    );
}

#[test]
fn the_readme_documents_installing_with_kustomize_flux_and_helm() {
    let readme = read(&Path::new(ROOT).join("README.md"));
    for want in [
        "kubectl apply -k deploy/kustomize/",
        "deploy/kustomize/overlays/namespace-scoped",
        "deploy/kustomize/overlays/no-intake",
        "deploy/kustomize/components/servicemonitor",
        "deploy/flux",
        "flux push artifact",
        "deploy/Dockerfile",
        "deploy/examples",
        "collector-config/",
        "fluxtrace-tokens",
        "fluxtrace-hmac",
        "deploy/helm/fluxtrace",
    ] {
        assert!(readme.contains(want), "README.md mentions {want}");
    }
    for heading in [
        "Install with Kustomize",
        "Install with Flux",
        "Install with Helm",
    ] {
        assert!(
            readme
                .lines()
                .any(|l| l.starts_with('#') && l.contains(heading)),
            "README.md has a section {heading:?}"
        );
    }
}
