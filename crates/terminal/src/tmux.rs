//! The tmux target: sessions on Mahavishnu's own tmux server (`tmux -L <socket> -f /dev/null`), never the
//! user's. One tmux session per instance, named after the native id and always addressed exactly
//! (`=name:`), so `mv-1` can never match `mv-10`. Sessions outlive Mahavishnu.
//!
//! tmux sometimes loses a dead pane's exit status (`pane_dead_status` stays empty when the terminal's
//! end is seen before the child is reaped), so each program runs under a two-line `sh` wrapper that
//! writes its exit code to a file in the runtime directory. The wrapper is the pane's process; the
//! program is its only child.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mahavishnu_core::{
    Capabilities, Error, ExecOutput, ExecRequest, InputPart, LaunchSpec, Observation,
    ObservedStatus, Preflight, Result, ScreenOptions, Target, TargetKind, TargetName, Timestamp,
};

use crate::{procfs, run_side_command};

const KIND: TargetKind = TargetKind::Tmux;
/// Session option holding the launch spec, so that instances can be recovered from tmux alone.
const SPEC_OPTION: &str = "@mahavishnu_spec";
/// Session option holding the program's pid (the wrapper's child).
const PID_OPTION: &str = "@mahavishnu_pid";
const NO_SERVER: &str = "Mahavishnu's tmux server is not running (no sessions)";
const NO_SESSION: &str = "no such tmux session";
/// Reads the session's environment from the private file named by `$2` (if any), runs the program,
/// then records its exit code in the file named by `$1`. Environment values never reach a command
/// line or a tmux option, where other users of the machine could read them.
const EXIT_WRAPPER: &str = "f=$1; e=$2; shift 2; if [ -n \"$e\" ]; then . \"$e\" || exit 127; fi; \"$@\"; c=$?; printf %s \"$c\" > \"$f\"; exit $c";
const SCREEN_MARKER: &str = "\u{1e}mahavishnu-screen\u{1e}";

/// Sessions on a private tmux server.
#[derive(Clone, Debug)]
pub struct TmuxTarget {
    name: TargetName,
    program: String,
    socket_name: String,
    history_limit: usize,
    exits: PathBuf,
}

impl TmuxTarget {
    /// A target on the server `tmux -L socket_name`, using the tmux executable `program`, keeping exit
    /// codes below `runtime_dir`.
    pub fn new(
        name: TargetName,
        program: impl Into<String>,
        socket_name: impl Into<String>,
        history_limit: usize,
        runtime_dir: &Path,
    ) -> Self {
        let socket_name = socket_name.into();
        let exits = runtime_dir.join("tmux").join(&socket_name);
        // Resolved once, so that each tmux call is one exec rather than a search along PATH.
        let program: String = program.into();
        let program = mahavishnu_core::paths::find_program(&program)
            .map_or(program, |path| path.to_string_lossy().into_owned());
        TmuxTarget {
            name,
            program,
            socket_name,
            history_limit,
            exits,
        }
    }

