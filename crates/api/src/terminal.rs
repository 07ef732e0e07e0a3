//! Terminal sessions and instances on any target: launch, type, read, wait, run, close.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mahavishnu_core::{
    Error, ExecOutput, InputPart, Instance, InstanceId, Result, ScreenOptions, TargetName,
};
use mahavishnu_orchestrator::{
    CaptureOptions, LaunchOutcome, LaunchRequest, ListFilter, WaitCondition,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Api, Operation, Progress, Reply, Returns, bounded, define, plural, seconds};

pub(crate) fn operations() -> Vec<Operation> {
    vec![
        define(
            "terminal_launch",
            false,
            "Start one or more terminal sessions of a profile (shell, qwen, claude, gemini, codex, or \
             one from the configuration) and return them with their ids.",
            launch,
        )
        .returns(Returns::Fields(&[("instances", "array:object"), ("errors", "array:string")])),
        define(
            "terminal_send",
            false,
            "Type text into a session literally, then press Enter (unless enter is false).",
            send,
        )
        .returns(Returns::Fields(&[("id", "string"), ("characters", "integer"), ("enter", "boolean")])),
        define(
            "terminal_broadcast",
            false,
            "Type the same text (then Enter) into every live session at once, or into those of a \
             project or a profile; one result per session.",
            broadcast,
        )
        .returns(Returns::List("sent", "object")),
        define(
            "terminal_keys",
            false,
            "Press named keys in a session: Enter, Escape, Tab, Up, Down, Left, Right, C-c, M-x, F1 ...",
            keys,
        )
        .returns(Returns::Fields(&[("id", "string"), ("keys", "array:string")])),
        define(
            "terminal_resize",
            false,
            "Give a session's terminal a new size in rows and columns, as resizing its window would; \
             its program is told and redraws.",
            resize,
        )
        .returns(Returns::Fields(&[("id", "string"), ("rows", "integer"), ("cols", "integer")]))
        .idempotent(),
        define(
            "terminal_capture",
            true,
            "Read a session's screen as a person would see it, optionally with scrollback or escape codes.",
            capture,
        )
        .returns(Returns::Fields(&[("id", "string"), ("text", "string")])),
        define(
            "terminal_wait",
            true,
            "Wait until a session's screen matches a regular expression, stays unchanged for idle_ms, \
             or (the default) its program waits for input. Reports progress and honours cancellation.",
            wait,
        )
        .returns(Returns::Fields(&[("id", "string?"), ("elapsed_ms", "integer?"), ("waited", "array:object?")])),
        define(
            "terminal_list",
            true,
            "List terminal sessions with their state (starting, running, waiting, exited, lost).",
            list,
        )
        .returns(Returns::List("instances", "object")),
        define(
            "terminal_exec",
            false,
            "Run a side command to completion in a session's directory and environment; returns its \
             exit code, stdout and stderr.",
            exec,
        )
        .returns(Returns::Fields(&[("id", "string"), ("exit_code", "integer|null?"), ("stdout", "string"), ("stderr", "string"), ("duration_ms", "integer"), ("timed_out", "boolean")])),
        define(
            "terminal_close",
            false,
            "Close sessions: their programs get a grace period to end, then are killed.",
            close,
        )
        .returns(Returns::List("closed", "object")).destructive().idempotent(),
        define(
            "terminal_diff",
            true,
            "What a worktree session changed against the commit it started from, committed and not.",
            diff,
        )
        .returns(Returns::Fields(&[("id", "string"), ("branch", "string"), ("diff", "string")])),
        define(
            "terminal_pause",
            false,
            "Pause a worktree session: commit its work on its branch, stop it, remove its worktree.",
            pause,
        )
        .returns(Returns::Fields(&[("id", "string"), ("branch", "string"), ("committed_work_in_progress", "boolean")])),
        define(
            "terminal_resume",
            false,
            "Resume a paused session: recreate its worktree and launch it again, continuing its \
             conversation where the CLI can.",
            resume,
        )
        .returns(Returns::Fields(&[("instances", "array:object"), ("errors", "array:string")])),
        define(
            "terminal_repair",
            false,
            "Repair a session whose worktree was deleted by hand: make the worktree again from its \
             branch at its old place (refused if anything is there now) and start the session again \
             there, continuing its conversation where the CLI can.",
            repair,
        )
        .returns(Returns::Fields(&[("instances", "array:object"), ("errors", "array:string")])),
        define(
            "terminal_merge",
            false,
            "Merge a worktree session's branch back (by default into the main work tree's branch); a \
             conflict names the files and changes nothing.",
            merge,
        )
        .returns(Returns::Fields(&[("branch", "string"), ("into", "string"), ("commit", "string"), ("squash", "boolean"), ("committed_work_in_progress", "boolean")])).destructive(),
        define(
            "terminal_logs",
            true,
            "What a session's or instance's program has printed so far, as plain text (the pod's \
             log for Kubernetes).",
            logs,
        )
        .returns(Returns::Fields(&[("id", "string"), ("text", "string")])),
        define(
            "terminal_recover",
            false,
            "Adopt sessions that still run on their targets but have no live record (after the state \
             directory was lost or replaced); returns the adopted ones.",
            recover,
        )
        .returns(Returns::List("instances", "object")).idempotent(),
        define(
            "instances_gc",
            false,
            "Remove the records of instances closed longer ago than older_than (default: \
             terminal.keep_closed, 7 days); returns how many were removed.",
            gc,
        )
        .returns(Returns::Fields(&[("removed", "integer")])).destructive().idempotent(),
        define(
            "targets_list",
            true,
            "List every target by name (the built-in tmux, pty and kubernetes, and the configured \
             ones): its kind, where it points, what it can do, and whether it is ready or exactly why \
             not.",
            targets,
        )
        .returns(Returns::List("targets", "object")),
        define(
            "target_show",
            true,
            "One target by name: its kind, where it points, what it can do, and its preflight.",
            target_show,
        )
        .returns(Returns::Fields(&[("name", "string"), ("kind", "string"), ("location", "string"), ("builtin", "boolean"), ("capabilities", "object"), ("ready", "boolean"), ("detail", "string")])),
        define(
            "instances_launch",
            false,
            "Start instances of a profile on any target (the same as terminal_launch; give target).",
            launch,
        )
        .returns(Returns::Fields(&[("instances", "array:object"), ("errors", "array:string")])),
        define(
            "instance_exec",
            false,
            "Run a command to completion in an instance of any target; the id's prefix picks the target.",
            exec,
        )
        .returns(Returns::Fields(&[("id", "string"), ("exit_code", "integer|null?"), ("stdout", "string"), ("stderr", "string"), ("duration_ms", "integer"), ("timed_out", "boolean")])),
        define(
            "instance_status",
            true,
            "One instance of any target, with its current state.",
            status,
        )
        .returns(Returns::Fields(&[("id", "string"), ("profile", "string"), ("target", "string"), ("state", "string"), ("exit_code", "integer|null?"), ("cwd", "string"), ("labels", "object"), ("created_at", "string"), ("updated_at", "string")])),
        define(
            "instances_list",
            true,
            "List instances of every target, or of one.",
            list,
        )
        .returns(Returns::List("instances", "object")),
        define(
            "instance_stop",
            false,
            "Stop one instance of any target (grace period, then kill).",
            stop,
        )
        .returns(Returns::Fields(&[("id", "string"), ("closed", "boolean"), ("error", "string?")])).destructive().idempotent(),
    ]
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

fn thirty() -> f64 {
    30.0
}

fn sixty() -> f64 {
    60.0
}

/// Arguments of `terminal_launch` and `instances_launch`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchParams {
    /// The profile: shell, qwen, claude, gemini, codex, or one defined under [profiles.NAME].
    pub profile: String,
    /// How many sessions to start.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub count: usize,
    /// The target: tmux, pty or kubernetes (default: the profile's, else terminal.default_target).
    #[serde(default)]
    pub target: Option<String>,
    /// Working directory (default: the server's current directory).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Environment variables added to the profile's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Session name; with a count above one, NAME-1, NAME-2, ...
    #[serde(default)]
    pub name: Option<String>,
    /// Arguments appended to the profile's.
    #[serde(default)]
    pub args: Vec<String>,
    /// Labels added to the profile's.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The container image, for the kubernetes target (default: the profile's, else
    /// targets.kubernetes.image).
    #[serde(default)]
    pub image: Option<String>,
    /// Give each session its own git worktree and branch, outside the work tree.
    #[serde(default)]
    pub worktree: bool,
    /// With worktree: the commit or branch the worktrees start from (default HEAD).
    #[serde(default)]
    pub from: Option<String>,
    /// With worktree: the branch prefix (default worktree.branch_prefix).
    #[serde(default)]
    pub branch_prefix: Option<String>,
}

