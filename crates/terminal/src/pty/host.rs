//! The pty host: a small process (a hidden mode of the `mahavishnu` binary) that holds one session, the
//! way dtach and abduco do. It owns the PTY and the program, feeds a vt100 screen with scrollback, and
//! answers on a Unix socket (mode 0600). No central daemon: a crashed host loses only its own session.
//! When the program ends by itself, the host leaves an exit record (code and last screen) and exits.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use mahavishnu_core::{LaunchSpec, ScreenOptions, Timestamp};

use super::protocol::{
    ExitRecord, FRAME_INPUT, FRAME_RESIZE, Request, SessionFiles, create_status, write_status,
};
use mahavishnu_screen::render;

const THREAD_STACK: usize = 128 * 1024;

/// Runs the host for session `name` in `dir` until its program ends or it is stopped. Prints
/// `ready <pid>` (or `error: <reason>`) as its first line on stdout; returns the process exit code.
pub fn run(dir: &Path, name: &str, scrollback: usize) -> i32 {
    let files = SessionFiles::new(dir, name);
    match start(&files, scrollback) {
        Ok(host) => {
            println!("ready {}", host.pid);
            let _ = std::io::stdout().flush();
            detach_stdio();
            serve(host, files)
        }
        Err(message) => {
            println!("error: {message}");
            let _ = std::fs::remove_file(&files.spec);
            1
        }
    }
}

struct Host {
    pid: u32,
    shared: Arc<Shared>,
    listener: UnixListener,
    child: std::process::Child,
}

struct Shared {
    parser: Mutex<vt100::Parser>,
    writer: Mutex<File>,
    master: OwnedFd,
    status: File,
    attached: Mutex<Vec<UnixStream>>,
    watchers: Mutex<Vec<UnixStream>>,
    output_done: (Mutex<bool>, Condvar),
    exited: (Mutex<Option<i32>>, Condvar),
    stopping: AtomicBool,
    pid: u32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn start(files: &SessionFiles, scrollback: usize) -> Result<Host, String> {
    let spec_text = std::fs::read_to_string(&files.spec)
        .map_err(|e| format!("cannot read {}: {e}", files.spec.display()))?;
    let spec: LaunchSpec =
        serde_json::from_str(&spec_text).map_err(|e| format!("bad launch spec: {e}"))?;
    let (program, args) = spec
        .command
        .split_first()
        .ok_or("the launch spec has no command")?;

    let size = nix::pty::Winsize {
        ws_row: spec.rows,
        ws_col: spec.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None)
        .map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
    for fd in [&pty.master, &pty.slave] {
        set_cloexec(fd).map_err(|e| format!("cannot configure the pseudo-terminal: {e}"))?;
    }
    let stdio = |fd: &OwnedFd| {
        fd.try_clone()
            .map(Stdio::from)
            .map_err(|e| format!("cannot duplicate the terminal: {e}"))
    };
    let mut command = Command::new(program);
    command.args(args).current_dir(&spec.cwd).envs(&spec.env);
    if std::env::var_os("TERM").is_none() && !spec.env.contains_key("TERM") {
        command.env("TERM", "xterm-256color");
    }
    command
        .stdin(stdio(&pty.slave)?)
        .stdout(stdio(&pty.slave)?)
        .stderr(stdio(&pty.slave)?);
    // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start `{program}` in {}: {e}", spec.cwd.display()))?;
    drop(pty.slave);
    let pid = child.id();

    let status = create_status(&files.status, pid, Timestamp::now().0)
        .map_err(|e| format!("cannot write {}: {e}", files.status.display()))?;
    let listener = bind_private(&files.socket)?;
    let writer = File::from(pty.master.try_clone().map_err(|e| e.to_string())?);
    let shared = Arc::new(Shared {
        parser: Mutex::new(vt100::Parser::new(
            nonzero(spec.rows, 24),
            nonzero(spec.cols, 80),
            scrollback,
        )),
        writer: Mutex::new(writer),
        master: pty.master,
        status,
        attached: Mutex::new(Vec::new()),
        watchers: Mutex::new(Vec::new()),
        output_done: (Mutex::new(false), Condvar::new()),
        exited: (Mutex::new(None), Condvar::new()),
        stopping: AtomicBool::new(false),
        pid,
    });
    Ok(Host {
        pid,
        shared,
        listener,
        child,
    })
}

fn nonzero(value: u16, fallback: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(value)
        .or(std::num::NonZeroU16::new(fallback))
        .unwrap_or(std::num::NonZeroU16::MIN)
}

fn set_cloexec(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(drop)
}

fn bind_private(socket: &Path) -> Result<UnixListener, String> {
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            return Err(format!("a session already answers on {}", socket.display()));
        }
        let _ = std::fs::remove_file(socket);
    }
    // SAFETY: umask only changes this process's file-creation mask.
    let previous = unsafe { libc::umask(0o077) };
    let bound = UnixListener::bind(socket);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(previous) };
    let listener = bound.map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", socket.display()))?;
    Ok(listener)
}

