//! Request and response bodies of the admin API (and so of its OpenAPI document). Private keys
//! appear only in requests, never in a response.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::authz::RouteAuthz;
use crate::pki::{CertInfo, rfc3339};
pub use crate::store::BundleCrls;

/// CRLs to attach to a trust bundle, as a request gives them (checked into [`BundleCrls`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrlsBody {
    /// `http://` URLs, fetched at start, on reload and every hour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Uploaded CRLs (PEM, one or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// A CRL past its nextUpdate: `reject` (default) or `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<String>,
    /// How often the URLs are fetched again (`1h` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
}

impl From<&BundleCrls> for CrlsBody {
    fn from(c: &BundleCrls) -> Self {
        Self {
            urls: c.urls.clone(),
            pem: c.pem.clone(),
            expired: c.expired.map(|e| e.as_str().to_string()),
            refresh: c.refresh.clone(),
        }
    }
}

/// Facts about one certificate.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CertView {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    pub not_before: String,
    pub not_after: String,
}

impl From<&CertInfo> for CertView {
    fn from(i: &CertInfo) -> Self {
        Self {
            subject: i.subject.clone(),
            issuer: i.issuer.clone(),
            serial: i.serial_hex.clone(),
            fingerprint_sha256: i.fingerprint_sha256.clone(),
            not_before: rfc3339(i.not_before),
            not_after: rfc3339(i.not_after),
        }
    }
}

/// A trust bundle: CA certificates that client certificates must chain to.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BundleView {
    pub id: String,
    pub name: String,
    /// true: clients without a valid certificate fail the handshake; false: the connection
    /// proceeds and the failure is recorded (transition mode).
    pub require: bool,
    /// Host names of the domains attached to this bundle.
    pub domains: Vec<String>,
    pub certificates: Vec<CertView>,
    /// CRLs attached to the bundle.
    pub crls: Option<BundleCrls>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BundleCreate {
    pub name: String,
    /// PEM of one or more root or intermediate CA certificates.
    pub pem: String,
    #[serde(default)]
    pub require: bool,
    pub crls: Option<CrlsBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BundleUpdate {
    /// New name (rename).
    pub name: Option<String>,
    /// Enforce (true) or record only (false).
    pub require: Option<bool>,
    /// Replaces the attached CRLs (`{}` removes them).
    pub crls: Option<CrlsBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PemBody {
    pub pem: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AttachBody {
    /// Domain id or host name.
    pub domain: String,
}

/// A TLS domain. Its private key is write-only.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DomainView {
    pub id: String,
    pub hostname: String,
    /// Name of the attached trust bundle.
    pub bundle: Option<String>,
    /// The mode in force: require, optional or off.
    pub mtls: String,
    /// The explicit setting; null follows the bundle's `require` flag.
    pub mtls_setting: Option<String>,
    pub certificate: Option<CertView>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DomainCreate {
    pub hostname: String,
    /// Server certificate followed by its chain (PEM).
    pub cert_pem: String,
    /// Private key of the server certificate (PEM). Never returned.
    pub key_pem: String,
    /// Trust bundle id or name.
    pub bundle: Option<String>,
    /// require | optional | off; absent follows the bundle's `require` flag.
    pub mtls: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DomainUpdate {
    /// New certificate chain; give `key_pem` with it.
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
    /// Trust bundle id or name; "" detaches.
    pub bundle: Option<String>,
    /// require | optional | off | "" (follow the bundle).
    pub mtls: Option<String>,
}

/// A client credential the gateway presents to upstreams. Its key is never returned.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CredentialView {
    pub id: String,
    pub name: String,
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    pub fingerprint_sha256: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CredentialCreate {
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A route: requests for `host` under `path_prefix` go to `upstream`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RouteView {
    pub id: String,
    pub name: String,
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: String,
    pub strip_prefix: bool,
    /// Name of the client credential presented to the upstream.
    pub credential: Option<String>,
    /// Authorization settings (static rules, identity requirement, token header).
    pub authz: Option<RouteAuthz>,
    /// For https:// upstreams: trust bundle, server name, require_mtls.
    pub upstream_tls: Option<crate::config::UpstreamTls>,
    pub created_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RouteCreate {
    pub name: String,
    pub host: Option<String>,
    #[serde(default = "root")]
    pub path_prefix: String,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: bool,
    /// Credential id or name: the client certificate presented to an https:// upstream.
    pub credential: Option<String>,
    pub authz: Option<RouteAuthz>,
    /// For https:// upstreams: `trust_bundle` (name; default the system CAs), `server_name`,
    /// `require_mtls`. The `*_file` and `credential` fields are for the config file only.
    pub upstream_tls: Option<crate::config::UpstreamTls>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RouteUpdate {
    pub name: Option<String>,
    /// "" or "*" for every host.
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub upstream: Option<String>,
    pub strip_prefix: Option<bool>,
    /// Credential id or name; "" removes it.
    pub credential: Option<String>,
    /// Replaces the route's authorization settings.
    pub authz: Option<RouteAuthz>,
    /// Replaces the route's upstream TLS settings (`{}` resets them to the defaults).
    pub upstream_tls: Option<crate::config::UpstreamTls>,
}

fn root() -> String {
    "/".into()
}

/// What an import did.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}
