//! The file through which a running `serve` is found by the CLI of the same user and state directory:
//! its pid, its loopback address, and the tmux servers whose control client it holds. Written 0600 in
//! the private state directory while serve runs, removed when it stops. A reader believes it only when
//! it is a regular file of its own user that no one else can write, names a process that is alive, and
//! a loopback address: another local user must not be able to send the CLI (and its token) elsewhere.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the state directory.
pub const SERVE_FILE: &str = "serve.json";

/// What a running serve tells the CLI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningServe {
    /// The serve process.
    pub pid: u32,
    /// Where it listens (loopback).
    pub address: SocketAddr,
    /// The tmux servers (socket names) whose control client it holds.
    pub tmux_sockets: Vec<String>,
}

/// Where the file lives in `state_dir`.
pub fn serve_file_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SERVE_FILE)
}

/// Writes the file for this process; it says nothing (and is not written) off loopback.
pub fn announce(path: &Path, serve: &RunningServe) -> std::io::Result<bool> {
    if !serve.address.ip().is_loopback() {
        return Ok(false);
    }
    let bytes = serde_json::to_vec(serve).map_err(std::io::Error::other)?;
    mahavishnu_core::paths::write_private_file(path, &bytes)?;
    Ok(true)
}

/// Removes the file if it is still this process's own.
pub fn withdraw(path: &Path) {
    if find_running(path).is_some_and(|serve| serve.pid == std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

/// The serve the file names, when the file is to be believed and the process is alive.
pub fn find_running(path: &Path) -> Option<RunningServe> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file()
        || meta.uid() != mahavishnu_core::paths::current_uid()
        || meta.mode() & 0o077 != 0
        || meta.len() > 64 * 1024
    {
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let serve: RunningServe = serde_json::from_str(&text).ok()?;
    if !serve.address.ip().is_loopback() || !process_is_ours(serve.pid) {
        return None;
    }
    Some(serve)
}

/// Whether `pid` is a live process of this user.
fn process_is_ours(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let alive = unsafe { libc::kill(raw, 0) } == 0;
    alive
        && std::fs::metadata(format!("/proc/{pid}"))
            .is_ok_and(|meta| meta.uid() == mahavishnu_core::paths::current_uid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn this_serve() -> RunningServe {
        RunningServe {
            pid: std::process::id(),
            address: "127.0.0.1:8677".parse().unwrap(),
            tmux_sockets: vec!["mahavishnu-tmux".into()],
        }
    }

    #[test]
    fn a_file_of_a_live_serve_is_found_and_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = serve_file_path(dir.path());
        assert!(announce(&path, &this_serve()).unwrap());
        assert_eq!(find_running(&path), Some(this_serve()));
        withdraw(&path);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_open_or_foreign_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = serve_file_path(dir.path());
        // A pid that ended.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let ended = child.id();
        child.wait().unwrap();
        let stale = RunningServe {
            pid: ended,
            ..this_serve()
        };
        announce(&path, &stale).unwrap();
        assert_eq!(find_running(&path), None);
        // Writable by others.
        announce(&path, &this_serve()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o622)).unwrap();
        assert_eq!(find_running(&path), None);
        // Another address than loopback.
        let remote = serde_json::json!({
            "pid": std::process::id(), "address": "192.0.2.1:8677", "tmux_sockets": []
        });
        std::fs::remove_file(&path).unwrap();
        mahavishnu_core::paths::write_private_file(&path, remote.to_string().as_bytes()).unwrap();
        assert_eq!(find_running(&path), None);
        // A link to a good file.
        let real = dir.path().join("real.json");
        announce(&real, &this_serve()).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&real, &path).unwrap();
        assert_eq!(find_running(&path), None);
        // Off loopback nothing is announced.
        let open = RunningServe {
            address: "0.0.0.0:8677".parse().unwrap(),
            ..this_serve()
        };
        assert!(!announce(&dir.path().join("other.json"), &open).unwrap());
    }
}
