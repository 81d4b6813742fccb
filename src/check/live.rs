//! The IO of `fluxtrace check`: asks the API server (discovery, access reviews, Providers,
//! Alerts, the Lease), the OTLP endpoint and the agent, and hands the answers to
//! [`super::judge`] as [`Facts`]. Reads only; writes nothing but access reviews, which the API
//! server answers without storing.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::Client;

use super::{Access, Facts, Forwarder, LeaseFacts, Notification, Readyz, Served, ServerFacts};
use crate::cluster::{describe, ApiServer};
use crate::config::CheckArgs;

/// Access reviews in flight at once.
const REVIEWS_IN_FLIGHT: usize = 8;

/// What to check besides the cluster itself.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Review access as this user (`SubjectAccessReview`); yourself when `None`.
    pub as_user: Option<String>,
    /// Where the election's Lease is; `None`: no election (`--no-leader-election`).
    pub lease: Option<(String, String)>,
    /// The agent's URL, for its `/readyz`.
    pub agent: Option<String>,
    /// The OTLP/gRPC endpoint.
    pub otlp: Option<String>,
    /// Each request's time limit.
    pub timeout: Duration,
}

impl Options {
    /// What to check, validated: an empty `--as` or a zero `--timeout` is refused.
    pub fn from_args(args: &CheckArgs) -> Result<Options, String> {
        let as_user =
            match args.as_user.as_deref().map(str::trim) {
                Some("") => return Err(
                    "--as is empty: name a user, e.g. system:serviceaccount:fluxtrace:fluxtrace"
                        .into(),
                ),
                other => other.map(str::to_string),
            };
        let timeout = std::time::Duration::try_from(args.timeout).unwrap_or_default();
        if timeout.is_zero() {
            return Err("--timeout must be more than zero".into());
        }
        let lease = (!args.no_leader_election).then(|| {
            (
                args.lease_namespace
                    .clone()
                    .unwrap_or_else(|| args.promotion_namespace.clone()),
                args.lease_name.clone(),
            )
        });
        Ok(Options {
            as_user,
            lease,
            agent: args.agent.clone(),
            otlp: crate::export::configured_endpoint(args.otlp_endpoint.as_deref()),
            timeout,
        })
    }
}

/// Asks everything `check` judges. Never fails: what could not be asked is a fact too.
pub async fn gather(server: Result<ApiServer, String>, o: &Options) -> Facts {
    let otlp = match &o.otlp {
        Some(url) => Some((url.clone(), otlp_answers(url, o.timeout).await)),
        None => None,
    };
    let agent = match &o.agent {
        Some(url) => Some((url.clone(), readyz(url, o.timeout).await)),
        None => None,
    };
    let subject = match &o.as_user {
        Some(u) => u.clone(),
        None => "yourself".to_string(),
    };
    let mut facts = Facts {
        server: Err(String::new()),
        kinds: Vec::new(),
        promotion: Ok(Vec::new()),
        subject,
        access: Vec::new(),
        notification: Notification::NotServed,
        agent,
        otlp,
        lease: None,
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            facts.server = Err(e);
            return facts;
        }
    };
    let client = &server.client;
    let version = tokio::time::timeout(o.timeout, client.apiserver_version()).await;
    facts.server = match version {
        Ok(Ok(v)) => Ok(ServerFacts {
            url: server.url.clone(),
            version: v.git_version,
        }),
        Ok(Err(e)) => Err(format!("{}: {}", server.url, describe(&e))),
        Err(_) => Err(format!("{}: no answer within {:?}", server.url, o.timeout)),
    };
    if facts.server.is_err() {
        return facts;
    }
    let mut groups = Groups {
        found: HashMap::new(),
        timeout: o.timeout,
    };
    for w in crate::cluster::WATCHED {
        let served = groups.served(client, w.group, w.kind).await;
        facts.kinds.push((*w, served));
    }
    let p = crate::resource::sync::WATCHED_PROMOTION;
    facts.promotion = groups.served(client, p.group, p.kind).await;
    facts.notification = notification(client, &mut groups, o.timeout).await;
    facts.access = reviews(client, o).await;
    facts.lease = match &o.lease {
        Some((namespace, name)) => Some(LeaseFacts {
            namespace: namespace.clone(),
            name: name.clone(),
            state: lease(client, namespace, name, o.timeout).await,
        }),
        None => None,
    };
    facts
}

