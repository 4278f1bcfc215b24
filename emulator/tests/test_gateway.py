"""The device gateway (emulator/gateway/) driven by clients other people wrote.

paho-mqtt (MQTT over TLS with client certificates, over ALPN on the 443-like
port, over SigV4-presigned WebSockets), mosquitto_pub (Debian
mosquitto-clients; skipped when absent), python's ssl / http.client (TLS
alerts, HTTPS publish, the WebSocket upgrade).  Certificates come from the
emulator (CreateKeysAndCertificate / CreateCertificateFromCsr), policies and
things are attached with boto3, and the emulator's policy engine
(emulator/iotpolicy/) decides.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import queue
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import paho.mqtt.client as mqtt
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from test_datapath import ECHO, allow, create_rule, make_function, role, wait_for  # noqa: F401 (fixtures)

ACCOUNT = "123456789012"
REGION = "us-east-1"
ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}"
THING = "${iot:Connection.Thing.ThingName}"
WAIT = 5.0

# What a device may do: connect as its own thing, use dev/<thing>/... and its shadow.
DEVICE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{ARN}:client/{THING}"},
        {
            "Effect": "Allow",
            "Action": ["iot:Publish", "iot:Receive"],
            "Resource": [f"{ARN}:topic/dev/{THING}/*", f"{ARN}:topic/$aws/things/{THING}/shadow/*"],
        },
        {
            "Effect": "Allow",
            "Action": "iot:Subscribe",
            "Resource": [f"{ARN}:topicfilter/dev/{THING}/*", f"{ARN}:topicfilter/$aws/things/{THING}/shadow/*"],
        },
    ],
}

# An observer: connects as its own thing, subscribes to and receives anything.
OBSERVER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{ARN}:client/{THING}"},
        {"Effect": "Allow", "Action": ["iot:Subscribe", "iot:Receive"], "Resource": ["*"]},
    ],
}


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class Device:
    thing: str
    cert_arn: str
    cert_id: str
    certfile: str
    keyfile: str
    policy: str | None


@pytest.fixture(scope="module")
def gateway(emulator) -> dict:
    with urllib.request.urlopen(emulator.url + "/iotreg-test/gateway", timeout=5) as answer:
        return json.load(answer)


@pytest.fixture(scope="module")
def make_device(aws, tmp_path_factory):
    directory = tmp_path_factory.mktemp("devices")
    iot = aws("iot")

    def make(policy=DEVICE_POLICY, thing: bool = True, active: bool = True, csr: bool = False) -> Device:
        """``policy``: a document, a function of the thing name returning one, or None."""
        name = unique("dev")
        if callable(policy):
            policy = policy(name)
        keyfile = str(directory / f"{name}.key")
        if csr:
            key = ec.generate_private_key(ec.SECP256R1())
            request = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .sign(key, hashes.SHA256())
            )
            created = iot.create_certificate_from_csr(
                certificateSigningRequest=request.public_bytes(serialization.Encoding.PEM).decode(),
                setAsActive=active,
            )
            key_pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
        else:
            created = iot.create_keys_and_certificate(setAsActive=active)
            key_pem = created["keyPair"]["PrivateKey"]
        certfile = str(directory / f"{name}.pem")
        with open(certfile, "w") as handle:
            handle.write(created["certificatePem"])
        with open(keyfile, "w") as handle:
            handle.write(key_pem)
        policy_name = None
        if policy is not None:
            policy_name = unique("pol")
            iot.create_policy(policyName=policy_name, policyDocument=json.dumps(policy))
            iot.attach_policy(policyName=policy_name, target=created["certificateArn"])
        if thing:
            iot.create_thing(thingName=name)
            iot.attach_thing_principal(thingName=name, principal=created["certificateArn"])
        return Device(name, created["certificateArn"], created["certificateId"], certfile, keyfile, policy_name)

    return make


class Client:
    """A paho-mqtt client that records CONNACK, messages and disconnection."""

    def __init__(self, gateway: dict, device: Device | None, client_id: str | None = None,
                 alpn: bool = False, ws_path: str | None = None) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id if client_id is not None else device.thing,
            transport="websockets" if ws_path else "tcp",
            protocol=mqtt.MQTTv311,
            # A connection the server closes stays closed: paho's own reconnect would undo
            # the disconnect() in _on_disconnect (it marks the connection lost afterwards).
            reconnect_on_failure=False,
        )
        context = ssl.create_default_context(cafile=gateway["ca_file"])
        if device is not None:
            context.load_cert_chain(device.certfile, device.keyfile)
        if alpn:
            context.set_alpn_protocols(["x-amzn-mqtt-ca"])
        self.client.tls_set_context(context)
        if ws_path:
            self.client.ws_set_options(path=ws_path)
        self.connack: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.backlog: list[tuple[str, bytes]] = []
        self.subacks: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        self.client.on_connect = lambda c, u, flags, rc, props: self.connack.put(rc)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put(rcs)
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = lambda c, u: self.connack.put("connect failed")

    def _on_disconnect(self, client, userdata, flags, rc, props) -> None:
        self.disconnected.set()
        self.connack.put("disconnected")
        client.disconnect()  # no automatic reconnect: stops the network loop

    def connect(self, port: int):
        """CONNACK's reason code, or "disconnected" if the server closed first."""
        self.client.connect("localhost", port, keepalive=30)
        self.client.loop_start()
        return self.connack.get(timeout=WAIT)

    def subscribe(self, *filters: str) -> list:
        self.client.subscribe([(f, 1) for f in filters])
        return self.subacks.get(timeout=WAIT)

    def publish(self, topic: str, payload, qos: int = 1) -> None:
        if not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        self.client.publish(topic, payload, qos=qos)

    def expect(self, topic: str, timeout: float = WAIT) -> bytes:
        """The next message on ``topic`` (messages on other topics are kept for later)."""
        for index, (got_topic, payload) in enumerate(self.backlog):
            if got_topic == topic:
                del self.backlog[index]
                return payload
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [t for t, _ in self.backlog]
                raise AssertionError(f"no message on {topic!r} within {timeout}s; got {seen}")
            try:
                got_topic, payload = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if got_topic == topic:
                return payload
            self.backlog.append((got_topic, payload))

    def expect_json(self, topic: str) -> dict:
        return json.loads(self.expect(topic))

    def nothing_on(self, topic: str, quiet: float = 0.4) -> None:
        time.sleep(quiet)
        while not self.messages.empty():
            self.backlog.append(self.messages.get_nowait())
        for got_topic, payload in self.backlog:
            assert got_topic != topic, f"unexpected message on {topic}: {payload!r}"

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


