//! Deployments on the local platform, end to end: the real binary, real supervisor processes, real
//! Python services on real ports, real HTTP through the real router.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{APP, World, eventually, get, get_with, post, weights};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A world with the app and a manifest in its work directory.
fn world_with(manifest: &str) -> World {
    let world = World::new();
    write(&world.work(), "app.py", APP);
    write(&world.work(), "mahavishnu.deploy.toml", manifest);
    world
}

/// TWO_SERVICES with web's environment replaced by `env` (the inside of its inline table).
fn set_web_env(world: &World, env: &str) {
    let changed = TWO_SERVICES.replacen(
        "env = { V = \"1\" }\nrollout",
        &format!("env = {{ {env} }}\nrollout"),
        1,
    );
    assert_ne!(changed, TWO_SERVICES);
    set_manifest(world, &changed);
}

fn set_manifest(world: &World, manifest: &str) {
    write(&world.work(), "mahavishnu.deploy.toml", manifest);
}

/// One HTTP/1.1 GET: status, the revision header the router adds, and the body.
/// `deploy plan` as JSON; it exits 1 when something would change, which is not a failure here.
fn plan_of(world: &World) -> Value {
    let output = world.run(&["--output", "json", "deploy", "plan"]);
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a plan")
}

fn status(world: &World) -> Value {
    world.json(&["deploy", "status"])
}

fn url_of(world: &World, region: &str, name: &str) -> String {
    support::deployed(&status(world), region, name)["url"]
        .as_str()
        .expect("a URL")
        .to_string()
}

fn serving(world: &World, region: &str, name: &str) -> String {
    let status = status(world);
    let found = weights(support::deployed(&status, region, name));
    assert_eq!(found.len(), 1, "one revision serves {name}: {found:?}");
    found[0].0.clone()
}

const TWO_SERVICES: &str = r#"
[sandcastle]
name = "shop"

[services.api]
run = "python3 app.py"
health = { path = "/healthz" }
env = { V = "1" }
scale = { min = 2 }

[services.web]
run = "python3 app.py"
needs = ["api"]
health = { path = "/healthz" }
env = { V = "1" }
rollout = { steps = [10, 100], pause = "1s" }
"#;

#[test]
fn apply_deploys_in_waves_wires_urls_and_a_second_apply_does_nothing() {
    let world = world_with(TWO_SERVICES);
    let plan = plan_of(&world);
    let actions: Vec<(&str, &str)> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["service"].as_str().unwrap(),
                c["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [("api", "create"), ("web", "create")],
        "api first: web needs it"
    );
    assert_eq!(
        world.run(&["deploy", "plan"]).status.code(),
        Some(1),
        "plan exits 1 when something would change"
    );

    let report = world.json(&["deploy", "apply"]);
    assert_eq!(report["ok"], true, "{report:#}");
    let outcomes: Vec<&str> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["created", "created"]);

    // web was given api's stable URL, the router's, and api runs two processes behind it.
    let web = url_of(&world, "local", "web");
    let api = url_of(&world, "local", "api");
    let (code, _, body) = get(&format!("{web}/env")).unwrap();
    assert_eq!(code, 200);
    let env: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(env["API_URL"], api.as_str());
    let pids: std::collections::BTreeSet<String> = (0..8)
        .map(|_| {
            let (_, revision, body) = get(&format!("{api}/")).unwrap();
            assert!(revision.unwrap().starts_with("api-"));
            serde_json::from_str::<Value>(&body).unwrap()["pid"].to_string()
        })
        .collect();
    assert_eq!(
        pids.len(),
        2,
        "requests are spread over both copies: {pids:?}"
    );

    // Nothing changed: plan says so with exit 0, and apply does nothing.
    let plan = plan_of(&world);
    assert_eq!(plan["changes"], serde_json::json!([]), "{plan:#}");
    world.ok(&["deploy", "plan"]);
    let again = world.json(&["deploy", "apply"]);
    assert_eq!(again["changed"], false, "{again:#}");
    assert!(
        again["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["outcome"] == "unchanged")
    );

    // A service destroyed and deployed again gets its URL back: what needs it keeps working.
    world.ok(&["deploy", "destroy", "api"]);
    world.ok(&["deploy", "block", "api"]);
    assert_eq!(url_of(&world, "local", "api"), api);
    assert_eq!(world.json(&["deploy", "verify"])["ok"], true);
    let refused = world.fails(&["deploy", "destroy", "ghost"], 2);
    assert!(refused.contains("no service `ghost`"), "{refused}");
}

