//! `mahavishnu init claude|qwen`: merges Mahavishnu's hook entries into the CLI's `settings.json`,
//! idempotently, keeping everything else, with a backup; `--remove` takes exactly those entries out.

use std::path::{Path, PathBuf};

use mahavishnu_core::{Error, Result};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The events Mahavishnu asks the CLIs to call it on.
pub const EVENTS: [&str; 5] = [
    "SessionStart",
    "UserPromptSubmit",
    "Stop",
    "PreCompact",
    "SessionEnd",
];

/// The coding CLI whose settings are edited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// Claude Code: `.claude/settings.json`, timeouts in seconds.
    Claude,
    /// Qwen Code: `.qwen/settings.json`, timeouts in milliseconds.
    Qwen,
}

/// Which settings file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The project's file.
    Project,
    /// The user's file in the home directory.
    User,
}

/// What `init` did (or would do).
#[derive(Clone, Debug, Serialize)]
pub struct InitOutcome {
    /// The settings file.
    pub path: PathBuf,
    /// Whether the file changed (or would).
    pub changed: bool,
    /// Whether it was written (false on a dry run or without changes).
    pub written: bool,
    /// The copy of the previous file, when one existed and was changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// A line diff of the change.
    pub diff: String,
    /// Why the file names Mahavishnu by its absolute path rather than as `mahavishnu`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How a client's settings name Mahavishnu.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramName {
    /// `mahavishnu`, or the absolute path of this program.
    pub command: String,
    /// Why it is the absolute path, when it is.
    pub note: Option<String>,
}

/// `mahavishnu` when the first `mahavishnu` on `search_path` is `exe` itself, so that settings files
/// that teams commit carry no path of one machine; else the absolute path of `exe`, and why.
pub fn program_name(exe: &Path, search_path: Option<&std::ffi::OsStr>) -> ProgramName {
    let found = search_path
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(NAME))
        .find(|candidate| is_executable(candidate));
    let absolute = exe.to_string_lossy().into_owned();
    match found {
        Some(found) if same_file(&found, exe) => ProgramName {
            command: NAME.into(),
            note: None,
        },
        Some(found) => ProgramName {
            note: Some(format!(
                "the settings name {absolute}, not `{NAME}`: the `{NAME}` on PATH is another program ({}); \
                 put this one first on PATH and run this again to write `{NAME}` instead",
                found.display()
            )),
            command: absolute,
        },
        None => ProgramName {
            note: Some(format!(
                "the settings name {absolute}, not `{NAME}`: no `{NAME}` is on PATH; put its directory on \
                 PATH and run this again to write `{NAME}` instead"
            )),
            command: absolute,
        },
    }
}

