//! Quality checks: the ones that fit a repository's kind (Rust: fmt, clippy, test; Python: ruff,
//! pytest; Node: its lint and test scripts; Go: vet, test), or the `[checks]` its `.mahavishnu.toml`
//! names once the user trusts that file, run one after another; the scorecard says how each went.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mahavishnu_core::config::CheckCommand;
use mahavishnu_core::store::Store;
use mahavishnu_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::catalog::{Kind, Repo};
use crate::store::Outcome;
use crate::sweep::{Ran, run};

/// One check of a repository: a name and the command that runs it, or why it cannot run here.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Its name (`fmt`, `test`, or the name in `[checks]`).
    pub name: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Why it is skipped (the tool is not installed, there is no such script).
    pub skip: Option<String>,
    /// An exit code that means "nothing to check" rather than a failure (pytest's 5: no tests).
    pub nothing_to_check: Option<i32>,
}

impl Check {
    fn new(name: &str, command: &[&str]) -> Check {
        Check {
            name: name.into(),
            command: command.iter().map(|w| w.to_string()).collect(),
            skip: None,
            nothing_to_check: None,
        }
    }

    fn skipped(name: &str, why: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            command: Vec::new(),
            skip: Some(why.into()),
            nothing_to_check: None,
        }
    }

    /// The check, or skipped when `program` is not on PATH.
    fn needing(name: &str, program: &str, install: &str, command: &[&str]) -> Check {
        if mahavishnu_core::paths::find_program(program).is_some() {
            Check::new(name, command)
        } else {
            Check::skipped(name, format!("`{program}` is not installed ({install})"))
        }
    }
}

/// How one check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Exit code 0.
    Passed,
    /// Another exit code.
    Failed,
    /// Stopped at the time limit.
    TimedOut,
    /// Not run: its tool is missing, or there was nothing to check.
    Skipped,
    /// Could not be started.
    Error,
}

/// One line of a scorecard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// What ran, as a command line (empty when skipped).
    pub command: String,
    /// How it went.
    pub status: CheckStatus,
    /// Its exit code, when it ended by itself.
    pub exit_code: Option<i32>,
    /// How long it took.
    pub duration_ms: u64,
    /// Its last line of output, or why it was skipped.
    pub last_line: String,
    /// The file with everything it printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
}

/// The checks of one repository and how each went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scorecard {
    /// The repository's name.
    pub repo: String,
    /// Where it is.
    pub path: PathBuf,
    /// What it is built with.
    pub kind: Kind,
    /// Where its checks came from: `rust` (the kind's), or `.mahavishnu.toml`.
    pub source: String,
    /// Each check, in order.
    pub checks: Vec<CheckResult>,
    /// How many passed.
    pub passed: usize,
    /// How many ran (passed, failed or timed out; not skipped).
    pub ran: usize,
    /// Anything the reader should know (an untrusted `[checks]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Scorecard {
    /// `2/3 passed (clippy failed)`, or why nothing ran.
    pub fn line(&self) -> String {
        if self.ran == 0 {
            return match self.checks.first() {
                Some(first) => format!("no check ran ({}: {})", first.name, first.last_line),
                None => "no checks for this kind of repository".into(),
            };
        }
        let bad: Vec<String> = self
            .checks
            .iter()
            .filter(|c| {
                matches!(
                    c.status,
                    CheckStatus::Failed | CheckStatus::TimedOut | CheckStatus::Error
                )
            })
            .map(|c| {
                let how = match c.status {
                    CheckStatus::TimedOut => "timed out",
                    CheckStatus::Error => "could not run",
                    _ => "failed",
                };
                format!("{} {how}", c.name)
            })
            .collect();
        if bad.is_empty() {
            format!("{}/{} passed", self.passed, self.ran)
        } else {
            format!("{}/{} passed ({})", self.passed, self.ran, bad.join(", "))
        }
    }

    /// The sweep outcome: ok when every check that ran passed.
    pub fn outcome(&self) -> Outcome {
        if self.checks.iter().any(|c| c.status == CheckStatus::Error) && self.passed == 0 {
            Outcome::Error
        } else if self.passed == self.ran {
            Outcome::Ok
        } else if self
            .checks
            .iter()
            .any(|c| c.status == CheckStatus::TimedOut)
        {
            Outcome::TimedOut
        } else {
            Outcome::Failed
        }
    }
}

/// A check that got better or worse since the last scorecard of its repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The repository.
    pub repo: String,
    /// The check.
    pub check: String,
    /// How it went last time (`None`: it did not exist).
    pub before: Option<CheckStatus>,
    /// How it went now (`None`: it is gone).
    pub after: Option<CheckStatus>,
    /// `better` or `worse`.
    pub direction: String,
}

