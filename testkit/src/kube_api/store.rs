//! The test API server's state (`kube_api`): stored objects, the change history watches replay,
//! open watches, and the bytes a watch or a LIST sends.
//!
//! Each object is kept once, as the compact JSON the server serves (its resourceVersion already
//! stamped), with what keys and selectors read taken out of it; the history shares it through an
//! `Arc`. A synthetic cluster of a million objects then costs about its JSON size, where
//! `serde_json::Value`s took several times that. An object served at another version than the
//! recorded one, or as metadata only, is decoded again on the way out.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{access, api_version, Applied, Filter, ListFault, RequestRecord, WriteRecord};

/// Where an object lives: group and kind (not version), namespace (`""` if cluster-scoped), name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ObjectKey {
    pub(super) group: String,
    pub(super) kind: String,
    pub(super) namespace: String,
    pub(super) name: String,
}

impl ObjectKey {
    pub(super) fn of(object: &Value) -> Result<ObjectKey, String> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .ok_or("object without apiVersion")?;
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("object without kind")?;
        let meta = object.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .ok_or("object without metadata.name")?;
        let namespace = meta
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Ok(ObjectKey {
            group: group.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

/// One stored object: its JSON as served at the recorded version, and what selectors read
/// (name and namespace are in its [`ObjectKey`]).
#[derive(Debug)]
pub(super) struct Stored {
    json: Bytes,
    /// The recorded `apiVersion`: served as it is when a client asks for that version.
    api_version: String,
    /// The labels whose values are strings (selectors see no others).
    labels: Vec<(String, String)>,
}

impl Stored {
    fn new(object: &Value) -> Stored {
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Stored {
            json: to_bytes(object),
            api_version: object
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            labels,
        }
    }

    /// The object decoded again.
    pub(super) fn value(&self) -> Value {
        serde_json::from_slice(&self.json).expect("stored JSON was serialized by serde_json")
    }

    /// A label's value, if it is set to a string.
    pub(super) fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Serializes into a buffer of exactly its length: stored objects add up to gigabytes, and a
/// growing `Vec` keeps up to twice that.
fn to_bytes(value: &Value) -> Bytes {
    let json = serde_json::to_vec(value).expect("a JSON value serializes");
    Bytes::from(json.into_boxed_slice())
}

/// A stored change, kept so that a watch from an older resource version can replay it.
#[derive(Clone, Debug)]
pub(super) struct Change {
    pub(super) rv: u64,
    key: ObjectKey,
    old: Option<Arc<Stored>>,
    new: Arc<Stored>,
    deleted: bool,
}

/// One open watch connection.
pub(super) struct WatchEntry {
    pub(super) group: String,
    pub(super) kind: String,
    /// The version it was opened at, for `apiVersion`.
    pub(super) version: String,
    pub(super) filter: Filter,
    pub(super) bookmarks: bool,
    pub(super) metadata_only: bool,
    /// The last resource version sent on it.
    pub(super) last_rv: u64,
    pub(super) tx: mpsc::UnboundedSender<Bytes>,
}

impl WatchEntry {
    pub(super) fn send(&mut self, event: &Value, rv: u64) -> bool {
        self.send_line(event_line(event), rv)
    }

    pub(super) fn send_line(&mut self, line: Bytes, rv: u64) -> bool {
        self.last_rv = rv;
        self.tx.send(line).is_ok()
    }
}

#[derive(Default)]
pub(super) struct Store {
    /// The current resource version: the last one given out.
    pub(super) rv: u64,
    /// Watches from versions older than this get 410 Expired.
    pub(super) compacted: u64,
    pub(super) objects: BTreeMap<ObjectKey, Arc<Stored>>,
    pub(super) history: Vec<Change>,
    pub(super) watches: Vec<WatchEntry>,
    /// Index into the recording's lines of the next line to look at.
    pub(super) cursor: usize,
    pub(super) requests: Vec<RequestRecord>,
    pub(super) writes: Vec<WriteRecord>,
    /// (namespace, name) of every Event created by POST, for `409 AlreadyExists`.
    pub(super) created_events: BTreeSet<(String, String)>,
    /// Faults for the next LISTs of a resource, by plural, in order.
    pub(super) list_faults: HashMap<String, VecDeque<ListFault>>,
    /// Items added as they are to every LIST of a kind (by kind): objects the store could not
    /// hold, such as one whose `metadata.name` is not a string.
    pub(super) raw_items: HashMap<String, Vec<Value>>,
    /// Writes to stored kinds answer this instead (an API server that cannot write).
    pub(super) fail_writes: Option<StatusCode>,
    /// Streaming lists are refused (`422 Invalid`), as by a server without `WatchList`.
    pub(super) refuse_streaming_lists: bool,
    /// Last uid given to a created object.
    pub(super) uid_counter: u64,
    /// Permissions access reviews deny (`access`).
    pub(super) denied: BTreeSet<access::Permission>,
    /// Every access review received.
    pub(super) reviews: Vec<Value>,
}

impl Store {
    /// Stores a change under the next resource version and pushes it to matching watches.
    pub(super) fn apply(
        &mut self,
        recorded_type: &str,
        mut object: Value,
    ) -> Result<Applied, String> {
        let key = ObjectKey::of(&object)?;
        self.rv += 1;
        let rv = self.rv;
        set_resource_version(&mut object, rv);
        let stored = Arc::new(Stored::new(&object));
        let deleted = recorded_type == "DELETED";
        let old = if deleted {
            self.objects.remove(&key)
        } else {
            self.objects.insert(key.clone(), Arc::clone(&stored))
        };
        let event_type = match (deleted, old.is_some()) {
            (true, _) => "DELETED",
            (false, true) => "MODIFIED",
            (false, false) => "ADDED",
        };
        let change = Change {
            rv,
            key: key.clone(),
            old,
            new: stored,
            deleted,
        };
        self.watches.retain_mut(|w| match watch_event(w, &change) {
            Some(line) => w.send_line(line, rv),
            None => !w.tx.is_closed(),
        });
        self.history.push(change);
        Ok(Applied {
            index: None,
            at: None,
            event_type: event_type.to_string(),
            api_version: object
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            kind: key.kind,
            namespace: (!key.namespace.is_empty()).then_some(key.namespace),
            name: key.name,
            resource_version: rv,
        })
    }

    /// Compacts and ends every open watch with a `410 Expired` ERROR event; how many there were.
    pub(super) fn expire_watches(&mut self) -> usize {
        let compacted = self.compact();
        let mut sent = 0;
        for mut w in std::mem::take(&mut self.watches) {
            let event = json!({"type": "ERROR", "object": expired_status(w.last_rv, compacted)});
            sent += usize::from(w.send(&event, compacted));
        }
        sent
    }

    pub(super) fn send_bookmarks(&mut self) -> usize {
        let rv = self.rv;
        let mut sent = 0;
        self.watches.retain_mut(|w| {
            if !w.bookmarks {
                return !w.tx.is_closed();
            }
            let event = json!({"type": "BOOKMARK", "object": bookmark_object(w, rv, false)});
            let ok = w.send(&event, rv);
            sent += usize::from(ok);
            ok
        });
        sent
    }

    /// Gives out one more resource version (a write elsewhere in the cluster) and makes every
    /// older version too old to watch from.
    pub(super) fn compact(&mut self) -> u64 {
        self.rv += 1;
        self.compact_to(self.rv);
        self.rv
    }

    pub(super) fn compact_to(&mut self, rv: u64) {
        self.compacted = self.compacted.max(rv);
        let compacted = self.compacted;
        self.history.retain(|c| c.rv > compacted);
    }
}

fn set_resource_version(object: &mut Value, rv: u64) {
    if let Some(obj) = object.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
    }
}

/// The event line a watch gets for a change, if any: selectors decide ADDED/MODIFIED/DELETED
/// the way the API server does when an object starts or stops matching.
pub(super) fn watch_event(w: &WatchEntry, change: &Change) -> Option<Bytes> {
    if change.key.group != w.group || change.key.kind != w.kind {
        return None;
    }
    let was = change
        .old
        .as_ref()
        .is_some_and(|o| w.filter.matches(&change.key, o));
    let is = w.filter.matches(&change.key, &change.new);
    let event_type = match (change.deleted, was, is) {
        // Deleting what was not there (an ad hoc DELETED) tells nobody anything.
        (true, true, _) => "DELETED",
        (false, true, true) => "MODIFIED",
        (false, false, true) => "ADDED",
        (false, true, false) => "DELETED",
        _ => return None,
    };
    let object = present(&change.new, &w.group, &w.version, w.metadata_only);
    Some(object_event_line(event_type, &object))
}

/// An object as served at `version`: `apiVersion` rewritten, or cut down to its metadata. At
/// the recorded version, the stored bytes themselves.
pub(super) fn present(object: &Stored, group: &str, version: &str, metadata_only: bool) -> Bytes {
    if !metadata_only && object.api_version == api_version(group, version) {
        return object.json.clone();
    }
    let object = object.value();
    if metadata_only {
        return to_bytes(&json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }));
    }
    let mut object = object;
    if let Some(obj) = object.as_object_mut() {
        obj.insert(
            "apiVersion".into(),
            Value::String(api_version(group, version)),
        );
    }
    to_bytes(&object)
}

pub(super) fn bookmark_object(w: &WatchEntry, rv: u64, initial_events_end: bool) -> Value {
    let (api_version, kind) = if w.metadata_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadata".to_string(),
        )
    } else {
        (api_version(&w.group, &w.version), w.kind.clone())
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": kind, "apiVersion": api_version, "metadata": metadata})
}

