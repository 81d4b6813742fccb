//! Where each promotion's Promotion object is, and which object versions the engine already
//! has: filled by `resource::sync` (its feed task and the intake's writer), read by its status
//! task and by the agent's gate, which learns from it what the leader has exported.
//!
//! A leaf: plain shared state behind a mutex, no IO, so the agent and `resource::sync` both
//! depend on it and not on each other.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Where each promotion's object is (filled by the feed task, read by the status task), and
/// which object versions were already handed to the engine: by the intake that created them,
/// or by the feed.
#[derive(Clone, Debug, Default)]
pub struct Index(Arc<Mutex<IndexState>>);

#[derive(Debug, Default)]
struct IndexState {
    objects: HashMap<String, ObjectRef>,
    /// (uid, generation) fed to the engine or marked invalid: a status write comes back as a
    /// change and must not be taken for a new report.
    fed: HashSet<(String, i64)>,
}

/// One Promotion object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    /// Its status holds a verdict whose spans reached the collector.
    pub exported: bool,
}

impl Index {
    fn lock(&self) -> std::sync::MutexGuard<'_, IndexState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<ObjectRef> {
        self.lock().objects.get(id).cloned()
    }

    /// Whether the promotion's verdict is written with its spans exported; `None` when it has
    /// no Promotion object (yet).
    pub fn exported(&self, id: &str) -> Option<bool> {
        self.lock().objects.get(id).map(|o| o.exported)
    }

    pub(crate) fn insert(&self, id: String, at: ObjectRef) {
        self.lock().objects.insert(id, at);
    }

    pub(super) fn remove_object(&self, namespace: &str, name: &str) {
        self.lock()
            .objects
            .retain(|_, o| !(o.namespace == namespace && o.name == name));
    }

    /// Marks an object version as handed on; `true` the first time.
    pub(super) fn first_time(&self, uid: String, generation: i64) -> bool {
        self.lock().fed.insert((uid, generation))
    }
}
