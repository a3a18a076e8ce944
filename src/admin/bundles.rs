//! Trust bundles (`/api/v1/mtls/bundles`): the CA certificates that client certificates must
//! chain to, their CRLs, and the domains they are attached to.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use rustls::pki_types::UnixTime;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::common::{
    JsonBody, Res, Resource, check_name, created, list, lookup, remove, show, state, taken,
};
use super::declarative::{DeclBundle, Import};
use super::view::{CertView, ErrorBody};
use super::{Actor, ApiError, App};
use crate::config::CrlExpired;
use crate::pki::{self, CertInfo};
pub use crate::store::BundleCrls;
use crate::store::{self, BundleRow, StoreState, Table};

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_bundles,
        create_bundle,
        get_bundle,
        update_bundle,
        replace_bundle_pem,
        attach_domain,
        detach_domain,
        delete_bundle
    ),
    components(schemas(BundleView, BundleCreate, BundleUpdate, PemBody, AttachBody, CrlsBody))
)]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/api/v1/mtls/bundles",
            get(list_bundles).post(create_bundle),
        )
        .route(
            "/api/v1/mtls/bundles/{id}",
            get(get_bundle).patch(update_bundle).delete(delete_bundle),
        )
        .route("/api/v1/mtls/bundles/{id}/pem", put(replace_bundle_pem))
        .route("/api/v1/mtls/bundles/{id}/domains", post(attach_domain))
        .route(
            "/api/v1/mtls/bundles/{id}/domains/{domain}",
            delete(detach_domain),
        )
}

/// CRLs to attach to a trust bundle, as a request gives them (checked into [`BundleCrls`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrlsBody {
    /// `http://` URLs, fetched at start, on reload and every hour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Uploaded CRLs (PEM, one or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// A CRL past its nextUpdate: `reject` (default) or `warn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<String>,
    /// How often the URLs are fetched again (`1h` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<String>,
}

impl From<&BundleCrls> for CrlsBody {
    fn from(c: &BundleCrls) -> Self {
        Self {
            urls: c.urls.clone(),
            pem: c.pem.clone(),
            expired: c.expired.map(|e| e.as_str().to_string()),
            refresh: c.refresh.clone(),
        }
    }
}

