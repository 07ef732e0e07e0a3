//! Writing agents: `agents new` (never over an existing file), `agents export` (the JSON `claude --agents`
//! takes) and `agents sync qwen` (Qwen Code definitions from Claude Code's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mahavishnu_core::{Error, Result};
use serde::Serialize;

use crate::definition::{self, Scope};
use crate::templates::{TEMPLATES, template};
use crate::{Agent, Registry};

/// A new agent.
#[derive(Clone, Debug, Default)]
pub struct NewAgent {
    /// Its name: lowercase letters, digits, hyphens.
    pub name: String,
    /// When to use it.
    pub description: String,
    /// A model, if any.
    pub model: Option<String>,
    /// Tools; the template's when empty.
    pub tools: Vec<String>,
    /// The template (`basic` when not given).
    pub template: Option<String>,
}

#[derive(Serialize)]
struct Frontmatter<'a> {
    name: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<String>,
}

/// Writes `agent` into `dir` (created if needed) as `NAME.md`; never overwrites an existing file.
pub fn create(dir: &Path, agent: &NewAgent) -> Result<PathBuf> {
    let template_name = agent.template.as_deref().unwrap_or("basic");
    let template = template(template_name).ok_or_else(|| {
        let names: Vec<&str> = TEMPLATES.iter().map(|template| template.name).collect();
        Error::Invalid(format!(
            "no template `{template_name}`; choose one of {}",
            names.join(", ")
        ))
    })?;
    // The name is checked before it is used in a path, so it can never leave the agents directory.
    let mut problems = Vec::new();
    let probe = format!(
        "---\nname: {}\ndescription: x\n---\nx\n",
        serde_json::to_string(&agent.name).unwrap_or_default()
    );
    for diagnostic in
        definition::parse(Path::new("new"), Scope::Project, probe.as_bytes()).diagnostics
    {
        problems.push(diagnostic.message);
    }
    if agent.name.is_empty() || !problems.is_empty() {
        return Err(Error::Invalid(
            problems
                .first()
                .cloned()
                .unwrap_or_else(|| "the agent needs a name".into()),
        ));
    }
    if agent.description.trim().is_empty() {
        return Err(Error::Invalid(
            "--description is empty; say when the agent should be used".into(),
        ));
    }
    let tools: Vec<String> = if agent.tools.is_empty() {
        template.tools.iter().map(|tool| tool.to_string()).collect()
    } else {
        agent.tools.clone()
    };
    let frontmatter = Frontmatter {
        name: &agent.name,
        description: agent.description.trim(),
        model: agent.model.as_deref(),
        tools: (!tools.is_empty()).then(|| tools.join(", ")),
    };
    let yaml = serde_yaml::to_string(&frontmatter).map_err(|e| Error::Invalid(e.to_string()))?;
    let body = template
        .body
        .replace("{name}", &agent.name)
        .replace("{description}", agent.description.trim());
    let text = format!("---\n{yaml}---\n\n{body}");
    let parsed = definition::parse(Path::new(&agent.name), Scope::Project, text.as_bytes());
    if let Some(problem) = parsed
        .diagnostics
        .iter()
        .find(|d| d.severity == definition::Severity::Error)
    {
        return Err(Error::Invalid(problem.message.clone()));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let path = dir.join(format!("{}.md", agent.name));
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Invalid(format!(
                "{} already exists; nothing was written (edit it, or pick another name)",
                path.display()
            )),
            _ => Error::io(format!("cannot write {}", path.display()), e),
        })?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(path)
}

