//! Routes (`/api/v1/routes`): requests for a host under a path prefix go to an upstream, with
//! the route's authorization settings and upstream TLS.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::state;
use super::common::{
    JsonBody, Res, Resource, check_name, created, list, lookup, remove, show, taken,
};
use super::declarative::{DeclRoute, Import};
use super::error::split_fix;
use super::view::ErrorBody;
use super::{Actor, ApiError, App};
use crate::authz::RouteAuthz;
use crate::config::UpstreamTls;
use crate::store::{self, RouteRow, StoreState, Table};

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_routes, create_route, get_route, update_route, delete_route),
    components(schemas(RouteView, RouteCreate, RouteUpdate))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/routes", get(list_routes).post(create_route))
        .route(
            "/api/v1/routes/{id}",
            get(get_route).patch(update_route).delete(delete_route),
        )
}

/// A route: requests for `host` under `path_prefix` go to `upstream`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RouteView {
    pub id: String,
    pub name: String,
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: String,
    pub strip_prefix: bool,
    /// Name of the client credential presented to the upstream.
    pub credential: Option<String>,
    /// Authorization settings (static rules, identity requirement, token header).
    pub authz: Option<RouteAuthz>,
    /// For https:// upstreams: trust bundle, server name, require_mtls.
    pub upstream_tls: Option<crate::config::UpstreamTls>,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteCreate {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "root")]
    pub path_prefix: String,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: bool,
    /// Credential id or name: the client certificate presented to an https:// upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz: Option<RouteAuthz>,
    /// For https:// upstreams: `trust_bundle` (name; default the system CAs), `server_name`,
    /// `require_mtls`. The `*_file` and `credential` fields are for the config file only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<crate::config::UpstreamTls>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// "" or "*" for every host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<bool>,
    /// Credential id or name; "" removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Replaces the route's authorization settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz: Option<RouteAuthz>,
    /// Replaces the route's upstream TLS settings (`{}` resets them to the defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<crate::config::UpstreamTls>,
}

fn root() -> String {
    "/".into()
}

impl Resource for RouteRow {
    const KIND: &'static str = "route";
    const TABLE: Table = Table::Routes;
    type View = RouteView;
    fn rows(st: &StoreState) -> &[Self] {
        &st.routes
    }
    fn key(&self) -> (&str, &str) {
        (&self.id, &self.name)
    }
    fn view(&self, st: &StoreState) -> RouteView {
        RouteView {
            id: self.id.clone(),
            name: self.name.clone(),
            host: self.host.clone(),
            path_prefix: self.path_prefix.clone(),
            upstream: self.upstream.clone(),
            strip_prefix: self.strip_prefix,
            credential: self
                .credential_id
                .as_deref()
                .and_then(|id| st.credentials.iter().find(|c| c.id == id))
                .map(|c| c.name.clone()),
            authz: self.authz.clone(),
            upstream_tls: self.upstream_tls.clone(),
            created_at: self.created_at.clone(),
        }
    }
}

fn normal_host(h: Option<String>) -> Option<String> {
    h.filter(|h| !h.is_empty() && h != "*")
        .map(|h| h.to_ascii_lowercase())
}

/// Validates a route's authz settings, rules normalised, for the store (`None` when absent).
/// A bad rule is named by its index; a bad token header is left to [`check_route`].
fn checked_authz(a: Option<&RouteAuthz>) -> Res<Option<RouteAuthz>> {
    let Some(a) = a else { return Ok(None) };
    match a.checked() {
        Ok(a) => Ok(Some(a)),
        Err(crate::authz::AuthzProblem::Rule(i, e)) => Err(ApiError::invalid(
            "bad_rule",
            format!("authz.rules[{i}]: {e}"),
            "see the Rule schema in the OpenAPI document",
        )),
        Err(crate::authz::AuthzProblem::TokenHeader(_)) => Ok(Some(a.clone())),
    }
}

/// Validates a route's upstream TLS settings (API form: names, no files) for the store.
fn checked_upstream_tls(t: Option<&UpstreamTls>) -> Res<Option<UpstreamTls>> {
    let Some(t) = t else { return Ok(None) };
    if t.uses_files() || t.credential.is_some() {
        return Err(ApiError::invalid(
            "bad_upstream_tls",
            "upstream_tls: trust_bundle_file, cert_file, key_file and credential are for the config file",
            "name a trust bundle in upstream_tls.trust_bundle and a credential in the route's credential field",
        ));
    }
    if *t == UpstreamTls::default() {
        return Ok(None);
    }
    Ok(Some(t.clone()))
}

fn check_route(r: &RouteRow) -> Res<()> {
    crate::routing::Route::from_config(&crate::config::RouteConfig {
        name: Some(r.name.clone()),
        host: r.host.clone(),
        path_prefix: r.path_prefix.clone(),
        upstream: r.upstream.clone(),
        strip_prefix: r.strip_prefix,
        authz: r.authz.clone(),
        upstream_tls: r.upstream_tls.clone(),
    })
    .map(|_| ())
    .map_err(|e| {
        let (m, h) = split_fix(&e.to_string());
        ApiError::invalid("bad_route", m, h)
    })
}

#[utoipa::path(get, path = "/api/v1/routes", tag = "routes", responses((status = 200, body = [RouteView])))]
async fn list_routes(State(app): State<Arc<App>>) -> Res<Json<Vec<RouteView>>> {
    list::<RouteRow>(&app).await
}

