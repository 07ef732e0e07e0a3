//! Pods as Mahavishnu writes and reads them: the manifest of a launch (the pod, and the Secret holding
//! its environment values), and what a pod's status says.

use std::collections::BTreeMap;

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use mahavishnu_core::config::KubernetesConfig;
use mahavishnu_core::{Error, LaunchSpec, Observation, ObservedStatus, Result, TargetName};
use serde_json::{Value, json};

/// The label every pod of Mahavishnu carries (`=mahavishnu`).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The annotation holding the launch spec, for recovery.
pub const SPEC_ANNOTATION: &str = "mahavishnu.dev/spec";
/// What a dry run shows in place of an environment value.
pub const REDACTED: &str = "<redacted>";
const PROFILE_LABEL: &str = "mahavishnu.dev/profile";
const PROJECT_LABEL: &str = "mahavishnu.dev/project";

/// A label value Kubernetes accepts: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// A short stable name for a project directory (label values cannot hold paths).
fn project_label(spec: &LaunchSpec) -> String {
    let path = spec.cwd.to_string_lossy();
    let hash = mahavishnu_core::status::stable_hash(path.as_bytes());
    let base = spec
        .cwd
        .file_name()
        .map(|name| label_value(&name.to_string_lossy()))
        .unwrap_or_default();
    label_value(&format!(
        "{}-{:08x}",
        base.chars().take(40).collect::<String>(),
        hash as u32
    ))
}

fn check_pod_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "`{name}` cannot name a pod: use lowercase letters, digits and `-` (at most 63), starting and ending with a letter or digit"
        )))
    }
}

/// The pod of a launch: one container `main` running the profile's command in its image.
pub fn pod_manifest(spec: &LaunchSpec, settings: &KubernetesConfig) -> Result<Pod> {
    let (namespace, name) = split_native(spec)?;
    check_pod_name(name)?;
    for key in spec.env.keys() {
        check_secret_key(key)?;
    }
    let image = spec
        .container
        .image
        .clone()
        .or_else(|| settings.image.clone())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "no image for profile `{}` on target `{}`; pass --image, set profiles.{}.image, or set \
                 targets.{}.image",
                spec.profile,
                spec.id.target(),
                spec.profile,
                spec.id.target()
            ))
        })?;
    let mut labels: BTreeMap<String, String> = spec
        .labels
        .iter()
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| {
            (
                format!("mahavishnu.dev/{}", label_value(key)),
                label_value(value),
            )
        })
        .collect();
    labels.insert(MANAGED_BY.into(), "mahavishnu".into());
    labels.insert(PROFILE_LABEL.into(), label_value(&spec.profile));
    labels.insert(PROJECT_LABEL.into(), project_label(spec));
    // The values live in the pod's Secret (same name): anyone who may read pods must not read them.
    let env: Vec<Value> = spec
        .env
        .keys()
        .map(|key| {
            json!({
                "name": key,
                "valueFrom": { "secretKeyRef": { "name": name, "key": key, "optional": false } },
            })
        })
        .chain([
            json!({ "name": "TERM", "value": "xterm-256color" }),
            json!({ "name": "MAHAVISHNU_INSTANCE_ID", "value": spec.id.to_string() }),
        ])
        .collect();
    let resources = &spec.container.resources;
    let quantities = |cpu: &Option<String>,
                      memory: &Option<String>|
     -> serde_json::Map<String, Value> {
        [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(key, value)| value.as_ref().map(|value| (key.to_string(), json!(value))))
            .collect()
    };
    let requests = quantities(&resources.cpu, &resources.memory);
    let limits = quantities(&resources.cpu_limit, &resources.memory_limit);
    let interactive = spec.container.interactive;
    let mut container = json!({
        "name": "main",
        "image": image,
        "command": spec.command,
        "env": env,
        "tty": interactive,
        "stdin": interactive,
        "stdinOnce": false,
        "resources": { "requests": requests, "limits": limits },
    });
    if let Some(dir) = &spec.container.working_dir {
        container["workingDir"] = json!(dir);
    }
    let stored = serde_json::to_string(&without_env_values(spec))
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "containers": [container],
    });
    if !settings.image_pull_secrets.is_empty() {
        pod_spec["imagePullSecrets"] = settings
            .image_pull_secrets
            .iter()
            .map(|name| json!({ "name": name }))
            .collect();
    }
    if let Some(account) = &settings.service_account {
        pod_spec["serviceAccountName"] = json!(account);
    }
    if !settings.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(settings.node_selector);
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                SPEC_ANNOTATION: stored,
                "mahavishnu.dev/project-dir": spec.cwd,
            },
        },
        "spec": pod_spec,
    });
    serde_json::from_value(pod).map_err(|e| Error::Invalid(format!("cannot build the pod: {e}")))
}

