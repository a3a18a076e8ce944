//! The admin API through real HTTPS against a running gateway: authentication, every resource's
//! happy path and bad inputs, live apply on the data plane, the audit log, OpenAPI, export/import.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use symbolon::client::AdminClient;

use crate::support::*;

pub struct Api {
    pub client: AdminClient,
}

impl Api {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let (status, bytes) = self.client.call(method, path, body).await.unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }
}

pub fn code(v: &Value) -> &str {
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {v}"))
}

struct Setup {
    h: Harness,
    gw: symbolon::gateway::Gateway,
    api: Api,
}

/// A gateway whose config file has only the admin section; everything else comes via the API.
async fn setup() -> Setup {
    let h = Harness::new();
    let body = h.admin_section();
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    Setup { h, gw, api }
}

/// Creates domain api.test (server cert from the harness CA) with `bundle` attached, and a
/// route to the built-in echo.
async fn domain_and_route(s: &Setup, bundle: &str) {
    let leaf = s.h.server_ca.leaf(LeafSpec::server("api.test"));
    s.api
        .ok(Method::POST, "/api/v1/domains", Some(json!({"hostname": "api.test", "cert_pem": leaf.chain_pem, "key_pem": leaf.key_pem, "bundle": bundle})))
        .await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/routes",
            Some(json!({"name": "echo", "path_prefix": "/", "upstream": "builtin:echo"})),
        )
        .await;
}

#[tokio::test]
async fn no_admin_credential_gets_401_and_no_data() {
    let s = setup().await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(json!({"name": "secret-bundle", "pem": TestCa::root("x").pem()})),
        )
        .await;
    let anonymous = Api {
        client: s.h.admin_client(&s.gw, Some("wrong-token")),
    };
    for path in [
        "/api/v1/mtls/bundles",
        "/api/v1/openapi.json",
        "/api/v1/audit",
        "/api/v1/export",
        "/api/v1/domains",
    ] {
        let (status, v) = anonymous.get(path).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(code(&v), "unauthorized");
        assert!(!v.to_string().contains("secret-bundle"));
    }
    let (status, _) = anonymous
        .post("/api/v1/mtls/bundles", json!({"name": "x", "pem": ""}))
        .await;
    assert_eq!(status, 401);
    // The token works.
    let with_token = Api {
        client: s.h.admin_client(&s.gw, Some(ADMIN_TOKEN)),
    };
    let (status, v) = with_token.get("/api/v1/mtls/bundles").await;
    assert_eq!(status, 200);
    assert_eq!(v[0]["name"], "secret-bundle");
    // A client certificate from another CA does not get in either.
    let stranger = TestCa::root("Not the admin CA").leaf(LeafSpec::client("admin"));
    s.h.write("stranger.crt", &stranger.chain_pem);
    s.h.write("stranger.key", &stranger.key_pem);
    let server = format!("https://localhost:{}", s.gw.admin_addr().unwrap().port());
    let client = AdminClient::new(symbolon::client::ClientOptions {
        server: &server,
        cacert: &s.h.path("server-ca.pem"),
        cert: Some(&s.h.path("stranger.crt")),
        key: Some(&s.h.path("stranger.key")),
        token: None,
    })
    .unwrap();
    match client.call(Method::GET, "/api/v1/mtls/bundles", None).await {
        Ok((status, _)) => assert_eq!(status, 401),
        Err(e) => assert!(
            e.to_string().contains("UnknownCA") || e.to_string().contains("alert"),
            "{e}"
        ),
    }
}

