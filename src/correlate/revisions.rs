//! Which sources and reconcilers are at which revision, by revision key.
//!
//! Written when a source stores or a reconciler attempts a revision, and when an object is
//! deleted; read when a promotion learns its revision, to join objects that already hold it.

use std::collections::BTreeSet;

use super::{Map, Set};
use crate::model::ObjectRef;
use crate::revision;

#[derive(Default)]
pub(super) struct RevisionIndex {
    /// Unordered sets: most hold one source and the reconcilers at its revision, a hash set of
    /// two costs a third of a B-tree node. [`RevisionIndex::objects`] orders what it returns.
    at: Map<String, Set<ObjectRef>>,
}

impl RevisionIndex {
    /// Moves `object` from the keys of `old` to the keys of `new`.
    pub fn reindex(&mut self, object: &ObjectRef, old: Option<&str>, new: Option<&str>) {
        if old == new {
            return;
        }
        for k in old.into_iter().flat_map(revision::lookup_key_refs) {
            if let Some(set) = self.at.get_mut(&*k) {
                set.remove(object);
                if set.is_empty() {
                    self.at.remove(&*k);
                }
            }
        }
        for k in new.into_iter().flat_map(revision::lookup_key_refs) {
            match self.at.get_mut(&*k) {
                Some(set) => {
                    if !set.contains(object) {
                        set.insert(object.clone());
                    }
                }
                None => {
                    self.at
                        .entry(k.into_owned())
                        .or_default()
                        .insert(object.clone());
                }
            }
        }
    }

    /// Objects at any of these keys.
    pub fn objects<'a>(&self, keys: impl IntoIterator<Item = &'a String>) -> BTreeSet<ObjectRef> {
        let mut out = BTreeSet::new();
        for k in keys {
            if let Some(objs) = self.at.get(k) {
                out.extend(objs.iter().cloned());
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }
}
