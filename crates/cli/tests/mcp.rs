//! The MCP server and the HTTP API, driven by real clients: the official Python MCP client, the MCP
//! Inspector CLI, and plain HTTP.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{World, binary, git, qwen, succeeded, target_named};

const TOKEN: &str = "test-token-0123456789abcdef";

/// How many tools (and `/v1` operations) the server offers.
const TOOLS: usize = 66;

/// Where the `mcp` Python package is installed: `MAHAVISHNU_TEST_PYTHONPATH`, set by `scripts/test`.
fn python_path() -> PathBuf {
    let path = std::env::var_os("MAHAVISHNU_TEST_PYTHONPATH").map(PathBuf::from).expect(
        "MAHAVISHNU_TEST_PYTHONPATH is not set: run the tests with `scripts/test`, which installs the \
         Python MCP client",
    );
    assert!(
        path.join("mcp").is_dir(),
        "no mcp package in {}",
        path.display()
    );
    path
}

/// The MCP Inspector CLI: `MAHAVISHNU_TEST_INSPECTOR`, set by `scripts/test`.
fn inspector() -> PathBuf {
    let path = std::env::var_os("MAHAVISHNU_TEST_INSPECTOR").map(PathBuf::from).expect(
        "MAHAVISHNU_TEST_INSPECTOR is not set: run the tests with `scripts/test`, which installs the \
         MCP Inspector",
    );
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

/// A world whose work directory is a git project with one agent.
fn project_world() -> World {
    let world = World::new();
    let work = world.work();
    git(&work, &["init", "-q"]);
    std::fs::create_dir_all(work.join(".claude/agents")).unwrap();
    std::fs::write(
        work.join(".claude/agents/reviewer.md"),
        "---\nname: reviewer\ndescription: Reviews code for bugs\n---\nReview code for bugs, one \
         finding per line.\n",
    )
    .unwrap();
    std::fs::write(work.join("notes.txt"), "first\n").unwrap();
    git(&work, &["add", "notes.txt"]);
    support::git_commit(&work, &["-m", "first"]);
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        format!(
            "[worktree]\ndir = {:?}\n\n[workflows.schema]\nsweep = {{ tag = \"schema\", command = [\"true\"] }}\n",
            world.dir.path().join("worktrees").display().to_string()
        ),
    )
    .unwrap();
    world
}

/// `mahavishnu serve` in `world`, on a free loopback port.
struct Server {
    child: Child,
    address: String,
    /// What serve printed on stderr up to the line announcing its address, that one included.
    announced: String,
}

impl Server {
    fn start(world: &World, extra: &[&str]) -> Server {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend(extra);
        let mut child = spawn_serve(world, &args);
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut announced = String::new();
        let address = loop {
            let mut line = String::new();
            stderr.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "serve ended before serving: {announced}");
            announced.push_str(&line);
            if line.contains("serving MCP at") {
                break line
                    .split("http://")
                    .nth(1)
                    .and_then(|rest| rest.split('/').next())
                    .unwrap_or_else(|| panic!("serve announces its address: {line:?}"))
                    .to_string();
            }
        };
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Server {
            child,
            address,
            announced,
        }
    }

    /// Started without `--token`: the token comes from the state directory's file.
    fn start_with_token_file(world: &World, extra: &[&str]) -> (Server, String) {
        let server = Server::start(world, extra);
        let token = std::fs::read_to_string(world.state_dir().join("serve-token"))
            .expect("serve made a token file")
            .trim()
            .to_string();
        (server, token)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        http_request(&self.address, method, path, headers, body)
    }

    fn stop(mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mahavishnu serve ARGS`, started with stderr piped.
fn spawn_serve(world: &World, args: &[&str]) -> Child {
    world
        .command(&[&["serve"], args].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mahavishnu serve")
}

/// Runs `mahavishnu serve ARGS`, which must refuse to start with exit code `code`; returns stderr. A
/// server that starts anyway is stopped after a while and fails the test, instead of serving forever.
fn serve_refuses(world: &World, args: &[&str], code: i32) -> String {
    let mut child = spawn_serve(world, args);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.and_then(|status| status.code()),
        Some(code),
        "serve {args:?} should have refused to start: {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

/// One HTTP/1.1 request to `address`; returns the status and the body. `Host` and `Content-Type:
/// application/json` are sent unless `headers` name them; a header given with an empty value is left
/// out.
fn http_request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("Host: {}\r\n", address));
    }
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers.iter().filter(|(_, value)| !value.is_empty()) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    // A server may answer (413) and close before it has read a huge body.
    let _ = stream.write_all(request.as_bytes());
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

fn run_scenario(world: &World, args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/scenario.py");
    let output = world
        .program("python3")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", python_path())
        .output()
        .expect("run python3");
    let output = succeeded("the Python MCP client", output);
    let last = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&last).expect("the scenario prints its report")
}

/// What the tools returned is what the CLI prints with `--output json`.
fn assert_same_shapes_as_the_cli(world: &World, report: &Value, session: &str) {
    assert_eq!(
        report["session_status"],
        world.json(&["session", "status", "--id", session]),
        "session_status"
    );
    assert_eq!(
        report["agent"],
        world.json(&["agents", "show", "reviewer"]),
        "agent_get"
    );
    assert_eq!(
        report["checkpoints"],
        world.json(&["checkpoint", "list"]),
        "checkpoint_list"
    );
    let id = report["ids"][0].as_str().unwrap();
    let shown = world.json(&["terminal", "show", id]);
    let mut keys: Vec<&String> = shown.as_object().unwrap().keys().collect();
    keys.sort();
    let reported: Vec<&str> = report["instance_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        keys, reported,
        "instance_status has the fields of terminal show"
    );
    assert_eq!(
        shown["state"], "closed",
        "the session closed through MCP is closed"
    );
    let capture = &report["capture"];
    assert_eq!(capture["id"], id);
    assert_eq!(capture.as_object().unwrap().len(), 2, "{capture}");
}

#[test]
fn the_python_client_drives_the_stdio_server() {
    let world = project_world();
    let work = std::fs::canonicalize(world.work()).unwrap();
    let report = run_scenario(
        &world,
        &["stdio", binary().to_str().unwrap(), work.to_str().unwrap()],
    );
    assert_eq!(report["tools"].as_array().unwrap().len(), TOOLS);
    assert_same_shapes_as_the_cli(&world, &report, "mcp-stdio");
}

