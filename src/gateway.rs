//! A running gateway: the control plane, the listeners, and the tasks that serve them.
//!
//! `Gateway::start` starts the control plane (which applies the config: the first snapshot),
//! binds every listener before it returns (so callers and tests know the ports and never need
//! to wait), then runs the accept loop, the admin and metrics listeners, the file watcher and
//! the control plane's loops as tasks.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use notify::{RecursiveMode, Watcher as _};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Config;
use crate::control::Control;
use crate::proxy;

pub use crate::control::{GatewayError, Overrides};

/// A started gateway.
pub struct Gateway {
    control: Arc<Control>,
    tls_addr: SocketAddr,
    metrics_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    accept: JoinHandle<crate::listener::Drain>,
    grace: Duration,
}

/// Binds `addr` (the setting `setting`), naming the setting to change when it is taken.
fn bind(
    addr: SocketAddr,
    setting: &'static str,
) -> Result<(TcpListener, SocketAddr), GatewayError> {
    crate::listener::bind(addr).map_err(|source| GatewayError::Bind {
        addr,
        setting,
        source,
    })
}

impl Gateway {
    /// Loads the config, binds the listeners, applies the config (the first snapshot) and
    /// starts serving.
    pub async fn start(config_path: &Path, overrides: Overrides) -> Result<Self, GatewayError> {
        // The recorder must exist before snapshots register their metric handles.
        let _ = crate::telemetry::metrics_handle();
        let mut config = Config::load(config_path)?;
        overrides.apply(&mut config);
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
        let control = Control::start(config_path, config.clone(), overrides, limits).await?;
        let (listener, tls_addr) = bind(config.listen, "listen")?;
        let (metrics_listener, metrics_addr) = bind(config.metrics_listen, "metrics_listen")?;
        let admin_listener = match &config.admin {
            Some(admin) => Some(bind(admin.listen, "admin.listen")?),
            None => None,
        };
        // The gateway's own ports first: a sidecar configured on one of them fails alone (its
        // status says why), as it does when another program holds its port.
        control.start_sidecars();
        let shared = control.shared().clone();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let accept = tokio::spawn(proxy::accept_loop(
            shared.clone(),
            listener,
            crate::listener::Limiter::new("data", limits.data, limits.data_per_ip),
            crate::listener::Drain::default(),
            shutdown_rx.clone(),
        ));
        let mut tasks = vec![tokio::spawn(serve_metrics(
            metrics_listener,
            control.clone(),
            shutdown_rx.clone(),
        ))];
        let mut admin_addr = None;
        if let (Some(admin), Some((listener, addr))) = (&config.admin, admin_listener) {
            tasks.push(crate::admin::start(
                admin,
                control.clone(),
                listener,
                shutdown_rx.clone(),
            ));
            admin_addr = Some(addr);
        }
        tasks.extend(crate::control::spawn_tasks(&control, shutdown_rx.clone()));
        if config.watch_files {
            tasks.push(tokio::spawn(watch_files(
                control.clone(),
                config,
                shutdown_rx.clone(),
            )));
        }
        let grace = shared.snapshot().timeouts.shutdown_grace;
        let admin = admin_addr.map(|a| a.to_string()).unwrap_or_default();
        info!(%tls_addr, %metrics_addr, admin_addr = %admin, "symbolon is listening");
        Ok(Self {
            control,
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

    /// The control plane (the store, the CA, the change path).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Where a sidecar listens (its actual port when configured with port 0).
    pub fn sidecar_addr(&self, name: &str) -> Option<SocketAddr> {
        self.control.sidecar_status(name).and_then(Result::ok)
    }

    /// A receiver that changes each time a snapshot is published (a reload by SIGHUP, a file
    /// change or [`Gateway::reload`], or an admin change).
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.control.shared().subscribe()
    }

    /// Reloads the configuration (as SIGHUP does).
    pub async fn reload(&self) -> Result<(), GatewayError> {
        self.control.reload().await.map(|_| ())
    }

    /// Stops accepting, lets open connections finish (up to the shutdown grace), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let sidecars = self.control.stop_sidecars().await;
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
        crate::control::flush_quotas(&self.control).await;
        info!("symbolon stopped");
    }
}

async fn serve_metrics(
    listener: TcpListener,
    control: Arc<Control>,
    mut shutdown: watch::Receiver<bool>,
) {
    let handle = crate::telemetry::metrics_handle();
    let limits = control.shared().limits;
    let limiter =
        crate::listener::Limiter::new("metrics", limits.metrics, (limits.metrics / 4).max(4));
    let drain = crate::listener::Drain::default();
    // HTTP/1 only, as Prometheus scrapes; the supervisor's header and idle deadlines apply.
    let mut http =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .http1_only();
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(None);
    let http = Arc::new(http);
    loop {
        let (tcp, _, permit) = tokio::select! {
            x = crate::listener::accept(&listener, &limiter) => x,
            _ = shutdown.changed() => return,
        };
        let handle = handle.clone();
        let control = control.clone();
        let watcher = drain.watcher();
        let http = http.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let timeouts =
                crate::listener::ConnTimeouts::from_config(&control.shared().snapshot().timeouts);
            let serve = move |req: http::Request<Incoming>| {
                let handle = handle.clone();
                let control = control.clone();
                async move {
                    let path = req.uri().path();
                    if path == "/ca/crl.der" || path == "/ca/crl.pem" {
                        let (status, body, kind) = match crate::control::crl::served(&control).await
                        {
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
            };
            crate::listener::serve_plain("metrics", tcp, &http, timeouts, watcher, serve).await;
        });
    }
}

/// Watches the config file and every PEM file it names; a change triggers a reload once the
/// writes have settled (editors write in several steps).
async fn watch_files(control: Arc<Control>, config: Config, mut shutdown: watch::Receiver<bool>) {
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
    let mut files = watched_files(control.config_path(), &config);
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
        if let Ok(config) = control.reload().await {
            files = watched_files(control.config_path(), &config);
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