/// A target's name, parsed with the same message the CLI gives.
pub(crate) fn target_name(text: Option<&str>) -> Result<Option<TargetName>> {
    text.map(str::parse::<TargetName>).transpose()
}

async fn launch(api: Api, params: LaunchParams, progress: Progress) -> Result<Reply> {
    let request = LaunchRequest {
        profile: params.profile,
        count: params.count,
        target: target_name(params.target.as_deref())?,
        cwd: params.cwd.map(|dir| api.absolute(&dir)),
        env: params.env,
        name: params.name,
        args: params.args,
        labels: params.labels,
        image: params.image,
        worktree: None,
    };
    let worktree = params.worktree.then_some(crate::WorktreeOptions {
        from: params.from,
        branch_prefix: params.branch_prefix,
    });
    let outcome = progress
        .while_running(
            "launching",
            None,
            crate::launch_sessions(&api, request, worktree.as_ref()),
        )
        .await?;
    if outcome.instances.is_empty() {
        return Err(Error::Failed(outcome.errors.join("; ")));
    }
    let ids: Vec<String> = outcome.instances.iter().map(|i| i.id.to_string()).collect();
    let mut summary = format!(
        "launched {}: {}",
        plural(ids.len(), "session", "sessions"),
        ids.join(", ")
    );
    for error in &outcome.errors {
        summary.push_str(&format!("\nnot launched: {error}"));
    }
    Reply::new(&outcome, summary)
}

