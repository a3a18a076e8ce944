//! `symbolon rules …`: the gateway-wide static mTLS rules.

use std::path::PathBuf;

use clap::Subcommand;
use http::Method;

use super::Exit;
use super::api::{Api, body, read_as};
use crate::admin::rules::GlobalRules;

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    Show,
    /// Replace the gateway-wide rules with a JSON list of rules.
    Set {
        file: PathBuf,
    },
}

const PATH: &str = "/api/v1/authz/global-rules";

const COLUMNS: &[&str] = &[
    "effect",
    "fingerprint",
    "ca_fingerprint",
    "cn",
    "o",
    "ou",
    "san_dns",
    "san_uri",
    "san_email",
    "spiffe_id",
    "spiffe_trust_domain",
    "issuer_cn",
];

pub async fn run(cmd: RulesCmd, api: &Api) -> Result<(), Exit> {
    let v = match cmd {
        RulesCmd::Show => api.get(PATH).await?,
        RulesCmd::Set { file } => {
            let request = GlobalRules {
                rules: read_as(&file)?,
            };
            api.call(Method::PUT, PATH, Some(body(&request))).await?
        }
    };
    api.print(&v["rules"], COLUMNS);
    Ok(())
}
