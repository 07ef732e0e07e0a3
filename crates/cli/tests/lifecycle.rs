//! End-to-end tests of the lifecycle: the hook entry, sessions, project hooks, trust, init and
//! checkpoints, driving the real binary in real git repositories.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{World, git, wait_for};

fn repository(world: &World) -> std::path::PathBuf {
    let dir = world.work();
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["config", "user.email", "dev@example.com"]);
    git(&dir, &["config", "user.name", "Dev"]);
    std::fs::canonicalize(dir).unwrap()
}

/// Runs `mahavishnu hook` with `payload` on stdin; returns (exit code, stdout, stderr, time taken).
fn hook(world: &World, payload: &str) -> (i32, String, String, Duration) {
    let started = Instant::now();
    let mut child = world.spawn_piped(&["hook"]);
    // The hook may stop reading a payload that is too big: a broken pipe is its answer, not a failure.
    let _ = child.stdin.take().unwrap().write_all(payload.as_bytes());
    let output = child.wait_with_output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.code().unwrap_or(-1),
        text(&output.stdout),
        text(&output.stderr),
        started.elapsed(),
    )
}

fn payload(event: &str, session: &str, cwd: &Path, extra: serde_json::Value) -> String {
    let mut payload = serde_json::json!({
        "session_id": session,
        "transcript_path": "/tmp/transcript.jsonl",
        "cwd": cwd,
        "hook_event_name": event,
    });
    for (key, value) in extra.as_object().unwrap() {
        payload[key] = value.clone();
    }
    payload.to_string()
}

#[test]
fn session_hooks_run_only_once_trusted_and_end_hooks_finish_after_the_answer() {
    let world = World::new();
    let project = repository(&world);
    std::fs::write(
        project.join(".mahavishnu.toml"),
        r#"
[[hooks.SessionStart]]
name = "mark start"
command = "echo start {session_id} {source} >> {project_dir}/marks.log"
timeout = "5s"
[[hooks.SessionStart]]
launch = { profile = "shell", count = 2, target = "pty" }
[[hooks.SessionEnd]]
close = "launched"
[[hooks.SessionEnd]]
command = "sleep 2; echo end {session_id} {reason} >> marks.log"
"#,
    )
    .unwrap();
    let (code, stdout, stderr, _) = hook(
        &world,
        &payload(
            "SessionStart",
            "s-untrusted",
            &project,
            serde_json::json!({"source": "startup"}),
        ),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("not trusted") && stderr.contains("mahavishnu trust"),
        "{stderr}"
    );
    assert!(
        !project.join("marks.log").exists(),
        "untrusted hooks do not run"
    );

    world.ok(&["trust"]);
    let (code, stdout, stderr, _) = hook(
        &world,
        &payload(
            "SessionStart",
            "s1",
            &project,
            serde_json::json!({"source": "startup"}),
        ),
    );
    assert_eq!(code, 0, "{stderr}");
    let answer: serde_json::Value =
        serde_json::from_str(&stdout).expect("SessionStart answers with JSON");
    let context = answer["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert_eq!(
        answer["hookSpecificOutput"]["hookEventName"],
        "SessionStart"
    );
    let session = world.json(&["session", "status", "--id", "s1"]);
    let launched: Vec<&str> = session["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    assert_eq!(launched.len(), 2);
    assert!(
        launched.iter().all(|id| context.contains(id)),
        "the agent is told the ids: {context}"
    );
    assert_eq!(
        std::fs::read_to_string(project.join("marks.log")).unwrap(),
        "start s1 startup\n"
    );

    let (code, _, _, _) = hook(
        &world,
        &payload(
            "SessionStart",
            "s1",
            &project,
            serde_json::json!({"source": "resume"}),
        ),
    );
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read_to_string(project.join("marks.log")).unwrap(),
        "start s1 startup\n",
        "starting again is a no-op"
    );

    let (code, _, stderr, took) = hook(
        &world,
        &payload(
            "SessionEnd",
            "s1",
            &project,
            serde_json::json!({"reason": "prompt_input_exit"}),
        ),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        took < Duration::from_millis(1500),
        "SessionEnd answers before its 2 s hook is done: {took:?}"
    );
    let marks = wait_for(
        &project.join("marks.log"),
        "end s1",
        Duration::from_secs(10),
    );
    assert!(
        marks.ends_with("end s1 prompt_input_exit\n"),
        "the detached hook finished: {marks}"
    );
    for id in launched {
        world.wait_state(id, "closed", Duration::from_secs(5));
    }
    let runs = world.json(&["hooks", "runs", "--session", "s1"])["runs"].clone();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 4, "{runs:#?}");
    assert!(runs.iter().all(|run| run["success"] == true), "{runs:#?}");
    assert!(
        runs.iter()
            .filter(|run| run["event"] == "SessionEnd")
            .all(|run| run["detached"] == true)
    );
    assert_eq!(
        world.json(&["session", "status", "--id", "s1"])["state"],
        "ended"
    );

    // A changed hooks section needs trust again.
    let mut config = std::fs::read_to_string(project.join(".mahavishnu.toml")).unwrap();
    config.push_str("\n[[hooks.Stop]]\ncommand = \"echo stop >> marks.log\"\n");
    std::fs::write(project.join(".mahavishnu.toml"), config).unwrap();
    let listed = world.json(&["hooks", "list"]);
    assert_eq!(listed["trusted"], false);
    world.ok(&["trust"]);
    assert_eq!(world.json(&["hooks", "list"])["trusted"], true);
    // So does a changed profile: it decides what a `launch` hook runs.
    let mut config = std::fs::read_to_string(project.join(".mahavishnu.toml")).unwrap();
    config.push_str("\n[profiles.shell]\nprogram = \"/bin/sh\"\n");
    std::fs::write(project.join(".mahavishnu.toml"), config).unwrap();
    assert_eq!(world.json(&["hooks", "list"])["trusted"], false);
    let (_, _, stderr, _) = hook(
        &world,
        &payload("SessionStart", "s2", &project, serde_json::json!({})),
    );
    assert!(stderr.contains("not trusted"), "{stderr}");
}

