//! Sessions in their own git worktrees, on real git repositories: parallel sessions never touch each
//! other or the main work tree; files are copied and the setup runs first; ports differ; diff, list
//! and prune see the work; bad input is refused before anything is made.

mod support;

use std::path::{Path, PathBuf};

use support::{World, git};

/// A world whose work directory is a repository with one commit, a gitignored `.env`, and a
/// `[worktree]` configuration that copies `.env` and runs a setup that leaves a mark.
fn repo_world() -> World {
    let world = World::new();
    let work = world.work();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("shared.txt"), "from the main work tree\n").unwrap();
    std::fs::write(work.join(".gitignore"), ".env\n").unwrap();
    std::fs::write(work.join(".env"), "SECRET=42\n").unwrap();
    git(&work, &["add", "shared.txt", ".gitignore"]);
    support::git_commit(&work, &["-m", "base"]);
    configure_worktrees(
        &world,
        "copy = [\".env\"]\nsetup = \"echo prepared for {session_id} > setup-mark\"\n",
    );
    world
}

/// Writes the user's `[worktree]` section: worktrees under the world's directory, plus `rest`.
fn configure_worktrees(world: &World, rest: &str) {
    let dir = world.dir.path().join("worktrees");
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!("[worktree]\ndir = {:?}\n{rest}", dir.display().to_string()),
    )
    .unwrap();
}

fn cwd_of(world: &World, id: &str) -> PathBuf {
    PathBuf::from(
        world.json(&["terminal", "show", id])["cwd"]
            .as_str()
            .unwrap(),
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn parallel_sessions_work_in_their_own_worktrees() {
    let world = repo_world();
    let work = world.work();
    // A dirty main work tree: the worktrees start from HEAD and never see this.
    std::fs::write(work.join("shared.txt"), "edited by hand, not committed\n").unwrap();
    // The repository's post-checkout hook runs in each new worktree, as with `git worktree add`.
    let hook = work.join(".git/hooks/post-checkout");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho \"$PWD $3\" >> \"$(git rev-parse --git-common-dir)/checkouts.log\"\n",
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&hook).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&hook, permissions).unwrap();
    let ids = world.launch(&[
        "shell",
        "--target",
        "pty",
        "--worktree",
        "--count",
        "5",
        "--name",
        "agent",
        "--",
        "-c",
        "cat setup-mark .env; echo port=$PORT; echo \"$1\" > shared.txt; exec cat",
        "sh",
    ]);
    assert_eq!(ids.len(), 5);
    let mut ports = Vec::new();
    for id in &ids {
        let name = id.trim_start_matches("pty:");
        world.ok(&["terminal", "wait", id, "--for", "^port=", "--timeout", "20"]);
        let screen = world.ok(&["terminal", "capture", id]);
        assert!(
            screen.contains(&format!("prepared for {name}")) && screen.contains("SECRET=42"),
            "the setup ran and .env was copied before the program started:\n{screen}"
        );
        let port = screen
            .lines()
            .find_map(|line| line.strip_prefix("port="))
            .unwrap()
            .to_string();
        ports.push(port);
        let dir = cwd_of(&world, id);
        assert!(
            !dir.starts_with(&work),
            "worktrees live outside the work tree: {}",
            dir.display()
        );
        assert_eq!(
            git(&dir, &["branch", "--show-current"]).trim(),
            format!("mahavishnu/{name}")
        );
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 5, "every session has its own ports: {ports:?}");
    let checkouts = read(&work.join(".git/checkouts.log"));
    for id in &ids {
        let line = format!("{} 1", cwd_of(&world, id).display());
        assert!(
            checkouts.lines().any(|l| l == line),
            "{line} in {checkouts}"
        );
    }

    // Each writes the same file in its own worktree.
    for (n, id) in ids.iter().enumerate() {
        world.sh(id, &format!("echo agent {n} > shared.txt"));
    }
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(
            read(&cwd_of(&world, id).join("shared.txt")),
            format!("agent {n}\n")
        );
        let diff = world.json(&["terminal", "diff", id]);
        assert!(
            diff["diff"]
                .as_str()
                .unwrap()
                .contains(&format!("+agent {n}")),
            "{diff}"
        );
    }
    assert_eq!(
        read(&work.join("shared.txt")),
        "edited by hand, not committed\n",
        "the main work tree is untouched"
    );

    let stat = world.ok(&["terminal", "diff", &ids[0], "--stat"]);
    assert!(stat.contains("shared.txt"), "{stat}");
    let table = world.ok(&["terminal", "list"]);
    assert!(
        table.contains("BRANCH") && table.contains("mahavishnu/agent-1 +2 ↑0 ↓0"),
        "{table}"
    );

    // Pruning refuses to throw work away unless forced.
    let refused = world.fails(&["terminal", "close", &ids[0], "--prune"], 1);
    assert!(
        refused.contains("not merged") && refused.contains("--force"),
        "{refused}"
    );
    let state = world.state_of(&ids[0]);
    assert!(
        matches!(state.as_str(), "running" | "waiting"),
        "nothing was closed: {state}"
    );
    let dirs: Vec<PathBuf> = ids.iter().map(|id| cwd_of(&world, id)).collect();
    world.ok(&[
        "terminal", "close", "--all", "--prune", "--force", "--grace", "0.2",
    ]);
    for dir in dirs {
        assert!(!dir.exists(), "{} is removed", dir.display());
    }
    let branches = git(&work, &["branch", "--list", "mahavishnu/*"]);
    assert!(
        branches.trim().is_empty(),
        "the branches are gone: {branches}"
    );
    // Removed on purpose, not missing.
    let listed = world.ok(&["terminal", "list", "--all"]);
    assert!(
        listed.contains("(removed)") && !listed.contains("missing"),
        "{listed}"
    );
}

