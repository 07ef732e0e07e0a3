//! Side commands: a program run to completion beside an instance, in its working directory and
//! environment, never through a shell.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use mahavishnu_core::{Error, ExecOutput, ExecRequest, Result, TargetName, process};

/// Runs `request.command` in `cwd` with `env` added, killing it (and what it started) after
/// `request.timeout`.
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
    command.args(args).current_dir(cwd).envs(env);
    let child = process::spawn_in_group(&mut command).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Invalid(format!(
            "cannot run `{program}`: it was not found on PATH (or {} does not exist)",
            cwd.display()
        )),
        _ => Error::target(
            target,
            format!("cannot run `{program}` in {}: {e}", cwd.display()),
        ),
    })?;
    let done = process::wait_in_group(child, request.timeout, usize::MAX)
        .await
        .map_err(|e| Error::target(target, format!("`{program}` failed: {e}")))?;
    Ok(match done.status {
        Some(status) => ExecOutput::finished(
            Some(process::exit_code(status)),
            &done.stdout,
            &done.stderr,
            started,
        ),
        None => ExecOutput::timed_out(request.timeout, started),
    })
}
