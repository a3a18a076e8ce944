//! Authorization end to end: static rules of each matcher kind, the gateway-wide list,
//! identities by certificate and by token, combined mode, rate limits, quotas, self-service,
//! the transition report and usage counters. Every refusal is checked to never reach the
//! upstream.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use crate::admin::{Api, code};
use crate::support::*;

struct Setup {
    h: Harness,
    gw: symbolon::gateway::Gateway,
    api: Api,
    ca: TestCa,
    up: Upstream,
}

/// Domain api.test trusting `ca` in `mode`, and route "api" (everything) to a counting upstream.
async fn setup(mode: &str) -> Setup {
    let h = Harness::new();
    let ca = TestCa::root("Authz Client CA");
    h.write("clients.pem", &ca.pem());
    let up = Upstream::start().await;
    let body = format!(
        "{}{}",
        h.admin_section(),
        h.domain("api.test", Some("clients.pem"), mode)
    );
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    api.ok(
        Method::POST,
        "/api/v1/routes",
        Some(json!({"name": "api", "path_prefix": "/", "upstream": up.url()})),
    )
    .await;
    Setup { h, gw, api, ca, up }
}

impl Setup {
    async fn set_authz(&self, authz: Value) {
        self.api
            .ok(
                Method::PATCH,
                "/api/v1/routes/api",
                Some(json!({"authz": authz})),
            )
            .await;
    }

    /// GET `path` with the given client spec and extra headers.
    async fn request(
        &self,
        spec: &ClientSpec,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, http::HeaderMap, Value) {
        let mut conn = Conn::open(self.gw.tls_addr(), "api.test", spec)
            .await
            .unwrap();
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "api.test");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = conn
            .send_streaming(b.body(Default::default()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        use http_body_util::BodyExt;
        let bytes = body.collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status.as_u16(), parts.headers, v)
    }

    async fn status(&self, spec: &ClientSpec) -> u16 {
        self.request(spec, "GET", "/", &[]).await.0
    }
}

#[tokio::test]
async fn each_matcher_kind_allows_and_denies() {
    let s = setup("require").await;
    let inter = s.ca.intermediate("Authz Issuing CA");
    let match_leaf = inter.leaf(
        LeafSpec::client("svc-a")
            .ou("Payments")
            .dns("a.svc.acme.test")
            .email("ops@acme.test")
            .spiffe("spiffe://acme.test/ns/prod/sa/svc-a"),
    );
    let other_leaf = s.ca.leaf(
        LeafSpec::client("svc-b")
            .ou("Sales")
            .spiffe("spiffe://acme.test/ns/dev/sa/svc-b"),
    );
    let good = s.h.client().cert(&match_leaf);
    let bad = s.h.client().cert(&other_leaf);
    let inter_fp = symbolon::pki::fingerprint_sha256(inter.cert.der());
    let matchers = [
        json!({"fingerprint": match_leaf.fingerprint()}),
        json!({"ca_fingerprint": inter_fp}),
        json!({"cn": "svc-a"}),
        json!({"ou": "Payments"}),
        json!({"san_dns": "*.svc.acme.test"}),
        json!({"san_uri": "spiffe://acme.test/ns/prod/sa/svc-a"}),
        json!({"san_email": "ops@acme.test"}),
        json!({"spiffe_id": "spiffe://acme.test/ns/prod/sa/svc-a"}),
        json!({"spiffe_trust_domain": "acme.test", "spiffe_path_prefix": "/ns/prod"}),
        json!({"issuer_cn": "Authz Issuing CA"}),
    ];
    for m in &matchers {
        let mut allow = m.clone();
        allow["effect"] = json!("allow");
        s.set_authz(json!({"rules": [allow]})).await;
        assert_eq!(s.status(&good).await, 200, "allow {m}");
        let before = s.up.hits();
        let (status, _, body) = s.request(&bad, "GET", "/", &[]).await;
        assert_eq!(status, 403, "allow {m} let the other client in");
        assert_eq!(body["error"]["code"], "certificate_not_allowed");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("none of the route allow rules")
        );
        assert_eq!(
            s.up.hits(),
            before,
            "a refused request reached the upstream"
        );

        let mut deny = m.clone();
        deny["effect"] = json!("deny");
        s.set_authz(json!({"rules": [deny]})).await;
        let (status, _, body) = s.request(&good, "GET", "/", &[]).await;
        assert_eq!(status, 403, "deny {m}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("deny rule #1"),
            "{body}"
        );
        assert_eq!(
            s.status(&bad).await,
            200,
            "deny {m} refused the other client"
        );
    }
    // The O matcher (both certificates share O=Symbolon tests).
    s.set_authz(json!({"rules": [{"effect": "allow", "o": "Symbolon tests"}]}))
        .await;
    assert_eq!(s.status(&bad).await, 200);
    // A bad rule is refused by the API.
    let (status, v) = s
        .api
        .call(
            Method::PATCH,
            "/api/v1/routes/api",
            Some(json!({"authz": {"rules": [{"effect": "allow", "cn": "a", "o": "b"}]}})),
        )
        .await;
    assert_eq!((status.as_u16(), code(&v)), (422, "bad_rule"));
}

