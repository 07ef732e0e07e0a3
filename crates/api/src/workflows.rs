//! Workflows across many repositories: the catalog, sweeps of a command or of an agent prompt,
//! quality checks, and workflows that run them by hand, on a schedule, on a hook event or on a
//! Pub/Sub message. The work fans out through the workflows service; an agent sweep is the
//! orchestrator's launch, send and wait, in worktrees when asked.

use std::path::PathBuf;
use std::time::Duration;

use mahavishnu_core::config::WorkflowConfig;
use mahavishnu_core::{Error, InputPart, Result, TargetName};
use mahavishnu_lifecycle::WorktreeOptions;
use mahavishnu_orchestrator::{LaunchRequest, WaitCondition};
use mahavishnu_workflows::{
    Catalog, Kind, Outcome, Repo, RepoResult, Scorecard, Sweep, SweepOptions, WorkflowRun,
    schedule::Schedule, store as records,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Api, Operation, Progress, Reply, Returns, define, plural, seconds};

/// How long a command or a repository's checks may run, unless told.
const COMMAND_TIMEOUT: f64 = 600.0;
/// How long an agent may work on its prompt, unless told.
const AGENT_TIMEOUT: f64 = 1800.0;
/// How long an agent's program may take to be ready for its prompt.
const AGENT_READY: Duration = Duration::from_secs(120);

pub(crate) fn operations() -> Vec<Operation> {
    vec![
        define(
            "repos_list",
            true,
            "List the repositories of the catalog (name, path, kind, tags, whether still there), \
             optionally of a tag or a kind.",
            repos_list,
        )
        .returns(Returns::List("repos", "object")),
        define(
            "repos_add",
            false,
            "Add git repositories to the catalog (their kind is detected: rust, python, node, go), \
             with tags; adding one again only adds the tags.",
            repos_add,
        )
        .returns(Returns::Fields(&[
            ("added", "array:object"),
            ("already", "array:object"),
            ("catalog", "string"),
        ]))
        .idempotent(),
        define(
            "repos_scan",
            false,
            "Find the git repositories under a directory and add them to the catalog, with tags.",
            repos_scan,
        )
        .returns(Returns::Fields(&[
            ("added", "array:object"),
            ("already", "array:object"),
            ("catalog", "string"),
        ]))
        .idempotent(),
        define(
            "repos_remove",
            false,
            "Remove repositories from the catalog (by name or path); their files are not touched.",
            repos_remove,
        )
        .returns(Returns::Fields(&[("removed", "array:string")]))
        .idempotent(),
        define(
            "sweep_run",
            false,
            "Run a command (a program and its arguments, no shell) in every selected repository \
             at once under a limit, or, with profile and prompt, start an AI CLI session in each, \
             send it the prompt, wait until it waits again and collect its diff stat. Returns the \
             sweep: one result per repository (status, exit code, duration, last line, the file \
             with its whole output). Reports progress.",
            sweep_run,
        )
        .returns(Returns::Fields(&[
            ("id", "integer"),
            ("kind", "string"),
            ("spec", "object"),
            ("state", "string"),
            ("summary", "object"),
            ("results", "array:object"),
        ]))
        // The command is anyone's, and an agent sweep may merge.
        .destructive(),
        define(
            "sweep_status",
            true,
            "One sweep with its results, by number.",
            sweep_status,
        )
        .returns(Returns::Fields(&[
            ("id", "integer"),
            ("kind", "string"),
            ("spec", "object"),
            ("state", "string"),
            ("summary", "object"),
            ("results", "array:object"),
        ])),
        define(
            "sweep_list",
            true,
            "The latest sweeps, newest first, with what each ran and how its repositories ended.",
            sweep_list,
        )
        .returns(Returns::List("sweeps", "object")),
        define(
            "sweep_rerun",
            false,
            "Run a sweep again, as it was, over the same repositories, or (failed) over those that \
             did not succeed.",
            sweep_rerun,
        )
        .returns(Returns::Fields(&[
            ("id", "integer"),
            ("kind", "string"),
            ("spec", "object"),
            ("state", "string"),
            ("summary", "object"),
            ("results", "array:object"),
        ]))
        .destructive(),
        define(
            "check_run",
            false,
            "Run the quality checks of a repository (a path), or of the catalog's repositories (a \
             tag, names, or all): Rust fmt, clippy, test; Python ruff, pytest; Node lint, test; Go \
             vet, test; or the repository's trusted [checks]. Returns each scorecard and what got \
             better or worse since the last one. Reports progress.",
            check_run,
        )
        .returns(Returns::Fields(&[
            ("id", "integer"),
            ("summary", "object"),
            ("scorecards", "array:object"),
            ("changes", "array:object"),
        ])),
        define(
            "workflow_list",
            true,
            "The workflows of the configuration: what each runs, its triggers, the next time its \
             schedule names, and its last run.",
            workflow_list,
        )
        .returns(Returns::List("workflows", "object")),
        define(
            "workflow_run",
            false,
            "Run a workflow now, by name, and record the run.",
            workflow_run,
        )
        .returns(Returns::Fields(&[("run", "object"), ("result", "object")]))
        .destructive(),
    ]
}

/// Arguments of `repos_list`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReposListParams {
    /// Only those with this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Only those of this kind: rust, python, node, go, other.
    #[serde(default)]
    pub kind: Option<String>,
}

async fn repos_list(api: Api, params: ReposListParams, _: Progress) -> Result<Reply> {
    let kind = params.kind.as_deref().map(str::parse::<Kind>).transpose()?;
    let repos = api.workflows().catalog()?.list(params.tag.as_deref(), kind);
    let gone = repos.iter().filter(|repo| !repo.present).count();
    let mut summary = plural(repos.len(), "repository", "repositories");
    if gone > 0 {
        summary.push_str(&format!(" ({gone} not there any more)"));
    }
    Reply::list("repos", &repos, summary)
}

