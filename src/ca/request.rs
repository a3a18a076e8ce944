//! What a certificate request may ask for. A CSR contributes its public key, and its names
//! only where someone authorized them: an admin signing it, or an enrollment token's
//! [`Grant`]. Nothing else in a CSR (extensions, key usages, CA flags) reaches a certificate.

use std::net::IpAddr;

use rcgen::{DistinguishedName, DnType, DnValue, SanType};
use serde::{Deserialize, Serialize};
use time::Duration;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509CertificationRequest};

use super::{CaError, Profile};

/// The subject alternative names of a certificate, by type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sans {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
}

impl Sans {
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.ips.is_empty() && self.uris.is_empty() && self.emails.is_empty()
    }

    /// `DNS:a, IP:10.0.0.1, URI:spiffe://…, email:x@y` (for errors and the audit log).
    pub fn describe(&self) -> String {
        let all: Vec<String> = self
            .dns
            .iter()
            .map(|d| format!("DNS:{d}"))
            .chain(self.ips.iter().map(|i| format!("IP:{i}")))
            .chain(self.uris.iter().map(|u| format!("URI:{u}")))
            .chain(self.emails.iter().map(|e| format!("email:{e}")))
            .collect();
        if all.is_empty() {
            "none".into()
        } else {
            all.join(", ")
        }
    }

    pub(super) fn to_rcgen(&self) -> Result<Vec<SanType>, CaError> {
        let mut out = Vec::new();
        for d in &self.dns {
            out.push(SanType::DnsName(d.as_str().try_into()?));
        }
        for ip in &self.ips {
            out.push(SanType::IpAddress(*ip));
        }
        for u in &self.uris {
            out.push(SanType::URI(u.as_str().try_into()?));
        }
        for e in &self.emails {
            out.push(SanType::Rfc822Name(e.as_str().try_into()?));
        }
        Ok(out)
    }

    /// The SANs of a parsed certificate or CSR; names of other types are listed in `other`.
    fn from_general_names(names: &[GeneralName<'_>], other: &mut Vec<String>) -> Self {
        let mut s = Sans::default();
        for n in names {
            match n {
                GeneralName::DNSName(d) => s.dns.push(d.to_string()),
                GeneralName::URI(u) => s.uris.push(u.to_string()),
                GeneralName::RFC822Name(e) => s.emails.push(e.to_string()),
                GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
                    Ok(v4) => s.ips.push(IpAddr::from(v4)),
                    Err(_) => match <[u8; 16]>::try_from(*b) {
                        Ok(v6) => s.ips.push(IpAddr::from(v6)),
                        Err(_) => other.push("a malformed IP address".into()),
                    },
                },
                other_name => other.push(format!("{other_name:?}").chars().take(80).collect()),
            }
        }
        s
    }
}

/// A parsed CSR whose signature verified: the requester holds the key.
pub struct Csr {
    pub(super) spki_der: Vec<u8>,
    /// The subject, RFC 4514.
    pub subject: String,
    /// The subject's attributes, as parsed.
    pub subject_attrs: Vec<(String, Option<String>)>,
    pub(super) subject_dn: Result<DistinguishedName, String>,
    pub sans: Sans,
    /// SANs of types the CA does not issue (otherName, directoryName…).
    pub other_sans: Vec<String>,
}

/// Most CSRs are well under 4 KiB; an RSA-8192 one with many names stays under 64 KiB.
const MAX_CSR: usize = 64 * 1024;

/// Parses a PEM CSR and checks its signature (proof that the requester holds the key) and its
/// key (ECDSA P-256/P-384, Ed25519, or RSA of 2048 bits or more).
pub fn parse_csr(pem: &str) -> Result<Csr, CaError> {
    use rustls::pki_types::CertificateSigningRequestDer;
    use rustls::pki_types::pem::PemObject as _;
    if pem.len() > MAX_CSR {
        return Err(CaError::Csr("it is larger than 64 KiB".into()));
    }
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| CaError::Csr("no PEM CERTIFICATE REQUEST block".into()))?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| CaError::Csr(format!("it does not parse ({e})")))?;
    if !rest.is_empty() {
        return Err(CaError::Csr("trailing bytes after the request".into()));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    check_key(spki)?;
    if !crate::pki::spki_signature_verifies(
        info.raw,
        &csr.signature_algorithm.algorithm.to_id_string(),
        &csr.signature_value.data,
        spki,
    ) {
        return Err(CaError::Csr(
            "its signature does not verify with its own public key (or uses an algorithm other than ECDSA, RSA PKCS#1 with SHA-2, or Ed25519)".into(),
        ));
    }
    let mut other_sans = Vec::new();
    let mut sans = Sans::default();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            let more = Sans::from_general_names(&san.general_names, &mut other_sans);
            sans.dns.extend(more.dns);
            sans.ips.extend(more.ips);
            sans.uris.extend(more.uris);
            sans.emails.extend(more.emails);
        }
    }
    Ok(Csr {
        spki_der: spki.raw.to_vec(),
        subject: crate::pki::rfc4514(&info.subject),
        subject_attrs: crate::pki::name_attrs(&info.subject),
        subject_dn: dn_from_name(&info.subject),
        sans,
        other_sans,
    })
}