/// Arguments of `terminal_send`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendParams {
    /// The session id, e.g. tmux:mv-7f3a (or its unique native part).
    pub id: String,
    /// The text, typed literally: shell syntax, newlines and non-ASCII are not interpreted.
    pub text: String,
    /// Press Enter after the text.
    #[serde(default = "yes")]
    pub enter: bool,
}

/// What `terminal_send` typed.
#[derive(Debug, Serialize)]
struct Typed<'a> {
    id: &'a InstanceId,
    characters: usize,
    enter: bool,
}

/// What `terminal_keys` pressed.
#[derive(Debug, Serialize)]
struct Pressed<'a> {
    id: &'a InstanceId,
    keys: &'a [String],
}

async fn send(api: Api, params: SendParams, _: Progress) -> Result<Reply> {
    bounded("text", &params.text)?;
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(&params.id)?;
    let chars = params.text.chars().count();
    let input = InputPart::line(params.text, params.enter);
    orchestrator.send(&id, &input).await?;
    let enter = if params.enter {
        " and pressed Enter"
    } else {
        ""
    };
    Reply::new(
        &Typed {
            id: &id,
            characters: chars,
            enter: params.enter,
        },
        format!(
            "typed {} into {id}{enter}",
            plural(chars, "character", "characters")
        ),
    )
}

