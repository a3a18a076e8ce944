//! Admin input cannot crash or wrap: out-of-range durations get a 422 naming the field and its
//! range, and property tests send generated bodies to every admin endpoint that takes one (as
//! listed by the OpenAPI document, so new endpoints are covered): no input panics a handler or
//! gets a 5xx.

use std::collections::BTreeSet;

use http::Method;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

use crate::admin::{Api, code};
use crate::support::*;

async fn setup() -> (Harness, symbolon::gateway::Gateway, Api) {
    let h = Harness::new();
    symbolon::ca::init(&h.path("ca"), "p256", b"input test", None).unwrap();
    h.write("ca-pass", "input test");
    let body = format!(
        "[ca]\ndir = \"ca\"\npassphrase_file = \"ca-pass\"\n\n{}",
        h.admin_section()
    );
    let gw = h.start(&body).await;
    let api = Api {
        client: h.admin_client(&gw, None),
    };
    (h, gw, api)
}

#[tokio::test]
async fn out_of_range_durations_get_422_naming_the_field_and_range() {
    let (_h, _gw, api) = setup().await;
    let cases = [
        (
            "/api/v1/ca/enrollment-tokens",
            json!({"name": "t", "lifetime": "100000000d"}),
            "lifetime",
        ),
        (
            "/api/v1/ca/enrollment-tokens",
            json!({"name": "t", "expires_in": "18446744073709551615d"}),
            "expires_in",
        ),
        (
            "/api/v1/ca/enrollment-tokens",
            json!({"name": "t", "expires_in": "0s"}),
            "expires_in",
        ),
        (
            "/api/v1/ca/sign",
            json!({"csr_pem": "x", "lifetime": "3651d"}),
            "lifetime",
        ),
        (
            "/api/v1/policies",
            json!({"name": "p", "rate_limit": {"requests": 1, "per": "100000000d"}}),
            "rate_limit.per",
        ),
        (
            "/api/v1/policies",
            json!({"name": "p", "rate_limit": {"requests": 1, "per": "0ms"}}),
            "rate_limit.per",
        ),
        (
            "/api/v1/policies",
            json!({"name": "p", "quota": {"requests": 1, "period": "367d"}}),
            "quota.period",
        ),
    ];
    for (path, body, field) in cases {
        let (status, v) = api.post(path, body.clone()).await;
        assert_eq!(status.as_u16(), 422, "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {v}");
        let text = v.to_string();
        assert!(
            text.contains("between") || text.contains("longest"),
            "the range is named: {v}"
        );
    }
    let (status, v) = api.get("/api/v1/expiring?within=99999999999d").await;
    assert_eq!((status.as_u16(), code(&v)), (422, "bad_duration"), "{v}");
}

