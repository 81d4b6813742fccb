//! core/v1 `Pod` → [`PodObs`]: the owning ReplicaSet and the containers whose status names a
//! failure. Pods are not watched: the agent lists those of a failing rollout's new ReplicaSet
//! when the engine asks ([`crate::model::PodListRequest`]), and a recording carries each as a
//! `watch` line, so that replay decodes them here too.
//!
//! The reasons are the kubelet's (image pulls, container creation and start) and the container
//! runtime's (`OOMKilled` on a terminated container).

use crate::model::{sane_time, ContainerProblem, ObjectRef, PodObs};
use crate::sources::raw::{RawContainerStatus, RawKubeObject, RawStateDetail};

/// Waiting reasons of a container on its way up, not of a failure.
const STARTING: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// Terminated reasons that are a failure of their own, whatever the container does next.
const KILLED: [&str; 1] = ["OOMKilled"];

pub(super) fn pod(mut obj: RawKubeObject, object: ObjectRef) -> PodObs {
    let replicaset = obj
        .metadata
        .owner_references
        .take()
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.kind == "ReplicaSet" && o.controller != Some(false))
        .map(|o| o.name);
    let status = obj.status.map(|s| *s).unwrap_or_default();
    let statuses = status
        .init_container_statuses
        .into_iter()
        .flatten()
        .chain(status.container_statuses.into_iter().flatten());
    PodObs {
        object,
        replicaset,
        problems: statuses.flat_map(problems).collect(),
    }
}

/// What one container's status names: a failure it is waiting in (with the exit code of its
/// last run), and an `OOMKilled` run, current or last.
fn problems(s: RawContainerStatus) -> Vec<ContainerProblem> {
    let mut out = Vec::new();
    let state = s.state.unwrap_or_default();
    let last = s.last_state.unwrap_or_default().terminated;
    let killed = |d: &RawStateDetail| d.reason.as_deref().is_some_and(|r| KILLED.contains(&r));
    if let Some(t) = [state.terminated.as_ref(), last.as_ref()]
        .into_iter()
        .flatten()
        .find(|t| killed(t))
    {
        out.push(ContainerProblem {
            container: s.name.clone(),
            reason: t.reason.clone().unwrap_or_default(),
            message: t.message.clone().unwrap_or_default(),
            exit_code: t.exit_code,
            at: t.finished_at.map(sane_time),
        });
    }
    if let Some(w) = state.waiting.filter(|w| {
        w.reason
            .as_deref()
            .is_some_and(|r| !r.is_empty() && !STARTING.contains(&r))
    }) {
        out.push(ContainerProblem {
            container: s.name,
            reason: w.reason.unwrap_or_default(),
            message: w.message.unwrap_or_default(),
            exit_code: last.and_then(|t| t.exit_code),
            at: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::model::EventBody;

    fn decode(status: serde_json::Value) -> crate::model::PodObs {
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-7f9c-abcde", "namespace": "apps", "uid": "u",
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7f9c", "controller": true}]},
            "status": status,
        });
        let raw = serde_json::from_value(obj).expect("a Pod");
        match super::super::raw_to_event(raw, false) {
            Ok(Some(EventBody::Pod(p))) => p,
            other => panic!("not a Pod observation: {other:?}"),
        }
    }

    #[test]
    fn an_oom_killed_container_in_a_crash_loop_names_both() {
        let p = decode(json!({"containerStatuses": [{
            "name": "web",
            "state": {"waiting": {"reason": "CrashLoopBackOff",
                "message": "back-off 40s restarting failed container=web pod=web-7f9c-abcde_apps(u)"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137,
                "finishedAt": "2026-11-26T10:00:30Z"}},
        }]}));
        assert_eq!(p.replicaset.as_deref(), Some("web-7f9c"));
        let reasons: Vec<_> = p.problems.iter().map(|c| c.reason.as_str()).collect();
        assert_eq!(reasons, ["OOMKilled", "CrashLoopBackOff"]);
        assert_eq!(p.problems[0].exit_code, Some(137));
        assert_eq!(
            p.problems[0].at.map(|t| t.to_string()).as_deref(),
            Some("2026-11-26T10:00:30Z")
        );
        assert_eq!(p.problems[1].exit_code, Some(137));
    }

    #[test]
    fn waiting_reasons_of_failures_are_problems_and_starting_ones_are_not() {
        for reason in [
            "CreateContainerConfigError",
            "CreateContainerError",
            "ImagePullBackOff",
            "ErrImagePull",
            "CrashLoopBackOff",
        ] {
            let p = decode(json!({"containerStatuses": [{"name": "web",
                "state": {"waiting": {"reason": reason, "message": "secret \"db\" not found"}}}]}));
            assert_eq!(p.problems.len(), 1, "{reason}");
            assert_eq!(p.problems[0].reason, reason);
            assert_eq!(p.problems[0].message, "secret \"db\" not found");
        }
        let p = decode(json!({
            "initContainerStatuses": [{"name": "init", "state": {"waiting": {"reason": "PodInitializing"}}}],
            "containerStatuses": [{"name": "web", "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "side", "state": {"running": {}},
                 "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]}));
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }
}