/// Arguments of `terminal_broadcast`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastParams {
    /// The text, typed literally into every matching session.
    pub text: String,
    /// Press Enter after the text.
    #[serde(default = "yes")]
    pub enter: bool,
    /// Only sessions of this project (or started below this directory).
    #[serde(default)]
    pub project: Option<PathBuf>,
    /// Only sessions of this profile.
    #[serde(default)]
    pub profile: Option<String>,
}

async fn broadcast(api: Api, params: BroadcastParams, _: Progress) -> Result<Reply> {
    bounded("text", &params.text)?;
    let orchestrator = api.orchestrator();
    let ids = orchestrator
        .live_ids(params.project.map(|dir| api.absolute(&dir)), params.profile)
        .await?;
    let input = InputPart::line(params.text, params.enter);
    let outcomes = orchestrator.broadcast(&ids, &input).await;
    let failed = outcomes.iter().filter(|outcome| !outcome.ok).count();
    let summary = format!(
        "typed into {} of {} sessions{}",
        outcomes.len() - failed,
        outcomes.len(),
        if failed > 0 { "; see the errors" } else { "" }
    );
    Reply::list("sent", &outcomes, summary)
}

/// Arguments of `terminal_keys`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysParams {
    /// The session id.
    pub id: String,
    /// Key names as tmux spells them: Enter, Escape, Tab, BSpace, Up, Down, C-c, M-x, F1 ...
    #[schemars(length(min = 1))]
    pub keys: Vec<String>,
}

async fn keys(api: Api, params: KeysParams, _: Progress) -> Result<Reply> {
    if params.keys.is_empty() {
        return Err(Error::Invalid(
            "keys is empty; name at least one key, e.g. Enter or C-c".into(),
        ));
    }
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(&params.id)?;
    let input = params
        .keys
        .iter()
        .map(|key| key.parse().map(InputPart::Key))
        .collect::<Result<Vec<_>>>()?;
    orchestrator.send(&id, &input).await?;
    Reply::new(
        &Pressed {
            id: &id,
            keys: &params.keys,
        },
        format!("pressed {} in {id}", params.keys.join(" ")),
    )
}

/// Arguments of `terminal_resize`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResizeParams {
    /// The session id.
    pub id: String,
    /// Rows (2 to 1000).
    pub rows: u16,
    /// Columns (10 to 1000).
    pub cols: u16,
}

#[derive(Serialize)]
struct Resized<'a> {
    id: &'a InstanceId,
    rows: u16,
    cols: u16,
}

async fn resize(api: Api, params: ResizeParams, _: Progress) -> Result<Reply> {
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(&params.id)?;
    orchestrator.resize(&id, params.rows, params.cols).await?;
    Reply::new(
        &Resized {
            id: &id,
            rows: params.rows,
            cols: params.cols,
        },
        format!(
            "{id} is now {} rows by {} columns",
            params.rows, params.cols
        ),
    )
}

/// Arguments of `terminal_capture`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureParams {
    /// The session id.
    pub id: String,
    /// Only the last N lines (trailing blank lines do not count).
    #[serde(default)]
    pub lines: Option<usize>,
    /// Include the scrollback history above the screen.
    #[serde(default)]
    pub scrollback: bool,
    /// Keep the escape codes (colours, attributes).
    #[serde(default)]
    pub ansi: bool,
    /// Keep the blank rows at the end of the screen, which are left out otherwise.
    #[serde(default)]
    pub full: bool,
}

impl CaptureParams {
    /// The visible screen of session `id`, plain, without its blank bottom rows.
    pub fn screen(id: impl Into<String>) -> CaptureParams {
        CaptureParams {
            id: id.into(),
            lines: None,
            scrollback: false,
            ansi: false,
            full: false,
        }
    }
}

/// A captured screen.
#[derive(Clone, Debug, Serialize)]
pub struct Capture {
    /// The session.
    pub id: InstanceId,
    /// The rendered screen.
    pub text: String,
}

