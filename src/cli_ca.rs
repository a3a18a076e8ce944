//! `symbolon ca …`: the built-in CA on its directory (no server needed).

use std::process::ExitCode;

use crate::ca::{self, Ca, Profile, Template};
use crate::cli::{CaCmd, CaDir};

const EXIT_USAGE: u8 = 64;

fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

fn lifetime(s: Option<&str>) -> Result<Option<time::Duration>, String> {
    s.map(|l| ca::parse_lifetime(l).map_err(|e| format!("--lifetime: {e}")))
        .transpose()
}

fn load(dir: &CaDir) -> Result<Ca, ExitCode> {
    let pass = ca::passphrase(dir.passphrase_file.as_deref()).map_err(|e| fail(e, EXIT_USAGE))?;
    Ca::load(&dir.dir, &pass).map_err(|e| fail(e, 1))
}

fn renew(
    url: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
    server_ca: &std::path::Path,
    rotate_key: bool,
) -> ExitCode {
    let Some(rest) = url.strip_prefix("https://") else {
        return fail(
            format!("--url '{url}' must start with https://"),
            EXIT_USAGE,
        );
    };
    let (hostport, path) = rest
        .split_once('/')
        .map_or((rest, String::new()), |(h, p)| (h, format!("/{p}")));
    let server = format!("https://{hostport}");
    let client = match crate::client::AdminClient::new(crate::client::ClientOptions {
        server: &server,
        cacert: server_ca,
        cert: Some(cert),
        key: Some(key),
        token: None,
    }) {
        Ok(c) => c,
        Err(e) => return fail(e, EXIT_USAGE),
    };
    // The CSR: the new key, or the current one.
    let key_pair = if rotate_key {
        rcgen::KeyPair::generate()
    } else {
        std::fs::read_to_string(key)
            .map_err(|e| rcgen::Error::PemError(e.to_string()))
            .and_then(|k| rcgen::KeyPair::from_pem(&k))
    };
    let key_pair = match key_pair {
        Ok(k) => k,
        Err(e) => return fail(format!("cannot use the key: {e}"), EXIT_USAGE),
    };
    let csr = match rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key_pair))
        .and_then(|c| c.pem())
    {
        Ok(c) => c,
        Err(e) => return fail(e, 1),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(e, 1),
    };
    let body = serde_json::json!({"csr_pem": csr}).to_string().into_bytes();
    let result = rt.block_on(client.call(
        http::Method::POST,
        &format!("{}/renew", path.trim_end_matches('/')),
        Some(("application/json", body)),
    ));
    let (status, bytes) = match result {
        Ok(r) => r,
        Err(e) => return fail(e, crate::cli::EXIT_UNAVAILABLE),
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        eprintln!(
            "error ({} {}): {}",
            status.as_u16(),
            v["error"]["code"].as_str().unwrap_or(""),
            v["error"]["message"].as_str().unwrap_or("")
        );
        return ExitCode::from(1);
    }
    let Some(pem) = v["certificate_pem"].as_str() else {
        return fail("the answer holds no certificate", 1);
    };
    if rotate_key {
        // Write the key first (0600, via a temporary file): a certificate without its key is useless.
        let tmp = key.with_extension("key.new");
        let _ = std::fs::remove_file(&tmp);
        if let Err(e) = crate::devinit::write_secret(&tmp, key_pair.serialize_pem().as_bytes()) {
            return fail(e, 1);
        }
        if let Err(e) = std::fs::rename(&tmp, key) {
            return fail(format!("{}: {e}", key.display()), 1);
        }
    }
    if let Err(e) = std::fs::write(cert, pem) {
        return fail(format!("{}: {e}", cert.display()), 1);
    }
    println!(
        "renewed: serial {}, valid until {}{}",
        v["serial"].as_str().unwrap_or(""),
        v["not_after"].as_str().unwrap_or(""),
        if rotate_key { " (new key)" } else { "" }
    );
    ExitCode::SUCCESS
}

/// Records an issued certificate and its audit entry in the data dir's store, when there is
/// one (so the gateway's list of issued certificates, its expiry watch and its audit log
/// include what the CLI issued). A certificate that cannot be recorded is not handed out.
fn record(
    data_dir: &std::path::Path,
    issued: &crate::ca::Issued,
    t: &Template,
    via: &str,
) -> Result<(), ExitCode> {
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
                let mut tx = store.begin().await.map_err(|e| e.to_string())?;
                crate::issuance::record(&mut tx, issued, t, &format!("cli:{user}"), via, None)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())
            })
        });
    match saved {
        Ok(()) => {
            eprintln!("recorded in {} (issued list and audit log)", db.display());
            Ok(())
        }
        Err(e) => Err(fail(
            format!(
                "the certificate was not recorded in {}, so it is not handed out: {e}",
                db.display()
            ),
            1,
        )),
    }
}

