//! Client-certificate verification for one domain.
//!
//! One verifier serves both modes: in `require` a bad chain fails the handshake with the matching
//! TLS alert; in `optional` the handshake proceeds and the reason is recorded. In every mode the
//! client's signature over the handshake (CertificateVerify) is checked, so a client that sends
//! someone else's certificate without the key never gets through.
//!
//! # Verdicts are computed, never guessed
//! rustls gives the verifier no way to attach data to the connection, so once the handshake is
//! done [`ClientVerifier::verdict`] verifies the presented chain again (for every mode, and for
//! resumed sessions, which never ran the verifier). The only cache is of chains that verified:
//! a hit saves the path building and signature checks, a miss, an eviction or a full cache means
//! "verify now". Failures are never cached, so a negative verdict cannot outlive its cause.
//!
//! # What a verified chain is
//! [`VerifiedChain`] is the path webpki built from the leaf to a trust anchor: only its
//! certificates count for CA rules, `Client-Cert-Chain` and revocation; certificates the client
//! merely appended are ignored. Path building tries every candidate path (the client's order
//! does not matter) and accepts the first one that is within `max_chain_depth` and whose trust
//! anchor is inside its own validity period at the moment of verification (webpki does not
//! check anchors' dates). Revocation is looked up per issuer for every certificate of the path.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::lock;
use crate::pki::TrustBundle;

pub use super::verdict::*;
/// Default for the number of CA certificates allowed above the client certificate in its verified
/// chain (the trust anchor included). webpki builds paths of at most six intermediates, so 7 is
/// the most any chain can have; OpenSSL (HAProxy, Envoy) defaults to 100 and nginx to 1. We take
/// the library's own limit: real PKIs with 4–5 CAs verify, and operators who want a tighter bound
/// set `max_chain_depth` per domain.
pub const DEFAULT_MAX_CHAIN_DEPTH: usize = 7;

const VERIFIED_CACHE_CAP: usize = 16 * 1024;
const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// One certificate of a verified path, with what revocation and rules need to know of it.
#[derive(Clone, Debug)]
pub struct PathCert {
    pub der: CertificateDer<'static>,
    /// SHA-256 of the DER (hex).
    pub fingerprint: String,
    /// Serial number, normalized as [`crate::revocation::normalize_serial`] does.
    pub serial: String,
    /// The serial's bytes as encoded (to look it up in CRLs).
    pub serial_raw: Vec<u8>,
    /// SHA-256 (hex) of the issuer's SubjectPublicKeyInfo: the issuer this serial belongs to.
    pub issuer_key: String,
}

/// The path from the client's leaf to a trust anchor that verified: `certs[0]` is the leaf,
/// then the intermediates in path order, then the anchor's own certificate from the bundle, then
/// the bundle CAs above the anchor when the anchor is an intermediate whose issuer is also in the
/// bundle.
#[derive(Clone, Debug)]
pub struct VerifiedChain {
    pub certs: Vec<PathCert>,
    /// How many of `certs` are bundle CAs above the anchor.
    above: usize,
    /// Latest not-before and earliest not-after over the path, the anchor included.
    valid_from: u64,
    valid_until: u64,
}

impl VerifiedChain {
    /// The revocation of any certificate on the path, by fingerprint or by issuer and serial.
    pub fn revoked_in<'a>(
        &self,
        revocations: &'a crate::revocation::Revocations,
    ) -> Option<&'a crate::revocation::Revoked> {
        if revocations.is_empty() {
            return None;
        }
        self.certs
            .iter()
            .find_map(|c| revocations.lookup(&c.fingerprint, &c.issuer_key, &c.serial))
    }

    /// The intermediates that were used, in path order (not the leaf, not the anchor).
    pub fn intermediates(&self) -> &[PathCert] {
        let n = self.certs.len().saturating_sub(2 + self.above);
        self.certs.get(1..1 + n).unwrap_or(&[])
    }

    /// Fingerprints of every CA on the path: the intermediates used and the anchor.
    pub fn ca_fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .skip(1)
            .map(|c| c.fingerprint.clone())
            .collect()
    }

    /// Seconds since the epoch at which the first certificate of the path expires.
    pub fn valid_until(&self) -> u64 {
        self.valid_until
    }
}

