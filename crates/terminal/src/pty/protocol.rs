//! The wire protocol between Mahavishnu and a pty host: one JSON request line, one JSON reply line.
//! `attach` then turns the connection into a byte stream (framed from client to host).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A request to a pty host.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Render the screen.
    Screen { scrollback: bool, ansi: bool },
    /// Write bytes (UTF-8 text and key sequences) to the terminal.
    Send { data: String },
    /// End the program: SIGHUP to its process group, then SIGKILL after the grace period.
    Stop { grace_ms: u64 },
    /// Stream the terminal to an interactive client of this size.
    Attach { rows: u16, cols: u16 },
    /// Change the terminal's size.
    Resize { rows: u16, cols: u16 },
    /// Keep the connection and write one byte (`\n`) whenever the program writes output: a notice
    /// that the screen changed, for a watcher that reads screens only when they change. Notices that
    /// find the connection full are dropped; the one already waiting tells the same.
    Watch,
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
    /// The host's status: the program's pid and when it last wrote output; locked while the host lives.
    pub status: PathBuf,
}

impl SessionFiles {
    /// The files of session `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        SessionFiles {
            spec: dir.join(format!("{name}.json")),
            socket: dir.join(format!("{name}.sock")),
            exit: dir.join(format!("{name}.exit.json")),
            status: dir.join(format!("{name}.status")),
        }
    }

    /// Removes every file of the session.
    pub fn remove(&self) {
        for file in [&self.spec, &self.socket, &self.exit, &self.status] {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// What the status file says about a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostStatus {
    /// The host holds its lock: the session lives.
    Alive {
        /// The program's process id.
        pid: u32,
        /// When the program last wrote to the terminal, in milliseconds since the Unix epoch.
        last_output_ms: i64,
    },
    /// The lock is free: the host has ended (or was killed).
    Gone,
}

/// Creates the status file, locked for as long as the returned file stays open. Reading it costs no
/// round trip to the host, which keeps `list` cheap with many sessions.
pub fn create_status(path: &Path, pid: u32, now_ms: i64) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    write_status(&file, pid, now_ms)?;
    Ok(file)
}

/// Rewrites the status in place (fixed width, so a reader never sees a shorter, torn line).
pub fn write_status(file: &File, pid: u32, last_output_ms: i64) -> std::io::Result<()> {
    file.write_all_at(format!("{pid:>10} {last_output_ms:>20}\n").as_bytes(), 0)
}

/// Reads a status file; `None` when there is none.
pub fn read_status(path: &Path) -> Option<HostStatus> {
    let file = File::open(path).ok()?;
    // SAFETY: flock on a descriptor we own; the lock, if taken, goes with the file.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    if free {
        return Some(HostStatus::Gone);
    }
    let mut buffer = [0u8; 32];
    let read = file.read_at(&mut buffer, 0).ok()?;
    let text = std::str::from_utf8(&buffer[..read]).ok()?;
    let mut fields = text.split_whitespace();
    let pid = fields.next()?.parse().ok()?;
    let last_output_ms = fields.next()?.parse().ok()?;
    Some(HostStatus::Alive {
        pid,
        last_output_ms,
    })
}
