//! The client identity of one connection, computed once after the handshake and shared by every
//! request on it: the verdict, the parsed leaf, and the identity headers ready to forward.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use rustls::pki_types::CertificateDer;

use std::sync::Arc;

use crate::pki::CertInfo;
use crate::tls::verify::VerifiedChain;
use crate::tls::{FailReason, Verdict};

/// What the connection proved about its client.
#[derive(Debug)]
pub struct ClientIdentity {
    pub verdict: Verdict,
    /// The presented leaf, parsed (absent when no certificate was sent).
    pub leaf: Option<CertInfo>,
    /// The path that verified, leaf to anchor (only with [`Verdict::Success`]).
    pub chain: Option<Arc<VerifiedChain>>,
    pub headers: IdentityHeaders,
}

/// Identity header values, built once per connection (RFC 9440 plus the `X-Client-*` set).
#[derive(Debug)]
pub struct IdentityHeaders {
    pub client_cert: Option<HeaderValue>,
    pub client_cert_chain: Option<HeaderValue>,
    pub verify: HeaderValue,
    pub subject: Option<HeaderValue>,
    pub spiffe_id: Option<HeaderValue>,
    pub fingerprint: Option<HeaderValue>,
}

impl ClientIdentity {
    /// Builds the identity from the certificates the client presented, the verdict and the
    /// path that verified. `Client-Cert-Chain` lists the intermediates of that path only (never
    /// certificates the client merely appended), and only for a verified client.
    pub fn new(
        verdict: Verdict,
        peer: Option<&[CertificateDer<'_>]>,
        chain: Option<Arc<VerifiedChain>>,
    ) -> Self {
        let leaf_der = peer.and_then(|c| c.first());
        let leaf = leaf_der.and_then(|der| CertInfo::parse(der).ok());
        // A certificate that cannot be parsed is never a success, and only a success has a path.
        let verdict = match (&leaf, leaf_der, verdict) {
            (None, Some(_), _) => Verdict::Failed(FailReason::BadCertificate),
            (_, _, Verdict::Success) if chain.is_none() => {
                Verdict::Failed(FailReason::BadCertificate)
            }
            (_, _, v) => v,
        };
        let chain = chain.filter(|_| verdict == Verdict::Success);
        let intermediates = chain.as_ref().map_or(&[][..], |c| c.intermediates());
        let headers = IdentityHeaders {
            client_cert: leaf_der.and_then(|d| sf_binary(d)),
            client_cert_chain: if intermediates.is_empty() {
                None
            } else {
                let list: Vec<String> = intermediates
                    .iter()
                    .map(|c| format!(":{}:", STANDARD.encode(&c.der)))
                    .collect();
                HeaderValue::from_str(&list.join(", ")).ok()
            },
            verify: verify_header(verdict),
            // RFC 4514 with every byte outside printable ASCII escaped: a valid header as is.
            subject: leaf
                .as_ref()
                .and_then(|l| HeaderValue::from_str(&l.subject).ok()),
            spiffe_id: leaf
                .as_ref()
                .and_then(|l| l.spiffe_id.as_deref())
                .and_then(safe_header),
            fingerprint: leaf
                .as_ref()
                .and_then(|l| HeaderValue::from_str(&l.fingerprint_sha256).ok()),
        };
        Self {
            verdict,
            leaf,
            chain,
            headers,
        }
    }

    /// The presented leaf's DER, decoded from the `Client-Cert` value (rarely needed, so it is
    /// not kept twice per connection).
    pub fn leaf_der(&self) -> Option<Vec<u8>> {
        let value = self.headers.client_cert.as_ref()?.to_str().ok()?;
        STANDARD.decode(value.trim_matches(':')).ok()
    }

    /// The `X-Client-Verify` text: `SUCCESS`, `FAILED:<reason>` or `NONE`.
    pub fn verify_text(&self) -> String {
        verify_string(self.verdict)
    }
}

pub fn verify_string(v: Verdict) -> String {
    match v {
        Verdict::Success => "SUCCESS".into(),
        Verdict::Failed(r) => format!("FAILED:{r}"),
        Verdict::None => "NONE".into(),
    }
}

fn verify_header(v: Verdict) -> HeaderValue {
    match v {
        Verdict::Success => HeaderValue::from_static("SUCCESS"),
        Verdict::None => HeaderValue::from_static("NONE"),
        Verdict::Failed(_) => {
            HeaderValue::from_str(&verify_string(v)).unwrap_or(HeaderValue::from_static("FAILED"))
        }
    }
}

/// RFC 8941 byte sequence: `:base64:`.
fn sf_binary(der: &[u8]) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(":{}:", STANDARD.encode(der))).ok()
}

/// A header value for free text: visible ASCII passes; anything else is percent-encoded so the
/// upstream never sees raw control characters or bytes from a crafted certificate.
fn safe_header(s: &str) -> Option<HeaderValue> {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let v = safe_header("CN=a\r\nX-Evil: 1").unwrap();
        assert_eq!(v.to_str().unwrap(), "CN=a%0D%0AX-Evil: 1");
    }

    #[test]
    fn no_certificate_means_none() {
        let id = ClientIdentity::new(Verdict::None, None, None);
        assert_eq!(id.headers.verify, "NONE");
        assert!(id.headers.client_cert.is_none());
    }
}
