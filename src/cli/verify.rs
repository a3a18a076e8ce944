//! `symbolon verify`: would a domain accept this client certificate, and if not, why.

use std::path::PathBuf;

use http::Method;

use super::api::{Api, body, print_json};
use crate::admin::reports::VerifyBody;

use super::{Exit, read};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// PEM: the client certificate, then any intermediates the client sends.
    cert: PathBuf,
    #[arg(long)]
    domain: String,
}

/// Exit 0 when the chain verifies, 1 when it does not.
pub async fn run(args: VerifyArgs, api: &Api) -> Result<(), Exit> {
    let pem = read(&args.cert)?;
    let request = VerifyBody {
        certificate_pem: pem,
        domain: args.domain,
    };
    let v = api
        .call(Method::POST, "/api/v1/verify", Some(body(&request)))
        .await?;
    let verified = v["verified"] == true;
    let domain = v["domain"].as_str().unwrap_or("");
    let mode = v["mode"].as_str().unwrap_or("");
    if api.json() {
        print_json(&v);
    } else if verified {
        outln!("ACCEPTED by {domain} (mode {mode}): the chain verifies");
    } else {
        let reason = v["reason"].as_str().unwrap_or("");
        let what = if v["would_connect"] == true {
            "CONNECTS BUT FAILS VERIFICATION"
        } else {
            "REJECTED"
        };
        outln!("{what} by {domain} (mode {mode}): {reason}");
    }
    if verified { Ok(()) } else { Err(Exit::Failure) }
}
