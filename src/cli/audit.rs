//! `symbolon audit`: the audit log, newest first.

use super::Exit;
use super::api::Api;

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

const COLUMNS: &[&str] = &["at", "actor", "action", "target", "detail"];

pub async fn run(args: AuditArgs, api: &Api) -> Result<(), Exit> {
    let entries = api
        .get(&format!("/api/v1/audit?limit={}", args.limit))
        .await?;
    api.print(&entries, COLUMNS);
    Ok(())
}
