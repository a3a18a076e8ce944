//! The admin API: HTTPS on its own listener (127.0.0.1:9443 by default), authenticated by an
//! admin client certificate (from a CA kept apart from client CAs) or a bearer token; anything
//! else gets 401 and no data. Every change is a store transaction that is applied only if the
//! resulting snapshot is valid, recorded in the audit log, and live within the request.

mod api;
mod authz_api;
mod error;
mod sidecar_api;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;
use tracing::{debug, info};

pub use error::ApiError;

use crate::config::AdminConfig;
use crate::gateway::{GatewayError, State};
use crate::store::{self, Tx};

/// Who made a request: `cert:<sha256>` or `token:<name>`. Written to the audit log.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

/// The admin certificate of a connection, set by the listener.
#[derive(Clone, Debug)]
struct PeerCert(Option<AdminCert>);

/// What revocation needs to know about an admin certificate.
#[derive(Clone, Debug)]
struct AdminCert {
    fingerprint: String,
    serial: String,
    /// SHA-256 of the issuing admin CA's SubjectPublicKeyInfo.
    issuer: Option<String>,
}

impl AdminCert {
    fn of(
        der: &rustls::pki_types::CertificateDer<'_>,
        cas: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Self {
        let serial = crate::pki::CertInfo::parse(der)
            .map(|i| crate::revocation::normalize_serial(&i.serial_hex))
            .unwrap_or_default();
        let issuer = cas
            .iter()
            .find(|ca| crate::pki::signed_by(der, ca))
            .and_then(|ca| crate::tls::verify::spki_key(ca));
        Self {
            fingerprint: crate::pki::fingerprint_sha256(der),
            serial,
            issuer,
        }
    }
}

pub(crate) struct App {
    pub state: Arc<State>,
    /// Self-service proof-of-possession challenges handed out and not yet used.
    pub challenges: Challenges,
}

/// What the `[admin]` section configures and a reload replaces: the listener's TLS (its
/// certificate and the admin CA) and the bearer tokens. Built in full before it replaces the
/// old one, so a broken admin file fails the reload and changes nothing.
pub struct Live {
    acceptor: tokio_rustls::TlsAcceptor,
    tokens: Vec<Token>,
    /// The admin CA's certificates, to find the issuer of an admin certificate (revocation).
    cas: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Their keys: an admin certificate whose CA is no longer among them is refused, on
    /// connections made before the change too.
    ca_keys: Vec<String>,
    listen: SocketAddr,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Live {
    pub fn build(config: &AdminConfig) -> Result<Self, GatewayError> {
        let (tls, cas) = tls_config(config)?;
        let mut tokens: Vec<Token> = Vec::new();
        for t in &config.tokens {
            let digest = decode_hex(&t.sha256).ok_or_else(|| {
                GatewayError::Admin(format!(
                    "token '{}': sha256 must be 64 hex characters (the SHA-256 of the token). Fix: create one with `symbolon admin-token {}`",
                    t.name, t.name
                ))
            })?;
            let admin = match t.scope.as_str() {
                "admin" => true,
                "self-service" => false,
                other => {
                    return Err(GatewayError::Admin(format!(
                        "token '{}': scope '{other}' must be admin or self-service",
                        t.name
                    )));
                }
            };
            if tokens.iter().any(|k| k.name == t.name) {
                return Err(GatewayError::Admin(format!(
                    "two tokens are named '{}'. Fix: give each token its own name (it is the actor in the audit log)",
                    t.name
                )));
            }
            if !(1..=100_000).contains(&t.max_identities) {
                return Err(GatewayError::Admin(format!(
                    "token '{}': max_identities {} is out of range; it must be between 1 and 100000",
                    t.name, t.max_identities
                )));
            }
            tokens.push(Token {
                name: t.name.clone(),
                sha256: digest,
                admin,
                max_identities: t.max_identities,
            });
        }
        let ca_keys = cas
            .iter()
            .filter_map(|c| crate::tls::verify::spki_key(c))
            .collect();
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            tokens,
            ca_keys,
            cas,
            listen: config.listen,
        })
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
}

struct Token {
    name: String,
    sha256: Vec<u8>,
    admin: bool,
    max_identities: usize,
}

impl App {
    /// Fetches the CRL URLs of `crls` that have no cached copy yet, before a change takes the
    /// lock (`issuers`: the CAs of the bundle they belong to).
    pub async fn prefetch_crls(
        &self,
        crls: Option<&store::BundleCrls>,
        issuers: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<(), ApiError> {
        let Some(c) = crls else { return Ok(()) };
        let config = self.state.config.load_full();
        crate::gateway::prefetch_crls(&config, &c.urls, issuers)
            .await
            .map_err(|e| {
                ApiError::invalid(
                    "crl_unavailable",
                    e,
                    "check the URL; the CRL must be signed by a CA of this bundle (nothing was changed)",
                )
            })
    }

    /// How many identities the token behind `actor` may create.
    pub fn max_identities(&self, actor: &str) -> usize {
        let live = self.state.admin.load();
        live.as_ref()
            .map_or(&[][..], |l| &l.tokens[..])
            .iter()
            .find(|t| actor.strip_prefix("token:") == Some(t.name.as_str()))
            .map_or(10, |t| t.max_identities)
    }
}

/// Single-use challenges for self-service proof of possession: random, bound to the caller
/// that asked, valid for 5 minutes, at most 10,000 outstanding (64 per caller).
#[derive(Default)]
pub(crate) struct Challenges {
    open: std::sync::Mutex<std::collections::HashMap<String, (String, i64)>>,
}

const CHALLENGE_TTL: i64 = 300;

impl Challenges {
    /// A new challenge for `actor` and when it expires; `None` when too many are outstanding.
    pub fn issue(&self, actor: &str) -> Option<(String, i64)> {
        let mut bytes = [0u8; 24];
        aws_lc_rs::rand::fill(&mut bytes).ok()?;
        let challenge = format!("symbolon-self-service:v1:{}", crate::pki::hex(&bytes));
        let now = crate::pki::unix_now();
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|_, (_, exp)| *exp > now);
        let mine = open.values().filter(|(a, _)| a == actor).count();
        if open.len() >= 10_000 || mine >= 64 {
            return None;
        }
        let expires = now + CHALLENGE_TTL;
        open.insert(challenge.clone(), (actor.to_string(), expires));
        Some((challenge, expires))
    }

