//! Proves the test kube API server (`fluxtrace_testkit::kube_api`) against kube's real client and
//! kube-runtime's watcher: discovery, lists with selectors and pages, watches that resume,
//! re-list after 410 Expired, typed k8s-openapi lists, and recorded writes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use fluxtrace_testkit::kube_api::{Applied, KubeApi, ServerHandle};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{
    Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{GroupVersionKind, PartialObjectMeta};
use kube::discovery::{self, verbs, Discovery, Scope};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

const OCI_SUCCESS: &str = include_str!("../examples/recordings/oci-success.jsonl");
/// Longest wait for any one thing; a working server answers in milliseconds (a watcher's
/// backoff after an error is about a second).
const STEP: Duration = Duration::from_secs(5);

const DEPLOYMENTS: &str = "/apis/apps/v1/deployments";
const SOURCE: &str = "source.toolkit.fluxcd.io";

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn deployments() -> ApiResource {
    ar("apps", "v1", "Deployment", "deployments")
}

fn rv_of(obj: &DynamicObject) -> u64 {
    obj.resource_version()
        .expect("served objects carry a resourceVersion")
        .parse()
        .expect("resourceVersion is the server's counter")
}

fn names(objs: &[DynamicObject]) -> Vec<String> {
    objs.iter().map(ResourceExt::name_any).collect()
}

/// The resource versions the server gave to changes of `kind`.
fn rvs(applied: &[Applied], kind: &str) -> Vec<u64> {
    applied
        .iter()
        .filter(|a| a.kind == kind)
        .map(|a| a.resource_version)
        .collect()
}

type WatchItem = Result<Event<DynamicObject>, watcher::Error>;

/// Runs a watcher (with kube's default backoff) in its own task, so it is polled all the time,
/// and hands its events over a channel.
fn spawn_watcher(
    api: Api<DynamicObject>,
    config: watcher::Config,
) -> mpsc::UnboundedReceiver<WatchItem> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    rx
}

/// A watcher event in a few words: `Init`, `InitApply checkout@7`, `Apply checkout@12`,
/// `Delete checkout@40`, `InitDone`, `Error 410`.
fn describe(item: &WatchItem) -> String {
    match item {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::InitApply(o)) => format!("InitApply {}@{}", o.name_any(), rv_of(o)),
        Ok(Event::Apply(o)) => format!("Apply {}@{}", o.name_any(), rv_of(o)),
        Ok(Event::Delete(o)) => format!("Delete {}@{}", o.name_any(), rv_of(o)),
        Err(watcher::Error::WatchError(status)) => format!("Error {}", status.code),
        Err(e) => format!("Err {e}"),
    }
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<WatchItem>) -> String {
    let item = timeout(STEP, rx.recv())
        .await
        .expect("the watcher sent nothing in time")
        .expect("the watcher ended");
    describe(&item)
}

async fn next_events(rx: &mut mpsc::UnboundedReceiver<WatchItem>, n: usize) -> Vec<String> {
    let mut events = Vec::new();
    for _ in 0..n {
        events.push(next_event(rx).await);
    }
    events
}

fn expect_applies(name: &str, rvs: &[u64]) -> Vec<String> {
    rvs.iter().map(|rv| format!("Apply {name}@{rv}")).collect()
}

/// Starts a server fed by oci-success with its initial list applied; returns it and the
/// Deployment's resource version.
async fn oci_server(api: KubeApi) -> (ServerHandle, u64) {
    let server = api.recording(OCI_SUCCESS).start().await;
    let initial = server.apply_initial();
    assert_eq!(initial.len(), 5, "oci-success starts with five objects");
    let deployment_rv = rvs(&initial, "Deployment")[0];
    (server, deployment_rv)
}

