//! The revocation set: certificates revoked by fingerprint, or by serial number *of one issuer*.
//! A serial number means nothing without its issuer (two CAs may both issue serial `50:01`), so a
//! serial entry names the issuer by the SHA-256 of its public key (SubjectPublicKeyInfo), and is
//! matched only against certificates whose verified issuer has that key. Built with each
//! snapshot; lookups are O(1) hash lookups, however long the list.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::FromRow;

/// RFC 5280 revocation reasons, by the names operators use.
pub const REASONS: [&str; 9] = [
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
];

/// One revocation.
#[derive(Clone, Debug)]
pub struct Revoked {
    pub reason: String,
    pub revoked_at: String,
}

#[derive(Debug, Default)]
pub struct Revocations {
    by_fingerprint: HashMap<String, Revoked>,
    /// Issuer key → normalized serial → revocation (nested so a lookup borrows its keys).
    by_serial: HashMap<String, HashMap<String, Revoked>>,
    /// Serial entries from before issuers were recorded (store migration 0007): they match any
    /// issuer, which fails closed. Revoke again with an issuer and delete them to narrow them.
    by_serial_any_issuer: HashMap<String, Revoked>,
}

/// Serial numbers compared as lower-case hex without separators or leading zero bytes.
pub fn normalize_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

impl Revocations {
    pub fn from_rows(rows: &[RevocationRow]) -> Self {
        let mut r = Self::default();
        for row in rows {
            let entry = Revoked {
                reason: row.reason.clone(),
                revoked_at: row.revoked_at.clone(),
            };
            if let Some(fp) = &row.fingerprint {
                r.by_fingerprint.insert(fp.clone(), entry.clone());
            }
            if let Some(serial) = &row.serial {
                let serial = normalize_serial(serial);
                match &row.issuer {
                    Some(issuer) => {
                        r.by_serial
                            .entry(issuer.clone())
                            .or_default()
                            .insert(serial, entry);
                    }
                    None => {
                        r.by_serial_any_issuer.insert(serial, entry);
                    }
                }
            }
        }
        r
    }

    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
            && self.by_serial.is_empty()
            && self.by_serial_any_issuer.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_fingerprint.len()
            + self.by_serial.values().map(HashMap::len).sum::<usize>()
            + self.by_serial_any_issuer.len()
    }

    /// The revocation of one certificate: by its fingerprint, or by its issuer's key and its
    /// (normalized) serial.
    pub fn lookup(&self, fingerprint: &str, issuer_key: &str, serial: &str) -> Option<&Revoked> {
        self.by_fingerprint.get(fingerprint).or_else(|| {
            if self.by_serial.is_empty() && self.by_serial_any_issuer.is_empty() {
                return None;
            }
            self.by_serial
                .get(issuer_key)
                .and_then(|serials| serials.get(serial))
                .or_else(|| self.by_serial_any_issuer.get(serial))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial("00:7E:5a"), "7e5a");
        assert_eq!(normalize_serial("7e5a"), "7e5a");
        assert_eq!(normalize_serial("00"), "0");
    }

    #[test]
    fn a_million_revocations_are_looked_up_by_hash() {
        let rows: Vec<RevocationRow> = (0..1_000_000u64)
            .map(|i| RevocationRow {
                id: i.to_string(),
                fingerprint: None,
                serial: Some(format!("{i:x}")),
                reason: "keyCompromise".into(),
                revoked_at: "2026-11-25T00:00:00Z".into(),
                subject: None,
                issuer: Some("k".into()),
            })
            .collect();
        let r = Revocations::from_rows(&rows);
        assert_eq!(r.len(), 1_000_000);
        let start = std::time::Instant::now();
        for i in 0..100_000u64 {
            assert!(r.lookup("", "k", &format!("{:x}", i * 7)).is_some());
        }
        assert!(r.lookup("", "k", "ffffffffff").is_none());
        assert!(r.lookup("", "other issuer", "7").is_none());
        // Not a benchmark: a sanity bound that a linear scan (1e11 comparisons) could never meet.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}

#[derive(Clone, Debug, FromRow, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevocationRow {
    pub id: String,
    /// SHA-256 of the revoked certificate (hex).
    pub fingerprint: Option<String>,
    /// Serial number (lower-case hex, colon-separated as `openssl x509 -serial` without the colons removed).
    pub serial: Option<String>,
    /// RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
    /// superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise.
    pub reason: String,
    pub revoked_at: String,
    pub subject: Option<String>,
    /// With `serial`: SHA-256 (hex) of the issuer's SubjectPublicKeyInfo. The serial is revoked
    /// for that issuer only (`null` on rows from before issuers were recorded: any issuer).
    #[serde(default)]
    pub issuer: Option<String>,
}
