//! The whole admin API under `/api/v1`: each resource module's routes and OpenAPI paths,
//! merged. Each write runs in one `Change`: validated as a whole, audited, committed
//! and live before the response is sent.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use super::view::{ErrorBody, ErrorDetail};
use super::{ApiError, App};
use super::{audit, bundles, ca, credentials, declarative, domains, identities, policies};
use super::{reports, revocations, routes, rules, self_service, sidecars};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Symbolon admin API",
        description = "Trust bundles, domains, client credentials and routes of a Symbolon mTLS gateway. Authenticate with the admin client certificate or `Authorization: Bearer <token>`. Errors are `{\"error\": {\"code\", \"message\", \"hint\"}}`."
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct ApiDoc;

/// The OpenAPI document of the whole admin API.
pub(super) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for part in [
        bundles::Doc::openapi(),
        domains::Doc::openapi(),
        credentials::Doc::openapi(),
        routes::Doc::openapi(),
        audit::Doc::openapi(),
        declarative::Doc::openapi(),
        policies::Doc::openapi(),
        identities::Doc::openapi(),
        self_service::Doc::openapi(),
        rules::Doc::openapi(),
        reports::Doc::openapi(),
        revocations::Doc::openapi(),
        ca::Doc::openapi(),
        sidecars::Doc::openapi(),
    ] {
        doc.merge(part);
    }
    doc
}

/// Every endpoint, an answer in the API's error shape for any other path, and the body limit.
pub(super) fn build(app: Arc<App>, max_upload: usize) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { Json(document()) }))
        .merge(bundles::routes())
        .merge(domains::routes())
        .merge(credentials::routes())
        .merge(routes::routes())
        .merge(audit::routes())
        .merge(declarative::routes())
        .merge(policies::routes())
        .merge(identities::routes())
        .merge(self_service::routes())
        .merge(rules::routes())
        .merge(reports::routes())
        .merge(revocations::routes())
        .merge(ca::routes())
        .merge(sidecars::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint",
                "see /api/v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(max_upload))
        .with_state(app)
}
