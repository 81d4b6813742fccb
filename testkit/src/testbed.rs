//! The real stack of `tests/testbed/` (kube-apiserver, etcd, kube-controller-manager, kwok,
//! Flux's controllers, the Collector and Jaeger), as the end-to-end tests use it: found through
//! the env file `tests/testbed/up` writes, or the test says it skipped.
//!
//! A test bed that is not up is a missing tool: the test prints `SKIPPED <test>: …`, and with
//! `FLUXTRACE_REQUIRE_TOOLS=1` (set by `.ci/run`, which builds and starts it) fails instead.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running test bed: the values of its env file.
#[derive(Clone, Debug)]
pub struct Testbed {
    env: BTreeMap<String, String>,
}

/// The env file of the test bed `up` started: `$FLUXTRACE_TESTBED_STATE/env`.
pub fn env_file() -> PathBuf {
    let state = std::env::var_os("FLUXTRACE_TESTBED_STATE")
        .map_or_else(|| PathBuf::from("/tmp/fluxtrace-testbed"), PathBuf::from);
    state.join("env")
}

impl Testbed {
    /// The running test bed; `None`, with the skip announced, when it is not up and tools are
    /// not required.
    pub fn find(test: &str) -> Option<Testbed> {
        let file = env_file();
        let bed = std::fs::read_to_string(&file)
            .ok()
            .map(|t| Testbed { env: parse_env(&t) })
            .filter(Testbed::answers);
        if bed.is_none() {
            let why = format!(
                "the test bed is not up ({} missing or its API server does not answer); \
                 run tests/testbed/build && tests/testbed/up",
                file.display()
            );
            if std::env::var("FLUXTRACE_REQUIRE_TOOLS").as_deref() == Ok("1") {
                panic!("{test}: {why} (FLUXTRACE_REQUIRE_TOOLS=1: required)");
            }
            let _ = writeln!(std::io::stderr(), "\nSKIPPED {test}: {why}");
        }
        bed
    }

