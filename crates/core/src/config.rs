//! Layered TOML configuration: built-in defaults, the user's file, the project's `.mahavishnu.toml`,
//! `MAHAVISHNU_*` environment variables, then flags. Every value remembers the layer it came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::error::{Error, Result};
use crate::model::{TargetKind, WaitingRules};

const DEFAULTS: &str = include_str!("defaults.toml");

/// The project configuration file, found by walking up from the working directory.
pub const PROJECT_FILE: &str = ".mahavishnu.toml";

/// The merged configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Terminal sessions.
    pub terminal: TerminalConfig,
    /// Per-target settings.
    pub targets: TargetsConfig,
    /// Named recipes for instances.
    pub profiles: BTreeMap<String, ProfileConfig>,
    /// Lifecycle hooks, by event name (`[[hooks.SessionStart]]`).
    pub hooks: BTreeMap<String, Vec<HookConfig>>,
    /// The HTTP server (`mahavishnu serve`).
    pub serve: ServeConfig,
    /// Git worktrees for sessions launched with `--worktree`.
    pub worktree: WorktreeConfig,
    /// A repository's own quality checks (`[checks]`), by name; `mahavishnu check` runs them instead of
    /// the usual ones of its kind, once the file is trusted.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, CheckCommand>,
    /// Workflows (`[workflows.NAME]`): work across repositories, and when `serve` runs it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub workflows: BTreeMap<String, WorkflowConfig>,
}

/// A check as `[checks]` writes it: a command line (run by `/bin/sh -c`) or a program and its
/// arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CheckCommand {
    /// `test = "make test"`.
    Line(String),
    /// `test = ["make", "test"]`.
    Words(Vec<String>),
}

/// `[workflows.NAME]`: what to run across repositories (exactly one of `sweep`, `check`, `agent`,
/// `deploy`), and when (`schedule`, `on_event`, `on_topic`; none: only by hand).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkflowConfig {
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A cron pattern: five fields, or six with seconds first (`0 6 * * 1-5`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule's time zone (an IANA name); the machine's own when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A hook event (`SessionEnd`) of any coding session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_event: Option<String>,
    /// A Pub/Sub topic: each message runs the workflow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_topic: Option<String>,
    /// A command in every selected repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<WorkflowWork>,
    /// The checks of every selected repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<WorkflowWork>,
    /// An agent prompt in every selected repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<WorkflowWork>,
    /// A deploy of a manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<WorkflowDeploy>,
}

/// The work of a workflow's `sweep`, `check` or `agent`: which repositories of the catalog, how
/// many at once, how long each may take, and what to run there (a `command` for a sweep, a
/// `profile` and a `prompt` for an agent, nothing more for a check), as in
/// `sweep = { tag = "web", command = ["git", "pull", "--ff-only"] }`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkflowWork {
    /// Those with this tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// These, by name or path (instead of a tag; neither means all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<String>,
    /// At most this many at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<usize>,
    /// Each repository's work stops after this long (`10m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// A sweep's program and its arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// An agent's profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// What each agent is asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Each agent in a worktree of its own.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub worktree: bool,
    /// Merge the agents' worktrees whose checks pass.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub merge: bool,
    /// Where the agents' sessions run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `deploy = { manifest = "~/apps/shop/mahavishnu.deploy.toml" }`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkflowDeploy {
    /// The manifest.
    pub manifest: PathBuf,
    /// The platform (`local`, `kubernetes`, `cloudrun`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// `[worktree]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorktreeConfig {
    /// Where worktrees are made (default: the data directory's `worktrees`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Files copied from the main work tree into each new worktree (`.env`, `.env.local`, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub copy: Vec<String>,
    /// A command run in each new worktree before its session starts (placeholders as in hooks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup: Option<String>,
    /// How long the setup command may take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setup_timeout: Option<String>,
    /// Branch names are this prefix and the session's name.
    pub branch_prefix: String,
    /// The first port handed out; each session gets `port_span` ports from its own base.
    pub port_base: u16,
    /// How many ports each session gets.
    pub port_span: u16,
}

/// `[serve]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: String,
    /// `Host` header values accepted besides the loopback names (`example.com`, `example.com:8443`),
    /// for a server behind a proxy or in a container; `*` accepts any.
    pub allowed_hosts: Vec<String>,
    /// `Origin` header values (`https://app.example`) of web pages allowed to call the server, besides
    /// its own.
    pub allowed_origins: Vec<String>,
}

/// The hook events Mahavishnu knows, in Claude Code's (and Qwen Code's) names.
pub const HOOK_EVENTS: &[&str] = &[
    "SessionStart",
    "SessionEnd",
    "UserPromptSubmit",
    "Stop",
    "SubagentStop",
    "PreCompact",
    "PreToolUse",
    "PostToolUse",
    "Notification",
];

