//! API-gateway authorization: static mTLS rules, identities bound to certificates or tokens,
//! policies (access rights, rate limits, quotas), usage analytics and the transition report.
//!
//! # Order of checks for a request on a route
//! 1. Static rules ([`rules::evaluate`]): gateway-wide deny, route deny, gateway-wide allow,
//!    route allow.
//! 2. The route's `auth` mode resolves an identity: by the verified certificate's fingerprint
//!    (`mtls`), by the token header (`token`), both and the same identity (`mtls_and_token`),
//!    or either (`mtls_or_token`). `none` skips steps 2–5.
//! 3. The identity must be active and unexpired.
//! 4. Its policy's access rights must cover the route, the method and the path.
//! 5. Its quota (per day, month or fixed window; used up → 403 `quota_exceeded`), then its rate
//!    limit (token bucket; empty → 429 `rate_limited`). A refused request uses neither.
//!
//! A route with `enforce = false` runs every check but lets the request through; what would have
//! been refused goes to the transition report.

pub mod rules;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::lock;
use crate::pki::unix_now;

pub use rules::{Effect, Rule};

mod runtime;
pub use runtime::*;
/// How a route authenticates its callers beyond the domain's TLS policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Only the static rules (if any) apply.
    #[default]
    None,
    /// An identity bound to the client certificate.
    Mtls,
    /// An identity's token in the token header.
    Token,
    /// Both, and they must belong to the same identity.
    MtlsAndToken,
    /// Either.
    MtlsOrToken,
}

/// A route's authorization settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthz {
    #[serde(default)]
    pub auth: AuthMode,
    /// Static mTLS rules for this route (see the evaluation order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Header that carries the token. `authorization` (the default) expects `Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_header: Option<String>,
    /// Remove the token header before the request goes upstream. Default true.
    #[serde(default = "yes")]
    pub strip_auth: bool,
    /// false: run the checks, record what would be refused, let the request through.
    #[serde(default = "yes")]
    pub enforce: bool,
}

fn yes() -> bool {
    true
}

/// Access rights, rate limit and quota shared by identities.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Empty: every route. Otherwise one entry must cover the route, method and path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<Access>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Identities may be created with this policy through the self-service endpoint.
    #[serde(default)]
    pub self_service: bool,
}

/// Why a route's authorization settings were refused: the rule (by index) or the token header.
#[derive(Debug)]
pub enum AuthzProblem {
    Rule(usize, String),
    TokenHeader(String),
}

impl RouteAuthz {
    /// Checks every rule and the token header, once, for the config file and the admin API
    /// alike; hands back the settings with their rules normalised (as requests are compared).
    pub fn checked(&self) -> Result<RouteAuthz, AuthzProblem> {
        for (i, r) in self.rules.iter().enumerate() {
            r.validate().map_err(|e| AuthzProblem::Rule(i, e))?;
        }
        if let Some(h) = &self.token_header
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Err(AuthzProblem::TokenHeader(h.clone()));
        }
        let mut a = self.clone();
        a.rules = a.rules.into_iter().map(Rule::normalised).collect();
        Ok(a)
    }
}

/// A policy with its name, as the admin API and import files give it. Its keys are checked
/// here: a flattened [`PolicySpec`] would let serde ignore a misspelled key (`acess`,
/// `ratelimit`), which would silently lift the policy's restrictions.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedSpec {
    pub name: String,
    #[serde(default)]
    pub access: Vec<Access>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub quota: Option<Quota>,
    #[serde(default)]
    pub self_service: bool,
}

impl NamedSpec {
    /// The name and the policy.
    pub fn into_parts(self) -> (String, PolicySpec) {
        let spec = PolicySpec {
            access: self.access,
            rate_limit: self.rate_limit,
            quota: self.quota,
            self_service: self.self_service,
        };
        (self.name, spec)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Route name.
    pub route: String,
    /// Allowed methods; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Allowed path prefixes; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_prefixes: Vec<String>,
}

/// A token bucket: `requests` per `per` (`"1s"`, `"1m"`…), bursts up to `requests`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    pub per: String,
}

/// `requests` per `period`: `"day"` or `"month"` (calendar, UTC), or a fixed window such as `"1h"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub requests: u64,
    pub period: String,
}

