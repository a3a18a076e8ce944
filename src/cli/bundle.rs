//! `symbolon bundle …`: trust bundles.

use std::path::PathBuf;

use clap::Subcommand;
use http::Method;

use super::api::{Api, Resource, body, enc};
use crate::admin::bundles::{AttachBody, BundleCreate, BundleUpdate, PemBody};

use super::{Exit, read};

#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Upload a PEM of one or more CA certificates.
    Upload {
        #[arg(long)]
        name: String,
        #[arg(long)]
        file: PathBuf,
        /// Enforce: clients without a valid certificate fail the handshake.
        #[arg(long)]
        require: bool,
    },
    List,
    Show {
        id: String,
    },
    /// Rename, or switch between enforcing and recording only.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        require: Option<bool>,
    },
    /// Replace the bundle's certificates.
    Replace {
        id: String,
        #[arg(long)]
        file: PathBuf,
    },
    Attach {
        id: String,
        #[arg(long)]
        domain: String,
    },
    Detach {
        id: String,
        #[arg(long)]
        domain: String,
    },
    Delete {
        id: String,
    },
}

const BUNDLES: Resource = Resource {
    path: "/api/v1/mtls/bundles",
    kind: "bundle",
    columns: &["id", "name", "require", "domains", "certificates"],
};

pub async fn run(cmd: BundleCmd, api: &Api) -> Result<(), Exit> {
    let columns = BUNDLES.columns;
    match cmd {
        BundleCmd::Upload {
            name,
            file,
            require,
        } => {
            let pem = read(&file)?;
            let request = BundleCreate {
                name,
                pem,
                require,
                crls: None,
            };
            api.create(&BUNDLES, body(&request)).await
        }
        BundleCmd::List => api.list(&BUNDLES).await,
        BundleCmd::Show { id } => api.show(&BUNDLES, &id).await,
        BundleCmd::Update { id, name, require } => {
            let request = BundleUpdate {
                name,
                require,
                crls: None,
            };
            api.update(&BUNDLES, Method::PATCH, &id, body(&request))
                .await
        }
        BundleCmd::Replace { id, file } => {
            let request = PemBody { pem: read(&file)? };
            let path = format!("{}/pem", BUNDLES.item(&id));
            api.send(Method::PUT, &path, Some(body(&request)), columns)
                .await
        }
        BundleCmd::Attach { id, domain } => {
            let path = format!("{}/domains", BUNDLES.item(&id));
            let request = body(&AttachBody { domain });
            api.send(Method::POST, &path, Some(request), columns).await
        }
        BundleCmd::Detach { id, domain } => {
            let path = format!("{}/domains/{}", BUNDLES.item(&id), enc(&domain));
            api.send(Method::DELETE, &path, None, columns).await
        }
        BundleCmd::Delete { id } => api.delete(&BUNDLES, &id).await,
    }
}
