//! Host + path-prefix routing. Built once per snapshot; lookups allocate nothing.

use std::sync::Arc;

use http::Uri;

use crate::authz::AuthzProblem;
use crate::config::RouteConfig;
use crate::path::{percent_decode, segment_prefix};

/// Where a route sends its requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// The built-in echo service: answers with the request line and headers it received.
    Echo,
    /// The built-in CA's device endpoints: `…/enroll` (bootstrap token + CSR) and `…/renew`
    /// (current certificate over mTLS + CSR).
    Ca,
    /// An HTTP or HTTPS origin: `scheme://authority` plus an optional base path. HTTPS
    /// routes carry their TLS client in [`Route::tls`].
    Http {
        scheme: http::uri::Scheme,
        authority: http::uri::Authority,
        base_path: String,
    },
}

impl Upstream {
    /// Whether this is an `https://` origin.
    pub fn is_https(&self) -> bool {
        matches!(self, Upstream::Http { scheme, .. } if *scheme == http::uri::Scheme::HTTPS)
    }
}

/// One validated route.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    /// Lower-case host, or `None` for every host.
    pub host: Option<String>,
    /// Normalised prefix: starts with `/`, has no trailing `/` except for the root.
    pub prefix: String,
    pub upstream: Upstream,
    pub strip_prefix: bool,
    pub authz: Option<std::sync::Arc<crate::authz::RouteAuthz>>,
    /// `symbolon_authz_decisions_total{decision="allowed"}` for this route, registered once.
    pub allowed: metrics::Counter,
    /// For `https://` upstreams: the pool and the settings it was made with (set by the
    /// snapshot, which resolves bundles and credentials).
    pub tls: Option<Arc<crate::upstream::TlsUpstream>>,
}

/// A problem with a route in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "route '{route}': upstream '{upstream}' is not a valid URL ({detail}). Fix: write it as http://HOST:PORT[/base/path], https://HOST:PORT[/base/path] or builtin:echo"
    )]
    BadUrl {
        route: String,
        upstream: String,
        detail: String,
    },
    #[error(
        "route '{route}': upstream TLS settings (upstream_tls, credential) need an https:// upstream, not '{upstream}'. Fix: use https://, or remove the TLS settings"
    )]
    TlsWithoutHttps { route: String, upstream: String },
    #[error("route '{route}': path_prefix '{prefix}' must start with '/'")]
    BadPrefix { route: String, prefix: String },
    #[error(
        "route '{route}': path_prefix '{prefix}' {why}, so no request would ever match it (requests are normalized before routing). Fix: {fix}"
    )]
    Unmatchable {
        route: String,
        prefix: String,
        why: String,
        fix: String,
    },
    #[error(
        "route '{route}': host '{host}' is not a host name (letters, digits, '-' and '.', optionally '*.' first, no port). Fix: give the name clients send in Host, without a port"
    )]
    BadHost { route: String, host: String },
    #[error("route '{route}': {detail}")]
    BadAuthz { route: String, detail: String },
    #[error(
        "two routes have the same host and path prefix: '{first}' and '{second}'. Fix: remove one or change its path_prefix"
    )]
    Duplicate { first: String, second: String },
}