@pytest.fixture
def clients():
    made: list[Client] = []

    def make(*args, **kwargs) -> Client:
        client = Client(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def connected(clients, gateway, device, **kwargs) -> Client:
    client = clients(gateway, device, **kwargs)
    rc = client.connect(gateway["ports"]["mqtt"])
    assert rc == 0, rc
    return client


def tls_alert(gateway: dict, certfile: str, keyfile: str, port: str = "mqtt") -> str:
    """The reason of the TLS failure the client sees (handshake, or first read under TLS 1.3)."""
    context = ssl.create_default_context(cafile=gateway["ca_file"])
    context.load_cert_chain(certfile, keyfile)
    with socket.create_connection(("127.0.0.1", gateway["ports"][port]), timeout=WAIT) as raw:
        with pytest.raises(ssl.SSLError) as failure:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.recv(1)
    return failure.value.reason


# -- the control endpoint --------------------------------------------------------


def test_control_endpoint_reports_ports_and_ca(gateway, emulator):
    assert set(gateway) == {"endpoint", "ca_file", "ports"}
    assert gateway["endpoint"] == "localhost"
    assert set(gateway["ports"]) == {"mqtt", "alpn", "https", "wss"}
    assert gateway["ports"]["alpn"] == gateway["ports"]["https"] == gateway["ports"]["wss"]
    assert gateway["ports"]["mqtt"] != gateway["ports"]["alpn"]
    assert os.path.isabs(gateway["ca_file"])
    with open(gateway["ca_file"]) as handle:
        ca = x509.load_pem_x509_certificate(handle.read().encode())
    assert ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Amazon.com Inc."
    # The server certificate names localhost, 127.0.0.1 and the DescribeEndpoint host.
    endpoint = emulator.client("iot").describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    for host in ("localhost", "127.0.0.1", endpoint):
        context = ssl.create_default_context(cafile=gateway["ca_file"])
        with socket.create_connection(("127.0.0.1", gateway["ports"]["alpn"]), timeout=WAIT) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")


# -- connecting -------------------------------------------------------------------


def test_connect_publish_subscribe_roundtrip(gateway, make_device, clients):
    device = make_device()
    client = connected(clients, gateway, device)
    assert client.subscribe(f"dev/{device.thing}/#") == [1]
    client.publish(f"dev/{device.thing}/hello", {"n": 1})
    assert json.loads(client.expect(f"dev/{device.thing}/hello")) == {"n": 1}


def test_certificate_from_csr_connects(gateway, make_device, clients):
    connected(clients, gateway, make_device(csr=True))


def test_foreign_certificate_fails_tls(gateway, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not from the emulator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    reason = tls_alert(gateway, str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
    assert "UNKNOWN_CA" in reason or "CERTIFICATE_UNKNOWN" in reason, reason


def test_no_client_certificate_fails_tls_on_mqtt_port(gateway):
    context = ssl.create_default_context(cafile=gateway["ca_file"])
    with socket.create_connection(("127.0.0.1", gateway["ports"]["mqtt"]), timeout=WAIT) as raw:
        with pytest.raises(ssl.SSLError):
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.recv(1)


def test_inactive_unregistered_and_deactivated_certificates_refused(gateway, make_device, clients, aws):
    iot = aws("iot")
    inactive = make_device(active=False)
    assert "CERTIFICATE_REVOKED" in tls_alert(gateway, inactive.certfile, inactive.keyfile)
    client = clients(gateway, inactive)
    try:
        outcome = client.connect(gateway["ports"]["mqtt"])  # TLS 1.3: the alert comes after connect()
    except (ssl.SSLError, OSError) as error:
        outcome = error
    assert outcome != 0

    # Activated: connects.  Deactivated while connected: disconnected, and refused again.
    iot.update_certificate(certificateId=inactive.cert_id, newStatus="ACTIVE")
    client = connected(clients, gateway, inactive)
    iot.update_certificate(certificateId=inactive.cert_id, newStatus="INACTIVE")
    assert client.disconnected.wait(WAIT)
    assert "CERTIFICATE_REVOKED" in tls_alert(gateway, inactive.certfile, inactive.keyfile, port="alpn")

    # Deleted (no longer registered) and REVOKED certificates.
    deleted = make_device(policy=None, thing=False)
    iot.update_certificate(certificateId=deleted.cert_id, newStatus="INACTIVE")
    iot.delete_certificate(certificateId=deleted.cert_id)
    assert "CERTIFICATE_REVOKED" in tls_alert(gateway, deleted.certfile, deleted.keyfile)
    revoked = make_device(policy=None, thing=False)
    iot.update_certificate(certificateId=revoked.cert_id, newStatus="REVOKED")
    assert "CERTIFICATE_REVOKED" in tls_alert(gateway, revoked.certfile, revoked.keyfile)


def test_client_id_must_be_the_thing_name(gateway, make_device, clients):
    device = make_device()
    client = clients(gateway, device, client_id=device.thing + "-other")
    assert client.connect(gateway["ports"]["mqtt"]) == "Not authorized"
    assert client.disconnected.wait(WAIT)


def test_certificate_without_policy_cannot_connect(gateway, make_device, clients):
    device = make_device(policy=None)
    assert clients(gateway, device).connect(gateway["ports"]["mqtt"]) == "Not authorized"


def test_same_client_id_takes_over(gateway, make_device, clients):
    device = make_device()
    first = connected(clients, gateway, device)
    second = connected(clients, gateway, device)
    assert first.disconnected.wait(WAIT)
    assert not second.disconnected.is_set()
    second.subscribe(f"dev/{device.thing}/#")
    second.publish(f"dev/{device.thing}/x", b"still here")
    assert second.expect(f"dev/{device.thing}/x") == b"still here"


# -- authorization of publish / subscribe / receive --------------------------------


def test_publish_to_another_things_topic_closes_the_connection(gateway, make_device, clients):
    device, other = make_device(), make_device()
    observer = connected(clients, gateway, make_device(policy=OBSERVER_POLICY))
    observer.subscribe(f"dev/{other.thing}/#", f"dev/{device.thing}/#")
    client = clients(gateway, device)
    client.client.will_set(f"dev/{device.thing}/will", b"gone", qos=1)
    assert client.connect(gateway["ports"]["mqtt"]) == 0
    client.publish(f"dev/{other.thing}/spoof", b"nope")
    assert client.disconnected.wait(WAIT)
    # Closed by the server, not by DISCONNECT: the will message is published.
    assert observer.expect(f"dev/{device.thing}/will") == b"gone"
    observer.nothing_on(f"dev/{other.thing}/spoof")


def test_keep_alive_timeout_closes_the_connection(gateway, make_device, clients):
    device = make_device()
    client = clients(gateway, device)
    client.client.connect("localhost", gateway["ports"]["mqtt"], keepalive=1)
    client.client.loop_start()
    assert client.connack.get(timeout=WAIT) == 0
    client.client.loop_stop()  # no more PINGREQ
    time.sleep(2.0)  # 1.5 x keep-alive, and a margin
    deadline = time.monotonic() + WAIT
    while not client.disconnected.is_set() and time.monotonic() < deadline:
        client.client.loop(timeout=0.2)  # reads the server's close
    assert client.disconnected.is_set()


def test_subscribe_outside_the_policy_closes_the_connection(gateway, make_device, clients):
    device = make_device()
    client = connected(clients, gateway, device)
    client.client.subscribe("dev/#", 1)
    assert client.disconnected.wait(WAIT)
    assert client.subacks.empty()


def test_receive_is_checked_per_message(gateway, make_device, clients):
    device = make_device()
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{ARN}:client/{THING}"},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": f"{ARN}:topicfilter/dev/*"},
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": f"{ARN}:topic/dev/{device.thing}/open"},
        ],
    }
    watcher = connected(clients, gateway, make_device(policy=policy))
    watcher.subscribe(f"dev/{device.thing}/+")
    client = connected(clients, gateway, device)
    client.publish(f"dev/{device.thing}/secret", b"s")
    client.publish(f"dev/{device.thing}/open", b"o")
    assert watcher.expect(f"dev/{device.thing}/open") == b"o"
    watcher.nothing_on(f"dev/{device.thing}/secret", quiet=0.1)


