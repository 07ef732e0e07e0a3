//! [`CloudRunTarget`]: instances on Cloud Run. Each instance is a Cloud Run job of its own, run once:
//! the profile's program headless, without a terminal. `exec` runs the job again with the command
//! overridden and returns its exit code and output; `logs` reads Cloud Logging; `stop` cancels the
//! execution and deletes the job.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use google_cloud_longrunning::model::operation;
use google_cloud_run_v2::model::{
    Container, EnvVar, ExecutionTemplate, Job, TaskTemplate, env_var, run_job_request,
    task_template,
};
use mahavishnu_core::{
    Capabilities, Error, ExecOutput, ExecRequest, LaunchSpec, Observation, ObservedStatus,
    Preflight, Result, Target, TargetKind, TargetName,
};

use crate::names;
use crate::platform::{CloudRunPlatform, latest_execution};
use crate::settings::CloudRunSettings;

/// Marks a job as one instance, by its native id.
const INSTANCE_LABEL: &str = "mahavishnu-instance";

/// The container runs `sh -c 'exec "$0" "$@"' PROGRAM ARGS...`: Cloud Run can override a job's
/// arguments but not its command, and this way an override of the arguments is a whole new command.
const ENTRYPOINT: [&str; 3] = ["/bin/sh", "-c", "exec \"$0\" \"$@\""];

/// What a project's permissions must include for deployments, checked by the preflight.
const PERMISSIONS: &[&str] = &[
    "run.services.create",
    "run.services.update",
    "run.services.setIamPolicy",
    "run.jobs.create",
    "run.jobs.run",
    "iam.serviceAccounts.actAs",
    "pubsub.topics.create",
    "pubsub.subscriptions.create",
    "secretmanager.versions.get",
    "logging.logEntries.list",
];

/// A Google Cloud project on Cloud Run, for instances.
pub struct CloudRunTarget {
    name: TargetName,
    platform: CloudRunPlatform,
}

impl CloudRunTarget {
    /// The target `name` with these settings; nothing is called until it is used.
    pub fn new(name: TargetName, settings: CloudRunSettings) -> Self {
        CloudRunTarget {
            name,
            platform: CloudRunPlatform::new(settings),
        }
    }

    fn settings(&self) -> &CloudRunSettings {
        self.platform.settings()
    }

    fn parent(&self) -> String {
        format!(
            "projects/{}/locations/{}",
            self.settings().project,
            self.settings().region
        )
    }

    /// The job of the instance `native`: Cloud Run names are lowercase letters, digits and hyphens.
    fn job_name(&self, native: &str) -> String {
        format!("{}/jobs/{}", self.parent(), job_id(native))
    }

    /// How the execution `name` is doing: running, or ended with its task's exit code.
    async fn execution_status(&self, name: &str) -> Result<ObservedStatus> {
        let clients = self.platform.clients().await?;
        let execution = self
            .platform
            .call(
                &format!("reading the execution {name}"),
                clients.executions.get_execution().set_name(name).send(),
            )
            .await?;
        if execution.completion_time.is_none() {
            return Ok(ObservedStatus::Running);
        }
        let tasks = self
            .platform
            .call(
                &format!("reading the tasks of {name}"),
                clients.tasks.list_tasks().set_parent(name).send(),
            )
            .await?;
        let code = tasks
            .tasks
            .iter()
            .filter_map(|task| task.last_attempt_result.as_ref())
            .map(|result| result.exit_code)
            .find(|code| *code != 0)
            .unwrap_or(if execution.failed_count > 0 { 1 } else { 0 });
        Ok(ObservedStatus::Exited(code))
    }

    async fn observe_job(&self, job: &Job) -> Result<Option<Observation>> {
        let Some(native) = job.labels.get(INSTANCE_LABEL) else {
            return Ok(None);
        };
        let status = match latest_execution(job) {
            Some(execution) => self.execution_status(&execution).await?,
            None => ObservedStatus::Running,
        };
        Ok(Some(Observation {
            native: native.clone(),
            status,
            idle_ms: None,
            foreground_job: None,
            pid: None,
        }))
    }

