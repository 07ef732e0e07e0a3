//! The operations every face of Mahavishnu offers: the MCP tools, the HTTP API and the CLI call these
//! same functions, so they take the same parameters, return the same JSON shapes and fail with the same
//! messages.
//!
//! Each operation has a parameter type (its JSON Schema is the MCP tool's input schema, described field
//! by field) and returns a [`Reply`]: a JSON object and a one-line summary for people.

mod agents;
mod deploy;
mod lifecycle;
mod terminal;
mod workflows;
mod worktree;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mahavishnu_core::{Error, Result};
use mahavishnu_deploy::Deployments;
use mahavishnu_lifecycle::{Lifecycle, Worktrees, blocking};
use mahavishnu_orchestrator::Orchestrator;
use mahavishnu_workflows::Workflows;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use agents::{AgentDetail, CreatedAgent, agent_prompt, create_agent};
pub use lifecycle::{CheckpointDiff, Restored, checkpoint_diff_of, restore_checkpoint};
pub use mahavishnu_lifecycle::{Paused, SessionDiff, WorktreeOptions};
pub use terminal::{Capture, CaptureParams, ExecResult, capture_screen};
pub use workflows::{check_workflow, run_triggers, run_workflow, schedule_of};
pub use worktree::{
    launch_in_worktrees, launch_sessions, merge_session, pause_session, repair_session,
    resume_session, session_diff, worktree_of,
};

/// The services the operations run on, and the directories they default to.
#[derive(Clone)]
pub struct Api {
    inner: Arc<Inner>,
    deployments: Option<Arc<Deployments>>,
}

struct Inner {
    orchestrator: Arc<Orchestrator>,
    lifecycle: Lifecycle,
    worktrees: Worktrees,
    workflows: Workflows,
    cwd: PathBuf,
    home: Option<PathBuf>,
}

impl Api {
    /// Operations over `orchestrator`; relative paths and absent projects mean `cwd`.
    pub fn new(orchestrator: Arc<Orchestrator>, cwd: PathBuf, home: Option<PathBuf>) -> Self {
        Api {
            inner: Arc::new(Inner {
                lifecycle: Lifecycle::new(orchestrator.clone()),
                worktrees: Worktrees::new(orchestrator.clone(), cwd.clone(), home.clone()),
                workflows: Workflows::new(
                    orchestrator.shared_store(),
                    mahavishnu_workflows::Catalog::default_path()
                        .unwrap_or_else(|_| PathBuf::from(mahavishnu_workflows::catalog::FILE)),
                ),
                orchestrator,
                cwd,
                home,
            }),
            deployments: None,
        }
    }

    /// The same operations, with deployments over these platforms.
    pub fn with_deployments(self, deployments: Arc<Deployments>) -> Self {
        Api {
            deployments: Some(deployments),
            ..self
        }
    }

    /// The deployments service, when this face has one.
    pub fn deployments(&self) -> Option<&Deployments> {
        self.deployments.as_deref()
    }

    /// The orchestrator.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.inner.orchestrator
    }

    /// The lifecycle service.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    /// The worktree sessions service.
    pub fn worktrees(&self) -> &Worktrees {
        &self.inner.worktrees
    }

    /// The workflows service: the repository catalog, sweeps and checks.
    pub fn workflows(&self) -> &Workflows {
        &self.inner.workflows
    }

    /// The directory relative paths start from.
    pub fn cwd(&self) -> &Path {
        &self.inner.cwd
    }

    /// The user's home directory, where user-level agents live.
    pub fn home(&self) -> Option<&Path> {
        self.inner.home.as_deref()
    }

    /// `path` made absolute against the working directory.
    fn absolute(&self, path: &Path) -> PathBuf {
        self.inner.cwd.join(path)
    }

    /// The project a directory belongs to (the working directory when none is given).
    fn project(&self, dir: Option<&Path>) -> Result<PathBuf> {
        let dir = dir.map_or_else(|| self.inner.cwd.clone(), |dir| self.absolute(dir));
        Lifecycle::project_of(&dir)
    }

    /// Runs the operation called `name` with JSON `arguments`.
    pub async fn call(&self, name: &str, arguments: Value, progress: Progress) -> Result<Reply> {
        let operation = operation(name).ok_or_else(|| unknown_operation(name))?;
        (operation.run)(self.clone(), arguments, progress).await
    }
}

/// What an operation returns: a JSON object (MCP `structuredContent`, the HTTP body, the CLI's
/// `--output json`) and a short summary for people.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The result; always a JSON object.
    pub value: Value,
    /// One or a few lines saying what happened.
    pub summary: String,
    /// The operation ran and did not do all it was asked (an apply that failed part-way): the value
    /// still says what happened. MCP marks the result an error; the CLI exits 1.
    pub failed: bool,
}

