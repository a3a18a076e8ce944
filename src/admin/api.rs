//! Admin API handlers under `/api/v1`. Each write runs in one [`Change`]: validated as a whole,
//! audited, committed and live before the response is sent.

use std::path::Path;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use rustls::pki_types::UnixTime;
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::view::*;
use super::{Actor, ApiError, App, Change};
use super::{authz_api, sidecar_api};
use crate::authz::RouteAuthz;
use crate::config::CrlExpired;
use crate::pki::{self, CertInfo};
use crate::store::{self, BundleRow, CredentialRow, DomainRow, RouteRow, StoreState, Table};
use crate::tls::Mode;

type Res<T> = Result<T, ApiError>;
type Body<T> = Result<Json<T>, JsonRejection>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Symbolon admin API",
        description = "Trust bundles, domains, client credentials and routes of a Symbolon mTLS gateway. Authenticate with the admin client certificate or `Authorization: Bearer <token>`. Errors are `{\"error\": {\"code\", \"message\", \"hint\"}}`."
    ),
    paths(
        list_bundles,
        create_bundle,
        get_bundle,
        update_bundle,
        replace_bundle_pem,
        attach_domain,
        detach_domain,
        delete_bundle,
        list_domains,
        create_domain,
        get_domain,
        update_domain,
        delete_domain,
        list_credentials,
        create_credential,
        get_credential,
        delete_credential,
        list_routes,
        create_route,
        get_route,
        update_route,
        delete_route,
        audit,
        export,
        import,
        authz_api::list_policies,
        authz_api::create_policy,
        authz_api::get_policy,
        authz_api::replace_policy,
        authz_api::delete_policy,
        authz_api::list_identities,
        authz_api::create_identity,
        authz_api::get_identity,
        authz_api::update_identity,
        authz_api::delete_identity,
        authz_api::identity_usage,
        authz_api::self_service,
        authz_api::self_service_challenge,
        authz_api::list_enrollment_tokens,
        authz_api::delete_enrollment_token,
        authz_api::get_global_rules,
        authz_api::put_global_rules,
        authz_api::transition_report,
        authz_api::verify,
        authz_api::list_revocations,
        authz_api::revoke,
        authz_api::expiring,
        authz_api::ca_sign,
        authz_api::ca_enrollment_token,
        authz_api::ca_issued,
        sidecar_api::list_sidecars,
        sidecar_api::create_sidecar,
        sidecar_api::get_sidecar,
        sidecar_api::replace_sidecar,
        sidecar_api::delete_sidecar,
        sidecar_api::rotate_sidecar
    ),
    components(schemas(ErrorBody, ErrorDetail, store::AuditRow))
)]
struct ApiDoc;

/// The error body every failure uses.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    code: String,
    message: String,
    hint: String,
}

pub(super) fn router(app: Arc<App>, max_upload: usize) -> Router {
    let router = Router::new()
        .route("/api/v1/openapi.json", get(openapi))
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
            axum::routing::delete(detach_domain),
        )
        .route("/api/v1/domains", get(list_domains).post(create_domain))
        .route(
            "/api/v1/domains/{id}",
            get(get_domain).patch(update_domain).delete(delete_domain),
        )
        .route(
            "/api/v1/credentials",
            get(list_credentials).post(create_credential),
        )
        .route(
            "/api/v1/credentials/{id}",
            get(get_credential).delete(delete_credential),
        )
        .route("/api/v1/routes", get(list_routes).post(create_route))
        .route(
            "/api/v1/routes/{id}",
            get(get_route).patch(update_route).delete(delete_route),
        )
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/export", get(export))
        .route("/api/v1/import", post(import));
    let router = super::sidecar_api::routes(router);
    super::authz_api::routes(router)
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

async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

// === helpers ===

pub(super) fn check_name(kind: &str, name: &str) -> Res<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "bad_name",
            format!("{kind} name '{name}' is not valid"),
            "use 1 to 128 letters, digits, '-', '_', '.' or '@'",
        ))
    }
}

/// Validates CRLs to attach to a bundle; `None` or `{}` means none.
pub(super) fn checked_crls(c: Option<&CrlsBody>) -> Res<Option<BundleCrls>> {
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

/// Checks a certificate chain and its key; returns the leaf's facts.
fn parse_cert_and_key(cert_pem: &str, key_pem: &str) -> Res<CertInfo> {
    let cert_origin = Path::new("cert_pem");
    let key_origin = Path::new("key_pem");
    let chain = pki::parse_certs(cert_pem.as_bytes(), cert_origin)
        .map_err(|e| ApiError::pki("cert_pem", e))?;
    let key =
        pki::parse_key(key_pem.as_bytes(), key_origin).map_err(|e| ApiError::pki("key_pem", e))?;
    pki::certified_key(chain.clone(), key, cert_origin, key_origin)
        .map_err(|e| ApiError::pki("key_pem", e))?;
    pki::leaf_info(cert_pem)
        .ok_or_else(|| ApiError::invalid("malformed_pem", "cert_pem: cannot parse", ""))
}

pub(super) fn json_or<T>(body: Body<T>) -> Res<T> {
    body.map(|Json(t)| t).map_err(ApiError::from)
}

async fn state(app: &App) -> Res<StoreState> {
    Ok(app.control.store().state().await?)
}

pub(super) fn find<'a, T>(
    rows: &'a [T],
    key: &str,
    id: impl Fn(&T) -> (&str, &str),
) -> Option<&'a T> {
    rows.iter()
        .find(|r| id(r).0 == key)
        .or_else(|| rows.iter().find(|r| id(r).1 == key))
}