#[test]
fn the_python_client_drives_the_http_server_with_a_token() {
    let world = project_world();
    let work = std::fs::canonicalize(world.work()).unwrap();
    let server = Server::start(&world, &["--token", TOKEN]);
    let report = run_scenario(
        &world,
        &["http", &server.url("/mcp"), work.to_str().unwrap(), TOKEN],
    );
    assert_same_shapes_as_the_cli(&world, &report, "mcp-http");
    let (status, body) = server.request("GET", "/healthz", &[], "");
    assert_eq!((status, body.contains("ok")), (200, true), "{body}");
    assert!(server.stop().success(), "serve ends cleanly on SIGTERM");
}

#[test]
fn http_checks_tokens_and_hosts() {
    let world = project_world();
    let server = Server::start(
        &world,
        &["--token", TOKEN, "--allowed-host", "proxy.example"],
    );
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];

    let (status, _) = server.request("GET", "/healthz", &[], "");
    assert_eq!(status, 200, "health needs no token");
    for headers in [
        &[][..],
        &[("Authorization", "Bearer wrong-token-0123456789")][..],
    ] {
        let (status, body) = server.request("POST", "/v1/targets_list", headers, "{}");
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("bearer token"), "{body}");
        let (status, _) = server.request("POST", "/mcp", headers, "{}");
        assert_eq!(status, 401, "MCP needs the token too");
    }
    let (status, body) = server.request("POST", "/v1/targets_list", &auth, "");
    assert_eq!(status, 200, "{body}");
    let targets: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(target_named(&targets, "pty")["kind"], "pty");

    // `--output json` prints exactly what `/v1` returns.
    let id = world.launch(&["shell", "--target", "pty"]).remove(0);
    world.ok(&["terminal", "wait", &id, "--waiting", "--timeout", "20"]);
    let (status, body) = server.request("POST", "/v1/terminal_list", &auth, r#"{"all":true}"#);
    assert_eq!(status, 200, "{body}");
    let over_http: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(over_http, world.json(&["terminal", "list", "--all"]));
    let (_, body) = server.request(
        "POST",
        "/v1/instance_status",
        &auth,
        &format!(r#"{{"id":"{id}"}}"#),
    );
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown, world.json(&["terminal", "show", &id]));
    world.ok(&["terminal", "close", &id]);

    for (host, want) in [("evil.example:8677", 403), ("proxy.example", 200)] {
        let (status, body) =
            server.request("POST", "/v1/targets_list", &[auth[0], ("Host", host)], "");
        assert_eq!(status, want, "Host {host}: {body}");
        if want == 403 {
            assert!(body.contains("allowed_hosts"), "{body}");
        }
    }

    let (status, body) = server.request("GET", "/v1", &auth, "");
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["operations"].as_array().unwrap().len(), TOOLS);
    let (status, body) = server.request("POST", "/v1/no_such", &auth, "{}");
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.request("POST", "/v1/terminal_capture", &auth, "{not json");
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.request(
        "POST",
        "/v1/terminal_capture",
        &auth,
        r#"{"id":"pty:mv-none"}"#,
    );
    assert_eq!(status, 404, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    let cli = world.fails(&["terminal", "capture", "pty:mv-none"], 1);
    assert_eq!(
        format!("error: {}\n", error["error"].as_str().unwrap()),
        cli,
        "the API fails with the CLI's message"
    );

    // The same operation through the API and the CLI returns the same JSON.
    let (status, body) = server.request(
        "POST",
        "/v1/terminal_launch",
        &auth,
        r#"{"profile":"shell","target":"pty","count":3}"#,
    );
    assert_eq!(status, 200, "{body}");
    let launched: Value = serde_json::from_str(&body).unwrap();
    let id = launched["instances"][0]["id"].as_str().unwrap().to_string();
    let (_, body) = server.request(
        "POST",
        "/v1/instance_status",
        &auth,
        &json!({"id": id}).to_string(),
    );
    let via_api: Value = serde_json::from_str(&body).unwrap();
    let via_cli = world.json(&["terminal", "show", &id]);
    assert_eq!(via_api["id"], via_cli["id"]);
    assert_eq!(via_api["cwd"], via_cli["cwd"]);
    assert_eq!(via_api["created_at"], via_cli["created_at"]);

    // terminal_wait matches what is new since the last input, or with `anywhere` the whole screen.
    let wait = |body: Value| server.request("POST", "/v1/terminal_wait", &auth, &body.to_string());
    world.ok(&["terminal", "send", &id, "echo OLD-$((1+1))"]);
    let (status, body) = wait(json!({"id": id, "pattern": "^OLD-2$", "timeout": 20}));
    assert_eq!(status, 200, "{body}");
    world.ok(&["terminal", "send", &id, "true"]);
    let (status, body) = wait(json!({"id": id, "pattern": "^OLD-2$", "timeout": 0.5}));
    assert_eq!(status, 504, "the old line is not new: {body}");
    assert!(
        body.contains("OLD-2"),
        "the timeout shows the screen: {body}"
    );
    let old = json!({"id": id, "pattern": "^OLD-2$", "anywhere": true, "timeout": 20});
    let (status, body) = wait(old);
    assert_eq!(status, 200, "{body}");

    // A client that goes away mid-call, and one that sends too much: the server serves on.
    let mut gone = TcpStream::connect(&server.address).unwrap();
    let waiting = json!({"id": id, "pattern": "never-appears", "timeout": 30}).to_string();
    write!(
        gone,
        "POST /v1/terminal_wait HTTP/1.1\r\nHost: {}\r\nAuthorization: {bearer}\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\n\r\n{waiting}",
        server.address,
        waiting.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(gone);
    let huge = json!({"id": id, "text": "x".repeat(3 * 1024 * 1024)}).to_string();
    let (status, _) = server.request("POST", "/v1/terminal_send", &auth, &huge);
    assert_eq!(status, 413, "a body over the limit is refused");
    let (status, body) = server.request(
        "POST",
        "/v1/instance_status",
        &auth,
        &json!({"id": id}).to_string(),
    );
    assert_eq!(status, 200, "{body}");

    // 100 concurrent calls: every one answered, none lost.
    let handles: Vec<_> = (0..100)
        .map(|n| {
            let address = server.address.clone();
            let body = json!({"id": id, "lines": 1 + n % 5}).to_string();
            std::thread::spawn(move || {
                let bearer = format!("Bearer {TOKEN}");
                let headers = [("Authorization", bearer.as_str())];
                http_request(&address, "POST", "/v1/terminal_capture", &headers, &body).0
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        world.json(&["terminal", "list"])["instances"]
            .clone()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

/// The MCP Inspector's CLI mode, over stdio and over HTTP.
#[test]
fn the_inspector_cli_lists_calls_reads_and_prompts() {
    let world = project_world();
    let inspector = inspector();
    let run = |args: &[&str]| -> Value {
        let output = world
            .program(&inspector)
            .arg("--cli")
            .args(args)
            .output()
            .expect("run the MCP Inspector");
        let output = succeeded(&format!("inspector {args:?}"), output);
        serde_json::from_slice(&output.stdout).expect("the inspector prints JSON")
    };
    let binary = binary();
    let stdio = |method: &[&str]| -> Value {
        let mut args = vec![binary.to_str().unwrap(), "mcp"];
        args.extend(method);
        run(&args)
    };

    let tools = stdio(&["--method", "tools/list"]);
    assert_eq!(tools["tools"].as_array().unwrap().len(), TOOLS);
    let launched = stdio(&[
        "--method",
        "tools/call",
        "--tool-name",
        "terminal_launch",
        "--tool-arg",
        "profile=shell",
        "--tool-arg",
        "target=pty",
    ]);
    assert_eq!(launched["isError"], false, "{launched}");
    let id = launched["structuredContent"]["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let resources = stdio(&["--method", "resources/list"]);
    let uri = format!("mahavishnu://instances/{id}/screen");
    assert!(resources.to_string().contains(&uri), "{resources}");
    let read = stdio(&["--method", "resources/read", "--uri", &uri]);
    assert!(read["contents"][0]["text"].is_string(), "{read}");
    let prompt = stdio(&[
        "--method",
        "prompts/get",
        "--prompt-name",
        "reviewer",
        "--prompt-args",
        "task=Check main.rs",
    ]);
    assert!(prompt.to_string().contains("Check main.rs"), "{prompt}");

    // The Inspector's CLI sends no headers, so it gets a server without a token (loopback only).
    let server = Server::start(&world, &["--no-token"]);
    let url = server.url("/mcp");
    let listed = run(&[
        &url,
        "--transport",
        "http",
        "--method",
        "tools/call",
        "--tool-name",
        "terminal_list",
    ]);
    assert!(
        listed.to_string().contains(&id),
        "the HTTP server sees the same sessions: {listed}"
    );
}

/// Nothing but protocol messages reaches stdout, even when hooks and sessions print.
#[test]
fn the_stdio_server_writes_only_protocol_to_stdout() {
    let world = project_world();
    std::fs::write(
        world.work().join(".mahavishnu.toml"),
        "[[hooks.SessionStart]]\ncommand = \"echo HOOK-SAYS-HELLO; echo to-stderr >&2\"\n",
    )
    .unwrap();
    world.ok(&["trust"]);
    let requests = [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"session_start","arguments":{"id":"raw-1"}}}),
        json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"terminal_launch","arguments":{"profile":"shell","target":"pty"}}}),
        json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"no_such_tool"}}),
        json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"terminal_send","arguments":"not an object"}}),
    ];
    let mut child = world.spawn_piped(&["mcp"]);
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for request in &requests {
        writeln!(stdin, "{request}").unwrap();
    }
    let mut answered = std::collections::BTreeMap::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let message: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout carries only JSON-RPC, not {line:?}: {e}"));
        assert_eq!(message["jsonrpc"], "2.0", "{line}");
        if let Some(id) = message["id"].as_i64() {
            answered.insert(id, message);
        }
        if answered.len() == 5 {
            break;
        }
    }
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the server ends when the client closes stdin"
    );
    let started = &answered[&2]["result"];
    assert_eq!(started["isError"], false, "{started}");
    assert_eq!(
        started["structuredContent"]["runs"][0]["success"], true,
        "{started}"
    );
    assert_eq!(
        answered[&4]["error"]["code"], -32602,
        "an unknown tool is invalid params"
    );
    let not_object = &answered[&5];
    assert!(
        not_object.get("error").is_some() || not_object["result"]["isError"] == true,
        "{not_object}"
    );
}

