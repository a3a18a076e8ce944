//! `symbolon route …`: routes, and the upstream TLS flags routes and sidecars share.

use std::path::PathBuf;

use clap::Subcommand;
use http::Method;
use serde_json::Value;

use crate::admin::routes::{RouteCreate, RouteUpdate};
use crate::config::UpstreamTls;

use super::Exit;
use super::api::{Api, Resource, body, read_as};

#[derive(Debug, Subcommand)]
pub enum RouteCmd {
    /// Route a host and path prefix to an upstream.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        upstream: String,
        #[arg(long)]
        host: Option<String>,
        #[arg(long, default_value = "/")]
        path_prefix: String,
        #[arg(long)]
        strip_prefix: bool,
        /// Client credential presented to an https:// upstream.
        #[arg(long)]
        credential: Option<String>,
        /// Authorization settings as a JSON file (auth, rules, token_header, strip_auth, enforce).
        #[arg(long)]
        authz: Option<PathBuf>,
        #[command(flatten)]
        tls: UpstreamTlsArgs,
    },
    List,
    Show {
        id: String,
    },
    /// Change a route: only the settings given (upstream TLS flags merge over the current ones).
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        upstream: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        path_prefix: Option<String>,
        #[arg(long)]
        strip_prefix: Option<bool>,
        /// Client credential presented to an https:// upstream ("" removes it).
        #[arg(long)]
        credential: Option<String>,
        /// Authorization settings as a JSON file.
        #[arg(long)]
        authz: Option<PathBuf>,
        #[command(flatten)]
        tls: UpstreamTlsArgs,
    },
    Delete {
        id: String,
    },
}

/// How the gateway checks an https:// upstream (route create/update, sidecar create).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UpstreamTlsArgs {
    /// Trust bundle the upstream's certificate must chain to (default: the system CAs; "" resets).
    #[arg(long)]
    pub upstream_trust_bundle: Option<String>,
    /// Server name sent as SNI and checked in the upstream's certificate ("" resets).
    #[arg(long)]
    pub upstream_server_name: Option<String>,
    /// Fail with 502 when the upstream does not ask for a client certificate.
    #[arg(long)]
    pub require_upstream_mtls: Option<bool>,
}

const ROUTES: Resource = Resource {
    path: "/api/v1/routes",
    kind: "route",
    columns: &[
        "id",
        "name",
        "host",
        "path_prefix",
        "upstream",
        "strip_prefix",
        "credential",
    ],
};

pub async fn run(cmd: RouteCmd, api: &Api) -> Result<(), Exit> {
    match cmd {
        RouteCmd::Create {
            name,
            upstream,
            host,
            path_prefix,
            strip_prefix,
            credential,
            authz,
            tls,
        } => {
            let request = RouteCreate {
                name,
                upstream,
                host,
                path_prefix,
                strip_prefix,
                credential,
                authz: authz.as_deref().map(read_as).transpose()?,
                upstream_tls: upstream_tls(&tls, None)?,
            };
            api.create(&ROUTES, body(&request)).await
        }
        RouteCmd::List => api.list(&ROUTES).await,
        RouteCmd::Show { id } => api.show(&ROUTES, &id).await,
        RouteCmd::Update {
            id,
            name,
            upstream,
            host,
            path_prefix,
            strip_prefix,
            credential,
            authz,
            tls,
        } => {
            let authz = authz.as_deref().map(read_as).transpose()?;
            // Only the TLS settings given change; the others are kept.
            let upstream_tls = if tls.any() {
                let current = api.get(&ROUTES.item(&id)).await?;
                upstream_tls(&tls, current.get("upstream_tls"))?
            } else {
                None
            };
            let request = RouteUpdate {
                name,
                upstream,
                host,
                path_prefix,
                strip_prefix,
                credential,
                authz,
                upstream_tls,
            };
            api.update(&ROUTES, Method::PATCH, &id, body(&request))
                .await
        }
        RouteCmd::Delete { id } => api.delete(&ROUTES, &id).await,
    }
}

impl UpstreamTlsArgs {
    /// Whether any upstream TLS flag was given.
    pub fn any(&self) -> bool {
        self.upstream_trust_bundle.is_some()
            || self.upstream_server_name.is_some()
            || self.require_upstream_mtls.is_some()
    }
}

/// The `upstream_tls` settings from CLI flags, merged over `current` (the route's as the API
/// shows them); `None` when no flag is given. An empty value resets a setting.
pub fn upstream_tls(
    tls: &UpstreamTlsArgs,
    current: Option<&Value>,
) -> Result<Option<UpstreamTls>, Exit> {
    if !tls.any() {
        return Ok(None);
    }
    let mut settings: UpstreamTls = current
        .filter(|v| v.is_object())
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let given = |value: &Option<String>, now: &mut Option<String>| match value.as_deref() {
        Some("") => *now = None,
        Some(v) => *now = Some(v.to_string()),
        None => {}
    };
    given(&tls.upstream_trust_bundle, &mut settings.trust_bundle);
    given(&tls.upstream_server_name, &mut settings.server_name);
    if let Some(r) = tls.require_upstream_mtls {
        settings.require_mtls = r;
    }
    Ok(Some(settings))
}
