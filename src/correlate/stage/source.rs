//! The source stage: a GitRepository, OCIRepository, Bucket or HelmChart storing the promoted
//! revision, or failing to fetch it.
//!
//! A source joins a promotion when its artifact names the promotion id, or when its revision
//! matches a promotion's commit or digest (`matching` decides among several). A failing
//! OCIRepository that follows the promoted repository and tag is the promotion's source
//! failure even before it stored anything.

use jiff::Timestamp;

use super::super::config::add;
use super::super::engine::Engine;
use super::super::promotion::push_span;
use super::super::span::{Failure, StageResult, StageSpan};
use super::super::state_of;
use super::matching::{choose, Evidence};
use super::traffic::strip_credentials;
use super::trigger::{claim_trigger, update_trigger, TriggerDraft};
use crate::model::{condition, CondStatus, SourceObs};
use crate::revision;
use crate::trace::{attr, Attributes, SpanId, Stage};

#[derive(Default)]
pub(in crate::correlate) struct SourceState {
    /// Boxed: the map of states stays small, most of its slots being empty.
    pub last: Option<Box<SourceObs>>,
    pub trigger: Option<TriggerDraft>,
}

fn evidence(obs: &SourceObs) -> Evidence<'_> {
    Evidence {
        tag: obs
            .ref_tag
            .as_deref()
            .or_else(|| obs.revision.as_deref().and_then(revision::oci_tag)),
        repository: obs.url.as_deref().and_then(|u| u.strip_prefix("oci://")),
        source: None,
        words: vec![&obs.object.name, &obs.object.namespace],
    }
}

impl Engine {
    /// `obs` comes boxed as the state keeps it (`Engine::hold` keeps it so).
    pub(in crate::correlate) fn on_source(&mut self, at: Timestamp, obs: Box<SourceObs>) {
        // The key is copied only for a source seen the first time.
        let Some(st) = state_of(&mut self.sources, &obs.object) else {
            return;
        };
        update_trigger(
            &mut st.trigger,
            &obs.requested_at,
            &obs.last_handled,
            &obs.conditions,
            at,
        );
        if st.last.as_deref() == Some(&*obs) {
            return; // a re-list: nothing new
        }
        let old_rev = st.last.as_ref().and_then(|l| l.revision.as_deref());
        self.revs
            .reindex(&obs.object, old_rev, obs.revision.as_deref());
        // A source seen for the first time shows where it stands, not a change: what an initial
        // list shows is judged once every list is in (`open_unreported_in_flight`).
        let changed = st.last.is_some() && old_rev != obs.revision.as_deref();
        // Joining reads the object's trigger but not its last observation: store it after.
        self.correlate_source(at, &obs);
        if obs.suspended {
            self.suspended_sources.insert(obs.object.clone());
        } else {
            self.suspended_sources.remove(&obs.object);
        }
        let key = changed.then(|| obs.object.clone());
        if let Some(st) = self.sources.get_mut(&obs.object) {
            self.followers
                .update_chart(&obs.object, st.last.as_deref(), Some(&obs));
            st.last = Some(obs);
        }
        if let Some(key) = key {
            // An unreported promotion joins the source as it is now.
            if let Some(obs) = self.sources.get(&key).and_then(|s| s.last.clone()) {
                self.source_stored(at, &obs);
            }
        }
    }

    pub(in crate::correlate) fn correlate_source(&mut self, at: Timestamp, obs: &SourceObs) {
        let named = obs
            .artifact_promotion_id
            .clone()
            .or_else(|| obs.marks.promotion_id.clone());
        if let Some(n) = named {
            let start = obs.artifact_updated.unwrap_or(at).min(at);
            if self.ensure_annotated(&n, start) {
                self.join_source(at, &n, obs);
            }
            return;
        }
        let keys: Vec<_> = obs
            .revision
            .iter()
            .chain(obs.origin_revision.iter())
            .flat_map(|r| revision::lookup_key_refs(r))
            .collect();
        let candidates = self.reg.by_keys(keys.iter().map(|k| &**k));
        let chosen = choose(&self.reg, candidates, || evidence(obs));
        if chosen.is_empty() {
            self.source_candidate(at, obs);
        }
        let overtaken = self.overtaken_by(obs, &chosen);
        for pid in chosen {
            self.join_source(at, &pid, obs);
        }
        for pid in overtaken {
            self.delivered_as(&pid, obs);
        }
    }

