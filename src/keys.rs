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

/// A device's own certificate signing request (`certificate.csr_file`, a manifest's `csr`
/// column): its key stays on the device, so iotreg sends the CSR and keeps only the public key's
/// fingerprint, which is how the certificate is matched to it (resume, verify) as for a key made
/// here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Csr {
    /// The PEM text as read, sent as is.
    pub pem: String,
    /// SHA-256 of the public key bits, as [`DeviceKey::fingerprint`].
    pub fingerprint: String,
}

impl Csr {
    pub fn load(path: &Path) -> Result<Csr, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Csr::parse(&text).map_err(|message| KeyError::File {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Checks what AWS checks before it would issue a certificate, so a bad CSR stops the run
    /// before any call: one PEM `CERTIFICATE REQUEST` that parses, signed by its own key (proof
    /// that whoever made it holds the key), and a key AWS accepts (CreateCertificateFromCsr: RSA
    /// of at least 2048 bits, or EC on NIST P-256, P-384 or P-521).
    pub fn parse(text: &str) -> Result<Csr, String> {
        use x509_parser::prelude::FromDer;
        let block = pem::parse(text).map_err(|e| format!("not a PEM CSR: {e}"))?;
        if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "NEW CERTIFICATE REQUEST" {
            return Err(format!(
                "a PEM {:?} block, not a CERTIFICATE REQUEST",
                block.tag()
            ));
        }
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(
            block.contents(),
        )
        .map_err(|e| format!("not a certificate request: {e}"))?;
        // The key first: ring verifies no signature made with a key AWS would refuse anyway.
        let spki = &csr.certification_request_info.subject_pki;
        check_key_strength(spki)?;
        csr.verify_signature()
            .map_err(|e| format!("its signature does not verify with its own key: {e}"))?;
        Ok(Csr {
            pem: text.to_string(),
            fingerprint: hex(&sha2::Sha256::digest(&spki.subject_public_key.data)),
        })
    }
}

/// The key types AWS IoT issues certificates for (CreateCertificateFromCsr's documentation).
fn check_key_strength(spki: &x509_parser::x509::SubjectPublicKeyInfo) -> Result<(), String> {
    use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384, OID_NIST_EC_P521};
    use x509_parser::public_key::PublicKey;
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            // Bits of the modulus without its leading zero bytes (DER pads a high bit with one).
            let m: Vec<u8> = rsa.modulus.iter().copied().skip_while(|b| *b == 0).collect();
            let bits = m
                .first()
                .map(|b| (m.len() - 1) * 8 + (8 - b.leading_zeros() as usize))
                .unwrap_or(0);
            if bits < 2048 {
                return Err(format!(
                    "its RSA key has {bits} bits; AWS IoT requires at least 2048"
                ));
            }
            Ok(())
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 || c == OID_NIST_EC_P521 => {
                    Ok(())
                }
                Some(c) => Err(format!(
                    "its EC key is on curve {c}; AWS IoT accepts NIST P-256, P-384 and P-521"
                )),
                None => Err("its EC key names no curve".into()),
            }
        }
        Ok(_) => Err(format!(
            "its key algorithm ({}) is not one AWS IoT accepts (RSA of 2048 bits or more, EC P-256/P-384/P-521)",
            spki.algorithm.algorithm
        )),
        Err(e) => Err(format!("its public key does not parse: {e}")),
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

pub fn hex(bytes: &[u8]) -> String {
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

    /// A CSR made with the system's openssl, which is what a factory would use.
    fn openssl_csr(key_args: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let csr = dir.path().join("c.csr");
        let run = |cmd: &mut std::process::Command| {
            let status = cmd
                .status()
                .expect("openssl (Debian's openssl package) runs");
            assert!(status.success(), "{cmd:?}: {status}");
        };
        run(std::process::Command::new("openssl")
            .args(key_args)
            .arg("-out")
            .arg(&key));
        run(std::process::Command::new("openssl")
            .args(["req", "-new", "-subj", "/CN=sensor-1", "-key"])
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        std::fs::read_to_string(csr).unwrap()
    }

    #[test]
    fn a_csr_gives_its_keys_fingerprint() {
        let key = DeviceKey::generate().unwrap();
        let csr = Csr::parse(&key.csr_pem("sensor-1").unwrap()).unwrap();
        assert_eq!(csr.fingerprint, key.fingerprint());
    }

    #[test]
    fn bad_csrs_are_named() {
        let key = DeviceKey::generate().unwrap();
        assert!(Csr::parse("hello").unwrap_err().contains("not a PEM CSR"));
        assert!(Csr::parse(&key.private_pem())
            .unwrap_err()
            .contains("not a CERTIFICATE REQUEST"));
        // A request whose body was altered no longer matches its signature.
        let good = key.csr_pem("sensor-1").unwrap();
        let mut der = pem::parse(&good).unwrap().into_contents();
        let at = der.len() / 3;
        der[at] ^= 0x01;
        let bad = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        let e = Csr::parse(&bad).unwrap_err();
        assert!(
            e.contains("signature") || e.contains("not a certificate request"),
            "{e}"
        );
    }

    #[test]
    fn weak_keys_are_refused_and_strong_ones_taken() {
        let rsa1024 = openssl_csr(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ]);
        let e = Csr::parse(&rsa1024).unwrap_err();
        assert!(e.contains("1024 bits"), "{e}");
        let rsa2048 = openssl_csr(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ]);
        Csr::parse(&rsa2048).unwrap();
        let p384 = openssl_csr(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
        ]);
        Csr::parse(&p384).unwrap();
        let k1 = openssl_csr(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:secp256k1",
        ]);
        let e = Csr::parse(&k1).unwrap_err();
        assert!(e.contains("curve"), "{e}");
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
