//! The Kubernetes platform: deployments on named Kubernetes targets, each target one region (a
//! cluster, or a namespace of one). Everything is written with server-side apply under the field
//! manager `mahavishnu`, so fields others own (an HPA's replicas, a mesh's annotations) are left to
//! them; everything is found again by its labels, and only what carries them is ever deleted.
//!
//! A revision is a Deployment (a Job for a `job`) with a ConfigMap of its environment and a Service;
//! a service has a stable Service, which selects the revision that serves, and on a Gateway API
//! `Gateway` an HTTPRoute whose backend weights are the release. Without a Gateway a release moves
//! all traffic at once, by flipping the stable Service's selector.

mod objects;
mod readiness;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use gateway_api::gateways::Gateway;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, WatchParams};
use kube::core::WatchEvent;
use kube::{Client, Resource, ResourceExt};
use mahavishnu_core::config::KubernetesConfig;
use mahavishnu_core::deploy::{
    Observed, ObservedRevision, ObservedService, Placement, Platform, PlatformCapabilities,
    PlatformKind, Progress, RevisionSpec, SecretRef, SecretValues, ServiceKind,
};
use mahavishnu_core::{Error, Result, TargetName};
use serde::Serialize;
use serde::de::DeserializeOwned;

use objects::{REVISION, SERVICE, WEIGHT};
pub use objects::{Scope, TAG_HEADER};
use readiness::Rollout;

use crate::KubernetesTarget;
use crate::manifest::SPEC_ANNOTATION;

/// The field manager of everything Mahavishnu applies.
pub const FIELD_MANAGER: &str = "mahavishnu";
/// The field manager of a worker revision's share of the release, kept apart so that applying the
/// revision again does not take it away.
const TRAFFIC_MANAGER: &str = "mahavishnu-traffic";
/// How long one watch waits before a rollout is looked at again.
const WATCH_SLICE: Duration = Duration::from_secs(5);

/// One region of the Kubernetes platform: a named target, and the namespace the manifest asks for.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// The region, which is the target's name.
    pub region: String,
    /// The target's settings.
    pub config: KubernetesConfig,
    /// The namespace the manifest's `[platforms.kubernetes] namespace` names, over the target's.
    pub namespace: Option<String>,
}

/// Deployments on Kubernetes clusters.
pub struct KubernetesPlatform {
    clusters: BTreeMap<String, Arc<Cluster>>,
    /// Delivery probes awaited: nonce -> the subscriber, its push path, and when the probe went out.
    probes: std::sync::Mutex<BTreeMap<String, (String, String, Instant)>>,
    /// Whether the bus pushes from outside the clusters (Google's Pub/Sub), so that subscribers
    /// must be reached through their Gateway.
    outside_bus: bool,
}

struct Cluster {
    target: KubernetesTarget,
    namespace: Option<String>,
    gateway: Option<(String, String)>,
    domain: Option<String>,
    front: tokio::sync::OnceCell<Option<Front>>,
}

/// Where a Gateway is reached from outside.
#[derive(Clone, Debug)]
struct Front {
    scheme: &'static str,
    address: String,
    port: i32,
    domain: Option<String>,
}

impl KubernetesPlatform {
    /// The platform over these regions.
    pub fn new(regions: Vec<ClusterSettings>) -> Result<Self> {
        let mut clusters = BTreeMap::new();
        for settings in regions {
            let name = TargetName::new(settings.region.clone())?;
            let gateway = settings.config.gateway.clone();
            let domain = settings.config.gateway_domain.clone();
            let target = KubernetesTarget::new(name, settings.config);
            let namespace = settings.namespace;
            let own = namespace
                .clone()
                .unwrap_or_else(|| target.namespace().to_string());
            let gateway = match gateway {
                None => None,
                Some(text) => Some(match text.split_once('/') {
                    Some((ns, name))
                        if !ns.is_empty() && !name.is_empty() && !name.contains('/') =>
                    {
                        (ns.to_string(), name.to_string())
                    }
                    None if !text.is_empty() => (own.clone(), text),
                    _ => {
                        return Err(Error::Invalid(format!(
                            "targets.{}.gateway: `{text}` is not `NAME` or `NAMESPACE/NAME`",
                            settings.region
                        )));
                    }
                }),
            };
            clusters.insert(
                settings.region.clone(),
                Arc::new(Cluster {
                    target,
                    namespace,
                    gateway,
                    domain,
                    front: tokio::sync::OnceCell::new(),
                }),
            );
        }
        Ok(KubernetesPlatform {
            clusters,
            probes: Default::default(),
            outside_bus: false,
        })
    }

    /// Says that the bus pushes from outside the clusters (Google's Pub/Sub, not an emulator in the
    /// cluster): subscribers are then pushed to through the Gateway.
    pub fn with_outside_bus(mut self, outside: bool) -> Self {
        self.outside_bus = outside;
        self
    }

