//! The one place where admin API failures become HTTP responses:
//! `{"error": {"code", "message", "hint"}}` with a status that says whose fault it is.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::pki::PkiError;
use crate::snapshot::SnapshotError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub hint: String,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// A refusal of the built-in CA, with its status and code.
    pub fn issuance(e: crate::control::issuance::IssuanceError) -> Self {
        let (status, code, hint) = e.parts();
        if status >= 500 {
            tracing::error!(error = %e, "CA request failed");
        }
        Self::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            e.to_string(),
            hint,
        )
    }

    pub fn not_found(kind: &str, key: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {kind} with id or name '{key}'"),
            "list what exists with a GET on the collection (or `symbolon ... list`)",
        )
    }

    pub fn duplicate(kind: &str, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "duplicate_name",
            format!("a {kind} named '{name}' already exists"),
            "choose another name, or update the existing one",
        )
    }

    pub fn in_use(message: String, hint: &str) -> Self {
        Self::new(StatusCode::CONFLICT, "in_use", message, hint)
    }

    pub fn invalid(
        code: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message, hint)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an admin client certificate or a bearer token is required",
            "present the admin certificate from the data dir (admin.pem, admin.key) or send Authorization: Bearer <token>",
        )
    }

    /// A PEM or key problem in an upload; `field` names the JSON field it came from.
    pub fn pki(field: &str, e: PkiError) -> Self {
        let code = match &e {
            PkiError::KeyInCertFile { .. } => "private_key_in_certificate",
            PkiError::NoCertificates { .. }
            | PkiError::MalformedPem { .. }
            | PkiError::BadCertificate { .. } => "malformed_pem",
            PkiError::NoPrivateKey { .. } | PkiError::UnusableKey { .. } => "bad_private_key",
            PkiError::KeyMismatch { .. } => "key_mismatch",
            PkiError::NotCa { .. } => "not_a_ca",
            PkiError::ExpiredCa { .. } => "expired_ca",
            PkiError::BadAnchor { .. } => "bad_ca",
            PkiError::BadCrl { .. } => "bad_crl",
            PkiError::TooLarge { .. } => "too_large",
            PkiError::Read { .. } => "internal",
        };
        let (message, hint) = split_fix(&e.to_string());
        let mut err = Self::invalid(code, format!("{field}: {message}"), hint);
        if code == "too_large" {
            err.status = StatusCode::PAYLOAD_TOO_LARGE;
        }
        err
    }

    /// The new configuration would not be valid: nothing was applied.
    pub fn snapshot(e: SnapshotError) -> Self {
        match e {
            SnapshotError::Pki { source, domain } => {
                let mut err = Self::pki(&format!("domain '{domain}'"), source);
                err.message = format!("{} (nothing was changed)", err.message);
                err
            }
            other => {
                let (message, hint) = split_fix(&other.to_string());
                Self::invalid(
                    "invalid_change",
                    format!("{message} (nothing was changed)"),
                    if hint.is_empty() {
                        "fix the request and send it again".into()
                    } else {
                        hint
                    },
                )
            }
        }
    }
}

impl ApiError {
    /// A change that was not applied: its snapshot or the store refused it.
    pub fn change(e: crate::control::ChangeError) -> Self {
        match e {
            crate::control::ChangeError::Snapshot(e) => Self::snapshot(e),
            crate::control::ChangeError::Store(e) => e.into(),
        }
    }
}

/// Splits "problem. Fix: what to do" into its two halves.
pub(super) fn split_fix(text: &str) -> (String, String) {
    match text.split_once(". Fix: ") {
        Some((m, h)) => (m.to_string(), h.to_string()),
        None => (text.to_string(), String::new()),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the store failed; nothing was changed",
            "see the server log",
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is over the admin API's size limit",
                "upload the PEM file itself; raise admin.max_upload_bytes if a bundle is really that large",
            );
        }
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            r.body_text(),
            "send a JSON body as the OpenAPI document at /api/v1/openapi.json describes",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code, "message": self.message, "hint": self.hint }
        });
        (self.status, Json(body)).into_response()
    }
}