/// The program's name on `PATH`.
const NAME: &str = "mahavishnu";

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The same file: one canonical path, or one inode (a hard link).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(a), Ok(b)) = (a.canonicalize(), b.canonicalize())
        && a == b
    {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The settings file of `client` in `scope`.
pub fn settings_path(client: Client, scope: Scope, project: &Path) -> Result<PathBuf> {
    let dir = match client {
        Client::Claude => ".claude",
        Client::Qwen => ".qwen",
    };
    let base = match scope {
        Scope::Project => project.to_path_buf(),
        Scope::User => std::env::var_os("HOME")
            .map(PathBuf::from)
            .ok_or_else(|| Error::Invalid("HOME is not set; use --scope project".into()))?,
    };
    Ok(base.join(dir).join("settings.json"))
}

/// Whether a hook command is one of Mahavishnu's.
fn is_ours(hook: &Value) -> bool {
    hook.get("command")
        .and_then(Value::as_str)
        .is_some_and(|command| {
            let command = command.trim_end();
            command.ends_with("mahavishnu hook") || command.ends_with("mahavishnu' hook")
        })
}

/// Adds (or with `remove`, takes out) Mahavishnu's entries; `command` is how the CLI runs Mahavishnu.
pub fn init(
    client: Client,
    path: &Path,
    command: &str,
    dry_run: bool,
    remove: bool,
) -> Result<InitOutcome> {
    edit_json_file(path, dry_run, |root| {
        let had_hooks = root.contains_key("hooks");
        merge_hooks(client, root, path, command, remove)?;
        if !had_hooks
            && root
                .get("hooks")
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
        {
            root.remove("hooks");
        }
        Ok(())
    })
}

fn merge_hooks(
    client: Client,
    root: &mut Map<String, Value>,
    path: &Path,
    command: &str,
    remove: bool,
) -> Result<()> {
    let hook_command = format!("{command} hook");
    let timeout = match client {
        Client::Claude => json!(30),
        Client::Qwen => json!(30_000),
    };
    let ours = json!({ "type": "command", "command": hook_command, "timeout": timeout });
    let hooks = root
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(hooks) = hooks.as_object_mut() else {
        return Err(Error::Invalid(format!(
            "`hooks` in {} is not an object; nothing was changed",
            path.display()
        )));
    };
    for (event, groups) in hooks.iter_mut() {
        let wanted = !remove && EVENTS.contains(&event.as_str());
        let Some(groups) = groups.as_array_mut() else {
            continue;
        };
        let exact = |group: &Value| {
            group
                .get("hooks")
                .and_then(Value::as_array)
                .is_some_and(|list| list.len() == 1 && list[0] == ours)
        };
        if wanted
            && groups.iter().filter(|group| exact(group)).count() == 1
            && groups
                .iter()
                .all(|group| exact(group) || !contains_ours(group))
        {
            continue; // already exactly as wanted
        }
        for group in groups.iter_mut() {
            if let Some(list) = group.get_mut("hooks").and_then(Value::as_array_mut) {
                list.retain(|hook| !is_ours(hook));
            }
        }
        groups.retain(|group| {
            group
                .get("hooks")
                .and_then(Value::as_array)
                .is_none_or(|list| !list.is_empty())
        });
    }
    if !remove {
        for event in EVENTS {
            let groups = hooks.entry(event).or_insert_with(|| Value::Array(vec![]));
            if let Some(groups) = groups.as_array_mut()
                && !groups.iter().any(contains_ours)
            {
                groups.push(json!({ "hooks": [ours.clone()] }));
            }
        }
    }
    hooks.retain(|_, groups| groups.as_array().is_none_or(|groups| !groups.is_empty()));
    Ok(())
}

/// Edits the JSON object in `path` (an absent or empty file is `{}`) with `edit`, and writes it back
/// atomically with a backup of the old file when it changed; a dry run only reports the diff. A file
/// that is not a JSON object is left untouched.
pub fn edit_json_file(
    path: &Path,
    dry_run: bool,
    edit: impl FnOnce(&mut Map<String, Value>) -> Result<()>,
) -> Result<InitOutcome> {
    let before = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(Error::io(format!("cannot read {}", path.display()), error)),
    };
    let mut settings: Value = match before.as_deref().map(str::trim) {
        None | Some("") => json!({}),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            Error::Invalid(format!(
                "{} is not valid JSON ({e}); fix it by hand first, nothing was changed",
                path.display()
            ))
        })?,
    };
    let original = settings.clone();
    let Some(root) = settings.as_object_mut() else {
        return Err(Error::Invalid(format!(
            "{} does not hold a JSON object; nothing was changed",
            path.display()
        )));
    };
    edit(root)?;
    let changed = settings != original;
    let after =
        serde_json::to_string_pretty(&settings).map_err(|e| Error::Invalid(e.to_string()))? + "\n";
    let diff = line_diff(
        before.as_deref().unwrap_or(""),
        if changed {
            &after
        } else {
            before.as_deref().unwrap_or("")
        },
    );
    let mut outcome = InitOutcome {
        path: path.to_path_buf(),
        changed,
        written: false,
        backup: None,
        diff,
        note: None,
    };
    if !changed || dry_run {
        return Ok(outcome);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
    }
    if let Some(before) = &before {
        let backup = path.with_extension("json.mahavishnu-backup");
        std::fs::write(&backup, before)
            .map_err(|e| Error::io(format!("cannot write the backup {}", backup.display()), e))?;
        outcome.backup = Some(backup);
    }
    let temporary = path.with_extension("json.mahavishnu-tmp");
    std::fs::write(&temporary, &after)
        .map_err(|e| Error::io(format!("cannot write {}", temporary.display()), e))?;
    std::fs::rename(&temporary, path)
        .map_err(|e| Error::io(format!("cannot replace {}", path.display()), e))?;
    outcome.written = true;
    Ok(outcome)
}

/// How a client reaches Mahavishnu's MCP server.
#[derive(Clone, Debug)]
pub enum McpTransport {
    /// Runs `COMMAND mcp` (stdio); `command` is how the client runs Mahavishnu.
    Stdio {
        /// The mahavishnu executable.
        command: String,
    },
    /// Connects to `mahavishnu serve` at this URL (ending in `/mcp`).
    Http {
        /// The server's MCP endpoint.
        url: String,
        /// Send `Authorization: Bearer ${MAHAVISHNU_TOKEN}`, expanded by the client from its
        /// environment, so the token itself is never written into the file.
        token_from_env: bool,
    },
}

/// The name Mahavishnu's server has in a client's configuration.
pub const MCP_SERVER_NAME: &str = "mahavishnu";

/// The file a client keeps its MCP servers in: Claude Code's `.mcp.json` (project) or `~/.claude.json`
/// (user); Qwen Code's `settings.json`.
pub fn mcp_config_path(client: Client, scope: Scope, project: &Path) -> Result<PathBuf> {
    match (client, scope) {
        (Client::Claude, Scope::Project) => Ok(project.join(".mcp.json")),
        (Client::Claude, Scope::User) => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".claude.json"))
            .ok_or_else(|| Error::Invalid("HOME is not set; use --scope project".into())),
        (Client::Qwen, scope) => settings_path(Client::Qwen, scope, project),
    }
}

