//! End to end with helm-controller: HelmReleases whose manifests live in Git, their upgrades
//! and their drift corrections (part of `tests/e2e.rs`).

use super::*;

/// A Helm repository of the test's own on the test bed's static server: chart `web` 0.1.0, a
/// Deployment `web` of `.Values.image` with `.Values.replicas`; its URL.
fn helm_repository(bed: &Testbed, ns: &str) -> String {
    let root = std::path::Path::new(bed.get("TESTBED_HELM_REPO_DIR")).join(ns);
    let chart = std::env::temp_dir().join(format!("fluxtrace-e2e-chart-{}", std::process::id()));
    let templates = chart.join("web/templates");
    std::fs::create_dir_all(&templates).expect("a chart dir");
    std::fs::create_dir_all(&root).expect("a repository dir");
    std::fs::write(
        chart.join("web/Chart.yaml"),
        "apiVersion: v2\nname: web\nversion: 0.1.0\nappVersion: \"1.0.0\"\n",
    )
    .expect("Chart.yaml");
    std::fs::write(
        chart.join("web/values.yaml"),
        "image: ghcr.io/acme/web:1.0.0\nreplicas: 2\n",
    )
    .expect("values.yaml");
    std::fs::write(
        templates.join("deployment.yaml"),
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {{ .Values.replicas }}
  progressDeadlineSeconds: 20
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: {{ .Values.image }}
",
    )
    .expect("the template");
    let archive = root.join("web-0.1.0.tgz");
    let out = std::process::Command::new("tar")
        .arg("czf")
        .arg(&archive)
        .arg("-C")
        .arg(&chart)
        .arg("web")
        .output()
        .expect("tar runs");
    assert!(out.status.success(), "tar: {out:?}");
    let digest = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(&archive).expect("the archive"),
        ))
    };
    let url = format!("{}/{ns}", bed.get("TESTBED_HELM_REPO_URL"));
    std::fs::write(
        root.join("index.yaml"),
        format!(
            "apiVersion: v1
entries:
  web:
  - apiVersion: v2
    name: web
    version: 0.1.0
    appVersion: \"1.0.0\"
    digest: {digest}
    created: \"2026-01-01T00:00:00Z\"
    urls: [{url}/web-0.1.0.tgz]
generated: \"2026-01-01T00:00:00Z\"
"
        ),
    )
    .expect("index.yaml");
    url
}

/// The Git repository of a HelmRelease of chart `web` from the HelmRepository `charts` at `url`,
/// its values naming `image`, `spec` more fields of its spec (indented by two).
fn helm_manifests(url: &str, image: &str, spec: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "release.yaml",
            format!(
                "apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: charts
spec:
  interval: 10m
  url: {url}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: web
spec:
  interval: 10m
  timeout: 60s
  chart:
    spec:
      chart: web
      version: 0.1.0
      sourceRef: {{kind: HelmRepository, name: charts}}
  values:
    image: {image}
{spec}"
            ),
        ),
        (
            "kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- release.yaml\n"
                .to_string(),
        ),
    ]
}

/// The HelmRelease `web` of chart 0.1.0 and image 1.0.0 (`spec`: more fields of its spec),
/// pushed to Git, applied by a Kustomization and installed; the chart repository's URL.
fn installed(bed: &Testbed, ns: &str, spec: &str) -> String {
    let url = helm_repository(bed, ns);
    let files = helm_manifests(&url, "ghcr.io/acme/web:1.0.0", spec);
    bed.push(ns, &borrowed(&files), "first");
    delivered_by_kustomization(bed, ns, "GitRepository", &git_source(bed, ns));
    bed.kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "--timeout=120s",
        "helmrelease/web",
    ]);
    url
}

/// Scenario 5: a HelmRelease (chart from a Helm repository) whose manifest and values live in
/// Git, applied by a Kustomization: a values change pushed and reported by CI is one trace from
/// the commit through the Kustomization's apply to the Helm upgrade and its rollout.
#[test]
fn a_helm_release_whose_values_change_in_git_is_one_trace() {
    let Some(bed) = Testbed::find("a_helm_release_whose_values_change_in_git_is_one_trace") else {
        return;
    };
    let ns = bed.namespace("e2e-helm");
    let url = installed(&bed, &ns, "");
    let agent = bed.agent(BIN, &ns, None, &[]);

    let id = format!("e2e-helm-{}", std::process::id());
    let files = helm_manifests(&url, "ghcr.io/acme/web:1.1.0", "");
    let files = borrowed(&files);
    let commit = bed.push(&ns, &files, "web 1.1.0");
    let (ci_trace, _) = report_and_fetch(&bed, &agent, &ns, &id, &commit);
    let spans = trace(&bed, &agent, &ci_trace, 6);
    let names: Vec<(&str, &str, &str)> = spans
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                tag(s, "flux.object.kind"),
                s.service.as_str(),
            )
        })
        .collect();
    succeeded(&spans, "reported");
    let helm = spans
        .iter()
        .find(|s| s.name == "reconcile" && tag(s, "flux.object.kind") == "HelmRelease")
        .unwrap_or_else(|| panic!("no HelmRelease reconcile in {names:?}"));
    assert_eq!(helm.service, "helm-controller");
    let rollout = span(&spans, "rollout");
    assert_eq!(
        rollout.parent.as_deref(),
        Some(helm.span_id.as_str()),
        "the Helm upgrade's rollout: {names:?}"
    );
}

/// A HelmRelease with drift correction on (`driftDetection.mode: enabled`): a Deployment
/// edited by hand is an untraced change; helm-controller's next run changes it back (its
/// `DriftCorrected` Event lists the Deployment) and that rollout is Flux's own correction,
/// traced under the HelmRelease's reconcile and apply, not a second untraced change.
#[test]
fn a_helm_release_correcting_drift_is_traced_as_drift_correction() {
    let Some(bed) = Testbed::find("a_helm_release_correcting_drift_is_traced_as_drift_correction")
    else {
        return;
    };
    let ns = bed.namespace("e2e-helm-drift");
    installed(&bed, &ns, "  driftDetection:\n    mode: enabled\n");
    let agent = bed.agent(BIN, &ns, None, &[]);
    edited_by_hand_then_corrected(&bed, &agent, &ns, "helmrelease/web", "helm-controller");
}
