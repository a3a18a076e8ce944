//! Expiry watch: every certificate the gateway knows — domains' server chains, trust bundles'
//! CAs, upstream credentials and client certificates seen in traffic — with its not-after, as an
//! API list, Prometheus gauges and log warnings at configurable thresholds.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::lock;
use crate::pki::{CertInfo, rfc3339};

/// One certificate and when it expires.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KnownCert {
    /// `domain`, `bundle`, `credential` or `client` (seen in traffic).
    pub kind: String,
    /// The domain, bundle or credential it belongs to (for clients: the domain it was seen on).
    pub name: String,
    pub subject: String,
    pub fingerprint_sha256: String,
    pub not_after: String,
    /// Negative once expired.
    pub expires_in_seconds: i64,
    /// A sidecar credential the built-in CA renews by itself (no expiry warnings unless its
    /// rotation fails and it actually expires).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_rotated: bool,
    #[serde(skip)]
    pub not_after_unix: i64,
}

impl KnownCert {
    pub fn new(kind: &str, name: &str, info: &CertInfo) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
            subject: crate::authz::capped(&info.subject, crate::authz::SUBJECT_CAP),
            fingerprint_sha256: info.fingerprint_sha256.clone(),
            not_after: rfc3339(info.not_after),
            expires_in_seconds: 0,
            auto_rotated: false,
            not_after_unix: info.not_after,
        }
    }

    fn at(mut self, now: i64) -> Self {
        self.expires_in_seconds = self.not_after_unix - now;
        self
    }
}

const SEEN_CAP: usize = 10_000;
/// Individual expiry warnings per check; the rest are counted in one line.
pub const WARNINGS_PER_CHECK: usize = 20;

/// Verified client certificates seen in traffic, by fingerprint and by expiry. When full, the
/// ones that expire last give way (the list is for expiry warnings), and certificates expired
/// for a week leave.
#[derive(Debug, Default)]
struct Seen {
    by_fingerprint: HashMap<String, KnownCert>,
    by_expiry: std::collections::BTreeSet<(i64, String)>,
}

impl Seen {
    fn insert(&mut self, cert: KnownCert, now: i64) {
        if self.by_fingerprint.contains_key(&cert.fingerprint_sha256) {
            return;
        }
        if self.by_fingerprint.len() >= SEEN_CAP {
            while let Some((t, fp)) = self.by_expiry.first().cloned() {
                if t >= now - 7 * 86_400 {
                    break;
                }
                self.by_expiry.pop_first();
                self.by_fingerprint.remove(&fp);
            }
        }
        if self.by_fingerprint.len() >= SEEN_CAP {
            match self.by_expiry.last().cloned() {
                Some((t, fp)) if cert.not_after_unix < t => {
                    self.by_expiry.pop_last();
                    self.by_fingerprint.remove(&fp);
                }
                _ => return,
            }
        }
        self.by_expiry
            .insert((cert.not_after_unix, cert.fingerprint_sha256.clone()));
        self.by_fingerprint
            .insert(cert.fingerprint_sha256.clone(), cert);
    }
}

/// Client certificates seen in traffic (bounded), and the warnings already logged.
#[derive(Debug, Default)]
pub struct Watch {
    seen: Mutex<Seen>,
    warned: Mutex<HashSet<(String, i64)>>,
    /// Label sets of the expiry gauges last set, so that replaced certificates stop reporting.
    gauged: Mutex<HashSet<(String, String, String)>>,
}

impl Watch {
    /// Remembers a verified client certificate (once per fingerprint; bounded, subjects cut).
    /// Certificates that failed verification are not clients to warn about: anyone can make
    /// them, so they stay out (the transition report lists them).
    pub fn saw_client(&self, domain: &str, info: &CertInfo) {
        lock(&self.seen).insert(
            KnownCert::new("client", domain, info),
            crate::pki::unix_now(),
        );
    }

    /// Everything known, soonest expiry first, that expires within `within` seconds.
    pub fn expiring(&self, configured: &[KnownCert], now: i64, within: i64) -> Vec<KnownCert> {
        let seen = lock(&self.seen);
        let mut all: Vec<KnownCert> = configured
            .iter()
            .chain(seen.by_fingerprint.values())
            .filter(|c| c.not_after_unix - now <= within)
            .cloned()
            .map(|c| c.at(now))
            .collect();
        all.sort_by_key(|c| c.not_after_unix);
        all
    }

