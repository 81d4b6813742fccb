//! Open and finished promotions, and the indexes that find them: by revision key, by target,
//! by OCI repository.
//!
//! The only code that writes these maps. Stage modules ask it for candidates and hand it
//! promotions to open and finish; nothing else inserts or removes.

use super::{Map, Set};
use std::collections::{BTreeMap, VecDeque};

use super::promotion::Promotion;
use crate::trace::{SpanId, TraceId};

/// The latest promotion of one environment that named a revision key: what a later promotion
/// of the same revision to another environment links to.
struct Head {
    environment: Box<str>,
    start: jiff::Timestamp,
    id: String,
    trace_id: TraceId,
    root: SpanId,
}

/// An earlier promotion, as this agent saw it: its id, its trace and its root span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Earlier {
    pub id: String,
    pub trace_id: TraceId,
    pub root: SpanId,
}

/// The promotion one continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Chain {
    /// The one its report names (`promoted_from`), with the trace it really has when this agent
    /// saw it (open, or finished and remembered under one of the same revision keys): a
    /// promotion that joined a CI trace has the CI's trace id, not the one derived from its id.
    Named { id: String, seen: Option<Earlier> },
    /// Unnamed: the latest earlier promotion of the same revision to another environment.
    SameRevision(Earlier),
}

#[derive(Default)]
pub(super) struct Registry {
    open: BTreeMap<String, Promotion>,
    /// Finished promotion → the revision keys it held (to drop them when it is forgotten).
    finished: Map<String, Vec<String>>,
    /// Revision key → the latest promotion per environment that named it: a handful per key,
    /// however many promotions name it (a flood of reports for one commit costs nothing here).
    heads: Map<String, Vec<Head>>,
    finished_order: VecDeque<String>,
    /// Revision key (commit, digest, 12-hex prefix) → promotions that named it. Several
    /// environments may promote the same commit or digest at once (and a flood of reports may
    /// all name one: adding and removing stay O(1)).
    keys: Map<String, Set<String>>,
    /// Promotion target (environment + app or artifact) → the newest open promotion for it.
    targets: Map<String, String>,
    /// OCI repository → open promotions that named it (floating-tag resolution).
    oci_repos: Map<String, Set<String>>,
    /// An id an open promotion had before a report took it over → its id now.
    aliases: Map<String, String>,
    /// Finished unreported promotions, by id: what a report that arrives after the verdict
    /// answers with.
    delivered: Map<String, Box<Delivered>>,
    /// Revision key → the unreported promotion (open, or finished and remembered) that named
    /// it: one entry per key, so that a flood of reports of one commit finds it in O(1).
    unreported: Map<String, String>,
    /// Promotions the initial state showed delivered (`history`): never opened again but by a
    /// report; the oldest forgotten beyond the finished retention.
    history: Set<String>,
    history_order: VecDeque<String>,
    /// The newest of them whole (at most [`HISTORY_KEPT`]): a report naming one later is
    /// answered with what the objects recorded of its delivery.
    history_kept: Map<String, Box<Promotion>>,
    /// The order they were kept in (an id taken since may still stand here).
    history_kept_order: VecDeque<String>,
}

/// How many promotions of the initial state's history are kept whole.
const HISTORY_KEPT: usize = 256;