impl Reply {
    /// A reply whose value is `value` serialized.
    pub fn new(value: &impl Serialize, summary: impl Into<String>) -> Result<Self> {
        let value = serde_json::to_value(value)
            .map_err(|e| Error::Failed(format!("cannot encode the result: {e}")))?;
        Ok(Reply {
            value,
            summary: summary.into(),
            failed: false,
        })
    }

    /// The same reply, marked as an operation that did not do all it was asked.
    pub fn failed(self) -> Self {
        Reply {
            failed: true,
            ..self
        }
    }

    /// A reply whose value is `{ key: items }`: MCP results are objects, so a list travels under the
    /// name of what it lists.
    pub fn list(key: &str, items: &impl Serialize, summary: impl Into<String>) -> Result<Self> {
        let items = serde_json::to_value(items)
            .map_err(|e| Error::Failed(format!("cannot encode the result: {e}")))?;
        Ok(Reply {
            value: Value::Object(Map::from_iter([(key.to_string(), items)])),
            summary: summary.into(),
            failed: false,
        })
    }
}

/// Where a long operation reports how far it got; the MCP face turns this into progress
/// notifications when the client asked for them.
#[derive(Clone, Default)]
pub struct Progress {
    report: Option<Arc<Report>>,
}

/// `report(done, total, message)`.
type Report = dyn Fn(f64, Option<f64>, String) + Send + Sync;

impl Progress {
    /// Reports to `report(progress, total, message)`.
    pub fn new(report: impl Fn(f64, Option<f64>, String) + Send + Sync + 'static) -> Self {
        Progress {
            report: Some(Arc::new(report)),
        }
    }

    /// Reports that `done` of `total` is done.
    pub fn report(&self, done: f64, total: Option<f64>, message: impl Into<String>) {
        if let Some(report) = &self.report {
            report(done, total, message.into());
        }
    }

    /// Runs `work`, reporting the seconds spent every second (of `limit`, when there is one).
    pub async fn while_running<T>(
        &self,
        what: &str,
        limit: Option<Duration>,
        work: impl Future<Output = T>,
    ) -> T {
        if self.report.is_none() {
            return work.await;
        }
        let started = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.tick().await;
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return done,
                _ = ticks.tick() => {
                    let elapsed = started.elapsed().as_secs_f64();
                    self.report(
                        elapsed.floor(),
                        limit.map(|limit| limit.as_secs_f64().ceil()),
                        format!("{what}: {:.0}s", elapsed),
                    );
                }
            }
        }
    }
}

type Running = Pin<Box<dyn Future<Output = Result<Reply>> + Send>>;

/// One operation: its name (the MCP tool name, the `/v1/` path), what it does, and how to run it.
pub struct Operation {
    /// The tool name.
    pub name: &'static str,
    /// What it does, for the model and for people.
    pub description: &'static str,
    /// Whether it only reads.
    pub read_only: bool,
    /// Whether it may destroy or overwrite what cannot be had back by calling it again (closing
    /// sessions, merging, restoring, pruning, destroying, rolling traffic back).
    pub destructive: bool,
    /// Whether calling it again with the same arguments changes nothing more.
    pub idempotent: bool,
    /// The JSON shape of its result.
    returns: Returns,
    /// Makes the JSON Schema of its arguments; made when first asked for, since a command that runs
    /// one operation needs no schema.
    make_schema: fn() -> Map<String, Value>,
    schema: OnceLock<Arc<Map<String, Value>>>,
    output: OnceLock<Arc<Map<String, Value>>>,
    run: Box<dyn Fn(Api, Value, Progress) -> Running + Send + Sync>,
}

impl Operation {
    /// The JSON Schema of its arguments (the MCP tool's input schema).
    pub fn input_schema(&self) -> Arc<Map<String, Value>> {
        Arc::clone(self.schema.get_or_init(|| Arc::new((self.make_schema)())))
    }

    /// The JSON Schema of its result, [`Reply::value`] (the MCP tool's output schema): always an
    /// object at the root.
    pub fn output_schema(&self) -> Arc<Map<String, Value>> {
        Arc::clone(
            self.output
                .get_or_init(|| Arc::new(self.returns.schema(self.name))),
        )
    }

    /// The same operation, marked destructive.
    fn destructive(self) -> Self {
        Operation {
            destructive: true,
            ..self
        }
    }

    /// The same operation, marked idempotent.
    fn idempotent(self) -> Self {
        Operation {
            idempotent: true,
            ..self
        }
    }

    /// The same operation, returning `returns`.
    fn returns(self, returns: Returns) -> Self {
        Operation { returns, ..self }
    }
}

