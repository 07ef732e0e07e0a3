//! `mahavishnu config`.

use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;

use crate::cli::{ConfigCommand, GlobalArgs};
use crate::context;
use crate::output::{self, emit};

#[derive(Serialize)]
struct ConfigView<'a> {
    config: &'a toml::Value,
    origins: &'a std::collections::BTreeMap<String, String>,
    files: &'a [std::path::PathBuf],
    #[serde(skip_serializing_if = "Option::is_none")]
    project_trust: Option<&'a mahavishnu_core::config::ProjectTrust>,
}

pub fn run(global: &GlobalArgs, command: ConfigCommand) -> Result<ExitCode> {
    match command {
        ConfigCommand::Show => {
            let loaded = context::load_config(&context::store(global)?)?;
            if let Some(warning) = loaded.untrusted_warning() {
                eprintln!("warning: {warning}");
            }
            let view = ConfigView {
                config: &loaded.merged,
                origins: &loaded.origins,
                files: &loaded.files,
                project_trust: loaded.project_trust.as_ref(),
            };
            emit(global.output, &view, || {
                let rows: Vec<Vec<String>> = loaded
                    .entries()
                    .into_iter()
                    .map(|(key, value, origin)| vec![key, value, origin])
                    .collect();
                output::table(&["KEY", "VALUE", "FROM"], &rows)
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
