//! `fluxtrace check`: whether a cluster has what the agent needs, said in one screen (or JSON),
//! with a non-zero exit when something needed is missing.
//!
//! ```text
//!   kube API (discovery, access reviews, Providers, Alerts, Lease) ─┐
//!   OTLP endpoint (an empty export) ───────────────────────────────┼─▶ live::gather ─▶ Facts
//!   the agent's /readyz (--agent) ─────────────────────────────────┘                   │
//!                                                                     judge (pure) ◀───┘
//!                                                                          ▼
//!                                                    Report: findings ─▶ text | JSON, exit code
//! ```
//!
//! This module is pure: [`judge`] turns the facts [`live`] gathered into findings. What the
//! agent needs is read from the code's own tables, never from a second list: the watched kinds
//! (`cluster::WATCHED`), the RBAC rules (`cluster::cluster_rules`, `leader::lease_rule`), the
//! Promotion version this binary writes (`resource::VERSION`).

pub mod live;

use serde::Serialize;

use crate::cluster::{Rule, Watched};

/// How a finding stands. Only `Fail` makes `check` exit non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Worth knowing; nothing to fix (a kind not installed, no Lease holder yet).
    Info,
    /// The agent runs, with less (no Flux events: only core/v1 Events are read).
    Warn,
    /// Something the agent needs is missing.
    Fail,
}

impl Level {
    fn mark(self) -> &'static str {
        match self {
            Level::Ok => "ok  ",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report, with what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was checked: `api-server`, `kinds`, `promotion-crd`, `rbac`, `notification`,
    /// `agent`, `otlp`, `lease`.
    pub check: &'static str,
    pub level: Level,
    pub summary: String,
    /// Further lines: each missing permission and the rule that grants it, each kind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

fn finding(check: &'static str, level: Level, summary: impl Into<String>) -> Finding {
    Finding {
        check,
        level,
        summary: summary.into(),
        details: Vec::new(),
    }
}

/// Everything `check` found, in the order it is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Whether everything the agent needs is there (no `fail` finding).
    pub ok: bool,
    /// Every watched kind: the versions served and the one fluxtrace reads (JSON only).
    pub kinds: Vec<KindReport>,
    /// Every permission the agent uses that was not granted (JSON only).
    pub missing_permissions: Vec<MissingPermission>,
}

/// A watched kind as the cluster serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindReport {
    pub group: &'static str,
    pub kind: &'static str,
    /// Versions served; empty when not installed or discovery failed.
    pub served: Vec<String>,
    /// Versions fluxtrace reads, in order of preference.
    pub understood: &'static [&'static str],
    /// The version the agent watches; `None` when it watches none.
    pub reads: Option<String>,
}

/// A permission an access review did not grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MissingPermission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: String,
    pub namespace: Option<String>,
    /// `Role …` or `ClusterRole …` that holds the rule granting it.
    pub granted_by: &'static str,
    /// The rule, as `deploy/rbac/` writes it.
    pub rule: String,
    /// Why the review itself failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// `findings` alone (the JSON-only lists empty).
    pub fn new(findings: Vec<Finding>) -> Report {
        let ok = findings.iter().all(|f| f.level != Level::Fail);
        Report {
            findings,
            ok,
            kinds: Vec::new(),
            missing_permissions: Vec::new(),
        }
    }

    /// One screen: a line per finding, its details indented below it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            out.push_str(&format!(
                "{} {:<13} {}\n",
                f.level.mark(),
                f.check,
                f.summary
            ));
            for d in &f.details {
                for line in d.lines() {
                    out.push_str(&format!("{:19}{line}\n", ""));
                }
            }
        }
        let count = |l| self.findings.iter().filter(|f| f.level == l).count();
        out.push_str(&match (count(Level::Fail), count(Level::Warn)) {
            (0, 0) => "everything the agent needs is in place\n".to_string(),
            (0, w) => format!("everything the agent needs is in place; {w} warning(s)\n"),
            (f, w) => format!("{f} problem(s) to fix, {w} warning(s)\n"),
        });
        out
    }
}

