//! Sidecar (egress) mode: a local app speaks plain HTTP to 127.0.0.1; the gateway forwards over
//! mTLS with a credential the built-in CA issued, and rotates it without failing a request.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::admin::{Api, code};
use crate::support::*;
use crate::upstream_tls::Pki;

/// A plain HTTP/1.1 keep-alive connection, as a local app would open.
struct Plain {
    send: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Plain {
    async fn open(addr: SocketAddr) -> Result<Self, String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Self { send })
    }

    async fn get(&mut self, path: &str) -> Result<(u16, Value), String> {
        let req = http::Request::get(path)
            .header("host", "localhost")
            .body(Empty::new())
            .unwrap();
        let resp = self
            .send
            .send_request(req)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        Ok((status, v))
    }
}

struct Setup {
    h: Harness,
    gw: symbolon::gateway::Gateway,
    api: Api,
    origin: TlsUpstream,
    pki: Pki,
}

/// A gateway with the built-in CA and an upstream that only accepts clients of that CA.
async fn setup(sidecars: &str) -> Setup {
    let h = Harness::new();
    symbolon::ca::init(&h.path("ca"), "p256", b"sidecar test passphrase", None).unwrap();
    h.write("ca-pass", "sidecar test passphrase");
    let pki = Pki::new();
    pki.write(&h);
    let root = symbolon::pki::load_certs(&h.path("ca/root.pem")).unwrap()[0].clone();
    let origin = TlsUpstream::start(&pki.origin, Some(root)).await;
    let body = format!(
        "[ca]\ndir = \"ca\"\npassphrase_file = \"ca-pass\"\n\n{}{}",
        h.admin_section(),
        sidecars.replace("ORIGIN", &origin.url())
    );
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    Setup {
        h,
        gw,
        api,
        origin,
        pki,
    }
}

const ORDERS: &str = "[[sidecars]]\nname = \"orders\"\nlisten = \"127.0.0.1:0\"\nupstream = \"ORIGIN/api\"\nupstream_tls = { trust_bundle_file = \"origin-ca.pem\", server_name = \"origin.test\", require_mtls = true }\nissue = { common_name = \"billing\", spiffe_id = \"spiffe://test.local/billing\", lifetime = \"1h\" }\n\n";

