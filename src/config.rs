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

/// What `fluxtrace --version` prints after the name: the release (one version for the binary,
/// the image, the Helm chart and the manifests), the commit it was built from (see build.rs),
/// and the Promotion API versions this agent serves (`crate::resource`; a unit test keeps them
/// in step).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FLUXTRACE_COMMIT"),
    "; Promotion API fluxtrace.io/v1alpha1)"
);

#[derive(Debug, Parser)]
#[command(
    name = "fluxtrace",
    version = LONG_VERSION,
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
    Demo(DemoArgs),
    /// Replay recordings (JSON Lines) through the engine: export the traces over OTLP and print
    /// waterfall and story for each promotion.
    Replay(ReplayArgs),
    /// Run the agent: watch the cluster, correlate, export over OTLP; serve health and metrics.
    Run(Box<RunArgs>),
    /// Report a promotion to the agent (from CI): prints the trace id and link.
    Promote(Box<PromoteArgs>),
    /// Print the triage story of a promotion, as the agent knows it (or of the promotion behind
    /// what runs on a workload, with --workload).
    Explain(ExplainArgs),
    /// What runs now: per followed Deployment, the images running, the promotion that put them
    /// there, and a newer one in flight or failed.
    Status(StatusArgs),
    /// Capture a live cluster's delivery objects as a recording for `fluxtrace replay`.
    Record(RecordArgs),
    /// Whether the cluster has what the agent needs: API server, Flux kinds, the Promotion CRD,
    /// RBAC, the notification path, the OTLP endpoint and the Lease. Exits 1 when something
    /// needed is missing.
    Check(CheckArgs),
}

impl Command {
    /// The OTLP flags of the commands that export spans (`run`, `replay`, `demo`); `None` for
    /// the others, whose help does not show them.
    pub fn otlp(&self) -> Option<&OtlpArgs> {
        match self {
            Command::Run(a) => Some(&a.otlp),
            Command::Replay(a) => Some(&a.otlp),
            Command::Demo(a) => Some(&a.otlp),
            Command::Promote(_)
            | Command::Explain(_)
            | Command::Record(_)
            | Command::Status(_)
            | Command::Check(_) => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub otlp: OtlpArgs,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// File to write (JSON Lines); `-` for standard output.
    #[arg(long, short, default_value = "-", env = "FLUXTRACE_RECORD_OUTPUT")]
    pub output: PathBuf,
    /// Stop after this long (otherwise at Ctrl-C or SIGTERM).
    #[arg(long, value_parser = parse_duration, env = "FLUXTRACE_RECORD_DURATION")]
    pub duration: Option<SignedDuration>,
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// What to watch in the cluster, and how patiently.
#[derive(Debug, Args)]
pub struct WatchArgs {
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
    /// Time a LIST request may go without an answer before it is logged (naming the kind and
    /// the server) and made again.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "FLUXTRACE_KUBE_LIST_TIMEOUT")]
    pub kube_list_timeout: SignedDuration,
}

impl WatchArgs {
    /// `--kube-list-timeout` as a std duration (at least one second).
    pub fn list_timeout(&self) -> std::time::Duration {
        std::time::Duration::try_from(self.kube_list_timeout)
            .unwrap_or_default()
            .max(std::time::Duration::from_secs(1))
    }
}

/// Leader election among the agent's replicas (a `coordination.k8s.io/v1` Lease in the agent's
/// own namespace).
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Run without an election: this replica exports and writes as the only one. For a single
    /// replica that may not write Leases.
    #[arg(long, env = "FLUXTRACE_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "fluxtrace", env = "FLUXTRACE_LEASE_NAME")]
    pub lease_name: String,
    /// Namespace of the Lease; the --promotion-namespace when unset.
    #[arg(long, env = "FLUXTRACE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a leader that stopped renewing holds the Lease: the longest a standby waits
    /// before it takes over (whole seconds).
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "FLUXTRACE_LEASE_DURATION")]
    pub lease_duration: SignedDuration,
    /// A leader that has not renewed for this long stops (and is restarted as a standby);
    /// shorter than --lease-duration.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "FLUXTRACE_LEASE_RENEW_DEADLINE")]
    pub lease_renew_deadline: SignedDuration,
    /// How often the leader renews and a standby tries to take over.
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "FLUXTRACE_LEASE_RETRY_PERIOD")]
    pub lease_retry_period: SignedDuration,
    /// This replica's name in the Lease; the host name (the Pod's) and a random suffix when
    /// unset.
    #[arg(long, env = "FLUXTRACE_LEASE_IDENTITY")]
    pub lease_identity: Option<String>,
}

