//! A FAKE Kubernetes API server, for the tests only.
//!
//! No real API server can run on these machines, so this one stands in for it. It speaks the real wire
//! protocol over real HTTP (kube-rs and kubectl talk to it unchanged). It is not Kubernetes: it keeps
//! everything in memory, runs containers as local processes, and approximates what it must.
//!
//! What it implements:
//! - Discovery (`/api`, `/api/v1`, `/apis`, `/apis/GROUP/VERSION`, legacy lists only; clients asking
//!   for aggregated discovery accept them) and `/version`; self-subject access reviews (all allowed).
//! - Pods: create, get, list and delete with label and field selectors, `resourceVersion` and `uid`,
//!   watch streams, logs (`follow`, `previous`, `tailLines`, `timestamps`), exec and attach over
//!   websockets with the `v5.channel.k8s.io` / `v4.channel.k8s.io` channel protocol, `Status` errors.
//! - Secrets: create (`stringData` folded into base64 `data`), get, list, merge patch, server-side
//!   apply for one field manager (what it applies replaces labels, type and data), and delete with
//!   a uid precondition; owner references are stored as given, and Secrets are never garbage
//!   collected: a Secret owned by a deleted pod stays until someone deletes it.
//! - A generic store (`store.rs`) for Deployments, Services, ConfigMaps, Events, Jobs,
//!   HorizontalPodAutoscalers (autoscaling/v2), Gateways and HTTPRoutes: create, get, list and watch
//!   (label selectors with `=`, `!=`, `in`, `notin`, existence; field selectors; BOOKMARKs), replace,
//!   merge / strategic (approximated as merge) / JSON patches, server-side apply (`fieldManager`,
//!   `force`, per-manager ownership, conflicts, `managedFields`), delete, delete-collection,
//!   `dryRun=All`, `metadata.generation`, and the `status` and `scale` subresources.
//! - Controllers (`controllers.rs`): Deployments (pods straight from the template, rolling to a new
//!   template, status and conditions that `kubectl rollout status` reads), Jobs (back-off limit,
//!   deadline), HPAs (keep replicas within min and max, as manager `horizontal-pod-autoscaler`),
//!   Gateway and HTTPRoute status, and the garbage collection of pods owned by Deployments and Jobs.
//! - A scheduler and kubelet (`kubelet.rs`): one node with `cpu: 4`, `memory: 8Gi` (a pod asking for
//!   more stays Pending, `Unschedulable`); images from `FakeKube::add_image` (a container without a
//!   `command` whose image is not registered is `ErrImagePull`, then `ImagePullBackOff`); the
//!   environment from Secrets and ConfigMaps; restarts with `CrashLoopBackOff`; HTTP readiness,
//!   liveness and startup probes every 200 ms (the real kubelet's period is at least a second; a
//!   liveness probe refused in a container's first 5 s does not count, so slow starters live); Events.
//!   Legacy image names: one containing `pull-fails` cannot be pulled, one containing `unschedulable`
//!   fits no node, one containing `crash` crash-loops.
//! - The network (`network.rs`). Pods have a fake `podIP`; each declared `containerPort` is really a
//!   free loopback port, passed to the process as `PORT` (the first one): that is the fake's stand-in
//!   for a pod IP. The API server's service and pod proxies forward there; so does the gateway data
//!   plane (one loopback port, `FakeKube::gateway_port`, for every Gateway: tests give their Gateway's
//!   listener that port), and the "cluster network" forward proxy (`FakeKube::network_proxy_url`, and
//!   every pod's `http_proxy`), which resolves `NAME.NS[.svc[.cluster.local]]` and routes' hostnames.
//! - For kubectl: server-side printing (`Table`s for `kubectl get`), and a minimal OpenAPI v3
//!   (`openapi.rs`) whose only purpose is to tell kubectl that the server validates fields itself.
//!
//! Test hooks on `FakeKube`: `add_image`, `gateway_port`, `network_proxy_url`, `gateway_hits`,
//! `set_controller_delay`, `set_latency`, `objects`, `calls` / `clear_calls`, `kill_pod_process`,
//! `kubeconfig`, `secret`, `secret_names`, `created_pods`, `pod_names`.