/// Arguments of `repos_add`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReposAddParams {
    /// The repositories' directories (the top of each git work tree).
    pub paths: Vec<PathBuf>,
    /// Tags to give them.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Serialize)]
struct Added {
    added: Vec<Repo>,
    already: Vec<Repo>,
    catalog: PathBuf,
}

/// Adds `paths` to the catalog with `tags` and saves it; nothing is saved when one is refused.
fn add_all(api: &Api, paths: &[PathBuf], tags: &[String]) -> Result<Reply> {
    let workflows = api.workflows();
    let mut catalog = workflows.catalog()?;
    let mut added = Vec::new();
    let mut already = Vec::new();
    for path in paths {
        let (name, new) = catalog.add(&api.absolute(path), tags)?;
        if new { &mut added } else { &mut already }.push(name);
    }
    catalog.save()?;
    let pick = |names: &[String]| -> Vec<Repo> {
        catalog
            .list(None, None)
            .into_iter()
            .filter(|repo| names.contains(&repo.name))
            .collect()
    };
    let reply = Added {
        added: pick(&added),
        already: pick(&already),
        catalog: catalog.path().to_path_buf(),
    };
    let summary = format!(
        "added {}{}",
        plural(reply.added.len(), "repository", "repositories"),
        if reply.already.is_empty() {
            String::new()
        } else {
            format!(" ({} already there)", reply.already.len())
        }
    );
    Reply::new(&reply, summary)
}

async fn repos_add(api: Api, params: ReposAddParams, _: Progress) -> Result<Reply> {
    if params.paths.is_empty() {
        return Err(Error::Invalid(
            "no path given; name the repositories to add, e.g. `repos add ~/src/app`".into(),
        ));
    }
    add_all(&api, &params.paths, &params.tags)
}

/// Arguments of `repos_scan`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReposScanParams {
    /// The directory to search.
    pub dir: PathBuf,
    /// Tags to give what is found.
    #[serde(default)]
    pub tags: Vec<String>,
    /// How many levels down to look (default 3).
    #[serde(default = "three")]
    pub depth: usize,
}

fn three() -> usize {
    3
}

async fn repos_scan(api: Api, params: ReposScanParams, _: Progress) -> Result<Reply> {
    let found = mahavishnu_workflows::catalog::scan(&api.absolute(&params.dir), params.depth)?;
    add_all(&api, &found, &params.tags)
}

/// Arguments of `repos_remove`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReposRemoveParams {
    /// The repositories, by name or path.
    pub repos: Vec<String>,
}

async fn repos_remove(api: Api, params: ReposRemoveParams, _: Progress) -> Result<Reply> {
    let mut catalog = api.workflows().catalog()?;
    let removed = catalog.remove(&params.repos)?;
    catalog.save()?;
    let summary = format!(
        "removed {}",
        plural(removed.len(), "repository", "repositories")
    );
    Reply::new(&json!({ "removed": removed }), summary)
}

/// Arguments of `sweep_run`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepParams {
    /// The command: a program and its arguments, run without a shell (`["git", "status",
    /// "--short"]`). Leave it out for an agent sweep.
    #[serde(default)]
    pub command: Vec<String>,
    /// For an agent sweep: the profile of the sessions (qwen, claude, ...).
    #[serde(default)]
    pub profile: Option<String>,
    /// For an agent sweep: the prompt each session is sent.
    #[serde(default)]
    pub prompt: Option<String>,
    /// For an agent sweep: each session in a worktree and branch of its own.
    #[serde(default)]
    pub worktree: bool,
    /// For an agent sweep in worktrees: merge each branch whose checks pass.
    #[serde(default)]
    pub merge: bool,
    /// For an agent sweep: keep the sessions running afterwards (else a worktree session is
    /// paused, its work kept on its branch, and another is closed).
    #[serde(default)]
    pub keep: bool,
    /// For an agent sweep: where the sessions run (default: the profile's target).
    #[serde(default)]
    pub target: Option<String>,
    /// The repositories with this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// These repositories, by name or path (instead of a tag; neither means all).
    #[serde(default)]
    pub repos: Vec<String>,
    /// At most this many repositories at once (default 8).
    #[serde(default = "eight")]
    pub parallel: usize,
    /// Seconds each repository's work may take (default 600 for a command, 1800 for an agent).
    #[serde(default)]
    pub timeout: Option<f64>,
}

fn eight() -> usize {
    8
}

/// An agent sweep's settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct AgentSpec {
    profile: String,
    prompt: String,
    worktree: bool,
    merge: bool,
    keep: bool,
    target: Option<String>,
    parallel: usize,
    timeout_s: u64,
}

/// `report(done, total, line)` as the workflows service takes it.
fn reporter(progress: &Progress) -> impl Fn(usize, usize, &str) + Send + Sync + '_ {
    move |done, total, line| {
        progress.report(
            done as f64,
            Some(total as f64),
            format!("[{done}/{total}] {line}"),
        )
    }
}

fn sweep_reply(sweep: &Sweep) -> Result<Reply> {
    let summary = format!("sweep {}: {}", sweep.id, sweep.summary.line());
    let reply = Reply::new(sweep, summary)?;
    // A sweep in which some repository did not succeed did not do all it was asked.
    Ok(if sweep.summary.ok == sweep.summary.total {
        reply
    } else {
        reply.failed()
    })
}

async fn sweep_run(api: Api, params: SweepParams, progress: Progress) -> Result<Reply> {
    let repos = api
        .workflows()
        .catalog()?
        .select(&params.repos, params.tag.as_deref())?;
    sweep_reply(&run_sweep(&api, params, repos, None, &progress).await?)
}

