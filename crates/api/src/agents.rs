//! The agent registry: list, read, create, validate, run.

use std::path::PathBuf;

use mahavishnu_agents::run::{RunRequest, run_interactive, run_print};
use mahavishnu_agents::write::{NewAgent, create};
use mahavishnu_agents::{Agent, Registry, Severity, validate};
use mahavishnu_core::{Error, Result, paths};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::terminal::target_name;
use crate::{Api, Operation, Progress, Reply, Returns, blocking, bounded, define, plural, seconds};

pub(crate) fn operations() -> Vec<Operation> {
    vec![
        define(
            "agents_list",
            true,
            "List the agent definitions in effect (.claude/agents and .qwen/agents of the project and \
             the user) with name, description, model, tools, scope and file.",
            agents_list,
        )
        .returns(Returns::List("agents", "object")),
        define(
            "agent_get",
            true,
            "One agent definition: its fields, frontmatter and instructions.",
            agent_get,
        )
        .returns(Returns::Fields(&[("name", "string"), ("description", "string"), ("scope", "string"), ("path", "string"), ("frontmatter", "string"), ("body", "string")])),
        define(
            "agent_create",
            false,
            "Write a new agent definition from a template (basic, fastblocks-architect, \
             splashsand-specialist); never overwrites an existing file.",
            agent_create,
        )
        .returns(Returns::Fields(&[("name", "string"), ("path", "string")])),
        define(
            "agents_validate",
            true,
            "Check agent definition files and list every problem with its file, line and column.",
            agents_validate,
        )
        .returns(Returns::List("diagnostics", "object")),
        define(
            "agent_run",
            false,
            "Run an agent: start a Qwen Code or Claude Code session with the agent's instructions as \
             its system prompt and submit the prompt; with wait, return what it answered; with print, \
             run the CLI headless to completion instead.",
            agent_run,
        )
        .returns(Returns::Fields(&[("instance", "object?"), ("stdout", "string?")])),
    ]
}

/// Where agents are looked up from.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Also list the definitions that nearer ones override.
    #[serde(default)]
    pub all: bool,
    /// Look up agents as seen from this directory (default: the server's current directory).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

fn registry(api: &Api, cwd: Option<PathBuf>) -> Registry {
    let cwd = cwd.map_or_else(|| api.cwd().to_path_buf(), |dir| api.absolute(&dir));
    Registry::load(&cwd, api.home())
}

async fn agents_list(api: Api, params: ListParams, _: Progress) -> Result<Reply> {
    let registry = registry(&api, params.cwd);
    let mut agents: Vec<&Agent> = registry.agents.iter().collect();
    if params.all {
        agents.extend(registry.overridden.iter());
    }
    let summary = if agents.is_empty() {
        "no agents".to_string()
    } else {
        agents
            .iter()
            .map(|agent| {
                format!(
                    "{} ({}): {}",
                    agent.name,
                    agent.scope.name(),
                    agent.description
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Reply::list("agents", &agents, summary)
}

/// Arguments of `agent_get`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// The agent's name.
    pub name: String,
    /// Look up agents as seen from this directory (default: the server's current directory).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

/// One agent with its frontmatter and instructions.
#[derive(Clone, Debug, Serialize)]
pub struct AgentDetail {
    /// Its fields.
    #[serde(flatten)]
    pub agent: Agent,
    /// The frontmatter, as written.
    pub frontmatter: String,
    /// The instructions.
    pub body: String,
}

impl AgentDetail {
    /// `agent` with its text.
    pub fn of(agent: &Agent) -> Self {
        AgentDetail {
            agent: agent.clone(),
            frontmatter: agent.frontmatter.clone(),
            body: agent.body.clone(),
        }
    }
}

async fn agent_get(api: Api, params: GetParams, _: Progress) -> Result<Reply> {
    let registry = registry(&api, params.cwd);
    let detail = AgentDetail::of(registry.get(&params.name)?);
    let summary = format!(
        "{} ({}, {})\n{}",
        detail.agent.name,
        detail.agent.scope.name(),
        detail.agent.path.display(),
        detail.agent.description
    );
    Reply::new(&detail, summary)
}

/// The MCP prompt of an agent: its instructions, then the user's task.
pub fn agent_prompt(agent: &Agent, task: &str) -> String {
    let mut text = agent.body.trim_end().to_string();
    text.push_str("\n\n## Task\n\n");
    text.push_str(task.trim());
    text.push('\n');
    text
}

fn basic() -> String {
    "basic".into()
}

/// Arguments of `agent_create`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// The name: lowercase letters, digits and hyphens.
    pub name: String,
    /// When the agent should be used.
    pub description: String,
    /// Model: sonnet, opus, haiku, inherit, or a full model id.
    #[serde(default)]
    pub model: Option<String>,
    /// Tools (default: the template's, else all).
    #[serde(default)]
    pub tools: Vec<String>,
    /// The template: basic, fastblocks-architect or splashsand-specialist.
    #[serde(default = "basic")]
    pub template: String,
    /// project (the project's .claude/agents) or user (~/.claude/agents).
    #[serde(default)]
    pub scope: Option<String>,
    /// The directory whose project gets the agent (default: the server's current directory).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

/// A written agent.
#[derive(Clone, Debug, Serialize)]
pub struct CreatedAgent {
    /// Its name.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
}

/// Writes a new agent into the project's or the user's `.claude/agents`, as `agents new` and
/// `agent_create` both do.
pub fn create_agent(
    cwd: &std::path::Path,
    home: Option<&std::path::Path>,
    user_scope: bool,
    agent: &NewAgent,
) -> Result<CreatedAgent> {
    let base = if user_scope {
        home.map(std::path::Path::to_path_buf).ok_or_else(|| {
            Error::Invalid(
                "HOME is not set, so there is no user scope; use the project scope".into(),
            )
        })?
    } else {
        paths::project_of(cwd)
    };
    let path = create(&base.join(".claude/agents"), agent)?;
    Ok(CreatedAgent {
        name: agent.name.clone(),
        path,
    })
}

async fn agent_create(api: Api, params: CreateParams, _: Progress) -> Result<Reply> {
    bounded("description", &params.description)?;
    let user_scope = match params.scope.as_deref() {
        None | Some("project") => false,
        Some("user") => true,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "scope `{other}` is neither project nor user"
            )));
        }
    };
    let cwd = params
        .cwd
        .map_or_else(|| api.cwd().to_path_buf(), |dir| api.absolute(&dir));
    let home = api.home().map(std::path::Path::to_path_buf);
    let agent = NewAgent {
        name: params.name,
        description: params.description,
        model: params.model,
        tools: params.tools,
        template: Some(params.template),
    };
    let created = blocking(move || create_agent(&cwd, home.as_deref(), user_scope, &agent)).await?;
    let summary = format!("wrote {}", created.path.display());
    Reply::new(&created, summary)
}