/// One `[[hooks.EVENT]]` entry: an action with its conditions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookConfig {
    /// Shown in listings and run records.
    pub name: Option<String>,
    /// A shell command; placeholders such as `{project_dir}` are shell-quoted before substitution.
    pub command: Option<String>,
    /// Launch a terminal profile.
    pub launch: Option<LaunchHook>,
    /// Close `"launched"` (what this session launched) or the live sessions of a profile.
    pub close: Option<String>,
    /// Checkpoint the project's work tree.
    pub checkpoint: Option<CheckpointHook>,
    /// Conditions; all given must hold.
    pub when: WhenConfig,
    /// How long the hook may run (`"5s"`, `"500ms"`); 30 s when not given.
    pub timeout: Option<String>,
    /// `false` skips the hook.
    pub enabled: Option<bool>,
    /// A failure blocks the caller on events that can block (UserPromptSubmit, Stop).
    pub required: bool,
}

/// `launch = { profile = "qwen", count = 1 }`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchHook {
    /// The profile.
    pub profile: String,
    /// How many sessions; one when not given.
    #[serde(default)]
    pub count: Option<usize>,
    /// The target; the profile's or the default when not given.
    #[serde(default)]
    pub target: Option<String>,
}

/// `checkpoint = true` or `checkpoint = { commit = true, message = "..." }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CheckpointHook {
    /// `true` checkpoints; `false` does nothing.
    Enabled(bool),
    /// With options.
    Options(CheckpointOptions),
}

/// Options of a checkpoint hook.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointOptions {
    /// Also commit the changes on the current branch.
    pub commit: bool,
    /// The message; a default names the session and event.
    pub message: Option<String>,
}

/// `when = { ... }`: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhenConfig {
    /// The project has at least one of these paths (relative to the project directory).
    pub project_has: Vec<String>,
    /// SessionStart's `source` is one of these (`startup`, `resume`, `clear`, `compact`).
    pub source: Vec<String>,
    /// SessionEnd's `reason` is one of these.
    pub reason: Vec<String>,
}

impl HookConfig {
    /// Whether the hook runs at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }

    /// The hook's time limit.
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
            .as_deref()
            .and_then(|text| humantime::parse_duration(text).ok())
            .unwrap_or(std::time::Duration::from_secs(30))
    }

    /// Checks the hook; the message says what to change.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let actions = [
            self.command.is_some(),
            self.launch.is_some(),
            self.close.is_some(),
            self.checkpoint.is_some(),
        ];
        if actions.iter().filter(|given| **given).count() != 1 {
            return Err("give exactly one action: command, launch, close or checkpoint".into());
        }
        if let Some(timeout) = &self.timeout {
            humantime::parse_duration(timeout).map_err(|e| {
                format!("timeout = \"{timeout}\" is not a duration like \"5s\" or \"500ms\": {e}")
            })?;
        }
        if let Some(launch) = &self.launch {
            if launch.count == Some(0) {
                return Err("launch.count must be 1 or more".into());
            }
            if let Some(target) = &launch.target {
                target
                    .parse::<crate::model::TargetName>()
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

fn validate_hooks(text: &str, config: &Config) -> std::result::Result<(), String> {
    let line_of = |needle: &str| {
        text.lines()
            .position(|line| line.contains(needle))
            .map_or(String::new(), |index| format!("line {}: ", index + 1))
    };
    for (event, hooks) in &config.hooks {
        if !HOOK_EVENTS.contains(&event.as_str()) {
            return Err(format!(
                "{}unknown hook event `hooks.{event}`; known events: {}",
                line_of(event),
                HOOK_EVENTS.join(", ")
            ));
        }
        for (index, hook) in hooks.iter().enumerate() {
            hook.validate()
                .map_err(|e| format!("{}hooks.{event}[{index}]: {e}", line_of(event)))?;
        }
    }
    Ok(())
}

/// `[terminal]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TerminalConfig {
    /// How many launches run at once.
    pub max_concurrent: usize,
    /// The most instances one launch may start.
    pub max_count: usize,
    /// `tmux`, `pty` or `auto`.
    pub default_target: String,
    /// Grace period of `close`, in milliseconds.
    pub stop_grace_ms: u64,
    /// Rows of new terminals.
    pub rows: u16,
    /// Columns of new terminals.
    pub cols: u16,
    /// How long closed instances stay listed (`7d`, `12h`) before their records are removed.
    pub keep_closed: String,
}

impl TerminalConfig {
    /// How long closed instances stay listed.
    pub fn keep_closed(&self) -> Result<std::time::Duration> {
        humantime::parse_duration(&self.keep_closed).map_err(|e| {
            Error::Config(format!(
                "terminal.keep_closed = \"{}\" is not a duration like \"7d\" or \"12h\": {e}",
                self.keep_closed
            ))
        })
    }
}

/// `[targets.NAME]`: every target, by name. The built-in `tmux`, `pty` and `kubernetes` are always
/// there; more are declared with a `kind`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TargetsConfig(pub BTreeMap<String, TargetConfig>);

/// `[targets.NAME]`: one target. Which keys count depends on its kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetConfig {
    /// Its kind; the built-in targets are of the kind they are named after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<TargetKind>,
    /// tmux: the tmux executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// tmux: the private server's socket name (`tmux -L`); default `mahavishnu-NAME`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_name: Option<String>,
    /// tmux and pty: lines of history each session keeps above its screen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrollback: Option<usize>,
    /// kubernetes: the kubeconfig file (default: `KUBECONFIG`, else `~/.kube/config`, else in-cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// kubernetes: the kubeconfig context (default: the kubeconfig's current context).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// kubernetes: the namespace pods go to (default: the context's, else `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// kubernetes: the image of profiles that name none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// kubernetes: image pull secrets given to every pod.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,
    /// kubernetes: the service account pods run as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// kubernetes: node labels pods must be scheduled on.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// kubernetes: how long a launch waits for a pod to run, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_timeout_ms: Option<u64>,
    /// kubernetes and cloudrun: how long one API call may take, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    /// cloudrun: the Google Cloud project id (kubernetes: the project of deployments' Pub/Sub topics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// cloudrun: the project's number, when it should not be looked up (it names services' URLs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_number: Option<String>,
    /// cloudrun: where the Google Cloud APIs are reached instead of Google's endpoints (an emulator
    /// or a proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// cloudrun: `adc` (Application Default Credentials, the default) or `anonymous` (an emulator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// cloudrun: the pattern of a service's URL, `{host}` standing for Cloud Run's
    /// `SERVICE-NUMBER.REGION.run.app` (default `https://{host}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_urls: Option<String>,
    /// cloudrun and kubernetes: where Pub/Sub is reached instead of Google's endpoint (the Pub/Sub
    /// emulator; for kubernetes, reachable from here and from the cluster alike).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pubsub_endpoint: Option<String>,
    /// cloudrun: the region instances (job executions) run in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// kubernetes: the Gateway API `Gateway` (`NAME` in the target's namespace, or `NAMESPACE/NAME`)
    /// that public services get an HTTPRoute on; without one, releases are all-or-nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// kubernetes: the domain of public services' host names on the Gateway
    /// (`SERVICE-SANDCASTLE.DOMAIN`; default: the Gateway listener's wildcard host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_domain: Option<String>,
}

