//! A device bundle: everything one device needs to connect, in one directory — its certificate
//! and key, the CA, `connection.json` (endpoint, client id, ports, the topics its policy
//! allows), a configuration for the AWS IoT Device Client, and a README with a
//! `mosquitto_pub` command that works from the bundle's files alone.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{DeviceError, DeviceFiles, Endpoint, Protocol, ALPN_MQTT};

pub const CERTIFICATE: &str = "certificate.pem.crt";
pub const PRIVATE_KEY: &str = "private.pem.key";
pub const CONNECTION: &str = "connection.json";
pub const DEVICE_CLIENT: &str = "aws-iot-device-client.json";
pub const README: &str = "README.txt";
/// The message the Device Client's pub-sub sample publishes.
pub const READING: &str = "reading.json";

/// What a bundle says about one device.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub endpoint: Endpoint,
    pub thing: String,
    /// Topics the policy lets the device publish to.
    pub publish: Vec<String>,
    /// Topic filters the policy lets it subscribe to.
    pub subscribe: Vec<String>,
}

impl Bundle {
    /// From the rendered policy document the deployment attaches to the device's certificate.
    pub fn new(endpoint: Endpoint, thing: &str, policy: &Value) -> Bundle {
        Bundle {
            endpoint,
            thing: thing.to_string(),
            publish: super::policy::publish_topics(policy, thing),
            subscribe: super::policy::subscribe_filters(policy, thing),
        }
    }

    /// The topic readings go to: the recipe's, when the policy allows it, else the first
    /// literal topic the policy allows.
    pub fn reading_topic(&self) -> String {
        let recipe = super::reading_topic(&self.thing);
        if self.publish.contains(&recipe) {
            return recipe;
        }
        self.publish
            .iter()
            .find(|t| !t.contains('*') && !t.contains('?'))
            .cloned()
            .unwrap_or(recipe)
    }

    pub fn connection_json(&self) -> Value {
        let e = &self.endpoint;
        json!({
            "endpoint": e.host,
            "client_id": self.thing,
            "thing_name": self.thing,
            "ports": {
                "mqtt": e.port(Protocol::Mqtt),
                "mqtt_alpn": e.port(Protocol::Mqtt443),
                "alpn_protocol": ALPN_MQTT,
                "https": e.port(Protocol::Https),
                "wss": e.port(Protocol::Wss),
            },
            "files": {
                "certificate": CERTIFICATE,
                "private_key": PRIVATE_KEY,
                "root_ca": e.ca.file_name,
            },
            "topics": {
                "publish": self.publish,
                "subscribe": self.subscribe,
            },
        })
    }

    /// The AWS IoT Device Client's configuration (its JSON format), with the pub-sub sample
    /// publishing `reading.json` to the reading topic. The Device Client wants absolute paths.
    pub fn device_client_json(&self, dir: &Path) -> Value {
        let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let mut pub_sub = json!({
            "enabled": true,
            "publish-topic": self.reading_topic(),
            "publish-file": path(READING),
        });
        // Subscribing where the policy allows none would get the connection closed.
        if let Some(filter) = self
            .subscribe
            .iter()
            .find(|f| !f.contains('*') && !f.contains('?'))
        {
            pub_sub["subscribe-topic"] = filter.clone().into();
            pub_sub["subscribe-file"] = path("received.txt").into();
        }
        json!({
            "endpoint": self.endpoint.host,
            "cert": path(CERTIFICATE),
            "key": path(PRIVATE_KEY),
            "root-ca": path(&self.endpoint.ca.file_name),
            "thing-name": self.thing,
            "logging": {"level": "INFO", "type": "STDOUT"},
            "jobs": {"enabled": false},
            "tunneling": {"enabled": false},
            "device-defender": {"enabled": false},
            "fleet-provisioning": {"enabled": false},
            "samples": {"pub-sub": pub_sub},
            "config-shadow": {"enabled": false},
            "sample-shadow": {"enabled": false},
        })
    }

    /// The exact `mosquitto_pub` command, run from the bundle directory.
    pub fn mosquitto_pub(&self, protocol: Protocol, message: &str) -> String {
        let e = &self.endpoint;
        let alpn = if protocol == Protocol::Mqtt443 {
            format!(" --tls-alpn {ALPN_MQTT}")
        } else {
            String::new()
        };
        format!(
            "mosquitto_pub --cafile {} --cert {CERTIFICATE} --key {PRIVATE_KEY}{alpn} -h {} -p {} -i {} -t {} -q 1 -m '{}'",
            e.ca.file_name,
            e.host,
            e.port(protocol),
            self.thing,
            self.reading_topic(),
            message.replace('\'', "'\\''"),
        )
    }

