//! The real Claude Code CLI in Mahavishnu sessions, offline: it talks to a loopback stub of the Messages
//! API with a dummy key that its pre-seeded settings approve, in a folder they trust.

mod support;

use support::stub_model::StubModel;
use support::{World, claude};

/// The dummy key; Claude Code remembers an approved key by its last 20 characters.
const KEY: &str = "sk-ant-stub-0123456789abcdefghijklmnop";

/// A world whose `claude` profile runs the real CLI against the stub, in a folder trusted or not.
fn claude_world(stub: &StubModel, trusted: bool) -> World {
    let world = World::new();
    let home = world.dir.path().join("home");
    let config = format!(
        "[profiles.claude]\nprogram = {program:?}\n\
         [profiles.claude.env]\nANTHROPIC_BASE_URL = {url:?}\nANTHROPIC_API_KEY = {KEY:?}\n\
         DISABLE_AUTOUPDATER = \"1\"\nCLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\"\n",
        program = claude().display().to_string(),
        url = stub.anthropic_url(),
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    let project = std::fs::canonicalize(world.work()).unwrap();
    let settings = serde_json::json!({
        "hasCompletedOnboarding": true,
        "projects": { project.to_str().unwrap(): { "hasTrustDialogAccepted": trusted } },
        "customApiKeyResponses": { "approved": [&KEY[KEY.len() - 20..]], "rejected": [] },
    });
    std::fs::write(home.join(".claude.json"), settings.to_string()).unwrap();
    world
}

/// Claude Code reaches `waiting` by the built-in profile's rule, answers through the stub, and `send`'s
/// confirmed submit types the prompt once (Claude Code takes even an Enter in the same write as the
/// text for a submit, so no second Enter is needed here; none may submit twice).
#[test]
fn claude_code_waits_by_its_profile_rule_and_converses() {
    for target in ["tmux", "pty"] {
        let stub = StubModel::start(&format!("STUB-CLAUDE-{target}-4471"));
        let world = claude_world(&stub, true);
        let id = world.launch(&["claude", "--target", target]).remove(0);
        world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "90"]);
        assert_eq!(world.state_of(&id), "waiting");
        world.ok(&["terminal", "send", &id, "Tell me the magic word, please"]);
        let wait = [
            "terminal",
            "wait",
            &id,
            "--for",
            &stub.reply,
            "--timeout",
            "60",
        ];
        world.ok(&wait);
        world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "60"]);
        let screen = world.ok(&["terminal", "capture", &id]);
        assert_eq!(
            screen.matches("Tell me the magic word").count(),
            1,
            "{target}: the prompt was submitted once:\n{screen}"
        );
        world.ok(&["terminal", "close", &id, "--grace", "2"]);
    }
}

/// In a folder it does not trust yet, Claude Code stops at its own question: that is waiting (on a
/// question, shown with it), not running, so that a wait returns and says what is asked.
#[test]
fn claude_code_asking_to_trust_the_folder_waits_on_that_question() {
    let stub = StubModel::start("STUB-CLAUDE-TRUST-1902");
    let world = claude_world(&stub, false);
    let id = world.launch(&["claude", "--target", "tmux"]).remove(0);
    let said = world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "60"]);
    assert!(
        said.contains("trust"),
        "the wait names the question: {said}"
    );
    let shown = world.json(&["terminal", "show", &id]);
    assert_eq!(shown["state"], "waiting", "{shown}");
    let question = shown["question"].as_str().unwrap_or_default();
    assert!(question.contains("trust"), "{shown}");
    let listed = world.ok(&["terminal", "list"]);
    assert!(
        listed.contains("trust"),
        "the list shows the question:\n{listed}"
    );
}

/// While Claude Code waits for the model its spinner says `esc to interrupt`, and its prompt box
/// stays on the screen: the profile's busy pattern keeps it `running` however still the screen, and
/// a wait for `waiting` ends only with the answer.
#[test]
fn claude_code_thinking_is_running_not_waiting() {
    let stub = StubModel::start("STUB-CLAUDE-SLOW-8080");
    let world = claude_world(&stub, true);
    let id = world.launch(&["claude", "--target", "pty"]).remove(0);
    world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "90"]);
    stub.think_for(std::time::Duration::from_secs(12));
    support::busy_until_answered(&world, &id, "esc to interrupt", &stub.reply);
}