    /// Logs a warning the first time a certificate crosses each threshold (at most
    /// [`WARNINGS_PER_CHECK`] lines, then one line that counts the rest); sets the gauges.
    /// Returns how many certificates crossed a threshold.
    pub fn check(&self, configured: &[KnownCert], now: i64, thresholds: &[i64]) -> usize {
        let mut current = HashSet::new();
        for c in configured {
            metrics::gauge!("symbolon_certificate_expiry_seconds", "kind" => c.kind.clone(), "name" => c.name.clone(), "fingerprint" => c.fingerprint_sha256.clone())
                .set((c.not_after_unix - now) as f64);
            current.insert((c.kind.clone(), c.name.clone(), c.fingerprint_sha256.clone()));
        }
        {
            // A replaced certificate (a rotated credential, a renewed domain) reads NaN, which
            // no alert threshold matches, instead of its last value forever.
            let mut gauged = lock(&self.gauged);
            for (kind, name, fp) in gauged.difference(&current) {
                metrics::gauge!("symbolon_certificate_expiry_seconds", "kind" => kind.clone(), "name" => name.clone(), "fingerprint" => fp.clone())
                    .set(f64::NAN);
            }
            *gauged = current;
        }
        let seen: Vec<KnownCert> = lock(&self.seen).by_fingerprint.values().cloned().collect();
        let soon = seen
            .iter()
            .filter(|c| c.not_after_unix - now <= 7 * 86_400)
            .count();
        metrics::gauge!("symbolon_client_certificates_expiring_7d").set(soon as f64);
        let mut warned = lock(&self.warned);
        let mut crossed = 0;
        for c in configured.iter().chain(&seen) {
            let left = c.not_after_unix - now;
            if c.auto_rotated && left > 0 {
                continue;
            }
            // The smallest threshold already crossed.
            let Some(t) = thresholds.iter().copied().filter(|t| left <= *t).min() else {
                continue;
            };
            if warned.insert((c.fingerprint_sha256.clone(), t)) {
                crossed += 1;
                if crossed > WARNINGS_PER_CHECK {
                    continue;
                }
                let when = if left < 0 {
                    format!("expired {} ago", crate::duration::span(-left))
                } else {
                    format!("expires in {}", crate::duration::span(left))
                };
                tracing::warn!(
                    kind = %c.kind, name = %c.name, subject = %c.subject,
                    fingerprint = %c.fingerprint_sha256, not_after = %c.not_after,
                    "certificate {when}"
                );
            }
        }
        if crossed > WARNINGS_PER_CHECK {
            tracing::warn!(
                more = crossed - WARNINGS_PER_CHECK,
                "and more certificates crossed an expiry threshold; see GET /api/v1/expiring"
            );
        }
        crossed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_of_expiring_certificates_write_a_bounded_number_of_warnings() {
        let buf = std::sync::Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = {
            let buf = buf.clone();
            move || Writer(buf.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish();
        let now = 1_800_000_000;
        let certs: Vec<KnownCert> = (0..5_000)
            .map(|i| KnownCert {
                kind: "client".into(),
                name: "d".into(),
                subject: format!("CN=c{i}"),
                fingerprint_sha256: format!("{i:064}"),
                not_after: String::new(),
                expires_in_seconds: 0,
                auto_rotated: false,
                not_after_unix: now + 3_600,
            })
            .collect();
        let w = Watch::default();
        let crossed =
            tracing::subscriber::with_default(subscriber, || w.check(&certs, now, &[86_400]));
        assert_eq!(crossed, 5_000);
        let lines = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(lines.lines().count(), WARNINGS_PER_CHECK + 1, "{lines}");
        assert!(lines.contains("more=4980"), "{lines}");
    }

    #[test]
    fn a_full_inventory_keeps_the_certificates_that_expire_first() {
        let now = 1_800_000_000;
        let cert = |i: usize, not_after: i64| KnownCert {
            kind: "client".into(),
            name: "d".into(),
            subject: String::new(),
            fingerprint_sha256: format!("{i:064}"),
            not_after: String::new(),
            expires_in_seconds: 0,
            auto_rotated: false,
            not_after_unix: not_after,
        };
        let mut seen = Seen::default();
        for i in 0..SEEN_CAP {
            seen.insert(cert(i, now + 365 * 86_400), now);
        }
        // One that expires tomorrow still gets in (a far one gives way)…
        seen.insert(cert(SEEN_CAP, now + 86_400), now);
        assert!(seen.by_fingerprint.contains_key(&format!("{SEEN_CAP:064}")));
        assert_eq!(seen.by_fingerprint.len(), SEEN_CAP);
        // …and one that expires later than all of them does not push anything out.
        seen.insert(cert(SEEN_CAP + 1, now + 900 * 86_400), now);
        assert!(
            !seen
                .by_fingerprint
                .contains_key(&format!("{:064}", SEEN_CAP + 1))
        );
    }

    struct Writer(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