    pub(in crate::correlate) fn join_source(&mut self, at: Timestamp, pid: &str, obs: &SourceObs) {
        if let Some(rev) = &obs.revision {
            self.reg.add_keys(pid, revision::lookup_keys(rev));
        }
        let trigger = self
            .sources
            .get_mut(&obs.object)
            .and_then(|s| s.trigger.as_mut());
        let cluster = &self.cfg.cluster;
        let d = &self.cfg.deadlines;
        let via = self.receivers.targeting(&obs.object);
        let Some(p) = self.reg.get_mut(pid) else {
            return;
        };
        self.touched.insert(pid.to_string());
        claim_trigger(p, trigger, &obs.object, &obs.uid, cluster, d, via);
        if p.digest.is_none() {
            p.digest = obs
                .revision
                .as_deref()
                .and_then(revision::digest_hex)
                .map(|h| format!("sha256:{h}"));
        }
        if p.artifact_created.is_none() {
            p.artifact_created = obs.artifact_created;
        }
        if p.commit.is_none() {
            p.commit = obs
                .origin_revision
                .iter()
                .chain(obs.revision.iter())
                .find_map(|r| revision::commit_sha(r))
                .map(str::to_string);
        }
        let rev = obs.revision.clone().unwrap_or_default();
        let idx = match p
            .sources
            .iter()
            .position(|s| s.object.as_ref() == Some(&obs.object))
        {
            Some(i) => i,
            None => {
                // A request to fetch (the trigger) starts the fetch it asks for.
                let start = p
                    .triggers
                    .iter()
                    .find(|t| t.object.as_ref() == Some(&obs.object))
                    .map_or(p.start, |t| t.start);
                let mut s = StageSpan::new(
                    Stage::Source,
                    SpanId::default(),
                    p.root,
                    Some(obs.object.clone()),
                    start,
                    add(start, d.source),
                );
                s.derive_id(pid, cluster, &obs.uid, &rev);
                s.set_object_attrs(&obs.object);
                push_span(&mut p.sources, s);
                p.sources.len() - 1
            }
        };
        let span = &mut p.sources[idx];
        if !span.is_open() {
            return;
        }
        source_attrs(&mut span.attrs, obs);
        span.key.revision = obs.revision.clone();
        if stored(obs) {
            let end = obs.artifact_updated.unwrap_or(at);
            span.start = span.start.min(end);
            let summary = format!("stored artifact for revision {rev}");
            span.finish(end, StageResult::Succeeded, summary);
        }
    }

    /// A source that has not (yet) produced the promoted revision: an OCIRepository following
    /// the promoted repository and tag is the promotion's source, and its failure is the
    /// promotion's source failure.
    fn source_candidate(&mut self, at: Timestamp, obs: &SourceObs) {
        let Some(repo) = obs.url.as_deref().and_then(|u| u.strip_prefix("oci://")) else {
            return;
        };
        let ids = self.reg.by_oci_repository(repo);
        if ids.is_empty() {
            return;
        }
        let Some(ready) =
            condition(&obs.conditions, "Ready").filter(|c| c.status == CondStatus::False)
        else {
            return;
        };
        let cluster = &self.cfg.cluster;
        let d = &self.cfg.deadlines;
        for id in ids {
            let Some(p) = self.reg.get_mut(&id) else {
                continue;
            };
            if p.artifact_tag()
                .is_some_and(|t| obs.ref_tag.as_deref().is_some_and(|r| r != t))
            {
                continue;
            }
            if ready.last_transition.is_some_and(|t| t < p.start) {
                continue; // failing since before the promotion: not this promotion's fetch
            }
            if p.sources
                .iter()
                .any(|s| s.object.as_ref() == Some(&obs.object))
            {
                continue;
            }
            let end = ready.last_transition.unwrap_or(at);
            let mut s = StageSpan::new(
                Stage::Source,
                SpanId::default(),
                p.root,
                Some(obs.object.clone()),
                p.start,
                add(p.start, d.source),
            );
            s.derive_id(&id, cluster, &obs.uid, "failed");
            s.set_object_attrs(&obs.object);
            source_attrs(&mut s.attrs, obs);
            s.key.revision = obs.revision.clone();
            s.finish(
                end,
                StageResult::Failed(Failure {
                    reason: ready.reason.clone(),
                    message: ready.message.clone(),
                    diverges_at: Stage::Source,
                }),
                format!("{}: {}", ready.reason, ready.message),
            );
            push_span(&mut p.sources, s);
            self.touched.insert(id.clone());
        }
    }
}

/// Whether the source's artifact holds its revision (Ready, or the revision named in Ready's
/// message while Ready is not yet True).
pub(in crate::correlate) fn stored(obs: &SourceObs) -> bool {
    let Some(rev) = obs.revision.as_deref().filter(|r| !r.is_empty()) else {
        return false;
    };
    condition(&obs.conditions, "Ready")
        .is_none_or(|c| c.status == CondStatus::True || c.message.contains(rev))
}

fn source_attrs(a: &mut Attributes, obs: &SourceObs) {
    if let Some(rev) = &obs.revision {
        a.set(attr::FLUX_REVISION, rev.clone());
        if let Some(h) = revision::digest_hex(rev) {
            a.set(attr::OCI_MANIFEST_DIGEST, format!("sha256:{h}"));
        }
        if let Some(t) = revision::oci_tag(rev) {
            a.set(attr::DELIVERY_ARTIFACT_TAG, t.to_string());
        }
    }
    let commit = obs
        .origin_revision
        .iter()
        .chain(obs.revision.iter())
        .find_map(|r| revision::commit_sha(r));
    a.set_opt(attr::VCS_REF_HEAD_REVISION, commit.map(str::to_string));
    if let Some(url) = &obs.url {
        match url.strip_prefix("oci://") {
            Some(repo) => a.set(attr::DELIVERY_ARTIFACT_REPOSITORY, strip_credentials(repo)),
            None => a.set(attr::VCS_REPOSITORY_URL_FULL, strip_credentials(url)),
        }
    }
}
