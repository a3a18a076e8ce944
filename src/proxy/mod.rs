//! The data plane: accept → TLS by SNI → client verdict → HTTP/1.1 or HTTP/2 → request pipeline.
//!
//! Each connection reads the snapshot current at accept time for its TLS settings; each request
//! reads the current snapshot for routing, so route changes reach live connections at once.

mod ca_service;
mod echo;
pub mod headers;
pub(crate) mod http;
pub mod respond;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::rt::TokioIo;
use rustls::server::Acceptor;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::LazyConfigAcceptor;
use tracing::debug;

use crate::identity::ClientIdentity;
use crate::listener::{Activity, ConnTimeouts, Drain, Ends, Limiter, Permit, Tracked};
use crate::shared::Shared;
use crate::tls::{Mode, Verdict};

/// The response body type of the data plane.
pub type RespBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// What every request on a connection knows about it.
#[derive(Debug)]
pub struct ConnContext {
    pub peer: SocketAddr,
    pub sni: Option<String>,
    /// Name of the domain whose trust authenticated this connection.
    pub domain: String,
    /// The domain's mTLS mode when the connection was made.
    pub mode: Mode,
    pub identity: ClientIdentity,
    /// Fingerprints of the CA certificates on the verified path (for CA rules).
    pub chain_cas: Vec<String>,
}

/// Accepts connections within `limiter`'s caps until `shutdown` turns true, then hands back
/// `drain`, which every accepted connection holds until it ends.
pub async fn accept_loop(
    state: Arc<Shared>,
    listener: TcpListener,
    limiter: Arc<Limiter>,
    drain: Drain,
    mut shutdown: watch::Receiver<bool>,
) -> Drain {
    loop {
        tokio::select! {
            (tcp, peer, permit) = crate::listener::accept(&listener, &limiter) => {
                tokio::spawn(serve_connection(state.clone(), tcp, peer, drain.watcher(), permit));
            },
            _ = shutdown.changed() => break,
        }
    }
    drain
}

async fn serve_connection(
    state: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    drain: watch::Receiver<bool>,
    _permit: Permit,
) {
    // Subscribed before the snapshot is read: a change published while the handshake runs
    // (under the old trust) is then still unseen, and the connection is checked against it.
    let changes = state.subscribe();
    let snapshot = state.snapshot();
    // One deadline for the ClientHello and the rest of the handshake.
    let deadline = tokio::time::Instant::now() + snapshot.timeouts.handshake;
    let start = match tokio::time::timeout_at(
        deadline,
        LazyConfigAcceptor::new(Acceptor::default(), Tls12Alerts(tcp)),
    )
    .await
    {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            handshake_failed("not_tls");
            debug!(%peer, error = %e, "not a TLS ClientHello");
            return;
        }
        Err(_) => {
            handshake_failed("timeout");
            return;
        }
    };
    let sni = start
        .client_hello()
        .server_name()
        .map(str::to_ascii_lowercase);
    let Some(domain) = snapshot.domain_for_sni(sni.as_deref()).cloned() else {
        handshake_failed("no_domain");
        debug!(%peer, "no domain is configured; closing the connection");
        return;
    };
    let accept = start.into_stream(domain.tls.clone()).into_fallible();
    let tls = match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err((err, tcp))) => {
            let reason = handshake_error_reason(&err);
            handshake_failed(reason);
            debug!(%peer, sni = sni.as_deref().unwrap_or(""), domain = %domain.name, reason, error = %err, "handshake failed");
            linger(tcp.0).await;
            return;
        }
        Err(_) => {
            handshake_failed("timeout");
            return;
        }
    };
    let (_, conn) = tls.get_ref();
    let peer_certs = conn.peer_certificates();
    // Verified for this connection (resumed sessions never ran the verifier).
    let (verdict, chain) = domain.verifier.verdict(peer_certs);
    let identity = ClientIdentity::new(verdict, peer_certs, chain);
    let reason = match identity.verdict {
        Verdict::Success => "verified",
        Verdict::None => "no_certificate",
        Verdict::Failed(r) => r.as_str(),
    };
    if domain.mode == Mode::Require && identity.verdict != Verdict::Success {
        // Only reachable for resumed sessions whose chain is no longer trusted (a revocation
        // ends every older ticket, so those get a full handshake and the proper alert).
        metrics::counter!("symbolon_handshakes_total", "result" => "rejected", "reason" => reason)
            .increment(1);
        let mut tls = tls;
        let _ = tls.shutdown().await;
        return;
    }
    metrics::counter!("symbolon_handshakes_total", "result" => "accepted", "reason" => reason)
        .increment(1);
    if let (Some(leaf), Verdict::Success) = (&identity.leaf, identity.verdict) {
        state.expiry.saw_client(&domain.name, leaf);
    }
    let chain_cas = identity
        .chain
        .as_ref()
        .map(|c| c.ca_fingerprints())
        .unwrap_or_default();
    let ends = trust_ends(
        &state,
        changes,
        &domain,
        sni.as_deref(),
        peer_certs,
        &identity,
    );
    let h2 = conn.alpn_protocol() == Some(b"h2");
    let ctx = Arc::new(ConnContext {
        peer,
        sni,
        domain: domain.name.clone(),
        mode: domain.mode,
        identity,
        chain_cas,
    });
    let timeouts = ConnTimeouts::from_config(&snapshot.timeouts);
    drop(snapshot);
    let activity = Activity::new(h2);
    let svc_state = state.clone();
    let svc = crate::listener::counted(&activity, move |req| {
        http::handle(req, ctx.clone(), svc_state.clone())
    });
    let io = TokioIo::new(Tracked::new(tls, activity.clone()));
    let conn = state.http.serve_connection(io, svc);
    crate::listener::supervise(
        "data",
        conn,
        |c| c.graceful_shutdown(),
        &activity,
        timeouts,
        drain,
        Some(ends),
    )
    .await;
}