    pub fn readme(&self, message: &str) -> String {
        let e = &self.endpoint;
        let subscribe = if self.subscribe.is_empty() {
            "none".to_string()
        } else {
            self.subscribe.join(", ")
        };
        format!(
            "Device bundle for {thing}\n\
             \n\
             certificate.pem.crt   the device certificate\n\
             private.pem.key       its private key (keep it 0600; it never leaves this device)\n\
             {ca:<21} the CA the endpoint's certificate chains to\n\
             connection.json       endpoint, client id, ports, topics\n\
             aws-iot-device-client.json   a configuration for the AWS IoT Device Client\n\
             reading.json          the reading the Device Client's pub-sub sample publishes\n\
             \n\
             Endpoint: {host}, MQTT port {mqtt}, MQTT with ALPN {ALPN_MQTT} on port {alpn},\n\
             HTTPS publish on port {https}. Client id: {thing} (the policy allows no other).\n\
             Publish: {publish}. Subscribe: {subscribe}.\n\
             \n\
             Publish one reading (QoS 1) from this directory:\n\
             \n\
             {cmd}\n\
             \n\
             The same on port {alpn} (where only 443 is open):\n\
             \n\
             {cmd443}\n",
            thing = self.thing,
            ca = e.ca.file_name,
            host = e.host,
            mqtt = e.port(Protocol::Mqtt),
            alpn = e.port(Protocol::Mqtt443),
            https = e.port(Protocol::Https),
            publish = self.publish.join(", "),
            cmd = self.mosquitto_pub(Protocol::Mqtt, message),
            cmd443 = self.mosquitto_pub(Protocol::Mqtt443, message),
        )
    }

