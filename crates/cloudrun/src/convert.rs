//! Between the engine's model and Cloud Run's: a revision spec as a container and a template, a
//! revision's conditions as health, an API error in Cloud Run's own words.

use std::collections::HashMap;

use google_cloud_gax::error::rpc::StatusDetails;
use google_cloud_run_v2::model::{
    Condition, Container, ContainerPort, EnvVar, EnvVarSource, ExecutionTemplate, HTTPGetAction,
    IngressTraffic, Probe, ResourceRequirements, RevisionScaling, RevisionTemplate,
    SecretKeySelector, TaskTemplate, WorkerPoolRevisionTemplate, condition, env_var, probe,
};
use mahavishnu_core::deploy::{Health, Ingress, Placement, RevisionSpec, SecretRef};
use mahavishnu_core::{Error, Result};

use crate::names;

/// The port Cloud Run gives `$PORT`.
const CONTAINER_PORT: i32 = 8080;

/// The container of a revision: its image, environment (secrets as Secret Manager references, which
/// Cloud Run resolves), resources, port and startup probe.
pub fn container(spec: &RevisionSpec, project: &str) -> Result<Container> {
    let image = spec.image.clone().ok_or_else(|| {
        Error::Invalid(format!(
            "services.{}: Cloud Run runs containers; give it an `image`",
            spec.service
        ))
    })?;
    let mut container = Container::new();
    container.name = spec.service.clone();
    container.image = image;
    for (name, value) in &spec.env {
        let mut variable = EnvVar::new();
        variable.name = name.clone();
        variable.values = Some(env_var::Values::Value(value.clone()));
        container.env.push(variable);
    }
    for (name, reference) in &spec.secrets {
        let SecretRef::SecretManager {
            name: secret,
            version,
        } = reference
        else {
            return Err(Error::Invalid(format!(
                "services.{}.secrets.{name}: {reference} cannot be read on Cloud Run; use \
                 gcp:sm/NAME#VERSION (Secret Manager)",
                spec.service
            )));
        };
        let mut selector = SecretKeySelector::new();
        selector.secret = secret_path(project, secret);
        selector.version = version.clone();
        let mut source = EnvVarSource::new();
        source.secret_key_ref = Some(selector);
        let mut variable = EnvVar::new();
        variable.name = name.clone();
        variable.values = Some(env_var::Values::ValueSource(Box::new(source)));
        container.env.push(variable);
    }
    let mut limits = HashMap::new();
    if let Some(cpu) = &spec.resources.cpu {
        limits.insert("cpu".to_string(), cpu.clone());
    }
    if let Some(memory) = &spec.resources.memory {
        limits.insert("memory".to_string(), memory.clone());
    }
    if !limits.is_empty() {
        let mut resources = ResourceRequirements::new();
        resources.limits = limits;
        container.resources = Some(resources);
    }
    if spec.listens {
        let mut port = ContainerPort::new();
        port.container_port = CONTAINER_PORT;
        container.ports.push(port);
        if let Some(health) = &spec.health {
            let mut get = HTTPGetAction::new();
            get.path = health.path.clone();
            let mut startup = Probe::new();
            startup.probe_type = Some(probe::ProbeType::HttpGet(Box::new(get)));
            startup.period_seconds = health.interval.as_secs().clamp(1, 240) as i32;
            startup.failure_threshold =
                (health.deadline.as_secs() / health.interval.as_secs().max(1)).clamp(1, 100) as i32;
            container.startup_probe = Some(startup);
        }
    }
    Ok(container)
}

/// A Secret Manager secret's resource name: names given whole are kept.
pub fn secret_path(project: &str, secret: &str) -> String {
    if secret.starts_with("projects/") {
        secret.to_string()
    } else {
        format!("projects/{project}/secrets/{secret}")
    }
}

fn annotations(spec: &RevisionSpec, revision: &str) -> HashMap<String, String> {
    HashMap::from([
        (
            names::SPEC_ANNOTATION.to_string(),
            serde_json::to_string(spec).unwrap_or_default(),
        ),
        (names::REVISION_ANNOTATION.to_string(), revision.to_string()),
    ])
}

/// The template of a service's revision named after the engine's `revision`.
pub fn revision_template(
    at: &Placement,
    revision: &str,
    spec: &RevisionSpec,
    project: &str,
    service_account: Option<&str>,
) -> Result<RevisionTemplate> {
    let mut template = RevisionTemplate::new();
    template.revision = names::cloud_revision(at, revision);
    template.labels = names::labels(at, spec).into_iter().collect();
    template.annotations = annotations(spec, revision);
    let mut scaling = RevisionScaling::new();
    scaling.min_instance_count = spec.scale.min as i32;
    scaling.max_instance_count = spec.scale.max.map_or(0, |max| max as i32);
    template.scaling = Some(scaling);
    template.max_instance_request_concurrency = spec.scale.concurrency.map_or(0, |c| c as i32);
    template.service_account = service_account.unwrap_or_default().to_string();
    template.containers = vec![container(spec, project)?];
    Ok(template)
}

