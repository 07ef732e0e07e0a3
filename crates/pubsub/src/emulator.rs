//! [`Emulator`]: the local Pub/Sub emulator, found or started on demand.
//!
//! A started emulator is recorded in `DIR/pubsub-emulator.json` and runs in a session of its own, so it
//! outlives the command that started it and every later command reuses it instead of paying for a
//! JVM again.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mahavishnu_core::{Error, Result};
use serde::{Deserialize, Serialize};

const STATE_FILE: &str = "pubsub-emulator.json";
const LOCK_FILE: &str = "pubsub-emulator.lock";
const LOG_FILE: &str = "pubsub-emulator.log";
/// Where the launcher lives inside a Cloud SDK root.
const LAUNCHER: &str = "platform/pubsub-emulator/bin/cloud-pubsub-emulator";
/// The JVM answers after about a second on an idle machine; a loaded one, or a first start that warms
/// the disk cache, takes several times that.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const FIX: &str = "install the Google Cloud SDK's pubsub-emulator component (gcloud components install \
                   pubsub-emulator, or the Debian package google-cloud-cli-pubsub-emulator) and Java, \
                   or set PUBSUB_EMULATOR_HOST to a running emulator";
/// What each way of not finding the emulator starts with.
const MISSING: &str = "topics need the Pub/Sub emulator";

/// The local Pub/Sub emulator: where one is, how to start one, and how to stop the one started.
#[derive(Debug, Clone, Copy)]
pub struct Emulator;

/// Where the emulator comes from, as [`Emulator::locate`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmulatorSource {
    /// `PUBSUB_EMULATOR_HOST` names a running emulator (`host:port`), used as it is.
    Running {
        /// The emulator's `host:port`.
        host: String,
    },
    /// The Cloud SDK's launcher, which Mahavishnu starts itself.
    Launcher {
        /// The `cloud-pubsub-emulator` script.
        launcher: PathBuf,
        /// The Java the launcher will run.
        java: PathBuf,
    },
}

/// An emulator that answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningEmulator {
    /// `http://127.0.0.1:PORT`, for [`PubSubBus::connect`](crate::PubSubBus::connect).
    pub endpoint: String,
    /// `127.0.0.1:PORT`, what services take as `PUBSUB_EMULATOR_HOST`.
    pub host: String,
    /// The emulator's process (and process group), when Mahavishnu started it; `None` for one named
    /// by `PUBSUB_EMULATOR_HOST`.
    pub pid: Option<u32>,
}

/// What `pubsub-emulator.json` records of a started emulator.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    pid: u32,
    port: u16,
    /// Seconds since the Unix epoch, for the user reading the file.
    started: u64,
}

impl Emulator {
    /// Finds the emulator: `PUBSUB_EMULATOR_HOST` when it is set, else the Cloud SDK's launcher (see
    /// [`Emulator::locate_launcher`]). The error says what is missing and how to get it.
    pub fn locate() -> std::result::Result<EmulatorSource, String> {
        match std::env::var("PUBSUB_EMULATOR_HOST") {
            Ok(host) if !host.trim().is_empty() => Ok(EmulatorSource::Running {
                host: host.trim().to_string(),
            }),
            _ => Self::locate_launcher(),
        }
    }

    /// Finds the Cloud SDK's emulator launcher and Java, ignoring `PUBSUB_EMULATOR_HOST`. The SDK root
    /// is `CLOUDSDK_ROOT_DIR`, else the parent of the `bin/` that holds `gcloud` from `PATH` once its
    /// symlinks are resolved (packages link it from `/usr/bin`).
    pub fn locate_launcher() -> std::result::Result<EmulatorSource, String> {
        locate_launcher_in(
            std::env::var_os("CLOUDSDK_ROOT_DIR"),
            std::env::var_os("PATH"),
            std::env::var_os("JAVA_HOME"),
        )
    }

    /// An emulator that answers: the one `PUBSUB_EMULATOR_HOST` names, else the one recorded in `dir`
    /// while it still runs and answers, else a new one started from the Cloud SDK and recorded there.
    /// Callers at the same time, in this process or others, share one emulator.
    pub async fn ensure(dir: &Path) -> Result<RunningEmulator> {
        let source = Self::locate().map_err(Error::Failed)?;
        Self::ensure_with(source, dir).await
    }

