//! `repos`, `sweep`, `check` and `workflow`: the catalog, sweeps across it, scorecards, workflows.

use std::process::ExitCode;

use anyhow::Result;
use mahavishnu_api::{Api, Progress, Reply};
use serde_json::{Value, json};

use crate::cli::{
    CheckArgs, GlobalArgs, RepoSelection, ReposCommand, SweepArgs, SweepCommand, WorkflowCommand,
};
use crate::context;
use crate::output::{OutputFormat, emit_reply, exit_if, progress, rows, table, with};

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn selection(select: &RepoSelection) -> Value {
    json!({ "tag": select.tag, "repos": select.repos })
}

pub async fn repos(global: &GlobalArgs, command: ReposCommand) -> Result<ExitCode> {
    let api = context::api(global)?;
    let (operation, arguments) = match &command {
        ReposCommand::Add(args) => (
            "repos_add",
            json!({ "paths": args.paths, "tags": args.tags }),
        ),
        ReposCommand::Scan(args) => (
            "repos_scan",
            json!({ "dir": args.dir, "tags": args.tags, "depth": args.depth }),
        ),
        ReposCommand::List(args) => ("repos_list", json!({ "tag": args.tag, "kind": args.kind })),
        ReposCommand::Remove(args) => ("repos_remove", json!({ "repos": args.repos })),
    };
    let reply = api.call(operation, arguments, Progress::default()).await?;
    emit_reply(global.output, &reply, || match &command {
        ReposCommand::List(_) => repos_table(&reply.value["repos"]),
        ReposCommand::Add(_) | ReposCommand::Scan(_) => {
            let added = repos_table(&reply.value["added"]);
            let mut out = format!("{}\n", reply.summary);
            if reply.value["added"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                out.push_str(&added);
            }
            out
        }
        ReposCommand::Remove(_) => format!("{}\n", reply.summary),
    })?;
    Ok(exit_if(reply.failed))
}

fn repos_table(repos: &Value) -> String {
    if repos.as_array().is_some_and(Vec::is_empty) {
        return "no repositories: add some with `mahavishnu repos add PATH` or `repos scan DIR`\n"
            .into();
    }
    let rows = rows(repos, |repo| {
        let tags: Vec<String> = repo["tags"]
            .as_array()
            .map(|tags| tags.iter().map(text).collect())
            .unwrap_or_default();
        vec![
            text(&repo["name"]),
            text(&repo["kind"]),
            tags.join(","),
            if repo["present"] == true {
                String::new()
            } else {
                "missing".into()
            },
            text(&repo["path"]),
        ]
    });
    table(&["NAME", "KIND", "TAGS", "", "PATH"], &rows)
}

