//! A running gateway: its listeners, the current snapshot, and the control loop that swaps it.
//!
//! `Gateway::start` binds every listener before it returns (so callers and tests know the ports
//! and never need to wait), then runs the accept loop, the metrics listener and the file watcher
//! as tasks. `reload` builds a new snapshot from the config file and swaps it in, or changes
//! nothing and says why.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use notify::{RecursiveMode, Watcher as _};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::proxy;
use crate::snapshot::{Snapshot, SnapshotError};
use crate::store::{Store, StoreError, StoreState};

/// Why the gateway could not start or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(
        "cannot listen on {addr}: {source}. Fix: free the port or set `{setting}` to another address"
    )]
    Bind {
        addr: SocketAddr,
        setting: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the TLS session-ticket key: {0}")]
    Ticketer(rustls::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("admin API: {0}")]
    Admin(String),
}

/// State shared by the data plane's tasks and the admin API.
pub struct State {
    pub snapshot: ArcSwap<Snapshot>,
    pub upstream: Client<HttpConnector, Incoming>,
    pub http: auto::Builder<TokioExecutor>,
    pub store: Store,
    /// Rate-limit buckets, quota use, usage and the transition report (outlive snapshots).
    pub authz: crate::authz::Runtime,
    /// Client certificates seen in traffic and expiry warnings already given.
    pub expiry: crate::expiry::Watch,
    /// The built-in CA, when the config has a `[ca]` section (replaced by a reload).
    ca: arc_swap::ArcSwapOption<crate::ca::Ca>,
    /// The admin listener's TLS and tokens (replaced by a reload).
    pub admin: arc_swap::ArcSwapOption<crate::admin::Live>,
    /// The configuration file as last applied.
    pub config: ArcSwap<Config>,
    config_path: PathBuf,
    ticketer: Arc<crate::tls::server::Ticketer>,
    /// Serialises reloads and admin writes so two changes never interleave.
    change_lock: tokio::sync::Mutex<()>,
    /// Counts applied changes; subscribers learn when a new snapshot is live.
    generation: watch::Sender<u64>,
    /// Upstream TLS pools, by setting (outlive snapshots).
    pub pools: crate::upstream::Pools,
    /// Sidecar listeners, kept in line with the published snapshot.
    pub sidecars: crate::sidecar::Listeners,
    /// Connection caps per listener (from `[limits]` and the open-file limit, at start).
    pub limits: crate::config::ResolvedLimits,
    /// The command line's addresses, put over the file's at every reload.
    overrides: Overrides,
    /// See [`ca_digest`].
    ca_files: std::sync::Mutex<Option<Vec<u8>>>,
    /// The built-in CA's last signed CRL: (generation, when, DER). See [`crl`].
    crl_cache: tokio::sync::Mutex<Option<(u64, std::time::Instant, Vec<u8>)>>,
    /// The files the last applied configuration was built from (see [`crate::pki::with_files`]).
    files: std::sync::Mutex<Arc<crate::pki::FileContents>>,
    me: std::sync::Weak<State>,
}

/// The store passphrase: from `store_passphrase_file`, else `SYMBOLON_STORE_PASSPHRASE`;
/// `None` when neither is set (private keys in the store are then kept in the clear, in a
/// 0600 file).
fn store_sealer(config: &Config) -> Result<Option<Vec<u8>>, GatewayError> {
    let pass = match &config.store_passphrase_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| {
                GatewayError::Store(StoreError::Passphrase(format!(
                    "store_passphrase_file {}: {e}. Fix: check the path and its permissions",
                    f.display()
                )))
            })?
            .trim_end_matches(['\n', '\r'])
            .as_bytes()
            .to_vec(),
        None => std::env::var("SYMBOLON_STORE_PASSPHRASE")
            .unwrap_or_default()
            .into_bytes(),
    };
    if pass.is_empty() && config.store_passphrase_file.is_some() {
        return Err(GatewayError::Store(StoreError::Passphrase(
            "store_passphrase_file is empty. Fix: write the passphrase into it".into(),
        )));
    }
    Ok((!pass.is_empty()).then_some(pass))
}

/// The built-in CA of `[ca]`, if there is one.
fn load_ca(config: &Config) -> Result<Option<Arc<crate::ca::Ca>>, GatewayError> {
    let Some(c) = &config.ca else {
        return Ok(None);
    };
    let pass = crate::ca::passphrase(c.passphrase_file.as_deref())
        .map_err(|e| GatewayError::Admin(format!("[ca]: {e}")))?;
    if let Some(url) = &c.crl_url {
        check_crl_url(url)?;
    }
    Ok(Some(Arc::new(
        crate::ca::Ca::load(&c.dir, &pass)
            .map_err(|e| GatewayError::Admin(format!("[ca]: {e}")))?
            .with_crl_url(c.crl_url.clone()),
    )))
}

