//! The gateway as a TLS client towards `https://` upstreams: which CAs the upstream's
//! certificate must chain to, the server name to check, the client credential to present, and
//! one connection pool per distinct setting.
//!
//! A pool is keyed by the SHA-256 of everything that shapes its TLS (trust anchors, server name,
//! credential chain, `require_mtls`), so two routes with different credentials never share a
//! connection, while routes with identical settings do. Pools outlive snapshots: a reload that
//! changes nothing keeps its warm connections; a rotated credential gets a new pool and requests
//! in flight finish on the old one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::lock;

/// What the upstream's certificate must chain to.
#[derive(Clone, Debug)]
pub enum Roots {
    /// The operating system's CA certificates.
    System,
    /// A named trust bundle (`label` names it in errors).
    Bundle {
        label: String,
        certs: Vec<CertificateDer<'static>>,
    },
}

/// Everything that decides how the gateway talks TLS to one upstream.
#[derive(Clone, Debug)]
pub struct TlsSpec {
    pub roots: Roots,
    /// Name sent as SNI and checked against the certificate; default: the URL's host.
    pub server_name: Option<String>,
    /// Client credential (label, certificate chain and key) presented when asked.
    pub credential: Option<(String, Arc<CertifiedKey>)>,
    /// Fail instead of going on without a client certificate when the upstream asks for none.
    pub require_mtls: bool,
}

/// Why an upstream TLS connection could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("'{0}' is not a valid TLS server name")]
    ServerName(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
    #[error(
        "the upstream did not ask for a client certificate, but the route requires upstream mTLS (require_mtls), so the request was not sent"
    )]
    NoClientAuth,
    #[error(
        "no system CA certificates were found ({0}). Fix: install the ca-certificates package, or name a trust_bundle for the upstream"
    )]
    NoSystemRoots(String),
    #[error("cannot build the upstream TLS configuration: {0}")]
    Config(String),
}

/// A pooled HTTP/1.1 client over TLS with one fixed [`TlsSpec`].
pub type TlsClient = Client<TlsConnector, Incoming>;

/// A route's (or sidecar's) TLS pool and the settings it was made with.
pub struct TlsUpstream {
    pub client: Arc<TlsClient>,
    pub spec: TlsSpec,
}

impl std::fmt::Debug for TlsUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsUpstream")
            .field("roots", &self.spec.roots_label())
            .field("server_name", &self.spec.server_name)
            .field("credential", &self.spec.credential.as_ref().map(|c| &c.0))
            .field("require_mtls", &self.spec.require_mtls)
            .finish()
    }
}

impl TlsSpec {
    /// How the trust is named to an operator.
    pub fn roots_label(&self) -> String {
        match &self.roots {
            Roots::System => "the system CA certificates".to_string(),
            Roots::Bundle { label, .. } => format!("trust bundle {label}"),
        }
    }
}

/// Pools by setting, shared by every snapshot.
pub struct Pools {
    connect_timeout: Duration,
    idle_timeout: Duration,
    clients: Mutex<HashMap<[u8; 32], Weak<TlsUpstream>>>,
}

impl Pools {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            idle_timeout,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for `spec`: the existing pool when a live snapshot already uses the same
    /// settings, otherwise a new one.
    pub fn client(&self, spec: TlsSpec) -> Result<Arc<TlsUpstream>, UpstreamTlsError> {
        let key = spec_key(&spec);
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(&key).and_then(Weak::upgrade) {
            return Ok(c);
        }
        clients.retain(|_, w| w.strong_count() > 0);
        let connector = TlsConnector::new(&spec, self.connect_timeout)?;
        let client = Arc::new(
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(self.idle_timeout)
                .pool_timer(TokioTimer::new())
                .build(connector),
        );
        let upstream = Arc::new(TlsUpstream { client, spec });
        clients.insert(key, Arc::downgrade(&upstream));
        Ok(upstream)
    }

    /// Number of distinct upstream TLS pools in use.
    pub fn len(&self) -> usize {
        lock(&self.clients)
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn spec_key(spec: &TlsSpec) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    match &spec.roots {
        Roots::System => field(b"system"),
        Roots::Bundle { certs, .. } => {
            field(b"bundle");
            for c in certs {
                field(c);
            }
        }
    }
    field(spec.server_name.as_deref().unwrap_or("").as_bytes());
    if let Some((_, ck)) = &spec.credential {
        for c in &ck.cert {
            field(c);
        }
    }
    field(&[u8::from(spec.require_mtls)]);
    let digest = ctx.finish();
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// The system's CA certificates, read once.
fn system_roots() -> Result<Arc<RootCertStore>, UpstreamTlsError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "the system store is empty".into());
                return Err(why);
            }
            Ok(Arc::new(store))
        })
        .clone()
        .map_err(UpstreamTlsError::NoSystemRoots)
}

/// Presents the credential when asked and notes that it was asked (per connection).
#[derive(Debug)]
struct Presenter {
    key: Option<Arc<CertifiedKey>>,
    asked: Arc<AtomicBool>,
}

impl ResolvesClientCert for Presenter {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::Release);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// Connects TCP, then TLS with the spec's settings. A `tower::Service<Uri>` for hyper's client,
/// which clones it for every request (so it is one `Arc`).
#[derive(Clone)]
pub struct TlsConnector(Arc<ConnectorInner>);

