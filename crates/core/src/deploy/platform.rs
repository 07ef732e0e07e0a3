//! The `Platform` trait: where services run. Modelled on Waypoint (deploy is not release), Nomad (plan
//! before apply) and Skaffold (readiness with a deadline and progress). Optional operations return
//! `Error::Unsupported` from their default method.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use super::manifest::{
    HealthSpec, Ingress, Invoker, PlatformKind, ResourcesSpec, ScaleSpec, SecretRef, ServiceKind,
};
use crate::error::{Error, Result};

/// One placement of a sandcastle: its name and a region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Placement {
    /// The sandcastle's name.
    pub sandcastle: String,
    /// The region (a local region, a Cloud Run region, a Kubernetes target).
    pub region: String,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.sandcastle, self.region)
    }
}

/// Everything that makes a revision: what the platform runs. Two equal specs are the same revision.
/// Holds secret references, never their values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevisionSpec {
    /// The service it belongs to.
    pub service: String,
    /// What the service is.
    pub kind: ServiceKind,
    /// The command (local platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The container image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The working directory of `run`.
    pub dir: PathBuf,
    /// Plain environment, wiring included.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment from secret references.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
    /// Its health check, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// How many copies run.
    pub scale: ScaleSpec,
    /// CPU and memory.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// Where it may be called from.
    #[serde(default)]
    pub ingress: Ingress,
    /// How long a job may run.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::manifest::optional_duration_text"
    )]
    pub timeout: Option<Duration>,
    /// Whether the revision must listen on `$PORT` (http services, and workers that take pushes).
    pub listens: bool,
    /// The identity it runs as (container platforms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Who may call it (platforms that check callers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoker: Option<Invoker>,
}

impl RevisionSpec {
    /// The spec's hash: what names the revision, and what every platform stores on what it creates.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        crate::digest::sha256_hex(&canonical)
    }

    /// The revision's name: the service and the first eight hex digits of the spec's hash.
    pub fn revision_name(&self) -> String {
        format!("{}-{}", self.service, &self.hash()[..8])
    }
}

/// Secret values resolved for one revision: handed to the process environment and nowhere else.
/// Neither `Debug` nor `Serialize` shows them.
#[derive(Clone, Default)]
pub struct SecretValues(BTreeMap<String, String>);

impl SecretValues {
    /// Wraps resolved values by variable name.
    pub fn new(values: BTreeMap<String, String>) -> Self {
        SecretValues(values)
    }

    /// The variables and their values, for the process environment only.
    pub fn expose(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// What a platform can do beyond the required operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformCapabilities {
    /// Splits traffic by weight between revisions (otherwise releases are all-or-nothing).
    pub traffic_split: bool,
    /// Gives a tagged revision its own URL.
    pub tags: bool,
    /// Holds several regions.
    pub regions: bool,
    /// Runs a command inside a revision.
    pub exec: bool,
    /// Returns a revision's logs.
    pub logs: bool,
    /// Resolves secret references itself (Secret Manager, Kubernetes Secrets).
    pub native_secrets: bool,
    /// Checks health itself.
    pub native_health: bool,
    /// Counts requests and errors per revision, for rollout gates.
    pub metrics: bool,
    /// Has a front door for several regions.
    pub front_door: bool,
}

/// How a revision is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum Health {
    /// Started, not yet healthy.
    Starting,
    /// Every copy answers its health check (or runs, without one).
    Healthy,
    /// Some copies answer, some do not.
    Degraded(String),
    /// No copy answers; the reason is the platform's own words.
    Unhealthy(String),
    /// A job that finished with exit code 0.
    Succeeded,
    /// A job that failed, or a revision that cannot start; the reason says how.
    Failed(String),
}

impl Health {
    /// Whether the revision can serve (or a job has done its work).
    pub fn is_good(&self) -> bool {
        matches!(self, Health::Healthy | Health::Succeeded)
    }

    /// One word for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Degraded(_) => "degraded",
            Health::Unhealthy(_) => "unhealthy",
            Health::Succeeded => "succeeded",
            Health::Failed(_) => "failed",
        }
    }
}

/// One copy of a revision (a local process, a pod, a Cloud Run instance count).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedCopy {
    /// The process id, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its own port, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `running`, `starting`, `backoff`, `exited`.
    pub state: String,
    /// Whether its last health check passed.
    pub healthy: bool,
    /// How many times it has been restarted.
    pub restarts: u32,
    /// The exit code of its last run, when it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<i32>,
}

/// Request counters of one revision, from the platform's router or metrics service.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RevisionMetrics {
    /// Requests served since it started.
    pub requests: u64,
    /// Of those, answered 5xx or not answered at all.
    pub errors: u64,
    /// Requests per second over the last minute.
    pub rps: f64,
    /// Errors over requests in the last minute (0 when there were none).
    pub error_rate: f64,
    /// Median latency in milliseconds over the last minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in milliseconds over the last minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

