//! The pty target: each session is held by its own host process (`mahavishnu __pty-host`), which owns
//! the PTY and answers on a Unix socket in the runtime directory. Sessions outlive the CLI.

mod attach;
pub mod host;
pub mod protocol;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use mahavishnu_core::notices::{Followed, OutputNotices};
use mahavishnu_core::{
    Capabilities, Error, ExecOutput, ExecRequest, InputPart, LaunchSpec, Observation,
    ObservedStatus, Preflight, Result, ScreenOptions, Target, TargetKind, TargetName, Timestamp,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub use attach::{DETACH_KEY_NAME, attach};
use protocol::{ExitRecord, HostStatus, Request, SessionFiles, read_status};

const KIND: TargetKind = TargetKind::Pty;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Native PTY sessions, one host process each.
#[derive(Clone, Debug)]
pub struct PtyTarget {
    name: TargetName,
    dir: PathBuf,
    host_program: PathBuf,
    scrollback: usize,
    notices: OutputNotices,
}

/// How often the follower of output notices looks for new sessions.
const LOOK_FOR_SESSIONS: Duration = Duration::from_millis(500);

/// Why a host did not answer.
enum Unreachable {
    /// No host answers on the socket: the session ended or its host died.
    Gone,
    /// Anything else.
    Failed(Error),
}

impl PtyTarget {
    /// A target keeping its sockets in `runtime_dir/pty` (`pty-NAME` for a target not the built-in
    /// one), starting hosts with `host_program __pty-host`.
    pub fn new(
        name: TargetName,
        runtime_dir: &Path,
        host_program: PathBuf,
        scrollback: usize,
    ) -> Self {
        let dir = if name.is_builtin() {
            runtime_dir.join("pty")
        } else {
            runtime_dir.join(format!("pty-{name}"))
        };
        PtyTarget {
            name,
            dir,
            host_program,
            scrollback,
            notices: OutputNotices::default(),
        }
    }

    fn files(&self, native: &str) -> SessionFiles {
        SessionFiles::new(&self.dir, native)
    }

    async fn request(
        &self,
        native: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<serde_json::Value, Unreachable> {
        let socket = self.files(native).socket;
        let exchange = async {
            let mut stream = UnixStream::connect(&socket)
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                        Unreachable::Gone
                    }
                    _ => Unreachable::Failed(Error::io(
                        format!("cannot reach the pty host of `{native}`"),
                        e,
                    )),
                })?;
            let mut line = serde_json::to_vec(request)
                .map_err(|e| Unreachable::Failed(Error::target(&self.name, e.to_string())))?;
            line.push(b'\n');
            let io = |e: std::io::Error| {
                Unreachable::Failed(Error::io(
                    format!("talking to the pty host of `{native}`"),
                    e,
                ))
            };
            stream.write_all(&line).await.map_err(io)?;
            let mut answer = String::new();
            BufReader::new(stream)
                .read_line(&mut answer)
                .await
                .map_err(io)?;
            if answer.is_empty() {
                return Err(Unreachable::Gone);
            }
            let value: serde_json::Value = serde_json::from_str(&answer).map_err(|e| {
                Unreachable::Failed(Error::target(
                    &self.name,
                    format!("bad answer from the pty host: {e}"),
                ))
            })?;
            if let Some(message) = value.get("error").and_then(|e| e.as_str()) {
                return Err(Unreachable::Failed(Error::target(
                    &self.name,
                    message.to_string(),
                )));
            }
            Ok(value)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(Unreachable::Failed(Error::target(
                    &self.name,
                    format!("the pty host of `{native}` did not answer in time"),
                )))
            })
    }

    /// A request to a live session; a session whose host is gone is an unknown instance.
    async fn live_request(&self, native: &str, request: &Request) -> Result<serde_json::Value> {
        self.request(native, request, REQUEST_TIMEOUT)
            .await
            .map_err(|unreachable| match unreachable {
                Unreachable::Gone if self.exit_record(native).is_some() => Error::NotLive {
                    id: self.id_of(native),
                    state: "exited".into(),
                    hint: "its program has ended; `capture` still shows its last screen".into(),
                },
                Unreachable::Gone => Error::UnknownInstance {
                    id: self.id_of(native),
                },
                Unreachable::Failed(error) => error,
            })
    }

    /// The id of this target's session `native`, for messages.
    fn id_of(&self, native: &str) -> String {
        format!("{}:{native}", self.name.id_prefix())
    }

    fn exit_record(&self, native: &str) -> Option<ExitRecord> {
        let text = std::fs::read(self.files(native).exit).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn spec(&self, native: &str) -> Option<LaunchSpec> {
        let text = std::fs::read(self.files(native).spec).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Observes a session from its status file, without a round trip to its host.
    fn observe(&self, native: String) -> Option<Observation> {
        match read_status(&self.files(&native).status) {
            Some(HostStatus::Alive {
                pid,
                last_output_ms,
            }) => Some(Observation {
                // The program leads its own session: its group in front means no other job is.
                foreground_job: crate::procfs::foreground_group(pid).map(|group| group != pid),
                native,
                status: ObservedStatus::Running,
                idle_ms: Some(Timestamp::now().0.saturating_sub(last_output_ms).max(0) as u64),
                pid: Some(pid),
            }),
            _ => {
                let record = self.exit_record(&native)?;
                Some(Observation {
                    native,
                    status: ObservedStatus::Exited(record.code),
                    idle_ms: None,
                    foreground_job: None,
                    pid: None,
                })
            }
        }
    }

    fn session_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let native = name.strip_suffix(".json")?;
                (!native.ends_with(".exit")).then(|| native.to_string())
            })
            .collect()
    }

    /// The socket of a session, for `attach`.
    pub fn socket(&self, native: &str) -> PathBuf {
        self.files(native).socket
    }
}

