//! The engine's tables in the state store: every apply with its journal of operations (what resume reads)
//! and the release history of every service in every region (what `history` and `rollback` read).

use mahavishnu_core::store::{Migrations, Store};
use mahavishnu_core::{Error, Result, Timestamp};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// The tables the engine owns; open the store with these (`Store::open_with`) to use them.
pub const MIGRATIONS: Migrations = Migrations {
    owner: "deploy",
    steps: &["CREATE TABLE deploy_applies (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            sandcastle TEXT NOT NULL,
            region TEXT NOT NULL,
            platform TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at INTEGER NOT NULL,
            finished_at INTEGER,
            state TEXT NOT NULL
        );
        CREATE INDEX deploy_applies_by_placement ON deploy_applies(sandcastle, region, id);
        CREATE TABLE deploy_journal (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            apply_id INTEGER NOT NULL,
            service TEXT NOT NULL,
            operation TEXT NOT NULL,
            detail TEXT NOT NULL,
            state TEXT NOT NULL,
            at INTEGER NOT NULL
        );
        CREATE INDEX deploy_journal_by_apply ON deploy_journal(apply_id, seq);
        CREATE TABLE deploy_releases (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            sandcastle TEXT NOT NULL,
            region TEXT NOT NULL,
            service TEXT NOT NULL,
            weights TEXT NOT NULL,
            cause TEXT NOT NULL,
            apply_id INTEGER,
            at INTEGER NOT NULL
        );
        CREATE INDEX deploy_releases_by_service ON deploy_releases(sandcastle, region, service, seq);"],
};

/// An apply as the store has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyRecord {
    /// Its number.
    pub id: i64,
    /// The process that ran it.
    pub pid: i64,
    /// When it started.
    pub started_at: Timestamp,
    /// `running`, `succeeded`, `failed`, `interrupted`.
    pub state: String,
    /// The last operation it started, as `service: operation`.
    pub last_step: Option<String>,
}

/// One release of a service: the weights it was given, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// The region.
    pub region: String,
    /// The service.
    pub service: String,
    /// Revision names and their shares.
    pub weights: Vec<(String, u8)>,
    /// What made it (`apply`, `canary step 10 %`, `rollback`, `release`).
    pub cause: String,
    /// When.
    pub at: Timestamp,
}

/// Starts an apply's record; returns its id.
pub fn begin_apply(store: &Store, sandcastle: &str, region: &str, platform: &str) -> Result<i64> {
    store.with_connection(|connection| {
        connection.execute(
            "INSERT INTO deploy_applies (sandcastle, region, platform, pid, started_at, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running')",
            params![
                sandcastle,
                region,
                platform,
                std::process::id(),
                Timestamp::now().0
            ],
        )?;
        Ok(connection.last_insert_rowid())
    })
}

/// Ends an apply with `state`.
pub fn finish_apply(store: &Store, id: i64, state: &str) -> Result<()> {
    store.with_connection(|connection| {
        connection.execute(
            "UPDATE deploy_applies SET state = ?1, finished_at = ?2 WHERE id = ?3",
            params![state, Timestamp::now().0, id],
        )?;
        Ok(())
    })
}

/// The apply of this placement that was still running when its process went away, if any. Only call
/// this while holding the placement's apply lock: then no running apply can be alive.
pub fn interrupted_apply(
    store: &Store,
    sandcastle: &str,
    region: &str,
) -> Result<Option<ApplyRecord>> {
    store.with_connection(|connection| {
        let found = connection
            .query_row(
                "SELECT id, pid, started_at, state FROM deploy_applies
                 WHERE sandcastle = ?1 AND region = ?2 AND state = 'running' ORDER BY id DESC LIMIT 1",
                params![sandcastle, region],
                |row| {
                    Ok(ApplyRecord {
                        id: row.get(0)?,
                        pid: row.get(1)?,
                        started_at: Timestamp(row.get(2)?),
                        state: row.get(3)?,
                        last_step: None,
                    })
                },
            )
            .optional()
            ?;
        let Some(mut record) = found else { return Ok(None) };
        record.last_step = connection
            .query_row(
                "SELECT service || ': ' || operation || ' ' || detail FROM deploy_journal
                 WHERE apply_id = ?1 ORDER BY seq DESC LIMIT 1",
                params![record.id],
                |row| row.get(0),
            )
            .optional()
            ?;
        Ok(Some(record))
    })
}

/// Writes one journal entry: an operation `started`, `done` or `failed`.
pub fn journal(
    store: &Store,
    apply: i64,
    service: &str,
    operation: &str,
    detail: &str,
    state: &str,
) -> Result<()> {
    store.with_connection(|connection| {
        connection.execute(
            "INSERT INTO deploy_journal (apply_id, service, operation, detail, state, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![apply, service, operation, detail, state, Timestamp::now().0],
        )?;
        Ok(())
    })
}

/// Records a release.
pub fn record_release(
    store: &Store,
    sandcastle: &str,
    record: &ReleaseRecord,
    apply: Option<i64>,
) -> Result<()> {
    let weights =
        serde_json::to_string(&record.weights).map_err(|e| Error::Store(e.to_string()))?;
    store.with_connection(|connection| {
        connection
            .execute(
                "INSERT INTO deploy_releases (sandcastle, region, service, weights, cause, apply_id, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![sandcastle, record.region, record.service, weights, record.cause, apply, record.at.0],
            )
            ?;
        Ok(())
    })
}

/// The releases of a service (every region when `region` is `None`), newest first.
pub fn releases(
    store: &Store,
    sandcastle: &str,
    service: &str,
    region: Option<&str>,
    limit: usize,
) -> Result<Vec<ReleaseRecord>> {
    store.with_connection(|connection| {
        let mut statement = connection.prepare(
            "SELECT region, service, weights, cause, at FROM deploy_releases
                 WHERE sandcastle = ?1 AND service = ?2 AND (?3 IS NULL OR region = ?3)
                 ORDER BY seq DESC LIMIT ?4",
        )?;
        let rows =
            statement.query_map(params![sandcastle, service, region, limit as i64], |row| {
                let weights: String = row.get(2)?;
                Ok(ReleaseRecord {
                    region: row.get(0)?,
                    service: row.get(1)?,
                    weights: serde_json::from_str(&weights).unwrap_or_default(),
                    cause: row.get(3)?,
                    at: Timestamp(row.get(4)?),
                })
            })?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
    })
}
