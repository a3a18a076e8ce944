//! Revocation at scale: builds a revocation set of N serials, times lookups (hits and misses),
//! and times signing a CRL that lists them all with the built-in CA.
//!
//!   cargo run --release --example revocation_bench            # N=1000000
//!   N=200000 cargo run --release --example revocation_bench

#![allow(clippy::expect_used)]

use std::time::Instant;

use symbolon::revocation::Revocations;
use symbolon::store::RevocationRow;

fn main() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rows: Vec<RevocationRow> = (0..n)
        .map(|i| RevocationRow {
            id: i.to_string(),
            fingerprint: None,
            serial: Some(format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))),
            reason: "keyCompromise".into(),
            revoked_at: "2026-11-25T00:00:00Z".into(),
            subject: None,
            issuer: Some("issuer".into()),
        })
        .collect();
    let t = Instant::now();
    let set = Revocations::from_rows(&rows);
    let build = t.elapsed();
    let probes = 1_000_000u64;
    let t = Instant::now();
    let mut hits = 0;
    for i in 0..probes {
        let serial = format!("{:x}", (i % n).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if set.lookup("", "issuer", &serial).is_some() {
            hits += 1;
        }
    }
    let lookup = t.elapsed();
    println!(
        "revocation set: {n} serials built in {build:.2?}; {probes} lookups ({hits} hits) in {lookup:.2?} = {:.0} ns per lookup (includes formatting the probe)",
        lookup.as_nanos() as f64 / probes as f64
    );

    // Lookups at 1/10 the size, to show they do not grow with the list.
    let small = Revocations::from_rows(&rows[..(n as usize / 10).max(1)]);
    let t = Instant::now();
    for i in 0..probes {
        let serial = format!(
            "{:x}",
            (i % (n / 10).max(1)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        std::hint::black_box(small.lookup("", "issuer", &serial));
    }
    println!(
        "same lookups on {} serials: {:.0} ns per lookup",
        n / 10,
        t.elapsed().as_nanos() as f64 / probes as f64
    );

    let dir = tempfile_dir();
    symbolon::ca::init(&dir, "p256", b"bench", None).expect("ca init");
    let ca = symbolon::ca::Ca::load(&dir, b"bench").expect("ca load");
    let entries: Vec<(String, time::OffsetDateTime, String)> = rows
        .iter()
        .map(|r| {
            (
                r.serial.clone().unwrap_or_default(),
                time::OffsetDateTime::now_utc(),
                r.reason.clone(),
            )
        })
        .collect();
    let t = Instant::now();
    let der = ca.crl(&entries, 1, time::Duration::hours(24)).expect("crl");
    println!(
        "CRL of {n} revoked serials signed in {:.2?} ({} MB DER)",
        t.elapsed(),
        der.len() / 1_000_000
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("symbolon-revocation-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
