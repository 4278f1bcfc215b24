//! The device's side: connecting *as* a device, with its certificate and key, to the device
//! gateway (MQTT over TLS, MQTT with ALPN on the HTTPS port, MQTT over WebSockets signed with
//! SigV4, HTTPS publish). A library the `device` commands and `verify` share; it knows no
//! command line and no engine type.
//!
//! Every operation is bounded by a timeout and every refusal is a typed [`DeviceError`] naming
//! what was refused, so a misconfigured device is a one-line error, never a hang.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod bundle;
pub mod claim;
pub mod https;
pub mod jobs;
pub mod mqtt;
pub mod pattern;
pub mod policy;
pub mod sigv4;
pub mod stats;
pub mod tls;

#[cfg(test)]
mod broker_tests;

pub use mqtt::Session;

/// Amazon Root CA 1 (from Debian's ca-certificates, SHA-256 fingerprint
/// 8E:CD:E6:88:4F:3D:87:B1:12:5B:A3:1A:C3:FC:B1:3D:70:16:DE:7F:57:CC:90:4F:E1:CB:97:C6:AE:98:19:6E):
/// the CA of AWS IoT's ATS endpoints, built in so a device bundle is complete offline.
pub const AMAZON_ROOT_CA_1: &str = include_str!("AmazonRootCA1.pem");
pub const AMAZON_ROOT_CA_1_NAME: &str = "AmazonRootCA1.pem";

/// The ALPN protocol AWS IoT expects for MQTT with a client certificate on port 443.
pub const ALPN_MQTT: &str = "x-amzn-mqtt-ca";

/// How a device talks to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// MQTT 3.1.1 over TLS with the client certificate (port 8883 on AWS).
    #[serde(rename = "mqtt")]
    Mqtt,
    /// The same on the HTTPS port, chosen by ALPN `x-amzn-mqtt-ca` (443 on AWS).
    #[serde(rename = "mqtt-443")]
    Mqtt443,
    /// HTTPS publish with the client certificate (8443 on AWS): publish only.
    #[serde(rename = "https")]
    Https,
    /// MQTT over WebSockets, authenticated by a SigV4-presigned URL (AWS credentials, no
    /// client certificate; 443 on AWS).
    #[serde(rename = "wss")]
    Wss,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Mqtt,
        Protocol::Mqtt443,
        Protocol::Https,
        Protocol::Wss,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Mqtt443 => "mqtt-443",
            Protocol::Https => "https",
            Protocol::Wss => "wss",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not one of mqtt, mqtt-443, https, wss"))
    }
}

/// The CA the gateway's certificate must chain to, with the file name a bundle gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    pub file_name: String,
    pub pem: String,
}

impl Ca {
    pub fn amazon_root_ca_1() -> Ca {
        Ca {
            file_name: AMAZON_ROOT_CA_1_NAME.into(),
            pem: AMAZON_ROOT_CA_1.into(),
        }
    }

    /// A CA file: readable, with at least one certificate in it.
    pub fn from_file(path: &Path) -> Result<Ca, DeviceError> {
        let file = |message: String| DeviceError::File {
            path: path.to_path_buf(),
            message,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
        if tls::certificates(&pem).map_err(file)?.is_empty() {
            return Err(file("no PEM certificate in it".into()));
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ca.pem".into());
        Ok(Ca { file_name, pem })
    }
}

/// Where the gateway is: its host, one port per way in, and the CA its certificate chains to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub mqtt_port: u16,
    /// MQTT with ALPN, and WebSockets.
    pub alpn_port: u16,
    pub https_port: u16,
    pub ca: Ca,
}

impl Endpoint {
    /// The port a protocol connects to.
    pub fn port(&self, protocol: Protocol) -> u16 {
        match protocol {
            Protocol::Mqtt => self.mqtt_port,
            Protocol::Mqtt443 | Protocol::Wss => self.alpn_port,
            Protocol::Https => self.https_port,
        }
    }

    /// `host:port` as a Host header or URL authority carries it: the port is left out when it
    /// is the scheme's default (443), as clients send it and as a signature must cover it.
    pub fn authority(&self, port: u16) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host) // an IPv6 literal
        } else {
            self.host.clone()
        };
        if port == 443 {
            host
        } else {
            format!("{host}:{port}")
        }
    }
}

/// A host name or IP literal for the gateway: no scheme, port or path (those have their own
/// settings).
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("must not be empty".into());
    }
    if host.contains("://") || host.contains('/') {
        return Err(format!(
            "{host:?} must be a host name only (no scheme or path; ports are device.*_port)"
        ));
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not a host name"))
    }
}

