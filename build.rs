//! Compiles proto/fluxtrace/v1/promotion.proto and workload.proto with protox, a protobuf
//! compiler written in Rust, so that a fresh machine builds with `cargo` alone (no system
//! `protoc`). The generated code goes to OUT_DIR and is included by `src/intake/grpc.rs`; nothing generated is checked in, so
//! nothing can drift.
//!
//! Also sets `FLUXTRACE_COMMIT`, the commit `fluxtrace --version` names: `$FLUXTRACE_COMMIT` when
//! set (a build from a source archive, or the release workflow), else `git rev-parse HEAD` of the
//! source tree, else `unknown` (no `.git`, no git). It is read when this script runs (every
//! fresh build, such as a release's), not at every commit: watching `.git` would rebuild the
//! whole crate and every test binary after each commit.

use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 2] = [
        "proto/fluxtrace/v1/promotion.proto",
        "proto/fluxtrace/v1/workload.proto",
    ];
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=FLUXTRACE_COMMIT");
    println!("cargo:rustc-env=FLUXTRACE_COMMIT={}", commit());
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

/// The source's commit, 12 hex digits, or `unknown`.
fn commit() -> String {
    let from_env = std::env::var("FLUXTRACE_COMMIT").ok();
    let from_git = || {
        let o = Command::new("git")
            .args(["rev-parse", "--verify", "--quiet", "HEAD"])
            .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let full = from_env.or_else(from_git).unwrap_or_default();
    let hex = full.len() >= 12 && full.chars().all(|c| c.is_ascii_hexdigit());
    if hex {
        full[..12].to_ascii_lowercase()
    } else {
        "unknown".to_string()
    }
}
