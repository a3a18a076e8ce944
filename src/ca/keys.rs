//! Private keys at rest: PEM `SYMBOLON ENCRYPTED PRIVATE KEY`, PKCS#8 sealed with AES-256-GCM
//! under a key derived from a passphrase with PBKDF2-HMAC-SHA256 (600,000 iterations, random
//! salt). The CA keys use it, and the keys in the store (domains, credentials, sidecars) when a
//! store passphrase is configured.

use std::collections::HashMap;
use std::fs;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::CaError;

const PBKDF2_ITERATIONS: u32 = 600_000;
pub(crate) const ENC_LABEL: &str = "SYMBOLON ENCRYPTED PRIVATE KEY";
/// The first line of a sealed key (`ENC_LABEL` in a BEGIN line).
const BEGIN_SEALED: &str = "-----BEGIN SYMBOLON ENCRYPTED PRIVATE KEY-----";

fn derive(passphrase: &[u8], salt: &[u8], iterations: u32) -> Result<LessSafeKey, CaError> {
    let mut key = [0u8; 32];
    let iters = NonZeroU32::new(iterations)
        .ok_or_else(|| CaError::Invalid("bad iteration count".into()))?;
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        iters,
        salt,
        passphrase,
        &mut key,
    );
    let unbound = UnboundKey::new(&AES_256_GCM, &key)
        .map_err(|_| CaError::Invalid("cannot create the AES key".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// Seals a PKCS#8 key with the passphrase.
pub fn encrypt_key(pkcs8: &[u8], passphrase: &[u8]) -> Result<String, CaError> {
    if passphrase.is_empty() {
        return Err(CaError::NoPassphrase);
    }
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| CaError::Invalid("the RNG failed".into()))?;
    let key = derive(passphrase, &salt, PBKDF2_ITERATIONS)?;
    seal_with(&key, salt, PBKDF2_ITERATIONS, pkcs8)
}

/// salt (16) | nonce (12) | iterations (4, big-endian) | AES-256-GCM(PKCS#8) with its tag.
fn seal_with(
    key: &LessSafeKey,
    salt: [u8; 16],
    iterations: u32,
    pkcs8: &[u8],
) -> Result<String, CaError> {
    let mut nonce = [0u8; 12];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CaError::Invalid("the RNG failed".into()))?;
    let mut sealed = pkcs8.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(ENC_LABEL.as_bytes()),
        &mut sealed,
    )
    .map_err(|_| CaError::Invalid("encryption failed".into()))?;
    let mut blob = Vec::with_capacity(32 + sealed.len());
    blob.extend_from_slice(&salt);
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&iterations.to_be_bytes());
    blob.extend_from_slice(&sealed);
    Ok(pem_block(ENC_LABEL, &blob))
}

/// A PEM block: base64 in 64-character lines between BEGIN and END lines.
pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

type Blob = ([u8; 16], u32, [u8; 12], Vec<u8>);

fn split_blob(pem: &str, path: &Path) -> Result<Blob, CaError> {
    let bad = || CaError::Decrypt(path.to_owned());
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let blob = STANDARD.decode(body).map_err(|_| bad())?;
    if blob.len() < 32 + 16 {
        return Err(bad());
    }
    let (salt, rest) = blob.split_at(16);
    let (nonce, rest) = rest.split_at(12);
    let (iters, sealed) = rest.split_at(4);
    let iterations = u32::from_be_bytes(iters.try_into().map_err(|_| bad())?);
    // More than ten times the default would let a damaged file stall the start for minutes.
    if iterations == 0 || iterations > 10 * PBKDF2_ITERATIONS {
        return Err(bad());
    }
    Ok((
        salt.try_into().map_err(|_| bad())?,
        iterations,
        nonce.try_into().map_err(|_| bad())?,
        sealed.to_vec(),
    ))
}

fn open_with(key: &LessSafeKey, blob: Blob, path: &Path) -> Result<Vec<u8>, CaError> {
    let (_, _, nonce, mut buf) = blob;
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(ENC_LABEL.as_bytes()),
            &mut buf,
        )
        .map_err(|_| CaError::Decrypt(path.to_owned()))?;
    Ok(plain.to_vec())
}

/// Opens a sealed key.
pub fn decrypt_key(pem: &str, passphrase: &[u8], path: &Path) -> Result<Vec<u8>, CaError> {
    let blob = split_blob(pem, path)?;
    let key = derive(passphrase, &blob.0, blob.1)?;
    open_with(&key, blob, path)
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Keys derived from the passphrase, by (salt, iterations).
type DerivedKeys = HashMap<([u8; 16], u32), Arc<LessSafeKey>>;

/// Seals and opens the private keys kept in the store with the store passphrase. Deriving a
/// key from the passphrase is slow on purpose (PBKDF2), so the derived key is kept per salt:
/// every key this process seals shares one salt, and opening a store written by earlier runs
/// costs one derivation per run that wrote it.
#[derive(Clone)]
pub struct Sealer {
    passphrase: Arc<Vec<u8>>,
    salt: [u8; 16],
    derived: Arc<Mutex<DerivedKeys>>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(passphrase: Vec<u8>) -> Result<Self, CaError> {
        if passphrase.is_empty() {
            return Err(CaError::NoPassphrase);
        }
        let mut salt = [0u8; 16];
        aws_lc_rs::rand::fill(&mut salt).map_err(|_| CaError::Invalid("the RNG failed".into()))?;
        Ok(Self {
            passphrase: Arc::new(passphrase),
            salt,
            derived: Arc::default(),
        })
    }

    fn key(&self, salt: [u8; 16], iterations: u32) -> Result<Arc<LessSafeKey>, CaError> {
        let mut cache = self
            .derived
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(k) = cache.get(&(salt, iterations)) {
            return Ok(k.clone());
        }
        let k = Arc::new(derive(&self.passphrase, &salt, iterations)?);
        cache.insert((salt, iterations), k.clone());
        Ok(k)
    }

    /// Seals a PEM private key; a key that is already sealed is returned as it is.
    pub fn seal_pem(&self, key_pem: &str) -> Result<String, CaError> {
        if is_sealed(key_pem) {
            return Ok(key_pem.to_string());
        }
        let der = crate::pki::parse_key(key_pem.as_bytes(), Path::new("private key"))
            .map_err(|e| CaError::Invalid(e.to_string()))?;
        let key = self.key(self.salt, PBKDF2_ITERATIONS)?;
        seal_with(&key, self.salt, PBKDF2_ITERATIONS, der.secret_der())
    }

    /// Opens a sealed key into PKCS#8 PEM; a plain PEM key is returned as it is.
    pub fn open_pem(&self, key_pem: &str, what: &Path) -> Result<String, CaError> {
        if !is_sealed(key_pem) {
            return Ok(key_pem.to_string());
        }
        let blob = split_blob(key_pem, what)?;
        let key = self.key(blob.0, blob.1)?;
        let der = open_with(&key, blob, what)?;
        Ok(pem_block("PRIVATE KEY", &der))
    }
}

/// Whether a PEM private key is sealed (needs the passphrase to open).
pub fn is_sealed(pem: &str) -> bool {
    pem.contains(BEGIN_SEALED)
}
