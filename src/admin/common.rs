//! What the resource modules of the admin API share: the JSON body extractor, finding a row by
//! id or name, the list and get handlers of store-backed resources, and checks of names,
//! certificates and keys.

use std::path::Path;

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ApiError, App};
use crate::pki::{self, CertInfo};
use crate::store::StoreState;

pub(super) type Res<T> = Result<T, ApiError>;

/// A JSON request body. A body that is not JSON, does not fit `T` or is over the size limit is
/// refused with the admin API's error shape (400 `bad_request`, 413 `too_large`), before the
/// handler runs.
pub(super) struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(body) = Json::<T>::from_request(req, state).await?;
        Ok(Self(body))
    }
}

/// A resource kept in the store: found by id or name, listed and shown as its view.
pub(super) trait Resource: Sized {
    /// What the resource is called in messages ("no bundle with id or name …").
    const KIND: &'static str;
    /// Its table in the store.
    const TABLE: crate::store::Table;
    type View: Serialize;
    /// Its rows in the store.
    fn rows(st: &StoreState) -> &[Self];
    /// Its id and its name (host name for a domain).
    fn key(&self) -> (&str, &str);
    /// How it is shown in a response.
    fn view(&self, st: &StoreState) -> Self::View;
    /// Refuses to delete a row something still uses (409, naming the users).
    fn in_use(&self, _st: &StoreState) -> Res<()> {
        Ok(())
    }
}

/// The row with this id, else the one with this name.
pub(super) fn find<'a, R: Resource>(rows: &'a [R], key: &str) -> Option<&'a R> {
    rows.iter()
        .find(|r| r.key().0 == key)
        .or_else(|| rows.iter().find(|r| r.key().1 == key))
}

/// The row with this id or name, or 404.
/// Whether `name` is taken among `rows` (other than the row `except`): as a name, or as an id,
/// since lookups by id or name try ids first and a name equal to another row's id would reach
/// that row.
pub(super) fn taken<R: Resource>(rows: &[R], name: &str, except: Option<&str>) -> bool {
    rows.iter()
        .filter(|r| Some(r.key().0) != except)
        .any(|r| r.key().1 == name || r.key().0 == name)
}

/// Whether `name` is the id of a row named otherwise (an import may name existing rows, to
/// update them, but not reach one through its id).
pub(super) fn another_id<R: Resource>(rows: &[R], name: &str) -> bool {
    rows.iter().any(|r| r.key().0 == name && r.key().1 != name)
}

pub(super) fn lookup<'a, R: Resource>(rows: &'a [R], key: &str) -> Res<&'a R> {
    find(rows, key).ok_or_else(|| ApiError::not_found(R::KIND, key))
}

/// The store as it is now (outside a change).
pub(super) async fn state(app: &App) -> Res<StoreState> {
    Ok(app.control.store().state().await?)
}

/// GET on a collection: every row, as views.
pub(super) async fn list<R: Resource>(app: &App) -> Res<Json<Vec<R::View>>> {
    let st = state(app).await?;
    Ok(Json(R::rows(&st).iter().map(|r| r.view(&st)).collect()))
}

/// GET on an item, by id or name.
pub(super) async fn show<R: Resource>(app: &App, key: &str) -> Res<Json<R::View>> {
    let st = state(app).await?;
    Ok(Json(lookup(R::rows(&st), key)?.view(&st)))
}

/// 201 with the new resource.
/// The delete handler of a store-backed resource: refused while something uses the row, else
/// deleted and audited as `<kind>.delete`.
pub(super) async fn remove<R: Resource>(
    app: &App,
    actor: &super::Actor,
    key: &str,
) -> Res<StatusCode> {
    let mut ch = super::begin(app).await?;
    let st = ch.current().await?;
    let row = lookup(R::rows(&st), key)?;
    row.in_use(&st)?;
    let (id, name) = row.key();
    crate::store::delete_row(&mut ch.tx, R::TABLE, id).await?;
    let action = format!("{}.delete", R::KIND);
    super::commit(ch, actor, &action, name, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn created<T: Serialize>(t: T) -> Response {
    (StatusCode::CREATED, Json(t)).into_response()
}

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

/// Checks a certificate chain and its key; returns the leaf's facts.
pub(super) fn parse_cert_and_key(cert_pem: &str, key_pem: &str) -> Res<CertInfo> {
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

/// Refuses an upload that carries a private key.
pub(super) fn refuse_private_key(pem: &str) -> Res<()> {
    if pem.contains("PRIVATE KEY") {
        return Err(ApiError::invalid(
            "private_key_not_allowed",
            "certificate_pem contains a private key; only the public certificate may be uploaded",
            "send only the '-----BEGIN CERTIFICATE-----' block, and keep the key on the client (treat this key as exposed if it was sent anywhere)",
        ));
    }
    Ok(())
}

/// The first certificate of an uploaded public PEM, parsed.
pub(super) fn first_public_cert(
    pem: &str,
) -> Res<(rustls::pki_types::CertificateDer<'static>, CertInfo)> {
    refuse_private_key(pem)?;
    let certs = pki::parse_certs(pem.as_bytes(), Path::new("certificate_pem"))
        .map_err(|e| ApiError::pki("certificate_pem", e))?;
    let first = certs.first().ok_or_else(|| {
        ApiError::invalid(
            "malformed_pem",
            "certificate_pem is empty",
            "send a PEM certificate",
        )
    })?;
    let info = CertInfo::parse(first).map_err(|e| {
        ApiError::invalid(
            "malformed_pem",
            format!("certificate_pem: {e}"),
            "send a PEM certificate",
        )
    })?;
    Ok((first.clone(), info))
}

pub(super) fn check_fingerprint(fp: &str) -> Res<String> {
    let fp = fp.to_ascii_lowercase().replace(':', "");
    if fp.len() == 64 && fp.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(fp)
    } else {
        Err(ApiError::invalid(
            "bad_fingerprint",
            format!("'{fp}' is not a SHA-256 fingerprint"),
            "give 64 hex characters, as `openssl x509 -noout -fingerprint -sha256` prints them",
        ))
    }
}

/// A new token and its SHA-256 (hex).
pub(super) fn new_token() -> Res<(String, String)> {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the random number generator failed",
            "",
        )
    })?;
    let token = format!("sym_{}", pki::hex(&bytes));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    Ok((token, pki::hex(digest.as_ref())))
}
