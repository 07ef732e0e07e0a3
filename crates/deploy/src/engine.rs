//! The engine: observe, plan, apply (waves of the graph, deploy at 0 %, wait, release by steps with a
//! gate at each), roll back, verify, and keep the journal and the release history.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use mahavishnu_core::deploy::{
    EventBus, FrontDoorStatus, Health, Manifest, Observed, ObservedService, Placement, Platform,
    PlatformKind, PushSubscription, RolloutSpec, SecretValues, ServiceKind, TopicRef,
};
use mahavishnu_core::store::Store;
use mahavishnu_core::{Error, Result, Timestamp};
use serde::{Deserialize, Serialize};

use crate::plan::{self, Action, Change, Plan, describe_weights};
use crate::store::{self as journal_store, ReleaseRecord};
use crate::wanted::{self, WantedService, Wiring, topic_ref};

/// How many services of one wave deploy at once.
const WAVE_PARALLELISM: usize = 4;

/// How many regions are observed, or have their new revisions started, at once.
const REGION_PARALLELISM: usize = 8;

/// Requests a new revision must have served before its error rate is judged before a pause ends.
const EARLY_GATE_REQUESTS: u64 = 20;

/// How long verify waits for a probe message to reach a subscriber.
const PROBE_PATIENCE: Duration = Duration::from_secs(15);

/// Gives the engine its event bus, started only when a sandcastle has topics.
#[async_trait]
pub trait BusProvider: Send + Sync {
    /// Why topics cannot work here, with the fix, when they cannot.
    fn unavailable(&self) -> Option<String>;

    /// The environment services get to reach the bus, when it already runs (plans never start it).
    fn running_env(&self) -> Option<BTreeMap<String, String>>;

    /// Connects to the bus, starting it when it does not run.
    async fn connect(&self) -> Result<Arc<dyn EventBus>>;

    /// The project topics live in.
    fn project(&self) -> String {
        wanted::LOCAL_PROJECT.to_string()
    }

    /// Called when a whole sandcastle was destroyed: a bus started for sandcastles and no longer
    /// used by any may stop.
    fn release_if_unused(&self) {}
}

/// An apply's hold on one region: its lock, and its entry in the journal.
struct OpenRegion {
    _lock: std::fs::File,
    apply_id: i64,
}

/// What the deploy pass did in one region, for the release pass that follows.
struct Predeployed {
    /// What ran before it: the release pass decides from it, as if it had done the deploys itself.
    observed: Observed,
    /// What it deployed: each service's URL, or why it failed.
    services: BTreeMap<String, std::result::Result<Option<String>, String>>,
    /// The bus it made the topics on (`Some(None)`: no topics were needed), when it got that far.
    bus: Option<Option<Arc<dyn EventBus>>>,
}

/// What to deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "part", content = "name")]
pub enum Selection {
    /// The whole sandcastle.
    Sandcastle,
    /// One service (a block) and whatever it needs that is missing.
    Block(String),
    /// A pipeline's services and whatever they need that is missing.
    Pipeline(String),
}

/// Progress lines while the engine works.
pub type ProgressFn = Arc<dyn Fn(String) + Send + Sync>;

/// How an apply runs.
#[derive(Clone)]
pub struct ApplyOptions {
    /// Continue after an interrupted apply.
    pub resume: bool,
    /// Where progress goes.
    pub progress: ProgressFn,
}

/// What happened to one service in an apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceOutcome {
    /// The region.
    pub region: String,
    /// The service.
    pub service: String,
    /// `unchanged`, `created`, `updated`, `restarted`, `released`, `ran`, `rolled back`, `left at 0 %`,
    /// `failed`, `skipped`.
    pub outcome: String,
    /// The revision it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The weights it ended with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<(String, u8)>,
    /// The service's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Why, for failures and rollbacks, in the platform's own words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Seconds it took.
    pub seconds: f64,
}

impl ServiceOutcome {
    /// Whether the apply did not do what it was asked for this service: it failed, was put back,
    /// was left at 0 %, or was never reached.
    pub fn went_wrong(&self) -> bool {
        matches!(
            self.outcome.as_str(),
            "failed" | "rolled back" | "left at 0 %" | "skipped"
        )
    }
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// The sandcastle.
    pub sandcastle: String,
    /// The platform.
    pub platform: String,
    /// Whether everything wanted is deployed and released.
    pub ok: bool,
    /// Every service touched, region by region.
    pub services: Vec<ServiceOutcome>,
    /// The front door, when the sandcastle has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_door: Option<String>,
    /// Whether anything changed.
    pub changed: bool,
}

/// What runs, region by region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The sandcastle.
    pub sandcastle: String,
    /// The platform.
    pub platform: String,
    /// Each region.
    pub regions: Vec<RegionStatus>,
    /// The front door, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_door: Option<FrontDoorStatus>,
}

/// One region's services.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionStatus {
    /// The region.
    pub region: String,
    /// Whether anything runs there.
    pub deployed: bool,
    /// Where its request metrics can be scraped (Prometheus text; see the README for the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url: Option<String>,
    /// Its services.
    pub services: Vec<ObservedService>,
}

/// One verify check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The region.
    pub region: String,
    /// What was checked (`healthy web`, `link web -> api`, `topic orders -> worker`).
    pub check: String,
    /// Whether it holds.
    pub holds: bool,
    /// What was seen.
    pub detail: String,
}

/// A revision's tag in one region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TagChange {
    /// The region.
    pub region: String,
    /// The revision.
    pub revision: String,
    /// Its tag now, `None` once taken away.
    pub tag: Option<String>,
    /// The URL that reaches the revision alone.
    pub url: Option<String>,
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The sandcastle.
    pub sandcastle: String,
    /// Whether every check holds.
    pub ok: bool,
    /// Every check.
    pub checks: Vec<Check>,
}

/// A change of traffic made by `release` or `rollback`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    /// The service.
    pub service: String,
    /// Each region's weights before and after.
    pub regions: Vec<TrafficChange>,
}

/// One region's traffic change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficChange {
    /// The region.
    pub region: String,
    /// Before.
    pub before: Vec<(String, u8)>,
    /// After.
    pub after: Vec<(String, u8)>,
}

/// Makes the platform, and the bus its topics live on, for one manifest: for platforms whose
/// settings come from the manifest's `[platforms.KIND]` and the user's named targets (a Cloud Run
/// project, Kubernetes clusters).
pub trait PlatformProvider: Send + Sync {
    /// Which platform it makes.
    fn kind(&self) -> PlatformKind;

    /// The platform and its bus for `manifest`; an error names the setting that is missing or wrong.
    fn open(&self, manifest: &Manifest) -> Result<(Arc<dyn Platform>, Arc<dyn BusProvider>)>;
}

/// Everything deployments need, for every platform: what the faces hold, and make an engine from.
pub struct Deployments {
    store: Arc<Store>,
    platforms: BTreeMap<PlatformKind, Arc<dyn Platform>>,
    providers: BTreeMap<PlatformKind, Arc<dyn PlatformProvider>>,
    bus: Arc<dyn BusProvider>,
    locks: PathBuf,
}

impl Deployments {
    /// The platforms this build has, the bus, the store (opened with [`crate::MIGRATIONS`]) and the
    /// directory of the apply locks.
    pub fn new(
        store: Arc<Store>,
        platforms: Vec<Arc<dyn Platform>>,
        bus: Arc<dyn BusProvider>,
        locks: PathBuf,
    ) -> Self {
        Deployments {
            store,
            platforms: platforms
                .into_iter()
                .map(|platform| (platform.kind(), platform))
                .collect(),
            providers: BTreeMap::new(),
            bus,
            locks,
        }
    }

    /// Adds a platform made for each manifest.
    pub fn with_provider(mut self, provider: Arc<dyn PlatformProvider>) -> Self {
        self.providers.insert(provider.kind(), provider);
        self
    }

    /// Re-adopts what runs on every platform (a supervisor that died is started again).
    pub async fn recover(&self) -> Result<Vec<Placement>> {
        let mut recovered = Vec::new();
        for platform in self.platforms.values() {
            recovered.extend(platform.recover().await?);
        }
        Ok(recovered)
    }

