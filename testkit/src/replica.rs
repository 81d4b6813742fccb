//! The agent's binary as one replica of several: `fluxtrace run` against the test API server
//! (through a kubeconfig), exporting to a test receiver with a header naming the replica
//! (`x-replica`, through `OTEL_EXPORTER_OTLP_HEADERS`), its log in a file, and its HTTP API
//! asked over real TCP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

/// Lease timings short enough for a test: a killed leader's Lease runs out after 2 s.
pub const FAST_LEASE: [&str; 6] = [
    "--lease-duration",
    "2s",
    "--lease-renew-deadline",
    "1500ms",
    "--lease-retry-period",
    "200ms",
];

/// A running replica.
pub struct Replica {
    pub name: String,
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Replica {
    /// Starts `binary run` as replica `name` with `args` after the common ones (no auth, a
    /// free port, the OTLP endpoint, the kubeconfig).
    pub fn start(
        binary: &str,
        name: &str,
        kubeconfig: &Path,
        otlp_endpoint: &str,
        args: &[&str],
    ) -> Replica {
        let addr = crate::files::free_loopback_addr();
        let log = std::env::temp_dir().join(format!(
            "fluxtrace-replica-{}-{name}-{}.log",
            std::process::id(),
            addr.port()
        ));
        let file = std::fs::File::create(&log).expect("replica log file");
        let child = Command::new(binary)
            .args(["run", "--no-k8s-events", "--insecure-no-auth", "--listen"])
            .arg(addr.to_string())
            .args(["--otlp-endpoint", otlp_endpoint])
            .args(args)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("HOSTNAME", name)
            .env("OTEL_EXPORTER_OTLP_HEADERS", format!("x-replica={name}"))
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("fluxtrace run");
        Replica {
            name: name.to_string(),
            child,
            addr,
            log,
        }
    }

    /// One HTTP/1.1 request; the whole answer, or `None` when the replica does not answer.
    pub async fn request(&self, method: &str, path: &str, body: Option<&str>) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.ok()?;
        let req = match body {
            Some(b) => format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{b}",
                b.len()
            ),
            None => format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        };
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// The `/readyz` answer's body when it is 200, else `None`.
    pub async fn ready(&self) -> Option<String> {
        let r = self.request("GET", "/readyz", None).await?;
        r.starts_with("HTTP/1.1 200")
            .then(|| r.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
    }

    /// Waits until `/readyz` answers 200 with a body containing `role` (`leader`, `standby`);
    /// fails naming the replica and its log after `wait`.
    pub async fn wait_for_role(&self, role: &str, wait: Duration) -> Instant {
        let started = Instant::now();
        loop {
            if self
                .ready()
                .await
                .is_some_and(|b| b.contains(&format!("(role: {role}")))
            {
                return Instant::now();
            }
            assert!(
                started.elapsed() < wait,
                "replica {} not {role} within {wait:?}; log:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs a promotion report; the answer.
    pub async fn promote(&self, report: &serde_json::Value) -> String {
        self.request("POST", "/v1/promotions", Some(&report.to_string()))
            .await
            .unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and waits for the process to end.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM (a rolling update, a node drain), and waits for the process to end.
    pub async fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.id()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .ok()?
            .ok()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Which replica sent an export call (its `x-replica` header).
pub fn sender(call: &crate::otlp_receiver::Call) -> Option<String> {
    call.metadata
        .get("x-replica")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A test API server serving a bundled recording moved so that its last line is now (the
/// binary runs on the system clock, and the objects' own times must be past), its initial state
/// applied; an OTLP receiver; a kubeconfig.
pub struct Cluster {
    pub server: crate::kube_api::ServerHandle,
    pub receiver: crate::otlp_receiver::OtlpReceiver,
    pub kubeconfig: PathBuf,
    /// The recording's report, its `time` moved with the rest.
    pub report: serde_json::Value,
}

impl Cluster {
    pub async fn start(tag: &str, recording: &str) -> Cluster {
        let text = crate::recordings::example(recording);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let at =
            |v: &serde_json::Value| -> Option<jiff::Timestamp> { v["at"].as_str()?.parse().ok() };
        let last = lines.iter().filter_map(at).max().expect("timed lines");
        let by = jiff::Timestamp::now().duration_since(last);
        let line = lines
            .iter()
            .find(|v| v["kind"] == "promotion")
            .expect("a recording with a promotion report");
        let mut report = line["promotion"].clone();
        let reported = at(line).expect("a time").checked_add(by).expect("in range");
        report["time"] = serde_json::Value::from(reported.to_string());
        let text = crate::recordings::shift(text, by);
        let server = crate::kube_api::KubeApi::with_recording(&text)
            .start()
            .await;
        server.apply_initial();
        let receiver = crate::otlp_receiver::OtlpReceiver::start().await;
        let kubeconfig = server.kubeconfig(tag);
        Cluster {
            server,
            receiver,
            kubeconfig,
            report,
        }
    }

    /// Starts `binary` as replica `name` of this cluster.
    pub fn replica(&self, binary: &str, name: &str, args: &[&str]) -> Replica {
        Replica::start(
            binary,
            name,
            &self.kubeconfig,
            &self.receiver.endpoint(),
            args,
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}
