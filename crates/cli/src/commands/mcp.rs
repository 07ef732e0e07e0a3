//! `mahavishnu mcp`, `mahavishnu mcp install` and `mahavishnu serve`: thin over the MCP crate.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use mahavishnu_core::Error;
use mahavishnu_lifecycle::Lifecycle;
use mahavishnu_lifecycle::init::{Client, McpTransport, Scope, install_mcp, mcp_config_path};
use mahavishnu_mcp::HttpOptions;

use crate::cli::{ClientArg, GlobalArgs, McpArgs, McpCommand, McpInstallArgs, ScopeArg, ServeArgs};
use crate::context;
use crate::output::emit;

pub async fn mcp(global: &GlobalArgs, args: McpArgs) -> Result<ExitCode> {
    match args.command {
        None => {
            mahavishnu_mcp::serve_stdio(context::api(global)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(McpCommand::Install(install)) => self::install(global, install),
    }
}

fn install(global: &GlobalArgs, args: McpInstallArgs) -> Result<ExitCode> {
    let dir = match &args.project {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let project = Lifecycle::project_of(&dir)?;
    let client = match args.client {
        ClientArg::Claude => Client::Claude,
        ClientArg::Qwen => Client::Qwen,
    };
    let scope = match args.scope {
        ScopeArg::Project => Scope::Project,
        ScopeArg::User => Scope::User,
    };
    let transport = match &args.http {
        Some(url) => {
            let parsed = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "--http `{url}` is not an http(s) URL; e.g. http://127.0.0.1:8677/mcp"
                    ))
                })?;
            let authority = parsed.split('/').next().unwrap_or("");
            let host = match authority.find(']') {
                Some(end) if authority.starts_with('[') => &authority[..=end],
                _ => authority.split(':').next().unwrap_or(""),
            };
            let loopback = host == "localhost" || host == "[::1]" || host.starts_with("127.");
            McpTransport::Http {
                url: url.clone(),
                token_from_env: !loopback,
            }
        }
        None => {
            let exe = std::env::current_exe().context("cannot find the mahavishnu executable")?;
            McpTransport::Stdio {
                command: exe.to_string_lossy().into_owned(),
            }
        }
    };
    let path = mcp_config_path(client, scope, &project)?;
    let outcome = install_mcp(client, &path, &transport, args.dry_run, args.remove)?;
    emit(global.output, &outcome, || {
        if outcome.changed && args.dry_run {
            format!("would change {}:\n{}", path.display(), outcome.diff)
        } else if outcome.changed {
            let mut text = format!("updated {}", path.display());
            if let Some(backup) = &outcome.backup {
                text.push_str(&format!(" (backup: {})", backup.display()));
            }
            text + "\n"
        } else {
            format!("{} already up to date\n", path.display())
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn serve(global: &GlobalArgs, args: ServeArgs) -> Result<ExitCode> {
    let api = context::api(global)?;
    let settings = &api.orchestrator().config().config.serve;
    let listen_text = args.listen.unwrap_or_else(|| settings.listen.clone());
    let listen: SocketAddr = listen_text.parse().map_err(|e| {
        Error::Invalid(format!(
            "--listen `{listen_text}` is not an address like 127.0.0.1:8677 ({e})"
        ))
    })?;
    let mut allowed_hosts = settings.allowed_hosts.clone();
    allowed_hosts.extend(args.allowed_hosts);
    let options = HttpOptions {
        listen,
        token: args
            .token
            .or_else(|| std::env::var("MAHAVISHNU_TOKEN").ok())
            .filter(|token| !token.is_empty()),
        allowed_hosts,
    };
    mahavishnu_mcp::serve(api, options, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(terminate) => { terminate.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