/// Runs the sweep `params` describes over `repos`.
async fn run_sweep(
    api: &Api,
    params: SweepParams,
    repos: Vec<Repo>,
    workflow: Option<&str>,
    progress: &Progress,
) -> Result<Sweep> {
    if params.parallel == 0 || params.parallel > 256 {
        return Err(Error::Invalid(format!(
            "parallel {} is not allowed: give 1 to 256",
            params.parallel
        )));
    }
    let report = reporter(progress);
    match (&params.profile, &params.prompt) {
        (None, None) => {
            if params.worktree || params.merge || params.keep || params.target.is_some() {
                return Err(Error::Invalid(
                    "worktree, merge, keep and target are for an agent sweep: give a profile and a \
                     prompt too"
                        .into(),
                ));
            }
            let options = SweepOptions {
                parallel: params.parallel,
                timeout: seconds("timeout", params.timeout.unwrap_or(COMMAND_TIMEOUT))?,
                workflow: workflow.map(str::to_string),
            };
            api.workflows()
                .command_sweep(repos, params.command, &options, &report)
                .await
        }
        (Some(profile), Some(prompt)) => {
            if !params.command.is_empty() {
                return Err(Error::Invalid(
                    "give either a command or a profile and a prompt, not both".into(),
                ));
            }
            if params.merge && !params.worktree {
                return Err(Error::Invalid(
                    "merge needs worktree: only a worktree session's branch can be merged back"
                        .into(),
                ));
            }
            crate::bounded("prompt", prompt)?;
            let timeout = seconds("timeout", params.timeout.unwrap_or(AGENT_TIMEOUT))?;
            let spec = AgentSpec {
                profile: profile.clone(),
                prompt: prompt.clone(),
                worktree: params.worktree,
                merge: params.merge,
                keep: params.keep,
                target: params.target.clone(),
                parallel: params.parallel,
                timeout_s: timeout.as_secs(),
            };
            agent_sweep(api, spec, repos, workflow, &report).await
        }
        _ => Err(Error::Invalid(
            "an agent sweep needs both a profile and a prompt (`--agent qwen --prompt '...'`)"
                .into(),
        )),
    }
}

/// One session of `spec.profile` per repository: the prompt sent once it is ready, waited for
/// until it waits again, its diff stat collected; merged when asked and its checks pass.
async fn agent_sweep(
    api: &Api,
    spec: AgentSpec,
    repos: Vec<Repo>,
    workflow: Option<&str>,
    report: mahavishnu_workflows::Progress<'_>,
) -> Result<Sweep> {
    let target = spec
        .target
        .as_deref()
        .map(str::parse::<TargetName>)
        .transpose()?;
    // The profile must exist before anything starts.
    api.orchestrator().config().profile(&spec.profile)?;
    let workflows = api.workflows();
    let id = workflows.begin(
        "agent",
        &serde_json::to_value(&spec).unwrap_or(Value::Null),
        workflow,
    )?;
    let spec = &spec;
    let target = &target;
    workflows
        .fan_out(id, repos, spec.parallel, report, |repo| async move {
            agent_in(api, id, spec, target.clone(), repo).await
        })
        .await?;
    workflows.finish(id)
}

async fn agent_in(
    api: &Api,
    sweep: i64,
    spec: &AgentSpec,
    target: Option<TargetName>,
    repo: Repo,
) -> RepoResult {
    let started = std::time::Instant::now();
    let mut detail = json!({});
    let result = |status: Outcome, line: String, detail: Value| RepoResult {
        repo: repo.name.clone(),
        path: repo.path.clone(),
        status,
        exit_code: None,
        duration_ms: started.elapsed().as_millis() as u64,
        last_line: line,
        output: None,
        detail,
    };
    let request = LaunchRequest {
        profile: spec.profile.clone(),
        count: 1,
        target,
        cwd: Some(repo.path.clone()),
        env: Default::default(),
        name: None,
        args: Vec::new(),
        labels: [("mahavishnu.sweep".to_string(), repo.name.clone())].into(),
        image: None,
        worktree: None,
    };
    let options = WorktreeOptions::default();
    let launched = crate::launch_sessions(api, request, spec.worktree.then_some(&options)).await;
    let instance = match launched {
        Ok(mut outcome) if !outcome.instances.is_empty() => outcome.instances.remove(0),
        Ok(outcome) => return result(Outcome::Error, outcome.errors.join("; "), Value::Null),
        Err(e) => return result(Outcome::Error, e.to_string(), Value::Null),
    };
    let id = instance.id.clone();
    detail["session"] = json!(id.to_string());
    if let Some(worktree) = &instance.worktree {
        detail["branch"] = json!(worktree.branch);
    }
    let orchestrator = api.orchestrator();
    // Ready for the prompt, then the prompt, then done with it.
    let worked = async {
        let ready = orchestrator
            .wait(&id, &WaitCondition::Waiting, AGENT_READY)
            .await?;
        // A question of the program's own (trust this folder?) is not answered with the prompt.
        if let Some(question) = ready.question {
            return Err(Error::Failed(format!(
                "{id} asks a question of its own, {question:?}, so the prompt was not sent; answer it \
                 (`mahavishnu terminal attach {id}`) or set the CLI up so that it does not ask"
            )));
        }
        orchestrator
            .send(&id, &InputPart::line(spec.prompt.clone(), true))
            .await?;
        orchestrator
            .wait(
                &id,
                &WaitCondition::Waiting,
                Duration::from_secs(spec.timeout_s),
            )
            .await
    }
    .await;
    let status = match &worked {
        Ok(_) => Outcome::Ok,
        Err(Error::Timeout { .. }) => Outcome::TimedOut,
        Err(_) => Outcome::Error,
    };
    let mut line = match &worked {
        Ok(_) => last_screen_line(api, &id).await,
        Err(e) => e.to_string(),
    };
    let stat = diff_stat(api, &instance).await;
    if let Some(stat) = &stat {
        detail["diff"] = stat.clone();
    }
    let mut status = status;
    if spec.merge && status == Outcome::Ok {
        let merged = merge_if_checks_pass(api, sweep, &repo.name, &instance).await;
        line = merged.0;
        detail["merged"] = json!(merged.1);
        if let Some(card) = merged.2 {
            detail["checks"] = card;
        }
        if !merged.1 {
            status = Outcome::Failed;
        }
    }
    // Done with: a merged session goes with its worktree and branch; another worktree session is
    // paused, its work kept on its branch; any other is closed.
    if !spec.keep {
        let merged = detail["merged"].as_bool().unwrap_or(false);
        let _ = if merged {
            let arguments = json!({ "ids": [id.to_string()], "prune": true, "grace": 3 });
            api.call("terminal_close", arguments, Progress::default())
                .await
                .map(drop)
        } else if instance.worktree.is_some() {
            crate::pause_session(api, &id.to_string()).await.map(drop)
        } else {
            orchestrator
                .close_instances(std::slice::from_ref(&id), Some(Duration::from_secs(3)))
                .await
                .map(drop)
        };
    }
    result(status, line, detail)
}