impl LeaseArgs {
    /// The election's settings, checked; `None` with --no-leader-election.
    pub fn settings(
        &self,
        own_namespace: &str,
    ) -> Result<Option<crate::leader::LeaseSettings>, crate::leader::SettingsError> {
        if self.no_leader_election {
            return Ok(None);
        }
        let std = |d: SignedDuration| std::time::Duration::try_from(d).unwrap_or_default();
        let s = crate::leader::LeaseSettings {
            name: self.lease_name.clone(),
            namespace: self
                .lease_namespace
                .clone()
                .unwrap_or_else(|| own_namespace.to_string()),
            identity: self
                .lease_identity
                .clone()
                .unwrap_or_else(crate::leader::default_identity),
            duration: std(self.lease_duration),
            renew_deadline: std(self.lease_renew_deadline),
            retry_period: std(self.lease_retry_period),
        };
        s.validate()?;
        Ok(Some(s))
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub otlp: OtlpArgs,
    /// Address of the HTTP server (/healthz, /readyz, /metrics, and the intake API).
    #[arg(long, default_value = "0.0.0.0:8080", env = "FLUXTRACE_LISTEN")]
    pub listen: SocketAddr,
    /// A second address for /healthz, /readyz and /metrics alone, so that load or abuse of
    /// the intake cannot fail the probes (point the liveness and readiness probes here).
    #[arg(long, env = "FLUXTRACE_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,
    /// Most HTTP connections held at once on --listen; beyond it new ones wait in the
    /// kernel's backlog.
    #[arg(long, default_value_t = 1024, env = "FLUXTRACE_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// Time for a client to send a request's headers; an idle keep-alive connection is closed
    /// after it too.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "FLUXTRACE_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: SignedDuration,
    /// Open promotions held at most; beyond it new reports are refused with 429 and
    /// Retry-After (gRPC: RESOURCE_EXHAUSTED). Promotions already open are never evicted.
    #[arg(long, default_value_t = 5000, env = "FLUXTRACE_MAX_OPEN_PROMOTIONS")]
    pub max_open_promotions: usize,
    #[command(flatten)]
    pub watch: WatchArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    /// Namespace where the intake writes a Promotion for each report it takes (the agent's
    /// own; the deploy base sets it from the Pod's namespace).
    #[arg(
        long,
        default_value = "fluxtrace",
        env = "FLUXTRACE_PROMOTION_NAMESPACE"
    )]
    pub promotion_namespace: String,
    /// Finished Promotions are deleted this long after their verdict (default 30 days).
    #[arg(long, default_value = "720h", value_parser = parse_duration, env = "FLUXTRACE_PROMOTION_RETENTION")]
    pub promotion_retention: SignedDuration,
    /// Finished Promotions kept per namespace at most; the oldest beyond it are deleted.
    #[arg(
        long,
        default_value_t = 1000,
        env = "FLUXTRACE_PROMOTION_MAX_PER_NAMESPACE"
    )]
    pub promotion_max_per_namespace: usize,
    /// Do not watch a cluster (only the intake API feeds the engine).
    #[arg(long, env = "FLUXTRACE_NO_WATCH")]
    pub no_watch: bool,
    /// Time allowed for a graceful shutdown (stop sources, drain, flush).
    #[arg(long, default_value = "20s", value_parser = parse_duration, env = "FLUXTRACE_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: SignedDuration,
    /// Capacity of the queue in front of the engine.
    #[arg(long, default_value_t = 4096, env = "FLUXTRACE_QUEUE")]
    pub queue: usize,
    /// Environment and app pairs with DORA metrics of their own; later pairs are counted under
    /// `other` (bounds the series a report can create).
    #[arg(long, default_value_t = crate::dora::DEFAULT_MAX_SERIES, env = "FLUXTRACE_DORA_MAX_SERIES")]
    pub dora_max_series: usize,
    /// Do not write a Kubernetes Event (reason DeliveryTrace, with the trace link) on the
    /// Kustomization or HelmRelease and the Deployments of each finished promotion.
    #[arg(long, env = "FLUXTRACE_NO_K8S_EVENTS")]
    pub no_k8s_events: bool,
    #[command(flatten)]
    pub probe: ProbeArgs,
    #[command(flatten)]
    pub intake: IntakeArgs,
}

