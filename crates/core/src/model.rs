//! The core model: targets, instance ids, instances and their states, and the values that cross the
//! `Target` trait.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Where an instance runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A session on Mahavishnu's private tmux server.
    Tmux,
    /// A native PTY held by its own host process.
    Pty,
    /// A pod on a Kubernetes cluster.
    Kubernetes,
    /// A Google Cloud project on Cloud Run (deployments; no built-in target).
    Cloudrun,
}

impl TargetKind {
    /// Every kind with a built-in target of its name, in display order.
    pub const ALL: [TargetKind; 3] = [TargetKind::Tmux, TargetKind::Pty, TargetKind::Kubernetes];

    /// The user-facing name (`kind = "..."` in a target's config, and the built-in target's name).
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Tmux => "tmux",
            TargetKind::Pty => "pty",
            TargetKind::Kubernetes => "kubernetes",
            TargetKind::Cloudrun => "cloudrun",
        }
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TargetKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tmux" => Ok(TargetKind::Tmux),
            "pty" => Ok(TargetKind::Pty),
            "kubernetes" | "k8s" => Ok(TargetKind::Kubernetes),
            "cloudrun" | "cloud-run" => Ok(TargetKind::Cloudrun),
            other => Err(Error::Invalid(format!(
                "unknown target kind `{other}`; choose one of: tmux, pty, kubernetes, cloudrun"
            ))),
        }
    }
}

/// A target's name: the key it is configured and registered under (`[targets.prod-eu]`), and what the
/// ids of its instances start with. The built-in targets are named after their kinds; the built-in
/// `kubernetes` target's ids start with `k8s`, as they always have.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetName(String);

/// The id prefix of the built-in `kubernetes` target.
const KUBERNETES_ID_PREFIX: &str = "k8s";

impl TargetName {
    /// Checks a name: a lowercase letter, then lowercase letters, digits and `-`, at most 32 in all,
    /// so that ids stay short and need no quoting.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let valid = name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(Error::Invalid(format!(
                "`{name}` is not a target name; use a lowercase letter, then lowercase letters, digits and \
                 `-` (at most 32), e.g. `prod-eu`"
            )));
        }
        if name == KUBERNETES_ID_PREFIX {
            return Err(Error::Invalid(format!(
                "`{name}` is the id prefix of the built-in `kubernetes` target and cannot name another; \
                 choose another name"
            )));
        }
        Ok(TargetName(name))
    }

    /// The built-in target of a kind (`tmux`, `pty`, `kubernetes`).
    pub fn builtin(kind: TargetKind) -> Self {
        TargetName(kind.name().to_string())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the built-in target of a kind.
    pub fn is_builtin(&self) -> bool {
        TargetKind::ALL.iter().any(|kind| kind.name() == self.0)
    }

    /// What the ids of its instances start with.
    pub fn id_prefix(&self) -> &str {
        if self.0 == TargetKind::Kubernetes.name() {
            KUBERNETES_ID_PREFIX
        } else {
            &self.0
        }
    }

    /// The target an id prefix names.
    fn from_id_prefix(prefix: &str) -> Result<Self> {
        if prefix == KUBERNETES_ID_PREFIX {
            return Ok(TargetName::builtin(TargetKind::Kubernetes));
        }
        TargetName::new(prefix)
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TargetName {
    type Err = Error;

    /// A target's name as a user gives it (`--target`); `k8s`, the built-in kubernetes target's id
    /// prefix, names that target too.
    fn from_str(s: &str) -> Result<Self> {
        TargetName::from_id_prefix(s)
    }
}

impl PartialEq<str> for TargetName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl Serialize for TargetName {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TargetName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TargetName::new(text).map_err(serde::de::Error::custom)
    }
}

/// `<target>:<native id>`, e.g. `tmux:mv-7f3a`. The prefix routes a call to its target; the whole id is
/// safe to print, paste and pass to a shell.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    target: TargetName,
    native: String,
}

impl InstanceId {
    /// Builds an id, checking that the native part is shell-safe.
    pub fn new(target: TargetName, native: impl Into<String>) -> Result<Self> {
        let native = native.into();
        let shown = format!("{}:{native}", target.id_prefix());
        check_native_id(&native).map_err(|reason| Error::InvalidId { id: shown, reason })?;
        Ok(InstanceId { target, native })
    }

