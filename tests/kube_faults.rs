//! The Kubernetes API misbehaving, against the test API server through kube's real client: a
//! LIST answering 500, a LIST that never answers, an API server that is not there, one that
//! does not serve streaming lists. The watches
//! must back off with growing waits, give up on a hung LIST after `--kube-list-timeout`, recover
//! once the server answers again, and log a bounded number of lines that name the kind, the
//! server and the cause. The figures are printed on stdout (`-- --nocapture`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluxtrace::cluster::{KindWatch, Lenient, WatchFailure};
use fluxtrace::sources::object::KubeObject;
use fluxtrace_testkit::kube_api::{KubeApi, RequestRecord, ServerHandle};
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::{watcher, WatchStreamExt};

const KUSTOMIZATIONS: &str = "/apis/kustomize.toolkit.fluxcd.io/v1/kustomizations";

fn kustomization() -> ApiResource {
    ApiResource {
        group: "kustomize.toolkit.fluxcd.io".into(),
        version: "v1".into(),
        api_version: "kustomize.toolkit.fluxcd.io/v1".into(),
        kind: "Kustomization".into(),
        plural: "kustomizations".into(),
    }
}

/// The gaps between successive LISTs of `path`.
fn list_gaps(server: &ServerHandle, path: &str) -> Vec<Duration> {
    let at: Vec<Instant> = server
        .requests()
        .iter()
        .filter(|r| r.path == path && r.is_list())
        .map(|r| r.at)
        .collect();
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

fn secs(gaps: &[Duration]) -> String {
    gaps.iter()
        .map(|g| format!("{:.2}", g.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Four LISTs answer 500. kube-runtime's own `default_backoff()` resets at every `Init` the
/// watcher yields before each failed LIST, so it retries at a constant pace; the agent's watch
/// waits longer after each failure (0.8 s doubling, with jitter of up to as much again), then
/// lists successfully. Both run in the same test, against the same kind of server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_list_is_retried_with_growing_waits_until_it_answers() {
    const FAILURES: usize = 4;

    // kube-runtime's default, as a baseline.
    let plain = KubeApi::new().start().await;
    plain.fail_lists("kustomizations", 500, FAILURES);
    let api: Api<DynamicObject> = Api::all_with(plain.client(), &kustomization());
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut failed = 0;
    while failed < FAILURES {
        if let Some(Err(_)) = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the plain watcher goes on")
        {
            failed += 1;
        }
    }
    let plain_gaps = list_gaps(&plain, KUSTOMIZATIONS);

    let server = KubeApi::new().start().await;
    server.fail_lists("kustomizations", 500, FAILURES);
    let mut watch =
        KindWatch::<KubeObject>::new(&server.api_server(), &kustomization(), None, None);
    let started = Instant::now();
    let mut errors = Vec::new();
    loop {
        match next_item(&mut watch, Duration::from_secs(60)).await {
            Err(e) => errors.push(e.to_string()),
            Ok(kube::runtime::watcher::Event::InitDone) => break,
            Ok(_) => {}
        }
    }
    let recovered = started.elapsed();
    let gaps = list_gaps(&server, KUSTOMIZATIONS);

    println!(
        "kube faults: {FAILURES} LISTs answering 500: gaps between LISTs {} s with \
         kube-runtime's default backoff; {} s with the agent's (listed after {:.1} s)",
        secs(&plain_gaps),
        secs(&gaps),
        recovered.as_secs_f64()
    );
    assert_eq!(errors.len(), FAILURES, "{errors:?}");
    assert!(
        errors[0].contains("500") || errors[0].contains("InternalError"),
        "the cause is named: {}",
        errors[0]
    );
    assert_eq!(gaps.len(), FAILURES, "one LIST after each failure");
    // Waits after failure k lie in [0.8 s * 2^k, 1.6 s * 2^k): two steps apart they cannot
    // overlap, whatever the jitter.
    for k in 0..gaps.len() - 2 {
        assert!(gaps[k + 2] > gaps[k], "waits grow: {}", secs(&gaps));
    }
    assert!(
        gaps[FAILURES - 1] >= Duration::from_millis(6_000),
        "the fourth wait is at least 6.4 s: {}",
        secs(&gaps)
    );
    assert!(
        plain_gaps.iter().all(|g| *g < Duration::from_millis(2_500)),
        "the baseline retries at a constant pace (if this fails, kube-runtime's backoff \
         changed and the agent's own may no longer be needed): {}",
        secs(&plain_gaps)
    );
}

/// The watch's next item; it must come `within`.
async fn next_item(
    watch: &mut KindWatch<KubeObject>,
    within: Duration,
) -> Result<watcher::Event<Lenient<KubeObject>>, WatchFailure> {
    tokio::time::timeout(within, watch.next())
        .await
        .expect("the watch goes on")
        .expect("the watch does not end")
}

/// Lists `kustomization()` once with the agent's watch; the LIST requests it made (plain and
/// streaming).
async fn list_once(server: &ServerHandle) -> Vec<RequestRecord> {
    let mut watch =
        KindWatch::<KubeObject>::new(&server.api_server(), &kustomization(), None, None);
    let mut applied = 0;
    loop {
        match next_item(&mut watch, Duration::from_secs(30)).await {
            Ok(watcher::Event::InitApply(_)) => applied += 1,
            Ok(watcher::Event::InitDone) => break,
            _ => {}
        }
    }
    assert!(applied > 0, "the Kustomizations are listed");
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == KUSTOMIZATIONS && r.is_list())
        .collect()
}

fn one_kustomization() -> KubeApi {
    KubeApi::with_recording(fluxtrace_testkit::recordings::example("git-success.jsonl"))
}

/// Where the server serves streaming lists, the initial list is one watch that sends the
/// objects one by one (`sendInitialEvents=true`), never a LIST response held whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_stream_where_the_server_serves_it() {
    let server = one_kustomization().start().await;
    server.apply_initial();
    let lists = list_once(&server).await;
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert!(lists[0].watch);
    assert_eq!(lists[0].query["sendInitialEvents"], "true");
    assert_eq!(lists[0].query["resourceVersionMatch"], "NotOlderThan");
}

/// A server without the `WatchList` feature refuses a streaming list (422 Invalid): the watch
/// lists in pages of 500 instead, and goes on doing so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_paged_where_streaming_lists_are_refused() {
    let server = one_kustomization().start().await;
    server.apply_initial();
    server.refuse_streaming_lists(true);
    let lists = list_once(&server).await;
    assert_eq!(
        lists.len(),
        2,
        "the refused streaming list, then a LIST: {lists:?}"
    );
    assert!(lists[0].watch);
    assert!(!lists[1].watch);
    assert_eq!(lists[1].query["limit"], "500");
}

