//! Identities (`/api/v1/identities`): a key bound to a client certificate (by fingerprint)
//! and/or a token, with a policy and a usage count.

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
    JsonBody, Res, Resource, check_fingerprint, check_name, created, find, remove, taken,
};
use super::common::{first_public_cert, list, lookup, new_token, show, state};
use super::declarative::{DeclIdentity, Import};
use super::{Actor, ApiError, App};
use crate::authz::Usage;
use crate::store::{self, IdentityRow, StoreState, Table};

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_identities,
        create_identity,
        get_identity,
        update_identity,
        delete_identity,
        identity_usage
    ),
    components(schemas(IdentityView, IdentityCreate, IdentityUpdate, IdentityCreated))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/api/v1/identities",
            get(list_identities).post(create_identity),
        )
        .route(
            "/api/v1/identities/{id}",
            get(get_identity)
                .patch(update_identity)
                .delete(delete_identity),
        )
        .route("/api/v1/identities/{id}/usage", get(identity_usage))
}

/// An identity: a key bound to a client certificate (by fingerprint) and/or a token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IdentityView {
    pub id: String,
    pub name: String,
    /// SHA-256 fingerprint of the bound client certificate.
    pub fingerprint: Option<String>,
    /// Whether a token is set (the token itself is shown only when created).
    pub has_token: bool,
    pub policy: Option<String>,
    pub active: bool,
    pub expires_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityCreate {
    pub name: String,
    /// The client's public certificate (PEM). A PEM that contains a private key is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_pem: Option<String>,
    /// Or the certificate's SHA-256 fingerprint (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Also create a token for this identity (returned once).
    #[serde(default)]
    pub token: bool,
    /// Policy id or name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityUpdate {
    /// Policy id or name; "" removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// RFC 3339; "" removes the expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Bind to another certificate (public PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_pem: Option<String>,
    /// Replace the token (the new one is returned once).
    #[serde(default)]
    pub rotate_token: bool,
}

/// The identity, and its token when one was just created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IdentityCreated {
    pub identity: IdentityView,
    /// Shown once; only its SHA-256 is stored.
    pub token: Option<String>,
}

impl Resource for IdentityRow {
    const KIND: &'static str = "identity";
    const TABLE: Table = Table::Identities;
    type View = IdentityView;
    fn rows(st: &StoreState) -> &[Self] {
        &st.identities
    }
    fn key(&self) -> (&str, &str) {
        (&self.id, &self.name)
    }
    fn view(&self, st: &StoreState) -> IdentityView {
        IdentityView {
            id: self.id.clone(),
            name: self.name.clone(),
            fingerprint: self.fingerprint.clone(),
            has_token: self.token_sha256.is_some(),
            policy: self
                .policy_id
                .as_deref()
                .and_then(|id| st.policies.iter().find(|p| p.id == id))
                .map(|p| p.name.clone()),
            active: self.active,
            expires_at: self.expires_at.clone(),
            created_at: self.created_at.clone(),
        }
    }
}

/// The fingerprint of a public certificate. A PEM with a private key is refused: a client must
/// never send its key anywhere.
fn public_cert_fingerprint(pem: &str) -> Res<String> {
    let (_, info) = first_public_cert(pem)?;
    if info.is_ca {
        return Err(ApiError::invalid(
            "ca_certificate",
            format!(
                "certificate_pem is a CA certificate ({}); an identity binds a client certificate",
                info.subject
            ),
            "send the client's own certificate",
        ));
    }
    Ok(info.fingerprint_sha256)
}

fn check_expiry(t: &str) -> Res<()> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|_| ())
        .map_err(|_| {
            ApiError::invalid(
                "bad_time",
                format!("expires_at '{t}' is not an RFC 3339 time"),
                "write it as 2027-01-31T00:00:00Z",
            )
        })
}

/// 409 when another identity has this certificate; only an admin learns which one.
fn conflict_on_fingerprint(st: &StoreState, fp: &str, except: &str, name_it: bool) -> Res<()> {
    match st
        .identities
        .iter()
        .find(|i| i.fingerprint.as_deref() == Some(fp) && i.id != except)
    {
        Some(other) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "certificate_in_use",
            if name_it {
                format!(
                    "this certificate is already bound to identity '{}'",
                    other.name
                )
            } else {
                "this certificate is already bound to an identity".to_string()
            },
            "one certificate identifies one identity; update or delete the other one",
        )),
        None => Ok(()),
    }
}