/// The keys of `[targets.NAME]` that each kind reads.
fn target_keys(kind: TargetKind) -> &'static [&'static str] {
    match kind {
        TargetKind::Tmux => &["kind", "program", "socket_name", "scrollback"],
        TargetKind::Pty => &["kind", "scrollback"],
        TargetKind::Kubernetes => &[
            "kind",
            "kubeconfig",
            "context",
            "namespace",
            "image",
            "image_pull_secrets",
            "service_account",
            "node_selector",
            "startup_timeout_ms",
            "request_timeout_ms",
            "gateway",
            "gateway_domain",
            "project",
            "pubsub_endpoint",
        ],
        TargetKind::Cloudrun => &[
            "kind",
            "project",
            "project_number",
            "endpoint",
            "credentials",
            "service_urls",
            "pubsub_endpoint",
            "service_account",
            "request_timeout_ms",
            "region",
            "image",
        ],
    }
}

impl TargetsConfig {
    /// The target called `name`, with its kind.
    pub fn get(&self, name: &str) -> Option<(TargetKind, &TargetConfig)> {
        let config = self.0.get(name)?;
        let kind = config.kind.or_else(|| name.parse().ok())?;
        Some((kind, config))
    }

    /// Every target, by name, with its kind (the ones whose kind is unknown are left out; `validate`
    /// reports them).
    pub fn all(&self) -> impl Iterator<Item = (&str, TargetKind, &TargetConfig)> {
        self.0.keys().filter_map(|name| {
            self.get(name)
                .map(|(kind, config)| (name.as_str(), kind, config))
        })
    }

    /// Checks every target: its name, its kind, and that it sets only keys its kind reads.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.check(true)
    }

    /// Checks what one layer (one file) says of targets: a layer may adjust a target another layer
    /// declares, so a target without a kind is checked once the layers are merged.
    pub fn validate_layer(&self) -> std::result::Result<(), String> {
        self.check(false)
    }

    fn check(&self, complete: bool) -> std::result::Result<(), String> {
        for (name, config) in &self.0 {
            crate::model::TargetName::new(name.clone())
                .map_err(|e| format!("[targets.{name}]: {e}"))?;
            let builtin = TargetKind::ALL.into_iter().find(|kind| kind.name() == name);
            let kind = match (builtin, config.kind) {
                (Some(builtin), Some(kind)) if builtin != kind => {
                    return Err(format!(
                        "[targets.{name}] is the built-in {builtin} target; its kind cannot be `{kind}`. \
                         Give your {kind} target another name"
                    ));
                }
                (Some(builtin), _) => builtin,
                (None, Some(kind)) => kind,
                (None, None) if !complete => continue,
                (None, None) => {
                    return Err(format!(
                        "[targets.{name}] has no kind; add `kind = \"tmux\"`, `\"pty\"` or \
                         `\"kubernetes\"`"
                    ));
                }
            };
            let set = toml::Value::try_from(config).map_err(|e| e.to_string())?;
            let keys = target_keys(kind);
            if let Some(key) = set
                .as_table()
                .and_then(|table| table.keys().find(|key| !keys.contains(&key.as_str())))
            {
                return Err(format!(
                    "[targets.{name}] is a {kind} target, which does not read `{key}`; its keys are: {}",
                    keys.join(", ")
                ));
            }
        }
        Ok(())
    }
}

