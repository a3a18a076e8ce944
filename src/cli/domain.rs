//! `symbolon domain …`: TLS domains.

use std::path::PathBuf;

use clap::Subcommand;
use http::Method;

use super::api::{Api, Resource, body};
use crate::admin::domains::{DomainCreate, DomainUpdate};

use super::{Exit, read};

#[derive(Debug, Subcommand)]
pub enum DomainCmd {
    Create {
        #[arg(long)]
        hostname: String,
        /// Server certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        bundle: Option<String>,
        /// require | optional | off (default: follow the bundle's require flag).
        #[arg(long)]
        mtls: Option<String>,
    },
    List,
    Show {
        id: String,
    },
    Update {
        id: String,
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Bundle id or name; "" detaches.
        #[arg(long)]
        bundle: Option<String>,
        /// require | optional | off | "" (follow the bundle).
        #[arg(long)]
        mtls: Option<String>,
    },
    Delete {
        id: String,
    },
}

const DOMAINS: Resource = Resource {
    path: "/api/v1/domains",
    kind: "domain",
    columns: &["id", "hostname", "bundle", "mtls", "certificate"],
};

pub async fn run(cmd: DomainCmd, api: &Api) -> Result<(), Exit> {
    match cmd {
        DomainCmd::Create {
            hostname,
            cert,
            key,
            bundle,
            mtls,
        } => {
            let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
            let request = DomainCreate {
                hostname,
                cert_pem,
                key_pem,
                bundle,
                mtls,
            };
            api.create(&DOMAINS, body(&request)).await
        }
        DomainCmd::List => api.list(&DOMAINS).await,
        DomainCmd::Show { id } => api.show(&DOMAINS, &id).await,
        DomainCmd::Update {
            id,
            cert,
            key,
            bundle,
            mtls,
        } => {
            let cert_pem = cert.as_deref().map(read).transpose()?;
            let key_pem = key.as_deref().map(read).transpose()?;
            let request = DomainUpdate {
                cert_pem,
                key_pem,
                bundle,
                mtls,
            };
            api.update(&DOMAINS, Method::PATCH, &id, body(&request))
                .await
        }
        DomainCmd::Delete { id } => api.delete(&DOMAINS, &id).await,
    }
}
