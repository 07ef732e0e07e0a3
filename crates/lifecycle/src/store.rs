//! The lifecycle's tables in the state store: coding sessions, the instances they launched, hook runs,
//! and the port ranges of worktree sessions being made. Their migrations are the lifecycle's own.

use std::path::{Path, PathBuf};

use mahavishnu_core::store::{Migrations, Store};
use mahavishnu_core::{Error, InstanceId, Result, Timestamp};
use rusqlite::params;
use serde::{Deserialize, Serialize};

/// The tables the lifecycle owns; open the store with these (`Store::open_with`) to use them.
pub const MIGRATIONS: Migrations = Migrations {
    owner: "lifecycle",
    steps: &[
        // Coding sessions, what they launched, and every hook run.
        "CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            state TEXT NOT NULL,
            source TEXT,
            started_at INTEGER NOT NULL,
            ended_at INTEGER,
            end_reason TEXT
        );
        CREATE INDEX sessions_by_project ON sessions(project);
        CREATE TABLE session_instances (
            session_id TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            PRIMARY KEY (session_id, instance_id)
        );
        CREATE TABLE hook_runs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id TEXT,
            event TEXT NOT NULL,
            hook TEXT NOT NULL,
            started_at INTEGER NOT NULL,
            success INTEGER NOT NULL,
            exit_code INTEGER,
            output TEXT NOT NULL,
            duration_ms INTEGER NOT NULL,
            error TEXT,
            detached INTEGER NOT NULL
        );
        CREATE INDEX hook_runs_by_session ON hook_runs(session_id, seq);",
        // Port ranges taken by worktree sessions still being made, before their instances are
        // recorded, so that launches in other processes choose other ranges.
        "CREATE TABLE port_reservations (
            port_base INTEGER PRIMARY KEY,
            expires_at INTEGER NOT NULL
        );",
    ],
};

/// A coding session (Claude Code's or Qwen Code's, or one started by hand).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The caller's session id, or a generated one.
    pub id: String,
    /// The project directory.
    pub project: PathBuf,
    /// `active` or `ended`.
    pub state: String,
    /// How it started (`startup`, `resume`, `clear`, `compact`, `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// Why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// The instances it launched.
    #[serde(default)]
    pub instances: Vec<String>,
}

impl SessionRecord {
    /// A session starting now.
    pub fn active(id: &str, project: &Path, source: Option<String>) -> Self {
        SessionRecord {
            id: id.to_string(),
            project: project.to_path_buf(),
            state: "active".into(),
            source,
            started_at: Timestamp::now(),
            ended_at: None,
            end_reason: None,
            instances: vec![],
        }
    }
}

/// One run of one hook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookRun {
    /// Increasing sequence number.
    pub seq: i64,
    /// The session it ran for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The event.
    pub event: String,
    /// The hook's name (or a description of its action).
    pub hook: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Whether it succeeded.
    pub success: bool,
    /// A command's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What it printed (capped) or what it did.
    pub output: String,
    /// How long it took.
    pub duration_ms: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether it ran after the caller had its answer.
    pub detached: bool,
}

/// The lifecycle's queries, on the state store.
pub trait SessionStore {
    /// Records a session as started; `Ok(false)` when it is already active (starting it again is a
    /// no-op). An ended session with the same id starts again.
    fn start_session(&self, session: &SessionRecord) -> Result<bool>;

    /// Marks a session ended; `Ok(false)` when it was not active.
    fn end_session(&self, id: &str, reason: Option<&str>) -> Result<bool>;

    /// One session, with the instances it launched.
    fn session(&self, id: &str) -> Result<Option<SessionRecord>>;

    /// Sessions, newest first; of one project when given.
    fn sessions(&self, project: Option<&Path>) -> Result<Vec<SessionRecord>>;

    /// Remembers that `session` launched `instance`.
    fn add_session_instance(&self, session: &str, instance: &InstanceId) -> Result<()>;

    /// Records one hook run.
    fn record_hook_run(&self, run: &HookRun) -> Result<()>;

    /// Hook runs, oldest first; of one session when given; at most the newest `limit`.
    fn hook_runs(&self, session: Option<&str>, limit: usize) -> Result<Vec<HookRun>>;
}

impl SessionStore for Store {
    fn start_session(&self, session: &SessionRecord) -> Result<bool> {
        let changed = self.with_connection(|connection| {
            connection.execute(
                "INSERT INTO sessions (id, project, state, source, started_at) VALUES (?1, ?2, 'active', ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET project = ?2, state = 'active', source = ?3, started_at = ?4,
                     ended_at = NULL, end_reason = NULL
                 WHERE sessions.state != 'active'",
                params![
                    session.id,
                    session.project.to_string_lossy(),
                    session.source,
                    session.started_at.0
                ],
            )
        })?;
        Ok(changed == 1)
    }

    fn end_session(&self, id: &str, reason: Option<&str>) -> Result<bool> {
        let changed = self.with_connection(|connection| {
            connection.execute(
                "UPDATE sessions SET state = 'ended', ended_at = ?2, end_reason = ?3 WHERE id = ?1 AND state = 'active'",
                params![id, Timestamp::now().0, reason],
            )
        })?;
        Ok(changed == 1)
    }

    fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        Ok(sessions_where(self, "id = ?1", id)?.pop())
    }

    fn sessions(&self, project: Option<&Path>) -> Result<Vec<SessionRecord>> {
        match project {
            Some(project) => sessions_where(self, "project = ?1", &project.to_string_lossy()),
            None => sessions_where(self, "?1 IS NOT NULL", ""),
        }
    }

    fn add_session_instance(&self, session: &str, instance: &InstanceId) -> Result<()> {
        self.with_connection(|connection| {
            connection.execute(
                "INSERT OR IGNORE INTO session_instances (session_id, instance_id) VALUES (?1, ?2)",
                params![session, instance.to_string()],
            )
        })?;
        Ok(())
    }

    fn record_hook_run(&self, run: &HookRun) -> Result<()> {
        self.with_connection(|connection| {
            connection.execute(
                "INSERT INTO hook_runs (session_id, event, hook, started_at, success, exit_code, output, duration_ms, error, detached)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    run.session_id,
                    run.event,
                    run.hook,
                    run.started_at.0,
                    run.success,
                    run.exit_code,
                    run.output,
                    run.duration_ms as i64,
                    run.error,
                    run.detached
                ],
            )
        })?;
        Ok(())
    }

    fn hook_runs(&self, session: Option<&str>, limit: usize) -> Result<Vec<HookRun>> {
        self.with_connection(|connection| {
            let mut statement = connection.prepare_cached(
                "SELECT seq, session_id, event, hook, started_at, success, exit_code, output, duration_ms, error, detached
                 FROM (SELECT * FROM hook_runs WHERE (?1 IS NULL OR session_id = ?1) ORDER BY seq DESC LIMIT ?2)
                 ORDER BY seq",
            )?;
            let rows = statement.query_map(params![session, limit as i64], |row| {
                Ok(HookRun {
                    seq: row.get(0)?,
                    session_id: row.get(1)?,
                    event: row.get(2)?,
                    hook: row.get(3)?,
                    started_at: Timestamp(row.get(4)?),
                    success: row.get(5)?,
                    exit_code: row.get(6)?,
                    output: row.get(7)?,
                    duration_ms: row.get::<_, i64>(8)? as u64,
                    error: row.get(9)?,
                    detached: row.get(10)?,
                })
            })?;
            rows.collect()
        })
    }
}

fn sessions_where(store: &Store, condition: &str, value: &str) -> Result<Vec<SessionRecord>> {
    store.with_connection(|connection| {
        let sql = format!(
            "SELECT id, project, state, source, started_at, ended_at, end_reason FROM sessions
             WHERE {condition} ORDER BY started_at DESC, id"
        );
        let mut statement = connection.prepare_cached(&sql)?;
        let rows = statement.query_map([value], |row| {
            Ok(SessionRecord {
                id: row.get(0)?,
                project: PathBuf::from(row.get::<_, String>(1)?),
                state: row.get(2)?,
                source: row.get(3)?,
                started_at: Timestamp(row.get(4)?),
                ended_at: row.get::<_, Option<i64>>(5)?.map(Timestamp),
                end_reason: row.get(6)?,
                instances: Vec::new(),
            })
        })?;
        let mut sessions = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        let mut instances = connection.prepare_cached(
            "SELECT instance_id FROM session_instances WHERE session_id = ?1 ORDER BY instance_id",
        )?;
        for session in &mut sessions {
            session.instances = instances
                .query_map([&session.id], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
        }
        Ok(sessions)
    })
}

/// Chooses `count` port ranges of `span` ports, from `first` up, that no recorded worktree session
/// holds (unless closed) and no launch under way has reserved, and reserves them until `until`. The
/// reading, the choice and the reservation are one IMMEDIATE transaction, so that launches in other
/// processes at the same moment choose other ranges.
pub fn reserve_port_ranges(
    store: &Store,
    count: usize,
    first: u16,
    span: u16,
    until: Timestamp,
) -> Result<Vec<u16>> {
    let chosen = store.immediate(|tx| {
        tx.execute(
            "DELETE FROM port_reservations WHERE expires_at < ?1",
            [Timestamp::now().0],
        )?;
        let mut used = std::collections::BTreeSet::new();
        let mut held = tx.prepare(
            "SELECT json_extract(record, '$.worktree.port_base') AS port FROM instances
             WHERE state != 'closed' AND port IS NOT NULL
             UNION SELECT port_base FROM port_reservations",
        )?;
        for port in held.query_map([], |row| row.get::<_, i64>(0))? {
            used.insert(port?);
        }
        let mut chosen = Vec::with_capacity(count);
        let mut base = i64::from(first);
        while chosen.len() < count && base <= i64::from(u16::MAX) {
            if !used.contains(&base) {
                tx.execute(
                    "INSERT INTO port_reservations (port_base, expires_at) VALUES (?1, ?2)",
                    params![base, until.0],
                )?;
                chosen.push(base as u16);
            }
            base += i64::from(span.max(1));
        }
        Ok(chosen)
    })?;
    if chosen.len() < count {
        release_port_ranges(store, &chosen)?;
        return Err(Error::Invalid(format!(
            "no free port range of {span} ports is left from {first} up for {count} more sessions; \
             close some, or set worktree.port_base lower"
        )));
    }
    Ok(chosen)
}

/// Gives back reserved port ranges: the launch that reserved them is over.
pub fn release_port_ranges(store: &Store, bases: &[u16]) -> Result<()> {
    store.with_connection(|connection| {
        let mut release =
            connection.prepare_cached("DELETE FROM port_reservations WHERE port_base = ?1")?;
        for base in bases {
            release.execute([base])?;
        }
        Ok(())
    })
}
