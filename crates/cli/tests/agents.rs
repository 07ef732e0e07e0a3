//! End-to-end tests of the agent registry: fixture trees with project, user and Qwen agents, overrides,
//! and every validation error.

mod support;

use std::path::Path;

use support::World;

fn agent(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn good(name: &str, description: &str) -> String {
    format!(
        "---\nname: {name}\ndescription: {description}\nmodel: sonnet\ntools: Read, Grep\n---\n\nYou are {name}.\n"
    )
}

#[test]
fn list_and_show_resolve_project_user_and_qwen_agents() {
    let world = World::new();
    let home = world.dir.path().join("home");
    let work = world.work();
    agent(
        &home.join(".claude/agents/reviewer.md"),
        &good("reviewer", "User reviewer"),
    );
    agent(
        &home.join(".claude/agents/planner.md"),
        &good("planner", "User planner"),
    );
    agent(
        &work.join(".claude/agents/reviewer.md"),
        &good("reviewer", "Project reviewer"),
    );
    agent(
        &work.join(".qwen/agents/tester.md"),
        "---\nname: tester\ndescription: Qwen tester\ntools:\n  - read_file\n  - run_shell_command\n---\nTest things.\n",
    );
    agent(
        &home.join(".qwen/agents/helper.md"),
        "---\nname: helper\ndescription: Qwen helper\n---\nHelp.\n",
    );

    let listed = world.json(&["agents", "list"])["agents"].clone();
    let rows: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["scope"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("planner", "user"),
        ("reviewer", "project"),
        ("helper", "qwen-user"),
        ("tester", "qwen-project"),
    ];
    assert_eq!(rows, want.map(|(n, s)| (n.to_string(), s.to_string())));
    let reviewer = &listed[1];
    assert_eq!(reviewer["description"], "Project reviewer");
    assert_eq!(
        reviewer["overrides"].as_str().unwrap(),
        home.join(".claude/agents/reviewer.md").to_str().unwrap()
    );
    assert_eq!(reviewer["tools"], serde_json::json!(["Read", "Grep"]));
    assert_eq!(
        world.json(&["agents", "list", "--all"])["agents"]
            .clone()
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let table = world.ok(&["agents", "list"]);
    assert!(
        table.contains("NAME") && table.contains("qwen-project"),
        "{table}"
    );

    let shown = world.json(&["agents", "show", "reviewer"]);
    assert_eq!(shown["body"], "You are reviewer.\n");
    assert!(
        shown["frontmatter"]
            .as_str()
            .unwrap()
            .contains("name: reviewer")
    );
    let text = world.ok(&["agents", "show", "tester"]);
    assert!(
        text.contains("---\nname: tester") && text.contains("Test things."),
        "{text}"
    );
    let stderr = world.fails(&["agents", "show", "nobody"], 2);
    assert!(
        stderr.contains("no agent `nobody`") && stderr.contains("reviewer"),
        "{stderr}"
    );
}

#[test]
fn validate_names_every_problem_with_its_place() {
    let world = World::new();
    let dir = world.work().join(".claude/agents");
    let qwen = world.work().join(".qwen/agents");
    let cases: &[(&Path, &str, &[u8], &str)] = &[
        (
            &dir,
            "none.md",
            b"just text\n",
            "none.md:1:1: error: no frontmatter",
        ),
        (
            &dir,
            "open.md",
            b"---\nname: open\ndescription: d\n",
            "open.md:1:1: error: the frontmatter opened here never closes",
        ),
        (
            &dir,
            "tab.md",
            b"---\nname: tab\n\tdescription: d\n---\nx\n",
            "tab.md:3:1: error: a tab",
        ),
        (
            &dir,
            "yaml.md",
            b"---\nname: [yaml\n---\nx\n",
            "error: the frontmatter is not valid YAML",
        ),
        (
            &dir,
            "noname.md",
            b"---\ndescription: d\n---\nx\n",
            "noname.md:1:1: error: missing `name`",
        ),
        (
            &dir,
            "nodesc.md",
            b"---\nname: nodesc\ndescription: \"  \"\n---\nx\n",
            "nodesc.md:3:1: error: `description` is empty",
        ),
        (
            &dir,
            "caps.md",
            b"---\nname: Caps_Name\ndescription: d\n---\nx\n",
            "caps.md:2:1: error: the name `Caps_Name`",
        ),
        (
            &dir,
            "escape.md",
            b"---\nname: ../../etc\ndescription: d\n---\nx\n",
            "path separator",
        ),
        (
            &dir,
            "model.md",
            b"---\nname: model\ndescription: d\nmodel: gpt-5\n---\nx\n",
            "model.md:4:1: error: unknown model `gpt-5`",
        ),
        (
            &dir,
            "empty.md",
            b"---\nname: empty\ndescription: d\n---\n\n",
            "error: the body is empty",
        ),
        (
            &dir,
            "dup2.md",
            b"---\nname: dup\ndescription: d\n---\nx\n",
            "is named `dup` (",
        ),
        (
            &dir,
            "extra.md",
            b"---\nname: extra\ndescription: d\nmood: happy\n---\nx\n",
            "extra.md:4:1: warning: unknown field `mood`",
        ),
        (
            &dir,
            "bom.md",
            b"\xef\xbb\xbf---\nname: bom\ndescription: d\n---\nx\n",
            "bom.md:1:1: warning",
        ),
        (
            &dir,
            "crlf.md",
            b"---\r\nname: crlf\r\ndescription: d\r\n---\r\nx\r\n",
            "crlf.md:1:1: warning: CRLF",
        ),
        (
            &dir,
            "latin1.md",
            b"---\nname: latin\ndescription: caf\xe9\n---\nx\n",
            "latin1.md:3:17: error: not valid UTF-8",
        ),
        (
            &qwen,
            "string-tools.md",
            b"---\nname: st\ndescription: d\ntools: read_file, glob\n---\nx\n",
            "string-tools.md:4:1: error: `tools` is a string",
        ),
        (
            &qwen,
            "claude-tools.md",
            b"---\nname: ct\ndescription: d\ntools:\n  - Read\n---\nx\n",
            "error: `Read` is not a Qwen Code tool",
        ),
    ];
    for (dir, file, bytes, _) in cases {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    std::fs::write(
        dir.join("dup1.md"),
        b"---\nname: dup\ndescription: d\n---\nx\n",
    )
    .unwrap();
    let mut big = b"---\nname: big\ndescription: d\n---\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1 << 20));
    std::fs::write(dir.join("big.md"), &big).unwrap();
    let before: Vec<Vec<u8>> = cases
        .iter()
        .map(|(dir, file, ..)| std::fs::read(dir.join(file)).unwrap())
        .collect();

    let output = world.run(&["agents", "validate"]);
    assert_eq!(output.status.code(), Some(1), "errors make validate fail");
    let text = String::from_utf8(output.stdout).unwrap();
    for (_, file, _, needle) in cases {
        let line = text
            .lines()
            .find(|line| line.contains(&format!("/{file}:")))
            .unwrap_or_else(|| panic!("no diagnostic for {file}:\n{text}"));
        assert!(
            text.lines()
                .any(|line| line.contains(&format!("/{file}:")) && line.contains(needle)),
            "{file}: {line}"
        );
    }
    assert!(
        text.contains("big.md:5:1: warning: the body is 1024 KB"),
        "{text}"
    );
    let output = world.run(&[
        "--output",
        "json",
        "agents",
        "validate",
        dir.join("model.md").to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let json = &json["diagnostics"];
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["line"], 4);
    assert_eq!(json[0]["severity"], "error");
    let after: Vec<Vec<u8>> = cases
        .iter()
        .map(|(dir, file, ..)| std::fs::read(dir.join(file)).unwrap())
        .collect();
    assert_eq!(before, after, "validation rewrites nothing");
    let clean = world.dir.path().join("clean.md");
    std::fs::write(&clean, good("clean", "Fine")).unwrap();
    assert!(
        world
            .ok(&["agents", "validate", clean.to_str().unwrap()])
            .contains("0 errors, 0 warnings")
    );
}

#[test]
fn new_writes_from_templates_and_never_overwrites() {
    let world = World::new();
    let work = world.work();
    let out = world.ok(&[
        "agents",
        "new",
        "block-designer",
        "--description",
        "Designs \"blocks\": it's careful",
        "--template",
        "fastblocks-architect",
        "--model",
        "opus",
    ]);
    let path = work.join(".claude/agents/block-designer.md");
    assert!(out.contains(path.to_str().unwrap()), "{out}");
    let text = std::fs::read_to_string(&path).unwrap();
    for topic in [
        "Block interfaces",
        "Inter-block communication",
        "Block lifecycle",
    ] {
        assert!(text.contains(topic), "the template covers {topic}");
    }
    world.ok(&[
        "agents",
        "new",
        "cloud-runner",
        "--description",
        "Runs services",
        "--template",
        "splashsand-specialist",
        "--scope",
        "user",
    ]);
    let user = world.dir.path().join("home/.claude/agents/cloud-runner.md");
    let text = std::fs::read_to_string(&user).unwrap();
    for topic in ["Revisions", "Traffic", "Auto-scaling", "Multi-region"] {
        assert!(text.contains(topic), "the template covers {topic}");
    }
    assert!(
        world.ok(&["agents", "validate"]).contains("0 errors"),
        "what new writes validates"
    );
    let shown = world.json(&["agents", "show", "block-designer"]);
    assert_eq!(shown["description"], "Designs \"blocks\": it's careful");
    assert_eq!(shown["model"], "opus");

    let before = std::fs::read(&path).unwrap();
    let stderr = world.fails(
        &["agents", "new", "block-designer", "--description", "other"],
        2,
    );
    assert!(
        stderr.contains("already exists") && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    for bad in ["../escape", "a/b", "Upper", ""] {
        let stderr = world.fails(&["agents", "new", bad, "--description", "d"], 2);
        assert!(stderr.contains("name"), "{bad}: {stderr}");
    }
    assert!(
        !world.dir.path().join("escape.md").exists() && !work.join(".claude/escape.md").exists()
    );
    let stderr = world.fails(
        &[
            "agents",
            "new",
            "x",
            "--description",
            "d",
            "--template",
            "nope",
        ],
        2,
    );
    assert!(
        stderr.contains("no template `nope`") && stderr.contains("splashsand-specialist"),
        "{stderr}"
    );
}

#[test]
fn export_and_sync_carry_agents_to_claude_json_and_qwen() {
    let world = World::new();
    let work = world.work();
    agent(
        &work.join(".claude/agents/reviewer.md"),
        "---\nname: reviewer\ndescription: Reviews\nmodel: sonnet\ntools: Read, Grep, Bash, WebSearch, mcp__github__search\n---\nReview well.\n",
    );
    agent(
        &work.join(".claude/agents/writer.md"),
        &good("writer", "Writes"),
    );
    agent(
        &work.join(".qwen/agents/hand-made.md"),
        "---\nname: writer\ndescription: Hand-made Qwen writer\n---\nMine.\n",
    );
    std::fs::rename(
        work.join(".qwen/agents/hand-made.md"),
        work.join(".qwen/agents/writer.md"),
    )
    .unwrap();

    let exported: serde_json::Value =
        serde_json::from_str(&world.ok(&["agents", "export", "--format", "claude-json"])).unwrap();
    assert_eq!(exported["reviewer"]["prompt"], "Review well.\n");
    assert_eq!(exported["reviewer"]["model"], "sonnet");
    assert_eq!(
        exported["writer"]["tools"],
        serde_json::json!(["Read", "Grep"])
    );

    let synced = world.json(&["agents", "sync", "qwen"]);
    let reviewer = synced
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "reviewer")
        .unwrap();
    assert_eq!(reviewer["written"], true);
    assert_eq!(reviewer["unmapped_tools"], serde_json::json!(["WebSearch"]));
    let writer = synced
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "writer")
        .unwrap();
    assert_eq!(
        writer["written"], false,
        "a hand-made Qwen agent is left alone"
    );
    assert_eq!(
        std::fs::read_to_string(work.join(".qwen/agents/writer.md")).unwrap(),
        "---\nname: writer\ndescription: Hand-made Qwen writer\n---\nMine.\n"
    );
    let text = std::fs::read_to_string(work.join(".qwen/agents/reviewer.md")).unwrap();
    assert!(
        text.contains(
            "tools:\n- read_file\n- grep_search\n- run_shell_command\n- mcp__github__search\n"
        ),
        "{text}"
    );
    assert!(
        world
            .ok(&[
                "agents",
                "validate",
                work.join(".qwen/agents").to_str().unwrap()
            ])
            .contains("0 errors")
    );
    // Syncing again replaces only its own files.
    assert_eq!(world.json(&["agents", "sync", "qwen"])[0]["written"], true);
}

/// The agents' names in an MCP `prompts/list` (without the built-in `start-session`), asked of
/// `mahavishnu mcp` over stdio.
fn prompt_names(world: &World) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = world.spawn_piped(&["mcp"]);
    let mut stdin = child.stdin.take().unwrap();
    for request in [
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}),
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "prompts/list"}),
    ] {
        writeln!(stdin, "{request}").unwrap();
    }
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut names = None;
    for line in stdout.lines() {
        let message: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if message["id"] == 2 {
            let prompts = message["result"]["prompts"].as_array().cloned();
            let prompts = prompts.unwrap_or_else(|| panic!("no prompts: {message}"));
            names = Some(
                prompts
                    .iter()
                    .map(|p| p["name"].as_str().unwrap().to_string())
                    // The built-in prompt, beside the agents'.
                    .filter(|name| name != "start-session")
                    .collect(),
            );
            break;
        }
    }
    drop(stdin);
    child.wait().unwrap();
    names.expect("the server answers prompts/list")
}

