//! Pure X.509 helpers: read PEM files with errors that name the file, the problem and the fix;
//! parse certificates into the facts the gateway needs (subject, SANs, SPIFFE ID, validity,
//! CA flag, SHA-256 fingerprint); check that a key matches its certificate.
//!
//! Nothing here does I/O beyond reading the named file, and nothing here panics on input.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

mod crl;
mod files;
mod signature;
pub use crl::*;
pub use files::*;
pub use signature::*;
/// Largest PEM file we read (trust bundles of a few hundred CAs fit easily).
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// A problem with a certificate or key file. Every message names the file, the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "cannot read {path}: {source}. Fix: check that the file exists and is readable by the symbolon user"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is {size} bytes, over the {MAX_PEM_BYTES}-byte limit for PEM files. Fix: point to the PEM file itself, not an archive or a binary"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error(
        "{path} contains a private key where certificates were expected. Fix: give the certificate file here and the key in the `key` setting (never share a private key in a trust bundle)"
    )]
    KeyInCertFile { path: PathBuf },
    #[error(
        "{path} contains no PEM certificate (no '-----BEGIN CERTIFICATE-----' block). Fix: give a PEM-encoded certificate file; convert DER with `openssl x509 -inform der -in FILE -out FILE.pem`"
    )]
    NoCertificates { path: PathBuf },
    #[error(
        "{path} is not valid PEM: {detail}. Fix: check that the file is complete (not truncated) and has matching BEGIN/END lines"
    )]
    MalformedPem { path: PathBuf, detail: String },
    #[error(
        "{path}: certificate #{index} cannot be parsed as X.509: {detail}. Fix: re-export the certificate from its source"
    )]
    BadCertificate {
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error(
        "{path} contains no private key (no '-----BEGIN PRIVATE KEY-----', 'EC PRIVATE KEY' or 'RSA PRIVATE KEY' block). Fix: give the PEM private key that belongs to the certificate"
    )]
    NoPrivateKey { path: PathBuf },
    #[error(
        "{path}: the private key cannot be used: {detail}. Fix: use an ECDSA (P-256/P-384), Ed25519 or RSA key in PKCS#8, SEC1 or PKCS#1 PEM"
    )]
    UnusableKey { path: PathBuf, detail: String },
    #[error(
        "the key in {key_path} does not match the certificate in {cert_path}. Fix: give the key that was used to create this certificate (compare `openssl x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`)"
    )]
    KeyMismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
    #[error(
        "trust bundle {path}: certificate #{index} ({subject}) is not a CA certificate (basicConstraints CA:TRUE is missing). Fix: a trust bundle holds only the root or intermediate CA certificates that issue client certificates, never a client's own certificate"
    )]
    NotCa {
        path: PathBuf,
        index: usize,
        subject: String,
    },
    #[error(
        "trust bundle {path}: CA certificate #{index} ({subject}) expired at {not_after}. Fix: replace it with the CA's current certificate; no client certificate can chain to an expired CA"
    )]
    ExpiredCa {
        path: PathBuf,
        index: usize,
        subject: String,
        not_after: String,
    },
    #[error(
        "CRL {path} cannot be used: {detail}. Fix: give the CA's current CRL, PEM ('-----BEGIN X509 CRL-----') or DER"
    )]
    BadCrl { path: PathBuf, detail: String },
    #[error(
        "trust bundle {path}: certificate #{index} ({subject}) cannot be used as a trust anchor: {detail}"
    )]
    BadAnchor {
        path: PathBuf,
        index: usize,
        subject: String,
        detail: String,
    },
}

/// Facts about one certificate, parsed once.
#[derive(Clone, Debug)]
pub struct CertInfo {
    /// RFC 4514 form (most specific RDN first, special characters escaped), e.g.
    /// `CN=Doe\, John,O=Acme`.
    pub subject: String,
    pub issuer: String,
    /// Every attribute of the subject and issuer as parsed (multi-valued RDNs included), by
    /// short name (`CN`, `O`, `OU`…) or dotted OID. Rules compare these, never the strings.
    /// `None`: a value that is not a well-formed directory string (rules treat it as matching
    /// every deny and no allow).
    pub subject_attrs: Vec<(String, Option<String>)>,
    pub issuer_attrs: Vec<(String, Option<String>)>,
    /// DER of the subject and issuer names (to find a certificate's issuer by name).
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    pub serial_hex: String,
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    pub dns_sans: Vec<String>,
    pub uri_sans: Vec<String>,
    pub email_sans: Vec<String>,
    pub spiffe_id: Option<String>,
    pub fingerprint_sha256: String,
    /// Extended key usages by name; `None` when the certificate has no EKU extension (any use).
    pub eku: Option<Vec<String>>,
    /// "ECDSA P-256", "RSA 2048", "Ed25519"…
    pub key_type: String,
}

