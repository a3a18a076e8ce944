//! `symbolon ca …`: the built-in CA on its directory (no server needed), and `ca renew`, which
//! asks a gateway's `builtin:ca` route over mTLS.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{Exit, fail, read};
use crate::ca::{self, Ca, Profile, Template};

/// Where the CA lives and how to open its key.
#[derive(Debug, clap::Args)]
pub struct CaDir {
    /// CA directory.
    #[arg(long = "ca-dir", default_value = "symbolon-data/ca")]
    pub dir: PathBuf,
    /// File holding the passphrase of the CA keys (else SYMBOLON_CA_PASSPHRASE).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// Create a root and an intermediate CA (keys 0600, encrypted with the passphrase).
    Init {
        #[command(flatten)]
        ca: CaDir,
        /// p256 (default), p384, ed25519 or rsa2048.
        #[arg(long, default_value = "p256")]
        algorithm: String,
        /// Write the root key here instead of the CA directory (an offline root: move it away).
        #[arg(long)]
        root_key_out: Option<PathBuf>,
    },
    /// Sign a CSR (PEM); prints the certificate chain.
    Sign {
        csr: PathBuf,
        #[command(flatten)]
        ca: CaDir,
        /// client (default), server or spiffe.
        #[arg(long, default_value = "client")]
        profile: String,
        /// e.g. 24h, 90d (default: 24h for client/spiffe, 90d for server; capped by the CA).
        #[arg(long)]
        lifetime: Option<String>,
    },
    /// Renew a certificate over mTLS at a gateway route with `upstream = "builtin:ca"`: writes
    /// the new certificate over --cert; with --rotate-key, a new key over --key as well.
    Renew {
        /// The route's URL, e.g. https://api.example.com/.well-known/ca
        #[arg(long)]
        url: String,
        /// The current certificate (PEM) and its key.
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        /// CA certificate(s) to trust for the gateway's server certificate.
        #[arg(long)]
        server_ca: PathBuf,
        /// Generate a new key for the renewed certificate.
        #[arg(long)]
        rotate_key: bool,
    },
    /// Generate a key and a certificate: writes NAME.pem, NAME.key (0600) and NAME.p12.
    Issue {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        ca: CaDir,
        #[arg(long)]
        spiffe_id: Option<String>,
        #[arg(long)]
        dns: Vec<String>,
        #[arg(long, default_value = "client")]
        profile: String,
        #[arg(long)]
        lifetime: Option<String>,
        /// Directory for the files (default: the current one).
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Password of the PKCS#12 file.
        #[arg(long, default_value = "symbolon")]
        p12_password: String,
    },
}

pub fn run(cmd: CaCmd, data_dir: &Path) -> Result<(), Exit> {
    match cmd {
        CaCmd::Init {
            ca: dir,
            algorithm,
            root_key_out,
        } => init(&dir, &algorithm, root_key_out.as_deref()),
        CaCmd::Sign {
            csr,
            ca: dir,
            profile,
            lifetime,
        } => sign(&csr, &dir, &profile, lifetime.as_deref(), data_dir),
        CaCmd::Renew {
            url,
            cert,
            key,
            server_ca,
            rotate_key,
        } => renew(&url, &cert, &key, &server_ca, rotate_key),
        CaCmd::Issue {
            name,
            ca: dir,
            spiffe_id,
            dns,
            profile,
            lifetime,
            out_dir,
            p12_password,
        } => {
            let (profile, lifetime) = profile_and_lifetime(&profile, lifetime.as_deref())?;
            let ca = load(&dir)?;
            if let Some(id) = &spiffe_id {
                ca::check_spiffe_id(id)
                    .map_err(|e| fail(format_args!("--spiffe-id: {e}"), Exit::Usage))?;
            }
            let sans = ca::Sans {
                dns,
                uris: spiffe_id.into_iter().collect(),
                ..Default::default()
            };
            let t = Template::common_name(&name, sans, profile, lifetime);
            issue(&ca, &t, &name, &out_dir, &p12_password, data_dir)
        }
    }
}

/// The `--profile` and `--lifetime` flags (EX_USAGE, the profile's error first).
fn profile_and_lifetime(
    profile: &str,
    lifetime: Option<&str>,
) -> Result<(Profile, Option<time::Duration>), Exit> {
    let lifetime = lifetime
        .map(|l| ca::parse_lifetime(l).map_err(|e| format!("--lifetime: {e}")))
        .transpose();
    match (profile.parse::<Profile>(), lifetime) {
        (Ok(p), Ok(l)) => Ok((p, l)),
        (Err(e), _) | (_, Err(e)) => Err(fail(e, Exit::Usage)),
    }
}