/// The JSON shape of an operation's result, as little as needed to write its JSON Schema. The result
/// types mostly live in the service crates, which know no JSON Schema; so the shape is written here,
/// field by field at the top, and a test checks real results against it.
#[derive(Clone, Copy, Debug)]
enum Returns {
    /// `{ key: [item, ...] }` ([`Reply::list`]), items of this JSON type.
    List(&'static str, &'static str),
    /// An object with these fields, each of a JSON type (`array:string` for an array of strings,
    /// `integer|null` for either); a `?` after the type marks a field that may be left out. Other
    /// fields may follow.
    Fields(&'static [(&'static str, &'static str)]),
    /// Not declared yet: a test refuses it.
    Undeclared,
}

impl Returns {
    fn schema(self, name: &str) -> Map<String, Value> {
        let mut schema = Map::new();
        schema.insert("type".into(), Value::from("object"));
        let fields: Vec<(&str, Value)> = match self {
            Returns::List(key, item) => vec![(
                key,
                serde_json::json!({ "type": "array", "items": { "type": item } }),
            )],
            Returns::Fields(fields) => fields
                .iter()
                .map(|(field, kind)| (*field, Value::from(*kind)))
                .collect(),
            Returns::Undeclared => Vec::new(),
        };
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (field, kind) in fields {
            let spec = match kind {
                Value::String(kind) => {
                    let optional = kind.ends_with('?');
                    if !optional {
                        required.push(Value::from(field));
                    }
                    let kind = kind.trim_end_matches('?');
                    match kind.split_once(':') {
                        Some(("array", item)) => {
                            serde_json::json!({ "type": "array", "items": { "type": item } })
                        }
                        _ if kind.contains('|') => {
                            serde_json::json!({ "type": kind.split('|').collect::<Vec<_>>() })
                        }
                        _ => serde_json::json!({ "type": kind }),
                    }
                }
                spec => {
                    required.push(Value::from(field));
                    spec
                }
            };
            properties.insert(field.to_string(), spec);
        }
        schema.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            schema.insert("required".into(), Value::Array(required));
        }
        schema.insert(
            "description".into(),
            Value::from(format!("The result of {name}")),
        );
        schema
    }
}

/// The most bytes of text one argument may carry; more is refused with a clear error.
pub const MAX_ARGUMENT_BYTES: usize = 1024 * 1024;

fn define<P, F>(
    name: &'static str,
    read_only: bool,
    description: &'static str,
    run: fn(Api, P, Progress) -> F,
) -> Operation
where
    P: DeserializeOwned + JsonSchema + Send + 'static,
    F: Future<Output = Result<Reply>> + Send + 'static,
{
    Operation {
        name,
        description,
        read_only,
        destructive: false,
        idempotent: read_only,
        returns: Returns::Undeclared,
        make_schema: schema_of::<P>,
        schema: OnceLock::new(),
        output: OnceLock::new(),
        run: Box::new(
            move |api, arguments, progress| match parse::<P>(name, arguments) {
                Ok(params) => Box::pin(run(api, params, progress)),
                Err(error) => Box::pin(std::future::ready(Err(error))),
            },
        ),
    }
}

fn schema_of<P: JsonSchema>() -> Map<String, Value> {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<P>();
    match schema.to_value() {
        Value::Object(mut map) => {
            map.remove("$schema");
            map.remove("title");
            map.entry("properties")
                .or_insert_with(|| Value::Object(Map::new()));
            map
        }
        _ => Map::from_iter([("type".to_string(), Value::from("object"))]),
    }
}

fn parse<P: DeserializeOwned>(name: &str, arguments: Value) -> Result<P> {
    let arguments = match arguments {
        Value::Null => Value::Object(Map::new()),
        other => other,
    };
    if !arguments.is_object() {
        return Err(Error::Invalid(format!(
            "the arguments of `{name}` must be a JSON object; see its input schema"
        )));
    }
    serde_json::from_value(arguments).map_err(|e| {
        Error::Invalid(format!(
            "invalid arguments for `{name}`: {e}; see its input schema"
        ))
    })
}

