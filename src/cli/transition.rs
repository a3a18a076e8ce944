//! `symbolon transition-report`: client certificates that enforcement would reject.

use super::Exit;
use super::api::{Api, Resource};

const REPORT: Resource = Resource {
    path: "/api/v1/transition-report",
    kind: "transition report",
    columns: &[
        "domain",
        "route",
        "fingerprint",
        "subject",
        "reason",
        "count",
        "last_seen",
    ],
};

pub async fn run(api: &Api) -> Result<(), Exit> {
    api.list(&REPORT).await
}
