//! `symbolon admin-token NAME`: a new admin bearer token (only its SHA-256 goes in the config).

use super::{Exit, fail};

#[derive(Debug, clap::Args)]
pub struct AdminTokenArgs {
    name: String,
}

pub fn run(args: AdminTokenArgs) -> Result<(), Exit> {
    let mut bytes = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return Err(fail(
            "the system random number generator failed",
            Exit::Failure,
        ));
    }
    let token = crate::pki::hex(&bytes);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    outln!("token (shown once; store it in your secret manager):\n  {token}\n");
    outln!("add to the [admin] section of the config, then reload (SIGHUP or restart):\n");
    outln!(
        "[[admin.tokens]]\nname = \"{}\"\nsha256 = \"{}\"",
        args.name,
        crate::pki::hex(digest.as_ref())
    );
    Ok(())
}
