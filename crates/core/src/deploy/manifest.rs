//! The deploy manifest, `mahavishnu.deploy.toml`: the wanted state of a sandcastle. Loading checks all of
//! it and reports every problem at once, each with its file, line and key, before anything is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The manifest's file name, found by walking up from the current directory.
pub const MANIFEST_FILE: &str = "mahavishnu.deploy.toml";

/// The region a sandcastle gets when it names none.
pub const DEFAULT_REGION: &str = "local";

/// The region a sandcastle gets on Kubernetes when it names none: the built-in `kubernetes` target.
pub const KUBERNETES_DEFAULT_REGION: &str = "kubernetes";

/// What a service is.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// Listens on `$PORT`, receives traffic, has a URL.
    #[default]
    Http,
    /// No public port; consumes topics or runs a loop.
    Worker,
    /// Runs to completion (a migration before the services that need it).
    Job,
    /// A backing service Mahavishnu does not run: dependents receive its URL or DSN.
    External,
}

impl ServiceKind {
    /// The kind as the manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Http => "http",
            ServiceKind::Worker => "worker",
            ServiceKind::Job => "job",
            ServiceKind::External => "external",
        }
    }
}

/// Where a service may be called from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ingress {
    /// From anywhere (and through the front door).
    #[default]
    All,
    /// From the sandcastle's own services only.
    Internal,
    /// From inside and through the cloud load balancer.
    InternalAndCloudLoadBalancing,
}

/// Where services run.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PlatformKind {
    /// Processes on this machine, under a supervisor per sandcastle and region.
    #[default]
    Local,
    /// Named Kubernetes targets, one per region.
    Kubernetes,
    /// Google Cloud Run.
    Cloudrun,
}

impl PlatformKind {
    /// The platform as the manifest and `--platform` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformKind::Local => "local",
            PlatformKind::Kubernetes => "kubernetes",
            PlatformKind::Cloudrun => "cloudrun",
        }
    }
}

impl std::str::FromStr for PlatformKind {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "local" => Ok(PlatformKind::Local),
            "kubernetes" | "k8s" => Ok(PlatformKind::Kubernetes),
            "cloudrun" | "cloud-run" => Ok(PlatformKind::Cloudrun),
            other => Err(Error::Invalid(format!(
                "no platform `{other}`; the platforms are local, kubernetes and cloudrun"
            ))),
        }
    }
}

/// A secret reference: where the value is read at apply time. Values are never written in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    /// `env:NAME`: the environment of the `deploy apply` that runs (local).
    Env(String),
    /// `file:PATH`: a file's contents, without a trailing newline (local; relative to the manifest).
    File(String),
    /// `gcp:sm/NAME#VERSION`: Secret Manager (Cloud Run).
    SecretManager { name: String, version: String },
    /// `k8s:secret/NAME#KEY`: a Kubernetes Secret's key (Kubernetes).
    KubernetesSecret { name: String, key: String },
}

impl SecretRef {
    /// The platform that can resolve this reference, `None` when every platform can.
    pub fn platform(&self) -> Option<PlatformKind> {
        match self {
            SecretRef::Env(_) | SecretRef::File(_) => None,
            SecretRef::SecretManager { .. } => Some(PlatformKind::Cloudrun),
            SecretRef::KubernetesSecret { .. } => Some(PlatformKind::Kubernetes),
        }
    }
}

impl TryFrom<String> for SecretRef {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Self, String> {
        text.parse()
    }
}

impl From<SecretRef> for String {
    fn from(secret: SecretRef) -> String {
        secret.to_string()
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{path}"),
            SecretRef::SecretManager { name, version } => write!(f, "gcp:sm/{name}#{version}"),
            SecretRef::KubernetesSecret { name, key } => write!(f, "k8s:secret/{name}#{key}"),
        }
    }
}

/// The references a secret may be written as, for messages.
pub const SECRET_FORMS: &str = "env:NAME, file:PATH, gcp:sm/NAME#VERSION or k8s:secret/NAME#KEY";

impl std::str::FromStr for SecretRef {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let not_a_reference = || {
            format!(
                "is not a secret reference: secrets are references ({SECRET_FORMS}), never values; \
                 put the value in the environment of `deploy apply` and write env:NAME"
            )
        };
        let named = |name: &str| -> std::result::Result<String, String> {
            if name.is_empty() || name.contains(char::is_whitespace) {
                Err(not_a_reference())
            } else {
                Ok(name.to_string())
            }
        };
        if let Some(name) = text.strip_prefix("env:") {
            if !is_env_name(name) {
                return Err(format!(
                    "`env:{name}` names no environment variable; write env:NAME with a name of letters, \
                     digits and `_`"
                ));
            }
            return Ok(SecretRef::Env(name.to_string()));
        }
        if let Some(path) = text.strip_prefix("file:") {
            return Ok(SecretRef::File(named(path)?));
        }
        if let Some(rest) = text.strip_prefix("gcp:sm/") {
            let (name, version) = rest.split_once('#').unwrap_or((rest, "latest"));
            return Ok(SecretRef::SecretManager {
                name: named(name)?,
                version: named(version)?,
            });
        }
        if let Some(rest) = text.strip_prefix("k8s:secret/") {
            let Some((name, key)) = rest.split_once('#') else {
                return Err(format!("`{text}` names no key; write k8s:secret/NAME#KEY"));
            };
            return Ok(SecretRef::KubernetesSecret {
                name: named(name)?,
                key: named(key)?,
            });
        }
        Err(not_a_reference())
    }
}

/// An external's URL or DSN: one for every platform, or one per platform. Either may be a secret
/// reference (a DSN with a password).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExternalUrl {
    /// The same everywhere.
    Everywhere(String),
    /// Per platform: `{ local = "...", cloudrun = "gcp:sm/db-url#latest" }`.
    PerPlatform(BTreeMap<PlatformKind, String>),
}

