//! The deployment model shared by the engine and every platform: the manifest (`mahavishnu.deploy.toml`),
//! the `Platform` trait (where services run) and the `EventBus` trait (where topics live). See DEPLOY.md.

pub mod events;
pub mod manifest;
pub mod platform;

pub use events::{EventBus, PushSubscription, TopicRef};
pub use manifest::*;
pub use platform::*;
