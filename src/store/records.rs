//! The CA's records: revocations, issued certificates and enrollment tokens.

use super::*;

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
