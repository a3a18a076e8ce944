//! A real rustls client speaking HTTP/1.1 or HTTP/2 (by ALPN) to the gateway.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::pki::{Leaf, TestCa};

#[derive(Clone)]
pub struct ClientSpec {
    pub roots: Vec<CertificateDer<'static>>,
    pub identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    pub h2: bool,
    pub tls12: bool,
}

impl ClientSpec {
    pub fn new(server_ca: &TestCa) -> Self {
        Self {
            roots: vec![server_ca.cert.der().clone()],
            identity: None,
            h2: false,
            tls12: false,
        }
    }

    pub fn cert(mut self, leaf: &Leaf) -> Self {
        self.identity = Some((leaf.chain(), Arc::new(leaf.key())));
        self
    }

    /// Presents only the leaf, without the intermediates.
    pub fn leaf_only(mut self, leaf: &Leaf) -> Self {
        self.identity = Some((vec![leaf.der.clone()], Arc::new(leaf.key())));
        self
    }

    pub fn h2(mut self) -> Self {
        self.h2 = true;
        self
    }

    pub fn tls12(mut self) -> Self {
        self.tls12 = true;
        self
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for r in &self.roots {
            roots.add(r.clone()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12 {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            // Presented as is, even when rustls's own parser would refuse it (attack tests).
            Some((chain, key)) => {
                let signer = rustls::crypto::aws_lc_rs::default_provider()
                    .key_provider
                    .load_private_key(key.clone_key())
                    .unwrap();
                let certified = Arc::new(rustls::sign::CertifiedKey::new(chain.clone(), signer));
                builder.with_client_cert_resolver(Arc::new(AsIs(certified)))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if self.h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Arc::new(config)
    }
}

#[derive(Debug)]
struct AsIs(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for AsIs {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One open client connection.
pub struct Conn {
    sender: Sender,
    pub sni: String,
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// A header the upstream echoed back (the echo upstreams return the headers they received).
    pub fn seen(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
}

/// Errors and their causes as one string, so tests can look for an alert name.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

impl Conn {
    pub async fn open(addr: SocketAddr, sni: &str, spec: &ClientSpec) -> Result<Conn, String> {
        Self::open_with(addr, sni, spec.config()).await
    }

    /// Opens a connection with a given client config (reuse one to resume sessions).
    pub async fn open_with(
        addr: SocketAddr,
        sni: &str,
        config: Arc<ClientConfig>,
    ) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        Self::over(tcp, sni, config).await
    }

    /// Opens a connection from a given local address (another loopback address is another
    /// client as far as per-address limits go).
    pub async fn open_from(
        local: std::net::IpAddr,
        addr: SocketAddr,
        sni: &str,
        spec: &ClientSpec,
    ) -> Result<Conn, String> {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(local, 0))
            .map_err(|e| e.to_string())?;
        let tcp = socket.connect(addr).await.map_err(|e| e.to_string())?;
        Self::over(tcp, sni, spec.config()).await
    }

    async fn over(tcp: TcpStream, sni: &str, config: Arc<ClientConfig>) -> Result<Conn, String> {
        let connector = TlsConnector::from(config);
        let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
        let tls = connector.connect(name, tcp).await.map_err(|e| chain(&e))?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let io = TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| chain(&e))?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await.map_err(|e| chain(&e))?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Conn {
            sender,
            sni: sni.into(),
            alpn,
            resumed,
        })
    }

    pub async fn get(&mut self, path: &str) -> Result<Resp, String> {
        let host = self.sni.clone();
        self.send(
            Request::get(path)
                .header("host", host)
                .body(Full::default())
                .unwrap(),
        )
        .await
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Resp, String> {
        let resp = self.send_streaming(req).await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.map_err(|e| chain(&e))?.to_bytes();
        Ok(Resp {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// Sends a request and returns as soon as the response headers arrive.
    pub async fn send_streaming(
        &mut self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let resp = match &mut self.sender {
            Sender::H1(s) => s.send_request(req).await.map_err(|e| chain(&e))?,
            Sender::H2(s) => {
                // HTTP/2 carries the host in the URI authority.
                let host = req
                    .headers_mut()
                    .remove("host")
                    .map(|h| h.to_str().unwrap().to_string())
                    .unwrap_or_else(|| self.sni.clone());
                let uri = format!("https://{host}{}", req.uri().path_and_query().unwrap());
                *req.uri_mut() = uri.parse().unwrap();
                s.send_request(req).await.map_err(|e| chain(&e))?
            }
        };
        Ok(resp)
    }
}

/// Opens a connection and sends one GET; any TLS or HTTP failure comes back as its text.
/// A client that is still waiting after 30 s (seen once in a full run under load: the client
/// had no socket left and its request future never resolved) gives up with "timed out" rather
/// than hanging the suite.
pub async fn get(
    addr: SocketAddr,
    sni: &str,
    spec: &ClientSpec,
    path: &str,
) -> Result<Resp, String> {
    let attempt = async {
        let mut conn = Conn::open(addr, sni, spec).await?;
        conn.get(path).await
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// A bare TLS connection (handshake done, no HTTP), to test what the gateway does with it.
pub async fn raw_tls(
    addr: SocketAddr,
    sni: &str,
    spec: &ClientSpec,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(spec.config());
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    connector.connect(name, tcp).await.map_err(|e| chain(&e))
}

/// Reads until the peer closes (EOF or reset); returns what was read and when it closed, or
/// `None` if it stayed open for `within`.
pub async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    within: std::time::Duration,
) -> Option<(Vec<u8>, std::time::Instant)> {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((out, std::time::Instant::now())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}
