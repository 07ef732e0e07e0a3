//! Named targets end to end, through the real binary: two clusters with the same names side by side,
//! a target taken out of the configuration, an unreachable cluster, `targets` and `targets show`,
//! the configuration's errors, and the ids made before targets had names.

#![cfg(feature = "kubernetes")]

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_kube::FakeKube;
use support::{World, target_named};

/// The instances of `terminal list -o json`, whether it prints an array or `{"instances": [...]}`.
fn instances(listed: &Value) -> Vec<Value> {
    let rows = match listed {
        Value::Array(rows) => rows,
        Value::Object(object) => object["instances"]
            .as_array()
            .unwrap_or_else(|| panic!("no instances in {listed}")),
        _ => panic!("not a list of instances: {listed}"),
    };
    rows.clone()
}

/// The row of `id` in `terminal list -o json`.
fn row(listed: &Value, id: &str) -> Value {
    instances(listed)
        .into_iter()
        .find(|row| row["id"] == id)
        .unwrap_or_else(|| panic!("no row `{id}` in {listed}"))
}

fn user_config(world: &World) -> PathBuf {
    world.dir.path().join("home/config.toml")
}

fn write_config(world: &World, text: &str) {
    std::fs::write(user_config(world), text).unwrap();
}

/// A directory of its own for target `name`'s kubeconfig (the fake writes `DIR/kubeconfig`).
fn kube_dir(world: &World, name: &str) -> PathBuf {
    let dir = world.dir.path().join(format!("kube-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `[targets.NAME]`, a kubernetes target on `fake` in namespace `dev`.
fn kube_target(world: &World, name: &str, fake: &FakeKube) -> String {
    let kubeconfig = fake.kubeconfig(&kube_dir(world, name), "dev");
    format!(
        "[targets.{name}]\nkind = \"kubernetes\"\nkubeconfig = {:?}\nnamespace = \"dev\"\n\
         image = \"busybox:1.36\"\nstartup_timeout_ms = 10000\n",
        kubeconfig.display().to_string()
    )
}

/// Whether a state is one of a live instance's.
fn live(state: &str) -> bool {
    matches!(state, "starting" | "running" | "waiting")
}

/// The table row of `id` in `terminal list`.
fn table_line(table: &str, id: &str) -> String {
    table
        .lines()
        .find(|line| line.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no line for {id} in:\n{table}"))
        .to_string()
}

/// Two clusters configured as `east` and `west`, each with a pod of the same name in the same
/// namespace: each id leads to its own cluster, and closing one leaves the other alone.
#[test]
fn two_clusters_with_the_same_names_stay_apart() {
    let (east, west) = (FakeKube::start(), FakeKube::start());
    let world = World::new();
    write_config(
        &world,
        &format!(
            "{}\n{}",
            kube_target(&world, "east", &east),
            kube_target(&world, "west", &west)
        ),
    );
    for target in ["east", "west"] {
        let ids = world.launch(&[
            "shell",
            "--target",
            target,
            "--name",
            "same",
            "--image",
            "busybox:1.36",
        ]);
        assert_eq!(ids, [format!("{target}:dev/same")]);
    }
    assert_eq!(east.pod_names(), ["dev/same"]);
    assert_eq!(west.pod_names(), ["dev/same"]);

    let listed = world.json(&["terminal", "list"]);
    for target in ["east", "west"] {
        let id = format!("{target}:dev/same");
        let found = row(&listed, &id);
        assert_eq!(found["target"], target, "{found}");
        assert!(live(found["state"].as_str().unwrap()), "{found}");
        assert!(found.get("unknown").is_none_or(Value::is_null), "{found}");
    }
    let table = world.ok(&["terminal", "list"]);
    for target in ["east", "west"] {
        let line = table_line(&table, &format!("{target}:dev/same"));
        assert_eq!(
            line.split_whitespace().nth(2),
            Some(target),
            "the TARGET column: {line}"
        );
    }

    // exec runs in the pod of its own cluster: the container's environment was made from its id.
    for target in ["east", "west"] {
        let id = format!("{target}:dev/same");
        assert_eq!(
            world.sh(&id, "echo $MAHAVISHNU_INSTANCE_ID"),
            format!("{id}\n")
        );
    }

    world.ok(&["terminal", "close", "east:dev/same", "--grace", "0.2"]);
    support::eventually("east's pod deleted", Duration::from_secs(10), || {
        east.pod_names().is_empty()
    });
    assert_eq!(west.pod_names(), ["dev/same"], "west's pod is untouched");
    assert_eq!(world.state_of("east:dev/same"), "closed");
    assert!(live(&world.state_of("west:dev/same")));
    assert_eq!(
        world.sh("west:dev/same", "echo $MAHAVISHNU_INSTANCE_ID"),
        "west:dev/same\n",
        "west still answers"
    );
    assert_eq!(
        east.created_pods().len(),
        1,
        "east was asked to create one pod"
    );
    assert_eq!(
        west.created_pods().len(),
        1,
        "west was asked to create one pod"
    );
}

/// A target taken out of the configuration: its rows stay, with their recorded state and why it is
/// unknown now, and the other rows are not affected.
#[test]
fn a_target_removed_from_the_config_leaves_its_rows_unknown() {
    let world = World::new();
    write_config(&world, "[targets.box]\nkind = \"pty\"\n");
    assert_eq!(
        world.launch(&["shell", "--target", "box", "--name", "kept"]),
        ["box:kept"]
    );
    assert_eq!(
        world.launch(&["shell", "--target", "pty", "--name", "local"]),
        ["pty:local"]
    );
    assert_eq!(
        world.launch(&["shell", "--target", "tmux", "--name", "other"]),
        ["tmux:other"]
    );
    let before = row(&world.json(&["terminal", "list"]), "box:kept");

    write_config(&world, "");
    let listed = world.json(&["terminal", "list"]);
    let kept = row(&listed, "box:kept");
    assert_eq!(kept["target"], "box");
    assert_eq!(kept["state"], before["state"], "the recorded state is kept");
    let reason = kept["unknown"].as_str().unwrap_or_else(|| panic!("{kept}"));
    assert!(
        reason.contains("unknown target `box`") && reason.contains("not in the configuration"),
        "{reason}"
    );
    for id in ["pty:local", "tmux:other"] {
        let other = row(&listed, id);
        assert!(other.get("unknown").is_none_or(Value::is_null), "{other}");
        assert!(live(other["state"].as_str().unwrap()), "{other}");
    }
    let table = world.ok(&["terminal", "list"]);
    assert!(
        table_line(&table, "box:kept").contains("unknown: unknown target `box`"),
        "{table}"
    );
    assert!(
        !table_line(&table, "pty:local").contains("unknown"),
        "{table}"
    );

    // With the target back, its instance is reached again and closes as usual.
    write_config(&world, "[targets.box]\nkind = \"pty\"\n");
    let kept = row(&world.json(&["terminal", "list"]), "box:kept");
    assert!(kept.get("unknown").is_none_or(Value::is_null), "{kept}");
    world.ok(&["terminal", "close", "box:kept", "--grace", "0.2"]);
}

/// An instance of a target that is gone is not closed by accident: `close` says how to let go of its
/// record, and `close --forget` does so without asking the target.
#[test]
fn an_instance_of_a_removed_target_is_closed_with_forget() {
    let world = World::new();
    write_config(&world, "[targets.box]\nkind = \"pty\"\n");
    assert_eq!(
        world.launch(&["shell", "--target", "box", "--name", "kept"]),
        ["box:kept"]
    );
    write_config(&world, "");

    let refused = world.run(&["terminal", "close", "box:kept"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("--forget"), "the message tells how: {said}");
    assert!(live(&world.state_of("box:kept")), "not closed: {said}");

    world.ok(&["terminal", "close", "box:kept", "--forget"]);
    let all = world.json(&["terminal", "list", "--all"]);
    assert_eq!(row(&all, "box:kept")["state"], "closed", "{all}");

    // The session itself was left running; end it through a pty target of that name.
    let target = mahavishnu_terminal::PtyTarget::new(
        mahavishnu_core::TargetName::new("box").unwrap(),
        &world.sessions_dir(),
        support::binary(),
        10_000,
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use mahavishnu_core::Target;
        target
            .stop("kept", Duration::from_millis(200))
            .await
            .unwrap();
    });
}

/// A TCP port that accepts connections and never answers on them.
fn black_hole() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Points the kubeconfig at `path` (context `fake`, namespace `dev`) at `server`.
fn repoint(path: &Path, server: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let old = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("server: "))
        .unwrap()
        .to_string();
    std::fs::write(path, text.replace(&old, server)).unwrap();
}

/// With a cluster that cannot be reached (it never answers, or nothing listens), `terminal list`
/// still succeeds within `budget`, shows the local rows as usual and the cluster's rows as unknown.
/// `settings` are extra keys of the cluster's target.
fn unreachable_cluster(settings: &str, budget: Duration) {
    let fake = FakeKube::start();
    let world = World::new();
    write_config(
        &world,
        &format!("{}{settings}", kube_target(&world, "far", &fake)),
    );
    assert_eq!(
        world.launch(&["shell", "--target", "far", "--name", "lost"]),
        ["far:dev/lost"]
    );
    assert_eq!(
        world.launch(&["shell", "--target", "pty", "--name", "here"]),
        ["pty:here"]
    );
    let kubeconfig = kube_dir(&world, "far").join("kubeconfig");

    for (how, server) in [
        (
            "never answers",
            format!("http://127.0.0.1:{}", black_hole()),
        ),
        (
            "refuses connections",
            format!("http://127.0.0.1:{}", closed_port()),
        ),
    ] {
        repoint(&kubeconfig, &server);
        let started = Instant::now();
        let output = world.run(&["--output", "json", "terminal", "list"]);
        let took = started.elapsed();
        assert!(
            output.status.success(),
            "a cluster that {how}: list failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            took < budget,
            "a cluster that {how} held the list up for {took:?}"
        );
        let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
        let here = row(&listed, "pty:here");
        assert!(here.get("unknown").is_none_or(Value::is_null), "{here}");
        assert!(live(here["state"].as_str().unwrap()), "{here}");
        let lost = row(&listed, "far:dev/lost");
        assert!(
            live(lost["state"].as_str().unwrap()),
            "its recorded state is kept: {lost}"
        );
        let reason = lost["unknown"]
            .as_str()
            .unwrap_or_else(|| panic!("a cluster that {how}: {lost}"));
        assert!(!reason.is_empty(), "{lost}");
        assert!(
            !reason.contains("targets.kubernetes."),
            "a named target's messages name its own settings: {reason}"
        );
        if how == "never answers" && !settings.is_empty() {
            assert!(
                reason.contains("targets.far.request_timeout_ms"),
                "{reason}"
            );
        }
        eprintln!("a cluster that {how}: listed in {took:?}; unknown: {reason}");

        let started = Instant::now();
        let table = world.ok(&["terminal", "list"]);
        assert!(started.elapsed() < budget);
        assert!(
            table_line(&table, "far:dev/lost").contains("unknown: "),
            "{table}"
        );
        assert!(
            !table_line(&table, "pty:here").contains("unknown"),
            "{table}"
        );
    }
    // Reachable again: its pod is found and closed.
    repoint(&kubeconfig, &fake.url());
    world.ok(&["terminal", "close", "far:dev/lost", "--grace", "0.2"]);
}

/// An unreachable cluster whose target waits at most a second for each request.
#[test]
fn an_unreachable_cluster_does_not_hide_the_other_rows() {
    unreachable_cluster("request_timeout_ms = 1000\n", Duration::from_secs(5));
}

/// The same with the default settings (a request timeout of 30 s): the list does not wait for it.
#[test]
fn an_unreachable_cluster_does_not_hold_up_the_list() {
    unreachable_cluster("", Duration::from_secs(8));
}

/// `targets` and `targets show` as JSON: each target's name, kind, location and capabilities.
#[test]
fn targets_are_listed_and_shown_as_json() {
    let fake = FakeKube::start();
    let world = World::new();
    write_config(
        &world,
        &format!(
            "[targets.box]\nkind = \"pty\"\n\n{}",
            kube_target(&world, "east", &fake)
        ),
    );
    let all = world.json(&["targets"]);
    let names: Vec<&str> = all["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|target| target["name"].as_str().unwrap())
        .collect();
    for name in ["box", "east", "kubernetes", "pty", "tmux"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    let boxed = target_named(&all, "box");
    assert_eq!(boxed["kind"], "pty");
    assert_eq!(boxed["builtin"], false);
    assert_eq!(boxed["ready"], true, "{boxed}");
    assert!(
        boxed["location"].as_str().unwrap().contains("pty-box"),
        "{boxed}"
    );
    for capability in [
        "screen",
        "send",
        "exec",
        "logs",
        "recover",
        "attach",
        "host_processes",
    ] {
        assert_eq!(
            boxed["capabilities"][capability], true,
            "{capability}: {boxed}"
        );
    }

    let east = target_named(&all, "east");
    assert_eq!(east["kind"], "kubernetes");
    assert_eq!(east["builtin"], false);
    assert_eq!(east["ready"], true, "{east}");
    assert!(
        east["location"].as_str().unwrap().contains("dev"),
        "the location names the namespace: {east}"
    );
    assert_eq!(east["capabilities"]["exec"], true);
    assert_eq!(east["capabilities"]["attach"], false);
    assert_eq!(east["capabilities"]["host_processes"], false);

    assert_eq!(target_named(&all, "tmux")["builtin"], true);
    assert_eq!(target_named(&all, "tmux")["kind"], "tmux");

    for name in ["box", "east", "tmux"] {
        let shown = world.json(&["targets", "show", name]);
        let listed = target_named(&all, name);
        for field in ["name", "kind", "location", "builtin", "capabilities"] {
            assert_eq!(shown[field], listed[field], "{field} of {name}: {shown}");
        }
    }

    let error = world.fails(&["targets", "show", "nosuch"], 2);
    assert!(error.contains("no target `nosuch`"), "{error}");
    let error = world.fails(&["terminal", "list", "--target", "nosuch"], 2);
    assert!(error.contains("no target `nosuch`"), "{error}");
    // `k8s`, the built-in kubernetes target's id prefix, names that target.
    let shown = world.json(&["targets", "show", "k8s"]);
    assert_eq!(shown["name"], "kubernetes", "{shown}");
}

/// The configuration's errors name the problem and how to fix it.
#[test]
fn config_errors_name_the_problem_and_the_fix() {
    let world = World::new();
    for (text, says) in [
        (
            "[targets.x]\n",
            &["[targets.x] has no kind", "kind = \"tmux\""][..],
        ),
        (
            "[targets.x]\nnamespace = \"a\"\n",
            &["[targets.x] has no kind", "kind = \"tmux\""][..],
        ),
        (
            "[targets.tmux]\nkind = \"pty\"\n",
            &["built-in tmux target", "`pty`", "another name"][..],
        ),
        (
            "[targets.dev]\nkind = \"pty\"\nnamespace = \"x\"\n",
            &["[targets.dev] is a pty target", "`namespace`", "scrollback"][..],
        ),
        // A name becomes part of ids, a socket name and a directory: nothing that could leave them.
        (
            "[targets.\"../evil\"]\nkind = \"pty\"\n",
            &["`../evil` is not a target name", "prod-eu"][..],
        ),
        (
            "[targets.\"a:b\"]\nkind = \"tmux\"\n",
            &["`a:b` is not a target name"][..],
        ),
        (
            "[targets.Prod]\nkind = \"tmux\"\n",
            &["`Prod` is not a target name"][..],
        ),
        (
            "[targets.k8s]\nkind = \"kubernetes\"\n",
            &["id prefix of the built-in `kubernetes` target"][..],
        ),
    ] {
        write_config(&world, text);
        let error = world.fails(&["targets"], 1);
        assert!(error.contains("config.toml"), "names the file: {error}");
        for said in says {
            assert!(error.contains(said), "{text:?}: `{said}` in {error}");
        }
        // Any command reads the configuration first.
        world.fails(&["terminal", "list"], 1);
    }
    let runtime = world.runtime_dir();
    assert!(
        !std::fs::read_dir(&runtime)
            .map(|entries| entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().contains("evil")))
            .unwrap_or(false),
        "nothing was made for a refused name"
    );
    assert!(!runtime.parent().unwrap().join("evil").exists());
}

/// A project file cannot bring a target of its own that runs a program it chose: the file is refused
/// before it could even be trusted.
#[test]
fn a_project_file_may_not_declare_a_target_that_runs_its_program() {
    let world = World::new();
    std::fs::write(
        world.work().join(".mahavishnu.toml"),
        "[targets.evil]\nkind = \"tmux\"\nprogram = \"./evil\"\n",
    )
    .unwrap();
    for args in [&["trust"][..], &["targets"][..]] {
        let error = world.fails(args, 1);
        assert!(
            error.contains("`targets.evil.program`") && error.contains("user config"),
            "{args:?}: {error}"
        );
    }
}

/// A project file may not point a target at another cluster.
#[test]
fn a_project_file_may_not_choose_the_cluster() {
    let fake = FakeKube::start();
    let world = World::new();
    write_config(&world, &kube_target(&world, "east", &fake));
    std::fs::write(
        world.work().join(".mahavishnu.toml"),
        "[targets.east]\nkind = \"kubernetes\"\ncontext = \"x\"\n",
    )
    .unwrap();
    let error = world.fails(&["targets"], 1);
    assert!(
        error.contains(".mahavishnu.toml")
            && error.contains("`targets.east.context`")
            && error.contains("project file")
            && error.contains("user config"),
        "{error}"
    );
    world.fails(&["terminal", "list"], 1);
}

/// The same, when the project file sets only the refused key on a target the user config declares.
#[test]
fn a_project_file_may_not_choose_the_cluster_of_a_declared_target() {
    let fake = FakeKube::start();
    let world = World::new();
    write_config(&world, &kube_target(&world, "east", &fake));
    std::fs::write(
        world.work().join(".mahavishnu.toml"),
        "[targets.east]\ncontext = \"x\"\n",
    )
    .unwrap();
    let error = world.fails(&["targets"], 1);
    assert!(
        error.contains("`targets.east.context`") && error.contains("project file"),
        "{error}"
    );
}

/// Ids of the built-in kubernetes target keep their `k8s:` prefix, and work as before.
#[test]
fn the_builtin_kubernetes_target_keeps_its_ids() {
    let fake = FakeKube::start();
    let world = World::new();
    let kubeconfig = fake.kubeconfig(&kube_dir(&world, "builtin"), "dev");
    let run = |args: &[&str]| {
        let output = world
            .command(args)
            .env("MAHAVISHNU_TARGETS__KUBERNETES__KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let id = run(&[
        "terminal",
        "launch",
        "shell",
        "--target",
        "kubernetes",
        "--name",
        "old",
        "--image",
        "busybox:1.36",
    ]);
    assert_eq!(id.trim(), "k8s:dev/old");
    assert_eq!(fake.pod_names(), ["dev/old"]);
    let said = run(&[
        "terminal",
        "exec",
        "k8s:dev/old",
        "--",
        "sh",
        "-c",
        "echo $MAHAVISHNU_INSTANCE_ID",
    ]);
    assert_eq!(said, "k8s:dev/old\n");
    let listed: Value = serde_json::from_str(&run(&["-o", "json", "terminal", "list"])).unwrap();
    assert_eq!(row(&listed, "k8s:dev/old")["target"], "kubernetes");
    run(&["terminal", "close", "k8s:dev/old", "--grace", "0.2"]);
    support::eventually("the pod deleted", Duration::from_secs(10), || {
        fake.pod_names().is_empty()
    });
}
