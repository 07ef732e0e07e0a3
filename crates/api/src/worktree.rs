//! Sessions in their own git worktrees: launch (worktree, copied files, setup, ports), diff.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use mahavishnu_core::{Error, InstanceId, Result, WorktreeRecord};
use mahavishnu_lifecycle::HookContext;
use mahavishnu_lifecycle::hooks::{render, run_command};
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

/// Launches `request.count` sessions, each in a new worktree and branch of the repository around
/// `request.cwd`: files from `worktree.copy` are copied in, `worktree.setup` runs there first (a
/// failure keeps the worktree for inspection and starts nothing), and each gets its own ports.
pub async fn launch_in_worktrees(
    api: &Api,
    mut request: LaunchRequest,
    options: &WorktreeOptions,
) -> Result<LaunchOutcome> {
    let settings = api.orchestrator().config().config.worktree.clone();
    let project = api.project(request.cwd.as_deref())?;
    if settings.setup.is_some() || !settings.copy.is_empty() {
        let origins = &api.orchestrator().config().origins;
        let from_project = ["worktree.setup", "worktree.copy"].iter().any(|key| {
            origins
                .get(*key)
                .is_some_and(|origin| origin.ends_with(".mahavishnu.toml"))
        });
        if from_project && !api.lifecycle().is_trusted(&project)? {
            return Err(Error::Invalid(format!(
                "the worktree setup of {} comes from its .mahavishnu.toml, which is not trusted yet; \
                 read it, then run `mahavishnu trust` there",
                project.display()
            )));
        }
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
    let timeout = settings
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
        .unwrap_or(Duration::from_secs(600));
    let mut ready = Vec::new();
    for (name, plan) in names.into_iter().zip(planned) {
        let port = next_port();
        let copy = copy.clone();
        let (record, _) = blocking(move || plan.create(&copy, port)).await?;
        if let Some(setup) = &settings.setup {
            let context = HookContext {
                event: "WorktreeSetup".into(),
                session_id: Some(name.clone()),
                project_dir: project.clone(),
                ..Default::default()
            };
            let mut environment = context.environment();
            environment.extend(port_environment(port));
            environment.push((
                "MAHAVISHNU_WORKTREE".into(),
                record.path.display().to_string(),
            ));
            let ran = run_command(
                &render(setup, &context),
                &record.path,
                &environment,
                timeout,
            )
            .await;
            if let Some(error) = ran.error {
                outcome.errors.push(format!(
                    "{name}: worktree.setup failed ({error}), so the session was not started; the worktree \
                     is kept for inspection at {}:\n{}",
                    record.path.display(),
                    ran.output.trim_end()
                ));
                continue;
            }
        }
        ready.push((name, record));
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

/// The worktree of an instance, or why it has none.
pub async fn worktree_of(api: &Api, text: &str) -> Result<(InstanceId, WorktreeRecord)> {
    let id = api.orchestrator().resolve_id(text)?;
    let instance = api.orchestrator().recorded(&id)?;
    let record = instance.worktree.ok_or_else(|| {
        Error::Invalid(format!(
            "{id} has no worktree of its own; launch sessions with --worktree to have one"
        ))
    })?;
    Ok((id, record))
}

/// `terminal diff`: what the session changed against its base, committed and not.
pub async fn session_diff(api: &Api, text: &str, stat: bool) -> Result<SessionDiff> {
    let (id, record) = worktree_of(api, text).await?;
    let branch = record.branch.clone();
    let diff = blocking(move || worktree::diff(&record, stat)).await?;
    Ok(SessionDiff { id, branch, diff })
}