#[tokio::test]
async fn gateway_wide_list_applies_to_every_route() {
    let s = setup("require").await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/routes",
            Some(json!({"name": "other", "path_prefix": "/other", "upstream": "builtin:echo"})),
        )
        .await;
    let a = s.h.client().cert(&s.ca.leaf(LeafSpec::client("partner-a")));
    let b = s.h.client().cert(&s.ca.leaf(LeafSpec::client("partner-b")));
    s.api
        .ok(
            Method::PUT,
            "/api/v1/authz/global-rules",
            Some(json!({"rules": [{"effect": "allow", "cn": "partner-a"}]})),
        )
        .await;
    for path in ["/", "/other/x"] {
        assert_eq!(s.request(&a, "GET", path, &[]).await.0, 200, "{path}");
        let (status, _, body) = s.request(&b, "GET", path, &[]).await;
        assert_eq!(status, 403, "{path}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("gateway-wide"),
            "{body}"
        );
    }
    s.api
        .ok(
            Method::PUT,
            "/api/v1/authz/global-rules",
            Some(json!({"rules": []})),
        )
        .await;
    assert_eq!(s.request(&b, "GET", "/other/x", &[]).await.0, 200);
}

#[tokio::test]
async fn identities_by_certificate_by_token_and_combined() {
    let s = setup("optional").await;
    let alice_leaf = s.ca.leaf(LeafSpec::client("alice"));
    let bob_leaf = s.ca.leaf(LeafSpec::client("bob"));
    let alice = s.h.client().cert(&alice_leaf);
    let bob = s.h.client().cert(&bob_leaf);
    let v = s
        .api
        .ok(
            Method::POST,
            "/api/v1/identities",
            Some(json!({"name": "alice", "certificate_pem": alice_leaf.cert_pem, "token": true})),
        )
        .await;
    let alice_token = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["identity"]["fingerprint"], alice_leaf.fingerprint());
    let v = s
        .api
        .ok(
            Method::POST,
            "/api/v1/identities",
            Some(json!({"name": "bob", "fingerprint": bob_leaf.fingerprint(), "token": true})),
        )
        .await;
    let bob_token = v["token"].as_str().unwrap().to_string();
    let listed = s.api.ok(Method::GET, "/api/v1/identities", None).await;
    assert!(
        !listed.to_string().contains(&alice_token),
        "a token was returned after creation"
    );

    // mtls: the certificate's identity.
    s.set_authz(json!({"auth": "mtls"})).await;
    assert_eq!(s.status(&alice).await, 200);
    let stranger = s.h.client().cert(&s.ca.leaf(LeafSpec::client("stranger")));
    let (status, _, body) = s.request(&stranger, "GET", "/", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (403, "unknown_identity")
    );
    let (status, _, body) = s.request(&s.h.client(), "GET", "/", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (403, "certificate_required")
    );

    // token: no certificate needed; the token header is stripped before the upstream.
    s.set_authz(json!({"auth": "token"})).await;
    let bearer = format!("Bearer {alice_token}");
    let (status, _, body) = s
        .request(&s.h.client(), "GET", "/", &[("authorization", &bearer)])
        .await;
    assert_eq!(status, 200);
    assert!(
        body["headers"].get("authorization").is_none(),
        "the token reached the upstream"
    );
    let (status, _, body) = s
        .request(
            &s.h.client(),
            "GET",
            "/",
            &[("authorization", "Bearer nope")],
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (403, "unknown_token")
    );
    // A custom header, kept when strip_auth is false.
    s.set_authz(json!({"auth": "token", "token_header": "x-api-key", "strip_auth": false}))
        .await;
    let (status, _, body) = s
        .request(&s.h.client(), "GET", "/", &[("x-api-key", &alice_token)])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["x-api-key"], alice_token.as_str());

    // mtls_and_token: both, same identity.
    s.set_authz(json!({"auth": "mtls_and_token"})).await;
    let alice_bearer = format!("Bearer {alice_token}");
    let bob_bearer = format!("Bearer {bob_token}");
    assert_eq!(
        s.request(&alice, "GET", "/", &[("authorization", &alice_bearer)])
            .await
            .0,
        200
    );
    let before = s.up.hits();
    let (status, _, body) = s
        .request(&alice, "GET", "/", &[("authorization", &bob_bearer)])
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (403, "identity_mismatch")
    );
    let (status, _, body) = s.request(&bob, "GET", "/", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (403, "token_required")
    );
    assert_eq!(s.up.hits(), before);

    // mtls_or_token: either.
    s.set_authz(json!({"auth": "mtls_or_token"})).await;
    assert_eq!(s.status(&bob).await, 200);
    assert_eq!(
        s.request(
            &s.h.client(),
            "GET",
            "/",
            &[("authorization", &alice_bearer)]
        )
        .await
        .0,
        200
    );

    // Inactive and expired identities.
    s.set_authz(json!({"auth": "mtls"})).await;
    s.api
        .ok(
            Method::PATCH,
            "/api/v1/identities/alice",
            Some(json!({"active": false})),
        )
        .await;
    let (status, _, body) = s.request(&alice, "GET", "/", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (403, "identity_inactive")
    );
    s.api
        .ok(
            Method::PATCH,
            "/api/v1/identities/alice",
            Some(json!({"active": true, "expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await;
    let (status, _, body) = s.request(&alice, "GET", "/", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (403, "identity_expired")
    );
    s.api
        .ok(
            Method::PATCH,
            "/api/v1/identities/alice",
            Some(json!({"expires_at": ""})),
        )
        .await;
    assert_eq!(s.status(&alice).await, 200);
}

#[tokio::test]
async fn access_rights_rate_limits_and_quotas() {
    let s = setup("require").await;
    let leaf = s.ca.leaf(LeafSpec::client("metered"));
    let client = s.h.client().cert(&leaf);
    s.api
        .ok(
            Method::POST,
            "/api/v1/policies",
            Some(json!({
                "name": "metered",
                "access": [{"route": "api", "methods": ["GET"], "path_prefixes": ["/orders"]}],
                "rate_limit": {"requests": 5, "per": "1s"},
            })),
        )
        .await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/identities",
            Some(json!({"name": "m", "certificate_pem": leaf.cert_pem, "policy": "metered"})),
        )
        .await;
    s.set_authz(json!({"auth": "mtls"})).await;

    let (status, _, body) = s.request(&client, "POST", "/orders/1", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (403, "access_denied")
    );
    let (status, _, _) = s.request(&client, "GET", "/admin", &[]).await;
    assert_eq!(status, 403);

    // The bucket is full after the refusals (they do not count). 5 pass, the 6th is 429.
    let mut conn = Conn::open(s.gw.tls_addr(), "api.test", &client)
        .await
        .unwrap();
    for i in 0..5 {
        assert_eq!(
            conn.get("/orders/1").await.unwrap().status,
            200,
            "request {i}"
        );
    }
    let before = s.up.hits();
    let resp = conn
        .send_streaming(
            http::Request::get("/orders/1")
                .header("host", "api.test")
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let h = resp.headers();
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry), "Retry-After {retry}");
    assert_eq!(h["ratelimit-limit"], "5");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(
        s.up.hits(),
        before,
        "a rate-limited request reached the upstream"
    );
    // It recovers once the bucket refills (one token per 200 ms).
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(conn.get("/orders/1").await.unwrap().status, 200);

    // A quota of 3 per 2-second window.
    s.api
        .ok(
            Method::PUT,
            "/api/v1/policies/metered",
            Some(json!({"name": "metered", "quota": {"requests": 3, "period": "2s"}})),
        )
        .await;
    // Start at the beginning of a window so all three fit in it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(
        2000 - (now.as_millis() % 2000) as u64 + 20,
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(conn.get("/x").await.unwrap().status, 200);
    }
    let (status, headers, body) = s.request(&client, "GET", "/x", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str().unwrap()),
        (403, "quota_exceeded"),
        "{body}"
    );
    let reset = body["error"]["reset"].as_str().unwrap().to_string();
    assert_eq!(headers["x-quota-reset"], reset.as_str());
    // The quota renews at the reset time.
    let reset_at =
        time::OffsetDateTime::parse(&reset, &time::format_description::well_known::Rfc3339)
            .unwrap();
    let wait = reset_at - time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(
        wait.whole_milliseconds().max(0) as u64 + 50,
    ))
    .await;
    assert_eq!(conn.get("/x").await.unwrap().status, 200);
}

