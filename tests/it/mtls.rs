//! Client-certificate verification in `require` and `optional` mode, identity headers, SNI → bundle.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;

use crate::support::*;

struct Setup {
    h: Harness,
    gw: symbolon::gateway::Gateway,
    ca: TestCa,
    inter: TestCa,
    _up: Upstream,
}

async fn setup(mode: &str) -> Setup {
    let h = Harness::new();
    let ca = TestCa::root("Client Root CA");
    let inter = ca.intermediate("Client Issuing CA");
    h.write("clients.pem", &ca.pem());
    let up = Upstream::start().await;
    let deep = h
        .domain("deep.test", Some("clients.pem"), mode)
        .replace("mtls =", "max_chain_depth = 1\nmtls =");
    let body = format!(
        "{}{}{}",
        h.domain("api.test", Some("clients.pem"), mode),
        deep,
        route_all(&up.url())
    );
    let gw = h.start(&body).await;
    Setup {
        h,
        gw,
        ca,
        inter,
        _up: up,
    }
}

/// What each bad certificate must produce: the TLS alert in `require`, the verdict in `optional`.
struct Case {
    name: &'static str,
    sni: &'static str,
    alert: &'static str,
    verdict: &'static str,
}

fn bad_cases(s: &Setup) -> Vec<(Case, Option<ClientSpec>)> {
    let other = TestCa::root("Someone Else's CA");
    let c = s.h.client();
    vec![
        (
            Case {
                name: "no certificate",
                sni: "api.test",
                alert: "CertificateRequired",
                verdict: "NONE",
            },
            Some(c.clone()),
        ),
        (
            Case {
                name: "unknown CA",
                sni: "api.test",
                alert: "UnknownCA",
                verdict: "FAILED:unknown_ca",
            },
            Some(c.clone().cert(&other.leaf(LeafSpec::client("stranger")))),
        ),
        (
            Case {
                name: "expired",
                sni: "api.test",
                alert: "CertificateExpired",
                verdict: "FAILED:expired",
            },
            Some(
                c.clone()
                    .cert(&s.ca.leaf(LeafSpec::client("old").expired())),
            ),
        ),
        (
            Case {
                name: "not yet valid",
                sni: "api.test",
                alert: "CertificateExpired",
                verdict: "FAILED:not_yet_valid",
            },
            Some(
                c.clone()
                    .cert(&s.ca.leaf(LeafSpec::client("early").not_yet_valid())),
            ),
        ),
        (
            Case {
                name: "serverAuth-only EKU",
                sni: "api.test",
                alert: "UnsupportedCertificate",
                verdict: "FAILED:wrong_usage",
            },
            Some(
                c.clone()
                    .cert(&s.ca.leaf(LeafSpec::client("srv").eku(Eku::Server))),
            ),
        ),
        (
            Case {
                name: "intermediate not sent",
                sni: "api.test",
                alert: "UnknownCA",
                verdict: "FAILED:unknown_ca",
            },
            Some(
                c.clone()
                    .leaf_only(&s.inter.leaf(LeafSpec::client("lonely"))),
            ),
        ),
        (
            Case {
                name: "chain deeper than max_chain_depth",
                sni: "deep.test",
                alert: "CertificateUnknown",
                verdict: "FAILED:chain_too_deep",
            },
            Some(c.clone().cert(&s.inter.leaf(LeafSpec::client("deep")))),
        ),
    ]
}