struct ConnectorInner {
    http: HttpConnector,
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    credential: Option<Arc<CertifiedKey>>,
    require_mtls: bool,
}

impl TlsConnector {
    fn new(spec: &TlsSpec, connect_timeout: Duration) -> Result<Self, UpstreamTlsError> {
        let roots = match &spec.roots {
            Roots::System => system_roots()?,
            Roots::Bundle { certs, label } => {
                let mut store = RootCertStore::empty();
                for c in certs {
                    store.add(c.clone()).map_err(|e| {
                        UpstreamTlsError::Config(format!("trust bundle {label}: {e}"))
                    })?;
                }
                Arc::new(store)
            }
        };
        let builder = ClientConfig::builder_with_provider(crate::tls::server::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| UpstreamTlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let credential = spec.credential.as_ref().map(|(_, ck)| ck.clone());
        let mut config = builder.with_client_cert_resolver(Arc::new(Presenter {
            key: credential.clone(),
            asked: Arc::new(AtomicBool::new(false)),
        }));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if spec.require_mtls {
            // A resumed session skips the certificate request, so every connection is full.
            config.resumption = rustls::client::Resumption::disabled();
        }
        let server_name = match &spec.server_name {
            Some(n) => Some(
                ServerName::try_from(n.clone())
                    .map_err(|_| UpstreamTlsError::ServerName(n.clone()))?,
            ),
            None => None,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        Ok(Self(Arc::new(ConnectorInner {
            http,
            config: Arc::new(config),
            server_name,
            credential,
            require_mtls: spec.require_mtls,
        })))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for TlsConnector {
    type Response = TlsConn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // HttpConnector is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let inner = &self.0;
        let tcp = inner.http.clone().call(uri);
        let mut config = inner.config.clone();
        let asked = Arc::new(AtomicBool::new(false));
        if inner.require_mtls {
            let mut per_conn = (*config).clone();
            per_conn.client_auth_cert_resolver = Arc::new(Presenter {
                key: inner.credential.clone(),
                asked: asked.clone(),
            });
            config = Arc::new(per_conn);
        }
        let server_name = inner.server_name.clone();
        let require_mtls = inner.require_mtls;
        Box::pin(async move {
            let name = match server_name {
                Some(n) => n,
                None => ServerName::try_from(host.clone())
                    .map_err(|_| UpstreamTlsError::ServerName(host))?,
            };
            let tcp = tcp
                .await
                .map_err(|e| UpstreamTlsError::Connect(crate::telemetry::error_chain(&e)))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp.into_inner())
                .await
                .map_err(UpstreamTlsError::Handshake)?;
            if require_mtls && !asked.load(Ordering::Acquire) {
                return Err(UpstreamTlsError::NoClientAuth.into());
            }
            Ok(TlsConn(TokioIo::new(tls)))
        })
    }
}

/// One TLS connection to an upstream, as hyper's client uses it.
pub struct TlsConn(TokioIo<TlsStream<TcpStream>>);

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// What went wrong with an upstream's TLS, in words an operator can act on, if the error (or
/// one of its causes) is a TLS problem: `(detail, hint)`.
pub fn explain_tls_failure(
    e: &(dyn std::error::Error + 'static),
    spec: &TlsSpec,
) -> Option<(String, String)> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<UpstreamTlsError>() {
            if let UpstreamTlsError::Connect(_) = t {
                // Not a TLS problem: reported as an unreachable upstream.
                return None;
            }
            if let UpstreamTlsError::Handshake(io) = t
                && let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                return Some(explain_rustls(r, spec));
            }
            let hint = match t {
                UpstreamTlsError::NoClientAuth => "the upstream is not enforcing mTLS: turn on client-certificate verification at the upstream, or set require_mtls = false on the route if that is intended".to_string(),
                _ => "check the route's upstream_tls settings".into(),
            };
            return Some((t.to_string(), hint));
        }
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(explain_rustls(r, spec));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(explain_rustls(r, spec));
        }
        cur = err.source();
    }
    None
}

fn explain_rustls(e: &rustls::Error, spec: &TlsSpec) -> (String, String) {
    use rustls::{AlertDescription as A, CertificateError as C};
    let trust = spec.roots_label();
    let credential = spec
        .credential
        .as_ref()
        .map(|(l, _)| format!("credential '{l}'"))
        .unwrap_or_else(|| "no client credential".into());
    let detail = format!("TLS with the upstream failed: {e}");
    let hint = match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "the upstream's certificate does not chain to {trust}: set the route's upstream trust_bundle to the CA that issued it"
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            "the upstream's certificate is not valid for the name the gateway checks: set server_name to a name in its certificate".into()
        }
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the upstream's certificate has expired: renew it at the upstream".into()
        }
        rustls::Error::AlertReceived(
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::AccessDenied
            | A::DecryptError
            | A::CertificateExpired
            | A::CertificateRevoked
            | A::HandshakeFailure,
        ) => format!(
            "the upstream refused the gateway's client certificate ({credential}): give the route a credential the upstream trusts"
        ),
        _ => format!("check the upstream's TLS settings against the route's ({trust}, {credential})"),
    };
    (detail, hint)
}
