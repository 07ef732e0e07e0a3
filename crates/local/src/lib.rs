//! The local deploy platform, the embedded default: one supervisor process per sandcastle and region runs
//! each revision's processes, restarts them with backoff, checks their health with real requests, keeps
//! their logs, and serves each http service through a real HTTP router that splits traffic by weight.

mod copies;
mod http;
pub mod metrics;
mod metrics_http;
mod platform;
pub mod protocol;
pub mod router;
pub mod supervisor;

pub use platform::LocalPlatform;
