//! A FAKE Kubernetes API server, for the tests only.
//!
//! No real API server can run on these machines, so this one stands in for it. It speaks the real wire
//! protocol over real HTTP (kube-rs and kubectl talk to it unchanged): discovery, pods create, get,
//! list and delete with label selectors, `resourceVersion` and `uid`, watch streams, logs (also
//! followed), `Status` errors, self-subject access reviews, and exec and attach over websockets with the
//! `v5.channel.k8s.io` / `v4.channel.k8s.io` channel protocol. A pod's container is a local process
//! (under a pseudo-terminal when the pod asks for a TTY); a small scheduler moves new pods to Running,
//! or to a failure when the image asks for one: an image containing `pull-fails` cannot be pulled, one
//! containing `unschedulable` fits no node, one containing `crash` crash-loops.
//!
//! Secrets: create (`stringData` folded into base64 `data`), get, list, merge patch, and delete with a
//! uid precondition; owner references are stored as given. Like the kubelet, the container's
//! environment is resolved when it starts, `valueFrom.secretKeyRef` and `envFrom.secretRef` from the
//! Secret (a missing one is `CreateContainerConfigError`). There is no garbage collector: a Secret
//! owned by a deleted pod stays until someone deletes it, so tests see whether Mahavishnu did.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// How long the fake scheduler takes to start a pod.
pub const SCHEDULING_DELAY: Duration = Duration::from_millis(30);

/// A running fake API server on a loopback port.
pub struct FakeKube {
    pub port: u16,
    state: Arc<Fake>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Fake {
    inner: Mutex<Inner>,
    events: broadcast::Sender<(String, Value)>,
    port: u16,
    /// How long every response is held back, in milliseconds: a slow or distant API server.
    latency_ms: AtomicU64,
}

#[derive(Default)]
struct Inner {
    pods: BTreeMap<(String, String), FakePod>,
    secrets: BTreeMap<(String, String), Value>,
    version: u64,
    uids: u64,
    /// Every pod created, as it was created, in order (deleted ones too).
    created: Vec<Value>,
}

impl Inner {
    fn next_uid(&mut self) -> String {
        self.uids += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.uids)
    }

    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }
}

struct FakePod {
    object: Value,
    container: Option<Arc<Container>>,
}

/// The process behind a pod's container.
struct Container {
    /// The environment resolved when it started, which `exec` runs with too.
    env: Vec<(String, String)>,
    log: Arc<Mutex<Vec<u8>>>,
    output: broadcast::Sender<Vec<u8>>,
    stdin: Mutex<Option<std::fs::File>>,
    pid: i32,
}

type Params = Query<Vec<(String, String)>>;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn flag(params: &[(String, String)], name: &str) -> bool {
    matches!(param(params, name), Some("true" | "1"))
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn not_found(namespace: &str, name: &str) -> Response {
    let _ = namespace;
    status(404, "NotFound", format!("pods \"{name}\" not found"))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut text = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                text.push('=');
            }
        }
    }
    text
}

/// Standard base64 with padding, as the API server requires of a Secret's `data`.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut bytes = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let digit = if i >= 4 - pad {
                0
            } else {
                BASE64.iter().position(|&d| d == c)? as u32
            };
            n |= digit << (18 - 6 * i);
        }
        bytes.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(bytes)
}

fn now() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Whether `labels` match a selector like `a=b,c!=d,e`.
fn selected(selector: Option<&str>, labels: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let term = term.trim();
        if let Some((key, value)) = term.split_once("!=") {
            labels[key.trim()].as_str() != Some(value.trim())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[key.trim()].as_str() == Some(value.trim())
        } else {
            labels.get(term).is_some()
        }
    })
}

impl Fake {
    fn bump(&self, inner: &mut Inner, key: &(String, String), kind: &str) {
        inner.version += 1;
        let version = inner.version.to_string();
        if let Some(pod) = inner.pods.get_mut(key) {
            pod.object["metadata"]["resourceVersion"] = json!(version);
            let _ = self.events.send((kind.to_string(), pod.object.clone()));
        }
    }

