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

type ChainKey = [u8; 32];

/// The client-certificate verifier of one domain.
pub struct ClientVerifier {
    mode: Mode,
    anchors: Vec<TrustAnchor<'static>>,
    subjects: Vec<DistinguishedName>,
    max_depth: usize,
    algs: WebPkiSupportedAlgorithms,
    failures: Mutex<HashMap<ChainKey, (FailReason, Instant)>>,
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
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Verifies a chain against the trust bundle at time `now`: path to an anchor, validity
    /// periods, clientAuth EKU when present, and the depth limit.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), FailReason> {
        if self.anchors.is_empty() {
            return Err(FailReason::UnknownCa);
        }
        let cert =
            webpki::EndEntityCert::try_from(end_entity).map_err(|e| FailReason::from_webpki(&e))?;
        let path = cert
            .verify_for_usage(
                self.algs.all,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| FailReason::from_webpki(&e))?;
        let depth = path.intermediate_certificates().count() + 1;
        if depth > self.max_depth {
            return Err(FailReason::ChainTooDeep);
        }
        Ok(())
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
        let failures = match self.failures.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match failures.get(&key) {
            Some((reason, _)) => Verdict::Failed(*reason),
            None => Verdict::Success,
        }
    }

    fn remember_failure(&self, key: ChainKey, reason: FailReason) {
        let mut failures = match self.failures.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
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
            Ok(()) => Ok(ClientCertVerified::assertion()),
            Err(reason) if self.mode == Mode::Require => Err(reason.to_rustls()),
            Err(reason) => {
                self.remember_failure(chain_key(end_entity, intermediates), reason);
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
