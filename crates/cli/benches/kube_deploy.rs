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
        .env("SHOP_SESSION_KEY", "bench-session-key")
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

/// Copies `examples/sandcastle` into the home's work directory, each service with an image that runs
/// its command in the fake, and its topics on `emulator`.
fn sandcastle_example(fake: &fake_kube::FakeKube, home: &Path, emulator: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sandcastle");
    let work = home.join("work");
    for entry in std::fs::read_dir(&source).unwrap().flatten() {
        std::fs::copy(entry.path(), work.join(entry.file_name())).unwrap();
    }
    let text = std::fs::read_to_string(work.join("mahavishnu.deploy.toml")).unwrap();
    let mut manifest = String::new();
    let mut service = String::new();
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("[services.")
            .and_then(|l| l.strip_suffix(']'))
        {
            service = name.to_string();
        }
        manifest.push_str(line);
        manifest.push('\n');
        if let Some(run) = line.strip_prefix("run = ") {
            let run: String = serde_json::from_str(run).unwrap();
            let image = format!("bench.test/{service}:1");
            fake.add_image(&image, &run.split_whitespace().collect::<Vec<_>>(), &work);
            manifest.push_str(&format!("image = \"{image}\"\n"));
        }
    }
    manifest.push_str("\n[platforms.kubernetes]\nregions = [\"bench\"]\n");
    std::fs::write(work.join("mahavishnu.deploy.toml"), manifest).unwrap();
    let config = home.join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("pubsub_endpoint = \"{emulator}\"\n"));
    std::fs::write(config, text).unwrap();
}

/// How long the fake itself takes to make a Deployment ready, from the moment it is stored: its
/// controller, its scheduler, the process start and the probes (a startup probe, then a readiness
/// probe, each every 200 ms). The clock starts once `kubectl apply` has returned, so this is a little
/// less than the fake's real share, never more.
fn fake_floor(fake: &fake_kube::FakeKube, home: &Path, n: usize) -> Duration {
    let file = home.join(format!("floor-{n}.yaml"));
    let probe = "httpGet: {path: /healthz, port: http}\n            periodSeconds: 1";
    std::fs::write(
        &file,
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: floor-{n}, namespace: floor}}\n\
             spec:\n  selector: {{matchLabels: {{app: floor-{n}}}}}\n  template:\n    metadata: \
             {{labels: {{app: floor-{n}}}}}\n    spec:\n      containers:\n      - name: app\n        \
             image: bench.test/app:1\n        ports: [{{name: http, containerPort: 8080}}]\n        \
             startupProbe:\n            {probe}\n        readinessProbe:\n            {probe}\n"
        ),
    )
    .unwrap();
    let output = Command::new("kubectl")
        .args(["--server", &fake.url(), "--token", "t", "apply", "-f"])
        .arg(&file)
        .env("KUBECONFIG", "/dev/null")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let started = Instant::now();
    let name = format!("floor-{n}");
    while !fake.objects("deployments").iter().any(|d| {
        d["metadata"]["name"] == name.as_str() && d["status"]["readyReplicas"].as_i64() == Some(1)
    }) {
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}

fn main() {
    println!(
        "machine: {} cores; the fake's delays: scheduling {} ms, controllers 20 ms, readiness probes every 200 ms",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        fake_kube::SCHEDULING_DELAY.as_millis()
    );

    // The sandcastle example (a migration job; internal webhooks; a worker fed by a topic; a public
    // web front with a secret, on the Gateway) to one cluster, from nothing, until every revision is
    // ready and released.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = fake_kube::FakeKube::start();
    let home = make_home(&fake, "", true);
    let pubsub = home.path().join("pubsub");
    let emulator = runtime
        .block_on(mahavishnu_pubsub::Emulator::ensure(&pubsub))
        .expect("the Pub/Sub emulator");
    sandcastle_example(&fake, home.path(), &emulator.endpoint);
    // The budget is 1 s beyond what the fake itself takes: two waves of Deployments (a job and
    // webhooks, then web and worker), each as long as the fake makes one Deployment ready.
    let floors: Vec<Duration> = (0..5).map(|n| fake_floor(&fake, home.path(), n)).collect();
    let floor = common::median(floors.clone());
    report(
        "the fake alone: one Deployment ready",
        floors,
        Duration::from_secs(1),
    );
    let mut applies = Vec::new();
    let mut outside = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let text = mahavishnu(
            home.path(),
            &[
                "--output",
                "json",
                "deploy",
                "apply",
                "--platform",
                "kubernetes",
            ],
        );
        let wall = started.elapsed();
        applies.push(wall);
        // Each service's seconds cover its deploy, the wait for the fake to run it, and its
        // release; the waves' slowest services lie one after the other. What is left is the
        // apply's own: start-up, observing, planning, the journal.
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        let seconds = |name: &str| {
            report["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["service"] == name)
                .and_then(|s| s["seconds"].as_f64())
                .unwrap_or(0.0)
        };
        let path =
            seconds("migrate").max(seconds("webhooks")) + seconds("web").max(seconds("worker"));
        outside.push(wall.saturating_sub(Duration::from_secs_f64(path)));
        mahavishnu(
            home.path(),
            &["deploy", "destroy", "--platform", "kubernetes"],
        );
    }
    let applies_copy = applies.clone();
    report(
        "apply the sandcastle example to one cluster",
        applies,
        Duration::from_secs(1) + 2 * floor,
    );
    report(
        "  of which outside the services' deploy-and-wait",
        outside,
        Duration::from_millis(300),
    );
    let applied = common::median(applies_copy);
    println!(
        "  beyond the fake's two waves (2 x {:.0} ms): {:.0} ms",
        floor.as_secs_f64() * 1000.0,
        (applied.as_secs_f64() - 2.0 * floor.as_secs_f64()) * 1000.0
    );
    // The same apply again, with nothing to change: what observing and planning cost.
    mahavishnu(
        home.path(),
        &["deploy", "apply", "--platform", "kubernetes"],
    );
    let noops: Vec<Duration> = (0..10)
        .map(|_| {
            let started = Instant::now();
            mahavishnu(
                home.path(),
                &["deploy", "apply", "--platform", "kubernetes"],
            );
            started.elapsed()
        })
        .collect();
    report(
        "apply with nothing to change",
        noops,
        Duration::from_millis(300),
    );
    mahavishnu(
        home.path(),
        &["deploy", "destroy", "--platform", "kubernetes"],
    );
    let _ = mahavishnu_pubsub::Emulator::stop(&pubsub);

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