    /// The name of the target this instance lives on.
    pub fn target(&self) -> &TargetName {
        &self.target
    }

    /// The target's own name for the instance (tmux session name, pty session name, `ns/pod`).
    pub fn native(&self) -> &str {
        &self.native
    }
}

fn check_native_id(native: &str) -> std::result::Result<(), String> {
    if native.is_empty() {
        return Err("the part after the colon is empty".into());
    }
    if native.len() > 128 {
        return Err("it is longer than 128 characters".into());
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if let Some(bad) = native.chars().find(|&c| !safe(c)) {
        return Err(format!(
            "it contains `{}`; only letters, digits, `-`, `_`, `.` and `/` are allowed",
            bad.escape_default()
        ));
    }
    if native.starts_with(['-', '.', '/'])
        || native
            .split('/')
            .any(|part| part == ".." || part.is_empty())
    {
        return Err(
            "it must not start with `-`, `.` or `/`, nor contain empty or `..` parts".into(),
        );
    }
    Ok(())
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.target.id_prefix(), self.native)
    }
}

impl FromStr for InstanceId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidId {
            id: s.to_string(),
            reason: reason.to_string(),
        };
        let (prefix, native) = s
            .split_once(':')
            .ok_or_else(|| invalid("it has no `<target>:` prefix"))?;
        let target = TargetName::from_id_prefix(prefix).map_err(|_| {
            invalid(&format!(
                "`{prefix}` is not a target's name (`tmux`, `pty`, `k8s` or a configured one)"
            ))
        })?;
        InstanceId::new(target, native)
    }
}

impl Serialize for InstanceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for InstanceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What an instance is doing, as far as Mahavishnu can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Recorded, not yet confirmed by its target.
    Starting,
    /// The program runs and is busy (output changes, or it shows no sign of waiting).
    Running,
    /// The program waits for input.
    Waiting,
    /// The program ended; `exit_code` says how.
    Exited,
    /// The target could not start it.
    Failed,
    /// The target no longer knows it (its host or server vanished).
    Lost,
    /// Closed by the user.
    Closed,
    /// Paused: its work is committed on its branch and its worktree removed until it is resumed.
    Paused,
}

impl InstanceState {
    /// The name used in tables, JSON and the store.
    pub fn name(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Running => "running",
            InstanceState::Waiting => "waiting",
            InstanceState::Exited => "exited",
            InstanceState::Failed => "failed",
            InstanceState::Lost => "lost",
            InstanceState::Closed => "closed",
            InstanceState::Paused => "paused",
        }
    }

    /// Whether the program may still be running on its target.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            InstanceState::Starting | InstanceState::Running | InstanceState::Waiting
        )
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InstanceState {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        [
            InstanceState::Starting,
            InstanceState::Running,
            InstanceState::Waiting,
            InstanceState::Exited,
            InstanceState::Failed,
            InstanceState::Lost,
            InstanceState::Closed,
            InstanceState::Paused,
        ]
        .into_iter()
        .find(|state| state.name() == s)
        .ok_or_else(|| Error::Store(format!("unknown instance state `{s}` in the store")))
    }
}

/// Milliseconds since the Unix epoch; shown as RFC 3339.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since.as_millis() as i64)
    }

    /// Time elapsed since this timestamp (zero if it lies in the future).
    pub fn age(self) -> Duration {
        Duration::from_millis(Timestamp::now().0.saturating_sub(self.0).max(0) as u64)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        write!(f, "{}", humantime::format_rfc3339_millis(time))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let time = humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)?;
        let millis = time
            .duration_since(UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis();
        Ok(Timestamp(millis as i64))
    }
}

/// How to tell that a program waits for input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WaitingRules {
    /// Regular expressions; any match on the screen (with the screen idle) means "waiting".
    #[serde(default)]
    pub patterns: Vec<String>,
    /// How long the screen must stay unchanged before the program counts as waiting.
    pub idle_ms: u64,
    /// A shell: waiting means "prompt back and no foreground job".
    #[serde(default)]
    pub shell: bool,
    /// Regular expressions for questions of the program's own (trust this folder, allow this command):
    /// a match (with the screen idle) means waiting, on that question.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub questions: Vec<String>,
    /// Regular expressions of the program's own sign that it works (a spinner's `esc to cancel`): a
    /// match means not waiting, whatever else the screen shows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub busy: Vec<String>,
}

