//! Promotion reports: decoded, then validated, so that nothing malformed reaches the engine.
//!
//! The same checks serve the HTTP and gRPC intake, `fluxtrace promote` and recordings.

use crate::model::PromotionReport;
use crate::revision;
use crate::trace::Traceparent;

/// Why a promotion report was rejected. The message names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("promotion report is not valid JSON or has a wrong type: {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("promotion report field `{0}` is required")]
    Missing(&'static str),
    #[error("promotion report field `{field}` is invalid: {reason}")]
    Field { field: &'static str, reason: String },
}

impl ReportError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReportError::Invalid { .. } => "invalid_json",
            ReportError::Missing(_) => "missing_field",
            ReportError::Field { .. } => "invalid_field",
        }
    }
}

/// Longest promotion id, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Why `id` cannot be a promotion id; `None` when it can. The one check for every place an id
/// enters: reports (HTTP, gRPC, `fluxtrace promote`), Flux event metadata, annotations and
/// Kubernetes Events, so that none can carry more (a megabyte, a terminal escape) than another.
pub fn id_problem(id: &str) -> Option<String> {
    let printable = !id.chars().any(|c| {
        c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
    });
    (id.is_empty() || id.len() > MAX_ID_LEN || !printable).then(|| {
        format!(
            "at most {MAX_ID_LEN} printable characters (no control or bidirectional characters)"
        )
    })
}

/// `id` when it is a valid promotion id (see [`id_problem`]).
pub fn valid_id(id: String) -> Option<String> {
    id_problem(&id).is_none().then_some(id)
}

/// Decodes and validates a report body.
pub fn decode(json: &str) -> Result<PromotionReport, ReportError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let report: PromotionReport =
        serde_path_to_error::deserialize(de).map_err(|e| ReportError::Invalid {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    validate(report)
}

/// Checks the required fields and the formats of revision, digest and traceparent.
pub fn validate(mut report: PromotionReport) -> Result<PromotionReport, ReportError> {
    report.id = report.id.trim().to_string();
    report.time = report.time.map(crate::model::sane_time);
    report.commit_time = report.commit_time.map(crate::model::sane_time);
    report.environment = report.environment.trim().to_string();
    if report.id.is_empty() {
        return Err(ReportError::Missing("id"));
    }
    if let Some(reason) = id_problem(&report.id) {
        return Err(ReportError::Field {
            field: "id",
            reason,
        });
    }
    if report.environment.is_empty() {
        return Err(ReportError::Missing("environment"));
    }
    let digest = report.artifact.as_ref().and_then(|a| a.digest.as_deref());
    if report.revision.as_deref().is_none_or(str::is_empty) && digest.is_none_or(str::is_empty) {
        return Err(ReportError::Missing("revision"));
    }
    if let Some(rev) = report.revision.as_deref() {
        if revision::commit_sha(rev).is_none() && revision::digest_hex(rev).is_none() {
            return Err(ReportError::Field {
                field: "revision",
                reason: "expected a 40-hex commit SHA or sha256:<64 hex>".into(),
            });
        }
    }
    if let Some(d) = digest {
        if revision::digest_hex(d).is_none() {
            return Err(ReportError::Field {
                field: "artifact.digest",
                reason: "expected sha256:<64 hex>".into(),
            });
        }
    }
    if let Some(tp) = report.traceparent.as_deref() {
        Traceparent::parse(tp).map_err(|e| ReportError::Field {
            field: "traceparent",
            reason: e.reason.to_string(),
        })?;
    }
    report.promoted_from = report
        .promoted_from
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty());
    if let Some(from) = report.promoted_from.as_deref() {
        if let Some(reason) = id_problem(from) {
            return Err(ReportError::Field {
                field: "promoted_from",
                reason,
            });
        }
        if from == report.id {
            return Err(ReportError::Field {
                field: "promoted_from",
                reason: "names the promotion itself; it must name the one this continues".into(),
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "450796ddb2ab6724ee1cc32a4be56da032d1cca0";

    #[test]
    fn accepts_a_minimal_report_and_ignores_unknown_fields() {
        let r = decode(&format!(
            r#"{{"id":"P-1","environment":"prod","revision":"{SHA}","extra":{{"x":1}}}}"#
        ))
        .expect("valid");
        assert_eq!(r.id, "P-1");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"environment":"prod","revision":"x"}"#.to_string(), "id"),
            (format!(r#"{{"id":"P","revision":"{SHA}"}}"#), "environment"),
            (r#"{"id":"P","environment":"prod"}"#.to_string(), "revision"),
            (
                r#"{"id":"P","environment":"prod","revision":"abc"}"#.to_string(),
                "revision",
            ),
            (
                r#"{"id":"P","environment":"prod","artifact":{"digest":"sha256:12"}}"#.to_string(),
                "artifact.digest",
            ),
            (
                format!(
                    r#"{{"id":"P","environment":"prod","revision":"{SHA}","traceparent":"00-x"}}"#
                ),
                "traceparent",
            ),
            (
                format!(r#"{{"id":5,"environment":"prod","revision":"{SHA}"}}"#),
                "id",
            ),
            (
                format!(
                    r#"{{"id":"P","environment":"prod","revision":"{SHA}","pipeline":{{"run_id":7}}}}"#
                ),
                "pipeline.run_id",
            ),
            (
                format!(
                    r#"{{"id":"P","environment":"prod","revision":"{SHA}","time":"yesterday"}}"#
                ),
                "time",
            ),
            (
                format!(
                    r#"{{"id":"P","environment":"prod","revision":"{SHA}","commit_time":"soon"}}"#
                ),
                "commit_time",
            ),
        ];
        let ok = decode(&format!(
            r#"{{"id":"P","environment":"prod","revision":"{SHA}","commit_time":"2026-11-26T09:15:00+01:00"}}"#
        ))
        .expect("valid");
        assert_eq!(
            ok.commit_time,
            Some("2026-11-26T08:15:00Z".parse().expect("time"))
        );
        for (body, field) in cases {
            let e = decode(&body).expect_err(&body);
            assert!(e.to_string().contains(field), "{body}: {e}");
        }
    }
}
