//! The agent's API seen from outside: `fluxtrace promote` (CI tells the agent about a
//! promotion), `fluxtrace explain` (on call asks what became of it) and `fluxtrace status`
//! (what runs now, and which promotion put it there).
//!
//! A thin HTTP/1.1 client (hyper with rustls and the `ring` provider, the TLS stack the kube
//! client already brings, so nothing new to build). `promote` validates the report locally
//! with the agent's own rules before sending, retries with exponential backoff on connection
//! errors, timeouts, 408, 429 and 5xx (a report is idempotent: the agent dedupes by id), and
//! stops at the first other 4xx with the agent's message.

use std::process::ExitCode;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::{AgentArgs, ExplainArgs, Format, PromoteArgs, StatusArgs};
use crate::model::{ArtifactRef, PipelineRef, PromotionReport};
use crate::sources::promotion::{self, ReportError};

pub mod ci;

/// Why `promote` or `explain` failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid --agent URL {url:?}: {reason}")]
    AgentUrl { url: String, reason: String },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("the agent refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("no promotion {0:?} is known to the agent")]
    NotFound(String),
    /// A workload the agent does not follow, or whose promotion it does not know (the agent's
    /// message names it).
    #[error("{0}")]
    Workload(String),
    #[error("the agent did not answer after {attempts} attempt(s): {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("unexpected answer from the agent: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ClientError::AgentUrl { .. } | ClientError::Input(_) => "invalid_input",
            ClientError::Report(e) => e.metric_label(),
            ClientError::Tls(_) => "tls",
            ClientError::Rejected { .. } => "rejected",
            ClientError::NotFound(_) | ClientError::Workload(_) => "not_found",
            ClientError::GaveUp { .. } => "unreachable",
            ClientError::Protocol(_) => "protocol",
        }
    }

    /// 2 when the request itself is wrong (fix it, do not retry); 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::AgentUrl { .. }
            | ClientError::Input(_)
            | ClientError::Report(_)
            | ClientError::Rejected { .. } => 2,
            _ => 1,
        }
    }
}

/// The largest answer read from the agent.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// First retry delay; doubles each attempt, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// A failed attempt that may succeed if tried again.
struct Transient(String);

enum Failure {
    Transient(Transient),
    Final(ClientError),
}

/// A client of one agent's HTTP API.
pub struct AgentClient {
    /// `scheme://authority[/prefix]`, without a trailing slash.
    base: String,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// The agent's answer to a report.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ReportAnswer {
    pub promotion_id: String,
    pub trace_id: String,
    #[serde(default)]
    pub trace_link: Option<String>,
}