/// A trust anchor with its certificate, for the path's last link and the anchor's dates.
struct Anchor {
    anchor: TrustAnchor<'static>,
    cert: PathCert,
    /// The bundle's CAs above this one (an intermediate in the bundle, signed by a root that is
    /// also in it): the path goes on through them for revocation and CA rules.
    above: Vec<PathCert>,
    not_before: u64,
    not_after: u64,
    /// Revoked by a CRL of a bundle CA (webpki checks CRLs for the certificates below the
    /// anchor only).
    crl_revoked: bool,
}

/// A chain that verified, cached while `now` is inside every certificate's validity.
#[derive(Clone)]
struct Cached {
    chain: Arc<VerifiedChain>,
    at: Instant,
}

type ChainKey = [u8; 32];

/// The client-certificate verifier of one domain.
pub struct ClientVerifier {
    mode: Mode,
    anchors: Vec<Anchor>,
    webpki_anchors: Vec<TrustAnchor<'static>>,
    subjects: Vec<DistinguishedName>,
    max_depth: usize,
    algs: WebPkiSupportedAlgorithms,
    revocations: Arc<crate::revocation::Revocations>,
    crls: Vec<webpki::CertRevocationList<'static>>,
    crl_expiry: webpki::ExpirationPolicy,
    /// The bundle's certificates, read once, for the anchors' ancestry and CRLs.
    bundle: Vec<Parsed>,
    /// Chains that verified recently, so a returning client costs one signature check
    /// (CertificateVerify, never cached) instead of two. The cache belongs to this verifier,
    /// which is rebuilt with every snapshot: a trust change empties it. Revocation is looked up
    /// on every use, hit or miss.
    verified: Mutex<HashMap<ChainKey, Cached>>,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("mode", &self.mode)
            .field("anchors", &self.anchors.len())
            .field("max_depth", &self.max_depth)
            .finish()
    }
}

/// What path building, revocation and CA rules need to know of one certificate, read once.
#[derive(Clone)]
struct Parsed {
    der: CertificateDer<'static>,
    /// DER of the subject and issuer names.
    subject: Vec<u8>,
    issuer: Vec<u8>,
    /// SHA-256 (hex) of its SubjectPublicKeyInfo: the key that names it as an issuer.
    key: String,
    fingerprint: String,
    serial: String,
    serial_raw: Vec<u8>,
    not_before: u64,
    not_after: u64,
}

impl Parsed {
    fn new(der: &CertificateDer<'_>) -> Option<Self> {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        Some(Self {
            der: der.clone().into_owned(),
            subject: cert.subject().as_raw().to_vec(),
            issuer: cert.issuer().as_raw().to_vec(),
            key: crate::pki::fingerprint_sha256(cert.public_key().raw),
            fingerprint: crate::pki::fingerprint_sha256(der),
            serial: crate::revocation::normalize_serial(&cert.raw_serial_as_string()),
            serial_raw: cert.raw_serial().to_vec(),
            not_before: u64::try_from(cert.validity().not_before.timestamp()).unwrap_or(0),
            not_after: u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0),
        })
    }

    /// This certificate as a link of a path whose next certificate has `issuer_key`.
    fn path_cert(&self, issuer_key: String) -> PathCert {
        PathCert {
            der: self.der.clone(),
            fingerprint: self.fingerprint.clone(),
            serial: self.serial.clone(),
            serial_raw: self.serial_raw.clone(),
            issuer_key,
        }
    }

    /// Whether `issuer` signed this certificate (names first, then the signature).
    fn signed_by(&self, issuer: &Parsed) -> bool {
        self.issuer == issuer.subject && crate::pki::signed_by(&self.der, &issuer.der)
    }
}

/// A bundle certificate and the bundle CAs above it, each found by signature (not by name),
/// up to a self-issued one; each with the key of its issuer ("" when the issuer is not in the
/// bundle: then only revocation by fingerprint can name it).
fn bundle_ancestry(start: &Parsed, bundle: &[Parsed]) -> Vec<(PathCert, u64, u64)> {
    let mut out: Vec<(PathCert, u64, u64)> = Vec::new();
    let mut current = start;
    for _ in 0..8 {
        let self_signed = current.signed_by(current);
        let issuer = bundle
            .iter()
            .find(|b| b.der != current.der && current.signed_by(b));
        let issuer_key = match (issuer, self_signed) {
            (_, true) => current.key.clone(),
            (Some(i), false) => i.key.clone(),
            (None, false) => String::new(),
        };
        out.push((
            current.path_cert(issuer_key),
            current.not_before,
            current.not_after,
        ));
        match issuer {
            Some(i) if !self_signed && !out.iter().any(|(c, _, _)| c.der == i.der) => current = i,
            _ => break,
        }
    }
    out
}