/// The API server as discovery found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    pub url: String,
    /// `gitVersion` of `/version`.
    pub version: String,
}

/// The versions a kind is served at; `Err` when discovery of its group failed.
pub type Served = Result<Vec<String>, String>;

/// One permission the agent uses, and what an access review said of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub rule: Rule,
    /// Which Role or ClusterRole holds `rule` (`ClusterRole fluxtrace`).
    pub role: &'static str,
    pub verb: &'static str,
    pub resource: String,
    /// `None`: cluster-wide.
    pub namespace: Option<String>,
    /// `Err`: the review itself failed.
    pub allowed: Result<bool, String>,
}

/// A Provider that forwards Flux events to an agent's intake, or an Alert that uses one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarder {
    pub namespace: String,
    pub name: String,
    /// Provider: its `spec.type`; Alert: its `spec.providerRef.name`.
    pub detail: String,
    /// Provider: its `spec.address`; Alert: the kinds of its `spec.eventSources`.
    pub target: String,
    /// `spec.suspend`.
    pub suspended: bool,
}

/// The notification path: Providers and Alerts, when notification-controller's kinds are
/// served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notification {
    NotServed,
    Listed {
        providers: Vec<Forwarder>,
        alerts: Vec<Forwarder>,
    },
    Failed(String),
}

/// An agent's `/readyz`: its status code and body, or why it could not be read.
pub type Readyz = Result<(u16, String), String>;

/// The election's Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFacts {
    pub namespace: String,
    pub name: String,
    /// `None`: the Lease does not exist; else its holder (empty when released) and renew time.
    pub state: Result<Option<(String, Option<String>)>, String>,
}

/// What [`live::gather`] found; the input of [`judge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub server: Result<ServerFacts, String>,
    /// Every watched kind and the versions it is served at.
    pub kinds: Vec<(Watched, Served)>,
    /// The versions `promotions.fluxtrace.io` is served at.
    pub promotion: Served,
    /// Whose access was reviewed (`yourself` or the `--as` user).
    pub subject: String,
    pub access: Vec<Access>,
    pub notification: Notification,
    /// `--agent`: its URL and `/readyz` (status code and body), or why it could not be read.
    pub agent: Option<(String, Readyz)>,
    /// The OTLP endpoint and whether it answered an empty export; `None` when none is set.
    pub otlp: Option<(String, Result<(), String>)>,
    pub lease: Option<LeaseFacts>,
}

/// The findings, in the order they are shown. With no API server, only that.
pub fn judge(f: &Facts) -> Report {
    let server = match &f.server {
        Ok(s) => finding(
            "api-server",
            Level::Ok,
            format!("{} answers, Kubernetes {}", s.url, s.version),
        ),
        Err(e) => {
            let mut out = vec![finding(
                "api-server",
                Level::Fail,
                format!("not reachable: {e}"),
            )];
            out.extend(otlp(f));
            return Report::new(out);
        }
    };
    let mut out = vec![server];
    out.extend(kinds(&f.kinds));
    out.push(promotion(&f.promotion));
    out.push(access(&f.subject, &f.access));
    out.push(notification(&f.notification));
    if let Some((url, readyz)) = &f.agent {
        out.push(agent(url, readyz));
    }
    out.extend(otlp(f));
    if let Some(l) = &f.lease {
        out.push(lease(l));
    }
    Report {
        kinds: f
            .kinds
            .iter()
            .map(|(w, served)| {
                let served = served.clone().unwrap_or_default();
                KindReport {
                    group: w.group,
                    kind: w.kind,
                    reads: w
                        .versions
                        .iter()
                        .find(|u| served.iter().any(|s| s == *u))
                        .map(|u| u.to_string()),
                    served,
                    understood: w.versions,
                }
            })
            .collect(),
        missing_permissions: f
            .access
            .iter()
            .filter(|a| a.allowed != Ok(true))
            .map(|a| MissingPermission {
                verb: a.verb,
                group: a.rule.group,
                resource: a.resource.clone(),
                namespace: a.namespace.clone(),
                granted_by: a.role,
                rule: a.rule.flow(),
                error: a.allowed.clone().err(),
            })
            .collect(),
        ..Report::new(out)
    }
}

