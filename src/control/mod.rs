//! The control plane: the store, the built-in CA, the configuration, and the one path every
//! change takes ([`Change`]: validate, write the store, build the snapshot, swap, audit).
//!
//! The data plane never sees this module's types: it reads [`Shared`], which the control
//! plane publishes into, and asks the built-in CA through [`crate::shared::CaDesk`].

mod access;
mod build;
mod change;
pub mod credentials;
pub mod crl;
pub mod issuance;
mod reload;
mod tasks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use tracing::info;

pub use access::AdminAccess;
pub use build::build_snapshot;
pub use change::{Audit, Change, ChangeError};
pub(crate) use tasks::{flush_quotas, spawn_tasks};

use crate::ca::Ca;
use crate::config::{Config, ConfigError};
use crate::lock;
use crate::shared::Shared;
use crate::snapshot::{Snapshot, SnapshotError};
use crate::store::{Store, StoreError};

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
    /// The built-in CA, a CRL or a sidecar credential (the message names which).
    #[error("{0}")]
    Setup(String),
}

impl From<ChangeError> for GatewayError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Store(e) => GatewayError::Store(e),
            ChangeError::Snapshot(e) => GatewayError::Snapshot(e),
        }
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

/// What the control plane owns. Every write goes through [`Change`].
pub struct Control {
    shared: Arc<Shared>,
    store: Store,
    /// The configuration file as last applied.
    config: ArcSwap<Config>,
    config_path: PathBuf,
    overrides: Overrides,
    /// The built-in CA, when the config has a `[ca]` section (replaced by a reload).
    ca: ArcSwapOption<Ca>,
    /// The admin listener's TLS and tokens (replaced by a reload).
    admin: ArcSwapOption<AdminAccess>,
    /// Serialises changes so two never interleave.
    change_lock: tokio::sync::Mutex<()>,
    /// Sidecar listeners, kept in line with the published snapshot once
    /// [`Control::start_sidecars`] was called (after the gateway's own listeners are bound, so a
    /// sidecar never takes their ports).
    sidecars: crate::sidecar::Listeners,
    sidecars_live: std::sync::atomic::AtomicBool,
    /// A digest of the CA's files (see [`reload::ca_digest`]).
    ca_files: Mutex<Option<Vec<u8>>>,
    /// The files the last applied configuration was built from ([`crate::pki::with_files`]).
    files: Mutex<Arc<crate::pki::FileContents>>,
    /// The built-in CA's last signed CRL (see [`crl::served`]).
    crl_cache: tokio::sync::Mutex<Option<crl::Signed>>,
}

impl Control {
    /// Opens the store and applies `config` (read from `config_path`) through the change path,
    /// as a reload from nothing: the first snapshot is published when this returns.
    pub async fn start(
        config_path: &Path,
        config: Config,
        overrides: Overrides,
        limits: crate::config::ResolvedLimits,
    ) -> Result<Arc<Self>, GatewayError> {
        let ticketer = crate::tls::server::Ticketer::new().map_err(GatewayError::Ticketer)?;
        let sealer = match reload::store_sealer(&config)? {
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
        crl::fetch_all(&config, &store.state().await?, crl::Which::Start).await?;
        let pools = crate::upstream::Pools::new(
            config.timeouts.upstream_connect,
            config.timeouts.upstream_idle,
        );
        let shared = Arc::new(Shared::new(
            &config,
            Snapshot::empty(config.timeouts.clone()),
            ticketer,
            pools,
            limits,
        ));
        let control = Arc::new(Self {
            shared,
            store,
            config: ArcSwap::from_pointee(config.clone()),
            config_path: config_path.to_owned(),
            overrides,
            ca: ArcSwapOption::empty(),
            admin: ArcSwapOption::empty(),
            change_lock: tokio::sync::Mutex::new(()),
            sidecars: crate::sidecar::Listeners::default(),
            sidecars_live: std::sync::atomic::AtomicBool::new(false),
            ca_files: Mutex::new(None),
            files: Mutex::new(Arc::default()),
            crl_cache: tokio::sync::Mutex::new(None),
        });
        control.apply(config, reload::Apply::Start).await?;
        let desk: Arc<dyn crate::shared::CaDesk> = control.clone();
        control.shared.set_ca_desk(Arc::downgrade(&desk));
        let quotas = control.store.quota_use().await?;
        control
            .shared
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
        Ok(control)
    }

    /// What the data plane reads.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration file's path.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The configuration file as last applied.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The built-in CA as last loaded.
    pub fn ca(&self) -> Option<Arc<Ca>> {
        self.ca.load_full()
    }

    /// The admin listener's TLS and tokens as last loaded.
    pub fn admin_access(&self) -> Option<Arc<AdminAccess>> {
        self.admin.load_full()
    }

    /// Where a sidecar listens (its actual port when configured with port 0), or why not.
    pub fn sidecar_status(&self, name: &str) -> Option<Result<SocketAddr, String>> {
        self.sidecars.status(name)
    }

    /// Closes the sidecar listeners and hands back their open connections (at shutdown).
    pub async fn stop_sidecars(&self) -> crate::listener::Drain {
        self.sidecars.stop_all().await
    }

    /// Binds the sidecar listeners of the published snapshot; from now on they follow every
    /// published snapshot.
    pub fn start_sidecars(&self) {
        self.sidecars_live
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.sidecars
            .reconcile(&self.shared, &self.shared.snapshot().sidecars);
    }

    /// Makes `snapshot` live: sidecar listeners follow it before subscribers are told.
    fn publish(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        self.shared.publish(snapshot, |s| {
            if self.sidecars_live.load(std::sync::atomic::Ordering::SeqCst) {
                self.sidecars.reconcile(&self.shared, &s.sidecars)
            }
        })
    }

    /// The files as last applied (a broken file on disk waits for the next reload).
    fn files(&self) -> Arc<crate::pki::FileContents> {
        lock(&self.files).clone()
    }
}