#[tokio::test]
async fn steady_stream_across_forced_rotations_loses_nothing() {
    let s = setup(ORDERS).await;
    let addr = s.gw.sidecar_addr("orders").expect("the sidecar listens");
    let mut app = Plain::open(addr).await.unwrap();
    let (status, v) = app.get("/orders/1?x=1").await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["path"], "/api/orders/1");
    assert_eq!(v["host"], s.origin.url().trim_start_matches("https://"));
    let first = v["client_fingerprint"].as_str().unwrap().to_string();

    let view = s.api.ok(Method::GET, "/api/v1/sidecars/orders", None).await;
    assert_eq!(view["source"], "config");
    assert_eq!(view["presents"], "sidecar-orders");
    assert_eq!(view["rotation"]["fingerprint_sha256"], first.as_str());
    assert_eq!(view["listening_on"], addr.to_string());
    // Rotation is due two thirds into the lifetime: 40 of 60 minutes.
    let rotate_at = time::OffsetDateTime::parse(
        view["rotation"]["rotate_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let until = (rotate_at - time::OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        (2380..=2405).contains(&until),
        "rotation in {until} s: {view}"
    );

    // Four local clients send requests back to back on keep-alive connections.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures, seen) = (stop.clone(), ok.clone(), failures.clone(), seen.clone());
        workers.push(tokio::spawn(async move {
            let mut app = Plain::open(addr).await.unwrap();
            while !stop.load(Ordering::SeqCst) {
                match app.get("/tick").await {
                    Ok((200, v)) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        seen.lock()
                            .await
                            .insert(v["client_fingerprint"].as_str().unwrap_or("").into());
                    }
                    Ok((status, v)) => failures.lock().await.push(format!("{status} {v}")),
                    Err(e) => failures.lock().await.push(e),
                }
            }
        }));
    }
    let mut fingerprints = vec![first.clone()];
    for _ in 0..3 {
        // A slow request is in flight while the credential changes under it.
        let mut slow_app = Plain::open(addr).await.unwrap();
        let slow = tokio::spawn(async move { slow_app.get("/slow").await });
        let v = s
            .api
            .ok(
                Method::POST,
                "/api/v1/sidecars/orders/rotate",
                Some(json!({})),
            )
            .await;
        let fp = v["rotation"]["fingerprint_sha256"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            !fingerprints.contains(&fp),
            "rotation gave a new certificate"
        );
        fingerprints.push(fp.clone());
        let (status, v) = slow.await.unwrap().unwrap();
        assert_eq!(status, 200, "the request in flight failed: {v}");
        // New requests present the new credential.
        let (status, v) = app.get("/after").await.unwrap();
        assert_eq!(
            (status, v["client_fingerprint"].as_str()),
            (200, Some(fp.as_str())),
            "{v}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().await;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::SeqCst) >= 20,
        "only {} requests",
        ok.load(Ordering::SeqCst)
    );
    let seen = seen.lock().await;
    assert!(seen.len() >= 2, "the stream saw only {seen:?}");
    assert!(
        seen.iter().all(|f| fingerprints.contains(f)),
        "{seen:?} vs {fingerprints:?}"
    );

    // The credential is on the expiry list and in the metrics, marked as rotated by itself.
    let list = s
        .api
        .ok(Method::GET, "/api/v1/expiring?within=2h", None)
        .await;
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "credential" && c["name"] == "sidecar-orders")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(entry["fingerprint_sha256"], fingerprints[3].as_str());
    assert_eq!(entry["auto_rotated"], true);
    let metrics = crate::mtls::metrics_text(&s.gw).await;
    let line = format!(
        "symbolon_certificate_expiry_seconds{{kind=\"credential\",name=\"sidecar-orders\",fingerprint=\"{}\"}}",
        fingerprints[3]
    );
    assert!(metrics.contains(&line), "{line} missing");
    assert!(
        metrics.contains("symbolon_sidecar_rotations_total{sidecar=\"orders\",result=\"ok\"} 3")
    );
    let audit = s.api.ok(Method::GET, "/api/v1/audit?limit=100", None).await;
    assert!(audit.to_string().contains("credential.rotate"), "{audit}");
    // Each credential the CA issued for the sidecar is in the audit log: who asked (the
    // sidecar at start, the admin for a forced rotation) and what.
    let issued: Vec<&serde_json::Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "ca.sidecar")
        .collect();
    assert!(issued.len() >= 4, "{audit}");
    assert!(
        issued.iter().any(|r| r["actor"] == "sidecar:orders"),
        "{audit}"
    );
    assert!(
        issued
            .iter()
            .any(|r| r["actor"].as_str().unwrap().starts_with("cert:")),
        "{audit}"
    );
    assert!(
        issued[0]["detail"]
            .as_str()
            .unwrap()
            .contains("spiffe://test.local/billing")
    );
    s.gw.shutdown().await;
}