/// The CA, with its passphrase (EX_USAGE when there is none; 1 when the CA cannot be opened).
fn load(dir: &CaDir) -> Result<Ca, Exit> {
    let pass = ca::passphrase(dir.passphrase_file.as_deref()).map_err(|e| fail(e, Exit::Usage))?;
    Ca::load(&dir.dir, &pass).map_err(|e| fail(e, Exit::Failure))
}

fn init(dir: &CaDir, algorithm: &str, root_key_out: Option<&Path>) -> Result<(), Exit> {
    let pass = ca::passphrase(dir.passphrase_file.as_deref()).map_err(|e| fail(e, Exit::Usage))?;
    let r =
        ca::init(&dir.dir, algorithm, &pass, root_key_out).map_err(|e| fail(e, Exit::Failure))?;
    outln!("root CA:          {}", r.root_cert.display());
    outln!(
        "root key:         {} (encrypted, 0600)",
        r.root_key.display()
    );
    outln!("intermediate CA:  {}", r.intermediate_cert.display());
    outln!(
        "intermediate key: {} (encrypted, 0600)",
        r.intermediate_key.display()
    );
    if root_key_out.is_some() {
        outln!("the root key is outside the CA directory: keep it offline");
    }
    Ok(())
}

fn sign(
    csr: &Path,
    dir: &CaDir,
    profile: &str,
    lifetime: Option<&str>,
    data_dir: &Path,
) -> Result<(), Exit> {
    let (profile, lifetime) = profile_and_lifetime(profile, lifetime)?;
    let csr_pem = read(csr)?;
    let ca = load(dir)?;
    let (issued, t) = ca::parse_csr(&csr_pem)
        .and_then(|csr| Ok((Template::from_csr(&csr, profile, lifetime)?, csr)))
        .and_then(|(t, csr)| Ok((ca.sign(&csr, &t)?, t)))
        .map_err(|e| fail(e, Exit::Failure))?;
    record(data_dir, &issued, &t, "cli-sign")?;
    out!("{}", issued.chain_pem);
    eprintln!(
        "issued serial {} to {}, {}",
        issued.info.serial_hex,
        issued.info.subject,
        crate::explain::validity(&issued.info, now())
    );
    Ok(())
}

/// Issues, records, then writes NAME.pem, NAME.key and NAME.p12 into `out_dir`.
fn issue(
    ca: &Ca,
    t: &Template,
    name: &str,
    out_dir: &Path,
    p12_password: &str,
    data_dir: &Path,
) -> Result<(), Exit> {
    let (issued, key) = ca.issue(t).map_err(|e| fail(e, Exit::Failure))?;
    record(data_dir, &issued, t, "cli-issue")?;
    let base = out_dir.join(name);
    let cert_path = base.with_extension("pem");
    let key_path = base.with_extension("key");
    let p12_path = base.with_extension("p12");
    std::fs::write(&cert_path, &issued.chain_pem)
        .map_err(|e| fail(format_args!("{}: {e}", cert_path.display()), Exit::Failure))?;
    crate::devinit::write_secret(&key_path, key.serialize_pem().as_bytes())
        .map_err(|e| fail(e, Exit::Failure))?;
    let intermediate =
        crate::pki::parse_certs(issued.chain_pem.as_bytes(), &cert_path).unwrap_or_default();
    let ca_der = intermediate
        .get(1)
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let p12 = crate::devinit::pkcs12_with(
        issued.der.as_ref(),
        &ca_der,
        &key.serialize_der(),
        name,
        p12_password,
    )
    .map_err(|e| fail(e, Exit::Failure))?;
    crate::devinit::write_secret(&p12_path, &p12).map_err(|e| fail(e, Exit::Failure))?;
    outln!(
        "{} ({}): {}",
        cert_path.display(),
        issued.info.subject,
        crate::explain::validity(&issued.info, now())
    );
    outln!("{} (0600)", key_path.display());
    outln!("{} (0600, password '{p12_password}')", p12_path.display());
    Ok(())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Records an issued certificate and its audit entry in the data dir's store, when there is
/// one (so the gateway's list of issued certificates, its expiry watch and its audit log
/// include what the CLI issued). A certificate that cannot be recorded is not handed out.
fn record(data_dir: &Path, issued: &ca::Issued, t: &Template, via: &str) -> Result<(), Exit> {
    let db = data_dir.join("symbolon.db");
    if !db.exists() {
        eprintln!(
            "note: no store at {}: this issuance is not in an audit log (pass --data-dir to record it)",
            db.display()
        );
        return Ok(());
    }
    // Who ran it, as the environment says (letters, digits, '.', '_', '-' only).
    let user: String = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    let user = if user.is_empty() {
        "unknown".into()
    } else {
        user
    };
    let saved = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async {
                let store = crate::store::Store::open(&db)
                    .await
                    .map_err(|e| e.to_string())?;
                crate::control::issuance::record_offline(
                    &store,
                    issued,
                    t,
                    &format!("cli:{user}"),
                    via,
                )
                .await
                .map_err(|e| e.to_string())
            })
        });
    match saved {
        Ok(()) => {
            eprintln!("recorded in {} (issued list and audit log)", db.display());
            Ok(())
        }
        Err(e) => Err(fail(
            format_args!(
                "the certificate was not recorded in {}, so it is not handed out: {e}",
                db.display()
            ),
            Exit::Failure,
        )),
    }
}

