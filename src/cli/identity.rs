//! `symbolon identity …`: identities (a client certificate and/or a token, with a policy).

use std::path::PathBuf;

use clap::Subcommand;
use http::Method;

use super::api::{Api, Resource, body};
use serde_json::Value;

use crate::admin::identities::{IdentityCreate, IdentityUpdate};

use super::{Exit, read};

#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// Create an identity bound to a public certificate (never a key) and/or a token.
    Create {
        #[arg(long)]
        name: String,
        /// The client's public certificate (PEM).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Or its SHA-256 fingerprint.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Also create a token (printed once).
        #[arg(long)]
        with_token: bool,
        #[arg(long)]
        policy: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long)]
        inactive: bool,
    },
    List,
    Show {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        active: Option<bool>,
        /// RFC 3339; "" removes the expiry.
        #[arg(long)]
        expires_at: Option<String>,
        /// Bind to another public certificate.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Replace the token (the new one is printed once).
        #[arg(long)]
        rotate_token: bool,
    },
    Delete {
        id: String,
    },
    /// Requests, status classes, bytes and last seen, per route.
    Usage {
        id: String,
    },
}

const IDENTITIES: Resource = Resource {
    path: "/api/v1/identities",
    kind: "identity",
    columns: &[
        "id",
        "name",
        "fingerprint",
        "has_token",
        "policy",
        "active",
        "expires_at",
    ],
};

const USAGE: &[&str] = &[
    "route",
    "requests",
    "status_2xx",
    "status_3xx",
    "status_4xx",
    "status_5xx",
    "bytes_in",
    "bytes_out",
    "last_seen",
];

pub async fn run(cmd: IdentityCmd, api: &Api) -> Result<(), Exit> {
    match cmd {
        IdentityCmd::Create {
            name,
            cert,
            fingerprint,
            with_token,
            policy,
            expires_at,
            inactive,
        } => {
            let pem = cert.as_deref().map(read).transpose()?;
            let request = IdentityCreate {
                name,
                certificate_pem: pem,
                fingerprint,
                token: with_token,
                policy,
                active: !inactive,
                expires_at,
            };
            let v = api
                .call(Method::POST, IDENTITIES.path, Some(body(&request)))
                .await?;
            print_with_token(api, &v);
            Ok(())
        }
        IdentityCmd::List => api.list(&IDENTITIES).await,
        IdentityCmd::Show { id } => api.show(&IDENTITIES, &id).await,
        IdentityCmd::Update {
            id,
            policy,
            active,
            expires_at,
            cert,
            rotate_token,
        } => {
            let pem = cert.as_deref().map(read).transpose()?;
            let request = IdentityUpdate {
                policy,
                active,
                expires_at,
                certificate_pem: pem,
                rotate_token,
            };
            let v = api
                .call(Method::PATCH, &IDENTITIES.item(&id), Some(body(&request)))
                .await?;
            print_with_token(api, &v);
            Ok(())
        }
        IdentityCmd::Delete { id } => api.delete(&IDENTITIES, &id).await,
        IdentityCmd::Usage { id } => {
            let usage = api.get(&format!("{}/usage", IDENTITIES.item(&id))).await?;
            api.print(&usage, USAGE);
            Ok(())
        }
    }
}

/// Prints an identity; a new token goes to stderr once, with a warning.
fn print_with_token(api: &Api, v: &Value) {
    if let Some(t) = v["token"].as_str() {
        eprintln!("token (shown once; store it now): {t}");
    }
    api.print(&v["identity"], IDENTITIES.columns);
}
