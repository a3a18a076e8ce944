//! Builds one domain's rustls `ServerConfig`: its certificate chain, its verifier, TLS 1.2 and
//! 1.3, ALPN `h2` and `http/1.1`, and a ticketer shared across reloads.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ProducesTickets;

use super::verify::ClientVerifier;

/// The one crypto provider Symbolon uses: aws-lc-rs, with AES-128-GCM/SHA-256 preferred.
///
/// Symbolon chooses the cipher suite (like Go's crypto/tls and Caddy) instead of following the
/// client's order: SHA-256 runs on the CPU's SHA extensions while SHA-384 does not, so
/// AES-256-GCM/SHA-384 made the key schedule and transcript hashing a tenth of a full mTLS
/// handshake on the benchmark machine. All TLS 1.3 and ECDHE TLS 1.2 AEAD suites stay enabled.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // Stable sort: SHA-256 suites first, the library's order otherwise kept.
    provider.cipher_suites.sort_by_key(|s| {
        use rustls::CipherSuite as C;
        !matches!(
            s.suite(),
            C::TLS13_AES_128_GCM_SHA256
                | C::TLS13_CHACHA20_POLY1305_SHA256
                | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    });
    Arc::new(provider)
}

/// The stateless session-ticket producer, created once per process so that sessions survive
/// reloads (the client chain is re-checked on every resumption, see `ClientVerifier::verdict`).
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
}

/// Builds a server config. The chain and key were checked to match by `pki::certified_key`.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<ClientVerifier>,
    ticketer: Arc<dyn ProducesTickets>,
    tls13_tickets: usize,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = ticketer;
    config.ignore_client_order = true;
    config.send_tls13_tickets = tls13_tickets;
    Ok(Arc::new(config))
}