impl ExternalUrl {
    /// The URL for `platform`, if the manifest gives one.
    pub fn for_platform(&self, platform: PlatformKind) -> Option<&str> {
        match self {
            ExternalUrl::Everywhere(url) => Some(url),
            ExternalUrl::PerPlatform(urls) => urls.get(&platform).map(String::as_str),
        }
    }
}

/// How a service is checked: a real request to `path` that must answer 2xx or 3xx.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// The path requested.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// How long a new revision has to become healthy before the apply fails.
    #[serde(default = "default_deadline", with = "duration_text")]
    pub deadline: Duration,
    /// How often a running revision is checked.
    #[serde(default = "default_interval", with = "duration_text")]
    pub interval: Duration,
}

impl Default for HealthSpec {
    fn default() -> Self {
        HealthSpec {
            path: default_health_path(),
            deadline: default_deadline(),
            interval: default_interval(),
        }
    }
}

fn default_health_path() -> String {
    "/".into()
}

fn default_deadline() -> Duration {
    Duration::from_secs(60)
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

/// How many copies run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleSpec {
    /// Copies that always run (locally: processes per revision).
    #[serde(default = "one")]
    pub min: u32,
    /// The most copies an autoscaler may run.
    #[serde(default)]
    pub max: Option<u32>,
    /// Requests one copy takes at once.
    #[serde(default)]
    pub concurrency: Option<u32>,
}

impl Default for ScaleSpec {
    fn default() -> Self {
        ScaleSpec {
            min: 1,
            max: None,
            concurrency: None,
        }
    }
}

fn one() -> u32 {
    1
}

/// CPU and memory (container platforms; recorded in the revision locally).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    /// CPUs, as Kubernetes and Cloud Run spell them (`"1"`, `"500m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory (`"512Mi"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// How a new revision takes traffic: percentages in steps, a pause and a gate between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// The new revision's share at each step; the last is 100.
    #[serde(default = "all_at_once")]
    pub steps: Vec<u8>,
    /// How long each step runs before its gate is read.
    #[serde(default, with = "duration_text")]
    pub pause: Duration,
    /// When a later step or service fails, put back what this apply released.
    #[serde(default)]
    pub auto_rollback: bool,
    /// The new revision's highest error rate (0 to 1) a step's gate accepts.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            steps: all_at_once(),
            pause: Duration::ZERO,
            auto_rollback: false,
            max_error_rate: None,
        }
    }
}

fn all_at_once() -> Vec<u8> {
    vec![100]
}

/// One service of the sandcastle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// What it is.
    #[serde(default)]
    pub kind: ServiceKind,
    /// The command that runs it on the local platform (through `sh -c`, in `dir`).
    #[serde(default)]
    pub run: Option<String>,
    /// The container image (container platforms; podman or docker locally when there is no `run`).
    #[serde(default)]
    pub image: Option<String>,
    /// The working directory of `run`, relative to the manifest.
    #[serde(default)]
    pub dir: Option<String>,
    /// How its health is checked (http services; workers with push subscriptions).
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// How many copies run.
    #[serde(default)]
    pub scale: ScaleSpec,
    /// CPU and memory.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// Plain environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment from secret references, resolved at apply time into the process only.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
    /// The services (and jobs) it calls or waits for: their URLs arrive as `<NAME>_URL`.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Topics it publishes to: each arrives as `<NAME>_TOPIC`.
    #[serde(default)]
    pub publishes: Vec<String>,
    /// Topics pushed to it, each at a path of its own (`{ orders = "/events/orders" }`).
    #[serde(default)]
    pub subscribes: BTreeMap<String, String>,
    /// How a new revision takes traffic.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// Where it may be called from.
    #[serde(default)]
    pub ingress: Ingress,
    /// An external's URL or DSN.
    #[serde(default)]
    pub url: Option<ExternalUrl>,
    /// How long a job may run.
    #[serde(default, with = "optional_duration_text")]
    pub timeout: Option<Duration>,
    /// The identity it runs as on container platforms (a Google service account's email on Cloud
    /// Run); the platform's default when absent.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Who may call it on Cloud Run: `public` (anyone) or `iam` (callers with an ID token and the
    /// invoker role). Locally every service is reachable from this machine alone.
    #[serde(default)]
    pub invoker: Invoker,
}

/// Who may call an http service on a platform that checks callers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invoker {
    /// Only callers that present an ID token of an identity granted the invoker role.
    #[default]
    Iam,
    /// Anyone (the invoker role granted to `allUsers`).
    Public,
}

/// An event flow between services.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Undeliverable messages go to `<topic>-dead-letter` after this many attempts.
    #[serde(default)]
    pub dead_letter: Option<DeadLetterSpec>,
}

/// The dead-letter policy of a topic's subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSpec {
    /// Delivery attempts before a message is dead-lettered (5 to 100, as Pub/Sub takes).
    pub after: u32,
}

/// Services linked in a chain: each calls the next (or publishes to the topic that follows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Service and topic names, caller first.
    pub chain: Vec<String>,
}

/// The one entry of a multi-region sandcastle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontDoorSpec {
    /// The public http service it sends requests to, in whichever region is healthy.
    pub service: String,
    /// Its local port (0 or absent: any free port, kept once chosen).
    #[serde(default)]
    pub port: u16,
    /// The domain it answers for on Cloud Run, with a Google-managed certificate (HTTPS); without
    /// one, the load balancer answers plain HTTP on its address.
    #[serde(default)]
    pub domain: Option<String>,
}

/// The sandcastle's own settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandcastleSpec {
    /// Its name: part of every resource it makes.
    pub name: String,
    /// Where it is placed; local region names, Cloud Run regions or Kubernetes targets.
    #[serde(default = "default_regions")]
    pub regions: Vec<String>,
    /// Where it runs unless `--platform` says otherwise.
    #[serde(default)]
    pub platform: PlatformKind,
}

