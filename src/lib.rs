//! fluxtrace turns every Flux promotion into one OpenTelemetry trace and names the point where
//! delivery diverged from intent.
//!
//! ```text
//!   CI ── fluxtrace promote ──▶ intake (POST /v1/promotions, gRPC)      [later]
//!   notification-controller ──▶ intake (POST /v1/flux/events)           [later]
//!   kube API ──── watch ──────▶ sources::kube                           [later]
//!   recording (JSON Lines) ───▶ sources::replay ── same decoding (sources::object) ──┐
//!                                                                                   ▼
//!                                  DeliveryEvent (model): small, owned, normalized
//!                                                   │
//!                                                   ▼
//!                             correlate::Engine: apply(event) / tick(now), pure
//!                                                   │
//!                            SpanRecord (trace) + Story (story) per promotion
//!                                   │                         │
//!                                   ▼                         ▼
//!                         export: OTLP/gRPC          story: waterfall + triage text
//! ```
//!
//! Modules:
//! - [`model`]: the plain types every other module speaks.
//! - [`sources`]: adapters that turn Kubernetes objects, Flux events and recording lines into
//!   [`model::DeliveryEvent`]s.
//! - [`correlate`]: the engine; no IO, no clock.
//! - [`trace`]: span records and deterministic ids.
//! - [`story`]: the triage story and the terminal waterfall.
//! - [`export`]: OTLP/gRPC export.
//! - [`replay`]: runs a recording through the engine (used by `replay`, `demo` and tests).
//! - [`config`]: command-line configuration.

pub mod admin;
pub mod agent;
pub mod config;
pub mod correlate;
pub mod export;
pub mod metrics;
pub mod model;
pub mod record;
pub mod replay;
pub mod revision;
pub mod sources;
pub mod story;
pub mod trace;
