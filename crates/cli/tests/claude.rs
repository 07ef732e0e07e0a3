//! The real Claude Code CLI in Mahavishnu sessions, offline: it talks to a loopback stub of the Messages
//! API with a dummy key that its pre-seeded settings approve, in a folder they trust.

mod support;

use support::stub_model::StubModel;
use support::{World, claude};

/// The dummy key; Claude Code remembers an approved key by its last 20 characters.
const KEY: &str = "sk-ant-stub-0123456789abcdefghijklmnop";

/// A world whose `claude` profile runs the real CLI against the stub, with `profile` lines added.
fn claude_world(stub: &StubModel, profile: &str) -> World {
    let world = World::new();
    let home = world.dir.path().join("home");
    let config = format!(
        "[profiles.claude]\nprogram = {program:?}\n{profile}\
         [profiles.claude.env]\nANTHROPIC_BASE_URL = {url:?}\nANTHROPIC_API_KEY = {KEY:?}\n\
         DISABLE_AUTOUPDATER = \"1\"\nCLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC = \"1\"\n",
        program = claude().display().to_string(),
        url = stub.anthropic_url(),
    );
    std::fs::write(home.join("config.toml"), config).unwrap();
    let project = std::fs::canonicalize(world.work()).unwrap();
    let settings = serde_json::json!({
        "hasCompletedOnboarding": true,
        "projects": { project.to_str().unwrap(): { "hasTrustDialogAccepted": true } },
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
        let world = claude_world(&stub, "");
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
