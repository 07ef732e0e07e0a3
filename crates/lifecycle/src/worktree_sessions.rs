//! Sessions in their own git worktrees: launch (worktree, copied files, setup, ports), pause, resume,
//! repair, merge and diff. The git side is in [`crate::worktree`]; this service adds the instances.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mahavishnu_core::config::WorktreeConfig;
use mahavishnu_core::naming::instance_names;
use mahavishnu_core::{
    Error, Instance, InstanceId, InstanceState, Result, Timestamp, WorktreeRecord,
};
use mahavishnu_orchestrator::{LaunchOutcome, LaunchRequest, ListFilter, Orchestrator};
use serde::Serialize;

use crate::HookContext;
use crate::hooks::{prepare, run_command};
use crate::store::{release_port_ranges, reserve_port_ranges};
use crate::{blocking, worktree};

/// How to make the worktrees of a launch.
#[derive(Clone, Debug, Default)]
pub struct WorktreeOptions {
    /// The commit or branch they start from (default `HEAD`).
    pub from: Option<String>,
    /// The branch prefix (default `worktree.branch_prefix`).
    pub branch_prefix: Option<String>,
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

/// The worktree sessions service, over the orchestrator and its configuration.
#[derive(Clone)]
pub struct Worktrees {
    orchestrator: Arc<Orchestrator>,
    cwd: PathBuf,
    home: Option<PathBuf>,
}

impl Worktrees {
    /// The service over `orchestrator`; a relative `worktree.dir` means one in `cwd`, and worktrees
    /// live under `home` when nothing else says where.
    pub fn new(orchestrator: Arc<Orchestrator>, cwd: PathBuf, home: Option<PathBuf>) -> Self {
        Worktrees {
            orchestrator,
            cwd,
            home,
        }
    }

    fn root(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.orchestrator.config().config.worktree.dir {
            return Ok(self.cwd.join(mahavishnu_core::paths::expand_home(dir)));
        }
        // A state directory of its own keeps its worktrees too.
        let store = self.orchestrator.store();
        if let Some(state_dir) = store.path().parent()
            && mahavishnu_core::paths::isolation_tag(state_dir).is_some()
        {
            return Ok(state_dir.join("worktrees"));
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| self.home.as_ref().map(|home| home.join(".local/share")))
            .ok_or_else(|| {
                Error::Invalid(
                    "neither XDG_DATA_HOME nor HOME is set; set worktree.dir in the config".into(),
                )
            })?;
        Ok(data.join("mahavishnu/worktrees"))
    }

    /// Reserves a port range for each of `count` sessions, none held by another session or by a
    /// launch under way in any process; the reservations last as long as the setup may take.
    async fn reserve_ports(
        &self,
        settings: &WorktreeConfig,
        count: usize,
        setup_timeout: Duration,
    ) -> Result<Vec<u16>> {
        // Listing brings the records of instances that ended up to date, so that their ports are free.
        self.orchestrator
            .list_instances(&ListFilter::default())
            .await?;
        let orchestrator = self.orchestrator.clone();
        let (first, span) = (settings.port_base, settings.port_span.max(1));
        let until = Timestamp(
            Timestamp::now().0 + setup_timeout.as_millis() as i64 + RESERVATION_MARGIN_MS,
        );
        blocking(move || reserve_port_ranges(orchestrator.store(), count, first, span, until)).await
    }

    /// Launches `request.count` sessions, each in a new worktree and branch of the repository around
    /// `request.cwd`: files from `worktree.copy` are copied in, `worktree.setup` runs there first (a
    /// failure keeps the worktree for inspection and starts nothing), and each gets its own ports.
    pub async fn launch_in_worktrees(
        &self,
        request: LaunchRequest,
        options: &WorktreeOptions,
    ) -> Result<LaunchOutcome> {
        let orchestrator = &self.orchestrator;
        if let Some(name) = &request.target
            && !orchestrator.target(name)?.capabilities().host_processes
        {
            return Err(Error::Invalid(format!(
                "--worktree makes worktrees on this machine, so it works with targets that run programs \
                 here (tmux, pty), not with target `{name}`"
            )));
        }
        let settings = orchestrator.config().config.worktree.clone();
        let dir = request
            .cwd
            .as_ref()
            .map_or_else(|| self.cwd.clone(), |dir| self.cwd.join(dir));
        let project = crate::Lifecycle::project_of(&dir)?;
        let project = project.as_path();
        // An untrusted project file's setup and copies were left out of the configuration; launching
        // without them would give a worktree its project does not expect.
        if let Some(trust) = &orchestrator.config().project_trust
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
        let names = instance_names(request.name.as_deref(), request.count, |_| Ok(false))?;
        let from = options.from.clone().unwrap_or_else(|| "HEAD".into());
        let prefix = options
            .branch_prefix
            .clone()
            .unwrap_or_else(|| settings.branch_prefix.clone());
        let root = self.root()?;
        // Every worktree is checked before any is made.
        let mut planned = Vec::new();
        for name in names {
            let plan = worktree::plan(project, &name, &from, &prefix, &root)?;
            planned.push((name, plan));
        }
        let timeout = setup_timeout(&settings)?;
        let ports = self
            .reserve_ports(&settings, planned.len(), timeout)
            .await?;
        let mut outcome = self
            .make_and_launch(request, &settings, project, planned, &ports, timeout)
            .await;
        // The sessions that started hold their ports in their records now; the others' are free.
        let orchestrator = self.orchestrator.clone();
        if let Err(error) =
            blocking(move || release_port_ranges(orchestrator.store(), &ports)).await
        {
            outcome.errors.push(error.to_string());
        }
        Ok(outcome)
    }