impl PolicySpec {
    /// Checks durations and periods; returns a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = &self.rate_limit {
            crate::duration::RATE_PER.parse(&r.per)?;
            if r.requests == 0 {
                return Err("rate_limit.requests must be at least 1".into());
            }
        }
        if let Some(q) = &self.quota {
            if !matches!(q.period.as_str(), "day" | "month") {
                crate::duration::QUOTA_PERIOD
                    .parse(&q.period)
                    .map_err(|e| format!("{e} (or day or month)"))?;
            }
            if q.requests == 0 {
                return Err("quota.requests must be > 0".into());
            }
        }
        for a in &self.access {
            for m in &a.methods {
                http::Method::from_bytes(m.as_bytes())
                    .map_err(|_| format!("'{m}' is not an HTTP method"))?;
            }
            for p in &a.path_prefixes {
                if !p.starts_with('/') {
                    return Err(format!("path prefix '{p}' must start with '/'"));
                }
            }
        }
        Ok(())
    }
}

/// The start and end (unix seconds) of the quota window containing `now`.
pub fn quota_window(period: &str, now: i64) -> Option<(i64, i64)> {
    use time::OffsetDateTime;
    match period {
        "day" => {
            let start = now - now.rem_euclid(86_400);
            Some((start, start + 86_400))
        }
        "month" => {
            let t = OffsetDateTime::from_unix_timestamp(now).ok()?;
            let start = t.replace_day(1).ok()?.replace_time(time::Time::MIDNIGHT);
            let (y, m) = if t.month() == time::Month::December {
                (t.year() + 1, time::Month::January)
            } else {
                (t.year(), t.month().next())
            };
            let end = start.replace_year(y).ok()?.replace_month(m).ok()?;
            Some((start.unix_timestamp(), end.unix_timestamp()))
        }
        other => {
            let d = i64::try_from(crate::duration::parse_duration(other).ok()?.as_secs()).ok()?;
            if d == 0 {
                return None;
            }
            let start = now - now.rem_euclid(d);
            Some((start, start.checked_add(d)?))
        }
    }
}

/// An identity as the data plane sees it.
#[derive(Debug)]
pub struct Identity {
    pub id: String,
    pub name: String,
    pub policy: Option<Arc<NamedPolicy>>,
    pub active: bool,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

#[derive(Debug)]
pub struct NamedPolicy {
    pub name: String,
    pub spec: PolicySpec,
    /// Parsed `rate_limit.per`.
    pub rate_per: Option<Duration>,
    /// `symbolon_policy_requests_total` handles per route (2xx, 3xx, 4xx, 5xx), registered on
    /// first use so the hot path neither allocates nor hashes labels.
    counters: std::sync::RwLock<HashMap<String, [metrics::Counter; 4]>>,
}

impl NamedPolicy {
    pub fn new(name: String, spec: PolicySpec, rate_per: Option<Duration>) -> Self {
        Self {
            name,
            spec,
            rate_per,
            counters: Default::default(),
        }
    }

