//! Sidecar (egress) mode: a local plain-HTTP listener per sidecar. A local app sends ordinary
//! requests to it; the gateway forwards them to the sidecar's upstream over TLS, presenting a
//! client credential that the built-in CA issued and rotates at two thirds of its lifetime.
//!
//! - Sidecars come from the config file (`[[sidecars]]`) and from the store (admin API). They
//!   are part of the snapshot; [`Listeners::reconcile`] binds and closes listeners to match
//!   every published snapshot, so changes apply live.
//! - A rotation writes the new credential into the store and publishes a snapshot whose pool is
//!   keyed by the new certificate. New requests use it at once; requests already in flight
//!   finish on their old connections, which close when they go idle.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use sqlx::SqliteConnection;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::ca::{Ca, Profile};
use crate::config::{Config, SidecarConfig};
use crate::gateway::State;
use crate::lock;
use crate::pki::{self, rfc3339};
use crate::proxy::RespBody;
use crate::proxy::respond::ProxyError;
use crate::routing::{Upstream, parse_upstream};
use crate::snapshot::{SnapshotError, upstream_tls};
use crate::store::{self, CredentialRow, StoreState};
use crate::upstream::{Pools, TlsUpstream};

/// One sidecar as the data plane uses it.
#[derive(Debug)]
pub struct Sidecar {
    pub config: SidecarConfig,
    /// `config` (the config file) or `api` (the store).
    pub source: &'static str,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    pub base_path: String,
    pub tls: Option<Arc<TlsUpstream>>,
    /// For an issued credential: when it is rotated.
    pub rotation: Option<Rotation>,
}

/// The state of a sidecar's issued credential.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Rotation {
    /// Name of the credential in the store (`sidecar-NAME`).
    pub credential: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    pub not_after: String,
    /// Two thirds into the certificate's lifetime.
    pub rotate_at: String,
    #[serde(skip)]
    pub rotate_at_unix: i64,
}

/// Why a sidecar could not be rotated or set up.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("there is no sidecar named '{0}'")]
    NotFound(String),
    #[error(
        "sidecar '{0}' presents a fixed credential; only a credential issued by the built-in CA (`issue`) is rotated"
    )]
    NotManaged(String),
    #[error(
        "sidecar '{0}' asks for a credential issued by the built-in CA, but the gateway has no CA. Fix: add a [ca] section (symbolon ca init), or name a credential in upstream_tls"
    )]
    NoCa(String),
    #[error("sidecar '{name}': the CA cannot issue its credential: {detail}")]
    Issue { name: String, detail: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl From<sqlx::Error> for SidecarError {
    fn from(e: sqlx::Error) -> Self {
        SidecarError::Store(e.into())
    }
}

/// Checks what can be checked without the store: name, upstream, issue settings.
pub fn check(sc: &SidecarConfig) -> Result<(), String> {
    if sc.name.is_empty()
        || !sc
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "sidecar name '{}' may only use letters, digits, '-', '_' and '.'",
            sc.name
        ));
    }
    let upstream = parse_upstream(&sc.name, &sc.upstream).map_err(|e| e.to_string())?;
    if !matches!(upstream, Upstream::Http { .. }) {
        return Err(format!(
            "sidecar '{}': the upstream must be an http:// or https:// URL, not '{}'",
            sc.name, sc.upstream
        ));
    }
    if (sc.upstream_tls.is_some() || sc.issue.is_some()) && !upstream.is_https() {
        return Err(format!(
            "sidecar '{}': upstream_tls and issue need an https:// upstream, not '{}'",
            sc.name, sc.upstream
        ));
    }
    if let Some(issue) = &sc.issue {
        let lifetime = crate::config::LIFETIME
            .parse(&issue.lifetime)
            .map_err(|e| format!("sidecar '{}': issue.{e}", sc.name))?;
        if lifetime < Duration::from_secs(3) {
            return Err(format!(
                "sidecar '{}': issue.lifetime must be at least 3s",
                sc.name
            ));
        }
        if issue.common_name.trim().is_empty() {
            return Err(format!("sidecar '{}': issue.common_name is empty", sc.name));
        }
        if let Some(id) = &issue.spiffe_id
            && !id.starts_with("spiffe://")
        {
            return Err(format!(
                "sidecar '{}': issue.spiffe_id '{id}' is not a SPIFFE ID (spiffe://trust-domain/path)",
                sc.name
            ));
        }
        if let Some(t) = &sc.upstream_tls
            && (t.credential.is_some() || t.cert_file.is_some())
        {
            return Err(format!(
                "sidecar '{}': use either issue (a credential from the built-in CA) or a credential in upstream_tls, not both",
                sc.name
            ));
        }
    }
    Ok(())
}