    /// Finds the program the wrapper started and records its pid on the session, so that `list` can
    /// tell the program's own process group from a job's without searching /proc.
    async fn record_program_pid(&self, name: &str, wrapper: u32) -> Option<u32> {
        let mut program = None;
        for _ in 0..100 {
            program = procfs::first_child(wrapper);
            if program.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let program = program?;
        let target = exact(name);
        let _ = self
            .tmux(&args([
                "set-option",
                "-t",
                &target,
                PID_OPTION,
                &program.to_string(),
            ]))
            .await;
        Some(program)
    }

    fn exit_file(&self, native: &str) -> PathBuf {
        self.exits.join(format!("{native}.exit"))
    }

    /// The session's environment, as `sh` reads it (`export NAME='value'` lines).
    fn env_file(&self, native: &str) -> PathBuf {
        self.exits.join(format!("{native}.env"))
    }

    /// The session's environment as JSON, for side commands and recovery.
    fn env_json_file(&self, native: &str) -> PathBuf {
        self.exits.join(format!("{native}.env.json"))
    }

    /// Writes the environment files of a new session (private files in a private directory).
    fn write_env(
        &self,
        native: &str,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let mut script = String::new();
        for (name, value) in env {
            mahavishnu_core::model::check_env_name(name)?;
            script.push_str(&format!(
                "export {name}={}\n",
                mahavishnu_core::shell::quote(value)
            ));
        }
        let json = serde_json::to_vec(env).map_err(|e| Error::target(&self.name, e.to_string()))?;
        for (file, bytes) in [
            (self.env_file(native), script.into_bytes()),
            (self.env_json_file(native), json),
        ] {
            mahavishnu_core::paths::write_private_file(&file, &bytes)
                .map_err(|e| Error::io(format!("cannot write {}", file.display()), e))?;
        }
        Ok(())
    }

    /// The spec stored on a session holds the names of its environment variables only; the values
    /// come back from the private file.
    fn with_env_values(&self, mut spec: LaunchSpec) -> LaunchSpec {
        if let Ok(bytes) = std::fs::read(self.env_json_file(spec.id.native()))
            && let Ok(values) = serde_json::from_slice(&bytes)
        {
            spec.env = values;
        }
        spec
    }

    fn remove_session_files(&self, native: &str) {
        for file in [
            self.exit_file(native),
            self.env_file(native),
            self.env_json_file(native),
        ] {
            let _ = std::fs::remove_file(file);
        }
    }

    fn recorded_exit(&self, native: &str) -> Option<i32> {
        std::fs::read_to_string(self.exit_file(native))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Runs tmux with `args` (several commands may be chained with `;`) and returns its stdout.
    async fn tmux(&self, args: &[String]) -> Result<String> {
        let output = tokio::process::Command::new(&self.program)
            .arg("-L")
            .arg(&self.socket_name)
            .arg("-f")
            .arg("/dev/null")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| self.spawn_error(e))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        Err(TmuxError::classify(&stderr).into_error(&self.name))
    }

    /// Runs commands that only read: through this process's control client of the server when one
    /// runs (`serve`), else through the relay to a running `serve`, else by spawning tmux.
    async fn tmux_read(&self, args: &[String]) -> Result<String> {
        let answer = match crate::tmux_control::running(&self.socket_name) {
            Some(client) => client.command(args).await,
            None => match crate::tmux_control::relay() {
                Some(relay) => relay.run(&self.socket_name, args).await,
                None => None,
            },
        };
        match answer {
            Some(Ok(out)) => Ok(out),
            Some(Err(message)) => Err(TmuxError::classify(&message).into_error(&self.name)),
            None => self.tmux(args).await,
        }
    }

    /// The socket name of the tmux server (`tmux -L NAME`).
    pub fn socket_name(&self) -> &str {
        &self.socket_name
    }

    /// The tmux executable this target runs.
    pub fn program(&self) -> &str {
        &self.program
    }

    fn spawn_error(&self, error: std::io::Error) -> Error {
        if error.kind() == std::io::ErrorKind::NotFound {
            Error::TargetNotReady {
                target: self.name.clone(),
                reason: format!(
                    "`{}` is not installed (not found on PATH); install tmux (`apt install tmux`, `brew install tmux`), \
                     set targets.tmux.program, or use `--target pty`",
                    self.program
                ),
            }
        } else {
            Error::target(
                &self.name,
                format!("cannot run `{}`: {error}", self.program),
            )
        }
    }

    /// Pane facts of one session: pid, whether dead, current path and the stored spec.
    async fn pane(&self, native: &str) -> Result<PaneFacts> {
        let format =
            format!("#{{pane_pid}}\t#{{pane_dead}}\t#{{pane_current_path}}\t#{{{SPEC_OPTION}}}");
        let out = self
            .tmux(&args([
                "display-message",
                "-p",
                "-t",
                &exact(native),
                &format,
            ]))
            .await
            .map_err(|e| e.for_session(&self.name, native))?;
        let mut fields = out.trim_end_matches('\n').splitn(4, '\t');
        let pid = fields.next().and_then(|pid| pid.parse().ok());
        let dead = fields.next() == Some("1");
        let cwd = fields
            .next()
            .filter(|cwd| !cwd.is_empty())
            .map(PathBuf::from);
        let spec = fields
            .next()
            .and_then(|spec| serde_json::from_str::<LaunchSpec>(spec).ok())
            .map(|spec| self.with_env_values(spec));
        Ok(PaneFacts {
            pid,
            dead,
            cwd,
            spec,
        })
    }
}

struct PaneFacts {
    pid: Option<u32>,
    dead: bool,
    cwd: Option<PathBuf>,
    spec: Option<LaunchSpec>,
}

/// tmux's failures, sorted into the ones Mahavishnu reacts to.
enum TmuxError {
    NoServer,
    NoSession,
    Other(String),
}

impl TmuxError {
    fn classify(stderr: &str) -> TmuxError {
        // A server whose last session just ended exits while a client is still talking to it:
        // tmux then says "server exited unexpectedly". Either way the server is gone.
        // A server left with no session says "no current target" to `list-panes -a` until it exits.
        if stderr.starts_with("no server running")
            || stderr.starts_with("error connecting to")
            || stderr.starts_with("server exited unexpectedly")
            || stderr.starts_with("no current target")
        {
            TmuxError::NoServer
        } else if stderr.starts_with("can't find session") || stderr.starts_with("can't find pane")
        {
            TmuxError::NoSession
        } else {
            TmuxError::Other(stderr.to_string())
        }
    }
}

impl TmuxError {
    fn into_error(self, target: &TargetName) -> Error {
        match self {
            TmuxError::NoServer => Error::target(target, NO_SERVER),
            TmuxError::NoSession => Error::target(target, NO_SESSION),
            TmuxError::Other(message) => Error::target(target, format!("tmux failed: {message}")),
        }
    }
}

/// Whether tmux only said that the session, or the whole server, is gone.
fn is_gone(error: &Error) -> bool {
    matches!(error, Error::Target { message, .. } if message == NO_SESSION || message == NO_SERVER)
}

trait ForSession {
    fn for_session(self, target: &TargetName, native: &str) -> Error;
}

impl ForSession for Error {
    /// Turns "no server"/"no session" into the unknown-instance error a user understands.
    fn for_session(self, target: &TargetName, native: &str) -> Error {
        if is_gone(&self) {
            Error::UnknownInstance {
                id: format!("{}:{native}", target.id_prefix()),
            }
        } else {
            self
        }
    }
}

fn exact(native: &str) -> String {
    format!("={native}:")
}

fn args<const N: usize>(words: [&str; N]) -> Vec<String> {
    words.iter().map(|word| word.to_string()).collect()
}

/// Drops tmux's "Pane is dead" line and the blank lines around the end of a dead pane's capture.
fn trim_dead_pane(text: &str, rows: usize) -> String {
    let mut lines: Vec<&str> = text.lines().collect();
    while lines
        .last()
        .is_some_and(|line| line.trim().is_empty() || line.starts_with("Pane is dead"))
    {
        lines.pop();
    }
    let start = lines.len().saturating_sub(rows);
    let mut out = lines[start..].join("\n");
    out.push('\n');
    out
}

#[async_trait]
impl Target for TmuxTarget {
    fn name(&self) -> &TargetName {
        &self.name
    }

