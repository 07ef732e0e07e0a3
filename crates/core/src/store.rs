//! The state store: instances and events in SQLite, in WAL mode with a busy timeout, so that many
//! `mahavishnu` processes can share it. Migrations are embedded and run on open.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Instance, InstanceId, Timestamp};

/// The database file inside the state directory.
pub const DATABASE_FILE: &str = "mahavishnu.db";

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        project TEXT NOT NULL,
        record TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX instances_by_project ON instances(project);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        instance_id TEXT,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_by_instance ON events(instance_id, seq);",
    // The last screen seen of each instance and since when, so that idle time survives between processes.
    "CREATE TABLE screen_marks (
        instance_id TEXT PRIMARY KEY,
        hash INTEGER NOT NULL,
        since INTEGER NOT NULL
    );",
];

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing sequence number.
    pub seq: i64,
    /// When it happened.
    pub at: Timestamp,
    /// The instance it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// What happened: `launched`, `state`, `closed`, `failed`, ...
    pub kind: String,
    /// Details, by kind.
    pub detail: serde_json::Value,
}

/// The SQLite store.
pub struct Store {
    connection: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            Error::Store(format!(
                "cannot create the state directory {}: {e}; pass --state-dir or set MAHAVISHNU_STATE_DIR to a writable directory",
                state_dir.display()
            ))
        })?;
        let path = state_dir.join(DATABASE_FILE);
        let fail = |e: rusqlite::Error| describe_open_error(&path, e);
        let connection = Connection::open(&path).map_err(fail)?;
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(fail)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        keep_wal_files(&connection);
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        let store = Store {
            connection: Mutex::new(connection),
            path,
        };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut connection = self.lock();
        let fail = |e: rusqlite::Error| describe_open_error(&self.path, e);
        let version: usize = connection
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(fail)?;
        if version >= MIGRATIONS.len() {
            if version > MIGRATIONS.len() {
                return Err(Error::Store(format!(
                    "the state database {} was written by a newer Mahavishnu (schema {version}); upgrade mahavishnu or use another --state-dir",
                    self.path.display()
                )));
            }
            return Ok(());
        }
        let tx = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        // Another process may have migrated while we waited for the lock.
        let version: usize = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(fail)?;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.execute_batch(migration).map_err(fail)?;
            tx.pragma_update(None, "user_version", index + 1)
                .map_err(fail)?;
        }
        tx.commit().map_err(fail)
    }

    /// Records a new instance; `Ok(false)` when an instance with that id is already recorded and not
    /// closed (a closed one's id may be used again).
    pub fn insert_instance(&self, instance: &Instance) -> Result<bool> {
        let record = serde_json::to_string(instance).map_err(|e| Error::Store(e.to_string()))?;
        let changed = self
            .lock()
            .execute(
                "INSERT INTO instances (id, target, state, project, record, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET target = ?2, state = ?3, project = ?4, record = ?5,
                     created_at = ?6, updated_at = ?7
                 WHERE instances.state = 'closed'",
                params![
                    instance.id.to_string(),
                    instance.target.name(),
                    instance.state.name(),
                    instance.project.to_string_lossy(),
                    record,
                    instance.created_at.0,
                    instance.updated_at.0
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(changed == 1)
    }

    /// Replaces the record of an instance.
    pub fn update_instance(&self, instance: &Instance) -> Result<()> {
        let record = serde_json::to_string(instance).map_err(|e| Error::Store(e.to_string()))?;
        self.lock()
            .execute(
                "UPDATE instances SET state = ?2, record = ?3, updated_at = ?4 WHERE id = ?1",
                params![
                    instance.id.to_string(),
                    instance.state.name(),
                    record,
                    instance.updated_at.0
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The instance with this id.
    pub fn instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        let record: Option<String> = self
            .lock()
            .query_row(
                "SELECT record FROM instances WHERE id = ?1",
                [id.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))?;
        record.map(|record| self.decode(&record)).transpose()
    }

    /// Every recorded instance, oldest first; closed ones only when asked for.
    pub fn instances(&self, include_closed: bool) -> Result<Vec<Instance>> {
        let connection = self.lock();
        let sql = if include_closed {
            "SELECT record FROM instances ORDER BY created_at, id"
        } else {
            "SELECT record FROM instances WHERE state != 'closed' ORDER BY created_at, id"
        };
        let mut statement = connection.prepare_cached(sql).map_err(|e| self.error(e))?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| self.error(e))?;
        let mut instances = Vec::new();
        for row in rows {
            instances.push(self.decode(&row.map_err(|e| self.error(e))?)?);
        }
        Ok(instances)
    }

    /// Records an event.
    pub fn record_event(
        &self,
        instance: Option<&InstanceId>,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO events (at, instance_id, kind, detail) VALUES (?1, ?2, ?3, ?4)",
                params![
                    Timestamp::now().0,
                    instance.map(ToString::to_string),
                    kind,
                    detail.to_string()
                ],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Events after `after_seq`, oldest first, at most `limit`; optionally of one instance.
    pub fn events(
        &self,
        after_seq: i64,
        instance: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let connection = self.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT seq, at, instance_id, kind, detail FROM events
                 WHERE seq > ?1 AND (?2 IS NULL OR instance_id = ?2) ORDER BY seq LIMIT ?3",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(params![after_seq, instance, limit as i64], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| self.error(e))?;
        let mut events = Vec::new();
        for row in rows {
            let (seq, at, instance, kind, detail) = row.map_err(|e| self.error(e))?;
            let detail = serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail));
            events.push(Event {
                seq,
                at: Timestamp(at),
                instance,
                kind,
                detail,
            });
        }
        Ok(events)
    }

    /// The hash of the screen last seen on an instance, and since when it has looked like that.
    pub fn screen_mark(&self, id: &InstanceId) -> Result<Option<(u64, Timestamp)>> {
        self.lock()
            .query_row(
                "SELECT hash, since FROM screen_marks WHERE instance_id = ?1",
                [id.to_string()],
                |row| Ok((row.get::<_, i64>(0)? as u64, Timestamp(row.get(1)?))),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    /// Records the screen seen on an instance (its hash) and since when it has looked like that.
    pub fn set_screen_mark(&self, id: &InstanceId, hash: u64, since: Timestamp) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO screen_marks (instance_id, hash, since) VALUES (?1, ?2, ?3)
                 ON CONFLICT(instance_id) DO UPDATE SET hash = ?2, since = ?3",
                params![id.to_string(), hash as i64, since.0],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The sequence number of the newest event (0 when there is none).
    pub fn last_event_seq(&self) -> Result<i64> {
        self.lock()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |row| {
                row.get(0)
            })
            .map_err(|e| self.error(e))
    }

    fn decode(&self, record: &str) -> Result<Instance> {
        serde_json::from_str(record).map_err(|e| {
            Error::Store(format!(
                "an instance record in {} cannot be read: {e}",
                self.path.display()
            ))
        })
    }

    fn error(&self, error: rusqlite::Error) -> Error {
        describe_open_error(&self.path, error)
    }
}

/// Keeps the WAL and shared-memory files when the last connection closes. Without this, every short
/// `mahavishnu` process would delete them on exit and the next would create them again, which costs
/// more than the whole query of a `list`.
fn keep_wal_files(connection: &Connection) {
    let mut persist: std::ffi::c_int = 1;
    // SAFETY: the handle is a live connection owned by `connection`; SQLITE_FCNTL_PERSIST_WAL reads and
    // writes one int through the pointer, which outlives the call.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            connection.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut persist as *mut std::ffi::c_int).cast(),
        );
    }
}