/// Every sidecar from the config file and the store, validated.
pub(crate) fn build_all(
    config: &Config,
    store: &StoreState,
    pools: &Pools,
) -> Result<HashMap<String, Arc<Sidecar>>, SnapshotError> {
    let mut all = Vec::new();
    for sc in &config.sidecars {
        all.push((sc.clone(), "config"));
    }
    for row in &store.sidecars {
        let sc: SidecarConfig =
            serde_json::from_str(&row.spec).map_err(|e| SnapshotError::UpstreamTls {
                owner: format!("sidecar '{}'", row.name),
                detail: format!("stored settings are not valid: {e}"),
            })?;
        all.push((sc, "api"));
    }
    let mut out: HashMap<String, Arc<Sidecar>> = HashMap::new();
    for (sc, source) in all {
        let owner = format!("sidecar '{}'", sc.name);
        let err = |detail: String| SnapshotError::UpstreamTls {
            owner: owner.clone(),
            detail,
        };
        check(&sc).map_err(&err)?;
        if out.contains_key(&sc.name) {
            return Err(err("two sidecars have this name".into()));
        }
        if sc.listen.port() != 0
            && let Some(other) = out.values().find(|o| o.config.listen == sc.listen)
        {
            return Err(err(format!(
                "listen address {} is already used by sidecar '{}'",
                sc.listen, other.config.name
            )));
        }
        let upstream = parse_upstream(&sc.name, &sc.upstream).map_err(|e| err(e.to_string()))?;
        let Upstream::Http {
            scheme,
            authority,
            base_path,
        } = upstream.clone()
        else {
            return Err(err("the upstream must be an http(s) URL".into()));
        };
        let credential = match &sc.issue {
            Some(_) => {
                let name = sc.credential_name();
                Some(store.credentials.iter().find(|c| c.name == name).ok_or_else(|| {
                    err(format!(
                        "its credential '{name}' has not been issued yet. Fix: reload, or create the sidecar through the admin API"
                    ))
                })?)
            }
            None => None,
        };
        let tls = upstream_tls(
            &owner,
            &upstream,
            sc.upstream_tls.as_ref(),
            credential,
            store,
            pools,
        )?;
        let rotation = match (&sc.issue, credential) {
            (Some(_), Some(row)) => Some(rotation_of(row).map_err(&err)?),
            _ => None,
        };
        out.insert(
            sc.name.clone(),
            Arc::new(Sidecar {
                config: sc,
                source,
                scheme,
                authority,
                base_path,
                tls,
                rotation,
            }),
        );
    }
    Ok(out)
}

/// When an issued credential is due: two thirds into its lifetime, counted from its issue
/// (the CA back-dates `not_before` by [`crate::ca::BACKDATE_SECS`]).
fn rotation_of(row: &CredentialRow) -> Result<Rotation, String> {
    let info = pki::leaf_info(&row.cert_pem).ok_or_else(|| {
        format!(
            "the certificate of credential '{}' cannot be read",
            row.name
        )
    })?;
    let issued = info.not_before + crate::ca::BACKDATE_SECS;
    let rotate_at = issued + (info.not_after - issued).max(0) * 2 / 3;
    Ok(Rotation {
        credential: row.name.clone(),
        serial: info.serial_hex.clone(),
        fingerprint_sha256: info.fingerprint_sha256.clone(),
        not_after: rfc3339(info.not_after),
        rotate_at: rfc3339(rotate_at),
        rotate_at_unix: rotate_at,
    })
}

