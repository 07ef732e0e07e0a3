//! The real Codex CLI in Mahavishnu sessions, offline: a model provider of its config points at a
//! loopback stub of the Responses API, with a dummy key, in a folder its config trusts.

mod support;

use support::stub_model::StubModel;
use support::{World, codex};

/// A world whose `codex` profile runs the real CLI against the stub, in a folder its config trusts.
fn codex_world(stub: &StubModel) -> World {
    let world = World::new();
    let home = world.dir.path().join("home");
    std::fs::write(
        home.join("config.toml"),
        format!(
            "[profiles.codex]\nprogram = {:?}\n[profiles.codex.env]\nSTUB_API_KEY = \"sk-stub\"\n",
            codex().display().to_string()
        ),
    )
    .unwrap();
    let project = std::fs::canonicalize(world.work()).unwrap();
    support::git(&project, &["init", "-q"]);
    let trust = format!(
        "[projects.{:?}]\ntrust_level = \"trusted\"\n",
        project.display().to_string()
    );
    std::fs::create_dir_all(home.join(".codex")).unwrap();
    std::fs::write(
        home.join(".codex/config.toml"),
        format!(
            "model = \"stub-model\"\nmodel_provider = \"stub\"\n\n[model_providers.stub]\nname = \"Stub\"\n\
             base_url = {:?}\nwire_api = \"responses\"\nenv_key = \"STUB_API_KEY\"\n\n{trust}",
            stub.base_url()
        ),
    )
    .unwrap();
    world
}

/// A prompt sent as soon as a fresh Codex counts as waiting is submitted, and answered, once: the
/// profile's rule and `send`'s confirmed submit together (Codex draws its input line before it takes
/// an Enter).
#[test]
fn codex_waits_by_its_profile_rule_and_takes_the_first_prompt() {
    for target in ["pty", "tmux"] {
        let stub = StubModel::start(&format!("STUB-CODEX-{target}-9120"));
        let world = codex_world(&stub);
        let id = world.launch(&["codex", "--target", target]).remove(0);
        world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "60"]);
        world.ok(&["terminal", "send", &id, "Tell me the codex word, please"]);
        world.ok(&[
            "terminal",
            "wait",
            &id,
            "--for",
            &stub.reply,
            "--timeout",
            "60",
        ]);
        let asked = stub
            .requests()
            .iter()
            .filter(|request| request.to_string().contains("Tell me the codex word"))
            .count();
        assert!(asked >= 1, "{target}: the prompt reached the model");
        // Once in the conversation (Codex also names the thread after it in its status line).
        let screen = world.ok(&["terminal", "capture", &id]);
        let submitted = screen
            .lines()
            .filter(|line| line.trim_start().starts_with("› Tell me the codex word"))
            .count();
        assert_eq!(submitted, 1, "{target}: submitted once: {screen}");
        world.ok(&["terminal", "close", &id, "--grace", "1s"]);
        end_codex_daemons(&world);
    }
}

/// Codex starts an app-server daemon of its own, which leaves its session's process group and outlives
/// it; the test ends the ones its world's HOME started.
fn end_codex_daemons(world: &World) {
    let home = world.dir.path().join("home").display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let command = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&command).contains(&home) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// While Codex waits for the model, its status line says `esc to interrupt`: the profile's busy
/// pattern keeps it `running`, and a wait for `waiting` ends only with the answer.
#[test]
fn codex_thinking_is_running_not_waiting() {
    let stub = StubModel::start("STUB-CODEX-SLOW-9090");
    let world = codex_world(&stub);
    let id = world.launch(&["codex", "--target", "pty"]).remove(0);
    world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "90"]);
    stub.think_for(std::time::Duration::from_secs(12));
    support::busy_until_answered(&world, &id, "esc to interrupt", &stub.reply);
}
