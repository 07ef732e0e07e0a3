//! A sweep: one piece of work in every selected repository at once, under a limit, each result
//! recorded as it comes and everything each printed kept in a file.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mahavishnu_core::{Result, process};

use crate::catalog::Repo;
use crate::store::{Outcome, RepoResult};

/// Reports progress: repositories done, of how many, and what just ended.
pub type Progress<'a> = &'a (dyn Fn(usize, usize, &str) + Send + Sync);

/// The result of a repository that is not there any more.
pub fn missing(repo: Repo) -> RepoResult {
    let why = if repo.path.exists() {
        format!("{} is not a git repository any more", repo.path.display())
    } else {
        format!("{} does not exist any more", repo.path.display())
    };
    RepoResult {
        repo: repo.name,
        path: repo.path,
        status: Outcome::Missing,
        exit_code: None,
        duration_ms: 0,
        last_line: why,
        output: None,
        detail: serde_json::Value::Null,
    }
}

/// How a command run to completion in a directory ended.
#[derive(Clone, Debug)]
pub struct Ran {
    /// How it ended: ok, failed, timed out, or error (it could not start).
    pub status: Outcome,
    /// Its exit code, when it ended by itself.
    pub exit_code: Option<i32>,
    /// How long it took.
    pub duration: Duration,
    /// The last line it printed, or why it did not run.
    pub last_line: String,
}

/// Runs `command` (a program and its arguments, never through a shell) in `dir`, writing everything
/// it prints into `output`, for at most `timeout` (then its whole process group is killed).
pub async fn run(command: &[String], dir: &Path, timeout: Duration, output: &Path) -> Ran {
    let started = Instant::now();
    let failed = |message: String| Ran {
        status: Outcome::Error,
        exit_code: None,
        duration: started.elapsed(),
        last_line: message,
    };
    let Some((program, args)) = command.split_first() else {
        return failed("no command given".into());
    };
    let file = match mahavishnu_core::paths::create_private_file(output) {
        Ok(file) => file,
        Err(e) => return failed(format!("cannot write {}: {e}", output.display())),
    };
    let mut child = tokio::process::Command::new(program);
    child.args(args).current_dir(dir);
    let child = match process::spawn_in_group_into(&mut child, file) {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return failed(format!("`{program}` was not found on PATH"));
        }
        Err(e) => return failed(format!("cannot run `{program}` in {}: {e}", dir.display())),
    };
    let done = match process::wait_in_group(child, timeout, 0).await {
        Ok(done) => done,
        Err(e) => return failed(format!("`{program}` failed: {e}")),
    };
    let last = last_line(output);
    match done.status {
        Some(status) => {
            let code = process::exit_code(status);
            Ran {
                status: if code == 0 {
                    Outcome::Ok
                } else {
                    Outcome::Failed
                },
                exit_code: Some(code),
                duration: started.elapsed(),
                last_line: last,
            }
        }
        None => Ran {
            status: Outcome::TimedOut,
            exit_code: None,
            duration: started.elapsed(),
            last_line: if last.is_empty() {
                format!("stopped after {}", humane(timeout))
            } else {
                last
            },
        },
    }
}

/// `90s`, `5m`, `1h30m`.
pub fn humane(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds % 3600 / 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// The last line of text in `file` with something on it, without its escape sequences, at most
/// 200 characters; only the file's end is read, however long it is.
pub fn last_line(file: &Path) -> String {
    const TAIL: u64 = 8 * 1024;
    let Ok(mut file) = std::fs::File::open(file) else {
        return String::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(TAIL)));
    let mut tail = Vec::new();
    let _ = file.take(TAIL).read_to_end(&mut tail);
    let text = String::from_utf8_lossy(&tail);
    let line = text
        .lines()
        .map(|line| plain(line.rsplit('\r').next().unwrap_or(line)))
        .rfind(|line| !line.trim().is_empty())
        .unwrap_or_default();
    let line = line.trim();
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// A line without its escape sequences (`ESC [ ... letter`) and control characters.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

/// The file that keeps what `repo` printed in sweep `sweep`, in `dir` (made private if needed).
pub fn output_file(dir: &Path, sweep: i64, repo: &str, suffix: &str) -> Result<PathBuf> {
    let sweep_dir = dir.join(sweep.to_string());
    mahavishnu_core::paths::ensure_private_dir(&sweep_dir)?;
    Ok(sweep_dir.join(format!("{repo}{suffix}.log")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_is_the_last_with_text_and_without_colours() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.log");
        std::fs::write(&file, "first\n\x1b[32mtest result: ok\x1b[0m\n\n  \n").unwrap();
        assert_eq!(last_line(&file), "test result: ok");
        std::fs::write(&file, "progress 10%\rprogress 100%\n").unwrap();
        assert_eq!(last_line(&file), "progress 100%");
        let huge = "x".repeat(1_000_000) + "\nthe end\n";
        std::fs::write(&file, huge).unwrap();
        assert_eq!(last_line(&file), "the end");
        std::fs::write(&file, "y".repeat(500)).unwrap();
        assert_eq!(last_line(&file).chars().count(), 201);
        assert_eq!(last_line(&dir.path().join("none")), "");
    }

    #[tokio::test]
    async fn a_command_that_fails_or_runs_too_long_or_cannot_start_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let out = |name: &str| dir.path().join(name);
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let ok = run(
            &argv(&["sh", "-c", "echo one; echo two >&2"]),
            dir.path(),
            Duration::from_secs(10),
            &out("ok"),
        )
        .await;
        assert_eq!((ok.status, ok.exit_code), (Outcome::Ok, Some(0)));
        assert_eq!(ok.last_line, "two");
        assert_eq!(std::fs::read_to_string(out("ok")).unwrap(), "one\ntwo\n");
        let failed = run(
            &argv(&["sh", "-c", "echo broken; exit 3"]),
            dir.path(),
            Duration::from_secs(10),
            &out("f"),
        )
        .await;
        assert_eq!(
            (failed.status, failed.exit_code),
            (Outcome::Failed, Some(3))
        );
        let slow = run(
            &argv(&["sh", "-c", "echo waiting; sleep 30"]),
            dir.path(),
            Duration::from_millis(300),
            &out("s"),
        )
        .await;
        assert_eq!((slow.status, slow.exit_code), (Outcome::TimedOut, None));
        assert_eq!(slow.last_line, "waiting");
        let absent = run(
            &argv(&["no-such-program-here"]),
            dir.path(),
            Duration::from_secs(1),
            &out("a"),
        )
        .await;
        assert_eq!(absent.status, Outcome::Error);
        assert!(
            absent.last_line.contains("not found on PATH"),
            "{}",
            absent.last_line
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(humane(Duration::from_secs(90)), "1m30s");
        assert_eq!(humane(Duration::from_secs(600)), "10m");
        assert_eq!(humane(Duration::from_secs(5400)), "1h30m");
        assert_eq!(humane(Duration::from_secs(7)), "7s");
    }
}