/// Who may use the intake API, and where its gRPC server listens.
#[derive(Debug, Args)]
pub struct IntakeArgs {
    /// Address of the gRPC intake (fluxtrace.v1.PromotionService); none: no gRPC server.
    #[arg(long, env = "FLUXTRACE_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// Bearer tokens accepted for promotion reports and queries, one a line (a mounted Secret);
    /// re-read when it changes. Without it (and without --insecure-no-auth) every intake
    /// request is refused.
    #[arg(long, env = "FLUXTRACE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// HMAC key of Flux's generic-hmac provider (the Provider secret's `token`): Flux events
    /// must then carry `X-Signature: sha256=<hex>`. Without it they need a bearer token.
    #[arg(long, env = "FLUXTRACE_HMAC_KEY_FILE")]
    pub hmac_key_file: Option<PathBuf>,
    /// Accept intake requests without any credentials. For local trials only: logs a warning.
    #[arg(
        long,
        env = "FLUXTRACE_INSECURE_NO_AUTH",
        conflicts_with_all = ["token_file", "hmac_key_file"]
    )]
    pub insecure_no_auth: bool,
}

/// Where the agent's API is, for `promote`, `explain` and `status`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Base URL of the agent's HTTP API, e.g. `https://fluxtrace.example`.
    #[arg(long, env = "FLUXTRACE_AGENT")]
    pub agent: String,
    /// Bearer token for the agent's API.
    #[arg(long, env = "FLUXTRACE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Time allowed for each request.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "FLUXTRACE_REQUEST_TIMEOUT")]
    pub request_timeout: SignedDuration,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Promotion id [default: from the CI run: GitHub Actions `<run id>-<run attempt>`, GitLab
    /// CI `<pipeline id>`].
    #[arg(long, env = "FLUXTRACE_PROMOTION_ID")]
    pub id: Option<String>,
    /// Environment promoted to (`deployment.environment.name`).
    #[arg(long, env = "FLUXTRACE_ENVIRONMENT")]
    pub environment: String,
    /// Commit SHA (40 hex) or `sha256:<digest>` promoted [default: the CI run's commit, unless
    /// a digest is given].
    #[arg(long, env = "FLUXTRACE_REVISION")]
    pub revision: Option<String>,
    /// OCI artifact promoted: `repository[:tag][@sha256:<digest>]`.
    #[arg(long, env = "FLUXTRACE_ARTIFACT")]
    pub artifact: Option<String>,
    /// Manifest digest of the artifact (`sha256:<64 hex>`).
    #[arg(long, env = "FLUXTRACE_DIGEST")]
    pub digest: Option<String>,
    /// Application name.
    #[arg(long, env = "FLUXTRACE_APP")]
    pub app: Option<String>,
    /// Who promoted [default: GITHUB_ACTOR or GITLAB_USER_LOGIN].
    #[arg(long, env = "FLUXTRACE_ACTOR")]
    pub actor: Option<String>,
    /// Pipeline name [default: GITHUB_WORKFLOW, or CI_PIPELINE_NAME / CI_PROJECT_PATH].
    #[arg(long, env = "FLUXTRACE_PIPELINE_NAME")]
    pub pipeline_name: Option<String>,
    /// Pipeline run id [default: GITHUB_RUN_ID or CI_PIPELINE_ID].
    #[arg(long, env = "FLUXTRACE_RUN_ID")]
    pub run_id: Option<String>,
    /// Pipeline run URL [default: the GitHub run URL, or CI_PIPELINE_URL].
    #[arg(long, env = "FLUXTRACE_RUN_URL")]
    pub run_url: Option<String>,
    /// W3C trace context of the CI span; the promotion becomes its child.
    #[arg(long, env = "TRACEPARENT")]
    pub traceparent: Option<String>,
    /// Send no CI trace context, even with TRACEPARENT set: the promotion roots its own trace.
    /// For CI whose spans go to another tracing backend than the agent's, where the delivery
    /// trace would show a parent that never arrives.
    #[arg(long, env = "FLUXTRACE_NO_CI_PARENT")]
    pub no_ci_parent: bool,
    /// When the promotion started (RFC 3339) [default: when the agent receives the report].
    #[arg(long, env = "FLUXTRACE_TIME")]
    pub time: Option<jiff::Timestamp>,
    /// When the promoted commit was made (RFC 3339), for the lead time of changes. Default:
    /// GitLab's CI_COMMIT_TIMESTAMP, else `git log` when run in a checkout; else left out.
    #[arg(long, env = "FLUXTRACE_COMMIT_TIME")]
    pub commit_time: Option<jiff::Timestamp>,
    /// The promotion this one continues (the id of the same artifact's promotion to the
    /// previous environment): the trace links to it.
    #[arg(long = "from", env = "FLUXTRACE_PROMOTED_FROM")]
    pub from: Option<String>,
    /// Retries on connection errors, timeouts and 5xx, with exponential backoff from 0.5 s.
    #[arg(long, default_value_t = 5, env = "FLUXTRACE_RETRIES")]
    pub retries: u32,
    /// Do not read the CI run's environment (GitHub Actions, GitLab CI).
    #[arg(long, env = "FLUXTRACE_NO_CI")]
    pub no_ci: bool,
    /// Print the report that would be sent, and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the agent's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Promotion id.
    #[arg(required_unless_present = "workload", conflicts_with = "workload")]
    pub id: Option<String>,
    /// A Deployment, `NAMESPACE/NAME`: the story of the promotion behind what runs on it.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub workload: Option<String>,
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Print the story as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Only workloads whose delivering (or newer) promotion went to this environment.
    #[arg(long)]
    pub environment: Option<String>,
    /// Only workloads in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only workloads whose delivering (or newer) promotion was of this app.
    #[arg(long)]
    pub app: Option<String>,
    /// `text`: a table; `json`: the agent's answer.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Review RBAC as this user, e.g. the agent's ServiceAccount
    /// `system:serviceaccount:fluxtrace:fluxtrace` (SubjectAccessReviews); without it, as
    /// yourself (SelfSubjectAccessReviews: in the agent's Pod, its ServiceAccount).
    #[arg(long = "as", env = "FLUXTRACE_CHECK_AS")]
    pub as_user: Option<String>,
    /// The agent's URL: its /readyz says whether it is ready and receives Flux events.
    #[arg(long, env = "FLUXTRACE_AGENT")]
    pub agent: Option<String>,
    /// OTLP/gRPC endpoint to send an empty export to (else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    /// or OTEL_EXPORTER_OTLP_ENDPOINT; none: not checked).
    #[arg(long, env = "FLUXTRACE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The agent's namespace (the Lease's, unless --lease-namespace).
    #[arg(
        long,
        default_value = "fluxtrace",
        env = "FLUXTRACE_PROMOTION_NAMESPACE"
    )]
    pub promotion_namespace: String,
    /// Name of the election's Lease.
    #[arg(long, default_value = "fluxtrace", env = "FLUXTRACE_LEASE_NAME")]
    pub lease_name: String,
    /// Namespace of the Lease; the --promotion-namespace when unset.
    #[arg(long, env = "FLUXTRACE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// The agent runs without an election: its Lease is neither read nor its RBAC reviewed.
    #[arg(long, env = "FLUXTRACE_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
    /// Time allowed for each request.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "FLUXTRACE_CHECK_TIMEOUT")]
    pub timeout: SignedDuration,
    /// `text`: one screen; `json`: every finding, for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text, env = "FLUXTRACE_CHECK_OUTPUT")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Recording files, as `fluxtrace record` writes them.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    /// After the replay, serve its stories and DORA metrics on this address
    /// (`GET /v1/promotions/{id}`, `/metrics`,
    /// read-only, no authentication) until Ctrl-C, so that `fluxtrace explain` can be tried
    /// without a cluster.
    #[arg(long, env = "FLUXTRACE_SERVE")]
    pub serve: Option<SocketAddr>,
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
    pub deadlines: DeadlineArgs,
    /// Leave out the traces of promotions that changed nothing (outcome `no_change`: a commit
    /// that rolled out no workload, a revision already applied). Failures are always traced;
    /// the promotion is still counted in `fluxtrace_promotions_total`.
    #[arg(long, global = true, env = "FLUXTRACE_SKIP_UNCHANGED")]
    pub skip_unchanged: bool,
    /// Link template for the trace, with `{trace_id}` (and optionally `{start_ms}`, `{end_ms}`),
    /// e.g. `https://jaeger.example/trace/{trace_id}`.
    #[arg(long, global = true, env = "FLUXTRACE_TRACE_URL_TEMPLATE")]
    pub trace_url_template: Option<String>,
    /// Link preset instead of a template: `jaeger` (Jaeger UI), `tempo` (Grafana Explore on a
    /// Tempo data source) or `grafana` (Grafana Explore on any tracing data source). Needs
    /// --trace-base-url; --trace-url-template wins when both are given.
    #[arg(long, global = true, value_enum, env = "FLUXTRACE_TRACE_BACKEND")]
    pub trace_backend: Option<crate::links::TraceBackend>,
    /// Address of the tracing UI for --trace-backend, e.g. `https://grafana.example`.
    #[arg(long, global = true, env = "FLUXTRACE_TRACE_BASE_URL")]
    pub trace_base_url: Option<String>,
    /// Grafana data source (uid or name) for --trace-backend tempo (default `tempo`) or
    /// grafana (required).
    #[arg(long, global = true, env = "FLUXTRACE_TRACE_DATASOURCE")]
    pub trace_datasource: Option<String>,
    /// Grafana organisation id (`orgId`) of the tempo and grafana links; without it, Grafana
    /// opens a link in the user's current organisation.
    #[arg(long, global = true, env = "FLUXTRACE_TRACE_GRAFANA_ORG")]
    pub trace_grafana_org: Option<u64>,
}