fn bundle_key(b: &BundleRow) -> (&str, &str) {
    (&b.id, &b.name)
}
fn domain_key(d: &DomainRow) -> (&str, &str) {
    (&d.id, &d.hostname)
}
fn credential_key(c: &CredentialRow) -> (&str, &str) {
    (&c.id, &c.name)
}
fn route_key(r: &RouteRow) -> (&str, &str) {
    (&r.id, &r.name)
}

fn bundle_view(b: &BundleRow, st: &StoreState) -> BundleView {
    let certificates = pki::parse_certs(b.pem.as_bytes(), Path::new(""))
        .map(|certs| {
            certs
                .iter()
                .filter_map(|c| CertInfo::parse(c).ok())
                .map(|i| CertView::from(&i))
                .collect()
        })
        .unwrap_or_default();
    BundleView {
        id: b.id.clone(),
        name: b.name.clone(),
        require: b.require,
        domains: st
            .domains
            .iter()
            .filter(|d| d.bundle_id.as_deref() == Some(&b.id))
            .map(|d| d.hostname.clone())
            .collect(),
        certificates,
        crls: b.crls.clone(),
        created_at: b.created_at.clone(),
        updated_at: b.updated_at.clone(),
    }
}

fn domain_view(d: &DomainRow, st: &StoreState) -> DomainView {
    let bundle = d.bundle_id.as_deref().and_then(|id| st.bundle(id));
    let mtls = match (d.mtls, bundle) {
        (Some(m), _) => m.to_string(),
        (None, Some(b)) if b.require => "require".into(),
        (None, Some(_)) => "optional".into(),
        (None, None) => "off".into(),
    };
    DomainView {
        id: d.id.clone(),
        hostname: d.hostname.clone(),
        bundle: bundle.map(|b| b.name.clone()),
        mtls,
        mtls_setting: d.mtls.map(|m| m.to_string()),
        certificate: pki::leaf_info(&d.cert_pem).as_ref().map(CertView::from),
        created_at: d.created_at.clone(),
        updated_at: d.updated_at.clone(),
    }
}

fn credential_view(c: &CredentialRow) -> CredentialView {
    let info = pki::leaf_info(&c.cert_pem);
    CredentialView {
        id: c.id.clone(),
        name: c.name.clone(),
        subject: info.as_ref().map(|i| i.subject.clone()).unwrap_or_default(),
        issuer: info.as_ref().map(|i| i.issuer.clone()).unwrap_or_default(),
        not_after: info
            .as_ref()
            .map(|i| pki::rfc3339(i.not_after))
            .unwrap_or_default(),
        fingerprint_sha256: info.map(|i| i.fingerprint_sha256).unwrap_or_default(),
        created_at: c.created_at.clone(),
    }
}

fn route_view(r: &RouteRow, st: &StoreState) -> RouteView {
    RouteView {
        id: r.id.clone(),
        name: r.name.clone(),
        host: r.host.clone(),
        path_prefix: r.path_prefix.clone(),
        upstream: r.upstream.clone(),
        strip_prefix: r.strip_prefix,
        credential: r
            .credential_id
            .as_deref()
            .and_then(|id| st.credentials.iter().find(|c| c.id == id))
            .map(|c| c.name.clone()),
        authz: r.authz.clone(),
        upstream_tls: r.upstream_tls.clone(),
        created_at: r.created_at.clone(),
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

fn created<T: Serialize>(t: T) -> Response {
    (StatusCode::CREATED, Json(t)).into_response()
}

// === bundles ===

#[utoipa::path(get, path = "/api/v1/mtls/bundles", tag = "bundles",
    responses((status = 200, body = [BundleView]), (status = 401, body = ErrorBody)))]