#[tokio::test]
async fn api_sidecar_rotates_by_itself_and_changes_apply_live() {
    let s = setup(ORDERS).await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(json!({"name": "origin-ca", "pem": s.pki.origin_ca.pem()})),
        )
        .await;
    let spec = json!({"name": "fast", "listen": "127.0.0.1:0", "upstream": s.origin.url(),
        "upstream_tls": {"server_name": "origin.test", "trust_bundle": "origin-ca", "require_mtls": true},
        "issue": {"common_name": "fast", "lifetime": "6s"}});
    let created = std::time::Instant::now();
    let v = s
        .api
        .ok(Method::POST, "/api/v1/sidecars", Some(spec.clone()))
        .await;
    assert_eq!(v["source"], "api");
    let addr: SocketAddr = v["listening_on"].as_str().unwrap().parse().unwrap();
    let first = v["rotation"]["fingerprint_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let mut app = Plain::open(addr).await.unwrap();
    let (status, v) = app.get("/x").await.unwrap();
    assert_eq!(
        (status, v["client_fingerprint"].as_str()),
        (200, Some(first.as_str())),
        "{v}"
    );

    // Bad input is refused and changes nothing.
    let (status, v) = s.api.post("/api/v1/sidecars", spec.clone()).await;
    assert_eq!((status.as_u16(), code(&v)), (409, "duplicate_name"), "{v}");
    let taken = s.gw.sidecar_addr("orders").unwrap();
    let mut clash = spec.clone();
    clash["name"] = json!("clash");
    clash["listen"] = json!(taken.to_string());
    let (status, v) = s.api.post("/api/v1/sidecars", clash).await;
    assert_eq!(
        (status.as_u16(), code(&v)),
        (409, "listen_address_in_use"),
        "{v}"
    );
    let mut files = spec.clone();
    files["name"] = json!("files");
    files["upstream_tls"]["trust_bundle_file"] = json!("/etc/ssl/certs/ca.pem");
    let (status, v) = s.api.post("/api/v1/sidecars", files).await;
    assert_eq!(
        (status.as_u16(), code(&v)),
        (422, "bad_upstream_tls"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config file"),
        "{v}"
    );
    let mut plain = spec.clone();
    plain["name"] = json!("plain");
    plain["upstream"] = json!("http://127.0.0.1:9");
    let (status, v) = s.api.post("/api/v1/sidecars", plain).await;
    assert_eq!(status.as_u16(), 422, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("https://"),
        "{v}"
    );
    let (status, v) = s
        .api
        .call(Method::PUT, "/api/v1/sidecars/orders", Some(spec.clone()))
        .await;
    assert_eq!(status.as_u16(), 422, "{v}");
    let mut orders = s.api.ok(Method::GET, "/api/v1/sidecars/orders", None).await;
    orders["listen"] = json!("127.0.0.1:0");
    let (status, v) = s
        .api
        .call(
            Method::PUT,
            "/api/v1/sidecars/orders",
            Some(json!({"name": "orders", "listen": "127.0.0.1:0", "upstream": s.origin.url()})),
        )
        .await;
    assert_eq!(
        (status.as_u16(), code(&v)),
        (409, "defined_in_config_file"),
        "{v}"
    );

    // Export lists the sidecar, not its issued credential (an import issues a fresh one).
    let (_, text) =
        s.h.admin_client(&s.gw, None)
            .call(Method::GET, "/api/v1/export", None)
            .await
            .unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(
        text.contains("[[sidecars]]") && text.contains("name = \"fast\""),
        "{text}"
    );
    assert!(!text.contains("sidecar-fast"), "{text}");

    // Two thirds into its 6 s lifetime, the gateway rotates the credential by itself.
    let mut changes = s.gw.reloads();
    let rotated = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            changes.changed().await.unwrap();
            let v = s.api.ok(Method::GET, "/api/v1/sidecars/fast", None).await;
            let fp = v["rotation"]["fingerprint_sha256"]
                .as_str()
                .unwrap()
                .to_string();
            if fp != first {
                return fp;
            }
        }
    })
    .await
    .expect("the credential was not rotated within 20 s");
    let after = created.elapsed().as_secs_f64();
    assert!((3.0..12.0).contains(&after), "rotated after {after:.1} s");
    let (status, v) = app.get("/y").await.unwrap();
    assert_eq!(
        (status, v["client_fingerprint"].as_str()),
        (200, Some(rotated.as_str())),
        "{v}"
    );

    // A change of upstream applies to the open connection's next request.
    let mut moved = spec.clone();
    moved["upstream"] = json!(format!("{}/v2", s.origin.url()));
    s.api
        .ok(Method::PUT, "/api/v1/sidecars/fast", Some(moved))
        .await;
    let (status, v) = app.get("/y").await.unwrap();
    assert_eq!((status, v["path"].as_str()), (200, Some("/v2/y")), "{v}");

    // The bundle that verifies its upstream cannot go while the sidecar uses it.
    let (status, v) = s
        .api
        .call(Method::DELETE, "/api/v1/mtls/bundles/origin-ca", None)
        .await;
    assert_eq!((status.as_u16(), code(&v)), (409, "in_use"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sidecar 'fast'"),
        "{v}"
    );

    // Deleted: the listener closes and the open connection is told why.
    assert_eq!(
        s.api
            .call(Method::DELETE, "/api/v1/sidecars/fast", None)
            .await
            .0,
        204
    );
    let (status, v) = app.get("/z").await.unwrap();
    assert_eq!(status, 502, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("removed"),
        "{v}"
    );
    let creds = s.api.ok(Method::GET, "/api/v1/credentials", None).await;
    assert!(!creds.to_string().contains("sidecar-fast"), "{creds}");
    s.gw.shutdown().await;
}