impl Route {
    /// Validates one route from the config file.
    pub fn from_config(rc: &RouteConfig) -> Result<Self, RouteError> {
        let host = rc
            .host
            .as_deref()
            .filter(|h| *h != "*" && !h.is_empty())
            .map(str::to_ascii_lowercase);
        let name = rc
            .name
            .clone()
            .unwrap_or_else(|| format!("{}{}", host.as_deref().unwrap_or("*"), rc.path_prefix));
        if !rc.path_prefix.starts_with('/') {
            return Err(RouteError::BadPrefix {
                route: name,
                prefix: rc.path_prefix.clone(),
            });
        }
        if let Some(h) = &host {
            let name_part = h.strip_prefix("*.").unwrap_or(h);
            // Clients' names arrive without a trailing dot: every label must be non-empty.
            let ok = name_part.len() <= 253
                && name_part.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                return Err(RouteError::BadHost {
                    route: name,
                    host: h.clone(),
                });
            }
        }
        // Compared with the decoded request path: decode escapes written in the config.
        let prefix = normalise_prefix(&percent_decode(&rc.path_prefix));
        // A prefix that normalization would change (`//`, `.` or `..` segments) or refuse (an
        // encoded `/`, `;`, a NUL) matches no request: its route's rules would never apply.
        let unmatchable = |why: String, fix: String| RouteError::Unmatchable {
            route: name.clone(),
            prefix: rc.path_prefix.clone(),
            why,
            fix,
        };
        if rc.path_prefix.contains(['?', '#']) || rc.path_prefix.len() > 4096 {
            return Err(unmatchable(
                "holds '?' or '#' (a query or fragment is not part of the path) or is over 4096 bytes".into(),
                "give the path only".into(),
            ));
        }
        match crate::path::normalize(&rc.path_prefix) {
            Err(bad) => {
                return Err(unmatchable(
                    format!("is refused as a request path ({})", bad.0),
                    "write the prefix as clients send it".into(),
                ));
            }
            Ok(n) if normalise_prefix(&n.decoded) != prefix => {
                return Err(unmatchable(
                    format!("normalizes to '{}'", n.decoded),
                    format!("use '{}'", normalise_prefix(&n.decoded)),
                ));
            }
            Ok(_) => {}
        }
        let upstream = parse_upstream(&name, &rc.upstream)?;
        if rc.upstream_tls.is_some() && !upstream.is_https() {
            return Err(RouteError::TlsWithoutHttps {
                route: name,
                upstream: rc.upstream.clone(),
            });
        }
        let authz = match &rc.authz {
            Some(a) => Some(std::sync::Arc::new(a.checked().map_err(|p| {
                RouteError::BadAuthz {
                    route: name.clone(),
                    detail: match p {
                        AuthzProblem::Rule(i, detail) => format!("rule #{}: {detail}", i + 1),
                        AuthzProblem::TokenHeader(h) => {
                            format!("token_header '{h}' is not a header name")
                        }
                    },
                }
            })?)),
            None => None,
        };
        let allowed = metrics::counter!("symbolon_authz_decisions_total", "route" => name.clone(), "decision" => "allowed");
        Ok(Self {
            name,
            host,
            prefix,
            upstream,
            strip_prefix: rc.strip_prefix,
            authz,
            allowed,
            tls: None,
        })
    }

    fn matches_path(&self, path: &str) -> bool {
        segment_prefix(path, &self.prefix).is_some()
    }

    /// The path to send upstream: prefix removed if asked (as many segments as the prefix
    /// has: the route matched the decoded form of this path), then the base path prepended.
    /// `path` is the forwarded form of a normalized path, so the result stays under the base.
    pub fn upstream_path(&self, path: &str) -> String {
        let path = if self.strip_prefix && self.prefix != "/" {
            let skip = self.prefix.split('/').filter(|s| !s.is_empty()).count();
            let mut rest = path;
            for _ in 0..skip {
                rest = rest
                    .strip_prefix('/')
                    .map_or("", |r| r.find('/').map_or("", |i| &r[i..]));
            }
            if rest.is_empty() { "/" } else { rest }
        } else {
            path
        };
        match &self.upstream {
            Upstream::Http { base_path, .. } if !base_path.is_empty() => {
                format!("{base_path}{path}")
            }
            _ => path.to_string(),
        }
    }
}

fn normalise_prefix(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_string()
    }
}

