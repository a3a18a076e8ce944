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

/// Headers only the gateway sets, besides [`IDENTITY_HEADERS`]: a client's copy is dropped.
const PROXY_HEADERS: [&str; 4] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Whether a (lower-case) header name is `ours` as CGI, WSGI and PHP see it: `_` read as `-`
/// (`X_Client_Verify` reaches them as `HTTP_X_CLIENT_VERIFY`, the same as `X-Client-Verify`).
fn folds_to(name: &str, ours: &str) -> bool {
    name.len() == ours.len()
        && name
            .bytes()
            .zip(ours.bytes())
            .all(|(n, o)| n == o || (n == b'_' && o == b'-'))
}

/// Whether a client-sent header must go: ours in any spelling, and `X-Forwarded-For` spelt
/// with `_` (the real one is kept and appended to).
fn spoofable(name: &HeaderName) -> bool {
    let n = name.as_str();
    IDENTITY_HEADERS.iter().any(|h| folds_to(n, h.as_str()))
        || PROXY_HEADERS.iter().any(|h| folds_to(n, h))
        || (n != X_FORWARDED_FOR.as_str() && folds_to(n, X_FORWARDED_FOR.as_str()))
}

/// Rewrites request headers for the upstream.
pub fn rewrite_request(headers: &mut HeaderMap, id: &ClientIdentity, client_ip: IpAddr) {
    strip_hop_by_hop(headers);
    let spoofed: Vec<HeaderName> = headers.keys().filter(|n| spoofable(n)).cloned().collect();
    for name in spoofed {
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
    // Every X-Forwarded-For value the client sent is kept, in order, then the client's address
    // (as nginx's $proxy_add_x_forwarded_for does).
    let mut xff: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    xff.push(client_ip.to_string());
    let xff = xff.join(", ");
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
        let id = ClientIdentity::new(Verdict::None, None, None);
        rewrite_request(&mut h, &id, "10.0.0.1".parse().unwrap());
        assert_eq!(h.get("x-client-verify").unwrap(), "NONE");
        assert!(h.get("client-cert").is_none());
        assert!(h.get("x-client-subject").is_none());
        assert!(h.get("x-secret").is_none());
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1");
    }

    #[test]
    fn identity_headers_go_in_every_spelling() {
        let mut h = HeaderMap::new();
        for name in [
            "x_client_verify",
            "X_Client_Subject",
            "client_cert",
            "x-client-spiffe_id",
            "x_forwarded_client_cert",
            "forwarded",
            "x-real-ip",
            "x_real_ip",
            "x-forwarded-proto",
            "x_forwarded_for",
            "x-forwarded_host",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("CN=admin"),
            );
        }
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        h.insert("x-other_header", HeaderValue::from_static("kept"));
        let id = ClientIdentity::new(Verdict::None, None, None);
        rewrite_request(&mut h, &id, "10.0.0.1".parse().unwrap());
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert!(
            !names
                .iter()
                .any(|n| n.contains('_') && *n != "x-other_header"),
            "{names:?}"
        );
        assert!(h.get("x-client-subject").is_none());
        assert!(h.get("forwarded").is_none() && h.get("x-real-ip").is_none());
        assert_eq!(h.get("x-client-verify").unwrap(), "NONE");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"
        );
        assert_eq!(h.get("x-other_header").unwrap(), "kept");
    }
}
