//! The web dashboard of `serve`, in a real browser (Debian's Chromium, headless, driven by
//! playwright-core from `scripts/test`), and attacked with plain HTTP: no cookie, a used link, a
//! foreign origin, a page from elsewhere.

mod support;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::{Serve, World, http};

/// A login URL, as `mahavishnu dashboard` prints it.
fn login_url(world: &World, serve: &Serve) -> String {
    world
        .ok(&["dashboard", "--listen", &serve.address])
        .trim()
        .to_string()
}

/// The session cookie a login URL gives.
fn log_in(url: &str) -> String {
    let (status, head, _) = raw(url, "");
    assert_eq!(status, 303, "{head}");
    head.lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .and_then(|cookie| cookie.split(';').next())
        .unwrap_or_else(|| panic!("a cookie in {head}"))
        .to_string()
}

/// A GET with extra header lines: status, head and body.
fn raw(url: &str, headers: &str) -> (u16, String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Where the browser test finds playwright-core and Chromium, or why it cannot run.
fn browser() -> (PathBuf, PathBuf) {
    let modules = std::env::var_os("MAHAVISHNU_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .expect("MAHAVISHNU_TEST_NODE_MODULES is not set: run the tests with `scripts/test`, which installs playwright-core");
    let chromium = std::env::var_os("MAHAVISHNU_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(
        chromium.exists(),
        "{} is missing: install Debian's chromium (`.ci/run` does)",
        chromium.display()
    );
    (modules, chromium)
}

/// Where the browser tests leave their screenshots: `target/test-artifacts/dashboard/`.
fn shots() -> PathBuf {
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../test-artifacts/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    shots
}

/// Runs `tests/browser/SCRIPT.mjs` with `args` in Chromium and returns the JSON of what it saw;
/// fails the test with the script's reason when a step failed.
fn run_browser(script: &str, args: &[&str]) -> Value {
    let (modules, chromium) = browser();
    let output = Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/browser/{script}.mjs")))
        .args(args)
        .env("MAHAVISHNU_TEST_NODE_MODULES", &modules)
        .env("MAHAVISHNU_TEST_CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

/// What `tests/browser/terminal.mjs` saw in a session's terminal page: the typed command's output,
/// and the session at the browser terminal's size, then at its new size when the window shrank.
fn assert_typed_and_resized(seen: &Value) {
    assert_eq!(seen["terminal_echo"], true, "{seen:#}");
    let sizes = seen["terminal_sizes"].as_array().unwrap();
    assert_eq!(sizes.len(), 2, "{sizes:?}");
    for size in sizes {
        assert_eq!(size["session"], size["browser"], "{sizes:?}");
    }
    assert_ne!(sizes[0]["session"], sizes[1]["session"], "{sizes:?}");
}

/// Three shells on the grid (a pty one and two on tmux), one printing markup; in the browser: their
/// tiles with their prompts, a tile following its screen, a line sent to all, a command typed into
/// the pty session's terminal, an exited session's tile saying so, a launch from the page and a
/// tile closed. Screenshots go to `target/test-artifacts/dashboard/`.
#[test]
fn the_dashboard_shows_sessions_live_and_types_into_them_in_a_real_browser() {
    browser(); // before anything starts, so that a missing browser says so first
    let world = World::new();
    let serve = Serve::start(&world);
    // The one typed into in the browser is a pty session; the others are tmux sessions.
    let shells = vec![
        world.launch(&["shell", "--target", "pty"]).remove(0),
        world.launch(&["shell"]).remove(0),
    ];
    let ticking = world
        .launch(&[
            "shell",
            "--",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick-$i; sleep 1; done",
        ])
        .remove(0);
    world.ok(&[
        "terminal",
        "send",
        &shells[1],
        "echo '<img src=x onerror=window.pwned=1>'",
    ]);
    world.ok(&["terminal", "wait", &shells[1], "--for", "onerror"]);
    let url = login_url(&world, &serve);
    let shots = shots();
    let seen = run_browser(
        "dashboard",
        &[&url, shots.to_str().unwrap(), &shells[0], &ticking],
    );
    let tiles = seen["tiles"].as_array().unwrap();
    assert_eq!(tiles.len(), 3, "{seen:#}");
    for shell in &shells {
        let tile = tiles.iter().find(|t| t["id"] == shell.as_str()).unwrap();
        let screen = tile["screen"].as_str().unwrap().trim_end();
        assert!(
            screen.ends_with('#') || screen.ends_with('$'),
            "its prompt: {tile}"
        );
    }
    let marked = tiles
        .iter()
        .find(|t| t["id"] == shells[1].as_str())
        .unwrap();
    assert!(
        marked["screen"]
            .as_str()
            .unwrap()
            .contains("<img src=x onerror=window.pwned=1>"),
        "markup shows as text: {marked}"
    );
    assert_eq!(seen["pwned"], false, "and runs nothing");
    assert!(
        seen["title"].as_str().unwrap().contains("waiting"),
        "{seen}"
    );
    assert_eq!(seen["followed"], true);
    assert_eq!(seen["sent_to_all"], true);
    assert_typed_and_resized(&seen);
    assert!(
        seen["exited_label"].as_str().unwrap().starts_with("exited"),
        "{seen}"
    );
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "no error in the page"
    );
    assert!(
        seen["launched"].as_str().unwrap().contains("launched"),
        "{seen}"
    );
    assert_eq!(seen["closed"], true);
    assert_eq!(world.state_of(&ticking), "closed");
    // What was typed in the browser is in the session, for every face to see.
    let capture = world.ok(&["terminal", "capture", &shells[0]]);
    assert!(capture.contains("typed-in-42"), "{capture}");
    assert!(shots.join("grid.png").exists() && shots.join("terminal.png").exists());
}

/// Without a cookie, with a used or made-up link, from a foreign origin, or framed by another page:
/// nothing; a login code wants serve's bearer token.
#[test]
fn the_dashboard_lets_in_only_the_browser_that_logged_in() {
    let world = World::new();
    let serve = Serve::start(&world);
    let shell = world.launch(&["shell"]).remove(0);
    let url = login_url(&world, &serve);
    // No cookie: nothing, not even the tiles or the stream.
    for path in [
        "/dashboard/",
        "/dashboard/tiles",
        "/dashboard/updates",
        "/dashboard/events",
    ] {
        let (status, _, body) = raw(&serve.url(path), "");
        assert_eq!(status, 401, "{path}");
        assert!(
            !body.contains(&shell),
            "{path} shows nothing of the sessions"
        );
    }
    let cookie = log_in(&url);
    // The link worked once.
    let (status, _, body) = raw(&url, "");
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("mahavishnu dashboard"),
        "it says how to get another: {body}"
    );
    let (status, _, _) = raw(&serve.url("/dashboard/login?code=0000"), "");
    assert_eq!(status, 401);
    // With the cookie: the grid, with the page's protections.
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let (status, head, body) = raw(&serve.url("/dashboard/"), &with_cookie);
    assert_eq!(status, 200);
    assert!(body.contains(&shell));
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"));
    assert!(head.contains("cache-control: no-store"));
    assert!(head.contains("x-frame-options: deny"));
    assert!(!body.contains("<script>"), "no inline script");
    // A page of another site, even with the cookie (which SameSite=Strict keeps from it anyway).
    let foreign = format!("{with_cookie}Origin: http://evil.example\r\n");
    let (status, _, _) = raw(&serve.url("/dashboard/"), &foreign);
    assert_eq!(status, 403);
    // A made-up cookie.
    let (status, _, _) = raw(
        &serve.url("/dashboard/"),
        "Cookie: mahavishnu_dashboard=00\r\n",
    );
    assert_eq!(status, 401);
    // A login code wants the token; the page's actions want the cookie and JSON.
    let (status, _) = support::post(&serve.url("/dashboard/codes"), "{}");
    assert_eq!(status, 401);
    let (status, _, body) = http(
        "POST",
        &serve.url("/dashboard/actions/terminal_close"),
        "Content-Type: text/plain\r\n",
        &format!("{{\"ids\": [\"{shell}\"]}}"),
    )
    .unwrap();
    assert!(status == 401 || status == 415, "{status} {body}");
    let (status, _, body) = http(
        "POST",
        &serve.url("/dashboard/actions/terminal_exec"),
        &format!("{with_cookie}Content-Type: application/json\r\n"),
        "{}",
    )
    .unwrap();
    assert_eq!(status, 404, "only the page's own actions: {body}");
    assert_ne!(world.state_of(&shell), "closed", "nothing was closed");
    // With both, an action runs.
    let (status, _, body) = http(
        "POST",
        &serve.url("/dashboard/actions/terminal_close"),
        &format!("{with_cookie}Content-Type: application/json\r\n"),
        &format!("{{\"ids\": [\"{shell}\"]}}"),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(world.state_of(&shell), "closed");
}

/// A local deployment on the deployments page: its graph (services by wave, the needs between
/// them), every revision's traffic, a release from the page that moves the traffic back to the old
/// revision, and the service's logs as they come.
#[test]
fn the_dashboard_shows_a_deployment_and_moves_its_traffic_in_a_real_browser() {
    browser(); // before anything starts, so that a missing browser says so first
    let world = World::new();
    std::fs::write(world.work().join("app.py"), support::APP).unwrap();
    let manifest = |version: &str| {
        format!(
            "[sandcastle]\nname = \"shop\"\n\n[services.api]\nrun = \"python3 app.py\"\n\
             health = {{ path = \"/healthz\" }}\n\n[services.web]\nrun = \"python3 app.py\"\n\
             needs = [\"api\"]\nhealth = {{ path = \"/healthz\" }}\nenv = {{ V = \"{version}\" }}\n"
        )
    };
    std::fs::write(world.work().join("mahavishnu.deploy.toml"), manifest("1")).unwrap();
    world.ok(&["deploy", "apply"]);
    let status = world.json(&["deploy", "status"]);
    let old = support::weights(support::deployed(&status, "local", "web"))[0]
        .0
        .clone();
    std::fs::write(world.work().join("mahavishnu.deploy.toml"), manifest("2")).unwrap();
    world.ok(&["deploy", "apply"]);
    let serve = Serve::start(&world);
    let url = login_url(&world, &serve);
    let shots = shots();
    let seen = run_browser("deployments", &[&url, shots.to_str().unwrap(), &old]);
    assert_eq!(seen["nodes"], serde_json::json!(["api", "web"]), "{seen:#}");
    assert_eq!(seen["edges"], 1, "web needs api");
    let rows = seen["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r[2] == old.as_str() && r[3].as_str().unwrap().contains("0%")),
        "the old revision at 0 %: {seen:#}"
    );
    assert_eq!(seen["released"], true);
    assert_eq!(seen["logs"], true);
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "no error in the page"
    );
    // The release happened for every face.
    let status = world.json(&["deploy", "status"]);
    assert_eq!(
        support::weights(support::deployed(&status, "local", "web")),
        vec![(old, 100)]
    );
    world.stop_deploy_supervisors();
}

/// The event stream is pushed as it happens; the coding sessions page lists checkpoints with links
/// to their diffs; a worktree session's diff page shows its change as a diff.
#[test]
fn events_checkpoints_and_a_worktree_diff_on_their_pages() {
    let world = World::new();
    support::git(&world.work(), &["init", "-q", "-b", "main"]);
    std::fs::write(world.work().join("README"), "one\n").unwrap();
    support::git(&world.work(), &["add", "README"]);
    support::git_commit(&world.work(), &["-m", "one"]);
    let serve = Serve::start(&world);
    let cookie = log_in(&login_url(&world, &serve));
    let with_cookie = format!("Cookie: {cookie}\r\n");
    // The stream, read as it comes.
    let address = serve.address.clone();
    let header = with_cookie.clone();
    let (lines, received) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /dashboard/updates HTTP/1.1\r\nHost: {address}\r\n{header}\r\n"
        )
        .unwrap();
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let shell = world
        .launch(&["shell", "--worktree", "--name", "fixer"])
        .remove(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut launched = false;
    while std::time::Instant::now() < deadline && !launched {
        if let Ok(line) = received.recv_timeout(std::time::Duration::from_millis(200)) {
            launched = line.starts_with("data: {\"kind\":\"event\"") && line.contains(&shell);
        }
    }
    assert!(launched, "the launch came down the stream");
    // A change in the worktree, as a diff.
    world.ok(&[
        "terminal",
        "send",
        &shell,
        "echo two >> README; echo written",
    ]);
    world.ok(&["terminal", "wait", &shell, "--for", "^written"]);
    let (status, _, body) = raw(
        &serve.url(&format!("/dashboard/sessions/{shell}/diff")),
        &with_cookie,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<span class=\"add\">+two</span>"), "{body}");
    assert!(body.contains("data-action=\"merge\""));
    // A checkpoint, listed and shown.
    world.ok(&["checkpoint", "--message", "before <b>bold</b> work"]);
    let (status, _, body) = raw(&serve.url("/dashboard/lifecycle"), &with_cookie);
    assert_eq!(status, 200);
    assert!(
        body.contains("before &lt;b&gt;bold&lt;/b&gt; work"),
        "escaped: {body}"
    );
    let id = body
        .split("href=\"/dashboard/checkpoints/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a checkpoint's link")
        .to_string();
    let (status, _, body) = raw(
        &serve.url(&format!("/dashboard/checkpoints/{id}")),
        &with_cookie,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("class=\"diff\""), "{body}");
    let (status, _, body) = raw(&serve.url("/dashboard/events"), &with_cookie);
    assert_eq!(status, 200);
    assert!(body.contains(&shell), "the launch is listed: {body}");
}

/// A shell in a pod (the fake API server of the tests: no real cluster runs here) in the browser's
/// terminal, as a tmux or pty session is: typed into over its attach stream, its screen following,
/// resized through the attach's resize channel.
#[cfg(feature = "kubernetes")]
#[test]
fn a_pod_shell_is_typed_into_and_resized_in_a_real_browser() {
    browser(); // before anything starts, so that a missing browser says so first
    let fake = support::fake_kube::FakeKube::start();
    let world = World::new();
    let kubeconfig = fake.kubeconfig(world.dir.path(), "dev");
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!(
            "[targets.kubernetes]\nkubeconfig = {:?}\nimage = \"busybox:1.36\"\n",
            kubeconfig.display().to_string()
        ),
    )
    .unwrap();
    let serve = Serve::start(&world);
    let id = world.launch(&["shell", "--target", "kubernetes"]).remove(0);
    world.ok(&["terminal", "wait", &id, "--idle", "300", "--timeout", "20"]);
    let url = login_url(&world, &serve);
    let shots = shots();
    let seen = run_browser(
        "terminal",
        &[&url, shots.join("pod-terminal.png").to_str().unwrap(), &id],
    );
    assert_typed_and_resized(&seen);
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen:#}");
    // What the browser typed reached the pod: the CLI reads it there too.
    let screen = world.ok(&["terminal", "capture", &id, "--scrollback"]);
    assert!(screen.contains("typed-in-42"), "{screen}");
    world.ok(&["terminal", "close", &id]);
}

