//! The local deploy platform, the embedded default: one supervisor process per sandcastle and region runs
//! each revision's processes, restarts them with backoff, checks their health with real requests, keeps
//! their logs, and serves each http service through a real HTTP router that splits traffic by weight.

pub mod metrics;
pub mod router;
