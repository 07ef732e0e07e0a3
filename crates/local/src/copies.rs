//! One copy of a revision: a process started on its own port, restarted with backoff when it ends, its
//! health checked with real requests, and its output kept in size-capped log files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mahavishnu_core::deploy::{ObservedCopy, RevisionSpec, ServiceKind};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, broadcast};

/// A log file is rotated (to `.1`, replacing the older one) when it reaches this size.
pub const LOG_CAP: u64 = 1024 * 1024;

/// The first restart waits this long; each crash in a row doubles it up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A copy that ran this long before it ended starts again at the first backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Health checks of a copy that is not healthy yet come this often, so that a new or restarted copy
/// serves as soon as it answers (a refused connection costs microseconds).
const EAGER_CHECK: Duration = Duration::from_millis(10);
/// A worker without a port counts as healthy once it has run this long.
const WORKER_SETTLE: Duration = Duration::from_secs(1);

/// Environment variables passed from the supervisor to every process; nothing else of the caller's
/// environment (which may hold the caller's own credentials) reaches a service.
pub const PASSED_ENV: [&str; 9] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// A log line as followers receive it.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// The revision that wrote it.
    pub revision: String,
    /// `revision/copy: text`.
    pub text: String,
}

/// What a copy is doing, as `observe` shows it.
#[derive(Clone, Debug)]
pub struct CopyStatus {
    pub pid: Option<u32>,
    /// The process's start time in clock ticks since boot, to recognise it after a supervisor restart.
    pub start_ticks: Option<u64>,
    pub state: &'static str,
    pub healthy: bool,
    pub ever_healthy: bool,
    /// Whether the current run of the process has answered its health check.
    pub served: bool,
    pub restarts: u32,
    pub last_exit: Option<i32>,
    pub last_problem: Option<String>,
    pub running_since: Option<Instant>,
}

/// What every copy of a revision runs with.
#[derive(Clone)]
pub struct RevisionRun {
    /// The revision's name.
    pub name: String,
    /// What it runs.
    pub spec: Arc<RevisionSpec>,
    /// Its secrets' values, for the process environment only.
    pub secrets: Arc<BTreeMap<String, String>>,
    /// The directory of the log files.
    pub logs: PathBuf,
    /// Where followers of the logs listen.
    pub lines: broadcast::Sender<LogLine>,
    /// Wakes the supervisor when a copy's health changes, so that the router follows at once.
    pub changed: Arc<Notify>,
}

impl CopyStatus {
    /// A copy with no process: `state` says why, `last_exit` how its last run ended.
    fn not_running(state: &'static str, last_exit: Option<i32>) -> Self {
        CopyStatus {
            pid: None,
            start_ticks: None,
            state,
            healthy: false,
            ever_healthy: false,
            served: false,
            restarts: 0,
            last_exit,
            last_problem: None,
            running_since: None,
        }
    }
}

/// One copy of a revision.
pub struct Copy {
    pub index: usize,
    pub port: Option<u16>,
    status: Mutex<CopyStatus>,
    /// Set once, when the copy is to stop; its process runner and its health checker both wait on it.
    stop: tokio::sync::watch::Sender<bool>,
    /// Wakes the supervisor when the copy's health changes, so that the router follows at once.
    changed: Arc<Notify>,
}

