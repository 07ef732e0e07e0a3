//! The wanted state: what each service's revision is in a region, once its wiring (the URLs of what it
//! needs, its topics, the bus) is filled in. Secret references stay references here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mahavishnu_core::deploy::{
    Manifest, PlatformKind, RevisionSpec, SecretRef, ServiceKind, ServiceSpec, TopicRef,
    topic_variable, url_variable,
};
use mahavishnu_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The project topics live in on the Pub/Sub emulator.
pub const LOCAL_PROJECT: &str = "mahavishnu-local";

/// A service as the manifest wants it in one region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WantedService {
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: ServiceKind,
    /// Its revision, `None` for an external.
    pub spec: Option<RevisionSpec>,
    /// Inputs not known yet, each as `VARIABLE: why` (the URL of a service not deployed yet).
    pub pending: Vec<String>,
    /// Why the platform cannot run it, when it cannot.
    pub blocked: Option<String>,
}

impl WantedService {
    /// The revision's name, once every input is known.
    pub fn revision(&self) -> Option<String> {
        match (&self.spec, self.pending.is_empty()) {
            (Some(spec), true) => Some(spec.revision_name()),
            _ => None,
        }
    }
}

/// What a region's services are wired with.
#[derive(Clone, Debug, Default)]
pub struct Wiring {
    /// The stable URL of each service that has one, as seen from this region.
    pub urls: BTreeMap<String, String>,
    /// The environment every service that publishes or subscribes gets to reach the bus.
    pub bus_env: BTreeMap<String, String>,
    /// The project topics live in.
    pub topic_project: String,
}

/// The topic `topic` of `sandcastle` in `region`, in `project`.
pub fn topic_ref(project: &str, sandcastle: &str, region: &str, topic: &str) -> TopicRef {
    TopicRef {
        project: project.to_string(),
        id: format!("{sandcastle}.{region}.{topic}"),
    }
}

/// Builds the wanted revision of `name` in `region`.
pub fn wanted_service(
    manifest: &Manifest,
    platform: PlatformKind,
    region: &str,
    name: &str,
    wiring: &Wiring,
) -> WantedService {
    let service = &manifest.services[name];
    if service.kind == ServiceKind::External {
        return WantedService {
            name: name.to_string(),
            kind: service.kind,
            spec: None,
            pending: Vec::new(),
            blocked: None,
        };
    }
    let mut env = service.env.clone();
    let mut secrets = service.secrets.clone();
    let mut pending = Vec::new();
    for need in &service.needs {
        let Some(needed) = manifest.services.get(need) else {
            continue;
        };
        let variable = url_variable(need);
        match needed.kind {
            ServiceKind::Job => {}
            ServiceKind::External => {
                let url = needed
                    .url
                    .as_ref()
                    .and_then(|url| url.for_platform(platform));
                match url.map(|url| (url, url.parse::<SecretRef>())) {
                    Some((_, Ok(secret))) => {
                        secrets.insert(variable, secret);
                    }
                    Some((url, Err(_))) => {
                        env.insert(variable, url.to_string());
                    }
                    None => pending.push(format!(
                        "{variable}: the external `{need}` gives no url for the {} platform",
                        platform.as_str()
                    )),
                }
            }
            _ => match wiring.urls.get(need) {
                Some(url) => {
                    env.insert(variable, url.clone());
                }
                None => pending.push(format!("{variable}: known once `{need}` is deployed")),
            },
        }
    }
    for topic in &service.publishes {
        env.insert(
            topic_variable(topic),
            topic_ref(
                &wiring.topic_project,
                &manifest.sandcastle.name,
                region,
                topic,
            )
            .path(),
        );
    }
    if !service.publishes.is_empty() || !service.subscribes.is_empty() {
        env.extend(wiring.bus_env.clone());
    }
    env.insert(
        "MAHAVISHNU_SANDCASTLE".into(),
        manifest.sandcastle.name.clone(),
    );
    env.insert("MAHAVISHNU_REGION".into(), region.to_string());
    let dir = match &service.dir {
        Some(dir) => manifest.dir().join(dir),
        None => manifest.dir(),
    };
    let listens = service.kind == ServiceKind::Http || !service.subscribes.is_empty();
    // A container platform runs the image: the command and the directory of this machine are not
    // part of what it runs, and must not make the same revision differ from one machine to the next.
    let local = platform == PlatformKind::Local;
    let spec = RevisionSpec {
        service: name.to_string(),
        kind: service.kind,
        run: service.run.clone().filter(|_| local),
        image: service.image.clone(),
        dir: if local { dir } else { PathBuf::new() },
        env,
        secrets,
        health: if listens {
            service.health.clone()
        } else {
            None
        },
        scale: service.scale.clone(),
        resources: service.resources.clone(),
        ingress: service.ingress,
        timeout: service.timeout,
        listens,
        service_account: service.service_account.clone().filter(|_| !local),
        invoker: (!local && listens).then_some(service.invoker),
    };
    WantedService {
        name: name.to_string(),
        kind: service.kind,
        spec: Some(spec),
        pending,
        blocked: None,
    }
}

/// How long the engine waits for a revision of `service` to become ready.
pub fn ready_deadline(service: &ServiceSpec) -> std::time::Duration {
    match service.kind {
        ServiceKind::Job => service
            .timeout
            .unwrap_or(std::time::Duration::from_secs(600)),
        _ => service.health.clone().unwrap_or_default().deadline,
    }
}

/// Reads the values of a revision's secret references, for its process environment only.
pub fn resolve_secrets(
    spec: &RevisionSpec,
    manifest_dir: &Path,
    platform: PlatformKind,
) -> Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::new();
    for (variable, reference) in &spec.secrets {
        let key = format!("services.{}.secrets.{variable}", spec.service);
        let value = match reference {
            SecretRef::Env(name) => std::env::var(name).map_err(|_| {
                Error::Invalid(format!(
                    "{key}: {reference} is not set in this environment; export {name} before \
                     `deploy apply` (its value is handed to the service and never stored)"
                ))
            })?,
            SecretRef::File(path) => {
                let path = manifest_dir.join(path);
                std::fs::read_to_string(&path)
                    .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| {
                        Error::Invalid(format!(
                            "{key}: cannot read {reference} ({}): {e}",
                            path.display()
                        ))
                    })?
            }
            // Resolved where the service runs (Secret Manager on Cloud Run), never read here.
            other if other.platform() == Some(platform) => continue,
            other => {
                return Err(Error::Invalid(format!(
                    "{key}: {other} is resolved by the {} platform, not the {} one; use env:NAME \
                     or file:PATH for {}",
                    other.platform().map_or("other", |kind| kind.as_str()),
                    platform.as_str(),
                    platform.as_str()
                )));
            }
        };
        values.insert(variable.clone(), value);
    }
    Ok(values)
}

/// Checks without reading them that a revision's secret references can be resolved here: the
/// variable is set, the file exists. Returns what is missing.
pub fn missing_secrets(
    spec: &RevisionSpec,
    manifest_dir: &Path,
    platform: PlatformKind,
) -> Vec<String> {
    spec.secrets
        .iter()
        .filter_map(|(variable, reference)| {
            let missing = match reference {
                SecretRef::Env(name) => std::env::var_os(name).is_none(),
                SecretRef::File(path) => !manifest_dir.join(path).is_file(),
                other => other.platform() != Some(platform),
            };
            missing.then(|| format!("{variable}: {reference} cannot be resolved here"))
        })
        .collect()
}
