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

/// Runtime counters that outlive snapshots: rate-limit buckets, quota use, usage, and the
/// transition report. One lock and one hash lookup per request for admission, one for usage.
#[derive(Debug, Default)]
pub struct Runtime {
    ids: Mutex<HashMap<String, IdState>>,
    transition: Mutex<Transition>,
}

#[derive(Debug, Default)]
struct IdState {
    bucket: Option<Bucket>,
    quota: QuotaUse,
    /// Quota use changed since the last save.
    quota_dirty: bool,
    usage: HashMap<String, UsageCounters>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default, Clone, Copy)]
struct UsageCounters {
    requests: u64,
    classes: [u64; 4],
    bytes_in: u64,
    bytes_out: u64,
    last_seen: i64,
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

/// Clients seen once wait in a small first-in-first-out tier; a second sighting promotes them
/// to the report proper. Anonymous floods of one-shot certificates only churn the first tier
/// and never push out the clients the operator needs to see (a 2Q cache's idea).
const TRANSITION_PROBATION: usize = 1_000;
const TRANSITION_CAP: usize = 10_000;
/// Subjects longer than this are cut (a certificate's subject can be 60 kB).
pub const SUBJECT_CAP: usize = 256;

/// Clients whose certificate verified, and anonymous ones, are kept apart: however many
/// anonymous certificates are shown, they never push out a verified client.
#[derive(Debug, Default)]
struct Transition {
    verified: Tier,
    anonymous: Tier,
    /// Anonymous clients seen once, first in, first out.
    probation: HashMap<TransitionKey, TransitionEntry>,
    order: std::collections::VecDeque<TransitionKey>,
    seq: u64,
}

/// Up to [`TRANSITION_CAP`] entries; when full, the least recently seen goes.
#[derive(Debug, Default)]
struct Tier {
    /// Entries and when they were last seen (a sequence number).
    entries: HashMap<TransitionKey, (TransitionEntry, u64)>,
    recent: std::collections::BTreeMap<u64, TransitionKey>,
}

impl Tier {
    /// Counts a sighting of an entry already here; false if it is not here.
    fn seen(&mut self, key: &TransitionKey, seq: u64, now: &str) -> bool {
        let Some((e, at)) = self.entries.get_mut(key) else {
            return false;
        };
        e.count += 1;
        e.last_seen = now.to_string();
        let before = std::mem::replace(at, seq);
        self.recent.remove(&before);
        self.recent.insert(seq, key.clone());
        true
    }

