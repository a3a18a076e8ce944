//! Issue 11: the built-in CA issues only what was authorized. Each test is an attack that
//! worked before: a token used for another name, a renewal that gains serverAuth or drops IP
//! SANs, a renewal with a look-alike CA's certificate, a renewal burst, a revoked ancestor,
//! self-service binding of someone else's certificate, issuance without an audit entry.

use std::time::Duration;

use http::Method;
use http_body_util::Full;
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::admin::{Api, code};
use crate::support::client::Resp;
use crate::support::pki::{Leaf, sign_with};
use crate::support::*;

pub struct Setup {
    pub h: Harness,
    pub gw: symbolon::gateway::Gateway,
    pub api: Api,
}

const PASS: &str = "issuance test passphrase";

async fn setup_with(extra: &str) -> Setup {
    let h = Harness::new();
    symbolon::ca::init(&h.path("ca"), "p256", PASS.as_bytes(), None).unwrap();
    h.write("ca-pass", PASS);
    std::fs::copy(h.path("ca/root.pem"), h.path("clients.pem")).unwrap();
    let body = format!(
        "[ca]\ndir = \"ca\"\npassphrase_file = \"ca-pass\"\n{extra}\n{}{}[[routes]]\nname = \"ca\"\npath_prefix = \"/.well-known/ca\"\nupstream = \"builtin:ca\"\n\n{}",
        h.admin_section(),
        h.domain("api.test", Some("clients.pem"), "optional"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    Setup { h, gw, api }
}

pub async fn setup() -> Setup {
    setup_with("").await
}

/// A CSR with the given subject attributes and SANs.
fn csr_with(
    subject: &[(rcgen::DnType, &str)],
    sans: Vec<rcgen::SanType>,
) -> (String, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    for (t, v) in subject {
        p.distinguished_name.push(t.clone(), *v);
    }
    p.subject_alt_names = sans;
    (p.serialize_request(&key).unwrap().pem().unwrap(), key)
}

/// A certificate for `CN=<cn>` signed through `POST /api/v1/ca/sign` (its DER).
pub async fn signed_by_api(api: &Api, cn: &str) -> rustls::pki_types::CertificateDer<'static> {
    let (csr, _) = cn_csr(cn);
    let (status, v) = api.post("/api/v1/ca/sign", json!({"csr_pem": csr})).await;
    assert_eq!(status.as_u16(), 200, "{v}");
    let pem = v["certificate_pem"].as_str().unwrap();
    symbolon::pki::parse_certs(pem.as_bytes(), std::path::Path::new("x")).unwrap()[0].clone()
}

fn cn_csr(cn: &str) -> (String, rcgen::KeyPair) {
    csr_with(&[(rcgen::DnType::CommonName, cn)], vec![])
}

fn dns(d: &str) -> rcgen::SanType {
    rcgen::SanType::DnsName(d.try_into().unwrap())
}
fn uri(u: &str) -> rcgen::SanType {
    rcgen::SanType::URI(u.try_into().unwrap())
}

pub async fn post(s: &Setup, spec: &ClientSpec, path: &str, body: Value) -> Resp {
    let mut conn = Conn::open(s.gw.tls_addr(), "api.test", spec).await.unwrap();
    let req = http::Request::post(path)
        .header("host", "api.test")
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    conn.send(req).await.unwrap()
}

fn err(r: &Resp) -> (u16, String) {
    (r.status.as_u16(), code(&r.json()).to_string())
}

async fn token(s: &Setup, body: Value) -> String {
    let (status, v) = s.api.post("/api/v1/ca/enrollment-tokens", body).await;
    assert_eq!(status.as_u16(), 201, "{v}");
    v["token"].as_str().unwrap().to_string()
}

async fn enroll(s: &Setup, token: &str, csr: &str) -> Resp {
    post(
        s,
        &s.h.client(),
        "/.well-known/ca/enroll",
        json!({"token": token, "csr_pem": csr}),
    )
    .await
}

pub fn leaf(chain_pem: &str, key: &rcgen::KeyPair) -> Leaf {
    let der = symbolon::pki::parse_certs(chain_pem.as_bytes(), std::path::Path::new("x")).unwrap()
        [0]
    .clone();
    Leaf {
        der,
        cert_pem: chain_pem.into(),
        chain_pem: chain_pem.into(),
        key_pem: key.serialize_pem(),
    }
}

fn issued(r: &Resp, key: &rcgen::KeyPair) -> Leaf {
    assert_eq!(r.status, 200, "{}", r.json());
    leaf(r.json()["certificate_pem"].as_str().unwrap(), key)
}

/// (subject, SANs as `DNS:…`/`IP:…`/`URI:…`/`email:…`, EKU OIDs, is CA)
fn describe(l: &Leaf) -> (String, Vec<String>, Vec<String>, bool) {
    let (_, c) = X509Certificate::from_der(&l.der).unwrap();
    let mut sans = Vec::new();
    if let Ok(Some(s)) = c.subject_alternative_name() {
        for n in &s.value.general_names {
            sans.push(match n {
                x509_parser::extensions::GeneralName::DNSName(d) => format!("DNS:{d}"),
                x509_parser::extensions::GeneralName::URI(u) => format!("URI:{u}"),
                x509_parser::extensions::GeneralName::RFC822Name(e) => format!("email:{e}"),
                x509_parser::extensions::GeneralName::IPAddress(b) => format!("IP:{b:?}"),
                other => format!("{other:?}"),
            });
        }
    }
    let mut eku = Vec::new();
    if let Ok(Some(e)) = c.extended_key_usage() {
        if e.value.client_auth {
            eku.push("clientAuth".to_string());
        }
        if e.value.server_auth {
            eku.push("serverAuth".to_string());
        }
        if e.value.any {
            eku.push("any".to_string());
        }
    }
    let is_ca = c
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|b| b.value.ca);
    (c.subject().to_string(), sans, eku, is_ca)
}