/// One revision as the platform has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedRevision {
    /// Its name (`web-1a2b3c4d`).
    pub name: String,
    /// The spec it was deployed from (references, no secret values).
    pub spec: RevisionSpec,
    /// Its share of traffic, 0 to 100.
    pub weight: u8,
    /// Its tag, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The URL that reaches this revision alone, when it is tagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_url: Option<String>,
    /// How it is doing.
    pub health: Health,
    /// Its copies.
    #[serde(default)]
    pub copies: Vec<ObservedCopy>,
    /// Its request counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RevisionMetrics>,
    /// When it was created (RFC 3339).
    pub created: String,
}

impl ObservedRevision {
    /// Restarts of all its copies.
    pub fn restarts(&self) -> u32 {
        self.copies.iter().map(|copy| copy.restarts).sum()
    }
}

/// One service in one placement, as the platform has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObservedService {
    /// The service's name.
    pub name: String,
    /// What it is.
    pub kind: ServiceKind,
    /// Its stable URL, the one its dependents receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Its revisions, oldest first.
    pub revisions: Vec<ObservedRevision>,
}

impl ObservedService {
    /// The revisions that take traffic, with their weights.
    pub fn weights(&self) -> Vec<(String, u8)> {
        self.revisions
            .iter()
            .filter(|revision| revision.weight > 0)
            .map(|revision| (revision.name.clone(), revision.weight))
            .collect()
    }

    /// The revision with the most traffic (the newest among equals).
    pub fn serving(&self) -> Option<&ObservedRevision> {
        self.revisions
            .iter()
            .filter(|revision| revision.weight > 0)
            .max_by_key(|revision| revision.weight)
    }

    /// The revision called `name`.
    pub fn revision(&self, name: &str) -> Option<&ObservedRevision> {
        self.revisions.iter().find(|revision| revision.name == name)
    }
}

/// Everything that runs in one placement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Services by name.
    pub services: BTreeMap<String, ObservedService>,
    /// A token that changes whenever the placement changes (the local supervisor's generation).
    pub version: String,
    /// Whether anything runs there at all (a supervisor, a namespace).
    pub exists: bool,
    /// Where the placement's request metrics can be scraped in Prometheus text format, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
}

/// One step of a wait for readiness, shown while it waits.
pub type Progress<'a> = &'a (dyn Fn(String) + Send + Sync);

/// Where the services of a sandcastle run.
#[async_trait]
pub trait Platform: Send + Sync {
    /// Which platform this is.
    fn kind(&self) -> PlatformKind;

    /// What it can do beyond the required operations.
    fn capabilities(&self) -> PlatformCapabilities;

    /// Why this platform cannot run `spec`, if it cannot (an image without podman or docker locally).
    fn cannot_run(&self, spec: &RevisionSpec) -> Option<String> {
        let _ = spec;
        None
    }

    /// How often a rollout step's gate reads health and metrics while it pauses: often on this
    /// machine, seldom where each read is a metered API call and metrics lag by a minute.
    fn gate_interval(&self) -> Duration {
        Duration::from_millis(250)
    }

    /// The service account whose OIDC token pushes to a subscriber carry (its own, or the platform's
    /// default), where the platform checks callers; `None` elsewhere.
    fn push_identity(&self, service_account: Option<&str>) -> Option<String> {
        let _ = service_account;
        None
    }

    /// Lets pushes signed by `identity` (from `push_identity`) call `service`, where the platform
    /// checks callers; an error says why pushes could not get in.
    async fn allow_pushes(
        &self,
        at: &Placement,
        service: &str,
        identity: Option<&str>,
    ) -> Result<()> {
        let _ = (at, service, identity);
        Ok(())
    }

    /// Where pushes to `service` go: `url`, its URL as its dependents see it, unless the bus runs
    /// outside the platform's network and cannot reach that (Google's Pub/Sub and a service inside a
    /// cluster); then a URL the bus reaches, or an error that says how to get one.
    async fn push_url(&self, at: &Placement, service: &str, url: &str) -> Result<String> {
        let _ = (at, service);
        Ok(url.to_string())
    }

    /// What the revision refers to that does not exist where it would run (a Secret Manager secret
    /// or version that is missing), each as `VARIABLE: reason`; checked at plan time, never read.
    async fn missing_references(&self, at: &Placement, spec: &RevisionSpec) -> Result<Vec<String>> {
        let _ = (at, spec);
        Ok(Vec::new())
    }

    /// The stable URL `service` has (or will have) in this placement, when the platform knows it before
    /// the service is deployed; `None` otherwise.
    async fn planned_url(
        &self,
        at: &Placement,
        service: &str,
        observed: &Observed,
    ) -> Result<Option<String>> {
        let _ = at;
        Ok(observed.services.get(service).and_then(|s| s.url.clone()))
    }

    /// The platform's own manifests of what deploying `spec` as `revision` (and releasing it) would
    /// apply, for `plan` to show (Kubernetes objects, as JSON); none where the platform has none.
    async fn manifests(
        &self,
        at: &Placement,
        revision: &str,
        spec: &RevisionSpec,
    ) -> Result<Vec<serde_json::Value>> {
        let _ = (at, revision, spec);
        Ok(Vec::new())
    }