/// Captures a screen, as `terminal capture` and `terminal_capture` both do.
pub async fn capture_screen(api: &Api, params: CaptureParams) -> Result<Capture> {
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(&params.id)?;
    let options = CaptureOptions {
        lines: params.lines,
        full: params.full,
        screen: ScreenOptions {
            scrollback: params.scrollback,
            ansi: params.ansi,
        },
    };
    let text = orchestrator.capture(&id, options).await?;
    Ok(Capture { id, text })
}

async fn capture(api: Api, params: CaptureParams, _: Progress) -> Result<Reply> {
    let captured = capture_screen(&api, params).await?;
    let summary = captured.text.clone();
    Reply::new(&captured, summary)
}

/// Arguments of `terminal_wait`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    /// The session id (or all).
    #[serde(default)]
    pub id: Option<String>,
    /// Wait until the screen matches this regular expression (^ and $ match at each line), in lines
    /// that are new since the last text or keys sent to the session (or since its launch).
    #[serde(default)]
    pub pattern: Option<String>,
    /// With pattern: match anywhere on the screen, also text that was there before the last input.
    #[serde(default)]
    pub anywhere: bool,
    /// Wait until the screen has not changed for this many milliseconds.
    #[serde(default)]
    pub idle_ms: Option<u64>,
    /// Wait until the program waits for input, by its profile's rules (the default condition).
    #[serde(default)]
    pub waiting: bool,
    /// Give up after this many seconds.
    #[serde(default = "thirty")]
    pub timeout: f64,
    /// Wait on every live session instead of `id` (of project and profile, when given); one
    /// result per session, under `waited`.
    #[serde(default)]
    pub all: bool,
    /// With all: only sessions of this project.
    #[serde(default)]
    pub project: Option<PathBuf>,
    /// With all: only sessions of this profile.
    #[serde(default)]
    pub profile: Option<String>,
}

async fn wait(api: Api, params: WaitParams, progress: Progress) -> Result<Reply> {
    let orchestrator = api.orchestrator();
    let given = [
        params.pattern.is_some(),
        params.idle_ms.is_some(),
        params.waiting,
    ];
    if given.iter().filter(|given| **given).count() > 1 {
        return Err(Error::Invalid(
            "give one of pattern, idle_ms or waiting, not several".into(),
        ));
    }
    let condition = WaitCondition::parse(
        params.pattern.as_deref(),
        params.anywhere,
        params.idle_ms.map(Duration::from_millis),
    )?;
    let timeout = seconds("timeout", params.timeout)?;
    if params.all {
        if params.id.is_some() {
            return Err(Error::Invalid("give an id or all, not both".into()));
        }
        let ids = orchestrator
            .live_ids(params.project.map(|dir| api.absolute(&dir)), params.profile)
            .await?;
        let outcomes = progress
            .while_running(
                "waiting",
                Some(timeout),
                orchestrator.wait_all(&ids, &condition, timeout),
            )
            .await;
        let failed = outcomes.iter().filter(|outcome| !outcome.ok).count();
        let summary = format!(
            "{} of {} sessions ready",
            outcomes.len() - failed,
            outcomes.len()
        );
        return Reply::list("waited", &outcomes, summary);
    }
    let id = params
        .id
        .as_deref()
        .ok_or_else(|| Error::Invalid("give the session id, or all: true".into()))?;
    let id = orchestrator.resolve_id(id)?;
    let outcome = progress
        .while_running(
            &format!("waiting on {id}"),
            Some(timeout),
            orchestrator.wait(&id, &condition, timeout),
        )
        .await?;
    let summary = match (&outcome.matched, &outcome.question) {
        (Some(text), _) => format!("{id} matched after {} ms: {text}", outcome.elapsed_ms),
        (None, Some(question)) => format!(
            "{id} waits on a question after {} ms: {question}",
            outcome.elapsed_ms
        ),
        (None, None) => format!("{id} is ready after {} ms", outcome.elapsed_ms),
    };
    Reply::new(&outcome, summary)
}

