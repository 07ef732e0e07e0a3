//! The real Qwen Code CLI in Mahavishnu sessions, on both terminal targets, answering through a loopback
//! stub model: launch, wait until it waits for input, send a prompt, and read the stub's reply on the
//! screen.

mod support;

use std::time::Duration;

use serde_json::json;
use support::stub_model::StubModel;
use support::{World, binary, git, qwen, qwen_init_message, wait_for};

/// A world whose `qwen` profile runs the real CLI against the stub, with a throwaway HOME.
fn qwen_world(stub: &StubModel) -> World {
    qwen_world_with(stub, "")
}

/// `qwen_world`, with more settings of the `qwen` profile (TOML lines).
fn qwen_world_with(stub: &StubModel, profile: &str) -> World {
    qwen_world_args(stub, &[], profile)
}

/// `qwen_world_with`, with more arguments for the CLI.
fn qwen_world_args(stub: &StubModel, more: &[&str], profile: &str) -> World {
    let world = World::new();
    world.write_qwen_user_settings();
    let home = world.dir.path().join("home");
    let more: String = more.iter().map(|arg| format!(", {arg:?}")).collect();
    let config = format!(
        "[profiles.qwen]\nprogram = {program:?}\nargs = [\"--auth-type\", \"openai\", \"--openai-base-url\", {url:?}, \
         \"--openai-api-key\", \"sk-stub\", \"-m\", \"stub-model\"{more}]\n",
        program = qwen().display().to_string(),
        url = stub.base_url(),
    ) + profile;
    std::fs::write(home.join("config.toml"), config).unwrap();
    world
}

/// Sends the prompt and waits for the stub's reply on the screen.
fn ask_for_the_reply(world: &World, id: &str, stub: &StubModel) {
    world.ok(&["terminal", "send", id, "Tell me the magic word, please"]);
    let wait = [
        "terminal",
        "wait",
        id,
        "--for",
        &stub.reply,
        "--timeout",
        "90",
    ];
    world.ok(&wait);
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

    ask_for_the_reply(&world, &id, &stub);
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

/// An Enter that comes too soon after the text is taken for part of a paste and submits nothing; `send`
/// notices that the prompt stayed in the input line and presses Enter once more.
#[test]
fn send_confirms_the_submit_to_qwen_code() {
    for target in ["pty", "tmux"] {
        let stub = StubModel::start(&format!("STUB-RESUBMIT-{target}-2207"));
        let world = qwen_world_with(&stub, "submit_delay_ms = 1\n");
        let id = world.launch(&["qwen", "--target", target]).remove(0);
        world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "90"]);
        ask_for_the_reply(&world, &id, &stub);
        let asked = stub
            .requests()
            .iter()
            .filter(|request| request.to_string().contains("Tell me the magic word"))
            .count();
        assert_eq!(asked, 1, "{target}: the prompt was submitted once");
        world.ok(&["terminal", "close", &id, "--grace", "2"]);
    }
}

