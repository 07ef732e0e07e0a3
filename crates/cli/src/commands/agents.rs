//! `mahavishnu agents ...`: thin over the agent registry.

use std::process::ExitCode;

use anyhow::Result;
use mahavishnu_agents::write::{NewAgent, export_claude, sync_qwen};
use mahavishnu_agents::{Agent, Registry, Severity, validate};

use crate::cli::{AgentRunArgs, AgentsCommand, CliArg, ExportFormat, GlobalArgs, ScopeArg};
use crate::context;
use crate::output::{self, emit, emit_list};

fn table(agents: &[&Agent]) -> String {
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|agent| {
            vec![
                agent.name.clone(),
                agent.scope.name().to_string(),
                agent.model.clone().unwrap_or_else(|| "-".into()),
                agent
                    .tools
                    .as_ref()
                    .map_or("all".into(), |tools| tools.join(",")),
                agent.description.chars().take(60).collect(),
                agent.path.display().to_string(),
            ]
        })
        .collect();
    output::table(
        &["NAME", "SCOPE", "MODEL", "TOOLS", "DESCRIPTION", "FILE"],
        &rows,
    )
}

/// `agents run`: interactive (a session, the prompt submitted) or `--print` (headless, to completion).
pub async fn run_agent(global: &GlobalArgs, args: AgentRunArgs) -> Result<ExitCode> {
    use mahavishnu_agents::run::{RunRequest, run_interactive, run_print};
    let (cwd, home) = context::places()?;
    let registry = Registry::load(&cwd, home.as_deref());
    let agent = registry.get(&args.name)?;
    let orchestrator = context::orchestrator(global)?;
    let profile = match args.cli {
        CliArg::Qwen => "qwen",
        CliArg::Claude => "claude",
    };
    let timeout = args.timeout;
    let request = RunRequest {
        profile: profile.to_string(),
        prompt: args.prompt,
        target: args.target.clone(),
        cwd: args.cwd,
        wait: args.wait,
        timeout,
        close_on_failure: args.close_on_failure,
    };
    if args.print {
        let printed = run_print(&orchestrator, agent, &request).await?;
        if global.output != output::OutputFormat::Table {
            emit(global.output, &printed, String::new)?;
            return Ok(ExitCode::SUCCESS);
        }
        use std::io::Write;
        std::io::stdout().write_all(printed.stdout.as_bytes())?;
        std::io::stderr().write_all(printed.stderr.as_bytes())?;
        return Ok(ExitCode::from(printed.exit_code.clamp(0, 255) as u8));
    }
    let outcome = run_interactive(&orchestrator, agent, &request).await?;
    emit(global.output, &outcome, || match &outcome.answer {
        Some(answer) => format!("{}\n{answer}", outcome.instance.id),
        None => format!("{}\n", outcome.instance.id),
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn run(global: &GlobalArgs, command: AgentsCommand) -> Result<ExitCode> {
    let (cwd, home) = context::places()?;
    match command {
        AgentsCommand::List(args) => {
            let registry = Registry::load(&cwd, home.as_deref());
            let mut agents: Vec<&Agent> = registry.agents.iter().collect();
            if args.all {
                agents.extend(registry.overridden.iter());
            }
            emit_list(global.output, "agents", &agents, || table(&agents))?;
            for diagnostic in registry
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
            {
                eprintln!("{diagnostic}");
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Show(args) => {
            let registry = Registry::load(&cwd, home.as_deref());
            let agent = registry.get(&args.name)?;
            let shown = mahavishnu_api::AgentDetail::of(agent);
            emit(global.output, &shown, || {
                let mut text = format!(
                    "# {} ({}, {})\n",
                    agent.name,
                    agent.scope.name(),
                    agent.path.display()
                );
                if let Some(overridden) = &agent.overrides {
                    text.push_str(&format!("# overrides {}\n", overridden.display()));
                }
                text.push_str(&format!("---\n{}\n---\n{}", agent.frontmatter, agent.body));
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Validate(args) => {
            let diagnostics = validate(&args.paths, &cwd, home.as_deref());
            let errors = diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            emit_list(global.output, "diagnostics", &diagnostics, || {
                let mut text: String = diagnostics.iter().map(|d| format!("{d}\n")).collect();
                let warnings = diagnostics.len() - errors;
                text.push_str(&format!("{errors} errors, {warnings} warnings\n"));
                text
            })?;
            Ok(if errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AgentsCommand::New(args) => {
            let agent = NewAgent {
                name: args.name,
                description: args.description,
                model: args.model,
                tools: args.tools,
                template: Some(args.template),
            };
            let user_scope = matches!(args.scope, ScopeArg::User);
            let created = mahavishnu_api::create_agent(&cwd, home.as_deref(), user_scope, &agent)?;
            emit(global.output, &created, || {
                format!("wrote {}\n", created.path.display())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Export(args) => {
            let registry = Registry::load(&cwd, home.as_deref());
            match args.format {
                ExportFormat::ClaudeJson => println!(
                    "{}",
                    serde_json::to_string_pretty(&export_claude(&registry))?
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Run(_) => unreachable!("agents run is dispatched to run_agent"),
        AgentsCommand::Sync(_) => {
            let registry = Registry::load(&cwd, home.as_deref());
            let dir = mahavishnu_core::paths::project_of(&cwd).join(".qwen/agents");
            let outcomes = sync_qwen(&registry, &dir)?;
            emit(global.output, &outcomes, || {
                outcomes
                    .iter()
                    .map(|outcome| {
                        let verb = if outcome.written { "wrote" } else { "skipped" };
                        let mut line = format!("{verb} {}", outcome.path.display());
                        if !outcome.unmapped_tools.is_empty() {
                            line.push_str(&format!(
                                " (no Qwen Code tool for: {})",
                                outcome.unmapped_tools.join(", ")
                            ));
                        }
                        if let Some(note) = &outcome.note {
                            line.push_str(&format!("; {note}"));
                        }
                        line + "\n"
                    })
                    .collect()
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
