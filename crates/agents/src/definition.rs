//! One agent file: Markdown with YAML frontmatter, parsed with a diagnostic for every problem, each
//! with its line and column.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where an agent definition lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// `.claude/agents/` of the project.
    Project,
    /// `~/.claude/agents/`.
    User,
    /// `.qwen/agents/` of the project.
    QwenProject,
    /// `~/.qwen/agents/`.
    QwenUser,
}

impl Scope {
    /// The name shown in listings.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Project => "project",
            Scope::User => "user",
            Scope::QwenProject => "qwen-project",
            Scope::QwenUser => "qwen-user",
        }
    }

    /// Whether Qwen Code reads this scope (and so its rules apply).
    pub fn is_qwen(self) -> bool {
        matches!(self, Scope::QwenProject | Scope::QwenUser)
    }
}

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The CLI will not load the agent as meant.
    Error,
    /// Worth fixing; the agent still loads.
    Warning,
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong and what to do.
    pub message: String,
}

impl Diagnostic {
    /// An error about a file as a whole (placed at its first line).
    pub fn file_error(path: &Path, message: String) -> Self {
        Diagnostic {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            severity: Severity::Error,
            message,
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {severity}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// An agent definition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Agent {
    /// Its name (how the CLIs call it).
    pub name: String,
    /// When to use it.
    pub description: String,
    /// The model, if it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Its tools, if it restricts them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Where it was found.
    pub scope: Scope,
    /// Its file.
    pub path: PathBuf,
    /// The file of the definition of the same name it overrides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overrides: Option<PathBuf>,
    /// Its instructions (the Markdown body).
    #[serde(skip)]
    pub body: String,
    /// Its frontmatter, as written.
    #[serde(skip)]
    pub frontmatter: String,
}

/// Claude Code's built-in tool names.
pub const CLAUDE_TOOLS: &[&str] = &[
    "Bash",
    "BashOutput",
    "Edit",
    "ExitPlanMode",
    "Glob",
    "Grep",
    "KillShell",
    "LS",
    "MultiEdit",
    "NotebookEdit",
    "NotebookRead",
    "Read",
    "SlashCommand",
    "Task",
    "TodoWrite",
    "WebFetch",
    "WebSearch",
    "Write",
];

/// Qwen Code's built-in tool names.
pub const QWEN_TOOLS: &[&str] = &[
    "ask_user_question",
    "edit",
    "exit_plan_mode",
    "glob",
    "grep_search",
    "list_directory",
    "lsp",
    "read_file",
    "read_many_files",
    "run_shell_command",
    "save_memory",
    "skill",
    "task",
    "todo_write",
    "web_fetch",
    "write_file",
];

/// Models Claude Code takes in an agent's `model`.
pub const CLAUDE_MODELS: &[&str] = &["sonnet", "opus", "haiku", "inherit"];

const KNOWN_FIELDS: &[&str] = &[
    "name",
    "description",
    "model",
    "tools",
    "color",
    "approvalMode",
    "disallowedTools",
];

/// Bodies larger than this get a warning.
const LARGE_BODY: usize = 256 * 1024;

/// The outcome of reading one file: the agent (unless an error prevents it) and every problem.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The agent, when the file could be read as one.
    pub agent: Option<Agent>,
    /// Every problem found.
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

struct Report<'a> {
    path: &'a Path,
    diagnostics: Vec<Diagnostic>,
}

impl Report<'_> {
    fn push(&mut self, line: usize, column: usize, severity: Severity, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            path: self.path.to_path_buf(),
            line,
            column,
            severity,
            message: message.into(),
        });
    }
    fn error(&mut self, line: usize, column: usize, message: impl Into<String>) {
        self.push(line, column, Severity::Error, message);
    }
    fn warning(&mut self, line: usize, column: usize, message: impl Into<String>) {
        self.push(line, column, Severity::Warning, message);
    }
}

