//! fluxtrace turns every Flux promotion into one OpenTelemetry trace and names the point where
//! delivery diverged from intent.
//!
//! ```text
//!   CI ── fluxtrace promote ──▶ intake (POST /v1/promotions, gRPC)
//!   notification-controller ──▶ intake (POST /v1/flux/events)
//!   kube API ──── watch ──────▶ sources::kube
//!   recording (JSON Lines) ───▶ sources::recording ── same decoding (sources::object) ──┐
//!   probe (HTTP) ─────────────▶ the traffic probe's result                            │
//!                                                                                     ▼
//!                                  DeliveryEvent (model): small, owned, normalized
//!                                                   │  agent: bounded queue, ticks
//!                                                   ▼
//!                             correlate::Engine: apply(event) / tick(now), pure
//!                                                   │
//!                            SpanRecord (trace) + Story (story) per promotion
//!                                   │                         │
//!                                   ▼                         ▼
//!                         export: OTLP/gRPC          story: waterfall + triage text,
//!                                                    intake (GET /v1/promotions/{id}),
//!                                                    announce (DeliveryTrace Events)
//! ```
//!
//! The rules the engine follows (correlation contract, ids, span catalog, recording format) are
//! in docs/design.md.
//!
//! Modules:
//! - [`model`]: the plain types every other module speaks.
//! - [`sources`]: adapters that turn Kubernetes objects (live watch or recording), Flux events
//!   and promotion reports into [`model::DeliveryEvent`]s.
//! - [`revision`]: what a Flux revision string names (commit, digest, chart digest prefix).
//! - [`correlate`]: the engine; no IO, no clock.
//! - [`trace`]: span records and deterministic ids.
//! - [`story`]: the triage story and the terminal waterfall.
//! - [`agent`]: the engine task (bounded queue, ticks), export task and story queries.
//! - [`export`]: OTLP/gRPC export.
//! - [`intake`]: promotion reports and Flux events over HTTP and gRPC, stories read back.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`metrics`]: the agent's own metrics.
//! - [`probe`]: the traffic prober.
//! - [`dora`]: DORA's four keys from finished stories, on `/metrics`.
//! - [`clock`]: the time the agent reads (system, or a test's).
//! - [`cluster`]: the watched kinds, their discovery, the watch stream and the ClusterRole.
//! - [`announce`]: Kubernetes Events (`DeliveryTrace`) with the trace link on finished
//!   promotions.
//! - [`links`]: trace link templates (`--trace-url-template`, `--trace-backend` presets).
//! - [`check`]: `fluxtrace check`, what the cluster lacks for the agent.
//! - [`client`]: `fluxtrace promote` and `fluxtrace explain`, the agent's API from outside.
//! - [`record`]: a live cluster to a recording.
//! - [`resource`]: the `Promotion` custom resource: reports that survive restarts, verdicts
//!   written to its status.
//! - [`replay`]: runs a recording through the engine (used by `replay`, `demo` and tests).
//! - [`config`]: command-line configuration.
//! - [`workload`]: what runs on each followed Deployment and which promotion put it there
//!   (`GET /v1/workloads`, `fluxtrace status`).

pub mod admin;
pub mod agent;
pub mod announce;
pub mod check;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod correlate;
pub mod dora;
pub mod export;
pub mod intake;
pub mod leader;
pub mod links;
pub mod metrics;
pub mod model;
pub mod probe;
pub mod record;
pub mod replay;
pub mod resource;
pub mod revision;
pub mod sources;
pub mod story;
pub mod trace;
pub mod workload;
