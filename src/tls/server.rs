//! Builds one domain's rustls `ServerConfig`: its certificate chain, its verifier, TLS 1.2 and
//! 1.3, ALPN `h2` and `http/1.1`, and a ticketer shared across reloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
/// reloads (the client chain is verified again after every resumption, see
/// `ClientVerifier::verdict`).
///
/// Tickets carry the revocation epoch they were issued in. A revocation starts a new epoch, and
/// a ticket from an older one is not accepted: the client falls back to a full handshake, where
/// a revoked certificate gets the `certificate_revoked` alert instead of a resumed session that
/// is closed without a reason.
#[derive(Debug)]
pub struct Ticketer {
    inner: Arc<dyn ProducesTickets>,
    epoch: AtomicU64,
}

impl Ticketer {
    pub fn new() -> Result<Arc<Self>, rustls::Error> {
        Ok(Arc::new(Self {
            inner: rustls::crypto::aws_lc_rs::Ticketer::new()?,
            epoch: AtomicU64::new(0),
        }))
    }

    /// Starts accepting only tickets issued in `epoch` (a digest of the revocation list).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut out = self.epoch.load(Ordering::Acquire).to_be_bytes().to_vec();
        out.extend(self.inner.encrypt(plain)?);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let (epoch, rest) = cipher.split_at_checked(8)?;
        if epoch != self.epoch.load(Ordering::Acquire).to_be_bytes() {
            return None;
        }
        self.inner.decrypt(rest)
    }
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