/// Arguments of `agents_validate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateParams {
    /// Files to check (default: every file the registry reads).
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// Look up agents as seen from this directory (default: the server's current directory).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

async fn agents_validate(api: Api, params: ValidateParams, _: Progress) -> Result<Reply> {
    let cwd = params
        .cwd
        .map_or_else(|| api.cwd().to_path_buf(), |dir| api.absolute(&dir));
    let paths: Vec<PathBuf> = params.paths.iter().map(|p| api.absolute(p)).collect();
    let diagnostics = validate(&paths, &cwd, api.home());
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let mut summary: String = diagnostics.iter().map(|d| format!("{d}\n")).collect();
    summary.push_str(&format!(
        "{}, {}",
        plural(errors, "error", "errors"),
        plural(diagnostics.len() - errors, "warning", "warnings")
    ));
    Reply::list("diagnostics", &diagnostics, summary)
}

fn five_minutes() -> f64 {
    300.0
}

/// Arguments of `agent_run`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// The agent's name.
    pub name: String,
    /// What the agent should do.
    pub prompt: String,
    /// The CLI: qwen (default) or claude.
    #[serde(default)]
    pub cli: Option<String>,
    /// The target: tmux or pty.
    #[serde(default)]
    pub target: Option<String>,
    /// Working directory (default: the server's current directory).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Wait until the CLI waits for input again and return what it answered.
    #[serde(default)]
    pub wait: bool,
    /// Run the CLI headless to completion and return its output instead of starting a session.
    #[serde(default)]
    pub print: bool,
    /// Give up waiting after this many seconds.
    #[serde(default = "five_minutes")]
    pub timeout: f64,
    /// Close the agent's session when the CLI is not ready or does not answer in time (by default it
    /// is left running, and the error names it).
    #[serde(default)]
    pub close_on_failure: bool,
}

async fn agent_run(api: Api, params: RunParams, progress: Progress) -> Result<Reply> {
    bounded("prompt", &params.prompt)?;
    let profile = match params.cli.as_deref() {
        None | Some("qwen") => "qwen",
        Some("claude") => "claude",
        Some(other) => {
            return Err(Error::Invalid(format!(
                "cli `{other}` is neither qwen nor claude"
            )));
        }
    };
    if params.wait && params.print {
        return Err(Error::Invalid("give wait or print, not both".into()));
    }
    let timeout = seconds("timeout", params.timeout)?;
    let cwd = params
        .cwd
        .map_or_else(|| api.cwd().to_path_buf(), |dir| api.absolute(&dir));
    let registry = Registry::load(&cwd, api.home());
    let agent = registry.get(&params.name)?;
    let request = RunRequest {
        profile: profile.to_string(),
        prompt: params.prompt,
        target: target_name(params.target.as_deref())?,
        cwd: Some(cwd),
        wait: params.wait,
        timeout,
        close_on_failure: params.close_on_failure,
    };
    let what = format!("running agent {}", agent.name);
    if params.print {
        let printed = progress
            .while_running(
                &what,
                Some(timeout),
                run_print(api.orchestrator(), agent, &request),
            )
            .await?;
        let summary = printed.stdout.clone();
        return Reply::new(&printed, summary);
    }
    let outcome = progress
        .while_running(
            &what,
            Some(timeout),
            run_interactive(api.orchestrator(), agent, &request),
        )
        .await?;
    let summary = match &outcome.answer {
        Some(answer) => format!("{}\n{answer}", outcome.instance.id),
        None => format!("started {} in {}", agent.name, outcome.instance.id),
    };
    Reply::new(&outcome, summary)
}