    /// Writes the bundle into `dir` (created 0700 when missing): each file whole or not at all,
    /// the private key 0600. Returns the files written.
    pub fn write(
        &self,
        dir: &Path,
        files: &DeviceFiles,
        message: &str,
    ) -> Result<Vec<PathBuf>, DeviceError> {
        let fail = |path: &Path, e: &dyn std::fmt::Display| DeviceError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        crate::state::ensure_private_dir(dir).map_err(|e| fail(dir, &e))?;
        let read = |p: &Path| std::fs::read(p).map_err(|e| fail(p, &e));
        let certificate = read(&files.certificate)?;
        let key = std::fs::read(&files.private_key).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                // A certificate issued for the device's own CSR: its key never came here.
                fail(
                    &files.private_key,
                    &"no private key here: when the certificate was issued for the device's own CSR the key stays on the device, and so does its bundle (give it the certificate and the CA)",
                )
            } else {
                fail(&files.private_key, &e)
            }
        })?;
        // Absolute, for the Device Client (which does not resolve relative paths as we do).
        let abs = std::fs::canonicalize(dir).map_err(|e| fail(dir, &e))?;
        let pretty = |v: &Value| format!("{}\n", serde_json::to_string_pretty(v).expect("json"));
        let contents: Vec<(&str, Vec<u8>, u32)> = vec![
            (CERTIFICATE, certificate, 0o644),
            (PRIVATE_KEY, key, 0o600),
            (
                &self.endpoint.ca.file_name,
                self.endpoint.ca.pem.clone().into_bytes(),
                0o644,
            ),
            (
                CONNECTION,
                pretty(&self.connection_json()).into_bytes(),
                0o644,
            ),
            (
                DEVICE_CLIENT,
                pretty(&self.device_client_json(&abs)).into_bytes(),
                0o644,
            ),
            (READING, format!("{message}\n").into_bytes(), 0o644),
            (README, self.readme(message).into_bytes(), 0o644),
        ];
        let mut written = Vec::new();
        for (name, bytes, mode) in contents {
            let path = dir.join(name);
            crate::fsutil::write_atomic(&path, &bytes, mode).map_err(|e| fail(&path, &e))?;
            written.push(path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(policy: &Value) -> Bundle {
        Bundle::new(
            Endpoint {
                host: "abc-ats.iot.us-east-1.amazonaws.com".into(),
                mqtt_port: 8883,
                alpn_port: 443,
                https_port: 8443,
                ca: super::super::Ca::amazon_root_ca_1(),
            },
            "t1",
            policy,
        )
    }

    fn recipe_policy() -> Value {
        json!({"Statement": [
            {"Effect": "Allow", "Action": ["iot:Connect"],
             "Resource": ["arn:aws:iot:us-east-1:1:client/${iot:Connection.Thing.ThingName}"]},
            {"Effect": "Allow", "Action": ["iot:Publish"],
             "Resource": ["arn:aws:iot:us-east-1:1:topic/sensor/temperature/${iot:Connection.Thing.ThingName}"]},
        ]})
    }

    #[test]
    fn connection_json_has_the_resolved_ports_and_the_policys_topics() {
        let b = bundle(&recipe_policy());
        assert_eq!(
            b.connection_json(),
            json!({
                "endpoint": "abc-ats.iot.us-east-1.amazonaws.com",
                "client_id": "t1",
                "thing_name": "t1",
                "ports": {"mqtt": 8883, "mqtt_alpn": 443, "alpn_protocol": "x-amzn-mqtt-ca", "https": 8443, "wss": 443},
                "files": {"certificate": "certificate.pem.crt", "private_key": "private.pem.key", "root_ca": "AmazonRootCA1.pem"},
                "topics": {"publish": ["sensor/temperature/t1"], "subscribe": []},
            })
        );
    }

    #[test]
    fn the_device_client_config_uses_its_own_keys_and_absolute_paths() {
        let b = bundle(&recipe_policy());
        let c = b.device_client_json(Path::new("/b"));
        assert_eq!(c["endpoint"], "abc-ats.iot.us-east-1.amazonaws.com");
        assert_eq!(c["cert"], "/b/certificate.pem.crt");
        assert_eq!(c["key"], "/b/private.pem.key");
        assert_eq!(c["root-ca"], "/b/AmazonRootCA1.pem");
        assert_eq!(c["thing-name"], "t1");
        let ps = &c["samples"]["pub-sub"];
        assert_eq!(ps["enabled"], true);
        assert_eq!(ps["publish-topic"], "sensor/temperature/t1");
        assert_eq!(ps["publish-file"], "/b/reading.json");
        // The policy allows no subscription: the sample subscribes to nothing.
        assert!(ps.get("subscribe-topic").is_none());
    }

    #[test]
    fn the_mosquitto_command_uses_only_the_bundles_files() {
        let b = bundle(&recipe_policy());
        assert_eq!(
            b.mosquitto_pub(Protocol::Mqtt, r#"{"temperature": 21.5, "note": "it's"}"#),
            "mosquitto_pub --cafile AmazonRootCA1.pem --cert certificate.pem.crt --key private.pem.key \
             -h abc-ats.iot.us-east-1.amazonaws.com -p 8883 -i t1 -t sensor/temperature/t1 -q 1 \
             -m '{\"temperature\": 21.5, \"note\": \"it'\\''s\"}'"
        );
        assert!(b
            .mosquitto_pub(Protocol::Mqtt443, "{}")
            .contains("--tls-alpn x-amzn-mqtt-ca -h abc-ats.iot.us-east-1.amazonaws.com -p 443 "));
        assert!(b
            .readme("{}")
            .contains("Publish: sensor/temperature/t1. Subscribe: none."));
    }

    #[test]
    fn the_bundle_is_written_with_a_private_key_only_the_owner_reads() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let (c, k) = (tmp.path().join("c"), tmp.path().join("k"));
        std::fs::write(&c, "CERT").unwrap();
        std::fs::write(&k, "KEY").unwrap();
        let files = DeviceFiles {
            thing: "t1".into(),
            certificate: c,
            private_key: k,
        };
        let out = tmp.path().join("bundle");
        let written = bundle(&recipe_policy()).write(&out, &files, "{}").unwrap();
        assert_eq!(written.len(), 7);
        let mode = |n: &str| std::fs::metadata(out.join(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(PRIVATE_KEY), 0o600);
        assert_eq!(mode(CERTIFICATE), 0o644);
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::read_to_string(out.join(PRIVATE_KEY)).unwrap(),
            "KEY"
        );
        assert!(std::fs::read_to_string(out.join("AmazonRootCA1.pem"))
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        let missing = DeviceFiles {
            thing: "t1".into(),
            certificate: tmp.path().join("nope"),
            private_key: tmp.path().join("k"),
        };
        let e = bundle(&recipe_policy())
            .write(&out, &missing, "{}")
            .unwrap_err();
        assert!(e.is_bad_input());
    }
}