/// Values that broke parsers before, and generic JSON around them.
fn leaf() -> impl Strategy<Value = Value> {
    let interesting = prop::sample::select(vec![
        "100000000d",
        "18446744073709551615d",
        "99999999999999999999999s",
        "0s",
        "-1s",
        "1ms",
        "36500d",
        "36501d",
        "day",
        "month",
        "",
        "spiffe://corp.test/*",
        "spiffe://corp.test/a/../b",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN PRIVATE KEY-----\n",
        "require",
        "optional",
        "off",
        "client",
        "spiffe",
        "server",
        "/",
        "builtin:echo",
        "http://127.0.0.1:1",
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "\u{0}\u{202e}\u{ffff}",
    ]);
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        interesting.prop_map(|s| json!(s)),
        any::<String>().prop_map(Value::String),
        (
            any::<u64>(),
            prop::sample::select(vec!["ms", "s", "m", "h", "d", "w", ""])
        )
            .prop_map(|(n, u)| json!(format!("{n}{u}"))),
        (1usize..20_000).prop_map(|n| json!("a".repeat(n))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body with some of `fields` (the schema's property names) set to generated values.
fn body(fields: Vec<String>) -> BoxedStrategy<Value> {
    let names = if fields.is_empty() {
        vec!["name".to_string()]
    } else {
        fields
    };
    prop::collection::vec((prop::sample::select(names), value()), 0..8)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
        .boxed()
}

/// Every property name the OpenAPI document lists for a schema, following `$ref`s.
fn props(doc: &Value, schema: &Value, out: &mut BTreeSet<String>, depth: usize) {
    if depth > 4 {
        return;
    }
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or_default();
        props(doc, &doc["components"]["schemas"][name], out, depth + 1);
    }
    if let Some(p) = schema["properties"].as_object() {
        for (k, v) in p {
            out.insert(k.clone());
            props(doc, v, out, depth + 1);
        }
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        for s in schema[key].as_array().into_iter().flatten() {
            props(doc, s, out, depth + 1);
        }
    }
}

#[tokio::test]
async fn generated_bodies_never_panic_or_5xx_on_any_admin_endpoint() {
    let (_h, _gw, api) = setup().await;
    let doc = api.ok(Method::GET, "/api/v1/openapi.json", None).await;
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            let method = match m.as_str() {
                "post" => Method::POST,
                "put" => Method::PUT,
                "patch" => Method::PATCH,
                _ => continue,
            };
            let mut fields = BTreeSet::new();
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            props(&doc, schema, &mut fields, 0);
            let path = path.replace("{id}", "x").replace("{name}", "x");
            ops.push((method, path, fields.into_iter().collect::<Vec<_>>()));
        }
    }
    assert!(
        ops.len() >= 20,
        "the OpenAPI document lists {} writes",
        ops.len()
    );
    let cases = if std::env::var("CI").is_ok() { 48 } else { 32 };
    // A fixed seed: a failure reproduces; the body is printed.
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut answered = 0;
    for (method, path, fields) in &ops {
        let strategy = body(fields.clone());
        for _ in 0..cases {
            let b = strategy.new_tree(&mut runner).unwrap().current();
            let (status, v) = api.call(method.clone(), path, Some(b.clone())).await;
            assert!(status.as_u16() < 500, "{method} {path} {b}: {status} {v}");
            if status.is_client_error() {
                assert!(
                    v["error"]["code"].is_string(),
                    "{method} {path} {b}: errors have our shape: {v}"
                );
            }
            answered += 1;
        }
    }
    // The gateway is still up and answering after all of it.
    api.ok(Method::GET, "/api/v1/audit", None).await;
    assert_eq!(answered, ops.len() * cases);
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    #[test]
    fn duration_parsing_never_panics_and_stays_in_bounds(s in any::<String>(), n in any::<u64>(), u in prop::sample::select(vec!["ms", "s", "m", "h", "d"])) {
        for input in [s, format!("{n}{u}")] {
            if let Ok(d) = symbolon::config::parse_duration(&input) {
                prop_assert!(d <= symbolon::config::MAX_DURATION);
            }
            for r in [
                symbolon::config::LIFETIME,
                symbolon::config::TOKEN_EXPIRES_IN,
                symbolon::config::RATE_PER,
                symbolon::config::QUOTA_PERIOD,
                symbolon::config::EXPIRING_WITHIN,
            ] {
                if let Ok(d) = r.parse(&input) {
                    prop_assert!(d >= r.min && d <= r.max);
                }
            }
            let _ = symbolon::ca::parse_lifetime(&input);
            let _ = symbolon::authz::quota_window(&input, n as i64);
        }
    }

    #[test]
    fn policy_specs_validate_or_refuse_without_panicking(v in value()) {
        if let Ok(spec) = serde_json::from_value::<symbolon::authz::PolicySpec>(v) {
            let _ = spec.validate();
        }
    }

    #[test]
    fn csr_and_grant_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600), s in any::<String>()) {
        use base64::Engine as _;
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        );
        let _ = symbolon::ca::parse_csr(&pem);
        let _ = symbolon::ca::parse_csr(&s);
        let _ = symbolon::ca::check_spiffe_id(&s);
        let grant = symbolon::ca::Grant {
            common_name: s.clone(),
            dns_names: vec![s.clone()],
            ip_addresses: vec![],
            emails: vec![s.clone()],
            spiffe_id: Some(s.clone()),
            profile: symbolon::ca::Profile::Client,
            lifetime_secs: 60,
        };
        let _ = grant.validate();
    }
}
