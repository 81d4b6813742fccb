//! The agent's export buffer, between the engine task and the [`Exporter`].
//!
//! ```text
//!  engine ──FinishedSpans (bounded channel: the engine waits when it is full)──┐
//!                                                                            ▼
//!        buffer, per service, sized in estimated bytes ──one request at a time──▶ collector
//! ```
//!
//! - While the collector answers, nothing is dropped: a full buffer stops taking batches, the
//!   channel fills and the engine (then the intake) waits: back-pressure.
//! - While the collector is unreachable, the buffer keeps taking batches and, once full, drops
//!   the oldest spans: counted (`fluxtrace_spans_dropped_total`) and logged with the promotions
//!   they belong to.
//! - A request refused as too large is split in two and sent again at once; later requests
//!   are cut smaller. A request the collector rejects for good goes to the back of its queue
//!   (newer spans go first) and is dropped, counted and logged after `retries` more attempts.
//! - `fluxtrace_spans_pending` counts every span handed over by the engine and not yet
//!   delivered or dropped: queued in the channel, buffered, or in the request in flight. What
//!   it reads when the task ends is what shutdown could not deliver.
//!
//! Never reads the wall clock for anything but retry timing; never blocks the runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{encoded_len, BatchLimits, ExportError, Exporter, Refusal};
use crate::metrics::{ErrorType, Metrics};
use crate::trace::SpanRecord;

/// The spans of one promotion that reached its verdict.
#[derive(Debug)]
pub struct FinishedSpans {
    pub promotion_id: String,
    pub spans: Vec<SpanRecord>,
}

/// How much the buffer holds and how hard it tries.
#[derive(Clone, Debug)]
pub struct BufferSettings {
    /// Estimated encoded bytes held before back-pressure (collector healthy) or drops
    /// (collector unreachable).
    pub max_bytes: usize,
    /// More attempts for a request the collector rejects for good, before it is dropped.
    pub retries: usize,
    /// Longest wait between attempts while the collector is unreachable.
    pub max_backoff: Duration,
}

impl Default for BufferSettings {
    /// 64 MiB: about 90,000 spans, the spans of 40,000 promotions finishing together.
    fn default() -> Self {
        BufferSettings {
            max_bytes: 64 << 20,
            retries: 3,
            max_backoff: Duration::from_secs(30),
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);

/// Whether every span of a finished promotion reached the collector: sent once all of its
/// spans are delivered, or once one is dropped (`exported: false`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOutcome {
    pub promotion_id: String,
    pub exported: bool,
}

/// Per promotion: spans neither delivered nor dropped yet, and whether one was dropped.
#[derive(Default)]
struct Outcomes {
    open: HashMap<Arc<str>, (usize, bool)>,
    tx: Option<mpsc::Sender<ExportOutcome>>,
}

impl Outcomes {
    fn added(&mut self, promotion: &Arc<str>, spans: usize) {
        if self.tx.is_none() {
            return;
        }
        self.open.entry(promotion.clone()).or_insert((0, false)).0 += spans;
    }

    fn settled(&mut self, items: &[Item], delivered: bool) {
        let Some(tx) = &self.tx else { return };
        for item in items {
            let Some(entry) = self.open.get_mut(&item.promotion) else {
                continue;
            };
            entry.0 = entry.0.saturating_sub(1);
            entry.1 |= !delivered;
            if entry.0 == 0 {
                let dropped = entry.1;
                self.open.remove(&item.promotion);
                // Best effort: the status task waits a while for it, then writes without it.
                let _ = tx.try_send(ExportOutcome {
                    promotion_id: item.promotion.to_string(),
                    exported: !dropped,
                });
            }
        }
    }
}
/// Promotion ids named in one log line; the rest are counted.
const IDS_LOGGED: usize = 20;

struct Item {
    span: SpanRecord,
    bytes: usize,
    promotion: Arc<str>,
    /// Arrival order across services: the oldest front goes first, and is dropped first.
    seq: u64,
    attempts: usize,
}

#[derive(Default)]
struct Buffer {
    queues: BTreeMap<&'static str, VecDeque<Item>>,
    bytes: usize,
    spans: usize,
    next_seq: u64,
}

impl Buffer {
    fn push(&mut self, batch: FinishedSpans, outcomes: &mut Outcomes) {
        let promotion: Arc<str> = Arc::from(batch.promotion_id);
        outcomes.added(&promotion, batch.spans.len());
        for span in batch.spans {
            let item = Item {
                bytes: encoded_len(&span),
                span,
                promotion: promotion.clone(),
                seq: 0,
                attempts: 0,
            };
            self.push_back(item);
        }
    }