/// Locks a mutex, recovering the data if a holder panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Copy {
    /// Starts copy `index` of a revision on `port`, and keeps it running until `stop`.
    pub fn start(index: usize, port: Option<u16>, revision: &RevisionRun) -> Arc<Copy> {
        let copy = Arc::new(Copy {
            index,
            port,
            status: Mutex::new(CopyStatus::not_running("starting", None)),
            stop: tokio::sync::watch::Sender::new(false),
            changed: Arc::clone(&revision.changed),
        });
        let runner = Arc::clone(&copy);
        let run = revision.clone();
        tokio::spawn(async move {
            runner
                .run(&run.spec, &run.name, &run.secrets, &run.logs, &run.lines)
                .await
        });
        if revision.spec.listens {
            let checker = Arc::clone(&copy);
            let spec = Arc::clone(&revision.spec);
            tokio::spawn(async move { checker.check_health(&spec).await });
        }
        copy
    }

    /// A copy of a job that ran to its end before the supervisor restarted: it is not run again.
    pub fn finished(index: usize, code: i32, changed: Arc<Notify>) -> Arc<Copy> {
        Arc::new(Copy {
            index,
            port: None,
            status: Mutex::new(CopyStatus::not_running("stopped", Some(code))),
            stop: tokio::sync::watch::Sender::new(true),
            changed,
        })
    }

    /// Its status now.
    pub fn status(&self) -> CopyStatus {
        lock(&self.status).clone()
    }

    /// As `observe` shows it.
    pub fn observed(&self, spec: &RevisionSpec) -> ObservedCopy {
        let status = self.status();
        let healthy = if spec.listens {
            status.healthy
        } else {
            self.settled(&status, spec)
        };
        ObservedCopy {
            pid: status.pid,
            port: self.port,
            state: status.state.to_string(),
            healthy,
            restarts: status.restarts,
            last_exit: status.last_exit,
        }
    }

    /// Whether a copy without a port has run long enough to count as up (a job: has succeeded).
    pub fn settled(&self, status: &CopyStatus, spec: &RevisionSpec) -> bool {
        match spec.kind {
            ServiceKind::Job => status.last_exit == Some(0),
            _ => status
                .running_since
                .is_some_and(|since| since.elapsed() >= WORKER_SETTLE),
        }
    }

    /// Ends the process (its whole process group): SIGTERM, then SIGKILL after five seconds.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once the copy is to stop (at once when it already is).
    async fn stopped(&self) {
        let mut stop = self.stop.subscribe();
        let _ = stop.wait_for(|stopping| *stopping).await;
    }

    fn set(&self, update: impl FnOnce(&mut CopyStatus)) {
        let mut status = lock(&self.status);
        let before = (status.healthy, status.pid);
        update(&mut status);
        let after = (status.healthy, status.pid);
        drop(status);
        if before != after {
            self.changed.notify_one();
        }
    }

    async fn run(
        &self,
        spec: &RevisionSpec,
        revision: &str,
        secrets: &BTreeMap<String, String>,
        logs: &Path,
        lines: &broadcast::Sender<LogLine>,
    ) {
        let mut backoff = FIRST_BACKOFF;
        let log = logs.join(format!("{revision}.{}.log", self.index));
        loop {
            if self.stopping() {
                break;
            }
            let mut command = self.command(spec, secrets);
            let child = command.spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(e) => {
                    let problem = format!("cannot start `{}`: {e}", describe(spec));
                    append_log(&log, &problem);
                    self.set(|status| {
                        status.state = "failed";
                        status.last_problem = Some(problem);
                        status.last_exit = Some(127);
                    });
                    if spec.kind == ServiceKind::Job {
                        break;
                    }
                    self.backoff(&mut backoff, Duration::ZERO).await;
                    continue;
                }
            };
            let pid = child.id();
            let started = Instant::now();
            self.set(|status| {
                status.pid = pid;
                status.start_ticks = pid.and_then(start_ticks);
                status.state = "running";
                status.served = false;
                status.running_since = Some(started);
            });
            let label = format!("{revision}/{}", self.index);
            if let Some(out) = child.stdout.take() {
                tokio::spawn(keep_log(
                    out,
                    log.clone(),
                    label.clone(),
                    revision.to_string(),
                    lines.clone(),
                ));
            }
            if let Some(err) = child.stderr.take() {
                tokio::spawn(keep_log(
                    err,
                    log.clone(),
                    label,
                    revision.to_string(),
                    lines.clone(),
                ));
            }
            let deadline = spec.timeout.unwrap_or(Duration::MAX);
            let ended = tokio::select! {
                status = child.wait() => status.ok().map(mahavishnu_core::process::exit_code),
                _ = self.stopped() => None,
                _ = tokio::time::sleep(deadline.min(Duration::from_secs(86_400 * 365))) => {
                    append_log(&log, &format!("timed out after {}", humantime_short(deadline)));
                    None
                }
            };
            let code = match ended {
                Some(code) => {
                    // What the process left behind in its group (the program `sh -c` started, when
                    // the shell itself was killed) would hold the port the next start needs.
                    if let Some(pid) = pid {
                        let group = nix::unistd::Pid::from_raw(-(pid as i32));
                        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
                    }
                    code
                }
                None => {
                    end_group(pid, &mut child).await;
                    child
                        .wait()
                        .await
                        .map(mahavishnu_core::process::exit_code)
                        .unwrap_or(137)
                }
            };
            let ran = started.elapsed();
            // A copy that served (or, without a port, ran past its settling time) before it ended
            // is not in a crash loop: it starts again at the first backoff, so that a killed
            // process serves again within a second however often it happened before.
            let served = self.status().served || (!spec.listens && ran >= WORKER_SETTLE);
            self.set(|status| {
                status.pid = None;
                status.start_ticks = None;
                status.healthy = false;
                status.running_since = None;
                status.last_exit = Some(code);
                status.state = "exited";
            });
            if self.stopping() || spec.kind == ServiceKind::Job {
                break;
            }
            if served || ran >= STABLE_AFTER {
                backoff = FIRST_BACKOFF;
            }
            self.set(|status| {
                status.restarts += 1;
                status.state = "backoff";
            });
            self.backoff(&mut backoff, ran).await;
        }
        self.set(|status| status.state = "stopped");
    }

    async fn backoff(&self, backoff: &mut Duration, _ran: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = self.stopped() => {}
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }

    fn command(
        &self,
        spec: &RevisionSpec,
        secrets: &BTreeMap<String, String>,
    ) -> tokio::process::Command {
        let mut command = match (&spec.run, &spec.image) {
            (Some(run), _) => {
                let mut command = tokio::process::Command::new("sh");
                command.arg("-c").arg(run);
                command
            }
            (None, Some(image)) => {
                let engine = container_engine().unwrap_or_else(|| PathBuf::from("podman"));
                let mut command = tokio::process::Command::new(engine);
                command.args(["run", "--rm", "--network", "host"]);
                // Values travel in this process's environment; only the names are on the command line.
                for name in spec.env.keys().chain(secrets.keys()) {
                    command.arg("-e").arg(name);
                }
                if self.port.is_some() {
                    command.arg("-e").arg("PORT");
                }
                command.arg(image);
                command
            }
            (None, None) => tokio::process::Command::new("false"),
        };
        command.env_clear();
        for name in PASSED_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.envs(&spec.env).envs(secrets);
        if let Some(port) = self.port {
            command.env("PORT", port.to_string());
        }
        command
            .current_dir(&spec.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: setsid and prctl are async-signal-safe. Each copy leads its own process group so that
        // stopping it reaches everything it started; it dies with the supervisor rather than outliving
        // the router that was its only way in.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command
    }

    async fn check_health(&self, spec: &RevisionSpec) {
        let Some(port) = self.port else { return };
        let explicit = spec.health.is_some();
        let health = spec.health.clone().unwrap_or_default();
        let url = format!("http://127.0.0.1:{port}{}", health.path);
        loop {
            if self.stopping() {
                break;
            }
            let status = self.status();
            let wait = if status.healthy {
                health.interval
            } else {
                EAGER_CHECK
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stopped() => break,
            }
            if self.status().pid.is_none() {
                continue;
            }
            let answer = crate::http::get_status(&url, Duration::from_secs(2)).await;
            // Without a health check of its own, any answer short of a server error means it serves.
            let verdict = match answer {
                Ok(code) if (200..400).contains(&code) => Ok(()),
                Ok(code) if !explicit && code < 500 => Ok(()),
                Ok(code) => Err(format!("GET {} answered {code}", health.path)),
                Err(e) => Err(format!("GET {}: {e}", health.path)),
            };
            self.set(|status| match verdict {
                Ok(()) => {
                    status.healthy = true;
                    status.ever_healthy = true;
                    status.served = true;
                    status.last_problem = None;
                }
                Err(problem) => {
                    status.healthy = false;
                    status.last_problem = Some(problem);
                }
            });
        }
    }
}

