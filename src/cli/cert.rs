//! `symbolon cert inspect`: certificates described in plain language (no server needed).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{Exit, fail};

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Describe each certificate in a PEM file (a certificate, a chain or a bundle).
    Inspect { file: PathBuf },
}

pub fn run(cmd: CertCmd) -> Result<(), Exit> {
    match cmd {
        CertCmd::Inspect { file } => inspect(&file),
    }
}

/// EX_USAGE when the file holds no certificate, 1 when one cannot be parsed.
fn inspect(file: &Path) -> Result<(), Exit> {
    let certs = crate::pki::load_certs(file).map_err(|e| fail(e, Exit::Usage))?;
    let now = crate::pki::unix_now();
    for (i, der) in certs.iter().enumerate() {
        let info = crate::pki::CertInfo::parse(der).map_err(|e| {
            fail(
                format_args!("certificate #{} cannot be parsed: {e}", i + 1),
                Exit::Failure,
            )
        })?;
        if certs.len() > 1 {
            outln!("certificate #{} of {}", i + 1, certs.len());
        }
        outln!("{}\n", crate::explain::describe(&info, now));
    }
    Ok(())
}
