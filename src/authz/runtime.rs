//! What outlives snapshots: rate-limit buckets, quota use, usage counters and the transition
//! report, all bounded.

use super::*;

/// Runtime counters that outlive snapshots: rate-limit buckets, quota use, usage, and the
/// transition report. One lock and one hash lookup per request for admission, one for usage.
#[derive(Debug, Default)]
pub struct Runtime {
    ids: Mutex<HashMap<String, IdState>>,
    transition: Mutex<Transition>,
}

#[derive(Debug, Default)]
pub(crate) struct IdState {
    bucket: Option<Bucket>,
    quota: QuotaUse,
    /// Quota use changed since the last save.
    quota_dirty: bool,
    usage: HashMap<String, UsageCounters>,
}

#[derive(Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct UsageCounters {
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

pub(crate) type TransitionKey = (String, String, String, String);

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
pub(crate) const TRANSITION_PROBATION: usize = 1_000;
pub(crate) const TRANSITION_CAP: usize = 10_000;
/// Subjects longer than this are cut (a certificate's subject can be 60 kB).
pub const SUBJECT_CAP: usize = 256;

/// Clients whose certificate verified, and anonymous ones, are kept apart: however many
/// anonymous certificates are shown, they never push out a verified client.
#[derive(Debug, Default)]
pub(crate) struct Transition {
    verified: Tier,
    anonymous: Tier,
    /// Anonymous clients seen once, first in, first out.
    probation: HashMap<TransitionKey, TransitionEntry>,
    order: std::collections::VecDeque<TransitionKey>,
    seq: u64,
}

/// Up to [`TRANSITION_CAP`] entries; when full, the least recently seen goes.
#[derive(Debug, Default)]
pub(crate) struct Tier {
    /// Entries and when they were last seen (a sequence number).
    entries: HashMap<TransitionKey, (TransitionEntry, u64)>,
    recent: std::collections::BTreeMap<u64, TransitionKey>,
}

impl Tier {
    /// Counts a sighting of an entry already here; false if it is not here.
    pub(crate) fn seen(&mut self, key: &TransitionKey, seq: u64, now: &str) -> bool {
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

    pub(crate) fn insert(&mut self, key: TransitionKey, e: TransitionEntry, seq: u64) {
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
pub(crate) enum Refused {
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
    pub(crate) fn admit(
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
