//! The `Target` conformance suite against the real tmux and pty targets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mahavishnu_conformance::{Fixture, run_all};
use mahavishnu_core::{
    Capabilities, InputPart, LaunchSpec, Observation, Preflight, Result, ScreenOptions, Target,
    TargetKind, TargetName,
};
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

/// As `serve` runs it: its reads (list, screens) go through a control client of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmux_target_conforms_through_a_control_client() {
    let world = support::World::new();
    mahavishnu_terminal::tmux_control::start("tmux", &world.tmux_socket);
    let target = TmuxTarget::new(
        builtin(TargetKind::Tmux),
        "tmux",
        &world.tmux_socket,
        10_000,
        &world.runtime_dir(),
    );
    run_all(&fixture(Arc::new(target), &world, "tc")).await;
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
    run_all_and_clean_up(&fixture(Arc::new(target), &world, "pt")).await;
}

/// A target that can do less than a pty target: it hands launching, listing, screens, typing and
/// stopping to one, and leaves exec, logs, attach and recover to the trait's default methods. It
/// declares `claims`, which is honest only when exactly those four are false.
struct Partial {
    inner: PtyTarget,
    claims: Capabilities,
}

impl Partial {
    fn new(world: &support::World, claims: Capabilities) -> Partial {
        let name = TargetName::new("partial").unwrap();
        Partial {
            inner: PtyTarget::new(name, &world.runtime_dir(), support::binary(), 10_000),
            claims,
        }
    }

    /// What it really does.
    fn honest() -> Capabilities {
        Capabilities {
            screen: true,
            send: true,
            persistent: true,
            host_processes: true,
            ..Capabilities::default()
        }
    }
}

/// Implements `Target` for a wrapper of a pty target (`inner`, declaring `claims`) by handing it the
/// operations every target has, plus screens, typing and resizing, and any further methods given.
macro_rules! delegate_to_pty {
    ($wrapper:ty { $($more:item)* }) => {
        #[async_trait]
        impl Target for $wrapper {
            fn name(&self) -> &TargetName {
                self.inner.name()
            }

            fn kind(&self) -> TargetKind {
                self.inner.kind()
            }

            fn capabilities(&self) -> Capabilities {
                self.claims
            }

            fn location(&self) -> String {
                format!("a part of {}", self.inner.location())
            }

            async fn preflight(&self) -> Preflight {
                self.inner.preflight().await
            }

            async fn launch(&self, spec: &LaunchSpec) -> Result<Observation> {
                self.inner.launch(spec).await
            }

            async fn inspect(&self, native: &str) -> Result<Option<Observation>> {
                self.inner.inspect(native).await
            }

            async fn list(&self) -> Result<Vec<Observation>> {
                self.inner.list().await
            }

            async fn send(&self, native: &str, input: &[InputPart]) -> Result<()> {
                self.inner.send(native, input).await
            }

            async fn screen(&self, native: &str, options: ScreenOptions) -> Result<String> {
                self.inner.screen(native, options).await
            }

            async fn resize(&self, native: &str, rows: u16, cols: u16) -> Result<()> {
                self.inner.resize(native, rows, cols).await
            }

            async fn stop(&self, native: &str, grace: Duration) -> Result<()> {
                self.inner.stop(native, grace).await
            }

            $($more)*
        }
    };
}

delegate_to_pty!(Partial {});

/// A `Partial` that runs exec after all, while it does not declare it.
struct Overreaching {
    inner: PtyTarget,
    claims: Capabilities,
}

delegate_to_pty!(Overreaching {
    async fn exec(
        &self,
        native: &str,
        request: &mahavishnu_core::ExecRequest,
    ) -> Result<mahavishnu_core::ExecOutput> {
        self.inner.exec(native, request).await
    }
});