/// Arguments of `terminal_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only sessions of this project (or started below this directory).
    #[serde(default)]
    pub project: Option<PathBuf>,
    /// Include closed sessions.
    #[serde(default)]
    pub all: bool,
    /// Only sessions of the target with this name (`tmux`, `pty`, `kubernetes`, or a configured one).
    #[serde(default)]
    pub target: Option<String>,
}

fn instance_lines(instances: &[Instance]) -> String {
    if instances.is_empty() {
        return "no instances".into();
    }
    instances
        .iter()
        .map(|instance| {
            format!(
                "{} {} {} {}",
                instance.id,
                instance.profile,
                instance.state_label(),
                instance.cwd.display()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn list(api: Api, params: ListParams, _: Progress) -> Result<Reply> {
    let filter = ListFilter {
        project: params.project.map(|dir| api.absolute(&dir)),
        all: params.all,
        target: target_name(params.target.as_deref())?,
        ..Default::default()
    };
    let listed = api.orchestrator().list_instances(&filter).await?;
    let summary = instance_lines(&listed);
    Reply::list("instances", &listed, summary)
}

/// Arguments of `terminal_diff`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    /// The session id (of a session launched with worktree).
    pub id: String,
    /// Only the changed files and line counts.
    #[serde(default)]
    pub stat: bool,
}

async fn diff(api: Api, params: DiffParams, _: Progress) -> Result<Reply> {
    let diff = crate::session_diff(&api, &params.id, params.stat).await?;
    let summary = if diff.diff.is_empty() {
        format!("{} ({}) changed nothing", diff.id, diff.branch)
    } else {
        diff.diff.clone()
    };
    Reply::new(&diff, summary)
}

async fn pause(api: Api, params: StatusParams, _: Progress) -> Result<Reply> {
    let paused = crate::pause_session(&api, &params.id).await?;
    let summary = format!(
        "paused {}; its work is on branch {}",
        paused.id, paused.branch
    );
    Reply::new(&paused, summary)
}

async fn resume(api: Api, params: StatusParams, _: Progress) -> Result<Reply> {
    relaunched(crate::resume_session(&api, &params.id).await?)
}

async fn repair(api: Api, params: StatusParams, _: Progress) -> Result<Reply> {
    relaunched(crate::repair_session(&api, &params.id).await?)
}

/// The reply of `resume` and `repair`: the session launched again.
fn relaunched(outcome: LaunchOutcome) -> Result<Reply> {
    if outcome.instances.is_empty() {
        return Err(Error::Failed(outcome.errors.join("; ")));
    }
    let summary = instance_lines(&outcome.instances);
    Reply::new(&outcome, summary)
}

/// Arguments of `terminal_merge`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeParams {
    /// The session id.
    pub id: String,
    /// Merge into this branch (default: the branch checked out in the main work tree).
    #[serde(default)]
    pub into: Option<String>,
    /// One commit with the session's changes instead of a merge commit.
    #[serde(default)]
    pub squash: bool,
}

async fn merge(api: Api, params: MergeParams, _: Progress) -> Result<Reply> {
    let merged = crate::merge_session(&api, &params.id, params.into, params.squash).await?;
    let summary = format!(
        "merged {} into {} ({})",
        merged.branch, merged.into, merged.commit
    );
    Reply::new(&merged, summary)
}

/// Arguments of `instance_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusParams {
    /// The instance id, e.g. tmux:mv-7f3a, pty:mv-19c2, k8s:dev/mv-qwen-x2k9.
    pub id: String,
}

async fn status(api: Api, params: StatusParams, _: Progress) -> Result<Reply> {
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(&params.id)?;
    let instance = orchestrator.instance(&id).await?;
    let summary = instance_lines(std::slice::from_ref(&instance));
    Reply::new(&instance, summary)
}

/// Arguments of `terminal_exec` and `instance_exec`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// The session id.
    pub id: String,
    /// The program and its arguments (no shell is involved; use ["sh", "-c", "..."] for one).
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// Kill the command after this many seconds.
    #[serde(default = "sixty")]
    pub timeout: f64,
}

