//! `symbolon serve`: run the gateway until SIGTERM or SIGINT; SIGHUP reloads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};

use super::{Exit, fail};
use crate::devinit::{self, DataDir};
use crate::gateway::{Gateway, GatewayError, Overrides};

/// The log target of these lines, as before the CLI was split into files.
const LOG_TARGET: &str = "symbolon::cli";

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
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
    pub workers: Option<u16>,
}

/// The async runtime: `--workers` threads (1: a single-threaded loop), else one per core.
pub fn runtime(workers: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// Exit 0 on a clean stop, [`Exit::Config`] when the configuration is refused, 1 otherwise.
pub async fn run(args: ServeArgs, data_dir: &Path) -> Result<(), Exit> {
    crate::telemetry::init_logging();
    let overrides = Overrides {
        listen: args.listen,
        metrics_listen: args.metrics_listen,
        admin_listen: args.admin_listen,
    };
    // Installed first, so a signal that arrives while starting is handled, not fatal.
    let (mut hup, mut term, mut int) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => return Err(fail("cannot install signal handlers", Exit::Failure)),
    };
    let (config_path, data) = match args.config {
        Some(path) => (path, None),
        None => {
            let d = devinit::ensure(data_dir).map_err(|e| fail(e, Exit::Failure))?;
            (d.config.clone(), Some(d))
        }
    };
    let gateway = match Gateway::start(&config_path, overrides).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            error!(target: LOG_TARGET, error = %e, "symbolon cannot start");
            return Err(match e {
                GatewayError::Bind { .. } => Exit::Failure,
                _ => Exit::Config,
            });
        }
    };
    if let Some(data) = &data {
        print_welcome(data, &gateway);
    }
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!(target: LOG_TARGET, "SIGHUP: reloading the configuration");
                // Errors are logged by reload itself; the running configuration stays.
                let _ = gateway.reload().await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    gateway.shutdown().await;
    Ok(())
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