    /// The output of one execution: stdout and stderr, from Cloud Logging.
    async fn execution_output(&self, job: &str, execution: &str) -> Result<(String, String)> {
        let clients = self.platform.clients().await?;
        let short = execution.rsplit('/').next().unwrap_or(execution);
        let filter = format!(
            "resource.type=\"cloud_run_job\" AND resource.labels.job_name=\"{}\" AND \
             labels.\"run.googleapis.com/execution_name\"=\"{short}\"",
            job.rsplit('/').next().unwrap_or(job)
        );
        let page = self
            .platform
            .call(
                &format!("reading the output of {short}"),
                clients
                    .logging
                    .list_log_entries()
                    .set_resource_names([format!("projects/{}", self.settings().project)])
                    .set_filter(filter)
                    .set_order_by("timestamp asc")
                    .set_page_size(1000)
                    .send(),
            )
            .await?;
        let (mut stdout, mut stderr) = (String::new(), String::new());
        for entry in &page.entries {
            let Some(text) = entry.text_payload() else {
                continue;
            };
            let out = if entry.log_name.ends_with("%2Fstderr") {
                &mut stderr
            } else {
                &mut stdout
            };
            out.push_str(text);
            out.push('\n');
        }
        Ok((stdout, stderr))
    }

    /// Whether the caller has usable credentials: Application Default Credentials found, or none
    /// needed (an emulator).
    fn credentials(&self) -> std::result::Result<String, String> {
        if self.settings().anonymous {
            return Ok("no credentials (anonymous, for an emulator)".into());
        }
        google_cloud_auth::credentials::Builder::default()
            .build()
            .map(|_| "Application Default Credentials".to_string())
            .map_err(|e| {
                format!(
                    "no Application Default Credentials ({e}); run `gcloud auth application-default \
                     login`, or set GOOGLE_APPLICATION_CREDENTIALS"
                )
            })
    }

    async fn check(&self) -> std::result::Result<String, String> {
        let credentials = self.credentials()?;
        let settings = self.settings();
        let number = self.platform.project_number().await.map_err(|e| {
            format!(
                "the project {} cannot be read ({e}); check its id and that the Resource Manager \
                 API is enabled",
                settings.project
            )
        })?;
        let clients = self.platform.clients().await.map_err(|e| e.to_string())?;
        self.platform
            .call(
                "the Cloud Run Admin API",
                clients
                    .services
                    .list_services()
                    .set_parent(self.parent())
                    .send(),
            )
            .await
            .map_err(|e| {
                format!("{e}; enable it with `gcloud services enable run.googleapis.com`")
            })?;
        let granted = self
            .platform
            .call(
                "checking permissions",
                clients
                    .projects
                    .test_iam_permissions()
                    .set_resource(format!("projects/{}", settings.project))
                    .set_permissions(PERMISSIONS.iter().map(|p| p.to_string()))
                    .send(),
            )
            .await
            .map_err(|e| e.to_string())?
            .permissions;
        let missing: Vec<&str> = PERMISSIONS
            .iter()
            .copied()
            .filter(|wanted| !granted.iter().any(|have| have == wanted))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the caller lacks {} in project {}: grant a role that has them (roles/run.admin, \
                 roles/iam.serviceAccountUser, roles/pubsub.editor, \
                 roles/secretmanager.secretAccessor, roles/logging.viewer)",
                missing.join(", "),
                settings.project
            ));
        }
        Ok(format!(
            "project {} ({number}), {}; {credentials}; the Cloud Run Admin API answers; \
             every permission deployments need is granted",
            settings.project, settings.region
        ))
    }
}

/// A Cloud Run job id for an instance's native id: lowercase letters, digits and hyphens.
fn job_id(native: &str) -> String {
    let id: String = native
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if id.starts_with(|c: char| c.is_ascii_lowercase()) {
        id
    } else {
        format!("mv-{id}")
    }
}

fn environment(env: &std::collections::BTreeMap<String, String>) -> Vec<EnvVar> {
    env.iter()
        .map(|(name, value)| {
            let mut variable = EnvVar::new();
            variable.name = name.clone();
            variable.values = Some(env_var::Values::Value(value.clone()));
            variable
        })
        .collect()
}