pub(super) fn event_line(event: &Value) -> Bytes {
    let mut line = serde_json::to_vec(event).expect("a JSON value serializes");
    line.push(b'\n');
    Bytes::from(line)
}

/// `{"object":…,"type":…}` and a newline around an object's JSON: the bytes `event_line` makes
/// of the same event (keys in serde_json's order), without decoding the object.
pub(super) fn object_event_line(event_type: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + event_type.len() + 24);
    line.extend_from_slice(b"{\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b",\"type\":");
    push_json(&mut line, &Value::from(event_type));
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

/// A LIST response's body around objects' JSON, as `serde_json` would write
/// `{"apiVersion", "items", "kind", "metadata"}`, without decoding the items.
pub(super) fn list_body(
    api_version: &str,
    kind: &str,
    metadata: &Value,
    items: &[Bytes],
) -> Vec<u8> {
    let size: usize = items.iter().map(|i| i.len() + 1).sum();
    let mut body = Vec::with_capacity(size + 256);
    body.extend_from_slice(b"{\"apiVersion\":");
    push_json(&mut body, &Value::from(api_version));
    body.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"],\"kind\":");
    push_json(&mut body, &Value::from(kind));
    body.extend_from_slice(b",\"metadata\":");
    push_json(&mut body, metadata);
    body.push(b'}');
    body
}

