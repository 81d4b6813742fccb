//! Command-line configuration: clap derive, every flag also settable as `FLUXTRACE_*`.
//!
//! The OTLP destination additionally honours the standard `OTEL_EXPORTER_OTLP_*` variables
//! (endpoint, headers, timeout, compression), read by the exporter itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use jiff::SignedDuration;

use crate::correlate::{Deadlines, EngineConfig};

#[derive(Debug, Parser)]
#[command(
    name = "fluxtrace",
    version,
    about = "One OpenTelemetry trace per Flux promotion, and where it diverged."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay the built-in example recordings: waterfall and triage story for each, no cluster
    /// needed.
    Demo(OutputArgs),
    /// Replay recordings (JSON Lines) through the engine: export the traces over OTLP and print
    /// waterfall and story for each promotion.
    Replay(ReplayArgs),
    /// Run the agent: watch the cluster, correlate, export over OTLP; serve health and metrics.
    Run(RunArgs),
    /// Capture a live cluster's delivery objects as a recording for `fluxtrace replay`.
    Record(RecordArgs),
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// File to write (JSON Lines); `-` for standard output.
    #[arg(long, short, default_value = "-", env = "FLUXTRACE_RECORD_OUTPUT")]
    pub output: PathBuf,
    /// Stop after this long (otherwise at Ctrl-C or SIGTERM).
    #[arg(long, value_parser = parse_duration, env = "FLUXTRACE_RECORD_DURATION")]
    pub duration: Option<SignedDuration>,
    /// Namespaces to record (repeat, or separate with commas); every namespace when none.
    #[arg(
        long = "namespace",
        value_delimiter = ',',
        env = "FLUXTRACE_NAMESPACES"
    )]
    pub namespaces: Vec<String>,
    /// Label selector for the Deployments and ReplicaSets to record.
    #[arg(long, env = "FLUXTRACE_WORKLOAD_SELECTOR")]
    pub workload_selector: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the HTTP server (/healthz, /readyz, /metrics, and the intake API).
    #[arg(long, default_value = "0.0.0.0:8080", env = "FLUXTRACE_LISTEN")]
    pub listen: SocketAddr,
    /// Namespaces to watch (repeat, or separate with commas); every namespace when none.
    #[arg(
        long = "namespace",
        value_delimiter = ',',
        env = "FLUXTRACE_NAMESPACES"
    )]
    pub namespaces: Vec<String>,
    /// Label selector for the Deployments and ReplicaSets to follow (e.g. `team=shop`).
    #[arg(long, env = "FLUXTRACE_WORKLOAD_SELECTOR")]
    pub workload_selector: Option<String>,
    /// Do not watch a cluster (only the intake API feeds the engine).
    #[arg(long, env = "FLUXTRACE_NO_WATCH")]
    pub no_watch: bool,
    /// Time allowed for a graceful shutdown (stop sources, drain, flush).
    #[arg(long, default_value = "20s", value_parser = parse_duration, env = "FLUXTRACE_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: SignedDuration,
    /// Capacity of the queue in front of the engine.
    #[arg(long, default_value_t = 4096, env = "FLUXTRACE_QUEUE")]
    pub queue: usize,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Recording files, as `fluxtrace record` writes them.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct OutputArgs {
    /// `text`: waterfall and story; `json`: the finished spans as a JSON array.
    #[arg(long, value_enum, default_value_t = Format::Text, env = "FLUXTRACE_FORMAT")]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct Global {
    /// `k8s.cluster.name` on every span; part of every span id.
    #[arg(
        long,
        global = true,
        default_value = "default",
        env = "FLUXTRACE_CLUSTER_NAME"
    )]
    pub cluster_name: String,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    #[command(flatten)]
    pub deadlines: DeadlineArgs,
    /// Link template for the trace, with `{trace_id}` (and optionally `{start_ms}`, `{end_ms}`),
    /// e.g. `https://jaeger.example/trace/{trace_id}`.
    #[arg(long, global = true, env = "FLUXTRACE_TRACE_URL_TEMPLATE")]
    pub trace_url_template: Option<String>,
}