/// What a group of kinds is, for people.
fn group_name(group: &str) -> &str {
    match group {
        "source.toolkit.fluxcd.io" => "Flux sources",
        "kustomize.toolkit.fluxcd.io" => "Flux kustomize",
        "helm.toolkit.fluxcd.io" => "Flux helm",
        "notification.toolkit.fluxcd.io" => "Flux receivers",
        "image.toolkit.fluxcd.io" => "Flux image automation",
        "flagger.app" => "Flagger",
        "apps" => "workloads",
        "" => "core",
        other => other,
    }
}

/// A line per API group: each kind with the version fluxtrace reads. The agent skips a kind
/// that is not served (and looks for it again later), so nothing here fails the check: a kind
/// served only at versions fluxtrace does not read, or a core or apps kind not served, is a
/// warning; a Flux or Flagger kind not installed is information.
fn kinds(kinds: &[(Watched, Served)]) -> Vec<Finding> {
    let mut groups: Vec<&str> = Vec::new();
    for (w, _) in kinds {
        if !groups.contains(&w.group) {
            groups.push(w.group);
        }
    }
    let mut out = Vec::new();
    for g in groups {
        let mut read = Vec::new();
        let mut missing = Vec::new();
        let mut details = Vec::new();
        let mut level = Level::Ok;
        for (w, served) in kinds.iter().filter(|(w, _)| w.group == g) {
            match served {
                Err(e) => {
                    level = level.max(Level::Fail);
                    details.push(format!("{}: discovery failed: {e}", w.kind));
                }
                Ok(v) if v.is_empty() => missing.push(w.kind),
                Ok(v) => match w.versions.iter().find(|u| v.iter().any(|s| s == *u)) {
                    Some(u) => read.push(format!("{} {u}", w.kind)),
                    None => {
                        level = level.max(Level::Warn);
                        details.push(format!(
                            "{}: served at {}, fluxtrace reads {} (not watched: upgrade fluxtrace)",
                            w.kind,
                            v.join(", "),
                            w.versions.join(", ")
                        ));
                    }
                },
            }
        }
        let core = g.is_empty() || g == "apps";
        let summary = match (read.is_empty(), missing.is_empty()) {
            (_, true) => format!("{}: {}", group_name(g), read.join(", ")),
            (true, false) => {
                level = level.max(if core { Level::Warn } else { Level::Info });
                format!("{}: not installed (not traced)", group_name(g))
            }
            (false, false) => {
                level = level.max(if core { Level::Warn } else { Level::Info });
                format!(
                    "{}: {}; not installed: {}",
                    group_name(g),
                    read.join(", "),
                    missing.join(", ")
                )
            }
        };
        out.push(Finding {
            check: "kinds",
            level,
            summary,
            details,
        });
    }
    out
}

fn promotion(served: &Served) -> Finding {
    use crate::resource::{GROUP, PLURAL, VERSION};
    let crd = format!("{PLURAL}.{GROUP}");
    let install = "install it: kubectl apply -k deploy/crds".to_string();
    match served {
        Err(e) => finding("promotion-crd", Level::Fail, format!("{crd}: {e}")),
        Ok(v) if v.iter().any(|s| s == VERSION) => finding(
            "promotion-crd",
            Level::Ok,
            format!("{crd} served at {VERSION}, the version this binary writes"),
        ),
        Ok(v) if v.is_empty() => Finding {
            details: vec![install],
            ..finding(
                "promotion-crd",
                Level::Fail,
                format!("{crd} is not installed"),
            )
        },
        Ok(v) => Finding {
            details: vec![install],
            ..finding(
                "promotion-crd",
                Level::Fail,
                format!(
                    "{crd} served at {}, this binary writes {VERSION}",
                    v.join(", ")
                ),
            )
        },
    }
}

