//! The supervisor: a hidden mode of the `mahavishnu` binary, one per sandcastle and region (and one for
//! a sandcastle's front door). It outlives the CLI, answers on a Unix socket, keeps what it runs in a
//! state file (never a secret), and when started again after a crash it ends what the last one left and
//! starts it again: revisions without secrets at once, the others when an apply hands the secrets over.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mahavishnu_core::Timestamp;
use mahavishnu_core::deploy::{
    FrontDoorRegion, FrontDoorStatus, Health, Observed, ObservedRevision, ObservedService,
    RevisionSpec, ServiceKind,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, broadcast};

use crate::copies::{self, Copy, LogLine, lock};
use crate::protocol::{Address, Reply, Request, Snapshot};
use crate::router::{RouteRevision, RouteTable, Router, Upstream};

/// A copy that has restarted this often without ever answering is in a crash loop.
pub const CRASH_LOOP: u32 = 3;

/// Runs the supervisor at `address` until it is shut down. Prints `ready <pid>` (or `error: <reason>`)
/// as its first line on stdout; returns the process exit code.
pub fn run(address: Address) -> i32 {
    let lock = match prepare(&address) {
        Ok(lock) => lock,
        Err(message) => {
            println!("error: {message}");
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(512 * 1024)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            println!("error: cannot start the supervisor's runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(async move {
        let listener = match bind(&address) {
            Ok(listener) => listener,
            Err(message) => {
                println!("error: {message}");
                return 1;
            }
        };
        let supervisor = Arc::new(Supervisor::new(address));
        let metrics_port = match supervisor.restore().await {
            Ok(port) => port,
            Err(message) => {
                println!("error: {message}");
                return 1;
            }
        };
        if let Err(message) = supervisor.serve_metrics(metrics_port).await {
            println!("error: {message}");
            return 1;
        }
        let _ = mahavishnu_core::paths::write_private_file(
            &supervisor.address.dir.join("supervisor.pid"),
            std::process::id().to_string().as_bytes(),
        );
        println!("ready {}", std::process::id());
        let _ = std::io::stdout().flush();
        detach_stdio(&supervisor.address);
        supervisor.serve(listener).await
    });
    drop(lock);
    code
}

fn prepare(address: &Address) -> Result<std::fs::File, String> {
    for dir in [&address.dir, &address.logs()] {
        mahavishnu_core::paths::ensure_private_dir(dir).map_err(|e| e.to_string())?;
    }
    if let Some(parent) = address.socket.parent() {
        mahavishnu_core::paths::ensure_private_dir(parent).map_err(|e| e.to_string())?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(address.lock())
        .map_err(|e| format!("cannot open {}: {e}", address.lock().display()))?;
    // SAFETY: flock on a descriptor this process owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "a supervisor already runs for {}",
            address.dir.display()
        ));
    }
    Ok(file)
}

fn bind(address: &Address) -> Result<UnixListener, String> {
    let socket = &address.socket;
    let _ = std::fs::remove_file(socket);
    // SAFETY: umask only changes this process's file-creation mask.
    let previous = unsafe { libc::umask(0o077) };
    let bound = UnixListener::bind(socket);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(previous) };
    bound.map_err(|e| format!("cannot listen on {}: {e}", socket.display()))
}

fn detach_stdio(address: &Address) {
    let log =
        mahavishnu_core::paths::create_private_file(&address.supervisor_log()).or_else(|_| {
            std::fs::File::options()
                .append(true)
                .open(address.supervisor_log())
        });
    if let (Ok(null), Ok(log)) = (
        std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/null"),
        log,
    ) {
        // SAFETY: dup2 onto the standard descriptors of this process, which it owns.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(log.as_raw_fd(), 2);
        }
    }
}

/// What the state file keeps: enough to start everything again, never a secret.
#[derive(Default, Serialize, Deserialize)]
struct SavedState {
    services: Vec<SavedService>,
    front_door: Option<SavedFrontDoor>,
    /// The port of the metrics endpoint, kept so that a scraper's configuration stays right.
    #[serde(default)]
    metrics_port: Option<u16>,
    /// The router ports of destroyed services, given back when the service returns, so that its
    /// dependents' URL stays right.
    #[serde(default)]
    retired_ports: BTreeMap<String, u16>,
}

#[derive(Serialize, Deserialize)]
struct SavedService {
    name: String,
    kind: ServiceKind,
    port: Option<u16>,
    revisions: Vec<SavedRevision>,
}