impl CertInfo {
    /// Parses a DER certificate. Returns a short description of the problem on failure.
    pub fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let mut dns_sans = Vec::new();
        let mut uri_sans = Vec::new();
        let mut email_sans = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_sans.push((*d).to_string()),
                    GeneralName::URI(u) => uri_sans.push((*u).to_string()),
                    GeneralName::RFC822Name(e) => email_sans.push((*e).to_string()),
                    _ => {}
                }
            }
        }
        let spiffe_id = uri_sans
            .iter()
            .find(|u| u.starts_with("spiffe://"))
            .cloned();
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        let eku = cert.extended_key_usage().ok().flatten().map(|e| {
            let e = &e.value;
            let mut names = Vec::new();
            for (set, name) in [
                (e.any, "any"),
                (e.server_auth, "serverAuth"),
                (e.client_auth, "clientAuth"),
                (e.code_signing, "codeSigning"),
                (e.email_protection, "emailProtection"),
                (e.time_stamping, "timeStamping"),
                (e.ocsp_signing, "OCSPSigning"),
            ] {
                if set {
                    names.push(name.to_string());
                }
            }
            names.extend(e.other.iter().map(|o| o.to_id_string()));
            names
        });
        let key_type = key_type(&cert);
        Ok(Self {
            eku,
            key_type,
            subject: rfc4514(cert.subject()),
            issuer: rfc4514(cert.issuer()),
            subject_attrs: name_attrs(cert.subject()),
            issuer_attrs: name_attrs(cert.issuer()),
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
            serial_hex: cert.raw_serial_as_string(),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca,
            dns_sans,
            uri_sans,
            email_sans,
            spiffe_id,
            fingerprint_sha256: fingerprint_sha256(der),
        })
    }
}

/// The short name of a DN attribute (`CN`, `O`…), or its dotted OID.
fn attr_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "2.5.4.3" => "CN".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        "2.5.4.9" => "STREET".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.11" => "OU".into(),
        "2.5.4.5" => "serialNumber".into(),
        "0.9.2342.19200300.100.1.25" => "DC".into(),
        "0.9.2342.19200300.100.1.1" => "UID".into(),
        "1.2.840.113549.1.9.1" => "emailAddress".into(),
        other => other.to_string(),
    }
}

/// An attribute's value as text: every directory string type decoded (UTF8String,
/// PrintableString, IA5String, VisibleString, NumericString, BMPString as UTF-16,
/// UniversalString as UTF-32, TeletexString as Latin-1, as OpenSSL reads it), so a rule compares
/// the same text however the CA encoded it. `None` for other types.
fn attr_text(atv: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Option<String> {
    let any = atv.attr_value();
    let data = any.as_bytes();
    match any.tag().0 {
        12 => std::str::from_utf8(data).ok().map(str::to_string),
        18 | 19 | 22 | 26 if data.is_ascii() => std::str::from_utf8(data).ok().map(str::to_string),
        30 if data.len() % 2 == 0 => char::decode_utf16(
            data.chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        28 if data.len() % 4 == 0 => data
            .chunks(4)
            .map(|c| {
                let mut b = [0u8; 4];
                b.copy_from_slice(c);
                char::from_u32(u32::from_be_bytes(b))
            })
            .collect(),
        20 => Some(data.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    }
}

/// An attribute's value in RFC 4514 form: escaped text, or `#` and the hex of its whole BER
/// encoding for a non-string type (§2.4).
fn attr_4514(atv: &x509_parser::x509::AttributeTypeAndValue<'_>) -> String {
    match attr_text(atv) {
        Some(t) => escape_dn_value(&t),
        None => {
            let any = atv.attr_value();
            let data = any.as_bytes();
            let mut der = vec![
                any.tag().0 as u8 & 0x1f
                    | (any.header.constructed() as u8) << 5
                    | (any.class() as u8) << 6,
            ];
            match data.len() {
                n if n < 0x80 => der.push(n as u8),
                n => {
                    let bytes: Vec<u8> = n
                        .to_be_bytes()
                        .into_iter()
                        .skip_while(|b| *b == 0)
                        .collect();
                    der.push(0x80 | bytes.len() as u8);
                    der.extend(bytes);
                }
            }
            der.extend_from_slice(data);
            format!("#{}", hex(&der))
        }
    }
}

/// Every attribute of a name, RDN by RDN as encoded.
pub fn name_attrs(name: &x509_parser::x509::X509Name<'_>) -> Vec<(String, Option<String>)> {
    name.iter()
        .flat_map(|rdn| rdn.iter())
        .map(|atv| (attr_name(atv.attr_type()), attr_text(atv)))
        .collect()
}

/// RFC 4514 string form: the last RDN first, `,` between RDNs, `+` inside a multi-valued RDN,
/// and `\` before the characters that would otherwise change the parse.
pub fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            // Within a multi-valued RDN too, last first: as OpenSSL prints RFC 2253.
            let mut parts: Vec<String> = rdn
                .iter()
                .map(|atv| format!("{}={}", attr_name(atv.attr_type()), attr_4514(atv)))
                .collect();
            parts.reverse();
            parts.join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// Escapes one attribute value per RFC 4514 §2.4; bytes outside printable ASCII are written as
/// `\XX` (as OpenSSL's RFC 2253 output does), so the result is printable ASCII and fits in a
/// header as it is.
pub fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if !(' '..='~').contains(&c) => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The named curve of an EC public key, as a dotted OID.
pub(crate) fn curve_oid(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Option<String> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string())
}

fn key_type(cert: &X509Certificate<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    let spki = cert.public_key();
    let curve = curve_oid(spki);
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(_)) => match curve.as_deref() {
            Some("1.2.840.10045.3.1.7") => "ECDSA P-256".into(),
            Some("1.3.132.0.34") => "ECDSA P-384".into(),
            Some("1.3.132.0.35") => "ECDSA P-521".into(),
            Some(other) => format!("ECDSA ({other})"),
            None => "ECDSA".into(),
        },
        _ => match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.3.101.112" => "Ed25519".into(),
            "1.3.101.113" => "Ed448".into(),
            other => format!("unknown ({other})"),
        },
    }
}

