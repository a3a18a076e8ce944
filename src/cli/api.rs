//! What the admin commands share: the admin API client built from [`ApiArgs`], calls that map
//! a refusal to [`Exit::Failure`] (with the API's reason and hint on stderr), and output as a
//! table or, with `--json`, as JSON.
//!
//! A command is "build the request, call, print": [`Api::list`], [`Api::show`],
//! [`Api::create`], [`Api::update`], [`Api::delete`] for a [`Resource`], [`Api::send`] for
//! anything else.

use std::path::Path;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{ApiArgs, Exit, fail, read, table};
use crate::client::{AdminClient, ClientError, ClientOptions};

/// A collection of the admin API: its path, what one item is called, its table columns.
pub struct Resource {
    pub path: &'static str,
    pub kind: &'static str,
    pub columns: &'static [&'static str],
}

impl Resource {
    /// The path of one item.
    pub fn item(&self, id: &str) -> String {
        format!("{}/{}", self.path, enc(id))
    }
}

pub struct Api {
    client: AdminClient,
    json: bool,
}

impl Api {
    /// The client, from the flags or the data dir's defaults (a setup error is EX_USAGE).
    pub fn connect(data_dir: &Path, args: &ApiArgs) -> Result<Self, Exit> {
        let server = args
            .server
            .clone()
            .unwrap_or_else(|| default_server(data_dir));
        let file = |flag: &Option<std::path::PathBuf>, name: &str| {
            flag.clone().unwrap_or_else(|| data_dir.join(name))
        };
        let cacert = file(&args.admin_ca, "ca.pem");
        let cert = file(&args.admin_cert, "admin.pem");
        let key = file(&args.admin_key, "admin.key");
        let client = AdminClient::new(ClientOptions {
            server: &server,
            cacert: &cacert,
            cert: Some(&cert),
            key: Some(&key),
            token: args.api_token.clone(),
        })
        .map_err(|e| fail(e, Exit::Usage))?;
        Ok(Self {
            client,
            json: args.json,
        })
    }

    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// `GET {path}` and print the answer with these columns.
    pub async fn list(&self, r: &Resource) -> Result<(), Exit> {
        self.print(&self.get(r.path).await?, r.columns);
        Ok(())
    }

    /// `GET {path}/{id}` and print it.
    pub async fn show(&self, r: &Resource, id: &str) -> Result<(), Exit> {
        self.print(&self.get(&r.item(id)).await?, r.columns);
        Ok(())
    }

    /// `POST {path}` with a JSON body, and print what was created.
    pub async fn create(&self, r: &Resource, body: Value) -> Result<(), Exit> {
        self.send(Method::POST, r.path, Some(body), r.columns).await
    }

    /// `PATCH` or `PUT {path}/{id}` with a JSON body, and print the result.
    pub async fn update(
        &self,
        r: &Resource,
        method: Method,
        id: &str,
        body: Value,
    ) -> Result<(), Exit> {
        self.send(method, &r.item(id), Some(body), r.columns).await
    }

    /// `DELETE {path}/{id}`, reported as "KIND ID deleted".
    pub async fn delete(&self, r: &Resource, id: &str) -> Result<(), Exit> {
        self.request(Method::DELETE, &r.item(id), None).await?;
        self.done(&format!("{} {id} deleted", r.kind));
        Ok(())
    }

    /// Any call with an optional JSON body; prints the answer with these columns.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        columns: &[&str],
    ) -> Result<(), Exit> {
        self.print(&self.call(method, path, body).await?, columns);
        Ok(())
    }

    pub async fn get(&self, path: &str) -> Result<Value, Exit> {
        self.call(Method::GET, path, None).await
    }

    /// A call with an optional JSON body; returns the answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Exit> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.request(method, path, body).await
    }

    /// `GET {path}` for a body that is not JSON.
    pub async fn text(&self, path: &str) -> Result<String, Exit> {
        let (status, body) = self.raw(Method::GET, path, None).await?;
        check(status, &body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// A call with a body of any content type; the answer as JSON (a string if it is not).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Value, Exit> {
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
    ) -> Result<(StatusCode, bytes::Bytes), Exit> {
        self.client
            .call(method, path, body)
            .await
            .map_err(|e| match e {
                ClientError::Connect { .. } => fail(e, Exit::Unavailable),
                ClientError::Setup(_) => fail(e, Exit::Usage),
            })
    }

    /// Prints a value as a table with these columns, or as JSON.
    pub fn print(&self, v: &Value, columns: &[&str]) {
        if self.json {
            print_json(v);
        } else {
            table::print(v, columns);
        }
    }

    /// Prints that something was done, as a line or as `{"ok": true, "message": …}`.
    pub fn done(&self, msg: &str) {
        if self.json {
            outln!("{}", json!({"ok": true, "message": msg}));
        } else {
            outln!("{msg}");
        }
    }
}

/// A request body of the admin API's own types as the JSON it sends.
pub fn body<T: serde::Serialize>(request: &T) -> Value {
    serde_json::to_value(request).unwrap_or_default()
}

/// Reads a JSON file as the admin API type `T`; a file that is not one is a usage error.
pub fn read_as<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Exit> {
    let v = read_json(path)?;
    serde_json::from_value(v)
        .map_err(|e| super::fail(format_args!("{}: {e}", path.display()), Exit::Usage))
}

pub fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A refusal: "error (STATUS CODE): message" and the hint, if any, on stderr.
fn check(status: StatusCode, body: &[u8]) -> Result<(), Exit> {
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
    Err(Exit::Failure)
}

fn default_server(data_dir: &Path) -> String {
    crate::config::Config::load(&data_dir.join(crate::devinit::CONFIG_FILE))
        .ok()
        .and_then(|c| c.admin)
        .map(|a| format!("https://{}", a.listen))
        .unwrap_or_else(|| "https://127.0.0.1:9443".into())
}

/// A file holding JSON (EX_USAGE when it cannot be read or parsed).
pub fn read_json(path: &Path) -> Result<Value, Exit> {
    serde_json::from_str(&read(path)?).map_err(|e| {
        fail(
            format_args!("{} is not valid JSON: {e}", path.display()),
            Exit::Usage,
        )
    })
}

/// Percent-encodes a path segment.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
