//! The request pipeline after the handshake, in named phases: **route** (one authority, on the
//! connection's domain; the path normalized once; trust still current; the route) →
//! **authorize** ([`crate::authz`]) → **forward** (identity headers rewritten, the upstream) →
//! **log** (usage, metrics, the access-log line).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::respond::ProxyError;
use super::{ConnContext, RespBody, echo, headers};
use crate::authz::rules::Presented;
use crate::authz::{self, AuthMode, Denial, Identity, Request as AuthzRequest, RouteAuthz};
use crate::routing::{Route, Upstream};
use crate::shared::Shared;
use crate::snapshot::Snapshot;
use crate::tls::{Mode, Verdict};

/// What the phases learned about a request, for its log line.
#[derive(Default)]
struct Trace {
    /// The decoded path (the raw one when it could not be normalized).
    path: String,
    route: Option<String>,
    identity: Option<Arc<Identity>>,
    bytes_in: u64,
    /// The verdict when it changed after the handshake.
    verify_now: Option<&'static str>,
}

/// Handles one request. Never fails: every error becomes a response.
pub(super) async fn handle(
    req: Request<Incoming>,
    conn: Arc<ConnContext>,
    state: Arc<Shared>,
) -> Result<Response<RespBody>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let snapshot = state.snapshot();
    let mut trace = Trace::default();
    let response = match pipeline(req, &conn, &state, &snapshot, &mut trace).await {
        Ok(resp) => (resp, None),
        Err(e) => {
            let code = e.code();
            (e.into_response(), Some(code))
        }
    };
    log(
        &conn, &state, &snapshot, &method, &trace, &response, started,
    );
    Ok(response.0)
}

/// The phases after the handshake: route → authorize → forward.
async fn pipeline(
    mut req: Request<Incoming>,
    conn: &ConnContext,
    state: &Shared,
    snapshot: &Snapshot,
    trace: &mut Trace,
) -> Result<Response<RespBody>, ProxyError> {
    let routed = route(&req, conn, snapshot, trace)?;
    trace.bytes_in = content_length(req.headers());
    trace.identity = authorize(&mut req, &routed.path, routed.route, conn, state, snapshot)
        .map_err(ProxyError::Denied)?;
    let target = Target {
        host: &routed.host,
        authority: &routed.authority,
        path: &routed.forward_path,
    };
    forward(req, target, routed.route, conn, state, &snapshot.timeouts).await
}

/// A request with its route.
struct Routed<'s> {
    route: &'s Route,
    host: String,
    authority: Authority,
    /// Decoded: what routing and authorization compare.
    path: String,
    /// What the upstream receives.
    forward_path: String,
}

/// The route phase: one authority, which must belong to the connection's domain (else 421);
/// the path normalized once (routing and authorization compare its decoded form, the upstream
/// receives its forwarded form); a client whose certificate was revoked or expired since the
/// handshake is refused; then the route.
fn route<'s>(
    req: &Request<Incoming>,
    conn: &ConnContext,
    snapshot: &'s Snapshot,
    trace: &mut Trace,
) -> Result<Routed<'s>, ProxyError> {
    let normalized = crate::path::normalize(req.uri().path());
    trace.path = match &normalized {
        Ok(p) => p.decoded.clone(),
        Err(_) => req.uri().path().to_string(),
    };
    let authority = request_authority(req)?;
    let path = normalized.map_err(|bad| ProxyError::BadRequest {
        detail: format!(
            "{} (paths are normalized as the README's Security model says)",
            bad.0
        ),
    })?;
    let host = host_of(&authority);
    let same_domain = match snapshot.domain_for_host(&host) {
        Some(d) => d.name == conn.domain,
        // A host with no domain of its own (a client that connects by IP address, say) is
        // served on the default domain, unless the client named another host in SNI.
        None => {
            snapshot
                .default_domain()
                .is_some_and(|d| d.name == conn.domain)
                && conn.sni.as_deref().is_none_or(|s| s == host)
        }
    };
    if !same_domain {
        return Err(ProxyError::Misdirected {
            conn_domain: conn.domain.clone(),
            host,
        });
    }
    if let Some(revoked) = revoked(conn, snapshot) {
        trace.verify_now = Some("REVOKED");
        return Err(revoked);
    }
    if let Some(expired) = expired(conn) {
        trace.verify_now = Some("EXPIRED");
        return Err(expired);
    }
    let Some(route) = snapshot.routes.find(&host, &path.decoded) else {
        return Err(ProxyError::NoRoute {
            host,
            path: path.decoded,
        });
    };
    trace.route = Some(route.name.clone());
    Ok(Routed {
        route,
        host,
        authority,
        path: path.decoded,
        forward_path: path.forward,
    })
}