#[test]
fn diff_sees_every_change_even_within_a_second_and_never_touches_the_worktrees_index() {
    let world = repo_world();
    let work = world.work();
    for name in ["one.txt", "two.txt", "gone.txt"] {
        std::fs::write(work.join(name), "0000\n").unwrap();
    }
    std::fs::write(work.join(".gitignore"), ".env\n*.log\n").unwrap();
    git(&work, &["add", "."]);
    support::git_commit(&work, &["-m", "more files"]);
    let id =
        world.launch(&["shell", "--target", "pty", "--worktree", "--name", "differ"])[0].clone();
    // Found with git, so that no status of Mahavishnu's has looked at the worktree yet.
    let dir = PathBuf::from(
        git(&work, &["worktree", "list", "--porcelain"])
            .lines()
            .filter_map(|line| line.strip_prefix("worktree "))
            .find(|path| path.ends_with("/differ"))
            .unwrap(),
    );
    // Same size, and very likely in the same second as the checkout wrote the index: only the file's
    // content tells. The first diff comes a second later, when the change no longer looks recent.
    std::fs::write(dir.join("one.txt"), "1111\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::remove_file(dir.join("gone.txt")).unwrap();
    std::fs::create_dir_all(dir.join("new dir")).unwrap();
    std::fs::write(dir.join("new dir/$(touch pwned).txt"), "nested\n").unwrap();
    std::fs::write(dir.join(":(glob)*"), "odd name\n").unwrap();
    std::fs::write(dir.join("debug.log"), "ignored\n").unwrap();
    let index = PathBuf::from(git(&dir, &["rev-parse", "--git-path", "index"]).trim());
    let index = if index.is_absolute() {
        index
    } else {
        dir.join(index)
    };
    let before = (
        std::fs::read(&index).unwrap(),
        std::fs::metadata(&index).unwrap().modified().unwrap(),
    );

    let names = |world: &World| {
        let diff = world.json(&["terminal", "diff", &id]);
        let text = diff["diff"].as_str().unwrap().to_string();
        let mut names: Vec<String> = text
            .lines()
            .filter_map(|line| line.strip_prefix("diff --git a/"))
            .map(|rest| rest.split(" b/").next().unwrap().to_string())
            .collect();
        names.sort();
        (names, text)
    };
    // The setup's mark is a new file of the worktree too.
    let expected = [
        ":(glob)*",
        "gone.txt",
        "new dir/$(touch pwned).txt",
        "one.txt",
        "setup-mark",
    ];
    let (first, text) = names(&world);
    assert_eq!(first, expected, "{text}");
    assert!(text.contains("-0000") && text.contains("+1111"), "{text}");
    // Again through the settled cache, with one more same-size edit right after the last diff.
    std::fs::write(dir.join("two.txt"), "2222\n").unwrap();
    let (second, text) = names(&world);
    let mut with_two = expected.to_vec();
    with_two.push("two.txt");
    with_two.sort();
    assert_eq!(second, with_two, "{text}");
    assert!(
        !dir.join("pwned").exists() && !work.join("pwned").exists(),
        "names never reach a shell"
    );
    let stat = world.ok(&["terminal", "diff", &id, "--stat"]);
    assert!(stat.contains("6 files changed"), "{stat}");

    let after = (
        std::fs::read(&index).unwrap(),
        std::fs::metadata(&index).unwrap().modified().unwrap(),
    );
    assert!(before == after, "the worktree's own index is never written");
    assert!(!index.with_extension("lock").exists());
    let status = git(&dir, &["status", "--porcelain"]);
    assert!(
        status.contains("?? \"new dir/\"") || status.contains("?? new dir/"),
        "untracked files stay untracked: {status}"
    );
    world.ok(&[
        "terminal", "close", &id, "--prune", "--force", "--grace", "0.2",
    ]);
}

#[test]
fn bad_worktree_launches_are_refused_and_a_failing_setup_starts_nothing() {
    let world = repo_world();
    let launch = |extra: &[&str]| {
        let mut args = vec![
            "terminal",
            "launch",
            "shell",
            "--target",
            "pty",
            "--worktree",
        ];
        args.extend(extra);
        world.fails(&args, 2)
    };
    let branch_taken = {
        git(&world.work(), &["branch", "mahavishnu/taken"]);
        launch(&["--name", "taken"])
    };
    assert!(
        branch_taken.contains("branch `mahavishnu/taken` already exists"),
        "{branch_taken}"
    );
    let shell_syntax = launch(&["--name", "a;touch pwned"]);
    assert!(shell_syntax.contains("is not usable"), "{shell_syntax}");
    assert!(!world.work().join("pwned").exists());
    let bad_ref = launch(&["--from", "no-such-branch"]);
    assert!(
        bad_ref.contains("--from `no-such-branch` names no commit"),
        "{bad_ref}"
    );

    let plain = world.dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let not_git = launch(&["--cwd", plain.to_str().unwrap()]);
    assert!(not_git.contains("not inside a git repository"), "{not_git}");
    git(&plain, &["init", "-q"]);
    let no_commits = launch(&["--cwd", plain.to_str().unwrap()]);
    assert!(no_commits.contains("has no commits yet"), "{no_commits}");

    // A project's own setup runs only once the project is trusted.
    std::fs::write(
        world.work().join(".mahavishnu.toml"),
        "[worktree]\nsetup = \"touch project-setup-ran\"\n",
    )
    .unwrap();
    let untrusted = launch(&["--name", "trusting"]);
    assert!(
        untrusted.contains("not trusted") && untrusted.contains("mahavishnu trust"),
        "{untrusted}"
    );
    world.ok(&["trust"]);
    let id = world
        .launch(&[
            "shell",
            "--target",
            "pty",
            "--worktree",
            "--name",
            "trusting",
        ])
        .remove(0);
    assert!(cwd_of(&world, &id).join("project-setup-ran").exists());
    world.ok(&[
        "terminal", "close", &id, "--prune", "--force", "--grace", "0.2",
    ]);
    std::fs::remove_file(world.work().join(".mahavishnu.toml")).unwrap();

    // A setup that fails: the session is not started and the worktree is kept for inspection.
    configure_worktrees(&world, "setup = \"echo installing; exit 7\"\n");
    let failed = world.fails(
        &[
            "terminal",
            "launch",
            "shell",
            "--target",
            "pty",
            "--worktree",
            "--name",
            "broken",
        ],
        1,
    );
    assert!(
        failed.contains("worktree.setup failed")
            && failed.contains("kept for inspection")
            && failed.contains("installing"),
        "{failed}"
    );
    let listed = world.json(&["terminal", "list", "--all"])["instances"].clone();
    assert!(
        !listed.to_string().contains("broken"),
        "nothing was started: {listed}"
    );
    let kept = std::fs::read_dir(world.dir.path().join("worktrees"))
        .unwrap()
        .count();
    assert_eq!(kept, 1, "the worktree is kept");
}

#[test]
fn a_worktree_deleted_by_hand_is_reported_then_repaired_or_pruned_never_recreated_over_files() {
    let world = repo_world();
    let work = world.work();
    let ids = world.launch(&[
        "shell",
        "--target",
        "pty",
        "--worktree",
        "--count",
        "2",
        "--name",
        "lost",
    ]);
    let (repaired, pruned) = (&ids[0], &ids[1]);
    let dir = cwd_of(&world, repaired);
    world.sh(repaired, "echo committed > kept.txt");
    git(&dir, &["add", "kept.txt"]);
    support::git_commit(&dir, &["-m", "work of the session"]);
    std::fs::write(dir.join("uncommitted.txt"), "lost with the directory\n").unwrap();
    let nothing = world.fails(&["terminal", "repair", repaired], 2);
    assert!(nothing.contains("nothing to repair"), "{nothing}");
    for id in &ids {
        std::fs::remove_dir_all(cwd_of(&world, id)).unwrap();
    }

    // Reported: by list, and by diff with both ways out.
    let table = world.ok(&["terminal", "list"]);
    assert!(
        table.contains("mahavishnu/lost-1 (worktree missing)"),
        "{table}"
    );
    let diff = world.fails(&["terminal", "diff", repaired], 2);
    assert!(
        diff.contains("is gone") && diff.contains("terminal repair") && diff.contains("--prune"),
        "{diff}"
    );

    // Never made again over what someone put there since.
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine\n").unwrap();
    let taken = world.fails(&["terminal", "repair", repaired], 2);
    assert!(
        taken.contains("exists") && taken.contains("move it away"),
        "{taken}"
    );
    assert_eq!(read(&dir.join("notes.txt")), "mine\n");
    std::fs::remove_dir_all(&dir).unwrap();

    // Repaired: the worktree again, from the branch, and the session started there.
    let again = world.json(&["terminal", "repair", repaired])["instances"].clone();
    assert_eq!(again[0]["id"], repaired.as_str(), "{again}");
    assert!(matches!(
        world.state_of(repaired).as_str(),
        "running" | "waiting"
    ));
    assert_eq!(
        read(&dir.join("kept.txt")),
        "committed\n",
        "the branch's work is back"
    );
    assert!(!dir.join("uncommitted.txt").exists());
    assert!(dir.join("setup-mark").exists() && dir.join(".env").exists());
    let pwd = world.ok(&["terminal", "exec", repaired, "--", "pwd"]);
    assert_eq!(Path::new(pwd.trim()), dir.canonicalize().unwrap());

    // Pruned: the record and the branch are gone.
    world.ok(&[
        "terminal", "close", pruned, "--prune", "--force", "--grace", "0.2",
    ]);
    assert!(
        git(&work, &["branch", "--list", "mahavishnu/lost-2"])
            .trim()
            .is_empty()
    );
    let branch_gone = {
        world.ok(&["terminal", "close", repaired, "--grace", "0.2"]);
        std::fs::remove_dir_all(&dir).unwrap();
        git(&work, &["worktree", "prune"]);
        git(&work, &["branch", "-D", "mahavishnu/lost-1"]);
        world.fails(&["terminal", "repair", repaired], 2)
    };
    assert!(
        branch_gone.contains("no longer exists") && branch_gone.contains("--prune"),
        "{branch_gone}"
    );
}

#[test]
fn pause_and_resume_keep_the_work_and_merge_reports_conflicts_changing_nothing() {
    let world = repo_world();
    let work = world.work();
    let id = world
        .launch(&[
            "shell",
            "--target",
            "tmux",
            "--worktree",
            "--name",
            "keeper",
        ])
        .remove(0);
    let dir = cwd_of(&world, &id);
    world.sh(&id, "echo agent > shared.txt; echo new > added.txt");

    let paused = world.json(&["terminal", "pause", &id]);
    assert_eq!(paused["committed_work_in_progress"], true, "{paused}");
    assert_eq!(world.state_of(&id), "paused");
    assert!(!dir.exists(), "the worktree is removed while paused");
    assert!(
        world
            .ok(&["terminal", "list"])
            .contains("mahavishnu/keeper (paused)")
    );
    let again = world.fails(&["terminal", "pause", &id], 2);
    assert!(again.contains("already paused"), "{again}");
    // While paused, the diff is what its branch holds.
    let diff = world.ok(&["terminal", "diff", &id, "--stat"]);
    assert!(
        diff.contains("shared.txt") && diff.contains("added.txt"),
        "{diff}"
    );

    world.ok(&["terminal", "resume", &id]);
    assert!(matches!(
        world.state_of(&id).as_str(),
        "running" | "waiting"
    ));
    assert_eq!(
        read(&dir.join("shared.txt")),
        "agent\n",
        "resume keeps every change"
    );
    assert_eq!(read(&dir.join("added.txt")), "new\n");
    assert!(dir.join("setup-mark").exists(), "the setup ran again");

    // The main branch moves on and touches the same file: merging conflicts and changes nothing.
    std::fs::write(work.join("shared.txt"), "main moved on\n").unwrap();
    support::git_commit(&work, &["-am", "main"]);
    let head = git(&work, &["rev-parse", "HEAD"]);
    let conflict = world.fails(&["terminal", "merge", &id], 1);
    assert!(
        conflict.contains("conflicts in: shared.txt") && conflict.contains("nothing was changed"),
        "{conflict}"
    );
    assert_eq!(
        git(&work, &["rev-parse", "HEAD"]),
        head,
        "the target branch did not move"
    );
    assert!(
        git(&work, &["status", "--porcelain", "--untracked-files=no"])
            .trim()
            .is_empty()
    );
    assert_eq!(read(&work.join("shared.txt")), "main moved on\n");

    // Resolved in the session's worktree, it merges (squashed) into the checked-out branch.
    world.sh(
        &id,
        "git checkout -q --theirs . 2>/dev/null; echo resolved > shared.txt",
    );
    git(
        &dir,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "merge",
            "-q",
            "-s",
            "ours",
            "-m",
            "take main",
            "master",
        ],
    );
    let merged = world.json(&["terminal", "merge", &id, "--squash"]);
    assert_eq!(merged["squash"], true, "{merged}");
    assert_eq!(
        read(&work.join("shared.txt")),
        "resolved\n",
        "the main work tree follows its branch"
    );
    assert_eq!(read(&work.join("added.txt")), "new\n");
    world.ok(&["terminal", "close", &id, "--prune", "--grace", "0.2"]);
}