/// Parses `builtin:echo`, `builtin:ca` or an `http(s)://host[:port][/base]` URL.
pub fn parse_upstream(route: &str, s: &str) -> Result<Upstream, RouteError> {
    if s == "builtin:echo" {
        return Ok(Upstream::Echo);
    }
    if s == "builtin:ca" {
        return Ok(Upstream::Ca);
    }
    let bad = |detail: &str| RouteError::BadUrl {
        route: route.into(),
        upstream: s.into(),
        detail: detail.into(),
    };
    let uri: Uri = s
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    let scheme = uri.scheme().cloned().ok_or_else(|| bad("no scheme"))?;
    if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
        return Err(bad("the scheme must be http or https"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("an upstream URL cannot have a query string"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(Upstream::Http {
        scheme,
        authority,
        base_path,
    })
}

/// All routes, ordered so that the first match is the most specific: host routes before
/// wildcard routes, longer prefixes first.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Result<Self, RouteError> {
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.prefix.len().cmp(&a.prefix.len()))
        });
        for pair in routes.windows(2) {
            if pair[0].host == pair[1].host && pair[0].prefix.eq_ignore_ascii_case(&pair[1].prefix)
            {
                return Err(RouteError::Duplicate {
                    first: pair[0].name.clone(),
                    second: pair[1].name.clone(),
                });
            }
        }
        Ok(Self { routes })
    }

    /// The route for a lower-case host and a path.
    pub fn find(&self, host: &str, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.host.as_deref().is_none_or(|h| h == host) && r.matches_path(path))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::path::*;

    fn route(host: Option<&str>, prefix: &str, upstream: &str, strip: bool) -> Route {
        Route::from_config(&RouteConfig {
            name: None,
            host: host.map(Into::into),
            path_prefix: prefix.into(),
            upstream: upstream.into(),
            strip_prefix: strip,
            authz: None,
            upstream_tls: None,
        })
        .unwrap()
    }

    #[test]
    fn most_specific_route_wins() {
        let t = RouteTable::new(vec![
            route(None, "/", "builtin:echo", false),
            route(Some("a.test"), "/api", "http://127.0.0.1:1", false),
            route(Some("a.test"), "/", "http://127.0.0.1:2", false),
        ])
        .unwrap();
        assert_eq!(t.find("a.test", "/api/x").unwrap().name, "a.test/api");
        assert_eq!(t.find("a.test", "/apix").unwrap().name, "a.test/");
        assert_eq!(t.find("b.test", "/api").unwrap().name, "*/");
    }

    #[test]
    fn strip_prefix_and_base_path() {
        let r = route(None, "/api/", "http://u:1/base/", true);
        assert_eq!(r.upstream_path("/api/users"), "/base/users");
        assert_eq!(r.upstream_path("/api"), "/base/");
        let r = route(None, "/api", "http://u:1", false);
        assert_eq!(r.upstream_path("/api/users"), "/api/users");
    }

    #[test]
    fn bad_upstreams_are_named() {
        for bad in ["not a url", "ftp://x", "http://", "https://x?q=1"] {
            let err = Route::from_config(&RouteConfig {
                name: Some("r".into()),
                host: None,
                path_prefix: "/".into(),
                upstream: bad.into(),
                strip_prefix: false,
                authz: None,
                upstream_tls: None,
            })
            .unwrap_err();
            assert!(err.to_string().contains("route 'r'"), "{err}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments_in_any_case() {
        assert_eq!(segment_prefix("/orders/1", "/orders"), Some("/1"));
        assert_eq!(segment_prefix("/orders", "/orders"), Some(""));
        assert_eq!(segment_prefix("/orders-internal", "/orders"), None);
        assert_eq!(segment_prefix("/ORDERS/x", "/orders/"), Some("/x"));
        assert_eq!(segment_prefix("/x", "/"), Some("/x"));
        assert_eq!(segment_prefix("/é", "/e"), None);
        let r = route(None, "/v2", "http://u:1/base", true);
        let p = normalize_path("/v2/../../internal").unwrap();
        assert!(r.upstream_path(&p).starts_with("/base/"), "{p}");
        // Reserved and non-ASCII characters: matched decoded, forwarded encoded.
        let p = normalize("/v1%3aadmin/x").unwrap();
        assert_eq!(p.forward, "/v1%3Aadmin/x");
        assert_eq!(segment_prefix(&p.decoded, "/v1:admin"), Some("/x"));
        let p = normalize("/caf\u{e9}/x").unwrap();
        assert_eq!(p.forward, "/caf%C3%A9/x");
        assert_eq!(segment_prefix(&p.decoded, "/café"), Some("/x"));
        let r = route(None, "/café", "http://u:1/base", true);
        assert_eq!(r.upstream_path(&p.forward), "/base/x");
    }

    #[test]
    fn duplicates_are_refused() {
        let err = RouteTable::new(vec![
            route(None, "/a", "builtin:echo", false),
            route(None, "/a/", "builtin:echo", false),
        ])
        .unwrap_err();
        assert!(matches!(err, RouteError::Duplicate { .. }));
    }
}
