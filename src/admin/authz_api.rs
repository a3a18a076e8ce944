//! Admin API beyond the core resources: authorization (policies, identities with usage,
//! gateway-wide rules, the transition report, self-service enrollment) and the certificate
//! lifecycle (verify/explain, revocations, expiry list, and the built-in CA's sign, enrollment
//! tokens and issued list). The core resources (bundles, domains, credentials, routes, audit,
//! export/import) are in `api.rs`.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::api::{check_name, find, json_or};
use super::{Actor, ApiError, App};
use crate::authz::{PolicySpec, Rule, TransitionEntry, Usage};
use crate::store::{self, IdentityRow, PolicyRow, StoreState, Table};

type Res<T> = Result<T, ApiError>;
type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

pub(super) fn routes(r: Router<Arc<App>>) -> Router<Arc<App>> {
    r.route("/api/v1/policies", get(list_policies).post(create_policy))
        .route(
            "/api/v1/policies/{id}",
            get(get_policy).put(replace_policy).delete(delete_policy),
        )
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
        .route("/api/v1/self-service/identities", post(self_service))
        .route(
            "/api/v1/self-service/challenge",
            post(self_service_challenge),
        )
        .route(
            "/api/v1/authz/global-rules",
            get(get_global_rules).put(put_global_rules),
        )
        .route("/api/v1/transition-report", get(transition_report))
        .route("/api/v1/verify", post(verify))
        .route("/api/v1/revocations", get(list_revocations).post(revoke))
        .route("/api/v1/expiring", get(expiring))
        .route("/api/v1/ca/sign", post(ca_sign))
        .route(
            "/api/v1/ca/enrollment-tokens",
            get(list_enrollment_tokens).post(ca_enrollment_token),
        )
        .route(
            "/api/v1/ca/enrollment-tokens/{id}",
            axum::routing::delete(delete_enrollment_token),
        )
        .route("/api/v1/ca/issued", get(ca_issued))
}

fn the_ca(app: &App) -> Res<Arc<crate::ca::Ca>> {
    app.control.ca().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_ca",
            "this gateway has no built-in CA",
            "run `symbolon ca init` and add a [ca] section to the config",
        )
    })
}

fn lifetime(s: Option<&str>) -> Res<Option<time::Duration>> {
    s.map(|l| {
        crate::ca::parse_lifetime(l)
            .map_err(|e| ApiError::invalid("bad_duration", e, crate::config::LIFETIME.describe()))
    })
    .transpose()
}

fn profile(s: Option<&str>) -> Res<crate::ca::Profile> {
    s.unwrap_or("client")
        .parse()
        .map_err(|e: String| ApiError::invalid("bad_profile", e, "client, server or spiffe"))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SignBody {
    /// PEM certificate signing request.
    pub csr_pem: String,
    /// client (default), server or spiffe.
    pub profile: Option<String>,
    /// e.g. 24h; default by profile; capped by the CA's own expiry.
    pub lifetime: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignedView {
    /// The certificate followed by the intermediate.
    pub certificate_pem: String,
    pub serial: String,
    pub not_after: String,
}

#[utoipa::path(post, path = "/api/v1/ca/sign", tag = "ca", request_body = SignBody,
    responses((status = 200, body = SignedView), (status = 404), (status = 422)))]
pub(super) async fn ca_sign(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<SignBody>,
) -> Res<Json<SignedView>> {
    let req = json_or(body)?;
    let ca = the_ca(&app)?;
    let p = profile(req.profile.as_deref())?;
    let l = lifetime(req.lifetime.as_deref())?;
    let issued = crate::control::issuance::sign(&app.control, &ca, &actor.0, &req.csr_pem, p, l)
        .await
        .map_err(ApiError::issuance)?;
    Ok(Json(SignedView {
        certificate_pem: issued.chain_pem,
        serial: issued.info.serial_hex.clone(),
        not_after: crate::pki::rfc3339(issued.info.not_after),
    }))
}