/// Starts a Deployment watcher and checks the initial list arrives as Init/InitApply/InitDone,
/// then waits until its watch request is open.
async fn watch_deployments(
    server: &ServerHandle,
    deployment_rv: u64,
) -> mpsc::UnboundedReceiver<WatchItem> {
    let api = Api::<DynamicObject>::all_with(server.client(), &deployments());
    let mut rx = spawn_watcher(api, watcher::Config::default());
    assert_eq!(
        next_events(&mut rx, 3).await,
        [
            "Init",
            &format!("InitApply checkout@{deployment_rv}"),
            "InitDone"
        ]
    );
    assert!(
        server.wait_for_watches(1, STEP).await,
        "the watcher opened no watch"
    );
    rx
}

#[tokio::test]
async fn discovery_finds_flux_groups_and_not_a_removed_crd() {
    let server = KubeApi::new()
        .without_group("helm.toolkit.fluxcd.io")
        .without_kind("Bucket")
        .start()
        .await;
    let client = server.client();
    let discovery = timeout(STEP, Discovery::new(client.clone()).run())
        .await
        .unwrap()
        .expect("discovery runs");

    for group in [
        "",
        "apps",
        SOURCE,
        "kustomize.toolkit.fluxcd.io",
        "notification.toolkit.fluxcd.io",
    ] {
        assert!(discovery.has_group(group), "group {group:?} is missing");
    }
    assert!(!discovery.has_group("helm.toolkit.fluxcd.io"));

    let source = discovery.get(SOURCE).unwrap();
    let (oci, caps) = source.recommended_kind("OCIRepository").unwrap();
    assert_eq!(
        (oci.version.as_str(), oci.plural.as_str()),
        ("v1", "ocirepositories")
    );
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(caps.supports_operation(verbs::WATCH));
    assert!(!caps.supports_operation(verbs::CREATE));
    assert!(
        source.recommended_kind("Bucket").is_none(),
        "Bucket was removed"
    );
    assert!(source.recommended_kind("HelmChart").is_some());

    let (ks, _) = discovery
        .get("kustomize.toolkit.fluxcd.io")
        .unwrap()
        .recommended_kind("Kustomization")
        .unwrap();
    assert_eq!(ks.plural, "kustomizations");
    let (receiver, _) = discovery
        .get("notification.toolkit.fluxcd.io")
        .unwrap()
        .recommended_kind("Receiver")
        .unwrap();
    assert_eq!(receiver.api_version, "notification.toolkit.fluxcd.io/v1");

    let core = discovery.get("").unwrap();
    let (events, event_caps) = core.recommended_kind("Event").unwrap();
    assert_eq!(
        (events.api_version.as_str(), events.plural.as_str()),
        ("v1", "events")
    );
    assert!(event_caps.supports_operation(verbs::CREATE));
    assert!(event_caps.supports_operation(verbs::PATCH));
    let (_, pod_caps) = core.recommended_kind("Pod").unwrap();
    assert!(
        pod_caps.supports_operation(verbs::LIST) && !pod_caps.supports_operation(verbs::CREATE)
    );
    let (_, deploy_caps) = discovery
        .get("apps")
        .unwrap()
        .recommended_kind("Deployment")
        .unwrap();
    assert_eq!(deploy_caps.subresources.len(), 1, "deployments/status");

    // Single-kind lookups the way a watcher resolves what to watch.
    let Err(err) = discovery::group(&client, "helm.toolkit.fluxcd.io").await else {
        panic!("the helm group was removed");
    };
    assert!(
        matches!(
            err,
            kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_))
        ),
        "a missing group is a discovery error, not a 404: {err}"
    );
    let helm = GroupVersionKind::gvk("helm.toolkit.fluxcd.io", "v2", "HelmRelease");
    assert!(discovery::pinned_kind(&client, &helm).await.is_err());
    let ks_gvk = GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization");
    let (pinned, _) = discovery::pinned_kind(&client, &ks_gvk).await.unwrap();
    assert_eq!(pinned.plural, "kustomizations");

    // Aggregated discovery (two requests) agrees with the classic walk.
    let aggregated = timeout(STEP, Discovery::new(client).run_aggregated())
        .await
        .unwrap()
        .expect("aggregated discovery runs");
    let kinds = |d: &Discovery| -> BTreeSet<String> {
        d.groups()
            .flat_map(|g| g.resources_by_stability())
            .map(|(ar, caps)| {
                format!(
                    "{}/{} {:?} {:?}",
                    ar.api_version, ar.kind, caps.scope, caps.operations
                )
            })
            .collect()
    };
    assert_eq!(kinds(&aggregated), kinds(&discovery));
    assert_eq!(
        kinds(&discovery).len(),
        16,
        "the default kinds (the three image automation kinds, Flagger's Canary, Promotion and Lease \
         included), but HelmRelease"
    );
    let aggregated_requests: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| {
            r.accept
                .as_deref()
                .unwrap_or("")
                .contains("apidiscovery.k8s.io")
        })
        .map(|r| r.path)
        .collect();
    assert_eq!(aggregated_requests, ["/apis", "/api"]);
}

