//! Sidecar credentials the built-in CA issues: issued at start and on reload for sidecars that
//! ask for one, deleted with their sidecar, and rotated two thirds into their lifetime. Each
//! is a change through [`Change`], recorded and audited.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

use super::{Audit, Change, ChangeError, Control};
use crate::ca::{Ca, Profile};
use crate::config::{Config, SidecarConfig};
use crate::pki;
use crate::routing::{Upstream, parse_upstream};
use crate::snapshot::{Rotation, SnapshotError};
use crate::store::{self, CredentialRow, StoreState};
use sqlx::SqliteConnection;

/// Why a sidecar could not be rotated or set up.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("there is no sidecar named '{0}'")]
    NotFound(String),
    #[error(
        "sidecar '{0}' presents a fixed credential; only a credential issued by the built-in CA (`issue`) is rotated"
    )]
    NotManaged(String),
    #[error(
        "sidecar '{0}' asks for a credential issued by the built-in CA, but the gateway has no CA. Fix: add a [ca] section (symbolon ca init), or name a credential in upstream_tls"
    )]
    NoCa(String),
    #[error(
        "a credential named '{0}' exists that the built-in CA did not issue; the sidecar's issued credential would replace it. Fix: rename or delete that credential, or give the sidecar another name"
    )]
    Taken(String),
    #[error("sidecar '{name}': the CA cannot issue its credential: {detail}")]
    Issue { name: String, detail: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl From<ChangeError> for SidecarError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Store(e) => SidecarError::Store(e),
            ChangeError::Snapshot(e) => SidecarError::Snapshot(e),
        }
    }
}

impl From<sqlx::Error> for SidecarError {
    fn from(e: sqlx::Error) -> Self {
        SidecarError::Store(e.into())
    }
}

/// Checks what can be checked without the store: name, upstream, issue settings.
pub fn check(sc: &SidecarConfig) -> Result<(), String> {
    if sc.name.is_empty()
        || !sc
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "sidecar name '{}' may only use letters, digits, '-', '_' and '.'",
            sc.name
        ));
    }
    let upstream = parse_upstream(&sc.name, &sc.upstream).map_err(|e| e.to_string())?;
    if !matches!(upstream, Upstream::Http { .. }) {
        return Err(format!(
            "sidecar '{}': the upstream must be an http:// or https:// URL, not '{}'",
            sc.name, sc.upstream
        ));
    }
    if (sc.upstream_tls.is_some() || sc.issue.is_some()) && !upstream.is_https() {
        return Err(format!(
            "sidecar '{}': upstream_tls and issue need an https:// upstream, not '{}'",
            sc.name, sc.upstream
        ));
    }
    if let Some(issue) = &sc.issue {
        let lifetime = crate::config::LIFETIME
            .parse(&issue.lifetime)
            .map_err(|e| format!("sidecar '{}': issue.{e}", sc.name))?;
        if lifetime < Duration::from_secs(3) {
            return Err(format!(
                "sidecar '{}': issue.lifetime must be at least 3s",
                sc.name
            ));
        }
        if issue.common_name.trim().is_empty() {
            return Err(format!("sidecar '{}': issue.common_name is empty", sc.name));
        }
        if let Some(id) = &issue.spiffe_id
            && !id.starts_with("spiffe://")
        {
            return Err(format!(
                "sidecar '{}': issue.spiffe_id '{id}' is not a SPIFFE ID (spiffe://trust-domain/path)",
                sc.name
            ));
        }
        if let Some(t) = &sc.upstream_tls
            && (t.credential.is_some() || t.cert_file.is_some())
        {
            return Err(format!(
                "sidecar '{}': use either issue (a credential from the built-in CA) or a credential in upstream_tls, not both",
                sc.name
            ));
        }
    }
    Ok(())
}

