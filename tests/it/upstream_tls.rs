//! The gateway as a TLS client: https:// upstreams verified against a bundle, a server-name
//! override, client credentials (right one accepted, wrong one refused with a 502 that says
//! why), require_mtls, separate pools per credential, and the same against `openssl s_server`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use http::Method;
use serde_json::json;

use crate::admin::{Api, code};
use crate::support::pki::Leaf;
use crate::support::*;

/// The upstream's PKI: a CA for its server certificate, a CA for the clients it accepts, two
/// credentials from that CA and one from a CA it does not trust.
pub struct Pki {
    pub origin_ca: TestCa,
    pub origin: Leaf,
    pub client_ca: TestCa,
    pub good: Leaf,
    pub good2: Leaf,
    pub wrong: Leaf,
}

impl Pki {
    pub fn new() -> Self {
        let origin_ca = TestCa::root("Origin CA");
        let origin = origin_ca.leaf(LeafSpec::server("origin.test"));
        let client_ca = TestCa::root("Origin Client CA");
        let good = client_ca.leaf(LeafSpec::client("gateway-a"));
        let good2 = client_ca.leaf(LeafSpec::client("gateway-b"));
        let wrong = TestCa::root("Stranger CA").leaf(LeafSpec::client("gateway-a"));
        Self {
            origin_ca,
            origin,
            client_ca,
            good,
            good2,
            wrong,
        }
    }

    /// Writes the PEM files a config file names.
    pub fn write(&self, h: &Harness) {
        h.write("origin-ca.pem", &self.origin_ca.pem());
        h.write("stranger-ca.pem", &TestCa::root("Other Origin CA").pem());
        for (name, leaf) in [
            ("good", &self.good),
            ("good2", &self.good2),
            ("wrong", &self.wrong),
        ] {
            h.write(&format!("{name}.crt"), &leaf.chain_pem);
            h.write(&format!("{name}.key"), &leaf.key_pem);
        }
    }
}

fn tls_route(name: &str, upstream: &str, tls: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\npath_prefix = \"/{name}\"\nstrip_prefix = true\nupstream = \"{upstream}\"\nupstream_tls = {{ {tls} }}\n\n"
    )
}

async fn fetch(
    gw: &symbolon::gateway::Gateway,
    h: &Harness,
    path: &str,
) -> (u16, serde_json::Value) {
    let r = get(gw.tls_addr(), "api.test", &h.client(), path)
        .await
        .unwrap();
    (r.status.as_u16(), r.json())
}

