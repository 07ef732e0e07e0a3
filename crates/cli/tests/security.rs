//! Attacks on Mahavishnu by another local user, an untrusted repository and hostile input, each run
//! against the real binary: every test performs the attack and checks that it fails and harms nothing.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use support::{World, git};

/// Another user's uid (the tests run as root, who can make files for any uid).
const OTHER_UID: u32 = 65534;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn give_to_other_user(path: &Path) {
    std::os::unix::fs::lchown(path, Some(OTHER_UID), Some(OTHER_UID))
        .expect("the tests run as root, so that they can act as another user");
}

#[test]
fn a_runtime_directory_made_by_another_user_or_as_a_link_is_refused() {
    let world = World::new();
    let planted = world.dir.path().join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();
    give_to_other_user(&planted);
    let refused = |runtime: &Path| {
        let output = world
            .command(&["terminal", "launch", "shell", "--target", "pty"])
            .env("MAHAVISHNU_RUNTIME_DIR", runtime)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let error = refused(&planted);
    assert!(
        error.contains("owned by uid 65534") && error.contains("MAHAVISHNU_RUNTIME_DIR"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_dir(&planted).unwrap().count(),
        0,
        "nothing written there"
    );

    // The default place, /tmp/mahavishnu-<uid>, planted as a link to the other user's directory.
    let tmp = world.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let default = tmp.join(format!("mahavishnu-{}", nix::unistd::getuid()));
    std::os::unix::fs::symlink(&planted, &default).unwrap();
    let output = world
        .command(&["terminal", "launch", "shell", "--target", "pty"])
        .env_remove("MAHAVISHNU_RUNTIME_DIR")
        .env_remove("XDG_RUNTIME_DIR")
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{error}");
    assert!(error.contains("symbolic link"), "{error}");
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0);

    // A directory of one's own that is open to others is closed, not refused.
    let own = world.dir.path().join("own");
    std::fs::create_dir(&own).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o777)).unwrap();
    let id = world
        .command(&["terminal", "launch", "shell", "--target", "pty"])
        .env("MAHAVISHNU_RUNTIME_DIR", &own)
        .output()
        .unwrap();
    assert!(
        id.status.success(),
        "{}",
        String::from_utf8_lossy(&id.stderr)
    );
    assert_eq!(mode(&own), 0o700);
    for entry in std::fs::read_dir(&own).unwrap().flatten() {
        assert_eq!(mode(&entry.path()), 0o700, "{}", entry.path().display());
        assert_eq!(mode(&entry.path().join("pty")), 0o700);
    }
    let id = String::from_utf8(id.stdout).unwrap();
    world
        .command(&["terminal", "close", id.trim(), "--grace", "0.2"])
        .env("MAHAVISHNU_RUNTIME_DIR", &own)
        .output()
        .unwrap();

    // A directory whose parent another user can rename entries of.
    let open_parent = world.dir.path().join("open");
    std::fs::create_dir(&open_parent).unwrap();
    std::fs::set_permissions(&open_parent, std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = refused(&open_parent.join("run"));
    assert!(error.contains("writable by every user"), "{error}");
}

#[test]
fn the_state_directory_and_database_are_private_and_planted_ones_are_refused() {
    let world = World::new();
    let state = world.state_dir();
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    world.ok(&["terminal", "list"]);
    assert_eq!(mode(&state), 0o700);
    let database = state.join("mahavishnu.db");
    assert_eq!(mode(&database), 0o600);
    // A database made readable by an older version gets its mode fixed; nothing in it is lost.
    let id = world.launch(&["shell", "--target", "pty"]).remove(0);
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
    let listed = world.json(&["terminal", "list"])["instances"].clone();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(mode(&database), 0o600);
    for suffix in ["-wal", "-shm"] {
        let file = state.join(format!("mahavishnu.db{suffix}"));
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{suffix}");
        }
    }
    world.ok(&["terminal", "close", &id, "--grace", "0.2"]);

    let planted = world.dir.path().join("planted-state");
    std::fs::create_dir(&planted).unwrap();
    give_to_other_user(&planted);
    let output = world
        .command(&["terminal", "list"])
        .env("MAHAVISHNU_STATE_DIR", &planted)
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{error}");
    assert!(error.contains("owned by uid 65534"), "{error}");
    assert!(!planted.join("mahavishnu.db").exists());

    // A database planted as a link to another file is not opened through the link.
    let linked = world.dir.path().join("linked-state");
    std::fs::create_dir(&linked).unwrap();
    let victim = world.dir.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    std::os::unix::fs::symlink(&victim, linked.join("mahavishnu.db")).unwrap();
    let output = world
        .command(&["terminal", "list"])
        .env("MAHAVISHNU_STATE_DIR", &linked)
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{error}");
    assert!(error.contains("symbolic link"), "{error}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
}

