//! Where Mahavishnu keeps its state and its runtime files.

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
    if let Some(dir) = env_path("XDG_STATE_HOME") {
        return Ok(dir.join("mahavishnu"));
    }
    home().map(|home| home.join(".local/state/mahavishnu"))
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

/// Creates `dir` (and parents) readable only by this user, and checks that it is a usable directory.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let fix = "set MAHAVISHNU_RUNTIME_DIR or --state-dir to a writable directory";
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            Error::Invalid(format!(
                "cannot create directory {}: {e}; {fix}",
                dir.display()
            ))
        })?;
    let meta = std::fs::metadata(dir)
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory; {fix}",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
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

fn home() -> Result<PathBuf> {
    env_path("HOME").ok_or_else(|| {
        Error::Invalid(
            "HOME is not set; set HOME or MAHAVISHNU_STATE_DIR to a writable directory".into(),
        )
    })
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