#[tokio::test]
async fn bundle_changes_apply_live_on_the_gateway() {
    let s = setup().await;
    let ca_a = TestCa::root("Partner A");
    let ca_b = TestCa::root("Partner B");
    let v = s
        .api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(json!({"name": "partners", "pem": ca_a.pem(), "require": true})),
        )
        .await;
    assert_eq!(v["certificates"][0]["subject"], "CN=Partner A");
    assert_eq!(
        v["certificates"][0]["fingerprint_sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert!(
        v["certificates"][0]["not_after"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
    domain_and_route(&s, "partners").await;
    let client_a = s.h.client().cert(&ca_a.leaf(LeafSpec::client("a")));
    let client_b = s.h.client().cert(&ca_b.leaf(LeafSpec::client("b")));
    let addr = s.gw.tls_addr();
    let mut kept = Conn::open(addr, "api.test", &client_a).await.unwrap();
    assert_eq!(kept.get("/").await.unwrap().status, 200);
    assert!(
        get(addr, "api.test", &client_b, "/")
            .await
            .unwrap_err()
            .contains("UnknownCA")
    );

    // Replace the PEM: B is accepted at once, A rejected; the open connection stays.
    s.api
        .ok(
            Method::PUT,
            "/api/v1/mtls/bundles/partners/pem",
            Some(json!({"pem": ca_b.pem()})),
        )
        .await;
    assert_eq!(
        get(addr, "api.test", &client_b, "/").await.unwrap().status,
        200
    );
    assert!(
        get(addr, "api.test", &client_a, "/")
            .await
            .unwrap_err()
            .contains("UnknownCA")
    );
    // A connection the new trust refuses ends.
    assert!(
        kept.get("/").await.is_err(),
        "an untrusted connection stayed open"
    );

    // And back.
    s.api
        .ok(
            Method::PUT,
            "/api/v1/mtls/bundles/partners/pem",
            Some(json!({"pem": ca_a.pem()})),
        )
        .await;
    assert_eq!(
        get(addr, "api.test", &client_a, "/").await.unwrap().status,
        200
    );

    // Toggle require off: B connects and the failure is recorded.
    let v = s
        .api
        .ok(
            Method::PATCH,
            "/api/v1/mtls/bundles/partners",
            Some(json!({"require": false, "name": "partners-v2"})),
        )
        .await;
    assert_eq!(v["name"], "partners-v2");
    assert_eq!(v["domains"][0], "api.test");
    let r = get(addr, "api.test", &client_b, "/").await.unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "FAILED:unknown_ca");
    let d = s
        .api
        .ok(Method::GET, "/api/v1/domains/api.test", None)
        .await;
    assert_eq!(d["mtls"], "optional");
    assert!(d.get("key_pem").is_none() && !d.to_string().contains("PRIVATE KEY"));

    // Delete while attached: 409; detach, then delete.
    let (status, v) = s
        .api
        .call(Method::DELETE, "/api/v1/mtls/bundles/partners-v2", None)
        .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(code(&v), "in_use");
    s.api
        .ok(
            Method::DELETE,
            "/api/v1/mtls/bundles/partners-v2/domains/api.test",
            None,
        )
        .await;
    let (status, _) = s
        .api
        .call(Method::DELETE, "/api/v1/mtls/bundles/partners-v2", None)
        .await;
    assert_eq!(status, 204);
    // The domain now has no bundle: mTLS is off and anyone connects.
    let r = get(addr, "api.test", &s.h.client(), "/").await.unwrap();
    assert_eq!(r.seen("x-client-verify").unwrap(), "NONE");
    // Attach again through the attach endpoint.
    s.api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(json!({"name": "again", "pem": ca_a.pem(), "require": true})),
        )
        .await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles/again/domains",
            Some(json!({"domain": "api.test"})),
        )
        .await;
    assert!(get(addr, "api.test", &s.h.client(), "/").await.is_err());
}

