//! What the `[admin]` section configures: the admin listener's TLS (its certificate and the
//! admin CA) and the bearer tokens. Rebuilt in full by every reload.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;

use super::GatewayError;
use crate::config::AdminConfig;

/// What the `[admin]` section configures and a reload replaces: the listener's TLS (its
/// certificate and the admin CA) and the bearer tokens. Built in full before it replaces the
/// old one, so a broken admin file fails the reload and changes nothing.
pub struct AdminAccess {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) tokens: Vec<Token>,
    /// The admin CA's certificates, to find the issuer of an admin certificate (revocation).
    pub(crate) cas: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Their keys: an admin certificate whose CA is no longer among them is refused, on
    /// connections made before the change too.
    pub(crate) ca_keys: Vec<String>,
    listen: SocketAddr,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl AdminAccess {
    pub fn build(config: &AdminConfig) -> Result<Self, GatewayError> {
        let (tls, cas) = tls_config(config)?;
        let mut tokens: Vec<Token> = Vec::new();
        for t in &config.tokens {
            let digest = decode_hex(&t.sha256).ok_or_else(|| {
                GatewayError::Admin(format!(
                    "token '{}': sha256 must be 64 hex characters (the SHA-256 of the token). Fix: create one with `symbolon admin-token {}`",
                    t.name, t.name
                ))
            })?;
            let admin = match t.scope.as_str() {
                "admin" => true,
                "self-service" => false,
                other => {
                    return Err(GatewayError::Admin(format!(
                        "token '{}': scope '{other}' must be admin or self-service",
                        t.name
                    )));
                }
            };
            if tokens.iter().any(|k| k.name == t.name) {
                return Err(GatewayError::Admin(format!(
                    "two tokens are named '{}'. Fix: give each token its own name (it is the actor in the audit log)",
                    t.name
                )));
            }
            if !(1..=100_000).contains(&t.max_identities) {
                return Err(GatewayError::Admin(format!(
                    "token '{}': max_identities {} is out of range; it must be between 1 and 100000",
                    t.name, t.max_identities
                )));
            }
            tokens.push(Token {
                name: t.name.clone(),
                sha256: digest,
                admin,
                max_identities: t.max_identities,
            });
        }
        let ca_keys = cas
            .iter()
            .filter_map(|c| crate::tls::verify::spki_key(c))
            .collect();
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            tokens,
            ca_keys,
            cas,
            listen: config.listen,
        })
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
}

/// An admin API bearer token (its SHA-256) and what it may do.
pub(crate) struct Token {
    pub(crate) name: String,
    pub(crate) sha256: Vec<u8>,
    /// `admin` scope; otherwise self-service only.
    pub(crate) admin: bool,
    pub(crate) max_identities: usize,
}

type AdminTls = (
    Arc<ServerConfig>,
    Vec<rustls::pki_types::CertificateDer<'static>>,
);

fn tls_config(config: &AdminConfig) -> Result<AdminTls, GatewayError> {
    let admin_err = |e: &dyn std::fmt::Display| GatewayError::Admin(e.to_string());
    let chain = crate::pki::load_certs(&config.cert).map_err(|e| admin_err(&e))?;
    let key = crate::pki::load_key(&config.key).map_err(|e| admin_err(&e))?;
    crate::pki::certified_key(chain.clone(), key.clone_key(), &config.cert, &config.key)
        .map_err(|e| admin_err(&e))?;
    let bundle = crate::pki::load_trust_bundle(&config.client_ca).map_err(|e| admin_err(&e))?;
    crate::pki::refuse_expired(&bundle, rustls::pki_types::UnixTime::now())
        .map_err(|e| admin_err(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in &bundle.certs {
        roots.add(c.clone()).map_err(|e| admin_err(&e))?;
    }
    let provider = crate::tls::server::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| admin_err(&e))?;
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| admin_err(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| admin_err(&e))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(tls), bundle.certs))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
