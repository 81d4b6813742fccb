//! The image stage: Flux image automation. An ImagePolicy selects a new image tag
//! (`status.latestRef` changes; its `Ready` condition's `lastTransitionTime` says when), an
//! ImageUpdateAutomation in the same namespace commits it to Git and pushes
//! (`status.lastPushCommit`, `lastPushTime`). Each push is a promotion of its own, with no report:
//! traceability `automated`.
//!
//! - A push opens `automated/<ns>/<automation>/<12 hex of the commit>` with the commit's
//!   revision keys and an `image.update` span (selection → push): from there the GitRepository,
//!   Kustomization and rollout join it as they join a reported Git promotion.
//! - A selection no push covers yet opens `automated/<ns>/<automation>/<policy>:<tag>` with an
//!   open `image.update` span: it fails when the automation turns `Ready=False` after the
//!   selection, and times out at the image deadline. A push that covers it takes its place (the
//!   pending promotion ends without a trace); an automation that ran after the selection, is
//!   Ready and pushed nothing (Git already held that image) drops it the same way.
//!
//! Times come from the objects only (condition and push times), never from when a change was
//! seen, and each decision reads only the latest state of the policy and automation plus the
//! selections this agent saw: a restarted agent derives the same promotions.

use jiff::Timestamp;

use super::super::config::{add, EVENT_WINDOW_SLACK};
use super::super::engine::Engine;
use super::super::events::EventStore;
use super::super::promotion::{Promotion, Successor, Traceability};
use super::super::span::{Failure, StageResult, StageSpan};
use super::super::timers::Wake;
use super::super::Map;
use crate::model::{
    condition, CondStatus, ImageAutomationObs, ImagePolicyObs, ImageRef, Kind, ObjectRef,
};
use crate::revision;
use crate::trace::{attr, span_id_for, Stage};

/// Selections remembered per policy: enough to find the one a late-seen push applied.
const SELECTIONS_KEPT: usize = 8;

/// What the engine holds about image automation objects.
#[derive(Default)]
pub(in crate::correlate) struct Images {
    policies: Map<ObjectRef, PolicyState>,
    automations: Map<ObjectRef, Box<ImageAutomationObs>>,
}

impl Images {
    pub fn len(&self) -> usize {
        self.policies.len() + self.automations.len()
    }

    /// The last observation of an ImageUpdateAutomation.
    pub fn automation(&self, namespace: &str, name: &str) -> Option<&ImageAutomationObs> {
        self.automations
            .get(&ObjectRef::new(
                Kind::ImageUpdateAutomation,
                namespace,
                name,
            ))
            .map(|a| &**a)
    }

    pub fn forget(&mut self, o: &ObjectRef) {
        self.policies.remove(o);
        self.automations.remove(o);
    }