#[derive(Serialize, Deserialize)]
struct SavedRevision {
    /// A job's exit code once it has ended: a job that ran is not run again by a restart.
    #[serde(default)]
    finished: Option<i32>,
    name: String,
    /// Its tag and the port of the tag's router.
    #[serde(default)]
    tag: Option<(String, u16)>,
    spec: RevisionSpec,
    weight: u8,
    created: Timestamp,
    /// Each copy's port and, while it runs, its process (pid and start time).
    copies: Vec<SavedCopy>,
}

/// A copy's port and, while it runs, its process: pid and start time in clock ticks.
type SavedCopy = (Option<u16>, Option<(u32, u64)>);

#[derive(Clone, Serialize, Deserialize)]
struct SavedFrontDoor {
    service: String,
    port: u16,
    regions: Vec<(String, String)>,
    health_path: String,
}

struct Revision {
    name: String,
    /// Its tag, with the router that reaches this revision alone.
    tag: Option<(String, Router)>,
    spec: Arc<RevisionSpec>,
    weight: u8,
    created: Timestamp,
    copies: Vec<Arc<Copy>>,
    ports: Vec<Option<u16>>,
    /// The supervisor restarted and the revision's secrets, which are never stored, must be handed
    /// over again by an apply before it can run.
    waiting_for_secrets: bool,
}

struct Service {
    kind: ServiceKind,
    router: Option<Router>,
    revisions: Vec<Revision>,
}

struct FrontDoor {
    saved: SavedFrontDoor,
    router: Router,
    healthy: Arc<Mutex<BTreeMap<String, bool>>>,
    stop: Arc<Notify>,
}

struct Supervisor {
    address: Address,
    services: Mutex<BTreeMap<String, Service>>,
    front_door: Mutex<Option<FrontDoor>>,
    generation: AtomicU64,
    metrics_port: Mutex<Option<u16>>,
    retired_ports: Mutex<BTreeMap<String, u16>>,
    /// The processes the state file was last saved with.
    saved_pids: Mutex<Vec<Option<u32>>>,
    shutting_down: std::sync::atomic::AtomicBool,
    lines: broadcast::Sender<LogLine>,
    /// Wakes the route keeper when a copy's health changes.
    changed: Arc<Notify>,
    shutdown: Notify,
}

