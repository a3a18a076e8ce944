//! Building a snapshot from the configuration file and the store, in named steps: domains (from
//! the file and from the store, with their CRLs), their TLS settings and names, routes and
//! their upstream TLS, sidecars, policies and identities, and the certificates to watch.
//! Every file is read and checked first; a failed build changes nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::ProducesTickets;

use super::Control;
use crate::config::{Config, DomainConfig, RouteConfig, SidecarConfig, UpstreamTls};
use crate::expiry::KnownCert;
use crate::lock;
use crate::pki::{self, PkiError};
use crate::revocation::{RevocationRow, Revocations};
use crate::routing::{Route, RouteError, RouteTable, Upstream, parse_upstream};
use crate::snapshot::{Domain, Names, Rotation, Sidecar, Snapshot, SnapshotError};
use crate::store::{CredentialRow, DomainRow, StoreState};
use crate::tls::server::server_config;
use crate::tls::verify::{ClientVerifier, Mode};
use crate::upstream::{Pools, Roots, TlsSpec, TlsUpstream};

impl Control {
    /// Builds (and so validates) a snapshot of `opened` with the configuration as last applied,
    /// from the files as last applied (sealed private keys are opened here).
    pub(super) fn build(&self, mut opened: StoreState) -> Result<Snapshot, SnapshotError> {
        crate::store::open_keys(&mut opened, self.store.sealer())
            .map_err(|e| SnapshotError::Keys(e.to_string()))?;
        let files = self.files();
        let (snapshot, read) = pki::with_files(Some(&files), || {
            build_snapshot(
                &self.config.load(),
                &opened,
                self.shared.ticketer(),
                &self.shared.pools,
            )
        });
        if snapshot.is_ok() && read.len() > files.len() {
            *lock(&self.files) = Arc::new(read);
        }
        snapshot
    }
}

/// Loads every file the config names, adds what the store holds, validates everything, and
/// builds the snapshot.
pub fn build_snapshot(
    config: &Config,
    store: &StoreState,
    ticketer: Arc<dyn ProducesTickets>,
    pools: &Pools,
) -> Result<Snapshot, SnapshotError> {
    let now = UnixTime::now();
    let mut inputs = Vec::new();
    for dc in &config.domains {
        inputs.push(domain_from_config(dc, config, now)?);
    }
    for d in &store.domains {
        inputs.push(domain_from_store(d, store, config, now)?);
    }
    let mut known_certs = domain_certs(&inputs, store);
    let expiry_warnings = expiry_warnings(config)?;
    let revocations = Arc::new(Revocations::from_rows(&store.revocations));
    let mut domains = Vec::new();
    let mut names = Names::default();
    for input in inputs {
        for n in &input.names {
            names.add(n, domains.len())?;
        }
        domains.push(tls_domain(input, &revocations, ticketer.clone(), config)?);
    }
    let default = match &config.default_domain {
        Some(d) => Some(
            names
                .exact(&d.to_ascii_lowercase())
                .ok_or_else(|| SnapshotError::UnknownDefault { name: d.clone() })?,
        ),
        None if domains.is_empty() => None,
        None => Some(0),
    };
    let routes = routes(config, store, pools)?;
    let sidecars = sidecars(config, store, pools)?;
    upstream_certs(&mut known_certs, &routes, &sidecars);
    warn_open_routes(&routes, &domains);
    Ok(Snapshot {
        domains,
        names,
        default,
        routes: RouteTable::new(routes)?,
        access_log: config.access_log,
        timeouts: config.timeouts.clone(),
        authz: Arc::new(authz(store)?),
        trust_epoch: revocation_epoch(&store.revocations),
        revocations,
        known_certs,
        expiry_warnings,
        sidecars,
    })
}

/// One domain to build, from the config file or from the store.
struct DomainInput {
    name: String,
    names: Vec<String>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    bundle: Option<pki::TrustBundle>,
    mode: Mode,
    max_depth: usize,
    trust_bundle: Option<PathBuf>,
    bundle_label: Option<String>,
    crls: Vec<webpki::CertRevocationList<'static>>,
    crl_enforce_expiry: bool,
}

