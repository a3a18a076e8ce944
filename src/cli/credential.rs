//! `symbolon credential …`: client credentials the gateway presents to upstreams.

use std::path::PathBuf;

use clap::Subcommand;

use super::api::{Api, Resource, body};
use crate::admin::credentials::CredentialCreate;

use super::{Exit, read};

#[derive(Debug, Subcommand)]
pub enum CredentialCmd {
    Upload {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        name: String,
    },
    List,
    Delete {
        id: String,
    },
}

const CREDENTIALS: Resource = Resource {
    path: "/api/v1/credentials",
    kind: "credential",
    columns: &["id", "name", "subject", "issuer", "not_after"],
};

pub async fn run(cmd: CredentialCmd, api: &Api) -> Result<(), Exit> {
    match cmd {
        CredentialCmd::Upload { cert, key, name } => {
            let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
            let request = CredentialCreate {
                name,
                cert_pem,
                key_pem,
            };
            api.create(&CREDENTIALS, body(&request)).await
        }
        CredentialCmd::List => api.list(&CREDENTIALS).await,
        CredentialCmd::Delete { id } => api.delete(&CREDENTIALS, &id).await,
    }
}
