//! Sessions in their own git worktrees: launch (worktree, copied files, setup, ports), diff.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use mahavishnu_core::{Error, Instance, InstanceId, InstanceState, Result, WorktreeRecord};
use mahavishnu_lifecycle::HookContext;
use mahavishnu_lifecycle::hooks::{prepare, run_command};
use mahavishnu_lifecycle::worktree;
use mahavishnu_orchestrator::{LaunchOutcome, LaunchRequest, ListFilter};
use serde::Serialize;

use crate::{Api, blocking};

/// How to make the worktrees of a launch.
#[derive(Clone, Debug, Default)]
pub struct WorktreeOptions {
    /// The commit or branch they start from (default `HEAD`).
    pub from: Option<String>,
    /// The branch prefix (default `worktree.branch_prefix`).
    pub branch_prefix: Option<String>,
}

fn worktree_root(api: &Api) -> Result<PathBuf> {
    if let Some(dir) = &api.orchestrator().config().config.worktree.dir {
        return Ok(api.absolute(dir));
    }
    // A state directory of its own keeps its worktrees too.
    let store = api.orchestrator().store();
    if let Some(state_dir) = store.path().parent()
        && mahavishnu_core::paths::isolation_tag(state_dir).is_some()
    {
        return Ok(state_dir.join("worktrees"));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| api.home().map(|home| home.join(".local/share")))
        .ok_or_else(|| {
            Error::Invalid(
                "neither XDG_DATA_HOME nor HOME is set; set worktree.dir in the config".into(),
            )
        })?;
    Ok(data.join("mahavishnu/worktrees"))
}

/// Port bases of live worktree sessions, so a new one gets its own range.
async fn ports_in_use(api: &Api) -> Result<BTreeSet<u16>> {
    Ok(api
        .orchestrator()
        .list_instances(&ListFilter::default())
        .await?
        .into_iter()
        .filter_map(|instance| instance.worktree.map(|w| w.port_base))
        .collect())
}

/// Launches `request`: in worktrees when `worktree` options are given, else as a plain launch.
pub async fn launch_sessions(
    api: &Api,
    request: LaunchRequest,
    worktree: Option<&WorktreeOptions>,
) -> Result<LaunchOutcome> {
    match worktree {
        Some(options) => launch_in_worktrees(api, request, options).await,
        None => api.orchestrator().launch_instances(&request).await,
    }
}

/// Launches `request.count` sessions, each in a new worktree and branch of the repository around
/// `request.cwd`: files from `worktree.copy` are copied in, `worktree.setup` runs there first (a
/// failure keeps the worktree for inspection and starts nothing), and each gets its own ports.
pub async fn launch_in_worktrees(
    api: &Api,
    mut request: LaunchRequest,
    options: &WorktreeOptions,
) -> Result<LaunchOutcome> {
    if let Some(name) = &request.target
        && !api
            .orchestrator()
            .target(name)?
            .capabilities()
            .host_processes
    {
        return Err(Error::Invalid(format!(
            "--worktree makes worktrees on this machine, so it works with targets that run programs \
             here (tmux, pty), not with target `{name}`"
        )));
    }
    let settings = api.orchestrator().config().config.worktree.clone();
    let project = api.project(request.cwd.as_deref())?;
    // An untrusted project file's setup and copies were left out of the configuration; launching
    // without them would give a worktree its project does not expect.
    if let Some(trust) = &api.orchestrator().config().project_trust
        && let Some(key) = ["worktree.setup", "worktree.copy", "worktree.dir"]
            .into_iter()
            .find(|key| trust.ignored.iter().any(|ignored| ignored == key))
    {
        return Err(Error::Invalid(format!(
            "`{key}` of {} comes from a project file that is not trusted yet; read it \
             (`mahavishnu trust --show`), then run `mahavishnu trust` there",
            trust.file.display()
        )));
    }
    if let Some(name) = &request.name {
        mahavishnu_orchestrator::check_name(name)?;
    }
    let names: Vec<String> = match &request.name {
        Some(name) if request.count == 1 => vec![name.clone()],
        Some(name) => (1..=request.count).map(|n| format!("{name}-{n}")).collect(),
        None => (0..request.count)
            .map(|_| format!("mv-{:06x}", fastrand::u32(..0x100_0000)))
            .collect(),
    };
    let from = options.from.clone().unwrap_or_else(|| "HEAD".into());
    let prefix = options
        .branch_prefix
        .clone()
        .unwrap_or_else(|| settings.branch_prefix.clone());
    let root = worktree_root(api)?;
    // Every worktree is checked before any is made.
    let mut planned = Vec::new();
    for name in &names {
        planned.push(worktree::plan(&project, name, &from, &prefix, &root)?);
    }
    let mut used = ports_in_use(api).await?;
    let span = settings.port_span.max(1);
    let mut next_port = || {
        let mut base = settings.port_base;
        while used.contains(&base) {
            base = base.saturating_add(span);
        }
        used.insert(base);
        base
    };
    let mut outcome = LaunchOutcome {
        instances: Vec::new(),
        errors: Vec::new(),
    };
    let copy = settings.copy.clone();
    let timeout = setup_timeout(&settings)?;
    // Registered one at a time (git's worktree bookkeeping is shared), then checked out, one per core,
    // and set up in parallel.
    let registered = blocking(move || {
        planned
            .into_iter()
            .map(worktree::Planned::register)
            .collect::<Result<Vec<_>>>()
    })
    .await?;
    let creations = names.into_iter().zip(registered).map(|(name, plan)| {
        let port = next_port();
        let copy = copy.clone();
        async move {
            let created = blocking(move || plan.populate(&copy, port)).await;
            (name, created)
        }
    });
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let created: Vec<_> = futures::stream::iter(creations.collect::<Vec<_>>())
        .buffered(cores)
        .collect()
        .await;
    let setups = created.into_iter().map(|(name, created)| {
        let (settings, project) = (&settings, &project);
        async move {
            let (record, _) = created.map_err(|e| format!("{name}: {e}"))?;
            run_setup(settings, project, &name, &record, timeout).await?;
            Ok::<_, String>((name, record))
        }
    });
    let mut ready = Vec::new();
    for result in futures::future::join_all(setups).await {
        match result {
            Ok(one) => ready.push(one),
            Err(error) => outcome.errors.push(error),
        }
    }
    request.count = 1;
    let launches = ready.into_iter().map(|(name, record)| {
        let mut one = request.clone();
        one.name = Some(name);
        one.cwd = Some(record.path.clone());
        one.env.extend(port_environment(record.port_base));
        one.worktree = Some(record);
        async move { api.orchestrator().launch_instances(&one).await }
    });
    for launched in futures::future::join_all(launches).await {
        match launched {
            Ok(mut launched) => {
                outcome.instances.append(&mut launched.instances);
                outcome.errors.append(&mut launched.errors);
            }
            Err(error) => outcome.errors.push(error.to_string()),
        }
    }
    Ok(outcome)
}

