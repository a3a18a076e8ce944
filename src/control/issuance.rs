//! The built-in CA's issuance policy. Every certificate it issues comes through here, for one
//! of four reasons, each with its own authorization:
//! - **sign** / **issue**: an admin (API or CLI) names what the certificate says;
//! - **enroll**: an enrollment token buys the one identity it was created for ([`Grant`]);
//!   the CSR is checked before the token is spent;
//! - **renew**: the holder of a current, unrevoked certificate this CA issued gets the same
//!   certificate again (subject, SANs, profile, lifetime), once, in the second half of its
//!   lifetime; the new record names its predecessor, and revoking a certificate revokes the
//!   renewals descended from it.
//!
//! Each issuance is recorded (the `issued` table) with an audit entry saying who asked and
//! what was issued, in the transaction that spends the token or checks the lineage.

use serde_json::json;
use sqlx::SqliteConnection;

use super::{Audit, Change, ChangeError, Control};
use crate::ca::{Ca, Grant, Issued, Profile, Template};
use crate::pki::CertInfo;
use crate::shared::{Answer, IssuedCert, Refusal};
use crate::store::{self, IssuedRow};

/// Why the CA refused, with the HTTP status, a stable code and a hint.
#[derive(Debug, thiserror::Error)]
pub enum IssuanceError {
    #[error("the enrollment token is unknown, expired or already used")]
    InvalidToken,
    #[error("{0}")]
    BadCsr(String),
    #[error("{0}")]
    NotAuthorized(String),
    #[error("this certificate was not issued by the built-in CA")]
    NotOurs,
    #[error("this certificate is not in the built-in CA's issued list, so it cannot be renewed")]
    NotRecorded,
    #[error("this certificate is {0}")]
    NotCurrent(&'static str),
    #[error("{0}")]
    Revoked(String),
    #[error("this certificate was already renewed (serial {0})")]
    AlreadyRenewed(String),
    #[error("this certificate may be renewed from {0} (after half of its lifetime)")]
    TooEarly(String, i64),
    #[error("{0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("the store failed: {0}")]
    Store(String),
}

impl From<sqlx::Error> for IssuanceError {
    fn from(e: sqlx::Error) -> Self {
        IssuanceError::Store(e.to_string())
    }
}

impl From<ChangeError> for IssuanceError {
    fn from(e: ChangeError) -> Self {
        IssuanceError::Store(e.to_string())
    }
}

impl From<store::StoreError> for IssuanceError {
    fn from(e: store::StoreError) -> Self {
        IssuanceError::Store(e.to_string())
    }
}

impl IssuanceError {
    /// (HTTP status, code, hint).
    pub fn parts(&self) -> (u16, &'static str, String) {
        use IssuanceError as E;
        match self {
            E::InvalidToken => (
                403,
                "invalid_token",
                "ask the operator for a new token".into(),
            ),
            E::BadCsr(_) => (
                422,
                "bad_csr",
                "send a PEM CSR made with `openssl req -new -key KEY`".into(),
            ),
            E::NotAuthorized(_) => (
                422,
                "not_authorized",
                "ask only for the names the token was created for; the token was not spent".into(),
            ),
            E::NotOurs => (
                403,
                "not_ours",
                "renew it with the CA that issued it".into(),
            ),
            E::NotRecorded => (
                403,
                "not_recorded",
                "enroll again with a token; certificates issued without a store cannot be renewed"
                    .into(),
            ),
            E::NotCurrent(_) => (
                403,
                "certificate_not_current",
                "enroll again with a new token".into(),
            ),
            E::Revoked(_) => (
                403,
                "certificate_revoked",
                "enroll again with a new token".into(),
            ),
            E::AlreadyRenewed(_) => (
                409,
                "already_renewed",
                "renew the newest certificate; each certificate renews once".into(),
            ),
            E::TooEarly(..) => (
                403,
                "too_early",
                "renew in the second half of the certificate's lifetime".into(),
            ),
            E::Ca(_) => (422, "bad_request", "see the message".into()),
            E::Store(_) => (500, "internal", "see the gateway's log".into()),
        }
    }

