//! The scheduler and the kubelet: a pod is scheduled on the one fake node (or not, when it asks for
//! more than the node has), its image pulled (the image registry of `FakeKube::add_image`), its
//! container started as a local process with its ports mapped to free loopback ports, restarted with
//! back-off when it exits under `restartPolicy: Always`, and probed over HTTP.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::store::{self, KINDS};
use super::{Container, Fake, SCHEDULING_DELAY, alive, base64_decode, now};

/// The fake node's allocatable resources.
const NODE_CPU_MILLIS: u64 = 4000;
const NODE_MEMORY: u64 = 8 << 30;

/// How often probes run (the kubelet's `periodSeconds` is at least a second; the fake is quicker).
const PROBE_PERIOD: Duration = Duration::from_millis(200);

/// The pod IP every pod reports (processes really listen on loopback ports, see `FakePod::ports`).
pub(super) const POD_IP: &str = "10.0.0.7";

fn cpu_millis(text: &str) -> u64 {
    match text.strip_suffix('m') {
        Some(millis) => millis.parse().unwrap_or(0),
        None => (text.parse::<f64>().unwrap_or(0.0) * 1000.0) as u64,
    }
}

fn memory_bytes(text: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            return (number.parse::<f64>().unwrap_or(0.0) * factor as f64) as u64;
        }
    }
    text.parse().unwrap_or(0)
}

/// What the pod asks for that the node lacks: `cpu` or `memory`.
fn insufficient(object: &Value) -> Option<&'static str> {
    let (mut cpu, mut memory) = (0, 0);
    for container in object["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let resources = &container["resources"];
        let asked = |what: &str| {
            resources["requests"][what]
                .as_str()
                .or(resources["limits"][what].as_str())
                .map(String::from)
                .or_else(|| resources["requests"][what].as_u64().map(|n| n.to_string()))
        };
        cpu += asked("cpu").map(|c| cpu_millis(&c)).unwrap_or(0);
        memory += asked("memory").map(|m| memory_bytes(&m)).unwrap_or(0);
    }
    if cpu > NODE_CPU_MILLIS {
        Some("cpu")
    } else if memory > NODE_MEMORY {
        Some("memory")
    } else {
        None
    }
}

fn words(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(String::from))
        .collect()
}

type Key = (String, String);

impl Fake {
    fn pod(&self, key: &Key) -> Option<Value> {
        self.inner
            .lock()
            .unwrap()
            .pods
            .get(key)
            .map(|pod| pod.object.clone())
    }

    /// Whether the pod is gone or going.
    fn pod_gone(&self, key: &Key) -> bool {
        self.pod(key)
            .is_none_or(|pod| !pod["metadata"]["deletionTimestamp"].is_null())
    }

    /// Records an Event about `object` (the same one again counts up, at most once a second).
    pub(super) fn event(
        &self,
        object: &Value,
        kind: &str,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let events = &KINDS[2];
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let name = object["metadata"]["name"].as_str().unwrap_or("");
        let mut inner = self.inner.lock().unwrap();
        let existing = inner
            .objects
            .iter()
            .find(|((plural, ns, _), event)| {
                plural == "events"
                    && ns == namespace
                    && event["involvedObject"]["uid"] == object["metadata"]["uid"]
                    && event["reason"] == reason
                    && event["message"] == message
            })
            .map(|(key, event)| (key.clone(), event.clone()));
        let time = now();
        let field_path = match object["spec"]["containers"][0]["name"].as_str() {
            Some(container) if kind == "Pod" => format!("spec.containers{{{container}}}"),
            _ => String::new(),
        };
        match existing {
            Some((key, event)) => {
                if event["lastTimestamp"] != time {
                    self.modify(&mut inner, events, &key, None, |event| {
                        event["count"] = json!(event["count"].as_u64().unwrap_or(1) + 1);
                        event["lastTimestamp"] = json!(time);
                    });
                }
            }
            None => {
                inner.uids += 1;
                let event = json!({
                    "metadata": { "name": format!("{name}.{:016x}", inner.uids), "namespace": namespace,
                                  "uid": inner.next_uid(), "creationTimestamp": time },
                    "involvedObject": { "kind": kind, "namespace": namespace, "name": name,
                                        "uid": object["metadata"]["uid"], "apiVersion": object["apiVersion"].as_str().unwrap_or("v1"),
                                        "fieldPath": field_path },
                    "reason": reason, "message": message, "type": type_, "count": 1,
                    "firstTimestamp": time, "lastTimestamp": time,
                    "source": { "component": if reason == "FailedScheduling" { "default-scheduler" } else { "kubelet" } },
                    "reportingComponent": "kubelet", "reportingInstance": "fake-node",
                });
                self.commit(&mut inner, events, event);
            }
        }
    }

