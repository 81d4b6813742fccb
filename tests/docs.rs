//! The manual (README.md and docs/) says what the binary does:
//!
//! - docs/configuration.md is rendered from the clap definitions (every flag, its variable, its
//!   default and its help); a flag added, renamed or re-described without the page fails here
//!   (`UPDATE_DOCS=1 cargo test --test docs` rewrites the page; review the diff);
//! - every command shown in a `sh` block of README.md or docs/*.md is checked, each in one of
//!   the ways of [`How`], printed per command with `-- --nocapture`: run (`demo`; `replay`, a
//!   bundled recording standing in for the reader's own; `replay --serve` and `explain ID`
//!   against it, or against a `replay --serve` of the bundled recordings of rel-2041 and
//!   rel-2042 standing in for `https://fluxtrace.example`); parsed by the real CLI (the
//!   commands that need a cluster, an agent that follows workloads, or a collector: `run`,
//!   `record`, `promote`, `status`, `explain --workload`, `check`); or what it names checked (a
//!   `cargo test --test` target and its test, a benchmark, a Kustomize directory, a script, the
//!   Secrets and namespaces the manifests use, a file, a gRPC method);
//! - the README's opening picture is what `fluxtrace replay` prints for that recording;
//! - every warning the agent logs is explained in docs/troubleshooting.md, and every metric it
//!   registers is listed in docs/operations.md;
//! - the README fits in 12 KB, every page of docs/ is linked from it and opens with whom it is
//!   for, and every relative link and anchor in README.md and docs/ leads somewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use fluxtrace::config::Cli;
use fluxtrace_testkit::files::files;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_fluxtrace");

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// README.md and every page of docs/, as (path relative to the root, text).
fn pages() -> Vec<(String, String)> {
    let mut out = vec![(
        "README.md".to_string(),
        read(&Path::new(ROOT).join("README.md")),
    )];
    for p in files(&Path::new(ROOT).join("docs")) {
        if p.extension().is_some_and(|e| e == "md") {
            let rel = p.strip_prefix(ROOT).expect("under the root");
            out.push((rel.display().to_string(), read(&p)));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// docs/configuration.md, from the clap definitions.

/// Variables read outside clap, each with what it does; every one is read somewhere in src/
/// (checked below), so the list cannot keep a name the code no longer reads.
const OTHER_VARIABLES: &[(&str, &str)] = &[
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTLP/gRPC endpoint of traces, when `--otlp-endpoint` is not given (`run`, `replay`, `demo`).",
    ),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTLP/gRPC endpoint, when neither `--otlp-endpoint` nor `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is given. With none of the three, nothing is exported.",
    ),
    (
        "OTEL_EXPORTER_OTLP_HEADERS",
        "Headers sent with every export request (`key=value,…`), e.g. a tenant or an API key of the collector. Read by the OTLP exporter.",
    ),
    (
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "Export timeout when `--otlp-timeout` is not given (default 10 s). Read by the OTLP exporter.",
    ),
    (
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "`gzip` or `none`; when it (or `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION`) is set, it chooses instead of the gzip default. `--otlp-no-gzip` wins over both.",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "As `OTEL_EXPORTER_OTLP_COMPRESSION`, for traces only.",
    ),
    (
        "HOSTNAME",
        "The Pod's name: `service.instance.id` of the agent's spans (a UUID v5 of it) and the first part of the default `--lease-identity`.",
    ),
    (
        "RUST_LOG",
        "What the log shows; `info` by default (the agent's lifecycle, each promotion finished with its trace link). E.g. `RUST_LOG=fluxtrace=debug`.",
    ),
    (
        "KUBECONFIG",
        "Which kubeconfig `run` and `record` use outside a cluster; in a Pod, the ServiceAccount's in-cluster configuration.",
    ),
    (
        "GITHUB_ACTIONS, GITLAB_CI",
        "`fluxtrace promote` reads the CI run's own variables (`GITHUB_RUN_ID`, `CI_PIPELINE_ID`, …) for the report's id, pipeline, actor and revision, unless `--no-ci`; flags win. [ci.md](ci.md#what-promote-reads-from-the-ci-run) lists them.",
    ),
];

/// A name the code reads: for the CI pair, the ones `fluxtrace promote` keys on.
fn read_in_src(name: &str, src: &str) -> bool {
    name.split(", ").all(|n| src.contains(&format!("\"{n}\"")))
        // Read by the libraries: the log filter, the kube client, the OTLP exporter.
        || matches!(
            name,
            "RUST_LOG" | "KUBECONFIG" | "OTEL_EXPORTER_OTLP_HEADERS" | "OTEL_EXPORTER_OTLP_TIMEOUT"
        )
}

fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn help_of(a: &clap::Arg) -> String {
    let h = a.get_long_help().or(a.get_help()).map(|h| h.to_string());
    sentence(&cell(&h.unwrap_or_default()))
}

/// clap drops the full stop of a one-sentence help; the table puts it back.
fn sentence(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() || s.ends_with(['.', ':', '!', '?']) {
        s.to_string()
    } else {
        format!("{s}.")
    }
}

/// What makes two commands' flags the same flag: a shared group (`OtlpArgs`) gives the same
/// id, name, variable and help; `record --output` and `status --output` are two flags.
fn key(a: &clap::Arg) -> String {
    format!(
        "{}|{:?}|{:?}|{}",
        a.get_id(),
        a.get_long(),
        a.get_env(),
        help_of(a)
    )
}

fn flag_of(a: &clap::Arg) -> String {
    let values = a
        .get_value_names()
        .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .unwrap_or_else(|| vec![a.get_id().as_str().to_uppercase()]);
    let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
    match a.get_long() {
        Some(long) if takes_value => format!("`--{long} <{}>`", values.join(" ")),
        Some(long) => format!("`--{long}`"),
        None => format!("`<{}>`", values.join(" ")),
    }
}

fn row(a: &clap::Arg) -> String {
    let env = a
        .get_env()
        .map(|e| format!("`{}`", e.to_string_lossy()))
        .unwrap_or_else(|| "—".into());
    let default: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
    let default = if default.is_empty() || !takes_value {
        "—".to_string()
    } else {
        format!("`{}`", default.join(","))
    };
    let mut help = help_of(a);
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("`{}`", v.get_name()))
        .collect();
    if takes_value && !values.is_empty() {
        help = format!("{help} One of {}.", values.join(", "));
    }
    if a.is_required_set() {
        help = format!("{help} Required.");
    }
    format!(
        "| {} | {} | {} | {} |",
        flag_of(a),
        env,
        default,
        help.trim()
    )
}

fn shown(a: &clap::Arg) -> bool {
    !a.is_hide_set() && !matches!(a.get_id().as_str(), "help" | "version")
}

/// The commands a user runs (clap adds `help`).
fn subcommands(cli: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cli.get_subcommands().filter(|s| s.get_name() != "help")
}

/// docs/configuration.md as the clap definitions give it.
fn configuration_reference() -> String {
    let mut cli = Cli::command();
    cli.build();
    let mut out = String::new();
    out.push_str(
        "# Configuration reference\n\n\
         For whoever deploys or runs fluxtrace and wants every setting in one place: each flag of\n\
         each command, the environment variable that sets it, its default, and what it does.\n\
         This page is generated from the command-line definitions, so it is what the binary\n\
         takes; `fluxtrace <command> --help` says the same. Durations are written like `30s`,\n\
         `10m`, `1h30m` or `2.5s`; sizes like `4096`, `512KiB`, `3MiB` or `1GiB` (binary\n\
         units, at least 4 KiB). A flag wins over its variable. Which settings matter for a\n\
         cluster, and why, is in [operations.md](operations.md); the deadlines are explained in\n\
         [design.md](design.md#verdict).\n\n",
    );

    // Global flags: those of the top-level command, which every command takes.
    out.push_str(
        "## Every command\n\nThese apply to every command (they shape the traces that `run`, \
         `replay` and `demo` build and the links they print).\n\n",
    );
    out.push_str("| flag | variable | default | what it does |\n|---|---|---|---|\n");
    for a in cli.get_arguments().filter(|a| shown(a)) {
        out.push_str(&row(a));
        out.push('\n');
    }
    let globals: BTreeSet<String> = cli
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();

    // Each command's own flags; a flag several commands share is listed once, under all of them.
    let mut groups: Vec<(Vec<String>, Vec<clap::Arg>)> = Vec::new();
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sub in subcommands(&cli) {
        for a in sub.get_arguments().filter(|a| shown(a)) {
            if globals.contains(a.get_id().as_str()) {
                continue;
            }
            seen.entry(key(a))
                .or_default()
                .push(sub.get_name().to_string());
        }
    }
    for sub in subcommands(&cli) {
        for a in sub.get_arguments().filter(|a| shown(a)) {
            let Some(cmds) = seen.get(&key(a)) else {
                continue;
            };
            if cmds.len() > 1 && cmds[0] != sub.get_name() {
                continue;
            }
            match groups.iter_mut().find(|(c, _)| c == cmds) {
                Some((_, args)) => args.push(a.clone()),
                None => groups.push((cmds.clone(), vec![a.clone()])),
            }
        }
    }
    for sub in subcommands(&cli) {
        let name = sub.get_name().to_string();
        out.push_str(&format!("\n## `fluxtrace {name}`\n\n"));
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            out.push_str(&format!("{}\n\n", sentence(&cell(&about.to_string()))));
        }
        if let Some((_, args)) = groups
            .iter()
            .find(|(c, _)| c == std::slice::from_ref(&name))
        {
            out.push_str("| flag | variable | default | what it does |\n|---|---|---|---|\n");
            for a in args {
                out.push_str(&row(a));
                out.push('\n');
            }
        }
        for (cmds, _) in groups
            .iter()
            .filter(|(c, _)| c.len() > 1 && c.contains(&name))
        {
            if !out.ends_with("\n\n") {
                out.push('\n');
            }
            out.push_str(&format!(
                "And the flags of {}, [below](#{}).\n",
                commands(cmds),
                slug(&format!("Flags of {}", commands(cmds)))
            ));
        }
    }
    for (cmds, args) in groups.iter().filter(|(c, _)| c.len() > 1) {
        out.push_str(&format!("\n## Flags of {}\n\n", commands(cmds)));
        out.push_str("| flag | variable | default | what it does |\n|---|---|---|---|\n");
        for a in args {
            out.push_str(&row(a));
            out.push('\n');
        }
    }

    out.push_str(
        "\n## Other environment variables\n\nRead besides the flags' own variables:\n\n\
         | variable | what it does |\n|---|---|\n",
    );
    for (name, what) in OTHER_VARIABLES {
        let names: Vec<String> = name.split(", ").map(|n| format!("`{n}`")).collect();
        out.push_str(&format!("| {} | {} |\n", names.join(", "), what));
    }
    out
}

fn commands(cmds: &[String]) -> String {
    let names: Vec<String> = cmds.iter().map(|c| format!("`{c}`")).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

#[test]
fn the_configuration_reference_is_what_the_cli_takes() {
    let want = configuration_reference();
    let path = Path::new(ROOT).join("docs/configuration.md");
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).expect("write docs/configuration.md");
    }
    let have = read(&path);
    assert!(
        have == want,
        "docs/configuration.md has drifted from the command-line definitions; regenerate it \
         with UPDATE_DOCS=1 cargo test --test docs and review the diff"
    );
    // Every flag of every command is on the page, with its variable.
    fn walk(c: &clap::Command, page: &str) {
        for a in c.get_arguments().filter(|a| shown(a)) {
            if let Some(long) = a.get_long() {
                assert!(
                    page.contains(&format!("`--{long}")),
                    "--{long} is documented"
                );
            }
            if let Some(env) = a.get_env() {
                let env = env.to_string_lossy();
                assert!(page.contains(&format!("`{env}`")), "{env} is documented");
            }
        }
        for s in c.get_subcommands() {
            walk(s, page);
        }
    }
    walk(&Cli::command(), &have);
    let src: String = files(&Path::new(ROOT).join("src"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| read(p))
        .collect();
    for (name, _) in OTHER_VARIABLES {
        assert!(read_in_src(name, &src), "src/ reads {name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Links and anchors.

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown page (headings outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let s = slug(line.trim_start_matches('#'));
        let n = counts.entry(s.clone()).or_default();
        out.insert(if *n == 0 {
            s.clone()
        } else {
            format!("{s}-{n}")
        });
        *n += 1;
    }
    out
}

/// Targets of Markdown links `](target)` outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Code spans may hold `](` that is no link.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    out
}

#[test]
fn every_link_in_the_readme_and_docs_leads_somewhere() {
    for (page, text) in pages() {
        let dir = Path::new(ROOT).join(&page);
        let dir = dir.parent().expect("a directory");
        for target in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let path = if file.is_empty() {
                Path::new(ROOT).join(&page)
            } else {
                dir.join(file)
            };
            assert!(path.exists(), "{page}: the link {target} leads nowhere");
            if !anchor.is_empty() && path.extension().is_some_and(|e| e == "md") {
                assert!(
                    anchors(&read(&path)).contains(anchor),
                    "{page}: the link {target} names no heading of {}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn the_readme_is_a_front_door_into_the_manual() {
    let readme = read(&Path::new(ROOT).join("README.md"));
    assert!(
        readme.len() <= 12 * 1024,
        "README.md is {} bytes; it fits in 12 KB, the rest belongs in docs/",
        readme.len()
    );
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .map(|l| l.split('#').next().unwrap_or_default().to_string())
        .collect();
    for (page, text) in pages().into_iter().skip(1) {
        assert!(linked.contains(&page), "README.md links to {page}");
        let first = text
            .lines()
            .skip(1)
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        assert!(
            first.starts_with("For "),
            "{page} opens by saying whom it is for (\"For …\"), not {first:?}"
        );
    }
    for heading in [
        "Quick start",
        "Install",
        "From CI",
        "On call",
        "Documentation",
    ] {
        assert!(
            readme
                .lines()
                .any(|l| l.starts_with("## ") && l.contains(heading)),
            "README.md has a section {heading:?}"
        );
    }
    for command in ["fluxtrace explain", "fluxtrace status", "fluxtrace check"] {
        assert!(readme.contains(command), "README.md names {command}");
    }
}

// ---------------------------------------------------------------------------------------------
// Every command of every `sh` block.

/// One command of a `sh` block: the variables set before it, its words, and whether its input
/// is the output of the command before it (`… | jq`).
#[derive(Debug)]
struct Shown {
    page: String,
    env: Vec<(String, String)>,
    words: Vec<String>,
    piped: bool,
}

/// Every command in the `sh` blocks of README.md and docs/*.md.
fn shown_commands() -> Vec<Shown> {
    let mut out = Vec::new();
    for (page, text) in pages() {
        let mut block: Option<String> = None;
        for line in text.lines() {
            let fence = line.trim_start();
            match &mut block {
                None if fence.starts_with("```sh") => block = Some(String::new()),
                Some(b) if fence.starts_with("```") => {
                    for shell in fluxtrace_testkit::shell::commands(b) {
                        let (mut words, piped) = (shell.words, shell.piped);
                        let mut env = Vec::new();
                        while words.first().is_some_and(|w| {
                            w.split_once('=').is_some_and(|(k, _)| {
                                !k.is_empty()
                                    && k.chars().all(|c| {
                                        c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
                                    })
                            })
                        }) {
                            let w = words.remove(0);
                            let (k, v) = w.split_once('=').expect("an assignment");
                            env.push((k.to_string(), v.to_string()));
                        }
                        out.push(Shown {
                            page: page.clone(),
                            env,
                            words,
                            piped,
                        });
                    }
                    block = None;
                }
                Some(b) => {
                    b.push_str(line);
                    b.push('\n');
                }
                None => {}
            }
        }
    }
    out
}

/// How a shown command is checked.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum How {
    /// Run here, and its output looked at (`explain` against a `replay --serve` of the bundled
    /// recordings standing in for the agent).
    Ran,
    /// Parsed by the real command line; it needs a cluster, an agent that follows workloads, or
    /// a collector.
    Parsed,
    /// What it names exists: a test target and test, a Kustomize directory, a file, a Secret
    /// the manifests mount; it needs a cluster, a registry, or is the test suite itself.
    TargetChecked,
    /// The command this build has no `check` subcommand for.
    NotInThisBuild,
}

/// What tests/, testkit/ and src/ read: a variable shown before a command must be one of them.
fn sources_text() -> String {
    ["src", "tests", "testkit/src", ".ci"]
        .iter()
        .flat_map(|d| files(&Path::new(ROOT).join(d)))
        .filter(|p| p.extension().is_none_or(|e| e == "rs"))
        .map(|p| std::fs::read_to_string(&p).unwrap_or_default())
        .collect()
}

/// A recording that ships with the repository, for a command that names the reader's own.
const BUNDLED: &str = "examples/recordings/oci-rollout-imagepull.jsonl";

fn run_fluxtrace(args: &[String]) -> std::process::Output {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(ROOT)
        .env_clear()
        .env("RUST_LOG", "warn")
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "fluxtrace {args:?} fails: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `replay --serve` servers a page started: the address it shows → the one it got.
type Served = BTreeMap<String, (fluxtrace_testkit::cli::Running, String)>;

fn check_fluxtrace(c: &Shown, args: &[String], served: &mut Served) -> How {
    let cli = Cli::command();
    let sub = args.first().map(String::as_str).unwrap_or_default();
    if cli.find_subcommand(sub).is_none() && sub == "check" {
        return How::NotInThisBuild;
    }
    let argv = std::iter::once("fluxtrace".to_string()).chain(args.iter().cloned());
    if let Err(e) = cli.clone().try_get_matches_from(argv) {
        panic!(
            "{}: `fluxtrace {}` is not a command the CLI takes: {e}",
            c.page,
            args.join(" ")
        );
    }
    let exports = c
        .env
        .iter()
        .any(|(k, _)| k.starts_with("OTEL_EXPORTER_OTLP"));
    match sub {
        "demo" if !exports => {
            let out = run_fluxtrace(args);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("Promotion "),
                "`fluxtrace demo` prints stories"
            );
            How::Ran
        }
        // `replay --serve ADDR FILE…`: served for real (on a free port), for the commands after
        // it that ask ADDR.
        "replay" if !exports && args.iter().any(|a| a == "--serve") => {
            let at = args.iter().position(|a| a == "--serve").expect("--serve");
            let shown_addr = args[at + 1].clone();
            let files: Vec<std::path::PathBuf> = args[1..]
                .iter()
                .enumerate()
                .filter(|(i, a)| *i + 1 != at && *i + 1 != at + 1 && !a.starts_with("--"))
                .map(|(_, a)| Path::new(ROOT).join(a))
                .collect();
            assert!(
                files.iter().all(|f| f.exists()),
                "{}: {files:?} ship with fluxtrace",
                c.page
            );
            let (running, addr) = fluxtrace_testkit::cli::serve_replay(BIN, &files);
            served.insert(shown_addr, (running, addr));
            How::Ran
        }
        "explain" if !args.iter().any(|a| a == "--workload") => {
            if !served.contains_key(EXAMPLE_AGENT) {
                let files: Vec<std::path::PathBuf> = EXAMPLE_RECORDINGS
                    .iter()
                    .map(|f| Path::new(ROOT).join(f))
                    .collect();
                let (running, addr) = fluxtrace_testkit::cli::serve_replay(BIN, &files);
                served.insert(EXAMPLE_AGENT.to_string(), (running, addr));
            }
            let Some(args) = served_agent(args, served) else {
                panic!(
                    "{}: `fluxtrace {}` asks an agent the test does not serve",
                    c.page,
                    args.join(" ")
                );
            };
            let out = run_fluxtrace(&args);
            let text = String::from_utf8_lossy(&out.stdout);
            let id = &args[1];
            assert!(
                text.contains(id.as_str()),
                "`fluxtrace {}` prints the story of {id}: {text}",
                args.join(" ")
            );
            How::Ran
        }
        "replay" if !exports => {
            let args: Vec<String> = args
                .iter()
                .map(|a| {
                    if a.ends_with(".jsonl") && !Path::new(ROOT).join(a).exists() {
                        BUNDLED.to_string()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let out = run_fluxtrace(&args);
            let text = String::from_utf8_lossy(&out.stdout);
            if args
                .windows(2)
                .any(|w| w[0] == "--format" && w[1] == "json")
            {
                let spans: serde_json::Value =
                    serde_json::from_str(&text).expect("`replay --format json` prints JSON");
                assert!(
                    spans.as_array().is_some_and(|a| !a.is_empty()),
                    "a JSON array of spans"
                );
            } else {
                assert!(
                    text.contains("Promotion "),
                    "`fluxtrace replay` prints stories"
                );
            }
            How::Ran
        }
        _ => How::Parsed,
    }
}

/// The agent the manual's examples ask, `https://fluxtrace.example`: here a `replay --serve` of
/// the bundled recordings of the promotions the manual names (rel-2041 succeeds, rel-2042
/// fails at rollout). It serves stories only, so it answers `explain ID`.
const EXAMPLE_AGENT: &str = "fluxtrace.example";
const EXAMPLE_RECORDINGS: &[&str] = &[
    "examples/recordings/oci-success.jsonl",
    "examples/recordings/oci-rollout-imagepull.jsonl",
];

/// `args` with `--agent http://ADDR` pointing at the server a `replay --serve ADDR` started.
fn served_agent(args: &[String], served: &Served) -> Option<Vec<String>> {
    let at = args.iter().position(|a| a == "--agent")?;
    let url = args.get(at + 1)?;
    let shown = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let (_, real) = served.get(shown)?;
    let mut args = args.to_vec();
    args[at + 1] = format!("http://{real}");
    Some(args)
}

fn check_command(c: &Shown, src: &str, served: &mut Served) -> How {
    let here = |p: &str| Path::new(ROOT).join(p.trim_start_matches("./"));
    for (k, _) in &c.env {
        assert!(
            src.contains(&format!("\"{k}\"")) || OTHER_VARIABLES.iter().any(|(n, _)| n == k),
            "{}: {k} is set before a command, but nothing reads it",
            c.page
        );
    }
    let w: Vec<&str> = c.words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["jq", ..] if c.piped => How::TargetChecked,
        ["fluxtrace", args @ ..] => {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            check_fluxtrace(c, &args, served)
        }
        ["cargo", "run", rest @ ..] => {
            let at = rest
                .iter()
                .position(|a| *a == "--")
                .expect("cargo run -- <args>");
            assert!(rest[..at]
                .iter()
                .all(|a| ["--release", "--locked", "--quiet"].contains(a)));
            let args: Vec<String> = rest[at + 1..].iter().map(|s| s.to_string()).collect();
            check_fluxtrace(c, &args, served)
        }
        ["cargo", "test", rest @ ..] => {
            let (opts, filters) = match rest.iter().position(|a| *a == "--") {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            if let Some(at) = opts.iter().position(|a| *a == "--test") {
                let target = opts[at + 1];
                let file = here(&format!("tests/{target}.rs"));
                assert!(file.exists(), "{}: no test target {target}", c.page);
                let text = read(&file);
                let mut skip = false;
                for f in filters {
                    if skip {
                        skip = false;
                    } else if f.starts_with("--") {
                        skip = *f == "--test-threads";
                    } else {
                        assert!(
                            text.contains(&format!("fn {f}")),
                            "{}: tests/{target}.rs has no test {f}",
                            c.page
                        );
                    }
                }
            }
            How::TargetChecked
        }
        ["cargo", "bench", "--bench", bench] => {
            assert!(
                here(&format!("benches/{bench}.rs")).exists(),
                "benches/{bench}.rs"
            );
            How::TargetChecked
        }
        [script] if script.starts_with("tests/testbed/") => {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = std::fs::metadata(here(script)).unwrap_or_else(|e| panic!("{script}: {e}"));
            assert!(
                meta.permissions().mode() & 0o111 != 0,
                "{script} is executable"
            );
            How::TargetChecked
        }
        ["kubectl", "apply", "-k", dir] => {
            assert!(
                here(dir).join("kustomization.yaml").exists(),
                "{}: {dir} is a Kustomize directory (tests/deploy.rs renders it)",
                c.page
            );
            How::TargetChecked
        }
        ["kubectl", "create", "namespace", ns] | ["kubectl", "get", "promotions", "-n", ns] => {
            let deploy = deploy_text();
            assert!(
                deploy.contains(&format!("namespace: {ns}")),
                "deploy/ uses namespace {ns}"
            );
            How::TargetChecked
        }
        ["kubectl", "get", "promotions", "-A"] => {
            assert!(read(&here("deploy/crds/promotions.yaml")).contains("plural: promotions"));
            How::TargetChecked
        }
        ["kubectl", "-n", ns, "create", "secret", "generic", name, from] => {
            let deploy = deploy_text();
            assert!(
                deploy.contains(&format!("namespace: {ns}")),
                "deploy/ uses namespace {ns}"
            );
            assert!(
                deploy.contains(&format!("secretName: {name}")),
                "deploy/ mounts {name}"
            );
            let key = from
                .split_once('=')
                .and_then(|(_, kv)| kv.split_once('='))
                .map(|(k, _)| k)
                .expect("--from-…=key=value");
            assert!(
                deploy.contains(&format!("key: {key}")) || deploy.contains(&format!("/{key}")),
                "deploy/ reads the key {key} of {name}"
            );
            How::TargetChecked
        }
        ["flux", "push", "artifact", _, rest @ ..] => {
            let path = rest
                .iter()
                .find_map(|a| a.strip_prefix("--path="))
                .expect("--path=");
            assert!(here(path).is_dir(), "{}: {path} exists", c.page);
            How::TargetChecked
        }
        ["docker", "build", "-f", file, ..] => {
            assert!(here(file).exists(), "{}: {file} exists", c.page);
            How::TargetChecked
        }
        ["grpcurl", rest @ ..] => {
            let proto = rest
                .windows(2)
                .find(|p| p[0] == "-proto")
                .map(|p| here(&format!("proto/{}", p[1])))
                .expect("-proto");
            let method = rest.last().expect("a method");
            let (service, rpc) = method.rsplit_once('/').expect("Service/Method");
            let text = read(&proto);
            let service = service.rsplit('.').next().unwrap_or_default();
            assert!(
                text.contains(&format!("service {service}")),
                "{method} in {}",
                proto.display()
            );
            assert!(
                text.contains(&format!("rpc {rpc}(")),
                "{method} in {}",
                proto.display()
            );
            How::TargetChecked
        }
        ["helm", "install" | "upgrade", release, chart, rest @ ..] => {
            assert_eq!(
                *release, "fluxtrace",
                "{}: the release the docs use",
                c.page
            );
            check_chart(c, chart, rest);
            for set in rest.windows(2).filter(|p| p[0] == "--set").map(|p| p[1]) {
                let (key, _) = set.split_once('=').expect("--set key=value");
                let values: serde_yaml_ng::Value =
                    serde_yaml_ng::from_str(&read(&here("deploy/helm/fluxtrace/values.yaml")))
                        .expect("values.yaml");
                let found = key.split('.').try_fold(&values, |v, k| v.get(k)).is_some();
                assert!(found, "{}: --set {key}: not a value of the chart", c.page);
            }
            How::TargetChecked
        }
        ["helm", "show", "crds", chart, rest @ ..] => {
            check_chart(c, chart, rest);
            assert!(
                here("deploy/helm/fluxtrace/crds").is_dir(),
                "the chart's crds/"
            );
            How::TargetChecked
        }
        ["helm", "-n", ns, "list"] => {
            assert!(deploy_text().contains(&format!("namespace: {ns}")));
            How::TargetChecked
        }
        ["kubectl", "apply", "--server-side", "-f", "-"] if c.piped => How::TargetChecked,
        ["kubectl", "get", "crd", crd, ..] => {
            let (plural, group) = crd.split_once('.').expect("plural.group");
            let text = read(&here("deploy/crds/promotions.yaml"));
            assert!(
                text.contains(&format!("plural: {plural}"))
                    && text.contains(&format!("group: {group}")),
                "{}: deploy/crds defines {crd}",
                c.page
            );
            How::TargetChecked
        }
        ["kubectl", "-n", ns, "get" | "exec", target, rest @ ..] => {
            let name = match (*target, rest.first()) {
                ("deploy", Some(name)) => *name,
                (t, _) => t.strip_prefix("deploy/").expect("a Deployment"),
            };
            let deploy = deploy_text();
            assert!(
                deploy.contains(&format!("namespace: {ns}"))
                    && deploy.contains("kind: Deployment")
                    && deploy.contains(&format!("name: {name}")),
                "{}: deploy/ has Deployment {ns}/{name}",
                c.page
            );
            if let Some(at) = rest.iter().position(|a| *a == "--") {
                assert_eq!(
                    rest[at + 1..],
                    ["/fluxtrace", "--version"],
                    "{}: what the image runs",
                    c.page
                );
                assert!(read(&here("deploy/image/build")).contains("/fluxtrace"));
            }
            How::TargetChecked
        }
        ["cosign", "verify", image, rest @ ..] => {
            let repo = image.split('@').next().unwrap_or_default();
            assert!(
                read(&Path::new(ROOT).join("deploy/helm/fluxtrace/values.yaml"))
                    .contains(&format!("repository: {repo}\n")),
                "{}: {repo} is the image the chart runs",
                c.page
            );
            let identity = rest
                .windows(2)
                .find(|p| p[0] == "--certificate-identity-regexp")
                .map(|p| p[1])
                .expect("--certificate-identity-regexp");
            let workflow = identity
                .split("/fluxtrace/fluxtrace/")
                .nth(1)
                .and_then(|w| w.split('@').next())
                .expect("the signing workflow");
            assert!(here(workflow).exists(), "{}: {workflow} signs", c.page);
            How::TargetChecked
        }
        other => panic!(
            "{}: `{}` is shown, but tests/docs.rs does not know how to check it",
            c.page,
            other.join(" ")
        ),
    }
}

/// A chart reference the docs show is the chart in deploy/helm, at its version (or `X.Y.Z`).
fn check_chart(c: &Shown, chart: &str, rest: &[&str]) {
    assert_eq!(
        chart, "oci://ghcr.io/fluxtrace/charts/fluxtrace",
        "{}: where the release workflow pushes the chart",
        c.page
    );
    let meta = read(&Path::new(ROOT).join("deploy/helm/fluxtrace/Chart.yaml"));
    let version = rest
        .windows(2)
        .find(|p| p[0] == "--version")
        .map(|p| p[1])
        .expect("--version");
    assert!(
        version == "X.Y.Z" || meta.contains(&format!("\nversion: {version}\n")),
        "{}: chart version {version}",
        c.page
    );
}

fn deploy_text() -> String {
    files(&Path::new(ROOT).join("deploy"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| read(p))
        .collect()
}

#[test]
fn every_command_shown_in_the_readme_and_docs_is_checked() {
    let src = sources_text();
    let shown = shown_commands();
    assert!(shown.len() > 20, "the commands are found: {shown:?}");
    let mut how: BTreeMap<How, usize> = BTreeMap::new();
    let mut served = Served::new();
    for c in &shown {
        let h = check_command(c, &src, &mut served);
        println!("{:?}: {}: {}", h, c.page, c.words.join(" "));
        *how.entry(h).or_default() += 1;
    }
    println!("{how:?}");
    // The front door's own commands are run, not only parsed.
    let demo = shown
        .iter()
        .find(|c| c.page == "README.md" && c.words.contains(&"demo".to_string()))
        .expect("README.md shows the demo");
    assert_eq!(check_command(demo, &src, &mut served), How::Ran);
    assert!(
        shown
            .iter()
            .any(|c| c.page == "README.md" && c.words == ["cargo", "test"]),
        "README.md shows the test command `.ci/run` runs"
    );
}

#[test]
fn the_shell_reader_marks_what_reads_a_pipe() {
    let cmds = fluxtrace_testkit::shell::commands(
        "A=1 fluxtrace promote \\\n  --id \"$A-1\" --app 'x y' # note\nflux tag a || echo no\nx && y | jq '.[] | .a'",
    );
    let words: Vec<(Vec<&str>, bool)> = cmds
        .iter()
        .map(|c| (c.words.iter().map(String::as_str).collect(), c.piped))
        .collect();
    assert_eq!(
        words,
        vec![
            (
                vec![
                    "A=1",
                    "fluxtrace",
                    "promote",
                    "--id",
                    "$A-1",
                    "--app",
                    "x y"
                ],
                false
            ),
            (vec!["flux", "tag", "a"], false),
            (vec!["echo", "no"], false),
            (vec!["x"], false),
            (vec!["y"], false),
            (vec!["jq", ".[] | .a"], true),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// docs/troubleshooting.md: every warning the agent logs.

/// The messages of every `warn!` in src/ (and the ones a warning picks by its cause).
fn warnings() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in files(&Path::new(ROOT).join("src")) {
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = read(&p);
        let mut rest = text.as_str();
        while let Some(i) = rest.find("warn!(") {
            rest = &rest[i + "warn!(".len()..];
            let call = &rest[..rest.find(");").unwrap_or(rest.len())];
            if let Some(m) = call.split("message = \"").nth(1) {
                out.insert(m[..m.find('"').expect("a closing quote")].to_string());
            }
        }
        // A warning whose message is chosen by its cause: `Failure::X(_) => "…",`.
        for line in text.lines() {
            if line.contains("WatchFailure::") && line.contains("=> \"") {
                let m = line.split("=> \"").nth(1).expect("a message");
                out.insert(m[..m.find('"').expect("a closing quote")].to_string());
            }
        }
    }
    out
}

#[test]
fn every_warning_the_agent_logs_is_explained_in_troubleshooting() {
    let page = read(&Path::new(ROOT).join("docs/troubleshooting.md"));
    let logged = warnings();
    assert!(logged.len() > 25, "the warnings are found: {logged:?}");
    for m in &logged {
        assert!(
            page.contains(&format!("### `{m}`")),
            "docs/troubleshooting.md explains the warning {m:?} under a heading of its own"
        );
    }
    for heading in page.lines().filter_map(|l| l.strip_prefix("### `")) {
        let m = heading.trim_end_matches('`');
        assert!(
            logged.contains(m),
            "docs/troubleshooting.md explains {m:?}, which the agent no longer logs"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// docs/operations.md: the metrics the agent serves.

/// The names registered in src/metrics.rs (`registry.register("name", …)`), prefixed.
fn registered_metrics() -> BTreeSet<String> {
    let src = read(&Path::new(ROOT).join("src/metrics.rs"));
    let mut out = BTreeSet::new();
    for call in src.split("registry.register").skip(1) {
        let name = call.split('"').nth(1).expect("a metric name");
        out.insert(format!("fluxtrace_{name}"));
    }
    out
}

#[test]
fn every_metric_the_agent_serves_is_in_operations_and_no_other() {
    let page = read(&Path::new(ROOT).join("docs/operations.md"));
    let registered = registered_metrics();
    assert!(
        registered.len() > 20,
        "the metrics are found: {registered:?}"
    );
    let section = page
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/operations.md has a section Metrics");
    let listed: BTreeSet<&str> = section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.starts_with("fluxtrace_"))
        .collect();
    for n in &registered {
        assert!(
            listed.iter().any(|w| {
                w.strip_prefix(n.as_str())
                    .is_some_and(|rest| ["", "_total", "_seconds"].contains(&rest))
            }),
            "docs/operations.md lists the metric {n}"
        );
    }
    for w in &listed {
        assert!(
            registered.iter().any(|n| w
                .strip_prefix(n.as_str())
                .is_some_and(|rest| ["", "_total", "_seconds"].contains(&rest))),
            "docs/operations.md lists {w}, which the agent does not serve"
        );
    }
}

/// The README's first picture (the waterfall and the story of rel-2042) is what fluxtrace prints
/// for the bundled recording of that promotion, line for line.
#[test]
fn the_readmes_picture_is_what_fluxtrace_prints() {
    let readme = read(&Path::new(ROOT).join("README.md"));
    let picture = readme
        .split("```\n")
        .nth(1)
        .expect("README.md opens with a picture in a code block");
    let out = run_fluxtrace(&[
        "replay".to_string(),
        "examples/recordings/oci-rollout-imagepull.jsonl".to_string(),
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    let printed: BTreeSet<&str> = printed.lines().map(str::trim).collect();
    let mut lines = 0;
    for line in picture.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            printed.contains(line),
            "fluxtrace prints the README's line {line:?}"
        );
        lines += 1;
    }
    assert!(
        lines >= 8,
        "the picture has the waterfall and the story: {picture}"
    );
}