#[test]
fn mcp_install_registers_the_server_idempotently_and_removes_it() {
    let world = project_world();
    let work = world.work();
    std::fs::write(
        work.join(".mcp.json"),
        "{\n  \"mcpServers\": {\n    \"other\": { \"command\": \"other-server\" }\n  }\n}\n",
    )
    .unwrap();
    let before = std::fs::read_to_string(work.join(".mcp.json")).unwrap();
    world.ok(&["mcp", "install", "--client", "claude"]);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join(".mcp.json")).unwrap()).unwrap();
    assert_eq!(written["mcpServers"]["other"]["command"], "other-server");
    let ours = &written["mcpServers"]["mahavishnu"];
    assert_eq!(ours["args"], json!(["mcp"]));
    assert_eq!(ours["command"], binary().to_str().unwrap());
    let again = world.ok(&["mcp", "install", "--client", "claude"]);
    assert!(again.contains("already up to date"), "{again}");
    world.ok(&["mcp", "install", "--client", "claude", "--remove"]);
    let after: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join(".mcp.json")).unwrap()).unwrap();
    assert_eq!(after, serde_json::from_str::<Value>(&before).unwrap());

    world.ok(&[
        "mcp",
        "install",
        "--client",
        "qwen",
        "--http",
        "https://mv.example:8677/mcp",
    ]);
    let qwen: Value =
        serde_json::from_str(&std::fs::read_to_string(work.join(".qwen/settings.json")).unwrap())
            .unwrap();
    let entry = &qwen["mcpServers"]["mahavishnu"];
    assert_eq!(entry["httpUrl"], "https://mv.example:8677/mcp");
    assert_eq!(
        entry["headers"]["Authorization"], "Bearer ${MAHAVISHNU_TOKEN}",
        "the client sends the token from its environment; the file never holds it"
    );

    let home = world.dir.path().join("home");
    std::fs::write(home.join(".claude.json"), "{\"numStartups\": 3}").unwrap();
    let dry = world.ok(&[
        "mcp",
        "install",
        "--client",
        "claude",
        "--scope",
        "user",
        "--dry-run",
    ]);
    assert!(dry.contains("would change") && dry.contains("+ "), "{dry}");
    let said = world.ok(&[
        "mcp",
        "install",
        "--client",
        "claude",
        "--scope",
        "user",
        "--http",
        "http://127.0.0.1:8677/mcp",
    ]);
    assert!(
        said.contains("export MAHAVISHNU_TOKEN=$(mahavishnu serve --print-token)"),
        "install says how the client gets the token: {said}"
    );
    let user: Value =
        serde_json::from_str(&std::fs::read_to_string(home.join(".claude.json")).unwrap()).unwrap();
    assert_eq!(user["numStartups"], 3);
    assert_eq!(
        user["mcpServers"]["mahavishnu"],
        json!({
            "type": "http",
            "url": "http://127.0.0.1:8677/mcp",
            "headers": {"Authorization": "Bearer ${MAHAVISHNU_TOKEN}"},
        }),
        "on loopback too the client sends the token, from its environment"
    );

    std::fs::write(work.join(".mcp.json"), "{ broken").unwrap();
    let error = world.fails(&["mcp", "install", "--client", "claude"], 2);
    assert!(error.contains("not valid JSON"), "{error}");
    assert_eq!(
        std::fs::read_to_string(work.join(".mcp.json")).unwrap(),
        "{ broken"
    );
}