fn detach_stdio() {
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        // SAFETY: dup2 onto the standard descriptors of this process, which it owns.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

fn spawn(name: &str, work: impl FnOnce() + Send + 'static) {
    let _ = std::thread::Builder::new()
        .name(name.into())
        .stack_size(THREAD_STACK)
        .spawn(work);
}

fn serve(host: Host, files: SessionFiles) -> i32 {
    let Host {
        shared,
        listener,
        mut child,
        ..
    } = host;

    let reader_shared = Arc::clone(&shared);
    spawn("pty-output", move || pump_output(&reader_shared));

    let waiter_shared = Arc::clone(&shared);
    let waiter_files = files.clone();
    spawn("pty-wait", move || {
        let code = child
            .wait()
            .map(mahavishnu_core::process::exit_code)
            .unwrap_or(-1);
        let shared = waiter_shared;
        // Let the last output reach the screen; a background job may keep the terminal open, so not forever.
        let (done, signal) = &shared.output_done;
        let _ = signal.wait_timeout_while(lock(done), Duration::from_millis(300), |done| !*done);
        let (exited, signal) = &shared.exited;
        *lock(exited) = Some(code);
        signal.notify_all();
        if shared.stopping.load(Ordering::SeqCst) {
            return; // the stop request answers and exits
        }
        let mut parser = lock(&shared.parser);
        let record = ExitRecord {
            code,
            screen: render(&mut parser, ScreenOptions::default()),
            screen_ansi: render(
                &mut parser,
                ScreenOptions {
                    scrollback: false,
                    ansi: true,
                },
            ),
            full: render(
                &mut parser,
                ScreenOptions {
                    scrollback: true,
                    ansi: false,
                },
            ),
        };
        if let Ok(bytes) = serde_json::to_vec(&record) {
            let _ = mahavishnu_core::paths::write_private_file(&waiter_files.exit, &bytes);
        }
        let _ = std::fs::remove_file(&waiter_files.socket);
        let _ = std::fs::remove_file(&waiter_files.status);
        std::process::exit(0);
    });

    for stream in listener.incoming().flatten() {
        let shared = Arc::clone(&shared);
        let files = files.clone();
        spawn("pty-client", move || {
            let _ = handle_client(stream, &shared, &files);
        });
    }
    0
}

fn pump_output(shared: &Shared) {
    let mut reader = match shared.master.try_clone() {
        Ok(fd) => File::from(fd),
        Err(_) => return,
    };
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                lock(&shared.parser).process(&buffer[..n]);
                let _ = write_status(&shared.status, shared.pid, Timestamp::now().0);
                let mut attached = lock(&shared.attached);
                attached.retain_mut(|client| client.write_all(&buffer[..n]).is_ok());
                drop(attached);
                notify_watchers(shared);
            }
        }
    }
    let (done, signal) = &shared.output_done;
    *lock(done) = true;
    signal.notify_all();
}

/// Tells every watcher that output came, without ever waiting on one: a full connection already
/// holds a notice, and a closed one is dropped.
fn notify_watchers(shared: &Shared) {
    let mut watchers = lock(&shared.watchers);
    watchers.retain_mut(|watcher| match watcher.write(b"\n") {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    });
}

