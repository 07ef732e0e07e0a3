//! End-to-end tests of `mahavishnu terminal ...`, driving the built binary against real tmux and real PTYs.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{World, target_named};

const BASH: &[&str] = &["--", "--norc", "--noprofile"];

fn launch_shells(world: &World, target: &str, count: usize) -> Vec<String> {
    let count = count.to_string();
    let mut args = vec!["shell", "--target", target, "--count", &count];
    args.extend(BASH);
    world.launch(&args)
}

fn many_shells_round_trip(target: &str) {
    let world = World::new();
    let ids = launch_shells(&world, target, 10);
    assert_eq!(ids.len(), 10);
    assert!(
        ids.iter()
            .all(|id| id.starts_with(&format!("{target}:mv-"))),
        "{ids:?}"
    );
    let listed = world.json(&["terminal", "list"])["instances"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 10);
    for (n, id) in ids.iter().enumerate() {
        // The marker is computed by the shell, so the typed command line itself never matches.
        world.ok(&["terminal", "send", id, &format!("echo MARK-{n}-$((40+2))")]);
        let matched = world.ok(&[
            "terminal",
            "wait",
            id,
            "--for",
            &format!("MARK-{n}-42"),
            "--timeout",
            "20",
        ]);
        assert_eq!(matched.trim(), format!("MARK-{n}-42"));
        let screen = world.ok(&["terminal", "capture", id]);
        assert!(screen.contains(&format!("MARK-{n}-42")), "{screen}");
        let exec = world.json(&[
            "terminal",
            "exec",
            id,
            "--",
            "sh",
            "-c",
            "pwd; echo err >&2; exit 3",
        ]);
        assert_eq!(exec["exit_code"], 3);
        assert_eq!(
            exec["stdout"].as_str().unwrap().trim(),
            std::fs::canonicalize(world.work())
                .unwrap()
                .to_str()
                .unwrap()
        );
        assert_eq!(exec["stderr"], "err\n");
    }
    world.ok(&["terminal", "wait", &ids[0], "--waiting", "--timeout", "20"]);
    let closed = world.json(&["terminal", "close", "--all"])["closed"].clone();
    assert_eq!(closed.as_array().unwrap().len(), 10);
    assert!(
        closed
            .as_array()
            .unwrap()
            .iter()
            .all(|outcome| outcome["closed"] == true)
    );
    assert_eq!(
        world.json(&["terminal", "list"])["instances"]
            .clone()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let all = world.json(&["terminal", "list", "--all"])["instances"].clone();
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|instance| instance["state"] == "closed")
    );
}

#[test]
fn ten_shells_on_pty_launch_send_wait_capture_exec_close() {
    many_shells_round_trip("pty");
}

#[test]
fn ten_shells_on_tmux_launch_send_wait_capture_exec_close() {
    many_shells_round_trip("tmux");
}

#[test]
fn a_killed_pty_host_turns_its_session_lost() {
    let world = World::new();
    let id = launch_shells(&world, "pty", 2).remove(0);
    let native = id.trim_start_matches("pty:");
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: std::path::PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(world.sessions_dir().join(format!("pty/{native}.sock"))),
        0o600,
        "only the user may talk to a host"
    );
    assert_eq!(mode(world.sessions_dir().join("pty")), 0o700);
    let host = Command::new("pgrep")
        .args(["-f", &format!("__pty-host.*--name {native}")])
        .output()
        .unwrap();
    let pid = String::from_utf8(host.stdout).unwrap().trim().to_string();
    assert!(!pid.is_empty(), "the host process of {id} runs");
    assert!(
        Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    world.wait_state(&id, "lost", Duration::from_secs(5));
    let states = world.listed_states();
    assert_eq!(
        states.iter().filter(|state| *state == "lost").count(),
        1,
        "only the killed session: {states:?}"
    );
    let events = world.json(&["events", "--id", &id])["events"].clone();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["detail"]["to"] == "lost"),
        "{events}"
    );
}

#[test]
fn a_killed_tmux_server_turns_its_sessions_lost() {
    let world = World::new();
    let ids = launch_shells(&world, "tmux", 2);
    assert!(
        Command::new("tmux")
            .args(["-L", &world.tmux_socket, "kill-server"])
            .status()
            .unwrap()
            .success()
    );
    for id in &ids {
        world.wait_state(id, "lost", Duration::from_secs(5));
    }
    let stderr = world.fails(&["terminal", "send", &ids[0], "hello"], 1);
    assert!(stderr.contains("lost"), "{stderr}");
}

#[test]
fn a_program_that_exits_at_once_keeps_its_code_and_last_screen() {
    let world = World::new();
    for target in ["pty", "tmux"] {
        let name = format!("quick-{target}");
        let ids = world.launch(&[
            "shell",
            "--target",
            target,
            "--name",
            &name,
            "--",
            "-c",
            "echo last words; exit 3",
        ]);
        world.wait_state(&ids[0], "exited", Duration::from_secs(5));
        let shown = world.json(&["terminal", "show", &name]);
        assert_eq!(shown["exit_code"], 3, "{shown}");
        let screen = world.ok(&["terminal", "capture", &name, "--lines", "1"]);
        assert_eq!(screen, "last words\n");
        let stderr = world.fails(&["terminal", "send", &name, "more"], 1);
        assert!(
            stderr.contains("exited with code 3") && stderr.contains("capture"),
            "{stderr}"
        );
        let table = world.ok(&["terminal", "list"]);
        assert!(table.contains("exited(3)"), "{table}");
    }
}