    /// A value of the env file (`KUBECONFIG`, `TESTBED_GIT_URL`, …).
    pub fn get(&self, name: &str) -> &str {
        self.env
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("the test bed's env file has no {name}"))
    }

    fn answers(&self) -> bool {
        self.env.contains_key("KUBECONFIG")
            && self
                .kubectl_output(&["get", "--raw", "/readyz"], None)
                .is_ok_and(|o| o.status.success())
    }

    fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> std::io::Result<Output> {
        let mut cmd = Command::new(self.env.get("KUBECTL").map_or("kubectl", String::as_str));
        cmd.args(args)
            .env(
                "KUBECONFIG",
                self.env.get("KUBECONFIG").map_or("", String::as_str),
            )
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        child.wait_with_output()
    }

    /// `kubectl ARGS` as the admin; its standard output. Panics, with what kubectl said, when
    /// it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_in(args, None)
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> String {
        self.kubectl_in(&["apply", "-f", "-"], Some(yaml))
    }

    fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self
            .kubectl_output(args, stdin)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"));
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An object as JSON, `None` when it is not there.
    pub fn object(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let out = self
            .kubectl_output(&["-n", namespace, "get", kind, name, "-o", "json"], None)
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// A kubeconfig (written to a temporary file) that acts as the ServiceAccount `name` of
    /// `namespace`, with a token of its own as its Pod would have it: what the agent may do is
    /// then exactly what that ServiceAccount's RBAC grants.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.kubectl(&["-n", namespace, "create", "token", name, "--duration=1h"]);
        let path = std::env::temp_dir().join(format!(
            "fluxtrace-e2e-sa-{}-{namespace}-{name}",
            std::process::id()
        ));
        let kubeconfig = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {name}
  user:
    token: {token}
contexts:
- name: {name}
  context: {{cluster: testbed, user: {name}}}
current-context: {name}
",
            server = self.get("TESTBED_APISERVER_URL"),
            ca = self.get("TESTBED_APISERVER_CA"),
            token = token.trim()
        );
        std::fs::write(&path, kubeconfig).expect("a kubeconfig");
        path
    }

    /// A namespace of the test's own (deleted first if a run before left it).
    pub fn namespace(&self, name: &str) -> String {
        let _ = self.kubectl_output(
            &["delete", "namespace", name, "--wait=true", "--timeout=60s"],
            None,
        );
        self.kubectl(&["create", "namespace", name]);
        name.to_string()
    }

    /// Commits `files` (path → content) to repository `repo` on the test bed's Git server, on
    /// branch `main` on top of what is there; the commit's SHA.
    pub fn push(&self, repo: &str, files: &[(&str, &str)], message: &str) -> String {
        self.push_replacing(repo, "", files, message)
    }

    /// As [`Testbed::push`], first removing the directory `remove` of the work tree (nothing
    /// when empty).
    pub fn push_replacing(
        &self,
        repo: &str,
        remove: &str,
        files: &[(&str, &str)],
        message: &str,
    ) -> String {
        let dir =
            std::env::temp_dir().join(format!("fluxtrace-e2e-git-{}-{repo}", std::process::id()));
        let url = format!("{}/{repo}.git", self.get("TESTBED_GIT_URL"));
        if !dir.join(".git").exists() {
            std::fs::create_dir_all(&dir).expect("a work tree");
            git(&dir, &["init", "-q", "-b", "main"]);
            git(&dir, &["remote", "add", "origin", &url]);
            // A repository pushed to before: build on it.
            let fetched = Command::new("git")
                .args(["fetch", "-q", "origin", "main"])
                .current_dir(&dir)
                .output()
                .is_ok_and(|o| o.status.success());
            if fetched {
                git(&dir, &["reset", "-q", "--hard", "origin/main"]);
            }
        }
        if !remove.is_empty() {
            git(&dir, &["rm", "-r", "-q", remove]);
        }
        for (path, content) in files {
            let p = dir.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("dirs");
            }
            std::fs::write(&p, content).expect("a file");
        }
        git(&dir, &["add", "-A"]);
        git(
            &dir,
            &[
                "-c",
                "user.name=e2e",
                "-c",
                "user.email=e2e@example.com",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                message,
            ],
        );
        git(&dir, &["push", "-q", "origin", "main"]);
        git(&dir, &["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Pushes `files` (path → content) to the test bed's OCI registry as a Flux artifact
    /// (`flux push artifact`'s media types: one gzipped tarball layer), at `repo:tag`, with
    /// `annotations` on the manifest; the manifest's digest (`sha256:…`).
    pub fn push_oci(
        &self,
        repo: &str,
        tag: &str,
        files: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> String {
        let dir = std::env::temp_dir().join(format!(
            "fluxtrace-e2e-oci-{}-{}",
            std::process::id(),
            free_port()
        ));
        let src = dir.join("src");
        std::fs::create_dir_all(&src).expect("a dir");
        for (path, content) in files {
            std::fs::write(src.join(path), content).expect("a file");
        }
        let layer = dir.join("layer.tgz");
        run(
            "tar",
            &[
                "czf",
                &layer.display().to_string(),
                "-C",
                &src.display().to_string(),
                ".",
            ],
        );
        let layer = std::fs::read(&layer).expect("the layer");
        let config = b"{}".to_vec();
        let base = format!("http://{}/v2/{repo}", self.get("TESTBED_REGISTRY"));
        let layer_digest = push_blob(&dir, &base, &layer);
        let config_digest = push_blob(&dir, &base, &config);
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.cncf.flux.config.v1+json",
            "config": {
                "mediaType": "application/vnd.cncf.flux.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer.len(),
            }],
            "annotations": annotations,
        })
        .to_string();
        let file = dir.join("manifest.json");
        std::fs::write(&file, &manifest).expect("the manifest");
        put(
            &file,
            "application/vnd.oci.image.manifest.v1+json",
            &format!("{base}/manifests/{tag}"),
        );
        sha256(manifest.as_bytes())
    }

    /// A trace as Jaeger's HTTP API gives it (`/api/traces/{id}`), once it holds at least
    /// `spans` spans and has held that many for a second; `None` after `within`.
    pub fn jaeger_trace(&self, trace_id: &str, spans: usize, within: Duration) -> Option<Value> {
        let url = format!(
            "{}/api/traces/{trace_id}",
            self.get("TESTBED_JAEGER_QUERY_URL")
        );
        let deadline = Instant::now() + within;
        let mut last: Option<(usize, Instant, Value)> = None;
        while Instant::now() < deadline {
            if let Some(v) = http_json(&url) {
                let n = v["data"][0]["spans"].as_array().map_or(0, Vec::len);
                match &last {
                    Some((m, since, _)) if *m == n && n >= spans => {
                        if since.elapsed() >= Duration::from_secs(1) {
                            return last.map(|(_, _, v)| v);
                        }
                    }
                    _ => last = Some((n, Instant::now(), v)),
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        last.filter(|(n, _, _)| *n >= spans).map(|(_, _, v)| v)
    }
}

/// Waits for `done` up to `within`, polling every quarter second.
pub fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("waited {within:?} for {what}");
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Uploads `bytes` as a blob (the distribution API's monolithic upload); its digest.
fn push_blob(dir: &Path, base: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let file = dir.join(digest.replace(':', "-"));
    std::fs::write(&file, bytes).expect("a blob");
    let head = run(
        "curl",
        &[
            "-fsS",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-X",
            "POST",
            &format!("{base}/blobs/uploads/"),
        ],
    );
    let location = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("the registry gave no upload location:\n{head}"));
    // Relative or absolute, as the registry likes.
    let location = match location.strip_prefix('/') {
        Some(path) => format!("{}/{path}", base.split("/v2/").next().unwrap_or(base)),
        None => location,
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    put(
        &file,
        "application/octet-stream",
        &format!("{location}{sep}digest={digest}"),
    );
    digest
}

/// PUT the content of `file` to `url` as `content_type`.
fn put(file: &Path, content_type: &str, url: &str) {
    run(
        "curl",
        &[
            "-fsS",
            "-o",
            "/dev/null",
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
            &format!("@{}", file.display()),
            url,
        ],
    );
}

/// `program ARGS`; its standard output. Panics, with what it said, when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("git {args:?}: {e}"));
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET a JSON document over plain HTTP on loopback.
pub fn http_json(url: &str) -> Option<Value> {
    let rest = url.strip_prefix("http://")?;
    let (addr, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let (_, body) = crate::cli::get(addr, &path, Some("application/json"))?;
    serde_json::from_str(&body).ok()
}

/// `export NAME='value'` lines.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// Spans of a Jaeger trace (`/api/traces/{id}`): (operation name, span id, parent span id,
/// tags as name → value, logs' `event` or `k8s.event.reason` fields).
pub struct JaegerSpan {
    pub name: String,
    pub span_id: String,
    pub parent: Option<String>,
    pub service: String,
    pub tags: BTreeMap<String, String>,
    pub events: Vec<String>,
    /// How long the span took, in microseconds.
    pub duration_us: u64,
}

/// The spans of the first trace of a Jaeger answer.
pub fn jaeger_spans(trace: &Value) -> Vec<JaegerSpan> {
    let t = &trace["data"][0];
    let processes = &t["processes"];
    t["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let tags = |v: &Value| -> BTreeMap<String, String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        let value = match &t["value"] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (t["key"].as_str().unwrap_or_default().to_string(), value)
                    })
                    .collect()
            };
            let parent = s["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["refType"] == "CHILD_OF")
                .and_then(|r| r["spanID"].as_str())
                .map(str::to_string);
            let events = s["logs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    let f = tags(&l["fields"]);
                    f.get("k8s.event.reason")
                        .or_else(|| f.get("event"))
                        .cloned()
                        .unwrap_or_default()
                })
                .collect();
            let pid = s["processID"].as_str().unwrap_or_default();
            JaegerSpan {
                name: s["operationName"].as_str().unwrap_or_default().to_string(),
                span_id: s["spanID"].as_str().unwrap_or_default().to_string(),
                parent,
                service: processes[pid]["serviceName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                tags: tags(&s["tags"]),
                events,
                duration_us: s["duration"].as_u64().unwrap_or_default(),
            }
        })
        .collect()
}

/// A free port on loopback (the kernel's choice, released at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `fluxtrace run` against the test bed: exporting to the Collector of the shipped
/// `collector-config/jaeger.yaml`, watching one namespace, its intake on loopback with a
/// bearer token. Stopped with SIGTERM (then killed) when dropped; its log kept in a file.
pub struct Agent {
    child: std::process::Child,
    pub url: String,
    pub token: String,
    pub log: PathBuf,
}

impl Testbed {
    /// Starts the agent `binary` (the test's `env!("CARGO_BIN_EXE_fluxtrace")`) on `namespace`,
    /// as `kubeconfig` (the admin's when `None`), with `extra` arguments.
    pub fn agent(
        &self,
        binary: &str,
        namespace: &str,
        kubeconfig: Option<&Path>,
        extra: &[&str],
    ) -> Agent {
        let dir = std::env::temp_dir().join(format!(
            "fluxtrace-e2e-agent-{}-{namespace}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a dir");
        let token = format!("e2e-token-{namespace}");
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, format!("{token}\n")).expect("tokens");
        let log = dir.join("agent.log");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let kubeconfig =
            kubeconfig.map_or_else(|| PathBuf::from(self.get("KUBECONFIG")), Path::to_path_buf);
        // The caller's choice of where Promotions live and of leader election wins.
        let given = |flag: &str| extra.iter().any(|a| a.starts_with(flag));
        let mut defaults: Vec<&str> = Vec::new();
        if !given("--promotion-namespace") {
            defaults.extend(["--promotion-namespace", namespace]);
        }
        if !given("--lease-") {
            defaults.push("--no-leader-election");
        }
        let child = Command::new(binary)
            .arg("run")
            .args(defaults)
            .args([
                "--cluster-name",
                "e2e",
                "--namespace",
                namespace,
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--grpc-listen",
                &format!("127.0.0.1:{}", free_port()),
                "--token-file",
                &tokens.display().to_string(),
                // Real kustomize-controller writes a reconcile's status when its health checks
                // end, seconds after the rollout it waited for: a rollout waits this long for
                // the reconcile that claims it.
                "--settle",
                "15s",
                "--no-probe",
            ])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &kubeconfig)
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                self.get("TESTBED_OTELCOL_OTLP_GRPC"),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log"))
            .spawn()
            .expect("the agent runs");
        let agent = Agent {
            child,
            url,
            token,
            log,
        };
        let addr = agent.url.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut agent = agent;
        while !crate::cli::get(&addr, "/readyz", None)
            .is_some_and(|(head, _)| head.contains(" 200 "))
        {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("the agent exited ({status}); its log:\n{}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "the agent was not ready within 60 s; its log:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        agent
    }
}

impl Agent {
    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM, as Kubernetes does, and waits (then kills) it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it as SIGKILL does: no drain, no flush.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
