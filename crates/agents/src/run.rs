//! `agents run`: an agent as a terminal session of Qwen Code or Claude Code, its instructions appended to
//! the CLI's system prompt and the user's prompt submitted; or headless (`-p`) to completion.

use std::path::PathBuf;
use std::time::Duration;

use mahavishnu_core::keys::{Key, NamedKey};
use mahavishnu_core::{Error, InputPart, Instance, Result, ScreenOptions, TargetName, process};
use mahavishnu_orchestrator::{CaptureOptions, LaunchRequest, Orchestrator, WaitCondition};
use serde::Serialize;

use crate::Agent;

/// How to run an agent.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// The CLI's profile: `qwen` or `claude` (or any profile whose CLI takes `--append-system-prompt`).
    pub profile: String,
    /// The prompt to submit.
    pub prompt: String,
    /// The target.
    pub target: Option<TargetName>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Wait for the answer (interactive runs).
    pub wait: bool,
    /// How long to wait for the CLI to be ready and to answer.
    pub timeout: Duration,
    /// Close the session when a wait fails (else it is left running, and the error says so).
    pub close_on_failure: bool,
}

/// What an interactive run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunOutcome {
    /// The session running the agent.
    pub instance: Instance,
    /// What the CLI answered, when waited for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// Starts `agent` as a session and submits the prompt.
pub async fn run_interactive(
    orchestrator: &Orchestrator,
    agent: &Agent,
    request: &RunRequest,
) -> Result<RunOutcome> {
    if request.prompt.trim().is_empty() {
        return Err(Error::Invalid(
            "--prompt is empty; say what the agent should do".into(),
        ));
    }
    let launch = LaunchRequest {
        profile: request.profile.clone(),
        count: 1,
        target: request.target.clone(),
        cwd: request.cwd.clone(),
        args: vec!["--append-system-prompt".into(), agent.body.clone()],
        labels: [("agent".to_string(), agent.name.clone())].into(),
        ..Default::default()
    };
    let mut launched = orchestrator.launch_instances(&launch).await?;
    if let Some(error) = launched.errors.pop() {
        return Err(Error::Invalid(error));
    }
    let instance = launched
        .instances
        .pop()
        .ok_or_else(|| Error::Invalid("nothing was launched".into()))?;
    match submit_and_answer(orchestrator, &instance, request).await {
        Ok(answer) => Ok(RunOutcome {
            instance: orchestrator.recorded(&instance.id)?,
            answer,
        }),
        // The session was started for this run: say what became of it, so that none runs unseen.
        Err(error) => {
            let id = &instance.id;
            let fate = if request.close_on_failure {
                match orchestrator
                    .close_instances(std::slice::from_ref(id), None)
                    .await
                {
                    Ok(outcomes) if outcomes.iter().all(|outcome| outcome.closed) => {
                        format!("the agent's session {id} was closed")
                    }
                    _ => format!(
                        "the agent's session {id} could not be closed; close it with `mahavishnu \
                         terminal close {id}`"
                    ),
                }
            } else {
                format!(
                    "the agent's session {id} is left running: see it with `mahavishnu terminal \
                     capture {id}`, close it with `mahavishnu terminal close {id}` (or run with \
                     --close-on-failure)"
                )
            };
            Err(Error::Failed(format!("{error}; {fate}")))
        }
    }
}

/// Waits for the CLI, submits the prompt and, when asked, waits for the answer.
async fn submit_and_answer(
    orchestrator: &Orchestrator,
    instance: &Instance,
    request: &RunRequest,
) -> Result<Option<String>> {
    let id = instance.id.clone();
    let ready = orchestrator
        .wait(&id, &WaitCondition::Waiting, request.timeout)
        .await?;
    // The prompt would answer the program's own question (trust this folder?) by accident.
    if let Some(question) = ready.question {
        return Err(Error::Failed(format!(
            "{id} asks a question of its own before it takes a prompt: \"{question}\"; answer it \
             (`mahavishnu terminal attach {id}`), then run the agent again"
        )));
    }
    // One line: a newline inside the prompt would submit it early.
    let prompt = request
        .prompt
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let input = [
        InputPart::Text(prompt.clone()),
        InputPart::Key(Key::Named(NamedKey::Enter)),
    ];
    orchestrator.send(&id, &input).await?;
    let answer = if request.wait {
        // First the screen must move (the CLI took the prompt), then settle waiting for input again.
        let before = orchestrator.capture(&id, CaptureOptions::default()).await?;
        let started = std::time::Instant::now();
        while orchestrator.capture(&id, CaptureOptions::default()).await? == before
            && started.elapsed() < request.timeout
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        orchestrator
            .wait(&id, &WaitCondition::Waiting, request.timeout)
            .await?;
        let options = CaptureOptions {
            lines: None,
            full: false,
            screen: ScreenOptions {
                scrollback: true,
                ansi: false,
            },
        };
        let screen = orchestrator.capture(&id, options).await?;
        Some(answer_after(&screen, &prompt, &instance.waiting.patterns))
    } else {
        None
    };
    Ok(answer)
}

