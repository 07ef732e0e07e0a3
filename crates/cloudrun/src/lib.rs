//! Mahavishnu's Cloud Run platform.
//!
//! [`CloudRunPlatform`] implements the core [`Platform`](mahavishnu_core::deploy::Platform) with the
//! official Google Cloud clients: services, worker pools and jobs of the Cloud Run Admin API v2,
//! Secret Manager (references checked, never read), Cloud Logging and Resource Manager (the
//! project's number, which names every service's URL). [`CloudRunSettings`] says which project and
//! how it is reached.

#![warn(missing_docs)]

mod convert;
mod names;
mod platform;
mod settings;
mod target;

pub use platform::CloudRunPlatform;
pub use settings::{CloudRunSettings, DEFAULT_REGION, RUN_APP_URLS};
pub use target::CloudRunTarget;