    fn kind(&self) -> TargetKind {
        KIND
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

    fn location(&self) -> String {
        format!("tmux server `-L {}`", self.socket_name)
    }

    fn attach_command(&self, native: &str) -> Result<Vec<String>> {
        Ok(vec![
            self.program.clone(),
            "-L".into(),
            self.socket_name.clone(),
            "attach-session".into(),
            "-t".into(),
            exact(native),
        ])
    }

    async fn preflight(&self) -> Preflight {
        let version = tokio::process::Command::new(&self.program)
            .arg("-V")
            .output()
            .await;
        let (ready, detail) = match version {
            Ok(output) if output.status.success() => (
                true,
                format!(
                    "{} (server `-L {}`)",
                    String::from_utf8_lossy(&output.stdout).trim(),
                    self.socket_name
                ),
            ),
            Ok(output) => (
                false,
                format!(
                    "`{} -V` failed: {}",
                    self.program,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ),
            Err(error) => match self.spawn_error(error) {
                Error::TargetNotReady { reason, .. } => (false, reason),
                other => (false, other.to_string()),
            },
        };
        Preflight {
            target: self.name.clone(),
            ready,
            detail,
        }
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Observation> {
        let name = spec.id.native().to_string();
        let mut names_only = spec.clone();
        names_only.env.values_mut().for_each(String::clear);
        let spec_json = serde_json::to_string(&names_only)
            .map_err(|e| Error::target(&self.name, e.to_string()))?;
        let mut argv: Vec<String> = args([
            "start-server",
            ";",
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
            ";",
        ]);
        argv.extend(args(["set-option", "-g", "history-limit"]));
        argv.push(self.history_limit.to_string());
        argv.push(";".into());
        argv.extend(args(["new-session", "-d", "-s", &name, "-x"]));
        argv.push(spec.cols.to_string());
        argv.push("-y".into());
        argv.push(spec.rows.to_string());
        argv.push("-c".into());
        argv.push(spec.cwd.to_string_lossy().into_owned());
        argv.extend(args([
            "-P",
            "-F",
            "#{pane_pid}",
            "--",
            "/bin/sh",
            "-c",
            EXIT_WRAPPER,
            "mahavishnu",
        ]));
        mahavishnu_core::paths::ensure_private_dir(&self.exits)?;
        self.remove_session_files(&name);
        argv.push(self.exit_file(&name).to_string_lossy().into_owned());
        if spec.env.is_empty() {
            argv.push(String::new());
        } else {
            self.write_env(&name, &spec.env)?;
            argv.push(self.env_file(&name).to_string_lossy().into_owned());
        }
        argv.extend(spec.command.iter().cloned());
        argv.push(";".into());
        argv.extend(args([
            "set-option",
            "-t",
            &exact(&name),
            SPEC_OPTION,
            &spec_json,
        ]));
        let mut attempt = self.tmux(&argv).await;
        if matches!(&attempt, Err(Error::Target { message, .. }) if message == NO_SERVER) {
            // The server was exiting (its last session had just been closed) when this client
            // reached it; the next client starts a fresh one.
            tokio::time::sleep(Duration::from_millis(50)).await;
            attempt = self.tmux(&argv).await;
        }
        let out = match attempt {
            Ok(out) => out,
            Err(Error::Target { message, .. }) if message.contains("duplicate session") => {
                return Err(Error::Invalid(format!(
                    "an instance named `{name}` already runs on tmux; choose another --name"
                )));
            }
            Err(error) => {
                // A half-done launch leaves nothing behind.
                let _ = self
                    .tmux(&args(["kill-session", "-t", &exact(&name)]))
                    .await;
                return Err(error);
            }
        };
        let wrapper: Option<u32> = out.lines().next().and_then(|pid| pid.trim().parse().ok());
        let pid = match wrapper {
            Some(wrapper) => self
                .record_program_pid(&name, wrapper)
                .await
                .or(Some(wrapper)),
            None => None,
        };
        Ok(Observation {
            native: name,
            status: ObservedStatus::Running,
            idle_ms: Some(0),
            foreground_job: None,
            pid,
        })
    }

    async fn list(&self) -> Result<Vec<Observation>> {
        let format = format!(
            "#{{session_name}}\t#{{pane_pid}}\t#{{pane_dead}}\t#{{pane_dead_status}}\t#{{pane_dead_signal}}\t#{{window_activity}}\t#{{{PID_OPTION}}}"
        );
        let out = match self
            .tmux_read(&args(["list-panes", "-a", "-F", &format]))
            .await
        {
            Ok(out) => out,
            Err(error) if is_gone(&error) => return Ok(vec![]),
            Err(error) => return Err(error),
        };
        let now_ms = Timestamp::now().0;
        let mut seen = std::collections::HashSet::new();
        let mut observations = Vec::new();
        for line in out.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let [name, pid, dead, status, signal, activity, program] = fields[..] else {
                continue;
            };
            if !seen.insert(name.to_string()) {
                continue; // a user split the window; the first pane is the instance
            }
            let wrapper: Option<u32> = pid.parse().ok();
            let program: Option<u32> = program.parse().ok();
            let status = if dead == "1" {
                let code = self
                    .recorded_exit(name)
                    .or_else(|| status.parse().ok())
                    .or_else(|| {
                        signal
                            .parse()
                            .ok()
                            .map(mahavishnu_core::process::signal_exit_code)
                    });
                ObservedStatus::Exited(code.unwrap_or(-1))
            } else {
                ObservedStatus::Running
            };
            // window_activity has one-second resolution: subtract a second so idle time is never overstated.
            let idle_ms = activity
                .parse::<i64>()
                .ok()
                .map(|seconds| (now_ms - seconds * 1000 - 1000).max(0) as u64);
            observations.push(Observation {
                native: name.to_string(),
                status,
                idle_ms,
                // In front is the wrapper's group (which a program without job control shares) or the
                // program's own (a shell at its prompt); any other group is a job.
                foreground_job: wrapper
                    .filter(|_| dead != "1")
                    .and_then(procfs::foreground_group)
                    .map(|group| Some(group) != wrapper && Some(group) != program),
                pid: program.or(wrapper),
            });
        }
        Ok(observations)
    }

    async fn exec(&self, native: &str, request: &ExecRequest) -> Result<ExecOutput> {
        let pane = self.pane(native).await?;
        let spec_cwd = pane.spec.as_ref().map(|spec| spec.cwd.clone());
        let cwd = pane.cwd.or(spec_cwd).ok_or_else(|| {
            Error::target(
                &self.name,
                format!("cannot tell the working directory of `{native}`"),
            )
        })?;
        let env = pane.spec.map(|spec| spec.env).unwrap_or_default();
        run_side_command(&self.name, request, &cwd, &env).await
    }

    async fn send(&self, native: &str, input: &[InputPart]) -> Result<()> {
        let target = exact(native);
        let mut argv = Vec::new();
        for part in input {
            match part {
                InputPart::Text(text) if text.is_empty() => continue,
                InputPart::Text(text) => {
                    argv.extend(args(["send-keys", "-t", &target, "-l", "--"]));
                    argv.push(text.clone());
                }
                InputPart::Key(key) => {
                    argv.extend(args(["send-keys", "-t", &target, "--"]));
                    argv.push(key.to_string());
                }
            }
            argv.push(";".into());
        }
        if argv.is_empty() {
            return Ok(());
        }
        argv.pop();
        self.tmux(&argv)
            .await
            .map(drop)
            .map_err(|e| e.for_session(&self.name, native))
    }

    /// The session's window takes the size (tmux then keeps it, whatever size clients have).
    async fn resize(&self, native: &str, rows: u16, cols: u16) -> Result<()> {
        let argv = vec![
            "resize-window".to_string(),
            "-t".into(),
            exact(native),
            "-x".into(),
            cols.to_string(),
            "-y".into(),
            rows.to_string(),
        ];
        self.tmux(&argv)
            .await
            .map(drop)
            .map_err(|e| e.for_session(&self.name, native))
    }

    async fn screen(&self, native: &str, options: ScreenOptions) -> Result<String> {
        let target = exact(native);
        let format = "#{pane_dead}\t#{pane_height}";
        let mut argv = args([
            "display-message",
            "-p",
            "-t",
            &target,
            format,
            ";",
            "capture-pane",
            "-p",
            "-t",
            &target,
        ]);
        if options.ansi {
            argv.push("-e".into());
        }
        if options.scrollback {
            argv.extend(args(["-S", "-"]));
        }
        let out = self
            .tmux_read(&argv)
            .await
            .map_err(|e| e.for_session(&self.name, native))?;
        let (head, text) = out.split_once('\n').unwrap_or((&out, ""));
        let (dead, height) = head.split_once('\t').unwrap_or((head, "0"));
        if dead != "1" {
            return Ok(text.to_string());
        }
        // A dead pane's last screen has been pushed into the history by tmux's "Pane is dead" line.
        let mut argv = args(["capture-pane", "-p", "-t", &target, "-S", "-"]);
        if options.ansi {
            argv.push("-e".into());
        }
        let all = self
            .tmux_read(&argv)
            .await
            .map_err(|e| e.for_session(&self.name, native))?;
        let rows = if options.scrollback {
            usize::MAX
        } else {
            height.parse().unwrap_or(50)
        };
        Ok(trim_dead_pane(&all, rows))
    }

    async fn screens(&self, natives: &[String]) -> Vec<Result<String>> {
        if natives.is_empty() {
            return vec![];
        }
        let mut argv = Vec::new();
        for native in natives {
            let target = exact(native);
            argv.extend(args([
                "display-message",
                "-p",
                "-t",
                &target,
                SCREEN_MARKER,
            ]));
            argv.extend(args([";", "capture-pane", "-p", "-t", &target, ";"]));
        }
        argv.pop();
        match self.tmux_read(&argv).await {
            Ok(out) => {
                let mut parts: Vec<Result<String>> = out
                    .split(&format!("{SCREEN_MARKER}\n"))
                    .skip(1)
                    .map(|part| Ok(part.to_string()))
                    .collect();
                parts.resize_with(natives.len(), || {
                    Err(Error::target(&self.name, "no screen returned"))
                });
                parts
            }
            // One missing session fails the whole chain: fall back to one capture each.
            Err(_) => {
                let mut screens = Vec::with_capacity(natives.len());
                for native in natives {
                    screens.push(self.screen(native, ScreenOptions::default()).await);
                }
                screens
            }
        }
    }

    /// Known while this process holds a control client of the server (`serve`).
    fn screen_changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        crate::tmux_control::running(&self.socket_name).map(|client| client.subscribe_changes())
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
        self.remove_session_files(native);
        let processes = match self.pane(native).await {
            Ok(pane) if !pane.dead => {
                let pids: Vec<u32> = pane
                    .pid
                    .into_iter()
                    .chain(pane.pid.and_then(procfs::first_child))
                    .collect();
                PaneProcesses::capture(&pids)
            }
            Ok(_) => PaneProcesses::capture(&[]),
            Err(Error::UnknownInstance { .. }) => return Ok(()),
            Err(error) => return Err(error),
        };
        // kill-session closes the pane's terminal: its processes get SIGHUP, as when a window closes.
        match self
            .tmux(&args(["kill-session", "-t", &exact(native)]))
            .await
        {
            Ok(_) => {}
            Err(error) if is_gone(&error) => {}
            Err(error) => return Err(error),
        }
        processes.kill_after_grace(grace).await;
        Ok(())
    }

    /// Ends many sessions with two tmux calls (one to find their processes, one to kill them all) and
    /// one grace period for all of their processes, instead of one after another.
    async fn stop_many(
        &self,
        natives: &[String],
        grace: Duration,
        limit: usize,
    ) -> Vec<Result<()>> {
        if natives.len() < 2 {
            let mut results = Vec::with_capacity(natives.len());
            for native in natives {
                results.push(self.stop(native, grace).await);
            }
            return results;
        }
        for native in natives {
            self.remove_session_files(native);
        }
        let panes = match self
            .tmux(&args([
                "list-panes",
                "-a",
                "-F",
                "#{session_name}\t#{pane_pid}\t#{pane_dead}",
            ]))
            .await
        {
            Ok(out) => out,
            Err(error) if is_gone(&error) => return natives.iter().map(|_| Ok(())).collect(),
            Err(error) => {
                let message = error.to_string();
                return natives
                    .iter()
                    .map(|_| Err(Error::target(&self.name, message.clone())))
                    .collect();
            }
        };
        let wanted: std::collections::HashSet<&str> = natives.iter().map(String::as_str).collect();
        let mut present = Vec::new();
        let mut pids = Vec::new();
        for line in panes.lines() {
            let mut fields = line.split('\t');
            let (Some(name), Some(pid), Some(dead)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if !wanted.contains(name) || present.contains(&name) {
                continue;
            }
            present.push(name);
            if dead != "1"
                && let Ok(pid) = pid.parse::<u32>()
            {
                pids.push(pid);
                pids.extend(procfs::first_child(pid));
            }
        }
        let processes = PaneProcesses::capture(&pids);
        // One tmux call for all of them; a session that vanished meanwhile makes tmux stop the
        // chain, so then each one left is killed on its own.
        let mut chained = Vec::new();
        for name in &present {
            if !chained.is_empty() {
                chained.push(";".to_string());
            }
            chained.extend(args(["kill-session", "-t", &exact(name)]));
        }
        let mut failed: Vec<(String, Error)> = Vec::new();
        if !present.is_empty() && self.tmux(&chained).await.is_err() {
            let mut results: Vec<(String, Result<String>)> = Vec::new();
            for batch in present.chunks(limit.max(1)) {
                let commands: Vec<Vec<String>> = batch
                    .iter()
                    .map(|name| args(["kill-session", "-t", &exact(name)]))
                    .collect();
                let kills: Vec<_> = commands.iter().map(|command| self.tmux(command)).collect();
                let killed = futures::future::join_all(kills).await;
                results.extend(batch.iter().map(|name| name.to_string()).zip(killed));
            }
            for (name, killed) in results {
                match killed {
                    Err(error) if !is_gone(&error) => failed.push((name, error)),
                    _ => {}
                }
            }
        }
        processes.kill_after_grace(grace).await;
        natives
            .iter()
            .map(
                |native| match failed.iter().position(|(name, _)| name == native) {
                    Some(index) => Err(Error::target(&self.name, failed[index].1.to_string())),
                    None => Ok(()),
                },
            )
            .collect()
    }

    async fn recover(&self) -> Result<Vec<LaunchSpec>> {
        let format = format!("#{{{SPEC_OPTION}}}");
        let out = match self.tmux(&args(["list-sessions", "-F", &format])).await {
            Ok(out) => out,
            Err(error) if is_gone(&error) => return Ok(vec![]),
            Err(error) => return Err(error),
        };
        Ok(out
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .map(|spec| self.with_env_values(spec))
            .collect())
    }
}

/// The processes of a pane, identified so that a pid reused by another process after they end is
/// never signalled: tmux reaps them, and pids come round again on a busy machine.
struct PaneProcesses {
    /// (pid, start time, process group) of each, taken while they are known to be alive.
    members: Vec<(u32, u64, Option<i32>)>,
}

impl PaneProcesses {
    fn capture(pids: &[u32]) -> Self {
        let members = pids
            .iter()
            .filter_map(|&pid| {
                let started = procfs::start_time(pid)?;
                let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32))).ok();
                Some((pid, started, group.map(|group| group.as_raw())))
            })
            .collect();
        PaneProcesses { members }
    }

    /// The members that are still the same processes.
    fn alive(&self) -> impl Iterator<Item = &(u32, u64, Option<i32>)> {
        self.members
            .iter()
            .filter(|(pid, started, _)| procfs::running_since(*pid) == Some(*started))
    }

    /// Waits up to `grace` for every member to end, then kills those still running and their groups.
    async fn kill_after_grace(&self, grace: Duration) {
        use nix::sys::signal::{Signal, kill, killpg};
        use nix::unistd::Pid;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.alive().next().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (pid, _, group) in self.alive() {
            if let Some(group) = group {
                let _ = killpg(Pid::from_raw(*group), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
}