/// Header names and values of a request.
type Headers<'a> = &'a [(&'a str, &'a str)];

/// A shell launched through the API with `bash -c "touch MARKER"`: what a web page would run.
fn launch_touching(marker: &std::path::Path) -> String {
    json!({
        "profile": "shell",
        "target": "pty",
        "args": ["-c", format!("touch {}", marker.display())],
    })
    .to_string()
}

/// The attack of the hardening issue: a web page posts `text/plain` (or a form) cross-site to
/// `/v1/terminal_launch`, which browsers send without asking first. Nothing may run, whether serve has
/// its default token or runs with `--no-token`.
#[test]
fn a_web_page_cannot_launch_commands_through_serve() {
    let world = project_world();
    let marker = world.dir.path().join("pwned");
    let attack = launch_touching(&marker);
    let evil = ("Origin", "http://evil.example");
    let posts: [(&str, Headers, String); 4] = [
        (
            "text/plain",
            &[("Content-Type", "text/plain"), evil],
            attack.clone(),
        ),
        (
            "a form",
            &[("Content-Type", "application/x-www-form-urlencoded"), evil],
            format!("{attack}=x"),
        ),
        (
            "multipart",
            &[("Content-Type", "multipart/form-data; boundary=b"), evil],
            format!(
                "--b\r\nContent-Disposition: form-data; name=\"{attack}\"\r\n\r\nx\r\n--b--\r\n"
            ),
        ),
        ("JSON from a foreign page", &[evil], attack.clone()),
    ];

    // As started by default: a token is required on loopback too.
    let server = Server::start(&world, &[]);
    for (what, headers, body) in &posts {
        let (status, body) = server.request("POST", "/v1/terminal_launch", headers, body);
        assert_eq!(status, 403, "{what}: {body}");
        assert!(body.contains("Origin"), "{what}: {body}");
    }
    drop(server);

    // Without a token, the Origin and content-type rules alone hold.
    let server = Server::start(&world, &["--no-token"]);
    for (what, headers, body) in &posts {
        let (status, body) = server.request("POST", "/v1/terminal_launch", headers, body);
        assert_eq!(status, 403, "{what}: {body}");
    }
    // A page of the server's own origin, or a client without Origin, still has to send JSON.
    let own = format!("http://{}", server.address);
    for headers in [
        &[("Content-Type", "text/plain")][..],
        &[("Content-Type", "text/plain"), ("Origin", own.as_str())][..],
        &[("Content-Type", "application/x-www-form-urlencoded")][..],
        &[("Content-Type", "")][..],
    ] {
        let (status, body) = server.request("POST", "/v1/terminal_launch", headers, &attack);
        assert_eq!(status, 415, "{headers:?}: {body}");
        assert!(
            body.contains("application/json"),
            "the error names the fix: {body}"
        );
        let (status, _) = server.request("POST", "/mcp", headers, &attack);
        assert_eq!(status, 415, "/mcp too, {headers:?}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!marker.exists(), "a refused request ran its command");
    assert_eq!(
        world.json(&["terminal", "list"])["instances"].clone(),
        json!([]),
        "no session started"
    );

    // The same request as JSON without a foreign Origin runs: the refusals above are real ones.
    let (status, body) = server.request(
        "POST",
        "/v1/terminal_launch",
        &[("Content-Type", "application/json; charset=utf-8")],
        &attack,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        support::eventually_exists(&marker, Duration::from_secs(10)),
        "the accepted request ran its command"
    );
}

fn initialize_request() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}})
    .to_string()
}

/// Every route refuses a foreign `Origin`, `/mcp` included (as the MCP specification asks); the server's
/// own origin and the configured ones pass.
#[test]
fn foreign_origins_are_refused_on_every_route() {
    let world = project_world();
    std::fs::write(
        world.dir.path().join("home/config.toml"),
        "[serve]\nallowed_origins = [\"https://config.example\"]\n",
    )
    .unwrap();
    let server = Server::start(
        &world,
        &[
            "--token",
            TOKEN,
            "--allowed-origin",
            "https://flag.example:8443",
            "--allowed-host",
            "proxy.example",
        ],
    );
    let bearer = format!("Bearer {TOKEN}");
    let initialize = initialize_request();
    let mcp = |origin: &str, host: &str| {
        server.request(
            "POST",
            "/mcp",
            &[
                ("Authorization", bearer.as_str()),
                ("Accept", "application/json, text/event-stream"),
                ("Origin", origin),
                ("Host", host),
            ],
            &initialize,
        )
    };
    let own = server.address.clone();
    for origin in [
        "http://evil.example",
        "null",
        "http://localhost:3000",
        "https://flag.example",
        &format!("http://{own}.evil.example"),
    ] {
        let (status, body) = mcp(origin, &own);
        assert_eq!(status, 403, "Origin {origin}: {body}");
        assert!(
            body.contains("allowed_origins"),
            "the error names the fix: {body}"
        );
    }
    for (origin, host) in [
        (format!("http://{own}"), own.clone()),
        ("https://flag.example:8443".into(), own.clone()),
        ("https://config.example".into(), own.clone()),
        ("http://proxy.example".into(), "proxy.example".into()),
    ] {
        let (status, body) = mcp(&origin, &host);
        assert_eq!(status, 200, "Origin {origin} to Host {host}: {body}");
        assert!(body.contains("serverInfo"), "{body}");
    }

    let evil = [
        ("Authorization", bearer.as_str()),
        ("Origin", "http://evil.example"),
    ];
    for (method, path, body) in [
        ("GET", "/healthz", ""),
        ("GET", "/v1", ""),
        ("POST", "/v1/targets_list", "{}"),
        ("GET", "/mcp", ""),
        ("OPTIONS", "/v1/terminal_launch", ""),
    ] {
        let (status, answer) = server.request(method, path, &evil, body);
        assert_eq!(status, 403, "{method} {path}: {answer}");
    }
    let (status, body) = server.request("GET", "/v1", &[evil[0]], "");
    assert_eq!(
        status, 200,
        "a GET without a body needs no content type: {body}"
    );
}

