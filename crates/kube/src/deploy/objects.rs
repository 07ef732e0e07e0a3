//! The Kubernetes objects of a deployment, built from the engine's model: per revision a ConfigMap of
//! its environment, a Secret of the values only this machine can resolve, a Deployment (or a Job), a
//! Service and, when it scales, a HorizontalPodAutoscaler; per service a stable Service and, on a
//! Gateway, an HTTPRoute. Pure functions: what `apply` writes is what `plan -o yaml` prints.

use std::collections::BTreeMap;

use gateway_api::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeaders, HttpRouteRulesMatchesPath,
    HttpRouteRulesMatchesPathType, HttpRouteSpec,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource,
    HTTPGetAction, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret,
    SecretKeySelector, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mahavishnu_core::deploy::{Ingress, Placement, RevisionSpec, SecretRef, ServiceKind};
use mahavishnu_core::{Error, Result};

use crate::manifest::{MANAGED_BY, SPEC_ANNOTATION};

/// The sandcastle an object belongs to.
pub const SANDCASTLE: &str = "mahavishnu.dev/sandcastle";
/// The service an object belongs to.
pub const SERVICE: &str = "mahavishnu.dev/service";
/// The revision an object belongs to (absent on a service's own objects).
pub const REVISION: &str = "mahavishnu.dev/revision";
/// The first 16 hex digits of the revision's spec hash.
pub const SPEC_HASH: &str = "mahavishnu.dev/spec-hash";
/// The standard name label.
pub const NAME: &str = "app.kubernetes.io/name";
/// A worker revision's share of the release (workers have no Service to route with).
pub const WEIGHT: &str = "mahavishnu.dev/weight";
/// The header that reaches a tagged revision through the Gateway.
pub const TAG_HEADER: &str = "x-mahavishnu-tag";
/// The port every revision listens on (`$PORT`).
pub const CONTAINER_PORT: i32 = 8080;
/// The port Services expose.
pub const SERVICE_PORT: i32 = 80;

/// What the objects are made with: where they go and how public services are reached.
#[derive(Clone, Debug)]
pub struct Scope {
    /// The placement.
    pub at: Placement,
    /// The namespace everything goes to.
    pub namespace: String,
    /// The Gateway public services attach to, as `(namespace, name)`, and their host name there.
    pub gateway: Option<(String, String)>,
}

impl Scope {
    /// The labels every object of `service` carries.
    pub fn labels(&self, service: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.to_string(), "mahavishnu".to_string()),
            (NAME.to_string(), service.to_string()),
            (SANDCASTLE.to_string(), self.at.sandcastle.clone()),
            (SERVICE.to_string(), service.to_string()),
        ])
    }

    /// The labels of a revision's objects, and of its pods.
    pub fn revision_labels(&self, revision: &str, spec: &RevisionSpec) -> BTreeMap<String, String> {
        let mut labels = self.labels(&spec.service);
        labels.insert(REVISION.to_string(), revision.to_string());
        labels.insert(SPEC_HASH.to_string(), spec.hash()[..16].to_string());
        labels
    }

    /// What selects a revision's pods.
    pub fn selector(&self, service: &str, revision: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (SANDCASTLE.to_string(), self.at.sandcastle.clone()),
            (SERVICE.to_string(), service.to_string()),
            (REVISION.to_string(), revision.to_string()),
        ])
    }

    /// The label selector of everything of this sandcastle (and of `service`, when given).
    pub fn label_query(&self, service: Option<&str>) -> String {
        let mut query = format!(
            "{MANAGED_BY}=mahavishnu,{SANDCASTLE}={}",
            self.at.sandcastle
        );
        if let Some(service) = service {
            query.push_str(&format!(",{SERVICE}={service}"));
        }
        query
    }

    fn meta(&self, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        }
    }

    /// The in-cluster URL of `service`.
    pub fn url(&self, service: &str) -> String {
        format!("http://{service}.{}.svc.cluster.local", self.namespace)
    }
}

/// The ConfigMap of a revision's plain environment (wiring included).
pub fn config_map(scope: &Scope, revision: &str, spec: &RevisionSpec) -> ConfigMap {
    ConfigMap {
        metadata: scope.meta(
            &config_map_name(revision),
            scope.revision_labels(revision, spec),
        ),
        data: Some(spec.env.clone()),
        ..Default::default()
    }
}