impl TargetConfig {
    /// Its settings as a tmux target.
    pub fn tmux(&self) -> TmuxConfig {
        TmuxConfig {
            program: self.program.clone().unwrap_or_else(|| "tmux".into()),
            socket_name: self.socket_name.clone(),
            scrollback: self.scrollback.unwrap_or(DEFAULT_SCROLLBACK),
        }
    }

    /// Its settings as a pty target.
    pub fn pty(&self) -> PtyConfig {
        PtyConfig {
            scrollback: self.scrollback.unwrap_or(DEFAULT_SCROLLBACK),
        }
    }

    /// Its settings as a Kubernetes target.
    pub fn kubernetes(&self) -> KubernetesConfig {
        KubernetesConfig {
            kubeconfig: self.kubeconfig.as_deref().map(crate::paths::expand_home),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
            image: self.image.clone(),
            image_pull_secrets: self.image_pull_secrets.clone(),
            service_account: self.service_account.clone(),
            node_selector: self.node_selector.clone(),
            startup_timeout_ms: self.startup_timeout_ms.unwrap_or(120_000),
            request_timeout_ms: self.request_timeout_ms.unwrap_or(30_000),
            gateway: self.gateway.clone(),
            gateway_domain: self.gateway_domain.clone(),
            project: self.project.clone(),
            pubsub_endpoint: self.pubsub_endpoint.clone(),
        }
    }
}

/// Lines of history a session keeps, unless its target says otherwise.
const DEFAULT_SCROLLBACK: usize = 10_000;

/// The settings of a Kubernetes target.
#[derive(Clone, Debug, Default)]
pub struct KubernetesConfig {
    /// The kubeconfig file (default: `KUBECONFIG`, else `~/.kube/config`, else in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: the kubeconfig's current context).
    pub context: Option<String>,
    /// The namespace pods go to (default: the context's, else `default`).
    pub namespace: Option<String>,
    /// The image of profiles that name none.
    pub image: Option<String>,
    /// Image pull secrets given to every pod.
    pub image_pull_secrets: Vec<String>,
    /// The service account pods run as.
    pub service_account: Option<String>,
    /// Node labels pods must be scheduled on.
    pub node_selector: BTreeMap<String, String>,
    /// How long a launch waits for a pod to run, in milliseconds.
    pub startup_timeout_ms: u64,
    /// How long one API call may take, in milliseconds.
    pub request_timeout_ms: u64,
    /// The Gateway API `Gateway` public services are routed through (`NAME` or `NAMESPACE/NAME`).
    pub gateway: Option<String>,
    /// The domain of public services' host names on the Gateway.
    pub gateway_domain: Option<String>,
    /// The Google Cloud project of deployments' Pub/Sub topics.
    pub project: Option<String>,
    /// The Pub/Sub emulator deployments' topics live on (`HOST:PORT`, reachable from here and from
    /// the cluster).
    pub pubsub_endpoint: Option<String>,
}

impl ResourcesConfig {
    /// Whether nothing is requested or limited.
    pub fn is_empty(&self) -> bool {
        *self == ResourcesConfig::default()
    }
}

/// Resource requests and limits of a container (Kubernetes quantities: `500m`, `1Gi`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcesConfig {
    /// CPU request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<String>,
    /// Memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
}

/// The settings of a tmux target.
#[derive(Clone, Debug, Default)]
pub struct TmuxConfig {
    /// The tmux executable.
    pub program: String,
    /// The private server's socket name (`tmux -L`), when the config names one.
    pub socket_name: Option<String>,
    /// Lines of history each session keeps.
    pub scrollback: usize,
}

/// The settings of a pty target.
#[derive(Clone, Debug, Default)]
pub struct PtyConfig {
    /// Lines of history each session keeps.
    pub scrollback: usize,
}

/// `[profiles.NAME]`: a recipe for an instance.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileConfig {
    /// One line shown in listings.
    pub description: Option<String>,
    /// The program; for `shell = true` profiles without one, `$SHELL`, else `/bin/sh`.
    pub program: Option<String>,
    /// Arguments before any given at launch.
    pub args: Vec<String>,
    /// Environment added to the program's.
    pub env: BTreeMap<String, String>,
    /// Working directory, when none is given at launch.
    pub cwd: Option<PathBuf>,
    /// Screen patterns (regular expressions) that mean "waiting for input".
    pub waiting: Vec<String>,
    /// How long the screen must stay unchanged before the program counts as waiting.
    pub idle_ms: Option<u64>,
    /// A shell: waiting means "prompt back and no foreground job".
    pub shell: bool,
    /// Screen patterns (regular expressions) of the program's own questions (trust, permission): a
    /// match means waiting, on that question.
    pub questions: Vec<String>,
    /// Screen patterns (regular expressions) that mean the program is working (a spinner's `esc to
    /// cancel`): a match means not waiting, whatever else the screen shows.
    pub busy: Vec<String>,
    /// Pause between typed text and the Enter that submits it (AI CLIs take fast input for a paste).
    pub submit_delay_ms: u64,
    /// Preferred target.
    pub target: Option<String>,
    /// How to install the program, shown when it is missing.
    pub install_hint: Option<String>,
    /// Labels recorded with every instance.
    pub labels: BTreeMap<String, String>,
    /// The container image, for container targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resource requests and limits, for container targets.
    #[serde(skip_serializing_if = "ResourcesConfig::is_empty")]
    pub resources: ResourcesConfig,
    /// Give the program a terminal and stdin (true unless set to false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    /// Arguments that make the program continue its last conversation, added on `terminal resume`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resume_args: Vec<String>,
}