def test_policy_changes_count_without_reconnecting(gateway, make_device, clients, aws):
    device = make_device()
    client = connected(clients, gateway, device)
    client.subscribe(f"dev/{device.thing}/#")
    client.publish(f"dev/{device.thing}/a", b"1")
    assert client.expect(f"dev/{device.thing}/a") == b"1"
    aws("iot").detach_policy(policyName=device.policy, target=device.cert_arn)
    client.publish(f"dev/{device.thing}/a", b"2")
    assert client.disconnected.wait(WAIT)


# -- data path ----------------------------------------------------------------------


def test_device_publish_reaches_a_topic_rule_and_lambda(gateway, make_device, clients, aws, make_function):
    device = make_device()
    function = make_function(ECHO)
    rule = create_rule(aws, f"SELECT *, topic(2) AS device FROM 'dev/{device.thing}/telemetry'", function)
    allow(aws, function, rule)
    client = connected(clients, gateway, device)
    client.publish(f"dev/{device.thing}/telemetry", {"temperature": 21.5})
    wait_for(aws, function, f'EVENT {{"device": "{device.thing}", "temperature": 21.5}}')


def test_iot_data_publish_reaches_mqtt_subscribers(gateway, make_device, clients, aws):
    observer_device = make_device(policy=OBSERVER_POLICY)
    observer = connected(clients, gateway, observer_device)
    topic = f"dev/{unique('x')}/from-http"
    observer.subscribe(topic)
    aws("iot-data").publish(topic=topic, qos=1, payload=b'{"via": "http"}')
    assert observer.expect_json(topic) == {"via": "http"}


