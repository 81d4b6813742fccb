//! The `fluxtrace` binary: parse arguments, set up logging, run the subcommand.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use std::sync::Arc;

use fluxtrace::admin::{self, Readiness};
use fluxtrace::agent::{Agent, AgentConfig};
use fluxtrace::config::{Cli, Command, Format, Global, OtlpArgs, OutputArgs, RecordArgs, RunArgs};
use fluxtrace::export::{configured_endpoint, ExportSettings, Exporter};
use fluxtrace::metrics::Metrics;

/// How long `run` waits for a first Flux event from notification-controller before it warns.
const FLUX_EVENTS_GRACE: std::time::Duration = std::time::Duration::from_secs(600);
use fluxtrace::replay::{self, Replay};
use fluxtrace::story;
use fluxtrace::trace::SpanRecord;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The agent's lifecycle (listening, each promotion finished with its trace link) is INFO
    // and shown by default; the one-shot commands only say what went wrong.
    // kube's client logs a whole response body at WARN when it does not decode, and each failed
    // request at ERROR without the server's address. Objects must not reach the log, and every
    // failure it returns is logged by the watchers with the kind, the server and the cause, at a
    // bounded rate: its own lines are off unless RUST_LOG asks for them.
    let default_level = match cli.command {
        Command::Run(_) => "info,kube_client=off",
        _ => "warn,kube_client=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fluxtrace: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Run(args) = &cli.command {
        return run_agent(&cli.global, args);
    }
    if let Command::Record(args) = &cli.command {
        return record(args);
    }
    if let Command::Promote(args) = &cli.command {
        return Ok(fluxtrace::client::promote_command(args));
    }
    if let Command::Explain(args) = &cli.command {
        return Ok(fluxtrace::client::explain_command(args));
    }
    if let Command::Status(args) = &cli.command {
        return Ok(fluxtrace::client::status_command(args));
    }
    if let Command::Check(args) = &cli.command {
        return check(args);
    }
    let mut inputs: Vec<(String, fluxtrace::sources::recording::Decoded)> = Vec::new();
    let mut unreadable = 0;
    let output: &OutputArgs = match &cli.command {
        Command::Demo(d) => {
            for (name, text) in replay::EXAMPLES {
                inputs.push((
                    name.to_string(),
                    fluxtrace::sources::recording::decode_all(text),
                ));
            }
            &d.output
        }
        Command::Run(_) | Command::Record(_) => unreachable!("handled above"),
        Command::Promote(_) | Command::Explain(_) | Command::Status(_) | Command::Check(_) => {
            unreachable!("handled above")
        }
        Command::Replay(r) => {
            // A line at a time, as bytes: a bad line (not UTF-8, too long) is reported and
            // skipped, and a file that cannot be read does not stop the others.
            for f in &r.files {
                let read = std::fs::File::open(f).and_then(|file| {
                    fluxtrace::sources::recording::decode_reader(std::io::BufReader::new(file))
                });
                match read {
                    Ok(d) => inputs.push((f.display().to_string(), d)),
                    Err(e) => {
                        eprintln!("{}: cannot read: {e}", f.display());
                        unreadable += 1;
                    }
                }
            }
            &r.output
        }
    };
    let link_template = cli.global.trace_link_template()?;
    let cfg = cli.global.engine_config();
    let mut replays = Vec::new();
    let mut bad_lines = 0;
    for (name, decoded) in inputs {
        let r = replay::run_decoded(decoded, cfg.clone());
        for b in &r.bad {
            eprintln!(
                "{}:{}: {}",
                story::terminal_safe(&name),
                b.line,
                story::terminal_safe(&b.error.to_string())
            );
        }
        bad_lines += r.bad.len();
        replays.push((name, r));
    }
    for (_, r) in &mut replays {
        if cli.global.skip_unchanged {
            r.traces
                .retain(|t| t.story.outcome != story::Outcome::NoChange);
        }
        for t in &mut r.traces {
            t.story.trace_link = link_template.as_deref().map(|tpl| {
                fluxtrace::links::fill(tpl, t.story.trace_id, t.story.start, t.story.end)
            });
        }
    }
    let mut stdout = std::io::stdout().lock();
    match output.format {
        Format::Json => {
            let spans: Vec<&SpanRecord> = replays.iter().flat_map(|(_, r)| r.spans()).collect();
            serde_json::to_writer_pretty(&mut stdout, &spans)?;
            writeln!(stdout)?;
        }
        Format::Text => {
            for (name, r) in &replays {
                print_text(&mut stdout, name, r)?;
            }
        }
    }
    drop(stdout);
    let served: Vec<story::Story> = match &cli.command {
        Command::Replay(r) if r.serve.is_some() => replays
            .iter()
            .flat_map(|(_, r)| r.traces.iter().map(|t| t.story.clone()))
            .collect(),
        _ => Vec::new(),
    };
    let spans: Vec<SpanRecord> = replays
        .into_iter()
        .flat_map(|(_, r)| r.traces.into_iter().flat_map(|t| t.spans))
        .collect();
    if let Some(otlp) = cli.command.otlp() {
        export(&cli.global, otlp, spans)?;
    }
    if let Command::Replay(fluxtrace::config::ReplayArgs {
        serve: Some(addr), ..
    }) = &cli.command
    {
        serve_replay(*addr, served)?;
    }
    if bad_lines > 0 || unreadable > 0 {
        eprintln!(
            "fluxtrace: {bad_lines} line(s) were rejected and {unreadable} file(s) could not be read (see above)"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(w: &mut impl std::io::Write, name: &str, r: &Replay) -> std::io::Result<()> {
    writeln!(
        w,
        "══ {name}: {} observation(s), {} promotion(s)",
        r.observations,
        r.traces.len()
    )?;
    for t in &r.traces {
        writeln!(w)?;
        write!(w, "{}", story::waterfall::render(&t.spans))?;
        writeln!(w)?;
        write!(w, "{}", story::render(&t.story))?;
    }
    writeln!(w)?;
    Ok(())
}

fn export(g: &Global, otlp: &OtlpArgs, spans: Vec<SpanRecord>) -> anyhow::Result<()> {
    let Some(endpoint) = configured_endpoint(otlp.otlp_endpoint.as_deref()) else {
        eprintln!(
            "fluxtrace: no OTLP endpoint configured (OTEL_EXPORTER_OTLP_ENDPOINT or --otlp-endpoint): {} span(s) not exported",
            spans.len()
        );
        return Ok(());
    };
    let n = spans.len();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let Some(settings) = export_settings(g, otlp) else {
        return Ok(());
    };
    let result = runtime.block_on(async move {
        let mut exporter = Exporter::new(settings).with_limits(otlp.batch_limits());
        let r = exporter.export(spans).await;
        exporter.shutdown();
        r
    });
    match result {
        Ok(()) => {
            eprintln!("fluxtrace: exported {n} span(s) to {endpoint}");
            Ok(())
        }
        Err((failed, errors)) => {
            for e in &errors {
                tracing::error!(message = "Failed to export spans.", error = %e, error_type = e.metric_label());
            }
            anyhow::bail!(
                "{} of {n} span(s) could not be exported to {endpoint}: {}",
                failed.len(),
                errors.first().map(ToString::to_string).unwrap_or_default()
            )
        }
    }
}

fn export_settings(g: &Global, otlp: &OtlpArgs) -> Option<ExportSettings> {
    configured_endpoint(otlp.otlp_endpoint.as_deref())?;
    Some(ExportSettings {
        endpoint: otlp.otlp_endpoint.clone(),
        cluster: g.cluster_name.clone(),
        timeout: otlp.export_timeout(),
        gzip: otlp.export_gzip(),
        retries: otlp.otlp_retries,
    })
}

/// `fluxtrace run`: the agent, until SIGTERM or Ctrl-C.
fn run_agent(g: &Global, args: &RunArgs) -> anyhow::Result<ExitCode> {
    // The release, the commit and the Promotion API versions served, for whoever reads the log
    // of a rolling update with two versions side by side.
    tracing::info!(
        message = "Starting.",
        version = fluxtrace::config::LONG_VERSION
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = runtime.block_on(async {
        let metrics = Arc::new(Metrics::new());
        let readiness = Arc::new(Readiness::default());
        readiness.register("http");
        if !args.no_watch {
            // Until the watchers have registered themselves, nothing says they are listing.
            readiness.register("watchers");
        }
        if args.intake.grpc_listen.is_some() {
            readiness.register("grpc");
        }
        let auth = Arc::new(
            fluxtrace::intake::auth_from_args(&args.intake)
                .context("cannot read the intake credentials")?,
        );
        // Kubernetes Events with the trace link; without a client none are written (not fatal).
        let mut announcer = None;
        let announce = if args.no_k8s_events {
            None
        } else {
            match kube_client().await {
                Ok(client) => {
                    let (tx, task) = fluxtrace::announce::spawn(client, metrics.clone());
                    announcer = Some(task);
                    Some(tx)
                }
                Err(e) => {
                    tracing::warn!(message = "No Kubernetes client: trace links are not written as Kubernetes Events.", error = %format!("{e:#}"));
                    None
                }
            }
        };
        // With a cluster, Promotion objects are reports too, and carry each verdict.
        let cluster = if args.no_watch {
            tracing::info!(message = "No cluster watched (--no-watch): reports are held in memory only.");
            None
        } else {
            let server = fluxtrace::cluster::ApiServer::infer()
                .await
                .context("cannot start the Kubernetes watchers")?
                .with_list_timeout(args.watch.list_timeout());
            Some((server, fluxtrace::resource::sync::channel()))
        };
        // With a cluster, replicas elect a leader: only it exports and writes.
        let stop_lease = CancellationToken::new();
        let lease_settings = args
            .lease
            .settings(&args.promotion_namespace)
            .context("invalid leader election settings")?;
        let (leadership, elector) = match (&cluster, lease_settings) {
            (Some((server, _)), Some(settings)) => {
                let (l, task) = fluxtrace::leader::spawn(
                    server.client.clone(),
                    settings,
                    metrics.clone(),
                    stop_lease.clone(),
                );
                readiness.set_leadership(l.clone());
                // Another replica may take the Lease any moment after it is lost: nothing more
                // may leave this one, not even a shutdown's flush. Kubernetes starts it again
                // as a standby.
                let lost = l.clone();
                tokio::spawn(async move {
                    lost.lost().await;
                    tracing::error!(message = "Exiting at once: the lease was lost.");
                    std::process::exit(1);
                });
                (l, Some(task))
            }
            _ => {
                metrics.leader.set(1);
                (fluxtrace::leader::Leadership::always(), None)
            }
        };
        let promotions = fluxtrace::resource::index::Index::default();
        let cfg = AgentConfig {
            engine: g.engine_config(),
            queue: args.queue,
            max_open_promotions: args.max_open_promotions,
            probe: args.probe.settings(),
            pod_lister: cluster
                .as_ref()
                .map(|(server, _)| fluxtrace::agent::PodLister(server.client.clone())),
            export: export_settings(g, &args.otlp),
            batch_limits: args.otlp.batch_limits(),
            export_buffer: fluxtrace::export::pipeline::BufferSettings {
                max_bytes: args.otlp.otlp_buffer_bytes,
                retries: args.otlp.otlp_retries,
                ..Default::default()
            },
            trace_url_template: g.trace_link_template()?,
            skip_unchanged: g.skip_unchanged,
            announce,
            promotion_status: cluster.as_ref().map(|(_, (tx, _))| tx.stories.clone()),
            export_outcomes: cluster.as_ref().map(|(_, (tx, _))| tx.outcomes.clone()),
            dora_max_series: args.dora_max_series,
            leadership: leadership.clone(),
            confirmations: cluster.is_some().then(|| promotions.clone()),
            ..AgentConfig::default()
        };
        let agent = Agent::start(cfg, metrics.clone(), readiness.clone());
        let app = admin::router(metrics.clone(), readiness.clone());
        let stop_sources = CancellationToken::new();
        let mut sources = tokio::task::JoinSet::new();
        let mut intake = fluxtrace::intake::Intake::new(agent.handle.clone(), auth.clone());
        let mut status_writer = None;
        if let Some((server, (inputs, status_rx))) = cluster {
            // The agent holds its own senders: the status writer ends when the agent has.
            drop(inputs);
            // Verdicts wait for every initial list (`Engine::hold`): the Promotions' too, known
            // before the first watcher can finish.
            readiness.register("watch/Promotion");
            fluxtrace::sources::kube::spawn_with_client(
                &mut sources,
                server.client.clone(),
                fluxtrace::sources::kube::WatchSettings {
                    namespaces: args.watch.namespaces.clone(),
                    workload_selector: args.watch.workload_selector.clone(),
                    list_timeout: Some(server.list_timeout),
                    server_url: Some(server.url.clone()),
                    ..Default::default()
                },
                agent.handle.clone(),
                stop_sources.clone(),
            );
            let writer = fluxtrace::resource::sync::spawn(
                &mut sources,
                server.clone(),
                agent.handle.clone(),
                status_rx,
                promotions.clone(),
                fluxtrace::resource::sync::SyncSettings {
                    rediscover: std::time::Duration::from_secs(300),
                    retention: fluxtrace::resource::sync::Retention {
                        max_age: std::time::Duration::try_from(args.promotion_retention)
                            .unwrap_or_default(),
                        max_per_namespace: args.promotion_max_per_namespace,
                        ..Default::default()
                    },
                    leadership: leadership.clone(),
                },
                stop_sources.clone(),
            );
            status_writer = Some(writer);
            intake = intake.with_store(fluxtrace::resource::sync::PromotionWriter::new(
                server,
                args.promotion_namespace.clone(),
                promotions,
            ));
            readiness.set("watchers", true);
        }
        let app = app.merge(fluxtrace::intake::http::router(intake.clone()));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        readiness.set("http", true);
        tracing::info!(message = "Listening.", address = %args.listen);
        let stop_http = CancellationToken::new();
        let stop = stop_http.clone();
        let limits = fluxtrace::intake::listener::ConnectionLimits {
            max_connections: args.max_connections,
            header_read_timeout: std::time::Duration::try_from(args.header_read_timeout)
                .unwrap_or_default(),
        };
        let mut server = tokio::spawn(fluxtrace::intake::listener::serve(listener, app, limits, stop));
        // Flux's own events make the traces whole; say so when none has come.
        let (m, stop) = (metrics.clone(), stop_http.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(FLUX_EVENTS_GRACE) => {
                    if m.flux_events_received() == 0 {
                        tracing::warn!(
                            message = "No Flux event came from notification-controller: add a Provider (type generic-hmac) and an Alert forwarding to /v1/flux/events; until then only core/v1 Events are read, and client-go folds repeats and drops bursts.",
                            waited_seconds = FLUX_EVENTS_GRACE.as_secs(),
                        );
                    }
                }
            }
        });
        // Health and metrics on their own listener: intake connections cannot starve them.
        if let Some(addr) = args.health_listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (health)"))?;
            tracing::info!(message = "Listening (health and metrics).", address = %addr);
            let health = admin::router(metrics.clone(), readiness.clone());
            let stop = stop_http.clone();
            tokio::spawn(fluxtrace::intake::listener::serve(
                l,
                health,
                fluxtrace::intake::listener::ConnectionLimits::default(),
                stop,
            ));
        }
        // The gRPC intake stops with the HTTP one; so does the re-reading of secret files.
        let mut grpc = match args.intake.grpc_listen {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (gRPC)"))?;
                readiness.set("grpc", true);
                tracing::info!(message = "Listening (gRPC).", address = %addr);
                let stop = stop_http.clone();
                Some(tokio::spawn(fluxtrace::intake::grpc::serve(
                    l,
                    intake.clone(),
                    stop.cancelled_owned(),
                )))
            }
            None => None,
        };
        let _reload =
            auth.spawn_reload(fluxtrace::intake::SECRET_RELOAD_INTERVAL, stop_http.clone());
        drop(intake);
        let failure = tokio::select! {
            _ = shutdown_signal() => None,
            r = &mut server => Some(format!("the HTTP server stopped: {r:?}")),
            r = async {
                match grpc.as_mut() {
                    Some(g) => g.await,
                    None => std::future::pending().await,
                }
            } => Some(format!("the gRPC server stopped: {r:?}")),
            Some(r) = sources.join_next() => Some(format!("a watcher stopped: {r:?}")),
        };
        if let Some(f) = &failure {
            tracing::error!(message = "A task stopped early; shutting down.", reason = %f);
        }
        let deadline = std::time::Duration::try_from(args.shutdown_timeout).unwrap_or_default();
        let started = std::time::Instant::now();
        // Ordered: sources, then intake, then drain the engine and flush the export; every
        // step within what is left of the one deadline.
        stop_sources.cancel();
        let stop_inputs = async {
            while sources.join_next().await.is_some() {}
            stop_http.cancel();
            if !server.is_finished() {
                let _ = (&mut server).await;
            }
            // (A finished JoinHandle must not be polled again.)
            if let Some(g) = grpc.as_mut().filter(|g| !g.is_finished()) {
                let _ = g.await;
            }
        };
        if tokio::time::timeout(deadline / 2, stop_inputs).await.is_err() {
            stop_http.cancel();
            tracing::warn!(message = "Sources and listeners did not stop in time; going on.");
        }
        let left = deadline.saturating_sub(started.elapsed());
        let report = agent.shutdown(left).await;
        // The engine has stopped offering stories: write what is queued, within the deadline.
        for (task, what) in [
            (announcer, "Kubernetes Events"),
            (status_writer, "Promotion statuses"),
        ] {
            let Some(task) = task else { continue };
            let left = deadline.saturating_sub(started.elapsed());
            if tokio::time::timeout(left, task).await.is_err() {
                tracing::warn!(message = "Shutdown deadline reached with writes still queued.", what);
            }
        }
        // Last: the leader led until everything was written; now the standby may take over.
        stop_lease.cancel();
        if let Some(task) = elector {
            let left = deadline.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(left.max(std::time::Duration::from_secs(1)), task).await;
        }
        tracing::info!(
            message = "Stopped.",
            clean = report.clean(),
            spans_lost = report.spans_lost,
            took_ms = started.elapsed().as_millis() as u64
        );
        if report.spans_lost > 0 {
            eprintln!(
                "fluxtrace: shutdown could not deliver {} span(s) to the collector; they are lost",
                report.spans_lost
            );
        }
        Ok(if failure.is_some() || report.spans_lost > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    });
    // Whatever is still running (a request to a collector that never answers) must not hold
    // the process past --shutdown-timeout.
    runtime.shutdown_background();
    code
}