    /// Uses up `challenge`: true if this caller was given it and it has not expired.
    pub fn take(&self, actor: &str, challenge: &str) -> bool {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match open.remove(challenge) {
            Some((a, exp)) => a == actor && exp > crate::pki::unix_now(),
            None => false,
        }
    }
}

/// Binds the admin listener and serves it until `shutdown`.
pub async fn start(
    config: &AdminConfig,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), GatewayError> {
    let live = Arc::new(Live::build(config)?);
    state.admin.store(Some(live));
    let limits = state.limits;
    let snapshots = state.clone();
    let app = Arc::new(App {
        state,
        challenges: Challenges::default(),
    });
    let router = api::router(app.clone(), config.max_upload_bytes)
        .layer(axum::middleware::from_fn_with_state(app, authenticate));
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: config.listen,
            setting: "admin.listen",
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
        addr: config.listen,
        setting: "admin.listen",
        source,
    })?;
    // A quarter per client address: one address cannot lock the operator out.
    let limiter = crate::listener::Limiter::new("admin", limits.admin, (limits.admin / 4).max(4));
    let drain = crate::listener::Drain::default();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer, permit) = tokio::select! {
                x = crate::listener::accept(&listener, &limiter) => x,
                _ = shutdown.changed() => return,
            };
            // The TLS settings as last reloaded.
            let Some(live) = snapshots.admin.load_full() else {
                continue;
            };
            let acceptor = live.acceptor.clone();
            let router = router.clone();
            let watcher = drain.watcher();
            let t = snapshots.snapshot.load().timeouts.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let tls = match tokio::time::timeout(t.handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "admin handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let (_, conn) = tls.get_ref();
                let fingerprint = conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| AdminCert::of(c, &live.cas));
                let h2 = conn.alpn_protocol() == Some(b"h2");
                let peer_cert = PeerCert(fingerprint);
                let activity = crate::listener::Activity::new(h2);
                let svc = crate::listener::counted(
                    &activity,
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(peer_cert.clone());
                        router.clone().oneshot(req.map(axum::body::Body::new))
                    },
                );
                let io = TokioIo::new(crate::listener::Tracked::new(tls, activity.clone()));
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(None);
                let conn = builder.serve_connection(io, svc);
                crate::listener::supervise(
                    "admin",
                    conn,
                    |c| c.graceful_shutdown(),
                    &activity,
                    crate::listener::ConnTimeouts::from_config(&t),
                    watcher,
                    None,
                )
                .await;
            });
        }
    });
    info!(%addr, "admin API listening");
    Ok((addr, task))
}

type AdminTls = (
    Arc<ServerConfig>,
    Vec<rustls::pki_types::CertificateDer<'static>>,
);