/// Issues (or re-issues) a sidecar's credential into the store, inside `tx`.
/// The certificate is recorded with an audit entry naming `actor`, in `tx`.
pub(crate) async fn issue_credential(
    tx: &mut SqliteConnection,
    ca: Option<&Ca>,
    sc: &SidecarConfig,
    actor: &str,
    sealer: Option<&crate::ca::Sealer>,
) -> Result<store::IssuedRow, SidecarError> {
    let spec = sc
        .issue
        .as_ref()
        .ok_or_else(|| SidecarError::NotManaged(sc.name.clone()))?;
    let ca = ca.ok_or_else(|| SidecarError::NoCa(sc.name.clone()))?;
    let issue_err = |detail: String| SidecarError::Issue {
        name: sc.name.clone(),
        detail,
    };
    let lifetime = crate::ca::parse_lifetime(&spec.lifetime).map_err(issue_err)?;
    let profile = if spec.spiffe_id.is_some() {
        Profile::Spiffe
    } else {
        Profile::Client
    };
    let sans = crate::ca::Sans {
        uris: spec.spiffe_id.iter().cloned().collect(),
        ..Default::default()
    };
    let t = crate::ca::Template::common_name(&spec.common_name, sans, profile, Some(lifetime));
    let (issued, key) = ca.issue(&t).map_err(|e| issue_err(e.to_string()))?;
    let name = sc.credential_name();
    let existing: Option<(String,)> = sqlx::query_as("SELECT id FROM credentials WHERE name = ?")
        .bind(&name)
        .fetch_optional(&mut *tx)
        .await?;
    let row = CredentialRow {
        id: existing
            .as_ref()
            .map(|r| r.0.clone())
            .unwrap_or_else(store::new_id),
        name,
        cert_pem: issued.chain_pem.clone(),
        key_pem: key.serialize_pem(),
        created_at: store::now(),
    };
    if existing.is_some() {
        store::update_credential(tx, &row, sealer).await?;
    } else {
        store::insert_credential(tx, &row, sealer).await?;
    }
    Ok(crate::issuance::record(tx, &issued, &t, actor, "sidecar", None).await?)
}

/// Whether a credential carries the common name and SPIFFE ID that `spec` asks for.
fn issued_for(c: &CredentialRow, spec: &crate::config::IssueSpec) -> bool {
    pki::leaf_info(&c.cert_pem).is_some_and(|info| {
        info.subject == format!("CN={}", spec.common_name) && info.spiffe_id == spec.spiffe_id
    })
}

/// Issues the credentials of sidecars that ask for one and have none yet (or one issued for
/// another name), and deletes those of
/// sidecars removed from the config file (at start and on reload, before the snapshot is
/// built). Nothing is written if one of them fails. Returns whether it wrote anything (then
/// `current` is out of date).
pub(crate) async fn ensure_credentials(
    config: &Config,
    store: &store::Store,
    current: &StoreState,
    ca: Option<&Ca>,
) -> Result<bool, SidecarError> {
    let mut wanted: Vec<SidecarConfig> = config.sidecars.clone();
    for row in &current.sidecars {
        if let Ok(sc) = serde_json::from_str::<SidecarConfig>(&row.spec) {
            wanted.push(sc);
        }
    }
    // Credentials of sidecars removed from the config file: issued by this CA, named after a
    // sidecar that no longer exists, and presented by no route.
    let orphans: Vec<&CredentialRow> = current
        .credentials
        .iter()
        .filter(|c| c.name.starts_with("sidecar-"))
        .filter(|c| {
            !wanted
                .iter()
                .any(|sc| sc.issue.is_some() && sc.credential_name() == c.name)
        })
        .filter(|c| {
            !current
                .routes
                .iter()
                .any(|r| r.credential_id.as_deref() == Some(c.id.as_str()))
                && !config.routes.iter().any(|r| {
                    r.upstream_tls
                        .as_ref()
                        .and_then(|t| t.credential.as_deref())
                        == Some(c.name.as_str())
                })
        })
        .filter(|c| {
            ca.is_some_and(|ca| {
                pki::parse_certs(c.cert_pem.as_bytes(), std::path::Path::new("credential"))
                    .ok()
                    .and_then(|certs| certs.into_iter().next())
                    .is_some_and(|der| ca.signed(&der))
            })
        })
        .collect();
    // Missing, or issued for another name (the config file's `issue` changed).
    let missing: Vec<&SidecarConfig> = wanted
        .iter()
        .filter(|sc| {
            let Some(spec) = &sc.issue else { return false };
            let name = sc.credential_name();
            !current
                .credentials
                .iter()
                .any(|c| c.name == name && issued_for(c, spec))
        })
        .collect();
    if missing.is_empty() && orphans.is_empty() {
        return Ok(false);
    }
    let mut tx = store.begin().await?;
    for c in &orphans {
        store::delete_row(&mut tx, store::Table::Credentials, &c.id).await?;
        store::insert_audit(
            &mut tx,
            "sidecar",
            "credential.delete",
            &c.name,
            "its sidecar was removed from the config file",
        )
        .await?;
    }
    for sc in &missing {
        check(sc).map_err(|detail| SidecarError::Issue {
            name: sc.name.clone(),
            detail,
        })?;
        issue_credential(
            &mut tx,
            ca,
            sc,
            &format!("sidecar:{}", sc.name),
            store.sealer(),
        )
        .await?;
        store::insert_audit(
            &mut tx,
            "sidecar",
            "credential.issue",
            &sc.credential_name(),
            "",
        )
        .await?;
    }
    tx.commit().await.map_err(store::StoreError::from)?;
    Ok(true)
}

