//! Deployments on Cloud Run, end to end: the real binary and the official Google Cloud clients against
//! the Google Cloud fake (`support/fake_gcloud.py`, a fake because Cloud Run cannot run here), whose
//! services are real Python processes reached over real HTTP.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::fake_gcloud::FakeGcloud;
use support::{APP, World, get, get_with, weights};

const PROJECT: &str = "acme-test";
const NUMBER: &str = "123456789012";
const APP_IMAGE: &str = "example.test/shop/app:1";

/// A world with the app, a manifest, the fake, and a `cloudrun` target pointing at the fake.
/// The fake comes first: dropped after the world, it still answers when the world stops what runs.
fn cloud_world(manifest: &str, extra_images: Value) -> (FakeGcloud, World) {
    let world = World::new();
    std::fs::write(world.work().join("app.py"), APP).unwrap();
    std::fs::write(world.work().join("mahavishnu.deploy.toml"), manifest).unwrap();
    let mut images = json!({
        APP_IMAGE: { "run": "python3 app.py", "dir": world.work() },
    });
    if let (Some(images), Some(extra)) = (images.as_object_mut(), extra_images.as_object()) {
        images.extend(extra.clone());
    }
    let fake = FakeGcloud::start(
        world.dir.path(),
        &json!({
            "projects": { PROJECT: NUMBER },
            "operation_delay_ms": 50,
            "images": images,
            "secrets": { format!("projects/{PROJECT}/secrets/session-key"): { "1": "s3cret" } },
        }),
    );
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!(
            "[targets.fake]\nkind = \"cloudrun\"\nproject = \"{PROJECT}\"\nendpoint = \"{url}\"\n\
             credentials = \"anonymous\"\nservice_urls = \"{url}/run/{{host}}\"\n",
            url = fake.url
        ),
    )
    .unwrap();
    (fake, world)
}

fn set_manifest(world: &World, manifest: &str) {
    std::fs::write(world.work().join("mahavishnu.deploy.toml"), manifest).unwrap();
}

const SHOP: &str = r#"
[sandcastle]
name = "shop"

[platforms.cloudrun]
target = "fake"
regions = ["europe-west1", "us-central1"]

[services.api]
image = "example.test/shop/app:1"
health = { path = "/healthz" }
env = { V = "1" }
invoker = "public"

[services.web]
image = "example.test/shop/app:1"
needs = ["api"]
health = { path = "/healthz" }
env = { V = "1" }
invoker = "public"
rollout = { steps = [50, 100] }
"#;

/// The Cloud Run URL of `service` in `region`, as the fake serves it.
fn run_url(fake: &FakeGcloud, service: &str, region: &str) -> String {
    format!("{}/run/shop-{service}-{NUMBER}.{region}.run.app", fake.url)
}

fn deploy(world: &World, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json", "deploy"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--platform", "cloudrun"]);
    let output = world.run(&all);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "deploy {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// `deploy plan --platform cloudrun` as JSON text.
fn plan_text(world: &World) -> String {
    let plan = world.run(&[
        "--output",
        "json",
        "deploy",
        "plan",
        "--platform",
        "cloudrun",
    ]);
    String::from_utf8_lossy(&plan.stdout).into_owned()
}

/// The calls that change something (reads, IAM policy reads included, are not).
fn writes(fake: &FakeGcloud) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|call| !call.starts_with("GET ") && !call.ends_with(":getIamPolicy"))
        .collect()
}

