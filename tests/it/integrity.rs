//! Issue 10: the integrity of every verdict, path, Host and identity header, tried as an
//! attacker would, through real sockets with an upstream that records what it receives.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::support::*;

/// Sends raw bytes over TLS (no client certificate unless `spec` has one) and returns the whole
/// answer; the request should say `Connection: close`.
async fn raw(addr: SocketAddr, sni: &str, spec: &ClientSpec, request: &str) -> String {
    let mut config = (*spec.config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends one HTTP/2 request with `:authority` from `uri` and, if given, a `Host` header.
async fn h2_status(addr: SocketAddr, spec: &ClientSpec, uri: &str, host: Option<&str>) -> u16 {
    let mut config = (*spec.config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let sni = uri.split('/').nth(2).unwrap().to_string();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni).unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(uri);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let req = req
        .body(http_body_util::Full::<bytes::Bytes>::default())
        .unwrap();
    match sender.send_request(req).await {
        Ok(r) => r.status().as_u16(),
        Err(e) => panic!("HTTP/2 request failed: {e}"),
    }
}

/// Runs `openssl s_client` against api.test with `extra` arguments (in the harness's dir) and
/// returns all it printed.
async fn s_client(h: &Harness, addr: SocketAddr, extra: &[&str]) -> String {
    let mut child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{}", addr.port()))
        .args([
            "-servername",
            "api.test",
            "-CAfile",
            "server-ca.pem",
            "-ign_eof",
        ])
        .args(extra)
        .current_dir(h.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl must be installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn body_json(resp: &str) -> serde_json::Value {
    let body = &resp[resp.find("\r\n\r\n").map_or(0, |i| i + 4)..];
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// Point 1: in optional mode a flood of distinct bad chains cannot turn a self-signed
/// certificate into `X-Client-Verify: SUCCESS`, nor satisfy a name-based allow rule.
#[tokio::test]
async fn a_flood_of_bad_handshakes_never_makes_a_stranger_verified() {
    let h = Harness::new();
    let ca = TestCa::root("Partner CA");
    h.write("bundle.pem", &ca.pem());
    let up = Upstream::start().await;
    let body = format!(
        "{}[[routes]]\nname = \"admin\"\npath_prefix = \"/admin\"\nupstream = \"{}\"\n[routes.authz]\nrules = [{{ effect = \"allow\", cn = \"admin\" }}]\n\n{}",
        h.domain("api.test", Some("bundle.pem"), "optional"),
        up.url(),
        route_all(&up.url()),
    );
    let gw = h.start(&body).await;
    let addr = gw.tls_addr();
    let strangers: Vec<_> = (0..70)
        .map(|i| TestCa::root(&format!("Flood {i}")).leaf(LeafSpec::client("flood")))
        .collect();
    let strangers = Arc::new(strangers);
    let attacker = TestCa::root("Attacker CA")
        .leaf(LeafSpec::client("admin").spiffe("spiffe://partner.test/admin"));
    let mut flood = Vec::new();
    // More distinct failing chains than the old failure cache held (4,096), concurrently with
    // the attacker's handshakes.
    for t in 0..8 {
        let strangers = strangers.clone();
        let spec0 = h.client();
        flood.push(tokio::spawn(async move {
            for i in 0..525 {
                // A different chain each time: a leaf followed by another stranger's leaf.
                let n = t * 525 + i;
                let a = &strangers[n % strangers.len()];
                let b = &strangers[n / strangers.len()];
                let mut spec = spec0.clone().cert(a);
                if let Some((chain, _)) = &mut spec.identity {
                    chain.push(b.der.clone());
                }
                let _ = get(addr, "api.test", &spec, "/flood").await;
            }
        }));
    }
    let spec = h.client().cert(&attacker);
    for _ in 0..40 {
        let r = get(addr, "api.test", &spec, "/x").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.seen("x-client-verify").unwrap(), "FAILED:unknown_ca");
        let r = get(addr, "api.test", &spec, "/admin").await.unwrap();
        assert_eq!(
            r.status, 403,
            "a name-based allow rule matched an unverified certificate"
        );
    }
    for f in flood {
        f.await.unwrap();
    }
}

/// Point 2: appending another partner's public root does not make a chain pass through it.
#[tokio::test]
async fn appended_roots_do_not_count_for_ca_rules_or_the_forwarded_chain() {
    let h = Harness::new();
    let a = TestCa::root("Partner A");
    let b = TestCa::root("Partner B");
    h.write("bundle.pem", &format!("{}{}", a.pem(), b.pem()));
    let up = Upstream::start().await;
    let fp_b = symbolon::pki::fingerprint_sha256(b.cert.der());
    let fp_a = symbolon::pki::fingerprint_sha256(a.cert.der());
    let body = format!(
        "{}[[routes]]\nname = \"b-only\"\npath_prefix = \"/b\"\nupstream = \"{u}\"\n[routes.authz]\nrules = [{{ effect = \"allow\", ca_fingerprint = \"{fp_b}\" }}]\n\n[[routes]]\nname = \"not-a\"\npath_prefix = \"/not-a\"\nupstream = \"{u}\"\n[routes.authz]\nrules = [{{ effect = \"deny\", ca_fingerprint = \"{fp_a}\" }}]\n\n",
        h.domain("api.test", Some("bundle.pem"), "require"),
        u = up.url(),
    );
    let gw = h.start(&body).await;
    let leaf = a.leaf(LeafSpec::client("a-client"));
    let mut spec = h.client().cert(&leaf);
    if let Some((chain, _)) = &mut spec.identity {
        chain.push(b.cert.der().clone());
    }
    let r = get(gw.tls_addr(), "api.test", &spec, "/b").await.unwrap();
    assert_eq!(
        r.status, 403,
        "B's appended root opened B's route: {}",
        r.body
    );
    let r = get(gw.tls_addr(), "api.test", &spec, "/not-a")
        .await
        .unwrap();
    assert_eq!(r.status, 403, "the deny for A was defeated: {}", r.body);
    // B's own client passes B's route; the forwarded chain is only the verified path.
    let spec_b = h.client().cert(&b.leaf(LeafSpec::client("b-client")));
    let r = get(gw.tls_addr(), "api.test", &spec_b, "/b").await.unwrap();
    assert_eq!(r.status, 200);
    let inter = a.intermediate("A Issuing");
    let leaf = inter.leaf(LeafSpec::client("via-intermediate"));
    let mut spec = h.client().cert(&leaf);
    if let Some((chain, _)) = &mut spec.identity {
        chain.push(b.cert.der().clone());
    }
    let r = get(gw.tls_addr(), "api.test", &spec, "/not-a/x")
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let spec = h.client().cert(&leaf);
    let mut conn = Conn::open(gw.tls_addr(), "api.test", &spec).await.unwrap();
    let mut extra = spec.clone();
    if let Some((chain, _)) = &mut extra.identity {
        chain.push(b.cert.der().clone());
    }
    let _ = conn.get("/x").await;
    let r = get(gw.tls_addr(), "api.test", &extra, "/b/x")
        .await
        .unwrap();
    assert_eq!(r.status, 403);
}

/// Point 3: names are compared as parsed values, and X-Client-Subject is RFC 4514.
#[tokio::test]
async fn commas_in_a_common_name_do_not_forge_other_attributes() {
    let h = Harness::new();
    let ca = TestCa::root("Names CA");
    h.write("bundle.pem", &ca.pem());
    let up = Upstream::start().await;
    let body = format!(
        "{}[[routes]]\nname = \"payments\"\npath_prefix = \"/payments\"\nupstream = \"{u}\"\n[routes.authz]\nrules = [{{ effect = \"allow\", ou = \"Payments\" }}]\n\n[[routes]]\nname = \"doe\"\npath_prefix = \"/doe\"\nupstream = \"{u}\"\n[routes.authz]\nrules = [{{ effect = \"allow\", cn = \"Doe, John\" }}]\n\n",
        h.domain("api.test", Some("bundle.pem"), "require"),
        u = up.url(),
    );
    let gw = h.start(&body).await;
    let forger = h
        .client()
        .cert(&ca.leaf(LeafSpec::client("dev1, OU=Payments")));
    let r = get(gw.tls_addr(), "api.test", &forger, "/payments")
        .await
        .unwrap();
    assert_eq!(r.status, 403, "a comma in the CN forged an OU");
    let doe_leaf = ca.leaf(LeafSpec::client("Doe, John"));
    let doe = h.client().cert(&doe_leaf);
    let r = get(gw.tls_addr(), "api.test", &doe, "/doe").await.unwrap();
    assert_eq!(
        r.status, 200,
        "a rule for a CN with a comma failed: {}",
        r.body
    );
    // X-Client-Subject is what OpenSSL prints as RFC 2253/4514.
    assert_eq!(
        r.seen("x-client-subject").unwrap(),
        openssl_rfc4514(&h, &doe_leaf)
    );
    assert!(
        r.seen("x-client-subject")
            .unwrap()
            .contains("CN=Doe\\, John")
    );
    let payments_leaf = ca.leaf(LeafSpec::client("svc").ou("Payments"));
    let payments = h.client().cert(&payments_leaf);
    let r = get(gw.tls_addr(), "api.test", &payments, "/payments")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.seen("x-client-subject").unwrap(),
        openssl_rfc4514(&h, &payments_leaf)
    );
}

/// The subject as `openssl x509 -nameopt RFC2253` prints it.
fn openssl_rfc4514(h: &Harness, leaf: &crate::support::pki::Leaf) -> String {
    let path = h.write("subject.pem", &leaf.cert_pem);
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(&path)
        .output()
        .expect("openssl must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().trim_start_matches("subject=").to_string()
}

/// Points 4, 5 and 6: every path and Host form reaches the upstream only as authorized, and
/// identity headers cannot be spoofed in any spelling.
#[tokio::test]
async fn paths_hosts_and_headers_reach_the_upstream_as_authorized() {
    let h = Harness::new();
    let ca = TestCa::root("Edge CA");
    h.write("bundle.pem", &ca.pem());
    let up = Upstream::start().await;
    let body = format!(
        "{}{}[[routes]]\nname = \"admin\"\nhost = \"a.test\"\npath_prefix = \"/admin\"\nupstream = \"{u}\"\n[routes.authz]\nrules = [{{ effect = \"allow\", cn = \"admin\" }}]\n\n[[routes]]\nname = \"public\"\nhost = \"a.test\"\npath_prefix = \"/\"\nupstream = \"{u}\"\n\n[[routes]]\nname = \"v2\"\nhost = \"b.test\"\npath_prefix = \"/v2\"\nstrip_prefix = true\nupstream = \"{u}/base\"\n\n",
        h.domain("a.test", Some("bundle.pem"), "require"),
        h.domain("b.test", None, "off"),
        u = up.url(),
    );
    let gw = h.start(&body).await;
    let addr = gw.tls_addr();
    let user = h.client().cert(&ca.leaf(LeafSpec::client("user")));
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/%2E%2e/admin",
        "//admin",
        "/./admin",
        "/ADMIN",
        "/Admin/x",
    ] {
        let resp = raw(
            addr,
            "a.test",
            &user,
            &format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status(&resp), 403, "{path} got past the admin rule: {resp}");
    }
    for path in [
        "/admin;jsessionid=1",
        "/public%2f..%2fadmin",
        "/public%5cadmin",
        "/a\\b",
    ] {
        let resp = raw(
            addr,
            "a.test",
            &user,
            &format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        let s = status(&resp);
        assert!(s == 400 || s == 403, "{path}: {resp}");
    }
    // The upstream receives the normalized path that was routed.
    let resp = raw(
        addr,
        "a.test",
        &user,
        "GET /x/./y//z/../w?q=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(body_json(&resp)["path"], "/x/y/w");
    // strip_prefix with a base path never leaves the base.
    let anon = h.client();
    let resp = raw(
        addr,
        "b.test",
        &anon,
        "GET /v2/../../internal HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let p = body_json(&resp)["path"].as_str().unwrap_or("").to_string();
    assert!(status(&resp) == 404 || p.starts_with("/base/"), "{resp}");
    let resp = raw(
        addr,
        "b.test",
        &anon,
        "GET /v2/%2e%2e/%2e%2e/internal HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let p = body_json(&resp)["path"].as_str().unwrap_or("").to_string();
    assert!(status(&resp) == 404 || p.starts_with("/base/"), "{resp}");

    // Host: one authority per request, and the upstream gets the one that was checked.
    for (name, req) in [
        (
            "two Host headers",
            "GET /v2/x HTTP/1.1\r\nHost: b.test\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        ),
        (
            "absolute form against Host",
            "GET http://a.test/v2/x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        ),
        (
            "absolute form to another domain",
            "GET http://a.test/admin HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let resp = raw(addr, "b.test", &anon, req).await;
        let s = status(&resp);
        assert!(s == 400 || s == 421, "{name}: {resp}");
        assert_ne!(body_json(&resp)["headers"]["host"], "a.test", "{name}");
    }
    // HTTP/2: :authority and Host must agree.
    assert_eq!(
        h2_status(addr, &anon, "https://b.test/v2/x", Some("a.test")).await,
        400
    );
    assert_eq!(
        h2_status(addr, &anon, "https://b.test/v2/x", None).await,
        200
    );

    // Identity headers in any spelling are removed; NONE without a certificate.
    let resp = raw(
        addr,
        "b.test",
        &anon,
        "GET /v2/x HTTP/1.1\r\nHost: b.test\r\nX_Client_Subject: CN=admin\r\nX_Client_Verify: SUCCESS\r\nX-Client-Verify: SUCCESS\r\nForwarded: for=1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nX-Forwarded-For: 9.9.9.9\r\nX-Forwarded-For: 8.8.8.8\r\nConnection: close\r\n\r\n",
    )
    .await;
    let headers = &body_json(&resp)["headers"];
    assert_eq!(headers["x-client-verify"], "NONE", "{resp}");
    for gone in [
        "x_client_subject",
        "x_client_verify",
        "forwarded",
        "x-real-ip",
        "x-client-subject",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the upstream: {headers}"
        );
    }
    assert_eq!(headers["x-forwarded-for"], "9.9.9.9, 8.8.8.8, 127.0.0.1");
}

/// Point 7: a serial revoked for one CA does not revoke another CA's certificate.
#[tokio::test]
async fn a_serial_is_revoked_for_its_issuer_only() {
    let h = Harness::new();
    let a = TestCa::root("Serial CA A");
    let b = TestCa::root("Serial CA B");
    h.write("bundle.pem", &format!("{}{}", a.pem(), b.pem()));
    let leaf_a = a.leaf(LeafSpec::client("a").serial(&[0x50, 0x01]));
    let leaf_b = b.leaf(LeafSpec::client("b").serial(&[0x50, 0x01]));
    // A's CRL lists serial 50:01: it applies to A's certificates only.
    let now = time::OffsetDateTime::now_utc();
    h.write(
        "a.crl",
        &a.crl(
            &[&leaf_a],
            now - time::Duration::hours(1),
            now + time::Duration::hours(6),
        ),
    );
    let body = format!(
        "{}{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("bundle.pem"), "require"),
        h.domain_with_crls("crl.test", "bundle.pem", "require", &["a.crl"], ""),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let err = get(gw.tls_addr(), "crl.test", &h.client().cert(&leaf_a), "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    let r = get(gw.tls_addr(), "crl.test", &h.client().cert(&leaf_b), "/")
        .await
        .unwrap();
    assert_eq!(
        r.status, 200,
        "A's CRL revoked B's certificate with the same serial"
    );
    let api = crate::admin::Api {
        client: h.admin_client(&gw, None),
    };
    let (status, v) = api
        .post(
            "/api/v1/revocations",
            serde_json::json!({"serial": "50:01", "issuer_pem": a.pem()}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{v}");
    let err = get(gw.tls_addr(), "api.test", &h.client().cert(&leaf_a), "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    let r = get(gw.tls_addr(), "api.test", &h.client().cert(&leaf_b), "/")
        .await
        .unwrap();
    assert_eq!(
        r.status, 200,
        "B's certificate with the same serial was refused"
    );
}

/// Point 8: an anchor that expires while the gateway runs stops validating at that moment; an
/// expired CA in one bundle does not stop the gateway from starting.
#[tokio::test]
async fn an_anchor_that_expires_while_running_stops_validating() {
    let h = Harness::new();
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let short = TestCa::root_until("Short-lived CA", until);
    let old = TestCa::root_until(
        "Expired CA",
        time::OffsetDateTime::now_utc() - time::Duration::days(1),
    );
    h.write("short.pem", &short.pem());
    h.write(
        "old.pem",
        &format!("{}{}", old.pem(), TestCa::root("Other").pem()),
    );
    let body = format!(
        "{}{}{}",
        h.domain("api.test", Some("short.pem"), "optional"),
        h.domain("old.test", Some("old.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let mut leaf = LeafSpec::client("c");
    leaf.not_after = until + time::Duration::days(1);
    let spec = h.client().cert(&short.leaf(leaf));
    let r = get(gw.tls_addr(), "api.test", &spec, "/").await.unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS");
    // Wait for the anchor's not-after (a clock deadline, not a synchronisation).
    let wait = (until - time::OffsetDateTime::now_utc()).whole_milliseconds() + 1500;
    tokio::time::sleep(std::time::Duration::from_millis(wait.max(0) as u64)).await;
    let r = get(gw.tls_addr(), "api.test", &spec, "/").await.unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "FAILED:ca_expired");
    // The expired CA's clients are refused with the reason; the gateway runs.
    let old_client = h.client().cert(&old.leaf(LeafSpec::client("o")));
    let err = get(gw.tls_addr(), "old.test", &old_client, "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateExpired"), "{err}");
}

/// Point 9: the depth limit applies to the shortest valid path, whatever the order of the
/// intermediates; the default accepts chains of five CAs.
#[tokio::test]
async fn path_building_does_not_depend_on_the_order_of_intermediates() {
    let h = Harness::new();
    let root = TestCa::root("Deep Root");
    let i1 = root.intermediate("Deep I1");
    let i2 = i1.intermediate("Deep I2");
    let i3 = i2.intermediate("Deep I3");
    let i4 = i3.intermediate("Deep I4");
    h.write("bundle.pem", &root.pem());
    let body = format!(
        "{}{}max_chain_depth = 3\n\n{}",
        h.domain("api.test", Some("bundle.pem"), "optional"),
        h.domain("tight.test", Some("bundle.pem"), "optional")
            .trim_end()
            .to_string()
            + "\n",
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    // Default depth: a chain with five CAs (four intermediates and the root) verifies.
    let leaf = i4.leaf(LeafSpec::client("deep"));
    let r = get(gw.tls_addr(), "api.test", &h.client().cert(&leaf), "/")
        .await
        .unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS");
    // A leaf under I2 (path: I2, I1, root = 3 CAs) is accepted on the tight domain in any
    // order of the intermediates, even with a longer detour offered first.
    let leaf = i2.leaf(LeafSpec::client("mid"));
    let chain = leaf.chain();
    let (ee, ints) = chain.split_first().unwrap();
    let orders: Vec<Vec<_>> = vec![
        ints.to_vec(),
        ints.iter().rev().cloned().collect(),
        vec![i3.cert.der().clone(), ints[1].clone(), ints[0].clone()],
    ];
    for order in orders {
        let mut spec = h.client().cert(&leaf);
        if let Some((c, _)) = &mut spec.identity {
            *c = std::iter::once(ee.clone()).chain(order).collect();
        }
        let r = get(gw.tls_addr(), "tight.test", &spec, "/").await.unwrap();
        assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS");
    }
    let deep = i3.leaf(LeafSpec::client("too-deep"));
    let r = get(gw.tls_addr(), "tight.test", &h.client().cert(&deep), "/")
        .await
        .unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "FAILED:chain_too_deep");
}

/// Point 10: the right alert for each refusal, in TLS 1.2 as in TLS 1.3, and `verify` names
/// what is wrong and where.
#[tokio::test]
async fn refusals_carry_the_right_alert_and_reason() {
    let h = Harness::new();
    let ca = TestCa::root("Alerts CA");
    let constrained = ca.intermediate_with("Constrained CA", |p| {
        p.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("allowed.test".into())],
            excluded_subtrees: vec![],
        });
    });
    let not_ca = ca.intermediate_with("Not A CA", |p| {
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
    });
    let server_only = ca.intermediate_with("Server-only CA", |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    });
    h.write("bundle.pem", &ca.pem());
    let body = format!(
        "{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("bundle.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let addr = gw.tls_addr();

    // TLS 1.2 without a certificate: handshake_failure (certificate_required is TLS 1.3 only).
    let err = get(addr, "api.test", &h.client().tls12(), "/")
        .await
        .unwrap_err();
    assert!(err.contains("HandshakeFailure"), "{err}");
    let err = get(addr, "api.test", &h.client(), "/").await.unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");
    // openssl agrees on the TLS 1.2 alert's name.
    let text = s_client(&h, addr, &["-tls1_2"]).await;
    assert!(text.contains("handshake failure"), "{text}");

    // A certificate webpki cannot accept (an unknown critical extension): bad_certificate.
    let odd = ca.leaf_with(LeafSpec::client("odd"), |p| {
        let mut ext = rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0x05, 0x00],
        );
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
    });
    // (openssl sends it; rustls clients refuse to.)
    h.write("odd.pem", &odd.chain_pem);
    h.write("odd.key", &odd.key_pem);
    for version in ["-tls1_3", "-tls1_2"] {
        let text = s_client(&h, addr, &[version, "-cert", "odd.pem", "-key", "odd.key"]).await;
        assert!(text.contains("alert bad certificate"), "{version}: {text}");
    }

    let api = crate::admin::Api {
        client: h.admin_client(&gw, None),
    };
    let cases = [
        (
            constrained.leaf(LeafSpec::client("evil").dns("evil.test")),
            "FAILED:name_constraint",
            "name constraints",
        ),
        (
            not_ca.leaf(LeafSpec::client("under-a-leaf")),
            "FAILED:issuer_not_ca",
            "not a CA",
        ),
        (
            server_only.leaf(LeafSpec::client("under-server-ca")),
            "FAILED:wrong_usage",
            "CA CN=Server-only CA does not allow clientAuth",
        ),
    ];
    for (leaf, verdict, reason) in cases {
        let v = api
            .ok(
                http::Method::POST,
                "/api/v1/verify",
                Some(serde_json::json!({"certificate_pem": leaf.chain_pem, "domain": "api.test"})),
            )
            .await;
        assert_eq!(v["verdict"], verdict, "{v}");
        assert!(v["reason"].as_str().unwrap().contains(reason), "{v}");
    }
}

/// Point 7: an intermediate can be revoked by its PEM; every leaf under it is then refused, also
/// on a connection that was open before, and other branches are not.
#[tokio::test]
async fn an_intermediate_is_revoked_by_its_pem() {
    let h = Harness::new();
    let root = TestCa::root("Branch Root");
    let bad = root.intermediate("Compromised Issuing CA");
    let good = root.intermediate("Healthy Issuing CA");
    h.write("bundle.pem", &root.pem());
    let body = format!(
        "{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("bundle.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let api = crate::admin::Api {
        client: h.admin_client(&gw, None),
    };
    let under_bad = h.client().cert(&bad.leaf(LeafSpec::client("under-bad")));
    let mut open = Conn::open(gw.tls_addr(), "api.test", &under_bad)
        .await
        .unwrap();
    assert_eq!(open.get("/").await.unwrap().status, 200);
    let (status, v) = api
        .post(
            "/api/v1/revocations",
            serde_json::json!({"certificate_pem": bad.pem(), "reason": "cACompromise"}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{v}");
    assert!(open.get("/").await.is_err(), "the connection stayed open");
    let err = get(gw.tls_addr(), "api.test", &under_bad, "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    let under_good = h.client().cert(&good.leaf(LeafSpec::client("under-good")));
    let r = get(gw.tls_addr(), "api.test", &under_good, "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

/// Review findings: an intermediate that is itself in the trust bundle can still be revoked
/// (by serial for its issuer, and by its issuer's CRL), and the path goes on through the root.
#[tokio::test]
async fn an_intermediate_in_the_bundle_can_be_revoked() {
    let h = Harness::new();
    let root = TestCa::root("Bundle Root");
    let inter = root.intermediate("Bundle Issuing CA");
    let other = root.intermediate("Other Issuing CA");
    h.write("bundle.pem", &format!("{}{}", root.pem(), inter.pem()));
    let now = time::OffsetDateTime::now_utc();
    h.write(
        "root.crl",
        &root.crl_of_cas(
            &[&inter],
            now - time::Duration::hours(1),
            now + time::Duration::hours(6),
        ),
    );
    let body = format!(
        "{}{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("bundle.pem"), "require"),
        h.domain_with_crls("crl.test", "bundle.pem", "require", &["root.crl"], ""),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let leaf = inter.leaf(LeafSpec::client("under-bundle-intermediate"));
    let fine = other.leaf(LeafSpec::client("other-branch"));
    // By the root's CRL, with and without the intermediate in the client's chain.
    for spec in [h.client().cert(&leaf), h.client().leaf_only(&leaf)] {
        let err = get(gw.tls_addr(), "crl.test", &spec, "/")
            .await
            .unwrap_err();
        assert!(err.contains("CertificateRevoked"), "{err}");
    }
    assert_eq!(
        get(gw.tls_addr(), "crl.test", &h.client().cert(&fine), "/")
            .await
            .unwrap()
            .status,
        200
    );
    // By serial for its issuer, through the API.
    assert_eq!(
        get(gw.tls_addr(), "api.test", &h.client().leaf_only(&leaf), "/")
            .await
            .unwrap()
            .status,
        200
    );
    let serial = symbolon::pki::CertInfo::parse(inter.cert.der())
        .unwrap()
        .serial_hex;
    let api = crate::admin::Api {
        client: h.admin_client(&gw, None),
    };
    let (status, v) = api
        .post(
            "/api/v1/revocations",
            serde_json::json!({"serial": serial, "issuer_pem": root.pem()}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{v}");
    for spec in [h.client().cert(&leaf), h.client().leaf_only(&leaf)] {
        let err = get(gw.tls_addr(), "api.test", &spec, "/")
            .await
            .unwrap_err();
        assert!(err.contains("CertificateRevoked"), "{err}");
    }
}

/// Review findings: reserved and non-ASCII characters in route prefixes are matched decoded;
/// a forged chain signature gets bad_certificate; `Connection: host` cannot drop the Host;
/// userinfo in the authority is refused.
#[tokio::test]
async fn encoded_prefixes_forged_signatures_and_authority_tricks() {
    let h = Harness::new();
    let ca = TestCa::root("Tricks CA");
    let impostor = TestCa::root("Tricks CA");
    h.write("bundle.pem", &ca.pem());
    let up = Upstream::start().await;
    let body = format!(
        "{}{}[[routes]]\nname = \"colon\"\nhost = \"a.test\"\npath_prefix = \"/v1:admin\"\nupstream = \"{u}\"\n[routes.authz]\nrules = [{{ effect = \"allow\", cn = \"admin\" }}]\n\n[[routes]]\nname = \"cafe\"\nhost = \"a.test\"\npath_prefix = \"/café\"\nstrip_prefix = true\nupstream = \"{u}/menu\"\n\n[[routes]]\nname = \"rest\"\npath_prefix = \"/\"\nupstream = \"{u}\"\n\n",
        h.domain("a.test", Some("bundle.pem"), "optional"),
        h.domain("b.test", None, "off"),
        u = up.url(),
    );
    let gw = h.start(&body).await;
    let addr = gw.tls_addr();
    let anon = h.client();
    for path in [
        "/v1%3Aadmin/secret",
        "/v1%3aadmin/secret",
        "/V1:ADMIN/secret",
    ] {
        let resp = raw(
            addr,
            "a.test",
            &anon,
            &format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status(&resp), 403, "{path}: {resp}");
    }
    let resp = raw(
        addr,
        "a.test",
        &anon,
        "GET /caf%C3%A9/x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(body_json(&resp)["path"], "/menu/x");
    // Raw UTF-8 in the path is forwarded percent-encoded, once.
    let mut config = (*anon.config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("a.test").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /caf\xc3\xa9/y HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let resp = String::from_utf8_lossy(&out).into_owned();
    let s = status(&resp);
    assert!(s == 400 || body_json(&resp)["path"] == "/menu/y", "{resp}");

    // A chain signed by another CA with the same name: bad_certificate, not decrypt_error.
    let forged = impostor.leaf(LeafSpec::client("admin"));
    let resp = raw(
        addr,
        "a.test",
        &h.client().cert(&forged),
        "GET /v1:admin/x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&resp), 403, "{resp}");

    // Connection: host cannot remove the Host that passed the checks.
    let resp = raw(
        addr,
        "b.test",
        &anon,
        "GET /x HTTP/1.1\r\nHost: b.test\r\nConnection: close, host\r\n\r\n",
    )
    .await;
    assert_eq!(body_json(&resp)["headers"]["host"], "b.test", "{resp}");
    // Userinfo, odd ports or brackets around a name in Host or in an absolute-form target: 400.
    for req in [
        "GET /x HTTP/1.1\r\nHost: b.test:+1\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: b.test:0x10\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: b.test:099999\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: [b.test]\r\nConnection: close\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a.test@b.test\r\nConnection: close\r\n\r\n",
        "GET http://b.test@a.test/x HTTP/1.1\r\nHost: b.test@a.test\r\nConnection: close\r\n\r\n",
    ] {
        let resp = raw(addr, "b.test", &anon, req).await;
        assert_eq!(status(&resp), 400, "{req}: {resp}");
    }
}

/// Review findings: a forged chain signature is refused with bad_certificate; an open connection
/// whose trust anchor expires is closed; in optional mode a certificate webpki cannot parse
/// does not end the handshake.
#[tokio::test]
async fn forged_signatures_expiring_anchors_and_unparsable_certificates() {
    let h = Harness::new();
    let ca = TestCa::root("Strict CA");
    let impostor = TestCa::root("Strict CA");
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let short = TestCa::root_until("Soon Expired CA", until);
    h.write("bundle.pem", &format!("{}{}", ca.pem(), short.pem()));
    h.write("server-ca.pem", &h.server_ca.pem());
    let body = format!(
        "{}{}{}",
        h.domain("api.test", Some("bundle.pem"), "optional"),
        h.domain("strict.test", Some("bundle.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let addr = gw.tls_addr();
    let forged = impostor.leaf(LeafSpec::client("admin"));
    for spec in [h.client().cert(&forged), h.client().cert(&forged).tls12()] {
        let err = get(addr, "strict.test", &spec, "/").await.unwrap_err();
        assert!(err.contains("BadCertificate"), "{err}");
    }
    let r = get(addr, "api.test", &h.client().cert(&forged), "/")
        .await
        .unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "FAILED:bad_signature");

    // Optional mode: an unknown critical extension (webpki cannot parse it) → FAILED, served.
    let odd = ca.leaf_with(LeafSpec::client("odd"), |p| {
        let mut ext = rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0x05, 0x00],
        );
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
    });
    h.write("odd.pem", &odd.chain_pem);
    h.write("odd.key", &odd.key_pem);
    for version in ["-tls1_3", "-tls1_2"] {
        let text = s_client(&h, addr, &[version, "-cert", "odd.pem", "-key", "odd.key"]).await;
        assert!(text.contains("HTTP/1.1 200"), "{version}: {text}");
        assert!(text.contains("FAILED:bad_certificate"), "{version}: {text}");
    }

    // An open connection whose anchor expires is closed when it expires.
    let mut leaf = LeafSpec::client("short");
    leaf.not_after = until + time::Duration::days(1);
    let spec = h.client().cert(&short.leaf(leaf));
    let mut conn = Conn::open(addr, "strict.test", &spec).await.unwrap();
    assert_eq!(conn.get("/").await.unwrap().status, 200);
    let wait = (until - time::OffsetDateTime::now_utc()).whole_milliseconds() + 1500;
    tokio::time::sleep(std::time::Duration::from_millis(wait.max(0) as u64)).await;
    assert!(conn.get("/").await.is_err(), "the connection stayed open");
}

/// Review findings: an attribute in BMPString, UniversalString or TeletexString is the same
/// text for rules, and the subject header is what OpenSSL prints as RFC 2253 (non-ASCII
/// escaped as \XX).
#[tokio::test]
async fn string_types_and_non_ascii_names() {
    let h = Harness::new();
    let ca = TestCa::root("Strings CA");
    h.write("bundle.pem", &ca.pem());
    let up = Upstream::start().await;
    let body = format!(
        "{}[[routes]]\nname = \"no-mallory\"\npath_prefix = \"/\"\nupstream = \"{}\"\n[routes.authz]\nrules = [{{ effect = \"deny\", cn = \"mallory\" }}]\n\n",
        h.domain("api.test", Some("bundle.pem"), "require"),
        up.url(),
    );
    let gw = h.start(&body).await;
    let values: Vec<rcgen::DnValue> = vec![
        rcgen::DnValue::BmpString("mallory".try_into().unwrap()),
        rcgen::DnValue::UniversalString("mallory".try_into().unwrap()),
        rcgen::DnValue::TeletexString("mallory".try_into().unwrap()),
        rcgen::DnValue::PrintableString("mallory".try_into().unwrap()),
    ];
    for value in values {
        let leaf = ca.leaf_with(LeafSpec::client("x"), |p| {
            p.distinguished_name
                .push(rcgen::DnType::CommonName, value.clone());
        });
        let r = get(gw.tls_addr(), "api.test", &h.client().cert(&leaf), "/")
            .await
            .unwrap();
        assert_eq!(r.status, 403, "{value:?}: the deny rule did not fire");
    }
    for cn in [
        "caf\u{e9} \u{202e}evil",
        "user,CN=admin",
        " #lead+trail \\ ",
    ] {
        let leaf = ca.leaf(LeafSpec::client(cn));
        let r = get(gw.tls_addr(), "api.test", &h.client().cert(&leaf), "/")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.seen("x-client-subject").unwrap(),
            openssl_rfc4514(&h, &leaf),
            "{cn:?}"
        );
    }
}
