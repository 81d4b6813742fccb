//! Causes of a rollout's failure that are not Kubernetes Events: what its new ReplicaSet's Pods
//! show in their container statuses (`OOMKilled`, `CreateContainerConfigError`, …) and the
//! Deployment's `ReplicaFailure` condition (the ReplicaSet controller could not create Pods:
//! quota, admission). Each becomes a warning buffered on the Deployment, as a kubelet Event
//! about one of its Pods is (`events`), so that it lands on the rollout span as a span event
//! and names the divergence's cause (`verdict`).
//!
//! Pods are not watched. While a rollout is under way past half its progress deadline, and once
//! when it fails, the engine asks for the Pods of its new ReplicaSet ([`Output::ListPods`]: one
//! namespace, the `pod-template-hash` label); the adapter lists them and applies each Pod as an
//! observation ([`PodObs`]), which a recording carries as a `watch` line.

use jiff::{SignedDuration, Timestamp};

use super::super::engine::{Engine, Output};
use super::super::events::{identity_hash, BufferedEvent, EventText};
use super::super::span::{StageResult, StageSpan};
use super::super::timers::Wake;
use super::rollout::RolloutOwner;
use crate::model::{
    condition, CondStatus, Condition, ContainerProblem, ObjectRef, PodListRequest, PodObs,
};
use crate::trace::attr;

/// Which lists of a rollout's Pods were asked for.
#[derive(Clone, Copy, Debug, Default)]
pub(in crate::correlate) struct PodLists {
    /// Halfway through its progress deadline, still under way.
    pub stuck: bool,
    /// When it failed.
    pub failed: bool,
}

/// What a container status says, as the message of its warning.
fn problem_text(c: &ContainerProblem) -> String {
    let mut text = format!("container {}", c.container);
    if c.message.is_empty() {
        text.push_str(&format!(" {}", c.reason));
    } else {
        text.push_str(&format!(": {}", c.message));
    }
    if let Some(code) = c.exit_code {
        text.push_str(&format!(" (exit code {code})"));
    }
    text
}

/// The label selector of a ReplicaSet's Pods: the Deployment controller names a ReplicaSet
/// `<deployment>-<pod-template-hash>` and labels its Pods with that hash.
fn pod_selector(deployment: &str, replicaset: &str) -> Option<String> {
    let hash = replicaset
        .strip_prefix(deployment)?
        .strip_prefix('-')
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric()))?;
    Some(format!("pod-template-hash={hash}"))
}

impl Engine {
    /// A listed Pod: each container problem is a warning on its Deployment, once.
    pub(in crate::correlate) fn on_pod(&mut self, at: Timestamp, pod: PodObs) {
        let ns = &pod.object.namespace;
        let dep = match &pod.replicaset {
            Some(rs) => self.events.deployment_of_rs(ns, rs),
            None => self.workload_of_pod(ns, &pod.object.name),
        };
        for c in &pod.problems {
            let time = c.at.unwrap_or(at);
            let identity = identity_hash(&["pod", ns, &pod.object.name, &c.container, &c.reason]);
            if self.stale(time, &dep) || self.events.seen_before(identity, 1, at) {
                continue;
            }
            let message = problem_text(c);
            let text = EventText {
                reason: &c.reason,
                message: &message,
                object: ("Pod", &pod.object.name),
                component: "",
            };
            let mut ev = BufferedEvent::new(time, text, 1, true);
            ev.series = identity.max(1);
            self.buffer_event(dep.clone(), ev);
        }
    }

    /// A Deployment's `ReplicaFailure` condition (the Deployment controller copies it from its
    /// ReplicaSets: reason `FailedCreate`, the API server's refusal as message) is a warning on
    /// it, once per message.
    pub(in crate::correlate) fn on_replica_failure(
        &mut self,
        at: Timestamp,
        dep: &ObjectRef,
        conditions: &[Condition],
    ) {
        let Some(c) =
            condition(conditions, "ReplicaFailure").filter(|c| c.status == CondStatus::True)
        else {
            return;
        };
        let time = c.last_transition.unwrap_or(at).min(at);
        let identity = identity_hash(&[
            "replica-failure",
            &dep.namespace,
            &dep.name,
            &c.reason,
            &c.message,
        ]);
        if self.stale(time, dep) || self.events.seen_before(identity, 1, at) {
            return;
        }
        let text = EventText {
            reason: &c.reason,
            message: &c.message,
            object: ("Deployment", &dep.name),
            component: "deployment-controller",
        };
        let mut ev = BufferedEvent::new(time, text, 1, true);
        ev.series = identity.max(1);
        self.buffer_event(dep.clone(), ev);
    }

