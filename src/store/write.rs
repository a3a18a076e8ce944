//! Writes, each inside the caller's transaction (a [`crate::control::Change`]).

use super::*;

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
