//! The admin API: HTTPS on its own listener (127.0.0.1:9443 by default), authenticated by an
//! admin client certificate (from a CA kept apart from client CAs) or a bearer token; anything
//! else gets 401 and no data. Every change is a store transaction that is applied only if the
//! resulting snapshot is valid, recorded in the audit log, and live within the request.
//!
//! One module per resource (`bundles`, `domains`, `routes`, `identities`, `ca`, …) holds its
//! handlers, its request and response bodies, its OpenAPI paths and its part of an import;
//! `router` merges their routes and OpenAPI documents; `common` has the JSON body extractor
//! and the helpers they share; `view` the bodies several resources use.

pub mod audit;
pub mod bundles;
pub mod ca;
mod common;
pub mod credentials;
pub mod declarative;
pub mod domains;
mod error;
pub mod identities;
pub mod policies;
pub mod reports;
pub mod revocations;
mod router;
pub mod routes;
pub mod rules;
pub mod self_service;
pub mod sidecars;
#[cfg(test)]
mod tests;
pub mod view;

use std::sync::Arc;

use axum::extract::{Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt as _;
use tracing::{debug, info};

pub use error::ApiError;

use crate::config::AdminConfig;
use crate::control::{Audit, Change, Control};

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
    pub control: Arc<Control>,
    /// Self-service proof-of-possession challenges handed out and not yet used.
    pub challenges: Challenges,
}

impl App {
    /// Fetches the CRL URLs of `crls` that have no cached copy yet, before a change takes the
    /// lock (`issuers`: the CAs of the bundle they belong to).
    pub async fn prefetch_crls(
        &self,
        crls: Option<&bundles::CrlsBody>,
        issuers: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<(), ApiError> {
        let Some(c) = crls else { return Ok(()) };
        let config = self.control.config();
        crate::control::crl::prefetch(&config, &c.urls, issuers)
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
        let live = self.control.admin_access();
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
pub fn start(
    config: &AdminConfig,
    control: Arc<Control>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let limits = control.shared().limits;
    let snapshots = control.clone();
    let router = router(control, config.max_upload_bytes);
    // A quarter per client address: one address cannot lock the operator out.
    let limiter = crate::listener::Limiter::new("admin", limits.admin, (limits.admin / 4).max(4));
    let drain = crate::listener::Drain::default();
    let listener_addr = listener.local_addr();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, peer, permit) = tokio::select! {
                x = crate::listener::accept(&listener, &limiter) => x,
                _ = shutdown.changed() => return,
            };
            // The TLS settings as last reloaded.
            let Some(live) = snapshots.admin_access() else {
                continue;
            };
            let acceptor = live.acceptor.clone();
            let router = router.clone();
            let watcher = drain.watcher();
            let t = snapshots.shared().snapshot().timeouts.clone();
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
    if let Ok(addr) = listener_addr {
        info!(%addr, "admin API listening");
    }
    task
}

/// The admin API with its authentication (an admin certificate the listener put in the request's
/// extensions, or a bearer token), ready for `tower::ServiceExt::oneshot`.
pub fn router(control: Arc<Control>, max_upload: usize) -> axum::Router {
    let app = Arc::new(App {
        control,
        challenges: Challenges::default(),
    });
    router::build(app.clone(), max_upload)
        .layer(axum::middleware::from_fn_with_state(app, authenticate))
}

async fn authenticate(AxState(app): AxState<Arc<App>>, mut req: Request, next: Next) -> Response {
    let cert = req.extensions().get::<PeerCert>().and_then(|p| p.0.clone());
    // An admin certificate revoked since the connection was made is refused at once.
    if let Some(c) = &cert
        && app
            .control
            .shared()
            .snapshot()
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
    let live = app.control.admin_access();
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

/// Begins an admin change (the change lock and a store transaction).
pub(crate) async fn begin(app: &App) -> Result<Change<'_>, ApiError> {
    Ok(Change::begin(&app.control).await?)
}

/// Commits an admin change: the whole new snapshot validated, the audit record written with
/// the actor, then published.
pub(crate) async fn commit(
    ch: Change<'_>,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), ApiError> {
    ch.commit(Audit::new(&actor.0, action, target, detail))
        .await
        .map(|_| ())
        .map_err(ApiError::change)
}
