//! Mahavishnu's Cloud Run platform.
//!
//! [`CloudRunPlatform`] implements the core [`Platform`](mahavishnu_core::deploy::Platform) with the
//! official Google Cloud clients: services, worker pools and jobs of the Cloud Run Admin API v2,
//! Secret Manager (references checked, never read), Cloud Logging and Resource Manager (the
//! project's number, which names every service's URL). [`CloudRunSettings`] says which project and
//! how it is reached. [`FrontDoor`] is the global external Application Load Balancer of a
//! multi-region sandcastle; [`Monitoring`] makes uptime checks and reads revisions' request counts.

#![warn(missing_docs)]

mod calls;
mod convert;
mod front_door;
mod monitoring;
mod names;
mod platform;
mod settings;
mod target;

pub use front_door::{FrontDoor, FrontDoorState};
pub use monitoring::{Monitoring, UptimeCheck};
pub use platform::CloudRunPlatform;
pub use settings::{CloudRunSettings, DEFAULT_REGION, RUN_APP_URLS};
pub use target::CloudRunTarget;