    /// Counts a response of `status` on `route` for this policy (bounded labels: policy,
    /// route, status class).
    pub fn count(&self, route: &str, status: u16) {
        let class = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        if let Ok(map) = self.counters.read()
            && let Some(c) = map.get(route)
        {
            c[class].increment(1);
            return;
        }
        let make = |class: &'static str| metrics::counter!("symbolon_policy_requests_total", "policy" => self.name.clone(), "route" => route.to_string(), "class" => class);
        let counters = [make("2xx"), make("3xx"), make("4xx"), make("5xx")];
        counters[class].increment(1);
        if let Ok(mut map) = self.counters.write() {
            map.insert(route.to_string(), counters);
        }
    }
}

/// Everything authorization needs, built with each snapshot.
#[derive(Debug, Default)]
pub struct AuthzSnapshot {
    pub global_rules: Vec<Rule>,
    pub by_fingerprint: HashMap<String, Arc<Identity>>,
    /// Keyed by the hex SHA-256 of the token.
    pub by_token: HashMap<String, Arc<Identity>>,
}

/// A refusal: status, code, message, and extra headers (429's `Retry-After` and friends).
#[derive(Debug, Clone)]
pub struct Denial {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub hint: String,
    pub headers: Vec<(&'static str, String)>,
    /// RFC 3339 time at which a quota resets.
    pub reset: Option<String>,
}

impl Denial {
    fn forbidden(code: &'static str, message: String, hint: &str) -> Self {
        Self {
            status: 403,
            code,
            message,
            hint: hint.into(),
            headers: Vec::new(),
            reset: None,
        }
    }
}

/// What a client presented, for the checks.
pub struct Request<'a> {
    pub route: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub cert: Option<rules::Presented<'a>>,
    /// The token from the route's token header, if any.
    pub token: Option<&'a str>,
}

/// Decides one request. `Ok(Some(identity))` when the route resolved one.
pub fn decide(
    snap: &AuthzSnapshot,
    route: &RouteAuthz,
    req: &Request<'_>,
    rt: &Runtime,
) -> Result<Option<Arc<Identity>>, Denial> {
    rules::evaluate(&snap.global_rules, &route.rules, req.cert.as_ref()).map_err(|d| {
        Denial::forbidden(
            "certificate_not_allowed",
            d.reason(),
            "ask the API's operator to allow this certificate, or use one that is allowed",
        )
    })?;
    let verified_fp = req
        .cert
        .as_ref()
        .filter(|c| c.verified)
        .map(|c| c.info.fingerprint_sha256.as_str());
    let by_cert = verified_fp.and_then(|fp| snap.by_fingerprint.get(fp));
    let by_token = req.token.and_then(|t| {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes());
        snap.by_token.get(&crate::pki::hex(digest.as_ref()))
    });
    let identity = match route.auth {
        AuthMode::None => return Ok(None),
        AuthMode::Mtls => by_cert.ok_or_else(|| no_cert_identity(verified_fp))?,
        AuthMode::Token => by_token.ok_or_else(|| no_token_identity(req.token))?,
        AuthMode::MtlsAndToken => {
            let c = by_cert.ok_or_else(|| no_cert_identity(verified_fp))?;
            let t = by_token.ok_or_else(|| no_token_identity(req.token))?;
            if c.id != t.id {
                return Err(Denial::forbidden(
                    "identity_mismatch",
                    format!(
                        "the certificate belongs to identity '{}' but the token to '{}'",
                        c.name, t.name
                    ),
                    "send the token of the identity bound to this certificate",
                ));
            }
            c
        }
        AuthMode::MtlsOrToken => by_cert.or(by_token).ok_or_else(|| {
            Denial::forbidden(
                "no_identity",
                "neither the client certificate nor a token identifies a known identity".into(),
                "present a certificate bound to an identity, or send its token",
            )
        })?,
    };
    if !identity.active {
        return Err(Denial::forbidden(
            "identity_inactive",
            format!("identity '{}' is not active", identity.name),
            "ask the operator to activate it",
        ));
    }
    if let Some(exp) = identity.expires_at
        && exp <= unix_now()
    {
        return Err(Denial::forbidden(
            "identity_expired",
            format!(
                "identity '{}' expired at {}",
                identity.name,
                crate::pki::rfc3339(exp)
            ),
            "ask the operator to extend it",
        ));
    }
    let Some(policy) = &identity.policy else {
        return Ok(Some(identity.clone()));
    };
    let spec = &policy.spec;
    if !spec.access.is_empty() {
        let allowed = spec.access.iter().any(|a| {
            a.route == req.route
                && (a.methods.is_empty()
                    || a.methods.iter().any(|m| m.eq_ignore_ascii_case(req.method)))
                && (a.path_prefixes.is_empty()
                    || a.path_prefixes
                        .iter()
                        .any(|p| crate::path::segment_prefix(req.path, p).is_some()))
        });
        if !allowed {
            return Err(Denial::forbidden(
                "access_denied",
                format!(
                    "policy '{}' does not allow {} {} on route '{}'",
                    policy.name, req.method, req.path, req.route
                ),
                "ask the operator to extend the policy's access rights",
            ));
        }
    }
    let rate = spec
        .rate_limit
        .as_ref()
        .zip(policy.rate_per)
        .map(|(r, per)| (r.requests, per));
    match rt.admit(&identity.id, rate, spec.quota.as_ref()) {
        Ok(()) => {}
        Err(Refused::Rate(wait)) => {
            let r = spec
                .rate_limit
                .as_ref()
                .map(|r| (r.requests, r.per.as_str()))
                .unwrap_or((0, ""));
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(Denial {
                status: 429,
                code: "rate_limited",
                message: format!(
                    "identity '{}' is over its rate limit of {} per {}",
                    identity.name, r.0, r.1
                ),
                hint: format!("retry after {secs} s"),
                headers: vec![
                    ("retry-after", secs.to_string()),
                    ("ratelimit-limit", r.0.to_string()),
                    ("ratelimit-remaining", "0".into()),
                    ("ratelimit-reset", secs.to_string()),
                ],
                reset: None,
            });
        }
        Err(Refused::Quota(end, used)) => {
            let (limit, period) = spec
                .quota
                .as_ref()
                .map(|q| (q.requests, q.period.as_str()))
                .unwrap_or((0, ""));
            let reset = crate::pki::rfc3339(end);
            return Err(Denial {
                status: 403,
                code: "quota_exceeded",
                message: format!(
                    "identity '{}' used its quota of {limit} requests per {period} ({used} used); it resets at {reset}",
                    identity.name
                ),
                hint: "wait for the reset, or ask the operator for a larger quota".into(),
                headers: vec![("x-quota-reset", reset.clone())],
                reset: Some(reset),
            });
        }
    }
    Ok(Some(identity.clone()))
}

