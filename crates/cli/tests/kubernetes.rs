//! The kubernetes target end to end, against the fake API server of the tests (no real cluster runs on
//! these machines), and the fake's honesty checked with the real kubectl.

#![cfg(feature = "kubernetes")]

mod support;

use std::process::Command;

use support::World;
use support::fake_kube::FakeKube;

/// A world whose kubernetes target talks to `fake`, in namespace `dev`, with a default image.
fn kube_world(fake: &FakeKube) -> World {
    let world = World::new();
    let kubeconfig = fake.kubeconfig(world.dir.path(), "dev");
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!(
            "[targets.kubernetes]\nkubeconfig = {:?}\nimage = \"busybox:1.36\"\nstartup_timeout_ms = 10000\n",
            kubeconfig.display().to_string()
        ),
    )
    .unwrap();
    world
}

fn kubectl(fake: &FakeKube, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .arg("--server")
        .arg(fake.url())
        .args(["--token", "fake-token", "--insecure-skip-tls-verify=false"])
        .args(args)
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("run kubectl")
}

/// kubectl, the reference client, accepts the fake: it lists Mahavishnu's pods and execs in them.
#[test]
fn kubectl_lists_and_execs_against_the_fake() {
    let fake = FakeKube::start();
    let world = kube_world(&fake);
    let id = world
        .launch(&["shell", "--target", "kubernetes", "--name", "probe"])
        .remove(0);
    assert_eq!(id, "k8s:dev/probe");

    let listed = kubectl(&fake, &["get", "pods", "-n", "dev", "-l", "app.kubernetes.io/managed-by=mahavishnu"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && stdout.contains("probe"),
        "kubectl get pods:\n{stdout}\n{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let exec = kubectl(&fake, &["exec", "-n", "dev", "probe", "--", "sh", "-c", "echo from-kubectl; exit 3"]);
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout),
        "from-kubectl\n",
        "kubectl exec: {}",
        String::from_utf8_lossy(&exec.stderr)
    );
    assert_eq!(
        exec.status.code(),
        Some(3),
        "kubectl passes the exit code on: {}",
        String::from_utf8_lossy(&exec.stderr)
    );
    let json = kubectl(&fake, &["get", "pod", "probe", "-n", "dev", "-o", "json"]);
    let pod: serde_json::Value = serde_json::from_slice(&json.stdout).expect("kubectl -o json");
    assert_eq!(pod["status"]["phase"], "Running");
    assert!(pod["metadata"]["uid"].as_str().is_some_and(|uid| !uid.is_empty()));
    world.ok(&["terminal", "close", &id]);
    assert!(fake.pod_names().is_empty(), "close deleted the pod");
}
