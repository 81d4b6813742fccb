//! deploy/helm/fluxtrace: the Helm chart, rendered by the real `helm` and compared with what the
//! real `kubectl kustomize` renders from deploy/kustomize/:
//!
//! - for the defaults the chart installs the same objects as the Kustomize base (the Namespace
//!   only with `namespace.create=true`: Helm users create it with `--create-namespace`); with
//!   `intake.enabled=false` the same as the no-intake overlay, with `serviceMonitor.enabled=true`
//!   the same as the ServiceMonitor overlay. Only Helm's own labels (release, chart, version,
//!   managed-by) are left out of the comparison;
//! - the values users set (cluster name, OTLP endpoint, trace link, watched namespaces, token
//!   Secrets, image digest) reach the Deployment as flags and variables the real CLI accepts;
//!   another release name renames every object and keeps the bindings consistent;
//! - `helm lint --strict` passes, and values.schema.json refuses values the agent would refuse;
//! - one version: Cargo.toml's is the chart's version and appVersion, the image tag of the
//!   Kustomize base and of the Flux install's manifests artifact; the chart's CRD is the
//!   generated one.
//!
//! `helm` is `$HELM`, else the one tests/testbed/build built, else on PATH; `kubectl` is
//! `$KUBECTL` or on PATH. Without them each test says SKIPPED (and fails under
//! `FLUXTRACE_REQUIRE_TOOLS=1`).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use fluxtrace::config::{Cli, Command as Sub};
use fluxtrace_testkit::tools;
use serde_yaml_ng::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Labels only Helm sets: they name the release and the chart, which the base has no notion of.
const HELM_LABELS: [&str; 4] = [
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
];

