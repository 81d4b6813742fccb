//! The terminal waterfall: one row per span, bars on a shared time axis, failures marked.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::trace::{SpanId, SpanRecord, SpanStatus};

/// Width of the bar column, in characters.
const BAR_WIDTH: usize = 40;

/// Renders the spans of one trace (any order) as a tree with bars.
pub fn render(spans: &[SpanRecord]) -> String {
    super::terminal_safe(&render_raw(spans)).into_owned()
}

fn render_raw(spans: &[SpanRecord]) -> String {
    let mut out = String::new();
    let Some(t0) = spans.iter().map(|s| s.start).min() else {
        return out;
    };
    let t1 = spans.iter().map(|s| s.end).max().unwrap_or(t0);
    let total = t1.duration_since(t0).as_secs_f64().max(1e-3);
    let ids: HashMap<SpanId, &SpanRecord> = spans.iter().map(|s| (s.span_id, s)).collect();
    let mut children: HashMap<Option<SpanId>, Vec<&SpanRecord>> = HashMap::new();
    for s in spans {
        let parent = s.parent_span_id.filter(|p| ids.contains_key(p));
        children.entry(parent).or_default().push(s);
    }
    for list in children.values_mut() {
        // Of spans that start together, the one that ends first is the earlier step.
        list.sort_by_key(|s| (s.start, s.end, s.name, s.span_id));
    }
    let _ = writeln!(
        out,
        "  {:<34} {:<w$}  {:>8}",
        format!("trace {}", spans[0].trace_id),
        format!("0s{:>w2$}", fmt_secs(total), w2 = BAR_WIDTH - 2),
        "took",
        w = BAR_WIDTH
    );
    let mut stack: Vec<(&SpanRecord, usize)> = children
        .get(&None)
        .map(|v| v.iter().rev().map(|s| (*s, 0)).collect())
        .unwrap_or_default();
    while let Some((s, depth)) = stack.pop() {
        let from = s.start.duration_since(t0).as_secs_f64() / total;
        let to = s.end.duration_since(t0).as_secs_f64() / total;
        let a = ((from * BAR_WIDTH as f64).floor() as usize).min(BAR_WIDTH - 1);
        let b = ((to * BAR_WIDTH as f64).ceil() as usize).clamp(a + 1, BAR_WIDTH);
        let failed = matches!(s.status, SpanStatus::Error { .. });
        let fill = if failed { '▓' } else { '█' };
        let bar: String = (0..BAR_WIDTH)
            .map(|i| if i >= a && i < b { fill } else { '·' })
            .collect();
        let what = s
            .attributes
            .get_str("k8s.deployment.name")
            .or(s.attributes.get_str("flux.object.name"))
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let label: String = format!("{}{}{}", "  ".repeat(depth), s.name, what)
            .chars()
            .take(34)
            .collect();
        let mark = if failed { " ✗" } else { "" };
        let took = fmt_secs(s.end.duration_since(s.start).as_secs_f64());
        let _ = writeln!(out, "  {label:<34} {bar}  {took:>8}{mark}");
        if let Some(kids) = children.get(&Some(s.span_id)) {
            for k in kids.iter().rev() {
                stack.push((k, depth + 1));
            }
        }
    }
    out
}

fn fmt_secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
}