/// Runs `worktree.setup` in a new worktree; the error says what failed and that the worktree is kept.
async fn run_setup(
    settings: &mahavishnu_core::config::WorktreeConfig,
    project: &std::path::Path,
    name: &str,
    record: &WorktreeRecord,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let Some(setup) = &settings.setup else {
        return Ok(());
    };
    let context = HookContext {
        event: "WorktreeSetup".into(),
        session_id: Some(name.to_string()),
        project_dir: project.to_path_buf(),
        ..Default::default()
    };
    let mut extra = port_environment(record.port_base).to_vec();
    extra.push((
        "MAHAVISHNU_WORKTREE".into(),
        record.path.display().to_string(),
    ));
    let prepared = prepare(setup, &context, extra).map_err(|e| e.to_string())?;
    let ran = run_command(
        &prepared.command,
        &record.path,
        &prepared.environment,
        timeout,
    )
    .await;
    match ran.error {
        None => Ok(()),
        Some(error) => Err(format!(
            "{name}: worktree.setup failed ({error}), so the session was not started; the worktree is \
             kept for inspection at {}:\n{}",
            record.path.display(),
            ran.output.trim_end()
        )),
    }
}

fn setup_timeout(settings: &mahavishnu_core::config::WorktreeConfig) -> Result<Duration> {
    Ok(settings
        .setup_timeout
        .as_deref()
        .map(|text| {
            humantime::parse_duration(text).map_err(|e| {
                Error::Invalid(format!(
                    "worktree.setup_timeout `{text}` is not a duration like 5m: {e}"
                ))
            })
        })
        .transpose()?
        .unwrap_or(Duration::from_secs(600)))
}

/// What `terminal pause` did.
#[derive(Clone, Debug, Serialize)]
pub struct Paused {
    /// The session.
    pub id: InstanceId,
    /// The branch that keeps its work.
    pub branch: String,
    /// Whether uncommitted work was committed on the branch.
    pub committed_work_in_progress: bool,
}

/// `terminal pause`: commits the session's work on its branch, stops it, removes its worktree.
pub async fn pause_session(api: &Api, text: &str) -> Result<Paused> {
    let (instance, record) = worktree_of(api, text).await?;
    let (orchestrator, id) = (api.orchestrator(), instance.id);
    if instance.state == InstanceState::Paused {
        return Err(Error::Invalid(format!(
            "{id} is already paused; `terminal resume {id}` brings it back"
        )));
    }
    if instance.state.is_live() {
        stop(api, &id, "paused").await?;
    }
    let branch = record.branch.clone();
    let committed = blocking(move || worktree::stash_away(&record)).await?;
    orchestrator.mark_paused(&id)?;
    Ok(Paused {
        id,
        branch,
        committed_work_in_progress: committed,
    })
}

/// `terminal resume`: recreates the worktree from the branch and launches the profile again, with its
/// continue arguments (`-c` for Qwen Code and Claude Code).
pub async fn resume_session(api: &Api, text: &str) -> Result<LaunchOutcome> {
    let (instance, record) = worktree_of(api, text).await?;
    if instance.state != InstanceState::Paused {
        return Err(Error::Invalid(format!(
            "{} is {}, not paused; only a paused session can be resumed",
            instance.id, instance.state
        )));
    }
    relaunch(api, instance, record).await
}