/// A client from the in-cluster config or the kubeconfig.
async fn kube_client() -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `fluxtrace record`: a live cluster to a recording.
/// `fluxtrace check`: the report on standard output; exit 1 when something needed is missing,
/// 2 on bad input.
fn check(args: &fluxtrace::config::CheckArgs) -> anyhow::Result<ExitCode> {
    let options = match fluxtrace::check::live::Options::from_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("fluxtrace check: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime.block_on(async {
        let server = fluxtrace::cluster::ApiServer::infer()
            .await
            .map_err(|e| e.to_string());
        fluxtrace::check::judge(&fluxtrace::check::live::gather(server, &options).await)
    });
    let mut stdout = std::io::stdout().lock();
    match args.output {
        Format::Json => {
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            writeln!(stdout)?;
        }
        Format::Text => write!(stdout, "{}", report.render())?,
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn record(args: &RecordArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = fluxtrace::cluster::ApiServer::infer()
            .await?
            .with_list_timeout(args.watch.list_timeout());
        let settings = fluxtrace::record::RecordSettings {
            namespaces: args.watch.namespaces.clone(),
            workload_selector: args.watch.workload_selector.clone(),
            duration: args
                .duration
                .and_then(|d| std::time::Duration::try_from(d).ok()),
            rediscover: None,
            clock: fluxtrace::agent::Clock::system(),
        };
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            on_signal.cancel();
        });
        let summary = if args.output.as_os_str() == "-" {
            fluxtrace::record::record(server, settings, tokio::io::stdout(), stop).await?
        } else {
            let file = tokio::fs::File::create(&args.output)
                .await
                .with_context(|| format!("cannot create {}", args.output.display()))?;
            let out = tokio::io::BufWriter::new(file);
            fluxtrace::record::record(server, settings, out, stop).await?
        };
        // The `synced` line marks where the initial lists ended: not an observation.
        let total: u64 = summary
            .lines
            .iter()
            .filter(|(kind, _)| **kind != "synced")
            .map(|(_, n)| n)
            .sum();
        eprintln!(
            "fluxtrace: recorded {total} observation(s): {:?}",
            summary.lines
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `fluxtrace replay --serve`: the replay's stories over the HTTP API, read-only, until Ctrl-C
/// or SIGTERM.
fn serve_replay(addr: std::net::SocketAddr, stories: Vec<story::Story>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let metrics = Arc::new(Metrics::new());
        // The replay's DORA metrics, in the order its promotions finished.
        let mut dora = fluxtrace::dora::Dora::new(metrics.clone(), fluxtrace::dora::DEFAULT_MAX_SERIES);
        let mut finished: Vec<&story::Story> = stories.iter().collect();
        finished.sort_by_key(|s| s.end);
        for s in finished {
            dora.record(s);
        }
        let readiness = Arc::new(Readiness::default());
        readiness.register("http");
        let n = stories.len();
        let example = stories.first().map(|s| s.promotion_id.clone());
        let intake = fluxtrace::intake::Intake::replayed(stories, metrics.clone());
        let app = admin::router(metrics, readiness.clone())
            .merge(fluxtrace::intake::http::router(intake));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr().unwrap_or(addr);
        readiness.set("http", true);
        eprintln!(
            "fluxtrace: serving {n} replayed promotion(s) on http://{local} (read-only, no authentication); Ctrl-C stops"
        );
        if let Some(id) = example {
            eprintln!("fluxtrace: try `fluxtrace explain {id} --agent http://{local}`");
        }
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("the HTTP server stopped")
    })
}