    /// The engine for `kind` (the manifest's own platform when `None`), and the manifest as that
    /// platform sees it (its regions for that platform).
    pub fn engine(
        &self,
        manifest: &Manifest,
        kind: Option<PlatformKind>,
    ) -> Result<(Manifest, Engine)> {
        let kind = kind.unwrap_or(manifest.sandcastle.platform);
        let manifest = manifest.for_platform(kind)?;
        let (platform, bus) = match (self.platforms.get(&kind), self.providers.get(&kind)) {
            (_, Some(provider)) => provider.open(&manifest)?,
            (Some(platform), None) => (Arc::clone(platform), Arc::clone(&self.bus)),
            (None, None) => {
                let have: BTreeSet<&str> = self
                    .platforms
                    .keys()
                    .chain(self.providers.keys())
                    .map(|kind| kind.as_str())
                    .collect();
                return Err(Error::Invalid(format!(
                    "this build cannot deploy to the {} platform; the platforms it has: {}",
                    kind.as_str(),
                    have.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        };
        let engine = Engine::new(Arc::clone(&self.store), platform, bus, self.locks.clone());
        Ok((manifest, engine))
    }
}

/// The deployment engine over one platform.
pub struct Engine {
    store: Arc<Store>,
    platform: Arc<dyn Platform>,
    bus: Arc<dyn BusProvider>,
    locks: PathBuf,
}

impl Engine {
    /// An engine deploying to `platform`, its journal in `store` (opened with [`crate::MIGRATIONS`]),
    /// its apply locks in `locks`.
    pub fn new(
        store: Arc<Store>,
        platform: Arc<dyn Platform>,
        bus: Arc<dyn BusProvider>,
        locks: PathBuf,
    ) -> Self {
        Engine {
            store,
            platform,
            bus,
            locks,
        }
    }

    /// The platform it deploys to.
    pub fn platform(&self) -> &Arc<dyn Platform> {
        &self.platform
    }

    /// Checks what only this machine can tell about a manifest: topics need a bus.
    pub fn check_environment(&self, manifest: &Manifest) -> Vec<String> {
        let mut problems = Vec::new();
        if !manifest.topics.is_empty()
            && let Some(reason) = self.bus.unavailable()
        {
            problems.push(reason);
        }
        problems
    }

    /// The regions to work on: those named (each must be the manifest's), or all of them.
    pub fn regions(manifest: &Manifest, only: &[String]) -> Result<Vec<String>> {
        for region in only {
            if !manifest.sandcastle.regions.contains(region) {
                return Err(Error::Invalid(format!(
                    "`{region}` is not a region of {}; its regions are: {}",
                    manifest.sandcastle.name,
                    manifest.sandcastle.regions.join(", ")
                )));
            }
        }
        Ok(if only.is_empty() {
            manifest.sandcastle.regions.clone()
        } else {
            only.to_vec()
        })
    }

    /// The services a selection names.
    pub fn chosen(manifest: &Manifest, selection: &Selection) -> Result<BTreeSet<String>> {
        match selection {
            Selection::Sandcastle => Ok(manifest.services.keys().cloned().collect()),
            Selection::Block(name) => {
                if manifest.services.contains_key(name) {
                    Ok(BTreeSet::from([name.clone()]))
                } else {
                    Err(Error::Invalid(format!(
                        "no service `{name}` in {}; the services are: {}",
                        manifest.path.display(),
                        manifest
                            .services
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
            Selection::Pipeline(name) => match manifest.pipelines.get(name) {
                Some(pipeline) => Ok(pipeline
                    .chain
                    .iter()
                    .filter(|link| manifest.services.contains_key(*link))
                    .cloned()
                    .collect()),
                None => Err(Error::Invalid(format!(
                    "no pipeline `{name}` in {}; the pipelines are: {}",
                    manifest.path.display(),
                    if manifest.pipelines.is_empty() {
                        "(none)".to_string()
                    } else {
                        manifest
                            .pipelines
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ))),
            },
        }
    }

    /// The services to deploy in a region: the chosen ones, and what they need that does not run there.
    fn selected(
        manifest: &Manifest,
        chosen: &BTreeSet<String>,
        observed: &Observed,
    ) -> BTreeSet<String> {
        let all: Vec<String> = chosen.iter().cloned().collect();
        manifest
            .closure(&all)
            .into_iter()
            .filter(|name| {
                chosen.contains(name)
                    || manifest
                        .services
                        .get(name)
                        .is_some_and(|service| service.kind == ServiceKind::External)
                    || !observed.services.contains_key(name)
            })
            .collect()
    }

    async fn observe_all(
        &self,
        manifest: &Manifest,
        regions: &[String],
    ) -> Result<BTreeMap<String, Observed>> {
        // Boxed and collected first, so that the future stays Send for the faces that spawn it.
        let looks: Vec<BoxFuture<'_, (String, Result<Observed>)>> = regions
            .iter()
            .map(|region| {
                let look: BoxFuture<'_, _> = Box::pin(async move {
                    let at = placement(manifest, region);
                    (region.clone(), self.platform.observe(&at).await)
                });
                look
            })
            .collect();
        let mut observed = BTreeMap::new();
        let results: Vec<_> = futures::stream::iter(looks)
            .buffer_unordered(REGION_PARALLELISM)
            .collect()
            .await;
        for (region, result) in results {
            observed.insert(region, result?);
        }
        Ok(observed)
    }

    /// What services in `at` are wired with: the URL of every service that has one or will have one
    /// before it is deployed (Cloud Run's are known from the project and region), and the bus.
    async fn wiring(
        &self,
        manifest: &Manifest,
        at: &Placement,
        observed: &Observed,
        bus_env: Option<&BTreeMap<String, String>>,
    ) -> Result<Wiring> {
        let mut urls: BTreeMap<String, String> = observed
            .services
            .iter()
            .filter_map(|(name, service)| service.url.clone().map(|url| (name.clone(), url)))
            .collect();
        for (name, service) in &manifest.services {
            if service.kind != ServiceKind::Http || urls.contains_key(name) {
                continue;
            }
            if let Some(url) = self.platform.planned_url(at, name, observed).await? {
                urls.insert(name.clone(), url);
            }
        }
        Ok(Wiring {
            urls,
            bus_env: bus_env.cloned().unwrap_or_default(),
            topic_project: self.bus.project(),
        })
    }

    /// The topic `topic` of the placement `at`.
    fn topic(&self, at: &Placement, topic: &str) -> TopicRef {
        topic_ref(&self.bus.project(), &at.sandcastle, &at.region, topic)
    }

    fn wanted_in(
        &self,
        manifest: &Manifest,
        region: &str,
        selected: &BTreeSet<String>,
        wiring: &Wiring,
        bus_known: bool,
    ) -> Vec<WantedService> {
        manifest
            .waves()
            .into_iter()
            .flatten()
            .filter(|name| selected.contains(name))
            .map(|name| {
                let mut wanted =
                    wanted::wanted_service(manifest, self.platform.kind(), region, &name, wiring);
                let service = &manifest.services[&name];
                if !bus_known && (!service.publishes.is_empty() || !service.subscribes.is_empty()) {
                    wanted
                        .pending
                        .push("PUBSUB_EMULATOR_HOST: known once the Pub/Sub emulator runs".into());
                }
                if let Some(spec) = &wanted.spec {
                    wanted.blocked = self.platform.cannot_run(spec).or_else(|| {
                        let missing =
                            wanted::missing_secrets(spec, &manifest.dir(), self.platform.kind());
                        (!missing.is_empty()).then(|| missing.join("; "))
                    });
                }
                wanted
            })
            .collect()
    }

    /// What an apply would change. Touches nothing (and starts nothing).
    pub async fn plan(
        &self,
        manifest: &Manifest,
        selection: &Selection,
        regions: &[String],
    ) -> Result<Plan> {
        let regions = Self::regions(manifest, regions)?;
        let chosen = Self::chosen(manifest, selection)?;
        if let Some(problem) = self.topic_problem(manifest, &chosen) {
            return Err(Error::Invalid(problem));
        }
        let observed = self.observe_all(manifest, &regions).await?;
        let bus_env = self.bus.running_env();
        let looks = regions.iter().map(|region| {
            let (chosen, bus_env) = (&chosen, &bus_env);
            let here = &observed[region];
            async move {
                let at = placement(manifest, region);
                let selected = Self::selected(manifest, chosen, here);
                let wiring = self.wiring(manifest, &at, here, bus_env.as_ref()).await?;
                let mut wanted =
                    self.wanted_in(manifest, region, &selected, &wiring, bus_env.is_some());
                self.check_references(&at, &mut wanted).await?;
                Ok::<_, Error>((region.clone(), wanted))
            }
        });
        let wanted: Vec<(String, Vec<WantedService>)> = futures::future::join_all(looks)
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let mut plan = plan::compute(
            &manifest.sandcastle.name,
            self.platform.kind().as_str(),
            &wanted,
            &observed,
        );
        if *selection != Selection::Sandcastle {
            // Services outside a partial deploy are not unwanted, only not asked for.
            plan.notes
                .retain(|note| !note.contains("is not wanted here"));
        }
        if manifest.front_door.is_some() && !self.platform.capabilities().front_door {
            plan.notes.push(format!(
                "the {} platform has no front door: [front_door] is left out here",
                self.platform.kind().as_str()
            ));
        }
        if !self.platform.capabilities().traffic_split
            && plan
                .changes
                .iter()
                .any(|change| change.action == Action::Update)
        {
            plan.notes.push(match self.platform.kind() {
                PlatformKind::Kubernetes => {
                    "releases move all traffic at once: weights (canary steps) \
                    need a Gateway API Gateway, named by `gateway` in each kubernetes target"
                        .to_string()
                }
                kind => format!("the {} platform moves all traffic at once", kind.as_str()),
            });
        }
        plan.manifests = self.manifests(manifest, &plan, &wanted).await?;
        Ok(plan)
    }

    /// The platform's manifests of every change that deploys or releases a revision.
    async fn manifests(
        &self,
        manifest: &Manifest,
        plan: &Plan,
        wanted: &[(String, Vec<WantedService>)],
    ) -> Result<Vec<serde_json::Value>> {
        let mut manifests = Vec::new();
        for change in &plan.changes {
            if change.action == Action::Blocked {
                continue;
            }
            let spec = wanted
                .iter()
                .filter(|(region, _)| *region == change.region)
                .flat_map(|(_, services)| services)
                .find(|service| service.name == change.service)
                .and_then(|service| service.spec.as_ref());
            let (Some(spec), Some(revision)) = (spec, &change.revision) else {
                continue;
            };
            let at = placement(manifest, &change.region);
            manifests.extend(self.platform.manifests(&at, revision, spec).await?);
        }
        Ok(manifests)
    }

    /// Blocks the wanted services whose references (secrets) do not exist where they would run.
    async fn check_references(&self, at: &Placement, wanted: &mut [WantedService]) -> Result<()> {
        let checks = wanted.iter().map(|service| async move {
            match (&service.spec, &service.blocked) {
                (Some(spec), None) if !spec.secrets.is_empty() => {
                    self.platform.missing_references(at, spec).await
                }
                _ => Ok(Vec::new()),
            }
        });
        let missing = futures::future::join_all(checks).await;
        for (service, missing) in wanted.iter_mut().zip(missing) {
            let missing = missing?;
            if !missing.is_empty() {
                service.blocked = Some(missing.join("; "));
            }
        }
        Ok(())
    }

    fn topic_problem(&self, manifest: &Manifest, chosen: &BTreeSet<String>) -> Option<String> {
        let uses_topics = manifest
            .closure(&chosen.iter().cloned().collect::<Vec<_>>())
            .iter()
            .filter_map(|name| manifest.services.get(name))
            .any(|service| !service.publishes.is_empty() || !service.subscribes.is_empty());
        if uses_topics {
            self.bus.unavailable()
        } else {
            None
        }
    }

    /// Runs the plan, region by region.
    pub async fn apply(
        &self,
        manifest: &Manifest,
        selection: &Selection,
        regions: &[String],
        options: &ApplyOptions,
    ) -> Result<ApplyReport> {
        let regions = Self::regions(manifest, regions)?;
        let chosen = Self::chosen(manifest, selection)?;
        if let Some(problem) = self.topic_problem(manifest, &chosen) {
            return Err(Error::Invalid(problem));
        }
        let mut report = ApplyReport {
            sandcastle: manifest.sandcastle.name.clone(),
            platform: self.platform.kind().as_str().to_string(),
            ok: true,
            services: Vec::new(),
            front_door: None,
            changed: false,
        };
        // Several regions deploy at once: every region is locked and entered in the journal first
        // (an interrupted apply refused unless resumed), and stays so until its release is done.
        let mut opened = BTreeMap::new();
        let mut predeployed = BTreeMap::new();
        if regions.len() > 1 {
            for region in &regions {
                match self.open_region(&placement(manifest, region), options) {
                    Ok(region_open) => {
                        opened.insert(region.clone(), region_open);
                    }
                    Err(e) => {
                        for region_open in opened.values() {
                            self.close_region(region_open, "failed");
                        }
                        return Err(e);
                    }
                }
            }
            predeployed = self
                .predeploy(manifest, &chosen, &regions, &opened, options)
                .await;
        }
        let mut urls: Vec<(String, String)> = Vec::new();
        for (index, region) in regions.iter().enumerate() {
            if !report.ok {
                for region in &regions[index..] {
                    if let Some(region_open) = opened.remove(region) {
                        self.close_region(&region_open, "failed");
                    }
                    let done = predeployed
                        .remove(region)
                        .map(|p| p.services)
                        .unwrap_or_default();
                    report.services.extend(
                        manifest
                            .services
                            .keys()
                            .filter(|name| chosen.contains(*name))
                            .map(|name| ServiceOutcome {
                                region: region.clone(),
                                service: name.clone(),
                                outcome: "skipped".into(),
                                revision: None,
                                weights: Vec::new(),
                                url: None,
                                // What the deploy pass did there is said, not hidden.
                                detail: Some(match done.get(name) {
                                    Some(Ok(_)) => "deployed, not released: an earlier region \
                                                    failed"
                                        .into(),
                                    Some(Err(e)) => format!("an earlier region failed; {e}"),
                                    None => "an earlier region failed".into(),
                                }),
                                seconds: 0.0,
                            }),
                    );
                }
                break;
            }
            let outcomes = match self
                .apply_region(
                    manifest,
                    &chosen,
                    region,
                    opened.remove(region),
                    predeployed.remove(region),
                    options,
                )
                .await
            {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    // The regions not reached are not left looking interrupted.
                    for region_open in opened.values() {
                        self.close_region(region_open, "failed");
                    }
                    return Err(e);
                }
            };
            if let Some(door) = &manifest.front_door
                && let Some(url) = outcomes
                    .iter()
                    .find(|outcome| outcome.service == door.service)
                    .and_then(|outcome| outcome.url.clone())
            {
                urls.push((region.clone(), url));
            }
            report.ok &= !outcomes.iter().any(ServiceOutcome::went_wrong);
            report.changed |= outcomes
                .iter()
                .any(|outcome| outcome.outcome != "unchanged");
            report.services.extend(outcomes);
        }
        if let Some(door) = &manifest.front_door
            && report.ok
            && self.platform.capabilities().front_door
            && regions == manifest.sandcastle.regions
            && urls.len() == regions.len()
        {
            let health = manifest.services[&door.service]
                .health
                .clone()
                .unwrap_or_default()
                .path;
            let before = self
                .platform
                .front_door(&manifest.sandcastle.name)
                .await
                .ok()
                .flatten();
            let unchanged = before.as_ref().is_some_and(|status| {
                status
                    .regions
                    .iter()
                    .map(|r| (r.region.clone(), r.url.clone()))
                    .collect::<Vec<_>>()
                    == urls
            });
            let url = match before {
                Some(status) if unchanged => status.url,
                _ => {
                    report.changed = true;
                    (options.progress)(format!(
                        "front door: {} in {}",
                        door.service,
                        regions.join(", ")
                    ));
                    self.platform
                        .set_front_door(
                            &manifest.sandcastle.name,
                            &door.service,
                            door.port,
                            &urls,
                            &health,
                        )
                        .await?
                }
            };
            report.front_door = Some(url);
        }
        Ok(report)
    }

    /// Deploy is not release: every region deploys at once, wave by wave (jobs run, new revisions
    /// start at 0 % and are waited for), so that the region-by-region release that follows waits for
    /// its gates, not for each region's starts. A region stops at the first service whose wiring is
    /// not known yet, that is blocked, or that fails; the release pass takes over from there, and
    /// reports what happened here as its own.
    async fn predeploy(
        &self,
        manifest: &Manifest,
        chosen: &BTreeSet<String>,
        regions: &[String],
        opened: &BTreeMap<String, OpenRegion>,
        options: &ApplyOptions,
    ) -> BTreeMap<String, Predeployed> {
        let runs = regions
            .iter()
            .map(|region| -> BoxFuture<'_, Option<(String, Predeployed)>> {
                Box::pin(async move {
                    let at = placement(manifest, region);
                    let apply_id = opened.get(region)?.apply_id;
                    let observed = self.platform.observe(&at).await.ok()?;
                    let selected = Self::selected(manifest, chosen, &observed);
                    // Topics made here are not made again by the release pass; when this fails,
                    // the release pass tries again and reports why.
                    let bus = self.ensure_topics(manifest, &at, &selected).await.ok();
                    let done = match &bus {
                        Some(bus) => {
                            self.predeploy_region(
                                manifest,
                                &selected,
                                &at,
                                &observed,
                                bus.as_deref(),
                                apply_id,
                                options,
                            )
                            .await
                        }
                        None => BTreeMap::new(),
                    };
                    Some((
                        region.clone(),
                        Predeployed {
                            observed,
                            services: done,
                            bus,
                        },
                    ))
                })
            });
        let runs: Vec<BoxFuture<'_, Option<(String, Predeployed)>>> = runs.collect();
        let runs: Vec<_> = futures::stream::iter(runs)
            .buffer_unordered(REGION_PARALLELISM)
            .collect()
            .await;
        runs.into_iter().flatten().collect()
    }

    /// One region's deploy pass: what it deployed, each with its URL or why it failed.
    #[allow(clippy::too_many_arguments)]
    async fn predeploy_region(
        &self,
        manifest: &Manifest,
        selected: &BTreeSet<String>,
        at: &Placement,
        observed: &Observed,
        bus: Option<&dyn EventBus>,
        apply_id: i64,
        options: &ApplyOptions,
    ) -> BTreeMap<String, std::result::Result<Option<String>, String>> {
        let region = at.region.as_str();
        let mut done = BTreeMap::new();
        let bus_env = bus.map(|bus| bus.client_env());
        let Ok(mut wiring) = self.wiring(manifest, at, observed, bus_env.as_ref()).await else {
            return done;
        };
        for wave in manifest.waves() {
            let mut starts = Vec::new();
            for name in wave.iter().filter(|name| selected.contains(*name)) {
                let mut wanted =
                    wanted::wanted_service(manifest, self.platform.kind(), region, name, &wiring);
                let Some(spec) = wanted.spec.clone() else {
                    continue; // an external
                };
                wanted.blocked = self.platform.cannot_run(&spec);
                let Some(change) = plan::decide(region, &wanted, observed.services.get(name))
                else {
                    continue;
                };
                if !wanted.pending.is_empty()
                    || wanted.blocked.is_some()
                    || !matches!(
                        change.action,
                        Action::Create | Action::Update | Action::RunJob
                    )
                {
                    return done; // the release pass goes on from here, in this region's turn
                }
                starts.push((name.clone(), spec, change.action.label()));
            }
            type Start<'a> = BoxFuture<'a, (String, std::result::Result<Option<String>, String>)>;
            let runs = starts.into_iter().map(|(name, spec, action)| -> Start<'_> {
                Box::pin(async move {
                    let revision = spec.revision_name();
                    let _ = journal_store::journal(
                        &self.store,
                        apply_id,
                        &name,
                        action,
                        &revision,
                        "started",
                    );
                    let result = async {
                        let secrets =
                            wanted::resolve_secrets(&spec, &manifest.dir(), self.platform.kind())
                                .map_err(|e| e.to_string())?;
                        let revision = spec.revision_name();
                        (options.progress)(format!("{region}/{name}: starting {revision}"));
                        let url = self
                            .platform
                            .deploy(at, &revision, &spec, &SecretValues::new(secrets))
                            .await
                            .map_err(|e| e.to_string())?;
                        let deadline = wanted::ready_deadline(&manifest.services[&name]);
                        let progress =
                            |line: String| (options.progress)(format!("{region}/{name}: {line}"));
                        self.platform
                            .wait_ready(at, &name, &revision, deadline, &progress)
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(url)
                    }
                    .await;
                    let state = if result.is_ok() { "done" } else { "failed" };
                    let _ = journal_store::journal(
                        &self.store,
                        apply_id,
                        &name,
                        action,
                        &revision,
                        state,
                    );
                    (name, result)
                })
            });
            let runs: Vec<Start<'_>> = runs.collect();
            let results: Vec<_> = futures::stream::iter(runs)
                .buffered(WAVE_PARALLELISM)
                .collect()
                .await;
            let mut failed = false;
            for (name, result) in results {
                if let Ok(Some(url)) = &result {
                    wiring.urls.insert(name.clone(), url.clone());
                }
                failed |= result.is_err();
                done.insert(name, result);
            }
            if failed {
                break;
            }
        }
        done
    }

    /// Deletes a destroyed placement's push subscriptions and topics, where the bus runs (a bus that
    /// is not running is not started for this): on Google's Pub/Sub they would outlive it, and
    /// keep pushing to URLs that are gone.
    async fn forget_topics(&self, manifest: &Manifest, at: &Placement) -> Result<()> {
        if manifest.topics.is_empty() || self.bus.running_env().is_none() {
            return Ok(());
        }
        let bus = self.bus.connect().await?;
        for topic in manifest.topics.keys() {
            for (subscriber, _) in manifest.subscribers(topic) {
                let id = format!("{}.{}.{topic}.{subscriber}", at.sandcastle, at.region);
                bus.delete_subscription(&self.bus.project(), &id).await?;
            }
            bus.delete_topic(&self.topic(at, topic)).await?;
            bus.delete_topic(&self.topic(at, &format!("{topic}.dead-letter")))
                .await?;
        }
        Ok(())
    }

    /// Connects the bus and makes the placement's topics, when the selected services use any.
    async fn ensure_topics(
        &self,
        manifest: &Manifest,
        at: &Placement,
        selected: &BTreeSet<String>,
    ) -> Result<Option<Arc<dyn EventBus>>> {
        let uses_topics = selected.iter().any(|name| {
            let service = &manifest.services[name];
            !service.publishes.is_empty() || !service.subscribes.is_empty()
        });
        if !uses_topics {
            return Ok(None);
        }
        let bus = self.bus.connect().await?;
        for topic in manifest.topics.keys() {
            bus.ensure_topic(&self.topic(at, topic)).await?;
            if manifest.topics[topic].dead_letter.is_some() {
                bus.ensure_topic(&self.topic(at, &format!("{topic}.dead-letter")))
                    .await?;
            }
        }
        Ok(Some(bus))
    }

    /// Locks a region for this apply and enters the apply in its journal; an interrupted apply is
    /// refused unless resumed.
    fn open_region(&self, at: &Placement, options: &ApplyOptions) -> Result<OpenRegion> {
        let lock = self.lock(at)?;
        if let Some(interrupted) =
            journal_store::interrupted_apply(&self.store, &at.sandcastle, &at.region)?
        {
            if !options.resume {
                return Err(Error::Failed(format!(
                    "the apply of {at} started at {} was interrupted{}; run `mahavishnu deploy apply \
                     --resume` to continue it (it converges from what runs now)",
                    interrupted.started_at,
                    interrupted
                        .last_step
                        .map_or_else(String::new, |step| format!(" during \"{step}\""))
                )));
            }
            journal_store::finish_apply(&self.store, interrupted.id, "interrupted")?;
            (options.progress)(format!(
                "{}: resuming the apply interrupted at {}",
                at.region, interrupted.started_at
            ));
        }
        let apply_id = journal_store::begin_apply(
            &self.store,
            &at.sandcastle,
            &at.region,
            self.platform.kind().as_str(),
        )?;
        Ok(OpenRegion {
            _lock: lock,
            apply_id,
        })
    }

    /// Ends a region's entry in the journal (its lock goes with it).
    fn close_region(&self, region: &OpenRegion, state: &str) {
        let _ = journal_store::finish_apply(&self.store, region.apply_id, state);
    }

    async fn apply_region(
        &self,
        manifest: &Manifest,
        chosen: &BTreeSet<String>,
        region: &str,
        opened: Option<OpenRegion>,
        predeployed: Option<Predeployed>,
        options: &ApplyOptions,
    ) -> Result<Vec<ServiceOutcome>> {
        let at = placement(manifest, region);
        let opened = match opened {
            Some(opened) => opened,
            None => self.open_region(&at, options)?,
        };
        let result = self
            .apply_waves(manifest, chosen, &at, predeployed, opened.apply_id, options)
            .await;
        let state = match &result {
            Ok(outcomes) if !outcomes.iter().any(ServiceOutcome::went_wrong) => "succeeded",
            _ => "failed",
        };
        journal_store::finish_apply(&self.store, opened.apply_id, state)?;
        result
    }

    async fn apply_waves(
        &self,
        manifest: &Manifest,
        chosen: &BTreeSet<String>,
        at: &Placement,
        predeployed: Option<Predeployed>,
        apply_id: i64,
        options: &ApplyOptions,
    ) -> Result<Vec<ServiceOutcome>> {
        let region = at.region.as_str();
        let (observed, deployed, bus) = match predeployed {
            Some(done) => (done.observed, done.services, done.bus),
            None => (self.platform.observe(at).await?, BTreeMap::new(), None),
        };
        let deployed = &deployed;
        let selected = Self::selected(manifest, chosen, &observed);
        let bus = match bus {
            Some(bus) => bus,
            None => self.ensure_topics(manifest, at, &selected).await?,
        };
        let bus_env = bus.as_ref().map(|bus| bus.client_env());
        let wiring = Arc::new(Mutex::new(
            self.wiring(manifest, at, &observed, bus_env.as_ref())
                .await?,
        ));
        let mut outcomes: Vec<ServiceOutcome> = Vec::new();
        let mut failed = false;
        for wave in manifest.waves() {
            let wave: Vec<String> = wave
                .into_iter()
                .filter(|name| selected.contains(name))
                .collect();
            if wave.is_empty() {
                continue;
            }
            if failed {
                outcomes.extend(
                    wave.iter()
                        .map(|name| skipped(region, name, "a service it follows failed")),
                );
                continue;
            }
            let runs: Vec<BoxFuture<'_, ServiceOutcome>> = wave
                .iter()
                .map(|name| {
                    let wiring = Arc::clone(&wiring);
                    let observed = observed.services.get(name).cloned();
                    let bus = bus.clone();
                    let run: BoxFuture<'_, ServiceOutcome> = Box::pin(async move {
                        let snapshot = wiring.lock().map(|w| w.clone()).unwrap_or_default();
                        let outcome = self
                            .apply_service(
                                manifest,
                                at,
                                name,
                                &snapshot,
                                observed.as_ref(),
                                deployed.get(name),
                                apply_id,
                                options,
                            )
                            .await;
                        if let Some(url) = &outcome.url
                            && let Ok(mut wiring) = wiring.lock()
                        {
                            wiring.urls.insert(name.clone(), url.clone());
                        }
                        if outcome.outcome != "failed"
                            && let (Some(bus), Some(url)) = (&bus, &outcome.url)
                            && let Err(e) =
                                self.subscribe(manifest, at, name, url, bus.as_ref()).await
                        {
                            return ServiceOutcome {
                                outcome: "failed".into(),
                                detail: Some(e.to_string()),
                                ..outcome
                            };
                        }
                        outcome
                    });
                    run
                })
                .collect();
            let results: Vec<ServiceOutcome> = futures::stream::iter(runs)
                .buffered(WAVE_PARALLELISM)
                .collect()
                .await;
            failed = results.iter().any(|outcome| outcome.outcome == "failed");
            // An external runs elsewhere: nothing happened to it to report.
            outcomes.extend(results.into_iter().filter(|outcome| {
                manifest.services[&outcome.service].kind != ServiceKind::External
            }));
        }
        if failed {
            self.roll_back_released(manifest, at, &mut outcomes, apply_id, options)
                .await;
        }
        Ok(outcomes)
    }

    async fn subscribe(
        &self,
        manifest: &Manifest,
        at: &Placement,
        name: &str,
        url: &str,
        bus: &dyn EventBus,
    ) -> Result<()> {
        let subscribes = &manifest.services[name].subscribes;
        let identity = self
            .platform
            .push_identity(manifest.services[name].service_account.as_deref());
        let url = if subscribes.is_empty() {
            url.to_string()
        } else {
            self.platform.push_url(at, name, url).await?
        };
        if !subscribes.is_empty() {
            // Pushes must be let in before they come.
            self.platform
                .allow_pushes(at, name, identity.as_deref())
                .await?;
        }
        for (topic, path) in subscribes {
            let dead_letter = manifest
                .topics
                .get(topic)
                .and_then(|spec| spec.dead_letter.as_ref())
                .map(|dl| (self.topic(at, &format!("{topic}.dead-letter")), dl.after));
            bus.ensure_push_subscription(&PushSubscription {
                id: format!("{}.{}.{topic}.{name}", at.sandcastle, at.region),
                topic: self.topic(at, topic),
                endpoint: format!("{}{path}", url.trim_end_matches('/')),
                dead_letter,
                ack_deadline: Duration::from_secs(10),
                push_identity: identity.clone(),
            })
            .await?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_service(
        &self,
        manifest: &Manifest,
        at: &Placement,
        name: &str,
        wiring: &Wiring,
        observed: Option<&ObservedService>,
        predeployed: Option<&std::result::Result<Option<String>, String>>,
        apply_id: i64,
        options: &ApplyOptions,
    ) -> ServiceOutcome {
        let started = std::time::Instant::now();
        let region = at.region.as_str();
        let mut outcome = ServiceOutcome {
            region: region.to_string(),
            service: name.to_string(),
            outcome: "unchanged".into(),
            revision: None,
            weights: observed.map(ObservedService::weights).unwrap_or_default(),
            url: observed.and_then(|observed| observed.url.clone()),
            detail: None,
            seconds: 0.0,
        };
        let mut wanted =
            wanted::wanted_service(manifest, self.platform.kind(), region, name, wiring);
        let Some(spec) = wanted.spec.clone() else {
            return outcome; // an external: nothing runs
        };
        if !wanted.pending.is_empty() {
            outcome.outcome = "failed".into();
            outcome.detail = Some(wanted.pending.join("; "));
            return outcome;
        }
        wanted.blocked = self.platform.cannot_run(&spec);
        let Some(change) = plan::decide(region, &wanted, observed) else {
            outcome.revision = observed.and_then(|o| o.serving()).map(|r| r.name.clone());
            return outcome;
        };
        let revision = spec.revision_name();
        outcome.revision = Some(revision.clone());
        let say = |line: String| (options.progress)(format!("{region}/{name}: {line}"));
        let fail = |mut outcome: ServiceOutcome, detail: String| {
            journal_store::journal(
                &self.store,
                apply_id,
                name,
                change.action.label(),
                &detail,
                "failed",
            )
            .ok();
            outcome.outcome = "failed".into();
            outcome.detail = Some(detail);
            outcome.seconds = started.elapsed().as_secs_f64();
            outcome
        };
        if change.action == Action::Blocked {
            return fail(outcome, change.causes.join("; "));
        }
        say(format!(
            "{} {revision} ({})",
            change.action.label(),
            change.causes.join(", ")
        ));
        let _ = journal_store::journal(
            &self.store,
            apply_id,
            name,
            change.action.label(),
            &revision,
            "started",
        );
        if let Some(done) = predeployed {
            // The deploy pass started (or ran) it already: here it is only released.
            match done {
                Ok(url) => outcome.url = url.clone().or(outcome.url),
                Err(detail) => {
                    let mut failed = fail(outcome, detail.clone());
                    if change.action != Action::RunJob
                        && observed.is_some_and(|o| !o.weights().is_empty())
                    {
                        failed.detail = failed.detail.map(|d| {
                            format!(
                                "{d}\n(the new revision is left at 0 %; the old one still serves)"
                            )
                        });
                    }
                    return failed;
                }
            }
        } else if change.action == Action::Release {
            // A revision left by an interrupted apply may still be starting: it takes traffic only
            // once it is ready, like any other.
            let deadline = wanted::ready_deadline(&manifest.services[name]);
            let progress = |line: String| say(line);
            if let Err(e) = self
                .platform
                .wait_ready(at, name, &revision, deadline, &progress)
                .await
            {
                return fail(outcome, e.to_string());
            }
        } else {
            let secrets =
                match wanted::resolve_secrets(&spec, &manifest.dir(), self.platform.kind()) {
                    Ok(values) => SecretValues::new(values),
                    Err(e) => return fail(outcome, e.to_string()),
                };
            match self.platform.deploy(at, &revision, &spec, &secrets).await {
                Ok(url) => outcome.url = url.or(outcome.url),
                Err(e) => return fail(outcome, e.to_string()),
            }
            let deadline = wanted::ready_deadline(&manifest.services[name]);
            let progress = |line: String| say(line);
            if let Err(e) = self
                .platform
                .wait_ready(at, name, &revision, deadline, &progress)
                .await
            {
                let mut failed = fail(outcome, e.to_string());
                if change.action != Action::RunJob
                    && observed.is_some_and(|o| !o.weights().is_empty())
                {
                    failed.detail = failed.detail.map(|d| {
                        format!("{d}\n(the new revision is left at 0 %; the old one still serves)")
                    });
                }
                return failed;
            }
        }
        if spec.kind == ServiceKind::Job {
            let _ =
                journal_store::journal(&self.store, apply_id, name, "run job", &revision, "done");
            outcome.outcome = "ran".into();
            outcome.seconds = started.elapsed().as_secs_f64();
            return outcome;
        }
        let before = observed.map(ObservedService::weights).unwrap_or_default();
        let rollout = manifest.services[name].rollout.clone();
        match self
            .roll_out(at, name, &revision, &before, &rollout, apply_id, &say)
            .await
        {
            Ok(weights) => {
                outcome.weights = weights;
                outcome.outcome = match change.action {
                    Action::Create => "created",
                    Action::Update => "updated",
                    Action::Restart => "restarted",
                    _ => "released",
                }
                .into();
                // A new service has nothing older to stop.
                if observed.is_some() {
                    self.prune(at, name, &revision, &before).await;
                }
            }
            Err(e) => {
                outcome.weights = before;
                return fail(outcome, e.to_string());
            }
        }
        let _ = journal_store::journal(
            &self.store,
            apply_id,
            name,
            change.action.label(),
            &revision,
            "done",
        );
        outcome.seconds = started.elapsed().as_secs_f64();
        outcome
    }

    /// Moves traffic to `revision` by the rollout steps, reading the gate after each step short of 100;
    /// a failed gate puts the traffic back as it was, at once.
    #[allow(clippy::too_many_arguments)]
    async fn roll_out(
        &self,
        at: &Placement,
        name: &str,
        revision: &str,
        before: &[(String, u8)],
        rollout: &RolloutSpec,
        apply_id: i64,
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Vec<(String, u8)>> {
        let current = before
            .iter()
            .find(|(r, _)| r == revision)
            .map_or(0, |(_, w)| *w);
        let others: Vec<(String, u8)> = before
            .iter()
            .filter(|(r, _)| r != revision)
            .cloned()
            .collect();
        let steps: Vec<u8> = if others.is_empty() || !self.platform.capabilities().traffic_split {
            vec![100]
        } else {
            rollout
                .steps
                .iter()
                .copied()
                .filter(|step| *step > current)
                .collect()
        };
        let mut weights = before.to_vec();
        for step in steps {
            weights = split(revision, step, &others);
            self.platform.set_traffic(at, name, &weights).await?;
            let cause = if step == 100 {
                "release".to_string()
            } else {
                format!("canary step {step} %")
            };
            self.record(at, name, &weights, &cause, Some(apply_id));
            say(format!("traffic {}", describe_weights(&weights)));
            if step == 100 {
                break;
            }
            // The gate is read through the pause, so that a canary that fails does not keep its
            // share to the end of it; early readings judge the error rate once enough requests came.
            let until = tokio::time::Instant::now() + rollout.pause;
            let mut verdict = Ok(());
            while verdict.is_ok() && tokio::time::Instant::now() < until {
                let next = tokio::time::Instant::now() + self.platform.gate_interval();
                tokio::time::sleep_until(until.min(next)).await;
                verdict = self
                    .gate(at, name, revision, rollout, EARLY_GATE_REQUESTS)
                    .await;
            }
            if verdict.is_ok() {
                verdict = self.gate(at, name, revision, rollout, 0).await;
            }
            if let Err(reason) = verdict {
                let back = if before.is_empty() {
                    others.clone()
                } else {
                    before.to_vec()
                };
                if !back.is_empty() {
                    self.platform.set_traffic(at, name, &back).await?;
                    self.record(
                        at,
                        name,
                        &back,
                        &format!("rolled back: {reason}"),
                        Some(apply_id),
                    );
                }
                return Err(Error::Failed(format!(
                    "canary step {step} %: {reason}; traffic is back on {}",
                    describe_weights(&back)
                )));
            }
        }
        Ok(weights)
    }

    /// A step's gate: the new revision is healthy, and its error rate is within the rollout's limit.
    async fn gate(
        &self,
        at: &Placement,
        name: &str,
        revision: &str,
        rollout: &RolloutSpec,
        least_requests: u64,
    ) -> std::result::Result<(), String> {
        let observed = self.platform.observe(at).await.map_err(|e| e.to_string())?;
        let found = observed
            .services
            .get(name)
            .and_then(|service| service.revision(revision))
            .ok_or_else(|| format!("{revision} is gone"))?;
        if !found.health.is_good() {
            return Err(format!("{revision} is {}", describe_health(&found.health)));
        }
        let Some(limit) = rollout.max_error_rate else {
            return Ok(());
        };
        match &found.metrics {
            Some(metrics) if metrics.requests >= least_requests && metrics.error_rate > limit => {
                Err(format!(
                    "{revision}'s error rate {:.1} % is above rollout.max_error_rate {:.1} %",
                    metrics.error_rate * 100.0,
                    limit * 100.0
                ))
            }
            // A limit that cannot be read is not a limit that holds: the canary goes no further.
            None if self.platform.capabilities().metrics
                && found.spec.kind == ServiceKind::Http =>
            {
                Err(format!(
                    "{revision}'s error rate cannot be read from the platform's metrics, so \
                     rollout.max_error_rate cannot be checked; make the metrics readable (on Cloud \
                     Run: the Monitoring API and monitoring.timeSeries.list) or drop the limit"
                ))
            }
            _ => Ok(()),
        }
    }

    /// Stops revisions that take no traffic, keeping the new one and the one it replaced (for rollback).
    async fn prune(&self, at: &Placement, name: &str, revision: &str, before: &[(String, u8)]) {
        let Ok(observed) = self.platform.observe(at).await else {
            return;
        };
        let Some(service) = observed.services.get(name) else {
            return;
        };
        let keep: BTreeSet<&str> = before
            .iter()
            .map(|(r, _)| r.as_str())
            .chain([revision])
            .collect();
        for old in &service.revisions {
            if old.weight == 0 && !keep.contains(old.name.as_str()) {
                let _ = self.platform.destroy(at, name, Some(&old.name)).await;
            }
        }
    }

    async fn roll_back_released(
        &self,
        manifest: &Manifest,
        at: &Placement,
        outcomes: &mut [ServiceOutcome],
        apply_id: i64,
        options: &ApplyOptions,
    ) {
        // Reverse order: dependents first, so that nothing calls a dependency older than it expects.
        for index in (0..outcomes.len()).rev() {
            let outcome = &outcomes[index];
            if !matches!(
                outcome.outcome.as_str(),
                "updated" | "released" | "restarted"
            ) {
                continue;
            }
            if !manifest.services[&outcome.service].rollout.auto_rollback {
                continue;
            }
            let service = outcome.service.clone();
            let previous = journal_store::releases(
                &self.store,
                &at.sandcastle,
                &service,
                Some(&at.region),
                50,
            )
            .ok()
            .and_then(|history| {
                history.into_iter().find(|release| {
                    !release
                        .weights
                        .iter()
                        .any(|(r, _)| Some(r) == outcome.revision.as_ref())
                })
            });
            let Some(previous) = previous else { continue };
            let result = self
                .platform
                .set_traffic(at, &service, &previous.weights)
                .await;
            let entry = &mut outcomes[index];
            match result {
                Ok(()) => {
                    self.record(
                        at,
                        &service,
                        &previous.weights,
                        "auto rollback",
                        Some(apply_id),
                    );
                    (options.progress)(format!(
                        "{}/{service}: rolled back to {}",
                        at.region,
                        describe_weights(&previous.weights)
                    ));
                    entry.outcome = "rolled back".into();
                    entry.detail = Some(format!(
                        "put back to {} because a later service failed",
                        describe_weights(&previous.weights)
                    ));
                    entry.weights = previous.weights;
                }
                Err(e) => entry.detail = Some(format!("could not roll back: {e}")),
            }
        }
        for outcome in outcomes.iter_mut() {
            if outcome.outcome == "failed"
                && outcome
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.contains("left at 0 %"))
            {
                outcome.outcome = "left at 0 %".into();
            }
        }
    }

    fn record(
        &self,
        at: &Placement,
        service: &str,
        weights: &[(String, u8)],
        cause: &str,
        apply: Option<i64>,
    ) {
        let record = ReleaseRecord {
            region: at.region.clone(),
            service: service.to_string(),
            weights: weights.to_vec(),
            cause: cause.to_string(),
            at: Timestamp::now(),
        };
        let _ = journal_store::record_release(&self.store, &at.sandcastle, &record, apply);
    }

    fn lock(&self, at: &Placement) -> Result<std::fs::File> {
        mahavishnu_core::paths::ensure_private_dir(&self.locks)?;
        let path = self
            .locks
            .join(format!("{}.{}.lock", at.sandcastle, at.region));
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        // SAFETY: flock on a descriptor this process owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::Failed(format!(
                "another apply of {at} is running ({}); wait for it to finish",
                if holder.trim().is_empty() {
                    "pid unknown".to_string()
                } else {
                    holder.trim().to_string()
                }
            )));
        }
        use std::io::{Seek, Write};
        let _ = file.set_len(0);
        let _ = file.seek(std::io::SeekFrom::Start(0));
        let _ = write!(
            file,
            "pid {}, started {}",
            std::process::id(),
            Timestamp::now()
        );
        Ok(file)
    }

    /// What runs, region by region.
    pub async fn status(&self, manifest: &Manifest, regions: &[String]) -> Result<StatusReport> {
        let regions = Self::regions(manifest, regions)?;
        let observed = self.observe_all(manifest, &regions).await?;
        let front_door = if manifest.front_door.is_some() {
            self.platform.front_door(&manifest.sandcastle.name).await?
        } else {
            None
        };
        Ok(StatusReport {
            sandcastle: manifest.sandcastle.name.clone(),
            platform: self.platform.kind().as_str().to_string(),
            regions: regions
                .iter()
                .map(|region| {
                    let here = &observed[region];
                    RegionStatus {
                        region: region.clone(),
                        deployed: here.exists,
                        metrics_url: here.metrics_url.clone(),
                        services: here.services.values().cloned().collect(),
                    }
                })
                .collect(),
            front_door,
        })
    }

    /// The release history of a service.
    pub fn history(
        &self,
        manifest: &Manifest,
        service: &str,
        region: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ReleaseRecord>> {
        Self::chosen(manifest, &Selection::Block(service.to_string()))?;
        if let Some(region) = region {
            Self::regions(manifest, &[region.to_string()])?;
        }
        journal_store::releases(
            &self.store,
            &manifest.sandcastle.name,
            service,
            region,
            limit,
        )
    }

    /// Sets a service's traffic in every region named (all by default) at once.
    pub async fn release(
        &self,
        manifest: &Manifest,
        service: &str,
        weights: &[(String, u8)],
        regions: &[String],
        cause: &str,
    ) -> Result<TrafficReport> {
        Self::chosen(manifest, &Selection::Block(service.to_string()))?;
        let total: u32 = weights.iter().map(|(_, w)| u32::from(*w)).sum();
        if total != 100 {
            return Err(Error::Invalid(format!(
                "the weights add up to {total}, not 100; give e.g. --weights REV=90,REV2=10"
            )));
        }
        if weights.len() > 1 && !self.platform.capabilities().traffic_split {
            return Err(Error::Invalid(format!(
                "the {} platform does not split traffic; release one revision with --to REV",
                self.platform.kind().as_str()
            )));
        }
        let regions = Self::regions(manifest, regions)?;
        let mut report = TrafficReport {
            service: service.to_string(),
            regions: Vec::new(),
        };
        let names: Vec<&str> = weights
            .iter()
            .map(|(revision, _)| revision.as_str())
            .collect();
        for (at, found) in self
            .with_revisions(manifest, service, &names, &regions)
            .await?
        {
            let before = found.weights();
            self.platform.set_traffic(&at, service, weights).await?;
            self.record(&at, service, weights, cause, None);
            report.regions.push(TrafficChange {
                region: at.region.clone(),
                before,
                after: weights.to_vec(),
            });
        }
        Ok(report)
    }

    /// Tags a revision in every region named (all by default), or takes its tag away; returns each
    /// region's tag URL.
    pub async fn tag(
        &self,
        manifest: &Manifest,
        service: &str,
        revision: &str,
        tag: Option<&str>,
        regions: &[String],
    ) -> Result<Vec<TagChange>> {
        Self::chosen(manifest, &Selection::Block(service.to_string()))?;
        if !self.platform.capabilities().tags {
            return Err(Error::Invalid(format!(
                "the {} platform has no tags",
                self.platform.kind().as_str()
            )));
        }
        let mut changes = Vec::new();
        let regions = Self::regions(manifest, regions)?;
        for (at, _) in self
            .with_revisions(manifest, service, &[revision], &regions)
            .await?
        {
            let url = self.platform.set_tag(&at, service, revision, tag).await?;
            changes.push(TagChange {
                region: at.region.clone(),
                revision: revision.to_string(),
                tag: tag.map(str::to_string),
                url,
            });
        }
        Ok(changes)
    }

    /// Puts a service's traffic back on `to` (by default the revision that served before the current
    /// one), at once, skipping any canary steps.
    pub async fn rollback(
        &self,
        manifest: &Manifest,
        service: &str,
        to: Option<&str>,
        regions: &[String],
    ) -> Result<TrafficReport> {
        Self::chosen(manifest, &Selection::Block(service.to_string()))?;
        if manifest.services[service].kind == ServiceKind::Job {
            return Err(Error::Invalid(format!(
                "`{service}` is a job: it takes no traffic to roll back; deploy the revision you want \
                 to run again"
            )));
        }
        let regions = Self::regions(manifest, regions)?;
        let mut report = TrafficReport {
            service: service.to_string(),
            regions: Vec::new(),
        };
        // Every region is read and checked before any moves; then each moves at once, in parallel:
        // a rollback is one traffic update per region.
        let looks = regions.iter().map(|region| async move {
            let at = placement(manifest, region);
            let found = self
                .deployed(&at, service, "there is nothing to roll back")
                .await?;
            let target = match to {
                Some(revision) => revision.to_string(),
                None => self.previous_revision(manifest, region, &found)?,
            };
            has_revision(&found, &target, region)?;
            Ok::<_, Error>((at, found.weights(), vec![(target, 100)]))
        });
        let planned: Vec<_> = futures::future::join_all(looks)
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let moves = planned
            .iter()
            .map(|(at, _, after)| self.platform.set_traffic(at, service, after));
        let moved = futures::future::join_all(moves).await;
        let mut failures = Vec::new();
        for ((at, before, after), result) in planned.into_iter().zip(moved) {
            if let Err(e) = result {
                failures.push(format!("{}: {e}", at.region));
                continue;
            }
            self.record(&at, service, &after, "rollback", None);
            report.regions.push(TrafficChange {
                region: at.region.clone(),
                before,
                after,
            });
        }
        if !failures.is_empty() {
            let done: Vec<&str> = report.regions.iter().map(|r| r.region.as_str()).collect();
            return Err(Error::Failed(format!(
                "the rollback of {service} failed in {}{}",
                failures.join("; "),
                if done.is_empty() {
                    String::new()
                } else {
                    format!(" (rolled back in {})", done.join(", "))
                }
            )));
        }
        Ok(report)
    }

    /// The service as it runs in each region, once every region is known to have every one of
    /// `revisions`: a change across regions is checked everywhere before it is made anywhere.
    async fn with_revisions(
        &self,
        manifest: &Manifest,
        service: &str,
        revisions: &[&str],
        regions: &[String],
    ) -> Result<Vec<(Placement, ObservedService)>> {
        if manifest
            .services
            .get(service)
            .is_some_and(|spec| spec.kind == ServiceKind::Job)
        {
            return Err(Error::Invalid(format!(
                "`{service}` is a job: it takes no traffic and has no tags"
            )));
        }
        let mut found = Vec::new();
        for region in regions {
            let at = placement(manifest, region);
            let observed = self.deployed(&at, service, "deploy it first").await?;
            for revision in revisions {
                if let Err(e) = has_revision(&observed, revision, region) {
                    if regions.len() > 1 {
                        return Err(Error::Invalid(format!(
                            "{e}. A revision's name differs from region to region (it includes \
                             the region's wiring): name one region with --region"
                        )));
                    }
                    return Err(e);
                }
            }
            found.push((at, observed));
        }
        Ok(found)
    }

    /// The service as it runs in a placement; `missing` says what to do when it does not.
    async fn deployed(
        &self,
        at: &Placement,
        service: &str,
        missing: &str,
    ) -> Result<ObservedService> {
        let mut observed = self.platform.observe(at).await?;
        observed.services.remove(service).ok_or_else(|| {
            Error::Invalid(format!(
                "`{service}` is not deployed in {}; {missing}",
                at.region
            ))
        })
    }

    fn previous_revision(
        &self,
        manifest: &Manifest,
        region: &str,
        service: &ObservedService,
    ) -> Result<String> {
        let serving = service.serving().map(|r| r.name.clone());
        let history = journal_store::releases(
            &self.store,
            &manifest.sandcastle.name,
            &service.name,
            Some(region),
            200,
        )?;
        history
            .iter()
            .filter_map(|release| {
                release
                    .weights
                    .iter()
                    .max_by_key(|(_, w)| *w)
                    .map(|(r, _)| r.clone())
            })
            .find(|revision| {
                Some(revision) != serving.as_ref() && service.revision(revision).is_some()
            })
            .or_else(|| {
                service
                    .revisions
                    .iter()
                    .rev()
                    .find(|r| Some(&r.name) != serving.as_ref())
                    .map(|r| r.name.clone())
            })
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "`{}` has no earlier revision in {region} to roll back to",
                    service.name
                ))
            })
    }

    /// Stops a revision, a service, or (`service` `None`) the whole sandcastle in the regions named.
    pub async fn destroy(
        &self,
        manifest: &Manifest,
        service: Option<&str>,
        revision: Option<&str>,
        regions: &[String],
    ) -> Result<Vec<String>> {
        let all_regions = regions.is_empty();
        let regions = Self::regions(manifest, regions)?;
        if let Some(name) = service {
            Self::chosen(manifest, &Selection::Block(name.to_string()))?;
        }
        if let (Some(name), Some(revision)) = (service, revision) {
            // Every region is checked before any is changed.
            for (at, found) in self
                .with_revisions(manifest, name, &[revision], &regions)
                .await?
            {
                let weight = found.revision(revision).map_or(0, |r| r.weight);
                if weight > 0 {
                    return Err(Error::Invalid(format!(
                        "`{revision}` serves {weight} % of `{name}`'s traffic in {}; release another \
                         revision first, or destroy the whole service",
                        at.region
                    )));
                }
            }
        }
        let mut done = Vec::new();
        for region in &regions {
            let at = placement(manifest, region);
            match service {
                Some(name) => {
                    let observed = self.platform.observe(&at).await?;
                    if !observed.services.contains_key(name) {
                        continue;
                    }
                    self.platform.destroy(&at, name, revision).await?;
                    done.push(match revision {
                        Some(revision) => format!("{region}/{name}/{revision}"),
                        None => format!("{region}/{name}"),
                    });
                }
                None => {
                    let _lock = self.lock(&at)?;
                    self.platform.destroy_placement(&at).await?;
                    self.forget_topics(manifest, &at).await?;
                    done.push(region.clone());
                }
            }
        }
        if service.is_none() && all_regions && manifest.front_door.is_some() {
            if let Some(door) = self.platform.front_door(&manifest.sandcastle.name).await? {
                done.push(format!("front door {}", door.url));
            }
            self.platform
                .destroy_front_door(&manifest.sandcastle.name)
                .await?;
        }
        if service.is_none() && all_regions {
            self.bus.release_if_unused();
        }
        Ok(done)
    }

    /// A service's log lines in one region.
    pub async fn logs(
        &self,
        manifest: &Manifest,
        service: &str,
        revision: Option<&str>,
        region: Option<&str>,
        tail: usize,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<String>>> {
        Self::chosen(manifest, &Selection::Block(service.to_string()))?;
        let region = match region {
            Some(region) => Self::regions(manifest, &[region.to_string()])?.remove(0),
            None => manifest.sandcastle.regions[0].clone(),
        };
        self.platform
            .logs(
                &placement(manifest, &region),
                service,
                revision,
                tail,
                follow,
            )
            .await
    }

    /// Every service healthy, every link answering from the dependent's side, every topic delivering a
    /// probe to each subscriber.
    pub async fn verify(&self, manifest: &Manifest, regions: &[String]) -> Result<VerifyReport> {
        let regions = Self::regions(manifest, regions)?;
        let observed = self.observe_all(manifest, &regions).await?;
        let mut checks = Vec::new();
        let bus = if manifest.topics.is_empty() {
            None
        } else {
            Some(self.bus.connect().await?)
        };
        for region in &regions {
            let at = placement(manifest, region);
            let here = &observed[region];
            for (name, spec) in &manifest.services {
                if spec.kind == ServiceKind::External {
                    continue;
                }
                let (holds, detail) = match here.services.get(name) {
                    None => (false, "not deployed".to_string()),
                    Some(service) => {
                        let current = if spec.kind == ServiceKind::Job {
                            service.revisions.last()
                        } else {
                            service.serving()
                        };
                        match current {
                            None => (false, "no revision takes traffic".into()),
                            Some(revision) => (
                                revision.health.is_good(),
                                format!("{} {}", revision.name, describe_health(&revision.health)),
                            ),
                        }
                    }
                };
                checks.push(Check {
                    region: region.clone(),
                    check: format!("healthy {name}"),
                    holds,
                    detail,
                });
            }
            for (name, spec) in &manifest.services {
                for need in &spec.needs {
                    let needed = &manifest.services[need];
                    if !matches!(needed.kind, ServiceKind::Http) {
                        continue;
                    }
                    let Some(url) = here.services.get(need).and_then(|s| s.url.clone()) else {
                        checks.push(Check {
                            region: region.clone(),
                            check: format!("link {name} -> {need}"),
                            holds: false,
                            detail: format!("{need} has no URL here"),
                        });
                        continue;
                    };
                    // The URL the dependent was given, which is what it calls.
                    let variable = mahavishnu_core::deploy::url_variable(need);
                    let held = here
                        .services
                        .get(name)
                        .and_then(|dependent| dependent.serving())
                        .and_then(|revision| revision.spec.env.get(&variable).cloned());
                    let path = needed.health.clone().unwrap_or_default().path;
                    let (holds, detail) = match held {
                        None => (
                            false,
                            format!("{name} runs no revision that was given {variable}"),
                        ),
                        Some(held) if held != url => (
                            false,
                            format!(
                                "{name} was given {variable}={held}, but {need} is at {url} now; \
                                 `mahavishnu deploy apply` gives {name} the new one"
                            ),
                        ),
                        Some(held) => {
                            let target = format!("{held}{path}");
                            match self.platform.request_from(&at, name, &target).await {
                                Ok(code) => (code < 500, format!("GET {target} answered {code}")),
                                Err(e) => (false, format!("GET {target}: {e}")),
                            }
                        }
                    };
                    checks.push(Check {
                        region: region.clone(),
                        check: format!("link {name} -> {need}"),
                        holds,
                        detail,
                    });
                }
            }
            if let Some(bus) = &bus {
                for topic in manifest.topics.keys() {
                    for (subscriber, path) in manifest.subscribers(topic) {
                        checks.push(self.probe(&at, bus.as_ref(), topic, subscriber, path).await);
                    }
                }
            }
        }
        Ok(VerifyReport {
            sandcastle: manifest.sandcastle.name.clone(),
            ok: checks.iter().all(|check| check.holds),
            checks,
        })
    }

    async fn probe(
        &self,
        at: &Placement,
        bus: &dyn EventBus,
        topic: &str,
        subscriber: &str,
        path: &str,
    ) -> Check {
        let check = format!("topic {topic} -> {subscriber}");
        let nonce = format!("{:016x}", fastrand::u64(..));
        let result: Result<Option<u16>> = async {
            self.platform
                .expect_probe(at, subscriber, path, &nonce)
                .await?;
            let attributes = BTreeMap::from([("mahavishnu_probe".to_string(), nonce.clone())]);
            bus.publish(&self.topic(at, topic), b"{\"probe\":true}", &attributes)
                .await?;
            let started = std::time::Instant::now();
            while started.elapsed() < PROBE_PATIENCE {
                if let Some(code) = self.platform.probe_answer(at, &nonce).await? {
                    return Ok(Some(code));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(None)
        }
        .await;
        let (holds, detail) = match result {
            Ok(Some(code)) => (
                (200..300).contains(&code),
                format!("a probe pushed to {path} was answered {code}"),
            ),
            Ok(None) => (
                false,
                format!("no probe reached {path} in {} s", PROBE_PATIENCE.as_secs()),
            ),
            Err(e) => (false, e.to_string()),
        };
        Check {
            region: at.region.clone(),
            check,
            holds,
            detail,
        }
    }
}

/// Refuses a revision the service does not have, naming those it has.
fn has_revision(service: &ObservedService, revision: &str, region: &str) -> Result<()> {
    if service.revision(revision).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = service.revisions.iter().map(|r| r.name.as_str()).collect();
    Err(Error::Invalid(format!(
        "`{}` has no revision `{revision}` in {region}; its revisions are: {}",
        service.name,
        names.join(", ")
    )))
}

/// The placement of `manifest` in `region`.
pub fn placement(manifest: &Manifest, region: &str) -> Placement {
    Placement {
        sandcastle: manifest.sandcastle.name.clone(),
        region: region.to_string(),
    }
}

fn skipped(region: &str, name: &str, why: &str) -> ServiceOutcome {
    ServiceOutcome {
        region: region.to_string(),
        service: name.to_string(),
        outcome: "skipped".into(),
        revision: None,
        weights: Vec::new(),
        url: None,
        detail: Some(why.into()),
        seconds: 0.0,
    }
}

/// `revision` at `step` %, the rest shared by the others in their old proportions.
pub fn split(revision: &str, step: u8, others: &[(String, u8)]) -> Vec<(String, u8)> {
    let rest = 100 - step;
    let total: u32 = others.iter().map(|(_, w)| u32::from(*w)).sum();
    let mut weights = Vec::new();
    let mut given = 0u8;
    for (index, (name, weight)) in others.iter().enumerate() {
        let share = if index + 1 == others.len() {
            rest - given
        } else {
            (u32::from(rest) * u32::from(*weight))
                .checked_div(total)
                .map_or(0, |share| share as u8)
        };
        given += share;
        if share > 0 {
            weights.push((name.clone(), share));
        }
    }
    if step > 0 {
        weights.push((revision.to_string(), step));
    }
    weights
}

/// A health with its reason, for messages.
pub fn describe_health(health: &Health) -> String {
    match health {
        Health::Degraded(reason) | Health::Unhealthy(reason) | Health::Failed(reason) => {
            format!("{}: {reason}", health.label())
        }
        other => other.label().to_string(),
    }
}

/// Changes shown for humans: `region  service  action  cause`.
pub fn describe_change(change: &Change) -> String {
    format!(
        "{}/{}: {}{} ({})",
        change.region,
        change.service,
        change.action.label(),
        change
            .revision
            .as_ref()
            .map_or_else(String::new, |r| format!(" {r}")),
        change.causes.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn a_step_takes_its_share_and_the_others_keep_their_proportions() {
        let others = vec![("a".to_string(), 100)];
        assert_eq!(
            split("b", 10, &others),
            [("a".to_string(), 90), ("b".to_string(), 10)]
        );
        assert_eq!(split("b", 100, &others), [("b".to_string(), 100)]);
        let two = vec![("a".to_string(), 50), ("c".to_string(), 50)];
        assert_eq!(
            split("b", 20, &two),
            [
                ("a".to_string(), 40),
                ("c".to_string(), 40),
                ("b".to_string(), 20)
            ]
        );
    }
}
