//! The immutable view the data plane reads: domains (server certificate, trust, mode) and routes.
//!
//! A `Snapshot` is plain data: the control plane builds it in one go
//! ([`crate::control::build_snapshot`]), every file read and checked first, and publishes only
//! a complete, valid one. A failed build changes nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::{SidecarConfig, Timeouts};
use crate::pki::PkiError;
use crate::routing::{RouteError, RouteTable};
use crate::tls::verify::{ClientVerifier, Mode};
use crate::upstream::TlsUpstream;

/// Why a configuration could not become a snapshot. Nothing is applied when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("domain '{domain}': {source}")]
    Pki {
        domain: String,
        #[source]
        source: PkiError,
    },
    #[error(
        "domain '{domain}': mtls = \"{mode}\" needs a trust_bundle. Fix: set trust_bundle to a PEM file of the CA certificates that issue your clients' certificates, or set mtls = \"off\""
    )]
    MissingBundle { domain: String, mode: Mode },
    #[error("domain '{domain}': max_chain_depth must be at least 1")]
    BadDepth { domain: String },
    #[error("{0}")]
    Keys(String),
    #[error("a domain needs at least one name in `names`")]
    NoNames,
    #[error(
        "the name '{name}' belongs to two domains. Fix: list each host name under one domain only"
    )]
    DuplicateName { name: String },
    #[error("default_domain '{name}' is not the name of any domain")]
    UnknownDefault { name: String },
    #[error("route '{route}' names a credential that does not exist")]
    UnknownCredential { route: String },
    #[error("{owner}: {detail}")]
    UpstreamTls { owner: String, detail: String },
    #[error("domain '{domain}': cannot build the TLS configuration: {source}")]
    Tls {
        domain: String,
        #[source]
        source: rustls::Error,
    },
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("authorization: {0}")]
    Authz(String),
}

/// One TLS domain as the data plane uses it.
#[derive(Debug)]
pub struct Domain {
    /// The first configured name: used in logs and to tie requests to their connection.
    pub name: String,
    pub names: Vec<String>,
    pub mode: Mode,
    pub tls: Arc<ServerConfig>,
    pub verifier: Arc<ClientVerifier>,
    pub trust_bundle: Option<PathBuf>,
    /// How to name the trust bundle to an operator: `'partners'` or a file path.
    pub bundle_label: Option<String>,
}

/// Everything the data plane needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub domains: Vec<Arc<Domain>>,
    /// Host names (and `*.` wildcards) to their domain.
    pub names: Names,
    /// The domain of clients without SNI.
    pub default: Option<usize>,
    pub routes: RouteTable,
    pub access_log: bool,
    pub timeouts: Timeouts,
    pub authz: Arc<crate::authz::AuthzSnapshot>,
    pub revocations: Arc<crate::revocation::Revocations>,
    /// A digest of the revocation list: session tickets are accepted only in the epoch they
    /// were issued in (see [`crate::tls::server::Ticketer`]).
    pub trust_epoch: u64,
    /// Every configured certificate and its expiry (domains, bundles, credentials).
    pub known_certs: Vec<crate::expiry::KnownCert>,
    /// Expiry warning thresholds, in seconds.
    pub expiry_warnings: Vec<i64>,
    /// Sidecar (egress) listeners by name, from the config file and the store.
    pub sidecars: HashMap<String, Arc<Sidecar>>,
}

impl Snapshot {
    /// The domain for a lower-case host name, if one is configured for it.
    pub fn domain_for_host(&self, host: &str) -> Option<&Arc<Domain>> {
        self.names.find(host).and_then(|i| self.domains.get(i))
    }

    /// The domain a handshake uses: by SNI, else the default domain (none if no domain exists).
    pub fn domain_for_sni(&self, sni: Option<&str>) -> Option<&Arc<Domain>> {
        sni.and_then(|s| self.domain_for_host(s))
            .or_else(|| self.default_domain())
    }

    /// The default domain (for clients without SNI).
    pub fn default_domain(&self) -> Option<&Arc<Domain>> {
        self.default.and_then(|i| self.domains.get(i))
    }

    /// A snapshot with nothing in it (before the first configuration is applied).
    pub fn empty(timeouts: Timeouts) -> Self {
        Self {
            domains: Vec::new(),
            names: Names::default(),
            default: None,
            routes: RouteTable::default(),
            access_log: false,
            timeouts,
            authz: Arc::default(),
            revocations: Arc::default(),
            trust_epoch: 0,
            known_certs: Vec::new(),
            expiry_warnings: Vec::new(),
            sidecars: HashMap::new(),
        }
    }
}

/// Host names and `*.` wildcards, each to the index of its domain.
#[derive(Debug, Default)]
pub struct Names {
    exact: HashMap<String, usize>,
    wildcards: HashMap<String, usize>,
}

impl Names {
    /// Adds a lower-case name (or `*.suffix`); a name already taken is refused.
    pub fn add(&mut self, name: &str, index: usize) -> Result<(), SnapshotError> {
        let (map, key) = match name.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcards, suffix.to_string()),
            None => (&mut self.exact, name.to_string()),
        };
        if map.insert(key, index).is_some() {
            return Err(SnapshotError::DuplicateName { name: name.into() });
        }
        Ok(())
    }

    /// The domain of an exact name.
    pub fn exact(&self, name: &str) -> Option<usize> {
        self.exact.get(name).copied()
    }

    /// The domain of a host: its exact name, else a wildcard of its parent.
    fn find(&self, host: &str) -> Option<usize> {
        if let Some(i) = self.exact.get(host) {
            return Some(*i);
        }
        let (_, parent) = host.split_once('.')?;
        self.wildcards.get(parent).copied()
    }
}

/// One sidecar as the data plane uses it.
#[derive(Debug)]
pub struct Sidecar {
    pub config: SidecarConfig,
    /// `config` (the config file) or `api` (the store).
    pub source: &'static str,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    pub base_path: String,
    pub tls: Option<Arc<TlsUpstream>>,
    /// For an issued credential: when it is rotated.
    pub rotation: Option<Rotation>,
}

/// The state of a sidecar's issued credential.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Rotation {
    /// Name of the credential in the store (`sidecar-NAME`).
    pub credential: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    pub not_after: String,
    /// Two thirds into the certificate's lifetime.
    pub rotate_at: String,
    #[serde(skip)]
    pub rotate_at_unix: i64,
}