    /// [`Emulator::ensure`] with the source already found, for callers that choose it themselves.
    pub async fn ensure_with(source: EmulatorSource, dir: &Path) -> Result<RunningEmulator> {
        match source {
            EmulatorSource::Running { host } => Ok(RunningEmulator {
                endpoint: format!("http://{host}"),
                host,
                pid: None,
            }),
            EmulatorSource::Launcher { launcher, java } => {
                let dir = dir.to_path_buf();
                // Locking, probing and waiting all block; a thread of their own keeps the runtime free.
                tokio::task::spawn_blocking(move || ensure_started(&launcher, &java, &dir))
                    .await
                    .map_err(|e| {
                        Error::Failed(format!(
                            "starting the Pub/Sub emulator was interrupted: {e}"
                        ))
                    })?
            }
        }
    }

    /// The emulator that already answers, without starting one: the one `PUBSUB_EMULATOR_HOST`
    /// names, else the one recorded in `dir` while it runs and answers. A plan reads this, so that
    /// it can tell what services will be wired with and start nothing.
    pub fn running(dir: &Path) -> Option<RunningEmulator> {
        if let Ok(EmulatorSource::Running { host }) = Self::locate() {
            return Some(RunningEmulator {
                endpoint: format!("http://{host}"),
                host,
                pid: None,
            });
        }
        let record = read_record(dir)?;
        (is_our_emulator(record.pid) && answers(record.port))
            .then(|| running(record.port, record.pid))
    }

    /// Stops the emulator recorded in `dir`, with its whole process group, and forgets it. Returns
    /// whether one was running; stopping when none runs is not an error.
    pub fn stop(dir: &Path) -> Result<bool> {
        if !dir.exists() {
            return Ok(false);
        }
        let _lock = lock(dir)?;
        let Some(record) = read_record(dir) else {
            return Ok(false);
        };
        let was_running = is_our_emulator(record.pid);
        if was_running {
            kill_group(record.pid)?;
        }
        remove_record(dir)?;
        Ok(was_running)
    }
}

/// [`Emulator::locate_launcher`] on the given `CLOUDSDK_ROOT_DIR`, `PATH` and `JAVA_HOME`.
fn locate_launcher_in(
    sdk_root: Option<OsString>,
    path: Option<OsString>,
    java_home: Option<OsString>,
) -> std::result::Result<EmulatorSource, String> {
    let fail = |detail: String| format!("{MISSING}: {FIX} ({detail})");
    let root = match sdk_root.filter(|v| !v.is_empty()) {
        Some(root) => PathBuf::from(root),
        None => {
            let gcloud = find_on_path(path.as_deref(), "gcloud").ok_or_else(|| {
                fail("no Google Cloud SDK was found: gcloud is not on PATH and CLOUDSDK_ROOT_DIR is unset".into())
            })?;
            // Packages link gcloud from /usr/bin; the SDK is where the link leads.
            let real = std::fs::canonicalize(&gcloud).map_err(|e| {
                fail(format!(
                    "gcloud at {} cannot be resolved: {e}",
                    gcloud.display()
                ))
            })?;
            real.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .ok_or_else(|| {
                    fail(format!(
                        "gcloud at {} is not in a Cloud SDK's bin/",
                        real.display()
                    ))
                })?
        }
    };
    let launcher = root.join(LAUNCHER);
    if !is_executable(&launcher) {
        return Err(fail(format!(
            "the Cloud SDK at {} has no pubsub-emulator component: {} is missing",
            root.display(),
            launcher.display()
        )));
    }
    // The launcher prefers JAVA_HOME over PATH, so the check follows the same order.
    let java = java_home
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|java| is_executable(java))
        .or_else(|| find_on_path(path.as_deref(), "java"))
        .ok_or_else(|| fail("no Java was found: java is not on PATH".into()))?;
    Ok(EmulatorSource::Launcher { launcher, java })
}

fn ensure_started(launcher: &Path, java: &Path, dir: &Path) -> Result<RunningEmulator> {
    create_private_dir(dir)?;
    // Held until this returns, so a second caller waits and then finds the emulator this one started.
    let _lock = lock(dir)?;
    let mut last_port = None;
    if let Some(record) = read_record(dir) {
        if is_our_emulator(record.pid) {
            if answers(record.port) {
                return Ok(running(record.port, record.pid));
            }
            // Alive but deaf: hung, or stopped by hand. A new one replaces it.
            kill_group(record.pid)?;
        }
        last_port = Some(record.port);
        remove_record(dir)?;
    }
    start(launcher, java, dir, last_port)
}

