//! `launch_instances`: resolve a profile into launch specs, record them, start them in parallel.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mahavishnu_core::config::ProfileConfig;
pub use mahavishnu_core::naming::check_name;
use mahavishnu_core::naming::instance_names;
use mahavishnu_core::{
    ContainerSpec, Error, Instance, InstanceId, InstanceState, LaunchSpec, Result, Target,
    TargetName, Timestamp, WaitingRules, paths,
};
use serde::Serialize;

use crate::Orchestrator;

/// What to launch.
#[derive(Clone, Debug, Default)]
pub struct LaunchRequest {
    /// Profile name.
    pub profile: String,
    /// How many instances.
    pub count: usize,
    /// The target's name; else the profile's, else the configured default.
    pub target: Option<TargetName>,
    /// Working directory; else the profile's, else the current directory.
    pub cwd: Option<PathBuf>,
    /// Environment added on top of the profile's.
    pub env: BTreeMap<String, String>,
    /// Instance name (native id); with a count above one, `NAME-1`, `NAME-2`, ...
    pub name: Option<String>,
    /// Arguments appended to the profile's.
    pub args: Vec<String>,
    /// Labels added to the profile's.
    pub labels: BTreeMap<String, String>,
    /// The container image, for container targets (else the profile's, else the target's).
    pub image: Option<String>,
    /// The worktree the (single) instance works in; its directory is the instance's cwd.
    pub worktree: Option<mahavishnu_core::WorktreeRecord>,
}

/// What a launch produced: the instances that run and the errors of those that did not.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct LaunchOutcome {
    /// Launched instances, in order.
    pub instances: Vec<Instance>,
    /// One message per instance that failed to start.
    pub errors: Vec<String>,
}

impl Orchestrator {
    /// The launch specs a request makes, and its target; nothing is recorded or started.
    fn launch_specs(
        &self,
        request: &LaunchRequest,
    ) -> Result<(Arc<dyn Target>, &ProfileConfig, Vec<LaunchSpec>)> {
        let terminal = &self.config.config.terminal;
        if request.count == 0 {
            return Err(Error::Invalid(
                "--count 0 launches nothing; give a count of 1 or more".into(),
            ));
        }
        if request.count > terminal.max_count {
            return Err(Error::Invalid(format!(
                "--count {} is more than the limit of {}; launch fewer, or raise terminal.max_count in the config",
                request.count, terminal.max_count
            )));
        }
        let profile = self.config.profile(&request.profile)?;
        let name = self.choose_target(request, profile)?;
        let target = Arc::clone(self.target(&name)?);
        let on_host = target.capabilities().host_processes;
        let command = if on_host {
            resolve_command(&request.profile, profile, &request.args)?
        } else {
            container_command(&request.profile, profile, &request.args)?
        };
        let container = ContainerSpec {
            image: request.image.clone().or_else(|| profile.image.clone()),
            resources: profile.resources.clone(),
            interactive: profile.interactive.unwrap_or(true),
            working_dir: request.cwd.clone().or_else(|| profile.cwd.clone()),
        };
        if let Some(dir) = &container.working_dir
            && !on_host
            && dir.is_relative()
        {
            return Err(Error::Invalid(format!(
                "--cwd {} is relative; on target `{name}` give an absolute path inside the container",
                dir.display()
            )));
        }
        let cwd = if on_host {
            resolve_cwd(request.cwd.as_deref().or(profile.cwd.as_deref()))?
        } else {
            // The project a remote instance belongs to is the directory it was launched from.
            resolve_cwd(None)?
        };
        let mut env = profile.env.clone();
        env.extend(request.env.clone());
        for key in env.keys() {
            mahavishnu_core::model::check_env_name(key)?;
        }
        let mut labels = profile.labels.clone();
        labels.extend(request.labels.clone());
        let names = self.instance_names(target.as_ref(), request)?;

        let specs = names
            .into_iter()
            .map(|id| LaunchSpec {
                id,
                profile: request.profile.clone(),
                command: command.clone(),
                cwd: cwd.clone(),
                env: env.clone(),
                rows: terminal.rows.max(2),
                cols: terminal.cols.max(10),
                labels: labels.clone(),
                container: container.clone(),
            })
            .collect();
        Ok((target, profile, specs))
    }

    /// The launch specs of a request, each labelled with the target's scope (where it goes), so that
    /// later calls on the instance can be held to that place.
    async fn scoped_launch_specs(
        &self,
        request: &LaunchRequest,
    ) -> Result<(Arc<dyn Target>, &ProfileConfig, Vec<LaunchSpec>)> {
        let (target, profile, mut specs) = self.launch_specs(request)?;
        if let Some(scope) = target.scope().await? {
            for spec in &mut specs {
                spec.labels.insert(crate::SCOPE_LABEL.into(), scope.clone());
            }
        }
        Ok((target, profile, specs))
    }

