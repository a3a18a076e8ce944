//! A small client for the admin API, used by the CLI: HTTPS with the admin client certificate
//! (or a bearer token), one request per connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Why a call to the admin API did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Setup(String),
    #[error(
        "cannot reach the admin API at {addr}: {detail}. Fix: start `symbolon serve`, or pass --server"
    )]
    Connect { addr: String, detail: String },
}

pub struct AdminClient {
    addr: String,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    token: Option<String>,
}

/// Where and how to reach the admin API.
pub struct ClientOptions<'a> {
    /// `https://host:port`
    pub server: &'a str,
    pub cacert: &'a Path,
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub token: Option<String>,
}

impl AdminClient {
    pub fn new(o: ClientOptions<'_>) -> Result<Self, ClientError> {
        let setup = |e: &dyn std::fmt::Display| ClientError::Setup(e.to_string());
        let hostport = o
            .server
            .strip_prefix("https://")
            .ok_or_else(|| {
                ClientError::Setup(format!("--server '{}' must start with https://", o.server))
            })?
            .trim_end_matches('/');
        let host = match hostport.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => hostport,
        };
        let addr = if hostport.contains(':') {
            hostport.to_string()
        } else {
            format!("{hostport}:443")
        };
        let server_name = ServerName::try_from(host.to_string()).map_err(|e| setup(&e))?;
        let mut roots = RootCertStore::empty();
        for c in crate::pki::load_certs(o.cacert).map_err(|e| setup(&e))? {
            roots.add(c).map_err(|e| setup(&e))?;
        }
        let builder = ClientConfig::builder_with_provider(crate::tls::server::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(&e))?
            .with_root_certificates(roots);
        let tls = match (o.cert, o.key, &o.token) {
            (_, _, Some(_)) | (None, _, None) | (_, None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key), None) => {
                let chain = crate::pki::load_certs(cert).map_err(|e| setup(&e))?;
                let key = crate::pki::load_key(key).map_err(|e| setup(&e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| setup(&e))?
            }
        };
        Ok(Self {
            addr,
            server_name,
            tls: Arc::new(tls),
            token: o.token,
        })
    }

    /// Sends one request; returns the status and the body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let connect = |detail: String| ClientError::Connect {
            addr: self.addr.clone(),
            detail,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&self.addr)
            .await
            .map_err(|e| connect(e.to_string()))?
            .collect();
        let addr = addrs.first().ok_or_else(|| connect("no address".into()))?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| connect(crate::telemetry::error_chain(&e)))?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.as_str());
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                req = req.header(http::header::CONTENT_TYPE, content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| connect(crate::telemetry::error_chain(&e)))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| connect(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }
}
