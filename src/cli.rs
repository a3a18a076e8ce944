//! The command line: `symbolon serve [--config FILE | --data-dir DIR]`.
//!
//! Exit codes: 0 on a clean stop, 78 (EX_CONFIG) when the configuration or a file it names is
//! refused, 1 for anything else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use crate::devinit::{self, DataDir};
use crate::gateway::{Gateway, GatewayError, Overrides};

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
    Serve {
        /// TOML configuration file.
        #[arg(long, short, env = "SYMBOLON_CONFIG")]
        config: Option<PathBuf>,
        /// Listen address of the gateway, overriding `listen` in the config.
        #[arg(long, env = "SYMBOLON_LISTEN")]
        listen: Option<SocketAddr>,
        /// Listen address of /metrics, overriding `metrics_listen` in the config.
        #[arg(long, env = "SYMBOLON_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// Listen address of the admin API, overriding `admin.listen` in the config.
        #[arg(long, env = "SYMBOLON_ADMIN_LISTEN")]
        admin_listen: Option<SocketAddr>,
        /// Worker threads (default: one per core). 1 runs a single-threaded event loop, like
        /// one nginx worker or Envoy's --concurrency 1, which saves the cost of work stealing.
        #[arg(long, env = "SYMBOLON_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
        workers: Option<u16>,
    },
    /// Trust bundles: CA certificates that client certificates must chain to.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// TLS domains: host name, server certificate, attached bundle, mTLS mode.
    #[command(subcommand)]
    Domain(DomainCmd),
    /// Client credentials the gateway presents to upstreams.
    #[command(subcommand)]
    Credential(CredentialCmd),
    /// Routes: host + path prefix → upstream.
    #[command(subcommand)]
    Route(RouteCmd),
    /// Sidecars: local plain-HTTP listeners forwarded over mTLS with a CA-issued, rotated credential.
    #[command(subcommand)]
    Sidecar(SidecarCmd),
    /// Authorization policies: access rights, rate limit, quota.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Identities: keys bound to a client certificate and/or a token, with a policy.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// Gateway-wide static mTLS rules (applied before each route's own).
    #[command(subcommand)]
    Rules(RulesCmd),
    /// Client certificates that would be rejected if enforcement were switched on.
    TransitionReport,
    /// Say whether a domain would accept this client certificate, and exactly why not.
    Verify {
        /// PEM: the client certificate, then any intermediates the client sends.
        cert: PathBuf,
        #[arg(long)]
        domain: String,
    },
    /// Revoke a certificate: new handshakes, resumed sessions and open connections refuse it at once.
    Revoke {
        /// The certificate (public PEM).
        #[arg(long, conflicts_with_all = ["fingerprint", "serial"])]
        cert: Option<PathBuf>,
        #[arg(long, conflicts_with = "serial")]
        fingerprint: Option<String>,
        /// Serial number in hex (revoked for one issuer: --issuer, or the built-in CA).
        #[arg(long)]
        serial: Option<String>,
        /// With --serial: the issuing CA's certificate (PEM).
        #[arg(long, requires = "serial")]
        issuer: Option<PathBuf>,
        /// keyCompromise, superseded, cessationOfOperation, … (default unspecified).
        #[arg(long)]
        reason: Option<String>,
    },
    /// List revoked certificates.
    Revocations,
    /// Certificates, described in plain language.
    #[command(subcommand)]
    Cert(CertCmd),
    /// The built-in CA: init, sign CSRs, issue certificates (works on the CA directory).
    #[command(subcommand)]
    Ca(CaCmd),
    /// Print everything the store holds as TOML (private keys left out).
    Export {
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Apply a TOML file made by `export` (idempotent; keys come from each key_file).
    Import { file: PathBuf },
    /// Show the audit log, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Create an admin bearer token: prints the token once and the config lines to add.
    AdminToken { name: String },
}