    /// Seconds until a too-early renewal may be tried (for `Retry-After`).
    pub fn retry_after(&self) -> Option<i64> {
        match self {
            IssuanceError::TooEarly(_, secs) => Some(*secs),
            _ => None,
        }
    }
}

/// Records one issued certificate inside `tx`, and hands back its audit entry (`ca.<via>`,
/// with the serial, subject, SANs, profile, lifetime and predecessor), which the change
/// writes in the same transaction.
pub async fn record(
    tx: &mut SqliteConnection,
    issued: &Issued,
    t: &Template,
    actor: &str,
    via: &str,
    predecessor: Option<&str>,
) -> Result<(IssuedRow, Audit), sqlx::Error> {
    let i = &issued.info;
    let sans: Vec<String> = t
        .sans
        .dns
        .iter()
        .chain(&t.sans.uris)
        .chain(&t.sans.emails)
        .cloned()
        .chain(t.sans.ips.iter().map(ToString::to_string))
        .collect();
    let row = IssuedRow {
        serial: crate::revocation::normalize_serial(&i.serial_hex),
        fingerprint: i.fingerprint_sha256.clone(),
        subject: i.subject.clone(),
        sans: sans.join(","),
        profile: t.profile.name().into(),
        not_after: crate::pki::rfc3339(i.not_after),
        issued_at: store::now(),
        via: via.into(),
        predecessor: predecessor.map(str::to_string),
        actor: actor.into(),
    };
    store::insert_issued(tx, &row).await?;
    let detail = json!({
        "serial": row.serial,
        "subject": row.subject,
        "sans": t.sans.describe(),
        "profile": row.profile,
        "lifetime_secs": i.not_after - i.not_before - crate::ca::BACKDATE_SECS,
        "not_after": row.not_after,
        "predecessor": row.predecessor,
    });
    let audit = Audit::new(actor, format!("ca.{via}"), &row.subject, detail.to_string())
        .issued(&row.serial);
    Ok((row, audit))
}

/// Records a certificate the CLI issued offline (in its own process, so there is no running
/// gateway's change lock to take): the issued row and its audit entry, in one transaction.
pub async fn record_offline(
    store: &store::Store,
    issued: &Issued,
    t: &Template,
    actor: &str,
    via: &str,
) -> Result<(), IssuanceError> {
    let mut tx = store.begin().await?;
    let (_, audit) = record(&mut tx, issued, t, actor, via, None).await?;
    store::insert_audit(
        &mut tx,
        &audit.actor,
        &audit.action,
        &audit.target,
        &audit.detail,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Signs a CSR with the names it asks for, as an admin (`actor`) authorizes them.
pub async fn sign(
    control: &Control,
    ca: &Ca,
    actor: &str,
    csr_pem: &str,
    profile: Profile,
    lifetime: Option<time::Duration>,
) -> Result<Issued, IssuanceError> {
    let csr = crate::ca::parse_csr(csr_pem).map_err(|e| IssuanceError::BadCsr(e.to_string()))?;
    let t = Template::from_csr(&csr, profile, lifetime)
        .map_err(|e| IssuanceError::BadCsr(e.to_string()))?;
    let issued = ca.sign(&csr, &t)?;
    let mut ch = Change::begin(control).await?;
    let (_, audit) = record(&mut ch.tx, &issued, &t, actor, "sign", None).await?;
    ch.commit_records(Some(audit)).await?;
    Ok(issued)
}

/// Enrollment: a token buys the identity it was created for, once.
pub async fn enroll(
    control: &Control,
    ca: &Ca,
    token: &str,
    csr_pem: &str,
) -> Result<Issued, IssuanceError> {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let sha = crate::pki::hex(digest.as_ref());
    let now = crate::pki::unix_now();
    // Unknown tokens are refused by a read, without the change lock or a write transaction.
    let (name, profile, grant_json) = control
        .store()
        .enroll_token(&sha, now)
        .await?
        .ok_or(IssuanceError::InvalidToken)?;
    let grant = match grant_json {
        Some(j) => serde_json::from_str::<Grant>(&j).map_err(|e| {
            IssuanceError::NotAuthorized(format!("the token's grant is unreadable: {e}"))
        })?,
        // Tokens made before grants existed buy CN=<name> and nothing else.
        None => {
            let profile: Profile = profile.parse().unwrap_or(Profile::Client);
            Grant {
                common_name: name.clone(),
                dns_names: Vec::new(),
                ip_addresses: Vec::new(),
                emails: Vec::new(),
                spiffe_id: None,
                profile,
                lifetime_secs: profile.default_lifetime().whole_seconds(),
            }
        }
    };
    // Everything is checked before the token is spent.
    let csr = crate::ca::parse_csr(csr_pem).map_err(|e| IssuanceError::BadCsr(e.to_string()))?;
    let t = grant
        .authorize(&csr)
        .map_err(IssuanceError::NotAuthorized)?;
    let issued = ca.sign(&csr, &t)?;
    let mut ch = Change::begin(control).await?;
    if !store::spend_enroll_token(&mut ch.tx, &sha, now).await? {
        return Err(IssuanceError::InvalidToken);
    }
    let actor = format!("enroll:{name}");
    let (_, audit) = record(&mut ch.tx, &issued, &t, &actor, "enroll", None).await?;
    ch.commit_records(Some(audit)).await?;
    Ok(issued)
}

/// How long the renewal window stays closed: half of the certificate's lifetime, counted from
/// its issue (the CA backdates `not_before` by [`crate::ca::BACKDATE_SECS`]).
pub fn renewable_from(info: &CertInfo) -> i64 {
    let issued = info.not_before + crate::ca::BACKDATE_SECS;
    issued + (info.not_after - issued).max(0) / 2
}

/// Renewal: the holder of `presented` (proved by the TLS handshake) gets it again.
pub async fn renew(
    control: &Control,
    ca: &Ca,
    presented: &[u8],
    csr_pem: &str,
) -> Result<Issued, IssuanceError> {
    if !ca.signed(presented) {
        return Err(IssuanceError::NotOurs);
    }
    let info = CertInfo::parse(presented).map_err(IssuanceError::BadCsr)?;
    let now = crate::pki::unix_now();
    if now < info.not_before {
        return Err(IssuanceError::NotCurrent("not valid yet"));
    }
    if now >= info.not_after {
        return Err(IssuanceError::NotCurrent("expired"));
    }
    let from = renewable_from(&info);
    if now < from {
        return Err(IssuanceError::TooEarly(
            crate::pki::rfc3339(from),
            from - now,
        ));
    }
    let csr = crate::ca::parse_csr(csr_pem).map_err(|e| IssuanceError::BadCsr(e.to_string()))?;
    let issuer = ca.issuer_key();
    let mut ch = Change::begin(control).await?;
    let tx = &mut ch.tx;
    let current = store::issued_by_fingerprint(tx, &info.fingerprint_sha256)
        .await?
        .ok_or(IssuanceError::NotRecorded)?;
    // The certificate and every certificate it descends from must be unrevoked.
    let mut row = current.clone();
    for _ in 0..10_000 {
        if store::is_revoked(tx, &row.fingerprint, &row.serial, &issuer).await? {
            return Err(IssuanceError::Revoked(if row.serial == current.serial {
                "this certificate is revoked".into()
            } else {
                format!(
                    "this certificate renews one that was revoked (serial {})",
                    row.serial
                )
            }));
        }
        match &row.predecessor {
            Some(p) => match store::issued_by_serial(tx, p).await? {
                Some(prev) => row = prev,
                None => break,
            },
            None => break,
        }
    }
    if let Some(next) = store::issued_successors(tx, &current.serial).await?.first() {
        return Err(IssuanceError::AlreadyRenewed(next.serial.clone()));
    }
    let profile: Profile = current.profile.parse().unwrap_or(Profile::Client);
    let t = ca.renewal(&info, presented, profile)?;
    let issued = ca.sign(&csr, &t)?;
    let actor = format!("cert:{}", info.fingerprint_sha256);
    let (_, audit) = record(tx, &issued, &t, &actor, "renew", Some(&current.serial)).await?;
    ch.commit_records(Some(audit)).await?;
    Ok(issued)
}

/// The renewals descended from `serial` (children first, then theirs), for revocation.
pub async fn descendants(
    tx: &mut SqliteConnection,
    serial: &str,
) -> Result<Vec<IssuedRow>, sqlx::Error> {
    let mut out: Vec<IssuedRow> = Vec::new();
    let mut queue = vec![serial.to_string()];
    while let Some(s) = queue.pop() {
        if out.len() > 10_000 {
            break;
        }
        for child in store::issued_successors(tx, &s).await? {
            if out.iter().all(|r| r.serial != child.serial) && child.serial != serial {
                queue.push(child.serial.clone());
                out.push(child);
            }
        }
    }
    Ok(out)
}

/// The data plane's `builtin:ca` endpoints reach the CA through this desk; the store and the
/// CA's key stay here.
impl crate::shared::CaDesk for Control {
    fn available(&self) -> bool {
        self.ca().is_some()
    }

    fn enroll<'a>(&'a self, token: &'a str, csr_pem: &'a str) -> Answer<'a> {
        Box::pin(async move {
            let ca = self.ca().ok_or_else(no_ca)?;
            enroll(self, &ca, token, csr_pem)
                .await
                .map(|i| handed_out(&i))
                .map_err(|e| refusal(&e))
        })
    }

    fn renew<'a>(&'a self, presented: &'a [u8], csr_pem: &'a str) -> Answer<'a> {
        Box::pin(async move {
            let ca = self.ca().ok_or_else(no_ca)?;
            renew(self, &ca, presented, csr_pem)
                .await
                .map(|i| handed_out(&i))
                .map_err(|e| refusal(&e))
        })
    }
}

fn no_ca() -> Refusal {
    Refusal {
        status: 404,
        code: "no_ca",
        message: "this gateway has no built-in CA".into(),
        hint: "add a [ca] section to the config".into(),
        retry_after: None,
    }
}

fn handed_out(issued: &Issued) -> IssuedCert {
    IssuedCert {
        chain_pem: issued.chain_pem.clone(),
        serial: issued.info.serial_hex.clone(),
        not_after: crate::pki::rfc3339(issued.info.not_after),
    }
}

fn refusal(e: &IssuanceError) -> Refusal {
    let (status, code, hint) = e.parts();
    Refusal {
        status,
        code,
        message: e.to_string(),
        hint,
        retry_after: e.retry_after(),
    }
}
