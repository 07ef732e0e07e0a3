//! Where Mahavishnu keeps its state and its runtime files.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The state directory: `--state-dir`/`MAHAVISHNU_STATE_DIR`, else `$XDG_STATE_HOME/mahavishnu`, else
/// `~/.local/state/mahavishnu`.
pub fn state_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = env_path("MAHAVISHNU_STATE_DIR") {
        return Ok(dir);
    }
    default_state_dir()
}

/// The state directory a user gets without choosing one: `$XDG_STATE_HOME/mahavishnu`, else
/// `~/.local/state/mahavishnu`.
pub fn default_state_dir() -> Result<PathBuf> {
    if let Some(dir) = env_path("XDG_STATE_HOME") {
        return Ok(dir.join("mahavishnu"));
    }
    home().map(|home| home.join(".local/state/mahavishnu"))
}

/// What tells the live sessions of one state directory from another's: `None` for the default state
/// directory, else a short tag of its path. A state directory chosen with `--state-dir` or
/// `MAHAVISHNU_STATE_DIR` is a setup of its own (a test, a second setup): its tmux server, pty sockets
/// and worktrees are its own too, so that it never sees or touches another's sessions.
pub fn isolation_tag(state_dir: &Path) -> Option<String> {
    let default = default_state_dir().ok();
    let canonical = |dir: &Path| std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if default.as_deref().map(canonical) == Some(canonical(state_dir)) {
        return None;
    }
    let digest = crate::digest::sha256_hex(canonical(state_dir).as_os_str().as_encoded_bytes());
    Some(digest[..8].to_string())
}

/// The runtime directory for sockets: `MAHAVISHNU_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/mahavishnu`, else
/// `/tmp/mahavishnu-<uid>`. Created with mode 0700.
pub fn runtime_dir() -> Result<PathBuf> {
    let dir = env_path("MAHAVISHNU_RUNTIME_DIR")
        .or_else(|| env_path("XDG_RUNTIME_DIR").map(|dir| dir.join("mahavishnu")))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("mahavishnu-{}", current_uid())));
    ensure_private_dir(&dir)?;
    Ok(dir)
}

/// The user configuration file: `$XDG_CONFIG_HOME/mahavishnu/config.toml` or `~/.config/...`.
pub fn user_config_file() -> Option<PathBuf> {
    env_path("MAHAVISHNU_CONFIG")
        .or_else(|| env_path("XDG_CONFIG_HOME").map(|dir| dir.join("mahavishnu/config.toml")))
        .or_else(|| {
            home()
                .ok()
                .map(|home| home.join(".config/mahavishnu/config.toml"))
        })
}

/// Makes sure `dir` exists and belongs to this user alone, the way tmux guards its socket directory:
/// the directory itself is looked at without following a symbolic link, and it must be a real
/// directory owned by this user; group and other permission bits are removed (and the directory is
/// refused when they cannot be). A directory above it that another user could rename it out of (owned
/// by someone other than this user or root, or writable by others without the sticky bit) is refused
/// too. A missing directory is made with mode 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| unusable(dir, &format!("its parent cannot be created: {e}")))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(unusable(dir, &format!("it cannot be created: {e}"))),
    }
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| unusable(dir, &format!("it cannot be read: {e}")))?;
    let uid = current_uid();
    if meta.file_type().is_symlink() {
        let points_to = std::fs::read_link(dir)
            .map(|to| format!(" (to {})", to.display()))
            .unwrap_or_default();
        return Err(unusable(
            dir,
            &format!(
                "it is a symbolic link{points_to}, owned by uid {}; private files are kept only in a real \
                 directory. If you made the link, point the setting at its target instead; if not, another \
                 user may have planted it: remove it",
                meta.uid()
            ),
        ));
    }
    if !meta.is_dir() {
        return Err(unusable(dir, "it is not a directory"));
    }
    if meta.uid() != uid {
        return Err(unusable(
            dir,
            &format!(
                "it is owned by uid {}, not by you (uid {uid}): another user may have made it to read or forge \
                 what goes through it. Have its owner (or root) remove it",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        // Opened without following links, so the mode change lands on what was checked above.
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| unusable(dir, &format!("it cannot be opened: {e}")))?;
        let _ = handle.set_permissions(std::fs::Permissions::from_mode(0o700));
        let mode = handle
            .metadata()
            .map_err(|e| unusable(dir, &format!("it cannot be read: {e}")))?
            .mode();
        if mode & 0o077 != 0 {
            return Err(unusable(
                dir,
                &format!(
                    "its mode is {:04o} and cannot be made private (0700) on this file system",
                    mode & 0o7777
                ),
            ));
        }
    }
    check_ancestors(dir, uid)
}

/// Refuses a directory above `dir` through which another user could replace `dir`.
fn check_ancestors(dir: &Path, uid: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(real) = std::fs::canonicalize(dir) else {
        return Ok(());
    };
    for ancestor in real.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let foreign_owner = meta.uid() != uid && meta.uid() != 0;
        let open_to_others = meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0;
        if foreign_owner || open_to_others {
            return Err(unusable(
                dir,
                &format!(
                    "the directory above it, {}, is {}, so another user could replace it",
                    ancestor.display(),
                    if foreign_owner {
                        format!("owned by uid {}", meta.uid())
                    } else {
                        "writable by every user without the sticky bit".to_string()
                    }
                ),
            ));
        }
    }
    Ok(())
}

