//! The traffic prober: after a rollout completes, is runtime traffic reaching the new version?
//!
//! The engine asks ([`crate::correlate::Output::Probe`]); this module does the IO and hands back
//! a [`ProbeResult`] that re-enters the engine as an observation, so the engine stays pure and
//! replay stays deterministic. Bounded on every side: a concurrency limit across probes, a
//! per-request timeout, an overall deadline, a cap on the body read, redirects only within the
//! same host, and no request at all to a host outside the allow-list (an annotation must not
//! turn the agent into a scanner).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::http::{header, Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::model::{ProbeRequest, ProbeResult, ProbeVerdict};

/// Agent-wide probe defaults and limits.
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    /// Samples at most.
    pub samples: u32,
    pub interval: Duration,
    /// Per request.
    pub timeout: Duration,
    /// The verdict looks at the last `window` samples...
    pub window: u32,
    /// ...of which at least this share must serve the expected version.
    pub ratio: f64,
    /// Overall, per probe.
    pub deadline: Duration,
    /// Hosts that may be probed: `.suffix` entries match by suffix, others exactly.
    pub allow_hosts: Vec<String>,
    /// Bytes of a response body read at most.
    pub max_body: usize,
    /// Probes running at once.
    pub concurrency: usize,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            samples: 10,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            window: 5,
            ratio: 1.0,
            deadline: Duration::from_secs(120),
            allow_hosts: vec![".svc".into(), ".svc.cluster.local".into()],
            max_body: 64 * 1024,
            concurrency: 8,
        }
    }
}

/// One sample's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sample {
    /// The version the response showed.
    Version(String),
    /// A non-success HTTP status.
    Status(u16),
    /// No usable answer (timeout, connection error, body too large, no version found).
    Error(String),
}

/// Runs probes, at most `concurrency` at a time.
#[derive(Clone)]
pub struct Prober {
    settings: ProbeSettings,
    client: Client<HttpConnector, Empty<Bytes>>,
    permits: Arc<Semaphore>,
}

