//! The Promotion CRD in deploy/ is the one the Rust types generate, and kubectl takes it.

use fluxtrace::resource::crd_yaml;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds/promotions.yaml");

#[test]
fn the_shipped_crd_matches_the_types() {
    let want = crd_yaml();
    if std::env::var_os("UPDATE_CRD").is_some() {
        std::fs::write(PATH, &want).expect("write the CRD");
    }
    let have = std::fs::read_to_string(PATH).expect("deploy/crds/promotions.yaml exists");
    assert_eq!(
        have, want,
        "deploy/crds/promotions.yaml has drifted from src/resource/; regenerate it with \
         UPDATE_CRD=1 cargo test --test crd and review the diff"
    );
    let crd: serde_json::Value = serde_yaml_ng::from_str(&have).expect("YAML");
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "promotions.fluxtrace.io");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert_eq!(
        schema["properties"]["spec"]["properties"]["environment"]["type"],
        "string"
    );
    let phases = schema["properties"]["status"]["properties"]["phase"]["enum"].to_string();
    for p in [
        "InProgress",
        "Succeeded",
        "Failed",
        "TimedOut",
        "Superseded",
        "NoChange",
    ] {
        assert!(phases.contains(p), "{p} in {phases}");
    }
}