/// `serve` makes a private token on first use, keeps it, and wants it from every client, on loopback
/// too; `--print-token` gives it to scripts.
#[test]
fn serve_requires_a_token_it_makes_on_first_use() {
    use std::os::unix::fs::PermissionsExt;
    let world = project_world();
    let (server, token) = Server::start_with_token_file(&world, &[]);
    let file = world.state_dir().join("serve-token");
    assert!(
        server.announced.contains(&file.display().to_string()),
        "serve says where the token is: {}",
        server.announced
    );
    assert!(
        !server.announced.contains(&token),
        "serve never prints the token"
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    assert_eq!(token.len(), 64, "{token}");

    let (status, body) = server.request("POST", "/v1/targets_list", &[], "{}");
    assert_eq!(status, 401, "loopback needs the token too: {body}");
    let (status, _) = server.request("POST", "/mcp", &[], &initialize_request());
    assert_eq!(status, 401);
    let list_targets = |server: &Server, token: &str| {
        let bearer = format!("Bearer {token}");
        server.request(
            "POST",
            "/v1/targets_list",
            &[("Authorization", &bearer)],
            "{}",
        )
    };
    let (status, body) = list_targets(&server, &token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(world.ok(&["serve", "--print-token"]).trim(), token);
    assert!(server.stop().success());

    let (server, again) = Server::start_with_token_file(&world, &[]);
    assert_eq!(again, token, "the second start reuses the token");
    let (status, body) = list_targets(&server, &token);
    assert_eq!(status, 200, "{body}");
    drop(server);

    // A token given explicitly wins over the file.
    let server = Server::start(&world, &["--token", TOKEN]);
    assert_eq!(
        list_targets(&server, &token).0,
        401,
        "the file's token is not the given one"
    );
    assert_eq!(list_targets(&server, TOKEN).0, 200);
}

/// A token file someone else could have planted or read is refused, and nothing is written through it.
#[test]
fn a_planted_or_readable_token_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let world = project_world();
    world.ok(&["terminal", "list"]); // makes the state directory
    let file = world.state_dir().join("serve-token");

    let chosen = world.dir.path().join("chosen-token");
    std::fs::write(&chosen, "attacker-chose-this-token-0123456789\n").unwrap();
    std::fs::set_permissions(&chosen, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&chosen, &file).unwrap();
    let error = serve_refuses(&world, &["--listen", "127.0.0.1:0"], 1);
    assert!(
        error.contains("symbolic link") && error.contains("rm "),
        "{error}"
    );
    let error = serve_refuses(&world, &["--print-token"], 1);
    assert!(error.contains("symbolic link"), "{error}");
    assert_eq!(
        std::fs::read_to_string(&chosen).unwrap(),
        "attacker-chose-this-token-0123456789\n",
        "the link's target is untouched"
    );

    // A dangling link: following it would write the new token where the planter can read it.
    let elsewhere = world.dir.path().join("stolen-token");
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    let error = serve_refuses(&world, &["--listen", "127.0.0.1:0"], 1);
    assert!(error.contains("symbolic link"), "{error}");
    assert!(!elsewhere.exists(), "nothing was written through the link");

    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, "readable-by-everyone-0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = serve_refuses(&world, &["--listen", "127.0.0.1:0"], 1);
    assert!(
        error.contains("0644") && error.contains("chmod 600"),
        "{error}"
    );
}

/// `--no-token` gives up the token on loopback only, and says what that means.
#[test]
fn no_token_is_for_loopback_only() {
    let world = project_world();
    let error = serve_refuses(&world, &["--listen", "0.0.0.0:0", "--no-token"], 2);
    assert!(error.contains("loopback only"), "{error}");
    let error = serve_refuses(&world, &["--listen", "[::]:0", "--no-token"], 2);
    assert!(error.contains("loopback only"), "{error}");

    let server = Server::start(&world, &["--no-token"]);
    assert!(
        server.announced.contains("any process on this machine"),
        "--no-token warns: {}",
        server.announced
    );
    let (status, body) = server.request("POST", "/v1/targets_list", &[], "{}");
    assert_eq!(status, 200, "{body}");
    assert!(
        !world.state_dir().join("serve-token").exists(),
        "no token is made for a server that uses none"
    );
}

/// A burst of 200 connections while the server is busy: the kernel holds every one until the server
/// accepts it. With the default listen backlog of 128 the SYNs of the rest are dropped, and each of
/// those clients waits a second before it tries again.
#[test]
fn a_burst_of_200_connections_waits_for_no_syn_retry() {
    let world = project_world();
    let server = Server::start(&world, &["--token", TOKEN]);
    let pid = nix::unistd::Pid::from_raw(server.child.id() as i32);
    // Stopped, the server accepts nothing: the burst has to fit in its backlog.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let address: std::net::SocketAddr = server.address.parse().unwrap();
    let connecting: Vec<_> = (0..200)
        .map(|_| {
            // Shorter than the first SYN retry (1 s): a connection that waits for it fails.
            std::thread::spawn(move || {
                TcpStream::connect_timeout(&address, Duration::from_millis(900))
            })
        })
        .collect();
    let connected: Vec<_> = connecting
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .collect();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let refused = connected.iter().filter(|c| c.is_err()).count();
    assert_eq!(refused, 0, "connections that waited for a SYN retry");

    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.address
    );
    let mut streams: Vec<TcpStream> = connected.into_iter().map(Result::unwrap).collect();
    for stream in &mut streams {
        stream.write_all(request.as_bytes()).unwrap();
    }
    for stream in &mut streams {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
}

/// Qwen Code with the entry `mcp install --http` wrote connects to serve with the token from its
/// environment; without it, the server turns it away. The settings file never holds the token.
#[test]
fn qwen_code_connects_over_http_with_the_token_from_its_environment() {
    let stub = support::stub_model::StubModel::start("STUB-HTTP-2718");
    let world = project_world();
    world.write_qwen_user_settings();
    let (server, token) = Server::start_with_token_file(&world, &[]);
    world.ok(&[
        "mcp",
        "install",
        "--client",
        "qwen",
        "--http",
        &server.url("/mcp"),
    ]);
    let settings = std::fs::read_to_string(world.work().join(".qwen/settings.json")).unwrap();
    assert!(
        !settings.contains(&token),
        "the token is not in the settings: {settings}"
    );

    let status_of_mahavishnu = |token: Option<&str>| -> String {
        let mut command = world.program(qwen());
        command
            .args([
                "--auth-type",
                "openai",
                "--openai-base-url",
                &stub.base_url(),
            ])
            .args(["--openai-api-key", "sk-stub", "-m", "stub-model"])
            .args(["-p", "hello", "-o", "json"])
            .env_remove("MAHAVISHNU_TOKEN");
        if let Some(token) = token {
            command.env("MAHAVISHNU_TOKEN", token);
        }
        let output = succeeded("qwen", command.output().unwrap());
        support::qwen_init_message(&output.stdout)["mcp_servers"]
            .as_array()
            .and_then(|servers| servers.iter().find(|server| server["name"] == "mahavishnu"))
            .map(|server| server["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(status_of_mahavishnu(Some(&token)), "connected");
    assert_ne!(
        status_of_mahavishnu(None),
        "connected",
        "without the token Qwen Code cannot connect"
    );
}

/// Claude Code with the `.mcp.json` entry `mcp install --client claude --http` wrote reaches serve
/// with the token from its environment (`claude mcp list` checks each server's health); without the
/// token it cannot. The file never holds the token.
#[test]
fn claude_code_connects_over_http_with_the_token_from_its_environment() {
    let world = project_world();
    let (server, token) = Server::start_with_token_file(&world, &[]);
    world.ok(&[
        "mcp",
        "install",
        "--client",
        "claude",
        "--http",
        &server.url("/mcp"),
    ]);
    let entry = std::fs::read_to_string(world.work().join(".mcp.json")).unwrap();
    assert!(
        !entry.contains(&token),
        "the token is not in .mcp.json: {entry}"
    );
    // Onboarding done and the project's servers approved, as a user who said yes once.
    let project = world.work().canonicalize().unwrap();
    std::fs::write(
        world.dir.path().join("home/.claude.json"),
        serde_json::json!({
            "hasCompletedOnboarding": true,
            "projects": { project.to_string_lossy(): {
                "hasTrustDialogAccepted": true,
                "enabledMcpjsonServers": ["mahavishnu"],
            }},
        })
        .to_string(),
    )
    .unwrap();
    let list = |token: Option<&str>| -> String {
        let mut command = world.program(support::claude());
        command
            .args(["mcp", "list"])
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdefghij")
            // A closed loopback port: the model is never asked, and no name is looked up.
            .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
            .env_remove("MAHAVISHNU_TOKEN");
        if let Some(token) = token {
            command.env("MAHAVISHNU_TOKEN", token);
        }
        let output = command.output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let with_token = list(Some(&token));
    assert!(
        with_token.contains("mahavishnu:") && with_token.contains("Connected"),
        "{with_token}"
    );
    let without = list(None);
    assert!(!without.contains("Connected"), "{without}");
}

/// A bare MCP client over stdio: JSON-RPC lines in, JSON-RPC lines out, and every notification the
/// server sent kept for the test to look at.
struct StdioClient {
    child: Child,
    stdin: std::process::ChildStdin,
    messages: std::sync::mpsc::Receiver<Value>,
    notifications: Vec<Value>,
    next_id: i64,
}

impl StdioClient {
    /// `mahavishnu mcp` in `world`, initialized as a client of protocol 2025-06-18.
    fn start(world: &World) -> (StdioClient, Value) {
        let mut child = world.spawn_piped(&["mcp"]);
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (send, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let message: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout carries only JSON-RPC, not {line:?}: {e}"));
                if send.send(message).is_err() {
                    break;
                }
            }
        });
        let mut client = StdioClient {
            child,
            stdin,
            messages,
            notifications: Vec::new(),
            next_id: 0,
        };
        let initialized = client.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}),
        );
        client.notify("notifications/initialized");
        (client, initialized)
    }

    fn notify(&mut self, method: &str) {
        writeln!(
            self.stdin,
            "{}",
            json!({"jsonrpc": "2.0", "method": method})
        )
        .unwrap();
    }

    /// Sends a request and returns its `result`; fails the test on an error answer.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let answer = self.answer(method, params);
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Sends a request and returns the whole answer, keeping notifications that come before it.
    fn answer(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(self.stdin, "{request}").unwrap();
        loop {
            let message = self
                .messages
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("no answer to {method}: {e}"));
            if message["id"] == id && message.get("method").is_none() {
                return message;
            }
            if message.get("id").is_none() {
                self.notifications.push(message);
            }
        }
    }

    /// Calls a tool and returns its result.
    fn call(&mut self, name: &str, arguments: Value) -> Value {
        self.request("tools/call", json!({"name": name, "arguments": arguments}))
    }

    /// Waits up to `limit` for a notification that `wanted` accepts; returns it.
    fn wait_for(&mut self, limit: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(found) = self.notifications.iter().find(|n| wanted(n)) {
                return Some(found.clone());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Ok(message) = self.messages.recv_timeout(left)
                && message.get("id").is_none()
            {
                self.notifications.push(message);
            }
        }
    }
}