    /// After a Deployment observation: a rollout under way is looked at again halfway through
    /// its progress deadline (counted, as Kubernetes does, from its last progress); one that
    /// failed has its Pods listed now; one that completed needs nothing.
    pub(in crate::correlate) fn follow_pods(&mut self, key: &ObjectRef, deadline: SignedDuration) {
        let grace = self.cfg.deadlines.rollout_grace;
        let Some((open, span_deadline, failed, lists)) = self.rollout_of(key).map(|(s, l)| {
            let failed = matches!(&s.result, StageResult::Failed(_));
            (s.is_open(), s.deadline, failed, l)
        }) else {
            self.timers.cancel(&Wake::Pods(key.clone()));
            return;
        };
        if open {
            if !lists.stuck {
                let half = SignedDuration::from_secs(deadline.as_secs() / 2);
                let due = span_deadline
                    .checked_sub(grace)
                    .and_then(|t| t.checked_sub(half))
                    .unwrap_or(span_deadline);
                self.timers.schedule(Wake::Pods(key.clone()), due);
            }
            return;
        }
        self.timers.cancel(&Wake::Pods(key.clone()));
        if failed && !lists.failed {
            self.ask_for_pods(key, |l| l.failed = true);
        }
    }

    /// Halfway through a rollout's progress deadline: still under way, its Pods are listed.
    pub(in crate::correlate) fn pods_due(&mut self, key: &ObjectRef) {
        if self
            .rollout_of(key)
            .is_some_and(|(s, l)| s.is_open() && !l.stuck)
        {
            self.ask_for_pods(key, |l| l.stuck = true);
        }
    }

    fn ask_for_pods(&mut self, key: &ObjectRef, mark: impl FnOnce(&mut PodLists)) {
        let Some(request) = self.rollout_of(key).and_then(|(s, _)| {
            let rs = s.attrs.get_str(attr::K8S_REPLICASET_NAME)?;
            Some(PodListRequest {
                deployment: key.clone(),
                replicaset: rs.to_string(),
                selector: pod_selector(&key.name, rs)?,
            })
        }) else {
            return;
        };
        if let Some(r) = self
            .rollouts
            .deployments
            .get_mut(key)
            .and_then(|d| d.rollout.as_mut())
        {
            mark(&mut r.pods);
        }
        self.out.push(Output::ListPods(request));
    }

    /// The span of a Deployment's rollout in flight and the lists asked for it.
    fn rollout_of(&self, key: &ObjectRef) -> Option<(&StageSpan, PodLists)> {
        let r = self.rollouts.deployments.get(key)?.rollout.as_ref()?;
        let span = match &r.owner {
            RolloutOwner::Unclaimed(s) => Some(&**s),
            RolloutOwner::Promotion(pid) => self.reg.get(pid).and_then(|p| {
                p.rollouts.iter().find(|s| {
                    s.object.as_ref() == Some(key) && s.key.generation == Some(r.generation)
                })
            }),
            RolloutOwner::Done => None,
        }?;
        Some((span, r.pods))
    }
}

#[cfg(test)]
mod tests {
    use super::{pod_selector, problem_text};
    use crate::model::ContainerProblem;

    #[test]
    fn a_replicasets_pods_are_selected_by_its_hash() {
        assert_eq!(
            pod_selector("web", "web-7d9f8b8c5").as_deref(),
            Some("pod-template-hash=7d9f8b8c5")
        );
        assert_eq!(pod_selector("web", "webapp-7d9f8b8c5"), None);
        assert_eq!(pod_selector("web", "web-"), None);
        assert_eq!(pod_selector("web", "web-a,b=c"), None);
    }

    #[test]
    fn a_container_problem_reads_as_the_kubelet_says_it() {
        let c = |reason: &str, message: &str, exit_code| ContainerProblem {
            container: "web".into(),
            reason: reason.into(),
            message: message.into(),
            exit_code,
            at: None,
        };
        assert_eq!(
            problem_text(&c("OOMKilled", "", Some(137))),
            "container web OOMKilled (exit code 137)"
        );
        assert_eq!(
            problem_text(&c(
                "CreateContainerConfigError",
                "secret \"db\" not found",
                None
            )),
            "container web: secret \"db\" not found"
        );
    }
}
