//! Certificate revocation lists: CRL URLs of trust bundles fetched into a cache (never under
//! the change lock), checked before they are taken, refreshed on their interval; and the built-in
//! CA's own CRL, signed on demand and cached.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::{info, warn};

use super::{Control, GatewayError};
use crate::config::Config;
use crate::store::StoreState;

/// The built-in CA's last signed CRL.
pub struct Signed {
    /// The snapshot generation it was made for.
    generation: u64,
    made: std::time::Instant,
    der: Vec<u8>,
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
        if let Some(spec) = &b.crls {
            let cas =
                crate::pki::parse_certs(b.pem.as_bytes(), Path::new("bundle")).unwrap_or_default();
            for url in &spec.urls {
                out.entry(url.clone())
                    .or_default()
                    .extend(cas.iter().cloned());
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
        let spec = b.crls.as_ref()?;
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
pub async fn prefetch(
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
pub enum Which {
    /// At start: every URL; one that cannot be fetched and has no cached copy stops the gateway.
    Start,
    /// The periodic refresh: every URL; failures keep the cached copy and are logged.
    Refresh,
    /// A reload or an admin change: only URLs without a cached copy yet (new ones).
    Missing,
}

/// Fetches CRL URLs into their cache files. Returns whether any content changed.
pub async fn fetch_all(
    config: &Config,
    store: &StoreState,
    which: Which,
) -> Result<bool, GatewayError> {
    let mut changed = false;
    for (url, issuers) in crl_issuers(config, store) {
        let path = crate::config::crl_cache_path(config, &url);
        if which == Which::Missing && path.exists() {
            continue;
        }
        let held = std::fs::read(&path).ok();
        match fetch_checked(config, &url, &issuers, held.as_deref()).await {
            Ok(bytes) => {
                if held.as_deref() == Some(&bytes[..]) {
                    continue;
                }
                write_crl_cache(&path, &bytes).map_err(|e| {
                    GatewayError::Setup(format!(
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
            Err(e) if which == Which::Start => {
                return Err(GatewayError::Setup(format!(
                    "cannot fetch the CRL {url}: {e}. Fix: check the URL, or use a CRL file"
                )));
            }
            Err(e) => warn!(%url, error = %e, "cannot fetch the CRL"),
        }
    }
    Ok(changed)
}

/// Re-fetches CRL URLs at the refresh interval in force; a changed CRL is applied with a reload.
pub(super) async fn refresh(control: Arc<Control>) {
    let mut changes = control.shared.subscribe();
    // Counted from the last fetch: changes (admin writes, revocations) come often and must not
    // push the refresh back; they only matter when they bring a shorter interval.
    let mut last_fetch = tokio::time::Instant::now();
    loop {
        let config = control.config();
        let Ok(store) = control.store.state().await else {
            tokio::time::sleep(Duration::from_secs(60)).await;
            continue;
        };
        let due = last_fetch + crl_refresh(&config, &store);
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = changes.changed() => continue,
        }
        last_fetch = tokio::time::Instant::now();
        let config = control.config();
        let Ok(store) = control.store.state().await else {
            continue;
        };
        if crl_urls(&config, &store).is_empty() {
            continue;
        }
        if let Ok(true) = fetch_all(&config, &store, Which::Refresh).await {
            let _ = control.reload().await;
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
pub async fn served(control: &Control) -> Result<Vec<u8>, String> {
    let generation = control.shared.generation();
    let validity = control
        .config()
        .ca
        .as_ref()
        .map(|c| c.crl_validity)
        .unwrap_or(Duration::from_secs(86_400));
    let mut cached = control.crl_cache.lock().await;
    if let Some(s) = cached.as_ref()
        && s.generation == generation
        && s.made.elapsed() < validity / 2
    {
        return Ok(s.der.clone());
    }
    let der = make_crl(control, validity).await?;
    *cached = Some(Signed {
        generation,
        made: std::time::Instant::now(),
        der: der.clone(),
    });
    Ok(der)
}

async fn make_crl(control: &Control, validity: Duration) -> Result<Vec<u8>, String> {
    let ca = control
        .ca()
        .ok_or("no built-in CA is configured ([ca] in the config)")?;
    let rows = control
        .store
        .revocation_rows()
        .await
        .map_err(|e| e.to_string())?;
    let issued = control.store.issued().await.map_err(|e| e.to_string())?;
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