/// Runs the suite, then stops whatever it left running on the target (a failed check leaves its
/// instance behind), and fails as the suite did.
async fn run_all_and_clean_up(fixture: &Fixture) {
    use futures::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(run_all(fixture))
        .catch_unwind()
        .await;
    if let Ok(left) = fixture.target.list().await {
        for observation in left {
            if observation.native.starts_with(&fixture.prefix) {
                let _ = fixture
                    .target
                    .stop(&observation.native, Duration::from_millis(200))
                    .await;
            }
        }
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A target that declares only some capabilities passes: the others are refused as unsupported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_fewer_capabilities_conforms() {
    let world = support::World::new();
    let target = Partial::new(&world, Partial::honest());
    run_all_and_clean_up(&fixture(Arc::new(target), &world, "pa")).await;
}

/// The suite holds a target to what it declares: one that claims exec, which it leaves to the
/// default method, fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "exec: Unsupported")]
async fn a_target_that_claims_more_than_it_does_fails() {
    let world = support::World::new();
    let claims = Capabilities {
        exec: true,
        ..Partial::honest()
    };
    let target = Partial::new(&world, claims);
    run_all_and_clean_up(&fixture(Arc::new(target), &world, "px")).await;
}

/// The suite holds a target to what it does not declare too: one that runs exec without declaring it
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(expected = "exec is not declared, so it returns Error::Unsupported")]
async fn a_target_that_does_more_than_it_declares_fails() {
    let world = support::World::new();
    let Partial { inner, claims } = Partial::new(&world, Partial::honest());
    let target = Overreaching { inner, claims };
    run_all_and_clean_up(&fixture(Arc::new(target), &world, "po")).await;
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

/// Two kubernetes targets, `east` and `west`, each on its own cluster (a fake API server), run the
/// suite at the same time with the same namespace and the same instance names; no call of one
/// reaches the other's cluster.
#[cfg(feature = "kubernetes")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kubernetes_targets_conform_side_by_side() {
    use support::fake_kube::FakeKube;
    let world = support::World::new();
    let target = |name: &str, fake: &FakeKube| {
        let dir = world.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let settings = mahavishnu_core::config::KubernetesConfig {
            kubeconfig: Some(fake.kubeconfig(&dir, "dev")),
            image: Some("busybox:1.36".into()),
            startup_timeout_ms: 10_000,
            request_timeout_ms: 10_000,
            ..Default::default()
        };
        let name = TargetName::new(name).unwrap();
        let target: Arc<dyn Target> =
            Arc::new(mahavishnu_kube::KubernetesTarget::new(name, settings));
        target
    };
    let (east_fake, west_fake) = (FakeKube::start(), FakeKube::start());
    let east = fixture(target("east", &east_fake), &world, "dev/k8s");
    let west = fixture(target("west", &west_fake), &world, "dev/k8s");
    tokio::join!(run_all(&east), run_all(&west));

    // What each cluster was asked to create: the ids in the pods' launch specs.
    let created = |fake: &FakeKube| -> Vec<(String, String)> {
        fake.created_pods()
            .into_iter()
            .map(|(name, pod)| {
                let spec = pod["metadata"]["annotations"][mahavishnu_kube::SPEC_ANNOTATION]
                    .as_str()
                    .expect("every pod carries its launch spec");
                let spec: serde_json::Value = serde_json::from_str(spec).unwrap();
                (name, spec["id"].as_str().expect("an id").to_string())
            })
            .collect()
    };
    let (on_east, on_west) = (created(&east_fake), created(&west_fake));
    assert!(!on_east.is_empty(), "the suite made pods on east");
    for (name, id) in &on_east {
        assert_eq!(
            id,
            &format!("east:{name}"),
            "east's cluster holds only east's pods"
        );
    }
    for (name, id) in &on_west {
        assert_eq!(
            id,
            &format!("west:{name}"),
            "west's cluster holds only west's pods"
        );
    }
    let names = |created: &[(String, String)]| -> Vec<String> {
        let mut names: Vec<String> = created.iter().map(|(name, _)| name.clone()).collect();
        names.sort();
        names
    };
    assert_eq!(
        names(&on_east),
        names(&on_west),
        "both ran the same instances, each on its own cluster"
    );
    assert_eq!(
        east_fake.pod_names(),
        Vec::<String>::new(),
        "east stopped all of its pods"
    );
    assert_eq!(
        west_fake.pod_names(),
        Vec::<String>::new(),
        "west stopped all of its pods"
    );
}