#[tokio::test]
async fn right_credential_accepted_wrong_refused_wrong_ca_502() {
    let h = Harness::new();
    let pki = Pki::new();
    pki.write(&h);
    let origin = TlsUpstream::start(&pki.origin, Some(pki.client_ca.cert.der().clone())).await;
    let url = origin.url();
    let trust = "trust_bundle_file = \"origin-ca.pem\", server_name = \"origin.test\"";
    let mut body = h.domain("api.test", None, "off");
    body += &tls_route(
        "good",
        &url,
        &format!("{trust}, cert_file = \"good.crt\", key_file = \"good.key\""),
    );
    body += &tls_route(
        "good2",
        &url,
        &format!("{trust}, cert_file = \"good2.crt\", key_file = \"good2.key\""),
    );
    body += &tls_route(
        "wrong",
        &url,
        &format!("{trust}, cert_file = \"wrong.crt\", key_file = \"wrong.key\""),
    );
    body += &tls_route("nocert", &url, trust);
    body += &tls_route(
        "wrongca",
        &url,
        "trust_bundle_file = \"stranger-ca.pem\", server_name = \"origin.test\", cert_file = \"good.crt\", key_file = \"good.key\"",
    );
    body += &tls_route(
        "system",
        &url,
        "server_name = \"origin.test\", cert_file = \"good.crt\", key_file = \"good.key\"",
    );
    body += &tls_route(
        "noname",
        &url,
        "trust_bundle_file = \"origin-ca.pem\", cert_file = \"good.crt\", key_file = \"good.key\"",
    );
    let gw = h.start(&body).await;

    let (status, v) = fetch(&gw, &h, "/good/x").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["client_fingerprint"], pki.good.fingerprint());
    assert_eq!(v["path"], "/x");

    // Two credentials to the same upstream never share a connection: each answer names the
    // credential of its own route, however the requests interleave on one client connection.
    let mut conn = Conn::open(gw.tls_addr(), "api.test", &h.client())
        .await
        .unwrap();
    for round in 0..3 {
        for (path, leaf) in [("/good/a", &pki.good), ("/good2/b", &pki.good2)] {
            let r = conn.get(path).await.unwrap();
            assert_eq!(r.status, 200, "round {round}");
            assert_eq!(
                r.json()["client_fingerprint"],
                leaf.fingerprint(),
                "round {round} {path}"
            );
        }
    }
    // …and each pool keeps its connections alive (7 requests did not take 7 handshakes).
    assert!(
        origin.connections() < 7,
        "{} connections",
        origin.connections()
    );
    // Pools outlive snapshots: after a reload that changes nothing, the warm connection is reused.
    let before = origin.connections();
    gw.reload().await.unwrap();
    let r = conn.get("/good/a").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(origin.connections(), before, "the reload dropped the pool");

    let (status, v) = fetch(&gw, &h, "/wrong/x").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (502, Some("upstream_tls")),
        "{v}"
    );
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("refused the gateway's client certificate"),
        "{v}"
    );

    let (status, v) = fetch(&gw, &h, "/nocert/x").await;
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("alert"),
        "{v}"
    );

    let (status, v) = fetch(&gw, &h, "/wrongca/x").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (502, Some("upstream_tls")),
        "{v}"
    );
    let hint = v["error"]["hint"].as_str().unwrap();
    assert!(
        hint.contains("does not chain to") && hint.contains("stranger-ca.pem"),
        "{v}"
    );

    let (status, v) = fetch(&gw, &h, "/noname/x").await;
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["hint"].as_str().unwrap().contains("server_name"),
        "{v}"
    );

    // Without a trust bundle the system CAs decide, and they do not know the test CA.
    let (status, v) = fetch(&gw, &h, "/system/x").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (502, Some("upstream_tls")),
        "{v}"
    );
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("the system CA certificates"),
        "{v}"
    );

    // Credentials and upstream CAs given as files are watched for expiry too.
    let metrics = crate::mtls::metrics_text(&gw).await;
    for (kind, fp) in [
        ("credential", pki.good.fingerprint()),
        (
            "bundle",
            symbolon::pki::fingerprint_sha256(pki.origin_ca.cert.der()),
        ),
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("symbolon_certificate_expiry_seconds")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains(&fp)),
            "no expiry gauge for the {kind} {fp}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn require_mtls_refuses_an_upstream_that_asks_for_no_certificate() {
    let h = Harness::new();
    let pki = Pki::new();
    pki.write(&h);
    let lax = TlsUpstream::start(&pki.origin, None).await;
    let url = lax.url();
    let tls = "trust_bundle_file = \"origin-ca.pem\", server_name = \"origin.test\", cert_file = \"good.crt\", key_file = \"good.key\"";
    let mut body = h.domain("api.test", None, "off");
    body += &tls_route("strict", &url, &format!("{tls}, require_mtls = true"));
    body += &tls_route("lenient", &url, tls);
    let gw = h.start(&body).await;

    let (status, v) = fetch(&gw, &h, "/strict/x").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (502, Some("upstream_tls")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not ask for a client certificate"),
        "{v}"
    );
    // The request was never sent: the connection was dropped right after the handshake.
    let (status, v) = fetch(&gw, &h, "/lenient/x").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["client_fingerprint"], serde_json::Value::Null);
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_upstream_tls_settings_are_refused_at_start() {
    let h = Harness::new();
    let pki = Pki::new();
    pki.write(&h);
    let domain = h.domain("api.test", None, "off");
    for (tls, want) in [
        ("require_mtls = true", "no client credential"),
        (
            "cert_file = \"good.crt\"",
            "cert_file and key_file go together",
        ),
        (
            "cert_file = \"good.crt\", key_file = \"wrong.key\"",
            "does not match",
        ),
        (
            "trust_bundle = \"nope\"",
            "trust bundle 'nope' does not exist",
        ),
        ("trust_bundle_file = \"good.crt\"", "not a CA"),
    ] {
        let err = h
            .start_err(&format!(
                "{domain}{}",
                tls_route("r", "https://127.0.0.1:9", tls)
            ))
            .await;
        assert!(
            err.contains("route 'r'") && err.contains(want),
            "{tls}: {err}"
        );
    }
    let err = h
        .start_err(&format!(
            "{domain}{}",
            tls_route("r", "http://127.0.0.1:9", "server_name = \"x\"")
        ))
        .await;
    assert!(err.contains("need an https:// upstream"), "{err}");
}

