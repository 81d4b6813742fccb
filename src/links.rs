//! Trace links: the URL template that turns a trace id into a link in the user's tracing UI.
//!
//! A template holds `{trace_id}` (32 lowercase hex) and optionally `{start_ms}` / `{end_ms}`
//! (the promotion's start and end, Unix milliseconds). It is either given whole
//! (`--trace-url-template`) or built from a preset and a base URL (`--trace-backend`,
//! `--trace-base-url`); a given template wins. Pure: no IO, no clock.
//!
//! The presets, and the URL shapes the UIs accept:
//!
//! - `jaeger`: the Jaeger UI's trace page, `{base}/trace/{trace_id}`.
//! - `tempo`: Tempo has no UI of its own; Grafana is its UI. Grafana Explore (its `panes` URL
//!   format, `explore?schemaVersion=1&panes=…`) with one pane on the Tempo data source
//!   (`--trace-datasource`, uid or name, default `tempo`), a TraceQL query that is just the trace
//!   id (Tempo's trace lookup) and the time range `{start_ms}`–`{end_ms}`. The query names no
//!   data source of its own: Explore drops a query whose data source uid differs from the pane's,
//!   and the pane's may be given by name.
//! - `grafana`: the same Explore link for whichever tracing data source Grafana reads traces
//!   from (`--trace-datasource`, required): the query carries only the trace id and no
//!   `queryType`, the form that Grafana's Tempo, Jaeger and Zipkin data sources all read as "look
//!   up this trace id".
//!
//! Both Grafana links carry `orgId` only when `--trace-grafana-org` names the organisation;
//! without it Grafana opens the link in the user's current organisation.
//!
//! The pane JSON is percent-encoded (Grafana splits the query string on `&` before it decodes);
//! the placeholders stay literal so that the template can be read, changed by hand and filled by
//! [`fill`].

use jiff::Timestamp;

use crate::trace::TraceId;

/// A tracing UI fluxtrace can link to without a hand-written template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceBackend {
    /// Jaeger UI: `{base}/trace/{trace_id}`.
    Jaeger,
    /// Grafana Explore on a Tempo data source (TraceQL trace lookup, time window).
    Tempo,
    /// Grafana Explore on any tracing data source (Tempo, Jaeger, Zipkin), by uid or name.
    Grafana,
}

impl TraceBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            TraceBackend::Jaeger => "jaeger",
            TraceBackend::Tempo => "tempo",
            TraceBackend::Grafana => "grafana",
        }
    }
}

/// Why no template could be made from the link options.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("--trace-backend {0} needs --trace-base-url (the UI's address)")]
    MissingBaseUrl(&'static str),
    #[error("--trace-base-url needs --trace-backend (jaeger, tempo or grafana)")]
    MissingBackend,
    #[error("--trace-backend grafana needs --trace-datasource (the uid or name of the tracing data source)")]
    MissingDatasource,
    #[error(
        "--trace-base-url must be an http:// or https:// URL without query or fragment: {0:?}"
    )]
    BadBaseUrl(String),
    #[error("--trace-base-url must not carry credentials: links are written to logs and Kubernetes Events")]
    CredentialsInBaseUrl,
    #[error("--trace-url-template must contain {{trace_id}}: {0:?}")]
    NoTraceId(String),
}

impl LinkError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            LinkError::MissingBaseUrl(_) => "missing_base_url",
            LinkError::MissingBackend => "missing_backend",
            LinkError::MissingDatasource => "missing_datasource",
            LinkError::BadBaseUrl(_) => "bad_base_url",
            LinkError::CredentialsInBaseUrl => "credentials_in_base_url",
            LinkError::NoTraceId(_) => "no_trace_id",
        }
    }
}

/// The link options as given on the command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkOptions<'a> {
    pub template: Option<&'a str>,
    pub backend: Option<TraceBackend>,
    pub base_url: Option<&'a str>,
    pub datasource: Option<&'a str>,
    /// The Grafana organisation (`orgId`) of the Grafana links; none: the user's current one.
    pub grafana_org: Option<u64>,
}

/// The template to use: the given one (checked for `{trace_id}`), else the preset's, else none.
pub fn template(opts: LinkOptions<'_>) -> Result<Option<String>, LinkError> {
    if let Some(t) = opts.template.map(str::trim).filter(|t| !t.is_empty()) {
        if !t.contains("{trace_id}") {
            return Err(LinkError::NoTraceId(t.to_string()));
        }
        return Ok(Some(t.to_string()));
    }
    let base = opts.base_url.map(str::trim).filter(|b| !b.is_empty());
    match (opts.backend, base) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(LinkError::MissingBackend),
        (Some(b), None) => Err(LinkError::MissingBaseUrl(b.as_str())),
        (Some(b), Some(base)) => {
            let base = base_url(base)?;
            let datasource = opts.datasource.map(str::trim).filter(|d| !d.is_empty());
            Ok(Some(match b {
                TraceBackend::Jaeger => format!("{base}/trace/{{trace_id}}"),
                TraceBackend::Tempo => {
                    grafana_explore(base, datasource.unwrap_or("tempo"), true, opts.grafana_org)
                }
                TraceBackend::Grafana => {
                    let ds = datasource.ok_or(LinkError::MissingDatasource)?;
                    grafana_explore(base, ds, false, opts.grafana_org)
                }
            }))
        }
    }
}