/// `spec` with its environment names kept and their values emptied: what a pod may show.
fn without_env_values(spec: &LaunchSpec) -> LaunchSpec {
    LaunchSpec {
        env: spec
            .env
            .keys()
            .map(|key| (key.clone(), String::new()))
            .collect(),
        ..spec.clone()
    }
}

/// A Secret data key (`[-._a-zA-Z0-9]+`), which every environment name of a launch must be.
fn check_secret_key(key: &str) -> Result<()> {
    let valid = !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "`{}` cannot be an environment variable on kubernetes (its value goes into a Secret); use letters, digits and `_`",
            key.escape_default()
        )))
    }
}

/// Whether a Secret manifest carries the real values or shows them redacted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// The values themselves, base64 in `data`: what is sent to the cluster.
    Real,
    /// `<redacted>` in `stringData`: what a dry run prints.
    Redacted,
}

/// The Secret holding a launch's environment values, named after its pod; `None` when it has no env.
pub fn env_secret(spec: &LaunchSpec, values: Values) -> Result<Option<Secret>> {
    if spec.env.is_empty() {
        return Ok(None);
    }
    let (namespace, name) = split_native(spec)?;
    for key in spec.env.keys() {
        check_secret_key(key)?;
    }
    let mut secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { MANAGED_BY: "mahavishnu" },
        },
    });
    match values {
        // Through the typed object, so that `data` is base64 exactly as the API expects.
        Values::Real => {}
        Values::Redacted => {
            secret["stringData"] = spec
                .env
                .keys()
                .map(|key| (key.clone(), json!(REDACTED)))
                .collect();
        }
    }
    let mut secret: Secret = serde_json::from_value(secret)
        .map_err(|e| Error::Invalid(format!("cannot build the Secret: {e}")))?;
    if values == Values::Real {
        secret.data = Some(
            spec.env
                .iter()
                .map(|(key, value)| {
                    (
                        key.clone(),
                        k8s_openapi::ByteString(value.clone().into_bytes()),
                    )
                })
                .collect(),
        );
    }
    Ok(Some(secret))
}

fn split_native(spec: &LaunchSpec) -> Result<(&str, &str)> {
    spec.id
        .native()
        .split_once('/')
        .ok_or_else(|| Error::Invalid(format!("`{}` is not NAMESPACE/POD", spec.id.native())))
}

/// The launch spec stored on a pod, as written (for its terminal size).
pub fn spec_of(pod: &Pod) -> Option<LaunchSpec> {
    let text = pod.metadata.annotations.as_ref()?.get(SPEC_ANNOTATION)?;
    serde_json::from_str(text).ok()
}

/// The spec of a pod the target called `target` may adopt again: one carrying the managed-by label
/// whose stored spec names an instance of this target that is exactly this pod. Anyone who may create
/// pods can label one and plant any annotation, so a record claiming another target (`tmux:`, `pty:`,
/// another cluster's name) or another pod is refused.
/// Environment values come back empty: they are in the pod's Secret, and recovery records the instance
/// without its environment, so reading the Secret would only bring secret values into memory for
/// nothing (and need the right to read Secrets).
pub fn adoptable_spec(pod: &Pod, target: &TargetName) -> Option<LaunchSpec> {
    let labels = pod.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY).map(String::as_str) != Some("mahavishnu") {
        return None;
    }
    let namespace = pod.metadata.namespace.as_deref()?;
    let name = pod.metadata.name.as_deref()?;
    let spec = spec_of(pod)?;
    let own =
        spec.id.target() == target && spec.id.native().split_once('/') == Some((namespace, name));
    own.then(|| without_env_values(&spec))
}

fn native_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// How far a pod got towards running.
pub enum Startup {
    /// It runs.
    Running(Observation),
    /// It already ended.
    Ended(Observation),
    /// It will not run; the cluster's reason.
    Failed(String),
    /// Not yet; what it is waiting for.
    Pending(String),
}

