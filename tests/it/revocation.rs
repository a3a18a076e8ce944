//! Revocation applies at once: to new handshakes (alert certificate_revoked), to resumed TLS 1.3
//! sessions, and to requests on connections opened before the revocation.

use http::Method;
use serde_json::json;

use crate::admin::{Api, code};
use crate::support::pki::Leaf;
use crate::support::*;

struct Setup {
    h: Harness,
    gw: symbolon::gateway::Gateway,
    api: Api,
    ca: TestCa,
}

async fn setup() -> Setup {
    let h = Harness::new();
    let ca = TestCa::root("Revocation CA");
    h.write("clients.pem", &ca.pem());
    let body = format!(
        "{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("clients.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    Setup { h, gw, api, ca }
}

#[tokio::test]
async fn revocation_reaches_new_resumed_and_open_connections() {
    let s = setup().await;
    let leaf = s.ca.leaf(LeafSpec::client("soon-revoked"));
    let config = s.h.client().cert(&leaf).config();
    let addr = s.gw.tls_addr();
    // An open keep-alive connection and a session ticket, both from before the revocation.
    let mut open = Conn::open_with(addr, "api.test", config.clone())
        .await
        .unwrap();
    assert_eq!(open.get("/").await.unwrap().status, 200);

    let v = s
        .api
        .ok(
            Method::POST,
            "/api/v1/revocations",
            Some(json!({"certificate_pem": leaf.cert_pem, "reason": "keyCompromise"})),
        )
        .await;
    assert_eq!(v["fingerprint"], leaf.fingerprint());

    // The open connection ends at once.
    assert!(open.get("/").await.is_err(), "the connection stayed open");

    // A client offering its ticket from before the revocation: the ticket belongs to an older
    // revocation epoch, so the server does a full handshake and sends certificate_revoked.
    let resumed = async {
        let mut c = Conn::open_with(addr, "api.test", config.clone()).await?;
        assert!(
            !c.resumed,
            "a session from before the revocation was resumed"
        );
        c.get("/").await
    }
    .await;
    let err = resumed.expect_err("a client offering an old ticket was served");
    assert!(err.contains("CertificateRevoked"), "{err}");

    // A new full handshake: the certificate_revoked alert.
    let fresh = s.h.client().cert(&leaf);
    let err = get(addr, "api.test", &fresh, "/").await.unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");

    // Other clients are not affected.
    let other = s.h.client().cert(&s.ca.leaf(LeafSpec::client("fine")));
    assert_eq!(
        get(addr, "api.test", &other, "/").await.unwrap().status,
        200
    );

    // verify explains it.
    let v = s
        .api
        .ok(
            Method::POST,
            "/api/v1/verify",
            Some(json!({"certificate_pem": leaf.chain_pem, "domain": "api.test"})),
        )
        .await;
    assert_eq!(v["verdict"], "FAILED:revoked");
    assert!(
        v["reason"].as_str().unwrap().starts_with("revoked at 20")
            && v["reason"].as_str().unwrap().ends_with("(keyCompromise)"),
        "{v}"
    );
}

#[tokio::test]
async fn revoke_by_serial_and_bad_requests() {
    let s = setup().await;
    let leaf = s.ca.leaf(LeafSpec::client("by-serial"));
    let serial = symbolon::pki::CertInfo::parse(&leaf.der)
        .unwrap()
        .serial_hex;
    let client = s.h.client().cert(&leaf);
    assert_eq!(
        get(s.gw.tls_addr(), "api.test", &client, "/")
            .await
            .unwrap()
            .status,
        200
    );
    s.api
        .ok(
            Method::POST,
            "/api/v1/revocations",
            Some(
                json!({"serial": serial.to_uppercase(), "issuer_pem": s.ca.pem(), "reason": "superseded"}),
            ),
        )
        .await;
    let err = get(s.gw.tls_addr(), "api.test", &client, "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    let (status, v) = s
        .api
        .post(
            "/api/v1/revocations",
            json!({"serial": serial, "issuer_pem": s.ca.pem()}),
        )
        .await;
    assert_eq!((status.as_u16(), code(&v)), (409, "already_revoked"));
    // Without an issuer (and no built-in CA to default to) a serial names nothing.
    let (status, v) = s
        .api
        .post("/api/v1/revocations", json!({"serial": "0badc0de"}))
        .await;
    assert_eq!((status.as_u16(), code(&v)), (422, "issuer_required"));
    let (status, v) = s
        .api
        .post(
            "/api/v1/revocations",
            json!({"fingerprint": "ab".repeat(32), "reason": "bored"}),
        )
        .await;
    assert_eq!((status.as_u16(), code(&v)), (422, "bad_reason"));
    let (status, v) = s
        .api
        .post(
            "/api/v1/revocations",
            json!({"fingerprint": "ab".repeat(32), "serial": "01"}),
        )
        .await;
    assert_eq!((status.as_u16(), code(&v)), (422, "one_identifier"));
    let (status, v) = s
        .api
        .post(
            "/api/v1/revocations",
            json!({"certificate_pem": format!("{}{}", leaf.cert_pem, leaf.key_pem)}),
        )
        .await;
    assert_eq!(
        (status.as_u16(), code(&v)),
        (422, "private_key_not_allowed")
    );
    let list = s.api.ok(Method::GET, "/api/v1/revocations", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_built_in_ca_publishes_a_signed_crl_of_its_revoked_certificates() {
    let h = Harness::new();
    let pass = b"crl test passphrase";
    symbolon::ca::init(&h.path("ca"), "p256", pass, None).unwrap();
    h.write("ca-pass", "crl test passphrase\n");
    let ca = symbolon::ca::Ca::load(&h.path("ca"), pass).unwrap();
    let (issued, key) = ca
        .issue(&symbolon::ca::Template::common_name(
            "device-7",
            Default::default(),
            symbolon::ca::Profile::Client,
            None,
        ))
        .unwrap();
    std::fs::copy(h.path("ca/root.pem"), h.path("clients.pem")).unwrap();
    let body = format!(
        "[ca]\ndir = \"ca\"\npassphrase_file = \"ca-pass\"\ncrl_validity = \"12h\"\n\n{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("clients.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    let client = h.client().cert(&Leaf {
        der: issued.der.clone(),
        cert_pem: issued.chain_pem.clone(),
        chain_pem: issued.chain_pem.clone(),
        key_pem: key.serialize_pem(),
    });
    assert_eq!(
        get(gw.tls_addr(), "api.test", &client, "/")
            .await
            .unwrap()
            .status,
        200
    );

    // The signed CRL is made once and served from a cache until something changes.
    let first = http_get(gw.metrics_addr(), "/ca/crl.pem").await;
    let again = http_get(gw.metrics_addr(), "/ca/crl.pem").await;
    let body = |r: &str| r[r.find("-----BEGIN").unwrap()..].to_string();
    assert_eq!(body(&first), body(&again), "the CRL was signed again");
    api.ok(
        Method::POST,
        "/api/v1/revocations",
        Some(json!({"certificate_pem": issued.chain_pem, "reason": "keyCompromise"})),
    )
    .await;
    let after = http_get(gw.metrics_addr(), "/ca/crl.pem").await;
    assert_ne!(body(&first), body(&after), "a revocation makes a new CRL");
    let err = get(gw.tls_addr(), "api.test", &client, "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");

    let resp = http_get(gw.metrics_addr(), "/ca/crl.pem").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let pem = &resp[resp.find("-----BEGIN X509 CRL-----").unwrap()..];
    std::fs::write(h.path("crl.pem"), pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "crl",
            "-in",
            "crl.pem",
            "-CAfile",
            "ca/intermediate.pem",
            "-noout",
            "-verify",
            "-text",
        ])
        .current_dir(h.dir.path())
        .output()
        .expect("openssl must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("verify OK"), "{text}");
    let serial = issued.info.serial_hex.replace(':', "").to_uppercase();
    assert!(
        text.contains(&serial),
        "serial {serial} not on the CRL:\n{text}"
    );
    assert!(
        text.contains("Key Compromise") && text.contains("Next Update"),
        "{text}"
    );
    let der = http_get(gw.metrics_addr(), "/ca/crl.der").await;
    assert!(der.contains("application/pkix-crl"), "{der}");

    // The CRL lists only this CA's certificates: a serial revoked for another CA stays off it,
    // and a certificate this CA signed that is revoked by fingerprint goes on it.
    let other = TestCa::root("Some Other CA");
    api.ok(
        Method::POST,
        "/api/v1/revocations",
        Some(json!({"serial": "0badc0ffee", "issuer_pem": other.pem()})),
    )
    .await;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(vec!["fp.test".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let signed = api
        .ok(
            Method::POST,
            "/api/v1/ca/sign",
            Some(json!({"csr_pem": csr})),
        )
        .await;
    let cert_pem = signed["certificate_pem"].as_str().unwrap();
    let first = rustls::pki_types::pem::PemObject::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .unwrap()
        .map(|d: rustls::pki_types::CertificateDer<'static>| d)
        .unwrap();
    let fp = symbolon::pki::fingerprint_sha256(&first);
    let fp_serial = signed["serial"]
        .as_str()
        .unwrap()
        .replace(':', "")
        .to_uppercase();
    api.ok(
        Method::POST,
        "/api/v1/revocations",
        Some(json!({"fingerprint": fp})),
    )
    .await;
    let resp = http_get(gw.metrics_addr(), "/ca/crl.pem").await;
    let pem = &resp[resp.find("-----BEGIN X509 CRL-----").unwrap()..];
    std::fs::write(h.path("crl.pem"), pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["crl", "-in", "crl.pem", "-noout", "-text"])
        .current_dir(h.dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_uppercase();
    assert!(
        !text.contains("0BADC0FFEE"),
        "another CA's serial is on our CRL:\n{text}"
    );
    assert!(
        text.contains(&fp_serial),
        "a certificate revoked by fingerprint is missing:\n{text}"
    );
}

#[tokio::test]
async fn external_crls_on_a_trust_bundle_and_the_expired_crl_policy() {
    let h = Harness::new();
    let ca = TestCa::root("CRL Issuing CA");
    h.write("clients.pem", &ca.pem());
    let revoked = ca.leaf(LeafSpec::client("on-the-crl"));
    let fine = ca.leaf(LeafSpec::client("not-on-the-crl"));
    let now = time::OffsetDateTime::now_utc();
    h.write(
        "ca.crl",
        &ca.crl(
            &[&revoked],
            now - time::Duration::hours(1),
            now + time::Duration::hours(6),
        ),
    );
    let domain = h.domain_with_crls("api.test", "clients.pem", "require", &["ca.crl"], "");
    let gw = h
        .start(&format!("{domain}{}", route_all("builtin:echo")))
        .await;
    let addr = gw.tls_addr();
    let err = get(addr, "api.test", &h.client().cert(&revoked), "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    assert_eq!(
        get(addr, "api.test", &h.client().cert(&fine), "/")
            .await
            .unwrap()
            .status,
        200
    );

    // An expired CRL with the default policy (reject): nobody from that CA gets in.
    let mut reloads = gw.reloads();
    h.write(
        "ca.crl",
        &ca.crl(
            &[&revoked],
            now - time::Duration::days(2),
            now - time::Duration::days(1),
        ),
    );
    tokio::time::timeout(std::time::Duration::from_secs(10), reloads.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(
        get(addr, "api.test", &h.client().cert(&fine), "/")
            .await
            .is_err()
    );
    let metrics = crate::mtls::metrics_text(&gw).await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("symbolon_crl_expired{domain=\"api.test\"") && l.ends_with(" 1")
        ),
        "{metrics}"
    );

    // With crl_expired = "warn" the expired CRL is still used, and nobody else is refused.
    let mut reloads = gw.reloads();
    h.config(&format!(
        "{}{}",
        domain.replace("mtls =", "crl_expired = \"warn\"\nmtls ="),
        route_all("builtin:echo")
    ));
    tokio::time::timeout(std::time::Duration::from_secs(10), reloads.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        get(addr, "api.test", &h.client().cert(&fine), "/")
            .await
            .unwrap()
            .status,
        200
    );
    assert!(
        get(addr, "api.test", &h.client().cert(&revoked), "/")
            .await
            .unwrap_err()
            .contains("CertificateRevoked")
    );

    // A broken CRL is refused like any broken file, and the running configuration stays.
    std::fs::write(
        h.path("ca.crl"),
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let err = gw.reload().await.unwrap_err().to_string();
    assert!(err.contains("ca.crl") && err.contains("CRL"), "{err}");
    assert_eq!(
        get(addr, "api.test", &h.client().cert(&fine), "/")
            .await
            .unwrap()
            .status,
        200
    );
}

/// Serves whatever bytes `body` holds at any path, over plain HTTP.
async fn serve_bytes(body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    addr
}

/// A gateway whose domain api.test (bundle clients.pem, require) fetches its CRL every second
/// from a local server that serves `served`.
async fn start_with_crl_url(
    h: &Harness,
    served: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) -> symbolon::gateway::Gateway {
    let addr = serve_bytes(served).await;
    let url = format!("http://{addr}/ca.crl");
    let domain = h.domain_with_crls(
        "api.test",
        "clients.pem",
        "require",
        &[&url],
        "crl_refresh = \"1s\"\n",
    );
    h.start(&format!("{domain}{}", route_all("builtin:echo")))
        .await
}

#[tokio::test]
async fn crls_by_url_are_fetched_and_refreshed() {
    let h = Harness::new();
    let ca = TestCa::root("URL CRL CA");
    h.write("clients.pem", &ca.pem());
    let revoked = ca.leaf(LeafSpec::client("revoked-by-url"));
    let now = time::OffsetDateTime::now_utc();
    let served = std::sync::Arc::new(std::sync::Mutex::new(
        ca.crl(
            &[&revoked],
            now - time::Duration::hours(1),
            now + time::Duration::hours(6),
        )
        .into_bytes(),
    ));
    let gw = start_with_crl_url(&h, served.clone()).await;
    let err = get(gw.tls_addr(), "api.test", &h.client().cert(&revoked), "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    // The CA publishes a CRL without it: the next refresh applies it.
    let mut reloads = gw.reloads();
    *served.lock().unwrap() = ca
        .crl(
            &[],
            now - time::Duration::minutes(1),
            now + time::Duration::hours(6),
        )
        .into_bytes();
    tokio::time::timeout(std::time::Duration::from_secs(10), reloads.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        get(gw.tls_addr(), "api.test", &h.client().cert(&revoked), "/")
            .await
            .unwrap()
            .status,
        200
    );
    // An open connection, then a newer CRL that revokes its certificate again: the connection
    // ends when the CRL is applied.
    let mut open = Conn::open(gw.tls_addr(), "api.test", &h.client().cert(&revoked).h2())
        .await
        .unwrap();
    assert_eq!(open.get("/").await.unwrap().status, 200);
    let mut reloads = gw.reloads();
    *served.lock().unwrap() = ca
        .crl(&[&revoked], now, now + time::Duration::hours(6))
        .into_bytes();
    tokio::time::timeout(std::time::Duration::from_secs(10), reloads.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(
        open.get("/").await.is_err(),
        "the connection outlived the new CRL"
    );
}

#[tokio::test]
async fn crls_attached_to_an_api_bundle() {
    let s = setup().await;
    let ca = TestCa::root("API Bundle CA");
    let revoked = ca.leaf(LeafSpec::client("api-revoked"));
    let by_url = ca.leaf(LeafSpec::client("url-revoked"));
    let fine = ca.leaf(LeafSpec::client("api-fine"));
    let now = time::OffsetDateTime::now_utc();
    let crl = ca.crl(
        &[&revoked],
        now - time::Duration::hours(1),
        now + time::Duration::hours(6),
    );
    s.api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(
                json!({"name": "partners", "pem": ca.pem(), "require": true, "crls": {"pem": crl}}),
            ),
        )
        .await;
    let leaf = s.h.server_ca.leaf(LeafSpec::server("partners.test"));
    s.api
        .ok(Method::POST, "/api/v1/domains", Some(json!({"hostname": "partners.test", "cert_pem": leaf.chain_pem, "key_pem": leaf.key_pem, "bundle": "partners"})))
        .await;
    let addr = s.gw.tls_addr();
    let err = get(addr, "partners.test", &s.h.client().cert(&revoked), "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    assert_eq!(
        get(addr, "partners.test", &s.h.client().cert(&fine), "/")
            .await
            .unwrap()
            .status,
        200
    );
    // A URL attached through the API is fetched by the change itself.
    let served = std::sync::Arc::new(std::sync::Mutex::new(
        ca.crl(
            &[&by_url],
            now - time::Duration::hours(1),
            now + time::Duration::hours(6),
        )
        .into_bytes(),
    ));
    let http = serve_bytes(served.clone()).await;
    let v = s
        .api
        .ok(
            Method::PATCH,
            "/api/v1/mtls/bundles/partners",
            Some(
                json!({"crls": {"urls": [format!("http://{http}/partners.crl")], "refresh": "1s"}}),
            ),
        )
        .await;
    assert_eq!(v["crls"]["urls"][0], format!("http://{http}/partners.crl"));
    assert!(
        get(addr, "partners.test", &s.h.client().cert(&by_url), "/")
            .await
            .unwrap_err()
            .contains("CertificateRevoked")
    );
    assert_eq!(
        get(addr, "partners.test", &s.h.client().cert(&revoked), "/")
            .await
            .unwrap()
            .status,
        200,
        "the uploaded CRL was replaced"
    );
    // The URL is fetched again every second: a new CRL without the certificate lets it back in.
    let mut reloads = s.gw.reloads();
    *served.lock().unwrap() = ca
        .crl(
            &[],
            now - time::Duration::minutes(1),
            now + time::Duration::hours(6),
        )
        .into_bytes();
    tokio::time::timeout(std::time::Duration::from_secs(10), reloads.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        get(addr, "partners.test", &s.h.client().cert(&by_url), "/")
            .await
            .unwrap()
            .status,
        200
    );
    // A broken CRL or a bad policy is refused.
    let (status, v) = s.api.call(Method::PATCH, "/api/v1/mtls/bundles/partners", Some(json!({"crls": {"pem": "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"}}))).await;
    assert_eq!((status.as_u16(), code(&v)), (422, "bad_crl"), "{v}");
    let (status, v) = s
        .api
        .call(
            Method::PATCH,
            "/api/v1/mtls/bundles/partners",
            Some(json!({"crls": {"pem": crl, "expired": "shrug"}})),
        )
        .await;
    assert_eq!((status.as_u16(), code(&v)), (422, "bad_crl_policy"), "{v}");
}

/// Issue 10, point 7: a fetched CRL is cached only when a CA of its bundle signed it (another
/// CA with the same name does not count), and never when it is older than the one held (a
/// rollback would un-revoke certificates).
#[tokio::test]
async fn fetched_crls_are_verified_and_never_rolled_back() {
    let h = Harness::new();
    let ca = TestCa::root("Rollback CA");
    let impostor = TestCa::root("Rollback CA");
    h.write("clients.pem", &ca.pem());
    let revoked = ca.leaf(LeafSpec::client("stays-revoked"));
    let now = time::OffsetDateTime::now_utc();
    let crl = |ca: &TestCa, list: &[&Leaf], minutes_ago: i64| {
        ca.crl(
            list,
            now - time::Duration::minutes(minutes_ago),
            now + time::Duration::hours(6),
        )
        .into_bytes()
    };
    let served = std::sync::Arc::new(std::sync::Mutex::new(crl(&ca, &[&revoked], 10)));
    let gw = start_with_crl_url(&h, served.clone()).await;
    let still_revoked = || async {
        let err = get(gw.tls_addr(), "api.test", &h.client().cert(&revoked), "/")
            .await
            .unwrap_err();
        assert!(err.contains("CertificateRevoked"), "{err}");
    };
    still_revoked().await;
    let refused = || async {
        let m = http_get(gw.metrics_addr(), "/metrics").await;
        m.lines()
            .find(|l| l.starts_with("symbolon_crl_fetch_refused_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    for (what, bytes) in [
        (
            "a CRL signed by another CA of the same name",
            crl(&impostor, &[], 1),
        ),
        ("an older CRL without the entry", crl(&ca, &[], 60)),
    ] {
        let before = refused().await;
        *served.lock().unwrap() = bytes;
        // Wait (bounded) until the refresh has looked at it and refused it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while refused().await <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: never refused"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        still_revoked().await;
    }
    // A newer CRL from the real CA is taken.
    let mut reloads = gw.reloads();
    *served.lock().unwrap() = crl(&ca, &[], 0);
    tokio::time::timeout(std::time::Duration::from_secs(10), reloads.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        get(gw.tls_addr(), "api.test", &h.client().cert(&revoked), "/")
            .await
            .unwrap()
            .status,
        200
    );
}

/// Review finding: a CRL file that names a bundle CA as its issuer but was signed by another
/// key is refused at start (and so at reload), instead of locking out that CA's clients.
#[tokio::test]
async fn a_forged_crl_file_is_refused() {
    let h = Harness::new();
    let ca = TestCa::root("Forged CRL CA");
    let impostor = TestCa::root("Forged CRL CA");
    h.write("clients.pem", &ca.pem());
    let now = time::OffsetDateTime::now_utc();
    h.write(
        "fake.crl",
        &impostor.crl(
            &[],
            now - time::Duration::hours(1),
            now + time::Duration::hours(6),
        ),
    );
    let domain = h.domain_with_crls("api.test", "clients.pem", "require", &["fake.crl"], "");
    let err = h
        .start_err(&format!("{domain}{}", route_all("builtin:echo")))
        .await;
    assert!(
        err.contains("fake.crl") && err.contains("did not sign it"),
        "{err}"
    );
}

/// A CRL server that sends its headers, then one byte every 200 ms, forever.
async fn serve_trickle() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n")
                    .await;
                while s.write_all(b"0").await.is_ok() {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_slow_crl_server_holds_up_no_admin_write() {
    let h = Harness::new();
    let ca = TestCa::root("Slow CRL CA");
    h.write("clients.pem", &ca.pem());
    let body = format!(
        "[timeouts]\ncrl_fetch = \"2s\"\n\n{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("clients.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let api = std::sync::Arc::new(Api {
        client: h.admin_client(&gw, None),
    });
    let url = format!("http://{}/slow.crl", serve_trickle().await);
    // Attaching a CRL whose server trickles: the download runs outside the change lock.
    let attach = {
        let api = api.clone();
        let pem = ca.pem();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let r = api
                .post(
                    "/api/v1/mtls/bundles",
                    json!({"name": "slow", "pem": pem, "crls": {"urls": [url]}}),
                )
                .await;
            (r, started.elapsed())
        })
    };
    // Meanwhile admin writes, a revocation among them, answer at once.
    let leaf = ca.leaf(LeafSpec::client("to-revoke"));
    for i in 0..5 {
        let started = std::time::Instant::now();
        api.ok(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": format!("p{i}")})),
        )
        .await;
        assert!(
            started.elapsed() < std::time::Duration::from_millis(900),
            "write {i}: {:?}",
            started.elapsed()
        );
    }
    let started = std::time::Instant::now();
    api.ok(
        Method::POST,
        "/api/v1/revocations",
        Some(json!({"certificate_pem": leaf.cert_pem})),
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_millis(900));
    // The slow download is cut at timeouts.crl_fetch; nothing was changed.
    let ((status, v), took) = attach.await.unwrap();
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str().unwrap()),
        (422, "crl_unavailable"),
        "{v}"
    );
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    let bundles = api.ok(Method::GET, "/api/v1/mtls/bundles", None).await;
    assert!(!bundles.to_string().contains("\"slow\""), "{bundles}");
}

#[tokio::test]
async fn a_fetched_crl_of_another_issuer_never_replaces_the_real_one() {
    let h = Harness::new();
    let ca = TestCa::root("Real CRL CA");
    h.write("clients.pem", &ca.pem());
    let revoked = ca.leaf(LeafSpec::client("stays-revoked"));
    let now = time::OffsetDateTime::now_utc();
    let served = std::sync::Arc::new(std::sync::Mutex::new(
        ca.crl(
            &[&revoked],
            now - time::Duration::hours(1),
            now + time::Duration::hours(6),
        )
        .into_bytes(),
    ));
    let gw = start_with_crl_url(&h, served.clone()).await;
    let refused = || async {
        crate::mtls::metrics_text(&gw)
            .await
            .lines()
            .find(|l| l.starts_with("symbolon_crl_fetch_refused_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Whoever answers the URL serves an empty CRL of another CA (any name, any key), then one
    // that uses the real CA's name without its key.
    let evil = TestCa::root("Evil CA");
    let forged = TestCa::root("Real CRL CA");
    for other in [&evil, &forged] {
        let before = refused().await;
        *served.lock().unwrap() = other
            .crl(&[], now, now + time::Duration::hours(6))
            .into_bytes();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while refused().await <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the CRL was not refused"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let err = get(gw.tls_addr(), "api.test", &h.client().cert(&revoked), "/")
            .await
            .unwrap_err();
        assert!(err.contains("CertificateRevoked"), "{err}");
    }
}

#[tokio::test]
async fn frequent_admin_writes_do_not_hold_back_the_crl_refresh() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::new();
    let ca = TestCa::root("Refresh CA");
    h.write("clients.pem", &ca.pem());
    let now = time::OffsetDateTime::now_utc();
    let crl = ca
        .crl(
            &[],
            now - time::Duration::hours(1),
            now + time::Duration::hours(6),
        )
        .into_bytes();
    // A CRL server that counts its fetches.
    let fetches = std::sync::Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    {
        let fetches = fetches.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                fetches.fetch_add(1, Ordering::Relaxed);
                let crl = crl.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        crl.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&crl).await;
                });
            }
        });
    }
    let url = format!("http://{addr}/ca.crl");
    let body = format!(
        "{}{}{}",
        h.admin_section(),
        h.domain_with_crls(
            "api.test",
            "clients.pem",
            "require",
            &[&url],
            "crl_refresh = \"1s\"\n"
        ),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    // An admin write every 200 ms for 4 s: the 1 s refresh still runs.
    let before = fetches.load(Ordering::Relaxed);
    for i in 0..20 {
        api.ok(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": format!("busy{i}")})),
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let during = fetches.load(Ordering::Relaxed) - before;
    assert!(during >= 2, "{during} CRL fetches in 4 s of admin writes");
}
