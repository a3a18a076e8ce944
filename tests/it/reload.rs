//! Live changes: a trust-bundle swap (by file change or explicit reload) reaches new handshakes
//! and ends the open connections it no longer trusts; a broken file changes nothing and blocks
//! no admin write.

use std::time::Duration;

use crate::support::*;

struct Setup {
    h: Harness,
    gw: symbolon::gateway::Gateway,
    ca_a: TestCa,
    ca_b: TestCa,
}

async fn setup() -> Setup {
    let h = Harness::new();
    let ca_a = TestCa::root("Old CA");
    let ca_b = TestCa::root("New CA");
    h.write("bundle.pem", &ca_a.pem());
    let body = format!(
        "{}{}",
        h.domain("api.test", Some("bundle.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    Setup { h, gw, ca_a, ca_b }
}

async fn wait_for_reload(rx: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("no reload within 10 s")
        .unwrap();
}

#[tokio::test]
async fn bundle_file_change_swaps_trust_and_ends_open_connections_it_no_longer_trusts() {
    let s = setup().await;
    let client_a = s.h.client().cert(&s.ca_a.leaf(LeafSpec::client("a")));
    let client_b = s.h.client().cert(&s.ca_b.leaf(LeafSpec::client("b")));
    for spec in [client_a.clone(), client_a.clone().h2()] {
        let mut old = Conn::open(s.gw.tls_addr(), "api.test", &spec)
            .await
            .unwrap();
        assert_eq!(old.get("/").await.unwrap().status, 200);
        assert!(
            get(s.gw.tls_addr(), "api.test", &client_b, "/")
                .await
                .is_err()
        );

        let mut reloads = s.gw.reloads();
        s.h.write("bundle.pem", &s.ca_b.pem());
        wait_for_reload(&mut reloads).await;

        assert_eq!(
            get(s.gw.tls_addr(), "api.test", &client_b, "/")
                .await
                .unwrap()
                .status,
            200
        );
        let err = get(s.gw.tls_addr(), "api.test", &client_a, "/")
            .await
            .unwrap_err();
        assert!(err.contains("UnknownCA"), "{err}");
        // The connection established under the old trust ends (HTTP/1 closed, HTTP/2 GOAWAY).
        assert!(
            old.get("/").await.is_err(),
            "the old trust's connection stayed open"
        );

        let mut reloads = s.gw.reloads();
        s.h.write("bundle.pem", &s.ca_a.pem());
        wait_for_reload(&mut reloads).await;
    }
}

#[tokio::test]
async fn broken_files_are_refused_and_the_old_config_stays() {
    let s = setup().await;
    let client_a = s.h.client().cert(&s.ca_a.leaf(LeafSpec::client("a")));
    let leaf = s.ca_a.leaf(LeafSpec::client("not-a-ca"));
    let cases = [
        (
            "garbage",
            "this is not PEM".to_string(),
            "no PEM certificate",
        ),
        (
            "truncated",
            s.ca_b.pem()[..300].to_string(),
            "not valid PEM",
        ),
        (
            "leaf in bundle",
            leaf.cert_pem.clone(),
            "not a CA certificate",
        ),
        ("private key", leaf.key_pem.clone(), "private key"),
    ];
    for (name, contents, want) in cases {
        std::fs::write(s.h.path("bundle.pem"), contents).unwrap();
        let err = s.gw.reload().await.expect_err(name).to_string();
        assert!(err.contains(want), "{name}: {err}");
        assert!(
            err.contains("bundle.pem"),
            "{name}: the error must name the file: {err}"
        );
        assert_eq!(
            get(s.gw.tls_addr(), "api.test", &client_a, "/")
                .await
                .unwrap()
                .status,
            200,
            "{name}"
        );
    }
    // A broken config file is refused too.
    let config = std::fs::read_to_string(s.h.path("symbolon.toml")).unwrap();
    std::fs::write(s.h.path("symbolon.toml"), format!("{config}\nbogus = 1\n")).unwrap();
    let err = s.gw.reload().await.unwrap_err().to_string();
    assert!(err.contains("bogus"), "{err}");
    assert_eq!(
        get(s.gw.tls_addr(), "api.test", &client_a, "/")
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn config_file_change_applies_routes_live() {
    let s = setup().await;
    let client_a = s.h.client().cert(&s.ca_a.leaf(LeafSpec::client("a")));
    let mut conn = Conn::open(s.gw.tls_addr(), "api.test", &client_a)
        .await
        .unwrap();
    assert_eq!(conn.get("/").await.unwrap().status, 200);
    let mut reloads = s.gw.reloads();
    s.h.config(&s.h.domain("api.test", Some("bundle.pem"), "require"));
    wait_for_reload(&mut reloads).await;
    // Same connection, new routing table: no route any more.
    assert_eq!(conn.get("/").await.unwrap().status, 404);
}

#[tokio::test]
async fn a_session_resumed_after_a_trust_change_is_checked_again() {
    let s = setup().await;
    let config =
        s.h.client()
            .cert(&s.ca_a.leaf(LeafSpec::client("a")))
            .config();
    let mut first = Conn::open_with(s.gw.tls_addr(), "api.test", config.clone())
        .await
        .unwrap();
    assert_eq!(first.get("/").await.unwrap().status, 200);
    s.h.write("bundle.pem", &s.ca_b.pem());
    s.gw.reload().await.unwrap();
    // The ticket from before the change (the ticket key survives reloads) may resume at the TLS
    // level; the chain is checked against the new trust either way and the connection refused.
    let result = async {
        let mut c = Conn::open_with(s.gw.tls_addr(), "api.test", config).await?;
        c.get("/").await
    }
    .await;
    assert!(
        result.is_err(),
        "a resumed session bypassed the new trust bundle"
    );
}

#[tokio::test]
async fn a_broken_file_on_disk_does_not_block_admin_writes_or_revocation() {
    let h = Harness::new();
    let ca = TestCa::root("Steady CA");
    h.write("ca.pem", &ca.pem());
    let body = format!(
        "{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("ca.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let api = crate::admin::Api {
        client: h.admin_client(&gw, None),
    };
    let victim = ca.leaf(LeafSpec::client("victim"));
    assert_eq!(
        get(gw.tls_addr(), "api.test", &h.client().cert(&victim), "/")
            .await
            .unwrap()
            .status,
        200
    );
    // Someone saves a broken ca.pem: the reload is refused and the old trust stays…
    std::fs::write(h.path("ca.pem"), "-----BEGIN CERTIFICATE-----\nbroken").unwrap();
    assert!(gw.reload().await.is_err());
    // …and admin writes go on, built from the files as last applied.
    let (status, v) = api
        .post("/api/v1/policies", serde_json::json!({"name": "unrelated"}))
        .await;
    assert_eq!(status.as_u16(), 201, "{v}");
    let (status, v) = api
        .post(
            "/api/v1/revocations",
            serde_json::json!({"certificate_pem": victim.cert_pem, "reason": "keyCompromise"}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{v}");
    let err = get(gw.tls_addr(), "api.test", &h.client().cert(&victim), "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    // Fixing the file and reloading applies it.
    h.write("ca.pem", &ca.pem());
    gw.reload().await.unwrap();
}

#[tokio::test]
async fn admin_tokens_admin_certificates_and_the_ca_section_reload_live() {
    let h = Harness::new();
    symbolon::ca::init(&h.path("ca"), "p256", b"reload ca", None).unwrap();
    h.write("ca-pass", "reload ca");
    let ca_section =
        "[ca]\ndir = \"ca\"\npassphrase_file = \"ca-pass\"\ncrl_url = \"http://old.test/crl\"\n\n";
    let admin = h.admin_section();
    let body = format!("{ca_section}{admin}{}", route_all("builtin:echo"));
    let gw = h.start(&body).await;
    let by_token = crate::admin::Api {
        client: h.admin_client(&gw, Some(ADMIN_TOKEN)),
    };
    let by_cert = crate::admin::Api {
        client: h.admin_client(&gw, None),
    };
    assert!(by_token.get("/api/v1/policies").await.0.is_success());
    // A new token replaces the old one in the file: after the reload, the old one is refused.
    let fresh = "fresh-token-9876543210";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, fresh.as_bytes());
    let config = std::fs::read_to_string(h.path("symbolon.toml")).unwrap();
    let start = config.find("sha256 = \"").unwrap() + 10;
    let old_sha = &config[start..start + 64];
    let edited = config
        .replace(old_sha, &symbolon::pki::hex(digest.as_ref()))
        .replace("http://old.test/crl", "http://new.test/crl")
        .replace(
            "listen = \"127.0.0.1:0\"\nmetrics",
            "listen = \"127.0.0.1:1\"\nmetrics",
        );
    h.write("symbolon.toml", &edited);
    gw.reload().await.unwrap();
    assert_eq!(by_token.get("/api/v1/policies").await.0.as_u16(), 401);
    let new_token = crate::admin::Api {
        client: h.admin_client(&gw, Some(fresh)),
    };
    assert!(new_token.get("/api/v1/policies").await.0.is_success());
    // [ca] changed: what the CA issues now carries the new CRL URL.
    let der = crate::issuance::signed_by_api(&by_cert, "after-reload").await;
    assert!(
        String::from_utf8_lossy(der.as_ref()).contains("http://new.test/crl"),
        "the CRL Distribution Point is the new one"
    );
    // The admin certificate can be revoked; it is refused at once, on its open connection too.
    let admin_pem = std::fs::read_to_string(h.path("admin.crt")).unwrap();
    let (status, v) = new_token
        .post(
            "/api/v1/revocations",
            serde_json::json!({"certificate_pem": admin_pem}),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{v}");
    let (status, v) = by_cert.get("/api/v1/policies").await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].as_str().unwrap_or("")),
        (401, "certificate_revoked"),
        "{v}"
    );
    // The admin listener's own certificate is replaced by a reload too.
    let renewed = h.server_ca.leaf(LeafSpec::server("localhost"));
    h.write("admin-server.crt", &renewed.chain_pem);
    h.write("admin-server.key", &renewed.key_pem);
    gw.reload().await.unwrap();
    let mut tls =
        crate::support::client::raw_tls(gw.admin_addr().unwrap(), "localhost", &h.client())
            .await
            .unwrap();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented, renewed.der);
    use tokio::io::AsyncWriteExt as _;
    let _ = tls.shutdown().await;
}

#[tokio::test]
async fn a_kubernetes_style_secret_swap_is_noticed() {
    // A mounted Secret: files are symlinks through `..data`, which is swapped atomically.
    let h = Harness::new();
    let ca_a = TestCa::root("K8s Old CA");
    let ca_b = TestCa::root("K8s New CA");
    let secret = h.path("secret");
    std::fs::create_dir_all(secret.join("..2026_11_30_a")).unwrap();
    std::fs::write(secret.join("..2026_11_30_a/ca.pem"), ca_a.pem()).unwrap();
    std::os::unix::fs::symlink("..2026_11_30_a", secret.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/ca.pem", secret.join("ca.pem")).unwrap();
    let body = format!(
        "{}{}",
        h.domain("api.test", Some("secret/ca.pem"), "require"),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let b = h.client().cert(&ca_b.leaf(LeafSpec::client("b")));
    assert!(get(gw.tls_addr(), "api.test", &b, "/").await.is_err());
    let mut reloads = gw.reloads();
    std::fs::create_dir_all(secret.join("..2026_11_30_b")).unwrap();
    std::fs::write(secret.join("..2026_11_30_b/ca.pem"), ca_b.pem()).unwrap();
    std::os::unix::fs::symlink("..2026_11_30_b", secret.join("..data_tmp")).unwrap();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    wait_for_reload(&mut reloads).await;
    assert_eq!(
        get(gw.tls_addr(), "api.test", &b, "/")
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn a_new_admin_ca_refuses_the_old_admin_certificates_on_open_connections() {
    let h = Harness::new();
    let body = format!("{}{}", h.admin_section(), route_all("builtin:echo"));
    let gw = h.start(&body).await;
    let pem = std::fs::read_to_string(h.path("admin.crt")).unwrap();
    let admin = crate::support::pki::Leaf {
        der: symbolon::pki::parse_certs(pem.as_bytes(), std::path::Path::new("x")).unwrap()[0]
            .clone(),
        cert_pem: pem.clone(),
        chain_pem: pem,
        key_pem: std::fs::read_to_string(h.path("admin.key")).unwrap(),
    };
    let mut open = Conn::open(
        gw.admin_addr().unwrap(),
        "localhost",
        &h.client().cert(&admin),
    )
    .await
    .unwrap();
    assert_eq!(open.get("/api/v1/policies").await.unwrap().status, 200);
    h.write("admin-ca.pem", &TestCa::root("Next Admin CA").pem());
    gw.reload().await.unwrap();
    let r = open.get("/api/v1/policies").await.unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "admin_ca_changed");
}

#[tokio::test]
async fn a_ca_rotated_in_place_is_loaded_again() {
    let h = Harness::new();
    symbolon::ca::init(&h.path("ca"), "p256", b"rotate", None).unwrap();
    symbolon::ca::init(&h.path("next"), "p256", b"rotate", None).unwrap();
    h.write("ca-pass", "rotate");
    let body = format!(
        "[ca]\ndir = \"ca\"\npassphrase_file = \"ca-pass\"\n\n{}{}",
        h.admin_section(),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    let api = crate::admin::Api {
        client: h.admin_client(&gw, None),
    };
    for f in ["root.pem", "intermediate.pem", "intermediate.key"] {
        std::fs::copy(h.path(&format!("next/{f}")), h.path(&format!("ca/{f}"))).unwrap();
    }
    gw.reload().await.unwrap();
    let der = crate::issuance::signed_by_api(&api, "after-rotation").await;
    let next = symbolon::pki::load_certs(&h.path("next/intermediate.pem")).unwrap()[0].clone();
    assert!(
        symbolon::pki::signed_by(&der, &next),
        "signed by the rotated intermediate"
    );
}