fn check_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<(), CaError> {
    use x509_parser::public_key::PublicKey;
    let weak = |what: String| {
        Err(CaError::Csr(format!(
            "its key is {what}; use ECDSA P-256 or P-384, Ed25519, or RSA of 2048 bits or more"
        )))
    };
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.3.101.112" => Ok(()),
        "1.2.840.10045.2.1" => match crate::pki::curve_oid(spki).as_deref() {
            Some("1.2.840.10045.3.1.7" | "1.3.132.0.34") => Ok(()),
            other => weak(format!("on the curve {}", other.unwrap_or("(none)"))),
        },
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) if (2048..=8192).contains(&rsa.key_size()) => Ok(()),
            Ok(PublicKey::RSA(rsa)) => weak(format!("RSA of {} bits", rsa.key_size())),
            _ => weak("a malformed RSA key".into()),
        },
        other => weak(format!("of the algorithm {other}")),
    }
}

/// An rcgen name with the same attributes, in order, each with its string type where rcgen
/// has one (UTF8String otherwise).
fn dn_from_name(name: &x509_parser::x509::X509Name<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut atvs = rdn.iter();
        let (Some(atv), None) = (atvs.next(), atvs.next()) else {
            return Err("multi-valued or empty RDNs are not supported".into());
        };
        let oid: Vec<u64> = atv
            .attr_type()
            .iter()
            .ok_or("an attribute type is not a valid OID")?
            .collect();
        let any = atv.attr_value();
        let text = std::str::from_utf8(any.as_bytes())
            .map_err(|_| "an attribute value is not text")?
            .to_string();
        let value = match any.tag().0 {
            12 => DnValue::Utf8String(text),
            19 => DnValue::PrintableString(text.try_into().map_err(|_| "bad PrintableString")?),
            22 => DnValue::Ia5String(text.try_into().map_err(|_| "bad IA5String")?),
            _ => {
                return Err(
                    "attribute values must be UTF8String, PrintableString or IA5String".into(),
                );
            }
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// The subject and SANs of a certificate, exactly (for renewal).
pub(super) fn names_of(der: &[u8]) -> Result<(DistinguishedName, Sans), CaError> {
    use x509_parser::prelude::X509Certificate;
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CaError::Invalid(e.to_string()))?;
    let dn = dn_from_name(cert.subject())
        .map_err(|e| CaError::Invalid(format!("the subject cannot be copied: {e}")))?;
    let mut other = Vec::new();
    let sans = match cert.subject_alternative_name() {
        Ok(Some(ext)) => Sans::from_general_names(&ext.value.general_names, &mut other),
        Ok(None) => Sans::default(),
        Err(e) => return Err(CaError::Invalid(e.to_string())),
    };
    if !other.is_empty() {
        return Err(CaError::Invalid(format!(
            "it has subject alternative names the CA does not issue ({})",
            other.join(", ")
        )));
    }
    Ok((dn, sans))
}

/// What to issue: the names, the profile (key usage and EKU) and the lifetime.
#[derive(Clone, Debug)]
pub struct Template {
    pub subject: DistinguishedName,
    pub sans: Sans,
    pub profile: Profile,
    /// `None`: the profile's default.
    pub lifetime: Option<Duration>,
}

impl Template {
    /// A subject of one common name.
    pub fn common_name(cn: &str, sans: Sans, profile: Profile, lifetime: Option<Duration>) -> Self {
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, cn);
        Self {
            subject,
            sans,
            profile,
            lifetime,
        }
    }

    /// The CSR's own names, as an admin signing it authorizes them.
    pub fn from_csr(
        csr: &Csr,
        profile: Profile,
        lifetime: Option<Duration>,
    ) -> Result<Self, CaError> {
        if !csr.other_sans.is_empty() {
            return Err(CaError::Csr(format!(
                "it asks for subject alternative names the CA does not issue ({})",
                csr.other_sans.join(", ")
            )));
        }
        let subject = csr
            .subject_dn
            .clone()
            .map_err(|e| CaError::Csr(format!("its subject cannot be used: {e}")))?;
        Ok(Self {
            subject,
            sans: csr.sans.clone(),
            profile,
            lifetime,
        })
    }
}

