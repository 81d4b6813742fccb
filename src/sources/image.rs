//! Flux image automation objects → observations: an ImagePolicy's selected image
//! (`status.latestRef`) and an ImageUpdateAutomation's last push (`status.lastPushCommit`,
//! `lastPushTime`, `observedPolicies`).
//!
//! Part of [`super::object`]'s decoding (live watch and replay alike). An object whose
//! selection or push is incomplete (a reference without name or tag, a push commit that is not
//! 40 hex, a push without its time) is an error that names the field: the caller skips and
//! counts it, and the rest of the delivery is traced as usual.

use super::raw::{conditions, cross_ref, ObjectError, RawImageRef, RawKubeObject};
use crate::model::{sane_time, ImageAutomationObs, ImagePolicyObs, ImageRef, Kind, ObjectRef};

fn missing(object: &ObjectRef, field: &'static str) -> ObjectError {
    ObjectError::MissingField {
        kind: object.kind.as_str().to_string(),
        field,
    }
}

fn invalid(object: &ObjectRef, field: &'static str, reason: &'static str) -> ObjectError {
    ObjectError::InvalidField {
        kind: object.kind.as_str().to_string(),
        field,
        reason,
    }
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

fn image_ref(
    raw: RawImageRef,
    object: &ObjectRef,
    name_field: &'static str,
    tag_field: &'static str,
) -> Result<ImageRef, ObjectError> {
    Ok(ImageRef {
        name: non_empty(raw.name).ok_or_else(|| missing(object, name_field))?,
        tag: non_empty(raw.tag).ok_or_else(|| missing(object, tag_field))?,
        digest: non_empty(raw.digest),
    })
}

/// `name:tag` as ImagePolicy `status.latestImage` (before image-reflector-controller v0.35)
/// writes it: the tag follows the last `:` after the last `/`.
fn split_image(image: &str) -> Option<ImageRef> {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    let colon = slash + image[slash..].rfind(':')?;
    let (name, tag) = (&image[..colon], &image[colon + 1..]);
    (!name.is_empty() && !tag.is_empty()).then(|| ImageRef {
        name: name.to_string(),
        tag: tag.to_string(),
        digest: None,
    })
}

pub(super) fn policy(
    mut obj: RawKubeObject,
    object: ObjectRef,
    uid: String,
) -> Result<ImagePolicyObs, ObjectError> {
    let conditions = conditions(obj.status.as_deref_mut());
    let status = obj.status.map(|s| *s).unwrap_or_default();
    let latest = match (status.latest_ref, non_empty(status.latest_image)) {
        (Some(r), _) => Some(image_ref(
            r,
            &object,
            "status.latestRef.name",
            "status.latestRef.tag",
        )?),
        (None, Some(image)) => Some(
            split_image(&image)
                .ok_or_else(|| invalid(&object, "status.latestImage", "expected <name>:<tag>"))?,
        ),
        (None, None) => None,
    };
    Ok(ImagePolicyObs {
        object,
        uid,
        latest,
        conditions,
    })
}

pub(super) fn automation(
    mut obj: RawKubeObject,
    object: ObjectRef,
    uid: String,
) -> Result<ImageAutomationObs, ObjectError> {
    let conditions = conditions(obj.status.as_deref_mut());
    let spec = obj.spec.map(|s| *s).unwrap_or_default();
    let status = obj.status.map(|s| *s).unwrap_or_default();
    let last_push_commit = match non_empty(status.last_push_commit) {
        Some(c) if c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(c.to_ascii_lowercase())
        }
        Some(_) => {
            return Err(invalid(
                &object,
                "status.lastPushCommit",
                "not a 40-hex commit SHA",
            ))
        }
        None => None,
    };
    let last_push_time = status.last_push_time.map(sane_time);
    if last_push_commit.is_some() && last_push_time.is_none() {
        return Err(missing(&object, "status.lastPushTime"));
    }
    let mut observed_policies = Vec::new();
    for (name, r) in status.observed_policies.unwrap_or_default() {
        let r = image_ref(
            r,
            &object,
            "status.observedPolicies.name",
            "status.observedPolicies.tag",
        )?;
        observed_policies.push((name, r));
    }
    let git = spec.git.unwrap_or_default();
    let push_branch = non_empty(git.push.and_then(|p| p.branch))
        .or_else(|| non_empty(git.checkout.and_then(|c| c.ref_).and_then(|r| r.branch)));
    Ok(ImageAutomationObs {
        source_ref: cross_ref(
            spec.source_ref,
            Some(Kind::GitRepository),
            &object.namespace,
        ),
        object,
        uid,
        push_branch,
        last_push_commit,
        last_push_time,
        last_run: status.last_automation_run_time.map(sane_time),
        observed_policies,
        conditions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EventBody;
    use crate::sources::object::raw_to_event;

    fn decode(json: serde_json::Value) -> Result<Option<EventBody>, ObjectError> {
        raw_to_event(serde_json::from_value(json).expect("shape"), false)
    }

    #[test]
    fn policy_latest_ref_uses_the_name_key() {
        let ev = decode(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": {"name": "podinfo", "namespace": "default"},
            "status": {"latestRef": {"name": "ghcr.io/stefanprodan/podinfo", "tag": "6.2.1"},
                       "observedPreviousRef": {"name": "ghcr.io/stefanprodan/podinfo", "tag": "5.1.4"}}
        }));
        let Ok(Some(EventBody::ImagePolicy(p))) = ev else {
            panic!("{ev:?}")
        };
        let latest = p.latest.expect("latestRef");
        assert_eq!(latest.to_string(), "ghcr.io/stefanprodan/podinfo:6.2.1");
        assert_eq!(latest.digest, None);
    }

    #[test]
    fn policy_latest_image_of_older_apis() {
        assert_eq!(
            split_image("localhost:5000/app:1.2.3").map(|r| r.to_string()),
            Some("localhost:5000/app:1.2.3".to_string())
        );
        assert_eq!(split_image("localhost:5000/app"), None);
        assert_eq!(split_image("app:"), None);
    }

    #[test]
    fn incomplete_objects_name_the_field() {
        let err = decode(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImagePolicy",
            "metadata": {"name": "p", "namespace": "default"},
            "status": {"latestRef": {"tag": "6.2.1"}}
        }))
        .expect_err("no name");
        assert_eq!(
            err.to_string(),
            "ImagePolicy object has no status.latestRef.name"
        );
        let err = decode(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageUpdateAutomation",
            "metadata": {"name": "a", "namespace": "default"},
            "status": {"lastPushCommit": "3ebb95c"}
        }))
        .expect_err("short commit");
        assert_eq!(err.metric_label(), "invalid_field");
        let err = decode(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageUpdateAutomation",
            "metadata": {"name": "a", "namespace": "default"},
            "status": {"lastPushCommit": "3ebb95cc56d2db59bc6ffbe0d9dd0ea445edeb77"}
        }))
        .expect_err("no push time");
        assert_eq!(
            err.to_string(),
            "ImageUpdateAutomation object has no status.lastPushTime"
        );
    }

    #[test]
    fn automation_push_and_policies() {
        let ev = decode(serde_json::json!({
            "apiVersion": "image.toolkit.fluxcd.io/v1", "kind": "ImageUpdateAutomation",
            "metadata": {"name": "podinfo-update", "namespace": "default"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "podinfo"},
                     "git": {"checkout": {"ref": {"branch": "main"}}, "push": {"branch": "auto"}}},
            "status": {"lastPushCommit": "3EBB95CC56D2DB59BC6FFBE0D9DD0EA445EDEB77",
                       "lastPushTime": "2024-03-17T22:22:34Z",
                       "observedPolicies": {"podinfo-policy": {"name": "ghcr.io/stefanprodan/podinfo", "tag": "5.0.3"}}}
        }));
        let Ok(Some(EventBody::ImageAutomation(a))) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(
            a.last_push_commit.as_deref(),
            Some("3ebb95cc56d2db59bc6ffbe0d9dd0ea445edeb77")
        );
        assert_eq!(a.push_branch.as_deref(), Some("auto"));
        assert_eq!(
            a.source_ref,
            Some(ObjectRef::new(Kind::GitRepository, "default", "podinfo"))
        );
        assert_eq!(a.observed_policies[0].0, "podinfo-policy");
    }
}