/// Whether a CRL signed by `c`'s issuer (a bundle CA, found by key) lists `c`.
fn crl_lists(
    crls: &[webpki::CertRevocationList<'static>],
    bundle: &[Parsed],
    c: &PathCert,
) -> bool {
    if c.issuer_key.is_empty() {
        return false;
    }
    let Some(issuer) = bundle.iter().find(|b| b.key == c.issuer_key) else {
        return false;
    };
    // webpki gives the CRL's issuer Name without its outer SEQUENCE header.
    let subject = issuer.subject.as_slice();
    let contents = der_contents(subject);
    crls.iter().any(|crl| {
        (crl.issuer() == subject || crl.issuer() == contents)
            && matches!(crl.find_serial(&c.serial_raw), Ok(Some(_)))
    })
}

/// The contents of a DER TLV (its value without tag and length).
fn der_contents(tlv: &[u8]) -> &[u8] {
    let Some(&len) = tlv.get(1) else {
        return tlv;
    };
    let start = if len < 0x80 {
        2
    } else {
        2 + usize::from(len & 0x7f)
    };
    tlv.get(start..).unwrap_or(tlv)
}

/// SHA-256 (hex) of a certificate's SubjectPublicKeyInfo, the key that identifies it as an issuer.
pub fn spki_key(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(crate::pki::fingerprint_sha256(cert.public_key().raw))
}

impl ClientVerifier {
    /// Builds a verifier from an already validated trust bundle.
    pub fn new(mode: Mode, bundle: Option<&TrustBundle>, max_depth: usize) -> Self {
        Self::with_revocations(mode, bundle, max_depth, Default::default())
    }

    /// A verifier that also refuses the revoked certificates.
    pub fn with_revocations(
        mode: Mode,
        bundle: Option<&TrustBundle>,
        max_depth: usize,
        revocations: Arc<crate::revocation::Revocations>,
    ) -> Self {
        let mut anchors = Vec::new();
        let mut subjects = Vec::new();
        let certs: Vec<Parsed> = bundle
            .map(|b| b.certs.iter().filter_map(Parsed::new).collect())
            .unwrap_or_default();
        for parsed in &certs {
            // The bundle was validated with the same calls when it was loaded.
            let Ok(anchor) = webpki::anchor_from_trusted_cert(&parsed.der) else {
                continue;
            };
            let chain = bundle_ancestry(parsed, &certs);
            let Some((cert, not_before, not_after)) = chain.first().cloned() else {
                continue;
            };
            subjects.push(DistinguishedName::in_sequence(anchor.subject.as_ref()));
            anchors.push(Anchor {
                anchor: anchor.to_owned(),
                cert,
                above: chain.into_iter().skip(1).map(|(c, _, _)| c).collect(),
                not_before,
                not_after,
                crl_revoked: false,
            });
        }
        let webpki_anchors = anchors.iter().map(|a| a.anchor.clone()).collect();
        Self {
            mode,
            anchors,
            webpki_anchors,
            subjects,
            max_depth,
            algs: rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
            verified: Mutex::new(HashMap::new()),
            revocations,
            crls: Vec::new(),
            crl_expiry: webpki::ExpirationPolicy::Enforce,
            bundle: certs,
        }
    }

    /// Adds CRLs of the bundle's CAs; `enforce_expiry` refuses chains whose CRL is past its
    /// nextUpdate.
    pub fn with_crls(
        mut self,
        crls: Vec<webpki::CertRevocationList<'static>>,
        enforce_expiry: bool,
    ) -> Self {
        // CRLs for the anchors and the bundle CAs above them, which webpki never checks: a CRL
        // counts for a certificate when a bundle CA that signed the CRL is its issuer.
        for a in &mut self.anchors {
            a.crl_revoked = std::iter::once(&a.cert)
                .chain(&a.above)
                .any(|c| crl_lists(&crls, &self.bundle, c));
        }
        self.crls = crls;
        self.crl_expiry = if enforce_expiry {
            webpki::ExpirationPolicy::Enforce
        } else {
            webpki::ExpirationPolicy::Ignore
        };
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn revocations(&self) -> &crate::revocation::Revocations {
        &self.revocations
    }

    /// The most CA certificates allowed above a client certificate.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Verifies a chain against the trust bundle at time `now`: a path to an anchor that is
    /// valid at `now`, validity periods, clientAuth EKU when present, the depth limit, CRLs and
    /// the revocation list. Returns the path that verified.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Arc<VerifiedChain>, FailReason> {
        let chain = self.path(end_entity, intermediates, now)?;
        if chain.revoked_in(&self.revocations).is_some() {
            return Err(FailReason::Revoked);
        }
        Ok(chain)
    }

    /// [`Self::check`] without the revocation list (CRLs still apply): the path that verifies.
    pub fn path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Arc<VerifiedChain>, FailReason> {
        let key = chain_key(end_entity, intermediates);
        let secs = now.as_secs();
        let cached = lock(&self.verified).get(&key).cloned();
        let chain = match cached {
            Some(c)
                if c.chain.valid_from <= secs
                    && secs <= c.chain.valid_until
                    && c.at.elapsed() < VERIFIED_TTL =>
            {
                c.chain
            }
            _ => {
                let chain = Arc::new(self.check_uncached(end_entity, intermediates, now)?);
                let mut verified = lock(&self.verified);
                if verified.len() >= VERIFIED_CACHE_CAP {
                    verified.retain(|_, v| v.at.elapsed() < VERIFIED_TTL);
                    if verified.len() >= VERIFIED_CACHE_CAP {
                        verified.clear();
                    }
                }
                verified.insert(
                    key,
                    Cached {
                        chain: chain.clone(),
                        at: Instant::now(),
                    },
                );
                chain
            }
        };
        Ok(chain)
    }

    /// Full path verification; returns the path that verified.
    fn check_uncached(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<VerifiedChain, FailReason> {
        if self.anchors.is_empty() {
            return Err(FailReason::UnknownCa);
        }
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| FailReason::from_webpki(&e).malformed())?;
        let crl_refs: Vec<&webpki::CertRevocationList<'static>> = self.crls.iter().collect();
        let revocation = match webpki::RevocationOptionsBuilder::new(&crl_refs) {
            Ok(b) => Some(
                b.with_depth(webpki::RevocationCheckDepth::Chain)
                    .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                    .with_expiration_policy(self.crl_expiry)
                    .build(),
            ),
            // No CRLs configured.
            Err(_) => None,
        };
        let secs = now.as_secs();
        // Checked on every candidate path: webpki goes on searching when a candidate is refused,
        // so the result does not depend on the order of the intermediates the client sent.
        let too_deep = std::cell::Cell::new(false);
        let anchor_out_of_date = std::cell::Cell::new(false);
        let accept = |path: &webpki::VerifiedPath<'_>| -> Result<(), webpki::Error> {
            if path.intermediate_certificates().count() + 1 > self.max_depth {
                too_deep.set(true);
                return Err(webpki::Error::MaximumPathDepthExceeded);
            }
            match self.anchor_of(path.anchor()) {
                Some(a) if a.not_before > secs || secs > a.not_after => {
                    anchor_out_of_date.set(true);
                    Err(webpki::Error::UnknownIssuer)
                }
                // A revoked anchor (an intermediate in the bundle) ends this path; another one
                // (through its issuer, say) may still verify.
                Some(a)
                    if a.crl_revoked
                        || std::iter::once(&a.cert).chain(&a.above).any(|c| {
                            self.revocations
                                .lookup(&c.fingerprint, &c.issuer_key, &c.serial)
                                .is_some()
                        }) =>
                {
                    Err(webpki::Error::CertRevoked)
                }
                Some(_) => Ok(()),
                None => Err(webpki::Error::UnknownIssuer),
            }
        };
        let path = cert
            .verify_for_usage(
                self.algs.all,
                &self.webpki_anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                revocation,
                Some(&accept),
            )
            .map_err(|e| match e {
                // A candidate path existed but our checks refused it: say which.
                webpki::Error::UnknownIssuer | webpki::Error::MaximumPathDepthExceeded
                    if anchor_out_of_date.get() =>
                {
                    FailReason::CaExpired
                }
                webpki::Error::UnknownIssuer if too_deep.get() => FailReason::ChainTooDeep,
                e => FailReason::from_webpki(&e),
            })?;
        let anchor = self.anchor_of(path.anchor()).ok_or(FailReason::UnknownCa)?;
        // Leaf first, each certificate read once; each one's issuer is the next on the path.
        let parsed: Vec<Parsed> = std::iter::once(end_entity.clone())
            .chain(path.intermediate_certificates().map(|c| c.der()))
            .map(|d| Parsed::new(&d).ok_or(FailReason::BadCertificate))
            .collect::<Result<_, _>>()?;
        let issuer_keys = parsed
            .iter()
            .skip(1)
            .map(|p| p.key.clone())
            .chain(std::iter::once(anchor.cert.issuer_key.clone()));
        let mut certs = Vec::with_capacity(parsed.len() + 1 + anchor.above.len());
        let mut valid_from = anchor.not_before;
        let mut valid_until = anchor.not_after;
        for (p, issuer_key) in parsed.iter().zip(issuer_keys) {
            valid_from = valid_from.max(p.not_before);
            valid_until = valid_until.min(p.not_after);
            certs.push(p.path_cert(issuer_key));
        }
        certs.push(anchor.cert.clone());
        certs.extend(anchor.above.iter().cloned());
        Ok(VerifiedChain {
            certs,
            above: anchor.above.len(),
            valid_from,
            valid_until,
        })
    }

    fn anchor_of(&self, ta: &TrustAnchor<'_>) -> Option<&Anchor> {
        self.anchors.iter().find(|a| {
            a.anchor.subject.as_ref() == ta.subject.as_ref()
                && a.anchor.subject_public_key_info.as_ref() == ta.subject_public_key_info.as_ref()
        })
    }

    /// The verdict for a finished handshake, given the certificates the client presented, and
    /// the path that verified. The chain is verified here, for this connection: the verified
    /// cache may save the work, nothing else decides.
    pub fn verdict(
        &self,
        peer: Option<&[CertificateDer<'_>]>,
    ) -> (Verdict, Option<Arc<VerifiedChain>>) {
        let Some((ee, rest)) = peer.and_then(|c| c.split_first()) else {
            return (Verdict::None, None);
        };
        match self.check(ee, rest, UnixTime::now()) {
            Ok(chain) => (Verdict::Success, Some(chain)),
            Err(r) => (Verdict::Failed(r), None),
        }
    }
}

impl ClientVerifier {
    /// In optional mode, a certificate webpki cannot parse (a v1 certificate, an unknown
    /// critical extension) must not end the handshake: its CertificateVerify is checked with
    /// the key x509-parser reads, and the verdict says `bad_certificate`.
    fn unparsable_in_optional(&self, e: &rustls::Error) -> bool {
        self.mode == Mode::Optional
            && matches!(e, rustls::Error::InvalidCertificate(c) if *c != CertificateError::BadSignature)
    }
}

/// The full SubjectPublicKeyInfo of a certificate, read by x509-parser.
fn raw_spki(
    cert: &CertificateDer<'_>,
) -> Option<rustls::pki_types::SubjectPublicKeyInfoDer<'static>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(cert).ok()?;
    Some(c.public_key().raw.to_vec().into())
}

