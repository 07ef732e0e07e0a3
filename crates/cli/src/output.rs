//! Rendering results: a table for people, JSON and YAML (the same shapes the MCP tools return).

use std::time::Duration;

use anyhow::Result;
use clap::ValueEnum;
use serde::Serialize;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML, or calls `table` for the table form.
pub fn emit<T: Serialize + ?Sized>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<()> {
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(value)? + "\n",
        OutputFormat::Yaml => serde_yaml::to_string(value)?,
        OutputFormat::Table => table(),
    };
    print!("{text}");
    Ok(())
}

/// Prints a list as the operations return one, `{ key: [...] }` (MCP results are objects), or calls
/// `table` for the table form.
pub fn emit_list<T: Serialize>(
    format: OutputFormat,
    key: &str,
    items: &[T],
    table: impl FnOnce() -> String,
) -> Result<()> {
    emit(format, &serde_json::json!({ key: items }), table)
}

/// Prints what an operation replied: its value as JSON or YAML (exactly what the MCP tool and `/v1`
/// return), or `table` for people.
pub fn emit_reply(
    format: OutputFormat,
    reply: &mahavishnu_api::Reply,
    table: impl FnOnce() -> String,
) -> Result<()> {
    emit(format, &reply.value, table)
}

/// Objects as one YAML stream, a document each (what `kubectl apply -f` reads).
pub fn yaml_documents(objects: &[serde_json::Value]) -> Result<String> {
    let mut text = String::new();
    for object in objects {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(object)?);
    }
    Ok(text)
}

/// Lays out rows in columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A short age: `42s`, `5m`, `3h`, `2d`.
pub fn age(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

/// Progress lines on standard error while a terminal watches; nothing when piped.
pub fn progress() -> mahavishnu_api::Progress {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        mahavishnu_api::Progress::new(|_, _, line| eprintln!("  {line}"))
    } else {
        mahavishnu_api::Progress::default()
    }
}

/// Exit code 1 when the operation did not do all it was asked.
pub fn exit_if(failed: bool) -> std::process::ExitCode {
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// `base` with the fields of `extra` added (both JSON objects).
pub fn with(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    base
}

/// One table row per item of the JSON array `list` (none when it is not an array).
pub fn rows(
    list: &serde_json::Value,
    row: impl FnMut(&serde_json::Value) -> Vec<String>,
) -> Vec<Vec<String>> {
    list.as_array().into_iter().flatten().map(row).collect()
}
