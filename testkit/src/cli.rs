//! The fluxtrace binary as a command-line client of a running agent (`promote`, `explain`,
//! `status`): run with exactly the environment a test gives, bounded in time, its output shown
//! when the test fails.

use std::process::{Command, Output};
use std::time::Duration;

/// How long one run may take.
pub const BOUND: Duration = Duration::from_secs(60);

/// Runs `binary` (the test's `env!("CARGO_BIN_EXE_fluxtrace")`) with `args` and exactly `env`
/// (nothing inherited: the tests may themselves run in CI).
pub async fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary);
    cmd.args(args).env_clear().env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(
        BOUND,
        tokio::task::spawn_blocking(move || cmd.output().expect("the binary runs")),
    )
    .await
    .expect("the binary finishes")
    .expect("joined");
    eprintln!(
        "fluxtrace {args:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