fn unusable(dir: &Path, why: &str) -> Error {
    Error::Failed(format!(
        "{} is not safe to keep private files in: {why}. Or set MAHAVISHNU_RUNTIME_DIR (sockets) or \
         MAHAVISHNU_STATE_DIR / --state-dir (state) to a directory of your own",
        dir.display()
    ))
}

/// Creates a new file readable and writable by this user only; an existing file or a symbolic link at
/// `path` is an error, never followed or reused.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `bytes` to `path` atomically (a new private file renamed over it), readable by this user
/// only.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension(format!(
        "tmp{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    let written = create_private_file(&temporary).and_then(|mut file| file.write_all(bytes));
    match written.and_then(|()| std::fs::rename(&temporary, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            Err(e)
        }
    }
}

/// Removes group and other permissions from an existing file in a directory already proven private
/// (so nobody else can swap it between the look and the change); a link there is refused, a missing
/// file is fine. The file is never opened: opening and closing SQLite's shared-memory file beside a
/// running database made other processes using it die of SIGBUS under load (POSIX locks belong to a
/// process and go with any of its descriptors, so SQLite's files are best left to SQLite).
pub fn make_file_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o700))?;
    }
    Ok(())
}

/// The project of a directory: the top of the git work tree it lies in, else the directory itself.
pub fn project_of(dir: &Path) -> PathBuf {
    let mut current = Some(dir);
    while let Some(candidate) = current {
        if candidate.join(".git").exists() {
            return candidate.to_path_buf();
        }
        current = candidate.parent();
    }
    dir.to_path_buf()
}

/// The executable `program` resolves to: a path as given, or the first match on PATH.
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).then(|| std::fs::canonicalize(&path).unwrap_or(path));
    }
    let search = std::env::var_os("PATH")?;
    std::env::split_paths(&search)
        .map(|dir| dir.join(program))
        .find(|path| executable(path))
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// `path` with a leading `~/` (or a lone `~`) replaced by the home directory, as a shell would: the
/// configuration's paths are often written so.
pub fn expand_home(path: &Path) -> PathBuf {
    let rest = match path.strip_prefix("~") {
        Ok(rest) => rest,
        Err(_) => return path.to_path_buf(),
    };
    match home() {
        Ok(home) => home.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

fn home() -> Result<PathBuf> {
    env_path("HOME").ok_or_else(|| {
        Error::Invalid(
            "HOME is not set; set HOME or MAHAVISHNU_STATE_DIR to a writable directory".into(),
        )
    })
}

/// This process's user id.
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(test)]
mod home_tests {
    use super::*;

    #[test]
    fn a_leading_tilde_is_the_home_directory() {
        let home = home().unwrap();
        assert_eq!(
            expand_home(Path::new("~/.kube/prod")),
            home.join(".kube/prod")
        );
        assert_eq!(expand_home(Path::new("~")), home);
        assert_eq!(expand_home(Path::new("/etc/~x")), Path::new("/etc/~x"));
        assert_eq!(expand_home(Path::new("~other/x")), Path::new("~other/x"));
    }
}
