//! Coding sessions, their hooks, and git checkpoints.

use std::path::PathBuf;

use mahavishnu_core::{Error, Result};
use mahavishnu_lifecycle::EventOutcome;
use mahavishnu_lifecycle::checkpoint::{Checkpoint, Repository};
use mahavishnu_lifecycle::store::SessionStore;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Api, Operation, Progress, Reply, Returns, blocking, define, plural};

/// What `session_start` and `session_end` return.
const SESSION_OUTCOME: &[(&str, &str)] = &[
    ("session", "object"),
    ("applied", "boolean"),
    ("launched", "array"),
    ("runs", "array:object"),
    ("notes", "array:string"),
];

pub(crate) fn operations() -> Vec<Operation> {
    vec![
        define(
            "session_start",
            false,
            "Start a coding session for a project and run its SessionStart hooks (a no-op for a \
             session that is already active).",
            session_start,
        )
        .returns(Returns::Fields(SESSION_OUTCOME)).idempotent(),
        define(
            "session_end",
            false,
            "End a coding session and run its SessionEnd hooks (close what it launched, checkpoint).",
            session_end,
        )
        .returns(Returns::Fields(SESSION_OUTCOME)).destructive(),
        define(
            "session_status",
            true,
            "One coding session: state, project, the instances it launched.",
            session_status,
        )
        .returns(Returns::Fields(&[("id", "string"), ("project", "string"), ("state", "string"), ("source", "string"), ("started_at", "string"), ("instances", "array")])),
        define(
            "session_list",
            true,
            "List coding sessions, newest first.",
            session_list,
        )
        .returns(Returns::List("sessions", "object")),
        define(
            "hooks_list",
            true,
            "The hooks that apply to a project, where each comes from, and whether it is trusted.",
            hooks_list,
        )
        .returns(Returns::Fields(&[("project", "string"), ("trusted", "boolean"), ("hooks", "array:object")])),
        define(
            "hooks_runs",
            true,
            "Recorded hook runs, newest first: event, hook, result, exit code, duration.",
            hooks_runs,
        )
        .returns(Returns::List("runs", "object")),
        define(
            "checkpoint_create",
            false,
            "Snapshot the project's work tree (tracked and untracked, not ignored) into a git \
             checkpoint without moving HEAD or the index; optionally also commit on the branch.",
            checkpoint_create,
        )
        .returns(Returns::Fields(&[("id", "string"), ("commit", "string"), ("ref", "string"), ("created_at", "string"), ("message", "string")])),
        define(
            "checkpoint_list",
            true,
            "List the project's checkpoints, newest first.",
            checkpoint_list,
        )
        .returns(Returns::List("checkpoints", "object")),
        define(
            "checkpoint_diff",
            true,
            "What changed in the work tree since a checkpoint.",
            checkpoint_diff,
        )
        .returns(Returns::Fields(&[("id", "string"), ("diff", "string")])),
        define(
            "checkpoint_restore",
            false,
            "Restore the work tree to a checkpoint; the state before is kept as a new checkpoint.",
            checkpoint_restore,
        )
        .returns(Returns::Fields(&[("restored", "object"), ("safety", "object")])).destructive(),
    ]
}

/// Arguments that name a session.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionParams {
    /// The project directory (default: the server's current directory).
    #[serde(default)]
    pub project: Option<PathBuf>,
    /// The session id (start: default a new one; end: default the project's only active session).
    #[serde(default)]
    pub id: Option<String>,
}

fn outcome_summary(outcome: &EventOutcome) -> String {
    let mut text = match &outcome.session {
        Some(session) if outcome.applied => format!("session {} {}", session.id, session.state),
        Some(session) => format!(
            "session {} is already {}; nothing ran",
            session.id, session.state
        ),
        None => "no such session; nothing ran".into(),
    };
    for instance in &outcome.launched {
        text.push_str(&format!("\nlaunched {}", instance.id));
    }
    for run in &outcome.runs {
        let result = match (&run.error, run.success) {
            (_, true) => "ok".to_string(),
            (Some(error), false) => format!("failed: {error}"),
            (None, false) => "failed".to_string(),
        };
        text.push_str(&format!("\n{} {}: {result}", run.event, run.hook));
    }
    for note in &outcome.notes {
        text.push_str(&format!("\nnote: {note}"));
    }
    text
}

