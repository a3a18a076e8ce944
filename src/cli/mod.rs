//! The command line: `symbolon serve [--config FILE | --data-dir DIR]`, the admin commands that
//! call the admin API, and the offline ones (`ca`, `cert inspect`, `admin-token`).
//!
//! One file per noun, each with its clap type beside its handler. The admin commands share
//! `api`: the client built from [`ApiArgs`], JSON or table output, and exit codes.

/// Writes to standard output. A closed pipe (`symbolon audit | head`) ends the output
/// quietly instead of panicking as `println!` does.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// [`outln`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod api;
mod audit;
mod bundle;
mod ca;
mod cert;
mod credential;
mod domain;
mod identity;
mod policy;
mod revoke;
mod route;
mod rules;
mod serve;
mod sidecar;
mod table;
mod token;
mod transfer;
mod transition;
mod verify;

/// The exit status of every command, named after sysexits.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success (a clean stop for `serve`).
    Ok = 0,
    /// Anything else: the admin API refused the request, a certificate does not verify, a
    /// port is in use, a file cannot be written.
    Failure = 1,
    /// EX_USAGE: a local problem: a flag value, or a file that cannot be read or parsed.
    Usage = 64,
    /// EX_UNAVAILABLE: the admin API (or the gateway a renewal goes to) cannot be reached.
    Unavailable = 69,
    /// EX_CONFIG: the configuration, or a file it names, is refused.
    Config = 78,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// Prints `error: {e}` and gives `code` back, for `return Err(fail(e, Exit::Usage))`.
fn fail(e: impl std::fmt::Display, code: Exit) -> Exit {
    eprintln!("error: {e}");
    code
}

/// A text file (EX_USAGE when it cannot be read).
fn read(path: &Path) -> Result<String, Exit> {
    std::fs::read_to_string(path).map_err(|e| {
        fail(
            format_args!("cannot read {}: {e}", path.display()),
            Exit::Usage,
        )
    })
}

/// Symbolon: a mutual-TLS gateway and certificate authority in one binary.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Data dir: the embedded default's files, and the admin certificate the CLI uses.
    #[arg(
        long,
        global = true,
        env = "SYMBOLON_DATA_DIR",
        default_value = "symbolon-data"
    )]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How the CLI reaches the admin API (defaults: from the data dir).
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Admin API URL. Default: the data dir config's admin.listen, else https://127.0.0.1:9443.
    #[arg(long, global = true, env = "SYMBOLON_SERVER")]
    pub server: Option<String>,
    /// CA certificate of the admin listener. Default: DATA_DIR/ca.pem.
    #[arg(long = "admin-ca", global = true, env = "SYMBOLON_ADMIN_CA")]
    pub admin_ca: Option<PathBuf>,
    /// Admin client certificate. Default: DATA_DIR/admin.pem.
    #[arg(long = "admin-cert", global = true, env = "SYMBOLON_ADMIN_CERT")]
    pub admin_cert: Option<PathBuf>,
    /// Admin client key. Default: DATA_DIR/admin.key.
    #[arg(long = "admin-key", global = true, env = "SYMBOLON_ADMIN_KEY")]
    pub admin_key: Option<PathBuf>,
    /// Bearer token instead of the admin certificate.
    #[arg(
        long = "token",
        global = true,
        env = "SYMBOLON_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. Without --config, uses (and on first run creates) the data dir with a
    /// development CA, a localhost server certificate, an admin certificate and a demo client
    /// certificate.
    Serve(serve::ServeArgs),
    /// Trust bundles: CA certificates that client certificates must chain to.
    #[command(subcommand)]
    Bundle(bundle::BundleCmd),
    /// TLS domains: host name, server certificate, attached bundle, mTLS mode.
    #[command(subcommand)]
    Domain(domain::DomainCmd),
    /// Client credentials the gateway presents to upstreams.
    #[command(subcommand)]
    Credential(credential::CredentialCmd),
    /// Routes: host + path prefix → upstream.
    #[command(subcommand)]
    Route(route::RouteCmd),
    /// Sidecars: local plain-HTTP listeners forwarded over mTLS with a CA-issued, rotated credential.
    #[command(subcommand)]
    Sidecar(sidecar::SidecarCmd),
    /// Authorization policies: access rights, rate limit, quota.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Identities: keys bound to a client certificate and/or a token, with a policy.
    #[command(subcommand)]
    Identity(identity::IdentityCmd),
    /// Gateway-wide static mTLS rules (applied before each route's own).
    #[command(subcommand)]
    Rules(rules::RulesCmd),
    /// Client certificates that would be rejected if enforcement were switched on.
    TransitionReport,
    /// Say whether a domain would accept this client certificate, and exactly why not.
    Verify(verify::VerifyArgs),
    /// Revoke a certificate: new handshakes, resumed sessions and open connections refuse it at once.
    Revoke(revoke::RevokeArgs),
    /// List revoked certificates.
    Revocations,
    /// Certificates, described in plain language.
    #[command(subcommand)]
    Cert(cert::CertCmd),
    /// The built-in CA: init, sign CSRs, issue certificates (works on the CA directory).
    #[command(subcommand)]
    Ca(ca::CaCmd),
    /// Print everything the store holds as TOML (private keys left out).
    Export(transfer::ExportArgs),
    /// Apply a TOML file made by `export` (idempotent; keys come from each key_file).
    Import(transfer::ImportArgs),
    /// Show the audit log, newest first.
    Audit(audit::AuditArgs),
    /// Create an admin bearer token: prints the token once and the config lines to add.
    AdminToken(token::AdminTokenArgs),
}

