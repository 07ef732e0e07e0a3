//! How a revision is doing, in the cluster's own words: a Deployment's rollout status (with the
//! generation check `kubectl rollout status` makes), a Job's conditions, and the reasons its pods give
//! (ImagePullBackOff, CrashLoopBackOff, Unschedulable, a readiness probe that fails).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use mahavishnu_core::deploy::{Health, ObservedCopy};

/// Where a rollout is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Every wanted copy is updated and ready.
    Done,
    /// Still going; the words say where.
    Going(String),
    /// It cannot get there by waiting (a bad image, a crash loop, no node fits, the progress
    /// deadline passed).
    Stuck(String),
}

/// A pod's trouble: `(terminal, words)`; `None` for a pod that runs and is ready, or just started.
pub fn pod_trouble(pod: &Pod) -> Option<(bool, String)> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    for condition in status.conditions.iter().flatten() {
        if condition.type_ == "PodScheduled"
            && condition.status == "False"
            && condition.reason.as_deref() == Some("Unschedulable")
        {
            return Some((
                true,
                format!(
                    "pod {name} is Unschedulable: {}",
                    condition.message.clone().unwrap_or_default()
                ),
            ));
        }
    }
    for container in status.container_statuses.iter().flatten() {
        let state = container.state.as_ref();
        if let Some(waiting) = state.and_then(|state| state.waiting.as_ref()) {
            let reason = waiting.reason.clone().unwrap_or_default();
            let message = waiting.message.clone().unwrap_or_default();
            // A pull that failed may still succeed on retry, unless the registry said the image is
            // not there or not ours to pull; once backing off, it will not.
            let lower = message.to_lowercase();
            let hopeless_pull = [
                "not found",
                "notfound",
                "manifest unknown",
                "unauthorized",
                "denied",
            ]
            .iter()
            .any(|words| lower.contains(words));
            let terminal = (reason == "ErrImagePull" && hopeless_pull)
                || matches!(
                    reason.as_str(),
                    "ImagePullBackOff"
                        | "InvalidImageName"
                        | "CreateContainerConfigError"
                        | "CreateContainerError"
                        | "CrashLoopBackOff"
                        | "RunContainerError"
                );
            if reason.is_empty() || reason == "ContainerCreating" || reason == "PodInitializing" {
                continue;
            }
            let exit = container
                .last_state
                .as_ref()
                .and_then(|last| last.terminated.as_ref())
                .map(|ended| format!(" (last exit code {})", ended.exit_code))
                .unwrap_or_default();
            return Some((terminal, format!("pod {name}: {reason}: {message}{exit}")));
        }
        if let Some(ended) = state.and_then(|state| state.terminated.as_ref())
            && ended.exit_code != 0
        {
            return Some((
                false,
                format!(
                    "pod {name}: the container exited with code {}{}",
                    ended.exit_code,
                    ended
                        .reason
                        .as_ref()
                        .map(|reason| format!(" ({reason})"))
                        .unwrap_or_default()
                ),
            ));
        }
        if state.is_some_and(|state| state.running.is_some()) && !container.ready {
            return Some((false, format!("pod {name} runs but is not ready")));
        }
    }
    None
}

/// Whether a pod's trouble is a crash (its last log lines say why).
pub fn crashed(words: &str) -> bool {
    words.contains("CrashLoopBackOff") || words.contains("exited with code")
}

/// Where a Deployment's rollout is, the way `kubectl rollout status` decides, with its pods' own
/// reasons when it is not done.
pub fn rollout(deployment: &Deployment, pods: &[Pod]) -> Rollout {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::Going("waiting for the cluster to see the new spec".into());
    }
    if let Some(condition) = status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "Progressing")
        && condition.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        let why = trouble_of(pods)
            .map(|(_, words)| format!(": {words}"))
            .unwrap_or_default();
        return Rollout::Stuck(format!(
            "{} (ProgressDeadlineExceeded){why}",
            condition.message.clone().unwrap_or_default()
        ));
    }
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or_else(|| status.replicas.unwrap_or(1))
        .max(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    if updated >= wanted && total <= updated && available >= updated && ready >= wanted {
        return Rollout::Done;
    }
    if let Some((true, words)) = trouble_of(pods) {
        return Rollout::Stuck(words);
    }
    let detail = trouble_of(pods)
        .map(|(_, words)| format!("; {words}"))
        .unwrap_or_default();
    Rollout::Going(format!("{ready} of {wanted} pods ready{detail}"))
}

/// The first pod trouble, terminal ones first.
pub fn trouble_of(pods: &[Pod]) -> Option<(bool, String)> {
    let troubles: Vec<(bool, String)> = pods.iter().filter_map(pod_trouble).collect();
    troubles
        .iter()
        .find(|(terminal, _)| *terminal)
        .or(troubles.first())
        .cloned()
}