/// What an enrollment token may buy: one identity, fixed when the token is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    /// The subject is exactly `CN=<common_name>`.
    pub common_name: String,
    /// DNS names put into the certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// IP addresses put into the certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub ip_addresses: Vec<IpAddr>,
    /// Email addresses put into the certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// A SPIFFE ID, or a pattern whose last segment is `*` (one path segment, which the CSR
    /// names), e.g. `spiffe://corp.example/ns/web/*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    pub profile: Profile,
    /// Lifetime of the certificate, in seconds.
    pub lifetime_secs: i64,
}

impl Grant {
    /// Checks the names the admin gave; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        check_common_name(&self.common_name)?;
        for d in &self.dns_names {
            check_dns_name(d).map_err(|e| format!("dns_names: {e}"))?;
        }
        for e in &self.emails {
            check_email(e).map_err(|e| format!("emails: {e}"))?;
        }
        if let Some(id) = &self.spiffe_id {
            let concrete = id.strip_suffix("/*").map(|p| format!("{p}/x"));
            check_spiffe_id(concrete.as_deref().unwrap_or(id))
                .map_err(|e| format!("spiffe_id: {e}"))?;
        }
        if self.profile == Profile::Spiffe && self.spiffe_id.is_none() {
            return Err("profile spiffe needs a spiffe_id".into());
        }
        Ok(())
    }

    /// The certificate this grant issues for `csr`, or why the CSR asks for something else.
    /// The CSR's subject must be empty or exactly `CN=<common_name>`; each SAN it names must be
    /// one of the grant's; the certificate carries all of the grant's names.
    pub fn authorize(&self, csr: &Csr) -> Result<Template, String> {
        let allowed_subject = vec![("CN".to_string(), Some(self.common_name.clone()))];
        if !csr.subject_attrs.is_empty() && csr.subject_attrs != allowed_subject {
            return Err(format!(
                "the token allows the subject CN={}, the CSR asks for '{}'",
                crate::pki::escape_dn_value(&self.common_name),
                csr.subject
            ));
        }
        if !csr.other_sans.is_empty() {
            return Err(format!(
                "the CSR asks for subject alternative names the CA does not issue ({})",
                csr.other_sans.join(", ")
            ));
        }
        let refused = |what: &str, v: &dyn std::fmt::Display| {
            Err(format!(
                "the token does not allow {what} '{v}' (it allows {})",
                self.describe()
            ))
        };
        for d in &csr.sans.dns {
            if !self.dns_names.iter().any(|g| g.eq_ignore_ascii_case(d)) {
                return refused("the DNS name", d);
            }
        }
        for ip in &csr.sans.ips {
            if !self.ip_addresses.contains(ip) {
                return refused("the IP address", ip);
            }
        }
        for e in &csr.sans.emails {
            if !self.emails.iter().any(|g| g.eq_ignore_ascii_case(e)) {
                return refused("the email address", e);
            }
        }
        let mut spiffe = None;
        for u in &csr.sans.uris {
            match &self.spiffe_id {
                Some(want) if spiffe.is_none() && spiffe_matches(want, u) => spiffe = Some(u),
                _ => return refused("the URI", u),
            }
        }
        let uris = match (&self.spiffe_id, spiffe) {
            (Some(_), Some(id)) => vec![id.clone()],
            (Some(want), None) if want.ends_with("/*") => {
                return Err(format!(
                    "the token allows a SPIFFE ID matching '{want}'; put the one you want into the CSR as a URI SAN"
                ));
            }
            (Some(want), None) => vec![want.clone()],
            (None, _) => Vec::new(),
        };
        let sans = Sans {
            dns: self.dns_names.clone(),
            ips: self.ip_addresses.clone(),
            uris,
            emails: self.emails.clone(),
        };
        Ok(Template::common_name(
            &self.common_name,
            sans,
            self.profile,
            Some(Duration::seconds(self.lifetime_secs)),
        ))
    }

    /// `CN=…, DNS:…, SPIFFE …` for messages.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!(
            "CN={}",
            crate::pki::escape_dn_value(&self.common_name)
        )];
        parts.extend(self.dns_names.iter().map(|d| format!("DNS:{d}")));
        parts.extend(self.ip_addresses.iter().map(|i| format!("IP:{i}")));
        parts.extend(self.emails.iter().map(|e| format!("email:{e}")));
        parts.extend(self.spiffe_id.iter().map(|s| format!("URI:{s}")));
        parts.join(", ")
    }
}