impl Drop for StdioClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_method(message: &Value, method: &str) -> bool {
    message["method"] == method
}

/// Agents, targets and profiles are resources whose names complete, and `start-session`'s
/// arguments complete to profiles and targets.
#[test]
fn agents_targets_and_profiles_are_resources_and_their_names_complete() {
    let world = project_world();
    let (mut client, _) = StdioClient::start(&world);
    let templates = client.request("resources/templates/list", json!({}));
    let uris: Vec<&str> = templates["resourceTemplates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["uriTemplate"].as_str().unwrap())
        .collect();
    for uri in [
        "mahavishnu://instances/{id}/screen",
        "mahavishnu://agents/{name}",
        "mahavishnu://targets/{name}",
        "mahavishnu://profiles/{name}",
    ] {
        assert!(uris.contains(&uri), "{uri} in {uris:?}");
    }
    let complete = |client: &mut StdioClient, reference: Value, argument: &str, value: &str| {
        client.request(
            "completion/complete",
            json!({"ref": reference, "argument": {"name": argument, "value": value}}),
        )["completion"]["values"]
            .clone()
    };
    let resource = |uri: &str| json!({"type": "ref/resource", "uri": uri});
    assert_eq!(
        complete(
            &mut client,
            resource("mahavishnu://agents/{name}"),
            "name",
            "rev"
        ),
        json!(["reviewer"])
    );
    assert_eq!(
        complete(
            &mut client,
            resource("mahavishnu://targets/{name}"),
            "name",
            "p"
        ),
        json!(["pty"])
    );
    let profiles = complete(
        &mut client,
        resource("mahavishnu://profiles/{name}"),
        "name",
        "",
    );
    for profile in ["claude", "codex", "gemini", "qwen", "shell"] {
        assert!(
            profiles.as_array().unwrap().contains(&json!(profile)),
            "{profiles}"
        );
    }
    let prompt = json!({"type": "ref/prompt", "name": "start-session"});
    assert_eq!(
        complete(&mut client, prompt.clone(), "profile", "qw"),
        json!(["qwen"])
    );
    assert_eq!(
        complete(&mut client, prompt.clone(), "target", "tm"),
        json!(["tmux"])
    );
    assert_eq!(complete(&mut client, prompt, "task", "a"), json!([]));

    // Each reads as what it names.
    let read = |client: &mut StdioClient, uri: &str| {
        client.request("resources/read", json!({"uri": uri}))["contents"][0].clone()
    };
    let agent = read(&mut client, "mahavishnu://agents/reviewer");
    assert_eq!(agent["mimeType"], "text/markdown");
    let text = agent["text"].as_str().unwrap();
    assert!(text.starts_with("---\nname: reviewer\n"), "{text}");
    assert!(text.contains("one finding per line"), "{text}");
    let target = read(&mut client, "mahavishnu://targets/pty");
    let target: Value = serde_json::from_str(target["text"].as_str().unwrap()).unwrap();
    assert_eq!(target["kind"], "pty", "{target}");
    let profile = read(&mut client, "mahavishnu://profiles/shell");
    let profile: Value = serde_json::from_str(profile["text"].as_str().unwrap()).unwrap();
    assert!(profile.is_object(), "{profile}");
    let missing = client.answer(
        "resources/read",
        json!({"uri": "mahavishnu://agents/nobody"}),
    );
    let message = missing["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no agent `nobody`") && message.contains("reviewer"),
        "{missing}"
    );

    // The prompt, with and without what it needs.
    let prompts = client.request("prompts/list", json!({}));
    assert_eq!(prompts["prompts"][0]["name"], "start-session", "{prompts}");
    let got = client.request(
        "prompts/get",
        json!({"name": "start-session",
               "arguments": {"profile": "qwen", "task": "add a test", "target": "pty"}}),
    );
    let text = got["messages"][0]["content"]["text"].as_str().unwrap();
    assert!(
        text.contains("profile `qwen`, target `pty`") && text.ends_with("add a test"),
        "{text}"
    );
    let refused = client.answer(
        "prompts/get",
        json!({"name": "start-session", "arguments": {"task": "add a test"}}),
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs its argument `profile`"),
        "{refused}"
    );
}