/// One device's identity on disk: its thing name (the MQTT client id) and the files `up`
/// wrote for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFiles {
    pub thing: String,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// The devices a deployment has, as the state records them: its one thing, or its fleet's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    pub single: Option<String>,
    pub fleet: Vec<String>,
}

impl Roster {
    /// One device by name, or the deployment's only device when no name is given.
    pub fn pick(&self, thing: Option<&str>) -> Result<String, DeviceError> {
        match thing {
            Some(name) => {
                if self.single.as_deref() == Some(name) || self.fleet.iter().any(|n| n == name) {
                    Ok(name.to_string())
                } else {
                    Err(DeviceError::UnknownThing {
                        thing: name.to_string(),
                        known: self.describe(),
                    })
                }
            }
            None => match (&self.single, self.fleet.len()) {
                (Some(one), 0) => Ok(one.clone()),
                (None, 1) => Ok(self.fleet[0].clone()),
                (None, 0) => Err(DeviceError::NoDevice(
                    "the state records no device: run `iotreg up` first".into(),
                )),
                _ => Err(DeviceError::NoDevice(format!(
                    "name the device: {}",
                    self.describe()
                ))),
            },
        }
    }

    fn describe(&self) -> String {
        let mut names: Vec<&str> = self.single.iter().map(String::as_str).collect();
        names.extend(self.fleet.iter().take(5).map(String::as_str));
        let total = self.single.iter().count() + self.fleet.len();
        match total {
            0 => "the state records no device".into(),
            n if n > names.len() => {
                format!("the state records {n} devices, e.g. {}", names.join(", "))
            }
            _ => format!("the state records {}", names.join(", ")),
        }
    }
}

impl DeviceFiles {
    /// The files of `thing` under the key directory, named as `up` writes them.
    pub fn for_thing(key_dir: &Path, thing: &str) -> DeviceFiles {
        let k = crate::keys::KeyFiles::for_thing(key_dir, thing);
        DeviceFiles {
            thing: thing.to_string(),
            certificate: k.certificate,
            private_key: k.private_key,
        }
    }

    /// The certificate and key, read and parsed (a missing or unreadable file is bad input).
    pub fn identity(&self) -> Result<tls::Identity, DeviceError> {
        tls::Identity::load(&self.certificate, &self.private_key)
    }
}

/// What went wrong on the device side. Each variant names what was refused or awaited.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A file the device needs: missing, unreadable, or not what it should be.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("unknown thing {thing:?}: {known}")]
    UnknownThing { thing: String, known: String },
    #[error("{0}")]
    NoDevice(String),
    /// No AWS credentials to sign a WebSocket URL with.
    #[error("wss needs AWS credentials to sign the WebSocket URL: {0}")]
    Credentials(String),
    #[error("cannot reach {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("TLS handshake with {endpoint} refused: {reason}")]
    TlsRefused { endpoint: String, reason: String },
    #[error("{endpoint} refused the MQTT connection (CONNACK {code}: {meaning})")]
    ConnackRefused {
        endpoint: String,
        code: u8,
        meaning: &'static str,
    },
    #[error("{endpoint} refused the WebSocket upgrade: HTTP {status}{body}")]
    UpgradeRefused {
        endpoint: String,
        status: u16,
        body: String,
    },
    #[error("{endpoint} refused the HTTPS publish to {topic}: HTTP {status}{body}")]
    HttpRefused {
        endpoint: String,
        topic: String,
        status: u16,
        body: String,
    },
    /// AWS IoT answers a publish or subscribe the policy does not allow by closing the
    /// connection, so that is what this says.
    #[error("{endpoint} closed the connection after {after} (on AWS IoT: the policy does not allow it, or the certificate is not ACTIVE or not attached){detail}")]
    Closed {
        endpoint: String,
        after: String,
        detail: String,
    },
    #[error("{endpoint} refused the subscription to {filter} (SUBACK failure)")]
    SubscribeRefused { endpoint: String, filter: String },
    #[error("shadow update of {thing} rejected: {reason}")]
    ShadowRejected { thing: String, reason: String },
    /// Fleet provisioning answered on a `…/rejected` topic: AWS's status, code and message.
    #[error("{call} rejected: {code} (status {status}): {message}")]
    ProvisioningRejected {
        call: &'static str,
        status: i64,
        code: String,
        message: String,
    },
    #[error("timed out after {seconds}s waiting for {awaited}")]
    Timeout { awaited: String, seconds: f64 },
    #[error("{0}")]
    Protocol(String),
}

impl DeviceError {
    /// The user's input (exit 2) rather than a refusal or failure (exit 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            DeviceError::File { .. }
                | DeviceError::UnknownThing { .. }
                | DeviceError::NoDevice(_)
                | DeviceError::Credentials(_)
        )
    }

    pub(crate) fn timeout(awaited: impl Into<String>, limit: Duration) -> DeviceError {
        DeviceError::Timeout {
            awaited: awaited.into(),
            seconds: limit.as_secs_f64(),
        }
    }
}

