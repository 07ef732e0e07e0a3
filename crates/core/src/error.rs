//! The one error type of the core and of every target. Each message names the problem and the fix.

use crate::model::TargetName;

/// Result with the core error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong below the faces. Messages are written for the user: what is wrong, then
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target cannot perform this operation at all.
    #[error(
        "target `{target}` does not support `{operation}`{}",
        no_terminal(operation)
    )]
    Unsupported {
        target: TargetName,
        operation: &'static str,
    },

    /// No instance with this id is known.
    #[error("no instance `{id}`; run `mahavishnu terminal list --all` to see the known ids")]
    UnknownInstance { id: String },

    /// The id is not of the form `<target>:<native id>`.
    #[error(
        "`{id}` is not an instance id: {reason}; ids look like `tmux:mv-7f3a` or `pty:mv-19c2`"
    )]
    InvalidId { id: String, reason: String },

    /// No target with this name is configured.
    #[error(
        "no target `{name}`; the targets are: {known}. Declare it as [targets.{name}] with a `kind` in \
         your config, or see them with `mahavishnu targets`"
    )]
    UnknownTarget { name: String, known: String },

    /// No profile with this name exists.
    #[error(
        "unknown profile `{name}`; known profiles: {known}. Add one under [profiles.{name}] in the config"
    )]
    UnknownProfile { name: String, known: String },

    /// A target is not ready to be used (tmux missing, runtime directory unwritable, ...).
    #[error("target `{target}` is not ready: {reason}")]
    TargetNotReady { target: TargetName, reason: String },

    /// The instance exists but cannot take this operation in its current state.
    #[error("instance `{id}` is {state}: {hint}")]
    NotLive {
        id: String,
        state: String,
        hint: String,
    },

    /// A wait ended without its condition becoming true; the end of the last screen shows why (a
    /// sign-in or a question the program asks, say).
    #[error(
        "timed out after {seconds:.1}s waiting for {what} on `{id}`; {}",
        describe_screen(screen)
    )]
    Timeout {
        id: String,
        what: String,
        seconds: f64,
        screen: String,
    },

    /// The user gave an argument or a configuration value that cannot work.
    #[error("{0}")]
    Invalid(String),

    /// An operation ran and did not succeed; the message says why.
    #[error("{0}")]
    Failed(String),

    /// The configuration could not be read.
    #[error("{0}")]
    Config(String),

    /// The state store failed.
    #[error("{0}")]
    Store(String),

    /// A target failed while doing what it was asked.
    #[error("{target}: {message}")]
    Target { target: TargetName, message: String },

    /// An operating-system call failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being attempted.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// A failure of the given target.
    pub fn target(target: &TargetName, message: impl Into<String>) -> Self {
        Error::Target {
            target: target.clone(),
            message: message.into(),
        }
    }

    /// Whether this is a mistake in the caller's input (exit code 2 at the CLI) rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::InvalidId { .. }
                | Error::UnknownProfile { .. }
                | Error::UnknownTarget { .. }
                | Error::Invalid(_)
        )
    }
}

/// The end of a screen, for an error message.
fn describe_screen(screen: &str) -> String {
    if screen.trim().is_empty() {
        "its screen is blank (the program has drawn nothing yet)".into()
    } else {
        format!(
            "its screen ends with:\n{}\n(see it whole with `mahavishnu terminal capture`)",
            screen.trim_end()
        )
    }
}

/// What to use instead, when an operation needs a terminal that the target's instances do not have.
fn no_terminal(operation: &str) -> &'static str {
    match operation {
        "send" | "screen" | "attach" | "resize" => {
            ": its instances run headless, without a terminal; read their output with `logs` and run \
             commands in them with `exec`"
        }
        _ => "",
    }
}
