//! Mahavishnu's core: the model every layer shares, the `Target` trait, errors, configuration and the
//! state store. Nothing in here knows about a face (CLI, MCP, HTTP) or a concrete target.

pub mod config;
pub mod deploy;
pub mod diff;
pub mod digest;
pub mod error;
pub mod keys;
pub mod model;
pub mod naming;
pub mod notices;
pub mod paths;
pub mod process;
pub mod shell;
pub mod status;
pub mod store;
pub mod target;

pub use error::{Error, Result};
pub use model::*;
pub use target::Target;
