//! External vectors (issue 10, point 11): every CLIENT case of x509-limbo, and every case whose
//! leaf is serverAuth-only, run through the verifier the handshake uses
//! (`ClientVerifier::check`) at the case's `validation_time`. Known divergences are listed by id
//! with the reason; each of them fails closed (we refuse where limbo expects success).

use std::collections::HashMap;
use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use serde_json::Value;
use symbolon::tls::verify::{ClientVerifier, DEFAULT_MAX_CHAIN_DEPTH};
use symbolon::tls::{FailReason, Mode};

/// Cases where our verdict differs from x509-limbo's, and why. Every one must be a refusal
/// where limbo expects success: a divergence may only ever fail closed.
const KNOWN_DIVERGENCES: &[(&str, &str)] = &[
    (
        "rfc5280::nc::nc-permits-email-exact",
        "rustls-webpki does not implement rfc822Name name constraints: a chain under an email constraint is refused",
    ),
    (
        "rfc5280::nc::nc-permits-email-domain",
        "rustls-webpki does not implement rfc822Name name constraints",
    ),
    (
        "rfc5280::nc::nc-permits-email-literal-asterisk-exact-match",
        "rustls-webpki does not implement rfc822Name name constraints",
    ),
    (
        "rfc5280::nc::nc-permits-email-literal-double-asterisk",
        "rustls-webpki does not implement rfc822Name name constraints",
    ),
    (
        "rfc5280::nc::nc-permits-email-literal-mid-asterisk",
        "rustls-webpki does not implement rfc822Name name constraints",
    ),
];

/// The vectors: `$SYMBOLON_LIMBO`, else `../shared/testdata/limbo-core.json` next to the
/// repository, else the workplace's shared folder (a clean clone elsewhere on the machine).
fn limbo_path() -> PathBuf {
    let candidates = [
        std::env::var_os("SYMBOLON_LIMBO").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/limbo-core.json")),
        Some(PathBuf::from("/work/shared/testdata/limbo-core.json")),
    ];
    let candidates: Vec<PathBuf> = candidates.into_iter().flatten().collect();
    candidates
        .iter()
        .find(|p| p.exists())
        .cloned()
        .unwrap_or_else(|| candidates[1].clone())
}

fn certs(pems: &[Value]) -> Vec<CertificateDer<'static>> {
    pems.iter()
        .flat_map(|p| {
            CertificateDer::pem_slice_iter(p.as_str().unwrap().as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        })
        .collect()
}

/// Whether a leaf has an extendedKeyUsage extension that allows serverAuth but not clientAuth.
fn server_auth_only(der: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value.server_auth && !eku.value.client_auth && !eku.value.any,
        _ => false,
    }
}

/// Our verdict on one case: `Ok` if the handshake's verifier accepts the chain.
fn verdict(case: &Value) -> Result<(), String> {
    let trusted = certs(case["trusted_certs"].as_array().unwrap());
    let pem: String = case["trusted_certs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    // A bundle the gateway would refuse to load never verifies anything.
    let bundle =
        match symbolon::pki::trust_bundle_from_pem(pem.as_bytes(), std::path::Path::new("limbo")) {
            Ok(b) => b,
            Err(e) => return Err(format!("bundle refused: {e}")),
        };
    assert!(!trusted.is_empty() || bundle.certs.is_empty());
    let depth = case["max_chain_depth"]
        .as_u64()
        .map_or(DEFAULT_MAX_CHAIN_DEPTH, |d| d as usize + 1);
    let crls: Vec<webpki::CertRevocationList<'static>> = case["crls"]
        .as_array()
        .map(|list| {
            list.iter()
                .flat_map(|p| {
                    CertificateRevocationListDer::pem_slice_iter(p.as_str().unwrap().as_bytes())
                        .map(|c| c.unwrap())
                        .collect::<Vec<_>>()
                })
                .map(|der| {
                    webpki::OwnedCertRevocationList::from_der(der.as_ref())
                        .unwrap()
                        .into()
                })
                .collect()
        })
        .unwrap_or_default();
    let verifier = ClientVerifier::new(Mode::Require, Some(&bundle), depth).with_crls(crls, true);
    let peer = certs(&[case["peer_certificate"].clone()]);
    let intermediates = certs(case["untrusted_intermediates"].as_array().unwrap());
    let at = match case["validation_time"].as_str() {
        Some(t) => {
            let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .unwrap();
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.unix_timestamp() as u64))
        }
        None => UnixTime::now(),
    };
    verifier
        .check(&peer[0], &intermediates, at)
        .map(|_| ())
        .map_err(|r: FailReason| r.to_string())
}

#[test]
fn x509_limbo_client_cases_and_server_auth_only_leaves() {
    let path = limbo_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. The limbo vectors live in the shared folder next to the repository (../shared/testdata); or set SYMBOLON_LIMBO to the file",
            path.display()
        )
    });
    let doc: Value = serde_json::from_str(&text).unwrap();
    let known: HashMap<&str, &str> = KNOWN_DIVERGENCES.iter().copied().collect();
    let mut ran = 0;
    let mut client_cases = 0;
    let mut disagreements = Vec::new();
    let mut seen_known = Vec::new();
    for case in doc["testcases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        let client = case["validation_kind"] == "CLIENT";
        let peer = certs(&[case["peer_certificate"].clone()]);
        let server_only = server_auth_only(&peer[0]);
        if !client && !server_only {
            continue;
        }
        ran += 1;
        client_cases += usize::from(client);
        // For a serverAuth-only leaf a client-certificate verifier must refuse, whatever
        // limbo expects for a server.
        let expect_ok = client && case["expected_result"] == "SUCCESS" && !server_only;
        let got = verdict(case);
        if let Some(reason) = known.get(id) {
            assert!(
                got.is_err(),
                "{id}: a known divergence ({reason}) must fail closed, but it was accepted"
            );
            seen_known.push(id);
            continue;
        }
        if got.is_ok() != expect_ok {
            disagreements.push(format!("{id}: expected {expect_ok}, got {got:?}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "disagreements with x509-limbo:\n{}",
        disagreements.join("\n")
    );
    assert_eq!(client_cases, 10, "every CLIENT case ran");
    assert!(ran >= 14, "ran {ran} cases");
    assert_eq!(
        seen_known.len(),
        KNOWN_DIVERGENCES.len(),
        "a listed divergence no longer exists: {seen_known:?}"
    );
}