fn chart() -> PathBuf {
    Path::new(ROOT).join("deploy/helm/fluxtrace")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn documents(text: &str, what: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{what}: {e}\n{text}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn helm(test: &str) -> Option<OsString> {
    tools::testbed_tool(test, "helm", "HELM", &["version"])
}

fn kubectl(test: &str) -> Option<OsString> {
    tools::tool(test, "kubectl", "KUBECTL", &["version", "--client"])
}

fn output(mut cmd: Command, what: &str) -> std::process::Output {
    cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// `helm template <release> deploy/helm/fluxtrace -n <namespace> --include-crds <args>`: its
/// objects, or the error Helm printed.
fn template(
    helm: &OsStr,
    release: &str,
    namespace: &str,
    args: &[&str],
) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", release])
        .arg(chart())
        .args(["--namespace", namespace, "--include-crds"])
        .args(args);
    let o = output(cmd, "helm template");
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    Ok(documents(
        &String::from_utf8_lossy(&o.stdout),
        "helm template",
    ))
}

fn render_chart(helm: &OsStr, args: &[&str]) -> Vec<Value> {
    template(helm, "fluxtrace", "fluxtrace", args)
        .unwrap_or_else(|e| panic!("helm template {args:?}:\n{e}"))
}

fn kustomize(kubectl: &OsStr, dir: &str) -> Vec<Value> {
    let mut cmd = Command::new(kubectl);
    cmd.arg("kustomize").arg(Path::new(ROOT).join(dir));
    let o = output(cmd, "kubectl kustomize");
    assert!(
        o.status.success(),
        "kubectl kustomize {dir}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    documents(&String::from_utf8_lossy(&o.stdout), dir)
}

type Key = (String, String, String);

fn key(o: &Value) -> Key {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    (
        s(&o["kind"]),
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"]),
    )
}

/// The objects by kind, namespace and name, Helm's own labels removed.
fn by_key(objs: Vec<Value>) -> BTreeMap<Key, Value> {
    let mut out = BTreeMap::new();
    for mut o in objs {
        if let Some(labels) = o["metadata"]["labels"].as_mapping_mut() {
            for l in HELM_LABELS {
                labels.remove(l);
            }
        }
        let k = key(&o);
        assert!(out.insert(k.clone(), o).is_none(), "{k:?} rendered twice");
    }
    out
}

/// Asserts the two renderings hold the same objects, naming the first difference.
fn assert_same(chart: BTreeMap<Key, Value>, base: BTreeMap<Key, Value>, what: &str) {
    let names = |m: &BTreeMap<Key, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&chart), names(&base), "{what}: the same objects");
    for (k, b) in &base {
        let c = &chart[k];
        if c != b {
            panic!(
                "{what}: {k:?} differs\n--- chart:\n{}\n--- kustomize:\n{}",
                serde_yaml_ng::to_string(c).unwrap_or_default(),
                serde_yaml_ng::to_string(b).unwrap_or_default()
            );
        }
    }
}

fn deployment(objs: &[Value]) -> &Value {
    let d: Vec<_> = objs.iter().filter(|o| o["kind"] == "Deployment").collect();
    assert_eq!(d.len(), 1, "one Deployment");
    d[0]
}

fn container(objs: &[Value]) -> &Value {
    &deployment(objs)["spec"]["template"]["spec"]["containers"][0]
}

fn env_of(objs: &[Value]) -> BTreeMap<String, String> {
    container(objs)["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The container's `fluxtrace run` command line, parsed by the real CLI with the container's
/// literal environment variables (the ones from fieldRefs have no value here).
fn parse_run(objs: &[Value]) -> Cli {
    let args: Vec<String> = container(objs)["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string").to_string())
        .collect();
    let env = env_of(objs);
    // clap reads FLUXTRACE_* from the process environment; an unrelated one set here would leak
    // into the parse, so the variables are given as the flags clap maps them to.
    let cmd = <Cli as clap::CommandFactory>::command();
    let run = cmd.find_subcommand("run").expect("run").clone();
    let mut argv = vec!["fluxtrace".to_string()];
    argv.extend(args.iter().cloned());
    for (name, value) in &env {
        if let Some(a) = cmd
            .get_arguments()
            .chain(run.get_arguments())
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
        {
            argv.push(format!("--{}={value}", a.get_long().expect("a long flag")));
        }
    }
    let cli = Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("not a valid fluxtrace command: {argv:?}: {e}"));
    assert!(
        matches!(cli.command, Sub::Run(_)),
        "the container runs `fluxtrace run`: {argv:?}"
    );
    cli
}

/// Where the Flux Provider posts events.
fn provider_address(objs: &[Value]) -> &str {
    let provider = objs
        .iter()
        .find(|o| o["kind"] == "Provider")
        .expect("a Provider");
    provider["spec"]["address"].as_str().unwrap_or("")
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn the_chart_renders_the_kustomize_base_and_overlays() {
    let test = "the_chart_renders_the_kustomize_base_and_overlays";
    let (Some(helm), Some(kubectl)) = (helm(test), kubectl(test)) else {
        return;
    };
    let base = by_key(kustomize(&kubectl, "deploy/kustomize/base"));
    assert_same(
        by_key(render_chart(&helm, &["--set", "namespace.create=true"])),
        base.clone(),
        "namespace.create=true vs deploy/kustomize/base",
    );
    let mut no_namespace = base;
    no_namespace.retain(|k, _| k.0 != "Namespace");
    assert_same(
        by_key(render_chart(&helm, &[])),
        no_namespace.clone(),
        "the defaults vs deploy/kustomize/base without its Namespace",
    );
    for (set, overlay) in [
        (
            "intake.enabled=false",
            "deploy/kustomize/overlays/no-intake",
        ),
        (
            "serviceMonitor.enabled=true",
            "deploy/kustomize/overlays/servicemonitor",
        ),
    ] {
        let mut want = by_key(kustomize(&kubectl, overlay));
        want.retain(|k, _| k.0 != "Namespace");
        assert_same(
            by_key(render_chart(&helm, &["--set", set])),
            want,
            &format!("{set} vs {overlay}"),
        );
    }
}

#[test]
fn the_values_users_set_reach_the_agent_as_flags_it_accepts() {
    let test = "the_values_users_set_reach_the_agent_as_flags_it_accepts";
    let Some(helm) = helm(test) else { return };
    let digest = format!("sha256:{}", "ab".repeat(32));
    let pin = format!("image.digest={digest}");
    let objs = render_chart(
        &helm,
        &[
            "--set",
            "clusterName=prod-eu1",
            "--set",
            "otlp.endpoint=http://collector.obs:4317",
            "--set",
            "traceLink.backend=tempo",
            "--set",
            "traceLink.baseUrl=https://grafana.example",
            "--set",
            "traceLink.datasource=tempo-prod",
            "--set",
            "watchNamespaces={apps,tenants}",
            "--set",
            "intake.tokensSecret=ci-tokens",
            "--set",
            "intake.hmacSecret=flux-key",
            "--set",
            "intake.allowedNamespaces={runners}",
            "--set",
            &pin,
            "--set",
            "extraArgs={--skip-unchanged}",
            "--set",
            "replicas=3",
        ],
    );
    let run = parse_run(&objs);
    let env = env_of(&objs);
    assert_eq!(env["FLUXTRACE_CLUSTER_NAME"], "prod-eu1");
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://collector.obs:4317"
    );
    assert_eq!(env["FLUXTRACE_TRACE_BACKEND"], "tempo");
    assert_eq!(env["FLUXTRACE_TRACE_BASE_URL"], "https://grafana.example");
    assert_eq!(env["FLUXTRACE_NAMESPACES"], "apps,tenants");
    let debug = format!("{run:?}");
    for want in [
        "prod-eu1",
        "grafana.example",
        "tempo-prod",
        "apps",
        "tenants",
        "skip_unchanged: true",
    ] {
        assert!(
            debug.contains(want),
            "the agent's parsed arguments hold {want}: {debug}"
        );
    }
    let d = deployment(&objs);
    assert_eq!(d["spec"]["replicas"].as_u64(), Some(3));
    assert_eq!(
        container(&objs)["image"].as_str(),
        Some(format!("ghcr.io/fluxtrace/fluxtrace@{digest}").as_str()),
        "a digest pins the image"
    );
    let volumes =
        serde_yaml_ng::to_string(&d["spec"]["template"]["spec"]["volumes"]).unwrap_or_default();
    assert!(
        volumes.contains("secretName: ci-tokens") && volumes.contains("secretName: flux-key"),
        "{volumes}"
    );
    let policy = objs
        .iter()
        .find(|o| o["kind"] == "NetworkPolicy")
        .expect("the intake's NetworkPolicy");
    assert!(serde_yaml_ng::to_string(policy)
        .unwrap_or_default()
        .contains("- runners"));
}

#[test]
fn another_release_name_renames_every_object_and_keeps_them_bound() {
    let test = "another_release_name_renames_every_object_and_keeps_them_bound";
    let Some(helm) = helm(test) else { return };
    let objs = template(
        &helm,
        "tracer",
        "observability",
        &[
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "fluxEvents.enabled=true",
        ],
    )
    .expect("renders");
    for o in objs
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
    {
        let (kind, ns, name) = key(o);
        assert!(
            name.starts_with("tracer-fluxtrace"),
            "{kind} {name}: named after the release"
        );
        let cluster_scoped = ["ClusterRole", "ClusterRoleBinding"].contains(&kind.as_str());
        let flux = ["Provider", "Alert"].contains(&kind.as_str());
        let want = if cluster_scoped {
            ""
        } else if flux {
            "flux-system"
        } else {
            "observability"
        };
        assert_eq!(ns, want, "{kind} {name}: namespace");
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/instance"].as_str(),
            Some("tracer")
        );
    }
    let sa = "tracer-fluxtrace";
    for o in objs
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| k.ends_with("Binding")))
    {
        assert_eq!(o["subjects"][0]["name"].as_str(), Some(sa));
        assert_eq!(
            o["subjects"][0]["namespace"].as_str(),
            Some("observability")
        );
        let role = o["roleRef"]["name"].as_str().unwrap_or("");
        assert!(
            objs.iter()
                .any(|r| r["kind"] == o["roleRef"]["kind"] && r["metadata"]["name"] == role),
            "{role} is rendered"
        );
    }
    let spec = &deployment(&objs)["spec"]["template"]["spec"];
    assert_eq!(spec["serviceAccountName"].as_str(), Some(sa));
    assert_eq!(
        provider_address(&objs),
        "http://tracer-fluxtrace.observability.svc.cluster.local:8080/v1/flux/events",
        "the Provider posts to this release's Service, on the path the intake serves"
    );
}

