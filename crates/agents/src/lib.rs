//! The agent registry: Claude Code's agent definitions (`.claude/agents/*.md`, `~/.claude/agents/`) and
//! Qwen Code's (`.qwen/agents/`, `~/.qwen/agents/`), discovered, resolved (the nearest definition of a
//! name wins) and validated.

pub mod definition;
pub mod run;
pub mod templates;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use definition::{Agent, Diagnostic, Scope, Severity, parse};
use mahavishnu_core::{Error, Result};

/// Every agent directory that applies to `cwd`, in precedence order: the project's (nearest first),
/// then the user's; Claude Code's and Qwen Code's apart.
pub fn agent_dirs(cwd: &Path, home: Option<&Path>) -> Vec<(Scope, PathBuf)> {
    let mut dirs = Vec::new();
    for (project_scope, user_scope, sub) in [
        (Scope::Project, Scope::User, ".claude/agents"),
        (Scope::QwenProject, Scope::QwenUser, ".qwen/agents"),
    ] {
        for ancestor in cwd.ancestors() {
            if Some(ancestor) == home {
                continue; // the home directory's agents are the user's
            }
            let dir = ancestor.join(sub);
            if dir.is_dir() {
                dirs.push((project_scope, dir));
            }
        }
        if let Some(home) = home {
            let dir = home.join(sub);
            if dir.is_dir() {
                dirs.push((user_scope, dir));
            }
        }
    }
    dirs
}

/// The agents that apply, the definitions they override, and every problem found on the way.
#[derive(Debug, Default)]
pub struct Registry {
    /// The agents in effect, by name (Claude Code's, then Qwen Code's).
    pub agents: Vec<Agent>,
    /// Definitions overridden by a nearer one of the same name.
    pub overridden: Vec<Agent>,
    /// Qwen Code copies that `agents sync qwen` wrote of Claude Code agents in effect.
    pub synced_copies: Vec<Agent>,
    /// Problems in any file.
    pub diagnostics: Vec<Diagnostic>,
}

impl Registry {
    /// Reads every agent directory that applies to `cwd`.
    pub fn load(cwd: &Path, home: Option<&Path>) -> Self {
        let mut registry = Registry::default();
        let mut by_dir_and_name: BTreeMap<(PathBuf, String), PathBuf> = BTreeMap::new();
        let mut effective: BTreeMap<(bool, String), usize> = BTreeMap::new();
        for (scope, dir) in agent_dirs(cwd, home) {
            for path in markdown_files(&dir) {
                let parsed = match std::fs::read(&path) {
                    Ok(bytes) => parse(&path, scope, &bytes),
                    Err(error) => {
                        registry.diagnostics.push(Diagnostic::file_error(
                            &path,
                            format!("cannot read the file: {error}"),
                        ));
                        continue;
                    }
                };
                registry.diagnostics.extend(parsed.diagnostics);
                let Some(mut agent) = parsed.agent else {
                    continue;
                };
                if let Some(first) = by_dir_and_name.get(&(dir.clone(), agent.name.clone())) {
                    let message = format!(
                        "another agent in {} is named `{}` ({}); names must be unique in a directory",
                        dir.display(),
                        agent.name,
                        first.display()
                    );
                    registry
                        .diagnostics
                        .push(Diagnostic::file_error(&path, message));
                    continue;
                }
                by_dir_and_name.insert((dir.clone(), agent.name.clone()), path.clone());
                let key = (scope.is_qwen(), agent.name.clone());
                match effective.get(&key) {
                    // Directories come nearest first: a later definition of a name is overridden.
                    Some(&winner) => {
                        if registry.agents[winner].overrides.is_none() {
                            registry.agents[winner].overrides = Some(agent.path.clone());
                        }
                        registry.overridden.push(agent);
                    }
                    None => {
                        agent.overrides = None;
                        effective.insert(key, registry.agents.len());
                        registry.agents.push(agent);
                    }
                }
            }
        }
        registry.set_aside_synced_copies();
        registry
            .agents
            .sort_by(|a, b| (a.scope.is_qwen(), &a.name).cmp(&(b.scope.is_qwen(), &b.name)));
        registry
    }

