//! Mahavishnu's event bus on Pub/Sub.
//!
//! [`PubSubBus`] implements the core [`EventBus`](mahavishnu_core::deploy::events::EventBus) with the
//! official Google Cloud client; [`Emulator`] finds the local Pub/Sub emulator, or starts one on demand
//! that outlives the caller so that every deploy of a machine shares it.

#![warn(missing_docs)]

mod bus;
mod emulator;

pub use bus::{PubSubBus, emulator_client_env};
pub use emulator::{Emulator, EmulatorSource, RunningEmulator};