/// A digest of the CA's files and passphrase: a reload loads the CA again when they change (a
/// CA rotated in place), not only when the `[ca]` section does.
fn ca_digest(config: &Config) -> Option<Vec<u8>> {
    let c = config.ca.as_ref()?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for name in ["intermediate.pem", "intermediate.key", "root.pem"] {
        ctx.update(&std::fs::read(c.dir.join(name)).unwrap_or_default());
    }
    if let Some(p) = &c.passphrase_file {
        ctx.update(&std::fs::read(p).unwrap_or_default());
    }
    Some(ctx.finish().as_ref().to_vec())
}

/// Settings a reload cannot apply (listeners, the store, caps): named in a warning.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("listen");
    }
    if old.metrics_listen != new.metrics_listen {
        out.push("metrics_listen");
    }
    match (&old.admin, &new.admin) {
        (Some(a), Some(b)) if a.listen != b.listen => out.push("admin.listen"),
        (Some(a), Some(b)) if a.max_upload_bytes != b.max_upload_bytes => {
            out.push("admin.max_upload_bytes")
        }
        (None, Some(_)) | (Some(_), None) => out.push("[admin] (added or removed)"),
        _ => {}
    }
    if old.store != new.store {
        out.push("store");
    }
    if old.store_passphrase_file != new.store_passphrase_file {
        out.push("store_passphrase_file");
    }
    if old.limits != new.limits {
        out.push("[limits]");
    }
    out
}

/// `[ca] crl_url` must be an absolute http(s) URL (verifiers fetch CRLs over plain HTTP; the
/// CRL is signed).
fn check_crl_url(url: &str) -> Result<(), GatewayError> {
    let ok = url
        .parse::<http::Uri>()
        .ok()
        .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if !ok || !url.is_ascii() {
        return Err(GatewayError::Admin(format!(
            "[ca] crl_url '{url}' is not an http:// or https:// URL. Fix: for example crl_url = \"http://gateway.example:9464/ca/crl.der\""
        )));
    }
    Ok(())
}

impl State {
    /// The built-in CA as last loaded.
    pub fn ca(&self) -> Option<Arc<crate::ca::Ca>> {
        self.ca.load_full()
    }

    /// Re-reads the config file, every file it names and the store; swaps in the new snapshot
    /// if all is valid. On error the running configuration is kept and the error is returned.
    pub async fn reload(&self) -> Result<Arc<Config>, GatewayError> {
        // CRL URLs new in this config are fetched first, without the change lock: a slow CRL
        // server must not hold up admin writes, enrollment or revocation.
        if let Ok(config) = Config::load(&self.config_path)
            && let Ok(store) = self.store.state().await
        {
            let _ = fetch_crls(&config, &store, CrlFetch::Missing).await;
        }
        let _guard = self.change_lock.lock().await;
        let result = async {
            let mut config = Config::load(&self.config_path)?;
            self.overrides.apply(&mut config);
            let old = self.config.load_full();
            let restart = needs_restart(&old, &config);
            keep_running_values(&old, &mut config);
            let mut store = self.store.state().await?;
            // `[ca]` is loaded again when its section changed; `[admin]` (the listener's
            // certificate, the admin CA, the tokens) is rebuilt from its files every time.
            let digest = ca_digest(&config);
            let same_files = *self
                .ca_files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                == digest;
            let ca = if config.ca == old.ca && same_files {
                self.ca()
            } else {
                let ca = load_ca(&config)?;
                info!("the built-in CA was loaded again ([ca] or its files changed)");
                ca
            };
            let admin = match (&config.admin, self.admin.load_full()) {
                (Some(a), Some(_)) => Some(Arc::new(crate::admin::Live::build(a)?)),
                (_, current) => current,
            };
            if crate::sidecar::ensure_credentials(&config, &self.store, &store, ca.as_deref())
                .await
                .map_err(|e| GatewayError::Admin(e.to_string()))?
            {
                store = self.store.state().await?;
            }
            // Read from disk; what was read becomes the files later admin changes build from.
            let (snapshot, files) = crate::pki::with_files(None, || {
                Snapshot::build(&config, &store, self.ticketer.clone(), &self.pools)
            });
            let snapshot = snapshot?;
            *self
                .files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(files);
            *self
                .ca_files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = digest;
            Ok::<_, GatewayError>((config, snapshot, ca, admin, restart))
        }
        .await;
        match result {
            Ok((config, snapshot, ca, admin, restart)) => {
                for setting in restart {
                    warn!(
                        setting,
                        "this setting changed in the config file and needs a restart; the running value stays until then"
                    );
                }
                let config = Arc::new(config);
                self.ca.store(ca);
                self.admin.store(admin);
                self.config.store(config.clone());
                self.publish(snapshot);
                metrics::counter!("symbolon_reloads_total", "result" => "applied").increment(1);
                info!(config = %self.config_path.display(), "configuration reloaded");
                Ok(config)
            }
            Err(e) => {
                metrics::counter!("symbolon_reloads_total", "result" => "refused").increment(1);
                error!(config = %self.config_path.display(), error = %e, "reload refused; the running configuration is unchanged");
                Err(e)
            }
        }
    }