fn default_regions() -> Vec<String> {
    vec![DEFAULT_REGION.to_string()]
}

/// A whole manifest, checked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Manifest {
    /// The file it was read from.
    pub path: PathBuf,
    /// The sandcastle's own settings.
    pub sandcastle: SandcastleSpec,
    /// Platform settings, each checked by its platform.
    pub platforms: BTreeMap<PlatformKind, toml::Table>,
    /// Services by name.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicSpec>,
    /// Pipelines by name.
    pub pipelines: BTreeMap<String, PipelineSpec>,
    /// The front door, for a multi-region sandcastle.
    pub front_door: Option<FrontDoorSpec>,
}

/// Every problem found in a manifest, each with file, line and key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line, when the key could be found.
    pub line: Option<usize>,
    /// The dotted key (`services.web.needs`).
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Renders problems as `FILE:LINE: KEY: MESSAGE` lines.
pub fn describe_problems(path: &Path, problems: &[Problem]) -> String {
    let mut lines = vec![format!(
        "{} has {} problem{}:",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    )];
    for problem in problems {
        let at = problem.line.map_or_else(
            || path.display().to_string(),
            |line| format!("{}:{line}", path.display()),
        );
        lines.push(format!("  {at}: {}: {}", problem.key, problem.message));
    }
    lines.join("\n")
}

impl Manifest {
    /// Finds `mahavishnu.deploy.toml` in `start` or the nearest directory above it.
    pub fn find(start: &Path) -> Result<PathBuf> {
        let mut dir = Some(start);
        while let Some(here) = dir {
            let candidate = here.join(MANIFEST_FILE);
            if candidate.is_file() {
                return Ok(candidate);
            }
            dir = here.parent();
        }
        Err(Error::Invalid(format!(
            "no {MANIFEST_FILE} in {} or any directory above it; write one (see the README's \
             \"Deployments\" section) or name it with -f FILE",
            start.display()
        )))
    }

