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

use crate::config::{Config, RouteConfig, Timeouts, UpstreamTls};
use crate::pki::{self, PkiError};
use crate::routing::{Route, RouteError, RouteTable};
use crate::store::{DomainRow, StoreState};
use crate::tls::server::server_config;
use crate::tls::verify::{ClientVerifier, Mode};
use crate::upstream::{Pools, Roots, TlsSpec, TlsUpstream};

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
    #[error("domain '{domain}': mtls must be require, optional or off, not '{value}'")]
    BadMode { domain: String, value: String },
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

/// A route without a host answers on every domain, `optional` and `off` ones included: say so
/// when such a route has no authorization of its own (`auth = none`).
fn warn_open_routes(routes: &[Route], domains: &[Arc<Domain>]) {
    let open: Vec<&str> = domains
        .iter()
        .filter(|d| d.mode != Mode::Require)
        .map(|d| d.name.as_str())
        .collect();
    if open.is_empty() {
        return;
    }
    for r in routes.iter().filter(|r| r.host.is_none()) {
        let no_auth = r
            .authz
            .as_ref()
            .is_none_or(|a| matches!(a.auth, crate::authz::AuthMode::None));
        if no_auth {
            tracing::warn!(route = %r.name, domains = %open.join(", "),
                "route has no host and no authorization (auth = none): it is reachable from these domains, whose mTLS mode is optional or off, by clients without a verified certificate. Fix: give the route a host, or authz with auth other than none");
        }
    }
}

/// A digest of the revocation list (every row's id): it changes with every revocation.
fn revocation_epoch(rows: &[crate::store::RevocationRow]) -> u64 {
    let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for id in ids {
        ctx.update(id.as_bytes());
        ctx.update(b"\n");
    }
    let digest = ctx.finish();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// Everything the data plane needs, immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub domains: Vec<Arc<Domain>>,
    by_name: HashMap<String, usize>,
    wildcards: HashMap<String, usize>,
    default: Option<usize>,
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
    pub sidecars: HashMap<String, Arc<crate::sidecar::Sidecar>>,
}

/// One domain to build, from the config file or from the store.
struct DomainInput {
    name: String,
    names: Vec<String>,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    bundle: Option<pki::TrustBundle>,
    mode: Mode,
    max_depth: usize,
    trust_bundle: Option<PathBuf>,
    bundle_label: Option<String>,
    crls: Vec<webpki::CertRevocationList<'static>>,
    crl_enforce_expiry: bool,
}

