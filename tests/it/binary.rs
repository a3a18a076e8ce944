//! The `symbolon` binary as an operator runs it: the embedded default, SIGHUP, SIGTERM, the
//! JSON access log, and the exit code of a refused configuration.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::*;

/// A running `symbolon serve` whose stdout (JSON logs) is read line by line.
struct Process {
    child: Option<Child>,
    pub admin_addr: Option<std::net::SocketAddr>,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    pub tls_addr: std::net::SocketAddr,
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log lines `wait_for` passed over (the start-up lines first).
    pub early: Vec<String>,
}

impl Process {
    fn spawn(args: &[&str], cwd: &Path) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_symbolon"));
        cmd.args(args);
        Self::spawn_cmd(cmd, cwd)
    }

    /// The binary with an open-file limit of `nofile` (soft and hard).
    fn spawn_with_nofile(args: &[&str], cwd: &Path, nofile: u32) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_symbolon"))
            .args(args);
        Self::spawn_cmd(cmd, cwd)
    }

    fn spawn_cmd(mut cmd: Command, cwd: &Path) -> Self {
        let mut child = cmd
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (etx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = etx.send(line);
            }
        });
        let mut p = Self {
            child: Some(child),
            admin_addr: None,
            lines,
            stderr,
            tls_addr: "0.0.0.0:0".parse().unwrap(),
            metrics_addr: None,
            early: Vec::new(),
        };
        let ready = p.wait_for("symbolon is listening");
        let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
        p.tls_addr = v["tls_addr"].as_str().unwrap().parse().unwrap();
        p.admin_addr = v["admin_addr"].as_str().and_then(|a| a.parse().ok());
        p.metrics_addr = v["metrics_addr"].as_str().and_then(|a| a.parse().ok());
        p
    }

    /// Waits (up to 20 s) for a log line containing `needle`; returns it.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => self.early.push(line),
                Err(_) => {
                    let err: Vec<String> = self.stderr.try_iter().collect();
                    panic!("no log line with {needle:?}; stderr: {}", err.join("\n"));
                }
            }
        }
    }

    fn stderr_text(&self) -> String {
        let mut s = String::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            s.push_str(&l);
            s.push('\n');
            if l.starts_with("Config:") {
                break;
            }
        }
        s
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.as_ref().unwrap().id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn wait_exit(mut self) -> std::process::ExitStatus {
        let (tx, rx) = mpsc::channel();
        let mut child = self.child.take().unwrap();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("symbolon did not exit")
            .unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

const PORTS: [&str; 6] = [
    "--listen",
    "127.0.0.1:0",
    "--metrics-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

#[test]
fn embedded_default_works_with_the_printed_curl_command_and_is_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = vec!["serve", "--data-dir", "data"];
    args.extend(PORTS);
    let mut p = Process::spawn(&args, tmp.path());
    let banner = p.stderr_text();
    assert!(banner.contains("created data/"), "{banner}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(tmp.path().join("data"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the data dir holds keys: owner only");
    }
    let curl_line = banner
        .lines()
        .find(|l| l.trim_start().starts_with("curl --cacert") && l.contains("--cert"))
        .unwrap_or_else(|| panic!("no curl command in:\n{banner}"))
        .trim()
        .to_string();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{curl_line} -sS"))
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["headers"]["x-client-verify"], "SUCCESS");
    assert_eq!(
        body["headers"]["x-client-spiffe-id"],
        symbolon::devinit::DEMO_SPIFFE_ID
    );

    // The access log line carries the client identity.
    let access = p.wait_for("\"target\":\"symbolon::access\"");
    let log: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(log["verify"], "SUCCESS");
    assert_eq!(log["status"], 200);
    assert_eq!(log["route"], "echo");
    assert_eq!(log["spiffe_id"], symbolon::devinit::DEMO_SPIFFE_ID);
    assert_eq!(log["fingerprint"].as_str().unwrap().len(), 64);
    assert!(log["latency_ms"].as_f64().is_some());

    // The PKCS#12 file opens with the printed password.
    let p12 = std::fs::read(tmp.path().join("data/client.p12")).unwrap();
    let ks = p12_keystore::KeyStore::from_pkcs12(
        &p12,
        symbolon::devinit::P12_PASSWORD,
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .unwrap();
    assert!(ks.private_key_chain().is_some());

    let ca_before = std::fs::read(tmp.path().join("data/ca.pem")).unwrap();
    p.signal("TERM");
    assert!(p.wait_exit().success());
    let p = Process::spawn(&args, tmp.path());
    assert!(p.stderr_text().contains("using data/"));
    assert_eq!(
        std::fs::read(tmp.path().join("data/ca.pem")).unwrap(),
        ca_before
    );
    p.signal("TERM");
    assert!(p.wait_exit().success());
}