/// Ends a copy's process group: SIGTERM, then SIGKILL after five seconds.
async fn end_group(pid: Option<u32>, child: &mut tokio::process::Child) {
    let Some(pid) = pid else { return };
    let group = nix::unistd::Pid::from_raw(-(pid as i32));
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Kills a process group left by an earlier supervisor: when its leader is still the process
/// recorded, or is gone (the program `sh -c` started may live on in the group; a group whose leader
/// died cannot be anyone else's while it has members, and with none there is nothing to kill).
pub fn end_leftover(pid: u32, ticks: u64) {
    let leader = start_ticks(pid);
    if leader == Some(ticks) || leader.is_none() {
        let group = nix::unistd::Pid::from_raw(-(pid as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    }
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`, field 22).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields after it follow the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// podman or docker, whichever is installed (podman first).
pub fn container_engine() -> Option<PathBuf> {
    ["podman", "docker"]
        .into_iter()
        .find_map(mahavishnu_core::paths::find_program)
}

/// The container engine that can run an image-only service here, or why none can: podman or docker
/// must be installed, and docker's daemon must answer. Asked once per process.
pub fn container_engine_ready() -> Result<PathBuf, String> {
    static READY: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let engine = container_engine().ok_or_else(|| {
                "neither podman nor docker is installed to run it locally; install one".to_string()
            })?;
            let answered = std::process::Command::new(&engine)
                .args(["info", "--format", "{{.Host.Arch}}{{.ServerVersion}}"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .map_err(|e| format!("{} cannot be run ({e})", engine.display()))?;
            if answered.status.success() {
                return Ok(engine);
            }
            let said = String::from_utf8_lossy(&answered.stderr);
            let said = said
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("no answer");
            Err(format!(
                "{} is installed but does not work ({}); start its daemon, or install podman",
                engine.display(),
                said.trim()
            ))
        })
        .clone()
}

fn describe(spec: &RevisionSpec) -> String {
    spec.run
        .clone()
        .or_else(|| spec.image.clone())
        .unwrap_or_default()
}

fn humantime_short(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

async fn keep_log(
    pipe: impl tokio::io::AsyncRead + Unpin,
    path: PathBuf,
    label: String,
    revision: String,
    lines: broadcast::Sender<LogLine>,
) {
    let mut reader = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = reader.next_line().await {
        append_log(&path, &line);
        let _ = lines.send(LogLine {
            revision: revision.clone(),
            text: format!("{label}: {line}"),
        });
    }
}

/// Appends a line to a log file, rotating it to `.1` when it reaches `LOG_CAP`.
pub fn append_log(path: &Path, line: &str) {
    use std::io::Write;
    if std::fs::metadata(path).is_ok_and(|meta| meta.len() >= LOG_CAP) {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

/// The last `count` lines of a copy's logs (the rotated file first).
pub fn tail_log(path: &Path, count: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for file in [path.with_extension("log.1"), path.to_path_buf()] {
        if let Ok(text) = std::fs::read_to_string(&file) {
            lines.extend(text.lines().map(str::to_string));
        }
    }
    let skip = lines.len().saturating_sub(count);
    lines.split_off(skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_rotated_at_its_cap_and_the_tail_reads_across_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("web-1.0.log");
        let line = "x".repeat(1023);
        // Two and a half caps of 1 KiB lines: the oldest half is gone, one older file is kept.
        for n in 0..(LOG_CAP as usize * 5 / 2 / 1024) {
            append_log(&log, &format!("{n:06} {}", &line[7..]));
        }
        let current = std::fs::metadata(&log).unwrap().len();
        let older = std::fs::metadata(log.with_extension("log.1"))
            .unwrap()
            .len();
        assert!(
            current <= LOG_CAP && older <= LOG_CAP + 1024,
            "{current} {older}"
        );
        assert!(!dir.path().join("web-1.0.log.1.1").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let tail = tail_log(&log, 3);
        assert_eq!(tail.len(), 3);
        let last: usize = tail[2][..6].parse().unwrap();
        assert_eq!(last, LOG_CAP as usize * 5 / 2 / 1024 - 1);
        let lines = tail_log(&log, usize::MAX);
        assert!(
            lines.len() > 1024,
            "the older file is read too: {}",
            lines.len()
        );
    }
}
