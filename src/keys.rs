//! Device key material: local key generation, CSRs, private files, and matching a registered
//! certificate to a key by its public key.

use std::path::{Path, PathBuf};

use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("key generation failed: {0}")]
    Crypto(String),
    #[error("certificate PEM could not be parsed: {0}")]
    Certificate(String),
}

/// The three files of one device's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    pub certificate: PathBuf,
    pub public_key: PathBuf,
    pub private_key: PathBuf,
}

impl KeyFiles {
    /// Names follow the AWS console's download names, prefixed with the thing name.
    pub fn for_thing(dir: &Path, thing: &str) -> KeyFiles {
        KeyFiles {
            certificate: dir.join(format!("{thing}-certificate.pem.crt")),
            public_key: dir.join(format!("{thing}-public.pem.key")),
            private_key: dir.join(format!("{thing}-private.pem.key")),
        }
    }

    pub fn all(&self) -> [&Path; 3] {
        [&self.certificate, &self.public_key, &self.private_key]
    }

    pub fn remove_all(&self) -> std::io::Result<()> {
        for p in self.all() {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// An ECDSA P-256 key pair.
pub struct DeviceKey {
    pair: rcgen::KeyPair,
}

impl DeviceKey {
    pub fn generate() -> Result<DeviceKey, KeyError> {
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(|pair| DeviceKey { pair })
            .map_err(|e| KeyError::Crypto(e.to_string()))
    }

    pub fn load(path: &Path) -> Result<DeviceKey, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|e| KeyError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        rcgen::KeyPair::from_pem(&pem)
            .map(|pair| DeviceKey { pair })
            .map_err(|e| KeyError::File {
                path: path.to_path_buf(),
                message: format!("not a private key: {e}"),
            })
    }

    pub fn private_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    pub fn public_pem(&self) -> String {
        self.pair.public_key_pem()
    }

    /// SHA-256 of the public key bits, hex: identifies the key in state without revealing it.
    pub fn fingerprint(&self) -> String {
        fingerprint_of_spki(&self.pair.public_key_der()).expect("own SPKI parses")
    }

    /// A CSR for the key, with the thing name as common name.
    pub fn csr_pem(&self, common_name: &str) -> Result<String, KeyError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| KeyError::Crypto(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params
            .serialize_request(&self.pair)
            .and_then(|csr| csr.pem())
            .map_err(|e| KeyError::Crypto(e.to_string()))
    }
}

fn fingerprint_of_spki(spki_der: &[u8]) -> Result<String, KeyError> {
    use x509_parser::prelude::FromDer;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
        .map_err(|e| KeyError::Certificate(e.to_string()))?;
    Ok(hex(&sha2::Sha256::digest(&spki.subject_public_key.data)))
}

/// The fingerprint of the public key belonging to a private key PEM: PKCS#8 (what iotreg
/// writes) or PKCS#1 RSA (what CreateKeysAndCertificate returns).
pub fn private_key_fingerprint(pem_text: &str) -> Result<String, KeyError> {
    if pem_text.contains("BEGIN RSA PRIVATE KEY") {
        let block = pem::parse(pem_text).map_err(|e| KeyError::Crypto(e.to_string()))?;
        let public = rsa_public_from_pkcs1(block.contents())
            .ok_or_else(|| KeyError::Crypto("malformed PKCS#1 RSA private key".into()))?;
        return Ok(hex(&sha2::Sha256::digest(&public)));
    }
    let pair = rcgen::KeyPair::from_pem(pem_text)
        .map_err(|e| KeyError::Crypto(format!("not a private key: {e}")))?;
    fingerprint_of_spki(&pair.public_key_der())
}

/// A DER element: (header length, content length).
fn der_element(bytes: &[u8]) -> Option<(usize, usize)> {
    let first = *bytes.get(1)?;
    if first < 0x80 {
        return Some((2, first as usize));
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let len = bytes
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | *b as usize);
    Some((2 + n, len))
}

/// RSAPublicKey (SEQUENCE { modulus, publicExponent }) from an RSAPrivateKey (RFC 8017 A.1.2:
/// SEQUENCE { version, modulus, publicExponent, ... }): the bytes a certificate's
/// subjectPublicKey holds for RSA.
fn rsa_public_from_pkcs1(der: &[u8]) -> Option<Vec<u8>> {
    let (h, len) = der_element(der)?;
    let mut body = der.get(h..h + len)?;
    let mut elements = Vec::new();
    for _ in 0..3 {
        let (eh, elen) = der_element(body)?;
        elements.push(body.get(..eh + elen)?);
        body = &body[eh + elen..];
    }
    let content: Vec<u8> = [elements[1], elements[2]].concat();
    let mut out = vec![0x30];
    match content.len() {
        l if l < 0x80 => out.push(l as u8),
        l if l < 0x100 => out.extend([0x81, l as u8]),
        l => out.extend([0x82, (l >> 8) as u8, l as u8]),
    }
    out.extend(content);
    Some(out)
}

/// The fingerprint of the public key inside a certificate PEM (same scheme as
/// [`DeviceKey::fingerprint`]), so a certificate can be matched to a key.
pub fn certificate_key_fingerprint(cert_pem: &str) -> Result<String, KeyError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| KeyError::Certificate(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| KeyError::Certificate(e.to_string()))?;
    Ok(hex(&sha2::Sha256::digest(
        &cert.public_key().subject_public_key.data,
    )))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a key or certificate file atomically with the given mode, so a crash never leaves
/// half a key and a private key never sits readable.
pub fn write_private(path: &Path, contents: &str, mode: u32) -> Result<(), KeyError> {
    crate::fsutil::write_atomic(path, contents.as_bytes(), mode).map_err(|e| KeyError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn csr_carries_the_key_and_fingerprints_agree() {
        let key = DeviceKey::generate().unwrap();
        let csr = key.csr_pem("temperature-sensor-abc123").unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        // A certificate issued for the key (here self-signed) matches the key's fingerprint.
        let params = rcgen::CertificateParams::new(vec!["x".to_string()]).unwrap();
        let cert = params.self_signed(&key.pair).unwrap();
        assert_eq!(
            certificate_key_fingerprint(&cert.pem()).unwrap(),
            key.fingerprint()
        );
        let other = DeviceKey::generate().unwrap();
        assert_ne!(other.fingerprint(), key.fingerprint());
    }

    #[test]
    fn pkcs1_rsa_public_key_is_derived_from_the_private_key() {
        // RSAPrivateKey ::= SEQUENCE { version, modulus, publicExponent, privateExponent, ... }
        // built from made-up integers: only the structure matters here, and no key material
        // belongs in the source. (Matching a real AWS-generated key to its certificate is
        // covered end to end against moto in tests/it/verify.rs.)
        let int = |bytes: &[u8]| [&[0x02, bytes.len() as u8][..], bytes].concat();
        let modulus: Vec<u8> = std::iter::once(0x00).chain([0xc5; 64]).collect();
        let body = [
            int(&[0x00]),
            int(&modulus),
            int(&[0x01, 0x00, 0x01]),
            int(&[0x42; 64]),
        ]
        .concat();
        let der = [&[0x30, 0x81, body.len() as u8][..], &body].concat();
        let pem_text = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", der.clone()));
        let public = rsa_public_from_pkcs1(&der).unwrap();
        let expected_body = [int(&modulus), int(&[0x01, 0x00, 0x01])].concat();
        assert_eq!(public, [&[0x30, 0x48][..], &expected_body].concat());
        assert_eq!(
            private_key_fingerprint(&pem_text).unwrap(),
            hex(&sha2::Sha256::digest(&public))
        );
        // PKCS#8 keys go through rcgen and agree with DeviceKey's own fingerprint.
        let k = DeviceKey::generate().unwrap();
        assert_eq!(
            private_key_fingerprint(&k.private_pem()).unwrap(),
            k.fingerprint()
        );
    }

    #[test]
    fn private_key_file_is_0600_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k-private.pem.key");
        let key = DeviceKey::generate().unwrap();
        write_private(&path, &key.private_pem(), 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            DeviceKey::load(&path).unwrap().fingerprint(),
            key.fingerprint()
        );
    }
}
