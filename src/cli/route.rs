//! `symbolon route …`: routes, and the upstream TLS flags routes and sidecars share.

use std::path::PathBuf;

use clap::Subcommand;
use http::Method;
use serde_json::{Value, json};

use super::Exit;
use super::api::{Api, Resource, read_json};

#[derive(Debug, Subcommand)]
pub enum RouteCmd {
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

/// The body of a route create (every field given) or update (only those that change).
struct Fields {
    name: Option<String>,
    upstream: Option<String>,
    host: Option<String>,
    path_prefix: Option<String>,
    strip_prefix: Option<bool>,
    credential: Option<String>,
    authz: Option<Value>,
    upstream_tls: Option<Value>,
}

impl Fields {
    fn body(self) -> Value {
        json!({"name": self.name, "upstream": self.upstream, "host": self.host,
            "path_prefix": self.path_prefix, "strip_prefix": self.strip_prefix,
            "credential": self.credential, "authz": self.authz,
            "upstream_tls": self.upstream_tls})
    }
}

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
            let body = Fields {
                name: Some(name),
                upstream: Some(upstream),
                host,
                path_prefix: Some(path_prefix),
                strip_prefix: Some(strip_prefix),
                credential,
                authz: authz.as_deref().map(read_json).transpose()?,
                upstream_tls: upstream_tls_body(&tls, None),
            };
            api.create(&ROUTES, body.body()).await
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
            let authz = authz.as_deref().map(read_json).transpose()?;
            // Only the TLS settings given change; the others are kept.
            let upstream_tls = if upstream_tls_body(&tls, None).is_some() {
                let current = api.get(&ROUTES.item(&id)).await?;
                upstream_tls_body(&tls, current.get("upstream_tls"))
            } else {
                None
            };
            let body = Fields {
                name,
                upstream,
                host,
                path_prefix,
                strip_prefix,
                credential,
                authz,
                upstream_tls,
            };
            api.update(&ROUTES, Method::PATCH, &id, body.body()).await
        }
        RouteCmd::Delete { id } => api.delete(&ROUTES, &id).await,
    }
}

/// The `upstream_tls` object from CLI flags, merged over `current` (None when no flag is given
/// and there is nothing to merge). An empty value resets a setting.
pub fn upstream_tls_body(tls: &UpstreamTlsArgs, current: Option<&Value>) -> Option<Value> {
    if tls.upstream_trust_bundle.is_none()
        && tls.upstream_server_name.is_none()
        && tls.require_upstream_mtls.is_none()
    {
        return None;
    }
    let mut body = current
        .filter(|v| v.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut set = |key: &str, value: &Option<String>| {
        match value.as_deref() {
            Some("") => body[key] = Value::Null,
            Some(v) => body[key] = json!(v),
            None => {}
        };
    };
    set("trust_bundle", &tls.upstream_trust_bundle);
    set("server_name", &tls.upstream_server_name);
    if let Some(r) = tls.require_upstream_mtls {
        body["require_mtls"] = json!(r);
    }
    Some(body)
}
