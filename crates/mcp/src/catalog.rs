//! What a client can name besides instances: agents, targets and profiles, as resources
//! (`mahavishnu://agents/{name}`, `.../targets/{name}`, `.../profiles/{name}`), and the
//! `start-session` prompt. Each name completes (`completion/complete`) from what exists now.

use mahavishnu_api::{Api, Progress};
use rmcp::model::{Prompt, PromptArgument, ResourceTemplate};
use serde_json::{Value, json};

/// The kinds of named things, with their resource URI prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Agent,
    Target,
    Profile,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Agent, Kind::Target, Kind::Profile];

    fn prefix(self) -> &'static str {
        match self {
            Kind::Agent => "mahavishnu://agents/",
            Kind::Target => "mahavishnu://targets/",
            Kind::Profile => "mahavishnu://profiles/",
        }
    }

    fn template_uri(self) -> String {
        format!("{}{{name}}", self.prefix())
    }

    /// The kind whose template is `uri`.
    pub fn of_template(uri: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.template_uri() == uri)
    }
}

/// The templates of agents, targets and profiles.
pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(Kind::Agent.template_uri(), "agent definition")
            .with_description("An agent's definition file (.claude/agents/NAME.md), as written")
            .with_mime_type("text/markdown"),
        ResourceTemplate::new(Kind::Target.template_uri(), "target")
            .with_description(
                "A target: its kind, where it points, what it can do, and its preflight",
            )
            .with_mime_type("application/json"),
        ResourceTemplate::new(Kind::Profile.template_uri(), "profile")
            .with_description("A profile: the command, environment and waits of its sessions")
            .with_mime_type("application/json"),
    ]
}

/// The names of `kind` that start with `typed`, sorted.
pub fn names(api: &Api, kind: Kind, typed: &str) -> Vec<String> {
    let mut names: Vec<String> = match kind {
        Kind::Agent => mahavishnu_agents::Registry::load(api.cwd(), api.home())
            .agents
            .into_iter()
            .map(|agent| agent.name)
            .collect(),
        Kind::Target => api
            .orchestrator()
            .target_names()
            .into_iter()
            .map(|name| name.to_string())
            .collect(),
        Kind::Profile => api
            .orchestrator()
            .config()
            .config
            .profiles
            .keys()
            .cloned()
            .collect(),
    };
    names.retain(|name| name.starts_with(typed));
    names.sort();
    names.dedup();
    names
}

/// Reads an agent, target or profile resource: its text and MIME type; `None` for a URI of none of
/// them, an error naming what exists for a name that does not.
pub async fn read(api: &Api, uri: &str) -> Option<Result<(String, &'static str), String>> {
    let (kind, name) = Kind::ALL
        .into_iter()
        .find_map(|kind| Some((kind, uri.strip_prefix(kind.prefix())?)))?;
    let unknown = |what: &str| {
        let known = names(api, kind, "");
        Err(format!(
            "no {what} `{name}`; there are: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    };
    Some(match kind {
        Kind::Agent => {
            let registry = mahavishnu_agents::Registry::load(api.cwd(), api.home());
            // The definition as it was read and checked, not the file again.
            match registry.get(name) {
                Ok(agent) => Ok((
                    format!("---\n{}\n---\n{}", agent.frontmatter.trim_end(), agent.body),
                    "text/markdown",
                )),
                Err(_) => unknown("agent"),
            }
        }
        Kind::Target => {
            if !names(api, kind, "").iter().any(|known| known == name) {
                return Some(unknown("target"));
            }
            api.call("target_show", json!({ "name": name }), Progress::default())
                .await
                .map(|reply| (pretty(&reply.value), "application/json"))
                .map_err(|e| e.to_string())
        }
        Kind::Profile => match api.orchestrator().config().config.profiles.get(name) {
            Some(profile) => serde_json::to_value(profile)
                .map(|value| (pretty(&value), "application/json"))
                .map_err(|e| e.to_string()),
            None => unknown("profile"),
        },
    })
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// The prompt that hands a task to a new session of a profile.
pub const START_SESSION: &str = "start-session";

/// `start-session`: its arguments complete to profiles and targets.
pub fn start_session_prompt() -> Prompt {
    Prompt::new(
        START_SESSION,
        Some(
            "Start a session of a profile (qwen, claude, shell, ...) on a target, give it a task, \
             and report what it did",
        ),
        Some(vec![
            PromptArgument::new("profile")
                .with_description("The profile to start, e.g. qwen or claude")
                .with_required(true),
            PromptArgument::new("task")
                .with_description("What the session should do")
                .with_required(true),
            PromptArgument::new("target")
                .with_description("Where it runs (tmux, pty, a Kubernetes target, ...)")
                .with_required(false),
        ]),
    )
}

/// The message of `start-session`.
pub fn start_session_message(profile: &str, task: &str, target: Option<&str>) -> String {
    let target = target
        .map(|target| format!(", target `{target}`"))
        .unwrap_or_default();
    format!(
        "Start one session with the tool terminal_launch (profile `{profile}`{target}). Wait with \
         terminal_wait until it waits for input, then type the task below into it with \
         terminal_send, wait with terminal_wait until it waits for input again, read its screen \
         with terminal_capture, and report what it did.\n\nThe task:\n{task}"
    )
}

/// What an argument of `prompt` completes to: `None` for an argument with nothing to complete.
pub fn prompt_argument_kind(prompt: &str, argument: &str) -> Option<Kind> {
    match (prompt, argument) {
        (START_SESSION, "profile") => Some(Kind::Profile),
        (START_SESSION, "target") => Some(Kind::Target),
        _ => None,
    }
}
