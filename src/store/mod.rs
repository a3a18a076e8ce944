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

mod records;
mod rows;
mod write;
pub use records::*;
pub use rows::*;
pub use write::*;
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
    #[error(
        "the store's {table} row '{row}' cannot be read ({detail}). Fix: correct or delete that row (sqlite3), or restore the store from a backup"
    )]
    Unreadable {
        table: &'static str,
        row: String,
        detail: String,
    },
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
/// Every row of `table` (a name of ours, never input), ordered by `order`. A row this version
/// cannot read (a value outside its type, say) is named by its `key` in the error.
async fn rows<T>(
    conn: &mut SqliteConnection,
    table: &'static str,
    order: &'static str,
    key: &'static str,
) -> Result<Vec<T>, StoreError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let all = format!("SELECT * FROM {table} ORDER BY {order}");
    match sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(all))
        .fetch_all(&mut *conn)
        .await
    {
        Err(e @ sqlx::Error::ColumnDecode { .. }) => {
            let keys: Vec<(String,)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {key} FROM {table}")))
                    .fetch_all(&mut *conn)
                    .await?;
            for (k,) in keys {
                let one = format!("SELECT * FROM {table} WHERE {key} = ?");
                if let Err(detail) = sqlx::query_as::<_, T>(sqlx::AssertSqlSafe(one))
                    .bind(&k)
                    .fetch_one(&mut *conn)
                    .await
                {
                    return Err(StoreError::Unreadable {
                        table,
                        row: k,
                        detail: detail.to_string(),
                    });
                }
            }
            Err(e.into())
        }
        other => Ok(other?),
    }
}

pub async fn load_all(conn: &mut SqliteConnection) -> Result<StoreState, StoreError> {
    let bundles = rows::<BundleRow>(conn, "bundles", "name", "name").await?;
    let domains = rows::<DomainRow>(conn, "domains", "hostname", "hostname").await?;
    let credentials = rows::<CredentialRow>(conn, "credentials", "name", "name").await?;
    let routes = rows::<RouteRow>(conn, "routes", "name", "name").await?;
    let policies = rows::<PolicyRow>(conn, "policies", "name", "name").await?;
    let identities = rows::<IdentityRow>(conn, "identities", "name", "name").await?;
    let global_rules: Option<(String,)> =
        sqlx::query_as("SELECT value FROM settings WHERE key = 'global_rules'")
            .fetch_optional(&mut *conn)
            .await?;
    let revocations = rows::<RevocationRow>(conn, "revocations", "revoked_at", "id").await?;
    let sidecars = rows::<SidecarRow>(conn, "sidecars", "name", "name").await?;
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

/// The id and certificate (PEM) of the credential named `name`, if there is one.
pub async fn credential_by_name(
    tx: &mut SqliteConnection,
    name: &str,
) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT id, cert_pem FROM credentials WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
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
