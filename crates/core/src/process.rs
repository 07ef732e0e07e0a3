//! Child processes run to completion: each in a process group of its own, so that a timeout ends the
//! programs it started too, with what they printed; and how a process's end reads as an exit code.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// A process's exit code, with 128 + the signal number for a process killed by a signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| signal_exit_code(status.signal().unwrap_or(0)))
}

/// The exit code that stands for a process killed by `signal`, as shells report it: 128 + signal.
pub fn signal_exit_code(signal: i32) -> i32 {
    128 + signal
}

/// How a child run to completion ended.
#[derive(Debug)]
pub struct Completed {
    /// How it exited; `None` when it ran out of time and its process group was killed.
    pub status: Option<ExitStatus>,
    /// Its standard output: at most the bytes asked for, and one more when there was more.
    pub stdout: Vec<u8>,
    /// Its standard error, kept the same way.
    pub stderr: Vec<u8>,
}

/// Starts `command` in a process group of its own, with no input and its output captured.
pub fn spawn_in_group(command: &mut Command) -> std::io::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Starts `command` as [`spawn_in_group`] does, but with its output and errors written, in the order
/// they come, straight into `output` (a file): nothing is held in memory, however much it prints.
pub fn spawn_in_group_into(command: &mut Command, output: std::fs::File) -> std::io::Result<Child> {
    let errors = output.try_clone()?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(output))
        .stderr(Stdio::from(errors))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Waits for a child started by [`spawn_in_group`] at most `timeout`, then kills its whole process
/// group (its own children too). Of each output the first `keep` bytes are kept (and one more, to
/// tell that there was more); the rest is read and dropped, so that a talkative child never blocks
/// on a full pipe. When the group is dropped before the end (the caller gave up), it is killed too.
pub async fn wait_in_group(
    mut child: Child,
    timeout: Duration,
    keep: usize,
) -> std::io::Result<Completed> {
    let mut group = GroupGuard(child.id());
    let stdout = child.stdout.take().map(|pipe| read_capped(pipe, keep));
    let stderr = child.stderr.take().map(|pipe| read_capped(pipe, keep));
    let status = tokio::select! {
        status = child.wait() => Some(status?),
        _ = tokio::time::sleep(timeout) => None,
    };
    if status.is_none() {
        // Killed while the child is still ours (not yet reaped), so that its pid, which is the
        // group's id, cannot belong to anyone else yet.
        group.kill();
        child.wait().await?;
    }
    group.0 = None;
    Ok(Completed {
        status,
        stdout: collect(stdout).await,
        stderr: collect(stderr).await,
    })
}

/// Kills the process group of a child that has not been waited for when dropped.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(group) = self.0.take().and_then(|id| i32::try_from(id).ok()) {
            // SAFETY: killpg takes plain integers; the group is the unreaped child's, so it is ours.
            unsafe {
                libc::killpg(group, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_capped(
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
    keep: usize,
) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        while let Ok(n) = pipe.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let room = keep.saturating_add(1).saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
        kept
    })
}

/// What a pipe gave; a program the child left running in the background may hold the pipe open, so
/// what is there is taken without waiting for it to close.
async fn collect(reader: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    let Some(reader) = reader else {
        return Vec::new();
    };
    match tokio::time::timeout(Duration::from_millis(100), reader).await {
        Ok(Ok(bytes)) => bytes,
        _ => Vec::new(),
    }
}

/// Starts a helper that outlives its caller (a pty host, a deploy supervisor): in a session of its
/// own, away from the caller's terminal, with no input and its output piped until it says its first
/// line, which is returned (trimmed; empty when it ended without one). It is reaped whenever it ends.
/// `None` when no line came within `patience`.
pub async fn start_detached(
    command: &mut Command,
    patience: Duration,
) -> std::io::Result<Option<String>> {
    use tokio::io::AsyncBufReadExt;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe; it detaches the helper from the caller's terminal and
    // session, so that it outlives the command that started it.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let stdout = child.stdout.take();
    let mut first = String::new();
    let read = match stdout {
        Some(stdout) => {
            tokio::time::timeout(
                patience,
                tokio::io::BufReader::new(stdout).read_line(&mut first),
            )
            .await
        }
        None => Ok(Ok(0)),
    };
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    match read {
        Ok(Ok(_)) => Ok(Some(first.trim().to_string())),
        Ok(Err(e)) => Err(e),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_timeout_kills_the_children_of_the_child_too() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild");
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "sh -c 'echo $$ > {}; exec sleep 100' >/dev/null & echo started; wait",
            pid_file.display()
        ));
        let child = spawn_in_group(&mut command).unwrap();
        let done = wait_in_group(child, Duration::from_millis(500), 1024)
            .await
            .unwrap();
        assert!(done.status.is_none(), "it ran out of time");
        assert_eq!(done.stdout, b"started\n");
        let grandchild: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed, and reaped by init soon after: it no longer runs.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{grandchild}")).exists()
            && !is_zombie(grandchild)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the grandchild {grandchild} still runs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test]
    async fn output_is_kept_up_to_the_limit_and_the_exit_code_reads_signals() {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("head -c 100000 /dev/zero; echo oops >&2; kill -TERM $$");
        let child = spawn_in_group(&mut command).unwrap();
        let done = wait_in_group(child, Duration::from_secs(10), 10)
            .await
            .unwrap();
        assert_eq!(
            done.stdout.len(),
            11,
            "ten bytes kept, and one to tell there was more"
        );
        assert_eq!(done.stderr, b"oops\n");
        assert_eq!(exit_code(done.status.unwrap()), 128 + 15);
    }
}
