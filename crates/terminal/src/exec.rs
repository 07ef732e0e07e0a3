//! Side commands: a program run to completion beside an instance, in its working directory and
//! environment, never through a shell.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use mahavishnu_core::{Error, ExecOutput, ExecRequest, Result, TargetName};

/// Runs `request.command` in `cwd` with `env` added, killing it after `request.timeout`.
pub async fn run_side_command(
    target: &TargetName,
    request: &ExecRequest,
    cwd: &Path,
    env: &BTreeMap<String, String>,
) -> Result<ExecOutput> {
    let (program, args) = request.command.split_first().ok_or_else(|| {
        Error::Invalid("no command given; pass it after `--`, e.g. `-- ls -la`".into())
    })?;
    let started = Instant::now();
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Invalid(format!(
            "cannot run `{program}`: it was not found on PATH (or {} does not exist)",
            cwd.display()
        )),
        _ => Error::target(
            target,
            format!("cannot run `{program}` in {}: {e}", cwd.display()),
        ),
    })?;
    match tokio::time::timeout(request.timeout, child.wait_with_output()).await {
        Ok(output) => {
            let output =
                output.map_err(|e| Error::target(target, format!("`{program}` failed: {e}")))?;
            let code = exit_code(output.status);
            Ok(ExecOutput::finished(
                Some(code),
                &output.stdout,
                &output.stderr,
                started,
            ))
        }
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => Ok(ExecOutput::timed_out(request.timeout, started)),
    }
}

/// A process's exit code, with 128 + the signal number for a process killed by a signal.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
