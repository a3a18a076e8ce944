//! Sidecars (`/api/v1/sidecars`), egress listeners: list, create, replace, delete, rotate now.
//! Sidecars from the config file are listed and can be rotated, but are changed in the file.
//! A sidecar is created and replaced with its [`SidecarConfig`], as in the config file.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use super::common::{JsonBody, Res, check_name};
use super::declarative::Import;
use super::error::split_fix;
use super::view::ErrorBody;
use super::{Actor, ApiError, App, Change};
pub use crate::config::SidecarConfig;
use crate::control::credentials::SidecarError;
use crate::snapshot::Rotation;
use crate::store::{self, SidecarRow, StoreState, Table};

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_sidecars,
        create_sidecar,
        get_sidecar,
        replace_sidecar,
        delete_sidecar,
        rotate_sidecar
    ),
    components(schemas(SidecarView, SidecarConfig))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/sidecars", get(list_sidecars).post(create_sidecar))
        .route(
            "/api/v1/sidecars/{name}",
            get(get_sidecar).put(replace_sidecar).delete(delete_sidecar),
        )
        .route("/api/v1/sidecars/{name}/rotate", post(rotate_sidecar))
}

/// A sidecar, where it listens, and the state of its issued credential.
#[derive(Debug, Serialize, ToSchema)]
pub struct SidecarView {
    #[serde(flatten)]
    pub settings: SidecarConfig,
    /// `config` (the config file; change it there) or `api`.
    pub source: String,
    /// The address it actually listens on.
    pub listening_on: Option<String>,
    /// Why it does not listen, if it does not.
    pub listen_error: Option<String>,
    /// Name of the client credential it presents.
    pub presents: Option<String>,
    /// The issued credential and when it is rotated (with `issue`).
    pub rotation: Option<Rotation>,
}