    fn push_back(&mut self, mut item: Item) {
        item.seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += item.bytes;
        self.spans += 1;
        self.queues
            .entry(item.span.service)
            .or_default()
            .push_back(item);
    }

    /// Puts a request back where it was taken from, in its order.
    fn push_front(&mut self, service: &'static str, items: Vec<Item>) {
        let q = self.queues.entry(service).or_default();
        for item in items.into_iter().rev() {
            self.bytes += item.bytes;
            self.spans += 1;
            q.push_front(item);
        }
    }

    /// The service whose first span has waited longest.
    fn oldest(&self) -> Option<&'static str> {
        self.queues
            .iter()
            .filter_map(|(s, q)| q.front().map(|i| (i.seq, *s)))
            .min()
            .map(|(_, s)| s)
    }

    fn pop_oldest(&mut self) -> Option<Item> {
        let item = self.queues.get_mut(self.oldest()?)?.pop_front()?;
        self.bytes -= item.bytes;
        self.spans -= 1;
        Some(item)
    }

    /// The next request: spans of one service, oldest first, within `limits`.
    fn take_request(&mut self, limits: BatchLimits) -> Option<(&'static str, Vec<Item>)> {
        let service = self.oldest()?;
        let q = self.queues.get_mut(service)?;
        let budget = limits
            .max_bytes
            .saturating_sub(super::REQUEST_OVERHEAD)
            .max(1);
        let mut items = Vec::new();
        let mut bytes = 0;
        while let Some(front) = q.front() {
            if !items.is_empty()
                && (bytes + front.bytes > budget || items.len() >= limits.max_spans.max(1))
            {
                break;
            }
            bytes += front.bytes;
            if let Some(item) = q.pop_front() {
                items.push(item);
            }
        }
        self.bytes -= bytes;
        self.spans -= items.len();
        Some((service, items))
    }
}

/// Drops, counted at once and logged at most every [`DROP_LOG_INTERVAL`] with the promotions
/// they hit (a burst of drops is one line, not one per promotion).
#[derive(Default)]
struct DropLog {
    last: Option<Instant>,
    spans: u64,
    ids: BTreeSet<Arc<str>>,
    reasons: BTreeSet<&'static str>,
}

const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl DropLog {
    fn drop_spans(
        &mut self,
        metrics: &Metrics,
        outcomes: &mut Outcomes,
        items: &[Item],
        why: &'static str,
    ) {
        if items.is_empty() {
            return;
        }
        outcomes.settled(items, false);
        let n = items.len() as u64;
        metrics.spans_dropped.inc_by(n);
        metrics.spans_pending.dec_by(n as i64);
        self.spans += n;
        self.reasons.insert(why);
        self.ids.extend(items.iter().map(|i| i.promotion.clone()));
        if self.last.is_none_or(|t| t.elapsed() >= DROP_LOG_INTERVAL) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.spans == 0 {
            return;
        }
        let ids: Vec<&str> = self.ids.iter().take(IDS_LOGGED).map(|i| &**i).collect();
        warn!(
            message = "Spans dropped.",
            reason = ?self.reasons,
            spans = self.spans,
            promotions = self.ids.len(),
            promotion_ids = ?ids,
        );
        *self = DropLog {
            last: Some(Instant::now()),
            ..DropLog::default()
        };
    }
}

/// `backoff` plus up to a quarter of it, so that agents restarted together do not retry in
/// step.
fn jittered(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let quarter = (backoff.as_millis() as u64 / 4).max(1);
    backoff + Duration::from_millis(u64::from(nanos) % quarter)
}