#[test]
fn helm_lint_passes_and_the_schema_refuses_what_the_agent_would() {
    let test = "helm_lint_passes_and_the_schema_refuses_what_the_agent_would";
    let Some(helm) = helm(test) else { return };
    let o = output(
        {
            let mut c = Command::new(&helm);
            c.args(["lint", "--strict"]).arg(chart());
            c
        },
        "helm lint",
    );
    assert!(
        o.status.success(),
        "helm lint --strict:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for bad in [
        "replicas=0",
        "clusterName=",
        "traceLink.backend=zipkin",
        "traceLink.urlTemplate=https://jaeger.example/trace/",
        "otlp.endpoint=collector:4317",
        "image.digest=latest",
        "extraArgs={skip-unchanged}",
        "unknownValue=1",
    ] {
        let err = template(&helm, "fluxtrace", "fluxtrace", &["--set", bad])
            .err()
            .unwrap_or_else(|| panic!("--set {bad} is refused"));
        assert!(
            err.contains("schema") || err.contains("required"),
            "--set {bad}: {err}"
        );
    }
}

#[test]
fn one_version_for_the_binary_the_chart_the_image_and_the_manifests() {
    let chart_yaml = documents(&read(&chart().join("Chart.yaml")), "Chart.yaml").remove(0);
    assert_eq!(
        chart_yaml["version"].as_str(),
        Some(VERSION),
        "the chart's version"
    );
    assert_eq!(
        chart_yaml["appVersion"].as_str(),
        Some(VERSION),
        "the chart's appVersion"
    );
    let base = documents(
        &read(
            Path::new(ROOT)
                .join("deploy/kustomize/base/kustomization.yaml")
                .as_path(),
        ),
        "base",
    )
    .remove(0);
    let image = &base["images"][0];
    assert_eq!(
        image["newName"].as_str(),
        Some("ghcr.io/fluxtrace/fluxtrace")
    );
    assert_eq!(
        image["newTag"].as_str(),
        Some(VERSION),
        "the Kustomize base's image tag"
    );
    let source = read(&Path::new(ROOT).join("deploy/flux/source.yaml"));
    assert!(
        source.contains(&format!("fluxtrace-manifests:{VERSION} "))
            && source.contains(&format!("--revision=\"{VERSION}@sha1:")),
        "deploy/flux/source.yaml pushes the manifests as {VERSION}"
    );
}