    fn update(&self, key: &(String, String), change: impl FnOnce(&mut Value)) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(pod) = inner.pods.get_mut(key) {
            change(&mut pod.object);
            self.bump(&mut inner, key, "MODIFIED");
        }
    }

    /// The scheduler and kubelet: after a short delay the pod runs, or fails as its image asks.
    fn schedule(self: &Arc<Self>, key: (String, String)) {
        let fake = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(SCHEDULING_DELAY).await;
            let Some(object) = fake
                .inner
                .lock()
                .unwrap()
                .pods
                .get(&key)
                .map(|p| p.object.clone())
            else {
                return;
            };
            let image = object["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if image.contains("unschedulable") {
                fake.update(&key, |pod| {
                    pod["status"]["conditions"] = json!([{
                        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": "0/3 nodes are available: 3 Insufficient cpu.",
                    }]);
                });
                return;
            }
            let waiting = if image.contains("pull-fails") {
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
            if let Some((reason, message)) = waiting {
                fake.update(&key, |pod| {
                    pod["status"]["containerStatuses"] = json!([{
                        "name": "main", "ready": false, "restartCount": 0, "image": image, "imageID": "",
                        "state": { "waiting": { "reason": reason, "message": message } },
                    }]);
                });
                return;
            }
            let env = {
                let inner = fake.inner.lock().unwrap();
                container_env(&object, &key.0, &inner.secrets)
            };
            let env = match env {
                Ok(env) => env,
                Err(message) => {
                    fake.update(&key, |pod| {
                        pod["status"]["containerStatuses"] = json!([{
                            "name": "main", "ready": false, "restartCount": 0, "image": image, "imageID": "",
                            "state": { "waiting": { "reason": "CreateContainerConfigError", "message": message } },
                        }]);
                    });
                    return;
                }
            };
            match start_container(&object, env) {
                Ok((container, child)) => {
                    let container = Arc::new(container);
                    {
                        let mut inner = fake.inner.lock().unwrap();
                        if let Some(pod) = inner.pods.get_mut(&key) {
                            pod.container = Some(Arc::clone(&container));
                        }
                    }
                    fake.update(&key, |pod| {
                        pod["status"]["phase"] = json!("Running");
                        pod["status"]["podIP"] = json!("10.0.0.7");
                        pod["status"]["conditions"] = json!([{ "type": "Ready", "status": "True" }]);
                        pod["status"]["containerStatuses"] = json!([{
                            "name": "main", "ready": true, "restartCount": 0, "image": image,
                            "imageID": "", "started": true,
                            "state": { "running": { "startedAt": now() } },
                        }]);
                    });
                    let fake = Arc::clone(&fake);
                    std::thread::spawn(move || {
                        let mut child = child;
                        let code = child
                            .wait()
                            .map(|s| {
                                use std::os::unix::process::ExitStatusExt;
                                s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
                            })
                            .unwrap_or(1);
                        // Let the output reader drain the last bytes into the log.
                        std::thread::sleep(Duration::from_millis(50));
                        fake.update(&key, |pod| {
                            pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
                            pod["status"]["containerStatuses"][0]["ready"] = json!(false);
                            pod["status"]["containerStatuses"][0]["state"] = json!({
                                "terminated": { "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                                "finishedAt": now() },
                            });
                        });
                    });
                }
                Err(error) => fake.update(&key, |pod| {
                    pod["status"]["containerStatuses"] = json!([{
                        "name": "main", "ready": false, "restartCount": 0, "image": image, "imageID": "",
                        "state": { "waiting": { "reason": "RunContainerError", "message": error } },
                    }]);
                }),
            }
        });
    }
}

