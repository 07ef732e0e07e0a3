//! Benchmark of deployments on Kubernetes against the fake API server of the tests (no real cluster
//! runs on these machines), driving the release binary as a user would.
//!
//! `cargo bench -p mahavishnu --bench kube_deploy`: prints medians, the fake's own delays, and the
//! API calls `deploy status` makes.

mod common;
#[allow(dead_code)]
#[path = "../tests/support/fake_kube.rs"]
mod fake_kube;

use common::report;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class App(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), App).serve_forever()
"#;

fn mahavishnu(home: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_mahavishnu"))
        .args(args)
        .current_dir(home.join("work"))
        .env("MAHAVISHNU_STATE_DIR", home.join("state"))
        .env("MAHAVISHNU_RUNTIME_DIR", home.join("run"))
        .env("MAHAVISHNU_CONFIG", home.join("config.toml"))
        .env("HOME", home)
        .output()
        .expect("run mahavishnu");
    assert!(
        output.status.success(),
        "mahavishnu {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A home with a kubernetes target `bench` on `fake` (namespace `shop`, a Gateway when asked) and a
/// manifest.
fn make_home(fake: &fake_kube::FakeKube, manifest: &str, gateway: bool) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let work = home.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("app.py"), APP).unwrap();
    std::fs::write(work.join("mahavishnu.deploy.toml"), manifest).unwrap();
    fake.add_image("bench.test/app:1", &["python3", "app.py"], &work);
    fake.add_image("bench.test/job:1", &["true"], &work);
    let kubeconfig = fake.kubeconfig(home.path(), "shop");
    let mut config = format!(
        "[targets.bench]\nkind = \"kubernetes\"\nkubeconfig = {:?}\n",
        kubeconfig.display().to_string()
    );
    if gateway {
        let file = home.path().join("gateway.yaml");
        std::fs::write(&file, fake.gateway_manifest("infra", "public", "apps.test")).unwrap();
        let status = Command::new("kubectl")
            .args(["--server", &fake.url(), "--token", "t", "apply", "-f"])
            .arg(&file)
            .env("KUBECONFIG", "/dev/null")
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
        config.push_str("gateway = \"infra/public\"\n");
    }
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    home
}

const SANDCASTLE: &str = r#"
[sandcastle]
name = "shop"
platform = "kubernetes"
[platforms.kubernetes]
regions = ["bench"]
[services.migrate]
kind = "job"
image = "bench.test/job:1"
[services.api]
image = "bench.test/app:1"
ingress = "internal"
needs = ["migrate"]
health = { path = "/healthz" }
[services.worker]
kind = "worker"
image = "bench.test/app:1"
needs = ["migrate"]
[services.web]
image = "bench.test/app:1"
needs = ["api"]
health = { path = "/healthz" }
scale = { min = 1, max = 4 }
"#;

fn main() {
    println!(
        "machine: {} cores; the fake's delays: scheduling {} ms, controllers 20 ms, readiness probes every 200 ms",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fake_kube::SCHEDULING_DELAY.as_millis()
    );

    // The sandcastle (a job, then an internal API and a worker, then a public web front with an HPA
    // on the Gateway) to one cluster, from nothing, until every revision is ready and released.
    let fake = fake_kube::FakeKube::start();
    let home = make_home(&fake, SANDCASTLE, true);
    let mut applies = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        mahavishnu(home.path(), &["deploy", "apply"]);
        applies.push(started.elapsed());
        mahavishnu(home.path(), &["deploy", "destroy"]);
    }
    report(
        "apply the sandcastle to one cluster (3 waves)",
        applies,
        Duration::from_secs(1),
    );
    // The same apply again, with nothing to change: what observing and planning cost.
    mahavishnu(home.path(), &["deploy", "apply"]);
    let noops: Vec<Duration> = (0..10)
        .map(|_| {
            let started = Instant::now();
            mahavishnu(home.path(), &["deploy", "apply"]);
            started.elapsed()
        })
        .collect();
    report(
        "apply with nothing to change",
        noops,
        Duration::from_millis(300),
    );

    // `deploy status` of 20 services: one list call per kind, whatever the count.
    let fake = fake_kube::FakeKube::start();
    let mut manifest = String::from(
        "[sandcastle]\nname = \"shop\"\nplatform = \"kubernetes\"\n[platforms.kubernetes]\nregions = [\"bench\"]\n",
    );
    for n in 0..20 {
        manifest.push_str(&format!(
            "[services.s{n:02}]\nimage = \"bench.test/app:1\"\nhealth = {{ path = \"/healthz\" }}\n"
        ));
    }
    let home = make_home(&fake, &manifest, false);
    mahavishnu(home.path(), &["deploy", "apply"]);
    fake.clear_calls();
    mahavishnu(home.path(), &["deploy", "status", "--output", "json"]);
    let calls = fake.calls();
    println!(
        "deploy status of 20 services: {} API calls: {}",
        calls.len(),
        calls
            .iter()
            .map(|(method, path)| format!("{method} {}", path.split('?').next().unwrap_or(path)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let statuses: Vec<Duration> = (0..20)
        .map(|_| {
            let started = Instant::now();
            mahavishnu(home.path(), &["deploy", "status", "--output", "json"]);
            started.elapsed()
        })
        .collect();
    report(
        "deploy status of 20 services (CLI, new process)",
        statuses,
        Duration::from_millis(100),
    );
    let spawn: Vec<Duration> = (0..20)
        .map(|_| {
            let started = Instant::now();
            mahavishnu(home.path(), &["--version"]);
            started.elapsed()
        })
        .collect();
    report(
        "mahavishnu --version (process start-up)",
        spawn,
        Duration::from_millis(20),
    );
    mahavishnu(home.path(), &["deploy", "destroy"]);
}
