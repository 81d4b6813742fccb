//! Unreported promotions: a revision that a source stores and a Kustomization or HelmRelease
//! follows is a promotion in its own right, announced or not.
//!
//! When a source stores a commit or digest that no open or remembered promotion named, and a
//! reconciler follows that source, a promotion opens with a deterministic id derived from the
//! source and revision (`unreported/<namespace>/<source>/<12 hex>`) and
//! `delivery.traceability=unreported`; from there it joins like any other (reconcile, apply,
//! rollouts, probe). A report or annotation that names the same revision later takes it over:
//! the promotion takes the report's id and every id is derived again from it, so the trace is
//! the one the report would have opened (`Engine::adopt_report`).
//!
//! After a (re)start the initial lists show only each object's last state: a revision opens an
//! unreported promotion then only while its delivery is still in flight (a follower has not
//! applied it, or a rollout of a Deployment a follower applies is under way).

use jiff::Timestamp;

use super::config::add;
use super::engine::{Engine, Output};
use super::promotion::{report_keys, target_key, Promotion, Successor, Traceability};
use super::stage::rollout::RolloutOwner;
use super::stage::source::stored;
use super::timers::Wake;
use super::Map;
use crate::model::{condition, CondStatus, Kind, ObjectRef, PromotionReport, SourceObs};
use crate::revision;
use crate::story::Story;
use crate::trace::Traceparent;

/// The hex a revision is keyed by (a commit, else a digest): unreported promotions are opened
/// for these only (a chart version from a Helm repository names no content).
fn revision_hex(rev: &str) -> Option<&str> {
    revision::commit_sha(rev).or_else(|| revision::digest_hex(rev))
}

/// The deterministic id of the unreported promotion of `rev` stored by `source`.
pub(super) fn unreported_id(source: &ObjectRef, hex: &str) -> String {
    format!(
        "unreported/{}/{}/{}",
        source.namespace,
        source.name,
        &hex[..12.min(hex.len())]
    )
}

impl Engine {
    /// A source stored a revision (live, not from an initial list): opens its unreported
    /// promotion when nothing announced it.
    pub(super) fn source_stored(&mut self, at: Timestamp, obs: &SourceObs) {
        if self.held() {
            return;
        }
        if self.unannounced(obs, at).is_some() && self.followed(&obs.object) {
            self.open_unreported(at, obs);
        }
    }

    /// After the initial lists: every source whose revision nobody announced and whose
    /// delivery is still in flight opens its unreported promotion.
    pub(super) fn open_unreported_in_flight(&mut self, at: Timestamp) {
        let mut followers: Map<&ObjectRef, Vec<&ObjectRef>> = Map::default();
        for (r, st) in &self.reconcilers {
            if let Some(src) = st.last.as_ref().and_then(|l| l.source_ref.as_ref()) {
                followers.entry(src).or_default().push(r);
            }
        }
        let mut open: Vec<Box<SourceObs>> = Vec::new();
        for (src, st) in &self.sources {
            let Some(obs) = st.last.as_ref() else {
                continue;
            };
            let Some(rev) = self.unannounced(obs, at) else {
                continue;
            };
            let Some(fs) = followers.get(src) else {
                continue;
            };
            if fs.iter().any(|f| self.in_flight(f, rev)) {
                open.push(obs.clone());
            }
        }
        open.sort_by(|a, b| a.object.cmp(&b.object));
        for obs in open {
            self.open_unreported(at, &obs);
        }
    }