#[test]
fn the_charts_crd_is_the_generated_one() {
    let generated = read(&Path::new(ROOT).join("deploy/crds/promotions.yaml"));
    let body = generated
        .split_once("---\n")
        .map(|(_, b)| b)
        .expect("a document");
    let old = "metadata:\n  name: promotions.fluxtrace.io\n";
    assert!(body.contains(old), "the CRD's metadata");
    let want = format!(
        "# The Promotion CRD: deploy/crds/promotions.yaml (generated from src/resource/) with the label\n\
         # the Kustomize base adds. Helm installs it once and never upgrades it: docs/upgrade.md.\n\
         # Regenerate with: UPDATE_CHART_CRD=1 cargo test --test helm\n---\n{}",
        body.replacen(old, &format!("{old}  labels:\n    app.kubernetes.io/part-of: fluxtrace\n"), 1)
    );
    let path = chart().join("crds/promotions.yaml");
    if std::env::var("UPDATE_CHART_CRD").as_deref() == Ok("1") {
        std::fs::write(&path, &want).expect("write the chart's CRD");
    }
    assert!(
        read(&path) == want,
        "{} is stale: UPDATE_CHART_CRD=1 cargo test --test helm",
        path.display()
    );
}

#[test]
fn the_flux_helmrelease_installs_the_chart_with_values_it_accepts() {
    let test = "the_flux_helmrelease_installs_the_chart_with_values_it_accepts";
    let dir = Path::new(ROOT).join("deploy/flux/helm");
    let release = documents(&read(&dir.join("helmrelease.yaml")), "helmrelease.yaml").remove(0);
    let source = documents(&read(&dir.join("source.yaml")), "source.yaml").remove(0);
    let spec = &release["spec"];
    assert_eq!(spec["chartRef"]["kind"], "OCIRepository");
    assert_eq!(spec["chartRef"]["name"], source["metadata"]["name"]);
    assert_eq!(
        source["spec"]["url"].as_str(),
        Some("oci://ghcr.io/fluxtrace/charts/fluxtrace"),
        "where the release workflow pushes the chart"
    );
    assert_eq!(
        source["spec"]["verify"]["provider"], "cosign",
        "the chart's signature is verified"
    );
    for phase in ["install", "upgrade"] {
        assert_eq!(
            spec[phase]["crds"], "CreateReplace",
            "{phase} updates the CRD"
        );
    }
    let Some(helm) = helm(test) else { return };
    let values = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helmrelease-values.yaml");
    std::fs::write(
        &values,
        serde_yaml_ng::to_string(&spec["values"]).expect("YAML"),
    )
    .expect("write");
    let (name, ns) = (
        spec["releaseName"].as_str().expect("releaseName"),
        spec["targetNamespace"].as_str().expect("targetNamespace"),
    );
    let objs = template(&helm, name, ns, &["-f", &values.display().to_string()])
        .unwrap_or_else(|e| panic!("the HelmRelease's values: {e}"));
    assert_eq!(
        provider_address(&objs),
        "http://fluxtrace.fluxtrace.svc.cluster.local:8080/v1/flux/events"
    );
    assert_eq!(env_of(&objs)["FLUXTRACE_CLUSTER_NAME"], "prod-eu1");
}

#[test]
fn the_packaged_chart_renders_what_the_directory_does() {
    let test = "the_packaged_chart_renders_what_the_directory_does";
    let Some(helm) = helm(test) else { return };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-package");
    let _ = std::fs::remove_dir_all(&dir);
    let mut cmd = Command::new(&helm);
    cmd.arg("package").arg(chart()).arg("-d").arg(&dir);
    let o = output(cmd, "helm package");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tgz = dir.join(format!("fluxtrace-{VERSION}.tgz"));
    let mut cmd = Command::new(&helm);
    cmd.args(["template", "fluxtrace"]).arg(&tgz).args([
        "--namespace",
        "fluxtrace",
        "--include-crds",
    ]);
    let o = output(cmd, "helm template <package>");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let packaged = documents(&String::from_utf8_lossy(&o.stdout), "package");
    assert_same(
        by_key(packaged),
        by_key(render_chart(&helm, &[])),
        "the package vs the directory",
    );
}
