//! Signatures: whether a certificate, a CRL or a message was signed by a given key.

use super::*;

/// Whether `issuer_der`'s key signed `cert_der` (and the names chain). A CA decides by
/// signature, never by name: another CA with the same name does not pass.
pub fn signed_by(cert_der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, issuer))) = (
        X509Certificate::from_der(cert_der),
        X509Certificate::from_der(issuer_der),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && signature_verifies(
            cert.tbs_certificate.as_ref(),
            &cert.signature_algorithm.algorithm.to_id_string(),
            &cert.signature_value.data,
            &issuer,
        )
}

/// Verifies a signature made by `issuer`'s key over `tbs` with the algorithm `alg_oid`.
pub(crate) fn signature_verifies(
    tbs: &[u8],
    alg_oid: &str,
    signature: &[u8],
    issuer: &X509Certificate<'_>,
) -> bool {
    spki_signature_verifies(tbs, alg_oid, signature, issuer.public_key())
}

/// Whether `signature` (made with the algorithm `alg_oid`) over `message` verifies with `spki`.
pub(crate) fn spki_signature_verifies(
    message: &[u8],
    alg_oid: &str,
    signature: &[u8],
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> bool {
    use aws_lc_rs::signature as sig;
    let curve = curve_oid(spki);
    let p384 = curve.as_deref() == Some("1.3.132.0.34");
    let alg: &'static dyn sig::VerificationAlgorithm = match alg_oid {
        "1.2.840.10045.4.3.2" if p384 => &sig::ECDSA_P384_SHA256_ASN1,
        "1.2.840.10045.4.3.2" => &sig::ECDSA_P256_SHA256_ASN1,
        "1.2.840.10045.4.3.3" if p384 => &sig::ECDSA_P384_SHA384_ASN1,
        "1.2.840.10045.4.3.3" => &sig::ECDSA_P256_SHA384_ASN1,
        "1.2.840.113549.1.1.11" => &sig::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.12" => &sig::RSA_PKCS1_2048_8192_SHA384,
        "1.2.840.113549.1.1.13" => &sig::RSA_PKCS1_2048_8192_SHA512,
        "1.3.101.112" => &sig::ED25519,
        _ => return false,
    };
    sig::UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
        .verify(message, signature)
        .is_ok()
}

/// Whether `signature` over `message` was made by the key of `cert_der`, as
/// `openssl dgst -sha256 -sign KEY` (ECDSA, RSA PKCS#1 v1.5 or PSS) or
/// `openssl pkeyutl -sign -rawin` (Ed25519) make it.
pub fn made_by_key_of(cert_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use aws_lc_rs::signature as sig;
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return false;
    };
    let spki = cert.public_key();
    let algs: &[&'static dyn sig::VerificationAlgorithm] =
        match spki.algorithm.algorithm.to_id_string().as_str() {
            "1.2.840.10045.2.1" => match curve_oid(spki).as_deref() {
                Some("1.2.840.10045.3.1.7") => &[&sig::ECDSA_P256_SHA256_ASN1],
                Some("1.3.132.0.34") => {
                    &[&sig::ECDSA_P384_SHA256_ASN1, &sig::ECDSA_P384_SHA384_ASN1]
                }
                _ => &[],
            },
            "1.2.840.113549.1.1.1" => &[
                &sig::RSA_PKCS1_2048_8192_SHA256,
                &sig::RSA_PSS_2048_8192_SHA256,
            ],
            "1.3.101.112" => &[&sig::ED25519],
            _ => &[],
        };
    algs.iter().any(|alg| {
        sig::UnparsedPublicKey::new(*alg, &spki.subject_public_key.data)
            .verify(message, signature)
            .is_ok()
    })
}
