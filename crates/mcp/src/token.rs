//! The bearer token of `mahavishnu serve`: made on first use and kept in a file only this user can read,
//! in the state directory, so that a server on loopback is not open to every local process.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mahavishnu_core::Error;
use mahavishnu_core::paths::{create_private_file, current_uid, ensure_private_dir};

/// The token file's name in the state directory.
pub const TOKEN_FILE: &str = "serve-token";

/// Random bytes in a new token (hex-encoded, so the token is twice as long).
const TOKEN_BYTES: usize = 32;

/// The shortest token a file may hold; the same floor `--token` has.
const MIN_TOKEN_CHARS: usize = 16;

/// Where the token lives in `state_dir`.
pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

/// The token in `path`; a new random one is written there first when there is none. A file that is a
/// symbolic link, belongs to someone else or can be read by others is refused, never used or changed.
pub fn load_or_create_token(path: &Path) -> Result<String, Error> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        ensure_private_dir(dir)?;
    }
    if let Some(token) = read_token(path)? {
        return Ok(token);
    }
    let token = random_token()?;
    let placed = write_new(path, &token)
        .map_err(|e| Error::io(format!("cannot write the token to {}", path.display()), e))?;
    if placed {
        return Ok(token);
    }
    // Another `serve` made it first: use that one, so that both agree.
    read_token(path)?
        .ok_or_else(|| Error::Failed(format!("{} vanished while it was read", path.display())))
}

/// The token in `path`, if there is a file (checked as `load_or_create_token` checks it); none is made.
pub fn existing_token(path: &Path) -> Result<Option<String>, Error> {
    read_token(path)
}

/// Writes the whole token under a temporary name and links it into place, so that no reader ever sees
/// a half-written file, and an existing file (or a link planted there) is never replaced. `false`:
/// something was at `path` already.
fn write_new(path: &Path, token: &str) -> std::io::Result<bool> {
    use std::io::Write;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let placed = create_private_file(&temporary)
        .and_then(|mut file| {
            file.write_all(token.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        })
        .and_then(|()| match std::fs::hard_link(&temporary, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        });
    let _ = std::fs::remove_file(&temporary);
    placed
}

/// The token in `path`, or `None` when there is no file.
fn read_token(path: &Path) -> Result<Option<String>, Error> {
    let shown = path.display();
    let renew = format!(
        "remove it (`rm {shown}`) and start `mahavishnu serve` again, which makes a new token (then give \
         your clients the new one)"
    );
    // O_NOFOLLOW: a link planted at the path is refused, not followed to a file the planter chose.
    // O_NONBLOCK: a FIFO planted there cannot make the open hang.
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let target = std::fs::read_link(path)
                .map(|to| format!(" (to {})", to.display()))
                .unwrap_or_default();
            return Err(Error::Failed(format!(
                "the token file {shown} is a symbolic link{target}; the token is kept only in a regular \
                 file of your own. If you did not make the link, someone may have planted it to learn \
                 or choose your token: {renew}"
            )));
        }
        Err(e) => {
            return Err(Error::io(format!("cannot read the token file {shown}"), e));
        }
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot read the token file {shown}"), e))?;
    if !meta.is_file() {
        return Err(Error::Failed(format!(
            "the token file {shown} is not a regular file; {renew}"
        )));
    }
    let uid = current_uid();
    if meta.uid() != uid {
        return Err(Error::Failed(format!(
            "the token file {shown} is owned by uid {}, not by you (uid {uid}): its owner knows or chose \
             the token. Have its owner (or root) remove it, then start `mahavishnu serve` again",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(Error::Failed(format!(
            "the token file {shown} can be read or changed by other users (mode {:04o}), and the token \
             lets anyone who has it run commands as you; {renew}. Only if no one else can have read it, \
             `chmod 600 {shown}` keeps it",
            meta.mode() & 0o7777
        )));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| Error::io(format!("cannot read the token file {shown}"), e))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_CHARS || token.chars().any(char::is_whitespace) {
        return Err(Error::Failed(format!(
            "the token file {shown} does not hold one token of at least {MIN_TOKEN_CHARS} characters; \
             {renew}"
        )));
    }
    Ok(Some(token.to_string()))
}

/// 32 bytes from the kernel's random source, hex-encoded.
fn random_token() -> Result<String, Error> {
    mahavishnu_core::digest::random_hex(TOKEN_BYTES).map_err(|e| {
        Error::io(
            "cannot read random bytes for the token from /dev/urandom",
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let first = random_token().unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, random_token().unwrap());
    }

    #[test]
    fn a_short_or_empty_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = token_path(dir.path());
        std::fs::write(&path, "short\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = load_or_create_token(&path).unwrap_err().to_string();
        assert!(error.contains("rm "), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "short\n");
    }
}
