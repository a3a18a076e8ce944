//! The same scenarios with real `curl` and `openssl s_client` processes (OpenSSL on the client
//! side, as most partners' clients are).

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt};
use tokio::process::Command;

use crate::support::*;

struct Setup {
    h: Harness,
    gw: symbolon::gateway::Gateway,
    ca: TestCa,
    ca_b: TestCa,
    server_ca: PathBuf,
}

async fn setup(mode: &str) -> Setup {
    let h = Harness::new();
    let ca = TestCa::root("Interop Client CA");
    let ca_b = TestCa::root("Interop Partner B CA");
    h.write("clients.pem", &ca.pem());
    h.write("b.pem", &ca_b.pem());
    let server_ca = h.write("server-ca.pem", &h.server_ca.pem());
    let body = format!(
        "{}{}{}{}",
        h.domain("api.test", Some("clients.pem"), mode),
        h.domain("other.test", None, "off"),
        h.domain("b.test", Some("b.pem"), mode)
            .replace("mtls =", "max_chain_depth = 1\nmtls ="),
        route_all("builtin:echo")
    );
    let gw = h.start(&body).await;
    Setup {
        h,
        gw,
        ca,
        ca_b,
        server_ca,
    }
}

impl Setup {
    /// Writes a client certificate and key; returns their paths.
    fn client_files(&self, name: &str, leaf: &Leaf) -> (String, String) {
        let c = self.h.write(&format!("{name}.crt"), &leaf.chain_pem);
        let k = self.h.write(&format!("{name}.key"), &leaf.key_pem);
        (c.to_str().unwrap().into(), k.to_str().unwrap().into())
    }

    /// Runs curl against https://{host}:{port}{path}; returns (exit code, stdout, stderr).
    async fn curl(
        &self,
        host: &str,
        creds: Option<&(String, String)>,
        extra: &[&str],
    ) -> (i32, String, String) {
        let port = self.gw.tls_addr().port();
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            self.server_ca.to_str().unwrap(),
        ])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code} %{http_version}"]);
        if let Some((c, k)) = creds {
            cmd.args(["--cert", c, "--key", k]);
        }
        cmd.args(extra).arg(format!("https://{host}:{port}/"));
        let out = cmd
            .output()
            .await
            .expect("curl must be installed (.ci/run installs it)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// Runs `openssl s_client`, sends one HTTP/1.1 request, returns all output.
    async fn s_client(&self, creds: Option<&(String, String)>, extra: &[&str]) -> String {
        let port = self.gw.tls_addr().port();
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "api.test",
        ])
        .args([
            "-CAfile",
            self.server_ca.to_str().unwrap(),
            "-verify_return_error",
            "-ign_eof",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some((c, k)) = creds {
            cmd.args(["-cert", c, "-key", k]);
        }
        let mut child = cmd
            .spawn()
            .expect("openssl must be installed (.ci/run installs it)");
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"GET /s_client HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        drop(stdin);
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(15), child.wait_with_output())
                .await
                .expect("openssl s_client hung")
                .unwrap();
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

use crate::support::pki::Leaf;

#[tokio::test]
async fn curl_require_mode() {
    let s = setup("require").await;
    let good = s.client_files(
        "good",
        &s.ca
            .leaf(LeafSpec::client("curl-good").spiffe("spiffe://t.test/curl")),
    );
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, out, err) = s.curl("api.test", Some(&good), &[flag]).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.ends_with(&format!("200 {version}")), "{out}");
        assert!(out.contains("\"x-client-verify\":\"SUCCESS\""), "{out}");
        assert!(
            out.contains("\"x-client-spiffe-id\":\"spiffe://t.test/curl\""),
            "{out}"
        );
    }
    for flag in ["--tlsv1.2 --tls-max 1.2", "--tlsv1.3"] {
        let flags: Vec<&str> = flag.split(' ').collect();
        let (code, _, err) = s.curl("api.test", None, &flags).await;
        assert_ne!(code, 0);
        assert!(
            err.contains("certificate required") || err.contains("handshake failure"),
            "{flag}: {err}"
        );
    }
    let other = TestCa::root("Unknown");
    let cases = [
        ("unknown", other.leaf(LeafSpec::client("x")), "unknown ca"),
        (
            "expired",
            s.ca.leaf(LeafSpec::client("x").expired()),
            "certificate expired",
        ),
        (
            "early",
            s.ca.leaf(LeafSpec::client("x").not_yet_valid()),
            "certificate expired",
        ),
        (
            "server-eku",
            s.ca.leaf(LeafSpec::client("x").eku(Eku::Server)),
            "unsupported certificate",
        ),
    ];
    for (name, leaf, alert) in cases {
        let files = s.client_files(name, &leaf);
        let (code, _, err) = s.curl("api.test", Some(&files), &[]).await;
        assert_ne!(code, 0, "{name}");
        assert!(
            err.contains(alert),
            "{name}: curl must see the real alert, got: {err}"
        );
    }
    // A chain through an intermediate (curl sends the intermediates in the --cert file).
    let inter = s.ca.intermediate("Interop Issuing CA");
    let chained = s.client_files("chained", &inter.leaf(LeafSpec::client("via-int")));
    let (code, out, err) = s.curl("api.test", Some(&chained), &[]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"x-client-verify\":\"SUCCESS\"") && out.contains("client-cert-chain"),
        "{out}"
    );
    // SNI picks the bundle: partner B's certificate works on b.test only.
    let b = s.client_files("b", &s.ca_b.leaf(LeafSpec::client("partner-b")));
    let (code, out, _) = s.curl("b.test", Some(&b), &[]).await;
    assert_eq!(code, 0);
    assert!(out.ends_with("200 1.1") || out.ends_with("200 2"), "{out}");
    let (code, _, err) = s.curl("api.test", Some(&b), &[]).await;
    assert!(code != 0 && err.contains("unknown ca"), "{err}");
    // b.test allows one CA certificate above the leaf: a chain through an intermediate is too deep.
    let deep = s.client_files(
        "deep",
        &s.ca_b
            .intermediate("B Issuing")
            .leaf(LeafSpec::client("deep")),
    );
    let (code, _, err) = s.curl("b.test", Some(&deep), &[]).await;
    assert!(code != 0 && err.contains("alert"), "{err}");
    // Host differs from SNI: 421.
    let (_, out, _) = s.curl("other.test", None, &["-H", "Host: api.test"]).await;
    assert!(out.ends_with("421 1.1") || out.ends_with("421 2"), "{out}");
}

