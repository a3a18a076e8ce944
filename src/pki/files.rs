//! Certificates, keys and trust bundles from files and PEM text, read with a size cap, and
//! the record of the files a configuration was built from ([`with_files`]).

use super::*;

/// Creates `dir` (and its parents) readable by its owner only (0700): it holds private keys.
/// An existing directory is left as it is (the operator chose it), with a warning when others
/// can read it.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    if dir.is_dir() {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = %format!("{:o}", mode & 0o777), "this directory holds private keys and others can read it; consider chmod 700");
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The files a snapshot build read, by path: kept after a successful reload so that later
/// builds (admin changes) use what was applied, not whatever is on disk now. A broken file
/// waiting for the next reload must not block unrelated admin writes, revocations above all.
pub type FileContents = std::collections::HashMap<std::path::PathBuf, std::sync::Arc<Vec<u8>>>;

thread_local! {
    static FILES: std::cell::RefCell<Option<(FileContents, bool)>> = const { std::cell::RefCell::new(None) };
}

/// Runs `build` (synchronous: it never yields, so the thread-local is its own) reading files
/// from `replay` where they are listed (else from disk); returns what it read.
pub fn with_files<T>(
    replay: Option<&FileContents>,
    build: impl FnOnce() -> T,
) -> (T, FileContents) {
    FILES.with(|f| *f.borrow_mut() = Some((replay.cloned().unwrap_or_default(), replay.is_some())));
    let out = build();
    let read = FILES
        .with(|f| f.borrow_mut().take())
        .map(|(files, _)| files)
        .unwrap_or_default();
    (out, read)
}

pub(crate) fn read_limited(path: &Path) -> Result<Vec<u8>, PkiError> {
    let replayed = FILES.with(|f| {
        f.borrow()
            .as_ref()
            .filter(|(_, replay)| *replay)
            .and_then(|(files, _)| files.get(path).cloned())
    });
    if let Some(bytes) = replayed {
        return Ok(bytes.as_ref().clone());
    }
    let bytes = read_from_disk(path)?;
    FILES.with(|f| {
        if let Some((files, _)) = f.borrow_mut().as_mut() {
            files.insert(path.to_owned(), std::sync::Arc::new(bytes.clone()));
        }
    });
    Ok(bytes)
}

pub(crate) fn read_from_disk(path: &Path) -> Result<Vec<u8>, PkiError> {
    let meta = std::fs::metadata(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(PkiError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
        });
    }
    std::fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads every certificate in a PEM file (a chain or a bundle), checking that each parses.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let bytes = read_limited(path)?;
    parse_certs(&bytes, path)
}

/// The first certificate of a PEM chain, parsed; `None` if there is none or it cannot be read.
pub fn leaf_info(pem: &str) -> Option<CertInfo> {
    let chain = parse_certs(pem.as_bytes(), Path::new("")).ok()?;
    CertInfo::parse(chain.first()?).ok()
}

/// Parses PEM bytes into certificates; `path` only names the source in errors.
pub fn parse_certs(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(bytes) {
        let cert = item.map_err(|e| PkiError::MalformedPem {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        if let Err(detail) = CertInfo::parse(&cert) {
            return Err(PkiError::BadCertificate {
                path: path.to_owned(),
                index: certs.len() + 1,
                detail,
            });
        }
        certs.push(cert);
    }
    if certs.is_empty() {
        if PrivateKeyDer::from_pem_slice(bytes).is_ok() {
            return Err(PkiError::KeyInCertFile {
                path: path.to_owned(),
            });
        }
        return Err(PkiError::NoCertificates {
            path: path.to_owned(),
        });
    }
    if has_unterminated_block(bytes) {
        return Err(PkiError::MalformedPem {
            path: path.to_owned(),
            detail: "a BEGIN line has no matching END line (the file looks truncated)".into(),
        });
    }
    Ok(certs)
}

/// `pem_slice_iter` silently stops at a truncated trailing block; we refuse it instead.
pub(crate) fn has_unterminated_block(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.matches("-----BEGIN ").count() != text.matches("-----END ").count()
}

/// Parses a PEM private key; `path` names its origin in errors.
pub fn parse_key(bytes: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|_| PkiError::NoPrivateKey {
        path: path.to_owned(),
    })
}

/// Reads a private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let bytes = read_limited(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| PkiError::NoPrivateKey {
        path: path.to_owned(),
    })
}

