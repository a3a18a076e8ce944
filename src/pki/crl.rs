//! Certificate revocation lists: loading them (PEM or DER), and deciding whether a fetched
//! CRL may replace the one held (signed by a CA of its bundle, no rollback).

use super::*;

/// Checks a fetched CRL (PEM or DER) before it replaces `held`, the copy in use: it must be
/// signed by one of `issuers`, and its crlNumber and thisUpdate must not go back in time (a
/// rollback would un-revoke certificates).
pub fn check_crl_update(
    bytes: &[u8],
    issuers: &[CertificateDer<'_>],
    held: Option<&[u8]>,
) -> Result<(), String> {
    use x509_parser::revocation_list::CertificateRevocationList;
    let new_der = crl_der(bytes)?;
    let (_, crl) =
        CertificateRevocationList::from_der(&new_der).map_err(|e| format!("not a CRL: {e}"))?;
    // What the TLS layer cannot use (an issuing distribution point, a delta CRL…) is refused
    // here, before it is cached: cached, it would fail every reload and start.
    webpki::OwnedCertRevocationList::from_der(&new_der)
        .map_err(|e| format!("the TLS layer cannot use this CRL ({e:?})"))?;
    if let Some(problem) = crl_signature_problem(&crl, issuers) {
        return Err(problem);
    }
    // A fetched CRL comes over plain HTTP: only one its bundle's CA signed is taken (a CRL of
    // an unknown issuer would replace the real one and un-revoke its certificates). An empty
    // or unreadable bundle takes none.
    if named_cas(issuers, crl.issuer()).is_empty() {
        return Err(format!(
            "the CRL names {} as its issuer, which is not a CA of the trust bundle that signed it; a CRL fetched by URL must be signed by a CA of its bundle. Fix: add that CA to the bundle, or give the CRL as a file",
            rfc4514(crl.issuer())
        ));
    }
    let Some(held_der) = held.and_then(|h| crl_der(h).ok()) else {
        return Ok(());
    };
    let Ok((_, old)) = CertificateRevocationList::from_der(&held_der) else {
        return Ok(());
    };
    if old.issuer().as_raw() != crl.issuer().as_raw() && named_cas(issuers, old.issuer()).is_empty()
    {
        // The held CRL's CA left the bundle (a rotation): the new CA's CRL takes its place.
        return Ok(());
    }
    if old.issuer().as_raw() != crl.issuer().as_raw() {
        return Err(format!(
            "the CRL's issuer changed from {} to {}; the held CRL stays in use. Fix: if the URL now serves another CA's CRL on purpose, delete the cached copy",
            rfc4514(old.issuer()),
            rfc4514(crl.issuer())
        ));
    }
    if let (Some(new_n), Some(old_n)) = (crl.crl_number(), old.crl_number())
        && new_n < old_n
    {
        return Err(format!(
            "the CRL's crlNumber {new_n} is lower than the {old_n} already held (a rollback); the held CRL stays in use"
        ));
    }
    if crl.last_update() < old.last_update() {
        return Err(format!(
            "the CRL's thisUpdate {} is older than the {} already held (a rollback); the held CRL stays in use",
            crl.last_update(),
            old.last_update()
        ));
    }
    Ok(())
}

/// The certificates of `bundle` whose subject is `name`.
pub(crate) fn named_cas<'a>(
    bundle: &'a [CertificateDer<'_>],
    name: &x509_parser::x509::X509Name<'_>,
) -> Vec<X509Certificate<'a>> {
    bundle
        .iter()
        .filter_map(|c| X509Certificate::from_der(c).ok().map(|(_, c)| c))
        .filter(|c| c.subject().as_raw() == name.as_raw())
        .collect()
}

/// Why a CRL cannot be trusted, if it cannot: its issuer is a CA of `bundle` (by name) and none
/// of those CAs signed it. A CRL of a CA outside the bundle (an intermediate the clients send) is
/// checked by webpki against that CA when a chain uses it, and fails the chain if forged.
pub(crate) fn crl_signature_problem(
    crl: &x509_parser::revocation_list::CertificateRevocationList<'_>,
    bundle: &[CertificateDer<'_>],
) -> Option<String> {
    let named = named_cas(bundle, crl.issuer());
    if named.is_empty() {
        return None;
    }
    let signed = named.iter().any(|ca| {
        signature_verifies(
            crl.tbs_cert_list.as_ref(),
            &crl.signature_algorithm.algorithm.to_id_string(),
            &crl.signature_value.data,
            ca,
        )
    });
    (!signed).then(|| {
        format!(
            "the CRL names {} as its issuer, but that CA of the trust bundle did not sign it (a forged or foreign CRL). Fix: use the CRL its CA publishes",
            rfc4514(crl.issuer())
        )
    })
}

/// A CRL read from a file (PEM or DER), checked to parse; with its nextUpdate (unix seconds).
pub fn load_crl(
    path: &Path,
    bundle: &[CertificateDer<'_>],
) -> Result<(webpki::CertRevocationList<'static>, Option<i64>), PkiError> {
    let bytes = read_limited(path)?;
    crl_from_bytes(&bytes, path, bundle)
}

/// Every CRL in PEM text (one or more `X509 CRL` blocks); `path` names the origin in errors.
pub fn crls_from_pem(
    text: &str,
    path: &Path,
    bundle: &[CertificateDer<'_>],
) -> Result<Vec<(webpki::CertRevocationList<'static>, Option<i64>)>, PkiError> {
    use rustls::pki_types::CertificateRevocationListDer;
    let mut out = Vec::new();
    for item in CertificateRevocationListDer::pem_slice_iter(text.as_bytes()) {
        let der = item.map_err(|e| PkiError::BadCrl {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        out.push(crl_from_bytes(der.as_ref(), path, bundle)?);
    }
    if out.is_empty() {
        return Err(PkiError::BadCrl {
            path: path.to_owned(),
            detail: "no '-----BEGIN X509 CRL-----' block".into(),
        });
    }
    Ok(out)
}

/// The DER of a CRL given as PEM (its first `X509 CRL` block) or as DER.
pub(crate) fn crl_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use rustls::pki_types::CertificateRevocationListDer;
    if bytes.starts_with(b"-----") || bytes.windows(9).any(|w| w == b"-----BEGI") {
        let der = CertificateRevocationListDer::pem_slice_iter(bytes)
            .next()
            .ok_or("no '-----BEGIN X509 CRL-----' block")?
            .map_err(|e| e.to_string())?;
        Ok(der.as_ref().to_vec())
    } else {
        Ok(bytes.to_vec())
    }
}

/// A CRL from PEM or DER bytes, checked to parse and, when `bundle` holds its issuer, to be
/// signed by it; with its nextUpdate (unix seconds).
pub fn crl_from_bytes(
    bytes: &[u8],
    path: &Path,
    bundle: &[CertificateDer<'_>],
) -> Result<(webpki::CertRevocationList<'static>, Option<i64>), PkiError> {
    let bad = |detail: String| PkiError::BadCrl {
        path: path.to_owned(),
        detail,
    };
    let der = crl_der(bytes).map_err(bad)?;
    let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
        .map_err(|e| bad(e.to_string()))?;
    let next_update = parsed.next_update().map(|t| t.timestamp());
    if let Some(problem) = crl_signature_problem(&parsed, bundle) {
        return Err(bad(problem));
    }
    let crl = webpki::OwnedCertRevocationList::from_der(&der).map_err(|e| bad(format!("{e:?}")))?;
    Ok((webpki::CertRevocationList::Owned(crl), next_update))
}
