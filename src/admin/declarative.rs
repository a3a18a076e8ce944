//! Export and import (`/api/v1/export`, `/api/v1/import`): everything the store holds as one
//! TOML document. Each resource module imports its own part (`import` there), in the order of
//! this file, inside one change.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bundles::CrlsBody;
use super::common::{Res, Resource, another_id, check_fingerprint, state};
use super::view::ErrorBody;
use super::{Actor, ApiError, App, Change};
use super::{bundles, credentials, domains, identities, policies, routes, rules, sidecars};
use crate::authz::RouteAuthz;
use crate::store::{self, StoreState};

#[derive(utoipa::OpenApi)]
#[openapi(paths(export, import), components(schemas(ImportReport)))]
pub(super) struct Doc;

pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/export", get(export))
        .route("/api/v1/import", post(import))
}

/// One import in progress: the change it writes in, the store as it was before, and what it
/// did so far. Each resource module's `import` adds its part.
pub(super) struct Import<'a> {
    pub app: &'a App,
    pub ch: Change<'a>,
    pub st: StoreState,
    pub report: ImportReport,
    /// The time of the import, for created_at and updated_at.
    pub now: String,
    pub actor: &'a Actor,
}

/// What an import did.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
}

/// The declarative form of everything the store holds (private keys left out: each domain and
/// credential names a `key_file` the importer reads, or keeps the key it already has).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
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
#[serde(from = "crate::authz::NamedSpec")]
pub struct DeclPolicy {
    pub name: String,
    #[serde(flatten)]
    pub spec: crate::authz::PolicySpec,
}

impl From<crate::authz::NamedSpec> for DeclPolicy {
    fn from(n: crate::authz::NamedSpec) -> Self {
        let (name, spec) = n.into_parts();
        Self { name, spec }
    }
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

impl Declarative {
    /// Each entry once: a second one with the same name would silently replace the first (a
    /// restricted policy by an open one, say), or fail the store's unique index.
    fn check_unique(&self) -> Res<()> {
        fn once<'a>(kind: &str, names: impl Iterator<Item = &'a str>) -> Res<()> {
            let mut seen = std::collections::HashSet::new();
            for n in names {
                if !seen.insert(n.to_string()) {
                    return Err(ApiError::invalid(
                        "bad_import",
                        format!("the import names {kind} '{n}' twice"),
                        "keep one entry per name",
                    ));
                }
            }
            Ok(())
        }
        once("bundle", self.bundles.iter().map(|b| b.name.as_str()))?;
        once("domain", self.domains.iter().map(|d| d.hostname.as_str()))?;
        once(
            "credential",
            self.credentials.iter().map(|c| c.name.as_str()),
        )?;
        once("route", self.routes.iter().map(|r| r.name.as_str()))?;
        once("sidecar", self.sidecars.iter().map(|s| s.name.as_str()))?;
        once("policy", self.policies.iter().map(|p| p.name.as_str()))?;
        once("identity", self.identities.iter().map(|i| i.name.as_str()))?;
        // Compared as stored: normalised (and checked) as the import of identities does.
        let fingerprints = self
            .identities
            .iter()
            .filter_map(|i| i.fingerprint.as_deref())
            .map(check_fingerprint)
            .collect::<Res<Vec<String>>>()?;
        once(
            "certificate fingerprint",
            fingerprints.iter().map(String::as_str),
        )
    }

    /// No name of the import is another object's id (lookups try ids first).
    fn check_not_ids(&self, st: &StoreState) -> Res<()> {
        fn none<'a, R: Resource>(rows: &[R], names: impl Iterator<Item = &'a str>) -> Res<()> {
            match names.into_iter().find(|n| another_id(rows, n)) {
                Some(n) => Err(ApiError::invalid(
                    "bad_import",
                    format!(
                        "the import names a {kind} '{n}', which is the id of another {kind}",
                        kind = R::KIND
                    ),
                    "choose another name",
                )),
                None => Ok(()),
            }
        }
        none(&st.bundles, self.bundles.iter().map(|b| b.name.as_str()))?;
        none(
            &st.domains,
            self.domains.iter().map(|d| d.hostname.as_str()),
        )?;
        none(
            &st.credentials,
            self.credentials.iter().map(|c| c.name.as_str()),
        )?;
        none(&st.routes, self.routes.iter().map(|r| r.name.as_str()))?;
        none(&st.policies, self.policies.iter().map(|p| p.name.as_str()))?;
        none(
            &st.identities,
            self.identities.iter().map(|i| i.name.as_str()),
        )
    }
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
    decl.check_unique()?;
    bundles::prefetch_for_import(&app, &decl.bundles).await?;
    let mut ch = super::begin(&app).await?;
    let st = ch.current().await?;
    decl.check_not_ids(&st)?;
    let mut imp = Import {
        app: &app,
        ch,
        st,
        report: ImportReport::default(),
        now: store::now(),
        actor: &actor,
    };
    let bundle_ids = bundles::import(&mut imp, &decl.bundles).await?;
    domains::import(&mut imp, &decl.domains, &bundle_ids).await?;
    let credential_ids = credentials::import(&mut imp, &decl.credentials).await?;
    routes::import(&mut imp, &decl.routes, &credential_ids).await?;
    sidecars::import(&mut imp, &decl.sidecars).await?;
    let policy_ids = policies::import(&mut imp, &decl.policies).await?;
    identities::import(&mut imp, &decl.identities, &policy_ids).await?;
    rules::import(&mut imp, decl.global_rules.as_deref()).await?;
    let Import { ch, report, .. } = imp;
    let detail = format!(
        "created {}, updated {}, unchanged {}",
        report.created.len(),
        report.updated.len(),
        report.unchanged.len()
    );
    super::commit(ch, &actor, "config.import", "declarative", &detail).await?;
    Ok(Json(report))
}