/// The binary's log lines for `run` against `kubeconfig`, read as they come.
struct Agent {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    addr: std::net::SocketAddr,
}

impl Agent {
    fn start(kubeconfig: &std::path::Path, extra: &[&str]) -> Agent {
        use tokio::io::AsyncBufReadExt as _;
        let addr = fluxtrace_testkit::files::free_loopback_addr();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fluxtrace"))
            .args([
                "run",
                "--no-k8s-events",
                "--insecure-no-auth",
                "--listen",
                &addr.to_string(),
            ])
            .args(extra)
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("fluxtrace run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().expect("log lines").push(line);
            }
        });
        Agent { child, lines, addr }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lines").clone()
    }

    fn matching(&self, needles: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .collect()
    }

    async fn ready(&self) -> bool {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Ok(mut s) = tokio::net::TcpStream::connect(self.addr).await else {
            return false;
        };
        let request = "GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        if s.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        buf.starts_with(b"HTTP/1.1 200")
    }

    async fn until(&self, what: &str, bound: Duration, mut done: impl FnMut(&Agent) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < bound,
                "{what} within {bound:?}; log:\n{}",
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The real binary, with one kind's LIST failing and another's hanging: each is logged once,
/// naming the kind, the server and the cause; no object body reaches the log; the agent becomes
/// ready once the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_failing_and_hanging_lists_once_with_kind_and_server() {
    let server = KubeApi::new().start().await;
    server.fail_lists("kustomizations", 500, 3);
    server.hang_lists("helmreleases", Duration::from_secs(600), 1);
    server.add_raw_list_item(
        "Deployment",
        serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": 7, "namespace": "apps",
                         "annotations": {"note": "body-marker-4fd1"}},
        }),
    );
    let kubeconfig = server.kubeconfig("kube-faults-log");
    let mut agent = Agent::start(&kubeconfig, &["--kube-list-timeout", "2s"]);
    let url = server.url();

    agent
        .until("the hung LIST to be logged", Duration::from_secs(20), |a| {
            !a.matching(&["LIST got no answer", "HelmRelease"])
                .is_empty()
        })
        .await;
    let hung = agent.matching(&["LIST got no answer", "HelmRelease"]);
    assert!(hung[0].contains(&url), "names the server: {}", hung[0]);
    assert!(
        hung[0].contains("2s"),
        "says how long it waited: {}",
        hung[0]
    );

    // Three failures: waits of at least 0.8 + 1.6 + 3.2 s, at most twice that.
    let started = Instant::now();
    while !agent.ready().await {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "ready once the server answers; log:\n{}",
            agent.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failed = agent.matching(&["Watch failed", "Kustomization"]);
    assert_eq!(
        failed.len(),
        1,
        "three failures in a row, one line: {failed:?}"
    );
    assert!(failed[0].contains(&url), "names the server: {}", failed[0]);
    assert!(
        failed[0].contains("500") || failed[0].contains("InternalError"),
        "names the cause: {}",
        failed[0]
    );
    let skipped = agent.matching(&["does not decode", "Deployment"]);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        !agent.lines().iter().any(|l| l.contains("body-marker-4fd1")),
        "no object body in the log"
    );
    let _ = agent.child.start_kill();
    let _ = std::fs::remove_file(kubeconfig);
}