#[test]
fn a_changed_service_goes_out_as_a_canary_and_rollback_is_immediate() {
    let world = world_with(TWO_SERVICES);
    world.ok(&["deploy", "apply"]);
    let first = serving(&world, "local", "web");
    set_web_env(&world, "V = \"2\"");

    let plan = plan_of(&world);
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{plan:#}");
    assert_eq!(changes[0]["action"], "update");
    assert_eq!(changes[0]["causes"], serde_json::json!(["env V changed"]));

    world.ok(&["deploy", "apply"]);
    let second = serving(&world, "local", "web");
    assert_ne!(first, second);
    let history = world.json(&["deploy", "history", "web"]);
    let causes: Vec<&str> = history["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cause"].as_str().unwrap())
        .collect();
    assert_eq!(
        causes,
        ["release", "canary step 10 %", "release"],
        "{history:#}"
    );

    // A manual 90/10 split lands within two points over 2,000 requests.
    let web = url_of(&world, "local", "web");
    world.ok(&[
        "deploy",
        "release",
        "web",
        "--weights",
        &format!("{first}=90,{second}=10"),
    ]);
    let mut to_first = 0;
    for _ in 0..2000 {
        let (code, revision, _) = get(&format!("{web}/")).unwrap();
        assert_eq!(code, 200);
        if revision.as_deref() == Some(first.as_str()) {
            to_first += 1;
        }
    }
    assert!(
        (1760..=1840).contains(&to_first),
        "90 % of 2,000 is 1,800; got {to_first}"
    );

    // Rollback: the very next request goes to the old revision.
    world.ok(&["deploy", "rollback", "web", "--to", &first]);
    let (_, revision, body) = get(&format!("{web}/")).unwrap();
    assert_eq!(revision.as_deref(), Some(first.as_str()), "{body}");
    assert_eq!(
        weights(support::deployed(&status(&world), "local", "web")),
        [(first.clone(), 100)]
    );

    // A tag gives the revision without traffic a URL of its own, for a preview.
    let tagged = world.json(&["deploy", "tag", "web", &second, "preview"]);
    let preview = tagged["tags"][0]["url"]
        .as_str()
        .expect("a tag URL")
        .to_string();
    for _ in 0..5 {
        assert_eq!(
            get(&format!("{preview}/")).unwrap().1.as_deref(),
            Some(second.as_str())
        );
        assert_eq!(
            get(&format!("{web}/")).unwrap().1.as_deref(),
            Some(first.as_str())
        );
    }
    let shown = status(&world);
    let revision = support::deployed(&shown, "local", "web")["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == second.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        (revision["tag"].as_str(), revision["tag_url"].as_str()),
        (Some("preview"), Some(preview.as_str()))
    );
    let refused = world.fails(&["deploy", "tag", "web", &second, "Bad Tag"], 1);
    assert!(refused.contains("is not a tag"), "{refused}");
    world.ok(&["deploy", "tag", "web", &second, "--remove"]);
    assert!(
        get(&format!("{preview}/")).is_err(),
        "the tag's URL is gone with it"
    );

    // A revision that serves cannot be destroyed; one without traffic can.
    let refused = world.fails(&["deploy", "destroy", "web", "--revision", &first], 2);
    assert!(refused.contains("serves 100 %"), "{refused}");
    world.ok(&["deploy", "destroy", "web", "--revision", &second]);
    assert_eq!(
        support::deployed(&status(&world), "local", "web")["revisions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_killed_process_is_restarted_and_status_counts_it() {
    let world = world_with(TWO_SERVICES);
    world.ok(&["deploy", "block", "api"]);
    let before = status(&world);
    let api = support::deployed(&before, "local", "api");
    let pid = api["revisions"][0]["copies"][0]["pid"]
        .as_u64()
        .expect("a pid");
    let url = api["url"].as_str().unwrap().to_string();
    // SAFETY: signalling a process this test's supervisor started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // Requests keep being answered by the other copy meanwhile, and the killed one comes back.
    eventually(
        "the killed copy is replaced",
        Duration::from_secs(5),
        || {
            let now = status(&world);
            let copy = &support::deployed(&now, "local", "api")["revisions"][0]["copies"][0];
            copy["restarts"] == 1 && copy["healthy"] == true && copy["pid"].as_u64() != Some(pid)
        },
    );
    let (code, _, _) = get(&format!("{url}/")).unwrap();
    assert_eq!(code, 200);
    let table = world.ok(&["deploy", "status"]);
    assert!(table.contains("RESTARTS"), "{table}");
}

#[test]
fn a_revision_that_never_gets_healthy_fails_the_apply_with_its_own_last_log_lines() {
    let world = world_with(TWO_SERVICES);
    world.ok(&["deploy", "apply"]);
    let serving_before = serving(&world, "local", "web");
    set_web_env(
        &world,
        "V = \"2\", BOOT_FAIL = \"cannot open config.yaml: no such file\"",
    );
    let output = world.run(&["--output", "json", "deploy", "apply"]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).expect("the report, failed or not");
    assert_eq!(report["ok"], false);
    let error = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(error.starts_with("error: the apply failed:"), "{error}");
    assert!(
        !error.contains("unchanged"),
        "only what went wrong: {error}"
    );
    assert!(
        error.contains("cannot open config.yaml: no such file"),
        "{error}"
    );
    assert!(
        error.contains("crash loop") || error.contains("restarted"),
        "{error}"
    );
    // The old revision still serves everything; the new one is left at 0 %.
    assert_eq!(serving(&world, "local", "web"), serving_before);
    assert!(error.contains("left at 0 %"), "{error}");
}

#[test]
fn auto_rollback_puts_back_what_the_apply_released_in_reverse_order() {
    let manifest = r#"
[sandcastle]
name = "shop"

[services.api]
run = "python3 app.py"
health = { path = "/healthz" }
env = { V = "1" }
rollout = { auto_rollback = true }

[services.web]
run = "python3 app.py"
needs = ["api"]
health = { path = "/healthz", deadline = "3s" }
env = { V = "1" }
"#;
    let world = world_with(manifest);
    world.ok(&["deploy", "apply"]);
    let api_before = serving(&world, "local", "api");
    // api changes and is released; web then fails: api goes back.
    let broken = manifest
        .replacen(
            "env = { V = \"1\" }\nrollout",
            "env = { V = \"2\" }\nrollout",
            1,
        )
        .replacen(
            "deadline = \"3s\" }\nenv = { V = \"1\" }",
            "deadline = \"3s\" }\nenv = { V = \"2\", BOOT_FAIL = \"web is broken\" }",
            1,
        );
    set_manifest(&world, &broken);
    let error = world.fails(&["deploy", "apply"], 1);
    assert!(error.contains("local/api: rolled back"), "{error}");
    assert!(error.contains("local/web: left at 0 %"), "{error}");
    assert_eq!(serving(&world, "local", "api"), api_before);
    let history = world.json(&["deploy", "history", "api"]);
    assert_eq!(
        history["releases"][0]["cause"], "auto rollback",
        "{history:#}"
    );
}

#[test]
fn the_error_rate_gate_stops_a_canary_and_puts_traffic_back() {
    let manifest = r#"
[sandcastle]
name = "shop"

[services.web]
run = "python3 app.py"
health = { path = "/healthz" }
env = { V = "1" }
rollout = { steps = [50, 100], pause = "3s", max_error_rate = 0.05 }
"#;
    let world = world_with(manifest);
    world.ok(&["deploy", "apply"]);
    let old = serving(&world, "local", "web");
    let url = url_of(&world, "local", "web");
    set_manifest(
        &world,
        &manifest.replace(
            "env = { V = \"1\" }",
            "env = { V = \"2\", FAIL_EVERY = \"2\" }",
        ),
    );
    // Traffic during the canary's pause: half of the new revision's answers are 500s.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let url = url.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = get(&format!("{url}/"));
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let error = world.fails(&["deploy", "apply"], 1);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.join().unwrap();
    assert!(error.contains("error rate"), "{error}");
    assert!(error.contains("max_error_rate"), "{error}");
    assert_eq!(
        serving(&world, "local", "web"),
        old,
        "traffic is back on the old revision"
    );
    let table = world.ok(&["deploy", "status"]);
    assert!(table.contains("ERRORS"), "{table}");
    let metrics = world.ok(&["deploy", "metrics"]);
    assert!(metrics.contains("mahavishnu_requests_total{"), "{metrics}");
    // A scraper gets the same text over HTTP, with the supervisor's token and not without.
    let scrape = status(&world)["regions"][0]["metrics_url"]
        .as_str()
        .expect("a metrics URL")
        .to_string();
    assert_eq!(get(&scrape).unwrap().0, 401);
    let token =
        std::fs::read_to_string(world.state_dir().join("deploy/shop/local/metrics-token")).unwrap();
    let (code, _, text) = get_with(
        &scrape,
        &format!("Authorization: Bearer {}\r\n", token.trim()),
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(text.contains("mahavishnu_request_errors_total{"), "{text}");
    assert_eq!(
        text.matches("# TYPE mahavishnu_requests_total").count(),
        1,
        "{text}"
    );
}

#[test]
fn an_apply_killed_part_way_is_refused_until_resumed_and_then_converges() {
    let manifest = r#"
[sandcastle]
name = "shop"

[services.api]
run = "python3 app.py"
health = { path = "/healthz" }

[services.web]
run = "python3 app.py"
needs = ["api"]
health = { path = "/healthz" }
env = { SLOW_START = "4" }
"#;
    let world = world_with(manifest);
    let mut apply = world.command(&["deploy", "apply"]).spawn().unwrap();
    // Kill it while web (which needs api) is still starting.
    eventually("api is deployed", Duration::from_secs(20), || {
        world.json(&["deploy", "status"])["regions"][0]["services"]
            .as_array()
            .is_some_and(|services| services.iter().any(|s| s["name"] == "web"))
    });
    apply.kill().unwrap();
    apply.wait().unwrap();
    let refused = world.fails(&["deploy", "apply"], 1);
    assert!(refused.contains("interrupted"), "{refused}");
    assert!(refused.contains("--resume"), "{refused}");
    world.ok(&["deploy", "apply", "--resume"]);
    let plan = plan_of(&world);
    assert_eq!(plan["changes"], serde_json::json!([]), "{plan:#}");
    world.ok(&["deploy", "verify"]);
}

#[test]
fn two_applies_on_the_same_placement_never_run_at_once() {
    let manifest = r#"
[sandcastle]
name = "shop"

[services.web]
run = "python3 app.py"
health = { path = "/healthz" }
env = { SLOW_START = "3" }
"#;
    let world = world_with(manifest);
    let mut first = world
        .command(&["deploy", "apply"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lock = world.state_dir().join("deploy-locks/shop.local.lock");
    eventually(
        "the first apply holds its lock",
        Duration::from_secs(10),
        || std::fs::read_to_string(&lock).is_ok_and(|text| text.starts_with("pid")),
    );
    let second = world.fails(&["deploy", "apply"], 1);
    assert!(
        second.contains("another apply of shop/local is running"),
        "{second}"
    );
    assert!(first.wait().unwrap().success());
}

#[test]
fn a_region_lost_behind_the_front_door_costs_no_request() {
    let manifest = r#"
[sandcastle]
name = "shop"
regions = ["local-a", "local-b"]

[services.web]
run = "python3 app.py"
health = { path = "/healthz" }

[front_door]
service = "web"
"#;
    let world = world_with(manifest);
    let report = world.json(&["deploy", "apply"]);
    let door = report["front_door"]
        .as_str()
        .expect("a front door URL")
        .to_string();
    // Revisions are named per region: a release naming one of local-a's is refused before anything
    // changes anywhere.
    let a_revision = serving(&world, "local-a", "web");
    let refused = world.fails(&["deploy", "release", "web", "--to", &a_revision], 2);
    assert!(refused.contains("--region"), "{refused}");
    let history = world.json(&["deploy", "history", "web", "--region", "local-a"]);
    assert_eq!(
        history["releases"].as_array().unwrap().len(),
        1,
        "{history:#}"
    );
    let regions: std::collections::BTreeSet<String> = (0..20)
        .map(|_| {
            let (code, _, body) = get(&format!("{door}/")).unwrap();
            assert_eq!(code, 200, "{body}");
            serde_json::from_str::<Value>(&body).unwrap()["region"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(regions.len(), 2, "both regions serve: {regions:?}");

    // Kill every process of local-a: its supervisor and its service's processes.
    let state = world.state_dir().join("deploy/shop/local-a/state.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let supervisor =
        std::fs::read_to_string(world.state_dir().join("deploy/shop/local-a/supervisor.pid"))
            .unwrap();
    let mut pids: Vec<i32> = vec![supervisor.trim().parse().unwrap()];
    for service in saved["services"].as_array().unwrap() {
        for revision in service["revisions"].as_array().unwrap() {
            for copy in revision["copies"].as_array().unwrap() {
                if let Some(pid) = copy[1][0].as_i64() {
                    pids.push(pid as i32);
                }
            }
        }
    }
    for pid in &pids {
        // SAFETY: signalling processes this test's supervisors started.
        unsafe { libc::kill(-*pid, libc::SIGKILL) };
    }
    for _ in 0..100 {
        let (code, _, body) = get(&format!("{door}/")).unwrap();
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["region"],
            "local-b"
        );
    }
}

#[test]
fn a_secret_reaches_the_process_and_nothing_else() {
    let secret = "s3cr3t-value-of-the-test";
    let manifest = r#"
[sandcastle]
name = "shop"

[services.web]
run = "python3 app.py"
health = { path = "/healthz" }
secrets = { SECRET = "env:SHOP_TEST_SECRET" }
"#;
    let world = world_with(manifest);
    let missing = world.fails(&["deploy", "apply"], 1);
    assert!(missing.contains("SHOP_TEST_SECRET"), "{missing}");
    let output = world
        .command(&["--output", "json", "deploy", "apply"])
        .env("SHOP_TEST_SECRET", secret)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let url = url_of(&world, "local", "web");
    let (_, _, body) = get(&format!("{url}/secret")).unwrap();
    let digest = mahavishnu_core::digest::sha256_hex(secret.as_bytes());
    assert!(body.contains(&digest), "the process got the value: {body}");
    let mut seen = String::from_utf8_lossy(&output.stdout).into_owned();
    seen += &world.ok(&["--output", "json", "deploy", "status"]);
    seen += &plan_of(&world).to_string();
    seen += &world.ok(&["deploy", "logs", "web"]);
    for entry in walk(&world.state_dir()) {
        seen += &String::from_utf8_lossy(&std::fs::read(entry).unwrap_or_default());
    }
    // Nor the supervisor, which outlives the command that was given the value.
    let supervisor =
        std::fs::read_to_string(world.state_dir().join("deploy/shop/local/supervisor.pid"))
            .unwrap();
    seen += &String::from_utf8_lossy(
        &std::fs::read(format!("/proc/{}/environ", supervisor.trim())).unwrap(),
    );
    assert!(!seen.contains(secret), "the secret's value leaked");
    assert!(
        seen.contains("env:SHOP_TEST_SECRET"),
        "the reference is shown"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn every_bad_manifest_problem_is_named_with_its_line_and_key_and_nothing_runs() {
    let world = world_with(
        r#"[sandcastle]
name = "shop"
colour = "blue"

[services.web]
run = "python3 app.py"
needs = ["nothing", "api"]
nedds = ["api"]
secrets = { KEY = "hunter2" }
subscribes = { orders = "events/orders" }

[services.api]
run = "python3 app.py"
needs = ["web"]

[services."../escape"]
run = "touch pwned"

[topics.orders]
"#,
    );
    let output = world.run(&["deploy", "validate"]);
    assert_eq!(output.status.code(), Some(1));
    let report = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "mahavishnu.deploy.toml:3: sandcastle.colour: unknown key `colour`",
        ":7: services.web.needs: names no service `nothing`",
        ":8: services.web.nedds: unknown key `nedds`",
        ":9: services.web.secrets.KEY: is not a secret reference",
        ":10: services.web.subscribes: the push path for `orders`, `events/orders`, must start with `/`",
        "services.api.needs: the services need each other in a cycle",
        "services.../escape: `../escape` is not a valid name",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    let output = world.run(&["--output", "json", "deploy", "validate"]);
    assert_eq!(output.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["problems"].as_array().unwrap().len(), 7, "{json:#}");
    // plan and apply refuse the same manifest, and nothing is started.
    let refused = world.fails(&["deploy", "apply"], 2);
    assert!(refused.contains("7 problems"), "{refused}");
    assert!(!world.state_dir().join("deploy").exists());
    assert!(!world.work().join("pwned").exists());
}

/// The MCP tools and `/v1` return what `--output json` prints.
#[test]
fn the_deploy_tools_over_mcp_and_v1_return_the_cli_shapes() {
    let world = world_with(TWO_SERVICES);
    world.ok(&["deploy", "apply"]);
    let inspector = std::env::var_os("MAHAVISHNU_TEST_INSPECTOR").expect(
        "MAHAVISHNU_TEST_INSPECTOR is not set: run the tests with `scripts/test`, which installs the MCP Inspector",
    );
    let call = |tool: &str, args: &[&str]| -> Value {
        let mut command = world.program(&inspector);
        command.args([
            "--cli",
            support::binary().to_str().unwrap(),
            "mcp",
            "--method",
            "tools/call",
            "--tool-name",
            tool,
        ]);
        for arg in args {
            command.args(["--tool-arg", arg]);
        }
        let output = support::succeeded(&format!("inspector {tool}"), command.output().unwrap());
        let reply: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(reply["isError"], false, "{reply:#}");
        reply["structuredContent"].clone()
    };
    assert_eq!(
        call("deploy_history", &["service=web"]),
        world.json(&["deploy", "history", "web"])
    );
    assert_eq!(call("deploy_plan", &[]), plan_of(&world));
    let names = |status: &Value| -> Vec<(String, Vec<(String, u64)>)> {
        status["regions"][0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_string(), weights(s)))
            .collect()
    };
    assert_eq!(
        names(&call("deployment_status", &[])),
        names(&status(&world))
    );

    // /v1 answers with the same shapes.
    let mut serve = world
        .command(&["serve", "--listen", "127.0.0.1:0", "--no-token"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(serve.stderr.take().unwrap());
    let address = loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(!line.is_empty(), "serve ended before serving");
        if line.contains("serving MCP at")
            && let Some(rest) = line.split("http://").nth(1)
        {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let (status, json) = post(
        &format!("http://{address}/v1/deploy_history"),
        r#"{"service":"web"}"#,
    );
    let _ = serve.kill();
    let _ = serve.wait();
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap(),
        world.json(&["deploy", "history", "web"])
    );
}

/// A world whose work directory holds a copy of `examples/NAME`.
fn example_world(name: &str) -> World {
    let world = World::new();
    support::copy_example(&world, name);
    world
}

#[test]
fn the_sandcastle_example_deploys_verifies_takes_a_canary_and_survives_a_lost_region() {
    if !support::pubsub_wanted("the sandcastle example") {
        return;
    }
    let world = example_world("sandcastle");
    let apply = |args: &[&str]| {
        let mut all = vec!["--output", "json", "deploy"];
        all.extend(args);
        let output = world
            .command(&all)
            .env("SHOP_SESSION_KEY", "test-session-key")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let report = apply(&["apply"]);
    let order: Vec<String> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["region"] == "local-a")
        .map(|s| s["service"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        order[..2]
            .iter()
            .filter(|s| *s == "migrate" || *s == "webhooks")
            .count(),
        2,
        "the job and webhooks come first: {order:?}"
    );
    let door = report["front_door"]
        .as_str()
        .expect("a front door")
        .to_string();

    // Every check holds: health, web -> webhooks from web's side, a probe through the topic.
    let verify = world.json(&["deploy", "verify"]);
    assert_eq!(verify["ok"], true, "{verify:#}");
    let checks: Vec<&str> = verify["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert!(
        checks.contains(&"topic orders -> worker") && checks.contains(&"link web -> webhooks"),
        "{checks:?}"
    );

    // An order through the front door reaches the worker of the region that took it, through Pub/Sub.
    let (code, body) = post(&format!("{door}/orders"), r#"{"item":"green tea"}"#);
    assert_eq!(code, 202, "{body}");
    let region = serde_json::from_str::<Value>(&body).unwrap()["region"]
        .as_str()
        .unwrap()
        .to_string();
    let worker = url_of(&world, &region, "worker");
    eventually(
        "the order reaches the worker",
        Duration::from_secs(15),
        || get(&format!("{worker}/orders")).is_ok_and(|(_, _, body)| body.contains("green tea")),
    );

    // A new greeting goes out as a 90/10 canary, region by region, and rolls back at once.
    let before = serving(&world, "local-a", "web");
    let manifest = std::fs::read_to_string(world.work().join("mahavishnu.deploy.toml")).unwrap();
    set_manifest(
        &world,
        &manifest.replace("GREETING = \"hello\"", "GREETING = \"welcome\""),
    );
    apply(&["apply"]);
    let history = world.json(&["deploy", "history", "web", "--region", "local-b"]);
    let causes: Vec<&str> = history["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cause"].as_str().unwrap())
        .collect();
    assert_eq!(&causes[..2], ["release", "canary step 10 %"], "{history:#}");
    let web = url_of(&world, "local-a", "web");
    assert!(get(&format!("{web}/")).unwrap().2.contains("welcome"));
    world.ok(&["deploy", "rollback", "web", "--region", "local-a"]);
    assert_eq!(serving(&world, "local-a", "web"), before);
    assert!(get(&format!("{web}/")).unwrap().2.contains("hello"));

    // The worker of local-b crashes: it is started again and counted, and its topic still delivers.
    let now = status(&world);
    let worker_pid =
        support::deployed(&now, "local-b", "worker")["revisions"][0]["copies"][0]["pid"]
            .as_i64()
            .unwrap() as i32;
    // SAFETY: signalling a process group this test's supervisor started.
    unsafe { libc::kill(-worker_pid, libc::SIGKILL) };
    eventually(
        "the worker is started again",
        Duration::from_secs(10),
        || {
            let now = status(&world);
            let copy = &support::deployed(&now, "local-b", "worker")["revisions"][0]["copies"][0];
            copy["restarts"] == 1 && copy["healthy"] == true
        },
    );
    let verify = world.json(&["deploy", "verify", "--region", "local-b"]);
    assert_eq!(verify["ok"], true, "{verify:#}");

    // Every process of local-a dies; the front door keeps answering from local-b.
    let supervisor =
        std::fs::read_to_string(world.state_dir().join("deploy/shop/local-a/supervisor.pid"))
            .unwrap();
    let region_a = status(&world);
    let mut pids: Vec<i32> = vec![supervisor.trim().parse().unwrap()];
    for service in support::deployed(&region_a, "local-a", "web")["revisions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        pids.extend(
            service["copies"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c["pid"].as_i64())
                .map(|p| p as i32),
        );
    }
    for pid in pids {
        // SAFETY: signalling processes this test's supervisors started.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    for _ in 0..50 {
        let (code, _, body) = get(&format!("{door}/")).unwrap();
        assert_eq!(code, 200, "{body}");
    }
    world.ok(&["deploy", "destroy"]);
    assert!(!world.state_dir().join("deploy/shop").exists());
    assert!(
        !world
            .state_dir()
            .join("pubsub/pubsub-emulator.json")
            .exists(),
        "the emulator started for the sandcastle stops with the last one"
    );
}

#[test]
fn the_pipeline_example_deploys_a_pipeline_then_a_block_wired_by_a_topic() {
    if !support::pubsub_wanted("the pipeline example") {
        return;
    }
    let world = example_world("pipeline");
    let report = world.json(&["deploy", "pipeline", "checkout"]);
    let deployed: Vec<&str> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert!(
        !deployed.contains(&"audit"),
        "only the pipeline and what it needs: {deployed:?}"
    );
    assert!(
        !deployed.contains(&"db"),
        "an external is not deployed: {deployed:?}"
    );
    let gateway = url_of(&world, "local", "gateway");
    let (_, _, body) = get(&format!("{gateway}/")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["chain"],
        serde_json::json!(["gateway", "auth", "api", "sqlite:///tmp/blocks.db"])
    );

    // The audit block: deployed on its own; api, which it follows through the topic, is left alone.
    let report = world.json(&["deploy", "block", "audit"]);
    let outcomes: Vec<(&str, &str)> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap(),
                s["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(outcomes, [("audit", "created")], "{report:#}");
    let audit = url_of(&world, "local", "audit");
    get(&format!("{gateway}/")).unwrap();
    eventually(
        "api's audit event reaches the audit block",
        Duration::from_secs(15),
        || get(&format!("{audit}/audited")).is_ok_and(|(_, _, body)| body.contains("api -> ")),
    );
    assert_eq!(world.json(&["deploy", "verify"])["ok"], true);
}

#[test]
fn a_supervisor_that_died_is_recovered_and_secrets_wait_for_the_next_apply() {
    let manifest = r#"
[sandcastle]
name = "shop"

[services.api]
run = "python3 app.py"
health = { path = "/healthz" }

[services.web]
run = "python3 app.py"
needs = ["api", "once"]
health = { path = "/healthz" }
secrets = { SECRET = "env:SHOP_TEST_SECRET" }

[services.once]
kind = "job"
run = "echo the job ran"
"#;
    let world = world_with(manifest);
    let apply = || {
        let output = world
            .command(&["deploy", "apply"])
            .env("SHOP_TEST_SECRET", "kept-in-memory")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    apply();
    let api = url_of(&world, "local", "api");
    let web = url_of(&world, "local", "web");
    let before = world.ok(&["deploy", "logs", "api"]);
    assert!(before.contains("listening"), "{before}");
    let supervisor =
        std::fs::read_to_string(world.state_dir().join("deploy/shop/local/supervisor.pid"))
            .unwrap();
    // SAFETY: signalling the supervisor this test started.
    unsafe { libc::kill(supervisor.trim().parse().unwrap(), libc::SIGKILL) };
    eventually(
        "the router is gone with its supervisor",
        Duration::from_secs(5),
        || get(&format!("{api}/")).is_err(),
    );

    let recovered = world.json(&["deploy", "recover"]);
    assert_eq!(
        recovered["recovered"],
        serde_json::json!([{"sandcastle": "shop", "region": "local"}]),
        "{recovered:#}"
    );
    assert_eq!(
        world.json(&["deploy", "recover"])["recovered"],
        serde_json::json!([]),
        "once is enough"
    );
    // api has no secret: it runs again at the same URL. web's secret was never stored: it waits.
    eventually(
        "api serves again at its URL",
        Duration::from_secs(10),
        || get(&format!("{api}/")).is_ok_and(|(code, _, _)| code == 200),
    );
    let waiting =
        support::deployed(&status(&world), "local", "web")["revisions"][0]["health"].clone();
    assert_eq!(waiting["state"], "failed", "{waiting}");
    assert!(
        waiting["reason"]
            .as_str()
            .unwrap()
            .contains("secrets are never stored"),
        "{waiting}"
    );
    let plan = plan_of(&world);
    assert_eq!(plan["changes"][0]["action"], "blocked", "{plan:#}");
    assert!(
        plan["changes"][0]["causes"]
            .to_string()
            .contains("SHOP_TEST_SECRET"),
        "{plan:#}"
    );
    let output = world
        .command(&["--output", "json", "deploy", "plan"])
        .env("SHOP_TEST_SECRET", "x")
        .output()
        .unwrap();
    let plan: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["changes"][0]["action"], "restart", "{plan:#}");
    apply();
    assert_eq!(get(&format!("{web}/")).unwrap().0, 200);
    assert_eq!(plan_of(&world)["changes"], serde_json::json!([]));
    // The job ran once: a supervisor that starts again does not run it again.
    let ran = world.ok(&["deploy", "logs", "once"]);
    assert_eq!(ran.matches("the job ran").count(), 1, "{ran}");
    assert_eq!(
        support::deployed(&status(&world), "local", "once")["revisions"][0]["health"]["state"],
        "succeeded"
    );
    let refused = world.fails(&["deploy", "rollback", "once"], 2);
    assert!(refused.contains("is a job"), "{refused}");
}

#[test]
fn logs_follow_what_a_service_writes() {
    let world = world_with(TWO_SERVICES);
    world.ok(&["deploy", "block", "api"]);
    let mut follow = world
        .command(&["deploy", "logs", "api", "--follow", "--tail", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // The last line comes first: the follower is connected (and listening for new lines) then.
    let first = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the last line");
    assert!(first.ends_with("listening"), "{first}");
    // A killed copy starts again and says so; the follower sees it.
    let now = status(&world);
    let pid = support::deployed(&now, "local", "api")["revisions"][0]["copies"][0]["pid"]
        .as_i64()
        .unwrap() as i32;
    // SAFETY: signalling a process this test's supervisor started.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let line = received
        .recv_timeout(Duration::from_secs(10))
        .expect("a new line while following");
    assert!(
        line.ends_with("listening") && line.starts_with("api-"),
        "{line}"
    );
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn a_service_with_only_an_image_is_blocked_without_a_container_engine_and_the_plan_says_why() {
    let world = world_with(
        r#"
[sandcastle]
name = "shop"

[services.api]
image = "registry.example/api:1"
"#,
    );
    // A PATH without podman or docker.
    let output = world
        .command(&["--output", "json", "deploy", "plan"])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let plan: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["changes"][0]["action"], "blocked", "{plan:#}");
    let cause = plan["changes"][0]["causes"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        cause.contains("neither podman nor docker") && cause.contains("run = \"COMMAND\""),
        "{cause}"
    );
    let refused = String::from_utf8(
        world
            .command(&["deploy", "apply"])
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap()
            .stderr,
    )
    .unwrap();
    assert!(refused.contains("neither podman nor docker"), "{refused}");
}
