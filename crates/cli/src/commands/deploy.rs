//! `mahavishnu deploy ...`: thin over the deploy operations; progress on a terminal, quiet when piped.

use std::process::ExitCode;

use anyhow::Result;
use futures::StreamExt;
use mahavishnu_api::Progress;
use serde_json::{Value, json};

use crate::cli::{DeployCommand, DeployPlace, GlobalArgs};
use crate::context;
use crate::output::{self, OutputFormat, exit_if, progress, with};

fn place(place: &DeployPlace) -> Value {
    json!({ "file": place.file, "platform": place.platform, "regions": place.regions })
}

pub async fn run(global: &GlobalArgs, command: DeployCommand) -> Result<ExitCode> {
    let api = context::api(global)?;
    let call = |operation: &'static str, arguments: Value, progress: Progress| {
        let api = api.clone();
        async move { api.call(operation, arguments, progress).await }
    };
    let plain = |reply: &mahavishnu_api::Reply| format!("{}\n", reply.summary);
    match command {
        DeployCommand::Validate(args) => {
            let reply = call(
                "deploy_validate",
                json!({ "file": args.file }),
                Progress::default(),
            )
            .await?;
            output::emit_reply(global.output, &reply, || plain(&reply))?;
            Ok(exit_if(reply.value["ok"] != true))
        }
        DeployCommand::Plan(args) => {
            let arguments = with(
                place(&args.place),
                json!({ "block": args.block, "pipeline": args.pipeline }),
            );
            let reply = call("deploy_plan", arguments, Progress::default()).await?;
            match reply.value["manifests"].as_array() {
                // On Kubernetes, YAML is what would be applied: `kubectl apply -f` reads it.
                Some(manifests) if global.output == OutputFormat::Yaml => {
                    print!("{}", output::yaml_documents(manifests)?)
                }
                _ => output::emit_reply(global.output, &reply, || {
                    plan_table(&reply.value, &reply.summary)
                })?,
            }
            let changes = reply.value["changes"]
                .as_array()
                .is_some_and(|c| !c.is_empty());
            Ok(exit_if(changes))
        }
        DeployCommand::Apply(args) | DeployCommand::Sandcastle(args) => {
            let arguments = with(place(&args.place), json!({ "resume": args.resume }));
            let reply = call("deploy_sandcastle", arguments, progress()).await?;
            applied(global, &reply)
        }
        DeployCommand::Pipeline(args) => part(global, "deploy_pipeline", args).await,
        DeployCommand::Block(args) => part(global, "deploy_block", args).await,
        DeployCommand::Status(args) => {
            let reply = call("deployment_status", place(&args.place), Progress::default()).await?;
            output::emit_reply(global.output, &reply, || status_table(&reply.value))?;
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::History(args) => {
            let arguments = json!({
                "service": args.service, "region": args.region, "limit": args.limit,
                "file": args.file, "platform": args.platform,
            });
            let reply = call("deploy_history", arguments, Progress::default()).await?;
            output::emit_reply(global.output, &reply, || {
                history_table(&reply.value["releases"])
            })?;
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Logs(args) if args.follow => {
            let deployments = context::deployments(global)?;
            let manifest = context::manifest(args.file.as_deref())?;
            let kind = args.platform.as_deref().map(str::parse).transpose()?;
            let (manifest, engine) = deployments.engine(&manifest, kind)?;
            let mut lines = engine
                .logs(
                    &manifest,
                    &args.service,
                    args.revision.as_deref(),
                    args.region.as_deref(),
                    args.tail,
                    true,
                )
                .await?;
            while let Some(line) = lines.next().await {
                let line = line?;
                match global.output {
                    OutputFormat::Table => println!("{line}"),
                    _ => println!("{}", serde_json::to_string(&line)?),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Logs(args) => {
            let arguments = json!({
                "service": args.service, "revision": args.revision, "region": args.region,
                "tail": args.tail, "file": args.file, "platform": args.platform,
            });
            let reply = call("deploy_logs", arguments, Progress::default()).await?;
            output::emit_reply(global.output, &reply, || {
                if reply.summary.is_empty() {
                    String::new()
                } else {
                    format!("{}\n", reply.summary)
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Release(args) => {
            let mut weights = serde_json::Map::new();
            for pair in &args.weights {
                let usage = mahavishnu_core::Error::Invalid;
                let Some((revision, share)) = pair.split_once('=') else {
                    return Err(usage(format!(
                        "`{pair}` is not REV=PERCENT; give --weights REV=90,REV2=10"
                    ))
                    .into());
                };
                let share: u8 = share.trim().parse().map_err(|_| {
                    usage(format!(
                        "`{share}` in `{pair}` is not a percentage from 0 to 100"
                    ))
                })?;
                weights.insert(revision.trim().to_string(), json!(share));
            }
            let arguments = with(
                place(&args.place),
                json!({ "service": args.service, "weights": weights, "to": args.to }),
            );
            let reply = call("traffic_set", arguments, Progress::default()).await?;
            output::emit_reply(global.output, &reply, || plain(&reply))?;
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Rollback(args) => {
            let arguments = with(
                place(&args.place),
                json!({ "service": args.service, "to": args.to }),
            );
            let reply = call("deploy_rollback", arguments, Progress::default()).await?;
            output::emit_reply(global.output, &reply, || plain(&reply))?;
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Tag(args) => {
            let arguments = with(
                place(&args.place),
                json!({ "service": args.service, "revision": args.revision, "tag": args.tag }),
            );
            let reply = call("revision_tag", arguments, Progress::default()).await?;
            output::emit_reply(global.output, &reply, || plain(&reply))?;
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Verify(args) => {
            let reply = call("deploy_verify", place(&args.place), Progress::default()).await?;
            output::emit_reply(global.output, &reply, || verify_table(&reply.value))?;
            Ok(exit_if(reply.value["ok"] != true))
        }
        DeployCommand::Destroy(args) => {
            let arguments = with(
                place(&args.place),
                json!({ "service": args.service, "revision": args.revision }),
            );
            let reply = call("deploy_destroy", arguments, Progress::default()).await?;
            output::emit_reply(global.output, &reply, || plain(&reply))?;
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Recover => {
            let reply = call("deploy_recover", json!({}), Progress::default()).await?;
            output::emit_reply(global.output, &reply, || plain(&reply))?;
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Metrics(args) => {
            let deployments = context::deployments(global)?;
            let manifest = context::manifest(args.file.as_deref())?;
            let (manifest, engine) = deployments.engine(&manifest, None)?;
            let region = match args.region {
                Some(region) => mahavishnu_deploy::Engine::regions(&manifest, &[region])?.remove(0),
                None => manifest.sandcastle.regions[0].clone(),
            };
            let text = engine
                .platform()
                .metrics_text(&mahavishnu_deploy::placement(&manifest, &region))
                .await?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `deploy pipeline NAME` and `deploy block NAME`.
async fn part(
    global: &GlobalArgs,
    operation: &'static str,
    args: crate::cli::DeployPartArgs,
) -> Result<ExitCode> {
    let api = context::api(global)?;
    let arguments = with(
        place(&args.place),
        json!({ "name": args.name, "resume": args.resume }),
    );
    let reply = api.call(operation, arguments, progress()).await?;
    applied(global, &reply)
}

/// Prints what an apply did; one that failed part-way also says so on standard error, and exits 1.
fn applied(global: &GlobalArgs, reply: &mahavishnu_api::Reply) -> Result<ExitCode> {
    output::emit_reply(global.output, reply, || {
        apply_table(&reply.value, &reply.summary)
    })?;
    if reply.failed {
        eprintln!("error: {}", reply.summary);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn weights(value: &Value) -> String {
    let pairs: Vec<String> = value
        .as_array()
        .into_iter()
        .flatten()
        .map(|pair| format!("{} {}", text(&pair[0]), text(&pair[1])))
        .collect();
    if pairs.is_empty() {
        "-".into()
    } else {
        pairs.join(" / ")
    }
}

fn plan_table(plan: &Value, summary: &str) -> String {
    let changes = plan["changes"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    if !changes.is_empty() {
        let rows: Vec<Vec<String>> = changes
            .iter()
            .map(|change| {
                let causes: Vec<String> = change["causes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                vec![
                    text(&change["region"]),
                    text(&change["service"]),
                    text(&change["action"]),
                    change.get("revision").map_or("-".into(), text),
                    causes.join("; "),
                ]
            })
            .collect();
        out.push_str(&output::table(
            &["REGION", "SERVICE", "ACTION", "REVISION", "CAUSE"],
            &rows,
        ));
        let unchanged = plan["unchanged"].as_array().map_or(0, Vec::len);
        out.push_str(&format!(
            "{} to change, {unchanged} unchanged\n",
            changes.len()
        ));
    } else {
        out.push_str(summary.lines().next().unwrap_or_default());
        out.push('\n');
    }
    for note in plan["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!("note: {}\n", text(note)));
    }
    out
}

fn apply_table(report: &Value, summary: &str) -> String {
    let rows: Vec<Vec<String>> = report["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|outcome| {
            vec![
                text(&outcome["region"]),
                text(&outcome["service"]),
                text(&outcome["outcome"]),
                outcome.get("revision").map_or("-".into(), text),
                weights(&outcome["weights"]),
                outcome.get("url").map_or("-".into(), text),
            ]
        })
        .collect();
    let mut out = output::table(
        &["REGION", "SERVICE", "OUTCOME", "REVISION", "TRAFFIC", "URL"],
        &rows,
    );
    if let Some(line) = summary
        .lines()
        .find(|line| line.starts_with("nothing to change"))
    {
        out.push_str(&format!("{line}\n"));
    }
    if let Some(url) = report.get("front_door").and_then(Value::as_str) {
        out.push_str(&format!("front door: {url}\n"));
    }
    out
}

fn status_table(report: &Value) -> String {
    let mut rows = Vec::new();
    for region in report["regions"].as_array().into_iter().flatten() {
        if region["deployed"] != true {
            rows.push(vec![
                text(&region["region"]),
                "(not deployed)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        }
        for service in region["services"].as_array().into_iter().flatten() {
            for revision in service["revisions"].as_array().into_iter().flatten() {
                let metrics = &revision["metrics"];
                let health = match revision["health"].get("reason") {
                    Some(reason) => {
                        format!("{}: {}", text(&revision["health"]["state"]), text(reason))
                    }
                    None => text(&revision["health"]["state"]),
                };
                let restarts: u64 = revision["copies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["restarts"].as_u64())
                    .sum();
                rows.push(vec![
                    text(&region["region"]),
                    text(&service["name"]),
                    text(&revision["name"]),
                    if service["kind"] == "job" {
                        "-".to_string()
                    } else {
                        format!("{} %", text(&revision["weight"]))
                    },
                    health,
                    restarts.to_string(),
                    metrics
                        .get("rps")
                        .and_then(Value::as_f64)
                        .map_or("-".into(), |rps| format!("{rps:.1}")),
                    metrics
                        .get("error_rate")
                        .and_then(Value::as_f64)
                        .map_or("-".into(), |rate| format!("{:.1} %", rate * 100.0)),
                    match (
                        metrics.get("p50_ms").and_then(Value::as_f64),
                        metrics.get("p99_ms").and_then(Value::as_f64),
                    ) {
                        (Some(p50), Some(p99)) => format!("{p50:.1}/{p99:.1} ms"),
                        _ => "-".into(),
                    },
                ]);
            }
            if let Some(url) = service.get("url").and_then(Value::as_str) {
                rows.push(vec![
                    String::new(),
                    String::new(),
                    format!("url {url}"),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
            }
        }
    }
    let mut out = output::table(
        &[
            "REGION", "SERVICE", "REVISION", "TRAFFIC", "HEALTH", "RESTARTS", "RPS", "ERRORS",
            "P50/P99",
        ],
        &rows,
    );
    for region in report["regions"].as_array().into_iter().flatten() {
        if let Some(url) = region.get("metrics_url").and_then(Value::as_str) {
            out.push_str(&format!("metrics of {}: {url} (Prometheus text; bearer token in the supervisor's metrics-token)\n", text(&region["region"])));
        }
    }
    if let Some(door) = report.get("front_door").filter(|door| !door.is_null()) {
        let regions: Vec<String> = door["regions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|region| {
                format!(
                    "{} {}",
                    text(&region["region"]),
                    if region["healthy"] == true {
                        "healthy"
                    } else {
                        "unhealthy"
                    }
                )
            })
            .collect();
        let address = door
            .get("address")
            .and_then(Value::as_str)
            .map_or_else(String::new, |address| format!(" (address {address})"));
        out.push_str(&format!(
            "front door: {}{address} -> {}\n",
            text(&door["url"]),
            regions.join(", ")
        ));
    }
    out
}

fn history_table(releases: &Value) -> String {
    let rows: Vec<Vec<String>> = releases
        .as_array()
        .into_iter()
        .flatten()
        .map(|release| {
            vec![
                text(&release["at"]),
                text(&release["region"]),
                weights(&release["weights"]),
                text(&release["cause"]),
            ]
        })
        .collect();
    output::table(&["AT", "REGION", "TRAFFIC", "CAUSE"], &rows)
}

fn verify_table(report: &Value) -> String {
    let rows: Vec<Vec<String>> = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|check| {
            vec![
                text(&check["region"]),
                text(&check["check"]),
                if check["holds"] == true {
                    "holds".into()
                } else {
                    "FAILS".into()
                },
                text(&check["detail"]),
            ]
        })
        .collect();
    let mut out = output::table(&["REGION", "CHECK", "RESULT", "DETAIL"], &rows);
    let failing = rows.iter().filter(|row| row[2] == "FAILS").count();
    out.push_str(&if failing == 0 {
        format!("every check holds ({})\n", rows.len())
    } else {
        format!("{failing} of {} checks fail\n", rows.len())
    });
    out
}