/// Waits (on the clock: the renewal window is about time) until `l` may be renewed.
pub async fn until_renewable(l: &Leaf) {
    let info = symbolon::pki::CertInfo::parse(&l.der).unwrap();
    let from_ms = symbolon::control::issuance::renewable_from(&info) as u128 * 1000 + 100;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    if from_ms > now_ms {
        tokio::time::sleep(Duration::from_millis((from_ms - now_ms) as u64)).await;
    }
}

#[tokio::test]
async fn a_token_buys_only_the_identity_it_was_created_for() {
    let s = setup().await;
    let t = token(
        &s,
        json!({"name": "device-42", "dns_names": ["device-42.iot.test"], "ip_addresses": ["10.0.0.42"]}),
    )
    .await;

    // Everything the old CA handed out for this token is refused, and the token survives.
    let attacks: Vec<(&str, String)> = vec![
        (
            "another subject",
            csr_with(
                &[
                    (rcgen::DnType::OrganizationName, "Acme"),
                    (rcgen::DnType::OrganizationalUnitName, "Payments"),
                    (rcgen::DnType::CommonName, "admin"),
                ],
                vec![],
            )
            .0,
        ),
        (
            "the right CN plus an O",
            csr_with(
                &[
                    (rcgen::DnType::OrganizationName, "Acme"),
                    (rcgen::DnType::CommonName, "device-42"),
                ],
                vec![],
            )
            .0,
        ),
        (
            "a SPIFFE ID",
            csr_with(
                &[(rcgen::DnType::CommonName, "device-42")],
                vec![uri("spiffe://corp.test/ns/prod/sa/admin")],
            )
            .0,
        ),
        (
            "another DNS name",
            csr_with(
                &[(rcgen::DnType::CommonName, "device-42")],
                vec![dns("admin.corp.test")],
            )
            .0,
        ),
        (
            "an email",
            csr_with(
                &[(rcgen::DnType::CommonName, "device-42")],
                vec![rcgen::SanType::Rfc822Name(
                    "ceo@corp.test".try_into().unwrap(),
                )],
            )
            .0,
        ),
        (
            "another IP",
            csr_with(
                &[(rcgen::DnType::CommonName, "device-42")],
                vec![rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap())],
            )
            .0,
        ),
    ];
    for (what, csr) in &attacks {
        let r = enroll(&s, &t, csr).await;
        assert_eq!(
            err(&r),
            (422, "not_authorized".into()),
            "{what}: {}",
            r.json()
        );
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("the token"),
            "{what}: {}",
            r.json()
        );
    }
    // Not a CSR, a CSR whose signature does not verify, a weak key: 422, token kept.
    let (good, _) = cn_csr("device-42");
    let tampered = {
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
            .unwrap();
        let mut bytes = der.as_ref().to_vec();
        let n = bytes.len();
        bytes[n - 5] ^= 0x01;
        use base64::Engine as _;
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        )
    };
    let weak = tokio::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "/dev/null",
            "-subj",
            "/CN=device-42",
        ])
        .output()
        .await
        .unwrap();
    let weak = String::from_utf8(weak.stdout).unwrap();
    assert!(weak.contains("CERTIFICATE REQUEST"), "openssl made no CSR");
    for (what, csr) in [
        ("garbage", "not a csr".to_string()),
        ("tampered", tampered),
        ("rsa1024", weak),
    ] {
        let r = enroll(&s, &t, &csr).await;
        assert_eq!(err(&r), (422, "bad_csr".into()), "{what}: {}", r.json());
    }

    // A CSR that asks for CA:TRUE and serverAuth with the right names gets the token's
    // identity: a client certificate that is not a CA, with every name of the grant.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "device-42");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    let cert = issued(&enroll(&s, &t, &csr).await, &key);
    let (subject, sans, eku, is_ca) = describe(&cert);
    assert_eq!(subject, "CN=device-42");
    assert_eq!(sans, vec!["DNS:device-42.iot.test", "IP:[10, 0, 0, 42]"]);
    assert_eq!(eku, vec!["clientAuth"]);
    assert!(!is_ca);
    // Spent now.
    let (csr, _) = cn_csr("device-42");
    assert_eq!(
        err(&enroll(&s, &t, &csr).await),
        (403, "invalid_token".into())
    );

    // Tokens are listed (never the token itself) and can be withdrawn before use.
    let leaked = token(&s, json!({"name": "leaked"})).await;
    let list = s
        .api
        .ok(Method::GET, "/api/v1/ca/enrollment-tokens", None)
        .await;
    assert!(
        !list.to_string().contains(&leaked),
        "a token is shown again"
    );
    let rows = list.as_array().unwrap();
    let row = rows.iter().find(|r| r["name"] == "leaked").unwrap();
    assert_eq!(row["grant"]["common_name"], "leaked");
    let spent = rows.iter().find(|r| r["name"] == "device-42").unwrap();
    assert!(spent["used_at"].is_string());
    let id = row["id"].as_str().unwrap();
    let (status, _) = s
        .api
        .call(
            Method::DELETE,
            &format!("/api/v1/ca/enrollment-tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(status.as_u16(), 204);
    let (csr, _) = cn_csr("leaked");
    assert_eq!(
        err(&enroll(&s, &leaked, &csr).await),
        (403, "invalid_token".into())
    );
}

use rustls::pki_types::pem::PemObject as _;

#[tokio::test]
async fn spiffe_patterns_admit_one_segment_and_a_token_is_spent_once() {
    let s = setup().await;
    let t = token(
        &s,
        json!({"name": "web", "spiffe_id": "spiffe://corp.test/ns/web/*", "lifetime": "1h"}),
    )
    .await;
    for (what, sans) in [
        ("none", vec![]),
        ("other namespace", vec![uri("spiffe://corp.test/ns/db/x")]),
        ("two segments", vec![uri("spiffe://corp.test/ns/web/a/b")]),
        ("dot-dot", vec![uri("spiffe://corp.test/ns/web/..")]),
        (
            "two IDs",
            vec![
                uri("spiffe://corp.test/ns/web/a"),
                uri("spiffe://corp.test/ns/web/b"),
            ],
        ),
    ] {
        let (csr, _) = csr_with(&[(rcgen::DnType::CommonName, "web")], sans);
        let r = enroll(&s, &t, &csr).await;
        assert_eq!(
            err(&r),
            (422, "not_authorized".into()),
            "{what}: {}",
            r.json()
        );
    }
    // Two enrollments racing with one token: exactly one certificate.
    let (csr, key) = csr_with(&[], vec![uri("spiffe://corp.test/ns/web/api")]);
    let (a, b) = tokio::join!(enroll(&s, &t, &csr), enroll(&s, &t, &csr));
    let ok: Vec<&Resp> = [&a, &b].into_iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 1, "{} / {}", a.json(), b.json());
    let cert = issued(ok[0], &key);
    let (subject, sans, eku, _) = describe(&cert);
    assert_eq!(subject, "CN=web");
    assert_eq!(sans, vec!["URI:spiffe://corp.test/ns/web/api"]);
    assert_eq!(eku, vec!["clientAuth", "serverAuth"]);

    // Admin input is checked when the token is made.
    for (body, field) in [
        (
            json!({"name": "x", "spiffe_id": "spiffe://corp.test/ns/*/web"}),
            "spiffe_id",
        ),
        (json!({"name": "x", "dns_names": ["bad name"]}), "dns_names"),
        (json!({"name": "x", "dns_names": ["*"]}), "dns_names"),
        (json!({"name": "x", "dns_names": ["*.com"]}), "dns_names"),
        (
            json!({"name": "x", "ip_addresses": ["10.0.0.300"]}),
            "ip_addresses",
        ),
        (json!({"name": "x", "lifetime": "100000000d"}), "lifetime"),
        (
            json!({"name": "x", "expires_in": "99999999999999999999d"}),
            "expires_in",
        ),
        (json!({"name": "x", "expires_in": "91d"}), "expires_in"),
        (json!({"name": "x", "profile": "spiffe"}), "spiffe_id"),
    ] {
        let (status, v) = s
            .api
            .post("/api/v1/ca/enrollment-tokens", body.clone())
            .await;
        assert_eq!(status.as_u16(), 422, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
}

#[tokio::test]
async fn renewal_keeps_the_certificate_as_it_is_once_in_its_window() {
    let s = setup().await;
    // A client certificate with a SPIFFE ID and an IP SAN: renewal used to make it
    // clientAuth + serverAuth and drop the IP.
    let t = token(
        &s,
        json!({"name": "sensor", "spiffe_id": "spiffe://corp.test/sensor/7", "ip_addresses": ["192.0.2.7"], "profile": "client", "lifetime": "4s"}),
    )
    .await;
    let (csr, key) = cn_csr("sensor");
    let first = issued(&enroll(&s, &t, &csr).await, &key);
    let before = describe(&first);
    assert_eq!(before.2, vec!["clientAuth"]);

    // Too early: the window opens after half of the lifetime.
    let (new_csr, new_key) = cn_csr("someone-else");
    let me = s.h.client().cert(&first);
    let r = post(
        &s,
        &me,
        "/.well-known/ca/renew",
        json!({"csr_pem": new_csr}),
    )
    .await;
    assert_eq!(err(&r), (403, "too_early".into()), "{}", r.json());
    assert!(r.headers.contains_key("retry-after"));

    until_renewable(&first).await;
    // A burst from the same certificate: one renewal, the others 409.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s_addr, spec, body) = (
            s.gw.tls_addr(),
            me.clone(),
            json!({"csr_pem": new_csr}).to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(s_addr, "api.test", &spec).await.unwrap();
            let req = http::Request::post("/.well-known/ca/renew")
                .header("host", "api.test")
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(body)))
                .unwrap();
            conn.send(req).await.unwrap()
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let ok: Vec<&Resp> = replies.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        ok.len(),
        1,
        "{:?}",
        replies.iter().map(|r| r.json()).collect::<Vec<_>>()
    );
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_eq!(err(r), (409, "already_renewed".into()));
    }
    let renewed = issued(ok[0], &new_key);
    let after = describe(&renewed);
    assert_eq!(after, before, "subject, SANs, EKU and CA flag are kept");
    let (i0, i1) = (
        symbolon::pki::CertInfo::parse(&first.der).unwrap(),
        symbolon::pki::CertInfo::parse(&renewed.der).unwrap(),
    );
    assert_eq!(
        i1.not_after - i1.not_before,
        i0.not_after - i0.not_before,
        "same lifetime"
    );
    // The renewal names its predecessor.
    let list = s.api.ok(Method::GET, "/api/v1/ca/issued", None).await;
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["fingerprint"] == renewed.fingerprint())
        .unwrap()
        .clone();
    assert_eq!(
        row["predecessor"].as_str().unwrap(),
        symbolon::revocation::normalize_serial(&i0.serial_hex)
    );
    // The new certificate is not renewable yet, and the old one, once expired, never.
    let r = post(
        &s,
        &s.h.client().cert(&renewed),
        "/.well-known/ca/renew",
        json!({"csr_pem": new_csr}),
    )
    .await;
    assert_eq!(err(&r), (403, "too_early".into()));
    let wait = i0.not_after - symbolon::pki::unix_now() + 1;
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
    let r = post(
        &s,
        &me,
        "/.well-known/ca/renew",
        json!({"csr_pem": new_csr}),
    )
    .await;
    assert_eq!(
        err(&r),
        (403, "certificate_not_current".into()),
        "{}",
        r.json()
    );
}

