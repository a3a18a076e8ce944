//! `symbolon sidecar …`: local plain-HTTP listeners forwarded over mTLS.

use clap::Subcommand;
use http::Method;
use serde_json::json;

use super::Exit;
use super::api::{Api, Resource};
use super::route::{UpstreamTlsArgs, upstream_tls_body};

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
            let mut upstream_tls = upstream_tls_body(&tls, None).unwrap_or_else(|| json!({}));
            if let Some(cred) = credential {
                upstream_tls["credential"] = json!(cred);
            }
            let issue = common_name
                .map(|cn| json!({"common_name": cn, "spiffe_id": spiffe_id, "lifetime": lifetime}));
            let body = json!({"name": name, "listen": listen, "upstream": upstream,
                "upstream_tls": upstream_tls, "issue": issue});
            api.create(&SIDECARS, body).await
        }
        SidecarCmd::List => api.list(&SIDECARS).await,
        SidecarCmd::Show { name } => api.show(&SIDECARS, &name).await,
        SidecarCmd::Delete { name } => api.delete(&SIDECARS, &name).await,
        SidecarCmd::Rotate { name } => {
            let path = format!("{}/rotate", SIDECARS.item(&name));
            api.send(Method::POST, &path, Some(json!({})), SIDECARS.columns)
                .await
        }
    }
}
