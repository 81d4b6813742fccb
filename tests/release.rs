//! The release: what the workflows in .github/workflows do with a tag, read from the files
//! (actionlint, in .ci/run, checks that they are valid workflows; only GitHub runs them):
//!
//! - a pull request, and the tag, run the whole of .ci/run;
//! - the tag must name Cargo.toml's version, which the changelog must have a section for (the
//!   release notes), checked here already so that a version bump without one fails CI;
//! - the binaries are static (musl) for amd64 and arm64 and say the tagged commit;
//! - the image is assembled by deploy/image/build from both and pushed as one index; the
//!   manifests pushed with `flux push artifact --source --revision`; the chart pushed as an OCI
//!   artifact; all signed keyless with cosign; SBOM and provenance attested;
//! - helm and crane come from tests/testbed/build (the module proxy), not from a download.

use std::path::Path;

use serde_yaml_ng::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn workflow(name: &str) -> (String, Value) {
    let text = read(&format!(".github/workflows/{name}"));
    let v = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    (text, v)
}

/// Every `run:` script of a job, joined.
fn scripts(job: &Value) -> String {
    job["steps"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn uses(job: &Value) -> Vec<String> {
    job["steps"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s["uses"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn pull_requests_and_releases_run_the_whole_ci() {
    let (_, ci) = workflow("ci.yml");
    assert!(
        ci["on"]
            .as_mapping()
            .is_some_and(|m| m.contains_key("pull_request")),
        "ci.yml runs on pull requests"
    );
    assert!(scripts(&ci["jobs"]["ci"]).contains("bash .ci/run"));
    let (_, release) = workflow("release.yml");
    let tags = &release["on"]["push"]["tags"][0];
    assert_eq!(tags.as_str(), Some("v*.*.*"), "a release is a tag");
    assert_eq!(
        release["jobs"]["ci"]["uses"].as_str(),
        Some("./.github/workflows/ci.yml"),
        "the tag runs the same CI"
    );
    let publish = &release["jobs"]["publish"];
    let needs: Vec<&str> = publish["needs"]
        .as_sequence()
        .expect("needs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        needs.contains(&"ci") && needs.contains(&"binaries"),
        "{needs:?}"
    );
}

#[test]
fn the_tag_names_the_version_and_the_changelog_has_its_notes() {
    let (_, release) = workflow("release.yml");
    let check = scripts(&release["jobs"]["version"]);
    for want in ["Cargo.toml", "Chart.yaml", "CHANGELOG.md", "\"v$version\""] {
        assert!(check.contains(want), "the version check reads {want}");
    }
    let changelog = read("CHANGELOG.md");
    assert!(
        changelog.lines().any(|l| l == format!("## [{VERSION}]")),
        "CHANGELOG.md has a section ## [{VERSION}]: the release notes of this version"
    );
}

#[test]
fn the_release_ships_static_binaries_an_image_index_manifests_and_a_chart_all_signed() {
    let (text, release) = workflow("release.yml");
    let binaries = &release["jobs"]["binaries"];
    let targets: Vec<&str> = binaries["strategy"]["matrix"]["include"]
        .as_sequence()
        .expect("a matrix")
        .iter()
        .filter_map(|m| m["target"].as_str())
        .collect();
    assert_eq!(
        targets,
        ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"]
    );
    let build = scripts(binaries);
    assert!(build.contains("cargo build --release --locked --target"));
    assert!(
        build.contains("--version"),
        "each binary is run before it ships"
    );
    assert!(
        text.contains("FLUXTRACE_COMMIT: ${{ github.sha }}"),
        "it names the tag's commit"
    );

    let publish = &release["jobs"]["publish"];
    let run = scripts(publish);
    for want in [
        "tests/testbed/build helm crane",
        "deploy/image/build",
        "fluxtrace-linux-amd64=amd64 fluxtrace-linux-arm64=arm64",
        "crane push --index",
        "flux push artifact",
        "--path=./deploy",
        "--source=",
        "--revision=\"$VERSION@sha1:$GITHUB_SHA\"",
        "helm package deploy/helm/fluxtrace --version \"$VERSION\" --app-version \"$VERSION\"",
        "helm push",
        "cosign sign --yes \"$IMAGE@$IMAGE_DIGEST\"",
        "cosign sign --yes \"$MANIFESTS@$MANIFESTS_DIGEST\"",
        "cosign sign --yes \"$CHARTS/fluxtrace@$CHART_DIGEST\"",
        "cosign attest --yes --type spdxjson",
        "cosign sign-blob",
        "CHANGELOG.md",
        "gh release create",
    ] {
        assert!(run.contains(want), "the publish job runs {want}");
    }
    let actions = uses(publish);
    for want in [
        "sigstore/cosign-installer",
        "actions/attest-build-provenance",
        "anchore/sbom-action",
    ] {
        assert!(
            actions.iter().any(|a| a.starts_with(want)),
            "{want} in {actions:?}"
        );
    }
    // Keyless signing needs the workflow's OIDC token; pushing needs packages: write.
    let perms = &publish["permissions"];
    assert_eq!(perms["id-token"], "write");
    assert_eq!(perms["packages"], "write");
    // helm and crane are built, not downloaded.
    assert!(
        !actions
            .iter()
            .any(|a| a.contains("setup-helm") || a.contains("crane")),
        "{actions:?}"
    );
}