def literal_policy(thing: str) -> dict:
    """Publish on dev/<thing>/*, named literally: HTTPS has no client id, so the
    ${iot:Connection.Thing.*} variables have no value there."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": f"{ARN}:topic/dev/{thing}/*"}],
    }


def test_https_publish_with_client_certificate(gateway, make_device, clients):
    device = make_device(policy=literal_policy)
    observer = connected(clients, gateway, make_device(policy=OBSERVER_POLICY))
    observer.subscribe(f"dev/{device.thing}/#")
    context = ssl.create_default_context(cafile=gateway["ca_file"])
    context.load_cert_chain(device.certfile, device.keyfile)
    connection = http.client.HTTPSConnection("localhost", gateway["ports"]["https"], context=context, timeout=WAIT)
    try:
        topic = f"dev/{device.thing}/https"
        connection.request("POST", "/topics/" + quote(topic, safe="") + "?qos=1", body=b'{"h": 1}')
        answer = connection.getresponse()
        body = json.loads(answer.read())
        assert answer.status == 200 and body["message"] == "OK" and body["traceId"], body
        assert observer.expect_json(topic) == {"h": 1}
        # Same connection (keep-alive), a topic the policy does not allow: 403.
        connection.request("POST", "/topics/" + quote("dev/elsewhere/x", safe="") + "?qos=1", body=b"{}")
        answer = connection.getresponse()
        assert answer.status == 403
        assert json.loads(answer.read())["message"] == "Forbidden"
        observer.nothing_on("dev/elsewhere/x", quiet=0.1)
    finally:
        connection.close()
    # Without a client certificate: 403.
    plain = http.client.HTTPSConnection(
        "localhost", gateway["ports"]["https"], context=ssl.create_default_context(cafile=gateway["ca_file"]), timeout=WAIT
    )
    plain.request("POST", "/topics/dev%2Fx", body=b"{}")
    assert plain.getresponse().status == 403
    plain.close()


def test_mqtt_over_alpn_on_the_443_port(gateway, make_device, clients):
    device = make_device()
    client = clients(gateway, device, alpn=True)
    assert client.connect(gateway["ports"]["alpn"]) == 0
    client.subscribe(f"dev/{device.thing}/alpn")
    client.publish(f"dev/{device.thing}/alpn", b"a")
    assert client.expect(f"dev/{device.thing}/alpn") == b"a"


def presigned_path(gateway: dict, expires: int = 300, token: str | None = None) -> str:
    request = AWSRequest(method="GET", url=f"wss://localhost:{gateway['ports']['wss']}/mqtt")
    SigV4QueryAuth(Credentials("testing", "testing"), "iotdevicegateway", REGION, expires=expires).add_auth(request)
    url = urlsplit(request.url)
    path = f"{url.path}?{url.query}"
    if token:
        path += "&X-Amz-Security-Token=" + quote(token, safe="")
    return path


def websocket_upgrade_status(gateway: dict, path: str) -> int:
    connection = http.client.HTTPSConnection(
        "localhost", gateway["ports"]["wss"], context=ssl.create_default_context(cafile=gateway["ca_file"]), timeout=WAIT
    )
    try:
        connection.request("GET", path, headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "mqtt",
        })
        return connection.getresponse().status
    finally:
        connection.close()


def test_mqtt_over_websockets_with_sigv4(gateway, make_device, clients):
    observer = connected(clients, gateway, make_device(policy=OBSERVER_POLICY))
    topic = f"app/{unique('w')}"
    observer.subscribe(topic)
    client = clients(gateway, None, client_id=unique("app"), ws_path=presigned_path(gateway, token="session/token=="))
    assert client.connect(gateway["ports"]["wss"]) == 0
    client.subscribe(topic)
    client.publish(topic, b"over websockets")
    assert client.expect(topic) == b"over websockets"
    assert observer.expect(topic) == b"over websockets"


def test_websocket_bad_or_expired_signature_refused(gateway):
    good = presigned_path(gateway)
    assert websocket_upgrade_status(gateway, good) == 101
    signature = good.split("X-Amz-Signature=")[1][:64]
    forged = good.replace(signature, ("0" if signature[0] != "0" else "1") + signature[1:])
    assert websocket_upgrade_status(gateway, forged) == 403
    assert websocket_upgrade_status(gateway, "/mqtt") == 403
    short = presigned_path(gateway, expires=1)
    time.sleep(1.1)
    assert websocket_upgrade_status(gateway, short) == 403


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto_pub not installed (Debian package mosquitto-clients)")
def test_mosquitto_pub_with_only_ca_cert_key(gateway, make_device, clients):
    device = make_device()
    observer = connected(clients, gateway, make_device(policy=OBSERVER_POLICY))
    topic = f"dev/{device.thing}/mosquitto"
    observer.subscribe(topic)
    subprocess.run(
        ["mosquitto_pub", "--cafile", gateway["ca_file"], "--cert", device.certfile, "--key", device.keyfile,
         "-h", "localhost", "-p", str(gateway["ports"]["mqtt"]), "-i", device.thing, "-t", topic, "-q", "1",
         "-m", "from mosquitto"],
        check=True, timeout=15, capture_output=True,
    )
    assert observer.expect(topic) == b"from mosquitto"


# -- device shadow over MQTT ----------------------------------------------------------


def test_shadow_update_over_mqtt_accepted_delta_documents(gateway, make_device, clients, aws):
    device = make_device()
    client = connected(clients, gateway, device)
    prefix = f"$aws/things/{device.thing}/shadow"
    assert client.subscribe(f"{prefix}/update/accepted", f"{prefix}/update/delta",
                            f"{prefix}/update/documents", f"{prefix}/update/rejected") == [1, 1, 1, 1]
    client.publish(f"{prefix}/update", {"state": {"desired": {"color": "red"}, "reported": {"color": "green"}},
                                         "clientToken": "t1"})
    accepted = client.expect_json(f"{prefix}/update/accepted")
    assert accepted["state"] == {"desired": {"color": "red"}, "reported": {"color": "green"}}
    assert accepted["version"] == 1 and accepted["clientToken"] == "t1"
    assert set(accepted["metadata"]) == {"desired", "reported"}
    delta = client.expect_json(f"{prefix}/update/delta")
    assert delta["state"] == {"color": "red"} and delta["version"] == 1 and delta["clientToken"] == "t1"
    assert set(delta["metadata"]["color"]) == {"timestamp"}
    documents = client.expect_json(f"{prefix}/update/documents")
    assert "previous" not in documents and documents["current"]["version"] == 1
    assert documents["current"]["state"] == {"desired": {"color": "red"}, "reported": {"color": "green"}}
    # Reported catches up: accepted, no delta; the same store answers over HTTP.
    client.publish(f"{prefix}/update", {"state": {"reported": {"color": "red"}}})
    assert client.expect_json(f"{prefix}/update/accepted")["version"] == 2
    documents = client.expect_json(f"{prefix}/update/documents")
    assert documents["previous"]["version"] == 1 and documents["current"]["version"] == 2
    client.nothing_on(f"{prefix}/update/delta", quiet=0.2)
    shadow = json.loads(aws("iot-data").get_thing_shadow(thingName=device.thing)["payload"].read())
    assert shadow["state"] == {"desired": {"color": "red"}, "reported": {"color": "red"}} and shadow["version"] == 2
    # Errors: AWS's error document on /update/rejected.
    client.publish(f"{prefix}/update", {"state": {"reported": {"x": 1}}, "version": 1, "clientToken": "old"})
    rejected = client.expect_json(f"{prefix}/update/rejected")
    assert rejected["code"] == 409 and rejected["clientToken"] == "old" and rejected["message"] and rejected["timestamp"]
    client.publish(f"{prefix}/update", b"not json")
    assert client.expect_json(f"{prefix}/update/rejected")["code"] == 400


def test_shadow_get_delete_and_named_over_mqtt(gateway, make_device, clients):
    device = make_device()
    client = connected(clients, gateway, device)
    prefix = f"$aws/things/{device.thing}/shadow"
    named = f"{prefix}/name/config"
    client.subscribe(f"{prefix}/get/+", f"{prefix}/delete/+", f"{named}/update/accepted")
    client.publish(f"{prefix}/get", b"")
    missing = client.expect_json(f"{prefix}/get/rejected")
    assert missing["code"] == 404 and "No shadow exists" in missing["message"]
    client.publish(f"{prefix}/update", {"state": {"reported": {"on": True}}})
    client.publish(f"{prefix}/get", {"clientToken": "g"})
    got = client.expect_json(f"{prefix}/get/accepted")
    assert got["state"] == {"reported": {"on": True}} and got["version"] == 1 and got["clientToken"] == "g"
    client.publish(f"{prefix}/delete", b"")
    assert client.expect_json(f"{prefix}/delete/accepted")["version"] == 1
    client.publish(f"{named}/update", {"state": {"desired": {"mode": "eco"}}})
    assert client.expect_json(f"{named}/update/accepted")["state"] == {"desired": {"mode": "eco"}}


def test_http_update_thing_shadow_reaches_mqtt(gateway, make_device, clients, aws):
    device = make_device()
    client = connected(clients, gateway, device)
    prefix = f"$aws/things/{device.thing}/shadow"
    client.subscribe(f"{prefix}/update/delta", f"{prefix}/update/accepted", f"{prefix}/delete/accepted")
    aws("iot-data").update_thing_shadow(
        thingName=device.thing, payload=json.dumps({"state": {"desired": {"fan": "high"}}, "clientToken": "app"})
    )
    delta = client.expect_json(f"{prefix}/update/delta")
    assert delta["state"] == {"fan": "high"} and delta["clientToken"] == "app" and delta["version"] == 1
    assert client.expect_json(f"{prefix}/update/accepted")["state"] == {"desired": {"fan": "high"}}
    aws("iot-data").delete_thing_shadow(thingName=device.thing)
    assert client.expect_json(f"{prefix}/delete/accepted")["version"] == 1
    # iot-data Publish to a shadow request topic is a shadow request too.
    aws("iot-data").publish(topic=f"{prefix}/update", qos=1, payload=b'{"state": {"reported": {"fan": "low"}}}')
    accepted = client.expect_json(f"{prefix}/update/accepted")
    assert accepted["state"] == {"reported": {"fan": "low"}} and accepted["version"] == 2


# -- life cycle -------------------------------------------------------------------------


def test_sigterm_with_connected_clients_exits_fast_and_removes_the_ca(make_device, clients):
    from conftest import start_emulator

    server = start_emulator()
    try:
        with urllib.request.urlopen(server.url + "/iotreg-test/gateway", timeout=5) as answer:
            info = json.load(answer)
        assert os.path.exists(info["ca_file"])
        client = clients(info, None, client_id=unique("app"), ws_path=presigned_path(info))
        assert client.connect(info["ports"]["wss"]) == 0
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 1.5
        assert client.disconnected.wait(WAIT)
        assert not os.path.exists(info["ca_file"])
        assert not os.path.exists(os.path.dirname(info["ca_file"]))
        assert server.extra_stdout == []
    finally:
        server.stop()


def test_no_gateway_flag():
    from conftest import start_emulator

    server = start_emulator("--no-gateway")
    try:
        with pytest.raises(urllib.error.HTTPError) as failure:
            urllib.request.urlopen(server.url + "/iotreg-test/gateway", timeout=5)
        assert failure.value.code == 404
    finally:
        server.stop()


# -- concurrency --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(aws, tmp_path_factory):
    """110 devices as `iotreg up` makes a fleet (tests/fleet.py): (key directory, thing names).

    With DEVICE_POLICY, and publishing to dev/<thing>/reading, not the recipe's
    sensor/temperature/<thing>: test_datapath leaves a rule with a Lambda action on that
    topic, and hundreds of invocations would load the machine after these tests."""
    from fleet import create_fleet

    directory = str(tmp_path_factory.mktemp("fleet"))
    return directory, create_fleet(aws("iot"), directory, 110, csr=True, policy_document=json.dumps(DEVICE_POLICY))


def device_round(gateway: dict, keys: str, thing: str, listener: str = "mqtt", timeout: float = WAIT) -> str | None:
    """What `iotreg device simulate` does per device, with paho-mqtt: connect as ``thing`` over
    ``listener`` (mqtt, alpn or wss), one QoS 1 publish (to dev/<thing>/reading), its PUBACK,
    DISCONNECT.  None when all of that happened; otherwise what went wrong."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=thing, protocol=mqtt.MQTTv311,
        transport="websockets" if listener == "wss" else "tcp",
    )
    context = ssl.create_default_context(cafile=gateway["ca_file"])
    if listener == "wss":
        client.ws_set_options(path=presigned_path(gateway))
    else:
        context.load_cert_chain(f"{keys}/{thing}-certificate.pem.crt", f"{keys}/{thing}-private.pem.key")
    if listener == "alpn":
        context.set_alpn_protocols(["x-amzn-mqtt-ca"])
    client.tls_set_context(context)
    connack: queue.Queue = queue.Queue()
    acked = threading.Event()
    closed_by_server = threading.Event()
    leaving = threading.Event()
    client.on_connect = lambda c, u, flags, rc, props: connack.put(rc.value)
    client.on_publish = lambda c, u, mid, rc, props: acked.set()

    def on_disconnect(c, u, flags, rc, props) -> None:
        if not leaving.is_set():
            closed_by_server.set()
            connack.put("the server closed the connection")
        c.disconnect()  # no automatic reconnect

    client.on_disconnect = on_disconnect
    try:
        client.connect("localhost", gateway["ports"][listener], keepalive=30)
    except OSError as error:
        return f"{thing} over {listener}: connect failed: {error!r}"
    client.loop_start()
    try:
        try:
            rc = connack.get(timeout=timeout)
        except queue.Empty:
            return f"{thing} over {listener}: no CONNACK within {timeout} s"
        if rc != 0:
            return f"{thing} over {listener}: " + (f"{rc} before CONNACK" if isinstance(rc, str) else f"CONNACK {rc}")
        client.publish(f"dev/{thing}/reading", json.dumps({"temperature": 21.5, "device": thing}), qos=1)
        if not acked.wait(timeout):
            closed = " (closed by the server)" if closed_by_server.is_set() else ""
            return f"{thing} over {listener}: no PUBACK within {timeout} s{closed}"
        if closed_by_server.is_set():
            return f"{thing} over {listener}: closed by the server after its PUBACK"
        return None
    finally:
        leaving.set()
        client.disconnect()
        client.loop_stop()