#[test]
fn subscribed_screens_send_updates_and_ids_complete_and_log_levels_filter() {
    let world = project_world();
    let (mut client, initialized) = StdioClient::start(&world);
    let capabilities = &initialized["capabilities"];
    assert_eq!(
        capabilities["resources"]["subscribe"], true,
        "{capabilities}"
    );
    assert_eq!(
        capabilities["resources"]["listChanged"], true,
        "{capabilities}"
    );
    assert!(capabilities["completions"].is_object(), "{capabilities}");
    assert!(capabilities["logging"].is_object(), "{capabilities}");

    // Logging: at debug every tool call is told; a failure is an error.
    client.request("logging/setLevel", json!({"level": "debug"}));
    let launched = client.call(
        "terminal_launch",
        json!({"profile": "shell", "target": "pty"}),
    );
    let id = launched["structuredContent"]["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let called = client.wait_for(Duration::from_secs(5), |n| {
        is_method(n, "notifications/message")
            && n["params"]["level"] == "debug"
            && n["params"]["data"]["tool"] == "terminal_launch"
    });
    assert!(called.is_some(), "{:?}", client.notifications);
    let failed = client.call("terminal_capture", json!({"id": "pty:mv-none"}));
    assert_eq!(failed["isError"], true, "{failed}");
    let error = client.wait_for(Duration::from_secs(5), |n| {
        is_method(n, "notifications/message")
            && n["params"]["level"] == "error"
            && n["params"]["data"]["tool"] == "terminal_capture"
    });
    assert!(error.is_some(), "{:?}", client.notifications);
    client.request("logging/setLevel", json!({"level": "error"}));
    client.call("terminal_list", json!({}));

    // Completion of the screen template's id, by prefix.
    let template = "mahavishnu://instances/{id}/screen";
    let complete = |client: &mut StdioClient, value: &str| -> Value {
        client.request(
            "completion/complete",
            json!({"ref": {"type": "ref/resource", "uri": template},
                   "argument": {"name": "id", "value": value}}),
        )["completion"]
            .clone()
    };
    let completed = complete(&mut client, &id[..id.len() - 2]);
    assert_eq!(completed["values"], json!([id]), "{completed}");
    assert_eq!(completed["hasMore"], false, "{completed}");
    let none = complete(&mut client, "tmux:no-such-");
    assert_eq!(none["values"], json!([]), "{none}");
    let prompt = client.request(
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "reviewer"},
               "argument": {"name": "task", "value": "Rev"}}),
    );
    assert_eq!(
        prompt["completion"]["values"],
        json!([]),
        "free text: {prompt}"
    );

    // A subscribed screen that changes is announced; so is a session that comes.
    let uri = format!("mahavishnu://instances/{id}/screen");
    client.call(
        "terminal_wait",
        json!({"id": id, "idle_ms": 300, "timeout": 20}),
    );
    client.request("resources/subscribe", json!({"uri": uri}));
    std::thread::sleep(Duration::from_millis(600));
    client.call(
        "terminal_send",
        json!({"id": id, "text": "echo live-$((6*7))"}),
    );
    let updated = client.wait_for(Duration::from_secs(10), |n| {
        is_method(n, "notifications/resources/updated") && n["params"]["uri"] == uri
    });
    assert!(
        updated.is_some(),
        "no update for {uri}: {:?}",
        client.notifications
    );
    let read = client.request("resources/read", json!({"uri": uri}));
    assert!(
        read["contents"][0]["text"]
            .as_str()
            .unwrap()
            .contains("live-42"),
        "{read}"
    );
    let second = client.call(
        "terminal_launch",
        json!({"profile": "shell", "target": "pty"}),
    );
    let second = second["structuredContent"]["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let changed = client.wait_for(Duration::from_secs(5), |n| {
        is_method(n, "notifications/resources/list_changed")
    });
    assert!(
        changed.is_some(),
        "no list change: {:?}",
        client.notifications
    );

    // Unsubscribed, the screen is quiet.
    client.request("resources/unsubscribe", json!({"uri": uri}));
    client.notifications.clear();
    client.call("terminal_send", json!({"id": id, "text": "echo quiet"}));
    let late = client.wait_for(Duration::from_millis(1500), |n| {
        is_method(n, "notifications/resources/updated")
    });
    assert!(late.is_none(), "updates after unsubscribe: {late:?}");
    assert!(
        !client
            .notifications
            .iter()
            .any(|n| n["params"]["level"] == "debug"),
        "at level error, no debug messages: {:?}",
        client.notifications
    );
    client.call("terminal_close", json!({"ids": [id, second]}));
}

