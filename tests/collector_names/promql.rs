//! A PromQL reader (enough to find every metric name, label name and matcher in an expression),
//! and TraceQL's attribute references: what the rules, the dashboard and the alert annotations
//! name, checked against what the agent and the configs produce.

use std::collections::{BTreeMap, BTreeSet};

use fluxtrace::trace::attr::*;
use fluxtrace::trace::Stage;

use super::{label_name, Exposition, Values, SCRAPE_LABELS};

// ---------------------------------------------------------------------------------------------
// A PromQL reader: enough to find every metric name, label name and matcher in an expression.

/// A label matcher: label, operator, value.
pub type Matcher = (String, String, String);

#[derive(Debug, Default)]
pub struct Promql {
    /// Metric name → matchers.
    pub selectors: Vec<(String, Vec<Matcher>)>,
    /// Labels in `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
    pub grouping: BTreeSet<String>,
}

/// The keywords followed by a list of labels.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other words that are not metric names (with [`GROUPING`]).
pub const PROMQL_KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
];

pub fn parse_promql(expr: &str) -> Promql {
    let b: Vec<char> = expr.chars().collect();
    let mut out = Promql::default();
    let mut i = 0;
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let read_string = |i: usize| -> (String, usize) {
        let q = b[i];
        let mut j = i + 1;
        let mut s = String::new();
        while j < b.len() && b[j] != q {
            if b[j] == '\\' && q != '`' && j + 1 < b.len() {
                s.push(b[j]);
                j += 1;
            }
            s.push(b[j]);
            j += 1;
        }
        assert!(j < b.len(), "unterminated string in {expr}");
        (s, j + 1)
    };
    let read_matchers = |mut i: usize| -> (Vec<Matcher>, usize) {
        // b[i] == '{'
        i += 1;
        let mut m = Vec::new();
        loop {
            i = skip_ws(i);
            assert!(i < b.len(), "unterminated matchers in {expr}");
            if b[i] == '}' {
                return (m, i + 1);
            }
            if b[i] == ',' {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let label: String = b[start..i].iter().collect();
            assert!(!label.is_empty(), "a label name at {start} in {expr}");
            i = skip_ws(i);
            let op_start = i;
            while i < b.len() && matches!(b[i], '=' | '!' | '~') {
                i += 1;
            }
            let op: String = b[op_start..i].iter().collect();
            assert!(
                ["=", "!=", "=~", "!~"].contains(&op.as_str()),
                "matcher operator {op:?} in {expr}"
            );
            i = skip_ws(i);
            let (value, next) = read_string(i);
            m.push((label, op, value));
            i = next;
        }
    };
    let mut after_offset = false;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            i = read_string(i).1;
        } else if c == '[' {
            while i < b.len() && b[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // A selector without a metric name.
            let (m, next) = read_matchers(i);
            out.selectors.push((String::new(), m));
            i = next;
        } else if c.is_ascii_digit() || (c == '.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
            after_offset = false;
        } else if ident(c) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if after_offset {
                after_offset = false;
                continue;
            }
            if GROUPING.contains(&lower.as_str()) {
                if next < b.len() && b[next] == '(' {
                    let close = next
                        + b[next..]
                            .iter()
                            .position(|&c| c == ')')
                            .expect("a closing parenthesis");
                    let inner: String = b[next + 1..close].iter().collect();
                    for l in inner.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                        out.grouping.insert(l.to_string());
                    }
                    i = close + 1;
                }
                continue;
            }
            if lower == "offset" {
                after_offset = true;
                continue;
            }
            if PROMQL_KEYWORDS.contains(&lower.as_str())
                || GROUPING.contains(&lower.as_str())
                || (next < b.len() && b[next] == '(')
            {
                continue; // an operator, aggregation or function
            }
            // A metric name, maybe with matchers.
            if next < b.len() && b[next] == '{' {
                let (m, after) = read_matchers(next);
                out.selectors.push((word, m));
                i = after;
            } else {
                out.selectors.push((word, Vec::new()));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Checks an expression against the exposition: known metrics, their labels, real values.
/// Returns the expression's matchers, by label.
pub fn check_promql(
    what: &str,
    expr: &str,
    known: &Exposition,
    values: &Values,
) -> BTreeMap<String, BTreeSet<String>> {
    let q = parse_promql(expr);
    assert!(!q.selectors.is_empty(), "{what}: no metric in {expr}");
    let mut labels_in_use: BTreeSet<String> = SCRAPE_LABELS.iter().map(|s| s.to_string()).collect();
    let mut matched: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, matchers) in &q.selectors {
        let labels = known.get(name).unwrap_or_else(|| {
            panic!(
                "{what}: metric {name:?} is neither a span metric the collector config produces \
                 nor one of the agent's metrics; known: {:?}",
                known.keys().collect::<Vec<_>>()
            )
        });
        labels_in_use.extend(labels.iter().cloned());
        for (label, op, value) in matchers {
            assert!(
                labels.contains(label) || SCRAPE_LABELS.contains(&label.as_str()),
                "{what}: {name} has no label {label:?} (it has {labels:?})"
            );
            values.check(what, label, op, value);
            if !op.starts_with('!') {
                matched
                    .entry(label.clone())
                    .or_default()
                    .extend(value.split('|').map(str::to_string));
            }
        }
    }
    for g in &q.grouping {
        assert!(
            labels_in_use.contains(g),
            "{what}: grouping by {g:?}, a label none of its metrics has ({labels_in_use:?})"
        );
    }
    matched
}

// ---------------------------------------------------------------------------------------------
// TraceQL (dashboard links, alert annotations): attribute names and stage values.

/// The `span.<attr>` and `resource.<attr>` references of a TraceQL query, with the literal
/// compared to each when there is one.
pub fn traceql_refs(q: &str) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for scope in ["span.", "resource."] {
        let mut rest = q;
        while let Some(at) = rest.find(scope) {
            let before = rest[..at].chars().last();
            let after = &rest[at + scope.len()..];
            rest = after;
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_') {
                continue;
            }
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                .unwrap_or(after.len());
            let attr = after[..end].to_string();
            let tail = after[end..].trim_start();
            let tail = tail
                .trim_start_matches(['=', '!', '~', '<', '>'])
                .trim_start();
            let literal = tail
                .strip_prefix('"')
                .and_then(|t| t.find('"').map(|e| t[..e].to_string()));
            out.push((scope.trim_end_matches('.').to_string(), attr, literal));
        }
    }
    out
}