/// Fills a template: `{trace_id}`, `{start_ms}`, `{end_ms}`.
pub fn fill(template: &str, trace_id: TraceId, start: Timestamp, end: Timestamp) -> String {
    template
        .replace("{trace_id}", &trace_id.to_string())
        .replace("{start_ms}", &start.as_millisecond().to_string())
        .replace("{end_ms}", &end.as_millisecond().to_string())
}

/// `http(s)://host[:port][/path]`, without a trailing slash.
fn base_url(raw: &str) -> Result<&str, LinkError> {
    let bad = || LinkError::BadBaseUrl(raw.to_string());
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(LinkError::CredentialsInBaseUrl);
    }
    if authority.is_empty()
        || raw.contains(['?', '#'])
        || raw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    Ok(raw.trim_end_matches('/'))
}

/// Grafana Explore, one pane: the data source (`datasource`, uid or name), a query that looks
/// up the trace id, and the promotion's time window. `traceql`: the data source is known to be
/// Tempo, so the query is a TraceQL one; otherwise the query has only the trace id, which Tempo,
/// Jaeger and Zipkin data sources all take as a trace lookup. Neither names a data source of its
/// own, so that the pane's (uid or name) holds.
fn grafana_explore(base: &str, datasource: &str, traceql: bool, org: Option<u64>) -> String {
    let mut query = serde_json::json!({"refId": "A", "query": "{trace_id}"});
    if traceql {
        query["queryType"] = "traceql".into();
    }
    // Pane ids are three characters with at least one letter (Grafana replaces others).
    let panes = serde_json::json!({
        "ftr": {
            "datasource": datasource,
            "queries": [query],
            "range": {"from": "{start_ms}", "to": "{end_ms}"},
        }
    });
    let encoded = percent_encode(&panes.to_string())
        .replace("%7Btrace_id%7D", "{trace_id}")
        .replace("%7Bstart_ms%7D", "{start_ms}")
        .replace("%7Bend_ms%7D", "{end_ms}");
    let org = org.map(|o| format!("&orgId={o}")).unwrap_or_default();
    format!("{base}/explore?schemaVersion=1&panes={encoded}{org}")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TraceId {
        let mut b = [0u8; 16];
        hex::decode_to_slice("f1c00049188d2491fe9f2c82a5be9a15", &mut b).expect("hex");
        TraceId(b)
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn opts<'a>(backend: TraceBackend, base: &'a str) -> LinkOptions<'a> {
        LinkOptions {
            backend: Some(backend),
            base_url: Some(base),
            ..LinkOptions::default()
        }
    }

    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).expect("utf8");
                out.push(u8::from_str_radix(h, 16).expect("hex"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("utf8")
    }

    /// The `panes` parameter of an Explore link, decoded.
    fn panes(link: &str) -> serde_json::Value {
        let (_, query) = link.split_once('?').expect("query");
        let panes = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("panes="))
            .expect("panes");
        serde_json::from_str(&decode(&panes.replace('+', "%20"))).expect("panes is JSON")
    }

    #[test]
    fn nothing_configured_means_no_link() {
        assert_eq!(template(LinkOptions::default()), Ok(None));
    }

    #[test]
    fn jaeger_links_to_the_trace_page() {
        let t = template(opts(TraceBackend::Jaeger, "https://jaeger.example/"))
            .expect("ok")
            .expect("some");
        assert_eq!(t, "https://jaeger.example/trace/{trace_id}");
        let link = fill(
            &t,
            id(),
            at("2026-11-26T10:00:01Z"),
            at("2026-11-26T10:02:11Z"),
        );
        assert_eq!(
            link,
            "https://jaeger.example/trace/f1c00049188d2491fe9f2c82a5be9a15"
        );
    }

    #[test]
    fn tempo_links_to_grafana_explore_with_a_traceql_lookup_and_the_window() {
        let t = template(opts(TraceBackend::Tempo, "https://grafana.example/sub"))
            .expect("ok")
            .expect("some");
        assert!(
            t.starts_with("https://grafana.example/sub/explore?schemaVersion=1&panes="),
            "{t}"
        );
        assert!(!t.contains("orgId"), "the user's current organisation: {t}");
        assert!(t.contains("{trace_id}") && t.contains("{start_ms}") && t.contains("{end_ms}"));
        let link = fill(
            &t,
            id(),
            at("2026-11-26T10:00:01Z"),
            at("2026-11-26T10:02:11Z"),
        );
        assert!(!link.contains('{') && !link.contains('"') && !link.contains(' '));
        assert_eq!(
            panes(&link),
            serde_json::json!({"ftr": {
                "datasource": "tempo",
                "queries": [{
                    "refId": "A",
                    "queryType": "traceql",
                    "query": "f1c00049188d2491fe9f2c82a5be9a15",
                }],
                "range": {"from": "1795687201000", "to": "1795687331000"},
            }})
        );
    }

    #[test]
    fn tempo_takes_a_datasource_and_escapes_it() {
        let t = template(LinkOptions {
            datasource: Some("P214B5B846CF3925F&x=\"y\""),
            ..opts(TraceBackend::Tempo, "http://grafana:3000")
        })
        .expect("ok")
        .expect("some");
        let p = panes(&fill(
            &t,
            id(),
            Timestamp::UNIX_EPOCH,
            Timestamp::UNIX_EPOCH,
        ));
        assert_eq!(p["ftr"]["datasource"], "P214B5B846CF3925F&x=\"y\"");
        // Explore drops a query whose own data source differs from the pane's: none is named.
        assert!(p["ftr"]["queries"][0].get("datasource").is_none());
    }

    #[test]
    fn grafana_needs_a_datasource_and_sends_a_plain_trace_id_query() {
        assert_eq!(
            template(opts(TraceBackend::Grafana, "https://grafana.example")),
            Err(LinkError::MissingDatasource)
        );
        let t = template(LinkOptions {
            datasource: Some("jaeger-prod"),
            ..opts(TraceBackend::Grafana, "https://grafana.example")
        })
        .expect("ok")
        .expect("some");
        let p = panes(&fill(
            &t,
            id(),
            at("2026-11-26T10:00:01Z"),
            at("2026-11-26T10:02:11Z"),
        ));
        assert_eq!(
            p["ftr"]["queries"],
            serde_json::json!([{"refId": "A", "query": "f1c00049188d2491fe9f2c82a5be9a15"}])
        );
        assert_eq!(p["ftr"]["datasource"], "jaeger-prod");
    }

    #[test]
    fn the_grafana_organisation_is_named_only_when_given() {
        for backend in [TraceBackend::Tempo, TraceBackend::Grafana] {
            let t = template(LinkOptions {
                datasource: Some("traces"),
                grafana_org: Some(7),
                ..opts(backend, "https://grafana.example")
            })
            .expect("ok")
            .expect("some");
            let query = t.split_once('?').expect("query").1;
            let params: Vec<&str> = query.split('&').collect();
            assert!(params.contains(&"orgId=7"), "{t}");
            assert_eq!(
                params.iter().filter(|p| p.starts_with("orgId=")).count(),
                1,
                "{t}"
            );
        }
    }

    #[test]
    fn a_given_template_wins_over_a_preset() {
        let t = template(LinkOptions {
            template: Some("https://x.example/t/{trace_id}?from={start_ms}"),
            ..opts(TraceBackend::Jaeger, "https://jaeger.example")
        });
        assert_eq!(
            t,
            Ok(Some(
                "https://x.example/t/{trace_id}?from={start_ms}".into()
            ))
        );
    }

    #[test]
    fn bad_options_are_refused_with_the_flag_named() {
        assert_eq!(
            template(LinkOptions {
                template: Some("https://x.example/t/"),
                ..LinkOptions::default()
            }),
            Err(LinkError::NoTraceId("https://x.example/t/".into()))
        );
        assert_eq!(
            template(LinkOptions {
                backend: Some(TraceBackend::Tempo),
                ..LinkOptions::default()
            }),
            Err(LinkError::MissingBaseUrl("tempo"))
        );
        assert_eq!(
            template(LinkOptions {
                base_url: Some("https://jaeger.example"),
                ..LinkOptions::default()
            }),
            Err(LinkError::MissingBackend)
        );
        for bad in [
            "jaeger.example",
            "ftp://x",
            "https://",
            "https://x/?a=b",
            "https://x/#f",
        ] {
            assert!(
                matches!(
                    template(opts(TraceBackend::Jaeger, bad)),
                    Err(LinkError::BadBaseUrl(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            template(opts(TraceBackend::Jaeger, "https://user:pw@jaeger.example")),
            Err(LinkError::CredentialsInBaseUrl)
        );
    }

    #[test]
    fn fill_replaces_every_placeholder() {
        let link = fill(
            "{trace_id}/{trace_id}?s={start_ms}&e={end_ms}",
            id(),
            at("1970-01-01T00:00:01Z"),
            at("1970-01-01T00:00:02.5Z"),
        );
        assert_eq!(
            link,
            "f1c00049188d2491fe9f2c82a5be9a15/f1c00049188d2491fe9f2c82a5be9a15?s=1000&e=2500"
        );
    }
}