/// The template of a worker pool's revision.
pub fn worker_template(
    at: &Placement,
    revision: &str,
    spec: &RevisionSpec,
    project: &str,
    service_account: Option<&str>,
) -> Result<WorkerPoolRevisionTemplate> {
    let mut template = WorkerPoolRevisionTemplate::new();
    template.revision = names::cloud_revision(at, revision);
    template.labels = names::labels(at, spec).into_iter().collect();
    template.annotations = annotations(spec, revision);
    template.service_account = service_account.unwrap_or_default().to_string();
    template.containers = vec![container(spec, project)?];
    Ok(template)
}

/// The template of a job's executions: one task, retried never, bounded by the job's timeout.
pub fn execution_template(
    at: &Placement,
    revision: &str,
    spec: &RevisionSpec,
    project: &str,
    service_account: Option<&str>,
) -> Result<ExecutionTemplate> {
    let mut task = TaskTemplate::new();
    task.containers = vec![container(spec, project)?];
    task.service_account = service_account.unwrap_or_default().to_string();
    // A job that fails says so at once: Cloud Run retries three times unless told otherwise.
    task.retries = Some(google_cloud_run_v2::model::task_template::Retries::MaxRetries(0));
    if let Some(timeout) = spec.timeout {
        task.timeout = google_cloud_wkt::Duration::try_from(timeout).ok();
    }
    let mut template = ExecutionTemplate::new();
    template.labels = names::labels(at, spec).into_iter().collect();
    template.annotations = annotations(spec, revision);
    template.task_count = 1;
    template.template = Some(task);
    Ok(template)
}

/// Cloud Run's ingress for the manifest's.
pub fn ingress(ingress: Ingress) -> IngressTraffic {
    match ingress {
        Ingress::All => IngressTraffic::All,
        Ingress::Internal => IngressTraffic::InternalOnly,
        Ingress::InternalAndCloudLoadBalancing => IngressTraffic::InternalLoadBalancer,
    }
}

/// The condition of `kind` (`Ready`, `Completed`) among `conditions`.
pub fn condition<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|condition| condition.r#type == kind)
}

/// A condition's reason, in Cloud Run's words (`HEALTH_CHECK_CONTAINER_ERROR`).
pub fn reason(condition: &Condition) -> Option<String> {
    let name = match condition.reasons.as_ref()? {
        condition::Reasons::Reason(reason) => reason.name(),
        condition::Reasons::RevisionReason(reason) => reason.name(),
        condition::Reasons::ExecutionReason(reason) => reason.name(),
        _ => None,
    };
    name.filter(|name| !name.ends_with("UNDEFINED") && !name.ends_with("UNSPECIFIED"))
        .map(str::to_string)
}

/// A condition's message, with its reason when it has one.
pub fn describe(condition: &Condition) -> String {
    let message = condition.message.trim();
    match reason(condition) {
        Some(reason) if message.is_empty() => reason,
        Some(reason) => format!("{message} ({reason})"),
        None if message.is_empty() => format!("{} is {:?}", condition.r#type, condition.state),
        None => message.to_string(),
    }
}

/// A revision's health from its `Ready` condition.
pub fn revision_health(conditions: &[Condition]) -> Health {
    match condition(conditions, "Ready") {
        Some(ready) => match ready.state {
            condition::State::ConditionSucceeded => Health::Healthy,
            condition::State::ConditionFailed => Health::Failed(describe(ready)),
            _ => Health::Starting,
        },
        None => Health::Starting,
    }
}

/// An API error in Cloud Run's own words: the status and message, and the permission a denial names.
pub fn api_error(what: &str, error: google_cloud_gax::error::Error) -> Error {
    if let Some(status) = error.status() {
        let permission = status.details.iter().find_map(|detail| match detail {
            StatusDetails::ErrorInfo(info) => info.metadata.get("permission").cloned(),
            _ => None,
        });
        let mut text = format!("{what}: {} ({:?})", status.message, status.code);
        if let Some(permission) = permission {
            text.push_str(&format!(
                "; the caller lacks the permission `{permission}`: grant a role that has it"
            ));
        }
        return Error::Failed(text);
    }
    if error.is_authentication() {
        return Error::Failed(format!(
            "{what}: no usable Google Cloud credentials ({error}); run `gcloud auth \
             application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS"
        ));
    }
    Error::Failed(format!("{what}: {error}"))
}

/// Whether an API error says that the resource does not exist.
pub fn is_not_found(error: &google_cloud_gax::error::Error) -> bool {
    error
        .status()
        .is_some_and(|status| status.code == google_cloud_gax::error::rpc::Code::NotFound)
        || error.http_status_code() == Some(404)
}