/// An enrollment token buys exactly one identity, fixed here: the certificate's subject is
/// `CN=<common_name>` (default: the token's name), its SANs are the names listed, and a CSR
/// asking for anything else is refused without spending the token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentTokenBody {
    /// What the token is for (shown in the audit log).
    pub name: String,
    /// The certificate's common name; default: `name`.
    pub common_name: Option<String>,
    /// DNS names the certificate carries.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// IP addresses the certificate carries.
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// Email addresses the certificate carries.
    #[serde(default)]
    pub emails: Vec<String>,
    /// A SPIFFE ID, or a pattern ending in `/*` (the CSR names one path segment there).
    pub spiffe_id: Option<String>,
    /// Profile of the certificate it buys; default client (spiffe when spiffe_id is set).
    pub profile: Option<String>,
    /// Lifetime of the certificate it buys (1s to 3650d); default by profile.
    pub lifetime: Option<String>,
    /// How long the token stays valid (1s to 90d); default 24h.
    pub expires_in: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentToken {
    /// Single use; shown once.
    pub token: String,
    pub expires_at: String,
    /// What the token buys.
    pub grant: crate::ca::Grant,
}

#[utoipa::path(post, path = "/api/v1/ca/enrollment-tokens", tag = "ca", request_body = EnrollmentTokenBody,
    responses((status = 201, body = EnrollmentToken), (status = 404), (status = 422)))]
pub(super) async fn ca_enrollment_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<EnrollmentTokenBody>,
) -> Res<Response> {
    let req = json_or(body)?;
    the_ca(&app)?;
    check_name("enrollment token", &req.name)?;
    let p = match (req.profile.as_deref(), &req.spiffe_id) {
        (None, Some(_)) => crate::ca::Profile::Spiffe,
        (given, _) => profile(given)?,
    };
    let range = crate::config::TOKEN_EXPIRES_IN;
    let valid = range
        .parse(req.expires_in.as_deref().unwrap_or("24h"))
        .map_err(|e| ApiError::invalid("bad_duration", e, range.describe()))?;
    let cert_lifetime = lifetime(req.lifetime.as_deref())?.unwrap_or(p.default_lifetime());
    let mut ip_addresses = Vec::new();
    for ip in &req.ip_addresses {
        ip_addresses.push(ip.parse().map_err(|_| {
            ApiError::invalid(
                "bad_grant",
                format!("ip_addresses: '{ip}' is not an IP address"),
                "for example 10.0.0.7 or 2001:db8::7",
            )
        })?);
    }
    let grant = crate::ca::Grant {
        common_name: req.common_name.clone().unwrap_or_else(|| req.name.clone()),
        dns_names: req.dns_names,
        ip_addresses,
        emails: req.emails,
        spiffe_id: req.spiffe_id,
        profile: p,
        lifetime_secs: cert_lifetime.whole_seconds(),
    };
    grant.validate().map_err(|e| {
        ApiError::invalid(
            "bad_grant",
            e,
            "see EnrollmentTokenBody in the OpenAPI document",
        )
    })?;
    let (token, sha) = new_token()?;
    let expires_at = crate::pki::unix_now() + valid.as_secs() as i64;
    let grant_json = serde_json::to_string(&grant).unwrap_or_default();
    let mut ch = super::begin(&app).await?;
    store::insert_enroll_token(
        &mut ch.tx,
        &sha,
        &req.name,
        p.name(),
        &grant_json,
        expires_at,
    )
    .await
    .map_err(store::StoreError::from)?;
    super::commit(ch, &actor, "ca.enrollment_token", &req.name, &grant_json).await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentToken {
            token,
            expires_at: crate::pki::rfc3339(expires_at),
            grant,
        }),
    )
        .into_response())
}

/// An enrollment token as listed: never the token itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentTokenView {
    /// The first 16 hex characters of the token's SHA-256 (for DELETE).
    pub id: String,
    pub name: String,
    pub expires_at: String,
    /// When it was spent, if it was.
    pub used_at: Option<String>,
    /// What it buys (absent for tokens made before grants existed: CN=name only).
    pub grant: Option<crate::ca::Grant>,
}

#[utoipa::path(get, path = "/api/v1/ca/enrollment-tokens", tag = "ca",
    responses((status = 200, body = [EnrollmentTokenView])))]
pub(super) async fn list_enrollment_tokens(
    State(app): State<Arc<App>>,
) -> Res<Json<Vec<EnrollmentTokenView>>> {
    let rows = app.control.store().enroll_tokens().await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| EnrollmentTokenView {
                id: r.token_sha256.chars().take(16).collect(),
                name: r.name,
                expires_at: crate::pki::rfc3339(r.expires_at),
                used_at: r.used_at,
                grant: r.grant_json.and_then(|j| serde_json::from_str(&j).ok()),
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/ca/enrollment-tokens/{id}", tag = "ca",
    params(("id" = String, Path, description = "the id from the list")),
    responses((status = 204), (status = 404)))]
