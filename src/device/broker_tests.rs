//! The MQTT client against a real broker over TLS with client certificates: a local mosquitto
//! on 127.0.0.1 with `require_certificate true`, its CA and certificates made here. Skipped,
//! saying why, where mosquitto is not installed (`apt-get install mosquitto`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Ca, DeviceError, DeviceFiles, Endpoint, Protocol, Session};

const TIMEOUT: Duration = Duration::from_secs(5);

fn mosquitto() -> Option<PathBuf> {
    [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// A CA and what it signs.
struct Authority {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let key = key();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Authority { key, cert }
    }

    /// A certificate for `cn` (and `names` as subject alternative names), written with its key.
    fn issue(&self, dir: &Path, file: &str, cn: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let k = key();
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = p.signed_by(&k, &self.cert, &self.key).unwrap();
        let (c, kp) = (
            dir.join(format!("{file}-certificate.pem.crt")),
            dir.join(format!("{file}-private.pem.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&kp, k.serialize_pem()).unwrap();
        (c, kp)
    }
}

struct Broker {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    ca: Authority,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// mosquitto requiring a client certificate from its CA, with an ACL that lets a device
    /// read only its own topics.
    fn start() -> Option<Broker> {
        let Some(bin) = mosquitto() else {
            eprintln!("skipped: mosquitto is not installed (apt-get install mosquitto)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new("iotreg test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        let (server_cert, server_key) = ca.issue(
            dir.path(),
            "server",
            "localhost",
            &["localhost", "127.0.0.1"],
        );
        let port = free_port();
        let acl = dir.path().join("acl");
        std::fs::write(
            &acl,
            "pattern readwrite sensor/temperature/%u\npattern readwrite $aws/things/%u/#\n\
             user responder\ntopic readwrite $aws/things/#\n",
        )
        .unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence false\nlog_dest stderr\n\
                 listener {port} 127.0.0.1\n\
                 cafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
                 require_certificate true\nuse_identity_as_username true\n\
                 acl_file {acl}\n",
                ca = dir.path().join("ca.pem").display(),
                cert = server_cert.display(),
                key = server_key.display(),
                acl = acl.display(),
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let broker = Broker {
            child,
            port,
            dir,
            ca,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(broker);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mosquitto did not listen on {port}");
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            host: "localhost".into(),
            mqtt_port: self.port,
            alpn_port: self.port,
            https_port: self.port,
            ca: Ca {
                file_name: "ca.pem".into(),
                pem: self.ca.cert.pem(),
            },
        }
    }

    fn device(&self, thing: &str) -> DeviceFiles {
        let (certificate, private_key) = self.ca.issue(self.dir.path(), thing, thing, &[]);
        DeviceFiles {
            thing: thing.into(),
            certificate,
            private_key,
        }
    }
}

#[tokio::test]
async fn connect_publish_subscribe_and_disconnect_over_tls() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let files = broker.device("t1");
    for protocol in [Protocol::Mqtt, Protocol::Mqtt443] {
        let mut s = Session::connect(&broker.endpoint(), &files, "t1", protocol, None, TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        let topic = super::reading_topic("t1");
        s.subscribe(std::slice::from_ref(&topic)).await.unwrap();
        let latency = s
            .publish_qos1(&topic, "{\"temperature\": 21.5}")
            .await
            .unwrap();
        assert!(latency < TIMEOUT);
        let m = s
            .next_message(TIMEOUT)
            .await
            .unwrap()
            .expect("own message back");
        assert_eq!(m.topic, topic);
        assert_eq!(m.json().unwrap()["temperature"], 21.5);
        s.disconnect().await.unwrap();
    }
}

#[tokio::test]
async fn the_shadow_answer_is_matched_by_client_token_and_a_delta_is_seen() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let endpoint = broker.endpoint();
    // The service's side of the shadow, played by another client: accept each update,
    // then ask for a change once.
    let responder = broker.device("responder");
    let mut service = Session::connect(
        &endpoint,
        &responder,
        "responder",
        Protocol::Mqtt,
        None,
        TIMEOUT,
    )
    .await
    .unwrap();
    service
        .subscribe(&["$aws/things/t1/shadow/update".to_string()])
        .await
        .unwrap();
    let served = tokio::spawn(async move {
        for round in 0..2 {
            let m = service
                .next_message(TIMEOUT)
                .await
                .unwrap()
                .expect("an update");
            let update = m.json().unwrap();
            // Unrelated traffic on the accepted topic first: it must not be taken for ours.
            service
                .publish_qos1(
                    "$aws/things/t1/shadow/update/accepted",
                    serde_json::json!({"clientToken": "someone-else"}).to_string(),
                )
                .await
                .unwrap();
            service
                .publish_qos1(
                    "$aws/things/t1/shadow/update/accepted",
                    serde_json::json!({"state": update["state"], "clientToken": update["clientToken"], "version": round + 1}).to_string(),
                )
                .await
                .unwrap();
            if round == 0 {
                service
                    .publish_qos1(
                        "$aws/things/t1/shadow/update/delta",
                        serde_json::json!({"state": {"sampling_interval": 60}, "version": 2})
                            .to_string(),
                    )
                    .await
                    .unwrap();
            }
        }
    });
    let files = broker.device("t1");
    let mut s = Session::connect(&endpoint, &files, "t1", Protocol::Mqtt, None, TIMEOUT)
        .await
        .unwrap();
    let accepted = s
        .shadow_update_reported(serde_json::json!({"temperature": 22.5}))
        .await
        .unwrap();
    assert_eq!(accepted["state"]["reported"]["temperature"], 22.5);
    assert_eq!(accepted["version"], 1);
    let delta = s.wait_delta(TIMEOUT).await.unwrap().expect("a delta");
    assert_eq!(delta, serde_json::json!({"sampling_interval": 60}));
    let accepted = s.shadow_update_reported(delta).await.unwrap();
    assert_eq!(accepted["state"]["reported"]["sampling_interval"], 60);
    served.await.unwrap();
    // No second delta: the wait ends empty-handed, not in an error.
    assert_eq!(
        s.wait_delta(Duration::from_millis(300)).await.unwrap(),
        None
    );
    s.disconnect().await.unwrap();
}

#[tokio::test]
async fn refusals_are_named_and_never_hang() {
    let Some(broker) = Broker::start() else {
        return;
    };
    let endpoint = broker.endpoint();
    // A device certificate from a CA the broker does not know.
    let stranger = Authority::new("another CA");
    let (certificate, private_key) = stranger.issue(broker.dir.path(), "stranger", "t2", &[]);
    let files = DeviceFiles {
        thing: "t2".into(),
        certificate,
        private_key,
    };
    let e = Session::connect(&endpoint, &files, "t2", Protocol::Mqtt, None, TIMEOUT)
        .await
        .err()
        .expect("refused");
    assert!(matches!(e, DeviceError::TlsRefused { .. }), "{e}");
    assert!(e.to_string().contains("TLS alert"), "{e}");

    // The client trusting another CA than the one that signed the server's certificate.
    let good = broker.device("t1");
    let wrong_ca = Endpoint {
        ca: Ca::amazon_root_ca_1(),
        ..endpoint.clone()
    };
    let e = Session::connect(&wrong_ca, &good, "t1", Protocol::Mqtt, None, TIMEOUT)
        .await
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("not signed by the configured CA"),
        "{e}"
    );

    // Nothing listening.
    let closed = Endpoint {
        mqtt_port: free_port(),
        ..endpoint.clone()
    };
    let e = Session::connect(&closed, &good, "t1", Protocol::Mqtt, None, TIMEOUT)
        .await
        .err()
        .expect("unreachable");
    assert!(matches!(e, DeviceError::Unreachable { .. }), "{e}");

    // (mosquitto 2.0 grants every subscription and applies its ACL on delivery, so a SUBACK
    // failure is covered by the unit test of the SUBACK's codes instead.)

    // A missing key file is the user's input.
    let missing = DeviceFiles {
        private_key: broker.dir.path().join("nope"),
        ..good
    };
    let e = Session::connect(&endpoint, &missing, "t1", Protocol::Mqtt, None, TIMEOUT)
        .await
        .err()
        .expect("bad input");
    assert!(e.is_bad_input(), "{e}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    // Accepts TCP and says nothing: the TLS handshake waits, bounded by the timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            if let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("ca");
    let (certificate, private_key) = ca.issue(dir.path(), "t1", "t1", &[]);
    let files = DeviceFiles {
        thing: "t1".into(),
        certificate,
        private_key,
    };
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        mqtt_port: port,
        alpn_port: port,
        https_port: port,
        ca: Ca {
            file_name: "ca.pem".into(),
            pem: ca.cert.pem(),
        },
    };
    let started = std::time::Instant::now();
    let limit = Duration::from_millis(700);
    let e = Session::connect(&endpoint, &files, "t1", Protocol::Mqtt, None, limit)
        .await
        .err()
        .expect("timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        e.to_string(),
        format!("timed out after 0.7s waiting for CONNACK from 127.0.0.1:{port}")
    );
    let identity = files.identity().unwrap();
    let e = super::https::publish(&endpoint, &identity, "a/b", b"{}".to_vec(), limit)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("timed out after 0.7s waiting for the answer to an HTTPS publish to a/b"),
        "{e}"
    );
    held.abort();
}