    /// Reads and checks the manifest at `path`; every problem is reported in one error.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!("cannot read the manifest {}: {e}", path.display()))
        })?;
        Manifest::parse(path, &text)
            .map_err(|problems| Error::Invalid(describe_problems(path, &problems)))
    }

    /// Parses and checks manifest text; `path` is where it came from (relative paths start there).
    pub fn parse(path: &Path, text: &str) -> std::result::Result<Manifest, Vec<Problem>> {
        let locator = Locator::new(text).map_err(|problem| vec![problem])?;
        let mut problems = Vec::new();
        let table: toml::Table = match text.parse() {
            Ok(table) => table,
            Err(e) => {
                return Err(vec![Problem {
                    line: e.span().map(|span| line_at(text, span.start)),
                    key: "(syntax)".into(),
                    message: one_line(e.message()),
                }]);
            }
        };
        let mut report = |key: &str, message: String| {
            problems.push(Problem {
                line: locator.line(key),
                key: key.to_string(),
                message,
            });
        };
        for key in table.keys() {
            if ![
                "sandcastle",
                "platforms",
                "services",
                "topics",
                "pipelines",
                "front_door",
            ]
            .contains(&key.as_str())
            {
                report(
                    key,
                    "unknown key; a manifest has [sandcastle], [platforms.*], [services.*], \
                     [topics.*], [pipelines.*] and [front_door]"
                        .into(),
                );
            }
        }
        let sandcastle = match table.get("sandcastle") {
            None => {
                report(
                    "sandcastle",
                    "missing; add [sandcastle] with name = \"...\"".into(),
                );
                None
            }
            Some(value) => {
                section::<SandcastleSpec>(value, "sandcastle", SANDCASTLE_KEYS, &mut report)
            }
        };
        let services = sections::<ServiceSpec>(&table, "services", SERVICE_KEYS, &mut report);
        let topics = sections::<TopicSpec>(&table, "topics", TOPIC_KEYS, &mut report);
        let pipelines = sections::<PipelineSpec>(&table, "pipelines", PIPELINE_KEYS, &mut report);
        let front_door = table.get("front_door").and_then(|value| {
            section::<FrontDoorSpec>(value, "front_door", FRONT_DOOR_KEYS, &mut report)
        });
        let mut platforms = BTreeMap::new();
        if let Some(value) = table.get("platforms") {
            match value.as_table() {
                None => report("platforms", "must be a table of [platforms.NAME]".into()),
                Some(tables) => {
                    for (name, settings) in tables {
                        let key = format!("platforms.{name}");
                        match (name.parse::<PlatformKind>(), settings.as_table()) {
                            (Err(e), _) => report(&key, e.to_string()),
                            (_, None) => report(&key, "must be a table".into()),
                            (Ok(kind), Some(settings)) => {
                                platforms.insert(kind, settings.clone());
                            }
                        }
                    }
                }
            }
        }
        let entries = |name: &str| {
            table
                .get(name)
                .and_then(toml::Value::as_table)
                .map_or(0, toml::Table::len)
        };
        // Whole-manifest checks need every section read; one that could not be read would make them
        // report links to it as broken.
        let all_read = services.len() == entries("services")
            && topics.len() == entries("topics")
            && pipelines.len() == entries("pipelines")
            && front_door.is_some() == table.contains_key("front_door");
        let Some(sandcastle) = sandcastle.filter(|_| all_read) else {
            return Err(problems);
        };
        let manifest = Manifest {
            path: path.to_path_buf(),
            sandcastle,
            platforms,
            services,
            topics,
            pipelines,
            front_door,
        };
        problems.extend(manifest.check().into_iter().map(|(key, message)| Problem {
            line: locator.line(&key),
            key,
            message,
        }));
        problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(problems)
        }
    }

    /// The directory relative paths start from.
    /// The manifest as deployed to `platform`: its regions are `[platforms.KIND] regions` when that
    /// is given (Cloud Run regions beside local region names), else the sandcastle's.
    pub fn for_platform(&self, platform: PlatformKind) -> Result<Manifest> {
        let mut manifest = self.clone();
        manifest.sandcastle.platform = platform;
        if let Some(regions) = self
            .platforms
            .get(&platform)
            .and_then(|settings| settings.get("regions"))
        {
            let key = format!("platforms.{}.regions", platform.as_str());
            let wrong = |why: String| Error::Invalid(format!("{key}: {why}"));
            let items = regions
                .as_array()
                .filter(|items| !items.is_empty())
                .ok_or_else(|| wrong("must be a non-empty list of region names".into()))?;
            let mut regions: Vec<String> = Vec::new();
            for item in items {
                // A region names resources, URLs and files: it is checked as every name is.
                let region = item
                    .as_str()
                    .ok_or_else(|| wrong(format!("{item} is not a region name")))?;
                check_name(region).map_err(|reason| wrong(format!("region {reason}")))?;
                if regions.iter().any(|seen| seen == region) {
                    return Err(wrong(format!("region `{region}` is named twice")));
                }
                regions.push(region.to_string());
            }
            manifest.sandcastle.regions = regions;
        } else if platform == PlatformKind::Kubernetes
            && self.sandcastle.regions == [DEFAULT_REGION]
        {
            // Kubernetes regions are targets: a sandcastle that names none goes to the built-in one.
            manifest.sandcastle.regions = vec![KUBERNETES_DEFAULT_REGION.to_string()];
        }
        Ok(manifest)
    }

    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// The checks that need the whole manifest: names, links, cycles, secrets, rollouts.
    fn check(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut report = |key: String, message: String| problems.push((key, message));
        if let Err(reason) = check_name(&self.sandcastle.name) {
            report("sandcastle.name".into(), reason);
        }
        if self.sandcastle.regions.is_empty() {
            report(
                "sandcastle.regions".into(),
                "names no region; leave it out for one region called `local`".into(),
            );
        }
        let mut seen = BTreeSet::new();
        for region in &self.sandcastle.regions {
            if let Err(reason) = check_name(region) {
                report(
                    "sandcastle.regions".into(),
                    format!("region `{region}`: {reason}"),
                );
            }
            if !seen.insert(region) {
                report(
                    "sandcastle.regions".into(),
                    format!("region `{region}` is named twice"),
                );
            }
        }
        for name in self.topics.keys() {
            if let Err(reason) = check_name(name) {
                report(format!("topics.{name}"), reason);
            }
            if self.services.contains_key(name) {
                report(
                    format!("topics.{name}"),
                    format!("`{name}` is both a service and a topic; rename one of them"),
                );
            }
            if let Some(dead_letter) = &self.topics[name].dead_letter
                && !(5..=100).contains(&dead_letter.after)
            {
                report(
                    format!("topics.{name}.dead_letter.after"),
                    "must be between 5 and 100 delivery attempts, as Pub/Sub takes".into(),
                );
            }
        }
        for (name, service) in &self.services {
            self.check_service(name, service, &mut report);
        }
        for (name, pipeline) in &self.pipelines {
            self.check_pipeline(name, pipeline, &mut report);
        }
        if let Some(door) = &self.front_door {
            match self.services.get(&door.service) {
                None => report(
                    "front_door.service".into(),
                    format!("names no service `{}`", door.service),
                ),
                Some(service)
                    if service.kind != ServiceKind::Http
                        || service.ingress == Ingress::Internal =>
                {
                    report(
                        "front_door.service".into(),
                        format!(
                            "`{}` is not a public http service; the front door sends requests to one",
                            door.service
                        ),
                    )
                }
                Some(_) => {}
            }
        }
        if let Some(cycle) = self.cycle() {
            report(
                format!("services.{}.needs", cycle[0]),
                format!(
                    "the services need each other in a cycle: {}; one of them must stop needing the next",
                    cycle.join(" -> ")
                ),
            );
        }
        problems
    }

    fn check_service(
        &self,
        name: &str,
        service: &ServiceSpec,
        report: &mut impl FnMut(String, String),
    ) {
        let key = |field: &str| format!("services.{name}.{field}");
        if let Err(reason) = check_name(name) {
            report(format!("services.{name}"), reason);
        }
        let runs = service.kind != ServiceKind::External;
        if runs && service.run.is_none() && service.image.is_none() {
            report(
                format!("services.{name}"),
                "says neither how to run it nor what image it is; give `run = \"COMMAND\"` (local) or \
                 `image = \"...\"`"
                    .into(),
            );
        }
        if service.kind == ServiceKind::External {
            if service.url.is_none() {
                report(
                    format!("services.{name}"),
                    "an external needs `url` (one, or one per platform) for its dependents".into(),
                );
            }
            for field in ["run", "image"] {
                let given = if field == "run" {
                    service.run.is_some()
                } else {
                    service.image.is_some()
                };
                if given {
                    report(
                        key(field),
                        "an external is not run by Mahavishnu; remove it".into(),
                    );
                }
            }
        } else if service.url.is_some() {
            report(
                key("url"),
                "only an external has a url; the others get theirs from the platform".into(),
            );
        }
        if let Some(url) = &service.url {
            let urls: Vec<&String> = match url {
                ExternalUrl::Everywhere(url) => vec![url],
                ExternalUrl::PerPlatform(urls) => urls.values().collect(),
            };
            for url in urls {
                if url.trim().is_empty() {
                    report(key("url"), "is empty".into());
                }
            }
        }
        if let Some(health) = &service.health {
            if !health.path.starts_with('/') {
                report(
                    key("health.path"),
                    format!("`{}` must start with `/`", health.path),
                );
            }
            if matches!(service.kind, ServiceKind::Job | ServiceKind::External) {
                report(
                    key("health"),
                    format!("a {} has no health check; remove it", service.kind.as_str()),
                );
            }
        }
        if service.scale.min > 1000 {
            report(
                key("scale.min"),
                format!(
                    "{} copies of one service is surely a mistake; the most is 1000",
                    service.scale.min
                ),
            );
        }
        if service.scale.min == 0 && service.kind != ServiceKind::External {
            report(
                key("scale.min"),
                "must be at least 1 on the local platform's processes".into(),
            );
        }
        if let Some(max) = service.scale.max
            && max < service.scale.min
        {
            report(
                key("scale.max"),
                format!("{max} is below scale.min ({})", service.scale.min),
            );
        }
        // Each variable is reported under the table that sets it, env or secrets.
        let variables = service
            .env
            .keys()
            .map(|variable| ("env", variable))
            .chain(service.secrets.keys().map(|variable| ("secrets", variable)));
        for (table, variable) in variables {
            if !is_env_name(variable) {
                report(
                    key(table),
                    format!(
                        "`{variable}` is not an environment variable name (letters, digits, `_`)"
                    ),
                );
            }
            if variable == "PORT" {
                report(key(table), "PORT is set by the platform; remove it".into());
            }
            if let Some(from) = self.wired_variable(service, variable) {
                report(
                    key(table),
                    format!("`{variable}` is set by the wiring ({from}); remove it or rename it"),
                );
            }
            if table == "env" && service.secrets.contains_key(variable) {
                report(
                    key("secrets"),
                    format!("`{variable}` is in both env and secrets"),
                );
            }
        }
        for need in &service.needs {
            match self.services.get(need) {
                None if self.topics.contains_key(need) => report(
                    key("needs"),
                    format!(
                        "`{need}` is a topic; list it under `publishes` or `subscribes` instead"
                    ),
                ),
                None => report(
                    key("needs"),
                    format!(
                        "names no service `{need}`; the services are: {}",
                        self.service_names()
                    ),
                ),
                Some(_) if need == name => {
                    report(key("needs"), "a service cannot need itself".into())
                }
                Some(other) if other.kind == ServiceKind::Worker => report(
                    key("needs"),
                    format!("`{need}` is a worker and has no URL; link to it with a topic instead"),
                ),
                Some(_) => {}
            }
        }
        for topic in &service.publishes {
            if !self.topics.contains_key(topic) {
                report(
                    key("publishes"),
                    format!("names no topic `{topic}`; declare it as [topics.{topic}]"),
                );
            }
        }
        for (topic, path) in &service.subscribes {
            if !self.topics.contains_key(topic) {
                report(
                    key("subscribes"),
                    format!("names no topic `{topic}`; declare it as [topics.{topic}]"),
                );
            }
            if !path.starts_with('/') {
                report(
                    key("subscribes"),
                    format!(
                        "the push path for `{topic}`, `{path}`, must start with `/` (like \"/events/{topic}\")"
                    ),
                );
            }
            if matches!(service.kind, ServiceKind::Job | ServiceKind::External) {
                report(
                    key("subscribes"),
                    format!("a {} cannot take pushed messages", service.kind.as_str()),
                );
            }
        }
        let steps = &service.rollout.steps;
        if steps.is_empty() || steps.last() != Some(&100) {
            report(
                key("rollout.steps"),
                "must end with 100 (the new revision takes all traffic)".into(),
            );
        }
        if steps.windows(2).any(|pair| pair[0] >= pair[1])
            || steps.iter().any(|step| *step == 0 || *step > 100)
        {
            report(
                key("rollout.steps"),
                "must rise from 1 to 100, like [10, 50, 100]".into(),
            );
        }
        if let Some(rate) = service.rollout.max_error_rate
            && !(0.0..=1.0).contains(&rate)
        {
            report(
                key("rollout.max_error_rate"),
                format!("{rate} is not a rate between 0 and 1 (0.05 is 5 %)"),
            );
        }
        if service.timeout.is_some() && service.kind != ServiceKind::Job {
            report(
                key("timeout"),
                "only a job has a timeout; use health.deadline for the others".into(),
            );
        }
    }

    fn check_pipeline(
        &self,
        name: &str,
        pipeline: &PipelineSpec,
        report: &mut impl FnMut(String, String),
    ) {
        let key = format!("pipelines.{name}.chain");
        if pipeline.chain.len() < 2 {
            report(key.clone(), "a chain links at least two services".into());
        }
        for link in &pipeline.chain {
            if !self.services.contains_key(link) && !self.topics.contains_key(link) {
                report(key.clone(), format!("names no service or topic `{link}`"));
            }
        }
        for pair in pipeline.chain.windows(2) {
            let (from, to) = (&pair[0], &pair[1]);
            match (self.services.get(from), self.services.get(to)) {
                (Some(caller), Some(_)) if !caller.needs.contains(to) => report(
                    key.clone(),
                    format!(
                        "`{from}` calls `{to}` in this chain but does not list it in needs; add \"{to}\" to services.{from}.needs"
                    ),
                ),
                (Some(publisher), None)
                    if self.topics.contains_key(to) && !publisher.publishes.contains(to) =>
                {
                    report(
                        key.clone(),
                        format!(
                            "`{from}` is linked to topic `{to}` but does not publish it; add \"{to}\" to services.{from}.publishes"
                        ),
                    )
                }
                (None, Some(subscriber))
                    if self.topics.contains_key(from)
                        && !subscriber.subscribes.contains_key(from) =>
                {
                    report(
                        key.clone(),
                        format!(
                            "topic `{from}` is linked to `{to}`, which does not subscribe to it; add {from} = \"/events/{from}\" to services.{to}.subscribes"
                        ),
                    )
                }
                (None, None) if self.topics.contains_key(from) && self.topics.contains_key(to) => {
                    report(
                        key.clone(),
                        format!(
                            "topics `{from}` and `{to}` are linked directly; put a service between them"
                        ),
                    )
                }
                _ => {}
            }
        }
    }

    /// Which wiring sets `variable` for `service`, if any.
    fn wired_variable(&self, service: &ServiceSpec, variable: &str) -> Option<String> {
        service
            .needs
            .iter()
            .find(|need| url_variable(need) == variable)
            .map(|need| format!("needs {need}"))
            .or_else(|| {
                service
                    .publishes
                    .iter()
                    .find(|topic| topic_variable(topic) == variable)
                    .map(|topic| format!("publishes {topic}"))
            })
    }

    fn service_names(&self) -> String {
        let names: Vec<&str> = self.services.keys().map(String::as_str).collect();
        if names.is_empty() {
            "(none)".into()
        } else {
            names.join(", ")
        }
    }

    /// A cycle of `needs`, as the names along it (first repeated at the end), if there is one.
    pub fn cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        fn visit(
            manifest: &Manifest,
            name: &str,
            marks: &mut BTreeMap<String, Mark>,
            path: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            match marks.get(name) {
                Some(Mark::Done) => return None,
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|step| step == name).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(name.to_string());
                    return Some(cycle);
                }
                None => {}
            }
            marks.insert(name.to_string(), Mark::Visiting);
            path.push(name.to_string());
            for need in manifest
                .services
                .get(name)
                .map(|s| s.needs.as_slice())
                .unwrap_or(&[])
            {
                // A service that needs itself is reported on its own.
                if need != name
                    && manifest.services.contains_key(need)
                    && let Some(cycle) = visit(manifest, need, marks, path)
                {
                    return Some(cycle);
                }
            }
            path.pop();
            marks.insert(name.to_string(), Mark::Done);
            None
        }
        let mut marks = BTreeMap::new();
        for name in self.services.keys() {
            if let Some(cycle) = visit(self, name, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
        None
    }

    /// The services in waves: each wave needs only services of earlier waves. Externals come first.
    pub fn waves(&self) -> Vec<Vec<String>> {
        let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
        let mut waves: Vec<Vec<String>> = Vec::new();
        while placed.len() < self.services.len() {
            let ready: Vec<&String> = self
                .services
                .iter()
                .filter(|(name, _)| !placed.contains_key(name.as_str()))
                .filter(|(_, service)| {
                    service.needs.iter().all(|need| {
                        placed.contains_key(need.as_str()) || !self.services.contains_key(need)
                    })
                })
                .map(|(name, _)| name)
                .collect();
            if ready.is_empty() {
                break; // a cycle, which `check` refuses
            }
            let wave = waves.len();
            for name in &ready {
                placed.insert(name, wave);
            }
            waves.push(ready.into_iter().cloned().collect());
        }
        waves
    }

    /// `names` and everything they need, transitively.
    pub fn closure(&self, names: &[String]) -> BTreeSet<String> {
        let mut wanted = BTreeSet::new();
        let mut stack: Vec<String> = names.to_vec();
        while let Some(name) = stack.pop() {
            if wanted.insert(name.clone())
                && let Some(service) = self.services.get(&name)
            {
                stack.extend(service.needs.iter().cloned());
            }
        }
        wanted
    }

    /// The services that subscribe to `topic`, with their push paths.
    pub fn subscribers(&self, topic: &str) -> Vec<(&str, &str)> {
        self.services
            .iter()
            .filter_map(|(name, service)| {
                service
                    .subscribes
                    .get(topic)
                    .map(|path| (name.as_str(), path.as_str()))
            })
            .collect()
    }
}

