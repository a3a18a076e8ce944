//! Client-certificate verification for one domain.
//!
//! One verifier serves both modes: in `require` a bad chain fails the handshake with the matching
//! TLS alert; in `optional` the handshake proceeds and the reason is recorded. In every mode the
//! client's signature over the handshake (CertificateVerify) is checked, so a client that sends
//! someone else's certificate without the key never gets through.
//!
//! rustls gives the verifier no way to attach data to the connection, so failures seen in optional
//! mode are kept in a small cache keyed by the hash of the presented chain, and read back once the
//! handshake is done (see [`ClientVerifier::verdict`]).

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

/// Whether a domain asks for, and insists on, a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No valid client certificate: the handshake fails with the proper alert.
    Require,
    /// The connection proceeds; the verdict and its reason go to the upstream and the logs.
    Optional,
    /// No client certificate is requested.
    Off,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Require => "require",
            Mode::Optional => "optional",
            Mode::Off => "off",
        })
    }
}

/// Why a client certificate was not accepted. The `Display` form is the short code used in
/// `X-Client-Verify: FAILED:<code>`, metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The chain does not lead to a CA in the domain's trust bundle.
    UnknownCa,
    /// A certificate in the chain is past its not-after.
    Expired,
    /// A certificate in the chain is before its not-before.
    NotYetValid,
    /// The leaf has an extendedKeyUsage without clientAuth.
    WrongUsage,
    /// The verified chain has more CA certificates than the domain allows.
    ChainTooDeep,
    /// A signature in the chain does not verify.
    BadSignature,
    /// The certificate has been revoked.
    Revoked,
    /// A CRL of the chain is past its nextUpdate and the policy is to reject.
    CrlExpired,
    /// The certificate is malformed or uses something we do not support.
    BadCertificate,
}

impl FailReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::UnknownCa => "unknown_ca",
            FailReason::Expired => "expired",
            FailReason::NotYetValid => "not_yet_valid",
            FailReason::WrongUsage => "wrong_usage",
            FailReason::ChainTooDeep => "chain_too_deep",
            FailReason::BadSignature => "bad_signature",
            FailReason::Revoked => "revoked",
            FailReason::CrlExpired => "crl_expired",
            FailReason::BadCertificate => "bad_certificate",
        }
    }

    fn from_webpki(e: &webpki::Error) -> Self {
        use webpki::Error as E;
        match e {
            E::UnknownIssuer => FailReason::UnknownCa,
            E::CertExpired { .. } => FailReason::Expired,
            E::CertNotValidYet { .. } => FailReason::NotYetValid,
            #[allow(deprecated)]
            E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => FailReason::WrongUsage,
            E::MaximumPathDepthExceeded | E::PathLenConstraintViolated => FailReason::ChainTooDeep,
            E::InvalidSignatureForPublicKey => FailReason::BadSignature,
            E::CertRevoked => FailReason::Revoked,
            E::CrlExpired { .. } => FailReason::CrlExpired,
            _ => FailReason::BadCertificate,
        }
    }

    /// The rustls error (and so the TLS alert) sent when `require` mode refuses a certificate.
    fn to_rustls(self) -> rustls::Error {
        let e = match self {
            FailReason::UnknownCa => CertificateError::UnknownIssuer,
            FailReason::Expired => CertificateError::Expired,
            FailReason::NotYetValid => CertificateError::NotValidYet,
            FailReason::WrongUsage => CertificateError::InvalidPurpose,
            FailReason::BadSignature => CertificateError::BadSignature,
            FailReason::Revoked => CertificateError::Revoked,
            FailReason::CrlExpired => CertificateError::ExpiredRevocationList,
            FailReason::ChainTooDeep | FailReason::BadCertificate => {
                CertificateError::Other(rustls::OtherError(Arc::new(Rejected(self))))
            }
        };
        rustls::Error::InvalidCertificate(e)
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Carries a [`FailReason`] through rustls for the reasons rustls has no variant of its own for.
#[derive(Debug, thiserror::Error)]
#[error("client certificate rejected: {0}")]
pub struct Rejected(pub FailReason);

/// The outcome of client authentication on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failed(FailReason),
    None,
}

