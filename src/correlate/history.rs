//! History: what the initial state shows as delivered is not a promotion in flight.
//!
//! After a start or restart the initial lists name promotions long finished: an OCI artifact
//! and a pod template keep the promotion-id annotation of the promotion that put them there,
//! an ImageUpdateAutomation keeps its last push, Flux's Events keep their metadata for an
//! hour. Opened as promotions, each would be judged again, and most of them failed (nothing
//! moves any more for them to join). So when the engine releases what it held
//! ([`Engine::hold`]), each promotion the initial state opened that no report names is kept
//! only while its delivery is still moving:
//! - a source stores its revision and a Kustomization or HelmRelease following that source has
//!   not attempted it, not applied it, or is not Ready (Flux at work, retrying or failing), or
//!   a Deployment it applies has a rollout under way; or
//! - a rollout it claimed is still under way; or
//! - image automation pushed its commit within the promotion deadline and no source stores the
//!   commit yet.
//!
//! The rest is history: forgotten without a verdict, a span, an Event or a count, and
//! remembered (bounded) so that a re-list or an old Event does not open it again. A report
//! naming it later opens it again, whole: its verdict is what the objects recorded of its
//! delivery, at their times. This sits between the release of the initial lists (`engine.rs`) and `advance`,
//! which would otherwise judge these promotions at their deadlines.

use super::config::add;
use super::engine::{Engine, Output};
use super::promotion::{Promotion, Traceability};
use super::span::StageSpan;
use super::stage::source::stored;
use super::timers::Wake;
use super::Set;
use crate::model::ObjectRef;
use crate::revision;
use crate::trace::{attr, Stage};

/// A traffic probe's span (a Flagger analysis is a traffic span too).
fn is_probe(s: &StageSpan) -> bool {
    s.stage == Stage::Traffic && s.attrs.get_str(attr::FLAGGER_CANARY_NAME).is_none()
}

impl Engine {
    /// After the release of the initial lists: forgets the promotions opened since `before`
    /// that no report names and whose delivery the initial state shows settled.
    pub(super) fn forget_history(&mut self, before: &Set<String>) {
        let settled: Vec<String> = self
            .reg
            .values()
            .filter(|p| !before.contains(&p.id) && p.report.is_none())
            .filter(|p| !self.moving(p))
            .map(|p| p.id.clone())
            .collect();
        for id in settled {
            self.forget_settled(&id);
        }
    }

    /// Whether a promotion opened from the initial state still has work under way.
    fn moving(&self, p: &Promotion) -> bool {
        // Its own stages still at work: a rollout rolling, a Flagger analysis under way. A
        // traffic probe is the agent's own work, asked for by a rollout that had ended.
        if p.spans().any(|s| s.is_open() && !is_probe(s)) {
            return true;
        }
        // A selection image automation has not pushed yet is judged by its own deadline
        // (`stage::image`), as it would have been had the agent watched it.
        if p.image.is_some() && p.commit.is_none() {
            return true;
        }
        let sources: Vec<(&ObjectRef, &str)> = self
            .revs
            .objects(&p.keys)
            .into_iter()
            .filter(|o| o.kind.is_source())
            .filter_map(|o| {
                let (key, st) = self.sources.get_key_value(&o)?;
                let obs = st.last.as_deref().filter(|obs| stored(obs))?;
                let rev = obs.revision.as_deref()?;
                let keys = revision::lookup_keys(rev);
                p.keys
                    .iter()
                    .any(|k| keys.contains(k))
                    .then_some((key, rev))
            })
            .collect();
        if sources.is_empty() {
            // Pushed, not fetched yet: the source is about to store it, unless it stored a
            // later commit since (the push was overtaken, and delivered with it or not at all).
            return p.traceability == Traceability::Automated
                && add(p.start, self.cfg.deadlines.promotion) >= self.now
                && !self.source_moved_on(p);
        }
        sources.into_iter().any(|(src, rev)| {
            self.reconcilers
                .iter()
                .filter(|(_, st)| st.last.as_ref().and_then(|l| l.source_ref.as_ref()) == Some(src))
                .any(|(f, _)| self.in_flight(f, rev))
        })
    }

    /// Whether the GitRepository an automated promotion's automation commits to stored an
    /// artifact after the push.
    fn source_moved_on(&self, p: &Promotion) -> bool {
        let automation = p.id.strip_prefix("automated/").and_then(|rest| {
            let mut parts = rest.splitn(3, '/');
            Some((parts.next()?, parts.next()?))
        });
        let Some((ns, name)) = automation else {
            return false;
        };
        self.images
            .automation(ns, name)
            .and_then(|a| a.source_ref.as_ref())
            .and_then(|src| self.sources.get(src))
            .and_then(|st| st.last.as_ref())
            .filter(|obs| stored(obs))
            .and_then(|obs| obs.artifact_updated)
            .is_some_and(|t| t > p.start)
    }

    /// Forgets one settled promotion: no verdict, nothing emitted; what it claimed is done.
    fn forget_settled(&mut self, id: &str) {
        let Some(mut p) = self.reg.take_for_rename(id) else {
            return;
        };
        // No probe of what ended before the start: neither asked for nor kept open.
        self.out
            .retain(|o| !matches!(o, Output::Probe(r) if r.promotion_id == id));
        p.traffic.retain(|s| !(is_probe(s) && s.is_open()));
        self.timers.cancel(&Wake::Promotion(id.to_string()));
        self.touched.remove(id);
        self.rollouts.release(&p);
        for st in self.reconcilers.values_mut() {
            if st.joined.as_deref() == Some(id) {
                st.joined = None;
            }
        }
        // What runs now still says who put it there.
        self.workloads.on_history(&p);
        let retain = self.cfg.retain_finished;
        self.reg.remember_history(p, retain);
    }

    /// A report names a promotion the initial state showed delivered: it opens again with what
    /// the objects recorded of its delivery (every stage as it happened, at the objects' times)
    /// and reaches its verdict a settle period later. False when it is not kept.
    pub(super) fn report_history(
        &mut self,
        at: jiff::Timestamp,
        report: crate::model::PromotionReport,
    ) -> bool {
        let Some(mut p) = self.reg.take_history(&report.id) else {
            return false;
        };
        let id = p.id.clone();
        p.merge_report(report, self.cfg.deadlines.promotion);
        // Delivered before the start: no newer promotion of its target is superseded by it or
        // loses its place in the index to it.
        p.target = None;
        let keys = super::promotion::report_keys(p.report.as_ref());
        let mut all = std::mem::take(&mut p.keys);
        all.extend(keys);
        self.reg.open(p);
        self.reg.add_keys(&id, all);
        self.touched.insert(id.clone());
        self.rejoin(&id, at);
        true
    }
}
