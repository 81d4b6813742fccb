//! Create, update, patch and delete of stored objects, as the API server does them: `409
//! AlreadyExists` on a second create, `409 Conflict` when an update or patch names a
//! `resourceVersion` that is no longer current, `metadata.generation` bumped by spec changes
//! only, the `status` subresource apart from the rest, and every change sent to open watches.
//!
//! core/v1 Events keep the simpler handling of `mod.rs` (recorded, never stored), so that the
//! Events the agent writes do not come back through its own watch.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{ObjectKey, Shared, Store};

/// What a write resolved to: the object's place and whether it aims at `status`.
struct Target<'a> {
    api_version: String,
    kind: String,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    status: bool,
}

fn target<'a>(shared: &Shared, segments: &[&'a str]) -> Option<Target<'a>> {
    let (group, version, rest) = match segments {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, plural, name, status) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, false),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), false),
        ["namespaces", ns, plural, name, "status"] => (Some(*ns), *plural, Some(*name), true),
        [plural] => (None, *plural, None, false),
        [plural, name] => (None, *plural, Some(*name), false),
        [plural, name, "status"] => (None, *plural, Some(*name), true),
        _ => return None,
    };
    let spec = shared
        .kinds_at(group, version)
        .find(|k| k.plural == plural)?;
    if spec.kind == "Event" && spec.group.is_empty() {
        return None;
    }
    Some(Target {
        api_version: spec.api_version(version),
        kind: spec.kind.clone(),
        namespace,
        name,
        status,
    })
}

/// Handles a write to a stored kind; `None` when the path is not one (the caller's fallback).
pub(super) fn write(
    shared: &Shared,
    method: &Method,
    segments: &[&str],
    body: &Value,
) -> Option<(StatusCode, Value)> {
    let t = target(shared, segments)?;
    let mut store = shared.lock();
    if let Some(code) = store.fail_writes {
        return Some(status(
            code,
            "ServiceUnavailable",
            "injected failure of writes",
        ));
    }
    let found = t.name.and_then(|n| find(&store, &t, n));
    Some(match (method.as_str(), t.name) {
        ("POST", None) => create(&mut store, &t, body.clone()),
        ("PUT", Some(name)) => match found {
            None => not_found(&t.kind, name),
            Some(old) => update(&mut store, &t, old, body.clone(), false),
        },
        ("PATCH", Some(name)) => match found {
            None => not_found(&t.kind, name),
            Some(old) => {
                let mut merged = old.clone();
                merge(&mut merged, body);
                update(&mut store, &t, old, merged, true)
            }
        },
        ("DELETE", Some(name)) => match found {
            None => not_found(&t.kind, name),
            Some(old) => match store.apply("DELETED", old.clone()) {
                Ok(_) => (StatusCode::OK, old),
                Err(e) => status(StatusCode::BAD_REQUEST, "BadRequest", &e),
            },
        },
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not supported by the test API server",
        ),
    })
}

fn find(store: &Store, t: &Target, name: &str) -> Option<Value> {
    let group = t.api_version.rsplit_once('/').map_or("", |(g, _)| g);
    store
        .objects
        .iter()
        .find(|(k, _)| {
            k.group == group
                && k.kind == t.kind
                && k.namespace == t.namespace.unwrap_or("")
                && k.name == name
        })
        .map(|(_, v)| v.value())
}

fn create(store: &mut Store, t: &Target, mut object: Value) -> (StatusCode, Value) {
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value",
        );
    };
    if find(store, t, &name).is_some() {
        let mut s = status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", t.kind.to_lowercase()),
        );
        s.1["details"] = json!({"name": name, "kind": t.kind.to_lowercase()});
        return s;
    }
    store.uid_counter += 1;
    let uid = format!("00000000-0000-4000-8000-{:012x}", store.uid_counter);
    object["apiVersion"] = json!(t.api_version);
    object["kind"] = json!(t.kind);
    let meta = &mut object["metadata"];
    if let Some(ns) = t.namespace {
        meta["namespace"] = json!(ns);
    }
    meta["uid"] = json!(uid);
    meta["generation"] = json!(1);
    meta["creationTimestamp"] = json!(jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string());
    if let Some(o) = object.as_object_mut() {
        // The status subresource is written on its own.
        o.remove("status");
    }
    stored(store, StatusCode::CREATED, object)
}

/// Replaces `old` by `new` (already merged for a patch), keeping what a client cannot change.
fn update(
    store: &mut Store,
    t: &Target,
    old: Value,
    mut new: Value,
    patch: bool,
) -> (StatusCode, Value) {
    let current = old["metadata"]["resourceVersion"].as_str().unwrap_or("");
    let asked = new["metadata"]["resourceVersion"].as_str().unwrap_or("");
    // A patch carries the version it read only when the client wants the check; an update
    // always names one.
    let stale = if patch {
        !asked.is_empty() && asked != current
    } else {
        asked != current
    };
    if stale {
        let name = old["metadata"]["name"].as_str().unwrap_or_default();
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                t.kind.to_lowercase()
            ),
        );
    }
    let mut out = old.clone();
    if t.status {
        out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
    } else {
        let keep = [
            "uid",
            "creationTimestamp",
            "namespace",
            "name",
            "generation",
        ];
        for k in keep {
            if let Some(v) = old["metadata"].get(k) {
                new["metadata"][k] = v.clone();
            }
        }
        new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        if new.get("spec") != old.get("spec") {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        out = new;
    }
    if out.get("status").is_some_and(Value::is_null) {
        if let Some(o) = out.as_object_mut() {
            o.remove("status");
        }
    }
    stored(store, StatusCode::OK, out)
}

fn stored(store: &mut Store, code: StatusCode, object: Value) -> (StatusCode, Value) {
    let key = match ObjectKey::of(&object) {
        Ok(k) => k,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    match store.apply("MODIFIED", object) {
        Ok(_) => (
            code,
            store.objects.get(&key).map_or(Value::Null, |o| o.value()),
        ),
        Err(e) => status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    }
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn not_found(kind: &str, name: &str) -> (StatusCode, Value) {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.to_lowercase()),
    )
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        }),
    )
}