pub fn check_traceql(what: &str, q: &str, emitted: &BTreeMap<String, BTreeSet<String>>) {
    let refs = traceql_refs(q);
    assert!(!refs.is_empty(), "{what}: no attribute in TraceQL {q}");
    let stages: BTreeSet<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
    for (scope, attr, literal) in refs {
        if scope == "resource" {
            assert!(
                [SERVICE_NAME, K8S_CLUSTER_NAME].contains(&attr.as_str()),
                "{what}: resource.{attr} is not a resource attribute of the agent's spans"
            );
        } else {
            assert!(
                emitted.contains_key(&attr),
                "{what}: span.{attr} is not an attribute the agent emits (TraceQL {q})"
            );
        }
        if let Some(v) = literal.filter(|v| !v.contains('$')) {
            let allowed: BTreeSet<String> =
                if attr == DELIVERY_STAGE || attr == DELIVERY_DIVERGENCE_STAGE {
                    stages.iter().map(|s| s.to_string()).collect()
                } else if let Some(seen) = Values::new().known.get(&label_name(&attr)) {
                    seen.clone()
                } else {
                    continue;
                };
            for alt in v.split('|') {
                assert!(
                    allowed.contains(alt),
                    "{what}: {attr} = {alt:?} is never emitted ({allowed:?})"
                );
            }
        }
    }
}

pub fn stages_in(matched: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<Stage> {
    let mut out = BTreeSet::new();
    for s in Stage::ALL {
        if matched
            .get(&label_name(DELIVERY_STAGE))
            .is_some_and(|v| v.contains(s.as_str()))
            || matched
                .get("span_name")
                .is_some_and(|v| v.contains(s.span_name()))
        {
            out.insert(s);
        }
    }
    out
}
