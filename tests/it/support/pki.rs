//! Test PKI made with rcgen at test time: CAs, intermediates and leaf certificates with the
//! properties each scenario needs (validity window, EKU, SPIFFE ID).

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

pub struct TestCa {
    pub cert: Certificate,
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the CAs between this one and its root (empty for a root).
    pub chain_pem: String,
}

#[derive(Clone)]
pub enum Eku {
    Client,
    Server,
}

#[derive(Clone)]
pub struct LeafSpec {
    pub cn: String,
    pub dns: Vec<String>,
    pub spiffe: Option<String>,
    pub ou: Option<String>,
    pub email: Option<String>,
    pub eku: Eku,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub serial: Option<Vec<u8>>,
}

impl LeafSpec {
    pub fn client(cn: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            cn: cn.into(),
            dns: vec![],
            spiffe: None,
            ou: None,
            email: None,
            eku: Eku::Client,
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(1),
            serial: None,
        }
    }

    pub fn server(name: &str) -> Self {
        Self {
            dns: vec![name.into()],
            eku: Eku::Server,
            ..Self::client(name)
        }
    }

    pub fn spiffe(mut self, id: &str) -> Self {
        self.spiffe = Some(id.into());
        self
    }

    pub fn ou(mut self, ou: &str) -> Self {
        self.ou = Some(ou.into());
        self
    }

    pub fn email(mut self, email: &str) -> Self {
        self.email = Some(email.into());
        self
    }

    pub fn dns(mut self, name: &str) -> Self {
        self.dns.push(name.into());
        self
    }

    pub fn serial(mut self, serial: &[u8]) -> Self {
        self.serial = Some(serial.to_vec());
        self
    }

    pub fn eku(mut self, eku: Eku) -> Self {
        self.eku = eku;
        self
    }

    pub fn expired(mut self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now - Duration::days(10);
        self.not_after = now - Duration::days(3);
        self
    }

    pub fn not_yet_valid(mut self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before = now + Duration::days(3);
        self.not_after = now + Duration::days(10);
        self
    }
}

/// A leaf certificate with its key; `chain_pem` is the leaf followed by its intermediates.
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
}

impl Leaf {
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }

    pub fn fingerprint(&self) -> String {
        symbolon::pki::fingerprint_sha256(&self.der)
    }
}

fn ca_params(name: &str, not_after: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    p.not_after = not_after;
    p
}

impl TestCa {
    pub fn root(name: &str) -> Self {
        Self::root_until(name, OffsetDateTime::now_utc() + Duration::days(365))
    }

    pub fn root_until(name: &str, not_after: OffsetDateTime) -> Self {
        let key = KeyPair::generate().unwrap();
        let params = ca_params(name, not_after);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert,
            issuer: Issuer::new(params, key),
            chain_pem: String::new(),
        }
    }

    pub fn intermediate(&self, name: &str) -> Self {
        self.intermediate_with(name, |_| {})
    }

    /// An intermediate whose parameters `tweak` changes (name constraints, no CA flag, EKU…).
    pub fn intermediate_with(
        &self,
        name: &str,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = ca_params(name, OffsetDateTime::now_utc() + Duration::days(300));
        tweak(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain_pem = format!("{}{}", cert.pem(), self.chain_pem);
        Self {
            cert,
            issuer: Issuer::new(params, key),
            chain_pem,
        }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A CRL (PEM) revoking `revoked`, valid from `this_update` to `next_update`.
    pub fn crl(
        &self,
        revoked: &[&Leaf],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> String {
        let ders: Vec<&[u8]> = revoked.iter().map(|l| l.der.as_ref()).collect();
        self.crl_of(&ders, this_update, next_update)
    }

    /// A CRL (PEM) revoking the CAs `revoked` (intermediates this CA issued).
    pub fn crl_of_cas(
        &self,
        revoked: &[&TestCa],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> String {
        let ders: Vec<&[u8]> = revoked.iter().map(|c| c.cert.der().as_ref()).collect();
        self.crl_of(&ders, this_update, next_update)
    }

    fn crl_of(
        &self,
        revoked: &[&[u8]],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> String {
        let revoked_certs = revoked
            .iter()
            .map(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
                rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(cert.raw_serial()),
                    revocation_time: this_update,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }
            })
            .collect();
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }

    pub fn leaf(&self, spec: LeafSpec) -> Leaf {
        self.leaf_with(spec, |_| {})
    }

    /// A leaf whose parameters `tweak` changes after `spec` is applied.
    pub fn leaf_with(&self, spec: LeafSpec, tweak: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(spec.dns.clone()).unwrap();
        p.distinguished_name
            .push(DnType::OrganizationName, "Symbolon tests");
        if let Some(ou) = &spec.ou {
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, ou.as_str());
        }
        p.distinguished_name
            .push(DnType::CommonName, spec.cn.as_str());
        if let Some(e) = &spec.email {
            p.subject_alt_names
                .push(SanType::Rfc822Name(e.as_str().try_into().unwrap()));
        }
        if let Some(id) = &spec.spiffe {
            p.subject_alt_names
                .push(SanType::URI(id.as_str().try_into().unwrap()));
        }
        p.extended_key_usages = match spec.eku {
            Eku::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Eku::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = spec.not_before;
        p.not_after = spec.not_after;
        if let Some(serial) = &spec.serial {
            p.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
        }
        tweak(&mut p);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            chain_pem: format!("{}{}", cert.pem(), self.chain_pem),
            key_pem: key.serialize_pem(),
        }
    }
}

/// Base64 ECDSA P-256/SHA-256 signature of `message` by a PKCS#8 PEM key (what
/// `openssl dgst -sha256 -sign KEY | base64` makes).
pub fn sign_with(key_pem: &str, message: &[u8]) -> String {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    use base64::Engine as _;
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.secret_pkcs8_der()).unwrap();
    let sig = key
        .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
}