#[async_trait]
impl Target for PtyTarget {
    fn name(&self) -> &TargetName {
        &self.name
    }

    fn kind(&self) -> TargetKind {
        KIND
    }

    fn location(&self) -> String {
        format!("sessions in {}", self.dir.display())
    }

    fn attach_command(&self, native: &str) -> Result<Vec<String>> {
        Ok(vec![
            self.host_program.to_string_lossy().into_owned(),
            "__pty-attach".into(),
            "--socket".into(),
            self.socket(native).to_string_lossy().into_owned(),
            "--id".into(),
            format!("{}:{native}", self.name.id_prefix()),
        ])
    }

    fn check_native(&self, native: &str) -> Result<()> {
        // A Unix socket's path holds at most 107 bytes (108 with its terminating NUL).
        let socket = self.files(native).socket;
        let length = socket.as_os_str().len();
        if length > 107 {
            return Err(Error::Invalid(format!(
                "the name `{native}` makes the session's socket path {length} bytes long ({}), more than \
                 the 107 a Unix socket allows; choose a shorter --name, or set MAHAVISHNU_RUNTIME_DIR to a \
                 shorter directory",
                socket.display()
            )));
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            screen: true,
            send: true,
            exec: true,
            logs: true,
            recover: true,
            attach: true,
            persistent: true,
            host_processes: true,
        }
    }

