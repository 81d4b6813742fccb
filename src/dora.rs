//! DORA's four keys, live: fed with every finished [`Story`] (by the agent's engine task, and by
//! `replay --serve`), written to the DORA metrics of [`Metrics`].
//!
//! - deployment frequency: promotions finished, by environment, app and outcome;
//! - lead time for changes: the report's `commit_time` → rollout complete, for succeeded
//!   promotions that know it (never guessed);
//! - change failure rate: failed and timed-out over finished deployments, a recording rule over
//!   the counter (collector-config/prometheus/);
//! - time to restore: the first failed promotion of an environment and app → the next succeeded
//!   one.
//!
//! Histogram observations carry the trace id as their exemplar. `environment` and `app` come
//! from reports: at most `max_series` pairs get series of their own, later ones are filed as
//! `other` and counted. Pure bookkeeping: no IO, no clock (times are the stories' own).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;

use crate::metrics::{DoraLabels, DoraOutcome, Metrics, TraceExemplar};
use crate::story::{Outcome, Story};
use crate::trace::{Stage, TraceId};

/// Environment and app pairs with series of their own, by default.
pub const DEFAULT_MAX_SERIES: usize = 200;

/// The label value of an unknown environment or app (an untraced change has neither).
const UNKNOWN: &str = "unknown";
/// The label value of pairs beyond the series limit.
const OTHER: &str = "other";
/// Label values are cut to this many characters (reports may carry long ones).
const MAX_LABEL_CHARS: usize = 128;

/// The DORA bookkeeping of one agent. Owned by one task; not shared.
pub struct Dora {
    metrics: Arc<Metrics>,
    max_series: usize,
    admitted: HashSet<DoraLabels>,
    /// The first failure since the last success, per series: (when, trace).
    failing_since: HashMap<DoraLabels, (Timestamp, TraceId)>,
}

impl Dora {
    pub fn new(metrics: Arc<Metrics>, max_series: usize) -> Self {
        Dora {
            metrics,
            max_series,
            admitted: HashSet::new(),
            failing_since: HashMap::new(),
        }
    }

    /// Records one finished promotion. Stories must come in the order they finished (the
    /// engine's order; a replay sorts them by end time) for time to restore to pair them right.
    pub fn record(&mut self, story: &Story) {
        let labels = self.labels(story);
        let outcome = match story.outcome {
            Outcome::InProgress => return,
            o => o,
        };
        self.metrics
            .dora_promotions
            .get_or_create(&DoraOutcome {
                environment: labels.environment.clone(),
                app: labels.app.clone(),
                outcome: outcome.as_str(),
            })
            .inc();
        let exemplar = || {
            Some(TraceExemplar {
                trace_id: story.trace_id.to_string(),
            })
        };
        match outcome {
            Outcome::Failed | Outcome::TimedOut => {
                self.failing_since
                    .entry(labels)
                    .or_insert((story.end, story.trace_id));
            }
            Outcome::Succeeded => {
                if let Some(commit) = story.commit_time {
                    let lead = seconds(commit, rollout_complete(story));
                    if let Some(lead) = lead {
                        self.metrics.dora_lead_time.get_or_create(&labels).observe(
                            lead,
                            exemplar(),
                            None,
                        );
                    }
                }
                if let Some((failed, _)) = self.failing_since.remove(&labels) {
                    if let Some(restore) = seconds(failed, story.end) {
                        self.metrics
                            .dora_time_to_restore
                            .get_or_create(&labels)
                            .observe(restore, exemplar(), None);
                    }
                }
            }
            Outcome::Superseded | Outcome::NoChange | Outcome::InProgress => {}
        }
    }

    /// The story's series, or `other` once `max_series` pairs have series.
    fn labels(&mut self, story: &Story) -> DoraLabels {
        let value = |v: Option<&String>| {
            v.map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .unwrap_or(UNKNOWN)
                .chars()
                .take(MAX_LABEL_CHARS)
                .collect::<String>()
        };
        let labels = DoraLabels {
            environment: value(story.environment.as_ref()),
            app: value(story.app.as_ref()),
        };
        if self.admitted.contains(&labels) {
            return labels;
        }
        if self.admitted.len() < self.max_series {
            self.admitted.insert(labels.clone());
            return labels;
        }
        self.metrics.dora_series_overflow.inc();
        DoraLabels {
            environment: OTHER.into(),
            app: OTHER.into(),
        }
    }
}

/// When the rollout completed: the end of the last rollout stage, else the verdict.
fn rollout_complete(story: &Story) -> Timestamp {
    story
        .stages
        .iter()
        .filter(|s| s.stage == Stage::Rollout)
        .map(|s| s.end)
        .max()
        .unwrap_or(story.end)
}

