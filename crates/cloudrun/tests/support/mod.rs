//! Test support: the Google Cloud fake (`crates/cli/tests/support/fake_gcloud.py`, a FAKE of the
//! Cloud Run, Compute and Monitoring REST APIs, because the real ones cannot run here), settings that
//! point the official clients at it, and plain HTTP to drive it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mahavishnu_cloudrun::CloudRunSettings;

/// The fake's script.
pub const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../cli/tests/support/fake_gcloud.py"
);

/// The project the tests use, and its number.
pub const PROJECT: &str = "acme-test";
pub const NUMBER: &str = "123456789012";

/// The image that runs [`SERVER`]: 200 everywhere, 500 under `/fail`.
pub const IMAGE: &str = "example.test/web:1";

/// A tiny HTTP server: answers `REV CODE`, 500 under `/fail`, 200 elsewhere.
const SERVER: &str = r#"
import http.server, os, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if self.path.startswith("/fail") else 200
        body = f"{os.environ.get('REV', 'one')} {code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

/// A running fake; dropping it stops it and every process it started.
pub struct Fake {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its config and the server script live here.
    _dir: tempfile::TempDir,
}

impl Fake {
    /// Starts the fake with the project and the image that runs [`SERVER`].
    pub fn start() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.py"), SERVER).unwrap();
        let config = serde_json::json!({
            "projects": {PROJECT: NUMBER},
            "operation_delay_ms": 20,
            "images": {IMAGE: {"run": "python3 server.py $PORT", "dir": dir.path()}},
        });
        let file = dir.path().join("fake-gcloud.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg("--config")
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Google Cloud fake");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the fake prints its URL");
        let url = line.trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "fake said {line:?}");
        Fake {
            child,
            url,
            _dir: dir,
        }
    }

    /// Settings that point the official clients at the fake.
    pub fn settings(&self) -> CloudRunSettings {
        let target = mahavishnu_core::config::TargetConfig {
            project: Some(PROJECT.into()),
            project_number: Some(NUMBER.into()),
            endpoint: Some(self.url.clone()),
            credentials: Some("anonymous".into()),
            service_urls: Some(format!("{}/run/{{host}}", self.url)),
            request_timeout_ms: Some(10_000),
            ..Default::default()
        };
        CloudRunSettings::for_target("fake", &target).expect("settings for the fake")
    }

    /// One request to the fake: status and body.
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(method, &format!("{}{path}", self.url), body)
    }

    /// One request to the fake whose answer is JSON.
    pub fn json(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (status, text) = self.http(method, path, body);
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The API calls made so far, as `METHOD PATH`.
    pub fn requests(&self) -> Vec<String> {
        let (_, calls) = self.json("GET", "/_fake/requests", "");
        calls
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap_or(""),
                    r["path"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// The writing API calls (everything but GET) made so far.
    pub fn writes(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|call| !call.starts_with("GET "))
            .collect()
    }

    /// Forgets the calls made so far.
    pub fn clear_requests(&self) {
        self.http("POST", "/_fake/requests/clear", "");
    }

    /// The Cloud Run host of `service` in `region`.
    pub fn host(service: &str, region: &str) -> String {
        format!("{service}-{NUMBER}.{region}.run.app")
    }

    /// Deploys the Cloud Run service `service` in `region` running [`IMAGE`] with `REV=rev`, open
    /// to everyone, and waits until its URL answers 200.
    pub fn deploy(&self, service: &str, region: &str, rev: &str) {
        let body = serde_json::json!({
            "template": {"containers": [{
                "image": IMAGE,
                "env": [{"name": "REV", "value": rev}],
            }]},
        })
        .to_string();
        let base = format!("/v2/projects/{PROJECT}/locations/{region}/services");
        let (status, answer) = self.http("GET", &format!("{base}/{service}"), "");
        let (status, answer) = if status == 404 {
            self.http("POST", &format!("{base}?serviceId={service}"), &body)
        } else {
            assert_eq!(status, 200, "{answer}");
            self.http("PATCH", &format!("{base}/{service}"), &body)
        };
        assert_eq!(status, 200, "deploying {service} in {region}: {answer}");
        let policy = serde_json::json!({"policy": {"bindings": [
            {"role": "roles/run.invoker", "members": ["allUsers"]}
        ]}})
        .to_string();
        let (status, answer) =
            self.http("POST", &format!("{base}/{service}:setIamPolicy"), &policy);
        assert_eq!(status, 200, "{answer}");
        let host = Fake::host(service, region);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, text) = self.http("GET", &format!("/run/{host}/"), "");
            if status == 200 && text.starts_with(&format!("{rev} ")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{service} in {region} still answers {status} {text:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        // SIGTERM, so that the fake stops the processes it started.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 request: status and body.
pub fn http(method: &str, url: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(authority).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}