#[tokio::test]
async fn oci_repository_served_only_at_v1beta2() {
    let (server, _) = oci_server(KubeApi::new().serve_kind_at("OCIRepository", "v1beta2")).await;
    let client = server.client();
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let source = discovery.get(SOURCE).unwrap();
    assert_eq!(source.versions().collect::<Vec<_>>(), ["v1", "v1beta2"]);
    assert_eq!(source.preferred_version(), Some("v1"));
    // The preferred version does not have it: kube's `recommended_kind` misses it.
    assert!(source.recommended_kind("OCIRepository").is_none());
    let (oci, _) = source
        .resources_by_stability()
        .into_iter()
        .find(|(ar, _)| ar.kind == "OCIRepository")
        .expect("OCIRepository at some version");
    assert_eq!(oci.version, "v1beta2");

    let list = Api::<DynamicObject>::all_with(client.clone(), &oci)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["shop-manifests"]);
    let served = list.items[0].types.as_ref().unwrap();
    assert_eq!(served.api_version, "source.toolkit.fluxcd.io/v1beta2");

    let v1 = ar(SOURCE, "v1", "OCIRepository", "ocirepositories");
    let err = Api::<DynamicObject>::all_with(client, &v1)
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404),
        "v1 is not served: {err}"
    );
}