#[test]
fn text_with_shell_syntax_is_typed_literally() {
    let world = World::new();
    let work = world.work();
    for target in ["pty", "tmux"] {
        let id = world
            .launch(&["shell", "--target", target, "--", "-c", "exec cat"])
            .remove(0);
        let nasty = [
            "it's \"quoted\"",
            "a; touch pwned-semicolon",
            "$(touch pwned-subst)",
            "`touch pwned-backtick`",
            "ünïcødé ✓ 日本",
            "-n looks like a flag",
            "line one\nline two",
        ];
        for text in nasty {
            world.ok(&["terminal", "send", &id, text]);
        }
        world.ok(&[
            "terminal",
            "wait",
            &id,
            "--for",
            "line two\\s+line one\\s+line two",
            "--timeout",
            "10",
        ]);
        let screen = world.ok(&["terminal", "capture", &id]);
        for text in nasty.iter().filter(|text| !text.contains('\n')) {
            assert!(
                screen.matches(text).count() >= 2,
                "{text:?} typed and echoed by cat:\n{screen}"
            );
        }
        world.ok(&["terminal", "close", &id]);
    }
    let pwned: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pwned"))
        .collect();
    assert!(pwned.is_empty(), "nothing was executed: {pwned:?}");
}

#[test]
fn keys_scrollback_ansi_and_idle_waits() {
    let world = World::new();
    for target in ["pty", "tmux"] {
        let id = launch_shells(&world, target, 1).remove(0);
        world.ok(&[
            "terminal",
            "send",
            &id,
            "for i in $(seq 1 400); do echo row$i; done; printf '\\033[31mRED\\033[0m\\n'",
        ]);
        world.ok(&["terminal", "wait", &id, "--for", "^RED", "--timeout", "10"]);
        let visible = world.ok(&["terminal", "capture", &id]);
        assert!(!visible.contains("row1\n"), "the first rows scrolled away");
        let all = world.ok(&["terminal", "capture", &id, "--scrollback"]);
        assert!(
            all.contains("\nrow1\n") && all.contains("\nrow400\n"),
            "scrollback keeps every row"
        );
        let ansi = world.ok(&["terminal", "capture", &id, "--ansi"]);
        assert!(
            ansi.contains("\u{1b}["),
            "escape codes are kept with --ansi"
        );
        let last = world.ok(&["terminal", "capture", &id, "--lines", "2"]);
        assert_eq!(last.lines().next(), Some("RED"), "{last:?}");

        world.ok(&["terminal", "send", &id, "sleep 30", "--no-enter"]);
        world.ok(&["terminal", "keys", &id, "Enter"]);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            world.state_of(&id),
            "running",
            "a foreground job means busy"
        );
        world.ok(&["terminal", "keys", &id, "C-c"]);
        let started = Instant::now();
        world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "10"]);
        world.ok(&["terminal", "wait", &id, "--idle", "300", "--timeout", "10"]);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(world.state_of(&id), "waiting");
    }
}