/// Issues (or re-issues) a sidecar's credential into the store, inside `tx`; the certificate
/// is recorded, and its audit entry (naming `actor`) handed back for the change to write.
pub(crate) async fn issue_credential(
    tx: &mut SqliteConnection,
    ca: Option<&Ca>,
    sc: &SidecarConfig,
    actor: &str,
    sealer: Option<&crate::ca::Sealer>,
) -> Result<(store::IssuedRow, Audit), SidecarError> {
    let spec = sc
        .issue
        .as_ref()
        .ok_or_else(|| SidecarError::NotManaged(sc.name.clone()))?;
    let ca = ca.ok_or_else(|| SidecarError::NoCa(sc.name.clone()))?;
    let issue_err = |detail: String| SidecarError::Issue {
        name: sc.name.clone(),
        detail,
    };
    let lifetime = crate::ca::parse_lifetime(&spec.lifetime).map_err(issue_err)?;
    let profile = if spec.spiffe_id.is_some() {
        Profile::Spiffe
    } else {
        Profile::Client
    };
    let sans = crate::ca::Sans {
        uris: spec.spiffe_id.iter().cloned().collect(),
        ..Default::default()
    };
    let t = crate::ca::Template::common_name(&spec.common_name, sans, profile, Some(lifetime));
    let name = sc.credential_name();
    let existing = store::credential_by_name(tx, &name).await?;
    // Only a credential this CA issued is replaced: an uploaded one of that name (presented by
    // a route, say) would silently become another identity upstream.
    if let Some((_, cert_pem)) = &existing
        && !pki::parse_certs(cert_pem.as_bytes(), std::path::Path::new("credential"))
            .ok()
            .and_then(|certs| certs.into_iter().next())
            .is_some_and(|der| ca.signed(&der))
    {
        return Err(SidecarError::Taken(name));
    }
    let (issued, key) = ca.issue(&t).map_err(|e| issue_err(e.to_string()))?;
    let existing = existing.map(|(id, _)| id);
    let row = CredentialRow {
        id: existing.clone().unwrap_or_else(store::new_id),
        name,
        cert_pem: issued.chain_pem.clone(),
        key_pem: key.serialize_pem(),
        created_at: store::now(),
    };
    if existing.is_some() {
        store::update_credential(tx, &row, sealer).await?;
    } else {
        store::insert_credential(tx, &row, sealer).await?;
    }
    Ok(super::issuance::record(tx, &issued, &t, actor, "sidecar", None).await?)
}

/// Whether a credential carries the common name and SPIFFE ID that `spec` asks for.
fn issued_for(c: &CredentialRow, spec: &crate::config::IssueSpec) -> bool {
    pki::leaf_info(&c.cert_pem).is_some_and(|info| {
        info.subject == format!("CN={}", spec.common_name) && info.spiffe_id == spec.spiffe_id
    })
}

/// Issues the credentials of sidecars that ask for one and have none yet (or one issued for
/// another name), and deletes those of
/// sidecars removed from the config file (at start and on reload, before the snapshot is
/// built), in the change `ch`: nothing is written if one of them fails.
pub(super) async fn ensure(
    config: &Config,
    ch: &mut Change<'_>,
    current: &StoreState,
    ca: Option<&Ca>,
) -> Result<(), SidecarError> {
    let mut wanted: Vec<SidecarConfig> = config.sidecars.clone();
    wanted.extend(current.sidecars.iter().map(|row| row.spec.clone()));
    // Credentials of sidecars removed from the config file: issued by this CA, named after a
    // sidecar that no longer exists, and presented by no route.
    let orphans: Vec<&CredentialRow> = current
        .credentials
        .iter()
        .filter(|c| c.name.starts_with("sidecar-"))
        .filter(|c| {
            !wanted
                .iter()
                .any(|sc| sc.issue.is_some() && sc.credential_name() == c.name)
        })
        .filter(|c| {
            !current
                .routes
                .iter()
                .any(|r| r.credential_id.as_deref() == Some(c.id.as_str()))
                && !config.routes.iter().any(|r| {
                    r.upstream_tls
                        .as_ref()
                        .and_then(|t| t.credential.as_deref())
                        == Some(c.name.as_str())
                })
        })
        .filter(|c| {
            ca.is_some_and(|ca| {
                pki::parse_certs(c.cert_pem.as_bytes(), std::path::Path::new("credential"))
                    .ok()
                    .and_then(|certs| certs.into_iter().next())
                    .is_some_and(|der| ca.signed(&der))
            })
        })
        .collect();
    // Missing, or issued for another name (the config file's `issue` changed).
    let missing: Vec<&SidecarConfig> = wanted
        .iter()
        .filter(|sc| {
            let Some(spec) = &sc.issue else { return false };
            let name = sc.credential_name();
            !current
                .credentials
                .iter()
                .any(|c| c.name == name && issued_for(c, spec))
        })
        .collect();
    for c in &orphans {
        store::delete_row(&mut ch.tx, store::Table::Credentials, &c.id).await?;
        ch.audit(Audit::new(
            "sidecar",
            "credential.delete",
            &c.name,
            "its sidecar was removed from the config file",
        ))
        .await?;
    }
    for sc in &missing {
        check(sc).map_err(|detail| SidecarError::Issue {
            name: sc.name.clone(),
            detail,
        })?;
        let sealer = ch.control().store.sealer();
        let (_, issued) =
            issue_credential(&mut ch.tx, ca, sc, &format!("sidecar:{}", sc.name), sealer).await?;
        ch.audit(issued).await?;
        ch.audit(Audit::new(
            "sidecar",
            "credential.issue",
            sc.credential_name(),
            "",
        ))
        .await?;
    }
    Ok(())
}