    fn cluster(&self, at: &Placement) -> Result<&Arc<Cluster>> {
        self.clusters.get(&at.region).ok_or_else(|| {
            Error::Invalid(format!(
                "region `{}` is not a kubernetes target here; the regions are: {}",
                at.region,
                self.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Whether the region's cluster has a Gateway that splits traffic.
    pub fn has_gateway(&self, region: &str) -> bool {
        self.clusters
            .get(region)
            .is_some_and(|cluster| cluster.gateway.is_some())
    }

    /// Every object deploying `spec` as `revision` and releasing it would apply, for `plan -o yaml`.
    pub async fn objects(
        &self,
        at: &Placement,
        revision: &str,
        spec: &RevisionSpec,
    ) -> Result<Vec<serde_json::Value>> {
        let cluster = self.cluster(at)?;
        let scope = cluster.scope(at);
        let mut objects = Vec::new();
        if spec.kind == ServiceKind::External {
            return Ok(objects);
        }
        objects.push(objects::as_json(&objects::config_map(
            &scope, revision, spec,
        )));
        if spec.kind == ServiceKind::Job {
            objects.push(objects::as_json(&objects::job(&scope, revision, spec)?));
            return Ok(objects);
        }
        objects.push(objects::as_json(&objects::deployment(
            &scope, revision, spec,
        )?));
        if let Some(hpa) = objects::autoscaler(&scope, revision, spec) {
            objects.push(objects::as_json(&hpa));
        }
        if spec.listens {
            objects.push(objects::as_json(&objects::revision_service(
                &scope, revision, spec,
            )));
            objects.push(objects::as_json(&objects::stable_service(
                &scope,
                &spec.service,
                revision,
            )));
            if objects::is_public(spec) {
                let host = cluster.host(at, &spec.service).await?;
                let weights = [(revision.to_string(), 100)];
                if let Some(route) = objects::route(
                    &scope,
                    &spec.service,
                    host.as_deref(),
                    &weights,
                    &BTreeMap::new(),
                ) {
                    objects.push(objects::as_json(&route));
                }
            }
        }
        Ok(objects)
    }
}

impl Cluster {
    fn name(&self) -> &TargetName {
        &self.target.name
    }

    fn namespace(&self) -> String {
        self.namespace
            .clone()
            .unwrap_or_else(|| self.target.namespace().to_string())
    }

    fn scope(&self, at: &Placement) -> Scope {
        Scope {
            at: at.clone(),
            namespace: self.namespace(),
            gateway: self.gateway.clone(),
        }
    }

    async fn client(&self) -> Result<Client> {
        self.target.client().await
    }

    async fn api<K>(&self) -> Result<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Ok(Api::namespaced(self.client().await?, &self.namespace()))
    }

    async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        self.target.call(what, call).await
    }

    /// Applies `object` (server-side apply, field manager `mahavishnu`, forced: Mahavishnu owns what
    /// it sets).
    async fn apply<K>(&self, object: &K) -> Result<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let kind = K::kind(&Default::default()).to_string();
        let api: Api<K> = self.api().await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.call(
            &format!("apply {kind} {name}"),
            api.patch(&name, &params, &Patch::Apply(object)),
        )
        .await
        .map(|_| ())
    }

    async fn list<K>(&self, what: &str, labels: &str) -> Result<(Vec<K>, String)>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api().await?;
        let list = self
            .call(
                &format!("list {what} in namespace {}", self.namespace()),
                api.list(&ListParams::default().labels(labels)),
            )
            .await?;
        let version = list.metadata.resource_version.clone().unwrap_or_default();
        Ok((list.items, version))
    }

    /// Deletes every object of one kind that carries `labels`: nothing else is ever deleted.
    async fn delete_labelled<K>(&self, what: &str, labels: &str) -> Result<usize>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        let (items, _) = self.list::<K>(what, labels).await?;
        let api: Api<K> = self.api().await?;
        for item in &items {
            let name = item.name_any();
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => {
                    return Err(crate::api_error(
                        self.name(),
                        &format!("delete {what} {name}"),
                        e,
                    ));
                }
            }
        }
        Ok(items.len())
    }

    /// The Gateway's address, listener and domain, read once.
    async fn front(&self) -> Result<Option<Front>> {
        let Some((namespace, name)) = &self.gateway else {
            return Ok(None);
        };
        self.front
            .get_or_try_init(|| async {
                let api: Api<Gateway> = Api::namespaced(self.client().await?, namespace);
                let gateway = self
                    .call(&format!("read Gateway {namespace}/{name}"), api.get_opt(name))
                    .await?
                    .ok_or_else(|| {
                        Error::target(
                            self.name(),
                            format!(
                                "there is no Gateway {namespace}/{name} (targets.{}.gateway); create \
                                 it, or leave the key out for all-or-nothing releases",
                                self.name()
                            ),
                        )
                    })?;
                let listener = gateway
                    .spec
                    .listeners
                    .iter()
                    .find(|l| l.protocol == "HTTP" || l.protocol == "HTTPS");
                let address = gateway
                    .status
                    .as_ref()
                    .and_then(|status| status.addresses.as_ref())
                    .and_then(|addresses| addresses.first())
                    .map(|address| address.value.clone())
                    .unwrap_or_default();
                let wildcard = listener
                    .and_then(|l| l.hostname.as_deref())
                    .and_then(|host| host.strip_prefix("*."))
                    .map(String::from);
                Ok(Some(Front {
                    scheme: if listener.is_some_and(|l| l.protocol == "HTTPS") {
                        "https"
                    } else {
                        "http"
                    },
                    address,
                    port: listener.map_or(80, |l| l.port),
                    domain: self.domain.clone().or(wildcard),
                }))
            })
            .await
            .cloned()
    }

    /// A public service's host name on the Gateway: `SERVICE-SANDCASTLE.DOMAIN`.
    async fn host(&self, at: &Placement, service: &str) -> Result<Option<String>> {
        Ok(self.front().await?.and_then(|front| {
            front
                .domain
                .map(|domain| format!("{service}-{}.{domain}", at.sandcastle))
        }))
    }

    /// A public service's URL through the Gateway.
    async fn public_url(&self, at: &Placement, service: &str) -> Result<Option<String>> {
        let Some(front) = self.front().await? else {
            return Ok(None);
        };
        let host = self
            .host(at, service)
            .await?
            .unwrap_or(front.address.clone());
        let port = match (front.scheme, front.port) {
            ("http", 80) | ("https", 443) => String::new(),
            (_, port) => format!(":{port}"),
        };
        Ok(Some(format!("{}://{host}{port}", front.scheme)))
    }

    /// Refuses to take over an object of the same name that Mahavishnu did not make for this
    /// sandcastle.
    async fn claim<K>(&self, at: &Placement, name: &str) -> Result<()>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api().await?;
        let kind = K::kind(&Default::default()).to_string();
        let Some(existing) = self
            .call(&format!("read {kind} {name}"), api.get_opt(name))
            .await?
        else {
            return Ok(());
        };
        let labels = existing.labels();
        let ours = labels.get(crate::MANAGED_BY).map(String::as_str) == Some("mahavishnu")
            && labels.get(objects::SANDCASTLE) == Some(&at.sandcastle);
        if ours {
            Ok(())
        } else {
            Err(Error::target(
                self.name(),
                format!(
                    "{kind} {name} in namespace {} was not made by Mahavishnu for sandcastle {}; it \
                     is left alone. Rename the service, or deploy to another namespace \
                     ([platforms.kubernetes] namespace)",
                    self.namespace(),
                    at.sandcastle
                ),
            ))
        }
    }

    /// The pods of a revision (or of a whole service).
    async fn pods(
        &self,
        at: &Placement,
        service: &str,
        revision: Option<&str>,
    ) -> Result<Vec<Pod>> {
        let scope = self.scope(at);
        let mut labels = scope.label_query(Some(service));
        if let Some(revision) = revision {
            labels.push_str(&format!(",{REVISION}={revision}"));
        }
        Ok(self.list::<Pod>("pods", &labels).await?.0)
    }

    /// The last lines a crashed pod wrote, and the newest warning about it (a failing probe, a failed
    /// pull), to add to its trouble.
    async fn explain(&self, pods: &[Pod], words: &str) -> String {
        let Some(pod) = pods
            .iter()
            .find(|pod| words.contains(&pod.name_any()))
            .or(pods.first())
        else {
            return words.to_string();
        };
        let name = pod.name_any();
        let mut text = words.to_string();
        if let Ok(events) = self.api::<Event>().await {
            let params = ListParams::default().fields(&format!("involvedObject.name={name}"));
            if let Ok(Ok(list)) =
                tokio::time::timeout(Duration::from_secs(5), events.list(&params)).await
                && let Some(warning) = readiness::warning(&list.items)
                && !text.contains(&warning)
            {
                text.push_str(&format!("; {warning}"));
            }
        }
        if readiness::crashed(words)
            && let Ok(api) = self.api::<Pod>().await
        {
            let params = LogParams {
                previous: true,
                tail_lines: Some(10),
                ..Default::default()
            };
            let log = match tokio::time::timeout(Duration::from_secs(5), api.logs(&name, &params))
                .await
            {
                Ok(Ok(log)) if !log.trim().is_empty() => Some(log),
                _ => match tokio::time::timeout(
                    Duration::from_secs(5),
                    api.logs(
                        &name,
                        &LogParams {
                            tail_lines: Some(10),
                            ..Default::default()
                        },
                    ),
                )
                .await
                {
                    Ok(Ok(log)) => Some(log),
                    _ => None,
                },
            };
            if let Some(log) = log.filter(|log| !log.trim().is_empty()) {
                text.push_str(&format!("\nits last lines:\n{}", log.trim_end()));
            }
        }
        text
    }

    /// Waits for the next change of the named object or of the pods with `labels`, or for `slice`.
    async fn next_change<K>(
        &self,
        name: &str,
        version: &str,
        labels: &str,
        pods_version: &str,
        slice: Duration,
    ) where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + Debug
            + DeserializeOwned
            + Send
            + 'static,
        <K as Resource>::DynamicType: Default,
    {
        let seconds = slice.as_secs().clamp(1, 290) as u32;
        let wait = async {
            let (Ok(objects), Ok(pods)) = (self.api::<K>().await, self.api::<Pod>().await) else {
                tokio::time::sleep(slice).await;
                return;
            };
            let one = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(seconds);
            let many = WatchParams::default().labels(labels).timeout(seconds);
            let (Ok(object), Ok(pods)) = (
                objects.watch(&one, version).await,
                pods.watch(&many, pods_version).await,
            ) else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return;
            };
            let object = object
                .map_ok(|event| matches!(event, WatchEvent::Bookmark(_)))
                .boxed();
            let pods = pods
                .map_ok(|event| matches!(event, WatchEvent::Bookmark(_)))
                .boxed();
            let mut both = futures::stream::select(object, pods);
            while let Some(event) = both.next().await {
                match event {
                    Ok(true) => continue,
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(slice + Duration::from_secs(1), wait).await;
    }
}

/// A label value as a number, for a worker's weight.
fn weight_of(object: &impl ResourceExt) -> Option<u8> {
    object
        .annotations()
        .get(WEIGHT)
        .and_then(|text| text.parse().ok())
}

fn spec_of(object: &impl ResourceExt) -> Option<RevisionSpec> {
    object
        .annotations()
        .get(SPEC_ANNOTATION)
        .and_then(|text| serde_json::from_str(text).ok())
}

fn created(object: &impl ResourceExt) -> String {
    object
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|time| time.0.to_string())
        .unwrap_or_default()
}

