//! The CLI's admin commands (`bundle`, `domain`, `credential`, `route`, `export`, `import`,
//! `audit`): each is one admin API call, printed as a table (or JSON with `--json`).
//! Exit codes: 0 success, 1 the API refused the request, 69 the API cannot be reached,
//! 64 a local problem (a file that cannot be read).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::cli::{
    ApiArgs, BundleCmd, Command, CredentialCmd, DomainCmd, EXIT_UNAVAILABLE, IdentityCmd,
    PolicyArgs, PolicyCmd, RouteCmd, RulesCmd, SidecarCmd, UpstreamTlsArgs,
};
use crate::client::{AdminClient, ClientError, ClientOptions};

const EXIT_USAGE: u8 = 64;

enum Out {
    /// Print this value as a table with these columns (or as JSON).
    Table(Value, &'static [&'static str]),
    /// Print this text as it is.
    Text(String),
    Done(String),
}

pub async fn run(command: Command, data_dir: &Path, api: &ApiArgs) -> ExitCode {
    match run_inner(command, data_dir, api).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => ExitCode::from(code),
    }
}

fn read(path: &Path) -> Result<String, u8> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", path.display());
        EXIT_USAGE
    })
}

fn default_server(data_dir: &Path) -> String {
    crate::config::Config::load(&data_dir.join(crate::devinit::CONFIG_FILE))
        .ok()
        .and_then(|c| c.admin)
        .map(|a| format!("https://{}", a.listen))
        .unwrap_or_else(|| "https://127.0.0.1:9443".into())
}

