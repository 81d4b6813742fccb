//! fluxtrace turns every Flux promotion into one OpenTelemetry trace and names the point where
//! delivery diverged from intent.
//!
//! ```text
//!   CI ── fluxtrace promote ──▶ intake (POST /v1/promotions, gRPC)
//!   notification-controller ──▶ intake (POST /v1/flux/events)
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
//! - [`intake`]: promotion reports and Flux events over HTTP and gRPC, stories read back.
//! - [`client`]: `fluxtrace promote` and `fluxtrace explain`, the agent's API from outside.
//! - [`replay`]: runs a recording through the engine (used by `replay`, `demo` and tests).
//! - [`config`]: command-line configuration.
//! - [`links`]: trace link templates (`--trace-url-template`, `--trace-backend` presets).
//! - [`dora`]: DORA's four keys from finished stories, on `/metrics`.
//! - [`announce`]: Kubernetes Events (`DeliveryTrace`) with the trace link on finished
//!   promotions.

pub mod admin;
pub mod agent;
pub mod announce;
pub mod client;
pub mod clock;
pub mod config;
pub mod correlate;
pub mod dora;
pub mod export;
pub mod intake;
pub mod links;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod record;
pub mod replay;
pub mod revision;
pub mod sources;
pub mod story;
pub mod trace;