/// Seconds from `from` to `to`; `None` when `to` is earlier (clock skew: not an observation).
fn seconds(from: Timestamp, to: Timestamp) -> Option<f64> {
    let d = to.duration_since(from).as_secs_f64();
    (d >= 0.0).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::EngineConfig;
    use crate::replay::{self, EXAMPLES};
    use jiff::SignedDuration;

    fn example_story() -> Story {
        let (_, text) = EXAMPLES
            .iter()
            .find(|(n, _)| *n == "git-success.jsonl")
            .expect("the git-success recording");
        let r = replay::run(text, EngineConfig::default());
        r.traces[0].story.clone()
    }

    fn story(outcome: Outcome, end_min: i64, env: &str, app: &str) -> Story {
        let mut s = example_story();
        let t0 = s.start;
        s.outcome = outcome;
        s.start = t0 + SignedDuration::from_mins(end_min - 1);
        s.end = t0 + SignedDuration::from_mins(end_min);
        s.stages.clear();
        s.environment = Some(env.into());
        s.app = Some(app.into());
        s.commit_time = Some(t0 + SignedDuration::from_mins(end_min - 30));
        s
    }

    fn sample(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn four_keys_from_finished_promotions() {
        let metrics = Arc::new(Metrics::new());
        let mut dora = Dora::new(metrics.clone(), 10);
        // failed at 10, failed again at 20, succeeded at 45: restored after 35 minutes.
        dora.record(&story(Outcome::Failed, 10, "prod", "web"));
        dora.record(&story(Outcome::TimedOut, 20, "prod", "web"));
        let fix = story(Outcome::Succeeded, 45, "prod", "web");
        dora.record(&fix);
        dora.record(&story(Outcome::Succeeded, 50, "staging", "web"));
        let text = metrics.encode();
        let count = |outcome: &str| {
            sample(
                &text,
                &format!(
                    "fluxtrace_dora_promotions_finished_total{{environment=\"prod\",app=\"web\",outcome=\"{outcome}\"}}"
                ),
            )
        };
        assert_eq!(count("failed").len(), 1, "{text}");
        assert!(count("failed")[0].ends_with(" 1"), "{text}");
        assert!(count("timed_out")[0].ends_with(" 1"), "{text}");
        assert!(count("succeeded")[0].ends_with(" 1"), "{text}");
        let restore = sample(
            &text,
            "fluxtrace_dora_time_to_restore_seconds_sum{environment=\"prod\",app=\"web\"}",
        );
        assert_eq!(
            restore,
            vec![
            "fluxtrace_dora_time_to_restore_seconds_sum{environment=\"prod\",app=\"web\"} 2100.0"
        ]
        );
        // Staging never failed: no time to restore there.
        assert!(
            !text.contains("fluxtrace_dora_time_to_restore_seconds_count{environment=\"staging\"")
        );
        // Lead time: commit 30 minutes before the rollout completed, with the trace as exemplar.
        let lead = sample(
            &text,
            "fluxtrace_dora_lead_time_seconds_bucket{le=\"1800.0\",environment=\"prod\",app=\"web\"}",
        );
        assert_eq!(lead.len(), 1, "{text}");
        assert!(
            lead[0].contains(&format!("# {{trace_id=\"{}\"}} 1800.0", fix.trace_id)),
            "{}",
            lead[0]
        );
        // The Prometheus text format carries no exemplars.
        assert!(!metrics.encode_prometheus_text().contains("trace_id"));
    }

    #[test]
    fn an_oci_artifacts_created_time_starts_the_lead_time_without_a_reported_one() {
        let (_, text) = EXAMPLES
            .iter()
            .find(|(n, _)| *n == "oci-success.jsonl")
            .expect("the oci-success recording");
        let r = replay::run(text, EngineConfig::default());
        let story = &r.traces[0].story;
        // The artifact the promotion delivered, not the one the source held before.
        assert_eq!(
            story.commit_time,
            Some("2026-11-26T09:59:57Z".parse().expect("a time"))
        );
        let metrics = Arc::new(Metrics::new());
        Dora::new(metrics.clone(), 10).record(story);
        let lead = rollout_complete(story)
            .duration_since("2026-11-26T09:59:57Z".parse().expect("a time"))
            .as_secs_f64();
        assert!(metrics.encode().contains(&format!(
            "fluxtrace_dora_lead_time_seconds_sum{{environment=\"prod\",app=\"checkout\"}} {lead:?}"
        )));
    }

    #[test]
    fn lead_time_is_never_guessed() {
        let metrics = Arc::new(Metrics::new());
        let mut dora = Dora::new(metrics.clone(), 10);
        let mut s = story(Outcome::Succeeded, 10, "prod", "web");
        s.commit_time = None;
        dora.record(&s);
        // A commit "after" the rollout (clock skew) is not an observation either.
        s.commit_time = Some(s.end + SignedDuration::from_mins(5));
        dora.record(&s);
        assert!(!metrics
            .encode()
            .contains("fluxtrace_dora_lead_time_seconds_count{"));
    }

    #[test]
    fn series_beyond_the_limit_are_filed_as_other() {
        let metrics = Arc::new(Metrics::new());
        let mut dora = Dora::new(metrics.clone(), 2);
        for app in ["a", "b", "c", "d", "a"] {
            dora.record(&story(Outcome::Succeeded, 10, "prod", app));
        }
        let long = Dora::new(metrics.clone(), 2).labels(&story(
            Outcome::Succeeded,
            10,
            &"e".repeat(5000),
            "a",
        ));
        assert_eq!(long.environment.len(), MAX_LABEL_CHARS);
        let text = metrics.encode();
        let series = sample(&text, "fluxtrace_dora_promotions_finished_total{");
        assert_eq!(series.len(), 3, "{text}");
        assert!(text.contains(
            "fluxtrace_dora_promotions_finished_total{environment=\"other\",app=\"other\",outcome=\"succeeded\"} 2"
        ));
        assert!(text.contains("fluxtrace_dora_series_overflow_total 2"));
    }
}
