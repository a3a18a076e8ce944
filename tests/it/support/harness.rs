//! Starts the real gateway in-process on 127.0.0.1:0 from a config file written by the test,
//! with server certificates from a test CA. `listen` is bound before `start` returns, so no
//! test waits or sleeps for readiness.

use std::path::PathBuf;

use symbolon::gateway::{Gateway, Overrides};
use tempfile::TempDir;

use super::client::ClientSpec;
use super::pki::{LeafSpec, TestCa};

pub struct Harness {
    pub dir: TempDir,
    pub server_ca: TestCa,
    pub admin_ca: TestCa,
}

/// The admin token the harness configures (its SHA-256 goes in the config).
pub const ADMIN_TOKEN: &str = "test-token-0123456789";

impl Harness {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            server_ca: TestCa::root("Test Server CA"),
            admin_ca: TestCa::root("Test Admin CA"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file atomically (write + rename), as deploy tools do.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// A `[[domains]]` section for `name`, with a fresh server certificate.
    pub fn domain(&self, name: &str, bundle: Option<&str>, mode: &str) -> String {
        let leaf = self.server_ca.leaf(LeafSpec::server(name));
        self.write(&format!("{name}.crt"), &leaf.chain_pem);
        self.write(&format!("{name}.key"), &leaf.key_pem);
        let bundle = bundle
            .map(|b| format!("trust_bundle = \"{b}\"\n"))
            .unwrap_or_default();
        format!(
            "[[domains]]\nnames = [\"{name}\"]\ncert = \"{name}.crt\"\nkey = \"{name}.key\"\n{bundle}mtls = \"{mode}\"\n\n"
        )
    }

    /// A `[[domains]]` section like [`Self::domain`] whose bundle has CRLs (file names or
    /// URLs); `extra` adds settings such as `crl_refresh = "1s"\n`.
    pub fn domain_with_crls(
        &self,
        name: &str,
        bundle: &str,
        mode: &str,
        crls: &[&str],
        extra: &str,
    ) -> String {
        let list: Vec<String> = crls.iter().map(|c| format!("\"{c}\"")).collect();
        self.domain(name, Some(bundle), mode).replace(
            "mtls =",
            &format!("crls = [{}]\n{extra}mtls =", list.join(", ")),
        )
    }

    /// Writes `symbolon.toml` (listeners on port 0, file watching as given) and returns its path.
    pub fn config(&self, body: &str) -> PathBuf {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\naccess_log = false\n{body}"
        );
        self.write("symbolon.toml", &text)
    }

    /// An `[admin]` section on 127.0.0.1:0, with an admin CA, an admin certificate
    /// (`admin.crt`/`admin.key`) and the token [`ADMIN_TOKEN`] named "ci".
    pub fn admin_section(&self) -> String {
        let server = self.server_ca.leaf(LeafSpec::server("localhost"));
        self.write("admin-server.crt", &server.chain_pem);
        self.write("admin-server.key", &server.key_pem);
        self.write("admin-ca.pem", &self.admin_ca.pem());
        let admin = self.admin_ca.leaf(LeafSpec::client("admin"));
        self.write("admin.crt", &admin.chain_pem);
        self.write("admin.key", &admin.key_pem);
        self.write("server-ca.pem", &self.server_ca.pem());
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, ADMIN_TOKEN.as_bytes());
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ncert = \"admin-server.crt\"\nkey = \"admin-server.key\"\nclient_ca = \"admin-ca.pem\"\nmax_upload_bytes = 65536\n\n[[admin.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\n\n",
            symbolon::pki::hex(digest.as_ref())
        )
    }

    /// An admin API client: with the admin certificate, or with `token`.
    pub fn admin_client(&self, gw: &Gateway, token: Option<&str>) -> symbolon::client::AdminClient {
        let server = format!("https://localhost:{}", gw.admin_addr().unwrap().port());
        let (cert, key) = (self.path("admin.crt"), self.path("admin.key"));
        symbolon::client::AdminClient::new(symbolon::client::ClientOptions {
            server: &server,
            cacert: &self.path("server-ca.pem"),
            cert: token.is_none().then_some(cert.as_path()),
            key: token.is_none().then_some(key.as_path()),
            token: token.map(str::to_string),
        })
        .unwrap()
    }

    pub async fn start(&self, body: &str) -> Gateway {
        let path = self.config(body);
        match Gateway::start(&path, Overrides::default()).await {
            Ok(g) => g,
            Err(e) => panic!("gateway did not start: {e}"),
        }
    }

    pub async fn start_err(&self, body: &str) -> String {
        let path = self.config(body);
        match Gateway::start(&path, Overrides::default()).await {
            Ok(_) => panic!("gateway started with a bad configuration"),
            Err(e) => e.to_string(),
        }
    }

    pub fn client(&self) -> ClientSpec {
        ClientSpec::new(&self.server_ca)
    }
}

/// `[[routes]]` sending everything to `upstream`.
pub fn route_all(upstream: &str) -> String {
    format!("[[routes]]\nname = \"all\"\npath_prefix = \"/\"\nupstream = \"{upstream}\"\n\n")
}