/// Replaces a sidecar's issued credential now and publishes the change.
pub async fn rotate(state: &State, name: &str, actor: &str) -> Result<Rotation, SidecarError> {
    let _guard = state.change_lock().await;
    let snapshot = state.snapshot.load_full();
    let sc = snapshot
        .sidecars
        .get(name)
        .ok_or_else(|| SidecarError::NotFound(name.into()))?;
    let mut tx = state.store.begin().await?;
    let record = issue_credential(
        &mut tx,
        state.ca().as_deref(),
        &sc.config,
        actor,
        state.store.sealer(),
    )
    .await?;
    let all = store::load_all(&mut tx).await?;
    let next = state.build(&all)?;
    store::insert_audit(
        &mut tx,
        actor,
        "credential.rotate",
        &sc.config.credential_name(),
        &format!("serial {}", record.serial),
    )
    .await?;
    tx.commit().await.map_err(store::StoreError::from)?;
    let rotation = next
        .sidecars
        .get(name)
        .and_then(|s| s.rotation.clone())
        .ok_or_else(|| SidecarError::NotManaged(name.into()))?;
    state.publish(next);
    metrics::counter!("symbolon_sidecar_rotations_total", "sidecar" => name.to_string(), "result" => "ok").increment(1);
    info!(target: "symbolon::audit", actor, action = "credential.rotate", sidecar = name, serial = %rotation.serial, not_after = %rotation.not_after, "sidecar credential rotated");
    Ok(rotation)
}