/// `(SERVICE, NAMESPACE)` of an in-cluster URL's host (`NAME.NS.svc.cluster.local`, `NAME.NS.svc`,
/// `NAME.NS`), and the path.
fn in_cluster(url: &str, namespace: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let host = authority.split(':').next()?;
    let labels: Vec<&str> = host.split('.').collect();
    let (service, ns) = match labels.as_slice() {
        [service] => (*service, namespace),
        [service, ns] | [service, ns, "svc"] | [service, ns, "svc", "cluster", "local"] => {
            (*service, *ns)
        }
        _ => return None,
    };
    Some((service.to_string(), ns.to_string(), path.to_string()))
}

#[async_trait]
impl Platform for KubernetesPlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Kubernetes
    }

    fn capabilities(&self) -> PlatformCapabilities {
        let gateways = !self.clusters.is_empty()
            && self
                .clusters
                .values()
                .all(|cluster| cluster.gateway.is_some());
        PlatformCapabilities {
            traffic_split: gateways,
            tags: gateways,
            regions: true,
            exec: false,
            logs: true,
            native_secrets: true,
            native_health: true,
            metrics: false,
            front_door: false,
        }
    }

    fn cannot_run(&self, spec: &RevisionSpec) -> Option<String> {
        objects::cannot_run(spec)
    }

    fn gate_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn push_url(&self, at: &Placement, service: &str, url: &str) -> Result<String> {
        if !self.outside_bus {
            return Ok(url.to_string());
        }
        let cluster = self.cluster(at)?;
        let routed = match cluster.gateway {
            Some(_) => {
                let api: Api<HttpRoute> = cluster.api().await?;
                cluster
                    .call(&format!("read HTTPRoute {service}"), api.get_opt(service))
                    .await?
                    .is_some()
            }
            None => false,
        };
        let public = match routed {
            true => cluster.public_url(at, service).await?,
            false => None,
        };
        push_target(public, service, &at.region)
    }

    async fn missing_references(&self, at: &Placement, spec: &RevisionSpec) -> Result<Vec<String>> {
        let cluster = self.cluster(at)?;
        let mut missing = Vec::new();
        for (variable, reference) in &spec.secrets {
            let SecretRef::KubernetesSecret { name, key } = reference else {
                continue;
            };
            let api: Api<Secret> = cluster.api().await?;
            let secret = cluster
                .call(&format!("read Secret {name}"), api.get_metadata_opt(name))
                .await;
            match secret {
                Ok(None) => missing.push(format!(
                    "{variable}: there is no Secret `{name}` in namespace {} of {}; create it \
                     (kubectl create secret generic {name} --from-literal={key}=...)",
                    cluster.namespace(),
                    at.region
                )),
                // Its metadata only: a reference is checked to exist, its value is never read.
                Ok(Some(_)) => {}
                // A cluster that may not read Secrets cannot check; the pod will say.
                Err(_) => {}
            }
        }
        Ok(missing)
    }

    async fn planned_url(
        &self,
        at: &Placement,
        service: &str,
        observed: &Observed,
    ) -> Result<Option<String>> {
        let _ = observed;
        Ok(Some(self.cluster(at)?.scope(at).url(service)))
    }

    async fn manifests(
        &self,
        at: &Placement,
        revision: &str,
        spec: &RevisionSpec,
    ) -> Result<Vec<serde_json::Value>> {
        self.objects(at, revision, spec).await
    }

    async fn observe(&self, at: &Placement) -> Result<Observed> {
        let cluster = self.cluster(at)?;
        let scope = cluster.scope(at);
        let labels = scope.label_query(None);
        let routes = async {
            if cluster.gateway.is_some() {
                cluster.list::<HttpRoute>("HTTPRoutes", &labels).await
            } else {
                Ok((Vec::new(), String::new()))
            }
        };
        let (deployments, jobs, services, pods, routes) = futures::try_join!(
            cluster.list::<Deployment>("Deployments", &labels),
            cluster.list::<Job>("Jobs", &labels),
            cluster.list::<Service>("Services", &labels),
            cluster.list::<Pod>("pods", &labels),
            routes,
        )?;
        let version = [&deployments.1, &jobs.1, &services.1, &pods.1, &routes.1]
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let (deployments, jobs, services, pods, routes) =
            (deployments.0, jobs.0, services.0, pods.0, routes.0);
        let exists = !(deployments.is_empty() && jobs.is_empty() && services.is_empty());
        let pods_of = |revision: &str| -> Vec<Pod> {
            pods.iter()
                .filter(|pod| pod.labels().get(REVISION).map(String::as_str) == Some(revision))
                .cloned()
                .collect()
        };
        let mut observed: BTreeMap<String, ObservedService> = BTreeMap::new();
        let mut add = |service: String, kind: ServiceKind, revision: ObservedRevision| {
            observed
                .entry(service.clone())
                .or_insert_with(|| ObservedService {
                    name: service,
                    kind,
                    url: None,
                    revisions: Vec::new(),
                })
                .revisions
                .push(revision);
        };
        for deployment in &deployments {
            let (Some(service), Some(revision), Some(spec)) = (
                deployment.labels().get(SERVICE).cloned(),
                deployment.labels().get(REVISION).cloned(),
                spec_of(deployment),
            ) else {
                continue;
            };
            let revision_pods = pods_of(&revision);
            let rollout = readiness::rollout(deployment, &revision_pods);
            let health = readiness::health(&rollout, &revision_pods, false);
            add(
                service,
                spec.kind,
                ObservedRevision {
                    name: revision,
                    weight: if spec.listens {
                        0
                    } else {
                        weight_of(deployment).unwrap_or(0)
                    },
                    spec,
                    tag: None,
                    tag_url: None,
                    health,
                    copies: revision_pods.iter().map(readiness::copy).collect(),
                    metrics: None,
                    created: created(deployment),
                },
            );
        }
        for job in &jobs {
            let (Some(service), Some(revision), Some(spec)) = (
                job.labels().get(SERVICE).cloned(),
                job.labels().get(REVISION).cloned(),
                spec_of(job),
            ) else {
                continue;
            };
            let revision_pods = pods_of(&revision);
            let rollout = readiness::job_rollout(job, &revision_pods);
            add(
                service,
                ServiceKind::Job,
                ObservedRevision {
                    name: revision,
                    spec,
                    weight: 0,
                    tag: None,
                    tag_url: None,
                    health: readiness::health(&rollout, &revision_pods, true),
                    copies: revision_pods.iter().map(readiness::copy).collect(),
                    metrics: None,
                    created: created(job),
                },
            );
        }
        let front = if routes.is_empty() {
            None
        } else {
            cluster.front().await.ok().flatten()
        };
        for service in observed.values_mut() {
            service.revisions.sort_by(|a, b| a.created.cmp(&b.created));
            let stable = services
                .iter()
                .find(|s| s.name_any() == service.name && s.labels().get(REVISION).is_none());
            if stable.is_none() {
                continue;
            }
            service.url = Some(scope.url(&service.name));
            let route = routes.iter().find(|route| route.name_any() == service.name);
            let (weights, tags) = match route {
                Some(route) => objects::route_release(route),
                None => {
                    let serving = stable
                        .and_then(|s| s.spec.as_ref())
                        .and_then(|spec| spec.selector.as_ref())
                        .and_then(|selector| selector.get(REVISION).cloned());
                    (
                        serving.map(|r| vec![(r, 100)]).unwrap_or_default(),
                        BTreeMap::new(),
                    )
                }
            };
            let public = match (route, &front) {
                (Some(_), Some(_)) => cluster.public_url(at, &service.name).await.ok().flatten(),
                _ => None,
            };
            for revision in &mut service.revisions {
                revision.weight = weights
                    .iter()
                    .find(|(name, _)| *name == revision.name)
                    .map_or(0, |(_, weight)| *weight);
                if let Some((tag, _)) = tags.iter().find(|(_, r)| **r == revision.name) {
                    revision.tag = Some(tag.clone());
                    revision.tag_url = public
                        .as_ref()
                        .map(|url| format!("{url} with header {TAG_HEADER}: {tag}"));
                }
            }
        }
        Ok(Observed {
            services: observed,
            version,
            exists,
            metrics_url: None,
        })
    }

    async fn deploy(
        &self,
        at: &Placement,
        name: &str,
        spec: &RevisionSpec,
        secrets: &SecretValues,
    ) -> Result<Option<String>> {
        let cluster = self.cluster(at)?;
        let scope = cluster.scope(at);
        if spec.kind == ServiceKind::External {
            return Ok(None);
        }
        if spec.listens {
            // Before anything is made: the service's own name must not be someone else's.
            cluster.claim::<Service>(at, &spec.service).await?;
            if objects::is_public(spec) && cluster.gateway.is_some() {
                cluster.claim::<HttpRoute>(at, &spec.service).await?;
            }
        }
        cluster
            .apply(&objects::config_map(&scope, name, spec))
            .await?;
        if let Some(secret) = objects::secret(&scope, name, spec, secrets.expose()) {
            cluster.apply(&secret).await?;
        }
        if spec.kind == ServiceKind::Job {
            let api: Api<Job> = cluster.api().await?;
            let existing = cluster
                .call(&format!("read Job {name}"), api.get_opt(name))
                .await?;
            if let Some(job) = existing {
                // A job of this revision that failed runs again: Jobs cannot be restarted, so it is
                // deleted (with its pods) and made anew.
                if matches!(readiness::job_rollout(&job, &[]), Rollout::Stuck(_)) {
                    cluster
                        .call(
                            &format!("delete Job {name}"),
                            api.delete(name, &DeleteParams::foreground()),
                        )
                        .await?;
                    let started = Instant::now();
                    while started.elapsed() < Duration::from_secs(60)
                        && cluster
                            .call(&format!("read Job {name}"), api.get_opt(name))
                            .await?
                            .is_some()
                    {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                } else {
                    return Ok(None);
                }
            }
            cluster.apply(&objects::job(&scope, name, spec)?).await?;
            // Older runs of the job go, now that this one is made.
            let (older, _) = cluster
                .list::<Job>("Jobs", &scope.label_query(Some(&spec.service)))
                .await?;
            for job in older.iter().filter(|job| job.name_any() != name) {
                let _ = api
                    .delete(&job.name_any(), &DeleteParams::background())
                    .await;
            }
            return Ok(None);
        }
        cluster
            .apply(&objects::deployment(&scope, name, spec)?)
            .await?;
        if let Some(hpa) = objects::autoscaler(&scope, name, spec) {
            cluster.apply(&hpa).await?;
        }
        if spec.listens {
            cluster
                .apply(&objects::revision_service(&scope, name, spec))
                .await?;
            return Ok(Some(scope.url(&spec.service)));
        }
        Ok(None)
    }

    async fn wait_ready(
        &self,
        at: &Placement,
        service: &str,
        revision: &str,
        deadline: Duration,
        progress: Progress<'_>,
    ) -> Result<()> {
        let cluster = self.cluster(at)?;
        let scope = cluster.scope(at);
        let labels = format!("{},{REVISION}={revision}", scope.label_query(Some(service)));
        let deployments: Api<Deployment> = cluster.api().await?;
        let jobs: Api<Job> = cluster.api().await?;
        let started = Instant::now();
        let mut said = String::new();
        loop {
            let deployment = cluster
                .call(
                    &format!("read Deployment {revision}"),
                    deployments.get_opt(revision),
                )
                .await?;
            let job = match deployment {
                Some(_) => None,
                None => {
                    cluster
                        .call(&format!("read Job {revision}"), jobs.get_opt(revision))
                        .await?
                }
            };
            let (pods, pods_version) = cluster.list::<Pod>("pods", &labels).await?;
            let (rollout, version) = match (&deployment, &job) {
                (Some(deployment), _) => (
                    readiness::rollout(deployment, &pods),
                    deployment.resource_version().unwrap_or_default(),
                ),
                (None, Some(job)) => (
                    readiness::job_rollout(job, &pods),
                    job.resource_version().unwrap_or_default(),
                ),
                (None, None) => {
                    return Err(Error::target(
                        cluster.name(),
                        format!(
                            "there is no Deployment or Job {revision} in namespace {}",
                            cluster.namespace()
                        ),
                    ));
                }
            };
            match rollout {
                Rollout::Done => return Ok(()),
                Rollout::Stuck(words) => {
                    return Err(Error::target(
                        cluster.name(),
                        format!("{revision}: {}", cluster.explain(&pods, &words).await),
                    ));
                }
                Rollout::Going(words) => {
                    if words != said {
                        progress(words.clone());
                        said = words.clone();
                    }
                    let elapsed = started.elapsed();
                    if elapsed >= deadline {
                        return Err(Error::target(
                            cluster.name(),
                            format!(
                                "{revision} was not ready within {}s: {}",
                                deadline.as_secs(),
                                cluster.explain(&pods, &words).await
                            ),
                        ));
                    }
                    let slice = (deadline - elapsed).min(WATCH_SLICE);
                    if deployment.is_some() {
                        cluster
                            .next_change::<Deployment>(
                                revision,
                                &version,
                                &labels,
                                &pods_version,
                                slice,
                            )
                            .await;
                    } else {
                        cluster
                            .next_change::<Job>(revision, &version, &labels, &pods_version, slice)
                            .await;
                    }
                }
            }
        }
    }

    async fn set_traffic(
        &self,
        at: &Placement,
        service: &str,
        weights: &[(String, u8)],
    ) -> Result<()> {
        let cluster = self.cluster(at)?;
        let scope = cluster.scope(at);
        let (deployments, _) = cluster
            .list::<Deployment>("Deployments", &scope.label_query(Some(service)))
            .await?;
        let revisions: BTreeMap<String, &Deployment> = deployments
            .iter()
            .filter_map(|d| d.labels().get(REVISION).map(|r| (r.clone(), d)))
            .collect();
        if let Some((missing, _)) = weights.iter().find(|(r, _)| !revisions.contains_key(r)) {
            return Err(Error::Invalid(format!(
                "{service} has no revision {missing} in {}",
                at.region
            )));
        }
        let Some((serving, _)) = weights
            .iter()
            .filter(|(_, w)| *w > 0)
            .max_by_key(|(_, w)| *w)
        else {
            return Err(Error::Invalid(format!(
                "a release of {service} must give some revision traffic"
            )));
        };
        let spec = spec_of(revisions[serving]).ok_or_else(|| {
            Error::target(
                cluster.name(),
                format!("Deployment {serving} carries no {SPEC_ANNOTATION}"),
            )
        })?;
        let split = weights.iter().filter(|(_, w)| *w > 0).count() > 1;
        if !spec.listens {
            // A worker has no Service: its share of the release is written on each revision.
            let api: Api<Deployment> = cluster.api().await?;
            for revision in revisions.keys() {
                let weight = weights
                    .iter()
                    .find(|(r, _)| r == revision)
                    .map_or(0, |(_, w)| *w);
                let patch = serde_json::json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": { "name": revision, "annotations": { WEIGHT: weight.to_string() } },
                });
                cluster
                    .call(
                        &format!("release Deployment {revision}"),
                        api.patch(
                            revision,
                            &PatchParams::apply(TRAFFIC_MANAGER).force(),
                            &Patch::Apply(&patch),
                        ),
                    )
                    .await?;
            }
            return Ok(());
        }
        let public = objects::is_public(&spec) && cluster.gateway.is_some();
        if split && !public {
            let why = if cluster.gateway.is_none() {
                format!(
                    "splitting traffic needs a Gateway API Gateway: set `gateway` in [targets.{}]; \
                     without one a release moves all traffic at once",
                    at.region
                )
            } else {
                format!("{service} is internal: only public services are split on the Gateway")
            };
            return Err(Error::Invalid(why));
        }
        cluster.claim::<Service>(at, service).await?;
        cluster
            .apply(&objects::stable_service(&scope, service, serving))
            .await?;
        if public {
            cluster.claim::<HttpRoute>(at, service).await?;
            let api: Api<HttpRoute> = cluster.api().await?;
            let tags = cluster
                .call(&format!("read HTTPRoute {service}"), api.get_opt(service))
                .await?
                .map(|route| objects::route_release(&route).1)
                .unwrap_or_default();
            let host = cluster.host(at, service).await?;
            if let Some(route) = objects::route(&scope, service, host.as_deref(), weights, &tags) {
                cluster.apply(&route).await?;
            }
        }
        Ok(())
    }

    async fn set_tag(
        &self,
        at: &Placement,
        service: &str,
        revision: &str,
        tag: Option<&str>,
    ) -> Result<Option<String>> {
        let cluster = self.cluster(at)?;
        let scope = cluster.scope(at);
        if cluster.gateway.is_none() {
            return Err(Error::Invalid(format!(
                "tags reach a revision through a Gateway: set `gateway` in [targets.{}]",
                at.region
            )));
        }
        let api: Api<HttpRoute> = cluster.api().await?;
        let route = cluster
            .call(&format!("read HTTPRoute {service}"), api.get_opt(service))
            .await?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{service} has no HTTPRoute in {}: only a released public service can be tagged",
                    at.region
                ))
            })?;
        let (weights, mut tags) = objects::route_release(&route);
        tags.retain(|_, tagged| tagged != revision);
        if let Some(tag) = tag {
            tags.insert(tag.to_string(), revision.to_string());
        }
        let host = cluster.host(at, service).await?;
        if let Some(route) = objects::route(&scope, service, host.as_deref(), &weights, &tags) {
            cluster.apply(&route).await?;
        }
        let url = cluster.public_url(at, service).await?;
        Ok(tag.and_then(|tag| url.map(|url| format!("{url} with header {TAG_HEADER}: {tag}"))))
    }

    async fn destroy(&self, at: &Placement, service: &str, revision: Option<&str>) -> Result<()> {
        let cluster = self.cluster(at)?;
        let scope = cluster.scope(at);
        let mut labels = scope.label_query(Some(service));
        if let Some(revision) = revision {
            labels.push_str(&format!(",{REVISION}={revision}"));
        }
        delete_everything(cluster, &labels).await
    }

    async fn destroy_placement(&self, at: &Placement) -> Result<()> {
        let cluster = self.cluster(at)?;
        let labels = cluster.scope(at).label_query(None);
        delete_everything(cluster, &labels).await
    }

    async fn logs(
        &self,
        at: &Placement,
        service: &str,
        revision: Option<&str>,
        tail: usize,
        follow: bool,
    ) -> Result<BoxStream<'static, Result<String>>> {
        let cluster = self.cluster(at)?;
        let pods = cluster.pods(at, service, revision).await?;
        let api: Api<Pod> = cluster.api().await?;
        let many = pods.len() > 1;
        let mut streams = Vec::new();
        for pod in pods {
            let name = pod.name_any();
            let prefix = if many {
                format!("[{name}] ")
            } else {
                String::new()
            };
            let params = LogParams {
                tail_lines: Some(tail as i64),
                follow,
                ..Default::default()
            };
            if follow {
                let reader = cluster
                    .call(
                        &format!("follow the log of pod {name}"),
                        api.log_stream(&name, &params),
                    )
                    .await?;
                let target = cluster.name().clone();
                let lines = reader
                    .lines()
                    .map(move |line| {
                        line.map(|line| format!("{prefix}{line}"))
                            .map_err(|e| Error::target(&target, format!("log of {name}: {e}")))
                    })
                    .boxed();
                streams.push(lines);
            } else {
                let text = cluster
                    .call(
                        &format!("read the log of pod {name}"),
                        api.logs(&name, &params),
                    )
                    .await?;
                let lines: Vec<Result<String>> = text
                    .lines()
                    .map(|line| Ok(format!("{prefix}{line}")))
                    .collect();
                streams.push(futures::stream::iter(lines).boxed());
            }
        }
        Ok(futures::stream::select_all(streams).boxed())
    }

    async fn expect_probe(
        &self,
        at: &Placement,
        service: &str,
        path: &str,
        nonce: &str,
    ) -> Result<()> {
        self.cluster(at)?;
        if let Ok(mut probes) = self.probes.lock() {
            probes.insert(
                nonce.to_string(),
                (service.to_string(), path.to_string(), Instant::now()),
            );
        }
        Ok(())
    }

    /// A push shows in the subscriber's access log: a `"POST PATH HTTP/1.1" STATUS` line (the
    /// Common Log Format that HTTP servers write) since the probe went out.
    async fn probe_answer(&self, at: &Placement, nonce: &str) -> Result<Option<u16>> {
        let Some((service, path, since)) = self
            .probes
            .lock()
            .ok()
            .and_then(|probes| probes.get(nonce).cloned())
        else {
            return Ok(None);
        };
        let cluster = self.cluster(at)?;
        let api: Api<Pod> = cluster.api().await?;
        let needle = format!("\"POST {path} HTTP/");
        for pod in cluster.pods(at, &service, None).await? {
            let params = LogParams {
                since_seconds: Some(since.elapsed().as_secs() as i64 + 1),
                ..Default::default()
            };
            let log = cluster
                .call(
                    &format!("read the log of pod {}", pod.name_any()),
                    api.logs(&pod.name_any(), &params),
                )
                .await?;
            let status = log.lines().find_map(|line| {
                let rest = &line[line.find(&needle)? + needle.len()..];
                rest.split_once('"')?
                    .1
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
            if status.is_some() {
                return Ok(status);
            }
        }
        Ok(None)
    }

    async fn request_from(&self, at: &Placement, service: &str, url: &str) -> Result<u16> {
        let _ = service;
        let cluster = self.cluster(at)?;
        let (name, namespace, path) = in_cluster(url, &cluster.namespace()).ok_or_else(|| {
            Error::Invalid(format!(
                "{url} is not an in-cluster URL (http://SERVICE.NAMESPACE.svc.cluster.local/...)"
            ))
        })?;
        // Through the API server's service proxy: what a pod of the cluster would reach.
        let proxy = format!(
            "/api/v1/namespaces/{namespace}/services/{name}:{}/proxy{path}",
            objects::SERVICE_PORT
        );
        let request = http::Request::get(proxy)
            .body(kube::client::Body::empty())
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let client = cluster.client().await?;
        let response = cluster
            .call(&format!("GET {url}"), client.send(request))
            .await?;
        Ok(response.status().as_u16())
    }
}

/// Where a bus outside the cluster pushes to `service`: its Gateway URL, which it can reach; an
/// in-cluster URL it cannot.
fn push_target(public: Option<String>, service: &str, region: &str) -> Result<String> {
    public.ok_or_else(|| {
        Error::Invalid(format!(
            "{service} takes pushes from Google's Pub/Sub, which cannot reach a URL inside the \
             cluster {region}: make {service} public (ingress other than `internal`) with a \
             `gateway` on the target, or give the target a `pubsub_endpoint` (an emulator in the \
             cluster)"
        ))
    })
}

/// Deletes every object of every kind Mahavishnu makes that carries `labels`.
async fn delete_everything(cluster: &Cluster, labels: &str) -> Result<()> {
    // HTTPRoutes go even when the target names no Gateway now (it may have named one before); a
    // cluster without the Gateway API has none to delete.
    let routes = cluster
        .delete_labelled::<HttpRoute>("HTTPRoutes", labels)
        .await;
    if cluster.gateway.is_some() {
        routes?;
    }
    cluster
        .delete_labelled::<HorizontalPodAutoscaler>("HorizontalPodAutoscalers", labels)
        .await?;
    cluster
        .delete_labelled::<Service>("Services", labels)
        .await?;
    cluster
        .delete_labelled::<Deployment>("Deployments", labels)
        .await?;
    cluster.delete_labelled::<Job>("Jobs", labels).await?;
    cluster
        .delete_labelled::<ConfigMap>("ConfigMaps", labels)
        .await?;
    cluster.delete_labelled::<Secret>("Secrets", labels).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bus_outside_the_cluster_pushes_through_the_gateway_or_is_refused() {
        assert_eq!(
            push_target(
                Some("https://worker-shop.apps.example.com".into()),
                "worker",
                "eu"
            )
            .unwrap(),
            "https://worker-shop.apps.example.com"
        );
        let refused = push_target(None, "worker", "eu").unwrap_err().to_string();
        assert!(
            refused.contains("cannot reach a URL inside the cluster eu"),
            "{refused}"
        );
        assert!(refused.contains("pubsub_endpoint"), "{refused}");
    }

    #[test]
    fn in_cluster_urls_name_their_service() {
        assert_eq!(
            in_cluster("http://api.shop.svc.cluster.local/healthz", "x"),
            Some(("api".into(), "shop".into(), "/healthz".into()))
        );
        assert_eq!(
            in_cluster("http://api:80", "shop"),
            Some(("api".into(), "shop".into(), "/".into()))
        );
        assert_eq!(in_cluster("https://example.com/x", "shop"), None);
        assert_eq!(in_cluster("http://a.b.c.d/x", "shop"), None);
    }
}
