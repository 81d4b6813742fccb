//! The Helm chart installed for real into the test bed (tests/testbed/): `helm install` with a
//! release and a namespace of its own is accepted whole by the API server (the CRD already there
//! is kept; RBAC, PDB, NetworkPolicy, Service, Deployment created), the real Deployment controller
//! rolls the Deployment out (its Pods are played by kwok: no container runs in the test bed), and
//! the agent binary, run as the chart's ServiceAccount with only the chart's ClusterRole and
//! leader-election Role, becomes ready and takes its Lease. `helm uninstall` then removes what it
//! installed.
//!
//! Needs the test bed up and `helm` (`$HELM`, as .ci/run sets it); otherwise SKIPPED (and a
//! failure under `FLUXTRACE_REQUIRE_TOOLS=1`).

use std::process::Command;
use std::time::Duration;

use fluxtrace_testkit::testbed::{wait_for, Testbed};
use fluxtrace_testkit::tools;

const BIN: &str = env!("CARGO_BIN_EXE_fluxtrace");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/fluxtrace");
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn helm(bed: &Testbed, helm: &std::ffi::OsStr, args: &[&str]) -> String {
    let o = Command::new(helm)
        .args(args)
        .args(["--kubeconfig", bed.get("KUBECONFIG")])
        .output()
        .expect("helm runs");
    assert!(
        o.status.success(),
        "helm {args:?}:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn helm_install_into_the_test_bed_and_the_agent_becomes_ready_as_the_charts_service_account() {
    let test =
        "helm_install_into_the_test_bed_and_the_agent_becomes_ready_as_the_charts_service_account";
    let Some(bed) = Testbed::find(test) else {
        return;
    };
    let Some(helm_bin) = tools::testbed_tool(test, "helm", "HELM", &["version"]) else {
        return;
    };
    let release = "e2e-helm";
    // What an earlier run left: its release (cluster-scoped objects too), then its namespace.
    let _ = Command::new(&helm_bin)
        .args([
            "uninstall",
            release,
            "-n",
            "e2e-helm",
            "--kubeconfig",
            bed.get("KUBECONFIG"),
        ])
        .output();
    let ns = bed.namespace("e2e-helm");
    for (secret, key) in [("fluxtrace-tokens", "tokens"), ("fluxtrace-hmac", "token")] {
        bed.kubectl(&[
            "-n",
            &ns,
            "create",
            "secret",
            "generic",
            secret,
            &format!("--from-literal={key}=e2e-{secret}"),
        ]);
    }

    let installed = helm(
        &bed,
        &helm_bin,
        &[
            "install",
            release,
            CHART,
            "-n",
            &ns,
            "--set",
            "clusterName=e2e",
            "--set",
            &format!("otlp.endpoint={}", bed.get("TESTBED_OTELCOL_OTLP_GRPC")),
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
        ],
    );
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    let name = "e2e-helm-fluxtrace";
    for (kind, namespace) in [
        ("serviceaccount", ns.as_str()),
        ("clusterrole", ""),
        ("clusterrolebinding", ""),
        ("role", &ns),
        ("rolebinding", &ns),
        ("service", &ns),
        ("networkpolicy", &ns),
        ("poddisruptionbudget", &ns),
        ("deployment", &ns),
    ] {
        let object_name = match kind {
            "role" | "rolebinding" => format!("{name}-leader-election"),
            "networkpolicy" => format!("{name}-intake"),
            _ => name.to_string(),
        };
        assert!(
            bed.object(kind, namespace, &object_name).is_some(),
            "{kind} {object_name} installed"
        );
    }
    assert!(
        bed.object("customresourcedefinition", "", "promotions.fluxtrace.io")
            .is_some(),
        "the Promotion CRD is there"
    );

    // The Deployment controller rolls it out; kwok plays the Pods.
    wait_for(
        "the chart's Deployment available 2/2",
        Duration::from_secs(90),
        || {
            bed.object("deployment", &ns, name).is_some_and(|d| {
                d["status"]["availableReplicas"].as_u64() == Some(2)
                    && d["status"]["updatedReplicas"].as_u64() == Some(2)
            })
        },
    );
    let d = bed.object("deployment", &ns, name).expect("the Deployment");
    let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or("");
    assert_eq!(image, format!("ghcr.io/fluxtrace/fluxtrace:{VERSION}"));

    // The agent as the chart's ServiceAccount, with its Lease where the chart's Role allows it.
    let kubeconfig = bed.service_account_kubeconfig(&ns, name);
    let mut agent = bed.agent(
        BIN,
        &ns,
        Some(&kubeconfig),
        &[
            "--lease-namespace",
            &ns,
            "--lease-duration",
            "6s",
            "--lease-renew-deadline",
            "4s",
            "--lease-retry-period",
            "1s",
        ],
    );
    // Ready (bed.agent waited for /readyz); the leader holds the Lease the chart's Role covers.
    wait_for("the agent takes its Lease", Duration::from_secs(30), || {
        bed.object("lease", &ns, "fluxtrace").is_some_and(|l| {
            l["spec"]["holderIdentity"]
                .as_str()
                .is_some_and(|h| !h.is_empty())
        })
    });
    agent.stop();
    let log = agent.log();
    assert!(
        log.contains(&format!("version=\"{}", fluxtrace::config::LONG_VERSION)),
        "the agent logs its version and the Promotion API it serves:\n{log}"
    );
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "nothing the agent does is forbidden to the chart's ServiceAccount:\n{log}"
    );
    let _ = std::fs::remove_file(&kubeconfig);

    let removed = helm(&bed, &helm_bin, &["uninstall", release, "-n", &ns]);
    assert!(removed.contains("uninstalled"), "{removed}");
    assert!(
        bed.object("clusterrole", "", name).is_none(),
        "the ClusterRole is removed"
    );
    let _ = bed.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