#[tokio::test]
async fn self_service_enrollment_refuses_private_keys() {
    let s = setup("require").await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "partners", "self_service": true})),
        )
        .await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "internal"})),
        )
        .await;
    let leaf = s.ca.leaf(LeafSpec::client("partner"));
    let with_key = format!("{}{}", leaf.cert_pem, leaf.key_pem);
    for (path, body) in [
        (
            "/api/v1/self-service/identities",
            json!({"name": "p", "certificate_pem": with_key, "policy": "partners"}),
        ),
        (
            "/api/v1/identities",
            json!({"name": "p", "certificate_pem": with_key}),
        ),
    ] {
        let (status, v) = s.api.post(path, body).await;
        assert_eq!(
            (status.as_u16(), code(&v)),
            (422, "private_key_not_allowed"),
            "{path}"
        );
        assert!(
            v["error"]["hint"]
                .as_str()
                .unwrap()
                .contains("keep the key")
        );
    }
    // Proof of possession: the certificate's key signs a challenge.
    let proof = |c: &str| crate::support::pki::sign_with(&leaf.key_pem, c.as_bytes());
    let c = crate::issuance::challenge(&s.api).await;
    let (status, v) = s
        .api
        .post(
            "/api/v1/self-service/identities",
            json!({"name": "p", "certificate_pem": leaf.cert_pem, "policy": "internal", "challenge": c, "signature": proof(&c)}),
        )
        .await;
    assert_eq!((status.as_u16(), code(&v)), (403, "not_self_service"));
    let c = crate::issuance::challenge(&s.api).await;
    let v = s
        .api
        .ok(
            Method::POST,
            "/api/v1/self-service/identities",
            Some(json!({"name": "p", "certificate_pem": leaf.cert_pem, "policy": "partners", "challenge": c, "signature": proof(&c)})),
        )
        .await;
    assert_eq!(v["identity"]["policy"], "partners");
    s.set_authz(json!({"auth": "mtls"})).await;
    assert_eq!(s.status(&s.h.client().cert(&leaf)).await, 200);
    assert!(
        s.api
            .ok(Method::GET, "/api/v1/audit", None)
            .await
            .to_string()
            .contains("identity.self_service")
    );
}

