//! The controllers: Deployments (pods straight from the template, no ReplicaSet objects), Jobs,
//! HorizontalPodAutoscalers, the Gateway API's status, and the garbage collector of pods whose
//! Deployment or Job is gone. One task reconciles everything whenever the store changes (after
//! `controller_delay`), and at least every 100 ms.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::store::{self, kind_by_plural, selected};
use super::{Fake, FakePod, Inner, now};

/// What the Deployment controller remembers between passes: the last status it saw and when it last
/// changed (for `progressDeadlineSeconds`), and when the Job controller last failed a pod.
#[derive(Default)]
pub(super) struct Memory {
    progress: BTreeMap<String, (Value, Instant)>,
    job_started: BTreeMap<String, Instant>,
}

pub(super) async fn run(fake: Arc<Fake>) {
    let mut memory = Memory::default();
    loop {
        let _ = tokio::time::timeout(Duration::from_millis(100), fake.wake.notified()).await;
        let delay = fake.controller_delay_ms.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if fake.stopped.load(Ordering::Relaxed) {
            return;
        }
        reconcile(&fake, &mut memory);
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
        && pod["metadata"]["deletionTimestamp"].is_null()
}

fn owned_by(pod: &Value, uid: &Value) -> bool {
    pod["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|owner| owner["uid"] == *uid)
}

fn short_hash(value: &Value) -> String {
    // FNV-1a, shown in the alphabet the real pod-template-hash uses.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((hash >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn objects(inner: &Inner, plural: &str) -> Vec<(store::Key, Value)> {
    inner
        .objects
        .iter()
        .filter(|((p, _, _), _)| p == plural)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn pods_of(inner: &Inner, namespace: &str, uid: &Value) -> Vec<Value> {
    inner
        .pods
        .iter()
        .filter(|((ns, _), pod)| ns == namespace && owned_by(&pod.object, uid))
        .map(|(_, pod)| pod.object.clone())
        .collect()
}

fn reconcile(fake: &Arc<Fake>, memory: &mut Memory) {
    garbage_collect(fake);
    hpas(fake);
    deployments(fake, memory);
    jobs(fake, memory);
    gateways(fake);
}

/// Deletes pods whose owning Deployment or Job is gone (Secrets are never collected).
fn garbage_collect(fake: &Arc<Fake>) {
    let orphans: Vec<(String, String)> = {
        let inner = fake.inner.lock().unwrap();
        let uids: Vec<Value> = inner
            .objects
            .values()
            .map(|o| o["metadata"]["uid"].clone())
            .collect();
        inner
            .pods
            .iter()
            .filter(|(_, pod)| {
                let owners = pod.object["metadata"]["ownerReferences"].as_array();
                owners.is_some_and(|owners| {
                    owners
                        .iter()
                        .any(|o| o["kind"] == "Deployment" || o["kind"] == "Job")
                        && !owners.iter().any(|o| uids.contains(&o["uid"]))
                }) && pod.object["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|(key, _)| key.clone())
            .collect()
    };
    for key in orphans {
        fake.delete_pod(&key, 1);
    }
}

impl Fake {
    /// Creates a pod from a controller's template, owned by `owner`.
    fn create_owned_pod(
        self: &Arc<Self>,
        owner: &Value,
        template: &Value,
        name: String,
        labels: Value,
    ) {
        let namespace = owner["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": namespace, "labels": labels,
                          "annotations": template["metadata"]["annotations"],
                          "ownerReferences": [{ "apiVersion": owner["apiVersion"], "kind": owner["kind"],
                              "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                              "controller": true, "blockOwnerDeletion": true }] },
            "spec": template["spec"].clone(),
        });
        if pod["metadata"]["annotations"].is_null() {
            pod["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
        }
        let key = (namespace, name);
        {
            let mut inner = self.inner.lock().unwrap();
            pod["metadata"]["uid"] = json!(inner.next_uid());
            pod["metadata"]["creationTimestamp"] = json!(now());
            pod["status"] = json!({ "phase": "Pending", "qosClass": "BestEffort" });
            inner.created.push(pod.clone());
            inner.pods.insert(
                key.clone(),
                FakePod {
                    object: pod,
                    ..FakePod::default()
                },
            );
            self.bump(&mut inner, &key, "ADDED");
        }
        self.schedule(key);
    }
}

fn hpas(fake: &Arc<Fake>) {
    let deployments = kind_by_plural("deployments").unwrap();
    let hpas = kind_by_plural("horizontalpodautoscalers").unwrap();
    let mut inner = fake.inner.lock().unwrap();
    for (key, hpa) in objects(&inner, "horizontalpodautoscalers") {
        let target = &hpa["spec"]["scaleTargetRef"];
        if target["kind"] != "Deployment" {
            continue;
        }
        let name = target["name"].as_str().unwrap_or("");
        let deployment_key = store::key("deployments", &key.1, name);
        let Some(deployment) = inner.objects.get(&deployment_key).cloned() else {
            continue;
        };
        let current = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        let min = hpa["spec"]["minReplicas"].as_i64().unwrap_or(1);
        let max = hpa["spec"]["maxReplicas"]
            .as_i64()
            .unwrap_or(current.max(min));
        let desired = current.clamp(min, max.max(min));
        if desired != current {
            fake.modify(
                &mut inner,
                deployments,
                &deployment_key,
                Some("horizontal-pod-autoscaler"),
                |d| d["spec"]["replicas"] = json!(desired),
            );
        }
        let running = deployment["status"]["replicas"].as_i64().unwrap_or(0);
        fake.modify(&mut inner, hpas, &key, None, |h| {
            h["status"]["currentReplicas"] = json!(running);
            h["status"]["desiredReplicas"] = json!(desired);
            if h["status"]["conditions"].is_null() {
                h["status"]["conditions"] = json!([{ "type": "AbleToScale", "status": "True",
                    "reason": "ReadyForNewScale", "lastTransitionTime": now() }]);
            }
        });
    }
}

fn deployments(fake: &Arc<Fake>, memory: &mut Memory) {
    let kind = kind_by_plural("deployments").unwrap();
    let list = objects(&fake.inner.lock().unwrap(), "deployments");
    for (key, deployment) in list {
        let namespace = &key.1;
        let uid = &deployment["metadata"]["uid"];
        let template = &deployment["spec"]["template"];
        let hash = short_hash(template);
        let desired = deployment["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        let pods = pods_of(&fake.inner.lock().unwrap(), namespace, uid);
        let live: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let (new, old): (Vec<&Value>, Vec<&Value>) = live
            .iter()
            .partition(|p| p["metadata"]["labels"]["pod-template-hash"] == hash.as_str());
        let name_of = |p: &Value| {
            (
                namespace.clone(),
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        };
        // Scale the new generation of pods to the wanted count (the not-ready ones go first).
        if new.len() < desired {
            let mut labels = template["metadata"]["labels"].clone();
            labels["pod-template-hash"] = json!(hash);
            for _ in new.len()..desired {
                let name = format!("{}-{hash}-{}", key.2, fake.random_suffix());
                fake.create_owned_pod(&deployment, template, name, labels.clone());
            }
        } else if new.len() > desired {
            let mut extra: Vec<&&Value> = new.iter().collect();
            extra.sort_by_key(|p| is_ready(p));
            for pod in extra.into_iter().take(new.len() - desired) {
                fake.delete_pod(&name_of(pod), 1);
            }
        }
        let new_ready = new.iter().filter(|p| is_ready(p)).count();
        // The old generation goes once the new one is ready.
        if new_ready >= desired {
            for pod in &old {
                fake.delete_pod(&name_of(pod), 1);
            }
        }
        let ready = live.iter().filter(|p| is_ready(p)).count();
        let updated = new.len().min(desired);
        let complete = updated == desired && new_ready >= desired && old.is_empty();
        let numbers = json!([
            live.len(),
            updated,
            ready,
            deployment["metadata"]["generation"]
        ]);
        let now_instant = Instant::now();
        let entry = memory
            .progress
            .entry(uid.to_string())
            .or_insert((numbers.clone(), now_instant));
        if entry.0 != numbers {
            *entry = (numbers, now_instant);
        }
        let deadline = deployment["spec"]["progressDeadlineSeconds"]
            .as_u64()
            .unwrap_or(600);
        let stalled = !complete && entry.1.elapsed() > Duration::from_secs(deadline);
        let replica_set = format!("{}-{hash}", key.2);
        let (progress_status, reason, message) = if complete {
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{replica_set}\" has successfully progressed."),
            )
        } else if stalled {
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{replica_set}\" has timed out progressing."),
            )
        } else {
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{replica_set}\" is progressing."),
            )
        };
        let available = ready >= desired;
        let mut inner = fake.inner.lock().unwrap();
        let old_status = inner
            .objects
            .get(&key)
            .map(|d| d["status"].clone())
            .unwrap_or_default();
        let transition = |kind: &str, status: &str| {
            let previous = old_status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == kind && c["status"] == status)
                .map(|c| c["lastTransitionTime"].clone());
            previous.unwrap_or_else(|| json!(now()))
        };
        let mut status = json!({
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": live.len(), "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                { "type": "Available", "status": if available { "True" } else { "False" },
                  "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                  "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                  "lastTransitionTime": transition("Available", if available { "True" } else { "False" }),
                  "lastUpdateTime": transition("Available", if available { "True" } else { "False" }) },
                { "type": "Progressing", "status": progress_status, "reason": reason, "message": message,
                  "lastTransitionTime": transition("Progressing", progress_status),
                  "lastUpdateTime": transition("Progressing", progress_status) },
            ],
        });
        if desired > ready {
            status["unavailableReplicas"] = json!(desired - ready);
        }
        // Condition times are kept while they hold, so a pass with nothing new writes nothing.
        if old_status != status {
            fake.modify(&mut inner, kind, &key, None, |d| d["status"] = status);
        }
    }
}

fn jobs(fake: &Arc<Fake>, memory: &mut Memory) {
    let kind = kind_by_plural("jobs").unwrap();
    let list = objects(&fake.inner.lock().unwrap(), "jobs");
    for (key, job) in list {
        let namespace = &key.1;
        let uid = &job["metadata"]["uid"];
        let pods = pods_of(&fake.inner.lock().unwrap(), namespace, uid);
        let phase = |p: &Value| p["status"]["phase"].as_str().unwrap_or("").to_string();
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count();
        let failed = pods.iter().filter(|p| phase(p) == "Failed").count();
        let active: Vec<&Value> = pods
            .iter()
            .filter(|p| {
                !matches!(phase(p).as_str(), "Succeeded" | "Failed")
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .collect();
        let finished = job["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True");
        let completions = job["spec"]["completions"].as_u64().unwrap_or(1) as usize;
        let backoff = job["spec"]["backoffLimit"].as_u64().unwrap_or(6) as usize;
        let started = *memory
            .job_started
            .entry(uid.to_string())
            .or_insert_with(Instant::now);
        let mut condition = None;
        if !finished {
            if succeeded >= completions {
                condition = Some(
                    json!({ "type": "Complete", "status": "True", "lastProbeTime": now(),
                    "lastTransitionTime": now() }),
                );
            } else if failed > backoff {
                condition = Some(
                    json!({ "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastProbeTime": now(), "lastTransitionTime": now() }),
                );
            } else if job["spec"]["activeDeadlineSeconds"]
                .as_u64()
                .is_some_and(|d| started.elapsed() > Duration::from_secs(d))
            {
                condition = Some(
                    json!({ "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                    "lastProbeTime": now(), "lastTransitionTime": now() }),
                );
            } else if active.is_empty() {
                let template = &job["spec"]["template"];
                let mut labels = template["metadata"]["labels"].clone();
                labels["batch.kubernetes.io/job-name"] = json!(key.2);
                labels["job-name"] = json!(key.2);
                labels["controller-uid"] = uid.clone();
                labels["batch.kubernetes.io/controller-uid"] = uid.clone();
                let mut template = template.clone();
                if template["spec"]["restartPolicy"].is_null() {
                    template["spec"]["restartPolicy"] = json!("Never");
                }
                let name = format!("{}-{}", key.2, fake.random_suffix());
                fake.create_owned_pod(&job, &template, name, labels);
            }
        }
        let failing = condition.as_ref().is_some_and(|c| c["type"] == "Failed");
        if failing {
            for pod in &active {
                let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
                fake.delete_pod(&(namespace.clone(), name), 0);
            }
        }
        let active_count = if failing || condition.is_some() {
            0
        } else {
            active.len().max(usize::from(!finished))
        };
        let mut inner = fake.inner.lock().unwrap();
        fake.modify(&mut inner, kind, &key, None, |j| {
            let status = &mut j["status"];
            if status["startTime"].is_null() {
                status["startTime"] = json!(now());
            }
            if active_count > 0 {
                status["active"] = json!(active_count);
            } else if let Some(s) = status.as_object_mut() {
                s.remove("active");
            }
            status["succeeded"] = json!(succeeded);
            status["failed"] = json!(failed);
            if let Some(condition) = condition {
                if condition["type"] == "Complete" {
                    status["completionTime"] = json!(now());
                }
                status["conditions"] = json!([condition]);
            }
            if status["succeeded"] == 0 {
                status.as_object_mut().unwrap().remove("succeeded");
            }
            if status["failed"] == 0 {
                status.as_object_mut().unwrap().remove("failed");
            }
        });
    }
}

/// The gateway controller: every Gateway is programmed on the fake's one data plane, every HTTPRoute
/// accepted by the Gateways it names.
fn gateways(fake: &Arc<Fake>) {
    let gateways = kind_by_plural("gateways").unwrap();
    let routes = kind_by_plural("httproutes").unwrap();
    let mut inner = fake.inner.lock().unwrap();
    let condition = |kind: &str, generation: &Value| {
        json!({ "type": kind, "status": "True", "reason": kind, "message": "",
                "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z" })
    };
    for (key, gateway) in objects(&inner, "gateways") {
        let generation = &gateway["metadata"]["generation"];
        let listeners: Vec<Value> = gateway["spec"]["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|listener| {
                let attached = objects(&inner, "httproutes")
                    .iter()
                    .filter(|(route_key, route)| {
                        parents(route, &route_key.1).contains(&(key.1.clone(), key.2.clone()))
                            && admits(&gateway, &key.1, &route_key.1)
                    })
                    .count();
                json!({ "name": listener["name"], "attachedRoutes": attached,
                        "supportedKinds": [{ "group": "gateway.networking.k8s.io", "kind": "HTTPRoute" }],
                        "conditions": [condition("Accepted", generation), condition("Programmed", generation),
                                       condition("ResolvedRefs", generation)] })
            })
            .collect();
        let status = json!({
            "addresses": [{ "type": "IPAddress", "value": "127.0.0.1" }],
            "conditions": [condition("Accepted", generation), condition("Programmed", generation)],
            "listeners": listeners,
        });
        if gateway["status"] != status {
            fake.modify(&mut inner, gateways, &key, None, |g| g["status"] = status);
        }
    }
    for (key, route) in objects(&inner, "httproutes") {
        let generation = &route["metadata"]["generation"];
        let parents: Vec<Value> = route["spec"]["parentRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|parent| {
                json!({ "parentRef": parent, "controllerName": "fake.mahavishnu.dev/gateway",
                        "conditions": [condition("Accepted", generation), condition("ResolvedRefs", generation)] })
            })
            .collect();
        let status = json!({ "parents": parents });
        if route["status"] != status {
            fake.modify(&mut inner, routes, &key, None, |r| r["status"] = status);
        }
    }
}

/// The Gateways a route in `namespace` names, as `(namespace, name)` (a parentRef without a
/// namespace is in the route's).
pub(super) fn parents(route: &Value, namespace: &str) -> Vec<(String, String)> {
    route["spec"]["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["name"].as_str()?;
            let ns = p["namespace"].as_str().unwrap_or(namespace);
            Some((ns.to_string(), name.to_string()))
        })
        .collect()
}

/// Whether a Gateway in `gateway_namespace` takes routes from `route_namespace`: a listener's
/// `allowedRoutes.namespaces.from` is `Same` unless it says `All`, as the Gateway API defaults it.
pub(super) fn admits(gateway: &Value, gateway_namespace: &str, route_namespace: &str) -> bool {
    gateway["spec"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .any(
            |listener| match listener["allowedRoutes"]["namespaces"]["from"].as_str() {
                Some("All") => true,
                None | Some("Same") => gateway_namespace == route_namespace,
                Some(_) => false,
            },
        )
}

/// A ready pod behind Service `name` in `namespace`, on the host port behind `port` (a Service port's
/// name or number; the first port when `None`). `Err` is the API server's message.
pub(super) fn endpoint(
    inner: &Inner,
    namespace: &str,
    name: &str,
    port: Option<&str>,
    pick: u64,
) -> Result<u16, (u16, String)> {
    let Some(service) = inner.objects.get(&store::key("services", namespace, name)) else {
        return Err((404, format!("services \"{name}\" not found")));
    };
    let no_endpoints = || {
        (
            503,
            format!("no endpoints available for service \"{name}\""),
        )
    };
    let ports = service["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let service_port = match port {
        None => ports.first().cloned(),
        Some(wanted) => ports
            .iter()
            .find(|p| p["name"] == wanted || p["port"].to_string().as_str() == wanted)
            .cloned(),
    }
    .ok_or_else(no_endpoints)?;
    let target = if service_port["targetPort"].is_null() {
        service_port["port"].clone()
    } else {
        service_port["targetPort"].clone()
    };
    let selector = service["spec"]["selector"].as_object().map(|labels| {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(",")
    });
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return Err(no_endpoints());
    };
    let candidates: Vec<u16> = inner
        .pods
        .iter()
        .filter(|((ns, _), pod)| {
            ns == namespace
                && is_ready(&pod.object)
                && selected(Some(&selector), &pod.object["metadata"]["labels"])
        })
        .filter_map(|(_, pod)| super::kubelet::host_port(&pod.ports, &target).map(|(_, host)| host))
        .collect();
    if candidates.is_empty() {
        return Err(no_endpoints());
    }
    Ok(candidates[(pick % candidates.len() as u64) as usize])
}