#[utoipa::path(get, path = "/api/v1/identities", tag = "authz", responses((status = 200, body = [IdentityView])))]
async fn list_identities(State(app): State<Arc<App>>) -> Res<Json<Vec<IdentityView>>> {
    list::<IdentityRow>(&app).await
}

/// Who creates an identity: an admin, or a self-service token (which must prove that it
/// holds the certificate's key, may not learn the names of other identities, and may create
/// only so many).
pub(super) enum Creator {
    Admin,
    SelfService { max_identities: usize },
}

/// Creates an identity in its own change; 201 with the identity (and its token, if any).
pub(super) async fn insert_identity(
    app: &App,
    actor: &Actor,
    req: IdentityCreate,
    action: &str,
    creator: Creator,
) -> Res<Response> {
    check_name("identity", &req.name)?;
    let fingerprint = match (&req.certificate_pem, &req.fingerprint) {
        (Some(pem), _) => Some(public_cert_fingerprint(pem)?),
        (None, Some(fp)) => Some(check_fingerprint(fp)?),
        (None, None) => None,
    };
    if fingerprint.is_none() && !req.token {
        return Err(ApiError::invalid(
            "no_credential",
            "an identity needs a certificate (certificate_pem or fingerprint) or a token",
            "send certificate_pem, or set token: true",
        ));
    }
    if let Some(t) = &req.expires_at {
        check_expiry(t)?;
    }
    let self_service = matches!(creator, Creator::SelfService { .. });
    let mut ch = super::begin(app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    if let Creator::SelfService { max_identities } = creator {
        let mine = st
            .identities
            .iter()
            .filter(|i| i.created_by.as_deref() == Some(actor.0.as_str()))
            .count();
        if mine >= max_identities {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "identity_limit",
                format!("this self-service token has created its {max_identities} identities"),
                "ask the operator to raise max_identities for the token, or to delete unused identities",
            ));
        }
    }
    if taken(&st.identities, &req.name, None) {
        return Err(ApiError::duplicate("identity", &req.name));
    }
    if let Some(fp) = &fingerprint {
        conflict_on_fingerprint(&st, fp, "", !self_service)?;
    }
    let policy_id = match &req.policy {
        Some(k) => {
            let found = find(&st.policies, k);
            // A self-service caller learns the same thing whether the policy is unknown or
            // not open to it.
            let open = found.is_some_and(|p| p.spec.self_service);
            match found {
                Some(_) if self_service && !open => None,
                Some(p) => Some(p.id.clone()),
                None if self_service => None,
                None => return Err(ApiError::not_found("policy", k)),
            }
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "not_self_service",
                    format!("policy '{k}' is not open to self-service"),
                    "ask the operator for a policy with self_service = true",
                )
            })?
        }
        None => None,
    };
    let (token, token_sha256) = if req.token {
        let (t, h) = new_token()?;
        (Some(t), Some(h))
    } else {
        (None, None)
    };
    let row = IdentityRow {
        id: store::new_id(),
        name: req.name,
        fingerprint,
        token_sha256,
        policy_id,
        active: req.active,
        expires_at: req.expires_at,
        created_at: store::now(),
        created_by: Some(actor.0.clone()),
    };
    store::upsert_identity(&mut ch.tx, &row).await?;
    super::commit(
        ch,
        actor,
        action,
        &row.name,
        row.fingerprint.as_deref().unwrap_or("token"),
    )
    .await?;
    let st = state(app).await?;
    Ok(created(IdentityCreated {
        identity: row.view(&st),
        token,
    }))
}

#[utoipa::path(post, path = "/api/v1/identities", tag = "authz", request_body = IdentityCreate,
    responses((status = 201, body = IdentityCreated), (status = 409), (status = 422)))]
async fn create_identity(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<IdentityCreate>,
) -> Res<Response> {
    insert_identity(&app, &actor, req, "identity.create", Creator::Admin).await
}

