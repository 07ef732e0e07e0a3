//! A control-mode client (`tmux -C`) held for one tmux server, so that a long-lived process (`serve`)
//! runs its tmux commands without starting a tmux process each time, and learns which sessions print.
//!
//! Commands go through one client, attached to any session of the server with `no-output`,
//! `read-only` and `ignore-size`, so it never draws, types or resizes. tmux answers each command of a
//! line in its own `%begin … %end` (or `%error`) block, and stops a chain at its first error, so a line
//! of N commands is answered by N blocks or by fewer that end in an error. The client needs a session
//! to attach to: with none (no server), or once it died, callers spawn tmux as before, and the next
//! command tries again.
//!
//! tmux sends `%output` only for the panes of the session a control client is attached to, so while
//! anyone listens for changes, one more read-only client watches each session (started when a
//! `%sessions-changed` arrives, ending with its session), and every `%output` becomes a notice naming
//! the session.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, broadcast, oneshot};

/// How long a command may wait for its answer before the client is given up.
const ANSWER_PATIENCE: Duration = Duration::from_secs(5);
/// How long after a failed connection the next command tries again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// How often the watchers are checked against the sessions when no notice says they changed.
const WATCH_SWEEP: Duration = Duration::from_secs(1);

/// What tmux answered: the block's lines, or its error text.
type Answer = Result<String, String>;

/// The control clients running in this process, by socket name.
fn registry() -> &'static Mutex<HashMap<String, Arc<ControlClient>>> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, Arc<ControlClient>>>> = OnceLock::new();
    CLIENTS.get_or_init(Default::default)
}

/// Where a process that holds no control client sends its read-only tmux commands (a running
/// `serve` that holds one); `None` from it means "spawn tmux as usual".
#[async_trait::async_trait]
pub trait CommandRelay: Send + Sync {
    /// Runs `args` on the server `socket`; `None` when the relay cannot answer now.
    async fn run(&self, socket: &str, args: &[String]) -> Option<Answer>;
}

fn relay_slot() -> &'static OnceLock<Arc<dyn CommandRelay>> {
    static RELAY: OnceLock<Arc<dyn CommandRelay>> = OnceLock::new();
    &RELAY
}

/// Sets the relay of this process (once; later calls are ignored).
pub fn set_relay(relay: Arc<dyn CommandRelay>) {
    let _ = relay_slot().set(relay);
}

/// The relay of this process, if one was set.
pub(crate) fn relay() -> Option<Arc<dyn CommandRelay>> {
    relay_slot().get().cloned()
}

/// The control client of `socket` in this process, if one was started.
pub fn running(socket: &str) -> Option<Arc<ControlClient>> {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(socket)
        .cloned()
}

/// The socket names of the servers whose control client this process holds.
pub fn held_sockets() -> Vec<String> {
    let mut sockets: Vec<String> = registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect();
    sockets.sort();
    sockets
}

/// Starts (or returns) this process's control client for the server `tmux -L socket`, run with the
/// tmux executable `program`. It connects on its first command.
pub fn start(program: &str, socket: &str) -> Arc<ControlClient> {
    let mut clients = registry().lock().unwrap_or_else(|e| e.into_inner());
    clients
        .entry(socket.to_string())
        .or_insert_with(|| {
            let (changes, _) = broadcast::channel(4096);
            Arc::new(ControlClient {
                program: mahavishnu_core::paths::find_program(program)
                    .map_or(program.to_string(), |path| {
                        path.to_string_lossy().into_owned()
                    }),
                socket: socket.to_string(),
                connection: tokio::sync::Mutex::new(None),
                last_failure: Mutex::new(None),
                changes,
                sessions_changed: Arc::new(Notify::new()),
                watching: Mutex::new(false),
            })
        })
        .clone()
}

/// Whether `args` may be run for another process: the commands that only read (list, capture, show
/// a format), with no format that runs a shell command (`#(...)`).
pub fn is_read_only(args: &[String]) -> bool {
    const READERS: &[&str] = &[
        "list-panes",
        "list-sessions",
        "display-message",
        "capture-pane",
    ];
    let mut at_command = true;
    for arg in args {
        if arg.contains("#(") {
            return false;
        }
        if at_command && !READERS.contains(&arg.as_str()) {
            return false;
        }
        at_command = arg == ";";
    }
    !args.is_empty() && args.last().is_some_and(|last| last != ";")
}

/// One tmux server's control client.
pub struct ControlClient {
    program: String,
    socket: String,
    connection: tokio::sync::Mutex<Option<Connection>>,
    last_failure: Mutex<Option<Instant>>,
    changes: broadcast::Sender<String>,
    sessions_changed: Arc<Notify>,
    watching: Mutex<bool>,
}

struct Connection {
    stdin: ChildStdin,
    waiting: Arc<Mutex<VecDeque<Waiter>>>,
    alive: Arc<std::sync::atomic::AtomicBool>,
    _child: Child,
}