/// The variable a dependent receives a service's URL in: `API_URL` for `api`, `USER_DB_URL` for `user-db`.
pub fn url_variable(service: &str) -> String {
    format!("{}_URL", service.to_ascii_uppercase().replace('-', "_"))
}

/// The variable a publisher receives a topic's name in: `ORDERS_TOPIC`.
pub fn topic_variable(topic: &str) -> String {
    format!("{}_TOPIC", topic.to_ascii_uppercase().replace('-', "_"))
}

/// Whether `name` can be an environment variable's name.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Sandcastle, service, topic and region names: lower-case letters, digits and `-`, starting with a
/// letter, at most 40 characters, so that every platform can name its resources after them.
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let valid = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name: use lower-case letters, digits and `-`, starting with a letter, \
             at most 40 characters"
        ))
    }
}

/// The keys each section takes: the others are reported, one by one, before the rest is read.
const SANDCASTLE_KEYS: &[&str] = &["name", "regions", "platform"];
const SERVICE_KEYS: &[&str] = &[
    "kind",
    "run",
    "image",
    "dir",
    "health",
    "scale",
    "resources",
    "env",
    "secrets",
    "needs",
    "publishes",
    "subscribes",
    "rollout",
    "ingress",
    "url",
    "timeout",
    "service_account",
    "invoker",
];
const TOPIC_KEYS: &[&str] = &["dead_letter"];
const PIPELINE_KEYS: &[&str] = &["chain"];
const FRONT_DOOR_KEYS: &[&str] = &["service", "port", "domain"];

