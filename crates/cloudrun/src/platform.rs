//! [`CloudRunPlatform`]: the [`Platform`] on Cloud Run. An `http` service (and a worker that takes
//! pushes) is a Cloud Run service, a worker is a worker pool, a job is a Cloud Run job run to
//! completion. Deploy is not release: a new revision is added with the traffic pinned where it was,
//! waited for with the generation check, and released by a traffic update.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use google_cloud_iam_v1::model::{Binding, Policy};
use google_cloud_logging_v2::client::LoggingServiceV2;
use google_cloud_longrunning::model::{Operation, operation};
use google_cloud_resourcemanager_v3::client::Projects;
use google_cloud_run_v2::client::{Executions, Jobs, Revisions, Services, Tasks, WorkerPools};
use google_cloud_run_v2::model::{
    Execution, InstanceSplit, InstanceSplitAllocationType, Job, Revision, Service, TrafficTarget,
    TrafficTargetAllocationType, WorkerPool, WorkerPoolScaling,
};
use google_cloud_secretmanager_v1::client::SecretManagerService;
use mahavishnu_core::deploy::{
    FrontDoorRegion, FrontDoorStatus, Health, Invoker, Observed, ObservedRevision, ObservedService,
    Placement, Platform, PlatformCapabilities, PlatformKind, Progress, RevisionMetrics,
    RevisionSpec, SecretRef, SecretValues, ServiceKind,
};
use mahavishnu_core::{Error, Result};
use tokio::sync::OnceCell;

use crate::calls::{Bounded, build_client, install_crypto_provider, next_page};
use crate::convert::{self, api_error};
use crate::front_door::FrontDoor;
use crate::monitoring::Monitoring;
use crate::names;
use crate::settings::CloudRunSettings;

/// The role that lets a caller invoke a service, and who "anyone" is.
const INVOKER_ROLE: &str = "roles/run.invoker";
const ALL_USERS: &str = "allUsers";

/// How often a rollout gate reads Cloud Run and Cloud Monitoring while a step pauses: each read is
/// a few API calls, and Monitoring's counts lag by a minute or so anyway.
const GATE_INTERVAL: Duration = Duration::from_secs(5);

/// How far back the rollout gates and `status` read request counts.
const METRICS_WINDOW: Duration = Duration::from_secs(60);

/// How often a wait looks again, at first and at most.
const FIRST_POLL: Duration = Duration::from_millis(50);
const LONGEST_POLL: Duration = Duration::from_secs(2);

/// How a service runs on Cloud Run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A Cloud Run service: takes requests (an http service, a worker that takes pushes).
    Service,
    /// A worker pool: runs without requests.
    WorkerPool,
    /// A Cloud Run job: runs to completion.
    Job,
}

fn shape(spec: &RevisionSpec) -> Shape {
    match spec.kind {
        ServiceKind::Job => Shape::Job,
        _ if spec.listens => Shape::Service,
        _ => Shape::WorkerPool,
    }
}

/// The official clients, made on first use.
pub(crate) struct Clients {
    pub(crate) services: Services,
    pub(crate) revisions: Revisions,
    pub(crate) pools: WorkerPools,
    pub(crate) jobs: Jobs,
    pub(crate) executions: Executions,
    pub(crate) tasks: Tasks,
    pub(crate) secrets: SecretManagerService,
    pub(crate) logging: LoggingServiceV2,
    pub(crate) projects: Projects,
}

/// Cloud Run in one Google Cloud project.
pub struct CloudRunPlatform {
    settings: CloudRunSettings,
    clients: OnceCell<Clients>,
    front_door: OnceCell<FrontDoor>,
    monitoring: OnceCell<Monitoring>,
    number: OnceCell<String>,
    /// The delivery probes `verify` waits for, by nonce: the subscriber, its push path and when the
    /// probe was announced (RFC 3339).
    probes: Mutex<HashMap<String, (Placement, String, String, String)>>,
    /// The operation an apply's deploy started, by region and service: `wait_ready` reads its error
    /// (a quota, say) when Cloud Run reports it there and nowhere else.
    pending: Mutex<HashMap<(String, String), String>>,
}

