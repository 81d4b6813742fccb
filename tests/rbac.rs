//! The ClusterRole in deploy/ grants exactly what the code uses: nothing missing (the agent
//! would be forbidden), nothing more (least privilege): get, list and watch on every watched
//! kind, create and patch on core/v1 Events (the trace-link Events), and on fluxtrace's own
//! Promotions what the intake, the status writer and the pruning do; nothing else.

use std::collections::{BTreeMap, BTreeSet};

use fluxtrace::sources::kube::{cluster_role_yaml, WATCHED};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac/clusterrole.yaml");
const LEADER_ROLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/rbac/role-leader-election.yaml"
);

/// The election's Role: in the agent's namespace only, leases get, create and update, nothing
/// else; the file in deploy/ is what the code generates.
#[test]
fn the_leader_election_role_matches_what_the_code_uses() {
    let want = fluxtrace::leader::role_yaml();
    if std::env::var_os("UPDATE_RBAC").is_some() {
        std::fs::write(LEADER_ROLE, &want).expect("write the Role");
    }
    let have =
        std::fs::read_to_string(LEADER_ROLE).expect("deploy/rbac/role-leader-election.yaml exists");
    assert_eq!(
        have, want,
        "deploy/rbac/role-leader-election.yaml has drifted; regenerate it with \
         UPDATE_RBAC=1 cargo test --test rbac and review the diff"
    );
    assert!(
        want.contains("kind: Role\n"),
        "namespaced, never a ClusterRole"
    );
    let mut expected = Grants::new();
    expected.insert(
        ("coordination.k8s.io".to_string(), "leases".to_string()),
        set(&["get", "create", "update"]),
    );
    assert_eq!(grants(&want), expected);
}

#[test]
fn the_cluster_role_matches_what_the_code_uses() {
    let want = cluster_role_yaml();
    if std::env::var_os("UPDATE_RBAC").is_some() {
        std::fs::write(PATH, &want).expect("write the ClusterRole");
    }
    let have = std::fs::read_to_string(PATH).expect("deploy/rbac/clusterrole.yaml exists");
    assert_eq!(
        have, want,
        "deploy/rbac/clusterrole.yaml has drifted from what the code uses; \
         regenerate it with UPDATE_RBAC=1 cargo test --test rbac and review the diff"
    );
}

/// (API group, resource) → verbs, the union over the role's rules.
type Grants = BTreeMap<(String, String), BTreeSet<String>>;

/// Reads the rules of the generated role: `- apiGroups: [..]`, `resources: [..]`,
/// `verbs: [..]`, each list a JSON array.
fn grants(role: &str) -> Grants {
    let list = |line: &str, key: &str| -> Option<Vec<String>> {
        let rest = line
            .trim_start()
            .trim_start_matches("- ")
            .strip_prefix(key)?;
        Some(serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("{line}: {e}")))
    };
    let rules_at = role.find("\nrules:\n").expect("a rules: section") + "\nrules:\n".len();
    let mut out = Grants::new();
    let (mut groups, mut resources) = (None, None);
    for line in role[rules_at..].lines().filter(|l| !l.trim().is_empty()) {
        if let Some(g) = list(line, "apiGroups:") {
            assert!(line.trim_start().starts_with("- "), "a rule starts: {line}");
            groups = Some(g);
            resources = None;
        } else if let Some(r) = list(line, "resources:") {
            resources = Some(r);
        } else if let Some(verbs) = list(line, "verbs:") {
            let groups = groups.as_ref().expect("apiGroups before verbs");
            let resources = resources.as_ref().expect("resources before verbs");
            for g in groups {
                for r in resources {
                    out.entry((g.clone(), r.clone()))
                        .or_default()
                        .extend(verbs.iter().cloned());
                }
            }
        } else {
            panic!("unexpected line in a rule (only apiGroups, resources, verbs): {line}");
        }
    }
    out
}

fn set(verbs: &[&str]) -> BTreeSet<String> {
    verbs.iter().map(|v| v.to_string()).collect()
}

/// What the code uses: watch verbs on every watched kind; list on Pods (a failing rollout's);
/// create and patch on core Events.
fn used() -> Grants {
    let mut want = Grants::new();
    for w in WATCHED {
        want.entry((w.group.to_string(), w.plural.to_string()))
            .or_default()
            .extend(set(&["get", "list", "watch"]));
    }
    want.entry((String::new(), "events".to_string()))
        .or_default()
        .extend(set(&["create", "patch"]));
    want.entry((String::new(), "pods".to_string()))
        .or_default()
        .extend(set(&["list"]));
    want.entry(("fluxtrace.io".to_string(), "promotions".to_string()))
        .or_default()
        .extend(set(&["get", "list", "watch", "create", "delete"]));
    want.entry(("fluxtrace.io".to_string(), "promotions/status".to_string()))
        .or_default()
        .extend(set(&["get", "patch"]));
    want
}

#[test]
fn the_cluster_role_grants_exactly_what_the_code_uses() {
    let role = cluster_role_yaml();
    let have = grants(&role);
    let want = used();
    for (key, verbs) in &want {
        assert_eq!(
            have.get(key),
            Some(verbs),
            "{key:?}: the role must grant exactly {verbs:?}"
        );
    }
    for (key, verbs) in &have {
        assert!(
            want.contains_key(key),
            "{key:?} is granted ({verbs:?}) but the code does not use it"
        );
    }
    let writes: Vec<_> = have
        .iter()
        .filter(|(_, v)| !v.is_subset(&set(&["get", "list", "watch"])))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        writes,
        [
            (String::new(), "events".to_string()),
            ("fluxtrace.io".to_string(), "promotions".to_string()),
            ("fluxtrace.io".to_string(), "promotions/status".to_string()),
        ],
        "the only writes are core/v1 Events and fluxtrace's own Promotions"
    );
    assert!(!role.contains("secrets"), "Secrets are never read");
    assert!(!role.contains('*'), "no wildcards");
    // DaemonSets are followed like Deployments, read-only.
    for workload in ["deployments", "daemonsets"] {
        assert_eq!(
            have.get(&("apps".to_string(), workload.to_string())),
            Some(&set(&["get", "list", "watch"])),
            "{workload} are watched, never written"
        );
    }
}

/// The checks above catch a role that grants too much or too little.
#[test]
fn the_checks_catch_extra_and_missing_grants() {
    let role = cluster_role_yaml();
    let extra = role.replace(r#"["create", "patch"]"#, r#"["create", "patch", "delete"]"#);
    assert_ne!(grants(&extra), used());
    let missing = role.replace(r#"verbs: ["create", "patch"]"#, r#"verbs: ["create"]"#);
    assert_ne!(grants(&missing), used());
    let unwatched = role.replace(r#""buckets""#, r#""buckets", "secrets""#);
    assert_ne!(grants(&unwatched), used());
    let write_on_watched = role.replacen(
        r#"verbs: ["get", "list", "watch"]"#,
        r#"verbs: ["get", "list", "watch", "update"]"#,
        1,
    );
    assert_ne!(grants(&write_on_watched), used());
    assert_eq!(grants(&role), used());
}