/// Starts an emulator, on the port the last one had when it is free: services were given that
/// address, and keeping it spares them a new revision each.
fn start(
    launcher: &Path,
    java: &Path,
    dir: &Path,
    last_port: Option<u16>,
) -> Result<RunningEmulator> {
    let port =
        match last_port.filter(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, *port)).is_ok()) {
            Some(port) => port,
            None => free_port()?,
        };
    let log_path = dir.join(LOG_FILE);
    let log = private_file(&log_path, true)?;
    let log_err = log
        .try_clone()
        .map_err(|e| Error::Failed(format!("cannot use the log {}: {e}", log_path.display())))?;
    let mut command = Command::new(launcher);
    command
        .arg("--host=127.0.0.1")
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // The emulator outlives the caller, whose environment may hold credentials or a secret's value:
    // it gets only what a JVM needs.
    command.env_clear();
    for name in ["PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    // The launcher runs $JAVA_HOME/bin/java when JAVA_HOME is set, and dies when that is missing;
    // pointing it at the Java that was found makes both agree.
    if let Some(home) = java.parent().and_then(Path::parent) {
        command.env("JAVA_HOME", home);
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent. A session of its own
    // keeps the emulator out of the caller's process group, so the terminal's Ctrl-C and the caller's
    // exit leave it running, and its pid names the group `stop` kills (the JVM and any helpers).
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        Error::Failed(format!(
            "cannot start the Pub/Sub emulator {}: {e}; {FIX}",
            launcher.display()
        ))
    })?;
    let pid = child.id();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if answers(port) {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Failed(format!(
                "the Pub/Sub emulator exited ({status}) before it answered on port {port}; the end of \
                 {}:\n{}",
                log_path.display(),
                log_tail(&log_path)
            )));
        }
        if Instant::now() >= deadline {
            let _ = kill_group(pid);
            reap(child);
            return Err(Error::Failed(format!(
                "the Pub/Sub emulator did not answer on port {port} within {}s, so it was stopped; the \
                 end of {}:\n{}",
                START_TIMEOUT.as_secs(),
                log_path.display(),
                log_tail(&log_path)
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Err(e) = write_record(dir, &Record { pid, port, started }) {
        // Unrecorded, it could never be reused nor stopped: better gone.
        let _ = kill_group(pid);
        reap(child);
        return Err(e);
    }
    reap(child);
    Ok(running(port, pid))
}

/// Waits for the child in the background: should the emulator end while this process lives, it must
/// not linger as a zombie, which would look alive to the next `ensure`.
fn reap(mut child: Child) {
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

fn running(port: u16, pid: u32) -> RunningEmulator {
    let host = format!("127.0.0.1:{port}");
    RunningEmulator {
        endpoint: format!("http://{host}"),
        host,
        pid: Some(pid),
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            Error::Failed(format!(
                "cannot create {} for the Pub/Sub emulator's state: {e}",
                dir.display()
            ))
        })
}

fn private_file(path: &Path, truncate: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Failed(format!("cannot open {}: {e}", path.display())))
}

/// An exclusive `flock` on the directory's lock file, released when the file is dropped.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = private_file(&path, false)?;
    loop {
        // SAFETY: flock on a descriptor this function owns for the call's duration.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(file);
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != ErrorKind::Interrupted {
            return Err(Error::Failed(format!(
                "cannot lock {}: {error}",
                path.display()
            )));
        }
    }
}

fn read_record(dir: &Path) -> Option<Record> {
    let text = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
    // A file that does not parse records nothing that could be reused or stopped.
    serde_json::from_str(&text).ok()
}

fn write_record(dir: &Path, record: &Record) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let partial = dir.join(format!("{STATE_FILE}.partial"));
    let text = serde_json::to_string(record)
        .map_err(|e| Error::Failed(format!("cannot encode the emulator's record: {e}")))?;
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        // Renamed into place so that a reader never sees half a record.
        std::fs::rename(&partial, &path)
    };
    write().map_err(|e| Error::Failed(format!("cannot write {}: {e}", path.display())))
}

