//! Test support: every test gets its own state directory, runtime directory and tmux server, and drives
//! the real `mahavishnu` binary.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub mod fake_gcloud;
pub mod fake_kube;
pub mod stub_model;

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mahavishnu"))
}

/// The Qwen Code executable: `MAHAVISHNU_TEST_QWEN`, which the test script sets after installing the CLI.
pub fn qwen() -> PathBuf {
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

/// The Claude Code executable: `MAHAVISHNU_TEST_CLAUDE`, which the test script sets after installing
/// the CLI.
pub fn claude() -> PathBuf {
    let path = std::env::var_os("MAHAVISHNU_TEST_CLAUDE").map(PathBuf::from).expect(
        "MAHAVISHNU_TEST_CLAUDE is not set: run the tests with `scripts/test`, which installs Claude Code from npm",
    );
    assert!(
        path.exists(),
        "MAHAVISHNU_TEST_CLAUDE={} does not exist",
        path.display()
    );
    path
}

/// The Codex CLI executable: `MAHAVISHNU_TEST_CODEX`, which the test script sets after installing it.
pub fn codex() -> PathBuf {
    let path = std::env::var_os("MAHAVISHNU_TEST_CODEX").map(PathBuf::from).expect(
        "MAHAVISHNU_TEST_CODEX is not set: run the tests with `scripts/test`, which installs Codex from npm",
    );
    assert!(
        path.exists(),
        "MAHAVISHNU_TEST_CODEX={} does not exist",
        path.display()
    );
    path
}

/// The `init` message among what `qwen -p ... -o json` printed: its tools, agents and MCP servers.
pub fn qwen_init_message(stdout: &[u8]) -> serde_json::Value {
    let messages: serde_json::Value =
        serde_json::from_slice(stdout).expect("qwen -o json prints JSON");
    messages
        .as_array()
        .expect("a list of messages")
        .iter()
        .find(|message| message["type"] == "system" && message["subtype"] == "init")
        .cloned()
        .expect("an init message")
}

/// An isolated Mahavishnu world; closes every session it started when dropped.
pub struct World {
    pub dir: tempfile::TempDir,
    pub tmux_socket: String,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("mv")
            .tempdir()
            .expect("tempdir");
        let tmux_socket = format!("mvtest-{}-{}", std::process::id(), fastrand_suffix());
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        World { dir, tmux_socket }
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Where this world's sessions keep their sockets and files: its state directory is one of its
    /// own, so they sit in a directory of the runtime directory made for it.
    pub fn sessions_dir(&self) -> PathBuf {
        std::fs::read_dir(self.runtime_dir())
            .expect("the runtime directory exists once a session was launched")
            .flatten()
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("state-"))
            })
            .expect("a directory for this state directory's sessions")
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Qwen Code's user settings in this world's HOME, with nothing that reaches the network by itself.
    pub fn write_qwen_user_settings(&self) {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(home.join(".qwen")).unwrap();
        std::fs::write(
            home.join(".qwen/settings.json"),
            r#"{"general":{"enableAutoUpdate":false}}"#,
        )
        .unwrap();
    }

    /// `mahavishnu ARGS` in this world, run from the work directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = self.program(binary());
        command.args(args);
        command
    }

    /// Any program with this world's environment (what a `mahavishnu` it starts sees), in the work
    /// directory.
    pub fn program(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.work())
            .env("MAHAVISHNU_STATE_DIR", self.state_dir())
            .env("MAHAVISHNU_RUNTIME_DIR", self.runtime_dir())
            .env("MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME", &self.tmux_socket)
            .env(
                "MAHAVISHNU_CONFIG",
                self.dir.path().join("home/config.toml"),
            )
            .env("SHELL", "/bin/bash")
            .env("HOME", self.dir.path().join("home"))
            .env("PS1", "$ ")
            .env_remove("MAHAVISHNU_TERMINAL__MAX_CONCURRENT");
        command
    }

    /// `mahavishnu ARGS` started with stdin, stdout and stderr piped.
    pub fn spawn_piped(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start mahavishnu")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mahavishnu")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "mahavishnu {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    /// Runs and asserts failure with `code`; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(code),
            "mahavishnu {args:?}: stderr: {stderr}"
        );
        assert!(
            stderr.starts_with("error: "),
            "errors start with `error: `: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.splice(0..0, ["--output", "json"]);
        serde_json::from_str(&self.ok(&args)).expect("json output")
    }

    /// Runs `script` with `sh -c` in a session's directory and environment (`terminal exec`), and
    /// asserts success; returns stdout.
    pub fn sh(&self, id: &str, script: &str) -> String {
        self.ok(&["terminal", "exec", id, "--", "sh", "-c", script])
    }

    /// Launches and returns the ids.
    pub fn launch(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["terminal", "launch"];
        all.extend(args);
        self.ok(&all).lines().map(str::to_string).collect()
    }

    /// The state of every session `terminal list` shows, in its order.
    pub fn listed_states(&self) -> Vec<String> {
        let listed = self.json(&["terminal", "list"]);
        listed["instances"]
            .as_array()
            .unwrap_or_else(|| panic!("a list of instances: {listed}"))
            .iter()
            .map(|i| i["state"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn state_of(&self, id: &str) -> String {
        let shown = self.json(&["terminal", "show", id]);
        shown["state"].as_str().expect("state").to_string()
    }

    /// Polls `terminal show` until the state is `want`.
    pub fn wait_state(&self, id: &str, want: &str, patience: Duration) {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < patience {
            last = self.state_of(id);
            if last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{id} never became {want}; last state {last}");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self
            .command(&["terminal", "close", "--all", "--grace", "0.2"])
            .output();
        self.stop_deploy_supervisors();
        let _ = Command::new("tmux")
            .args(["-L", &self.tmux_socket, "kill-server"])
            .output();
    }
}

impl World {
    /// Asks every deploy supervisor of this world to stop what it runs and exit.
    pub fn stop_deploy_supervisors(&self) {
        use std::io::{BufRead, Write};
        let sockets = std::fs::read_dir(self.runtime_dir())
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|entry| {
                std::fs::read_dir(entry.path().join("deploy"))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sock"));
        // The Pub/Sub emulator a deploy started for this world, with its whole process group, if it
        // still runs: the record outlives it, and a pid that has ended may be another process's by
        // now (pids wrap around quickly here), whose group is not ours to kill.
        if let Ok(record) = std::fs::read(self.state_dir().join("pubsub/pubsub-emulator.json"))
            && let Ok(record) = serde_json::from_slice::<serde_json::Value>(&record)
            && let Some(pid) = record["pid"].as_i64()
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("pubsub"))
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(-(pid as i32)),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for socket in sockets {
            if let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&socket) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = stream.write_all(b"{\"op\":\"shutdown\"}\n");
                let _ = std::io::BufReader::new(stream).read_line(&mut String::new());
            }
        }
    }
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish() % 1_000_000
}

/// Polls `check` every 50 ms until it holds; fails the test, naming `what`, when it does not within
/// `patience`.
pub fn eventually(what: &str, patience: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < patience {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not happen within {patience:?}");
}

/// Whether `path` exists, after giving a racing writer `patience`.
pub fn eventually_exists(path: &Path, patience: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < patience {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs git in `dir` and returns its output; fails the test on error.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("run git");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 from git")
}

/// The text of `path` once it contains `needle`, or whatever it holds after `patience`.
pub fn wait_for(path: &Path, needle: &str, patience: Duration) -> String {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || started.elapsed() > patience {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `output` of `what`, after asserting that it succeeded (showing both streams when not).
pub fn succeeded(what: &str, output: Output) -> Output {
    assert!(
        output.status.success(),
        "{what} failed with {:?}:\n{}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The `id`s of a JSON array of instances, sorted.
pub fn sorted_ids(instances: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = instances
        .as_array()
        .expect("an array of instances")
        .iter()
        .map(|instance| instance["id"].as_str().expect("an id").to_string())
        .collect();
    ids.sort();
    ids
}

/// `git commit ARGS` in `dir` as a test identity.
pub fn git_commit(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q"];
    all.extend(args);
    git(dir, &all)
}

/// The target called `name` in what `targets -o json` (or `targets_list`) returned.
#[allow(dead_code)]
pub fn target_named<'a>(targets: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    targets["targets"]
        .as_array()
        .and_then(|targets| targets.iter().find(|target| target["name"] == name))
        .unwrap_or_else(|| panic!("no target `{name}` in {targets}"))
}

/// A GET: status, the revision header the router adds, and the body.
pub fn get(url: &str) -> std::io::Result<(u16, Option<String>, String)> {
    get_with(url, "")
}

/// A GET with extra header lines (each ending in CRLF).
pub fn get_with(url: &str, headers: &str) -> std::io::Result<(u16, Option<String>, String)> {
    http("GET", url, headers, "")
}

/// One HTTP/1.1 request on a connection of its own: status, the revision header the router adds,
/// and the body.
pub fn http(
    method: &str,
    url: &str,
    headers: &str,
    body: &str,
) -> std::io::Result<(u16, Option<String>, String)> {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let length = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    // A Host among `headers` (a virtual host behind a gateway) replaces the address's.
    let host_line = if headers.to_ascii_lowercase().starts_with("host:")
        || headers.to_ascii_lowercase().contains("\r\nhost:")
    {
        String::new()
    } else {
        format!("Host: {host}\r\n")
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\n{host_line}{headers}{length}Connection: close\r\n\r\n{body}"
    )?;
    // Up to the end of the head, then the body its Content-Length gives (a server that keeps the
    // connection open despite `Connection: close` is then not waited on), else to the end.
    let mut raw = Vec::new();
    let mut byte = [0u8; 4096];
    let (head_end, length) = loop {
        let read = stream.read(&mut byte)?;
        raw.extend_from_slice(&byte[..read]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head.lines().find_map(|line| {
                line.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            break (end + 4, length);
        }
        if read == 0 {
            break (raw.len(), None);
        }
    };
    match length {
        Some(length) => {
            while raw.len() < head_end + length {
                let read = stream.read(&mut byte)?;
                if read == 0 {
                    break;
                }
                raw.extend_from_slice(&byte[..read]);
            }
        }
        None => {
            stream.read_to_end(&mut raw)?;
        }
    }
    let response = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let revision = head.lines().find_map(|line| {
        line.to_ascii_lowercase()
            .strip_prefix("x-mahavishnu-revision:")
            .map(|v| v.trim().to_string())
    });
    Ok((status, revision, body.to_string()))
}

/// A POST of a JSON body: status and body.
pub fn post(url: &str, body: &str) -> (u16, String) {
    let (status, _, body) = http("POST", url, "Content-Type: application/json\r\n", body).unwrap();
    (status, body)
}

/// A small service: `python3 app.py`. It counts what is POSTed to it (pushes) and shows the count at
/// `/pushes`. `V` names its version; `FAIL_EVERY=N` answers every Nth request
/// to `/` with 500; `BOOT_FAIL=text` prints the text and exits at start; `SLOW_START=S` sleeps before
/// it listens.
pub const APP: &str = r#"
import hashlib, json, os, sys, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
if os.environ.get("BOOT_FAIL"):
    print(os.environ["BOOT_FAIL"], flush=True)
    sys.exit(3)
time.sleep(float(os.environ.get("SLOW_START", "0")))
count = 0
pushes = 0
class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_POST(self):
        global pushes
        self.rfile.read(int(self.headers.get("content-length", "0")))
        pushes += 1
        self.reply(200, {"pushes": pushes})
    def do_GET(self):
        global count
        if self.path == "/pushes":
            return self.reply(200, {"pushes": pushes})
        if self.path == "/healthz":
            return self.reply(200, {"ok": True})
        if self.path == "/secret":
            secret = os.environ.get("SECRET", "")
            return self.reply(200, {"sha256": hashlib.sha256(secret.encode()).hexdigest()})
        if self.path == "/env":
            return self.reply(200, {k: v for k, v in os.environ.items() if k.endswith("_URL") or k in ("PORT", "V", "MAHAVISHNU_REGION")})
        count += 1
        every = int(os.environ.get("FAIL_EVERY", "0"))
        if every and count % every == 0:
            return self.reply(500, {"error": "planned"})
        self.reply(200, {"v": os.environ.get("V"), "region": os.environ.get("MAHAVISHNU_REGION"), "pid": os.getpid()})
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), App)
print("listening", flush=True)
server.serve_forever()
"#;

/// One service of one region in `deploy status` JSON.
pub fn deployed<'a>(status: &'a Value, region: &str, name: &str) -> &'a Value {
    status["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == region)
        .and_then(|r| {
            r["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
        })
        .unwrap_or_else(|| panic!("{region}/{name} in {status:#}"))
}

/// The revisions of a service in `deploy status` JSON that take traffic, with their weights.
pub fn weights(service: &Value) -> Vec<(String, u64)> {
    service["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["weight"].as_u64() > Some(0))
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Whether the tests that need the Pub/Sub emulator run: they fail when it is missing, unless
/// `MAHAVISHNU_TEST_NO_PUBSUB=1` says to skip them.
pub fn pubsub_wanted(test: &str) -> bool {
    if std::env::var_os("MAHAVISHNU_TEST_NO_PUBSUB").is_some_and(|v| v == "1") {
        eprintln!("{test}: skipped (MAHAVISHNU_TEST_NO_PUBSUB=1)");
        return false;
    }
    if let Err(reason) = mahavishnu_pubsub::Emulator::locate() {
        panic!(
            "{test} needs the Pub/Sub emulator: {reason}; or set MAHAVISHNU_TEST_NO_PUBSUB=1 to skip it"
        );
    }
    true
}

/// Copies the files of `examples/NAME` into the world's work directory.
pub fn copy_example(world: &World, name: &str) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    for entry in std::fs::read_dir(&source).unwrap().flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), world.work().join(entry.file_name())).unwrap();
        }
    }
}

/// `mahavishnu serve` on a free loopback port (with its token), stopped when dropped.
pub struct Serve {
    child: std::process::Child,
    /// Where it listens (`127.0.0.1:PORT`).
    pub address: String,
}

impl Serve {
    /// Starts it in the world's work directory and waits until it says where it listens.
    pub fn start(world: &World) -> Serve {
        let mut child = world
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let address = loop {
            let mut line = String::new();
            assert!(
                std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0,
                "serve ended"
            );
            if let Some(rest) = line.split("serving MCP at http://").nth(1) {
                break rest.split('/').next().unwrap().to_string();
            }
        };
        // Its further words go nowhere, so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in std::io::BufRead::lines(stderr) {});
        Serve { child, address }
    }

    /// Its URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

impl Drop for Serve {
    /// Stops it as a user would (SIGTERM, so that it removes what it announced), and kills it when
    /// it does not go within three seconds.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: the child is ours and not reaped, so its pid is still its own.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a prompt to the AI CLI session `id` of `world` that keeps it working a while, and checks
/// that while its screen shows `busy` (its spinner), longer than its profile's idle time, it is
/// `running` and a wait for `waiting` does not end (it times out); then that the wait ends with the
/// stub's `reply` on the screen.
pub fn busy_until_answered(world: &World, id: &str, busy: &str, reply: &str) {
    world.ok(&["terminal", "send", id, "Think it over, please"]);
    world.ok(&["terminal", "wait", id, "--for", busy, "--timeout", "30"]);
    std::thread::sleep(Duration::from_millis(1500));
    let screen = world.ok(&["terminal", "capture", id]);
    assert!(
        screen.contains(busy),
        "the profile's busy pattern, on screen: {screen}"
    );
    assert_eq!(world.state_of(id), "running", "{screen}");
    world.fails(&["terminal", "wait", id, "--waiting", "--timeout", "3"], 1);
    world.ok(&["terminal", "wait", id, "--waiting", "--timeout", "60"]);
    let screen = world.ok(&["terminal", "capture", id]);
    assert!(
        screen.contains(reply),
        "the wait ended with the answer:\n{screen}"
    );
    world.ok(&["terminal", "close", id, "--grace", "2"]);
}
