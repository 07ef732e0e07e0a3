//! The tables workflows own: every sweep with one result per repository, the last scorecard of each
//! repository (what `--changed` compares with), and every run of a workflow.

use std::path::PathBuf;

use mahavishnu_core::store::{Migrations, Store};
use mahavishnu_core::{Result, Timestamp};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The tables; open the store with these (`Store::open_with`) to use them.
pub const MIGRATIONS: Migrations = Migrations {
    owner: "workflows",
    steps: &["CREATE TABLE sweeps (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            spec TEXT NOT NULL,
            started_at INTEGER NOT NULL,
            finished_at INTEGER,
            state TEXT NOT NULL,
            workflow TEXT,
            pid INTEGER NOT NULL
        );
        CREATE TABLE sweep_results (
            sweep_id INTEGER NOT NULL,
            repo TEXT NOT NULL,
            path TEXT NOT NULL,
            status TEXT NOT NULL,
            exit_code INTEGER,
            duration_ms INTEGER NOT NULL,
            last_line TEXT NOT NULL,
            output TEXT,
            detail TEXT NOT NULL,
            PRIMARY KEY (sweep_id, repo)
        );
        CREATE TABLE last_checks (
            repo TEXT PRIMARY KEY,
            at INTEGER NOT NULL,
            card TEXT NOT NULL
        );
        CREATE TABLE workflow_runs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            workflow TEXT NOT NULL,
            cause TEXT NOT NULL,
            started_at INTEGER NOT NULL,
            finished_at INTEGER,
            state TEXT NOT NULL,
            summary TEXT NOT NULL,
            sweep_id INTEGER
        );
        CREATE INDEX workflow_runs_by_name ON workflow_runs(workflow, seq);"],
};

/// How one repository's part of a sweep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It ran and succeeded (exit code 0, every check passed).
    Ok,
    /// It ran and failed (another exit code, a check failed).
    Failed,
    /// It ran out of time and was stopped.
    TimedOut,
    /// The repository is not there any more (or no longer a git repository).
    Missing,
    /// It could not be run at all (the program was not found, a session did not start).
    Error,
}

impl Outcome {
    /// Its name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Missing => "missing",
            Outcome::Error => "error",
        }
    }

    fn parse(text: &str) -> Outcome {
        match text {
            "ok" => Outcome::Ok,
            "failed" => Outcome::Failed,
            "timed_out" => Outcome::TimedOut,
            "missing" => Outcome::Missing,
            _ => Outcome::Error,
        }
    }
}

/// One repository's result in a sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepoResult {
    /// The repository's name in the catalog.
    pub repo: String,
    /// Where it is.
    pub path: PathBuf,
    /// How it ended.
    pub status: Outcome,
    /// The command's exit code, when it ended by itself.
    pub exit_code: Option<i32>,
    /// How long it took.
    pub duration_ms: u64,
    /// The last line it printed (or why it did not run).
    pub last_line: String,
    /// The file that keeps everything it printed.
    pub output: Option<PathBuf>,
    /// What else the kind of sweep found: an agent's session and diff, a repository's scorecard.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

/// How many repositories ended each way.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// All of them.
    pub total: usize,
    /// Succeeded.
    pub ok: usize,
    /// Failed.
    pub failed: usize,
    /// Ran out of time.
    pub timed_out: usize,
    /// Not there any more.
    pub missing: usize,
    /// Could not be run.
    pub error: usize,
}

impl Summary {
    /// The counts of `results`.
    pub fn of(results: &[RepoResult]) -> Summary {
        let mut summary = Summary::default();
        for result in results {
            summary.count(result.status, 1);
        }
        summary
    }

    /// Counts `count` more repositories that ended as `outcome`.
    pub fn count(&mut self, outcome: Outcome, count: usize) {
        self.total += count;
        *match outcome {
            Outcome::Ok => &mut self.ok,
            Outcome::Failed => &mut self.failed,
            Outcome::TimedOut => &mut self.timed_out,
            Outcome::Missing => &mut self.missing,
            Outcome::Error => &mut self.error,
        } += count;
    }

