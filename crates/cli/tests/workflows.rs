//! Workflows across many repositories, on real git repositories made by the tests: the catalog,
//! sweeps of commands (failures, a timeout, huge output, a repository that is gone), quality checks
//! compared with the tools run by hand, an agent sweep of the real Qwen Code in worktrees, and
//! workflows that `serve` runs on a schedule, on a hook event and on a Pub/Sub message.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::stub_model::StubModel;
use support::{Serve, World, eventually, git, git_commit, qwen};

/// A git repository `name` under `root` with `files` committed.
fn repository(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    git(&dir, &["add", "-A"]);
    git_commit(&dir, &["-m", "first"]);
    dir
}

/// The files that make a repository of `kind` (with nothing to build).
fn kind_files(kind: &str) -> Vec<(&'static str, &'static str)> {
    match kind {
        "rust" => vec![("Cargo.toml", "[package]\nname = \"x\"\n")],
        "python" => vec![("pyproject.toml", "[project]\nname = \"x\"\n")],
        "node" => vec![("package.json", "{\"name\": \"x\"}\n")],
        _ => vec![("go.mod", "module x\n\ngo 1.19\n")],
    }
}

/// The command every repository of the big sweep runs: what its `BEHAVIOUR` file says, with its
/// start and end in the shared log.
const BEHAVE: &str = r#"echo "start $PWD" >> "$SWEEP_LOG"
case "$(cat BEHAVIOUR)" in
  fail) echo "broken build" >&2; code=2 ;;
  slow) echo started; sleep 60 ;;
  huge) head -c 30000000 /dev/zero | tr '\0' x; echo; echo the-end ;;
  *) sleep 0.3; echo "fine $(basename "$PWD")" ;;
esac
echo "end $PWD" >> "$SWEEP_LOG"
exit ${code:-0}"#;

/// The result of `repo` in a sweep's JSON.
fn result_of<'a>(sweep: &'a Value, repo: &str) -> &'a Value {
    sweep["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|result| result["repo"] == repo)
        .unwrap_or_else(|| panic!("no result for {repo}: {sweep:#}"))
}

/// The most repositories that ran at once, from the shared log's start and end lines.
fn most_at_once(log: &Path) -> usize {
    let (mut now, mut most) = (0usize, 0usize);
    for line in std::fs::read_to_string(log).unwrap().lines() {
        if line.starts_with("start ") {
            now += 1;
            most = most.max(now);
        } else if line.starts_with("end ") {
            now = now.saturating_sub(1);
        }
    }
    most
}