/// Discovery, one request per API group.
struct Groups {
    found: HashMap<&'static str, Result<Option<kube::discovery::ApiGroup>, String>>,
    timeout: Duration,
}

impl Groups {
    async fn group(
        &mut self,
        client: &Client,
        group: &'static str,
    ) -> &Result<Option<kube::discovery::ApiGroup>, String> {
        if !self.found.contains_key(group) {
            let asked = tokio::time::timeout(self.timeout, kube::discovery::group(client, group));
            let g = match asked.await {
                Err(_) => Err(format!("no answer within {:?}", self.timeout)),
                Ok(Ok(g)) => Ok(Some(g)),
                Ok(Err(kube::Error::Api(s))) if s.code == 404 => Ok(None),
                Ok(Err(kube::Error::Discovery(_))) => Ok(None),
                Ok(Err(e)) => Err(describe(&e)),
            };
            self.found.insert(group, g);
        }
        &self.found[group]
    }

    /// The versions `kind` is served at, the group's preferred first.
    async fn served(&mut self, client: &Client, group: &'static str, kind: &str) -> Served {
        match self.group(client, group).await {
            Err(e) => Err(e.clone()),
            Ok(None) => Ok(Vec::new()),
            Ok(Some(g)) => Ok(g
                .versions()
                .filter(|v| {
                    g.versioned_resources(v)
                        .iter()
                        .any(|(ar, _)| ar.kind == kind)
                })
                .map(str::to_string)
                .collect()),
        }
    }

    /// The resource of `kind` at its preferred served version.
    async fn resource(
        &mut self,
        client: &Client,
        group: &'static str,
        kind: &str,
    ) -> Result<Option<kube::core::ApiResource>, String> {
        let g = match self.group(client, group).await {
            Err(e) => return Err(e.clone()),
            Ok(None) => return Ok(None),
            Ok(Some(g)) => g,
        };
        Ok(g.versions()
            .flat_map(|v| g.versioned_resources(v))
            .map(|(ar, _)| ar)
            .find(|ar| ar.kind == kind))
    }
}

async fn notification(client: &Client, groups: &mut Groups, timeout: Duration) -> Notification {
    const GROUP: &str = "notification.toolkit.fluxcd.io";
    let list = |ar: kube::core::ApiResource| async move {
        let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
        match tokio::time::timeout(timeout, api.list(&ListParams::default())).await {
            Ok(Ok(l)) => Ok(l.items),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    };
    let (provider, alert) = match (
        groups.resource(client, GROUP, "Provider").await,
        groups.resource(client, GROUP, "Alert").await,
    ) {
        (Ok(Some(p)), Ok(Some(a))) => (p, a),
        (Err(e), _) | (_, Err(e)) => return Notification::Failed(e),
        _ => return Notification::NotServed,
    };
    let (providers, alerts) = match (list(provider).await, list(alert).await) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(e), _) | (_, Err(e)) => return Notification::Failed(e),
    };
    let text = |o: &DynamicObject, path: &[&str]| {
        let mut v = &o.data["spec"];
        for p in path {
            v = &v[*p];
        }
        v.as_str().unwrap_or_default().to_string()
    };
    let forwarder = |o: &DynamicObject, detail: String, target: String| Forwarder {
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: o.metadata.name.clone().unwrap_or_default(),
        detail,
        target,
        suspended: o.data["spec"]["suspend"].as_bool().unwrap_or(false),
    };
    Notification::Listed {
        providers: providers
            .iter()
            .map(|p| forwarder(p, text(p, &["type"]), text(p, &["address"])))
            .collect(),
        alerts: alerts
            .iter()
            .map(|a| {
                let mut kinds: Vec<&str> = a.data["spec"]["eventSources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["kind"].as_str())
                    .collect();
                kinds.dedup();
                forwarder(a, text(a, &["providerRef", "name"]), kinds.join(", "))
            })
            .collect(),
    }
}

