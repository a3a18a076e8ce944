//! `serve` refuses bad input at start with a message naming the file, the problem and the fix.

use time::{Duration, OffsetDateTime};

use crate::support::*;

fn domain_with(h: &Harness, bundle: &str) -> String {
    format!(
        "{}{}",
        h.domain("api.test", Some(bundle), "require"),
        route_all("builtin:echo")
    )
}

#[tokio::test]
async fn missing_trust_bundle() {
    let h = Harness::new();
    let err = h.start_err(&domain_with(&h, "nowhere.pem")).await;
    assert!(
        err.contains("nowhere.pem") && err.contains("cannot read") && err.contains("Fix:"),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_pem() {
    let h = Harness::new();
    h.write(
        "bad.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
    );
    let err = h.start_err(&domain_with(&h, "bad.pem")).await;
    assert!(
        err.contains("bad.pem") && err.contains("not valid PEM"),
        "{err}"
    );
}

#[tokio::test]
async fn leaf_certificate_in_trust_bundle() {
    let h = Harness::new();
    let ca = TestCa::root("CA");
    let leaf = ca.leaf(LeafSpec::client("a-client"));
    h.write("bundle.pem", &format!("{}{}", ca.pem(), leaf.cert_pem));
    let err = h.start_err(&domain_with(&h, "bundle.pem")).await;
    assert!(
        err.contains("bundle.pem")
            && err.contains("#2")
            && err.contains("CN=a-client")
            && err.contains("not a CA certificate"),
        "{err}"
    );
}

/// One expired CA must not stop the gateway (issue 10, point 8): it starts, the CA's clients
/// are refused with `ca_expired`, and the metric and `/api/v1/expiring` say why. A fresh upload
/// of an expired CA is still refused with a clear error.
#[tokio::test]
async fn expired_ca_in_trust_bundle() {
    let h = Harness::new();
    let ca = TestCa::root_until("Old CA", OffsetDateTime::now_utc() - Duration::days(2));
    h.write("bundle.pem", &ca.pem());
    let gw = h
        .start(&format!(
            "{}{}",
            h.admin_section(),
            domain_with(&h, "bundle.pem")
        ))
        .await;
    let client = h.client().cert(&ca.leaf(LeafSpec::client("old")));
    let err = get(gw.tls_addr(), "api.test", &client, "/")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateExpired"), "{err}");
    let metrics = crate::revocation::http_get(gw.metrics_addr(), "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("symbolon_trust_bundle_expired_cas")
                && l.contains("bundle.pem")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    let api = crate::admin::Api {
        client: h.admin_client(&gw, None),
    };
    let (_, v) = api.get("/api/v1/expiring?within=1d").await;
    assert!(v.to_string().contains("CN=Old CA"), "{v}");
    let (status, v) = api
        .post(
            "/api/v1/mtls/bundles",
            serde_json::json!({"name": "old", "pem": ca.pem()}),
        )
        .await;
    assert_eq!(status.as_u16(), 422, "{v}");
    assert!(
        v.to_string().contains("expired") && v.to_string().contains("CN=Old CA"),
        "{v}"
    );
}

#[tokio::test]
async fn key_that_does_not_match_its_certificate() {
    let h = Harness::new();
    let ca = TestCa::root("CA");
    h.write("bundle.pem", &ca.pem());
    let body = domain_with(&h, "bundle.pem");
    // Replace the server key with another one.
    let other = h.server_ca.leaf(LeafSpec::server("api.test"));
    h.write("api.test.key", &other.key_pem);
    let err = h.start_err(&body).await;
    assert!(
        err.contains("api.test.key")
            && err.contains("does not match")
            && err.contains("api.test.crt"),
        "{err}"
    );
}

#[tokio::test]
async fn private_key_where_a_certificate_belongs() {
    let h = Harness::new();
    let ca = TestCa::root("CA");
    let leaf = ca.leaf(LeafSpec::client("x"));
    h.write("bundle.pem", &leaf.key_pem);
    let err = h.start_err(&domain_with(&h, "bundle.pem")).await;
    assert!(
        err.contains("bundle.pem") && err.contains("private key"),
        "{err}"
    );
}

#[tokio::test]
async fn route_to_an_unparsable_url() {
    let h = Harness::new();
    let body = format!(
        "{}[[routes]]\nname = \"broken\"\npath_prefix = \"/\"\nupstream = \"http//missing-colon\"\n",
        h.domain("api.test", None, "off")
    );
    let err = h.start_err(&body).await;
    assert!(
        err.contains("route 'broken'")
            && err.contains("http//missing-colon")
            && err.contains("Fix:"),
        "{err}"
    );
}

#[tokio::test]
async fn require_without_a_bundle() {
    let h = Harness::new();
    let body = format!(
        "{}{}",
        h.domain("api.test", None, "require"),
        route_all("builtin:echo")
    );
    let err = h.start_err(&body).await;
    assert!(
        err.contains("api.test") && err.contains("trust_bundle"),
        "{err}"
    );
}
