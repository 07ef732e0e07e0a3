//! The state store: instances and events in SQLite, in WAL mode with a busy timeout, so that many
//! `mahavishnu` processes can share it. Each crate that owns tables owns their migrations
//! ([`Migrations`]); those the store is opened with run on open, with a version kept per owner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Instance, InstanceId, Timestamp};

/// The database file inside the state directory.
pub const DATABASE_FILE: &str = "mahavishnu.db";

/// The schema of the tables one crate owns, as steps applied in order. A released step never
/// changes; a change to the tables is a new step at the end.
#[derive(Clone, Copy, Debug)]
pub struct Migrations {
    /// Who owns the tables; the database records each owner's version under this name.
    pub owner: &'static str,
    /// The SQL of each step.
    pub steps: &'static [&'static str],
}

/// The tables core owns: instances, their events, screen and input marks, and trust.
pub const MIGRATIONS: Migrations = Migrations {
    owner: "core",
    steps: &[
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
        // The last screen seen of each instance and since when, so that idle time survives between
        // processes.
        "CREATE TABLE screen_marks (
            instance_id TEXT PRIMARY KEY,
            hash INTEGER NOT NULL,
            since INTEGER NOT NULL
        );",
        // Trusted project files (and projects, for built-in hooks).
        "CREATE TABLE trust (
            project TEXT PRIMARY KEY,
            hooks_hash TEXT NOT NULL,
            trusted_at INTEGER NOT NULL
        );",
        // Trust is given to the bytes of a file: its SHA-256 and the text itself, so that a later
        // change can be shown against what was trusted.
        "ALTER TABLE trust ADD COLUMN content TEXT;",
        // The screen as it was when input was last typed into an instance, so that a wait in another
        // process matches only what appeared since.
        "CREATE TABLE input_marks (
            instance_id TEXT PRIMARY KEY,
            screen TEXT NOT NULL,
            at INTEGER NOT NULL
        );",
    ],
};

/// `user_version` of a database whose versions are kept per owner in `schema_versions`. Databases
/// made before kept one list of steps, counted by `user_version` alone (up to [`LEGACY_STEPS`]); a
/// Mahavishnu of that time refuses this number as a newer schema instead of misreading the tables.
const PER_OWNER_LAYOUT: usize = 100;

/// How many steps the single list of earlier databases had.
const LEGACY_STEPS: usize = 5;

/// Where the steps of the single list went: after `user_version` = n, core is at n, and the
/// lifecycle's tables (made in the third step together with trust) are at 1 from the third on.
fn legacy_versions(user_version: usize) -> [(&'static str, usize); 2] {
    [
        (MIGRATIONS.owner, user_version),
        ("lifecycle", usize::from(user_version >= 3)),
    ]
}

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

/// What the user trusted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrustRecord {
    /// The SHA-256 of the trusted file, in hex (older records hold a shorter hash, which no longer
    /// proves anything).
    pub hash: String,
    /// The trusted file's text.
    pub content: Option<String>,
    /// When.
    pub trusted_at: Timestamp,
}

/// The SQLite store. It keeps a few connections: a call takes an idle one (or opens another), so that
/// concurrent callers (the requests of `mahavishnu serve`) read in parallel, as WAL allows, instead of
/// queueing behind one connection.
pub struct Store {
    idle: Mutex<Vec<Connection>>,
    path: PathBuf,
    /// Core's migrations and those of the other owners it was opened with.
    owners: Vec<Migrations>,
}

/// Idle connections kept for reuse; more may be open while many calls run at once.
const IDLE_CONNECTIONS: usize = 8;