/// The last line with text on a session's screen.
async fn last_screen_line(api: &Api, id: &mahavishnu_core::InstanceId) -> String {
    let screen = crate::capture_screen(api, crate::CaptureParams::screen(id.to_string()))
        .await
        .map(|captured| captured.text)
        .unwrap_or_default();
    screen
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

/// Files changed, lines added and removed: against the worktree's base for a worktree session, else
/// against HEAD in the repository.
async fn diff_stat(api: &Api, instance: &mahavishnu_core::Instance) -> Option<Value> {
    let numstat = match &instance.worktree {
        Some(_) => {
            crate::session_diff(api, &instance.id.to_string(), false)
                .await
                .ok()?
                .diff
        }
        // What the session changed in the repository itself, untracked files too.
        None => {
            let cwd = instance.cwd.clone();
            mahavishnu_lifecycle::blocking(move || {
                mahavishnu_lifecycle::checkpoint::Repository::open(&cwd)?
                    .diff_work_tree("HEAD", &[])
            })
            .await
            .ok()?
        }
    };
    Some(stat_of(&numstat))
}

/// `{"files", "insertions", "deletions"}` of a unified diff.
fn stat_of(diff: &str) -> Value {
    let mut files = 0;
    let (mut insertions, mut deletions) = (0, 0);
    for line in diff.lines() {
        if line.starts_with("diff --git ") {
            files += 1;
        } else if line.starts_with('+') && !line.starts_with("+++") {
            insertions += 1;
        } else if line.starts_with('-') && !line.starts_with("---") {
            deletions += 1;
        }
    }
    json!({ "files": files, "insertions": insertions, "deletions": deletions })
}

/// Runs the worktree's checks; merges its branch when every check that ran passed. Returns a line,
/// whether it merged, and the scorecard.
async fn merge_if_checks_pass(
    api: &Api,
    sweep: i64,
    name: &str,
    instance: &mahavishnu_core::Instance,
) -> (String, bool, Option<Value>) {
    let Some(worktree) = &instance.worktree else {
        return (
            "not a worktree session: nothing to merge".into(),
            false,
            None,
        );
    };
    let repo = Repo {
        name: worktree.branch.clone(),
        path: worktree.path.clone(),
        kind: Kind::detect(&worktree.path),
        tags: Vec::new(),
        present: true,
    };
    let store = api.orchestrator().store();
    let (checks, source, note) =
        match mahavishnu_workflows::check::checks_for(store, &repo.path, repo.kind) {
            Ok(found) => found,
            Err(e) => return (format!("not merged: {e}"), false, None),
        };
    let card: Scorecard = mahavishnu_workflows::check::score(
        &repo,
        checks,
        source,
        note,
        Duration::from_secs_f64(COMMAND_TIMEOUT),
        // Kept with the sweep's other outputs.
        |check| api.workflows().check_output(sweep, name, check),
    )
    .await;
    let card_value = serde_json::to_value(&card).ok();
    if card.outcome() != Outcome::Ok {
        return (format!("not merged: {}", card.line()), false, card_value);
    }
    match crate::merge_session(api, &instance.id.to_string(), None, false).await {
        Ok(merged) => (
            format!(
                "merged {} into {} ({})",
                merged.branch,
                merged.into,
                card.line()
            ),
            true,
            card_value,
        ),
        Err(e) => (format!("not merged: {e}"), false, card_value),
    }
}

/// Arguments of `sweep_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepIdParams {
    /// The sweep's number.
    pub id: i64,
}

async fn sweep_status(api: Api, params: SweepIdParams, _: Progress) -> Result<Reply> {
    let sweep = api.workflows().sweep(params.id)?;
    let summary = format!(
        "sweep {} ({}): {}",
        sweep.id,
        sweep.state,
        sweep.summary.line()
    );
    Reply::new(&sweep, summary)
}

/// Arguments of `sweep_list`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepListParams {
    /// At most this many (default 20).
    #[serde(default = "twenty")]
    pub limit: usize,
}

fn twenty() -> usize {
    20
}

async fn sweep_list(api: Api, params: SweepListParams, _: Progress) -> Result<Reply> {
    let sweeps = api.workflows().sweeps(params.limit.clamp(1, 1000))?;
    let summary = plural(sweeps.len(), "sweep", "sweeps");
    Reply::list("sweeps", &sweeps, summary)
}