impl std::fmt::Debug for CloudRunPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudRunPlatform")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl CloudRunPlatform {
    /// The platform for these settings; nothing is called until it is used.
    pub fn new(settings: CloudRunSettings) -> Self {
        CloudRunPlatform {
            settings,
            clients: OnceCell::new(),
            front_door: OnceCell::new(),
            monitoring: OnceCell::new(),
            number: OnceCell::new(),
            pending: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &CloudRunSettings {
        &self.settings
    }

    pub(crate) async fn clients(&self) -> Result<&Clients> {
        self.clients
            .get_or_try_init(|| async {
                install_crypto_provider();
                let settings = &self.settings;
                Ok(Clients {
                    services: build_client!(Services, settings),
                    revisions: build_client!(Revisions, settings),
                    pools: build_client!(WorkerPools, settings),
                    jobs: build_client!(Jobs, settings),
                    executions: build_client!(Executions, settings),
                    tasks: build_client!(Tasks, settings),
                    secrets: build_client!(SecretManagerService, settings),
                    logging: build_client!(LoggingServiceV2, settings),
                    projects: build_client!(Projects, settings),
                })
            })
            .await
    }

    async fn front_door_client(&self) -> Result<&FrontDoor> {
        self.front_door
            .get_or_try_init(|| FrontDoor::new(&self.settings))
            .await
    }

    async fn monitoring(&self) -> Result<&Monitoring> {
        self.monitoring
            .get_or_try_init(|| Monitoring::new(&self.settings))
            .await
    }

    /// Each serving revision's request counts over the last minute, from Cloud Monitoring. Metrics
    /// are for reading: when Monitoring cannot answer, the revisions simply have none.
    async fn add_metrics(&self, at: &Placement, service: &mut ObservedService) {
        if service.kind != ServiceKind::Http || service.revisions.iter().all(|r| r.weight == 0) {
            return;
        }
        let Ok(monitoring) = self.monitoring().await else {
            return;
        };
        let Ok(metrics) = monitoring
            .revision_metrics(
                &names::resource_id(at, &service.name),
                &at.region,
                METRICS_WINDOW,
            )
            .await
        else {
            return;
        };
        for revision in &mut service.revisions {
            // A serving revision without a series took no request in the window.
            revision.metrics = metrics
                .get(&names::cloud_revision(at, &revision.name))
                .cloned()
                .or_else(|| (revision.weight > 0).then(RevisionMetrics::default));
        }
    }

    /// Bounds one call by the settings' timeout.
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = std::result::Result<T, google_cloud_gax::error::Error>>,
    ) -> Result<T> {
        self.bounded().call(what, call).await
    }

    /// Like [`call`](Self::call), with "not found" as `None`.
    pub(crate) async fn call_found<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = std::result::Result<T, google_cloud_gax::error::Error>>,
    ) -> Result<Option<T>> {
        self.bounded().found(what, call).await
    }

    fn bounded(&self) -> Bounded {
        Bounded {
            timeout: self.settings.request_timeout,
            location: self.settings.location(),
        }
    }

    /// The project's number: it names every service's URL, so it is learnt once.
    pub async fn project_number(&self) -> Result<String> {
        self.number
            .get_or_try_init(|| async {
                if let Some(number) = &self.settings.project_number {
                    return Ok(number.clone());
                }
                let clients = self.clients().await?;
                let name = format!("projects/{}", self.settings.project);
                let project = self
                    .call(
                        &format!("reading the project {}", self.settings.project),
                        clients.projects.get_project().set_name(&name).send(),
                    )
                    .await?;
                project
                    .name
                    .strip_prefix("projects/")
                    .map(str::to_string)
                    .ok_or_else(|| {
                        Error::Failed(format!(
                            "the project {} came back without its number ({})",
                            self.settings.project, project.name
                        ))
                    })
            })
            .await
            .cloned()
    }

    fn parent(&self, region: &str) -> String {
        format!("projects/{}/locations/{region}", self.settings.project)
    }

    fn resource_name(&self, at: &Placement, collection: &str, service: &str) -> String {
        format!(
            "{}/{collection}/{}",
            self.parent(&at.region),
            names::resource_id(at, service)
        )
    }

    async fn url(&self, at: &Placement, service: &str, tag: Option<&str>) -> Result<String> {
        let number = self.project_number().await?;
        let host = names::run_app_host(&names::resource_id(at, service), &number, &at.region, tag);
        Ok(self.settings.service_urls.replace("{host}", &host))
    }

    fn service_account<'a>(&'a self, spec: &'a RevisionSpec) -> Option<&'a str> {
        spec.service_account
            .as_deref()
            .or(self.settings.service_account.as_deref())
    }

    fn remember(&self, at: &Placement, service: &str, operation: &Operation) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(
                (at.region.clone(), service.to_string()),
                operation.name.clone(),
            );
        }
    }

    fn pending_operation(&self, at: &Placement, service: &str) -> Option<String> {
        self.pending
            .lock()
            .ok()?
            .get(&(at.region.clone(), service.to_string()))
            .cloned()
    }

    /// The error of a finished operation, in Cloud Run's words.
    fn operation_error(what: &str, operation: &Operation) -> Option<Error> {
        match &operation.result {
            Some(operation::Result::Error(status)) => Some(Error::Failed(format!(
                "{what}: {} (code {})",
                status.message, status.code
            ))),
            _ => None,
        }
    }

    pub(crate) async fn get_operation(&self, name: &str) -> Result<Operation> {
        let clients = self.clients().await?;
        self.call(
            "reading an operation",
            clients.services.get_operation().set_name(name).send(),
        )
        .await
    }

    /// Waits for an operation to finish, up to `deadline`; returns it finished.
    pub(crate) async fn finish(
        &self,
        what: &str,
        operation: Operation,
        deadline: Duration,
    ) -> Result<Operation> {
        let started = Instant::now();
        let mut operation = operation;
        while !operation.done {
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(Error::Failed(format!(
                    "{what}: not done after {deadline:?} (operation {})",
                    operation.name
                )));
            }
            operation = self.wait_operation(&operation.name, left).await?;
        }
        match Self::operation_error(what, &operation) {
            Some(error) => Err(error),
            None => Ok(operation),
        }
    }

    /// Waits for an operation on the server's side (`operations:wait`), up to `left` and less than
    /// one call's timeout; returns it, done or not.
    pub(crate) async fn wait_operation(&self, name: &str, left: Duration) -> Result<Operation> {
        let clients = self.clients().await?;
        let most = self
            .settings
            .request_timeout
            .saturating_sub(Duration::from_secs(1))
            .max(Duration::from_secs(1));
        let wait = google_cloud_wkt::Duration::try_from(left.min(most))
            .map_err(|e| Error::Failed(format!("a wait of {left:?}: {e}")))?;
        self.call(
            "waiting for an operation",
            clients
                .services
                .wait_operation()
                .set_name(name)
                .set_timeout(wait)
                .send(),
        )
        .await
    }

    async fn get_service(&self, name: &str) -> Result<Option<Service>> {
        let clients = self.clients().await?;
        self.call_found(
            &format!("reading the service {name}"),
            clients.services.get_service().set_name(name).send(),
        )
        .await
    }

    async fn get_pool(&self, name: &str) -> Result<Option<WorkerPool>> {
        let clients = self.clients().await?;
        self.call_found(
            &format!("reading the worker pool {name}"),
            clients.pools.get_worker_pool().set_name(name).send(),
        )
        .await
    }

    pub(crate) async fn get_job(&self, name: &str) -> Result<Option<Job>> {
        let clients = self.clients().await?;
        self.call_found(
            &format!("reading the job {name}"),
            clients.jobs.get_job().set_name(name).send(),
        )
        .await
    }

    async fn list_revisions(&self, parent: &str) -> Result<Vec<Revision>> {
        let clients = self.clients().await?;
        let mut revisions = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .call(
                    &format!("listing the revisions of {parent}"),
                    clients
                        .revisions
                        .list_revisions()
                        .set_parent(parent)
                        .set_page_token(&token)
                        .send(),
                )
                .await?;
            revisions.extend(page.revisions);
            if !next_page(&mut token, page.next_page_token) {
                return Ok(revisions);
            }
        }
    }

    /// Whether the service or worker pool `parent` has the revision `cloud_revision` already (an apply
    /// resumed after its call): then there is nothing to create.
    async fn has_revision(&self, parent: &str, cloud_revision: &str) -> Result<bool> {
        let suffix = format!("/{cloud_revision}");
        Ok(self
            .list_revisions(parent)
            .await?
            .iter()
            .any(|revision| revision.name.ends_with(&suffix)))
    }

    /// The engine's revisions of one Cloud Run service or worker pool, with their traffic.
    async fn observed_revisions(
        &self,
        at: &Placement,
        parent: &str,
        weights: &BTreeMap<String, u8>,
        tags: &BTreeMap<String, (String, String)>,
    ) -> Result<Vec<ObservedRevision>> {
        let mut revisions = Vec::new();
        for revision in self.list_revisions(parent).await? {
            let Some(name) = names::engine_revision(at, &revision.name) else {
                continue; // made by someone else: not the engine's to plan with
            };
            let Some(spec) = revision
                .annotations
                .get(names::SPEC_ANNOTATION)
                .and_then(|text| serde_json::from_str::<RevisionSpec>(text).ok())
            else {
                continue;
            };
            let short = revision
                .name
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let tag = tags.get(&short);
            revisions.push(ObservedRevision {
                name,
                spec,
                weight: weights.get(&short).copied().unwrap_or(0),
                tag: tag.map(|(tag, _)| tag.clone()),
                tag_url: tag.map(|(_, url)| url.clone()),
                health: convert::revision_health(&revision.conditions),
                copies: Vec::new(),
                metrics: None,
                created: revision.create_time.map(String::from).unwrap_or_default(),
            });
        }
        revisions.sort_by(|a, b| a.created.cmp(&b.created));
        Ok(revisions)
    }

    async fn observe_service(&self, at: &Placement, service: &Service) -> Result<ObservedService> {
        let name = service
            .labels
            .get(names::SERVICE_LABEL)
            .cloned()
            .unwrap_or_default();
        let mut weights = BTreeMap::new();
        let mut tags = BTreeMap::new();
        for status in &service.traffic_statuses {
            let revision = match status.r#type {
                TrafficTargetAllocationType::Latest => service
                    .latest_ready_revision
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                _ => status.revision.clone(),
            };
            if status.percent > 0 {
                *weights.entry(revision.clone()).or_insert(0) += status.percent as u8;
            }
            if !status.tag.is_empty() {
                let url = self.url(at, &name, Some(&status.tag)).await?;
                tags.insert(revision, (status.tag.clone(), url));
            }
        }
        let revisions = self
            .observed_revisions(at, &service.name, &weights, &tags)
            .await?;
        let kind = revisions
            .last()
            .map_or(ServiceKind::Http, |revision| revision.spec.kind);
        Ok(ObservedService {
            url: Some(self.url(at, &name, None).await?),
            name,
            kind,
            revisions,
        })
    }

    async fn observe_pool(&self, at: &Placement, pool: &WorkerPool) -> Result<ObservedService> {
        let name = pool
            .labels
            .get(names::SERVICE_LABEL)
            .cloned()
            .unwrap_or_default();
        let mut weights = BTreeMap::new();
        for split in &pool.instance_splits {
            let revision = match split.r#type {
                InstanceSplitAllocationType::Latest => pool
                    .latest_ready_revision
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                _ => split.revision.clone(),
            };
            if split.percent > 0 {
                *weights.entry(revision).or_insert(0) += split.percent as u8;
            }
        }
        let revisions = self
            .observed_revisions(at, &pool.name, &weights, &BTreeMap::new())
            .await?;
        Ok(ObservedService {
            name,
            kind: ServiceKind::Worker,
            url: None,
            revisions,
        })
    }

    async fn observe_job(&self, job: &Job) -> Result<Option<ObservedService>> {
        let name = job
            .labels
            .get(names::SERVICE_LABEL)
            .cloned()
            .unwrap_or_default();
        let Some(template) = &job.template else {
            return Ok(None);
        };
        let (Some(spec), Some(revision)) = (
            template
                .annotations
                .get(names::SPEC_ANNOTATION)
                .and_then(|text| serde_json::from_str::<RevisionSpec>(text).ok()),
            template.annotations.get(names::REVISION_ANNOTATION),
        ) else {
            return Ok(None);
        };
        let health = match latest_execution(job) {
            Some(name) => {
                let clients = self.clients().await?;
                let current = template
                    .annotations
                    .get(names::REVISION_ANNOTATION)
                    .cloned();
                match self
                    .call_found(
                        &format!("reading the execution {name}"),
                        clients.executions.get_execution().set_name(&name).send(),
                    )
                    .await?
                {
                    // The last run was of another revision: this one has not run yet.
                    Some(execution)
                        if execution
                            .annotations
                            .get(names::REVISION_ANNOTATION)
                            .is_some_and(|ran| Some(ran) != current.as_ref()) =>
                    {
                        Health::Failed(format!(
                            "not run yet: the last execution ran {}",
                            execution.annotations[names::REVISION_ANNOTATION]
                        ))
                    }
                    Some(execution) => execution_health(&execution),
                    None => Health::Starting,
                }
            }
            None => Health::Starting,
        };
        Ok(Some(ObservedService {
            name,
            kind: ServiceKind::Job,
            url: None,
            revisions: vec![ObservedRevision {
                name: revision.clone(),
                spec,
                weight: 0,
                tag: None,
                tag_url: None,
                health,
                copies: Vec::new(),
                metrics: None,
                created: job.update_time.map(String::from).unwrap_or_default(),
            }],
        }))
    }

    /// Sets who may invoke a service: `allUsers` bound to the invoker role or not. Writes only when
    /// the policy has to change.
    async fn set_invoker(&self, name: &str, invoker: Invoker) -> Result<()> {
        let mut policy = self.invoker_policy(name).await?;
        let public = invokers(&policy).any(|m| m == ALL_USERS);
        let wanted = invoker == Invoker::Public;
        if public == wanted {
            return Ok(());
        }
        if wanted {
            grant_invoker(&mut policy, ALL_USERS);
        } else {
            for binding in policy
                .bindings
                .iter_mut()
                .filter(|b| b.role == INVOKER_ROLE)
            {
                binding.members.retain(|member| member != ALL_USERS);
            }
            policy
                .bindings
                .retain(|binding| !binding.members.is_empty());
        }
        self.write_policy(name, policy, &format!("setting who may invoke {name}"))
            .await
    }

    /// A Cloud Run service's IAM policy.
    async fn invoker_policy(&self, name: &str) -> Result<Policy> {
        let clients = self.clients().await?;
        self.call(
            &format!("reading who may invoke {name}"),
            clients.services.get_iam_policy().set_resource(name).send(),
        )
        .await
    }

    /// Writes a Cloud Run service's IAM policy back (its etag guards against a change meanwhile).
    async fn write_policy(&self, name: &str, policy: Policy, what: &str) -> Result<()> {
        let clients = self.clients().await?;
        self.call(
            what,
            clients
                .services
                .set_iam_policy()
                .set_resource(name)
                .set_policy(policy)
                .send(),
        )
        .await?;
        Ok(())
    }

    /// Refuses to touch a resource of this name that is not this service's: made by hand, or by
    /// another sandcastle whose `SANDCASTLE-SERVICE` name happens to be the same.
    fn claim(
        at: &Placement,
        what: &str,
        name: &str,
        labels: &HashMap<String, String>,
        service: &str,
    ) -> Result<()> {
        if names::is_ours(at, labels).as_deref() == Some(names::label_value(service).as_str()) {
            return Ok(());
        }
        let owner = match (
            labels.get(names::SANDCASTLE_LABEL),
            labels.get(names::SERVICE_LABEL),
        ) {
            (Some(sandcastle), Some(other)) => {
                format!("service `{other}` of sandcastle `{sandcastle}`")
            }
            _ => "something Mahavishnu did not make".to_string(),
        };
        Err(Error::Invalid(format!(
            "the Cloud Run {what} {name} in {} belongs to {owner}, not to service `{service}` of \
             sandcastle `{}`; rename the sandcastle or the service, or delete it by hand",
            at.region, at.sandcastle
        )))
    }

    /// Traffic that keeps what serves now where it is: every `LATEST` entry pinned to the revision it
    /// resolves to, so that a new revision starts with none.
    fn pinned_traffic(service: &Service) -> Vec<TrafficTarget> {
        let latest = service
            .latest_ready_revision
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        service
            .traffic_statuses
            .iter()
            .filter_map(|status| {
                let revision = match status.r#type {
                    TrafficTargetAllocationType::Latest if latest.is_empty() => return None,
                    TrafficTargetAllocationType::Latest => latest.clone(),
                    _ => status.revision.clone(),
                };
                let mut target = TrafficTarget::new();
                target.r#type = TrafficTargetAllocationType::Revision;
                target.revision = revision;
                target.percent = status.percent;
                target.tag = status.tag.clone();
                Some(target)
            })
            .collect()
    }

    async fn deploy_service(
        &self,
        at: &Placement,
        revision: &str,
        spec: &RevisionSpec,
    ) -> Result<Option<String>> {
        let clients = self.clients().await?;
        let name = self.resource_name(at, "services", &spec.service);
        let cloud_revision = names::cloud_revision(at, revision);
        let template = convert::revision_template(
            at,
            revision,
            spec,
            &self.settings.project,
            self.service_account(spec),
        )?;
        let labels: HashMap<String, String> = names::labels(at, spec).into_iter().collect();
        let what = format!("deploying {} to {}", spec.service, at.region);
        let operation = match self.get_service(&name).await? {
            None => {
                let mut service = Service::new();
                service.labels = labels;
                service.ingress = convert::ingress(spec.ingress);
                service.template = Some(template);
                // A new service takes its first revision: there is nothing to keep serving.
                let mut first = TrafficTarget::new();
                first.r#type = TrafficTargetAllocationType::Revision;
                first.revision = cloud_revision;
                first.percent = 100;
                service.traffic = vec![first];
                self.call(
                    &what,
                    clients
                        .services
                        .create_service()
                        .set_parent(self.parent(&at.region))
                        .set_service_id(names::resource_id(at, &spec.service))
                        .set_service(service)
                        .send(),
                )
                .await?
            }
            Some(current) => {
                Self::claim(at, "service", &name, &current.labels, &spec.service)?;
                if self.has_revision(&name, &cloud_revision).await? {
                    return Ok(Some(self.url(at, &spec.service, None).await?));
                }
                let mut service = current.clone();
                service.traffic = Self::pinned_traffic(&current);
                service.labels.extend(labels);
                service.ingress = convert::ingress(spec.ingress);
                service.template = Some(template);
                self.call(
                    &what,
                    clients
                        .services
                        .update_service()
                        .set_service(service)
                        .send(),
                )
                .await?
            }
        };
        self.remember(at, &spec.service, &operation);
        Ok(Some(self.url(at, &spec.service, None).await?))
    }

    async fn deploy_pool(&self, at: &Placement, revision: &str, spec: &RevisionSpec) -> Result<()> {
        let clients = self.clients().await?;
        let name = self.resource_name(at, "workerPools", &spec.service);
        let cloud_revision = names::cloud_revision(at, revision);
        let template = convert::worker_template(
            at,
            revision,
            spec,
            &self.settings.project,
            self.service_account(spec),
        )?;
        let labels: HashMap<String, String> = names::labels(at, spec).into_iter().collect();
        let what = format!(
            "deploying the worker pool {} to {}",
            spec.service, at.region
        );
        let mut scaling = WorkerPoolScaling::new();
        scaling.manual_instance_count = Some(spec.scale.min as i32);
        let operation = match self.get_pool(&name).await? {
            None => {
                let mut pool = WorkerPool::new();
                pool.labels = labels;
                pool.template = Some(template);
                pool.scaling = Some(scaling);
                let mut split = InstanceSplit::new();
                split.r#type = InstanceSplitAllocationType::Revision;
                split.revision = cloud_revision;
                split.percent = 100;
                pool.instance_splits = vec![split];
                self.call(
                    &what,
                    clients
                        .pools
                        .create_worker_pool()
                        .set_parent(self.parent(&at.region))
                        .set_worker_pool_id(names::resource_id(at, &spec.service))
                        .set_worker_pool(pool)
                        .send(),
                )
                .await?
            }
            Some(current) => {
                Self::claim(at, "worker pool", &name, &current.labels, &spec.service)?;
                if self.has_revision(&name, &cloud_revision).await? {
                    return Ok(());
                }
                let mut pool = current.clone();
                let latest = current
                    .latest_ready_revision
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                pool.instance_splits = current
                    .instance_splits
                    .iter()
                    .map(|split| {
                        let mut pinned = split.clone();
                        if split.r#type == InstanceSplitAllocationType::Latest {
                            pinned.r#type = InstanceSplitAllocationType::Revision;
                            pinned.revision = latest.clone();
                        }
                        pinned
                    })
                    .collect();
                pool.labels.extend(labels);
                pool.template = Some(template);
                pool.scaling = Some(scaling);
                self.call(
                    &what,
                    clients
                        .pools
                        .update_worker_pool()
                        .set_worker_pool(pool)
                        .send(),
                )
                .await?
            }
        };
        self.remember(at, &spec.service, &operation);
        Ok(())
    }

    async fn deploy_job(&self, at: &Placement, revision: &str, spec: &RevisionSpec) -> Result<()> {
        let clients = self.clients().await?;
        let name = self.resource_name(at, "jobs", &spec.service);
        let template = convert::execution_template(
            at,
            revision,
            spec,
            &self.settings.project,
            self.service_account(spec),
        )?;
        let labels: HashMap<String, String> = names::labels(at, spec).into_iter().collect();
        let what = format!("deploying the job {} to {}", spec.service, at.region);
        let upsert = match self.get_job(&name).await? {
            None => {
                let mut job = Job::new();
                job.labels = labels;
                job.template = Some(template);
                self.call(
                    &what,
                    clients
                        .jobs
                        .create_job()
                        .set_parent(self.parent(&at.region))
                        .set_job_id(names::resource_id(at, &spec.service))
                        .set_job(job)
                        .send(),
                )
                .await?
            }
            Some(mut job) => {
                Self::claim(at, "job", &name, &job.labels, &spec.service)?;
                job.labels.extend(labels);
                job.template = Some(template);
                self.call(&what, clients.jobs.update_job().set_job(job).send())
                    .await?
            }
        };
        self.finish(&what, upsert, self.settings.request_timeout * 4)
            .await?;
        let run = self
            .call(
                &format!("running the job {} in {}", spec.service, at.region),
                clients.jobs.run_job().set_name(&name).send(),
            )
            .await?;
        self.remember(at, &spec.service, &run);
        Ok(())
    }

    /// Waits for a job's execution (the operation `run_job` started) to finish.
    async fn wait_job(
        &self,
        at: &Placement,
        service: &str,
        deadline: Duration,
        progress: Progress<'_>,
    ) -> Result<()> {
        let Some(name) = self.pending_operation(at, service) else {
            return Err(Error::Failed(format!(
                "no execution of the job {service} was started in {} by this apply",
                at.region
            )));
        };
        let started = Instant::now();
        let mut operation = self.get_operation(&name).await?;
        loop {
            if operation.done {
                if let Some(error) =
                    Self::operation_error(&format!("the job {service}"), &operation)
                {
                    return Err(error);
                }
                let execution = match &operation.result {
                    Some(operation::Result::Response(any)) => any.to_msg::<Execution>().ok(),
                    _ => None,
                };
                return match execution.as_ref().map(execution_health) {
                    Some(Health::Succeeded) => Ok(()),
                    None => Err(Error::Failed(format!(
                        "the job {service} finished, but its execution cannot be read to tell \
                         whether it succeeded; see `mahavishnu deploy status`"
                    ))),
                    Some(Health::Failed(reason)) => {
                        Err(Error::Failed(format!("the job {service} failed: {reason}")))
                    }
                    Some(other) => Err(Error::Failed(format!(
                        "the job {service} ended {}",
                        other.label()
                    ))),
                };
            }
            if started.elapsed() > deadline {
                return Err(Error::Failed(format!(
                    "the job {service} has not finished after {deadline:?}"
                )));
            }
            progress(format!("the job {service} runs"));
            operation = self
                .wait_operation(&name, deadline.saturating_sub(started.elapsed()))
                .await?;
        }
    }

    /// Reads the revision the generation check points at, once the generation is observed.
    async fn settled_revision(
        &self,
        parent: &str,
        generation: i64,
        observed: i64,
        reconciling: bool,
        cloud_revision: &str,
    ) -> Result<std::result::Result<Revision, String>> {
        if observed < generation || reconciling {
            return Ok(Err(format!(
                "generation {generation} not yet observed (observed {observed})"
            )));
        }
        let clients = self.clients().await?;
        let name = format!("{parent}/revisions/{cloud_revision}");
        match self
            .call_found(
                &format!("reading the revision {cloud_revision}"),
                clients.revisions.get_revision().set_name(&name).send(),
            )
            .await?
        {
            Some(revision) => Ok(Ok(revision)),
            None => Ok(Err(format!(
                "the revision {cloud_revision} is not there yet"
            ))),
        }
    }

    /// Replaces a Cloud Run service's traffic, keeping its tags, and waits for the update.
    async fn update_traffic(
        &self,
        at: &Placement,
        service: &str,
        traffic: impl FnOnce(&Service) -> Result<Vec<TrafficTarget>>,
    ) -> Result<Service> {
        let clients = self.clients().await?;
        let name = self.resource_name(at, "services", service);
        let Some(mut current) = self.get_service(&name).await? else {
            return Err(Error::Invalid(format!(
                "the service {service} does not run in {}",
                at.region
            )));
        };
        let wanted = traffic(&current)?;
        // Traffic that already is as wanted (a new service's first revision) costs no update.
        let mut now = Self::pinned_traffic(&current);
        let mut sorted = wanted.clone();
        let key = |t: &TrafficTarget| (t.revision.clone(), t.percent, t.tag.clone());
        now.sort_by_key(key);
        sorted.sort_by_key(key);
        if now == sorted && !current.reconciling {
            return Ok(current);
        }
        current.traffic = wanted;
        let what = format!("moving the traffic of {service} in {}", at.region);
        let operation = self
            .call(
                &what,
                clients
                    .services
                    .update_service()
                    .set_service(current)
                    .send(),
            )
            .await?;
        let done = self
            .finish(&what, operation, self.settings.request_timeout * 4)
            .await?;
        match done.result {
            Some(operation::Result::Response(any)) => any.to_msg::<Service>().map_err(|e| {
                Error::Failed(format!("{what}: an answer that is not a service: {e}"))
            }),
            _ => Ok(self.get_service(&name).await?.unwrap_or_default()),
        }
    }
}