impl Prober {
    pub fn new(settings: ProbeSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.timeout));
        let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        Prober {
            client: Client::builder(TokioExecutor::new()).build(connector),
            settings,
            permits,
        }
    }

    /// Probes until the verdict is clear or the deadline passes. Never fails: every problem is
    /// a verdict.
    pub async fn probe(&self, req: &ProbeRequest, clock: &Clock) -> ProbeResult {
        let _permit = self.permits.acquire().await;
        let started = clock.now();
        let mut result = ProbeResult {
            promotion_id: req.promotion_id.clone(),
            namespace: req.deployment.namespace.clone(),
            deployment: req.deployment.name.clone(),
            generation: req.generation,
            url: strip_userinfo(&req.url),
            expected: req.expected.clone(),
            started,
            finished: started,
            samples: 0,
            matched: 0,
            versions: BTreeMap::new(),
            failed_status: None,
            verdict: ProbeVerdict::Passed,
        };
        let uri = match self.check_url(&req.url) {
            Ok(u) => u,
            Err((reason, message)) => {
                result.verdict = ProbeVerdict::Refused { reason, message };
                result.finished = clock.now();
                return result;
            }
        };
        let s = &self.settings;
        let deadline = tokio::time::Instant::now() + s.deadline;
        let mut samples: Vec<Sample> = Vec::new();
        let mut passed = false;
        while (samples.len() as u32) < s.samples.max(1) && tokio::time::Instant::now() < deadline {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let sample = match tokio::time::timeout(
                s.timeout.min(left),
                self.sample(&uri, &req.expect, &req.expected),
            )
            .await
            {
                Ok(x) => x,
                Err(_) => Sample::Error(format!("no answer within {:?}", s.timeout.min(left))),
            };
            samples.push(sample);
            let window: Vec<&Sample> = samples
                .iter()
                .rev()
                .take(s.window.max(1) as usize)
                .collect();
            let ok = window
                .iter()
                .filter(|x| matches!(x, Sample::Version(v) if *v == req.expected))
                .count();
            if window.len() as u32 >= s.window.max(1).min(s.samples.max(1))
                && ok as f64 >= s.ratio * window.len() as f64
            {
                passed = true;
                break;
            }
            let next = tokio::time::Instant::now() + s.interval;
            if next >= deadline {
                break;
            }
            tokio::time::sleep_until(next).await;
        }
        result.finished = clock.now();
        result.samples = samples.len() as u32;
        for x in &samples {
            let key = match x {
                Sample::Version(v) => v.clone(),
                Sample::Status(c) => format!("http {c}"),
                Sample::Error(_) => "error".to_string(),
            };
            *result.versions.entry(key).or_default() += 1;
            if let Sample::Status(c) = x {
                result.failed_status = Some(*c);
            }
        }
        result.matched = samples
            .iter()
            .filter(|x| matches!(x, Sample::Version(v) if *v == req.expected))
            .count() as u32;
        if !passed {
            result.verdict = failure(&samples, &req.expected, s);
        }
        result
    }

    fn check_url(&self, url: &str) -> Result<Uri, (String, String)> {
        let uri: Uri = url.parse().map_err(|e| {
            (
                "InvalidURL".to_string(),
                format!("{}: {e}", strip_userinfo(url)),
            )
        })?;
        if uri.scheme_str() != Some("http") {
            return Err((
                "UnsupportedScheme".into(),
                format!(
                    "only http:// in-cluster URLs are probed, not {}",
                    strip_userinfo(url)
                ),
            ));
        }
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        if !host_allowed(&host, &self.settings.allow_hosts) {
            return Err((
                "HostNotAllowed".into(),
                format!(
                    "{host} is outside the probe allow-list ({}); not probed",
                    self.settings.allow_hosts.join(", ")
                ),
            ));
        }
        Ok(uri)
    }

    async fn sample(&self, uri: &Uri, expect: &str, expected: &str) -> Sample {
        let mut uri = uri.clone();
        for _ in 0..4 {
            let req = match Request::builder()
                .method(Method::GET)
                .uri(uri.clone())
                .header(
                    header::USER_AGENT,
                    concat!("fluxtrace-probe/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::new())
            {
                Ok(r) => r,
                Err(e) => return Sample::Error(e.to_string()),
            };
            let resp = match self.client.request(req).await {
                Ok(r) => r,
                Err(e) => return Sample::Error(format!("request failed: {e}")),
            };
            let status = resp.status();
            if status.is_redirection() {
                // Redirects are followed only within the same host.
                let Some(next) = resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| resolve(&uri, l))
                else {
                    return Sample::Status(status.as_u16());
                };
                if next.host() != uri.host() || next.scheme_str() != Some("http") {
                    return Sample::Error(format!(
                        "redirect to another host refused: {}",
                        strip_userinfo(&next.to_string())
                    ));
                }
                uri = next;
                continue;
            }
            if !status.is_success() {
                return Sample::Status(status.as_u16());
            }
            let headers = resp.headers().clone();
            let body = match Limited::new(resp.into_body(), self.settings.max_body)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return Sample::Error(format!(
                        "response body over {} bytes (or broken)",
                        self.settings.max_body
                    ))
                }
            };
            return read_version(expect, expected, &headers, &body);
        }
        Sample::Error("too many redirects".into())
    }
}

fn read_version(expect: &str, expected: &str, headers: &hyper::HeaderMap, body: &[u8]) -> Sample {
    if let Some(name) = expect.strip_prefix("header:") {
        return match headers.get(name.trim()).and_then(|v| v.to_str().ok()) {
            Some(v) => Sample::Version(v.trim().to_string()),
            None => Sample::Error(format!("no {name} header")),
        };
    }
    if let Some(pointer) = expect.strip_prefix("json:") {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Sample::Error("body is not JSON".into());
        };
        return match v.pointer(pointer.trim()) {
            Some(serde_json::Value::String(s)) => Sample::Version(s.clone()),
            Some(serde_json::Value::Null) | None => Sample::Error(format!("no value at {pointer}")),
            Some(other) => Sample::Version(other.to_string()),
        };
    }
    // `body`: the expected version appears in the body, or it does not.
    if !expected.is_empty() && String::from_utf8_lossy(body).contains(expected) {
        Sample::Version(expected.to_string())
    } else {
        Sample::Version("other".to_string())
    }
}

