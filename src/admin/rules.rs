//! Gateway-wide rules (`/api/v1/authz/global-rules`): static rules applied to every route
//! before its own.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{JsonBody, Res, state};
use super::declarative::Import;
use super::{Actor, ApiError, App};
use crate::authz::Rule;
use crate::store;

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(get_global_rules, put_global_rules),
    components(schemas(GlobalRules))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new().route(
        "/api/v1/authz/global-rules",
        get(get_global_rules).put(put_global_rules),
    )
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalRules {
    /// Rules applied to every route before its own (see the evaluation order).
    pub rules: Vec<Rule>,
}

#[utoipa::path(get, path = "/api/v1/authz/global-rules", tag = "authz", responses((status = 200, body = GlobalRules)))]
async fn get_global_rules(State(app): State<Arc<App>>) -> Res<Json<GlobalRules>> {
    let st = state(&app).await?;
    let rules = st.global_rules.unwrap_or_default();
    Ok(Json(GlobalRules { rules }))
}

#[utoipa::path(put, path = "/api/v1/authz/global-rules", tag = "authz", request_body = GlobalRules,
    responses((status = 200, body = GlobalRules), (status = 422)))]
async fn put_global_rules(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<GlobalRules>,
) -> Res<Json<GlobalRules>> {
    for (i, r) in req.rules.iter().enumerate() {
        r.validate().map_err(|e| {
            ApiError::invalid(
                "bad_rule",
                format!("rules[{i}]: {e}"),
                "see the Rule schema",
            )
        })?;
    }
    let rules: Vec<Rule> = req.rules.into_iter().map(Rule::normalised).collect();
    let json = serde_json::to_string(&rules).unwrap_or_default();
    let mut ch = super::begin(&app).await?;
    store::set_setting(&mut ch.tx, "global_rules", &json).await?;
    super::commit(ch, &actor, "authz.global_rules", "gateway", &json).await?;
    Ok(Json(GlobalRules { rules }))
}

/// The gateway-wide rules of an import; absent: left as they are.
pub(super) async fn import(imp: &mut Import<'_>, rules: Option<&[Rule]>) -> Res<()> {
    let Some(rules) = rules else {
        return Ok(());
    };
    // Normalised before they are checked (PUT checks first): an import accepts fingerprints
    // written with colons.
    let rules: Vec<Rule> = rules.iter().cloned().map(Rule::normalised).collect();
    for (n, r) in rules.iter().enumerate() {
        r.validate().map_err(|e| {
            ApiError::invalid(
                "bad_rule",
                format!("global_rules[{n}]: {e}"),
                "see the Rule schema",
            )
        })?;
    }
    let current: Vec<Rule> = imp.st.global_rules.clone().unwrap_or_default();
    if current != rules {
        store::set_setting(
            &mut imp.ch.tx,
            "global_rules",
            &serde_json::to_string(&rules).unwrap_or_default(),
        )
        .await?;
        imp.report.updated.push("global rules".into());
    }
    Ok(())
}
