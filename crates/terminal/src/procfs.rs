//! What Linux's /proc says about a terminal's processes.

/// Whether a job other than `pid`'s own process group holds the foreground of `pid`'s terminal; `None`
/// where /proc cannot tell (another OS, or the process is gone).
pub fn foreground_job(pid: u32) -> Option<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may itself contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let pgrp: i64 = fields.get(2)?.parse().ok()?;
    let tpgid: i64 = fields.get(5)?.parse().ok()?;
    if tpgid <= 0 {
        return None;
    }
    Some(tpgid != pgrp)
}

/// The current working directory of `pid`.
pub fn cwd(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}