fn failure(samples: &[Sample], expected: &str, s: &ProbeSettings) -> ProbeVerdict {
    let window: Vec<&Sample> = samples
        .iter()
        .rev()
        .take(s.window.max(1) as usize)
        .collect();
    let statuses = window
        .iter()
        .filter(|x| matches!(x, Sample::Status(_)))
        .count();
    let errors: Vec<&String> = window
        .iter()
        .filter_map(|x| match x {
            Sample::Error(e) => Some(e),
            _ => None,
        })
        .collect();
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for x in samples {
        if let Sample::Version(v) = x {
            *seen.entry(v.as_str()).or_default() += 1;
        }
    }
    let served = seen
        .iter()
        .map(|(v, n)| format!("{v} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    if samples.is_empty() {
        return ProbeVerdict::Failed {
            reason: "NoSamples".into(),
            message: "the deadline passed before any sample".into(),
        };
    }
    if statuses * 2 >= window.len() {
        let code = window.iter().find_map(|x| match x {
            Sample::Status(c) => Some(*c),
            _ => None,
        });
        return ProbeVerdict::Failed {
            reason: "HTTPError".into(),
            message: format!(
                "{statuses} of the last {} samples answered HTTP {}",
                window.len(),
                code.unwrap_or_default()
            ),
        };
    }
    if errors.len() * 2 >= window.len() {
        return ProbeVerdict::Failed {
            reason: "Unreachable".into(),
            message: format!(
                "{} of the last {} samples failed: {}",
                errors.len(),
                window.len(),
                errors[0]
            ),
        };
    }
    ProbeVerdict::Failed {
        reason: "WrongVersion".into(),
        message: format!(
            "traffic served {served}; expected {expected} in {:.0}% of the last {} samples",
            s.ratio * 100.0,
            window.len()
        ),
    }
}

/// `.suffix` entries match by suffix, others exactly.
pub fn host_allowed(host: &str, allow: &[String]) -> bool {
    let host = host.trim_end_matches('.');
    allow.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        match a.strip_prefix('.') {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == a,
        }
    })
}

fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().ok();
    }
    let authority = base.authority()?;
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        format!("/{location}")
    };
    format!("http://{authority}{path}").parse().ok()
}

/// A URL without `user:password@`.
pub fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_matches_suffixes_and_exact_hosts() {
        let allow = ProbeSettings::default().allow_hosts;
        assert!(host_allowed("checkout.shop.svc", &allow));
        assert!(host_allowed("checkout.shop.svc.cluster.local", &allow));
        assert!(host_allowed("checkout.shop.svc.cluster.local.", &allow));
        assert!(!host_allowed("svc", &allow));
        assert!(!host_allowed("example.com", &allow));
        assert!(!host_allowed("169.254.169.254", &allow));
        assert!(!host_allowed("evil.svc.example.com", &allow));
        assert!(host_allowed("127.0.0.1", &["127.0.0.1".to_string()]));
    }

    #[test]
    fn credentials_never_leave_the_url() {
        assert_eq!(
            strip_userinfo("http://user:pw@checkout.shop.svc:8080/version"),
            "http://checkout.shop.svc:8080/version"
        );
    }

    #[test]
    fn versions_are_read_from_headers_json_or_body() {
        let mut h = hyper::HeaderMap::new();
        h.insert("x-app-version", "6.6.1".parse().expect("header"));
        assert_eq!(
            read_version("header:X-App-Version", "6.6.1", &h, b""),
            Sample::Version("6.6.1".into())
        );
        let body = br#"{"build":{"version":"6.6.0"}}"#;
        assert_eq!(
            read_version("json:/build/version", "6.6.1", &h, body),
            Sample::Version("6.6.0".into())
        );
        assert_eq!(
            read_version("body", "6.6.1", &h, b"podinfo v6.6.1"),
            Sample::Version("6.6.1".into())
        );
        assert_eq!(
            read_version("body", "6.6.1", &h, b"podinfo v6.6.0"),
            Sample::Version("other".into())
        );
        assert!(matches!(
            read_version("json:/x", "1", &h, b"nope"),
            Sample::Error(_)
        ));
    }
}