    /// Takes the change lock: held by an admin write from its first read to its swap.
    pub async fn change_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.change_lock.lock().await
    }

    /// Builds (and so validates) a snapshot from the applied config file and `store`.
    /// Builds a snapshot of `store` (sealed private keys are opened here).
    pub fn build(&self, store: &StoreState) -> Result<Snapshot, SnapshotError> {
        let mut opened = store.clone();
        crate::store::open_keys(&mut opened, self.store.sealer())
            .map_err(|e| SnapshotError::Keys(e.to_string()))?;
        // The files as last applied (a broken file on disk waits for the next reload).
        let files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (snapshot, read) = crate::pki::with_files(Some(&files), || {
            Snapshot::build(
                &self.config.load(),
                &opened,
                self.ticketer.clone(),
                &self.pools,
            )
        });
        if snapshot.is_ok() && read.len() > files.len() {
            *self
                .files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(read);
        }
        snapshot
    }

    /// Learns of every newly published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Makes `snapshot` the one new handshakes and requests use.
    pub fn publish(&self, snapshot: Snapshot) {
        let now = crate::pki::unix_now();
        self.expiry
            .check(&snapshot.known_certs, now, &snapshot.expiry_warnings);
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        self.ticketer.set_epoch(snapshot.trust_epoch);
        if let Some(me) = self.me.upgrade() {
            self.sidecars.reconcile(&me, &snapshot.sidecars);
        }
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Settings given on the command line that override the config file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
}

impl Overrides {
    /// Puts the command line's addresses over the file's (at start and at every reload).
    pub fn apply(&self, config: &mut Config) {
        config.listen = self.listen.unwrap_or(config.listen);
        config.metrics_listen = self.metrics_listen.unwrap_or(config.metrics_listen);
        if let (Some(admin), Some(listen)) = (&mut config.admin, self.admin_listen) {
            admin.listen = listen;
        }
    }
}

/// The settings only a restart applies keep their running values in the applied config (so
/// the CRL cache, say, stays next to the store in use).
fn keep_running_values(old: &Config, new: &mut Config) {
    new.listen = old.listen;
    new.metrics_listen = old.metrics_listen;
    new.store = old.store.clone();
    new.store_passphrase_file = old.store_passphrase_file.clone();
    new.limits = old.limits.clone();
    if let (Some(o), Some(n)) = (&old.admin, &mut new.admin) {
        n.listen = o.listen;
        n.max_upload_bytes = o.max_upload_bytes;
    }
}

/// A started gateway.
pub struct Gateway {
    state: Arc<State>,
    tls_addr: SocketAddr,
    metrics_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    accept: JoinHandle<crate::listener::Drain>,
    grace: Duration,
}