/// The container's environment as the kubelet makes it: `envFrom` first, then `env` in order, values
/// from Secrets resolved now; the kubelet's message when a Secret or key is missing.
fn container_env(
    object: &Value,
    namespace: &str,
    secrets: &BTreeMap<(String, String), Value>,
) -> Result<Vec<(String, String)>, String> {
    let container = &object["spec"]["containers"][0];
    let secret = |name: &str| {
        secrets
            .get(&(namespace.to_string(), name.to_string()))
            .ok_or_else(|| format!("secret \"{name}\" not found"))
    };
    let decoded = |secret: &Value, key: &str| {
        secret["data"][key]
            .as_str()
            .and_then(base64_decode)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    };
    let mut env = Vec::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = source["secretRef"]["name"].as_str() {
            let secret = secret(name)?;
            for key in secret["data"]
                .as_object()
                .into_iter()
                .flat_map(|d| d.keys())
            {
                env.push((key.clone(), decoded(secret, key).unwrap_or_default()));
            }
        }
    }
    for pair in container["env"].as_array().into_iter().flatten() {
        let Some(name) = pair["name"].as_str() else {
            continue;
        };
        let reference = &pair["valueFrom"]["secretKeyRef"];
        let value = if let Some(secret_name) = reference["name"].as_str() {
            let key = reference["key"].as_str().unwrap_or("");
            decoded(secret(secret_name)?, key).ok_or_else(|| {
                format!("couldn't find key {key} in Secret {namespace}/{secret_name}")
            })?
        } else {
            pair["value"].as_str().unwrap_or("").to_string()
        };
        env.push((name.to_string(), value));
    }
    Ok(env)
}

