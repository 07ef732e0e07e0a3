//! The event bus deployments use for topics: the Pub/Sub emulator, found or started on demand (or the
//! one `PUBSUB_EMULATOR_HOST` names), one per state directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use mahavishnu_core::Result;
use mahavishnu_core::deploy::EventBus;
use mahavishnu_deploy::BusProvider;
use mahavishnu_deploy::wanted::LOCAL_PROJECT;
use mahavishnu_pubsub::{Emulator, PubSubBus, emulator_client_env};

/// The bus provider for a state directory.
pub fn provider(state_dir: &Path) -> Arc<dyn BusProvider> {
    Arc::new(EmulatorBus {
        dir: state_dir.join("pubsub"),
        placements: state_dir.join("deploy"),
    })
}

struct EmulatorBus {
    dir: PathBuf,
    /// Where the local platform keeps each sandcastle's regions: the emulator serves them all.
    placements: PathBuf,
}

#[async_trait]
impl BusProvider for EmulatorBus {
    fn unavailable(&self) -> Option<String> {
        Emulator::locate().err()
    }

    fn running_env(&self) -> Option<BTreeMap<String, String>> {
        Emulator::running(&self.dir)
            .map(|running| emulator_client_env(&running.host, LOCAL_PROJECT))
    }

    fn release_if_unused(&self) {
        let in_use = std::fs::read_dir(&self.placements)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false);
        if !in_use {
            // The emulator this state directory started (never one PUBSUB_EMULATOR_HOST names).
            let _ = Emulator::stop(&self.dir);
        }
    }

    async fn connect(&self) -> Result<Arc<dyn EventBus>> {
        let running = Emulator::ensure(&self.dir).await?;
        let bus = PubSubBus::connect(&running.endpoint, LOCAL_PROJECT).await?;
        Ok(Arc::new(bus))
    }
}

/// Pub/Sub in a project, or the emulator a target names: the bus of the platforms whose settings
/// come from named targets (Cloud Run, Kubernetes).
pub struct ProjectBus {
    /// The project topics live in.
    pub project: String,
    /// The emulator's endpoint (`http://HOST:PORT`), when topics live there.
    pub emulator: Option<String>,
    /// Why there is no bus, when there is none: what to set, and where.
    pub missing: Option<String>,
}

#[async_trait]
impl BusProvider for ProjectBus {
    fn unavailable(&self) -> Option<String> {
        self.missing.clone()
    }

    fn running_env(&self) -> Option<BTreeMap<String, String>> {
        if self.missing.is_some() {
            return None;
        }
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
        if let Some(missing) = &self.missing {
            return Err(mahavishnu_core::Error::Invalid(missing.clone()));
        }
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
