//! One plain HTTP GET of a link: `http://` (a local endpoint) or `https://` (AWS's pre-signed
//! URLs, checked against the system's root certificates). Used for a bulk registration's
//! report links and a job's firmware; the caller reads the body (whole, or streamed).

use std::sync::{Arc, OnceLock};

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};

/// A link without its query (a pre-signed URL's signature), for messages.
pub fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Sends GET `url` and returns the answer's head, its body not read yet. Errors name the
/// link without its query. Unbounded: the caller sets the deadline.
pub async fn get(url: &str) -> Result<hyper::Response<Incoming>, String> {
    let shown = redact(url);
    let fail = |e: &dyn std::fmt::Display| format!("GET {shown}: {e}");
    let uri: hyper::Uri = url.parse().map_err(|e| fail(&e))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(fail(&"not an http(s) link")),
    };
    let host = uri.host().ok_or_else(|| fail(&"no host"))?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| host.clone());
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(&e))?;
    // An IPv6 literal comes bracketed in the URL's host.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| fail(&e))?;
    if https {
        let name =
            rustls::pki_types::ServerName::try_from(bare.to_string()).map_err(|e| fail(&e))?;
        let tls = tokio_rustls::TlsConnector::from(system_roots())
            .connect(name, tcp)
            .await
            .map_err(|e| fail(&e))?;
        send(hyper_util::rt::TokioIo::new(tls), request).await
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), request).await
    }
    .map_err(|e| fail(&e))
}

async fn send<S>(
    io: S,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<Incoming>, Box<dyn std::error::Error + Send + Sync>>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    // The connection task ends with the connection (after the body, or on failure).
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}

/// The system's root certificates, loaded once: a thousand devices downloading at once share
/// one client configuration.
fn system_roots() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                // A certificate the store cannot take is skipped, as every TLS client does.
                let _ = roots.add(cert);
            }
            let config =
                rustls::ClientConfig::builder_with_provider(crate::device::tls::provider())
                    .with_safe_default_protocol_versions()
                    .expect("aws-lc-rs supports the default protocol versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}
