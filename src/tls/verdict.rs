//! What a verification concludes: the domain's mode, the verdict, and why a certificate was
//! not accepted (the short codes of `X-Client-Verify`, metrics and logs).

use std::fmt;
use std::sync::Arc;

use rustls::CertificateError;

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
    /// The trust anchor the chain leads to is outside its own validity period.
    CaExpired,
    /// The leaf (or a CA above it) has an extendedKeyUsage without clientAuth.
    WrongUsage,
    /// Every valid path has more CA certificates than the domain allows.
    ChainTooDeep,
    /// A signature in the chain does not verify.
    BadSignature,
    /// The certificate has been revoked.
    Revoked,
    /// A CRL of the chain is past its nextUpdate and the policy is to reject.
    CrlExpired,
    /// A name in the chain is outside a CA's name constraints.
    NameConstraint,
    /// A certificate used as an issuer is not a CA (no basicConstraints cA=TRUE).
    IssuerNotCa,
    /// The certificate is malformed or uses something we do not support.
    BadCertificate,
}

impl FailReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::UnknownCa => "unknown_ca",
            FailReason::Expired => "expired",
            FailReason::NotYetValid => "not_yet_valid",
            FailReason::CaExpired => "ca_expired",
            FailReason::WrongUsage => "wrong_usage",
            FailReason::ChainTooDeep => "chain_too_deep",
            FailReason::BadSignature => "bad_signature",
            FailReason::Revoked => "revoked",
            FailReason::CrlExpired => "crl_expired",
            FailReason::NameConstraint => "name_constraint",
            FailReason::IssuerNotCa => "issuer_not_ca",
            FailReason::BadCertificate => "bad_certificate",
        }
    }

    pub(crate) fn from_webpki(e: &webpki::Error) -> Self {
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
            E::NameConstraintViolation => FailReason::NameConstraint,
            E::EndEntityUsedAsCa | E::CaUsedAsEndEntity => FailReason::IssuerNotCa,
            _ => FailReason::BadCertificate,
        }
    }

    /// The rustls error (and so the TLS alert) sent when `require` mode refuses a certificate.
    pub(crate) fn to_rustls(self) -> rustls::Error {
        let e = match self {
            FailReason::UnknownCa => CertificateError::UnknownIssuer,
            FailReason::Expired | FailReason::CaExpired => CertificateError::Expired,
            FailReason::NotYetValid => CertificateError::NotValidYet,
            FailReason::WrongUsage => CertificateError::InvalidPurpose,
            // RFC 8446 §6.2: a certificate whose signature does not verify is bad_certificate
            // (decrypt_error is for the handshake signature, CertificateVerify).
            FailReason::BadSignature => CertificateError::BadEncoding,
            FailReason::Revoked => CertificateError::Revoked,
            FailReason::CrlExpired => CertificateError::ExpiredRevocationList,
            // bad_certificate
            FailReason::BadCertificate => CertificateError::BadEncoding,
            FailReason::ChainTooDeep | FailReason::NameConstraint | FailReason::IssuerNotCa => {
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

impl FailReason {
    /// A leaf webpki cannot even parse is malformed, whatever the error says.
    pub(crate) fn malformed(self) -> Self {
        match self {
            FailReason::UnknownCa => FailReason::BadCertificate,
            r => r,
        }
    }
}