/// Arguments of `sweep_rerun`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepRerunParams {
    /// The sweep's number.
    pub id: i64,
    /// Only the repositories that did not succeed.
    #[serde(default)]
    pub failed: bool,
}

async fn sweep_rerun(api: Api, params: SweepRerunParams, progress: Progress) -> Result<Reply> {
    let before = api.workflows().sweep(params.id)?;
    let catalog = api.workflows().catalog()?;
    let known = catalog.list(None, None);
    let repos: Vec<Repo> = before
        .results
        .iter()
        .filter(|result| !params.failed || result.status != Outcome::Ok)
        .map(|result| {
            known
                .iter()
                .find(|repo| repo.name == result.repo)
                .cloned()
                .unwrap_or_else(|| Repo {
                    name: result.repo.clone(),
                    path: result.path.clone(),
                    kind: Kind::detect(&result.path),
                    tags: Vec::new(),
                    present: mahavishnu_workflows::catalog::is_git_repository(&result.path),
                })
        })
        .collect();
    if repos.is_empty() {
        return Err(Error::Invalid(format!(
            "every repository of sweep {} succeeded: there is nothing to run again",
            params.id
        )));
    }
    let spec = &before.spec;
    let parallel = spec["parallel"].as_u64().unwrap_or(8) as usize;
    let timeout = spec["timeout_s"].as_f64();
    let sweep = match before.kind.as_str() {
        "check" => {
            let options = SweepOptions {
                parallel,
                timeout: seconds("timeout", timeout.unwrap_or(COMMAND_TIMEOUT))?,
                workflow: None,
            };
            api.workflows()
                .check_sweep(repos, &options, &reporter(&progress))
                .await?
                .0
        }
        "agent" => {
            let agent: AgentSpec = serde_json::from_value(spec.clone()).map_err(|e| {
                Error::Failed(format!("sweep {}'s record is unreadable: {e}", params.id))
            })?;
            agent_sweep(&api, agent, repos, None, &reporter(&progress)).await?
        }
        _ => {
            let command: Vec<String> =
                serde_json::from_value(spec["command"].clone()).unwrap_or_default();
            let params = SweepParams {
                command,
                parallel,
                timeout,
                ..SweepParams::default()
            };
            run_sweep(&api, params, repos, None, &progress).await?
        }
    };
    sweep_reply(&sweep)
}

/// Arguments of `check_run`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckParams {
    /// A repository's directory (it need not be in the catalog); else the catalog's repositories.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The catalog's repositories with this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// These repositories of the catalog, by name or path.
    #[serde(default)]
    pub repos: Vec<String>,
    /// At most this many repositories at once (default 4: checks build and test).
    #[serde(default = "four")]
    pub parallel: usize,
    /// Seconds each check may take (default 600).
    #[serde(default)]
    pub timeout: Option<f64>,
}

fn four() -> usize {
    4
}

#[derive(Serialize)]
struct Checked {
    id: i64,
    summary: mahavishnu_workflows::Summary,
    scorecards: Vec<Value>,
    changes: Vec<mahavishnu_workflows::Change>,
}

async fn check_run(api: Api, params: CheckParams, progress: Progress) -> Result<Reply> {
    let catalog = api.workflows().catalog()?;
    let repos = match &params.path {
        Some(path) => vec![repo_at(&catalog, &api.absolute(path))?],
        None => catalog.select(&params.repos, params.tag.as_deref())?,
    };
    let options = SweepOptions {
        parallel: params.parallel.clamp(1, 64),
        timeout: seconds("timeout", params.timeout.unwrap_or(COMMAND_TIMEOUT))?,
        workflow: None,
    };
    let (sweep, changes) = api
        .workflows()
        .check_sweep(repos, &options, &reporter(&progress))
        .await?;
    checked_reply(sweep, changes)
}

fn checked_reply(sweep: Sweep, changes: Vec<mahavishnu_workflows::Change>) -> Result<Reply> {
    let mut lines: Vec<String> = sweep
        .results
        .iter()
        .map(|result| format!("{}: {}", result.repo, result.last_line))
        .collect();
    if !changes.is_empty() {
        lines.push(format!(
            "{} since the last check",
            plural(changes.len(), "change", "changes")
        ));
    }
    let failed = sweep.summary.ok != sweep.summary.total;
    let reply = Checked {
        id: sweep.id,
        summary: sweep.summary.clone(),
        scorecards: sweep.results.iter().map(scorecard_of).collect(),
        changes,
    };
    let reply = Reply::new(&reply, lines.join("\n"))?;
    Ok(if failed { reply.failed() } else { reply })
}

/// A result's scorecard; a repository whose checks could not start gets one that says why.
fn scorecard_of(result: &RepoResult) -> Value {
    if result.detail.is_object() {
        return result.detail.clone();
    }
    json!({
        "repo": result.repo, "path": result.path, "checks": [], "passed": 0, "ran": 0,
        "note": result.last_line,
    })
}

/// The repository at `dir`: its catalog entry, or one named after its directory.
fn repo_at(catalog: &Catalog, dir: &std::path::Path) -> Result<Repo> {
    let path = std::fs::canonicalize(dir)
        .map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?;
    if let Some(repo) = catalog
        .list(None, None)
        .into_iter()
        .find(|repo| repo.path == path)
    {
        return Ok(repo);
    }
    let name = path
        .file_name()
        .map(|name| mahavishnu_workflows::catalog::slug(&name.to_string_lossy()))
        .map(|name| name.trim_start_matches('.').to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "repo".into());
    Ok(Repo {
        name,
        kind: Kind::detect(&path),
        tags: Vec::new(),
        present: path.is_dir(),
        path,
    })
}

