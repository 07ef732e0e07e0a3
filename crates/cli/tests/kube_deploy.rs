//! Deployments on Kubernetes, end to end: the real binary against the fake API server of the tests
//! (`support/fake_kube`, a fake because no cluster runs on these machines), whose pods are real local
//! processes reached over real HTTP through the fake's Services and Gateway, and checked with the
//! real kubectl.

#![cfg(feature = "kubernetes")]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::fake_kube::FakeKube;
use support::{APP, World, deployed, get_with, weights};

const IMAGE: &str = "example.test/shop/app:1";
const DOMAIN: &str = "apps.test";

/// The real kubectl against `fake`.
fn kubectl(fake: &FakeKube, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .arg("--server")
        .arg(fake.url())
        .args(["--token", "fake-token"])
        .args(args)
        .env("KUBECONFIG", "/dev/null")
        .output()
        .expect("run kubectl")
}

fn kubectl_ok(fake: &FakeKube, args: &[&str]) -> String {
    let output = kubectl(fake, args);
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A Gateway `infra/public` whose listener is the fake's data plane, for `*.apps.test`.
fn add_gateway(fake: &FakeKube, dir: &Path) {
    let file = dir.join(format!("gateway-{}.yaml", fake.port));
    std::fs::write(&file, fake.gateway_manifest("infra", "public", DOMAIN)).unwrap();
    kubectl_ok(fake, &["apply", "-f", file.to_str().unwrap()]);
}

/// One cluster of a world: its fake and its target's name.
struct Cluster {
    name: &'static str,
    fake: FakeKube,
    gateway: bool,
}

/// A world with the app, the manifest, and one kubernetes target per cluster (namespace `shop`).
/// The fakes come first: dropped after the world, they still answer while the world stops what runs.
fn kube_world(manifest: &str, clusters: &[(&'static str, bool)]) -> (Vec<Cluster>, World) {
    let clusters: Vec<Cluster> = clusters
        .iter()
        .map(|(name, gateway)| Cluster {
            name,
            fake: FakeKube::start(),
            gateway: *gateway,
        })
        .collect();
    let world = World::new();
    std::fs::write(world.work().join("app.py"), APP).unwrap();
    set_manifest(&world, manifest);
    let mut config = String::new();
    for cluster in &clusters {
        cluster
            .fake
            .add_image(IMAGE, &["python3", "app.py"], &world.work());
        cluster.fake.add_image(
            "example.test/shop/migrate:1",
            &["sh", "-c", "echo migrated"],
            &world.work(),
        );
        let dir = world.dir.path().join(cluster.name);
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = cluster.fake.kubeconfig(&dir, "shop");
        config.push_str(&format!(
            "[targets.{}]\nkind = \"kubernetes\"\nkubeconfig = {:?}\n",
            cluster.name,
            kubeconfig.display().to_string()
        ));
        if cluster.gateway {
            add_gateway(&cluster.fake, &dir);
            config.push_str("gateway = \"infra/public\"\n");
        }
    }
    std::fs::write(world.dir.path().join("home/config.toml"), config).unwrap();
    (clusters, world)
}

fn set_manifest(world: &World, manifest: &str) {
    std::fs::write(world.work().join("mahavishnu.deploy.toml"), manifest).unwrap();
}

/// `mahavishnu --output json deploy ARGS`, which must succeed.
fn deploy(world: &World, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json", "deploy"];
    all.extend(args);
    let output = world
        .command(&all)
        .env("SHOP_SESSION_KEY", "s3cret-session")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "deploy {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A GET through the cluster's Gateway, to a public service's host.
fn through_gateway(fake: &FakeKube, service: &str, path: &str) -> (u16, String) {
    let (status, _, body) = get_with(
        &format!("http://127.0.0.1:{}{path}", fake.gateway_port()),
        &format!("Host: {service}-shop.{DOMAIN}\r\n"),
    )
    .unwrap();
    (status, body)
}

fn named<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {objects:#?}"))
}

fn names(objects: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The revision of `service` that serves, from `deploy status`.
fn serving(world: &World, region: &str, service: &str) -> String {
    let status = deploy(world, &["status"]);
    weights(deployed(&status, region, service))
        .into_iter()
        .max_by_key(|(_, w)| *w)
        .map(|(name, _)| name)
        .unwrap_or_else(|| panic!("{service} serves nothing: {status:#}"))
}

const SHOP: &str = r#"
[sandcastle]
name = "shop"
platform = "kubernetes"

[platforms.kubernetes]
regions = ["prod-eu"]

[services.migrate]
kind = "job"
image = "example.test/shop/migrate:1"
timeout = "30s"

[services.api]
image = "example.test/shop/app:1"
ingress = "internal"
needs = ["migrate"]
health = { path = "/healthz", deadline = "20s" }
env = { V = "1" }

[services.web]
image = "example.test/shop/app:1"
needs = ["api"]
health = { path = "/healthz", deadline = "20s" }
scale = { min = 1, max = 3 }
resources = { cpu = "100m", memory = "64Mi" }
env = { V = "1" }
secrets = { SECRET = "env:SHOP_SESSION_KEY" }
rollout = { steps = [50, 100], pause = "1s" }
"#;

/// A migration job, an internal API and a public web front: each becomes what Kubernetes users
/// expect, applied server-side, seen by kubectl, reached through the Gateway, and a second apply
/// writes nothing.
#[test]
fn a_sandcastle_becomes_deployments_services_config_maps_and_an_httproute() {
    let (clusters, world) = kube_world(SHOP, &[("prod-eu", true)]);
    let fake = &clusters[0].fake;

    // What `plan -o yaml` prints is what the cluster would accept.
    let plan = world
        .command(&["deploy", "plan", "-o", "yaml"])
        .env("SHOP_SESSION_KEY", "s3cret-session")
        .output()
        .unwrap();
    assert_eq!(
        plan.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let yaml = String::from_utf8(plan.stdout).unwrap();
    for kind in [
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "HTTPRoute",
        "Job",
    ] {
        assert!(
            yaml.contains(&format!("kind: {kind}\n")),
            "{kind} in {yaml}"
        );
    }
    assert!(
        !yaml.contains("s3cret-session"),
        "no secret value is printed: {yaml}"
    );
    let file = world.dir.path().join("plan.yaml");
    std::fs::write(&file, &yaml).unwrap();
    kubectl_ok(
        fake,
        &[
            "apply",
            "--dry-run=server",
            "-n",
            "shop",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        fake.objects("deployments").is_empty(),
        "a dry run stores nothing"
    );

    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");

    let deployments = fake.objects("deployments");
    assert_eq!(deployments.len(), 2, "{:?}", names(&deployments));
    let web = deployments
        .iter()
        .find(|d| d["metadata"]["labels"]["app.kubernetes.io/name"] == "web")
        .unwrap();
    let web_revision = web["metadata"]["name"].as_str().unwrap().to_string();
    let labels = &web["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "mahavishnu");
    assert_eq!(labels["mahavishnu.dev/sandcastle"], "shop");
    assert_eq!(
        labels["mahavishnu.dev/spec-hash"].as_str().unwrap().len(),
        16
    );
    assert!(
        web["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["manager"] == "mahavishnu" && f["operation"] == "Apply"),
        "server-side apply as `mahavishnu`: {web:#}"
    );
    assert!(
        !web.to_string().contains("s3cret-session"),
        "the value stays out of the Deployment"
    );
    let secret = fake
        .secret("shop", &format!("{web_revision}-secrets"))
        .unwrap();
    assert_eq!(secret["data"]["SECRET"], "czNjcmV0LXNlc3Npb24=");
    let config = named(&fake.objects("configmaps"), &format!("{web_revision}-env")).clone();
    assert_eq!(
        config["data"]["API_URL"],
        "http://api.shop.svc.cluster.local"
    );
    assert_eq!(config["data"]["V"], "1");
    let hpa = named(&fake.objects("horizontalpodautoscalers"), &web_revision).clone();
    assert_eq!(hpa["spec"]["maxReplicas"], 3);
    assert!(web["spec"].get("replicas").is_none() || hpa["status"].is_object());
    let routes = fake.objects("httproutes");
    assert_eq!(
        names(&routes),
        ["web"],
        "only the public service is on the Gateway"
    );
    assert_eq!(
        routes[0]["spec"]["hostnames"][0],
        format!("web-shop.{DOMAIN}")
    );
    let services = names(&fake.objects("services"));
    assert!(services.contains(&"api".to_string()) && services.contains(&"web".to_string()));
    let jobs = fake.objects("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["spec"]["backoffLimit"], 0);

    // kubectl sees them, and agrees the rollout is done.
    let listed = kubectl_ok(fake, &["get", "deploy,svc,cm,httproute", "-n", "shop"]);
    assert!(
        listed.contains(&web_revision) && listed.contains("web"),
        "{listed}"
    );
    let rollout = kubectl_ok(
        fake,
        &[
            "rollout",
            "status",
            &format!("deployment/{web_revision}"),
            "-n",
            "shop",
            "--timeout=20s",
        ],
    );
    assert!(rollout.contains("successfully rolled out"), "{rollout}");

    // Through the Gateway, web answers with what it was given.
    let (status, body) = through_gateway(fake, "web", "/env");
    assert_eq!(status, 200, "{body}");
    let env: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["API_URL"], "http://api.shop.svc.cluster.local");
    assert_eq!(env["V"], "1");

    // verify checks health and the link web -> api from inside the cluster.
    let verify = deploy(&world, &["verify"]);
    assert_eq!(verify["ok"], true, "{verify:#}");

    // logs: the revision's pods, followed.
    let mut follow = world
        .command(&["deploy", "logs", "web", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().unwrap()));
    // Its output comes (the app's own lines, or its requests' on stderr).
    let first = lines.next().and_then(Result::ok);
    assert!(
        first.is_some_and(|line| !line.is_empty()),
        "the pod's log, followed"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    let history = deploy(&world, &["history", "web"]);
    assert!(history.to_string().contains(&web_revision), "{history:#}");

    // status: one list call per kind, however many services.
    fake.clear_calls();
    let status = deploy(&world, &["status"]);
    let web_status = deployed(&status, "prod-eu", "web");
    assert_eq!(weights(web_status), vec![(web_revision.clone(), 100)]);
    assert_eq!(web_status["revisions"][0]["health"]["state"], "healthy");
    let lists: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|(m, _)| m == "GET")
        .collect();
    assert!(lists.len() <= 6, "one list per kind: {lists:#?}");

    // Nothing changed: nothing is written.
    fake.clear_calls();
    let again = deploy(&world, &["apply"]);
    assert_eq!(again["ok"], true);
    let writes: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|(m, _)| m != "GET")
        .collect();
    assert!(
        writes.is_empty(),
        "a second apply writes nothing: {writes:#?}"
    );

    // destroy deletes what Mahavishnu made, and nothing else.
    let foreign = world.dir.path().join("foreign.yaml");
    std::fs::write(
        &foreign,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: someone-elses\n  namespace: shop\ndata:\n  a: b\n",
    )
    .unwrap();
    kubectl_ok(fake, &["apply", "-f", foreign.to_str().unwrap()]);
    deploy(&world, &["destroy"]);
    assert!(fake.objects("deployments").is_empty());
    assert!(fake.objects("httproutes").is_empty());
    assert_eq!(names(&fake.objects("configmaps")), ["someone-elses"]);
}

/// A new revision of web goes out as a canary through the HTTPRoute's weights, and a rollback puts
/// every request back on the old one at once.
#[test]
fn a_canary_splits_through_the_httproute_and_rolls_back_at_once() {
    let (clusters, world) = kube_world(SHOP, &[("prod-eu", true)]);
    let fake = &clusters[0].fake;
    deploy(&world, &["apply"]);
    let first = serving(&world, "prod-eu", "web");
    let canary = SHOP
        .replace(
            "env = { V = \"1\" }\nsecrets",
            "env = { V = \"2\" }\nsecrets",
        )
        .replace(
            "steps = [50, 100], pause = \"1s\"",
            "steps = [30, 100], pause = \"8s\"",
        );
    set_manifest(&world, &canary);
    let apply = world
        .command(&["--output", "json", "deploy", "apply"])
        .env("SHOP_SESSION_KEY", "s3cret-session")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first step: the route's weights are 70/30.
    let backends = || -> Vec<(String, i64)> {
        fake.objects("httproutes")
            .iter()
            .filter(|r| r["metadata"]["name"] == "web")
            .flat_map(|r| r["spec"]["rules"].as_array().cloned().unwrap_or_default())
            .filter(|rule| rule["name"] == "release")
            .flat_map(|rule| rule["backendRefs"].as_array().cloned().unwrap_or_default())
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_string(),
                    b["weight"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    support::eventually("the canary step", Duration::from_secs(30), || {
        backends().len() == 2
    });
    let split = backends();
    assert_eq!(split[0], (first.clone(), 70), "{split:?}");
    let second = split[1].0.clone();
    assert_eq!(split[1].1, 30);
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..200 {
        let (status, body) = through_gateway(fake, "web", "/");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        *seen
            .entry(v["v"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let share = seen.get("2").copied().unwrap_or(0);
    assert!(
        (30..=100).contains(&share),
        "about 30 % on the canary: {seen:?}"
    );
    let done = apply.wait_with_output().unwrap();
    assert!(done.status.success());
    assert_eq!(backends(), vec![(second.clone(), 100)]);

    // A tag reaches the old revision alone, by header, while every other request gets the new one.
    deploy(&world, &["tag", "web", &first, "previous"]);
    let (_, _, body) = get_with(
        &format!("http://127.0.0.1:{}/", fake.gateway_port()),
        &format!("Host: web-shop.{DOMAIN}\r\nx-mahavishnu-tag: previous\r\n"),
    )
    .unwrap();
    assert!(body.contains("\"v\": \"1\""), "{body}");
    let (_, body) = through_gateway(fake, "web", "/");
    assert!(body.contains("\"v\": \"2\""), "{body}");

    deploy(&world, &["rollback", "web", "--to", &first]);
    let status = deploy(&world, &["status"]);
    assert_eq!(
        weights(deployed(&status, "prod-eu", "web")),
        vec![(first.clone(), 100)]
    );
    for _ in 0..30 {
        let (_, body) = through_gateway(fake, "web", "/");
        assert!(
            body.contains("\"v\": \"1\""),
            "every request on the old revision: {body}"
        );
    }
    // The stable Service, what in-cluster callers reach, selects the old revision again.
    let stable = named(&fake.objects("services"), "web").clone();
    assert_eq!(
        stable["spec"]["selector"]["mahavishnu.dev/revision"],
        first.as_str()
    );
}

/// Without a Gateway, a release moves everything at once by flipping the stable Service's selector,
/// and the plan says that weights need a Gateway.
#[test]
fn without_a_gateway_a_release_flips_the_selector() {
    let (clusters, world) = kube_world(SHOP, &[("prod-eu", false)]);
    let fake = &clusters[0].fake;
    deploy(&world, &["apply"]);
    let first = serving(&world, "prod-eu", "web");
    set_manifest(
        &world,
        &SHOP.replace(
            "env = { V = \"1\" }\nsecrets",
            "env = { V = \"2\" }\nsecrets",
        ),
    );
    let plan = world
        .command(&["deploy", "plan"])
        .env("SHOP_SESSION_KEY", "s3cret-session")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("Gateway"),
        "the plan says weights need a Gateway: {text}"
    );
    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let second = serving(&world, "prod-eu", "web");
    assert_ne!(first, second);
    let stable = named(&fake.objects("services"), "web").clone();
    assert_eq!(
        stable["spec"]["selector"]["mahavishnu.dev/revision"],
        second.as_str()
    );
    assert!(fake.objects("httproutes").is_empty());
    let refused = world
        .command(&[
            "deploy",
            "release",
            "web",
            "--weights",
            &format!("{first}=50,{second}=50"),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not split traffic"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// What goes wrong is told in the cluster's own words: an image that cannot be pulled, a container
/// that crashes (with its last lines), a pod no node fits, a readiness probe that fails.
#[test]
fn failures_are_surfaced_with_the_pods_own_reasons() {
    let manifest = |health: &str, extra: &str| {
        format!(
            "[sandcastle]\nname = \"shop\"\nplatform = \"kubernetes\"\n[platforms.kubernetes]\n\
             regions = [\"prod-eu\"]\n[services.api]\nhealth = {{ path = \"{health}\", deadline = \"4s\" }}\n{extra}\n"
        )
    };
    let app = format!("image = \"{IMAGE}\"");
    let (clusters, world) = kube_world(&manifest("/healthz", &app), &[("prod-eu", false)]);
    let fake = &clusters[0].fake;
    fake.add_image(
        "example.test/shop/broken:1",
        &["sh", "-c", "echo the database is gone; exit 3"],
        &world.work(),
    );
    let cases = [
        (
            manifest("/healthz", "image = \"example.test/shop/missing:1\""),
            ["ImagePull", "example.test/shop/missing:1\\\": not found"],
        ),
        (
            manifest("/healthz", "image = \"example.test/shop/broken:1\""),
            ["CrashLoopBackOff", "the database is gone"],
        ),
        (
            manifest(
                "/healthz",
                &format!("{app}\nresources = {{ cpu = \"64\" }}"),
            ),
            ["Unschedulable", "Insufficient cpu"],
        ),
        (
            // Every request to `/` answers 500, the health check included.
            manifest("/", &format!("{app}\nenv = {{ FAIL_EVERY = \"1\" }}")),
            ["probe failed", "statuscode: 500"],
        ),
    ];
    for (text, words) in cases {
        set_manifest(&world, &text);
        let output = world
            .command(&["--output", "json", "deploy", "apply"])
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(1),
            "{text}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        let detail = report.to_string();
        for word in words {
            assert!(detail.contains(word), "{text}: `{word}` in {report:#}");
        }
        deploy(&world, &["destroy"]);
        assert!(fake.objects("deployments").is_empty());
    }
}

/// Two clusters are two regions: both get the sandcastle, `status` shows each, and `destroy` empties
/// both.
#[test]
fn two_clusters_are_two_regions() {
    let manifest = SHOP.replace(
        "regions = [\"prod-eu\"]",
        "regions = [\"prod-eu\", \"prod-us\"]",
    );
    let (clusters, world) = kube_world(&manifest, &[("prod-eu", true), ("prod-us", true)]);
    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let status = deploy(&world, &["status"]);
    for cluster in &clusters {
        let web = deployed(&status, cluster.name, "web");
        assert_eq!(
            web["revisions"][0]["health"]["state"], "healthy",
            "{}",
            cluster.name
        );
        assert_eq!(
            cluster.fake.objects("deployments").len(),
            2,
            "{}",
            cluster.name
        );
        let (code, body) = through_gateway(&cluster.fake, "web", "/");
        assert_eq!(code, 200, "{}: {body}", cluster.name);
    }
    // A new revision goes out region by region; both serve it once the apply is done.
    set_manifest(
        &world,
        &manifest.replace(
            "env = { V = \"1\" }\nsecrets",
            "env = { V = \"2\" }\nsecrets",
        ),
    );
    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");
    for cluster in &clusters {
        let (_, body) = through_gateway(&cluster.fake, "web", "/");
        assert!(body.contains("\"v\": \"2\""), "{}: {body}", cluster.name);
    }
    deploy(&world, &["destroy"]);
    for cluster in &clusters {
        assert!(
            cluster.fake.objects("deployments").is_empty(),
            "{}",
            cluster.name
        );
    }
}

/// A Pub/Sub emulator "in the cluster": its pushes go through the fake's cluster network, so that
/// subscribers' in-cluster URLs reach them. Stopped (with its process group) when dropped.
struct ClusterEmulator {
    child: std::process::Child,
    host: String,
}

impl ClusterEmulator {
    fn start(fake: &FakeKube) -> ClusterEmulator {
        let mahavishnu_pubsub::EmulatorSource::Launcher { launcher, java } =
            mahavishnu_pubsub::Emulator::locate_launcher().expect("the Pub/Sub emulator")
        else {
            unreachable!("locate_launcher finds the launcher")
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proxy = fake.network_proxy_url();
        let proxy = proxy.trim_start_matches("http://");
        let (proxy_host, proxy_port) = proxy.trim_end_matches('/').split_once(':').unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new(&launcher)
            .args(["--host=127.0.0.1", &format!("--port={port}")])
            .env("JAVA", &java)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    java.parent().unwrap().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            // The JVM's own proxy settings: the emulator's pushes take the cluster's network.
            .env(
                "JAVA_TOOL_OPTIONS",
                format!(
                    "-Dhttp.proxyHost={proxy_host} -Dhttp.proxyPort={proxy_port} \
                     -Dhttp.nonProxyHosts=localhost|127.0.0.1"
                ),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let host = format!("127.0.0.1:{port}");
        support::eventually("the emulator answers", Duration::from_secs(60), || {
            std::net::TcpStream::connect(&host).is_ok()
        });
        ClusterEmulator { child, host }
    }
}

impl Drop for ClusterEmulator {
    fn drop(&mut self) {
        // The group is the launcher's own, and the launcher is our unreaped child: its id is ours.
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// Each service of a copied example gets an image that runs its command (`run`), which the fake's
/// registry maps to the example's own files; the manifest gains `[platforms.kubernetes]`.
fn example_on_kubernetes(world: &World, fake: &FakeKube, region: &str) {
    let path = world.work().join("mahavishnu.deploy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    let mut service: Option<String> = None;
    for line in text.lines() {
        if let Some(run) = line.strip_prefix("run = ") {
            let run: String = serde_json::from_str(run).unwrap();
            let name = service.clone().unwrap();
            let image = format!("example.test/{name}:1");
            let argv: Vec<&str> = run.split_whitespace().collect();
            fake.add_image(&image, &argv, &world.work());
            out.push_str(&format!("{line}\nimage = \"{image}\"\n"));
            continue;
        }
        service = line
            .strip_prefix("[services.")
            .and_then(|rest| rest.strip_suffix(']'))
            .map(String::from)
            .or(service);
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "\n[platforms.kubernetes]\nregions = [\"{region}\"]\n"
    ));
    std::fs::write(&path, out).unwrap();
}

/// A world running `examples/NAME` on one cluster (`prod-eu`, with a Gateway when asked), its topics
/// on an emulator in that cluster's network.
fn example_world(name: &str, gateway: bool) -> (Vec<Cluster>, World, ClusterEmulator) {
    let (clusters, world) = kube_world("", &[("prod-eu", gateway)]);
    support::copy_example(&world, name);
    example_on_kubernetes(&world, &clusters[0].fake, "prod-eu");
    let emulator = ClusterEmulator::start(&clusters[0].fake);
    let config = world.dir.path().join("home/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("pubsub_endpoint = \"http://{}\"\n", emulator.host));
    std::fs::write(&config, text).unwrap();
    (clusters, world, emulator)
}

/// The sandcastle example on a cluster with a Gateway: the job, the internal webhooks, the worker fed
/// by a topic and the web front (with its canary) all run; an order through the Gateway reaches the
/// worker by a push to its in-cluster URL; verify checks health, links and delivery.
#[test]
fn the_sandcastle_example_runs_on_kubernetes() {
    if !support::pubsub_wanted("the sandcastle example on kubernetes") {
        return;
    }
    let (clusters, world, emulator) = example_world("sandcastle", true);
    let fake = &clusters[0].fake;

    let report = deploy(&world, &["apply", "--platform", "kubernetes"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let (status, body) = through_gateway(fake, "web", "/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("hello"), "{body}");
    let (status, _, body) = support::http(
        "POST",
        &format!("http://127.0.0.1:{}/orders", fake.gateway_port()),
        &format!("Host: web-shop.{DOMAIN}\r\nContent-Type: application/json\r\n"),
        "{\"item\": \"green tea\"}",
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");
    // The worker is internal to the cluster: it is read through the API server's service proxy.
    support::eventually(
        "the order reaches the worker",
        Duration::from_secs(30),
        || {
            let (_, _, body) = get_with(
                &format!(
                    "{}/api/v1/namespaces/shop/services/worker:80/proxy/orders",
                    fake.url()
                ),
                "Authorization: Bearer fake-token\r\n",
            )
            .unwrap();
            body.contains("green tea")
        },
    );
    let verify = deploy(&world, &["verify", "--platform", "kubernetes"]);
    assert_eq!(verify["ok"], true, "{verify:#}");
    let logs = world.ok(&["deploy", "logs", "worker", "--platform", "kubernetes"]);
    assert!(logs.contains("order green tea"), "{logs}");
    deploy(&world, &["destroy", "--platform", "kubernetes"]);
    assert!(fake.objects("deployments").is_empty());
    drop(emulator);
}

/// The pipeline example on a cluster without a Gateway: each block calls the next through its
/// in-cluster URL, the audit block is fed by a topic, and every release flips a selector.
#[test]
fn the_pipeline_example_runs_on_kubernetes() {
    if !support::pubsub_wanted("the pipeline example on kubernetes") {
        return;
    }
    let (clusters, world, emulator) = example_world("pipeline", false);
    let fake = &clusters[0].fake;

    let report = deploy(
        &world,
        &["pipeline", "checkout", "--platform", "kubernetes"],
    );
    assert_eq!(report["ok"], true, "{report:#}");
    let report = deploy(&world, &["apply", "--platform", "kubernetes"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let proxy = |service: &str, path: &str| {
        get_with(
            &format!(
                "{}/api/v1/namespaces/shop/services/{service}:80/proxy{path}",
                fake.url()
            ),
            "Authorization: Bearer fake-token\r\n",
        )
        .unwrap()
    };
    let (status, _, body) = proxy("gateway", "/");
    assert_eq!(status, 200, "{body}");
    let chain: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(chain["chain"][0], "gateway");
    assert_eq!(chain["chain"][2], "api", "{body}");
    support::eventually(
        "the audit block hears of it",
        Duration::from_secs(30),
        || proxy("audit", "/audited").2.contains("api -> postgres://"),
    );
    let verify = deploy(&world, &["verify", "--platform", "kubernetes"]);
    assert_eq!(verify["ok"], true, "{verify:#}");
    drop(emulator);
}

/// A Service of the same name that Mahavishnu did not make (someone else's, or another sandcastle's)
/// is never taken over: the deploy stops before making anything, and the Service is as it was.
#[test]
fn a_service_that_is_not_ours_is_left_alone() {
    let (clusters, world) = kube_world(SHOP, &[("prod-eu", false)]);
    let fake = &clusters[0].fake;
    let theirs = world.dir.path().join("theirs.yaml");
    std::fs::write(
        &theirs,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  \
         selector:\n    app: legacy\n  ports:\n  - port: 80\n",
    )
    .unwrap();
    kubectl_ok(fake, &["apply", "-f", theirs.to_str().unwrap()]);
    let output = world
        .command(&["--output", "json", "deploy", "apply"])
        .env("SHOP_SESSION_KEY", "s3cret-session")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        report.to_string().contains("was not made by Mahavishnu"),
        "{report:#}"
    );
    let web = named(&fake.objects("services"), "web").clone();
    assert_eq!(
        web["spec"]["selector"],
        serde_json::json!({ "app": "legacy" })
    );
    assert!(
        fake.objects("deployments")
            .iter()
            .all(|d| d["metadata"]["labels"]["app.kubernetes.io/name"] != "web"),
        "nothing of web was made"
    );
    // destroy leaves it too.
    deploy(&world, &["destroy"]);
    assert_eq!(names(&fake.objects("services")), ["web"]);
}
