//! What fluxtrace's integration tests (`tests/`) and benchmarks (`benches/`) share. A dev-only
//! crate of the workspace: never published, never a dependency of the agent itself.
//!
//! | module | what |
//! |---|---|
//! | [`kube_api`] | an in-process Kubernetes API server (list, watch, disconnects, `410 Gone`) fed by recordings, for kube's real client |
//! | [`otlp_receiver`] | an in-process OTLP/gRPC trace receiver that keeps whole requests, and collectors that are down or silent |
//! | [`agent`] | the live agent on a test clock, watching the test API server, and a player that serves a recording line by line |
//! | [`replica`] | the agent's binary as one of several replicas against the test API server, with its log, role and intake |
//! | [`intake`] | the agent behind its HTTP intake, request helpers for the axum router, HMAC signatures |
//! | [`recordings`] | the bundled recordings by name, and moving a recording in time |
//! | [`tools`] | outside tools tests run (kubectl, promtool, prometheus): found, or the test says it skipped |
//! | [`json`] | changes to JSON values, for property tests of parsers |
//! | [`cluster`] | a large synthetic Flux cluster and its change stream (the watch benchmark) |
//! | [`fleet`] | a synthetic fleet recording made of many renamed, time-shifted bundled recordings (the pipeline benchmark) |
//! | [`bench`] | what the `--bench` harnesses share: sizes from the environment, memory figures |
//! | [`grafana`] | Grafana links read as Grafana reads them: panel-link variables, the query string, Explore panes, TraceQL strings |
//! | [`otelcol`] | the test bed's OpenTelemetry Collector: its components, `validate`, a start that waits until it is ready |
//! | [`files`] | walking the project's shipped files |
//! | [`shell`] | shell command lines (the manual's, CI files') split into commands and words |
//! | [`cli`] | the fluxtrace binary as a client of a running agent, bounded in time; `replay --serve` |
//! | [`testbed`] | the real stack of `tests/testbed/` (API server, Flux, Collector, Jaeger): found, or the test says it skipped; Git pushes, kubectl, the agent binary against it, traces read back from Jaeger |
//!
//! Everything here runs on the caller's tokio runtime, listens on 127.0.0.1 only, and stops when
//! its handle is dropped.

pub mod agent;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod files;
pub mod fleet;
pub mod grafana;
pub mod intake;
pub mod json;
pub mod kube_api;
pub mod otelcol;
pub mod otlp_receiver;
pub mod prometheus;
pub mod recordings;
pub mod replica;
pub mod shell;
pub mod testbed;
pub mod tools;