fn working_dir(object: &Value) -> PathBuf {
    object["spec"]["containers"][0]["workingDir"]
        .as_str()
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// Starts a pod's container as a local process; a TTY container gets a pseudo-terminal.
fn start_container(
    object: &Value,
    env: Vec<(String, String)>,
) -> Result<(Container, std::process::Child), String> {
    let container = &object["spec"]["containers"][0];
    let argv: Vec<String> = container["command"]
        .as_array()
        .map(|words| {
            words
                .iter()
                .filter_map(|w| w.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let (program, args) = argv.split_first().ok_or("the container has no command")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().cloned())
        .current_dir(working_dir(object));
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

impl Container {
    fn log(&self) -> Vec<u8> {
        self.log.lock().unwrap().clone()
    }

    fn write(&self, bytes: &[u8]) {
        if let Some(stdin) = self.stdin.lock().unwrap().as_mut() {
            let _ = stdin.write_all(bytes);
            let _ = stdin.flush();
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the container's process group and process.
        unsafe {
            libc::kill(-self.pid, signal);
            libc::kill(self.pid, signal);
        }
    }
}

async fn version() -> Response {
    axum::Json(json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "fake",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64",
    }))
    .into_response()
}

async fn api_versions(State(fake): State<Arc<Fake>>) -> Response {
    axum::Json(json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", fake.port) }],
    }))
    .into_response()
}

async fn core_resources() -> Response {
    let resource = |name: &str, kind: &str, namespaced: bool, verbs: &[&str]| json!({ "name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs });
    axum::Json(json!({
        "kind": "APIResourceList", "groupVersion": "v1",
        "resources": [
            resource("namespaces", "Namespace", false, &["get", "list"]),
            json!({ "name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                    "verbs": ["create", "delete", "get", "list", "watch"], "shortNames": ["po"] }),
            resource("pods/attach", "PodAttachOptions", true, &["create", "get"]),
            resource("pods/exec", "PodExecOptions", true, &["create", "get"]),
            resource("pods/log", "Pod", true, &["get"]),
            resource("secrets", "Secret", true, &["create", "delete", "get", "list", "patch"]),
        ],
    }))
    .into_response()
}

async fn groups() -> Response {
    axum::Json(json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [{ "name": "authorization.k8s.io",
                     "versions": [{ "groupVersion": "authorization.k8s.io/v1", "version": "v1" }],
                     "preferredVersion": { "groupVersion": "authorization.k8s.io/v1", "version": "v1" } }],
    }))
    .into_response()
}

async fn authorization_resources() -> Response {
    axum::Json(json!({
        "kind": "APIResourceList", "groupVersion": "authorization.k8s.io/v1",
        "resources": [{ "name": "selfsubjectaccessreviews", "singularName": "", "namespaced": false,
                        "kind": "SelfSubjectAccessReview", "verbs": ["create"] }],
    }))
    .into_response()
}

async fn access_review(axum::Json(mut review): axum::Json<Value>) -> Response {
    review["status"] = json!({ "allowed": true, "reason": "the fake allows everything" });
    (StatusCode::CREATED, axum::Json(review)).into_response()
}

async fn namespace(UrlPath(name): UrlPath<String>) -> Response {
    if name == "missing" {
        return status(404, "NotFound", format!("namespaces \"{name}\" not found"));
    }
    axum::Json(json!({
        "kind": "Namespace", "apiVersion": "v1",
        "metadata": { "name": name, "uid": format!("ns-{name}"), "resourceVersion": "1" },
        "status": { "phase": "Active" },
    }))
    .into_response()
}

fn list_or_watch(
    fake: &Arc<Fake>,
    namespace: Option<String>,
    params: &[(String, String)],
) -> Response {
    let selector = param(params, "labelSelector").map(String::from);
    let matches = {
        let namespace = namespace.clone();
        let selector = selector.clone();
        move |pod: &Value| {
            namespace
                .as_deref()
                .is_none_or(|ns| pod["metadata"]["namespace"] == ns)
                && selected(selector.as_deref(), &pod["metadata"]["labels"])
        }
    };
    let (items, version) = {
        let inner = fake.inner.lock().unwrap();
        let items: Vec<Value> = inner
            .pods
            .values()
            .map(|pod| pod.object.clone())
            .filter(|pod| matches(pod))
            .collect();
        (items, inner.version)
    };
    if !flag(params, "watch") {
        return axum::Json(json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": { "resourceVersion": version.to_string() }, "items": items,
        }))
        .into_response();
    }
    let initial: Vec<String> =
        if param(params, "resourceVersion").is_some_and(|v| v != "0" && !v.is_empty()) {
            Vec::new()
        } else {
            items
                .iter()
                .map(|pod| json!({ "type": "ADDED", "object": pod }).to_string() + "\n")
                .collect()
        };
    let timeout = param(params, "timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(300u64);
    let mut events = fake.events.subscribe();
    let stream = async_stream(initial, move |sender| async move {
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                event = events.recv() => match event {
                    Ok((kind, pod)) if matches(&pod) => {
                        let line = json!({ "type": kind, "object": pod }).to_string() + "\n";
                        if sender.send(line).await.is_err() { break; }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
        }
    });
    Response::builder()
        .header("Content-Type", "application/json")
        .body(stream)
        .unwrap()
}

/// A streamed body: `initial` lines, then whatever `produce` sends.
fn async_stream<F, Fut>(initial: Vec<String>, produce: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel::<String>(64);
    let first = sender.clone();
    tokio::spawn(async move {
        for line in initial {
            if first.send(line).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(produce(sender));
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|line| (Ok::<_, std::io::Error>(line), receiver))
    });
    Body::from_stream(stream)
}

async fn all_pods(State(fake): State<Arc<Fake>>, Query(params): Params) -> Response {
    list_or_watch(&fake, None, &params)
}

async fn pods(
    State(fake): State<Arc<Fake>>,
    UrlPath(namespace): UrlPath<String>,
    Query(params): Params,
) -> Response {
    list_or_watch(&fake, Some(namespace), &params)
}

/// The name of an object to create in `namespace`, or why the API server refuses it (code, reason,
/// message).
fn name_to_create(
    kind: &str,
    namespace: &str,
    object: &Value,
) -> Result<String, (u16, &'static str, String)> {
    if namespace == "missing" {
        return Err((
            404,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        ));
    }
    object["metadata"]["name"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| {
            (
                422,
                "Invalid",
                format!("{kind} \"\" is invalid: metadata.name: Required value"),
            )
        })
}

async fn create_pod(
    State(fake): State<Arc<Fake>>,
    UrlPath(namespace): UrlPath<String>,
    axum::Json(mut pod): axum::Json<Value>,
) -> Response {
    let name = match name_to_create("Pod", &namespace, &pod) {
        Ok(name) => name,
        Err((code, reason, message)) => return status(code, reason, message),
    };
    if pod["spec"]["containers"][0]["image"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return status(
            422,
            "Invalid",
            format!("Pod \"{name}\" is invalid: spec.containers[0].image: Required value"),
        );
    }
    let key = (namespace.clone(), name.clone());
    {
        let mut inner = fake.inner.lock().unwrap();
        if inner.pods.contains_key(&key) {
            return status(
                409,
                "AlreadyExists",
                format!("pods \"{name}\" already exists"),
            );
        }
        pod["metadata"]["namespace"] = json!(namespace);
        pod["metadata"]["uid"] = json!(inner.next_uid());
        pod["metadata"]["creationTimestamp"] = json!(now());
        pod["status"] = json!({ "phase": "Pending", "qosClass": "BestEffort" });
        inner.created.push(pod.clone());
        inner.pods.insert(
            key.clone(),
            FakePod {
                object: pod,
                container: None,
            },
        );
        fake.bump(&mut inner, &key, "ADDED");
    }
    fake.schedule(key.clone());
    let created = fake.inner.lock().unwrap().pods[&key].object.clone();
    (StatusCode::CREATED, axum::Json(created)).into_response()
}

async fn get_pod(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Response {
    match fake
        .inner
        .lock()
        .unwrap()
        .pods
        .get(&(namespace.clone(), name.clone()))
    {
        Some(pod) => axum::Json(pod.object.clone()).into_response(),
        None => not_found(&namespace, &name),
    }
}

async fn delete_pod(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    Query(params): Params,
    body: axum::body::Bytes,
) -> Response {
    let key = (namespace.clone(), name.clone());
    let options: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let grace = param(&params, "gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| options["gracePeriodSeconds"].as_u64())
        .unwrap_or(30);
    let (object, container) = {
        let mut inner = fake.inner.lock().unwrap();
        let Some(pod) = inner.pods.get_mut(&key) else {
            return not_found(&namespace, &name);
        };
        pod.object["metadata"]["deletionTimestamp"] = json!(now());
        pod.object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        let container = pod.container.clone();
        fake.bump(&mut inner, &key, "MODIFIED");
        (inner.pods[&key].object.clone(), container)
    };
    let fake = Arc::clone(&fake);
    tokio::spawn(async move {
        if let Some(container) = &container {
            container.signal(libc::SIGTERM);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(grace);
            while tokio::time::Instant::now() < deadline && alive(container.pid) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            container.signal(libc::SIGKILL);
        }
        let mut inner = fake.inner.lock().unwrap();
        if let Some(pod) = inner.pods.remove(&key) {
            inner.version += 1;
            let mut object = pod.object;
            object["metadata"]["resourceVersion"] = json!(inner.version.to_string());
            let _ = fake.events.send(("DELETED".into(), object));
        }
    });
    axum::Json(object).into_response()
}

fn secret_not_found(name: &str) -> Response {
    status(404, "NotFound", format!("secrets \"{name}\" not found"))
}

async fn create_secret(
    State(fake): State<Arc<Fake>>,
    UrlPath(namespace): UrlPath<String>,
    axum::Json(mut secret): axum::Json<Value>,
) -> Response {
    let name = match name_to_create("Secret", &namespace, &secret) {
        Ok(name) => name,
        Err((code, reason, message)) => return status(code, reason, message),
    };
    // As the API server does: `stringData` is written into `data`, and never stored itself.
    if let Some(strings) = secret
        .as_object_mut()
        .and_then(|object| object.remove("stringData"))
    {
        for (key, value) in strings.as_object().into_iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            secret["data"][key] = json!(base64_encode(text.as_bytes()));
        }
    }
    if let Some(bad) = secret["data"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(_, value)| value.as_str().and_then(base64_decode).is_none())
    {
        return status(
            422,
            "Invalid",
            format!(
                "Secret \"{name}\" is invalid: data[{}]: illegal base64 data",
                bad.0
            ),
        );
    }
    let key = (namespace.clone(), name.clone());
    let mut inner = fake.inner.lock().unwrap();
    if inner.secrets.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            format!("secrets \"{name}\" already exists"),
        );
    }
    secret["metadata"]["namespace"] = json!(namespace);
    secret["metadata"]["uid"] = json!(inner.next_uid());
    secret["metadata"]["creationTimestamp"] = json!(now());
    secret["metadata"]["resourceVersion"] = json!(inner.next_version());
    if secret["type"].is_null() {
        secret["type"] = json!("Opaque");
    }
    inner.secrets.insert(key, secret.clone());
    (StatusCode::CREATED, axum::Json(secret)).into_response()
}

async fn list_secrets(
    State(fake): State<Arc<Fake>>,
    UrlPath(namespace): UrlPath<String>,
    Query(params): Params,
) -> Response {
    let selector = param(&params, "labelSelector");
    let inner = fake.inner.lock().unwrap();
    let items: Vec<Value> = inner
        .secrets
        .iter()
        .filter(|((ns, _), secret)| {
            *ns == namespace && selected(selector, &secret["metadata"]["labels"])
        })
        .map(|(_, secret)| secret.clone())
        .collect();
    axum::Json(json!({
        "kind": "SecretList", "apiVersion": "v1",
        "metadata": { "resourceVersion": inner.version.to_string() }, "items": items,
    }))
    .into_response()
}

async fn get_secret(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Response {
    match fake
        .inner
        .lock()
        .unwrap()
        .secrets
        .get(&(namespace, name.clone()))
    {
        Some(secret) => axum::Json(secret.clone()).into_response(),
        None => secret_not_found(&name),
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(object) = target.as_object_mut() {
                object.remove(key);
            }
        } else {
            merge_patch(&mut target[key.as_str()], value);
        }
    }
}

async fn patch_secret(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let kind = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    // A strategic merge patch of metadata is a merge patch; JSON patch and apply are not served here.
    if !matches!(
        kind,
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    ) {
        return status(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {kind})"
            ),
        );
    }
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "the patch is not JSON".into());
    };
    let mut inner = fake.inner.lock().unwrap();
    let version = inner.next_version();
    let Some(secret) = inner.secrets.get_mut(&(namespace, name.clone())) else {
        return secret_not_found(&name);
    };
    let uid = secret["metadata"]["uid"].clone();
    merge_patch(secret, &patch);
    secret["metadata"]["uid"] = uid;
    secret["metadata"]["resourceVersion"] = json!(version);
    axum::Json(secret.clone()).into_response()
}