/// Whether `id` is `want`, or matches the pattern `want` (last segment `*`: exactly one
/// segment).
fn spiffe_matches(want: &str, id: &str) -> bool {
    if check_spiffe_id(id).is_err() {
        return false;
    }
    match want.strip_suffix('*') {
        Some(prefix) => id
            .strip_prefix(prefix)
            .is_some_and(|seg| !seg.is_empty() && !seg.contains('/')),
        None => want == id,
    }
}

/// A SPIFFE ID as the SPIFFE spec defines it: `spiffe://` + a lower-case trust domain of
/// `[a-z0-9.-_]` + a path of non-empty segments of `[A-Za-z0-9.-_]` other than `.` and `..`; no
/// query, fragment or port; at most 2048 bytes.
pub fn check_spiffe_id(id: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("'{id}' is not a SPIFFE ID: {why}"));
    if id.len() > 2048 {
        return bad("longer than 2048 bytes");
    }
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return bad("it must start with spiffe://");
    };
    let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if td.is_empty()
        || !td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return bad("the trust domain must be lower-case letters, digits, '-', '.' or '_'");
    }
    if path.is_empty() {
        return bad("it needs a path (spiffe://trust-domain/path)");
    }
    for seg in path[1..].split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("empty, '.' and '..' path segments are not allowed");
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return bad("path segments are letters, digits, '-', '.' or '_'");
        }
    }
    Ok(())
}

fn check_common_name(cn: &str) -> Result<(), String> {
    if cn.trim().is_empty() || cn.len() > 64 || cn.chars().any(char::is_control) {
        return Err(format!(
            "common_name '{cn}' must be 1 to 64 characters without control characters"
        ));
    }
    Ok(())
}

fn check_dns_name(d: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let labels: Vec<&str> = d.split('.').collect();
    let (first, rest) = labels.split_first().ok_or("empty")?;
    if d.len() > 253 || !(label_ok(first) || *first == "*") || !rest.iter().all(|l| label_ok(l)) {
        return Err(format!("'{d}' is not a DNS name"));
    }
    // A wildcard needs at least two labels under it (`*.example.com`, not `*` or `*.com`).
    if *first == "*" && rest.len() < 2 {
        return Err(format!(
            "'{d}' is a wildcard over a top-level domain; name at least two labels under the '*'"
        ));
    }
    Ok(())
}

fn check_email(e: &str) -> Result<(), String> {
    match e.split_once('@') {
        Some((l, d)) if !l.is_empty() && e.is_ascii() && !e.contains(char::is_whitespace) => {
            check_dns_name(d).map_err(|_| format!("'{e}' is not an email address"))
        }
        _ => Err(format!("'{e}' is not an email address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_patterns_match_one_segment() {
        let p = "spiffe://corp.example/ns/web/*";
        assert!(spiffe_matches(p, "spiffe://corp.example/ns/web/api"));
        for id in [
            "spiffe://corp.example/ns/web/",
            "spiffe://corp.example/ns/web/a/b",
            "spiffe://corp.example/ns/web/..",
            "spiffe://corp.example/ns/webx/a",
            "spiffe://corp.example/ns/web/a?x",
            "spiffe://evil.example/ns/web/a",
        ] {
            assert!(!spiffe_matches(p, id), "{id}");
        }
        assert!(spiffe_matches("spiffe://t/a", "spiffe://t/a"));
        assert!(!spiffe_matches("spiffe://t/a", "spiffe://t/a/b"));
    }
}
