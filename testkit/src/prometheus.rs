//! A real Prometheus server (Debian's `prometheus`) for tests: started on a scratch dir with a
//! rule file of `collector-config/prometheus/` and one scrape target, and read through its HTTP
//! API (instant queries, alerts). Found by `tools::tool` like every external program, so a
//! machine without it skips, saying so.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fluxtrace::client::encode_segment;
use serde_json::Value;

use crate::cli::{get, Running};

/// How long Prometheus gets to become ready.
const READY: Duration = Duration::from_secs(90);

/// Starts Prometheus `bin` with its data in `dir`, evaluating `rules` and scraping
/// `http://<target>/metrics` every second; the process and its address once it is ready.
pub fn start(bin: &std::ffi::OsStr, dir: &Path, rules: &Path, target: &str) -> (Running, String) {
    let config = dir.join("prometheus.yml");
    std::fs::create_dir_all(dir).expect("a scratch dir");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: fluxtrace\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        ),
    )
    .expect("prometheus.yml");
    let addr = format!("127.0.0.1:{}", crate::testbed::free_port());
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--enable-feature=exemplar-storage")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("prometheus runs");
    let running = Running(child);
    let deadline = Instant::now() + READY;
    while get(&addr, "/-/ready", None).is_none_or(|(h, _)| !h.contains(" 200 ")) {
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    (running, addr)
}

/// Prometheus' HTTP API at `addr`: the `data` of a successful answer to `path_and_query`.
pub fn api(addr: &str, path_and_query: &str) -> Option<Value> {
    let (head, body) = get(addr, path_and_query, None)?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    (v["status"] == "success").then(|| v["data"].clone())
}

/// An instant query's vector: labels → value (empty when Prometheus has no answer yet).
pub fn query(addr: &str, promql: &str) -> Vec<(serde_json::Map<String, Value>, f64)> {
    let Some(data) = api(
        addr,
        &format!("/api/v1/query?query={}", encode_segment(promql)),
    ) else {
        return Vec::new();
    };
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let value = s["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (s["metric"].as_object().cloned().unwrap_or_default(), value)
        })
        .collect()
}

/// The alerts Prometheus holds now (`/api/v1/alerts`): each with `labels`, `annotations` and
/// `state` (`pending` or `firing`).
pub fn alerts(addr: &str) -> Vec<Value> {
    api(addr, "/api/v1/alerts")
        .and_then(|d| d["alerts"].as_array().cloned())
        .unwrap_or_default()
}
