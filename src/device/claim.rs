//! Fleet provisioning by claim, as a device does it at first boot (AWS IoT developer guide,
//! "Device provisioning MQTT API"):
//!
//! 1. Connect with the claim certificate (shared by every device of the factory; its policy
//!    allows nothing but these topics).
//! 2. Subscribe to the `accepted` and `rejected` answers first: AWS publishes the answer only
//!    to a client subscribed at the time.
//! 3. CreateCertificateFromCsr: publish `{"certificateSigningRequest": PEM}` to
//!    `$aws/certificates/create-from-csr/json`; the answer on `…/json/accepted` carries
//!    `certificateId`, `certificatePem` and `certificateOwnershipToken`. The key was made here
//!    and never leaves the device; the certificate must carry its public key.
//! 4. RegisterThing: publish `{"certificateOwnershipToken": …, "parameters": {…}}` to
//!    `$aws/provisioning-templates/<template>/provision/json`; `…/provision/json/accepted`
//!    carries `thingName` and `deviceConfiguration`. AWS answers on the connection that asked
//!    (so both calls share one); that the ownership token lasts an hour is from memory, not
//!    from the page checked.
//!    The certificate stays PENDING_ACTIVATION until RegisterThing activates it.
//! 5. Either call may answer on `…/rejected` with `statusCode`, `errorCode` and
//!    `errorMessage` (a refusal by the pre-provisioning hook reads as access denied; the
//!    exact code an emulator or AWS gives is passed through as it came).
//!
//! The new certificate and key are written as `<thing>-certificate.pem.crt` and
//! `<thing>-private.pem.key` (0600) in the key directory, as `up` names a device's files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::mqtt::{Message, Session};
use super::{DeviceError, DeviceFiles, Endpoint, Protocol};
use crate::keys::{self, DeviceKey, KeyFiles};

pub const CREATE_FROM_CSR: &str = "$aws/certificates/create-from-csr/json";
/// The name the claim identity goes by on this side (its files are `claim-…`).
pub const CLAIM_CLIENT: &str = "claim";

pub fn provision_topic(template: &str) -> String {
    format!("$aws/provisioning-templates/{template}/provision/json")
}

/// What a device presents and asks for.
pub struct Request<'a> {
    pub endpoint: &'a Endpoint,
    /// The claim certificate and its key.
    pub claim: DeviceFiles,
    pub template: &'a str,
    pub serial: &'a str,
    pub thing: &'a str,
    pub key_dir: &'a Path,
    pub timeout: Duration,
}

/// A device provisioned and connected as itself.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub thing: String,
    pub certificate_id: String,
    pub certificate_file: PathBuf,
    pub private_key_file: PathBuf,
    /// The reading published as the new device, and its PUBACK time.
    pub publish_latency: Duration,
    pub elapsed: Duration,
}