async fn session_start(api: Api, params: SessionParams, _: Progress) -> Result<Reply> {
    let project = api.project(params.project.as_deref())?;
    let outcome = api
        .lifecycle()
        .session_start(&project, params.id, Some("manual".into()))
        .await?;
    Reply::new(&outcome, outcome_summary(&outcome))
}

async fn session_end(api: Api, params: SessionParams, _: Progress) -> Result<Reply> {
    let project = api.project(params.project.as_deref())?;
    let id = match params.id {
        Some(id) => id,
        None => api.lifecycle().only_active_session(&project)?,
    };
    let outcome = api
        .lifecycle()
        .session_end(&project, &id, Some("manual".into()), false)
        .await?;
    Reply::new(&outcome, outcome_summary(&outcome))
}

/// Arguments of `session_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionIdParams {
    /// The session id.
    pub id: String,
}

async fn session_status(api: Api, params: SessionIdParams, _: Progress) -> Result<Reply> {
    let session = api
        .orchestrator()
        .store()
        .session(&params.id)?
        .ok_or_else(|| {
            Error::Invalid(format!(
                "no session `{}`; see `mahavishnu session list`",
                params.id
            ))
        })?;
    let summary = format!(
        "session {} {} in {} with {}",
        session.id,
        session.state,
        session.project.display(),
        plural(session.instances.len(), "instance", "instances")
    );
    Reply::new(&session, summary)
}

/// Arguments that name a project.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectParams {
    /// The project directory (default: the server's current directory).
    #[serde(default)]
    pub project: Option<PathBuf>,
}

async fn session_list(api: Api, params: ProjectParams, _: Progress) -> Result<Reply> {
    let project = params
        .project
        .as_deref()
        .map(|dir| api.project(Some(dir)))
        .transpose()?;
    let sessions = api.orchestrator().store().sessions(project.as_deref())?;
    let summary = if sessions.is_empty() {
        "no sessions".to_string()
    } else {
        sessions
            .iter()
            .map(|s| format!("{} {} {}", s.id, s.state, s.project.display()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Reply::list("sessions", &sessions, summary)
}

async fn hooks_list(api: Api, params: ProjectParams, _: Progress) -> Result<Reply> {
    let project = api.project(params.project.as_deref())?;
    let listed = api.lifecycle().project_hooks(&project)?;
    let mut summary = format!(
        "{} for {}",
        plural(listed.hooks.len(), "hook", "hooks"),
        project.display()
    );
    for entry in &listed.hooks {
        summary.push_str(&format!(
            "\n{} {} ({})",
            entry.event,
            mahavishnu_lifecycle::hooks::describe(&entry.hook),
            entry.origin
        ));
    }
    if let Some(message) = &listed.untrusted_message {
        summary.push_str(&format!("\n{message}"));
    }
    Reply::new(&listed, summary)
}

fn fifty() -> usize {
    50
}

/// Arguments of `hooks_runs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunsParams {
    /// Only runs of this session.
    #[serde(default)]
    pub session: Option<String>,
    /// At most this many (the newest).
    #[serde(default = "fifty")]
    pub limit: usize,
}

async fn hooks_runs(api: Api, params: RunsParams, _: Progress) -> Result<Reply> {
    let runs = api
        .orchestrator()
        .store()
        .hook_runs(params.session.as_deref(), params.limit)?;
    let failed = runs.iter().filter(|run| !run.success).count();
    let summary = format!(
        "{}, {failed} failed",
        plural(runs.len(), "hook run", "hook runs")
    );
    Reply::list("runs", &runs, summary)
}

/// Arguments of `checkpoint_create`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointParams {
    /// The project directory (default: the server's current directory).
    #[serde(default)]
    pub project: Option<PathBuf>,
    /// The checkpoint's message.
    #[serde(default)]
    pub message: Option<String>,
    /// Also commit the work on the current branch (never an empty commit).
    #[serde(default)]
    pub commit: bool,
}

async fn checkpoint_create(api: Api, params: CheckpointParams, _: Progress) -> Result<Reply> {
    let project = api.project(params.project.as_deref())?;
    let message = params
        .message
        .unwrap_or_else(|| "mahavishnu checkpoint".into());
    let commit = params.commit;
    let made =
        blocking(move || Repository::discover(&project)?.checkpoint(&message, commit)).await?;
    let mut summary = format!("checkpoint {} ({})", made.id, made.reference);
    if let Some(commit) = &made.branch_commit {
        summary.push_str(&format!("\ncommitted {commit} on the current branch"));
    }
    Reply::new(&made, summary)
}

async fn checkpoint_list(api: Api, params: ProjectParams, _: Progress) -> Result<Reply> {
    let project = api.project(params.project.as_deref())?;
    let checkpoints = blocking(move || Repository::discover(&project)?.checkpoints()).await?;
    let summary = if checkpoints.is_empty() {
        "no checkpoints".to_string()
    } else {
        checkpoints
            .iter()
            .map(|c| format!("{} {} {}", c.id, c.created_at, c.message))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Reply::list("checkpoints", &checkpoints, summary)
}

/// Arguments of `checkpoint_diff`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    /// The project directory (default: the server's current directory).
    #[serde(default)]
    pub project: Option<PathBuf>,
    /// The checkpoint id (or a unique prefix).
    pub id: String,
    /// Only the changed files and line counts.
    #[serde(default)]
    pub stat: bool,
}

/// A checkpoint's diff against the work tree.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointDiff {
    /// The checkpoint.
    pub id: String,
    /// The diff (or the stat).
    pub diff: String,
}

