//! The tmux control-mode client: commands and their answers, notices of output, the tmux target's
//! reads through it; and `terminal list` answered through a running `serve` exactly as without one.

mod support;

use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mahavishnu_core::{ScreenOptions, Target, TargetKind, TargetName};
use mahavishnu_terminal::{TmuxTarget, tmux_control};
use support::{Serve, World};

fn words(text: &str) -> Vec<String> {
    text.split(' ').map(str::to_string).collect()
}

/// A plain tmux command on the world's server, as a spawned client runs it.
fn tmux(world: &World, args: &[&str]) -> String {
    let output = std::process::Command::new("tmux")
        .args(["-L", &world.tmux_socket, "-f", "/dev/null"])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "tmux {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn new_session(world: &World, name: &str) {
    tmux(
        world,
        &[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "80",
            "-y",
            "24",
            "bash --norc --noprofile",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_client_answers_each_command_with_its_own_output() {
    let world = World::new();
    let client = tmux_control::start("tmux", &world.tmux_socket);
    // No server yet: the caller is told to run tmux itself, and none is started.
    assert!(client.command(&words("list-sessions")).await.is_none());
    assert!(
        !std::process::Command::new("tmux")
            .args(["-L", &world.tmux_socket, "has-session"])
            .output()
            .unwrap()
            .status
            .success()
    );
    new_session(&world, "mv-a");
    new_session(&world, "mv-b");
    tokio::time::sleep(Duration::from_millis(600)).await; // past the pause after a failed connection
    let format = "#{session_name}\t#{pane_pid}\t#{pane_dead}";
    let listed = client
        .command(&["list-panes".into(), "-a".into(), "-F".into(), format.into()])
        .await
        .expect("connected")
        .expect("answered");
    assert_eq!(listed, tmux(&world, &["list-panes", "-a", "-F", format]));
    // Many at once, each matched to its own answer.
    let asks: Vec<_> = (0..40)
        .map(|n| {
            let client = Arc::clone(&client);
            tokio::spawn(async move {
                let words = vec![
                    "display-message".to_string(),
                    "-p".into(),
                    format!("n{n} \"quoted\" $HOME"),
                    ";".into(),
                    "display-message".into(),
                    "-p".into(),
                    format!("second {n}"),
                ];
                (n, client.command(&words).await)
            })
        })
        .collect();
    for ask in asks {
        let (n, answer) = ask.await.unwrap();
        assert_eq!(
            answer.unwrap().unwrap(),
            format!("n{n} \"quoted\" $HOME\nsecond {n}\n")
        );
    }
    // An error ends the chain and is tmux's own message.
    let error = client
        .command(&words(
            "display-message -p one ; kill-pane -t %999 ; display-message -p three",
        ))
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.starts_with("can't find pane"), "{error}");
    // And the client goes on answering.
    let again = client.command(&words("display-message -p again")).await;
    assert_eq!(again.unwrap().unwrap(), "again\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_in_any_session_is_noticed() {
    let world = World::new();
    new_session(&world, "mv-quiet");
    new_session(&world, "mv-loud");
    let client = tmux_control::start("tmux", &world.tmux_socket);
    let mut changes = client.subscribe_changes();
    // Let the watchers attach (a moment), then forget what they saw while attaching.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while changes.try_recv().is_ok() {}
    for session in ["mv-loud", "mv-quiet"] {
        let target = format!("={session}:");
        tmux(
            &world,
            &[
                "send-keys",
                "-t",
                &target,
                "-l",
                &format!("echo hi-{session}"),
            ],
        );
        // How soon is a benchmark's question (bench/dashboard.mjs); here: that it comes.
        let noticed = tokio::time::timeout(Duration::from_secs(5), async {
            while changes.recv().await.unwrap() != session {}
        })
        .await;
        assert!(noticed.is_ok(), "no notice of output in {session}");
    }
    // A session made later is watched too.
    new_session(&world, "mv-late");
    tokio::time::sleep(Duration::from_millis(300)).await;
    while changes.try_recv().is_ok() {}
    tmux(&world, &["send-keys", "-t", "=mv-late:", "-l", "echo late"]);
    let late = tokio::time::timeout(Duration::from_secs(5), async {
        while changes.recv().await.unwrap() != "mv-late" {}
    })
    .await;
    assert!(
        late.is_ok(),
        "no notice from a session made after the watch began"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tmux_target_reads_the_same_through_the_control_client() {
    let world = World::new();
    for n in 0..5 {
        new_session(&world, &format!("mv-{n}"));
    }
    tmux(
        &world,
        &[
            "send-keys",
            "-t",
            "=mv-2:",
            "-l",
            "printf 'a\\tb\\033[1mbold\\n'",
        ],
    );
    tmux(&world, &["send-keys", "-t", "=mv-2:", "Enter"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let target = TmuxTarget::new(
        TargetName::builtin(TargetKind::Tmux),
        "tmux",
        &world.tmux_socket,
        10_000,
        &world.runtime_dir(),
    );
    let natives: Vec<String> = (0..5).map(|n| format!("mv-{n}")).collect();
    let key = |list: Vec<mahavishnu_core::Observation>| {
        list.into_iter()
            .map(|o| (o.native, o.status, o.pid, o.foreground_job))
            .collect::<Vec<_>>()
    };
    let spawned_list = key(target.list().await.unwrap());
    let spawned_screens: Vec<String> = target
        .screens(&natives)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ansi = ScreenOptions {
        scrollback: true,
        ansi: true,
    };
    let spawned_ansi = target.screen("mv-2", ansi).await.unwrap();
    let missing = target.screen("mv-none", ScreenOptions::default()).await;

    tmux_control::start("tmux", &world.tmux_socket);
    assert_eq!(key(target.list().await.unwrap()), spawned_list);
    let screens: Vec<String> = target
        .screens(&natives)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(screens, spawned_screens);
    assert!(spawned_ansi.contains("\u{1b}[1mbold"), "{spawned_ansi:?}");
    assert_eq!(target.screen("mv-2", ansi).await.unwrap(), spawned_ansi);
    let through = target.screen("mv-none", ScreenOptions::default()).await;
    assert_eq!(
        through.unwrap_err().to_string(),
        missing.unwrap_err().to_string()
    );
    // A screen batch that names a missing session still gives the others.
    let mut some_missing = natives.clone();
    some_missing.insert(1, "mv-none".into());
    let batch = target.screens(&some_missing).await;
    assert!(batch[1].is_err());
    assert_eq!(batch[2].as_ref().unwrap(), &spawned_screens[1]);
}

/// A tmux that logs each command line it is started with, so that a test can tell whether a
/// `mahavishnu` started tmux.
fn logging_tmux(world: &World) -> std::path::PathBuf {
    let script = world.dir.path().join("tmux-logging");
    let log = world.dir.path().join("tmux.log");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec tmux \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    log
}

fn list_panes_calls(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("list-panes"))
        .count()
}

/// A list's table without its AGE column, which moves on with the clock.
fn without_age(table: &str) -> String {
    table
        .lines()
        .map(|line| {
            let mut columns: Vec<&str> = line.split_whitespace().collect();
            if columns.len() > 4 {
                columns.remove(4);
            }
            columns.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn terminal_list_while_serve_runs_prints_the_same_and_starts_no_tmux() {
    let world = World::new();
    let log = logging_tmux(&world);
    let program = world.dir.path().join("tmux-logging");
    let with_program = |args: &[&str]| {
        let output = world
            .command(args)
            .env("MAHAVISHNU_TARGETS__TMUX__PROGRAM", &program)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let ids = world.launch(&["shell", "--count", "3", "--target", "tmux"]);
    assert_eq!(ids.len(), 3);
    for id in &ids {
        world.wait_state(id, "waiting", Duration::from_secs(10));
    }
    let table = with_program(&["terminal", "list"]);
    let json = with_program(&["--output", "json", "terminal", "list", "--all"]);
    let filtered = with_program(&["terminal", "list", "--target", "tmux", "--project", "."]);
    assert!(list_panes_calls(&log) >= 3, "the lists ran tmux");

    let serve = Serve::start(&world);
    let serve_file = world.state_dir().join("serve.json");
    assert!(serve_file.exists(), "serve tells the CLI where it runs");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&serve_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = list_panes_calls(&log);
    assert_eq!(
        without_age(&with_program(&["terminal", "list"])),
        without_age(&table)
    );
    assert_eq!(
        with_program(&["--output", "json", "terminal", "list", "--all"]),
        json
    );
    assert_eq!(
        without_age(&with_program(&[
            "terminal",
            "list",
            "--target",
            "tmux",
            "--project",
            "."
        ])),
        without_age(&filtered)
    );
    assert_eq!(
        list_panes_calls(&log),
        before,
        "a list while serve runs starts no tmux"
    );
    // A session gone is seen through serve as without it.
    world.ok(&["terminal", "close", &ids[0]]);
    let after_close = with_program(&["terminal", "list"]);
    assert!(!after_close.contains(&ids[0]), "{after_close}");
    drop(serve);
    assert!(!serve_file.exists(), "serve removes its file when it stops");
    assert_eq!(
        without_age(&with_program(&["terminal", "list"])),
        without_age(&after_close)
    );
}

#[test]
fn a_stale_or_foreign_serve_file_is_ignored() {
    let world = World::new();
    let ids = world.launch(&["shell", "--count", "2", "--target", "tmux"]);
    for id in &ids {
        world.wait_state(id, "waiting", Duration::from_secs(10));
    }
    let table = world.ok(&["terminal", "list"]);
    // Something listening on loopback that must never be asked.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let serve_file = world.state_dir().join("serve.json");
    let write = |pid: u32, mode: u32| {
        let _ = std::fs::remove_file(&serve_file);
        let text = serde_json::json!({
            "pid": pid, "address": address.to_string(), "tmux_sockets": [world.tmux_socket],
        });
        std::fs::write(&serve_file, text.to_string()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&serve_file, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // A serve that ended.
    let mut ended = std::process::Command::new("true").spawn().unwrap();
    let pid = ended.id();
    ended.wait().unwrap();
    write(pid, 0o600);
    assert_eq!(
        without_age(&world.ok(&["terminal", "list"])),
        without_age(&table)
    );
    // A file others could have written.
    write(std::process::id(), 0o666);
    assert_eq!(
        without_age(&world.ok(&["terminal", "list"])),
        without_age(&table)
    );
    assert!(
        listener.accept().is_err(),
        "the CLI connected to an address from a file it must not believe"
    );
    // A live pid and a private file, but nothing answers there as serve: the list is as before.
    write(std::process::id(), 0o600);
    drop(listener);
    assert_eq!(
        without_age(&world.ok(&["terminal", "list"])),
        without_age(&table)
    );
}

/// The dashboard's session cookie, through a one-time login link.
fn dashboard_cookie(world: &World, serve: &Serve) -> String {
    use std::io::{Read, Write};
    let url = world.ok(&["dashboard", "--listen", &serve.address]);
    let path = url.trim().split_once(&serve.address).unwrap().1.to_string();
    let mut stream = std::net::TcpStream::connect(&serve.address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        serve.address
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|line| {
            line.strip_prefix("set-cookie: ")
                .or(line.strip_prefix("Set-Cookie: "))
        })
        .and_then(|cookie| cookie.split(';').next())
        .unwrap_or_else(|| panic!("a cookie in {text}"))
        .to_string()
}

/// With 20 sessions printing all the time, each line typed into one of them reaches a dashboard page
/// (its server-sent events); how soon is measured by `bench/dashboard.mjs`.
#[test]
fn a_screen_change_reaches_the_dashboard_while_20_sessions_print() {
    let world = World::new();
    let ids = world.launch(&["shell", "--count", "20", "--target", "tmux"]);
    for id in &ids {
        world.wait_state(id, "waiting", Duration::from_secs(20));
    }
    let native = |id: &str| format!("={}:", id.strip_prefix("tmux:").unwrap());
    for id in &ids[1..] {
        tmux(
            &world,
            &[
                "send-keys",
                "-t",
                &native(id),
                "-l",
                "while :; do echo $RANDOM; sleep 0.05; done",
            ],
        );
        tmux(&world, &["send-keys", "-t", &native(id), "Enter"]);
    }
    let serve = Serve::start(&world);
    let cookie = dashboard_cookie(&world, &serve);
    let (lines, received) = std::sync::mpsc::channel::<(Instant, String)>();
    {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(&serve.address).unwrap();
        write!(
            stream,
            "GET /dashboard/updates HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\n\r\n",
            serve.address
        )
        .unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { return };
                if lines.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
    }
    // The first look sends every tile.
    std::thread::sleep(Duration::from_millis(1500));
    while received.try_recv().is_ok() {}
    for n in 0..10 {
        let marker = format!("MARK{n}-");
        tmux(
            &world,
            &[
                "send-keys",
                "-t",
                &native(&ids[0]),
                "-l",
                &format!("echo {marker}$((1+1))"),
            ],
        );
        tmux(&world, &["send-keys", "-t", &native(&ids[0]), "Enter"]);
        let want = format!("{marker}2");
        loop {
            let (_, line) = received
                .recv_timeout(Duration::from_secs(5))
                .expect("the dashboard shows the line");
            if line.starts_with("data:") && line.contains(&want) {
                break;
            }
        }
    }
}
