//! One integration test binary: every test starts the real gateway on 127.0.0.1:0 and talks to
//! it over real sockets with real TLS clients (rustls here; curl and openssl in `interop`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod admin_input;
mod architecture;
mod authz;
mod badinput;
mod binary;
mod ca;
mod expiry;
mod explain;
mod integrity;
mod interop;
mod issuance;
mod lifetime;
mod limbo;
mod mtls;
mod proxy;
mod reload;
mod revocation;
mod sidecar;
mod support;
mod upstream_tls;
