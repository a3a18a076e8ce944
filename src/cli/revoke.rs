//! `symbolon revoke` and `symbolon revocations`.

use std::path::PathBuf;

use super::api::{Api, Resource, body};
use crate::admin::revocations::RevokeBody;

use super::{Exit, read};

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The certificate (public PEM).
    #[arg(long, conflicts_with_all = ["fingerprint", "serial"])]
    cert: Option<PathBuf>,
    #[arg(long, conflicts_with = "serial")]
    fingerprint: Option<String>,
    /// Serial number in hex (revoked for one issuer: --issuer, or the built-in CA).
    #[arg(long)]
    serial: Option<String>,
    /// With --serial: the issuing CA's certificate (PEM).
    #[arg(long, requires = "serial")]
    issuer: Option<PathBuf>,
    /// keyCompromise, superseded, cessationOfOperation, … (default unspecified).
    #[arg(long)]
    reason: Option<String>,
}

const REVOCATIONS: Resource = Resource {
    path: "/api/v1/revocations",
    kind: "revocation",
    columns: &[
        "fingerprint",
        "serial",
        "issuer",
        "reason",
        "revoked_at",
        "subject",
    ],
};

pub async fn run(args: RevokeArgs, api: &Api) -> Result<(), Exit> {
    let pem = args.cert.as_deref().map(read).transpose()?;
    let issuer_pem = args.issuer.as_deref().map(read).transpose()?;
    let request = RevokeBody {
        certificate_pem: pem,
        fingerprint: args.fingerprint,
        serial: args.serial,
        issuer_pem,
        reason: args.reason,
    };
    api.create(&REVOCATIONS, body(&request)).await
}

pub async fn list(api: &Api) -> Result<(), Exit> {
    api.list(&REVOCATIONS).await
}