    /// The revision a source stored, if no promotion announced it, it is recent, and nothing
    /// names a promotion on the source itself.
    fn unannounced<'a>(&self, obs: &'a SourceObs, at: Timestamp) -> Option<&'a str> {
        if obs.object.kind == Kind::HelmRepository
            || obs.artifact_promotion_id.is_some()
            || obs.marks.promotion_id.is_some()
            || !stored(obs)
        {
            return None;
        }
        let rev = obs.revision.as_deref()?;
        let hex = revision_hex(rev)?;
        let keys = revision::promotion_keys(hex);
        if self.reg.knows_any(keys.iter().map(String::as_str)) {
            return None;
        }
        // Stored longer ago than a promotion may take: history, not a delivery.
        let when = obs.artifact_updated.unwrap_or(at);
        (add(when, self.cfg.deadlines.promotion) >= self.now).then_some(rev)
    }

    /// Whether some Kustomization or HelmRelease follows this source.
    fn followed(&self, src: &ObjectRef) -> bool {
        self.reconcilers
            .values()
            .any(|st| st.last.as_ref().and_then(|l| l.source_ref.as_ref()) == Some(src))
    }

    /// Whether a follower's delivery of `rev` is under way: not applied yet, or a rollout of a
    /// Deployment it applies has not ended, or a Flagger analysis of one is under way.
    pub(super) fn in_flight(&self, follower: &ObjectRef, rev: &str) -> bool {
        let Some(obs) = self.reconcilers.get(follower).and_then(|s| s.last.as_ref()) else {
            return false;
        };
        let ready =
            condition(&obs.conditions, "Ready").is_some_and(|c| c.status == CondStatus::True);
        // A Kustomization attempts the source's revision string; a HelmRelease the chart
        // version, with the artifact's digest beside it.
        let keys = revision::lookup_keys(rev);
        let attempted = obs.last_attempted.as_deref() == Some(rev)
            || [&obs.last_attempted, &obs.last_attempted_digest]
                .into_iter()
                .flatten()
                .flat_map(|r| revision::lookup_keys(r))
                .any(|k| keys.contains(&k));
        let applied =
            obs.object.kind == Kind::HelmRelease || obs.last_applied == obs.last_attempted;
        if !(attempted && applied && ready) {
            return true;
        }
        self.rollouts
            .managed
            .get(follower)
            .into_iter()
            .flatten()
            .any(|d| {
                let rolling = self.rollouts.deployments.get(d).is_some_and(|st| {
                    st.rollout.as_ref().is_some_and(|r| {
                        matches!(r.owner, RolloutOwner::Unclaimed(_)) && r.ended_unseen.is_none()
                    })
                });
                // A Flagger analysis of it under way: the delivery ends with the analysis.
                let analysing = self.canaries.of_target(d).is_some_and(|c| {
                    matches!(
                        c.phase.as_str(),
                        "Progressing" | "Promoting" | "Finalising" | "Waiting" | "WaitingPromotion"
                    )
                });
                rolling || analysing
            })
    }

    fn open_unreported(&mut self, at: Timestamp, obs: &SourceObs) {
        let Some(hex) = obs.revision.as_deref().and_then(revision_hex) else {
            return;
        };
        let id = unreported_id(&obs.object, hex);
        if self.reg.is_open(&id) || self.reg.is_finished(&id) {
            return;
        }
        let start = obs.artifact_updated.unwrap_or(at).min(at);
        let p = Promotion::new(
            id.clone(),
            start,
            None,
            Traceability::Unreported,
            &self.cfg.cluster,
            self.cfg.deadlines.promotion,
        );
        self.reg.open(p);
        let keys = revision::promotion_keys(hex).to_vec();
        self.reg.mark_unreported(&id, &keys);
        self.reg.add_keys(&id, keys);
        self.touched.insert(id.clone());
        self.rejoin(&id, at);
    }

    /// A report names the revision of an open unreported promotion: the report takes it over.
    /// Returns false when there is none.
    pub(super) fn adopt_report(&mut self, at: Timestamp, report: &PromotionReport) -> bool {
        let keys = report_keys(Some(report));
        self.adopt(at, &keys, &report.id, Taker::Report(report))
            || self.reported_late(report, &keys)
    }

    /// A report for a revision whose unreported promotion already has its verdict: that trace is
    /// the report's. Its verdict is given again under the report's id, pointing at that trace,
    /// with no span of its own (a second trace of one delivery would stand beside the first).
    fn reported_late(&mut self, report: &PromotionReport, keys: &[String]) -> bool {
        let Some(d) = self
            .reg
            .delivered_by_keys(keys.iter().map(String::as_str))
            .cloned()
        else {
            return false;
        };
        let story = Story {
            promotion_id: report.id.clone(),
            trace_id: d.trace_id,
            root_span_id: d.root,
            traceability: Traceability::Reported,
            environment: Some(report.environment.clone()),
            app: report.app.clone(),
            actor: report.actor.clone(),
            pipeline: report.pipeline.clone(),
            commit_time: report.commit_time,
            promoted: format!("delivered before it was reported, as {}", d.id),
            resolved_digest: None,
            cluster: self.cfg.cluster.clone(),
            start: d.start,
            end: d.end,
            outcome: d.outcome,
            divergence: d.divergence,
            stages: Vec::new(),
            superseded_by: None,
            trace_link: None,
        };
        self.out.push(Output::Story(Box::new(story)));
        let done = Promotion::new(
            report.id.clone(),
            d.start,
            Some(report.clone()),
            Traceability::Reported,
            &self.cfg.cluster,
            self.cfg.deadlines.promotion,
        );
        // Finished at once: the same report again changes nothing.
        self.reg.finish(done, self.cfg.retain_finished);
        true
    }

    /// An annotation names promotion `id` on a reconciler attempting `rev`: an open
    /// unreported promotion of that revision becomes `id`.
    pub(super) fn adopt_annotation(&mut self, at: Timestamp, id: &str, rev: &str) -> bool {
        if self.reg.is_open(id) || self.reg.is_finished(id) {
            return false;
        }
        let keys = revision::lookup_keys(rev);
        self.adopt(at, &keys, id, Taker::Annotation)
    }

    /// Image automation pushed `commit`, which an open unreported promotion already delivers
    /// (the source stored it before the agent saw the push): the automated promotion `id`
    /// takes it over, starting at the push.
    pub(super) fn adopt_push(
        &mut self,
        id: &str,
        commit: &str,
        pushed: Timestamp,
        target: String,
    ) -> bool {
        let keys = revision::promotion_keys(commit).to_vec();
        self.adopt(
            pushed,
            &keys,
            id,
            Taker::Push {
                commit,
                pushed,
                target,
            },
        )
    }

    fn adopt(&mut self, at: Timestamp, keys: &[String], new: &str, taker: Taker) -> bool {
        let Some(old) = self
            .reg
            .open_unreported_by_keys(keys.iter().map(String::as_str))
            .filter(|id| {
                self.reg
                    .get(id)
                    .is_some_and(|p| p.traceability == Traceability::Unreported)
            })
        else {
            return false;
        };
        let Some(mut p) = self.reg.take_for_rename(&old) else {
            return false;
        };
        self.timers.cancel(&Wake::Promotion(old.clone()));
        let new = new.to_string();
        let tp = match &taker {
            Taker::Report(r) => r
                .traceparent
                .as_deref()
                .and_then(|t| Traceparent::parse(t).ok()),
            _ => None,
        };
        p.rekey(new.clone(), tp, &self.cfg.cluster);
        match taker {
            Taker::Report(r) => {
                p.merge_report(r.clone(), self.cfg.deadlines.promotion);
                p.target = p.report.as_ref().and_then(target_key);
            }
            Taker::Annotation => p.traceability = Traceability::Annotated,
            Taker::Push {
                commit,
                pushed,
                target,
            } => {
                p.traceability = Traceability::Automated;
                p.commit = Some(commit.to_string());
                p.expect_source = true;
                p.target = Some(target);
                // The stages that began when the source stored the commit begin at the push,
                // as they would have had the push been seen first.
                p.start_at(pushed.min(p.start), self.cfg.deadlines.promotion);
            }
        }
        let mut keys = std::mem::take(&mut p.keys);
        keys.extend(report_keys(p.report.as_ref()));
        for a in &p.aliases {
            self.reg.alias(a.clone(), &new);
        }
        let successor = Successor {
            id: new.clone(),
            trace_id: p.trace_id,
            root: p.root,
            at: p.start.max(at),
        };
        let start = p.start;
        if let Some(older) = self.reg.open(p) {
            if self.reg.get(&older).is_some_and(|o| o.start <= start) {
                self.supersede(&older, successor);
            }
        }
        self.reg.add_keys(&new, keys);
        // What points at the old id points at the new one.
        for st in self.rollouts.deployments.values_mut() {
            if let Some(RolloutOwner::Promotion(pid)) = st.rollout.as_mut().map(|r| &mut r.owner) {
                if *pid == old {
                    pid.clone_from(&new);
                }
            }
        }
        for st in self.reconcilers.values_mut() {
            if st.joined.as_deref() == Some(old.as_str()) {
                st.joined = Some(new.clone());
            }
        }
        self.touched.remove(&old);
        self.touched.insert(new.clone());
        self.rejoin(&new, at);
        true
    }
}

/// What takes an unreported promotion over.
enum Taker<'a> {
    Report(&'a PromotionReport),
    /// An annotation naming the promotion on a reconciler.
    Annotation,
    /// Image automation's push of the commit.
    Push {
        commit: &'a str,
        pushed: Timestamp,
        target: String,
    },
}