    /// What runs in this placement now.
    async fn observe(&self, at: &Placement) -> Result<Observed>;

    /// Creates the revision at 0 % traffic; deploying a revision that exists changes nothing. Returns
    /// the service's stable URL, when it has one.
    async fn deploy(
        &self,
        at: &Placement,
        name: &str,
        spec: &RevisionSpec,
        secrets: &SecretValues,
    ) -> Result<Option<String>>;

    /// Waits until the revision is healthy (a job: has succeeded), reporting progress; fails fast with
    /// the platform's own reason (and the revision's last log lines) when it cannot become so.
    async fn wait_ready(
        &self,
        at: &Placement,
        service: &str,
        revision: &str,
        deadline: Duration,
        progress: Progress<'_>,
    ) -> Result<()>;

    /// Sets the service's traffic: the release. Weights add up to 100.
    async fn set_traffic(
        &self,
        at: &Placement,
        service: &str,
        weights: &[(String, u8)],
    ) -> Result<()>;

    /// Gives a revision a tag with a URL that reaches it alone, for previews (moving the tag from
    /// another revision), or takes its tag away (`tag` `None`). Returns the tag's URL.
    async fn set_tag(
        &self,
        at: &Placement,
        service: &str,
        revision: &str,
        tag: Option<&str>,
    ) -> Result<Option<String>> {
        let _ = (at, service, revision, tag);
        Err(self.unsupported("tags"))
    }

    /// Stops a revision that takes no traffic, or (`revision` `None`) the whole service.
    async fn destroy(&self, at: &Placement, service: &str, revision: Option<&str>) -> Result<()>;

    /// The revision's (or the service's) log lines: the last `tail`, then new ones while `follow`.
    async fn logs(
        &self,
        at: &Placement,
        service: &str,
        revision: Option<&str>,
        tail: usize,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<String>>> {
        let _ = (at, service, revision, tail, follow);
        Err(self.unsupported("logs"))
    }

    /// Points the front door of `service` at these regions' URLs; returns the front door's URL.
    async fn set_front_door(
        &self,
        sandcastle: &str,
        service: &str,
        port: u16,
        regions: &[(String, String)],
        health_path: &str,
    ) -> Result<String> {
        let _ = (sandcastle, service, port, regions, health_path);
        Err(self.unsupported("front door"))
    }

    /// The front door's URL and which regions it sends to now, when there is one.
    async fn front_door(&self, sandcastle: &str) -> Result<Option<FrontDoorStatus>> {
        let _ = sandcastle;
        Ok(None)
    }

    /// Asks the platform to watch pushes to `service` at `path` for a probe message carrying `nonce`.
    async fn expect_probe(
        &self,
        at: &Placement,
        service: &str,
        path: &str,
        nonce: &str,
    ) -> Result<()> {
        let _ = (at, service, path, nonce);
        Err(self.unsupported("delivery probes"))
    }

    /// The HTTP status `service` answered a probe push with, once it has arrived.
    async fn probe_answer(&self, at: &Placement, nonce: &str) -> Result<Option<u16>> {
        let _ = (at, nonce);
        Err(self.unsupported("delivery probes"))
    }

    /// Requests `url` from where `service` runs; returns the status code (a link check for verify).
    async fn request_from(&self, at: &Placement, service: &str, url: &str) -> Result<u16> {
        let _ = (at, service, url);
        Err(self.unsupported("link checks"))
    }

    /// The metrics of every revision in Prometheus text format.
    async fn metrics_text(&self, at: &Placement) -> Result<String> {
        let _ = at;
        Err(self.unsupported("metrics"))
    }

    /// Re-adopts what runs after Mahavishnu (or a supervisor) went away: every placement this
    /// platform keeps state for is looked at again, and a supervisor that died is started again.
    /// Returns the placements it restarted something for.
    async fn recover(&self) -> Result<Vec<Placement>> {
        Ok(Vec::new())
    }

    /// Stops everything in the placement and forgets it.
    async fn destroy_placement(&self, at: &Placement) -> Result<()>;

    /// Stops a sandcastle's front door and forgets it; nothing to do where there is none.
    async fn destroy_front_door(&self, sandcastle: &str) -> Result<()> {
        let _ = sandcastle;
        Ok(())
    }

    /// The error for an operation this platform does not have.
    fn unsupported(&self, operation: &'static str) -> Error {
        Error::Invalid(format!(
            "the {} platform does not support {operation}",
            self.kind().as_str()
        ))
    }
}

/// A front door and where it sends requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrontDoorStatus {
    /// The service behind it.
    pub service: String,
    /// Its URL.
    pub url: String,
    /// Its IP address, where it has one of its own (a cloud load balancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Each region's URL and whether the front door sends to it now.
    pub regions: Vec<FrontDoorRegion>,
}

/// One region behind a front door.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrontDoorRegion {
    /// The region.
    pub region: String,
    /// The URL the front door sends to.
    pub url: String,
    /// Whether its last health check passed.
    pub healthy: bool,
}
