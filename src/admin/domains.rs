//! TLS domains (`/api/v1/domains`): a host name, its server certificate and key, its trust
//! bundle and mTLS mode. The private key is write-only.

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
    JsonBody, Res, Resource, created, list, lookup, parse_cert_and_key, remove, show, taken,
};
use super::declarative::{DeclDomain, Import};
use super::view::{CertView, ErrorBody};
use super::{Actor, ApiError, App};
use crate::pki;
use crate::store::{self, DomainRow, StoreState, Table};
use crate::tls::Mode;

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_domains, create_domain, get_domain, update_domain, delete_domain),
    components(schemas(DomainView, DomainCreate, DomainUpdate))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/domains", get(list_domains).post(create_domain))
        .route(
            "/api/v1/domains/{id}",
            get(get_domain).patch(update_domain).delete(delete_domain),
        )
}

/// A TLS domain. Its private key is write-only.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DomainView {
    pub id: String,
    pub hostname: String,
    /// Name of the attached trust bundle.
    pub bundle: Option<String>,
    /// The mode in force: require, optional or off.
    pub mtls: String,
    /// The explicit setting; null follows the bundle's `require` flag.
    pub mtls_setting: Option<String>,
    pub certificate: Option<CertView>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainCreate {
    pub hostname: String,
    /// Server certificate followed by its chain (PEM).
    pub cert_pem: String,
    /// Private key of the server certificate (PEM). Never returned.
    pub key_pem: String,
    /// Trust bundle id or name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// require | optional | off; absent follows the bundle's `require` flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainUpdate {
    /// New certificate chain; give `key_pem` with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    /// Trust bundle id or name; "" detaches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// require | optional | off | "" (follow the bundle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls: Option<String>,
}