pub fn main() -> ExitCode {
    // A usage error exits 64 (EX_USAGE) like the other usage errors; help and version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    let workers = match &cli.command {
        Command::Serve(args) => args.workers,
        _ => None,
    };
    let runtime = match serve::runtime(workers) {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                format_args!("cannot start the async runtime: {e}"),
                Exit::Failure,
            )
            .into();
        }
    };
    let data_dir = cli.data_dir.as_path();
    let admin = Admin {
        runtime: &runtime,
        data_dir,
        args: &cli.api,
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve::run(args, data_dir)),
        Command::AdminToken(args) => token::run(args),
        Command::Cert(cmd) => cert::run(cmd),
        Command::Ca(cmd) => ca::run(cmd, data_dir),
        Command::Bundle(cmd) => admin.call(async |a| bundle::run(cmd, a).await),
        Command::Domain(cmd) => admin.call(async |a| domain::run(cmd, a).await),
        Command::Credential(cmd) => admin.call(async |a| credential::run(cmd, a).await),
        Command::Route(cmd) => admin.call(async |a| route::run(cmd, a).await),
        Command::Sidecar(cmd) => admin.call(async |a| sidecar::run(cmd, a).await),
        Command::Policy(cmd) => admin.call(async |a| policy::run(cmd, a).await),
        Command::Identity(cmd) => admin.call(async |a| identity::run(cmd, a).await),
        Command::Rules(cmd) => admin.call(async |a| rules::run(cmd, a).await),
        Command::TransitionReport => admin.call(transition::run),
        Command::Verify(args) => admin.call(async |a| verify::run(args, a).await),
        Command::Revoke(args) => admin.call(async |a| revoke::run(args, a).await),
        Command::Revocations => admin.call(revoke::list),
        Command::Export(args) => admin.call(async |a| transfer::export(args, a).await),
        Command::Import(args) => admin.call(async |a| transfer::import(args, a).await),
        Command::Audit(args) => admin.call(async |a| audit::run(args, a).await),
    };
    match result {
        Ok(()) => Exit::Ok,
        Err(code) => code,
    }
    .into()
}

/// Runs an admin command: sets up the client first (a setup error is reported before any
/// file is read), then makes the call.
struct Admin<'a> {
    runtime: &'a tokio::runtime::Runtime,
    data_dir: &'a Path,
    args: &'a ApiArgs,
}

impl Admin<'_> {
    fn call(&self, call: impl AsyncFnOnce(&api::Api) -> Result<(), Exit>) -> Result<(), Exit> {
        self.runtime.block_on(async {
            let api = api::Api::connect(self.data_dir, self.args)?;
            call(&api).await
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Catches clashing flags (a command's own flag against a global one) at test time.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