/// A repository whose `.mahavishnu.toml` tries to run its own programs without being trusted.
fn hostile_repository(world: &World, config: &str) -> std::path::PathBuf {
    let project = world.work();
    git(&project, &["init", "-q"]);
    let marker = world.dir.path().join("pwned");
    let evil = project.join("evil.sh");
    std::fs::write(
        &evil,
        format!(
            "#!/bin/sh\ntouch {}\nexec /bin/sh \"$@\"\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(project.join(".mahavishnu.toml"), config).unwrap();
    marker
}

#[test]
fn a_project_file_cannot_choose_the_programs_mahavishnu_runs_or_who_connects() {
    let world = World::new();
    let marker = hostile_repository(&world, "[targets.tmux]\nprogram = \"./evil.sh\"\n");
    for args in [
        &["targets"][..],
        &["terminal", "list"],
        &["terminal", "launch", "shell"],
    ] {
        let error = world.fails(args, 1);
        assert!(
            error.contains("targets.tmux.program") && error.contains("user config"),
            "{args:?}: {error}"
        );
    }
    assert!(!marker.exists(), "the repository's program ran");

    let kubeconfig = world.work().join("kc");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts: [{{name: c, context: {{cluster: k, user: u}}}}]\n\
             clusters: [{{name: k, cluster: {{server: 'https://127.0.0.1:1'}}}}]\n\
             users: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: {}}}}}}}]\n",
            world.work().join("evil.sh").display()
        ),
    )
    .unwrap();
    std::fs::write(
        world.work().join(".mahavishnu.toml"),
        "[targets.kubernetes]\nkubeconfig = \"./kc\"\n",
    )
    .unwrap();
    let error = world.fails(&["targets"], 1);
    assert!(error.contains("targets.kubernetes.kubeconfig"), "{error}");
    assert!(!marker.exists(), "the repository's credential plugin ran");

    std::fs::write(
        world.work().join(".mahavishnu.toml"),
        "[serve]\nallowed_hosts = [\"*\"]\n",
    )
    .unwrap();
    let error = world.fails(&["serve", "--listen", "127.0.0.1:0"], 1);
    assert!(
        error.contains("`serve`") && error.contains("user config"),
        "{error}"
    );
}

#[test]
fn an_untrusted_project_profile_is_not_used_until_trusted() {
    let world = World::new();
    let marker = hostile_repository(
        &world,
        "[profiles.shell]\nprogram = \"./evil.sh\"\nshell = true\n\n[profiles.mine]\nprogram = \"./evil.sh\"\n",
    );
    let output = world
        .command(&["terminal", "launch", "shell", "--target", "pty"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("not trusted"), "{stderr}");
    let id = String::from_utf8(output.stdout).unwrap().trim().to_string();
    world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "10"]);
    assert!(!marker.exists(), "the untrusted profile's program ran");
    world.ok(&["terminal", "close", &id, "--grace", "0.2"]);
    let error = world.fails(&["terminal", "launch", "mine", "--target", "pty"], 2);
    assert!(
        error.contains("not trusted") && error.contains("mahavishnu trust"),
        "{error}"
    );

    let shown = world.ok(&["trust", "--show"]);
    assert!(
        shown.contains("never trusted") && shown.contains("./evil.sh"),
        "{shown}"
    );
    assert!(shown.contains("profiles.shell"), "{shown}");
    world.ok(&["trust"]);
    let id = world.launch(&["mine", "--target", "pty"]).remove(0);
    assert!(
        support::eventually_exists(&marker, Duration::from_secs(10)),
        "a trusted profile runs"
    );
    world.ok(&["terminal", "close", &id, "--grace", "0.2"]);
}

