//! The Cloud Run platform, made for each manifest from its `[platforms.cloudrun]` and the user's
//! `cloudrun` targets, with its bus: Pub/Sub in the project (or the emulator a target names).

use std::sync::Arc;

use mahavishnu_cloudrun::{CloudRunPlatform, CloudRunSettings};
use mahavishnu_core::config::TargetsConfig;
use mahavishnu_core::deploy::{Manifest, Platform, PlatformKind};
use mahavishnu_core::{Result, TargetKind};
use mahavishnu_deploy::{BusProvider, PlatformProvider};

use crate::bus::ProjectBus;

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
            missing: None,
        });
        Ok((Arc::new(CloudRunPlatform::new(settings)), bus))
    }
}