/// The log phase: usage and policy counters of the identity, metrics, the access-log line.
fn log(
    conn: &ConnContext,
    state: &Shared,
    snapshot: &Snapshot,
    method: &http::Method,
    trace: &Trace,
    (response, error_code): &(Response<RespBody>, Option<&'static str>),
    started: Instant,
) {
    let route = trace.route.as_deref().unwrap_or("-");
    let status = response.status().as_u16();
    if let Some(id) = &trace.identity {
        let bytes_out = {
            use hyper::body::Body as _;
            response
                .body()
                .size_hint()
                .exact()
                .unwrap_or_else(|| content_length(response.headers()))
        };
        state
            .authz
            .record_usage(&id.id, route, status, trace.bytes_in, bytes_out);
        if let Some(policy) = &id.policy {
            policy.count(route, status);
        }
    }
    let elapsed = started.elapsed();
    metrics::counter!("symbolon_requests_total", "route" => route.to_string(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("symbolon_request_duration_seconds", "route" => route.to_string())
        .record(elapsed.as_secs_f64());
    if snapshot.access_log {
        let id = &conn.identity;
        let leaf = id.leaf.as_ref();
        tracing::info!(
            target: "symbolon::access",
            client = %conn.peer,
            sni = conn.sni.as_deref().unwrap_or(""),
            domain = %conn.domain,
            method = %method,
            path = %trace.path,
            route,
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            verify = %trace.verify_now.map_or_else(|| id.verify_text(), str::to_string),
            fingerprint = leaf.map(|l| l.fingerprint_sha256.as_str()).unwrap_or(""),
            subject = leaf.map(|l| l.subject.as_str()).unwrap_or(""),
            spiffe_id = leaf.and_then(|l| l.spiffe_id.as_deref()).unwrap_or(""),
            error = error_code.unwrap_or(""),
            "request"
        );
    }
}

/// A certificate revoked after the connection was made: its requests are refused and the
/// connection closed.
fn revoked(conn: &ConnContext, snapshot: &Snapshot) -> Option<ProxyError> {
    if snapshot.revocations.is_empty() {
        return None;
    }
    let id = &conn.identity;
    let r = match &id.chain {
        Some(chain) => chain.revoked_in(&snapshot.revocations)?,
        // Not verified (optional mode): only the exact certificate can be named.
        None => snapshot
            .revocations
            .lookup(&id.leaf.as_ref()?.fingerprint_sha256, "", "")?,
    };
    Some(ProxyError::Revoked {
        reason: r.reason.clone(),
        at: r.revoked_at.clone(),
    })
}

/// A verified chain (the trust anchor included) that has expired since the connection was made:
/// its requests are refused and the connection closed.
fn expired(conn: &ConnContext) -> Option<ProxyError> {
    let chain = conn.identity.chain.as_ref()?;
    let now = crate::pki::unix_now();
    let until = chain.valid_until();
    (u64::try_from(now).unwrap_or(0) > until).then(|| ProxyError::Expired {
        at: crate::pki::rfc3339(i64::try_from(until).unwrap_or(i64::MAX)),
    })
}

fn content_length(h: &http::HeaderMap) -> u64 {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Settings for routes without their own `authz` (the gateway-wide rules still apply).
const NO_ROUTE_AUTHZ: RouteAuthz = RouteAuthz {
    auth: AuthMode::None,
    rules: Vec::new(),
    token_header: None,
    strip_auth: false,
    enforce: true,
};

/// Runs the authorization checks (see [`crate::authz`] for their order). Records clients that
/// enforcement would reject, strips the token header when asked, and returns the identity.
fn authorize(
    req: &mut Request<Incoming>,
    path: &str,
    route: &Route,
    conn: &ConnContext,
    state: &Shared,
    snapshot: &Snapshot,
) -> Result<Option<Arc<Identity>>, Denial> {
    let id = &conn.identity;
    let fingerprint = id
        .leaf
        .as_ref()
        .map_or("-", |l| l.fingerprint_sha256.as_str());
    let subject = id.leaf.as_ref().map_or("-", |l| l.subject.as_str());
    if conn.mode == Mode::Optional && id.verdict != Verdict::Success {
        let reason = match id.verdict {
            Verdict::Failed(r) => r.as_str(),
            _ => "no_certificate",
        };
        state
            .authz
            .record_transition(&conn.domain, "-", fingerprint, subject, reason, false);
    }
    let az = match route.authz.as_deref() {
        Some(az) => az,
        None if snapshot.authz.global_rules.is_empty() => return Ok(None),
        None => &NO_ROUTE_AUTHZ,
    };
    let header = az.token_header.as_deref().unwrap_or("authorization");
    let token = req
        .headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            if header.eq_ignore_ascii_case("authorization") {
                v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string()
            } else {
                v.trim().to_string()
            }
        })
        .filter(|t| !t.is_empty());
    let cert = id.leaf.as_ref().map(|info| Presented {
        info,
        verified: id.verdict == Verdict::Success,
        ca_fingerprints: &conn.chain_cas,
    });
    let areq = AuthzRequest {
        route: &route.name,
        method: req.method().as_str(),
        path,
        cert,
        token: token.as_deref(),
    };
    let result = authz::decide(&snapshot.authz, az, &areq, &state.authz);
    if az.strip_auth && token.is_some() {
        req.headers_mut().remove(header);
    }
    match &result {
        Ok(_) => route.allowed.increment(1),
        Err(d) => metrics::counter!("symbolon_authz_decisions_total", "route" => route.name.clone(), "decision" => d.code)
            .increment(1),
    }
    match result {
        Ok(identity) => Ok(identity),
        Err(d) if !az.enforce => {
            state.authz.record_transition(
                &conn.domain,
                &route.name,
                fingerprint,
                subject,
                d.code,
                id.verdict == Verdict::Success,
            );
            Ok(None)
        }
        Err(d) => Err(d),
    }
}

/// The one authority of a request (RFC 9112 §3.2, RFC 9113 §8.3.1): one `Host` header at
/// most, and a request-target authority (absolute form, or HTTP/2 `:authority`) that agrees
/// with it. Anything else is a 400: two authorities are how a request for one domain gets
/// routed as another.
fn request_authority<B>(req: &Request<B>) -> Result<Authority, ProxyError> {
    let bad = |detail: &str| ProxyError::BadRequest {
        detail: detail.into(),
    };
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("more than one Host header"));
    }
    let from_header = match host {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<Authority>().ok())
                .ok_or_else(|| bad("the Host header is not a valid authority"))?,
        ),
        None => None,
    };
    // RFC 9110 §7.2: Host is host[:port]; userinfo has no place in it.
    if let Some(problem) = req
        .uri()
        .authority()
        .into_iter()
        .chain(&from_header)
        .find_map(authority_problem)
    {
        return Err(bad(problem));
    }
    match (req.uri().authority(), from_header) {
        (Some(target), Some(h)) if !target.as_str().eq_ignore_ascii_case(h.as_str()) => Err(bad(
            "the request target's authority and the Host header disagree",
        )),
        (Some(target), _) => Ok(target.clone()),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(ProxyError::NoHost),
    }
}