/// When an open connection must end because trust moved on: its certificate (or one on its
/// path) expires, or a new snapshot (a revocation, a new CRL, another bundle, `optional` →
/// `require`) no longer accepts what it was accepted with.
fn trust_ends(
    state: &Arc<Shared>,
    changes: watch::Receiver<u64>,
    domain: &Arc<crate::snapshot::Domain>,
    sni: Option<&str>,
    peer_certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    identity: &ClientIdentity,
) -> Ends {
    // Only a verified path can expire out from under a connection (an `optional` domain's
    // client that failed verification was accepted as failed, whatever its dates).
    let until = identity
        .chain
        .as_ref()
        .filter(|_| identity.verdict == Verdict::Success)
        .map(|c| i64::try_from(c.valid_until()).unwrap_or(i64::MAX))
        .map(|t| {
            let secs = (t - crate::pki::unix_now()).max(0) as u64;
            tokio::time::Instant::now() + Duration::from_secs(secs.min(100 * 365 * 86_400))
        });
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> = peer_certs
        .unwrap_or_default()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    let was = identity.verdict;
    let label = format!(
        "{} {}",
        identity
            .leaf
            .as_ref()
            .map_or("-", |l| l.fingerprint_sha256.as_str()),
        domain.name
    );
    let (state, sni, name) = (state.clone(), sni.map(str::to_string), domain.name.clone());
    Ends {
        until,
        changes,
        label,
        still_ok: Box::new(move || {
            let snapshot = state.snapshot();
            let Some(now) = snapshot.domain_for_sni(sni.as_deref()) else {
                return Err("domain_removed".into());
            };
            if now.name != name {
                return Err("domain_changed".into());
            }
            let peer = (!certs.is_empty()).then_some(&certs[..]);
            let (verdict, _) = now.verifier.verdict(peer);
            let lost = was == Verdict::Success && verdict != Verdict::Success;
            if lost || now.mode == Mode::Require && verdict != Verdict::Success {
                return Err(crate::identity::verify_string(verdict));
            }
            Ok(())
        }),
    }
}

/// rustls answers a TLS 1.2 client that sends no certificate to a `require` domain with the
/// `certificate_required` alert (116), which exists only in TLS 1.3; TLS 1.2 clients (OpenSSL,
/// Java) print it as an unknown alert. This stream rewrites that one plaintext alert record to
/// `handshake_failure` (40), as RFC 5246 §7.4.6 says. TLS 1.3 alerts are encrypted and never
/// match; everything else passes through untouched.
struct Tls12Alerts<S>(S);

/// A TLS 1.2 record (type alert, version 1.2, length 2): fatal, certificate_required.
const TLS12_CERTIFICATE_REQUIRED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 116];
const TLS12_HANDSHAKE_FAILURE: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40];

impl<S: AsyncRead + Unpin> AsyncRead for Tls12Alerts<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tls12Alerts<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let buf = if buf == TLS12_CERTIFICATE_REQUIRED {
            &TLS12_HANDSHAKE_FAILURE[..]
        } else {
            buf
        };
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if bufs.iter().filter(|b| !b.is_empty()).count() == 1
            && let Some(b) = bufs.iter().find(|b| !b.is_empty())
            && **b == TLS12_CERTIFICATE_REQUIRED
        {
            return Pin::new(&mut self.0).poll_write(cx, &TLS12_HANDSHAKE_FAILURE);
        }
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

fn handshake_failed(reason: &'static str) {
    metrics::counter!("symbolon_handshakes_total", "result" => "rejected", "reason" => reason)
        .increment(1);
}

/// A short reason code for a failed handshake.
fn handshake_error_reason(err: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, Error as E};
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
        return match err.kind() {
            std::io::ErrorKind::UnexpectedEof => "eof",
            _ => "io_error",
        };
    };
    match tls {
        E::NoCertificatesPresented => "no_certificate",
        E::InvalidCertificate(C::UnknownIssuer) => "unknown_ca",
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
        E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "not_yet_valid",
        E::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => "wrong_usage",
        E::InvalidCertificate(C::BadSignature) => "bad_signature",
        E::InvalidCertificate(C::Revoked) => "revoked",
        E::InvalidCertificate(
            C::ExpiredRevocationList | C::ExpiredRevocationListContext { .. },
        ) => "crl_expired",
        E::InvalidCertificate(C::Other(other)) => other
            .0
            .downcast_ref::<crate::tls::verify::Rejected>()
            .map_or("bad_certificate", |r| r.0.as_str()),
        E::InvalidCertificate(_) => "bad_certificate",
        E::PeerIncompatible(_) => "incompatible",
        E::AlertReceived(_) => "client_alert",
        E::NoApplicationProtocol => "no_alpn",
        _ => "tls_error",
    }
}

/// After a failed handshake the alert has been written; clients often sent their first request
/// already. Closing with those bytes unread makes the kernel send a reset, and the client sees
/// "connection reset" instead of the alert. Half-close and drain for at most one second.
async fn linger(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let mut buf = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while total < 256 * 1024 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}