impl AgentClient {
    /// `agent`: `http(s)://host[:port][/prefix]`. `token`: sent as `Authorization: Bearer`.
    pub fn new(
        agent: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<AgentClient, ClientError> {
        let bad = |reason: &str| ClientError::AgentUrl {
            url: agent.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = agent.trim().parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("expected http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let base = format!(
            "{}://{}{}",
            if https { "https" } else { "http" },
            authority,
            uri.path().trim_end_matches('/')
        );
        let authorization = match token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    ClientError::Input("the token has characters a header cannot carry".into())
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let provider = rustls::crypto::ring::default_provider();
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if https {
            builder
                .with_provider_and_native_roots(provider)
                .map_err(|e| ClientError::Tls(e.to_string()))?
        } else {
            // Plain HTTP: no roots needed, and none looked for (a minimal CI image may have no
            // CA bundle).
            let cfg = rustls::ClientConfig::builder_with_provider(provider.into())
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Tls(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(cfg)
        };
        let connector = builder.https_or_http().enable_http1().build();
        Ok(AgentClient {
            base,
            authorization,
            timeout,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn attempt(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        accept: &'static str,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header(header::ACCEPT, accept)
            .header(
                header::USER_AGENT,
                concat!("fluxtrace/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(a) = &self.authorization {
            req = req.header(header::AUTHORIZATION, a.clone());
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .map_err(|e| Failure::Final(ClientError::Input(e.to_string())))?;
        let call = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| Transient(describe(&e)))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| Transient(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, Transient>((status, bytes))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(Failure::Transient(Transient(format!(
                "no answer within {:?}",
                self.timeout
            )))),
            Ok(Err(t)) => Err(Failure::Transient(t)),
            Ok(Ok((status, bytes))) => {
                let retry = status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT;
                if retry {
                    Err(Failure::Transient(Transient(format!(
                        "{}: {}",
                        status.as_u16(),
                        server_message(&bytes)
                    ))))
                } else {
                    Ok((status, bytes))
                }
            }
        }
    }

    /// Sends the request, retrying transient failures `retries` times with backoff;
    /// `on_retry(attempt, problem, delay)` is told before each wait.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        accept: &'static str,
        retries: u32,
        mut on_retry: impl FnMut(u32, &str, Duration),
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut delay = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(method.clone(), path, body, accept).await {
                Ok(r) => return Ok(r),
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Transient(Transient(problem))) => {
                    if attempt > retries {
                        return Err(ClientError::GaveUp {
                            attempts: attempt,
                            last: problem,
                        });
                    }
                    on_retry(attempt, &problem, delay);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// `POST /v1/promotions`.
    pub async fn report(
        &self,
        report: &PromotionReport,
        retries: u32,
        on_retry: impl FnMut(u32, &str, Duration),
    ) -> Result<ReportAnswer, ClientError> {
        let body = serde_json::to_vec(report).map_err(|e| ClientError::Input(e.to_string()))?;
        let (status, bytes) = self
            .send(
                Method::POST,
                "/v1/promotions",
                Some(&body),
                "application/json",
                retries,
                on_retry,
            )
            .await?;
        if !status.is_success() {
            return Err(ClientError::Rejected {
                status: status.as_u16(),
                message: server_message(&bytes),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET /v1/promotions/{id}`: the narrative (`text`) or the story JSON.
    pub async fn story(&self, id: &str, text: bool, retries: u32) -> Result<String, ClientError> {
        let path = format!("/v1/promotions/{}", encode_segment(id));
        self.get(&path, text, retries, |_| {
            ClientError::NotFound(id.to_string())
        })
        .await
    }

    /// `GET /v1/workloads/{namespace}/{name}/story`: the narrative (`text`) or the story JSON
    /// of the promotion behind what runs on a Deployment.
    pub async fn workload_story(
        &self,
        namespace: &str,
        name: &str,
        text: bool,
        retries: u32,
    ) -> Result<String, ClientError> {
        let path = format!(
            "/v1/workloads/{}/{}/story",
            encode_segment(namespace),
            encode_segment(name)
        );
        self.get(&path, text, retries, ClientError::Workload).await
    }

    /// `GET /v1/workloads`: the followed Deployments `filter` matches.
    pub async fn workloads(
        &self,
        filter: &crate::workload::WorkloadFilter,
        retries: u32,
    ) -> Result<Vec<crate::workload::Workload>, ClientError> {
        #[derive(Deserialize)]
        struct Answer {
            workloads: Vec<crate::workload::Workload>,
        }
        let query: Vec<String> = [
            ("environment", &filter.environment),
            ("namespace", &filter.namespace),
            ("app", &filter.app),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| format!("{k}={}", encode_segment(v))))
        .collect();
        let path = match query.is_empty() {
            true => "/v1/workloads".to_string(),
            false => format!("/v1/workloads?{}", query.join("&")),
        };
        let text = self
            .get(&path, false, retries, ClientError::Workload)
            .await?;
        serde_json::from_str::<Answer>(&text)
            .map(|a| a.workloads)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// `GET /readyz`, once: its status code and text, whether ready (200) or not (503).
    pub async fn readyz(&self) -> Result<(u16, String), ClientError> {
        let (status, bytes) = self
            .send(Method::GET, "/readyz", None, "text/plain", 0, |_, _, _| {})
            .await?;
        Ok((
            status.as_u16(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    }

    /// A GET answered with text (`text`) or JSON; a 404 becomes `not_found(agent's message)`.
    async fn get(
        &self,
        path: &str,
        text: bool,
        retries: u32,
        not_found: impl FnOnce(String) -> ClientError,
    ) -> Result<String, ClientError> {
        let accept = if text {
            "text/plain"
        } else {
            "application/json"
        };
        let (status, bytes) = self
            .send(Method::GET, path, None, accept, retries, |_, _, _| {})
            .await?;
        match status {
            StatusCode::NOT_FOUND => Err(not_found(server_message(&bytes))),
            s if !s.is_success() => Err(ClientError::Rejected {
                status: s.as_u16(),
                message: server_message(&bytes),
            }),
            _ => String::from_utf8(bytes.to_vec())
                .map_err(|_| ClientError::Protocol("the answer is not UTF-8".into())),
        }
    }
}

/// The cause chain of a hyper error in one line ("connection refused", not just "client error").
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The `error` of a JSON error answer, else the answer's text (shortened).
fn server_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct E {
        error: String,
    }
    if let Ok(e) = serde_json::from_slice::<E>(body) {
        return e.error;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".into();
    }
    text.chars().take(2000).collect()
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `repository[:tag][@sha256:digest]`, with an optional `oci://` prefix. A `:` only starts a
/// tag after the last `/` (a registry port is not a tag).
pub fn parse_artifact(s: &str) -> ArtifactRef {
    let s = s.trim();
    let s = s.strip_prefix("oci://").unwrap_or(s);
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d.to_string())),
        None => (s, None),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match rest[slash..].rfind(':') {
        Some(i) => (
            rest[..slash + i].to_string(),
            Some(rest[slash + i + 1..].to_string()),
        ),
        None => (rest.to_string(), None),
    };
    let none_if_empty = |v: Option<String>| v.filter(|x| !x.is_empty());
    ArtifactRef {
        repository: none_if_empty(Some(repository)),
        tag: none_if_empty(tag),
        digest: none_if_empty(digest),
    }
}

/// Builds the report from the flags and, unless `--no-ci`, the CI run's environment (flags win),
/// then validates it as the agent will.
pub fn build_report(
    args: &PromoteArgs,
    env: impl Fn(&str) -> Option<String>,
    git_commit_time: impl Fn(&str) -> Option<jiff::Timestamp>,
) -> Result<(PromotionReport, Option<&'static str>), ClientError> {
    let run = if args.no_ci { None } else { ci::detect(env) };
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let mut artifact = args.artifact.as_deref().map(parse_artifact);
    if let Some(d) = given(&args.digest) {
        artifact.get_or_insert_with(ArtifactRef::default).digest = Some(d);
    }
    let has_digest = artifact.as_ref().is_some_and(|a| a.digest.is_some());
    // The CI commit is what was promoted only when nothing else is named: for an OCI artifact
    // the revision Flux joins on is the digest, not the commit that built it.
    let revision = given(&args.revision).or_else(|| {
        (!has_digest)
            .then(|| run.as_ref().and_then(|r| r.commit.clone()))
            .flatten()
    });
    let ci_pipeline = run.as_ref().map(|r| r.pipeline.clone()).unwrap_or_default();
    let pipeline = PipelineRef {
        name: given(&args.pipeline_name).or(ci_pipeline.name),
        run_id: given(&args.run_id).or(ci_pipeline.run_id),
        url: given(&args.run_url).or(ci_pipeline.url),
    };
    let pipeline = (pipeline != PipelineRef::default()).then_some(pipeline);
    let id = given(&args.id)
        .or_else(|| run.as_ref().and_then(|r| r.default_id.clone()))
        .ok_or_else(|| {
            ClientError::Input(
                "no promotion id: pass --id (outside GitHub Actions and GitLab CI there is no run to derive one from)"
                    .into(),
            )
        })?;
    // The commit time, for the lead time of changes: given, else from CI for the commit CI
    // built, else from `git log` in a checkout that has the commit; unknown stays unknown.
    let commit = revision
        .as_deref()
        .and_then(crate::revision::commit_sha)
        .or_else(|| run.as_ref().and_then(|r| r.commit.as_deref()))
        .map(str::to_string);
    let ci_commit_time = run
        .as_ref()
        .filter(|r| r.commit.is_some() && r.commit == commit)
        .and_then(|r| r.commit_time.as_deref())
        .map(|t| {
            t.parse::<jiff::Timestamp>().map_err(|e| {
                ClientError::Report(ReportError::Field {
                    field: "commit_time",
                    reason: format!("CI_COMMIT_TIMESTAMP {t:?} is not RFC 3339: {e}"),
                })
            })
        })
        .transpose()?;
    let commit_time = args
        .commit_time
        .or(ci_commit_time)
        .or_else(|| commit.as_deref().and_then(&git_commit_time));
    let report = PromotionReport {
        id,
        environment: args.environment.clone(),
        revision,
        artifact,
        app: given(&args.app),
        actor: given(&args.actor).or_else(|| run.as_ref().and_then(|r| r.actor.clone())),
        pipeline,
        traceparent: given(&args.traceparent).filter(|_| !args.no_ci_parent),
        time: args.time,
        commit_time,
        promoted_from: given(&args.from),
    };
    let report = promotion::validate(report).map_err(|e| match e {
        ReportError::Missing("revision") => ClientError::Input(
            "nothing to promote: pass --revision <commit sha>, or --digest sha256:… (or --artifact repo@sha256:…)"
                .into(),
        ),
        other => ClientError::Report(other),
    })?;
    Ok((report, run.map(|r| r.system)))
}

/// The committer date of `commit` from `git log`, when the current directory is a checkout that
/// has it; `None` otherwise (no git, not a checkout, unknown commit).
pub fn git_commit_time(commit: &str) -> Option<jiff::Timestamp> {
    if !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let out = std::process::Command::new("git")
        .args(["log", "-1", "--format=%cI", commit])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn runtime() -> Result<tokio::runtime::Runtime, ClientError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Input(format!("cannot start the async runtime: {e}")))
}

fn client_for(a: &AgentArgs) -> Result<AgentClient, ClientError> {
    let timeout = Duration::try_from(a.request_timeout).unwrap_or(Duration::from_secs(10));
    AgentClient::new(&a.agent, a.token.as_deref(), timeout)
}

fn fail(e: &ClientError) -> ExitCode {
    eprintln!("fluxtrace: {e}");
    ExitCode::from(e.exit_code())
}

/// `fluxtrace promote`: prints the trace id and link (or the agent's JSON with `--json`).
/// Exit codes: 0 accepted, 2 refused (a bad report or flags: fix, do not retry), 1 the agent
/// could not be reached.
pub fn promote_command(args: &PromoteArgs) -> ExitCode {
    let (report, ci) = match build_report(args, |k| std::env::var(k).ok(), git_commit_time) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if let Some(system) = ci {
        tracing::info!(message = "CI run detected.", system);
    }
    if args.dry_run {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => return fail(&ClientError::Input(e.to_string())),
        }
        return ExitCode::SUCCESS;
    }
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let client = client_for(&args.agent)?;
            client
                .report(&report, args.retries, |attempt, problem, delay| {
                    eprintln!(
                        "fluxtrace: attempt {attempt} failed ({problem}); retrying in {:.1}s",
                        delay.as_secs_f64()
                    );
                })
                .await
        })
    });
    match result {
        Ok(a) => {
            if args.json {
                match serde_json::to_string(&serde_json::json!({
                    "promotion_id": a.promotion_id,
                    "trace_id": a.trace_id,
                    "trace_link": a.trace_link,
                })) {
                    Ok(j) => println!("{j}"),
                    Err(e) => return fail(&ClientError::Protocol(e.to_string())),
                }
            } else {
                println!("promotion {} reported", a.promotion_id);
                println!("trace id:   {}", a.trace_id);
                if let Some(link) = &a.trace_link {
                    println!("trace link: {link}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// `NAMESPACE/NAME` of `--workload`.
fn workload_name(w: &str) -> Result<(&str, &str), ClientError> {
    match w.trim().split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns, name))
        }
        _ => Err(ClientError::Input(format!(
            "--workload expects NAMESPACE/NAME of a Deployment, got {w:?}"
        ))),
    }
}

/// `fluxtrace explain <id>` or `fluxtrace explain --workload NS/NAME`: prints the triage story
/// (the JSON story with `--json`).
pub fn explain_command(args: &ExplainArgs) -> ExitCode {
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let client = client_for(&args.agent)?;
            match (&args.workload, &args.id) {
                (Some(w), _) => {
                    let (ns, name) = workload_name(w)?;
                    client.workload_story(ns, name, !args.json, 2).await
                }
                (None, Some(id)) => client.story(id, !args.json, 2).await,
                (None, None) => Err(ClientError::Input(
                    "name a promotion id or --workload NAMESPACE/NAME".into(),
                )),
            }
        })
    });
    match result {
        Ok(text) if args.json => {
            match serde_json::from_str::<serde_json::Value>(&text)
                .and_then(|v| serde_json::to_string_pretty(&v))
            {
                Ok(pretty) => println!("{}", crate::story::terminal_safe(&pretty)),
                Err(_) => println!("{}", crate::story::terminal_safe(&text)),
            }
            ExitCode::SUCCESS
        }
        Ok(text) => {
            // The agent's text is safe already; an older or impostor agent's may not be.
            print!("{}", crate::story::terminal_safe(&text));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// `fluxtrace status`: what runs on each followed Deployment, as a table (the agent's JSON
/// with `--output json`).
pub fn status_command(args: &StatusArgs) -> ExitCode {
    let filter = crate::workload::WorkloadFilter {
        environment: args.environment.clone(),
        namespace: args.namespace.clone(),
        app: args.app.clone(),
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let client = client_for(&args.agent)?;
            client.workloads(&filter, 2).await
        })
    });
    let workloads = match result {
        Ok(w) => w,
        Err(e) => return fail(&e),
    };
    match args.output {
        Format::Json => {
            /// The agent's answer, fields in their order.
            #[derive(serde::Serialize)]
            struct Answer<'a> {
                workloads: &'a [crate::workload::Workload],
            }
            match serde_json::to_string_pretty(&Answer {
                workloads: &workloads,
            }) {
                Ok(j) => println!("{}", crate::story::terminal_safe(&j)),
                Err(e) => return fail(&ClientError::Protocol(e.to_string())),
            }
        }
        Format::Text => print!("{}", crate::workload::render(&workloads)),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts() {
        let a = parse_artifact("ghcr.io/acme/app-manifests:prod");
        assert_eq!(a.repository.as_deref(), Some("ghcr.io/acme/app-manifests"));
        assert_eq!(a.tag.as_deref(), Some("prod"));
        assert_eq!(a.digest, None);
        let a = parse_artifact("oci://localhost:5000/app@sha256:abc");
        assert_eq!(a.repository.as_deref(), Some("localhost:5000/app"));
        assert_eq!(a.tag, None);
        assert_eq!(a.digest.as_deref(), Some("sha256:abc"));
        let a = parse_artifact("registry:5000/team/app:1.2@sha256:abc");
        assert_eq!(a.repository.as_deref(), Some("registry:5000/team/app"));
        assert_eq!(a.tag.as_deref(), Some("1.2"));
    }

    #[test]
    fn workload_names() {
        assert_eq!(
            workload_name("payments/ledger").ok(),
            Some(("payments", "ledger"))
        );
        for bad in ["ledger", "/ledger", "payments/", "a/b/c"] {
            let e = workload_name(bad).expect_err(bad).to_string();
            assert!(e.contains("NAMESPACE/NAME") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("rel-2041"), "rel-2041");
        assert_eq!(encode_segment("a/b c?#%"), "a%2Fb%20c%3F%23%25");
    }

    #[test]
    fn agent_urls() {
        let t = Duration::from_secs(1);
        assert!(AgentClient::new("ftp://x", None, t).is_err());
        assert!(AgentClient::new("not a url", None, t).is_err());
        let c = AgentClient::new("http://agent:8080/fluxtrace/", None, t).expect("valid");
        assert_eq!(c.base, "http://agent:8080/fluxtrace");
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            server_message(br#"{"error":"field `id` is required"}"#),
            "field `id` is required"
        );
        assert_eq!(server_message(b"  plain  "), "plain");
        assert_eq!(server_message(b""), "(no message)");
    }
}