/// The normal reading (22.5 °C) a device publishes by default, in bundles, `device publish` and
/// verify's publish checks: classified NORMAL, so it raises no alert.
pub fn normal_reading(thing: &str) -> serde_json::Value {
    reading(thing, 22.5, 45.0, 87)
}

/// What one reading looks like: the shape of `verify`'s test reading, so the rule and the
/// function treat a device's readings like it.
pub fn reading(
    thing: &str,
    temperature: f64,
    humidity: f64,
    battery_level: u8,
) -> serde_json::Value {
    serde_json::json!({
        "temperature": temperature,
        "humidity": humidity,
        "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "device": thing,
        "battery_level": battery_level,
    })
}

/// The topic the recipe's policy lets a device publish its readings to.
pub fn reading_topic(thing: &str) -> String {
    format!("sensor/temperature/{thing}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_parse_and_print() {
        for p in Protocol::ALL {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
        }
        assert!("mqtts".parse::<Protocol>().is_err());
    }

    #[test]
    fn the_built_in_ca_is_amazon_root_ca_1() {
        use sha2::Digest;
        let certs = tls::certificates(AMAZON_ROOT_CA_1).unwrap();
        assert_eq!(certs.len(), 1);
        let fp: Vec<String> = sha2::Sha256::digest(certs[0].as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(
            fp.join(":"),
            "8E:CD:E6:88:4F:3D:87:B1:12:5B:A3:1A:C3:FC:B1:3D:70:16:DE:7F:57:CC:90:4F:E1:CB:97:C6:AE:98:19:6E"
        );
    }

    #[test]
    fn ports_and_authority() {
        let e = Endpoint {
            host: "abc-ats.iot.us-east-1.amazonaws.com".into(),
            mqtt_port: 8883,
            alpn_port: 443,
            https_port: 8443,
            ca: Ca::amazon_root_ca_1(),
        };
        assert_eq!(e.port(Protocol::Mqtt), 8883);
        assert_eq!(e.port(Protocol::Mqtt443), 443);
        assert_eq!(e.port(Protocol::Wss), 443);
        assert_eq!(e.port(Protocol::Https), 8443);
        assert_eq!(e.authority(443), "abc-ats.iot.us-east-1.amazonaws.com");
        assert_eq!(
            e.authority(8443),
            "abc-ats.iot.us-east-1.amazonaws.com:8443"
        );
        let v6 = Endpoint {
            host: "::1".into(),
            ..e
        };
        assert_eq!(v6.authority(9000), "[::1]:9000");
    }

    #[test]
    fn hosts_are_checked() {
        assert!(check_host("localhost").is_ok());
        assert!(check_host("127.0.0.1").is_ok());
        assert!(check_host("abc-ats.iot.eu-west-1.amazonaws.com").is_ok());
        assert!(check_host("https://x.example").is_err());
        assert!(check_host("x.example/mqtt").is_err());
        assert!(check_host("bad_host").is_err());
        assert!(check_host("").is_err());
    }

    #[test]
    fn a_device_is_picked_by_name_or_as_the_only_one() {
        let single = Roster {
            single: Some("t1".into()),
            fleet: vec![],
        };
        assert_eq!(single.pick(None).unwrap(), "t1");
        assert_eq!(single.pick(Some("t1")).unwrap(), "t1");
        let e = single.pick(Some("t2")).unwrap_err();
        assert!(e.is_bad_input());
        assert_eq!(e.to_string(), "unknown thing \"t2\": the state records t1");
        let fleet = Roster {
            single: None,
            fleet: (0..8).map(|i| format!("d{i}")).collect(),
        };
        assert_eq!(fleet.pick(Some("d7")).unwrap(), "d7");
        let e = fleet.pick(None).unwrap_err();
        assert!(e.is_bad_input());
        assert!(e.to_string().contains("8 devices, e.g. d0, d1"), "{e}");
        let none = Roster {
            single: None,
            fleet: vec![],
        };
        assert!(none.pick(None).unwrap_err().is_bad_input());
    }

    #[test]
    fn files_follow_the_key_directory_naming() {
        let f = DeviceFiles::for_thing(Path::new("/k"), "t1");
        assert_eq!(f.certificate, PathBuf::from("/k/t1-certificate.pem.crt"));
        assert_eq!(f.private_key, PathBuf::from("/k/t1-private.pem.key"));
        let e = f.identity().unwrap_err();
        assert!(e.is_bad_input());
        assert!(
            e.to_string().starts_with("/k/t1-certificate.pem.crt: "),
            "{e}"
        );
    }
}