fn view(app: &App, name: &str) -> Option<SidecarView> {
    let snapshot = app.control.shared().snapshot();
    let sc = snapshot.sidecars.get(name)?;
    let (listening_on, listen_error) = match app.control.sidecar_status(name) {
        Some(Ok(addr)) => (Some(addr.to_string()), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    Some(SidecarView {
        settings: sc.config.clone(),
        source: sc.source.into(),
        listening_on,
        listen_error,
        presents: sc
            .tls
            .as_ref()
            .and_then(|t| t.spec.credential.as_ref())
            .map(|c| c.0.clone()),
        rotation: sc.rotation.clone(),
    })
}

fn sidecar_error(e: SidecarError) -> ApiError {
    match e {
        SidecarError::NotFound(n) => ApiError::not_found("sidecar", &n),
        SidecarError::NotManaged(_) | SidecarError::NoCa(_) | SidecarError::Issue { .. } => {
            let (m, h) = split_fix(&e.to_string());
            ApiError::invalid("sidecar_credential", m, h)
        }
        SidecarError::Taken(_) => {
            let (m, h) = split_fix(&e.to_string());
            ApiError::in_use(m, &h)
        }
        SidecarError::Store(s) => s.into(),
        SidecarError::Snapshot(s) => ApiError::snapshot(s),
    }
}

/// Checks a sidecar's settings and that its listen address is free (when it is new or moved).
fn check_new(app: &App, sc: &SidecarConfig, moved: bool) -> Res<()> {
    check_name("sidecar", &sc.name)?;
    crate::control::credentials::check(sc).map_err(|e| {
        ApiError::invalid(
            "bad_sidecar",
            e,
            "see the SidecarConfig schema in the OpenAPI document",
        )
    })?;
    if sc.issue.is_some() && app.control.ca().is_none() {
        return Err(sidecar_error(SidecarError::NoCa(sc.name.clone())));
    }
    if moved && sc.listen.port() != 0 {
        std::net::TcpListener::bind(sc.listen).map_err(|e| {
            ApiError::new(
                StatusCode::CONFLICT,
                "listen_address_in_use",
                format!("cannot listen on {}: {e}", sc.listen),
                "choose a free port for the sidecar",
            )
        })?;
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/sidecars", tag = "sidecars", responses((status = 200, body = [SidecarView])))]
async fn list_sidecars(State(app): State<Arc<App>>) -> Res<Json<Vec<SidecarView>>> {
    let mut names: Vec<String> = app
        .control
        .shared()
        .snapshot()
        .sidecars
        .keys()
        .cloned()
        .collect();
    names.sort();
    Ok(Json(names.iter().filter_map(|n| view(&app, n)).collect()))
}

#[utoipa::path(get, path = "/api/v1/sidecars/{name}", tag = "sidecars", params(("name" = String, Path)),
    responses((status = 200, body = SidecarView), (status = 404, body = ErrorBody)))]
async fn get_sidecar(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
) -> Res<Json<SidecarView>> {
    view(&app, &name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("sidecar", &name))
}

#[utoipa::path(post, path = "/api/v1/sidecars", tag = "sidecars", request_body = SidecarConfig,
    responses((status = 201, body = SidecarView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_sidecar(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(sc): JsonBody<SidecarConfig>,
) -> Res<Response> {
    check_new(&app, &sc, true)?;
    let mut ch = super::begin(&app).await?;
    // Checked under the change lock: the published snapshot is the last committed state, so
    // two creates of one name cannot both pass.
    if app
        .control
        .shared()
        .snapshot()
        .sidecars
        .contains_key(&sc.name)
    {
        return Err(ApiError::duplicate("sidecar", &sc.name));
    }
    let row = SidecarRow {
        id: store::new_id(),
        name: sc.name.clone(),
        spec: checked_spec(&sc)?,
        created_at: store::now(),
    };
    store::upsert_sidecar(&mut ch.tx, &row).await?;
    issue(&app, &mut ch, &sc, &actor).await?;
    super::commit(ch, &actor, "sidecar.create", &sc.name, &sc.upstream).await?;
    let v = view(&app, &sc.name).ok_or_else(|| ApiError::not_found("sidecar", &sc.name))?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[utoipa::path(put, path = "/api/v1/sidecars/{name}", tag = "sidecars", request_body = SidecarConfig, params(("name" = String, Path)),
    responses((status = 200, body = SidecarView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn replace_sidecar(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(name): UrlPath<String>,
    JsonBody(sc): JsonBody<SidecarConfig>,
) -> Res<Json<SidecarView>> {
    if sc.name != name {
        return Err(ApiError::invalid(
            "bad_sidecar",
            format!("the body names sidecar '{}', the URL '{name}'", sc.name),
            "to rename a sidecar, delete it and create it anew",
        ));
    }
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    let row = owned(&app, &st, &name)?;
    let old: Option<SidecarConfig> = Some(row.spec.clone());
    let moved = old.as_ref().is_none_or(|o| o.listen != sc.listen);
    check_new(&app, &sc, moved)?;
    let row = SidecarRow {
        spec: checked_spec(&sc)?,
        ..row
    };
    store::upsert_sidecar(&mut ch.tx, &row).await?;
    // A changed certificate request gets a fresh certificate at once.
    let reissue = sc.issue.is_some() && old.and_then(|o| o.issue) != sc.issue;
    if reissue {
        issue(&app, &mut ch, &sc, &actor).await?;
    }
    super::commit(ch, &actor, "sidecar.update", &sc.name, &sc.upstream).await?;
    view(&app, &name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("sidecar", &name))
}

#[utoipa::path(delete, path = "/api/v1/sidecars/{name}", tag = "sidecars", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_sidecar(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(name): UrlPath<String>,
) -> Res<StatusCode> {
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    let row = owned(&app, &st, &name)?;
    store::delete_row(&mut ch.tx, Table::Sidecars, &row.id).await?;
    // Its issued credential goes with it, unless a route presents it too.
    let managed = format!("sidecar-{name}");
    if let Some(c) = st.credentials.iter().find(|c| c.name == managed)
        && !st
            .routes
            .iter()
            .any(|r| r.credential_id.as_deref() == Some(c.id.as_str()))
    {
        store::delete_row(&mut ch.tx, Table::Credentials, &c.id).await?;
    }
    super::commit(ch, &actor, "sidecar.delete", &name, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/sidecars/{name}/rotate", tag = "sidecars", params(("name" = String, Path)),
    responses((status = 200, body = SidecarView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rotate_sidecar(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(name): UrlPath<String>,
) -> Res<Json<SidecarView>> {
    crate::control::credentials::rotate(&app.control, &name, &actor.0)
        .await
        .map_err(sidecar_error)?;
    view(&app, &name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("sidecar", &name))
}

/// The store row of an API-managed sidecar (a config-file sidecar is refused with a hint).
fn owned(app: &App, st: &StoreState, name: &str) -> Res<SidecarRow> {
    if let Some(row) = st.sidecars.iter().find(|s| s.name == name) {
        return Ok(row.clone());
    }
    if app.control.shared().snapshot().sidecars.contains_key(name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "defined_in_config_file",
            format!("sidecar '{name}' is defined in the config file"),
            "change it in the config file; the gateway reloads it",
        ));
    }
    Err(ApiError::not_found("sidecar", name))
}

fn checked_spec(sc: &SidecarConfig) -> Res<SidecarConfig> {
    // Unlike a route, a sidecar names its credential inside upstream_tls; files stay refused.
    if sc.upstream_tls.as_ref().is_some_and(|t| t.uses_files()) {
        return Err(ApiError::invalid(
            "bad_upstream_tls",
            "upstream_tls: trust_bundle_file, cert_file and key_file are for the config file",
            "name a trust bundle and a credential instead",
        ));
    }
    Ok(sc.clone())
}

/// Issues the sidecar's credential inside the change, when it asks for one.
async fn issue(
    app: &App,
    ch: &mut Change<'_>,
    sc: &SidecarConfig,
    actor: &Actor,
) -> Res<Option<store::IssuedRow>> {
    if sc.issue.is_none() {
        return Ok(None);
    }
    let (row, audit) = crate::control::credentials::issue_credential(
        &mut ch.tx,
        app.control.ca().as_deref(),
        sc,
        &actor.0,
        app.control.store().sealer(),
    )
    .await
    .map_err(sidecar_error)?;
    ch.audit(audit).await?;
    Ok(Some(row))
}

/// The sidecar part of an import: creates and replaces; issues credentials where needed.
pub(super) async fn import(imp: &mut Import<'_>, sidecars: &[SidecarConfig]) -> Res<()> {
    for sc in sidecars {
        let existing = imp.st.sidecars.iter().find(|s| s.name == sc.name);
        let old: Option<SidecarConfig> = existing.map(|r| r.spec.clone());
        if old.as_ref() == Some(sc) {
            imp.report.unchanged.push(format!("sidecar {}", sc.name));
            continue;
        }
        check_new(
            imp.app,
            sc,
            old.as_ref().is_none_or(|o| o.listen != sc.listen),
        )?;
        let row = SidecarRow {
            id: existing.map(|r| r.id.clone()).unwrap_or_else(store::new_id),
            name: sc.name.clone(),
            spec: checked_spec(sc)?,
            created_at: existing
                .map(|r| r.created_at.clone())
                .unwrap_or_else(store::now),
        };
        store::upsert_sidecar(&mut imp.ch.tx, &row).await?;
        let has_credential = imp
            .st
            .credentials
            .iter()
            .any(|c| c.name == sc.credential_name());
        if sc.issue.is_some() && (!has_credential || old.and_then(|o| o.issue) != sc.issue) {
            issue(imp.app, &mut imp.ch, sc, imp.actor).await?;
        }
        if existing.is_some() {
            imp.report.updated.push(format!("sidecar {}", sc.name));
        } else {
            imp.report.created.push(format!("sidecar {}", sc.name));
        }
    }
    Ok(())
}