impl ProfileConfig {
    /// The waiting rules of this profile.
    pub fn waiting_rules(&self) -> WaitingRules {
        WaitingRules {
            patterns: self.waiting.clone(),
            idle_ms: self.idle_ms.unwrap_or(1000),
            shell: self.shell,
            questions: self.questions.clone(),
            busy: self.busy.clone(),
        }
    }

    /// The preferred target, if the profile names one.
    pub fn preferred_target(&self) -> Result<Option<crate::model::TargetName>> {
        self.target.as_deref().map(str::parse).transpose()
    }
}

/// One layer's origin, as shown by `config show`.
pub type Origin = String;

/// The configuration with the origin of every value.
#[derive(Clone, Debug)]
pub struct LoadedConfig {
    /// The typed, merged configuration.
    pub config: Config,
    /// The merged TOML tree.
    pub merged: Value,
    /// Dotted key path of every leaf value -> the layer it came from.
    pub origins: BTreeMap<String, Origin>,
    /// The files that were read, in layer order.
    pub files: Vec<PathBuf>,
    /// The project's `.mahavishnu.toml`, if one was found.
    pub project_file: Option<PathBuf>,
    /// The hooks that came from the project file (they run only once the project is trusted).
    pub project_hooks: BTreeMap<String, Vec<HookConfig>>,
    /// The project file's trust: its hash, whether it is trusted, and what was left out until it is.
    pub project_trust: Option<ProjectTrust>,
}

/// Keys a project file may not set: they decide which programs Mahavishnu itself starts, which
/// cluster it reaches with which credentials, or who may connect to it. They belong in the user's
/// configuration.
/// `*` stands for any one name.
pub const USER_ONLY_KEYS: &[&str] = &[
    "serve",
    "workflows",
    "targets.*.program",
    "targets.*.socket_name",
    "targets.*.kubeconfig",
    "targets.*.context",
];

/// Parts of a project file that count only once the user trusts the file: they decide what runs
/// (hooks, profiles and their programs, a worktree's setup and the files copied into it) or where
/// (targets).
pub const TRUSTED_KEYS: &[&str] = &[
    "hooks",
    "checks",
    "profiles",
    "worktree.setup",
    "worktree.copy",
    "worktree.dir",
    "targets",
];

/// The trust of a project file, decided when the configuration was loaded.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectTrust {
    /// The file.
    pub file: PathBuf,
    /// SHA-256 of its bytes, in hex: trust is given to exactly these bytes.
    pub sha256: String,
    /// Whether the user trusted these bytes.
    pub trusted: bool,
    /// The settings left out because the file is not trusted (`profiles.shell`, `hooks.Stop`, ...).
    pub ignored: Vec<String>,
    /// The file's text as read.
    #[serde(skip)]
    pub text: String,
    /// The text the user trusted before, when the file changed since.
    #[serde(skip)]
    pub trusted_text: Option<String>,
    /// Whether a trust record exists for this file at all (of this or another version).
    pub previously_trusted: bool,
}

impl ProjectTrust {
    /// What changed since the trusted version, as a unified-style line diff; `None` when there is no
    /// trusted version to compare with.
    pub fn changes(&self) -> Option<String> {
        self.trusted_text
            .as_deref()
            .map(|before| crate::diff::lines(before, &self.text))
    }
}

/// Builds the layered configuration.
#[derive(Debug)]
pub struct ConfigLoader {
    merged: Value,
    origins: BTreeMap<String, Origin>,
    files: Vec<PathBuf>,
    project_file: Option<PathBuf>,
    project_hooks: BTreeMap<String, Vec<HookConfig>>,
    project_trust: Option<ProjectTrust>,
}

impl ConfigLoader {
    /// Starts from the built-in defaults.
    pub fn new() -> Self {
        let defaults: Value =
            toml::from_str(DEFAULTS).unwrap_or_else(|e| panic!("built-in defaults: {e}"));
        let mut loader = ConfigLoader {
            merged: Value::Table(Default::default()),
            origins: BTreeMap::new(),
            files: vec![],
            project_file: None,
            project_hooks: BTreeMap::new(),
            project_trust: None,
        };
        loader.merge(defaults, "built-in");
        loader
    }

    /// The standard layers: user file, project file (walking up from `cwd`, trusted as `store`
    /// records), environment.
    pub fn standard(cwd: &Path, store: &crate::store::Store) -> Result<LoadedConfig> {
        let mut loader = ConfigLoader::new();
        if let Some(user) = crate::paths::user_config_file()
            && user.is_file()
        {
            loader.file(&user)?;
        }
        if let Some(project) = find_project_file(cwd) {
            loader.project(&project, |file| store.trusted(file))?;
        }
        loader.environment(std::env::vars())?;
        loader.finish()
    }

