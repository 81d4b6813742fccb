//! External tools some tests run (promtool, prometheus, kubectl): found through an environment
//! variable naming the binary, else on PATH.
//!
//! A test whose tool is missing is skipped, and says so where it shows: the notice is written
//! straight to the test process's stderr, which `cargo test` does not capture, so it appears in
//! the run's output beside the test results. With `FLUXTRACE_REQUIRE_TOOLS=1` (set by `.ci/run`)
//! a missing tool fails the test instead: CI cannot pass without running them.

use std::ffi::OsString;
use std::io::Write as _;
use std::process::Command;

/// The tool `name` (or `$env_var`), checked by running it with `version_args`; `None`, with the
/// skip announced, when it is missing and tools are not required.
pub fn tool(test: &str, name: &str, env_var: &str, version_args: &[&str]) -> Option<OsString> {
    let bin = std::env::var_os(env_var).unwrap_or_else(|| name.into());
    match Command::new(&bin).args(version_args).output() {
        Ok(o) if o.status.success() => Some(bin),
        Ok(o) => panic!(
            "{name} {version_args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            let why = format!(
                "{name} is not installed ({e}); .ci/run installs it, or set {env_var} to its path"
            );
            if std::env::var("FLUXTRACE_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("{test}: {why} (FLUXTRACE_REQUIRE_TOOLS=1: required)");
            }
            let _ = writeln!(std::io::stderr(), "\nSKIPPED {test}: {why}");
            None
        }
    }
}