#[tokio::test]
async fn valid_certificate_reaches_upstream_with_identity_headers() {
    let s = setup("require").await;
    let leaf =
        s.ca.leaf(LeafSpec::client("svc-a").spiffe("spiffe://example.org/ns/prod/sa/svc-a"));
    for spec in [
        s.h.client().cert(&leaf),
        s.h.client().cert(&leaf).h2(),
        s.h.client().cert(&leaf).tls12(),
    ] {
        let mut conn = Conn::open(s.gw.tls_addr(), "api.test", &spec)
            .await
            .unwrap();
        let r = conn.get("/hello?x=1").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["upstream"], "test");
        assert_eq!(r.json()["query"], "x=1");
        assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS");
        assert_eq!(
            r.seen("x-client-fingerprint-sha256").unwrap(),
            leaf.fingerprint()
        );
        assert_eq!(
            r.seen("x-client-spiffe-id").unwrap(),
            "spiffe://example.org/ns/prod/sa/svc-a"
        );
        assert!(r.seen("x-client-subject").unwrap().contains("CN=svc-a"));
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&leaf.der);
        assert_eq!(r.seen("client-cert").unwrap(), format!(":{b64}:"));
        assert_eq!(r.seen("x-forwarded-proto").unwrap(), "https");
        assert_eq!(r.seen("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(r.seen("host").unwrap(), "api.test");
        let want_alpn: &[u8] = if spec.h2 { b"h2" } else { b"http/1.1" };
        assert_eq!(conn.alpn.as_deref(), Some(want_alpn));
    }
    let metrics = metrics_text(&s.gw).await;
    for line in [
        "symbolon_requests_total{route=\"all\",status=\"200\"}",
        "symbolon_request_duration_seconds_bucket{route=\"all\",le=\"0.005\"}",
        "symbolon_handshakes_total{result=\"accepted\",reason=\"verified\"}",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn chain_through_an_intermediate_is_accepted_and_forwarded() {
    for mode in ["require", "optional"] {
        let s = setup(mode).await;
        let leaf = s.inter.leaf(LeafSpec::client("via-intermediate"));
        let r = get(s.gw.tls_addr(), "api.test", &s.h.client().cert(&leaf), "/")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS", "{mode}");
        use base64::Engine as _;
        let inter_b64 = base64::engine::general_purpose::STANDARD.encode(s.inter.cert.der());
        assert_eq!(
            r.seen("client-cert-chain").unwrap(),
            format!(":{inter_b64}:")
        );
    }
}

#[tokio::test]
async fn require_mode_rejects_in_the_handshake_with_the_right_alert() {
    let s = setup("require").await;
    for (case, spec) in bad_cases(&s) {
        let spec = spec.unwrap();
        for spec in [spec.clone(), spec.tls12()] {
            let err = get(s.gw.tls_addr(), case.sni, &spec, "/")
                .await
                .expect_err(case.name);
            // certificate_required exists only in TLS 1.3; TLS 1.2 says handshake_failure.
            let alert = match case.alert {
                "CertificateRequired" if spec.tls12 => "HandshakeFailure",
                a => a,
            };
            assert!(
                err.contains(alert),
                "{} (tls12={}): {err}",
                case.name,
                spec.tls12
            );
        }
    }
    let metrics = metrics_text(&s.gw).await;
    for reason in [
        "no_certificate",
        "unknown_ca",
        "expired",
        "not_yet_valid",
        "wrong_usage",
        "chain_too_deep",
    ] {
        let line = format!("symbolon_handshakes_total{{result=\"rejected\",reason=\"{reason}\"}}");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test]
async fn optional_mode_proceeds_and_records_why() {
    let s = setup("optional").await;
    for (case, spec) in bad_cases(&s) {
        let spec = spec.unwrap();
        for spec in [spec.clone(), spec.clone().h2(), spec.tls12()] {
            let r = get(s.gw.tls_addr(), case.sni, &spec, "/")
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(r.status, 200, "{}", case.name);
            assert_eq!(
                r.seen("x-client-verify").unwrap(),
                case.verdict,
                "{}",
                case.name
            );
        }
    }
    let good = s.ca.leaf(LeafSpec::client("good"));
    let r = get(s.gw.tls_addr(), "api.test", &s.h.client().cert(&good), "/")
        .await
        .unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS");
}

/// Presents a valid certificate but signs the handshake with another key.
#[derive(Debug)]
struct WrongKey(Arc<CertifiedKey>);

impl ResolvesClientCert for WrongKey {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn optional_mode_still_checks_proof_of_key_possession() {
    let s = setup("optional").await;
    let stolen = s.ca.leaf(LeafSpec::client("victim"));
    let attacker = s.ca.leaf(LeafSpec::client("attacker"));
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = provider
        .key_provider
        .load_private_key(attacker.key())
        .unwrap();
    let ck = Arc::new(CertifiedKey::new(stolen.chain(), key));
    let mut config = (*s.h.client().config()).clone();
    config.client_auth_cert_resolver = Arc::new(WrongKey(ck));
    let tcp = tokio::net::TcpStream::connect(s.gw.tls_addr())
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
    let result = async {
        let tls = connector.connect(name, tcp).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Full<bytes::Bytes>,
        >(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let req = http::Request::get("/")
            .header("host", "api.test")
            .body(Default::default())
            .unwrap();
        sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)
    }
    .await;
    let err = crate::support::client::chain(
        &result.expect_err("a forged CertificateVerify was accepted"),
    );
    assert!(
        err.contains("DecryptError") || err.contains("BadSignature"),
        "{err}"
    );
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped() {
    let s = setup("optional").await;
    let mut conn = Conn::open(s.gw.tls_addr(), "api.test", &s.h.client())
        .await
        .unwrap();
    let req = http::Request::get("/")
        .header("host", "api.test")
        .header("x-client-verify", "SUCCESS")
        .header("x-client-subject", "CN=admin")
        .header("x-client-spiffe-id", "spiffe://example.org/admin")
        .header("x-client-fingerprint-sha256", "00")
        .header("client-cert", ":AAAA:")
        .header("client-cert-chain", ":AAAA:")
        .header("x-forwarded-client-cert", "Hash=00")
        .body(http_body_util::Full::default())
        .unwrap();
    let r = conn.send(req).await.unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "NONE");
    for h in [
        "x-client-subject",
        "x-client-spiffe-id",
        "x-client-fingerprint-sha256",
        "client-cert",
        "client-cert-chain",
        "x-forwarded-client-cert",
    ] {
        assert_eq!(r.seen(h), None, "{h} reached the upstream");
    }
}

#[tokio::test]
async fn sni_picks_the_domain_bundle() {
    let h = Harness::new();
    let ca_a = TestCa::root("Partner A CA");
    let ca_b = TestCa::root("Partner B CA");
    h.write("a.pem", &ca_a.pem());
    h.write("b.pem", &ca_b.pem());
    let body = format!(
        "{}{}{}",
        h.domain("a.test", Some("a.pem"), "require"),
        h.domain("b.test", Some("b.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let client_a = h.client().cert(&ca_a.leaf(LeafSpec::client("a-client")));
    let client_b = h.client().cert(&ca_b.leaf(LeafSpec::client("b-client")));
    assert_eq!(
        get(gw.tls_addr(), "a.test", &client_a, "/")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        get(gw.tls_addr(), "b.test", &client_b, "/")
            .await
            .unwrap()
            .status,
        200
    );
    let err = get(gw.tls_addr(), "b.test", &client_a, "/")
        .await
        .unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");
    let err = get(gw.tls_addr(), "a.test", &client_b, "/")
        .await
        .unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");
}

#[tokio::test]
async fn host_other_than_sni_gets_421() {
    let h = Harness::new();
    let ca_a = TestCa::root("Partner A CA");
    h.write("a.pem", &ca_a.pem());
    let body = format!(
        "{}{}{}",
        h.domain("a.test", Some("a.pem"), "require"),
        h.domain("b.test", None, "off"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    for spec in [
        h.client().cert(&ca_a.leaf(LeafSpec::client("a"))),
        h.client().cert(&ca_a.leaf(LeafSpec::client("a"))).h2(),
    ] {
        let mut conn = Conn::open(gw.tls_addr(), "b.test", &spec).await.unwrap();
        let req = http::Request::get("/")
            .header("host", "a.test")
            .body(http_body_util::Full::default())
            .unwrap();
        let r = conn.send(req).await.unwrap();
        assert_eq!(r.status, 421, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "misdirected_request");
        let req = http::Request::get("/")
            .header("host", "b.test")
            .body(http_body_util::Full::default())
            .unwrap();
        assert_eq!(conn.send(req).await.unwrap().status, 200);
    }
}

pub async fn metrics_text(gw: &symbolon::gateway::Gateway) -> String {
    let mut s = tokio::net::TcpStream::connect(gw.metrics_addr())
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn resumed_sessions_keep_the_identity_and_tickets_can_be_turned_off() {
    for (tickets, want_resumed) in [(None, true), (Some(0), false)] {
        let h = Harness::new();
        let ca = TestCa::root("Client CA");
        h.write("clients.pem", &ca.pem());
        let setting = tickets
            .map(|t| format!("tls13_session_tickets = {t}\n"))
            .unwrap_or_default();
        let body = format!(
            "{setting}{}{}",
            h.domain("api.test", Some("clients.pem"), "require"),
            route_all("builtin:echo")
        );
        let gw = h.start(&body).await;
        let leaf = ca.leaf(LeafSpec::client("resumer"));
        let config = h.client().cert(&leaf).config();
        let mut first = Conn::open_with(gw.tls_addr(), "api.test", config.clone())
            .await
            .unwrap();
        assert!(!first.resumed);
        // Reading a response makes sure the tickets sent after the handshake were received.
        assert_eq!(first.get("/").await.unwrap().status, 200);
        let mut second = Conn::open_with(gw.tls_addr(), "api.test", config)
            .await
            .unwrap();
        assert_eq!(second.resumed, want_resumed, "tickets = {tickets:?}");
        let r = second.get("/").await.unwrap();
        assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS");
        assert_eq!(
            r.seen("x-client-fingerprint-sha256").unwrap(),
            leaf.fingerprint()
        );
    }
}