/// The subjectPublicKey bits of a certificate, read by x509-parser.
fn raw_key(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, c) = X509Certificate::from_der(cert).ok()?;
    Some(c.public_key().subject_public_key.data.to_vec())
}

fn chain_key(ee: &CertificateDer<'_>, rest: &[CertificateDer<'_>]) -> ChainKey {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(ee.as_ref());
    for c in rest {
        ctx.update(&(c.len() as u64).to_be_bytes());
        ctx.update(c.as_ref());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.mode != Mode::Off
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mode == Mode::Require
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.subjects
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.check(end_entity, intermediates, now) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(reason) if self.mode == Mode::Require => Err(reason.to_rustls()),
            // Optional: the handshake goes on; `verdict` verifies again for the connection.
            Err(_) => Ok(ClientCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs) {
            Err(e) if self.unparsable_in_optional(&e) => {
                // Same check with the key read by x509-parser (webpki could not parse the
                // certificate): the handshake goes on, the verdict is FAILED:bad_certificate.
                let key = raw_key(cert).ok_or(e)?;
                let algs = self
                    .algs
                    .mapping
                    .iter()
                    .find(|(s, _)| *s == dss.scheme)
                    .map(|(_, a)| *a)
                    .unwrap_or(&[]);
                algs.iter()
                    .any(|alg| alg.verify_signature(&key, message, dss.signature()).is_ok())
                    .then(HandshakeSignatureValid::assertion)
                    .ok_or(rustls::Error::InvalidCertificate(
                        CertificateError::BadSignature,
                    ))
            }
            r => r,
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs) {
            Err(e) if self.unparsable_in_optional(&e) => {
                let spki = raw_spki(cert).ok_or(e)?;
                rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algs)
            }
            r => r,
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Shared handle used in `ServerConfig`.
pub type SharedVerifier = Arc<ClientVerifier>;

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use time::{Duration, OffsetDateTime};

    use super::*;

    fn bundle_and_leaf(ca_name: &str) -> (TrustBundle, CertificateDer<'static>, i64) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec!["client".to_string()]).unwrap();
        let not_after = OffsetDateTime::now_utc() + Duration::hours(1);
        leaf.not_after = not_after;
        let leaf = leaf
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        let bundle = TrustBundle {
            path: "test.pem".into(),
            certs: vec![ca_cert.der().clone()],
            infos: vec![],
        };
        (bundle, leaf.der().clone(), not_after.unix_timestamp())
    }

    #[test]
    fn the_verified_chain_cache_respects_validity() {
        let (bundle, leaf, not_after) = bundle_and_leaf("CA");
        let v = ClientVerifier::new(Mode::Require, Some(&bundle), 3);
        let now = UnixTime::now();
        assert!(v.check(&leaf, &[], now).is_ok());
        assert!(v.check(&leaf, &[], now).is_ok(), "cached");
        assert_eq!(lock(&v.verified).len(), 1);
        let later =
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_after as u64 + 60));
        assert_eq!(v.check(&leaf, &[], later).err(), Some(FailReason::Expired));
    }

    #[test]
    fn another_bundle_does_not_inherit_the_cache() {
        let (bundle, leaf, _) = bundle_and_leaf("CA one");
        let (other, _, _) = bundle_and_leaf("CA two");
        let v = ClientVerifier::new(Mode::Require, Some(&bundle), 3);
        assert!(v.check(&leaf, &[], UnixTime::now()).is_ok());
        let w = ClientVerifier::new(Mode::Require, Some(&other), 3);
        assert_eq!(
            w.check(&leaf, &[], UnixTime::now()).err(),
            Some(FailReason::UnknownCa)
        );
    }

    /// A negative verdict does not outlive its cause: a certificate refused as not yet valid is
    /// accepted once its not-before has passed, in every mode (nothing remembered the refusal).
    #[test]
    fn a_certificate_that_became_valid_is_accepted() {
        let (bundle, _, _) = bundle_and_leaf("CA");
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Later CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let start = OffsetDateTime::now_utc() + Duration::hours(1);
        let mut leaf = CertificateParams::new(vec!["later".to_string()]).unwrap();
        leaf.not_before = start;
        leaf.not_after = start + Duration::hours(1);
        let leaf = leaf
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        let bundle = TrustBundle {
            certs: vec![ca_cert.der().clone()],
            ..bundle
        };
        let at = |t: OffsetDateTime| {
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.unix_timestamp() as u64))
        };
        for mode in [Mode::Require, Mode::Optional] {
            let v = ClientVerifier::new(mode, Some(&bundle), 3);
            let now = OffsetDateTime::now_utc();
            assert_eq!(
                v.check(leaf.der(), &[], at(now)).err(),
                Some(FailReason::NotYetValid)
            );
            assert!(
                v.check(leaf.der(), &[], at(start + Duration::minutes(1)))
                    .is_ok()
            );
        }
    }

    /// The verdict of a connection comes from verifying its chain, never from what a cache
    /// does not hold: a self-signed certificate the verifier never saw (as after a flood that
    /// evicted everything) is still a failure in optional mode.
    #[test]
    fn an_unknown_chain_is_verified_not_assumed() {
        let (bundle, good, _) = bundle_and_leaf("CA");
        let (_, stranger, _) = bundle_and_leaf("Attacker CA");
        let v = ClientVerifier::new(Mode::Optional, Some(&bundle), 3);
        let (verdict, chain) = v.verdict(Some(&[stranger]));
        assert_eq!(verdict, Verdict::Failed(FailReason::UnknownCa));
        assert!(chain.is_none());
        let (verdict, chain) = v.verdict(Some(&[good]));
        assert_eq!(verdict, Verdict::Success);
        assert_eq!(chain.unwrap().certs.len(), 2, "leaf and anchor");
    }
}