async fn delete_secret(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let options: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let key = (namespace, name.clone());
    let mut inner = fake.inner.lock().unwrap();
    let Some(secret) = inner.secrets.get(&key) else {
        return secret_not_found(&name);
    };
    let uid = secret["metadata"]["uid"].clone();
    if let Some(wanted) = options["preconditions"]["uid"].as_str()
        && uid.as_str() != Some(wanted)
    {
        return status(
            409,
            "Conflict",
            format!(
                "Precondition failed: UID in precondition: {wanted}, UID in object meta: {}",
                uid.as_str().unwrap_or("")
            ),
        );
    }
    inner.secrets.remove(&key);
    axum::Json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": { "name": name, "kind": "secrets", "uid": uid },
    }))
    .into_response()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false)
}

fn container_of(
    fake: &Fake,
    namespace: &str,
    name: &str,
) -> Option<(Value, Option<Arc<Container>>)> {
    let inner = fake.inner.lock().unwrap();
    let pod = inner.pods.get(&(namespace.to_string(), name.to_string()))?;
    Some((pod.object.clone(), pod.container.clone()))
}

async fn pod_log(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    Query(params): Params,
) -> Response {
    let Some((_, container)) = container_of(&fake, &namespace, &name) else {
        return not_found(&namespace, &name);
    };
    let Some(container) = container else {
        return status(
            400,
            "BadRequest",
            format!("container \"main\" in pod \"{name}\" is waiting to start: ContainerCreating"),
        );
    };
    let log = String::from_utf8_lossy(&container.log()).into_owned();
    if !flag(&params, "follow") {
        return log.into_response();
    }
    let mut output = container.output.subscribe();
    let pid = container.pid;
    let body = async_stream(vec![log], move |sender| async move {
        loop {
            match tokio::time::timeout(Duration::from_millis(200), output.recv()).await {
                Ok(Ok(bytes)) => {
                    if sender
                        .send(String::from_utf8_lossy(&bytes).into_owned())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(_)) => break,
                Err(_) if !alive(pid) => break,
                Err(_) => {}
            }
        }
    });
    Response::builder()
        .header("Content-Type", "text/plain")
        .body(body)
        .unwrap()
}