impl Gateway {
    /// Loads the config, validates it, binds the listeners and starts serving.
    pub async fn start(config_path: &Path, overrides: Overrides) -> Result<Self, GatewayError> {
        // The recorder must exist before snapshots register their metric handles.
        let _ = crate::telemetry::metrics_handle();
        let mut config = Config::load(config_path)?;
        overrides.apply(&mut config);
        let ticketer = crate::tls::server::Ticketer::new().map_err(GatewayError::Ticketer)?;
        let nofile = crate::listener::raise_nofile_limit();
        let limits = config.limits.resolve(nofile, config.sidecars.len() + 1);
        info!(
            open_files = nofile,
            data = limits.data,
            per_ip = limits.data_per_ip,
            admin = limits.admin,
            metrics = limits.metrics,
            "connection caps"
        );
        let sealer = match store_sealer(&config)? {
            Some(pass) => Some(
                crate::ca::Sealer::new(pass)
                    .map_err(|e| GatewayError::Store(StoreError::Passphrase(e.to_string())))?,
            ),
            None => None,
        };
        let store = Store::open(&config.store_path()).await?.with_sealer(sealer);
        let sealed = store.seal_all().await?;
        if sealed > 0 {
            info!(
                keys = sealed,
                "sealed the private keys the store held in the clear"
            );
        }
        let store_state = store.state().await?;
        fetch_crls(&config, &store_state, CrlFetch::Start).await?;
        let ca = load_ca(&config)?;
        let mut store_state = store_state;
        if crate::sidecar::ensure_credentials(&config, &store, &store_state, ca.as_deref())
            .await
            .map_err(|e| GatewayError::Admin(e.to_string()))?
        {
            store_state = store.state().await?;
        }
        let pools = crate::upstream::Pools::new(
            config.timeouts.upstream_connect,
            config.timeouts.upstream_idle,
        );
        let (snapshot, files) = crate::pki::with_files(None, || {
            Snapshot::build(&config, &store_state, ticketer.clone(), &pools)
        });
        let snapshot = snapshot?;
        ticketer.set_epoch(snapshot.trust_epoch);

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: config.listen,
                    setting: "listen",
                    source,
                })?;
        let metrics_listener =
            TcpListener::bind(config.metrics_listen)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: config.metrics_listen,
                    setting: "metrics_listen",
                    source,
                })?;
        let tls_addr = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.listen,
            setting: "listen",
            source,
        })?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(|source| GatewayError::Bind {
                addr: config.metrics_listen,
                setting: "metrics_listen",
                source,
            })?;

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

        let state = Arc::new_cyclic(|me| State {
            pools,
            sidecars: crate::sidecar::Listeners::default(),
            limits,
            files: std::sync::Mutex::new(Arc::new(files)),
            overrides: overrides.clone(),
            ca_files: std::sync::Mutex::new(ca_digest(&config)),
            crl_cache: tokio::sync::Mutex::new(None),
            me: me.clone(),
            snapshot: ArcSwap::from_pointee(snapshot),
            upstream,
            http,
            store,
            authz: crate::authz::Runtime::default(),
            expiry: crate::expiry::Watch::default(),
            ca: arc_swap::ArcSwapOption::from(ca),
            admin: arc_swap::ArcSwapOption::empty(),
            config: ArcSwap::from_pointee(config.clone()),
            config_path: config_path.to_owned(),
            ticketer,
            change_lock: tokio::sync::Mutex::new(()),
            generation: watch::channel(0).0,
        });
        state
            .sidecars
            .reconcile(&state, &state.snapshot.load().sidecars);
        let quotas = state.store.quota_use().await?;
        state
            .authz
            .load_quotas(quotas.into_iter().map(|(id, start, used)| {
                (
                    id,
                    crate::authz::QuotaUse {
                        window_start: start,
                        used: u64::try_from(used).unwrap_or_default(),
                    },
                )
            }));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let accept = tokio::spawn(proxy::accept_loop(
            state.clone(),
            listener,
            crate::listener::Limiter::new("data", limits.data, limits.data_per_ip),
            crate::listener::Drain::default(),
            shutdown_rx.clone(),
        ));

        let mut tasks = vec![tokio::spawn(serve_metrics(
            metrics_listener,
            state.clone(),
            shutdown_rx.clone(),
        ))];
        let admin_addr = match &config.admin {
            Some(admin) => {
                let (addr, task) =
                    crate::admin::start(admin, state.clone(), shutdown_rx.clone()).await?;
                tasks.push(task);
                Some(addr)
            }
            None => None,
        };
        tasks.push(tokio::spawn(flush_quotas_every(
            state.clone(),
            Duration::from_secs(2),
        )));
        tasks.push(tokio::spawn(refresh_crls(state.clone())));
        tasks.push(tokio::spawn(crate::sidecar::rotate_when_due(
            state.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(watch_expiry(
            state.clone(),
            Duration::from_secs(60),
        )));
        if config.watch_files {
            tasks.push(tokio::spawn(watch_files(
                state.clone(),
                config,
                shutdown_rx.clone(),
            )));
        }
        let grace = state.snapshot.load().timeouts.shutdown_grace;
        let admin = admin_addr.map(|a| a.to_string()).unwrap_or_default();
        info!(%tls_addr, %metrics_addr, admin_addr = %admin, "symbolon is listening");
        Ok(Self {
            state,
            tls_addr,
            metrics_addr,
            admin_addr,
            shutdown_tx,
            tasks,
            accept,
            grace,
        })
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The admin API's address, when the config has an `[admin]` section.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Where a sidecar listens (its actual port when configured with port 0).
    pub fn sidecar_addr(&self, name: &str) -> Option<SocketAddr> {
        self.state.sidecars.status(name).and_then(Result::ok)
    }

    /// A receiver that changes each time a reload is applied (by SIGHUP, a file change or
    /// [`Gateway::reload`]); its value counts the applied reloads.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.state.generation.subscribe()
    }

    /// Reloads the configuration (as SIGHUP does).
    pub async fn reload(&self) -> Result<(), GatewayError> {
        self.state.reload().await.map(|_| ())
    }

    /// Stops accepting, lets open connections finish (up to the shutdown grace), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let sidecars = self.state.sidecars.stop_all().await;
        let graceful = self.accept.await.unwrap_or_default();
        // The listener is closed once the accept loop has returned.
        info!(
            open = graceful.count() + sidecars.count(),
            "shutting down: no new connections; open ones may finish"
        );
        let both = async { tokio::join!(graceful.shutdown(), sidecars.shutdown()) };
        if tokio::time::timeout(self.grace, both).await.is_err() {
            warn!(grace = ?self.grace, "connections still open after the shutdown grace period; closing them");
        }
        for t in self.tasks {
            t.abort();
        }
        flush_quotas(&self.state).await;
        info!("symbolon stopped");
    }
}

