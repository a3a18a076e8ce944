//! The TOML configuration file: what it may contain, its defaults, and how it is read.
//!
//! Relative paths in the file are resolved against the file's own directory. Reading the file
//! only parses it; [`crate::control::build_snapshot`] loads and validates what it points to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tls::verify::{DEFAULT_MAX_CHAIN_DEPTH, Mode};

pub use crate::duration::{
    DurationRange, EXPIRING_WITHIN, LIFETIME, MAX_DURATION, QUOTA_PERIOD, RATE_PER,
    TOKEN_EXPIRES_IN, format_duration, parse_duration,
};

/// A problem with the configuration file itself.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}. Fix: check the path given to --config")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address of the TLS listener. Default `127.0.0.1:8443`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` listener (plain HTTP; keep it on loopback).
    /// Default `127.0.0.1:9464`.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// Domain used for clients that send no SNI (or an unknown one). Default: the first domain.
    #[serde(default)]
    pub default_domain: Option<String>,
    /// Write one JSON access-log line per request. Default `true`.
    #[serde(default = "yes")]
    pub access_log: bool,
    /// Reload when the config file or a PEM file it names changes. Default `true`.
    /// SIGHUP reloads either way.
    #[serde(default = "yes")]
    pub watch_files: bool,
    /// TLS 1.3 session tickets sent after each full handshake, for resumption (like nginx's
    /// `ssl_session_tickets`). 0 turns ticket resumption off. Default 2.
    #[serde(default = "two")]
    pub tls13_session_tickets: usize,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Connection caps per listener and per client address.
    #[serde(default)]
    pub limits: Limits,
    /// Log a warning when a known certificate gets this close to expiry (once per threshold).
    /// Default `["30d", "7d", "1d"]`.
    #[serde(default = "default_expiry_warnings")]
    pub expiry_warnings: Vec<String>,
    /// SQLite file of the store that holds what the admin API manages.
    /// Default: `symbolon.db` next to this file.
    #[serde(default)]
    pub store: Option<PathBuf>,
    /// File with the passphrase that seals the private keys kept in the store (domains,
    /// credentials, sidecars), as the CA keys are sealed; absent: `SYMBOLON_STORE_PASSPHRASE`;
    /// neither: keys are stored in the clear (the store file is 0600). Needs a restart.
    #[serde(default)]
    pub store_passphrase_file: Option<PathBuf>,
    /// The built-in CA (made with `symbolon ca init`). Absent: no CA in the gateway.
    #[serde(default)]
    pub ca: Option<CaConfig>,
    /// The admin API listener. Absent: no admin API.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    #[serde(default, rename = "domains")]
    pub domains: Vec<DomainConfig>,
    #[serde(default, rename = "routes")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "sidecars")]
    pub sidecars: Vec<SidecarConfig>,
}

/// Timeouts, written as `"500ms"`, `"10s"` or `"2m"`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TLS handshake, from accept to the end of the handshake. Default `10s`.
    #[serde(default = "d10s", with = "crate::duration::serde")]
    pub handshake: Duration,
    /// Connecting to an upstream (502 when exceeded). Default `5s`.
    #[serde(default = "d5s", with = "crate::duration::serde")]
    pub upstream_connect: Duration,
    /// Waiting for an upstream's response headers (504 when exceeded). Default `60s`.
    #[serde(default = "d60s", with = "crate::duration::serde")]
    pub upstream_response: Duration,
    /// Idle keep-alive connections to upstreams are closed after this. Default `90s`.
    #[serde(default = "d90s", with = "crate::duration::serde")]
    pub upstream_idle: Duration,
    /// Downloading a CRL given by URL, from connect to the last byte; a slower download keeps
    /// the last good CRL. Default `15s`.
    #[serde(default = "d15s", with = "crate::duration::serde")]
    pub crl_fetch: Duration,
    /// After the handshake, the first request must start within this, else the connection is
    /// closed (every listener). Default `60s` (nginx's `client_header_timeout`).
    #[serde(default = "d60s", with = "crate::duration::serde")]
    pub first_request: Duration,
    /// A request head (HTTP/1) must arrive in full within this of its first byte, else `408`
    /// and the connection is closed. Default `60s`.
    #[serde(default = "d60s", with = "crate::duration::serde")]
    pub request_header: Duration,
    /// An HTTP/1 connection idle between requests is closed after this. Default `75s`
    /// (nginx's `keepalive_timeout`).
    #[serde(default = "d75s", with = "crate::duration::serde")]
    pub keepalive: Duration,
    /// An HTTP/2 connection with no open stream gets GOAWAY after this. Default `75s`.
    #[serde(default = "d75s", with = "crate::duration::serde")]
    pub http2_idle: Duration,
    /// A connection older than this ends after its current response (HTTP/1
    /// `Connection: close`, HTTP/2 GOAWAY), so clients reconnect and meet the current trust.
    /// Default `1h` (nginx's `keepalive_time`).
    #[serde(default = "d1h", with = "crate::duration::serde")]
    pub max_connection_age: Duration,
    /// Time given to open connections on SIGTERM before they are closed. Default `30s`.
    #[serde(default = "d30s", with = "crate::duration::serde")]
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: d10s(),
            upstream_connect: d5s(),
            upstream_response: d60s(),
            upstream_idle: d90s(),
            crl_fetch: d15s(),
            first_request: d60s(),
            request_header: d60s(),
            keepalive: d75s(),
            http2_idle: d75s(),
            max_connection_age: d1h(),
            shutdown_grace: d30s(),
        }
    }
}

