//! `mahavishnu session|hooks|trust|init|checkpoint`: thin over the lifecycle service.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use mahavishnu_core::Error;
use mahavishnu_lifecycle::checkpoint::Repository;
use mahavishnu_lifecycle::init::{self, Client, Scope};
use mahavishnu_lifecycle::payload::{HookPayload, check_event};
use mahavishnu_lifecycle::store::{HookRun, SessionRecord, SessionStore};
use mahavishnu_lifecycle::{EventOutcome, HookContext, Lifecycle, Selection, hooks};

use crate::cli::{
    CheckpointArgs, CheckpointCommand, ClientArg, GlobalArgs, HooksCommand, InitArgs, ScopeArg,
    SessionCommand, TrustArgs,
};
use crate::context;
use crate::output::{self, emit, emit_list};

fn lifecycle(global: &GlobalArgs) -> Result<Lifecycle> {
    Ok(Lifecycle::new(Arc::new(context::orchestrator(global)?)))
}

fn project(dir: Option<&Path>) -> Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    Ok(Lifecycle::project_of(&dir)?)
}

fn session_table(sessions: &[SessionRecord]) -> String {
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|session| {
            vec![
                session.id.clone(),
                session.state.clone(),
                output::age(session.started_at.age()),
                session.instances.join(" "),
                session.project.display().to_string(),
            ]
        })
        .collect();
    output::table(&["SESSION", "STATE", "AGE", "INSTANCES", "PROJECT"], &rows)
}

fn runs_table(runs: &[HookRun]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            let result = if run.success {
                "ok".to_string()
            } else {
                format!("failed: {}", run.error.as_deref().unwrap_or(""))
            };
            vec![
                run.started_at.to_string(),
                run.session_id.clone().unwrap_or_else(|| "-".into()),
                run.event.clone(),
                run.hook.clone(),
                result,
                run.exit_code.map_or("-".into(), |code| code.to_string()),
                format!("{}ms", run.duration_ms),
            ]
        })
        .collect();
    output::table(
        &[
            "TIME", "SESSION", "EVENT", "HOOK", "RESULT", "EXIT", "DURATION",
        ],
        &rows,
    )
}

fn print_outcome(format: output::OutputFormat, outcome: &EventOutcome) -> Result<()> {
    for note in &outcome.notes {
        eprintln!("note: {note}");
    }
    emit(format, outcome, || {
        let mut text = match &outcome.session {
            Some(session) if outcome.applied => {
                format!("session {} {}\n", session.id, session.state)
            }
            Some(session) => format!(
                "session {} is already {}; nothing ran\n",
                session.id, session.state
            ),
            None => "no such session; nothing ran\n".into(),
        };
        if !outcome.runs.is_empty() {
            text.push_str(&runs_table(&outcome.runs));
        }
        text
    })
}

