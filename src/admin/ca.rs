//! The built-in CA (`/api/v1/ca/…`): signing CSRs, enrollment tokens (made, listed, deleted)
//! and the list of issued certificates.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{JsonBody, Res, check_name, created, new_token};
use super::{Actor, ApiError, App};
use crate::store;

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        ca_sign,
        ca_enrollment_token,
        list_enrollment_tokens,
        delete_enrollment_token,
        ca_issued
    ),
    components(schemas(
        SignBody,
        SignedView,
        EnrollmentTokenBody,
        EnrollmentToken,
        EnrollmentTokenView
    ))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/ca/sign", post(ca_sign))
        .route(
            "/api/v1/ca/enrollment-tokens",
            get(list_enrollment_tokens).post(ca_enrollment_token),
        )
        .route(
            "/api/v1/ca/enrollment-tokens/{id}",
            delete(delete_enrollment_token),
        )
        .route("/api/v1/ca/issued", get(ca_issued))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    /// PEM certificate signing request.
    pub csr_pem: String,
    /// client (default), server or spiffe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// e.g. 24h; default by profile; capped by the CA's own expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignedView {
    /// The certificate followed by the intermediate.
    pub certificate_pem: String,
    pub serial: String,
    pub not_after: String,
}

/// An enrollment token buys exactly one identity, fixed here: the certificate's subject is
/// `CN=<common_name>` (default: the token's name), its SANs are the names listed, and a CSR
/// asking for anything else is refused without spending the token.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentTokenBody {
    /// What the token is for (shown in the audit log).
    pub name: String,
    /// The certificate's common name; default: `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// DNS names the certificate carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// IP addresses the certificate carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// Email addresses the certificate carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
    /// A SPIFFE ID, or a pattern ending in `/*` (the CSR names one path segment there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Profile of the certificate it buys; default client (spiffe when spiffe_id is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Lifetime of the certificate it buys (1s to 3650d); default by profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<String>,
    /// How long the token stays valid (1s to 90d); default 24h.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentToken {
    /// Single use; shown once.
    pub token: String,
    pub expires_at: String,
    /// What the token buys.
    pub grant: crate::ca::Grant,
}

/// An enrollment token as listed: never the token itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentTokenView {
    /// The first 16 hex characters of the token's SHA-256 (for DELETE).
    pub id: String,
    pub name: String,
    pub expires_at: String,
    /// When it was spent, if it was.
    pub used_at: Option<String>,
    /// What it buys (absent for tokens made before grants existed: CN=name only).
    pub grant: Option<crate::ca::Grant>,
}

fn the_ca(app: &App) -> Res<Arc<crate::ca::Ca>> {
    app.control.ca().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_ca",
            "this gateway has no built-in CA",
            "run `symbolon ca init` and add a [ca] section to the config",
        )
    })
}

fn lifetime(s: Option<&str>) -> Res<Option<time::Duration>> {
    s.map(|l| {
        crate::ca::parse_lifetime(l)
            .map_err(|e| ApiError::invalid("bad_duration", e, crate::config::LIFETIME.describe()))
    })
    .transpose()
}

fn profile(s: Option<&str>) -> Res<crate::ca::Profile> {
    s.unwrap_or("client")
        .parse()
        .map_err(|e: String| ApiError::invalid("bad_profile", e, "client, server or spiffe"))
}

#[utoipa::path(post, path = "/api/v1/ca/sign", tag = "ca", request_body = SignBody,
    responses((status = 200, body = SignedView), (status = 404), (status = 422)))]
async fn ca_sign(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<SignBody>,
) -> Res<Json<SignedView>> {
    let ca = the_ca(&app)?;
    let p = profile(req.profile.as_deref())?;
    let l = lifetime(req.lifetime.as_deref())?;
    let issued = crate::control::issuance::sign(&app.control, &ca, &actor.0, &req.csr_pem, p, l)
        .await
        .map_err(ApiError::issuance)?;
    Ok(Json(SignedView {
        certificate_pem: issued.chain_pem,
        serial: issued.info.serial_hex.clone(),
        not_after: crate::pki::rfc3339(issued.info.not_after),
    }))
}

