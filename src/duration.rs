//! Durations in settings and messages: `"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"30d"`, with the
//! range each setting accepts.

use std::time::Duration;

/// The longest duration any setting accepts (100 years); longer values are refused instead of
/// overflowing the clock arithmetic that uses them.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// Parses `"250ms"`, `"10s"`, `"5m"`, `"1h"`, `"30d"` (at most [`MAX_DURATION`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let too_long = || format!("'{s}' is too long; the longest duration is 36500d");
    let n: u64 = match num.parse() {
        Ok(n) => n,
        Err(_) if !num.is_empty() => return Err(too_long()),
        Err(_) => {
            return Err(format!(
                "'{s}' is not a duration; write it as 250ms, 10s, 5m, 1h or 30d"
            ));
        }
    };
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit; write it as 250ms, 10s, 5m, 1h or 30d"
            ));
        }
    };
    let d = n
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(too_long)?;
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// A duration setting and its documented range: errors name the field and the range.
#[derive(Clone, Copy, Debug)]
pub struct DurationRange {
    pub field: &'static str,
    pub min: Duration,
    pub max: Duration,
}

impl DurationRange {
    /// Parses `s` and checks it against the range.
    pub fn parse(&self, s: &str) -> Result<Duration, String> {
        let d = parse_duration(s).map_err(|e| {
            format!(
                "{}: {e}; it must be between {} and {}",
                self.field,
                format_duration(&self.min),
                format_duration(&self.max)
            )
        })?;
        self.check(d)
    }

    pub fn check(&self, d: Duration) -> Result<Duration, String> {
        if d < self.min || d > self.max {
            return Err(format!(
                "{}: '{}' is out of range; it must be between {} and {}",
                self.field,
                format_duration(&d),
                format_duration(&self.min),
                format_duration(&self.max)
            ));
        }
        Ok(d)
    }

    /// "between MIN and MAX", for hints.
    pub fn describe(&self) -> String {
        format!(
            "{} takes a duration between {} and {}",
            self.field,
            format_duration(&self.min),
            format_duration(&self.max)
        )
    }
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Lifetime of a certificate the built-in CA issues: 1s to 10 years (capped in any case by
/// the CA's own expiry).
pub const LIFETIME: DurationRange = DurationRange {
    field: "lifetime",
    min: secs(1),
    max: secs(3650 * 86_400),
};
/// How long an enrollment token stays valid: 1s to 90 days.
pub const TOKEN_EXPIRES_IN: DurationRange = DurationRange {
    field: "expires_in",
    min: secs(1),
    max: secs(90 * 86_400),
};
/// A rate limit's period: 1ms to 30 days.
pub const RATE_PER: DurationRange = DurationRange {
    field: "rate_limit.per",
    min: Duration::from_millis(1),
    max: secs(30 * 86_400),
};
/// A quota's fixed window: 1s to 366 days.
pub const QUOTA_PERIOD: DurationRange = DurationRange {
    field: "quota.period",
    min: secs(1),
    max: secs(366 * 86_400),
};
/// How far ahead the expiry list looks: 0s to 10 years.
pub const EXPIRING_WITHIN: DurationRange = DurationRange {
    field: "within",
    min: secs(0),
    max: secs(3650 * 86_400),
};

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: &Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 || s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

pub mod serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// A duration in the largest sensible unit: "3 days", "5 hours", "40 minutes", "12 seconds".
pub fn span(secs: i64) -> String {
    let round = |unit: i64| (secs + unit / 2) / unit;
    let (n, unit) = if round(86_400) >= 2 {
        (round(86_400), "day")
    } else if round(3_600) >= 2 {
        (round(3_600), "hour")
    } else if round(60) >= 2 {
        (round(60), "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for s in ["250ms", "10s", "0ms"] {
            assert_eq!(format_duration(&parse_duration(s).unwrap()), s);
        }
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("10w").is_err());
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(3 * 86_400 + 5), "3 days");
        assert_eq!(span(86_400), "24 hours");
        assert_eq!(span(86_399), "24 hours");
        assert_eq!(span(7_199), "2 hours");
        assert_eq!(span(3_600), "60 minutes");
        assert_eq!(span(1), "1 second");
    }
}
