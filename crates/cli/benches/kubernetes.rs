//! Benchmark of the kubernetes target against the fake API server of the tests (no real cluster runs on
//! these machines), driving the release binary as a user would.
//!
//! `cargo bench -p mahavishnu --bench kubernetes`: prints medians, with the fake's own scheduling delay.

mod common;
#[allow(dead_code)]
#[path = "../tests/support/fake_kube.rs"]
mod fake_kube;

use common::report;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn mahavishnu(home: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_mahavishnu"))
        .args(args)
        .env("MAHAVISHNU_STATE_DIR", home.join("state"))
        .env("MAHAVISHNU_RUNTIME_DIR", home.join("run"))
        .env("MAHAVISHNU_CONFIG", home.join("config.toml"))
        .output()
        .expect("run mahavishnu");
    assert!(
        output.status.success(),
        "mahavishnu {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn main() {
    let fake = fake_kube::FakeKube::start();
    let home = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(home.path(), "bench");
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "[targets.kubernetes]\nkubeconfig = {:?}\nimage = \"busybox:1.36\"\n",
            kubeconfig.display().to_string()
        ),
    )
    .unwrap();
    let home = home.path();
    println!(
        "machine: {} cores; fake scheduling delay {} ms",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fake_kube::SCHEDULING_DELAY.as_millis()
    );

    let spawn: Vec<Duration> = (0..30)
        .map(|_| {
            let started = Instant::now();
            Command::new("/bin/true").status().unwrap();
            started.elapsed()
        })
        .collect();
    report(
        "spawn baseline (/bin/true)",
        spawn,
        Duration::from_millis(5),
    );

    let mut launches = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let ids = mahavishnu(
            home,
            &[
                "terminal",
                "launch",
                "shell",
                "--target",
                "kubernetes",
                "--count",
                "20",
            ],
        );
        launches.push(started.elapsed());
        assert_eq!(ids.lines().count(), 20);
        mahavishnu(home, &["terminal", "close", "--all", "--grace", "0"]);
    }
    report(
        "launch 20 pods until running (CLI)",
        launches,
        Duration::from_secs(1) + fake_kube::SCHEDULING_DELAY,
    );

    let id = mahavishnu(
        home,
        &["terminal", "launch", "shell", "--target", "kubernetes"],
    )
    .trim()
    .to_string();
    let execs: Vec<Duration> = (0..30)
        .map(|_| {
            let started = Instant::now();
            mahavishnu(home, &["terminal", "exec", &id, "--", "true"]);
            started.elapsed()
        })
        .collect();
    report(
        "exec `true` round trip (CLI, new process)",
        execs,
        Duration::from_millis(30),
    );

    // The same through one long-lived client, as `mahavishnu serve` holds it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let settings = mahavishnu_core::config::KubernetesConfig {
        kubeconfig: Some(kubeconfig.clone()),
        request_timeout_ms: 30_000,
        ..Default::default()
    };
    let target = mahavishnu_kube::KubernetesTarget::new(
        mahavishnu_core::TargetName::builtin(mahavishnu_core::TargetKind::Kubernetes),
        settings,
    );
    let native = id.trim_start_matches("k8s:").to_string();
    let request = mahavishnu_core::ExecRequest {
        command: vec!["true".into()],
        timeout: Duration::from_secs(10),
    };
    let in_process: Vec<Duration> = runtime.block_on(async {
        use mahavishnu_core::Target;
        target.exec(&native, &request).await.unwrap();
        let mut samples = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            let output = target.exec(&native, &request).await.unwrap();
            samples.push(started.elapsed());
            assert_eq!(output.exit_code, Some(0));
        }
        samples
    });
    report(
        "exec `true` round trip (one client)",
        in_process,
        Duration::from_millis(30),
    );
    mahavishnu(home, &["terminal", "close", "--all", "--grace", "0"]);
}