#[test]
fn any_edit_asks_for_trust_again_and_shows_what_changed() {
    let world = World::new();
    let project = world.work();
    git(&project, &["init", "-q"]);
    let file = project.join(".mahavishnu.toml");
    let trusted = "[[hooks.SessionStart]]\nname = \"greet\"\ncommand = \"echo hello\"\n";
    std::fs::write(&file, trusted).unwrap();
    world.ok(&["trust"]);
    assert_eq!(world.json(&["hooks", "list"])["trusted"], true);

    // A different command with a padded description: a short hash could be made to collide; the
    // whole file's SHA-256 cannot.
    std::fs::write(
        &file,
        "[[hooks.SessionStart]]\nname = \"greet\"\ncommand = \"touch pwned\"\n",
    )
    .unwrap();
    let listed = world.json(&["hooks", "list"]);
    assert_eq!(listed["trusted"], false);
    let message = listed["untrusted_message"].as_str().unwrap();
    assert!(
        message.contains("- command = \"echo hello\"")
            && message.contains("+ command = \"touch pwned\""),
        "{message}"
    );

    // Even a comment counts.
    std::fs::write(&file, format!("{trusted}# a comment\n")).unwrap();
    assert_eq!(world.json(&["hooks", "list"])["trusted"], false);
    let shown = world.ok(&["trust", "--show"]);
    assert!(shown.contains("+ # a comment"), "{shown}");
    assert!(shown.contains("sha256 "), "{shown}");
    assert_eq!(
        world.json(&["hooks", "list"])["trusted"],
        false,
        "--show trusts nothing"
    );
    world.ok(&["trust"]);
    assert_eq!(world.json(&["hooks", "list"])["trusted"], true);
}

/// Runs `mahavishnu hook` with a UserPromptSubmit payload; returns (exit code, stderr).
fn submit_prompt(world: &World, prompt: &str) -> (i32, String) {
    use std::io::Write;
    let payload = serde_json::json!({
        "session_id": "s", "cwd": world.work(), "hook_event_name": "UserPromptSubmit", "prompt": prompt,
    });
    let mut child = world
        .command(&["hook"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_prompt_is_never_run_as_code_whatever_quotes_surround_its_placeholder() {
    let world = World::new();
    let project = world.work();
    git(&project, &["init", "-q"]);
    std::fs::write(
        project.join(".mahavishnu.toml"),
        "[[hooks.UserPromptSubmit]]\ncommand = \"echo \\\"{prompt}\\\" >> double.log; echo '{prompt}' >> single.log\"\nrequired = true\n\
         [[hooks.UserPromptSubmit]]\ncommand = \"true\"\nrequired = true\n",
    )
    .unwrap();
    world.ok(&["trust"]);
    let prompt = "$(touch pwned1) `touch pwned2` \"; touch pwned3; \" '; touch pwned4; '";
    let (code, stderr) = submit_prompt(&world, prompt);
    assert_eq!(code, 0, "{stderr}");
    for n in 1..=4 {
        assert!(
            !project.join(format!("pwned{n}")).exists(),
            "pwned{n}: {stderr}"
        );
    }
    for log in ["double.log", "single.log"] {
        assert_eq!(
            std::fs::read_to_string(project.join(log)).unwrap(),
            format!("{prompt}\n"),
            "{log}"
        );
    }

    // A prompt over 128 KiB and one with a NUL byte do not fail the required hooks (which would
    // block the user's prompt).
    let huge = "y".repeat(200 * 1024);
    let (code, stderr) = submit_prompt(&world, &huge);
    assert_eq!(code, 0, "{stderr}");
    let logged = std::fs::read_to_string(project.join("double.log")).unwrap();
    assert!(logged.ends_with(&format!("{huge}\n")));
    let (code, stderr) = submit_prompt(&world, "a\u{0}b");
    assert_eq!(code, 0, "{stderr}");
}

/// Every process's command line, as other users read it from /proc.
fn all_command_lines() -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) {
            all.push_str(&String::from_utf8_lossy(&bytes).replace('\0', " "));
            all.push('\n');
        }
    }
    all
}