    /// Adds a TOML file as a layer; a syntax error or unknown key names the file, line and key.
    pub fn file(&mut self, path: &Path) -> Result<&mut Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let (layer, _) = parse_layer(&text, Layer::Declares)
            .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))?;
        self.files.push(path.to_path_buf());
        self.merge(layer, &path.display().to_string());
        Ok(self)
    }

    /// Adds the project's `.mahavishnu.toml` as a layer. Keys only the user may set are refused; what
    /// decides what runs counts only when `trusted` (which looks up the trust record of a file) says
    /// that the user trusted exactly these bytes. Its hooks are also kept apart, to be listed.
    pub fn project(
        &mut self,
        path: &Path,
        trusted: impl FnOnce(&Path) -> Result<Option<crate::store::TrustRecord>>,
    ) -> Result<&mut Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let text = String::from_utf8(bytes.clone()).map_err(|_| {
            Error::Config(format!("config file {} is not UTF-8 text", path.display()))
        })?;
        let (mut layer, typed) = parse_layer(&text, Layer::Adjusts)
            .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))?;
        let user_only: Vec<String> = USER_ONLY_KEYS
            .iter()
            .flat_map(|key| expand_names(&layer, key))
            .collect();
        for key in &user_only {
            let key = key.as_str();
            if take_key(&mut layer, key).is_some() {
                let place = crate::paths::user_config_file().map_or_else(
                    || "your user config".to_string(),
                    |user| format!("your user config ({})", user.display()),
                );
                return Err(Error::Config(format!(
                    "config file {}: {}`{key}` cannot be set in a project file, since it decides what \
                     Mahavishnu runs or who may connect to it, and a repository you cloned must not decide \
                     that; set it in {place}, or remove it from this file",
                    path.display(),
                    line_of(&text, key),
                )));
            }
        }
        let sha256 = crate::digest::sha256_hex(&bytes);
        let record = trusted(&file)?;
        let is_trusted = record.as_ref().is_some_and(|record| record.hash == sha256);
        let mut ignored = Vec::new();
        if !is_trusted {
            for key in TRUSTED_KEYS {
                if let Some(value) = take_key(&mut layer, key) {
                    match value {
                        Value::Table(table) if !key.contains('.') => {
                            ignored.extend(table.keys().map(|name| format!("{key}.{name}")))
                        }
                        _ => ignored.push(key.to_string()),
                    }
                }
            }
        }
        self.files.push(path.to_path_buf());
        self.merge(layer, &path.display().to_string());
        self.project_hooks = typed.hooks;
        self.project_file = Some(path.to_path_buf());
        self.project_trust = Some(ProjectTrust {
            file,
            sha256,
            trusted: is_trusted,
            ignored,
            trusted_text: record
                .as_ref()
                .filter(|_| !is_trusted)
                .and_then(|record| record.content.clone()),
            previously_trusted: record.is_some(),
            text,
        });
        Ok(self)
    }

    /// Adds `MAHAVISHNU_SECTION__KEY=value` variables as a layer (`__` separates the levels).
    pub fn environment(
        &mut self,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<&mut Self> {
        for (name, raw) in vars {
            let Some(path) = name
                .strip_prefix("MAHAVISHNU_")
                .filter(|rest| rest.contains("__"))
            else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut table| table.remove("v"))
                .unwrap_or_else(|| Value::String(raw.clone()));
            let mut layer = value;
            for key in keys.iter().rev() {
                let mut table = toml::Table::new();
                table.insert(key.clone(), layer);
                layer = Value::Table(table);
            }
            Config::deserialize(layer.clone()).map_err(|e| {
                // toml's message spans lines ("...\nin `terminal`\n"); the error is one line.
                let reason = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let fix = match corrected_variable(&keys, &reason) {
                    Some(right) => format!("did you mean {right}? Rename the variable or unset it"),
                    None => "unset it or fix its value".into(),
                };
                Error::Config(format!("environment variable {name}: {reason}; {fix}"))
            })?;
            self.merge(layer, &format!("env {name}"));
        }
        Ok(self)
    }

    /// Adds a layer given on the command line.
    pub fn flags(&mut self, layer: Value, origin: &str) -> &mut Self {
        self.merge(layer, origin);
        self
    }

    /// Merges the layers into the typed configuration.
    pub fn finish(self) -> Result<LoadedConfig> {
        let config = Config::deserialize(self.merged.clone())
            .map_err(|e| Error::Config(format!("the merged configuration is invalid: {e}")))?;
        config
            .targets
            .validate()
            .map_err(|e| Error::Config(format!("the merged configuration is invalid: {e}")))?;
        Ok(LoadedConfig {
            config,
            merged: self.merged,
            origins: self.origins,
            files: self.files,
            project_file: self.project_file,
            project_hooks: self.project_hooks,
            project_trust: self.project_trust,
        })
    }

    fn merge(&mut self, layer: Value, origin: &str) {
        merge_into(&mut self.merged, layer, "", origin, &mut self.origins);
    }
}