#[test]
fn sighup_reloads_trust() {
    let h = Harness::new();
    let ca_a = TestCa::root("A");
    let ca_b = TestCa::root("B");
    h.write("bundle.pem", &ca_a.pem());
    let config = h.config(&format!(
        "watch_files = false\n{}{}",
        h.domain("api.test", Some("bundle.pem"), "require"),
        route_all("builtin:echo")
    ));
    let config = config.to_str().unwrap().to_string();
    let mut p = Process::spawn(&["serve", "--config", &config], h.dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client_b = h.client().cert(&ca_b.leaf(LeafSpec::client("b")));
    assert!(
        rt.block_on(get(p.tls_addr, "api.test", &client_b, "/"))
            .is_err()
    );
    h.write("bundle.pem", &ca_b.pem());
    // File watching is off: nothing changes until SIGHUP.
    assert!(
        rt.block_on(get(p.tls_addr, "api.test", &client_b, "/"))
            .is_err()
    );
    p.signal("HUP");
    p.wait_for("configuration reloaded");
    assert_eq!(
        rt.block_on(get(p.tls_addr, "api.test", &client_b, "/"))
            .unwrap()
            .status,
        200
    );
    // A broken bundle on SIGHUP is refused with a log line naming the file; trust stays.
    h.write("bundle.pem", "garbage");
    p.signal("HUP");
    let refused = p.wait_for("reload refused");
    assert!(refused.contains("bundle.pem"), "{refused}");
    assert_eq!(
        rt.block_on(get(p.tls_addr, "api.test", &client_b, "/"))
            .unwrap()
            .status,
        200
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Upstream::start());
    let h = Harness::new();
    let config = h.config(&format!(
        "{}{}",
        h.domain("api.test", None, "off"),
        route_all(&up.url())
    ));
    let config = config.to_str().unwrap().to_string();
    let mut p = Process::spawn(&["serve", "--config", &config], h.dir.path());
    let addr = p.tls_addr;
    let spec = h.client();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let mut conn = Conn::open(addr, "api.test", &spec).await.unwrap();
        let req = http::Request::get("/stream")
            .header("host", "api.test")
            .body(Default::default())
            .unwrap();
        let resp = conn.send_streaming(req).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"first;");
        p.signal("TERM");
        p.wait_for("shutting down");
        // No new connections once shutting down.
        assert!(get(addr, "api.test", &spec, "/").await.is_err());
        up.release();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"second");
    });
    assert!(p.wait_exit().success());
}

#[test]
fn sigterm_lets_a_sidecar_request_in_flight_finish() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Upstream::start());
    let h = Harness::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = h.config(&format!(
        "[[sidecars]]\nname = \"egress\"\nlisten = \"127.0.0.1:{port}\"\nupstream = \"{}\"\n",
        up.url()
    ));
    let config = config.to_str().unwrap().to_string();
    let mut p = Process::spawn(&["serve", "--config", &config], h.dir.path());
    rt.block_on(async {
        use http_body_util::BodyExt;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/stream")
            .header("host", "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"first;");
        p.signal("TERM");
        p.wait_for("shutting down");
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "the sidecar still accepts after SIGTERM"
        );
        up.release();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"second");
    });
    assert!(p.wait_exit().success());
}

#[test]
fn refused_configuration_exits_78_naming_the_file() {
    let h = Harness::new();
    h.write("bundle.pem", "-----BEGIN CERTIFICATE-----\ntruncated");
    let config = h.config(&format!(
        "{}{}",
        h.domain("api.test", Some("bundle.pem"), "require"),
        route_all("builtin:echo")
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_symbolon"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bundle.pem") && err.contains("Fix:"), "{err}");
}

