//! The gate between the engine and what leaves the process: a verdict's spans (to the export
//! task), its story (to the Promotion status task and to Kubernetes Events). On the leader it
//! passes everything on; on a standby it holds each verdict until the leader is known to have
//! exported it, so that a standby that takes over exports what the leader could not.
//!
//! ```text
//!   engine ──Verdict (bounded; the engine waits)──▶ gate ──leader──▶ export, status, Events
//!                                                    │
//!                                           standby: held (bounded, oldest evicted, counted)
//! ```
//!
//! A held verdict is let go when its Promotion object shows a verdict with `spansExported:
//! true` (written by the leader only once its export is confirmed), or, for a promotion without
//! a Promotion object, after [`HOLD`]. When the standby takes over it passes on everything it
//! still holds, in order: a verdict the old leader exported without confirming it is exported
//! again, identical, rather than lost.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::info;

use crate::export::pipeline::FinishedSpans;
use crate::leader::{Leadership, Role};
use crate::metrics::Metrics;
use crate::resource::sync::Index;
use crate::story::Story;

/// How long a standby holds a verdict that has no Promotion object: the leader has long
/// exported it by then, or has written nothing for 5 minutes and is being replaced.
pub const HOLD: Duration = Duration::from_secs(300);

/// Spans a standby holds at most; beyond it the oldest verdicts go (`standby_evicted`).
pub const HOLD_SPANS: usize = 100_000;

/// One promotion's verdict: its story and its spans.
pub(super) struct Verdict {
    pub story: Story,
    pub spans: FinishedSpans,
}

/// Where verdicts go on the leader.
pub(super) struct Sinks {
    pub spans: mpsc::Sender<FinishedSpans>,
    pub announce: Option<mpsc::Sender<Story>>,
    pub promotion_status: Option<mpsc::Sender<Story>>,
    /// Which promotions the leader has confirmed exported.
    pub confirmations: Option<Index>,
}

impl Sinks {
    async fn pass(&self, v: Verdict, metrics: &Metrics) {
        if let Some(tx) = &self.announce {
            if tx.try_send(v.story.clone()).is_err() {
                metrics.k8s_events_dropped.inc();
            }
        }
        if let Some(tx) = &self.promotion_status {
            if tx.try_send(v.story).is_err() {
                metrics.promotion_status_dropped.inc();
            }
        }
        let n = v.spans.spans.len() as i64;
        metrics.spans_pending.inc_by(n);
        // Waits while the export buffer is full: back-pressure, not drops.
        if self.spans.send(v.spans).await.is_err() {
            metrics.spans_pending.dec_by(n);
            metrics.spans_dropped.inc_by(n as u64);
        }
    }

    /// `true` when the leader has written this promotion's verdict with its spans exported.
    fn confirmed(&self, id: &str) -> Option<bool> {
        self.confirmations.as_ref()?.exported(id)
    }
}

/// Verdicts a standby holds, oldest first.
#[derive(Default)]
struct Held {
    items: VecDeque<(Instant, Verdict)>,
    spans: usize,
}

impl Held {
    fn push(&mut self, v: Verdict, metrics: &Metrics) {
        self.spans += v.spans.spans.len();
        self.items.push_back((Instant::now(), v));
        while self.spans > HOLD_SPANS {
            let Some((_, old)) = self.items.pop_front() else {
                break;
            };
            self.spans -= old.spans.spans.len();
            metrics.standby_evicted.inc();
        }
        metrics.standby_held_spans.set(self.spans as i64);
    }

    /// Lets go of what the leader has confirmed, and of what has no Promotion object and is
    /// older than [`HOLD`].
    fn settle(&mut self, sinks: &Sinks, metrics: &Metrics) -> usize {
        let before = self.items.len();
        self.items
            .retain(|(at, v)| match sinks.confirmed(&v.story.promotion_id) {
                Some(done) => !done,
                None => at.elapsed() < HOLD,
            });
        self.spans = self.items.iter().map(|(_, v)| v.spans.spans.len()).sum();
        metrics.standby_held_spans.set(self.spans as i64);
        before - self.items.len()
    }
}

/// Runs until the engine stops sending verdicts. What a standby still holds then is dropped:
/// the leader exports it.
pub(super) async fn run(
    mut verdicts: mpsc::Receiver<Verdict>,
    sinks: Sinks,
    mut leadership: Leadership,
    metrics: Arc<Metrics>,
) {
    let mut held = Held::default();
    let mut settle = tokio::time::interval(Duration::from_secs(1));
    settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            v = verdicts.recv() => match v {
                Some(v) if leadership.is_leader() => sinks.pass(v, &metrics).await,
                Some(v) => held.push(v, &metrics),
                None => break,
            },
            role = leadership.changed() => {
                if role == Role::Leader && !held.items.is_empty() {
                    let confirmed = held.settle(&sinks, &metrics);
                    info!(
                        message = "Took over: exporting the verdicts held while standing by.",
                        promotions = held.items.len(),
                        spans = held.spans,
                        already_exported_by_the_leader = confirmed
                    );
                    for (_, v) in std::mem::take(&mut held.items) {
                        sinks.pass(v, &metrics).await;
                    }
                    held.spans = 0;
                    metrics.standby_held_spans.set(0);
                }
            }
            _ = settle.tick(), if !held.items.is_empty() => {
                held.settle(&sinks, &metrics);
            }
        }
    }
    metrics.standby_held_spans.set(0);
}