async fn run_inner(command: Command, data_dir: &Path, api: &ApiArgs) -> Result<(), u8> {
    let server = api
        .server
        .clone()
        .unwrap_or_else(|| default_server(data_dir));
    let cacert = api
        .admin_ca
        .clone()
        .unwrap_or_else(|| data_dir.join("ca.pem"));
    let cert = api
        .admin_cert
        .clone()
        .unwrap_or_else(|| data_dir.join("admin.pem"));
    let key = api
        .admin_key
        .clone()
        .unwrap_or_else(|| data_dir.join("admin.key"));
    let client = AdminClient::new(ClientOptions {
        server: &server,
        cacert: &cacert,
        cert: Some(&cert),
        key: Some(&key),
        token: api.api_token.clone(),
    })
    .map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    let c = Call { client: &client };
    const BUNDLE: &[&str] = &["id", "name", "require", "domains", "certificates"];
    const DOMAIN: &[&str] = &["id", "hostname", "bundle", "mtls", "certificate"];
    const CRED: &[&str] = &["id", "name", "subject", "issuer", "not_after"];
    const ROUTE: &[&str] = &[
        "id",
        "name",
        "host",
        "path_prefix",
        "upstream",
        "strip_prefix",
        "credential",
    ];
    const SIDECAR: &[&str] = &[
        "name",
        "source",
        "listening_on",
        "upstream",
        "presents",
        "rotation",
        "listen_error",
    ];
    const POLICY: &[&str] = &[
        "id",
        "name",
        "access",
        "rate_limit",
        "quota",
        "self_service",
    ];
    const RULE: &[&str] = &[
        "effect",
        "fingerprint",
        "ca_fingerprint",
        "cn",
        "o",
        "ou",
        "san_dns",
        "san_uri",
        "san_email",
        "spiffe_id",
        "spiffe_trust_domain",
        "issuer_cn",
    ];
    let out = match command {
        Command::Bundle(b) => match b {
            BundleCmd::Upload {
                name,
                file,
                require,
            } => {
                let pem = read(&file)?;
                Out::Table(
                    c.json(
                        Method::POST,
                        "/api/v1/mtls/bundles",
                        json!({"name": name, "pem": pem, "require": require}),
                    )
                    .await?,
                    BUNDLE,
                )
            }
            BundleCmd::List => Out::Table(c.get("/api/v1/mtls/bundles").await?, BUNDLE),
            BundleCmd::Show { id } => Out::Table(
                c.get(&format!("/api/v1/mtls/bundles/{}", enc(&id))).await?,
                BUNDLE,
            ),
            BundleCmd::Update { id, name, require } => Out::Table(
                c.json(
                    Method::PATCH,
                    &format!("/api/v1/mtls/bundles/{}", enc(&id)),
                    json!({"name": name, "require": require}),
                )
                .await?,
                BUNDLE,
            ),
            BundleCmd::Replace { id, file } => {
                let pem = read(&file)?;
                Out::Table(
                    c.json(
                        Method::PUT,
                        &format!("/api/v1/mtls/bundles/{}/pem", enc(&id)),
                        json!({"pem": pem}),
                    )
                    .await?,
                    BUNDLE,
                )
            }
            BundleCmd::Attach { id, domain } => Out::Table(
                c.json(
                    Method::POST,
                    &format!("/api/v1/mtls/bundles/{}/domains", enc(&id)),
                    json!({"domain": domain}),
                )
                .await?,
                BUNDLE,
            ),
            BundleCmd::Detach { id, domain } => Out::Table(
                c.send(
                    Method::DELETE,
                    &format!("/api/v1/mtls/bundles/{}/domains/{}", enc(&id), enc(&domain)),
                    None,
                )
                .await?,
                BUNDLE,
            ),
            BundleCmd::Delete { id } => c.delete("/api/v1/mtls/bundles", "bundle", &id).await?,
        },
        Command::Domain(d) => match d {
            DomainCmd::Create {
                hostname,
                cert,
                key,
                bundle,
                mtls,
            } => {
                let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
                Out::Table(
                    c.json(Method::POST, "/api/v1/domains", json!({"hostname": hostname, "cert_pem": cert_pem, "key_pem": key_pem, "bundle": bundle, "mtls": mtls})).await?,
                    DOMAIN,
                )
            }
            DomainCmd::List => Out::Table(c.get("/api/v1/domains").await?, DOMAIN),
            DomainCmd::Show { id } => Out::Table(
                c.get(&format!("/api/v1/domains/{}", enc(&id))).await?,
                DOMAIN,
            ),
            DomainCmd::Update {
                id,
                cert,
                key,
                bundle,
                mtls,
            } => {
                let cert_pem = cert.as_deref().map(read).transpose()?;
                let key_pem = key.as_deref().map(read).transpose()?;
                Out::Table(
                    c.json(Method::PATCH, &format!("/api/v1/domains/{}", enc(&id)), json!({"cert_pem": cert_pem, "key_pem": key_pem, "bundle": bundle, "mtls": mtls})).await?,
                    DOMAIN,
                )
            }
            DomainCmd::Delete { id } => c.delete("/api/v1/domains", "domain", &id).await?,
        },
        Command::Credential(cr) => match cr {
            CredentialCmd::Upload { cert, key, name } => {
                let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
                Out::Table(
                    c.json(
                        Method::POST,
                        "/api/v1/credentials",
                        json!({"name": name, "cert_pem": cert_pem, "key_pem": key_pem}),
                    )
                    .await?,
                    CRED,
                )
            }
            CredentialCmd::List => Out::Table(c.get("/api/v1/credentials").await?, CRED),
            CredentialCmd::Delete { id } => {
                c.delete("/api/v1/credentials", "credential", &id).await?
            }
        },
        Command::Route(r) => match r {
            RouteCmd::Create {
                name,
                upstream,
                host,
                path_prefix,
                strip_prefix,
                credential,
                authz,
                tls,
            } => {
                let authz = authz.as_deref().map(read_json).transpose()?;
                let upstream_tls = upstream_tls_body(&tls, None);
                Out::Table(
                    c.json(Method::POST, "/api/v1/routes", json!({"name": name, "upstream": upstream, "host": host, "path_prefix": path_prefix, "strip_prefix": strip_prefix, "credential": credential, "authz": authz, "upstream_tls": upstream_tls})).await?,
                    ROUTE,
                )
            }
            RouteCmd::List => Out::Table(c.get("/api/v1/routes").await?, ROUTE),
            RouteCmd::Show { id } => {
                Out::Table(c.get(&format!("/api/v1/routes/{}", enc(&id))).await?, ROUTE)
            }
            RouteCmd::Update {
                id,
                name,
                upstream,
                host,
                path_prefix,
                strip_prefix,
                credential,
                authz,
                tls,
            } => {
                let authz = authz.as_deref().map(read_json).transpose()?;
                // Only the TLS settings given change; the others are kept.
                let upstream_tls = if upstream_tls_body(&tls, None).is_some() {
                    let current = c.get(&format!("/api/v1/routes/{}", enc(&id))).await?;
                    upstream_tls_body(&tls, current.get("upstream_tls"))
                } else {
                    None
                };
                Out::Table(
                    c.json(Method::PATCH, &format!("/api/v1/routes/{}", enc(&id)), json!({"name": name, "upstream": upstream, "host": host, "path_prefix": path_prefix, "strip_prefix": strip_prefix, "credential": credential, "authz": authz, "upstream_tls": upstream_tls})).await?,
                    ROUTE,
                )
            }
            RouteCmd::Delete { id } => c.delete("/api/v1/routes", "route", &id).await?,
        },
        Command::Sidecar(sc) => match sc {
            SidecarCmd::Create {
                name,
                listen,
                upstream,
                tls,
                credential,
                common_name,
                spiffe_id,
                lifetime,
            } => {
                let mut upstream_tls = upstream_tls_body(&tls, None).unwrap_or_else(|| json!({}));
                if let Some(cred) = credential {
                    upstream_tls["credential"] = json!(cred);
                }
                let issue = common_name.map(
                    |cn| json!({"common_name": cn, "spiffe_id": spiffe_id, "lifetime": lifetime}),
                );
                let body = json!({"name": name, "listen": listen, "upstream": upstream,
                    "upstream_tls": upstream_tls, "issue": issue});
                Out::Table(
                    c.json(Method::POST, "/api/v1/sidecars", body).await?,
                    SIDECAR,
                )
            }
            SidecarCmd::List => Out::Table(c.get("/api/v1/sidecars").await?, SIDECAR),
            SidecarCmd::Show { name } => Out::Table(
                c.get(&format!("/api/v1/sidecars/{}", enc(&name))).await?,
                SIDECAR,
            ),
            SidecarCmd::Delete { name } => c.delete("/api/v1/sidecars", "sidecar", &name).await?,
            SidecarCmd::Rotate { name } => Out::Table(
                c.json(
                    Method::POST,
                    &format!("/api/v1/sidecars/{}/rotate", enc(&name)),
                    json!({}),
                )
                .await?,
                SIDECAR,
            ),
        },
        Command::Policy(p) => match p {
            PolicyCmd::Create { name, spec } => {
                let mut body = policy_body(&spec)?;
                body["name"] = json!(name);
                Out::Table(
                    c.json(Method::POST, "/api/v1/policies", body).await?,
                    POLICY,
                )
            }
            PolicyCmd::List => Out::Table(c.get("/api/v1/policies").await?, POLICY),
            PolicyCmd::Show { id } => Out::Table(
                c.get(&format!("/api/v1/policies/{}", enc(&id))).await?,
                POLICY,
            ),
            PolicyCmd::Update { id, name, spec } => {
                let mut body = policy_body(&spec)?;
                body["name"] = json!(name.unwrap_or_else(|| id.clone()));
                Out::Table(
                    c.json(Method::PUT, &format!("/api/v1/policies/{}", enc(&id)), body)
                        .await?,
                    POLICY,
                )
            }
            PolicyCmd::Delete { id } => c.delete("/api/v1/policies", "policy", &id).await?,
        },
        Command::Identity(i) => match i {
            IdentityCmd::Create {
                name,
                cert,
                fingerprint,
                with_token,
                policy,
                expires_at,
                inactive,
            } => {
                let pem = cert.as_deref().map(read).transpose()?;
                let v = c
                    .json(Method::POST, "/api/v1/identities", json!({"name": name, "certificate_pem": pem, "fingerprint": fingerprint, "token": with_token, "policy": policy, "expires_at": expires_at, "active": !inactive}))
                    .await?;
                identity_out(v)
            }
            IdentityCmd::List => Out::Table(c.get("/api/v1/identities").await?, IDENTITY),
            IdentityCmd::Show { id } => Out::Table(
                c.get(&format!("/api/v1/identities/{}", enc(&id))).await?,
                IDENTITY,
            ),
            IdentityCmd::Update {
                id,
                policy,
                active,
                expires_at,
                cert,
                rotate_token,
            } => {
                let pem = cert.as_deref().map(read).transpose()?;
                let v = c
                    .json(Method::PATCH, &format!("/api/v1/identities/{}", enc(&id)), json!({"policy": policy, "active": active, "expires_at": expires_at, "certificate_pem": pem, "rotate_token": rotate_token}))
                    .await?;
                identity_out(v)
            }
            IdentityCmd::Delete { id } => c.delete("/api/v1/identities", "identity", &id).await?,
            IdentityCmd::Usage { id } => Out::Table(
                c.get(&format!("/api/v1/identities/{}/usage", enc(&id)))
                    .await?,
                &[
                    "route",
                    "requests",
                    "status_2xx",
                    "status_3xx",
                    "status_4xx",
                    "status_5xx",
                    "bytes_in",
                    "bytes_out",
                    "last_seen",
                ],
            ),
        },
        Command::Rules(r) => match r {
            RulesCmd::Show => Out::Table(
                c.get("/api/v1/authz/global-rules").await?["rules"].clone(),
                RULE,
            ),
            RulesCmd::Set { file } => {
                let rules = read_json(&file)?;
                Out::Table(
                    c.json(
                        Method::PUT,
                        "/api/v1/authz/global-rules",
                        json!({"rules": rules}),
                    )
                    .await?["rules"]
                        .clone(),
                    RULE,
                )
            }
        },
        Command::Verify { cert, domain } => {
            let pem = read(&cert)?;
            let v = c
                .json(
                    Method::POST,
                    "/api/v1/verify",
                    json!({"certificate_pem": pem, "domain": domain}),
                )
                .await?;
            if api.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else if v["verified"] == true {
                println!(
                    "ACCEPTED by {} (mode {}): the chain verifies",
                    v["domain"].as_str().unwrap_or(""),
                    v["mode"].as_str().unwrap_or("")
                );
            } else {
                let reason = v["reason"].as_str().unwrap_or("");
                let what = if v["would_connect"] == true {
                    "CONNECTS BUT FAILS VERIFICATION"
                } else {
                    "REJECTED"
                };
                println!(
                    "{what} by {} (mode {}): {reason}",
                    v["domain"].as_str().unwrap_or(""),
                    v["mode"].as_str().unwrap_or("")
                );
            }
            return if v["verified"] == true {
                Ok(())
            } else {
                Err(1)
            };
        }
        Command::Revoke {
            cert,
            fingerprint,
            serial,
            issuer,
            reason,
        } => {
            let pem = cert.as_deref().map(read).transpose()?;
            let issuer_pem = issuer.as_deref().map(read).transpose()?;
            Out::Table(
                c.json(Method::POST, "/api/v1/revocations", json!({"certificate_pem": pem, "fingerprint": fingerprint, "serial": serial, "issuer_pem": issuer_pem, "reason": reason})).await?,
                REVOKED,
            )
        }
        Command::Revocations => Out::Table(c.get("/api/v1/revocations").await?, REVOKED),
        Command::TransitionReport => Out::Table(
            c.get("/api/v1/transition-report").await?,
            &[
                "domain",
                "route",
                "fingerprint",
                "subject",
                "reason",
                "count",
                "last_seen",
            ],
        ),
        Command::Export { output } => {
            let text = c.text("/api/v1/export").await?;
            match output {
                Some(path) => {
                    std::fs::write(&path, text).map_err(|e| {
                        eprintln!("error: cannot write {}: {e}", path.display());
                        EXIT_USAGE
                    })?;
                    Out::Done(format!("exported to {}", path.display()))
                }
                None => Out::Text(text),
            }
        }
        Command::Import { file } => {
            let text = inline_keys(&file)?;
            Out::Table(
                c.send(
                    Method::POST,
                    "/api/v1/import",
                    Some(("application/toml", text.into_bytes())),
                )
                .await?,
                &["created", "updated", "unchanged"],
            )
        }
        Command::Audit { limit } => Out::Table(
            c.get(&format!("/api/v1/audit?limit={limit}")).await?,
            &["at", "actor", "action", "target", "detail"],
        ),
        Command::Serve { .. } | Command::AdminToken { .. } | Command::Cert(_) | Command::Ca(_) => {
            return Ok(());
        }
    };
    match out {
        Out::Table(v, _) if api.json => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        Out::Table(v, cols) => print_table(&v, cols),
        Out::Text(t) => print!("{t}"),
        Out::Done(msg) if api.json => println!("{}", json!({"ok": true, "message": msg})),
        Out::Done(msg) => println!("{msg}"),
    }
    Ok(())
}

