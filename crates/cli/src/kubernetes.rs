//! The Kubernetes platform, made for each manifest from its `[platforms.kubernetes]` and the user's
//! kubernetes targets (each region is one), with its bus: Pub/Sub in the targets' project, or the
//! emulator they name.

use std::sync::Arc;

use mahavishnu_core::config::TargetsConfig;
use mahavishnu_core::deploy::{Manifest, Platform, PlatformKind};
use mahavishnu_core::{Error, Result, TargetKind};
use mahavishnu_deploy::wanted::LOCAL_PROJECT;
use mahavishnu_deploy::{BusProvider, PlatformProvider};
use mahavishnu_kube::{ClusterSettings, KubernetesPlatform};

use crate::bus::ProjectBus;

/// The keys `[platforms.kubernetes]` reads.
const KEYS: &[&str] = &["regions", "namespace"];

/// Makes the Kubernetes platform for a manifest.
pub struct KubernetesProvider {
    targets: TargetsConfig,
}

impl KubernetesProvider {
    /// A provider that finds named targets in `targets`.
    pub fn new(targets: TargetsConfig) -> Self {
        KubernetesProvider { targets }
    }

    /// Each region's cluster, from the manifest (already narrowed to this platform).
    pub fn clusters(&self, manifest: &Manifest) -> Result<Vec<ClusterSettings>> {
        let table = manifest.platforms.get(&PlatformKind::Kubernetes);
        if let Some(key) = table
            .into_iter()
            .flat_map(|table| table.keys())
            .find(|key| !KEYS.contains(&key.as_str()))
        {
            return Err(Error::Invalid(format!(
                "platforms.kubernetes.{key}: not a setting of the kubernetes platform; it reads {}. \
                 Clusters, credentials and Gateways are set on kubernetes targets in your config",
                KEYS.join(", ")
            )));
        }
        let namespace = match table.and_then(|table| table.get("namespace")) {
            None => None,
            Some(toml::Value::String(namespace)) if is_dns_label(namespace) => {
                Some(namespace.clone())
            }
            Some(other) => {
                return Err(Error::Invalid(format!(
                    "platforms.kubernetes.namespace: {other} is not a namespace name (lower-case \
                     letters, digits and `-`, at most 63)"
                )));
            }
        };
        manifest
            .sandcastle
            .regions
            .iter()
            .map(|region| match self.targets.get(region) {
                Some((TargetKind::Kubernetes, config)) => Ok(ClusterSettings {
                    region: region.clone(),
                    config: config.kubernetes(),
                    namespace: namespace.clone(),
                }),
                None if region == "kubernetes" => Ok(ClusterSettings {
                    region: region.clone(),
                    config: Default::default(),
                    namespace: namespace.clone(),
                }),
                _ => Err(Error::Invalid(format!(
                    "region `{region}` is not a kubernetes target: on Kubernetes each region is a \
                     target of your config ([targets.{region}] kind = \"kubernetes\"); list them in \
                     [platforms.kubernetes] regions"
                ))),
            })
            .collect()
    }
}

fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

impl PlatformProvider for KubernetesProvider {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Kubernetes
    }

    fn open(&self, manifest: &Manifest) -> Result<(Arc<dyn Platform>, Arc<dyn BusProvider>)> {
        let clusters = self.clusters(manifest)?;
        // The bus is the first region's that names one: topics are per region, the bus is one.
        let configs: Vec<_> = clusters.iter().map(|c| &c.config).collect();
        let emulator = configs.iter().find_map(|c| c.pubsub_endpoint.clone());
        let project = configs.iter().find_map(|c| c.project.clone());
        let first = clusters
            .first()
            .map(|c| c.region.clone())
            .unwrap_or_default();
        let bus = Arc::new(ProjectBus {
            project: project.clone().unwrap_or_else(|| LOCAL_PROJECT.to_string()),
            missing: (project.is_none() && emulator.is_none()).then(|| {
                format!(
                    "topics on Kubernetes need Pub/Sub that the cluster reaches: set `project` \
                     (Google Pub/Sub) or `pubsub_endpoint` (a Pub/Sub emulator, http://HOST:PORT) \
                     in [targets.{first}]"
                )
            }),
            emulator,
        });
        // Google's Pub/Sub pushes from outside the clusters; an emulator there pushes from inside.
        let outside = bus.missing.is_none() && bus.emulator.is_none();
        let platform = KubernetesPlatform::new(clusters)?.with_outside_bus(outside);
        Ok((Arc::new(platform), bus))
    }
}
