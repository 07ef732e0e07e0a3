//! The lifecycle service: coding sessions (Claude Code's, Qwen Code's, or started by hand), the project
//! hooks that run on their events, trust, and git checkpoints. The hook entry, the CLI and the MCP tools
//! all call these functions.

pub mod checkpoint;
pub mod hooks;
pub mod init;
pub mod payload;
pub mod store;
pub mod worktree;
pub mod worktree_sessions;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mahavishnu_core::config::{CheckpointHook, HookConfig, LaunchHook, WhenConfig};
use mahavishnu_core::{Error, Instance, InstanceId, Result, Timestamp, paths};
use mahavishnu_orchestrator::{LaunchRequest, ListFilter, Orchestrator};
use serde::Serialize;
use store::{HookRun, SessionRecord, SessionStore};

pub use hooks::HookContext;
use payload::HookPayload;
pub use worktree_sessions::{Paused, SessionDiff, WorktreeOptions, Worktrees};

impl HookContext {
    /// The context of a payload's event in `project`.
    pub fn from_payload(payload: &HookPayload, project: PathBuf) -> Self {
        HookContext {
            event: payload.hook_event_name.clone(),
            session_id: payload.session_id.clone(),
            project_dir: project,
            prompt: payload.prompt.clone(),
            source: payload.source.clone(),
            reason: payload.reason.clone(),
        }
    }
}

/// Runs blocking `work` (git, the store, the file system) off the async threads.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Failed(format!("the operation stopped unexpectedly: {e}")))?
}

/// The trust record of a project's built-in hooks, which come with Mahavishnu instead of a file.
const BUILT_IN_HOOKS: &str = "built-in:1";

/// The first `limit` lines of `text`, and how many more there are.
fn limit_lines(text: &str, limit: usize) -> String {
    let total = text.lines().count();
    let mut shown: String = text
        .lines()
        .take(limit)
        .map(|line| format!("{line}\n"))
        .collect();
    if total > limit {
        shown.push_str(&format!("... ({} more lines)\n", total - limit));
    }
    shown
}

/// Paths whose presence makes a project a Qwen project.
const QWEN_MARKERS: [&str; 2] = ["QWEN.md", ".qwen"];

/// The lifecycle service.
pub struct Lifecycle {
    orchestrator: Arc<Orchestrator>,
}

/// A hook that applies to a project, with where it came from.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectHook {
    /// The event.
    pub event: String,
    /// Index within the event's list.
    pub index: usize,
    /// `user config`, the project file, or `built-in`.
    pub origin: String,
    /// Whether it may run (user hooks always; project and built-in hooks once trusted).
    pub trusted: bool,
    /// The hook.
    #[serde(flatten)]
    pub hook: HookConfig,
}

/// The hooks of a project and its trust.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectHooks {
    /// The project directory.
    pub project: PathBuf,
    /// Whether the project's hooks are trusted as they are now.
    pub trusted: bool,
    /// Why some hooks will not run, and how to change that.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untrusted_message: Option<String>,
    /// Every hook, in the order they run.
    pub hooks: Vec<ProjectHook>,
}

/// What an event did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EventOutcome {
    /// The session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionRecord>,
    /// False when the event changed nothing (a session started twice).
    pub applied: bool,
    /// Instances launched by its hooks.
    pub launched: Vec<Instance>,
    /// Every hook run.
    pub runs: Vec<HookRun>,
    /// Messages for the user (untrusted hooks skipped, ...).
    pub notes: Vec<String>,
    /// A required hook failed on an event that can block: the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// Which hooks of an event to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// All of them.
    All,
    /// Only those marked `required`.
    Required,
    /// Only those not marked `required`.
    Optional,
}

impl Selection {
    /// Whether this selection includes `hook`.
    pub fn picks(self, hook: &HookConfig) -> bool {
        match self {
            Selection::All => true,
            Selection::Required => hook.required,
            Selection::Optional => !hook.required,
        }
    }
}

