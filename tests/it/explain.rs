//! `verify` explains exactly why a domain would refuse a client certificate; `cert inspect`
//! describes certificates in plain language.

use http::Method;
use serde_json::json;

use crate::admin::Api;
use crate::support::*;

#[tokio::test]
async fn verify_gives_the_right_reason_for_each_failure() {
    let h = Harness::new();
    let ca = TestCa::root("Explain CA");
    h.write("clients.pem", &ca.pem());
    let deep = h
        .domain("deep.test", Some("clients.pem"), "optional")
        .replace("mtls =", "max_chain_depth = 1\nmtls =");
    let body = format!(
        "{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("clients.pem"), "require"),
        deep
    );
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    let other = TestCa::root("Stranger CA");
    let inter = ca.intermediate("Explain Issuing CA");
    let cases = [
        (
            "api.test",
            ca.leaf(LeafSpec::client("ok")).chain_pem,
            true,
            "SUCCESS",
            None,
        ),
        (
            "api.test",
            ca.leaf(LeafSpec::client("old").expired()).chain_pem,
            false,
            "FAILED:expired",
            Some("expired 3 days ago (not after "),
        ),
        (
            "api.test",
            ca.leaf(LeafSpec::client("early").not_yet_valid()).chain_pem,
            false,
            "FAILED:not_yet_valid",
            Some("not valid yet: starts in "),
        ),
        (
            "api.test",
            other.leaf(LeafSpec::client("x")).chain_pem,
            false,
            "FAILED:unknown_ca",
            Some("issuer CN=Stranger CA is not in bundle "),
        ),
        (
            "api.test",
            ca.leaf(LeafSpec::client("srv").eku(Eku::Server)).chain_pem,
            false,
            "FAILED:wrong_usage",
            Some(
                "the client certificate does not allow clientAuth (its extendedKeyUsage allows: serverAuth)",
            ),
        ),
        (
            "deep.test",
            inter.leaf(LeafSpec::client("deep")).chain_pem,
            false,
            "FAILED:chain_too_deep",
            Some("chain longer than 1"),
        ),
    ];
    for (domain, pem, verified, verdict, reason) in cases {
        let v = api
            .ok(
                Method::POST,
                "/api/v1/verify",
                Some(json!({"certificate_pem": pem, "domain": domain})),
            )
            .await;
        assert_eq!(v["verified"], verified, "{v}");
        assert_eq!(v["verdict"], verdict, "{v}");
        match reason {
            None => assert!(v["reason"].is_null()),
            Some(r) => assert!(v["reason"].as_str().unwrap().contains(r), "{v}"),
        }
        // In optional mode the client still connects.
        assert_eq!(v["would_connect"], verified || domain == "deep.test", "{v}");
    }
    let v = api.ok(Method::POST, "/api/v1/verify", Some(json!({"certificate_pem": ca.leaf(LeafSpec::client("x")).chain_pem, "domain": "api.test"}))).await;
    assert!(v["reason"].is_null());
    let (status, _) = api
        .post(
            "/api/v1/verify",
            json!({"certificate_pem": ca.pem(), "domain": "nowhere.test"}),
        )
        .await;
    assert_eq!(status, 404);
}
