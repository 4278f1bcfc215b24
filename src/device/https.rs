//! HTTPS publish as the device: `POST /topics/<topic>?qos=1` with the client certificate
//! (port 8443 on AWS). One connection per publish, as a device without MQTT would do it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls::pki_types::ServerName;

use super::{tls, DeviceError, Endpoint, Protocol};

/// Everything but the unreserved characters, `/` included: the topic is one path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The request path for a QoS 1 publish to `topic`.
pub fn path(topic: &str) -> String {
    format!("/topics/{}?qos=1", utf8_percent_encode(topic, SEGMENT))
}

/// Publishes `payload` to `topic` and returns the time from sending the request to the
/// answer. A 200 is success; any other status is the gateway's refusal, with its body.
pub async fn publish(
    endpoint: &Endpoint,
    identity: &tls::Identity,
    topic: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Duration, DeviceError> {
    let port = endpoint.port(Protocol::Https);
    let authority = endpoint.authority(port);
    let awaited = format!("the answer to an HTTPS publish to {topic} from {authority}");
    tokio::time::timeout(
        timeout,
        publish_unbounded(endpoint, identity, topic, payload, port, &authority),
    )
    .await
    .map_err(|_| DeviceError::timeout(awaited, timeout))?
}

async fn publish_unbounded(
    endpoint: &Endpoint,
    identity: &tls::Identity,
    topic: &str,
    payload: Vec<u8>,
    port: u16,
    authority: &str,
) -> Result<Duration, DeviceError> {
    let label = authority.to_string();
    let config = tls::client_config(&endpoint.ca, Some(identity), None)?;
    let tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), port))
        .await
        .map_err(|e| DeviceError::Unreachable {
            endpoint: label.clone(),
            message: e.to_string(),
        })?;
    let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| DeviceError::File {
        path: "device.endpoint".into(),
        message: e.to_string(),
    })?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| failure(&e, &label, topic))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| failure(&e, &label, topic))?;
    // The connection task ends with the connection (after the answer, or on failure).
    tokio::spawn(connection);
    let request = hyper::Request::post(path(topic))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| DeviceError::Protocol(format!("HTTPS publish request: {e}")))?;
    let started = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failure(&e, &label, topic))?;
    let latency = started.elapsed();
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if status == 200 {
        return Ok(latency);
    }
    let text: String = String::from_utf8_lossy(&body)
        .trim()
        .chars()
        .take(200)
        .collect();
    Err(DeviceError::HttpRefused {
        endpoint: label,
        topic: topic.to_string(),
        status,
        body: if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        },
    })
}

/// A failed handshake or request: a TLS refusal when rustls says so (with TLS 1.3 a refused
/// client certificate shows only when the request is answered), else a closed connection.
fn failure(e: &(dyn std::error::Error + 'static), endpoint: &str, topic: &str) -> DeviceError {
    if let Some(r) = tls::rustls_in(e) {
        return DeviceError::TlsRefused {
            endpoint: endpoint.to_string(),
            reason: tls::describe(r),
        };
    }
    DeviceError::Closed {
        endpoint: endpoint.to_string(),
        after: format!("an HTTPS publish to {topic}"),
        detail: format!(" ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_is_one_percent_encoded_segment() {
        assert_eq!(
            path("sensor/temperature/t-1"),
            "/topics/sensor%2Ftemperature%2Ft-1?qos=1"
        );
        assert_eq!(
            path("$aws/things/a b/shadow/update"),
            "/topics/%24aws%2Fthings%2Fa%20b%2Fshadow%2Fupdate?qos=1"
        );
    }
}
