//! The image, as deploy/image/build assembles it without a container engine: an OCI image
//! layout whose blobs match their digests, whose config runs the binary as a non-root user with
//! the entrypoint, ports and labels the manifests expect, and whose one layer holds a static
//! binary that runs (`--version`) with nothing but the layer's files.
//!
//! The binary is `$FLUXTRACE_IMAGE_BINARY`, else the newest of target/x86_64-unknown-linux-musl/
//! {release,debug}/fluxtrace (.ci/run builds it). Without one the tests say SKIPPED, and fail
//! under `FLUXTRACE_REQUIRE_TOOLS=1`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;
use sha2::{Digest as _, Sha256};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const MUSL: &str = "x86_64-unknown-linux-musl";

/// The static binary to put in the image, or `None` with the skip announced.
fn binary(test: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLUXTRACE_IMAGE_BINARY") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(ROOT).join("target"));
    let newest = ["release", "debug"]
        .iter()
        .map(|profile| target.join(MUSL).join(profile).join("fluxtrace"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    if let Some((_, p)) = newest {
        return Some(p);
    }
    let why = format!(
        "no static fluxtrace binary: `cargo build --target {MUSL} --bin fluxtrace` \
         (.ci/run does), or set FLUXTRACE_IMAGE_BINARY"
    );
    if std::env::var("FLUXTRACE_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: {why} (FLUXTRACE_REQUIRE_TOOLS=1: required)");
    }
    let _ = writeln!(std::io::stderr(), "\nSKIPPED {test}: {why}");
    None
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("image")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs deploy/image/build; its output, or the error it printed.
fn build(out: &Path, revision: &str, binaries: &[String]) -> Result<String, String> {
    let o = Command::new(Path::new(ROOT).join("deploy/image/build"))
        .arg("--out")
        .arg(out)
        .args(["--version", VERSION, "--revision", revision])
        .args(["--created", "2026-01-02T03:04:05Z"])
        // The fastest compression: the checks are the same, and the debug binary is large.
        .args(["--gzip-level", "1"])
        .args(binaries)
        .output()
        .expect("deploy/image/build runs (python3)");
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// The commit `fluxtrace --version` names.
fn version_of(binary: &Path) -> String {
    let o = Command::new(binary)
        .arg("--version")
        .output()
        .expect("runs");
    assert!(o.status.success(), "{} --version", binary.display());
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn commit_in(version: &str) -> &str {
    let start = version.find("(commit ").expect("(commit ") + "(commit ".len();
    let end = version[start..].find(';').expect(";") + start;
    &version[start..end]
}

/// Reads a blob by descriptor, checking its size and digest.
fn blob(layout: &Path, descriptor: &Json) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().expect("a digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    let data = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("the blob exists");
    assert_eq!(
        Some(data.len() as u64),
        descriptor["size"].as_u64(),
        "{digest}: size"
    );
    assert_eq!(hex, hex::encode(Sha256::digest(&data)), "{digest}: content");
    data
}

fn json(data: &[u8]) -> Json {
    serde_json::from_slice(data).expect("JSON")
}

#[test]
fn the_image_is_a_non_root_static_binary_that_runs() {
    let test = "the_image_is_a_non_root_static_binary_that_runs";
    let Some(binary) = binary(test) else { return };
    let version = version_of(&binary);
    let commit = commit_in(&version).to_string();
    let dir = scratch("single");
    let layout = dir.join("oci");
    build(&layout, &commit, &[binary.display().to_string()]).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(
        json(&std::fs::read(layout.join("oci-layout")).expect("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = json(&std::fs::read(layout.join("index.json")).expect("index.json"));
    let top = &index["manifests"][0];
    assert_eq!(
        top["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(top["platform"]["architecture"], "amd64");
    let manifest = json(&blob(&layout, top));
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = json(&blob(&layout, &manifest["config"]));
    let c = &config["config"];

    // Non-root, numerically (runAsNonRoot needs a number), the same uid as the Deployment's.
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/fluxtrace"]));
    assert_eq!(c["Cmd"], serde_json::json!(["run"]));
    let ports: BTreeSet<&str> = c["ExposedPorts"]
        .as_object()
        .expect("ports")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(ports, BTreeSet::from(["8080/tcp", "8081/tcp", "9090/tcp"]));
    let label = |k: &str| c["Labels"][k].as_str().unwrap_or("").to_string();
    assert_eq!(label("org.opencontainers.image.version"), VERSION);
    assert_eq!(label("org.opencontainers.image.revision"), commit);
    assert_eq!(label("org.opencontainers.image.licenses"), "Apache-2.0");
    assert!(label("org.opencontainers.image.source").starts_with("https://"));

    // One layer, whose uncompressed digest is the config's diff_id.
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer");
    let gz = blob(&layout, &layers[0]);
    let tar_path = dir.join("layer.tar.gz");
    std::fs::write(&tar_path, &gz).expect("write the layer");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs");
    let listing = Command::new("tar")
        .arg("-tvzf")
        .arg(&tar_path)
        .output()
        .expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&rootfs)
        .arg("--no-same-owner")
        .status()
        .expect("tar");
    assert!(untar.success(), "the layer is a gzipped tar");
    let gunzip = gunzip(&gz);
    assert_eq!(
        config["rootfs"]["diff_ids"][0].as_str(),
        Some(format!("sha256:{}", hex::encode(Sha256::digest(&gunzip))).as_str()),
        "the config's diff_id is the layer's uncompressed digest"
    );

    let mut files: Vec<String> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "fluxtrace"
        ],
        "the binary, CA certificates and the user: nothing else (no shell)"
    );
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );
    let certs =
        std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).expect("CAs");
    assert!(
        certs.matches("BEGIN CERTIFICATE").count() > 10,
        "a CA bundle"
    );

    // The binary inside runs. As root (CI), in a chroot of the layer as the image's user: no
    // file from the host (no libc, no loader) can help it.
    let inside = rootfs.join("fluxtrace");
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let out = if is_root {
        Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .args(["/fluxtrace", "--version"])
            .output()
            .expect("chroot")
    } else {
        Command::new(&inside)
            .arg("--version")
            .output()
            .expect("runs")
    };
    assert!(
        out.status.success(),
        "/fluxtrace --version: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim(),
        version,
        "the binary inside is the one built"
    );
    assert!(
        version.starts_with(&format!("fluxtrace {VERSION} (commit ")),
        "{version}"
    );
}

#[test]
fn the_layout_is_reproducible_and_indexes_several_architectures() {
    let test = "the_layout_is_reproducible_and_indexes_several_architectures";
    let Some(binary) = binary(test) else { return };
    let dir = scratch("multi");
    let index_digest = |out: &Path| {
        let text = build(
            out,
            "0123456789ab",
            &[
                format!("{}=amd64", binary.display()),
                // The same file stands in for the arm64 build: what is checked is the index.
                format!("{}=arm64", binary.display()),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let index = json(&std::fs::read(out.join("index.json")).expect("index.json"));
        (text, index)
    };
    let (printed, first) = index_digest(&dir.join("a"));
    let (_, second) = index_digest(&dir.join("b"));
    assert_eq!(
        first, second,
        "the same inputs give the same layout, digest for digest"
    );
    let top = &first["manifests"][0];
    assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert!(
        printed.contains(top["digest"].as_str().expect("digest")),
        "{printed}"
    );
    let index = json(&blob(&dir.join("a"), top));
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let config = json(&blob(
                &dir.join("a"),
                &json(&blob(&dir.join("a"), m))["config"],
            ));
            assert_eq!(config["architecture"], m["platform"]["architecture"]);
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or(""),
                m["platform"]["architecture"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
}

#[test]
fn a_dynamically_linked_binary_is_refused() {
    // This test's own executable is linked against the host's libc.
    let me = std::env::current_exe().expect("the test binary");
    let err = build(
        &scratch("dynamic").join("oci"),
        "0123456789ab",
        &[me.display().to_string()],
    )
    .expect_err("refused");
    assert!(err.contains("not a statically linked"), "{err}");
}

/// The gzip stream decompressed by the system's gzip (no Rust gzip crate is a dependency).
fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-dc"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = gz.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("gzip");
    writer.join().expect("writer").expect("gzip's stdin");
    assert!(out.status.success(), "gzip -d");
    out.stdout
}