    /// What a launch would create, target by target (a pod manifest for Kubernetes, the launch spec
    /// for terminals); nothing is recorded or started.
    pub async fn plan_launch(&self, request: &LaunchRequest) -> Result<Vec<serde_json::Value>> {
        let (target, _, specs) = self.scoped_launch_specs(request).await?;
        let mut plans = Vec::with_capacity(specs.len());
        for spec in &specs {
            plans.push(target.plan(spec).await?);
        }
        Ok(plans)
    }

    /// Starts `request.count` instances of a profile in parallel, at most `terminal.max_concurrent` at a
    /// time, and records them.
    pub async fn launch_instances(&self, request: &LaunchRequest) -> Result<LaunchOutcome> {
        let (target, profile, planned) = self.scoped_launch_specs(request).await?;
        let mut specs = Vec::with_capacity(planned.len());
        for spec in planned {
            let mut instance = record_for(&spec, profile.waiting_rules(), InstanceState::Starting);
            instance.submit_delay_ms = profile.submit_delay_ms;
            instance.worktree = request.worktree.clone();
            if !self.store.insert_instance(&instance)? {
                return Err(Error::Invalid(format!(
                    "an instance `{}` already exists; close it first or choose another --name",
                    spec.id
                )));
            }
            // Everything a new instance shows is new: a wait for a pattern may match its first words.
            self.store.set_input_mark(&instance.id, "")?;
            specs.push((spec, instance));
        }

        let limit = Arc::new(tokio::sync::Semaphore::new(self.max_concurrent()));
        let mut tasks = tokio::task::JoinSet::new();
        let mut launching = HashMap::new();
        for (order, (spec, instance)) in specs.into_iter().enumerate() {
            let target = Arc::clone(&target);
            let limit = Arc::clone(&limit);
            let task = instance.clone();
            let handle = tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let launched = target.launch(&spec).await;
                (order, task, launched)
            });
            launching.insert(handle.id(), (order, instance));
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next_with_id().await {
            match joined {
                Ok((_, result)) => results.push(result),
                // A launch that panicked (or was cancelled) failed; it never vanishes from the outcome.
                Err(error) => {
                    if let Some((order, instance)) = launching.remove(&error.id()) {
                        let failure = Error::target(
                            &instance.target,
                            format!("the launch task ended abnormally: {error}"),
                        );
                        results.push((order, instance, Err(failure)));
                    }
                }
            }
        }
        results.sort_by_key(|(order, ..)| *order);

        let mut outcome = LaunchOutcome {
            instances: Vec::new(),
            errors: Vec::new(),
        };
        for (_, mut instance, launched) in results {
            match launched {
                Ok(observation) => {
                    self.set_state(&mut instance, InstanceState::Running, None, observation.pid)?;
                    let detail = serde_json::json!({
                        "profile": instance.profile, "target": instance.target, "cwd": instance.cwd,
                    });
                    self.store
                        .record_event(Some(&instance.id), "launched", detail)?;
                    outcome.instances.push(instance);
                }
                Err(error) => {
                    let message = format!("{}: {error}", instance.id);
                    self.set_state(&mut instance, InstanceState::Failed, None, None)?;
                    self.store.record_event(
                        Some(&instance.id),
                        "failed",
                        serde_json::json!({ "error": error.to_string() }),
                    )?;
                    outcome.errors.push(message);
                }
            }
        }
        Ok(outcome)
    }

    /// The command a profile runs (its program resolved on PATH, its arguments, then `extra`) and the
    /// environment it adds: for running a profile's program outside a session.
    pub fn profile_command(
        &self,
        profile: &str,
        extra: &[String],
    ) -> Result<(Vec<String>, BTreeMap<String, String>)> {
        let config = self.config.profile(profile)?;
        Ok((resolve_command(profile, config, extra)?, config.env.clone()))
    }

    fn choose_target(
        &self,
        request: &LaunchRequest,
        profile: &ProfileConfig,
    ) -> Result<TargetName> {
        if let Some(name) = &request.target {
            return Ok(name.clone());
        }
        if let Some(name) = profile.preferred_target()? {
            return Ok(name);
        }
        match self.config.config.terminal.default_target.as_str() {
            "auto" => {
                let tmux = self
                    .config
                    .config
                    .targets
                    .get("tmux")
                    .map_or_else(|| "tmux".into(), |(_, config)| config.tmux().program);
                let kind = if paths::find_program(&tmux).is_some() {
                    mahavishnu_core::TargetKind::Tmux
                } else {
                    mahavishnu_core::TargetKind::Pty
                };
                Ok(TargetName::builtin(kind))
            }
            other => other.parse().map_err(|_| {
                Error::Config(format!(
                    "terminal.default_target = \"{other}\" is not a target's name; use tmux, pty, auto or \
                     the name of a configured target"
                ))
            }),
        }
    }

    fn instance_names(
        &self,
        target: &dyn Target,
        request: &LaunchRequest,
    ) -> Result<Vec<InstanceId>> {
        let id = |name: &str| {
            let native = target.native_name(name);
            target.check_native(&native)?;
            InstanceId::new(target.name().clone(), native)
        };
        let names = instance_names(request.name.as_deref(), request.count, |name| {
            Ok(self.store.instance(&id(name)?)?.is_some())
        })?;
        names.iter().map(|name| id(name)).collect()
    }
}