/// Connection caps. At start the open-file limit is raised to the hard limit; caps left at 0
/// are derived from it so that no listener can use up the descriptors another one needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Data-plane connections in all. 0 (default): half of the open-file limit left after the
    /// other listeners and a reserve of 64 (a proxied connection may hold an upstream one).
    #[serde(default)]
    pub max_connections: usize,
    /// Data-plane connections from one client address. 0 (default): a quarter of
    /// `max_connections`.
    #[serde(default)]
    pub max_connections_per_ip: usize,
    /// Admin API connections. 0 (default): 256, at most an eighth of the open-file limit.
    #[serde(default)]
    pub admin_max_connections: usize,
    /// Metrics listener connections. 0 (default): 64, at most a sixteenth.
    #[serde(default)]
    pub metrics_max_connections: usize,
    /// Connections per sidecar listener. 0 (default): 1024, at most an eighth.
    #[serde(default)]
    pub sidecar_max_connections: usize,
}

/// The caps in effect.
#[derive(Clone, Copy, Debug)]
pub struct ResolvedLimits {
    pub data: usize,
    pub data_per_ip: usize,
    pub admin: usize,
    pub metrics: usize,
    pub sidecar: usize,
}

impl Limits {
    pub fn resolve(&self, nofile: u64, sidecars: usize) -> ResolvedLimits {
        let nofile = usize::try_from(nofile).unwrap_or(usize::MAX).min(1 << 24);
        let pick = |set: usize, default: usize, share: usize| {
            if set > 0 {
                set
            } else {
                default.min(nofile / share).max(4)
            }
        };
        let admin = pick(self.admin_max_connections, 256, 8);
        let metrics = pick(self.metrics_max_connections, 64, 16);
        let sidecar = pick(self.sidecar_max_connections, 1024, 8);
        let others = admin + metrics + sidecar * sidecars + 64;
        let data = if self.max_connections > 0 {
            self.max_connections
        } else {
            (nofile.saturating_sub(others) / 2).max(16)
        };
        let data_per_ip = if self.max_connections_per_ip > 0 {
            self.max_connections_per_ip
        } else {
            (data / 4).max(1)
        };
        ResolvedLimits {
            data,
            data_per_ip,
            admin,
            metrics,
            sidecar,
        }
    }
}

/// The built-in CA, as the gateway uses it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Directory made by `symbolon ca init`.
    pub dir: PathBuf,
    /// File with the passphrase of the CA keys; absent: `SYMBOLON_CA_PASSPHRASE`.
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// How long a published CRL is valid (its nextUpdate). Default `24h`.
    #[serde(default = "d24h", with = "crate::duration::serde")]
    pub crl_validity: Duration,
    /// Where third-party verifiers can download this CA's CRL (`http://…`; the gateway serves
    /// it at `/ca/crl.der` on `metrics_listen`, or publish it elsewhere): put into issued
    /// certificates as their CRL Distribution Point. Absent: issued certificates name none.
    #[serde(default)]
    pub crl_url: Option<String>,
}

fn d24h() -> Duration {
    Duration::from_secs(86_400)
}

/// The admin API: HTTPS, with an admin client certificate or a bearer token.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Default `127.0.0.1:9443`.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Server certificate chain and key of the admin listener.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose certificates are admin certificates. Keep it apart from client CAs.
    pub client_ca: PathBuf,
    /// Bearer tokens: a name (shown in the audit log) and the hex SHA-256 of the token.
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
    /// Largest request body the admin API accepts. Default 1 MiB.
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    pub sha256: String,
    /// `admin` (default): the whole API. `self-service`: only
    /// `POST /api/v1/self-service/identities` (clients enrolling their own certificates).
    #[serde(default = "default_scope")]
    pub scope: String,
    /// How many identities a `self-service` token may create (1 to 100,000). Default 10.
    #[serde(default = "default_max_identities")]
    pub max_identities: usize,
}