/// Diffs a checkpoint, as `checkpoint diff` and `checkpoint_diff` both do.
pub fn checkpoint_diff_of(
    project: &std::path::Path,
    id: &str,
    stat: bool,
) -> Result<CheckpointDiff> {
    let diff = Repository::discover(project)?.diff(id, stat)?;
    Ok(CheckpointDiff {
        id: id.to_string(),
        diff,
    })
}

async fn checkpoint_diff(api: Api, params: DiffParams, _: Progress) -> Result<Reply> {
    let project = api.project(params.project.as_deref())?;
    let diff = blocking(move || checkpoint_diff_of(&project, &params.id, params.stat)).await?;
    let summary = if diff.diff.is_empty() {
        format!("no changes since {}", diff.id)
    } else {
        diff.diff.clone()
    };
    Reply::new(&diff, summary)
}

/// Arguments of `checkpoint_restore`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// The project directory (default: the server's current directory).
    #[serde(default)]
    pub project: Option<PathBuf>,
    /// The checkpoint id (or a unique prefix).
    pub id: String,
}

/// A restore: the checkpoint restored and the safety checkpoint of the state before.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    /// What was restored.
    pub restored: Checkpoint,
    /// The work tree as it was before, kept as a checkpoint.
    pub safety: Checkpoint,
}

/// Restores a checkpoint, as `checkpoint restore` and `checkpoint_restore` both do.
pub fn restore_checkpoint(project: &std::path::Path, id: &str) -> Result<Restored> {
    let (restored, safety) = Repository::discover(project)?.restore(id)?;
    Ok(Restored { restored, safety })
}

async fn checkpoint_restore(api: Api, params: RestoreParams, _: Progress) -> Result<Reply> {
    let project = api.project(params.project.as_deref())?;
    let restored = blocking(move || restore_checkpoint(&project, &params.id)).await?;
    let summary = format!(
        "restored {}; the state before is kept as checkpoint {}",
        restored.restored.id, restored.safety.id
    );
    Reply::new(&restored, summary)
}
