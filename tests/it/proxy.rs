//! Reverse proxying: routes, prefix stripping, pooling, streaming, and the 4xx/5xx the gateway
//! answers itself.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::support::*;

async fn gateway_with_routes(h: &Harness, routes: &str, extra: &str) -> symbolon::gateway::Gateway {
    let body = format!("{extra}{}{routes}", h.domain("api.test", None, "off"));
    h.start(&body).await
}

fn req(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path)
        .header("host", "api.test")
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn routes_by_host_and_prefix_and_strips_prefixes() {
    let h = Harness::new();
    let up = Upstream::start().await;
    let routes = format!(
        "[[routes]]\nname = \"v1\"\nhost = \"api.test\"\npath_prefix = \"/v1\"\nupstream = \"{}/base\"\nstrip_prefix = true\n\n\
         [[routes]]\nname = \"raw\"\npath_prefix = \"/raw\"\nupstream = \"{}\"\n\n\
         [[routes]]\nname = \"echo\"\npath_prefix = \"/echo\"\nupstream = \"builtin:echo\"\n",
        up.url(),
        up.url()
    );
    let gw = gateway_with_routes(&h, &routes, "").await;
    let mut c = Conn::open(gw.tls_addr(), "api.test", &h.client())
        .await
        .unwrap();
    let r = c.send(req("/v1/users?id=7")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["path"], "/base/users");
    assert_eq!(r.json()["query"], "id=7");
    let r = c.send(req("/raw/x")).await.unwrap();
    assert_eq!(r.json()["path"], "/raw/x");
    let r = c.send(req("/echo/x")).await.unwrap();
    assert_eq!(r.json()["upstream"], "builtin:echo");
    let r = c.send(req("/v1x")).await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "no_route");
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let h = Harness::new();
    let up = Upstream::start().await;
    let gw = gateway_with_routes(&h, &route_all(&up.url()), "").await;
    let mut peers = std::collections::HashSet::new();
    for _ in 0..5 {
        // A new client connection each time: the upstream connection is still reused.
        let r = get(gw.tls_addr(), "api.test", &h.client(), "/")
            .await
            .unwrap();
        peers.insert(r.json()["peer"].as_str().unwrap().to_string());
    }
    assert_eq!(peers.len(), 1, "{peers:?}");
}

#[tokio::test]
async fn upstream_down_is_502_with_the_cause() {
    let h = Harness::new();
    // Bind and drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = gateway_with_routes(&h, &route_all(&format!("http://127.0.0.1:{port}")), "").await;
    let r = get(gw.tls_addr(), "api.test", &h.client(), "/")
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "upstream_unreachable");
    let msg = e["message"].as_str().unwrap().to_lowercase();
    assert!(msg.contains("refused"), "{msg}");
    assert!(e["hint"].as_str().unwrap().len() > 5);
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let h = Harness::new();
    let up = Upstream::start().await;
    let extra = "[timeouts]\nupstream_response = \"300ms\"\n\n";
    let gw = gateway_with_routes(&h, &route_all(&up.url()), extra).await;
    let r = get(gw.tls_addr(), "api.test", &h.client(), "/hang")
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn bodies_are_streamed_both_ways() {
    let h = Harness::new();
    let up = Upstream::start().await;
    let gw = gateway_with_routes(&h, &route_all(&up.url()), "").await;
    for spec in [h.client(), h.client().h2()] {
        let mut c = Conn::open(gw.tls_addr(), "api.test", &spec).await.unwrap();
        // Response: the first chunk arrives while the upstream is still holding the rest.
        let resp = c.send_streaming(req("/stream")).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"first;");
        up.release();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"second");
        // Request: a 3 MB upload arrives whole.
        let big = Bytes::from(vec![b'x'; 3 * 1024 * 1024]);
        let post = http::Request::post("/upload")
            .header("host", "api.test")
            .body(Full::new(big))
            .unwrap();
        let r = c.send(post).await.unwrap();
        assert_eq!(r.json()["body_len"], 3 * 1024 * 1024);
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_fault_400() {
    use tokio::io::AsyncWriteExt as _;
    let h = Harness::new();
    let up = Upstream::start().await;
    let gw = gateway_with_routes(&h, &route_all(&up.url()), "").await;
    for body in [
        // A chunk size that is not hex, and a chunk longer than announced.
        "ZZZ\r\nhello\r\n0\r\n\r\n",
        "3\r\nhello world\r\n0\r\n\r\n",
    ] {
        let mut tls = crate::support::client::raw_tls(gw.tls_addr(), "api.test", &h.client())
            .await
            .unwrap();
        tls.write_all(
            format!(
                "POST /upload HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let (bytes, _) =
            crate::support::client::read_until_closed(&mut tls, std::time::Duration::from_secs(10))
                .await
                .expect("the connection stayed open");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 400"), "{body:?}: {text}");
    }
}
