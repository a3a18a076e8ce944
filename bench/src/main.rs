//! Load generator for `bench/run.sh`: drives an mTLS server (Symbolon or nginx) with a client
//! certificate, either one new TLS 1.3 connection per request (handshake cost) or keep-alive
//! connections (request cost), and prints one JSON line with what it measured. `flood`
//! measures a legitimate client while idle connections and bad handshakes pile up.
//!
//! The client pins the X25519 group (nginx on Debian 12 cannot offer the post-quantum hybrid
//! rustls prefers), disables resumption (every handshake is a full one), and skips the server
//! certificate check to spend as little of its own core as possible: the server side is what is
//! being measured. It also serves a tiny upstream (`upstream`) for the proxy scenarios.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive a server.
    Load(LoadArgs),
    /// Hold idle connections and send bad handshakes while a legitimate client, from another
    /// loopback address, makes one new mTLS connection and request at a time; report its
    /// latency and failures.
    Flood(FloodArgs),
    /// Serve `200 ok` over plain HTTP/1.1 keep-alive (the upstream of the proxy scenarios).
    Upstream {
        #[arg(long)]
        listen: SocketAddr,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Mode {
    /// A new TLS 1.3 connection (full handshake, client certificate) per request.
    Handshake,
    /// Requests on long-lived connections.
    Keepalive,
}

#[derive(clap::Args)]
struct LoadArgs {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// Client certificate and key (TLS mode).
    #[arg(long, required_unless_present = "plain")]
    cert: Option<PathBuf>,
    #[arg(long, required_unless_present = "plain")]
    key: Option<PathBuf>,
    /// Plain HTTP instead of TLS (a local app talking to a sidecar / egress proxy).
    #[arg(long)]
    plain: bool,
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to run (after one second of warm-up that is not counted).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value = "/")]
    path: String,
    /// Process ids of the server under test; their CPU time during the measurement is reported.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
}

#[derive(clap::Args)]
struct FloodArgs {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// The legitimate client's certificate and key.
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// A certificate the server does not trust (for the bad handshakes), and its key.
    #[arg(long)]
    bad_cert: PathBuf,
    #[arg(long)]
    bad_key: PathBuf,
    /// Idle TCP connections opened from 127.0.0.1 and held (nothing is sent on them).
    #[arg(long, default_value_t = 5000)]
    idle: usize,
    /// Concurrent loops of handshakes with an untrusted certificate.
    #[arg(long, default_value_t = 8)]
    bad: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The legitimate client's source address (another client as far as per-address caps go).
    #[arg(long, default_value = "127.0.0.2")]
    legit_from: std::net::IpAddr,
    /// The bad handshakes' source address (a third client).
    #[arg(long, default_value = "127.0.0.3")]
    bad_from: std::net::IpAddr,
}

async fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    // As curl and browsers do: no Nagle delay between the handshake's last flight and the
    // request.
    socket.set_nodelay(true)?;
    socket.connect(to).await
}