async fn list_bundles(State(app): State<Arc<App>>) -> Res<Json<Vec<BundleView>>> {
    let st = state(&app).await?;
    Ok(Json(
        st.bundles.iter().map(|b| bundle_view(b, &st)).collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/mtls/bundles", tag = "bundles", request_body = BundleCreate,
    responses((status = 201, body = BundleView), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_bundle(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<BundleCreate>,
) -> Res<Response> {
    let req = json_or(body)?;
    check_name("bundle", &req.name)?;
    let bundle = parse_bundle(&req.pem)?;
    checked_crls(req.crls.as_ref())?;
    app.prefetch_crls(req.crls.as_ref(), &bundle.certs).await?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    if st.bundles.iter().any(|b| b.name == req.name) {
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
    Ok(created(bundle_view(&row, &st)))
}

#[utoipa::path(get, path = "/api/v1/mtls/bundles/{id}", tag = "bundles", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody)))]
async fn get_bundle(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<BundleView>> {
    let st = state(&app).await?;
    let b = find(&st.bundles, &id, bundle_key).ok_or_else(|| ApiError::not_found("bundle", &id))?;
    Ok(Json(bundle_view(b, &st)))
}

#[utoipa::path(patch, path = "/api/v1/mtls/bundles/{id}", tag = "bundles", request_body = BundleUpdate, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_bundle(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    body: Body<BundleUpdate>,
) -> Res<Json<BundleView>> {
    let req = json_or(body)?;
    if let Some(c) = &req.crls {
        checked_crls(Some(c))?;
        let st = state(&app).await?;
        let b =
            find(&st.bundles, &id, bundle_key).ok_or_else(|| ApiError::not_found("bundle", &id))?;
        let bundle = parse_bundle(&b.pem)?;
        app.prefetch_crls(Some(c), &bundle.certs).await?;
    }
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let mut row = find(&st.bundles, &id, bundle_key)
        .ok_or_else(|| ApiError::not_found("bundle", &id))?
        .clone();
    let mut what = Vec::new();
    if let Some(name) = req.name {
        check_name("bundle", &name)?;
        if st.bundles.iter().any(|b| b.name == name && b.id != row.id) {
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
    Ok(Json(bundle_view(&row, &st)))
}

#[utoipa::path(put, path = "/api/v1/mtls/bundles/{id}/pem", tag = "bundles", request_body = PemBody, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn replace_bundle_pem(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    body: Body<PemBody>,
) -> Res<Json<BundleView>> {
    let req = json_or(body)?;
    let parsed = parse_bundle(&req.pem)?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let mut row = find(&st.bundles, &id, bundle_key)
        .ok_or_else(|| ApiError::not_found("bundle", &id))?
        .clone();
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
    Ok(Json(bundle_view(&row, &st)))
}

#[utoipa::path(post, path = "/api/v1/mtls/bundles/{id}/domains", tag = "bundles", request_body = AttachBody, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody)))]
async fn attach_domain(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    body: Body<AttachBody>,
) -> Res<Json<BundleView>> {
    let req = json_or(body)?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let bundle = find(&st.bundles, &id, bundle_key)
        .ok_or_else(|| ApiError::not_found("bundle", &id))?
        .clone();
    let mut domain = find(&st.domains, &req.domain, domain_key)
        .ok_or_else(|| ApiError::not_found("domain", &req.domain))?
        .clone();
    domain.bundle_id = Some(bundle.id.clone());
    domain.updated_at = store::now();
    store::upsert_domain(&mut ch.tx, &domain, app.control.store().sealer()).await?;
    super::commit(ch, &actor, "bundle.attach", &bundle.name, &domain.hostname).await?;
    let st = state(&app).await?;
    Ok(Json(bundle_view(&bundle, &st)))
}

#[utoipa::path(delete, path = "/api/v1/mtls/bundles/{id}/domains/{domain}", tag = "bundles",
    params(("id" = String, Path, description = "id or name"), ("domain" = String, Path, description = "domain id or host name")),
    responses((status = 200, body = BundleView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn detach_domain(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath((id, domain_key_s)): UrlPath<(String, String)>,
) -> Res<Json<BundleView>> {
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let bundle = find(&st.bundles, &id, bundle_key)
        .ok_or_else(|| ApiError::not_found("bundle", &id))?
        .clone();
    let mut domain = find(&st.domains, &domain_key_s, domain_key)
        .ok_or_else(|| ApiError::not_found("domain", &domain_key_s))?
        .clone();
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
    Ok(Json(bundle_view(&bundle, &st)))
}

#[utoipa::path(delete, path = "/api/v1/mtls/bundles/{id}", tag = "bundles", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_bundle(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let b = find(&st.bundles, &id, bundle_key)
        .ok_or_else(|| ApiError::not_found("bundle", &id))?
        .clone();
    let attached: Vec<&str> = st
        .domains
        .iter()
        .filter(|d| d.bundle_id.as_deref() == Some(&b.id))
        .map(|d| d.hostname.as_str())
        .collect();
    if !attached.is_empty() {
        return Err(ApiError::in_use(
            format!("bundle '{}' is attached to {}", b.name, attached.join(", ")),
            "detach it from those domains first",
        ));
    }
    // Routes and sidecars name the bundle that verifies their upstream in `upstream_tls`.
    let names_it = |t: Option<crate::config::UpstreamTls>| {
        t.and_then(|t| t.trust_bundle) == Some(b.name.clone())
    };
    let users: Vec<String> = st
        .routes
        .iter()
        .filter(|r| names_it(r.upstream_tls.clone()))
        .map(|r| format!("route '{}'", r.name))
        .chain(
            st.sidecars
                .iter()
                .filter(|s| names_it(s.spec.upstream_tls.clone()))
                .map(|s| format!("sidecar '{}'", s.name)),
        )
        .collect();
    if !users.is_empty() {
        return Err(ApiError::in_use(
            format!(
                "bundle '{}' verifies the upstreams of {}",
                b.name,
                users.join(", ")
            ),
            "point those at another trust bundle first",
        ));
    }
    store::delete_row(&mut ch.tx, Table::Bundles, &b.id).await?;
    super::commit(ch, &actor, "bundle.delete", &b.name, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

// === domains ===

#[utoipa::path(get, path = "/api/v1/domains", tag = "domains", responses((status = 200, body = [DomainView])))]
async fn list_domains(State(app): State<Arc<App>>) -> Res<Json<Vec<DomainView>>> {
    let st = state(&app).await?;
    Ok(Json(
        st.domains.iter().map(|d| domain_view(d, &st)).collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/domains", tag = "domains", request_body = DomainCreate,
    responses((status = 201, body = DomainView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_domain(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<DomainCreate>,
) -> Res<Response> {
    let req = json_or(body)?;
    let hostname = check_hostname(&req.hostname)?;
    parse_cert_and_key(&req.cert_pem, &req.key_pem)?;
    let mtls = req.mtls.as_deref().map(check_mode).transpose()?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    if st.domains.iter().any(|d| d.hostname == hostname) {
        return Err(ApiError::duplicate("domain", &hostname));
    }
    let bundle_id = match &req.bundle {
        Some(k) => Some(
            find(&st.bundles, k, bundle_key)
                .ok_or_else(|| ApiError::not_found("bundle", k))?
                .id
                .clone(),
        ),
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
    Ok(created(domain_view(&row, &st)))
}

#[utoipa::path(get, path = "/api/v1/domains/{id}", tag = "domains", params(("id" = String, Path, description = "id or host name")),
    responses((status = 200, body = DomainView), (status = 404, body = ErrorBody)))]
async fn get_domain(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<DomainView>> {
    let st = state(&app).await?;
    let d = find(&st.domains, &id, domain_key).ok_or_else(|| ApiError::not_found("domain", &id))?;
    Ok(Json(domain_view(d, &st)))
}

#[utoipa::path(patch, path = "/api/v1/domains/{id}", tag = "domains", request_body = DomainUpdate, params(("id" = String, Path, description = "id or host name")),
    responses((status = 200, body = DomainView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_domain(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    body: Body<DomainUpdate>,
) -> Res<Json<DomainView>> {
    let req = json_or(body)?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let mut row = find(&st.domains, &id, domain_key)
        .ok_or_else(|| ApiError::not_found("domain", &id))?
        .clone();
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
            Some(
                find(&st.bundles, &b, bundle_key)
                    .ok_or_else(|| ApiError::not_found("bundle", &b))?
                    .id
                    .clone(),
            )
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
    Ok(Json(domain_view(&row, &st)))
}

#[utoipa::path(delete, path = "/api/v1/domains/{id}", tag = "domains", params(("id" = String, Path, description = "id or host name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_domain(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let d = find(&st.domains, &id, domain_key)
        .ok_or_else(|| ApiError::not_found("domain", &id))?
        .clone();
    store::delete_row(&mut ch.tx, Table::Domains, &d.id).await?;
    super::commit(ch, &actor, "domain.delete", &d.hostname, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

// === credentials ===

#[utoipa::path(get, path = "/api/v1/credentials", tag = "credentials", responses((status = 200, body = [CredentialView])))]
async fn list_credentials(State(app): State<Arc<App>>) -> Res<Json<Vec<CredentialView>>> {
    let st = state(&app).await?;
    Ok(Json(st.credentials.iter().map(credential_view).collect()))
}

#[utoipa::path(post, path = "/api/v1/credentials", tag = "credentials", request_body = CredentialCreate,
    responses((status = 201, body = CredentialView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_credential(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<CredentialCreate>,
) -> Res<Response> {
    let req = json_or(body)?;
    check_name("credential", &req.name)?;
    parse_cert_and_key(&req.cert_pem, &req.key_pem)?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    if st.credentials.iter().any(|c| c.name == req.name) {
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
    let view = credential_view(&row);
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
    let st = state(&app).await?;
    let c = find(&st.credentials, &id, credential_key)
        .ok_or_else(|| ApiError::not_found("credential", &id))?;
    Ok(Json(credential_view(c)))
}

#[utoipa::path(delete, path = "/api/v1/credentials/{id}", tag = "credentials", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_credential(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let c = find(&st.credentials, &id, credential_key)
        .ok_or_else(|| ApiError::not_found("credential", &id))?
        .clone();
    let users: Vec<&str> = st
        .routes
        .iter()
        .filter(|r| r.credential_id.as_deref() == Some(&c.id))
        .map(|r| r.name.as_str())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::in_use(
            format!(
                "credential '{}' is used by route {}",
                c.name,
                users.join(", ")
            ),
            "change or delete those routes first",
        ));
    }
    store::delete_row(&mut ch.tx, Table::Credentials, &c.id).await?;
    super::commit(ch, &actor, "credential.delete", &c.name, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

// === routes ===

#[utoipa::path(get, path = "/api/v1/routes", tag = "routes", responses((status = 200, body = [RouteView])))]
async fn list_routes(State(app): State<Arc<App>>) -> Res<Json<Vec<RouteView>>> {
    let st = state(&app).await?;
    Ok(Json(st.routes.iter().map(|r| route_view(r, &st)).collect()))
}

fn normal_host(h: Option<String>) -> Option<String> {
    h.filter(|h| !h.is_empty() && h != "*")
        .map(|h| h.to_ascii_lowercase())
}

/// Validates a route's authz settings, rules normalised, for the store (`None` when absent).
fn checked_authz(a: Option<&RouteAuthz>) -> Res<Option<RouteAuthz>> {
    let Some(a) = a else { return Ok(None) };
    for (i, r) in a.rules.iter().enumerate() {
        r.validate().map_err(|e| {
            ApiError::invalid(
                "bad_rule",
                format!("authz.rules[{i}]: {e}"),
                "see the Rule schema in the OpenAPI document",
            )
        })?;
    }
    let mut a = a.clone();
    a.rules = a
        .rules
        .into_iter()
        .map(crate::authz::Rule::normalised)
        .collect();
    Ok(Some(a))
}

/// Validates a route's upstream TLS settings (API form: names, no files) for the store.
fn checked_upstream_tls(
    t: Option<&crate::config::UpstreamTls>,
) -> Res<Option<crate::config::UpstreamTls>> {
    let Some(t) = t else { return Ok(None) };
    if t.uses_files() || t.credential.is_some() {
        return Err(ApiError::invalid(
            "bad_upstream_tls",
            "upstream_tls: trust_bundle_file, cert_file, key_file and credential are for the config file",
            "name a trust bundle in upstream_tls.trust_bundle and a credential in the route's credential field",
        ));
    }
    if *t == crate::config::UpstreamTls::default() {
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
        let text = e.to_string();
        let (m, h) = text.split_once(". Fix: ").unwrap_or((&text, ""));
        ApiError::invalid("bad_route", m, h)
    })
}

#[utoipa::path(post, path = "/api/v1/routes", tag = "routes", request_body = RouteCreate,
    responses((status = 201, body = RouteView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_route(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<RouteCreate>,
) -> Res<Response> {
    let req = json_or(body)?;
    check_name("route", &req.name)?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    if st.routes.iter().any(|r| r.name == req.name) {
        return Err(ApiError::duplicate("route", &req.name));
    }
    let credential_id = match &req.credential {
        Some(k) => Some(
            find(&st.credentials, k, credential_key)
                .ok_or_else(|| ApiError::not_found("credential", k))?
                .id
                .clone(),
        ),
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
    Ok(created(route_view(&row, &st)))
}

#[utoipa::path(get, path = "/api/v1/routes/{id}", tag = "routes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = RouteView), (status = 404, body = ErrorBody)))]
async fn get_route(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<RouteView>> {
    let st = state(&app).await?;
    let r = find(&st.routes, &id, route_key).ok_or_else(|| ApiError::not_found("route", &id))?;
    Ok(Json(route_view(r, &st)))
}

#[utoipa::path(patch, path = "/api/v1/routes/{id}", tag = "routes", request_body = RouteUpdate, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = RouteView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_route(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    body: Body<RouteUpdate>,
) -> Res<Json<RouteView>> {
    let req = json_or(body)?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let mut row = find(&st.routes, &id, route_key)
        .ok_or_else(|| ApiError::not_found("route", &id))?
        .clone();
    if let Some(name) = req.name {
        check_name("route", &name)?;
        if st.routes.iter().any(|r| r.name == name && r.id != row.id) {
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
            Some(
                find(&st.credentials, &c, credential_key)
                    .ok_or_else(|| ApiError::not_found("credential", &c))?
                    .id
                    .clone(),
            )
        };
    }
    check_route(&row)?;
    store::upsert_route(&mut ch.tx, &row).await?;
    super::commit(ch, &actor, "route.update", &row.name, &row.upstream).await?;
    let st = state(&app).await?;
    Ok(Json(route_view(&row, &st)))
}

#[utoipa::path(delete, path = "/api/v1/routes/{id}", tag = "routes", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_route(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let r = find(&st.routes, &id, route_key)
        .ok_or_else(|| ApiError::not_found("route", &id))?
        .clone();
    store::delete_row(&mut ch.tx, Table::Routes, &r.id).await?;
    super::commit(ch, &actor, "route.delete", &r.name, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

// === audit ===

#[derive(Deserialize, utoipa::IntoParams)]
struct AuditQuery {
    /// Newest first; default 100, at most 1000.
    limit: Option<i64>,
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

// === export / import ===

/// The declarative form of everything the store holds (private keys left out: each domain and
/// credential names a `key_file` the importer reads, or keeps the key it already has).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Declarative {
    #[serde(default, rename = "bundles")]
    pub bundles: Vec<DeclBundle>,
    #[serde(default, rename = "domains")]
    pub domains: Vec<DeclDomain>,
    #[serde(default, rename = "credentials")]
    pub credentials: Vec<DeclCredential>,
    #[serde(default, rename = "routes")]
    pub routes: Vec<DeclRoute>,
    /// Sidecars managed through the API; their issued credentials are not exported (each
    /// import issues fresh ones).
    #[serde(default, rename = "sidecars")]
    pub sidecars: Vec<crate::config::SidecarConfig>,
    #[serde(default, rename = "policies")]
    pub policies: Vec<DeclPolicy>,
    #[serde(default, rename = "identities")]
    pub identities: Vec<DeclIdentity>,
    /// Gateway-wide static rules; absent: left as they are.
    #[serde(
        default,
        rename = "global_rules",
        skip_serializing_if = "Option::is_none"
    )]
    pub global_rules: Option<Vec<crate::authz::Rule>>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclPolicy {
    pub name: String,
    #[serde(flatten)]
    pub spec: crate::authz::PolicySpec,
}

/// An identity. Tokens are carried as their SHA-256 (the token itself is never stored).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclIdentity {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclBundle {
    pub name: String,
    pub require: bool,
    pub pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crls: Option<CrlsBody>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclDomain {
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<String>,
    pub cert_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclCredential {
    pub name: String,
    pub cert_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeclRoute {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz: Option<RouteAuthz>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<crate::config::UpstreamTls>,
}

fn declarative(st: &StoreState) -> Declarative {
    let sidecars: Vec<crate::config::SidecarConfig> =
        st.sidecars.iter().map(|s| s.spec.clone()).collect();
    let managed: Vec<String> = sidecars
        .iter()
        .filter(|s| s.issue.is_some())
        .map(|s| s.credential_name())
        .collect();
    let bundle_name = |id: &Option<String>| {
        id.as_deref()
            .and_then(|i| st.bundle(i))
            .map(|b| b.name.clone())
    };
    Declarative {
        bundles: st
            .bundles
            .iter()
            .map(|b| DeclBundle {
                name: b.name.clone(),
                require: b.require,
                pem: b.pem.clone(),
                crls: b.crls.as_ref().map(CrlsBody::from),
            })
            .collect(),
        domains: st
            .domains
            .iter()
            .map(|d| DeclDomain {
                hostname: d.hostname.clone(),
                bundle: bundle_name(&d.bundle_id),
                mtls: d.mtls.map(|m| m.to_string()),
                cert_pem: d.cert_pem.clone(),
                key_file: Some(format!("keys/{}.key", d.hostname)),
                key_pem: None,
            })
            .collect(),
        credentials: st
            .credentials
            .iter()
            .filter(|c| !managed.contains(&c.name))
            .map(|c| DeclCredential {
                name: c.name.clone(),
                cert_pem: c.cert_pem.clone(),
                key_file: Some(format!("keys/credential-{}.key", c.name)),
                key_pem: None,
            })
            .collect(),
        routes: st
            .routes
            .iter()
            .map(|r| DeclRoute {
                name: r.name.clone(),
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                upstream: r.upstream.clone(),
                strip_prefix: r.strip_prefix,
                credential: r
                    .credential_id
                    .as_deref()
                    .and_then(|id| st.credentials.iter().find(|c| c.id == id))
                    .map(|c| c.name.clone()),
                authz: r.authz.clone(),
                upstream_tls: r.upstream_tls.clone(),
            })
            .collect(),
        sidecars,
        policies: st
            .policies
            .iter()
            .map(|p| DeclPolicy {
                name: p.name.clone(),
                spec: p.spec.clone(),
            })
            .collect(),
        identities: st
            .identities
            .iter()
            .map(|i| DeclIdentity {
                name: i.name.clone(),
                fingerprint: i.fingerprint.clone(),
                token_sha256: i.token_sha256.clone(),
                policy: i
                    .policy_id
                    .as_deref()
                    .and_then(|id| st.policies.iter().find(|p| p.id == id))
                    .map(|p| p.name.clone()),
                active: i.active,
                expires_at: i.expires_at.clone(),
            })
            .collect(),
        global_rules: st.global_rules.clone().filter(|r| !r.is_empty()),
    }
}

#[utoipa::path(get, path = "/api/v1/export", tag = "config",
    responses((status = 200, description = "TOML: bundles, domains, credentials and routes; private keys are left out", content_type = "application/toml", body = String)))]
async fn export(State(app): State<Arc<App>>) -> Res<Response> {
    let st = state(&app).await?;
    let text = toml::to_string(&declarative(&st)).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
            "",
        )
    })?;
    Ok(([(http::header::CONTENT_TYPE, "application/toml")], text).into_response())
}

#[utoipa::path(post, path = "/api/v1/import", tag = "config",
    request_body(content = String, description = "TOML as produced by /api/v1/export, with key_pem (the CLI fills it from key_file) for new or re-keyed domains and credentials", content_type = "application/toml"),
    responses((status = 200, body = ImportReport), (status = 422, body = ErrorBody)))]
async fn import(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    text: String,
) -> Res<Json<ImportReport>> {
    let decl: Declarative = toml::from_str(&text).map_err(|e| {
        ApiError::invalid(
            "bad_import",
            format!("the import is not valid: {e}"),
            "start from `symbolon export`",
        )
    })?;
    for b in &decl.bundles {
        if let Ok(bundle) = parse_bundle(&b.pem) {
            app.prefetch_crls(b.crls.as_ref(), &bundle.certs).await?;
        }
    }
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    let mut report = ImportReport::default();
    let now = store::now();
    let mut bundle_ids = std::collections::HashMap::new();
    for b in &decl.bundles {
        check_name("bundle", &b.name)?;
        parse_bundle(&b.pem).map_err(|mut e| {
            e.message = format!("bundle '{}': {}", b.name, e.message);
            e
        })?;
        let crls = checked_crls(b.crls.as_ref())?;
        match st.bundles.iter().find(|x| x.name == b.name) {
            Some(x) if x.pem == b.pem && x.require == b.require && x.crls == crls => {
                report.unchanged.push(format!("bundle {}", b.name));
                bundle_ids.insert(b.name.clone(), x.id.clone());
            }
            Some(x) => {
                let row = BundleRow {
                    pem: b.pem.clone(),
                    require: b.require,
                    updated_at: now.clone(),
                    crls,
                    ..x.clone()
                };
                store::update_bundle(&mut ch.tx, &row).await?;
                bundle_ids.insert(b.name.clone(), x.id.clone());
                report.updated.push(format!("bundle {}", b.name));
            }
            None => {
                let row = BundleRow {
                    id: store::new_id(),
                    name: b.name.clone(),
                    pem: b.pem.clone(),
                    require: b.require,
                    created_at: now.clone(),
                    updated_at: now.clone(),
                    crls,
                };
                store::insert_bundle(&mut ch.tx, &row).await?;
                bundle_ids.insert(b.name.clone(), row.id.clone());
                report.created.push(format!("bundle {}", b.name));
            }
        }
    }
    let bundle_id = |name: &Option<String>| -> Res<Option<String>> {
        match name {
            None => Ok(None),
            Some(n) => bundle_ids
                .get(n)
                .cloned()
                .or_else(|| {
                    st.bundles
                        .iter()
                        .find(|b| &b.name == n)
                        .map(|b| b.id.clone())
                })
                .map(Some)
                .ok_or_else(|| ApiError::not_found("bundle", n)),
        }
    };
    for d in &decl.domains {
        let hostname = check_hostname(&d.hostname)?;
        let mtls = d.mtls.as_deref().map(check_mode).transpose()?;
        let existing = st.domains.iter().find(|x| x.hostname == hostname);
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
        let bid = bundle_id(&d.bundle)?;
        match existing {
            Some(x)
                if x.cert_pem == d.cert_pem
                    && x.key_pem == key_pem
                    && x.bundle_id == bid
                    && x.mtls == mtls =>
            {
                report.unchanged.push(format!("domain {hostname}"))
            }
            Some(x) => {
                let row = DomainRow {
                    cert_pem: d.cert_pem.clone(),
                    key_pem,
                    bundle_id: bid,
                    mtls,
                    updated_at: now.clone(),
                    ..x.clone()
                };
                store::upsert_domain(&mut ch.tx, &row, app.control.store().sealer()).await?;
                report.updated.push(format!("domain {hostname}"));
            }
            None => {
                let row = DomainRow {
                    id: store::new_id(),
                    hostname: hostname.clone(),
                    cert_pem: d.cert_pem.clone(),
                    key_pem,
                    bundle_id: bid,
                    mtls,
                    created_at: now.clone(),
                    updated_at: now.clone(),
                };
                store::upsert_domain(&mut ch.tx, &row, app.control.store().sealer()).await?;
                report.created.push(format!("domain {hostname}"));
            }
        }
    }
    let mut credential_ids = std::collections::HashMap::new();
    for c in &decl.credentials {
        check_name("credential", &c.name)?;
        let existing = st.credentials.iter().find(|x| x.name == c.name);
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
        match existing {
            Some(x) if x.cert_pem == c.cert_pem && x.key_pem == key_pem => {
                report.unchanged.push(format!("credential {}", c.name));
                credential_ids.insert(c.name.clone(), x.id.clone());
            }
            Some(x) => {
                let row = CredentialRow {
                    cert_pem: c.cert_pem.clone(),
                    key_pem,
                    ..x.clone()
                };
                store::update_credential(&mut ch.tx, &row, app.control.store().sealer()).await?;
                credential_ids.insert(c.name.clone(), x.id.clone());
                report.updated.push(format!("credential {}", c.name));
            }
            None => {
                let row = CredentialRow {
                    id: store::new_id(),
                    name: c.name.clone(),
                    cert_pem: c.cert_pem.clone(),
                    key_pem,
                    created_at: now.clone(),
                };
                store::insert_credential(&mut ch.tx, &row, app.control.store().sealer()).await?;
                credential_ids.insert(c.name.clone(), row.id.clone());
                report.created.push(format!("credential {}", c.name));
            }
        }
    }
    for r in &decl.routes {
        check_name("route", &r.name)?;
        let cid = match &r.credential {
            None => None,
            Some(n) => Some(
                credential_ids
                    .get(n)
                    .cloned()
                    .or_else(|| {
                        st.credentials
                            .iter()
                            .find(|c| &c.name == n)
                            .map(|c| c.id.clone())
                    })
                    .ok_or_else(|| ApiError::not_found("credential", n))?,
            ),
        };
        let existing = st.routes.iter().find(|x| x.name == r.name);
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
                .unwrap_or_else(|| now.clone()),
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
                report.unchanged.push(format!("route {}", r.name))
            }
            Some(_) => {
                store::upsert_route(&mut ch.tx, &row).await?;
                report.updated.push(format!("route {}", r.name));
            }
            None => {
                store::upsert_route(&mut ch.tx, &row).await?;
                report.created.push(format!("route {}", r.name));
            }
        }
    }
    super::sidecar_api::import_sidecars(&app, &mut ch, &st, &decl.sidecars, &mut report, &actor)
        .await?;
    import_authz(&mut ch, &st, &decl, &mut report, &now, &actor).await?;
    let detail = format!(
        "created {}, updated {}, unchanged {}",
        report.created.len(),
        report.updated.len(),
        report.unchanged.len()
    );
    super::commit(ch, &actor, "config.import", "declarative", &detail).await?;
    Ok(Json(report))
}

/// The authorization part of an import: policies, identities, gateway-wide rules.
async fn import_authz(
    ch: &mut Change<'_>,
    st: &StoreState,
    decl: &Declarative,
    report: &mut ImportReport,
    now: &str,
    actor: &Actor,
) -> Res<()> {
    use crate::store::{IdentityRow, PolicyRow};
    let mut policy_ids = std::collections::HashMap::new();
    for p in &decl.policies {
        check_name("policy", &p.name)?;
        p.spec.validate().map_err(|e| {
            ApiError::invalid(
                "bad_policy",
                format!("policy '{}': {e}", p.name),
                "see the PolicyBody schema",
            )
        })?;
        let spec = p.spec.clone();
        match st.policies.iter().find(|x| x.name == p.name) {
            Some(x) if x.spec == p.spec => {
                policy_ids.insert(p.name.clone(), x.id.clone());
                report.unchanged.push(format!("policy {}", p.name));
            }
            Some(x) => {
                let row = PolicyRow {
                    spec,
                    updated_at: now.to_string(),
                    ..x.clone()
                };
                store::upsert_policy(&mut ch.tx, &row).await?;
                policy_ids.insert(p.name.clone(), x.id.clone());
                report.updated.push(format!("policy {}", p.name));
            }
            None => {
                let row = PolicyRow {
                    id: store::new_id(),
                    name: p.name.clone(),
                    spec,
                    created_at: now.to_string(),
                    updated_at: now.to_string(),
                };
                store::upsert_policy(&mut ch.tx, &row).await?;
                policy_ids.insert(p.name.clone(), row.id.clone());
                report.created.push(format!("policy {}", p.name));
            }
        }
    }
    let by_name: std::collections::HashMap<&str, &IdentityRow> =
        st.identities.iter().map(|i| (i.name.as_str(), i)).collect();
    for i in &decl.identities {
        check_name("identity", &i.name)?;
        let policy_id = match &i.policy {
            None => None,
            Some(n) => Some(
                policy_ids
                    .get(n)
                    .cloned()
                    .or_else(|| {
                        st.policies
                            .iter()
                            .find(|p| &p.name == n)
                            .map(|p| p.id.clone())
                    })
                    .ok_or_else(|| ApiError::not_found("policy", n))?,
            ),
        };
        let fingerprint = i
            .fingerprint
            .as_ref()
            .map(|f| f.to_ascii_lowercase().replace(':', ""));
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
                .unwrap_or_else(|| now.to_string()),
            created_by: existing
                .and_then(|x| x.created_by.clone())
                .or_else(|| Some(actor.0.clone())),
        };
        match existing {
            Some(x)
                if x.fingerprint == row.fingerprint
                    && x.token_sha256 == row.token_sha256
                    && x.policy_id == row.policy_id
                    && x.active == row.active
                    && x.expires_at == row.expires_at =>
            {
                report.unchanged.push(format!("identity {}", i.name))
            }
            Some(_) => {
                store::upsert_identity(&mut ch.tx, &row).await?;
                report.updated.push(format!("identity {}", i.name));
            }
            None => {
                store::upsert_identity(&mut ch.tx, &row).await?;
                report.created.push(format!("identity {}", i.name));
            }
        }
    }
    let Some(rules) = &decl.global_rules else {
        return Ok(());
    };
    let rules: Vec<crate::authz::Rule> = rules
        .iter()
        .cloned()
        .map(crate::authz::Rule::normalised)
        .collect();
    for (n, r) in rules.iter().enumerate() {
        r.validate().map_err(|e| {
            ApiError::invalid(
                "bad_rule",
                format!("global_rules[{n}]: {e}"),
                "see the Rule schema",
            )
        })?;
    }
    let current: Vec<crate::authz::Rule> = st.global_rules.clone().unwrap_or_default();
    if current != rules {
        store::set_setting(
            &mut ch.tx,
            "global_rules",
            &serde_json::to_string(&rules).unwrap_or_default(),
        )
        .await?;
        report.updated.push("global rules".into());
    }
    Ok(())
}
