//! The `Target` conformance suite against the real tmux and pty targets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use mahavishnu_conformance::{Fixture, run_all};
use mahavishnu_terminal::{PtyTarget, TmuxTarget};

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
    let target = TmuxTarget::new("tmux", &world.tmux_socket, 10_000, &world.runtime_dir());
    run_all(&fixture(Arc::new(target), &world, "tm")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_target_conforms() {
    let world = support::World::new();
    let target = PtyTarget::new(&world.runtime_dir(), support::binary(), 10_000);
    run_all(&fixture(Arc::new(target), &world, "pt")).await;
}