async fn flood(args: FloodArgs) -> anyhow::Result<()> {
    let good = tls_config(&args.cert, &args.key)?;
    let bad = TlsConnector::from(tls_config(&args.bad_cert, &args.bad_key)?);
    let name = ServerName::try_from(args.sni.clone())?;
    let stop_at = Instant::now() + Duration::from_secs(args.seconds);
    // Idle connections first; how many the server let in is what it holds.
    let mut held = Vec::new();
    let mut refused = 0usize;
    for _ in 0..args.idle {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(args.addr)).await
        {
            Ok(Ok(t)) => held.push(t),
            _ => refused += 1,
        }
    }
    // Bad handshakes in the background.
    let bad_done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.bad {
        let (bad, name, bad_done, addr) = (bad.clone(), name.clone(), bad_done.clone(), args.addr);
        let (from, sni) = (args.bad_from, args.sni.clone());
        tasks.push(tokio::spawn(async move {
            let request = format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
            while Instant::now() < stop_at {
                let attempt = async {
                    let tcp = connect_from(from, addr).await?;
                    let mut tls = bad.connect(name.clone(), tcp).await?;
                    // TLS 1.3: the refusal arrives after the client's Finished (Symbolon: an
                    // alert; nginx: a 400 response to the request).
                    tls.write_all(request.as_bytes()).await?;
                    let mut b = [0u8; 4096];
                    while tls.read(&mut b).await? > 0 {}
                    Ok::<_, std::io::Error>(())
                };
                let _ = tokio::time::timeout(Duration::from_secs(2), attempt).await;
                bad_done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // The legitimate client: one new connection and request at a time, every 20 ms, on its
    // own thread and runtime (the flood's client side must not delay it).
    let (legit_from, addr, sni) = (args.legit_from, args.addr, args.sni.clone());
    let legit = std::thread::spawn(move || -> anyhow::Result<(Vec<f64>, u64)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let connector = TlsConnector::from(good);
            let name = ServerName::try_from(sni.clone())?;
            let request =
                format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").into_bytes();
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut buf = Vec::new();
            while Instant::now() < stop_at {
                let t0 = Instant::now();
                let attempt = async {
                    let tcp = connect_from(legit_from, addr).await?;
                    let mut tls = connector.connect(name.clone(), tcp).await?;
                    exchange(&mut tls, &request, &mut buf).await
                };
                match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                    Ok(Ok(200)) => latencies.push(t0.elapsed().as_secs_f64() * 1000.0),
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok((latencies, failures))
        })
    });
    while Instant::now() < stop_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut latencies, failures) = legit
        .join()
        .map_err(|_| anyhow::anyhow!("the legitimate client's thread panicked"))??;
    for t in tasks {
        t.abort();
    }
    // How many idle connections the server has closed by now (it may close them at once).
    let mut closed = 0usize;
    for t in &held {
        let mut b = [0u8; 1];
        if let Ok(n) = t.try_read(&mut b)
            && n == 0
        {
            closed += 1;
        }
    }
    latencies.sort_by(|a: &f64, b: &f64| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{{\"event\":\"done\",\"idle_opened\":{},\"idle_refused\":{refused},\"idle_closed_by_server\":{closed},\"bad_handshakes\":{},\"legit_ok\":{},\"legit_failed\":{failures},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        held.len(),
        bad_done.load(Ordering::Relaxed),
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}

fn tls_config(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<Arc<ClientConfig>> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoServerVerification))
        .with_client_auth_cert(chain, key)?;
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// User + system CPU seconds of the given processes (all their threads), from /proc.
fn cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    let mut ticks = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after the command name (which may contain spaces) start at ") ".
        let rest = stat.rsplit_once(") ").context("odd /proc stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the full line, 12 and 13 after the name.
        ticks += fields.get(11).context("utime")?.parse::<u64>()?;
        ticks += fields.get(12).context("stime")?.parse::<u64>()?;
    }
    // USER_HZ is 100 on Linux.
    Ok(ticks as f64 / 100.0)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Load(args) => rt.block_on(load(args)),
        Cmd::Flood(args) => rt.block_on(flood(args)),
        Cmd::Upstream { listen } => rt.block_on(upstream(listen)),
    }
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let connector = if args.plain {
        None
    } else {
        Some(TlsConnector::from(client_config(&args)?))
    };
    let name = ServerName::try_from(args.sni.clone())?;
    let close = if args.mode == Mode::Handshake {
        "close"
    } else {
        "keep-alive"
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: {close}\r\n\r\n",
        args.path, args.sni
    )
    .into_bytes();
    let request: Arc<[u8]> = request.into();
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(args.seconds + 1);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (connector, name, request) = (connector.clone(), name.clone(), request.clone());
        let (done, errors, addr, mode) = (done.clone(), errors.clone(), args.addr, args.mode);
        tasks.push(tokio::spawn(async move {
            let mut buf = Vec::with_capacity(16 * 1024);
            while Instant::now() < stop_at {
                let tcp = match TcpStream::connect(addr).await {
                    Ok(t) => t,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let Some(connector) = &connector else {
                    let mut tcp = tcp;
                    requests(&mut tcp, &request, &mut buf, mode, stop_at, &done, &errors).await;
                    continue;
                };
                let mut tls = match connector.connect(name.clone(), tcp).await {
                    Ok(t) => t,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                requests(&mut tls, &request, &mut buf, mode, stop_at, &done, &errors).await;
            }
        }));
    }
    // Warm-up second, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start_count = done.load(Ordering::Relaxed);
    let start_errors = errors.load(Ordering::Relaxed);
    let cpu0 = cpu_seconds(&args.server_pids)?;
    let t0 = Instant::now();
    println!("{{\"event\":\"measuring\"}}");
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let count = done.load(Ordering::Relaxed) - start_count;
    let errs = errors.load(Ordering::Relaxed) - start_errors;
    let cpu = cpu_seconds(&args.server_pids)? - cpu0;
    println!(
        "{{\"event\":\"done\",\"requests\":{count},\"errors\":{errs},\"seconds\":{elapsed:.3},\"per_second\":{:.1},\"server_cpu_seconds\":{cpu:.2},\"server_cpu_us_per_request\":{:.1}}}",
        count as f64 / elapsed,
        if count > 0 {
            cpu * 1e6 / count as f64
        } else {
            0.0
        }
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Sends requests on one connection: one (handshake mode) or until the run ends.
async fn requests<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
    buf: &mut Vec<u8>,
    mode: Mode,
    stop_at: Instant,
    done: &AtomicU64,
    errors: &AtomicU64,
) {
    loop {
        match exchange(s, request, buf).await {
            Ok(200) => done.fetch_add(1, Ordering::Relaxed),
            _ => {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if mode == Mode::Handshake || Instant::now() >= stop_at {
            return;
        }
    }
}

/// Writes one request and reads one response (Content-Length bodies only); returns the status.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> anyhow::Result<u16> {
    s.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let (head_end, status, length) = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before the response");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..pos])?;
            let status: u16 = head.get(9..12).context("short status line")?.parse()?;
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .context("response without Content-Length")?;
            break (pos + 4, status, length);
        }
    };
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed inside the body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

fn client_config(args: &LoadArgs) -> anyhow::Result<Arc<ClientConfig>> {
    let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
        bail!("--cert and --key are needed for TLS");
    };
    tls_config(cert, key)
}

/// The load generator does not check the server certificate (the tests do); it only needs the
/// server to do its full share of the handshake.
#[derive(Debug)]
struct NoServerVerification;

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
    }
}

async fn upstream(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!(
        "{{\"event\":\"upstream\",\"addr\":\"{}\"}}",
        listener.local_addr()?
    );
    loop {
        let (mut tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut pending = Vec::new();
            loop {
                let n = match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                // Bodyless GETs only: answer each complete request head.
                while let Some(pos) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    pending.drain(..pos + 4);
                    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
                    if tcp.write_all(resp).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}