/// The record of an instance about to be (or already) running from `spec`.
pub(crate) fn record_for(
    spec: &LaunchSpec,
    waiting: WaitingRules,
    state: InstanceState,
) -> Instance {
    let now = Timestamp::now();
    Instance {
        id: spec.id.clone(),
        profile: spec.profile.clone(),
        target: spec.id.target().clone(),
        state,
        exit_code: None,
        cwd: spec.cwd.clone(),
        project: paths::project_of(&spec.cwd),
        command: spec.command.clone(),
        pid: None,
        labels: spec.labels.clone(),
        waiting,
        submit_delay_ms: 0,
        question: None,
        created_at: now,
        updated_at: now,
        worktree: None,
        unknown: None,
    }
}

fn resolve_cwd(cwd: Option<&Path>) -> Result<PathBuf> {
    let cwd = match cwd {
        Some(cwd) => cwd.to_path_buf(),
        None => std::env::current_dir()
            .map_err(|e| Error::io("cannot read the current directory", e))?,
    };
    let resolved = std::fs::canonicalize(&cwd).map_err(|e| {
        Error::Invalid(format!(
            "--cwd {}: {e}; give an existing directory",
            cwd.display()
        ))
    })?;
    if !resolved.is_dir() {
        return Err(Error::Invalid(format!(
            "--cwd {} is not a directory",
            cwd.display()
        )));
    }
    Ok(resolved)
}

/// The command of a profile in a container: its program as named (it is looked up in the image, not
/// here), its arguments, then `extra`; a shell profile without a program runs `/bin/sh`.
fn container_command(name: &str, profile: &ProfileConfig, extra: &[String]) -> Result<Vec<String>> {
    let program = match &profile.program {
        Some(program) if !program.is_empty() => program.clone(),
        _ if profile.shell => "/bin/sh".into(),
        _ => {
            return Err(Error::Config(format!(
                "profile `{name}` has no program; set profiles.{name}.program in the config"
            )));
        }
    };
    let mut command = vec![program];
    command.extend(profile.args.iter().cloned());
    command.extend(extra.iter().cloned());
    Ok(command)
}

/// The full command of a profile: its program resolved to a path, its arguments, then `extra`.
fn resolve_command(name: &str, profile: &ProfileConfig, extra: &[String]) -> Result<Vec<String>> {
    let program = match &profile.program {
        Some(program) if !program.is_empty() => program.clone(),
        _ if profile.shell => std::env::var("SHELL")
            .ok()
            .filter(|shell| !shell.is_empty())
            .unwrap_or_else(|| "/bin/sh".into()),
        _ => {
            return Err(Error::Config(format!(
                "profile `{name}` has no program; set profiles.{name}.program in the config"
            )));
        }
    };
    let path = paths::find_program(&program).ok_or_else(|| {
        let install = profile
            .install_hint
            .as_ref()
            .map(|hint| format!("install it (`{hint}`), or "))
            .unwrap_or_default();
        Error::Invalid(format!(
            "program `{program}` of profile `{name}` is not on PATH; {install}set profiles.{name}.program in the config to its full path"
        ))
    })?;
    let mut command = vec![path.to_string_lossy().into_owned()];
    command.extend(profile.args.iter().cloned());
    command.extend(extra.iter().cloned());
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keys_are_checked() {
        use mahavishnu_core::model::check_env_name;
        assert!(check_env_name("PATH_2").is_ok());
        assert!(check_env_name("2X").is_err());
        assert!(check_env_name("A-B").is_err());
        assert!(check_env_name("A;B").is_err());
    }

    #[test]
    fn a_missing_program_names_the_install_command_and_the_config_key() {
        let profile = ProfileConfig {
            program: Some("no-such-program-xyz".into()),
            install_hint: Some("npm install -g no-such".into()),
            ..Default::default()
        };
        let error = resolve_command("thing", &profile, &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("npm install -g no-such"), "{error}");
        assert!(error.contains("profiles.thing.program"), "{error}");
    }
}
