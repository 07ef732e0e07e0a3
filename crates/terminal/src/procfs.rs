//! What Linux's /proc says about a terminal's processes. Each file is read with one `read` into a small
//! buffer: `list` reads two of them per session, so this is on a hot path.

use std::io::Read;

fn read_small(path: &str, buffer: &mut [u8]) -> Option<usize> {
    std::fs::File::open(path).ok()?.read(buffer).ok()
}

/// The foreground process group of `pid`'s controlling terminal, from `/proc/<pid>/stat`.
pub fn foreground_group(pid: u32) -> Option<u32> {
    let mut buffer = [0u8; 1024];
    let length = read_small(&format!("/proc/{pid}/stat"), &mut buffer)?;
    let stat = std::str::from_utf8(&buffer[..length]).ok()?;
    // Fields after the command name, which is in parentheses and may itself contain spaces:
    // state, ppid, pgrp, session, tty_nr, tpgid.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let tpgid: i64 = rest.split_ascii_whitespace().nth(5)?.parse().ok()?;
    u32::try_from(tpgid).ok().filter(|tpgid| *tpgid > 0)
}

/// When `pid` started (clock ticks since boot): with the pid, it names one process for good.
pub fn start_time(pid: u32) -> Option<u64> {
    let mut buffer = [0u8; 1024];
    let length = read_small(&format!("/proc/{pid}/stat"), &mut buffer)?;
    let stat = std::str::from_utf8(&buffer[..length]).ok()?;
    // Fields after the command name: state is the 3rd field of the line, starttime the 22nd.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// When `pid` started, as `start_time`, while it still runs: a process that has ended but was not yet
/// reaped (a zombie, whose parent may be an init that reaps only now and then) counts as ended.
pub fn running_since(pid: u32) -> Option<u64> {
    let mut buffer = [0u8; 1024];
    let length = read_small(&format!("/proc/{pid}/stat"), &mut buffer)?;
    let stat = std::str::from_utf8(&buffer[..length]).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split_ascii_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The first child process of `pid`.
pub fn first_child(pid: u32) -> Option<u32> {
    let mut buffer = [0u8; 64];
    let length = read_small(&format!("/proc/{pid}/task/{pid}/children"), &mut buffer)?;
    std::str::from_utf8(&buffer[..length])
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The current working directory of `pid`.
pub fn cwd(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let _ = foreground_group(me);
        assert!(start_time(me).is_some_and(|ticks| ticks > 0));
        assert_eq!(start_time(me), start_time(me));
        assert_eq!(cwd(me), std::env::current_dir().ok());
        assert_eq!(running_since(me), start_time(me));
    }

    #[test]
    fn an_ended_process_not_yet_reaped_is_not_running() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie, as a process whose parent is slow to reap stays.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while running_since(pid).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(start_time(pid).is_some(), "still in the process table");
        assert_eq!(running_since(pid), None);
        child.wait().unwrap();
    }
}