/// Loads a certificate chain and its key and checks that they match.
pub fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, PkiError> {
    let chain = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    certified_key(chain, key, cert_path, key_path)
}

/// Builds a rustls `CertifiedKey`, refusing a key that does not match the leaf certificate.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<CertifiedKey>, PkiError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| PkiError::UnusableKey {
                path: key_path.to_owned(),
                detail: e.to_string(),
            })?;
    let ck = CertifiedKey::new(chain, signing_key);
    match ck.keys_match() {
        Ok(()) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(Arc::new(ck)),
        Err(_) => Err(PkiError::KeyMismatch {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        }),
    }
}

/// A parsed trust bundle: CA certificates that client certificates must chain to.
#[derive(Clone, Debug)]
pub struct TrustBundle {
    pub path: PathBuf,
    pub certs: Vec<CertificateDer<'static>>,
    pub infos: Vec<CertInfo>,
}

/// Refuses a bundle with a CA outside its validity period (for fresh uploads and the admin CA).
pub fn refuse_expired(bundle: &TrustBundle, now: UnixTime) -> Result<(), PkiError> {
    let now = now.as_secs() as i64;
    match bundle
        .infos
        .iter()
        .enumerate()
        .find(|(_, i)| i.not_after < now)
    {
        Some((i, info)) => Err(PkiError::ExpiredCa {
            path: bundle.path.clone(),
            index: i + 1,
            subject: info.subject.clone(),
            not_after: rfc3339(info.not_after),
        }),
        None => Ok(()),
    }
}

/// Logs and counts the expired CAs of a bundle in use (`symbolon_trust_bundle_expired_cas`).
pub fn warn_expired(bundle: &TrustBundle, label: &str, now: UnixTime) {
    let now = now.as_secs() as i64;
    let expired: Vec<&CertInfo> = bundle.infos.iter().filter(|i| i.not_after < now).collect();
    metrics::gauge!("symbolon_trust_bundle_expired_cas", "bundle" => label.to_string())
        .set(expired.len() as f64);
    for info in expired {
        tracing::error!(bundle = %label, ca = %info.subject, not_after = %rfc3339(info.not_after),
            "a CA in this trust bundle has expired: clients that chain to it are refused (ca_expired) until it is replaced");
    }
}

/// Loads a trust bundle and checks every certificate in it: each must be a CA (expired ones are
/// kept, see [`trust_bundle_from_pem`]).
pub fn load_trust_bundle(path: &Path) -> Result<TrustBundle, PkiError> {
    let bytes = read_limited(path)?;
    trust_bundle_from_pem(&bytes, path)
}

/// Parses and checks a trust bundle given as PEM bytes; `path` names its origin in errors.
pub fn trust_bundle_from_pem(bytes: &[u8], path: &Path) -> Result<TrustBundle, PkiError> {
    let certs = parse_certs(bytes, path)?;
    let mut infos = Vec::with_capacity(certs.len());
    for (i, der) in certs.iter().enumerate() {
        let index = i + 1;
        let info = CertInfo::parse(der).map_err(|detail| PkiError::BadCertificate {
            path: path.to_owned(),
            index,
            detail,
        })?;
        if !info.is_ca {
            return Err(PkiError::NotCa {
                path: path.to_owned(),
                index,
                subject: info.subject,
            });
        }
        // An expired CA is kept: one bad CA must not stop a start or a reload. The verifier
        // checks every anchor's dates at verification time (its clients get `ca_expired`), and
        // `warn_expired` says so in the log and a metric. Fresh uploads use `refuse_expired`.
        if let Err(e) = webpki::anchor_from_trusted_cert(der) {
            return Err(PkiError::BadAnchor {
                path: path.to_owned(),
                index,
                subject: info.subject,
                detail: format!("{e:?}"),
            });
        }
        infos.push(info);
    }
    Ok(TrustBundle {
        path: path.to_owned(),
        certs,
        infos,
    })
}
