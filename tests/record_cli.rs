//! `fluxtrace record --duration` with the real binary against the test API server: it ends
//! by itself when the duration is up, exits 0, has written every observation it reported, and
//! `fluxtrace replay` reads the file back without a rejected line.

use fluxtrace_testkit::kube_api;

use std::collections::BTreeMap;
use std::time::Duration;

use fluxtrace::replay::EXAMPLES;
use kube_api::KubeApi;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_with_a_duration_ends_cleanly_and_its_file_replays() {
    let text = EXAMPLES
        .iter()
        .find(|(n, _)| *n == "oci-success.jsonl")
        .map(|(_, t)| *t)
        .expect("example");
    let server = KubeApi::with_recording(text).start().await;
    let mut applied = server.apply_initial();
    applied.extend(server.apply_rest());
    // What a LIST serves now: the last state of every object not deleted.
    let mut live: BTreeMap<(String, Option<String>, String), String> = BTreeMap::new();
    for a in applied {
        live.insert((a.kind, a.namespace, a.name), a.event_type);
    }
    let objects = live.values().filter(|t| *t != "DELETED").count();
    assert!(objects > 0);
    let config = server.kubeconfig("record-duration");
    let output =
        std::env::temp_dir().join(format!("fluxtrace-record-{}.jsonl", std::process::id()));
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fluxtrace"))
            .args(["record", "--duration", "3s", "--output"])
            .arg(&output)
            .env("KUBECONFIG", &config)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("record ends by itself")
    .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let recorded = std::fs::read_to_string(&output).expect("the recording");
    let lines = recorded
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(r#""kind":"synced""#))
        .count();
    assert_eq!(
        recorded
            .lines()
            .filter(|l| l.contains(r#""kind":"synced""#))
            .count(),
        1,
        "one line says where the initial lists ended"
    );
    assert!(
        stderr.contains(&format!("recorded {lines} observation(s)")),
        "every observation reported is in the file: {lines} lines; {stderr}"
    );
    assert_eq!(lines, objects, "one line per object served");
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_fluxtrace"))
        .args(["replay", "--format", "json"])
        .arg(&output)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .output()
        .expect("replay runs");
    let replay_err = String::from_utf8_lossy(&replay.stderr);
    assert_eq!(replay.status.code(), Some(0), "{replay_err}");
    let _ = std::fs::remove_file(&output);
    let _ = std::fs::remove_file(&config);
}