/// Every permission of [`super::permissions`], reviewed.
async fn reviews(client: &Client, o: &Options) -> Vec<Access> {
    let lease_ns = o.lease.as_ref().map(|(ns, _)| ns.as_str());
    futures::stream::iter(super::permissions(lease_ns))
        .map(|a| async move {
            let allowed = review(client, o, &a).await;
            Access { allowed, ..a }
        })
        .buffered(REVIEWS_IN_FLIGHT)
        .collect()
        .await
}

async fn review(client: &Client, o: &Options, a: &Access) -> Result<bool, String> {
    let (resource, subresource) = match a.resource.split_once('/') {
        Some((r, s)) => (r.to_string(), Some(s.to_string())),
        None => (a.resource.clone(), None),
    };
    let attributes = ResourceAttributes {
        group: Some(a.rule.group.to_string()),
        resource: Some(resource),
        subresource,
        verb: Some(a.verb.to_string()),
        namespace: a.namespace.clone(),
        ..Default::default()
    };
    let pp = PostParams::default();
    let status = match &o.as_user {
        Some(user) => {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.clone()),
                    groups: Some(groups_of(user)),
                    resource_attributes: Some(attributes),
                    ..Default::default()
                },
                ..Default::default()
            };
            let api = Api::<SubjectAccessReview>::all(client.clone());
            tokio::time::timeout(o.timeout, api.create(&pp, &review))
                .await
                .map(|r| r.map(|r| r.status))
        }
        None => {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(attributes),
                    ..Default::default()
                },
                ..Default::default()
            };
            let api = Api::<SelfSubjectAccessReview>::all(client.clone());
            tokio::time::timeout(o.timeout, api.create(&pp, &review))
                .await
                .map(|r| r.map(|r| r.status))
        }
    };
    match status {
        Ok(Ok(s)) => Ok(s.is_some_and(|s| s.allowed)),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {:?}", o.timeout)),
    }
}

/// The groups the API server gives a user: a ServiceAccount's
/// (`system:serviceaccount:<ns>:<name>`) are its namespace's and all ServiceAccounts'.
fn groups_of(user: &str) -> Vec<String> {
    let mut groups = vec!["system:authenticated".to_string()];
    if let Some(rest) = user.strip_prefix("system:serviceaccount:") {
        if let Some((ns, _)) = rest.split_once(':') {
            groups.push("system:serviceaccounts".to_string());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
    }
    groups
}

type LeaseState = Result<Option<(String, Option<String>)>, String>;

async fn lease(client: &Client, namespace: &str, name: &str, timeout: Duration) -> LeaseState {
    let api = Api::<Lease>::namespaced(client.clone(), namespace);
    let asked = tokio::time::timeout(timeout, api.get_opt(name)).await;
    match asked.map_err(|_| format!("no answer within {timeout:?}"))? {
        Ok(None) => Ok(None),
        Ok(Some(l)) => {
            let spec = l.spec.unwrap_or_default();
            Ok(Some((
                spec.holder_identity.unwrap_or_default(),
                spec.renew_time.map(|t| t.0.to_string()),
            )))
        }
        Err(e) => Err(describe(&e)),
    }
}

async fn readyz(url: &str, timeout: Duration) -> Readyz {
    let client = crate::client::AgentClient::new(url, None, timeout).map_err(|e| e.to_string())?;
    client.readyz().await.map_err(|e| e.to_string())
}

/// Sends an empty OTLP/gRPC trace export: a collector answers it like any other.
async fn otlp_answers(url: &str, timeout: Duration) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("not a URL: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", chain(&e)))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| format!("not ready: {}", chain(&e)))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(tonic::Request::new(()), path, codec)
        .await
        .map(|_| ())
        .map_err(|s| match s.code() {
            tonic::Code::Unimplemented => {
                "answers gRPC but not the OTLP trace service (is it the metrics or logs port?)"
                    .to_string()
            }
            code => format!("refused an empty export: {code:?}: {}", s.message()),
        })
}

/// An error and its causes in one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
