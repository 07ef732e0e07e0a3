//! Starts the Google Cloud fake (`fake_gcloud.py`, beside this file) for a test: a FAKE of the Cloud
//! Run, Secret Manager, Logging, Monitoring, Compute and Resource Manager REST APIs, because the real
//! ones cannot run here. It speaks the REST/JSON the official clients send; see its docstring.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running fake; dropping it stops it and every process it started.
pub struct FakeGcloud {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// The fake's script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_gcloud.py")
}

impl FakeGcloud {
    /// Starts the fake with `config` (its JSON configuration: projects, images, secrets, delays).
    pub fn start(dir: &Path, config: &serde_json::Value) -> FakeGcloud {
        let file = dir.join("fake-gcloud.json");
        std::fs::write(&file, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let mut child = Command::new("python3")
            .arg(script())
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
        FakeGcloud { child, url }
    }

    /// GET or POST a path of the fake; the JSON answer.
    pub fn call(&self, method: &str, path: &str) -> serde_json::Value {
        let (_, _, body) =
            super::http(method, &format!("{}{path}", self.url), "", "").expect("the fake answers");
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// The API calls made so far, as `METHOD PATH`.
    pub fn requests(&self) -> Vec<String> {
        self.call("GET", "/_fake/requests")
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

    /// Forgets the calls made so far.
    pub fn clear_requests(&self) {
        self.call("POST", "/_fake/requests/clear");
    }
}

impl Drop for FakeGcloud {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}