/// 30 repositories of four kinds: scanned into the catalog, listed, swept four at a time with two
/// failures, a timeout, 30 MB of output and one that is not a git repository any more; shown,
/// listed and run again where it failed.
#[test]
fn thirty_repositories_are_catalogued_and_swept_with_failures_a_timeout_and_huge_output() {
    let world = World::new();
    let fleet = world.dir.path().join("fleet");
    let kinds = ["rust", "python", "node", "go"];
    for n in 0..30 {
        let behaviour = match n {
            3 | 7 => "fail",
            11 => "slow",
            15 => "huge",
            _ => "ok",
        };
        let mut files = kind_files(kinds[n % 4]);
        files.push(("BEHAVIOUR", behaviour));
        repository(&fleet, &format!("repo-{n:02}"), &files);
    }
    // Something under the tree that is no repository, and a repository inside a repository.
    std::fs::create_dir_all(fleet.join("notes")).unwrap();
    repository(&fleet.join("repo-00"), "vendored", &[("f", "x")]);

    let added = world.json(&["repos", "scan", fleet.to_str().unwrap(), "--tag", "fleet"]);
    assert_eq!(added["added"].as_array().unwrap().len(), 30, "{added:#}");
    let again = world.json(&["repos", "scan", fleet.to_str().unwrap(), "--tag", "fleet"]);
    assert_eq!(again["added"], json!([]), "a second scan adds nothing");
    assert_eq!(again["already"].as_array().unwrap().len(), 30);
    let listed = world.json(&["repos", "list", "--tag", "fleet"])["repos"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 30);
    for (kind, count) in [("rust", 8), ("python", 8), ("node", 7), ("go", 7)] {
        let of_kind = world.json(&["repos", "list", "--kind", kind])["repos"].clone();
        assert_eq!(
            of_kind.as_array().unwrap().len(),
            count,
            "{kind}: {of_kind}"
        );
    }
    let catalog = std::fs::read_to_string(world.dir.path().join("home/repos.toml")).unwrap();
    assert!(catalog.contains("[repos.repo-15]"), "{catalog}");

    // One is no git repository any more.
    std::fs::remove_dir_all(fleet.join("repo-29/.git")).unwrap();
    let log = world.dir.path().join("sweep.log");
    let output = world
        .command(&[
            "sweep",
            "--tag",
            "fleet",
            "--parallel",
            "4",
            "--timeout",
            "3",
            "-o",
            "json",
            "--",
            "sh",
            "-c",
            BEHAVE,
        ])
        .env("SWEEP_LOG", &log)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "some repositories failed");
    let sweep: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(
        sweep["summary"],
        json!({"total": 30, "ok": 26, "failed": 2, "timed_out": 1, "missing": 1, "error": 0}),
        "{sweep:#}"
    );
    let failed = result_of(&sweep, "repo-03");
    assert_eq!(
        (
            &failed["status"],
            &failed["exit_code"],
            &failed["last_line"]
        ),
        (&json!("failed"), &json!(2), &json!("broken build"))
    );
    let slow = result_of(&sweep, "repo-11");
    assert_eq!(
        (&slow["status"], &slow["exit_code"]),
        (&json!("timed_out"), &Value::Null)
    );
    assert_eq!(slow["last_line"], "started");
    assert!(slow["duration_ms"].as_u64().unwrap() >= 3000, "{slow}");
    let huge = result_of(&sweep, "repo-15");
    assert_eq!(
        (&huge["status"], &huge["last_line"]),
        (&json!("ok"), &json!("the-end"))
    );
    let kept = PathBuf::from(huge["output"].as_str().unwrap());
    let meta = std::fs::metadata(&kept).unwrap();
    assert!(
        meta.len() > 30_000_000,
        "all of it is kept: {} bytes",
        meta.len()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "only the user reads it"
    );
    let gone = result_of(&sweep, "repo-29");
    assert_eq!(gone["status"], "missing");
    assert!(
        gone["last_line"]
            .as_str()
            .unwrap()
            .contains("not a git repository any more"),
        "{gone}"
    );
    assert_eq!(result_of(&sweep, "repo-04")["last_line"], "fine repo-04");
    let most = most_at_once(&log);
    assert!(
        (2..=4).contains(&most),
        "at most 4 at once, and more than one: {most}"
    );

    // Shown as a table, listed, and run again where it did not succeed.
    let id = sweep["id"].as_i64().unwrap().to_string();
    let table = world.ok(&["sweep", "show", &id]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("REPO") && header.contains("LAST LINE"),
        "{table}"
    );
    let slow_row = table.lines().find(|l| l.starts_with("repo-11")).unwrap();
    assert!(
        slow_row.contains("timed out") && slow_row.contains("started"),
        "{table}"
    );
    assert!(
        table.contains("26 ok, 2 failed, 1 timed out, 1 missing of 30"),
        "{table}"
    );
    let sweeps = world.json(&["sweep", "list"])["sweeps"].clone();
    assert_eq!(sweeps[0]["id"], sweep["id"]);
    assert_eq!(sweeps[0]["summary"]["failed"], 2);
    std::fs::write(fleet.join("repo-03/BEHAVIOUR"), "ok").unwrap();
    let rerun = world
        .command(&["sweep", "rerun", &id, "--failed", "-o", "json"])
        .env("SWEEP_LOG", &log)
        .output()
        .unwrap();
    let rerun: Value = serde_json::from_slice(&rerun.stdout).unwrap();
    let repos: Vec<&str> = rerun["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repo"].as_str().unwrap())
        .collect();
    assert_eq!(repos, ["repo-03", "repo-07", "repo-11", "repo-29"]);
    assert_eq!(result_of(&rerun, "repo-03")["status"], "ok", "{rerun:#}");
    assert_eq!(rerun["spec"]["command"][0], "sh", "run as it was");

    // Removing from the catalog touches no file.
    world.ok(&["repos", "remove", "repo-29"]);
    assert_eq!(
        world.json(&["repos", "list"])["repos"]
            .as_array()
            .unwrap()
            .len(),
        29
    );
    assert!(fleet.join("repo-29/BEHAVIOUR").exists());
    let unknown = world.fails(&["repos", "remove", "nosuch"], 2);
    assert!(
        unknown.contains("no repository `nosuch` in the catalog"),
        "{unknown}"
    );
}

