//! The embedded store: SQLite in the data dir (sqlx, embedded migrations), holding what the admin
//! API manages: trust bundles, domains, client credentials, routes and the audit log.
//!
//! Writes go through one transaction each; the admin API builds and validates the new snapshot
//! inside that transaction and commits only if it is valid, so nothing is ever half-applied.
//! SQLite runs in WAL mode with `synchronous = FULL`: an acknowledged write survives `kill -9`
//! and power loss. The schema uses plain SQL types so a PostgreSQL backend can share it.

use std::path::Path;
use std::str::FromStr;

use crate::authz::{PolicySpec, RouteAuthz, Rule};
use crate::ca::Sealer;
use crate::config::{CrlExpired, SidecarConfig, UpstreamTls};
pub use crate::revocation::RevocationRow;
use crate::tls::Mode;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqliteConnection, SqlitePool};

/// A failure of the store itself (not of the data in it).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store {path}: {source}. Fix: check that the data dir is writable")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the store {path}: {source}")]
    Migrate {
        path: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error(
        "cannot make the store {path} private (mode 0600): {source}. Fix: check the data dir's owner and permissions"
    )]
    Private {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(
        "the store holds private keys sealed with a store passphrase ({0}), and none is configured. Fix: set store_passphrase_file in the config, or SYMBOLON_STORE_PASSPHRASE"
    )]
    Sealed(String),
    #[error(
        "cannot open the sealed private key of {0}: wrong store passphrase, or a damaged key. Fix: use the store passphrase the keys were sealed with"
    )]
    Unseal(String),
    #[error("store passphrase: {0}")]
    Passphrase(String),
}

