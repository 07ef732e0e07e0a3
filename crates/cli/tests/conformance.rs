//! The `Target` conformance suite against the real tmux and pty targets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mahavishnu_conformance::{Fixture, run_all};
use mahavishnu_core::{TargetKind, TargetName};
use mahavishnu_terminal::{PtyTarget, TmuxTarget};

fn builtin(kind: TargetKind) -> TargetName {
    TargetName::builtin(kind)
}

fn fixture(
    target: Arc<dyn mahavishnu_core::Target>,
    world: &support::World,
    prefix: &str,
) -> Fixture {
    Fixture {
        target,
        shell: "/bin/sh".into(),
        cwd: std::fs::canonicalize(world.work()).unwrap(),
        prefix: prefix.into(),
        patience: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmux_target_conforms() {
    let world = support::World::new();
    let target = TmuxTarget::new(
        builtin(TargetKind::Tmux),
        "tmux",
        &world.tmux_socket,
        10_000,
        &world.runtime_dir(),
    );
    run_all(&fixture(Arc::new(target), &world, "tm")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_target_conforms() {
    let world = support::World::new();
    let target = PtyTarget::new(
        builtin(TargetKind::Pty),
        &world.runtime_dir(),
        support::binary(),
        10_000,
    );
    run_all(&fixture(Arc::new(target), &world, "pt")).await;
}

/// The kubernetes target against the fake API server of the tests (no real cluster runs here).
#[cfg(feature = "kubernetes")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_target_conforms_against_the_fake_api_server() {
    let world = support::World::new();
    let fake = support::fake_kube::FakeKube::start();
    let settings = mahavishnu_core::config::KubernetesConfig {
        kubeconfig: Some(fake.kubeconfig(world.dir.path(), "dev")),
        image: Some("busybox:1.36".into()),
        startup_timeout_ms: 10_000,
        request_timeout_ms: 10_000,
        ..Default::default()
    };
    let target = mahavishnu_kube::KubernetesTarget::new(builtin(TargetKind::Kubernetes), settings);
    assert_eq!(
        target.namespace(),
        "dev",
        "the namespace comes from the kubeconfig context"
    );
    run_all(&fixture(Arc::new(target), &world, "dev/k8s")).await;
}