/// Registers (or with `remove`, unregisters) Mahavishnu's MCP server under `mcpServers`.
pub fn install_mcp(
    client: Client,
    path: &Path,
    transport: &McpTransport,
    dry_run: bool,
    remove: bool,
) -> Result<InitOutcome> {
    edit_json_file(path, dry_run, |root| {
        let had_servers = root.contains_key("mcpServers");
        let servers = root
            .entry("mcpServers")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(servers) = servers.as_object_mut() else {
            return Err(Error::Invalid(format!(
                "`mcpServers` in {} is not an object; nothing was changed",
                path.display()
            )));
        };
        if remove {
            servers.remove(MCP_SERVER_NAME);
        } else {
            servers.insert(MCP_SERVER_NAME.into(), mcp_entry(client, transport));
        }
        if !had_servers && servers.is_empty() {
            root.remove("mcpServers");
        }
        Ok(())
    })
}

fn mcp_entry(client: Client, transport: &McpTransport) -> Value {
    match transport {
        McpTransport::Stdio { command } => match client {
            Client::Claude => json!({ "type": "stdio", "command": command, "args": ["mcp"] }),
            Client::Qwen => json!({ "command": command, "args": ["mcp"] }),
        },
        McpTransport::Http {
            url,
            token_from_env,
        } => {
            let mut entry = match client {
                Client::Claude => json!({ "type": "http", "url": url }),
                Client::Qwen => json!({ "httpUrl": url }),
            };
            if *token_from_env {
                entry["headers"] = json!({ "Authorization": "Bearer ${MAHAVISHNU_TOKEN}" });
            }
            entry
        }
    }
}

fn contains_ours(group: &Value) -> bool {
    group
        .get("hooks")
        .and_then(Value::as_array)
        .is_some_and(|list| list.iter().any(is_ours))
}

/// A small line diff (`-` removed, `+` added, two spaces unchanged) by longest common subsequence.
fn line_diff(before: &str, after: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_name_is_mahavishnu_only_when_path_finds_this_very_file() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let dir = root.path().join(name);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        };
        let exe = dir("build").join("mahavishnu");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let linked = dir("linked");
        std::fs::hard_link(&exe, linked.join("mahavishnu")).unwrap();
        // Not executable: the shell would pass it by, so the lookup does too.
        let plain = dir("plain");
        std::fs::write(plain.join("mahavishnu"), "data").unwrap();
        let empty = dir("empty");
        let search = |dirs: &[&Path]| std::env::join_paths(dirs).unwrap();

        let found = program_name(&exe, Some(&search(&[&plain, &linked])));
        assert_eq!(found.command, "mahavishnu", "a hard link is this very file");
        assert_eq!(found.note, None);
        let missing = program_name(&exe, Some(&search(&[&empty])));
        assert_eq!(missing.command, exe.to_str().unwrap());
        assert!(missing.note.unwrap().contains("no `mahavishnu` is on PATH"));
        assert_eq!(program_name(&exe, None).command, exe.to_str().unwrap());
    }

    #[test]
    fn init_is_idempotent_keeps_other_settings_and_removes_exactly_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".claude/settings.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let original = r#"{
  "model": "sonnet",
  "hooks": {
    "Stop": [ { "hooks": [ { "type": "command", "command": "notify-send done" } ] } ]
  },
  "permissions": { "allow": ["Bash(ls)"] }
}
"#;
        std::fs::write(&path, original).unwrap();
        let first = init(Client::Claude, &path, "/usr/bin/mahavishnu", false, false).unwrap();
        assert!(first.changed && first.written && first.backup.is_some());
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["model"], "sonnet");
        assert_eq!(
            written["hooks"]["Stop"].as_array().unwrap().len(),
            2,
            "the user's Stop hook stays"
        );
        for event in EVENTS {
            assert!(
                written["hooks"][event]
                    .to_string()
                    .contains("/usr/bin/mahavishnu hook"),
                "{event}"
            );
        }
        let keys: Vec<&String> = written.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["model", "hooks", "permissions"], "key order is kept");

        let again = init(Client::Claude, &path, "/usr/bin/mahavishnu", false, false).unwrap();
        assert!(
            !again.changed && !again.written,
            "a second run changes nothing"
        );

        let dry = init(Client::Claude, &path, "/usr/bin/mahavishnu", true, true).unwrap();
        assert!(
            dry.changed && !dry.written && dry.diff.contains("- "),
            "{}",
            dry.diff
        );
        let removed = init(Client::Claude, &path, "/usr/bin/mahavishnu", false, true).unwrap();
        assert!(removed.written);
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<Value>(original).unwrap(),
            "remove restores the original settings"
        );
    }

    #[test]
    fn broken_settings_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(&path, "{ broken").unwrap();
        let error = init(Client::Qwen, &path, "mahavishnu", false, false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("not valid JSON") && error.contains("nothing was changed"),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{ broken");
    }
}