#[test]
fn kill_9_during_a_burst_of_writes_loses_no_acknowledged_write() {
    let h = Harness::new();
    let config = h.config(&format!("watch_files = false\n{}", h.admin_section()));
    let config = config.to_str().unwrap().to_string();
    let mut p = Process::spawn(&["serve", "--config", &config], h.dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = std::sync::Arc::new(admin_client(&h, p.admin_addr.unwrap()));
    let (acked_tx, acked_rx) = mpsc::channel::<String>();
    let seen = rt.block_on(async {
        let mut tasks = Vec::new();
        for worker in 0..4 {
            let client = client.clone();
            let acked = acked_tx.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..1000 {
                    let name = format!("r-{worker}-{i}");
                    let body = serde_json::json!({"name": name, "path_prefix": format!("/{name}"), "upstream": "builtin:echo"});
                    match client.call(http::Method::POST, "/api/v1/routes", Some(("application/json", body.to_string().into_bytes()))).await {
                        Ok((status, _)) if status == 201 => {
                            let _ = acked.send(name);
                        }
                        _ => return,
                    }
                }
            }));
        }
        // Kill the server mid-burst, once some writes have been acknowledged.
        let mut seen = Vec::new();
        while seen.len() < 40 {
            seen.push(tokio::task::block_in_place(|| acked_rx.recv_timeout(Duration::from_secs(20))).expect("writes are acknowledged"));
        }
        p.child.as_mut().unwrap().kill().unwrap();
        for t in tasks {
            let _ = t.await;
        }
        seen
    });
    drop(acked_tx);
    let acked: Vec<String> = seen.into_iter().chain(acked_rx.try_iter()).collect();
    drop(p);
    let p = Process::spawn(&["serve", "--config", &config], h.dir.path());
    let client = admin_client(&h, p.admin_addr.unwrap());
    let (status, body) = rt
        .block_on(client.call(http::Method::GET, "/api/v1/routes", None))
        .unwrap();
    assert_eq!(status, 200);
    let routes: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let names: std::collections::HashSet<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.len() >= 40, "only {} routes survived", names.len());
    for name in &acked {
        assert!(
            names.contains(name.as_str()),
            "acknowledged write {name} was lost"
        );
    }
}

fn admin_client(h: &Harness, addr: std::net::SocketAddr) -> symbolon::client::AdminClient {
    let server = format!("https://localhost:{}", addr.port());
    symbolon::client::AdminClient::new(symbolon::client::ClientOptions {
        server: &server,
        cacert: &h.path("server-ca.pem"),
        cert: Some(&h.path("admin.crt")),
        key: Some(&h.path("admin.key")),
        token: None,
    })
    .unwrap()
}