/// The whole first boot: provision, write the files, reconnect as the thing and publish.
pub async fn provision(r: &Request<'_>) -> Result<Provisioned, DeviceError> {
    let started = Instant::now();
    let key = DeviceKey::generate().map_err(key_error)?;
    let csr = key.csr_pem(r.thing).map_err(key_error)?;
    // The claim connection's client id: the serial, unique per device, so that devices
    // provisioning at once do not disconnect each other.
    let mut session = Session::connect(
        r.endpoint,
        &r.claim,
        r.serial,
        Protocol::Mqtt,
        None,
        r.timeout,
    )
    .await?;
    let provision = provision_topic(r.template);
    let answers = [
        format!("{CREATE_FROM_CSR}/accepted"),
        format!("{CREATE_FROM_CSR}/rejected"),
        format!("{provision}/accepted"),
        format!("{provision}/rejected"),
    ];
    session.subscribe(&answers).await?;

    session
        .publish_qos1(
            CREATE_FROM_CSR,
            json!({ "certificateSigningRequest": csr }).to_string(),
        )
        .await?;
    let created = answer(
        &mut session,
        CREATE_FROM_CSR,
        "CreateCertificateFromCsr",
        r.timeout,
    )
    .await?;
    let field = |v: &Value, f: &str| -> Result<String, DeviceError> {
        v[f].as_str()
            .map(str::to_string)
            .ok_or_else(|| DeviceError::Protocol(format!("the accepted answer has no {f}: {v}")))
    };
    let certificate_id = field(&created, "certificateId")?;
    let pem = field(&created, "certificatePem")?;
    let token = field(&created, "certificateOwnershipToken")?;
    if keys::certificate_key_fingerprint(&pem).map_err(key_error)? != key.fingerprint() {
        return Err(DeviceError::Protocol(format!(
            "certificate {certificate_id} does not carry the public key of the CSR"
        )));
    }

    session
        .publish_qos1(
            &provision,
            json!({
                "certificateOwnershipToken": token,
                "parameters": {"ThingName": r.thing, "SerialNumber": r.serial}
            })
            .to_string(),
        )
        .await?;
    let registered = answer(&mut session, &provision, "RegisterThing", r.timeout).await?;
    let thing = registered["thingName"]
        .as_str()
        .unwrap_or(r.thing)
        .to_string();
    session.disconnect().await?;

    let files = KeyFiles::for_thing(r.key_dir, &thing);
    keys::write_private(&files.private_key, &key.private_pem(), 0o600).map_err(key_error)?;
    keys::write_private(&files.public_key, &key.public_pem(), 0o644).map_err(key_error)?;
    keys::write_private(&files.certificate, &pem, 0o644).map_err(key_error)?;

    // Now as itself: the client id is the thing name, as the device policy requires.
    let own = DeviceFiles::for_thing(r.key_dir, &thing);
    let mut session =
        Session::connect(r.endpoint, &own, &thing, Protocol::Mqtt, None, r.timeout).await?;
    let reading = super::normal_reading(&thing);
    let publish_latency = session
        .publish_qos1(&super::reading_topic(&thing), reading.to_string())
        .await?;
    session.disconnect().await?;
    Ok(Provisioned {
        thing,
        certificate_id,
        certificate_file: files.certificate,
        private_key_file: files.private_key,
        publish_latency,
        elapsed: started.elapsed(),
    })
}

/// The answer to a request on `base`: the accepted document, or the rejection as an error.
async fn answer(
    session: &mut Session,
    base: &str,
    call: &'static str,
    timeout: Duration,
) -> Result<Value, DeviceError> {
    let deadline = Instant::now() + timeout;
    let (accepted, rejected) = (format!("{base}/accepted"), format!("{base}/rejected"));
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(Message { topic, payload }) = session.next_message(left).await? else {
            return Err(DeviceError::timeout(
                format!("the answer to {call} on {base}/accepted or /rejected"),
                timeout,
            ));
        };
        let doc: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
        if topic == accepted {
            return Ok(doc);
        }
        if topic == rejected {
            return Err(rejection(call, &doc));
        }
        // An answer to another request (or a late one) is not this one's.
    }
}

/// A `…/rejected` document as an error: AWS's statusCode, errorCode and errorMessage.
pub fn rejection(call: &'static str, doc: &Value) -> DeviceError {
    DeviceError::ProvisioningRejected {
        call,
        status: doc["statusCode"].as_i64().unwrap_or(0),
        code: doc["errorCode"]
            .as_str()
            .unwrap_or("(no errorCode)")
            .to_string(),
        message: doc["errorMessage"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| doc.to_string()),
    }
}

fn key_error(e: keys::KeyError) -> DeviceError {
    DeviceError::Protocol(format!("device key: {e}"))
}

/// The thing name a serial provisions as when the manifest does not name it: the serial, with
/// every character AWS does not allow in a thing name replaced by '-'.
pub fn thing_for_serial(serial: &str) -> String {
    serial
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_carries_awss_code_and_message() {
        let e = rejection(
            "RegisterThing",
            &json!({"statusCode": 403, "errorCode": "AccessDenied", "errorMessage": "hook said no"}),
        );
        assert_eq!(
            e.to_string(),
            "RegisterThing rejected: AccessDenied (status 403): hook said no"
        );
        assert!(!e.is_bad_input());
    }

    #[test]
    fn unknown_serials_become_valid_thing_names() {
        assert_eq!(thing_for_serial("SN-0001"), "SN-0001");
        assert_eq!(thing_for_serial("SN 0001/a"), "SN-0001-a");
    }

    #[test]
    fn the_provision_topic_names_the_template() {
        assert_eq!(
            provision_topic("fleet-template-abc123"),
            "$aws/provisioning-templates/fleet-template-abc123/provision/json"
        );
    }
}