fn default_max_identities() -> usize {
    10
}

fn default_scope() -> String {
    "admin".into()
}

/// One TLS domain: the names it answers to, its server certificate and its client trust.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// Host names (SNI and Host) this domain answers to; the first is its name in logs.
    pub names: Vec<String>,
    /// PEM file with the server certificate followed by its intermediates.
    pub cert: PathBuf,
    /// PEM file with the server certificate's private key.
    pub key: PathBuf,
    /// PEM file of the CA certificates that client certificates must chain to.
    #[serde(default)]
    pub trust_bundle: Option<PathBuf>,
    /// `require`, `optional` or `off`. Default `require`.
    #[serde(default = "default_mode")]
    pub mtls: Mode,
    /// CA certificates allowed above the client certificate, the trust anchor included. Default 3.
    #[serde(default = "default_depth")]
    pub max_chain_depth: usize,
    /// CRLs of the trust bundle's CAs: files (PEM or DER; watched and reloaded like the PEM
    /// files) or `http://` URLs (fetched at start and every `crl_refresh`).
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// How often CRLs given by URL are fetched again. Default `1h`.
    #[serde(default = "d1h", with = "crate::duration::serde")]
    pub crl_refresh: Duration,
    /// A CRL past its nextUpdate: `reject` (default: clients of that CA fail verification) or
    /// `warn` (keep using it and log a warning).
    #[serde(default)]
    pub crl_expired: CrlExpired,
}

fn d1h() -> Duration {
    Duration::from_secs(3600)
}

/// What a CRL past its nextUpdate means: `reject` (the default: clients of its CA are refused
/// until it is replaced) or `warn` (still used, with a warning).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CrlExpired {
    #[default]
    Reject,
    Warn,
}

impl CrlExpired {
    pub fn as_str(self) -> &'static str {
        match self {
            CrlExpired::Reject => "reject",
            CrlExpired::Warn => "warn",
        }
    }

    /// Whether an expired CRL refuses the clients of its CA.
    pub fn enforced(self) -> bool {
        self == CrlExpired::Reject
    }
}

/// One route: requests for `host` whose path starts with `path_prefix` go to `upstream`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in logs and metrics. Default: `host + path_prefix`.
    #[serde(default)]
    pub name: Option<String>,
    /// Host this route serves; absent or `*` means every host.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix, matched on whole segments (`/api` matches `/api` and `/api/x`, not `/apix`).
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// `http://host:port[/base]` or `builtin:echo`.
    pub upstream: String,
    /// Remove `path_prefix` from the path before forwarding. Default `false`.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Authorization: static rules, identity requirement, token header.
    #[serde(default)]
    pub authz: Option<crate::authz::RouteAuthz>,
    /// For `https://` upstreams: trust, server name, client credential.
    #[serde(default)]
    pub upstream_tls: Option<UpstreamTls>,
}

/// How the gateway talks TLS to an `https://` upstream. Absent: the system CAs, the URL's host
/// as server name, no client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Name of a trust bundle (admin API) the upstream's certificate must chain to.
    /// Default: the system's CA certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_bundle: Option<String>,
    /// Config file only: a PEM file of those CA certificates instead of a named bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub trust_bundle_file: Option<PathBuf>,
    /// Name sent as SNI and checked against the upstream's certificate. Default: the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Config file only: name of a client credential (admin API) to present. Through the API,
    /// set the route's `credential` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Config file only: the client certificate chain (PEM) to present…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cert_file: Option<PathBuf>,
    /// …and its private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub key_file: Option<PathBuf>,
    /// Refuse to send the request (502) when the upstream does not ask for a client
    /// certificate. Default `false`.
    #[serde(default)]
    pub require_mtls: bool,
}

impl UpstreamTls {
    /// Whether any file-based setting is used (they are for the config file only).
    pub fn uses_files(&self) -> bool {
        self.trust_bundle_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }

    fn resolve_paths(&mut self, fix: &impl Fn(&mut PathBuf)) {
        for p in [
            &mut self.trust_bundle_file,
            &mut self.cert_file,
            &mut self.key_file,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }

    fn files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        [&self.trust_bundle_file, &self.cert_file, &self.key_file]
            .into_iter()
            .flatten()
            .cloned()
    }
}