/// Saves quota use to the store, so a restart does not hand out a fresh quota.
async fn flush_quotas(state: &State) {
    let rows: Vec<(String, i64, i64)> = state
        .authz
        .quota_rows()
        .into_iter()
        .map(|(id, q)| {
            (
                id,
                q.window_start,
                i64::try_from(q.used).unwrap_or(i64::MAX),
            )
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    if let Err(e) = state.store.save_quota_use(&rows).await {
        warn!(error = %e, "cannot save quota use; it will be retried");
        let ids: Vec<String> = rows.into_iter().map(|(id, _, _)| id).collect();
        state.authz.remark_dirty(&ids);
    }
}

async fn flush_quotas_every(state: Arc<State>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        flush_quotas(&state).await;
    }
}

fn crl_urls(config: &Config, store: &StoreState) -> Vec<String> {
    crl_issuers(config, store).into_keys().collect()
}

/// Every CRL URL with the CA certificates that may sign it: those of the trust bundles that
/// name the URL. A fetched CRL must be signed by one of them before it is cached.
fn crl_issuers(
    config: &Config,
    store: &StoreState,
) -> std::collections::BTreeMap<String, Vec<rustls::pki_types::CertificateDer<'static>>> {
    let mut out: std::collections::BTreeMap<
        String,
        Vec<rustls::pki_types::CertificateDer<'static>>,
    > = Default::default();
    for d in &config.domains {
        let cas = d
            .trust_bundle
            .as_deref()
            .and_then(|p| crate::pki::load_certs(p).ok())
            .unwrap_or_default();
        for c in d.crls.iter().filter(|c| crate::config::is_url(c)) {
            out.entry(c.display().to_string())
                .or_default()
                .extend(cas.iter().cloned());
        }
    }
    for b in &store.bundles {
        if let Some(spec) = b
            .crls
            .as_deref()
            .and_then(|j| serde_json::from_str::<crate::store::BundleCrls>(j).ok())
        {
            let cas =
                crate::pki::parse_certs(b.pem.as_bytes(), Path::new("bundle")).unwrap_or_default();
            for url in spec.urls {
                out.entry(url).or_default().extend(cas.iter().cloned());
            }
        }
    }
    out
}

/// How often CRL URLs are fetched again: the smallest `crl_refresh` of the config's domains
/// and `crls.refresh` of the API bundles that use URLs (an hour when none says).
fn crl_refresh(config: &Config, store: &StoreState) -> Duration {
    let from_config = config
        .domains
        .iter()
        .filter(|d| d.crls.iter().any(|c| crate::config::is_url(c)))
        .map(|d| d.crl_refresh);
    let from_store = store.bundles.iter().filter_map(|b| {
        let spec: crate::store::BundleCrls = serde_json::from_str(b.crls.as_deref()?).ok()?;
        if spec.urls.is_empty() {
            return None;
        }
        Some(
            spec.refresh
                .as_deref()
                .and_then(|r| crate::config::parse_duration(r).ok())
                .unwrap_or(Duration::from_secs(3600)),
        )
    });
    from_config
        .chain(from_store)
        .min()
        .unwrap_or(Duration::from_secs(3600))
        .max(Duration::from_secs(1))
}