/// The lines of `screen` after the last one showing `prompt`, up to the CLI's input area.
fn answer_after(screen: &str, prompt: &str, waiting: &[String]) -> String {
    let lines: Vec<&str> = screen.lines().collect();
    let probe: String = prompt.chars().take(40).collect();
    let start = lines
        .iter()
        .rposition(|line| line.contains(probe.as_str()))
        .map_or(0, |index| index + 1);
    let patterns: Vec<regex::Regex> = waiting
        .iter()
        .filter_map(|pattern| regex::Regex::new(pattern).ok())
        .collect();
    let end = lines[start..]
        .iter()
        .position(|line| patterns.iter().any(|pattern| pattern.is_match(line)))
        .map_or(lines.len(), |offset| start + offset);
    let is_frame = |line: &str| {
        line.trim()
            .chars()
            .all(|c| matches!(c, '─' | '━' | '│' | '╭' | '╮' | '╰' | '╯' | '-' | '=' | ' '))
    };
    let mut answer: Vec<&str> = lines[start..end].to_vec();
    while answer.last().is_some_and(|line| is_frame(line)) {
        answer.pop();
    }
    while answer.first().is_some_and(|line| line.trim().is_empty()) {
        answer.remove(0);
    }
    let mut text = answer
        .iter()
        .map(|line| line.trim_end())
        .collect::<Vec<_>>()
        .join("\n");
    text.push('\n');
    text
}

/// What a headless run printed.
#[derive(Clone, Debug, Serialize)]
pub struct PrintOutcome {
    /// The CLI's exit code (128 + signal when killed by one).
    pub exit_code: i32,
    /// Its standard output: the answer.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs the CLI headless (`-p PROMPT`) with the agent's instructions appended to its system prompt, to
/// completion or `request.timeout`.
pub async fn run_print(
    orchestrator: &Orchestrator,
    agent: &Agent,
    request: &RunRequest,
) -> Result<PrintOutcome> {
    let extra = [
        "--append-system-prompt".to_string(),
        agent.body.clone(),
        "-p".into(),
        request.prompt.clone(),
    ];
    let (command, env) = orchestrator.profile_command(&request.profile, &extra)?;
    let dir = match &request.cwd {
        Some(dir) => dir.clone(),
        None => std::env::current_dir()
            .map_err(|e| Error::io("cannot read the current directory", e))?,
    };
    let mut child = tokio::process::Command::new(&command[0]);
    child.args(&command[1..]).current_dir(&dir).envs(&env);
    let started = process::spawn_in_group(&mut child)
        .map_err(|e| Error::io(format!("cannot run {}", command[0]), e))?;
    let done = process::wait_in_group(started, request.timeout, usize::MAX)
        .await
        .map_err(|e| Error::io(format!("cannot run {}", command[0]), e))?;
    let status = done.status.ok_or_else(|| {
        Error::Invalid(format!(
            "`{}` did not finish within {:.0} s; raise --timeout",
            request.profile,
            request.timeout.as_secs_f64()
        ))
    })?;
    Ok(PrintOutcome {
        exit_code: process::exit_code(status),
        stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_what_follows_the_prompt_up_to_the_input_box() {
        let screen = "banner\n> summarise the repo\n\n✦ It is a Rust workspace.\n  Four crates.\n\n────────\n>   Type your message or @path\n────────\n";
        let answer = answer_after(
            screen,
            "summarise the repo",
            &["Type your message".to_string()],
        );
        assert_eq!(answer, "✦ It is a Rust workspace.\n  Four crates.\n");
    }
}