/// Sidecar (egress) mode: a local plain-HTTP listener whose requests the gateway forwards to
/// one upstream over TLS, presenting a client credential (typically issued and rotated by the
/// built-in CA).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// Name in logs, metrics and the API.
    pub name: String,
    /// Plain-HTTP listen address; keep it on loopback (e.g. `127.0.0.1:15001`).
    #[schema(value_type = String)]
    pub listen: SocketAddr,
    /// `https://host:port[/base]` (or `http://` for a plain upstream).
    pub upstream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<UpstreamTls>,
    /// Have the built-in CA issue the client credential, and rotate it at two thirds of its
    /// lifetime. The credential is stored as `sidecar-NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<IssueSpec>,
}

/// What the built-in CA puts into a sidecar's credential.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueSpec {
    /// Subject common name.
    pub common_name: String,
    /// SPIFFE ID as URI SAN (`spiffe://trust-domain/path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Certificate lifetime, e.g. `24h`. Default `24h`; rotation happens after two thirds.
    #[serde(default = "default_sidecar_lifetime")]
    pub lifetime: String,
}

fn default_sidecar_lifetime() -> String {
    "24h".into()
}

impl SidecarConfig {
    /// The name of the credential the built-in CA issues for this sidecar.
    pub fn credential_name(&self) -> String {
        format!("sidecar-{}", self.name)
    }
}

impl Config {
    /// Reads and parses a config file, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let mut store = self.store.take().unwrap_or_else(|| "symbolon.db".into());
        fix(&mut store);
        self.store = Some(store);
        if let Some(p) = &mut self.store_passphrase_file {
            fix(p);
        }
        if let Some(c) = &mut self.ca {
            fix(&mut c.dir);
            if let Some(p) = &mut c.passphrase_file {
                fix(p);
            }
        }
        if let Some(a) = &mut self.admin {
            fix(&mut a.cert);
            fix(&mut a.key);
            fix(&mut a.client_ca);
        }
        for d in &mut self.domains {
            fix(&mut d.cert);
            fix(&mut d.key);
            if let Some(b) = &mut d.trust_bundle {
                fix(b);
            }
            for c in &mut d.crls {
                if !is_url(c) {
                    fix(c);
                }
            }
        }
        for tls in self
            .routes
            .iter_mut()
            .filter_map(|r| r.upstream_tls.as_mut())
            .chain(
                self.sidecars
                    .iter_mut()
                    .filter_map(|s| s.upstream_tls.as_mut()),
            )
        {
            tls.resolve_paths(&fix);
        }
    }

    /// The store's path (set by [`Config::load`]).
    pub fn store_path(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(|| "symbolon.db".into())
    }

    /// Every file the configuration points to (watched for changes).
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for d in &self.domains {
            files.push(d.cert.clone());
            files.push(d.key.clone());
            files.extend(d.trust_bundle.clone());
            files.extend(d.crls.iter().filter(|c| !is_url(c)).cloned());
        }
        for tls in self
            .routes
            .iter()
            .filter_map(|r| r.upstream_tls.as_ref())
            .chain(self.sidecars.iter().filter_map(|s| s.upstream_tls.as_ref()))
        {
            files.extend(tls.files());
        }
        if let Some(a) = &self.admin {
            files.extend([a.cert.clone(), a.key.clone(), a.client_ca.clone()]);
        }
        if let Some(c) = &self.ca {
            files.extend(c.passphrase_file.clone());
        }
        files
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_expiry_warnings() -> Vec<String> {
    vec!["30d".into(), "7d".into(), "1d".into()]
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9443))
}
fn default_max_upload() -> usize {
    1024 * 1024
}
fn two() -> usize {
    2
}
fn yes() -> bool {
    true
}
fn default_mode() -> Mode {
    Mode::Require
}
fn default_depth() -> usize {
    DEFAULT_MAX_CHAIN_DEPTH
}
fn default_prefix() -> String {
    "/".into()
}
fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn d10s() -> Duration {
    Duration::from_secs(10)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d60s() -> Duration {
    Duration::from_secs(60)
}
fn d15s() -> Duration {
    Duration::from_secs(15)
}
fn d75s() -> Duration {
    Duration::from_secs(75)
}
fn d90s() -> Duration {
    Duration::from_secs(90)
}

/// Whether a CRL entry is a URL rather than a file.
pub fn is_url(p: &Path) -> bool {
    p.to_str()
        .is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))
}

/// Where the CRL fetched from `url` is cached: next to the store, named by the URL's hash.
pub fn crl_cache_path(config: &Config, url: &str) -> PathBuf {
    let store = config.store_path();
    let dir = store.parent().unwrap_or(Path::new(".")).join("crl-cache");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, url.as_bytes());
    dir.join(format!("{}.crl", crate::pki::hex(&digest.as_ref()[..16])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("listn = '127.0.0.1:1'").unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }
}
