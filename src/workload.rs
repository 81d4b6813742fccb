//! What runs now: for each Deployment the engine follows, the images its ReplicaSets with ready
//! replicas run, the promotion whose rollout put them there, and a newer promotion in flight or
//! failed. The answer of `GET /v1/workloads`, gRPC `WorkloadService.List` and
//! `fluxtrace status`.
//!
//! The engine fills [`Workload`]s from the state it holds ([`crate::correlate::Engine::workloads`]);
//! this module holds the plain types and their terminal table ([`render`]). Pure: no IO.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Why a workload's story cannot be told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    #[error("no Deployment {0} is followed by this agent")]
    NotFollowed(String),
    #[error("no promotion is known to have rolled out Deployment {workload} since the agent started watching it{}", newer_hint(.newer))]
    NoPromotion {
        workload: String,
        /// The newer promotion in flight or failed there, if any: `(id, outcome)`.
        newer: Option<(String, String)>,
    },
    #[error("the story of promotion {id:?}, which delivered what runs on Deployment {workload}, is no longer kept")]
    NotKept { workload: String, id: String },
    #[error("a served replay follows no workloads")]
    Replay,
}

fn newer_hint(newer: &Option<(String, String)>) -> String {
    newer.as_ref().map_or_else(String::new, |(id, outcome)| {
        let what = match outcome.as_str() {
            "in_progress" => "is in flight".to_string(),
            o => o.replace('_', " "),
        };
        format!("; a newer promotion {what}: fluxtrace explain {id}")
    })
}

/// Which workloads to list; an unset field matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadFilter {
    /// The environment of the promotion that delivered it, or of the newer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The app of the promotion that delivered it, or of the newer one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

impl WorkloadFilter {
    /// Whether a workload whose promotions are `promotions` is listed.
    pub fn matches(&self, namespace: &str, promotions: &[&PromotionRef]) -> bool {
        let by = |want: &Option<String>, field: fn(&PromotionRef) -> Option<&str>| {
            want.as_deref()
                .is_none_or(|w| promotions.iter().any(|p| field(p) == Some(w)))
        };
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && by(&self.environment, |p| p.environment.as_deref())
            && by(&self.app, |p| p.app.as_deref())
    }
}

/// One followed Deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    /// `Kind/namespace/name` of the Kustomization or HelmRelease that applied it, if its labels
    /// say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// Its ReplicaSets with ready replicas, newest template first when known.
    pub running: Vec<RunningReplicaSet>,
    /// The last promotion whose rollout of this Deployment completed; `None` when none did
    /// since the agent started watching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_by: Option<PromotionRef>,
    /// A newer promotion that touches it and is still in flight (`outcome: in_progress`), or
    /// else the newest that failed or timed out after the delivering one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer: Option<PromotionRef>,
}

/// A ReplicaSet with ready replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningReplicaSet {
    pub name: String,
    /// Container images of its pod template, in order.
    pub images: Vec<String>,
    pub ready: i64,
}

/// A promotion, as a workload's line names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// `reported`, `annotated` or `missing` (a rollout no report or annotation explains).
    pub traceability: String,
    /// `succeeded`, `failed`, `timed_out`, `superseded`, `no_change`, or `in_progress`.
    pub outcome: String,
    /// The stage it diverged at, for a failed or timed-out promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged_at: Option<String>,
    /// Why: the Pod cause (`ImagePullBackOff`) or the condition reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it concerned this workload: its rollout here completed or failed, or, in flight,
    /// when the promotion started.
    pub time: jiff::Timestamp,
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_link: Option<String>,
}

impl PromotionRef {
    /// `id (actor, time, outcome)`.
    fn summary(&self) -> String {
        let mut out = format!("{} (", self.id);
        if let Some(a) = &self.actor {
            let _ = write!(out, "{a}, ");
        }
        let _ = write!(
            out,
            "{}, {}",
            seconds(self.time),
            self.outcome.replace('_', " ")
        );
        if let Some(stage) = &self.diverged_at {
            let _ = write!(out, " at {stage}");
        }
        if let Some(r) = &self.reason {
            let _ = write!(out, ": {r}");
        }
        out.push(')');
        out
    }

    /// The trace link, else the trace id.
    fn trace(&self) -> &str {
        self.trace_link.as_deref().unwrap_or(&self.trace_id)
    }
}

/// RFC 3339 to the second.
fn seconds(t: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(t.as_second()).map_or_else(|_| t.to_string(), |s| s.to_string())
}