#[tokio::test]
async fn config_file_sidecars_follow_reloads() {
    let s = setup(ORDERS).await;
    assert!(s.gw.sidecar_addr("orders").is_some());
    let text = std::fs::read_to_string(s.h.path("symbolon.toml")).unwrap();
    let section = ORDERS.replace("ORIGIN", &s.origin.url());
    assert!(text.contains(&section));
    // Removed from the file: the listener closes and its issued credential is deleted.
    s.h.write("symbolon.toml", &text.replace(&section, ""));
    s.gw.reload().await.unwrap();
    assert_eq!(s.gw.sidecar_addr("orders"), None);
    assert_eq!(
        s.api.ok(Method::GET, "/api/v1/sidecars", None).await,
        json!([])
    );
    let creds = s.api.ok(Method::GET, "/api/v1/credentials", None).await;
    assert!(!creds.to_string().contains("sidecar-orders"), "{creds}");
    // Back in the file: a fresh credential is issued and the sidecar serves again.
    s.h.write("symbolon.toml", &text);
    s.gw.reload().await.unwrap();
    let addr = s.gw.sidecar_addr("orders").unwrap();
    let (status, v) = Plain::open(addr).await.unwrap().get("/x").await.unwrap();
    assert_eq!(status, 200, "{v}");
    let subject = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "sidecar-orders")
            .map(|c| c["subject"].as_str().unwrap().to_string())
            .unwrap()
    };
    let creds = s.api.ok(Method::GET, "/api/v1/credentials", None).await;
    assert_eq!(subject(&creds), "CN=billing");
    // A changed `issue` in the file gets a certificate for the new name at the reload; an
    // unchanged one keeps its certificate.
    s.h.write(
        "symbolon.toml",
        &text.replace("common_name = \"billing\"", "common_name = \"invoicing\""),
    );
    s.gw.reload().await.unwrap();
    let creds = s.api.ok(Method::GET, "/api/v1/credentials", None).await;
    assert_eq!(subject(&creds), "CN=invoicing");
    let fp = s.api.ok(Method::GET, "/api/v1/sidecars/orders", None).await["rotation"]["fingerprint_sha256"].clone();
    s.gw.reload().await.unwrap();
    let again = s.api.ok(Method::GET, "/api/v1/sidecars/orders", None).await["rotation"]["fingerprint_sha256"].clone();
    assert_eq!(
        fp, again,
        "a reload that changes nothing re-issued the credential"
    );
    s.gw.shutdown().await;
    // A sidecar asking for an issued credential needs the CA.
    let h = Harness::new();
    Pki::new().write(&h);
    let err = h
        .start_err(&ORDERS.replace("ORIGIN", "https://127.0.0.1:9"))
        .await;
    assert!(
        err.contains("sidecar 'orders'") && err.contains("no CA"),
        "{err}"
    );
    // A lifetime that would overflow the clock is refused with its range (it panicked).
    symbolon::ca::init(&h.path("ca"), "p256", b"p", None).unwrap();
    h.write("ca-pass", "p");
    let err = h
        .start_err(&format!(
            "[ca]\ndir = \"ca\"\npassphrase_file = \"ca-pass\"\n\n{}",
            ORDERS
                .replace("ORIGIN", "https://127.0.0.1:9")
                .replace("lifetime = \"1h\"", "lifetime = \"100000000d\"")
        ))
        .await;
    assert!(err.contains("lifetime") && err.contains("3650d"), "{err}");
}

