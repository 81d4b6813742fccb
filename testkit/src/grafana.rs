//! Grafana links read the way Grafana reads them, so that tests can prove that a link opens the
//! Explore pane it means to without a Grafana at hand:
//!
//! - [`interpolate`]: a dashboard panel link's variables filled in as Grafana fills them (each
//!   `${name}` URI-encoded unless the reference names a format: `${name:pipe}`, `${name:regex}`;
//!   a custom "All" value goes in unformatted);
//! - [`query_params`]: the query string split on `&`, `+` read as a space, then each key and value
//!   percent-decoded (a value that does not decode is dropped, as Grafana drops it);
//! - [`explore_panes`]: the `panes` parameter of an Explore link, parsed as JSON;
//! - [`traceql_strings`]: the string literals of a TraceQL query, unquoted with the rules Tempo
//!   applies (Go's quoted-string escapes).

use std::collections::BTreeMap;

/// The value of a dashboard variable.
#[derive(Clone, Debug)]
pub enum Var {
    /// One value.
    One(String),
    /// Several values of a multi-value variable.
    Many(Vec<String>),
    /// "All" with the variable's custom all value (such as `.*`).
    All(String),
}

/// Fills `${name}` and `${name:format}` in a panel link as Grafana does for panel links: the
/// default format is URI encoding; `pipe` joins values with `|`; `regex` escapes regex
/// metacharacters with `\` and joins several values as `(a|b)`; `raw` inserts the value as is.
/// A custom all value is inserted unformatted. Panics on a variable or format it does not know,
/// naming it.
pub fn interpolate(url: &str, vars: &BTreeMap<&str, Var>) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let end = after
            .find('}')
            .unwrap_or_else(|| panic!("unclosed variable in {url}"));
        let (name, format) = match after[..end].split_once(':') {
            Some((n, f)) => (n, Some(f)),
            None => (&after[..end], None),
        };
        let var = vars
            .get(name)
            .unwrap_or_else(|| panic!("variable {name} has no value in this test ({url})"));
        out.push_str(&format_var(var, format));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn format_var(var: &Var, format: Option<&str>) -> String {
    let values: Vec<&str> = match var {
        Var::All(custom) => return custom.clone(),
        Var::One(v) => vec![v.as_str()],
        Var::Many(vs) => vs.iter().map(String::as_str).collect(),
    };
    match format {
        None | Some("uriencode") | Some("percentencode") => {
            let joined = match var {
                Var::Many(_) => format!("{{{}}}", values.join(",")),
                _ => values.join(","),
            };
            uri_encode(&joined)
        }
        Some("pipe") => values.join("|"),
        Some("raw") => values.join(","),
        Some("regex") => {
            let escaped: Vec<String> = values.iter().map(|v| regex_escape(v)).collect();
            if escaped.len() == 1 {
                escaped[0].clone()
            } else {
                format!("({})", escaped.join("|"))
            }
        }
        Some(other) => panic!("variable format {other:?} is not modelled here"),
    }
}

fn regex_escape(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if "\\^$.*+?()[]{}|/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Percent-encodes every byte but letters, digits and `-._~` (Grafana's strict URI encoding,
/// the same the agent's link presets use).
pub fn uri_encode(s: &str) -> String {
    fluxtrace::links::percent_encode(s)
}

/// `decodeURIComponent`: `None` on a malformed escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The query parameters of a URL as Grafana parses its location: the part after `?` split on
/// `&`, `+` replaced by `%20`, key and value split at the first `=`, each percent-decoded; a
/// parameter whose key or value does not decode is dropped. The first occurrence of a key wins.
pub fn query_params(url: &str) -> BTreeMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let query = query.split('#').next().unwrap_or_default();
    let mut out = BTreeMap::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let part = part.replace('+', "%20");
        let (k, v) = part.split_once('=').unwrap_or((&part, "true"));
        if let (Some(k), Some(v)) = (percent_decode(k), percent_decode(v)) {
            out.entry(k).or_insert(v);
        }
    }
    out
}

/// The `panes` of an Explore link (`…/explore?…&panes=…`), parsed as Grafana parses them.
pub fn explore_panes(url: &str) -> Result<serde_json::Value, String> {
    let path = url.split('?').next().unwrap_or_default();
    if !path.ends_with("/explore") {
        return Err(format!("not an Explore link: {url}"));
    }
    let params = query_params(url);
    let panes = params
        .get("panes")
        .ok_or_else(|| format!("no panes parameter Grafana can read in {url}"))?;
    serde_json::from_str(panes).map_err(|e| format!("panes is not JSON ({e}): {panes}"))
}

/// The string literals of a TraceQL query (`"…"`), unquoted as Go's `strconv.Unquote` does
/// (its numeric escapes, `\x…`, `\u…` and octal, aside: refused here too): an error names a
/// literal with an escape Tempo would refuse.
pub fn traceql_strings(q: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut lit = String::new();
        loop {
            match chars.next() {
                None => return Err(format!("unterminated string in {q}")),
                Some('"') => break,
                Some('\\') => {
                    let e = chars
                        .next()
                        .ok_or_else(|| format!("unterminated string in {q}"))?;
                    lit.push(match e {
                        'a' => '\u{7}',
                        'b' => '\u{8}',
                        'f' => '\u{c}',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'v' => '\u{b}',
                        '\\' => '\\',
                        '"' => '"',
                        other => {
                            return Err(format!(
                                "\\{other} is not an escape of a TraceQL string: {q}"
                            ))
                        }
                    });
                }
                Some(c) => lit.push(c),
            }
        }
        out.push(lit);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_split_before_they_decode() {
        let p = query_params("/explore?a=x%26y&b=1+2&panes={\"q\":\"a && b\"}&c=%E0");
        assert_eq!(p["a"], "x&y");
        assert_eq!(p["b"], "1 2");
        assert_eq!(p["panes"], "{\"q\":\"a ");
        assert!(!p.contains_key("c"), "an undecodable value is dropped");
    }

    #[test]
    fn variables_take_their_format() {
        let vars = BTreeMap::from([
            ("c", Var::Many(vec!["eu.1".into(), "us-2".into()])),
            ("ds", Var::One("a b".into())),
            ("all", Var::All(".*".into())),
        ]);
        assert_eq!(
            interpolate("${c:pipe}|${c:regex}|${ds}|${all:regex}", &vars),
            "eu.1|us-2|(eu\\.1|us-2)|a%20b|.*"
        );
    }

    #[test]
    fn traceql_strings_refuse_escapes_go_refuses() {
        assert_eq!(
            traceql_strings(r#"{ span.a = "x\"y" && span.b =~ "p|q" }"#),
            Ok(vec!["x\"y".to_string(), "p|q".to_string()])
        );
        assert!(traceql_strings(r#"{ span.a =~ "eu\.1" }"#).is_err());
    }
}
