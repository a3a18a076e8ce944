//! TLS: the per-domain rustls server configuration and client-certificate verification.
//! All rustls configuration lives here, so a rustls upgrade touches one module.

pub mod server;
pub mod verdict;
pub mod verify;

pub use verify::{FailReason, Mode, Verdict};
