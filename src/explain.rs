//! Certificates in plain language: `symbolon cert inspect` describes them, and the verify
//! explanation says whether a domain would accept a client certificate and exactly why not.

use rustls::pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};

use crate::pki::{CertInfo, rfc3339};
use crate::snapshot::Domain;
use crate::tls::{FailReason, Mode};

/// "valid for another 12 days (until …)", "expired 3 days ago (not after …)",
/// "not valid yet: starts in 2 days (not before …)".
pub fn validity(info: &CertInfo, now: i64) -> String {
    if info.not_after < now {
        format!(
            "expired {} ago (not after {})",
            crate::duration::span(now - info.not_after),
            rfc3339(info.not_after)
        )
    } else if info.not_before > now {
        format!(
            "not valid yet: starts in {} (not before {})",
            crate::duration::span(info.not_before - now),
            rfc3339(info.not_before)
        )
    } else {
        format!(
            "valid for another {} (until {})",
            crate::duration::span(info.not_after - now),
            rfc3339(info.not_after)
        )
    }
}

/// A multi-line description of one certificate.
pub fn describe(info: &CertInfo, now: i64) -> String {
    let mut out = vec![
        format!("subject:      {}", info.subject),
        format!("issuer:       {}", info.issuer),
        format!("validity:     {}", validity(info, now)),
        format!(
            "kind:         {}",
            if info.is_ca {
                "CA certificate (can issue certificates)"
            } else {
                "end-entity certificate"
            }
        ),
        format!("key:          {}", info.key_type),
    ];
    let usage = match &info.eku {
        None => "any (no extended key usage extension)".to_string(),
        Some(e) if e.is_empty() => "none".to_string(),
        Some(e) => e.join(", "),
    };
    out.push(format!("usage:        {usage}"));
    if let Some(id) = &info.spiffe_id {
        out.push(format!("SPIFFE ID:    {id}"));
    }
    for d in &info.dns_sans {
        out.push(format!("DNS name:     {d}"));
    }
    for u in info
        .uri_sans
        .iter()
        .filter(|u| Some(*u) != info.spiffe_id.as_ref())
    {
        out.push(format!("URI:          {u}"));
    }
    for e in &info.email_sans {
        out.push(format!("email:        {e}"));
    }
    out.push(format!("serial:       {}", info.serial_hex));
    out.push(format!("SHA-256:      {}", info.fingerprint_sha256));
    out.join("\n")
}

/// Whether a domain would accept a client certificate chain, and why not.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Explanation {
    pub domain: String,
    /// The domain's mode: require, optional or off.
    pub mode: String,
    /// The chain verifies against the domain's trust.
    pub verified: bool,
    /// A client presenting it would get a connection (always true in optional and off mode).
    pub would_connect: bool,
    /// `SUCCESS` or `FAILED:<reason>`, as `X-Client-Verify` would say.
    pub verdict: String,
    /// Why not, in plain language.
    pub reason: Option<String>,
}

/// Explains the verdict of `domain` on `chain` (leaf first) at `now`.
pub fn explain(
    domain: &Domain,
    chain: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<Explanation, String> {
    let (leaf_der, rest) = chain.split_first().ok_or("no certificate given")?;
    let leaf =
        CertInfo::parse(leaf_der).map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let result = domain.verifier.check(leaf_der, rest, now).map(|_| ());
    let secs = now.as_secs() as i64;
    let reason = result
        .err()
        .map(|r| reason_text(r, domain, leaf_der, &leaf, rest, secs));
    let verified = reason.is_none();
    Ok(Explanation {
        domain: domain.name.clone(),
        mode: domain.mode.to_string(),
        verified,
        would_connect: verified || domain.mode != Mode::Require,
        verdict: match result {
            Ok(()) => "SUCCESS".into(),
            Err(r) => format!("FAILED:{r}"),
        },
        reason,
    })
}

fn reason_text(
    r: FailReason,
    domain: &Domain,
    leaf_der: &CertificateDer<'_>,
    leaf: &CertInfo,
    rest: &[CertificateDer<'_>],
    now: i64,
) -> String {
    let others: Vec<CertInfo> = rest
        .iter()
        .filter_map(|c| CertInfo::parse(c).ok())
        .collect();
    match r {
        FailReason::Expired => std::iter::once(leaf)
            .chain(&others)
            .find(|c| c.not_after < now)
            .map(|c| {
                let who = if std::ptr::eq(c, leaf) {
                    String::new()
                } else {
                    format!("intermediate {} ", c.subject)
                };
                format!(
                    "{who}expired {} ago (not after {})",
                    crate::duration::span(now - c.not_after),
                    rfc3339(c.not_after)
                )
            })
            .unwrap_or_else(|| "a certificate in the chain has expired".into()),
        FailReason::NotYetValid => std::iter::once(leaf)
            .chain(&others)
            .find(|c| c.not_before > now)
            .map(|c| {
                format!(
                    "not valid yet: starts in {} (not before {})",
                    crate::duration::span(c.not_before - now),
                    rfc3339(c.not_before)
                )
            })
            .unwrap_or_else(|| "a certificate in the chain is not valid yet".into()),
        FailReason::UnknownCa => {
            let top = others.last().unwrap_or(leaf);
            let bundle = domain
                .bundle_label
                .as_deref()
                .map(|b| format!("in bundle {b}"))
                .unwrap_or_else(|| "trusted: the domain has no trust bundle".into());
            format!("issuer {} is not {bundle}", top.issuer)
        }
        FailReason::WrongUsage => std::iter::once(leaf)
            .chain(&others)
            .find(|c| {
                c.eku
                    .as_ref()
                    .is_some_and(|e| !e.iter().any(|u| u == "clientAuth" || u == "any"))
            })
            .map(|c| {
                let who = if std::ptr::eq(c, leaf) {
                    "the client certificate".to_string()
                } else {
                    format!("CA {}", c.subject)
                };
                let has = c.eku.as_ref().map(|e| e.join(", ")).unwrap_or_default();
                format!("{who} does not allow clientAuth (its extendedKeyUsage allows: {has})")
            })
            .unwrap_or_else(|| "a certificate in the chain does not allow clientAuth".into()),
        FailReason::CaExpired => {
            "the trust anchor the chain leads to is outside its validity period (expired or not yet valid): replace it in the trust bundle".into()
        }
        FailReason::NameConstraint => {
            "a name in the certificate is outside the name constraints of a CA above it".into()
        }
        FailReason::IssuerNotCa => others
            .iter()
            .find(|c| !c.is_ca)
            .map(|c| format!("{} is used as an issuer but is not a CA (no basicConstraints cA=TRUE)", c.subject))
            .unwrap_or_else(|| "a certificate used as an issuer is not a CA (no basicConstraints cA=TRUE)".into()),
        FailReason::ChainTooDeep => format!("chain longer than {}", domain.verifier.max_depth()),
        FailReason::BadSignature => {
            "a signature in the chain does not verify (a forged or corrupted certificate)".into()
        }
        FailReason::Revoked => domain
            .verifier
            .path(leaf_der, rest, UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.max(0) as u64)))
            .ok()
            .and_then(|chain| {
                chain
                    .revoked_in(domain.verifier.revocations())
                    .map(|r| format!("revoked at {} ({})", r.revoked_at, r.reason))
            })
            .unwrap_or_else(|| "revoked (by a CRL of its CA)".into()),
        FailReason::CrlExpired => {
            "a CRL for this chain is past its nextUpdate and the domain's crl_expired policy is reject"
                .into()
        }
        FailReason::BadCertificate => {
            "the certificate is malformed or uses an unsupported algorithm".into()
        }
    }
}