#[test]
fn launches_in_several_processes_at_once_get_distinct_port_ranges() {
    let world = repo_world();
    // A setup that takes a moment keeps every launch between choosing its ports and recording its
    // session for a while, which is when another process would have chosen the same ones.
    configure_worktrees(&world, "setup = \"sleep 1\"\n");
    let launches: Vec<_> = (0..4)
        .map(|n| {
            let name = format!("racer{n}");
            world.spawn_piped(&[
                "terminal",
                "launch",
                "shell",
                "--target",
                "pty",
                "--worktree",
                "--name",
                &name,
                "--",
                "-c",
                "echo base=$MAHAVISHNU_PORT_BASE; exec cat",
            ])
        })
        .collect();
    let mut ids = Vec::new();
    for launch in launches {
        let output = support::succeeded(
            "terminal launch --worktree",
            launch.wait_with_output().unwrap(),
        );
        ids.push(String::from_utf8(output.stdout).unwrap().trim().to_string());
    }
    let mut bases = Vec::new();
    for id in &ids {
        world.ok(&["terminal", "wait", id, "--for", "^base=", "--timeout", "20"]);
        let screen = world.ok(&["terminal", "capture", id]);
        let base = screen
            .lines()
            .find_map(|line| line.strip_prefix("base="))
            .unwrap_or_else(|| panic!("{id} printed its port base:\n{screen}"))
            .to_string();
        bases.push(base);
    }
    let mut distinct = bases.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        ids.len(),
        "every session launched at the same moment has its own port range: {bases:?}"
    );
    world.ok(&[
        "terminal", "close", "--all", "--prune", "--force", "--grace", "0.2",
    ]);
}