fn describe_open_error(path: &Path, error: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let shown = path.display();
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Error::Store(format!(
            "the state database {shown} is damaged ({error}); nothing was changed. Move it aside (`mv {shown} {shown}.broken`) \
             and run again, or pass another --state-dir"
        )),
        Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => {
            Error::Store(format!(
                "cannot write the state database {shown} ({error}); make the directory writable, or pass --state-dir / set \
             MAHAVISHNU_STATE_DIR to a writable directory"
            ))
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Store(format!(
            "the state database {shown} stayed locked by another mahavishnu process ({error}); try again"
        )),
        _ => Error::Store(format!("state database {shown}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceState, TargetKind, WaitingRules};

    fn instance(native: &str) -> Instance {
        Instance {
            id: InstanceId::new(TargetKind::Pty, native).unwrap(),
            profile: "shell".into(),
            target: TargetKind::Pty,
            state: InstanceState::Starting,
            exit_code: None,
            cwd: "/tmp".into(),
            project: "/tmp".into(),
            command: vec!["/bin/sh".into()],
            pid: None,
            labels: Default::default(),
            waiting: WaitingRules::default(),
            submit_delay_ms: 0,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        }
    }

    #[test]
    fn instances_round_trip_and_ids_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut first = instance("mv-1");
        assert!(store.insert_instance(&first).unwrap());
        assert!(!store.insert_instance(&first).unwrap());
        first.state = InstanceState::Closed;
        store.update_instance(&first).unwrap();
        assert_eq!(
            store.instance(&first.id).unwrap().unwrap().state,
            InstanceState::Closed
        );
        assert!(store.instances(false).unwrap().is_empty());
        assert_eq!(store.instances(true).unwrap().len(), 1);
        store
            .record_event(Some(&first.id), "closed", serde_json::json!({}))
            .unwrap();
        assert_eq!(store.events(0, None, 10).unwrap()[0].kind, "closed");
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.instances(true).unwrap().len(), 1);
        let mut again = instance("mv-1");
        again.state = InstanceState::Running;
        assert!(
            store.insert_instance(&again).unwrap(),
            "a closed instance's id can be used again"
        );
        assert!(
            !store.insert_instance(&again).unwrap(),
            "a live id is never taken twice"
        );
        assert_eq!(
            store.instance(&again.id).unwrap().unwrap().state,
            InstanceState::Running
        );
    }

    #[test]
    fn a_damaged_database_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(DATABASE_FILE);
        let garbage = b"this is not a database, but it is the user's data".repeat(100);
        std::fs::write(&file, &garbage).unwrap();
        let error = Store::open(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("damaged") && error.contains("mv "),
            "{error}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), garbage);
    }
}
