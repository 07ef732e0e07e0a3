//! One module per command group, each thin over the services.

mod agents;
mod config;
mod deploy;
mod events;
mod hook;
mod lifecycle;
mod mcp;
mod terminal;
mod workflows;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command, TargetsCommand};
use crate::context;
use crate::output;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let global = &cli.global;
    match cli.command {
        Command::Terminal(command) => terminal::run(global, command).await,
        Command::Instances(command) => terminal::instances(global, command).await,
        Command::Targets(args) => {
            let api = context::api(global)?;
            let (operation, arguments) = match args.command {
                None | Some(TargetsCommand::List) => ("targets_list", serde_json::json!({})),
                Some(TargetsCommand::Show { name }) => {
                    ("target_show", serde_json::json!({ "name": name }))
                }
            };
            let reply = api
                .call(operation, arguments, mahavishnu_api::Progress::default())
                .await?;
            output::emit_reply(global.output, &reply, || match operation {
                "targets_list" => target_table(&reply.value["targets"]),
                _ => target_details(&reply.value),
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc(args) => {
            let api = context::api(global)?;
            let arguments = serde_json::json!({ "older_than": args.older_than });
            let reply = api
                .call(
                    "instances_gc",
                    arguments,
                    mahavishnu_api::Progress::default(),
                )
                .await?;
            output::emit_reply(global.output, &reply, || format!("{}\n", reply.summary))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Mcp(args) => mcp::mcp(global, args).await,
        Command::Serve(args) => mcp::serve(global, args).await,
        Command::Dashboard(args) => mcp::dashboard(global, args).await,
        Command::Deploy(command) => deploy::run(global, command).await,
        Command::Repos(command) => workflows::repos(global, command).await,
        Command::Sweep(args) => workflows::sweep(global, args).await,
        Command::Check(args) => workflows::check(global, args).await,
        Command::Workflow(command) => workflows::workflow(global, command).await,
        Command::Config(command) => config::run(global, command),
        Command::Hook => hook::run(global).await,
        Command::HookWorker(args) => hook::worker(global, args).await,
        Command::Session(command) => lifecycle::session(global, command).await,
        Command::Hooks(command) => lifecycle::hooks(global, command).await,
        Command::Trust(args) => lifecycle::trust(global, args),
        Command::Init(args) => lifecycle::init(global, args),
        Command::Checkpoint(args) => lifecycle::checkpoint(global, args),
        Command::Agents(crate::cli::AgentsCommand::Run(args)) => {
            agents::run_agent(global, args).await
        }
        Command::Agents(command) => agents::run(global, command),
        Command::Events(args) => events::run(global, args).await,
        Command::Completions(args) => {
            let mut command = crate::cli::command();
            clap_complete::generate(
                args.shell,
                &mut command,
                "mahavishnu",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(args) => man(args),
        Command::PtyHost(_) | Command::PtyAttach(_) | Command::DeploySupervisor(_) => {
            unreachable!("the pty host and attach are dispatched before the runtime starts")
        }
    }
}

/// How a client's settings should run this program (`mahavishnu` when that is this program on PATH).
fn client_program() -> Result<mahavishnu_lifecycle::init::ProgramName> {
    use anyhow::Context as _;
    let exe = std::env::current_exe().context("cannot find the mahavishnu executable")?;
    let search_path = std::env::var_os("PATH");
    Ok(mahavishnu_lifecycle::init::program_name(
        &exe,
        search_path.as_deref(),
    ))
}

/// What `init` or `mcp install` did to a client's settings file, for people.
fn settings_change_text(
    outcome: &mahavishnu_lifecycle::init::InitOutcome,
    dry_run: bool,
) -> String {
    let path = outcome.path.display();
    let mut text = if outcome.changed && dry_run {
        format!("would change {path}:\n{}", outcome.diff)
    } else if outcome.changed {
        let mut text = format!("updated {path}");
        if let Some(backup) = &outcome.backup {
            text.push_str(&format!(" (backup: {})", backup.display()));
        }
        text + "\n"
    } else {
        format!("{path} already up to date\n")
    };
    if let Some(note) = &outcome.note {
        text.push_str(note);
        text.push('\n');
    }
    text
}

/// Prints the top man page, or writes every page into `--dir`, one per command, so that the pages the
/// top one points to (`mahavishnu-terminal(1)`, ...) exist.
fn man(args: crate::cli::ManArgs) -> Result<ExitCode> {
    use anyhow::Context as _;
    // The `help` subcommand has no page of its own; leaving it out keeps the references all real.
    let command = crate::cli::command().disable_help_subcommand(true);
    let Some(dir) = args.dir else {
        clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "cannot create {}; pick a directory you can write",
            dir.display()
        )
    })?;
    clap_mangen::generate_to(command, &dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    println!("wrote the man pages into {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// The targets as a table: name, kind, where it points, and whether it is ready.
fn target_table(targets: &serde_json::Value) -> String {
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
    let rows: Vec<Vec<String>> = targets
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|target| {
            let ready = if target["ready"] == true {
                "ready"
            } else {
                "not ready"
            };
            vec![
                text(&target["name"]),
                text(&target["kind"]),
                text(&target["location"]),
                ready.to_string(),
                text(&target["detail"]),
            ]
        })
        .collect();
    output::table(&["TARGET", "KIND", "POINTS TO", "STATUS", "DETAIL"], &rows)
}

/// One target, a line per fact, then what it can do.
fn target_details(target: &serde_json::Value) -> String {
    let text = |key: &str| target[key].as_str().unwrap_or_default().to_string();
    let ready = if target["ready"] == true {
        "ready"
    } else {
        "not ready"
    };
    let can: Vec<String> = target["capabilities"]
        .as_object()
        .map(|capabilities| {
            capabilities
                .iter()
                .filter(|(_, yes)| **yes == true)
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    format!(
        "name:       {}\nkind:       {}\npoints to:  {}\nstatus:     {ready}: {}\ncan:        {}\n",
        text("name"),
        text("kind"),
        text("location"),
        text("detail"),
        can.join(", ")
    )
}
