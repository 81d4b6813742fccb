//! The traffic stage: after a claimed rollout succeeds, a workload that opted in (probe
//! annotations on the Deployment or on its Kustomization/HelmRelease) is probed, and the
//! `traffic.probe` span says whether users get the new version.
//!
//! A Canary's target is probed after its primary's rollout, the first moment users get the new
//! version: the primary follows the target's opt-in.
//!
//! The engine only asks ([`Output::Probe`](super::super::Output::Probe)); the prober does the
//! IO and its result comes back as an observation.

use jiff::Timestamp;

use super::super::config::add;
use super::super::engine::{Engine, Output};
use super::super::promotion::push_span;
use super::super::span::{Failure, StageResult, StageSpan};
use crate::model::{Kind, ObjectRef, ProbeRequest, ProbeResult, ProbeVerdict};
use crate::trace::{attr, span_id_for, SpanId, Stage};

/// What version the probe must see (`fluxtrace.io/probe-expected-version`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum ExpectedVersion {
    /// The tag of the Deployment's first image (the default).
    ImageTag,
    /// The promotion id.
    PromotionId,
    /// A literal version string.
    Literal(String),
}

impl ExpectedVersion {
    fn parse(annotation: Option<&str>) -> Self {
        match annotation {
            None | Some("image-tag") => ExpectedVersion::ImageTag,
            Some("promotion-id") => ExpectedVersion::PromotionId,
            Some(v) => ExpectedVersion::Literal(v.to_string()),
        }
    }
}

impl Engine {
    /// After a successful rollout of a workload that opted in: a traffic span, and a request
    /// for the prober.
    pub(in crate::correlate) fn request_probe(
        &mut self,
        key: &ObjectRef,
        pid: &str,
        generation: i64,
        end: Timestamp,
    ) {
        // A Canary's target serves users only through its primary: probed after that rollout.
        // A probe result names a Deployment (`ProbeResult::deployment`): DaemonSets are not
        // probed.
        if key.kind != crate::model::Kind::Deployment || self.canaries.of_target(key).is_some() {
            return;
        }
        let Some(state) = self.rollouts.deployments.get(key) else {
            return;
        };
        let obs = &state.last;
        let opted_in = |d: &super::rollout::DeploymentFacts| {
            d.probe.as_deref().cloned().or_else(|| {
                let m = d.manager.as_ref()?;
                self.reconcilers.get(m)?.last.as_ref()?.probe.clone()
            })
        };
        // A Canary's primary follows its target's opt-in (Flagger copies no Flux labels).
        let spec = opted_in(obs).or_else(|| {
            let target = &self.canaries.of_primary(key)?.target;
            opted_in(&self.rollouts.deployments.get(target)?.last)
        });
        let Some(spec) = spec else {
            return;
        };
        let Some(p) = self.reg.get_mut(pid) else {
            return;
        };
        let attempt = generation.to_string();
        let span_id = span_id_for(pid, Stage::Traffic, &self.cfg.cluster, &obs.uid, &attempt);
        if p.traffic.iter().any(|s| s.span_id == span_id) {
            return;
        }
        let expected = match ExpectedVersion::parse(spec.expected_version.as_deref()) {
            ExpectedVersion::ImageTag => obs
                .image
                .as_deref()
                .and_then(image_tag)
                .unwrap_or_default()
                .to_string(),
            ExpectedVersion::PromotionId => pid.to_string(),
            ExpectedVersion::Literal(v) => v,
        };
        let expect = spec.expect.clone().unwrap_or_else(|| "body".to_string());
        let url = strip_credentials(&spec.url);
        let mut s = StageSpan::new(
            Stage::Traffic,
            SpanId::default(),
            p.root,
            Some(key.clone()),
            end,
            add(end, self.cfg.deadlines.traffic),
        );
        s.derive_id(pid, &self.cfg.cluster, &obs.uid, &attempt);
        s.set_object_attrs(key);
        s.attrs.set(attr::K8S_DEPLOYMENT_NAME, key.name.clone());
        s.attrs.set(attr::DELIVERY_ROLLOUT_GENERATION, generation);
        s.key.generation = Some(generation);
        s.attrs.set(attr::URL_FULL, url);
        s.attrs.set(attr::DELIVERY_PROBE_EXPECTED, expected.clone());
        push_span(&mut p.traffic, s);
        self.touched.insert(pid.to_string());
        self.out.push(Output::Probe(ProbeRequest {
            promotion_id: pid.to_string(),
            deployment: key.clone(),
            generation,
            url: spec.url,
            expect,
            expected,
            requested_at: end,
        }));
    }

    pub(in crate::correlate) fn on_probe_result(&mut self, at: Timestamp, mut r: ProbeResult) {
        // A report may have taken the promotion over since the probe was asked for.
        r.promotion_id = self.reg.resolve(&r.promotion_id).to_string();
        let Some(p) = self.reg.get_mut(&r.promotion_id) else {
            return;
        };
        let key = ObjectRef::new(Kind::Deployment, r.namespace.clone(), r.deployment.clone());
        let Some(s) = p
            .traffic
            .iter_mut()
            .find(|s| s.object.as_ref() == Some(&key) && s.key.generation == Some(r.generation))
        else {
            return;
        };
        if !s.is_open() {
            return;
        }
        s.attrs.set(attr::URL_FULL, strip_credentials(&r.url));
        s.attrs
            .set(attr::DELIVERY_PROBE_SAMPLES, i64::from(r.samples));
        s.attrs
            .set(attr::DELIVERY_PROBE_MATCHED, i64::from(r.matched));
        s.attrs.set(
            attr::DELIVERY_PROBE_VERSIONS,
            r.versions
                .iter()
                .map(|(v, n)| format!("{v}={n}"))
                .collect::<Vec<_>>(),
        );
        if let Some(code) = r.failed_status {
            s.attrs
                .set(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(code));
        }
        let end = r.finished.min(at).max(s.start);
        let seen = r
            .versions
            .iter()
            .map(|(v, n)| format!("{v} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        match r.verdict {
            ProbeVerdict::Passed => s.finish(
                end,
                StageResult::Succeeded,
                format!(
                    "{} of {} samples served {} ({seen})",
                    r.matched, r.samples, r.expected
                ),
            ),
            ProbeVerdict::Failed { reason, message }
            | ProbeVerdict::Refused { reason, message } => {
                let summary = format!("{reason}: {message}");
                s.finish(
                    end,
                    StageResult::Failed(Failure {
                        reason,
                        message,
                        diverges_at: Stage::Traffic,
                    }),
                    summary,
                );
            }
        }
        self.touched.insert(r.promotion_id);
    }
}

/// The tag of an image reference (`repo:tag`, `repo:tag@sha256:…`), if any.
fn image_tag(image: &str) -> Option<&str> {
    let name = image.split_once('@').map_or(image, |(n, _)| n);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    name[slash..].rfind(':').map(|i| &name[slash + i + 1..])
}

/// A URL without user info: credentials never reach a span.
pub(in crate::correlate) fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let mut out = String::with_capacity(scheme.len() + 3 + host.len() + path.len());
            out.push_str(scheme);
            out.push_str("://");
            out.push_str(host);
            out.push_str(path);
            out
        }
        None => url
            .rsplit_once('@')
            .filter(|(u, _)| !u.contains('/'))
            .map_or(url.to_string(), |(_, h)| h.to_string()),
    }
}