impl Snapshot {
    /// Loads every file the config names, adds what the store holds, validates everything, and
    /// builds the snapshot.
    pub fn build(
        config: &Config,
        store: &StoreState,
        ticketer: Arc<dyn ProducesTickets>,
        pools: &Pools,
    ) -> Result<Self, SnapshotError> {
        let now = UnixTime::now();
        let mut inputs = Vec::new();
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
                Some(path) => {
                    let b = pki::load_trust_bundle(path).map_err(pki_err)?;
                    pki::warn_expired(&b, &path.display().to_string(), now);
                    Some(b)
                }
                None => None,
            };
            let crl_enforce_expiry = match dc.crl_expired.as_str() {
                "reject" => true,
                "warn" => false,
                other => {
                    return Err(SnapshotError::Authz(format!(
                        "domain '{name}': crl_expired must be reject or warn, not '{other}'"
                    )));
                }
            };
            let mut crls = Vec::new();
            for entry in &dc.crls {
                let url = crate::config::is_url(entry).then(|| entry.display().to_string());
                let path = match &url {
                    Some(u) => crate::config::crl_cache_path(config, u),
                    None => entry.clone(),
                };
                let path = &path;
                let cas = bundle.as_ref().map_or(&[][..], |b| &b.certs[..]);
                let (crl, next_update) = pki::load_crl(path, cas).map_err(|e| match (&url, e) {
                    (Some(u), PkiError::Read { .. }) => SnapshotError::Pki {
                        domain: name.clone(),
                        source: PkiError::BadCrl {
                            path: u.into(),
                            detail: "it has not been fetched yet".into(),
                        },
                    },
                    (_, e) => pki_err(e),
                })?;
                let expired = next_update.is_some_and(|t| t <= now.as_secs() as i64);
                metrics::gauge!("symbolon_crl_expired", "domain" => name.clone(), "crl" => path.display().to_string())
                    .set(if expired { 1.0 } else { 0.0 });
                if expired {
                    let at = next_update.map(pki::rfc3339).unwrap_or_default();
                    if crl_enforce_expiry {
                        tracing::error!(domain = %name, crl = %path.display(), next_update = %at, "CRL is past its nextUpdate: clients of its CA are refused until it is replaced (crl_expired = \"reject\")");
                    } else {
                        tracing::warn!(domain = %name, crl = %path.display(), next_update = %at, "CRL is past its nextUpdate; still in use because crl_expired = \"warn\"");
                    }
                }
                crls.push(crl);
            }
            inputs.push(DomainInput {
                names: dc.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                name,
                chain,
                key,
                bundle,
                mode: dc.mtls,
                max_depth: dc.max_chain_depth,
                trust_bundle: dc.trust_bundle.clone(),
                bundle_label: dc.trust_bundle.as_ref().map(|p| p.display().to_string()),
                crls,
                crl_enforce_expiry,
            });
        }
        for d in &store.domains {
            inputs.push(domain_from_store(d, store, config, now)?);
        }
        let revocations = Arc::new(crate::revocation::Revocations::from_rows(
            &store.revocations,
        ));
        let mut known_certs = Vec::new();
        for input in &inputs {
            for der in &input.chain {
                if let Ok(info) = pki::CertInfo::parse(der) {
                    known_certs.push(crate::expiry::KnownCert::new("domain", &input.name, &info));
                }
            }
            if let Some(b) = &input.bundle {
                let label = input.bundle_label.clone().unwrap_or_default();
                for info in &b.infos {
                    known_certs.push(crate::expiry::KnownCert::new(
                        "bundle",
                        label.trim_matches('\''),
                        info,
                    ));
                }
            }
        }
        for c in &store.credentials {
            if let Some(info) = pki::leaf_info(&c.cert_pem) {
                known_certs.push(crate::expiry::KnownCert::new("credential", &c.name, &info));
            }
        }
        let expiry_warnings = config
            .expiry_warnings
            .iter()
            .map(|t| {
                crate::config::parse_duration(t)
                    .map(|d| d.as_secs() as i64)
                    .map_err(|e| SnapshotError::Authz(format!("expiry_warnings: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut domains = Vec::new();
        let mut by_name = HashMap::new();
        let mut wildcards = HashMap::new();
        for input in inputs {
            let name = input.name.clone();
            if input.bundle.is_none() && input.mode != Mode::Off {
                return Err(SnapshotError::MissingBundle {
                    domain: name,
                    mode: input.mode,
                });
            }
            if input.max_depth == 0 {
                return Err(SnapshotError::BadDepth { domain: name });
            }
            let verifier = Arc::new(
                ClientVerifier::with_revocations(
                    input.mode,
                    input.bundle.as_ref(),
                    input.max_depth,
                    revocations.clone(),
                )
                .with_crls(input.crls, input.crl_enforce_expiry),
            );
            let tls = server_config(
                input.chain,
                input.key,
                verifier.clone(),
                ticketer.clone(),
                config.tls13_session_tickets,
            )
            .map_err(|source| SnapshotError::Tls {
                domain: name.clone(),
                source,
            })?;
            let index = domains.len();
            for n in &input.names {
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
                names: input.names,
                mode: input.mode,
                tls,
                verifier,
                trust_bundle: input.trust_bundle,
                bundle_label: input.bundle_label,
            }));
        }
        let default = match &config.default_domain {
            Some(d) => Some(
                *by_name
                    .get(&d.to_ascii_lowercase())
                    .ok_or_else(|| SnapshotError::UnknownDefault { name: d.clone() })?,
            ),
            None if domains.is_empty() => None,
            None => Some(0),
        };
        let mut routes = Vec::new();
        for rc in &config.routes {
            let mut route = Route::from_config(rc)?;
            let owner = format!("route '{}'", route.name);
            route.tls = upstream_tls(
                &owner,
                &route.upstream,
                rc.upstream_tls.as_ref(),
                None,
                store,
                pools,
            )?;
            routes.push(route);
        }
        for r in &store.routes {
            let credential = match &r.credential_id {
                Some(cid) => Some(store.credentials.iter().find(|c| &c.id == cid).ok_or_else(
                    || SnapshotError::UnknownCredential {
                        route: r.name.clone(),
                    },
                )?),
                None => None,
            };
            let tls_settings: Option<UpstreamTls> =
                match &r.upstream_tls {
                    Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                        SnapshotError::UpstreamTls {
                            owner: format!("route '{}'", r.name),
                            detail: format!("stored upstream_tls is not valid: {e}"),
                        }
                    })?),
                    None => None,
                };
            let authz = match &r.authz {
                Some(json) => {
                    Some(
                        serde_json::from_str(json).map_err(|e| RouteError::BadAuthz {
                            route: r.name.clone(),
                            detail: format!("stored authz is not valid: {e}"),
                        })?,
                    )
                }
                None => None,
            };
            let mut route = Route::from_config(&RouteConfig {
                name: Some(r.name.clone()),
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                upstream: r.upstream.clone(),
                strip_prefix: r.strip_prefix,
                authz,
                upstream_tls: tls_settings.clone(),
            })?;
            let owner = format!("route '{}'", route.name);
            if credential.is_some() && !route.upstream.is_https() {
                return Err(RouteError::TlsWithoutHttps {
                    route: route.name,
                    upstream: r.upstream.clone(),
                }
                .into());
            }
            route.tls = upstream_tls(
                &owner,
                &route.upstream,
                tls_settings.as_ref(),
                credential,
                store,
                pools,
            )?;
            routes.push(route);
        }
        let sidecars = crate::sidecar::build_all(config, store, pools)?;
        for k in known_certs.iter_mut().filter(|k| k.kind == "credential") {
            k.auto_rotated = sidecars
                .values()
                .any(|s| s.rotation.as_ref().is_some_and(|r| r.credential == k.name));
        }
        // Credentials and upstream trust given as files (the store's are listed above).
        let specs = routes
            .iter()
            .filter_map(|r| r.tls.as_ref())
            .chain(sidecars.values().filter_map(|s| s.tls.as_ref()));
        for tls in specs {
            if let Some((name, ck)) = &tls.spec.credential
                && let Some(info) = ck
                    .end_entity_cert()
                    .ok()
                    .and_then(|d| pki::CertInfo::parse(d).ok())
                && !known_certs
                    .iter()
                    .any(|k| k.fingerprint_sha256 == info.fingerprint_sha256)
            {
                known_certs.push(crate::expiry::KnownCert::new("credential", name, &info));
            }
            if let Roots::Bundle { label, certs } = &tls.spec.roots {
                for info in certs.iter().filter_map(|d| pki::CertInfo::parse(d).ok()) {
                    if !known_certs
                        .iter()
                        .any(|k| k.fingerprint_sha256 == info.fingerprint_sha256)
                    {
                        known_certs.push(crate::expiry::KnownCert::new(
                            "bundle",
                            label.trim_matches('\''),
                            &info,
                        ));
                    }
                }
            }
        }
        warn_open_routes(&routes, &domains);
        Ok(Self {
            domains,
            by_name,
            wildcards,
            default,
            routes: RouteTable::new(routes)?,
            access_log: config.access_log,
            timeouts: config.timeouts.clone(),
            authz: Arc::new(authz_from_store(store)?),
            trust_epoch: revocation_epoch(&store.revocations),
            revocations,
            known_certs,
            expiry_warnings,
            sidecars,
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

    /// The domain a handshake uses: by SNI, else the default domain (none if no domain exists).
    pub fn domain_for_sni(&self, sni: Option<&str>) -> Option<&Arc<Domain>> {
        sni.and_then(|s| self.domain_for_host(s))
            .or_else(|| self.default_domain())
    }

    /// The default domain (for clients without SNI).
    pub fn default_domain(&self) -> Option<&Arc<Domain>> {
        self.default.and_then(|i| self.domains.get(i))
    }
}

/// A domain held in the store: its PEM texts are parsed here, its bundle looked up by id.
fn domain_from_store(
    d: &DomainRow,
    store: &StoreState,
    config: &Config,
    now: UnixTime,
) -> Result<DomainInput, SnapshotError> {
    let name = d.hostname.to_ascii_lowercase();
    let pki_err = |source| SnapshotError::Pki {
        domain: name.clone(),
        source,
    };
    let cert_origin = PathBuf::from(format!("the certificate of domain '{name}'"));
    let key_origin = PathBuf::from(format!("the key of domain '{name}'"));
    let chain = pki::parse_certs(d.cert_pem.as_bytes(), &cert_origin).map_err(pki_err)?;
    let key = pki::parse_key(d.key_pem.as_bytes(), &key_origin).map_err(pki_err)?;
    pki::certified_key(chain.clone(), key.clone_key(), &cert_origin, &key_origin)
        .map_err(pki_err)?;
    let bundle_row = d.bundle_id.as_deref().and_then(|id| store.bundle(id));
    let bundle = match bundle_row {
        Some(b) => Some(
            pki::trust_bundle_from_pem(b.pem.as_bytes(), &PathBuf::from(format!("'{}'", b.name)))
                .inspect(|tb| pki::warn_expired(tb, &b.name, now))
                .map_err(pki_err)?,
        ),
        None => None,
    };
    let mode = match (d.mtls.as_deref(), bundle_row) {
        (Some("require"), _) => Mode::Require,
        (Some("optional"), _) => Mode::Optional,
        (Some("off"), _) => Mode::Off,
        (Some(other), _) => {
            return Err(SnapshotError::BadMode {
                domain: name,
                value: other.to_string(),
            });
        }
        (None, Some(b)) if b.require => Mode::Require,
        (None, Some(_)) => Mode::Optional,
        (None, None) => Mode::Off,
    };
    // CRLs attached to the bundle: uploaded PEM, and URLs from the fetch cache.
    let mut crls = Vec::new();
    let mut crl_enforce_expiry = true;
    if let Some(spec) = bundle_row
        .and_then(|b| b.crls.as_deref())
        .and_then(|j| serde_json::from_str::<crate::store::BundleCrls>(j).ok())
    {
        crl_enforce_expiry = spec.expired.as_deref() != Some("warn");
        let origin = PathBuf::from(format!(
            "the CRLs of bundle '{}'",
            bundle_row.map(|b| b.name.as_str()).unwrap_or("")
        ));
        let mut loaded = Vec::new();
        let cas = bundle.as_ref().map_or(&[][..], |b| &b.certs[..]);
        if let Some(pem) = &spec.pem {
            loaded.extend(pki::crls_from_pem(pem, &origin, cas).map_err(pki_err)?);
        }
        for url in &spec.urls {
            let path = crate::config::crl_cache_path(config, url);
            loaded.push(pki::load_crl(&path, cas).map_err(|_| SnapshotError::Pki {
                domain: name.clone(),
                source: PkiError::BadCrl {
                    path: url.into(),
                    detail: "it has not been fetched yet".into(),
                },
            })?);
        }
        let now_secs = now.as_secs() as i64;
        for (crl, next_update) in loaded {
            if next_update.is_some_and(|t| t <= now_secs) {
                tracing::warn!(domain = %name, bundle = %origin.display(), "a CRL is past its nextUpdate (policy: {})", if crl_enforce_expiry { "reject" } else { "warn" });
                metrics::gauge!("symbolon_crl_expired", "domain" => name.clone(), "crl" => origin.display().to_string()).set(1.0);
            }
            crls.push(crl);
        }
    }
    Ok(DomainInput {
        names: vec![name.clone()],
        name,
        chain,
        key,
        bundle,
        mode,
        max_depth: crate::tls::verify::DEFAULT_MAX_CHAIN_DEPTH,
        trust_bundle: None,
        bundle_label: bundle_row.map(|b| format!("'{}'", b.name)),
        crls,
        crl_enforce_expiry,
    })
}

/// The TLS pool of an `https://` upstream (`None` for other upstreams): resolves a named
/// bundle or file, a named credential or files, and checks they fit together.
pub(crate) fn upstream_tls(
    owner: &str,
    upstream: &crate::routing::Upstream,
    settings: Option<&UpstreamTls>,
    credential: Option<&crate::store::CredentialRow>,
    store: &StoreState,
    pools: &Pools,
) -> Result<Option<Arc<TlsUpstream>>, SnapshotError> {
    if !upstream.is_https() {
        return Ok(None);
    }
    let err = |detail: String| SnapshotError::UpstreamTls {
        owner: owner.to_string(),
        detail,
    };
    let default = UpstreamTls::default();
    let s = settings.unwrap_or(&default);
    let roots = match (&s.trust_bundle, &s.trust_bundle_file) {
        (Some(_), Some(_)) => {
            return Err(err("set trust_bundle or trust_bundle_file, not both".into()));
        }
        (Some(name), None) => {
            let b = store.bundles.iter().find(|b| &b.name == name).ok_or_else(|| {
                err(format!(
                    "trust bundle '{name}' does not exist. Fix: create it (symbolon bundle add {name} CA.pem) or name another one"
                ))
            })?;
            let label = format!("'{name}'");
            let tb = pki::trust_bundle_from_pem(b.pem.as_bytes(), &PathBuf::from(&label))
                .map_err(|e| err(e.to_string()))?;
            Roots::Bundle {
                label,
                certs: tb.certs,
            }
        }
        (None, Some(path)) => {
            let tb = pki::load_trust_bundle(path).map_err(|e| err(e.to_string()))?;
            Roots::Bundle {
                label: path.display().to_string(),
                certs: tb.certs,
            }
        }
        (None, None) => Roots::System,
    };
    let by_name = match &s.credential {
        Some(name) => Some(
            store
                .credentials
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| {
                    err(format!(
                        "credential '{name}' does not exist. Fix: add it (symbolon credential add {name} CERT KEY) or name another one"
                    ))
                })?,
        ),
        None => None,
    };
    let files = match (&s.cert_file, &s.key_file) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err(err("cert_file and key_file go together".into())),
    };
    let credential = match (credential.or(by_name), files) {
        (Some(_), Some(_)) => {
            return Err(err(
                "name a credential or give cert_file/key_file, not both".into(),
            ));
        }
        (Some(row), None) => {
            let cert_origin =
                PathBuf::from(format!("the certificate of credential '{}'", row.name));
            let key_origin = PathBuf::from(format!("the key of credential '{}'", row.name));
            let chain = pki::parse_certs(row.cert_pem.as_bytes(), &cert_origin)
                .map_err(|e| err(e.to_string()))?;
            let key = pki::parse_key(row.key_pem.as_bytes(), &key_origin)
                .map_err(|e| err(e.to_string()))?;
            let ck = pki::certified_key(chain, key, &cert_origin, &key_origin)
                .map_err(|e| err(e.to_string()))?;
            Some((row.name.clone(), ck))
        }
        (None, Some((c, k))) => {
            let chain = pki::load_certs(c).map_err(|e| err(e.to_string()))?;
            let key = pki::load_key(k).map_err(|e| err(e.to_string()))?;
            let ck = pki::certified_key(chain, key, c, k).map_err(|e| err(e.to_string()))?;
            Some((c.display().to_string(), ck))
        }
        (None, None) => None,
    };
    if s.require_mtls && credential.is_none() {
        return Err(err(
            "require_mtls is set but there is no client credential to present. Fix: give the route a credential".into(),
        ));
    }
    let spec = TlsSpec {
        roots,
        server_name: s.server_name.clone(),
        credential,
        require_mtls: s.require_mtls,
    };
    pools.client(spec).map(Some).map_err(|e| err(e.to_string()))
}

