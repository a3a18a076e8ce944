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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. Without --config, uses (and on first run creates) the data dir with a
    /// development CA, a localhost server certificate and a demo client certificate.
    Serve {
        /// TOML configuration file.
        #[arg(long, short, env = "SYMBOLON_CONFIG")]
        config: Option<PathBuf>,
        /// Data dir for the embedded default (used when --config is not given).
        #[arg(long, env = "SYMBOLON_DATA_DIR", default_value = "symbolon-data")]
        data_dir: PathBuf,
        /// Listen address of the gateway, overriding `listen` in the config.
        #[arg(long, env = "SYMBOLON_LISTEN")]
        listen: Option<SocketAddr>,
        /// Listen address of /metrics, overriding `metrics_listen` in the config.
        #[arg(long, env = "SYMBOLON_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
    },
}

/// Exit code for a refused configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
            metrics_listen,
        } => runtime.block_on(serve(
            config,
            data_dir,
            Overrides {
                listen,
                metrics_listen,
            },
        )),
    }
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
                let _ = gateway.reload();
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
         Config: {cfg} (edits apply live; SIGHUP reloads)\n",
        pw = devinit::P12_PASSWORD,
        m = gateway.metrics_addr(),
        cfg = data.config.display(),
    );
}
