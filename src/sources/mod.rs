//! Adapters at the edge: everything observed becomes a [`crate::model::DeliveryEvent`] here.
//!
//! - [`object`]: Kubernetes objects (Flux kinds, Deployment, ReplicaSet, core/v1 Event), the
//!   decoding that both the live watcher and replay use.
//! - `image`: Flux image automation objects (ImagePolicy, ImageUpdateAutomation), part of the
//!   object decoding.
//! - `raw`: the wire view both of them decode from (trimmed, all-optional fields, conditions,
//!   cross references) and the decoding's error; a leaf.
//! - [`flux_event`]: Flux notification-controller events (generic / generic-hmac providers).
//! - [`promotion`]: promotion reports, validated.
//! - [`recording`]: the JSON Lines recording format.
//! - [`pods`]: the targeted list of a failing rollout's Pods the engine asks for.
//!
//! Nothing here correlates: a source validates and converts, and never drops an observation
//! silently (each rejection names its problem).

pub mod flux_event;
mod image;
pub mod kube;
pub mod object;
pub mod pods;
pub mod promotion;
mod raw;
pub mod recording;
pub mod relist;