    /// One line: `28 ok, 1 failed, 1 timed out of 30`.
    pub fn line(&self) -> String {
        let mut parts = vec![format!("{} ok", self.ok)];
        for (count, what) in [
            (self.failed, "failed"),
            (self.timed_out, "timed out"),
            (self.missing, "missing"),
            (self.error, "could not run"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        format!("{} of {}", parts.join(", "), self.total)
    }
}

/// A sweep, as `sweep show` returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    /// Its number.
    pub id: i64,
    /// `command`, `agent` or `check`.
    pub kind: String,
    /// What it ran: the command, or the agent's profile and prompt, or the checks.
    pub spec: Value,
    /// What it ran, in a line: the command line, `PROFILE: PROMPT`, or `checks`.
    #[serde(default)]
    pub what: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended, if it has.
    pub finished_at: Option<Timestamp>,
    /// `running`, `done`, or `interrupted` (its process ended before it did).
    pub state: String,
    /// The workflow that ran it, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// How its repositories ended.
    pub summary: Summary,
    /// One result per repository, by name.
    pub results: Vec<RepoResult>,
}

/// A run of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// Its number.
    pub seq: i64,
    /// The workflow.
    pub workflow: String,
    /// What started it: `schedule`, `event SessionEnd`, `topic repo-pushed`, `by hand`.
    pub cause: String,
    /// When.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// `running`, `ok`, `failed`.
    pub state: String,
    /// What it did, in a line.
    pub summary: String,
    /// The sweep it ran, if any.
    pub sweep: Option<i64>,
}

/// Starts a sweep's record; returns its id.
pub fn begin_sweep(store: &Store, kind: &str, spec: &Value, workflow: Option<&str>) -> Result<i64> {
    store.with_connection(|connection| {
        connection.execute(
            "INSERT INTO sweeps (kind, spec, started_at, state, workflow, pid)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
            params![
                kind,
                spec.to_string(),
                Timestamp::now().0,
                workflow,
                std::process::id()
            ],
        )?;
        Ok(connection.last_insert_rowid())
    })
}

/// Records one repository's result.
pub fn record_result(store: &Store, sweep: i64, result: &RepoResult) -> Result<()> {
    store.with_connection(|connection| {
        connection.execute(
            "INSERT OR REPLACE INTO sweep_results
               (sweep_id, repo, path, status, exit_code, duration_ms, last_line, output, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                sweep,
                result.repo,
                result.path.to_string_lossy(),
                result.status.name(),
                result.exit_code,
                result.duration_ms as i64,
                result.last_line,
                result
                    .output
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
                result.detail.to_string(),
            ],
        )?;
        Ok(())
    })
}

/// Marks a sweep done.
pub fn finish_sweep(store: &Store, sweep: i64) -> Result<()> {
    store.with_connection(|connection| {
        connection.execute(
            "UPDATE sweeps SET finished_at = ?2, state = 'done' WHERE id = ?1",
            params![sweep, Timestamp::now().0],
        )?;
        Ok(())
    })
}

/// A sweep with its results; `None` when there is no such sweep.
pub fn sweep(store: &Store, id: i64) -> Result<Option<Sweep>> {
    let Some(mut sweep) = store.with_connection(|connection| {
        connection
            .query_row(
                "SELECT id, kind, spec, started_at, finished_at, state, workflow, pid FROM sweeps WHERE id = ?1",
                [id],
                sweep_row,
            )
            .optional()
    })?
    else {
        return Ok(None);
    };
    sweep.results = store.with_connection(|connection| {
        let mut statement = connection.prepare(
            "SELECT repo, path, status, exit_code, duration_ms, last_line, output, detail
             FROM sweep_results WHERE sweep_id = ?1 ORDER BY repo",
        )?;
        let rows = statement.query_map([id], |row| {
            Ok(RepoResult {
                repo: row.get(0)?,
                path: PathBuf::from(row.get::<_, String>(1)?),
                status: Outcome::parse(&row.get::<_, String>(2)?),
                exit_code: row.get(3)?,
                duration_ms: row.get::<_, i64>(4)?.max(0) as u64,
                last_line: row.get(5)?,
                output: row.get::<_, Option<String>>(6)?.map(PathBuf::from),
                detail: serde_json::from_str(&row.get::<_, String>(7)?).unwrap_or(Value::Null),
            })
        })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    })?;
    sweep.summary = Summary::of(&sweep.results);
    Ok(Some(sweep))
}