#[test]
fn environment_values_stay_off_command_lines_and_tmux_options() {
    let world = World::new();
    let secret = format!("sekrit-{:x}", std::process::id() * 7919);
    let id = world
        .launch(&[
            "shell",
            "--target",
            "tmux",
            "-e",
            &format!("API_KEY={secret}"),
        ])
        .remove(0);
    world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "10"]);
    assert!(
        !all_command_lines().contains(&secret),
        "the value is on a command line"
    );
    let name = id.trim_start_matches("tmux:");
    let tmux = |args: &[&str]| {
        let output = std::process::Command::new("tmux")
            .args(["-L", &world.tmux_socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let target = format!("={name}:");
    for shown in [
        tmux(&["show-options", "-t", &target]),
        tmux(&["show-environment", "-t", &target]),
        tmux(&["show-environment", "-g"]),
    ] {
        assert!(!shown.contains(&secret), "tmux shows the value: {shown}");
    }
    // The program and side commands still get it.
    assert_eq!(world.sh(&id, "printf %s \"$API_KEY\""), secret);
    world.ok(&["terminal", "send", &id, "echo \"got:$API_KEY\""]);
    world.ok(&[
        "terminal",
        "wait",
        &id,
        "--for",
        &format!("got:{secret}"),
        "--timeout",
        "10",
    ]);
    let files: Vec<_> =
        std::fs::read_dir(world.sessions_dir().join("tmux").join(&world.tmux_socket))
            .unwrap()
            .flatten()
            .collect();
    for file in &files {
        assert_eq!(mode(&file.path()) & 0o077, 0, "{}", file.path().display());
    }
    world.ok(&["terminal", "close", &id, "--grace", "0.2"]);
    let left = std::fs::read_dir(world.sessions_dir().join("tmux").join(&world.tmux_socket))
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().contains(".env"))
        .count();
    assert_eq!(left, 0, "the environment files go with the session");

    let error = world.fails(&["terminal", "launch", "shell", "-e", "A;touch x=1"], 2);
    assert!(
        error.contains("not an environment variable name"),
        "{error}"
    );
}

#[test]
fn names_too_long_for_a_socket_are_refused_and_failed_records_can_be_closed() {
    let world = World::new();
    let deep = world.dir.path().join("r".repeat(60));
    let name = "n".repeat(60);
    let output = world
        .command(&[
            "terminal", "launch", "shell", "--target", "pty", "--name", &name, "--count", "2",
        ])
        .env("MAHAVISHNU_RUNTIME_DIR", &deep)
        .output()
        .unwrap();
    let error = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{error}");
    assert!(error.contains("shorter --name"), "{error}");
    assert_eq!(
        world.json(&["terminal", "list", "--all"])["instances"].clone(),
        serde_json::json!([])
    );

    // A launch that fails on its target leaves a failed record, which `close` removes.
    let broken = world.dir.path().join("broken-tmux");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'tmux: no such thing' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!("[targets.tmux]\nprogram = \"{}\"\n", broken.display()),
    )
    .unwrap();
    let output = world
        .command(&[
            "terminal", "launch", "shell", "--target", "tmux", "--name", "doomed",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        world.json(&["terminal", "show", "tmux:doomed"])["state"],
        "failed"
    );
    world.ok(&["terminal", "close", "tmux:doomed"]);
    assert_eq!(
        world.json(&["terminal", "show", "tmux:doomed"])["state"],
        "closed"
    );
}