#[tokio::test]
async fn dynamic_list_returns_objects_and_respects_selectors_and_pages() {
    let (server, deployment_rv) = oci_server(KubeApi::new()).await;
    let client = server.client();

    let list = Api::<DynamicObject>::all_with(client.clone(), &deployments())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["checkout"]);
    assert_eq!(
        rv_of(&list.items[0]),
        deployment_rv,
        "the server's counter, not the recording's"
    );
    assert_eq!(
        list.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
    assert_eq!(list.items[0].data["spec"]["replicas"], 2);

    let rs = ar("apps", "v1", "ReplicaSet", "replicasets");
    let all_rs = Api::<DynamicObject>::all_with(client.clone(), &rs);
    let count = |selector: &'static str| {
        let api = all_rs.clone();
        async move {
            api.list(&ListParams::default().labels(selector))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(count("app.kubernetes.io/name=checkout").await, 2);
    assert_eq!(count("pod-template-hash=qq4b8kzzcn").await, 1);
    assert_eq!(
        count("app.kubernetes.io/name=checkout,pod-template-hash==qnl9nrsnw9").await,
        1
    );
    assert_eq!(count("pod-template-hash!=qnl9nrsnw9").await, 1);
    assert_eq!(count("pod-template-hash").await, 2);
    assert_eq!(count("!pod-template-hash").await, 0);
    assert_eq!(count("pod-template-hash in (qq4b8kzzcn,nope)").await, 1);
    assert_eq!(count("app.kubernetes.io/name=cart").await, 0);

    let shop = Api::<DynamicObject>::namespaced_with(client.clone(), "shop", &rs);
    assert_eq!(
        shop.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    let elsewhere = Api::<DynamicObject>::namespaced_with(client.clone(), "flux-system", &rs);
    assert!(elsewhere
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        server.list_count("/apis/apps/v1/namespaces/shop/replicasets"),
        1
    );

    // Pages: the watcher lists with limit=500; a smaller limit gives a continue token.
    let page1 = all_rs.list(&ListParams::default().limit(1)).await.unwrap();
    let token = page1.metadata.continue_.clone().expect("a continue token");
    let page2 = all_rs
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap();
    assert!(page2.metadata.continue_.as_deref().unwrap_or("").is_empty());
    assert_eq!(
        [names(&page1.items), names(&page2.items)].concat(),
        ["checkout-qnl9nrsnw9", "checkout-qq4b8kzzcn"]
    );

    // GET one object, and a missing one.
    let checkout = Api::<DynamicObject>::namespaced_with(client.clone(), "shop", &deployments());
    assert_eq!(
        rv_of(&checkout.get("checkout").await.unwrap()),
        deployment_rv
    );
    assert!(checkout.get_opt("cart").await.unwrap().is_none());
}

#[tokio::test]
async fn watcher_gets_initial_state_then_changes_and_deletes() {
    let (server, deployment_rv) = oci_server(KubeApi::new()).await;
    let listed_at = server.resource_version();
    let mut rx = watch_deployments(&server, deployment_rv).await;

    // Changes pushed to the open watch, a few at a time.
    let first = server.apply_until(20);
    let rest = server.apply_rest();
    assert_eq!(server.remaining(), 0);
    let expected = [rvs(&first, "Deployment"), rvs(&rest, "Deployment")].concat();
    assert_eq!(
        expected.len(),
        7,
        "oci-success modifies checkout seven times"
    );
    assert_eq!(
        next_events(&mut rx, expected.len()).await,
        expect_applies("checkout", &expected)
    );

    let gone = server.objects("Deployment").pop().unwrap();
    let deleted = server.apply("DELETED", gone);
    assert_eq!(deleted.event_type, "DELETED");
    assert_eq!(
        next_event(&mut rx).await,
        format!("Delete checkout@{}", deleted.resource_version)
    );
    assert!(server.objects("Deployment").is_empty());

    // What kube sent: one list (limit 500, most recent: no resourceVersion), then one watch from
    // the list's version.
    let requests = server.requests();
    let list = requests
        .iter()
        .find(|r| r.path == DEPLOYMENTS && !r.watch)
        .unwrap();
    assert_eq!(list.query.get("limit").map(String::as_str), Some("500"));
    assert_eq!(list.query.get("resourceVersion"), None);
    let watch = requests
        .iter()
        .find(|r| r.path == DEPLOYMENTS && r.watch)
        .unwrap();
    assert_eq!(watch.query["resourceVersion"], listed_at.to_string());
    assert_eq!(
        watch.query.get("allowWatchBookmarks").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        (
            server.list_count(DEPLOYMENTS),
            server.watch_count(DEPLOYMENTS)
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn watcher_resumes_after_watches_are_dropped() {
    let (server, deployment_rv) = oci_server(KubeApi::new()).await;
    let mut rx = watch_deployments(&server, deployment_rv).await;
    let before = server.request_count(DEPLOYMENTS);

    let live = server.apply_until(20);
    let live_rvs = rvs(&live, "Deployment");
    assert_eq!(
        next_events(&mut rx, live_rvs.len()).await,
        expect_applies("checkout", &live_rvs)
    );

    assert_eq!(server.drop_watches(), 1);
    // Applied while the watcher is reconnecting: it must get them from its last version.
    let missed = rvs(&server.apply_until(40), "Deployment");
    assert!(
        server
            .wait_until(STEP, |s| s.watch_count(DEPLOYMENTS) >= 2)
            .await,
        "the watcher did not come back"
    );
    assert!(server.wait_for_watches(1, STEP).await);
    let later = rvs(&server.apply_rest(), "Deployment");
    let expected = [missed, later].concat();
    assert_eq!(
        next_events(&mut rx, expected.len()).await,
        expect_applies("checkout", &expected)
    );
    assert!(server.request_count(DEPLOYMENTS) > before);
    assert!(rx.try_recv().is_err(), "nothing delivered twice");
}

#[tokio::test]
async fn watcher_relists_after_410_on_reconnect() {
    // No periodic bookmarks: one would move the watcher past the compaction point.
    let (server, deployment_rv) = oci_server(KubeApi::new().bookmark_interval(None)).await;
    let listed_at = server.resource_version();
    let mut rx = watch_deployments(&server, deployment_rv).await;

    let compacted = server.compact();
    assert_eq!(server.drop_watches(), 1);
    assert_eq!(next_event(&mut rx).await, "Error 410");
    let expired = server
        .requests()
        .into_iter()
        .filter(|r| r.path == DEPLOYMENTS && r.watch)
        .nth(1)
        .expect("a second watch");
    assert_eq!(expired.query["resourceVersion"], listed_at.to_string());
    assert_eq!(compacted, listed_at + 1);

    // The watcher starts over: a new list (at the compaction point), then a watch from there.
    assert_eq!(
        next_events(&mut rx, 3).await,
        [
            "Init",
            &format!("InitApply checkout@{deployment_rv}"),
            "InitDone"
        ]
    );
    assert_eq!(server.list_count(DEPLOYMENTS), 2);
    let later = rvs(&server.apply_rest(), "Deployment");
    assert_eq!(
        next_events(&mut rx, later.len()).await,
        expect_applies("checkout", &later)
    );
}

#[tokio::test]
async fn watcher_relists_after_410_mid_stream() {
    let (server, deployment_rv) = oci_server(KubeApi::new()).await;
    let mut rx = watch_deployments(&server, deployment_rv).await;

    let first = rvs(&server.apply_until(20), "Deployment");
    assert_eq!(
        next_events(&mut rx, first.len()).await,
        expect_applies("checkout", &first)
    );
    assert_eq!(server.expire_watches(), 1);
    assert_eq!(next_event(&mut rx).await, "Error 410");
    assert_eq!(
        next_events(&mut rx, 3).await,
        [
            "Init",
            &format!("InitApply checkout@{}", first[first.len() - 1]),
            "InitDone"
        ]
    );
    assert_eq!(server.list_count(DEPLOYMENTS), 2);
    let later = rvs(&server.apply_rest(), "Deployment");
    assert_eq!(
        next_events(&mut rx, later.len()).await,
        expect_applies("checkout", &later)
    );
}

#[tokio::test]
async fn streaming_list_and_label_selector_watch() {
    let (server, _) = oci_server(KubeApi::new()).await;
    let rs = ar("apps", "v1", "ReplicaSet", "replicasets");
    let api = Api::<DynamicObject>::all_with(server.client(), &rs);
    let config = watcher::Config::default()
        .streaming_lists()
        .labels("pod-template-hash=dzn2zkjcnf");
    let mut rx = spawn_watcher(api, config);
    // Nothing matches yet.
    assert_eq!(next_events(&mut rx, 2).await, ["Init", "InitDone"]);
    let plain_lists = server
        .requests()
        .iter()
        .filter(|r| r.path == "/apis/apps/v1/replicasets" && !r.watch)
        .count();
    assert_eq!(plain_lists, 0, "no plain LIST in streaming mode");
    assert_eq!(
        server.list_count("/apis/apps/v1/replicasets"),
        1,
        "the streaming list counts as the LIST"
    );
    let applied = server.apply_rest();
    let new_rs: Vec<u64> = applied
        .iter()
        .filter(|a| a.name == "checkout-dzn2zkjcnf")
        .map(|a| a.resource_version)
        .collect();
    assert_eq!(new_rs.len(), 6);
    assert_eq!(
        next_events(&mut rx, new_rs.len()).await,
        expect_applies("checkout-dzn2zkjcnf", &new_rs)
    );
}

type RawWatch = futures::stream::BoxStream<'static, kube::Result<WatchEvent<DynamicObject>>>;

async fn next_raw(stream: &mut RawWatch) -> Option<kube::Result<WatchEvent<DynamicObject>>> {
    timeout(STEP, stream.next())
        .await
        .expect("the watch sent nothing in time")
}

#[tokio::test]
async fn raw_watch_protocol() {
    let (server, deployment_rv) = oci_server(KubeApi::new().bookmark_interval(None)).await;
    let api = Api::<DynamicObject>::all_with(server.client(), &deployments());

    // From "0": the current state as ADDED, then live changes and bookmarks on request.
    let params = WatchParams::default().timeout(30);
    let mut stream = api.watch(&params, "0").await.unwrap().boxed();
    match next_raw(&mut stream).await {
        Some(Ok(WatchEvent::Added(o))) => assert_eq!(rv_of(&o), deployment_rv),
        other => panic!("expected ADDED, got {other:?}"),
    }
    let change = server.apply_until(14).pop().unwrap();
    assert_eq!(
        (change.kind.as_str(), change.event_type.as_str()),
        ("Deployment", "MODIFIED")
    );
    match next_raw(&mut stream).await {
        Some(Ok(WatchEvent::Modified(o))) => assert_eq!(rv_of(&o), change.resource_version),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    server.apply_next();
    assert_eq!(server.send_bookmarks(), 1);
    match next_raw(&mut stream).await {
        Some(Ok(WatchEvent::Bookmark(b))) => {
            assert_eq!(
                b.metadata.resource_version,
                server.resource_version().to_string()
            );
        }
        other => panic!("expected BOOKMARK, got {other:?}"),
    }
    server.drop_watches();
    assert!(next_raw(&mut stream).await.is_none(), "the stream ends");

    // From a compacted version: one ERROR 410, then the end.
    server.compact_to(change.resource_version);
    let old = (change.resource_version - 1).to_string();
    let mut stream = api.watch(&params, &old).await.unwrap().boxed();
    match next_raw(&mut stream).await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert_eq!(
                status.message,
                format!(
                    "too old resource version: {old} ({})",
                    change.resource_version
                )
            );
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    assert!(next_raw(&mut stream).await.is_none());

    // timeoutSeconds ends the stream.
    let short = WatchParams::default().timeout(1);
    let mut stream = api
        .watch(&short, &server.resource_version().to_string())
        .await
        .unwrap()
        .boxed();
    assert!(next_raw(&mut stream).await.is_none());
}

#[tokio::test]
async fn metadata_watcher_gets_partial_objects() {
    let (server, deployment_rv) = oci_server(KubeApi::new()).await;
    // kube 5: an `Api<PartialObjectMeta<K>>` asks for metadata only.
    let api = Api::<PartialObjectMeta<Deployment>>::all(server.client());
    let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match timeout(STEP, events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Event::Init => seen.push("Init".to_string()),
            Event::InitApply(m) => {
                seen.push(format!(
                    "{}@{}",
                    m.name_any(),
                    m.resource_version().unwrap()
                ));
                assert_eq!(m.types.unwrap().kind, "PartialObjectMetadata");
            }
            Event::InitDone => seen.push("InitDone".to_string()),
            Event::Apply(m) | Event::Delete(m) => panic!("unexpected change to {}", m.name_any()),
        }
    }
    assert_eq!(
        seen,
        ["Init", &format!("checkout@{deployment_rv}"), "InitDone"]
    );
}

#[tokio::test]
async fn typed_lists_of_deployments_replicasets_and_events() {
    let (server, _) = oci_server(KubeApi::new()).await;
    server.apply_rest();
    let client = server.client();

    let deployments = Api::<Deployment>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(deployments.items.len(), 1);
    let checkout = &deployments.items[0];
    let image = checkout
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("ghcr.io/acme/checkout:1.8.0"));
    assert_eq!(checkout.status.as_ref().unwrap().updated_replicas, Some(2));

    let replicasets = Api::<ReplicaSet>::namespaced(client.clone(), "shop")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(replicasets.items.len(), 3);

    let events = Api::<CoreEvent>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(events.items.len(), server.objects("Event").len());
    assert!(events.items.len() > 20);
    let flux_events = Api::<CoreEvent>::namespaced(client, "flux-system")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(flux_events
        .items
        .iter()
        .all(|e| e.metadata.namespace.as_deref() == Some("flux-system")));
    assert!(flux_events
        .items
        .iter()
        .any(|e| e.involved_object.kind.as_deref() == Some("Kustomization")));
}

#[tokio::test]
async fn writes_are_recorded_and_echoed() {
    let server = KubeApi::new().start().await;
    let events = Api::<CoreEvent>::namespaced(server.client(), "flux-system");
    let event: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "shop.fluxtrace1", "namespace": "flux-system"},
        "involvedObject": {"kind": "Kustomization", "name": "shop", "namespace": "flux-system"},
        "reason": "PromotionDelivered",
        "message": "rel-2041 delivered",
        "type": "Normal",
    }))
    .unwrap();
    let created = events.create(&PostParams::default(), &event).await.unwrap();
    assert_eq!(created.reason.as_deref(), Some("PromotionDelivered"));
    let patch = json!({"count": 2});
    events
        .patch(
            "shop.fluxtrace1",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();

    let writes = server.writes();
    assert_eq!(writes.len(), 2);
    assert_eq!(
        (writes[0].method.as_str(), writes[0].path.as_str()),
        ("POST", "/api/v1/namespaces/flux-system/events")
    );
    assert_eq!(writes[0].body["message"], "rel-2041 delivered");
    assert_eq!(
        (writes[1].method.as_str(), writes[1].path.as_str()),
        (
            "PATCH",
            "/api/v1/namespaces/flux-system/events/shop.fluxtrace1"
        )
    );
    assert_eq!(writes[1].body, patch);
    assert_eq!(
        writes[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert!(
        server.objects("Event").is_empty(),
        "writes are recorded, not stored"
    );
}

#[tokio::test]
async fn recording_cursor_and_other_lines() {
    let server = KubeApi::with_recording(OCI_SUCCESS).start().await;
    let others = server.others();
    let at: Vec<(usize, &str)> = others.iter().map(|l| (l.index, l.kind.as_str())).collect();
    assert_eq!(
        at,
        [
            (5, "promotion"),
            (9, "flux_event"),
            (15, "flux_event"),
            (53, "flux_event"),
            (57, "flux_event")
        ]
    );
    assert!(others[0].value["promotion"].is_object());
    assert_eq!(server.remaining(), 53);

    assert_eq!(server.apply_initial().len(), 5);
    assert!(server.apply_initial().is_empty(), "only once");
    assert!(
        server.apply_until(5).is_empty(),
        "nothing watch-like before the promotion"
    );
    let up_to_event = server.apply_until(others[1].index);
    assert_eq!(
        up_to_event
            .iter()
            .map(|a| a.index.unwrap())
            .collect::<Vec<_>>(),
        [6, 7, 8]
    );
    assert_eq!(up_to_event[2].kind, "Event");
    assert_eq!(server.apply_next().unwrap().index, Some(10));
    assert_eq!(server.apply_next_n(2).len(), 2);
    let through = server.apply_through_at("2026-11-26T10:00:07Z");
    assert_eq!(through.last().unwrap().index, Some(21));
    assert!(through
        .iter()
        .all(|a| a.at.as_deref() == Some("2026-11-26T10:00:07Z")));
    let rest = server.apply_rest();
    assert_eq!(rest.last().unwrap().index, Some(56));
    assert_eq!(server.remaining(), 0);
    assert!(server.apply_next().is_none());

    // One counter: every change got the next version.
    let all = [up_to_event, through, rest].concat();
    assert!(all
        .windows(2)
        .all(|w| w[0].resource_version < w[1].resource_version));
    assert_eq!(server.resource_version(), 53);
}
