//! The JSON Lines recording format (docs/design.md, "Recording format"): one observation a line.
//!
//! ```text
//! {"at":"…","kind":"watch","type":"ADDED|MODIFIED|DELETED","object":{…}}
//! {"at":"…","kind":"promotion","promotion":{…}}
//! {"at":"…","kind":"flux_event","event":{…}}
//! {"at":"…","kind":"probe_result","result":{…}}   (a traffic probe's outcome)
//! {"at":"…","kind":"synced"}                       (every initial list is in)
//! ```
//!
//! A `synced` line marks where the agent that made the recording had every initial list in:
//! what comes before it is the state the cluster was in when the agent started, and a replay
//! holds it as the live agent does (`Engine::hold`).
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
    #[error("field `at` is out of range (years 1 to 9999, not the last day of 9999): {0}")]
    TimeOutOfRange(String),
    #[error("not UTF-8")]
    NotUtf8,
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
            LineError::BadTime(_) | LineError::TimeOutOfRange(_) => "invalid_time",
            LineError::NotUtf8 => "not_utf8",
            LineError::WatchType(_) => "invalid_watch_type",
            LineError::ObjectJson(_) | LineError::Object(_) => "invalid_object",
            LineError::Promotion(_) => "invalid_promotion",
            LineError::FluxEvent(_) => "invalid_flux_event",
            LineError::TooLong(_) => "too_long",
            LineError::ProbeResult(_) => "invalid_probe_result",
        }
    }
}

/// A line's fields. `O` is how its object is read: decoded in the same pass
/// ([`object::RawKubeObject`]), or kept as raw JSON to be decoded on its own (`&RawValue`),
/// which tells an invalid object from an invalid line.
#[derive(Deserialize)]
#[serde(bound(deserialize = "O: Deserialize<'de>"))]
struct RawLine<'a, O> {
    #[serde(borrow, default)]
    at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    kind: Option<&'a str>,
    #[serde(borrow, default, rename = "type")]
    type_: Option<&'a str>,
    #[serde(default)]
    object: Option<O>,
    #[serde(borrow, default)]
    promotion: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
}

/// What one line carries.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one a line, consumed at once: boxing would cost a line
pub enum Line {
    /// An observation.
    Event(DeliveryEvent),
    /// Every initial list is in (`kind: synced`).
    Synced,
    /// Nothing fluxtrace follows (unknown line kinds or object kinds, blank lines).
    Ignored,
}

/// Decodes one line. `Ok(None)` for lines that carry nothing fluxtrace follows (unknown line
/// kinds or object kinds, blank lines) and for the `synced` marker ([`decode_line_kind`] tells
/// them apart).
pub fn decode_line(line: &str) -> Result<Option<DeliveryEvent>, LineError> {
    Ok(match decode_line_kind(line)? {
        Line::Event(ev) => Some(ev),
        Line::Synced | Line::Ignored => None,
    })
}

/// Decodes one line, telling the `synced` marker from lines that carry nothing.
pub fn decode_line_kind(line: &str) -> Result<Line, LineError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineError::TooLong(line.len()));
    }
    if line.trim().is_empty() {
        return Ok(Line::Ignored);
    }
    // One pass over the line, its object included; a line that fails it is read again in
    // two, so that the error names what is wrong.
    if let Ok(raw) = serde_json::from_str::<RawLine<'_, object::RawKubeObject>>(line) {
        return decode_fields(raw, Ok);
    }
    let raw: RawLine<'_, &RawValue> = serde_json::from_str(line).map_err(LineError::Json)?;
    decode_fields(raw, |obj| {
        serde_json::from_str(obj.get()).map_err(LineError::ObjectJson)
    })
}

fn decode_fields<O>(
    raw: RawLine<'_, O>,
    object: impl FnOnce(O) -> Result<object::RawKubeObject, LineError>,
) -> Result<Line, LineError> {
    let at = raw.at.ok_or(LineError::Missing("at"))?;
    let at: Timestamp = serde_json::from_str(at.get()).map_err(|_| {
        let shown: String = at.get().chars().take(64).collect();
        // Well-formed, but beyond what a timestamp holds (jiff's range ends a day before
        // 10000-01-01 so that every offset fits).
        let well_formed = serde_json::from_str::<&str>(at.get())
            .ok()
            .and_then(|s| {
                jiff::fmt::temporal::DateTimeParser::new()
                    .parse_pieces(s)
                    .ok()
            })
            .is_some();
        if well_formed {
            LineError::TimeOutOfRange(shown)
        } else {
            LineError::BadTime(shown)
        }
    })?;
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
            object::raw_to_event(object(obj)?, deleted)?
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
        "synced" => return Ok(Line::Synced),
        _ => None,
    };
    Ok(body.map_or(Line::Ignored, |body| {
        Line::Event(DeliveryEvent { at, body })
    }))
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
    /// How many of `events` came before the first `synced` line: the initial state the
    /// recording's agent listed at its start. `None` without one (the recording starts with
    /// the agent already watching).
    pub synced: Option<usize>,
}

