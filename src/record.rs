//! `fluxtrace record`: captures a live cluster's delivery objects as a recording (docs/design.md,
//! "Recording format") that `fluxtrace replay` turns into the same traces offline.
//!
//! The initial state is written as `ADDED`, changes as `MODIFIED`/`DELETED`, one line each, in
//! arrival order; a `synced` line follows once every watcher has listed its kind (or found it
//! not served), so that a replay holds the initial state as the agent does at its start. Secrets are never watched; `data`, `stringData` and `binaryData` fields,
//! `managedFields` and the `kubectl.kubernetes.io/last-applied-configuration` annotation are
//! never written.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde_json::{json, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::clock::Clock;
use crate::cluster::{served, ApiServer, KindWatch, Lenient, RepeatedWarning, Watched, WATCHED};
use crate::sources::relist::Relist;

/// Why a recording stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write the recording: {0}")]
    Write(#[from] std::io::Error),
}

/// What to record.
#[derive(Clone, Debug, Default)]
pub struct RecordSettings {
    pub namespaces: Vec<String>,
    pub workload_selector: Option<String>,
    /// Stop after this long; otherwise at `stop`.
    pub duration: Option<Duration>,
    pub rediscover: Option<Duration>,
    /// Stamps each line's `at`.
    pub clock: Clock,
}

/// Lines written, by kind.
#[derive(Debug, Default)]
pub struct RecordSummary {
    pub lines: BTreeMap<&'static str, u64>,
}