/// Who holds the invoker role in a policy.
fn invokers(policy: &Policy) -> impl Iterator<Item = &String> {
    policy
        .bindings
        .iter()
        .filter(|binding| binding.role == INVOKER_ROLE)
        .flat_map(|binding| binding.members.iter())
}

/// Adds `member` to the invoker role of a policy.
fn grant_invoker(policy: &mut Policy, member: &str) {
    match policy.bindings.iter_mut().find(|b| b.role == INVOKER_ROLE) {
        Some(binding) => binding.members.push(member.to_string()),
        None => {
            let mut binding = Binding::new();
            binding.role = INVOKER_ROLE.into();
            binding.members = vec![member.to_string()];
            policy.bindings.push(binding);
        }
    }
}

/// The full name of a job's latest execution, when it has run (the reference holds the short name).
pub(crate) fn latest_execution(job: &Job) -> Option<String> {
    let reference = job.latest_created_execution.as_ref()?;
    if reference.name.is_empty() {
        return None;
    }
    Some(if reference.name.contains('/') {
        reference.name.clone()
    } else {
        format!("{}/executions/{}", job.name, reference.name)
    })
}

/// A job execution's health from its counts.
fn execution_health(execution: &Execution) -> Health {
    if execution.completion_time.is_none() {
        return Health::Starting;
    }
    if execution.failed_count > 0 || execution.cancelled_count > 0 {
        let reason = convert::condition(&execution.conditions, "Completed")
            .map(convert::describe)
            .unwrap_or_else(|| {
                format!(
                    "{} of {} tasks failed",
                    execution.failed_count, execution.task_count
                )
            });
        return Health::Failed(reason);
    }
    if execution.succeeded_count >= execution.task_count.max(1) {
        Health::Succeeded
    } else {
        Health::Starting
    }
}