/// The checks of the repository at `dir` of kind `kind`, with where they came from and a note.
pub fn checks_for(
    store: &Store,
    dir: &Path,
    kind: Kind,
) -> Result<(Vec<Check>, String, Option<String>)> {
    let (project, note) = project_checks(store, dir)?;
    if let Some(checks) = project {
        return Ok((checks, mahavishnu_core::config::PROJECT_FILE.into(), None));
    }
    Ok((kind_checks(dir, kind), kind.name().into(), note))
}

/// The `[checks]` of the repository's `.mahavishnu.toml`: `Some` when there are any and the user
/// trusts the file; a note when there are some the user has not trusted yet.
fn project_checks(store: &Store, dir: &Path) -> Result<(Option<Vec<Check>>, Option<String>)> {
    let file = dir.join(mahavishnu_core::config::PROJECT_FILE);
    let Ok(bytes) = std::fs::read(&file) else {
        return Ok((None, None));
    };
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| Error::Config(format!("{} is not UTF-8 text", file.display())))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: {}", file.display(), e.message())))?;
    let Some(checks) = table.get("checks") else {
        return Ok((None, None));
    };
    let key = std::fs::canonicalize(&file).unwrap_or(file.clone());
    let trusted = store
        .trusted(&key)?
        .is_some_and(|record| record.hash == mahavishnu_core::digest::sha256_hex(&bytes));
    if !trusted {
        return Ok((
            None,
            Some(format!(
                "the [checks] of {} are not trusted yet, so the usual checks ran; read the file, then \
                 run `mahavishnu trust` in {}",
                file.display(),
                dir.display()
            )),
        ));
    }
    let checks: BTreeMap<String, CheckCommand> = checks.clone().try_into().map_err(|e: toml::de::Error| {
        Error::Config(format!(
            "{}: [checks]: {}; write each check as `name = \"command line\"` or `name = [\"program\", \"arg\"]`",
            file.display(),
            e.message()
        ))
    })?;
    let checks = checks
        .into_iter()
        .map(|(name, command)| Check {
            name,
            command: match command {
                CheckCommand::Line(line) => vec!["/bin/sh".into(), "-c".into(), line],
                CheckCommand::Words(words) => words,
            },
            skip: None,
            nothing_to_check: None,
        })
        .collect();
    Ok((Some(checks), None))
}

/// The usual checks of a kind of repository.
pub fn kind_checks(dir: &Path, kind: Kind) -> Vec<Check> {
    match kind {
        Kind::Rust => vec![
            Check::needing(
                "fmt",
                "cargo",
                "install Rust",
                &["cargo", "fmt", "--all", "--", "--check"],
            ),
            Check::needing(
                "clippy",
                "cargo",
                "install Rust",
                &["cargo", "clippy", "--all-targets", "--", "-D", "warnings"],
            ),
            Check::needing("test", "cargo", "install Rust", &["cargo", "test"]),
        ],
        Kind::Python => {
            let ruff = Check::needing("ruff", "ruff", "pip install ruff", &["ruff", "check", "."]);
            let mut pytest = if mahavishnu_core::paths::find_program("pytest").is_some() {
                Check::new("pytest", &["pytest", "-q"])
            } else if python_has_pytest() {
                Check::new("pytest", &["python3", "-m", "pytest", "-q"])
            } else {
                Check::skipped("pytest", "pytest is not installed (pip install pytest)")
            };
            pytest.nothing_to_check = Some(5);
            vec![ruff, pytest]
        }
        Kind::Node => {
            let scripts = node_scripts(dir);
            let script = |name: &str| match scripts.get(name) {
                Some(body) if !(name == "test" && body.contains("no test specified")) => {
                    Check::needing(
                        name,
                        "npm",
                        "install Node.js",
                        &["npm", "run", "--silent", name],
                    )
                }
                _ => Check::skipped(name, format!("package.json has no `{name}` script")),
            };
            vec![script("lint"), script("test")]
        }
        Kind::Go => vec![
            Check::needing("vet", "go", "install Go", &["go", "vet", "./..."]),
            Check::needing("test", "go", "install Go", &["go", "test", "./..."]),
        ],
        Kind::Other => Vec::new(),
    }
}