/// A connection taken from the store for one call; it goes back to the idle ones when dropped.
struct Pooled<'a> {
    store: &'a Store,
    connection: Option<Connection>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
            .as_ref()
            .unwrap_or_else(|| unreachable!("a pooled connection is present until dropped"))
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            let mut idle = self.store.idle_connections();
            if idle.len() < IDLE_CONNECTIONS {
                idle.push(connection);
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `state_dir`, with core's tables.
    pub fn open(state_dir: &Path) -> Result<Self> {
        Self::open_with(state_dir, &[])
    }

    /// Opens (creating if needed) the store in `state_dir`, with core's tables and those of `owners`,
    /// each brought to its newest version in one transaction.
    pub fn open_with(state_dir: &Path, owners: &[Migrations]) -> Result<Self> {
        let owners: Vec<Migrations> = std::iter::once(MIGRATIONS)
            .chain(owners.iter().copied())
            .collect();
        crate::paths::ensure_private_dir(state_dir)?;
        let path = state_dir.join(DATABASE_FILE);
        make_database_private(&path)?;
        // Processes that open a new database at the same moment can meet SQLite's "database is
        // locked" without its busy handler being asked (switching to WAL needs a moment alone), so
        // opening is tried again for a while before that becomes an error.
        let started = std::time::Instant::now();
        loop {
            match open_connection(&path, &owners) {
                Ok(connection) => {
                    return Ok(Store {
                        idle: Mutex::new(vec![connection]),
                        path,
                        owners,
                    });
                }
                Err(OpenError::Sqlite(error))
                    if is_busy(&error) && started.elapsed() < Duration::from_secs(10) =>
                {
                    std::thread::sleep(Duration::from_millis(5 + jitter_ms()));
                }
                Err(OpenError::Sqlite(error)) => return Err(describe_open_error(&path, error)),
                Err(OpenError::NewerSchema { owner, version }) => {
                    let schema = match owner {
                        Some(owner) => format!("schema {version} of its {owner} tables"),
                        None => format!("schema {version}"),
                    };
                    return Err(Error::Store(format!(
                        "the state database {} was written by a newer Mahavishnu ({schema}); nothing \
                         was changed; upgrade mahavishnu or use another --state-dir",
                        path.display()
                    )));
                }
            }
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn idle_connections(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A connection for one call: an idle one, else a new one (the schema is already migrated).
    fn lock(&self) -> Pooled<'_> {
        let idle = self.idle_connections().pop();
        let connection = idle.or_else(|| open_connection(&self.path, &self.owners).ok());
        match connection {
            Some(connection) => Pooled {
                store: self,
                connection: Some(connection),
            },
            // Opening another failed (out of file descriptors, say): wait for one in use instead.
            None => loop {
                if let Some(connection) = self.idle_connections().pop() {
                    break Pooled {
                        store: self,
                        connection: Some(connection),
                    };
                }
                std::thread::sleep(Duration::from_millis(1));
            },
        }
    }

    /// Records a new instance; `Ok(false)` when an instance with that id is already recorded and not
    /// closed (a closed one's id may be used again).
    pub fn insert_instance(&self, instance: &Instance) -> Result<bool> {
        let record = encode(instance)?;
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
                    instance.target.as_str(),
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
        let record = encode(instance)?;
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

    /// Forgets the record of an instance (its events stay), so that the id can be launched again.
    pub fn forget_instance(&self, id: &InstanceId) -> Result<()> {
        self.lock()
            .execute("DELETE FROM instances WHERE id = ?1", [id.to_string()])
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Removes the records of instances closed at or before `before`, with their screen and input marks;
    /// returns how many were removed. Their events stay.
    pub fn remove_closed_before(&self, before: Timestamp) -> Result<usize> {
        let connection = self.lock();
        let transaction = connection
            .unchecked_transaction()
            .map_err(|e| self.error(e))?;
        let closed = "SELECT id FROM instances WHERE state = 'closed' AND updated_at <= ?1";
        for table in ["screen_marks", "input_marks"] {
            transaction
                .execute(
                    &format!("DELETE FROM {table} WHERE instance_id IN ({closed})"),
                    [before.0],
                )
                .map_err(|e| self.error(e))?;
        }
        let removed = transaction
            .execute(
                "DELETE FROM instances WHERE state = 'closed' AND updated_at <= ?1",
                [before.0],
            )
            .map_err(|e| self.error(e))?;
        transaction.commit().map_err(|e| self.error(e))?;
        Ok(removed)
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

    /// The screen of an instance as it was when input was last typed into it (empty for one launched
    /// since), or None when nothing was recorded.
    pub fn input_mark(&self, id: &InstanceId) -> Result<Option<String>> {
        self.lock()
            .query_row(
                "SELECT screen FROM input_marks WHERE instance_id = ?1",
                [id.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    /// Records the screen of an instance as it is just before input is typed into it.
    pub fn set_input_mark(&self, id: &InstanceId, screen: &str) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO input_marks (instance_id, screen, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(instance_id) DO UPDATE SET screen = ?2, at = ?3",
                params![id.to_string(), screen, Timestamp::now().0],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// What was trusted under `key` (a project file, or a project directory for built-in hooks).
    pub fn trusted(&self, key: &Path) -> Result<Option<TrustRecord>> {
        self.lock()
            .query_row(
                "SELECT hooks_hash, content, trusted_at FROM trust WHERE project = ?1",
                [key.to_string_lossy()],
                |row| {
                    Ok(TrustRecord {
                        hash: row.get(0)?,
                        content: row.get(1)?,
                        trusted_at: Timestamp(row.get(2)?),
                    })
                },
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    /// Trusts what `key` names as it is now: its hash, and its text when it is a file.
    pub fn set_trust(&self, key: &Path, hash: &str, content: Option<&str>) -> Result<()> {
        self.lock()
            .execute(
                "INSERT INTO trust (project, hooks_hash, trusted_at, content) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(project) DO UPDATE SET hooks_hash = ?2, trusted_at = ?3, content = ?4",
                params![key.to_string_lossy(), hash, Timestamp::now().0, content],
            )
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Withdraws trust from a project; `Ok(false)` when it was not trusted.
    pub fn remove_trust(&self, project: &Path) -> Result<bool> {
        let changed = self
            .lock()
            .execute(
                "DELETE FROM trust WHERE project = ?1",
                [project.to_string_lossy()],
            )
            .map_err(|e| self.error(e))?;
        Ok(changed == 1)
    }

    /// Runs `query` on a connection of the store: how the crates that own other tables (see
    /// [`Migrations`]) read and write them.
    pub fn with_connection<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        query(&self.lock()).map_err(|e| self.error(e))
    }

    /// Runs `work` in one IMMEDIATE transaction, committed when it succeeds: what it reads cannot be
    /// changed by another process before what it writes is in.
    pub fn immediate<T>(
        &self,
        work: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let connection = self.lock();
        let run = || {
            let tx = rusqlite::Transaction::new_unchecked(
                &connection,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            let done = work(&tx)?;
            tx.commit()?;
            Ok(done)
        };
        run().map_err(|e| self.error(e))
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
        let mut instance: Instance = serde_json::from_str(record).map_err(|e| {
            Error::Store(format!(
                "an instance record in {} cannot be read: {e}",
                self.path.display()
            ))
        })?;
        instance.unknown = None;
        Ok(instance)
    }

    fn error(&self, error: rusqlite::Error) -> Error {
        describe_open_error(&self.path, error)
    }
}

/// Why a connection could not be opened.
enum OpenError {
    Sqlite(rusqlite::Error),
    /// The database has a schema newer than this build knows: of one owner's tables, or (without an
    /// owner) a layout it does not know.
    NewerSchema {
        owner: Option<String>,
        version: usize,
    },
}

impl From<rusqlite::Error> for OpenError {
    fn from(error: rusqlite::Error) -> Self {
        OpenError::Sqlite(error)
    }
}

/// Creates the database file readable by this user only (SQLite gives its WAL and shared-memory
/// files the database's mode), and takes group and other permissions from files made before.
fn make_database_private(path: &Path) -> Result<()> {
    match crate::paths::create_private_file(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(describe_private_error(path, e)),
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        crate::paths::make_file_private(&file).map_err(|e| describe_private_error(&file, e))?;
    }
    Ok(())
}

fn describe_private_error(path: &Path, error: std::io::Error) -> Error {
    let why = if error.raw_os_error() == Some(libc::ELOOP) {
        "it is a symbolic link; the state database must be a plain file".to_string()
    } else {
        error.to_string()
    };
    Error::Store(format!(
        "cannot make the state database {} private ({why}); pass --state-dir or set MAHAVISHNU_STATE_DIR to a \
         directory of your own",
        path.display()
    ))
}

/// Opens and prepares a connection: WAL, settings, migrations.
fn open_connection(
    path: &Path,
    owners: &[Migrations],
) -> std::result::Result<Connection, OpenError> {
    let mut connection = Connection::open(path)?;
    connection.busy_timeout(Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    keep_wal_files(&connection);
    // Short-lived processes leave checkpointing to SQLite's automatic checkpoints instead of
    // paying for one (and its fsyncs) every time they exit. Those come every 64 pages, so that the
    // WAL, which each new process reads to rebuild its index, stays small.
    connection.pragma_update(None, "wal_autocheckpoint", 64)?;
    connection.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    migrate(&mut connection, owners)?;
    Ok(connection)
}

fn migrate(
    connection: &mut Connection,
    owners: &[Migrations],
) -> std::result::Result<(), OpenError> {
    if all_current(&recorded_versions(connection)?, owners)? {
        return Ok(());
    }
    let tx = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the lock.
    let mut versions = recorded_versions(&tx)?;
    all_current(&versions, owners)?;
    let user_version: usize = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if user_version != PER_OWNER_LAYOUT {
        tx.execute_batch(
            "CREATE TABLE schema_versions (owner TEXT PRIMARY KEY, version INTEGER NOT NULL);",
        )?;
        for (owner, version) in &versions {
            record_version(&tx, owner, *version)?;
        }
        tx.pragma_update(None, "user_version", PER_OWNER_LAYOUT)?;
    }
    for migrations in owners {
        let done = versions.remove(migrations.owner).unwrap_or(0);
        for (index, step) in migrations.steps.iter().enumerate().skip(done) {
            tx.execute_batch(step)?;
            record_version(&tx, migrations.owner, index + 1)?;
        }
    }
    Ok(tx.commit()?)
}

/// Each owner's version as the database records it, in either layout.
fn recorded_versions(
    connection: &Connection,
) -> std::result::Result<BTreeMap<String, usize>, OpenError> {
    let user_version: usize = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if user_version == PER_OWNER_LAYOUT {
        let mut statement = connection.prepare("SELECT owner, version FROM schema_versions")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        return Ok(rows.collect::<rusqlite::Result<_>>()?);
    }
    if user_version > LEGACY_STEPS {
        return Err(OpenError::NewerSchema {
            owner: None,
            version: user_version,
        });
    }
    Ok(legacy_versions(user_version)
        .into_iter()
        .filter(|(_, version)| *version > 0)
        .map(|(owner, version)| (owner.to_string(), version))
        .collect())
}

/// Whether every owner's tables are at their newest version; an error when one is newer than known.
fn all_current(
    versions: &BTreeMap<String, usize>,
    owners: &[Migrations],
) -> std::result::Result<bool, OpenError> {
    let mut current = true;
    for migrations in owners {
        let version = versions.get(migrations.owner).copied().unwrap_or(0);
        if version > migrations.steps.len() {
            return Err(OpenError::NewerSchema {
                owner: Some(migrations.owner.to_string()),
                version,
            });
        }
        current &= version == migrations.steps.len();
    }
    Ok(current)
}

fn record_version(connection: &Connection, owner: &str, version: usize) -> rusqlite::Result<()> {
    connection.execute(
        "INSERT INTO schema_versions (owner, version) VALUES (?1, ?2)
         ON CONFLICT(owner) DO UPDATE SET version = ?2",
        params![owner, version],
    )?;
    Ok(())
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// A few milliseconds of jitter, so that processes retrying together do not stay in step.
fn jitter_ms() -> u64 {
    u64::from(std::process::id() % 7)
        + (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            % 11) as u64
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

/// An instance's record as stored: without what is true only of one listing (`unknown`).
fn encode(instance: &Instance) -> Result<String> {
    let mut value = serde_json::to_value(instance).map_err(|e| Error::Store(e.to_string()))?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("unknown");
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{InstanceState, TargetKind, TargetName, WaitingRules};

    fn instance(native: &str) -> Instance {
        Instance {
            id: InstanceId::new(TargetName::builtin(TargetKind::Pty), native).unwrap(),
            profile: "shell".into(),
            target: TargetName::builtin(TargetKind::Pty),
            state: InstanceState::Starting,
            exit_code: None,
            cwd: "/tmp".into(),
            project: "/tmp".into(),
            command: vec!["/bin/sh".into()],
            pid: None,
            labels: Default::default(),
            waiting: WaitingRules::default(),
            submit_delay_ms: 0,
            question: None,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            worktree: None,
            unknown: None,
        }
    }

    /// Records written before targets had names (a kind where the name is now, `k8s:` ids) read as
    /// instances of the built-in target of that kind; what one listing learned is never stored.
    #[test]
    fn records_from_before_named_targets_read_as_the_built_in_targets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = r#"{"id":"k8s:dev/mv-1","profile":"shell","target":"kubernetes","state":"running",
            "cwd":"/tmp","project":"/tmp","command":["sh"],"labels":{"mahavishnu.scope":"east"},
            "waiting":{"patterns":[],"idle_ms":1000,"shell":true},"created_at":"2026-01-01T00:00:00Z",
            "updated_at":"2026-01-01T00:00:00Z"}"#;
        store
            .lock()
            .execute(
                "INSERT INTO instances (id, target, state, project, record, created_at, updated_at)
                 VALUES ('k8s:dev/mv-1', 'kubernetes', 'running', '/tmp', ?1, 0, 0)",
                [old],
            )
            .unwrap();
        let id: InstanceId = "k8s:dev/mv-1".parse().unwrap();
        let mut found = store.instance(&id).unwrap().expect("the old record");
        assert_eq!(found.target, TargetName::builtin(TargetKind::Kubernetes));
        assert_eq!(found.id.target(), &found.target);
        assert_eq!(
            found.id.to_string(),
            "k8s:dev/mv-1",
            "ids keep their prefix"
        );
        assert_eq!(found.labels["mahavishnu.scope"], "east");

        found.unknown = Some("the cluster did not answer".into());
        store.update_instance(&found).unwrap();
        assert_eq!(store.instance(&id).unwrap().unwrap().unknown, None);
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
    fn many_openers_of_a_new_database_all_succeed() {
        // Switching a new database to WAL needs a moment alone; openers that meet it wait and retry.
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let openers: Vec<_> = (0..16)
                .map(|_| {
                    let path = dir.path().to_path_buf();
                    std::thread::spawn(move || Store::open(&path).map(drop))
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn tables_newer_than_this_build_knows_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.insert_instance(&instance("mv-kept")).unwrap();
        drop(store);
        let raw = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        raw.execute(
            "UPDATE schema_versions SET version = 99 WHERE owner = 'core'",
            [],
        )
        .unwrap();
        drop(raw);
        let error = Store::open(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("newer Mahavishnu")
                && error.contains("schema 99 of its core tables")
                && error.contains("nothing was changed"),
            "{error}"
        );
        let raw = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        let version: i64 = raw
            .query_row(
                "SELECT version FROM schema_versions WHERE owner = 'core'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let kept: String = raw
            .query_row("SELECT id FROM instances", [], |row| row.get(0))
            .unwrap();
        assert_eq!((version, kept.as_str()), (99, "pty:mv-kept"));
    }

    #[test]
    fn an_owner_opened_later_gets_its_tables_then() {
        const LATER: Migrations = Migrations {
            owner: "later",
            steps: &["CREATE TABLE later_things (name TEXT);"],
        };
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let store = Store::open_with(dir.path(), &[LATER]).unwrap();
        store
            .with_connection(|c| c.execute("INSERT INTO later_things VALUES ('x')", []))
            .unwrap();
        drop(store);
        let store = Store::open_with(dir.path(), &[LATER]).unwrap();
        let count: i64 = store
            .with_connection(|c| c.query_row("SELECT COUNT(*) FROM later_things", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(count, 1, "a second open runs no step again");
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