/// The verdict of a finished unreported promotion, compactly.
#[derive(Clone, Debug)]
pub(super) struct Delivered {
    pub id: String,
    pub trace_id: TraceId,
    pub root: SpanId,
    pub start: jiff::Timestamp,
    pub end: jiff::Timestamp,
    pub outcome: crate::story::Outcome,
    pub divergence: Option<crate::story::Divergence>,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<&Promotion> {
        self.open.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Promotion> {
        self.open.get_mut(id)
    }

    pub fn is_open(&self, id: &str) -> bool {
        self.open.contains_key(id)
    }

    /// Whether the promotion reached its verdict, or was history when the agent started: either
    /// way nothing but a report opens it again.
    pub fn is_finished(&self, id: &str) -> bool {
        self.finished.contains_key(id) || self.history.contains(id)
    }

    /// Whether the promotion was delivered before the agent started (`history`), with no
    /// verdict of its own.
    pub fn is_history(&self, id: &str) -> bool {
        self.history.contains(id)
    }

    /// Remembers a promotion the initial state showed delivered, forgetting the oldest beyond
    /// `retain`.
    pub fn remember_history(&mut self, p: Promotion, retain: usize) {
        let id = p.id.clone();
        if self.history.insert(id.clone()) {
            self.history_order.push_back(id.clone());
        }
        if self.history_kept.insert(id.clone(), Box::new(p)).is_none() {
            self.history_kept_order.push_back(id);
        }
        while self.history_order.len() > retain {
            if let Some(old) = self.history_order.pop_front() {
                self.history.remove(&old);
                self.history_kept.remove(&old);
            }
        }
        while self.history_kept.len() > HISTORY_KEPT {
            match self.history_kept_order.pop_front() {
                Some(old) => {
                    self.history_kept.remove(&old);
                }
                None => break,
            }
        }
        // Ids taken since they were kept: the order never grows beyond twice what is kept.
        if self.history_kept_order.len() > 2 * HISTORY_KEPT {
            let kept = &self.history_kept;
            self.history_kept_order.retain(|h| kept.contains_key(h));
        }
    }

    /// A promotion of the initial state's history, whole, if still kept; it is no longer
    /// history once taken.
    pub fn take_history(&mut self, id: &str) -> Option<Promotion> {
        if self.history.remove(id) {
            self.history_order.retain(|h| h != id);
        }
        self.history_kept.remove(id).map(|p| *p)
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    pub fn finished_count(&self) -> usize {
        self.finished.len()
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.open.keys().map(String::as_str)
    }

    pub fn values(&self) -> impl Iterator<Item = &Promotion> {
        self.open.values()
    }

    /// Opens a promotion and indexes its target and OCI repository. Returns the open promotion
    /// the new one replaces for the same target, if any (the caller decides on superseding).
    pub fn open(&mut self, p: Promotion) -> Option<String> {
        let id = p.id.clone();
        // A report naming a promotion that was history: its own promotion from now on.
        if self.history.remove(&id) {
            self.history_order.retain(|h| *h != id);
            self.history_kept.remove(&id);
        }
        let mut previous = None;
        if let Some(t) = &p.target {
            previous = self
                .targets
                .insert(t.clone(), id.clone())
                .filter(|x| *x != id);
        }
        if let Some(repo) = p.artifact_repository() {
            self.oci_repos
                .entry(repo.to_string())
                .or_default()
                .insert(id.clone());
        }
        self.open.insert(id, p);
        previous
    }

    /// Indexes a promotion's target after a late report gave it one.
    pub fn index_target(&mut self, id: &str) {
        let Some(p) = self.open.get(id) else {
            return;
        };
        let (target, repo) = (
            p.target.clone(),
            p.artifact_repository().map(str::to_string),
        );
        if let Some(t) = target {
            self.targets.entry(t).or_insert_with(|| id.to_string());
        }
        if let Some(repo) = repo {
            self.oci_repos
                .entry(repo)
                .or_default()
                .insert(id.to_string());
        }
    }

    /// Adds revision keys to an open promotion and to the index.
    pub fn add_keys(&mut self, id: &str, keys: Vec<String>) {
        let Some(p) = self.open.get_mut(id) else {
            return;
        };
        // Most keys a promotion is given it holds already: nothing is copied for those.
        for k in keys {
            if !p.keys.contains(&k) {
                p.keys.push(k.clone());
            }
            if let Some(env) = p.environment() {
                let heads = match self.heads.get_mut(&k) {
                    Some(heads) => heads,
                    None => self.heads.entry(k.clone()).or_default(),
                };
                let head = || Head {
                    environment: env.into(),
                    start: p.start,
                    id: p.id.clone(),
                    trace_id: p.trace_id,
                    root: p.root,
                };
                match heads.iter_mut().find(|h| *h.environment == *env) {
                    Some(h) if h.id == p.id && h.start == p.start => {
                        h.trace_id = p.trace_id;
                        h.root = p.root;
                    }
                    Some(h) if h.start <= p.start => *h = head(),
                    Some(_) => {}
                    None => heads.push(head()),
                }
            }
            match self.keys.get_mut(&k) {
                Some(ids) => {
                    if !ids.contains(id) {
                        ids.insert(id.to_string());
                    }
                }
                None => {
                    self.keys.entry(k).or_default().insert(id.to_string());
                }
            }
        }
    }

    /// Open promotions that named any of these revision keys, oldest first, without repeats.
    pub fn by_keys<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut seen: Set<&String> = Set::default();
        for k in keys {
            for id in self.keys.get(k).into_iter().flatten() {
                if self.open.contains_key(id) {
                    seen.insert(id);
                }
            }
        }
        let mut found: Vec<String> = seen.into_iter().cloned().collect();
        found.sort_by(|a, b| {
            let start = |id: &String| self.open.get(id).map(|p| p.start);
            start(a).cmp(&start(b)).then(a.cmp(b))
        });
        found
    }

    /// Open promotions that named this OCI repository.
    pub fn by_oci_repository(&self, repo: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .oci_repos
            .get(repo)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The id of the open promotion that `id` names now (itself, or what took it over).
    pub fn resolve<'a>(&'a self, id: &'a str) -> &'a str {
        self.aliases.get(id).map_or(id, String::as_str)
    }

    /// Whether any open or remembered promotion named one of these revision keys.
    pub fn knows_any<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> bool {
        keys.into_iter().any(|k| self.keys.contains_key(k))
    }

    /// Gives an open promotion another id (a report took over an unreported promotion): it
    /// leaves every index under its old id, and the caller opens it again under the new one.
    pub fn take_for_rename(&mut self, id: &str) -> Option<Promotion> {
        let p = self.take_for_verdict(id)?;
        self.unmark_unreported(id, &p.keys);
        for k in &p.keys {
            if let Some(ids) = self.keys.get_mut(k) {
                ids.remove(id);
                if ids.is_empty() {
                    self.keys.remove(k);
                }
            }
            if let Some(heads) = self.heads.get_mut(k) {
                heads.retain(|h| h.id != id);
                if heads.is_empty() {
                    self.heads.remove(k);
                }
            }
        }
        Some(p)
    }

    /// Records that `old` is now called `new`.
    pub fn alias(&mut self, old: String, new: &str) {
        self.aliases.insert(old, new.to_string());
    }

    /// Takes a promotion out of the open set for its verdict, and drops it from the target and
    /// repository indexes.
    pub fn take_for_verdict(&mut self, id: &str) -> Option<Promotion> {
        let p = self.open.remove(id)?;
        for a in &p.aliases {
            self.aliases.remove(a);
        }
        if let Some(t) = &p.target {
            if self.targets.get(t).is_some_and(|x| x == id) {
                self.targets.remove(t);
            }
        }
        if let Some(repo) = p.artifact_repository() {
            if let Some(ids) = self.oci_repos.get_mut(repo) {
                ids.remove(id);
                if ids.is_empty() {
                    self.oci_repos.remove(repo);
                }
            }
        }
        Some(p)
    }

    /// Indexes an unreported promotion by its revision keys.
    pub fn mark_unreported(&mut self, id: &str, keys: &[String]) {
        for k in keys {
            self.unreported.insert(k.clone(), id.to_string());
        }
    }

    /// The open unreported promotion that named one of these revision keys.
    pub fn open_unreported_by_keys<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Option<String> {
        keys.into_iter()
            .filter_map(|k| self.unreported.get(k))
            .find(|id| self.open.contains_key(*id))
            .cloned()
    }

    fn unmark_unreported(&mut self, id: &str, keys: &[String]) {
        for k in keys {
            if self.unreported.get(k).is_some_and(|x| x == id) {
                self.unreported.remove(k);
            }
        }
    }

    /// Remembers the verdict of a finished unreported promotion (after [`Registry::finish`]).
    pub fn delivered(&mut self, d: Delivered) {
        if self.finished.contains_key(&d.id) {
            self.delivered.insert(d.id.clone(), Box::new(d));
        }
    }

    /// A finished unreported promotion that named one of these revision keys.
    pub fn delivered_by_keys<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
    ) -> Option<&Delivered> {
        keys.into_iter()
            .filter_map(|k| self.unreported.get(k))
            .find_map(|id| self.delivered.get(id))
            .map(|d| &**d)
    }

    /// Remembers a finished promotion, forgetting the oldest beyond `retain`.
    pub fn finish(&mut self, p: Promotion, retain: usize) {
        self.finished.insert(p.id.clone(), p.keys);
        self.finished_order.push_back(p.id);
        while self.finished_order.len() > retain {
            let Some(old) = self.finished_order.pop_front() else {
                break;
            };
            let Some(keys) = self.finished.remove(&old) else {
                continue;
            };
            self.delivered.remove(&old);
            self.unmark_unreported(&old, &keys);
            for k in &keys {
                if let Some(heads) = self.heads.get_mut(k) {
                    heads.retain(|h| h.id != old);
                    if heads.is_empty() {
                        self.heads.remove(k);
                    }
                }
            }
            for k in keys {
                if let Some(ids) = self.keys.get_mut(&k) {
                    ids.remove(&old);
                    if ids.is_empty() {
                        self.keys.remove(&k);
                    }
                }
            }
        }
    }

    /// What `p` continues: the promotion its report names, else [`Self::earlier_elsewhere`].
    pub fn chain(&self, p: &Promotion) -> Option<Chain> {
        let Some(named) = p.report.as_ref().and_then(|r| r.promoted_from.as_deref()) else {
            return self.earlier_elsewhere(p).map(Chain::SameRevision);
        };
        let id = self.resolve(named);
        let seen = match self.open.get(id) {
            Some(o) => Some(Earlier {
                id: named.to_string(),
                trace_id: o.trace_id,
                root: o.root,
            }),
            None => p
                .keys
                .iter()
                .filter_map(|k| self.heads.get(k))
                .flatten()
                .find(|h| h.id == id)
                .map(|h| Earlier {
                    id: named.to_string(),
                    trace_id: h.trace_id,
                    root: h.root,
                }),
        };
        Some(Chain::Named {
            id: named.to_string(),
            seen,
        })
    }

    /// The latest promotion that started before `p`, named one of its revision keys (the same
    /// commit or digest) and went to another environment, open or finished: the one `p`
    /// continues when its report does not name it (`promoted_from`).
    pub fn earlier_elsewhere(&self, p: &Promotion) -> Option<Earlier> {
        let env = p.environment()?;
        p.keys
            .iter()
            .filter_map(|k| self.heads.get(k))
            .flatten()
            .filter(|h| *h.environment != *env && h.start < p.start && h.id != p.id)
            // The latest; of two at the same instant, the smaller id (a stable choice).
            .max_by(|a, b| a.start.cmp(&b.start).then(b.id.cmp(&a.id)))
            .map(|h| Earlier {
                id: h.id.clone(),
                trace_id: h.trace_id,
                root: h.root,
            })
    }

    /// Entries held by the indexes, for the engine's size report.
    pub fn index_entries(&self) -> usize {
        self.keys.len() + self.targets.len() + self.oci_repos.len()
    }
}