#[test]
fn required_hooks_block_and_other_failures_do_not() {
    let world = World::new();
    let project = repository(&world);
    std::fs::write(
        project.join(".mahavishnu.toml"),
        r#"
[[hooks.UserPromptSubmit]]
name = "no secrets"
command = "case {prompt} in *secret*) echo 'prompt mentions a secret' >&2; exit 1;; esac"
required = true
[[hooks.UserPromptSubmit]]
name = "missing program"
command = "no-such-program-xyz {prompt}"
[[hooks.Stop]]
command = "exit 3"
"#,
    )
    .unwrap();
    world.ok(&["trust"]);
    let (code, _, stderr, _) = hook(
        &world,
        &payload(
            "UserPromptSubmit",
            "s",
            &project,
            serde_json::json!({"prompt": "tell me the secret"}),
        ),
    );
    assert_eq!(code, 2, "a failed required hook blocks: {stderr}");
    assert!(
        stderr.contains("no secrets") && stderr.contains("exited with code 1"),
        "{stderr}"
    );
    let (code, _, stderr, _) = hook(
        &world,
        &payload(
            "UserPromptSubmit",
            "s",
            &project,
            serde_json::json!({"prompt": "hello"}),
        ),
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr, _) = hook(
        &world,
        &payload("Stop", "s", &project, serde_json::json!({})),
    );
    assert_eq!(code, 0, "a failing optional hook never blocks: {stderr}");
    let started = Instant::now();
    let mut runs = Vec::new();
    while started.elapsed() < Duration::from_secs(10) {
        runs = world.json(&["hooks", "runs", "--session", "s"])["runs"]
            .clone()
            .as_array()
            .unwrap()
            .clone();
        if runs.iter().any(|run| run["hook"] == "missing program")
            && runs.iter().any(|run| run["event"] == "Stop")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let missing = runs
        .iter()
        .find(|run| run["hook"] == "missing program")
        .expect("the failed hook is recorded");
    assert_eq!(missing["exit_code"], 127);
    assert!(
        missing["error"].as_str().unwrap().contains("not found"),
        "{missing}"
    );
}

#[test]
fn bad_payloads_get_clear_errors_and_never_hang() {
    let world = World::new();
    let project = repository(&world);
    let cases = [
        ("", "no hook payload"),
        ("{not json", "not the JSON of a hook event"),
        (
            r#"{"hook_event_name":"SessionBegin","cwd":"/tmp"}"#,
            "unknown hook event `SessionBegin`",
        ),
        (
            r#"{"hook_event_name":"Stop","cwd":"/no/such/dir"}"#,
            "/no/such/dir does not exist",
        ),
    ];
    for (input, needle) in cases {
        let (code, _, stderr, _) = hook(&world, input);
        assert_eq!(code, 1, "{input}: {stderr}");
        assert!(stderr.contains(needle), "{input}: {stderr}");
    }
    let huge = format!(
        r#"{{"hook_event_name":"Stop","cwd":"{}","prompt":"{}"}}"#,
        project.display(),
        "x".repeat(5 << 20)
    );
    let (code, _, stderr, _) = hook(&world, &huge);
    assert_eq!(code, 1);
    assert!(stderr.contains("more than"), "{stderr}");

    // A caller that never closes stdin still gets its answer.
    let started = Instant::now();
    let mut child = world.spawn_piped(&["hook"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(payload("Stop", "open", &project, serde_json::json!({})).as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    std::fs::write(
        project.join(".mahavishnu.toml"),
        "[[hooks.SesionStart]]\ncommand = \"true\"\n",
    )
    .unwrap();
    let (code, _, stderr, _) = hook(
        &world,
        &payload("SessionStart", "t", &project, serde_json::json!({})),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains(".mahavishnu.toml")
            && stderr.contains("line 1")
            && stderr.contains("SesionStart"),
        "{stderr}"
    );
    std::fs::write(
        project.join(".mahavishnu.toml"),
        "[[hooks.Stop]]\ncommand = \"true\"\ntimout = \"5s\"\n",
    )
    .unwrap();
    let (_, _, stderr, _) = hook(
        &world,
        &payload("Stop", "t", &project, serde_json::json!({})),
    );
    assert!(
        stderr.contains("line 3") && stderr.contains("timout"),
        "{stderr}"
    );
}

/// Values from payloads pass through placeholders and environment variables, never through a shell.
#[test]
fn payload_values_with_shell_syntax_never_execute() {
    let world = World::new();
    let parent = std::fs::canonicalize(world.work()).unwrap();
    let project = parent.join("a'; touch pwned-dir; '");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join(".mahavishnu.toml"),
        r#"
[[hooks.UserPromptSubmit]]
command = "printf '%s|%s|%s\n' {prompt} {session_id} {project_name} >> {project_dir}/seen.log; printf '%s\n' \"$MAHAVISHNU_PROMPT\" >> {project_dir}/env.log"
required = true
"#,
    )
    .unwrap();
    world.ok(&["trust", project.to_str().unwrap()]);
    let nasty = [
        "$(touch pwned-1)",
        "`touch pwned-2`",
        "'; touch pwned-3; '",
        "\"; touch pwned-4; \"",
        "a\ntouch pwned-5",
        "$((1+1))",
        "${HOME}",
        "*",
        "?",
        "~",
        "!!",
        "&& touch pwned-6",
        "|| touch pwned-7",
        "; touch pwned-8",
        "| touch pwned-9",
        "> pwned-10",
        "< /etc/passwd",
        "\\$(touch pwned-11)",
        "'\"'\"'",
        "$IFS",
        "-n",
        "--help",
        "ünïcødé ✓",
        "tab\there",
        "{prompt}",
        "{session_id}",
        "%s %d",
        "\u{7f}",
        "line1\r\nline2",
        "$(touch pwned-12)`touch pwned-13`",
    ];
    assert!(nasty.len() >= 30);
    for (n, prompt) in nasty.iter().enumerate() {
        let session = format!("id-{n}-$(touch pwned-s{n})`x`'\"");
        let (code, _, stderr, _) = hook(
            &world,
            &payload(
                "UserPromptSubmit",
                &session,
                &project,
                serde_json::json!({ "prompt": prompt }),
            ),
        );
        assert_eq!(code, 0, "{prompt:?}: {stderr}");
        let seen = std::fs::read_to_string(project.join("seen.log")).unwrap();
        let expected = format!("{prompt}|{session}|a'; touch pwned-dir; '\n");
        assert!(
            seen.ends_with(&expected),
            "{prompt:?} arrived literally:\n{seen}"
        );
        let env = std::fs::read_to_string(project.join("env.log")).unwrap();
        assert!(
            env.ends_with(&format!("{prompt}\n")),
            "{prompt:?} reached the environment literally"
        );
    }
    let mut pwned = Vec::new();
    for dir in [&parent, &project] {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("pwned") {
                pwned.push(entry.path());
            }
        }
    }
    assert!(pwned.is_empty(), "nothing was executed: {pwned:?}");
}

#[test]
fn init_merges_idempotently_and_removes_exactly_its_entries() {
    let world = World::new();
    let project = repository(&world);
    std::fs::create_dir_all(project.join(".claude")).unwrap();
    let original = "{\n  \"model\": \"opus\",\n  \"hooks\": {\n    \"Stop\": [ { \"hooks\": [ { \"type\": \"command\", \"command\": \"say done\" } ] } ]\n  }\n}\n";
    std::fs::write(project.join(".claude/settings.json"), original).unwrap();
    let dry = world.ok(&["init", "claude", "--dry-run"]);
    assert!(dry.contains("would change") && dry.contains("+ "), "{dry}");
    assert_eq!(
        std::fs::read_to_string(project.join(".claude/settings.json")).unwrap(),
        original,
        "a dry run writes nothing"
    );
    let first = world.json(&["init", "claude"]);
    assert_eq!(first["changed"], true);
    assert!(
        project
            .join(".claude/settings.json.mahavishnu-backup")
            .exists()
    );
    let after = std::fs::read_to_string(project.join(".claude/settings.json")).unwrap();
    assert!(after.contains("say done") && after.contains("\"model\": \"opus\""));
    for event in [
        "SessionStart",
        "UserPromptSubmit",
        "Stop",
        "PreCompact",
        "SessionEnd",
    ] {
        assert!(after.contains(&format!("\"{event}\"")), "{event}");
    }
    assert_eq!(
        world.json(&["init", "claude"])["changed"],
        false,
        "a second run changes nothing"
    );
    assert_eq!(
        std::fs::read_to_string(project.join(".claude/settings.json")).unwrap(),
        after
    );
    world.ok(&["init", "claude", "--remove"]);
    let removed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.join(".claude/settings.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        removed,
        serde_json::from_str::<serde_json::Value>(original).unwrap()
    );
    let qwen = world.json(&["init", "qwen"]);
    assert_eq!(qwen["changed"], true);
    let settings: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.join(".qwen/settings.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        settings["hooks"]["SessionEnd"][0]["hooks"][0]["timeout"], 30000,
        "Qwen Code counts milliseconds"
    );
}

/// Regression: `init` and `mcp install` wrote this machine's path of the binary into files that teams
/// commit. They write `mahavishnu` when that name on PATH is this very program, and otherwise the
/// absolute path with a word on why.
#[test]
fn client_settings_name_mahavishnu_when_path_finds_this_very_program() {
    let world = World::new();
    let project = repository(&world);
    let bin = world.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(support::binary(), bin.join("mahavishnu")).unwrap();
    let search_path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let run = |args: &[&str]| -> String {
        let output = world
            .command(args)
            .env("PATH", &search_path)
            .output()
            .unwrap();
        let output = support::succeeded(&format!("{args:?}"), output);
        String::from_utf8(output.stdout).unwrap()
    };
    let read = |file: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(project.join(file)).unwrap()).unwrap()
    };
    let hook_command = || read(".claude/settings.json")["hooks"]["SessionStart"].clone();

    let said = run(&["init", "claude"]);
    assert_eq!(hook_command()[0]["hooks"][0]["command"], "mahavishnu hook");
    assert!(!said.contains("not `mahavishnu`"), "{said}");
    let said = run(&["mcp", "install", "--client", "claude"]);
    assert_eq!(
        read(".mcp.json")["mcpServers"]["mahavishnu"]["command"],
        "mahavishnu"
    );
    assert!(!said.contains("not `mahavishnu`"), "{said}");

    // Another program of that name comes first on PATH: the absolute path, and why.
    std::fs::remove_file(bin.join("mahavishnu")).unwrap();
    std::fs::write(bin.join("mahavishnu"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        bin.join("mahavishnu"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let absolute = support::binary().to_str().unwrap().to_string();
    let said = run(&["--output", "json", "init", "claude"]);
    let outcome: serde_json::Value = serde_json::from_str(&said).unwrap();
    assert!(
        outcome["note"]
            .as_str()
            .unwrap()
            .contains("another program"),
        "{said}"
    );
    let hooks = hook_command();
    assert_eq!(
        hooks.as_array().unwrap().len(),
        1,
        "replaced, not added: {hooks}"
    );
    assert_eq!(hooks[0]["hooks"][0]["command"], format!("{absolute} hook"));
    let said = run(&["mcp", "install", "--client", "claude"]);
    assert_eq!(
        read(".mcp.json")["mcpServers"]["mahavishnu"]["command"],
        absolute.as_str()
    );
    assert!(
        said.contains(&format!("the settings name {absolute}, not `mahavishnu`"))
            && said.contains(bin.join("mahavishnu").to_str().unwrap()),
        "{said}"
    );
}

#[test]
fn a_qwen_project_gets_its_qwen_session_with_no_config_once_trusted() {
    let world = World::new();
    let project = repository(&world);
    std::fs::write(project.join("QWEN.md"), "# project notes\n").unwrap();
    // A stand-in for the Qwen Code program, so this test is about the lifecycle; the real CLI runs in qwen.rs.
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        "[profiles.qwen]\nprogram = \"cat\"\n",
    )
    .unwrap();
    let listed = world.json(&["hooks", "list"]);
    assert_eq!(listed["hooks"].as_array().unwrap().len(), 2, "{listed}");
    world.ok(&["trust"]);
    let outcome = world.json(&["session", "start", "--id", "q1"]);
    assert_eq!(outcome["launched"].as_array().unwrap().len(), 1);
    let id = outcome["launched"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(outcome["launched"][0]["profile"], "qwen");
    assert_eq!(
        world.json(&["session", "start", "--id", "q1"])["applied"],
        false,
        "starting twice is a no-op"
    );
    world.ok(&["session", "end", "--id", "q1"]);
    assert_eq!(world.state_of(&id), "closed");
    let sessions = world.json(&["session", "list"])["sessions"].clone();
    assert_eq!(sessions[0]["state"], "ended");
}

fn index_state(project: &Path) -> (String, String, Vec<u8>) {
    let head = Command::new("git")
        .arg("-C")
        .arg(project)
        .args(["rev-parse", "--verify", "-q", "HEAD"])
        .output()
        .unwrap();
    let branch = git(project, &["symbolic-ref", "HEAD"]);
    let index = std::fs::read(project.join(".git/index")).unwrap_or_default();
    (
        String::from_utf8_lossy(&head.stdout).into_owned(),
        branch,
        index,
    )
}

#[test]
fn checkpoints_snapshot_list_diff_and_restore_without_moving_head_or_index() {
    let world = World::new();
    let project = repository(&world);
    // A repository without commits, with a staged file, an ignored file and a binary file.
    std::fs::write(project.join(".gitignore"), "*.log\n").unwrap();
    std::fs::write(project.join("notes.txt"), "first\n").unwrap();
    std::fs::write(project.join("debug.log"), "ignored\n").unwrap();
    std::fs::write(project.join("image.bin"), [0u8, 159, 146, 150, 255, 0, 1]).unwrap();
    git(&project, &["add", "notes.txt"]);
    let before = index_state(&project);
    let first = world.json(&["checkpoint", "-m", "first"]);
    assert_eq!(
        index_state(&project),
        before,
        "HEAD, branch and index do not move"
    );
    let files = git(
        &project,
        &[
            "ls-tree",
            "-r",
            "--name-only",
            first["commit"].as_str().unwrap(),
        ],
    );
    assert_eq!(
        files, ".gitignore\nimage.bin\nnotes.txt\n",
        "ignored files stay out"
    );

    std::fs::write(project.join("notes.txt"), "second\n").unwrap();
    std::fs::write(project.join("new.txt"), "added later\n").unwrap();
    std::fs::remove_file(project.join("image.bin")).unwrap();
    let listed = world.json(&["checkpoint", "list"])["checkpoints"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let id = first["id"].as_str().unwrap();
    let diff = world.ok(&["checkpoint", "diff", id]);
    assert!(
        diff.contains("-first")
            && diff.contains("+second")
            && diff.contains("new.txt")
            && diff.contains("image.bin"),
        "{diff}"
    );
    let stat = world.ok(&["checkpoint", "diff", id, "--stat"]);
    assert!(stat.contains("3 files changed"), "{stat}");

    let restored = world.json(&["checkpoint", "restore", &id[..8]]);
    assert_eq!(
        std::fs::read_to_string(project.join("notes.txt")).unwrap(),
        "first\n"
    );
    assert_eq!(
        std::fs::read(project.join("image.bin")).unwrap(),
        [0u8, 159, 146, 150, 255, 0, 1]
    );
    assert!(
        !project.join("new.txt").exists(),
        "files added since the checkpoint are removed"
    );
    assert_eq!(
        std::fs::read_to_string(project.join("debug.log")).unwrap(),
        "ignored\n",
        "ignored files are untouched"
    );
    assert_eq!(index_state(&project), before);
    // The state before the restore was kept.
    let safety = restored["safety"]["commit"].as_str().unwrap();
    assert_eq!(
        git(&project, &["show", &format!("{safety}:new.txt")]),
        "added later\n"
    );
    assert_eq!(
        world.json(&["checkpoint", "list"])["checkpoints"]
            .clone()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let outside = tempfile::tempdir().unwrap();
    let stderr = world.fails(
        &["checkpoint", "--project", outside.path().to_str().unwrap()],
        2,
    );
    assert!(
        stderr.contains("not inside a git work tree") && stderr.contains("git init"),
        "{stderr}"
    );
    let stderr = world.fails(&["checkpoint", "diff", "ffffffff"], 2);
    assert!(stderr.contains("no checkpoint `ffffffff`"), "{stderr}");
}

#[test]
fn checkpoint_commit_commits_on_the_branch_but_never_empty_ignored_or_detached() {
    let world = World::new();
    let project = repository(&world);
    std::fs::write(project.join(".gitignore"), "secret.env\n").unwrap();
    std::fs::write(project.join("a.txt"), "a\n").unwrap();
    std::fs::write(project.join("secret.env"), "TOKEN=x\n").unwrap();
    let made = world.json(&["checkpoint", "--commit", "-m", "work of the session"]);
    let commit = made["branch_commit"]
        .as_str()
        .expect("a commit on the branch");
    assert_eq!(git(&project, &["rev-parse", "main"]).trim(), commit);
    assert_eq!(
        git(&project, &["log", "-1", "--format=%s"]).trim(),
        "work of the session"
    );
    assert_eq!(
        git(&project, &["ls-tree", "-r", "--name-only", "HEAD"]),
        ".gitignore\na.txt\n"
    );
    assert_eq!(
        git(&project, &["status", "--porcelain"]),
        "",
        "the index follows the new commit"
    );

    let again = world.json(&["checkpoint", "--commit"]);
    assert!(
        again.get("branch_commit").is_none(),
        "no empty commit: {again}"
    );
    assert_eq!(git(&project, &["rev-parse", "main"]).trim(), commit);

    git(&project, &["checkout", "-q", "--detach"]);
    std::fs::write(project.join("a.txt"), "changed\n").unwrap();
    let stderr = world.fails(&["checkpoint", "--commit"], 2);
    assert!(stderr.contains("detached"), "{stderr}");
    assert_eq!(
        git(&project, &["rev-parse", "HEAD"]).trim(),
        commit,
        "nothing moved"
    );
}

/// One fixture per event of the Claude Code hooks contract; each is answered, and reaches the hooks
/// configured for it.
#[test]
fn every_event_of_the_hooks_contract_is_answered() {
    let world = World::new();
    let project = repository(&world);
    let events = [
        "SessionStart",
        "UserPromptSubmit",
        "PreToolUse",
        "PostToolUse",
        "Notification",
        "Stop",
        "SubagentStop",
        "PreCompact",
        "SessionEnd",
    ];
    let mut config = String::new();
    for event in events {
        config.push_str(&format!(
            "[[hooks.{event}]]\ncommand = \"echo {{event}} >> {{project_dir}}/events.log\"\n"
        ));
    }
    std::fs::write(project.join(".mahavishnu.toml"), config).unwrap();
    world.ok(&["trust"]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hooks");
    for event in events {
        let text = std::fs::read_to_string(fixtures.join(format!("{event}.json"))).unwrap();
        let text = text.replace("PROJECT", project.to_str().unwrap());
        let (code, _, stderr, _) = hook(&world, &text);
        assert_eq!(code, 0, "{event}: {stderr}");
        let log = wait_for(&project.join("events.log"), event, Duration::from_secs(10));
        assert!(
            log.contains(&format!("{event}\n")),
            "{event} ran its hook: {log}"
        );
    }
    assert_eq!(
        world.json(&["session", "status", "--id", "abc123"])["state"],
        "ended"
    );
}

#[test]
fn hooks_test_shows_and_runs_an_event_against_a_payload() {
    let world = World::new();
    let project = repository(&world);
    std::fs::write(
        project.join(".mahavishnu.toml"),
        "[[hooks.UserPromptSubmit]]\ncommand = \"echo {prompt} > prompt.txt\"\n[[hooks.UserPromptSubmit]]\ncommand = \"true\"\nwhen = { project_has = [\"nope\"] }\n",
    )
    .unwrap();
    let payload = world.dir.path().join("payload.json");
    std::fs::write(
        &payload,
        r#"{"hook_event_name":"UserPromptSubmit","session_id":"t","prompt":"it's $(here)"}"#,
    )
    .unwrap();
    let plan = world.json(&[
        "hooks",
        "test",
        "UserPromptSubmit",
        "--payload",
        payload.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(plan[0]["verdict"], "skipped: not trusted");
    world.ok(&["trust"]);
    let plan = world.json(&[
        "hooks",
        "test",
        "UserPromptSubmit",
        "--payload",
        payload.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(plan[0]["verdict"], "would run");
    // The shell reads the prompt from the environment, never as part of the command.
    assert_eq!(
        plan[0]["command"],
        "echo \"${MAHAVISHNU_PROMPT}\" > prompt.txt"
    );
    assert!(
        plan[1]["verdict"]
            .as_str()
            .unwrap()
            .starts_with("skipped: the project has none of nope")
    );
    assert!(
        !project.join("prompt.txt").exists(),
        "a dry run runs nothing"
    );
    let ran = world.json(&[
        "hooks",
        "test",
        "UserPromptSubmit",
        "--payload",
        payload.to_str().unwrap(),
    ]);
    assert_eq!(ran["runs"].as_array().unwrap().len(), 1);
    assert_eq!(
        std::fs::read_to_string(project.join("prompt.txt")).unwrap(),
        "it's $(here)\n"
    );
    let stderr = world.fails(&["hooks", "test", "Whenever"], 2);
    assert!(stderr.contains("unknown hook event"), "{stderr}");
}

/// Mahavishnu may be set up in the middle of a coding session: that session's end still runs its hooks.
#[test]
fn session_end_of_a_session_started_before_setup_runs_its_hooks() {
    let world = World::new();
    let project = repository(&world);
    std::fs::write(
        project.join(".mahavishnu.toml"),
        "[[hooks.SessionEnd]]\ncommand = \"echo end {session_id} >> {project_dir}/marks.log\"\n",
    )
    .unwrap();
    world.ok(&["trust"]);
    let (code, _, stderr, _) = hook(
        &world,
        &payload(
            "SessionEnd",
            "late",
            &project,
            serde_json::json!({"reason": "other"}),
        ),
    );
    assert_eq!(code, 0, "{stderr}");
    let marks = wait_for(
        &project.join("marks.log"),
        "end late",
        Duration::from_secs(10),
    );
    assert_eq!(marks, "end late\n");
    let started = Instant::now();
    while world.json(&["session", "status", "--id", "late"])["state"] != "ended" {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the session is recorded as ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The user's hooks and the project's add up; the user's need no trust, the project's do.
#[test]
fn user_and_project_hooks_add_up_and_only_the_projects_need_trust() {
    let world = World::new();
    let project = repository(&world);
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        "[[hooks.SessionStart]]\ncommand = \"echo user >> {project_dir}/marks.log\"\n",
    )
    .unwrap();
    std::fs::write(
        project.join(".mahavishnu.toml"),
        "[[hooks.SessionStart]]\ncommand = \"echo project >> {project_dir}/marks.log\"\n",
    )
    .unwrap();
    let listed = world.json(&["hooks", "list"]);
    let hooks = listed["hooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2, "{listed}");
    assert_eq!(
        (hooks[0]["origin"].as_str(), hooks[0]["trusted"].as_bool()),
        (Some("user config"), Some(true))
    );
    assert_eq!(hooks[1]["trusted"], false);
    hook(
        &world,
        &payload("SessionStart", "u1", &project, serde_json::json!({})),
    );
    assert_eq!(
        std::fs::read_to_string(project.join("marks.log")).unwrap(),
        "user\n"
    );
    world.ok(&["trust"]);
    hook(
        &world,
        &payload("SessionStart", "u2", &project, serde_json::json!({})),
    );
    assert_eq!(
        std::fs::read_to_string(project.join("marks.log")).unwrap(),
        "user\nuser\nproject\n"
    );
}