/// Where the Python tools the checks run live (ruff, pytest), installed by `scripts/test`.
fn python_tools() -> PathBuf {
    let dir = std::env::var_os("MAHAVISHNU_TEST_PYTHON_TOOLS").map(PathBuf::from).expect(
        "MAHAVISHNU_TEST_PYTHON_TOOLS is not set: run the tests with `scripts/test`, which installs ruff and pytest",
    );
    assert!(
        dir.join("bin/ruff").exists(),
        "no ruff in {}",
        dir.display()
    );
    dir
}

/// PATH with the Python tools first.
fn path_with_tools(tools: &Path) -> String {
    format!(
        "{}:{}",
        tools.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs a scorecard's command line by hand in `dir`: whether it succeeded.
fn by_hand(dir: &Path, command: &str, tools: &Path) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    std::process::Command::new(words[0])
        .args(&words[1..])
        .current_dir(dir)
        .env("PATH", path_with_tools(tools))
        .env("PYTHONPATH", tools)
        .env_remove("CARGO_TARGET_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// One repository of each kind, each with something that fails: every check's verdict is what its
/// tool says when run by hand. A fix shows as better; `[checks]` count only once trusted.
#[test]
fn scorecards_agree_with_the_tools_run_by_hand() {
    assert!(
        mahavishnu_core::paths::find_program("go").is_some(),
        "go is not installed: install golang-go (`.ci/run` does)"
    );
    let tools = python_tools();
    let world = World::new();
    let root = world.dir.path().join("kinds");
    let rust = repository(
        &root,
        "rusty",
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"rusty\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            // Badly formatted, otherwise fine.
            (
                "src/lib.rs",
                "pub fn two()->u32{2}\n#[cfg(test)]\nmod tests { #[test] fn two() { assert_eq!(super::two(), 2); } }\n",
            ),
        ],
    );
    // A build that is broken: nothing of it passes.
    let broken = repository(
        &root,
        "broken",
        &[
            (
                "Cargo.toml",
                "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
            ),
            ("src/lib.rs", "pub fn oops( -> u32 { 1 }\n"),
        ],
    );
    let python = repository(
        &root,
        "snake",
        &[
            (
                "pyproject.toml",
                "[project]\nname = \"snake\"\nversion = \"0.1\"\n",
            ),
            ("snake.py", "import os\n\n\ndef three():\n    return 3\n"),
            (
                "test_snake.py",
                "from snake import three\n\n\ndef test_three():\n    assert three() == 4\n",
            ),
        ],
    );
    let node = repository(
        &root,
        "noder",
        &[
            (
                "package.json",
                "{\"name\": \"noder\", \"scripts\": {\"lint\": \"node -e 'process.exit(0)'\", \"test\": \"node test.js\"}}\n",
            ),
            ("test.js", "process.exit(1);\n"),
        ],
    );
    let go = repository(
        &root,
        "gopher",
        &[
            ("go.mod", "module gopher\n\ngo 1.19\n"),
            (
                "gopher.go",
                "package gopher\n\nfunc Four() int { return 4 }\n",
            ),
            (
                "gopher_test.go",
                "package gopher\n\nimport \"testing\"\n\nfunc TestFour(t *testing.T) {\n\tif Four() != 4 {\n\t\tt.Fatal(\"four\")\n\t}\n}\n",
            ),
        ],
    );
    world.ok(&[
        "repos",
        "add",
        "--tag",
        "kinds",
        rust.to_str().unwrap(),
        python.to_str().unwrap(),
    ]);
    world.ok(&[
        "repos",
        "add",
        "--tag",
        "kinds",
        node.to_str().unwrap(),
        go.to_str().unwrap(),
        broken.to_str().unwrap(),
    ]);
    let check = |args: &[&str]| -> Value {
        let output = world
            .command(args)
            .env("PATH", path_with_tools(&tools))
            .env("PYTHONPATH", &tools)
            .env("GOCACHE", world.dir.path().join("gocache"))
            .env("GOFLAGS", "-mod=mod")
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .unwrap();
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)))
    };
    let checked = check(&["sweep", "check", "--tag", "kinds", "-o", "json"]);
    let cards = checked["scorecards"].as_array().unwrap();
    assert_eq!(cards.len(), 5, "{checked:#}");
    let statuses = |card: &Value| -> Vec<(String, String)> {
        card["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let card = |repo: &str| cards.iter().find(|c| c["repo"] == repo).unwrap().clone();
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        statuses(&card("rusty")),
        pairs(&[("fmt", "failed"), ("clippy", "passed"), ("test", "passed")])
    );
    assert_eq!(
        statuses(&card("snake")),
        pairs(&[("ruff", "failed"), ("pytest", "failed")])
    );
    assert_eq!(
        statuses(&card("noder")),
        pairs(&[("lint", "passed"), ("test", "failed")])
    );
    assert_eq!(
        statuses(&card("broken")),
        pairs(&[("fmt", "failed"), ("clippy", "failed"), ("test", "failed")])
    );
    assert_eq!(
        statuses(&card("gopher")),
        pairs(&[("vet", "passed"), ("test", "passed")])
    );
    // Each verdict is the tool's own, run by hand.
    for card in cards {
        let dir = PathBuf::from(card["path"].as_str().unwrap());
        for check in card["checks"].as_array().unwrap() {
            let command = check["command"].as_str().unwrap();
            assert_eq!(
                by_hand(&dir, command, &tools),
                check["status"] == "passed",
                "{}: `{command}` by hand disagrees with {check}",
                card["repo"]
            );
        }
    }
    // Every word each check said is kept.
    let ruff = card("snake")["checks"][0].clone();
    let said = std::fs::read_to_string(ruff["output"].as_str().unwrap()).unwrap();
    assert!(
        said.contains("F401") && said.contains("Found 1 error"),
        "{said}"
    );

    // The Rust repository formatted: fmt got better, and nothing else changed.
    std::fs::write(
        rust.join("src/lib.rs"),
        "pub fn two() -> u32 {\n    2\n}\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn two() {\n        assert_eq!(super::two(), 2);\n    }\n}\n",
    )
    .unwrap();
    let again = check(&[
        "sweep",
        "check",
        "--tag",
        "kinds",
        "--changed",
        "-o",
        "json",
    ]);
    assert_eq!(
        again["changes"],
        json!([{"repo": "rusty", "check": "fmt", "before": "failed", "after": "passed", "direction": "better"}]),
        "{again:#}"
    );
    let table = world
        .command(&["sweep", "check", "--tag", "kinds", "--changed"])
        .env("PATH", path_with_tools(&tools))
        .env("PYTHONPATH", &tools)
        .env("GOCACHE", world.dir.path().join("gocache"))
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("nothing got better or worse"), "{table}");

    // A repository's own [checks] run only once the user trusts its file.
    std::fs::write(
        node.join(".mahavishnu.toml"),
        "[checks]\nsmoke = \"touch checked-by-its-own && true\"\n",
    )
    .unwrap();
    let untrusted = check(&["check", node.to_str().unwrap(), "-o", "json"]);
    let note = untrusted["scorecards"][0]["note"]
        .as_str()
        .unwrap_or_default();
    assert!(
        note.contains("not trusted yet") && note.contains("mahavishnu trust"),
        "{untrusted:#}"
    );
    assert!(
        !node.join("checked-by-its-own").exists(),
        "an untrusted check ran"
    );
    assert_eq!(untrusted["scorecards"][0]["source"], "node");
    let trusted = world
        .command(&["trust"])
        .current_dir(&node)
        .output()
        .unwrap();
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let own = check(&["check", node.to_str().unwrap(), "-o", "json"]);
    assert_eq!(
        statuses(&own["scorecards"][0]),
        pairs(&[("smoke", "passed")]),
        "{own:#}"
    );
    assert!(node.join("checked-by-its-own").exists());
}

