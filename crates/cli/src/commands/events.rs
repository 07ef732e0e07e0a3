//! `mahavishnu events [--follow]`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use mahavishnu_core::store::Event;

use crate::cli::{EventsArgs, GlobalArgs};
use crate::context;
use crate::output::{OutputFormat, emit_list};

pub async fn run(global: &GlobalArgs, args: EventsArgs) -> Result<ExitCode> {
    let orchestrator = context::orchestrator(global)?;
    let id = args
        .id
        .as_deref()
        .map(|id| orchestrator.resolve_id(id))
        .transpose()?;
    let newest = orchestrator.store().last_event_seq()?;
    let mut after = (newest - args.limit as i64).max(0);
    let first = orchestrator.events(after, id.as_ref(), args.limit)?;
    if !args.follow {
        emit_list(global.output, "events", &first, || {
            first.iter().map(line).collect()
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut batch = first;
    loop {
        for event in &batch {
            // Following prints one JSON document per line, so that each line can be parsed as it comes.
            let text = match global.output {
                OutputFormat::Json => serde_json::to_string(event)? + "\n",
                OutputFormat::Yaml => format!("---\n{}", serde_yaml::to_string(event)?),
                OutputFormat::Table => line(event),
            };
            print!("{text}");
            after = event.seq;
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        batch = orchestrator.events(after, id.as_ref(), 1000)?;
    }
}

fn line(event: &Event) -> String {
    let id = event.instance.as_deref().unwrap_or("-");
    format!(
        "{:>5}  {}  {id}  {}  {}\n",
        event.seq, event.at, event.kind, event.detail
    )
}