/// Regression: after `agents sync qwen` every agent was listed twice, once as the Claude Code agent and
/// once as the copy sync wrote, in `agents list`, in the names an error offers, and as MCP prompts.
#[test]
fn a_synced_agent_is_listed_once() {
    let world = World::new();
    let work = world.work();
    for name in ["block-designer", "code-reviewer"] {
        agent(
            &work.join(format!(".claude/agents/{name}.md")),
            &good(name, "Works"),
        );
    }
    world.ok(&["agents", "sync", "qwen"]);
    assert!(work.join(".qwen/agents/code-reviewer.md").is_file());

    let names = |listed: serde_json::Value| -> Vec<String> {
        let agents = listed.as_array().unwrap().iter();
        agents
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    };
    let once = ["block-designer", "code-reviewer"].map(String::from);
    let listed = world.json(&["agents", "list"])["agents"].clone();
    assert_eq!(names(listed.clone()), once, "{listed}");
    assert_eq!(
        listed[0]["scope"], "project",
        "the Claude Code agent stands"
    );
    let stderr = world.fails(&["agents", "show", "nosuch"], 2);
    assert!(
        stderr.contains("known agents: block-designer, code-reviewer."),
        "{stderr}"
    );
    assert_eq!(prompt_names(&world), once);

    // A copy whose Claude Code agent is gone is the only definition left, so it is listed.
    std::fs::remove_file(work.join(".claude/agents/code-reviewer.md")).unwrap();
    let listed = world.json(&["agents", "list"])["agents"].clone();
    assert_eq!(names(listed.clone()), once, "{listed}");
    assert_eq!(listed[1]["scope"], "qwen-project", "{listed}");
}

