//! The wire protocol between Mahavishnu and a pty host: one JSON request line, one JSON reply line.
//! `attach` then turns the connection into a byte stream (framed from client to host).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A request to a pty host.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Report `Status`.
    Status,
    /// Render the screen.
    Screen { scrollback: bool, ansi: bool },
    /// Write bytes (UTF-8 text and key sequences) to the terminal.
    Send { data: String },
    /// End the program: SIGHUP to its process group, then SIGKILL after the grace period.
    Stop { grace_ms: u64 },
    /// Stream the terminal to an interactive client of this size.
    Attach { rows: u16, cols: u16 },
}

/// The host's answer to `Status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// The program's process id.
    pub pid: u32,
    /// Milliseconds since the program last wrote to the terminal.
    pub idle_ms: u64,
    /// Whether another job holds the terminal's foreground.
    pub foreground_job: Option<bool>,
    /// The program's current working directory.
    pub cwd: Option<PathBuf>,
}

/// What a host leaves behind when its program ends by itself: the exit code and the last screen.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code (128 + signal for a signal).
    pub code: i32,
    /// The last screen, plain.
    pub screen: String,
    /// The last screen with escape codes.
    pub screen_ansi: String,
    /// Scrollback and screen, plain.
    pub full: String,
}

/// Client-to-host frame types after `attach`.
pub const FRAME_INPUT: u8 = 0;
/// A resize frame carries rows and columns as two big-endian u16.
pub const FRAME_RESIZE: u8 = 1;

/// The files of one session in the pty directory.
#[derive(Clone, Debug)]
pub struct SessionFiles {
    /// The launch spec, written before the host starts.
    pub spec: PathBuf,
    /// The host's socket.
    pub socket: PathBuf,
    /// Written by the host when the program ends by itself.
    pub exit: PathBuf,
}

impl SessionFiles {
    /// The files of session `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        SessionFiles {
            spec: dir.join(format!("{name}.json")),
            socket: dir.join(format!("{name}.sock")),
            exit: dir.join(format!("{name}.exit.json")),
        }
    }

    /// Removes every file of the session.
    pub fn remove(&self) {
        for file in [&self.spec, &self.socket, &self.exit] {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Writes `bytes` to `path` atomically, readable by this user only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    std::fs::rename(&temporary, path)
}
