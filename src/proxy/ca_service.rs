//! `upstream = "builtin:ca"`: the built-in CA's endpoints for devices, on the data plane.
//! - `POST …/enroll` `{"token", "csr_pem"}`: a single-use bootstrap token buys one certificate.
//! - `POST …/renew` `{"csr_pem"}` over mTLS with a current, verified, unrevoked certificate:
//!   a new certificate for the same subject and SANs (the CSR may carry a new key).

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::respond::json_response;
use super::{ConnContext, RespBody};
use crate::ca::{Ca, Profile};
use crate::gateway::State;
use crate::tls::Verdict;

const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct EnrollBody {
    token: String,
    csr_pem: String,
}

#[derive(Deserialize)]
struct RenewBody {
    csr_pem: String,
}

fn error(status: StatusCode, code: &str, message: &str, hint: &str) -> Response<RespBody> {
    json_response(
        status,
        &json!({"error": {"code": code, "message": message, "hint": hint}}),
    )
}

pub(super) async fn handle(
    req: Request<Incoming>,
    conn: &ConnContext,
    state: &State,
) -> Response<RespBody> {
    let Some(ca) = state.ca.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "no_ca",
            "this gateway has no built-in CA",
            "add a [ca] section to the config",
        );
    };
    if req.method() != http::Method::POST {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST",
            "POST …/enroll or …/renew",
        );
    }
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the request body is over 64 KiB or was cut off",
                "send one CSR",
            );
        }
    };
    if path.ends_with("/enroll") {
        enroll(&ca, &body, state).await
    } else if path.ends_with("/renew") {
        renew(&ca, &body, conn, state).await
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such CA endpoint",
            "POST …/enroll or …/renew",
        )
    }
}

async fn enroll(ca: &Ca, body: &[u8], state: &State) -> Response<RespBody> {
    let Ok(req) = serde_json::from_slice::<EnrollBody>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body must be JSON {\"token\", \"csr_pem\"}",
            "see the enrollment docs",
        );
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, req.token.as_bytes());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (name, profile) = match state
        .store
        .use_enroll_token(&crate::pki::hex(digest.as_ref()), now)
        .await
    {
        Ok(Some(t)) => t,
        Ok(None) => {
            return error(
                StatusCode::FORBIDDEN,
                "invalid_token",
                "the enrollment token is unknown, expired or already used",
                "ask the operator for a new token",
            );
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
                "",
            );
        }
    };
    let profile: Profile = profile.parse().unwrap_or(Profile::Client);
    match ca.sign_csr(&req.csr_pem, profile, None) {
        Ok(issued) => {
            let _ = state
                .store
                .record_issued(&Ca::record(&issued, profile, "enroll"))
                .await;
            tracing::info!(target: "symbolon::audit", actor = %format!("enroll:{name}"), action = "ca.enroll", object = %issued.info.subject, detail = %issued.info.serial_hex, "change applied");
            json_response(
                StatusCode::OK,
                &json!({"certificate_pem": issued.chain_pem, "serial": issued.info.serial_hex, "not_after": crate::pki::rfc3339(issued.info.not_after)}),
            )
        }
        Err(e) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_csr",
            &e.to_string(),
            "send a PEM CSR",
        ),
    }
}

async fn renew(ca: &Ca, body: &[u8], conn: &ConnContext, state: &State) -> Response<RespBody> {
    let (Some(leaf), Verdict::Success) = (&conn.identity.leaf, conn.identity.verdict) else {
        return error(
            StatusCode::FORBIDDEN,
            "certificate_required",
            "renewal needs a current, valid client certificate on this connection",
            "connect with the certificate to renew (not expired, not revoked)",
        );
    };
    let signed = conn
        .identity
        .chain
        .as_ref()
        .and_then(|c| c.certs.first())
        .is_some_and(|c| ca.signed(&c.der));
    if !signed {
        return error(
            StatusCode::FORBIDDEN,
            "not_ours",
            "this certificate was not issued by the built-in CA",
            "renew it with the CA that issued it",
        );
    }
    let Ok(req) = serde_json::from_slice::<RenewBody>(body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body must be JSON {\"csr_pem\"}",
            "send a CSR (it may carry a new key)",
        );
    };
    let profile = if leaf.spiffe_id.is_some() {
        Profile::Spiffe
    } else {
        Profile::Client
    };
    let Some(der) = conn.identity.leaf_der() else {
        return error(
            StatusCode::FORBIDDEN,
            "certificate_required",
            "no client certificate",
            "",
        );
    };
    match ca.renew(&der, &req.csr_pem, profile, None) {
        Ok(issued) => {
            let _ = state
                .store
                .record_issued(&Ca::record(&issued, profile, "renew"))
                .await;
            tracing::info!(target: "symbolon::audit", actor = %format!("cert:{}", leaf.fingerprint_sha256), action = "ca.renew", object = %issued.info.subject, detail = %issued.info.serial_hex, "change applied");
            json_response(
                StatusCode::OK,
                &json!({"certificate_pem": issued.chain_pem, "serial": issued.info.serial_hex, "not_after": crate::pki::rfc3339(issued.info.not_after)}),
            )
        }
        Err(e) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_csr",
            &e.to_string(),
            "send a PEM CSR",
        ),
    }
}