#[tokio::test]
async fn curl_optional_mode() {
    let s = setup("optional").await;
    let other = TestCa::root("Unknown");
    let cases = [
        ("none", None, "NONE"),
        (
            "unknown",
            Some(other.leaf(LeafSpec::client("x"))),
            "FAILED:unknown_ca",
        ),
        (
            "expired",
            Some(s.ca.leaf(LeafSpec::client("x").expired())),
            "FAILED:expired",
        ),
        ("good", Some(s.ca.leaf(LeafSpec::client("x"))), "SUCCESS"),
    ];
    for (name, leaf, verdict) in cases {
        let files = leaf.map(|l| s.client_files(name, &l));
        let (code, out, err) = s
            .curl(
                "api.test",
                files.as_ref(),
                &["-H", "X-Client-Verify: SUCCESS"],
            )
            .await;
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.ends_with("200 2"), "{name}: {out}");
        assert!(
            out.contains(&format!("\"x-client-verify\":\"{verdict}\"")),
            "{name}: {out}"
        );
    }
}

#[tokio::test]
async fn openssl_s_client() {
    let s = setup("require").await;
    let good = s.client_files("good", &s.ca.leaf(LeafSpec::client("s-client")));
    for extra in [&["-tls1_3"][..], &["-tls1_2"][..]] {
        let out = s.s_client(Some(&good), extra).await;
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
        assert!(out.contains("HTTP/1.1 200"), "{extra:?}: {out}");
        assert!(out.contains("\"x-client-verify\":\"SUCCESS\""), "{out}");
    }
    let out = s.s_client(None, &["-tls1_3"]).await;
    assert!(out.contains("alert certificate required"), "{out}");
    assert!(!out.contains("HTTP/1.1 200"));
    let stranger = s.client_files(
        "stranger",
        &TestCa::root("Unknown").leaf(LeafSpec::client("x")),
    );
    let out = s.s_client(Some(&stranger), &["-tls1_3"]).await;
    assert!(out.contains("alert unknown ca"), "{out}");
    // The CertificateRequest names the acceptable CA (so clients pick the right certificate).
    assert!(
        out.contains("Acceptable client certificate CA names")
            && out.contains("CN = Interop Client CA"),
        "{out}"
    );
}

#[tokio::test]
async fn tls12_renegotiation_gets_no_renegotiation_at_once() {
    let s = setup("require").await;
    let good = s.client_files("reneg", &s.ca.leaf(LeafSpec::client("reneg")));
    let port = s.gw.tls_addr().port();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "api.test",
            "-tls1_2",
            "-CAfile",
            s.server_ca.to_str().unwrap(),
            "-cert",
            &good.0,
            "-key",
            &good.1,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Once the handshake is done (s_client prints the verify result), `R` on a line of its own
    // asks s_client to renegotiate, before any request.
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut text = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        text.push_str(&line);
        text.push('\n');
        if line.contains("Verify return code") {
            break;
        }
    }
    stdin.write_all(b"R\n").await.unwrap();
    let started = std::time::Instant::now();
    let rest = async {
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        child.wait_with_output().await.unwrap()
    };
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), rest)
        .await
        .expect("s_client hung after asking to renegotiate");
    let text = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("RENEGOTIATING"), "{text}");
    assert!(text.contains("no renegotiation"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(stdin);
}
