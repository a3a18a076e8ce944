//! Sidecar (egress) mode: a local plain-HTTP listener per sidecar. A local app sends ordinary
//! requests to it; the gateway forwards them to the sidecar's upstream over TLS, presenting a
//! client credential that the built-in CA issued and rotates at two thirds of its lifetime.
//!
//! - Sidecars come from the config file (`[[sidecars]]`) and from the store (admin API). They
//!   are part of the snapshot; [`Listeners::reconcile`] binds and closes listeners to match
//!   every published snapshot, so changes apply live.
//! - A rotation ([`crate::control::credentials`]) writes the new credential into the store and
//!   publishes a snapshot whose pool is keyed by the new certificate. New requests use it at
//!   once; requests already in flight finish on their old connections, which close when they
//!   go idle.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Request, Response, header};
use hyper::body::Incoming;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::lock;
use crate::proxy::RespBody;
use crate::proxy::respond::ProxyError;
use crate::shared::Shared;
use crate::snapshot::Sidecar;

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
    pub fn reconcile(&self, shared: &Arc<Shared>, sidecars: &HashMap<String, Arc<Sidecar>>) {
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
            let result = crate::listener::bind(listen)
                .map_err(|e| {
                    format!(
                        "cannot listen on {listen}: {e}. Fix: free the port or choose another listen address"
                    )
                })
                .map(|(listener, addr)| {
                let task = tokio::spawn(accept(
                    shared.clone(),
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

async fn accept(
    state: Arc<Shared>,
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
            let timeouts = crate::listener::ConnTimeouts::from_config(&state.snapshot().timeouts);
            let svc_state = state.clone();
            crate::listener::serve_plain(
                "sidecar",
                tcp,
                &state.http,
                timeouts,
                watcher,
                move |req| handle(req, name.clone(), svc_state.clone()),
            )
            .await;
        });
    }
}

/// Forwards one request from the local app to the sidecar's upstream.
async fn handle(
    mut req: Request<Incoming>,
    name: Arc<str>,
    state: Arc<Shared>,
) -> Result<Response<RespBody>, Infallible> {
    let started = Instant::now();
    let snapshot = state.snapshot();
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