pub async fn session(global: &GlobalArgs, command: SessionCommand) -> Result<ExitCode> {
    let lifecycle = lifecycle(global)?;
    let store = lifecycle.orchestrator().store();
    match command {
        SessionCommand::Start(args) => {
            let project = project(args.project.as_deref())?;
            let outcome = lifecycle
                .session_start(&project, args.id, Some("manual".into()))
                .await?;
            print_outcome(global.output, &outcome)?;
        }
        SessionCommand::End(args) => {
            let project = project(args.project.as_deref())?;
            let id = match args.id {
                Some(id) => id,
                None => lifecycle.only_active_session(&project)?,
            };
            let outcome = lifecycle
                .session_end(&project, &id, Some("manual".into()), false)
                .await?;
            print_outcome(global.output, &outcome)?;
        }
        SessionCommand::Status(args) => {
            let session = store.session(&args.id)?.ok_or_else(|| {
                Error::Invalid(format!(
                    "no session `{}`; see `mahavishnu session list`",
                    args.id
                ))
            })?;
            emit(global.output, &session, || {
                session_table(std::slice::from_ref(&session))
            })?;
        }
        SessionCommand::List(args) => {
            let project = args
                .project
                .as_deref()
                .map(|dir| project(Some(dir)))
                .transpose()?;
            let sessions = store.sessions(project.as_deref())?;
            emit_list(global.output, "sessions", &sessions, || {
                session_table(&sessions)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn hooks(global: &GlobalArgs, command: HooksCommand) -> Result<ExitCode> {
    let lifecycle = lifecycle(global)?;
    match command {
        HooksCommand::List(args) => {
            let listed = lifecycle.project_hooks(&project(args.project.as_deref())?)?;
            emit(global.output, &listed, || {
                let rows: Vec<Vec<String>> = listed
                    .hooks
                    .iter()
                    .map(|entry| {
                        let mut flags = Vec::new();
                        if !entry.hook.is_enabled() {
                            flags.push("disabled");
                        }
                        if entry.hook.required {
                            flags.push("required");
                        }
                        if !entry.trusted {
                            flags.push("untrusted");
                        }
                        vec![
                            entry.event.clone(),
                            hooks::describe(&entry.hook),
                            humantime::format_duration(entry.hook.timeout()).to_string(),
                            flags.join(","),
                            entry.origin.clone(),
                        ]
                    })
                    .collect();
                let mut text = output::table(&["EVENT", "HOOK", "TIMEOUT", "FLAGS", "FROM"], &rows);
                if let Some(message) = &listed.untrusted_message {
                    text.push_str(&format!("\n{message}\n"));
                }
                text
            })?;
        }
        HooksCommand::Runs(args) => {
            let runs = lifecycle
                .orchestrator()
                .store()
                .hook_runs(args.session.as_deref(), args.limit)?;
            emit_list(global.output, "runs", &runs, || runs_table(&runs))?;
        }
        HooksCommand::Test(args) => {
            check_event(&args.event)?;
            let mut payload = match &args.payload {
                Some(file) => {
                    let bytes = std::fs::read(file)
                        .with_context(|| format!("cannot read {}", file.display()))?;
                    HookPayload::parse(&bytes)?
                }
                None => HookPayload {
                    session_id: Some("hooks-test".into()),
                    ..Default::default()
                },
            };
            payload.hook_event_name = args.event.clone();
            let dir = args.project.clone().or_else(|| payload.cwd.clone());
            let project = project(dir.as_deref())?;
            let context = HookContext::from_payload(&payload, project.clone());
            if args.dry_run {
                let listed = lifecycle.project_hooks(&project)?;
                let plan: Vec<serde_json::Value> = listed
                    .hooks
                    .iter()
                    .filter(|entry| entry.event == args.event)
                    .map(|entry| {
                        let verdict = if !entry.hook.is_enabled() {
                            "skipped: disabled".to_string()
                        } else if !entry.trusted {
                            "skipped: not trusted".to_string()
                        } else {
                            match hooks::conditions_hold(&entry.hook.when, &context) {
                                Ok(()) => "would run".to_string(),
                                Err(why) => format!("skipped: {why}"),
                            }
                        };
                        let command = entry.hook.command.as_deref().map(hooks::render);
                        serde_json::json!({ "hook": hooks::describe(&entry.hook), "verdict": verdict, "command": command })
                    })
                    .collect();
                emit(global.output, &plan, || {
                    plan.iter()
                        .map(|step| {
                            let command = step["command"]
                                .as_str()
                                .map(|c| format!("\n    $ {c}"))
                                .unwrap_or_default();
                            format!(
                                "{}: {}{command}\n",
                                step["hook"].as_str().unwrap_or(""),
                                step["verdict"].as_str().unwrap_or("")
                            )
                        })
                        .collect()
                })?;
            } else {
                let outcome = lifecycle.run_event(&context, Selection::All, false).await?;
                print_outcome(
                    global.output,
                    &EventOutcome {
                        applied: true,
                        ..outcome.clone()
                    },
                )?;
                if outcome.runs.iter().any(|run| !run.success) {
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn trust(global: &GlobalArgs, args: TrustArgs) -> Result<ExitCode> {
    let project = project(args.dir.as_deref())?;
    // The project's own configuration decides what is trusted.
    std::env::set_current_dir(&project)
        .with_context(|| format!("cannot enter {}", project.display()))?;
    let lifecycle = lifecycle(global)?;
    if args.remove {
        let removed = lifecycle.distrust(&project)?;
        println!(
            "{} {}",
            if removed {
                "no longer trusted:"
            } else {
                "was not trusted:"
            },
            project.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let trust = lifecycle.orchestrator().config().project_trust.clone();
    let view = TrustView {
        project: project.clone(),
        file: trust.as_ref().map(|trust| trust.file.clone()),
        sha256: trust.as_ref().map(|trust| trust.sha256.clone()),
        was_trusted: lifecycle.is_trusted(&project)?,
        trusted: !args.show || lifecycle.is_trusted(&project)?,
        takes_effect: trust
            .as_ref()
            .map(|trust| trust.ignored.clone())
            .unwrap_or_default(),
        changes: trust.as_ref().and_then(|trust| trust.changes()),
        text: trust.as_ref().map(|trust| trust.text.clone()),
    };
    if !args.show {
        lifecycle.trust(&project)?;
    }
    emit(global.output, &view, || view.describe(args.show))?;
    Ok(ExitCode::SUCCESS)
}

/// What `trust` shows: exactly the bytes that are (or would be) trusted.
#[derive(serde::Serialize)]
struct TrustView {
    project: PathBuf,
    file: Option<PathBuf>,
    sha256: Option<String>,
    was_trusted: bool,
    trusted: bool,
    /// Settings of the file that were ignored and count once it is trusted.
    takes_effect: Vec<String>,
    /// What changed since the version trusted before.
    changes: Option<String>,
    text: Option<String>,
}

impl TrustView {
    fn describe(&self, only_show: bool) -> String {
        let Some(file) = &self.file else {
            return if only_show {
                format!(
                    "{} has no .mahavishnu.toml; `mahavishnu trust` would allow the built-in hooks of Qwen \
                     projects there\n",
                    self.project.display()
                )
            } else {
                format!("trusted the built-in hooks of {}\n", self.project.display())
            };
        };
        let mut out = format!(
            "{}\nsha256 {}\n",
            file.display(),
            self.sha256.as_deref().unwrap_or("")
        );
        if self.was_trusted {
            out.push_str("already trusted as it is\n");
            return out;
        }
        match (&self.changes, &self.text) {
            (Some(changes), _) => {
                out.push_str("changed since you trusted it:\n");
                out.push_str(changes);
            }
            (None, Some(text)) => {
                out.push_str("never trusted; its whole text:\n");
                out.push_str(text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
            (None, None) => {}
        }
        if !self.takes_effect.is_empty() {
            out.push_str(&format!(
                "{} {}\n",
                if only_show {
                    "trusting it would let these settings count:"
                } else {
                    "these settings count from now on:"
                },
                self.takes_effect.join(", ")
            ));
        }
        out.push_str(if only_show {
            "not trusted yet; run `mahavishnu trust` to trust exactly this text\n"
        } else {
            "trusted exactly this text; any edit asks for trust again\n"
        });
        out
    }
}

pub fn init(global: &GlobalArgs, args: InitArgs) -> Result<ExitCode> {
    let project = project(args.project.as_deref())?;
    let client = match args.client {
        ClientArg::Claude => Client::Claude,
        ClientArg::Qwen => Client::Qwen,
    };
    let scope = match args.scope {
        ScopeArg::Project => Scope::Project,
        ScopeArg::User => Scope::User,
    };
    let path = init::settings_path(client, scope, &project)?;
    let program = super::client_program()?;
    let command = mahavishnu_core::shell::quote(&program.command);
    let mut outcome = init::init(client, &path, &command, args.dry_run, args.remove)?;
    if !args.remove {
        outcome.note = program.note;
    }
    emit(global.output, &outcome, || {
        super::settings_change_text(&outcome, args.dry_run)
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn checkpoint(global: &GlobalArgs, args: CheckpointArgs) -> Result<ExitCode> {
    let format = global.output;
    match args.command {
        None => {
            let repository = Repository::discover(&project(args.project.as_deref())?)?;
            let message = args
                .message
                .unwrap_or_else(|| "mahavishnu checkpoint".into());
            let made = repository.checkpoint(&message, args.commit)?;
            emit(format, &made, || {
                let mut text = format!("checkpoint {} ({})\n", made.id, made.reference);
                if let Some(commit) = &made.branch_commit {
                    text.push_str(&format!("committed {commit} on the current branch\n"));
                } else if args.commit {
                    text.push_str("nothing to commit on the branch\n");
                }
                text
            })?;
        }
        Some(CheckpointCommand::List(list)) => {
            let repository = Repository::discover(&project(list.project.as_deref())?)?;
            let checkpoints = repository.checkpoints()?;
            emit_list(format, "checkpoints", &checkpoints, || {
                let rows: Vec<Vec<String>> = checkpoints
                    .iter()
                    .map(|c| vec![c.id.clone(), c.created_at.to_string(), c.message.clone()])
                    .collect();
                output::table(&["ID", "CREATED", "MESSAGE"], &rows)
            })?;
        }
        Some(CheckpointCommand::Diff(diff)) => {
            let project = project(diff.project.as_deref())?;
            let changes = mahavishnu_api::checkpoint_diff_of(&project, &diff.id, diff.stat)?;
            emit(format, &changes, || {
                if changes.diff.is_empty() {
                    String::new()
                } else {
                    format!("{}\n", changes.diff)
                }
            })?;
        }
        Some(CheckpointCommand::Restore(restore)) => {
            let project = project(restore.project.as_deref())?;
            let restored = mahavishnu_api::restore_checkpoint(&project, &restore.id)?;
            emit(format, &restored, || {
                format!(
                    "restored {}; the state before is kept as checkpoint {}\n",
                    restored.restored.id, restored.safety.id
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