def test_hundred_devices_connect_at_once(gateway, fleet):
    """Each device its own certificate, all connecting together: every one gets CONNACK 0
    and its PUBACK (a connection waiting for its CONNECT used to be reset under load)."""
    keys, things = fleet
    things = things[:100]
    start = threading.Barrier(len(things))
    errors: list[str | None] = [None] * len(things)

    def run(index: int) -> None:
        start.wait(timeout=30)
        errors[index] = device_round(gateway, keys, things[index], timeout=10.0)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(things))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    failed = [error for error in errors if error is not None]
    assert not failed, f"{len(failed)} of {len(things)} devices failed: {failed[:5]}"


def test_reconnect_with_the_same_client_id_after_disconnect_survives(gateway, fleet):
    """connect -> publish -> DISCONNECT -> connect again at once with the same client id,
    alternating listeners, while other devices come and go: the new connection is never closed
    (AWS only ever closes the older connection of a client id)."""
    keys, things = fleet
    thing, others = things[100], things[101:]
    stop = threading.Event()
    load_errors: list[str] = []

    def load(mine: list[str]) -> None:
        while not stop.is_set():
            for other in mine:
                error = device_round(gateway, keys, other)
                if error is not None:
                    load_errors.append(error)

    background = [threading.Thread(target=load, args=(others[i::3],)) for i in range(3)]
    for thread in background:
        thread.start()
    try:
        listeners = ("mqtt", "alpn", "wss")
        failed = []
        for round_ in range(50):
            error = device_round(gateway, keys, thing, listeners[round_ % len(listeners)])
            if error is not None:
                failed.append(f"round {round_}: {error}")
    finally:
        stop.set()
        for thread in background:
            thread.join(30)
    assert not failed, failed
    assert not load_errors, load_errors[:5]