/// The store holds private keys (domains, credentials): it is created 0600, and an existing
/// one readable by others is tightened. SQLite gives its -wal and -shm files the same mode.
#[cfg(unix)]
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |source| StoreError::Private {
        path: path.display().to_string(),
        source,
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    let with_suffix = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    for file in [path.to_path_buf(), with_suffix("-wal"), with_suffix("-shm")] {
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
            tracing::warn!(file = %file.display(), "the store holds private keys and was readable by others; its mode is now 0600");
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn make_private(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

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

/// The store handle (a small connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// Seals private keys at rest when a store passphrase is configured.
    sealer: Option<Sealer>,
}

fn seal(pem: &str, sealer: Option<&Sealer>) -> Result<String, sqlx::Error> {
    match sealer {
        Some(s) => s
            .seal_pem(pem)
            .map_err(|e| sqlx::Error::Protocol(format!("cannot seal a private key: {e}"))),
        None => Ok(pem.to_string()),
    }
}

/// Opens the sealed private keys of `st` in place (plain keys stay as they are).
pub fn open_keys(st: &mut StoreState, sealer: Option<&Sealer>) -> Result<(), StoreError> {
    let open = |pem: &mut String, what: String| -> Result<(), StoreError> {
        if !crate::ca::is_sealed(pem) {
            return Ok(());
        }
        let s = sealer.ok_or_else(|| StoreError::Sealed(what.clone()))?;
        *pem = s
            .open_pem(pem, Path::new(&what))
            .map_err(|_| StoreError::Unseal(what.clone()))?;
        Ok(())
    };
    for d in &mut st.domains {
        open(&mut d.key_pem, format!("domain '{}'", d.hostname))?;
    }
    for c in &mut st.credentials {
        open(&mut c.key_pem, format!("credential '{}'", c.name))?;
    }
    Ok(())
}

pub type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

impl Store {
    /// Opens (creating if needed) the SQLite store at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        make_private(path)?;
        let shown = path.display().to_string();
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{shown}"))
            .map_err(|source| StoreError::Open {
                path: shown.clone(),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // The store holds private keys: what is deleted or overwritten is zeroed, so an
            // old key (or one stored before sealing) does not linger in free pages.
            .pragma("secure_delete", "ON")
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: shown.clone(),
                source,
            })?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: shown,
                source,
            })?;
        Ok(Self { pool, sealer: None })
    }

    /// Seals private keys written from now on (and opens sealed ones) with `sealer`.
    pub fn with_sealer(mut self, sealer: Option<Sealer>) -> Self {
        self.sealer = sealer;
        self
    }

    pub fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_ref()
    }

    /// Seals every private key still stored in the clear (at start, when a passphrase is
    /// configured). Returns how many it sealed.
    pub async fn seal_all(&self) -> Result<usize, StoreError> {
        let Some(sealer) = &self.sealer else {
            return Ok(0);
        };
        let mut tx = self.begin().await?;
        let mut st = load_all(&mut tx).await?;
        open_keys(&mut st, Some(sealer))?;
        let raw = load_all(&mut tx).await?;
        let mut n = 0;
        for (d, r) in st.domains.iter().zip(&raw.domains) {
            if !crate::ca::is_sealed(&r.key_pem) {
                upsert_domain(&mut tx, d, Some(sealer)).await?;
                n += 1;
            }
        }
        for (c, r) in st.credentials.iter().zip(&raw.credentials) {
            if !crate::ca::is_sealed(&r.key_pem) {
                update_credential(&mut tx, c, Some(sealer)).await?;
                n += 1;
            }
        }
        tx.commit().await?;
        // Fold the write-ahead log into the (zeroed) database file and empty it: a log left
        // by a crash may hold keys written in the clear, or deleted, before sealing.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(n)
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Reads everything outside a write transaction.
    /// Private keys come back opened.
    pub async fn state(&self) -> Result<StoreState, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut st = load_all(&mut conn).await?;
        open_keys(&mut st, self.sealer.as_ref())?;
        Ok(st)
    }

    pub async fn audit(&self, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as::<_, AuditRow>(
            "SELECT id, at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Reads every row (used to build a snapshot, inside the write transaction when writing).
pub async fn load_all(conn: &mut SqliteConnection) -> Result<StoreState, StoreError> {
    let bundles = sqlx::query_as::<_, BundleRow>("SELECT * FROM bundles ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    let domains = sqlx::query_as::<_, DomainRow>("SELECT * FROM domains ORDER BY hostname")
        .fetch_all(&mut *conn)
        .await?;
    let credentials = sqlx::query_as::<_, CredentialRow>("SELECT * FROM credentials ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    let routes = sqlx::query_as::<_, RouteRow>("SELECT * FROM routes ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    let policies = sqlx::query_as::<_, PolicyRow>("SELECT * FROM policies ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    let identities = sqlx::query_as::<_, IdentityRow>("SELECT * FROM identities ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    let global_rules: Option<(String,)> =
        sqlx::query_as("SELECT value FROM settings WHERE key = 'global_rules'")
            .fetch_optional(&mut *conn)
            .await?;
    let revocations =
        sqlx::query_as::<_, RevocationRow>("SELECT * FROM revocations ORDER BY revoked_at")
            .fetch_all(&mut *conn)
            .await?;
    let sidecars = sqlx::query_as::<_, SidecarRow>("SELECT * FROM sidecars ORDER BY name")
        .fetch_all(&mut *conn)
        .await?;
    Ok(StoreState {
        sidecars,
        bundles,
        domains,
        credentials,
        routes,
        policies,
        identities,
        global_rules: match global_rules {
            Some((json,)) => Some(serde_json::from_str(&json).map_err(|e| {
                StoreError::Sql(sqlx::Error::Decode(
                    format!("the gateway-wide rules are not valid JSON: {e}").into(),
                ))
            })?),
            None => None,
        },
        revocations,
    })
}

/// The id of the credential named `name`, if there is one.
pub async fn credential_id(
    tx: &mut SqliteConnection,
    name: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("SELECT id FROM credentials WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(row.map(|r| r.0))
}

/// A typed value as the JSON text its column holds.
fn json<T: Serialize>(v: &Option<T>) -> Option<String> {
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

/// A new random id (16 hex characters).
pub fn new_id() -> String {
    let mut bytes = [0u8; 8];
    // The system RNG failing is not recoverable in any useful way; fall back to the clock.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (nanos as u64).to_be_bytes();
    }
    crate::pki::hex(&bytes)
}

/// Now, RFC 3339 UTC.
pub fn now() -> String {
    crate::pki::rfc3339(crate::pki::unix_now())
}

// === writes (all take the transaction's connection) ===

pub async fn insert_bundle(c: &mut SqliteConnection, b: &BundleRow) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO bundles (id, name, pem, require, created_at, updated_at, crls) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .bind(&b.id)
        .bind(&b.name)
        .bind(&b.pem)
        .bind(b.require)
        .bind(&b.created_at)
        .bind(&b.updated_at)
        .bind(json(&b.crls))
        .execute(c)
        .await
        .map(|_| ())
}

pub async fn update_bundle(c: &mut SqliteConnection, b: &BundleRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE bundles SET name = ?, pem = ?, require = ?, updated_at = ?, crls = ? WHERE id = ?",
    )
    .bind(&b.name)
    .bind(&b.pem)
    .bind(b.require)
    .bind(&b.updated_at)
    .bind(json(&b.crls))
    .bind(&b.id)
    .execute(c)
    .await
    .map(|_| ())
}

pub async fn delete_row(
    c: &mut SqliteConnection,
    table: Table,
    id: &str,
) -> Result<u64, sqlx::Error> {
    let sql = match table {
        Table::Bundles => "DELETE FROM bundles WHERE id = ?",
        Table::Domains => "DELETE FROM domains WHERE id = ?",
        Table::Credentials => "DELETE FROM credentials WHERE id = ?",
        Table::Routes => "DELETE FROM routes WHERE id = ?",
        Table::Policies => "DELETE FROM policies WHERE id = ?",
        Table::Identities => "DELETE FROM identities WHERE id = ?",
        Table::Sidecars => "DELETE FROM sidecars WHERE id = ?",
    };
    Ok(sqlx::query(sql).bind(id).execute(c).await?.rows_affected())
}

#[derive(Clone, Copy, Debug)]
pub enum Table {
    Bundles,
    Domains,
    Credentials,
    Routes,
    Policies,
    Identities,
    Sidecars,
}

/// Writes a domain; its key is sealed when the store has a passphrase.
pub async fn upsert_domain(
    c: &mut SqliteConnection,
    d: &DomainRow,
    sealer: Option<&Sealer>,
) -> Result<(), sqlx::Error> {
    let key = seal(&d.key_pem, sealer)?;
    sqlx::query(
        "INSERT INTO domains (id, hostname, cert_pem, key_pem, bundle_id, mtls, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT(id) DO UPDATE SET hostname = excluded.hostname, cert_pem = excluded.cert_pem, \
         key_pem = excluded.key_pem, bundle_id = excluded.bundle_id, mtls = excluded.mtls, \
         updated_at = excluded.updated_at",
    )
    .bind(&d.id)
    .bind(&d.hostname)
    .bind(&d.cert_pem)
    .bind(&key)
    .bind(&d.bundle_id)
    .bind(d.mtls.map(|m| m.to_string()))
    .bind(&d.created_at)
    .bind(&d.updated_at)
    .execute(c)
    .await
    .map(|_| ())
}

/// Writes a credential; its key is sealed when the store has a passphrase.
pub async fn insert_credential(
    c: &mut SqliteConnection,
    r: &CredentialRow,
    sealer: Option<&Sealer>,
) -> Result<(), sqlx::Error> {
    let key = seal(&r.key_pem, sealer)?;
    sqlx::query(
        "INSERT INTO credentials (id, name, cert_pem, key_pem, created_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&r.id)
    .bind(&r.name)
    .bind(&r.cert_pem)
    .bind(&key)
    .bind(&r.created_at)
    .execute(c)
    .await
    .map(|_| ())
}

pub async fn update_credential(
    c: &mut SqliteConnection,
    r: &CredentialRow,
    sealer: Option<&Sealer>,
) -> Result<(), sqlx::Error> {
    let key = seal(&r.key_pem, sealer)?;
    sqlx::query("UPDATE credentials SET cert_pem = ?, key_pem = ? WHERE id = ?")
        .bind(&r.cert_pem)
        .bind(&key)
        .bind(&r.id)
        .execute(c)
        .await
        .map(|_| ())
}

pub async fn upsert_route(c: &mut SqliteConnection, r: &RouteRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO routes (id, name, host, path_prefix, upstream, strip_prefix, credential_id, created_at, authz, upstream_tls) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, host = excluded.host, \
         path_prefix = excluded.path_prefix, upstream = excluded.upstream, \
         strip_prefix = excluded.strip_prefix, credential_id = excluded.credential_id, \
         authz = excluded.authz, upstream_tls = excluded.upstream_tls",
    )
    .bind(&r.id)
    .bind(&r.name)
    .bind(&r.host)
    .bind(&r.path_prefix)
    .bind(&r.upstream)
    .bind(r.strip_prefix)
    .bind(&r.credential_id)
    .bind(&r.created_at)
    .bind(json(&r.authz))
    .bind(json(&r.upstream_tls))
    .execute(c)
    .await
    .map(|_| ())
}

pub async fn upsert_sidecar(c: &mut SqliteConnection, r: &SidecarRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sidecars (id, name, spec, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, spec = excluded.spec",
    )
    .bind(&r.id)
    .bind(&r.name)
    .bind(json(&Some(&r.spec)))
    .bind(&r.created_at)
    .execute(c)
    .await
    .map(|_| ())
}

pub async fn insert_audit(
    c: &mut SqliteConnection,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(now())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(c)
        .await
        .map(|_| ())
}

pub async fn upsert_policy(c: &mut SqliteConnection, p: &PolicyRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO policies (id, name, spec, created_at, updated_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, spec = excluded.spec, updated_at = excluded.updated_at",
    )
    .bind(&p.id)
    .bind(&p.name)
    .bind(json(&Some(&p.spec)))
    .bind(&p.created_at)
    .bind(&p.updated_at)
    .execute(c)
    .await
    .map(|_| ())
}

pub async fn upsert_identity(c: &mut SqliteConnection, i: &IdentityRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO identities (id, name, fingerprint, token_sha256, policy_id, active, expires_at, created_at, created_by) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, fingerprint = excluded.fingerprint, \
         token_sha256 = excluded.token_sha256, policy_id = excluded.policy_id, active = excluded.active, \
         expires_at = excluded.expires_at",
    )
    .bind(&i.id)
    .bind(&i.name)
    .bind(&i.fingerprint)
    .bind(&i.token_sha256)
    .bind(&i.policy_id)
    .bind(i.active)
    .bind(&i.expires_at)
    .bind(&i.created_at)
    .bind(&i.created_by)
    .execute(c)
    .await
    .map(|_| ())
}

pub async fn set_setting(
    c: &mut SqliteConnection,
    key: &str,
    value: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(c)
        .await
        .map(|_| ())
}

impl Store {
    /// Persisted quota use (identity id, window start, used).
    pub async fn quota_use(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT identity_id, window_start, used FROM quota_use")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Saves quota use in one transaction.
    pub async fn save_quota_use(&self, rows: &[(String, i64, i64)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (id, start, used) in rows {
            sqlx::query(
                "INSERT INTO quota_use (identity_id, window_start, used) VALUES (?, ?, ?) \
                 ON CONFLICT(identity_id) DO UPDATE SET window_start = excluded.window_start, used = excluded.used",
            )
            .bind(id)
            .bind(start)
            .bind(used)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

pub async fn insert_revocation(
    c: &mut SqliteConnection,
    r: &RevocationRow,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO revocations (id, fingerprint, serial, issuer, reason, revoked_at, subject) VALUES (?, ?, ?, ?, ?, ?, ?)")
        .bind(&r.id)
        .bind(&r.fingerprint)
        .bind(&r.serial)
        .bind(&r.issuer)
        .bind(&r.reason)
        .bind(&r.revoked_at)
        .bind(&r.subject)
        .execute(c)
        .await
        .map(|_| ())
}

/// A certificate the built-in CA issued.
#[derive(Clone, Debug, FromRow, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedRow {
    pub serial: String,
    pub fingerprint: String,
    pub subject: String,
    /// DNS names, URIs, emails and IP addresses, comma-separated.
    pub sans: String,
    pub profile: String,
    pub not_after: String,
    pub issued_at: String,
    /// sign, enroll, renew, cli-sign, cli-issue, sidecar.
    pub via: String,
    /// The serial of the certificate this one renews.
    pub predecessor: Option<String>,
    /// Who asked: `cert:…`/`token:…` (admin), `enroll:TOKEN-NAME`, `cert:…` (renewal),
    /// `cli:USER`, `sidecar:NAME`.
    pub actor: String,
}

pub async fn insert_issued(c: &mut SqliteConnection, r: &IssuedRow) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO issued (serial, fingerprint, subject, sans, profile, not_after, issued_at, via, predecessor, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(&r.serial)
        .bind(&r.fingerprint)
        .bind(&r.subject)
        .bind(&r.sans)
        .bind(&r.profile)
        .bind(&r.not_after)
        .bind(&r.issued_at)
        .bind(&r.via)
        .bind(&r.predecessor)
        .bind(&r.actor)
        .execute(c)
        .await
        .map(|_| ())
}

/// The issued record of a certificate, by fingerprint.
pub async fn issued_by_fingerprint(
    c: &mut SqliteConnection,
    fingerprint: &str,
) -> Result<Option<IssuedRow>, sqlx::Error> {
    sqlx::query_as::<_, IssuedRow>("SELECT * FROM issued WHERE fingerprint = ?")
        .bind(fingerprint)
        .fetch_optional(c)
        .await
}

pub async fn issued_by_serial(
    c: &mut SqliteConnection,
    serial: &str,
) -> Result<Option<IssuedRow>, sqlx::Error> {
    sqlx::query_as::<_, IssuedRow>("SELECT * FROM issued WHERE serial = ?")
        .bind(serial)
        .fetch_optional(c)
        .await
}

/// The certificates that renew `serial`.
pub async fn issued_successors(
    c: &mut SqliteConnection,
    serial: &str,
) -> Result<Vec<IssuedRow>, sqlx::Error> {
    sqlx::query_as::<_, IssuedRow>("SELECT * FROM issued WHERE predecessor = ?")
        .bind(serial)
        .fetch_all(c)
        .await
}

/// Whether a revocation names this certificate (by fingerprint, or by serial with this
/// issuer or with no issuer recorded).
pub async fn is_revoked(
    c: &mut SqliteConnection,
    fingerprint: &str,
    serial: &str,
    issuer: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM revocations WHERE fingerprint = ? OR (serial = ? AND (issuer = ? OR issuer IS NULL)) LIMIT 1",
    )
    .bind(fingerprint)
    .bind(serial)
    .bind(issuer)
    .fetch_optional(c)
    .await?;
    Ok(row.is_some())
}

impl Store {
    /// An unused, unexpired enrollment token: its name, profile and grant (JSON).
    pub async fn enroll_token(
        &self,
        sha256: &str,
        now: i64,
    ) -> Result<Option<(String, String, Option<String>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, profile, grant_json FROM enroll_tokens WHERE token_sha256 = ? AND used_at IS NULL AND expires_at > ?",
        )
        .bind(sha256)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The revocations alone (the CRL needs nothing else).
    pub async fn revocation_rows(&self) -> Result<Vec<RevocationRow>, StoreError> {
        Ok(
            sqlx::query_as::<_, RevocationRow>("SELECT * FROM revocations ORDER BY revoked_at")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Every enrollment token (not the tokens themselves: their SHA-256).
    pub async fn enroll_tokens(&self) -> Result<Vec<EnrollTokenRow>, StoreError> {
        Ok(sqlx::query_as::<_, EnrollTokenRow>(
            "SELECT token_sha256, name, profile, expires_at, used_at, grant_json FROM enroll_tokens ORDER BY expires_at",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// An enrollment token as stored.
#[derive(Clone, Debug, FromRow)]
pub struct EnrollTokenRow {
    pub token_sha256: String,
    pub name: String,
    pub profile: String,
    pub expires_at: i64,
    pub used_at: Option<String>,
    pub grant_json: Option<String>,
}

/// Deletes the enrollment token whose SHA-256 starts with `id`; returns whether one was.
pub async fn delete_enroll_token(c: &mut SqliteConnection, id: &str) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM enroll_tokens WHERE substr(token_sha256, 1, 16) = ?")
        .bind(id)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Marks a token used, if it still is unused and unexpired; returns whether it was.
pub async fn spend_enroll_token(
    c: &mut SqliteConnection,
    sha256: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE enroll_tokens SET used_at = ? WHERE token_sha256 = ? AND used_at IS NULL AND expires_at > ?",
    )
    .bind(crate::pki::rfc3339(now))
    .bind(sha256)
    .bind(now)
    .execute(c)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn insert_enroll_token(
    c: &mut SqliteConnection,
    sha256: &str,
    name: &str,
    profile: &str,
    grant_json: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO enroll_tokens (token_sha256, name, profile, expires_at, grant_json) VALUES (?, ?, ?, ?, ?)")
        .bind(sha256)
        .bind(name)
        .bind(profile)
        .bind(expires_at)
        .bind(grant_json)
        .execute(c)
        .await
        .map(|_| ())
}

impl Store {
    pub async fn issued(&self) -> Result<Vec<IssuedRow>, StoreError> {
        Ok(
            sqlx::query_as::<_, IssuedRow>("SELECT * FROM issued ORDER BY issued_at DESC")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn the_store_and_its_journal_are_private() {
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("symbolon.db");
        let store = Store::open(&path).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        set_setting(&mut tx, "probe", "1").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("symbolon.db-wal")), 0o600);
        drop(store);
        // An existing store readable by others is tightened when opened.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _store = Store::open(&path).await.unwrap();
        assert_eq!(mode(&path), 0o600);
    }
}
