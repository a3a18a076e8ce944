//! `symbolon sidecar …`: local plain-HTTP listeners forwarded over mTLS.

use clap::Subcommand;
use http::Method;
use serde_json::Value;

use crate::config::{IssueSpec, SidecarConfig};

use super::api::{Api, Resource, body};
use super::route::{UpstreamTlsArgs, upstream_tls};
use super::{Exit, fail};

#[derive(Debug, Subcommand)]
pub enum SidecarCmd {
    /// Listen on a local address and forward to an upstream over mTLS.
    Create {
        #[arg(long)]
        name: String,
        /// e.g. 127.0.0.1:15001
        #[arg(long)]
        listen: String,
        /// e.g. https://orders.internal:8443
        #[arg(long)]
        upstream: String,
        #[command(flatten)]
        tls: UpstreamTlsArgs,
        /// Present this existing credential (instead of one issued by the built-in CA).
        #[arg(long, conflicts_with_all = ["common_name", "spiffe_id"])]
        credential: Option<String>,
        /// Have the built-in CA issue the credential with this common name (rotated at 2/3 of its lifetime).
        #[arg(long)]
        common_name: Option<String>,
        /// SPIFFE ID of the issued credential.
        #[arg(long, requires = "common_name")]
        spiffe_id: Option<String>,
        /// Lifetime of the issued credential.
        #[arg(long, default_value = "24h", requires = "common_name")]
        lifetime: String,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Issue a new credential now (the old one stays valid until it expires).
    Rotate {
        name: String,
    },
}

const SIDECARS: Resource = Resource {
    path: "/api/v1/sidecars",
    kind: "sidecar",
    columns: &[
        "name",
        "source",
        "listening_on",
        "upstream",
        "presents",
        "rotation",
        "listen_error",
    ],
};

pub async fn run(cmd: SidecarCmd, api: &Api) -> Result<(), Exit> {
    match cmd {
        SidecarCmd::Create {
            name,
            listen,
            upstream,
            tls,
            credential,
            common_name,
            spiffe_id,
            lifetime,
        } => {
            // No TLS flag and no credential: no upstream_tls at all (a plain http:// upstream
            // refuses one).
            let mut upstream_tls = upstream_tls(&tls, None)?;
            if credential.is_some() {
                upstream_tls.get_or_insert_default().credential = credential;
            }
            let issue = common_name.map(|common_name| IssueSpec {
                common_name,
                spiffe_id,
                lifetime,
            });
            let listen = listen.parse().map_err(|e| {
                fail(
                    format_args!("--listen '{listen}': {e} (for example 127.0.0.1:15001)"),
                    Exit::Usage,
                )
            })?;
            let request = SidecarConfig {
                name,
                listen,
                upstream,
                upstream_tls,
                issue,
            };
            api.create(&SIDECARS, body(&request)).await
        }
        SidecarCmd::List => api.list(&SIDECARS).await,
        SidecarCmd::Show { name } => api.show(&SIDECARS, &name).await,
        SidecarCmd::Delete { name } => api.delete(&SIDECARS, &name).await,
        SidecarCmd::Rotate { name } => {
            let path = format!("{}/rotate", SIDECARS.item(&name));
            api.send(
                Method::POST,
                &path,
                Some(Value::Object(Default::default())),
                SIDECARS.columns,
            )
            .await
        }
    }
}