// Explicit paths: the benches include this file by its path too.
#[path = "fake_kube/controllers.rs"]
mod controllers;
#[path = "fake_kube/discovery.rs"]
mod discovery;
#[path = "fake_kube/kubelet.rs"]
mod kubelet;
#[path = "fake_kube/network.rs"]
mod network;
#[path = "fake_kube/openapi.rs"]
mod openapi;
#[path = "fake_kube/store.rs"]
mod store;
#[path = "fake_kube/table.rs"]
mod table;

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
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
    /// Watch events: (plural, ADDED|MODIFIED|DELETED, object).
    events: broadcast::Sender<(String, String, Value)>,
    port: u16,
    gateway_port: u16,
    proxy_port: u16,
    /// Wakes the controllers after a change.
    wake: tokio::sync::Notify,
    controller_delay_ms: AtomicU64,
    stopped: AtomicBool,
    rng: AtomicU64,
    /// Every API request served, as (method, path and query).
    calls: Mutex<Vec<(String, String)>>,
    /// The image registry: image → (argv, working directory).
    images: Mutex<BTreeMap<String, (Vec<String>, PathBuf)>>,
    /// Requests the gateway sent to each backend, keyed `namespace/service`.
    hits: Mutex<BTreeMap<String, u64>>,
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
    /// Every other object, by (plural, namespace, name).
    objects: BTreeMap<store::Key, Value>,
    /// Who owns which fields of each object (server-side apply).
    fields: BTreeMap<store::Key, BTreeMap<String, store::Manager>>,
    /// The latest watch events, for watches from a resourceVersion.
    history: VecDeque<(String, String, Value)>,
    cluster_ips: u64,
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

#[derive(Default)]
struct FakePod {
    object: Value,
    container: Option<Arc<Container>>,
    /// The log of the container's previous run (`log?previous=true`).
    previous_log: Option<Vec<u8>>,
    /// (containerPort, port name, loopback port the process listens on).
    ports: Vec<(u16, String, u16)>,
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

impl Fake {
    fn bump(&self, inner: &mut Inner, key: &(String, String), kind: &str) {
        inner.version += 1;
        let version = inner.version.to_string();
        if let Some(pod) = inner.pods.get_mut(key) {
            pod.object["metadata"]["resourceVersion"] = json!(version);
            let object = pod.object.clone();
            self.publish(inner, "pods", kind, &object);
        }
    }

    /// A random number (xorshift), for names, endpoints and weighted backends.
    fn random(&self) -> u64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        x
    }