/// `terminal repair`: for a session whose worktree was deleted by hand. The worktree is made again
/// from the session's branch at its old place (never over anything that is there now), and the
/// session is started again in it as by `resume`; what was not committed was lost with the directory.
pub async fn repair_session(api: &Api, text: &str) -> Result<LaunchOutcome> {
    let (instance, record) = worktree_of(api, text).await?;
    let id = &instance.id;
    if instance.state == InstanceState::Paused {
        return Err(Error::Invalid(format!(
            "{id} is paused (its worktree was removed on purpose); `terminal resume {id}` brings it back"
        )));
    }
    if record.path.join(".git").exists() {
        return Err(Error::Invalid(format!(
            "the worktree of {id} is in place at {}; there is nothing to repair",
            record.path.display()
        )));
    }
    let check = record.clone();
    blocking(move || worktree::can_bring_back(&check)).await?;
    if instance.state.is_live() {
        stop(api, id, "repaired").await?;
    }
    relaunch(api, instance, record).await
}

/// Stops a live session before it is `done` (paused, repaired); the error says it was not.
async fn stop(api: &Api, id: &InstanceId, done: &str) -> Result<()> {
    let closed = api
        .orchestrator()
        .close_instances(std::slice::from_ref(id), None)
        .await?;
    match closed.into_iter().find_map(|outcome| outcome.error) {
        Some(error) => Err(Error::Failed(format!(
            "{id} could not be stopped, so it was not {done}: {error}"
        ))),
        None => Ok(()),
    }
}

/// Makes a stopped session's worktree again from its branch (files copied, setup run) and launches
/// the session there with its profile's continue arguments, under the same id.
async fn relaunch(api: &Api, instance: Instance, record: WorktreeRecord) -> Result<LaunchOutcome> {
    let orchestrator = api.orchestrator();
    let settings = orchestrator.config().config.worktree.clone();
    let timeout = setup_timeout(&settings)?;
    let back = record.clone();
    blocking(move || worktree::bring_back(&back)).await?;
    let (top, path, copy) = (
        record.repository.clone(),
        record.path.clone(),
        settings.copy.clone(),
    );
    blocking(move || worktree::copy_files(&top, &path, &copy)).await?;
    let name = instance.id.native().to_string();
    run_setup(&settings, &record.repository, &name, &record, timeout)
        .await
        .map_err(Error::Failed)?;
    orchestrator.forget_stopped(&instance.id)?;
    let profile = orchestrator.config().profile(&instance.profile)?;
    let request = LaunchRequest {
        profile: instance.profile.clone(),
        count: 1,
        target: Some(instance.target.clone()),
        cwd: Some(record.path.clone()),
        env: port_environment(record.port_base).into_iter().collect(),
        name: Some(name),
        args: profile.resume_args.clone(),
        labels: instance.labels.clone(),
        image: None,
        worktree: Some(record),
    };
    orchestrator.launch_instances(&request).await
}

/// `terminal merge`: merges the session's branch back.
pub async fn merge_session(
    api: &Api,
    text: &str,
    into: Option<String>,
    squash: bool,
) -> Result<worktree::Merged> {
    let (_, record) = worktree_of(api, text).await?;
    blocking(move || worktree::merge(&record, into.as_deref(), squash)).await
}

fn port_environment(port: u16) -> [(String, String); 2] {
    [
        ("PORT".into(), port.to_string()),
        ("MAHAVISHNU_PORT_BASE".into(), port.to_string()),
    ]
}

/// What a worktree session changed.
#[derive(Clone, Debug, Serialize)]
pub struct SessionDiff {
    /// The session.
    pub id: InstanceId,
    /// Its branch.
    pub branch: String,
    /// The diff (or the stat) against the commit it started from.
    pub diff: String,
}

/// An instance and its worktree, or why it has none.
pub async fn worktree_of(api: &Api, text: &str) -> Result<(Instance, WorktreeRecord)> {
    let id = api.orchestrator().resolve_id(text)?;
    let instance = api.orchestrator().recorded(&id)?;
    let record = instance.worktree.clone().ok_or_else(|| {
        Error::Invalid(format!(
            "{id} has no worktree of its own; launch sessions with --worktree to have one"
        ))
    })?;
    Ok((instance, record))
}

/// `terminal diff`: what the session changed against its base, committed and not.
pub async fn session_diff(api: &Api, text: &str, stat: bool) -> Result<SessionDiff> {
    let (instance, record) = worktree_of(api, text).await?;
    let branch = record.branch.clone();
    let paused = instance.state == InstanceState::Paused;
    let diff = blocking(move || {
        if paused {
            worktree::diff_paused(&record, stat)
        } else {
            worktree::diff(&record, stat)
        }
    })
    .await?;
    Ok(SessionDiff {
        id: instance.id,
        branch,
        diff,
    })
}
