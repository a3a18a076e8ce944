//! The expiry watch: every certificate the gateway knows, listed by expiry, as metrics, and
//! with a log warning when it crosses a threshold.

use http::Method;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use crate::admin::Api;
use crate::support::*;

#[tokio::test]
async fn expiring_lists_domains_bundles_credentials_and_clients_seen() {
    let h = Harness::new();
    // A bundle CA that expires in 10 days.
    let ca = TestCa::root_until(
        "Short-lived CA",
        OffsetDateTime::now_utc() + Duration::days(10),
    );
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
    // The harness's server certificate expires in 1 day; a client seen in traffic expires in 2
    // days, a credential in 3.
    let mut spec = LeafSpec::client("upstream-cred");
    spec.not_after = OffsetDateTime::now_utc() + Duration::days(3);
    let cred = TestCa::root("Upstream CA").leaf(spec);
    api.ok(
        Method::POST,
        "/api/v1/credentials",
        Some(json!({"name": "origin", "cert_pem": cred.chain_pem, "key_pem": cred.key_pem})),
    )
    .await;
    let mut spec = LeafSpec::client("short-client");
    spec.not_after = OffsetDateTime::now_utc() + Duration::days(2);
    let client = ca.leaf(spec);
    assert_eq!(
        get(gw.tls_addr(), "api.test", &h.client().cert(&client), "/")
            .await
            .unwrap()
            .status,
        200
    );

    let v = api
        .ok(Method::GET, "/api/v1/expiring?within=7d", None)
        .await;
    let list = v.as_array().unwrap();
    let kinds: Vec<(&str, &str)> = list
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("domain", "api.test"),
            ("client", "api.test"),
            ("credential", "origin")
        ],
        "{v}"
    );
    let secs = list[1]["expires_in_seconds"].as_i64().unwrap();
    assert!((2 * 86_400 - 120..=2 * 86_400).contains(&secs), "{secs}");
    assert_eq!(list[1]["fingerprint_sha256"], client.fingerprint());

    let v = api
        .ok(Method::GET, "/api/v1/expiring?within=30d", None)
        .await;
    let kinds: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"bundle"), "{v}");
    assert!(kinds.contains(&"domain"), "{v}");
    let metrics = crate::mtls::metrics_text(&gw).await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("symbolon_certificate_expiry_seconds{kind=\"credential\"")
                && l.contains(&cred.fingerprint())
        })
        .unwrap_or_else(|| panic!("no expiry gauge for the credential in\n{metrics}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        (3.0 * 86_400.0 - 120.0..=3.0 * 86_400.0).contains(&value),
        "{line}"
    );
    let (status, _) = api.get("/api/v1/expiring?within=soon").await;
    assert_eq!(status, 422);
}