#[tokio::test]
async fn bad_inputs_each_get_a_clear_4xx_and_change_nothing() {
    let s = setup().await;
    let ca = TestCa::root("Good CA");
    let leaf = ca.leaf(LeafSpec::client("leaf"));
    s.api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(json!({"name": "good", "pem": ca.pem()})),
        )
        .await;
    let old = TestCa::root_until(
        "Old CA",
        time::OffsetDateTime::now_utc() - time::Duration::days(1),
    );
    let cases = [
        (
            json!({"name": "b1", "pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}),
            422,
            "malformed_pem",
        ),
        (
            json!({"name": "b2", "pem": leaf.key_pem}),
            422,
            "private_key_in_certificate",
        ),
        (
            json!({"name": "b3", "pem": format!("{}{}", ca.pem(), leaf.cert_pem)}),
            422,
            "not_a_ca",
        ),
        (json!({"name": "b4", "pem": old.pem()}), 422, "expired_ca"),
        (
            json!({"name": "good", "pem": ca.pem()}),
            409,
            "duplicate_name",
        ),
        (
            json!({"name": "b5", "pem": "x".repeat(70_000)}),
            413,
            "too_large",
        ),
        (
            json!({"name": "bad name!", "pem": ca.pem()}),
            422,
            "bad_name",
        ),
        (json!({"pem": ca.pem()}), 400, "bad_request"),
    ];
    for (body, status, want) in cases {
        let (got, v) = s.api.post("/api/v1/mtls/bundles", body).await;
        assert_eq!(got.as_u16(), status, "{want}: {v}");
        assert_eq!(code(&v), want, "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        assert!(
            !v["error"]["hint"].as_str().unwrap().is_empty(),
            "{want} has no hint: {v}"
        );
    }
    // Key and certificate that do not match.
    let server = s.h.server_ca.leaf(LeafSpec::server("api.test"));
    let other = s.h.server_ca.leaf(LeafSpec::server("api.test"));
    let (status, v) = s
        .api
        .post(
            "/api/v1/domains",
            json!({"hostname": "api.test", "cert_pem": server.chain_pem, "key_pem": other.key_pem}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(code(&v), "key_mismatch");
    // Unknown ids.
    for path in [
        "/api/v1/mtls/bundles/nope",
        "/api/v1/domains/nope",
        "/api/v1/credentials/nope",
        "/api/v1/routes/nope",
    ] {
        let (status, v) = s.api.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(code(&v), "not_found");
    }
    // A bad upstream URL.
    let (status, v) = s
        .api
        .post(
            "/api/v1/routes",
            json!({"name": "r", "upstream": "http//x"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(code(&v), "bad_route");
    // Nothing of the above was applied.
    let v = s.api.ok(Method::GET, "/api/v1/mtls/bundles", None).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(
        s.api.ok(Method::GET, "/api/v1/domains", None).await,
        json!([])
    );
    assert_eq!(
        s.api.ok(Method::GET, "/api/v1/routes", None).await,
        json!([])
    );
}

#[tokio::test]
async fn an_invalid_change_is_refused_whole() {
    // The config file declares api.test; the API cannot add a second api.test.
    let h = Harness::new();
    let body = format!("{}{}", h.admin_section(), h.domain("api.test", None, "off"));
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    let leaf = h.server_ca.leaf(LeafSpec::server("api.test"));
    let (status, v) = api
        .post(
            "/api/v1/domains",
            json!({"hostname": "api.test", "cert_pem": leaf.chain_pem, "key_pem": leaf.key_pem}),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(code(&v), "invalid_change");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was changed")
    );
    assert_eq!(
        api.ok(Method::GET, "/api/v1/domains", None).await,
        json!([])
    );
    assert_eq!(api.ok(Method::GET, "/api/v1/audit", None).await, json!([]));
}

#[tokio::test]
async fn credentials_and_routes() {
    let s = setup().await;
    let leaf = s.h.server_ca.leaf(LeafSpec::server("api.test"));
    s.api
        .ok(Method::POST, "/api/v1/domains", Some(json!({"hostname": "api.test", "cert_pem": leaf.chain_pem, "key_pem": leaf.key_pem, "mtls": "off"})))
        .await;
    let cred = TestCa::root("Upstream CA").leaf(LeafSpec::client("gateway-to-origin"));
    let v = s
        .api
        .ok(
            Method::POST,
            "/api/v1/credentials",
            Some(json!({"name": "origin", "cert_pem": cred.chain_pem, "key_pem": cred.key_pem})),
        )
        .await;
    assert!(
        v["subject"]
            .as_str()
            .unwrap()
            .contains("CN=gateway-to-origin"),
        "{v}"
    );
    assert_eq!(v["issuer"], "CN=Upstream CA");
    assert!(v["not_after"].as_str().unwrap().starts_with("20"));
    let list = s.api.ok(Method::GET, "/api/v1/credentials", None).await;
    assert!(
        !list.to_string().contains("PRIVATE KEY"),
        "a key was returned: {list}"
    );
    let (status, v) = s
        .api
        .post(
            "/api/v1/credentials",
            json!({"name": "origin", "cert_pem": cred.chain_pem, "key_pem": cred.key_pem}),
        )
        .await;
    assert_eq!((status.as_u16(), code(&v)), (409, "duplicate_name"));

    let addr = s.gw.tls_addr();
    assert_eq!(
        get(addr, "api.test", &s.h.client(), "/orders/1")
            .await
            .unwrap()
            .status,
        404
    );
    // A credential only makes sense towards an https:// upstream.
    let (status, v) = s
        .api
        .post("/api/v1/routes", json!({"name": "orders", "host": "api.test", "path_prefix": "/orders", "upstream": "builtin:echo", "credential": "origin"}))
        .await;
    assert_eq!(status.as_u16(), 422, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("https://"),
        "{v}"
    );
    let origin_ca = TestCa::root("Origin CA");
    s.api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(json!({"name": "origin-ca", "pem": origin_ca.pem()})),
        )
        .await;
    let v = s.api
        .ok(Method::POST, "/api/v1/routes", Some(json!({"name": "to-origin", "host": "api.test", "path_prefix": "/origin", "upstream": "https://127.0.0.1:9", "credential": "origin", "upstream_tls": {"trust_bundle": "origin-ca", "server_name": "origin.test"}})))
        .await;
    assert_eq!(v["credential"], "origin");
    assert_eq!(
        v["upstream_tls"],
        json!({"trust_bundle": "origin-ca", "server_name": "origin.test", "require_mtls": false})
    );
    let (status, v) = s
        .api
        .call(Method::DELETE, "/api/v1/mtls/bundles/origin-ca", None)
        .await;
    assert_eq!((status.as_u16(), code(&v)), (409, "in_use"), "{v}");
    let v = s.api
        .ok(Method::POST, "/api/v1/routes", Some(json!({"name": "orders", "host": "api.test", "path_prefix": "/orders", "upstream": "builtin:echo", "strip_prefix": true})))
        .await;
    let route_id = v["id"].as_str().unwrap();
    assert_eq!(
        s.api
            .ok(Method::GET, &format!("/api/v1/routes/{route_id}"), None)
            .await["name"],
        "orders"
    );
    let r = get(addr, "api.test", &s.h.client(), "/orders/1")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/1");
    s.api
        .ok(
            Method::PATCH,
            "/api/v1/routes/orders",
            Some(json!({"strip_prefix": false})),
        )
        .await;
    assert_eq!(
        get(addr, "api.test", &s.h.client(), "/orders/1")
            .await
            .unwrap()
            .json()["path"],
        "/orders/1"
    );
    let (status, v) = s
        .api
        .call(Method::DELETE, "/api/v1/credentials/origin", None)
        .await;
    assert_eq!((status.as_u16(), code(&v)), (409, "in_use"));
    assert_eq!(
        s.api
            .call(Method::DELETE, "/api/v1/routes/to-origin", None)
            .await
            .0,
        204
    );
    assert_eq!(
        s.api
            .call(Method::DELETE, "/api/v1/routes/orders", None)
            .await
            .0,
        204
    );
    assert_eq!(
        get(addr, "api.test", &s.h.client(), "/orders/1")
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        s.api
            .call(Method::DELETE, "/api/v1/credentials/origin", None)
            .await
            .0,
        204
    );
    assert_eq!(
        s.api
            .call(Method::DELETE, "/api/v1/domains/api.test", None)
            .await
            .0,
        204
    );
    assert!(get(addr, "api.test", &s.h.client(), "/").await.is_err());
}

#[tokio::test]
async fn openapi_document_lists_every_endpoint() {
    let s = setup().await;
    let doc = s.api.ok(Method::GET, "/api/v1/openapi.json", None).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let want = [
        ("/api/v1/mtls/bundles", &["get", "post"][..]),
        ("/api/v1/mtls/bundles/{id}", &["get", "patch", "delete"]),
        ("/api/v1/mtls/bundles/{id}/pem", &["put"]),
        ("/api/v1/mtls/bundles/{id}/domains", &["post"]),
        ("/api/v1/mtls/bundles/{id}/domains/{domain}", &["delete"]),
        ("/api/v1/domains", &["get", "post"]),
        ("/api/v1/domains/{id}", &["get", "patch", "delete"]),
        ("/api/v1/credentials", &["get", "post"]),
        ("/api/v1/credentials/{id}", &["get", "delete"]),
        ("/api/v1/routes", &["get", "post"]),
        ("/api/v1/routes/{id}", &["get", "patch", "delete"]),
        ("/api/v1/audit", &["get"]),
        ("/api/v1/export", &["get"]),
        ("/api/v1/import", &["post"]),
        ("/api/v1/policies", &["get", "post"]),
        ("/api/v1/policies/{id}", &["get", "put", "delete"]),
        ("/api/v1/identities", &["get", "post"]),
        ("/api/v1/identities/{id}", &["get", "patch", "delete"]),
        ("/api/v1/identities/{id}/usage", &["get"]),
        ("/api/v1/self-service/identities", &["post"]),
        ("/api/v1/self-service/challenge", &["post"]),
        ("/api/v1/authz/global-rules", &["get", "put"]),
        ("/api/v1/transition-report", &["get"]),
        ("/api/v1/verify", &["post"]),
        ("/api/v1/revocations", &["get", "post"]),
        ("/api/v1/expiring", &["get"]),
        ("/api/v1/ca/sign", &["post"]),
        ("/api/v1/ca/enrollment-tokens", &["get", "post"]),
        ("/api/v1/ca/enrollment-tokens/{id}", &["delete"]),
        ("/api/v1/ca/issued", &["get"]),
        ("/api/v1/sidecars", &["get", "post"]),
        ("/api/v1/sidecars/{name}", &["get", "put", "delete"]),
        ("/api/v1/sidecars/{name}/rotate", &["post"]),
    ];
    for (path, methods) in want {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing");
        }
    }
    assert_eq!(
        paths.len(),
        want.len(),
        "the document lists endpoints the API does not have"
    );
    // Every documented path answers (not the router's 404).
    for (path, _) in want {
        let concrete = path.replace("{id}", "x").replace("{domain}", "y");
        let (status, v) = s.api.get(&concrete).await;
        assert!(
            status != 404
                || code(&v) == "not_found"
                    && !v["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("no such endpoint"),
            "{path}: {status} {v}"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "BundleView",
        "DomainView",
        "CredentialView",
        "RouteView",
        "ErrorBody",
    ] {
        assert!(schemas.contains_key(name), "{name} schema missing");
    }
    assert!(!schemas["DomainView"].to_string().contains("key_pem"));
}

#[tokio::test]
async fn audit_records_who_did_what() {
    let s = setup().await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(json!({"name": "a", "pem": TestCa::root("A").pem()})),
        )
        .await;
    let by_token = Api {
        client: s.h.admin_client(&s.gw, Some(ADMIN_TOKEN)),
    };
    by_token
        .ok(
            Method::PATCH,
            "/api/v1/mtls/bundles/a",
            Some(json!({"require": true})),
        )
        .await;
    let log = s.api.ok(Method::GET, "/api/v1/audit", None).await;
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["action"], "bundle.update");
    assert_eq!(log[0]["actor"], "token:ci");
    assert_eq!(log[0]["detail"], "require false -> true");
    assert_eq!(log[1]["action"], "bundle.create");
    let admin_fp = symbolon::pki::fingerprint_sha256(
        &symbolon::pki::load_certs(&s.h.path("admin.crt")).unwrap()[0],
    );
    assert_eq!(log[1]["actor"], format!("cert:{admin_fp}"));
    assert!(log[1]["at"].as_str().unwrap().starts_with("20"));
}

#[tokio::test]
async fn export_and_import_are_idempotent() {
    let s = setup().await;
    let ca = TestCa::root("Partner");
    s.api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(json!({"name": "partners", "pem": ca.pem(), "require": true})),
        )
        .await;
    domain_and_route(&s, "partners").await;
    let (status, exported) = s.api.get("/api/v1/export").await;
    assert_eq!(status, 200);
    let text = exported.as_str().unwrap().to_string();
    assert!(
        text.contains("[[bundles]]") && text.contains("key_file") && !text.contains("PRIVATE KEY")
    );
    // Re-importing the export changes nothing (keys stay as they are).
    let (status, report) = s
        .api
        .client
        .call(
            Method::POST,
            "/api/v1/import",
            Some(("application/toml", text.clone().into_bytes())),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let report: Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["created"], json!([]));
    assert_eq!(report["updated"], json!([]));
    assert_eq!(report["unchanged"].as_array().unwrap().len(), 3, "{report}");

    // Into an empty gateway: without the key it is refused whole, with it everything is created.
    let t = setup().await;
    let (status, v) = t
        .api
        .client
        .call(
            Method::POST,
            "/api/v1/import",
            Some(("application/toml", text.clone().into_bytes())),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&v));
    assert_eq!(
        t.api.ok(Method::GET, "/api/v1/mtls/bundles", None).await,
        json!([])
    );
    let key = s.h.path("api.test.key");
    std::fs::write(&key, "").ok();
    // (The harness did not keep the domain's key: take it from the first gateway's store.)
    let st = s.gw.control().store().state().await.unwrap();
    let key_pem = st.domains[0].key_pem.clone();
    let with_key = text.replace(
        "key_file = \"keys/api.test.key\"",
        &format!("key_pem = \"\"\"{key_pem}\"\"\""),
    );
    let v = t
        .api
        .client
        .call(
            Method::POST,
            "/api/v1/import",
            Some(("application/toml", with_key.clone().into_bytes())),
        )
        .await
        .unwrap();
    assert_eq!(v.0, 200, "{}", String::from_utf8_lossy(&v.1));
    let report: Value = serde_json::from_slice(&v.1).unwrap();
    assert_eq!(report["created"].as_array().unwrap().len(), 3, "{report}");
    let again = t
        .api
        .client
        .call(
            Method::POST,
            "/api/v1/import",
            Some(("application/toml", with_key.into_bytes())),
        )
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&again.1).unwrap();
    assert_eq!(report["unchanged"].as_array().unwrap().len(), 3, "{report}");
    // And the imported configuration serves.
    // (The imported server certificate was issued by the first harness's server CA.)
    let client = s.h.client().cert(&ca.leaf(LeafSpec::client("p")));
    assert_eq!(
        get(t.gw.tls_addr(), "api.test", &client, "/")
            .await
            .unwrap()
            .status,
        200
    );
}

/// `admin::router()` is the whole API, authentication included: it can be driven without a
/// socket, as axum's own examples do, and a write through it is live on the gateway.
#[tokio::test]
async fn the_router_answers_without_a_socket() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let s = setup().await;
    let call = |method: Method, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = req
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .unwrap();
        let router = symbolon::admin::router(s.gw.control().clone(), 1 << 20);
        async move {
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (status, v) = call(Method::GET, "/api/v1/mtls/bundles", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    let (status, v) = call(Method::GET, "/api/v1/mtls/bundles", Some(ADMIN_TOKEN), None).await;
    assert_eq!((status, v), (StatusCode::OK, json!([])));
    let pem = s.h.server_ca.pem();
    let (status, v) = call(
        Method::POST,
        "/api/v1/mtls/bundles",
        Some(ADMIN_TOKEN),
        Some(json!({"name": "partners", "pem": pem})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    // The same store and change path as the listener: the API over TLS sees it.
    let listed = s.api.ok(Method::GET, "/api/v1/mtls/bundles", None).await;
    assert_eq!(listed[0]["name"], "partners", "{listed}");
    let (status, v) = call(
        Method::POST,
        "/api/v1/mtls/bundles",
        Some(ADMIN_TOKEN),
        Some(json!({"name": "partners", "pem": "not pem"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
}

/// A row the store holds that this version cannot read (here a domain's mode written by hand)
/// refuses the start with the table, the row and the fix, not a bare decoding error.
#[tokio::test]
async fn an_unreadable_store_row_is_named() {
    let h = Harness::new();
    let body = format!("store = \"state.db\"\n{}", h.admin_section());
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    let leaf = h.server_ca.leaf(LeafSpec::server("api.test"));
    api.ok(
        Method::POST,
        "/api/v1/domains",
        Some(json!({"hostname": "api.test", "cert_pem": leaf.chain_pem, "key_pem": leaf.key_pem, "mtls": "off"})),
    )
    .await;
    gw.shutdown().await;
    let url = format!("sqlite://{}", h.path("state.db").display());
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("UPDATE domains SET mtls = 'Require'")
        .execute(&mut db)
        .await
        .unwrap();
    drop(db);
    let err = h.start_err(&body).await;
    assert!(
        err.contains("domains row 'api.test'") && err.contains("mtls") && err.contains("Fix:"),
        "{err}"
    );
}

/// A misspelled key in a policy (API or import) is refused: it must not silently drop the
/// policy's access list or rate limit, which would open every route to its identities.
#[tokio::test]
async fn a_misspelled_policy_key_is_refused_not_ignored() {
    let s = setup().await;
    let strict = json!({"name": "p1", "access": [{"route": "orders"}], "rate_limit": {"requests": 5, "per": "1m"}});
    s.api
        .ok(Method::POST, "/api/v1/policies", Some(strict.clone()))
        .await;
    for body in [
        json!({"name": "p1", "acess": [{"route": "orders"}]}),
        json!({"name": "p1", "ratelimit": {"requests": 5, "per": "1m"}}),
        json!({"name": "p1", "spec": {"access": []}}),
    ] {
        let (status, v) = s
            .api
            .call(Method::PUT, "/api/v1/policies/p1", Some(body.clone()))
            .await;
        assert!(status.is_client_error(), "{body}: {status} {v}");
    }
    let (status, v) = s
        .api
        .post("/api/v1/policies", json!({"name": "p2", "acess": []}))
        .await;
    assert!(status.is_client_error(), "{status} {v}");
    let kept = s.api.ok(Method::GET, "/api/v1/policies/p1", None).await;
    assert_eq!(kept["access"], strict["access"], "{kept}");
    assert_eq!(kept["rate_limit"], strict["rate_limit"], "{kept}");
    // The same through an import file.
    let text = "[[policies]]\nname = \"p1\"\nacess = []\n";
    let (status, v) = s
        .api
        .client
        .call(
            Method::POST,
            "/api/v1/import",
            Some(("application/toml", text.as_bytes().to_vec())),
        )
        .await
        .unwrap();
    assert!(
        status.is_client_error(),
        "{status} {}",
        String::from_utf8_lossy(&v)
    );
    let kept = s.api.ok(Method::GET, "/api/v1/policies/p1", None).await;
    assert_eq!(kept["rate_limit"], strict["rate_limit"], "{kept}");
}

/// A key the API does not know is refused on every write, not ignored: `required` for
/// `require` would leave a bundle in transition mode, `enabled` for `active` an identity
/// enabled. Nothing is created.
#[tokio::test]
async fn unknown_fields_in_a_write_are_refused() {
    let s = setup().await;
    let pem = s.h.server_ca.pem();
    let (status, v) = s
        .api
        .post(
            "/api/v1/mtls/bundles",
            json!({"name": "strict", "pem": pem, "required": true}),
        )
        .await;
    assert!(status.is_client_error(), "{status} {v}");
    assert_eq!(
        s.api.ok(Method::GET, "/api/v1/mtls/bundles", None).await,
        json!([])
    );
    let (status, v) = s
        .api
        .post(
            "/api/v1/routes",
            json!({"name": "r", "path_prefix": "/r", "upstream": "builtin:echo", "auth": "mtls"}),
        )
        .await;
    assert!(status.is_client_error(), "{status} {v}");
    let (status, v) = s
        .api
        .post(
            "/api/v1/revocations",
            json!({"serial": "01", "issuer": pem}),
        )
        .await;
    assert!(status.is_client_error(), "{status} {v}");
    let (status, v) = s
        .api
        .post(
            "/api/v1/identities",
            json!({"name": "lim", "token": true, "policy_name": "p"}),
        )
        .await;
    assert!(status.is_client_error(), "{status} {v}");
    assert_eq!(
        s.api.ok(Method::GET, "/api/v1/identities", None).await,
        json!([])
    );
}

/// A route whose prefix or host no request can match is refused: its rules would never apply,
/// and requests would fall through to a broader route.
#[tokio::test]
async fn a_route_no_request_can_match_is_refused() {
    let s = setup().await;
    for prefix in [
        "/secret//x",
        "/a/../b",
        "/a/./b",
        "/a%2Fb",
        "/a;b",
        "/a%00b",
        "/a?b",
        "/a#b",
    ] {
        let (status, v) = s
            .api
            .post(
                "/api/v1/routes",
                json!({"name": "r", "path_prefix": prefix, "upstream": "builtin:echo"}),
            )
            .await;
        assert_eq!(
            (status.as_u16(), code(&v)),
            (422, "bad_route"),
            "{prefix}: {v}"
        );
    }
    for host in [
        "api.example.test:443",
        "x y",
        "a/b",
        "a.example.",
        ".",
        "a..example",
    ] {
        let (status, v) = s
            .api
            .post(
                "/api/v1/routes",
                json!({"name": "r", "host": host, "path_prefix": "/", "upstream": "builtin:echo"}),
            )
            .await;
        assert_eq!(
            (status.as_u16(), code(&v)),
            (422, "bad_route"),
            "{host}: {v}"
        );
    }
    // Escapes of unreserved characters are fine: they normalize to the same prefix.
    s.api
        .ok(
            Method::POST,
            "/api/v1/routes",
            Some(json!({"name": "ok", "host": "*.example.test", "path_prefix": "/%61pi/", "upstream": "builtin:echo"})),
        )
        .await;
}

/// An import names each object once, and knows every section it holds: a duplicate policy
/// (the open one last) or a misspelled section is refused, and nothing is applied.
#[tokio::test]
async fn an_import_with_duplicates_or_unknown_sections_is_refused() {
    let s = setup().await;
    let import = |text: &'static str| {
        let client = &s.api.client;
        async move {
            client
                .call(
                    Method::POST,
                    "/api/v1/import",
                    Some(("application/toml", text.as_bytes().to_vec())),
                )
                .await
                .unwrap()
        }
    };
    for text in [
        "[[policies]]\nname = \"p\"\naccess = [{ route = \"orders\" }]\n\n[[policies]]\nname = \"p\"\n",
        "[[identities]]\nname = \"a\"\nactive = true\n\n[[identities]]\nname = \"a\"\nactive = true\n",
        "[[policie]]\nname = \"p\"\n",
    ] {
        let (status, body) = import(text).await;
        assert_eq!(status, 422, "{text}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(
        s.api.ok(Method::GET, "/api/v1/policies", None).await,
        json!([])
    );
    let audit = s.api.ok(Method::GET, "/api/v1/audit", None).await;
    assert_eq!(audit, json!([]), "a refused import writes no audit row");
}

/// A name equal to another object's id is refused: lookups by id or name try ids first, so
/// such a name would reach the other object (a domain attached to the wrong bundle, say).
#[tokio::test]
async fn a_name_that_is_another_objects_id_is_refused() {
    let s = setup().await;
    let pem = s.h.server_ca.pem();
    let other = s
        .api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(json!({"name": "other", "pem": pem})),
        )
        .await;
    let id = other["id"].as_str().unwrap();
    let (status, v) = s
        .api
        .post(
            "/api/v1/mtls/bundles",
            json!({"name": id, "pem": pem, "require": true}),
        )
        .await;
    assert_eq!((status.as_u16(), code(&v)), (409, "duplicate_name"), "{v}");
    let strict = s
        .api
        .ok(
            Method::POST,
            "/api/v1/mtls/bundles",
            Some(json!({"name": "strict", "pem": pem, "require": true})),
        )
        .await;
    let (status, v) = s
        .api
        .call(
            Method::PATCH,
            &format!("/api/v1/mtls/bundles/{}", strict["id"].as_str().unwrap()),
            Some(json!({"name": id})),
        )
        .await;
    assert_eq!((status.as_u16(), code(&v)), (409, "duplicate_name"), "{v}");
    // A domain's host name is its name.
    let leaf = s.h.server_ca.leaf(LeafSpec::server("a.example"));
    let first = s
        .api
        .ok(
            Method::POST,
            "/api/v1/domains",
            Some(json!({"hostname": "a.example", "cert_pem": leaf.chain_pem, "key_pem": leaf.key_pem})),
        )
        .await;
    let (status, v) = s
        .api
        .post(
            "/api/v1/domains",
            json!({"hostname": first["id"], "cert_pem": leaf.chain_pem, "key_pem": leaf.key_pem}),
        )
        .await;
    assert_eq!(status.as_u16(), 409, "{v}");
    // And through an import.
    let text = format!("[[bundles]]\nname = \"{id}\"\nrequire = true\npem = \"\"\"\n{pem}\"\"\"\n");
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
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
}

/// Names that differ only in case are two names, in the API and in an import: the store's own
/// export imports again.
#[tokio::test]
async fn names_that_differ_in_case_round_trip() {
    let s = setup().await;
    for name in ["Web", "web"] {
        s.api
            .ok(
                Method::POST,
                "/api/v1/policies",
                Some(json!({"name": name, "rate_limit": {"requests": 5, "per": "1m"}})),
            )
            .await;
    }
    let (status, text) = s
        .api
        .client
        .call(Method::GET, "/api/v1/export", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, body) = s
        .api
        .client
        .call(
            Method::POST,
            "/api/v1/import",
            Some(("application/toml", text.to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}