#[derive(Debug, Args)]
pub struct OtlpArgs {
    /// OTLP/gRPC endpoint (overrides OTEL_EXPORTER_OTLP_ENDPOINT and
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). With neither, nothing is exported.
    #[arg(long, global = true, env = "FLUXTRACE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Per-request export timeout [default: OTEL_EXPORTER_OTLP_TIMEOUT, else 10s].
    #[arg(long, global = true, value_parser = parse_duration, env = "FLUXTRACE_OTLP_TIMEOUT")]
    pub otlp_timeout: Option<SignedDuration>,
    /// Retries of a failed export request (exponential backoff).
    #[arg(
        long,
        global = true,
        default_value_t = 3,
        env = "FLUXTRACE_OTLP_RETRIES"
    )]
    pub otlp_retries: usize,
    /// Send uncompressed (gzip is the default unless OTEL_EXPORTER_OTLP_COMPRESSION says
    /// otherwise).
    #[arg(long, global = true, env = "FLUXTRACE_OTLP_NO_GZIP")]
    pub otlp_no_gzip: bool,
}

#[derive(Debug, Args)]
pub struct DeadlineArgs {
    /// Time for a reconcile request (Receiver, `flux reconcile`) to be handled.
    #[arg(long, global = true, default_value = "5m", value_parser = parse_duration, env = "FLUXTRACE_TRIGGER_DEADLINE")]
    pub trigger_deadline: SignedDuration,
    /// Time for a source to store the promoted revision.
    #[arg(long, global = true, default_value = "10m", value_parser = parse_duration, env = "FLUXTRACE_SOURCE_DEADLINE")]
    pub source_deadline: SignedDuration,
    /// Time for a reconcile without `spec.timeout` to finish, and for one to start.
    #[arg(long, global = true, default_value = "10m", value_parser = parse_duration, env = "FLUXTRACE_RECONCILE_DEADLINE")]
    pub reconcile_deadline: SignedDuration,
    /// Added to a Deployment's progressDeadlineSeconds.
    #[arg(long, global = true, default_value = "1m", value_parser = parse_duration, env = "FLUXTRACE_ROLLOUT_GRACE")]
    pub rollout_grace: SignedDuration,
    /// Time for a whole promotion.
    #[arg(long, global = true, default_value = "60m", value_parser = parse_duration, env = "FLUXTRACE_PROMOTION_DEADLINE")]
    pub promotion_deadline: SignedDuration,
    /// Quiet time after the last stage before the verdict.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration, env = "FLUXTRACE_SETTLE")]
    pub settle: SignedDuration,
}

/// Parses `30s`, `10m`, `1h30m`, `2.5s`.
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let d: SignedDuration = s
        .trim()
        .parse()
        .map_err(|e| format!("not a duration like 30s, 10m or 1h30m: {e}"))?;
    if d.is_negative() {
        return Err("a duration cannot be negative".into());
    }
    if d > SignedDuration::from_hours(24 * 366) {
        return Err("a duration cannot exceed a year".into());
    }
    Ok(d)
}

impl Global {
    pub fn engine_config(&self) -> EngineConfig {
        let d = &self.deadlines;
        EngineConfig {
            cluster: self.cluster_name.clone(),
            deadlines: Deadlines {
                trigger: d.trigger_deadline,
                source: d.source_deadline,
                reconcile: d.reconcile_deadline,
                rollout_grace: d.rollout_grace,
                promotion: d.promotion_deadline,
                settle: d.settle,
            },
            ..EngineConfig::default()
        }
    }

    /// The export timeout given on the command line, if any.
    pub fn export_timeout(&self) -> Option<Duration> {
        self.otlp
            .otlp_timeout
            .and_then(|t| Duration::try_from(t).ok())
    }

    /// gzip unless turned off here, or unless the standard variables choose.
    pub fn export_gzip(&self) -> Option<bool> {
        let env_chooses = [
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|x| !x.trim().is_empty()));
        match (self.otlp.otlp_no_gzip, env_chooses) {
            (true, _) => Some(false),
            (false, true) => None,
            (false, false) => Some(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        Cli::command_for_test();
    }

    impl Cli {
        fn command_for_test() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(SignedDuration::from_mins(10)));
        assert_eq!(parse_duration("1h30m"), Ok(SignedDuration::from_mins(90)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