const REVOKED: &[&str] = &[
    "fingerprint",
    "serial",
    "issuer",
    "reason",
    "revoked_at",
    "subject",
];

const IDENTITY: &[&str] = &[
    "id",
    "name",
    "fingerprint",
    "has_token",
    "policy",
    "active",
    "expires_at",
];

/// Prints an identity; a new token goes to stdout once, with a warning on stderr.
fn identity_out(v: Value) -> Out {
    if let Some(t) = v["token"].as_str() {
        eprintln!("token (shown once; store it now): {t}");
    }
    Out::Table(v["identity"].clone(), IDENTITY)
}

fn read_json(path: &Path) -> Result<Value, u8> {
    serde_json::from_str(&read(path)?).map_err(|e| {
        eprintln!("error: {} is not valid JSON: {e}", path.display());
        EXIT_USAGE
    })
}

/// `N/PERIOD` → (N, PERIOD).
fn per(flag: &str, s: &str) -> Result<(u64, String), u8> {
    let parsed = s
        .split_once('/')
        .and_then(|(n, p)| Some((n.trim().parse::<u64>().ok()?, p.trim().to_string())));
    parsed.ok_or_else(|| {
        eprintln!("error: --{flag} '{s}' must look like 100/1m or 10000/day");
        EXIT_USAGE
    })
}