#[test]
fn exec_uses_the_session_directory_and_environment() {
    let world = World::new();
    let sub = world.work().join("sub dir");
    std::fs::create_dir_all(&sub).unwrap();
    for target in ["pty", "tmux"] {
        let sub = sub.to_str().unwrap();
        let id = world
            .launch(&[
                "shell",
                "--target",
                target,
                "--cwd",
                sub,
                "--env",
                "GREETING=hello there",
                "--",
                "--norc",
            ])
            .remove(0);
        let out = world.sh(&id, "echo \"$GREETING\" in \"$(pwd)\"");
        assert_eq!(
            out.trim(),
            format!(
                "hello there in {}",
                std::fs::canonicalize(sub).unwrap().display()
            )
        );
        // The shell's own `cd` moves where side commands run.
        world.ok(&["terminal", "send", &id, "cd .. && echo MOVED-$((1+1))"]);
        world.ok(&["terminal", "wait", &id, "--for", "MOVED-2"]);
        let out = world.ok(&["terminal", "exec", &id, "--", "pwd"]);
        assert_eq!(
            out.trim(),
            std::fs::canonicalize(world.work())
                .unwrap()
                .to_str()
                .unwrap()
        );
        let status = world
            .run(&["terminal", "exec", &id, "--", "sh", "-c", "exit 9"])
            .status;
        assert_eq!(status.code(), Some(9), "exec exits with the command's code");
        let timed = world.json(&[
            "terminal",
            "exec",
            &id,
            "--timeout",
            "0.3",
            "--",
            "sleep",
            "10",
        ]);
        assert_eq!(timed["timed_out"], true);
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_disturbs_nothing() {
    let world = World::new();
    let alive = launch_shells(&world, "pty", 1).remove(0);
    std::fs::write(world.dir.path().join("home/config.toml"), "[profiles.ghost]\nprogram = \"no-such-cli-xyz\"\ninstall_hint = \"npm install -g ghost-cli\"\n").unwrap();
    let cases: &[(&[&str], i32, &[&str])] = &[
        (
            &["terminal", "send", "pty:mv-nope", "x"],
            1,
            &["no instance `pty:mv-nope`", "terminal list"],
        ),
        (
            &["terminal", "send", "bogus:id", "x"],
            2,
            &["no target `bogus`", "mahavishnu targets"],
        ),
        (
            &["terminal", "send", "Bad_Name:id", "x"],
            2,
            &["not an instance id", "tmux:mv-"],
        ),
        (
            &["terminal", "send", "nope", "x"],
            1,
            &["no instance `nope`"],
        ),
        (
            &["terminal", "launch", "nosuch"],
            2,
            &["unknown profile `nosuch`", "qwen", "[profiles.nosuch]"],
        ),
        (
            &["terminal", "launch", "ghost"],
            2,
            &[
                "`no-such-cli-xyz`",
                "npm install -g ghost-cli",
                "profiles.ghost.program",
            ],
        ),
        (
            &["terminal", "launch", "shell", "--count", "0"],
            2,
            &["--count 0"],
        ),
        (
            &["terminal", "launch", "shell", "--count", "1000000"],
            2,
            &["terminal.max_count"],
        ),
        (
            &["terminal", "launch", "shell", "--env", "NOEQUALS"],
            2,
            &["KEY=VALUE"],
        ),
        (
            &["terminal", "launch", "shell", "--env", "BAD-KEY=1"],
            2,
            &["not an environment variable name"],
        ),
        (
            &["terminal", "launch", "shell", "--name", "a;rm -rf x"],
            2,
            &["--name"],
        ),
        (
            &["terminal", "launch", "shell", "--cwd", "/no/such/dir"],
            2,
            &["/no/such/dir", "existing directory"],
        ),
        (
            &["terminal", "keys", &alive, "Hyper-Q"],
            2,
            &["unknown key `Hyper-Q`", "C-c"],
        ),
        (
            &["terminal", "wait", &alive, "--for", "(unclosed"],
            2,
            &["not a valid regular expression"],
        ),
        (
            &[
                "terminal",
                "wait",
                &alive,
                "--for",
                "NEVER-THERE",
                "--timeout",
                "0.3",
            ],
            1,
            &["timed out", "NEVER-THERE"],
        ),
        (
            &["terminal", "exec", &alive, "--", "no-such-command-xyz"],
            2,
            &["no-such-command-xyz", "not found"],
        ),
        (&["terminal", "capture", &alive, "--lines", "-3"], 2, &[]),
    ];
    for (args, code, needles) in cases {
        let stderr = world.fails(args, *code);
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: {stderr:?} should mention {needle:?}"
            );
        }
    }
    let listed = world.json(&["terminal", "list"])["instances"].clone();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "no failed launch left a record behind: {listed}"
    );
    assert_ne!(world.state_of(&alive), "lost");
}

#[test]
fn without_tmux_the_pty_target_still_works() {
    let world = World::new();
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        "[targets.tmux]\nprogram = \"/nonexistent/tmux\"\n",
    )
    .unwrap();
    let targets = world.json(&["targets"]);
    let tmux = target_named(&targets, "tmux");
    assert_eq!(tmux["ready"], false);
    assert!(
        tmux["detail"]
            .as_str()
            .unwrap()
            .contains("apt install tmux"),
        "{tmux}"
    );
    let stderr = world.fails(&["terminal", "launch", "shell", "--target", "tmux"], 1);
    assert!(
        stderr.contains("not installed") && stderr.contains("--target pty"),
        "{stderr}"
    );
    let id = world.launch(&["shell"]).remove(0);
    assert!(id.starts_with("pty:"), "auto picks pty without tmux: {id}");
    let listed = world.json(&["terminal", "list", "--all"])["instances"].clone();
    assert_eq!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "running" || i["state"] == "waiting")
            .count(),
        1
    );
}

#[test]
fn a_damaged_or_unusable_state_directory_is_reported_and_left_alone() {
    let world = World::new();
    std::fs::create_dir_all(world.state_dir()).unwrap();
    let database = world.state_dir().join("mahavishnu.db");
    let garbage = b"precious bytes that are not SQLite ".repeat(200);
    std::fs::write(&database, &garbage).unwrap();
    let stderr = world.fails(&["terminal", "list"], 1);
    assert!(
        stderr.contains("damaged") && stderr.contains("--state-dir"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&database).unwrap(),
        garbage,
        "the damaged file is untouched"
    );

    let file = world.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let under_file = file.join("state");
    let stderr = world.fails(
        &[
            "terminal",
            "list",
            "--state-dir",
            under_file.to_str().unwrap(),
        ],
        1,
    );
    assert!(
        stderr.contains("cannot be created") && stderr.contains("MAHAVISHNU_STATE_DIR"),
        "{stderr}"
    );

    // An empty variable counts as unset, as everywhere: the state then lives under XDG_STATE_HOME.
    let xdg = world.dir.path().join("xdg-state");
    let listed = support::succeeded(
        "terminal list with empty variables",
        world
            .command(&["--output", "json", "terminal", "list"])
            .env("MAHAVISHNU_STATE_DIR", "")
            .env("MAHAVISHNU_TOKEN", "")
            .env("XDG_STATE_HOME", &xdg)
            .output()
            .unwrap(),
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["instances"], serde_json::json!([]), "{listed}");
    assert!(xdg.join("mahavishnu/mahavishnu.db").exists());
}