#[derive(Debug, Subcommand)]
pub enum BundleCmd {
    /// Upload a PEM of one or more CA certificates.
    Upload {
        #[arg(long)]
        name: String,
        #[arg(long)]
        file: PathBuf,
        /// Enforce: clients without a valid certificate fail the handshake.
        #[arg(long)]
        require: bool,
    },
    List,
    Show {
        id: String,
    },
    /// Rename, or switch between enforcing and recording only.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        require: Option<bool>,
    },
    /// Replace the bundle's certificates.
    Replace {
        id: String,
        #[arg(long)]
        file: PathBuf,
    },
    Attach {
        id: String,
        #[arg(long)]
        domain: String,
    },
    Detach {
        id: String,
        #[arg(long)]
        domain: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DomainCmd {
    Create {
        #[arg(long)]
        hostname: String,
        /// Server certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        bundle: Option<String>,
        /// require | optional | off (default: follow the bundle's require flag).
        #[arg(long)]
        mtls: Option<String>,
    },
    List,
    Show {
        id: String,
    },
    Update {
        id: String,
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Bundle id or name; "" detaches.
        #[arg(long)]
        bundle: Option<String>,
        /// require | optional | off | "" (follow the bundle).
        #[arg(long)]
        mtls: Option<String>,
    },
    Delete {
        id: String,
    },
}

/// Policy contents, as flags.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// Token bucket: N requests per period, e.g. 100/1m.
    #[arg(long)]
    pub rate_limit: Option<String>,
    /// Quota: N requests per day, month or fixed window, e.g. 10000/day.
    #[arg(long)]
    pub quota: Option<String>,
    /// Access right ROUTE[:METHODS[:PREFIXES]], e.g. orders:GET,POST:/orders,/carts (repeatable;
    /// none = every route).
    #[arg(long)]
    pub access: Vec<String>,
    /// Allow self-service enrollment with this policy.
    #[arg(long)]
    pub self_service: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        spec: PolicyArgs,
    },
    List,
    Show {
        id: String,
    },
    /// Replace the policy's contents.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        spec: PolicyArgs,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// Create an identity bound to a public certificate (never a key) and/or a token.
    Create {
        #[arg(long)]
        name: String,
        /// The client's public certificate (PEM).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Or its SHA-256 fingerprint.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Also create a token (printed once).
        #[arg(long)]
        with_token: bool,
        #[arg(long)]
        policy: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long)]
        inactive: bool,
    },
    List,
    Show {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        active: Option<bool>,
        /// RFC 3339; "" removes the expiry.
        #[arg(long)]
        expires_at: Option<String>,
        /// Bind to another public certificate.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Replace the token (the new one is printed once).
        #[arg(long)]
        rotate_token: bool,
    },
    Delete {
        id: String,
    },
    /// Requests, status classes, bytes and last seen, per route.
    Usage {
        id: String,
    },
}

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

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Describe each certificate in a PEM file (a certificate, a chain or a bundle).
    Inspect { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    Show,
    /// Replace the gateway-wide rules with a JSON list of rules.
    Set {
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CredentialCmd {
    Upload {
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        name: String,
    },
    List,
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RouteCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        upstream: String,
        #[arg(long)]
        host: Option<String>,
        #[arg(long, default_value = "/")]
        path_prefix: String,
        #[arg(long)]
        strip_prefix: bool,
        /// Client credential presented to an https:// upstream.
        #[arg(long)]
        credential: Option<String>,
        /// Authorization settings as a JSON file (auth, rules, token_header, strip_auth, enforce).
        #[arg(long)]
        authz: Option<PathBuf>,
        #[command(flatten)]
        tls: UpstreamTlsArgs,
    },
    List,
    Show {
        id: String,
    },
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        upstream: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        path_prefix: Option<String>,
        #[arg(long)]
        strip_prefix: Option<bool>,
        /// Client credential presented to an https:// upstream ("" removes it).
        #[arg(long)]
        credential: Option<String>,
        /// Authorization settings as a JSON file.
        #[arg(long)]
        authz: Option<PathBuf>,
        #[command(flatten)]
        tls: UpstreamTlsArgs,
    },
    Delete {
        id: String,
    },
}

