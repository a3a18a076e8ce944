//! The immutable view the data plane reads: domains (server certificate, trust, mode) and routes.
//!
//! A `Snapshot` is built from a [`Config`] in one go: every file is read and checked first, and
//! only a complete, valid snapshot is ever published. A failed build changes nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::UnixTime;
use rustls::server::ProducesTickets;

use crate::config::{Config, Timeouts};
use crate::pki::{self, PkiError};
use crate::routing::{Route, RouteError, RouteTable};
use crate::tls::server::server_config;
use crate::tls::verify::{ClientVerifier, Mode};

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
    #[error("a domain needs at least one name in `names`")]
    NoNames,
    #[error(
        "the name '{name}' belongs to two domains. Fix: list each host name under one domain only"
    )]
    DuplicateName { name: String },
    #[error("default_domain '{name}' is not the name of any domain")]
    UnknownDefault { name: String },
    #[error(
        "no domain is configured. Fix: add a [[domains]] section with names, cert, key and trust_bundle"
    )]
    NoDomains,
    #[error("domain '{domain}': cannot build the TLS configuration: {source}")]
    Tls {
        domain: String,
        #[source]
        source: rustls::Error,
    },
    #[error(transparent)]
    Route(#[from] RouteError),
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
}

/// Everything the data plane needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub domains: Vec<Arc<Domain>>,
    by_name: HashMap<String, usize>,
    wildcards: HashMap<String, usize>,
    default: usize,
    pub routes: RouteTable,
    pub access_log: bool,
    pub timeouts: Timeouts,
}

impl Snapshot {
    /// Loads every file the config names, validates everything, and builds the snapshot.
    pub fn build(
        config: &Config,
        ticketer: Arc<dyn ProducesTickets>,
    ) -> Result<Self, SnapshotError> {
        if config.domains.is_empty() {
            return Err(SnapshotError::NoDomains);
        }
        let now = UnixTime::now();
        let mut domains = Vec::new();
        let mut by_name = HashMap::new();
        let mut wildcards = HashMap::new();
        for dc in &config.domains {
            let Some(first) = dc.names.first() else {
                return Err(SnapshotError::NoNames);
            };
            let name = first.to_ascii_lowercase();
            let pki_err = |source| SnapshotError::Pki {
                domain: name.clone(),
                source,
            };
            let chain = pki::load_certs(&dc.cert).map_err(pki_err)?;
            let key = pki::load_key(&dc.key).map_err(pki_err)?;
            pki::certified_key(chain.clone(), key.clone_key(), &dc.cert, &dc.key)
                .map_err(pki_err)?;
            let bundle = match &dc.trust_bundle {
                Some(path) => Some(pki::load_trust_bundle(path, now).map_err(pki_err)?),
                None if dc.mtls != Mode::Off => {
                    return Err(SnapshotError::MissingBundle {
                        domain: name,
                        mode: dc.mtls,
                    });
                }
                None => None,
            };
            if dc.max_chain_depth == 0 {
                return Err(SnapshotError::BadDepth { domain: name });
            }
            let verifier = Arc::new(ClientVerifier::new(
                dc.mtls,
                bundle.as_ref(),
                dc.max_chain_depth,
            ));
            let tls = server_config(
                chain,
                key,
                verifier.clone(),
                ticketer.clone(),
                config.tls13_session_tickets,
            )
            .map_err(|source| SnapshotError::Tls {
                domain: name.clone(),
                source,
            })?;
            let index = domains.len();
            let names: Vec<String> = dc.names.iter().map(|n| n.to_ascii_lowercase()).collect();
            for n in &names {
                let (map, key) = match n.strip_prefix("*.") {
                    Some(suffix) => (&mut wildcards, suffix.to_string()),
                    None => (&mut by_name, n.clone()),
                };
                if map.insert(key, index).is_some() {
                    return Err(SnapshotError::DuplicateName { name: n.clone() });
                }
            }
            domains.push(Arc::new(Domain {
                name,
                names,
                mode: dc.mtls,
                tls,
                verifier,
                trust_bundle: dc.trust_bundle.clone(),
            }));
        }
        let default = match &config.default_domain {
            Some(d) => *by_name
                .get(&d.to_ascii_lowercase())
                .ok_or_else(|| SnapshotError::UnknownDefault { name: d.clone() })?,
            None => 0,
        };
        let routes = config
            .routes
            .iter()
            .map(Route::from_config)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            domains,
            by_name,
            wildcards,
            default,
            routes: RouteTable::new(routes)?,
            access_log: config.access_log,
            timeouts: config.timeouts.clone(),
        })
    }

    /// The domain for a lower-case host name, if one is configured for it.
    pub fn domain_for_host(&self, host: &str) -> Option<&Arc<Domain>> {
        if let Some(i) = self.by_name.get(host) {
            return self.domains.get(*i);
        }
        let (_, parent) = host.split_once('.')?;
        self.wildcards
            .get(parent)
            .and_then(|i| self.domains.get(*i))
    }

    /// The domain a handshake uses: by SNI, else the default domain.
    pub fn domain_for_sni(&self, sni: Option<&str>) -> &Arc<Domain> {
        sni.and_then(|s| self.domain_for_host(s))
            .unwrap_or(&self.domains[self.default])
    }

    /// The default domain's name (for clients without SNI).
    pub fn default_domain(&self) -> &Arc<Domain> {
        &self.domains[self.default]
    }
}
