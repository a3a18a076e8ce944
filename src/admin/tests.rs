//! The wire shape of the request bodies a client sends, and the JSON body extractor's refusals.

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use http::{Request, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::bundles::{BundleCreate, BundleUpdate, CrlsBody, PemBody};
use super::ca::EnrollmentTokenBody;
use super::common::JsonBody;
use super::domains::{DomainCreate, DomainUpdate};
use super::identities::{IdentityCreate, IdentityUpdate};
use super::revocations::RevokeBody;
use super::routes::{RouteCreate, RouteUpdate};

fn to_json<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap()
}

/// Serialized, read back by the server and serialized again: the same JSON.
fn round_trip<T: Serialize + DeserializeOwned>(t: &T) -> Value {
    let sent = to_json(t);
    let read: T = serde_json::from_value(sent.clone()).unwrap();
    assert_eq!(to_json(&read), sent);
    sent
}

#[test]
fn absent_optionals_are_left_out_not_sent_as_null() {
    assert_eq!(round_trip(&BundleUpdate::default()), json!({}));
    assert_eq!(round_trip(&DomainUpdate::default()), json!({}));
    assert_eq!(round_trip(&RouteUpdate::default()), json!({}));
    assert_eq!(round_trip(&RevokeBody::default()), json!({}));
    assert_eq!(
        round_trip(&IdentityUpdate::default()),
        json!({"rotate_token": false})
    );
    let token = EnrollmentTokenBody {
        name: "build-42".into(),
        ..Default::default()
    };
    assert_eq!(round_trip(&token), json!({"name": "build-42"}));
    let domain = DomainCreate {
        hostname: "api.test".into(),
        cert_pem: "C".into(),
        key_pem: "K".into(),
        bundle: None,
        mtls: None,
    };
    assert_eq!(
        round_trip(&domain),
        json!({"hostname": "api.test", "cert_pem": "C", "key_pem": "K"})
    );
}

#[test]
fn request_bodies_keep_their_field_names() {
    let bundle = BundleCreate {
        name: "clients".into(),
        pem: "P".into(),
        require: true,
        crls: Some(CrlsBody {
            urls: vec!["http://crl.test/ca.crl".into()],
            ..Default::default()
        }),
    };
    assert_eq!(
        round_trip(&bundle),
        json!({"name": "clients", "pem": "P", "require": true,
            "crls": {"urls": ["http://crl.test/ca.crl"]}})
    );
    let route: RouteCreate =
        serde_json::from_value(json!({"name": "api", "upstream": "http://127.0.0.1:1"})).unwrap();
    assert_eq!(
        round_trip(&route),
        json!({"name": "api", "upstream": "http://127.0.0.1:1", "path_prefix": "/",
            "strip_prefix": false})
    );
    let identity = IdentityCreate {
        name: "alice".into(),
        certificate_pem: None,
        fingerprint: Some("ab".repeat(32)),
        token: true,
        policy: Some("readers".into()),
        active: true,
        expires_at: None,
    };
    assert_eq!(
        round_trip(&identity),
        json!({"name": "alice", "fingerprint": "ab".repeat(32), "token": true,
            "policy": "readers", "active": true})
    );
}

async fn post_pem(body: &'static str, content_type: Option<&str>) -> (StatusCode, Value) {
    let app = Router::new()
        .route(
            "/",
            post(|JsonBody(b): JsonBody<PemBody>| async move { b.pem }),
        )
        .layer(DefaultBodyLimit::max(64));
    let mut req = Request::post("/");
    if let Some(t) = content_type {
        req = req.header(http::header::CONTENT_TYPE, t);
    }
    let resp = app
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

#[tokio::test]
async fn the_json_body_extractor_refuses_in_the_api_error_shape() {
    let json = Some("application/json");
    assert_eq!(post_pem(r#"{"pem": "x"}"#, json).await.0, StatusCode::OK);
    for (body, content_type) in [
        (r#"{"pem": "#, json),
        (r#"{"name": "x"}"#, json),
        (r#"{"pem": "x"}"#, None),
    ] {
        let (status, v) = post_pem(body, content_type).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} {content_type:?}");
        assert_eq!(v["error"]["code"], "bad_request");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(
            v["error"]["hint"]
                .as_str()
                .unwrap()
                .contains("openapi.json")
        );
    }
    let big =
        r#"{"pem": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
    let (status, v) = post_pem(big, json).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"]["code"], "too_large");
}
