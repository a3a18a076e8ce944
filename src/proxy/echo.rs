//! The built-in echo upstream (`upstream = "builtin:echo"`): answers with the request line and
//! the headers it would have forwarded, identity headers included. Used by the embedded default
//! and to check what an upstream would see.

use http::{Request, Response, StatusCode};

use super::RespBody;
use super::respond::json_response;
use crate::routing::Route;

pub(super) fn respond<B>(req: &Request<B>, host: &str, route: &Route) -> Response<RespBody> {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.insert(name.as_str().to_string(), serde_json::Value::String(v));
    }
    let body = serde_json::json!({
        "upstream": "builtin:echo",
        "route": route.name,
        "method": req.method().as_str(),
        "host": host,
        "path": route.upstream_path(req.uri().path()),
        "query": req.uri().query(),
        "headers": headers,
    });
    json_response(StatusCode::OK, &body)
}