impl ProjectHooks {
    /// Whether any hook of `event` in `selection` would run (enabled and trusted; its `when`
    /// conditions are checked only when it runs).
    pub fn would_run(&self, event: &str, selection: Selection) -> bool {
        self.hooks.iter().any(|entry| {
            entry.event == event
                && entry.trusted
                && entry.hook.is_enabled()
                && selection.picks(&entry.hook)
        })
    }
}

impl Lifecycle {
    /// A lifecycle service over the orchestrator (which brings the config and the store).
    pub fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Lifecycle { orchestrator }
    }

    /// The orchestrator.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orchestrator
    }

    /// The project a directory belongs to: the git work tree around it, else the directory.
    pub fn project_of(dir: &Path) -> Result<PathBuf> {
        let dir = std::fs::canonicalize(dir).map_err(|e| {
            Error::Invalid(format!(
                "{}: {e}; the project directory must exist",
                dir.display()
            ))
        })?;
        Ok(paths::project_of(&dir))
    }

    /// What trust is recorded under, and against which hash: the project file's path and the SHA-256
    /// of its bytes; without a project file, the project directory and the built-in hooks' version.
    fn trust_subject(&self, project: &Path) -> (PathBuf, String, Option<String>) {
        match &self.orchestrator.config().project_trust {
            Some(trust) => (
                trust.file.clone(),
                trust.sha256.clone(),
                Some(trust.text.clone()),
            ),
            None => (project.to_path_buf(), BUILT_IN_HOOKS.into(), None),
        }
    }

    /// Whether the project's file, as it is now, is trusted (what runs from it has been allowed).
    pub fn is_trusted(&self, project: &Path) -> Result<bool> {
        if let Some(trust) = &self.orchestrator.config().project_trust {
            return Ok(trust.trusted);
        }
        Ok(self
            .orchestrator
            .store()
            .trusted(project)?
            .is_some_and(|record| record.hash == BUILT_IN_HOOKS))
    }

    /// Trusts the project's file as it was read (exactly those bytes), or its built-in hooks. Takes
    /// effect for the configurations loaded from now on.
    pub fn trust(&self, project: &Path) -> Result<PathBuf> {
        let (key, hash, content) = self.trust_subject(project);
        self.orchestrator
            .store()
            .set_trust(&key, &hash, content.as_deref())?;
        Ok(key)
    }

    /// Withdraws trust.
    pub fn distrust(&self, project: &Path) -> Result<bool> {
        let (key, _, _) = self.trust_subject(project);
        self.orchestrator.store().remove_trust(&key)
    }

    /// Every hook that applies to `project`, with its origin and trust.
    pub fn project_hooks(&self, project: &Path) -> Result<ProjectHooks> {
        let loaded = self.orchestrator.config();
        let trusted = self.is_trusted(project)?;
        let project_origin = loaded
            .project_file
            .as_ref()
            .map_or_else(|| "project".to_string(), |file| file.display().to_string());
        let mut hooks = Vec::new();
        let mut events: Vec<&String> = loaded.config.hooks.keys().collect();
        events.extend(loaded.project_hooks.keys());
        events.sort_unstable();
        events.dedup();
        for event in events {
            let merged = loaded
                .config
                .hooks
                .get(event)
                .map_or(&[][..], Vec::as_slice);
            let from_project = loaded
                .project_hooks
                .get(event)
                .map_or(&[][..], Vec::as_slice);
            // An untrusted project file's hooks are not merged into the configuration at all.
            let from_user = if trusted {
                &merged[..merged.len().saturating_sub(from_project.len())]
            } else {
                merged
            };
            let user = from_user
                .iter()
                .map(|hook| ("user config".to_string(), true, hook));
            let project = from_project
                .iter()
                .map(|hook| (project_origin.clone(), trusted, hook));
            for (index, (origin, trusted, hook)) in user.chain(project).enumerate() {
                hooks.push(ProjectHook {
                    event: event.clone(),
                    index,
                    origin,
                    trusted,
                    hook: hook.clone(),
                });
            }
        }
        if loaded.config.hooks.values().all(Vec::is_empty)
            && loaded.project_hooks.is_empty()
            && QWEN_MARKERS
                .iter()
                .any(|marker| project.join(marker).exists())
        {
            hooks.extend(builtin_qwen_hooks(trusted));
        }
        let untrusted = hooks.iter().any(|hook| !hook.trusted);
        let untrusted_message = untrusted.then(|| {
            let changes = loaded
                .project_trust
                .as_ref()
                .and_then(|trust| trust.changes())
                .map(|diff| format!("; it changed since you trusted it:\n{}", limit_lines(&diff, 20)))
                .unwrap_or_default();
            format!(
                "the hooks of {} are not trusted (new or changed), so they were skipped; review them with \
                 `mahavishnu trust --show` and run `mahavishnu trust {}` to allow them{changes}",
                project.display(),
                mahavishnu_core::shell::quote(&project.to_string_lossy())
            )
        });
        Ok(ProjectHooks {
            project: project.to_path_buf(),
            trusted: !untrusted,
            untrusted_message,
            hooks,
        })
    }

    /// Starts a session (a no-op when it is already active) and runs its SessionStart hooks.
    pub async fn session_start(
        &self,
        project: &Path,
        id: Option<String>,
        source: Option<String>,
    ) -> Result<EventOutcome> {
        let id = id.unwrap_or_else(|| format!("manual-{:08x}", fastrand::u32(..)));
        let record = SessionRecord::active(&id, project, source.clone());
        let store = self.orchestrator.store();
        if !store.start_session(&record)? {
            return Ok(EventOutcome {
                session: store.session(&id)?,
                ..Default::default()
            });
        }
        let context = HookContext {
            event: "SessionStart".into(),
            session_id: Some(id.clone()),
            project_dir: project.to_path_buf(),
            source,
            ..Default::default()
        };
        let mut outcome = self.run_event(&context, Selection::All, false).await?;
        outcome.applied = true;
        outcome.session = store.session(&id)?;
        Ok(outcome)
    }

    /// The one active session of a project, for commands that were not given a session id.
    pub fn only_active_session(&self, project: &Path) -> Result<String> {
        let active: Vec<SessionRecord> = self
            .orchestrator
            .store()
            .sessions(Some(project))?
            .into_iter()
            .filter(|session| session.state == "active")
            .collect();
        match active.as_slice() {
            [one] => Ok(one.id.clone()),
            [] => Err(Error::Invalid(format!(
                "no active session in {}",
                project.display()
            ))),
            _ => Err(Error::Invalid(
                "several sessions are active here; give the session id".into(),
            )),
        }
    }

    /// Ends a session and runs its SessionEnd hooks; ending one that is not active runs nothing.
    pub async fn session_end(
        &self,
        project: &Path,
        id: &str,
        reason: Option<String>,
        detached: bool,
    ) -> Result<EventOutcome> {
        let store = self.orchestrator.store();
        let known = store.session(id)?;
        if known
            .as_ref()
            .is_some_and(|session| session.state != "active")
        {
            return Ok(EventOutcome {
                session: known,
                ..Default::default()
            });
        }
        if known.is_none() {
            // Mahavishnu was set up after this session started: its end still counts.
            store.start_session(&SessionRecord::active(id, project, None))?;
        }
        let context = HookContext {
            event: "SessionEnd".into(),
            session_id: Some(id.to_string()),
            project_dir: project.to_path_buf(),
            reason: reason.clone(),
            ..Default::default()
        };
        let mut outcome = self.run_event(&context, Selection::All, detached).await?;
        store.end_session(id, reason.as_deref())?;
        outcome.applied = true;
        outcome.session = store.session(id)?;
        Ok(outcome)
    }

    /// Runs the hooks of `context.event` for its project, in order, recording every run.
    pub async fn run_event(
        &self,
        context: &HookContext,
        selection: Selection,
        detached: bool,
    ) -> Result<EventOutcome> {
        let project_hooks = self.project_hooks(&context.project_dir)?;
        self.run_hooks(&project_hooks, context, selection, detached)
            .await
    }

    /// Runs the hooks of `context.event` from `project_hooks` (as `project_hooks()` returned them),
    /// in order, recording every run.
    pub async fn run_hooks(
        &self,
        project_hooks: &ProjectHooks,
        context: &HookContext,
        selection: Selection,
        detached: bool,
    ) -> Result<EventOutcome> {
        let mut outcome = EventOutcome::default();
        let mut skipped_untrusted = false;
        for entry in project_hooks
            .hooks
            .iter()
            .filter(|hook| hook.event == context.event)
        {
            let hook = &entry.hook;
            if !selection.picks(hook) || !hook.is_enabled() {
                continue;
            }
            if !entry.trusted {
                skipped_untrusted = true;
                continue;
            }
            if hooks::conditions_hold(&hook.when, context).is_err() {
                continue;
            }
            let run = self.run_hook(hook, context, detached, &mut outcome).await?;
            if !run.success
                && hook.required
                && payload::can_block(&context.event)
                && outcome.blocked.is_none()
            {
                outcome.blocked = Some(format!(
                    "hook `{}` failed: {}",
                    run.hook,
                    run.error.clone().unwrap_or_default()
                ));
            }
            outcome.runs.push(run);
        }
        if skipped_untrusted && let Some(message) = &project_hooks.untrusted_message {
            outcome.notes.push(message.clone());
        }
        Ok(outcome)
    }

    async fn run_hook(
        &self,
        hook: &HookConfig,
        context: &HookContext,
        detached: bool,
        outcome: &mut EventOutcome,
    ) -> Result<HookRun> {
        let started_at = Timestamp::now();
        let started = Instant::now();
        let name = hooks::describe(hook);
        let timeout = hook.timeout();
        let (success, exit_code, output, error) = if let Some(command) = &hook.command {
            match hooks::prepare(command, context, vec![]) {
                Ok(prepared) => {
                    let result = hooks::run_command(
                        &prepared.command,
                        &context.project_dir,
                        &prepared.environment,
                        timeout,
                    )
                    .await;
                    (
                        result.error.is_none(),
                        result.exit_code,
                        result.output,
                        result.error,
                    )
                }
                Err(error) => (false, None, String::new(), Some(error.to_string())),
            }
        } else if let Some(launch) = &hook.launch {
            match tokio::time::timeout(timeout, self.launch_for(launch, context)).await {
                Ok(Ok(instances)) => {
                    let ids: Vec<String> = instances
                        .iter()
                        .map(|instance| instance.id.to_string())
                        .collect();
                    outcome.launched.extend(instances);
                    (true, None, format!("launched {}", ids.join(" ")), None)
                }
                Ok(Err(error)) => (false, None, String::new(), Some(error.to_string())),
                Err(_) => (false, None, String::new(), Some("timed out".into())),
            }
        } else if let Some(close) = &hook.close {
            match self.close_for(close, context).await {
                Ok(closed) => (true, None, format!("closed {}", closed.join(" ")), None),
                Err(error) => (false, None, String::new(), Some(error.to_string())),
            }
        } else if let Some(checkpoint) = &hook.checkpoint {
            let (wanted, commit, message) = match checkpoint {
                CheckpointHook::Enabled(wanted) => (*wanted, false, None),
                CheckpointHook::Options(options) => (true, options.commit, options.message.clone()),
            };
            if !wanted {
                (true, None, "checkpoint disabled".into(), None)
            } else {
                let message = message
                    .map(|message| {
                        message.replace("{session_id}", context.session_id.as_deref().unwrap_or(""))
                    })
                    .unwrap_or_else(|| {
                        format!(
                            "mahavishnu: {} of session {}",
                            context.event,
                            context.session_id.as_deref().unwrap_or("-")
                        )
                    });
                let result = checkpoint::Repository::discover(&context.project_dir)
                    .and_then(|repository| repository.checkpoint(&message, commit));
                match result {
                    Ok(made) => (
                        true,
                        None,
                        format!("checkpoint {} ({})", made.id, made.reference),
                        None,
                    ),
                    Err(error) => (false, None, String::new(), Some(error.to_string())),
                }
            }
        } else {
            (
                false,
                None,
                String::new(),
                Some("the hook has no action".into()),
            )
        };
        let run = HookRun {
            seq: 0,
            session_id: context.session_id.clone(),
            event: context.event.clone(),
            hook: name,
            started_at,
            success,
            exit_code,
            output,
            duration_ms: started.elapsed().as_millis() as u64,
            error,
            detached,
        };
        self.orchestrator.store().record_hook_run(&run)?;
        Ok(run)
    }

    async fn launch_for(
        &self,
        launch: &LaunchHook,
        context: &HookContext,
    ) -> Result<Vec<Instance>> {
        let mut labels = BTreeMap::new();
        if let Some(session) = &context.session_id {
            labels.insert("session".to_string(), session.clone());
        }
        let request = LaunchRequest {
            profile: launch.profile.clone(),
            count: launch.count.unwrap_or(1),
            target: launch.target.as_deref().map(str::parse).transpose()?,
            cwd: Some(context.project_dir.clone()),
            labels,
            ..Default::default()
        };
        let outcome = self.orchestrator.launch_instances(&request).await?;
        if let Some(session) = &context.session_id {
            for instance in &outcome.instances {
                self.orchestrator
                    .store()
                    .add_session_instance(session, &instance.id)?;
            }
        }
        if !outcome.errors.is_empty() {
            return Err(Error::Invalid(outcome.errors.join("; ")));
        }
        Ok(outcome.instances)
    }

    async fn close_for(&self, what: &str, context: &HookContext) -> Result<Vec<String>> {
        let ids: Vec<InstanceId> =
            if what == "launched" {
                let Some(session) = &context.session_id else {
                    return Ok(vec![]);
                };
                let launched = self
                    .orchestrator
                    .store()
                    .session(session)?
                    .map(|session| session.instances)
                    .unwrap_or_default();
                let mut ids = Vec::new();
                for id in launched {
                    let id: InstanceId = id.parse()?;
                    if self.orchestrator.recorded(&id).is_ok_and(|instance| {
                        instance.state != mahavishnu_core::InstanceState::Closed
                    }) {
                        ids.push(id);
                    }
                }
                ids
            } else {
                let filter = ListFilter {
                    project: Some(context.project_dir.clone()),
                    ..Default::default()
                };
                self.orchestrator
                    .list_instances(&filter)
                    .await?
                    .into_iter()
                    .filter(|instance| instance.profile == what)
                    .map(|instance| instance.id)
                    .collect()
            };
        let outcomes = self.orchestrator.close_instances(&ids, None).await?;
        Ok(outcomes
            .into_iter()
            .filter(|outcome| outcome.closed)
            .map(|outcome| outcome.id.to_string())
            .collect())
    }
}

fn builtin_qwen_hooks(trusted: bool) -> Vec<ProjectHook> {
    let when = WhenConfig {
        project_has: QWEN_MARKERS
            .iter()
            .map(|marker| marker.to_string())
            .collect(),
        ..Default::default()
    };
    let start = HookConfig {
        name: Some("start the project's Qwen session".into()),
        launch: Some(LaunchHook {
            profile: "qwen".into(),
            count: Some(1),
            target: None,
        }),
        when: when.clone(),
        ..Default::default()
    };
    let end = HookConfig {
        name: Some("close what the session launched".into()),
        close: Some("launched".into()),
        when,
        ..Default::default()
    };
    [("SessionStart", start), ("SessionEnd", end)]
        .into_iter()
        .map(|(event, hook)| ProjectHook {
            event: event.into(),
            index: 0,
            origin: "built-in".into(),
            trusted,
            hook,
        })
        .collect()
}