/// Default for the number of CA certificates allowed above the client certificate in its verified
/// chain (the trust anchor included), as nginx's `ssl_verify_depth`.
pub const DEFAULT_MAX_CHAIN_DEPTH: usize = 3;

const FAILURE_CACHE_CAP: usize = 4096;
const FAILURE_TTL: Duration = Duration::from_secs(60);
const VERIFIED_CACHE_CAP: usize = 16 * 1024;
const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// A chain that verified: it stays valid while `now` is inside every certificate's validity.
#[derive(Clone, Copy)]
struct Verified {
    valid_from: u64,
    valid_until: u64,
    at: Instant,
}

type ChainKey = [u8; 32];

/// The client-certificate verifier of one domain.
pub struct ClientVerifier {
    mode: Mode,
    anchors: Vec<TrustAnchor<'static>>,
    subjects: Vec<DistinguishedName>,
    max_depth: usize,
    algs: WebPkiSupportedAlgorithms,
    failures: Mutex<HashMap<ChainKey, (FailReason, Instant)>>,
    revocations: Arc<crate::revocation::Revocations>,
    crls: Vec<webpki::CertRevocationList<'static>>,
    crl_expiry: webpki::ExpirationPolicy,
    /// Chains that verified recently, so a returning client costs one signature check
    /// (CertificateVerify, never cached) instead of two. The cache belongs to this verifier,
    /// which is rebuilt with every snapshot: a trust change empties it.
    verified: Mutex<HashMap<ChainKey, Verified>>,
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
        if let Some(bundle) = bundle {
            for der in &bundle.certs {
                // The bundle was validated with the same call when it was loaded.
                if let Ok(anchor) = webpki::anchor_from_trusted_cert(der) {
                    subjects.push(DistinguishedName::in_sequence(anchor.subject.as_ref()));
                    anchors.push(anchor.to_owned());
                }
            }
        }
        Self {
            mode,
            anchors,
            subjects,
            max_depth,
            algs: rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
            failures: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            revocations,
            crls: Vec::new(),
            crl_expiry: webpki::ExpirationPolicy::Enforce,
        }
    }

    /// Adds CRLs of the bundle's CAs; `enforce_expiry` refuses chains whose CRL is past its
    /// nextUpdate.
    pub fn with_crls(
        mut self,
        crls: Vec<webpki::CertRevocationList<'static>>,
        enforce_expiry: bool,
    ) -> Self {
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

    /// Verifies a chain against the trust bundle at time `now`: path to an anchor, validity
    /// periods, clientAuth EKU when present, and the depth limit.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), FailReason> {
        self.check_keyed(
            chain_key(end_entity, intermediates),
            end_entity,
            intermediates,
            now,
        )
    }

    fn check_keyed(
        &self,
        key: ChainKey,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), FailReason> {
        if !self.revocations.is_empty()
            && std::iter::once(end_entity)
                .chain(intermediates)
                .any(|c| self.revocations.lookup_der(c).is_some())
        {
            return Err(FailReason::Revoked);
        }
        let secs = now.as_secs();
        if let Some(v) = lock(&self.verified).get(&key).copied()
            && v.valid_from <= secs
            && secs <= v.valid_until
            && v.at.elapsed() < VERIFIED_TTL
        {
            return Ok(());
        }
        let window = self.check_uncached(end_entity, intermediates, now)?;
        let mut verified = lock(&self.verified);
        if verified.len() >= VERIFIED_CACHE_CAP {
            verified.retain(|_, v| v.at.elapsed() < VERIFIED_TTL);
            if verified.len() >= VERIFIED_CACHE_CAP {
                verified.clear();
            }
        }
        if let Some((valid_from, valid_until)) = window {
            verified.insert(
                key,
                Verified {
                    valid_from,
                    valid_until,
                    at: Instant::now(),
                },
            );
        }
        Ok(())
    }

    /// Full path verification. On success returns the window in which every certificate of the
    /// presented chain is valid (for the cache), if it can be read.
    fn check_uncached(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<Option<(u64, u64)>, FailReason> {
        if self.anchors.is_empty() {
            return Err(FailReason::UnknownCa);
        }
        let cert =
            webpki::EndEntityCert::try_from(end_entity).map_err(|e| FailReason::from_webpki(&e))?;
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
        let path = cert
            .verify_for_usage(
                self.algs.all,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                revocation,
                None,
            )
            .map_err(|e| FailReason::from_webpki(&e))?;
        let depth = path.intermediate_certificates().count() + 1;
        if depth > self.max_depth {
            return Err(FailReason::ChainTooDeep);
        }
        Ok(validity_window(end_entity, intermediates))
    }

    /// The verdict for a finished handshake, given the certificates the client presented.
    /// `resumed` handshakes never ran the verifier, so their chain is checked here.
    pub fn verdict(&self, peer: Option<&[CertificateDer<'_>]>, resumed: bool) -> Verdict {
        let Some((ee, rest)) = peer.and_then(|c| c.split_first()) else {
            return Verdict::None;
        };
        if resumed {
            return match self.check(ee, rest, UnixTime::now()) {
                Ok(()) => Verdict::Success,
                Err(r) => Verdict::Failed(r),
            };
        }
        if self.mode == Mode::Require {
            // The handshake would have failed otherwise.
            return Verdict::Success;
        }
        let key = chain_key(ee, rest);
        match lock(&self.failures).get(&key) {
            Some((reason, _)) => Verdict::Failed(*reason),
            None => Verdict::Success,
        }
    }

    fn remember_failure(&self, key: ChainKey, reason: FailReason) {
        let mut failures = lock(&self.failures);
        if failures.len() >= FAILURE_CACHE_CAP {
            let now = Instant::now();
            failures.retain(|_, (_, at)| now.duration_since(*at) < FAILURE_TTL);
            if failures.len() >= FAILURE_CACHE_CAP {
                failures.clear();
            }
        }
        failures.insert(key, (reason, Instant::now()));
    }
}

/// The latest not-before and earliest not-after of the presented certificates.
fn validity_window(
    ee: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<(u64, u64)> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let mut from = 0i64;
    let mut until = i64::MAX;
    for der in std::iter::once(ee).chain(intermediates) {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        from = from.max(cert.validity().not_before.timestamp());
        until = until.min(cert.validity().not_after.timestamp());
    }
    Some((u64::try_from(from).ok()?, u64::try_from(until).ok()?))
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
        let key = chain_key(end_entity, intermediates);
        match self.check_keyed(key, end_entity, intermediates, now) {
            Ok(()) => Ok(ClientCertVerified::assertion()),
            Err(reason) if self.mode == Mode::Require => Err(reason.to_rustls()),
            Err(reason) => {
                self.remember_failure(key, reason);
                Ok(ClientCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
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
        assert_eq!(v.check(&leaf, &[], now), Ok(()));
        assert_eq!(v.check(&leaf, &[], now), Ok(()), "cached");
        assert_eq!(lock(&v.verified).len(), 1);
        let later =
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_after as u64 + 60));
        assert_eq!(v.check(&leaf, &[], later), Err(FailReason::Expired));
    }

    #[test]
    fn another_bundle_does_not_inherit_the_cache() {
        let (bundle, leaf, _) = bundle_and_leaf("CA one");
        let (other, _, _) = bundle_and_leaf("CA two");
        let v = ClientVerifier::new(Mode::Require, Some(&bundle), 3);
        assert_eq!(v.check(&leaf, &[], UnixTime::now()), Ok(()));
        let w = ClientVerifier::new(Mode::Require, Some(&other), 3);
        assert_eq!(
            w.check(&leaf, &[], UnixTime::now()),
            Err(FailReason::UnknownCa)
        );
    }
}