pub fn run(cmd: CaCmd, data_dir: &std::path::Path) -> ExitCode {
    match cmd {
        CaCmd::Renew {
            url,
            cert,
            key,
            server_ca,
            rotate_key,
        } => renew(&url, &cert, &key, &server_ca, rotate_key),
        CaCmd::Init {
            ca: dir,
            algorithm,
            root_key_out,
        } => {
            let pass = match ca::passphrase(dir.passphrase_file.as_deref()) {
                Ok(p) => p,
                Err(e) => return fail(e, EXIT_USAGE),
            };
            match ca::init(&dir.dir, &algorithm, &pass, root_key_out.as_deref()) {
                Ok(r) => {
                    println!("root CA:          {}", r.root_cert.display());
                    println!(
                        "root key:         {} (encrypted, 0600)",
                        r.root_key.display()
                    );
                    println!("intermediate CA:  {}", r.intermediate_cert.display());
                    println!(
                        "intermediate key: {} (encrypted, 0600)",
                        r.intermediate_key.display()
                    );
                    if root_key_out.is_some() {
                        println!("the root key is outside the CA directory: keep it offline");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e, 1),
            }
        }
        CaCmd::Sign {
            csr,
            ca: dir,
            profile: p,
            lifetime: l,
        } => {
            let (p, l) = match (p.parse::<Profile>(), lifetime(l.as_deref())) {
                (Ok(p), Ok(l)) => (p, l),
                (Err(e), _) | (_, Err(e)) => return fail(e, EXIT_USAGE),
            };
            let csr_pem = match std::fs::read_to_string(&csr) {
                Ok(t) => t,
                Err(e) => return fail(format!("cannot read {}: {e}", csr.display()), EXIT_USAGE),
            };
            let ca = match load(&dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let signed = ca::parse_csr(&csr_pem)
                .and_then(|csr| Ok((Template::from_csr(&csr, p, l)?, csr)))
                .and_then(|(t, csr)| Ok((ca.sign(&csr, &t)?, t)));
            match signed {
                Ok((issued, t)) => {
                    if let Err(code) = record(data_dir, &issued, &t, "cli-sign") {
                        return code;
                    }
                    print!("{}", issued.chain_pem);
                    eprintln!(
                        "issued serial {} to {}, {}",
                        issued.info.serial_hex,
                        issued.info.subject,
                        crate::explain::validity(
                            &issued.info,
                            time::OffsetDateTime::now_utc().unix_timestamp()
                        )
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e, 1),
            }
        }
        CaCmd::Issue {
            name,
            ca: dir,
            spiffe_id,
            dns,
            profile: p,
            lifetime: l,
            out_dir,
            p12_password,
        } => {
            let (p, l) = match (p.parse::<Profile>(), lifetime(l.as_deref())) {
                (Ok(p), Ok(l)) => (p, l),
                (Err(e), _) | (_, Err(e)) => return fail(e, EXIT_USAGE),
            };
            let ca = match load(&dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Some(id) = &spiffe_id
                && let Err(e) = ca::check_spiffe_id(id)
            {
                return fail(format!("--spiffe-id: {e}"), EXIT_USAGE);
            }
            let sans = crate::ca::Sans {
                dns,
                uris: spiffe_id.into_iter().collect(),
                ..Default::default()
            };
            let t = Template::common_name(&name, sans, p, l);
            let (issued, key) = match ca.issue(&t) {
                Ok(x) => x,
                Err(e) => return fail(e, 1),
            };
            if let Err(code) = record(data_dir, &issued, &t, "cli-issue") {
                return code;
            }
            let base = out_dir.join(&name);
            let cert_path = base.with_extension("pem");
            let key_path = base.with_extension("key");
            let p12_path = base.with_extension("p12");
            if let Err(e) = std::fs::write(&cert_path, &issued.chain_pem) {
                return fail(format!("{}: {e}", cert_path.display()), 1);
            }
            if let Err(e) = crate::devinit::write_secret(&key_path, key.serialize_pem().as_bytes())
            {
                return fail(e, 1);
            }
            let intermediate = crate::pki::parse_certs(issued.chain_pem.as_bytes(), &cert_path)
                .unwrap_or_default();
            let ca_der = intermediate
                .get(1)
                .map(|c| c.as_ref().to_vec())
                .unwrap_or_default();
            match crate::devinit::pkcs12_with(
                issued.der.as_ref(),
                &ca_der,
                &key.serialize_der(),
                &name,
                &p12_password,
            ) {
                Ok(p12) => {
                    if let Err(e) = crate::devinit::write_secret(&p12_path, &p12) {
                        return fail(e, 1);
                    }
                }
                Err(e) => return fail(e, 1),
            }
            println!(
                "{} ({}): {}",
                cert_path.display(),
                issued.info.subject,
                crate::explain::validity(
                    &issued.info,
                    time::OffsetDateTime::now_utc().unix_timestamp()
                )
            );
            println!("{} (0600)", key_path.display());
            println!("{} (0600, password '{p12_password}')", p12_path.display());
            ExitCode::SUCCESS
        }
    }
}