#[tokio::test]
async fn routes_from_the_api_use_named_bundles_and_credentials_live() {
    let h = Harness::new();
    let pki = Pki::new();
    let origin = TlsUpstream::start(&pki.origin, Some(pki.client_ca.cert.der().clone())).await;
    let body = format!("{}{}", h.admin_section(), h.domain("api.test", None, "off"));
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    api.ok(
        Method::POST,
        "/api/v1/mtls/bundles",
        Some(json!({"name": "origin-ca", "pem": pki.origin_ca.pem()})),
    )
    .await;
    for (name, leaf) in [("good", &pki.good), ("wrong", &pki.wrong)] {
        api.ok(
            Method::POST,
            "/api/v1/credentials",
            Some(json!({"name": name, "cert_pem": leaf.chain_pem, "key_pem": leaf.key_pem})),
        )
        .await;
    }
    let (status, v) = api
        .post("/api/v1/routes", json!({"name": "orders", "upstream": origin.url(), "credential": "good", "upstream_tls": {"trust_bundle": "missing", "server_name": "origin.test"}}))
        .await;
    assert_eq!(status.as_u16(), 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("trust bundle 'missing' does not exist"),
        "{v}"
    );
    let (status, v) = api
        .post("/api/v1/routes", json!({"name": "orders", "upstream": origin.url(), "credential": "good", "upstream_tls": {"trust_bundle": "origin-ca", "cert_file": "/etc/passwd"}}))
        .await;
    assert_eq!(
        (status.as_u16(), code(&v)),
        (422, "bad_upstream_tls"),
        "{v}"
    );

    api.ok(Method::POST, "/api/v1/routes", Some(json!({"name": "orders", "upstream": origin.url(), "credential": "good", "upstream_tls": {"trust_bundle": "origin-ca", "server_name": "origin.test", "require_mtls": true}})))
        .await;
    let (status, v) = fetch(&gw, &h, "/x").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["client_fingerprint"], pki.good.fingerprint());

    // Switching the credential applies at once, on a new pool.
    api.ok(
        Method::PATCH,
        "/api/v1/routes/orders",
        Some(json!({"credential": "wrong"})),
    )
    .await;
    let (status, v) = fetch(&gw, &h, "/x").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (502, Some("upstream_tls")),
        "{v}"
    );
    api.ok(
        Method::PATCH,
        "/api/v1/routes/orders",
        Some(json!({"credential": "good"})),
    )
    .await;
    assert_eq!(fetch(&gw, &h, "/x").await.0, 200);

    // Export carries the TLS settings; importing the export changes nothing.
    let (status, text) = h
        .admin_client(&gw, None)
        .call(Method::GET, "/api/v1/export", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(
        text.contains("trust_bundle = \"origin-ca\"") && text.contains("require_mtls = true"),
        "{text}"
    );
    let text = text.replace(
        "key_file = \"keys/credential-good.key\"",
        &format!("key_pem = {:?}", pki.good.key_pem),
    );
    let text = text.replace(
        "key_file = \"keys/credential-wrong.key\"",
        &format!("key_pem = {:?}", pki.wrong.key_pem),
    );
    let (status, bytes) = h
        .admin_client(&gw, None)
        .call(
            Method::POST,
            "/api/v1/import",
            Some(("application/toml", text.into_bytes())),
        )
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["updated"], json!([]), "{report}");
    assert_eq!(report["created"], json!([]), "{report}");
    gw.shutdown().await;
}

/// `openssl s_server -Verify 1`, ready once it prints ACCEPT; killed on drop.
struct OpensslServer {
    child: Child,
    port: u16,
}

impl OpensslServer {
    fn start(h: &Harness, pki: &Pki) -> Self {
        h.write("origin.crt", &pki.origin.chain_pem);
        h.write("origin.key", &pki.origin.key_pem);
        h.write("client-ca.pem", &pki.client_ca.pem());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(h.path("origin.crt"))
            .arg("-key")
            .arg(h.path("origin.key"))
            .arg("-CAfile")
            .arg(h.path("client-ca.pem"))
            .args(["-Verify", "1", "-verify_return_error", "-www"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl is installed (.ci/run installs it)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("ACCEPT") => break,
                Some(Ok(_)) => continue,
                _ => panic!("openssl s_server did not start"),
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, port }
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn openssl_s_server_with_verify_accepts_the_right_credential_only() {
    let h = Harness::new();
    let pki = Pki::new();
    pki.write(&h);
    let server = OpensslServer::start(&h, &pki);
    let url = format!("https://127.0.0.1:{}", server.port);
    let trust = "trust_bundle_file = \"origin-ca.pem\", server_name = \"origin.test\"";
    let mut body = h.domain("api.test", None, "off");
    body += &tls_route(
        "good",
        &url,
        &format!("{trust}, cert_file = \"good.crt\", key_file = \"good.key\", require_mtls = true"),
    );
    body += &tls_route(
        "wrong",
        &url,
        &format!("{trust}, cert_file = \"wrong.crt\", key_file = \"wrong.key\""),
    );
    let gw = h.start(&body).await;
    let r = get(gw.tls_addr(), "api.test", &h.client(), "/good/")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // -www echoes the session, including the client certificate it verified.
    assert!(
        r.body.contains("CN=gateway-a") || r.body.contains("CN = gateway-a"),
        "{}",
        r.body
    );
    let (status, v) = fetch(&gw, &h, "/wrong/").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (502, Some("upstream_tls")),
        "{v}"
    );
    gw.shutdown().await;
}
