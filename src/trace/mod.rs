//! Finished spans as the engine emits them, and the deterministic ids they carry.
//!
//! Sits between `correlate` (which builds [`SpanRecord`]s) and `export` / `story` (which ship
//! and print them). Pure data: no clock, no randomness, no OpenTelemetry SDK types, so the
//! engine stays free of IO and every id is reproducible (docs/design.md, "Ids").

use std::borrow::Cow;
use std::fmt;

use jiff::Timestamp;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub mod attr;

/// A 16-byte trace id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for TraceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for SpanId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The trace id of a promotion that has no CI trace context: the first 16 bytes of
/// SHA-256(`"fluxtrace/v1/trace/" + promotion id`).
pub fn trace_id_for(promotion_id: &str) -> TraceId {
    let digest = Sha256::new()
        .chain_update(b"fluxtrace/v1/trace/")
        .chain_update(promotion_id.as_bytes())
        .finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    TraceId(id)
}

/// A span id: the first 8 bytes of SHA-256 over (promotion id, stage, cluster name, object uid,
/// attempt key), each field followed by a NUL byte so that no two tuples hash alike.
pub fn span_id_for(
    promotion_id: &str,
    stage: Stage,
    cluster: &str,
    object_uid: &str,
    attempt: &str,
) -> SpanId {
    let mut h = Sha256::new();
    for part in [promotion_id, stage.as_str(), cluster, object_uid, attempt] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    SpanId(id)
}

/// A W3C `traceparent` that failed to parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid traceparent {value:?}: {reason}")]
pub struct TraceparentError {
    pub value: String,
    pub reason: &'static str,
}

/// The CI span a promotion root becomes a child of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Traceparent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl Traceparent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>` (W3C Trace Context, level 1).
    pub fn parse(value: &str) -> Result<Traceparent, TraceparentError> {
        let err = |reason| TraceparentError {
            value: value.chars().take(80).collect(),
            reason,
        };
        let parts: Vec<&str> = value.trim().split('-').collect();
        // A later version may append fields; its first four are read as version 00's (W3C
        // Trace Context, "Versioning of traceparent").
        let [version, trace, span, flags, ..] = parts[..] else {
            return Err(err("expected 4 dash-separated fields"));
        };
        let lower_hex = |s: &str, n: usize| {
            s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !lower_hex(version, 2) || version == "ff" {
            return Err(err("version must be 2 lower-case hex digits, not ff"));
        }
        if version == "00" && parts.len() != 4 {
            return Err(err("version 00 has exactly 4 fields"));
        }
        if !lower_hex(trace, 32) || trace.bytes().all(|b| b == b'0') {
            return Err(err(
                "trace id must be 32 lower-case hex digits, not all zero",
            ));
        }
        if !lower_hex(span, 16) || span.bytes().all(|b| b == b'0') {
            return Err(err(
                "parent id must be 16 lower-case hex digits, not all zero",
            ));
        }
        if !lower_hex(flags, 2) {
            return Err(err("flags must be 2 lower-case hex digits"));
        }
        let mut t = [0u8; 16];
        let mut s = [0u8; 8];
        hex::decode_to_slice(trace, &mut t).map_err(|_| err("trace id is not hex"))?;
        hex::decode_to_slice(span, &mut s).map_err(|_| err("parent id is not hex"))?;
        let f = u8::from_str_radix(flags, 16).map_err(|_| err("flags are not hex"))?;
        Ok(Traceparent {
            trace_id: TraceId(t),
            span_id: SpanId(s),
            sampled: f & 1 == 1,
        })
    }
}

/// The stages of the delivery path, in path order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Promotion,
    /// Flux image automation: a policy selected a new image tag, the automation pushed a commit.
    Image,
    Trigger,
    Source,
    Reconcile,
    Apply,
    Rollout,
    Traffic,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Promotion,
        Stage::Image,
        Stage::Trigger,
        Stage::Source,
        Stage::Reconcile,
        Stage::Apply,
        Stage::Rollout,
        Stage::Traffic,
    ];

    /// The value of `delivery.stage` and of `delivery.divergence.stage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Promotion => "promotion",
            Stage::Image => "image",
            Stage::Trigger => "trigger",
            Stage::Source => "source",
            Stage::Reconcile => "reconcile",
            Stage::Apply => "apply",
            Stage::Rollout => "rollout",
            Stage::Traffic => "traffic",
        }
    }

    /// The fixed span name (low cardinality: span metrics group by it).
    pub fn span_name(self) -> &'static str {
        match self {
            Stage::Promotion => "promotion",
            Stage::Image => "image.update",
            Stage::Trigger => "trigger",
            Stage::Source => "source.fetch",
            Stage::Reconcile => "reconcile",
            Stage::Apply => "apply",
            Stage::Rollout => "rollout",
            Stage::Traffic => "traffic.probe",
        }
    }

    /// `delivery.plane`: control plane up to apply, data plane after.
    pub fn plane(self) -> &'static str {
        match self {
            Stage::Rollout | Stage::Traffic => "data",
            _ => "control",
        }
    }
}