    /// A copy that sync wrote is the Claude Code agent it came from, so it is listed once, as that
    /// agent; a copy whose Claude Code agent is gone stays, as the only definition left.
    fn set_aside_synced_copies(&mut self) {
        let claude: std::collections::BTreeSet<String> = self
            .agents
            .iter()
            .filter(|agent| !agent.scope.is_qwen())
            .map(|agent| agent.name.clone())
            .collect();
        let (copies, agents) = std::mem::take(&mut self.agents)
            .into_iter()
            .partition(|agent| {
                agent.scope.is_qwen()
                    && write::is_synced_copy(agent)
                    && claude.contains(&agent.name)
            });
        self.agents = agents;
        self.synced_copies = copies;
    }

    /// The agent in effect called `name` (Claude Code's first).
    pub fn get(&self, name: &str) -> Result<&Agent> {
        self.agents
            .iter()
            .find(|agent| agent.name == name)
            .ok_or_else(|| {
                let mut known: Vec<&str> = Vec::new();
                for agent in &self.agents {
                    // A Claude Code and a Qwen Code agent may share a name; say it once.
                    if !known.contains(&agent.name.as_str()) {
                        known.push(&agent.name);
                    }
                }
                Error::Invalid(format!(
                    "no agent `{name}`; known agents: {}. See `mahavishnu agents list`",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })
    }
}

/// Validates the given files (or, with none, every file the registry reads).
pub fn validate(paths: &[PathBuf], cwd: &Path, home: Option<&Path>) -> Vec<Diagnostic> {
    if paths.is_empty() {
        return Registry::load(cwd, home).diagnostics;
    }
    let mut diagnostics = Vec::new();
    for path in paths {
        let files = if path.is_dir() {
            markdown_files(path)
        } else {
            vec![path.clone()]
        };
        for file in files {
            let scope = if file.components().any(|part| part.as_os_str() == ".qwen") {
                Scope::QwenProject
            } else {
                Scope::Project
            };
            match std::fs::read(&file) {
                Ok(bytes) => diagnostics.extend(parse(&file, scope, &bytes).diagnostics),
                Err(error) => diagnostics.push(Diagnostic::file_error(
                    &file,
                    format!("cannot read the file: {error}"),
                )),
            }
        }
    }
    diagnostics
}

fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md") && path.is_file())
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, name: &str, description: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            path,
            format!("---\nname: {name}\ndescription: {description}\n---\nDo the work.\n"),
        )
        .unwrap();
    }

    #[test]
    fn nearer_definitions_override_and_duplicates_are_reported() {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let project = root.path().join("work/project");
        let sub = project.join("crate");
        std::fs::create_dir_all(&sub).unwrap();
        write(
            &home.join(".claude/agents/reviewer.md"),
            "reviewer",
            "user reviewer",
        );
        write(
            &home.join(".claude/agents/writer.md"),
            "writer",
            "user writer",
        );
        write(
            &project.join(".claude/agents/reviewer.md"),
            "reviewer",
            "project reviewer",
        );
        write(
            &sub.join(".claude/agents/reviewer.md"),
            "reviewer",
            "nearest reviewer",
        );
        write(
            &sub.join(".claude/agents/zz-again.md"),
            "reviewer",
            "duplicate in one scope",
        );
        write(
            &project.join(".qwen/agents/reviewer.md"),
            "reviewer",
            "qwen reviewer",
        );
        let registry = Registry::load(&sub, Some(&home));
        let names: Vec<(&str, &str)> = registry
            .agents
            .iter()
            .map(|a| (a.name.as_str(), a.scope.name()))
            .collect();
        assert_eq!(
            names,
            [
                ("reviewer", "project"),
                ("writer", "user"),
                ("reviewer", "qwen-project")
            ]
        );
        assert_eq!(registry.agents[0].description, "nearest reviewer");
        assert_eq!(
            registry.agents[0].overrides.as_deref(),
            Some(project.join(".claude/agents/reviewer.md").as_path())
        );
        assert_eq!(registry.overridden.len(), 2);
        assert!(
            registry
                .diagnostics
                .iter()
                .any(|d| d.message.contains("is named `reviewer`"))
        );
        assert!(
            registry
                .get("nobody")
                .unwrap_err()
                .to_string()
                .contains("known agents: reviewer, writer")
        );
    }
}