/// Where a Job is: done, failed (with the cluster's reason), or running.
pub fn job_rollout(job: &Job, pods: &[Pod]) -> Rollout {
    let status = job.status.clone().unwrap_or_default();
    for condition in status.conditions.iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        match condition.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return Rollout::Done,
            "Failed" | "FailureTarget" => {
                let why = trouble_of(pods)
                    .map(|(_, words)| format!("; {words}"))
                    .unwrap_or_default();
                return Rollout::Stuck(format!(
                    "the job failed: {} ({}){why}",
                    condition.message.clone().unwrap_or_default(),
                    condition.reason.clone().unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
    if status.succeeded.unwrap_or(0) > 0 {
        return Rollout::Done;
    }
    match trouble_of(pods) {
        Some((true, words)) => Rollout::Stuck(words),
        Some((false, words)) => Rollout::Going(words),
        None if status.active.unwrap_or(0) > 0 => Rollout::Going("running".into()),
        None => Rollout::Going("waiting for its pod".into()),
    }
}

/// A revision's health, for `status`.
pub fn health(rollout: &Rollout, pods: &[Pod], job: bool) -> Health {
    match rollout {
        Rollout::Done if job => Health::Succeeded,
        Rollout::Done => Health::Healthy,
        Rollout::Stuck(words) if job => Health::Failed(words.clone()),
        Rollout::Stuck(words) => Health::Failed(words.clone()),
        Rollout::Going(words) => {
            let ready = pods.iter().filter(|pod| is_ready(pod)).count();
            if ready > 0 {
                Health::Degraded(words.clone())
            } else if trouble_of(pods).is_some() {
                Health::Unhealthy(words.clone())
            } else {
                Health::Starting
            }
        }
    }
}

/// Whether a pod is ready (its Ready condition).
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|status| status.conditions.iter().flatten())
        .any(|condition| condition.type_ == "Ready" && condition.status == "True")
}

/// A pod as one copy of its revision.
pub fn copy(pod: &Pod) -> ObservedCopy {
    let status = pod.status.clone().unwrap_or_default();
    let container = status
        .container_statuses
        .clone()
        .unwrap_or_default()
        .into_iter()
        .next();
    let state = container
        .as_ref()
        .and_then(|c| c.state.as_ref())
        .and_then(|state| {
            state
                .waiting
                .as_ref()
                .and_then(|waiting| waiting.reason.clone())
                .or_else(|| state.running.as_ref().map(|_| "running".to_string()))
                .or_else(|| state.terminated.as_ref().map(|_| "exited".to_string()))
        })
        .unwrap_or_else(|| status.phase.clone().unwrap_or_default().to_lowercase());
    ObservedCopy {
        pid: None,
        port: None,
        state,
        healthy: is_ready(pod),
        restarts: container
            .as_ref()
            .map_or(0, |c| c.restart_count.max(0) as u32),
        last_exit: container
            .as_ref()
            .and_then(|c| c.last_state.as_ref())
            .and_then(|last| last.terminated.as_ref())
            .map(|ended| ended.exit_code),
    }
}

/// The newest warning an Event gives about a pod, in its words: a failing probe first (it says why
/// a container was restarted or is not ready), else anything else (a failed pull).
pub fn warning(events: &[Event]) -> Option<String> {
    let warnings = events
        .iter()
        .filter(|event| event.type_.as_deref() == Some("Warning"));
    let probes = warnings
        .clone()
        .filter(|event| event.reason.as_deref() == Some("Unhealthy"));
    newest(probes).or_else(|| newest(warnings))
}

fn newest<'a>(events: impl Iterator<Item = &'a Event>) -> Option<String> {
    events
        .max_by_key(|event| {
            event
                .last_timestamp
                .as_ref()
                .map(|time| time.0)
                .or(event.event_time.as_ref().map(|time| time.0))
        })
        .and_then(|event| event.message.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web-1-abc"}, "status": status}))
            .unwrap()
    }

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "generation": generation},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_rollout_is_done_only_once_the_generation_is_seen_and_every_copy_is_ready() {
        let ready = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                           "readyReplicas": 2, "availableReplicas": 2});
        assert_eq!(rollout(&deployment(2, ready.clone()), &[]), Rollout::Done);
        // The status is the previous generation's: not done, whatever it says.
        assert!(matches!(
            rollout(&deployment(3, ready), &[]),
            Rollout::Going(_)
        ));
        let half = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                          "readyReplicas": 1, "availableReplicas": 1});
        assert_eq!(
            rollout(&deployment(1, half), &[]),
            Rollout::Going("1 of 2 pods ready".into())
        );
    }

    #[test]
    fn pods_give_their_own_reasons() {
        let pulling = pod(json!({"containerStatuses": [{"name": "web", "ready": false,
            "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}));
        let (terminal, words) = pod_trouble(&pulling).unwrap();
        assert!(terminal);
        assert!(
            words.contains("ImagePullBackOff: Back-off pulling image"),
            "{words}"
        );
        let pending = pod(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient cpu."}]}),
        );
        assert!(
            pod_trouble(&pending)
                .unwrap()
                .1
                .contains("Insufficient cpu")
        );
        let status = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2});
        assert!(matches!(
            rollout(&deployment(1, status), &[pulling]),
            Rollout::Stuck(_)
        ));
        let unready = pod(json!({"containerStatuses": [{"name": "web", "ready": false,
            "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}]}));
        assert!(!pod_trouble(&unready).unwrap().0);
    }
}
