//! A real HTTP/1.1 upstream on 127.0.0.1:0 that answers with what it received as JSON.
//! `/hang` never answers (for timeouts); `/stream` sends one chunk, then the rest once the test
//! calls `release()` (to prove the gateway streams instead of buffering).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

pub struct Upstream {
    pub addr: SocketAddr,
    release: Arc<Notify>,
    /// Requests received so far.
    pub hits: Arc<std::sync::atomic::AtomicU64>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let release = Arc::new(Notify::new());
        let rel = release.clone();
        let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    return;
                };
                let rel = rel.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        handle(req, peer, rel.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            release,
            hits,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn release(&self) {
        self.release.notify_one();
    }
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    release: Arc<Notify>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path.ends_with("/hang") {
        std::future::pending::<()>().await;
    }
    if path.ends_with("/stream") {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                .await;
            release.notified().await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"second"))))
                .await;
        });
        let stream = tokio_stream_from(rx);
        return Ok(Response::new(StreamBody::new(stream).boxed()));
    }
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        headers.insert(k.to_string(), v.to_str().unwrap_or("<binary>").into());
    }
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "upstream": "test",
        "method": method,
        "path": path,
        "query": query,
        "body_len": body.len(),
        "peer": peer.to_string(),
        "headers": headers,
    });
    Ok(Response::new(
        Full::new(Bytes::from(json.to_string())).boxed(),
    ))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_core::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A real HTTPS upstream on 127.0.0.1:0 (rustls). With a client CA it requires a client
/// certificate from that CA. Each answer names the client certificate the connection
/// presented; `/slow` answers after 300 ms (a request in flight across a change).
pub struct TlsUpstream {
    pub addr: std::net::SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicU64>,
}

impl TlsUpstream {
    pub async fn start(
        server: &super::pki::Leaf,
        client_ca: Option<rustls::pki_types::CertificateDer<'static>>,
    ) -> Self {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = Arc::new(
            builder
                .with_single_cert(server.chain(), server.key())
                .unwrap(),
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| symbolon::pki::fingerprint_sha256(c));
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let client = client.clone();
                        async move {
                            if req.uri().path() == "/slow" {
                                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                            }
                            let json = serde_json::json!({
                                "upstream": "tls",
                                "path": req.uri().path(),
                                "host": req.headers().get("host").and_then(|h| h.to_str().ok()),
                                "client_fingerprint": client,
                            });
                            Ok::<_, Infallible>(Response::new(
                                Full::new(Bytes::from(json.to_string())).boxed(),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { addr, connections }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}