/// What is wrong with an authority, if anything: RFC 9110 §7.2 allows `host[:port]` only, so
/// no userinfo, a port of 1 to 5 decimal digits, and brackets only around an IPv6 address.
fn authority_problem(a: &Authority) -> Option<&'static str> {
    const SYNTAX: &str =
        "the authority is not host[:port] (a port is 1 to 5 digits; brackets hold an IPv6 address)";
    let s = a.as_str();
    if s.contains('@') {
        return Some("the authority contains userinfo ('@')");
    }
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let Some((ip, after)) = rest.split_once(']') else {
                return Some(SYNTAX);
            };
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return Some(SYNTAX);
            }
            match after {
                "" => (ip, None),
                a => match a.strip_prefix(':') {
                    Some(p) => (ip, Some(p)),
                    None => return Some(SYNTAX),
                },
            }
        }
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    let ok = !host.is_empty()
        && !host.contains(['[', ']', ':'])
        && port.is_none_or(|p| {
            (1..=5).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok()
        });
    (!ok).then_some(SYNTAX)
}

/// The lower-case host of an authority, without port, brackets or a trailing dot.
fn host_of(authority: &Authority) -> String {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// What passed the Host check, routing and authorization: exactly what the upstream receives.
struct Target<'a> {
    host: &'a str,
    authority: &'a Authority,
    path: &'a str,
}