/// Checks each `(tool, schema, value)` with the Python `jsonschema` package (Draft 2020-12).
fn assert_valid_against_schemas(checked: &[(String, Value, Value)]) {
    let cases: Vec<Value> = checked
        .iter()
        .map(|(tool, schema, value)| json!({"tool": tool, "schema": schema, "value": value}))
        .collect();
    let script = "import json, sys\n\
                  from jsonschema import Draft202012Validator\n\
                  bad = []\n\
                  for case in json.load(sys.stdin):\n\
                  \x20   Draft202012Validator.check_schema(case['schema'])\n\
                  \x20   for error in Draft202012Validator(case['schema']).iter_errors(case['value']):\n\
                  \x20       bad.append(f\"{case['tool']}: {error.message} at {list(error.path)}\")\n\
                  print('\\n'.join(bad))\n\
                  sys.exit(1 if bad else 0)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", python_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(cases).to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "results that do not match their tool's outputSchema:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_tool_declares_its_output_schema_and_annotations_and_results_match() {
    let world = project_world();
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipeline");
    for file in ["mahavishnu.deploy.toml", "block.py"] {
        std::fs::copy(examples.join(file), world.work().join(file)).unwrap();
    }
    let (mut client, _) = StdioClient::start(&world);
    let tools = client.request("tools/list", json!({}))["tools"].clone();
    let tools = tools.as_array().unwrap();
    assert_eq!(tools.len(), TOOLS);
    let tool = |name: &str| -> &Value {
        tools
            .iter()
            .find(|tool| tool["name"] == name)
            .unwrap_or_else(|| panic!("no tool {name}"))
    };
    for listed in tools {
        assert_eq!(listed["outputSchema"]["type"], "object", "{listed}");
        assert_eq!(listed["annotations"]["openWorldHint"], false, "{listed}");
    }
    for name in [
        "terminal_close",
        "terminal_merge",
        "checkpoint_restore",
        "instances_gc",
    ] {
        let annotations = &tool(name)["annotations"];
        assert_eq!(
            annotations["destructiveHint"], true,
            "{name}: {annotations}"
        );
        assert_eq!(annotations["readOnlyHint"], false, "{name}: {annotations}");
    }
    for name in [
        "terminal_list",
        "terminal_capture",
        "terminal_diff",
        "session_status",
    ] {
        let annotations = &tool(name)["annotations"];
        assert_eq!(annotations["readOnlyHint"], true, "{name}: {annotations}");
        assert_eq!(annotations["idempotentHint"], true, "{name}: {annotations}");
    }
    assert_eq!(
        tool("terminal_send")["annotations"]["idempotentHint"],
        false
    );

    let mut checked = Vec::new();
    let mut call = |client: &mut StdioClient, name: &str, arguments: Value| -> Value {
        let result = client.call(name, arguments.clone());
        assert_eq!(result["isError"], false, "{name} {arguments}: {result}");
        let value = result["structuredContent"].clone();
        checked.push((
            name.to_string(),
            tool(name)["outputSchema"].clone(),
            value.clone(),
        ));
        value
    };
    let launched = call(
        &mut client,
        "terminal_launch",
        json!({"profile": "shell", "target": "pty"}),
    );
    let id = launched["instances"][0]["id"].as_str().unwrap().to_string();
    call(
        &mut client,
        "terminal_wait",
        json!({"id": id, "idle_ms": 300, "timeout": 20}),
    );
    call(
        &mut client,
        "terminal_send",
        json!({"id": id, "text": "echo schema"}),
    );
    call(
        &mut client,
        "terminal_keys",
        json!({"id": id, "keys": ["Enter"]}),
    );
    call(
        &mut client,
        "terminal_wait",
        json!({"all": true, "idle_ms": 300, "timeout": 20}),
    );
    call(&mut client, "terminal_capture", json!({"id": id}));
    call(
        &mut client,
        "terminal_resize",
        json!({"id": id, "rows": 30, "cols": 100}),
    );
    call(
        &mut client,
        "terminal_broadcast",
        json!({"text": "echo all"}),
    );
    call(
        &mut client,
        "terminal_exec",
        json!({"id": id, "command": ["echo", "side"]}),
    );
    call(&mut client, "terminal_logs", json!({"id": id}));
    call(&mut client, "terminal_list", json!({}));
    call(&mut client, "instance_status", json!({"id": id}));
    call(&mut client, "instances_list", json!({}));
    call(&mut client, "targets_list", json!({}));
    call(&mut client, "target_show", json!({"name": "pty"}));
    call(&mut client, "agents_list", json!({}));
    call(&mut client, "agent_get", json!({"name": "reviewer"}));
    call(&mut client, "agents_validate", json!({}));
    call(&mut client, "session_start", json!({"id": "schema-1"}));
    call(&mut client, "session_status", json!({"id": "schema-1"}));
    call(&mut client, "session_list", json!({}));
    call(&mut client, "hooks_list", json!({}));
    call(&mut client, "hooks_runs", json!({}));
    let made = call(
        &mut client,
        "checkpoint_create",
        json!({"message": "schema"}),
    );
    call(&mut client, "checkpoint_list", json!({}));
    let checkpoint = made["id"].as_str().unwrap().to_string();
    call(&mut client, "checkpoint_diff", json!({"id": checkpoint}));
    call(&mut client, "deploy_validate", json!({}));
    call(&mut client, "deploy_plan", json!({}));
    // The catalog, a sweep over it and a check: the work directory is a git repository.
    call(
        &mut client,
        "repos_add",
        json!({"paths": [world.work()], "tags": ["schema"]}),
    );
    call(&mut client, "repos_list", json!({"tag": "schema"}));
    let swept = call(
        &mut client,
        "sweep_run",
        json!({"tag": "schema", "command": ["git", "status", "--short"]}),
    );
    call(&mut client, "sweep_status", json!({"id": swept["id"]}));
    call(&mut client, "sweep_list", json!({}));
    call(&mut client, "sweep_rerun", json!({"id": swept["id"]}));
    call(&mut client, "check_run", json!({"path": world.work()}));
    call(&mut client, "workflow_list", json!({}));
    call(&mut client, "workflow_run", json!({"name": "schema"}));
    call(&mut client, "repos_scan", json!({"dir": world.work()}));
    call(
        &mut client,
        "repos_remove",
        json!({"repos": [world.work()]}),
    );
    call(&mut client, "session_end", json!({"id": "schema-1"}));
    call(&mut client, "terminal_close", json!({"ids": [id]}));
    call(&mut client, "instances_gc", json!({}));
    assert_valid_against_schemas(&checked);
}