#[async_trait]
impl Target for CloudRunTarget {
    fn name(&self) -> &TargetName {
        &self.name
    }

    fn kind(&self) -> TargetKind {
        TargetKind::Cloudrun
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            screen: false,
            send: false,
            exec: true,
            logs: true,
            recover: false,
            attach: false,
            persistent: true,
            host_processes: false,
        }
    }

    fn location(&self) -> String {
        format!(
            "{} in {}",
            self.settings().location(),
            self.settings().region
        )
    }

    async fn preflight(&self) -> Preflight {
        let (ready, detail) = match self.check().await {
            Ok(detail) => (true, detail),
            Err(detail) => (false, detail),
        };
        Preflight {
            target: self.name.clone(),
            ready,
            detail,
        }
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Observation> {
        let native = spec.id.native().to_string();
        let image = spec
            .container
            .image
            .clone()
            .or_else(|| self.settings().image.clone())
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the profile `{}` names no image and the target `{}` has none: set `image` in \
                     the profile or in [targets.{}]",
                    spec.profile, self.name, self.name
                ))
            })?;
        let mut container = Container::new();
        container.name = "instance".into();
        container.image = image;
        container.command = ENTRYPOINT.iter().map(|s| s.to_string()).collect();
        container.args = spec.command.clone();
        container.env = environment(&spec.env);
        let mut task = TaskTemplate::new();
        task.containers = vec![container];
        task.retries = Some(task_template::Retries::MaxRetries(0));
        task.service_account = self.settings().service_account.clone().unwrap_or_default();
        let mut template = ExecutionTemplate::new();
        template.task_count = 1;
        template.template = Some(task);
        let mut job = Job::new();
        job.labels = [
            (
                names::MANAGED_BY.0.to_string(),
                names::MANAGED_BY.1.to_string(),
            ),
            (INSTANCE_LABEL.to_string(), native.clone()),
            (
                "mahavishnu-profile".to_string(),
                names::label_value(&spec.profile),
            ),
        ]
        .into_iter()
        .collect();
        job.template = Some(template);
        let clients = self.platform.clients().await?;
        let what = format!("creating the job of {}", spec.id);
        let created = self
            .platform
            .call(
                &what,
                clients
                    .jobs
                    .create_job()
                    .set_parent(self.parent())
                    .set_job_id(job_id(&native))
                    .set_job(job)
                    .send(),
            )
            .await?;
        self.platform
            .finish(&what, created, self.settings().request_timeout * 4)
            .await?;
        self.platform
            .call(
                &format!("running the job of {}", spec.id),
                clients
                    .jobs
                    .run_job()
                    .set_name(self.job_name(&native))
                    .send(),
            )
            .await?;
        Ok(Observation {
            native,
            status: ObservedStatus::Running,
            idle_ms: None,
            foreground_job: None,
            pid: None,
        })
    }

    async fn inspect(&self, native: &str) -> Result<Option<Observation>> {
        match self.platform.get_job(&self.job_name(native)).await? {
            Some(job) => self.observe_job(&job).await,
            None => Ok(None),
        }
    }

    async fn list(&self) -> Result<Vec<Observation>> {
        let clients = self.platform.clients().await?;
        let jobs = self
            .platform
            .call(
                "listing the jobs",
                clients.jobs.list_jobs().set_parent(self.parent()).send(),
            )
            .await?
            .jobs;
        let mut found = Vec::new();
        for job in jobs.iter().filter(|job| {
            job.labels.get(names::MANAGED_BY.0).map(String::as_str) == Some(names::MANAGED_BY.1)
        }) {
            found.extend(self.observe_job(job).await?);
        }
        Ok(found)
    }

    async fn exec(&self, native: &str, request: &ExecRequest) -> Result<ExecOutput> {
        let started = Instant::now();
        let clients = self.platform.clients().await?;
        let job = self.job_name(native);
        let mut container = run_job_request::overrides::ContainerOverride::new();
        container.args = request.command.clone();
        let mut overrides = run_job_request::Overrides::new();
        overrides.container_overrides = vec![container];
        overrides.task_count = 1;
        overrides.timeout = google_cloud_wkt::Duration::try_from(request.timeout).ok();
        let run = self
            .platform
            .call(
                &format!("running a command in {native}"),
                clients
                    .jobs
                    .run_job()
                    .set_name(&job)
                    .set_overrides(overrides)
                    .send(),
            )
            .await?;
        let deadline = request.timeout + self.settings().request_timeout;
        let mut operation = run;
        while !operation.done {
            if started.elapsed() > deadline {
                // What ran too long is stopped, not left to run on.
                if let Some(execution) = operation
                    .metadata
                    .as_ref()
                    .and_then(|any| any.to_msg::<google_cloud_run_v2::model::Execution>().ok())
                    .filter(|execution| !execution.name.is_empty())
                {
                    let _ = self
                        .platform
                        .call_found(
                            &format!("cancelling {}", execution.name),
                            clients
                                .executions
                                .cancel_execution()
                                .set_name(&execution.name)
                                .send(),
                        )
                        .await;
                }
                return Ok(ExecOutput {
                    exit_code: None,
                    stdout: String::new(),
                    stderr: String::new(),
                    duration_ms: started.elapsed().as_millis() as u64,
                    timed_out: true,
                });
            }
            operation = self
                .platform
                .wait_operation(&operation.name, deadline.saturating_sub(started.elapsed()))
                .await?;
        }
        let execution = match &operation.result {
            Some(operation::Result::Response(any)) => any
                .to_msg::<google_cloud_run_v2::model::Execution>()
                .map_err(|e| Error::Failed(format!("the execution came back unreadable: {e}")))?,
            Some(operation::Result::Error(status)) if status.message.is_empty() => {
                return Err(Error::Failed(format!("the command in {native} failed")));
            }
            Some(operation::Result::Error(status)) => {
                return Err(Error::Failed(format!(
                    "the command in {native}: {}",
                    status.message
                )));
            }
            _ => return Err(Error::Failed("the execution has no result".into())),
        };
        let code = match self.execution_status(&execution.name).await? {
            ObservedStatus::Exited(code) => Some(code),
            ObservedStatus::Running => None,
        };
        let (stdout, stderr) = self.execution_output(&job, &execution.name).await?;
        Ok(ExecOutput {
            exit_code: code,
            stdout,
            stderr,
            duration_ms: started.elapsed().as_millis() as u64,
            timed_out: false,
        })
    }

    async fn logs(&self, native: &str) -> Result<String> {
        let Some(job) = self.platform.get_job(&self.job_name(native)).await? else {
            return Err(Error::UnknownInstance {
                id: format!("{}:{native}", self.name.id_prefix()),
            });
        };
        match latest_execution(&job) {
            Some(execution) => {
                let (stdout, stderr) = self.execution_output(&job.name, &execution).await?;
                Ok(format!("{stdout}{stderr}"))
            }
            None => Ok(String::new()),
        }
    }

    async fn stop(&self, native: &str, grace: Duration) -> Result<()> {
        let _ = grace; // Cloud Run gives a cancelled task its own grace period.
        let clients = self.platform.clients().await?;
        let name = self.job_name(native);
        let Some(job) = self.platform.get_job(&name).await? else {
            return Ok(());
        };
        if let Some(execution) = latest_execution(&job)
            && self.execution_status(&execution).await? == ObservedStatus::Running
        {
            let _ = self
                .platform
                .call_found(
                    &format!("cancelling {execution}"),
                    clients
                        .executions
                        .cancel_execution()
                        .set_name(&execution)
                        .send(),
                )
                .await?;
        }
        let what = format!("deleting the job of {native}");
        if let Some(operation) = self
            .platform
            .call_found(&what, clients.jobs.delete_job().set_name(&name).send())
            .await?
        {
            self.platform
                .finish(&what, operation, self.settings().request_timeout * 4)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_what_cloud_run_takes() {
        assert_eq!(job_id("mv-7f3a"), "mv-7f3a");
        assert_eq!(job_id("Fleet_1"), "fleet-1");
        assert_eq!(job_id("7f3a"), "mv-7f3a");
    }
}