    /// Five characters as the API server's `generateName` and the controllers' pod names have.
    fn random_suffix(&self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = self.random();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    /// Deletes a pod as the API server does: marked at once, gone once its process has ended (after
    /// SIGTERM, then SIGKILL when `grace` seconds have passed).
    fn delete_pod(self: &Arc<Self>, key: &(String, String), grace: u64) -> Option<Value> {
        let (object, container) = {
            let mut inner = self.inner.lock().unwrap();
            let pod = inner.pods.get_mut(key)?;
            pod.object["metadata"]["deletionTimestamp"] = json!(now());
            pod.object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            let container = pod.container.clone();
            self.bump(&mut inner, key, "MODIFIED");
            (inner.pods[key].object.clone(), container)
        };
        let fake = Arc::clone(self);
        let key = key.clone();
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
                let mut object = pod.object;
                object["metadata"]["resourceVersion"] = json!(inner.next_version());
                fake.publish(&mut inner, "pods", "DELETED", &object);
            }
        });
        Some(object)
    }

    fn update(&self, key: &(String, String), change: impl FnOnce(&mut Value)) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(pod) = inner.pods.get_mut(key) {
            change(&mut pod.object);
            self.bump(&mut inner, key, "MODIFIED");
        }
    }
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

    /// A resize from an attach (channel 4): the size goes to the container's terminal, as the kubelet
    /// does; a container without one ignores it.
    fn resize(&self, message: &[u8]) {
        let Ok(size) = serde_json::from_slice::<Value>(message) else {
            return;
        };
        let (Some(cols), Some(rows)) = (size["Width"].as_u64(), size["Height"].as_u64()) else {
            return;
        };
        if let Some(stdin) = self.stdin.lock().unwrap().as_ref() {
            let size = libc::winsize {
                ws_row: rows as u16,
                ws_col: cols as u16,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; on a pipe it fails harmlessly.
            unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(stdin),
                    libc::TIOCSWINSZ,
                    &size,
                )
            };
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

use discovery::{core_resources, groups};
use kubelet::working_dir;
use store::{merge_patch, selected};

async fn api_versions(State(fake): State<Arc<Fake>>) -> Response {
    axum::Json(json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{}", fake.port) }],
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
    headers: &HeaderMap,
) -> Response {
    let labels = param(params, "labelSelector").map(String::from);
    let fields = param(params, "fieldSelector").map(String::from);
    let matches = move |pod: &Value| {
        namespace
            .as_deref()
            .is_none_or(|ns| pod["metadata"]["namespace"] == ns)
            && selected(labels.as_deref(), &pod["metadata"]["labels"])
            && store::fields_selected(fields.as_deref(), pod)
    };
    if flag(params, "watch") {
        return watch(fake, "pods", params, matches);
    }
    let inner = fake.inner.lock().unwrap();
    let items: Vec<Value> = inner
        .pods
        .values()
        .map(|pod| pod.object.clone())
        .filter(|pod| matches(pod))
        .collect();
    if table::wanted(headers) {
        return axum::Json(table::table("pods", &items, &inner.version.to_string()))
            .into_response();
    }
    axum::Json(json!({
        "kind": "PodList", "apiVersion": "v1",
        "metadata": { "resourceVersion": inner.version.to_string() }, "items": items,
    }))
    .into_response()
}

/// A watch of `plural`: ADDED for what exists (or, from a `resourceVersion`, the events since), then
/// every change, BOOKMARKs when asked for, until `timeoutSeconds`.
fn watch(
    fake: &Arc<Fake>,
    plural: &str,
    params: &[(String, String)],
    matches: impl Fn(&Value) -> bool + Send + 'static,
) -> Response {
    let since = param(params, "resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0);
    let bookmarks = flag(params, "allowWatchBookmarks");
    let line =
        |kind: &str, object: &Value| json!({ "type": kind, "object": object }).to_string() + "\n";
    let (mut initial, mut events, version) = {
        let inner = fake.inner.lock().unwrap();
        let version_of = |object: &Value| {
            object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // A version older than the history the fake keeps is gone, as etcd compacts.
        let trimmed = inner.history.len() >= 4096;
        let oldest = inner
            .history
            .front()
            .filter(|_| trimmed)
            .map(|(_, _, o)| version_of(o));
        if let (Some(since), Some(oldest)) = (since, oldest)
            && since + 1 < oldest
        {
            return status(
                410,
                "Expired",
                format!("too old resource version: {since} ({})", oldest - 1),
            );
        }
        let initial: Vec<String> = match since {
            // The events since that version, from the history the fake keeps.
            Some(since) => inner
                .history
                .iter()
                .filter(|(p, _, object)| {
                    p == plural
                        && matches(object)
                        && object["metadata"]["resourceVersion"]
                            .as_str()
                            .and_then(|v| v.parse::<u64>().ok())
                            .is_some_and(|v| v > since)
                })
                .map(|(_, kind, object)| line(kind, object))
                .collect(),
            None => {
                let objects: Vec<Value> = if plural == "pods" {
                    inner.pods.values().map(|p| p.object.clone()).collect()
                } else {
                    inner
                        .objects
                        .iter()
                        .filter(|((p, _, _), _)| p == plural)
                        .map(|(_, o)| o.clone())
                        .collect()
                };
                objects
                    .iter()
                    .filter(|o| matches(o))
                    .map(|o| line("ADDED", o))
                    .collect()
            }
        };
        (initial, fake.events.subscribe(), inner.version)
    };
    let (kind, api_version) = match store::kind_by_plural(plural) {
        Some(kind) => (kind.kind, kind.api_version()),
        None => ("Pod", "v1".to_string()),
    };
    let bookmark = move |version: u64, initial_end: bool| {
        let mut object = json!({ "kind": kind, "apiVersion": api_version,
                                 "metadata": { "resourceVersion": version.to_string() } });
        if initial_end {
            object["metadata"]["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        json!({ "type": "BOOKMARK", "object": object }).to_string() + "\n"
    };
    if flag(params, "sendInitialEvents") {
        initial.push(bookmark(version, true));
    }
    let timeout = param(params, "timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64);
    let plural = plural.to_string();
    let state = Arc::clone(fake);
    let stream = async_stream(initial, move |sender| async move {
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = ticks.tick(), if bookmarks => {
                    let version = state.inner.lock().unwrap().version;
                    if sender.send(bookmark(version, false)).await.is_err() { break; }
                }
                event = events.recv() => match event {
                    Ok((p, kind, object)) if p == plural && matches(&object) => {
                        if sender.send(line(&kind, &object)).await.is_err() { break; }
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

async fn all_pods(
    State(fake): State<Arc<Fake>>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    list_or_watch(&fake, None, &params, &headers)
}

async fn pods(
    State(fake): State<Arc<Fake>>,
    UrlPath(namespace): UrlPath<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    list_or_watch(&fake, Some(namespace), &params, &headers)
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
                ..FakePod::default()
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
    headers: HeaderMap,
) -> Response {
    match fake
        .inner
        .lock()
        .unwrap()
        .pods
        .get(&(namespace.clone(), name.clone()))
    {
        Some(pod) if table::wanted(&headers) => {
            let version = pod.object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("");
            axum::Json(table::table(
                "pods",
                std::slice::from_ref(&pod.object),
                version,
            ))
            .into_response()
        }
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
    match fake.delete_pod(&key, grace) {
        Some(object) => axum::Json(object).into_response(),
        None => not_found(&namespace, &name),
    }
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
    if let Some(invalid) = illegal_base64(&secret, &name) {
        return invalid;
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

/// The API server's answer to a Secret whose `data` is not base64, if it is not.
fn illegal_base64(secret: &Value, name: &str) -> Option<Response> {
    let (key, _) = secret["data"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(_, value)| value.as_str().and_then(base64_decode).is_none())?;
    Some(status(
        422,
        "Invalid",
        format!("Secret \"{name}\" is invalid: data[{key}]: illegal base64 data"),
    ))
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

async fn patch_secret(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
    Query(params): Params,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let kind = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if kind == "application/apply-patch+yaml" {
        return apply_secret(&fake, namespace, name, &params, &body);
    }
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

/// Server-side apply of a Secret, for one field manager: the Secret is made when missing, else its
/// labels, annotations, type and data become what is applied (data keys applied before and left out
/// now go, as server-side apply removes a manager's fields it no longer sets).
fn apply_secret(
    fake: &Fake,
    namespace: String,
    name: String,
    params: &[(String, String)],
    body: &[u8],
) -> Response {
    let Some(manager) = param(params, "fieldManager") else {
        return status(
            400,
            "BadRequest",
            "PATCH, application/apply-patch+yaml requires fieldManager to be set".into(),
        );
    };
    let Ok(applied) = serde_json::from_slice::<Value>(body) else {
        return status(
            400,
            "BadRequest",
            "the applied configuration is not JSON".into(),
        );
    };
    if applied["metadata"]["name"].as_str() != Some(name.as_str()) {
        return status(
            400,
            "BadRequest",
            format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                applied["metadata"]["name"]
            ),
        );
    }
    if let Some(invalid) = illegal_base64(&applied, &name) {
        return invalid;
    }
    let dry = param(params, "dryRun") == Some("All");
    let key = (namespace.clone(), name.clone());
    let mut inner = fake.inner.lock().unwrap();
    let version = inner.next_version();
    let created = !inner.secrets.contains_key(&key);
    let mut secret = match inner.secrets.get(&key) {
        Some(secret) => secret.clone(),
        None => json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name, "namespace": namespace, "uid": inner.next_uid(),
                          "creationTimestamp": now() },
        }),
    };
    for field in ["labels", "annotations"] {
        if !applied["metadata"][field].is_null() {
            secret["metadata"][field] = applied["metadata"][field].clone();
        }
    }
    secret["data"] = applied["data"].clone();
    secret["type"] = applied.get("type").cloned().unwrap_or(json!("Opaque"));
    secret["metadata"]["resourceVersion"] = json!(version);
    secret["metadata"]["managedFields"] = json!([{
        "manager": manager, "operation": "Apply", "apiVersion": "v1", "time": now(),
        "fieldsType": "FieldsV1", "fieldsV1": { "f:data": {}, "f:type": {} },
    }]);
    if !dry {
        inner.secrets.insert(key, secret.clone());
    }
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (code, axum::Json(secret)).into_response()
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
    let tail = param(&params, "tailLines").and_then(|n| n.parse::<usize>().ok());
    let stamped = flag(&params, "timestamps");
    // Log lines as asked: the last `tailLines`, each prefixed with a time for `timestamps` (the time
    // of the request: the fake does not keep when a line was written).
    let shape = move |text: String| {
        let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
        if let Some(tail) = tail {
            lines = lines.split_off(lines.len().saturating_sub(tail));
        }
        let time = now().replace('Z', ".000000000Z");
        lines
            .into_iter()
            .map(|line| {
                if stamped {
                    format!("{time} {line}")
                } else {
                    line.to_string()
                }
            })
            .collect::<String>()
    };
    if flag(&params, "previous") {
        let previous = fake
            .inner
            .lock()
            .unwrap()
            .pods
            .get(&(namespace.clone(), name.clone()))
            .and_then(|pod| pod.previous_log.clone());
        return match previous {
            Some(log) => shape(String::from_utf8_lossy(&log).into_owned()).into_response(),
            None => status(
                400,
                "BadRequest",
                format!("previous terminated container \"main\" in pod \"{name}\" not found"),
            ),
        };
    }
    let Some(container) = container else {
        return status(
            400,
            "BadRequest",
            format!("container \"main\" in pod \"{name}\" is waiting to start: ContainerCreating"),
        );
    };
    let log = shape(String::from_utf8_lossy(&container.log()).into_owned());
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
                Some(Ok(Message::Binary(data))) if data.first() == Some(&4) => container.resize(&data[1..]),
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
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    fake.calls
        .lock()
        .unwrap()
        .push((request.method().to_string(), target));
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
        .fallback(dispatch)
        .layer(delayed)
        .with_state(state)
}

/// Everything the routes above do not name: the generic store, discovery of its groups, the proxies,
/// and the OpenAPI documents kubectl validates with.
async fn dispatch(
    State(fake): State<Arc<Fake>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let segments: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(String::from)
        .collect();
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["openapi", ..] => return openapi::serve(&parts[1..]),
        ["api", "v1", ..] => ("", "v1", &segments[2..]),
        ["apis", group, version, ..] => (*group, *version, &segments[3..]),
        _ => return store::no_resource(),
    };
    if rest.is_empty() {
        return discovery::group_resources(group, version).unwrap_or_else(store::no_resource);
    }
    let (namespace, rest) = match rest {
        [namespaces, namespace, rest @ ..] if namespaces == "namespaces" && !rest.is_empty() => {
            (Some(namespace.clone()), rest)
        }
        rest => (None, rest),
    };
    let plural = rest[0].as_str();
    if let (Some(namespace), Some(target), Some("proxy")) =
        (&namespace, rest.get(1), rest.get(2).map(String::as_str))
        && group.is_empty()
    {
        let tail = &rest[3..];
        match plural {
            "services" => {
                return network::service_proxy(
                    &fake, namespace, target, tail, &method, &uri, &headers, body,
                )
                .await;
            }
            "pods" => {
                return network::pod_proxy(
                    &fake, namespace, target, tail, &method, &uri, &headers, body,
                )
                .await;
            }
            _ => {}
        }
    }
    match store::KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
    {
        Some(kind) => {
            store::serve(
                &fake,
                kind,
                namespace,
                &rest[1..],
                &method,
                &uri,
                &headers,
                body,
            )
            .await
        }
        None => store::no_resource(),
    }
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
                let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
                let (listener, gateway, proxy) = (
                    bind().await.unwrap(),
                    bind().await.unwrap(),
                    bind().await.unwrap(),
                );
                let port = listener.local_addr().unwrap().port();
                let (events, _) = broadcast::channel(4096);
                let seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1;
                let state = Arc::new(Fake {
                    inner: Mutex::new(Inner::default()),
                    events,
                    port,
                    gateway_port: gateway.local_addr().unwrap().port(),
                    proxy_port: proxy.local_addr().unwrap().port(),
                    wake: tokio::sync::Notify::new(),
                    controller_delay_ms: AtomicU64::new(20),
                    stopped: AtomicBool::new(false),
                    rng: AtomicU64::new(seed),
                    calls: Mutex::new(Vec::new()),
                    images: Mutex::new(BTreeMap::new()),
                    hits: Mutex::new(BTreeMap::new()),
                    latency_ms: AtomicU64::new(latency_ms),
                });
                ready.send(Arc::clone(&state)).unwrap();
                let data_plane = Router::new()
                    .fallback(network::gateway_handler)
                    .with_state(Arc::clone(&state));
                tokio::spawn(async move { axum::serve(gateway, data_plane).await });
                let network = Router::new()
                    .fallback(network::network_proxy)
                    .with_state(Arc::clone(&state));
                tokio::spawn(async move { axum::serve(proxy, network).await });
                tokio::spawn(controllers::run(Arc::clone(&state)));
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

    /// A Gateway `namespace/name` whose one HTTP listener is this fake's data plane
    /// (`gateway_port`), for host names under `*.DOMAIN`, taking routes from every namespace: YAML
    /// for `kubectl apply -f`.
    pub fn gateway_manifest(&self, namespace: &str, name: &str, domain: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  \
             namespace: {namespace}\nspec:\n  gatewayClassName: fake\n  listeners:\n  - name: http\n    \
             protocol: HTTP\n    port: {}\n    allowedRoutes:\n      namespaces:\n        from: All\n    \
             hostname: \"*.{domain}\"\n",
            self.gateway_port()
        )
    }

    /// Registers an image: a container of `image` without a `command` runs `argv` (then its `args`)
    /// in `dir`. A container without a command whose image is not registered cannot be pulled.
    pub fn add_image(&self, image: &str, argv: &[&str], dir: &Path) {
        self.state.images.lock().unwrap().insert(
            image.to_string(),
            (
                argv.iter().map(|w| w.to_string()).collect(),
                dir.to_path_buf(),
            ),
        );
    }

    /// The gateway data plane's loopback port: give a Gateway's listener this `port`, and send
    /// requests here with the route's hostname as `Host`.
    pub fn gateway_port(&self) -> u16 {
        self.state.gateway_port
    }

    /// The cluster network's HTTP forward proxy (`http://127.0.0.1:PORT`), which resolves
    /// `NAME.NS.svc.cluster.local`, `NAME.NS.svc`, `NAME.NS` and routes' hostnames; pods get it as
    /// `http_proxy`.
    pub fn network_proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.state.proxy_port)
    }

    /// Requests the gateway sent to each backend Service, keyed `namespace/service`.
    pub fn gateway_hits(&self) -> BTreeMap<String, u64> {
        self.state.hits.lock().unwrap().clone()
    }

    /// How long the controllers wait after a change before they act (20 ms unless set).
    pub fn set_controller_delay(&self, delay: Duration) {
        self.state
            .controller_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Every stored object of a resource (`"deployments"`, `"httproutes"`, `"pods"`, `"secrets"`...).
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        let inner = self.state.inner.lock().unwrap();
        match plural {
            "pods" => inner.pods.values().map(|p| p.object.clone()).collect(),
            "secrets" => inner.secrets.values().cloned().collect(),
            _ => inner
                .objects
                .iter()
                .filter(|((p, _, _), _)| p == plural)
                .map(|(_, o)| o.clone())
                .collect(),
        }
    }

    /// Every API request served so far, in order, as (method, path and query).
    pub fn calls(&self) -> Vec<(String, String)> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Forgets the requests served so far.
    pub fn clear_calls(&self) {
        self.state.calls.lock().unwrap().clear();
    }

    /// Kills the process of pod `namespace/name`'s container, as a crash would.
    pub fn kill_pod_process(&self, namespace: &str, name: &str) {
        let container = self
            .state
            .inner
            .lock()
            .unwrap()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .and_then(|pod| pod.container.clone());
        if let Some(container) = container {
            container.signal(libc::SIGKILL);
        }
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
        self.state.stopped.store(true, Ordering::Relaxed);
        for pod in self.state.inner.lock().unwrap().pods.values() {
            if let Some(container) = &pod.container {
                container.signal(libc::SIGKILL);
            }
        }
    }
}