/// One agent as `claude --agents` takes it.
#[derive(Clone, Debug, Serialize)]
pub struct ClaudeAgent {
    /// When to use it.
    pub description: String,
    /// Its instructions.
    pub prompt: String,
    /// Its tools, if restricted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Its model, if named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// The Claude Code agents in effect, as the JSON object `claude --agents` takes.
pub fn export_claude(registry: &Registry) -> BTreeMap<String, ClaudeAgent> {
    registry
        .agents
        .iter()
        .filter(|agent| !agent.scope.is_qwen())
        .map(|agent| {
            let exported = ClaudeAgent {
                description: agent.description.clone(),
                prompt: agent.body.clone(),
                tools: agent.tools.clone(),
                model: agent.model.clone(),
            };
            (agent.name.clone(), exported)
        })
        .collect()
}

/// Claude Code tool names and their Qwen Code counterparts.
const TOOL_MAP: &[(&str, &str)] = &[
    ("Read", "read_file"),
    ("Write", "write_file"),
    ("Edit", "edit"),
    ("MultiEdit", "edit"),
    ("Bash", "run_shell_command"),
    ("Glob", "glob"),
    ("Grep", "grep_search"),
    ("LS", "list_directory"),
    ("WebFetch", "web_fetch"),
    ("TodoWrite", "todo_write"),
    ("Task", "task"),
    ("ExitPlanMode", "exit_plan_mode"),
];

/// Marks files that `sync` wrote, so that it only ever replaces its own.
const SYNC_MARK: &str = "# written by `mahavishnu agents sync qwen` from ";

/// Whether `agent` is a file that `sync qwen` wrote.
pub fn is_synced_copy(agent: &Agent) -> bool {
    agent.frontmatter.contains(SYNC_MARK)
}

/// What `sync qwen` did with one agent.
#[derive(Clone, Debug, Serialize)]
pub struct Synced {
    /// The agent.
    pub name: String,
    /// The Qwen Code file written (or left alone).
    pub path: PathBuf,
    /// Whether it was written.
    pub written: bool,
    /// Claude Code tools with no Qwen Code counterpart, left out.
    pub unmapped_tools: Vec<String>,
    /// Why it was not written, or anything else worth knowing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Writes a Qwen Code definition into `dir` for every Claude Code agent in effect, tools mapped to Qwen
/// Code's names as a YAML list. Files `sync` did not write itself are never replaced.
pub fn sync_qwen(registry: &Registry, dir: &Path) -> Result<Vec<Synced>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let mut outcomes = Vec::new();
    for agent in registry
        .agents
        .iter()
        .filter(|agent| !agent.scope.is_qwen())
    {
        outcomes.push(sync_one(agent, dir)?);
    }
    Ok(outcomes)
}

fn sync_one(agent: &Agent, dir: &Path) -> Result<Synced> {
    let path = dir.join(format!("{}.md", agent.name));
    let mut synced = Synced {
        name: agent.name.clone(),
        path: path.clone(),
        written: false,
        unmapped_tools: vec![],
        note: None,
    };
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.contains(SYNC_MARK)
    {
        synced.note = Some(format!(
            "{} exists and was not written by sync; left alone",
            path.display()
        ));
        return Ok(synced);
    }
    let tools = agent.tools.as_ref().map(|tools| {
        let mut mapped = Vec::new();
        for tool in tools {
            match TOOL_MAP.iter().find(|(claude, _)| claude == tool) {
                Some((_, qwen)) if !mapped.contains(&qwen.to_string()) => {
                    mapped.push(qwen.to_string())
                }
                Some(_) => {}
                None if tool.starts_with("mcp__") => mapped.push(tool.clone()),
                None => synced.unmapped_tools.push(tool.clone()),
            }
        }
        mapped
    });
    #[derive(Serialize)]
    struct QwenFrontmatter<'a> {
        name: &'a str,
        description: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tools: Option<&'a [String]>,
    }
    let frontmatter = QwenFrontmatter {
        name: &agent.name,
        description: &agent.description,
        tools: tools.as_deref(),
    };
    let yaml = serde_yaml::to_string(&frontmatter).map_err(|e| Error::Invalid(e.to_string()))?;
    let text = format!(
        "---\n{SYNC_MARK}{}\n{yaml}---\n\n{}",
        agent.path.display(),
        agent.body
    );
    std::fs::write(&path, text)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    synced.written = true;
    if agent
        .model
        .as_deref()
        .is_some_and(|model| model != "inherit")
    {
        synced.note = Some(format!(
            "model `{}` is Claude Code's; the Qwen Code agent inherits the session's model",
            agent.model.as_deref().unwrap_or("")
        ));
    }
    Ok(synced)
}