/// A sweep's row; one left `running` by a process that is gone reads as `interrupted`.
fn sweep_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Sweep> {
    let state: String = row.get(5)?;
    let pid: i64 = row.get(7)?;
    let gone = || {
        // SAFETY: kill with signal 0 only asks whether the process exists.
        pid <= 0
            || (unsafe { libc::kill(pid as i32, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH))
    };
    let kind: String = row.get(1)?;
    let spec: Value = serde_json::from_str(&row.get::<_, String>(2)?).unwrap_or(Value::Null);
    let text = |value: &Value| {
        value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string)
    };
    let what = match kind.as_str() {
        "command" => spec["command"]
            .as_array()
            .map(|words| words.iter().map(text).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        "agent" => format!("{}: {}", text(&spec["profile"]), text(&spec["prompt"])),
        _ => "checks".into(),
    };
    Ok(Sweep {
        id: row.get(0)?,
        kind,
        spec,
        what,
        started_at: Timestamp(row.get(3)?),
        finished_at: row.get::<_, Option<i64>>(4)?.map(Timestamp),
        state: if state == "running" && gone() {
            "interrupted".to_string()
        } else {
            state
        },
        workflow: row.get(6)?,
        summary: Summary::default(),
        results: Vec::new(),
    })
}

/// The newest sweeps first, at most `limit`, each with its summary but not its results.
pub fn sweeps(store: &Store, limit: usize) -> Result<Vec<Sweep>> {
    let mut sweeps = store.with_connection(|connection| {
        let mut statement = connection.prepare(
            "SELECT id, kind, spec, started_at, finished_at, state, workflow, pid FROM sweeps
             ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = statement.query_map([limit as i64], sweep_row)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    })?;
    // The counts of all of them at once: one query, whatever the limit.
    let Some(oldest) = sweeps.last().map(|sweep| sweep.id) else {
        return Ok(sweeps);
    };
    let counts: Vec<(i64, String, i64)> = store.with_connection(|connection| {
        let mut statement = connection.prepare(
            "SELECT sweep_id, status, COUNT(*) FROM sweep_results WHERE sweep_id >= ?1
             GROUP BY sweep_id, status",
        )?;
        let rows =
            statement.query_map([oldest], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        rows.collect()
    })?;
    for (id, status, count) in counts {
        if let Some(sweep) = sweeps.iter_mut().find(|sweep| sweep.id == id) {
            sweep.summary.count(Outcome::parse(&status), count as usize);
        }
    }
    Ok(sweeps)
}

/// The last scorecard of each repository named, as stored.
pub fn last_checks(store: &Store, repos: &[String]) -> Result<Vec<(String, Timestamp, Value)>> {
    store.with_connection(|connection| {
        let mut statement =
            connection.prepare("SELECT repo, at, card FROM last_checks WHERE repo = ?1")?;
        let mut found = Vec::new();
        for repo in repos {
            if let Some(row) = statement
                .query_row([repo], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        Timestamp(row.get(1)?),
                        row.get::<_, String>(2)?,
                    ))
                })
                .optional()?
            {
                found.push((
                    row.0,
                    row.1,
                    serde_json::from_str(&row.2).unwrap_or(Value::Null),
                ));
            }
        }
        Ok(found)
    })
}

/// Keeps `card` as the repository's last scorecard.
pub fn set_last_check(store: &Store, repo: &str, card: &Value) -> Result<()> {
    store.with_connection(|connection| {
        connection.execute(
            "INSERT OR REPLACE INTO last_checks (repo, at, card) VALUES (?1, ?2, ?3)",
            params![repo, Timestamp::now().0, card.to_string()],
        )?;
        Ok(())
    })
}

/// Starts a workflow run's record; returns its number.
pub fn begin_run(store: &Store, workflow: &str, cause: &str) -> Result<i64> {
    store.with_connection(|connection| {
        connection.execute(
            "INSERT INTO workflow_runs (workflow, cause, started_at, state, summary)
             VALUES (?1, ?2, ?3, 'running', '')",
            params![workflow, cause, Timestamp::now().0],
        )?;
        Ok(connection.last_insert_rowid())
    })
}

/// Ends a workflow run.
pub fn finish_run(
    store: &Store,
    seq: i64,
    ok: bool,
    summary: &str,
    sweep: Option<i64>,
) -> Result<()> {
    store.with_connection(|connection| {
        connection.execute(
            "UPDATE workflow_runs SET finished_at = ?2, state = ?3, summary = ?4, sweep_id = ?5 WHERE seq = ?1",
            params![seq, Timestamp::now().0, if ok { "ok" } else { "failed" }, summary, sweep],
        )?;
        Ok(())
    })
}

/// The newest runs of `workflow` (of every workflow when `None`), at most `limit`.
pub fn runs(store: &Store, workflow: Option<&str>, limit: usize) -> Result<Vec<WorkflowRun>> {
    store.with_connection(|connection| {
        let mut statement = connection.prepare(
            "SELECT seq, workflow, cause, started_at, finished_at, state, summary, sweep_id
             FROM workflow_runs WHERE ?1 IS NULL OR workflow = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(params![workflow, limit as i64], |row| {
            Ok(WorkflowRun {
                seq: row.get(0)?,
                workflow: row.get(1)?,
                cause: row.get(2)?,
                started_at: Timestamp(row.get(3)?),
                finished_at: row.get::<_, Option<i64>>(4)?.map(Timestamp),
                state: row.get(5)?,
                summary: row.get(6)?,
                sweep: row.get(7)?,
            })
        })?;
        rows.collect()
    })
}