/// `ca renew`: a CSR to `{url}/renew` over mTLS with the current certificate; the answer
/// replaces the certificate (and, with `rotate_key`, the key, written first).
fn renew(
    url: &str,
    cert: &Path,
    key: &Path,
    server_ca: &Path,
    rotate_key: bool,
) -> Result<(), Exit> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(fail(
            format_args!("--url '{url}' must start with https://"),
            Exit::Usage,
        ));
    };
    let (hostport, path) = rest
        .split_once('/')
        .map_or((rest, String::new()), |(h, p)| (h, format!("/{p}")));
    let server = format!("https://{hostport}");
    let client = crate::client::AdminClient::new(crate::client::ClientOptions {
        server: &server,
        cacert: server_ca,
        cert: Some(cert),
        key: Some(key),
        token: None,
    })
    .map_err(|e| fail(e, Exit::Usage))?;
    // The CSR: the new key, or the current one.
    let key_pair = if rotate_key {
        rcgen::KeyPair::generate()
    } else {
        std::fs::read_to_string(key)
            .map_err(|e| rcgen::Error::PemError(e.to_string()))
            .and_then(|k| rcgen::KeyPair::from_pem(&k))
    }
    .map_err(|e| fail(format_args!("cannot use the key: {e}"), Exit::Usage))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key_pair))
        .and_then(|c| c.pem())
        .map_err(|e| fail(e, Exit::Failure))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e, Exit::Failure))?;
    let body = serde_json::json!({"csr_pem": csr}).to_string().into_bytes();
    let (status, bytes) = rt
        .block_on(client.call(
            http::Method::POST,
            &format!("{}/renew", path.trim_end_matches('/')),
            Some(("application/json", body)),
        ))
        .map_err(|e| fail(e, Exit::Unavailable))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        eprintln!(
            "error ({} {}): {}",
            status.as_u16(),
            v["error"]["code"].as_str().unwrap_or(""),
            v["error"]["message"].as_str().unwrap_or("")
        );
        return Err(Exit::Failure);
    }
    let Some(pem) = v["certificate_pem"].as_str() else {
        return Err(fail("the answer holds no certificate", Exit::Failure));
    };
    if rotate_key {
        // Write the key first (0600, via a temporary file): a certificate without its key is useless.
        let tmp = key.with_extension("key.new");
        let _ = std::fs::remove_file(&tmp);
        crate::devinit::write_secret(&tmp, key_pair.serialize_pem().as_bytes())
            .map_err(|e| fail(e, Exit::Failure))?;
        std::fs::rename(&tmp, key)
            .map_err(|e| fail(format_args!("{}: {e}", key.display()), Exit::Failure))?;
    }
    std::fs::write(cert, pem)
        .map_err(|e| fail(format_args!("{}: {e}", cert.display()), Exit::Failure))?;
    outln!(
        "renewed: serial {}, valid until {}{}",
        v["serial"].as_str().unwrap_or(""),
        v["not_after"].as_str().unwrap_or(""),
        if rotate_key { " (new key)" } else { "" }
    );
    Ok(())
}