/// How the gateway checks an https:// upstream (route create/update, sidecar create).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UpstreamTlsArgs {
    /// Trust bundle the upstream's certificate must chain to (default: the system CAs; "" resets).
    #[arg(long)]
    pub upstream_trust_bundle: Option<String>,
    /// Server name sent as SNI and checked in the upstream's certificate ("" resets).
    #[arg(long)]
    pub upstream_server_name: Option<String>,
    /// Fail with 502 when the upstream does not ask for a client certificate.
    #[arg(long)]
    pub require_upstream_mtls: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum SidecarCmd {
    /// Listen on a local address and forward to an upstream over mTLS.
    Create {
        #[arg(long)]
        name: String,
        /// e.g. 127.0.0.1:15001
        #[arg(long)]
        listen: String,
        /// e.g. https://orders.internal:8443
        #[arg(long)]
        upstream: String,
        #[command(flatten)]
        tls: UpstreamTlsArgs,
        /// Present this existing credential (instead of one issued by the built-in CA).
        #[arg(long, conflicts_with_all = ["common_name", "spiffe_id"])]
        credential: Option<String>,
        /// Have the built-in CA issue the credential with this common name (rotated at 2/3 of its lifetime).
        #[arg(long)]
        common_name: Option<String>,
        /// SPIFFE ID of the issued credential.
        #[arg(long, requires = "common_name")]
        spiffe_id: Option<String>,
        /// Lifetime of the issued credential.
        #[arg(long, default_value = "24h", requires = "common_name")]
        lifetime: String,
    },
    List,
    Show {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Issue a new credential now (the old one stays valid until it expires).
    Rotate {
        name: String,
    },
}

/// Exit code for a refused configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code when the admin API cannot be reached (sysexits EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = match &cli.command {
        Command::Serve {
            workers: Some(1), ..
        } => tokio::runtime::Builder::new_current_thread(),
        Command::Serve {
            workers: Some(n), ..
        } => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(*n));
            b
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Serve {
            config,
            listen,
            metrics_listen,
            admin_listen,
            workers: _,
        } => {
            crate::telemetry::init_logging();
            runtime.block_on(serve(
                config,
                cli.data_dir,
                Overrides {
                    listen,
                    metrics_listen,
                    admin_listen,
                },
            ))
        }
        Command::AdminToken { name } => admin_token(&name),
        Command::Cert(CertCmd::Inspect { file }) => inspect(&file),
        Command::Ca(cmd) => crate::cli_ca::run(cmd, &cli.data_dir),
        command => runtime.block_on(crate::cli_admin::run(command, &cli.data_dir, &cli.api)),
    }
}

fn inspect(file: &std::path::Path) -> ExitCode {
    let certs = match crate::pki::load_certs(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    let now = crate::pki::unix_now();
    for (i, der) in certs.iter().enumerate() {
        match crate::pki::CertInfo::parse(der) {
            Ok(info) => {
                if certs.len() > 1 {
                    println!("certificate #{} of {}", i + 1, certs.len());
                }
                println!("{}\n", crate::explain::describe(&info, now));
            }
            Err(e) => {
                eprintln!("error: certificate #{} cannot be parsed: {e}", i + 1);
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}

fn admin_token(name: &str) -> ExitCode {
    let mut bytes = [0u8; 32];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        eprintln!("error: the system random number generator failed");
        return ExitCode::from(1);
    }
    let token = crate::pki::hex(&bytes);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    println!("token (shown once; store it in your secret manager):\n  {token}\n");
    println!("add to the [admin] section of the config, then reload (SIGHUP or restart):\n");
    println!(
        "[[admin.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"",
        crate::pki::hex(digest.as_ref())
    );
    ExitCode::SUCCESS
}

async fn serve(config: Option<PathBuf>, data_dir: PathBuf, overrides: Overrides) -> ExitCode {
    // Installed first, so a signal that arrives while starting is handled, not fatal.
    let (mut hup, mut term, mut int) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => {
            eprintln!("error: cannot install signal handlers");
            return ExitCode::from(1);
        }
    };
    let (config_path, data) = match config {
        Some(path) => (path, None),
        None => match devinit::ensure(&data_dir) {
            Ok(d) => (d.config.clone(), Some(d)),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let gateway = match Gateway::start(&config_path, overrides).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            error!(error = %e, "symbolon cannot start");
            let code = match e {
                GatewayError::Bind { .. } => 1,
                _ => EXIT_CONFIG,
            };
            return ExitCode::from(code);
        }
    };
    if let Some(data) = &data {
        print_welcome(data, &gateway);
    }
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                // Errors are logged by reload itself; the running configuration stays.
                let _ = gateway.reload().await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    gateway.shutdown().await;
    ExitCode::SUCCESS
}

fn print_welcome(data: &DataDir, gateway: &Gateway) {
    let d = data.dir.display();
    let port = gateway.tls_addr().port();
    let what = if data.created { "created" } else { "using" };
    eprintln!(
        "\nSymbolon is running with the embedded default ({what} {d}/).\n\
         Try it with the demo client certificate:\n\n  \
         curl --cacert {d}/ca.pem --cert {d}/client.pem --key {d}/client.key https://localhost:{port}/\n\n\
         Without a client certificate the handshake is refused:\n\n  \
         curl --cacert {d}/ca.pem https://localhost:{port}/\n\n\
         PKCS#12 for browsers: {d}/client.p12 (password '{pw}'). Metrics: http://{m}/metrics\n\
         Admin API: https://{a} (the CLI uses {d}/admin.pem): symbolon --data-dir {d} bundle list\n\
         Config: {cfg} (edits apply live; SIGHUP reloads)\n",
        pw = devinit::P12_PASSWORD,
        m = gateway.metrics_addr(),
        a = gateway
            .admin_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "(off)".into()),
        cfg = data.config.display(),
    );
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