/// Reads an agent from the bytes of its file.
pub fn parse(path: &Path, scope: Scope, bytes: &[u8]) -> Parsed {
    let mut report = Report {
        path,
        diagnostics: Vec::new(),
    };
    let agent = parse_into(path, scope, bytes, &mut report);
    let failed = report
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    Parsed {
        agent: if failed { None } else { agent },
        diagnostics: report.diagnostics,
    }
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    (line, column)
}

fn parse_into(path: &Path, scope: Scope, bytes: &[u8], report: &mut Report<'_>) -> Option<Agent> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let valid = String::from_utf8_lossy(&bytes[..error.valid_up_to()]).into_owned();
            let (line, column) = position(&valid, valid.len());
            report.error(
                line,
                column,
                format!(
                    "not valid UTF-8 (byte {}); save the file as UTF-8",
                    error.valid_up_to()
                ),
            );
            return None;
        }
    };
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => {
            report.warning(1, 1, "the file starts with a byte-order mark; remove it, some tools then miss the frontmatter");
            rest
        }
        None => text,
    };
    let normalized;
    let text = if text.contains("\r\n") {
        report.warning(1, 1, "CRLF line endings; use LF (`\\n`) line endings");
        normalized = text.replace("\r\n", "\n");
        normalized.as_str()
    } else {
        text
    };
    let lines: Vec<&str> = text.split('\n').collect();
    if lines.first().map(|line| line.trim_end()) != Some("---") {
        report.error(1, 1, "no frontmatter: the file must start with a `---` line, YAML fields (name, description, ...), and another `---` line");
        return None;
    }
    let Some(close) = lines
        .iter()
        .skip(1)
        .position(|line| line.trim_end() == "---")
        .map(|index| index + 1)
    else {
        report.error(
            1,
            1,
            "the frontmatter opened here never closes: add a `---` line after its YAML fields",
        );
        return None;
    };
    let yaml_lines = &lines[1..close];
    for (index, line) in yaml_lines.iter().enumerate() {
        let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
        if let Some(column) = indent.find('\t') {
            report.error(
                index + 2,
                column + 1,
                "a tab in the indentation; YAML allows only spaces there",
            );
        }
    }
    if report
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error)
    {
        return None;
    }
    let yaml = yaml_lines.join("\n");
    let field_line = |key: &str| {
        yaml_lines
            .iter()
            .position(|line| line.starts_with(&format!("{key}:")))
            .map_or(1, |index| index + 2)
    };
    let value: serde_yaml::Value = match serde_yaml::from_str(&yaml) {
        Ok(value) => value,
        Err(error) => {
            let (line, column) = error
                .location()
                .map_or((2, 1), |at| (at.line() + 1, at.column()));
            let message = error.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            report.error(
                line,
                column,
                format!("the frontmatter is not valid YAML: {message}"),
            );
            return None;
        }
    };
    let Some(fields) = value.as_mapping() else {
        report.error(
            2,
            1,
            "the frontmatter must be YAML fields (`name: ...`), not a list or a single value",
        );
        return None;
    };
    for key in fields.keys() {
        let key = key.as_str().unwrap_or("?");
        if !KNOWN_FIELDS.contains(&key) {
            report.warning(
                field_line(key),
                1,
                format!("unknown field `{key}`; Claude Code and Qwen Code ignore it"),
            );
        }
    }
    let text_field = |report: &mut Report<'_>, key: &str| -> Option<String> {
        match fields.get(key) {
            None | Some(serde_yaml::Value::Null) => {
                report.error(
                    1,
                    1,
                    format!("missing `{key}`; add `{key}: ...` to the frontmatter"),
                );
                None
            }
            Some(serde_yaml::Value::String(value)) if value.trim().is_empty() => {
                report.error(field_line(key), 1, format!("`{key}` is empty"));
                None
            }
            Some(serde_yaml::Value::String(value)) => Some(value.trim().to_string()),
            Some(_) => {
                report.error(field_line(key), 1, format!("`{key}` must be text"));
                None
            }
        }
    };
    let name = text_field(report, "name");
    let description = text_field(report, "description");
    if let Some(name) = &name {
        check_name(name, field_line("name"), report);
    }
    let model = match fields.get("model") {
        None | Some(serde_yaml::Value::Null) => None,
        Some(serde_yaml::Value::String(model)) => {
            let known = CLAUDE_MODELS.contains(&model.as_str()) || model.starts_with("claude-");
            if !scope.is_qwen() && !known {
                report.error(
                    field_line("model"),
                    1,
                    format!(
                        "unknown model `{model}`; use one of {} or a full `claude-...` model id",
                        CLAUDE_MODELS.join(", ")
                    ),
                );
            }
            Some(model.clone())
        }
        Some(_) => {
            report.error(field_line("model"), 1, "`model` must be text");
            None
        }
    };
    let tools = check_tools(fields.get("tools"), scope, field_line("tools"), report);
    let body = lines[close + 1..].join("\n");
    if body.trim().is_empty() {
        report.error(
            close + 1,
            1,
            "the body is empty: write the agent's instructions below the frontmatter",
        );
    } else if body.len() > LARGE_BODY {
        report.warning(
            close + 2,
            1,
            format!(
                "the body is {} KB; instructions this long crowd the model's context",
                body.len() / 1024
            ),
        );
    }
    Some(Agent {
        name: name?,
        description: description?,
        model,
        tools,
        scope,
        path: path.to_path_buf(),
        overrides: None,
        body: body.trim_start_matches('\n').to_string(),
        frontmatter: yaml,
    })
}

