//! A state database made before each crate owned its migrations (one list of steps counted by
//! `user_version`) opens with every record in place.

use mahavishnu_core::store::{DATABASE_FILE, Store};
use mahavishnu_core::{InstanceId, TargetKind, TargetName};
use mahavishnu_lifecycle::store::{MIGRATIONS, SessionRecord, SessionStore};
use rusqlite::{Connection, params};

/// The single list of steps as it was released, copied here as it was so that this test keeps
/// making databases of that layout.
const OLD_MIGRATIONS: &[&str] = &[
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
    // Lifecycle: coding sessions, what they launched, every hook run, and trusted projects.
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
    CREATE INDEX hook_runs_by_session ON hook_runs(session_id, seq);
    CREATE TABLE trust (
        project TEXT PRIMARY KEY,
        hooks_hash TEXT NOT NULL,
        trusted_at INTEGER NOT NULL
    );",
    // Trust is given to the bytes of a file: its SHA-256 and the text itself, so that a later change can
    // be shown against what was trusted.
    "ALTER TABLE trust ADD COLUMN content TEXT;",
    // The screen as it was when input was last typed into an instance, so that a wait in another
    // process matches only what appeared since.
    "CREATE TABLE input_marks (
        instance_id TEXT PRIMARY KEY,
        screen TEXT NOT NULL,
        at INTEGER NOT NULL
    );",
];

/// An instance record as databases of that time hold it.
const OLD_INSTANCE_RECORD: &str = r#"{"id":"pty:mv-old","profile":"shell","target":"pty","state":"running","cwd":"/tmp","project":"/tmp","command":["/bin/sh"],"labels":{},"waiting":{"patterns":["\\$ $"],"idle_ms":1500,"shell":true},"submit_delay_ms":0,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#;

/// A database of the old layout after its first `steps` steps, with a row in every table it has.
fn old_database(dir: &std::path::Path, steps: usize) {
    let connection = Connection::open(dir.join(DATABASE_FILE)).unwrap();
    for (index, step) in OLD_MIGRATIONS.iter().take(steps).enumerate() {
        connection.execute_batch(step).unwrap();
        connection
            .pragma_update(None, "user_version", index + 1)
            .unwrap();
    }
    connection
        .execute(
            "INSERT INTO instances (id, target, state, project, record, created_at, updated_at)
             VALUES ('pty:mv-old', 'pty', 'running', '/tmp', ?1, 1, 1)",
            [OLD_INSTANCE_RECORD],
        )
        .unwrap();
    connection
        .execute(
            "INSERT INTO events (at, instance_id, kind, detail) VALUES (1, 'pty:mv-old', 'launched', '{}')",
            [],
        )
        .unwrap();
    if steps >= 2 {
        connection
            .execute("INSERT INTO screen_marks VALUES ('pty:mv-old', 42, 7)", [])
            .unwrap();
    }
    if steps >= 3 {
        connection
            .execute_batch(
                "INSERT INTO sessions (id, project, state, source, started_at) VALUES ('s-old', '/tmp', 'active', 'startup', 5);
                 INSERT INTO session_instances VALUES ('s-old', 'pty:mv-old');
                 INSERT INTO hook_runs (session_id, event, hook, started_at, success, exit_code, output, duration_ms, error, detached)
                     VALUES ('s-old', 'SessionStart', 'greet', 5, 1, 0, 'hello', 3, NULL, 0);
                 INSERT INTO trust (project, hooks_hash, trusted_at) VALUES ('/tmp/.mahavishnu.toml', 'abc', 6);",
            )
            .unwrap();
    }
    if steps >= 4 {
        connection
            .execute(
                "UPDATE trust SET content = 'trusted text' WHERE project = ?1",
                params!["/tmp/.mahavishnu.toml"],
            )
            .unwrap();
    }
    if steps >= 5 {
        connection
            .execute(
                "INSERT INTO input_marks VALUES ('pty:mv-old', 'before', 8)",
                [],
            )
            .unwrap();
    }
}

#[test]
fn every_record_of_an_old_database_is_found() {
    for steps in 1..=OLD_MIGRATIONS.len() {
        let dir = tempfile::tempdir().unwrap();
        old_database(dir.path(), steps);
        let store = Store::open_with(dir.path(), &[MIGRATIONS]).unwrap();
        let id = InstanceId::new(TargetName::builtin(TargetKind::Pty), "mv-old").unwrap();
        assert!(
            store.instance(&id).unwrap().is_some(),
            "the instance after {steps} steps"
        );
        assert_eq!(store.events(0, None, 10).unwrap()[0].kind, "launched");
        let mark = store.screen_mark(&id).unwrap().map(|(hash, _)| hash);
        assert_eq!(mark, (steps >= 2).then_some(42), "after {steps} steps");
        let session = store.session("s-old").unwrap();
        assert_eq!(session.is_some(), steps >= 3, "after {steps} steps");
        if let Some(session) = session {
            assert_eq!(session.instances, vec!["pty:mv-old".to_string()]);
            let runs = store.hook_runs(Some("s-old"), 10).unwrap();
            assert_eq!(runs[0].output, "hello");
            let trust = store
                .trusted(std::path::Path::new("/tmp/.mahavishnu.toml"))
                .unwrap()
                .unwrap();
            assert_eq!(trust.hash, "abc");
            assert_eq!(
                trust.content.as_deref(),
                (steps >= 4).then_some("trusted text")
            );
        }
        let input = store.input_mark(&id).unwrap();
        assert_eq!(input.as_deref(), (steps >= 5).then_some("before"));
        // What the old layout lacked is made, and works.
        store.set_input_mark(&id, "after").unwrap();
        let new = SessionRecord::active("s-new", std::path::Path::new("/tmp"), None);
        assert!(store.start_session(&new).unwrap());
        drop(store);
        // Opened again, no step runs twice and everything is still there.
        let store = Store::open_with(dir.path(), &[MIGRATIONS]).unwrap();
        assert!(store.instance(&id).unwrap().is_some());
        assert!(store.session("s-new").unwrap().is_some());
    }
}

#[test]
fn an_old_database_opened_first_without_the_lifecycle_keeps_its_sessions() {
    for (steps, sessions) in [(2, 0), (5, 1)] {
        let dir = tempfile::tempdir().unwrap();
        old_database(dir.path(), steps);
        // Core's tables move on alone; the lifecycle's are brought along when it opens the store.
        drop(Store::open(dir.path()).unwrap());
        let store = Store::open_with(dir.path(), &[MIGRATIONS]).unwrap();
        assert_eq!(store.sessions(None).unwrap().len(), sessions);
    }
}
