//! The built-in CA in the gateway: enrollment with single-use bootstrap tokens, renewal over
//! mTLS (also with a new key), refusal for revoked certificates, signing through the API.

use http::Method;
use serde_json::{Value, json};

use crate::admin::code;
use crate::support::pki::Leaf;
use crate::support::*;

use crate::issuance::{Setup, leaf, setup};

fn csr(cn: &str) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![format!("{cn}.devices.test")]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    (p.serialize_request(&key).unwrap().pem().unwrap(), key)
}

async fn post(s: &Setup, spec: &ClientSpec, path: &str, body: Value) -> (u16, Value) {
    let r = crate::issuance::post(s, spec, path, body).await;
    (r.status.as_u16(), r.json())
}

#[tokio::test]
async fn enroll_with_a_token_then_renew_over_mtls() {
    let s = setup().await;
    let t = s
        .api
        .ok(
            Method::POST,
            "/api/v1/ca/enrollment-tokens",
            Some(json!({"name": "device-1", "dns_names": ["device-1.devices.test"], "expires_in": "1h", "lifetime": "4s"})),
        )
        .await;
    let token = t["token"].as_str().unwrap().to_string();
    let (csr_pem, key) = csr("device-1");

    // Enroll: no client certificate yet (the domain is in optional mode).
    let (status, v) = post(
        &s,
        &s.h.client(),
        "/.well-known/ca/enroll",
        json!({"token": token, "csr_pem": csr_pem}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let first = leaf(v["certificate_pem"].as_str().unwrap(), &key);
    let r = get(s.gw.tls_addr(), "api.test", &s.h.client().cert(&first), "/")
        .await
        .unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS");
    assert!(r.seen("x-client-subject").unwrap().contains("CN=device-1"));

    // The token was single use.
    let (status, v) = post(
        &s,
        &s.h.client(),
        "/.well-known/ca/enroll",
        json!({"token": token, "csr_pem": csr_pem}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str().unwrap()),
        (403, "invalid_token")
    );
    // An expired token is refused too.
    let t = s
        .api
        .ok(
            Method::POST,
            "/api/v1/ca/enrollment-tokens",
            Some(json!({"name": "late", "expires_in": "1s"})),
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, v) = post(
        &s,
        &s.h.client(),
        "/.well-known/ca/enroll",
        json!({"token": t["token"], "csr_pem": csr_pem}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str().unwrap()),
        (403, "invalid_token")
    );

    // Renew over mTLS with a new key (in the second half of the lifetime): same subject, new
    // certificate.
    crate::issuance::until_renewable(&first).await;
    let (new_csr, new_key) = csr("someone-else");
    let (status, v) = post(
        &s,
        &s.h.client().cert(&first),
        "/.well-known/ca/renew",
        json!({"csr_pem": new_csr}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let renewed = leaf(v["certificate_pem"].as_str().unwrap(), &new_key);
    assert_ne!(renewed.fingerprint(), first.fingerprint());
    let r = get(
        s.gw.tls_addr(),
        "api.test",
        &s.h.client().cert(&renewed),
        "/",
    )
    .await
    .unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS");
    let subject = r.seen("x-client-subject").unwrap();
    assert!(
        subject.contains("CN=device-1") && !subject.contains("someone-else"),
        "{subject}"
    );

    // Without a certificate there is nothing to renew.
    let (status, v) = post(
        &s,
        &s.h.client(),
        "/.well-known/ca/renew",
        json!({"csr_pem": new_csr}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str().unwrap()),
        (403, "certificate_required")
    );
    // A revoked certificate cannot renew.
    s.api
        .ok(
            Method::POST,
            "/api/v1/revocations",
            Some(json!({"certificate_pem": first.cert_pem, "reason": "superseded"})),
        )
        .await;
    let (status, v) = post(
        &s,
        &s.h.client().cert(&first),
        "/.well-known/ca/renew",
        json!({"csr_pem": new_csr}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str().unwrap()),
        (403, "certificate_revoked"),
        "{v}"
    );

    // Signing through the admin API, and the record of everything issued.
    let (csr3, _) = csr("api-signed");
    let v = s
        .api
        .ok(
            Method::POST,
            "/api/v1/ca/sign",
            Some(json!({"csr_pem": csr3, "profile": "client", "lifetime": "1h"})),
        )
        .await;
    assert!(
        v["certificate_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let (status, v) = s
        .api
        .post("/api/v1/ca/sign", json!({"csr_pem": "not a csr"}))
        .await;
    assert_eq!((status.as_u16(), code(&v)), (422, "bad_csr"));
    let issued = s.api.ok(Method::GET, "/api/v1/ca/issued", None).await;
    let via: Vec<&str> = issued
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["via"].as_str().unwrap())
        .collect();
    assert!(
        via.contains(&"enroll") && via.contains(&"renew") && via.contains(&"sign"),
        "{issued}"
    );
}

#[tokio::test]
async fn ca_renew_cli_rotates_the_key_over_mtls() {
    let h = Harness::new();
    symbolon::ca::init(&h.path("ca"), "p256", b"renew passphrase", None).unwrap();
    h.write("ca-pass", "renew passphrase");
    std::fs::copy(h.path("ca/root.pem"), h.path("clients.pem")).unwrap();
    let body = format!(
        "[ca]\ndir = \"ca\"\npassphrase_file = \"ca-pass\"\n\n{}[[routes]]\nname = \"ca\"\npath_prefix = \"/.well-known/ca\"\nupstream = \"builtin:ca\"\n\n{}",
        h.domain("localhost", Some("clients.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    // Issued by the CLI on the gateway's data dir, so it is on the issued list (renewal
    // needs that) and in the audit log.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_symbolon"))
        .args([
            "--data-dir",
            ".",
            "ca",
            "issue",
            "--name",
            "sensor",
            "--lifetime",
            "4s",
            "--ca-dir",
            "ca",
            "--passphrase-file",
            "ca-pass",
        ])
        .current_dir(h.dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let issued_pem = std::fs::read_to_string(h.path("sensor.pem")).unwrap();
    let key_pem = std::fs::read_to_string(h.path("sensor.key")).unwrap();
    let der = symbolon::pki::parse_certs(issued_pem.as_bytes(), std::path::Path::new("x")).unwrap()
        [0]
    .clone();
    crate::issuance::until_renewable(&Leaf {
        der,
        cert_pem: issued_pem.clone(),
        chain_pem: issued_pem.clone(),
        key_pem: key_pem.clone(),
    })
    .await;
    h.write("server-ca.pem", &h.server_ca.pem());
    let url = format!("https://localhost:{}/.well-known/ca", gw.tls_addr().port());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_symbolon"))
        .args([
            "ca",
            "renew",
            "--url",
            &url,
            "--cert",
            "sensor.pem",
            "--key",
            "sensor.key",
            "--server-ca",
            "server-ca.pem",
            "--rotate-key",
        ])
        .current_dir(h.dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("renewed") && stdout.contains("new key"),
        "{stdout}"
    );
    let new_cert = std::fs::read_to_string(h.path("sensor.pem")).unwrap();
    let new_key = std::fs::read_to_string(h.path("sensor.key")).unwrap();
    assert_ne!(new_cert, issued_pem);
    assert_ne!(new_key, key_pem);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(h.path("sensor.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let der = symbolon::pki::parse_certs(new_cert.as_bytes(), std::path::Path::new("x")).unwrap()
        [0]
    .clone();
    let renewed = Leaf {
        der,
        cert_pem: new_cert.clone(),
        chain_pem: new_cert,
        key_pem: new_key,
    };
    let r = get(gw.tls_addr(), "localhost", &h.client().cert(&renewed), "/")
        .await
        .unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS");
    assert!(r.seen("x-client-subject").unwrap().contains("CN=sensor"));
}