#[tokio::test]
async fn transition_report_lists_clients_that_enforcement_would_reject() {
    let s = setup("optional").await;
    let stranger_leaf = TestCa::root("Unknown CA").leaf(LeafSpec::client("stranger"));
    let stranger = s.h.client().cert(&stranger_leaf);
    let known_leaf = s.ca.leaf(LeafSpec::client("known"));
    let known = s.h.client().cert(&known_leaf);
    for _ in 0..3 {
        assert_eq!(s.status(&stranger).await, 200);
    }
    // A route in record-only mode: its rules are checked but not enforced.
    s.set_authz(json!({"rules": [{"effect": "allow", "cn": "someone-else"}], "enforce": false}))
        .await;
    assert_eq!(s.status(&known).await, 200);
    let report = s
        .api
        .ok(Method::GET, "/api/v1/transition-report", None)
        .await;
    let entries = report.as_array().unwrap();
    let tls = entries
        .iter()
        .find(|e| e["fingerprint"] == stranger_leaf.fingerprint())
        .expect("the stranger is reported");
    assert_eq!(tls["reason"], "unknown_ca");
    assert_eq!(tls["route"], "-");
    assert_eq!(tls["domain"], "api.test");
    assert_eq!(tls["count"], 3);
    assert!(tls["subject"].as_str().unwrap().contains("CN=stranger"));
    assert!(tls["last_seen"].as_str().unwrap().starts_with("20"));
    let route = entries
        .iter()
        .find(|e| e["fingerprint"] == known_leaf.fingerprint())
        .expect("the route refusal is reported");
    assert_eq!(route["reason"], "certificate_not_allowed");
    assert_eq!(route["route"], "api");
}