fn no_cert_identity(fp: Option<&str>) -> Denial {
    match fp {
        Some(fp) => Denial::forbidden(
            "unknown_identity",
            format!(
                "the client certificate is valid but no identity is bound to it (fingerprint {fp})"
            ),
            "ask the operator to create an identity for this certificate",
        ),
        None => Denial::forbidden(
            "certificate_required",
            "this API needs a verified client certificate".into(),
            "connect with a client certificate the domain trusts",
        ),
    }
}

fn no_token_identity(token: Option<&str>) -> Denial {
    match token {
        Some(_) => Denial::forbidden(
            "unknown_token",
            "the token does not belong to any identity".into(),
            "check the token",
        ),
        None => Denial::forbidden(
            "token_required",
            "this API needs a token".into(),
            "send the identity's token",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_windows() {
        // 2026-11-25T13:00:00Z
        let now = 1_795_611_600;
        let (s, e) = quota_window("day", now).unwrap();
        assert_eq!(crate::pki::rfc3339(s), "2026-11-25T00:00:00Z");
        assert_eq!(crate::pki::rfc3339(e), "2026-11-26T00:00:00Z");
        let (s, e) = quota_window("month", now).unwrap();
        assert_eq!(crate::pki::rfc3339(s), "2026-11-01T00:00:00Z");
        assert_eq!(crate::pki::rfc3339(e), "2026-12-01T00:00:00Z");
        let (s, e) = quota_window("1h", now).unwrap();
        assert_eq!((s, e), (now, now + 3600));
        assert!(quota_window("fortnight", now).is_none());
    }

    #[test]
    fn token_bucket_counts_and_refills() {
        let rt = Runtime::default();
        let limit = Some((3, Duration::from_secs(60)));
        for _ in 0..3 {
            assert!(rt.admit("a", limit, None).is_ok());
        }
        let Err(Refused::Rate(wait)) = rt.admit("a", limit, None) else {
            panic!("the fourth request passed");
        };
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            rt.admit("b", limit, None).is_ok(),
            "buckets are per identity"
        );
    }

    #[test]
    fn a_refused_request_uses_no_quota() {
        let rt = Runtime::default();
        let quota = Quota {
            requests: 2,
            period: "day".into(),
        };
        let limit = Some((1, Duration::from_secs(3600)));
        assert!(rt.admit("a", limit, Some(&quota)).is_ok());
        assert!(matches!(
            rt.admit("a", limit, Some(&quota)),
            Err(Refused::Rate(_))
        ));
        assert_eq!(rt.quota_rows()[0].1.used, 1);
        assert!(rt.quota_rows().is_empty(), "saved rows are no longer dirty");
    }

    #[test]
    fn a_returning_client_stays_in_a_full_transition_report() {
        let rt = Runtime::default();
        // Enough clients seen twice to fill the main tier, and more.
        for i in 0..TRANSITION_CAP + 500 {
            for _ in 0..2 {
                rt.record_transition("d", "r", &format!("{i:064}"), "CN=x", "unknown_ca", false);
            }
        }
        for _ in 0..3 {
            rt.record_transition("d", "r", "real", "CN=real", "unknown_ca", false);
        }
        let report = rt.transition_report();
        let real = report
            .iter()
            .find(|e| e.fingerprint == "real")
            .expect("the real client");
        assert_eq!(real.count, 3);
        assert!(report.len() <= TRANSITION_CAP + TRANSITION_PROBATION);
        // A huge subject is cut.
        rt.record_transition("d", "r", "big", &"x".repeat(60_000), "unknown_ca", false);
        let report = rt.transition_report();
        let big = report.iter().find(|e| e.fingerprint == "big").unwrap();
        assert!(big.subject.len() <= SUBJECT_CAP + 4);
    }

    #[test]
    fn anonymous_clients_never_push_out_a_verified_one() {
        let rt = Runtime::default();
        rt.record_transition("d", "r", "verified", "CN=v", "no_identity", true);
        for i in 0..TRANSITION_CAP + 500 {
            for _ in 0..2 {
                rt.record_transition("d", "r", &format!("{i:064}"), "CN=x", "unknown_ca", false);
            }
        }
        let report = rt.transition_report();
        assert!(report.iter().any(|e| e.fingerprint == "verified"));
        assert!(report.len() <= 2 * TRANSITION_CAP + TRANSITION_PROBATION);
    }
}
