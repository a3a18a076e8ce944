//! Client credentials (`/api/v1/credentials`): certificates and keys the gateway presents to
//! upstreams. The key is write-only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::parse_cert_and_key;
use super::common::{JsonBody, Res, Resource, check_name, created, list, remove, show, taken};
use super::declarative::{DeclCredential, Import};
use super::view::ErrorBody;
use super::{Actor, ApiError, App};
use crate::pki;
use crate::store::{self, CredentialRow, StoreState, Table};

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_credentials, create_credential, get_credential, delete_credential),
    components(schemas(CredentialView, CredentialCreate))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/api/v1/credentials",
            get(list_credentials).post(create_credential),
        )
        .route(
            "/api/v1/credentials/{id}",
            get(get_credential).delete(delete_credential),
        )
}

/// A client credential the gateway presents to upstreams. Its key is never returned.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CredentialView {
    pub id: String,
    pub name: String,
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    pub fingerprint_sha256: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialCreate {
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Resource for CredentialRow {
    const KIND: &'static str = "credential";
    const TABLE: Table = Table::Credentials;
    type View = CredentialView;
    fn rows(st: &StoreState) -> &[Self] {
        &st.credentials
    }
    fn key(&self) -> (&str, &str) {
        (&self.id, &self.name)
    }
    fn view(&self, _: &StoreState) -> CredentialView {
        let info = pki::leaf_info(&self.cert_pem);
        CredentialView {
            id: self.id.clone(),
            name: self.name.clone(),
            subject: info.as_ref().map(|i| i.subject.clone()).unwrap_or_default(),
            issuer: info.as_ref().map(|i| i.issuer.clone()).unwrap_or_default(),
            not_after: info
                .as_ref()
                .map(|i| pki::rfc3339(i.not_after))
                .unwrap_or_default(),
            fingerprint_sha256: info.map(|i| i.fingerprint_sha256).unwrap_or_default(),
            created_at: self.created_at.clone(),
        }
    }

    fn in_use(&self, st: &StoreState) -> Res<()> {
        let users: Vec<&str> = st
            .routes
            .iter()
            .filter(|r| r.credential_id.as_deref() == Some(&self.id))
            .map(|r| r.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::in_use(
                format!(
                    "credential '{}' is used by route {}",
                    self.name,
                    users.join(", ")
                ),
                "change or delete those routes first",
            ));
        }
        Ok(())
    }
}

#[utoipa::path(get, path = "/api/v1/credentials", tag = "credentials", responses((status = 200, body = [CredentialView])))]
async fn list_credentials(State(app): State<Arc<App>>) -> Res<Json<Vec<CredentialView>>> {
    list::<CredentialRow>(&app).await
}

#[utoipa::path(post, path = "/api/v1/credentials", tag = "credentials", request_body = CredentialCreate,
    responses((status = 201, body = CredentialView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_credential(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<CredentialCreate>,
) -> Res<Response> {
    check_name("credential", &req.name)?;
    parse_cert_and_key(&req.cert_pem, &req.key_pem)?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    if taken(&st.credentials, &req.name, None) {
        return Err(ApiError::duplicate("credential", &req.name));
    }
    let row = CredentialRow {
        id: store::new_id(),
        name: req.name,
        cert_pem: req.cert_pem,
        key_pem: req.key_pem,
        created_at: store::now(),
    };
    store::insert_credential(&mut ch.tx, &row, app.control.store().sealer()).await?;
    let view = row.view(&st);
    super::commit(
        ch,
        &actor,
        "credential.create",
        &row.name,
        &view.fingerprint_sha256,
    )
    .await?;
    Ok(created(view))
}

#[utoipa::path(get, path = "/api/v1/credentials/{id}", tag = "credentials", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = CredentialView), (status = 404, body = ErrorBody)))]
async fn get_credential(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<CredentialView>> {
    show::<CredentialRow>(&app, &id).await
}

#[utoipa::path(delete, path = "/api/v1/credentials/{id}", tag = "credentials", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_credential(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    remove::<CredentialRow>(&app, &actor, &id).await
}

/// The credential part of an import: creates and updates by name. Returns the id of each
/// credential of the import, by name.
pub(super) async fn import(
    imp: &mut Import<'_>,
    credentials: &[DeclCredential],
) -> Res<HashMap<String, String>> {
    let mut credential_ids = HashMap::new();
    for c in credentials {
        check_name("credential", &c.name)?;
        let existing = imp.st.credentials.iter().find(|x| x.name == c.name);
        let key_pem = match (&c.key_pem, existing) {
            (Some(k), _) => k.clone(),
            (None, Some(x)) if x.cert_pem == c.cert_pem => x.key_pem.clone(),
            _ => {
                return Err(ApiError::invalid(
                    "key_required",
                    format!(
                        "credential '{}' needs its private key (key_file or key_pem)",
                        c.name
                    ),
                    "put the key file where key_file points, next to the import file",
                ));
            }
        };
        parse_cert_and_key(&c.cert_pem, &key_pem).map_err(|mut e| {
            e.message = format!("credential '{}': {}", c.name, e.message);
            e
        })?;
        let sealer = imp.app.control.store().sealer();
        match existing {
            Some(x) if x.cert_pem == c.cert_pem && x.key_pem == key_pem => {
                imp.report.unchanged.push(format!("credential {}", c.name));
                credential_ids.insert(c.name.clone(), x.id.clone());
            }
            Some(x) => {
                let row = CredentialRow {
                    cert_pem: c.cert_pem.clone(),
                    key_pem,
                    ..x.clone()
                };
                store::update_credential(&mut imp.ch.tx, &row, sealer).await?;
                credential_ids.insert(c.name.clone(), x.id.clone());
                imp.report.updated.push(format!("credential {}", c.name));
            }
            None => {
                let row = CredentialRow {
                    id: store::new_id(),
                    name: c.name.clone(),
                    cert_pem: c.cert_pem.clone(),
                    key_pem,
                    created_at: imp.now.clone(),
                };
                store::insert_credential(&mut imp.ch.tx, &row, sealer).await?;
                credential_ids.insert(c.name.clone(), row.id.clone());
                imp.report.created.push(format!("credential {}", c.name));
            }
        }
    }
    Ok(credential_ids)
}