    async fn preflight(&self) -> Preflight {
        let checks = (|| -> Result<String> {
            mahavishnu_core::paths::ensure_private_dir(&self.dir)?;
            nix::pty::openpty(None, None)
                .map_err(|e| Error::Invalid(format!("cannot open a pseudo-terminal: {e}")))?;
            Ok(format!("sockets in {}", self.dir.display()))
        })();
        match checks {
            Ok(detail) => Preflight {
                target: self.name.clone(),
                ready: true,
                detail,
            },
            Err(error) => Preflight {
                target: self.name.clone(),
                ready: false,
                detail: error.to_string(),
            },
        }
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Observation> {
        mahavishnu_core::paths::ensure_private_dir(&self.dir)?;
        let native = spec.id.native().to_string();
        let files = self.files(&native);
        if files.spec.exists() {
            return Err(Error::Invalid(format!(
                "a pty session `{native}` already exists; choose another --name"
            )));
        }
        let bytes =
            serde_json::to_vec(spec).map_err(|e| Error::target(&self.name, e.to_string()))?;
        mahavishnu_core::paths::write_private_file(&files.spec, &bytes)
            .map_err(|e| Error::io(format!("cannot write {}", files.spec.display()), e))?;
        let mut command = tokio::process::Command::new(&self.host_program);
        command
            .arg("__pty-host")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--name")
            .arg(&native)
            .arg("--scrollback")
            .arg(self.scrollback.to_string());
        let started =
            mahavishnu_core::process::start_detached(&mut command, Duration::from_secs(10)).await;
        let line = match started {
            Ok(Some(line)) => line,
            Ok(None) => {
                files.remove();
                return Err(Error::target(
                    &self.name,
                    format!("the pty host of `{native}` did not start in time"),
                ));
            }
            Err(e) => {
                files.remove();
                return Err(Error::io(
                    format!("cannot start the pty host {}", self.host_program.display()),
                    e,
                ));
            }
        };
        if let Some(pid) = line.strip_prefix("ready ") {
            return Ok(Observation {
                native,
                status: ObservedStatus::Running,
                idle_ms: Some(0),
                foreground_job: None,
                pid: pid.parse().ok(),
            });
        }
        files.remove();
        let reason = line.strip_prefix("error: ").unwrap_or(&line);
        Err(Error::target(
            &self.name,
            if reason.is_empty() {
                "the pty host exited before it was ready"
            } else {
                reason
            },
        ))
    }

    async fn inspect(&self, native: &str) -> Result<Option<Observation>> {
        Ok(self.observe(native.to_string()))
    }

    async fn list(&self) -> Result<Vec<Observation>> {
        Ok(self
            .session_names()
            .into_iter()
            .filter_map(|native| self.observe(native))
            .collect())
    }

    async fn exec(&self, native: &str, request: &ExecRequest) -> Result<ExecOutput> {
        let spec = self.spec(native).ok_or_else(|| Error::UnknownInstance {
            id: self.id_of(native),
        })?;
        // Where the program is now (a shell may have changed directory), else where it started.
        let cwd = match read_status(&self.files(native).status) {
            Some(HostStatus::Alive { pid, .. }) => crate::procfs::cwd(pid),
            _ => None,
        };
        let cwd = cwd.unwrap_or_else(|| spec.cwd.clone());
        crate::run_side_command(&self.name, request, &cwd, &spec.env).await
    }

    async fn send(&self, native: &str, input: &[InputPart]) -> Result<()> {
        let bytes: Vec<u8> = input.iter().flat_map(InputPart::to_bytes).collect();
        let data = String::from_utf8(bytes)
            .map_err(|_| Error::Invalid("input is not valid UTF-8".into()))?;
        self.live_request(native, &Request::Send { data })
            .await
            .map(drop)
    }

    async fn screen(&self, native: &str, options: ScreenOptions) -> Result<String> {
        let request = Request::Screen {
            scrollback: options.scrollback,
            ansi: options.ansi,
        };
        match self.request(native, &request, REQUEST_TIMEOUT).await {
            Ok(value) => Ok(value
                .get("text")
                .and_then(|text| text.as_str())
                .unwrap_or_default()
                .to_string()),
            Err(Unreachable::Gone) => {
                let record = self
                    .exit_record(native)
                    .ok_or_else(|| Error::UnknownInstance {
                        id: self.id_of(native),
                    })?;
                Ok(match (options.scrollback, options.ansi) {
                    (true, _) => record.full,
                    (false, true) => record.screen_ansi,
                    (false, false) => record.screen,
                })
            }
            Err(Unreachable::Failed(error)) => Err(error),
        }
    }

    async fn resize(&self, native: &str, rows: u16, cols: u16) -> Result<()> {
        self.live_request(native, &Request::Resize { rows, cols })
            .await
            .map(drop)
    }

    /// Each live host tells a watch connection when output comes.
    fn screen_changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.notices.subscribe(self, LOOK_FOR_SESSIONS)
    }

    async fn logs(&self, native: &str) -> Result<String> {
        self.screen(
            native,
            ScreenOptions {
                scrollback: true,
                ansi: false,
            },
        )
        .await
    }

    async fn stop(&self, native: &str, grace: Duration) -> Result<()> {
        let request = Request::Stop {
            grace_ms: grace.as_millis() as u64,
        };
        let result = self
            .request(native, &request, grace + Duration::from_secs(5))
            .await;
        self.files(native).remove();
        match result {
            Ok(_) | Err(Unreachable::Gone) => Ok(()),
            Err(Unreachable::Failed(error)) => Err(error),
        }
    }

    async fn recover(&self) -> Result<Vec<LaunchSpec>> {
        let mut specs = Vec::new();
        for native in self.session_names() {
            let alive = matches!(
                read_status(&self.files(&native).status),
                Some(HostStatus::Alive { .. })
            );
            if let (Some(spec), true) = (self.spec(&native), alive) {
                specs.push(spec);
            }
        }
        Ok(specs)
    }
}

#[async_trait]
impl Followed for PtyTarget {
    async fn followable(&self) -> Vec<String> {
        self.session_names()
            .into_iter()
            .filter(|native| {
                matches!(
                    read_status(&self.files(native).status),
                    Some(HostStatus::Alive { .. })
                )
            })
            .collect()
    }

    async fn follow(&self, native: &str, output: &mut (dyn FnMut() -> bool + Send)) {
        use tokio::io::AsyncReadExt;
        let Ok(mut stream) = UnixStream::connect(self.files(native).socket).await else {
            return;
        };
        let Ok(mut line) = serde_json::to_vec(&Request::Watch) else {
            return;
        };
        line.push(b'\n');
        if stream.write_all(&line).await.is_err() {
            return;
        }
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        if !matches!(reader.read_line(&mut answer).await, Ok(n) if n > 0) {
            return;
        }
        // One byte per notice; whatever arrived at once is one change to read.
        let mut notices = [0u8; 256];
        while let Ok(n) = reader.read(&mut notices).await {
            if n == 0 || !output() {
                return;
            }
        }
    }
}