/// `sweep --agent qwen` runs the real Qwen Code (against the loopback stub model) in a worktree of
/// each repository: the prompt goes in, the stub's tool call writes a file, the diff stat shows it,
/// and the branches whose checks pass are merged; the one whose test fails is not, and its work
/// stays on its branch.
#[test]
fn an_agent_sweep_runs_qwen_code_in_a_worktree_of_each_repository_and_merges_what_passes() {
    let stub = StubModel::start_with_tool(
        "STUB-SWEEP-DONE-4471",
        Some(json!({
            "name": "run_shell_command",
            "arguments": {"command": "echo swept > SWEPT.txt"},
        })),
    );
    let world = World::new();
    world.write_qwen_user_settings();
    let home = world.dir.path().join("home");
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[worktree]\ndir = {worktrees:?}\n\n[profiles.qwen]\nprogram = {program:?}\nargs = [\"--auth-type\", \"openai\", \
             \"--openai-base-url\", {url:?}, \"--openai-api-key\", \"sk-stub\", \"-m\", \"stub-model\", \"--yolo\"]\n",
            worktrees = world.dir.path().join("worktrees").display().to_string(),
            program = qwen().display().to_string(),
            url = stub.base_url(),
        ),
    )
    .unwrap();
    let root = world.dir.path().join("agents");
    let plain = ["one", "two"].map(|name| repository(&root, name, &[("README", name)]));
    let broken = repository(
        &root,
        "three",
        &[(
            "package.json",
            "{\"name\": \"three\", \"scripts\": {\"test\": \"exit 1\"}}\n",
        )],
    );
    for dir in plain.iter().chain([&broken]) {
        world.ok(&["repos", "add", "--tag", "agents", dir.to_str().unwrap()]);
    }
    let output = world
        .command(&[
            "sweep",
            "--tag",
            "agents",
            "--agent",
            "qwen",
            "--prompt",
            "Write SWEPT.txt, please",
            "--worktree",
            "--merge",
            "--parallel",
            "3",
            "--timeout",
            "120",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    let sweep: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(
        output.status.code(),
        Some(1),
        "one was not merged: {sweep:#}"
    );
    for repo in ["one", "two"] {
        let result = result_of(&sweep, repo);
        assert_eq!(result["status"], "ok", "{result:#}");
        assert_eq!(
            result["detail"]["diff"],
            json!({"files": 1, "insertions": 1, "deletions": 0}),
            "{result:#}"
        );
        assert_eq!(result["detail"]["merged"], true, "{result:#}");
        assert!(
            result["last_line"].as_str().unwrap().starts_with("merged "),
            "{result:#}"
        );
    }
    for dir in &plain {
        assert_eq!(
            std::fs::read_to_string(dir.join("SWEPT.txt")).unwrap(),
            "swept\n"
        );
        assert!(git(dir, &["log", "--oneline"]).lines().count() >= 2);
    }
    let three = result_of(&sweep, "three");
    assert_eq!(three["status"], "failed", "{three:#}");
    assert_eq!(three["detail"]["merged"], false);
    assert!(
        three["last_line"].as_str().unwrap().contains("test failed"),
        "{three:#}"
    );
    assert!(!broken.join("SWEPT.txt").exists(), "not merged");
    // Its work is on its branch (the session was paused), for a person to look at.
    let branch = three["detail"]["branch"].as_str().unwrap();
    let kept = git(&broken, &["show", &format!("{branch}:SWEPT.txt")]);
    assert_eq!(kept, "swept\n");
    // The prompt reached the model from each session, and no session is left running.
    let prompts = stub
        .requests()
        .iter()
        .filter(|r| r.to_string().contains("Write SWEPT.txt, please"))
        .count();
    assert!(prompts >= 3, "{prompts} requests carried the prompt");
    assert_eq!(
        world.listed_states(),
        ["paused"],
        "only the unmerged one, paused"
    );
}

/// Publishes `data` to `topic` on the emulator at `host` through its REST API.
fn publish(host: &str, topic: &str, data: &str) -> u16 {
    use base64_like::encode;
    let body = json!({"messages": [{"data": encode(data.as_bytes())}]}).to_string();
    let url = format!("http://{host}/v1/projects/mahavishnu-local/topics/{topic}:publish");
    support::post(&url, &body).0
}

/// Enough base64 for a short message.
mod base64_like {
    pub fn encode(bytes: &[u8]) -> String {
        const TABLE: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// The last run of workflow `name`, as `workflow list` shows it.
fn last_run(world: &World, name: &str) -> Value {
    let listed = world.json(&["workflow", "list"]);
    listed["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no workflow {name}: {listed:#}"))["last"]
        .clone()
}

/// Under `serve`: a workflow every second runs within the test; one on SessionEnd runs when a coding
/// session ends (`mahavishnu hook`); one on a topic runs when a message is published to it on the
/// Pub/Sub emulator. `workflow run` runs one by hand; a broken one says what is wrong.
#[test]
fn serve_runs_workflows_on_a_schedule_a_hook_event_and_a_topic_message() {
    let world = World::new();
    let one = repository(&world.dir.path().join("repos"), "one", &[("f", "x")]);
    world.ok(&["repos", "add", one.to_str().unwrap()]);
    git(&world.work(), &["init", "-q"]);
    let topics = support::pubsub_wanted(
        "serve_runs_workflows_on_a_schedule_a_hook_event_and_a_topic_message",
    );
    let mut config = String::from(
        "[workflows.tick]\nschedule = \"* * * * * *\"\ntimezone = \"UTC\"\nsweep = { repos = [\"one\"], command = [\"sh\", \"-c\", \"echo tick >> ../ticks.log\"] }\n\n\
         [workflows.after-session]\non_event = \"SessionEnd\"\nsweep = { repos = [\"one\"], command = [\"sh\", \"-c\", \"echo ended >> ../ended.log\"] }\n\n\
         [workflows.broken]\nschedule = \"every morning\"\ncheck = {}\n\n\
         [workflows.ship]\ndeploy = { manifest = \"no-such.deploy.toml\" }\n",
    );
    if topics {
        config.push_str(
            "\n[workflows.pushed]\non_topic = \"repo-pushed\"\nsweep = { repos = [\"one\"], command = [\"git\", \"status\", \"--short\"] }\n",
        );
    }
    std::fs::write(world.dir.path().join("home/config.toml"), config).unwrap();
    let listed = world.json(&["workflow", "list"]);
    let broken = listed["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "broken")
        .unwrap();
    assert!(
        broken["problem"]
            .as_str()
            .unwrap()
            .contains("not a cron pattern"),
        "{broken}"
    );
    // A deploy whose manifest is missing: the run is recorded as failed, with the reason.
    let shipped = world.run(&["workflow", "run", "ship", "-o", "json"]);
    assert_eq!(shipped.status.code(), Some(1));
    let shipped: Value = serde_json::from_slice(&shipped.stdout).unwrap();
    assert_eq!(shipped["run"]["state"], "failed", "{shipped:#}");
    assert!(
        shipped["run"]["summary"]
            .as_str()
            .unwrap()
            .contains("no-such.deploy.toml"),
        "{shipped:#}"
    );
    let by_hand = world.json(&["workflow", "run", "tick"]);
    assert_eq!(by_hand["run"]["cause"], "by hand");
    assert_eq!(by_hand["run"]["state"], "ok", "{by_hand:#}");

    // A repository cannot schedule work: its own file may not name workflows.
    std::fs::write(
        world.work().join(".mahavishnu.toml"),
        "[workflows.evil]\nschedule = \"* * * * * *\"\nsweep = { command = [\"touch\", \"/tmp/pwned\"] }\n",
    )
    .unwrap();
    let refused = world.fails(&["workflow", "list"], 1);
    assert!(
        refused.contains("`workflows` cannot be set in a project file"),
        "{refused}"
    );
    std::fs::remove_file(world.work().join(".mahavishnu.toml")).unwrap();
    let _serve = Serve::start(&world);
    let ticks = world.dir.path().join("repos/ticks.log");
    eventually("two scheduled runs", Duration::from_secs(30), || {
        std::fs::read_to_string(&ticks).is_ok_and(|t| t.lines().count() >= 3)
    });
    assert_eq!(last_run(&world, "tick")["cause"], "schedule");

    // A coding session ends: Claude Code (or Qwen Code) calls the hook.
    let payload = json!({"hook_event_name": "SessionEnd", "session_id": "s-77", "cwd": world.work(), "reason": "exit"});
    let mut hook = world
        .command(&["hook"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    hook.stdin
        .take()
        .unwrap()
        .write_all(payload.to_string().as_bytes())
        .unwrap();
    assert!(hook.wait().unwrap().success());
    eventually("the SessionEnd workflow", Duration::from_secs(20), || {
        last_run(&world, "after-session")["cause"] == "event SessionEnd"
    });
    assert_eq!(
        std::fs::read_to_string(world.dir.path().join("repos/ended.log")).unwrap(),
        "ended\n"
    );

    if topics {
        // The emulator the state directory's bus started; messages published until one is taken.
        let pubsub = world.state_dir().join("pubsub");
        eventually("the Pub/Sub emulator", Duration::from_secs(60), || {
            mahavishnu_pubsub::Emulator::running(&pubsub).is_some()
        });
        let host = mahavishnu_pubsub::Emulator::running(&pubsub).unwrap().host;
        eventually("the topic's workflow", Duration::from_secs(60), || {
            publish(&host, "repo-pushed", "main moved");
            std::thread::sleep(Duration::from_millis(300));
            last_run(&world, "pushed")["cause"]
                .as_str()
                .is_some_and(|cause| cause.starts_with("topic repo-pushed (message "))
        });
        assert_eq!(last_run(&world, "pushed")["state"], "ok");
    }
}
