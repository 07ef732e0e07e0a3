//! `mahavishnu hook`: the entry Claude Code and Qwen Code call. It reads their JSON on stdin, runs the
//! project's hooks, and answers by their contract: exit 0 with optional JSON on stdout; exit 2 with the
//! reason on stderr only when a required hook fails on an event that can block. It answers fast: work
//! that may outlive the answer continues in a detached worker, and is still recorded.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use mahavishnu_core::Error;
use mahavishnu_lifecycle::payload::{HookPayload, MAX_PAYLOAD_BYTES, can_block};
use mahavishnu_lifecycle::{HookContext, Lifecycle, Selection};

use crate::cli::{GlobalArgs, HookWorkerArgs, SelectionArg};
use crate::context;

/// How long stdin may stay open before the payload read so far is taken as all there is.
const STDIN_PATIENCE: Duration = Duration::from_millis(1000);

/// Reads stdin until it closes, it holds more than a payload may, or the patience runs out.
fn read_payload() -> Vec<u8> {
    let shared = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let buffer = Arc::clone(&shared);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match stdin.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut buffer = buffer
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    buffer.extend_from_slice(&chunk[..n]);
                    if buffer.len() > MAX_PAYLOAD_BYTES {
                        break;
                    }
                }
            }
        }
        let _ = done_tx.send(());
    });
    let _ = done_rx.recv_timeout(STDIN_PATIENCE);
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Parses the payload and moves into its project, so that the project's configuration applies.
fn enter_project(bytes: &[u8]) -> Result<(HookPayload, PathBuf)> {
    let payload = HookPayload::parse(bytes)?;
    let cwd = match &payload.cwd {
        Some(cwd) => cwd.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    if !cwd.is_dir() {
        return Err(Error::Invalid(format!(
            "the payload's cwd {} does not exist",
            cwd.display()
        ))
        .into());
    }
    let project = Lifecycle::project_of(&cwd)?;
    std::env::set_current_dir(&project)
        .with_context(|| format!("cannot enter {}", project.display()))?;
    Ok((payload, project))
}

/// Answers the caller. Any failure of Mahavishnu's own is exit code 1 (reported, never blocking): exit
/// code 2 is reserved for a required hook that failed on an event that can block.
pub async fn run(global: &GlobalArgs) -> Result<ExitCode> {
    match answer(global).await {
        Ok(code) => Ok(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn answer(global: &GlobalArgs) -> Result<ExitCode> {
    let bytes = read_payload();
    let (payload, project) = enter_project(&bytes)?;
    let lifecycle = Lifecycle::new(Arc::new(context::orchestrator(global)?));
    let event = payload.hook_event_name.as_str();
    // What workflows with `on_event` wait for (`serve` follows the event stream). The caller's hooks
    // run even when it cannot be recorded.
    let _ = lifecycle.orchestrator().store().record_event(
        None,
        "hook",
        serde_json::json!({
            "event": event,
            "session": payload.session_id,
            "project": project,
        }),
    );
    match event {
        "SessionStart" => {
            let outcome = lifecycle
                .session_start(&project, payload.session_id.clone(), payload.source.clone())
                .await?;
            for note in &outcome.notes {
                eprintln!("mahavishnu: {note}");
            }
            for run in outcome.runs.iter().filter(|run| !run.success) {
                eprintln!(
                    "mahavishnu: hook `{}` failed: {}",
                    run.hook,
                    run.error.as_deref().unwrap_or("")
                );
            }
            if !outcome.launched.is_empty() {
                let sessions: Vec<String> = outcome
                    .launched
                    .iter()
                    .map(|instance| format!("{} ({})", instance.id, instance.profile))
                    .collect();
                let context = format!(
                    "Mahavishnu launched terminal sessions for this project: {}. Drive them with \
                     `mahavishnu terminal send ID TEXT`, `mahavishnu terminal wait ID --waiting` and \
                     `mahavishnu terminal capture ID`.",
                    sessions.join(", ")
                );
                let answer = serde_json::json!({
                    "hookSpecificOutput": { "hookEventName": "SessionStart", "additionalContext": context }
                });
                println!("{answer}");
            }
            Ok(ExitCode::SUCCESS)
        }
        "SessionEnd" => {
            if lifecycle
                .project_hooks(&project)?
                .would_run(event, Selection::All)
            {
                detach(global, SelectionArg::All, &bytes)?;
            } else if let Some(id) = &payload.session_id {
                lifecycle
                    .session_end(&project, id, payload.reason.clone(), false)
                    .await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            let context = HookContext::from_payload(&payload, project.clone());
            let hooks = lifecycle.project_hooks(&project)?;
            if can_block(event) {
                let outcome = lifecycle
                    .run_hooks(&hooks, &context, Selection::Required, false)
                    .await?;
                if let Some(reason) = outcome.blocked {
                    eprintln!("{reason}");
                    return Ok(ExitCode::from(2));
                }
            }
            // What remains (the optional hooks of an event that can block, or all of any other) finishes
            // after the answer.
            let (rest, worker) = if can_block(event) {
                (Selection::Optional, SelectionArg::Optional)
            } else {
                (Selection::All, SelectionArg::All)
            };
            if hooks.would_run(event, rest) {
                detach(global, worker, &bytes)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Starts a worker in its own session (so the caller's timeout cannot kill it) and hands it the payload.
fn detach(global: &GlobalArgs, selection: SelectionArg, payload: &[u8]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find the mahavishnu executable")?;
    let mut command = std::process::Command::new(exe);
    if let Some(state) = &global.state_dir {
        command.arg("--state-dir").arg(state);
    }
    let selection = match selection {
        SelectionArg::All => "all",
        SelectionArg::Optional => "optional",
    };
    command
        .args(["__hook-worker", "--selection", selection])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().context("cannot start the hook worker")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(payload)
            .context("cannot hand the payload to the hook worker")?;
    }
    Ok(())
}

/// The detached worker: finishes the event's hooks and records them.
pub async fn worker(global: &GlobalArgs, args: HookWorkerArgs) -> Result<ExitCode> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(MAX_PAYLOAD_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    let (payload, project) = enter_project(&bytes)?;
    let lifecycle = Lifecycle::new(Arc::new(context::orchestrator(global)?));
    if payload.hook_event_name == "SessionEnd" {
        let id = payload.session_id.clone().unwrap_or_default();
        lifecycle
            .session_end(&project, &id, payload.reason.clone(), true)
            .await?;
    } else {
        let selection = match args.selection {
            SelectionArg::All => Selection::All,
            SelectionArg::Optional => Selection::Optional,
        };
        lifecycle
            .run_event(
                &HookContext::from_payload(&payload, project),
                selection,
                true,
            )
            .await?;
    }
    Ok(ExitCode::SUCCESS)
}