pub(super) async fn delete_enrollment_token(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    let id = id.to_ascii_lowercase();
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("enrollment token", &id));
    }
    let mut ch = super::begin(&app).await?;
    if !store::delete_enroll_token(&mut ch.tx, &id).await? {
        return Err(ApiError::not_found("enrollment token", &id));
    }
    super::commit(ch, &actor, "ca.enrollment_token.delete", &id, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/ca/issued", tag = "ca", responses((status = 200, body = [store::IssuedRow])))]
pub(super) async fn ca_issued(State(app): State<Arc<App>>) -> Res<Json<Vec<store::IssuedRow>>> {
    Ok(Json(app.control.store().issued().await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ExpiringQuery {
    /// How far ahead to look: `30d` (default), `12h`…
    pub within: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/expiring", tag = "lifecycle", params(ExpiringQuery),
    responses((status = 200, description = "Certificates expiring within the window (expired ones included), soonest first", body = [crate::expiry::KnownCert]), (status = 422)))]
pub(super) async fn expiring(
    State(app): State<Arc<App>>,
    axum::extract::Query(q): axum::extract::Query<ExpiringQuery>,
) -> Res<Json<Vec<crate::expiry::KnownCert>>> {
    let within = q.within.as_deref().unwrap_or("30d");
    let range = crate::config::EXPIRING_WITHIN;
    let secs = range
        .parse(within)
        .map_err(|e| ApiError::invalid("bad_duration", e, range.describe()))?
        .as_secs() as i64;
    let now = crate::pki::unix_now();
    let snapshot = app.control.shared().snapshot();
    Ok(Json(app.control.shared().expiry.expiring(
        &snapshot.known_certs,
        now,
        secs,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RevokeBody {
    /// The certificate to revoke (public PEM), or
    pub certificate_pem: Option<String>,
    /// its SHA-256 fingerprint, or
    pub fingerprint: Option<String>,
    /// its serial number (hex), which is revoked for one issuer only: the CA in `issuer_pem`,
    /// or the built-in CA when that is not given.
    pub serial: Option<String>,
    /// With `serial`: the issuing CA's certificate (public PEM).
    pub issuer_pem: Option<String>,
    /// RFC 5280 reason name; default `unspecified`.
    pub reason: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/revocations", tag = "revocation", responses((status = 200, body = [store::RevocationRow])))]
pub(super) async fn list_revocations(
    State(app): State<Arc<App>>,
) -> Res<Json<Vec<store::RevocationRow>>> {
    Ok(Json(app.control.store().state().await?.revocations))
}

#[utoipa::path(post, path = "/api/v1/revocations", tag = "revocation", request_body = RevokeBody,
    responses((status = 201, description = "Revoked: new handshakes, resumed sessions and open connections refuse it at once", body = store::RevocationRow), (status = 409), (status = 422)))]
pub(super) async fn revoke(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<RevokeBody>,
) -> Res<Response> {
    let req = json_or(body)?;
    let reason = req.reason.unwrap_or_else(|| "unspecified".into());
    if !crate::revocation::REASONS.contains(&reason.as_str()) {
        return Err(ApiError::invalid(
            "bad_reason",
            format!("'{reason}' is not a revocation reason"),
            format!("use one of {}", crate::revocation::REASONS.join(", ")),
        ));
    }
    let (fingerprint, serial, issuer, subject) = match (
        &req.certificate_pem,
        &req.fingerprint,
        &req.serial,
    ) {
        (Some(pem), None, None) => {
            // Any certificate, CA certificates (intermediates) included: revoked by its
            // fingerprint, which names exactly one certificate whoever issued it.
            let (first, info) = first_public_cert(pem)?;
            // A certificate the built-in CA signed is also listed by serial (with this
            // CA as its issuer), so it goes on the CRL.
            let (serial, issuer) = match &app.control.ca() {
                Some(ca) if ca.signed(&first) => (
                    Some(crate::revocation::normalize_serial(&info.serial_hex)),
                    Some(ca.issuer_key()),
                ),
                _ => (None, None),
            };
            (
                Some(info.fingerprint_sha256),
                serial,
                issuer,
                Some(info.subject),
            )
        }
        (None, Some(fp), None) => (Some(check_fingerprint(fp)?), None, None, None),
        (None, None, Some(serial)) => {
            let s = crate::revocation::normalize_serial(serial);
            if s == "0" && !serial.chars().any(|c| c.is_ascii_hexdigit()) {
                return Err(ApiError::invalid(
                    "bad_serial",
                    format!("'{serial}' is not a serial number"),
                    "give it in hex, as `openssl x509 -noout -serial` prints it",
                ));
            }
            let issuer = match (&req.issuer_pem, &app.control.ca()) {
                (Some(pem), _) => issuer_key_of(pem)?,
                (None, Some(ca)) => ca.issuer_key(),
                (None, None) => {
                    return Err(ApiError::invalid(
                        "issuer_required",
                        "a serial number names a certificate only together with its issuer, and there is no built-in CA to default to",
                        "add issuer_pem (the issuing CA's certificate), or revoke by certificate_pem or fingerprint",
                    ));
                }
            };
            (None, Some(s), Some(issuer), None)
        }
        _ => {
            return Err(ApiError::invalid(
                "one_identifier",
                "give exactly one of certificate_pem, fingerprint or serial",
                "revoke one certificate per request",
            ));
        }
    };
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    if st.revocations.iter().any(|r| {
        (fingerprint.is_some() && r.fingerprint == fingerprint)
            || (serial.is_some() && r.serial == serial && r.issuer == issuer)
    }) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_revoked",
            "this certificate is already revoked",
            "list revocations with GET /api/v1/revocations",
        ));
    }
    let row = store::RevocationRow {
        id: store::new_id(),
        fingerprint,
        serial,
        reason,
        revoked_at: store::now(),
        subject,
        issuer,
    };
    store::insert_revocation(&mut ch.tx, &row).await?;
    // The renewals descended from a certificate of the built-in CA go with it.
    let ours = app.control.ca().map(|ca| ca.issuer_key());
    let record = match (&row.fingerprint, &row.serial) {
        (Some(fp), _) => store::issued_by_fingerprint(&mut ch.tx, fp).await?,
        (None, Some(serial)) if row.issuer.is_some() && row.issuer == ours => {
            store::issued_by_serial(&mut ch.tx, serial).await?
        }
        _ => None,
    };
    let mut detail = row.reason.clone();
    if let Some(record) = record {
        let descendants = crate::control::issuance::descendants(&mut ch.tx, &record.serial).await?;
        let mut revoked = 0;
        for d in &descendants {
            if st.revocations.iter().any(|r| {
                r.fingerprint.as_deref() == Some(d.fingerprint.as_str())
                    || (r.serial.as_deref() == Some(d.serial.as_str()) && r.issuer == ours)
            }) {
                continue;
            }
            store::insert_revocation(
                &mut ch.tx,
                &store::RevocationRow {
                    id: store::new_id(),
                    fingerprint: Some(d.fingerprint.clone()),
                    serial: Some(d.serial.clone()),
                    reason: row.reason.clone(),
                    revoked_at: row.revoked_at.clone(),
                    subject: Some(d.subject.clone()),
                    issuer: ours.clone(),
                },
            )
            .await?;
            revoked += 1;
        }
        if revoked > 0 {
            detail = format!(
                "{}; and {revoked} renewal(s) descended from serial {}",
                row.reason, record.serial
            );
        }
    }
    let target = row
        .fingerprint
        .clone()
        .or(row.serial.clone())
        .unwrap_or_default();
    super::commit(ch, &actor, "certificate.revoke", &target, &detail).await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyBody {
    /// The client certificate, followed by the intermediates it would send (PEM, no key).
    pub certificate_pem: String,
    /// Host name of the domain to check against.
    pub domain: String,
}

#[utoipa::path(post, path = "/api/v1/verify", tag = "authz", request_body = VerifyBody,
    responses((status = 200, description = "Whether the domain would accept the certificate, and why not", body = crate::explain::Explanation), (status = 404), (status = 422)))]
pub(super) async fn verify(
    State(app): State<Arc<App>>,
    body: Body<VerifyBody>,
) -> Res<Json<crate::explain::Explanation>> {
    let req = json_or(body)?;
    if req.certificate_pem.contains("PRIVATE KEY") {
        return Err(ApiError::invalid(
            "private_key_not_allowed",
            "certificate_pem contains a private key",
            "send only the certificates",
        ));
    }
    let chain =
        crate::pki::parse_certs(req.certificate_pem.as_bytes(), Path::new("certificate_pem"))
            .map_err(|e| ApiError::pki("certificate_pem", e))?;
    let snapshot = app.control.shared().snapshot();
    let host = req.domain.trim().to_ascii_lowercase();
    let domain = snapshot
        .domain_for_host(&host)
        .ok_or_else(|| ApiError::not_found("domain", &host))?;
    crate::explain::explain(domain, &chain, rustls::pki_types::UnixTime::now())
        .map(Json)
        .map_err(|e| ApiError::invalid("malformed_pem", e, "send a PEM certificate"))
}

/// A policy: access rights, rate limit and quota for the identities that use it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub spec: PolicySpec,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PolicyBody {
    pub name: String,
    #[serde(flatten)]
    pub spec: PolicySpec,
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

#[derive(Debug, Deserialize, ToSchema)]
pub struct IdentityCreate {
    pub name: String,
    /// The client's public certificate (PEM). A PEM that contains a private key is refused.
    pub certificate_pem: Option<String>,
    /// Or the certificate's SHA-256 fingerprint (hex).
    pub fingerprint: Option<String>,
    /// Also create a token for this identity (returned once).
    #[serde(default)]
    pub token: bool,
    /// Policy id or name.
    pub policy: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
    /// RFC 3339.
    pub expires_at: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct IdentityUpdate {
    /// Policy id or name; "" removes it.
    pub policy: Option<String>,
    pub active: Option<bool>,
    /// RFC 3339; "" removes the expiry.
    pub expires_at: Option<String>,
    /// Bind to another certificate (public PEM).
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

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GlobalRules {
    /// Rules applied to every route before its own (see the evaluation order).
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SelfServiceBody {
    pub name: String,
    /// The client's public certificate (PEM).
    pub certificate_pem: String,
    /// A policy marked `self_service`.
    pub policy: String,
    /// A challenge from `POST /api/v1/self-service/challenge`.
    #[serde(default)]
    pub challenge: String,
    /// Base64 signature of the challenge by the certificate's key (SHA-256; ECDSA, RSA
    /// PKCS#1 v1.5 or PSS, Ed25519).
    #[serde(default)]
    pub signature: String,
}

fn policy_key(p: &PolicyRow) -> (&str, &str) {
    (&p.id, &p.name)
}
fn identity_key(i: &IdentityRow) -> (&str, &str) {
    (&i.id, &i.name)
}

fn policy_view(p: &PolicyRow) -> PolicyView {
    PolicyView {
        id: p.id.clone(),
        name: p.name.clone(),
        spec: p.spec.clone(),
        created_at: p.created_at.clone(),
        updated_at: p.updated_at.clone(),
    }
}

fn identity_view(i: &IdentityRow, st: &StoreState) -> IdentityView {
    IdentityView {
        id: i.id.clone(),
        name: i.name.clone(),
        fingerprint: i.fingerprint.clone(),
        has_token: i.token_sha256.is_some(),
        policy: i
            .policy_id
            .as_deref()
            .and_then(|id| st.policies.iter().find(|p| p.id == id))
            .map(|p| p.name.clone()),
        active: i.active,
        expires_at: i.expires_at.clone(),
        created_at: i.created_at.clone(),
    }
}

/// The fingerprint of a public certificate. A PEM with a private key is refused: a client must
/// never send its key anywhere.
/// Refuses an upload that carries a private key.
fn refuse_private_key(pem: &str) -> Res<()> {
    if pem.contains("PRIVATE KEY") {
        return Err(ApiError::invalid(
            "private_key_not_allowed",
            "certificate_pem contains a private key; only the public certificate may be uploaded",
            "send only the '-----BEGIN CERTIFICATE-----' block, and keep the key on the client (treat this key as exposed if it was sent anywhere)",
        ));
    }
    Ok(())
}

/// The issuer key (SHA-256 of the SubjectPublicKeyInfo) of a CA certificate given as PEM.
fn issuer_key_of(pem: &str) -> Res<String> {
    refuse_private_key(pem)?;
    let certs = crate::pki::parse_certs(pem.as_bytes(), Path::new("issuer_pem"))
        .map_err(|e| ApiError::pki("issuer_pem", e))?;
    let first = certs.first().and_then(|c| {
        crate::pki::CertInfo::parse(c)
            .ok()
            .filter(|i| i.is_ca)
            .and(crate::tls::verify::spki_key(c))
    });
    first.ok_or_else(|| {
        ApiError::invalid(
            "issuer_not_ca",
            "issuer_pem is not a CA certificate",
            "give the certificate of the CA that issued the serial (basicConstraints cA=TRUE)",
        )
    })
}

/// The first certificate of an uploaded public PEM, parsed.
fn first_public_cert(
    pem: &str,
) -> Res<(
    rustls::pki_types::CertificateDer<'static>,
    crate::pki::CertInfo,
)> {
    refuse_private_key(pem)?;
    let certs = crate::pki::parse_certs(pem.as_bytes(), Path::new("certificate_pem"))
        .map_err(|e| ApiError::pki("certificate_pem", e))?;
    let first = certs.first().ok_or_else(|| {
        ApiError::invalid(
            "malformed_pem",
            "certificate_pem is empty",
            "send a PEM certificate",
        )
    })?;
    let info = crate::pki::CertInfo::parse(first).map_err(|e| {
        ApiError::invalid(
            "malformed_pem",
            format!("certificate_pem: {e}"),
            "send a PEM certificate",
        )
    })?;
    Ok((first.clone(), info))
}

pub(super) fn public_cert_fingerprint(pem: &str) -> Res<String> {
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

fn check_fingerprint(fp: &str) -> Res<String> {
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

/// A new token and its SHA-256 (hex).
fn new_token() -> Res<(String, String)> {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the random number generator failed",
            "",
        )
    })?;
    let token = format!("sym_{}", crate::pki::hex(&bytes));
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    Ok((token, crate::pki::hex(digest.as_ref())))
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

// === policies ===

#[utoipa::path(get, path = "/api/v1/policies", tag = "authz", responses((status = 200, body = [PolicyView])))]
pub(super) async fn list_policies(State(app): State<Arc<App>>) -> Res<Json<Vec<PolicyView>>> {
    let st = app.control.store().state().await?;
    Ok(Json(st.policies.iter().map(policy_view).collect()))
}

#[utoipa::path(post, path = "/api/v1/policies", tag = "authz", request_body = PolicyBody,
    responses((status = 201, body = PolicyView), (status = 409), (status = 422)))]
pub(super) async fn create_policy(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<PolicyBody>,
) -> Res<Response> {
    let req = json_or(body)?;
    check_name("policy", &req.name)?;
    req.spec
        .validate()
        .map_err(|e| ApiError::invalid("bad_policy", e, "see the PolicyBody schema"))?;
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    if st.policies.iter().any(|p| p.name == req.name) {
        return Err(ApiError::duplicate("policy", &req.name));
    }
    let now = store::now();
    let spec = serde_json::to_string(&req.spec).unwrap_or_default();
    let row = PolicyRow {
        id: store::new_id(),
        name: req.name,
        spec: req.spec,
        created_at: now.clone(),
        updated_at: now,
    };
    store::upsert_policy(&mut ch.tx, &row).await?;
    super::commit(ch, &actor, "policy.create", &row.name, &spec).await?;
    Ok((StatusCode::CREATED, Json(policy_view(&row))).into_response())
}

#[utoipa::path(get, path = "/api/v1/policies/{id}", tag = "authz", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = PolicyView), (status = 404)))]
pub(super) async fn get_policy(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<PolicyView>> {
    let st = app.control.store().state().await?;
    let p =
        find(&st.policies, &id, policy_key).ok_or_else(|| ApiError::not_found("policy", &id))?;
    Ok(Json(policy_view(p)))
}

#[utoipa::path(put, path = "/api/v1/policies/{id}", tag = "authz", request_body = PolicyBody, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = PolicyView), (status = 404), (status = 422)))]
pub(super) async fn replace_policy(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    body: Body<PolicyBody>,
) -> Res<Json<PolicyView>> {
    let req = json_or(body)?;
    check_name("policy", &req.name)?;
    req.spec
        .validate()
        .map_err(|e| ApiError::invalid("bad_policy", e, "see the PolicyBody schema"))?;
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    let mut row = find(&st.policies, &id, policy_key)
        .ok_or_else(|| ApiError::not_found("policy", &id))?
        .clone();
    if st
        .policies
        .iter()
        .any(|p| p.name == req.name && p.id != row.id)
    {
        return Err(ApiError::duplicate("policy", &req.name));
    }
    row.name = req.name;
    let spec = serde_json::to_string(&req.spec).unwrap_or_default();
    row.spec = req.spec;
    row.updated_at = store::now();
    store::upsert_policy(&mut ch.tx, &row).await?;
    super::commit(ch, &actor, "policy.update", &row.name, &spec).await?;
    Ok(Json(policy_view(&row)))
}

#[utoipa::path(delete, path = "/api/v1/policies/{id}", tag = "authz", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404), (status = 409)))]
pub(super) async fn delete_policy(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    let p = find(&st.policies, &id, policy_key)
        .ok_or_else(|| ApiError::not_found("policy", &id))?
        .clone();
    let users: Vec<&str> = st
        .identities
        .iter()
        .filter(|i| i.policy_id.as_deref() == Some(&p.id))
        .map(|i| i.name.as_str())
        .take(5)
        .collect();
    if !users.is_empty() {
        return Err(ApiError::in_use(
            format!(
                "policy '{}' is used by identities {}",
                p.name,
                users.join(", ")
            ),
            "move those identities to another policy first",
        ));
    }
    store::delete_row(&mut ch.tx, Table::Policies, &p.id).await?;
    super::commit(ch, &actor, "policy.delete", &p.name, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

// === identities ===

#[utoipa::path(get, path = "/api/v1/identities", tag = "authz", responses((status = 200, body = [IdentityView])))]
pub(super) async fn list_identities(State(app): State<Arc<App>>) -> Res<Json<Vec<IdentityView>>> {
    let st = app.control.store().state().await?;
    Ok(Json(
        st.identities
            .iter()
            .map(|i| identity_view(i, &st))
            .collect(),
    ))
}

/// Who creates an identity: an admin, or a self-service token (which must prove that it
/// holds the certificate's key, may not learn the names of other identities, and may create
/// only so many).
enum Creator {
    Admin,
    SelfService { max_identities: usize },
}

async fn insert_identity(
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
    if st.identities.iter().any(|i| i.name == req.name) {
        return Err(ApiError::duplicate("identity", &req.name));
    }
    if let Some(fp) = &fingerprint {
        conflict_on_fingerprint(&st, fp, "", !self_service)?;
    }
    let policy_id = match &req.policy {
        Some(k) => {
            let found = find(&st.policies, k, policy_key);
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
    let st = app.control.store().state().await?;
    Ok((
        StatusCode::CREATED,
        Json(IdentityCreated {
            identity: identity_view(&row, &st),
            token,
        }),
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/v1/identities", tag = "authz", request_body = IdentityCreate,
    responses((status = 201, body = IdentityCreated), (status = 409), (status = 422)))]
pub(super) async fn create_identity(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<IdentityCreate>,
) -> Res<Response> {
    let req = json_or(body)?;
    insert_identity(&app, &actor, req, "identity.create", Creator::Admin).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Challenge {
    /// Sign these exact bytes with the certificate's key, e.g.
    /// `printf %s "$CHALLENGE" | openssl dgst -sha256 -sign client.key | base64 -w0`
    /// (Ed25519: `openssl pkeyutl -sign -rawin`). Single use.
    pub challenge: String,
    pub expires_at: String,
}

#[utoipa::path(post, path = "/api/v1/self-service/challenge", tag = "authz",
    responses((status = 201, body = Challenge), (status = 429)))]
pub(super) async fn self_service_challenge(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
) -> Res<Response> {
    let (challenge, expires_at) = app.challenges.issue(&actor.0).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_challenges",
            "too many challenges are outstanding",
            "use the challenges you have (they expire after 5 minutes)",
        )
    })?;
    Ok((
        StatusCode::CREATED,
        Json(Challenge {
            challenge,
            expires_at: crate::pki::rfc3339(expires_at),
        }),
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/v1/self-service/identities", tag = "authz", request_body = SelfServiceBody,
    responses((status = 201, body = IdentityCreated), (status = 403), (status = 409), (status = 422)))]
pub(super) async fn self_service(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<SelfServiceBody>,
) -> Res<Response> {
    let req = json_or(body)?;
    // Proof of possession: the certificate's key signed a challenge this gateway gave to this
    // caller (single use, 5 minutes).
    let fresh = app.challenges.take(&actor.0, &req.challenge);
    let (der, info) = first_public_cert(&req.certificate_pem)?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(req.signature.trim())
        .unwrap_or_default();
    if !fresh || !crate::pki::made_by_key_of(&der, req.challenge.as_bytes(), &signature) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "proof_of_possession",
            "the signature does not prove that you hold the certificate's key (or the challenge is unknown, used or expired)",
            "POST /api/v1/self-service/challenge, sign the challenge with the certificate's key (`printf %s \"$CHALLENGE\" | openssl dgst -sha256 -sign client.key | base64 -w0`), and send it as signature within 5 minutes",
        ));
    }
    let now = crate::pki::unix_now();
    if info.not_after <= now || info.not_before > now {
        return Err(ApiError::invalid(
            "certificate_not_current",
            "the certificate is expired or not valid yet",
            "bind a current certificate",
        ));
    }
    let max_identities = app.max_identities(&actor.0);
    // Self-service names live in the token's own namespace (`NAME@TOKEN`): a caller can
    // neither take an admin's name nor learn which names exist outside its namespace.
    check_name("identity", &req.name)?;
    if req.name.contains('@') {
        return Err(ApiError::invalid(
            "bad_name",
            "a self-service identity name may not contain '@'",
            "use letters, digits, '-', '_' or '.'; the gateway adds @<token name>",
        ));
    }
    let namespace = match (
        actor.0.strip_prefix("token:"),
        actor.0.strip_prefix("cert:"),
    ) {
        (Some(token), _) => token.to_string(),
        (None, Some(fp)) => format!("cert-{}", fp.get(..16).unwrap_or(fp)),
        _ => actor.0.replace(':', "-"),
    };
    let create = IdentityCreate {
        name: format!("{}@{namespace}", req.name),
        certificate_pem: Some(req.certificate_pem),
        fingerprint: None,
        token: false,
        policy: Some(req.policy),
        active: true,
        expires_at: None,
    };
    insert_identity(
        &app,
        &actor,
        create,
        "identity.self_service",
        Creator::SelfService { max_identities },
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/identities/{id}", tag = "authz", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = IdentityView), (status = 404)))]
pub(super) async fn get_identity(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<IdentityView>> {
    let st = app.control.store().state().await?;
    let i = find(&st.identities, &id, identity_key)
        .ok_or_else(|| ApiError::not_found("identity", &id))?;
    Ok(Json(identity_view(i, &st)))
}

#[utoipa::path(patch, path = "/api/v1/identities/{id}", tag = "authz", request_body = IdentityUpdate, params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = IdentityCreated), (status = 404), (status = 422)))]
pub(super) async fn update_identity(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
    body: Body<IdentityUpdate>,
) -> Res<Json<IdentityCreated>> {
    let req = json_or(body)?;
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    let mut row = find(&st.identities, &id, identity_key)
        .ok_or_else(|| ApiError::not_found("identity", &id))?
        .clone();
    let mut what = Vec::new();
    if let Some(p) = req.policy {
        row.policy_id = if p.is_empty() {
            None
        } else {
            Some(
                find(&st.policies, &p, policy_key)
                    .ok_or_else(|| ApiError::not_found("policy", &p))?
                    .id
                    .clone(),
            )
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
    let st = app.control.store().state().await?;
    Ok(Json(IdentityCreated {
        identity: identity_view(&row, &st),
        token,
    }))
}

#[utoipa::path(delete, path = "/api/v1/identities/{id}", tag = "authz", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404)))]
pub(super) async fn delete_identity(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    UrlPath(id): UrlPath<String>,
) -> Res<StatusCode> {
    let mut ch = super::begin(&app).await?;
    let st = store::load_all(&mut ch.tx).await?;
    let i = find(&st.identities, &id, identity_key)
        .ok_or_else(|| ApiError::not_found("identity", &id))?
        .clone();
    store::delete_row(&mut ch.tx, Table::Identities, &i.id).await?;
    super::commit(ch, &actor, "identity.delete", &i.name, "").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/identities/{id}/usage", tag = "authz", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = [Usage]), (status = 404)))]
pub(super) async fn identity_usage(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> Res<Json<Vec<Usage>>> {
    let st = app.control.store().state().await?;
    let i = find(&st.identities, &id, identity_key)
        .ok_or_else(|| ApiError::not_found("identity", &id))?;
    Ok(Json(app.control.shared().authz.usage(&i.id)))
}

// === gateway-wide rules, transition report ===

#[utoipa::path(get, path = "/api/v1/authz/global-rules", tag = "authz", responses((status = 200, body = GlobalRules)))]
pub(super) async fn get_global_rules(State(app): State<Arc<App>>) -> Res<Json<GlobalRules>> {
    let st = app.control.store().state().await?;
    let rules = st.global_rules.unwrap_or_default();
    Ok(Json(GlobalRules { rules }))
}

#[utoipa::path(put, path = "/api/v1/authz/global-rules", tag = "authz", request_body = GlobalRules,
    responses((status = 200, body = GlobalRules), (status = 422)))]
pub(super) async fn put_global_rules(
    State(app): State<Arc<App>>,
    Extension(actor): Extension<Actor>,
    body: Body<GlobalRules>,
) -> Res<Json<GlobalRules>> {
    let req = json_or(body)?;
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

#[utoipa::path(get, path = "/api/v1/transition-report", tag = "authz",
    responses((status = 200, description = "Client certificates that would be rejected if enforcement were switched on, most frequent first", body = [TransitionEntry])))]
pub(super) async fn transition_report(
    State(app): State<Arc<App>>,
) -> Res<Json<Vec<TransitionEntry>>> {
    Ok(Json(app.control.shared().authz.transition_report()))
}