async fn forward(
    mut req: Request<Incoming>,
    target: Target<'_>,
    route: &Route,
    conn: &ConnContext,
    state: &Shared,
    timeouts: &crate::config::Timeouts,
) -> Result<Response<RespBody>, ProxyError> {
    headers::rewrite_request(req.headers_mut(), &conn.identity, conn.peer.ip());
    // The Host the upstream sees is the authority that passed the 421 check (HTTP/2 carries
    // it as :authority), whatever else the client sent; set after the hop-by-hop headers are
    // gone, so `Connection: host` cannot remove it.
    if let Ok(v) = HeaderValue::from_str(target.authority.as_str()) {
        req.headers_mut().insert(header::HOST, v);
    }
    // The echo and CA services read the path from the URI: give them the normalized one.
    if let Ok(pq) = match req.uri().query() {
        Some(q) => format!("{}?{q}", target.path).parse::<PathAndQuery>(),
        None => target.path.parse::<PathAndQuery>(),
    } {
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    let host = target.host;
    let (scheme, authority) = match &route.upstream {
        Upstream::Echo => return Ok(echo::respond(&req, host, route)),
        Upstream::Ca => return Ok(super::ca_service::handle(req, conn, state).await),
        Upstream::Http {
            scheme, authority, ..
        } => (scheme.clone(), authority.clone()),
    };
    let path = route.upstream_path(target.path);
    send(
        req,
        scheme,
        authority,
        path,
        route.tls.as_deref(),
        state,
        timeouts,
    )
    .await
}

/// Sends `req` to `scheme://authority` + `path` (the query is kept) over the plain client or
/// the given TLS pool, and turns every failure into a [`ProxyError`] that names its cause.
pub(crate) async fn send(
    mut req: Request<Incoming>,
    scheme: http::uri::Scheme,
    authority: Authority,
    mut path: String,
    tls: Option<&crate::upstream::TlsUpstream>,
    state: &Shared,
    timeouts: &crate::config::Timeouts,
) -> Result<Response<RespBody>, ProxyError> {
    if let Some(q) = req.uri().query() {
        path.push('?');
        path.push_str(q);
    }
    let path_and_query: PathAndQuery = path.parse().map_err(|_| ProxyError::BadRequest {
        detail: "the rewritten path is not valid".into(),
    })?;
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ProxyError::BadRequest {
            detail: e.to_string(),
        })?;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let upstream = authority.to_string();
    let pending = match tls {
        Some(t) => t.client.request(req),
        None => state.upstream.request(req),
    };
    let response = tokio::time::timeout(timeouts.upstream_response, pending)
        .await
        .map_err(|_| ProxyError::UpstreamTimeout {
            upstream: upstream.clone(),
            secs: timeouts.upstream_response.as_secs_f64(),
        })?
        .map_err(|e| {
            if let Some(t) = tls
                && let Some((detail, hint)) = crate::upstream::explain_tls_failure(&e, &t.spec)
            {
                return ProxyError::UpstreamTls {
                    upstream: upstream.clone(),
                    detail,
                    hint,
                };
            }
            let detail = crate::telemetry::error_chain(&e);
            if client_body_failed(&e) {
                return ProxyError::BadRequest {
                    detail: format!("the request body could not be read ({detail})"),
                };
            }
            if e.is_connect() {
                ProxyError::UpstreamConnect { upstream, detail }
            } else {
                ProxyError::UpstreamFailed { upstream, detail }
            }
        })?;
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
}

/// Whether sending failed because the client's own request body did (malformed chunked
/// encoding, a body cut short): that is the client's fault, 400, not the upstream's.
fn client_body_failed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && h.is_user()
            && std::error::Error::source(h)
                .and_then(|c| c.downcast_ref::<hyper::Error>())
                .is_some_and(|c| c.is_parse() || c.is_incomplete_message() || !c.is_user())
        {
            return true;
        }
        source = s.source();
    }
    false
}
