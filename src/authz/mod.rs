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
//! 5. Its rate limit (token bucket), then its quota (per day, month or fixed window).
//!
//! A route with `enforce = false` runs every check but lets the request through; what would have
//! been refused goes to the transition report.

pub mod rules;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use rules::{Effect, Rule};

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
            let per = crate::config::parse_duration(&r.per)
                .map_err(|e| format!("rate_limit.per: {e}"))?;
            if r.requests == 0 || per.is_zero() {
                return Err("rate_limit needs requests > 0 and a non-zero period".into());
            }
        }
        if let Some(q) = &self.quota {
            quota_window(&q.period, 0).ok_or_else(|| {
                format!(
                    "quota.period '{}' must be day, month or a duration such as 1h",
                    q.period
                )
            })?;
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
            let d = crate::config::parse_duration(other).ok()?.as_secs() as i64;
            if d == 0 {
                return None;
            }
            let start = now - now.rem_euclid(d);
            Some((start, start + d))
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

/// Runtime counters that outlive snapshots: rate-limit buckets, quota use, usage, and the
/// transition report.
#[derive(Debug, Default)]
pub struct Runtime {
    buckets: Mutex<HashMap<String, Bucket>>,
    quotas: Mutex<HashMap<String, QuotaUse>>,
    /// Identities whose quota use changed since the last save.
    quota_dirty: Mutex<std::collections::HashSet<String>>,
    usage: Mutex<HashMap<(String, String), Usage>>,
    transition: Mutex<HashMap<TransitionKey, TransitionEntry>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Quota use of one identity in its current window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUse {
    pub window_start: i64,
    pub used: u64,
}

/// Usage of one identity on one route.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub route: String,
    pub requests: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_seen: String,
}

type TransitionKey = (String, String, String, String);

/// One client that enforcement would reject.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransitionEntry {
    pub domain: String,
    /// `-` for the domain's TLS policy, else the route name.
    pub route: String,
    pub fingerprint: String,
    pub subject: String,
    pub reason: String,
    pub count: u64,
    pub last_seen: String,
}

const TRANSITION_CAP: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Runtime {
    /// Restores persisted quota use (at start).
    pub fn load_quotas(&self, rows: impl IntoIterator<Item = (String, QuotaUse)>) {
        lock(&self.quotas).extend(rows);
    }

    /// Quota use changed since the last call, to persist.
    pub fn quota_rows(&self) -> Vec<(String, QuotaUse)> {
        let dirty: Vec<String> = lock(&self.quota_dirty).drain().collect();
        let quotas = lock(&self.quotas);
        dirty
            .into_iter()
            .filter_map(|id| quotas.get(&id).map(|q| (id, *q)))
            .collect()
    }

    /// Takes a token from the identity's bucket, or says when one will be available.
    fn take_token(&self, id: &str, limit: u32, per: Duration) -> Result<u32, Duration> {
        let rate = f64::from(limit) / per.as_secs_f64();
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        let b = buckets.entry(id.to_string()).or_insert(Bucket {
            tokens: f64::from(limit),
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(f64::from(limit));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(b.tokens.floor() as u32)
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }

    fn take_quota(&self, id: &str, q: &Quota) -> Result<(), (i64, u64)> {
        let now = unix_now();
        let Some((start, end)) = quota_window(&q.period, now) else {
            return Ok(());
        };
        let mut quotas = lock(&self.quotas);
        let u = quotas.entry(id.to_string()).or_default();
        if u.window_start != start {
            *u = QuotaUse {
                window_start: start,
                used: 0,
            };
        }
        if u.used >= q.requests {
            return Err((end, u.used));
        }
        u.used += 1;
        drop(quotas);
        lock(&self.quota_dirty).insert(id.to_string());
        Ok(())
    }

    /// Counts one request of `identity` on `route`.
    pub fn record_usage(
        &self,
        identity: &str,
        route: &str,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let mut usage = lock(&self.usage);
        let u = usage
            .entry((identity.to_string(), route.to_string()))
            .or_insert_with(|| Usage {
                route: route.to_string(),
                ..Usage::default()
            });
        u.requests += 1;
        match status {
            200..=299 => u.status_2xx += 1,
            300..=399 => u.status_3xx += 1,
            400..=499 => u.status_4xx += 1,
            _ => u.status_5xx += 1,
        }
        u.bytes_in += bytes_in;
        u.bytes_out += bytes_out;
        u.last_seen = crate::pki::rfc3339(unix_now());
    }

    /// Usage of one identity, per route.
    pub fn usage(&self, identity: &str) -> Vec<Usage> {
        let mut v: Vec<Usage> = lock(&self.usage)
            .iter()
            .filter(|((id, _), _)| id == identity)
            .map(|(_, u)| u.clone())
            .collect();
        v.sort_by(|a, b| a.route.cmp(&b.route));
        v
    }

    /// Remembers a client that enforcement would reject.
    pub fn record_transition(
        &self,
        domain: &str,
        route: &str,
        fingerprint: &str,
        subject: &str,
        reason: &str,
    ) {
        let mut t = lock(&self.transition);
        let key = (
            domain.to_string(),
            route.to_string(),
            fingerprint.to_string(),
            reason.to_string(),
        );
        if t.len() >= TRANSITION_CAP && !t.contains_key(&key) {
            return;
        }
        let e = t.entry(key).or_insert_with(|| TransitionEntry {
            domain: domain.into(),
            route: route.into(),
            fingerprint: fingerprint.into(),
            subject: subject.into(),
            reason: reason.into(),
            count: 0,
            last_seen: String::new(),
        });
        e.count += 1;
        e.last_seen = crate::pki::rfc3339(unix_now());
    }

    pub fn transition_report(&self) -> Vec<TransitionEntry> {
        let mut v: Vec<TransitionEntry> = lock(&self.transition).values().cloned().collect();
        v.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.fingerprint.cmp(&b.fingerprint))
        });
        v
    }
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
                        .any(|p| req.path.starts_with(p.as_str())))
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
    if let (Some(r), Some(per)) = (&spec.rate_limit, policy.rate_per) {
        match rt.take_token(&identity.id, r.requests, per) {
            Ok(_) => {}
            Err(wait) => {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                return Err(Denial {
                    status: 429,
                    code: "rate_limited",
                    message: format!(
                        "identity '{}' is over its rate limit of {} per {}",
                        identity.name, r.requests, r.per
                    ),
                    hint: format!("retry after {secs} s"),
                    headers: vec![
                        ("retry-after", secs.to_string()),
                        ("ratelimit-limit", r.requests.to_string()),
                        ("ratelimit-remaining", "0".into()),
                        ("ratelimit-reset", secs.to_string()),
                    ],
                    reset: None,
                });
            }
        }
    }
    if let Some(q) = &spec.quota
        && let Err((end, used)) = rt.take_quota(&identity.id, q)
    {
        let reset = crate::pki::rfc3339(end);
        return Err(Denial {
            status: 403,
            code: "quota_exceeded",
            message: format!(
                "identity '{}' used its quota of {} requests per {} ({used} used); it resets at {reset}",
                identity.name, q.requests, q.period
            ),
            hint: "wait for the reset, or ask the operator for a larger quota".into(),
            headers: vec![("x-quota-reset", reset.clone())],
            reset: Some(reset),
        });
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
        for _ in 0..3 {
            assert!(rt.take_token("a", 3, Duration::from_secs(60)).is_ok());
        }
        let wait = rt.take_token("a", 3, Duration::from_secs(60)).unwrap_err();
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            rt.take_token("b", 3, Duration::from_secs(60)).is_ok(),
            "buckets are per identity"
        );
    }
}