/// How a span ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum SpanStatus {
    Unset,
    Ok,
    Error { description: String },
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AttrValue {
    /// Borrowed for the fixed values (`Warning`, a stage name): no allocation for those.
    Str(Cow<'static, str>),
    Int(i64),
    Bool(bool),
    StrArray(Vec<String>),
}

impl From<&'static str> for AttrValue {
    fn from(v: &'static str) -> Self {
        AttrValue::Str(Cow::Borrowed(v))
    }
}

impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(Cow::Owned(v))
    }
}

impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}

impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}

impl From<Vec<String>> for AttrValue {
    fn from(v: Vec<String>) -> Self {
        AttrValue::StrArray(v)
    }
}

/// Ordered attributes; keys are the constants of [`attr`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes(pub Vec<(&'static str, AttrValue)>);

impl Attributes {
    /// Sets `key`, replacing an earlier value.
    pub fn set(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Sets `key` when `value` is present.
    pub fn set_opt(&mut self, key: &'static str, value: Option<impl Into<AttrValue>>) {
        if let Some(v) = value {
            self.set(key, v);
        }
    }

    pub fn get(&self, key: &str) -> Option<&AttrValue> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(AttrValue::Str(s)) => Some(s),
            _ => None,
        }
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A span event (a Kubernetes Event or Flux event on the span it belongs to).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpanEventRecord {
    /// Borrowed for the reasons controllers commonly give: no allocation for those.
    pub name: Cow<'static, str>,
    #[serde(with = "ts")]
    pub time: Timestamp,
    pub attributes: Attributes,
}

/// A link to a span in another trace (a superseded promotion links to its successor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpanLinkRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub attributes: Attributes,
}

/// The OpenTelemetry span kind: `Server` for a promotion's root (a pipeline run, as the CI/CD
/// semantic conventions give), `Internal` for its stages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    #[default]
    Internal,
    Server,
}

impl SpanKind {
    fn is_internal(&self) -> bool {
        *self == SpanKind::Internal
    }
}

/// A finished span, ready to export or print.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    /// `service.name` of the resource this span is exported under.
    #[serde(rename = "service.name")]
    pub service: &'static str,
    pub name: &'static str,
    #[serde(skip_serializing_if = "SpanKind::is_internal")]
    pub kind: SpanKind,
    #[serde(with = "ts")]
    pub start: Timestamp,
    #[serde(with = "ts")]
    pub end: Timestamp,
    pub status: SpanStatus,
    pub attributes: Attributes,
    pub events: Vec<SpanEventRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<SpanLinkRecord>,
}

impl SpanRecord {
    pub fn stage(&self) -> Option<&str> {
        self.attributes.get_str(attr::DELIVERY_STAGE)
    }

    pub fn is_error(&self) -> bool {
        matches!(self.status, SpanStatus::Error { .. })
    }
}

mod ts {
    use jiff::Timestamp;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_id_is_first_16_bytes_of_sha256() {
        let expect = Sha256::digest(b"fluxtrace/v1/trace/P-2026-11-26-42");
        assert_eq!(trace_id_for("P-2026-11-26-42").0[..], expect[..16]);
    }

    #[test]
    fn span_ids_differ_by_every_field() {
        let base = span_id_for("P", Stage::Rollout, "c", "uid", "3");
        assert_ne!(base, span_id_for("P2", Stage::Rollout, "c", "uid", "3"));
        assert_ne!(base, span_id_for("P", Stage::Reconcile, "c", "uid", "3"));
        assert_ne!(base, span_id_for("P", Stage::Rollout, "c2", "uid", "3"));
        assert_ne!(base, span_id_for("P", Stage::Rollout, "c", "uid2", "3"));
        assert_ne!(base, span_id_for("P", Stage::Rollout, "c", "uid", "4"));
        assert_ne!(
            span_id_for("ab", Stage::Rollout, "c", "", ""),
            span_id_for("a", Stage::Rollout, "bc", "", "")
        );
        assert_eq!(base, span_id_for("P", Stage::Rollout, "c", "uid", "3"));
    }

    #[test]
    fn traceparent_parses_and_rejects() {
        let tp = Traceparent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id.to_string(), "00f067aa0ba902b7");
        assert!(tp.sampled);
        let newer = Traceparent::parse(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next",
        )
        .expect("a newer version with more fields");
        assert_eq!(newer, tp);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(Traceparent::parse(bad).is_err(), "{bad:?}");
        }
    }
}
