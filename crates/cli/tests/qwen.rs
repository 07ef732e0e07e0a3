//! The real Qwen Code CLI in Mahavishnu sessions, on both terminal targets, answering through a loopback
//! stub model: launch, wait until it waits for input, send a prompt, and read the stub's reply on the
//! screen.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::World;
use support::stub_model::StubModel;

/// The Qwen Code executable: `MAHAVISHNU_TEST_QWEN`, which the test script sets after installing the CLI.
fn qwen() -> PathBuf {
    let path = std::env::var_os("MAHAVISHNU_TEST_QWEN").map(PathBuf::from).expect(
        "MAHAVISHNU_TEST_QWEN is not set: run the tests with `scripts/test`, which installs Qwen Code from npm",
    );
    assert!(
        path.exists(),
        "MAHAVISHNU_TEST_QWEN={} does not exist",
        path.display()
    );
    path
}

/// A world whose `qwen` profile runs the real CLI against the stub, with a throwaway HOME.
fn qwen_world(stub: &StubModel) -> World {
    let world = World::new();
    let home = world.dir.path().join("home");
    std::fs::create_dir_all(home.join(".qwen")).unwrap();
    std::fs::write(
        home.join(".qwen/settings.json"),
        r#"{"general":{"enableAutoUpdate":false}}"#,
    )
    .unwrap();
    let config = format!(
        "[profiles.qwen]\nprogram = {program:?}\nargs = [\"--auth-type\", \"openai\", \"--openai-base-url\", {url:?}, \
         \"--openai-api-key\", \"sk-stub\", \"-m\", \"stub-model\"]\n",
        program = qwen().display().to_string(),
        url = stub.base_url(),
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    world
}

fn converse(target: &str) {
    let stub = StubModel::start(&format!("STUB-ANSWER-{target}-7319"));
    let world = qwen_world(&stub);
    let id = world.launch(&["qwen", "--target", target]).remove(0);
    world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "90"]);
    assert_eq!(
        world.state_of(&id),
        "waiting",
        "list agrees that Qwen Code waits for input"
    );
    let screen = world.ok(&["terminal", "capture", &id]);
    assert!(
        screen.contains("Type your message"),
        "the input prompt is on the screen:\n{screen}"
    );

    world.ok(&["terminal", "send", &id, "Tell me the magic word, please"]);
    world.ok(&[
        "terminal",
        "wait",
        &id,
        "--for",
        &stub.reply,
        "--timeout",
        "90",
    ]);
    world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "60"]);
    let screen = world.ok(&["terminal", "capture", &id]);
    assert!(
        screen.contains(&stub.reply),
        "the stub's reply is on the screen:\n{screen}"
    );
    let requests = stub.requests();
    let asked = requests.iter().any(|request| {
        request
            .to_string()
            .contains("Tell me the magic word, please")
    });
    assert!(
        asked,
        "the prompt reached the model; requests: {requests:#?}"
    );

    world.ok(&["terminal", "close", &id, "--grace", "2"]);
    assert_eq!(world.state_of(&id), "closed");
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn qwen_code_converses_in_a_tmux_session() {
    converse("tmux");
}

#[test]
fn qwen_code_converses_in_a_pty_session() {
    converse("pty");
}
