//! The built-in CA: a root and an intermediate, keys encrypted at rest with a passphrase; it
//! signs CSRs and issues certificates by profile (client, server, SPIFFE workload) with short
//! default lifetimes capped by the issuer's own expiry, and signs CRLs.
//!
//! Key files are PEM `SYMBOLON ENCRYPTED PRIVATE KEY`: PKCS#8 sealed with AES-256-GCM under a key
//! derived from the passphrase with PBKDF2-HMAC-SHA256 (600,000 iterations, random salt).

mod keys;
mod request;

use std::fs;
use std::path::{Path, PathBuf};

pub use keys::{Sealer, decrypt_key, encrypt_key, is_sealed};
use keys::{pem_block, write_private};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
pub use request::{Csr, Grant, Sans, Template, check_spiffe_id, parse_csr};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::pki::CertInfo;

/// What went wrong with the CA, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}. Fix: check the CA directory and its permissions")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} already holds a CA. Fix: choose another --dir, or remove it on purpose")]
    Exists(PathBuf),
    #[error("no CA in {0}. Fix: run `symbolon ca init --dir {0}` first")]
    Missing(PathBuf),
    #[error("the CA key cannot be decrypted: wrong passphrase or a damaged key file ({0})")]
    Decrypt(PathBuf),
    #[error(
        "the CA passphrase is empty. Fix: set SYMBOLON_CA_PASSPHRASE or pass --passphrase-file"
    )]
    NoPassphrase,
    #[error("unknown key algorithm '{0}'. Fix: use p256 (default), p384, ed25519 or rsa2048")]
    Algorithm(String),
    #[error("the CSR is not valid: {0}. Fix: create it with `openssl req -new -key KEY -out CSR`")]
    Csr(String),
    #[error("certificate error: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Certificate profiles.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// clientAuth; default lifetime 24 h.
    Client,
    /// serverAuth; default lifetime 90 days.
    Server,
    /// clientAuth + serverAuth with a SPIFFE ID; default lifetime 24 h.
    Spiffe,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "client" => Ok(Profile::Client),
            "server" => Ok(Profile::Server),
            "spiffe" => Ok(Profile::Spiffe),
            other => Err(format!(
                "profile '{other}' must be client, server or spiffe"
            )),
        }
    }
}

impl Profile {
    /// The extended key usages of the profile.
    pub fn ekus(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Profile::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Profile::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Profile::Spiffe => vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Client => "client",
            Profile::Server => "server",
            Profile::Spiffe => "spiffe",
        }
    }

    pub fn default_lifetime(self) -> Duration {
        match self {
            Profile::Client | Profile::Spiffe => Duration::hours(24),
            Profile::Server => Duration::days(90),
        }
    }
}

fn algorithm(name: &str) -> Result<&'static rcgen::SignatureAlgorithm, CaError> {
    Ok(match name {
        "p256" | "ecdsa-p256" => &rcgen::PKCS_ECDSA_P256_SHA256,
        "p384" | "ecdsa-p384" => &rcgen::PKCS_ECDSA_P384_SHA384,
        "ed25519" => &rcgen::PKCS_ED25519,
        "rsa2048" | "rsa" => &rcgen::PKCS_RSA_SHA256,
        other => return Err(CaError::Algorithm(other.into())),
    })
}