/// What a side command did.
#[derive(Clone, Debug, Serialize)]
pub struct ExecResult {
    /// The session it ran in.
    pub id: InstanceId,
    /// Its exit code, output and whether it timed out.
    #[serde(flatten)]
    pub output: ExecOutput,
}

async fn exec(api: Api, params: ExecParams, progress: Progress) -> Result<Reply> {
    for part in &params.command {
        bounded("command", part)?;
    }
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(&params.id)?;
    let timeout = seconds("timeout", params.timeout)?;
    let output = progress
        .while_running(
            &format!("running in {id}"),
            Some(timeout),
            orchestrator.exec(&id, params.command, timeout),
        )
        .await?;
    let mut summary = match (output.timed_out, output.exit_code) {
        (true, _) => "killed after its timeout".to_string(),
        (false, Some(code)) => format!("exit code {code}"),
        (false, None) => "ended without an exit code".to_string(),
    };
    for (name, text) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        if !text.is_empty() {
            summary.push_str(&format!("\n{name}:\n{text}"));
        }
    }
    Reply::new(&ExecResult { id, output }, summary)
}

/// Arguments of `terminal_close`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseParams {
    /// The session ids to close.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Close every live session instead (of project, when given).
    #[serde(default)]
    pub all: bool,
    /// With all: only sessions of this project.
    #[serde(default)]
    pub project: Option<PathBuf>,
    /// With all: only sessions of this profile.
    #[serde(default)]
    pub profile: Option<String>,
    /// Seconds a program gets to end before it is killed (default: terminal.stop_grace_ms).
    #[serde(default)]
    pub grace: Option<f64>,
    /// Also remove the sessions' worktrees and branches (refused while they hold unmerged work).
    #[serde(default)]
    pub prune: bool,
    /// With prune: remove them even with unmerged work.
    #[serde(default)]
    pub force: bool,
    /// Close the records without asking their targets (for a target removed from the
    /// configuration, or gone for good); whatever still runs there is left running.
    #[serde(default)]
    pub forget: bool,
}

