//! Read-only reports on live state: certificates expiring soon (`/api/v1/expiring`), the
//! transition report (`/api/v1/transition-report`), and whether a domain would accept a
//! certificate (`/api/v1/verify`).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{JsonBody, Res};
use super::{ApiError, App};
use crate::authz::TransitionEntry;

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(expiring, transition_report, verify),
    components(schemas(VerifyBody))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/expiring", get(expiring))
        .route("/api/v1/transition-report", get(transition_report))
        .route("/api/v1/verify", post(verify))
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
pub struct ExpiringQuery {
    /// How far ahead to look: `30d` (default), `12h`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/expiring", tag = "lifecycle", params(ExpiringQuery),
    responses((status = 200, description = "Certificates expiring within the window (expired ones included), soonest first", body = [crate::expiry::KnownCert]), (status = 422)))]
async fn expiring(
    State(app): State<Arc<App>>,
    Query(q): Query<ExpiringQuery>,
) -> Res<Json<Vec<crate::expiry::KnownCert>>> {
    let within = q.within.as_deref().unwrap_or("30d");
    let range = crate::config::EXPIRING_WITHIN;
    let secs = range
        .parse(within)
        .map_err(|e| ApiError::invalid("bad_duration", e, range.describe()))?
        .as_secs() as i64;
    let now = crate::pki::unix_now();
    let snapshot = app.control.shared().snapshot();
    Ok(Json(app.control.shared().expiry.expiring(
        &snapshot.known_certs,
        now,
        secs,
    )))
}

#[utoipa::path(get, path = "/api/v1/transition-report", tag = "authz",
    responses((status = 200, description = "Client certificates that would be rejected if enforcement were switched on, most frequent first", body = [TransitionEntry])))]
async fn transition_report(State(app): State<Arc<App>>) -> Res<Json<Vec<TransitionEntry>>> {
    Ok(Json(app.control.shared().authz.transition_report()))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The client certificate, followed by the intermediates it would send (PEM, no key).
    pub certificate_pem: String,
    /// Host name of the domain to check against.
    pub domain: String,
}

#[utoipa::path(post, path = "/api/v1/verify", tag = "authz", request_body = VerifyBody,
    responses((status = 200, description = "Whether the domain would accept the certificate, and why not", body = crate::explain::Explanation), (status = 404), (status = 422)))]
async fn verify(
    State(app): State<Arc<App>>,
    JsonBody(req): JsonBody<VerifyBody>,
) -> Res<Json<crate::explain::Explanation>> {
    if req.certificate_pem.contains("PRIVATE KEY") {
        return Err(ApiError::invalid(
            "private_key_not_allowed",
            "certificate_pem contains a private key",
            "send only the certificates",
        ));
    }
    let chain =
        crate::pki::parse_certs(req.certificate_pem.as_bytes(), Path::new("certificate_pem"))
            .map_err(|e| ApiError::pki("certificate_pem", e))?;
    let snapshot = app.control.shared().snapshot();
    let host = req.domain.trim().to_ascii_lowercase();
    let domain = snapshot
        .domain_for_host(&host)
        .ok_or_else(|| ApiError::not_found("domain", &host))?;
    crate::explain::explain(domain, &chain, rustls::pki_types::UnixTime::now())
        .map(Json)
        .map_err(|e| ApiError::invalid("malformed_pem", e, "send a PEM certificate"))
}