impl Resource for DomainRow {
    const KIND: &'static str = "domain";
    const TABLE: Table = Table::Domains;
    type View = DomainView;
    fn rows(st: &StoreState) -> &[Self] {
        &st.domains
    }
    fn key(&self) -> (&str, &str) {
        (&self.id, &self.hostname)
    }
    fn view(&self, st: &StoreState) -> DomainView {
        let bundle = self.bundle_id.as_deref().and_then(|id| st.bundle(id));
        let mtls = match (self.mtls, bundle) {
            (Some(m), _) => m.to_string(),
            (None, Some(b)) if b.require => "require".into(),
            (None, Some(_)) => "optional".into(),
            (None, None) => "off".into(),
        };
        DomainView {
            id: self.id.clone(),
            hostname: self.hostname.clone(),
            bundle: bundle.map(|b| b.name.clone()),
            mtls,
            mtls_setting: self.mtls.map(|m| m.to_string()),
            certificate: pki::leaf_info(&self.cert_pem).as_ref().map(CertView::from),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }
}

fn check_mode(m: &str) -> Res<Mode> {
    match m {
        "require" => Ok(Mode::Require),
        "optional" => Ok(Mode::Optional),
        "off" => Ok(Mode::Off),
        _ => Err(ApiError::invalid(
            "bad_mode",
            format!("mtls '{m}' is not a mode"),
            "use require, optional or off (or leave it out to follow the bundle's require flag)",
        )),
    }
}

fn check_hostname(h: &str) -> Res<String> {
    let h = h.trim().to_ascii_lowercase();
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*' | ':'));
    if ok {
        Ok(h)
    } else {
        Err(ApiError::invalid(
            "bad_hostname",
            format!("'{h}' is not a host name"),
            "give a DNS name such as api.example.com",
        ))
    }
}

#[utoipa::path(get, path = "/api/v1/domains", tag = "domains", responses((status = 200, body = [DomainView])))]
async fn list_domains(State(app): State<Arc<App>>) -> Res<Json<Vec<DomainView>>> {
    list::<DomainRow>(&app).await
}

#[utoipa::path(post, path = "/api/v1/domains", tag = "domains", request_body = DomainCreate,
    responses((status = 201, body = DomainView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_domain(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<DomainCreate>,
) -> Res<Response> {
    let hostname = check_hostname(&req.hostname)?;
    parse_cert_and_key(&req.cert_pem, &req.key_pem)?;
    let mtls = req.mtls.as_deref().map(check_mode).transpose()?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    if taken(&st.domains, &hostname, None) {
        return Err(ApiError::duplicate("domain", &hostname));
    }
    let bundle_id = match &req.bundle {
        Some(k) => Some(lookup(&st.bundles, k)?.id.clone()),
        None => None,
    };
    let now = store::now();
    let row = DomainRow {
        id: store::new_id(),
        hostname,
        cert_pem: req.cert_pem,
        key_pem: req.key_pem,
        bundle_id,
        mtls,
        created_at: now.clone(),
        updated_at: now,
    };
    store::upsert_domain(&mut ch.tx, &row, app.control.store().sealer()).await?;
    super::commit(ch, &actor, "domain.create", &row.hostname, "").await?;
    let st = state(&app).await?;
    Ok(created(row.view(&st)))
}

#[utoipa::path(get, path = "/api/v1/domains/{id}", tag = "domains", params(("id" = String, Path, description = "id or host name")),
    responses((status = 200, body = DomainView), (status = 404, body = ErrorBody)))]
async fn get_domain(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<DomainView>> {
    show::<DomainRow>(&app, &id).await
}

#[utoipa::path(patch, path = "/api/v1/domains/{id}", tag = "domains", request_body = DomainUpdate, params(("id" = String, Path, description = "id or host name")),
    responses((status = 200, body = DomainView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_domain(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    JsonBody(req): JsonBody<DomainUpdate>,
) -> Res<Json<DomainView>> {
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let mut row = lookup(&st.domains, &id)?.clone();
    let mut what = Vec::new();
    match (req.cert_pem, req.key_pem) {
        (Some(cert), Some(key)) => {
            parse_cert_and_key(&cert, &key)?;
            row.cert_pem = cert;
            row.key_pem = key;
            what.push("certificate and key replaced".to_string());
        }
        (Some(cert), None) => {
            parse_cert_and_key(&cert, &row.key_pem)?;
            row.cert_pem = cert;
            what.push("certificate replaced".to_string());
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "key_without_certificate",
                "key_pem was given without cert_pem",
                "send the certificate that belongs to the new key in the same request",
            ));
        }
        (None, None) => {}
    }
    if let Some(b) = req.bundle {
        row.bundle_id = if b.is_empty() {
            None
        } else {
            Some(lookup(&st.bundles, &b)?.id.clone())
        };
        what.push(format!("bundle {b}"));
    }
    if let Some(m) = req.mtls {
        if m.is_empty() {
            row.mtls = None;
        } else {
            row.mtls = Some(check_mode(&m)?);
        }
        what.push(format!("mtls {m}"));
    }
    row.updated_at = store::now();
    store::upsert_domain(&mut ch.tx, &row, app.control.store().sealer()).await?;
    super::commit(ch, &actor, "domain.update", &row.hostname, &what.join(", ")).await?;
    let st = state(&app).await?;
    Ok(Json(row.view(&st)))
}

#[utoipa::path(delete, path = "/api/v1/domains/{id}", tag = "domains", params(("id" = String, Path, description = "id or host name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_domain(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    remove::<DomainRow>(&app, &actor, &id).await
}

/// The domain part of an import: creates and updates by host name. A domain names its bundle
/// by name, one of this import (`bundle_ids`) or one the store has.
pub(super) async fn import(
    imp: &mut Import<'_>,
    domains: &[DeclDomain],
    bundle_ids: &HashMap<String, String>,
) -> Res<()> {
    for d in domains {
        let hostname = check_hostname(&d.hostname)?;
        let mtls = d.mtls.as_deref().map(check_mode).transpose()?;
        let existing = imp.st.domains.iter().find(|x| x.hostname == hostname);
        let key_pem = match (&d.key_pem, existing) {
            (Some(k), _) => k.clone(),
            (None, Some(x)) if x.cert_pem == d.cert_pem => x.key_pem.clone(),
            _ => {
                return Err(ApiError::invalid(
                    "key_required",
                    format!("domain '{hostname}' needs its private key (key_file or key_pem)"),
                    "put the key file where key_file points, next to the import file",
                ));
            }
        };
        parse_cert_and_key(&d.cert_pem, &key_pem).map_err(|mut e| {
            e.message = format!("domain '{hostname}': {}", e.message);
            e
        })?;
        let bid = match &d.bundle {
            None => None,
            Some(n) => Some(
                bundle_ids
                    .get(n)
                    .cloned()
                    .or_else(|| {
                        imp.st
                            .bundles
                            .iter()
                            .find(|b| &b.name == n)
                            .map(|b| b.id.clone())
                    })
                    .ok_or_else(|| ApiError::not_found("bundle", n))?,
            ),
        };
        let sealer = imp.app.control.store().sealer();
        match existing {
            Some(x)
                if x.cert_pem == d.cert_pem
                    && x.key_pem == key_pem
                    && x.bundle_id == bid
                    && x.mtls == mtls =>
            {
                imp.report.unchanged.push(format!("domain {hostname}"))
            }
            Some(x) => {
                let row = DomainRow {
                    cert_pem: d.cert_pem.clone(),
                    key_pem,
                    bundle_id: bid,
                    mtls,
                    updated_at: imp.now.clone(),
                    ..x.clone()
                };
                store::upsert_domain(&mut imp.ch.tx, &row, sealer).await?;
                imp.report.updated.push(format!("domain {hostname}"));
            }
            None => {
                let row = DomainRow {
                    id: store::new_id(),
                    hostname: hostname.clone(),
                    cert_pem: d.cert_pem.clone(),
                    key_pem,
                    bundle_id: bid,
                    mtls,
                    created_at: imp.now.clone(),
                    updated_at: imp.now.clone(),
                };
                store::upsert_domain(&mut imp.ch.tx, &row, sealer).await?;
                imp.report.created.push(format!("domain {hostname}"));
            }
        }
    }
    Ok(())
}
