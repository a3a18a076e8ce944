//! Bodies shared by several resources of the admin API (and so of its OpenAPI document). Each
//! resource's own request and response bodies are in its module. Private keys appear only in
//! requests, never in a response.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::pki::{CertInfo, rfc3339};

/// Facts about one certificate.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CertView {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    pub not_before: String,
    pub not_after: String,
}

impl From<&CertInfo> for CertView {
    fn from(i: &CertInfo) -> Self {
        Self {
            subject: i.subject.clone(),
            issuer: i.issuer.clone(),
            serial: i.serial_hex.clone(),
            fingerprint_sha256: i.fingerprint_sha256.clone(),
            not_before: rfc3339(i.not_before),
            not_after: rfc3339(i.not_after),
        }
    }
}

/// The error body every failure uses.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    pub hint: String,
}