/// One instance: a program running (or having run) on a target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Instance {
    /// `<target>:<native id>`.
    pub id: InstanceId,
    /// The profile it was launched from.
    pub profile: String,
    /// The name of the target it runs on.
    pub target: TargetName,
    /// What it is doing.
    pub state: InstanceState,
    /// The exit code once `state` is `exited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The working directory it was started in.
    pub cwd: PathBuf,
    /// The project it belongs to: the git work tree around `cwd`, or `cwd` itself.
    pub project: PathBuf,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// The process id on the host, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// How its waiting state is detected.
    pub waiting: WaitingRules,
    /// Pause between typed text and the Enter that submits it, for programs that take fast input for
    /// a paste.
    #[serde(default)]
    pub submit_delay_ms: u64,
    /// The question of the program's own that it waits on (trust this folder?), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// When it was recorded.
    pub created_at: Timestamp,
    /// When its record last changed.
    pub updated_at: Timestamp,
    /// The git worktree it works in, for sessions launched with `--worktree`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<WorktreeRecord>,
    /// Why its state is unknown right now (its target could not be asked, or is not configured any
    /// more); its recorded state is as last seen. Never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

impl Instance {
    /// Its state as people read it: `running`, `exited(3)`, `waiting: Trust this folder?`, or
    /// `unknown: why` when its target could not be asked.
    pub fn state_label(&self) -> String {
        if let Some(reason) = &self.unknown {
            return format!("unknown: {reason}");
        }
        match (self.state, self.exit_code) {
            (InstanceState::Exited, Some(code)) => format!("exited({code})"),
            (InstanceState::Waiting, _) if self.question.is_some() => {
                format!("waiting: {}", self.question.as_deref().unwrap_or_default())
            }
            (state, _) => state.to_string(),
        }
    }
}

/// A session's own git worktree and branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorktreeRecord {
    /// The worktree's directory.
    pub path: PathBuf,
    /// Its branch.
    pub branch: String,
    /// The commit it started from.
    pub base: String,
    /// The main work tree of the repository.
    pub repository: PathBuf,
    /// The first of its ports (`PORT`, `MAHAVISHNU_PORT_BASE`).
    pub port_base: u16,
}

/// Everything a target needs to start one instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// The id the instance will have.
    pub id: InstanceId,
    /// The profile's name, for labels and recovery.
    pub profile: String,
    /// The program (a resolved path) followed by its arguments.
    pub command: Vec<String>,
    /// The working directory.
    pub cwd: PathBuf,
    /// Environment variables added to the program's environment.
    pub env: BTreeMap<String, String>,
    /// Terminal size.
    pub rows: u16,
    /// Terminal size.
    pub cols: u16,
    /// Labels recorded with the instance.
    pub labels: BTreeMap<String, String>,
    /// What container targets need; ignored by terminal targets.
    #[serde(default)]
    pub container: ContainerSpec,
}

/// The parts of a launch only container targets use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The image (else the target's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resource requests and limits.
    #[serde(default)]
    pub resources: crate::config::ResourcesConfig,
    /// Whether the program gets a terminal and stdin.
    #[serde(default = "interactive_default")]
    pub interactive: bool,
    /// The working directory inside the container, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
}

fn interactive_default() -> bool {
    true
}

impl Default for ContainerSpec {
    fn default() -> Self {
        ContainerSpec {
            image: None,
            resources: Default::default(),
            interactive: true,
            working_dir: None,
        }
    }
}

/// What a target reports about one of its instances.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The target's own id.
    pub native: String,
    /// Whether it runs, and how it ended.
    pub status: ObservedStatus,
    /// Milliseconds since its screen last changed, where the target can tell.
    pub idle_ms: Option<u64>,
    /// Whether a job other than the program itself holds the terminal's foreground.
    pub foreground_job: Option<bool>,
    /// The program's process id.
    pub pid: Option<u32>,
}