/// Records until `settings.duration` passes or `stop` is cancelled, then flushes `out`.
pub async fn record<W: AsyncWrite + Unpin>(
    server: ApiServer,
    settings: RecordSettings,
    mut out: W,
    stop: CancellationToken,
) -> Result<RecordSummary, RecordError> {
    let (tx, mut rx) = mpsc::channel::<(&'static str, String)>(1024);
    let watchers = stop.child_token();
    let namespaces: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    // Kinds not served count as listed: their watchers say so here (once each), as they
    // cannot wait for room in `tx` from where they learn it.
    let (missing_tx, mut missing_rx) = mpsc::unbounded_channel::<()>();
    let mut tasks = tokio::task::JoinSet::new();
    for w in WATCHED {
        for ns in &namespaces {
            tasks.spawn(watch_kind(
                server.clone(),
                *w,
                ns.clone(),
                settings.workload_selector.clone().filter(|_| w.workload),
                settings.rediscover.unwrap_or(Duration::from_secs(300)),
                settings.clock.clone(),
                tx.clone(),
                missing_tx.clone(),
                watchers.clone(),
            ));
        }
    }
    drop(tx);
    drop(missing_tx);
    // Watchers still to finish their first list: the `synced` line follows the last one.
    let mut listing = WATCHED.len() * namespaces.len();
    let deadline = async {
        match settings.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    // A kind that cannot be listed (forbidden, failing) does not keep the recording's initial
    // state open forever: as the agent's start-up hold, it ends after this long.
    let hold = tokio::time::sleep(SYNCED_AFTER);
    tokio::pin!(hold);
    let mut summary = RecordSummary::default();
    // A finished future must not be polled again: once the duration is up, only the lines
    // still queued are written.
    let mut timed_out = false;
    loop {
        tokio::select! {
            _ = &mut deadline, if !timed_out => {
                timed_out = true;
                watchers.cancel();
            }
            _ = &mut hold, if listing > 0 => {
                listing = 0;
                write_synced(&mut out, &settings.clock, &mut summary).await?;
            }
            Some(()) = missing_rx.recv(), if listing > 0 => {
                listing -= 1;
                if listing == 0 {
                    write_synced(&mut out, &settings.clock, &mut summary).await?;
                }
            }
            line = rx.recv() => match line {
                Some((SYNCED, _)) => {
                    // After the hold's bound the line is written already.
                    if listing > 0 {
                        listing -= 1;
                        if listing == 0 {
                            write_synced(&mut out, &settings.clock, &mut summary).await?;
                        }
                    }
                }
                Some((kind, l)) => {
                    out.write_all(l.as_bytes()).await?;
                    out.write_all(b"\n").await?;
                    *summary.lines.entry(kind).or_default() += 1;
                }
                None => break,
            },
        }
    }
    while tasks.join_next().await.is_some() {}
    out.flush().await?;
    Ok(summary)
}

async fn write_synced<W: AsyncWrite + Unpin>(
    out: &mut W,
    clock: &Clock,
    summary: &mut RecordSummary,
) -> Result<(), RecordError> {
    let line = json!({"at": clock.now().to_string(), "kind": SYNCED});
    out.write_all(line.to_string().as_bytes()).await?;
    out.write_all(b"\n").await?;
    *summary.lines.entry(SYNCED).or_default() += 1;
    Ok(())
}

/// The longest the initial state waits for a watcher's list (the agent's start-up hold).
const SYNCED_AFTER: Duration = Duration::from_secs(60);

/// What a watcher sends once it has listed its kind (or found it not served); the line that
/// marks the end of the initial state.
const SYNCED: &str = "synced";

#[allow(clippy::too_many_arguments)] // one watcher's whole context, spawned once
async fn watch_kind(
    server: ApiServer,
    w: Watched,
    namespace: Option<String>,
    selector: Option<String>,
    rediscover: Duration,
    clock: Clock,
    tx: mpsc::Sender<(&'static str, String)>,
    missing: mpsc::UnboundedSender<()>,
    stop: CancellationToken,
) {
    // A kind not served has nothing to list: it counts as listed the first time.
    let reported = std::sync::atomic::AtomicBool::new(false);
    let Some(ar) = served(&server, &w, rediscover, &stop, || {
        if !reported.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let _ = missing.send(());
        }
    })
    .await
    else {
        return;
    };
    let mut listed = reported.into_inner();
    let mut stream =
        KindWatch::<DynamicObject>::new(&server, &ar, namespace.as_deref(), selector.as_deref());
    let mut failures = RepeatedWarning::default();
    // Objects deleted while the watch was down are written as DELETED at the end of the
    // re-list, so that a replay forgets them as the live agent does. Events are not tracked.
    let mut relist = (w.kind != "Event").then(Relist::default);
    let key = Lenient::key;
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return,
            i = stream.next() => i,
        };
        let (type_, obj) = match item {
            Some(Ok(Event::InitApply(o))) => {
                if let (Some(r), Some(k)) = (relist.as_mut(), key(&o)) {
                    r.listed(k);
                }
                ("ADDED", o)
            }
            Some(Ok(Event::Apply(o))) => {
                if let (Some(r), Some(k)) = (relist.as_mut(), key(&o)) {
                    r.applied(k);
                }
                ("MODIFIED", o)
            }
            Some(Ok(Event::Delete(o))) => {
                if let (Some(r), Some(k)) = (relist.as_mut(), key(&o)) {
                    r.deleted(&k);
                }
                ("DELETED", o)
            }
            Some(Ok(Event::Init)) => {
                if let Some(r) = relist.as_mut() {
                    r.begin();
                }
                continue;
            }
            Some(Ok(Event::InitDone)) => {
                if !std::mem::replace(&mut listed, true)
                    && tx.send((SYNCED, String::new())).await.is_err()
                {
                    return;
                }
                let gone = relist.as_mut().map(Relist::done).unwrap_or_default();
                for (ns, name) in gone {
                    let mut o = DynamicObject::new(&name, &ar);
                    if !ns.is_empty() {
                        o = o.within(&ns);
                    }
                    let line = recording_line(clock.now(), "DELETED", o, &ar.api_version, &ar.kind);
                    if tx.send((w.kind, line)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Some(Err(e)) => {
                if let Some(suppressed) = failures.due() {
                    warn!(
                        message = "Watch failed; retrying with backoff.",
                        kind = w.kind,
                        server = %server.url,
                        error = %e,
                        similar_since_last = suppressed
                    );
                }
                continue;
            }
            None => return,
        };
        let obj = match obj.0 {
            Ok(o) => o,
            Err(invalid) => {
                warn!(
                    message = "Object does not decode; not recorded.",
                    kind = w.kind,
                    name = invalid.metadata.name.as_deref().unwrap_or(""),
                    namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
                    error = %crate::cluster::bounded(&invalid.error)
                );
                continue;
            }
        };
        let line = recording_line(clock.now(), type_, obj, &ar.api_version, &ar.kind);
        if tx.send((w.kind, line)).await.is_err() {
            return;
        }
    }
}

/// One `watch` line: the object with its type filled in and nothing secret or bulky.
pub fn recording_line(
    at: Timestamp,
    type_: &str,
    obj: DynamicObject,
    api_version: &str,
    kind: &str,
) -> String {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
        for secret in ["data", "stringData", "binaryData"] {
            m.remove(secret);
        }
        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
            meta.remove("managedFields");
            if let Some(Value::Object(a)) = meta.get_mut("annotations") {
                a.remove("kubectl.kubernetes.io/last-applied-configuration");
            }
        }
    }
    json!({"at": at.to_string(), "kind": "watch", "type": type_, "object": v}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_lines_leave_out_secrets_and_bulk_and_replay_decodes_them() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "metadata": {
                "name": "podinfo", "namespace": "flux-system", "uid": "u1",
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"secret\":1}", "keep": "me"}
            },
            "data": {"password": "c2VjcmV0"},
            "spec": {"url": "https://github.com/acme/app"},
            "status": {"artifact": {"revision": "main@sha1:450796ddb2ab6724ee1cc32a4be56da032d1cca0"}}
        }))
        .expect("object");
        let at: Timestamp = "2026-11-26T10:00:00Z".parse().expect("ts");
        let line = recording_line(
            at,
            "ADDED",
            obj,
            "source.toolkit.fluxcd.io/v1",
            "GitRepository",
        );
        assert!(!line.contains("managedFields"));
        assert!(!line.contains("c2VjcmV0"));
        assert!(!line.contains("last-applied-configuration"));
        assert!(line.contains("\"keep\":\"me\""));
        let ev = crate::sources::recording::decode_line(&line)
            .expect("decodes")
            .expect("followed kind");
        assert_eq!(ev.at, at);
        assert!(
            matches!(ev.body, crate::model::EventBody::Source(ref s) if s.revision.as_deref() == Some("main@sha1:450796ddb2ab6724ee1cc32a4be56da032d1cca0"))
        );
    }
}