fn python_has_pytest() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import pytest"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn node_scripts(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read(dir.join("package.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|package| {
            package["scripts"].as_object().map(|scripts| {
                scripts
                    .iter()
                    .filter_map(|(name, body)| Some((name.clone(), body.as_str()?.to_string())))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Runs `checks` in `repo`, one after another, each for at most `timeout`; `output` names the file
/// of each check's output.
pub async fn score(
    repo: &Repo,
    checks: Vec<Check>,
    source: String,
    note: Option<String>,
    timeout: Duration,
    output: impl Fn(&str) -> Result<PathBuf>,
) -> Scorecard {
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        if let Some(why) = check.skip {
            results.push(CheckResult {
                name: check.name,
                command: String::new(),
                status: CheckStatus::Skipped,
                exit_code: None,
                duration_ms: 0,
                last_line: why,
                output: None,
            });
            continue;
        }
        let file = match output(&check.name) {
            Ok(file) => file,
            Err(e) => {
                results.push(CheckResult {
                    name: check.name,
                    command: check.command.join(" "),
                    status: CheckStatus::Error,
                    exit_code: None,
                    duration_ms: 0,
                    last_line: e.to_string(),
                    output: None,
                });
                continue;
            }
        };
        let Ran {
            status,
            exit_code,
            duration,
            last_line,
        } = run(&check.command, &repo.path, timeout, &file).await;
        let status = match status {
            Outcome::Ok => CheckStatus::Passed,
            Outcome::Failed if exit_code.is_some() && exit_code == check.nothing_to_check => {
                CheckStatus::Skipped
            }
            Outcome::Failed => CheckStatus::Failed,
            Outcome::TimedOut => CheckStatus::TimedOut,
            Outcome::Missing | Outcome::Error => CheckStatus::Error,
        };
        results.push(CheckResult {
            name: check.name,
            command: check.command.join(" "),
            status,
            exit_code,
            duration_ms: duration.as_millis() as u64,
            last_line,
            output: Some(file),
        });
    }
    let passed = results
        .iter()
        .filter(|c| c.status == CheckStatus::Passed)
        .count();
    let ran = results
        .iter()
        .filter(|c| {
            matches!(
                c.status,
                CheckStatus::Passed | CheckStatus::Failed | CheckStatus::TimedOut
            )
        })
        .count();
    Scorecard {
        repo: repo.name.clone(),
        path: repo.path.clone(),
        kind: repo.kind,
        source,
        checks: results,
        passed,
        ran,
        note,
    }
}

/// What got better or worse from `before` to `after` (both of one repository).
pub fn changes(before: &Scorecard, after: &Scorecard) -> Vec<Change> {
    let rank = |status: Option<CheckStatus>| match status {
        Some(CheckStatus::Passed) => 2,
        Some(CheckStatus::Skipped) | None => 1,
        Some(_) => 0,
    };
    let status_in = |card: &Scorecard, name: &str| {
        card.checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.status)
    };
    let mut names: Vec<&str> = before.checks.iter().map(|c| c.name.as_str()).collect();
    for check in &after.checks {
        if !names.contains(&check.name.as_str()) {
            names.push(&check.name);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let (was, now) = (status_in(before, name), status_in(after, name));
            let direction = match rank(now).cmp(&rank(was)) {
                std::cmp::Ordering::Greater => "better",
                std::cmp::Ordering::Less => "worse",
                std::cmp::Ordering::Equal => return None,
            };
            Some(Change {
                repo: after.repo.clone(),
                check: name.to_string(),
                before: was,
                after: now,
                direction: direction.into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(checks: &[(&str, CheckStatus)]) -> Scorecard {
        let checks: Vec<CheckResult> = checks
            .iter()
            .map(|(name, status)| CheckResult {
                name: name.to_string(),
                command: String::new(),
                status: *status,
                exit_code: None,
                duration_ms: 0,
                last_line: String::new(),
                output: None,
            })
            .collect();
        let passed = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Passed)
            .count();
        let ran = checks
            .iter()
            .filter(|c| c.status != CheckStatus::Skipped)
            .count();
        Scorecard {
            repo: "app".into(),
            path: "/app".into(),
            kind: Kind::Rust,
            source: "rust".into(),
            checks,
            passed,
            ran,
            note: None,
        }
    }

    #[test]
    fn changes_say_which_checks_got_better_or_worse() {
        use CheckStatus::*;
        let before = card(&[("fmt", Passed), ("clippy", Failed), ("test", Passed)]);
        let after = card(&[("fmt", Passed), ("clippy", Passed), ("test", Failed)]);
        let found: Vec<(String, String)> = changes(&before, &after)
            .into_iter()
            .map(|c| (c.check, c.direction))
            .collect();
        assert_eq!(
            found,
            [
                ("clippy".to_string(), "better".to_string()),
                ("test".into(), "worse".into())
            ]
        );
        assert!(changes(&after, &after).is_empty());
        assert_eq!(after.line(), "2/3 passed (test failed)");
        assert_eq!(after.outcome(), Outcome::Failed);
        assert_eq!(before.outcome(), Outcome::Failed);
        assert_eq!(card(&[("fmt", Passed)]).outcome(), Outcome::Ok);
    }

    #[test]
    fn node_scripts_decide_the_node_checks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("package.json"),
            r#"{"scripts": {"lint": "node lint.js", "test": "echo \"Error: no test specified\" && exit 1"}}"#,
        )
        .unwrap();
        let checks = kind_checks(dir.path(), Kind::Node);
        assert_eq!(checks[0].command, ["npm", "run", "--silent", "lint"]);
        assert_eq!(
            checks[1].skip.as_deref(),
            Some("package.json has no `test` script")
        );
    }
}
