//! [`KindWatch`]: the list-and-watch of one kind that the agent's watchers and `record` read,
//! made to survive an API server that misbehaves.
//!
//! It wraps kube-runtime's watcher (which re-lists after a disconnect or `410 Gone`) and adds
//! what that watcher leaves to its caller:
//!
//! - **Backoff that grows.** kube-runtime's `StreamBackoff` resets on every item that is not an
//!   error, and a failing LIST yields `Init` before each failure, so a LIST answering 500 was
//!   retried every second for ever. Here the backoff (kube-runtime's default: 0.8 s doubling to
//!   30 s, with jitter) resets only on progress: a completed list, or a change seen on a watch.
//! - **A LIST that hangs is timed out.** While a list is in progress each item must arrive
//!   within `list_timeout`; otherwise the watch starts over (after backing off) and the caller
//!   gets [`WatchFailure::ListTimeout`] to log with the kind and the server.
//! - **One bad item does not stop the kind.** Objects are [`Lenient`]: an item that does not
//!   decode is passed on as invalid, for the caller to skip and count.
//! - **Streaming lists where served.** The initial list (and every re-list) is a watch that
//!   sends the current objects one by one and marks their end with a bookmark
//!   (`sendInitialEvents=true`, [`ListMode::Streaming`]): no list response is ever held whole.
//!   A server that does not serve them answers such a watch as invalid (400 or 422: the
//!   `WatchList` feature is off, or the server predates it), or never marks the end (the list
//!   times out); the watch then lists in pages of 500 (`limit`/`continue`,
//!   [`ListMode::Paged`]) from then on.
//!
//! Errors are described with their whole source chain ([`describe`]), cut to a bounded length,
//! so that a log line names the cause ("tcp connect error: Connection refused") but never
//! quotes an object body.

use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::StreamExt;
use kube::api::Api;
use kube::core::ApiResource;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use kube::Client;
use tracing::info;

use super::lenient::Lenient;

/// The API server the watches talk to: the client, and its address for log lines.
#[derive(Clone)]
pub struct ApiServer {
    pub client: Client,
    /// The server's URL, as logs name it.
    pub url: String,
    /// How long a LIST in progress may go without delivering anything.
    pub list_timeout: Duration,
    /// How the watches list first.
    pub lists: ListMode,
}

/// How a watch gets the objects that exist when it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListMode {
    /// A watch with `sendInitialEvents=true`: the objects one by one, then a bookmark marking
    /// their end. Falls back to [`ListMode::Paged`] where the server does not serve it.
    #[default]
    Streaming,
    /// LISTs of at most 500 objects each, with `continue` tokens.
    Paged,
}

impl ListMode {
    fn config(self, mut config: watcher::Config) -> watcher::Config {
        config.initial_list_strategy = match self {
            ListMode::Streaming => watcher::InitialListStrategy::StreamingList,
            ListMode::Paged => watcher::InitialListStrategy::ListWatch,
        };
        config
    }
}

/// Why [`ApiServer::infer`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Config(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

impl ApiServer {
    /// kube-apiserver's own limit for a request that is not a watch (`--request-timeout`).
    pub const DEFAULT_LIST_TIMEOUT: Duration = Duration::from_secs(60);

    pub fn new(client: Client, url: impl Into<String>) -> ApiServer {
        ApiServer {
            client,
            url: url.into(),
            list_timeout: Self::DEFAULT_LIST_TIMEOUT,
            lists: ListMode::default(),
        }
    }

    /// The in-cluster configuration, else the kubeconfig (`Config::infer`).
    pub async fn infer() -> Result<ApiServer, ConnectError> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(ConnectError::Client)?;
        Ok(ApiServer::new(client, url))
    }

    pub fn with_list_timeout(mut self, timeout: Duration) -> ApiServer {
        self.list_timeout = timeout;
        self
    }

    pub fn with_lists(mut self, lists: ListMode) -> ApiServer {
        self.lists = lists;
        self
    }
}

/// Why a [`KindWatch`] item failed. The watch goes on after either.
#[derive(Debug, thiserror::Error)]
pub enum WatchFailure {
    #[error("{}", describe(.0))]
    Api(watcher::Error),
    #[error("the LIST got no answer within {}s", .0.as_secs())]
    ListTimeout(Duration),
}

/// A resilient list-and-watch of one kind (see the module docs).
pub struct KindWatch<K: 'static> {
    api: Api<Lenient<K>>,
    config: watcher::Config,
    inner: BoxStream<'static, Result<Event<Lenient<K>>, watcher::Error>>,
    backoff: DefaultBackoff,
    /// Slept before the next poll: set by a failure.
    wait: Option<Duration>,
    /// A list is in progress (from `Init` to `InitDone`); a fresh watch starts with one.
    listing: bool,
    list_timeout: Duration,
    lists: ListMode,
    /// A streaming list has completed on this watch: the server serves them.
    streamed: bool,
    /// The kind, for the log line of a fallback.
    kind: String,
}

