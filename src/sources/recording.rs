//! The JSON Lines recording format (docs/design.md, "Recording format"): one observation a line.
//!
//! ```text
//! {"at":"…","kind":"watch","type":"ADDED|MODIFIED|DELETED","object":{…}}
//! {"at":"…","kind":"promotion","promotion":{…}}
//! {"at":"…","kind":"flux_event","event":{…}}
//! {"at":"…","kind":"probe_result","result":{…}}   (a traffic probe's outcome)
//! ```
//!
//! Each line decodes on its own; a bad line is reported with its number and skipped, and never
//! stops the lines after it. Unknown line kinds, object kinds and fields are ignored.

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{flux_event, object, promotion};
use crate::model::{DeliveryEvent, EventBody};

/// Lines longer than this are rejected before parsing (Flux messages reach 39,000
/// characters; whole objects stay far below this).
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Why one line was rejected.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `at` is not an RFC 3339 timestamp: {0}")]
    BadTime(String),
    #[error("{kind} line has no `{field}`")]
    MissingPayload {
        kind: &'static str,
        field: &'static str,
    },
    #[error("watch `type` must be ADDED, MODIFIED or DELETED, not {0:?}")]
    WatchType(String),
    #[error("watch object does not decode: {0}")]
    ObjectJson(#[source] serde_json::Error),
    #[error(transparent)]
    Object(#[from] object::ObjectError),
    #[error(transparent)]
    Promotion(#[from] promotion::ReportError),
    #[error(transparent)]
    FluxEvent(#[from] flux_event::FluxEventError),
    #[error("line is {0} bytes, over the {MAX_LINE_BYTES}-byte limit")]
    TooLong(usize),
    #[error("probe result does not decode: {0}")]
    ProbeResult(#[source] serde_json::Error),
}

impl LineError {
    /// A bounded label for metrics and summaries.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LineError::Json(_) => "invalid_json",
            LineError::Missing(_) | LineError::MissingPayload { .. } => "missing_field",
            LineError::BadTime(_) => "invalid_time",
            LineError::WatchType(_) => "invalid_watch_type",
            LineError::ObjectJson(_) | LineError::Object(_) => "invalid_object",
            LineError::Promotion(_) => "invalid_promotion",
            LineError::FluxEvent(_) => "invalid_flux_event",
            LineError::TooLong(_) => "too_long",
            LineError::ProbeResult(_) => "invalid_probe_result",
        }
    }
}

#[derive(Deserialize)]
struct RawLine<'a> {
    #[serde(borrow, default)]
    at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    kind: Option<&'a str>,
    #[serde(borrow, default, rename = "type")]
    type_: Option<&'a str>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    promotion: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
}

/// Decodes one line. `Ok(None)` for lines that carry nothing fluxtrace follows (unknown line
/// kinds or object kinds, blank lines).
pub fn decode_line(line: &str) -> Result<Option<DeliveryEvent>, LineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong(line.len()));
    }
    if line.trim().is_empty() {
        return Ok(None);
    }
    let raw: RawLine<'_> = serde_json::from_str(line).map_err(LineError::Json)?;
    let at = raw.at.ok_or(LineError::Missing("at"))?;
    let at: Timestamp = serde_json::from_str(at.get())
        .map_err(|_| LineError::BadTime(at.get().chars().take(64).collect()))?;
    let at = crate::model::sane_time(at);
    let kind = raw.kind.ok_or(LineError::Missing("kind"))?;
    let body = match kind {
        "watch" => {
            let deleted = match raw.type_ {
                Some("ADDED" | "MODIFIED") => false,
                Some("DELETED") => true,
                Some(other) => return Err(LineError::WatchType(other.chars().take(32).collect())),
                None => {
                    return Err(LineError::MissingPayload {
                        kind: "watch",
                        field: "type",
                    })
                }
            };
            let obj = raw.object.ok_or(LineError::MissingPayload {
                kind: "watch",
                field: "object",
            })?;
            let obj: object::KubeObject =
                serde_json::from_str(obj.get()).map_err(LineError::ObjectJson)?;
            object::to_event(obj, deleted)?
        }
        "promotion" => {
            let p = raw.promotion.ok_or(LineError::MissingPayload {
                kind: "promotion",
                field: "promotion",
            })?;
            Some(EventBody::Promotion(promotion::decode(p.get())?))
        }
        "probe_result" => {
            let r = raw.result.ok_or(LineError::MissingPayload {
                kind: "probe_result",
                field: "result",
            })?;
            let result: crate::model::ProbeResult =
                serde_json::from_str(r.get()).map_err(LineError::ProbeResult)?;
            Some(EventBody::ProbeResult(result))
        }
        "flux_event" => {
            let e = raw.event.ok_or(LineError::MissingPayload {
                kind: "flux_event",
                field: "event",
            })?;
            flux_event::decode(e.get())?.map(EventBody::FluxEvent)
        }
        _ => None,
    };
    Ok(body.map(|body| DeliveryEvent { at, body }))
}

