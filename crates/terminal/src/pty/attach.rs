//! `terminal attach` for pty sessions: puts the user's terminal in raw mode and joins it to the host's
//! terminal until the detach key (Ctrl-]) is pressed or the session ends. The terminal is always restored.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use mahavishnu_core::{Error, Result};
use nix::sys::termios::{self, SetArg};

use super::protocol::{FRAME_INPUT, FRAME_RESIZE, Request};

/// The detach key's byte: Ctrl-] (as in telnet).
const DETACH_KEY: u8 = 0x1d;
/// The detach key, as shown to users.
pub const DETACH_KEY_NAME: &str = "Ctrl-]";

/// Attaches this process's terminal to the session on `socket`; returns when the user detaches or the
/// session ends.
pub fn attach(socket: &Path, id: &str) -> Result<()> {
    let stdin = std::io::stdin();
    let original = termios::tcgetattr(stdin.as_fd()).map_err(|_| {
        Error::Invalid(
            "attach needs a terminal: run it from an interactive shell, not a pipe".into(),
        )
    })?;
    let mut stream = UnixStream::connect(socket).map_err(|_| Error::NotLive {
        id: id.to_string(),
        state: "not running".into(),
        hint: "only a running session can be attached; see `mahavishnu terminal list`".into(),
    })?;
    let (rows, cols) = terminal_size();
    let mut request = serde_json::to_vec(&Request::Attach { rows, cols })
        .map_err(|e| Error::Invalid(e.to_string()))?;
    request.push(b'\n');
    stream
        .write_all(&request)
        .map_err(|e| Error::io("cannot attach", e))?;
    let mut ack = Vec::new();
    let mut byte = [0u8; 1];
    while stream
        .read(&mut byte)
        .map_err(|e| Error::io("cannot attach", e))?
        == 1
        && byte[0] != b'\n'
    {
        ack.push(byte[0]);
    }

    let mut raw = original.clone();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
        .map_err(|e| Error::Invalid(format!("cannot set raw mode: {e}")))?;
    let outcome = pump(stream);
    let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &original);
    print!("\x1b[0m\r\n[detached from {id}]\r\n");
    let _ = std::io::stdout().flush();
    outcome
}

fn pump(stream: UnixStream) -> Result<()> {
    let mut from_host = stream.try_clone().map_err(|e| Error::io("attach", e))?;
    let output = std::thread::spawn(move || {
        let mut stdout = std::io::stdout();
        let mut buffer = [0u8; 16 * 1024];
        while let Ok(n) = from_host.read(&mut buffer) {
            if n == 0 || stdout.write_all(&buffer[..n]).is_err() {
                break;
            }
            let _ = stdout.flush();
        }
    });
    let mut to_host = stream;
    let mut stdin = std::io::stdin();
    let mut buffer = [0u8; 4096];
    let mut last_size = terminal_size();
    loop {
        if output.is_finished() {
            break;
        }
        if !wait_readable(0, 200) {
            let size = terminal_size();
            if size != last_size {
                last_size = size;
                let mut payload = size.0.to_be_bytes().to_vec();
                payload.extend_from_slice(&size.1.to_be_bytes());
                if send_frame(&mut to_host, FRAME_RESIZE, &payload).is_err() {
                    break;
                }
            }
            continue;
        }
        let n = match stdin.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(at) = buffer[..n].iter().position(|&b| b == DETACH_KEY) {
            let _ = send_frame(&mut to_host, FRAME_INPUT, &buffer[..at]);
            break;
        }
        if send_frame(&mut to_host, FRAME_INPUT, &buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to_host.shutdown(std::net::Shutdown::Both);
    let _ = output.join();
    Ok(())
}

fn send_frame(stream: &mut UnixStream, kind: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(payload.len() + 5);
    frame.push(kind);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame)
}

fn wait_readable(fd: i32, timeout_ms: i32) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut poll, 1, timeout_ms) > 0 }
}

fn terminal_size() -> (u16, u16) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into a valid pointer.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_row > 0 {
        (size.ws_row, size.ws_col)
    } else {
        (24, 80)
    }
}
