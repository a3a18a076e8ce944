//! Self-service enrollment (`/api/v1/self-service/…`): a self-service token creates
//! identities for certificates whose key it proves it holds, with a policy open to it, in its
//! own namespace of names.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{JsonBody, Res, check_name, created, first_public_cert};
use super::identities::{Creator, IdentityCreate, IdentityCreated, insert_identity};
use super::{Actor, ApiError, App};

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(self_service, self_service_challenge),
    components(schemas(Challenge, SelfServiceBody))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/self-service/identities", post(self_service))
        .route(
            "/api/v1/self-service/challenge",
            post(self_service_challenge),
        )
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfServiceBody {
    pub name: String,
    /// The client's public certificate (PEM).
    pub certificate_pem: String,
    /// A policy marked `self_service`.
    pub policy: String,
    /// A challenge from `POST /api/v1/self-service/challenge`.
    #[serde(default)]
    pub challenge: String,
    /// Base64 signature of the challenge by the certificate's key (SHA-256; ECDSA, RSA
    /// PKCS#1 v1.5 or PSS, Ed25519).
    #[serde(default)]
    pub signature: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Challenge {
    /// Sign these exact bytes with the certificate's key, e.g.
    /// `printf %s "$CHALLENGE" | openssl dgst -sha256 -sign client.key | base64 -w0`
    /// (Ed25519: `openssl pkeyutl -sign -rawin`). Single use.
    pub challenge: String,
    pub expires_at: String,
}

#[utoipa::path(post, path = "/api/v1/self-service/challenge", tag = "authz",
    responses((status = 201, body = Challenge), (status = 429)))]
async fn self_service_challenge(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> Res<Response> {
    let (challenge, expires_at) = app.challenges.issue(&actor.0).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_challenges",
            "too many challenges are outstanding",
            "use the challenges you have (they expire after 5 minutes)",
        )
    })?;
    Ok(created(Challenge {
        challenge,
        expires_at: crate::pki::rfc3339(expires_at),
    }))
}

#[utoipa::path(post, path = "/api/v1/self-service/identities", tag = "authz", request_body = SelfServiceBody,
    responses((status = 201, body = IdentityCreated), (status = 403), (status = 409), (status = 422)))]
async fn self_service(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<SelfServiceBody>,
) -> Res<Response> {
    // Proof of possession: the certificate's key signed a challenge this gateway gave to this
    // caller (single use, 5 minutes).
    let fresh = app.challenges.take(&actor.0, &req.challenge);
    let (der, info) = first_public_cert(&req.certificate_pem)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(req.signature.trim())
        .unwrap_or_default();
    if !fresh || !crate::pki::made_by_key_of(&der, req.challenge.as_bytes(), &signature) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "proof_of_possession",
            "the signature does not prove that you hold the certificate's key (or the challenge is unknown, used or expired)",
            "POST /api/v1/self-service/challenge, sign the challenge with the certificate's key (`printf %s \"$CHALLENGE\" | openssl dgst -sha256 -sign client.key | base64 -w0`), and send it as signature within 5 minutes",
        ));
    }
    let now = crate::pki::unix_now();
    if info.not_after <= now || info.not_before > now {
        return Err(ApiError::invalid(
            "certificate_not_current",
            "the certificate is expired or not valid yet",
            "bind a current certificate",
        ));
    }
    let max_identities = app.max_identities(&actor.0);
    // Self-service names live in the token's own namespace (`NAME@TOKEN`): a caller can
    // neither take an admin's name nor learn which names exist outside its namespace.
    check_name("identity", &req.name)?;
    if req.name.contains('@') {
        return Err(ApiError::invalid(
            "bad_name",
            "a self-service identity name may not contain '@'",
            "use letters, digits, '-', '_' or '.'; the gateway adds @<token name>",
        ));
    }
    let namespace = match (
        actor.0.strip_prefix("token:"),
        actor.0.strip_prefix("cert:"),
    ) {
        (Some(token), _) => token.to_string(),
        (None, Some(fp)) => format!("cert-{}", fp.get(..16).unwrap_or(fp)),
        _ => actor.0.replace(':', "-"),
    };
    let create = IdentityCreate {
        name: format!("{}@{namespace}", req.name),
        certificate_pem: Some(req.certificate_pem),
        fingerprint: None,
        token: false,
        policy: Some(req.policy),
        active: true,
        expires_at: None,
    };
    insert_identity(
        &app,
        &actor,
        create,
        "identity.self_service",
        Creator::SelfService { max_identities },
    )
    .await
}