/// The workflows page lists the workflows and the latest sweeps; "Run now" runs one (a sweep whose
/// output carries markup, shown as text), its sweep has a page of results, and "Run again where it
/// did not succeed" reruns it. Both buttons call operations only with the cookie.
#[test]
fn workflows_and_their_sweeps_on_their_page() {
    let world = World::new();
    let repo = world.dir.path().join("site");
    std::fs::create_dir_all(&repo).unwrap();
    support::git(&repo, &["init", "-q"]);
    world.ok(&["repos", "add", repo.to_str().unwrap(), "--tag", "web"]);
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        "[workflows.nightly]\nschedule = \"0 3 * * *\"\ntimezone = \"UTC\"\n\
         sweep = { tag = \"web\", command = [\"sh\", \"-c\", \"echo '<img src=x onerror=window.pwned=1>'; exit 3\"] }\n",
    )
    .unwrap();
    let serve = Serve::start(&world);
    let cookie = log_in(&login_url(&world, &serve));
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let (status, _, body) = raw(&serve.url("/dashboard/workflows"), &with_cookie);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<td>nightly</td>") && body.contains("never run"),
        "{body}"
    );
    assert!(
        body.contains("schedule 0 3 * * *") && body.contains("T03:00:00Z"),
        "{body}"
    );
    assert!(
        body.contains("data-action=\"run-workflow\" data-name=\"nightly\""),
        "{body}"
    );
    let run = |operation: &str, body: &str, headers: &str| {
        http(
            "POST",
            &serve.url(&format!("/dashboard/actions/{operation}")),
            &format!("{headers}Content-Type: application/json\r\n"),
            body,
        )
        .unwrap()
    };
    let (status, _, _) = run("workflow_run", "{\"name\": \"nightly\"}", "");
    assert_eq!(status, 401, "not without the cookie");
    let (status, _, body) = run("workflow_run", "{\"name\": \"nightly\"}", &with_cookie);
    assert_eq!(status, 200, "{body}");
    let (_, _, body) = raw(&serve.url("/dashboard/workflows"), &with_cookie);
    assert!(
        body.contains("failed (by hand): sweep 1: 0 ok, 1 failed of 1"),
        "{body}"
    );
    assert!(
        body.contains("<a href=\"/dashboard/sweeps/1\">1</a>"),
        "{body}"
    );
    let (status, _, body) = raw(&serve.url("/dashboard/sweeps/1"), &with_cookie);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("&lt;img src=x onerror=window.pwned=1&gt;"),
        "escaped: {body}"
    );
    assert!(!body.contains("<img"), "{body}");
    assert!(
        body.contains("data-action=\"rerun-failed\" data-sweep=\"1\""),
        "{body}"
    );
    let (status, _, body) = run("sweep_rerun", "{\"id\": 1, \"failed\": true}", &with_cookie);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        world.json(&["sweep", "list"])["sweeps"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, _, _) = raw(&serve.url("/dashboard/sweeps/99"), &with_cookie);
    assert_eq!(status, 404);

    // In a real browser: Run now, the run and its sweep on the page, the sweep's results.
    let shots = shots();
    let seen = run_browser(
        "workflows",
        &[
            &login_url(&world, &serve),
            shots.to_str().unwrap(),
            "nightly",
        ],
    );
    assert_eq!(seen["sweeps_before"], 2, "{seen:#}");
    assert_eq!(seen["sweeps_after"], 3, "the click ran it: {seen:#}");
    assert!(
        seen["last"].as_str().unwrap().contains("sweep 3:"),
        "{seen:#}"
    );
    let results = seen["results"].as_array().unwrap();
    assert_eq!(results[0][0], "site", "{seen:#}");
    assert_eq!(
        results[0][4], "<img src=x onerror=window.pwned=1>",
        "as text: {seen:#}"
    );
    assert_eq!(seen["pwned"], false);
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen:#}");
}