/// Connecting to a CRL server (within the total `timeouts.crl_fetch`).
const CRL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches one CRL over plain HTTP (CRLs are signed; TLS adds nothing to their integrity),
/// with a connect timeout, a total timeout and the size cap of CRL files. Never called with
/// the change lock held or inside a store transaction.
async fn fetch(url: &str, total: Duration) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt as _;
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// CRL URLs are supported (CRLs are signed by their CA)".into());
    }
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CRL_CONNECT_TIMEOUT));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let download = async {
        let resp = client.get(uri).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let cap = usize::try_from(crate::pki::MAX_PEM_BYTES).unwrap_or(usize::MAX);
        let body = http_body_util::Limited::new(resp.into_body(), cap)
            .collect()
            .await
            .map_err(|e| format!("{e} (CRLs are limited to {cap} bytes)"))?;
        Ok(body.to_bytes().to_vec())
    };
    tokio::time::timeout(total, download)
        .await
        .map_err(|_| format!("no complete answer within {total:?} (timeouts.crl_fetch)"))?
}

/// Fetches CRL URLs that have no cached copy yet, for a change about to attach them (before
/// the change takes the lock). `issuers` are the CAs that may sign them. The error names the
/// URL and the cause.
pub(crate) async fn prefetch_crls(
    config: &Config,
    urls: &[String],
    issuers: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<(), String> {
    for url in urls {
        let path = crate::config::crl_cache_path(config, url);
        if path.exists() {
            continue;
        }
        let bytes = fetch_checked(config, url, issuers, None)
            .await
            .map_err(|e| format!("cannot fetch the CRL {url}: {e}"))?;
        write_crl_cache(&path, &bytes).map_err(|e| format!("cannot cache the CRL {url}: {e}"))?;
        info!(%url, "CRL fetched");
    }
    Ok(())
}

/// Downloads a CRL and takes it only if one of its bundle's CAs (`issuers`) signed it and it
/// does not roll back `held`, the copy in use (a rollback would un-revoke certificates).
/// Refusals are counted in `symbolon_crl_fetch_refused_total`.
async fn fetch_checked(
    config: &Config,
    url: &str,
    issuers: &[rustls::pki_types::CertificateDer<'_>],
    held: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let fetched = fetch(url, config.timeouts.crl_fetch)
        .await
        .and_then(|b| crate::pki::check_crl_update(&b, issuers, held).map(|()| b));
    if let Err(e) = &fetched {
        metrics::counter!("symbolon_crl_fetch_refused_total").increment(1);
        tracing::debug!(%url, error = %e, "CRL not taken");
    }
    fetched
}

fn write_crl_cache(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A name of its own per write: two fetches of one URL never share a temporary file.
    let tmp = path.with_extension(format!("{}.tmp", crate::store::new_id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Which CRL URLs to fetch, and what a failure means.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrlFetch {
    /// At start: every URL; one that cannot be fetched and has no cached copy stops the gateway.
    Start,
    /// The periodic refresh: every URL; failures keep the cached copy and are logged.
    Refresh,
    /// A reload or an admin change: only URLs without a cached copy yet (new ones).
    Missing,
}

/// Fetches CRL URLs into their cache files. Returns whether any content changed.
pub(crate) async fn fetch_crls(
    config: &Config,
    store: &StoreState,
    which: CrlFetch,
) -> Result<bool, GatewayError> {
    let mut changed = false;
    for (url, issuers) in crl_issuers(config, store) {
        let path = crate::config::crl_cache_path(config, &url);
        if which == CrlFetch::Missing && path.exists() {
            continue;
        }
        let held = std::fs::read(&path).ok();
        match fetch_checked(config, &url, &issuers, held.as_deref()).await {
            Ok(bytes) => {
                if held.as_deref() == Some(&bytes[..]) {
                    continue;
                }
                write_crl_cache(&path, &bytes).map_err(|e| {
                    GatewayError::Admin(format!(
                        "cannot cache the CRL from {url} in {}: {e}",
                        path.display()
                    ))
                })?;
                info!(%url, "CRL fetched");
                changed = true;
            }
            Err(e) if path.exists() => {
                warn!(%url, error = %e, "cannot fetch the CRL; the cached copy stays in use");
            }
            Err(e) if which == CrlFetch::Start => {
                return Err(GatewayError::Admin(format!(
                    "cannot fetch the CRL {url}: {e}. Fix: check the URL, or use a CRL file"
                )));
            }
            Err(e) => warn!(%url, error = %e, "cannot fetch the CRL"),
        }
    }
    Ok(changed)
}

/// Re-fetches CRL URLs at the refresh interval in force; a changed CRL is applied with a reload.
async fn refresh_crls(state: Arc<State>) {
    let mut changes = state.generation.subscribe();
    // Counted from the last fetch: changes (admin writes, revocations) come often and must not
    // push the refresh back; they only matter when they bring a shorter interval.
    let mut last_fetch = tokio::time::Instant::now();
    loop {
        let config = state.config.load_full();
        let Ok(store) = state.store.state().await else {
            tokio::time::sleep(Duration::from_secs(60)).await;
            continue;
        };
        let due = last_fetch + crl_refresh(&config, &store);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = changes.changed() => continue,
        }
        last_fetch = tokio::time::Instant::now();
        let config = state.config.load_full();
        let Ok(store) = state.store.state().await else {
            continue;
        };
        if crl_urls(&config, &store).is_empty() {
            continue;
        }
        if let Ok(true) = fetch_crls(&config, &store, CrlFetch::Refresh).await {
            let _ = state.reload().await;
        }
    }
}

/// Checks certificate expiry now and then every `every`: gauges and threshold warnings.
async fn watch_expiry(state: Arc<State>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let snapshot = state.snapshot.load();
        let now = crate::pki::unix_now();
        state
            .expiry
            .check(&snapshot.known_certs, now, &snapshot.expiry_warnings);
        drop(snapshot);
        // Certificates the CA issued: gauges for the 100 that expire first (bounded labels).
        let Ok(mut issued) = state.store.issued().await else {
            continue;
        };
        let now_text = crate::pki::rfc3339(now);
        issued.retain(|r| r.not_after > now_text);
        issued.sort_by(|a, b| a.not_after.cmp(&b.not_after));
        for r in issued.iter().take(100) {
            if let Ok(t) = time::OffsetDateTime::parse(
                &r.not_after,
                &time::format_description::well_known::Rfc3339,
            ) {
                metrics::gauge!("symbolon_certificate_expiry_seconds", "kind" => "issued", "name" => r.via.clone(), "fingerprint" => r.fingerprint.clone())
                    .set((t.unix_timestamp() - now) as f64);
            }
        }
    }
}

/// The CRL of the built-in CA, signed by the intermediate, valid for `crl_validity`. It lists
/// only this CA's own certificates: serial revocations naming this CA as issuer, and revocations
/// by fingerprint of certificates this CA issued (found in its issuance records). A serial
/// revoked for another CA never appears on it.
///
/// The signed CRL is cached: it is made again only after a change (a revocation, a reload)
/// or once half of its validity has passed, one request at a time. An unauthenticated client
/// cannot make the CA sign on every request, nor make the store read its tables.
async fn crl(state: &State) -> Result<Vec<u8>, String> {
    let generation = *state.generation.borrow();
    let validity = state
        .config
        .load()
        .ca
        .as_ref()
        .map(|c| c.crl_validity)
        .unwrap_or(Duration::from_secs(86_400));
    let mut cached = state.crl_cache.lock().await;
    if let Some((g, made, der)) = cached.as_ref()
        && *g == generation
        && made.elapsed() < validity / 2
    {
        return Ok(der.clone());
    }
    let der = make_crl(state, validity).await?;
    *cached = Some((generation, std::time::Instant::now(), der.clone()));
    Ok(der)
}

async fn make_crl(state: &State, validity: Duration) -> Result<Vec<u8>, String> {
    let ca = state
        .ca()
        .ok_or("no built-in CA is configured ([ca] in the config)")?;
    let rows = state
        .store
        .revocation_rows()
        .await
        .map_err(|e| e.to_string())?;
    let issued = state.store.issued().await.map_err(|e| e.to_string())?;
    let ours = ca.issuer_key();
    let issued_serials: std::collections::HashMap<&str, &str> = issued
        .iter()
        .map(|i| (i.fingerprint.as_str(), i.serial.as_str()))
        .collect();
    let issued_set: std::collections::HashSet<String> = issued
        .iter()
        .map(|i| crate::revocation::normalize_serial(&i.serial))
        .collect();
    let revoked: Vec<(String, time::OffsetDateTime, String)> = rows
        .into_iter()
        .filter_map(|r| {
            let at = time::OffsetDateTime::parse(
                &r.revoked_at,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()?;
            let serial = match (&r.serial, &r.issuer, &r.fingerprint) {
                (Some(serial), Some(issuer), _) if *issuer == ours => serial.clone(),
                // Rows from before issuers were recorded: only serials this CA issued.
                (Some(serial), None, _)
                    if issued_set.contains(&crate::revocation::normalize_serial(serial)) =>
                {
                    serial.clone()
                }
                (None, _, Some(fp)) => issued_serials.get(fp.as_str())?.to_string(),
                _ => return None,
            };
            Some((serial, at, r.reason))
        })
        .collect();
    let number = crate::pki::unix_now() as u64;
    ca.crl(
        &revoked,
        number,
        time::Duration::seconds(validity.as_secs() as i64),
    )
    .map_err(|e| e.to_string())
}

async fn serve_metrics(
    listener: TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handle = crate::telemetry::metrics_handle();
    let limiter = crate::listener::Limiter::new(
        "metrics",
        state.limits.metrics,
        (state.limits.metrics / 4).max(4),
    );
    let drain = crate::listener::Drain::default();
    loop {
        let (tcp, _, permit) = tokio::select! {
            x = crate::listener::accept(&listener, &limiter) => x,
            _ = shutdown.changed() => return,
        };
        let handle = handle.clone();
        let state = state.clone();
        let watcher = drain.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let timeouts =
                crate::listener::ConnTimeouts::from_config(&state.snapshot.load().timeouts);
            let activity = crate::listener::Activity::new(false);
            let svc = crate::listener::counted(&activity, move |req: http::Request<Incoming>| {
                let handle = handle.clone();
                let state = state.clone();
                async move {
                    let path = req.uri().path();
                    if path == "/ca/crl.der" || path == "/ca/crl.pem" {
                        let (status, body, kind) = match crl(&state).await {
                            Ok(der) if path.ends_with(".der") => {
                                (StatusCode::OK, Bytes::from(der), "application/pkix-crl")
                            }
                            Ok(der) => (
                                StatusCode::OK,
                                Bytes::from(crate::ca::crl_pem(&der)),
                                "application/x-pem-file",
                            ),
                            Err(e) => (
                                StatusCode::NOT_FOUND,
                                Bytes::from(format!("{e}\n")),
                                "text/plain",
                            ),
                        };
                        let mut resp = Response::new(Full::new(body));
                        *resp.status_mut() = status;
                        if let Ok(v) = http::HeaderValue::from_str(kind) {
                            resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
                        }
                        return Ok::<_, std::convert::Infallible>(resp);
                    }
                    let (status, body) = match (path, &handle) {
                        ("/metrics", Some(h)) => (StatusCode::OK, h.render()),
                        ("/metrics", None) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "another metrics recorder is installed in this process\n".into(),
                        ),
                        ("/healthz", _) => (StatusCode::OK, "ok\n".into()),
                        _ => (StatusCode::NOT_FOUND, "try /metrics\n".into()),
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = status;
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let io = TokioIo::new(crate::listener::Tracked::new(tcp, activity.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(None)
                .serve_connection(io, svc);
            crate::listener::supervise(
                "metrics",
                conn,
                |c| c.graceful_shutdown(),
                &activity,
                timeouts,
                watcher,
                None,
            )
            .await;
        });
    }
}

/// Watches the config file and every PEM file it names; a change triggers a reload once the
/// writes have settled (editors write in several steps).
async fn watch_files(state: Arc<State>, config: Config, mut shutdown: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<notify::Result<notify::Event>>();
    let mut watcher = match notify::recommended_watcher(move |ev| {
        let _ = tx.send(ev);
    }) {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch files for changes; reload with SIGHUP instead");
            return;
        }
    };
    let mut files = watched_files(&state.config_path, &config);
    let mut dirs = HashSet::new();
    watch_dirs(&mut watcher, &files, &mut dirs);
    loop {
        let event = tokio::select! {
            ev = rx.recv() => ev,
            _ = shutdown.changed() => return,
        };
        let Some(event) = event else { return };
        if !touches(&event, &files) {
            continue;
        }
        // Debounce: wait until no relevant event arrives for 200 ms.
        loop {
            match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if let Ok(config) = state.reload().await {
            files = watched_files(&state.config_path, &config);
            watch_dirs(&mut watcher, &files, &mut dirs);
        }
    }
}

fn watched_files(config_path: &Path, config: &Config) -> HashSet<PathBuf> {
    let mut files: HashSet<PathBuf> = config.referenced_files().into_iter().collect();
    files.insert(config_path.to_owned());
    files.into_iter().map(|p| absolute(&p)).collect()
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

fn watch_dirs(
    watcher: &mut notify::RecommendedWatcher,
    files: &HashSet<PathBuf>,
    dirs: &mut HashSet<PathBuf>,
) {
    for f in files {
        if let Some(dir) = f.parent()
            && dirs.insert(dir.to_owned())
            && let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive)
        {
            warn!(dir = %dir.display(), error = %e, "cannot watch directory for changes");
        }
    }
}

/// Whether an event concerns a watched file. Kubernetes updates a mounted Secret or ConfigMap
/// by pointing the `..data` symlink at a new directory (the files are symlinks through it),
/// so an event on `..data` (or its `..data_tmp` stand-in) in a watched directory counts too.
fn touches(event: &notify::Result<notify::Event>, files: &HashSet<PathBuf>) -> bool {
    match event {
        Ok(ev) => {
            !ev.kind.is_access()
                && ev.paths.iter().any(|p| {
                    files.contains(&absolute(p))
                        || p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("..data"))
                })
        }
        Err(_) => false,
    }
}