/// An agent whose CLI never gets ready: the error names its session and says it was left running, or
/// that it was closed with --close-on-failure; no session runs unseen.
#[test]
fn an_agent_run_that_times_out_names_its_session_and_what_became_of_it() {
    let world = World::new();
    let agents = world.work().join(".claude/agents");
    std::fs::create_dir_all(&agents).unwrap();
    std::fs::write(
        agents.join("slow.md"),
        "---\nname: slow\ndescription: never ready\n---\nBe slow.\n",
    )
    .unwrap();
    // A `qwen` that never shows its prompt.
    let silent = world.dir.path().join("silent-cli");
    std::fs::write(&silent, "#!/bin/sh\nexec sleep 300\n").unwrap();
    std::fs::set_permissions(&silent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!(
            "[profiles.qwen]\nprogram = {:?}\n",
            silent.display().to_string()
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "agents",
            "run",
            "slow",
            "--prompt",
            "go",
            "--target",
            "pty",
            "--wait",
            "--timeout",
            "1s",
        ];
        args.extend(extra);
        world.fails(&args, 1)
    };
    let left = run(&[]);
    let live: Vec<String> = world.json(&["terminal", "list"])["instances"]
        .clone()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(
        left.contains(&live[0]) && left.contains("left running"),
        "{left}"
    );
    world.ok(&["terminal", "close", &live[0], "--grace", "200ms"]);

    let closed = run(&["--close-on-failure"]);
    assert!(closed.contains("was closed"), "{closed}");
    assert!(
        world.json(&["terminal", "list"])["instances"]
            .clone()
            .as_array()
            .unwrap()
            .is_empty()
    );
}
