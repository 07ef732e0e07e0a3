//! The Cloud Run platform, made for each manifest from its `[platforms.cloudrun]` and the user's
//! `cloudrun` targets, with its bus: Pub/Sub in the project (or the emulator a target names).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use mahavishnu_cloudrun::{CloudRunPlatform, CloudRunSettings};
use mahavishnu_core::config::TargetsConfig;
use mahavishnu_core::deploy::{EventBus, Manifest, Platform, PlatformKind};
use mahavishnu_core::{Result, TargetKind};
use mahavishnu_deploy::{BusProvider, PlatformProvider};
use mahavishnu_pubsub::{PubSubBus, emulator_client_env};

/// Makes the Cloud Run platform for a manifest.
pub struct CloudRunProvider {
    targets: TargetsConfig,
}

impl CloudRunProvider {
    /// A provider that finds named targets in `targets`.
    pub fn new(targets: TargetsConfig) -> Self {
        CloudRunProvider { targets }
    }

    /// The settings a manifest's `[platforms.cloudrun]` comes to.
    pub fn settings(&self, manifest: &Manifest) -> Result<CloudRunSettings> {
        let mut settings =
            CloudRunSettings::resolve(manifest.platforms.get(&PlatformKind::Cloudrun), |name| {
                self.targets
                    .get(name)
                    .map(|(kind, config)| (kind == TargetKind::Cloudrun, config.clone()))
            })?;
        if let Some(door) = &manifest.front_door {
            settings.front_door_service = Some(door.service.clone());
            settings.front_door_domain = door.domain.clone();
        }
        Ok(settings)
    }
}

impl PlatformProvider for CloudRunProvider {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Cloudrun
    }

    fn open(&self, manifest: &Manifest) -> Result<(Arc<dyn Platform>, Arc<dyn BusProvider>)> {
        let settings = self.settings(manifest)?;
        let bus = Arc::new(ProjectBus {
            project: settings.project.clone(),
            emulator: settings.pubsub_endpoint.clone(),
        });
        Ok((Arc::new(CloudRunPlatform::new(settings)), bus))
    }
}

/// Pub/Sub in the project, or the emulator the target names.
struct ProjectBus {
    project: String,
    emulator: Option<String>,
}

#[async_trait]
impl BusProvider for ProjectBus {
    fn unavailable(&self) -> Option<String> {
        None
    }

    fn running_env(&self) -> Option<BTreeMap<String, String>> {
        Some(match &self.emulator {
            Some(endpoint) => {
                let host = endpoint
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string();
                emulator_client_env(&host, &self.project)
            }
            None => BTreeMap::new(),
        })
    }

    async fn connect(&self) -> Result<Arc<dyn EventBus>> {
        let bus = match &self.emulator {
            Some(endpoint) => PubSubBus::connect(endpoint, &self.project).await?,
            None => PubSubBus::connect_google(&self.project).await?,
        };
        Ok(Arc::new(bus))
    }

    fn project(&self) -> String {
        self.project.clone()
    }
}