/// A workflow as `workflow_list` shows it.
#[derive(Debug, Serialize)]
pub struct WorkflowInfo {
    /// Its name.
    pub name: String,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What it runs: `sweep`, `check`, `agent` or `deploy`, with its settings.
    pub runs: String,
    /// Its settings, as configured.
    pub settings: Value,
    /// Its schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The hook event that runs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_event: Option<String>,
    /// The topic whose messages run it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_topic: Option<String>,
    /// When its schedule runs it next (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_at: Option<String>,
    /// Its last run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<WorkflowRun>,
    /// What is wrong with its settings, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What a workflow runs, or what is wrong with it.
fn work_of(name: &str, workflow: &WorkflowConfig) -> Result<&'static str> {
    let kinds: Vec<&str> = [
        ("sweep", workflow.sweep.is_some()),
        ("check", workflow.check.is_some()),
        ("agent", workflow.agent.is_some()),
        ("deploy", workflow.deploy.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(kind, _)| kind)
    .collect();
    match kinds.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::Config(format!(
            "workflows.{name} runs nothing: give it one of sweep, check, agent or deploy"
        ))),
        many => Err(Error::Config(format!(
            "workflows.{name} gives {}: a workflow runs one of them; make one workflow of each",
            many.join(" and ")
        ))),
    }
}

/// The schedule of a workflow, parsed; `None` when it has none.
pub fn schedule_of(name: &str, workflow: &WorkflowConfig) -> Result<Option<Schedule>> {
    workflow
        .schedule
        .as_deref()
        .map(|pattern| {
            Schedule::parse(
                pattern,
                workflow.timezone.as_deref(),
                &format!("workflows.{name}"),
            )
        })
        .transpose()
}

/// Checks a workflow's settings as far as can be done without running it.
pub fn check_workflow(name: &str, workflow: &WorkflowConfig) -> Result<()> {
    let kind = work_of(name, workflow)?;
    let work = match kind {
        "sweep" => workflow.sweep.as_ref(),
        "check" => workflow.check.as_ref(),
        "agent" => workflow.agent.as_ref(),
        _ => None,
    };
    if let Some(work) = work {
        let agent_only = work.profile.is_some()
            || work.prompt.is_some()
            || work.worktree
            || work.merge
            || work.target.is_some();
        let wrong = match kind {
            "sweep" if work.command.is_empty() => {
                Some("a sweep needs its `command`, e.g. [\"git\", \"status\"]")
            }
            "sweep" if agent_only => {
                Some("profile, prompt, worktree, merge and target are for an agent")
            }
            "check" if !work.command.is_empty() || agent_only => Some(
                "a check runs each repository's checks: give it only tag or repos, parallel, timeout",
            ),
            "agent" if work.profile.is_none() || work.prompt.is_none() => {
                Some("an agent needs its `profile` and its `prompt`")
            }
            "agent" if !work.command.is_empty() => Some("an agent runs a prompt, not a command"),
            "agent" if work.merge && !work.worktree => Some("merge needs worktree = true"),
            _ => None,
        };
        if let Some(wrong) = wrong {
            return Err(Error::Config(format!("workflows.{name}.{kind}: {wrong}")));
        }
    }
    schedule_of(name, workflow)?;
    if let Some(event) = &workflow.on_event
        && !mahavishnu_core::config::HOOK_EVENTS.contains(&event.as_str())
    {
        return Err(Error::Config(format!(
            "workflows.{name}: on_event `{event}` is not a hook event; use one of {}",
            mahavishnu_core::config::HOOK_EVENTS.join(", ")
        )));
    }
    if let Some(topic) = &workflow.on_topic {
        mahavishnu_core::deploy::events::check_topic_id(topic)
            .map_err(|e| Error::Config(format!("workflows.{name}: on_topic: {e}")))?;
    }
    Ok(())
}

async fn workflow_list(api: Api, _: Empty, _: Progress) -> Result<Reply> {
    let workflows = &api.orchestrator().config().config.workflows;
    let store = api.orchestrator().store();
    let now = chrono::Utc::now();
    let mut infos = Vec::with_capacity(workflows.len());
    for (name, workflow) in workflows {
        let problem = check_workflow(name, workflow).err().map(|e| e.to_string());
        let runs = work_of(name, workflow).unwrap_or("nothing");
        let settings = match runs {
            "sweep" => serde_json::to_value(&workflow.sweep),
            "check" => serde_json::to_value(&workflow.check),
            "agent" => serde_json::to_value(&workflow.agent),
            "deploy" => serde_json::to_value(&workflow.deploy),
            _ => Ok(Value::Null),
        }
        .unwrap_or(Value::Null);
        let next_at = schedule_of(name, workflow)
            .ok()
            .flatten()
            .and_then(|schedule| schedule.next_after(now))
            .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        infos.push(WorkflowInfo {
            name: name.clone(),
            description: workflow.description.clone(),
            runs: runs.to_string(),
            settings,
            schedule: workflow.schedule.clone(),
            on_event: workflow.on_event.clone(),
            on_topic: workflow.on_topic.clone(),
            next_at,
            last: records::runs(store, Some(name), 1)?.pop(),
            problem,
        });
    }
    let summary = plural(infos.len(), "workflow", "workflows");
    Reply::list("workflows", &infos, summary)
}

/// No arguments.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Arguments of `workflow_run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRunParams {
    /// The workflow's name.
    pub name: String,
}

async fn workflow_run(api: Api, params: WorkflowRunParams, progress: Progress) -> Result<Reply> {
    let (run, result) = run_workflow(&api, &params.name, "by hand", &progress).await?;
    let summary = format!("workflow {}: {} ({})", run.workflow, run.state, run.summary);
    let failed = run.state != "ok";
    let reply = Reply::new(&json!({ "run": run, "result": result }), summary)?;
    Ok(if failed { reply.failed() } else { reply })
}

