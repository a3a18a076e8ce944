//! Symbolon: a mutual-TLS gateway and certificate authority in one binary.
//!
//! # Life of a connection
//! 1. [`proxy`] accepts a TCP connection (within [`listener`]'s caps) and reads the ClientHello.
//! 2. The SNI picks a [`snapshot::Domain`]: its server certificate, trust bundle and mTLS mode.
//! 3. [`tls::verify`] checks the client chain (require: fail the handshake; optional: go on).
//! 4. The chain is verified again for the connection (a cache of verified chains may save the
//!    work; nothing else decides), and [`identity`] turns the verified path into the verdict and
//!    identity headers, once.
//! 5. Per request, in named phases ([`proxy::http`]): one authority, which must belong to the
//!    connection's domain (else 421), the path normalized once ([`path::normalize`]), the
//!    [`routing`] table picks the route, [`authz`] decides, [`proxy::headers`] strips spoofed
//!    identity headers and sets ours, the request goes to the upstream, and an access-log line
//!    is written.
//! 6. An `https://` upstream is reached through [`upstream`]: one pool per TLS setting (trust,
//!    server name, client credential), built with the snapshot. [`sidecar`] listeners send a
//!    local app's plain HTTP the same way, with a credential the built-in [`ca`] rotates.
//!
//! # The rule that keeps it simple
//! The data plane reads only the current immutable [`snapshot::Snapshot`], through
//! [`shared::Shared`]. The control plane ([`control`]) owns the store, the CA and the
//! configuration; every change (admin API, reload, sidecar rotation, CA issuance) takes one path,
//! [`control::Change`]: validate, write the store, build a complete new snapshot, swap it in,
//! audit. A failed change changes nothing and says why.
//!
//! Dependencies point one way, down these layers (`docs/ARCHITECTURE.md`, checked by
//! `tests/it/architecture.rs`): foundation (`pki`, `duration`, `path`, `telemetry`) ← model
//! (`tls`, `config`, `authz`, `routing`, …) ← `snapshot` ← data plane (`shared`, `proxy`,
//! `sidecar`) ← control plane (`ca`, `store`, `control`) ← edges (`admin`, `gateway`, `cli`).
//! No data-plane module reaches the store.

pub mod admin;
pub mod authz;
pub mod ca;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod devinit;
pub mod duration;
pub mod expiry;
pub mod explain;
pub mod gateway;
pub mod identity;
pub mod listener;
pub mod path;
pub mod pki;
pub mod proxy;
pub mod revocation;
pub mod routing;
pub mod shared;
pub mod sidecar;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upstream;

/// Locks a mutex; a panic in another holder never makes the data unusable (the caches and
/// counters it guards stay consistent entry by entry).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
