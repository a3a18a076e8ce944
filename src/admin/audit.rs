//! The audit log (`/api/v1/audit`): every change, who made it and what it did, newest first.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::App;
use super::common::Res;
use crate::store;

#[derive(utoipa::OpenApi)]
#[openapi(paths(audit), components(schemas(store::AuditRow)))]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new().route("/api/v1/audit", get(audit))
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Newest first; default 100, at most 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = [store::AuditRow])))]
async fn audit(
    State(app): State<Arc<App>>,
    Query(q): Query<AuditQuery>,
) -> Res<Json<Vec<store::AuditRow>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(app.control.store().audit(limit).await?))
}