/// A command line waiting for its blocks: how many are still due, what they said so far.
struct Waiter {
    due: usize,
    text: String,
    reply: oneshot::Sender<Answer>,
}

impl ControlClient {
    /// The socket name of the server.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Runs `args` (commands chained with `;` words) through the control client and returns what
    /// they printed, as a spawned tmux would on stdout; `Some(Err(message))` is tmux's error as it
    /// would say it on stderr. `None`: no control client can serve now (spawn tmux instead).
    pub async fn command(&self, args: &[String]) -> Option<Answer> {
        if args.is_empty() {
            return Some(Ok(String::new()));
        }
        let line = command_line(args);
        let due = args.iter().filter(|arg| *arg == ";").count() + 1;
        let receiver = {
            let mut connection = self.connection.lock().await;
            if connection
                .as_ref()
                .is_some_and(|c| !c.alive.load(std::sync::atomic::Ordering::SeqCst))
            {
                *connection = None;
            }
            if connection.is_none() {
                let recently_failed = self
                    .last_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some_and(|at| at.elapsed() < RETRY_AFTER);
                if recently_failed {
                    return None;
                }
                match self.connect().await {
                    Some(new) => *connection = Some(new),
                    None => {
                        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(Instant::now());
                        return None;
                    }
                }
            }
            let live = connection.as_mut()?;
            let (reply, receiver) = oneshot::channel();
            live.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(Waiter {
                    due,
                    text: String::new(),
                    reply,
                });
            if live.stdin.write_all(line.as_bytes()).await.is_err() {
                live.alive.store(false, std::sync::atomic::Ordering::SeqCst);
                *connection = None;
                return None;
            }
            receiver
        };
        match tokio::time::timeout(ANSWER_PATIENCE, receiver).await {
            Ok(Ok(answer)) => Some(answer),
            _ => {
                // No answer: the client is of no use any more; the next command starts another.
                let mut connection = self.connection.lock().await;
                if let Some(live) = connection.as_ref() {
                    live.alive.store(false, std::sync::atomic::Ordering::SeqCst);
                }
                *connection = None;
                None
            }
        }
    }

    /// Starts a control client attached to any session of the server; `None` when there is none.
    async fn connect(&self) -> Option<Connection> {
        let mut child = self
            .control_command(None, "no-output,read-only,ignore-size")
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = child.stdout.take()?;
        let waiting: Arc<Mutex<VecDeque<Waiter>>> = Arc::default();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (ready, attached) = oneshot::channel();
        tokio::spawn(read_answers(
            BufReader::new(stdout),
            Arc::clone(&waiting),
            Arc::clone(&alive),
            Arc::clone(&self.sessions_changed),
            ready,
        ));
        // The attach is answered first, in a block of its own: a failure (no sessions) ends it.
        match tokio::time::timeout(ANSWER_PATIENCE, attached).await {
            Ok(Ok(true)) => Some(Connection {
                stdin,
                waiting,
                alive,
                _child: child,
            }),
            _ => None,
        }
    }