/// The table `fluxtrace status` prints: a row per workload (what runs, who delivered it, the
/// trace), a row per further ReplicaSet running, and a row for a newer promotion in flight or
/// failed. Every cell is [`crate::story::terminal_safe`].
pub fn render(workloads: &[Workload]) -> String {
    if workloads.is_empty() {
        return "No followed Deployment matches.\n".to_string();
    }
    let mut rows: Vec<[String; 4]> = vec![[
        "WORKLOAD".into(),
        "RUNNING".into(),
        "DELIVERED BY".into(),
        "TRACE".into(),
    ]];
    for w in workloads {
        let mut running = w.running.iter().map(|rs| {
            let images = if rs.images.is_empty() {
                rs.name.clone()
            } else {
                rs.images.join(", ")
            };
            format!("{images} ({} ready)", rs.ready)
        });
        let (delivered, trace) = match &w.delivered_by {
            Some(p) => (p.summary(), p.trace().to_string()),
            None => ("no completed rollout seen".into(), "-".into()),
        };
        rows.push([
            format!("{}/{}", w.namespace, w.name),
            running.next().unwrap_or_else(|| "nothing ready".into()),
            delivered,
            trace,
        ]);
        for more in running {
            rows.push([String::new(), more, String::new(), String::new()]);
        }
        if let Some(p) = &w.newer {
            let label = match p.outcome.as_str() {
                "in_progress" => "in flight",
                "timed_out" => "timed out",
                _ => "failed",
            };
            rows.push([
                format!("  ↳ {label}"),
                String::new(),
                p.summary(),
                p.trace().to_string(),
            ]);
        }
    }
    // Escaped before measuring, so that the columns stay aligned.
    for r in &mut rows {
        for cell in r.iter_mut() {
            if let std::borrow::Cow::Owned(safe) = crate::story::terminal_safe(cell) {
                *cell = safe;
            }
        }
    }
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let widths = [width(0), width(1), width(2)];
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i < 3 {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn promotion(id: &str, outcome: &str) -> PromotionRef {
        PromotionRef {
            id: id.into(),
            actor: Some("alice".into()),
            environment: Some("prod".into()),
            app: Some("ledger".into()),
            traceability: "reported".into(),
            outcome: outcome.into(),
            diverged_at: None,
            reason: None,
            time: "2026-11-26T10:00:49.5Z".parse().expect("a time"),
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            trace_link: None,
        }
    }

    #[test]
    fn the_filter_matches_either_promotion() {
        let delivered = promotion("a", "succeeded");
        let mut newer = promotion("b", "failed");
        newer.environment = Some("staging".into());
        let both = [&delivered, &newer];
        let f = |env: Option<&str>, ns: Option<&str>, app: Option<&str>| WorkloadFilter {
            environment: env.map(Into::into),
            namespace: ns.map(Into::into),
            app: app.map(Into::into),
        };
        assert!(f(None, None, None).matches("payments", &[]));
        assert!(f(Some("staging"), Some("payments"), Some("ledger")).matches("payments", &both));
        assert!(!f(Some("prod"), None, None).matches("payments", &[]));
        assert!(!f(None, Some("web"), None).matches("payments", &both));
        assert!(!f(None, None, Some("frontend")).matches("payments", &both));
    }

    #[test]
    fn the_table_names_what_runs_who_delivered_it_and_what_is_newer() {
        let mut failed = promotion("rel-78", "failed");
        failed.actor = None;
        failed.diverged_at = Some("rollout".into());
        failed.reason = Some("ImagePullBackOff".into());
        failed.trace_link = Some("https://tempo.example/trace/1".into());
        let ws = vec![
            Workload {
                namespace: "payments".into(),
                name: "ledger".into(),
                managed_by: None,
                running: vec![RunningReplicaSet {
                    name: "ledger-54r9g9wkdv".into(),
                    images: vec!["ghcr.io/acme/ledger:2.4.0".into(), "envoy:1.31".into()],
                    ready: 2,
                }],
                delivered_by: None,
                newer: Some(failed),
            },
            Workload {
                namespace: "web".into(),
                name: "frontend".into(),
                managed_by: None,
                running: vec![
                    RunningReplicaSet {
                        name: "frontend-b".into(),
                        images: vec!["ghcr.io/acme/frontend:1.9.0".into()],
                        ready: 1,
                    },
                    RunningReplicaSet {
                        name: "frontend-a".into(),
                        images: vec![],
                        ready: 1,
                    },
                ],
                delivered_by: Some(promotion("rel-77", "succeeded")),
                newer: Some(promotion("rel-79\u{1b}[2J", "in_progress")),
            },
        ];
        insta::assert_snapshot!(render(&ws));
        assert_eq!(render(&[]), "No followed Deployment matches.\n");
    }
}
