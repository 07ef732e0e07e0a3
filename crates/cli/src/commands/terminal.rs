//! `mahavishnu terminal ...` and `mahavishnu instances ...`: the operations every face shares (the
//! `api` crate), called with the arguments the command line gave, their replies printed as tables or,
//! with `--output json`, exactly as the MCP tools and `/v1` return them.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use mahavishnu_api::{Api, Progress, Reply, WorktreeOptions};
use mahavishnu_core::{Error, ExecOutput, Instance, InstanceState, TargetKind, TargetName};
use mahavishnu_orchestrator::{
    CloseOutcome, EachOutcome, LaunchOutcome, LaunchRequest, Orchestrator,
};
use serde_json::{Value, json};

use crate::cli::{
    CloseArgs, ExecArgs, GlobalArgs, InstancesCommand, LaunchArgs, LogsArgs, SendArgs,
    TerminalCommand, WaitArgs,
};
use crate::context;
use crate::output::{self, OutputFormat, emit, emit_reply};

pub async fn run(global: &GlobalArgs, command: TerminalCommand) -> Result<ExitCode> {
    // A launch makes its own orchestrator, with the flags that adjust its target.
    if let TerminalCommand::Launch(args) = command {
        return launch(global, args).await;
    }
    let api = context::api(global)?;
    let format = global.output;
    match command {
        TerminalCommand::Launch(_) => unreachable!("handled above"),
        TerminalCommand::Send(args) => send(&api, format, args).await,
        TerminalCommand::Keys(args) => {
            let reply = call(
                &api,
                "terminal_keys",
                json!({ "id": args.id, "keys": args.keys }),
            )
            .await?;
            emit_reply(format, &reply, String::new)?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Capture(args) => {
            let arguments = json!({
                "id": args.id,
                "lines": args.lines,
                "scrollback": args.scrollback,
                "ansi": args.ansi,
                "full": args.full,
            });
            let reply = call(&api, "terminal_capture", arguments).await?;
            emit_reply(format, &reply, || text_of(&reply.value))?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Wait(args) => wait(&api, format, args).await,
        TerminalCommand::List(args) => {
            list(&api, format, args.project, args.all, args.target).await
        }
        TerminalCommand::Show(args) => show(&api, format, &args.id).await,
        TerminalCommand::Exec(args) => exec(&api, format, args).await,
        TerminalCommand::Attach(args) => attach(api.orchestrator(), &args.id).await,
        TerminalCommand::Close(args) => close(&api, format, args).await,
        TerminalCommand::Logs(args) => logs(&api, format, args).await,
        TerminalCommand::Resize(args) => {
            let arguments = json!({ "id": args.id, "rows": args.rows, "cols": args.cols });
            let reply = call(&api, "terminal_resize", arguments).await?;
            emit_reply(format, &reply, || format!("{}\n", reply.summary))?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Pause(args) => {
            let reply = call(&api, "terminal_pause", json!({ "id": args.id })).await?;
            let paused = &reply.value;
            emit_reply(format, &reply, || {
                format!(
                    "paused {}; its work is on branch {}\n",
                    paused["id"].as_str().unwrap_or_default(),
                    paused["branch"].as_str().unwrap_or_default()
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Resume(args) => {
            let reply = call(&api, "terminal_resume", json!({ "id": args.id })).await?;
            relaunched(format, &reply)
        }
        TerminalCommand::Repair(args) => {
            let reply = call(&api, "terminal_repair", json!({ "id": args.id })).await?;
            relaunched(format, &reply)
        }
        TerminalCommand::Merge(args) => {
            let arguments = json!({ "id": args.id, "into": args.into, "squash": args.squash });
            let reply = call(&api, "terminal_merge", arguments).await?;
            let merged = &reply.value;
            emit_reply(format, &reply, || {
                let field = |key: &str| merged[key].as_str().unwrap_or_default().to_string();
                format!(
                    "merged {} into {} ({})\n",
                    field("branch"),
                    field("into"),
                    field("commit")
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Diff(args) => {
            let reply = call(
                &api,
                "terminal_diff",
                json!({ "id": args.id, "stat": args.stat }),
            )
            .await?;
            let diff = reply.value["diff"].as_str().unwrap_or_default().to_string();
            emit_reply(format, &reply, || {
                if diff.is_empty() {
                    String::new()
                } else {
                    format!("{diff}\n")
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Recover => {
            let reply = call(&api, "terminal_recover", json!({})).await?;
            let adopted = instances_of(&reply.value)?;
            emit_reply(format, &reply, || instance_table(&adopted))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `instances ...`: the same operations, for instances of any target.
pub async fn instances(global: &GlobalArgs, command: InstancesCommand) -> Result<ExitCode> {
    if let InstancesCommand::Launch(args) = command {
        return launch(global, args).await;
    }
    let api = context::api(global)?;
    let format = global.output;
    match command {
        InstancesCommand::Launch(_) => unreachable!("handled above"),
        InstancesCommand::Exec(args) => exec(&api, format, args).await,
        InstancesCommand::Status(args) => show(&api, format, &args.id).await,
        InstancesCommand::List(args) => {
            list(&api, format, args.project, args.all, args.target).await
        }
        InstancesCommand::Stop(args) => close(&api, format, args).await,
        InstancesCommand::Logs(args) => logs(&api, format, args).await,
    }
}

/// Runs an operation as the MCP tools and `/v1` do; its reply's value is what `--output json` prints.
async fn call(api: &Api, operation: &str, arguments: Value) -> Result<Reply> {
    Ok(api.call(operation, arguments, Progress::default()).await?)
}

/// The instances of a reply (`{"instances": [...]}`), for the table.
fn instances_of(value: &Value) -> Result<Vec<Instance>> {
    Ok(serde_json::from_value(value["instances"].clone())?)
}

/// The `text` of a reply (a screen, a log).
fn text_of(value: &Value) -> String {
    value["text"].as_str().unwrap_or_default().to_string()
}

/// `send ID TEXT`, or `send --all TEXT` to every matching live session at once.
async fn send(api: &Api, format: OutputFormat, args: SendArgs) -> Result<ExitCode> {
    let (id, text) = match (args.every.all, args.text) {
        (false, Some(text)) => (Some(args.id), text),
        (true, None) => (None, args.id),
        (false, None) => bail!(Error::Invalid(
            "give the session id and the text: `terminal send ID TEXT` (or `--all TEXT`)".into()
        )),
        (true, _) => bail!(Error::Invalid(
            "with --all give only the text: `terminal send --all TEXT`".into()
        )),
    };
    let enter = !args.no_enter;
    let Some(id) = id else {
        let arguments = json!({
            "text": text,
            "enter": enter,
            "project": args.every.project,
            "profile": args.every.profile,
        });
        let reply = call(api, "terminal_broadcast", arguments).await?;
        return each_outcome(format, &reply, "sent", "sent to", "not sent to");
    };
    let reply = call(
        api,
        "terminal_send",
        json!({ "id": id, "text": text, "enter": enter }),
    )
    .await?;
    emit_reply(format, &reply, String::new)?;
    Ok(ExitCode::SUCCESS)
}

/// `wait ID ...`, or `wait --all ...` until every matching live session meets the condition.
async fn wait(api: &Api, format: OutputFormat, args: WaitArgs) -> Result<ExitCode> {
    let arguments = json!({
        "id": args.id,
        "pattern": args.pattern,
        "anywhere": args.anywhere,
        "idle_ms": args.idle.map(|idle| idle.as_millis() as u64),
        "timeout": args.timeout.as_secs_f64(),
        "all": args.every.all,
        "project": args.every.project,
        "profile": args.every.profile,
    });
    let reply = call(api, "terminal_wait", arguments).await?;
    if args.every.all {
        return each_outcome(format, &reply, "waited", "ready", "not ready");
    }
    let outcome = &reply.value;
    emit_reply(format, &reply, || {
        match (outcome["matched"].as_str(), outcome["question"].as_str()) {
            (Some(text), _) => format!("{text}\n"),
            (None, Some(question)) => format!("waiting on a question: {question}\n"),
            (None, None) => String::new(),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Prints one line per instance of a broadcast or a wait for many (the reply's `key`); fails when
/// any failed.
fn each_outcome(
    format: OutputFormat,
    reply: &Reply,
    key: &str,
    done: &str,
    failed: &str,
) -> Result<ExitCode> {
    let outcomes: Vec<EachOutcome> = serde_json::from_value(reply.value[key].clone())?;
    emit_reply(format, reply, || {
        if outcomes.is_empty() {
            return "no live sessions match\n".into();
        }
        outcomes
            .iter()
            .map(|outcome| match &outcome.error {
                None => format!("{done} {}\n", outcome.id),
                Some(error) => format!("{failed} {}: {error}\n", outcome.id),
            })
            .collect()
    })?;
    let failures = outcomes.iter().filter(|outcome| !outcome.ok).count();
    if failures > 0 {
        bail!(Error::Failed(format!(
            "{failures} of {} sessions failed",
            outcomes.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

async fn launch(global: &GlobalArgs, args: LaunchArgs) -> Result<ExitCode> {
    let (namespace, context) = (args.namespace.clone(), args.context.clone());
    // `--namespace` and `--context` adjust the Kubernetes target the sessions go to.
    let adjusted = args
        .target
        .clone()
        .unwrap_or_else(|| TargetName::builtin(TargetKind::Kubernetes));
    let orchestrator = context::orchestrator_with(global, |config| {
        if let Some(target) = config.config.targets.0.get_mut(adjusted.as_str()) {
            if namespace.is_some() {
                target.namespace = namespace;
            }
            if context.is_some() {
                target.context = context;
            }
        }
    })?;
    let format = global.output;
    if let Some(trust) = &orchestrator.config().project_trust
        && trust
            .ignored
            .contains(&format!("profiles.{}", args.profile))
        && orchestrator
            .config()
            .config
            .profiles
            .contains_key(&args.profile)
    {
        eprintln!(
            "warning: {} redefines profile `{}` but is not trusted, so your own `{}` is used; review it \
             with `mahavishnu trust --show`, then run `mahavishnu trust`",
            trust.file.display(),
            args.profile,
            args.profile
        );
    }
    let request = LaunchRequest {
        profile: args.profile,
        count: args.count,
        target: args.target.clone(),
        cwd: args.cwd,
        env: pairs("--env", &args.env)?,
        name: args.name,
        args: args.args,
        labels: pairs("--label", &args.labels)?,
        image: args.image,
        worktree: None,
    };
    if args.dry_run {
        let plans = orchestrator.plan_launch(&request).await?;
        if format == OutputFormat::Json {
            emit(format, &plans, String::new)?;
        } else {
            // YAML documents, one per instance: what `kubectl apply -f -` takes.
            for plan in &plans {
                print!("---\n{}", serde_yaml::to_string(plan)?);
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let api = context::api_over(orchestrator)?;
    let worktree = args.worktree.then_some(WorktreeOptions {
        from: args.from,
        branch_prefix: args.branch_prefix,
    });
    let outcome = mahavishnu_api::launch_sessions(&api, request, worktree.as_ref()).await?;
    // The same shape as `terminal_launch` returns.
    emit(format, &outcome, || {
        outcome
            .instances
            .iter()
            .map(|instance| format!("{}\n", instance.id))
            .collect()
    })?;
    for error in &outcome.errors {
        eprintln!("error: {error}");
    }
    Ok(if outcome.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn list(
    api: &Api,
    format: OutputFormat,
    project: Option<std::path::PathBuf>,
    all: bool,
    target: Option<TargetName>,
) -> Result<ExitCode> {
    let arguments = json!({ "project": project, "all": all, "target": target });
    let reply = call(api, "terminal_list", arguments).await?;
    let instances = instances_of(&reply.value)?;
    emit_reply(format, &reply, || instance_table(&instances))?;
    Ok(ExitCode::SUCCESS)
}

async fn show(api: &Api, format: OutputFormat, id: &str) -> Result<ExitCode> {
    let reply = call(api, "instance_status", json!({ "id": id })).await?;
    let instance: Instance = serde_json::from_value(reply.value.clone())?;
    emit_reply(format, &reply, || {
        instance_table(std::slice::from_ref(&instance))
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn exec(api: &Api, format: OutputFormat, args: ExecArgs) -> Result<ExitCode> {
    let arguments = json!({
        "id": args.id,
        "command": args.command,
        "timeout": args.timeout.as_secs_f64(),
    });
    let reply = call(api, "terminal_exec", arguments).await?;
    if format != OutputFormat::Table {
        emit_reply(format, &reply, String::new)?;
        return Ok(ExitCode::SUCCESS);
    }
    let output: ExecOutput = serde_json::from_value(reply.value.clone())?;
    std::io::stdout().write_all(output.stdout.as_bytes())?;
    std::io::stderr().write_all(output.stderr.as_bytes())?;
    if output.timed_out {
        eprintln!("error: the command was killed after its timeout");
    }
    let code = output.exit_code.unwrap_or(124);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

async fn close(api: &Api, format: OutputFormat, args: CloseArgs) -> Result<ExitCode> {
    let arguments = json!({
        "ids": args.ids,
        "all": args.every.all,
        "project": args.every.project,
        "profile": args.every.profile,
        "grace": args.grace.map(|grace| grace.as_secs_f64()),
        "prune": args.prune,
        "force": args.force,
        "forget": args.forget,
    });
    let reply = call(api, "terminal_close", arguments).await?;
    let outcomes: Vec<CloseOutcome> = serde_json::from_value(reply.value["closed"].clone())?;
    emit_reply(format, &reply, || {
        outcomes
            .iter()
            .map(|outcome| match &outcome.error {
                None => format!("closed {}\n", outcome.id),
                Some(error) => format!("not closed {}: {error}\n", outcome.id),
            })
            .collect()
    })?;
    Ok(if outcomes.iter().all(|outcome| outcome.closed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints what an instance printed; with `--follow`, keeps printing until it ends.
async fn logs(api: &Api, format: OutputFormat, args: LogsArgs) -> Result<ExitCode> {
    let mut printed = 0;
    loop {
        let reply = call(api, "terminal_logs", json!({ "id": args.id })).await?;
        if format != OutputFormat::Table {
            emit_reply(format, &reply, String::new)?;
            return Ok(ExitCode::SUCCESS);
        }
        let text = text_of(&reply.value);
        if text.len() >= printed {
            let mut stdout = std::io::stdout();
            stdout.write_all(&text.as_bytes()[printed..])?;
            stdout.flush()?;
            printed = text.len();
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        let status = call(api, "instance_status", json!({ "id": args.id })).await?;
        let state: InstanceState = serde_json::from_value(status.value["state"].clone())?;
        if !state.is_live() {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pairs(flag: &str, values: &[String]) -> Result<BTreeMap<String, String>> {
    values
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => {
                Err(Error::Invalid(format!("{flag} `{pair}` is not of the form KEY=VALUE")).into())
            }
        })
        .collect()
}

fn instance_table(instances: &[Instance]) -> String {
    let worktrees = instances.iter().any(|instance| instance.worktree.is_some());
    // Each worktree's status asks git about its files: all at once.
    let branches: Vec<String> = if worktrees {
        std::thread::scope(|scope| {
            let labels: Vec<_> = instances
                .iter()
                .map(|instance| scope.spawn(|| branch_label(instance)))
                .collect();
            labels
                .into_iter()
                .map(|label| label.join().unwrap_or_else(|_| "?".into()))
                .collect()
        })
    } else {
        Vec::new()
    };
    let mut branches = branches.into_iter();
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|instance| {
            let mut row = vec![
                instance.id.to_string(),
                instance.profile.clone(),
                instance.target.to_string(),
                instance.state_label(),
                output::age(instance.created_at.age()),
            ];
            if let Some(branch) = branches.next() {
                row.push(branch);
            }
            row.push(instance.cwd.display().to_string());
            row
        })
        .collect();
    let mut header = vec!["ID", "PROFILE", "TARGET", "STATE", "AGE"];
    if worktrees {
        header.push("BRANCH");
    }
    header.push("CWD");
    output::table(&header, &rows)
}

/// Prints the session that `resume` or `repair` launched again.
fn relaunched(format: OutputFormat, reply: &Reply) -> Result<ExitCode> {
    let outcome: LaunchOutcome = serde_json::from_value(reply.value.clone())?;
    emit_reply(format, reply, || instance_table(&outcome.instances))?;
    if let Some(error) = outcome.errors.first() {
        bail!(Error::Failed(error.clone()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `mahavishnu/mv-1 +3 ↑1 ↓0`: a worktree session's branch, changed files, commits ahead and behind.
fn branch_label(instance: &Instance) -> String {
    let Some(record) = &instance.worktree else {
        return "-".into();
    };
    if instance.state == InstanceState::Paused {
        return format!("{} (paused)", record.branch);
    }
    match mahavishnu_lifecycle::worktree::status(record) {
        Ok(status) => format!(
            "{} +{} ↑{} ↓{}",
            status.branch, status.changed_files, status.ahead, status.behind
        ),
        // A closed session's worktree was removed on purpose (`close --prune`).
        Err(_) if !record.path.exists() && instance.state == InstanceState::Closed => {
            format!("{} (removed)", record.branch)
        }
        Err(_) if !record.path.exists() => format!("{} (worktree missing)", record.branch),
        Err(_) => format!("{} (status unknown)", record.branch),
    }
}

async fn attach(orchestrator: &Orchestrator, text: &str) -> Result<ExitCode> {
    let id = orchestrator.resolve_id(text)?;
    let instance = orchestrator.instance(&id).await?;
    if !instance.state.is_live() {
        bail!(Error::NotLive {
            id: id.to_string(),
            state: instance.state_label(),
            hint: "only a running session can be attached; `capture` shows its last screen".into(),
        });
    }
    let command = orchestrator
        .target(&instance.target)?
        .attach_command(id.native())?;
    let status = std::process::Command::new(&command[0])
        .args(&command[1..])
        .status()
        .with_context(|| format!("cannot run `{}`", command[0]))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