/// Replaces a sidecar's issued credential now and publishes the change.
pub async fn rotate(control: &Control, name: &str, actor: &str) -> Result<Rotation, SidecarError> {
    let mut ch = Change::begin(control).await?;
    let snapshot = control.shared.snapshot();
    let sc = snapshot
        .sidecars
        .get(name)
        .ok_or_else(|| SidecarError::NotFound(name.into()))?;
    let (record, issued) = issue_credential(
        &mut ch.tx,
        control.ca().as_deref(),
        &sc.config,
        actor,
        control.store.sealer(),
    )
    .await?;
    ch.audit(issued).await?;
    let next = ch
        .commit(Audit::new(
            actor,
            "credential.rotate",
            sc.config.credential_name(),
            format!("serial {}", record.serial),
        ))
        .await?;
    let rotation = next
        .sidecars
        .get(name)
        .and_then(|s| s.rotation.clone())
        .ok_or_else(|| SidecarError::NotManaged(name.into()))?;
    metrics::counter!("symbolon_sidecar_rotations_total", "sidecar" => name.to_string(), "result" => "ok").increment(1);
    // The audit line is the change's; this one tells when the new credential is due.
    info!(actor, sidecar = name, serial = %rotation.serial, not_after = %rotation.not_after, rotate_at = %rotation.rotate_at, "sidecar credential rotated");
    Ok(rotation)
}

/// Rotates issued credentials when they are due; retries a failed rotation every 5 s.
pub(super) async fn rotate_when_due(control: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = control.shared.subscribe();
    let mut retry_at: HashMap<String, i64> = HashMap::new();
    loop {
        let snapshot = control.shared.snapshot();
        let now = pki::unix_now();
        let mut next = now + 60;
        for (name, sc) in &snapshot.sidecars {
            let Some(r) = &sc.rotation else { continue };
            let due = r
                .rotate_at_unix
                .max(retry_at.get(name).copied().unwrap_or(0));
            if due > now {
                next = next.min(due);
                continue;
            }
            match rotate(&control, name, "rotation").await {
                Ok(_) => {
                    retry_at.remove(name);
                }
                Err(e) => {
                    metrics::counter!("symbolon_sidecar_rotations_total", "sidecar" => name.clone(), "result" => "failed").increment(1);
                    error!(sidecar = %name, error = %e, "cannot rotate the sidecar's credential; retrying in 5 s");
                    retry_at.insert(name.clone(), now + 5);
                    next = next.min(now + 5);
                }
            }
        }
        let wait = Duration::from_secs(u64::try_from(next - now).unwrap_or(0).max(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = changes.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}
