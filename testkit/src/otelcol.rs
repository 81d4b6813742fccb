//! The OpenTelemetry Collector the test bed builds (`tests/testbed/otelcol`, one release of core
//! and contrib): its component list, its `validate` subcommand, and a start that waits until the
//! Collector says it is ready, so that tests check the shipped configs against the real program.
//!
//! Found as `$FLUXTRACE_OTELCOL`, else `otelcol` in `$FLUXTRACE_TESTBED_BIN`, else in the cache
//! `tests/testbed/build --print-cache` names. Missing, it is a missing tool ([`crate::tools`]):
//! the test says `SKIPPED`, or fails under `FLUXTRACE_REQUIRE_TOOLS=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools;

/// The test bed's Collector binary.
pub struct Otelcol {
    bin: OsString,
}

/// What one start of the Collector wrote before it was stopped.
pub struct Start {
    /// Whether it reported "Everything is ready" within the time given.
    pub ready: bool,
    /// Its log (stdout and stderr).
    pub log: String,
}

fn default_path() -> PathBuf {
    if let Some(bin) = std::env::var_os("FLUXTRACE_TESTBED_BIN") {
        return Path::new(&bin).join("otelcol");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = Command::new(root.join("tests/testbed/build"))
        .arg("--print-cache")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Path::new(&cache).join("bin/otelcol")
}

impl Otelcol {
    /// The binary, or `None` (the skip announced) when it is not built and tools are not required.
    pub fn find(test: &str) -> Option<Otelcol> {
        let path = default_path();
        let name = path.to_string_lossy().into_owned();
        let bin = tools::tool(test, &name, "FLUXTRACE_OTELCOL", &["--version"])?;
        Some(Otelcol { bin })
    }

    /// Component type names by kind (`receivers`, `processors`, `exporters`, `connectors`,
    /// `extensions`), as `otelcol components` lists them.
    pub fn components(&self) -> BTreeMap<String, BTreeSet<String>> {
        let out = Command::new(&self.bin)
            .arg("components")
            .output()
            .expect("otelcol components runs");
        assert!(out.status.success(), "otelcol components failed");
        let listed: serde_json::Value =
            serde_yaml_ng::from_slice(&out.stdout).expect("otelcol components prints YAML");
        let mut kinds = BTreeMap::new();
        for kind in [
            "receivers",
            "processors",
            "exporters",
            "connectors",
            "extensions",
        ] {
            let names = listed[kind]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect();
            kinds.insert(kind.to_string(), names);
        }
        kinds
    }

    /// `otelcol validate --config FILE`: `Err` with the Collector's output when it refuses the file.
    pub fn validate(&self, config: &Path) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("validate")
            .arg("--config")
            .arg(config)
            .output()
            .expect("otelcol validate runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }

    /// Starts the Collector on `config` (its own telemetry off, as the test bed runs it), waits
    /// up to `within` for "Everything is ready", then stops it and returns its log.
    pub fn start(&self, config: &Path, within: Duration) -> Start {
        let log_path = config.with_extension("log");
        let log = std::fs::File::create(&log_path).expect("the log file");
        let mut child = Command::new(&self.bin)
            .arg("--config")
            .arg(config)
            .args(["--set", "service::telemetry::metrics::level=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("otelcol starts");
        let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + within;
        let mut ready = false;
        while Instant::now() < deadline {
            if read().contains("Everything is ready") {
                ready = true;
                break;
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        Start { ready, log: read() }
    }
}
