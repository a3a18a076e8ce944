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
}

impl Harness {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            server_ca: TestCa::root("Test Server CA"),
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

    /// Writes `symbolon.toml` (listeners on port 0, file watching as given) and returns its path.
    pub fn config(&self, body: &str) -> PathBuf {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\naccess_log = false\n{body}"
        );
        self.write("symbolon.toml", &text)
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