pub async fn sweep(global: &GlobalArgs, args: SweepArgs) -> Result<ExitCode> {
    let api = context::api(global)?;
    let format = global.output;
    match args.command {
        Some(SweepCommand::List(list)) => {
            let reply = api
                .call(
                    "sweep_list",
                    json!({ "limit": list.limit }),
                    Progress::default(),
                )
                .await?;
            emit_reply(format, &reply, || sweeps_table(&reply.value["sweeps"]))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(SweepCommand::Show(show)) => {
            let reply = api
                .call(
                    "sweep_status",
                    json!({ "id": show.id }),
                    Progress::default(),
                )
                .await?;
            emit_reply(format, &reply, || sweep_table(&reply.value, &reply.summary))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(SweepCommand::Rerun(rerun)) => {
            let arguments = json!({ "id": rerun.id, "failed": rerun.failed });
            let reply = api.call("sweep_rerun", arguments, progress()).await?;
            show_sweep(format, &reply)
        }
        Some(SweepCommand::Check(check)) => {
            let arguments = with(selection(&check.select), timing(&check.select));
            run_check(&api, format, arguments, check.changed).await
        }
        None => {
            let run = args.run;
            if run.agent.is_none() && run.command.is_empty() {
                anyhow::bail!(
                    "nothing to run: give a command after `--` (`mahavishnu sweep --tag web -- git status \
                     --short`), or an agent and a prompt (`--agent qwen --prompt '...'`), or a \
                     subcommand (list, show, rerun, check)"
                );
            }
            let arguments = with(
                with(selection(&run.select), timing(&run.select)),
                json!({
                    "command": run.command,
                    "profile": run.agent,
                    "prompt": run.prompt,
                    "worktree": run.worktree,
                    "merge": run.merge,
                    "keep": run.keep,
                    "target": run.target,
                }),
            );
            let reply = api.call("sweep_run", arguments, progress()).await?;
            show_sweep(format, &reply)
        }
    }
}

/// `parallel` and `timeout`, when given.
fn timing(select: &RepoSelection) -> Value {
    let mut out = json!({});
    if let Some(parallel) = select.parallel {
        out["parallel"] = json!(parallel);
    }
    if let Some(timeout) = select.timeout {
        out["timeout"] = json!(timeout.as_secs_f64());
    }
    out
}

fn show_sweep(format: OutputFormat, reply: &Reply) -> Result<ExitCode> {
    emit_reply(format, reply, || sweep_table(&reply.value, &reply.summary))?;
    Ok(exit_if(reply.failed))
}

/// A sweep's results, one row per repository, and its summary.
fn sweep_table(sweep: &Value, summary: &str) -> String {
    let agent = sweep["kind"] == "agent";
    let rows = rows(&sweep["results"], |result| {
        let mut row = vec![
            text(&result["repo"]),
            text(&result["status"]).replace('_', " "),
            text(&result["exit_code"]),
            seconds(&result["duration_ms"]),
        ];
        if agent {
            let diff = &result["detail"]["diff"];
            row.push(if diff.is_object() {
                format!(
                    "{} files +{} -{}",
                    text(&diff["files"]),
                    text(&diff["insertions"]),
                    text(&diff["deletions"])
                )
            } else {
                String::new()
            });
            row.push(text(&result["detail"]["session"]));
        }
        row.push(text(&result["last_line"]));
        row
    });
    let header: &[&str] = if agent {
        &[
            "REPO",
            "STATUS",
            "EXIT",
            "TIME",
            "DIFF",
            "SESSION",
            "LAST LINE",
        ]
    } else {
        &["REPO", "STATUS", "EXIT", "TIME", "LAST LINE"]
    };
    format!("{}{summary}\n", table(header, &rows))
}

/// `12 ms`, `3.4 s`.
fn seconds(ms: &Value) -> String {
    match ms.as_f64() {
        Some(ms) if ms < 1000.0 => format!("{ms:.0} ms"),
        Some(ms) => format!("{:.1} s", ms / 1000.0),
        None => String::new(),
    }
}

fn sweeps_table(sweeps: &Value) -> String {
    let rows = rows(sweeps, |sweep| {
        let what = text(&sweep["what"]);
        let summary = &sweep["summary"];
        vec![
            text(&sweep["id"]),
            text(&sweep["kind"]),
            text(&sweep["state"]),
            text(&sweep["started_at"]),
            format!("{}/{}", text(&summary["ok"]), text(&summary["total"])),
            what.chars().take(60).collect(),
        ]
    });
    table(&["ID", "KIND", "STATE", "STARTED", "OK", "WHAT"], &rows)
}

pub async fn check(global: &GlobalArgs, args: CheckArgs) -> Result<ExitCode> {
    let api = context::api(global)?;
    let path = match args.path {
        Some(path) => path,
        None => std::env::current_dir()?,
    };
    let mut arguments = json!({ "path": path });
    if let Some(timeout) = args.timeout {
        arguments["timeout"] = json!(timeout.as_secs_f64());
    }
    run_check(&api, global.output, arguments, args.changed).await
}

async fn run_check(
    api: &Api,
    format: OutputFormat,
    arguments: Value,
    changed: bool,
) -> Result<ExitCode> {
    let reply = api.call("check_run", arguments, progress()).await?;
    emit_reply(format, &reply, || {
        if changed {
            changes_table(&reply.value["changes"])
        } else {
            scorecards(&reply.value["scorecards"])
        }
    })?;
    Ok(exit_if(reply.failed))
}

/// One scorecard: each check on a row. Several: one row per repository, one column per check.
fn scorecards(cards: &Value) -> String {
    let cards = cards.as_array().map(Vec::as_slice).unwrap_or_default();
    let mark = |status: &Value| match status.as_str() {
        Some("passed") => "pass".to_string(),
        Some("failed") => "FAIL".to_string(),
        Some("timed_out") => "TIME".to_string(),
        Some("skipped") => "skip".to_string(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let checks_of =
        |card: &Value| -> Vec<Value> { card["checks"].as_array().cloned().unwrap_or_default() };
    if let [card] = cards
        && checks_of(card).is_empty()
    {
        return format!(
            "{} ({}): no checks fit it; name its own in [checks] of its .mahavishnu.toml\n",
            text(&card["repo"]),
            text(&card["kind"]),
        );
    }
    if let [card] = cards {
        let rows: Vec<Vec<String>> = checks_of(card)
            .iter()
            .map(|check| {
                vec![
                    text(&check["name"]),
                    mark(&check["status"]),
                    seconds(&check["duration_ms"]),
                    text(&check["last_line"]),
                ]
            })
            .collect();
        let mut out = format!(
            "{} ({}, checks of {})\n{}{}/{} passed\n",
            text(&card["repo"]),
            text(&card["kind"]),
            text(&card["source"]),
            table(&["CHECK", "RESULT", "TIME", "LAST LINE"], &rows),
            text(&card["passed"]),
            text(&card["ran"]),
        );
        if let Some(note) = card["note"].as_str() {
            out.push_str(&format!("note: {note}\n"));
        }
        return out;
    }
    let mut names: Vec<String> = Vec::new();
    for card in cards {
        for check in checks_of(card) {
            let name = text(&check["name"]);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let rows: Vec<Vec<String>> = cards
        .iter()
        .map(|card| {
            let checks = checks_of(card);
            let mut row = vec![text(&card["repo"]), text(&card["kind"])];
            for name in &names {
                row.push(
                    checks
                        .iter()
                        .find(|check| check["name"] == name.as_str())
                        .map(|check| mark(&check["status"]))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            row.push(format!("{}/{}", text(&card["passed"]), text(&card["ran"])));
            row
        })
        .collect();
    let mut header: Vec<&str> = vec!["REPO", "KIND"];
    header.extend(names.iter().map(String::as_str));
    header.push("SCORE");
    table(&header, &rows)
}

fn changes_table(changes: &Value) -> String {
    let changes = changes.as_array().map(Vec::as_slice).unwrap_or_default();
    if changes.is_empty() {
        return "nothing got better or worse since the last check\n".into();
    }
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|change| {
            vec![
                text(&change["repo"]),
                text(&change["check"]),
                text(&change["before"]),
                text(&change["after"]),
                text(&change["direction"]),
            ]
        })
        .collect();
    table(&["REPO", "CHECK", "BEFORE", "AFTER", "CHANGE"], &rows)
}

pub async fn workflow(global: &GlobalArgs, command: WorkflowCommand) -> Result<ExitCode> {
    let api = context::api(global)?;
    match command {
        WorkflowCommand::List => {
            let reply = api
                .call("workflow_list", json!({}), Progress::default())
                .await?;
            emit_reply(global.output, &reply, || {
                workflows_table(&reply.value["workflows"])
            })?;
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Run(args) => {
            let reply = api
                .call("workflow_run", json!({ "name": args.name }), progress())
                .await?;
            emit_reply(global.output, &reply, || format!("{}\n", reply.summary))?;
            Ok(exit_if(reply.failed))
        }
    }
}

fn workflows_table(workflows: &Value) -> String {
    if workflows.as_array().is_some_and(Vec::is_empty) {
        return "no workflows: define them as [workflows.NAME] in your config (see `mahavishnu config show`)\n"
            .into();
    }
    let rows = rows(workflows, |workflow| {
        let mut when = Vec::new();
        if let Some(schedule) = workflow["schedule"].as_str() {
            when.push(format!("schedule {schedule}"));
        }
        if let Some(event) = workflow["on_event"].as_str() {
            when.push(format!("on {event}"));
        }
        if let Some(topic) = workflow["on_topic"].as_str() {
            when.push(format!("topic {topic}"));
        }
        let last = &workflow["last"];
        let last = if last.is_object() {
            format!(
                "{} {} ({})",
                text(&last["started_at"]),
                text(&last["state"]),
                text(&last["summary"])
            )
        } else {
            "never run".into()
        };
        vec![
            text(&workflow["name"]),
            text(&workflow["runs"]),
            if when.is_empty() {
                "by hand".into()
            } else {
                when.join(", ")
            },
            text(&workflow["next_at"]),
            match workflow["problem"].as_str() {
                Some(problem) => format!("problem: {problem}"),
                None => last,
            },
        ]
    });
    table(&["NAME", "RUNS", "WHEN", "NEXT", "LAST"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_scorecards_are_one_table_with_a_column_per_check() {
        let cards = json!([
            {"repo": "a", "kind": "rust", "passed": 2, "ran": 3, "checks": [
                {"name": "fmt", "status": "passed"}, {"name": "clippy", "status": "failed"},
                {"name": "test", "status": "passed"}]},
            {"repo": "b", "kind": "go", "passed": 2, "ran": 2, "checks": [
                {"name": "vet", "status": "passed"}, {"name": "test", "status": "passed"}]},
        ]);
        let out = scorecards(&cards);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("REPO") && lines[0].contains("clippy"),
            "{out}"
        );
        assert!(
            lines[1].contains("FAIL") && lines[1].ends_with("2/3"),
            "{out}"
        );
        assert!(lines[2].contains('-') && lines[2].ends_with("2/2"), "{out}");
    }
}
