//! The deployment engine, beside the orchestrator: loads nothing itself (the manifest comes checked from
//! core), observes every region, plans as a pure function, applies in waves with a journal and a lock
//! per placement, releases by rollout steps behind health and error-rate gates, rolls back, verifies.

mod engine;
pub mod plan;
pub mod store;
pub mod wanted;

pub use engine::{
    ApplyOptions, ApplyReport, BusProvider, Check, Deployments, Engine, PlatformProvider,
    ProgressFn, RegionStatus, Selection, ServiceOutcome, StatusReport, TagChange, TrafficChange,
    TrafficReport, VerifyReport, describe_change, describe_health, placement, split,
};
pub use plan::{Action, Change, Plan};
pub use store::{MIGRATIONS, ReleaseRecord};
