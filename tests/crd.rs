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

/// The Promotions in deploy/examples are reports the agent accepts (placeholders filled in).
#[test]
fn the_example_promotions_are_valid_reports() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/promotion");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("deploy/examples/promotion") {
        let path = entry.expect("a file").path();
        let text = std::fs::read_to_string(&path)
            .expect("readable")
            .replace("RUN_ID", "8812345-1")
            .replace("COMMIT", "450796ddb2ab6724ee1cc32a4be56da032d1cca0");
        let obj: serde_json::Value = serde_yaml_ng::from_str(&text).expect("YAML");
        assert_eq!(obj["apiVersion"], "fluxtrace.io/v1alpha1", "{path:?}");
        assert_eq!(obj["kind"], "Promotion", "{path:?}");
        let name = obj["metadata"]["name"].as_str().expect("a name");
        let report = fluxtrace::resource::to_report(&obj["spec"], name, None)
            .unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!(report.environment, "prod");
        seen += 1;
    }
    assert_eq!(seen, 2);
}