fn policy_body(a: &PolicyArgs) -> Result<Value, u8> {
    let mut body = json!({"self_service": a.self_service});
    if let Some(r) = &a.rate_limit {
        let (n, p) = per("rate-limit", r)?;
        body["rate_limit"] = json!({"requests": n, "per": p});
    }
    if let Some(q) = &a.quota {
        let (n, p) = per("quota", q)?;
        body["quota"] = json!({"requests": n, "period": p});
    }
    let access: Vec<Value> = a
        .access
        .iter()
        .map(|s| {
            let mut parts = s.splitn(3, ':');
            let route = parts.next().unwrap_or_default();
            let list = |p: Option<&str>| -> Vec<String> {
                p.map(|x| x.split(',').filter(|v| !v.is_empty()).map(str::to_string).collect())
                    .unwrap_or_default()
            };
            json!({"route": route, "methods": list(parts.next()), "path_prefixes": list(parts.next())})
        })
        .collect();
    body["access"] = json!(access);
    Ok(body)
}

/// Reads each `key_file` of an import file (relative to the file) into `key_pem`.
fn inline_keys(file: &Path) -> Result<String, u8> {
    let text = read(file)?;
    let mut doc: toml::Table = toml::from_str(&text).map_err(|e| {
        eprintln!("error: {} is not valid TOML: {e}", file.display());
        EXIT_USAGE
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    for section in ["domains", "credentials"] {
        let Some(toml::Value::Array(items)) = doc.get_mut(section) else {
            continue;
        };
        for item in items {
            let Some(t) = item.as_table_mut() else {
                continue;
            };
            let Some(kf) = t.remove("key_file") else {
                continue;
            };
            let path: PathBuf = base.join(kf.as_str().unwrap_or_default());
            if t.contains_key("key_pem") || !path.exists() {
                // A missing key file is fine when the key is already in the store.
                continue;
            }
            t.insert("key_pem".into(), toml::Value::String(read(&path)?));
        }
    }
    toml::to_string(&doc).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Call<'a> {
    client: &'a AdminClient,
}

impl Call<'_> {
    async fn get(&self, path: &str) -> Result<Value, u8> {
        self.send(Method::GET, path, None).await
    }

    /// `DELETE {collection}/{id}`, reported as "KIND ID deleted".
    async fn delete(&self, collection: &str, kind: &str, id: &str) -> Result<Out, u8> {
        self.send(Method::DELETE, &format!("{collection}/{}", enc(id)), None)
            .await?;
        Ok(Out::Done(format!("{kind} {id} deleted")))
    }

    async fn json(&self, method: Method, path: &str, body: Value) -> Result<Value, u8> {
        self.send(
            method,
            path,
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }

    async fn text(&self, path: &str) -> Result<String, u8> {
        let (status, body) = self.raw(Method::GET, path, None).await?;
        check(status, &body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, u8> {
        let (status, bytes) = self.raw(method, path, body).await?;
        check(status, &bytes)?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())))
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(StatusCode, bytes::Bytes), u8> {
        self.client.call(method, path, body).await.map_err(|e| {
            eprintln!("error: {e}");
            match e {
                ClientError::Connect { .. } => EXIT_UNAVAILABLE,
                ClientError::Setup(_) => EXIT_USAGE,
            }
        })
    }
}

fn check(status: StatusCode, body: &[u8]) -> Result<(), u8> {
    if status.is_success() {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = &v["error"];
    eprintln!(
        "error ({} {}): {}",
        status.as_u16(),
        e["code"].as_str().unwrap_or("unknown"),
        e["message"]
            .as_str()
            .unwrap_or(&String::from_utf8_lossy(body))
    );
    if let Some(h) = e["hint"].as_str().filter(|h| !h.is_empty()) {
        eprintln!("hint: {h}");
    }
    Err(1)
}

/// The `upstream_tls` object from CLI flags, merged over `current` (None when no flag is given
/// and there is nothing to merge). An empty value resets a setting.
fn upstream_tls_body(tls: &UpstreamTlsArgs, current: Option<&Value>) -> Option<Value> {
    if tls.upstream_trust_bundle.is_none()
        && tls.upstream_server_name.is_none()
        && tls.require_upstream_mtls.is_none()
    {
        return None;
    }
    let mut body = current
        .filter(|v| v.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut set = |key: &str, value: &Option<String>| {
        match value.as_deref() {
            Some("") => body[key] = Value::Null,
            Some(v) => body[key] = json!(v),
            None => {}
        };
    };
    set("trust_bundle", &tls.upstream_trust_bundle);
    set("server_name", &tls.upstream_server_name);
    if let Some(r) = tls.require_upstream_mtls {
        body["require_mtls"] = json!(r);
    }
    Some(body)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Object(o) => o
                    .get("subject")
                    .or_else(|| o.get("name"))
                    .map(cell)
                    .unwrap_or_else(|| i.to_string()),
                other => cell(other),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Object(o) => o
            .get("subject")
            .map(|s| {
                format!(
                    "{} (until {})",
                    cell(s),
                    o.get("not_after").map(cell).unwrap_or_default()
                )
            })
            .unwrap_or_else(|| v.to_string()),
        other => other.to_string(),
    }
}

fn print_table(v: &Value, cols: &[&str]) {
    let rows: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if cols.iter().all(|c| o.get(*c).is_some_and(Value::is_array)) => {
            // An import report: one row per column value.
            for c in cols {
                let items = o.get(*c).map(cell).unwrap_or_default();
                println!("{c}: {}", if items.is_empty() { "-".into() } else { items });
            }
            return;
        }
        other => vec![other],
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let c: String = c.chars().take(*w).collect();
                format!("{c:<w$}")
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(cols.iter().map(|c| c.to_uppercase()).collect()));
    for r in table {
        println!("{}", line(r));
    }
}
