//! `mahavishnu mcp`, `mahavishnu mcp install` and `mahavishnu serve`: thin over the MCP crate.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use mahavishnu_core::{Error, paths};
use mahavishnu_lifecycle::Lifecycle;
use mahavishnu_lifecycle::init::{Client, McpTransport, Scope, install_mcp, mcp_config_path};
use mahavishnu_mcp::HttpOptions;
use mahavishnu_mcp::token::{load_or_create_token, token_path};

use crate::cli::{
    ClientArg, DashboardArgs, GlobalArgs, McpArgs, McpCommand, McpInstallArgs, ScopeArg, ServeArgs,
};
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
    let mut note = None;
    let transport = match &args.http {
        Some(url) => {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(Error::Invalid(format!(
                    "--http `{url}` is not an http(s) URL; e.g. http://127.0.0.1:8677/mcp"
                ))
                .into());
            }
            // On loopback too: `serve` wants its token there as well. The client expands the variable
            // from its own environment, so the token itself never lands in a settings file.
            McpTransport::Http {
                url: url.clone(),
                token_from_env: true,
            }
        }
        None => {
            let program = super::client_program()?;
            note = program.note;
            McpTransport::Stdio {
                command: program.command,
            }
        }
    };
    let path = mcp_config_path(client, scope, &project)?;
    let mut outcome = install_mcp(client, &path, &transport, args.dry_run, args.remove)?;
    if !args.remove {
        outcome.note = note;
    }
    emit(global.output, &outcome, || {
        let mut text = super::settings_change_text(&outcome, args.dry_run);
        if args.http.is_some() && !args.remove {
            text.push_str(
                "the client sends `Authorization: Bearer ${MAHAVISHNU_TOKEN}` from its environment; \
                 start it where the token is set:\n  export MAHAVISHNU_TOKEN=$(mahavishnu serve \
                 --print-token)\n",
            );
        }
        text
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn serve(global: &GlobalArgs, args: ServeArgs) -> Result<ExitCode> {
    let given_token = args
        .token
        .or_else(|| std::env::var("MAHAVISHNU_TOKEN").ok())
        .filter(|token| !token.is_empty());
    let token_file = token_path(&paths::state_dir(global.state_dir.as_deref())?);
    if args.print_token {
        let token = match given_token {
            Some(token) => token,
            None => load_or_create_token(&token_file)?,
        };
        println!("{token}");
        return Ok(ExitCode::SUCCESS);
    }
    // Every tmux target's reads go through one control client, held while this server runs.
    context::hold_tmux_control();
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
    let mut allowed_origins = settings.allowed_origins.clone();
    allowed_origins.extend(args.allowed_origins);
    let token = if args.no_token {
        if !listen.ip().is_loopback() {
            return Err(Error::Invalid(format!(
                "--no-token is for loopback only; on {listen} anyone who can reach the address could \
                 run commands as you. Drop --no-token (a token is made for you) or listen on 127.0.0.1"
            ))
            .into());
        }
        eprintln!(
            "mahavishnu: warning: serving without a token (--no-token): any process on this machine, \
             run by any user, can run commands as you through http://{listen}"
        );
        None
    } else if let Some(token) = given_token {
        Some(token)
    } else {
        let token = load_or_create_token(&token_file)?;
        eprintln!(
            "mahavishnu: clients must send `Authorization: Bearer <token>`; the token is in {} \
             (`mahavishnu serve --print-token` prints it)",
            token_file.display()
        );
        Some(token)
    };
    let options = HttpOptions {
        listen,
        token,
        allowed_hosts,
        allowed_origins,
        announce: Some(mahavishnu_mcp::serve_file::serve_file_path(
            &paths::state_dir(global.state_dir.as_deref())?,
        )),
    };
    // The workflows' schedules, hook events and topics, for as long as the server runs.
    let state_dir = paths::state_dir(global.state_dir.as_deref())?;
    let workflows = tokio::spawn(mahavishnu_api::run_triggers(
        api.clone(),
        Some(crate::bus::provider(&state_dir)),
        std::sync::Arc::new(|line| eprintln!("mahavishnu: {line}")),
    ));
    let served = mahavishnu_mcp::serve(api, options, shutdown_signal()).await;
    workflows.abort();
    served?;
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

/// `mahavishnu dashboard`: makes sure `serve` runs (starting it in the background, logging to the
/// state directory's `serve.log`, when nothing answers), asks it for a one-time login code with the
/// bearer token, and prints the URL that logs one browser in.
pub async fn dashboard(global: &GlobalArgs, args: DashboardArgs) -> Result<ExitCode> {
    let state_dir = paths::state_dir(global.state_dir.as_deref())?;
    let api = context::api(global)?;
    let listen_text = args
        .listen
        .unwrap_or_else(|| api.orchestrator().config().config.serve.listen.clone());
    let listen: SocketAddr = listen_text.parse().map_err(|e| {
        Error::Invalid(format!(
            "--listen `{listen_text}` is not an address like 127.0.0.1:8677 ({e})"
        ))
    })?;
    let token = std::env::var("MAHAVISHNU_TOKEN")
        .ok()
        .filter(|token| !token.is_empty())
        .map_or_else(|| load_or_create_token(&token_path(&state_dir)), Ok)?;
    if healthz(listen).await.is_err() {
        let log_path = state_dir.join("serve.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(format!("cannot open {}", log_path.display()), e))?;
        let program = std::env::current_exe()
            .map_err(|e| Error::io("cannot find the mahavishnu executable", e))?;
        let mut command = std::process::Command::new(program);
        if let Some(dir) = &global.state_dir {
            command.arg("--state-dir").arg(dir);
        }
        use std::os::unix::process::CommandExt;
        command
            .args(["serve", "--listen", &listen.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| Error::io("cannot use the log", e))?,
            )
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("cannot start mahavishnu serve", e))?;
        let started = std::time::Instant::now();
        while healthz(listen).await.is_err() {
            if started.elapsed() > std::time::Duration::from_secs(15) {
                return Err(Error::Failed(format!(
                    "mahavishnu serve did not answer on {listen} within 15 s; its log is {}",
                    log_path.display()
                ))
                .into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        eprintln!(
            "mahavishnu: started serve on {listen} (its log: {})",
            log_path.display()
        );
    }
    let (status, body) =
        crate::serve_relay::request(listen, "POST", "/dashboard/codes", Some(&token), "{}")
            .await
            .map_err(|e| Error::Failed(format!("cannot reach serve on {listen}: {e}")))?;
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(path) = reply["path"].as_str().filter(|_| status == 200) else {
        return Err(Error::Failed(format!(
            "serve on {listen} gave no login code ({status}: {}); is it this user's serve, with the \
             token in {}?",
            reply["error"].as_str().unwrap_or(body.trim()),
            token_path(&state_dir).display()
        ))
        .into());
    };
    let url = format!("http://{listen}{path}");
    println!("{url}");
    eprintln!("mahavishnu: the link logs one browser in, once, within two minutes");
    if args.open {
        let opened = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Err(e) = opened {
            eprintln!("mahavishnu: cannot open a browser ({e}); open the URL above yourself");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether something answers `GET /healthz` on `address` within two seconds.
async fn healthz(address: SocketAddr) -> std::io::Result<()> {
    let asked = crate::serve_relay::request(address, "GET", "/healthz", None, "");
    match tokio::time::timeout(std::time::Duration::from_secs(2), asked).await {
        Ok(Ok((200, _))) => Ok(()),
        Ok(Ok((status, _))) => Err(std::io::Error::other(format!("answered {status}"))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("no answer")),
    }
}