/// Runs workflow `name` now, recording the run with its `cause` (`by hand`, `schedule`, `event
/// SessionEnd`, `topic repo-pushed`); returns the run and what the work returned.
pub async fn run_workflow(
    api: &Api,
    name: &str,
    cause: &str,
    progress: &Progress,
) -> Result<(WorkflowRun, Value)> {
    let workflows = &api.orchestrator().config().config.workflows;
    let workflow = workflows.get(name).ok_or_else(|| {
        Error::Invalid(format!(
            "there is no workflow `{name}`; {}",
            if workflows.is_empty() {
                "define one as [workflows.NAME] in your config".to_string()
            } else {
                format!(
                    "there are: {}",
                    workflows.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        ))
    })?;
    check_workflow(name, workflow)?;
    let store = api.orchestrator().store();
    let seq = records::begin_run(store, name, cause)?;
    let outcome = work(api, name, workflow, progress).await;
    let (ok, line, sweep, value) = match outcome {
        Ok(done) => done,
        Err(e) => (
            false,
            e.to_string(),
            None,
            json!({ "error": e.to_string() }),
        ),
    };
    records::finish_run(store, seq, ok, &line, sweep)?;
    let run = records::runs(store, Some(name), 1)?
        .pop()
        .ok_or_else(|| Error::Failed(format!("the run of workflow {name} was not recorded")))?;
    Ok((run, value))
}

/// Does a workflow's work: whether it succeeded, a line, the sweep it ran, and its value.
async fn work(
    api: &Api,
    name: &str,
    workflow: &WorkflowConfig,
    progress: &Progress,
) -> Result<(bool, String, Option<i64>, Value)> {
    let catalog = || api.workflows().catalog();
    let timeout = |text: &Option<String>, default: f64| -> Result<Option<f64>> {
        Ok(Some(match text {
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| {
                    Error::Config(format!(
                        "workflows.{name}: timeout `{text}`: {e}; write it as `90s`, `10m` or `1h`"
                    ))
                })?
                .as_secs_f64(),
            None => default,
        }))
    };
    let swept = |sweep: Sweep| {
        let ok = sweep.summary.ok == sweep.summary.total;
        let line = format!("sweep {}: {}", sweep.id, sweep.summary.line());
        let id = sweep.id;
        (
            ok,
            line,
            Some(id),
            serde_json::to_value(&sweep).unwrap_or(Value::Null),
        )
    };
    // A sweep and an agent are one sweep: a command, or a profile and a prompt.
    if let Some((work, default_timeout, default_parallel)) = workflow
        .sweep
        .as_ref()
        .map(|work| (work, COMMAND_TIMEOUT, 8))
        .or_else(|| workflow.agent.as_ref().map(|work| (work, AGENT_TIMEOUT, 4)))
    {
        let repos = catalog()?.select(&work.repos, work.tag.as_deref())?;
        let params = SweepParams {
            command: work.command.clone(),
            profile: work.profile.clone(),
            prompt: work.prompt.clone(),
            worktree: work.worktree,
            merge: work.merge,
            keep: false,
            target: work.target.clone(),
            tag: None,
            repos: Vec::new(),
            parallel: work.parallel.unwrap_or(default_parallel),
            timeout: timeout(&work.timeout, default_timeout)?,
        };
        return Ok(swept(
            run_sweep(api, params, repos, Some(name), progress).await?,
        ));
    }
    if let Some(check) = &workflow.check {
        let repos = catalog()?.select(&check.repos, check.tag.as_deref())?;
        let options = SweepOptions {
            parallel: check.parallel.unwrap_or(4).clamp(1, 64),
            timeout: seconds(
                "timeout",
                timeout(&check.timeout, COMMAND_TIMEOUT)?.unwrap_or(COMMAND_TIMEOUT),
            )?,
            workflow: Some(name.to_string()),
        };
        let (sweep, changes) = api
            .workflows()
            .check_sweep(repos, &options, &reporter(progress))
            .await?;
        let (ok, line, id, mut value) = swept(sweep);
        value["changes"] = serde_json::to_value(&changes).unwrap_or(Value::Null);
        return Ok((ok, line, id, value));
    }
    if let Some(deploy) = &workflow.deploy {
        let manifest = mahavishnu_core::paths::expand_home(&deploy.manifest);
        let arguments = json!({ "file": manifest, "platform": deploy.platform });
        let reply = api
            .call("deploy_sandcastle", arguments, progress.clone())
            .await?;
        return Ok((!reply.failed, reply.summary.clone(), None, reply.value));
    }
    Err(Error::Config(format!(
        "workflows.{name} runs nothing: give it one of sweep, check, agent or deploy"
    )))
}

/// How often the event stream is read for hook events.
const EVENT_LOOK: Duration = Duration::from_millis(500);

/// Runs the workflows' triggers until the process ends, as `serve` does: each schedule when it
/// comes, each hook event as it is recorded, each message on a topic (through `bus`). Two runs of
/// one workflow never overlap: a schedule that comes while its workflow still runs is skipped, an
/// event or a message waits its turn. `say` gets a line for each run and each trouble.
pub async fn run_triggers(
    api: Api,
    bus: Option<std::sync::Arc<dyn mahavishnu_deploy::BusProvider>>,
    say: std::sync::Arc<dyn Fn(String) + Send + Sync>,
) {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    let workflows = api.orchestrator().config().config.workflows.clone();
    let mut turns: BTreeMap<String, Arc<tokio::sync::Mutex<()>>> = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut on_event: Vec<(String, String)> = Vec::new();
    for (name, workflow) in &workflows {
        if let Err(e) = check_workflow(name, workflow) {
            say(format!("workflow {name} will not run: {e}"));
            continue;
        }
        let turn = Arc::clone(turns.entry(name.clone()).or_default());
        if let Ok(Some(schedule)) = schedule_of(name, workflow) {
            let (api, name, say, turn) = (
                api.clone(),
                name.clone(),
                Arc::clone(&say),
                Arc::clone(&turn),
            );
            tasks.spawn(async move {
                loop {
                    let now = chrono::Utc::now();
                    let Some(next) = schedule.next_after(now) else {
                        say(format!(
                            "workflow {name}: its schedule names no time to come"
                        ));
                        return;
                    };
                    let wait = (next - now).to_std().unwrap_or_default();
                    tokio::time::sleep(wait).await;
                    let Ok(_running) = turn.try_lock() else {
                        say(format!(
                            "workflow {name}: still running, so this scheduled run is skipped"
                        ));
                        continue;
                    };
                    report_run(
                        &say,
                        &name,
                        run_workflow(&api, &name, "schedule", &Progress::default()).await,
                    );
                }
            });
        }
        if let Some(event) = &workflow.on_event {
            on_event.push((name.clone(), event.clone()));
        }
        if let Some(topic) = &workflow.on_topic {
            let Some(bus) = bus.clone() else {
                say(format!(
                    "workflow {name}: on_topic needs a Pub/Sub bus, and there is none here"
                ));
                continue;
            };
            let (api, name, say, turn, topic) = (
                api.clone(),
                name.clone(),
                Arc::clone(&say),
                Arc::clone(&turn),
                topic.clone(),
            );
            tasks.spawn(async move {
                follow_topic(api, bus, name, topic, say, turn).await;
            });
        }
    }
    if !on_event.is_empty() {
        let (api, say) = (api.clone(), Arc::clone(&say));
        let turns = turns.clone();
        tasks.spawn(async move {
            let mut after = api.orchestrator().last_event_seq().unwrap_or(0);
            loop {
                tokio::time::sleep(EVENT_LOOK).await;
                let Ok(events) = api.orchestrator().events(after, None, 500) else {
                    continue;
                };
                for event in events {
                    after = after.max(event.seq);
                    if event.kind != "hook" {
                        continue;
                    }
                    let happened = event.detail["event"].as_str().unwrap_or_default();
                    for (name, wanted) in &on_event {
                        if wanted != happened {
                            continue;
                        }
                        let _running = turns[name].lock().await;
                        let cause = format!("event {happened}");
                        report_run(
                            &say,
                            name,
                            run_workflow(&api, name, &cause, &Progress::default()).await,
                        );
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Runs workflow `name` for each message on `topic`, through a pull subscription of its own
/// (`mahavishnu-workflow-NAME`); a lost connection is tried again after a while.
async fn follow_topic(
    api: Api,
    bus: std::sync::Arc<dyn mahavishnu_deploy::BusProvider>,
    name: String,
    topic: String,
    say: std::sync::Arc<dyn Fn(String) + Send + Sync>,
    turn: std::sync::Arc<tokio::sync::Mutex<()>>,
) {
    use futures::StreamExt;
    let subscription = format!("mahavishnu-workflow-{name}");
    // The same trouble again is not said again: a missing bus is tried every few seconds.
    let mut last_trouble = String::new();
    loop {
        let received = async {
            let events = bus.connect().await?;
            let topic = mahavishnu_core::deploy::TopicRef {
                project: bus.project(),
                id: topic.clone(),
            };
            events.receive(&topic, &subscription).await
        }
        .await;
        match received {
            Ok(mut messages) => {
                say(format!("workflow {name}: listening to topic {topic}"));
                while let Some(message) = messages.next().await {
                    match message {
                        Ok(message) => {
                            let _running = turn.lock().await;
                            let cause = format!("topic {topic} (message {})", message.id);
                            report_run(
                                &say,
                                &name,
                                run_workflow(&api, &name, &cause, &Progress::default()).await,
                            );
                        }
                        Err(e) => {
                            say(format!("workflow {name}: {e}"));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                let trouble = format!("workflow {name}: cannot listen to topic {topic}: {e}");
                if trouble != last_trouble {
                    say(trouble.clone());
                    last_trouble = trouble;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn report_run(
    say: &std::sync::Arc<dyn Fn(String) + Send + Sync>,
    name: &str,
    outcome: Result<(WorkflowRun, Value)>,
) {
    match outcome {
        Ok((run, _)) => say(format!(
            "workflow {name} ({}): {} ({})",
            run.cause, run.state, run.summary
        )),
        Err(e) => say(format!("workflow {name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_stat_counts_files_and_lines() {
        let diff = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1,2 @@\n-old\n+new\n+more\ndiff --git a/y b/y\n--- /dev/null\n+++ b/y\n@@ -0,0 +1 @@\n+y\n";
        assert_eq!(
            stat_of(diff),
            json!({"files": 2, "insertions": 3, "deletions": 1})
        );
    }

    #[test]
    fn a_workflow_runs_exactly_one_thing_at_valid_times() {
        let mut workflow = WorkflowConfig::default();
        assert!(
            check_workflow("w", &workflow)
                .unwrap_err()
                .to_string()
                .contains("runs nothing")
        );
        workflow.check = Some(Default::default());
        check_workflow("w", &workflow).unwrap();
        workflow.sweep = Some(Default::default());
        let error = check_workflow("w", &workflow).unwrap_err().to_string();
        assert!(error.contains("sweep and check"), "{error}");
        workflow.sweep = None;
        workflow.on_event = Some("Lunch".into());
        let error = check_workflow("w", &workflow).unwrap_err().to_string();
        assert!(error.contains("SessionEnd"), "{error}");
        workflow.on_event = Some("SessionEnd".into());
        workflow.schedule = Some("61 * * * *".into());
        assert!(
            check_workflow("w", &workflow)
                .unwrap_err()
                .to_string()
                .contains("cron")
        );
    }
}
