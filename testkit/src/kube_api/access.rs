//! Access reviews and `/version`, as `fluxtrace check` asks them: a `SelfSubjectAccessReview` or
//! `SubjectAccessReview` is answered `allowed` unless a test denied that verb on that resource
//! ([`super::ServerHandle::deny`]), and every review is kept for assertions. `/version` answers
//! [`VERSION`].

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::Shared;

/// The `gitVersion` this server reports.
pub const VERSION: &str = "v1.33.0-fluxtrace-test";

/// One permission: verb, API group, resource (`promotions/status` for a subresource).
pub(super) type Permission = (String, String, String);

/// Answers a POST of an access review; `None` for any other write.
pub(super) fn review(
    shared: &Shared,
    segments: &[&str],
    body: &Value,
) -> Option<(StatusCode, Value)> {
    let ["apis", "authorization.k8s.io", "v1", kind @ ("selfsubjectaccessreviews" | "subjectaccessreviews")] =
        segments
    else {
        return None;
    };
    let attributes = &body["spec"]["resourceAttributes"];
    let text = |k: &str| attributes[k].as_str().unwrap_or_default().to_string();
    let resource = match text("subresource").as_str() {
        "" => text("resource"),
        sub => format!("{}/{sub}", text("resource")),
    };
    let permission = (text("verb"), text("group"), resource);
    let mut store = shared.lock();
    store.reviews.push(body.clone());
    let allowed = !store.denied.contains(&permission);
    let mut answer = body.clone();
    answer["apiVersion"] = json!("authorization.k8s.io/v1");
    answer["kind"] = json!(if *kind == "subjectaccessreviews" {
        "SubjectAccessReview"
    } else {
        "SelfSubjectAccessReview"
    });
    answer["status"] = json!({"allowed": allowed});
    Some((StatusCode::CREATED, answer))
}

/// The body of `GET /version`.
pub(super) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.26.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