/// A listener that cannot bind fails the start with the setting to change, and no sidecar
/// listener of the configuration is left serving.
#[tokio::test]
async fn a_start_that_cannot_bind_leaves_no_sidecar_listening() {
    let h = Harness::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sidecar = free.local_addr().unwrap();
    drop(free);
    let path = h.config(&format!(
        "[[sidecars]]\nname = \"local\"\nlisten = \"{sidecar}\"\nupstream = \"http://127.0.0.1:9/\"\n"
    ));
    let overrides = symbolon::gateway::Overrides {
        metrics_listen: Some(taken.local_addr().unwrap()),
        ..Default::default()
    };
    let err = match symbolon::gateway::Gateway::start(&path, overrides).await {
        Ok(_) => panic!("started on a port in use"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("metrics_listen"), "{err}");
    // The sidecar's port is free again: its listener was closed.
    std::net::TcpListener::bind(sidecar).expect("the sidecar's listener was closed");
}

/// A sidecar configured on the gateway's own port fails alone: the gateway's listeners are bound
/// first, and the sidecar's status says why it does not listen.
#[tokio::test]
async fn a_sidecar_on_the_metrics_port_fails_alone() {
    let h = Harness::new();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap();
    drop(free);
    let path = h.config(&format!(
        "[[sidecars]]\nname = \"local\"\nlisten = \"{port}\"\nupstream = \"http://127.0.0.1:9/\"\n"
    ));
    let overrides = symbolon::gateway::Overrides {
        metrics_listen: Some(port),
        ..Default::default()
    };
    let gw = symbolon::gateway::Gateway::start(&path, overrides)
        .await
        .expect("the gateway starts; only the sidecar fails");
    assert_eq!(gw.metrics_addr(), port);
    let status = gw
        .control()
        .sidecar_status("local")
        .expect("the sidecar is known");
    let err = status.expect_err("the sidecar cannot listen on the metrics port");
    assert!(err.contains("cannot listen"), "{err}");
    gw.shutdown().await;
}

/// A sidecar's issued credential is stored as `sidecar-NAME`: creating the sidecar while an
/// uploaded credential has that name is refused, instead of replacing what that credential's
/// users present. Two creates of one name at once: one 201, the other 409, never a 500.
#[tokio::test]
async fn a_sidecar_does_not_replace_an_uploaded_credential_or_race_its_name() {
    let s = setup("").await;
    let leaf = s.h.server_ca.leaf(LeafSpec::server("zz.test"));
    s.api
        .ok(
            Method::POST,
            "/api/v1/credentials",
            Some(
                json!({"name": "sidecar-zz", "cert_pem": leaf.chain_pem, "key_pem": leaf.key_pem}),
            ),
        )
        .await;
    let spec = |name: &str| {
        json!({"name": name, "listen": "127.0.0.1:0", "upstream": s.origin.url(),
            "issue": {"common_name": "billing", "lifetime": "1h"}})
    };
    let (status, v) = s.api.post("/api/v1/sidecars", spec("zz")).await;
    assert_eq!(status, 409, "{v}");
    // Nor by a replacement that asks for an issued credential, nor by an import.
    let mut plain = spec("zz");
    plain.as_object_mut().unwrap().remove("issue");
    s.api
        .ok(Method::POST, "/api/v1/sidecars", Some(plain))
        .await;
    let (status, v) = s
        .api
        .call(Method::PUT, "/api/v1/sidecars/zz", Some(spec("zz")))
        .await;
    assert_eq!(status, 409, "{v}");
    s.api
        .ok(
            Method::POST,
            "/api/v1/credentials",
            Some(
                json!({"name": "sidecar-imp", "cert_pem": leaf.chain_pem, "key_pem": leaf.key_pem}),
            ),
        )
        .await;
    let text = format!(
        "[[sidecars]]\nname = \"imp\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{}\"\n[sidecars.issue]\ncommon_name = \"imp\"\n",
        s.origin.url()
    );
    let (status, body) = s
        .api
        .client
        .call(
            Method::POST,
            "/api/v1/import",
            Some(("application/toml", text.into_bytes())),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    let creds = s.api.ok(Method::GET, "/api/v1/credentials", None).await;
    let fingerprint = symbolon::pki::fingerprint_sha256(&leaf.der);
    assert!(creds.to_string().contains(&fingerprint), "{creds}");
    let (a, b) = tokio::join!(
        s.api.post("/api/v1/sidecars", spec("twin")),
        s.api.post("/api/v1/sidecars", spec("twin"))
    );
    let mut statuses = [a.0.as_u16(), b.0.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.1, b.1);
}