/// Reads one section, after reporting and removing the keys it does not take and the secrets that
/// are not references, so that one mistake does not hide the others.
fn section<T: serde::de::DeserializeOwned>(
    value: &toml::Value,
    key: &str,
    known: &[&str],
    report: &mut impl FnMut(&str, String),
) -> Option<T> {
    let mut value = value.clone();
    if let Some(table) = value.as_table_mut() {
        let unknown: Vec<String> = table
            .keys()
            .filter(|field| !known.contains(&field.as_str()))
            .cloned()
            .collect();
        for field in unknown {
            table.remove(&field);
            report(
                &format!("{key}.{field}"),
                format!(
                    "unknown key `{field}`; the keys here are: {}",
                    known.join(", ")
                ),
            );
        }
        if let Some(secrets) = table.get_mut("secrets").and_then(toml::Value::as_table_mut) {
            let bad: Vec<(String, String)> = secrets
                .iter()
                .filter_map(|(name, reference)| {
                    let problem = match reference.as_str() {
                        Some(text) => text.parse::<SecretRef>().err(),
                        None => Some("must be a reference written as a string".to_string()),
                    };
                    problem.map(|problem| (name.clone(), problem))
                })
                .collect();
            for (name, problem) in bad {
                secrets.remove(&name);
                report(&format!("{key}.secrets.{name}"), problem);
            }
        }
    }
    if let Some(table) = value.as_table_mut()
        && value_of::<T>(table).is_err()
    {
        // Find the keys whose values are wrong, each on its own (with the keys every section of this
        // kind must have), report each at its own line, and read the rest: one wrong value then
        // hides neither the others nor the checks of the whole manifest.
        let required: Vec<String> = REQUIRED_KEYS
            .iter()
            .filter(|required| table.contains_key(**required))
            .map(|required| required.to_string())
            .collect();
        let wrong: Vec<(String, String)> = table
            .keys()
            .filter(|field| !required.contains(field))
            .filter_map(|field| {
                let mut alone = toml::Table::new();
                for needed in required.iter().chain([field]) {
                    alone.insert(needed.clone(), table[needed].clone());
                }
                value_of::<T>(&alone)
                    .err()
                    .map(|message| (field.clone(), message))
            })
            .collect();
        for (field, message) in wrong {
            table.remove(&field);
            report(&format!("{key}.{field}"), message);
        }
    }
    match value.try_into::<T>() {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            report(key, one_line(e.message()));
            None
        }
    }
}