#[utoipa::path(get, path = "/api/v1/identities/{id}", tag = "authz", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = IdentityView), (status = 404)))]
async fn get_identity(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<IdentityView>> {
    show::<IdentityRow>(&app, &id).await
}

#[utoipa::path(patch, path = "/api/v1/identities/{id}", tag = "authz", request_body = IdentityUpdate, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = IdentityCreated), (status = 404), (status = 422)))]
async fn update_identity(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    JsonBody(req): JsonBody<IdentityUpdate>,
) -> Res<Json<IdentityCreated>> {
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    let mut row = lookup(&st.identities, &id)?.clone();
    let mut what = Vec::new();
    if let Some(p) = req.policy {
        row.policy_id = if p.is_empty() {
            None
        } else {
            Some(lookup(&st.policies, &p)?.id.clone())
        };
        what.push(format!("policy {p}"));
    }
    if let Some(a) = req.active {
        row.active = a;
        what.push(format!("active {a}"));
    }
    if let Some(t) = req.expires_at {
        if t.is_empty() {
            row.expires_at = None;
        } else {
            check_expiry(&t)?;
            row.expires_at = Some(t.clone());
        }
        what.push(format!("expires_at {t}"));
    }
    if let Some(pem) = req.certificate_pem {
        let fp = public_cert_fingerprint(&pem)?;
        conflict_on_fingerprint(&st, &fp, &row.id, true)?;
        what.push(format!("certificate {fp}"));
        row.fingerprint = Some(fp);
    }
    let mut token = None;
    if req.rotate_token {
        let (t, h) = new_token()?;
        token = Some(t);
        row.token_sha256 = Some(h);
        what.push("token rotated".into());
    }
    store::upsert_identity(&mut ch.tx, &row).await?;
    super::commit(ch, &actor, "identity.update", &row.name, &what.join(", ")).await?;
    let st = state(&app).await?;
    Ok(Json(IdentityCreated {
        identity: row.view(&st),
        token,
    }))
}

#[utoipa::path(delete, path = "/api/v1/identities/{id}", tag = "authz", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404)))]
async fn delete_identity(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    remove::<IdentityRow>(&app, &actor, &id).await
}

#[utoipa::path(get, path = "/api/v1/identities/{id}/usage", tag = "authz", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = [Usage]), (status = 404)))]
async fn identity_usage(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<Vec<Usage>>> {
    let st = state(&app).await?;
    let i = lookup(&st.identities, &id)?;
    Ok(Json(app.control.shared().authz.usage(&i.id)))
}

/// The identity part of an import: creates and updates by name. An identity names its policy
/// by name, one of this import (`policy_ids`) or one the store has.
pub(super) async fn import(
    imp: &mut Import<'_>,
    identities: &[DeclIdentity],
    policy_ids: &HashMap<String, String>,
) -> Res<()> {
    let by_name: HashMap<&str, &IdentityRow> = imp
        .st
        .identities
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    for i in identities {
        check_name("identity", &i.name)?;
        let policy_id = match &i.policy {
            None => None,
            Some(n) => Some(
                policy_ids
                    .get(n)
                    .cloned()
                    .or_else(|| {
                        imp.st
                            .policies
                            .iter()
                            .find(|p| &p.name == n)
                            .map(|p| p.id.clone())
                    })
                    .ok_or_else(|| ApiError::not_found("policy", n))?,
            ),
        };
        let fingerprint = i
            .fingerprint
            .as_deref()
            .map(check_fingerprint)
            .transpose()?;
        let existing = by_name.get(i.name.as_str()).copied();
        let row = IdentityRow {
            id: existing.map(|x| x.id.clone()).unwrap_or_else(store::new_id),
            name: i.name.clone(),
            fingerprint,
            token_sha256: i.token_sha256.clone(),
            policy_id,
            active: i.active,
            expires_at: i.expires_at.clone(),
            created_at: existing
                .map(|x| x.created_at.clone())
                .unwrap_or_else(|| imp.now.clone()),
            created_by: existing
                .and_then(|x| x.created_by.clone())
                .or_else(|| Some(imp.actor.0.clone())),
        };
        match existing {
            Some(x)
                if x.fingerprint == row.fingerprint
                    && x.token_sha256 == row.token_sha256
                    && x.policy_id == row.policy_id
                    && x.active == row.active
                    && x.expires_at == row.expires_at =>
            {
                imp.report.unchanged.push(format!("identity {}", i.name))
            }
            Some(_) => {
                store::upsert_identity(&mut imp.ch.tx, &row).await?;
                imp.report.updated.push(format!("identity {}", i.name));
            }
            None => {
                store::upsert_identity(&mut imp.ch.tx, &row).await?;
                imp.report.created.push(format!("identity {}", i.name));
            }
        }
    }
    Ok(())
}