/// Runs the CLI; returns (exit code, stdout, stderr).
fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_symbolon"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn cli_against_a_live_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut args = vec!["serve", "--data-dir", "data", "--workers", "1"];
    args.extend(PORTS);
    let p = Process::spawn(&args, dir);
    let server = format!("https://127.0.0.1:{}", p.admin_addr.unwrap().port());
    let run = |extra: &[&str]| {
        let mut a = vec!["--data-dir", "data", "--server", server.as_str()];
        a.extend_from_slice(extra);
        cli(dir, &a)
    };
    // A partner CA and a domain certificate, made by the test.
    let partner = TestCa::root("Partner CA");
    std::fs::write(dir.join("partner.pem"), partner.pem()).unwrap();
    let server_ca = TestCa::root("Domain CA");
    let leaf = server_ca.leaf(LeafSpec::server("api.test"));
    std::fs::write(dir.join("api.crt"), &leaf.chain_pem).unwrap();
    std::fs::write(dir.join("api.key"), &leaf.key_pem).unwrap();

    let (code, out, err) = run(&[
        "bundle",
        "upload",
        "--name",
        "partners",
        "--file",
        "partner.pem",
        "--require",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ID") && out.contains("partners") && out.contains("CN=Partner CA"),
        "{out}"
    );
    let (code, out, _) = run(&["--json", "bundle", "list"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], "partners");
    assert_eq!(list[0]["require"], true);

    let (code, out, err) = run(&[
        "domain",
        "create",
        "--hostname",
        "api.test",
        "--cert",
        "api.crt",
        "--key",
        "api.key",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("api.test") && out.contains("off"), "{out}");
    let (code, out, _) = run(&["bundle", "attach", "partners", "--domain", "api.test"]);
    assert_eq!(code, 0);
    assert!(out.contains("api.test"));
    let (code, out, _) = run(&["domain", "show", "api.test"]);
    assert_eq!(code, 0);
    assert!(out.contains("require"), "{out}");

    // Refused: exit 1 with the reason and a hint.
    let (code, _, err) = run(&["bundle", "delete", "partners"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("409 in_use") && err.contains("api.test") && err.contains("hint: detach"),
        "{err}"
    );
    let (code, _, err) = run(&["bundle", "upload", "--name", "oops", "--file", "api.key"]);
    assert_eq!(code, 1);
    assert!(err.contains("private_key_in_certificate"), "{err}");

    let (code, _, err) = run(&[
        "credential",
        "upload",
        "--cert",
        "api.crt",
        "--key",
        "api.key",
        "--name",
        "origin",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&["credential", "list"]);
    assert!(
        out.contains("origin") && out.contains("CN=Domain CA") && !out.contains("PRIVATE"),
        "{out}"
    );
    let (code, _, err) = run(&[
        "route",
        "create",
        "--name",
        "orders",
        "--upstream",
        "https://127.0.0.1:9",
        "--path-prefix",
        "/orders",
        "--credential",
        "origin",
        "--upstream-trust-bundle",
        "partners",
        "--upstream-server-name",
        "orders.internal",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["credential", "delete", "origin"]);
    assert_eq!(code, 1, "{err}");
    let (code, out, _) = run(&["route", "update", "orders", "--strip-prefix", "true"]);
    assert_eq!(code, 0);
    assert!(out.contains("true"));
    // Changing one TLS setting keeps the others.
    let (code, _, err) = run(&[
        "route",
        "update",
        "orders",
        "--require-upstream-mtls",
        "true",
    ]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&["--json", "route", "show", "orders"]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        shown["upstream_tls"],
        serde_json::json!({"trust_bundle": "partners", "server_name": "orders.internal", "require_mtls": true}),
        "{out}"
    );

    // A sidecar presenting a fixed credential: listed, not rotatable; issuing needs a CA.
    let (code, out, err) = run(&[
        "sidecar",
        "create",
        "--name",
        "egress",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "https://127.0.0.1:9",
        "--upstream-trust-bundle",
        "partners",
        "--credential",
        "origin",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("egress") && out.contains("127.0.0.1:"),
        "{out}"
    );
    let (code, _, err) = run(&["sidecar", "rotate", "egress"]);
    assert_eq!(code, 1);
    assert!(err.contains("fixed credential"), "{err}");
    let (code, _, err) = run(&[
        "sidecar",
        "create",
        "--name",
        "issued",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "https://127.0.0.1:9",
        "--common-name",
        "billing",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no CA") && err.contains("symbolon ca init"),
        "{err}"
    );
    let (_, out, _) = run(&["sidecar", "list"]);
    assert!(out.contains("egress") && !out.contains("issued"), "{out}");
    // A sidecar to a plain http:// upstream: no TLS flag sends no upstream_tls.
    let (code, _, err) = run(&[
        "sidecar",
        "create",
        "--name",
        "plain",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["sidecar", "delete", "plain"]);
    assert_eq!(code, 0, "{err}");

    // Export, then import the same file: nothing changes.
    let (code, _, err) = run(&["export", "-o", "exported.toml"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["import", "exported.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("created: -") && out.contains("updated: -"),
        "{out}"
    );

    let (code, out, _) = run(&["audit", "--limit", "3"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("config.import") && out.contains("cert:"),
        "{out}"
    );
    // Each change is also a JSON log line.
    let mut p = p;
    let line = p.wait_for("\"target\":\"symbolon::audit\"");
    let log: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(log["action"], "bundle.create");
    assert!(log["actor"].as_str().unwrap().starts_with("cert:"));

    // Without the admin certificate: 401 and exit 1.
    let (code, _, err) = run(&[
        "--admin-cert",
        "data/client.pem",
        "--admin-key",
        "data/client.key",
        "bundle",
        "list",
    ]);
    assert_ne!(code, 0, "{err}");
    let (code, _, err) = run(&["--token", "nope", "bundle", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("401 unauthorized"), "{err}");

    drop(p);
    // The server is gone: exit 69.
    let (code, _, err) = run(&["bundle", "list"]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

#[test]
fn cli_manages_policies_identities_and_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut args = vec!["serve", "--data-dir", "data"];
    args.extend(PORTS);
    let p = Process::spawn(&args, dir);
    let server = format!("https://127.0.0.1:{}", p.admin_addr.unwrap().port());
    let run = |extra: &[&str]| {
        let mut a = vec!["--data-dir", "data", "--server", server.as_str()];
        a.extend_from_slice(extra);
        cli(dir, &a)
    };
    let (code, out, err) = run(&[
        "policy",
        "create",
        "--name",
        "partners",
        "--rate-limit",
        "100/1m",
        "--quota",
        "1000/day",
        "--access",
        "api:GET,POST:/api",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("partners") && out.contains("\"per\":\"1m\""),
        "{out}"
    );
    let (code, _, err) = run(&[
        "policy",
        "create",
        "--name",
        "broken",
        "--rate-limit",
        "lots",
    ]);
    assert_eq!(code, 64, "{err}");
    // An update by id keeps the policy's name.
    let (_, out, _) = run(&["--json", "policy", "show", "partners"]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = shown["id"].as_str().unwrap().to_string();
    let (code, _, err) = run(&[
        "policy",
        "update",
        &id,
        "--rate-limit",
        "100/1m",
        "--quota",
        "1000/day",
        "--access",
        "api:GET,POST:/api",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["--json", "policy", "show", "partners"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id), "{out}");
    let (code, out, err) = run(&[
        "identity",
        "create",
        "--name",
        "demo",
        "--cert",
        "data/client.pem",
        "--policy",
        "partners",
        "--with-token",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("token (shown once") && err.contains("sym_"),
        "{err}"
    );
    assert!(out.contains("demo") && out.contains("partners"), "{out}");
    let (code, _, err) = run(&[
        "identity",
        "create",
        "--name",
        "leaky",
        "--cert",
        "data/client.key",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("private_key_not_allowed"), "{err}");
    std::fs::write(
        dir.join("rules.json"),
        r#"[{"effect": "deny", "cn": "blocked"}]"#,
    )
    .unwrap();
    let (code, out, _) = run(&["rules", "set", "rules.json"]);
    assert_eq!(code, 0);
    assert!(out.contains("deny") && out.contains("blocked"));
    std::fs::write(dir.join("authz.json"), r#"{"auth": "mtls"}"#).unwrap();
    let (code, _, err) = run(&[
        "route",
        "create",
        "--name",
        "api",
        "--upstream",
        "builtin:echo",
        "--path-prefix",
        "/api",
        "--authz",
        "authz.json",
    ]);
    assert_eq!(code, 0, "{err}");
    // The demo client is that identity: its request is counted.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--cacert",
            "data/ca.pem",
            "--cert",
            "data/client.pem",
            "--key",
            "data/client.key",
        ])
        .arg(format!("https://localhost:{}/api/x", p.tls_addr.port()))
        .current_dir(dir)
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("SUCCESS"),
        "{body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out, _) = run(&["--json", "identity", "usage", "demo"]);
    assert_eq!(code, 0);
    let usage: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(usage[0]["requests"], 1);
    let (code, out, _) = run(&["identity", "update", "demo", "--active", "false"]);
    assert_eq!(code, 0);
    assert!(out.contains("false"));
    let (code, _, _) = run(&["transition-report"]);
    assert_eq!(code, 0);
    // Export and re-import: idempotent, authorization included.
    let (code, _, _) = run(&["export", "-o", "all.toml"]);
    assert_eq!(code, 0);
    let text = std::fs::read_to_string(dir.join("all.toml")).unwrap();
    assert!(
        text.contains("[[policies]]")
            && text.contains("[[identities]]")
            && text.contains("[[global_rules]]"),
        "{text}"
    );
    let (code, out, err) = run(&["import", "all.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("created: -") && out.contains("updated: -"),
        "{out}"
    );
    let (code, _, _) = run(&["policy", "delete", "partners"]);
    assert_eq!(code, 1, "a policy in use cannot be deleted");
}

#[test]
fn cert_inspect_describes_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::root("Inspect CA");
    let leaf = ca.leaf(
        LeafSpec::client("svc")
            .spiffe("spiffe://acme.test/svc")
            .expired(),
    );
    std::fs::write(
        tmp.path().join("chain.pem"),
        format!("{}{}", leaf.cert_pem, ca.pem()),
    )
    .unwrap();
    let (code, out, err) = cli(tmp.path(), &["cert", "inspect", "chain.pem"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("certificate #1 of 2") && out.contains("CN=svc"),
        "{out}"
    );
    assert!(out.contains("expired 3 days ago"), "{out}");
    assert!(
        out.contains("usage:        clientAuth")
            && out.contains("SPIFFE ID:    spiffe://acme.test/svc"),
        "{out}"
    );
    assert!(
        out.contains("CA certificate (can issue certificates)") && out.contains("ECDSA P-256"),
        "{out}"
    );
    std::fs::write(tmp.path().join("key.pem"), &leaf.key_pem).unwrap();
    let (code, _, err) = cli(tmp.path(), &["cert", "inspect", "key.pem"]);
    assert_eq!(code, 64);
    assert!(err.contains("private key"), "{err}");
}

/// Runs the CLI with the CA passphrase in the environment.
fn ca_cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_symbolon"))
        .args(args)
        .current_dir(dir)
        .env("SYMBOLON_CA_PASSPHRASE", "correct horse battery staple")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn built_in_ca_issues_certificates_that_openssl_verifies() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for alg in ["p256", "p384", "ed25519", "rsa2048"] {
        let ca_dir = format!("ca-{alg}");
        let (code, out, err) = ca_cli(
            dir,
            &["ca", "init", "--ca-dir", &ca_dir, "--algorithm", alg],
        );
        assert_eq!(code, 0, "{alg}: {err}");
        assert!(out.contains("encrypted, 0600"));
        assert_eq!(
            std::fs::metadata(dir.join(&ca_dir))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700,
            "the CA directory is private"
        );
        for key in ["root.key", "intermediate.key"] {
            let path = dir.join(&ca_dir).join(key);
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("-----BEGIN SYMBOLON ENCRYPTED PRIVATE KEY-----"),
                "{alg}: the key is not encrypted"
            );
        }
        let (code, out, err) = ca_cli(
            dir,
            &[
                "ca",
                "issue",
                "--ca-dir",
                &ca_dir,
                "--name",
                &format!("svc-{alg}"),
                "--spiffe-id",
                "spiffe://acme.test/svc",
                "--profile",
                "spiffe",
            ],
        );
        assert_eq!(code, 0, "{alg}: {err}");
        assert!(out.contains("valid for another 24 hours"), "{out}");
        let (ok, text) = openssl(
            dir,
            &[
                "verify",
                "-CAfile",
                &format!("{ca_dir}/root.pem"),
                "-untrusted",
                &format!("{ca_dir}/intermediate.pem"),
                &format!("svc-{alg}.pem"),
            ],
        );
        assert!(ok && text.contains(": OK"), "{alg}: {text}");
    }
    // A CSR made with openssl req is signed; its lifetime is capped by what was asked.
    let (ok, text) = openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "dev.key",
            "-subj",
            "/CN=device-1",
            "-out",
            "dev.csr",
        ],
    );
    assert!(ok, "{text}");
    let (code, out, err) = ca_cli(
        dir,
        &[
            "ca",
            "sign",
            "dev.csr",
            "--ca-dir",
            "ca-p256",
            "--lifetime",
            "2h",
        ],
    );
    assert_eq!(code, 0, "{err}");
    std::fs::write(dir.join("dev.pem"), &out).unwrap();
    let (ok, text) = openssl(
        dir,
        &[
            "verify",
            "-CAfile",
            "ca-p256/root.pem",
            "-untrusted",
            "ca-p256/intermediate.pem",
            "-purpose",
            "sslclient",
            "dev.pem",
        ],
    );
    assert!(ok && text.contains(": OK"), "{text}");
    assert!(err.contains("valid for another 2 hours"), "{err}");
    // A forged CSR (signature broken) is refused.
    let csr = std::fs::read_to_string(dir.join("dev.csr")).unwrap();
    let lines: Vec<&str> = csr.lines().collect();
    let mut forged = lines.clone();
    let mid = lines.len() / 2;
    let flipped: String = lines[mid].chars().rev().collect();
    forged[mid] = &flipped;
    std::fs::write(dir.join("forged.csr"), forged.join("\n")).unwrap();
    let (code, _, err) = ca_cli(dir, &["ca", "sign", "forged.csr", "--ca-dir", "ca-p256"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("CSR is not valid"), "{err}");
    // The wrong passphrase cannot open the CA.
    let out = Command::new(env!("CARGO_BIN_EXE_symbolon"))
        .args(["ca", "sign", "dev.csr", "--ca-dir", "ca-p256"])
        .current_dir(dir)
        .env("SYMBOLON_CA_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
    // An offline root: its key is written elsewhere, not in the CA directory.
    let (code, _, err) = ca_cli(
        dir,
        &[
            "ca",
            "init",
            "--ca-dir",
            "ca-offline",
            "--root-key-out",
            "offline-root.key",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!dir.join("ca-offline/root.key").exists() && dir.join("offline-root.key").exists());
    let (code, _, err) = ca_cli(
        dir,
        &[
            "ca",
            "issue",
            "--ca-dir",
            "ca-offline",
            "--name",
            "still-works",
        ],
    );
    assert_eq!(code, 0, "{err}");
}

/// Issue 10: a route without a host on an `off` domain is announced at load, and a request on a
/// connection whose certificate was revoked meanwhile is logged as `REVOKED`, not `SUCCESS`.
#[test]
fn open_routes_warn_and_revoked_requests_log_revoked() {
    let h = Harness::new();
    let ca = TestCa::root("Log CA");
    h.write("bundle.pem", &ca.pem());
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\naccess_log = true\nwatch_files = false\n{}{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("bundle.pem"), "require"),
        h.domain("open.test", None, "off"),
        route_all("builtin:echo")
    );
    let config = h.write("symbolon.toml", &text);
    let config = config.to_str().unwrap().to_string();
    let mut p = Process::spawn(&["serve", "--config", &config], h.dir.path());
    let warning = p
        .early
        .iter()
        .find(|l| l.contains("route has no host and no authorization"))
        .unwrap_or_else(|| panic!("no warning about the open route: {:?}", p.early));
    assert!(warning.contains("open.test"), "{warning}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let leaf = ca.leaf(LeafSpec::client("soon-revoked"));
    let spec = h.client().cert(&leaf);
    let mut conn = rt
        .block_on(Conn::open(p.tls_addr, "api.test", &spec))
        .unwrap();
    assert_eq!(rt.block_on(conn.get("/")).unwrap().status, 200);
    let first = p.wait_for("\"target\":\"symbolon::access\"");
    assert!(first.contains("\"verify\":\"SUCCESS\""), "{first}");
    let server = format!("https://localhost:{}", p.admin_addr.unwrap().port());
    let (cert, key) = (h.path("admin.crt"), h.path("admin.key"));
    let admin = symbolon::client::AdminClient::new(symbolon::client::ClientOptions {
        server: &server,
        cacert: &h.path("server-ca.pem"),
        cert: Some(cert.as_path()),
        key: Some(key.as_path()),
        token: None,
    })
    .unwrap();
    let body = serde_json::json!({"certificate_pem": leaf.cert_pem}).to_string();
    let (status, _) = rt
        .block_on(admin.call(
            http::Method::POST,
            "/api/v1/revocations",
            Some(("application/json", body.into_bytes())),
        ))
        .unwrap();
    assert_eq!(status.as_u16(), 201);
    // The open connection ends at once, and the log says why.
    let line = p.wait_for("closing the connection");
    assert!(line.contains("FAILED:revoked"), "{line}");
    assert!(line.contains(&leaf.fingerprint()), "{line}");
    assert!(
        rt.block_on(conn.get("/")).is_err(),
        "the connection stayed open"
    );
}

#[test]
fn a_flood_of_idle_connections_does_not_starve_the_data_plane() {
    // 256 descriptors in all: before issue 12, ~1,000 idle connections to the metrics or admin
    // port used them up and the data plane stopped answering.
    let _ = rlimit::increase_nofile_limit(8192);
    let h = Harness::new();
    let ca = TestCa::root("Flood CA");
    h.write("clients.pem", &ca.pem());
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\naccess_log = false\n{}{}{}",
        h.admin_section(),
        h.domain("api.test", Some("clients.pem"), "optional"),
        route_all("builtin:echo")
    );
    let config = h.write("symbolon.toml", &text);
    let config = config.to_str().unwrap().to_string();
    let mut p = Process::spawn_with_nofile(&["serve", "--config", &config], h.dir.path(), 256);
    let caps = p
        .early
        .iter()
        .find(|l| l.contains("connection caps"))
        .cloned()
        .unwrap_or_else(|| p.wait_for("connection caps"));
    let caps: serde_json::Value = serde_json::from_str(&caps).unwrap();
    assert_eq!(caps["open_files"], 256, "{caps}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let leaf = ca.leaf(LeafSpec::client("legit"));
    let spec = h.client().cert(&leaf);
    let (admin, metrics, tls) = (p.admin_addr.unwrap(), p.metrics_addr.unwrap(), p.tls_addr);
    rt.block_on(async {
        let mut held = Vec::new();
        for addr in [metrics, admin] {
            for _ in 0..600 {
                if let Ok(c) = tokio::net::TcpStream::connect(addr).await {
                    held.push(c);
                }
            }
        }
        // Idle connections to the data plane from one address stop at its per-address cap.
        for _ in 0..300 {
            if let Ok(c) = tokio::net::TcpStream::connect(tls).await {
                held.push(c);
            }
        }
        // The metrics port still answers another address: one address gets a quarter of it.
        {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut tcp = socket.connect(metrics).await.unwrap();
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            tcp.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        }
        // Another client (127.0.0.2) is served at once, over and over.
        for _ in 0..20 {
            let mut conn = Conn::open_from("127.0.0.2".parse().unwrap(), tls, "api.test", &spec)
                .await
                .unwrap();
            let r = conn.get("/").await.unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.seen("x-client-verify").unwrap(), "SUCCESS");
        }
        drop(held);
    });
    let body = rt.block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(metrics).await.unwrap();
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        out
    });
    for want in [
        "symbolon_connections_refused_total{listener=\"metrics\",reason=\"per_ip_limit\"}",
        "symbolon_connections_refused_total{listener=\"admin\",reason=\"per_ip_limit\"}",
        "symbolon_connections_refused_total{listener=\"data\",reason=\"per_ip_limit\"}",
    ] {
        assert!(body.contains(want), "missing {want}");
    }
}

#[test]
fn an_interrupted_first_serve_does_not_block_the_next_one() {
    // What a first `serve` killed half-way through left behind: some files, no config, and
    // its staging directory.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join(".init-12345")).unwrap();
    std::fs::write(data.join("ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    std::fs::write(data.join("server.key"), "").unwrap();
    let mut args = vec!["serve", "--data-dir", "data"];
    args.extend(PORTS);
    let p = Process::spawn(&args, tmp.path());
    let banner = p.stderr_text();
    assert!(banner.contains("created data/"), "{banner}");
    assert!(!data.join(".init-12345").exists());
    assert!(data.join("symbolon.toml").exists());
    let pem = std::fs::read_to_string(data.join("ca.pem")).unwrap();
    assert!(symbolon::pki::parse_certs(pem.as_bytes(), &data).is_ok());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn anonymous_certificates_with_huge_subjects_stay_bounded() {
    // 1,500 self-signed certificates of 40 kB (20 kB subjects and issuers; rustls takes no
    // bigger) on an optional domain: before issue 12
    // every one was kept whole in the transition report and the inventory (hundreds of MB)
    // and the real client could be pushed out of the report.
    let h = Harness::new();
    let ca = TestCa::root("Real CA");
    h.write("clients.pem", &ca.pem());
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\naccess_log = false\n# Session tickets carry the client certificate: two 40 kB tickets overflow a client's buffer.\ntls13_session_tickets = 0\n{}{}[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"builtin:echo\"\n[routes.authz]\nauth = \"mtls\"\nenforce = false\n",
        h.admin_section(),
        h.domain("api.test", Some("clients.pem"), "optional"),
    );
    let config = h.write("symbolon.toml", &text);
    let config = config.to_str().unwrap().to_string();
    let p = Process::spawn(&["serve", "--config", &config], h.dir.path());
    let pid = p.child.as_ref().unwrap().id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tls = p.tls_addr;
    let real = h
        .client()
        .cert(&ca.leaf(LeafSpec::client("real-but-unregistered")));
    let key = rcgen::KeyPair::generate().unwrap();
    let big = "x".repeat(20_000);
    let specs: Vec<ClientSpec> = (0..1_500u64)
        .map(|i| {
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationalUnitName, big.as_str());
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, format!("anon-{i}"));
            params.serial_number = Some(rcgen::SerialNumber::from(i + 1));
            let cert = params.self_signed(&key).unwrap();
            let leaf = crate::support::pki::Leaf {
                der: cert.der().clone(),
                cert_pem: cert.pem(),
                chain_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            };
            h.client().cert(&leaf)
        })
        .collect();
    // Warm up (allocator, caches), then measure.
    rt.block_on(async {
        for _ in 0..3 {
            assert_eq!(get(tls, "api.test", &real, "/").await.unwrap().status, 200);
        }
    });
    let before = rss_kib(pid);
    rt.block_on(async {
        for chunk in specs.chunks(50) {
            let mut tasks = Vec::new();
            for spec in chunk {
                let spec = spec.clone();
                tasks.push(tokio::spawn(async move {
                    get(tls, "api.test", &spec, "/").await.map(|r| r.status)
                }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap().unwrap(), 200);
            }
            // The real client keeps coming.
            assert_eq!(get(tls, "api.test", &real, "/").await.unwrap().status, 200);
        }
    });
    let grown_mib = rss_kib(pid).saturating_sub(before) / 1024;
    assert!(grown_mib < 40, "memory grew by {grown_mib} MiB");
    let server = format!("https://localhost:{}", p.admin_addr.unwrap().port());
    let (cert, keyf) = (h.path("admin.crt"), h.path("admin.key"));
    let admin = symbolon::client::AdminClient::new(symbolon::client::ClientOptions {
        server: &server,
        cacert: &h.path("server-ca.pem"),
        cert: Some(cert.as_path()),
        key: Some(keyf.as_path()),
        token: None,
    })
    .unwrap();
    let (status, body) = rt
        .block_on(admin.call(http::Method::GET, "/api/v1/transition-report", None))
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let rows = report.as_array().unwrap();
    assert!(rows.len() <= 11_000, "{}", rows.len());
    assert!(
        rows.iter()
            .all(|r| r["subject"].as_str().unwrap().len() <= 300),
        "subjects are cut"
    );
    let real_row = rows
        .iter()
        .find(|r| {
            r["subject"]
                .as_str()
                .unwrap()
                .contains("real-but-unregistered")
        })
        .expect("the real client is still in the report");
    assert!(real_row["count"].as_u64().unwrap() >= 30);
    let (_, expiring) = rt
        .block_on(admin.call(http::Method::GET, "/api/v1/expiring?within=3650d", None))
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&expiring).contains("anon-"),
        "certificates that failed verification are not in the inventory"
    );
}

/// A command line clap refuses (a missing companion flag, an unknown flag) exits 64 like every
/// other usage error; help and version exit 0.
#[test]
fn usage_errors_exit_64() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_symbolon"))
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["domain", "update", "x", "--cert", "f"][..],
        &["bundle", "list", "--no-such-flag"],
        &["no-such-command"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
    assert_eq!(run(&["--help"]).status.code(), Some(0));
    assert_eq!(run(&["--version"]).status.code(), Some(0));
}

/// Output into a closed pipe (`symbolon … | head`) ends quietly: no panic, no backtrace.
#[test]
fn output_into_a_closed_pipe_does_not_panic() {
    let h = Harness::new();
    let file = h.write("ca.pem", &h.server_ca.pem());
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_symbolon"))
        .args(["cert", "inspect", file.to_str().unwrap()])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}