/// Waiting reasons after which a pod will not start by itself.
const HOPELESS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Reads a pod's status during a launch.
pub fn startup(pod: &Pod) -> Startup {
    let observation = observe(pod);
    let status = pod.status.as_ref();
    if let Some(condition) = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|conditions| {
            conditions.iter().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        })
    {
        return Startup::Failed(format!(
            "Unschedulable: {}",
            condition.message.as_deref().unwrap_or("no node fits")
        ));
    }
    let container = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.first());
    if let Some(waiting) = container
        .and_then(|c| c.state.as_ref())
        .and_then(|state| state.waiting.as_ref())
    {
        let reason = waiting.reason.clone().unwrap_or_default();
        let text = match &waiting.message {
            Some(message) => format!("{reason}: {message}"),
            None => reason.clone(),
        };
        return if HOPELESS.contains(&reason.as_str()) {
            Startup::Failed(text)
        } else {
            Startup::Pending(text)
        };
    }
    match observation.status {
        ObservedStatus::Exited(_) => Startup::Ended(observation),
        ObservedStatus::Running
            if container.is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())) =>
        {
            Startup::Running(observation)
        }
        ObservedStatus::Running => Startup::Pending(format!(
            "phase {}",
            status
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into())
        )),
    }
}

/// What a pod says about its program.
pub fn observe(pod: &Pod) -> Observation {
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|state| state.terminated.as_ref());
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let status = match (terminated, phase) {
        (Some(terminated), _) => ObservedStatus::Exited(terminated.exit_code),
        (None, "Succeeded") => ObservedStatus::Exited(0),
        (None, "Failed") => ObservedStatus::Exited(1),
        _ => ObservedStatus::Running,
    };
    Observation {
        native: native_of(pod),
        status,
        idle_ms: None,
        foreground_job: None,
        pid: None,
    }
}

/// "May I create pods in this namespace?"
pub fn access_review(namespace: &str) -> SelfSubjectAccessReview {
    serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": { "resourceAttributes": { "namespace": namespace, "verb": "create", "resource": "pods" } },
    }))
    .expect("a fixed, valid review")
}

