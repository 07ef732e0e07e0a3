//! The wire protocol between Mahavishnu and a supervisor: one JSON request line, one JSON reply line on a
//! Unix socket (mode 0600) in the runtime directory. `logs` with `follow` then streams one JSON line per
//! log line until the client hangs up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mahavishnu_core::deploy::{FrontDoorStatus, Observed, RevisionSpec};
use serde::{Deserialize, Serialize};

/// A request to a supervisor.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// What runs: every service with its revisions, copies, health and metrics.
    Observe,
    /// Start a revision at 0 % traffic (the first of a service at 100 %), or hand secrets to one that
    /// lost them when the supervisor restarted. Replies with the service's URL.
    Deploy {
        name: String,
        spec: Box<RevisionSpec>,
        /// Resolved secret values: kept in memory only, handed to the processes' environment.
        secrets: BTreeMap<String, String>,
    },
    /// Set a service's traffic weights.
    SetTraffic {
        service: String,
        weights: Vec<(String, u8)>,
    },
    /// Give a revision a tag, with a URL of its own that reaches it alone (`tag` `None`: take it away).
    SetTag {
        service: String,
        revision: String,
        tag: Option<String>,
    },
    /// Stop a revision without traffic, or the whole service.
    Destroy {
        service: String,
        revision: Option<String>,
    },
    /// Log lines of a service or one revision.
    Logs {
        service: String,
        revision: Option<String>,
        tail: usize,
        follow: bool,
    },
    /// Prometheus text of every router.
    Metrics,
    /// Watch pushes to `service` at `path` for a probe carrying `nonce`.
    ExpectProbe {
        service: String,
        path: String,
        nonce: String,
    },
    /// The status a probe push was answered with, once seen.
    ProbeAnswer { nonce: String },
    /// Point the front door of `service` at these regions' URLs.
    SetFrontDoor {
        service: String,
        port: u16,
        regions: Vec<(String, String)>,
        health_path: String,
    },
    /// The front door, when this supervisor holds one.
    FrontDoor,
    /// Make a GET request to `url` (a link check from where the services run).
    Request { url: String },
    /// Stop everything, forget the state and exit.
    Shutdown,
}

/// A supervisor's answer: `{"ok": ...}` or `{"error": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The request succeeded; the value depends on the request.
    Ok(serde_json::Value),
    /// The request failed; the message says why and what to do.
    Error(String),
}

/// What `Observe` returns.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The supervisor's process id.
    pub pid: u32,
    /// Every service with its revisions.
    pub observed: Observed,
    /// The front door, when this supervisor holds one.
    pub front_door: Option<FrontDoorStatus>,
}

/// Where a supervisor keeps its socket, state and logs.
#[derive(Clone, Debug)]
pub struct Address {
    /// The socket, in the runtime directory.
    pub socket: PathBuf,
    /// The directory of its state file and logs, in the state directory.
    pub dir: PathBuf,
}

impl Address {
    /// The supervisor of `sandcastle` in `region` (or of its front door, `region` `None`).
    pub fn new(
        runtime_dir: &Path,
        state_dir: &Path,
        sandcastle: &str,
        region: Option<&str>,
    ) -> Address {
        // `@` cannot start a region name, so the front door's files never meet a region's.
        let region = region.unwrap_or("@front-door");
        Address {
            socket: runtime_dir
                .join("deploy")
                .join(format!("{sandcastle}.{region}.sock")),
            dir: state_dir.join("deploy").join(sandcastle).join(region),
        }
    }

    /// The lock a live supervisor holds, so that only one runs per placement.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("supervisor.lock")
    }

    /// What the supervisor remembers across restarts (never a secret).
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Its log files.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The supervisor's own log.
    pub fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
}