/// The name of a revision's ConfigMap.
pub fn config_map_name(revision: &str) -> String {
    format!("{revision}-env")
}

/// The name of the Secret holding a revision's values resolved on this machine (`env:`, `file:`).
pub fn secret_name(revision: &str) -> String {
    format!("{revision}-secrets")
}

/// The Secret of the values that only this machine can resolve; `None` when there are none.
pub fn secret(
    scope: &Scope,
    revision: &str,
    spec: &RevisionSpec,
    values: &BTreeMap<String, String>,
) -> Option<Secret> {
    let data: BTreeMap<String, ByteString> = spec
        .secrets
        .iter()
        .filter(|(_, reference)| is_local(reference))
        .filter_map(|(name, _)| {
            values
                .get(name)
                .map(|value| (name.clone(), ByteString(value.clone().into_bytes())))
        })
        .collect();
    (!data.is_empty()).then(|| Secret {
        metadata: scope.meta(
            &secret_name(revision),
            scope.revision_labels(revision, spec),
        ),
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    })
}

/// Whether a reference is resolved on this machine and handed over in a Secret of the revision.
fn is_local(reference: &SecretRef) -> bool {
    matches!(reference, SecretRef::Env(_) | SecretRef::File(_))
}

/// Why Kubernetes cannot run `spec`, if it cannot.
pub fn cannot_run(spec: &RevisionSpec) -> Option<String> {
    if spec.kind == ServiceKind::External {
        return None;
    }
    if spec.image.is_none() {
        return Some("Kubernetes runs containers: give the service an `image`".into());
    }
    spec.secrets
        .values()
        .find(|reference| matches!(reference, SecretRef::SecretManager { .. }))
        .map(|reference| {
            format!(
                "{reference} cannot be read on Kubernetes; use k8s:secret/NAME#KEY (a Secret in the \
                 namespace), or env:/file: (read here, handed over in a Secret of the revision)"
            )
        })
}

/// The container of a revision.
pub fn container(revision: &str, spec: &RevisionSpec) -> Result<Container> {
    if let Some(why) = cannot_run(spec) {
        return Err(Error::Invalid(format!("services.{}: {why}", spec.service)));
    }
    let mut env = Vec::new();
    if spec.listens {
        env.push(EnvVar {
            name: "PORT".into(),
            value: Some(CONTAINER_PORT.to_string()),
            ..Default::default()
        });
    }
    for (name, reference) in &spec.secrets {
        let (secret, key) = match reference {
            SecretRef::KubernetesSecret { name, key } => (name.clone(), key.clone()),
            _ => (secret_name(revision), name.clone()),
        };
        env.push(EnvVar {
            name: name.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret,
                    key,
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let quantities: BTreeMap<String, Quantity> = [
        ("cpu", spec.resources.cpu.as_ref()),
        ("memory", spec.resources.memory.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| (name.to_string(), Quantity(value.clone()))))
    .collect();
    let mut container = Container {
        name: spec.service.clone(),
        image: spec.image.clone(),
        env: (!env.is_empty()).then_some(env),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map_name(revision),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        resources: (!quantities.is_empty()).then(|| ResourceRequirements {
            requests: Some(quantities.clone()),
            limits: Some(quantities),
            ..Default::default()
        }),
        ..Default::default()
    };
    if spec.listens {
        container.ports = Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: CONTAINER_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]);
        if let Some(health) = &spec.health {
            let period = health.interval.as_secs().clamp(1, 300) as i32;
            let probe = |failures: i32| Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(health.path.clone()),
                    port: IntOrString::String("http".into()),
                    ..Default::default()
                }),
                period_seconds: Some(period),
                failure_threshold: Some(failures),
                ..Default::default()
            };
            // Startup has the whole deadline; liveness then restarts a copy that stops answering,
            // and readiness takes it out of its Services while it does not answer.
            let startup = (health.deadline.as_secs() as i32 / period).max(1);
            container.startup_probe = Some(probe(startup));
            container.liveness_probe = Some(probe(3));
            container.readiness_probe = Some(probe(1));
        }
    }
    Ok(container)
}

fn pod_spec(revision: &str, spec: &RevisionSpec, restart: &str) -> Result<PodSpec> {
    Ok(PodSpec {
        containers: vec![container(revision, spec)?],
        restart_policy: Some(restart.into()),
        service_account_name: spec.service_account.clone(),
        ..Default::default()
    })
}

