//! Running one hook: conditions, placeholders (always shell-quoted), commands with a time limit.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mahavishnu_core::config::{HookConfig, WhenConfig};
use mahavishnu_core::shell;
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

    /// The same values as `MAHAVISHNU_*` environment variables.
    pub fn environment(&self) -> Vec<(String, String)> {
        self.values()
            .into_iter()
            .map(|(name, value)| (format!("MAHAVISHNU_{}", name.to_ascii_uppercase()), value))
            .collect()
    }
}

/// Substitutes `{name}` placeholders, each value shell-quoted so that it stays one literal word.
/// Braces that do not name a placeholder are left as they are.
pub fn render(template: &str, context: &HookContext) -> String {
    let values = context.values();
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let known = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, value)| (close, value))
        });
        match known {
            Some((close, value)) => {
                out.push_str(&shell::quote(value));
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

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
        .envs(environment.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match child.spawn() {
        Ok(child) => child,
        Err(error) => {
            return CommandOutcome {
                exit_code: None,
                output: String::new(),
                error: Some(format!("cannot start `sh` in {}: {error}", dir.display())),
                duration: started.elapsed(),
            };
        }
    };
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let status = tokio::select! {
        status = child.wait() => Some(status),
        _ = tokio::time::sleep(timeout) => None,
    };
    let Some(status) = status else {
        // Kill the whole group while the child is still ours (not yet reaped), so its pid, which is the
        // group's id, cannot belong to anyone else yet.
        if let Some(group) = child.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(group as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.wait().await;
        return CommandOutcome {
            exit_code: None,
            output: String::new(),
            error: Some(format!(
                "timed out after {}; raise its `timeout`",
                humantime::format_duration(timeout)
            )),
            duration: started.elapsed(),
        };
    };
    let status = match status {
        Ok(status) => status,
        Err(error) => {
            return CommandOutcome {
                exit_code: None,
                output: String::new(),
                error: Some(format!("waiting for the command failed: {error}")),
                duration: started.elapsed(),
            };
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let mut text = String::new();
    for reader in [stdout, stderr].into_iter().flatten() {
        // A background job may keep the pipe open: take what is there without waiting for it.
        if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_millis(100), reader).await {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
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

fn read_all(
    mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        // Keep the first OUTPUT_LIMIT bytes (and one more, to tell that there was more); drain the rest,
        // so a talkative command never blocks on a full pipe.
        let mut kept = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        while let Ok(n) = pipe.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let room = (OUTPUT_LIMIT + 1).saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..n.min(room)]);
        }
        kept
    })
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
    fn placeholders_are_quoted_and_other_braces_kept() {
        let rendered = render(
            "echo {project_name} {prompt} ${HOME} {unknown} {",
            &context(),
        );
        assert!(
            rendered.starts_with("echo 'a'\\''; touch pwned; '\\''' '$(touch pwned)"),
            "{rendered}"
        );
        assert!(rendered.ends_with(" ${HOME} {unknown} {"), "{rendered}");
    }

    #[tokio::test]
    async fn commands_see_the_literal_values_and_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut context = context();
        context.project_dir = dir.path().to_path_buf();
        let command = render("printf '%s|%s' {session_id} {prompt}", &context);
        let outcome = run_command(
            &command,
            dir.path(),
            &context.environment(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            outcome.output,
            format!(
                "{}|{}",
                context.session_id.clone().unwrap(),
                context.prompt.clone().unwrap()
            )
        );
        assert!(!dir.path().join("pwned").exists());
        let slow = run_command("sleep 10", dir.path(), &[], Duration::from_millis(200)).await;
        assert!(slow.error.unwrap().contains("timed out"));
        assert!(slow.duration < Duration::from_secs(2));
    }
}
