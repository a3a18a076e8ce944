//! `symbolon export` and `symbolon import`: the store as TOML.

use std::path::{Path, PathBuf};

use http::Method;

use super::api::Api;
use super::{Exit, fail, read};

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    file: PathBuf,
}

pub async fn export(args: ExportArgs, api: &Api) -> Result<(), Exit> {
    let text = api.text("/api/v1/export").await?;
    match args.output {
        Some(path) => {
            std::fs::write(&path, text).map_err(|e| {
                fail(
                    format_args!("cannot write {}: {e}", path.display()),
                    Exit::Usage,
                )
            })?;
            api.done(&format!("exported to {}", path.display()));
        }
        None => out!("{text}"),
    }
    Ok(())
}

pub async fn import(args: ImportArgs, api: &Api) -> Result<(), Exit> {
    let text = inline_keys(&args.file)?;
    let body = Some(("application/toml", text.into_bytes()));
    let report = api.request(Method::POST, "/api/v1/import", body).await?;
    api.print(&report, &["created", "updated", "unchanged"]);
    Ok(())
}

/// Reads each `key_file` of an import file (relative to the file) into `key_pem`.
fn inline_keys(file: &Path) -> Result<String, Exit> {
    let text = read(file)?;
    let mut doc: toml::Table = toml::from_str(&text).map_err(|e| {
        fail(
            format_args!("{} is not valid TOML: {e}", file.display()),
            Exit::Usage,
        )
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
    toml::to_string(&doc).map_err(|e| fail(e, Exit::Usage))
}