fn remove_record(dir: &Path) -> Result<()> {
    let path = dir.join(STATE_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Failed(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    unsafe {
        libc::kill(pid, 0) == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// Whether `pid` still is the emulator that was recorded: the pid lives and, where the command line
/// can be read, it is the emulator's, so that a recycled pid is never killed.
fn is_our_emulator(pid: u32) -> bool {
    if pid <= 1 || !alive(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains("pubsub-emulator"),
        Err(_) => true,
    }
}

/// SIGTERM to the emulator's process group, SIGKILL when it has not ended after a while.
fn kill_group(pid: u32) -> Result<()> {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return Ok(());
    };
    if pgid <= 1 {
        return Ok(());
    }
    // SAFETY: killpg with a group this module started in a session of its own.
    unsafe { libc::killpg(pgid, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !alive(pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if !alive(pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::Failed(format!(
        "the Pub/Sub emulator (process {pid}) did not end after SIGKILL; stop it by hand with `kill -9 \
         -{pid}`"
    )))
}

fn free_port() -> Result<u16> {
    // The port is released before the emulator binds it; another program taking it in between makes
    // the start fail with the log saying so, and the next ensure picks another.
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| Error::Failed(format!("cannot find a free loopback port: {e}")))
}

/// Whether an HTTP server answers `GET /` on the loopback port: the emulator does once it is ready,
/// while a bound but starting JVM does not.
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(PROBE_TIMEOUT));
    let request = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    head[..read].starts_with(b"HTTP/1.")
}

fn log_tail(path: &Path) -> String {
    const LINES: usize = 20;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
            if tail.trim().is_empty() {
                "(the log is empty)".into()
            } else {
                tail
            }
        }
        Err(e) => format!("(the log cannot be read: {e})"),
    }
}

fn find_on_path(path: Option<&std::ffi::OsStr>, program: &str) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_does_not_parse_is_no_record() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        assert!(read_record(dir.path()).is_none());
        assert!(!Emulator::stop(dir.path()).unwrap());
    }

    #[test]
    fn records_are_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        create_private_dir(&state).unwrap();
        write_record(
            &state,
            &Record {
                pid: 4242,
                port: 8085,
                started: 1,
            },
        )
        .unwrap();
        let record = read_record(&state).unwrap();
        assert_eq!((record.pid, record.port), (4242, 8085));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(STATE_FILE)), 0o600);
    }

    #[test]
    fn a_recycled_pid_is_not_the_emulator() {
        // This test process lives, but its command line is not the emulator's.
        assert!(!is_our_emulator(std::process::id()));
        assert!(!is_our_emulator(0));
    }

    fn executable(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_sdk_is_found_through_the_gcloud_link_and_java_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = dir.path().join("sdk");
        executable(&sdk.join("bin/gcloud"));
        executable(&sdk.join(LAUNCHER));
        executable(&dir.path().join("jdk/bin/java"));
        let bin = dir.path().join("usr-bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(sdk.join("bin/gcloud"), bin.join("gcloud")).unwrap();
        let path = std::env::join_paths([bin, dir.path().join("jdk/bin")]).unwrap();

        let found = locate_launcher_in(None, Some(path.clone()), None).unwrap();
        assert_eq!(
            found,
            EmulatorSource::Launcher {
                launcher: std::fs::canonicalize(&sdk).unwrap().join(LAUNCHER),
                java: dir.path().join("jdk/bin/java"),
            }
        );
        // CLOUDSDK_ROOT_DIR wins over PATH.
        let found = locate_launcher_in(Some(sdk.clone().into()), Some(path), None).unwrap();
        assert!(
            matches!(found, EmulatorSource::Launcher { launcher, .. } if launcher == sdk.join(LAUNCHER))
        );
    }

    #[test]
    fn what_is_missing_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = dir.path().join("sdk");
        let path = || Some(OsString::from(dir.path().join("nothing-here")));

        let err = locate_launcher_in(None, path(), None).unwrap_err();
        assert!(
            err.starts_with("topics need the Pub/Sub emulator: install"),
            "{err}"
        );
        assert!(
            err.contains("gcloud is not on PATH") && err.contains("PUBSUB_EMULATOR_HOST"),
            "{err}"
        );

        executable(&sdk.join("bin/gcloud"));
        let err = locate_launcher_in(Some(sdk.clone().into()), path(), None).unwrap_err();
        assert!(err.contains("no pubsub-emulator component"), "{err}");

        executable(&sdk.join(LAUNCHER));
        let err = locate_launcher_in(Some(sdk.clone().into()), path(), None).unwrap_err();
        assert!(err.contains("no Java"), "{err}");

        executable(&dir.path().join("jdk/bin/java"));
        let java_home = Some(OsString::from(dir.path().join("jdk")));
        assert!(locate_launcher_in(Some(sdk.into()), path(), java_home).is_ok());
    }

    #[test]
    fn a_closed_port_does_not_answer() {
        assert!(!answers(free_port().unwrap()));
    }

    #[test]
    fn the_log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(LOG_FILE);
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log);
        assert!(
            tail.starts_with("line 11") && tail.ends_with("line 30"),
            "{tail}"
        );
    }
}