fn push_json(out: &mut Vec<u8>, value: &Value) {
    serde_json::to_writer(out, value).expect("a JSON value serializes");
}

pub(super) fn expired_status(requested: u64, oldest: u64) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {requested} ({oldest})"),
        "reason": "Expired",
        "code": 410,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "a\"b", "namespace": "ns", "labels": {"x": "1", "n": 2}},
            "spec": {"replicas": 3, "f": 1.5, "s": "ü\n"},
        })
    }

    #[test]
    fn raw_lines_match_the_values_they_stand_for() {
        let object = object();
        let bytes = to_bytes(&object);
        let event = json!({"type": "MODIFIED", "object": object});
        assert_eq!(object_event_line("MODIFIED", &bytes), event_line(&event));
        let metadata = json!({"resourceVersion": "7", "continue": "7/ns/a"});
        let list = json!({
            "apiVersion": "apps/v1",
            "kind": "DeploymentList",
            "metadata": metadata,
            "items": [object, {"x": []}],
        });
        let items = [bytes, to_bytes(&json!({"x": []}))];
        let body = list_body("apps/v1", "DeploymentList", &metadata, &items);
        assert_eq!(body, serde_json::to_vec(&list).expect("serializes"));
        let empty = list_body("v1", "PodList", &json!({}), &[]);
        let expected = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []});
        assert_eq!(empty, serde_json::to_vec(&expected).expect("serializes"));
    }

    #[test]
    fn presented_objects_match_the_values() {
        let stored = Stored::new(&object());
        assert_eq!(stored.label("x"), Some("1"));
        assert_eq!(stored.label("n"), None);
        assert_eq!(present(&stored, "apps", "v1", false), to_bytes(&object()));
        let mut other = object();
        other["apiVersion"] = json!("apps/v2");
        assert_eq!(present(&stored, "apps", "v2", false), to_bytes(&other));
        let meta = json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": object()["metadata"],
        });
        assert_eq!(present(&stored, "apps", "v1", true), to_bytes(&meta));
    }
}
