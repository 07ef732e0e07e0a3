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
}

pub fn run(global: &GlobalArgs, command: ConfigCommand) -> Result<ExitCode> {
    match command {
        ConfigCommand::Show => {
            let loaded = context::load_config()?;
            let view = ConfigView {
                config: &loaded.merged,
                origins: &loaded.origins,
                files: &loaded.files,
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
