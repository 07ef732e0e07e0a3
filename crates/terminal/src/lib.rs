//! Terminal targets: sessions on Mahavishnu's private tmux server, and native PTYs each held by a small
//! host process.

mod exec;
mod procfs;
pub mod pty;
pub mod tmux;
pub mod tmux_control;

pub use exec::run_side_command;
pub use pty::PtyTarget;
pub use tmux::TmuxTarget;