#[derive(Debug, Args)]
pub struct OtlpArgs {
    /// OTLP/gRPC endpoint (overrides OTEL_EXPORTER_OTLP_ENDPOINT and
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). With neither, nothing is exported.
    #[arg(long, env = "FLUXTRACE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Per-request export timeout [default: OTEL_EXPORTER_OTLP_TIMEOUT, else 10s].
    #[arg(long, value_parser = parse_duration, env = "FLUXTRACE_OTLP_TIMEOUT")]
    pub otlp_timeout: Option<SignedDuration>,
    /// Retries of a failed export request (exponential backoff).
    #[arg(long, default_value_t = 3, env = "FLUXTRACE_OTLP_RETRIES")]
    pub otlp_retries: usize,
    /// Send uncompressed (gzip is the default unless OTEL_EXPORTER_OTLP_COMPRESSION says
    /// otherwise).
    #[arg(long, env = "FLUXTRACE_OTLP_NO_GZIP")]
    pub otlp_no_gzip: bool,
    /// Largest export request (uncompressed, estimated), e.g. `3MiB`. Keep it under the
    /// collector's limit (4 MiB by default in gRPC and the OpenTelemetry Collector); a request
    /// refused as too large is split anyway.
    #[arg(long, default_value = "3MiB", value_parser = parse_bytes, env = "FLUXTRACE_OTLP_MAX_BATCH_BYTES")]
    pub otlp_max_batch_bytes: usize,
    /// Most spans in one export request.
    #[arg(long, default_value_t = 4096, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..), |n| n as usize), env = "FLUXTRACE_OTLP_MAX_BATCH_SPANS")]
    pub otlp_max_batch_spans: usize,
    /// Finished spans held for export (estimated bytes), e.g. `64MiB`. When full, the agent
    /// waits while the collector answers and drops the oldest (counted) while it does not.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes, env = "FLUXTRACE_OTLP_BUFFER_BYTES")]
    pub otlp_buffer_bytes: usize,
}