/// Whether an observed program still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObservedStatus {
    /// It runs.
    Running,
    /// It ended with this code (128 + signal when killed by a signal).
    Exited(i32),
}

/// A side command run to completion in an instance's environment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The program and its arguments; never passed through a shell.
    pub command: Vec<String>,
    /// How long it may run before it is killed.
    pub timeout: Duration,
}

/// The outcome of a side command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// The exit code; absent when it was killed for running past its timeout.
    pub exit_code: Option<i32>,
    /// Its standard output, lossily decoded as UTF-8.
    pub stdout: String,
    /// Its standard error, lossily decoded as UTF-8.
    pub stderr: String,
    /// How long it ran.
    pub duration_ms: u64,
    /// Whether it was killed for running past its timeout.
    pub timed_out: bool,
}

impl ExecOutput {
    /// A command that ended (with `exit_code`, when it has one) after starting at `started`.
    pub fn finished(
        exit_code: Option<i32>,
        stdout: &[u8],
        stderr: &[u8],
        started: std::time::Instant,
    ) -> Self {
        ExecOutput {
            exit_code,
            stdout: String::from_utf8_lossy(stdout).into_owned(),
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            duration_ms: started.elapsed().as_millis() as u64,
            timed_out: false,
        }
    }

    /// A command that was stopped after `timeout`.
    pub fn timed_out(timeout: Duration, started: std::time::Instant) -> Self {
        ExecOutput {
            exit_code: None,
            stdout: String::new(),
            stderr: format!("killed after the timeout of {:.1}s", timeout.as_secs_f64()),
            duration_ms: started.elapsed().as_millis() as u64,
            timed_out: true,
        }
    }
}

/// What `screen` should return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenOptions {
    /// Include the scrollback history above the visible screen.
    pub scrollback: bool,
    /// Keep the escape codes for colours and attributes.
    pub ansi: bool,
}

/// One piece of input for the interactive program; `send` takes a sequence of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputPart {
    /// Text typed literally, never interpreted by a shell.
    Text(String),
    /// A named key.
    Key(crate::keys::Key),
}

impl InputPart {
    /// `text` typed literally, then Enter when `enter`.
    pub fn line(text: String, enter: bool) -> Vec<InputPart> {
        let mut input = vec![InputPart::Text(text)];
        if enter {
            input.push(InputPart::Key(crate::keys::Key::Named(
                crate::keys::NamedKey::Enter,
            )));
        }
        input
    }

    /// The bytes a terminal would receive for this input.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            InputPart::Text(text) => text.as_bytes().to_vec(),
            InputPart::Key(key) => key.to_bytes(),
        }
    }
}

/// A target's preflight verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preflight {
    /// The target's name.
    pub target: TargetName,
    /// Ready to launch instances.
    pub ready: bool,
    /// What was found (version, socket, ...) or exactly why it is not ready.
    pub detail: String,
}

/// What a target can do, one question each. An operation a target does not declare returns
/// `Error::Unsupported` from it: it never pretends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `screen` works: there is a rendered terminal screen to read.
    pub screen: bool,
    /// `send` works: text and keys can be typed into the program.
    pub send: bool,
    /// `exec` works: a side command runs in the instance's environment.
    pub exec: bool,
    /// `logs` works: the program's output so far, as text.
    pub logs: bool,
    /// `recover` works: running instances can be re-adopted after their records were lost.
    pub recover: bool,
    /// A user can attach a terminal to an instance.
    pub attach: bool,
    /// Instances outlive the process that launched them.
    pub persistent: bool,
    /// Programs are found on this machine's `PATH`, and run with this machine's files: launches
    /// resolve their program here, take working directories from here, and can work in a git worktree
    /// made here. Otherwise (a container) the program and the working directory are the image's.
    pub host_processes: bool,
}

/// Checks that `name` can be an environment variable's name (letters, digits and `_`, not starting
/// with a digit), so that it passes through any shell as itself.
pub fn check_env_name(name: &str) -> crate::Result<()> {
    let valid = name
        .bytes()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(crate::Error::Invalid(format!(
            "`{name}` is not an environment variable name; use letters, digits and `_`, not starting with \
             a digit (`-e API_KEY=...`)"
        )))
    }
}