    /// Sets the first container's status (and the pod's Ready condition to follow it).
    fn container_status(&self, key: &Key, change: impl FnOnce(&mut Value)) {
        self.update(key, |pod| {
            let name = pod["spec"]["containers"][0]["name"]
                .as_str()
                .unwrap_or("main")
                .to_string();
            let image = pod["spec"]["containers"][0]["image"].clone();
            if pod["status"]["containerStatuses"][0].is_null() {
                pod["status"]["containerStatuses"] = json!([{
                    "name": name, "ready": false, "restartCount": 0, "image": image, "imageID": "",
                    "started": false, "state": {},
                }]);
            }
            change(&mut pod["status"]["containerStatuses"][0]);
            let ready = pod["status"]["containerStatuses"][0]["ready"] == true;
            let flag = if ready { "True" } else { "False" };
            let mut conditions: Vec<Value> = pod["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conditions.retain(|c| c["type"] != "Ready" && c["type"] != "ContainersReady");
            conditions
                .push(json!({ "type": "Ready", "status": flag, "lastTransitionTime": now() }));
            conditions.push(
                json!({ "type": "ContainersReady", "status": flag, "lastTransitionTime": now() }),
            );
            pod["status"]["conditions"] = json!(conditions);
        });
    }

    /// The scheduler and kubelet: after a short delay the pod runs, or fails as its image asks.
    pub(super) fn schedule(self: &Arc<Self>, key: Key) {
        tokio::spawn(run_pod(Arc::clone(self), key));
    }
}

fn waiting(reason: &str, message: &str) -> Value {
    json!({ "waiting": { "reason": reason, "message": message } })
}

async fn run_pod(fake: Arc<Fake>, key: Key) {
    tokio::time::sleep(SCHEDULING_DELAY).await;
    let Some(object) = fake.pod(&key) else {
        return;
    };
    let spec = object["spec"]["containers"][0].clone();
    let image = spec["image"].as_str().unwrap_or("").to_string();
    let name = spec["name"].as_str().unwrap_or("main").to_string();
    if image.contains("unschedulable") {
        fake.update(&key, |pod| {
            pod["status"]["conditions"] = json!([{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu.",
            }]);
        });
        return;
    }
    if let Some(resource) = insufficient(&object) {
        let message = format!("0/1 nodes are available: 1 Insufficient {resource}.");
        fake.update(&key, |pod| {
            pod["status"]["conditions"] = json!([{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                "lastTransitionTime": now(),
            }]);
        });
        fake.event(&object, "Pod", "Warning", "FailedScheduling", &message);
        return;
    }
    fake.update(&key, |pod| {
        pod["spec"]["nodeName"] = json!("fake-node");
        pod["status"]["conditions"] =
            json!([{ "type": "PodScheduled", "status": "True", "lastTransitionTime": now() }]);
    });
    let legacy = if image.contains("pull-fails") {
        Some((
            "ErrImagePull",
            format!("failed to pull image \"{image}\": not found"),
        ))
    } else if image.contains("crash") {
        Some((
            "CrashLoopBackOff",
            "back-off 10s restarting failed container".to_string(),
        ))
    } else {
        None
    };
    if let Some((reason, message)) = legacy {
        fake.container_status(&key, |status| status["state"] = waiting(reason, &message));
        return;
    }
    // The image: a container's command runs as is; without one, the image's registered argv.
    let registered = fake.images.lock().unwrap().get(&image).cloned();
    let args = words(&spec["args"]);
    let (mut argv, dir) = match (words(&spec["command"]), registered) {
        (command, _) if !command.is_empty() => (command, None),
        (_, Some((argv, dir))) => (argv, Some(dir)),
        (_, None) => {
            let message = format!(
                "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"
            );
            fake.container_status(&key, |status| {
                status["state"] = waiting("ErrImagePull", &message)
            });
            fake.event(&object, "Pod", "Warning", "Failed", &message);
            tokio::time::sleep(Duration::from_millis(300)).await;
            if fake.pod_gone(&key) {
                return;
            }
            let back_off = format!("Back-off pulling image \"{image}\"");
            fake.container_status(&key, |status| {
                status["state"] = waiting("ImagePullBackOff", &back_off)
            });
            fake.event(&object, "Pod", "Normal", "BackOff", &back_off);
            return;
        }
    };
    argv.extend(args);
    // Ports: a free loopback port per declared containerPort.
    let mut ports = Vec::new();
    for port in spec["ports"].as_array().into_iter().flatten() {
        if let Some(container_port) = port["containerPort"].as_u64() {
            let host = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or(0);
            let name = port["name"].as_str().unwrap_or("").to_string();
            ports.push((container_port as u16, name, host));
        }
    }
    if let Some(pod) = fake.inner.lock().unwrap().pods.get_mut(&key) {
        pod.ports = ports.clone();
    }
    let owned = object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|o| !o.is_empty());
    let policy = object["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_string();
    let mut restarts = 0u64;
    let mut quick_exits = 0;
    loop {
        // The environment, resolved now; the kubelet retries while a ConfigMap or Secret is missing.
        let env = loop {
            let resolved = {
                let inner = fake.inner.lock().unwrap();
                container_env(&object, &key.0, &inner.secrets, &inner.objects)
            };
            match resolved {
                Ok(env) => break env,
                Err(message) => {
                    let current = fake.pod(&key);
                    let already = current.as_ref().is_some_and(|pod| {
                        pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
                            == message
                    });
                    if !already {
                        fake.container_status(&key, |status| {
                            status["state"] = waiting("CreateContainerConfigError", &message)
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if fake.pod_gone(&key) {
                        return;
                    }
                }
            }
        };
        let mut env = env;
        if let Some((_, _, host)) = ports.first() {
            env.push(("PORT".into(), host.to_string()));
        }
        let proxy = format!("http://127.0.0.1:{}", fake.proxy_port);
        for (name, value) in [
            ("http_proxy", proxy.as_str()),
            ("HTTP_PROXY", proxy.as_str()),
            ("no_proxy", "127.0.0.1,localhost"),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ] {
            env.push((name.into(), value.into()));
        }
        let started = Instant::now();
        let (container, mut child) = match start_container(&object, &argv, dir.clone(), env, owned)
        {
            Ok(started) => started,
            Err(error) => {
                fake.container_status(&key, |status| {
                    status["state"] = waiting("RunContainerError", &error)
                });
                return;
            }
        };
        let container = Arc::new(container);
        {
            let mut inner = fake.inner.lock().unwrap();
            match inner.pods.get_mut(&key) {
                Some(pod) => {
                    if let Some(old) = pod.container.replace(Arc::clone(&container)) {
                        pod.previous_log = Some(old.log());
                    }
                }
                None => {
                    container.signal(libc::SIGKILL);
                    return;
                }
            }
        }
        let probed = spec["readinessProbe"].is_object();
        fake.update(&key, |pod| {
            pod["status"]["phase"] = json!("Running");
            pod["status"]["podIP"] = json!(POD_IP);
            pod["status"]["podIPs"] = json!([{ "ip": POD_IP }]);
            pod["status"]["hostIP"] = json!("127.0.0.1");
            if pod["status"]["startTime"].is_null() {
                pod["status"]["startTime"] = json!(now());
            }
        });
        fake.container_status(&key, |status| {
            status["ready"] = json!(!probed);
            status["started"] = json!(true);
            status["restartCount"] = json!(restarts);
            status["state"] = json!({ "running": { "startedAt": now() } });
        });
        tokio::spawn(probe(
            Arc::clone(&fake),
            key.clone(),
            Arc::clone(&container),
            spec.clone(),
            ports.clone(),
        ));
        let code = tokio::task::spawn_blocking(move || {
            child
                .wait()
                .map(|s| {
                    use std::os::unix::process::ExitStatusExt;
                    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
                })
                .unwrap_or(1)
        })
        .await
        .unwrap_or(1);
        // Let the output reader drain the last bytes into the log.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if fake.pod_gone(&key) || fake.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let reason = if code == 0 { "Completed" } else { "Error" };
        let terminated = json!({ "terminated": { "exitCode": code, "reason": reason,
                                                  "startedAt": now(), "finishedAt": now() } });
        let restart = policy == "Always" || (policy == "OnFailure" && code != 0);
        if !restart {
            fake.update(&key, |pod| {
                pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
            });
            fake.container_status(&key, |status| {
                status["ready"] = json!(false);
                status["state"] = terminated;
            });
            return;
        }
        restarts += 1;
        if started.elapsed() < Duration::from_secs(10) {
            quick_exits += 1;
        } else {
            quick_exits = 0;
        }
        let state = if quick_exits >= 2 {
            let pod_name = &key.1;
            waiting(
                "CrashLoopBackOff",
                &format!("back-off 10s restarting failed container={name} pod={pod_name}"),
            )
        } else {
            terminated.clone()
        };
        fake.container_status(&key, |status| {
            status["ready"] = json!(false);
            status["restartCount"] = json!(restarts);
            status["lastState"] = terminated;
            status["state"] = state;
        });
        if quick_exits >= 2 {
            fake.event(
                &object,
                "Pod",
                "Warning",
                "BackOff",
                "Back-off restarting failed container",
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if fake.pod_gone(&key) {
            return;
        }
    }
}

/// One HTTP GET of a probe: `Ok` for a 2xx or 3xx answer, or the kubelet's message.
pub(super) async fn http_get(host_port: u16, path: &str, shown: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let refused =
        || format!("Get \"http://{shown}{path}\": dial tcp {shown}: connect: connection refused");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", host_port))
        .await
        .map_err(|_| refused())?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {shown}\r\nUser-Agent: kube-probe/1.33\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|_| refused())?;
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut head))
        .await
        .map_err(|_| format!("Get \"http://{shown}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"))?
        .map_err(|_| refused())?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// The host port behind a probe's or a Service's port (a number, or a container port's name).
pub(super) fn host_port(ports: &[(u16, String, u16)], wanted: &Value) -> Option<(u16, u16)> {
    ports
        .iter()
        .find(|(number, name, _)| match wanted {
            Value::Number(n) => n.as_u64() == Some(u64::from(*number)),
            Value::String(text) => text == name || text.parse::<u16>().ok() == Some(*number),
            _ => false,
        })
        .map(|(number, _, host)| (*number, *host))
}

/// Readiness, liveness and startup probes (HTTP GET), every `PROBE_PERIOD`, while the container runs.
async fn probe(
    fake: Arc<Fake>,
    key: Key,
    container: Arc<Container>,
    spec: Value,
    ports: Vec<(u16, String, u16)>,
) {
    let mut ready = !spec["readinessProbe"].is_object();
    let mut live_failures = 0;
    let mut started = !spec["startupProbe"]["httpGet"].is_object();
    let since = Instant::now();
    let target = |probe: &Value| {
        let get = &probe["httpGet"];
        let (number, host) = host_port(&ports, &get["port"])
            .unwrap_or((get["port"].as_u64().unwrap_or(0) as u16, 0));
        let path = get["path"].as_str().unwrap_or("/").to_string();
        (host, path, format!("{POD_IP}:{number}"))
    };
    loop {
        tokio::time::sleep(PROBE_PERIOD).await;
        let current = fake
            .inner
            .lock()
            .unwrap()
            .pods
            .get(&key)
            .and_then(|pod| pod.container.as_ref().map(|c| c.pid));
        if current != Some(container.pid) || !alive(container.pid) {
            return;
        }
        let Some(pod) = fake.pod(&key) else { return };
        // The startup probe holds the others back; it fails the container once its whole budget
        // (failureThreshold × periodSeconds, real seconds) has passed.
        if !started {
            let startup = &spec["startupProbe"];
            let (host, path, shown) = target(startup);
            match http_get(host, &path, &shown).await {
                Ok(()) => started = true,
                Err(message) => {
                    // Each failure is an Event, as the kubelet records it.
                    let text = format!("Startup probe failed: {message}");
                    fake.event(&pod, "Pod", "Warning", "Unhealthy", &text);
                    let budget = startup["failureThreshold"].as_u64().unwrap_or(3)
                        * startup["periodSeconds"].as_u64().unwrap_or(10);
                    if since.elapsed() >= Duration::from_secs(budget) {
                        container.signal(libc::SIGKILL);
                        return;
                    }
                }
            }
            continue;
        }
        if spec["readinessProbe"]["httpGet"].is_object() {
            let (host, path, shown) = target(&spec["readinessProbe"]);
            let result = http_get(host, &path, &shown).await;
            if let Err(message) = &result {
                fake.event(
                    &pod,
                    "Pod",
                    "Warning",
                    "Unhealthy",
                    &format!("Readiness probe failed: {message}"),
                );
            }
            if result.is_ok() != ready {
                ready = result.is_ok();
                fake.container_status(&key, |status| status["ready"] = json!(ready));
            }
        }
        if spec["livenessProbe"]["httpGet"].is_object() {
            let (host, path, shown) = target(&spec["livenessProbe"]);
            match http_get(host, &path, &shown).await {
                Ok(()) => live_failures = 0,
                // Refused while the app may still be starting (its first 5 s) does not count: the
                // fake probes much more often than the kubelet, whose failures take 30 s by default.
                Err(message)
                    if message.ends_with("connection refused")
                        && since.elapsed() < Duration::from_secs(5) => {}
                Err(message) => {
                    live_failures += 1;
                    let threshold = spec["livenessProbe"]["failureThreshold"]
                        .as_u64()
                        .unwrap_or(3);
                    fake.event(
                        &pod,
                        "Pod",
                        "Warning",
                        "Unhealthy",
                        &format!("Liveness probe failed: {message}"),
                    );
                    if live_failures >= threshold {
                        let name = spec["name"].as_str().unwrap_or("main");
                        fake.event(
                            &pod,
                            "Pod",
                            "Normal",
                            "Killing",
                            &format!("Container {name} failed liveness probe, will be restarted"),
                        );
                        container.signal(libc::SIGKILL);
                        return;
                    }
                }
            }
        }
    }
}

/// The container's environment as the kubelet makes it: `envFrom` first, then `env` in order, values
/// from Secrets and ConfigMaps resolved now; the kubelet's message when one or a key is missing.
fn container_env(
    object: &Value,
    namespace: &str,
    secrets: &BTreeMap<(String, String), Value>,
    objects: &BTreeMap<store::Key, Value>,
) -> Result<Vec<(String, String)>, String> {
    let container = &object["spec"]["containers"][0];
    let secret = |name: &str| {
        secrets
            .get(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| format!("secret \"{name}\" not found"))
    };
    let config_map = |name: &str| {
        objects
            .get(&store::key("configmaps", namespace, name))
            .ok_or_else(|| format!("configmap \"{name}\" not found"))
    };
    let decoded = |secret: &Value, key: &str| {
        secret["data"][key]
            .as_str()
            .and_then(base64_decode)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    };
    let mut env = Vec::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = source["prefix"].as_str().unwrap_or("");
        if let Some(name) = source["secretRef"]["name"].as_str() {
            let secret = secret(name)?;
            for key in secret["data"]
                .as_object()
                .into_iter()
                .flat_map(|d| d.keys())
            {
                env.push((
                    format!("{prefix}{key}"),
                    decoded(secret, key).unwrap_or_default(),
                ));
            }
        }
        if let Some(name) = source["configMapRef"]["name"].as_str() {
            let map = config_map(name)?;
            for (key, value) in map["data"].as_object().into_iter().flatten() {
                env.push((
                    format!("{prefix}{key}"),
                    value.as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    for pair in container["env"].as_array().into_iter().flatten() {
        let Some(name) = pair["name"].as_str() else {
            continue;
        };
        let reference = &pair["valueFrom"]["secretKeyRef"];
        let map_reference = &pair["valueFrom"]["configMapKeyRef"];
        let value = if let Some(secret_name) = reference["name"].as_str() {
            let key = reference["key"].as_str().unwrap_or("");
            decoded(secret(secret_name)?, key).ok_or_else(|| {
                format!("couldn't find key {key} in Secret {namespace}/{secret_name}")
            })?
        } else if let Some(map_name) = map_reference["name"].as_str() {
            let key = map_reference["key"].as_str().unwrap_or("");
            config_map(map_name)?["data"][key]
                .as_str()
                .map(String::from)
                .ok_or_else(|| {
                    format!("couldn't find key {key} in ConfigMap {namespace}/{map_name}")
                })?
        } else {
            pair["value"].as_str().unwrap_or("").to_string()
        };
        env.push((name.to_string(), value));
    }
    Ok(env)
}

pub(super) fn working_dir(object: &Value) -> PathBuf {
    object["spec"]["containers"][0]["workingDir"]
        .as_str()
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// Starts a pod's container as a local process; a TTY container gets a pseudo-terminal. A pod made
/// by a controller (`merge_stderr`) logs its stderr too; others log stdout only.
fn start_container(
    object: &Value,
    argv: &[String],
    dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    merge_stderr: bool,
) -> Result<(Container, std::process::Child), String> {
    let container = &object["spec"]["containers"][0];
    let (program, args) = argv.split_first().ok_or("the container has no command")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().cloned())
        .current_dir(dir.unwrap_or_else(|| working_dir(object)));
    let tty = container["tty"].as_bool().unwrap_or(false);
    let (output, _) = broadcast::channel(1024);
    let (reader, stdin, child): (
        Box<dyn Read + Send>,
        Option<std::fs::File>,
        std::process::Child,
    ) = if tty {
        let spec: Value = object["metadata"]["annotations"]["mahavishnu.dev/spec"]
            .as_str()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(json!({}));
        let size = nix::pty::Winsize {
            ws_row: spec["rows"].as_u64().unwrap_or(24) as u16,
            ws_col: spec["cols"].as_u64().unwrap_or(80) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).map_err(|e| e.to_string())?;
        let slave: OwnedFd = pty.slave;
        command
            .stdin(Stdio::from(slave.try_clone().map_err(|e| e.to_string())?))
            .stdout(Stdio::from(slave.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("exec {program}: {e}"))?;
        let master = std::fs::File::from(pty.master);
        let writer = master.try_clone().map_err(|e| e.to_string())?;
        (Box::new(master), Some(writer), child)
    } else if merge_stderr {
        // One pipe for stdout and stderr, so the log keeps their order.
        let (read, write) = nix::unistd::pipe().map_err(|e| e.to_string())?;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::from(write.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(write))
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("exec {program}: {e}"))?;
        let stdin = child
            .stdin
            .take()
            .map(|stdin| std::fs::File::from(OwnedFd::from(stdin)));
        (Box::new(std::fs::File::from(read)), stdin, child)
    } else {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("exec {program}: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        let stdin = child
            .stdin
            .take()
            .map(|stdin| std::fs::File::from(OwnedFd::from(stdin)));
        (Box::new(stdout), stdin, child)
    };
    // The command's own copy of the write end is closed once `command` is dropped.
    drop(command);
    let log = Arc::new(Mutex::new(Vec::new()));
    let (reader_log, reader_output) = (Arc::clone(&log), output.clone());
    let mut reader = reader;
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = reader.read(&mut chunk) {
            if n == 0 {
                break;
            }
            reader_log.lock().unwrap().extend_from_slice(&chunk[..n]);
            let _ = reader_output.send(chunk[..n].to_vec());
        }
    });
    let container = Container {
        env,
        log,
        output,
        stdin: Mutex::new(stdin),
        pid: child.id() as i32,
    };
    Ok((container, child))
}
