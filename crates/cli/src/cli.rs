//! The command definitions: one source for parsing, `--help`, the man page and shell completions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::output::OutputFormat;

/// Orchestrates AI coding CLIs (Qwen Code, Claude Code, Gemini CLI, Codex) and shells across terminal
/// sessions: launch many at once, type into them, read their screens, see which wait for input.
#[derive(Debug, Parser)]
#[command(
    name = "mahavishnu",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Commands whose work never reads `--output`: their help leaves it out.
const WITHOUT_OUTPUT: &[&str] = &[
    "deploy metrics",
    "man",
    "completions",
    "hook",
    "mcp",
    "serve",
    "terminal attach",
];

/// Commands that never open the state directory: their help leaves `--state-dir` out.
const WITHOUT_STATE_DIR: &[&str] = &[
    "man",
    "completions",
    "agents list",
    "agents show",
    "agents validate",
    "agents new",
    "agents export",
    "agents sync",
    "init",
    "mcp install",
    "checkpoint",
    "checkpoint list",
    "checkpoint diff",
    "checkpoint restore",
];

/// The command line, with `--help` showing `--state-dir` and `--output` once at the top and then only
/// on the commands they mean something to. Both are still accepted before or after any command.
pub fn command() -> clap::Command {
    let root = Cli::command();
    let globals: Vec<clap::Arg> = root
        .get_arguments()
        .filter(|arg| arg.is_global_set())
        .cloned()
        .collect();
    place_global_args(root, "", &globals)
}