/// The variable named by `keys` with the unknown key of toml's `reason` ("unknown field `x`, expected
/// `a` or `b`", or "expected one of `a`, `b`, `c`") replaced by the expected key nearest to it, when one is a likely typo away.
fn corrected_variable(keys: &[String], reason: &str) -> Option<String> {
    let (unknown, expected) = reason
        .strip_prefix("unknown field `")?
        .split_once("`, expected ")?;
    let expected = expected.split(" in `").next().unwrap_or(expected);
    let nearest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min()?
        .1;
    let keys: Vec<String> = keys
        .iter()
        .map(|key| if key == unknown { nearest } else { key })
        .map(str::to_ascii_uppercase)
        .collect();
    Some(format!("MAHAVISHNU_{}", keys.join("__")))
}

/// Levenshtein distance: how many characters to insert, delete or change to turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, from) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, to) in b.iter().enumerate() {
            let changed = diagonal + usize::from(from != *to);
            diagonal = row[j + 1];
            row[j + 1] = changed.min(row[j + 1] + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}

impl Default for ConfigLoader {
    fn default() -> Self {
        Self::new()
    }
}

/// A file's layer, as the TOML tree that is merged and as the typed config it validated as.
/// What a file may say of targets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    /// The user's file, where targets are declared: each needs its kind.
    Declares,
    /// A project file, which may adjust a target the user's file declares.
    Adjusts,
}

fn parse_layer(text: &str, layer: Layer) -> std::result::Result<(Value, Config), String> {
    // Deserializing into the typed config reports unknown keys and wrong types with line and column.
    let typed = toml::from_str::<Config>(text).map_err(|e| e.to_string().trim_end().to_string())?;
    validate_hooks(text, &typed)?;
    let targets = match layer {
        Layer::Declares => typed.targets.validate(),
        Layer::Adjusts => typed.targets.validate_layer(),
    };
    targets.map_err(|e| {
        let name = e
            .strip_prefix("[targets.")
            .and_then(|rest| rest.split_once(']'))
            .map_or("", |(name, _)| name);
        format!("{}{e}", line_of(text, &format!("targets.{name}")))
    })?;
    let layer = toml::from_str::<Value>(text).map_err(|e| e.to_string())?;
    Ok((layer, typed))
}

/// The dotted keys `key` stands for in `layer`: itself, or with its `*` replaced by each name found at
/// that place.
fn expand_names(layer: &Value, key: &str) -> Vec<String> {
    let Some((before, after)) = key.split_once(".*.") else {
        return vec![key.to_string()];
    };
    let mut table = layer.as_table();
    for part in before.split('.') {
        table = table
            .and_then(|table| table.get(part))
            .and_then(Value::as_table);
    }
    table
        .map(|table| {
            table
                .keys()
                .map(|name| format!("{before}.{name}.{after}"))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the value at a dotted `key` from a TOML table, returning it.
fn take_key(layer: &mut Value, key: &str) -> Option<Value> {
    let mut table = layer.as_table_mut()?;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return table.remove(part);
        }
        table = table.get_mut(part)?.as_table_mut()?;
    }
    None
}

/// `line N: ` for the first line that sets `key` (its table header, or its last part before `=`).
fn line_of(text: &str, key: &str) -> String {
    let last = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.starts_with(&format!("[{key}"))
                || line
                    .strip_prefix(last)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
                || line.starts_with(&format!("{key} ="))
        })
        .map_or(String::new(), |index| format!("line {}: ", index + 1))
}