#[tokio::test]
async fn renewal_refuses_a_look_alike_ca_and_revoked_ancestors() {
    let s = setup().await;
    // A second `ca init`: same names, other keys. Its certificate is presented in optional
    // mode (the handshake proves the key), and the CA refuses it by signature.
    symbolon::ca::init(&s.h.path("ca2"), "p256", b"other", None).unwrap();
    let other = symbolon::ca::Ca::load(&s.h.path("ca2"), b"other").unwrap();
    let (foreign, fkey) = other
        .issue(&symbolon::ca::Template::common_name(
            "sensor",
            Default::default(),
            symbolon::ca::Profile::Client,
            Some(time::Duration::seconds(2)),
        ))
        .unwrap();
    let foreign = leaf(&foreign.chain_pem, &fkey);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (csr, _) = cn_csr("sensor");
    let r = post(
        &s,
        &s.h.client().cert(&foreign),
        "/.well-known/ca/renew",
        json!({"csr_pem": csr}),
    )
    .await;
    assert_eq!(err(&r), (403, "not_ours".into()), "{}", r.json());

    // A → B (renewal); revoking A revokes B, which can neither connect nor renew.
    let t = token(&s, json!({"name": "cam", "lifetime": "4s"})).await;
    let (csr, key) = cn_csr("cam");
    let a = issued(&enroll(&s, &t, &csr).await, &key);
    until_renewable(&a).await;
    let (csr_b, key_b) = cn_csr("cam");
    let b = issued(
        &post(
            &s,
            &s.h.client().cert(&a),
            "/.well-known/ca/renew",
            json!({"csr_pem": csr_b}),
        )
        .await,
        &key_b,
    );
    let (status, v) = s
        .api
        .post(
            "/api/v1/revocations",
            json!({"certificate_pem": a.cert_pem, "reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{v}");
    let revoked = s.api.ok(Method::GET, "/api/v1/revocations", None).await;
    assert!(
        revoked.to_string().contains(&b.fingerprint()),
        "B is revoked with A: {revoked}"
    );
    let r = get(s.gw.tls_addr(), "api.test", &s.h.client().cert(&b), "/")
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("revoked"), "{}", r.body);
    until_renewable(&b).await;
    let r = post(
        &s,
        &s.h.client().cert(&b),
        "/.well-known/ca/renew",
        json!({"csr_pem": csr_b}),
    )
    .await;
    assert_eq!(err(&r), (403, "certificate_revoked".into()), "{}", r.json());
}

#[tokio::test]
async fn every_issuance_is_audited_with_who_and_what() {
    let s = setup_with("crl_url = \"http://ca.test/crl.der\"").await;
    // API sign.
    let (csr, _) = csr_with(
        &[(rcgen::DnType::CommonName, "api-signed")],
        vec![dns("api-signed.test")],
    );
    let v = s
        .api
        .ok(
            Method::POST,
            "/api/v1/ca/sign",
            Some(json!({"csr_pem": csr, "lifetime": "4s"})),
        )
        .await;
    let signed = leaf(
        v["certificate_pem"].as_str().unwrap(),
        &rcgen::KeyPair::generate().unwrap(),
    );
    // The CRL Distribution Point is in what the CA issues.
    let (_, c) = X509Certificate::from_der(&signed.der).unwrap();
    let dp = c
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == "2.5.29.31")
        .expect("a CRL Distribution Points extension");
    assert!(String::from_utf8_lossy(dp.value).contains("http://ca.test/crl.der"));
    // Enrollment and renewal.
    let t = token(&s, json!({"name": "dev-audit", "lifetime": "4s"})).await;
    let (csr, key) = cn_csr("dev-audit");
    let e = issued(&enroll(&s, &t, &csr).await, &key);
    until_renewable(&e).await;
    let (csr2, key2) = cn_csr("dev-audit");
    issued(
        &post(
            &s,
            &s.h.client().cert(&e),
            "/.well-known/ca/renew",
            json!({"csr_pem": csr2}),
        )
        .await,
        &key2,
    );
    // The CLI, on the gateway's data dir.
    let (csr, _) = cn_csr("cli-signed");
    s.h.write("cli.csr", &csr);
    for args in [
        vec!["ca", "sign", "cli.csr"],
        vec!["ca", "issue", "--name", "cli-issued", "--out-dir", "."],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_symbolon"))
            .args(["--data-dir", "."])
            .args(&args)
            .args(["--ca-dir", "ca", "--passphrase-file", "ca-pass"])
            .current_dir(s.h.dir.path())
            .env("USER", "alice")
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let audit = s.api.ok(Method::GET, "/api/v1/audit?limit=100", None).await;
    let rows = audit.as_array().unwrap();
    let find = |action: &str| {
        rows.iter()
            .find(|r| r["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {audit}"))
            .clone()
    };
    let sign = find("ca.sign");
    assert!(sign["actor"].as_str().unwrap().starts_with("cert:"));
    let detail: Value = serde_json::from_str(sign["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["subject"], "CN=api-signed");
    assert_eq!(detail["sans"], "DNS:api-signed.test");
    assert_eq!(detail["profile"], "client");
    assert_eq!(detail["lifetime_secs"], 4);
    assert!(detail["serial"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(find("ca.enroll")["actor"], "enroll:dev-audit");
    let renew = find("ca.renew");
    assert_eq!(renew["actor"], format!("cert:{}", e.fingerprint()));
    assert!(renew["detail"].as_str().unwrap().contains("predecessor"));
    assert_eq!(find("ca.cli-sign")["actor"], "cli:alice");
    assert_eq!(find("ca.cli-issue")["target"], "CN=cli-issued");
}

pub async fn challenge(api: &Api) -> String {
    let (status, v) = api.post("/api/v1/self-service/challenge", json!({})).await;
    assert_eq!(status.as_u16(), 201, "{v}");
    v["challenge"].as_str().unwrap().to_string()
}

/// A self-service binding of `cert_pem` to `name`, the challenge (asked by `asker`) signed by
/// `signer_key`.
async fn bind(me: &Api, asker: &Api, name: &str, cert_pem: &str, signer_key: &str) -> (u16, Value) {
    let c = challenge(asker).await;
    let (status, v) = me
        .post(
            "/api/v1/self-service/identities",
            json!({"name": name, "certificate_pem": cert_pem, "policy": "partners", "challenge": c, "signature": sign_with(signer_key, c.as_bytes())}),
        )
        .await;
    (status.as_u16(), v)
}

#[tokio::test]
async fn self_service_binds_only_a_certificate_whose_key_signed_the_challenge() {
    let h = Harness::new();
    let ca = TestCa::root("Partner CA");
    h.write("clients.pem", &ca.pem());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"partner-onboarding");
    let body = format!(
        "{}[[admin.tokens]]\nname = \"onboarding\"\nsha256 = \"{}\"\nscope = \"self-service\"\nmax_identities = 2\n\n{}{}",
        h.admin_section(),
        symbolon::pki::hex(digest.as_ref()),
        h.domain("api.test", Some("clients.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let admin = Api {
        client: h.admin_client(&gw, None),
    };
    let me = Api {
        client: h.admin_client(&gw, Some("partner-onboarding")),
    };
    admin
        .ok(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "partners", "self_service": true})),
        )
        .await;
    let victim = ca.leaf(LeafSpec::client("victim"));
    let mine = ca.leaf(LeafSpec::client("mine"));
    // The squatter has the victim's public certificate only: no signature, a signature by
    // another key, a challenge given to someone else, a reused challenge.
    let c = challenge(&me).await;
    let attempts = vec![
        json!({"name": "squat", "certificate_pem": victim.cert_pem, "policy": "partners"}),
        json!({"name": "squat", "certificate_pem": victim.cert_pem, "policy": "partners", "challenge": c, "signature": sign_with(&mine.key_pem, c.as_bytes())}),
        json!({"name": "squat", "certificate_pem": victim.cert_pem, "policy": "partners", "challenge": c, "signature": sign_with(&victim.key_pem, c.as_bytes())}),
    ];
    for (i, body) in attempts.into_iter().enumerate() {
        let (status, v) = me.post("/api/v1/self-service/identities", body).await;
        assert_eq!(
            (status.as_u16(), code(&v)),
            (403, "proof_of_possession"),
            "attempt {i}: {v}"
        );
    }
    let (status, v) = bind(&me, &admin, "squat", &victim.cert_pem, &victim.key_pem).await;
    assert_eq!((status, code(&v)), (403, "proof_of_possession"), "{v}");

    // The holder binds it, signing with openssl as the docs say.
    h.write("mine.key", &mine.key_pem);
    let c = challenge(&me).await;
    let out = tokio::process::Command::new("sh")
        .args([
            "-c",
            &format!("printf %s '{c}' | openssl dgst -sha256 -sign mine.key | base64 -w0"),
        ])
        .current_dir(h.dir.path())
        .output()
        .await
        .unwrap();
    let sig = String::from_utf8(out.stdout).unwrap();
    let v = me
        .ok(
            Method::POST,
            "/api/v1/self-service/identities",
            Some(json!({"name": "mine", "certificate_pem": mine.cert_pem, "policy": "partners", "challenge": c, "signature": sig})),
        )
        .await;
    assert_eq!(v["identity"]["policy"], "partners");
    // Its names live in the token's namespace: it cannot take, or probe for, other names;
    // an unknown policy and one not open to it look the same.
    assert_eq!(v["identity"]["name"], "mine@onboarding");
    admin
        .ok(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "vip"})),
        )
        .await;
    let probe = ca.leaf(LeafSpec::client("probe"));
    for policy in ["vip", "no-such-policy"] {
        let c = challenge(&me).await;
        let (status, v) = me
            .post(
                "/api/v1/self-service/identities",
                json!({"name": "x", "certificate_pem": probe.cert_pem, "policy": policy, "challenge": c, "signature": sign_with(&probe.key_pem, c.as_bytes())}),
            )
            .await;
        assert_eq!(
            (status.as_u16(), code(&v)),
            (403, "not_self_service"),
            "{policy}: {v}"
        );
    }

    // The admin binds the victim; a self-service 409 does not say to which identity.
    admin
        .ok(
            Method::POST,
            "/api/v1/identities",
            Some(json!({"name": "victim-corp", "certificate_pem": victim.cert_pem})),
        )
        .await;
    let (status, v) = bind(&me, &me, "again", &victim.cert_pem, &victim.key_pem).await;
    assert_eq!((status, code(&v)), (409, "certificate_in_use"), "{v}");
    assert!(!v.to_string().contains("victim-corp"), "{v}");

    // The token's limit: 2 identities.
    let second = ca.leaf(LeafSpec::client("second"));
    let third = ca.leaf(LeafSpec::client("third"));
    for (l, name, want) in [(&second, "second", 201), (&third, "third", 403)] {
        let (status, v) = bind(&me, &me, name, &l.cert_pem, &l.key_pem).await;
        assert_eq!(status, want, "{name}: {v}");
        if want == 403 {
            assert_eq!(code(&v), "identity_limit");
        }
    }
}