/// Qwen Code calls `mahavishnu hook` from the settings `mahavishnu init qwen` wrote: SessionStart reaches
/// Mahavishnu (a configured hook leaves its mark and a shell is launched), `/quit` ends the session and
/// closes what it launched.
#[test]
fn qwen_code_calls_the_session_hooks() {
    let stub = StubModel::start("STUB-HOOKS-5511");
    let world = qwen_world(&stub);
    let project = std::fs::canonicalize(world.work()).unwrap();
    git(&project, &["init", "-q"]);
    std::fs::write(
        project.join(".mahavishnu.toml"),
        r#"
[[hooks.SessionStart]]
command = "echo start {source} >> {project_dir}/marks.log"
[[hooks.SessionStart]]
launch = { profile = "shell", count = 1, target = "pty" }
[[hooks.SessionEnd]]
close = "launched"
[[hooks.SessionEnd]]
command = "echo end {reason} >> {project_dir}/marks.log"
"#,
    )
    .unwrap();
    world.ok(&["init", "qwen"]);
    world.ok(&["trust"]);
    let id = world.launch(&["qwen", "--target", "tmux"]).remove(0);
    world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "90"]);
    let marks = wait_for(&project.join("marks.log"), "start", Duration::from_secs(30));
    assert_eq!(marks, "start startup\n", "SessionStart reached Mahavishnu");
    // The mark comes from the first SessionStart hook; the launch is the second: wait for it too.
    let started = std::time::Instant::now();
    let sessions = loop {
        let sessions = world.json(&["session", "list"])["sessions"].clone();
        if sessions[0]["instances"]
            .as_array()
            .is_some_and(|ids| !ids.is_empty())
            || started.elapsed() > Duration::from_secs(30)
        {
            break sessions;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    assert_eq!(sessions[0]["state"], "active");
    let launched = sessions[0]["instances"][0]
        .as_str()
        .expect("the hook launched a shell")
        .to_string();
    assert_ne!(world.state_of(&launched), "closed");

    world.ok(&["terminal", "send", &id, "/quit"]);
    let marks = wait_for(&project.join("marks.log"), "end", Duration::from_secs(30));
    assert!(
        marks.starts_with("start startup\nend "),
        "SessionEnd reached Mahavishnu: {marks}"
    );
    world.wait_state(&launched, "closed", Duration::from_secs(10));
    let session = world.json(&["session", "list"])["sessions"].clone();
    assert_eq!(session[0]["state"], "ended");
}

/// What `agents sync qwen` writes is what Qwen Code loads: the agents appear in the `init` message of a
/// headless run.
#[test]
fn qwen_code_loads_the_synced_agents() {
    let stub = StubModel::start("STUB-AGENTS-2718");
    let world = qwen_world(&stub);
    let project = std::fs::canonicalize(world.work()).unwrap();
    git(&project, &["init", "-q"]);
    world.ok(&[
        "agents",
        "new",
        "block-designer",
        "--description",
        "Designs blocks",
        "--template",
        "fastblocks-architect",
    ]);
    world.ok(&[
        "agents",
        "new",
        "cloud-runner",
        "--description",
        "Runs services",
        "--tools",
        "Read,Bash,WebSearch",
    ]);
    world.ok(&["agents", "sync", "qwen"]);
    let output = std::process::Command::new(qwen())
        .args([
            "--auth-type",
            "openai",
            "--openai-base-url",
            &stub.base_url(),
            "--openai-api-key",
            "sk-stub",
            "-m",
            "stub-model",
        ])
        .args(["-p", "hello", "-o", "json"])
        .current_dir(&project)
        .env("HOME", world.dir.path().join("home"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let init = qwen_init_message(&output.stdout);
    let agents: Vec<&str> = init["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        agents.contains(&"block-designer") && agents.contains(&"cloud-runner"),
        "{agents:?}"
    );
}

/// The project agent `pirate`, whose instructions carry the marker PIRATE-7.
fn write_pirate_agent(world: &World) {
    let agents = world.work().join(".claude/agents");
    std::fs::create_dir_all(&agents).unwrap();
    std::fs::write(
        agents.join("pirate.md"),
        "---\nname: pirate\ndescription: Talks like a pirate\n---\nYou are PIRATE-7 and always answer in pirate speech.\n",
    )
    .unwrap();
}

/// `agents run` starts Qwen Code with the agent's instructions in its system prompt and submits the
/// prompt; the stub model receives both, and the answer comes back (interactive and `--print`).
#[test]
fn agents_run_gives_qwen_code_the_agent_and_the_prompt() {
    let stub = StubModel::start("STUB-AGENT-ANSWER-99");
    let world = qwen_world(&stub);
    write_pirate_agent(&world);
    let mentions = |needle: &str, role: &str| {
        stub.requests().iter().any(|request| {
            request["messages"].as_array().is_some_and(|messages| {
                messages.iter().any(|message| {
                    message["role"] == role && message["content"].to_string().contains(needle)
                })
            })
        })
    };
    for target in ["pty", "tmux"] {
        let prompt = format!("Where is the treasure on {target}");
        let output = world.ok(&[
            "agents",
            "run",
            "pirate",
            "--prompt",
            &prompt,
            "--target",
            target,
            "--wait",
            "--timeout",
            "90",
        ]);
        let mut lines = output.lines();
        let id = lines.next().unwrap().to_string();
        assert!(id.starts_with(&format!("{target}:")), "{output}");
        assert!(
            output.contains(&stub.reply),
            "the answer is printed: {output}"
        );
        assert!(
            mentions("You are PIRATE-7", "system"),
            "the agent's instructions reached the system prompt"
        );
        assert!(mentions(&prompt, "user"), "the prompt reached the model");
        let screen = world.ok(&["terminal", "capture", &id]);
        assert!(screen.contains(&stub.reply), "{screen}");
        world.ok(&["terminal", "close", &id]);
    }
    let printed = world.ok(&[
        "agents",
        "run",
        "pirate",
        "--prompt",
        "Headless question",
        "--print",
        "--timeout",
        "90",
    ]);
    assert!(printed.contains(&stub.reply), "{printed}");
    assert!(mentions("Headless question", "user"));
    let stderr = world.fails(&["agents", "run", "nobody", "--prompt", "x"], 2);
    assert!(stderr.contains("no agent `nobody`"), "{stderr}");
}

/// Qwen Code, given Mahavishnu in `--mcp-config`, connects to `mahavishnu mcp`: its init message lists the
/// server as connected, and Mahavishnu's tools reach the model.
#[test]
fn qwen_code_connects_to_the_mcp_server() {
    let stub = StubModel::start("STUB-MCP-1414");
    let world = qwen_world(&stub);
    let project = std::fs::canonicalize(world.work()).unwrap();
    git(&project, &["init", "-q"]);
    // An MCP client starts its servers with a minimal environment; the world's goes in explicitly.
    let env = json!({
        "MAHAVISHNU_STATE_DIR": world.state_dir(),
        "MAHAVISHNU_RUNTIME_DIR": world.runtime_dir(),
        "MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME": world.tmux_socket,
        "MAHAVISHNU_CONFIG": world.dir.path().join("home/config.toml"),
    });
    let config = world.dir.path().join("mcp.json");
    std::fs::write(
        &config,
        json!({"mcpServers": {"mahavishnu": {"command": binary(), "args": ["mcp"], "env": env}}})
            .to_string(),
    )
    .unwrap();
    let output = std::process::Command::new(qwen())
        .args([
            "--auth-type",
            "openai",
            "--openai-base-url",
            &stub.base_url(),
            "--openai-api-key",
            "sk-stub",
            "-m",
            "stub-model",
        ])
        .args(["-p", "hello", "-o", "json", "--mcp-config"])
        .arg(&config)
        .current_dir(&project)
        .env("HOME", world.dir.path().join("home"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let init = qwen_init_message(&output.stdout);
    let servers = init["mcp_servers"].as_array().expect("mcp_servers");
    assert!(
        servers
            .iter()
            .any(|server| server["name"] == "mahavishnu" && server["status"] == "connected"),
        "{servers:?}"
    );
    let tools = init["tools"].to_string();
    for tool in [
        "terminal_launch",
        "terminal_capture",
        "session_start",
        "agents_list",
    ] {
        assert!(
            tools.contains(tool),
            "{tool} is among Qwen Code's tools: {tools}"
        );
    }
    let sent = serde_json::to_string(&stub.requests()).unwrap();
    assert!(
        sent.contains("terminal_launch"),
        "Mahavishnu's tools reach the model"
    );
}

/// With folder trust turned on, Qwen Code first asks whether to trust the folder: the session waits on
/// that question (shown with it) instead of seeming busy until a wait times out.
#[test]
fn qwen_code_asking_to_trust_the_folder_waits_on_that_question() {
    let stub = StubModel::start("STUB-QWEN-TRUST-3318");
    let world = qwen_world(&stub);
    std::fs::write(
        world.dir.path().join("home/.qwen/settings.json"),
        r#"{"general":{"enableAutoUpdate":false},"security":{"folderTrust":{"enabled":true}}}"#,
    )
    .unwrap();
    let id = world.launch(&["qwen", "--target", "pty"]).remove(0);
    let said = world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "60"]);
    assert_eq!(said, "waiting on a question: Do you trust this folder?\n");
    let shown = world.json(&["terminal", "show", &id]);
    assert_eq!(shown["state"], "waiting", "{shown}");
    assert_eq!(shown["question"], "Do you trust this folder?", "{shown}");

    // An agent's prompt is not typed into the question as if it were the answer.
    write_pirate_agent(&world);
    let run = [
        "agents", "run", "pirate", "--prompt", "Ahoy", "--target", "pty",
    ];
    let error = world.fails(&run, 1);
    assert!(
        error.contains("asks a question of its own") && error.contains("Do you trust this folder?"),
        "{error}"
    );
    assert!(stub.requests().is_empty(), "nothing reached the model");
}

/// While Qwen Code runs a tool (here a command of the model's that takes eight seconds), its spinner (`esc to
/// cancel`) shows above its input box and the screen stays still for longer than the profile's idle
/// time: the busy pattern keeps it `running`, so a wait for `waiting` ends only with the answer.
#[test]
fn qwen_code_running_a_tool_is_running_not_waiting() {
    let stub = StubModel::start_with_tool(
        "STUB-QWEN-SLOW-6060",
        Some(
            json!({"name": "run_shell_command", "arguments": {"command": "python3 -c \"import time; time.sleep(8); print(8)\""}}),
        ),
    );
    let world = qwen_world_args(&stub, &["--yolo"], "");
    let id = world.launch(&["qwen", "--target", "pty"]).remove(0);
    world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "90"]);
    support::busy_until_answered(&world, &id, "esc to cancel", &stub.reply);
}