#[tokio::test]
async fn usage_counters_match_the_requests_sent() {
    let s = setup("require").await;
    let leaf = s.ca.leaf(LeafSpec::client("counted"));
    let client = s.h.client().cert(&leaf);
    s.api
        .ok(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "gold"})),
        )
        .await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/identities",
            Some(json!({"name": "counted", "certificate_pem": leaf.cert_pem, "policy": "gold"})),
        )
        .await;
    s.set_authz(json!({"auth": "mtls"})).await;
    let mut conn = Conn::open(s.gw.tls_addr(), "api.test", &client)
        .await
        .unwrap();
    for _ in 0..7 {
        assert_eq!(conn.get("/").await.unwrap().status, 200);
    }
    let usage = s
        .api
        .ok(Method::GET, "/api/v1/identities/counted/usage", None)
        .await;
    let u = &usage[0];
    assert_eq!(u["route"], "api");
    assert_eq!(u["requests"], 7);
    assert_eq!(u["status_2xx"], 7);
    assert_eq!(u["status_4xx"], 0);
    assert!(u["bytes_out"].as_u64().unwrap() > 7 * 100);
    assert!(u["last_seen"].as_str().unwrap().starts_with("20"));
    // Bounded-cardinality metrics: by policy and route, not by identity.
    let metrics = crate::mtls::metrics_text(&s.gw).await;
    assert!(
        metrics.contains(
            "symbolon_policy_requests_total{policy=\"gold\",route=\"api\",class=\"2xx\"} 7"
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("counted"));
}

#[tokio::test]
async fn the_longest_rate_limit_period_refuses_with_retry_after_and_no_panic() {
    // Before issue 11 a huge `per` panicked on the second request (Duration overflow).
    let s = setup("require").await;
    let leaf = s.ca.leaf(LeafSpec::client("slow"));
    let client = s.h.client().cert(&leaf);
    s.api
        .ok(
            Method::POST,
            "/api/v1/policies",
            Some(json!({"name": "slow", "rate_limit": {"requests": 1, "per": "30d"}})),
        )
        .await;
    s.api
        .ok(
            Method::POST,
            "/api/v1/identities",
            Some(json!({"name": "s", "certificate_pem": leaf.cert_pem, "policy": "slow"})),
        )
        .await;
    s.set_authz(json!({"auth": "mtls"})).await;
    let mut conn = Conn::open(s.gw.tls_addr(), "api.test", &client)
        .await
        .unwrap();
    assert_eq!(conn.get("/x").await.unwrap().status, 200);
    for _ in 0..2 {
        let r = conn.get("/x").await.unwrap();
        assert_eq!(r.status, 429);
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            (2_591_000..=2_592_000).contains(&retry),
            "Retry-After {retry}"
        );
    }
}