#[test]
fn cloud_run_apply_wires_run_app_urls_releases_by_steps_and_a_second_apply_writes_nothing() {
    let (fake, world) = cloud_world(SHOP, json!({}));

    let plan = world.run(&[
        "--output",
        "json",
        "deploy",
        "plan",
        "--platform",
        "cloudrun",
    ]);
    assert_eq!(plan.status.code(), Some(1), "a plan with changes exits 1");
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 4, "two services in two regions: {plan:#}");
    assert!(
        writes(&fake).is_empty(),
        "a plan writes nothing: {:?}",
        writes(&fake)
    );

    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");

    // web was given api's run.app URL before api existed: no second revision was needed.
    let (code, _, body) = get(&format!("{}/env", run_url(&fake, "web", "europe-west1"))).unwrap();
    assert_eq!(code, 200, "{body}");
    let env: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["API_URL"], run_url(&fake, "api", "europe-west1"));
    let (code, _, _) = get(&run_url(&fake, "api", "us-central1")).unwrap();
    assert_eq!(code, 200, "api is public in every region");

    // Logs come from Cloud Logging: what the revision printed, and the requests it took.
    let logs = world.ok(&[
        "deploy",
        "logs",
        "api",
        "--region",
        "us-central1",
        "--platform",
        "cloudrun",
    ]);
    assert!(logs.contains("listening"), "{logs}");
    assert!(logs.contains("GET https://shop-api-"), "{logs}");

    let status = deploy(&world, &["status"]);
    let web = support::deployed(&status, "us-central1", "web");
    assert_eq!(web["url"], run_url(&fake, "web", "us-central1"));
    assert_eq!(weights(web).len(), 1);
    assert_eq!(weights(web)[0].1, 100);

    // Nothing changed: the second apply reads and writes nothing.
    fake.clear_requests();
    let again = deploy(&world, &["apply"]);
    assert_eq!(again["changed"], false, "{again:#}");
    assert!(writes(&fake).is_empty(), "{:?}", writes(&fake));
    let plan = world.run(&["deploy", "plan", "--platform", "cloudrun"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );

    // A change goes out as a new revision at 0 % and is released by the steps.
    // Each region's revision names differ: the region is part of what a revision runs with.
    let before: Vec<String> = ["europe-west1", "us-central1"]
        .iter()
        .map(|region| {
            weights(support::deployed(&status, region, "web"))[0]
                .0
                .clone()
        })
        .collect();
    set_manifest(
        &world,
        &SHOP.replacen(
            "env = { V = \"1\" }\ninvoker = \"public\"\nrollout",
            "env = { V = \"2\" }\ninvoker = \"public\"\nrollout",
            1,
        ),
    );
    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let status = deploy(&world, &["status"]);
    let web = support::deployed(&status, "europe-west1", "web");
    let after = weights(web)[0].0.clone();
    assert_ne!(after, before[0]);
    let history = world.json(&[
        "deploy",
        "history",
        "web",
        "--region",
        "europe-west1",
        "--platform",
        "cloudrun",
    ]);
    let causes: Vec<String> = history["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cause"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        causes.iter().any(|c| c.contains("50")),
        "the 50 % step is in the history: {causes:?}"
    );
    let (_, _, body) = get(&format!("{}/", run_url(&fake, "web", "europe-west1"))).unwrap();
    assert!(body.contains("\"v\": \"2\""), "{body}");

    // Rollback is one traffic update per region, straight back.
    fake.clear_requests();
    let rolled = world.json(&["deploy", "rollback", "web", "--platform", "cloudrun"]);
    let updates: Vec<String> = writes(&fake);
    assert_eq!(
        updates
            .iter()
            .filter(|call| call.starts_with("PATCH "))
            .count(),
        2,
        "one traffic update per region: {updates:?} {rolled:#}"
    );
    let status = deploy(&world, &["status"]);
    for (region, before) in ["europe-west1", "us-central1"].iter().zip(&before) {
        let web = support::deployed(&status, region, "web");
        assert_eq!(weights(web), vec![(before.clone(), 100)], "{region}");
    }

    // A tag gives the new revision a URL of its own.
    let tagged = world.json(&[
        "deploy",
        "tag",
        "web",
        &after,
        "blue",
        "--region",
        "europe-west1",
        "--platform",
        "cloudrun",
    ]);
    let tag_url = tagged["tags"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(tag_url.contains("/run/blue---shop-web-"), "{tagged:#}");
    let (_, _, body) = get(&format!("{tag_url}/")).unwrap();
    assert!(
        body.contains("\"v\": \"2\""),
        "the tag reaches the new revision: {body}"
    );

    // destroy removes what Mahavishnu made, in every region.
    let destroyed = world.run(&["deploy", "destroy", "--platform", "cloudrun"]);
    assert!(
        destroyed.status.success(),
        "{}",
        String::from_utf8_lossy(&destroyed.stderr)
    );
    let services = fake.call(
        "GET",
        &format!("/v2/projects/{PROJECT}/locations/europe-west1/services"),
    );
    assert!(
        services["services"].as_array().is_none_or(|s| s.is_empty()),
        "{services:#}"
    );
}

#[test]
fn cloud_run_failures_come_back_in_cloud_runs_own_words() {
    let manifest = |image: &str| {
        format!(
            "[sandcastle]\nname = \"shop\"\n[platforms.cloudrun]\ntarget = \"fake\"\nregions = [\"europe-west1\"]\n\
             [services.api]\nimage = \"{image}\"\nhealth = {{ path = \"/healthz\" }}\n"
        )
    };
    let (_fake, world) = cloud_world(
        &manifest("example.test/shop/gone:1"),
        json!({
            "example.test/shop/noport:1": { "fail": "no-listen" },
            "example.test/shop/quota:1": { "fail": "quota" },
            "example.test/shop/probe:1": { "fail": "startup-probe" },
            "example.test/shop/denied:1": { "fail": "permission" },
        }),
    );
    let cases = [
        (
            "example.test/shop/gone:1",
            "Image 'example.test/shop/gone:1' not found",
        ),
        (
            "example.test/shop/noport:1",
            "failed to start and listen on the port defined provided by the PORT=8080",
        ),
        ("example.test/shop/quota:1", "Quota exceeded"),
        (
            "example.test/shop/denied:1",
            "lacks the permission `iam.serviceaccounts.actAs`",
        ),
        (
            "example.test/shop/probe:1",
            "STARTUP HTTP probe failed 3 times consecutively",
        ),
    ];
    for (image, words) in cases {
        set_manifest(&world, &manifest(image));
        let output = world.run(&[
            "--output",
            "json",
            "deploy",
            "apply",
            "--platform",
            "cloudrun",
        ]);
        assert_eq!(output.status.code(), Some(1), "{image}");
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        let detail = report["services"][0]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(words), "{image}: {detail}");
    }
}

