//! Header rewriting on the way to the upstream: drop hop-by-hop headers, drop every identity
//! header a client sent (so nobody can spoof an identity), then set ours and `X-Forwarded-*`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::identity::ClientIdentity;

pub const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
pub const CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");
pub const X_CLIENT_VERIFY: HeaderName = HeaderName::from_static("x-client-verify");
pub const X_CLIENT_SUBJECT: HeaderName = HeaderName::from_static("x-client-subject");
pub const X_CLIENT_SPIFFE_ID: HeaderName = HeaderName::from_static("x-client-spiffe-id");
pub const X_CLIENT_FINGERPRINT: HeaderName = HeaderName::from_static("x-client-fingerprint-sha256");
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Identity headers only the gateway may set.
pub const IDENTITY_HEADERS: [HeaderName; 7] = [
    CLIENT_CERT,
    CLIENT_CERT_CHAIN,
    X_CLIENT_VERIFY,
    X_CLIENT_SUBJECT,
    X_CLIENT_SPIFFE_ID,
    X_CLIENT_FINGERPRINT,
    X_FORWARDED_CLIENT_CERT,
];

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Rewrites request headers for the upstream.
pub fn rewrite_request(headers: &mut HeaderMap, id: &ClientIdentity, client_ip: IpAddr) {
    strip_hop_by_hop(headers);
    for name in IDENTITY_HEADERS {
        headers.remove(name);
    }
    let h = &id.headers;
    headers.insert(X_CLIENT_VERIFY, h.verify.clone());
    let optional = [
        (CLIENT_CERT, &h.client_cert),
        (CLIENT_CERT_CHAIN, &h.client_cert_chain),
        (X_CLIENT_SUBJECT, &h.subject),
        (X_CLIENT_SPIFFE_ID, &h.spiffe_id),
        (X_CLIENT_FINGERPRINT, &h.fingerprint),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            headers.insert(name, v.clone());
        }
    }
    let ip = client_ip.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Verdict;

    #[test]
    fn spoofed_identity_is_removed() {
        let mut h = HeaderMap::new();
        h.insert("x-client-verify", HeaderValue::from_static("SUCCESS"));
        h.insert("client-cert", HeaderValue::from_static(":Zm9v:"));
        h.insert("x-client-subject", HeaderValue::from_static("CN=admin"));
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        let id = ClientIdentity::new(Verdict::None, None);
        rewrite_request(&mut h, &id, "10.0.0.1".parse().unwrap());
        assert_eq!(h.get("x-client-verify").unwrap(), "NONE");
        assert!(h.get("client-cert").is_none());
        assert!(h.get("x-client-subject").is_none());
        assert!(h.get("x-secret").is_none());
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1");
    }
}