/// The keys some section must have (a sandcastle's name, a pipeline's chain, a front door's service).
const REQUIRED_KEYS: &[&str] = &["name", "chain", "service"];

fn value_of<T: serde::de::DeserializeOwned>(table: &toml::Table) -> std::result::Result<T, String> {
    toml::Value::Table(table.clone())
        .try_into::<T>()
        .map_err(|e| one_line(e.message()))
}

fn sections<T: serde::de::DeserializeOwned>(
    table: &toml::Table,
    name: &str,
    known: &[&str],
    report: &mut impl FnMut(&str, String),
) -> BTreeMap<String, T> {
    let mut parsed = BTreeMap::new();
    let Some(value) = table.get(name) else {
        return parsed;
    };
    let Some(entries) = value.as_table() else {
        report(name, format!("must be a table of [{name}.NAME]"));
        return parsed;
    };
    for (entry, value) in entries {
        if let Some(spec) = section::<T>(value, &format!("{name}.{entry}"), known, report) {
            parsed.insert(entry.clone(), spec);
        }
    }
    parsed
}

impl Manifest {
    /// The line of a dotted key (`platforms.cloudrun.project`) in a manifest's text, or of the
    /// deepest part of it there is.
    pub fn line_of(text: &str, key: &str) -> Option<usize> {
        Locator::new(text).ok()?.line(key)
    }
}

/// Finds the line of a dotted key in the manifest's text.
struct Locator {
    text: String,
    document: toml_edit::ImDocument<String>,
}

impl Locator {
    fn new(text: &str) -> std::result::Result<Locator, Problem> {
        toml_edit::ImDocument::parse(text.to_string())
            .map(|document| Locator {
                text: text.to_string(),
                document,
            })
            .map_err(|e| Problem {
                line: e.span().map(|span| line_at(text, span.start)),
                key: "(syntax)".into(),
                message: one_line(e.message()),
            })
    }

    /// The line of the deepest part of `key` that the document has.
    fn line(&self, key: &str) -> Option<usize> {
        let mut table: &dyn toml_edit::TableLike = self.document.as_table();
        let mut found = None;
        for part in key.split('.') {
            let Some((key, item)) = table.get_key_value(part) else {
                break;
            };
            found = key.span().or_else(|| item.span()).or(found);
            match item.as_table_like() {
                Some(inner) => table = inner,
                None => break,
            }
        }
        found.map(|span| line_at(&self.text, span.start))
    }
}

/// A parser's message, which may span lines ("invalid table header\nexpected ..."), as one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Durations written as text: `"30s"`, `"2m"`.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `"30s"`.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    /// Reads `"30s"`, naming the mistake.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write it like \"30s\" or \"2m\""
            ))
        })
    }
}