fn write_public(path: &Path, text: &str) -> Result<(), CaError> {
    fs::write(path, text).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

// === the CA ===

/// Where `ca init` put things.
pub struct InitReport {
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
    pub intermediate_cert: PathBuf,
    pub intermediate_key: PathBuf,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Symbolon CA");
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(cn: &str, lifetime: Duration, path_len: u8) -> Result<CertificateParams, CaError> {
    let now = OffsetDateTime::now_utc();
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + lifetime;
    Ok(p)
}

/// Creates a root (10 years) and an intermediate (5 years) in `dir`. With `root_key_out`, the
/// root key is written there instead (an offline root: move that file off the machine).
pub fn init(
    dir: &Path,
    alg: &str,
    passphrase: &[u8],
    root_key_out: Option<&Path>,
) -> Result<InitReport, CaError> {
    if passphrase.is_empty() {
        return Err(CaError::NoPassphrase);
    }
    let alg = algorithm(alg)?;
    if dir.join("intermediate.pem").exists() {
        return Err(CaError::Exists(dir.to_owned()));
    }
    crate::pki::private_dir(dir).map_err(|source| CaError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let root_key = KeyPair::generate_for(alg)?;
    let root_params = ca_params("Symbolon Root CA", Duration::days(3650), 1)?;
    let root_cert = root_params.self_signed(&root_key)?;
    let root_issuer = Issuer::new(root_params, root_key);
    let int_key = KeyPair::generate_for(alg)?;
    let int_params = ca_params("Symbolon Intermediate CA", Duration::days(1825), 0)?;
    let int_cert = int_params.signed_by(&int_key, &root_issuer)?;
    let report = InitReport {
        root_cert: dir.join("root.pem"),
        root_key: root_key_out
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("root.key")),
        intermediate_cert: dir.join("intermediate.pem"),
        intermediate_key: dir.join("intermediate.key"),
    };
    write_public(&report.root_cert, &root_cert.pem())?;
    write_private(
        &report.root_key,
        &encrypt_key(&root_issuer.key().serialize_der(), passphrase)?,
    )?;
    write_public(&report.intermediate_cert, &int_cert.pem())?;
    write_private(
        &report.intermediate_key,
        &encrypt_key(&int_key.serialize_der(), passphrase)?,
    )?;
    Ok(report)
}

/// A loaded CA: the intermediate that signs, and the chain to hand out.
/// Issued certificates start this many seconds in the past, for clients whose clocks lag.
pub const BACKDATE_SECS: i64 = 60;

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Put into issued certificates as their CRL Distribution Point (`[ca] crl_url`).
    crl_url: Option<String>,
    intermediate: CertificateDer<'static>,
    root: CertificateDer<'static>,
    not_after: OffsetDateTime,
}

/// An issued certificate.
pub struct Issued {
    pub der: CertificateDer<'static>,
    /// The certificate followed by the intermediate.
    pub chain_pem: String,
    pub info: CertInfo,
}

impl Ca {
    /// Loads the CA from `dir`, decrypting the intermediate key with the passphrase.
    pub fn load(dir: &Path, passphrase: &[u8]) -> Result<Self, CaError> {
        let int_path = dir.join("intermediate.pem");
        if !int_path.exists() {
            return Err(CaError::Missing(dir.to_owned()));
        }
        let intermediate = first_cert(&read(&int_path)?, &int_path)?;
        let root_path = dir.join("root.pem");
        let root = first_cert(&read(&root_path)?, &root_path)?;
        let key_path = dir.join("intermediate.key");
        let pkcs8 = decrypt_key(&read(&key_path)?, passphrase, &key_path)?;
        let key = KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8))
            .map_err(|_| CaError::Decrypt(key_path))?;
        let intermediate_info = CertInfo::parse(&intermediate).map_err(CaError::Invalid)?;
        let not_after = OffsetDateTime::from_unix_timestamp(intermediate_info.not_after)
            .map_err(|e| CaError::Invalid(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_der(&intermediate, key)?;
        Ok(Self {
            issuer,
            crl_url: None,
            intermediate,
            root,
            not_after,
        })
    }

    /// Puts `url` into the certificates issued from now on as their CRL Distribution Point.
    pub fn with_crl_url(mut self, url: Option<String>) -> Self {
        self.crl_url = url;
        self
    }

    pub fn root_der(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// The key that names this CA as an issuer in revocation entries (SHA-256 of the
    /// intermediate's SubjectPublicKeyInfo).
    pub fn issuer_key(&self) -> String {
        crate::tls::verify::spki_key(&self.intermediate).unwrap_or_default()
    }

    /// Whether this CA's intermediate signed a certificate (by signature: another CA with the
    /// same name does not count).
    pub fn signed(&self, cert_der: &[u8]) -> bool {
        crate::pki::signed_by(cert_der, &self.intermediate)
    }

    /// The lifetime asked for (or the profile's default), capped by the intermediate's expiry.
    fn window(
        &self,
        profile: Profile,
        lifetime: Option<Duration>,
    ) -> (OffsetDateTime, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let end = now
            .checked_add(lifetime.unwrap_or(profile.default_lifetime()))
            .unwrap_or(self.not_after);
        (
            now - Duration::seconds(BACKDATE_SECS),
            end.min(self.not_after),
        )
    }

    fn params(&self, t: &Template) -> Result<CertificateParams, CaError> {
        if t.profile == Profile::Spiffe && !t.sans.uris.iter().any(|u| u.starts_with("spiffe://")) {
            return Err(CaError::Invalid(
                "the spiffe profile needs a SPIFFE ID (spiffe://trust-domain/path)".into(),
            ));
        }
        for u in t.sans.uris.iter().filter(|u| u.starts_with("spiffe://")) {
            check_spiffe_id(u).map_err(CaError::Invalid)?;
        }
        let mut p = CertificateParams::default();
        p.distinguished_name = t.subject.clone();
        p.subject_alt_names = t.sans.to_rcgen()?;
        let (from, until) = self.window(t.profile, t.lifetime);
        p.not_before = from;
        p.not_after = until;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = t.profile.ekus();
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial)
            .map_err(|_| CaError::Invalid("the RNG failed".into()))?;
        serial[0] &= 0x7f;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.use_authority_key_identifier_extension = true;
        if let Some(url) = &self.crl_url {
            p.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        Ok(p)
    }

    fn finish(&self, der: CertificateDer<'static>) -> Result<Issued, CaError> {
        let info = CertInfo::parse(&der).map_err(CaError::Invalid)?;
        let chain_pem = format!(
            "{}{}",
            pem_block("CERTIFICATE", &der),
            pem_block("CERTIFICATE", &self.intermediate)
        );
        Ok(Issued {
            der,
            chain_pem,
            info,
        })
    }

    /// Signs the key of a verified CSR with the names of `t` (never the CSR's own extensions).
    pub fn sign(&self, csr: &Csr, t: &Template) -> Result<Issued, CaError> {
        let key = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)
            .map_err(|e| CaError::Csr(format!("its key cannot be used: {e}")))?;
        let cert = self.params(t)?.signed_by(&key, &self.issuer)?;
        self.finish(cert.der().clone())
    }

    /// Generates a key and a certificate. Returns the certificate and the key.
    pub fn issue(&self, t: &Template) -> Result<(Issued, KeyPair), CaError> {
        let key = KeyPair::generate()?;
        let cert = self.params(t)?.signed_by(&key, &self.issuer)?;
        Ok((self.finish(cert.der().clone())?, key))
    }

    /// What renewing `current` issues: the same subject and SANs, the profile it was issued
    /// with, and the same lifetime.
    pub fn renewal(
        &self,
        current: &CertInfo,
        der: &[u8],
        profile: Profile,
    ) -> Result<Template, CaError> {
        let (subject, sans) = request::names_of(der)?;
        let lifetime =
            Duration::seconds((current.not_after - current.not_before - BACKDATE_SECS).max(1));
        Ok(Template {
            subject,
            sans,
            profile,
            lifetime: Some(lifetime),
        })
    }

    /// A CRL of the given (serial hex, revoked at, reason) entries, valid for `valid_for`.
    pub fn crl(
        &self,
        revoked: &[(String, OffsetDateTime, String)],
        crl_number: u64,
        valid_for: Duration,
    ) -> Result<Vec<u8>, CaError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .filter_map(|(serial, at, reason)| {
                let bytes = hex_bytes(serial)?;
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: *at,
                    reason_code: reason_code(reason),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + valid_for,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}

fn first_cert(pem: &str, path: &Path) -> Result<CertificateDer<'static>, CaError> {
    crate::pki::parse_certs(pem.as_bytes(), path)
        .map_err(|e| CaError::Invalid(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| CaError::Invalid(format!("{} holds no certificate", path.display())))
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let h = crate::revocation::normalize_serial(s);
    let h = if h.len() % 2 == 1 { format!("0{h}") } else { h };
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

fn reason_code(r: &str) -> Option<RevocationReason> {
    Some(match r {
        "keyCompromise" => RevocationReason::KeyCompromise,
        "cACompromise" => RevocationReason::CaCompromise,
        "affiliationChanged" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessationOfOperation" => RevocationReason::CessationOfOperation,
        "certificateHold" => RevocationReason::CertificateHold,
        "privilegeWithdrawn" => RevocationReason::PrivilegeWithdrawn,
        "aACompromise" => RevocationReason::AaCompromise,
        _ => return None,
    })
}

/// PEM of a CRL.
pub fn crl_pem(der: &[u8]) -> String {
    pem_block("X509 CRL", der)
}

/// A lifetime such as `24h` or `90d`.
pub fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let d = crate::config::LIFETIME.parse(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "lifetime: '{s}' is not a whole number of seconds (certificates count in seconds)"
        ));
    }
    Ok(Duration::seconds(d.as_secs() as i64))
}

/// The CA passphrase: from a file, else from `SYMBOLON_CA_PASSPHRASE`.
pub fn passphrase(file: Option<&Path>) -> Result<Vec<u8>, CaError> {
    let p = match file {
        Some(f) => read(f)?.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
        None => std::env::var("SYMBOLON_CA_PASSPHRASE")
            .unwrap_or_default()
            .into_bytes(),
    };
    if p.is_empty() {
        return Err(CaError::NoPassphrase);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_passphrase() {
        let sealed = encrypt_key(b"pkcs8 bytes", b"correct horse").unwrap();
        assert!(sealed.starts_with("-----BEGIN SYMBOLON ENCRYPTED PRIVATE KEY-----"));
        assert!(is_sealed(&sealed));
        assert_eq!(
            decrypt_key(&sealed, b"correct horse", Path::new("k")).unwrap(),
            b"pkcs8 bytes"
        );
        assert!(matches!(
            decrypt_key(&sealed, b"wrong", Path::new("k")),
            Err(CaError::Decrypt(_))
        ));
        assert!(matches!(encrypt_key(b"x", b""), Err(CaError::NoPassphrase)));
    }
}