#[test]
fn secret_manager_references_are_checked_at_plan_time_and_never_read() {
    let manifest = |secret: &str| {
        format!(
            "[sandcastle]\nname = \"shop\"\n[platforms.cloudrun]\ntarget = \"fake\"\nregions = [\"europe-west1\"]\n\
             [services.api]\nimage = \"{APP_IMAGE}\"\nhealth = {{ path = \"/healthz\" }}\n\
             secrets = {{ SECRET = \"{secret}\" }}\n"
        )
    };
    let (fake, world) = cloud_world(&manifest("gcp:sm/nope#1"), json!({}));
    let text = plan_text(&world);
    assert!(
        text.contains("gcp:sm/nope#1 does not exist in project acme-test"),
        "{text}"
    );
    set_manifest(&world, &manifest("gcp:sm/session-key#1"));
    fake.clear_requests();
    let text = plan_text(&world);
    assert!(!text.contains("blocked"), "{text}");
    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");
    // The revision reads the value itself; Mahavishnu never asked for it.
    assert!(
        !fake.requests().iter().any(|call| call.ends_with(":access")),
        "{:?}",
        fake.requests()
    );
    // The service is not public (the default): a caller without an ID token is turned away.
    let secret_url = format!("{}/secret", run_url(&fake, "api", "europe-west1"));
    let (code, _, _) = get(&secret_url).unwrap();
    assert_eq!(code, 403, "an IAM-only service refuses anonymous callers");
    let (_, _, body) = get_with(&secret_url, "Authorization: Bearer an-id-token\r\n").unwrap();
    let digest: Value = serde_json::from_str(&body).unwrap();
    // sha256("s3cret"): the value Secret Manager holds reached the revision.
    assert_eq!(
        digest["sha256"],
        "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
    );
}