/// The exit code in an exec's final status: 0 on success, the `ExitCode` cause otherwise.
pub fn exit_code_of(status: Option<&Status>) -> i32 {
    let Some(status) = status else {
        return 0;
    };
    if status.status.as_deref() == Some("Success") {
        return 0;
    }
    status
        .details
        .as_ref()
        .and_then(|details| details.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|cause| cause.message.as_deref())
        .and_then(|code| code.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mahavishnu_core::{InstanceId, TargetKind, TargetName};

    fn kubernetes() -> TargetName {
        TargetName::builtin(TargetKind::Kubernetes)
    }

    fn spec(native: &str) -> LaunchSpec {
        LaunchSpec {
            id: InstanceId::new(kubernetes(), native).unwrap(),
            profile: "qwen-local".into(),
            command: vec!["qwen".into(), "--yolo".into()],
            cwd: "/home/me/src/My App".into(),
            env: BTreeMap::from([("A".to_string(), "1".to_string())]),
            rows: 40,
            cols: 120,
            labels: BTreeMap::from([("team".to_string(), "blocks & more".to_string())]),
            container: Default::default(),
        }
    }

    #[test]
    fn manifests_carry_labels_the_spec_and_the_image() {
        let settings = KubernetesConfig {
            image: Some("busybox:1.36".into()),
            image_pull_secrets: vec!["regcred".into()],
            ..Default::default()
        };
        let pod = pod_manifest(&spec("dev/mv-1a2b3c"), &settings).unwrap();
        let value = serde_json::to_value(&pod).unwrap();
        assert_eq!(value["metadata"]["namespace"], "dev");
        assert_eq!(value["metadata"]["labels"][MANAGED_BY], "mahavishnu");
        assert_eq!(
            value["metadata"]["labels"]["mahavishnu.dev/team"],
            "blocks---more"
        );
        assert!(
            value["metadata"]["labels"][PROJECT_LABEL]
                .as_str()
                .unwrap()
                .starts_with("My-App-")
        );
        assert_eq!(value["spec"]["containers"][0]["image"], "busybox:1.36");
        assert_eq!(value["spec"]["containers"][0]["tty"], true);
        assert_eq!(value["spec"]["imagePullSecrets"][0]["name"], "regcred");
        let mut stored = spec("dev/mv-1a2b3c");
        stored.env.insert("A".into(), String::new());
        assert_eq!(
            spec_of(&pod).unwrap(),
            stored,
            "the spec keeps env names only"
        );
    }

    fn with_secret_env(native: &str) -> LaunchSpec {
        let mut spec = spec(native);
        spec.env = BTreeMap::from([
            ("API_TOKEN".to_string(), "tok-7c1d-very-secret".to_string()),
            ("DEBUG".to_string(), "1".to_string()),
        ]);
        spec
    }

    #[test]
    fn env_values_go_to_the_secret_and_never_into_the_pod() {
        let settings = KubernetesConfig {
            image: Some("busybox:1.36".into()),
            ..Default::default()
        };
        let launch = with_secret_env("dev/mv-1a2b3c");
        let pod = serde_json::to_string(&pod_manifest(&launch, &settings).unwrap()).unwrap();
        assert!(!pod.contains("tok-7c1d-very-secret"), "{pod}");
        let pod: Value = serde_json::from_str(&pod).unwrap();
        let env = &pod["spec"]["containers"][0]["env"];
        assert_eq!(
            env[0],
            json!({ "name": "API_TOKEN", "valueFrom": { "secretKeyRef": {
                "name": "mv-1a2b3c", "key": "API_TOKEN", "optional": false } } })
        );
        assert_eq!(env[1]["name"], "DEBUG");
        assert!(env[1].get("value").is_none(), "{env}");

        let secret = env_secret(&launch, Values::Real).unwrap().unwrap();
        let secret = serde_json::to_value(&secret).unwrap();
        assert_eq!(secret["kind"], "Secret");
        assert_eq!(secret["type"], "Opaque");
        assert_eq!(secret["metadata"]["name"], "mv-1a2b3c");
        assert_eq!(secret["metadata"]["namespace"], "dev");
        assert_eq!(secret["metadata"]["labels"][MANAGED_BY], "mahavishnu");
        // base64 of the value, as the API expects `data`.
        assert_eq!(secret["data"]["API_TOKEN"], "dG9rLTdjMWQtdmVyeS1zZWNyZXQ=");
        assert_eq!(secret["data"]["DEBUG"], "MQ==");

        let shown = env_secret(&launch, Values::Redacted).unwrap().unwrap();
        let shown = serde_json::to_value(&shown).unwrap();
        assert_eq!(shown["stringData"]["API_TOKEN"], REDACTED);
        assert!(shown.get("data").is_none(), "{shown}");
        assert!(env_secret(&spec("dev/x"), Values::Real).unwrap().is_some());
        let mut bare = spec("dev/x");
        bare.env.clear();
        assert!(env_secret(&bare, Values::Real).unwrap().is_none());
    }

    fn labelled_pod(namespace: &str, name: &str, annotation: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": namespace,
                "labels": { MANAGED_BY: "mahavishnu" },
                "annotations": { SPEC_ANNOTATION: annotation },
            },
        }))
        .unwrap()
    }

    #[test]
    fn only_a_pods_own_k8s_record_is_adopted() {
        let stored = |native: &str| serde_json::to_string(&with_secret_env(native)).unwrap();
        let own = adoptable_spec(
            &labelled_pod("dev", "mv-1", &stored("dev/mv-1")),
            &kubernetes(),
        )
        .unwrap();
        assert_eq!(own.id.to_string(), "k8s:dev/mv-1");
        assert_eq!(
            own.env["API_TOKEN"], "",
            "values are never taken from a pod"
        );

        let planted = |id: &str| {
            let mut record: Value = serde_json::from_str(&stored("dev/mv-1")).unwrap();
            record["id"] = json!(id);
            record.to_string()
        };
        for claim in [
            planted("tmux:evil"),
            planted("pty:x"),
            planted("k8s:dev/other"),
            planted("k8s:prod/mv-1"),
            "not json".to_string(),
        ] {
            assert!(
                adoptable_spec(&labelled_pod("dev", "mv-1", &claim), &kubernetes()).is_none(),
                "{claim}"
            );
        }
        let mut unlabelled = labelled_pod("dev", "mv-1", &stored("dev/mv-1"));
        unlabelled.metadata.labels = None;
        assert!(adoptable_spec(&unlabelled, &kubernetes()).is_none());
    }

    #[test]
    fn bad_names_and_missing_images_are_named() {
        let error = pod_manifest(&spec("dev/mv-1a2b3c"), &KubernetesConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--image") && error.contains("targets.kubernetes.image"),
            "{error}"
        );
        let settings = KubernetesConfig {
            image: Some("x".into()),
            ..Default::default()
        };
        let error = pod_manifest(&spec("dev/Has_Upper"), &settings)
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot name a pod"), "{error}");
    }
}
