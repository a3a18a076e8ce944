//! The built-in CA: a root and an intermediate, keys encrypted at rest with a passphrase; it
//! signs CSRs and issues certificates by profile (client, server, SPIFFE workload) with short
//! default lifetimes capped by the issuer's own expiry, and signs CRLs.
//!
//! Key files are PEM `SYMBOLON ENCRYPTED PRIVATE KEY`: PKCS#8 sealed with AES-256-GCM under a key
//! derived from the passphrase with PBKDF2-HMAC-SHA256 (600,000 iterations, random salt).

use std::fs;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::pki::{CertInfo, rfc3339};

const PBKDF2_ITERATIONS: u32 = 600_000;
const ENC_LABEL: &str = "SYMBOLON ENCRYPTED PRIVATE KEY";

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

// === encrypted keys ===

fn derive(passphrase: &[u8], salt: &[u8], iterations: u32) -> Result<LessSafeKey, CaError> {
    let mut key = [0u8; 32];
    let iters = NonZeroU32::new(iterations)
        .ok_or_else(|| CaError::Invalid("bad iteration count".into()))?;
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        iters,
        salt,
        passphrase,
        &mut key,
    );
    let unbound = UnboundKey::new(&AES_256_GCM, &key)
        .map_err(|_| CaError::Invalid("cannot create the AES key".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// Seals a PKCS#8 key with the passphrase.
pub fn encrypt_key(pkcs8: &[u8], passphrase: &[u8]) -> Result<String, CaError> {
    if passphrase.is_empty() {
        return Err(CaError::NoPassphrase);
    }
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| CaError::Invalid("the RNG failed".into()))?;
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CaError::Invalid("the RNG failed".into()))?;
    let key = derive(passphrase, &salt, PBKDF2_ITERATIONS)?;
    let mut sealed = pkcs8.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(ENC_LABEL.as_bytes()),
        &mut sealed,
    )
    .map_err(|_| CaError::Invalid("encryption failed".into()))?;
    let mut blob = Vec::with_capacity(32 + sealed.len());
    blob.extend_from_slice(&salt);
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&PBKDF2_ITERATIONS.to_be_bytes());
    blob.extend_from_slice(&sealed);
    Ok(pem_block(ENC_LABEL, &blob))
}

/// A PEM block: base64 in 64-character lines between BEGIN and END lines.
fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Opens a sealed key.
pub fn decrypt_key(pem: &str, passphrase: &[u8], path: &Path) -> Result<Vec<u8>, CaError> {
    let bad = || CaError::Decrypt(path.to_owned());
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let blob = STANDARD.decode(body).map_err(|_| bad())?;
    if blob.len() < 32 + 16 {
        return Err(bad());
    }
    let (salt, rest) = blob.split_at(16);
    let (nonce, rest) = rest.split_at(12);
    let (iters, sealed) = rest.split_at(4);
    let iterations = u32::from_be_bytes([iters[0], iters[1], iters[2], iters[3]]);
    let key = derive(passphrase, salt, iterations)?;
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| bad())?;
    let mut buf = sealed.to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(ENC_LABEL.as_bytes()),
            &mut buf,
        )
        .map_err(|_| bad())?;
    Ok(plain.to_vec())
}

fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
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
    fs::create_dir_all(dir).map_err(|source| CaError::Io {
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
            intermediate,
            root,
            not_after,
        })
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
        let end = now + lifetime.unwrap_or(profile.default_lifetime());
        (
            now - Duration::seconds(BACKDATE_SECS),
            end.min(self.not_after),
        )
    }

    fn apply_profile(
        &self,
        p: &mut CertificateParams,
        profile: Profile,
        lifetime: Option<Duration>,
    ) -> Result<(), CaError> {
        let (from, until) = self.window(profile, lifetime);
        p.not_before = from;
        p.not_after = until;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = match profile {
            Profile::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Profile::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Profile::Spiffe => vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        };
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial)
            .map_err(|_| CaError::Invalid("the RNG failed".into()))?;
        serial[0] &= 0x7f;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.use_authority_key_identifier_extension = true;
        if profile == Profile::Spiffe
            && !p
                .subject_alt_names
                .iter()
                .any(|s| matches!(s, SanType::URI(u) if u.as_str().starts_with("spiffe://")))
        {
            return Err(CaError::Invalid(
                "the spiffe profile needs a SPIFFE ID (spiffe://trust-domain/path)".into(),
            ));
        }
        Ok(())
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

    /// Signs a CSR (its signature is checked). The subject and SANs come from the CSR; the
    /// profile decides usage and lifetime.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        profile: Profile,
        lifetime: Option<Duration>,
    ) -> Result<Issued, CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::Csr(e.to_string()))?;
        self.apply_profile(&mut csr.params, profile, lifetime)?;
        let cert = csr.signed_by(&self.issuer)?;
        self.finish(cert.der().clone())
    }

    /// Generates a key and a certificate. Returns the certificate and the key (PKCS#8 PEM).
    pub fn issue(
        &self,
        name: &str,
        spiffe_id: Option<&str>,
        dns: &[String],
        profile: Profile,
        lifetime: Option<Duration>,
    ) -> Result<(Issued, KeyPair), CaError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(dns.to_vec())?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        if let Some(id) = spiffe_id {
            if !id.starts_with("spiffe://") {
                return Err(CaError::Invalid(format!(
                    "'{id}' is not a SPIFFE ID (spiffe://trust-domain/path)"
                )));
            }
            p.subject_alt_names.push(SanType::URI(id.try_into()?));
        }
        self.apply_profile(&mut p, profile, lifetime)?;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok((self.finish(cert.der().clone())?, key))
    }

    /// Renews `current` (a certificate this CA issued, presented over mTLS): same subject and
    /// SANs, the public key of the CSR (so the client may rotate its key), a fresh lifetime.
    pub fn renew(
        &self,
        current_der: &[u8],
        csr_pem: &str,
        profile: Profile,
        lifetime: Option<Duration>,
    ) -> Result<Issued, CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::Csr(e.to_string()))?;
        let (dn, sans) = identity_of(current_der)?;
        csr.params.distinguished_name = dn;
        csr.params.subject_alt_names = sans;
        self.apply_profile(&mut csr.params, profile, lifetime)?;
        let cert = csr.signed_by(&self.issuer)?;
        self.finish(cert.der().clone())
    }

    /// The store record of an issued certificate.
    pub fn record(issued: &Issued, profile: Profile, via: &str) -> crate::store::IssuedRow {
        let i = &issued.info;
        let sans: Vec<&str> = i
            .dns_sans
            .iter()
            .chain(&i.uri_sans)
            .chain(&i.email_sans)
            .map(String::as_str)
            .collect();
        crate::store::IssuedRow {
            serial: crate::revocation::normalize_serial(&i.serial_hex),
            fingerprint: i.fingerprint_sha256.clone(),
            subject: i.subject.clone(),
            sans: sans.join(","),
            profile: format!("{profile:?}").to_lowercase(),
            not_after: rfc3339(i.not_after),
            issued_at: crate::store::now(),
            via: via.into(),
        }
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

/// The subject (CN, O, OU) and SANs (DNS, URI, email) of a certificate, to renew it as is.
fn identity_of(der: &[u8]) -> Result<(DistinguishedName, Vec<SanType>), CaError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CaError::Invalid(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    for cn in cert.subject().iter_organization() {
        if let Ok(v) = cn.as_str() {
            dn.push(DnType::OrganizationName, v);
        }
    }
    for ou in cert.subject().iter_organizational_unit() {
        if let Ok(v) = ou.as_str() {
            dn.push(DnType::OrganizationalUnitName, v);
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(v) = cn.as_str() {
            dn.push(DnType::CommonName, v);
        }
    }
    let info = CertInfo::parse(der).map_err(CaError::Invalid)?;
    let mut sans = Vec::new();
    for d in &info.dns_sans {
        sans.push(SanType::DnsName(d.as_str().try_into()?));
    }
    for u in &info.uri_sans {
        sans.push(SanType::URI(u.as_str().try_into()?));
    }
    for e in &info.email_sans {
        sans.push(SanType::Rfc822Name(e.as_str().try_into()?));
    }
    Ok((dn, sans))
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
    crate::config::parse_duration(s).map(|d| Duration::seconds(d.as_secs() as i64))
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