async fn close(api: Api, params: CloseParams, _: Progress) -> Result<Reply> {
    let orchestrator = api.orchestrator();
    let ids: Vec<InstanceId> = match (params.all, params.ids.is_empty()) {
        (true, true) => {
            orchestrator.open_ids(params.project.map(|dir| api.absolute(&dir)), params.profile)?
        }
        (false, false) => params
            .ids
            .iter()
            .map(|id| orchestrator.resolve_id(id))
            .collect::<Result<_>>()?,
        (true, false) => {
            return Err(Error::Invalid("give ids or all, not both".into()));
        }
        (false, true) => {
            return Err(Error::Invalid(
                "nothing to close: give ids, or all: true".into(),
            ));
        }
    };
    let grace = params
        .grace
        .map(|grace| seconds("grace", grace))
        .transpose()?;
    if params.force && !params.prune {
        return Err(Error::Invalid(
            "force only applies with prune: give prune: true too".into(),
        ));
    }
    // With prune, every worktree is checked before anything is closed.
    let mut worktrees = Vec::new();
    if params.prune {
        for id in &ids {
            if let Some(record) = orchestrator.recorded(id)?.worktree {
                if !params.force
                    && let Some(why) = mahavishnu_lifecycle::worktree::unmerged_work(&record)?
                {
                    return Err(Error::Failed(format!("{id} is not closed: {why}")));
                }
                worktrees.push(record);
            }
        }
    }
    let outcomes = if params.forget {
        orchestrator.forget_instances(&ids)?
    } else {
        orchestrator.close_instances(&ids, grace).await?
    };
    for record in &worktrees {
        mahavishnu_lifecycle::worktree::remove(record)?;
    }
    let summary = if outcomes.is_empty() {
        "nothing to close".to_string()
    } else {
        outcomes
            .iter()
            .map(|outcome| match &outcome.error {
                None => format!("closed {}", outcome.id),
                Some(error) => format!("not closed {}: {error}", outcome.id),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Reply::list("closed", &outcomes, summary)
}

/// Arguments of `instance_stop`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopParams {
    /// The instance id.
    pub id: String,
    /// Seconds it gets to end before it is killed (default: terminal.stop_grace_ms).
    #[serde(default)]
    pub grace: Option<f64>,
}

async fn stop(api: Api, params: StopParams, _: Progress) -> Result<Reply> {
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(&params.id)?;
    let grace = params
        .grace
        .map(|grace| seconds("grace", grace))
        .transpose()?;
    let mut outcomes = orchestrator
        .close_instances(std::slice::from_ref(&id), grace)
        .await?;
    let outcome = outcomes
        .pop()
        .ok_or_else(|| Error::UnknownInstance { id: id.to_string() })?;
    if let Some(error) = &outcome.error {
        return Err(Error::Failed(format!("{id} was not stopped: {error}")));
    }
    Reply::new(&outcome, format!("stopped {id}"))
}

/// Output of a session so far.
#[derive(Clone, Debug, Serialize)]
pub struct Logs {
    /// The session.
    pub id: InstanceId,
    /// What its program printed.
    pub text: String,
}

async fn logs(api: Api, params: StatusParams, _: Progress) -> Result<Reply> {
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(&params.id)?;
    let text = orchestrator.logs(&id).await?;
    let summary = text.clone();
    Reply::new(&Logs { id, text }, summary)
}

async fn recover(api: Api, _: NoParams, _: Progress) -> Result<Reply> {
    let adopted = api.orchestrator().recover_instances().await?;
    let summary = if adopted.is_empty() {
        "nothing to adopt".to_string()
    } else {
        format!("adopted:\n{}", instance_lines(&adopted))
    };
    Reply::list("instances", &adopted, summary)
}

/// Arguments of `instances_gc`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcParams {
    /// Remove closed instances closed longer ago than this (`7d`, `12h`, `30m`); default
    /// terminal.keep_closed.
    #[serde(default)]
    pub older_than: Option<String>,
}

/// What `instances_gc` removed.
#[derive(Clone, Debug, Serialize)]
struct Collected {
    removed: usize,
}

async fn gc(api: Api, params: GcParams, _: Progress) -> Result<Reply> {
    let keep = params
        .older_than
        .as_deref()
        .map(|text| {
            humantime::parse_duration(text).map_err(|e| {
                Error::Invalid(format!(
                    "older_than `{text}` is not a duration like `7d`, `12h` or `30m`: {e}"
                ))
            })
        })
        .transpose()?;
    let removed = api.orchestrator().remove_closed(keep)?;
    let summary = format!(
        "removed {}",
        plural(removed, "closed instance record", "closed instance records")
    );
    Reply::new(&Collected { removed }, summary)
}

/// Arguments of `targets_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

async fn targets(api: Api, _: NoParams, _: Progress) -> Result<Reply> {
    let infos = api.orchestrator().target_infos(None).await?;
    let summary = infos
        .iter()
        .map(|info| {
            let ready = if info.ready { "ready" } else { "not ready" };
            format!("{} ({}): {ready} ({})", info.name, info.kind, info.detail)
        })
        .collect::<Vec<_>>()
        .join("\n");
    Reply::list("targets", &infos, summary)
}

/// Arguments of `target_show`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetShowParams {
    /// The target's name (`tmux`, `pty`, `kubernetes`, or one configured as [targets.NAME]).
    pub name: String,
}

async fn target_show(api: Api, params: TargetShowParams, _: Progress) -> Result<Reply> {
    let name: TargetName = params.name.parse()?;
    let info = api
        .orchestrator()
        .target_infos(Some(&name))
        .await?
        .remove(0);
    let ready = if info.ready { "ready" } else { "not ready" };
    let summary = format!("{} ({}): {ready} ({})", info.name, info.kind, info.detail);
    Reply::new(&info, summary)
}