fn tls_config(config: &AdminConfig) -> Result<AdminTls, GatewayError> {
    let admin_err = |e: &dyn std::fmt::Display| GatewayError::Admin(e.to_string());
    let chain = crate::pki::load_certs(&config.cert).map_err(|e| admin_err(&e))?;
    let key = crate::pki::load_key(&config.key).map_err(|e| admin_err(&e))?;
    crate::pki::certified_key(chain.clone(), key.clone_key(), &config.cert, &config.key)
        .map_err(|e| admin_err(&e))?;
    let bundle = crate::pki::load_trust_bundle(&config.client_ca).map_err(|e| admin_err(&e))?;
    crate::pki::refuse_expired(&bundle, rustls::pki_types::UnixTime::now())
        .map_err(|e| admin_err(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in &bundle.certs {
        roots.add(c.clone()).map_err(|e| admin_err(&e))?;
    }
    let provider = crate::tls::server::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| admin_err(&e))?;
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| admin_err(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| admin_err(&e))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(tls), bundle.certs))
}

async fn authenticate(AxState(app): AxState<Arc<App>>, mut req: Request, next: Next) -> Response {
    let cert = req.extensions().get::<PeerCert>().and_then(|p| p.0.clone());
    // An admin certificate revoked since the connection was made is refused at once.
    if let Some(c) = &cert
        && app
            .state
            .snapshot
            .load()
            .revocations
            .lookup(&c.fingerprint, c.issuer.as_deref().unwrap_or(""), &c.serial)
            .is_some()
    {
        return ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            "certificate_revoked",
            "this admin certificate is revoked",
            "use another admin certificate or a token",
        )
        .into_response();
    }
    let live = app.state.admin.load();
    if let Some(c) = &cert
        && !live
            .as_ref()
            .is_some_and(|l| c.issuer.as_ref().is_some_and(|k| l.ca_keys.contains(k)))
    {
        return ApiError::new(
            http::StatusCode::UNAUTHORIZED,
            "admin_ca_changed",
            "the CA of this admin certificate is no longer the admin CA",
            "connect again with a certificate of the current admin CA, or use a token",
        )
        .into_response();
    }
    let from_cert = cert.map(|c| format!("cert:{}", c.fingerprint));
    let actor = from_cert.map(|a| (a, true)).or_else(|| {
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)?
            .to_str()
            .ok()?;
        let token = header.strip_prefix("Bearer ")?.trim();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        live.as_ref()?
            .tokens
            .iter()
            .find(|t| {
                aws_lc_rs::constant_time::verify_slices_are_equal(digest.as_ref(), &t.sha256)
                    .is_ok()
            })
            .map(|t| (format!("token:{}", t.name), t.admin))
    });
    let self_service_call = req.method() == http::Method::POST
        && matches!(
            req.uri().path(),
            "/api/v1/self-service/identities" | "/api/v1/self-service/challenge"
        );
    match actor {
        Some((_, false)) if !self_service_call => {
            ApiError::new(
                http::StatusCode::FORBIDDEN,
                "forbidden",
                "a self-service token may only enroll identities",
                "use POST /api/v1/self-service/challenge and /api/v1/self-service/identities, or an admin credential",
            )
            .into_response()
        }
        Some((a, _)) => {
            req.extensions_mut().insert(Actor(a));
            next.run(req).await
        }
        None => ApiError::unauthorized().into_response(),
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One admin change: the change lock and a store transaction. `commit` validates the whole new
/// snapshot, writes the audit record, commits and publishes; dropping it changes nothing.
pub(crate) struct Change<'a> {
    _guard: tokio::sync::MutexGuard<'a, ()>,
    pub tx: Tx,
    app: &'a App,
}

impl<'a> Change<'a> {
    pub async fn begin(app: &'a App) -> Result<Self, ApiError> {
        let guard = app.state.change_lock().await;
        let tx = app.state.store.begin().await?;
        Ok(Self {
            _guard: guard,
            tx,
            app,
        })
    }

    /// Everything in the store as this change sees it, private keys opened.
    pub async fn current(&mut self) -> Result<store::StoreState, ApiError> {
        let mut st = store::load_all(&mut self.tx).await?;
        store::open_keys(&mut st, self.app.state.store.sealer())?;
        Ok(st)
    }

    pub async fn commit(
        mut self,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), ApiError> {
        // No network here: CRL URLs a change attaches were fetched before it took the lock.
        let state = store::load_all(&mut self.tx).await?;
        let snapshot = self.app.state.build(&state).map_err(ApiError::snapshot)?;
        store::insert_audit(&mut self.tx, &actor.0, action, target, detail).await?;
        self.tx.commit().await?;
        self.app.state.publish(snapshot);
        info!(target: "symbolon::audit", actor = %actor.0, action, object = target, detail, "change applied");
        Ok(())
    }
}