/// Decodes every line of a recording.
pub fn decode_all(text: &str) -> Decoded {
    // Reading from memory cannot fail.
    decode_reader(text.as_bytes()).unwrap_or_default()
}

/// Decodes a recording as it is read, a line at a time: a line that is not UTF-8 is rejected
/// by itself (`NotUtf8`), and a line over [`MAX_LINE_BYTES`] is skipped while it is read,
/// never held whole. Fails only when reading fails.
pub fn decode_reader(mut r: impl std::io::BufRead) -> std::io::Result<Decoded> {
    let mut out = Decoded::default();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let (len, complete) = read_line_bounded(&mut r, &mut line, MAX_LINE_BYTES)?;
        if len == 0 {
            break;
        }
        number += 1;
        let decoded = if !complete {
            Err(LineError::TooLong(len))
        } else {
            let bytes = line.strip_suffix(b"\n").unwrap_or(&line);
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            match std::str::from_utf8(bytes) {
                Ok(text) => decode_line_kind(text),
                Err(_) => Err(LineError::NotUtf8),
            }
        };
        match decoded {
            Ok(Line::Event(ev)) => out.events.push(ev),
            Ok(Line::Synced) => {
                out.synced.get_or_insert(out.events.len());
            }
            Ok(Line::Ignored) => out.ignored += 1,
            Err(error) => out.bad.push(BadLine {
                line: number,
                error,
            }),
        }
    }
    Ok(out)
}

/// Reads one line (with its newline) into `buf`, keeping at most `max` bytes: returns the
/// line's whole length and whether it was kept whole. 0 at the end of the input.
fn read_line_bounded(
    r: &mut impl std::io::BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut len = 0;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((len, len <= max));
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if len + take <= max + 1 {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            // Over the limit: the rest of the line is counted, not kept.
            buf.clear();
        }
        len += take;
        r.consume(take);
        if done {
            let body = len - 1;
            return Ok((len, body <= max));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    #[test]
    fn a_line_that_is_not_utf8_or_too_long_is_rejected_alone() {
        let good = r#"{"at":"2026-11-26T10:00:00Z","kind":"something-else"}"#;
        let mut input = Vec::new();
        input.extend_from_slice(good.as_bytes());
        input.extend_from_slice(b"\n{\"at\":\"\xff\"}\n");
        input.extend_from_slice(&vec![b'x'; MAX_LINE_BYTES + 10]);
        input.push(b'\n');
        input.extend_from_slice(good.as_bytes());
        // A small buffer: the long line arrives in many pieces, and is never held whole.
        let d = decode_reader(std::io::BufReader::with_capacity(4096, &input[..])).expect("read");
        assert_eq!(d.ignored, 2, "both good lines are read");
        let bad: Vec<(usize, String)> = d
            .bad
            .iter()
            .map(|b| (b.line, b.error.to_string()))
            .collect();
        assert_eq!(bad[0], (2, "not UTF-8".to_string()));
        assert_eq!(bad[1].0, 3);
        assert!(bad[1].1.contains("over the"), "{}", bad[1].1);
        assert_eq!(bad.len(), 2);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let cases = [
            ("{", "not valid JSON"),
            (r#"{"kind":"watch"}"#, "missing field `at`"),
            (r#"{"at":"2026-11-26T10:00:00Z"}"#, "missing field `kind`"),
            (r#"{"at":"noon","kind":"watch"}"#, "not an RFC 3339"),
            (
                r#"{"at":"9999-12-31T23:59:59Z","kind":"watch"}"#,
                "out of range",
            ),
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
    fn a_synced_line_marks_the_end_of_the_initial_state() {
        let dep = r#"{"at":"2026-11-26T10:00:00Z","kind":"watch","type":"DELETED","object":{"kind":"Deployment","metadata":{"name":"a","namespace":"n"}}}"#;
        let synced = r#"{"at":"2026-11-26T10:00:00Z","kind":"synced"}"#;
        let text = [dep, dep, synced, dep, synced].join("\n");
        let d = decode_all(&text);
        assert_eq!(d.events.len(), 3);
        assert_eq!(d.synced, Some(2), "the first marker counts");
        assert_eq!(d.ignored, 0);
        assert!(decode_all(dep).synced.is_none());
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