/// Policies, identities and gateway-wide rules from the store.
fn authz_from_store(store: &StoreState) -> Result<crate::authz::AuthzSnapshot, SnapshotError> {
    use crate::authz::{AuthzSnapshot, Identity, NamedPolicy, PolicySpec, Rule};
    let mut policies = HashMap::new();
    for p in &store.policies {
        let spec: PolicySpec = serde_json::from_str(&p.spec)
            .map_err(|e| SnapshotError::Authz(format!("policy '{}' is not valid: {e}", p.name)))?;
        spec.validate()
            .map_err(|e| SnapshotError::Authz(format!("policy '{}': {e}", p.name)))?;
        let rate_per = spec
            .rate_limit
            .as_ref()
            .and_then(|r| crate::config::parse_duration(&r.per).ok());
        policies.insert(
            p.id.clone(),
            Arc::new(NamedPolicy::new(p.name.clone(), spec, rate_per)),
        );
    }
    let mut snap = AuthzSnapshot::default();
    if let Some(json) = &store.global_rules {
        let rules: Vec<Rule> = serde_json::from_str(json)
            .map_err(|e| SnapshotError::Authz(format!("gateway-wide rules are not valid: {e}")))?;
        snap.global_rules = rules.into_iter().map(Rule::normalised).collect();
    }
    for i in &store.identities {
        let expires_at = match &i.expires_at {
            Some(t) => Some(
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        SnapshotError::Authz(format!("identity '{}': expires_at: {e}", i.name))
                    })?
                    .unix_timestamp(),
            ),
            None => None,
        };
        let identity = Arc::new(Identity {
            id: i.id.clone(),
            name: i.name.clone(),
            policy: i.policy_id.as_ref().and_then(|p| policies.get(p).cloned()),
            active: i.active,
            expires_at,
        });
        if let Some(fp) = &i.fingerprint {
            snap.by_fingerprint.insert(fp.clone(), identity.clone());
        }
        if let Some(t) = &i.token_sha256 {
            snap.by_token.insert(t.clone(), identity);
        }
    }
    Ok(snap)
}
