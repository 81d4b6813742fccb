//! The delivery path, one file per stage: each owns the state it keeps about its objects,
//! decides when its objects join a promotion, and opens and ends its spans.
//!
//! Order along the path: `image` (Flux image automation selected an image and pushed a
//! commit: opens automated promotions), `trigger` (a webhook asked for a reconcile), `source` (the revision
//! stored), `reconcile` (Kustomization/HelmRelease reconcile and its apply), `rollout`
//! (Deployments the apply changed), `traffic` (the post-rollout probe) and `canary` (a Flagger
//! analysis of a changed Deployment, also a `traffic` stage); `drift` tells Flux's own correction
//! of a change by hand from an untraced rollout; `causes` reads why a rollout fails from its
//! Pods' statuses and its Deployment's `ReplicaFailure`; `branch_head` follows a reported
//! commit a newer push overtook before the fetch, and skips a push to a branch nobody follows. `followers` indexes reconcilers by
//! the source they follow and the Kustomization that applied them. `matching` holds the
//! rule that picks, among promotions of the same revision, the one an object belongs to.

pub(super) mod branch_head;
pub(super) mod canary;
pub(super) mod canary_status;
pub(super) mod causes;
pub(super) mod drift;
pub(super) mod followers;
pub(super) mod image;
pub(super) mod matching;
pub(super) mod reconcile;
pub(super) mod rollout;
pub(super) mod source;
pub(super) mod traffic;
pub(super) mod trigger;