impl<K> KindWatch<K>
where
    K: kube::Resource<DynamicType = ApiResource, Scope = kube::core::DynamicResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    /// A watch of `ar` in all namespaces or one, optionally narrowed by a label selector: the
    /// agent and `record` watch alike.
    pub fn new(
        server: &ApiServer,
        ar: &ApiResource,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> KindWatch<K> {
        let api: Api<Lenient<K>> = match namespace {
            Some(ns) => Api::namespaced_with(server.client.clone(), ns, ar),
            None => Api::all_with(server.client.clone(), ar),
        };
        let mut config = server.lists.config(watcher::Config::default());
        if let Some(sel) = selector {
            config = config.labels(sel);
        }
        let inner = watcher::watcher(api.clone(), config.clone()).boxed();
        KindWatch {
            api,
            config,
            inner,
            backoff: DefaultBackoff::default(),
            wait: None,
            listing: true,
            list_timeout: server.list_timeout,
            lists: server.lists,
            streamed: false,
            kind: ar.kind.clone(),
        }
    }

    /// How this watch lists now.
    pub fn lists(&self) -> ListMode {
        self.lists
    }

    /// After a failure of a streaming list that never completed here: whether the server
    /// does not serve streaming lists (see the module docs), so the watch lists in pages from
    /// now on.
    fn falls_back(&self, failure: Option<&watcher::Error>) -> bool {
        if self.lists != ListMode::Streaming || self.streamed || !self.listing {
            return false;
        }
        let invalid = |code: u16| matches!(code, 400 | 422);
        match failure {
            // The list timed out: no end mark came.
            None => true,
            Some(
                watcher::Error::WatchStartFailed(kube::Error::Api(s))
                | watcher::Error::WatchFailed(kube::Error::Api(s)),
            ) => invalid(s.code),
            Some(watcher::Error::WatchError(s)) => invalid(s.code),
            Some(_) => false,
        }
    }

    fn list_paged(&mut self) {
        info!(
            message = "The API server does not serve streaming lists; listing in pages.",
            kind = %self.kind
        );
        self.lists = ListMode::Paged;
        self.config = ListMode::Paged.config(self.config.clone());
        self.inner = watcher::watcher(self.api.clone(), self.config.clone()).boxed();
    }

    /// The next event or failure; `None` only if the watcher ends (it does not on its own).
    /// Cancel-safe between items: a cancelled call loses at most a pending backoff sleep.
    pub async fn next(&mut self) -> Option<Result<Event<Lenient<K>>, WatchFailure>> {
        if let Some(wait) = self.wait.take() {
            tokio::time::sleep(wait).await;
        }
        let item = if self.listing {
            match tokio::time::timeout(self.list_timeout, self.inner.next()).await {
                Ok(item) => item,
                Err(_) => {
                    // Start over: a fresh watcher lists from the beginning.
                    if self.falls_back(None) {
                        self.list_paged();
                    } else {
                        self.inner =
                            watcher::watcher(self.api.clone(), self.config.clone()).boxed();
                    }
                    self.wait = self.backoff.next();
                    return Some(Err(WatchFailure::ListTimeout(self.list_timeout)));
                }
            }
        } else {
            self.inner.next().await
        };
        match &item {
            Some(Ok(Event::Init)) => self.listing = true,
            Some(Ok(Event::InitDone)) => {
                self.listing = false;
                self.streamed |= self.lists == ListMode::Streaming;
                self.backoff.reset();
            }
            Some(Ok(Event::Apply(_) | Event::Delete(_))) => self.backoff.reset(),
            Some(Ok(Event::InitApply(_))) | None => {}
            Some(Err(e)) => {
                if self.falls_back(Some(e)) {
                    // The failed watch starts over as a paged list.
                    self.list_paged();
                }
                self.wait = self.backoff.next();
            }
        }
        item.map(|r| r.map_err(WatchFailure::Api))
    }

    /// The sleep before the next attempt, when the last item was a failure.
    pub fn retry_in(&self) -> Option<Duration> {
        self.wait
    }
}

/// An error with its chain of causes ("…: client error (Connect): tcp connect error: Connection
/// refused (os error 111)"), cut to [`bounded`] length.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    bounded(&text)
}

/// A message cut to 300 characters: an API error can quote a whole response body, objects
/// included, and object bodies never go to the log.
pub fn bounded(message: &str) -> String {
    const MAX: usize = 300;
    match message.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}… ({} bytes left out)", &message[..i], message.len() - i),
        None => message.to_string(),
    }
}

/// A warning repeated by a failing watch: the first is logged, then at most one every
/// [`RepeatedWarning::EVERY`] with how many were left out, so that an API server failing
/// every second cannot flood the log.
#[derive(Default)]
pub struct RepeatedWarning {
    last: Option<Instant>,
    suppressed: u64,
}

impl RepeatedWarning {
    pub const EVERY: Duration = Duration::from_secs(30);

    /// `Some(left out since the last)` when this one is to be logged.
    pub fn due(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_warnings_are_logged_once_per_interval_with_a_count() {
        let mut w = RepeatedWarning::default();
        assert_eq!(w.due(), Some(0), "the first is logged");
        for _ in 0..18 {
            assert_eq!(w.due(), None);
        }
        w.last = w.last.map(|t| t - RepeatedWarning::EVERY);
        assert_eq!(
            w.due(),
            Some(18),
            "then one line says how many were left out"
        );
    }

    #[test]
    fn long_error_messages_are_cut() {
        let body = format!(
            "Error deserializing response: {}",
            "{\"kind\":\"x\"}".repeat(1000)
        );
        let cut = bounded(&body);
        assert!(cut.chars().count() < 400, "{cut}");
        assert!(cut.ends_with("bytes left out)"));
        assert_eq!(bounded("short"), "short");
    }

    #[test]
    fn errors_are_described_with_their_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            describe(&Outer(io)),
            "client error (Connect): Connection refused"
        );
    }
}
