//! What every listener shares (data plane, admin, metrics, sidecars): connection caps per
//! listener and per client address, accept with back-off and metrics, and the supervision of
//! each connection's lifetime. No connection is held forever:
//!
//! - **first request**: a connection that sends nothing after the handshake is closed;
//! - **request header**: a request head that does not arrive in time gets `408` and a close
//!   (HTTP/1; nginx's `client_header_timeout`);
//! - **keep-alive idle** (HTTP/1) and **HTTP/2 idle** (no open stream): closed, HTTP/2 with
//!   GOAWAY;
//! - **maximum age** (nginx's `keepalive_time`, Envoy's `max_connection_duration`): the current
//!   response is the last (HTTP/1 `Connection: close`, HTTP/2 GOAWAY);
//! - **the owner's reasons** (the data plane: the client certificate expired, or the current
//!   trust no longer accepts it) and the process's graceful stop end it the same way.
//!
//! A connection asked to end gets `shutdown_grace` to finish; then it is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::warn;

// === caps ===

/// The connections one listener may hold: in all, and per client address.
pub struct Limiter {
    name: &'static str,
    max: usize,
    per_ip: usize,
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its place.
pub struct Permit {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Limiter {
    pub fn new(name: &'static str, max: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            name,
            max: max.max(1),
            per_ip: per_ip.max(1),
            open: AtomicUsize::new(0),
            by_ip: Mutex::default(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A place for a connection from `ip`, or the reason there is none.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, &'static str> {
        let mut by_ip = self
            .by_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.open.load(Ordering::Relaxed) >= self.max {
            return Err("listener_full");
        }
        let n = by_ip.entry(ip).or_default();
        if *n >= self.per_ip {
            return Err("per_ip_limit");
        }
        *n += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("symbolon_connections_open", "listener" => self.name).increment(1.0);
        Ok(Permit {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let l = &self.limiter;
        let mut by_ip = l
            .by_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
        l.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("symbolon_connections_open", "listener" => l.name).decrement(1.0);
    }
}

/// Accepts the next connection within the caps. Connections over a cap are closed at once and
/// counted (`symbolon_connections_refused_total{listener,reason}`); accept errors (EMFILE…)
/// are counted (`symbolon_accept_errors_total{listener}`) and backed off, 10 ms doubling to 1 s.
pub async fn accept(
    listener: &TcpListener,
    limiter: &Arc<Limiter>,
) -> (TcpStream, SocketAddr, Permit) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                backoff = Duration::from_millis(10);
                match limiter.try_acquire(peer.ip()) {
                    Ok(permit) => {
                        let _ = tcp.set_nodelay(true);
                        return (tcp, peer, permit);
                    }
                    Err(reason) => {
                        metrics::counter!("symbolon_connections_refused_total", "listener" => limiter.name, "reason" => reason).increment(1);
                        drop(tcp);
                    }
                }
            }
            Err(e) => {
                metrics::counter!("symbolon_accept_errors_total", "listener" => limiter.name)
                    .increment(1);
                warn!(listener = limiter.name, error = %e, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Raises the open-file limit to the hard limit (nginx's `worker_rlimit_nofile`); returns the
/// limit in effect.
/// Binds a listening socket (used by every listener, sidecars' too, which bind outside an
/// async context), with the address it got (the actual port when `addr` has port 0).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<(TcpListener, std::net::SocketAddr)> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    Ok((TcpListener::from_std(std_listener)?, local))
}

pub fn raise_nofile_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

// === the process's graceful stop ===

/// Tells every connection to finish and waits until they have.
#[derive(Clone)]
pub struct Drain {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl Drain {
    /// Held by each connection until it ends.
    pub fn watcher(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Connections still open.
    pub fn count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Asks every connection to finish; resolves once all have.
    pub async fn shutdown(&self) {
        let _ = self.tx.send(true);
        self.tx.closed().await;
    }
}

// === one connection ===

/// The timeouts of a connection (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct ConnTimeouts {
    pub first_request: Duration,
    pub request_header: Duration,
    pub keepalive: Duration,
    pub http2_idle: Duration,
    pub max_age: Duration,
    pub grace: Duration,
}

impl ConnTimeouts {
    pub fn from_config(t: &crate::config::Timeouts) -> Self {
        Self {
            first_request: t.first_request,
            request_header: t.request_header,
            keepalive: t.keepalive,
            http2_idle: t.http2_idle,
            max_age: t.max_connection_age,
            grace: t.shutdown_grace,
        }
    }
}

const NONE: u64 = u64::MAX;

/// What a connection is doing, shared by its stream, its service and its supervisor.
pub struct Activity {
    start: Instant,
    /// Requests being served (their response not yet sent in full).
    active: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds since `start` when the last response ended (0: the handshake).
    idle_since: AtomicU64,
    /// Milliseconds since `start` of the first byte of a request head not yet dispatched.
    head_since: AtomicU64,
    h2: AtomicBool,
    /// The request head took too long: answer 408 and end the stream (the supervisor polls
    /// the connection next, which reads, which sees this).
    timed_out: AtomicBool,
}

impl Activity {
    pub fn new(h2: bool) -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            h2: AtomicBool::new(h2),
            timed_out: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// A request was dispatched; the guard ends it when its response is sent (or dropped).
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Release);
        RequestGuard(self.clone())
    }

    fn time_out(&self) {
        self.timed_out.store(true, Ordering::Release);
    }
}

/// One request in flight.
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now_ms(), Ordering::Release);
        a.head_since.store(NONE, Ordering::Release);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

type Req = http::Request<hyper::body::Incoming>;

/// `f` as a hyper service whose requests count as active in `activity` until their responses
/// are sent (what the idle and header deadlines look at).
pub fn counted<F, Fut, B, E>(
    activity: &Arc<Activity>,
    f: F,
) -> impl hyper::service::Service<
    Req,
    Response = http::Response<Guarded<B>>,
    Error = E,
    Future = impl Future<Output = Result<http::Response<Guarded<B>>, E>> + Send + 'static,
> + Clone
+ Send
+ 'static
where
    F: Fn(Req) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<http::Response<B>, E>> + Send + 'static,
    B: Body + Unpin + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let activity = activity.clone();
    hyper::service::service_fn(move |req| {
        let guard = activity.begin();
        let call = f(req);
        async move { call.await.map(|r| r.map(|b| guarded(b, guard))) }
    })
}

/// Serves one plain-HTTP connection (metrics, sidecars) with `handler`: requests counted, the
/// listener's timeouts, a graceful end when `drain` turns true. Returns when the connection
/// ends.
pub async fn serve_plain<F, Fut, B, E>(
    listener: &'static str,
    tcp: TcpStream,
    http: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeouts: ConnTimeouts,
    drain: watch::Receiver<bool>,
    handler: F,
) where
    F: Fn(Req) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<http::Response<B>, E>> + Send + 'static,
    B: Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let activity = Activity::new(false);
    let svc = counted(&activity, handler);
    let io = hyper_util::rt::TokioIo::new(Tracked::new(tcp, activity.clone()));
    let conn = http.serve_connection(io, svc);
    supervise(
        listener,
        conn,
        |c| c.graceful_shutdown(),
        &activity,
        timeouts,
        drain,
        None,
    )
    .await;
}

/// A response body that keeps its request counted as active until it is sent.
pub fn guarded<B>(body: B, guard: RequestGuard) -> Guarded<B> {
    Guarded {
        body,
        _guard: guard,
    }
}

/// See [`guarded`].
pub struct Guarded<B> {
    body: B,
    _guard: RequestGuard,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// A stream that may hold records its TLS layer queued while reading (an alert such as
/// `no_renegotiation`), which would otherwise wait for the next response.
pub trait QueuedWrites {
    fn has_queued_writes(&self) -> bool;
}

impl QueuedWrites for TcpStream {
    fn has_queued_writes(&self) -> bool {
        false
    }
}

impl<S> QueuedWrites for tokio_rustls::server::TlsStream<S> {
    fn has_queued_writes(&self) -> bool {
        self.get_ref().1.wants_write()
    }
}

/// A connection's stream, noting when request bytes arrive; after a header timeout it writes
/// `408` and reports the end of the stream. Records the TLS layer queued while reading are sent
/// at once.
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    sent_408: usize,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            sent_408: 0,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + QueuedWrites + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.activity.timed_out.load(Ordering::Acquire) {
            while this.sent_408 < REQUEST_TIMEOUT.len() {
                match Pin::new(&mut this.inner).poll_write(cx, &REQUEST_TIMEOUT[this.sent_408..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(n)) => this.sent_408 += n,
                    Poll::Pending => return Poll::Pending,
                }
            }
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
            // The end of the stream: hyper gives up on the request head.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let got = &buf.filled()[before..];
        if !got.is_empty() {
            let a = &this.activity;
            if a.requests.load(Ordering::Relaxed) == 0
                && a.head_since.load(Ordering::Acquire) == NONE
                && got.starts_with(H2_PREFACE)
            {
                a.h2.store(true, Ordering::Release);
            }
            if a.active.load(Ordering::Acquire) == 0 && a.head_since.load(Ordering::Acquire) == NONE
            {
                a.head_since.store(a.now_ms(), Ordering::Release);
            }
        }
        if this.inner.has_queued_writes() {
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A reason of the connection's owner to end it: a deadline (the client certificate's
/// expiry), and a check run whenever `changes` moves (a new snapshot: is the client still
/// trusted?).
pub struct Ends {
    pub until: Option<Instant>,
    pub changes: watch::Receiver<u64>,
    /// `Err(why)` (e.g. `FAILED:revoked`): the connection must end.
    pub still_ok: Box<dyn Fn() -> Result<(), String> + Send>,
    /// Names the connection in the log line that says why it ends.
    pub label: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    Idle,
    Header,
    MaxAge,
    Owner,
    Hard,
}

impl Why {
    fn label(self) -> &'static str {
        match self {
            Why::Idle => "idle",
            Why::Header => "request_header",
            Why::MaxAge => "max_age",
            Why::Owner => "trust",
            Why::Hard => "grace_over",
        }
    }
}

/// Runs `conn` to its end under the timeouts; `shutdown` asks it to finish gracefully.
pub async fn supervise<C, E>(
    listener: &'static str,
    conn: C,
    shutdown: impl Fn(Pin<&mut C>),
    activity: &Activity,
    t: ConnTimeouts,
    mut drain: watch::Receiver<bool>,
    mut ends: Option<Ends>,
) where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut closing: Option<Instant> = None;
    let max_age = activity.start + t.max_age;
    loop {
        let a = activity;
        // Once the connection was told to end, only its hard deadline counts: a client that
        // does not let it finish (a stalled read, an unanswered HTTP/2 PING) is dropped then.
        let (deadline, why) = match closing {
            Some(hard) => (hard, Why::Hard),
            None => next_deadline(a, t, max_age, ends.as_ref().and_then(|e| e.until)),
        };
        let changed = async {
            match ends.as_mut() {
                Some(e) => e.changes.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(deadline) => {
                if Instant::now() < deadline {
                    continue;
                }
                if why == Why::Hard {
                    metrics::counter!("symbolon_connections_closed_total", "listener" => listener, "reason" => why.label()).increment(1);
                    return;
                }
                // Idle and header deadlines move with activity: look again before acting.
                let (due, why) = match why {
                    Why::Idle | Why::Header => {
                        next_deadline(a, t, max_age, ends.as_ref().and_then(|e| e.until))
                    }
                    other => (deadline, other),
                };
                if due > Instant::now() {
                    continue;
                }
                metrics::counter!("symbolon_connections_closed_total", "listener" => listener, "reason" => why.label()).increment(1);
                if why == Why::Header && !a.h2.load(Ordering::Acquire) {
                    a.time_out();
                    closing.get_or_insert(Instant::now() + Duration::from_secs(1));
                } else if closing.is_none() {
                    shutdown(conn.as_mut());
                    closing = Some(Instant::now() + if why == Why::Idle { Duration::from_secs(1) } else { t.grace });
                }
                if why == Why::Owner && let Some(e) = ends.as_mut() {
                    e.until = None;
                    tracing::info!(target: "symbolon::conn", listener, conn = %e.label, reason = "EXPIRED", "closing the connection: its client certificate (or a CA on its path) expired");
                }
            }
            _ = drain.changed(), if closing.is_none() => {
                shutdown(conn.as_mut());
                closing = Some(Instant::now() + t.grace);
            }
            ok = changed, if closing.is_none() => {
                let still = match ends.as_ref() {
                    Some(e) if ok => (e.still_ok)().map_err(|why| (why, e.label.clone())),
                    _ => Ok(()),
                };
                if !ok {
                    ends = None;
                }
                if let Err((why, label)) = still {
                    tracing::info!(target: "symbolon::conn", listener, conn = %label, reason = %why, "closing the connection: the current trust no longer accepts its client");
                    metrics::counter!("symbolon_connections_closed_total", "listener" => listener, "reason" => "trust").increment(1);
                    shutdown(conn.as_mut());
                    closing = Some(Instant::now() + t.grace);
                }
            }
        }
    }
}

/// The earliest deadline of a connection not yet told to end.
fn next_deadline(
    a: &Activity,
    t: ConnTimeouts,
    max_age: Instant,
    until: Option<Instant>,
) -> (Instant, Why) {
    let mut next = (max_age, Why::MaxAge);
    let mut consider = |at: Instant, why: Why| {
        if at < next.0 {
            next = (at, why);
        }
    };
    if let Some(until) = until {
        consider(until, Why::Owner);
    }
    if a.active.load(Ordering::Acquire) == 0 {
        let idle = a.at(a.idle_since.load(Ordering::Acquire));
        let head = a.head_since.load(Ordering::Acquire);
        if a.h2.load(Ordering::Acquire) {
            consider(idle + t.http2_idle, Why::Idle);
        } else if head != NONE {
            consider(a.at(head) + t.request_header, Why::Header);
        } else if a.requests.load(Ordering::Relaxed) == 0 {
            consider(idle + t.first_request, Why::Idle);
        } else {
            consider(idle + t.keepalive, Why::Idle);
        }
    }
    next
}