    /// Image objects of `kind` held, for a re-list to compare against.
    pub fn keys(&self, kind: Kind) -> Vec<ObjectRef> {
        match kind {
            Kind::ImagePolicy => self.policies.keys().cloned().collect(),
            Kind::ImageUpdateAutomation => self.automations.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

struct PolicyState {
    last: ImagePolicyObs,
    /// The images it selected and when, oldest first.
    selections: Vec<Selection>,
}

#[derive(Clone, Debug, PartialEq)]
struct Selection {
    image: ImageRef,
    at: Timestamp,
}

/// The selection a policy observation shows: its latest image, selected when its `Ready`
/// condition last changed (the message names the tag, so it changes with the selection).
fn selection_of(obs: &ImagePolicyObs) -> Option<Selection> {
    let image = obs.latest.clone()?;
    let ready = condition(&obs.conditions, "Ready").filter(|c| c.status == CondStatus::True)?;
    Some(Selection {
        image,
        at: ready.last_transition?,
    })
}

fn same_image(a: &ImageRef, b: &ImageRef) -> bool {
    a.name == b.name && a.tag == b.tag
}

/// The promotion id of a push: the automation and the first 12 hex of the commit.
pub(in crate::correlate) fn push_id(automation: &ObjectRef, commit: &str) -> String {
    let short = commit.get(..12).unwrap_or(commit);
    format!(
        "automated/{}/{}/{short}",
        automation.namespace, automation.name
    )
}

/// The promotion id of a selection no push covers: the automation, the policy and the tag.
pub(in crate::correlate) fn selection_id(
    automation: &ObjectRef,
    policy: &str,
    image: &ImageRef,
) -> String {
    format!(
        "automated/{}/{}/{policy}:{}",
        automation.namespace, automation.name, image.tag
    )
}

/// The push summary's branch and short commit: `pushed commit '<7 hex>' to branch '<branch>'`.
fn push_summary(a: &ImageAutomationObs, commit: &str) -> String {
    let short = commit.get(..7).unwrap_or(commit);
    match &a.push_branch {
        Some(b) => format!("pushed commit '{short}' to branch '{b}'"),
        None => format!("pushed commit '{short}'"),
    }
}

impl Engine {
    pub(in crate::correlate) fn on_image_policy(&mut self, obs: ImagePolicyObs) {
        if self
            .images
            .policies
            .get(&obs.object)
            .is_some_and(|st| st.last == obs)
        {
            return; // a re-list: nothing new
        }
        let selection = selection_of(&obs);
        let st = self
            .images
            .policies
            .entry(obs.object.clone())
            .or_insert_with(|| PolicyState {
                last: obs.clone(),
                selections: Vec::new(),
            });
        if let Some(sel) = selection {
            let known = st
                .selections
                .last()
                .is_some_and(|l| same_image(&l.image, &sel.image));
            if !known {
                st.selections.push(sel);
                if st.selections.len() > SELECTIONS_KEPT {
                    st.selections.remove(0);
                }
            }
        }
        st.last = obs;
        let ns = st.last.object.namespace.clone();
        let mut automations: Vec<ObjectRef> = self
            .images
            .automations
            .keys()
            .filter(|a| a.namespace == ns)
            .cloned()
            .collect();
        automations.sort();
        for a in automations {
            self.evaluate_automation(&a);
        }
    }

    pub(in crate::correlate) fn on_image_automation(&mut self, obs: ImageAutomationObs) {
        let object = obs.object.clone();
        if self.images.automations.get(&object).map(|a| &**a) == Some(&obs) {
            return; // a re-list: nothing new
        }
        self.images
            .automations
            .insert(object.clone(), Box::new(obs));
        self.evaluate_automation(&object);
    }

    /// Opens, completes or drops the automated promotions of one automation from the latest
    /// state of it and of the policies in its namespace.
    fn evaluate_automation(&mut self, automation: &ObjectRef) {
        let Some(a) = self.images.automations.get(automation).cloned() else {
            return;
        };
        if let (Some(commit), Some(pushed)) = (a.last_push_commit.clone(), a.last_push_time) {
            self.on_push(&a, &commit, pushed);
        }
        let mut policies: Vec<(ObjectRef, Selection)> = self
            .images
            .policies
            .iter()
            .filter(|(p, _)| p.namespace == automation.namespace)
            .filter_map(|(p, st)| Some((p.clone(), st.selections.last()?.clone())))
            .collect();
        policies.sort_by(|x, y| x.0.cmp(&y.0));
        for (policy, sel) in policies {
            self.on_selection(&a, &policy, sel);
        }
    }

    /// The selection a push applied: among the policies it observed, the latest selection of
    /// the image it wrote made no later than the push; else the first policy it names.
    fn pushed_selection(
        &self,
        a: &ImageAutomationObs,
        pushed: Timestamp,
    ) -> Option<(ObjectRef, ImageRef, Option<Timestamp>)> {
        let mut best: Option<(ObjectRef, ImageRef, Timestamp)> = None;
        for (name, image) in &a.observed_policies {
            let policy = ObjectRef::new(Kind::ImagePolicy, a.object.namespace.clone(), name);
            let Some(st) = self.images.policies.get(&policy) else {
                continue;
            };
            let Some(sel) =
                st.selections.iter().rev().find(|s| {
                    same_image(&s.image, image) && s.at <= add(pushed, EVENT_WINDOW_SLACK)
                })
            else {
                continue;
            };
            if best.as_ref().is_none_or(|b| sel.at > b.2) {
                best = Some((policy, sel.image.clone(), sel.at));
            }
        }
        if let Some((p, i, t)) = best {
            return Some((p, i, Some(t)));
        }
        let (name, image) = a.observed_policies.first()?;
        let policy = ObjectRef::new(Kind::ImagePolicy, a.object.namespace.clone(), name);
        Some((policy, image.clone(), None))
    }

    /// A push: the automated promotion of that commit, joined by what already holds it.
    fn on_push(&mut self, a: &ImageAutomationObs, commit: &str, pushed: Timestamp) {
        // A push long past (an initial list after a restart) opens nothing.
        if add(pushed, self.cfg.deadlines.promotion) < self.now {
            return;
        }
        let id = push_id(&a.object, commit);
        if self.reg.is_finished(&id) {
            return;
        }
        let selected = self.pushed_selection(a, pushed);
        let cluster = self.cfg.cluster.clone();
        let target = format!("automated\u{0}{}/{}", a.object.namespace, a.object.name);
        let opened =
            !self.reg.is_open(&id) && !self.adopt_push(&id, commit, pushed, target.clone());
        if opened {
            let mut p = Promotion::new(
                id.clone(),
                pushed,
                None,
                Traceability::Automated,
                &cluster,
                self.cfg.deadlines.promotion,
            );
            p.commit = Some(commit.to_string());
            p.expect_source = true;
            // A newer push of the same automation supersedes one still in progress, as a
            // newer report of the same target does.
            p.target = Some(target);
            let successor = Successor {
                id: id.clone(),
                trace_id: p.trace_id,
                root: p.root,
                at: pushed,
            };
            if let Some(old) = self.reg.open(p) {
                if self.reg.get(&old).is_some_and(|o| o.start <= pushed) {
                    self.supersede(&old, successor);
                }
            }
            self.reg
                .add_keys(&id, revision::promotion_keys(commit).into_iter().collect());
        }
        let Some(p) = self.reg.get_mut(&id) else {
            return;
        };
        p.pushed_to = a.source_ref.clone().zip(a.push_branch.clone());
        let (start, policy, image) = match &selected {
            Some((policy, image, at)) => (
                at.unwrap_or(pushed).min(pushed),
                Some(policy.clone()),
                Some(image.clone()),
            ),
            None => (pushed, None, None),
        };
        p.digest = image.as_ref().and_then(|i| i.digest.clone());
        let mut span = image_span(p, a, policy.as_ref(), image.as_ref(), start, &cluster);
        span.deadline = span.deadline.max(pushed);
        span.attrs
            .set(attr::VCS_REF_HEAD_REVISION, commit.to_string());
        span.attrs
            .set_opt(attr::VCS_REF_HEAD_NAME, a.push_branch.clone());
        let what = match (&policy, &image) {
            (Some(p), Some(i)) => format!("ImagePolicy {}/{} selected {i}; ", p.namespace, p.name),
            _ => String::new(),
        };
        span.finish(
            pushed,
            StageResult::Succeeded,
            format!("{what}{}", push_summary(a, commit)),
        );
        p.image = Some(span);
        self.touched.insert(id.clone());
        // The selections this push covers were pending under their own ids: this is them.
        let prefix = format!("automated/{}/{}/", a.object.namespace, a.object.name);
        let covered: Vec<String> = self
            .reg
            .values()
            .filter(|q| q.id.starts_with(&prefix) && q.id != id && q.commit.is_none())
            .filter(|q| {
                q.image
                    .as_ref()
                    .is_some_and(|s| s.is_open() && s.start <= add(pushed, EVENT_WINDOW_SLACK))
            })
            .map(|q| q.id.clone())
            .collect();
        for old in covered {
            self.drop_pending(&old);
        }
        if opened {
            let at = self.now;
            self.rejoin(&id, at);
        }
    }

    /// A policy's latest selection, seen from one automation of its namespace.
    fn on_selection(&mut self, a: &ImageAutomationObs, policy: &ObjectRef, sel: Selection) {
        let d = self.cfg.deadlines.clone();
        if add(sel.at, d.promotion) < self.now {
            return;
        }
        // An automation that names the policies it applies and not this one does not use it.
        let observed = a.observed_policies.iter().find(|(n, _)| *n == policy.name);
        if !a.observed_policies.is_empty() && observed.is_none() {
            return;
        }
        // A push at or after the selection covers it (see `on_push`).
        if a.last_push_time
            .is_some_and(|t| add(t, EVENT_WINDOW_SLACK) >= sel.at)
        {
            return;
        }
        let id = selection_id(&a.object, &policy.name, &sel.image);
        if self.reg.is_finished(&id) {
            return;
        }
        let ready = condition(&a.conditions, "Ready");
        let ran_since = a.last_run.is_some_and(|t| t >= sel.at);
        // Ready, and it applied this image (only a run that saw the selection records it)
        // without a push since: Git already had it.
        let up_to_date = ready.is_some_and(|c| c.status == CondStatus::True)
            && observed.is_some_and(|(_, i)| same_image(i, &sel.image));
        if up_to_date {
            self.drop_pending(&id);
            return;
        }
        let failed = ready.filter(|c| {
            c.status == CondStatus::False
                && (ran_since || c.last_transition.is_some_and(|t| t >= sel.at))
        });
        let cluster = self.cfg.cluster.clone();
        if !self.reg.is_open(&id) {
            let mut p = Promotion::new(
                id.clone(),
                sel.at,
                None,
                Traceability::Automated,
                &cluster,
                d.promotion,
            );
            p.digest = sel.image.digest.clone();
            let mut span = image_span(&p, a, Some(policy), Some(&sel.image), sel.at, &cluster);
            span.deadline = add(sel.at, d.image);
            p.image = Some(span);
            self.reg.open(p);
        }
        let Some(p) = self.reg.get_mut(&id) else {
            return;
        };
        self.touched.insert(id.clone());
        let Some(span) = p.image.as_mut().filter(|s| s.is_open()) else {
            return;
        };
        if let Some(c) = failed {
            let end = c.last_transition.unwrap_or(sel.at).max(sel.at);
            let summary = format!("{}: {}", c.reason, c.message);
            span.finish(
                end,
                StageResult::Failed(Failure {
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    diverges_at: Stage::Image,
                }),
                summary,
            );
        }
    }

    /// Ends a pending automated promotion without a trace: a push or an up-to-date run showed
    /// what it was waiting for.
    fn drop_pending(&mut self, id: &str) {
        if let Some(p) = self.reg.take_for_verdict(id) {
            self.timers.cancel(&Wake::Promotion(id.to_string()));
            let retain = self.cfg.retain_finished;
            self.reg.finish(p, retain);
        }
    }
}

/// An `image.update` span about the automation, from the policy's selection.
fn image_span(
    p: &Promotion,
    a: &ImageAutomationObs,
    policy: Option<&ObjectRef>,
    image: Option<&ImageRef>,
    start: Timestamp,
    cluster: &str,
) -> StageSpan {
    let mut s = StageSpan::new(
        Stage::Image,
        span_id_for(&p.id, Stage::Image, cluster, &a.uid, ""),
        p.root,
        Some(a.object.clone()),
        start,
        start,
    );
    s.set_object_attrs(&a.object);
    if let Some(i) = image {
        s.attrs.set(attr::CONTAINER_IMAGE_NAME, i.name.clone());
        s.attrs.set(attr::CONTAINER_IMAGE_TAGS, vec![i.tag.clone()]);
        s.attrs.set_opt(attr::OCI_MANIFEST_DIGEST, i.digest.clone());
    }
    if let Some(pol) = policy {
        s.attrs.set(
            attr::FLUX_IMAGE_POLICY,
            format!("{}/{}", pol.namespace, pol.name),
        );
    }
    s.key.policy = policy.cloned();
    s
}

/// The policy's events (`Latest image tag for … resolved to …`) land on the `image.update`
/// span too, within its window; the automation's land there as every object's do.
pub(in crate::correlate) fn land_policy_events(p: &mut Promotion, events: &EventStore) {
    let Some(s) = p.image.as_mut() else {
        return;
    };
    let (Some(policy), Some(end)) = (s.key.policy.clone(), s.end) else {
        return;
    };
    for e in events.of(&policy) {
        if add(e.time, EVENT_WINDOW_SLACK) >= s.start && e.time <= add(end, EVENT_WINDOW_SLACK) {
            s.push_event(e.record());
        }
    }
}

/// What an automated promotion delivered, for the story: the image and the commit.
pub(in crate::correlate) fn promoted(p: &Promotion) -> Option<String> {
    let image = promoted_image(p.image.as_ref()?)?;
    Some(match &p.commit {
        Some(c) => format!("image {image} (revision {c})"),
        None => format!("image {image}"),
    })
}

/// Evidence of an `image` divergence: the automation's `Ready=False` condition when it failed,
/// and the selection it did not push.
pub(in crate::correlate) fn evidence(s: &StageSpan) -> Vec<String> {
    let mut out = Vec::new();
    if let (StageResult::Failed(f), Some(a)) = (&s.result, &s.object) {
        out.push(format!("{a} Ready=False {}: {}", f.reason, f.message));
    }
    if let (Some(policy), Some(image)) = (&s.key.policy, promoted_image(s)) {
        out.push(format!(
            "ImagePolicy {}/{} selected {image} at {}",
            policy.namespace, policy.name, s.start
        ));
    }
    out
}

/// `name:tag` of the image an `image.update` span is about.
fn promoted_image(s: &StageSpan) -> Option<String> {
    let name = s.attrs.get_str(attr::CONTAINER_IMAGE_NAME)?;
    let tag = match s.attrs.get(attr::CONTAINER_IMAGE_TAGS) {
        Some(crate::trace::AttrValue::StrArray(t)) => t.first()?.clone(),
        _ => return None,
    };
    Some(format!("{name}:{tag}"))
}
