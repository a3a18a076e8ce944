//! Policies (`/api/v1/policies`): access rights, rate limit and quota shared by the identities
//! that use them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{
    JsonBody, Res, Resource, check_name, created, list, lookup, remove, show, taken,
};
use super::declarative::{DeclPolicy, Import};
use super::{Actor, ApiError, App};
use crate::authz::PolicySpec;
use crate::store::{self, PolicyRow, StoreState, Table};

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_policies,
        create_policy,
        get_policy,
        replace_policy,
        delete_policy
    ),
    components(schemas(PolicyView, PolicyBody))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/policies", get(list_policies).post(create_policy))
        .route(
            "/api/v1/policies/{id}",
            get(get_policy).put(replace_policy).delete(delete_policy),
        )
}

/// A policy: access rights, rate limit and quota for the identities that use it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub spec: PolicySpec,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(from = "crate::authz::NamedSpec")]
pub struct PolicyBody {
    pub name: String,
    #[serde(flatten)]
    pub spec: PolicySpec,
}

impl From<crate::authz::NamedSpec> for PolicyBody {
    fn from(n: crate::authz::NamedSpec) -> Self {
        let (name, spec) = n.into_parts();
        Self { name, spec }
    }
}

impl Resource for PolicyRow {
    const KIND: &'static str = "policy";
    const TABLE: Table = Table::Policies;
    type View = PolicyView;
    fn rows(st: &StoreState) -> &[Self] {
        &st.policies
    }
    fn key(&self) -> (&str, &str) {
        (&self.id, &self.name)
    }
    fn view(&self, _: &StoreState) -> PolicyView {
        PolicyView {
            id: self.id.clone(),
            name: self.name.clone(),
            spec: self.spec.clone(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }

    fn in_use(&self, st: &StoreState) -> Res<()> {
        let users: Vec<&str> = st
            .identities
            .iter()
            .filter(|i| i.policy_id.as_deref() == Some(&self.id))
            .map(|i| i.name.as_str())
            .take(5)
            .collect();
        if !users.is_empty() {
            return Err(ApiError::in_use(
                format!(
                    "policy '{}' is used by identities {}",
                    self.name,
                    users.join(", ")
                ),
                "move those identities to another policy first",
            ));
        }
        Ok(())
    }
}

fn check_body(req: &PolicyBody) -> Res<()> {
    check_name("policy", &req.name)?;
    req.spec
        .validate()
        .map_err(|e| ApiError::invalid("bad_policy", e, "see the PolicyBody schema"))
}

#[utoipa::path(get, path = "/api/v1/policies", tag = "authz", responses((status = 200, body = [PolicyView])))]
async fn list_policies(State(app): State<Arc<App>>) -> Res<Json<Vec<PolicyView>>> {
    list::<PolicyRow>(&app).await
}

#[utoipa::path(post, path = "/api/v1/policies", tag = "authz", request_body = PolicyBody,
    responses((status = 201, body = PolicyView), (status = 409), (status = 422)))]
async fn create_policy(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<PolicyBody>,
) -> Res<Response> {
    check_body(&req)?;
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    if taken(&st.policies, &req.name, None) {
        return Err(ApiError::duplicate("policy", &req.name));
    }
    let now = store::now();
    let spec = serde_json::to_string(&req.spec).unwrap_or_default();
    let row = PolicyRow {
        id: store::new_id(),
        name: req.name,
        spec: req.spec,
        created_at: now.clone(),
        updated_at: now,
    };
    store::upsert_policy(&mut ch.tx, &row).await?;
    super::commit(ch, &actor, "policy.create", &row.name, &spec).await?;
    Ok(created(row.view(&st)))
}

#[utoipa::path(get, path = "/api/v1/policies/{id}", tag = "authz", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = PolicyView), (status = 404)))]
async fn get_policy(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<PolicyView>> {
    show::<PolicyRow>(&app, &id).await
}

#[utoipa::path(put, path = "/api/v1/policies/{id}", tag = "authz", request_body = PolicyBody, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = PolicyView), (status = 404), (status = 422)))]
async fn replace_policy(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    JsonBody(req): JsonBody<PolicyBody>,
) -> Res<Json<PolicyView>> {
    check_body(&req)?;
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    let mut row = lookup(&st.policies, &id)?.clone();
    if taken(&st.policies, &req.name, Some(&row.id)) {
        return Err(ApiError::duplicate("policy", &req.name));
    }
    row.name = req.name;
    let spec = serde_json::to_string(&req.spec).unwrap_or_default();
    row.spec = req.spec;
    row.updated_at = store::now();
    store::upsert_policy(&mut ch.tx, &row).await?;
    super::commit(ch, &actor, "policy.update", &row.name, &spec).await?;
    Ok(Json(row.view(&st)))
}

#[utoipa::path(delete, path = "/api/v1/policies/{id}", tag = "authz", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404), (status = 409)))]
async fn delete_policy(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    remove::<PolicyRow>(&app, &actor, &id).await
}

/// The policy part of an import: creates and updates by name. Returns the id of each policy
/// of the import, by name.
pub(super) async fn import(
    imp: &mut Import<'_>,
    policies: &[DeclPolicy],
) -> Res<HashMap<String, String>> {
    let mut policy_ids = HashMap::new();
    for p in policies {
        check_name("policy", &p.name)?;
        p.spec.validate().map_err(|e| {
            ApiError::invalid(
                "bad_policy",
                format!("policy '{}': {e}", p.name),
                "see the PolicyBody schema",
            )
        })?;
        let spec = p.spec.clone();
        match imp.st.policies.iter().find(|x| x.name == p.name) {
            Some(x) if x.spec == p.spec => {
                policy_ids.insert(p.name.clone(), x.id.clone());
                imp.report.unchanged.push(format!("policy {}", p.name));
            }
            Some(x) => {
                let row = PolicyRow {
                    spec,
                    updated_at: imp.now.clone(),
                    ..x.clone()
                };
                store::upsert_policy(&mut imp.ch.tx, &row).await?;
                policy_ids.insert(p.name.clone(), x.id.clone());
                imp.report.updated.push(format!("policy {}", p.name));
            }
            None => {
                let row = PolicyRow {
                    id: store::new_id(),
                    name: p.name.clone(),
                    spec,
                    created_at: imp.now.clone(),
                    updated_at: imp.now.clone(),
                };
                store::upsert_policy(&mut imp.ch.tx, &row).await?;
                policy_ids.insert(p.name.clone(), row.id.clone());
                imp.report.created.push(format!("policy {}", p.name));
            }
        }
    }
    Ok(policy_ids)
}
