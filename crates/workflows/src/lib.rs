//! Workflows across many repositories: the catalog of repositories (`catalog`), sweeps of a command
//! over many of them (`sweep`), quality checks and their scorecards (`check`), and when workflows run
//! (`schedule`). Agent sweeps and triggers compose other operations and live in the `api` crate; the
//! work they fan out, and the records, are here.

pub mod catalog;
pub mod check;
pub mod schedule;
pub mod store;
pub mod sweep;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mahavishnu_core::store::Store;
use mahavishnu_core::{Error, Result};
use serde_json::{Value, json};

pub use catalog::{Catalog, Kind, Repo};
pub use check::{Change, Scorecard};
pub use store::{MIGRATIONS, Outcome, RepoResult, Summary, Sweep, WorkflowRun};
pub use sweep::Progress;

/// How a sweep runs.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// At most this many repositories at once.
    pub parallel: usize,
    /// Each repository's work is stopped after this long.
    pub timeout: Duration,
    /// The workflow that runs the sweep, if one does.
    pub workflow: Option<String>,
}

/// The workflows service: the catalog, the sweeps and their records.
#[derive(Clone)]
pub struct Workflows {
    store: Arc<Store>,
    outputs: PathBuf,
    catalog_file: PathBuf,
}

impl Workflows {
    /// Over `store` (opened with [`MIGRATIONS`]), with the catalog in `catalog_file`; sweep outputs go
    /// to `sweeps/` in the store's directory.
    pub fn new(store: Arc<Store>, catalog_file: PathBuf) -> Workflows {
        let outputs = store
            .path()
            .parent()
            .map_or_else(|| PathBuf::from("sweeps"), |dir| dir.join("sweeps"));
        Workflows {
            store,
            outputs,
            catalog_file,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The catalog, as its file is now.
    pub fn catalog(&self) -> Result<Catalog> {
        Catalog::load(&self.catalog_file)
    }

    /// Where the catalog is kept.
    pub fn catalog_file(&self) -> &Path {
        &self.catalog_file
    }

    /// Runs `command` (a program and its arguments) in each of `repos`.
    pub async fn command_sweep(
        &self,
        repos: Vec<Repo>,
        command: Vec<String>,
        options: &SweepOptions,
        progress: Progress<'_>,
    ) -> Result<Sweep> {
        if command.is_empty() {
            return Err(Error::Invalid(
                "no command given; put it after `--`, e.g. `sweep -- git status --short`".into(),
            ));
        }
        let spec = json!({
            "command": command,
            "parallel": options.parallel,
            "timeout_s": options.timeout.as_secs(),
        });
        let id = self.begin("command", &spec, options.workflow.as_deref())?;
        let command = &command;
        self.fan_out(id, repos, options.parallel, progress, |repo| async move {
            let output = match self.output_file(id, &repo.name, "") {
                Ok(output) => output,
                Err(e) => return self.not_run(repo, e.to_string()),
            };
            let ran = sweep::run(command, &repo.path, options.timeout, &output).await;
            RepoResult {
                repo: repo.name,
                path: repo.path,
                status: ran.status,
                exit_code: ran.exit_code,
                duration_ms: ran.duration.as_millis() as u64,
                last_line: ran.last_line,
                output: Some(output),
                detail: Value::Null,
            }
        })
        .await?;
        self.finish(id)
    }

    /// Runs the checks of each of `repos` and keeps each scorecard as the repository's last;
    /// returns the sweep and what got better or worse since the scorecards before.
    pub async fn check_sweep(
        &self,
        repos: Vec<Repo>,
        options: &SweepOptions,
        progress: Progress<'_>,
    ) -> Result<(Sweep, Vec<Change>)> {
        let names: Vec<String> = repos.iter().map(|repo| repo.name.clone()).collect();
        let before: Vec<(String, Scorecard)> = store::last_checks(&self.store, &names)?
            .into_iter()
            .filter_map(|(repo, _, card)| Some((repo, serde_json::from_value(card).ok()?)))
            .collect();
        let spec = json!({
            "checks": "by kind",
            "parallel": options.parallel,
            "timeout_s": options.timeout.as_secs(),
        });
        let id = self.begin("check", &spec, options.workflow.as_deref())?;
        let results = self
            .fan_out(id, repos, options.parallel, progress, |repo| async move {
                let (checks, source, note) =
                    match check::checks_for(&self.store, &repo.path, repo.kind) {
                        Ok(found) => found,
                        Err(e) => return self.not_run(repo, e.to_string()),
                    };
                let card = check::score(&repo, checks, source, note, options.timeout, |name| {
                    self.check_output(id, &repo.name, name)
                })
                .await;
                let duration_ms = card.checks.iter().map(|c| c.duration_ms).sum();
                RepoResult {
                    status: card.outcome(),
                    exit_code: None,
                    duration_ms,
                    last_line: card.line(),
                    output: None,
                    detail: serde_json::to_value(&card).unwrap_or(Value::Null),
                    repo: repo.name,
                    path: repo.path,
                }
            })
            .await?;
        let mut changes = Vec::new();
        for result in &results {
            let Ok(card) = serde_json::from_value::<Scorecard>(result.detail.clone()) else {
                continue;
            };
            if let Some((_, previous)) = before.iter().find(|(repo, _)| *repo == card.repo) {
                changes.extend(check::changes(previous, &card));
            }
            store::set_last_check(&self.store, &card.repo, &result.detail)?;
        }
        Ok((self.finish(id)?, changes))
    }

    /// Starts the record of a sweep of `kind` (`command`, `check`, `agent`) running `spec`.
    pub fn begin(&self, kind: &str, spec: &Value, workflow: Option<&str>) -> Result<i64> {
        let id = store::begin_sweep(&self.store, kind, spec, workflow)?;
        // In the event stream too, for whoever follows it (`events --follow`, the dashboard).
        self.store.record_event(
            None,
            "sweep",
            json!({ "id": id, "kind": kind, "state": "running", "workflow": workflow }),
        )?;
        Ok(id)
    }

    /// Runs `work` in each of `repos` of sweep `id`, at most `parallel` at a time, recording each
    /// result as it ends; a repository that is not there any more is recorded as missing without
    /// running anything. Returns the results by repository name.
    pub async fn fan_out<F, Fut>(
        &self,
        id: i64,
        repos: Vec<Repo>,
        parallel: usize,
        progress: Progress<'_>,
        work: F,
    ) -> Result<Vec<RepoResult>>
    where
        F: Fn(Repo) -> Fut,
        Fut: std::future::Future<Output = RepoResult>,
    {
        use futures::StreamExt;
        let total = repos.len();
        let work = &work;
        let mut running = futures::stream::iter(repos.into_iter().map(|repo| async move {
            if repo.present {
                work(repo).await
            } else {
                sweep::missing(repo)
            }
        }))
        .buffer_unordered(parallel.max(1));
        let mut results = Vec::with_capacity(total);
        while let Some(result) = running.next().await {
            store::record_result(&self.store, id, &result)?;
            progress(
                results.len() + 1,
                total,
                &format!("{}: {}", result.repo, result.status.name()),
            );
            results.push(result);
        }
        results.sort_by(|a, b| a.repo.cmp(&b.repo));
        Ok(results)
    }

    /// Ends the record of sweep `id`; returns it.
    pub fn finish(&self, id: i64) -> Result<Sweep> {
        store::finish_sweep(&self.store, id)?;
        let sweep = self.sweep(id)?;
        self.store.record_event(
            None,
            "sweep",
            json!({ "id": id, "kind": sweep.kind, "state": "done", "summary": sweep.summary.line() }),
        )?;
        Ok(sweep)
    }

    /// The result of a repository whose work could not start.
    pub fn not_run(&self, repo: Repo, why: String) -> RepoResult {
        RepoResult {
            repo: repo.name,
            path: repo.path,
            status: Outcome::Error,
            exit_code: None,
            duration_ms: 0,
            last_line: why,
            output: None,
            detail: Value::Null,
        }
    }

    /// The file that keeps what `repo` printed in sweep `id` (`suffix` tells a repository's checks
    /// apart).
    pub fn output_file(&self, id: i64, repo: &str, suffix: &str) -> Result<PathBuf> {
        mahavishnu_core::paths::ensure_private_dir(&self.outputs)?;
        sweep::output_file(&self.outputs, id, repo, suffix)
    }

    /// The file that keeps what check `check` of `repo` printed in sweep `id`. A check's name can
    /// come from a repository's file: only a plain name goes into the path.
    pub fn check_output(&self, id: i64, repo: &str, check: &str) -> Result<PathBuf> {
        self.output_file(id, repo, &format!(".{}", catalog::slug(check)))
    }

    /// Sweep `id` with its results.
    pub fn sweep(&self, id: i64) -> Result<Sweep> {
        store::sweep(&self.store, id)?.ok_or_else(|| {
            Error::Invalid(format!(
                "there is no sweep {id}; `mahavishnu sweep list` shows the sweeps there are"
            ))
        })
    }

    /// The newest sweeps, at most `limit`.
    pub fn sweeps(&self, limit: usize) -> Result<Vec<Sweep>> {
        store::sweeps(&self.store, limit)
    }
}