fn merge_into(
    base: &mut Value,
    layer: Value,
    prefix: &str,
    origin: &str,
    origins: &mut BTreeMap<String, Origin>,
) {
    match (base, layer) {
        (Value::Table(base), Value::Table(layer)) => {
            for (key, value) in layer {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match base.get_mut(&key) {
                    Some(existing) if existing.is_table() && value.is_table() => {
                        merge_into(existing, value, &path, origin, origins)
                    }
                    // Hooks add up across layers: the user's run, and the project's after them.
                    Some(Value::Array(existing)) if path.starts_with("hooks.") => {
                        if let Value::Array(more) = value {
                            existing.extend(more);
                        }
                        let known = origins.get(&path).cloned();
                        let both =
                            known.map_or(origin.to_string(), |known| format!("{known} + {origin}"));
                        origins.insert(path, both);
                    }
                    _ => {
                        origins.retain(|known, _| {
                            !(known == &path || known.starts_with(&format!("{path}.")))
                        });
                        record_origins(&value, &path, origin, origins);
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

fn record_origins(value: &Value, path: &str, origin: &str, origins: &mut BTreeMap<String, Origin>) {
    match value {
        Value::Table(table) => {
            for (key, value) in table {
                record_origins(value, &format!("{path}.{key}"), origin, origins);
            }
        }
        _ => {
            origins.insert(path.to_string(), origin.to_string());
        }
    }
}

/// The nearest `.mahavishnu.toml` at or above `dir`.
pub fn find_project_file(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|dir| dir.join(PROJECT_FILE))
        .find(|file| file.is_file())
}

impl LoadedConfig {
    /// The profile called `name`.
    pub fn profile(&self, name: &str) -> Result<&ProfileConfig> {
        if let Some(trust) = &self.project_trust
            && trust.ignored.contains(&format!("profiles.{name}"))
            && !self.config.profiles.contains_key(name)
        {
            return Err(Error::Invalid(format!(
                "profile `{name}` comes from {}, which is not trusted (new, or changed since you trusted \
                 it), so it is not used; review the file with `mahavishnu trust --show`, then run \
                 `mahavishnu trust`",
                trust.file.display()
            )));
        }
        self.config
            .profiles
            .get(name)
            .ok_or_else(|| Error::UnknownProfile {
                name: name.to_string(),
                known: self
                    .config
                    .profiles
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// A warning for each setting of the project file left out until it is trusted.
    pub fn untrusted_warning(&self) -> Option<String> {
        let trust = self
            .project_trust
            .as_ref()
            .filter(|trust| !trust.ignored.is_empty())?;
        Some(format!(
            "{} is not trusted (new, or changed since you trusted it), so these settings of it are \
             ignored: {}. Review it with `mahavishnu trust --show`, then run `mahavishnu trust`",
            trust.file.display(),
            trust.ignored.join(", ")
        ))
    }

    /// Every leaf value as `(dotted key, TOML value, origin)`, sorted by key.
    pub fn entries(&self) -> Vec<(String, String, String)> {
        let mut entries = Vec::new();
        flatten(&self.merged, "", &mut entries);
        entries
            .into_iter()
            .map(|(key, value)| {
                let origin = self
                    .origins
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| "built-in".into());
                (key, value, origin)
            })
            .collect()
    }
}

fn flatten(value: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Table(table) => {
            for (key, value) in table {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(value, &path, out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_win_and_remember_their_origin() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "[terminal]\nmax_concurrent = 4\n[profiles.qwen-local]\nprogram = \"qwen\"\nwaiting = [\"Type\"]\n").unwrap();
        let mut loader = ConfigLoader::new();
        loader.file(&file).unwrap();
        let env = vec![(
            "MAHAVISHNU_TERMINAL__MAX_CONCURRENT".to_string(),
            "7".to_string(),
        )];
        loader.environment(env.into_iter()).unwrap();
        let loaded = loader.finish().unwrap();
        assert_eq!(loaded.config.terminal.max_concurrent, 7);
        assert_eq!(
            loaded.origins["terminal.max_concurrent"],
            "env MAHAVISHNU_TERMINAL__MAX_CONCURRENT"
        );
        assert_eq!(loaded.origins["terminal.max_count"], "built-in");
        assert_eq!(
            loaded.origins["profiles.qwen-local.program"],
            file.display().to_string()
        );
        assert_eq!(
            loaded.profile("qwen-local").unwrap().waiting,
            vec!["Type".to_string()]
        );
        assert!(loaded.profile("shell").unwrap().shell);
    }

    #[test]
    fn a_typo_names_the_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".mahavishnu.toml");
        std::fs::write(&file, "[terminal]\n\nmax_concurent = 4\n").unwrap();
        let error = ConfigLoader::new().file(&file).unwrap_err().to_string();
        assert!(error.contains(".mahavishnu.toml"), "{error}");
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("max_concurent"), "{error}");
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let env = vec![(
            "MAHAVISHNU_TERMINAL__MAX_CONCURRENT".to_string(),
            "many".to_string(),
        )];
        let error = ConfigLoader::new()
            .environment(env.into_iter())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("MAHAVISHNU_TERMINAL__MAX_CONCURRENT"),
            "{error}"
        );
    }

    #[test]
    fn a_mistyped_variable_is_named_with_the_one_meant() {
        for (typed, meant) in [
            ("MAHAVISHNU_TERMNAL__ROWS", "MAHAVISHNU_TERMINAL__ROWS"),
            (
                "MAHAVISHNU_TARGETS__TMUX__SOCKET_NAMES",
                "MAHAVISHNU_TARGETS__TMUX__SOCKET_NAME",
            ),
        ] {
            let env = vec![(typed.to_string(), "3".to_string())];
            let error = ConfigLoader::new()
                .environment(env.into_iter())
                .unwrap_err()
                .to_string();
            assert!(!error.contains('\n'), "{error}");
            assert!(error.contains(&format!("did you mean {meant}?")), "{error}");
        }
        let env = vec![("MAHAVISHNU_TERMINAL__COLOUR".to_string(), "3".to_string())];
        let error = ConfigLoader::new()
            .environment(env.into_iter())
            .unwrap_err()
            .to_string();
        assert!(
            !error.contains("did you mean") && error.contains("unset it or fix its value"),
            "nothing is near: {error}"
        );
    }

    #[test]
    fn unknown_profiles_list_the_known_ones() {
        let loaded = ConfigLoader::new().finish().unwrap();
        let error = loaded.profile("qwne").unwrap_err().to_string();
        assert!(error.contains("qwne") && error.contains("qwen"), "{error}");
    }
}