/// A rejected line of a recording.
#[derive(Debug)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    pub error: LineError,
}

/// The decoded observations of a whole recording, and the lines that were rejected.
#[derive(Debug, Default)]
pub struct Decoded {
    pub events: Vec<DeliveryEvent>,
    pub bad: Vec<BadLine>,
    /// Lines that decoded but carry nothing fluxtrace follows.
    pub ignored: usize,
}

/// Decodes every line of a recording.
pub fn decode_all(text: &str) -> Decoded {
    let mut out = Decoded::default();
    for (i, line) in text.lines().enumerate() {
        match decode_line(line) {
            Ok(Some(ev)) => out.events.push(ev),
            Ok(None) => out.ignored += 1,
            Err(error) => out.bad.push(BadLine { line: i + 1, error }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases = [
            ("{", "not valid JSON"),
            (r#"{"kind":"watch"}"#, "missing field `at`"),
            (r#"{"at":"2026-11-26T10:00:00Z"}"#, "missing field `kind`"),
            (r#"{"at":"noon","kind":"watch"}"#, "not an RFC 3339"),
            (
                r#"{"at":"2026-11-26T10:00:00Z","kind":"watch","type":"ADDED"}"#,
                "no `object`",
            ),
            (
                r#"{"at":"2026-11-26T10:00:00Z","kind":"watch","type":"BOOM","object":{}}"#,
                "ADDED, MODIFIED or DELETED",
            ),
            (
                r#"{"at":"2026-11-26T10:00:00Z","kind":"watch","type":"ADDED","object":{"kind":"Deployment","metadata":{}}}"#,
                "Deployment object has no metadata.name",
            ),
            (
                r#"{"at":"2026-11-26T10:00:00Z","kind":"watch","type":"ADDED","object":{"kind":"Deployment","metadata":{"name":"a","generation":"two"}}}"#,
                "does not decode",
            ),
            (
                r#"{"at":"2026-11-26T10:00:00Z","kind":"promotion","promotion":{"id":"P"}}"#,
                "environment",
            ),
        ];
        for (line, want) in cases {
            let e = decode_line(line).expect_err(line);
            assert!(e.to_string().contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn unknown_kinds_are_ignored_not_errors() {
        let lines = [
            r#"{"at":"2026-11-26T10:00:00Z","kind":"heartbeat"}"#,
            r#"{"at":"2026-11-26T10:00:00Z","kind":"watch","type":"ADDED","object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}}"#,
            "",
        ];
        for line in lines {
            assert!(decode_line(line).expect(line).is_none(), "{line}");
        }
    }

    #[test]
    fn decode_all_numbers_bad_lines_and_keeps_going() {
        let text = "{\n{\"at\":\"2026-11-26T10:00:00Z\",\"kind\":\"watch\",\"type\":\"DELETED\",\"object\":{\"kind\":\"Deployment\",\"metadata\":{\"name\":\"a\",\"namespace\":\"n\"}}}\nnope\n";
        let d = decode_all(text);
        assert_eq!(d.events.len(), 1);
        assert_eq!(d.bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![1, 3]);
        assert!(matches!(&d.events[0].body, EventBody::Deleted(o) if o.kind == Kind::Deployment));
    }
}