fn check_name(name: &str, line: usize, report: &mut Report<'_>) {
    if name.contains('/') || name.contains('\\') || name.contains("..") {
        report.error(line, 1, format!("the name `{name}` contains a path separator or `..`; use lowercase letters, digits and hyphens"));
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
        || name.len() > 64
    {
        report.error(line, 1, format!("the name `{name}` must be lowercase letters, digits and hyphens (at most 64), e.g. `code-reviewer`"));
    }
}

fn check_tools(
    value: Option<&serde_yaml::Value>,
    scope: Scope,
    line: usize,
    report: &mut Report<'_>,
) -> Option<Vec<String>> {
    let tools: Vec<String> = match value? {
        serde_yaml::Value::Null => return None,
        serde_yaml::Value::String(list) => {
            if scope.is_qwen() {
                report.error(line, 1, "`tools` is a string; Qwen Code drops an agent whose tools are not a YAML list: write one `- tool` per line");
            }
            list.split(',')
                .map(|tool| tool.trim().to_string())
                .filter(|tool| !tool.is_empty())
                .collect()
        }
        serde_yaml::Value::Sequence(items) => items
            .iter()
            .map(|item| item.as_str().unwrap_or("").to_string())
            .collect(),
        _ => {
            report.error(line, 1, "`tools` must be a list of tool names");
            return None;
        }
    };
    for tool in &tools {
        if tool.starts_with("mcp__") {
            continue;
        }
        if scope.is_qwen() && !QWEN_TOOLS.contains(&tool.as_str()) {
            report.error(line, 1, format!("`{tool}` is not a Qwen Code tool, and Qwen Code drops the agent; use names like {}", QWEN_TOOLS[..6].join(", ")));
        } else if !scope.is_qwen() && !CLAUDE_TOOLS.contains(&tool.as_str()) {
            report.warning(
                line,
                1,
                format!(
                    "`{tool}` is not a Claude Code tool name (known: {})",
                    CLAUDE_TOOLS.join(", ")
                ),
            );
        }
    }
    Some(tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(bytes: &[u8], scope: Scope) -> Vec<String> {
        parse(Path::new("a.md"), scope, bytes)
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_good_agent_parses() {
        let parsed = parse(Path::new("r.md"), Scope::Project, b"---\nname: reviewer\ndescription: Reviews code\nmodel: sonnet\ntools: Read, Grep\n---\n\nReview carefully.\n");
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let agent = parsed.agent.unwrap();
        assert_eq!(agent.tools, Some(vec!["Read".into(), "Grep".into()]));
        assert_eq!(agent.body, "Review carefully.\n");
    }

    #[test]
    fn every_problem_is_named_with_its_place() {
        let cases: &[(&[u8], Scope, &str)] = &[
            (
                b"no frontmatter",
                Scope::Project,
                "a.md:1:1: error: no frontmatter",
            ),
            (b"---\nname: x\n", Scope::Project, "never closes"),
            (
                b"---\nname: x\n\tdescription: y\n---\nbody",
                Scope::Project,
                "a.md:3:1: error: a tab",
            ),
            (
                b"---\nname: [x\n---\nbody",
                Scope::Project,
                "not valid YAML",
            ),
            (
                b"---\ndescription: d\n---\nbody",
                Scope::Project,
                "missing `name`",
            ),
            (
                b"---\nname: x\ndescription: \"\"\n---\nbody",
                Scope::Project,
                "a.md:3:1: error: `description` is empty",
            ),
            (
                b"---\nname: Big_Name\ndescription: d\n---\nbody",
                Scope::Project,
                "lowercase letters",
            ),
            (
                b"---\nname: ../evil\ndescription: d\n---\nbody",
                Scope::Project,
                "path separator",
            ),
            (
                b"---\nname: x\ndescription: d\nmodel: gpt-9\n---\nbody",
                Scope::Project,
                "unknown model `gpt-9`",
            ),
            (
                b"---\nname: x\ndescription: d\ntools: read_file, glob\n---\nbody",
                Scope::QwenProject,
                "not a YAML list",
            ),
            (
                b"---\nname: x\ndescription: d\ntools:\n  - Read\n---\nbody",
                Scope::QwenProject,
                "`Read` is not a Qwen Code tool",
            ),
            (
                b"---\nname: x\ndescription: d\n---\n\n  \n",
                Scope::Project,
                "the body is empty",
            ),
            (
                b"---\nname: x\ndescription: d\nflavour: sweet\n---\nbody",
                Scope::Project,
                "a.md:4:1: warning: unknown field `flavour`",
            ),
            (
                b"\xef\xbb\xbf---\nname: x\ndescription: d\n---\nbody",
                Scope::Project,
                "byte-order mark",
            ),
            (
                b"---\r\nname: x\r\ndescription: d\r\n---\r\nbody\r\n",
                Scope::Project,
                "CRLF",
            ),
            (
                b"---\nname: x\ndescription: caf\xe9\n---\nbody",
                Scope::Project,
                "a.md:3:17: error: not valid UTF-8",
            ),
        ];
        for (bytes, scope, needle) in cases {
            let found = messages(bytes, *scope);
            assert!(
                found.iter().any(|message| message.contains(needle)),
                "{needle}: {found:?}"
            );
        }
    }

    #[test]
    fn a_byte_order_mark_or_crlf_still_loads() {
        let parsed = parse(
            Path::new("a.md"),
            Scope::Project,
            b"\xef\xbb\xbf---\r\nname: x\r\ndescription: d\r\n---\r\nbody\r\n",
        );
        assert!(!parsed.has_errors());
        assert_eq!(parsed.agent.unwrap().name, "x");
    }

    #[test]
    fn huge_bodies_are_flagged_not_refused() {
        let mut bytes = b"---\nname: x\ndescription: d\n---\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'a', 1 << 20));
        let parsed = parse(Path::new("a.md"), Scope::Project, &bytes);
        assert!(!parsed.has_errors());
        assert!(
            parsed.diagnostics[0].message.contains("1024 KB"),
            "{:?}",
            parsed.diagnostics
        );
    }
}