type Sent = (Exporter, &'static str, Vec<Item>, Result<(), ExportError>);
type InFlight = Pin<Box<dyn Future<Output = Sent> + Send>>;

/// Runs until `batches` is closed and everything is delivered, or the collector is found
/// unreachable after it closed. Without an exporter the spans are consumed and not counted
/// as dropped: nothing was asked to export them.
pub async fn run(
    mut batches: mpsc::Receiver<FinishedSpans>,
    exporter: Option<Exporter>,
    metrics: Arc<Metrics>,
    settings: BufferSettings,
    outcomes: Option<mpsc::Sender<ExportOutcome>>,
) {
    let Some(exporter) = exporter else {
        // Nothing is asked to export: no outcome to wait for.
        drop(outcomes);
        while let Some(b) = batches.recv().await {
            metrics.spans_pending.dec_by(b.spans.len() as i64);
        }
        return;
    };
    let limits = exporter.limits();
    // Lowered when the collector says a request was too large.
    let mut request_bytes = limits.max_bytes;
    let mut idle = Some(exporter);
    let mut in_flight: Option<InFlight> = None;
    let mut buf = Buffer::default();
    let mut open = true;
    let mut unreachable = false;
    let mut backoff = MIN_BACKOFF;
    let mut retry_at: Option<Instant> = None;
    let mut drops = DropLog::default();
    let mut outcomes = Outcomes {
        open: HashMap::new(),
        tx: outcomes,
    };
    loop {
        if in_flight.is_none() && retry_at.is_none() && buf.spans > 0 {
            let lim = BatchLimits {
                max_bytes: request_bytes,
                ..limits
            };
            if let (Some(mut exp), Some((service, items))) = (idle.take(), buf.take_request(lim)) {
                in_flight = Some(Box::pin(async move {
                    let result = exp.send(service, items.iter().map(|i| &i.span)).await;
                    (exp, service, items, result)
                }));
            }
        }
        if !open && in_flight.is_none() && (buf.spans == 0 || retry_at.is_some()) {
            break;
        }
        let can_receive = open && (unreachable || buf.bytes < settings.max_bytes);
        tokio::select! {
            b = batches.recv(), if can_receive => match b {
                Some(b) => {
                    buf.push(b, &mut outcomes);
                    // While the collector answers, a full buffer stops taking batches (above);
                    // only during an outage does a new batch push the oldest spans out.
                    if unreachable && buf.bytes > settings.max_bytes {
                        let mut evicted = Vec::new();
                        while buf.bytes > settings.max_bytes {
                            match buf.pop_oldest() {
                                Some(i) => evicted.push(i),
                                None => break,
                            }
                        }
                        drops.drop_spans(&metrics, &mut outcomes, &evicted, "buffer full while the collector is unreachable");
                    }
                }
                None => {
                    open = false;
                    // At shutdown: one more attempt now, whatever the backoff.
                    retry_at = None;
                }
            },
            sent = async {
                match in_flight.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if in_flight.is_some() => {
                in_flight = None;
                let (exp, service, items, result) = sent;
                idle = Some(exp);
                let n = items.len() as u64;
                match result {
                    Ok(()) => {
                        outcomes.settled(&items, true);
                        metrics.spans_exported.inc_by(n);
                        metrics.spans_pending.dec_by(n as i64);
                        if unreachable {
                            info!(message = "The collector is reachable again.", buffered_spans = buf.spans);
                        }
                        unreachable = false;
                        backoff = MIN_BACKOFF;
                    }
                    Err(e) => {
                        metrics
                            .spans_export_failed
                            .get_or_create(&ErrorType { error_type: e.metric_label() })
                            .inc();
                        match e.refusal() {
                            Refusal::TooLarge if items.len() > 1 => {
                                let bytes: usize = items.iter().map(|i| i.bytes).sum();
                                request_bytes = (bytes / 2).max(super::REQUEST_OVERHEAD + 1);
                                warn!(message = "The collector refused a request as too large; sending smaller ones.", error = %e, request_bytes);
                                buf.push_front(service, items);
                            }
                            Refusal::Unreachable => {
                                if !unreachable || backoff >= settings.max_backoff {
                                    warn!(message = "Failed to export spans.", error = %e, buffered_spans = buf.spans + items.len(), retry_in_ms = backoff.as_millis() as u64);
                                }
                                unreachable = true;
                                buf.push_front(service, items);
                                retry_at = Some(Instant::now() + jittered(backoff));
                                backoff = (backoff * 2).min(settings.max_backoff);
                            }
                            Refusal::TooLarge | Refusal::Rejected => {
                                let (give_up, again): (Vec<Item>, Vec<Item>) = items
                                    .into_iter()
                                    .map(|mut i| {
                                        i.attempts += 1;
                                        i
                                    })
                                    .partition(|i| i.attempts > settings.retries);
                                if !give_up.is_empty() {
                                    warn!(message = "The collector rejected spans for good.", error = %e);
                                }
                                drops.drop_spans(&metrics, &mut outcomes, &give_up, "rejected by the collector");
                                for i in again {
                                    buf.push_back(i);
                                }
                            }
                        }
                    }
                }
            },
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() && open => {
                retry_at = None;
            }
        }
    }
    drops.flush();
    if buf.spans > 0 {
        let left: Vec<Item> = std::iter::from_fn(|| buf.pop_oldest()).collect();
        outcomes.settled(&left, false);
        let ids: BTreeSet<&str> = left.iter().map(|i| &*i.promotion).collect();
        warn!(
            message = "Spans not delivered at shutdown: the collector is unreachable.",
            spans = left.len(),
            promotions = ids.len(),
            promotion_ids = ?ids.iter().take(IDS_LOGGED).collect::<Vec<_>>(),
        );
    }
    if let Some(mut e) = idle {
        e.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Attributes, SpanId, SpanStatus, TraceId};

    fn span(service: &'static str, n: u8) -> SpanRecord {
        SpanRecord {
            trace_id: TraceId([n; 16]),
            span_id: SpanId([n; 8]),
            parent_span_id: None,
            service,
            name: "promotion",
            kind: crate::trace::SpanKind::Server,
            start: jiff::Timestamp::UNIX_EPOCH,
            end: jiff::Timestamp::UNIX_EPOCH,
            status: SpanStatus::Unset,
            attributes: Attributes::default(),
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    fn batch(id: &str, spans: Vec<SpanRecord>) -> FinishedSpans {
        FinishedSpans {
            promotion_id: id.into(),
            spans,
        }
    }

    #[test]
    fn requests_take_one_service_oldest_first_within_the_limits() {
        let mut buf = Buffer::default();
        buf.push(
            batch("P-1", vec![span("a", 1), span("b", 2), span("a", 3)]),
            &mut Outcomes::default(),
        );
        buf.push(
            batch("P-2", vec![span("b", 4), span("a", 5)]),
            &mut Outcomes::default(),
        );
        let limits = BatchLimits {
            max_bytes: 1 << 20,
            max_spans: 2,
        };
        let (service, items) = buf.take_request(limits).expect("a request");
        assert_eq!(service, "a");
        assert_eq!(
            items
                .iter()
                .map(|i| i.span.span_id.0[0])
                .collect::<Vec<_>>(),
            [1, 3]
        );
        let (service, items) = buf.take_request(limits).expect("a request");
        assert_eq!(service, "b", "b's first span is older than a's next");
        assert_eq!(items.len(), 2);
        assert_eq!(buf.spans, 1);
        assert_eq!(buf.bytes, encoded_len(&span("a", 5)));
    }

    #[test]
    fn a_request_put_back_keeps_its_order_and_the_oldest_is_dropped_first() {
        let mut buf = Buffer::default();
        buf.push(
            batch("P-1", vec![span("a", 1), span("a", 2)]),
            &mut Outcomes::default(),
        );
        buf.push(batch("P-2", vec![span("a", 3)]), &mut Outcomes::default());
        let (service, items) = buf
            .take_request(BatchLimits {
                max_bytes: 1 << 20,
                max_spans: 2,
            })
            .expect("a request");
        buf.push_front(service, items);
        let order: Vec<u8> = std::iter::from_fn(|| buf.pop_oldest())
            .map(|i| i.span.span_id.0[0])
            .collect();
        assert_eq!(order, [1, 2, 3]);
        assert_eq!((buf.spans, buf.bytes), (0, 0));
    }

    #[test]
    fn a_promotion_is_exported_once_all_its_spans_are_delivered_and_not_if_one_is_dropped() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut outcomes = Outcomes {
            open: HashMap::new(),
            tx: Some(tx),
        };
        let mut buf = Buffer::default();
        buf.push(
            batch("P-1", vec![span("a", 1), span("a", 2)]),
            &mut outcomes,
        );
        buf.push(
            batch("P-2", vec![span("a", 3), span("a", 4)]),
            &mut outcomes,
        );
        let first = buf.pop_oldest().into_iter().collect::<Vec<_>>();
        outcomes.settled(&first, true);
        assert!(rx.try_recv().is_err(), "P-1 has a span left");
        let rest: Vec<Item> = std::iter::from_fn(|| buf.pop_oldest()).collect();
        outcomes.settled(&rest[..1], true);
        outcomes.settled(&rest[1..2], false);
        outcomes.settled(&rest[2..], true);
        let got: Vec<ExportOutcome> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(
            got,
            [
                ExportOutcome {
                    promotion_id: "P-1".into(),
                    exported: true
                },
                ExportOutcome {
                    promotion_id: "P-2".into(),
                    exported: false
                },
            ]
        );
        assert!(outcomes.open.is_empty(), "nothing left behind");
    }
}
