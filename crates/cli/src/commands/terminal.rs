//! `mahavishnu terminal ...`: thin over the orchestrator.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use mahavishnu_api::{Api, WorktreeOptions};
use mahavishnu_core::{
    Error, ExecOutput, InputPart, Instance, InstanceId, InstanceState, TargetKind, TargetName,
};
use mahavishnu_orchestrator::{
    EachOutcome, LaunchOutcome, LaunchRequest, ListFilter, Orchestrator, WaitCondition,
};

use crate::cli::{
    CloseArgs, ExecArgs, GlobalArgs, InstancesCommand, LaunchArgs, LogsArgs, SendArgs,
    TerminalCommand, WaitArgs,
};
use crate::context;
use crate::output::{self, OutputFormat, emit};

pub async fn run(global: &GlobalArgs, command: TerminalCommand) -> Result<ExitCode> {
    let api = context::api(global)?;
    let orchestrator = api.orchestrator();
    let format = global.output;
    match command {
        TerminalCommand::Launch(args) => launch(global, args).await,
        TerminalCommand::Send(args) => send(orchestrator, format, args).await,
        TerminalCommand::Keys(args) => {
            let id = orchestrator.resolve_id(&args.id)?;
            let keys = args
                .keys
                .iter()
                .map(|key| key.parse().map(InputPart::Key))
                .collect::<Result<Vec<_>, Error>>()?;
            orchestrator.send(&id, &keys).await?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Capture(args) => {
            let params = mahavishnu_api::CaptureParams {
                id: args.id,
                lines: args.lines,
                scrollback: args.scrollback,
                ansi: args.ansi,
                full: args.full,
            };
            let captured = mahavishnu_api::capture_screen(&api, params).await?;
            emit(format, &captured, || captured.text.clone())?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Wait(args) => wait(orchestrator, format, args).await,
        TerminalCommand::List(args) => {
            list(&api, format, args.project, args.all, args.target).await
        }
        TerminalCommand::Show(args) => show(&api, format, &args.id).await,
        TerminalCommand::Exec(args) => exec(&api, format, args).await,
        TerminalCommand::Attach(args) => attach(orchestrator, &args.id).await,
        TerminalCommand::Close(args) => close(&api, format, args).await,
        TerminalCommand::Logs(args) => logs(&api, args).await,
        TerminalCommand::Pause(args) => {
            let paused = mahavishnu_api::pause_session(&api, &args.id).await?;
            emit(format, &paused, || {
                format!(
                    "paused {}; its work is on branch {}\n",
                    paused.id, paused.branch
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Resume(args) => relaunched(
            format,
            mahavishnu_api::resume_session(&api, &args.id).await?,
        ),
        TerminalCommand::Repair(args) => relaunched(
            format,
            mahavishnu_api::repair_session(&api, &args.id).await?,
        ),
        TerminalCommand::Merge(args) => {
            let merged =
                mahavishnu_api::merge_session(&api, &args.id, args.into, args.squash).await?;
            emit(format, &merged, || {
                format!(
                    "merged {} into {} ({})\n",
                    merged.branch, merged.into, merged.commit
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Diff(args) => {
            let diff = mahavishnu_api::session_diff(&api, &args.id, args.stat).await?;
            emit(format, &diff, || {
                if diff.diff.is_empty() {
                    String::new()
                } else {
                    format!("{}\n", diff.diff)
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        TerminalCommand::Recover => {
            let adopted = orchestrator.recover_instances().await?;
            emit(format, &adopted, || instance_table(&adopted))?;
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
        InstancesCommand::Logs(args) => logs(&api, args).await,
    }
}

/// `send ID TEXT`, or `send --all TEXT` to every matching live session at once.
async fn send(
    orchestrator: &Orchestrator,
    format: OutputFormat,
    args: SendArgs,
) -> Result<ExitCode> {
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
    let input = InputPart::line(text, !args.no_enter);
    let Some(id) = id else {
        let ids = orchestrator
            .live_ids(args.every.project, args.every.profile)
            .await?;
        let outcomes = orchestrator.broadcast(&ids, &input).await;
        return each_outcome(format, "sent to", "not sent to", &outcomes);
    };
    let id = orchestrator.resolve_id(&id)?;
    orchestrator.send(&id, &input).await?;
    Ok(ExitCode::SUCCESS)
}

/// `wait ID ...`, or `wait --all ...` until every matching live session meets the condition.
async fn wait(
    orchestrator: &Orchestrator,
    format: OutputFormat,
    args: WaitArgs,
) -> Result<ExitCode> {
    let condition = match (args.pattern, args.idle) {
        (Some(pattern), _) => WaitCondition::pattern(&pattern, args.anywhere)?,
        (None, Some(idle)) => WaitCondition::Idle(idle),
        (None, None) => WaitCondition::Waiting,
    };
    let timeout = args.timeout;
    let Some(id) = args.id else {
        let ids = orchestrator
            .live_ids(args.every.project, args.every.profile)
            .await?;
        let outcomes = orchestrator.wait_all(&ids, &condition, timeout).await;
        return each_outcome(format, "ready", "not ready", &outcomes);
    };
    let id = orchestrator.resolve_id(&id)?;
    let outcome = orchestrator.wait(&id, &condition, timeout).await?;
    emit(format, &outcome, || {
        match (&outcome.matched, &outcome.question) {
            (Some(text), _) => format!("{text}\n"),
            (None, Some(question)) => format!("waiting on a question: {question}\n"),
            (None, None) => String::new(),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Prints one line per instance of a broadcast or a wait for many; fails when any failed.
fn each_outcome(
    format: OutputFormat,
    done: &str,
    failed: &str,
    outcomes: &[EachOutcome],
) -> Result<ExitCode> {
    emit(format, outcomes, || {
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
    let api = Api::new(
        std::sync::Arc::new(orchestrator),
        std::env::current_dir()?,
        std::env::var_os("HOME").map(std::path::PathBuf::from),
    );
    let worktree = args.worktree.then_some(WorktreeOptions {
        from: args.from,
        branch_prefix: args.branch_prefix,
    });
    let outcome = mahavishnu_api::launch_sessions(&api, request, worktree.as_ref()).await?;
    emit(format, &outcome.instances, || {
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
    let filter = ListFilter {
        project,
        all,
        target,
        ..Default::default()
    };
    let instances = api.orchestrator().list_instances(&filter).await?;
    emit(format, &instances, || instance_table(&instances))?;
    Ok(ExitCode::SUCCESS)
}

async fn show(api: &Api, format: OutputFormat, text: &str) -> Result<ExitCode> {
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(text)?;
    let instance = orchestrator.instance(&id).await?;
    emit(format, &instance, || {
        instance_table(std::slice::from_ref(&instance))
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn exec(api: &Api, format: OutputFormat, args: ExecArgs) -> Result<ExitCode> {
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(&args.id)?;
    let output = orchestrator.exec(&id, args.command, args.timeout).await?;
    exec_output(format, &id, &output)
}

async fn close(api: &Api, format: OutputFormat, args: CloseArgs) -> Result<ExitCode> {
    let orchestrator = api.orchestrator();
    let ids: Vec<InstanceId> = if args.every.all {
        orchestrator.open_ids(args.every.project, args.every.profile)?
    } else {
        args.ids
            .iter()
            .map(|id| orchestrator.resolve_id(id))
            .collect::<Result<_, Error>>()?
    };
    let grace = args.grace;
    // With --prune, every worktree is checked before anything is closed.
    let mut worktrees = Vec::new();
    if args.prune {
        for id in &ids {
            if let Some(record) = orchestrator.recorded(id)?.worktree {
                if !args.force
                    && let Some(why) = mahavishnu_lifecycle::worktree::unmerged_work(&record)?
                {
                    bail!(Error::Failed(format!("{id} is not closed: {why}")));
                }
                worktrees.push(record);
            }
        }
    }
    let outcomes = orchestrator.close_instances(&ids, grace).await?;
    for record in &worktrees {
        mahavishnu_lifecycle::worktree::remove(record)?;
    }
    emit(format, &outcomes, || {
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
async fn logs(api: &Api, args: LogsArgs) -> Result<ExitCode> {
    let orchestrator = api.orchestrator();
    let id = orchestrator.resolve_id(&args.id)?;
    let mut printed = 0;
    loop {
        let text = orchestrator.logs(&id).await?;
        if text.len() >= printed {
            let mut stdout = std::io::stdout();
            stdout.write_all(&text.as_bytes()[printed..])?;
            stdout.flush()?;
            printed = text.len();
        }
        if !args.follow || !orchestrator.instance(&id).await?.state.is_live() {
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
fn relaunched(format: OutputFormat, outcome: LaunchOutcome) -> Result<ExitCode> {
    emit(format, &outcome.instances, || {
        instance_table(&outcome.instances)
    })?;
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

fn exec_output(format: OutputFormat, id: &InstanceId, output: &ExecOutput) -> Result<ExitCode> {
    let code = output.exit_code.unwrap_or(124);
    if format != OutputFormat::Table {
        let result = mahavishnu_api::ExecResult {
            id: id.clone(),
            output: output.clone(),
        };
        emit(format, &result, String::new)?;
        return Ok(ExitCode::SUCCESS);
    }
    std::io::stdout().write_all(output.stdout.as_bytes())?;
    std::io::stderr().write_all(output.stderr.as_bytes())?;
    if output.timed_out {
        eprintln!("error: the command was killed after its timeout");
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
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
