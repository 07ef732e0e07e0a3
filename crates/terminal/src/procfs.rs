//! What Linux's /proc says about a terminal's processes.

/// The process group and the terminal's foreground process group of `pid`.
fn groups(pid: u32) -> Option<(i64, i64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may itself contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(5)?.parse().ok()?))
}

/// Whether a job other than the process groups of `pids` holds the foreground of their terminal; `None`
/// where /proc cannot tell (another OS, or the processes are gone).
pub fn foreground_job(pids: &[u32]) -> Option<bool> {
    let mut own = Vec::new();
    let mut foreground = None;
    for &pid in pids {
        let (pgrp, tpgid) = groups(pid)?;
        own.push(pgrp);
        foreground = Some(tpgid);
    }
    let foreground = foreground.filter(|tpgid| *tpgid > 0)?;
    Some(!own.contains(&foreground))
}

/// The first child process of `pid`.
pub fn first_child(pid: u32) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// The current working directory of `pid`.
pub fn cwd(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}
