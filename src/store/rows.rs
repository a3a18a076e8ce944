//! The store's rows, typed: JSON columns are decoded here, once, into the values the rest of
//! the gateway uses (enums for modes and policies, not strings).

use super::*;

#[derive(Clone, Debug, FromRow, Serialize)]
pub struct BundleRow {
    pub id: String,
    pub name: String,
    pub pem: String,
    pub require: bool,
    pub created_at: String,
    pub updated_at: String,
    #[sqlx(json(nullable))]
    pub crls: Option<BundleCrls>,
}

/// CRLs attached to a trust bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleCrls {
    /// `http://` URLs, fetched at start, on reload and every hour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Uploaded CRLs (PEM, one or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// A CRL past its nextUpdate: `reject` (default) or `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<CrlExpired>,
    /// How often the URLs are fetched again (`1h` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
}

#[derive(Clone, FromRow)]
pub struct DomainRow {
    pub id: String,
    pub hostname: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub bundle_id: Option<String>,
    /// The domain's own mode; `None`: from its bundle (`require` flag), else `off`.
    pub mtls: Option<Mode>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, FromRow)]
pub struct CredentialRow {
    pub id: String,
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub created_at: String,
}

#[derive(Clone, Debug, FromRow, Serialize)]
pub struct RouteRow {
    pub id: String,
    pub name: String,
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: String,
    pub strip_prefix: bool,
    pub credential_id: Option<String>,
    pub created_at: String,
    #[sqlx(json(nullable))]
    pub authz: Option<RouteAuthz>,
    /// JSON of [`crate::config::UpstreamTls`] (without its credential), or NULL.
    #[sqlx(json(nullable))]
    pub upstream_tls: Option<UpstreamTls>,
}

#[derive(Clone, Debug, FromRow, Serialize)]
pub struct SidecarRow {
    pub id: String,
    pub name: String,
    #[sqlx(json)]
    pub spec: SidecarConfig,
    pub created_at: String,
}

#[derive(Clone, Debug, FromRow, Serialize)]
pub struct PolicyRow {
    pub id: String,
    pub name: String,
    #[sqlx(json)]
    pub spec: PolicySpec,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, FromRow, Serialize)]
pub struct IdentityRow {
    pub id: String,
    pub name: String,
    pub fingerprint: Option<String>,
    pub token_sha256: Option<String>,
    pub policy_id: Option<String>,
    pub active: bool,
    pub expires_at: Option<String>,
    pub created_at: String,
    /// The actor that created it (`token:NAME` for self-service).
    pub created_by: Option<String>,
}

#[derive(Clone, Debug, FromRow, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Everything in the store, read in one transaction.
#[derive(Clone, Default)]
pub struct StoreState {
    pub bundles: Vec<BundleRow>,
    pub domains: Vec<DomainRow>,
    pub credentials: Vec<CredentialRow>,
    pub routes: Vec<RouteRow>,
    pub policies: Vec<PolicyRow>,
    pub identities: Vec<IdentityRow>,
    /// Gateway-wide rules.
    pub global_rules: Option<Vec<Rule>>,
    pub revocations: Vec<RevocationRow>,
    pub sidecars: Vec<SidecarRow>,
}

impl StoreState {
    pub fn bundle(&self, id: &str) -> Option<&BundleRow> {
        self.bundles.iter().find(|b| b.id == id)
    }
}

/// A typed value as the JSON text its column holds.
pub(crate) fn json<T: Serialize>(v: &Option<T>) -> Option<String> {
    v.as_ref().and_then(|v| serde_json::to_string(v).ok())
}

impl sqlx::Type<sqlx::Sqlite> for Mode {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for Mode {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match <&str as sqlx::Decode<sqlx::Sqlite>>::decode(value)? {
            "require" => Ok(Mode::Require),
            "optional" => Ok(Mode::Optional),
            "off" => Ok(Mode::Off),
            other => Err(format!("mtls must be require, optional or off, not '{other}'").into()),
        }
    }
}