const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

async fn exec(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    Query(params): Params,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some((object, container)) = container_of(&fake, &namespace, &name) else {
        return not_found(&namespace, &name);
    };
    if container.is_none() {
        return status(400, "BadRequest", format!("pod {name} is not running"));
    }
    let command: Vec<String> = params
        .iter()
        .filter(|(key, _)| key == "command")
        .map(|(_, value)| value.clone())
        .collect();
    let stdin = flag(&params, "stdin");
    let env = container.map(|c| c.env.clone()).unwrap_or_default();
    upgrade
        .protocols(PROTOCOLS)
        .on_upgrade(move |socket| run_exec(socket, object, env, command, stdin))
}

async fn run_exec(
    mut socket: WebSocket,
    object: Value,
    env: Vec<(String, String)>,
    command: Vec<String>,
    stdin: bool,
) {
    let Some((program, args)) = command.split_first() else {
        let _ = socket
            .send(Message::Binary(error_frame("no command given", None)))
            .await;
        return;
    };
    let mut child = match tokio::process::Command::new(program)
        .args(args)
        .envs(env)
        .current_dir(working_dir(&object))
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            let message = format!("exec: \"{program}\": {error}");
            let _ = socket
                .send(Message::Binary(error_frame(&message, None)))
                .await;
            close_normally(&mut socket).await;
            return;
        }
    };
    let mut child_stdin = child.stdin.take();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (frames, mut outgoing) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    for (channel, mut pipe) in [
        (
            1u8,
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        ),
        (
            2u8,
            Box::new(stderr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        ),
    ] {
        let frames = frames.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut chunk = vec![0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let mut frame = vec![channel];
                frame.extend_from_slice(&chunk[..n]);
                if frames.send(frame).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(frames);
    loop {
        tokio::select! {
            frame = outgoing.recv() => match frame {
                Some(frame) => { if socket.send(Message::Binary(frame.into())).await.is_err() { return; } }
                None => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => {
                    use tokio::io::AsyncWriteExt;
                    match data[0] {
                        0 => if let Some(stdin) = child_stdin.as_mut() { let _ = stdin.write_all(&data[1..]).await; },
                        255 => { child_stdin = None; }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
    let code = child
        .wait()
        .await
        .ok()
        .and_then(|status| status.code())
        .unwrap_or(1);
    let frame = if code == 0 {
        let mut frame = vec![3u8];
        frame.extend_from_slice(
            json!({ "metadata": {}, "status": "Success" })
                .to_string()
                .as_bytes(),
        );
        axum::body::Bytes::from(frame)
    } else {
        error_frame(
            &format!("command terminated with non-zero exit code: exit status {code}"),
            Some(code),
        )
    };
    let _ = socket.send(Message::Binary(frame)).await;
    close_normally(&mut socket).await;
}

/// Ends a websocket with a normal-closure frame (1000), as the API server does.
async fn close_normally(socket: &mut WebSocket) {
    let frame = axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "".into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// A message on the error channel (3): a `Status`, with the exit code for a command that failed.
fn error_frame(message: &str, code: Option<i32>) -> axum::body::Bytes {
    let mut status = json!({ "metadata": {}, "status": "Failure", "message": message });
    if let Some(code) = code {
        status["reason"] = json!("NonZeroExitCode");
        status["details"] =
            json!({ "causes": [{ "reason": "ExitCode", "message": code.to_string() }] });
    }
    let mut frame = vec![3u8];
    frame.extend_from_slice(status.to_string().as_bytes());
    frame.into()
}

async fn attach(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let container = match container_of(&fake, &namespace, &name) {
        Some((_, Some(container))) => container,
        Some((_, None)) => return status(400, "BadRequest", format!("pod {name} is not running")),
        None => return not_found(&namespace, &name),
    };
    upgrade
        .protocols(PROTOCOLS)
        .on_upgrade(move |socket| run_attach(socket, container))
}

async fn run_attach(mut socket: WebSocket, container: Arc<Container>) {
    let mut output = container.output.subscribe();
    loop {
        tokio::select! {
            bytes = output.recv() => match bytes {
                Ok(bytes) => {
                    let mut frame = vec![1u8];
                    frame.extend_from_slice(&bytes);
                    if socket.send(Message::Binary(frame.into())).await.is_err() { return; }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(data))) if !data.is_empty() && data[0] == 0 => container.write(&data[1..]),
                // The client closed its stdin (v5): an attach for typing only is done.
                Some(Ok(Message::Binary(data))) if data.first() == Some(&255) => {
                    close_normally(&mut socket).await;
                    return;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
        }
    }
}

/// Holds every request back by the fake's latency before it is answered.
async fn delay(
    State(fake): State<Arc<Fake>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let latency = fake.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    next.run(request).await
}

fn router(state: Arc<Fake>) -> Router {
    let delayed = axum::middleware::from_fn_with_state(Arc::clone(&state), delay);
    Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/api/v1", get(core_resources))
        .route("/apis", get(groups))
        .route(
            "/apis/authorization.k8s.io/v1",
            get(authorization_resources),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            post(access_review),
        )
        .route("/api/v1/namespaces/{namespace}", get(namespace))
        .route("/api/v1/pods", get(all_pods))
        .route(
            "/api/v1/namespaces/{namespace}/pods",
            get(pods).post(create_pod),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}",
            get(get_pod).delete(delete_pod),
        )
        .route(
            "/api/v1/namespaces/{namespace}/secrets",
            get(list_secrets).post(create_secret),
        )
        .route(
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            get(get_secret).patch(patch_secret).delete(delete_secret),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/log",
            get(pod_log),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            get(exec).post(exec),
        )
        .route(
            "/api/v1/namespaces/{namespace}/pods/{name}/attach",
            get(attach).post(attach),
        )
        .layer(delayed)
        .with_state(state)
}

impl FakeKube {
    /// Starts the fake on a free loopback port, on its own thread and runtime (so it works from
    /// synchronous and from async tests alike).
    pub fn start() -> FakeKube {
        FakeKube::start_with_latency(Duration::ZERO)
    }

    /// Starts the fake with every response held back by `latency` (see `set_latency`).
    pub fn start_with_latency(latency: Duration) -> FakeKube {
        let latency_ms = latency.as_millis() as u64;
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                let (events, _) = broadcast::channel(1024);
                let state = Arc::new(Fake {
                    inner: Mutex::new(Inner::default()),
                    events,
                    port,
                    latency_ms: AtomicU64::new(latency_ms),
                });
                ready.send(Arc::clone(&state)).unwrap();
                let _ = axum::serve(listener, router(state))
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let state = started.recv().expect("the fake API server starts");
        FakeKube {
            port: state.port,
            state,
            _stop: stop,
        }
    }

    /// Holds every response from now on back by `latency` (zero: answers at once).
    pub fn set_latency(&self, latency: Duration) {
        self.state
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Writes a kubeconfig for this server (context `fake`, namespace `namespace`) into `dir`.
    pub fn kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n\
             users:\n- name: fake\n  user:\n    token: fake-token\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The Secret `namespace/name`, as stored.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Value> {
        self.state
            .inner
            .lock()
            .unwrap()
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Secrets the fake holds, as `NAMESPACE/NAME`.
    pub fn secret_names(&self) -> Vec<String> {
        self.state
            .inner
            .lock()
            .unwrap()
            .secrets
            .keys()
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect()
    }

    /// Every pod ever created on this fake, in order, as `(NAMESPACE/NAME, the object as created)`;
    /// deleted pods stay in this log.
    pub fn created_pods(&self) -> Vec<(String, Value)> {
        self.state
            .inner
            .lock()
            .unwrap()
            .created
            .iter()
            .map(|pod| {
                let name = format!(
                    "{}/{}",
                    pod["metadata"]["namespace"].as_str().unwrap_or_default(),
                    pod["metadata"]["name"].as_str().unwrap_or_default()
                );
                (name, pod.clone())
            })
            .collect()
    }

    /// Pods the fake holds, as `NAMESPACE/NAME`.
    pub fn pod_names(&self) -> Vec<String> {
        self.state
            .inner
            .lock()
            .unwrap()
            .pods
            .keys()
            .map(|(ns, name)| format!("{ns}/{name}"))
            .collect()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        for pod in self.state.inner.lock().unwrap().pods.values() {
            if let Some(container) = &pod.container {
                container.signal(libc::SIGKILL);
            }
        }
    }
}