#[tokio::test]
async fn private_keys_in_the_store_are_sealed_with_the_store_passphrase() {
    let h = Harness::new();
    let base = h.admin_section();
    // Written in the clear first (no passphrase), then sealed when one is configured.
    let gw = h.start(&base).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    let early = h.server_ca.leaf(LeafSpec::server("early.test"));
    api.ok(
        Method::POST,
        "/api/v1/domains",
        Some(json!({"hostname": "early.test", "cert_pem": early.chain_pem, "key_pem": early.key_pem, "mtls": "off"})),
    )
    .await;
    gw.shutdown().await;

    h.write("store-pass", "store passphrase\n");
    let sealed_cfg = format!("store_passphrase_file = \"store-pass\"\n{base}");
    let gw = h.start(&sealed_cfg).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    let later = h.server_ca.leaf(LeafSpec::server("later.test"));
    api.ok(
        Method::POST,
        "/api/v1/domains",
        Some(json!({"hostname": "later.test", "cert_pem": later.chain_pem, "key_pem": later.key_pem, "mtls": "off"})),
    )
    .await;
    let cred = TestCa::root("Upstream CA").leaf(LeafSpec::client("to-origin"));
    api.ok(
        Method::POST,
        "/api/v1/credentials",
        Some(json!({"name": "origin", "cert_pem": cred.chain_pem, "key_pem": cred.key_pem})),
    )
    .await;
    // Both domains serve with their (sealed) keys.
    for host in ["early.test", "later.test"] {
        Conn::open(gw.tls_addr(), host, &h.client())
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    // On disk every key is sealed; nothing in the file is a plain PEM key.
    let raw = std::fs::read(h.path("symbolon.db")).unwrap();
    let wal = std::fs::read(h.path("symbolon.db-wal")).unwrap_or_default();
    for bytes in [&raw, &wal] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("BEGIN PRIVATE KEY"), "a key in the clear");
    }
    let store = symbolon::store::Store::open(&h.path("symbolon.db"))
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    let st = symbolon::store::load_all(&mut tx).await.unwrap();
    drop(tx);
    assert_eq!(st.domains.len(), 2);
    for k in st
        .domains
        .iter()
        .map(|d| &d.key_pem)
        .chain(st.credentials.iter().map(|c| &c.key_pem))
    {
        assert!(symbolon::ca::is_sealed(k), "{k}");
    }
    // Opening the store without the passphrase says what to do.
    let e = store
        .state()
        .await
        .err()
        .expect("sealed keys need the passphrase");
    assert!(e.to_string().contains("store_passphrase_file"), "{e}");
    drop(store);
    // The API never returns a key.
    let listed = api
        .ok(Method::GET, "/api/v1/credentials", None)
        .await
        .to_string()
        + &api
            .ok(Method::GET, "/api/v1/domains", None)
            .await
            .to_string();
    assert!(!listed.contains("PRIVATE KEY"), "{listed}");
    gw.shutdown().await;

    // A start without the passphrase, or with the wrong one, is refused with the fix.
    let err = h.start_err(&base).await;
    assert!(err.contains("store_passphrase_file"), "{err}");
    h.write("store-pass", "wrong");
    let err = h.start_err(&sealed_cfg).await;
    assert!(err.contains("sealed private key"), "{err}");
}
