//! Flux events as notification-controller forwards them to a `generic` or `generic-hmac`
//! provider (and as recordings carry them in `flux_event` lines).
//!
//! Both metadata shapes are accepted: the prefix-stripped one notification-controller sends
//! (`"revision"`, `"promotion-id"`) and the group-prefixed one Flux's docs still show
//! (`"kustomize.toolkit.fluxcd.io/revision"`, `"event.toolkit.fluxcd.io/promotion-id"`).

use jiff::Timestamp;
use serde::Deserialize;

use crate::model::{FluxEventObs, Kind, ObjectRef, FLUX_EVENT_PROMOTION_KEY};

/// Why a Flux event was rejected.
#[derive(Debug, thiserror::Error)]
pub enum FluxEventError {
    #[error("Flux event is not valid: {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("Flux event has no {0}")]
    Missing(&'static str),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFluxEvent {
    involved_object: RawInvolved,
    #[serde(default)]
    severity: String,
    timestamp: Option<Timestamp>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    metadata: Option<super::raw::StringMap>,
    #[serde(default)]
    reporting_controller: String,
}

#[derive(Debug, Deserialize)]
struct RawInvolved {
    kind: Option<String>,
    name: Option<String>,
    #[serde(default)]
    namespace: String,
}

/// Decodes one Flux event body. `Ok(None)` when it is about a kind fluxtrace does not follow.
pub fn decode(json: &str) -> Result<Option<FluxEventObs>, FluxEventError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let raw: RawFluxEvent =
        serde_path_to_error::deserialize(de).map_err(|e| FluxEventError::Invalid {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    let kind = raw
        .involved_object
        .kind
        .filter(|k| !k.is_empty())
        .ok_or(FluxEventError::Missing("involvedObject.kind"))?;
    let name = raw
        .involved_object
        .name
        .filter(|k| !k.is_empty())
        .ok_or(FluxEventError::Missing("involvedObject.name"))?;
    let time = crate::model::sane_time(raw.timestamp.ok_or(FluxEventError::Missing("timestamp"))?);
    let Some(kind) = Kind::parse(&kind) else {
        return Ok(None);
    };
    let mut revision = None;
    let mut promotion_id = None;
    for (k, v) in raw.metadata.unwrap_or_default() {
        match k.as_str() {
            "revision" => revision = Some(v),
            "promotion-id" | FLUX_EVENT_PROMOTION_KEY => promotion_id = Some(v),
            _ if k.ends_with(".toolkit.fluxcd.io/revision") => revision = revision.or(Some(v)),
            _ => {}
        }
    }
    let promotion_id = promotion_id.filter(|p| !p.is_empty());
    if let Some(reason) = promotion_id
        .as_deref()
        .and_then(super::promotion::id_problem)
    {
        return Err(FluxEventError::Invalid {
            path: "metadata.promotion-id".into(),
            message: reason,
        });
    }
    Ok(Some(FluxEventObs {
        object: ObjectRef::new(kind, raw.involved_object.namespace, name),
        error: raw.severity == "error",
        time,
        reason: raw.reason,
        message: raw.message,
        revision,
        promotion_id,
        controller: raw.reporting_controller,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: &str = include_str!("../../tests/fixtures/flux-event-generic-provider.json");
    const DOCS: &str =
        include_str!("../../tests/fixtures/flux-event-generic-provider.docs-example.json");

    #[test]
    fn decodes_the_stripped_shape_notification_controller_sends() {
        let ev = decode(SHARED).expect("valid").expect("followed kind");
        assert_eq!(
            ev.object,
            ObjectRef::new(Kind::Kustomization, "flux-system", "apps")
        );
        assert_eq!(
            ev.revision.as_deref(),
            Some("main@sha1:450796ddb2ab6724ee1cc32a4be56da032d1cca0")
        );
        assert!(!ev.error);
        assert_eq!(ev.controller, "kustomize-controller");
    }

    #[test]
    fn decodes_the_prefixed_shape_of_the_docs() {
        let ev = decode(DOCS).expect("valid").expect("followed kind");
        assert_eq!(
            ev.revision.as_deref(),
            Some("main/731f7eaddfb6af01cb2173e18f0f75b0ba780ef1")
        );
        assert!(ev.error);
        assert_eq!(ev.reason, "ValidationFailed");
    }

    #[test]
    fn promotion_id_with_or_without_prefix() {
        for key in ["promotion-id", "event.toolkit.fluxcd.io/promotion-id"] {
            let body = format!(
                r#"{{"involvedObject":{{"kind":"Kustomization","name":"a","namespace":"n"}},
                "severity":"info","timestamp":"2026-11-26T10:00:00Z","reason":"Progressing",
                "message":"m","metadata":{{"{key}":"P-1"}}}}"#
            );
            let ev = decode(&body).expect("valid").expect("followed");
            assert_eq!(ev.promotion_id.as_deref(), Some("P-1"), "{key}");
        }
    }

    #[test]
    fn a_promotion_id_is_checked_as_a_report_id_is() {
        for bad in [
            "x".repeat(900_000),
            "P-\u{1b}[2J".into(),
            "P-\u{202e}1".into(),
        ] {
            let body = serde_json::json!({
                "involvedObject": {"kind": "Kustomization", "name": "a", "namespace": "n"},
                "severity": "info", "timestamp": "2026-11-26T10:00:00Z",
                "reason": "Progressing", "message": "m", "metadata": {"promotion-id": bad}
            })
            .to_string();
            let e = decode(&body).expect_err("refused");
            assert!(e.to_string().contains("metadata.promotion-id"), "{e}");
            assert!(e.to_string().contains("printable"), "{e}");
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let e = decode(r#"{"involvedObject":{"name":"a"},"timestamp":"2026-11-26T10:00:00Z"}"#)
            .expect_err("no kind");
        assert_eq!(e.to_string(), "Flux event has no involvedObject.kind");
        let e = decode(r#"{"involvedObject":{"kind":"Kustomization","name":"a"}}"#)
            .expect_err("no time");
        assert_eq!(e.to_string(), "Flux event has no timestamp");
        let e = decode(r#"{"involvedObject":{"kind":"Kustomization","name":"a"},"timestamp":5}"#)
            .expect_err("bad type");
        assert!(e.to_string().contains("timestamp"), "{e}");
        let e = decode(r#"{"timestamp":"2026-11-26T10:00:00Z"}"#).expect_err("no object");
        assert!(e.to_string().contains("involvedObject"), "{e}");
    }
}