/// An API server that is not there: discovery fails for every kind; each kind's line names the
/// server and the cause down to the socket ("Connection refused"), and repeats are held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_name_the_server_and_the_cause() {
    let server = KubeApi::new().start().await;
    let kubeconfig = server.kubeconfig("kube-faults-refused");
    let url = server.url();
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut agent = Agent::start(&kubeconfig, &[]);
    agent
        .until(
            "discovery failures to be logged",
            Duration::from_secs(20),
            |a| {
                !a.matching(&["API discovery failed", "GitRepository"])
                    .is_empty()
            },
        )
        .await;
    // Long enough for a few retries of every kind.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let lines = agent.matching(&["API discovery failed"]);
    let first = &lines[0];
    assert!(first.contains(&url), "names the server: {first}");
    assert!(
        first.to_lowercase().contains("connection refused"),
        "names the cause: {first}"
    );
    for w in fluxtrace::cluster::WATCHED {
        let of_kind = lines
            .iter()
            .filter(|l| l.contains(&format!("kind=\"{}\"", w.kind)))
            .count();
        assert!(of_kind <= 1, "{} logged {of_kind} times: {lines:?}", w.kind);
        if w.kind == "GitRepository" {
            assert_eq!(of_kind, 1, "{lines:?}");
        }
    }
    assert!(
        agent.matching(&["kube_client"]).is_empty(),
        "no unbounded lines from the client library: {:?}",
        agent.matching(&["kube_client"])
    );
    assert!(!agent.ready().await, "not ready without a cluster");
    let _ = agent.child.start_kill();
    let _ = std::fs::remove_file(kubeconfig);
}
