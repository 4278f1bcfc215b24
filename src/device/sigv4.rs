//! The presigned URL for MQTT over WebSockets: `wss://<endpoint>/mqtt?X-Amz-…`, signed with
//! SigV4 for the service `iotdevicegateway`. AWS IoT wants the session token (temporary
//! credentials) appended *after* signing, outside the signed query string.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SessionTokenMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{DeviceError, Endpoint, Protocol};

pub const SERVICE: &str = "iotdevicegateway";
/// How long a presigned URL may be used to connect (the connection then lives on).
const EXPIRES: Duration = Duration::from_secs(300);

/// SigV4's unreserved characters; everything else in a query value is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Signs WebSocket URLs with a set of AWS credentials for one region.
#[derive(Debug, Clone)]
pub struct Signer {
    pub credentials: Credentials,
    pub region: String,
}

impl Signer {
    pub fn new(credentials: Credentials, region: impl Into<String>) -> Signer {
        Signer {
            credentials,
            region: region.into(),
        }
    }

    /// `wss://<host>[:port]/mqtt?<signed query>[&X-Amz-Security-Token=…]`, valid from `now`.
    pub fn presign(&self, endpoint: &Endpoint, now: SystemTime) -> Result<String, DeviceError> {
        let authority = endpoint.authority(endpoint.port(Protocol::Wss));
        let unsigned = format!("https://{authority}/mqtt");
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(EXPIRES);
        // Left out of the signature; appended afterwards (below), as AWS IoT requires.
        settings.session_token_mode = SessionTokenMode::Exclude;
        let identity = self.credentials.clone().into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| DeviceError::Credentials(e.to_string()))?
            .into();
        let request = SignableRequest::new(
            "GET",
            unsigned.as_str(),
            std::iter::once(("host", authority.as_str())),
            SignableBody::Bytes(&[]),
        )
        .map_err(|e| DeviceError::Protocol(format!("cannot sign {unsigned}: {e}")))?;
        let (instructions, _signature) = sign(request, &params)
            .map_err(|e| DeviceError::Protocol(format!("cannot sign {unsigned}: {e}")))?
            .into_parts();
        Ok(url(&authority, instructions.params()))
    }
}

/// The URL from the signing parameters, in the signer's order: the signed ones, the signature,
/// then the token, which the signer adds after the signature when it is excluded from it.
fn url(authority: &str, params: &[(&str, Cow<'static, str>)]) -> String {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
        .collect();
    format!("wss://{authority}/mqtt?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            host: "example-ats.iot.us-east-1.amazonaws.com".into(),
            mqtt_port: 8883,
            alpn_port: port,
            https_port: 8443,
            ca: super::super::Ca::amazon_root_ca_1(),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_url_is_signed_for_iotdevicegateway_with_the_token_after_the_signature() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("TOKEN/+=".into()), None, "t");
        let url = Signer::new(creds, "us-east-1")
            .presign(&endpoint(443), at(1_700_000_000))
            .unwrap();
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "wss://example-ats.iot.us-east-1.amazonaws.com/mqtt");
        let keys: Vec<&str> = query
            .split('&')
            .map(|kv| kv.split_once('=').unwrap().0)
            .collect();
        assert_eq!(
            keys,
            [
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-SignedHeaders",
                "X-Amz-Signature",
                "X-Amz-Security-Token",
            ]
        );
        assert!(query.contains(
            "X-Amz-Credential=AKIDEXAMPLE%2F20231114%2Fus-east-1%2Fiotdevicegateway%2Faws4_request"
        ));
        assert!(query.contains("X-Amz-Date=20231114T221320Z"));
        assert!(query.contains("X-Amz-SignedHeaders=host&"));
        assert!(query.ends_with("&X-Amz-Security-Token=TOKEN%2F%2B%3D"));
        // The token is outside the signature: the same URL without it carries the same one.
        let no_token = Signer::new(
            Credentials::new("AKIDEXAMPLE", "secret", None, None, "t"),
            "us-east-1",
        )
        .presign(&endpoint(443), at(1_700_000_000))
        .unwrap();
        assert!(!no_token.contains("Security-Token"));
        assert!(url.starts_with(&no_token));
    }

    #[test]
    fn a_non_default_port_is_in_the_url_and_the_signature() {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "t");
        let s = Signer::new(creds, "us-east-1");
        let a = s.presign(&endpoint(9443), at(1_700_000_000)).unwrap();
        let b = s.presign(&endpoint(443), at(1_700_000_000)).unwrap();
        assert!(a.starts_with("wss://example-ats.iot.us-east-1.amazonaws.com:9443/mqtt?"));
        let sig = |u: &str| {
            u.split('&')
                .find(|kv| kv.starts_with("X-Amz-Signature="))
                .unwrap()
                .to_string()
        };
        assert_ne!(sig(&a), sig(&b));
    }
}