/// A domain of the config file: its files read and checked, its CRLs loaded (URLs from the
/// fetch cache).
fn domain_from_config(
    dc: &DomainConfig,
    config: &Config,
    now: UnixTime,
) -> Result<DomainInput, SnapshotError> {
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
    pki::certified_key(chain.clone(), key.clone_key(), &dc.cert, &dc.key).map_err(pki_err)?;
    let bundle = match &dc.trust_bundle {
        Some(path) => {
            let b = pki::load_trust_bundle(path).map_err(pki_err)?;
            pki::warn_expired(&b, &path.display().to_string(), now);
            Some(b)
        }
        None => None,
    };
    let crl_enforce_expiry = dc.crl_expired.enforced();
    let mut crls = Vec::new();
    for entry in &dc.crls {
        let url = crate::config::is_url(entry).then(|| entry.display().to_string());
        let path = match &url {
            Some(u) => crate::config::crl_cache_path(config, u),
            None => entry.clone(),
        };
        let cas = bundle.as_ref().map_or(&[][..], |b| &b.certs[..]);
        let (crl, next_update) = pki::load_crl(&path, cas).map_err(|e| match (&url, e) {
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
    Ok(DomainInput {
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
    })
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
    let mode = match (d.mtls, bundle_row) {
        (Some(mode), _) => mode,
        (None, Some(b)) if b.require => Mode::Require,
        (None, Some(_)) => Mode::Optional,
        (None, None) => Mode::Off,
    };
    // CRLs attached to the bundle: uploaded PEM, and URLs from the fetch cache.
    let mut crls = Vec::new();
    let mut crl_enforce_expiry = true;
    if let Some(b) = bundle_row
        && let Some(spec) = &b.crls
    {
        crl_enforce_expiry = spec.expired.unwrap_or_default().enforced();
        let origin = PathBuf::from(format!("the CRLs of bundle '{}'", b.name));
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

/// A domain's client verifier and TLS settings.
fn tls_domain(
    input: DomainInput,
    revocations: &Arc<Revocations>,
    ticketer: Arc<dyn ProducesTickets>,
    config: &Config,
) -> Result<Arc<Domain>, SnapshotError> {
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
        ticketer,
        config.tls13_session_tickets,
    )
    .map_err(|source| SnapshotError::Tls {
        domain: name.clone(),
        source,
    })?;
    Ok(Arc::new(Domain {
        name,
        names: input.names,
        mode: input.mode,
        tls,
        verifier,
        trust_bundle: input.trust_bundle,
        bundle_label: input.bundle_label,
    }))
}

/// The certificates of domains, their bundles and the store's credentials (expiry watch).
fn domain_certs(inputs: &[DomainInput], store: &StoreState) -> Vec<KnownCert> {
    let mut known = Vec::new();
    for input in inputs {
        for der in &input.chain {
            if let Ok(info) = pki::CertInfo::parse(der) {
                known.push(KnownCert::new("domain", &input.name, &info));
            }
        }
        if let Some(b) = &input.bundle {
            let label = input.bundle_label.clone().unwrap_or_default();
            for info in &b.infos {
                known.push(KnownCert::new("bundle", label.trim_matches('\''), info));
            }
        }
    }
    for c in &store.credentials {
        if let Some(info) = pki::leaf_info(&c.cert_pem) {
            known.push(KnownCert::new("credential", &c.name, &info));
        }
    }
    known
}

/// Credentials and upstream trust given as files (the store's are listed already), and which
/// credentials a sidecar rotates.
fn upstream_certs(
    known: &mut Vec<KnownCert>,
    routes: &[Route],
    sidecars: &HashMap<String, Arc<Sidecar>>,
) {
    for k in known.iter_mut().filter(|k| k.kind == "credential") {
        k.auto_rotated = sidecars
            .values()
            .any(|s| s.rotation.as_ref().is_some_and(|r| r.credential == k.name));
    }
    let specs = routes
        .iter()
        .filter_map(|r| r.tls.as_ref())
        .chain(sidecars.values().filter_map(|s| s.tls.as_ref()));
    for tls in specs {
        let mut add = |kind: &str, label: &str, info: pki::CertInfo| {
            if !known
                .iter()
                .any(|k| k.fingerprint_sha256 == info.fingerprint_sha256)
            {
                known.push(KnownCert::new(kind, label, &info));
            }
        };
        if let Some((name, ck)) = &tls.spec.credential
            && let Some(info) = ck
                .end_entity_cert()
                .ok()
                .and_then(|d| pki::CertInfo::parse(d).ok())
        {
            add("credential", name, info);
        }
        if let Roots::Bundle { label, certs } = &tls.spec.roots {
            for info in certs.iter().filter_map(|d| pki::CertInfo::parse(d).ok()) {
                add("bundle", label.trim_matches('\''), info);
            }
        }
    }
}

/// Expiry warning thresholds, in seconds.
fn expiry_warnings(config: &Config) -> Result<Vec<i64>, SnapshotError> {
    config
        .expiry_warnings
        .iter()
        .map(|t| {
            crate::duration::parse_duration(t)
                .map(|d| d.as_secs() as i64)
                .map_err(|e| SnapshotError::Authz(format!("expiry_warnings: {e}")))
        })
        .collect()
}

/// Routes of the config file, then the store's, each with its upstream TLS pool.
fn routes(config: &Config, store: &StoreState, pools: &Pools) -> Result<Vec<Route>, SnapshotError> {
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
        let mut route = Route::from_config(&RouteConfig {
            name: Some(r.name.clone()),
            host: r.host.clone(),
            path_prefix: r.path_prefix.clone(),
            upstream: r.upstream.clone(),
            strip_prefix: r.strip_prefix,
            authz: r.authz.clone(),
            upstream_tls: r.upstream_tls.clone(),
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
            r.upstream_tls.as_ref(),
            credential,
            store,
            pools,
        )?;
        routes.push(route);
    }
    Ok(routes)
}

/// The TLS pool of an `https://` upstream (`None` for other upstreams): resolves a named
/// bundle or file, a named credential or files, and checks they fit together.
fn upstream_tls(
    owner: &str,
    upstream: &Upstream,
    settings: Option<&UpstreamTls>,
    credential: Option<&CredentialRow>,
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

/// Every sidecar from the config file and the store, validated.
fn sidecars(
    config: &Config,
    store: &StoreState,
    pools: &Pools,
) -> Result<HashMap<String, Arc<Sidecar>>, SnapshotError> {
    let all = config
        .sidecars
        .iter()
        .map(|sc| (sc.clone(), "config"))
        .chain(store.sidecars.iter().map(|row| (row.spec.clone(), "api")));
    let mut out: HashMap<String, Arc<Sidecar>> = HashMap::new();
    for (sc, source) in all {
        let owner = format!("sidecar '{}'", sc.name);
        let err = |detail: String| SnapshotError::UpstreamTls {
            owner: owner.clone(),
            detail,
        };
        super::credentials::check(&sc).map_err(&err)?;
        if out.contains_key(&sc.name) {
            return Err(err("two sidecars have this name".into()));
        }
        if sc.listen.port() != 0
            && let Some(other) = out.values().find(|o| o.config.listen == sc.listen)
        {
            return Err(err(format!(
                "listen address {} is already used by sidecar '{}'",
                sc.listen, other.config.name
            )));
        }
        let upstream = parse_upstream(&sc.name, &sc.upstream).map_err(|e| err(e.to_string()))?;
        let Upstream::Http {
            scheme,
            authority,
            base_path,
        } = upstream.clone()
        else {
            return Err(err("the upstream must be an http(s) URL".into()));
        };
        let credential = match &sc.issue {
            Some(_) => {
                let name = sc.credential_name();
                Some(store.credentials.iter().find(|c| c.name == name).ok_or_else(|| {
                    err(format!(
                        "its credential '{name}' has not been issued yet. Fix: reload, or create the sidecar through the admin API"
                    ))
                })?)
            }
            None => None,
        };
        let tls = upstream_tls(
            &owner,
            &upstream,
            sc.upstream_tls.as_ref(),
            credential,
            store,
            pools,
        )?;
        let rotation = match (&sc.issue, credential) {
            (Some(_), Some(row)) => Some(rotation_of(row).map_err(&err)?),
            _ => None,
        };
        out.insert(
            sc.name.clone(),
            Arc::new(Sidecar {
                config: sc,
                source,
                scheme,
                authority,
                base_path,
                tls,
                rotation,
            }),
        );
    }
    Ok(out)
}

/// When an issued credential is due: two thirds into its lifetime, counted from its issue
/// (the CA back-dates `not_before` by [`crate::ca::BACKDATE_SECS`]).
fn rotation_of(row: &CredentialRow) -> Result<Rotation, String> {
    let info = pki::leaf_info(&row.cert_pem).ok_or_else(|| {
        format!(
            "the certificate of credential '{}' cannot be read",
            row.name
        )
    })?;
    let issued = info.not_before + crate::ca::BACKDATE_SECS;
    let rotate_at = issued + (info.not_after - issued).max(0) * 2 / 3;
    Ok(Rotation {
        credential: row.name.clone(),
        serial: info.serial_hex.clone(),
        fingerprint_sha256: info.fingerprint_sha256.clone(),
        not_after: pki::rfc3339(info.not_after),
        rotate_at: pki::rfc3339(rotate_at),
        rotate_at_unix: rotate_at,
    })
}

/// Policies, identities and gateway-wide rules from the store.
fn authz(store: &StoreState) -> Result<crate::authz::AuthzSnapshot, SnapshotError> {
    use crate::authz::{AuthzSnapshot, Identity, NamedPolicy, Rule};
    let mut policies = HashMap::new();
    for p in &store.policies {
        p.spec
            .validate()
            .map_err(|e| SnapshotError::Authz(format!("policy '{}': {e}", p.name)))?;
        let rate_per = p
            .spec
            .rate_limit
            .as_ref()
            .and_then(|r| crate::duration::parse_duration(&r.per).ok());
        policies.insert(
            p.id.clone(),
            Arc::new(NamedPolicy::new(p.name.clone(), p.spec.clone(), rate_per)),
        );
    }
    let mut snap = AuthzSnapshot::default();
    if let Some(rules) = &store.global_rules {
        snap.global_rules = rules.iter().cloned().map(Rule::normalised).collect();
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
fn revocation_epoch(rows: &[RevocationRow]) -> u64 {
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

#[allow(dead_code)]
fn _sidecar_config_is_used(_: &SidecarConfig) {}
