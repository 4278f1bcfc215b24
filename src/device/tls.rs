//! TLS for the device: the rustls client configuration (the gateway's CA, the device's
//! certificate, ALPN) and what a refused handshake means, in words.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::DeviceError;

/// A device's certificate chain and private key, parsed.
#[derive(Debug)]
pub struct Identity {
    pub certificates: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The certificate file, to name when the pair is unusable.
    pub source: PathBuf,
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            certificates: self.certificates.clone(),
            key: self.key.clone_key(),
            source: self.source.clone(),
        }
    }
}

impl Identity {
    pub fn load(certificate: &Path, private_key: &Path) -> Result<Identity, DeviceError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| DeviceError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        };
        let cert_pem = read(certificate)?;
        let certificates = certificates(&cert_pem).map_err(|message| DeviceError::File {
            path: certificate.to_path_buf(),
            message,
        })?;
        if certificates.is_empty() {
            return Err(DeviceError::File {
                path: certificate.to_path_buf(),
                message: "no PEM certificate in it".into(),
            });
        }
        let key_pem = read(private_key)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| DeviceError::File {
                path: private_key.to_path_buf(),
                message: format!("not a PEM private key ({e})"),
            })?;
        Ok(Identity {
            certificates,
            key,
            source: certificate.to_path_buf(),
        })
    }
}

/// The certificates in a PEM text (none is not an error here; callers say what they need).
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))
}

/// The crypto provider: aws-lc-rs, which the AWS SDK's rustls already builds. Installed as
/// the process default too, so that nothing in the stack picks another one or panics for
/// want of a default.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Err only when one is installed already, which is as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client configuration trusting only the CA, presenting `identity` when given (every
/// protocol but WebSockets), offering `alpn` when given (MQTT on the HTTPS port). What cannot
/// be used is the user's file, named (bad input), not a refusal by the server.
pub fn client_config(
    ca: &super::Ca,
    identity: Option<&Identity>,
    alpn: Option<&str>,
) -> Result<rustls::ClientConfig, DeviceError> {
    let ca_file = |message: String| DeviceError::File {
        path: PathBuf::from(&ca.file_name),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(&ca.pem).map_err(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| ca_file(format!("CA certificate not usable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ca_file("no CA certificate to trust".into()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| DeviceError::Protocol(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.certificates.clone(), id.key.clone_key())
            .map_err(|e| DeviceError::File {
                path: id.source.clone(),
                message: format!(
                    "the certificate and private key do not make a client identity ({e})"
                ),
            })?,
        None => builder.with_no_client_auth(),
    };
    if let Some(p) = alpn {
        config.alpn_protocols = vec![p.as_bytes().to_vec()];
    }
    Ok(config)
}

/// A rustls error in words a device owner can act on.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate is not signed by the configured CA (unknown issuer): check device.ca_file".into()
        }
        E::InvalidCertificate(C::NotValidForName) | E::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            "the server's certificate is not valid for this host name: check the endpoint".into()
        }
        E::InvalidCertificate(C::Expired) | E::InvalidCertificate(C::ExpiredContext { .. }) => {
            "the server's certificate has expired (or this machine's clock is wrong)".into()
        }
        E::InvalidCertificate(other) => format!("the server's certificate is not acceptable ({other:?})"),
        E::AlertReceived(alert) => {
            let what = match alert {
                A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
                    "the server refused the client certificate"
                }
                A::UnknownCA => "the server does not know the client certificate's CA",
                A::CertificateRevoked => "the server says the client certificate is revoked",
                A::CertificateExpired => "the server says the client certificate has expired",
                A::CertificateRequired => "the server requires a client certificate",
                A::AccessDenied => "the server denied access",
                A::NoApplicationProtocol => "the server does not speak the offered ALPN protocol",
                A::HandshakeFailure => "the server found no acceptable TLS parameters",
                _ => "the server sent a fatal alert",
            };
            format!("{what} (TLS alert {alert:?})")
        }
        other => other.to_string(),
    }
}

/// The rustls error somewhere in an error's chain, looking inside I/O errors too (which is
/// where tokio-rustls puts it, and `io::Error::source` skips it).
pub fn rustls_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(r) = rustls_in(inner) {
                return Some(r);
            }
        }
        current = err.source();
    }
    None
}

/// The first I/O error in an error's chain.
pub fn io_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = err.source();
    }
    None
}

/// Whether an I/O error means the gateway could not be reached at all (no route, nothing
/// listening, no such host) rather than a connection that was made and then lost.
pub fn is_unreachable(io: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        io.kind(),
        K::ConnectionRefused
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::AddrNotAvailable
            | K::NotFound
    ) || io.to_string().contains("lookup")
        || io.to_string().contains("resolve")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_is_offered_only_when_asked_for() {
        let ca = &super::super::Ca::amazon_root_ca_1();
        let plain = client_config(ca, None, None).unwrap();
        assert!(plain.alpn_protocols.is_empty());
        let alpn = client_config(ca, None, Some(super::super::ALPN_MQTT)).unwrap();
        assert_eq!(alpn.alpn_protocols, vec![b"x-amzn-mqtt-ca".to_vec()]);
        assert!(!plain.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn a_client_identity_is_presented() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::keys::DeviceKey::generate().unwrap();
        let kp = rcgen::KeyPair::from_pem(&key.private_pem()).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["t1".to_string()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.private_pem()).unwrap();
        let id = Identity::load(&c, &k).unwrap();
        let ca = super::super::Ca::amazon_root_ca_1();
        let config = client_config(&ca, Some(&id), None).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        // A key that is not the certificate's: the certificate file named, bad input.
        let other = crate::keys::DeviceKey::generate().unwrap();
        std::fs::write(&k, other.private_pem()).unwrap();
        let e = client_config(&ca, Some(&Identity::load(&c, &k).unwrap()), None).unwrap_err();
        assert!(e.is_bad_input(), "{e}");
        assert!(
            e.to_string().starts_with(&format!(
                "{}: the certificate and private key do not make a client identity",
                c.display()
            )),
            "{e}"
        );
        // A key file that holds no key is named.
        std::fs::write(&k, "not a key").unwrap();
        let e = Identity::load(&c, &k).unwrap_err();
        assert!(e.is_bad_input());
        assert!(e.to_string().contains("not a PEM private key"), "{e}");
    }

    #[test]
    fn tls_errors_are_found_inside_io_errors_and_described() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        let found = rustls_in(&io).unwrap();
        assert!(describe(found).contains("not signed by the configured CA"));
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        assert_eq!(
            describe(&alert),
            "the server refused the client certificate (TLS alert BadCertificate)"
        );
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(rustls_in(&plain).is_none());
        assert!(is_unreachable(io_in(&plain).unwrap()));
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(!is_unreachable(&reset));
    }
}