fn handle_client(stream: UnixStream, shared: &Shared, files: &SessionFiles) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut writer = stream;
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(e) => {
            return reply(
                &mut writer,
                &serde_json::json!({ "error": format!("bad request: {e}") }),
            );
        }
    };
    match request {
        Request::Screen { scrollback, ansi } => {
            let text = render(
                &mut lock(&shared.parser),
                ScreenOptions { scrollback, ansi },
            );
            reply(&mut writer, &serde_json::json!({ "text": text }))
        }
        Request::Send { data } => {
            let written = lock(&shared.writer).write_all(data.as_bytes());
            match written {
                Ok(()) => reply(&mut writer, &serde_json::json!({})),
                Err(e) => reply(
                    &mut writer,
                    &serde_json::json!({ "error": format!("cannot write to the terminal: {e}") }),
                ),
            }
        }
        Request::Stop { grace_ms } => {
            stop_program(shared, Duration::from_millis(grace_ms));
            files.remove();
            let _ = reply(&mut writer, &serde_json::json!({}));
            std::process::exit(0);
        }
        Request::Resize { rows, cols } => {
            resize(shared, rows, cols);
            reply(&mut writer, &serde_json::json!({}))
        }
        Request::Watch => {
            reply(&mut writer, &serde_json::json!({}))?;
            writer.set_nonblocking(true)?;
            lock(&shared.watchers).push(writer);
            Ok(())
        }
        Request::Attach { rows, cols } => {
            resize(shared, rows, cols);
            reply(&mut writer, &serde_json::json!({}))?;
            writer.set_write_timeout(Some(Duration::from_secs(2)))?;
            {
                // Register under the parser lock, so no output falls between the snapshot and the stream.
                let parser = lock(&shared.parser);
                writer.write_all(parser.screen().state_formatted().as_bytes())?;
                lock(&shared.attached).push(writer.try_clone()?);
            }
            reader.get_ref().set_read_timeout(None)?;
            forward_input(&mut reader, shared);
            let peer = writer.as_raw_fd();
            lock(&shared.attached).retain(|client| client.as_raw_fd() != peer);
            Ok(())
        }
    }
}

fn reply(writer: &mut UnixStream, value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line)
}

fn forward_input(reader: &mut impl Read, shared: &Shared) {
    let mut header = [0u8; 5];
    loop {
        if reader.read_exact(&mut header).is_err() {
            return;
        }
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if length > 1 << 20 {
            return;
        }
        let mut payload = vec![0u8; length];
        if reader.read_exact(&mut payload).is_err() {
            return;
        }
        match header[0] {
            FRAME_INPUT => {
                let _ = lock(&shared.writer).write_all(&payload);
            }
            FRAME_RESIZE if payload.len() == 4 => {
                let rows = u16::from_be_bytes([payload[0], payload[1]]);
                let cols = u16::from_be_bytes([payload[2], payload[3]]);
                resize(shared, rows, cols);
            }
            _ => {}
        }
    }
}

fn resize(shared: &Shared, rows: u16, cols: u16) {
    if rows == 0 || cols == 0 {
        return;
    }
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    lock(&shared.parser).set_size(nonzero(rows, 24), nonzero(cols, 80));
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer; the fd is our open master.
    unsafe { libc::ioctl(shared.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
}

fn stop_program(shared: &Shared, grace: Duration) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    shared.stopping.store(true, Ordering::SeqCst);
    let group = Pid::from_raw(shared.pid as i32);
    // What a terminal closing does: hang up the session's process group (and wake stopped jobs).
    let _ = killpg(group, Signal::SIGHUP);
    let _ = killpg(group, Signal::SIGCONT);
    let (exited, signal) = &shared.exited;
    let (guard, _) = signal
        .wait_timeout_while(lock(exited), grace, |exited| exited.is_none())
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if guard.is_none() {
        drop(guard);
        let _ = killpg(group, Signal::SIGKILL);
        let _ = signal.wait_timeout_while(lock(exited), Duration::from_secs(2), |exited| {
            exited.is_none()
        });
    }
}
