//! What the data plane reads: the current snapshot, the counters that outlive snapshots, and
//! the connections it makes. Nothing here reaches the store; the control plane
//! ([`crate::control`]) builds snapshots and publishes them through [`Shared::publish`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;

use crate::config::{Config, ResolvedLimits};
use crate::snapshot::Snapshot;
use crate::tls::server::Ticketer;
use crate::upstream::Pools;

/// The data plane's state: shared by every connection, read without locks.
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Plain-HTTP upstreams.
    pub upstream: Client<HttpConnector, Incoming>,
    /// The HTTP/1 and HTTP/2 server settings of the data plane and sidecars.
    pub http: auto::Builder<TokioExecutor>,
    /// Rate-limit buckets, quota use, usage and the transition report (outlive snapshots).
    pub authz: crate::authz::Runtime,
    /// Client certificates seen in traffic and expiry warnings already given.
    pub expiry: crate::expiry::Watch,
    /// Upstream TLS pools, by setting (outlive snapshots).
    pub pools: Pools,
    /// Connection caps per listener (from `[limits]` and the open-file limit, at start).
    pub limits: ResolvedLimits,
    ticketer: Arc<Ticketer>,
    /// Counts published snapshots; subscribers learn when a new one is live.
    generation: watch::Sender<u64>,
    /// The built-in CA's desk (enrollment and renewal on the data plane), set by the control
    /// plane at start. Weak: the control plane owns it.
    ca_desk: OnceLock<Weak<dyn CaDesk>>,
}

impl Shared {
    pub fn new(
        config: &Config,
        snapshot: Snapshot,
        ticketer: Arc<Ticketer>,
        pools: Pools,
        limits: ResolvedLimits,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeouts.upstream_connect));
        connector.set_nodelay(true);
        let upstream = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.timeouts.upstream_idle)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let mut http = auto::Builder::new(TokioExecutor::new());
        // Header and idle timeouts are the supervisor's (crate::listener), which answers 408.
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        http.http2().timer(TokioTimer::new());
        ticketer.set_epoch(snapshot.trust_epoch);
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            upstream,
            http,
            authz: crate::authz::Runtime::default(),
            expiry: crate::expiry::Watch::default(),
            pools,
            limits,
            ticketer,
            generation: watch::channel(0).0,
            ca_desk: OnceLock::new(),
        }
    }

    /// The snapshot new handshakes and requests use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The session-ticket keys every domain's TLS settings share.
    pub fn ticketer(&self) -> Arc<Ticketer> {
        self.ticketer.clone()
    }

    /// Learns of every newly published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// How many snapshots were published since start.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Makes `snapshot` the one new handshakes and requests use; `then` runs before subscribers
    /// are told (the control plane binds sidecar listeners there).
    pub fn publish(&self, snapshot: Snapshot, then: impl FnOnce(&Arc<Snapshot>)) -> Arc<Snapshot> {
        self.expiry.check(
            &snapshot.known_certs,
            crate::pki::unix_now(),
            &snapshot.expiry_warnings,
        );
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        self.ticketer.set_epoch(snapshot.trust_epoch);
        then(&snapshot);
        self.generation.send_modify(|g| *g += 1);
        snapshot
    }

    /// Hands the data plane the built-in CA's desk (once, at start).
    pub fn set_ca_desk(&self, desk: Weak<dyn CaDesk>) {
        let _ = self.ca_desk.set(desk);
    }

    /// The built-in CA's desk, while the control plane runs.
    pub fn ca_desk(&self) -> Option<Arc<dyn CaDesk>> {
        self.ca_desk.get().and_then(Weak::upgrade)
    }
}

/// A certificate the built-in CA issued, as a device receives it.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub chain_pem: String,
    pub serial: String,
    pub not_after: String,
}

/// Why the built-in CA refused, in the terms of an HTTP answer.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub hint: String,
    /// Seconds until the request may be tried again (`Retry-After`).
    pub retry_after: Option<i64>,
}

/// What the built-in CA answers.
pub type Answer<'a> = Pin<Box<dyn Future<Output = Result<IssuedCert, Refusal>> + Send + 'a>>;

/// What the data plane may ask of the built-in CA (`upstream = "builtin:ca"`). The control
/// plane implements it: the data plane never holds the store or the CA's key.
pub trait CaDesk: Send + Sync {
    /// Whether a built-in CA is configured.
    fn available(&self) -> bool;
    /// A single-use enrollment token buys the identity it was created for.
    fn enroll<'a>(&'a self, token: &'a str, csr_pem: &'a str) -> Answer<'a>;
    /// The holder of `presented` (proved by the handshake) gets it again.
    fn renew<'a>(&'a self, presented: &'a [u8], csr_pem: &'a str) -> Answer<'a>;
}