#[derive(Debug, Args)]
pub struct DeadlineArgs {
    /// Time for Flux image automation to push a commit for a newly selected image tag.
    #[arg(long, global = true, default_value = "10m", value_parser = parse_duration, env = "FLUXTRACE_IMAGE_DEADLINE")]
    pub image_deadline: SignedDuration,
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
    /// Time for a DaemonSet rollout to complete (DaemonSets have no progressDeadlineSeconds);
    /// --rollout-grace is added.
    #[arg(long, global = true, default_value = "10m", value_parser = parse_duration, env = "FLUXTRACE_ROLLOUT_DEADLINE")]
    pub rollout_deadline: SignedDuration,
    /// Time for a traffic probe to report after a rollout completed.
    #[arg(long, global = true, default_value = "3m", value_parser = parse_duration, env = "FLUXTRACE_TRAFFIC_DEADLINE")]
    pub traffic_deadline: SignedDuration,
    /// Added to the longest a Flagger canary analysis can take by its Canary's spec.
    #[arg(long, global = true, default_value = "5m", value_parser = parse_duration, env = "FLUXTRACE_CANARY_GRACE")]
    pub canary_grace: SignedDuration,
    /// Time for a whole promotion.
    #[arg(long, global = true, default_value = "60m", value_parser = parse_duration, env = "FLUXTRACE_PROMOTION_DEADLINE")]
    pub promotion_deadline: SignedDuration,
    /// Quiet time after the last stage before the verdict.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration, env = "FLUXTRACE_SETTLE")]
    pub settle: SignedDuration,
}