/// Optional durations written as text.
pub mod optional_duration_text {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Writes `"30s"` or nothing.
    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration_text::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads `"30s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration_text::deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<Manifest, Vec<Problem>> {
        Manifest::parse(Path::new("/app/mahavishnu.deploy.toml"), text)
    }

    fn problems(text: &str) -> Vec<String> {
        parse(text)
            .expect_err("problems")
            .into_iter()
            .map(|p| format!("{}:{}: {}", p.line.unwrap_or(0), p.key, p.message))
            .collect()
    }

    const SHOP: &str = r#"
[sandcastle]
name = "shop"

[services.db]
kind = "external"
url = { local = "postgres://localhost/shop", cloudrun = "gcp:sm/db-url#3" }

[services.migrate]
kind = "job"
run = "migrate"
needs = ["db"]

[services.api]
run = "serve api"
needs = ["db", "migrate"]
publishes = ["orders"]

[services.web]
run = "serve web"
needs = ["api"]

[services.worker]
kind = "worker"
run = "work"
subscribes = { orders = "/events/orders" }

[topics.orders]

[pipelines.checkout]
chain = ["web", "api", "orders", "worker"]
"#;

    #[test]
    fn a_manifest_gets_its_defaults_and_deploys_in_waves_of_its_needs() {
        let manifest = parse(SHOP).expect("valid");
        assert_eq!(manifest.sandcastle.regions, ["local"]);
        assert_eq!(manifest.sandcastle.platform, PlatformKind::Local);
        let web = &manifest.services["web"];
        assert_eq!(
            (web.kind, web.scale.min, web.rollout.steps.clone()),
            (ServiceKind::Http, 1, vec![100])
        );
        assert_eq!(
            manifest.waves(),
            [
                vec!["db", "worker"],
                vec!["migrate"],
                vec!["api"],
                vec!["web"]
            ]
        );
        assert_eq!(
            manifest
                .closure(&["web".to_string()])
                .into_iter()
                .collect::<Vec<_>>(),
            ["api", "db", "migrate", "web"]
        );
        assert_eq!(
            manifest.subscribers("orders"),
            [("worker", "/events/orders")]
        );
        let db = manifest.services["db"].url.as_ref().unwrap();
        assert_eq!(
            db.for_platform(PlatformKind::Local),
            Some("postgres://localhost/shop")
        );
        assert_eq!(db.for_platform(PlatformKind::Kubernetes), None);
        assert_eq!(url_variable("user-db"), "USER_DB_URL");
        assert_eq!(topic_variable("orders"), "ORDERS_TOPIC");
    }

    #[test]
    fn secret_references_parse_and_values_are_refused() {
        let refs = [
            ("env:SESSION_KEY", SecretRef::Env("SESSION_KEY".into())),
            ("file:secrets/key", SecretRef::File("secrets/key".into())),
            (
                "gcp:sm/key",
                SecretRef::SecretManager {
                    name: "key".into(),
                    version: "latest".into(),
                },
            ),
            (
                "k8s:secret/app#token",
                SecretRef::KubernetesSecret {
                    name: "app".into(),
                    key: "token".into(),
                },
            ),
        ];
        for (text, expected) in refs {
            let parsed: SecretRef = text.parse().unwrap();
            assert_eq!(parsed, expected);
            assert_eq!(parsed.to_string().parse::<SecretRef>().unwrap(), parsed);
        }
        for value in [
            "hunter2",
            "env:",
            "env:has space",
            "k8s:secret/app",
            "gcp:sm/#1",
        ] {
            assert!(
                value.parse::<SecretRef>().is_err(),
                "{value} is not a reference"
            );
        }
    }

    #[test]
    fn links_are_checked_where_they_are_written() {
        let found = problems(
            r#"[sandcastle]
name = "shop"
regions = ["a", "a"]

[services.web]
run = "x"
needs = ["orders", "worker", "web"]
env = { PORT = "1", API_URL = "x" }
publishes = ["nothing"]
rollout = { steps = [50, 10], max_error_rate = 2.0 }
timeout = "5s"

[services.worker]
kind = "worker"
run = "y"

[services.api]
image = "api:1"

[services.job]
kind = "job"
run = "z"
health = { path = "healthz" }

[topics.orders]
dead_letter = { after = 1 }

[pipelines.p]
chain = ["web", "api"]

[front_door]
service = "worker"
"#,
        );
        let expected = [
            "3:sandcastle.regions: region `a` is named twice",
            "7:services.web.needs: `orders` is a topic",
            "7:services.web.needs: `worker` is a worker and has no URL",
            "7:services.web.needs: a service cannot need itself",
            "8:services.web.env: PORT is set by the platform",
            "9:services.web.publishes: names no topic `nothing`",
            "10:services.web.rollout.steps: must end with 100",
            "10:services.web.rollout.steps: must rise from 1 to 100",
            "10:services.web.rollout.max_error_rate: 2 is not a rate",
            "11:services.web.timeout: only a job has a timeout",
            "23:services.job.health.path: `healthz` must start with `/`",
            "23:services.job.health: a job has no health check",
            "26:topics.orders.dead_letter.after: must be between 5 and 100",
            "29:pipelines.p.chain: `web` calls `api` in this chain but does not list it in needs",
            "32:front_door.service: `worker` is not a public http service",
        ];
        for want in expected {
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {found:#?}"
            );
        }
        assert!(
            !found.iter().any(|p| p.contains("cycle")),
            "needing itself is said once: {found:#?}"
        );
    }

    #[test]
    fn a_pipeline_through_a_topic_needs_a_publisher_and_a_subscriber() {
        let found = problems(
            r#"[sandcastle]
name = "shop"

[services.api]
run = "x"

[services.audit]
kind = "worker"
run = "y"

[topics.events]

[pipelines.audit]
chain = ["api", "events", "audit"]
"#,
        );
        assert!(
            found
                .iter()
                .any(|p| p.contains("`api` is linked to topic `events` but does not publish it")),
            "{found:#?}"
        );
        assert!(
            found.iter().any(|p| p
                .contains("topic `events` is linked to `audit`, which does not subscribe to it")),
            "{found:#?}"
        );
    }

    #[test]
    fn syntax_errors_and_a_missing_sandcastle_are_named() {
        let found = problems("[sandcastle\nname = 1\n");
        assert!(found[0].starts_with("1:"), "{found:?}");
        let found = problems("[services.web]\nrun = \"x\"\n");
        assert!(
            found.iter().any(|p| p.contains("sandcastle: missing")),
            "{found:?}"
        );
        let found = problems("[sandcastle]\nname = \"s\"\n[services.web]\nrun = 5\n");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("4:services.web.run: invalid type")),
            "{found:?}"
        );
        // Wrong values are each named at their own line, and the other checks still run.
        let found = problems(
            "[sandcastle]\nname = \"s\"\nplatform = \"mars\"\n[services.web]\nrun = \"x\"\nscale = { max = -1 }\nneeds = [\"nothing\"]\nhealth = { deadline = \"-5s\" }\n",
        );
        for want in [
            "3:sandcastle.platform: unknown variant `mars`",
            "6:services.web.scale: invalid value",
            "8:services.web.health:",
            "7:services.web.needs: names no service `nothing`",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(want)),
                "missing {want:?} in {found:#?}"
            );
        }
    }
}
