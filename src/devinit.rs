//! The embedded default: on the first `symbolon serve` without `--config`, create a data dir
//! with a development CA, a server certificate for localhost, a demo client certificate (PEM and
//! PKCS#12) and a config file, so that one command shows mTLS working. Later runs reuse it.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Name of the config file inside the data dir.
pub const CONFIG_FILE: &str = "symbolon.toml";

/// The files the embedded default writes besides the config.
const FILES: [&str; 11] = [
    "ca.pem",
    "admin-ca.pem",
    "admin-ca.key",
    "admin.pem",
    "admin.key",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
    "client.p12",
];
/// Password of the demo client's PKCS#12 file (it protects a throw-away demo key only).
pub const P12_PASSWORD: &str = "symbolon";
/// SPIFFE ID of the demo client certificate.
pub const DEMO_SPIFFE_ID: &str = "spiffe://symbolon.local/demo-client";

/// Why the data dir could not be created.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "cannot write {path}: {source}. Fix: run from a directory you can write to, or pass --data-dir"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate the development certificates: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("cannot write the PKCS#12 file: {0}")]
    P12(String),
}

/// What the data dir holds; returned so `serve` can print how to try it.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub created: bool,
}

impl DataDir {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Creates the data dir if it has no config yet; otherwise leaves everything as it is.
pub fn ensure(dir: &Path) -> Result<DataDir, InitError> {
    let config = dir.join(CONFIG_FILE);
    if config.exists() {
        return Ok(DataDir {
            dir: dir.to_owned(),
            config,
            created: false,
        });
    }
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| InitError::Write { path, source }
    };
    crate::pki::private_dir(dir).map_err(werr(dir))?;
    // Staging directories of interrupted runs.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".init-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    let now = OffsetDateTime::now_utc();
    let (client_ca, ca_key) = ca_params(now)?;
    let ca_cert = client_ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(client_ca, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_string()])?;
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    server.distinguished_name = dn("localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.not_before = now - Duration::minutes(5);
    server.not_after = now + Duration::days(365);
    let server_cert = server.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name = dn("demo-client");
    client
        .subject_alt_names
        .push(SanType::URI(DEMO_SPIFFE_ID.try_into()?));
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.not_before = now - Duration::minutes(5);
    client.not_after = now + Duration::days(365);
    let client_cert = client.signed_by(&client_key, &issuer)?;

    // The admin CA is kept apart from the client CA: a client certificate must never be an
    // admin certificate.
    let (admin_ca_params, admin_ca_key) = ca_params(now)?;
    let mut admin_ca_params = admin_ca_params;
    admin_ca_params.distinguished_name = dn("Symbolon Admin CA");
    let admin_ca_cert = admin_ca_params.self_signed(&admin_ca_key)?;
    let admin_issuer = Issuer::new(admin_ca_params, admin_ca_key);
    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin.distinguished_name = dn("symbolon-admin");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    admin.not_before = now - Duration::minutes(5);
    admin.not_after = now + Duration::days(365);
    let admin_cert = admin.signed_by(&admin_key, &admin_issuer)?;

    // Everything is written into a staging directory first and moved into place file by
    // file, the config last: a run interrupted half-way leaves no config, and the next run
    // starts over (it used to find half the files and refuse to start).
    let stage = dir.join(format!(".init-{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    crate::pki::private_dir(&stage).map_err(werr(&stage))?;
    write_public(&stage.join("ca.pem"), ca_cert.pem().as_bytes())?;
    write_public(&stage.join("admin-ca.pem"), admin_ca_cert.pem().as_bytes())?;
    write_secret(
        &stage.join("admin-ca.key"),
        admin_issuer.key().serialize_pem().as_bytes(),
    )?;
    write_public(&stage.join("admin.pem"), admin_cert.pem().as_bytes())?;
    write_secret(
        &stage.join("admin.key"),
        admin_key.serialize_pem().as_bytes(),
    )?;
    write_secret(
        &stage.join("ca.key"),
        issuer.key().serialize_pem().as_bytes(),
    )?;
    let server_chain = format!("{}{}", server_cert.pem(), ca_cert.pem());
    write_public(&stage.join("server.pem"), server_chain.as_bytes())?;
    write_secret(
        &stage.join("server.key"),
        server_key.serialize_pem().as_bytes(),
    )?;
    write_public(&stage.join("client.pem"), client_cert.pem().as_bytes())?;
    write_secret(
        &stage.join("client.key"),
        client_key.serialize_pem().as_bytes(),
    )?;
    let p12 = pkcs12(
        client_cert.der(),
        ca_cert.der(),
        &client_key.serialize_der(),
    )?;
    write_secret(&stage.join("client.p12"), &p12)?;
    write_public(&stage.join(CONFIG_FILE), default_config().as_bytes())?;
    for name in FILES.iter().chain([&CONFIG_FILE]) {
        fs::rename(stage.join(name), dir.join(name)).map_err(werr(&dir.join(name)))?;
    }
    let _ = fs::remove_dir(&stage);
    Ok(DataDir {
        dir: dir.to_owned(),
        config,
        created: true,
    })
}

fn ca_params(now: OffsetDateTime) -> Result<(CertificateParams, KeyPair), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn("Symbolon Development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(3650);
    Ok((params, key))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Symbolon (development)");
    dn.push(DnType::CommonName, cn);
    dn
}

fn pkcs12(cert: &[u8], ca: &[u8], key_pkcs8: &[u8]) -> Result<Vec<u8>, InitError> {
    pkcs12_with(cert, ca, key_pkcs8, "demo-client", P12_PASSWORD)
}

/// A PKCS#12 file with a certificate, its CA and its key, under `password`.
pub fn pkcs12_with(
    cert: &[u8],
    ca: &[u8],
    key_pkcs8: &[u8],
    alias: &str,
    password: &str,
) -> Result<Vec<u8>, InitError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let e = |err: p12_keystore::error::Error| InitError::P12(err.to_string());
    let key = PrivateKey::from_der(key_pkcs8).map_err(e)?;
    let mut certs = vec![Certificate::from_der(cert).map_err(e)?];
    if !ca.is_empty() {
        certs.push(Certificate::from_der(ca).map_err(e)?);
    }
    let chain = PrivateKeyChain::new(alias.as_bytes().to_vec(), key, certs);
    let mut store = KeyStore::new();
    store.add_entry(alias, KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().map_err(e)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    write_mode(path, bytes, 0o644)
}

/// Private keys are created 0600 from the start (never written wider, then narrowed).
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    write_mode(path, bytes, 0o600)
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InitError> {
    let werr = |source| InitError::Write {
        path: path.to_owned(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)
}

fn default_config() -> String {
    r#"# Symbolon configuration, created by the first `symbolon serve`.
# Paths are relative to this file. Edit it and save: changes apply without a restart
# (or send SIGHUP). A broken change is refused and the running configuration stays.

listen = "127.0.0.1:8443"
metrics_listen = "127.0.0.1:9464"
default_domain = "localhost"

[[domains]]
names = ["localhost", "127.0.0.1", "::1"]
cert = "server.pem"          # server certificate followed by its chain
key = "server.key"
trust_bundle = "ca.pem"      # CA certificates that client certificates must chain to
mtls = "require"             # require | optional | off

[[routes]]
name = "echo"
path_prefix = "/"
upstream = "builtin:echo"    # answers with the identity headers an upstream would receive

# The admin API (and the CLI's target). Bundles, domains, credentials and routes created
# through it live in the store (symbolon.db) and apply at once, without a restart.
[admin]
listen = "127.0.0.1:9443"
cert = "server.pem"
key = "server.key"
client_ca = "admin-ca.pem"   # admin.pem / admin.key are issued by it
"#
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn creates_once_with_private_keys_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let first = ensure(&dir).unwrap();
        assert!(first.created);
        for key in [
            "ca.key",
            "server.key",
            "client.key",
            "client.p12",
            "admin.key",
            "admin-ca.key",
        ] {
            let mode = fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        let ca_before = fs::read(dir.join("ca.pem")).unwrap();
        let second = ensure(&dir).unwrap();
        assert!(!second.created);
        assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca_before);
        let config = crate::config::Config::load(&second.config).unwrap();
        let ticketer = crate::tls::server::Ticketer::new().unwrap();
        crate::control::build_snapshot(
            &config,
            &Default::default(),
            ticketer,
            &crate::upstream::Pools::new(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(1),
            ),
        )
        .unwrap();
    }
}