#[utoipa::path(post, path = "/api/v1/ca/enrollment-tokens", tag = "ca", request_body = EnrollmentTokenBody,
    responses((status = 201, body = EnrollmentToken), (status = 404), (status = 422)))]
async fn ca_enrollment_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<EnrollmentTokenBody>,
) -> Res<Response> {
    the_ca(&app)?;
    check_name("enrollment token", &req.name)?;
    let p = match (req.profile.as_deref(), &req.spiffe_id) {
        (None, Some(_)) => crate::ca::Profile::Spiffe,
        (given, _) => profile(given)?,
    };
    let range = crate::config::TOKEN_EXPIRES_IN;
    let valid = range
        .parse(req.expires_in.as_deref().unwrap_or("24h"))
        .map_err(|e| ApiError::invalid("bad_duration", e, range.describe()))?;
    let cert_lifetime = lifetime(req.lifetime.as_deref())?.unwrap_or(p.default_lifetime());
    let mut ip_addresses = Vec::new();
    for ip in &req.ip_addresses {
        ip_addresses.push(ip.parse().map_err(|_| {
            ApiError::invalid(
                "bad_grant",
                format!("ip_addresses: '{ip}' is not an IP address"),
                "for example 10.0.0.7 or 2001:db8::7",
            )
        })?);
    }
    let grant = crate::ca::Grant {
        common_name: req.common_name.clone().unwrap_or_else(|| req.name.clone()),
        dns_names: req.dns_names,
        ip_addresses,
        emails: req.emails,
        spiffe_id: req.spiffe_id,
        profile: p,
        lifetime_secs: cert_lifetime.whole_seconds(),
    };
    grant.validate().map_err(|e| {
        ApiError::invalid(
            "bad_grant",
            e,
            "see EnrollmentTokenBody in the OpenAPI document",
        )
    })?;
    let (token, sha) = new_token()?;
    let expires_at = crate::pki::unix_now() + valid.as_secs() as i64;
    let grant_json = serde_json::to_string(&grant).unwrap_or_default();
    let mut ch = super::begin(&app).await?;
    store::insert_enroll_token(
        &mut ch.tx,
        &sha,
        &req.name,
        p.name(),
        &grant_json,
        expires_at,
    )
    .await
    .map_err(store::StoreError::from)?;
    super::commit(ch, &actor, "ca.enrollment_token", &req.name, &grant_json).await?;
    Ok(created(EnrollmentToken {
        token,
        expires_at: crate::pki::rfc3339(expires_at),
        grant,
    }))
}

#[utoipa::path(get, path = "/api/v1/ca/enrollment-tokens", tag = "ca",
    responses((status = 200, body = [EnrollmentTokenView])))]
async fn list_enrollment_tokens(
    State(app): State<Arc<App>>,
) -> Res<Json<Vec<EnrollmentTokenView>>> {
    let rows = app.control.store().enroll_tokens().await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| EnrollmentTokenView {
                id: r.token_sha256.chars().take(16).collect(),
                name: r.name,
                expires_at: crate::pki::rfc3339(r.expires_at),
                used_at: r.used_at,
                grant: r.grant_json.and_then(|j| serde_json::from_str(&j).ok()),
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/ca/enrollment-tokens/{id}", tag = "ca",
    params(("id" = String, Path, description = "the id from the list")),
    responses((status = 204), (status = 404)))]
async fn delete_enrollment_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    let id = id.to_ascii_lowercase();
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("enrollment token", &id));
    }
    let mut ch = super::begin(&app).await?;
    if !store::delete_enroll_token(&mut ch.tx, &id).await? {
        return Err(ApiError::not_found("enrollment token", &id));
    }
    super::commit(ch, &actor, "ca.enrollment_token.delete", &id, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/ca/issued", tag = "ca", responses((status = 200, body = [store::IssuedRow])))]
async fn ca_issued(State(app): State<Arc<App>>) -> Res<Json<Vec<store::IssuedRow>>> {
    Ok(Json(app.control.store().issued().await?))
}