fn annotations(revision: &str, spec: &RevisionSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            SPEC_ANNOTATION.to_string(),
            serde_json::to_string(spec).unwrap_or_default(),
        ),
        ("mahavishnu.dev/revision".to_string(), revision.to_string()),
    ])
}

/// Whether a revision scales on its own (an HPA owns its replicas).
pub fn autoscales(spec: &RevisionSpec) -> bool {
    spec.scale.max.is_some_and(|max| max > spec.scale.min)
}

/// The Deployment of an `http` or `worker` revision. Its replicas are left to the HPA when there is
/// one, so that server-side apply leaves them alone.
pub fn deployment(scope: &Scope, revision: &str, spec: &RevisionSpec) -> Result<Deployment> {
    let labels = scope.revision_labels(revision, spec);
    let mut metadata = scope.meta(revision, labels.clone());
    metadata.annotations = Some(annotations(revision, spec));
    let deadline = spec
        .health
        .as_ref()
        .map_or(600, |health| health.deadline.as_secs().max(1) as i32);
    Ok(Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: (!autoscales(spec)).then(|| spec.scale.min.max(1) as i32),
            selector: LabelSelector {
                match_labels: Some(scope.selector(&spec.service, revision)),
                ..Default::default()
            },
            progress_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod_spec(revision, spec, "Always")?),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The Job of a `job` revision: one pod, never retried, bounded by the service's timeout.
pub fn job(scope: &Scope, revision: &str, spec: &RevisionSpec) -> Result<Job> {
    let labels = scope.revision_labels(revision, spec);
    let mut metadata = scope.meta(revision, labels.clone());
    metadata.annotations = Some(annotations(revision, spec));
    Ok(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: spec.timeout.map(|timeout| timeout.as_secs().max(1) as i64),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod_spec(revision, spec, "Never")?),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The HPA of a revision that scales between `min` and `max` copies (on CPU).
pub fn autoscaler(
    scope: &Scope,
    revision: &str,
    spec: &RevisionSpec,
) -> Option<HorizontalPodAutoscaler> {
    autoscales(spec).then(|| HorizontalPodAutoscaler {
        metadata: scope.meta(revision, scope.revision_labels(revision, spec)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: revision.to_string(),
            },
            min_replicas: Some(spec.scale.min.max(1) as i32),
            max_replicas: spec.scale.max.unwrap_or(spec.scale.min).max(1) as i32,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(70),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn http_port() -> ServicePort {
    ServicePort {
        name: Some("http".into()),
        port: SERVICE_PORT,
        target_port: Some(IntOrString::String("http".into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// The Service of one revision: what HTTPRoutes and tags send to.
pub fn revision_service(scope: &Scope, revision: &str, spec: &RevisionSpec) -> Service {
    Service {
        metadata: scope.meta(revision, scope.revision_labels(revision, spec)),
        spec: Some(ServiceSpec {
            selector: Some(scope.selector(&spec.service, revision)),
            ports: Some(vec![http_port()]),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The stable Service of `service`, the URL its dependents call: it selects the revision that
/// serves (all of the traffic without a Gateway, the most of it with one).
pub fn stable_service(scope: &Scope, service: &str, serving: &str) -> Service {
    Service {
        metadata: scope.meta(service, scope.labels(service)),
        spec: Some(ServiceSpec {
            selector: Some(scope.selector(service, serving)),
            ports: Some(vec![http_port()]),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether `spec` is reached from outside the cluster (through the Gateway, when there is one);
/// `internal` means in-cluster only.
pub fn is_public(spec: &RevisionSpec) -> bool {
    spec.listens && spec.ingress != Ingress::Internal
}

/// The HTTPRoute of a public service on the Gateway: its tags first (each a header match that
/// reaches one revision), then every request split over the revisions by weight.
pub fn route(
    scope: &Scope,
    service: &str,
    host: Option<&str>,
    weights: &[(String, u8)],
    tags: &BTreeMap<String, String>,
) -> Option<HttpRoute> {
    let (namespace, gateway) = scope.gateway.clone()?;
    let backend = |revision: &str, weight: u8| HttpRouteRulesBackendRefs {
        name: revision.to_string(),
        port: Some(SERVICE_PORT),
        weight: Some(i32::from(weight)),
        ..Default::default()
    };
    let everything = HttpRouteRulesMatches {
        path: Some(HttpRouteRulesMatchesPath {
            r#type: Some(HttpRouteRulesMatchesPathType::PathPrefix),
            value: Some("/".into()),
        }),
        ..Default::default()
    };
    let mut rules: Vec<HttpRouteRules> = tags
        .iter()
        .map(|(tag, revision)| HttpRouteRules {
            name: Some(format!("tag-{tag}")),
            matches: Some(vec![HttpRouteRulesMatches {
                headers: Some(vec![HttpRouteRulesMatchesHeaders {
                    name: TAG_HEADER.into(),
                    value: tag.clone(),
                    ..Default::default()
                }]),
                ..everything.clone()
            }]),
            backend_refs: Some(vec![backend(revision, 1)]),
            ..Default::default()
        })
        .collect();
    rules.push(HttpRouteRules {
        name: Some("release".into()),
        matches: Some(vec![everything]),
        backend_refs: Some(
            weights
                .iter()
                .filter(|(_, weight)| *weight > 0)
                .map(|(revision, weight)| backend(revision, *weight))
                .collect(),
        ),
        ..Default::default()
    });
    Some(HttpRoute {
        metadata: scope.meta(service, scope.labels(service)),
        spec: HttpRouteSpec {
            hostnames: host.map(|host| vec![host.to_string()]),
            parent_refs: Some(vec![HttpRouteParentRefs {
                name: gateway,
                namespace: (namespace != scope.namespace).then_some(namespace),
                ..Default::default()
            }]),
            rules: Some(rules),
        },
        status: None,
    })
}

/// The weights and tags an HTTPRoute holds, as percentages (Gateway weights are proportional).
pub fn route_release(route: &HttpRoute) -> (Vec<(String, u8)>, BTreeMap<String, String>) {
    let mut weights = Vec::new();
    let mut tags = BTreeMap::new();
    for rule in route.spec.rules.iter().flatten() {
        let backends = rule.backend_refs.clone().unwrap_or_default();
        let tag = rule
            .matches
            .iter()
            .flatten()
            .flat_map(|m| m.headers.iter().flatten())
            .find(|header| header.name.eq_ignore_ascii_case(TAG_HEADER));
        if let Some(header) = tag {
            if let Some(backend) = backends.first() {
                tags.insert(header.value.clone(), backend.name.clone());
            }
            continue;
        }
        let total: i64 = backends
            .iter()
            .map(|b| i64::from(b.weight.unwrap_or(1).max(0)))
            .sum();
        if total == 0 || !weights.is_empty() {
            continue;
        }
        weights = percentages(
            backends
                .iter()
                .map(|b| {
                    (
                        b.name.clone(),
                        i64::from(b.weight.unwrap_or(1).max(0)) * 100,
                    )
                })
                .collect(),
            total,
        );
    }
    (weights, tags)
}

/// Proportional shares as percentages that add up to 100 (largest remainders get the rest).
fn percentages(scaled: Vec<(String, i64)>, total: i64) -> Vec<(String, u8)> {
    let mut shares: Vec<(String, i64, i64)> = scaled
        .into_iter()
        .map(|(name, value)| (name, value / total, value % total))
        .collect();
    let given: i64 = shares.iter().map(|(_, share, _)| share).sum();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(shares[i].2));
    for &i in order.iter().take((100 - given).max(0) as usize) {
        shares[i].1 += 1;
    }
    shares
        .into_iter()
        .filter(|(_, share, _)| *share > 0)
        .map(|(name, share, _)| (name, share as u8))
        .collect()
}

/// Every object as JSON, the way `plan -o yaml` prints them.
pub fn as_json<T: serde::Serialize>(object: &T) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mahavishnu_core::deploy::{HealthSpec, ResourcesSpec, ScaleSpec};
    use std::time::Duration;

    fn scope(gateway: bool) -> Scope {
        Scope {
            at: Placement {
                sandcastle: "shop".into(),
                region: "prod-eu".into(),
            },
            namespace: "shop".into(),
            gateway: gateway.then(|| ("infra".into(), "public".into())),
        }
    }

    fn spec() -> RevisionSpec {
        RevisionSpec {
            service: "web".into(),
            kind: ServiceKind::Http,
            run: None,
            image: Some("example.test/web:1".into()),
            dir: "/".into(),
            env: BTreeMap::from([("GREETING".into(), "hello".into())]),
            secrets: BTreeMap::from([
                (
                    "DB_PASSWORD".into(),
                    SecretRef::KubernetesSecret {
                        name: "db".into(),
                        key: "password".into(),
                    },
                ),
                ("SESSION_KEY".into(), SecretRef::Env("SHOP_KEY".into())),
            ]),
            health: Some(HealthSpec {
                path: "/healthz".into(),
                deadline: Duration::from_secs(30),
                interval: Duration::from_secs(2),
            }),
            scale: ScaleSpec {
                min: 2,
                max: Some(5),
                concurrency: None,
            },
            resources: ResourcesSpec {
                cpu: Some("500m".into()),
                memory: Some("256Mi".into()),
            },
            ingress: Ingress::All,
            timeout: None,
            listens: true,
            service_account: None,
            invoker: None,
        }
    }

    #[test]
    fn a_revision_is_a_deployment_with_its_env_probes_and_resources_and_no_secret_values() {
        let spec = spec();
        let deployment = as_json(&deployment(&scope(false), "web-1a2b3c4d", &spec).unwrap());
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(container["image"], "example.test/web:1");
        assert_eq!(
            container["envFrom"][0]["configMapRef"]["name"],
            "web-1a2b3c4d-env"
        );
        let env = container["env"].to_string();
        assert!(env.contains(r#""key":"password","name":"db""#), "{env}");
        assert!(env.contains(r#""key":"SESSION_KEY","name":"web-1a2b3c4d-secrets""#));
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["startupProbe"]["failureThreshold"], 15);
        assert_eq!(container["resources"]["limits"]["cpu"], "500m");
        // An HPA owns the replicas: the Deployment leaves them out.
        assert!(deployment["spec"].get("replicas").is_none());
        let labels = &deployment["metadata"]["labels"];
        assert_eq!(labels[MANAGED_BY], "mahavishnu");
        assert_eq!(labels[NAME], "web");
        assert_eq!(labels[SANDCASTLE], "shop");
        assert_eq!(labels[SPEC_HASH].as_str().unwrap().len(), 16);
        let hpa = as_json(&autoscaler(&scope(false), "web-1a2b3c4d", &spec).unwrap());
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 5);
        let values = BTreeMap::from([("SESSION_KEY".to_string(), "s3cret".to_string())]);
        let secret = as_json(&secret(&scope(false), "web-1a2b3c4d", &spec, &values).unwrap());
        assert_eq!(secret["data"]["SESSION_KEY"], "czNjcmV0");
        assert!(secret["data"].get("DB_PASSWORD").is_none());
    }

    #[test]
    fn a_route_splits_by_weight_and_reads_back_as_percentages() {
        let weights = vec![("web-a".to_string(), 90), ("web-b".to_string(), 10)];
        let tags = BTreeMap::from([("preview".to_string(), "web-b".to_string())]);
        let route = route(
            &scope(true),
            "web",
            Some("web-shop.example.com"),
            &weights,
            &tags,
        )
        .unwrap();
        let json = as_json(&route);
        assert_eq!(json["spec"]["parentRefs"][0]["namespace"], "infra");
        assert_eq!(
            json["spec"]["rules"][0]["matches"][0]["headers"][0]["value"],
            "preview"
        );
        assert_eq!(json["spec"]["rules"][1]["backendRefs"][1]["weight"], 10);
        assert_eq!(route_release(&route), (weights, tags));
        assert!(super::route(&scope(false), "web", None, &[], &BTreeMap::new()).is_none());
        // Someone else's proportional weights read as shares of 100.
        let shares = percentages(vec![("a".into(), 100), ("b".into(), 200)], 3);
        assert_eq!(shares, vec![("a".to_string(), 33), ("b".to_string(), 67)]);
    }

    #[test]
    fn what_kubernetes_cannot_run_is_named() {
        let mut spec = spec();
        spec.image = None;
        assert!(cannot_run(&spec).unwrap().contains("`image`"));
        let mut spec = super::tests::spec();
        spec.secrets.insert(
            "X".into(),
            SecretRef::SecretManager {
                name: "x".into(),
                version: "latest".into(),
            },
        );
        assert!(cannot_run(&spec).unwrap().contains("k8s:secret/NAME#KEY"));
        assert!(container("web-1", &spec).is_err());
    }
}
