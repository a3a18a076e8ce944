//! `upstream = "builtin:ca"`: the built-in CA's endpoints for devices, on the data plane.
//! - `POST …/enroll` `{"token", "csr_pem"}`: a single-use bootstrap token buys one certificate.
//! - `POST …/renew` `{"csr_pem"}` over mTLS with a current, unrevoked certificate this CA
//!   issued, in the second half of its lifetime: the same certificate with a new lifetime (the
//!   CSR may carry a new key).
//!
//! The rules are the control plane's ([`crate::control::issuance`]); this module only reads
//! the request and asks through [`crate::shared::CaDesk`].

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::respond::json_response;
use super::{ConnContext, RespBody};
use crate::shared::{IssuedCert, Refusal, Shared};

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
    shared: &Shared,
) -> Response<RespBody> {
    let Some(desk) = shared.ca_desk().filter(|d| d.available()) else {
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
    let answer = if path.ends_with("/enroll") {
        let Ok(req) = serde_json::from_slice::<EnrollBody>(&body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body must be JSON {\"token\", \"csr_pem\"}",
                "see the enrollment docs",
            );
        };
        desk.enroll(&req.token, &req.csr_pem).await
    } else if path.ends_with("/renew") {
        // Renewal checks the presented certificate against the CA itself (signature, validity,
        // revocation, lineage), whatever the domain's mode and trust bundle say about it; the
        // handshake proved that the client holds its key.
        let Some(der) = conn.identity.leaf_der() else {
            return error(
                StatusCode::FORBIDDEN,
                "certificate_required",
                "renewal needs the certificate to renew on this connection",
                "connect with the certificate to renew (not expired, not revoked)",
            );
        };
        let Ok(req) = serde_json::from_slice::<RenewBody>(&body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the body must be JSON {\"csr_pem\"}",
                "send a CSR (it may carry a new key)",
            );
        };
        desk.renew(&der, &req.csr_pem).await
    } else {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such CA endpoint",
            "POST …/enroll or …/renew",
        );
    };
    match answer {
        Ok(issued) => issued_response(&issued),
        Err(r) => refused(&r),
    }
}

fn refused(r: &Refusal) -> Response<RespBody> {
    if r.status >= 500 {
        tracing::error!(error = %r.message, "CA request failed");
    }
    let mut resp = error(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        r.code,
        &r.message,
        &r.hint,
    );
    if let Some(secs) = r.retry_after
        && let Ok(v) = http::HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    resp
}

fn issued_response(issued: &IssuedCert) -> Response<RespBody> {
    json_response(
        StatusCode::OK,
        &json!({"certificate_pem": issued.chain_pem, "serial": issued.serial, "not_after": issued.not_after}),
    )
}
