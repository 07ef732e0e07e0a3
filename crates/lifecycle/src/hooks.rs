//! Running one hook: conditions, placeholders (always shell-quoted), commands with a time limit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mahavishnu_core::config::{HookConfig, WhenConfig};
use mahavishnu_core::process;
use serde::Serialize;

/// The most of a command's output that is kept.
const OUTPUT_LIMIT: usize = 64 * 1024;

/// What a hook knows about the moment it runs in.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HookContext {
    /// The event.
    pub event: String,
    /// The coding session.
    pub session_id: Option<String>,
    /// The project directory.
    pub project_dir: PathBuf,
    /// UserPromptSubmit's prompt.
    pub prompt: Option<String>,
    /// SessionStart's source.
    pub source: Option<String>,
    /// SessionEnd's reason.
    pub reason: Option<String>,
}

impl HookContext {
    /// The placeholder values, by name.
    pub fn values(&self) -> Vec<(&'static str, String)> {
        let name = self
            .project_dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        vec![
            ("project_name", name),
            (
                "project_dir",
                self.project_dir.to_string_lossy().into_owned(),
            ),
            ("session_id", self.session_id.clone().unwrap_or_default()),
            ("event", self.event.clone()),
            ("prompt", self.prompt.clone().unwrap_or_default()),
            ("source", self.source.clone().unwrap_or_default()),
            ("reason", self.reason.clone().unwrap_or_default()),
        ]
    }
}

/// The environment variable that carries placeholder `name`.
fn variable(name: &str) -> String {
    format!("MAHAVISHNU_{}", name.to_ascii_uppercase())
}

/// The largest value passed in the environment itself. Linux refuses to start a program when one
/// environment string passes 128 KiB (`Argument list too long`); larger values go through a file.
const ENVIRONMENT_VALUE_LIMIT: usize = 64 * 1024;

/// A hook command ready to run: its placeholders are quoted references to environment variables, so
/// that no value is ever read by the shell as code, whatever quotes surround the placeholder.
#[derive(Debug)]
pub struct PreparedCommand {
    /// What `sh -c` runs.
    pub command: String,
    /// The variables it refers to, and the extra ones given.
    pub environment: Vec<(String, String)>,
    spilled: Vec<PathBuf>,
}

