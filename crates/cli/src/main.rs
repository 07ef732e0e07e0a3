//! `mahavishnu`: orchestrates AI coding CLIs and shells across terminal sessions and targets.

mod bus;
mod cli;
#[cfg(feature = "cloudrun")]
mod cloudrun;
mod commands;
mod context;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod output;
mod serve_relay;

use std::process::ExitCode;

use clap::FromArgMatches;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = parse_command_line();
    // The pty host is started by Mahavishnu itself; it runs without an async runtime and stays small.
    if let Command::PtyHost(host) = &cli.command {
        let code = mahavishnu_terminal::pty::host::run(&host.dir, &host.name, host.scrollback);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    // So is a deploy supervisor, which builds the runtime it needs itself.
    if let Command::DeploySupervisor(supervisor) = &cli.command {
        let address = mahavishnu_local::protocol::Address {
            socket: supervisor.socket.clone(),
            dir: supervisor.dir.clone(),
        };
        let code = mahavishnu_local::supervisor::run(address);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    if let Command::PtyAttach(attach) = &cli.command {
        eprintln!(
            "attached to {}; detach with {}",
            attach.id,
            mahavishnu_terminal::pty::DETACH_KEY_NAME
        );
        return match mahavishnu_terminal::pty::attach(&attach.socket, &attach.id) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        };
    }
    // The HTTP server answers many clients at once; every other command is one call.
    let mut builder = if matches!(cli.command, Command::Serve(_)) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C ends the command, and what it started with it: a command's children run in process
    // groups of their own, out of reach of the terminal's interrupt, and are killed when the work
    // that waits for them is dropped. The servers stop in their own way.
    let interruptible = !matches!(cli.command, Command::Serve(_) | Command::Mcp(_));
    let outcome = runtime.block_on(async move {
        if !interruptible {
            return commands::run(cli).await;
        }
        tokio::select! {
            outcome = commands::run(cli) => outcome,
            _ = tokio::signal::ctrl_c() => Ok(ExitCode::from(130)),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // The core's errors say their cause themselves (an I/O error ends with the system's
            // reason), so the chain would say it twice.
            match error.downcast_ref::<mahavishnu_core::Error>() {
                Some(core) if core.to_string() == error.to_string() => eprintln!("error: {core}"),
                _ => eprintln!("error: {error:#}"),
            }
            let usage = error
                .downcast_ref::<mahavishnu_core::Error>()
                .is_some_and(|e| e.is_usage());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// The command line, parsed as `cli::command` describes it (clap's own exit on `--help` or bad usage).
fn parse_command_line() -> Cli {
    let mut matches = cli::command().get_matches();
    Cli::from_arg_matches_mut(&mut matches)
        .unwrap_or_else(|error| error.format(&mut cli::command()).exit())
}