/// One line for the whole review; each denied permission below it with the rule that grants it.
fn access(subject: &str, reviews: &[Access]) -> Finding {
    let denied: Vec<&Access> = reviews.iter().filter(|a| a.allowed != Ok(true)).collect();
    if denied.is_empty() {
        return finding(
            "rbac",
            Level::Ok,
            format!(
                "{subject}: all {} permissions the agent uses are granted",
                reviews.len()
            ),
        );
    }
    // No review answered (creating reviews is itself forbidden, say): one line, not one a rule.
    if let (Some(Err(e)), true) = (
        denied.first().map(|a| &a.allowed),
        denied.len() == reviews.len() && denied.iter().all(|a| a.allowed.is_err()),
    ) {
        return finding(
            "rbac",
            Level::Fail,
            format!("cannot review access as {subject}: {e}"),
        );
    }
    let mut details = Vec::new();
    // One block per rule: the permissions it would grant, then the rule itself.
    let mut rules: Vec<(&Rule, &'static str, Option<&String>)> = Vec::new();
    for a in &denied {
        if !rules
            .iter()
            .any(|(r, role, ns)| *r == &a.rule && *role == a.role && *ns == a.namespace.as_ref())
        {
            rules.push((&a.rule, a.role, a.namespace.as_ref()));
        }
    }
    for (rule, role, ns) in rules {
        // Resources grouped by the verbs they miss: "get, list, watch on a, b".
        let mut by_verbs: Vec<(Vec<&str>, Vec<&str>)> = Vec::new();
        for resource in &rule.resources {
            let verbs: Vec<&str> = denied
                .iter()
                .filter(|a| {
                    &a.rule == rule
                        && a.role == role
                        && a.namespace.as_ref() == ns
                        && &a.resource == resource
                })
                .map(|a| a.verb)
                .collect();
            if verbs.is_empty() {
                continue;
            }
            match by_verbs.iter_mut().find(|(v, _)| *v == verbs) {
                Some((_, r)) => r.push(resource),
                None => by_verbs.push((verbs, vec![resource])),
            }
        }
        let group = match rule.group {
            "" => "core".to_string(),
            g => g.to_string(),
        };
        let missing: Vec<String> = by_verbs
            .iter()
            .map(|(v, r)| format!("{} on {}", v.join(", "), r.join(", ")))
            .collect();
        let place = match ns {
            Some(ns) => format!("{role} (namespace {ns})"),
            None => role.to_string(),
        };
        details.push(format!(
            "missing {} ({group}); granted by {place}:\n  {}",
            missing.join("; "),
            rule.flow()
        ));
    }
    let failed: Vec<&String> = denied
        .iter()
        .filter_map(|a| a.allowed.as_ref().err())
        .collect();
    if let Some(e) = failed.first() {
        details.push(format!("{} review(s) failed: {e}", failed.len()));
    }
    Finding {
        check: "rbac",
        level: Level::Fail,
        summary: format!(
            "{subject}: {} of {} permissions the agent uses are missing",
            denied.len(),
            reviews.len()
        ),
        details,
    }
}

fn notification(n: &Notification) -> Finding {
    let consequence = "without them only core/v1 Events are read (client-go folds repeats and \
                       drops bursts): apply deploy/flux/provider.yaml and alert.yaml";
    match n {
        Notification::Failed(e) => finding(
            "notification",
            Level::Warn,
            format!("cannot list Providers and Alerts: {e}"),
        ),
        Notification::NotServed => Finding {
            details: vec![consequence.to_string()],
            ..finding(
                "notification",
                Level::Warn,
                "notification-controller's Provider and Alert kinds are not served",
            )
        },
        Notification::Listed { providers, alerts } => {
            let to_agent: Vec<&Forwarder> = providers
                .iter()
                .filter(|p| {
                    !p.suspended
                        && p.detail.starts_with("generic")
                        && p.target
                            .trim_end_matches('/')
                            .ends_with(crate::intake::http::FLUX_EVENTS_PATH)
                })
                .collect();
            let used: Vec<(&Forwarder, &Forwarder)> = alerts
                .iter()
                .filter(|a| !a.suspended)
                .filter_map(|a| {
                    let p = to_agent
                        .iter()
                        .find(|p| p.namespace == a.namespace && p.name == a.detail)?;
                    Some((*p, a))
                })
                .collect();
            match (to_agent.first(), used.first()) {
                (_, Some((p, a))) => finding(
                    "notification",
                    Level::Ok,
                    format!(
                        "Alert {}/{} ({}) forwards to Provider {}/{} ({}) at {}",
                        a.namespace, a.name, a.target, p.namespace, p.name, p.detail, p.target
                    ),
                ),
                (Some(p), None) => Finding {
                    details: vec![consequence.to_string()],
                    ..finding(
                        "notification",
                        Level::Warn,
                        format!(
                            "Provider {}/{} posts to the agent, but no Alert uses it",
                            p.namespace, p.name
                        ),
                    )
                },
                (None, None) => Finding {
                    details: vec![consequence.to_string()],
                    ..finding(
                        "notification",
                        Level::Warn,
                        format!(
                            "no Provider of type generic or generic-hmac posts to the agent's {}",
                            crate::intake::http::FLUX_EVENTS_PATH
                        ),
                    )
                },
            }
        }
    }
}

fn agent(url: &str, readyz: &Readyz) -> Finding {
    let (status, body) = match readyz {
        Err(e) => return finding("agent", Level::Fail, format!("{url}: {e}")),
        Ok(r) => r,
    };
    let first = body.lines().next().unwrap_or_default();
    let ready = if *status == 200 {
        first.to_string()
    } else {
        format!("not ready ({status}): {first}")
    };
    match crate::admin::flux_events_received_in(body) {
        None => finding(
            "agent",
            Level::Fail,
            format!("{url}/readyz is not a fluxtrace agent's ({status}): {first}"),
        ),
        Some(0) => finding(
            "agent",
            Level::Warn,
            format!("{url}: {ready}; no Flux events received yet from notification-controller"),
        ),
        Some(n) => finding(
            "agent",
            if *status == 200 {
                Level::Ok
            } else {
                Level::Warn
            },
            format!("{url}: {ready}; {n} Flux events received"),
        ),
    }
}

fn otlp(f: &Facts) -> Option<Finding> {
    Some(match &f.otlp {
        None => finding(
            "otlp",
            Level::Info,
            "no endpoint given (--otlp-endpoint, OTEL_EXPORTER_OTLP_ENDPOINT): not checked",
        ),
        Some((url, Ok(()))) => finding(
            "otlp",
            Level::Ok,
            format!("{url} accepts OTLP/gRPC trace exports"),
        ),
        Some((url, Err(e))) => finding("otlp", Level::Fail, format!("{url}: {e}")),
    })
}

fn lease(l: &LeaseFacts) -> Finding {
    let at = format!("Lease {}/{}", l.namespace, l.name);
    match &l.state {
        Err(e) => finding("lease", Level::Warn, format!("{at}: cannot read: {e}")),
        Ok(None) => finding(
            "lease",
            Level::Info,
            format!("{at} does not exist yet (the first replica creates it)"),
        ),
        Ok(Some((holder, _))) if holder.is_empty() => {
            finding("lease", Level::Info, format!("{at} is not held"))
        }
        Ok(Some((holder, renewed))) => finding(
            "lease",
            Level::Ok,
            match renewed {
                Some(t) => format!("{at} held by {holder}, renewed {t}"),
                None => format!("{at} held by {holder}"),
            },
        ),
    }
}

/// Every permission the agent uses: each verb of each rule on each of its resources,
/// cluster-wide, and the Lease verbs in `lease_namespace` (none with `None`: no election).
pub fn permissions(lease_namespace: Option<&str>) -> Vec<Access> {
    let mut out = Vec::new();
    let mut add = |rule: &Rule, role: &'static str, namespace: Option<&str>| {
        for resource in &rule.resources {
            for verb in rule.verbs {
                out.push(Access {
                    rule: rule.clone(),
                    role,
                    verb,
                    resource: resource.clone(),
                    namespace: namespace.map(str::to_string),
                    allowed: Ok(false),
                });
            }
        }
    };
    for rule in crate::cluster::cluster_rules() {
        add(&rule, "ClusterRole fluxtrace", None);
    }
    if let Some(ns) = lease_namespace {
        add(
            &crate::leader::lease_rule(),
            "Role fluxtrace-leader-election",
            Some(ns),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::WATCHED;

    fn facts() -> Facts {
        Facts {
            server: Ok(ServerFacts {
                url: "https://k".into(),
                version: "v1.33.1".into(),
            }),
            kinds: WATCHED
                .iter()
                .map(|w| (*w, Ok(vec![w.versions[0].to_string()])))
                .collect(),
            promotion: Ok(vec![crate::resource::VERSION.to_string()]),
            subject: "yourself".into(),
            access: permissions(Some("fluxtrace"))
                .into_iter()
                .map(|a| Access {
                    allowed: Ok(true),
                    ..a
                })
                .collect(),
            notification: Notification::NotServed,
            agent: None,
            otlp: None,
            lease: None,
        }
    }

    #[test]
    fn every_permission_of_the_generated_roles_is_reviewed() {
        let perms = permissions(Some("ns"));
        let role = crate::cluster::cluster_role_yaml() + &crate::leader::role_yaml();
        for a in &perms {
            assert!(role.contains(&format!("\"{}\"", a.resource)), "{a:?}");
        }
        // get, list and watch on each watched kind, and the writes the agent makes.
        assert!(perms.len() > WATCHED.len() * 3);
        assert!(perms
            .iter()
            .any(|a| a.verb == "patch" && a.resource == "promotions/status"));
        assert!(perms.iter().any(|a| a.verb == "update"
            && a.resource == "leases"
            && a.namespace.as_deref() == Some("ns")));
    }

    #[test]
    fn a_flux_kind_served_only_at_a_version_fluxtrace_does_not_read_is_a_warning() {
        let mut f = facts();
        for (w, s) in &mut f.kinds {
            if w.kind == "HelmRelease" {
                *s = Ok(vec!["v3".into()]);
            }
        }
        let r = judge(&f);
        let helm = r
            .findings
            .iter()
            .find(|x| x.summary.starts_with("Flux helm"))
            .expect("a line for Flux helm");
        assert_eq!(helm.level, Level::Warn);
        assert!(helm.details[0].contains("served at v3, fluxtrace reads v2"));
        assert!(r.ok, "a warning does not fail the check");
    }

    #[test]
    fn access_that_cannot_be_reviewed_at_all_is_one_line() {
        let mut f = facts();
        for a in &mut f.access {
            a.allowed = Err("subjectaccessreviews is forbidden".into());
        }
        let r = judge(&f);
        let rbac = r
            .findings
            .iter()
            .find(|x| x.check == "rbac")
            .expect("an rbac line");
        assert_eq!(
            (rbac.level, rbac.summary.as_str(), rbac.details.len()),
            (
                Level::Fail,
                "cannot review access as yourself: subjectaccessreviews is forbidden",
                0
            )
        );
        assert!(!r.ok);
    }

    #[test]
    fn the_agent_line_reads_the_flux_event_count_of_readyz() {
        let mut f = facts();
        let body = format!("ready\n{}", crate::admin::flux_events_detail(7));
        f.agent = Some(("http://a".into(), Ok((200, body))));
        let r = judge(&f);
        let a = r
            .findings
            .iter()
            .find(|x| x.check == "agent")
            .expect("an agent line");
        assert_eq!(
            (a.level, a.summary.as_str()),
            (Level::Ok, "http://a: ready; 7 Flux events received")
        );
        let body = format!("ready\n{}", crate::admin::flux_events_detail(0));
        f.agent = Some(("http://a".into(), Ok((200, body))));
        let a = judge(&f).findings.into_iter().find(|x| x.check == "agent");
        assert_eq!(a.expect("an agent line").level, Level::Warn);
    }
}