#[utoipa::path(post, path = "/api/v1/routes", tag = "routes", request_body = RouteCreate,
    responses((status = 201, body = RouteView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_route(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<RouteCreate>,
) -> Res<Response> {
    check_name("route", &req.name)?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    if taken(&st.routes, &req.name, None) {
        return Err(ApiError::duplicate("route", &req.name));
    }
    let credential_id = match &req.credential {
        Some(k) => Some(lookup(&st.credentials, k)?.id.clone()),
        None => None,
    };
    let row = RouteRow {
        id: store::new_id(),
        name: req.name,
        host: normal_host(req.host),
        path_prefix: req.path_prefix,
        upstream: req.upstream,
        strip_prefix: req.strip_prefix,
        credential_id,
        created_at: store::now(),
        authz: checked_authz(req.authz.as_ref())?,
        upstream_tls: checked_upstream_tls(req.upstream_tls.as_ref())?,
    };
    check_route(&row)?;
    store::upsert_route(&mut ch.tx, &row).await?;
    super::commit(ch, &actor, "route.create", &row.name, &row.upstream).await?;
    let st = state(&app).await?;
    Ok(created(row.view(&st)))
}

#[utoipa::path(get, path = "/api/v1/routes/{id}", tag = "routes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = RouteView), (status = 404, body = ErrorBody)))]
async fn get_route(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<RouteView>> {
    show::<RouteRow>(&app, &id).await
}

#[utoipa::path(patch, path = "/api/v1/routes/{id}", tag = "routes", request_body = RouteUpdate, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = RouteView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_route(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    JsonBody(req): JsonBody<RouteUpdate>,
) -> Res<Json<RouteView>> {
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let mut row = lookup(&st.routes, &id)?.clone();
    if let Some(name) = req.name {
        check_name("route", &name)?;
        if taken(&st.routes, &name, Some(&row.id)) {
            return Err(ApiError::duplicate("route", &name));
        }
        row.name = name;
    }
    if let Some(h) = req.host {
        row.host = normal_host(Some(h));
    }
    if let Some(p) = req.path_prefix {
        row.path_prefix = p;
    }
    if let Some(u) = req.upstream {
        row.upstream = u;
    }
    if let Some(s) = req.strip_prefix {
        row.strip_prefix = s;
    }
    if let Some(a) = req.authz {
        row.authz = checked_authz(Some(&a))?;
    }
    if let Some(t) = req.upstream_tls {
        row.upstream_tls = checked_upstream_tls(Some(&t))?;
    }
    if let Some(c) = req.credential {
        row.credential_id = if c.is_empty() {
            None
        } else {
            Some(lookup(&st.credentials, &c)?.id.clone())
        };
    }
    check_route(&row)?;
    store::upsert_route(&mut ch.tx, &row).await?;
    super::commit(ch, &actor, "route.update", &row.name, &row.upstream).await?;
    let st = state(&app).await?;
    Ok(Json(row.view(&st)))
}

#[utoipa::path(delete, path = "/api/v1/routes/{id}", tag = "routes", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_route(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    remove::<RouteRow>(&app, &actor, &id).await
}

/// The route part of an import: creates and updates by name. A route names its credential by
/// name, one of this import (`credential_ids`) or one the store has.
pub(super) async fn import(
    imp: &mut Import<'_>,
    routes: &[DeclRoute],
    credential_ids: &HashMap<String, String>,
) -> Res<()> {
    for r in routes {
        check_name("route", &r.name)?;
        let cid = match &r.credential {
            None => None,
            Some(n) => Some(
                credential_ids
                    .get(n)
                    .cloned()
                    .or_else(|| {
                        imp.st
                            .credentials
                            .iter()
                            .find(|c| &c.name == n)
                            .map(|c| c.id.clone())
                    })
                    .ok_or_else(|| ApiError::not_found("credential", n))?,
            ),
        };
        let existing = imp.st.routes.iter().find(|x| x.name == r.name);
        let row = RouteRow {
            id: existing.map(|x| x.id.clone()).unwrap_or_else(store::new_id),
            name: r.name.clone(),
            host: normal_host(r.host.clone()),
            path_prefix: r.path_prefix.clone(),
            upstream: r.upstream.clone(),
            strip_prefix: r.strip_prefix,
            credential_id: cid,
            created_at: existing
                .map(|x| x.created_at.clone())
                .unwrap_or_else(|| imp.now.clone()),
            authz: checked_authz(r.authz.as_ref())?,
            upstream_tls: checked_upstream_tls(r.upstream_tls.as_ref())?,
        };
        check_route(&row)?;
        match existing {
            Some(x)
                if x.host == row.host
                    && x.path_prefix == row.path_prefix
                    && x.upstream == row.upstream
                    && x.strip_prefix == row.strip_prefix
                    && x.credential_id == row.credential_id
                    && x.authz == row.authz
                    && x.upstream_tls == row.upstream_tls =>
            {
                imp.report.unchanged.push(format!("route {}", r.name))
            }
            Some(_) => {
                store::upsert_route(&mut imp.ch.tx, &row).await?;
                imp.report.updated.push(format!("route {}", r.name));
            }
            None => {
                store::upsert_route(&mut imp.ch.tx, &row).await?;
                imp.report.created.push(format!("route {}", r.name));
            }
        }
    }
    Ok(())
}
