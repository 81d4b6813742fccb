//! Deletions that happened while a watch was down.
//!
//! A watch that restarts (a disconnect it could not resume, `410 Gone`) lists every object
//! again. kube-runtime's watcher brackets that list with `Init` … `InitDone` and documents that
//! objects not listed again are to be taken as deleted: their DELETED event was lost in the
//! gap. This tracker remembers which objects a watch has delivered and, at `InitDone`, names the
//! ones the new list left out, so that `record` writes them as DELETED lines and a replay forgets
//! them as the live agent does.
//!
//! Pure bookkeeping, one per watch of `record`. The agent's watchers need no names: they hand
//! the engine hashes of what a re-list contained (`model::RelistObs`) and hold nothing between
//! lists.

use std::collections::HashSet;

/// Namespace and name of an object of the watched kind.
pub type Key = (String, String);

#[derive(Debug, Default)]
pub struct Relist {
    known: HashSet<Key>,
    /// While a list is in progress: what it has delivered so far.
    listing: Option<HashSet<Key>>,
}

impl Relist {
    /// A (re-)list begins (`Event::Init`).
    pub fn begin(&mut self) {
        self.listing = Some(HashSet::new());
    }

    /// An object of the list (`Event::InitApply`).
    pub fn listed(&mut self, key: Key) {
        match self.listing.as_mut() {
            Some(l) => {
                l.insert(key);
            }
            None => {
                self.known.insert(key);
            }
        }
    }

    /// An object changed while watching (`Event::Apply`).
    pub fn applied(&mut self, key: Key) {
        self.known.insert(key);
    }

    /// An object was deleted while watching (`Event::Delete`).
    pub fn deleted(&mut self, key: &Key) {
        self.known.remove(key);
        if let Some(l) = self.listing.as_mut() {
            l.remove(key);
        }
    }

    /// The list is complete (`Event::InitDone`): returns the objects known before that it did
    /// not contain, sorted; what it listed becomes what is known.
    pub fn done(&mut self) -> Vec<Key> {
        let Some(listed) = self.listing.take() else {
            return Vec::new();
        };
        let mut gone: Vec<Key> = self.known.difference(&listed).cloned().collect();
        gone.sort();
        self.known = listed;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> Key {
        ("ns".into(), name.into())
    }

    #[test]
    fn objects_missing_from_a_relist_are_gone_and_only_those() {
        let mut r = Relist::default();
        r.begin();
        r.listed(k("a"));
        r.listed(k("b"));
        r.listed(k("c"));
        assert!(r.done().is_empty(), "the first list deletes nothing");
        r.applied(k("d"));
        r.deleted(&k("c"));
        // The watch drops; b and d are deleted in the gap; e is created.
        r.begin();
        r.listed(k("a"));
        r.listed(k("e"));
        assert_eq!(r.done(), vec![k("b"), k("d")]);
        assert_eq!(r.known.len(), 2);
        // A list that was never started reports nothing.
        assert!(r.done().is_empty());
    }
}