impl Drop for PreparedCommand {
    fn drop(&mut self) {
        for file in &self.spilled {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// Prepares `template` to run in `context`, with `extra` variables added. A value too large for the
/// environment is written to a private file in the runtime directory, named by `MAHAVISHNU_<NAME>_FILE`
/// (removed when the prepared command is dropped), and its placeholder reads that file.
pub fn prepare(
    template: &str,
    context: &HookContext,
    extra: Vec<(String, String)>,
) -> mahavishnu_core::Result<PreparedCommand> {
    let mut prepared = PreparedCommand {
        command: String::new(),
        environment: Vec::new(),
        spilled: Vec::new(),
    };
    let mut large = Vec::new();
    for (name, value) in context.values() {
        let key = variable(name);
        // A shell variable cannot hold a NUL byte.
        let value = value.replace('\0', "");
        if value.len() <= ENVIRONMENT_VALUE_LIMIT {
            prepared.environment.push((key, value));
            continue;
        }
        let dir = mahavishnu_core::paths::runtime_dir()?.join("hooks");
        mahavishnu_core::paths::ensure_private_dir(&dir)?;
        let file = dir.join(format!(
            "{name}-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let written = mahavishnu_core::paths::create_private_file(&file)
            .and_then(|mut handle| std::io::Write::write_all(&mut handle, value.as_bytes()));
        prepared.spilled.push(file.clone());
        written.map_err(|e| {
            mahavishnu_core::Error::io(format!("cannot write {}", file.display()), e)
        })?;
        prepared
            .environment
            .push((format!("{key}_FILE"), file.display().to_string()));
        large.push(name);
    }
    prepared.environment.extend(extra);
    prepared.command = render_with(template, &large);
    Ok(prepared)
}

/// Replaces each `{name}` placeholder with a reference to its environment variable, quoted for the
/// place it stands in: `"${MAHAVISHNU_NAME}"` outside quotes, `${MAHAVISHNU_NAME}` inside double
/// quotes, and closing and reopening single quotes around it inside single quotes. The shell never
/// parses an expanded value again, so a value is always one literal piece of text. Braces that do
/// not name a placeholder (and `${...}` expansions) are left as they are.
pub fn render(template: &str) -> String {
    render_with(template, &[])
}

/// Where in a POSIX shell command a character stands.
#[derive(Clone, Copy, PartialEq)]
enum Quoting {
    Bare,
    Single,
    Double,
}

fn render_with(template: &str, from_files: &[&str]) -> String {
    let reference = |name: &str| {
        let variable = variable(name);
        if from_files.contains(&name) {
            format!("$(cat \"${{{variable}_FILE}}\")")
        } else {
            format!("${{{variable}}}")
        }
    };
    let mut out = String::with_capacity(template.len());
    // Command substitutions (`$(`) start a fresh quoting level, inside double quotes too.
    let mut levels = vec![Quoting::Bare];
    let mut chars = template.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let quoting = *levels.last().unwrap_or(&Quoting::Bare);
        if c == '{' {
            let name = template[at + 1..]
                .find('}')
                .map(|close| &template[at + 1..at + 1 + close])
                .filter(|name| PLACEHOLDERS.contains(name) && !template[..at].ends_with('$'));
            if let Some(name) = name {
                let value = reference(name);
                out.push_str(&match quoting {
                    Quoting::Bare => format!("\"{value}\""),
                    Quoting::Double => value,
                    Quoting::Single => format!("'\"{value}\"'"),
                });
                let end = at + name.len() + 1;
                while chars.next_if(|(next, _)| *next <= end).is_some() {}
                continue;
            }
        }
        out.push(c);
        match (quoting, c) {
            (Quoting::Single, '\'') => {
                levels.pop();
            }
            (Quoting::Single, _) => {}
            (_, '\\') => {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            }
            (Quoting::Bare, '\'') => levels.push(Quoting::Single),
            (Quoting::Bare, '"') => levels.push(Quoting::Double),
            (Quoting::Double, '"') => {
                levels.pop();
            }
            (_, '$') if chars.peek().is_some_and(|(_, next)| *next == '(') => {
                out.push('(');
                chars.next();
                levels.push(Quoting::Bare);
            }
            (Quoting::Bare, ')') if levels.len() > 1 => {
                levels.pop();
            }
            _ => {}
        }
    }
    out
}

/// The placeholder names a command may use.
const PLACEHOLDERS: &[&str] = &[
    "project_name",
    "project_dir",
    "session_id",
    "event",
    "prompt",
    "source",
    "reason",
];

/// Whether the hook's conditions hold; `Err` says which does not.
pub fn conditions_hold(when: &WhenConfig, context: &HookContext) -> Result<(), String> {
    if !when.project_has.is_empty()
        && !when
            .project_has
            .iter()
            .any(|path| context.project_dir.join(path).exists())
    {
        return Err(format!(
            "the project has none of {}",
            when.project_has.join(", ")
        ));
    }
    let one_of = |wanted: &[String], actual: &Option<String>, what: &str| {
        if wanted.is_empty()
            || actual
                .as_ref()
                .is_some_and(|actual| wanted.contains(actual))
        {
            Ok(())
        } else {
            Err(format!(
                "{what} is {} (wanted {})",
                actual.as_deref().unwrap_or("not given"),
                wanted.join(", ")
            ))
        }
    };
    one_of(&when.source, &context.source, "source")?;
    one_of(&when.reason, &context.reason, "reason")
}

/// A short description of a hook for listings.
pub fn describe(hook: &HookConfig) -> String {
    if let Some(name) = &hook.name {
        return name.clone();
    }
    if let Some(command) = &hook.command {
        return format!("command: {command}");
    }
    if let Some(launch) = &hook.launch {
        return format!("launch {} x{}", launch.profile, launch.count.unwrap_or(1));
    }
    if let Some(close) = &hook.close {
        return format!("close {close}");
    }
    "checkpoint".into()
}

/// How a command ended.
#[derive(Clone, Debug)]
pub struct CommandOutcome {
    /// Exit code (128 + signal), absent after a timeout.
    pub exit_code: Option<i32>,
    /// Standard output then standard error, capped.
    pub output: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long it ran.
    pub duration: Duration,
}

/// Runs `command` with `sh -c` in `dir`, killing its whole process group after `timeout`.
pub async fn run_command(
    command: &str,
    dir: &Path,
    environment: &[(String, String)],
    timeout: Duration,
) -> CommandOutcome {
    let started = Instant::now();
    let mut child = tokio::process::Command::new("sh");
    child
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .envs(environment.iter().map(|(name, value)| (name, value)));
    let failed = |error: String| CommandOutcome {
        exit_code: None,
        output: String::new(),
        error: Some(error),
        duration: started.elapsed(),
    };
    let child = match process::spawn_in_group(&mut child) {
        Ok(child) => child,
        Err(error) => return failed(format!("cannot start `sh` in {}: {error}", dir.display())),
    };
    let done = match process::wait_in_group(child, timeout, OUTPUT_LIMIT).await {
        Ok(done) => done,
        Err(error) => return failed(format!("waiting for the command failed: {error}")),
    };
    let Some(status) = done.status else {
        return failed(format!(
            "timed out after {}; raise its `timeout`",
            humantime::format_duration(timeout)
        ));
    };
    let code = process::exit_code(status);
    let mut text = String::from_utf8_lossy(&done.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&done.stderr));
    truncate(&mut text);
    let error = (code != 0).then(|| {
        let detail = if code == 127 {
            ": a program it names was not found"
        } else {
            ""
        };
        format!("exited with code {code}{detail}")
    });
    CommandOutcome {
        exit_code: Some(code),
        output: text,
        error,
        duration: started.elapsed(),
    }
}

fn truncate(text: &mut String) {
    if text.len() > OUTPUT_LIMIT {
        let mut cut = OUTPUT_LIMIT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[output cut]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> HookContext {
        HookContext {
            event: "SessionStart".into(),
            session_id: Some("id'; touch pwned; '".into()),
            project_dir: PathBuf::from("/tmp/a'; touch pwned; '"),
            prompt: Some("$(touch pwned) `touch pwned`\n\"x\"".into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_value_has_its_placeholder() {
        let names: Vec<&str> = context().values().iter().map(|(name, _)| *name).collect();
        assert_eq!(names, PLACEHOLDERS);
    }

    #[test]
    fn placeholders_become_quoted_references_and_other_braces_stay() {
        let rendered = render("echo {project_name} ${HOME} {unknown} ${prompt} {");
        assert_eq!(
            rendered,
            "echo \"${MAHAVISHNU_PROJECT_NAME}\" ${HOME} {unknown} ${prompt} {"
        );
        assert_eq!(
            render("echo \"say {prompt}\" 'and {prompt}' $(echo {prompt})"),
            "echo \"say ${MAHAVISHNU_PROMPT}\" 'and '\"${MAHAVISHNU_PROMPT}\"'' $(echo \"${MAHAVISHNU_PROMPT}\")"
        );
    }

    /// Runs `template` through the real shell with the hostile context, and returns what it printed.
    async fn run_hostile(template: &str, context: &HookContext) -> (String, bool) {
        let dir = tempfile::tempdir().unwrap();
        let mut context = context.clone();
        context.project_dir = dir.path().join("a'; touch pwned; '");
        std::fs::create_dir(&context.project_dir).unwrap();
        let prepared = prepare(template, &context, vec![]).unwrap();
        let outcome = run_command(
            &prepared.command,
            dir.path(),
            &prepared.environment,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            outcome.error, None,
            "{}: {}",
            prepared.command, outcome.output
        );
        let pwned = std::fs::read_dir(dir.path())
            .unwrap()
            .chain(std::fs::read_dir(&context.project_dir).unwrap())
            .any(|entry| entry.unwrap().file_name() == "pwned");
        (outcome.output, pwned)
    }

    #[tokio::test]
    async fn a_value_is_literal_text_in_any_quoting() {
        let context = context();
        let prompt = context.prompt.clone().unwrap();
        for (template, expected) in [
            (
                "printf '%s|%s' {session_id} {prompt}",
                format!("{}|{prompt}", context.session_id.clone().unwrap()),
            ),
            ("printf '%s' \"{prompt}\"", prompt.clone()),
            ("printf '%s' \"<{prompt}>\"", format!("<{prompt}>")),
            ("printf '%s' '<{prompt}>'", format!("<{prompt}>")),
            ("printf '%s' \"$(printf '%s' {prompt})\"", prompt.clone()),
            (
                "printf '%s' \"$(printf '%s' \"{prompt}\")\"",
                prompt.clone(),
            ),
            ("x={prompt}; printf '%s' \"$x\"", prompt.clone()),
        ] {
            let (output, pwned) = run_hostile(template, &context).await;
            assert!(!pwned, "{template} ran code from a value");
            assert_eq!(output, expected, "{template}");
        }
    }

    #[tokio::test]
    async fn a_huge_prompt_or_a_nul_byte_does_not_stop_commands() {
        let mut context = context();
        let huge = format!("{}$(touch pwned)", "x".repeat(200 * 1024));
        context.prompt = Some(huge.clone());
        let (output, pwned) = run_hostile("printf '%s' \"{prompt}\" | wc -c", &context).await;
        assert!(!pwned);
        assert_eq!(output.trim(), huge.len().to_string());
        let (output, _) = run_hostile("echo fine", &context).await;
        assert_eq!(output, "fine\n");
        context.prompt = Some("before\0after".into());
        let (output, _) = run_hostile("printf '%s' {prompt}", &context).await;
        assert_eq!(output, "beforeafter");
    }

    #[tokio::test]
    async fn commands_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let slow = run_command("sleep 10", dir.path(), &[], Duration::from_millis(200)).await;
        assert!(slow.error.unwrap().contains("timed out"));
        assert!(slow.duration < Duration::from_secs(2));
    }
}