fn unknown_operation(name: &str) -> Error {
    Error::Invalid(format!(
        "no tool `{name}`; the tools are: {}",
        operations()
            .iter()
            .map(|operation| operation.name)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Every operation, in a stable order.
pub fn operations() -> &'static [Operation] {
    static OPERATIONS: OnceLock<Vec<Operation>> = OnceLock::new();
    OPERATIONS.get_or_init(|| {
        let mut all = terminal::operations();
        all.extend(lifecycle::operations());
        all.extend(agents::operations());
        all.extend(deploy::operations());
        all.extend(workflows::operations());
        all
    })
}

/// The operation called `name`.
pub fn operation(name: &str) -> Option<&'static Operation> {
    operations().iter().find(|operation| operation.name == name)
}

/// A number of seconds, checked to be between 0 and a year; `name` says which argument it was.
pub fn seconds(name: &str, value: f64) -> Result<Duration> {
    if !(0.0..=86_400.0 * 365.0).contains(&value) {
        return Err(Error::Invalid(format!(
            "{name} {value} is not a number of seconds between 0 and a year"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

/// Refuses text longer than [`MAX_ARGUMENT_BYTES`].
fn bounded(name: &str, text: &str) -> Result<()> {
    if text.len() > MAX_ARGUMENT_BYTES {
        return Err(Error::Invalid(format!(
            "{name} is {} bytes; the limit is {} bytes. Send it in parts, or write it to a file",
            text.len(),
            MAX_ARGUMENT_BYTES
        )));
    }
    Ok(())
}

/// Runs blocking work (git, the file system, the store) off the async workers.
fn plural(count: usize, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_an_object_schema_with_described_fields() {
        let names: Vec<&str> = operations().iter().map(|o| o.name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "duplicate names in {names:?}");
        for operation in operations() {
            let schema = operation.input_schema();
            assert_eq!(schema["type"], "object", "{}", operation.name);
            for (field, spec) in schema["properties"].as_object().unwrap() {
                assert!(
                    spec.get("description").is_some(),
                    "{}.{field} has no description: {spec}",
                    operation.name
                );
            }
        }
    }

    #[test]
    fn annotations_say_which_operations_only_read_and_which_destroy() {
        let named = |keep: fn(&Operation) -> bool| -> Vec<&str> {
            let mut names: Vec<&str> = operations()
                .iter()
                .filter(|o| keep(o))
                .map(|o| o.name)
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            named(|o| o.destructive),
            [
                "checkpoint_restore",
                "deploy_destroy",
                "deploy_rollback",
                "instance_stop",
                "instances_gc",
                "session_end",
                "sweep_rerun",
                "sweep_run",
                "terminal_close",
                "terminal_merge",
                "workflow_run",
            ]
        );
        assert_eq!(
            named(|o| o.read_only),
            [
                "agent_get",
                "agents_list",
                "agents_validate",
                "checkpoint_diff",
                "checkpoint_list",
                "deploy_history",
                "deploy_logs",
                "deploy_plan",
                "deploy_validate",
                "deploy_verify",
                "deployment_status",
                "hooks_list",
                "hooks_runs",
                "instance_status",
                "instances_list",
                "repos_list",
                "session_list",
                "session_status",
                "sweep_list",
                "sweep_status",
                "target_show",
                "targets_list",
                "terminal_capture",
                "terminal_diff",
                "terminal_list",
                "terminal_logs",
                "terminal_wait",
                "workflow_list",
            ]
        );
        for operation in operations() {
            assert!(
                !(operation.read_only && operation.destructive),
                "{} cannot both only read and destroy",
                operation.name
            );
            assert!(
                !operation.read_only || operation.idempotent,
                "{} only reads, so it is idempotent",
                operation.name
            );
        }
    }

    #[test]
    fn every_operation_declares_an_object_result() {
        for operation in operations() {
            assert!(
                !matches!(operation.returns, Returns::Undeclared),
                "{} declares no result",
                operation.name
            );
            let schema = operation.output_schema();
            assert_eq!(schema["type"], "object", "{}", operation.name);
            for field in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let field = field.as_str().unwrap();
                assert!(
                    schema["properties"].get(field).is_some(),
                    "{}: {field}",
                    operation.name
                );
            }
        }
        let list = operation("terminal_list").unwrap().output_schema();
        assert_eq!(list["required"], serde_json::json!(["instances"]));
        assert_eq!(list["properties"]["instances"]["type"], "array");
        let capture = operation("terminal_capture").unwrap().output_schema();
        assert_eq!(capture["properties"]["text"]["type"], "string");
        let wait = operation("terminal_wait").unwrap().output_schema();
        assert!(wait.get("required").is_none(), "{wait:?}");
    }

    #[test]
    fn bad_arguments_are_named() {
        let error = parse::<terminal::SendParams>("terminal_send", serde_json::json!({"id": 3}))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("terminal_send"), "{error}");
        assert!(error.contains("invalid type"), "{error}");
        let error = parse::<terminal::SendParams>("terminal_send", serde_json::json!([1]))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("must be a JSON object"), "{error}");
        let error = parse::<terminal::SendParams>(
            "terminal_send",
            serde_json::json!({"id": "tmux:a", "text": "x", "entr": true}),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("unknown field `entr`"), "{error}");
    }
}