/// The traffic probe (workloads opt in with the `fluxtrace.io/probe-url` annotation).
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Do not probe traffic after rollouts.
    #[arg(long, env = "FLUXTRACE_NO_PROBE")]
    pub no_probe: bool,
    /// Samples per probe at most.
    #[arg(long, default_value_t = 10, env = "FLUXTRACE_PROBE_SAMPLES")]
    pub probe_samples: u32,
    /// Time between samples.
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "FLUXTRACE_PROBE_INTERVAL")]
    pub probe_interval: SignedDuration,
    /// Per-request timeout.
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "FLUXTRACE_PROBE_TIMEOUT")]
    pub probe_timeout: SignedDuration,
    /// The verdict looks at this many of the last samples...
    #[arg(long, default_value_t = 5, env = "FLUXTRACE_PROBE_WINDOW")]
    pub probe_window: u32,
    /// ...of which at least this share (0 to 1) must serve the expected version.
    #[arg(long, default_value_t = 1.0, env = "FLUXTRACE_PROBE_RATIO")]
    pub probe_ratio: f64,
    /// Overall deadline of one probe.
    #[arg(long, default_value = "2m", value_parser = parse_duration, env = "FLUXTRACE_PROBE_DEADLINE")]
    pub probe_deadline: SignedDuration,
    /// Hosts that may be probed (`.suffix` matches by suffix); repeat or separate with commas.
    #[arg(long = "probe-allow-host", value_delimiter = ',', default_values_t = [".svc".to_string(), ".svc.cluster.local".to_string()], env = "FLUXTRACE_PROBE_ALLOW_HOSTS")]
    pub probe_allow_hosts: Vec<String>,
    /// Bytes of a response body read at most.
    #[arg(long, default_value_t = 64 * 1024, env = "FLUXTRACE_PROBE_MAX_BODY")]
    pub probe_max_body: usize,
    /// Probes running at once.
    #[arg(long, default_value_t = 8, env = "FLUXTRACE_PROBE_CONCURRENCY")]
    pub probe_concurrency: usize,
}

impl ProbeArgs {
    pub fn settings(&self) -> Option<crate::probe::ProbeSettings> {
        if self.no_probe {
            return None;
        }
        let d = |x: SignedDuration| Duration::try_from(x).unwrap_or_default();
        Some(crate::probe::ProbeSettings {
            samples: self.probe_samples.max(1),
            interval: d(self.probe_interval),
            timeout: d(self.probe_timeout),
            window: self.probe_window.max(1),
            ratio: self.probe_ratio.clamp(0.0, 1.0),
            deadline: d(self.probe_deadline),
            allow_hosts: self.probe_allow_hosts.clone(),
            max_body: self.probe_max_body,
            concurrency: self.probe_concurrency.max(1),
        })
    }
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

/// Parses a size: `4096`, `512KiB`, `3MiB`, `1GiB` (binary units; `KB`, `MB`, `GB` are read
/// as the same).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("not a size like 4096, 512KiB or 3MiB: {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("unknown size unit in {s:?} (use KiB, MiB or GiB)")),
    };
    let bytes = n
        .checked_mul(1usize << shift)
        .ok_or_else(|| format!("size too large: {s:?}"))?;
    if bytes < 4096 {
        return Err(format!("a size of at least 4KiB is needed: {s:?}"));
    }
    Ok(bytes)
}

impl Global {
    pub fn engine_config(&self) -> EngineConfig {
        let d = &self.deadlines;
        EngineConfig {
            cluster: self.cluster_name.clone(),
            deadlines: Deadlines {
                image: d.image_deadline,
                trigger: d.trigger_deadline,
                source: d.source_deadline,
                reconcile: d.reconcile_deadline,
                rollout_grace: d.rollout_grace,
                rollout: d.rollout_deadline,
                traffic: d.traffic_deadline,
                canary_grace: d.canary_grace,
                promotion: d.promotion_deadline,
                settle: d.settle,
            },
            ..EngineConfig::default()
        }
    }

