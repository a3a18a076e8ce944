//! `symbolon policy …`: authorization policies.

use clap::Subcommand;
use http::Method;
use serde_json::Value;

use crate::admin::policies::PolicyBody;
use crate::authz::{Access, PolicySpec, Quota, RateLimit};

use super::api::{Api, Resource};
use super::{Exit, fail};

/// Policy contents, as flags.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// Token bucket: N requests per period, e.g. 100/1m.
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Quota: N requests per day, month or fixed window, e.g. 10000/day.
    #[arg(long)]
    pub quota: Option<String>,
    /// Access right ROUTE[:METHODS[:PREFIXES]], e.g. orders:GET,POST:/orders,/carts (repeatable;
    /// none = every route).
    #[arg(long)]
    pub access: Vec<String>,
    /// Allow self-service enrollment with this policy.
    #[arg(long)]
    pub self_service: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Create a policy: access rights, rate limit, quota.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        spec: PolicyArgs,
    },
    List,
    Show {
        id: String,
    },
    /// Replace the policy's contents.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        spec: PolicyArgs,
    },
    Delete {
        id: String,
    },
}

const POLICIES: Resource = Resource {
    path: "/api/v1/policies",
    kind: "policy",
    columns: &[
        "id",
        "name",
        "access",
        "rate_limit",
        "quota",
        "self_service",
    ],
};

pub async fn run(cmd: PolicyCmd, api: &Api) -> Result<(), Exit> {
    match cmd {
        PolicyCmd::Create { name, spec } => api.create(&POLICIES, body(name, &spec)?).await,
        PolicyCmd::List => api.list(&POLICIES).await,
        PolicyCmd::Show { id } => api.show(&POLICIES, &id).await,
        PolicyCmd::Update { id, name, spec } => {
            // Without --name the policy keeps its name (`id` may be its id).
            let name = match name {
                Some(n) => n,
                None => match api.get(&POLICIES.item(&id)).await?["name"].as_str() {
                    Some(n) => n.to_string(),
                    None => id.clone(),
                },
            };
            let body = body(name, &spec)?;
            api.update(&POLICIES, Method::PUT, &id, body).await
        }
        PolicyCmd::Delete { id } => api.delete(&POLICIES, &id).await,
    }
}

/// `N/PERIOD` → (N, PERIOD).
fn per(flag: &str, s: &str) -> Result<(u64, String), Exit> {
    let parsed = s
        .split_once('/')
        .and_then(|(n, p)| Some((n.trim().parse::<u64>().ok()?, p.trim().to_string())));
    parsed.ok_or_else(|| {
        fail(
            format_args!("--{flag} '{s}' must look like 100/1m or 10000/day"),
            Exit::Usage,
        )
    })
}

/// The body of a policy create or update (the whole policy).
fn body(name: String, a: &PolicyArgs) -> Result<Value, Exit> {
    let rate_limit = match &a.rate_limit {
        Some(r) => {
            let (n, per) = per("rate-limit", r)?;
            let requests = u32::try_from(n).map_err(|_| {
                fail(
                    format_args!("--rate-limit '{r}': at most {} requests", u32::MAX),
                    Exit::Usage,
                )
            })?;
            Some(RateLimit { requests, per })
        }
        None => None,
    };
    let quota = match &a.quota {
        Some(q) => {
            let (requests, period) = per("quota", q)?;
            Some(Quota { requests, period })
        }
        None => None,
    };
    let access = a
        .access
        .iter()
        .map(|s| {
            let mut parts = s.splitn(3, ':');
            let route = parts.next().unwrap_or_default().to_string();
            let list = |p: Option<&str>| -> Vec<String> {
                p.map(|x| {
                    x.split(',')
                        .filter(|v| !v.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
            };
            Access {
                route,
                methods: list(parts.next()),
                path_prefixes: list(parts.next()),
            }
        })
        .collect();
    let spec = PolicySpec {
        access,
        rate_limit,
        quota,
        self_service: a.self_service,
    };
    Ok(super::api::body(&PolicyBody { name, spec }))
}
