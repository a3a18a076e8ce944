pub mod client;
pub mod harness;
pub mod pki;
pub mod upstream;

pub use client::{ClientSpec, Conn, get};
pub use harness::{ADMIN_TOKEN, Harness, route_all};
pub use pki::{Eku, LeafSpec, TestCa};
pub use upstream::{TlsUpstream, Upstream};
