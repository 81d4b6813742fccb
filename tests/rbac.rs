//! The ClusterRole in deploy/ grants exactly what the code watches: nothing missing (the agent
//! would be forbidden), nothing more (read-only, least privilege).

use fluxtrace::sources::kube::{cluster_role_yaml, WATCHED};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac/clusterrole.yaml");

#[test]
fn the_cluster_role_matches_what_the_code_watches() {
    let want = cluster_role_yaml();
    if std::env::var_os("UPDATE_RBAC").is_some() {
        std::fs::write(PATH, &want).expect("write the ClusterRole");
    }
    let have = std::fs::read_to_string(PATH).expect("deploy/rbac/clusterrole.yaml exists");
    assert_eq!(
        have, want,
        "deploy/rbac/clusterrole.yaml has drifted from the kinds the code watches; \
         regenerate it with UPDATE_RBAC=1 cargo test --test rbac and review the diff"
    );
}

#[test]
fn the_cluster_role_is_read_only_and_names_every_watched_kind() {
    let role = cluster_role_yaml();
    for w in WATCHED {
        assert!(
            role.contains(&format!("\"{}\"", w.plural)),
            "{} not granted",
            w.plural
        );
    }
    let verbs: Vec<&str> = role
        .lines()
        .filter(|l| l.trim_start().starts_with("verbs:"))
        .collect();
    assert!(!verbs.is_empty());
    for v in verbs {
        assert_eq!(v.trim(), r#"verbs: ["get", "list", "watch"]"#);
    }
    assert!(!role.contains("secrets"), "Secrets are never read");
    assert!(!role.contains('*'), "no wildcards");
}