/// Lower-case hex SHA-256 of the DER bytes (what `openssl x509 -fingerprint -sha256` shows, without colons).
pub fn fingerprint_sha256(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    hex(digest.as_ref())
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Now, in unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Formats a unix timestamp as RFC 3339 (UTC).
pub fn rfc3339(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
    }

    #[test]
    fn key_where_cert_belongs_is_named() {
        let key = rcgen::KeyPair::generate().unwrap();
        let err = parse_certs(key.serialize_pem().as_bytes(), Path::new("x.pem")).unwrap_err();
        assert!(matches!(err, PkiError::KeyInCertFile { .. }), "{err}");
    }

    #[test]
    fn truncated_pem_is_refused() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = cert.pem();
        let two = format!("{pem}{}", &pem[..pem.len() / 2]);
        let err = parse_certs(two.as_bytes(), Path::new("x.pem")).unwrap_err();
        assert!(matches!(err, PkiError::MalformedPem { .. }), "{err}");
    }

    #[test]
    fn garbage_has_no_certificates() {
        let err = parse_certs(b"hello", Path::new("x.pem")).unwrap_err();
        assert!(matches!(err, PkiError::NoCertificates { .. }), "{err}");
    }

    #[test]
    fn a_crl_the_tls_layer_cannot_use_is_refused_before_it_is_cached() {
        // OpenSSL makes what rcgen will not: a CA-only partitioned CRL (an issuing distribution
        // point without a name), which webpki refuses.
        let dir = tempfile::tempdir().unwrap();
        let script = r#"set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=IDP-CA \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout ca.key -out ca.pem -days 1 2>/dev/null
: > index.txt; echo 40 > crlnumber
printf '[ca]\ndefault_ca=c\n[c]\ndatabase=index.txt\ncrlnumber=crlnumber\ndefault_md=sha256\ndefault_crl_days=30\ncrl_extensions=ext\n[ext]\nissuingDistributionPoint=critical,@idp\n[idp]\nonlyCA=TRUE\n' > cnf
openssl ca -config cnf -gencrl -cert ca.pem -keyfile ca.key -out idp.crl 2>/dev/null
printf '[ca]\ndefault_ca=c\n[c]\ndatabase=index.txt\ncrlnumber=crlnumber\ndefault_md=sha256\ndefault_crl_days=30\n' > plain
openssl ca -config plain -gencrl -cert ca.pem -keyfile ca.key -out plain.crl 2>/dev/null
"#;
        let ok = std::process::Command::new("sh")
            .args(["-c", script])
            .current_dir(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl could not make the CRLs");
        let ca = load_certs(&dir.path().join("ca.pem")).unwrap();
        let plain = std::fs::read(dir.path().join("plain.crl")).unwrap();
        assert!(check_crl_update(&plain, &ca, None).is_ok());
        let idp = std::fs::read(dir.path().join("idp.crl")).unwrap();
        let err = check_crl_update(&idp, &ca, None).unwrap_err();
        assert!(err.contains("TLS layer cannot use"), "{err}");
    }

    #[test]
    fn a_crl_of_another_issuer_replaces_the_held_one_only_when_its_ca_left_the_bundle() {
        use rcgen::{
            BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, Issuer,
            KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
        };
        let now = time::OffsetDateTime::now_utc();
        let ca = |cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, cn.to_string());
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let cert = p.self_signed(&key).unwrap();
            let crl = CertificateRevocationListParams {
                this_update: now,
                next_update: now + time::Duration::hours(1),
                crl_number: SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs: vec![],
                key_identifier_method: KeyIdMethod::Sha256,
            }
            .signed_by(&Issuer::new(p, key))
            .unwrap()
            .der()
            .to_vec();
            (cert.der().clone(), crl)
        };
        let (a, crl_a) = ca("Old CA");
        let (b, crl_b) = ca("New CA");
        // Both CAs in the bundle: whoever serves B's CRL at A's URL does not replace A's.
        assert!(check_crl_update(&crl_b, &[a.clone(), b.clone()], Some(&crl_a)).is_err());
        // A rotated out: B's CRL takes its place.
        assert!(check_crl_update(&crl_b, &[b], Some(&crl_a)).is_ok());
    }
}
