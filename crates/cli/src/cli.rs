//! The command definitions: one source for parsing, `--help`, the man page and shell completions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where the state database lives [default: $XDG_STATE_HOME/mahavishnu]
    #[arg(long, global = true, env = "MAHAVISHNU_STATE_DIR", value_name = "DIR")]
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
    /// List the targets and whether each is ready, or exactly why not
    Targets,
    /// Show the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print recorded state changes
    Events(EventsArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Print the man page (roff)
    Man,
    /// Hold one pty session (started by mahavishnu itself)
    #[command(name = "__pty-host", hide = true)]
    PtyHost(PtyHostArgs),
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
    Logs(IdArgs),
    /// Re-adopt sessions that still run but have no record (after the state directory was lost)
    Recover,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TargetArg {
    Tmux,
    Pty,
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Profile: shell, qwen, claude, gemini, codex, or one from the config
    pub profile: String,
    /// How many sessions to start
    #[arg(long, short = 'n', default_value_t = 1)]
    pub count: usize,
    /// Where to run them [default: tmux if installed, else pty]
    #[arg(long, value_enum)]
    pub target: Option<TargetArg>,
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
pub struct SendArgs {
    /// Session id
    pub id: String,
    /// Text, typed literally; never interpreted by a shell
    #[arg(allow_hyphen_values = true)]
    pub text: String,
    /// Do not press Enter after the text
    #[arg(long)]
    pub no_enter: bool,
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
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("condition").required(true).args(["pattern", "idle", "waiting"])))]
pub struct WaitArgs {
    /// Session id
    pub id: String,
    /// Until the screen matches this regular expression (`^` and `$` match at each line)
    #[arg(long = "for", value_name = "REGEX")]
    pub pattern: Option<String>,
    /// Until the screen has not changed for this many milliseconds
    #[arg(long, value_name = "MS")]
    pub idle: Option<u64>,
    /// Until the program waits for input (by its profile's rules)
    #[arg(long)]
    pub waiting: bool,
    /// Give up after this many seconds
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only sessions of this project (or started below this directory)
    #[arg(long, value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Include closed sessions
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Session id
    pub id: String,
    /// Kill the command after this many seconds
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub timeout: f64,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CloseArgs {
    /// Session ids
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Close every session (of --project, if given)
    #[arg(long)]
    pub all: bool,
    /// With --all: only sessions of this project
    #[arg(long, value_name = "DIR", requires = "all")]
    pub project: Option<PathBuf>,
    /// Seconds to wait for a program to end before killing it [default: terminal.stop_grace_ms]
    #[arg(long, value_name = "SECS")]
    pub grace: Option<f64>,
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
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
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