impl Supervisor {
    fn new(address: Address) -> Supervisor {
        let (lines, _) = broadcast::channel(1024);
        Supervisor {
            address,
            services: Mutex::new(BTreeMap::new()),
            front_door: Mutex::new(None),
            generation: AtomicU64::new(1),
            metrics_port: Mutex::new(None),
            retired_ports: Mutex::new(BTreeMap::new()),
            saved_pids: Mutex::new(Vec::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            lines,
            changed: Arc::new(Notify::new()),
            shutdown: Notify::new(),
        }
    }

    /// Serves the metrics endpoint, on `port` when it is free.
    async fn serve_metrics(self: &Arc<Self>, port: Option<u16>) -> Result<(), String> {
        let token = crate::metrics_http::token(&self.address.dir)?;
        let supervisor = Arc::clone(self);
        let port = crate::metrics_http::serve(
            port.unwrap_or(0),
            token,
            Arc::new(move || supervisor.metrics_text()),
        )
        .await
        .map_err(|e| format!("cannot serve metrics on a loopback port: {e}"))?;
        *lock(&self.metrics_port) = Some(port);
        self.save();
        Ok(())
    }

    /// Starts again what the state file says ran, after ending what a crashed supervisor left.
    /// Returns the metrics port it had.
    async fn restore(&self) -> Result<Option<u16>, String> {
        let Ok(bytes) = std::fs::read(self.address.state()) else {
            return Ok(None);
        };
        let saved: SavedState = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "the state file {} is damaged ({e}); move it away to start afresh",
                self.address.state().display()
            )
        })?;
        for service in &saved.services {
            for revision in &service.revisions {
                for (_, process) in &revision.copies {
                    if let Some((pid, ticks)) = process {
                        copies::end_leftover(*pid, *ticks);
                    }
                }
            }
        }
        for saved_service in saved.services {
            let router = match saved_service.port {
                Some(port) => Some(bind_router(port).await?),
                None => None,
            };
            let mut service = Service {
                kind: saved_service.kind,
                router,
                revisions: Vec::new(),
            };
            for saved_revision in saved_service.revisions {
                let spec = Arc::new(saved_revision.spec);
                let ports: Vec<Option<u16>> = saved_revision
                    .copies
                    .iter()
                    .map(|(port, _)| *port)
                    .collect();
                let finished = saved_revision
                    .finished
                    .filter(|_| spec.kind == ServiceKind::Job);
                let waiting = finished.is_none() && !spec.secrets.is_empty();
                let copies = match finished {
                    Some(code) => vec![Copy::finished(0, code, Arc::clone(&self.changed))],
                    None if waiting => Vec::new(),
                    None => self.start_copies(&saved_revision.name, &spec, &ports, BTreeMap::new()),
                };
                let tag = match saved_revision.tag {
                    Some((tag, port)) => Some((tag, bind_router(port).await?)),
                    None => None,
                };
                service.revisions.push(Revision {
                    tag,
                    name: saved_revision.name,
                    spec,
                    weight: saved_revision.weight,
                    created: saved_revision.created,
                    copies,
                    ports,
                    waiting_for_secrets: waiting,
                });
            }
            lock(&self.services).insert(saved_service.name, service);
        }
        if let Some(door) = saved.front_door {
            self.set_front_door(door).await?;
        }
        *lock(&self.retired_ports) = saved.retired_ports;
        Ok(saved.metrics_port)
    }

    fn save(&self) {
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let services = lock(&self.services);
        let state = SavedState {
            services: services
                .iter()
                .map(|(name, service)| SavedService {
                    name: name.clone(),
                    kind: service.kind,
                    port: service.router.as_ref().map(Router::port),
                    revisions: service
                        .revisions
                        .iter()
                        .map(|revision| SavedRevision {
                            finished: (revision.spec.kind == ServiceKind::Job)
                                .then(|| revision.copies.first().map(|copy| copy.status()))
                                .flatten()
                                .filter(|status| status.pid.is_none())
                                .and_then(|status| status.last_exit),
                            tag: revision
                                .tag
                                .as_ref()
                                .map(|(tag, router)| (tag.clone(), router.port())),
                            name: revision.name.clone(),
                            spec: (*revision.spec).clone(),
                            weight: revision.weight,
                            created: revision.created,
                            copies: revision
                                .ports
                                .iter()
                                .enumerate()
                                .map(|(index, port)| {
                                    let process = revision.copies.get(index).and_then(|copy| {
                                        let status = copy.status();
                                        status.pid.zip(status.start_ticks)
                                    });
                                    (*port, process)
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
            front_door: lock(&self.front_door)
                .as_ref()
                .map(|door| door.saved.clone()),
            metrics_port: *lock(&self.metrics_port),
            retired_ports: lock(&self.retired_ports).clone(),
        };
        drop(services);
        if let Ok(bytes) = serde_json::to_vec_pretty(&state) {
            let temporary = self.address.state().with_extension("json.new");
            if mahavishnu_core::paths::write_private_file(&temporary, &bytes).is_ok() {
                let _ = std::fs::rename(&temporary, self.address.state());
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn start_copies(
        &self,
        name: &str,
        spec: &Arc<RevisionSpec>,
        ports: &[Option<u16>],
        secrets: BTreeMap<String, String>,
    ) -> Vec<Arc<Copy>> {
        let run = copies::RevisionRun {
            name: name.to_string(),
            spec: Arc::clone(spec),
            secrets: Arc::new(secrets),
            logs: self.address.logs(),
            lines: self.lines.clone(),
            changed: Arc::clone(&self.changed),
        };
        ports
            .iter()
            .enumerate()
            .map(|(index, port)| Copy::start(index, *port, &run))
            .collect()
    }

    async fn serve(self: Arc<Self>, listener: UnixListener) -> i32 {
        let keeper = Arc::clone(&self);
        tokio::spawn(async move { keeper.keep_routes().await });
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let supervisor = Arc::clone(&self);
                        tokio::spawn(async move { supervisor.handle(stream).await });
                    }
                }
                _ = self.shutdown.notified() => break,
            }
        }
        let _ = std::fs::remove_file(&self.address.socket);
        0
    }

    /// Follows copies' health into the routers, and saves the state when processes change.
    async fn keep_routes(&self) {
        loop {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let names: Vec<String> = lock(&self.services).keys().cloned().collect();
            for name in names {
                self.update_routes(&name);
            }
            self.save_if_processes_changed();
        }
    }

    fn save_if_processes_changed(&self) {
        let pids: Vec<Option<u32>> = lock(&self.services)
            .values()
            .flat_map(|service| service.revisions.iter())
            .flat_map(|revision| revision.copies.iter().map(|copy| copy.status().pid))
            .collect();
        let changed = {
            let mut saved = lock(&self.saved_pids);
            let changed = *saved != pids;
            *saved = pids;
            changed
        };
        if changed {
            self.save();
        }
    }

    fn update_routes(&self, service_name: &str) {
        let services = lock(&self.services);
        let Some(service) = services.get(service_name) else {
            return;
        };
        let upstreams_of = |revision: &Revision| -> Vec<Upstream> {
            revision
                .copies
                .iter()
                .filter(|copy| copy.status().healthy)
                .filter_map(|copy| copy.port)
                .map(|port| Upstream {
                    addr: ([127, 0, 0, 1], port).into(),
                })
                .collect()
        };
        for revision in &service.revisions {
            if let Some((_, tagged)) = &revision.tag {
                tagged.set_routes(RouteTable {
                    revisions: vec![RouteRevision {
                        name: revision.name.clone(),
                        weight: 100,
                        upstreams: upstreams_of(revision),
                    }],
                });
            }
        }
        let Some(router) = &service.router else {
            return;
        };
        let revisions = service
            .revisions
            .iter()
            .map(|revision| RouteRevision {
                name: revision.name.clone(),
                weight: revision.weight,
                upstreams: upstreams_of(revision),
            })
            .collect();
        router.set_routes(RouteTable { revisions });
    }

    async fn handle(self: Arc<Self>, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let request: Request = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(e) => {
                let _ = reply(&mut write, Reply::Error(format!("not a request: {e}"))).await;
                return;
            }
        };
        if let Request::Logs {
            service,
            revision,
            tail,
            follow,
        } = request
        {
            self.stream_logs(&mut write, &service, revision.as_deref(), tail, follow)
                .await;
            return;
        }
        let shutting_down = matches!(request, Request::Shutdown);
        let answer = match self.answer(request).await {
            Ok(value) => Reply::Ok(value),
            Err(message) => Reply::Error(message),
        };
        let _ = reply(&mut write, answer).await;
        if shutting_down {
            self.shutdown.notify_one();
        }
    }

    async fn answer(&self, request: Request) -> Result<serde_json::Value, String> {
        match request {
            Request::Observe => to_json(&self.snapshot()),
            Request::Deploy {
                name,
                spec,
                secrets,
            } => {
                let url = self.deploy(name, *spec, secrets).await?;
                to_json(&serde_json::json!({ "url": url }))
            }
            Request::SetTraffic { service, weights } => {
                self.set_traffic(&service, &weights)?;
                to_json(&serde_json::json!({}))
            }
            Request::SetTag {
                service,
                revision,
                tag,
            } => {
                let url = self.set_tag(&service, &revision, tag).await?;
                to_json(&url)
            }
            Request::Destroy { service, revision } => {
                self.destroy(&service, revision.as_deref())?;
                to_json(&serde_json::json!({}))
            }
            Request::Logs { .. } => Err("logs are streamed".into()),
            Request::Metrics => to_json(&self.metrics_text()),
            Request::ExpectProbe {
                service,
                path,
                nonce,
            } => {
                let services = lock(&self.services);
                let router = services
                    .get(&service)
                    .and_then(|service| service.router.as_ref())
                    .ok_or_else(|| format!("`{service}` takes no pushes here"))?;
                router.expect_probe(&path, &nonce);
                to_json(&serde_json::json!({}))
            }
            Request::ProbeAnswer { nonce } => {
                let services = lock(&self.services);
                let answer = services
                    .values()
                    .filter_map(|service| service.router.as_ref())
                    .find_map(|router| router.probe_answer(&nonce));
                to_json(&answer)
            }
            Request::SetFrontDoor {
                service,
                port,
                regions,
                health_path,
            } => {
                let url = self
                    .set_front_door(SavedFrontDoor {
                        service,
                        port,
                        regions,
                        health_path,
                    })
                    .await?;
                self.save();
                to_json(&url)
            }
            Request::FrontDoor => to_json(&self.front_door_status()),
            Request::Request { url } => {
                let code = crate::http::get_status(&url, Duration::from_secs(5)).await?;
                to_json(&code)
            }
            Request::Shutdown => {
                // Nothing is saved from here on, and the answer waits until every process has
                // ended (each gets its grace), so that the caller can remove the directory.
                self.shutting_down.store(true, Ordering::SeqCst);
                let stopped = self.stop_everything();
                let _ = std::fs::remove_file(self.address.state());
                let patience = std::time::Instant::now();
                while stopped.iter().any(|copy| copy.status().state != "stopped")
                    && patience.elapsed() < Duration::from_secs(10)
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                to_json(&serde_json::json!({}))
            }
        }
    }

    /// Every router's counters in one Prometheus text exposition (each family described once).
    fn metrics_text(&self) -> String {
        let services = lock(&self.services);
        let door = lock(&self.front_door);
        let door_name = door
            .as_ref()
            .map(|door| format!("{}@front-door", door.saved.service));
        let routers = services
            .iter()
            .filter_map(|(name, service)| {
                service
                    .router
                    .as_ref()
                    .map(|router| (name.as_str(), router))
            })
            .chain(
                door.as_ref()
                    .zip(door_name.as_deref())
                    .map(|(door, name)| (name, &door.router)),
            );
        let mut text = String::new();
        Router::prometheus_all(routers, &mut text);
        text
    }

    fn snapshot(&self) -> Snapshot {
        let services = lock(&self.services);
        let observed = services
            .iter()
            .map(|(name, service)| {
                let metrics = service
                    .router
                    .as_ref()
                    .map(Router::metrics)
                    .unwrap_or_default();
                let revisions = service
                    .revisions
                    .iter()
                    .map(|revision| ObservedRevision {
                        name: revision.name.clone(),
                        spec: (*revision.spec).clone(),
                        weight: revision.weight,
                        tag: revision.tag.as_ref().map(|(tag, _)| tag.clone()),
                        tag_url: revision
                            .tag
                            .as_ref()
                            .map(|(_, router)| format!("http://127.0.0.1:{}", router.port())),
                        health: health_of(revision),
                        copies: revision
                            .copies
                            .iter()
                            .map(|copy| copy.observed(&revision.spec))
                            .collect(),
                        metrics: metrics.get(&revision.name).cloned(),
                        created: revision.created.to_string(),
                    })
                    .collect();
                (
                    name.clone(),
                    ObservedService {
                        name: name.clone(),
                        kind: service.kind,
                        url: service
                            .router
                            .as_ref()
                            .map(|router| format!("http://127.0.0.1:{}", router.port())),
                        revisions,
                    },
                )
            })
            .collect();
        drop(services);
        Snapshot {
            pid: std::process::id(),
            observed: Observed {
                services: observed,
                version: self.generation.load(Ordering::SeqCst).to_string(),
                exists: true,
                metrics_url: lock(&self.metrics_port)
                    .map(|port| format!("http://127.0.0.1:{port}/metrics")),
            },
            front_door: self.front_door_status(),
        }
    }

    async fn deploy(
        &self,
        name: String,
        spec: RevisionSpec,
        secrets: BTreeMap<String, String>,
    ) -> Result<Option<String>, String> {
        let service_name = spec.service.clone();
        let needs_router = spec.listens
            && lock(&self.services)
                .get(&service_name)
                .is_none_or(|service| service.router.is_none());
        let new_router = if needs_router {
            let retired = lock(&self.retired_ports).get(&service_name).copied();
            let router = match retired {
                Some(port) => match Router::bind(port).await {
                    Ok(router) => router,
                    Err(_) => bind_router(0).await?,
                },
                None => bind_router(0).await?,
            };
            lock(&self.retired_ports).remove(&service_name);
            Some(router)
        } else {
            None
        };
        let mut services = lock(&self.services);
        let service = services
            .entry(service_name.clone())
            .or_insert_with(|| Service {
                kind: spec.kind,
                router: None,
                revisions: Vec::new(),
            });
        if service.router.is_none() {
            service.router = new_router;
        }
        service.kind = spec.kind;
        let url = service
            .router
            .as_ref()
            .map(|router| format!("http://127.0.0.1:{}", router.port()));
        if let Some(existing) = service
            .revisions
            .iter_mut()
            .find(|revision| revision.name == name)
        {
            let failed_job = existing.spec.kind == ServiceKind::Job
                && existing
                    .copies
                    .iter()
                    .any(|copy| copy.status().last_exit.is_some_and(|code| code != 0));
            if existing.waiting_for_secrets || failed_job {
                for copy in &existing.copies {
                    copy.stop();
                }
                existing.copies =
                    self.start_copies(&name, &existing.spec, &existing.ports, secrets);
                existing.waiting_for_secrets = false;
            }
            drop(services);
            self.save();
            return Ok(url);
        }
        let count = if spec.kind == ServiceKind::Job {
            1
        } else {
            spec.scale.min.max(1) as usize
        };
        let mut ports = Vec::with_capacity(count);
        for _ in 0..count {
            ports.push(if spec.listens {
                Some(free_port()?)
            } else {
                None
            });
        }
        let spec = Arc::new(spec);
        let copies = self.start_copies(&name, &spec, &ports, secrets);
        service.revisions.push(Revision {
            tag: None,
            name,
            spec,
            weight: 0,
            created: Timestamp::now(),
            copies,
            ports,
            waiting_for_secrets: false,
        });
        drop(services);
        self.save();
        Ok(url)
    }

    fn set_traffic(&self, service_name: &str, weights: &[(String, u8)]) -> Result<(), String> {
        let total: u32 = weights.iter().map(|(_, weight)| u32::from(*weight)).sum();
        if total != 100 {
            return Err(format!("the weights add up to {total}, not 100"));
        }
        {
            let mut services = lock(&self.services);
            let service = services
                .get_mut(service_name)
                .ok_or_else(|| format!("no service `{service_name}` runs here"))?;
            for (name, _) in weights {
                if !service
                    .revisions
                    .iter()
                    .any(|revision| &revision.name == name)
                {
                    return Err(format!("`{service_name}` has no revision `{name}`"));
                }
            }
            for revision in &mut service.revisions {
                revision.weight = weights
                    .iter()
                    .find(|(name, _)| name == &revision.name)
                    .map_or(0, |(_, weight)| *weight);
            }
        }
        self.update_routes(service_name);
        self.save();
        Ok(())
    }

    /// Tags a revision (moving the tag from another revision of the service), or takes its tag away.
    /// Returns the tag's URL.
    async fn set_tag(
        &self,
        service_name: &str,
        revision: &str,
        tag: Option<String>,
    ) -> Result<Option<String>, String> {
        if let Some(tag) = &tag
            && mahavishnu_core::deploy::check_name(tag).is_err()
        {
            return Err(format!(
                "`{tag}` is not a tag: use lower-case letters, digits and `-`, starting with a letter"
            ));
        }
        let known = {
            let services = lock(&self.services);
            let service = services
                .get(service_name)
                .ok_or_else(|| format!("no service `{service_name}` runs here"))?;
            if service.router.is_none() {
                return Err(format!(
                    "`{service_name}` takes no requests, so it has no tags"
                ));
            }
            service.revisions.iter().any(|r| r.name == revision)
        };
        if !known {
            return Err(format!("`{service_name}` has no revision `{revision}`"));
        }
        let router = match &tag {
            Some(_) => Some(bind_router(0).await?),
            None => None,
        };
        let url = router
            .as_ref()
            .map(|router| format!("http://127.0.0.1:{}", router.port()));
        {
            let mut services = lock(&self.services);
            let Some(service) = services.get_mut(service_name) else {
                return Err(format!("no service `{service_name}` runs here"));
            };
            for other in &mut service.revisions {
                let moved = other.name == revision
                    || (tag.is_some() && other.tag.as_ref().map(|(t, _)| t) == tag.as_ref());
                if moved && let Some((_, old)) = other.tag.take() {
                    old.shutdown();
                }
            }
            if let (Some(tag), Some(router)) = (tag, router)
                && let Some(target) = service.revisions.iter_mut().find(|r| r.name == revision)
            {
                target.tag = Some((tag, router));
            }
        }
        self.update_routes(service_name);
        self.save();
        Ok(url)
    }

    fn destroy(&self, service_name: &str, revision: Option<&str>) -> Result<(), String> {
        let mut services = lock(&self.services);
        let Some(service) = services.get_mut(service_name) else {
            return Err(format!("no service `{service_name}` runs here"));
        };
        match revision {
            Some(name) => {
                let index = service
                    .revisions
                    .iter()
                    .position(|revision| revision.name == name)
                    .ok_or_else(|| format!("`{service_name}` has no revision `{name}`"))?;
                let weight = service.revisions[index].weight;
                if weight > 0 {
                    return Err(format!(
                        "`{name}` serves {weight} % of `{service_name}`'s traffic; release another \
                         revision first, or destroy the whole service"
                    ));
                }
                let removed = service.revisions.remove(index);
                for copy in &removed.copies {
                    copy.stop();
                }
                if let Some((_, router)) = &removed.tag {
                    router.shutdown();
                }
            }
            None => {
                let removed = services.remove(service_name);
                for revision in removed.iter().flat_map(|service| service.revisions.iter()) {
                    for copy in &revision.copies {
                        copy.stop();
                    }
                    if let Some((_, router)) = &revision.tag {
                        router.shutdown();
                    }
                }
                if let Some(router) = removed.and_then(|service| service.router) {
                    lock(&self.retired_ports).insert(service_name.to_string(), router.port());
                    router.shutdown();
                }
            }
        }
        drop(services);
        self.update_routes(service_name);
        self.save();
        Ok(())
    }

    /// Stops every copy, router and the front door; returns the copies, to wait for their end.
    fn stop_everything(&self) -> Vec<Arc<Copy>> {
        let mut services = lock(&self.services);
        let mut stopped = Vec::new();
        for service in services.values() {
            for revision in &service.revisions {
                for copy in &revision.copies {
                    copy.stop();
                    stopped.push(Arc::clone(copy));
                }
                if let Some((_, router)) = &revision.tag {
                    router.shutdown();
                }
            }
            if let Some(router) = &service.router {
                router.shutdown();
            }
        }
        services.clear();
        if let Some(door) = lock(&self.front_door).take() {
            door.stop.notify_waiters();
            door.router.shutdown();
        }
        stopped
    }

    async fn stream_logs(
        &self,
        write: &mut tokio::net::unix::OwnedWriteHalf,
        service: &str,
        revision: Option<&str>,
        tail: usize,
        follow: bool,
    ) {
        // Subscribe before reading the files, so that no line falls between the tail and the follow.
        let mut lines = self.lines.subscribe();
        let found: Option<Vec<(String, usize)>> = lock(&self.services).get(service).map(|found| {
            found
                .revisions
                .iter()
                .filter(|candidate| revision.is_none_or(|name| name == candidate.name))
                .map(|candidate| (candidate.name.clone(), candidate.ports.len()))
                .collect()
        });
        let Some(names) = found else {
            let _ = reply(
                write,
                Reply::Error(format!("no service `{service}` runs here")),
            )
            .await;
            return;
        };
        if let Some(name) = revision
            && names.is_empty()
        {
            let _ = reply(
                write,
                Reply::Error(format!("`{service}` has no revision `{name}`")),
            )
            .await;
            return;
        }
        if reply(write, Reply::Ok(serde_json::json!({})))
            .await
            .is_err()
        {
            return;
        }
        let mut collected = Vec::new();
        for (name, count) in &names {
            for index in 0..*count {
                let path = self.address.logs().join(format!("{name}.{index}.log"));
                collected.extend(
                    copies::tail_log(&path, tail)
                        .into_iter()
                        .map(|line| format!("{name}/{index}: {line}")),
                );
            }
        }
        let skip = collected.len().saturating_sub(tail);
        for line in &collected[skip..] {
            if write_line(write, line).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        let wanted: Vec<String> = names.into_iter().map(|(name, _)| name).collect();
        loop {
            match lines.recv().await {
                Ok(line) if wanted.contains(&line.revision) => {
                    if write_line(write, &line.text).await.is_err() {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn set_front_door(&self, saved: SavedFrontDoor) -> Result<String, String> {
        let existing = lock(&self.front_door).take();
        let router = match existing {
            Some(door) if door.saved.port == saved.port || saved.port == 0 => {
                door.stop.notify_waiters();
                door.router.clone()
            }
            Some(door) => {
                door.stop.notify_waiters();
                door.router.shutdown();
                bind_router(saved.port).await?
            }
            None => bind_router(saved.port).await?,
        };
        router.set_failover(true);
        let saved = SavedFrontDoor {
            port: router.port(),
            ..saved
        };
        let healthy = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(Notify::new());
        let url = format!("http://127.0.0.1:{}", router.port());
        // The first round of checks before answering, so that the front door serves from the start.
        check_regions(&saved, &router, &healthy).await;
        tokio::spawn(watch_regions(
            saved.clone(),
            router.clone(),
            Arc::clone(&healthy),
            Arc::clone(&stop),
        ));
        *lock(&self.front_door) = Some(FrontDoor {
            saved,
            router,
            healthy,
            stop,
        });
        Ok(url)
    }

    fn front_door_status(&self) -> Option<FrontDoorStatus> {
        let door = lock(&self.front_door);
        let door = door.as_ref()?;
        let healthy = lock(&door.healthy);
        Some(FrontDoorStatus {
            service: door.saved.service.clone(),
            url: format!("http://127.0.0.1:{}", door.router.port()),
            address: None,
            regions: door
                .saved
                .regions
                .iter()
                .map(|(region, url)| FrontDoorRegion {
                    region: region.clone(),
                    url: url.clone(),
                    healthy: healthy.get(region).copied().unwrap_or(false),
                })
                .collect(),
        })
    }
}

/// How the front door follows its regions: each is checked every quarter second, and only the ones
/// that answer their health check take requests. (The router also retries a refused connection on
/// another region, so a region that dies between two checks costs no request.)
async fn watch_regions(
    door: SavedFrontDoor,
    router: Router,
    healthy: Arc<Mutex<BTreeMap<String, bool>>>,
    stop: Arc<Notify>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.notified() => return,
        }
        check_regions(&door, &router, &healthy).await;
    }
}

/// Checks every region once and routes to the healthy ones. When none answers, it routes to all of
/// them rather than to none: a failing check must not take down regions that still serve.
async fn check_regions(
    door: &SavedFrontDoor,
    router: &Router,
    healthy: &Mutex<BTreeMap<String, bool>>,
) {
    let checks = door.regions.iter().map(|(region, url)| {
        let target = format!("{}{}", url.trim_end_matches('/'), door.health_path);
        async move {
            let answer = crate::http::get_status(&target, Duration::from_secs(1)).await;
            (
                region.clone(),
                matches!(answer, Ok(code) if (200..400).contains(&code)),
            )
        }
    });
    let results = futures::future::join_all(checks).await;
    let any_up = results.iter().any(|(_, up)| *up);
    let table = RouteTable {
        revisions: door
            .regions
            .iter()
            .zip(&results)
            .map(|((region, url), (_, up))| RouteRevision {
                name: region.clone(),
                weight: 1,
                upstreams: if *up || !any_up {
                    upstream_of(url).into_iter().collect()
                } else {
                    Vec::new()
                },
            })
            .collect(),
    };
    router.set_routes(table);
    *lock(healthy) = results.into_iter().collect();
}

fn upstream_of(url: &str) -> Option<Upstream> {
    let rest = url.strip_prefix("http://")?;
    let host = rest.split('/').next()?;
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .ok()?
        .next()?;
    Some(Upstream { addr })
}

/// A revision's health from its copies.
fn health_of(revision: &Revision) -> Health {
    if revision.waiting_for_secrets {
        return Health::Failed(
            "the supervisor restarted, and secrets are never stored: run `mahavishnu deploy apply` \
             to hand them over again"
                .into(),
        );
    }
    let statuses: Vec<copies::CopyStatus> =
        revision.copies.iter().map(|copy| copy.status()).collect();
    if revision.spec.kind == ServiceKind::Job {
        return match statuses.first().and_then(|status| status.last_exit) {
            Some(0) => Health::Succeeded,
            Some(code) => Health::Failed(format!("the job exited with code {code}")),
            None => Health::Starting,
        };
    }
    let up = revision
        .copies
        .iter()
        .zip(&statuses)
        .filter(|(copy, status)| {
            if revision.spec.listens {
                status.healthy
            } else {
                copy.settled(status, &revision.spec)
            }
        })
        .count();
    if up == statuses.len() && up > 0 {
        return Health::Healthy;
    }
    if up > 0 {
        return Health::Degraded(format!("{up} of {} copies healthy", statuses.len()));
    }
    let crashing = statuses
        .iter()
        .find(|status| status.restarts >= CRASH_LOOP && !status.ever_healthy);
    if let Some(status) = crashing {
        let exit = status
            .last_exit
            .map_or_else(String::new, |code| format!(", last exit code {code}"));
        return Health::Unhealthy(format!(
            "crash loop: restarted {} times{exit}",
            status.restarts
        ));
    }
    if let Some(problem) = statuses
        .iter()
        .find_map(|status| status.last_problem.clone())
    {
        if statuses.iter().any(|status| status.ever_healthy) {
            return Health::Unhealthy(problem);
        }
        if statuses.iter().any(|status| status.state == "failed") {
            return Health::Failed(problem);
        }
        // Past its deadline and never healthy: the apply that waited has given up on it.
        let deadline = revision.spec.health.clone().unwrap_or_default().deadline;
        if revision.created.age() > deadline {
            return Health::Unhealthy(format!(
                "not healthy {} s after it started: {problem}",
                deadline.as_secs()
            ));
        }
    }
    Health::Starting
}

async fn bind_router(port: u16) -> Result<Router, String> {
    Router::bind(port).await.map_err(|e| {
        if port == 0 {
            format!("cannot open a router port: {e}")
        } else {
            format!(
                "cannot open the router on its port {port} again: {e}; another program may hold it"
            )
        }
    })
}

/// A free loopback port for a copy. Another program may take it before the copy binds; the copy then
/// fails, and its restart gets the same port, which is the supervisor's to keep.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Writes `value` as one JSON line: an answer, or a log line of a streamed answer.
async fn write_line(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    value: &impl Serialize,
) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

async fn reply(write: &mut tokio::net::unix::OwnedWriteHalf, answer: Reply) -> std::io::Result<()> {
    write_line(write, &answer).await
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}