    /// Registers, checks out, sets up and launches the planned worktrees, with their ports.
    async fn make_and_launch(
        &self,
        mut request: LaunchRequest,
        settings: &WorktreeConfig,
        project: &Path,
        planned: Vec<(String, worktree::Planned)>,
        ports: &[u16],
        timeout: Duration,
    ) -> LaunchOutcome {
        let mut outcome = LaunchOutcome {
            instances: Vec::new(),
            errors: Vec::new(),
        };
        // Registered one at a time (git's worktree bookkeeping is shared), then checked out, one per
        // core, and set up in parallel.
        let registered = blocking(move || {
            planned
                .into_iter()
                .map(|(name, plan)| Ok((name, plan.register()?)))
                .collect::<Result<Vec<_>>>()
        })
        .await;
        let registered = match registered {
            Ok(registered) => registered,
            Err(error) => {
                outcome.errors.push(error.to_string());
                return outcome;
            }
        };
        let creations =
            registered
                .into_iter()
                .zip(ports.iter().copied())
                .map(|((name, plan), port)| {
                    let copy = settings.copy.clone();
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
        let setups = created.into_iter().map(|(name, created)| async move {
            let (record, _) = created.map_err(|e| format!("{name}: {e}"))?;
            run_setup(settings, project, &name, &record, timeout).await?;
            Ok::<_, String>((name, record))
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
            async move { self.orchestrator.launch_instances(&one).await }
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
        outcome
    }

    /// `terminal pause`: commits the session's work on its branch, stops it, removes its worktree.
    pub async fn pause(&self, text: &str) -> Result<Paused> {
        let (instance, record) = self.worktree_of(text)?;
        let id = instance.id;
        if instance.state == InstanceState::Paused {
            return Err(Error::Invalid(format!(
                "{id} is already paused; `terminal resume {id}` brings it back"
            )));
        }
        if instance.state.is_live() {
            self.stop(&id, "paused").await?;
        }
        let branch = record.branch.clone();
        let committed = blocking(move || worktree::stash_away(&record)).await?;
        self.orchestrator.mark_paused(&id)?;
        Ok(Paused {
            id,
            branch,
            committed_work_in_progress: committed,
        })
    }

    /// `terminal resume`: recreates the worktree from the branch and launches the profile again, with
    /// its continue arguments (`-c` for Qwen Code and Claude Code).
    pub async fn resume(&self, text: &str) -> Result<LaunchOutcome> {
        let (instance, record) = self.worktree_of(text)?;
        if instance.state != InstanceState::Paused {
            return Err(Error::Invalid(format!(
                "{} is {}, not paused; only a paused session can be resumed",
                instance.id, instance.state
            )));
        }
        self.relaunch(instance, record).await
    }

    /// `terminal repair`: for a session whose worktree was deleted by hand. The worktree is made again
    /// from the session's branch at its old place (never over anything that is there now), and the
    /// session is started again in it as by `resume`; what was not committed was lost with the
    /// directory.
    pub async fn repair(&self, text: &str) -> Result<LaunchOutcome> {
        let (instance, record) = self.worktree_of(text)?;
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
            self.stop(id, "repaired").await?;
        }
        self.relaunch(instance, record).await
    }

    /// Stops a live session before it is `done` (paused, repaired); the error says it was not.
    async fn stop(&self, id: &InstanceId, done: &str) -> Result<()> {
        let closed = self
            .orchestrator
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
    async fn relaunch(&self, instance: Instance, record: WorktreeRecord) -> Result<LaunchOutcome> {
        let orchestrator = &self.orchestrator;
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
    pub async fn merge(
        &self,
        text: &str,
        into: Option<String>,
        squash: bool,
    ) -> Result<worktree::Merged> {
        let (_, record) = self.worktree_of(text)?;
        blocking(move || worktree::merge(&record, into.as_deref(), squash)).await
    }

    /// An instance and its worktree, or why it has none.
    pub fn worktree_of(&self, text: &str) -> Result<(Instance, WorktreeRecord)> {
        let id = self.orchestrator.resolve_id(text)?;
        let instance = self.orchestrator.recorded(&id)?;
        let record = instance.worktree.clone().ok_or_else(|| {
            Error::Invalid(format!(
                "{id} has no worktree of its own; launch sessions with --worktree to have one"
            ))
        })?;
        Ok((instance, record))
    }

    /// `terminal diff`: what the session changed against its base, committed and not.
    pub async fn diff(&self, text: &str, stat: bool) -> Result<SessionDiff> {
        let (instance, record) = self.worktree_of(text)?;
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
}

/// How long past its setup's time limit a launch keeps its ports reserved, for the checkout before
/// and the launch after.
const RESERVATION_MARGIN_MS: i64 = 10 * 60 * 1000;

/// Runs `worktree.setup` in a new worktree; the error says what failed and that the worktree is kept.
async fn run_setup(
    settings: &WorktreeConfig,
    project: &Path,
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

fn setup_timeout(settings: &WorktreeConfig) -> Result<Duration> {
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

fn port_environment(port: u16) -> [(String, String); 2] {
    [
        ("PORT".into(), port.to_string()),
        ("MAHAVISHNU_PORT_BASE".into(), port.to_string()),
    ]
}
