//! The one place where data-plane failures become HTTP responses:
//! `{"error": {"code", "message", "hint"}}` with the matching status.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::RespBody;

/// A request the gateway answers itself instead of forwarding it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the request has no Host header or authority")]
    NoHost,
    #[error("this connection was authenticated for '{conn_domain}', not for '{host}'")]
    Misdirected { conn_domain: String, host: String },
    #[error("no route for host '{host}' and path '{path}'")]
    NoRoute { host: String, path: String },
    #[error("the upstream {upstream} could not be reached: {detail}")]
    UpstreamConnect { upstream: String, detail: String },
    #[error("the upstream {upstream} failed: {detail}")]
    UpstreamFailed { upstream: String, detail: String },
    #[error("the upstream {upstream}: {detail}")]
    UpstreamTls {
        upstream: String,
        detail: String,
        hint: String,
    },
    #[error("the upstream {upstream} did not answer within {secs:.1} s")]
    UpstreamTimeout { upstream: String, secs: f64 },
    #[error("the request cannot be forwarded: {detail}")]
    BadRequest { detail: String },
    #[error("{}", .0.message)]
    Denied(crate::authz::Denial),
    #[error("the client certificate was revoked at {at} ({reason}); this connection is closed")]
    Revoked { reason: String, at: String },
    #[error(
        "a certificate of the client's verified chain expired at {at}; this connection is closed"
    )]
    Expired { at: String },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoHost | ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::UpstreamTls { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Denied(d) => {
                StatusCode::from_u16(d.status).unwrap_or(StatusCode::FORBIDDEN)
            }
            ProxyError::Revoked { .. } | ProxyError::Expired { .. } => StatusCode::FORBIDDEN,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoHost => "no_host",
            ProxyError::Misdirected { .. } => "misdirected_request",
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::UpstreamConnect { .. } => "upstream_unreachable",
            ProxyError::UpstreamFailed { .. } => "upstream_error",
            ProxyError::UpstreamTls { .. } => "upstream_tls",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::BadRequest { .. } => "bad_request",
            ProxyError::Denied(d) => d.code,
            ProxyError::Revoked { .. } => "certificate_revoked",
            ProxyError::Expired { .. } => "certificate_expired",
        }
    }

    fn hint(&self) -> String {
        match self {
            ProxyError::NoHost => "send a Host header".into(),
            ProxyError::Misdirected { host, .. } => {
                format!("open a new TLS connection with SNI '{host}' (curl and browsers do this when the URL names that host)")
            }
            ProxyError::NoRoute { .. } => "check the URL, or add a route for it".into(),
            ProxyError::UpstreamConnect { .. } => {
                "check that the upstream is running and the route's upstream URL is right".into()
            }
            ProxyError::UpstreamFailed { .. } => "see the upstream's logs".into(),
            ProxyError::UpstreamTls { hint, .. } => hint.clone(),
            ProxyError::UpstreamTimeout { .. } => {
                "the upstream is slow or stuck; raise timeouts.upstream_response if that is expected".into()
            }
            ProxyError::BadRequest { .. } => "fix the request".into(),
            ProxyError::Denied(d) => d.hint.clone(),
            ProxyError::Revoked { .. } => "get a new certificate from your CA".into(),
            ProxyError::Expired { .. } => {
                "renew the certificate (or the CA that expired) and reconnect".into()
            }
        }
    }

    /// The JSON error response.
    pub fn into_response(self) -> Response<RespBody> {
        if let ProxyError::Denied(d) = &self {
            return denial_response(d);
        }
        let close = matches!(
            self,
            ProxyError::Revoked { .. } | ProxyError::Expired { .. }
        );
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string(), "hint": self.hint() }
        });
        let mut resp = json_response(self.status(), &body);
        if close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<RespBody> {
    let bytes = Bytes::from(body.to_string());
    let mut resp = Response::new(
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The response for an authorization refusal (403 or 429), with its extra headers.
pub fn denial_response(d: &crate::authz::Denial) -> Response<RespBody> {
    let mut error = serde_json::json!({ "code": d.code, "message": d.message, "hint": d.hint });
    if let Some(reset) = &d.reset {
        error["reset"] = serde_json::Value::String(reset.clone());
    }
    let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = json_response(status, &serde_json::json!({ "error": error }));
    for (name, value) in &d.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            resp.headers_mut().insert(*name, v);
        }
    }
    resp
}
