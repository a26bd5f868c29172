//! button-sidecar's core: mParticle batches in, Button API requests out. Pure: no I/O, no clock
//! (the caller passes the receive time), no Python unless the `python` feature builds the bindings.
//! The extension also carries delivery's HTTP client (`transport`), which the mapping never uses.

pub mod config;
pub mod currency;
pub mod email;
pub mod encode;
pub mod errors;
pub mod ids;
pub mod input;
pub mod json;
pub mod model;
pub mod money;
pub mod proto;
pub mod time;
pub mod transform;

#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
mod transport;

pub use config::TransformConfig;
pub use email::hash_email;
pub use money::to_minor_units;
pub use transform::{transform_json, transform_value};
