//! Revocations (`/api/v1/revocations`): certificates revoked by fingerprint or by issuer and
//! serial; the renewals of a certificate of the built-in CA go with it.

use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{JsonBody, Res, check_fingerprint, created, first_public_cert};
use super::common::{refuse_private_key, state};
use super::{Actor, ApiError, App};
use crate::store;

#[derive(utoipa::OpenApi)]
#[openapi(paths(list_revocations, revoke), components(schemas(RevokeBody)))]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new().route("/api/v1/revocations", get(list_revocations).post(revoke))
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// The certificate to revoke (public PEM), or
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_pem: Option<String>,
    /// its SHA-256 fingerprint, or
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// its serial number (hex), which is revoked for one issuer only: the CA in `issuer_pem`,
    /// or the built-in CA when that is not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// With `serial`: the issuing CA's certificate (public PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_pem: Option<String>,
    /// RFC 5280 reason name; default `unspecified`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The issuer key (SHA-256 of the SubjectPublicKeyInfo) of a CA certificate given as PEM.
fn issuer_key_of(pem: &str) -> Res<String> {
    refuse_private_key(pem)?;
    let certs = crate::pki::parse_certs(pem.as_bytes(), Path::new("issuer_pem"))
        .map_err(|e| ApiError::pki("issuer_pem", e))?;
    let first = certs.first().and_then(|c| {
        crate::pki::CertInfo::parse(c)
            .ok()
            .filter(|i| i.is_ca)
            .and(crate::tls::verify::spki_key(c))
    });
    first.ok_or_else(|| {
        ApiError::invalid(
            "issuer_not_ca",
            "issuer_pem is not a CA certificate",
            "give the certificate of the CA that issued the serial (basicConstraints cA=TRUE)",
        )
    })
}

#[utoipa::path(get, path = "/api/v1/revocations", tag = "revocation", responses((status = 200, body = [store::RevocationRow])))]
async fn list_revocations(State(app): State<Arc<App>>) -> Res<Json<Vec<store::RevocationRow>>> {
    Ok(Json(state(&app).await?.revocations))
}

#[utoipa::path(post, path = "/api/v1/revocations", tag = "revocation", request_body = RevokeBody,
    responses((status = 201, description = "Revoked: new handshakes, resumed sessions and open connections refuse it at once", body = store::RevocationRow), (status = 409), (status = 422)))]
async fn revoke(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<RevokeBody>,
) -> Res<Response> {
    let reason = req.reason.unwrap_or_else(|| "unspecified".into());
    if !crate::revocation::REASONS.contains(&reason.as_str()) {
        return Err(ApiError::invalid(
            "bad_reason",
            format!("'{reason}' is not a revocation reason"),
            format!("use one of {}", crate::revocation::REASONS.join(", ")),
        ));
    }
    let (fingerprint, serial, issuer, subject) = match (
        &req.certificate_pem,
        &req.fingerprint,
        &req.serial,
    ) {
        (Some(pem), None, None) => {
            // Any certificate, CA certificates (intermediates) included: revoked by its
            // fingerprint, which names exactly one certificate whoever issued it.
            let (first, info) = first_public_cert(pem)?;
            // A certificate the built-in CA signed is also listed by serial (with this
            // CA as its issuer), so it goes on the CRL.
            let (serial, issuer) = match &app.control.ca() {
                Some(ca) if ca.signed(&first) => (
                    Some(crate::revocation::normalize_serial(&info.serial_hex)),
                    Some(ca.issuer_key()),
                ),
                _ => (None, None),
            };
            (
                Some(info.fingerprint_sha256),
                serial,
                issuer,
                Some(info.subject),
            )
        }
        (None, Some(fp), None) => (Some(check_fingerprint(fp)?), None, None, None),
        (None, None, Some(serial)) => {
            let s = crate::revocation::normalize_serial(serial);
            if s == "0" && !serial.chars().any(|c| c.is_ascii_hexdigit()) {
                return Err(ApiError::invalid(
                    "bad_serial",
                    format!("'{serial}' is not a serial number"),
                    "give it in hex, as `openssl x509 -noout -serial` prints it",
                ));
            }
            let issuer = match (&req.issuer_pem, &app.control.ca()) {
                (Some(pem), _) => issuer_key_of(pem)?,
                (None, Some(ca)) => ca.issuer_key(),
                (None, None) => {
                    return Err(ApiError::invalid(
                        "issuer_required",
                        "a serial number names a certificate only together with its issuer, and there is no built-in CA to default to",
                        "add issuer_pem (the issuing CA's certificate), or revoke by certificate_pem or fingerprint",
                    ));
                }
            };
            (None, Some(s), Some(issuer), None)
        }
        _ => {
            return Err(ApiError::invalid(
                "one_identifier",
                "give exactly one of certificate_pem, fingerprint or serial",
                "revoke one certificate per request",
            ));
        }
    };
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    if st.revocations.iter().any(|r| {
        (fingerprint.is_some() && r.fingerprint == fingerprint)
            || (serial.is_some() && r.serial == serial && r.issuer == issuer)
    }) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_revoked",
            "this certificate is already revoked",
            "list revocations with GET /api/v1/revocations",
        ));
    }
    let row = store::RevocationRow {
        id: store::new_id(),
        fingerprint,
        serial,
        reason,
        revoked_at: store::now(),
        subject,
        issuer,
    };
    store::insert_revocation(&mut ch.tx, &row).await?;
    // The renewals descended from a certificate of the built-in CA go with it.
    let ours = app.control.ca().map(|ca| ca.issuer_key());
    let record = match (&row.fingerprint, &row.serial) {
        (Some(fp), _) => store::issued_by_fingerprint(&mut ch.tx, fp).await?,
        (None, Some(serial)) if row.issuer.is_some() && row.issuer == ours => {
            store::issued_by_serial(&mut ch.tx, serial).await?
        }
        _ => None,
    };
    let mut detail = row.reason.clone();
    if let Some(record) = record {
        let descendants = crate::control::issuance::descendants(&mut ch.tx, &record.serial).await?;
        let mut revoked = 0;
        for d in &descendants {
            if st.revocations.iter().any(|r| {
                r.fingerprint.as_deref() == Some(d.fingerprint.as_str())
                    || (r.serial.as_deref() == Some(d.serial.as_str()) && r.issuer == ours)
            }) {
                continue;
            }
            store::insert_revocation(
                &mut ch.tx,
                &store::RevocationRow {
                    id: store::new_id(),
                    fingerprint: Some(d.fingerprint.clone()),
                    serial: Some(d.serial.clone()),
                    reason: row.reason.clone(),
                    revoked_at: row.revoked_at.clone(),
                    subject: Some(d.subject.clone()),
                    issuer: ours.clone(),
                },
            )
            .await?;
            revoked += 1;
        }
        if revoked > 0 {
            detail = format!(
                "{}; and {revoked} renewal(s) descended from serial {}",
                row.reason, record.serial
            );
        }
    }
    let target = row
        .fingerprint
        .clone()
        .or(row.serial.clone())
        .unwrap_or_default();
    super::commit(ch, &actor, "certificate.revoke", &target, &detail).await?;
    Ok(created(row))
}