#[async_trait]
impl Platform for CloudRunPlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Cloudrun
    }

    fn capabilities(&self) -> PlatformCapabilities {
        PlatformCapabilities {
            traffic_split: true,
            tags: true,
            regions: true,
            exec: false,
            logs: true,
            native_secrets: true,
            native_health: true,
            metrics: true,
            front_door: true,
        }
    }

    fn cannot_run(&self, spec: &RevisionSpec) -> Option<String> {
        let at = Placement {
            sandcastle: spec
                .env
                .get("MAHAVISHNU_SANDCASTLE")
                .cloned()
                .unwrap_or_default(),
            region: String::new(),
        };
        if spec.image.is_none() {
            return Some("Cloud Run runs containers: give the service an `image`".into());
        }
        if let Some(reference) = spec
            .secrets
            .values()
            .find(|reference| !matches!(reference, SecretRef::SecretManager { .. }))
        {
            return Some(format!(
                "{reference} cannot be read on Cloud Run; use gcp:sm/NAME#VERSION (Secret Manager)"
            ));
        }
        names::invalid_name(&at, &spec.service)
    }

    fn gate_interval(&self) -> Duration {
        GATE_INTERVAL
    }

    /// Grants the push identity the invoker role on the subscriber; a subscriber that only lets
    /// callers with a token in, and no identity to sign pushes with, is an error with the fix.
    async fn allow_pushes(
        &self,
        at: &Placement,
        service: &str,
        identity: Option<&str>,
    ) -> Result<()> {
        let name = self.resource_name(at, "services", service);
        let mut policy = self.invoker_policy(&name).await?;
        let Some(identity) = identity else {
            if invokers(&policy).any(|member| member == ALL_USERS) {
                return Ok(());
            }
            return Err(Error::Invalid(format!(
                "services.{service} takes pushes but lets in only callers with an ID token, and no \
                 service account signs the pushes: set service_account on it (or under \
                 [platforms.cloudrun]), or make it invoker = \"public\""
            )));
        };
        let member = format!("serviceAccount:{identity}");
        if invokers(&policy).any(|m| *m == member) {
            return Ok(());
        }
        grant_invoker(&mut policy, &member);
        self.write_policy(&name, policy, &format!("letting {identity} push to {name}"))
            .await
    }

    fn push_identity(&self, service_account: Option<&str>) -> Option<String> {
        service_account
            .or(self.settings.service_account.as_deref())
            .map(str::to_string)
    }

    async fn planned_url(
        &self,
        at: &Placement,
        service: &str,
        _observed: &Observed,
    ) -> Result<Option<String>> {
        Ok(Some(self.url(at, service, None).await?))
    }

    async fn missing_references(&self, at: &Placement, spec: &RevisionSpec) -> Result<Vec<String>> {
        let _ = at;
        let clients = self.clients().await?;
        let mut missing = Vec::new();
        for (variable, reference) in &spec.secrets {
            let SecretRef::SecretManager { name, version } = reference else {
                continue;
            };
            let path = format!(
                "{}/versions/{version}",
                convert::secret_path(&self.settings.project, name)
            );
            let found = self
                .call_found(
                    &format!("checking {reference}"),
                    clients.secrets.get_secret_version().set_name(&path).send(),
                )
                .await?;
            if found.is_none() {
                missing.push(format!(
                    "{variable}: {reference} does not exist in project {}; create it with `gcloud \
                     secrets create` or `gcloud secrets versions add`",
                    self.settings.project
                ));
            }
        }
        Ok(missing)
    }

    async fn observe(&self, at: &Placement) -> Result<Observed> {
        let clients = self.clients().await?;
        let parent = self.parent(&at.region);
        let mut observed = Observed::default();
        let mut versions = Vec::new();

        let mut token = String::new();
        let mut services = Vec::new();
        loop {
            let page = self
                .call(
                    &format!("listing the services in {}", at.region),
                    clients
                        .services
                        .list_services()
                        .set_parent(&parent)
                        .set_page_token(&token)
                        .send(),
                )
                .await?;
            services.extend(page.services);
            if !next_page(&mut token, page.next_page_token) {
                break;
            }
        }
        let ours: Vec<&Service> = services
            .iter()
            .filter(|service| names::is_ours(at, &service.labels).is_some())
            .collect();
        let looks = ours.iter().map(|service| async move {
            let mut seen = self.observe_service(at, service).await?;
            self.add_metrics(at, &mut seen).await;
            Ok::<_, Error>(seen)
        });
        for (service, seen) in ours.iter().zip(futures::future::join_all(looks).await) {
            versions.push(service.etag.clone());
            let seen = seen?;
            observed.services.insert(seen.name.clone(), seen);
        }

        let pools = self
            .call(
                &format!("listing the worker pools in {}", at.region),
                clients.pools.list_worker_pools().set_parent(&parent).send(),
            )
            .await?
            .worker_pools;
        for pool in pools
            .iter()
            .filter(|pool| names::is_ours(at, &pool.labels).is_some())
        {
            versions.push(pool.etag.clone());
            let seen = self.observe_pool(at, pool).await?;
            observed.services.insert(seen.name.clone(), seen);
        }

        let jobs = self
            .call(
                &format!("listing the jobs in {}", at.region),
                clients.jobs.list_jobs().set_parent(&parent).send(),
            )
            .await?
            .jobs;
        for job in jobs
            .iter()
            .filter(|job| names::is_ours(at, &job.labels).is_some())
        {
            versions.push(job.etag.clone());
            if let Some(seen) = self.observe_job(job).await? {
                observed.services.insert(seen.name.clone(), seen);
            }
        }
        observed.exists = !observed.services.is_empty();
        observed.version = versions.join(",");
        Ok(observed)
    }

    async fn deploy(
        &self,
        at: &Placement,
        name: &str,
        spec: &RevisionSpec,
        _secrets: &SecretValues,
    ) -> Result<Option<String>> {
        if let Some(reason) = names::invalid_name(at, &spec.service) {
            return Err(Error::Invalid(format!(
                "services.{}: {reason}",
                spec.service
            )));
        }
        match shape(spec) {
            Shape::Service => {
                let url = self.deploy_service(at, name, spec).await?;
                if let Some(invoker) = spec.invoker {
                    let resource = self.resource_name(at, "services", &spec.service);
                    // The service must exist before its policy can be set.
                    if let Some(operation) = self.pending_operation(at, &spec.service) {
                        let operation = self.get_operation(&operation).await?;
                        if !operation.done && self.get_service(&resource).await?.is_none() {
                            self.finish(
                                &format!("creating {}", spec.service),
                                operation,
                                self.settings.request_timeout * 4,
                            )
                            .await
                            .ok();
                        }
                    }
                    self.set_invoker(&resource, invoker).await?;
                }
                // Anyone can reach a public service: an uptime check watches it from outside.
                if spec.invoker == Some(Invoker::Public)
                    && spec.ingress == mahavishnu_core::deploy::Ingress::All
                    && let Some(url) = &url
                {
                    let path = spec.health.clone().unwrap_or_default().path;
                    self.monitoring()
                        .await?
                        .ensure_uptime_check(&at.sandcastle, &spec.service, &at.region, url, &path)
                        .await?;
                }
                Ok(url)
            }
            Shape::WorkerPool => self.deploy_pool(at, name, spec).await.map(|()| None),
            Shape::Job => self.deploy_job(at, name, spec).await.map(|()| None),
        }
    }

    async fn wait_ready(
        &self,
        at: &Placement,
        service: &str,
        revision: &str,
        deadline: Duration,
        progress: Progress<'_>,
    ) -> Result<()> {
        let cloud_revision = names::cloud_revision(at, revision);
        let service_name = self.resource_name(at, "services", service);
        let pool_name = self.resource_name(at, "workerPools", service);
        let job_name = self.resource_name(at, "jobs", service);
        if self.get_job(&job_name).await?.is_some()
            && self.get_service(&service_name).await?.is_none()
        {
            return self.wait_job(at, service, deadline, progress).await;
        }
        let started = Instant::now();
        let mut pause = FIRST_POLL;
        let mut last = String::new();
        // The deploy's operation ends when the revision is ready or has failed: waited for on the
        // server's side, it answers at once, and its error (a quota) is nowhere else.
        if let Some(operation) = self.pending_operation(at, service) {
            let mut operation = self.get_operation(&operation).await?;
            while !operation.done && started.elapsed() < deadline {
                operation = self
                    .wait_operation(&operation.name, deadline.saturating_sub(started.elapsed()))
                    .await?;
            }
            if let Some(error) =
                Self::operation_error(&format!("the revision {cloud_revision}"), &operation)
            {
                return Err(error);
            }
        }
        loop {
            let settled = match self.get_service(&service_name).await? {
                Some(found) => {
                    self.settled_revision(
                        &service_name,
                        found.generation,
                        found.observed_generation,
                        found.reconciling,
                        &cloud_revision,
                    )
                    .await?
                }
                None => match self.get_pool(&pool_name).await? {
                    Some(pool) => {
                        self.settled_revision(
                            &pool_name,
                            pool.generation,
                            pool.observed_generation,
                            pool.reconciling,
                            &cloud_revision,
                        )
                        .await?
                    }
                    None => Err(format!("{service} does not exist in {} yet", at.region)),
                },
            };
            let waiting = match settled {
                Ok(found) => match convert::revision_health(&found.conditions) {
                    Health::Healthy => return Ok(()),
                    Health::Failed(reason) => {
                        return Err(Error::Failed(format!(
                            "the revision {cloud_revision} failed: {reason}"
                        )));
                    }
                    _ => convert::condition(&found.conditions, "Ready")
                        .map(convert::describe)
                        .unwrap_or_else(|| "Ready is not reported yet".into()),
                },
                Err(waiting) => waiting,
            };
            if started.elapsed() > deadline {
                return Err(Error::Failed(format!(
                    "the revision {cloud_revision} is not ready after {deadline:?}: {waiting}"
                )));
            }
            if waiting != last {
                progress(format!("waiting for {cloud_revision}: {waiting}"));
                last = waiting;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(LONGEST_POLL);
        }
    }

    async fn set_traffic(
        &self,
        at: &Placement,
        service: &str,
        weights: &[(String, u8)],
    ) -> Result<()> {
        let pool_name = self.resource_name(at, "workerPools", service);
        if let Some(mut pool) = self.get_pool(&pool_name).await? {
            pool.instance_splits = weights
                .iter()
                .map(|(revision, weight)| {
                    let mut split = InstanceSplit::new();
                    split.r#type = InstanceSplitAllocationType::Revision;
                    split.revision = names::cloud_revision(at, revision);
                    split.percent = i32::from(*weight);
                    split
                })
                .collect();
            let clients = self.clients().await?;
            let what = format!("moving the instances of {service} in {}", at.region);
            let operation = self
                .call(
                    &what,
                    clients
                        .pools
                        .update_worker_pool()
                        .set_worker_pool(pool)
                        .send(),
                )
                .await?;
            self.finish(&what, operation, self.settings.request_timeout * 4)
                .await?;
            return Ok(());
        }
        if self
            .get_job(&self.resource_name(at, "jobs", service))
            .await?
            .is_some()
        {
            return Ok(()); // a job takes no traffic
        }
        self.update_traffic(at, service, |current| {
            let tags: Vec<TrafficTarget> = Self::pinned_traffic(current)
                .into_iter()
                .filter(|target| !target.tag.is_empty())
                .collect();
            let mut traffic: Vec<TrafficTarget> = weights
                .iter()
                .filter(|(_, weight)| *weight > 0)
                .map(|(revision, weight)| {
                    let mut target = TrafficTarget::new();
                    target.r#type = TrafficTargetAllocationType::Revision;
                    target.revision = names::cloud_revision(at, revision);
                    target.percent = i32::from(*weight);
                    target
                })
                .collect();
            for tagged in tags {
                match traffic.iter_mut().find(|t| t.revision == tagged.revision) {
                    Some(target) => target.tag = tagged.tag,
                    None => {
                        let mut tagged = tagged;
                        tagged.percent = 0;
                        traffic.push(tagged);
                    }
                }
            }
            Ok(traffic)
        })
        .await?;
        Ok(())
    }

    async fn set_tag(
        &self,
        at: &Placement,
        service: &str,
        revision: &str,
        tag: Option<&str>,
    ) -> Result<Option<String>> {
        let cloud_revision = names::cloud_revision(at, revision);
        let updated = self
            .update_traffic(at, service, |current| {
                let mut traffic = Self::pinned_traffic(current);
                for target in traffic.iter_mut() {
                    if target.revision == cloud_revision || tag.is_some_and(|t| t == target.tag) {
                        target.tag.clear();
                    }
                }
                if let Some(tag) = tag {
                    match traffic.iter_mut().find(|t| t.revision == cloud_revision) {
                        Some(target) => target.tag = tag.to_string(),
                        None => {
                            let mut target = TrafficTarget::new();
                            target.r#type = TrafficTargetAllocationType::Revision;
                            target.revision = cloud_revision.clone();
                            target.tag = tag.to_string();
                            traffic.push(target);
                        }
                    }
                }
                traffic.retain(|target| target.percent > 0 || !target.tag.is_empty());
                Ok(traffic)
            })
            .await?;
        let _ = updated;
        match tag {
            Some(tag) => Ok(Some(self.url(at, service, Some(tag)).await?)),
            None => Ok(None),
        }
    }

    async fn destroy(&self, at: &Placement, service: &str, revision: Option<&str>) -> Result<()> {
        let clients = self.clients().await?;
        let deadline = self.settings.request_timeout * 4;
        let service_name = self.resource_name(at, "services", service);
        let pool_name = self.resource_name(at, "workerPools", service);
        let job_name = self.resource_name(at, "jobs", service);
        if let Some(revision) = revision {
            let parent = if self.get_pool(&pool_name).await?.is_some() {
                pool_name
            } else {
                service_name
            };
            let name = format!("{parent}/revisions/{}", names::cloud_revision(at, revision));
            let what = format!("deleting the revision {revision} in {}", at.region);
            if let Some(operation) = self
                .call_found(
                    &what,
                    clients.revisions.delete_revision().set_name(&name).send(),
                )
                .await?
            {
                self.finish(&what, operation, deadline).await?;
            }
            return Ok(());
        }
        self.monitoring()
            .await?
            .delete_uptime_checks(&at.sandcastle, service, Some(&at.region))
            .await?;
        let what = format!("deleting {service} in {}", at.region);
        // Only what is this service's is deleted: a resource of the same name made otherwise stays.
        if let Some(found) = self.get_service(&service_name).await? {
            Self::claim(at, "service", &service_name, &found.labels, service)?;
            if let Some(operation) = self
                .call_found(
                    &what,
                    clients
                        .services
                        .delete_service()
                        .set_name(&service_name)
                        .send(),
                )
                .await?
            {
                self.finish(&what, operation, deadline).await?;
            }
        }
        if let Some(found) = self.get_pool(&pool_name).await? {
            Self::claim(at, "worker pool", &pool_name, &found.labels, service)?;
            if let Some(operation) = self
                .call_found(
                    &what,
                    clients
                        .pools
                        .delete_worker_pool()
                        .set_name(&pool_name)
                        .send(),
                )
                .await?
            {
                self.finish(&what, operation, deadline).await?;
            }
        }
        if let Some(found) = self.get_job(&job_name).await? {
            Self::claim(at, "job", &job_name, &found.labels, service)?;
            if let Some(operation) = self
                .call_found(&what, clients.jobs.delete_job().set_name(&job_name).send())
                .await?
            {
                self.finish(&what, operation, deadline).await?;
            }
        }
        Ok(())
    }

    async fn logs(
        &self,
        at: &Placement,
        service: &str,
        revision: Option<&str>,
        tail: usize,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<String>>> {
        let clients = self.clients().await?;
        let id = names::resource_id(at, service);
        let mut filter = format!(
            "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"{id}\" AND \
             resource.labels.location=\"{}\"",
            at.region
        );
        if let Some(revision) = revision {
            filter.push_str(&format!(
                " AND resource.labels.revision_name=\"{}\"",
                names::cloud_revision(at, revision)
            ));
        }
        let project = format!("projects/{}", self.settings.project);
        let page = self
            .call(
                &format!("reading the logs of {service} in {}", at.region),
                clients
                    .logging
                    .list_log_entries()
                    .set_resource_names([project.clone()])
                    .set_filter(&filter)
                    .set_order_by("timestamp desc")
                    .set_page_size(tail.clamp(1, 1000) as i32)
                    .send(),
            )
            .await?;
        let mut entries = page.entries;
        entries.truncate(tail);
        entries.reverse();
        let mut since = entries
            .last()
            .and_then(|entry| entry.timestamp)
            .map(String::from);
        let first: Vec<Result<String>> = entries.iter().map(|e| Ok(log_line(e))).collect();
        let first = futures::stream::iter(first);
        if !follow {
            return Ok(Box::pin(first));
        }
        let logging = clients.logging.clone();
        let timeout = self.settings.request_timeout;
        // New entries are asked for once a second, each time after the newest one already shown.
        let more = futures::stream::unfold(
            (std::collections::VecDeque::<String>::new(), since.take()),
            move |(mut queue, mut since)| {
                let (logging, filter, project) = (logging.clone(), filter.clone(), project.clone());
                async move {
                    loop {
                        if let Some(line) = queue.pop_front() {
                            return Some((Ok(line), (queue, since)));
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let mut wanted = filter.clone();
                        if let Some(since) = &since {
                            wanted.push_str(&format!(" AND timestamp>\"{since}\""));
                        }
                        let call = logging
                            .list_log_entries()
                            .set_resource_names([project.clone()])
                            .set_filter(&wanted)
                            .set_order_by("timestamp asc")
                            .set_page_size(1000)
                            .send();
                        match tokio::time::timeout(timeout, call).await {
                            Ok(Ok(page)) => {
                                if let Some(newest) = page.entries.last().and_then(|e| e.timestamp)
                                {
                                    since = Some(String::from(newest));
                                }
                                queue.extend(page.entries.iter().map(log_line));
                            }
                            Ok(Err(e)) => {
                                return Some((
                                    Err(api_error("following the logs", e)),
                                    (queue, since),
                                ));
                            }
                            Err(_) => {} // asked again in a second
                        }
                    }
                }
            },
        );
        Ok(Box::pin(futures::StreamExt::chain(first, more)))
    }

    async fn expect_probe(
        &self,
        at: &Placement,
        service: &str,
        path: &str,
        nonce: &str,
    ) -> Result<()> {
        let since = String::from(
            google_cloud_wkt::Timestamp::try_from(std::time::SystemTime::now())
                .map_err(|e| Error::Failed(format!("the clock: {e}")))?,
        );
        if let Ok(mut probes) = self.probes.lock() {
            probes.insert(
                nonce.to_string(),
                (at.clone(), service.to_string(), path.to_string(), since),
            );
        }
        Ok(())
    }

    /// Pub/Sub pushes carry the message in their body, which no log shows: the probe counts as
    /// delivered when the subscriber's request log has a push to its path after it was published.
    async fn probe_answer(&self, at: &Placement, nonce: &str) -> Result<Option<u16>> {
        let _ = at;
        let Some((at, service, path, since)) = self
            .probes
            .lock()
            .ok()
            .and_then(|probes| probes.get(nonce).cloned())
        else {
            return Ok(None);
        };
        let clients = self.clients().await?;
        let filter = format!(
            "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"{}\" AND \
             resource.labels.location=\"{}\" AND logName=\"projects/{}/logs/run.googleapis.com%2Frequests\" \
             AND timestamp>\"{since}\"",
            names::resource_id(&at, &service),
            at.region,
            self.settings.project
        );
        let page = self
            .call(
                &format!("reading the requests {service} took in {}", at.region),
                clients
                    .logging
                    .list_log_entries()
                    .set_resource_names([format!("projects/{}", self.settings.project)])
                    .set_filter(filter)
                    .set_order_by("timestamp asc")
                    .set_page_size(1000)
                    .send(),
            )
            .await?;
        Ok(page.entries.iter().find_map(|entry| {
            let request = entry.http_request.as_ref()?;
            let url_path = request
                .request_url
                .split_once("://")
                .map_or(request.request_url.as_str(), |(_, rest)| rest)
                .split_once('/')
                .map_or("/", |(_, rest)| rest);
            let pushed = request.request_method == "POST"
                && format!("/{url_path}").split('?').next() == Some(path.as_str());
            pushed.then_some(request.status as u16)
        }))
    }

    async fn set_front_door(
        &self,
        sandcastle: &str,
        service: &str,
        _port: u16,
        regions: &[(String, String)],
        _health_path: &str,
    ) -> Result<String> {
        let regions: Vec<String> = regions.iter().map(|(region, _)| region.clone()).collect();
        let state = self
            .front_door_client()
            .await?
            .ensure(
                sandcastle,
                service,
                &regions,
                self.settings.front_door_domain.as_deref(),
                &|_| {},
            )
            .await?;
        Ok(state.url)
    }

    async fn front_door(&self, sandcastle: &str) -> Result<Option<FrontDoorStatus>> {
        let Some(service) = &self.settings.front_door_service else {
            return Ok(None);
        };
        let Some(state) = self
            .front_door_client()
            .await?
            .state(sandcastle, service)
            .await?
        else {
            return Ok(None);
        };
        let mut regions = Vec::new();
        for region in &state.regions {
            let at = Placement {
                sandcastle: sandcastle.to_string(),
                region: region.clone(),
            };
            // Serverless backends take no load-balancer health checks: the load balancer follows
            // Cloud Run's own readiness of the service in each region.
            let healthy = self
                .get_service(&self.resource_name(&at, "services", service))
                .await?
                .and_then(|found| found.terminal_condition)
                .is_some_and(|ready| {
                    ready.state == google_cloud_run_v2::model::condition::State::ConditionSucceeded
                });
            regions.push(FrontDoorRegion {
                region: region.clone(),
                url: self.url(&at, service, None).await?,
                healthy,
            });
        }
        Ok(Some(FrontDoorStatus {
            service: service.clone(),
            url: state.url,
            address: Some(state.address),
            regions,
        }))
    }

    async fn destroy_front_door(&self, sandcastle: &str) -> Result<()> {
        let Some(service) = &self.settings.front_door_service else {
            return Ok(());
        };
        let front_door = self.front_door_client().await?;
        let regions = front_door
            .state(sandcastle, service)
            .await?
            .map(|state| state.regions)
            .unwrap_or_default();
        front_door.destroy(sandcastle, service, &regions).await
    }

    async fn request_from(&self, at: &Placement, service: &str, url: &str) -> Result<u16> {
        let _ = (at, service);
        let client = reqwest::Client::builder()
            .timeout(self.settings.request_timeout)
            .build()
            .map_err(|e| Error::Failed(format!("cannot make an HTTP client: {e}")))?;
        let answer = client
            .get(url)
            .send()
            .await
            .map_err(|e| Error::Failed(format!("GET {url}: {e}")))?;
        Ok(answer.status().as_u16())
    }

    async fn destroy_placement(&self, at: &Placement) -> Result<()> {
        let observed = self.observe(at).await?;
        for service in observed.services.keys() {
            self.destroy(at, service, None).await?;
        }
        Ok(())
    }
}

/// One log entry as a line: its time and its text.
fn log_line(entry: &google_cloud_logging_v2::model::LogEntry) -> String {
    let time = entry.timestamp.map(String::from).unwrap_or_default();
    let text = match (entry.text_payload(), &entry.http_request) {
        (Some(text), _) => text.clone(),
        (None, Some(request)) => format!(
            "{} {} {}",
            request.request_method, request.request_url, request.status
        ),
        (None, None) => "(a structured entry)".into(),
    };
    // What a service logs reaches a terminal: its control characters (escape sequences) do not.
    let text: String = text
        .chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect();
    format!("{time} {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_services_log_line_cannot_drive_the_terminal() {
        let mut entry = google_cloud_logging_v2::model::LogEntry::new();
        entry.payload = Some(
            google_cloud_logging_v2::model::log_entry::Payload::TextPayload(
                "ok\u{1b}]0;pwned\u{7}\u{1b}[2J\tdone".into(),
            ),
        );
        let line = log_line(&entry);
        assert!(
            !line.contains('\u{1b}') && !line.contains('\u{7}'),
            "{line:?}"
        );
        assert!(line.ends_with("ok?]0;pwned??[2J\tdone"), "{line:?}");
    }
}
