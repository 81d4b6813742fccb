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
//!
//! Verdicts are counted here too (`fluxtrace_promotions_total`, the DORA series), as they pass:
//! Prometheus scrapes every replica, and each verdict counts once, on the replica that led.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::mpsc;
use tracing::info;

use crate::dora::Dora;
use crate::export::pipeline::FinishedSpans;
use crate::leader::{Leadership, Role};
use crate::metrics::Metrics;
use crate::resource::index::Index;
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
    /// Passes a verdict on, and counts it (`fluxtrace_promotions_total`, DORA): metrics of
    /// what left the process, so that a scrape of every replica counts each verdict once.
    async fn pass(&self, v: Verdict, metrics: &Metrics, dora: &mut Dora) {
        super::count_story(&v.story, metrics);
        dora.record(&v.story);
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
    mut dora: Dora,
    metrics: Arc<Metrics>,
) {
    let mut held = Held::default();
    let mut settle = tokio::time::interval(Duration::from_secs(1));
    settle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            v = verdicts.recv() => match v {
                Some(v) if leadership.is_leader() => sinks.pass(v, &metrics, &mut dora).await,
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
                        sinks.pass(v, &metrics, &mut dora).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::Leadership;
    use crate::resource::index::ObjectRef;
    use crate::trace::{SpanKind, SpanRecord, SpanStatus};

    /// A real story (of `git-success.jsonl`) under another id.
    fn verdict(id: &str, spans: usize) -> Verdict {
        static STORY: std::sync::OnceLock<Story> = std::sync::OnceLock::new();
        let mut story = STORY
            .get_or_init(|| {
                let (_, text) = crate::replay::EXAMPLES
                    .iter()
                    .find(|(n, _)| *n == "git-success.jsonl")
                    .expect("the git-success recording");
                let r = crate::replay::run(text, crate::correlate::EngineConfig::default());
                r.traces[0].story.clone()
            })
            .clone();
        story.promotion_id = id.to_string();
        let span = SpanRecord {
            trace_id: crate::trace::trace_id_for(id),
            span_id: crate::trace::span_id_for(id, crate::trace::Stage::Promotion, "c", "", ""),
            parent_span_id: None,
            service: "fluxtrace",
            name: "promotion",
            kind: SpanKind::Server,
            start: jiff::Timestamp::UNIX_EPOCH,
            end: jiff::Timestamp::UNIX_EPOCH,
            status: SpanStatus::Ok,
            attributes: Default::default(),
            events: Vec::new(),
            links: Vec::new(),
        };
        Verdict {
            story,
            spans: FinishedSpans {
                promotion_id: id.to_string(),
                spans: vec![span; spans],
            },
        }
    }

    struct Rig {
        verdicts: mpsc::Sender<Verdict>,
        spans: mpsc::Receiver<FinishedSpans>,
        statuses: mpsc::Receiver<Story>,
        role: tokio::sync::watch::Sender<Role>,
        index: Index,
        metrics: Arc<Metrics>,
        task: tokio::task::JoinHandle<()>,
    }

    fn rig(initial: Role) -> Rig {
        let (verdicts, rx) = mpsc::channel(16);
        let (span_tx, spans) = mpsc::channel(16);
        let (status_tx, statuses) = mpsc::channel(16);
        let (role, leadership) = Leadership::manual(initial);
        let index = Index::default();
        let metrics = Arc::new(Metrics::new());
        let sinks = Sinks {
            spans: span_tx,
            announce: None,
            promotion_status: Some(status_tx),
            confirmations: Some(index.clone()),
        };
        let dora = Dora::new(metrics.clone(), 10);
        let task = tokio::spawn(run(rx, sinks, leadership, dora, metrics.clone()));
        Rig {
            verdicts,
            spans,
            statuses,
            role,
            index,
            metrics,
            task,
        }
    }

    fn object(exported: bool) -> ObjectRef {
        ObjectRef {
            namespace: "fluxtrace".into(),
            name: "p".into(),
            generation: Some(1),
            exported,
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_leader_passes_every_verdict_on_and_counts_it() {
        let mut r = rig(Role::Leader);
        r.verdicts.send(verdict("P-1", 3)).await.expect("open");
        let got = r.spans.recv().await.expect("spans");
        assert_eq!((got.promotion_id.as_str(), got.spans.len()), ("P-1", 3));
        assert_eq!(
            r.statuses.recv().await.expect("a status").promotion_id,
            "P-1"
        );
        assert_eq!(r.metrics.spans_pending.get(), 3);
        assert!(r.metrics.encode().contains("fluxtrace_promotions_total"));
        drop(r.verdicts);
        r.task.await.expect("ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_lets_go_of_what_the_leader_confirmed_and_passes_on_the_rest() {
        let mut r = rig(Role::Standby { holder: None });
        r.index.insert("P-done".into(), object(false));
        r.index.insert("P-lost".into(), object(false));
        for id in ["P-done", "P-lost", "P-nobject"] {
            r.verdicts.send(verdict(id, 2)).await.expect("open");
        }
        settle().await;
        assert!(r.spans.try_recv().is_err(), "a standby exports nothing");
        assert!(r.statuses.try_recv().is_err(), "a standby writes nothing");
        assert_eq!(r.metrics.standby_held_spans.get(), 6);
        // The leader writes P-done's verdict with its spans exported.
        r.index.insert("P-done".into(), object(true));
        tokio::time::advance(Duration::from_secs(2)).await;
        settle().await;
        assert_eq!(r.metrics.standby_held_spans.get(), 4);
        // The leader dies; this replica takes over and exports what the leader did not confirm.
        r.role.send(Role::Leader).expect("open");
        let mut passed = Vec::new();
        for _ in 0..2 {
            passed.push(r.spans.recv().await.expect("spans").promotion_id);
        }
        assert_eq!(
            passed,
            ["P-lost", "P-nobject"],
            "in order, P-done not again"
        );
        assert_eq!(r.metrics.standby_held_spans.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_verdict_without_a_promotion_object_is_held_for_the_hold_period_only() {
        let r = rig(Role::Standby { holder: None });
        r.verdicts
            .send(verdict("P-annotated", 1))
            .await
            .expect("open");
        settle().await;
        assert_eq!(r.metrics.standby_held_spans.get(), 1);
        tokio::time::advance(HOLD - Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(
            r.metrics.standby_held_spans.get(),
            1,
            "still within the hold"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
        assert_eq!(r.metrics.standby_held_spans.get(), 0, "let go after it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_hold_evicts_the_oldest_and_counts_it() {
        let mut held = Held::default();
        let metrics = Metrics::new();
        held.push(verdict("P-old", HOLD_SPANS), &metrics);
        held.push(verdict("P-new", 1), &metrics);
        assert_eq!(held.items.len(), 1);
        assert_eq!(held.items[0].1.story.promotion_id, "P-new");
        assert_eq!(metrics.standby_evicted.get(), 1);
    }
}