/// Gives every command below `command` its own copy of each global argument, hidden where it means
/// nothing: a command that has an argument of that id already is one clap copies no other into.
fn place_global_args(
    mut command: clap::Command,
    path: &str,
    globals: &[clap::Arg],
) -> clap::Command {
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_string())
        .collect();
    for name in names {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        command = command.mut_subcommand(&name, |mut sub| {
            // A group that only holds commands does no work of its own; its commands show the flags.
            let group = sub.is_subcommand_required_set();
            // After the command's own options (and before help and version), as at the top.
            let after_own = sub.get_arguments().count();
            for global in globals {
                let unused = match global.get_id().as_str() {
                    "output" => WITHOUT_OUTPUT,
                    "state_dir" => WITHOUT_STATE_DIR,
                    _ => &[],
                };
                let hidden = group || unused.contains(&sub_path.as_str());
                sub = sub.arg(global.clone().hide(hidden).display_order(after_own));
            }
            place_global_args(sub, &sub_path, globals)
        });
    }
    command
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where the state database lives [default: $MAHAVISHNU_STATE_DIR, else
    /// $XDG_STATE_HOME/mahavishnu]
    // The variable is read where the directory is resolved, where an empty one counts as unset.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Output format of list and show commands
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Terminal sessions running AI coding CLIs or shells
    #[command(subcommand, visible_alias = "t")]
    Terminal(TerminalCommand),
    /// Instances on any target: launch, exec, status, list, stop, logs
    #[command(subcommand, visible_alias = "i")]
    Instances(InstancesCommand),
    /// The targets: each one's name, kind, where it points and whether it is ready, or exactly why not
    Targets(TargetsArgs),
    /// Remove the records of instances closed longer ago than terminal.keep_closed (7 days)
    Gc(GcArgs),
    /// The entry Claude Code and Qwen Code call on their hook events (JSON on stdin)
    Hook,
    /// Coding sessions: start, end, status, list
    #[command(subcommand)]
    Session(SessionCommand),
    /// The project's lifecycle hooks: list, runs, test
    #[command(subcommand)]
    Hooks(HooksCommand),
    /// Allow the project's hooks to run, as they are now (again after any change)
    Trust(TrustArgs),
    /// Add Mahavishnu's hooks to Claude Code's or Qwen Code's settings
    Init(InitArgs),
    /// Snapshot the work tree on a hidden ref; list, diff and restore snapshots
    Checkpoint(CheckpointArgs),
    /// Agent definitions of Claude Code and Qwen Code: list, validate, create, sync, run
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Serve MCP on stdio for Claude Code, Qwen Code or any MCP host; `mcp install` registers it
    Mcp(McpArgs),
    /// Serve MCP over streamable HTTP at /mcp, with /healthz and a JSON API under /v1
    Serve(ServeArgs),
    /// Open the web dashboard: starts serve unless it runs, and prints a URL that logs a browser in
    Dashboard(DashboardArgs),
    /// Deploy multi-service apps: plan, apply, status, release, rollback, verify, logs, destroy
    #[command(subcommand, visible_alias = "d")]
    Deploy(DeployCommand),
    /// The catalog of repositories that sweeps and checks run over: add, scan, list, remove
    #[command(subcommand)]
    Repos(ReposCommand),
    /// Run a command (after `--`) or an agent prompt in many repositories at once; list, show, rerun
    Sweep(SweepArgs),
    /// Run a repository's quality checks (Rust, Python, Node, Go, or its [checks]) and print a
    /// scorecard
    Check(CheckArgs),
    /// Workflows of the configuration ([workflows.NAME]): list them, or run one now
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Show the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print recorded state changes
    Events(EventsArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write every page, one per command, into a directory
    Man(ManArgs),
    /// Hold one pty session (started by mahavishnu itself)
    #[command(name = "__pty-host", hide = true)]
    PtyHost(PtyHostArgs),
    /// Attach this terminal to one pty session (run by `terminal attach`)
    #[command(name = "__pty-attach", hide = true)]
    PtyAttach(PtyAttachArgs),
    /// Run a sandcastle's services in one region (started by mahavishnu itself)
    #[command(name = "__deploy-supervisor", hide = true)]
    DeploySupervisor(DeploySupervisorArgs),
    /// Finish hooks after `mahavishnu hook` has answered (started by mahavishnu itself)
    #[command(name = "__hook-worker", hide = true)]
    HookWorker(HookWorkerArgs),
}

#[derive(Debug, Subcommand)]
pub enum ReposCommand {
    /// Add git repositories (their kind is detected), with tags
    Add(ReposAddArgs),
    /// Find the git repositories under a directory and add them
    Scan(ReposScanArgs),
    /// The repositories of the catalog
    #[command(visible_alias = "ls")]
    List(ReposListArgs),
    /// Remove repositories from the catalog (their files are not touched)
    #[command(visible_alias = "rm")]
    Remove(ReposRemoveArgs),
}

#[derive(Debug, Args)]
pub struct ReposAddArgs {
    /// The repositories' directories
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// A tag to give them (repeat for more)
    #[arg(long = "tag", short = 't')]
    pub tags: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ReposScanArgs {
    /// The directory to search
    pub dir: PathBuf,
    /// A tag to give what is found (repeat for more)
    #[arg(long = "tag", short = 't')]
    pub tags: Vec<String>,
    /// How many levels down to look
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
}

#[derive(Debug, Args)]
pub struct ReposListArgs {
    /// Only those with this tag
    #[arg(long, short = 't')]
    pub tag: Option<String>,
    /// Only those of this kind: rust, python, node, go, other
    #[arg(long)]
    pub kind: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReposRemoveArgs {
    /// The repositories, by name or path
    #[arg(required = true)]
    pub repos: Vec<String>,
}

/// Which repositories a sweep or a check covers.
#[derive(Debug, Args, Clone, Default)]
pub struct RepoSelection {
    /// The repositories with this tag
    #[arg(long, short = 't', conflicts_with = "repos")]
    pub tag: Option<String>,
    /// This repository, by name or path (repeat for more; default: the whole catalog)
    #[arg(long = "repo", short = 'r')]
    pub repos: Vec<String>,
    /// At most this many at once
    #[arg(long, short = 'p')]
    pub parallel: Option<usize>,
    /// How long each repository's work may take (`90s`, `10m`)
    #[arg(long, value_name = "TIME", value_parser = seconds_or_duration)]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    #[command(flatten)]
    pub run: SweepRunArgs,
}

#[derive(Debug, Args)]
pub struct SweepRunArgs {
    #[command(flatten)]
    pub select: RepoSelection,
    /// Instead of a command: start a session of this profile (qwen, claude, ...) in each repository
    #[arg(long, value_name = "PROFILE", requires = "prompt")]
    pub agent: Option<String>,
    /// With --agent: the prompt each session is sent
    #[arg(long, requires = "agent")]
    pub prompt: Option<String>,
    /// With --agent: each session in a worktree and branch of its own
    #[arg(long, requires = "agent")]
    pub worktree: bool,
    /// With --agent --worktree: merge each branch whose checks pass
    #[arg(long, requires = "worktree")]
    pub merge: bool,
    /// With --agent: keep the sessions running afterwards
    #[arg(long, requires = "agent")]
    pub keep: bool,
    /// With --agent: where the sessions run
    #[arg(long, requires = "agent")]
    pub target: Option<String>,
    /// The command and its arguments, after `--` (run without a shell)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// The latest sweeps
    #[command(visible_alias = "ls")]
    List(SweepListArgs),
    /// One sweep with its results
    Show(SweepShowArgs),
    /// Run a sweep again, or only where it did not succeed
    Rerun(SweepRerunArgs),
    /// The scorecards of many repositories as one table
    Check(SweepCheckArgs),
}

#[derive(Debug, Args)]
pub struct SweepListArgs {
    /// At most this many
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct SweepShowArgs {
    /// The sweep's number
    pub id: i64,
}

#[derive(Debug, Args)]
pub struct SweepRerunArgs {
    /// The sweep's number
    pub id: i64,
    /// Only the repositories that did not succeed
    #[arg(long)]
    pub failed: bool,
}

#[derive(Debug, Args)]
pub struct SweepCheckArgs {
    #[command(flatten)]
    pub select: RepoSelection,
    /// Show only what got better or worse since the last check
    #[arg(long)]
    pub changed: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The repository (default: the current directory)
    pub path: Option<PathBuf>,
    /// How long each check may take (`90s`, `10m`)
    #[arg(long, value_name = "TIME", value_parser = seconds_or_duration)]
    pub timeout: Option<Duration>,
    /// Show only what got better or worse since the last check
    #[arg(long)]
    pub changed: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Every workflow: what it runs, its triggers, its next time and its last run
    #[command(visible_alias = "ls")]
    List,
    /// Run a workflow now
    Run(WorkflowRunArgs),
}

#[derive(Debug, Args)]
pub struct WorkflowRunArgs {
    /// The workflow's name
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Every agent in effect here, with its scope, file and the definition it overrides
    #[command(visible_alias = "ls")]
    List(AgentsListArgs),
    /// One agent: frontmatter and body
    Show(AgentShowArgs),
    /// Check agent files (default: every one that applies here); `file:line:col: message` per problem
    Validate(AgentsValidateArgs),
    /// Write a new agent from a template (never over an existing file)
    New(AgentNewArgs),
    /// Print the agents in effect in another tool's format
    Export(AgentsExportArgs),
    /// Write Qwen Code definitions (.qwen/agents) from the Claude Code agents in effect
    Sync(AgentsSyncArgs),
    /// Run an agent: a session of the CLI with the agent's instructions, the prompt submitted
    Run(AgentRunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CliArg {
    Qwen,
    Claude,
}

#[derive(Debug, Args)]
pub struct AgentRunArgs {
    /// The agent's name
    pub name: String,
    /// What the agent should do
    #[arg(long)]
    pub prompt: String,
    /// Which CLI runs it (its profile of the same name)
    #[arg(long, value_enum, default_value_t = CliArg::Qwen)]
    pub cli: CliArg,
    /// The target it runs on, by name (see `mahavishnu targets`) [default: tmux if installed, else pty]
    #[arg(long, value_name = "NAME")]
    pub target: Option<mahavishnu_core::TargetName>,
    /// Working directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Wait until the CLI waits for input again, and print what it answered
    #[arg(long, conflicts_with = "print")]
    pub wait: bool,
    /// Run the CLI headless (-p) to completion and print its output instead of starting a session
    #[arg(long)]
    pub print: bool,
    /// Give up waiting after this long (`300`, `5m`, `90s`)
    #[arg(long, default_value = "300", value_name = "TIME", value_parser = seconds_or_duration)]
    pub timeout: Duration,
    /// Close the agent's session when the CLI is not ready or does not answer in time (by default it
    /// is left running, and the error names it)
    #[arg(long, conflicts_with = "print")]
    pub close_on_failure: bool,
}

#[derive(Debug, Args)]
pub struct AgentNewArgs {
    /// The name: lowercase letters, digits and hyphens
    pub name: String,
    /// When the agent should be used
    #[arg(long)]
    pub description: String,
    /// Model: sonnet, opus, haiku, inherit, or a full model id
    #[arg(long)]
    pub model: Option<String>,
    /// Tools, comma-separated [default: the template's, else all]
    #[arg(long, value_delimiter = ',')]
    pub tools: Vec<String>,
    /// basic, fastblocks-architect or splashsand-specialist
    #[arg(long, default_value = "basic")]
    pub template: String,
    /// The project's `.claude/agents` or the user's `~/.claude/agents`
    #[arg(long, value_enum, default_value_t = ScopeArg::Project)]
    pub scope: ScopeArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// The JSON object `claude --agents` takes
    ClaudeJson,
}

#[derive(Debug, Args)]
pub struct AgentsExportArgs {
    /// The format
    #[arg(long, value_enum)]
    pub format: ExportFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SyncTarget {
    /// Qwen Code
    Qwen,
}

#[derive(Debug, Args)]
pub struct AgentsSyncArgs {
    /// Whose definitions to write
    pub target: SyncTarget,
}

#[derive(Debug, Args)]
pub struct AgentsListArgs {
    /// Also list the definitions that nearer ones override
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct AgentShowArgs {
    /// The agent's name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct AgentsValidateArgs {
    /// Files or directories to check
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Start a session and run its SessionStart hooks (a no-op if it is already active)
    Start(SessionArgs),
    /// End a session and run its SessionEnd hooks
    End(SessionArgs),
    /// Show one session
    Status(SessionIdArgs),
    /// List sessions
    #[command(visible_alias = "ls")]
    List(ProjectArgs),
}

#[derive(Debug, Args)]
pub struct SessionArgs {
    /// Session id [default for start: a new one]
    #[arg(long)]
    pub id: Option<String>,
    /// Project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SessionIdArgs {
    /// Session id
    #[arg(long)]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ProjectArgs {
    /// Project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// The hooks that apply to the project, with where each came from and whether it is trusted
    #[command(visible_alias = "ls")]
    List(ProjectArgs),
    /// Recorded hook runs
    Runs(HookRunsArgs),
    /// Run an event's hooks against a sample (or given) payload and show what happened
    Test(HooksTestArgs),
}

#[derive(Debug, Args)]
pub struct HookRunsArgs {
    /// Only runs of this session
    #[arg(long)]
    pub session: Option<String>,
    /// At most this many (the newest)
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct HooksTestArgs {
    /// The event: SessionStart, SessionEnd, UserPromptSubmit, Stop, PreCompact, ...
    pub event: String,
    /// A payload file (JSON, as the CLI would send it)
    #[arg(long, value_name = "FILE")]
    pub payload: Option<PathBuf>,
    /// Show what would run, run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Project directory [default: the payload's cwd, else the current directory]
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Project directory [default: the current directory]
    pub dir: Option<PathBuf>,
    /// Withdraw trust instead
    #[arg(long, conflicts_with = "show")]
    pub remove: bool,
    /// Only show what would be trusted: the file, its SHA-256, and its text or what changed since
    /// it was trusted
    #[arg(long)]
    pub show: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClientArg {
    Claude,
    Qwen,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    Project,
    User,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Whose settings: claude (.claude/settings.json) or qwen (.qwen/settings.json)
    pub client: ClientArg,
    /// The project's settings file or the user's
    #[arg(long, value_enum, default_value_t = ScopeArg::Project)]
    pub scope: ScopeArg,
    /// Show the change, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Take Mahavishnu's entries out again
    #[arg(long)]
    pub remove: bool,
    /// Project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct McpArgs {
    #[command(subcommand)]
    pub command: Option<McpCommand>,
}

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Register Mahavishnu's MCP server with Claude Code (.mcp.json, ~/.claude.json) or Qwen Code
    /// (settings.json), keeping everything else
    Install(McpInstallArgs),
}

#[derive(Debug, Args)]
pub struct McpInstallArgs {
    /// The client: claude or qwen
    #[arg(long, value_enum)]
    pub client: ClientArg,
    /// The project's configuration or the user's
    #[arg(long, value_enum, default_value_t = ScopeArg::Project)]
    pub scope: ScopeArg,
    /// Connect to `mahavishnu serve` at this URL (e.g. http://127.0.0.1:8677/mcp) instead of starting
    /// `mahavishnu mcp`; the client sends the token from its environment, MAHAVISHNU_TOKEN
    #[arg(long, value_name = "URL")]
    pub http: Option<String>,
    /// Show the change, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Take the server out again
    #[arg(long)]
    pub remove: bool,
    /// Project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// The address serve listens on [default: serve.listen, 127.0.0.1:8677]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Open the URL in the browser (xdg-open) as well as printing it
    #[arg(long)]
    pub open: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: serve.listen, 127.0.0.1:8677]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Bearer token every request must carry [default: $MAHAVISHNU_TOKEN, else the one in the state
    /// directory's serve-token file, made on first use]
    #[arg(long, conflicts_with = "no_token")]
    pub token: Option<String>,
    /// Serve without a token, on loopback only: then any process on this machine, of any user, can run
    /// commands as you
    #[arg(long)]
    pub no_token: bool,
    /// Print the token serve uses (making it on first use) and exit, for scripts: `export
    /// MAHAVISHNU_TOKEN=$(mahavishnu serve --print-token)`
    #[arg(long, conflicts_with = "no_token")]
    pub print_token: bool,
    /// Also accept this Host header (a proxy's or a container's name); `*` accepts any
    #[arg(long = "allowed-host", value_name = "HOST")]
    pub allowed_hosts: Vec<String>,
    /// Also accept requests from web pages of this origin (https://app.example); others get 403
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CheckpointArgs {
    #[command(subcommand)]
    pub command: Option<CheckpointCommand>,
    /// The checkpoint's message
    #[arg(long, short = 'm')]
    pub message: Option<String>,
    /// Also commit the changes on the current branch (never on a detached HEAD, never empty)
    #[arg(long)]
    pub commit: bool,
    /// Project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// List checkpoints, newest first
    #[command(visible_alias = "ls")]
    List(ProjectArgs),
    /// What changed in the work tree since a checkpoint
    Diff(CheckpointDiffArgs),
    /// Write a checkpoint's files back (after a safety checkpoint of the current state)
    Restore(CheckpointIdArgs),
}

#[derive(Debug, Args)]
pub struct CheckpointDiffArgs {
    /// Checkpoint id (or a unique prefix)
    pub id: String,
    /// Only a summary of changed files
    #[arg(long)]
    pub stat: bool,
    /// Project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckpointIdArgs {
    /// Checkpoint id (or a unique prefix)
    pub id: String,
    /// Project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SelectionArg {
    All,
    Optional,
}

#[derive(Debug, Args)]
pub struct HookWorkerArgs {
    #[arg(long, value_enum)]
    pub selection: SelectionArg,
}

#[derive(Debug, Subcommand)]
pub enum TerminalCommand {
    /// Start sessions of a profile, in parallel, and print their ids
    Launch(LaunchArgs),
    /// Type text literally into a session, then Enter
    Send(SendArgs),
    /// Send named keys: Enter, Tab, Escape, BSpace, Up, Down, Left, Right, C-c, M-x, F1..F12, ...
    Keys(KeysArgs),
    /// Print a session's screen as a person would see it
    Capture(CaptureArgs),
    /// Give a session's terminal a new size (its program is told, as when a window is resized)
    Resize(ResizeArgs),
    /// Block until the screen matches, stays unchanged, or the program waits for input
    Wait(WaitArgs),
    /// List sessions with their state
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one session
    Show(IdArgs),
    /// Run a side command to completion in a session's working directory and environment
    Exec(ExecArgs),
    /// Hand this terminal to a session (pty: detach with Ctrl-]; tmux: detach with C-b d)
    Attach(IdArgs),
    /// Stop sessions: a grace period, then kill
    Close(CloseArgs),
    /// Print a session's output so far (its scrollback and screen)
    Logs(LogsArgs),
    /// What a worktree session changed against its base, committed and not
    Diff(DiffArgs),
    /// Commit a worktree session's work on its branch, stop it, and remove its worktree
    Pause(IdArgs),
    /// Recreate a paused session's worktree and launch it again, continuing its conversation
    Resume(IdArgs),
    /// Make a worktree deleted by hand again from its branch and restart its session there
    Repair(IdArgs),
    /// Merge a worktree session's branch back (a conflict changes nothing)
    Merge(MergeArgs),
    /// Re-adopt sessions that still run but have no record (after the state directory was lost)
    Recover,
}

/// The same operations for instances of any target (tmux, pty, kubernetes); the id's prefix routes
/// each call.
// Parsed once per run; boxing the launch arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum InstancesCommand {
    /// Start instances of a profile on a target
    Launch(LaunchArgs),
    /// Run a command to completion in an instance
    Exec(ExecArgs),
    /// One instance and its state
    Status(IdArgs),
    /// Instances of every target, or of one
    #[command(visible_alias = "ls")]
    List(InstancesListArgs),
    /// Stop instances (a grace period, then kill; pods are deleted)
    Stop(CloseArgs),
    /// What an instance printed
    Logs(LogsArgs),
}

#[derive(Debug, Args)]
pub struct InstancesListArgs {
    /// Only instances of this project (or started below this directory)
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Include closed instances
    #[arg(long)]
    pub all: bool,
    /// Only instances of the target with this name
    #[arg(long, value_name = "NAME")]
    pub target: Option<mahavishnu_core::TargetName>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Instance id
    pub id: String,
    /// Keep printing what it prints until it ends
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Remove those closed longer ago than this instead (`12h`, `30m`, `0s` for every closed one)
    #[arg(long, value_name = "TIME")]
    pub older_than: Option<String>,
}

#[derive(Debug, Args)]
pub struct TargetsArgs {
    #[command(subcommand)]
    pub command: Option<TargetsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum TargetsCommand {
    /// List every target (the default)
    List,
    /// One target: its kind, where it points, what it can do, and its preflight
    Show {
        /// The target's name
        name: mahavishnu_core::TargetName,
    },
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Profile: shell, qwen, claude, gemini, codex, or one from the config
    pub profile: String,
    /// How many sessions to start
    #[arg(long, short = 'n', default_value_t = 1)]
    pub count: usize,
    /// The target to run them on, by name (see `mahavishnu targets`) [default: tmux if installed, else
    /// pty]
    #[arg(long, value_name = "NAME")]
    pub target: Option<mahavishnu_core::TargetName>,
    /// Working directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Environment variable for the program (repeatable)
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    pub env: Vec<String>,
    /// Session name instead of a generated one (NAME-1, NAME-2, ... with --count)
    #[arg(long)]
    pub name: Option<String>,
    /// Label recorded with the sessions (repeatable)
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Container image (kubernetes) [default: the profile's, else targets.kubernetes.image]
    #[arg(long)]
    pub image: Option<String>,
    /// Namespace (kubernetes) [default: targets.kubernetes.namespace, else the context's]
    #[arg(long)]
    pub namespace: Option<String>,
    /// kubeconfig context (kubernetes) [default: targets.kubernetes.context, else the current one]
    #[arg(long)]
    pub context: Option<String>,
    /// Print what would be created (kubernetes: the pod manifests) instead of launching
    #[arg(long)]
    pub dry_run: bool,
    /// Give each session its own git worktree and branch (outside your work tree)
    #[arg(long)]
    pub worktree: bool,
    /// With --worktree: the commit or branch the worktrees start from [default: HEAD]
    #[arg(long, value_name = "REF", requires = "worktree")]
    pub from: Option<String>,
    /// With --worktree: the branch prefix [default: worktree.branch_prefix, mahavishnu/]
    #[arg(long, value_name = "PREFIX", requires = "worktree")]
    pub branch_prefix: Option<String>,
    /// Arguments for the program, after `--`
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// Session id (`tmux:mv-1a2b3c`, `pty:mv-1a2b3c`, or just `mv-1a2b3c`)
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// Session id
    pub id: String,
    /// Rows (2 to 1000)
    #[arg(long)]
    pub rows: u16,
    /// Columns (10 to 1000)
    #[arg(long)]
    pub cols: u16,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Session id (with --all: the text)
    #[arg(value_name = "ID")]
    pub id: String,
    /// Text, typed literally; never interpreted by a shell
    #[arg(allow_hyphen_values = true)]
    pub text: Option<String>,
    /// Do not press Enter after the text
    #[arg(long)]
    pub no_enter: bool,
    #[command(flatten)]
    pub every: EverySession,
}

/// `--all [--project DIR] [--profile P]`: every live session that matches, at once.
#[derive(Debug, Args)]
pub struct EverySession {
    /// Every live session (of --project, of --profile) at once
    #[arg(long)]
    pub all: bool,
    /// With --all: only sessions of this project
    #[arg(long, value_name = "DIR", requires = "all")]
    pub project: Option<PathBuf>,
    /// With --all: only sessions of this profile
    #[arg(long, requires = "all")]
    pub profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    /// Session id
    pub id: String,
    /// Key names, sent in order
    #[arg(required = true, allow_hyphen_values = true)]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Session id
    pub id: String,
    /// Only the last N lines
    #[arg(long, short = 'n')]
    pub lines: Option<usize>,
    /// Include the scrollback history above the screen
    #[arg(long)]
    pub scrollback: bool,
    /// Keep colours and attributes as escape codes
    #[arg(long)]
    pub ansi: bool,
    /// Keep the blank rows at the end of the screen (left out by default)
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("condition").required(true).args(["pattern", "idle", "waiting"])))]
pub struct WaitArgs {
    /// Session id
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    #[command(flatten)]
    pub every: EverySession,
    /// Until the screen matches this regular expression (`^` and `$` match at each line) in lines
    /// that are new since the last `send` or `keys` to the session (or since its launch)
    #[arg(long = "for", value_name = "REGEX")]
    pub pattern: Option<String>,
    /// With --for: match anywhere on the screen, also text that was there before the last input
    #[arg(long, requires = "pattern")]
    pub anywhere: bool,
    /// Until the screen has not changed for this many milliseconds
    #[arg(long, value_name = "TIME", value_parser = milliseconds_or_duration)]
    pub idle: Option<Duration>,
    /// Until the program waits for input (by its profile's rules)
    #[arg(long)]
    pub waiting: bool,
    /// Give up after this many seconds
    #[arg(long, default_value = "30", value_name = "TIME", value_parser = seconds_or_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only sessions of this project (or started below this directory)
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Include closed sessions
    #[arg(long)]
    pub all: bool,
    /// Only sessions of the target with this name
    #[arg(long, value_name = "NAME")]
    pub target: Option<mahavishnu_core::TargetName>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Session id
    pub id: String,
    /// Kill the command after this long (`60`, `2m`, `500ms`)
    #[arg(long, default_value = "60", value_name = "TIME", value_parser = seconds_or_duration)]
    pub timeout: Duration,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CloseArgs {
    /// Session ids
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub every: EverySession,
    /// How long a program may take to end before it is killed (`2`, `500ms`) [default:
    /// terminal.stop_grace_ms]
    #[arg(long, value_name = "TIME", value_parser = seconds_or_duration)]
    pub grace: Option<Duration>,
    /// Also remove the sessions' worktrees and branches (refused while they hold unmerged work)
    #[arg(long)]
    pub prune: bool,
    /// With --prune: remove them even with unmerged work
    #[arg(long, requires = "prune")]
    pub force: bool,
    /// Close the records without asking their targets (a target removed from the configuration,
    /// or gone for good); whatever still runs there is left running
    #[arg(long, conflicts_with = "prune")]
    pub forget: bool,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Session id
    pub id: String,
    /// Into this branch [default: the branch checked out in the main work tree]
    #[arg(long, value_name = "BRANCH")]
    pub into: Option<String>,
    /// One commit with the session's changes instead of a merge commit
    #[arg(long)]
    pub squash: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Session id (of a session launched with --worktree)
    pub id: String,
    /// Only the changed files and line counts
    #[arg(long)]
    pub stat: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the merged configuration and where each value came from
    Show,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing new events as they are recorded
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only events of this session
    #[arg(long)]
    pub id: Option<String>,
    /// Show at most this many past events
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page (mahavishnu.1, mahavishnu-terminal.1, ...) into DIR instead of printing the
    /// top one; e.g. --dir ~/.local/share/man/man1
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct PtyAttachArgs {
    #[arg(long)]
    pub socket: PathBuf,
    #[arg(long)]
    pub id: String,
}

#[derive(Debug, Args)]
pub struct DeploySupervisorArgs {
    #[arg(long)]
    pub socket: PathBuf,
    #[arg(long)]
    pub dir: PathBuf,
}

/// Which manifest, platform and regions a deploy command works on.
#[derive(Debug, Args)]
pub struct DeployPlace {
    /// The manifest [default: mahavishnu.deploy.toml here or in the nearest directory above]
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Where to deploy: local, kubernetes or cloudrun [default: the manifest's sandcastle.platform]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Only this region (repeat for several) [default: every region of the manifest]
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Check the manifest: every problem with its file, line and key
    Validate(DeployValidateArgs),
    /// What an apply would change, with the cause of each change; exit 1 when something would
    Plan(DeployPlanArgs),
    /// Deploy the whole sandcastle (services in waves, each released by its rollout steps)
    Apply(DeployApplyArgs),
    /// Deploy the whole sandcastle (the same as apply)
    Sandcastle(DeployApplyArgs),
    /// Deploy one pipeline and whatever it needs that is missing
    Pipeline(DeployPartArgs),
    /// Deploy one service (a block) and whatever it needs that is missing
    Block(DeployPartArgs),
    /// Every service per region: revisions, traffic, health, URL, restarts, requests
    Status(DeployStatusArgs),
    /// A service's release history, newest first
    History(DeployHistoryArgs),
    /// A service's log lines
    Logs(DeployLogsArgs),
    /// Set a service's traffic: --weights REV=90,REV2=10 or --to REV
    Release(DeployReleaseArgs),
    /// Put a service's traffic back on an earlier revision at once
    Rollback(DeployRollbackArgs),
    /// Give a revision a tag with a URL of its own (a preview), or take it away with --remove
    Tag(DeployTagArgs),
    /// Check health, every needs link and every topic's delivery; exit 1 when something fails
    Verify(DeployStatusArgs),
    /// Stop a revision without traffic, a service, or the whole sandcastle
    Destroy(DeployDestroyArgs),
    /// The routers' request metrics in Prometheus text format
    Metrics(DeployMetricsArgs),
    /// Start again every supervisor that died, which starts its services again
    Recover,
}

#[derive(Debug, Args)]
pub struct DeployValidateArgs {
    /// The manifest [default: mahavishnu.deploy.toml here or in the nearest directory above]
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DeployPlanArgs {
    #[command(flatten)]
    pub place: DeployPlace,
    /// Plan only this service and what it needs that is missing
    #[arg(long, conflicts_with = "pipeline")]
    pub block: Option<String>,
    /// Plan only this pipeline and what it needs that is missing
    #[arg(long)]
    pub pipeline: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployApplyArgs {
    #[command(flatten)]
    pub place: DeployPlace,
    /// Continue an apply that was interrupted; it converges from what runs now
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, Args)]
pub struct DeployPartArgs {
    /// The pipeline (`deploy pipeline`) or the service (`deploy block`)
    pub name: String,
    #[command(flatten)]
    pub place: DeployPlace,
    /// Continue an apply that was interrupted; it converges from what runs now
    #[arg(long)]
    pub resume: bool,
}

#[derive(Debug, Args)]
pub struct DeployStatusArgs {
    #[command(flatten)]
    pub place: DeployPlace,
}

#[derive(Debug, Args)]
pub struct DeployHistoryArgs {
    /// The service
    pub service: String,
    /// Only this region
    #[arg(long)]
    pub region: Option<String>,
    /// At most this many releases
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// The manifest [default: mahavishnu.deploy.toml here or in the nearest directory above]
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The platform [default: the manifest's]
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployLogsArgs {
    /// The service
    pub service: String,
    /// Only this revision
    #[arg(long)]
    pub revision: Option<String>,
    /// The region [default: the manifest's first]
    #[arg(long)]
    pub region: Option<String>,
    /// How many of the last lines
    #[arg(long, default_value_t = 100)]
    pub tail: usize,
    /// Keep printing new lines until interrupted
    #[arg(long)]
    pub follow: bool,
    /// The manifest [default: mahavishnu.deploy.toml here or in the nearest directory above]
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Where it runs [default: the manifest's sandcastle.platform]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeployReleaseArgs {
    /// The service
    pub service: String,
    /// Revisions and their shares, adding up to 100: REV=90,REV2=10
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "to",
        conflicts_with = "to"
    )]
    pub weights: Vec<String>,
    /// Send all traffic to this revision
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub place: DeployPlace,
}

#[derive(Debug, Args)]
pub struct DeployTagArgs {
    /// The service
    pub service: String,
    /// The revision
    pub revision: String,
    /// The tag (lower-case letters, digits and `-`)
    #[arg(required_unless_present = "remove")]
    pub tag: Option<String>,
    /// Take the revision's tag away
    #[arg(long, conflicts_with = "tag")]
    pub remove: bool,
    #[command(flatten)]
    pub place: DeployPlace,
}

#[derive(Debug, Args)]
pub struct DeployRollbackArgs {
    /// The service
    pub service: String,
    /// The revision to put all traffic on [default: the one that served before the current one]
    #[arg(long)]
    pub to: Option<String>,
    #[command(flatten)]
    pub place: DeployPlace,
}

#[derive(Debug, Args)]
pub struct DeployDestroyArgs {
    /// The service [default: the whole sandcastle, with its front door]
    pub service: Option<String>,
    /// Only this revision (refused while it takes traffic)
    #[arg(long, requires = "service")]
    pub revision: Option<String>,
    #[command(flatten)]
    pub place: DeployPlace,
}

#[derive(Debug, Args)]
pub struct DeployMetricsArgs {
    /// The region [default: the manifest's first]
    #[arg(long)]
    pub region: Option<String>,
    /// The manifest [default: mahavishnu.deploy.toml here or in the nearest directory above]
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PtyHostArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub name: String,
    #[arg(long, default_value_t = 10_000)]
    pub scrollback: usize,
}

/// A time given as seconds (`30`, `0.5`) or as a duration with its unit (`500ms`, `2s`, `1m`).
pub fn seconds_or_duration(text: &str) -> Result<Duration, String> {
    time_arg(text, "seconds", Duration::from_secs_f64)
}

/// A time given as milliseconds (`500`) or as a duration with its unit (`500ms`, `2s`).
pub fn milliseconds_or_duration(text: &str) -> Result<Duration, String> {
    time_arg(text, "milliseconds", |ms| {
        Duration::from_secs_f64(ms / 1000.0)
    })
}

fn time_arg(text: &str, unit: &str, from_number: fn(f64) -> Duration) -> Result<Duration, String> {
    let text = text.trim();
    let parsed = match text.parse::<f64>() {
        Ok(number) if (0.0..1e12).contains(&number) => Some(from_number(number)),
        Ok(_) => None,
        Err(_) => humantime::parse_duration(text).ok(),
    };
    match parsed {
        Some(time) if time <= Duration::from_secs(366 * 86_400) => Ok(time),
        Some(_) => Err(format!("`{text}` is more than a year; give a shorter time")),
        None => Err(format!(
            "`{text}` is not a time: give a number of {unit} (`30`) or a duration with its unit \
             (`500ms`, `2s`, `1m`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A misspelt entry would leave a flag showing where it means nothing, silently.
    #[test]
    fn every_command_named_for_hidden_flags_exists() {
        for path in WITHOUT_OUTPUT.iter().chain(WITHOUT_STATE_DIR) {
            let mut command = &Cli::command();
            for name in path.split(' ') {
                command = command
                    .find_subcommand(name)
                    .unwrap_or_else(|| panic!("no command `{path}`"));
            }
        }
    }
}
