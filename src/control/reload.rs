//! Reloads: the config file and every file it names read again, `[ca]` and `[admin]` rebuilt,
//! sidecar credentials brought in line, and the new snapshot applied through the change path.
//! The start is the first reload, from nothing.

use std::sync::Arc;

use tracing::{error, info, warn};

use super::{AdminAccess, Change, Control, GatewayError, credentials, crl};
use crate::config::Config;
use crate::lock;
use crate::store::StoreError;

/// Whether a configuration is applied at start or by a reload.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Apply {
    Start,
    Reload,
}

impl Control {
    /// Re-reads the config file, every file it names and the store; swaps in the new snapshot
    /// if all is valid. On error the running configuration is kept and the error is returned.
    pub async fn reload(&self) -> Result<Arc<Config>, GatewayError> {
        // CRL URLs new in this config are fetched first, without the change lock: a slow CRL
        // server must not hold up admin writes, enrollment or revocation.
        if let Ok(config) = Config::load(&self.config_path)
            && let Ok(store) = self.store.state().await
        {
            let _ = crl::fetch_all(&config, &store, crl::Which::Missing).await;
        }
        let result = async {
            let mut config = Config::load(&self.config_path)?;
            self.overrides.apply(&mut config);
            self.apply(config, Apply::Reload).await
        }
        .await;
        match result {
            Ok(config) => {
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

    /// Applies `config` through the change path: `[ca]` loaded again when its section or files
    /// changed, `[admin]` rebuilt from its files, sidecar credentials issued or deleted, and the
    /// snapshot built from the files as they are on disk now (they become the files later admin
    /// changes build from).
    pub(super) async fn apply(
        &self,
        mut config: Config,
        how: Apply,
    ) -> Result<Arc<Config>, GatewayError> {
        let mut ch = Change::begin(self).await?;
        let old = self.config();
        let restart = match how {
            Apply::Start => Vec::new(),
            Apply::Reload => {
                let restart = needs_restart(&old, &config);
                keep_running_values(&old, &mut config);
                restart
            }
        };
        let digest = ca_digest(&config);
        let ca = if how == Apply::Reload && config.ca == old.ca && *lock(&self.ca_files) == digest {
            self.ca()
        } else {
            let ca = load_ca(&config)?;
            if how == Apply::Reload {
                info!("the built-in CA was loaded again ([ca] or its files changed)");
            }
            ca
        };
        // `[admin]` added or removed needs a restart (its listener); otherwise it is rebuilt.
        let admin = match (&config.admin, self.admin_access()) {
            (Some(a), Some(_)) => Some(Arc::new(AdminAccess::build(a)?)),
            (Some(a), None) if how == Apply::Start => Some(Arc::new(AdminAccess::build(a)?)),
            (_, current) => current,
        };
        let current = crate::store::load_all(&mut ch.tx).await?;
        credentials::ensure(&config, &mut ch, &current, ca.as_deref())
            .await
            .map_err(|e| GatewayError::Setup(e.to_string()))?;
        let mut store = crate::store::load_all(&mut ch.tx).await?;
        crate::store::open_keys(&mut store, self.store.sealer())?;
        // Read from disk; what was read becomes the files later admin changes build from.
        let (snapshot, files) = crate::pki::with_files(None, || {
            super::build_snapshot(&config, &store, self.shared.ticketer(), &self.shared.pools)
        });
        let snapshot = snapshot?;
        let config = Arc::new(config);
        let applied = config.clone();
        ch.commit_built(snapshot, || {
            *lock(&self.files) = Arc::new(files);
            *lock(&self.ca_files) = digest;
            self.ca.store(ca);
            self.admin.store(admin);
            self.config.store(applied);
        })
        .await?;
        for setting in restart {
            warn!(
                setting,
                "this setting changed in the config file and needs a restart; the running value stays until then"
            );
        }
        Ok(config)
    }
}

/// The store passphrase: from `store_passphrase_file`, else `SYMBOLON_STORE_PASSPHRASE`;
/// `None` when neither is set (private keys in the store are then kept in the clear, in a
/// 0600 file).
pub(super) fn store_sealer(config: &Config) -> Result<Option<Vec<u8>>, GatewayError> {
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
        .map_err(|e| GatewayError::Setup(format!("[ca]: {e}")))?;
    if let Some(url) = &c.crl_url {
        check_crl_url(url)?;
    }
    Ok(Some(Arc::new(
        crate::ca::Ca::load(&c.dir, &pass)
            .map_err(|e| GatewayError::Setup(format!("[ca]: {e}")))?
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
        return Err(GatewayError::Setup(format!(
            "[ca] crl_url '{url}' is not an http:// or https:// URL. Fix: for example crl_url = \"http://gateway.example:9464/ca/crl.der\""
        )));
    }
    Ok(())
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