    fn control_command(&self, session: Option<&str>, flags: &str) -> Command {
        let mut command = Command::new(&self.program);
        command
            .arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            // Never starts a server: one started for nothing would exit at once, and a session being
            // made by someone else at that moment would be told "server exited unexpectedly".
            .arg("-N")
            .arg("-C")
            .arg("attach-session")
            .arg("-f")
            .arg(flags);
        if let Some(session) = session {
            command.arg("-t").arg(format!("={session}"));
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Notices of sessions whose screen changed (by session name), from now on. While anyone
    /// listens, a read-only client watches each session of the server.
    pub fn subscribe_changes(self: &Arc<Self>) -> broadcast::Receiver<String> {
        let receiver = self.changes.subscribe();
        let mut watching = self.watching.lock().unwrap_or_else(|e| e.into_inner());
        if !*watching {
            *watching = true;
            let client = Arc::clone(self);
            tokio::spawn(async move { client.keep_watchers().await });
        }
        receiver
    }

    /// Starts a watcher for each new session and drops those of sessions gone, until no one listens.
    async fn keep_watchers(self: Arc<Self>) {
        let mut watchers: HashMap<String, Child> = HashMap::new();
        loop {
            if self.changes.receiver_count() == 0 {
                let mut watching = self.watching.lock().unwrap_or_else(|e| e.into_inner());
                if self.changes.receiver_count() == 0 {
                    *watching = false;
                    return; // dropping the watchers kills them
                }
            }
            let listed = self
                .command(&[
                    "list-sessions".into(),
                    "-F".into(),
                    "#{session_name}".into(),
                ])
                .await;
            let sessions: Vec<String> = match listed {
                Some(Ok(out)) => out.lines().map(str::to_string).collect(),
                _ => Vec::new(),
            };
            watchers.retain(|name, child| {
                sessions.contains(name) && child.try_wait().ok().flatten().is_none()
            });
            for name in sessions {
                if watchers.contains_key(&name) {
                    continue;
                }
                let Ok(mut child) = self
                    .control_command(Some(&name), "read-only,ignore-size")
                    .spawn()
                else {
                    continue;
                };
                if let Some(stdout) = child.stdout.take() {
                    tokio::spawn(report_output(
                        BufReader::new(stdout),
                        name.clone(),
                        self.changes.clone(),
                    ));
                }
                watchers.insert(name, child);
            }
            let _ = tokio::time::timeout(WATCH_SWEEP, self.sessions_changed.notified()).await;
        }
    }
}

/// Reads the command client's lines: matches blocks to the waiting commands, reports session changes.
async fn read_answers(
    mut stdout: BufReader<tokio::process::ChildStdout>,
    waiting: Arc<Mutex<VecDeque<Waiter>>>,
    alive: Arc<std::sync::atomic::AtomicBool>,
    sessions_changed: Arc<Notify>,
    ready: oneshot::Sender<bool>,
) {
    let mut ready = Some(ready);
    let mut block: Option<(bool, String)> = None; // (ours, text)
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match stdout.read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.strip_suffix('\n').unwrap_or(&line);
        if let Some((ours, text)) = block.as_mut() {
            let end = line.starts_with("%end ");
            let error = line.starts_with("%error ");
            if !end && !error {
                text.push_str(line);
                text.push('\n');
                continue;
            }
            let ours = *ours;
            let text = std::mem::take(text);
            block = None;
            if !ours {
                // The attach itself: it succeeded, or the server had no session.
                if let Some(ready) = ready.take() {
                    let _ = ready.send(end);
                }
                continue;
            }
            let mut queue = waiting.lock().unwrap_or_else(|e| e.into_inner());
            let Some(front) = queue.front_mut() else {
                continue;
            };
            if error {
                let waiter = queue.pop_front();
                if let Some(waiter) = waiter {
                    let _ = waiter.reply.send(Err(text.trim_end().to_string()));
                }
                continue;
            }
            front.text.push_str(&text);
            front.due = front.due.saturating_sub(1);
            if front.due == 0
                && let Some(waiter) = queue.pop_front()
            {
                let _ = waiter.reply.send(Ok(waiter.text));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("%begin ") {
            let ours = rest.split(' ').nth(2) == Some("1");
            block = Some((ours, String::new()));
        } else if line.starts_with("%sessions-changed") || line.starts_with("%session-changed") {
            sessions_changed.notify_one();
        } else if line.starts_with("%exit") {
            break;
        }
    }
    alive.store(false, std::sync::atomic::Ordering::SeqCst);
    if let Some(ready) = ready.take() {
        let _ = ready.send(false);
    }
    // Whoever still waits learns that no answer comes (and spawns tmux instead).
    waiting.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Turns a watcher's `%output` lines into notices naming its session.
async fn report_output(
    mut stdout: BufReader<tokio::process::ChildStdout>,
    session: String,
    changes: broadcast::Sender<String>,
) {
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match stdout.read_until(b'\n', &mut raw).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if raw.starts_with(b"%output ") || raw.starts_with(b"%extended-output ") {
            let _ = changes.send(session.clone());
        } else if raw.starts_with(b"%exit") {
            return;
        }
    }
}

/// `args` as one line of tmux commands: each word double-quoted (tmux reads `\\`, `\"` and `\$` in
/// there), the `;` between commands bare.
fn command_line(args: &[String]) -> String {
    let mut line = String::new();
    for arg in args {
        if !line.is_empty() {
            line.push(' ');
        }
        if arg == ";" {
            line.push(';');
            continue;
        }
        line.push('"');
        for c in arg.chars() {
            match c {
                '\\' | '"' | '$' => {
                    line.push('\\');
                    line.push(c);
                }
                '\n' => line.push_str("\\n"),
                _ => line.push(c),
            }
        }
        line.push('"');
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn only_reading_commands_without_shell_formats_may_be_relayed() {
        assert!(is_read_only(&words("list-panes -a -F #{session_name}")));
        assert!(is_read_only(&words(
            "display-message -p x ; capture-pane -p -t =mv-1:"
        )));
        assert!(!is_read_only(&words("kill-server")));
        assert!(!is_read_only(&words("list-panes ; kill-server")));
        assert!(!is_read_only(&words("display-message -p #(touch_pwned)")));
        assert!(!is_read_only(&words("list-panes ;")));
        assert!(!is_read_only(&[]));
    }

    #[test]
    fn words_are_quoted_for_tmux() {
        let line = command_line(&words("display-message -p a\"b$c\\d ; list-panes"));
        assert_eq!(
            line,
            "\"display-message\" \"-p\" \"a\\\"b\\$c\\\\d\" ; \"list-panes\"\n"
        );
    }
}
