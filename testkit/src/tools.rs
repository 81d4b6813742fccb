//! External tools some tests run (promtool, prometheus, kubectl; helm, built by
//! tests/testbed/build): found through an environment variable naming the binary, else (for the
//! test bed's tools) in the test bed's cache, else on PATH.
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

/// A release tool that `tests/testbed/build` builds (helm, actionlint, crane): `$env_var`, else
/// the one in the test bed's cache when it is built there, else `name` on PATH; `None`, with the
/// skip announced, when none runs.
pub fn testbed_tool(
    test: &str,
    name: &str,
    env_var: &str,
    version_args: &[&str],
) -> Option<OsString> {
    if std::env::var_os(env_var).is_none() {
        let build = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/testbed/build");
        let built = Command::new(build)
            .arg("--print-cache")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                let cache = String::from_utf8_lossy(&o.stdout).trim().to_string();
                std::path::Path::new(&cache).join("bin").join(name)
            })
            .filter(|p| {
                Command::new(p)
                    .args(version_args)
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
        if let Some(p) = built {
            return Some(p.into_os_string());
        }
    }
    tool(test, name, env_var, version_args)
}