#[test]
fn twenty_concurrent_processes_lose_and_corrupt_nothing() {
    let world = World::new();
    let children: Vec<_> = (0..20)
        .map(|n| {
            let name = format!("c{n}");
            world
                .command(&[
                    "terminal", "launch", "shell", "--target", "pty", "--name", &name, "--",
                    "--norc",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{:?}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let listers: Vec<_> = (0..20)
        .map(|_| {
            world
                .command(&["terminal", "list", "-o", "json"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for lister in listers {
        let output = lister.wait_with_output().unwrap();
        assert!(output.status.success());
        let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(listed["instances"].as_array().unwrap().len(), 20);
    }
    let events = world.json(&["events", "--limit", "1000"])["events"].clone();
    let launched = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "launched")
        .count();
    assert_eq!(launched, 20);
    let integrity = Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('pragma integrity_check').fetchone()[0])"])
        .arg(world.state_dir().join("mahavishnu.db"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&integrity.stdout).trim(), "ok");
}

#[test]
fn config_show_names_where_each_value_came_from() {
    let world = World::new();
    std::fs::write(world.work().join(".mahavishnu.toml"), "[terminal]\nmax_concurrent = 3\n[profiles.qwen-local]\nprogram = \"qwen\"\nwaiting = [\"Type your message\"]\nidle_ms = 1500\n").unwrap();
    // Until the project file is trusted, its profiles are left out, and `config show` says so.
    let shown = world.json(&["config", "show"]);
    assert_eq!(
        shown["config"]["profiles"]["qwen-local"],
        serde_json::Value::Null
    );
    assert_eq!(shown["project_trust"]["ignored"][0], "profiles.qwen-local");
    world.ok(&["trust"]);
    let shown = world.json(&["config", "show"]);
    assert_eq!(shown["config"]["terminal"]["max_concurrent"], 3);
    assert!(
        shown["origins"]["terminal.max_concurrent"]
            .as_str()
            .unwrap()
            .ends_with(".mahavishnu.toml")
    );
    assert_eq!(shown["origins"]["terminal.rows"], "built-in");
    assert_eq!(
        shown["origins"]["targets.tmux.socket_name"],
        "env MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME"
    );
    assert_eq!(shown["config"]["profiles"]["qwen-local"]["idle_ms"], 1500);
    let table = world.ok(&["config", "show"]);
    assert!(
        table.contains("terminal.max_concurrent") && table.contains(".mahavishnu.toml"),
        "{table}"
    );

    std::fs::write(
        world.work().join(".mahavishnu.toml"),
        "[terminal]\n\nmax_concurent = 3\n",
    )
    .unwrap();
    let stderr = world.fails(&["terminal", "list"], 1);
    assert!(
        stderr.contains(".mahavishnu.toml")
            && stderr.contains("line 3")
            && stderr.contains("max_concurent"),
        "{stderr}"
    );
}

/// Regression: a mistyped configuration variable printed toml's message across a stray line break.
#[test]
fn a_mistyped_config_variable_is_one_line_naming_the_right_one() {
    let world = World::new();
    let output = world
        .command(&["config", "show"])
        .env("MAHAVISHNU_TERMINAL__MAX_CONCURENT", "3")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: environment variable MAHAVISHNU_TERMINAL__MAX_CONCURENT: ")
            && stderr.contains("did you mean MAHAVISHNU_TERMINAL__MAX_CONCURRENT?"),
        "{stderr}"
    );
    let output = world
        .command(&["config", "show"])
        .env("MAHAVISHNU_TERMINAL__MAX_CONCURRENT", "many")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unset it or fix its value"), "{stderr}");
}

/// Regression: every `--help` repeated `--state-dir` and `--output`, even where they mean nothing. They
/// show at the top and where they apply, and are still taken before or after any command.
#[test]
fn help_shows_the_global_flags_only_where_they_apply() {
    let world = World::new();
    let top = world.ok(&["--help"]);
    assert!(
        top.contains("--state-dir") && top.contains("--output"),
        "{top}"
    );
    for (args, state_dir, output) in [
        (&["man", "--help"][..], false, false),
        (&["completions", "--help"][..], false, false),
        (&["terminal", "--help"][..], false, false),
        (&["terminal", "list", "--help"][..], true, true),
        (&["terminal", "attach", "--help"][..], true, false),
        (&["agents", "list", "--help"][..], false, true),
        (&["mcp", "--help"][..], true, false),
        (&["mcp", "install", "--help"][..], false, true),
    ] {
        let help = world.ok(args);
        assert_eq!(help.contains("--state-dir"), state_dir, "{args:?}: {help}");
        assert_eq!(help.contains("--output"), output, "{args:?}: {help}");
    }
    let state = world.state_dir();
    let state = state.to_str().unwrap();
    for args in [
        &["--output", "json", "agents", "list"][..],
        &["agents", "list", "-o", "json"][..],
        &["agents", "list", "--state-dir", state, "-o", "json"][..],
        &["--state-dir", state, "terminal", "list", "--output", "json"][..],
    ] {
        let printed = world.ok(args);
        assert!(printed.starts_with('{'), "{args:?}: {printed}");
    }
    assert!(world.ok(&["-o", "json", "man"]).contains(".TH"));
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    let world = World::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = world.ok(&["completions", shell]);
        assert!(
            script.contains("terminal") && script.contains("capture"),
            "{shell}"
        );
    }
    let man = world.ok(&["man"]);
    assert!(man.starts_with(".ie") || man.contains(".TH"), "roff output");
    assert!(man.contains("terminal"));
    let version = world.ok(&["--version"]);
    assert!(version.starts_with("mahavishnu "));
}

/// Regression: `man` printed only the top page, which points to `mahavishnu-terminal(1)` and others that
/// were never made. `man --dir` writes every page the top one (and each below) points to.
#[test]
fn man_dir_writes_every_page_that_a_page_points_to() {
    let world = World::new();
    let dir = world.dir.path().join("man/man1");
    world.ok(&["man", "--dir", dir.to_str().unwrap()]);
    let page_of = |name: &str| dir.join(format!("{name}.1"));
    let mut pending = vec!["mahavishnu".to_string()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        let text = std::fs::read_to_string(page_of(&name))
            .unwrap_or_else(|e| panic!("no page {name}.1 though a page points to it: {e}"));
        seen.insert(name.clone());
        // A reference reads `mahavishnu\-terminal(1)` in roff.
        for line in text.lines().filter(|line| line.ends_with("(1)")) {
            let referenced = line.trim_end_matches("(1)").replace("\\-", "-");
            if referenced.starts_with("mahavishnu-") && !seen.contains(&referenced) {
                pending.push(referenced);
            }
        }
    }
    for name in [
        "mahavishnu-terminal",
        "mahavishnu-terminal-launch",
        "mahavishnu-agents-sync",
        "mahavishnu-man",
    ] {
        assert!(
            seen.contains(name),
            "{name} is reached from the top page: {seen:?}"
        );
    }
    assert!(
        !page_of("mahavishnu-help").exists(),
        "help has no page of its own"
    );
    assert!(
        !page_of("mahavishnu-__pty-host").exists(),
        "hidden commands have no page"
    );
    let top = world.ok(&["man"]);
    assert_eq!(top, std::fs::read_to_string(page_of("mahavishnu")).unwrap());
}

#[test]
fn events_follow_prints_state_changes_as_they_happen() {
    let world = World::new();
    let mut follower = world
        .command(&["events", "--follow", "-o", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let id = launch_shells(&world, "pty", 1).remove(0);
    world.ok(&["terminal", "close", &id]);
    std::thread::sleep(Duration::from_millis(600));
    follower.kill().unwrap();
    let output = follower.wait_with_output().unwrap();
    let kinds: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        kinds.contains(&"launched".to_string()) && kinds.contains(&"closed".to_string()),
        "{kinds:?}"
    );
}

#[test]
fn sessions_are_recovered_after_the_state_is_lost() {
    let world = World::new();
    let pty = launch_shells(&world, "pty", 1).remove(0);
    let tmux = launch_shells(&world, "tmux", 1).remove(0);
    std::fs::remove_dir_all(world.state_dir()).unwrap();
    assert_eq!(
        world.json(&["terminal", "list"])["instances"]
            .clone()
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let ids = support::sorted_ids(&world.json(&["terminal", "recover"])["instances"].clone());
    let mut want = vec![pty.clone(), tmux.clone()];
    want.sort();
    assert_eq!(ids, want);
    world.ok(&["terminal", "send", &pty, "echo BACK-$((2+3))"]);
    world.ok(&["terminal", "wait", &pty, "--for", "BACK-5"]);
}

/// Runs `mahavishnu terminal attach` inside a tmux pane of its own (a real terminal a person would use),
/// types through it, then detaches.
#[test]
fn attach_hands_over_the_terminal_and_gives_it_back() {
    let world = World::new();
    let outer = format!("{}-outer", world.tmux_socket);
    let outer_tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &outer, "-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap()
    };
    for target in ["pty", "tmux"] {
        let id = launch_shells(&world, target, 1).remove(0);
        let attach = world.command(&["terminal", "attach", &id]);
        let mut line = String::new();
        for (key, value) in attach.get_envs() {
            if let Some(value) = value {
                line.push_str(&format!(
                    "{}={} ",
                    key.to_string_lossy(),
                    mahavishnu_core::shell::quote(&value.to_string_lossy())
                ));
            }
        }
        line.push_str(&format!(
            "{} terminal attach {id}; echo ATTACH-EXIT=$?; sleep 60",
            support::binary().display()
        ));
        let started = outer_tmux(&[
            "new-session",
            "-d",
            "-s",
            "outer",
            "-x",
            "120",
            "-y",
            "40",
            "env",
            "-u",
            "TMUX",
            "sh",
            "-c",
            &line,
        ]);
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
        // The attach takes a moment to start: type until the session shows what was typed.
        let started = Instant::now();
        loop {
            outer_tmux(&["send-keys", "-t", "=outer:", "-l", "echo THROUGH-$((3*3))"]);
            outer_tmux(&["send-keys", "-t", "=outer:", "Enter"]);
            let seen = world.run(&[
                "terminal",
                "wait",
                &id,
                "--for",
                "THROUGH-9",
                "--timeout",
                "1",
            ]);
            if seen.status.success() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "typing through attach never arrived"
            );
        }
        let detach: &[&str] = if target == "pty" {
            &["C-]"]
        } else {
            &["C-b", "d"]
        };
        for key in detach {
            outer_tmux(&["send-keys", "-t", "=outer:", key]);
            std::thread::sleep(Duration::from_millis(100));
        }
        let started = Instant::now();
        let mut screen = String::new();
        while started.elapsed() < Duration::from_secs(10) && !screen.contains("ATTACH-EXIT=0") {
            std::thread::sleep(Duration::from_millis(100));
            screen = String::from_utf8_lossy(
                &outer_tmux(&["capture-pane", "-p", "-t", "=outer:"]).stdout,
            )
            .into_owned();
        }
        assert!(
            screen.contains("ATTACH-EXIT=0"),
            "attach returned cleanly after detaching:\n{screen}"
        );
        assert_ne!(
            world.state_of(&id),
            "lost",
            "the session lives on after detaching"
        );
        outer_tmux(&["kill-server"]);
    }
}

/// `send --all` types one prompt into every matching session at once; `wait --all` waits for all.
#[test]
fn send_all_broadcasts_and_wait_all_waits_for_every_session() {
    let world = World::new();
    let ids = launch_shells(&world, "pty", 3);
    world.ok(&[
        "terminal",
        "wait",
        "--all",
        "--idle",
        "300",
        "--timeout",
        "20",
    ]);
    let sent = world.json(&[
        "terminal",
        "send",
        "--all",
        "--profile",
        "shell",
        "echo BC-$((1+1))",
    ])["sent"]
        .clone();
    assert_eq!(support::sorted_ids(&sent), {
        let mut sorted = ids.clone();
        sorted.sort();
        sorted
    });
    assert!(
        sent.as_array().unwrap().iter().all(|s| s["ok"] == true),
        "{sent}"
    );
    world.ok(&[
        "terminal",
        "wait",
        "--all",
        "--for",
        "^BC-2$",
        "--timeout",
        "20",
    ]);
    for id in &ids {
        let screen = world.ok(&["terminal", "capture", id]);
        assert!(screen.contains("\nBC-2"), "{id}:\n{screen}");
    }
    let none = world.ok(&["terminal", "send", "--all", "--profile", "qwen", "hello"]);
    assert!(none.contains("no live sessions match"), "{none}");
    let usage = world.fails(&["terminal", "send", "--all", "two", "words"], 2);
    assert!(usage.contains("with --all give only the text"), "{usage}");
    let timed_out = world.fails(
        &[
            "terminal",
            "wait",
            "--all",
            "--for",
            "never-there",
            "--timeout",
            "0.5",
        ],
        1,
    );
    assert!(timed_out.contains("3 of 3 sessions failed"), "{timed_out}");
}

/// `close --all` takes the same selection as `send --all` and `wait --all`, and a failed or lost record
/// never makes it fail.
#[test]
fn close_all_selects_by_profile_and_never_fails_on_a_failed_record() {
    let world = World::new();
    // tmux that cannot start anything, so that a launch on it leaves a failed record.
    let broken = world.dir.path().join("broken-tmux");
    std::fs::write(&broken, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!(
            "[profiles.other]\nshell = true\n\n[targets.tmux]\nprogram = {:?}\n",
            broken.display().to_string()
        ),
    )
    .unwrap();
    let shells = world.launch(&["shell", "--target", "pty", "--count", "2"]);
    let others = world.launch(&["other", "--target", "pty"]);
    let failed = world.run(&[
        "terminal", "launch", "shell", "--target", "tmux", "--name", "doomed",
    ]);
    assert!(!failed.status.success());
    assert_eq!(world.state_of("tmux:doomed"), "failed");
    let closed = world.json(&[
        "terminal",
        "close",
        "--all",
        "--profile",
        "other",
        "--grace",
        "0.2",
    ])["closed"]
        .clone();
    assert_eq!(closed.as_array().unwrap().len(), 1, "{closed}");
    assert_eq!(closed[0]["id"], others[0].as_str());
    for id in &shells {
        assert_ne!(world.state_of(id), "closed");
    }
    world.ok(&["terminal", "close", "--all", "--grace", "0.2"]);
    let left: Vec<String> = world.json(&["terminal", "list"])["instances"]
        .clone()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].to_string())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `capture` leaves out the blank rows below the last line written; `--full` keeps the whole screen.
#[test]
fn capture_trims_the_blank_end_of_the_screen_unless_full() {
    let world = World::new();
    let id = world
        .launch(&["shell", "--target", "pty", "--", "--norc"])
        .remove(0);
    world.ok(&["terminal", "send", &id, "echo marked-line"]);
    world.ok(&[
        "terminal",
        "wait",
        &id,
        "--for",
        "^marked-line",
        "--timeout",
        "10",
    ]);
    let trimmed = world.ok(&["terminal", "capture", &id]);
    assert!(trimmed.contains("marked-line"), "{trimmed}");
    let last = trimmed.lines().last().unwrap_or("");
    assert!(
        !last.trim().is_empty(),
        "ends on a written line: {trimmed:?}"
    );
    let full = world.ok(&["terminal", "capture", &id, "--full"]);
    let rows = world.json(&["config", "show"])["config"]["terminal"]["rows"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(full.lines().count(), rows, "{full:?}");
    world.ok(&["terminal", "close", &id, "--grace", "0.2"]);
}

/// Every time flag takes a number in its old unit or a duration with a unit, and a wrong one says what
/// is expected.
#[test]
fn times_take_units_and_wrong_ones_say_what_is_expected() {
    let world = World::new();
    let id = world
        .launch(&["shell", "--target", "pty", "--", "--norc"])
        .remove(0);
    world.ok(&[
        "terminal",
        "wait",
        &id,
        "--idle",
        "300ms",
        "--timeout",
        "10s",
    ]);
    world.ok(&["terminal", "wait", &id, "--idle", "0.3s", "--timeout", "1m"]);
    assert_eq!(world.sh(&id, "echo ok").trim(), "ok");
    world.ok(&["terminal", "exec", &id, "--timeout", "2s", "--", "true"]);
    let started = std::time::Instant::now();
    let timed_out = world.run(&[
        "terminal",
        "exec",
        &id,
        "--timeout",
        "300ms",
        "--",
        "sleep",
        "5",
    ]);
    assert!(!timed_out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the unit was read"
    );
    let error = world.fails(&["terminal", "wait", &id, "--idle", "500x"], 2);
    assert!(
        error.contains("`500x` is not a time") && error.contains("500ms"),
        "{error}"
    );
    let error = world.fails(&["terminal", "close", &id, "--grace", "2y"], 2);
    assert!(error.contains("more than a year"), "{error}");
    world.ok(&["terminal", "close", &id, "--grace", "200ms"]);
}

/// `close --all` on tmux ends every session together: programs that end on SIGHUP go at once, and
/// those that ignore it are killed when the one grace period is over; no process is left.
#[test]
fn closing_many_tmux_sessions_ends_every_process() {
    let world = World::new();
    let stubborn = world.launch(&[
        "shell",
        "--target",
        "tmux",
        "--count",
        "3",
        "--",
        "-c",
        "trap '' HUP; sleep 300",
    ]);
    let plain = world.launch(&["shell", "--target", "tmux", "--count", "5", "--", "--norc"]);
    let mut pids = Vec::new();
    for id in &plain {
        world.ok(&["terminal", "wait", id, "--waiting", "--timeout", "10s"]);
    }
    for id in stubborn.iter().chain(&plain) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let pid = world.json(&["terminal", "show", id])["pid"].as_u64();
            match pid {
                Some(pid) => break pid,
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                None => panic!("{id} has no pid"),
            }
        };
        pids.push(pid as i32);
    }
    let closed = world.json(&["terminal", "close", "--all", "--grace", "500ms"])["closed"].clone();
    assert_eq!(closed.as_array().unwrap().len(), 8);
    assert!(
        closed
            .as_array()
            .unwrap()
            .iter()
            .all(|outcome| outcome["closed"] == true),
        "{closed}"
    );
    for pid in pids {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'));
        assert!(!running, "process {pid} still runs: {state}");
    }
}

/// Two state directories are two setups: same-named sessions in both, each listing and recovering only
/// its own, each with its own tmux server and worktrees.
#[test]
fn separate_state_directories_never_see_each_others_sessions() {
    let world = World::new();
    let setup = |name: &str, args: &[&str]| {
        world
            .command(args)
            .env("MAHAVISHNU_STATE_DIR", world.dir.path().join(name))
            .env_remove("MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME")
            .output()
            .unwrap()
    };
    for name in ["one", "two"] {
        for target in ["tmux", "pty"] {
            let launched = setup(
                name,
                &[
                    "terminal",
                    "launch",
                    "shell",
                    "--target",
                    target,
                    "--name",
                    &format!("twin-{target}"),
                ],
            );
            assert!(
                launched.status.success(),
                "{}",
                String::from_utf8_lossy(&launched.stderr)
            );
        }
    }
    for name in ["one", "two"] {
        let recovered = setup(name, &["terminal", "recover"]);
        assert!(recovered.status.success());
        let listed = setup(name, &["--output", "json", "terminal", "list"]);
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(
            listed["instances"].as_array().unwrap().len(),
            2,
            "{name}: {listed}"
        );
    }
    // Closing one setup's sessions leaves the other's running.
    assert!(
        setup("one", &["terminal", "close", "--all", "--grace", "200ms"])
            .status
            .success()
    );
    let listed = setup("two", &["--output", "json", "terminal", "list"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let states: Vec<&str> = listed["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert!(
        states
            .iter()
            .all(|state| *state == "waiting" || *state == "running"),
        "{states:?}"
    );
    assert!(
        setup("two", &["terminal", "close", "--all", "--grace", "200ms"])
            .status
            .success()
    );
}

/// A shell that is still reading slow startup files has drawn nothing: `wait --waiting` right after the
/// launch must not return before its prompt is on the screen (text sent earlier lands before the prompt).
#[test]
fn wait_waiting_right_after_launch_waits_for_the_prompt() {
    let world = World::new();
    // A busy loop of builtins: no job takes the foreground while the shell is not ready yet.
    let rc = world.dir.path().join("slow-rc");
    std::fs::write(
        &rc,
        "end=$((SECONDS + 2)); while [ $SECONDS -lt $end ]; do :; done; PS1='$ '\n",
    )
    .unwrap();
    let rc = rc.to_str().unwrap();
    for target in ["pty", "tmux"] {
        let args = [
            "shell",
            "--target",
            target,
            "--count",
            "2",
            "--",
            "--rcfile",
            rc,
            "--noprofile",
        ];
        let ids = world.launch(&args);
        world.ok(&["terminal", "wait", &ids[0], "--waiting", "--timeout", "20"]);
        let screen = world.ok(&["terminal", "capture", &ids[0]]);
        assert!(
            screen.starts_with('$'),
            "{target}: waiting means the prompt is drawn:\n{screen:?}"
        );
        world.ok(&["terminal", "wait", "--all", "--waiting", "--timeout", "20"]);
        let screen = world.ok(&["terminal", "capture", &ids[1]]);
        assert!(
            screen.starts_with('$'),
            "{target}: every session of `wait --all` shows its prompt:\n{screen:?}"
        );
        world.ok(&["terminal", "close", &ids[0], &ids[1], "--grace", "0.2"]);
    }
}

/// After one command, the next `send` and `wait --for` wait for the new result instead of returning at
/// once on the old one; `--anywhere` keeps matching what was there before; a timed-out wait shows the
/// end of the screen.
#[test]
fn wait_for_matches_only_what_follows_the_last_send() {
    let world = World::new();
    for target in ["pty", "tmux"] {
        let id = launch_shells(&world, target, 1).remove(0);
        world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "20"]);
        world.ok(&["terminal", "send", &id, "echo RESULT-$((40+2))"]);
        let wait_for_result = |more: &[&'static str]| {
            let mut args = vec!["terminal", "wait", id.as_str(), "--for", "^RESULT-42$"];
            args.extend(more);
            args
        };
        world.ok(&wait_for_result(&[]));

        world.ok(&["terminal", "send", &id, "sleep 1.5; echo RESULT-$((40+2))"]);
        let started = Instant::now();
        world.ok(&wait_for_result(&["--timeout", "20"]));
        assert!(
            started.elapsed() >= Duration::from_millis(1000),
            "{target}: the wait returned after {:?}, on the old result",
            started.elapsed()
        );
        let screen = world.ok(&["terminal", "capture", &id]);
        assert_eq!(
            screen.lines().filter(|line| *line == "RESULT-42").count(),
            2,
            "{target}: the new result is there:\n{screen}"
        );
        // Old text still matches where asked for.
        world.ok(&["terminal", "send", &id, "true"]);
        world.ok(&wait_for_result(&["--anywhere"]));
        let error = world.fails(&wait_for_result(&["--timeout", "0.5"]), 1);
        assert!(
            error.contains("timed out")
                && error.contains("screen ends with:\n")
                && error.contains("\nRESULT-42\n$ true\n$\n"),
            "{target}: the timeout shows the end of the screen: {error}"
        );
    }
    let help = world.ok(&["terminal", "wait", "--help"]);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("--anywhere") && help.contains("new since the last `send`"),
        "{help}"
    );
}

/// Closed records stay on `list --all` for `terminal.keep_closed`, then go; `gc` removes them on
/// demand, and never a live one.
#[test]
fn closed_records_are_removed_after_keep_closed_and_by_gc() {
    let world = World::new();
    let ids = launch_shells(&world, "pty", 3);
    world.ok(&["terminal", "close", &ids[0], &ids[1], "--grace", "200ms"]);
    let all = world.json(&["terminal", "list", "--all"])["instances"].clone();
    assert_eq!(all.as_array().unwrap().len(), 3, "kept for a week: {all}");
    let kept = world.json(&["gc"]);
    assert_eq!(kept["removed"], 0, "nothing is a week old yet: {kept}");
    let removed = world.json(&["gc", "--older-than", "0s"]);
    assert_eq!(removed["removed"], 2, "{removed}");
    let all = world.json(&["terminal", "list", "--all"])["instances"].clone();
    assert_eq!(support::sorted_ids(&all), vec![ids[2].clone()]);
    let stderr = world.fails(&["terminal", "show", &ids[0]], 1);
    assert!(stderr.contains("no instance"), "{stderr}");
    let bad = world.fails(&["gc", "--older-than", "soon"], 2);
    assert!(bad.contains("not a duration"), "{bad}");

    // With keep_closed = "0s", closing removes the record on the way.
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        "[terminal]\nkeep_closed = \"0s\"\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    world.ok(&["terminal", "close", &ids[2], "--grace", "200ms"]);
    let all = world.json(&["terminal", "list", "--all"])["instances"].clone();
    assert_eq!(all, serde_json::json!([]), "{all}");
}

/// Ctrl-C on `terminal exec` ends the side command and what it started, although they run in a
/// process group of their own (out of reach of the terminal's interrupt).
#[test]
fn an_interrupted_exec_ends_its_command_and_the_commands_children() {
    let world = World::new();
    let id = launch_shells(&world, "pty", 1).remove(0);
    let pids = world.dir.path().join("pids");
    let script = format!(
        "sleep 60 & echo $! > {pids}.part; echo $$ >> {pids}.part; mv {pids}.part {pids}; wait",
        pids = pids.display()
    );
    let mut exec = world
        .command(&["terminal", "exec", &id, "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    assert!(
        support::eventually_exists(&pids, Duration::from_secs(10)),
        "the command started"
    );
    let started: Vec<String> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(started.len(), 2, "{started:?}");
    let interrupted = Command::new("kill")
        .args(["-INT", &exec.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = exec.wait().unwrap();
    assert_eq!(status.code(), Some(130), "an interrupted command exits 130");
    let gone = |pid: &str| {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.contains(") Z "))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !started.iter().all(|pid| gone(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started.iter().all(|pid| gone(pid)),
        "the command and its child were ended: {started:?}"
    );
    world.ok(&["terminal", "close", &id, "--grace", "200ms"]);
}