    fn insert(&mut self, key: TransitionKey, e: TransitionEntry, seq: u64) {
        if self.entries.len() >= TRANSITION_CAP
            && let Some((_, oldest)) = self.recent.pop_first()
        {
            self.entries.remove(&oldest);
        }
        self.recent.insert(seq, key.clone());
        self.entries.insert(key, (e, seq));
    }
}

/// `s`, cut to at most `max` bytes at a character boundary, with `…` when cut.
pub fn capped(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Why admission failed.
enum Refused {
    /// Over the rate limit: a token is available after this long.
    Rate(Duration),
    /// Quota used up: (window end, used).
    Quota(i64, u64),
}

impl Runtime {
    /// Restores persisted quota use (at start).
    pub fn load_quotas(&self, rows: impl IntoIterator<Item = (String, QuotaUse)>) {
        let mut ids = lock(&self.ids);
        for (id, q) in rows {
            ids.entry(id).or_default().quota = q;
        }
    }

    /// Quota use changed since the last call, to persist.
    pub fn quota_rows(&self) -> Vec<(String, QuotaUse)> {
        let mut ids = lock(&self.ids);
        ids.iter_mut()
            .filter(|(_, s)| s.quota_dirty)
            .map(|(id, s)| {
                s.quota_dirty = false;
                (id.clone(), s.quota)
            })
            .collect()
    }

    /// Marks quota rows dirty again (after a failed save, so the next save retries them).
    pub fn remark_dirty(&self, ids_to_retry: &[String]) {
        let mut ids = lock(&self.ids);
        for id in ids_to_retry {
            if let Some(s) = ids.get_mut(id) {
                s.quota_dirty = true;
            }
        }
    }

    /// Takes a rate-limit token, then a unit of quota, under one lock. Nothing is taken when
    /// either refuses.
    fn admit(
        &self,
        id: &str,
        rate: Option<(u32, Duration)>,
        quota: Option<&Quota>,
    ) -> Result<(), Refused> {
        let now_unix = unix_now();
        let window = quota.and_then(|q| quota_window(&q.period, now_unix).map(|w| (q, w)));
        let mut ids = lock(&self.ids);
        let st = match ids.get_mut(id) {
            Some(s) => s,
            None => ids.entry(id.to_string()).or_default(),
        };
        if let Some((q, (start, end))) = window {
            if st.quota.window_start != start {
                st.quota = QuotaUse {
                    window_start: start,
                    used: 0,
                };
            }
            if st.quota.used >= q.requests {
                return Err(Refused::Quota(end, st.quota.used));
            }
        }
        if let Some((limit, per)) = rate {
            let rate = f64::from(limit) / per.as_secs_f64();
            let now = Instant::now();
            let b = st.bucket.get_or_insert(Bucket {
                tokens: f64::from(limit),
                at: now,
            });
            b.tokens =
                (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(f64::from(limit));
            b.at = now;
            if b.tokens < 1.0 {
                return Err(Refused::Rate(
                    Duration::try_from_secs_f64((1.0 - b.tokens) / rate).unwrap_or(per),
                ));
            }
            b.tokens -= 1.0;
        }
        if window.is_some() {
            st.quota.used += 1;
            st.quota_dirty = true;
        }
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
        let mut ids = lock(&self.ids);
        let st = match ids.get_mut(identity) {
            Some(s) => s,
            None => ids.entry(identity.to_string()).or_default(),
        };
        let u = match st.usage.get_mut(route) {
            Some(u) => u,
            None => st.usage.entry(route.to_string()).or_default(),
        };
        u.requests += 1;
        let class = match status {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        };
        u.classes[class] += 1;
        u.bytes_in += bytes_in;
        u.bytes_out += bytes_out;
        u.last_seen = unix_now();
    }

    /// Usage of one identity, per route.
    pub fn usage(&self, identity: &str) -> Vec<Usage> {
        let ids = lock(&self.ids);
        let mut v: Vec<Usage> = ids
            .get(identity)
            .map(|s| {
                s.usage
                    .iter()
                    .map(|(route, u)| Usage {
                        route: route.clone(),
                        requests: u.requests,
                        status_2xx: u.classes[0],
                        status_3xx: u.classes[1],
                        status_4xx: u.classes[2],
                        status_5xx: u.classes[3],
                        bytes_in: u.bytes_in,
                        bytes_out: u.bytes_out,
                        last_seen: crate::pki::rfc3339(u.last_seen),
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by(|a, b| a.route.cmp(&b.route));
        v
    }

    /// Remembers a client that enforcement would reject.
    /// `verified`: the client's certificate verified (only its identity or access failed).
    pub fn record_transition(
        &self,
        domain: &str,
        route: &str,
        fingerprint: &str,
        subject: &str,
        reason: &str,
        verified: bool,
    ) {
        let mut guard = lock(&self.transition);
        let t = &mut *guard;
        let key = (
            capped(domain, 256),
            capped(route, 256),
            capped(fingerprint, 64),
            capped(reason, 64),
        );
        let now = crate::pki::rfc3339(unix_now());
        t.seq += 1;
        let seq = t.seq;
        let tier = if verified {
            &mut t.verified
        } else {
            &mut t.anonymous
        };
        if tier.seen(&key, seq, &now) {
            return;
        }
        let entry = |count| TransitionEntry {
            domain: key.0.clone(),
            route: key.1.clone(),
            fingerprint: key.2.clone(),
            subject: capped(subject, SUBJECT_CAP),
            reason: key.3.clone(),
            count,
            last_seen: now.clone(),
        };
        if verified {
            t.verified.insert(key.clone(), entry(1), seq);
            return;
        }
        if let Some(mut e) = t.probation.remove(&key) {
            // Seen again: promoted.
            t.order.retain(|k| k != &key);
            e.count += 1;
            e.last_seen = now;
            t.anonymous.insert(key, e, seq);
            return;
        }
        if t.probation.len() >= TRANSITION_PROBATION
            && let Some(oldest) = t.order.pop_front()
        {
            t.probation.remove(&oldest);
        }
        t.order.push_back(key.clone());
        t.probation.insert(key.clone(), entry(1));
    }

    pub fn transition_report(&self) -> Vec<TransitionEntry> {
        let t = lock(&self.transition);
        let mut v: Vec<TransitionEntry> = t
            .verified
            .entries
            .values()
            .chain(t.anonymous.entries.values())
            .map(|(e, _)| e)
            .chain(t.probation.values())
            .cloned()
            .collect();
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