/// Rotates issued credentials when they are due; retries a failed rotation every 5 s.
pub(crate) async fn rotate_when_due(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = state.subscribe();
    let mut retry_at: HashMap<String, i64> = HashMap::new();
    loop {
        let snapshot = state.snapshot.load_full();
        let now = pki::unix_now();
        let mut next = now + 60;
        for (name, sc) in &snapshot.sidecars {
            let Some(r) = &sc.rotation else { continue };
            let due = r
                .rotate_at_unix
                .max(retry_at.get(name).copied().unwrap_or(0));
            if due > now {
                next = next.min(due);
                continue;
            }
            match rotate(&state, name, "rotation").await {
                Ok(_) => {
                    retry_at.remove(name);
                }
                Err(e) => {
                    metrics::counter!("symbolon_sidecar_rotations_total", "sidecar" => name.clone(), "result" => "failed").increment(1);
                    error!(sidecar = %name, error = %e, "cannot rotate the sidecar's credential; retrying in 5 s");
                    retry_at.insert(name.clone(), now + 5);
                    next = next.min(now + 5);
                }
            }
        }
        let wait = Duration::from_secs(u64::try_from(next - now).unwrap_or(0).max(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = changes.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The running sidecar listeners, and the connections they accepted (for a graceful stop).
#[derive(Default)]
pub struct Listeners {
    running: Mutex<HashMap<String, Running>>,
    drain: crate::listener::Drain,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Running {
    listen: SocketAddr,
    result: Result<(SocketAddr, JoinHandle<()>), String>,
}

impl Listeners {
    /// Binds listeners of new sidecars (and retries failed ones), closes those of removed or
    /// moved sidecars. A bind failure is logged and shown in the sidecar's status.
    pub fn reconcile(&self, state: &Arc<State>, sidecars: &HashMap<String, Arc<Sidecar>>) {
        let mut running = lock(&self.running);
        running.retain(|name, r| {
            let keep = sidecars
                .get(name)
                .is_some_and(|s| s.config.listen == r.listen && r.result.is_ok());
            if !keep && let Ok((_, task)) = &r.result {
                task.abort();
            }
            keep
        });
        for (name, sc) in sidecars {
            if running.contains_key(name) {
                continue;
            }
            let listen = sc.config.listen;
            if !listen.ip().is_loopback() {
                warn!(sidecar = %name, %listen, "the sidecar listens beyond loopback: anyone who reaches it sends requests with its client credential");
            }
            let result = bind(listen).map(|(listener, addr)| {
                let task = tokio::spawn(accept(
                    state.clone(),
                    name.clone().into(),
                    listener,
                    self.drain.clone(),
                ));
                info!(sidecar = %name, %addr, upstream = %sc.config.upstream, "sidecar listening");
                (addr, task)
            });
            if let Err(e) = &result {
                error!(sidecar = %name, %listen, error = %e, "sidecar cannot listen");
            }
            running.insert(name.clone(), Running { listen, result });
        }
    }

    /// The address a sidecar listens on, or why it does not.
    pub fn status(&self, name: &str) -> Option<Result<SocketAddr, String>> {
        lock(&self.running)
            .get(name)
            .map(|r| r.result.as_ref().map(|(a, _)| *a).map_err(Clone::clone))
    }

    /// Closes every listener (at shutdown; when this returns, none accepts any more) and hands
    /// back the open connections, which finish the request in flight and close when told to.
    pub async fn stop_all(&self) -> crate::listener::Drain {
        let tasks: Vec<JoinHandle<()>> = lock(&self.running)
            .drain()
            .filter_map(|(_, r)| r.result.ok().map(|(_, task)| task))
            .collect();
        for task in tasks {
            task.abort();
            // An aborted task has dropped its listener once it completes.
            let _ = task.await;
        }
        self.drain.clone()
    }
}

fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let fix = |e: std::io::Error| {
        format!(
            "cannot listen on {listen}: {e}. Fix: free the port or choose another listen address"
        )
    };
    let std_listener = std::net::TcpListener::bind(listen).map_err(fix)?;
    std_listener.set_nonblocking(true).map_err(fix)?;
    let addr = std_listener.local_addr().map_err(fix)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(fix)?;
    Ok((listener, addr))
}

async fn accept(
    state: Arc<State>,
    name: Arc<str>,
    listener: tokio::net::TcpListener,
    drain: crate::listener::Drain,
) {
    let cap = state.limits.sidecar;
    let limiter = crate::listener::Limiter::new("sidecar", cap, cap);
    loop {
        let (tcp, _peer, permit) = crate::listener::accept(&listener, &limiter).await;
        let state = state.clone();
        let name = name.clone();
        let watcher = drain.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let timeouts =
                crate::listener::ConnTimeouts::from_config(&state.snapshot.load().timeouts);
            let activity = crate::listener::Activity::new(false);
            let svc_state = state.clone();
            let svc = crate::listener::counted(&activity, move |req| {
                handle(req, name.clone(), svc_state.clone())
            });
            let io = TokioIo::new(crate::listener::Tracked::new(tcp, activity.clone()));
            let conn = state.http.serve_connection(io, svc);
            crate::listener::supervise(
                "sidecar",
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

/// Forwards one request from the local app to the sidecar's upstream.
async fn handle(
    mut req: Request<Incoming>,
    name: Arc<str>,
    state: Arc<State>,
) -> Result<Response<RespBody>, Infallible> {
    let started = Instant::now();
    let snapshot = state.snapshot.load_full();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = match snapshot.sidecars.get(&*name) {
        None => Err(ProxyError::UpstreamConnect {
            upstream: format!("of sidecar '{name}'"),
            detail: "the sidecar was removed".into(),
        }),
        Some(sc) => {
            crate::proxy::headers::strip_hop_by_hop(req.headers_mut());
            // The upstream sees its own host name, as with a direct request.
            req.headers_mut().remove(header::HOST);
            let upstream_path = format!("{}{}", sc.base_path, path);
            crate::proxy::http::send(
                req,
                sc.scheme.clone(),
                sc.authority.clone(),
                upstream_path,
                sc.tls.as_deref(),
                &state,
                &snapshot.timeouts,
            )
            .await
        }
    };
    let (response, error_code) = match result {
        Ok(r) => (r, None),
        Err(e) => {
            let code = e.code();
            (e.into_response(), Some(code))
        }
    };
    let status = response.status().as_u16();
    metrics::counter!("symbolon_sidecar_requests_total", "sidecar" => name.to_string(), "status" => status.to_string()).increment(1);
    if snapshot.access_log {
        info!(
            target: "symbolon::access",
            sidecar = &*name,
            method = %method,
            path = %path,
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            error = error_code.unwrap_or(""),
            "request"
        );
    }
    Ok(response)
}