/// The fake answers the official Python client as the real API would: list, get and a traffic
/// update round-trip.
#[test]
fn the_official_python_client_works_against_the_fake() {
    let Some(pythonpath) = std::env::var_os("MAHAVISHNU_TEST_GCP_PYTHONPATH") else {
        panic!(
            "set MAHAVISHNU_TEST_GCP_PYTHONPATH to the official Python Cloud Run client that \
             `scripts/test` installs"
        );
    };
    let (fake, world) = cloud_world(SHOP, json!({}));
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_gcloud_client_check.py");
    let output = world
        .program("python3")
        .arg(script)
        .args([fake.url.as_str(), APP_IMAGE, PROJECT])
        .env("PYTHONPATH", pythonpath)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && said.trim_end().ends_with("ok"),
        "{said}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

const EVENTS: &str = r#"
[sandcastle]
name = "shop"

[platforms.cloudrun]
target = "fake"
regions = ["europe-west1"]

[services.web]
image = "example.test/shop/app:1"
health = { path = "/healthz" }
publishes = ["orders"]
invoker = "public"

[services.worker]
kind = "worker"
image = "example.test/shop/app:1"
health = { path = "/healthz" }
subscribes = { orders = "/events/orders" }
service_account = "pusher@acme-test.iam.gserviceaccount.com"
# The emulator pushes without the OIDC token Pub/Sub would attach.
invoker = "public"

[topics.orders]
dead_letter = { after = 5 }
"#;

#[test]
fn topics_push_to_subscribers_on_cloud_run_and_verify_proves_delivery() {
    if !support::pubsub_wanted("topics_push_to_subscribers_on_cloud_run_and_verify_proves_delivery")
    {
        return;
    }
    let (fake, world) = cloud_world(EVENTS, json!({}));
    // The emulator is started in the world's state directory, so that the world's drop stops it.
    let emulator = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(mahavishnu_pubsub::Emulator::ensure(
            &world.state_dir().join("pubsub"),
        ))
        .expect("the Pub/Sub emulator starts");
    let config = world.dir.path().join("home/config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("pubsub_endpoint = \"{}\"\n", emulator.endpoint));
    std::fs::write(&config, text).unwrap();
    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");

    // The publisher was told the topic's full name in the project, and how to reach the emulator.
    let verify = world.run(&[
        "--output",
        "json",
        "deploy",
        "verify",
        "--platform",
        "cloudrun",
    ]);
    let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
    let delivery = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["check"] == "topic orders -> worker")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(delivery["holds"], true, "{report:#}");
    assert_eq!(verify.status.code(), Some(0), "{report:#}");
    let (_, _, body) = get_with(
        &format!("{}/pushes", run_url(&fake, "worker", "europe-west1")),
        "Authorization: Bearer an-id-token\r\n",
    )
    .unwrap();
    let pushes: Value = serde_json::from_str(&body).unwrap();
    assert!(pushes["pushes"].as_u64() >= Some(1), "{body}");

    // The subscription pushes with the worker's identity, to its run.app URL.
    let subscription = emulator_get(
        &emulator.endpoint,
        &format!("/v1/projects/{PROJECT}/subscriptions/shop.europe-west1.orders.worker"),
    );
    assert_eq!(
        subscription["pushConfig"]["pushEndpoint"],
        format!("{}/events/orders", run_url(&fake, "worker", "europe-west1")),
        "{subscription:#}"
    );
    assert_eq!(
        subscription["pushConfig"]["oidcToken"]["serviceAccountEmail"],
        "pusher@acme-test.iam.gserviceaccount.com",
        "{subscription:#}"
    );
    assert_eq!(
        subscription["deadLetterPolicy"]["deadLetterTopic"],
        format!("projects/{PROJECT}/topics/shop.europe-west1.orders.dead-letter")
    );

    // The identity that signs the pushes may invoke the subscriber.
    let policy = fake.call(
        "GET",
        &format!("/v2/projects/{PROJECT}/locations/europe-west1/services/shop-worker:getIamPolicy"),
    );
    let invokers: Vec<&str> = policy["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["role"] == "roles/run.invoker")
        .flat_map(|b| {
            b["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap())
        })
        .collect();
    assert!(
        invokers.contains(&"serviceAccount:pusher@acme-test.iam.gserviceaccount.com"),
        "{policy:#}"
    );

    // destroy takes the topics and the subscriptions with it: they would keep pushing otherwise.
    let destroyed = world.run(&["deploy", "destroy", "--platform", "cloudrun"]);
    assert!(
        destroyed.status.success(),
        "{}",
        String::from_utf8_lossy(&destroyed.stderr)
    );
    let topics = emulator_get(
        &emulator.endpoint,
        &format!("/v1/projects/{PROJECT}/topics"),
    );
    assert!(
        topics["topics"].as_array().is_none_or(|t| t.is_empty()),
        "{topics:#}"
    );
    let subscriptions = emulator_get(
        &emulator.endpoint,
        &format!("/v1/projects/{PROJECT}/subscriptions"),
    );
    assert!(
        subscriptions["subscriptions"]
            .as_array()
            .is_none_or(|s| s.is_empty()),
        "{subscriptions:#}"
    );

    // A subscriber that lets only callers with a token in, and nothing to sign pushes with: the
    // apply says so and how to fix it, instead of leaving every push refused.
    set_manifest(
        &world,
        &EVENTS
            .replace("service_account = \"pusher@acme-test.iam.gserviceaccount.com\"\n", "")
            .replace(
                "# The emulator pushes without the OIDC token Pub/Sub would attach.\ninvoker = \"public\"\n",
                "",
            ),
    );
    let output = world.run(&[
        "--output",
        "json",
        "deploy",
        "apply",
        "--platform",
        "cloudrun",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("takes pushes but lets in only callers with an ID token"),
        "{said}"
    );
}

/// A GET of the Pub/Sub emulator's REST API.
fn emulator_get(endpoint: &str, path: &str) -> Value {
    let (_, _, body) = get(&format!("{endpoint}{path}")).unwrap();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

const JOBS: &str = r#"
[sandcastle]
name = "shop"

[platforms.cloudrun]
target = "fake"
regions = ["europe-west1"]

[services.migrate]
kind = "job"
image = "example.test/shop/migrate:1"
timeout = "60s"

[services.api]
image = "example.test/shop/app:1"
needs = ["migrate"]
health = { path = "/healthz" }

[services.poller]
kind = "worker"
image = "example.test/shop/poller:1"
"#;

#[test]
fn a_job_runs_to_completion_before_what_needs_it_and_a_worker_is_a_worker_pool() {
    let images = json!({
        "example.test/shop/migrate:1": { "run": "echo migrated" },
        "example.test/shop/migrate-bad:1": { "run": "echo broken schema; exit 3" },
        "example.test/shop/poller:1": { "run": "while true; do sleep 1; done" },
    });
    let (fake, world) = cloud_world(JOBS, images);
    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let calls = fake.requests();
    let position = |needle: &str| {
        calls
            .iter()
            .position(|call| call.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {calls:#?}"))
    };
    assert!(
        position("/jobs/shop-migrate:run")
            < position("POST /v2/projects/acme-test/locations/europe-west1/services"),
        "the job ran before the service that needs it was created: {calls:#?}"
    );
    assert!(position("POST /v2/projects/acme-test/locations/europe-west1/workerPools") > 0);

    let status = deploy(&world, &["status"]);
    let migrate = support::deployed(&status, "europe-west1", "migrate");
    assert_eq!(
        migrate["revisions"][0]["health"]["state"], "succeeded",
        "{status:#}"
    );
    let poller = support::deployed(&status, "europe-west1", "poller");
    assert_eq!(
        poller["revisions"][0]["health"]["state"], "healthy",
        "{status:#}"
    );
    assert_eq!(weights(poller)[0].1, 100);

    // A job that fails stops the apply before what needs it, with the job's own reason.
    set_manifest(
        &world,
        &JOBS.replace("migrate:1", "migrate-bad:1").replace(
            "health = { path = \"/healthz\" }",
            "health = { path = \"/healthz\" }\nenv = { V = \"2\" }",
        ),
    );
    let output = world.run(&[
        "--output",
        "json",
        "deploy",
        "apply",
        "--platform",
        "cloudrun",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let outcome = |name: &str| {
        report["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {report:#}"))
    };
    assert_eq!(outcome("migrate")["outcome"], "failed", "{report:#}");
    assert!(
        outcome("migrate")["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("the job migrate failed"),
        "{report:#}"
    );
    assert_ne!(outcome("api")["outcome"], "updated", "{report:#}");
}

const FRONT: &str = r#"
[sandcastle]
name = "shop"

[platforms.cloudrun]
target = "fake"
regions = ["europe-west1", "us-central1"]

[services.web]
image = "example.test/shop/app:1"
health = { path = "/healthz" }
env = { V = "1" }
invoker = "public"
scale = { min = 1 }
rollout = { steps = [50, 100], pause = "3s", max_error_rate = 0.2 }

[front_door]
service = "web"
"#;

#[test]
fn a_global_load_balancer_fronts_every_region_and_the_gates_read_cloud_monitoring() {
    let (fake, world) = cloud_world(FRONT, json!({}));
    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let door_url = report["front_door"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(door_url.starts_with("http://"), "{report:#}");

    // The load balancer's address, its regions, and an uptime check per region.
    let status = deploy(&world, &["status"]);
    let address = status["front_door"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!address.is_empty(), "{status:#}");
    let regions: Vec<&Value> = status["front_door"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(regions.len(), 2, "{status:#}");
    assert!(regions.iter().all(|r| r["healthy"] == true), "{status:#}");
    let checks = fake.call("GET", &format!("/v3/projects/{PROJECT}/uptimeCheckConfigs"));
    assert_eq!(
        checks["uptimeCheckConfigs"].as_array().map(Vec::len),
        Some(2),
        "an uptime check per public service and region: {checks:#}"
    );

    // Requests through the load balancer survive the loss of a region.
    let through = format!("{}/lb/{address}/", fake.url);
    assert_eq!(get(&through).unwrap().0, 200);
    fake.call("POST", "/_fake/kill?service=shop-web&location=us-central1");
    for _ in 0..5 {
        assert_eq!(get(&through).unwrap().0, 200, "the other region answers");
    }

    // A canary that answers 500 is stopped by its error rate, read from Cloud Monitoring.
    set_manifest(
        &world,
        &FRONT.replace(
            "env = { V = \"1\" }",
            "env = { V = \"2\", FAIL_EVERY = \"1\" }",
        ),
    );
    let url = run_url(&fake, "web", "europe-west1");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = get(&format!("{url}/"));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let output = world.run(&[
        "--output",
        "json",
        "deploy",
        "apply",
        "--platform",
        "cloudrun",
        "--region",
        "europe-west1",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let detail = report["services"][0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("error rate"), "{report:#}");
    let status = deploy(&world, &["status"]);
    let web = support::deployed(&status, "europe-west1", "web");
    assert_eq!(
        weights(web).len(),
        1,
        "traffic is back on one revision: {status:#}"
    );
    assert_eq!(
        web["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["weight"] == 100)
            .unwrap()["spec"]["env"]["V"],
        "1"
    );

    // destroy takes the load balancer and the uptime checks with it.
    let destroyed = world.run(&["deploy", "destroy", "--platform", "cloudrun"]);
    assert!(
        destroyed.status.success(),
        "{}",
        String::from_utf8_lossy(&destroyed.stderr)
    );
    let checks = fake.call("GET", &format!("/v3/projects/{PROJECT}/uptimeCheckConfigs"));
    assert!(
        checks["uptimeCheckConfigs"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{checks:#}"
    );
    let rules = fake.call(
        "GET",
        &format!("/compute/v1/projects/{PROJECT}/global/forwardingRules"),
    );
    assert!(
        rules["items"].as_array().is_none_or(|r| r.is_empty()),
        "{rules:#}"
    );
}

/// A world whose `fleet` target is a Cloud Run project on the fake, with a base image that runs
/// whatever command it is given.
fn fleet_world(denied: &[&str]) -> (FakeGcloud, World) {
    let world = World::new();
    let fake = FakeGcloud::start(
        world.dir.path(),
        &json!({
            "projects": { PROJECT: NUMBER },
            "operation_delay_ms": 20,
            "images": { "example.test/base:1": { "exec": true } },
            "denied_permissions": denied,
        }),
    );
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!(
            "[targets.fleet]\nkind = \"cloudrun\"\nproject = \"{PROJECT}\"\nendpoint = \"{url}\"\n\
             credentials = \"anonymous\"\nregion = \"europe-west1\"\nimage = \"example.test/base:1\"\n\
             [profiles.worker]\nprogram = \"sleep\"\nargs = [\"300\"]\n",
            url = fake.url
        ),
    )
    .unwrap();
    (fake, world)
}

#[test]
fn instances_on_cloud_run_are_headless_jobs_with_exec_logs_and_stop() {
    let (fake, world) = fleet_world(&[]);
    let targets = world.json(&["targets"]);
    let fleet = support::target_named(&targets, "fleet");
    assert_eq!(fleet["kind"], "cloudrun");
    assert_eq!(fleet["ready"], true, "{fleet:#}");
    assert!(
        fleet["detail"].as_str().unwrap().contains(NUMBER),
        "{fleet:#}"
    );

    let launched = world.json(&[
        "instances",
        "launch",
        "worker",
        "--target",
        "fleet",
        "--count",
        "2",
        "--env",
        "GREETING=hi there",
    ])["instances"]
        .clone();
    let ids: Vec<String> = launched
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{launched:#}");
    let jobs = fake.call(
        "GET",
        &format!("/v2/projects/{PROJECT}/locations/europe-west1/jobs"),
    );
    assert_eq!(
        jobs["jobs"].as_array().map(Vec::len),
        Some(2),
        "a job per instance: {jobs:#}"
    );

    // A one-off execution with the command overridden: its exit code and its output.
    let exec = world.json(&[
        "instances",
        "exec",
        &ids[0],
        "--",
        "sh",
        "-c",
        "echo \"$GREETING\" 'it''s'; echo oops >&2; exit 4",
    ]);
    assert_eq!(exec["exit_code"], 4, "{exec:#}");
    assert_eq!(exec["stdout"], "hi there its\n", "{exec:#}");
    assert_eq!(exec["stderr"], "oops\n", "{exec:#}");

    // Terminal operations say that there is no terminal, and what to use instead.
    let refused = world.fails(&["terminal", "send", &ids[0], "echo hi"], 1);
    assert!(refused.contains("without a terminal"), "{refused}");

    let listed = world.json(&["instances", "list", "--target", "fleet"])["instances"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed:#}");
    world.ok(&["instances", "stop", &ids[0], "--grace", "0"]);
    let jobs = fake.call(
        "GET",
        &format!("/v2/projects/{PROJECT}/locations/europe-west1/jobs"),
    );
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(1), "{jobs:#}");
}

#[test]
fn a_cloud_run_targets_preflight_names_what_is_missing() {
    let (_fake, world) = fleet_world(&["iam.serviceAccounts.actAs", "run.jobs.run"]);
    let targets = world.json(&["targets"]);
    let fleet = support::target_named(&targets, "fleet");
    assert_eq!(fleet["ready"], false, "{fleet:#}");
    let detail = fleet["detail"].as_str().unwrap();
    assert!(
        detail.contains("iam.serviceAccounts.actAs") && detail.contains("run.jobs.run"),
        "{detail}"
    );
}

/// Against a real Google Cloud project, when `MAHAVISHNU_TEST_GCP_PROJECT` names one (with
/// Application Default Credentials): Google's public `hello` image is deployed, checked to answer
/// (the link check requests its run.app URL over HTTPS), and destroyed. Set and unusable, it fails.
#[test]
fn a_real_project_takes_a_service_and_gives_it_back() {
    let Ok(project) = std::env::var("MAHAVISHNU_TEST_GCP_PROJECT") else {
        eprintln!("skipped: set MAHAVISHNU_TEST_GCP_PROJECT to run it against a real project");
        return;
    };
    let region =
        std::env::var("MAHAVISHNU_TEST_GCP_REGION").unwrap_or_else(|_| "us-central1".into());
    let world = World::new();
    let sandcastle = format!("mvtest{}", std::process::id());
    std::fs::write(
        world.work().join("mahavishnu.deploy.toml"),
        format!(
            "[sandcastle]\nname = \"{sandcastle}\"\nplatform = \"cloudrun\"\n\
             [platforms.cloudrun]\nproject = \"{project}\"\nregions = [\"{region}\"]\n\
             [services.hello]\nimage = \"us-docker.pkg.dev/cloudrun/container/hello\"\n\
             invoker = \"public\"\nhealth = {{ path = \"/\", deadline = \"300s\" }}\n\
             [services.caller]\nimage = \"us-docker.pkg.dev/cloudrun/container/hello\"\n\
             needs = [\"hello\"]\nhealth = {{ path = \"/\", deadline = \"300s\" }}\n"
        ),
    )
    .unwrap();
    /// Destroys what the test made, whatever happened before.
    struct Cleanup<'a>(&'a World);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = self.0.run(&["deploy", "destroy"]);
        }
    }
    let _cleanup = Cleanup(&world);
    let apply = world.run(&["--output", "json", "deploy", "apply"]);
    assert!(
        apply.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&apply.stdout),
        String::from_utf8_lossy(&apply.stderr)
    );
    let verify = world.json(&["deploy", "verify"]);
    assert_eq!(verify["ok"], true, "{verify:#}");
    let again = world.run(&["deploy", "plan"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn validate_checks_the_cloud_run_settings_and_a_project_file_cannot_redirect_the_calls() {
    let manifest = "[sandcastle]\nname = \"shop\"\n\n[platforms.cloudrun]\nproject = \"acme-test\"\nendpoint = \"http://attacker.example\"\n\n[services.web]\nimage = \"example.test/shop/app:1\"\n";
    let world = World::new();
    std::fs::write(world.work().join("mahavishnu.deploy.toml"), manifest).unwrap();
    let validated = world.run(&["deploy", "validate"]);
    assert_eq!(validated.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
    assert!(
        said.contains(":6: platforms.cloudrun.endpoint: unknown key"),
        "the endpoint is the user's to set, in a target of their own config: {said}"
    );
    let refused = world.fails(&["deploy", "plan", "--platform", "cloudrun"], 2);
    assert!(
        refused.contains("platforms.cloudrun.endpoint: unknown key"),
        "{refused}"
    );
}

/// `shop` + `web-api` and `shop-web` + `api` are both `shop-web-api` on Cloud Run: the second
/// sandcastle must not take the first one's service over, nor destroy it.
#[test]
fn a_sandcastle_never_takes_over_a_cloud_run_service_of_the_same_name() {
    let first = "[sandcastle]\nname = \"shop\"\n[platforms.cloudrun]\ntarget = \"fake\"\nregions = [\"europe-west1\"]\n[services.web-api]\nimage = \"example.test/shop/app:1\"\nhealth = { path = \"/healthz\" }\n";
    let (fake, world) = cloud_world(first, json!({}));
    let report = deploy(&world, &["apply"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let second = "[sandcastle]\nname = \"shop-web\"\n[platforms.cloudrun]\ntarget = \"fake\"\nregions = [\"europe-west1\"]\n[services.api]\nimage = \"example.test/shop/app:1\"\nhealth = { path = \"/healthz\" }\nenv = { V = \"2\" }\n";
    std::fs::write(world.work().join("other.toml"), second).unwrap();
    let output = world.run(&[
        "--output",
        "json",
        "deploy",
        "apply",
        "-f",
        "other.toml",
        "--platform",
        "cloudrun",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains("belongs to service `web-api` of sandcastle `shop`"),
        "{said}"
    );
    let destroyed = world.run(&[
        "deploy",
        "destroy",
        "-f",
        "other.toml",
        "--platform",
        "cloudrun",
    ]);
    let _ = destroyed;
    let service = fake.call(
        "GET",
        &format!("/v2/projects/{PROJECT}/locations/europe-west1/services/shop-web-api"),
    );
    assert_eq!(
        service["labels"]["mahavishnu-sandcastle"], "shop",
        "still the first one's: {service:#}"
    );
}