    /// The trace link template: --trace-url-template, else the --trace-backend preset, else
    /// none.
    pub fn trace_link_template(&self) -> Result<Option<String>, crate::links::LinkError> {
        crate::links::template(crate::links::LinkOptions {
            template: self.trace_url_template.as_deref(),
            backend: self.trace_backend,
            base_url: self.trace_base_url.as_deref(),
            datasource: self.trace_datasource.as_deref(),
            grafana_org: self.trace_grafana_org,
        })
    }
}

impl OtlpArgs {
    /// The size limits of one export request.
    pub fn batch_limits(&self) -> crate::export::BatchLimits {
        crate::export::BatchLimits {
            max_bytes: self.otlp_max_batch_bytes,
            max_spans: self.otlp_max_batch_spans,
        }
    }

    /// The export timeout given on the command line, if any.
    pub fn export_timeout(&self) -> Option<Duration> {
        self.otlp_timeout.and_then(|t| Duration::try_from(t).ok())
    }

    /// gzip unless turned off here, or unless the standard variables choose.
    pub fn export_gzip(&self) -> Option<bool> {
        let env_chooses = [
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|x| !x.trim().is_empty()));
        match (self.otlp_no_gzip, env_chooses) {
            (true, _) => Some(false),
            (false, true) => None,
            (false, false) => Some(true),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_names_the_release_the_commit_and_the_promotion_api_served() {
        let v = super::LONG_VERSION;
        assert!(
            v.starts_with(concat!(env!("CARGO_PKG_VERSION"), " (commit ")),
            "{v}"
        );
        let api = format!("{}/{}", crate::resource::GROUP, crate::resource::VERSION);
        assert!(v.ends_with(&format!("; Promotion API {api})")), "{v}");
        let commit = &v[v.find("(commit ").expect("commit") + 8..v.find(';').expect(";")];
        assert!(
            commit == "unknown"
                || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
            "{commit}"
        );
    }

    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("3MiB"), Ok(3 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("8192"), Ok(8192));
        assert!(parse_bytes("3 parsecs").is_err_and(|e| e.contains("unit")));
        assert!(parse_bytes("12").is_err_and(|e| e.contains("4KiB")));
        assert!(parse_bytes("99999999999999999999GiB").is_err());
    }

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
    fn trace_link_presets_parse_and_a_template_wins() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["fluxtrace"].iter().chain(args).chain(&["demo"]))
                .map(|c| c.global.trace_link_template())
        };
        let jaeger = [
            "--trace-backend",
            "jaeger",
            "--trace-base-url",
            "https://j.example",
        ];
        assert_eq!(
            parse(&jaeger).expect("parses"),
            Ok(Some("https://j.example/trace/{trace_id}".into()))
        );
        let both = [
            &jaeger[..],
            &["--trace-url-template", "https://x/{trace_id}"],
        ]
        .concat();
        assert_eq!(
            parse(&both).expect("parses"),
            Ok(Some("https://x/{trace_id}".into()))
        );
        assert!(parse(&["--trace-backend", "tempo"])
            .expect("parses")
            .is_err());
        assert!(parse(&["--trace-backend", "zipkin"]).is_err());
    }

    #[test]
    fn otlp_flags_show_only_where_spans_are_exported() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        for (sub, exports) in [
            ("run", true),
            ("replay", true),
            ("demo", true),
            ("promote", false),
            ("explain", false),
            ("status", false),
            ("record", false),
        ] {
            let help = cli
                .find_subcommand_mut(sub)
                .expect("a subcommand")
                .render_long_help()
                .to_string();
            for flag in [
                "--otlp-endpoint",
                "--otlp-timeout",
                "--otlp-retries",
                "--otlp-no-gzip",
            ] {
                assert_eq!(help.contains(flag), exports, "{sub} --help and {flag}");
            }
        }
        let top = cli.render_long_help().to_string();
        assert!(!top.contains("--otlp"), "{top}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(SignedDuration::from_mins(10)));
        assert_eq!(parse_duration("1h30m"), Ok(SignedDuration::from_mins(90)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