/// A trust bundle: CA certificates that client certificates must chain to.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BundleView {
    pub id: String,
    pub name: String,
    /// true: clients without a valid certificate fail the handshake; false: the connection
    /// proceeds and the failure is recorded (transition mode).
    pub require: bool,
    /// Host names of the domains attached to this bundle.
    pub domains: Vec<String>,
    pub certificates: Vec<CertView>,
    /// CRLs attached to the bundle.
    pub crls: Option<BundleCrls>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleCreate {
    pub name: String,
    /// PEM of one or more root or intermediate CA certificates.
    pub pem: String,
    #[serde(default)]
    pub require: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crls: Option<CrlsBody>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleUpdate {
    /// New name (rename).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Enforce (true) or record only (false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require: Option<bool>,
    /// Replaces the attached CRLs (`{}` removes them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crls: Option<CrlsBody>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PemBody {
    pub pem: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachBody {
    /// Domain id or host name.
    pub domain: String,
}

impl Resource for BundleRow {
    const KIND: &'static str = "bundle";
    const TABLE: Table = Table::Bundles;
    type View = BundleView;
    fn rows(st: &StoreState) -> &[Self] {
        &st.bundles
    }
    fn key(&self) -> (&str, &str) {
        (&self.id, &self.name)
    }
    fn view(&self, st: &StoreState) -> BundleView {
        let certificates = pki::parse_certs(self.pem.as_bytes(), Path::new(""))
            .map(|certs| {
                certs
                    .iter()
                    .filter_map(|c| CertInfo::parse(c).ok())
                    .map(|i| CertView::from(&i))
                    .collect()
            })
            .unwrap_or_default();
        BundleView {
            id: self.id.clone(),
            name: self.name.clone(),
            require: self.require,
            domains: st
                .domains
                .iter()
                .filter(|d| d.bundle_id.as_deref() == Some(&self.id))
                .map(|d| d.hostname.clone())
                .collect(),
            certificates,
            crls: self.crls.clone(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }

    fn in_use(&self, st: &StoreState) -> Res<()> {
        let attached: Vec<&str> = st
            .domains
            .iter()
            .filter(|d| d.bundle_id.as_deref() == Some(&self.id))
            .map(|d| d.hostname.as_str())
            .collect();
        if !attached.is_empty() {
            return Err(ApiError::in_use(
                format!(
                    "bundle '{}' is attached to {}",
                    self.name,
                    attached.join(", ")
                ),
                "detach it from those domains first",
            ));
        }
        // Routes and sidecars name the bundle that verifies their upstream in `upstream_tls`.
        let names_it = |t: Option<&crate::config::UpstreamTls>| {
            t.and_then(|t| t.trust_bundle.as_deref()) == Some(self.name.as_str())
        };
        let users: Vec<String> = st
            .routes
            .iter()
            .filter(|r| names_it(r.upstream_tls.as_ref()))
            .map(|r| format!("route '{}'", r.name))
            .chain(
                st.sidecars
                    .iter()
                    .filter(|s| names_it(s.spec.upstream_tls.as_ref()))
                    .map(|s| format!("sidecar '{}'", s.name)),
            )
            .collect();
        if !users.is_empty() {
            return Err(ApiError::in_use(
                format!(
                    "bundle '{}' verifies the upstreams of {}",
                    self.name,
                    users.join(", ")
                ),
                "point those at another trust bundle first",
            ));
        }
        Ok(())
    }
}

/// Validates CRLs to attach to a bundle; `None` or `{}` means none.
fn checked_crls(c: Option<&CrlsBody>) -> Res<Option<BundleCrls>> {
    let Some(c) = c.filter(|c| **c != CrlsBody::default()) else {
        return Ok(None);
    };
    if let Some(pem) = &c.pem {
        // Parsed here; checked against the bundle's CAs when the change builds its snapshot.
        pki::crls_from_pem(pem, Path::new("crls.pem"), &[])
            .map_err(|e| ApiError::pki("crls.pem", e))?;
    }
    for u in &c.urls {
        if !u.starts_with("http://") {
            return Err(ApiError::invalid(
                "bad_crl_url",
                format!("'{u}' is not an http:// URL"),
                "CRLs are signed by their CA, so they are fetched over plain http://",
            ));
        }
    }
    let expired = match c.expired.as_deref() {
        None => None,
        Some("reject") => Some(CrlExpired::Reject),
        Some("warn") => Some(CrlExpired::Warn),
        Some(e) => {
            return Err(ApiError::invalid(
                "bad_crl_policy",
                format!("crls.expired '{e}' must be reject or warn"),
                "reject refuses clients of a CA whose CRL is stale; warn keeps using it",
            ));
        }
    };
    if let Some(r) = &c.refresh {
        let d = crate::config::parse_duration(r).map_err(|e| {
            ApiError::invalid(
                "bad_duration",
                format!("crls.refresh: {e}"),
                "for example 15m or 1h",
            )
        })?;
        if d.as_secs() == 0 {
            return Err(ApiError::invalid(
                "bad_duration",
                "crls.refresh must be at least 1s",
                "for example 15m or 1h",
            ));
        }
    }
    Ok(Some(BundleCrls {
        urls: c.urls.clone(),
        pem: c.pem.clone(),
        expired,
        refresh: c.refresh.clone(),
    }))
}

fn parse_bundle(pem: &str) -> Res<pki::TrustBundle> {
    let bundle = pki::trust_bundle_from_pem(pem.as_bytes(), Path::new("the uploaded PEM"))
        .map_err(|e| ApiError::pki("pem", e))?;
    pki::refuse_expired(&bundle, UnixTime::now()).map_err(|e| ApiError::pki("pem", e))?;
    Ok(bundle)
}

#[utoipa::path(get, path = "/api/v1/mtls/bundles", tag = "bundles",
    responses((status = 200, body = [BundleView]), (status = 401, body = ErrorBody)))]
async fn list_bundles(State(app): State<Arc<App>>) -> Res<Json<Vec<BundleView>>> {
    list::<BundleRow>(&app).await
}

#[utoipa::path(post, path = "/api/v1/mtls/bundles", tag = "bundles", request_body = BundleCreate,
    responses((status = 201, body = BundleView), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_bundle(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    JsonBody(req): JsonBody<BundleCreate>,
) -> Res<Response> {
    check_name("bundle", &req.name)?;
    let bundle = parse_bundle(&req.pem)?;
    checked_crls(req.crls.as_ref())?;
    app.prefetch_crls(req.crls.as_ref(), &bundle.certs).await?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    if taken(&st.bundles, &req.name, None) {
        return Err(ApiError::duplicate("bundle", &req.name));
    }
    let now = store::now();
    let row = BundleRow {
        id: store::new_id(),
        name: req.name,
        pem: req.pem,
        require: req.require,
        created_at: now.clone(),
        updated_at: now,
        crls: checked_crls(req.crls.as_ref())?,
    };
    store::insert_bundle(&mut ch.tx, &row).await?;
    super::commit(
        ch,
        &actor,
        "bundle.create",
        &row.name,
        &format!("require={}", row.require),
    )
    .await?;
    let st = state(&app).await?;
    Ok(created(row.view(&st)))
}

#[utoipa::path(get, path = "/api/v1/mtls/bundles/{id}", tag = "bundles", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody)))]
async fn get_bundle(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<BundleView>> {
    show::<BundleRow>(&app, &id).await
}

#[utoipa::path(patch, path = "/api/v1/mtls/bundles/{id}", tag = "bundles", request_body = BundleUpdate, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_bundle(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    JsonBody(req): JsonBody<BundleUpdate>,
) -> Res<Json<BundleView>> {
    if let Some(c) = &req.crls {
        checked_crls(Some(c))?;
        let st = state(&app).await?;
        let b = lookup(&st.bundles, &id)?;
        let bundle = parse_bundle(&b.pem)?;
        app.prefetch_crls(Some(c), &bundle.certs).await?;
    }
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let mut row = lookup(&st.bundles, &id)?.clone();
    let mut what = Vec::new();
    if let Some(name) = req.name {
        check_name("bundle", &name)?;
        if taken(&st.bundles, &name, Some(&row.id)) {
            return Err(ApiError::duplicate("bundle", &name));
        }
        what.push(format!("name {} -> {name}", row.name));
        row.name = name;
    }
    if let Some(require) = req.require {
        what.push(format!("require {} -> {require}", row.require));
        row.require = require;
    }
    if let Some(c) = &req.crls {
        row.crls = checked_crls(Some(c))?;
        what.push("crls replaced".into());
    }
    row.updated_at = store::now();
    store::update_bundle(&mut ch.tx, &row).await?;
    super::commit(ch, &actor, "bundle.update", &row.name, &what.join(", ")).await?;
    let st = state(&app).await?;
    Ok(Json(row.view(&st)))
}

#[utoipa::path(put, path = "/api/v1/mtls/bundles/{id}/pem", tag = "bundles", request_body = PemBody, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn replace_bundle_pem(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    JsonBody(req): JsonBody<PemBody>,
) -> Res<Json<BundleView>> {
    let parsed = parse_bundle(&req.pem)?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let mut row = lookup(&st.bundles, &id)?.clone();
    row.pem = req.pem;
    row.updated_at = store::now();
    store::update_bundle(&mut ch.tx, &row).await?;
    let fps: Vec<&str> = parsed
        .infos
        .iter()
        .map(|i| i.fingerprint_sha256.as_str())
        .collect();
    super::commit(
        ch,
        &actor,
        "bundle.replace_pem",
        &row.name,
        &format!("certificates {}", fps.join(",")),
    )
    .await?;
    let st = state(&app).await?;
    Ok(Json(row.view(&st)))
}

#[utoipa::path(post, path = "/api/v1/mtls/bundles/{id}/domains", tag = "bundles", request_body = AttachBody, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody)))]
async fn attach_domain(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    JsonBody(req): JsonBody<AttachBody>,
) -> Res<Json<BundleView>> {
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let bundle = lookup(&st.bundles, &id)?.clone();
    let mut domain = lookup(&st.domains, &req.domain)?.clone();
    domain.bundle_id = Some(bundle.id.clone());
    domain.updated_at = store::now();
    store::upsert_domain(&mut ch.tx, &domain, app.control.store().sealer()).await?;
    super::commit(ch, &actor, "bundle.attach", &bundle.name, &domain.hostname).await?;
    let st = state(&app).await?;
    Ok(Json(bundle.view(&st)))
}

#[utoipa::path(delete, path = "/api/v1/mtls/bundles/{id}/domains/{domain}", tag = "bundles",
    params(("id" = String, Path, description = "id or name"), ("domain" = String, Path, description = "domain id or host name")),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn detach_domain(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath((id, domain_key)): UrlPath<(String, String)>,
) -> Res<Json<BundleView>> {
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let bundle = lookup(&st.bundles, &id)?.clone();
    let mut domain = lookup(&st.domains, &domain_key)?.clone();
    if domain.bundle_id.as_deref() != Some(&bundle.id) {
        return Err(ApiError::invalid(
            "not_attached",
            format!(
                "domain '{}' is not attached to bundle '{}'",
                domain.hostname, bundle.name
            ),
            "list the bundle to see its domains",
        ));
    }
    domain.bundle_id = None;
    domain.updated_at = store::now();
    store::upsert_domain(&mut ch.tx, &domain, app.control.store().sealer()).await?;
    super::commit(ch, &actor, "bundle.detach", &bundle.name, &domain.hostname).await?;
    let st = state(&app).await?;
    Ok(Json(bundle.view(&st)))
}

#[utoipa::path(delete, path = "/api/v1/mtls/bundles/{id}", tag = "bundles", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_bundle(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    remove::<BundleRow>(&app, &actor, &id).await
}

/// Before an import takes the change lock: fetches the CRLs of the bundles to import (a bundle
/// whose PEM does not parse is left to the import, which refuses it).
pub(super) async fn prefetch_for_import(app: &App, bundles: &[DeclBundle]) -> Res<()> {
    for b in bundles {
        if let Ok(bundle) = parse_bundle(&b.pem) {
            app.prefetch_crls(b.crls.as_ref(), &bundle.certs).await?;
        }
    }
    Ok(())
}

/// The bundle part of an import: creates and updates by name. Returns the id of each bundle
/// of the import, by name.
pub(super) async fn import(
    imp: &mut Import<'_>,
    bundles: &[DeclBundle],
) -> Res<HashMap<String, String>> {
    let mut bundle_ids = HashMap::new();
    for b in bundles {
        check_name("bundle", &b.name)?;
        parse_bundle(&b.pem).map_err(|mut e| {
            e.message = format!("bundle '{}': {}", b.name, e.message);
            e
        })?;
        let crls = checked_crls(b.crls.as_ref())?;
        match imp.st.bundles.iter().find(|x| x.name == b.name) {
            Some(x) if x.pem == b.pem && x.require == b.require && x.crls == crls => {
                imp.report.unchanged.push(format!("bundle {}", b.name));
                bundle_ids.insert(b.name.clone(), x.id.clone());
            }
            Some(x) => {
                let row = BundleRow {
                    pem: b.pem.clone(),
                    require: b.require,
                    updated_at: imp.now.clone(),
                    crls,
                    ..x.clone()
                };
                store::update_bundle(&mut imp.ch.tx, &row).await?;
                bundle_ids.insert(b.name.clone(), x.id.clone());
                imp.report.updated.push(format!("bundle {}", b.name));
            }
            None => {
                let row = BundleRow {
                    id: store::new_id(),
                    name: b.name.clone(),
                    pem: b.pem.clone(),
                    require: b.require,
                    created_at: imp.now.clone(),
                    updated_at: imp.now.clone(),
                    crls,
                };
                store::insert_bundle(&mut imp.ch.tx, &row).await?;
                bundle_ids.insert(b.name.clone(), row.id.clone());
                imp.report.created.push(format!("bundle {}", b.name));
            }
        }
    }
    Ok(bundle_ids)
}
