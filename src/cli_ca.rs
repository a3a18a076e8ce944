//! `symbolon ca …`: the built-in CA on its directory (no server needed).

use std::process::ExitCode;

use crate::ca::{self, Ca, Profile};
use crate::cli::{CaCmd, CaDir};

const EXIT_USAGE: u8 = 64;

fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(code)
}

fn profile(s: &str) -> Result<Profile, String> {
    match s {
        "client" => Ok(Profile::Client),
        "server" => Ok(Profile::Server),
        "spiffe" => Ok(Profile::Spiffe),
        other => Err(format!(
            "profile '{other}' must be client, server or spiffe"
        )),
    }
}

fn lifetime(s: Option<&str>) -> Result<Option<time::Duration>, String> {
    s.map(|l| {
        crate::config::parse_duration(l)
            .map(|d| time::Duration::seconds(d.as_secs() as i64))
            .map_err(|e| format!("--lifetime: {e}"))
    })
    .transpose()
}

fn load(dir: &CaDir) -> Result<Ca, ExitCode> {
    let pass = ca::passphrase(dir.passphrase_file.as_deref()).map_err(|e| fail(e, EXIT_USAGE))?;
    Ca::load(&dir.dir, &pass).map_err(|e| fail(e, 1))
}

pub fn run(cmd: CaCmd) -> ExitCode {
    match cmd {
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
            let (p, l) = match (profile(&p), lifetime(l.as_deref())) {
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
            match ca.sign_csr(&csr_pem, p, l) {
                Ok(issued) => {
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
            let (p, l) = match (profile(&p), lifetime(l.as_deref())) {
                (Ok(p), Ok(l)) => (p, l),
                (Err(e), _) | (_, Err(e)) => return fail(e, EXIT_USAGE),
            };
            let ca = match load(&dir) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let (issued, key) = match ca.issue(&name, spiffe_id.as_deref(), &dns, p, l) {
                Ok(x) => x,
                Err(e) => return fail(e, 1),
            };
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
