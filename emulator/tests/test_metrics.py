"""AWS/IoT metrics in the emulator's CloudWatch (emulator/metrics.py, fixes/cloudwatch_metrics.py).

In-process: ``metrics.record`` aggregates per minute, never raises, never blocks
while a flush is stuck, loses nothing under concurrent callers, and moto's
reset drops what was not flushed yet.

Against a server of this module's own (so every count is exact): devices
driven by paho-mqtt and python's ssl / http.client make the gateway count
Connect.Success / AuthError / ClientError, Connection.AuthNError,
PublishIn.Success / AuthError / ClientError and Subscribe.Success /
AuthError with the Protocol dimension; topic rules count TopicMatch and the
Lambda action's Success / Failure; each is read back with boto3 through
GetMetricStatistics, GetMetricData and ListMetrics, over JSON and over the
Rust SDK's RPC v2 CBOR.  Plus the query fix (namespace, exact dimension set,
one ListMetrics entry per metric) and /moto-api/reset.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import queue
import ssl
import sys
import threading
import time
import urllib.request
from urllib.parse import quote

import paho.mqtt.client as mqtt
import pytest

from conftest import clients_of, start_emulator
from test_datapath import ECHO, allow, create_rule, publish, wait_for
from test_fix_cloudwatch_cbor import cbor_cw  # noqa: F401 (fixture)
from test_gateway import (  # noqa: F401 (fixtures)
    ARN,
    DEVICE_POLICY,
    THING,
    WAIT,
    clients,
    connected,
    gateway,
    make_device,
    unique,
)
from test_datapath import make_function, role  # noqa: F401 (fixtures)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import metrics  # noqa: E402

MQTT = {"Protocol": "MQTT"}
HTTP = {"Protocol": "HTTP"}
# The flusher puts values into CloudWatch about once a second.
SETTLE = 6.0


# -- a server of this module's own: counts start at zero --------------------------------


@pytest.fixture(scope="module")
def emulator():
    server = start_emulator()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def aws(emulator):
    return clients_of(emulator)


def _window() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(minutes=30), now + datetime.timedelta(minutes=2)


def total(cw, metric: str, dims: dict[str, str], namespace: str = "AWS/IoT") -> float:
    """The metric's Sum over the last half hour (GetMetricStatistics)."""
    start, end = _window()
    answer = cw.get_metric_statistics(
        Namespace=namespace,
        MetricName=metric,
        Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=start,
        EndTime=end,
        Period=60,
        Statistics=["Sum"],
    )
    return sum(p["Sum"] for p in answer["Datapoints"])


class Counts:
    """Counts of metrics before an action; ``expect`` waits for exactly the increments."""

    def __init__(self, cw, *keys: tuple[str, dict[str, str]]) -> None:
        self.cw = cw
        self.keys = keys
        self.before = {self._key(k): total(cw, *k) for k in keys}

    @staticmethod
    def _key(key) -> tuple:
        return key[0], tuple(sorted(key[1].items()))

    def now(self) -> dict:
        return {self._key(k): total(self.cw, *k) - self.before[self._key(k)] for k in self.keys}

    def expect(self, increments: dict[tuple[str, str], float]) -> None:
        """``increments``: (metric, protocol or rule) -> exact increase; others must stay."""
        want = {}
        for key in self.keys:
            label = (key[0], next(iter(key[1].values())))
            want[self._key(key)] = increments.get(label, 0.0)
        deadline = time.monotonic() + SETTLE
        while self.now() != want and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(1.5)  # one more flush: nothing more arrives
        assert self.now() == want


BROKER = [
    ("Connect.Success", MQTT),
    ("Connect.AuthError", MQTT),
    ("Connect.ClientError", MQTT),
    ("Connection.AuthNError", MQTT),
    ("Connection.AuthNError", HTTP),
    ("PublishIn.Success", MQTT),
    ("PublishIn.AuthError", MQTT),
    ("PublishIn.ClientError", MQTT),
    ("PublishIn.Success", HTTP),
    ("PublishIn.AuthError", HTTP),
    ("Subscribe.Success", MQTT),
    ("Subscribe.AuthError", MQTT),
]


@pytest.fixture
def broker(aws):
    return Counts(aws("cloudwatch"), *BROKER)


# -- in-process: record / flush / reset ----------------------------------------------------


@pytest.fixture
def backend():
    from moto.cloudwatch.models import cloudwatch_backends

    metrics.apply()
    metrics.flush()
    return lambda: cloudwatch_backends[metrics.ACCOUNT][metrics.REGION]


def sets_of(backend, name: str) -> list:
    metrics.flush()
    return [d for d in backend().metric_data if d.name == name]


def test_record_aggregates_a_minute_into_statistic_sets(backend):
    name = unique("m")
    for value in (1, 5, 2):
        metrics.record(name, value, {"JobId": "j1"})
    metrics.record(name, 7, {"JobId": "j2"}, namespace="Custom/Test", unit="Seconds")
    data = sets_of(backend, name)
    by_job = {(d.namespace, d.dimensions[0].value): d for d in data}
    j1 = by_job[("AWS/IoT", "j1")]
    # One minute's values in one statistic set (one flush), stamped with the minute's start.
    assert (j1.sum, j1.sample_count, j1.min, j1.max, j1.unit) == (8.0, 3.0, 1.0, 5.0, "Count")
    assert j1.timestamp.second == 0 and j1.timestamp.microsecond == 0
    assert abs((datetime.datetime.utcnow() - j1.timestamp).total_seconds()) < 120
    j2 = by_job[("Custom/Test", "j2")]
    assert (j2.sum, j2.unit) == (7.0, "Seconds")


def test_record_never_raises_and_drops_what_is_not_a_metric(backend, capfd):
    name = unique("m")
    for bad in (
        lambda: metrics.record(None),
        lambda: metrics.record(""),
        lambda: metrics.record(name, float("nan")),
        lambda: metrics.record(name, "many"),
        lambda: metrics.record(name, 1, {"Protocol": 1}),
        lambda: metrics.record(name, 1, {"": "x"}),
        lambda: metrics.record(name, 1, namespace=""),
    ):
        assert bad() is None
    metrics.record(name, 2)
    assert [d.sum for d in sets_of(backend, name)] == [2.0]
    assert "7 value(s) dropped" in capfd.readouterr().err


def test_concurrent_callers_lose_nothing(backend):
    name = unique("m")

    def hammer() -> None:
        for _ in range(500):
            metrics.record(name, 1, {"Protocol": "MQTT"})

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = sets_of(backend, name)
    assert sum(d.sum for d in data) == 4000.0
    assert sum(d.sample_count for d in data) == 4000.0


def test_record_does_not_wait_for_a_stuck_flush(backend):
    name = unique("m")
    # A flush holding the lock (moto slow, say): callers still return at once.
    with metrics._flush_lock:
        started = time.monotonic()
        for _ in range(2000):
            metrics.record(name)
        elapsed = time.monotonic() - started
    assert elapsed < 0.5, elapsed
    assert sum(d.sum for d in sets_of(backend, name)) == 2000.0


def test_reset_drops_unflushed_values_and_recording_goes_on(backend):
    from moto.core.base_backend import BackendDict

    name = unique("m")
    with metrics._flush_lock:  # the flusher cannot take them before the reset
        metrics.record(name, 3)
    BackendDict.reset()
    assert sets_of(backend, name) == []
    metrics.record(name, 4)
    assert [d.sum for d in sets_of(backend, name)] == [4.0]


def test_stop_flushes_and_ends_the_thread(backend):
    name = unique("m")
    metrics.record(name, 5)
    thread = metrics._flusher
    metrics.stop()
    assert not thread.is_alive()
    assert [d.sum for d in backend().metric_data if d.name == name] == [5.0]
    metrics.record(name, 1)  # starts a new flusher
    assert metrics._flusher is not thread and metrics._flusher.is_alive()
    assert sum(d.sum for d in sets_of(backend, name)) == 6.0


# -- the device gateway's message broker metrics -------------------------------------------


class Paho:
    """A bare paho-mqtt client: CONNACK code or what happened instead."""

    def __init__(self, gateway: dict, device, protocol=mqtt.MQTTv311, client_id: str | None = None) -> None:
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id if client_id is not None else device.thing,
            protocol=protocol,
            reconnect_on_failure=False,
        )
        context = ssl.create_default_context(cafile=gateway["ca_file"])
        context.load_cert_chain(device.certfile, device.keyfile)
        self.client.tls_set_context(context)
        self.outcome: queue.Queue = queue.Queue()
        self.client.on_connect = lambda c, u, f, rc, p: self.outcome.put(str(rc))
        self.client.on_disconnect = lambda c, u, f, rc, p: self.outcome.put("disconnected")

    def connect(self, port: int) -> str:
        self.client.connect("localhost", port, keepalive=30)
        self.client.loop_start()
        try:
            return self.outcome.get(timeout=WAIT)
        finally:
            self.client.loop_stop()
            self.client.disconnect()


def test_connects_publishes_and_subscribes_are_counted(gateway, make_device, clients, broker):
    device = make_device()
    client = connected(clients, gateway, device)
    assert client.subscribe(f"dev/{device.thing}/a", f"dev/{device.thing}/b") == [1, 1]
    client.subscribe(f"dev/{device.thing}/c")
    for n in range(3):
        client.publish(f"dev/{device.thing}/a", {"n": n})
    for n in range(3):
        assert json.loads(client.expect(f"dev/{device.thing}/a")) == {"n": n}
    # Over ALPN on the 443-like port it is MQTT too.
    other = make_device()
    over_alpn = clients(gateway, other, alpn=True)
    assert over_alpn.connect(gateway["ports"]["alpn"]) == 0
    broker.expect(
        {
            ("Connect.Success", "MQTT"): 2,
            ("Subscribe.Success", "MQTT"): 2,  # per SUBSCRIBE request, not per filter
            ("PublishIn.Success", "MQTT"): 3,
        }
    )


def test_refused_connects_are_auth_errors(gateway, make_device, clients, broker):
    device = make_device()
    # Not the thing's name as client id; no policy at all: CONNACK 5 both times.
    assert clients(gateway, device, client_id=device.thing + "-x").connect(gateway["ports"]["mqtt"]) == "Not authorized"
    assert clients(gateway, make_device(policy=None)).connect(gateway["ports"]["mqtt"]) == "Not authorized"
    broker.expect({("Connect.AuthError", "MQTT"): 2})


def test_a_connect_that_is_not_mqtt_3_1_1_is_a_client_error(gateway, make_device, broker):
    # paho's MQTT 3.1 CONNECT ("MQIsdp", level 3): the broker closes the connection.
    outcome = Paho(gateway, make_device(), protocol=mqtt.MQTTv31).connect(gateway["ports"]["mqtt"])
    assert outcome != "Success", outcome
    broker.expect({("Connect.ClientError", "MQTT"): 1})


def _self_signed(tmp_path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not from the emulator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "foreign.pem", tmp_path / "foreign.key"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(certfile), str(keyfile)


def _handshake(gateway: dict, port: str, certfile=None, keyfile=None, alpn=None) -> None:
    """A TLS connection the gateway refuses (the alert may come with the first read)."""
    import socket

    context = ssl.create_default_context(cafile=gateway["ca_file"])
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    if alpn:
        context.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", gateway["ports"][port]), timeout=WAIT) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.recv(1)


def test_certificates_refused_in_the_handshake_are_authentication_errors(gateway, make_device, tmp_path, broker):
    certfile, keyfile = _self_signed(tmp_path)
    _handshake(gateway, "mqtt", certfile, keyfile)  # another CA
    inactive = make_device(active=False)
    _handshake(gateway, "mqtt", inactive.certfile, inactive.keyfile)  # revoked by the CRL
    _handshake(gateway, "mqtt")  # no certificate on the certificate-only port
    _handshake(gateway, "alpn", certfile, keyfile, alpn=["x-amzn-mqtt-ca"])  # MQTT over ALPN
    _handshake(gateway, "https", certfile, keyfile, alpn=["http/1.1"])  # HTTPS publish
    # None of them reached CONNECT: no Connect.AuthError.
    broker.expect({("Connection.AuthNError", "MQTT"): 4, ("Connection.AuthNError", "HTTP"): 1})


def test_refused_publishes_and_subscriptions(gateway, make_device, clients, broker):
    device = make_device()
    denied = connected(clients, gateway, device)
    denied.publish("dev/someone-else/x", b"no")  # outside the policy: closed
    assert denied.disconnected.wait(WAIT)
    qos2 = connected(clients, gateway, device)
    qos2.publish(f"dev/{device.thing}/x", b"two", qos=2)  # AWS IoT has no QoS 2: closed
    assert qos2.disconnected.wait(WAIT)
    nosy = connected(clients, gateway, device)
    nosy.client.subscribe("dev/#", 1)  # outside the policy: closed, no SUBACK
    assert nosy.disconnected.wait(WAIT)
    broker.expect(
        {
            ("Connect.Success", "MQTT"): 3,
            ("PublishIn.AuthError", "MQTT"): 1,
            ("PublishIn.ClientError", "MQTT"): 1,
            ("Subscribe.AuthError", "MQTT"): 1,
        }
    )


def test_https_and_http_api_publishes_are_protocol_http(gateway, make_device, aws, broker):
    # HTTPS publish has no client id, hence no thing-name variable: the topic by name.
    device = make_device(
        policy=lambda thing: {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": f"{ARN}:topic/dev/{thing}/*"}],
        }
    )
    context = ssl.create_default_context(cafile=gateway["ca_file"])
    context.load_cert_chain(device.certfile, device.keyfile)
    connection = http.client.HTTPSConnection("localhost", gateway["ports"]["https"], context=context, timeout=WAIT)
    try:
        for topic, status in ((f"dev/{device.thing}/h", 200), ("dev/elsewhere/h", 403)):
            connection.request("POST", "/topics/" + quote(topic, safe="") + "?qos=1", body=b"{}")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == status
    finally:
        connection.close()
    # iot-data Publish (SigV4, the emulator's HTTP port) is the broker's HTTP publish too.
    publish(aws, "anything/at/all", {"x": 1})
    broker.expect({("PublishIn.Success", "HTTP"): 2, ("PublishIn.AuthError", "HTTP"): 1})


# -- the rules engine -------------------------------------------------------------------


def test_topic_match_and_lambda_action_success_and_failure(aws, make_function):
    cw = aws("cloudwatch")
    function = make_function(ECHO)
    ok = create_rule(aws, "SELECT * FROM 'metrics/+/t' WHERE n > 1", function)
    allow(aws, function, ok)
    missing = create_rule(aws, "SELECT * FROM 'metrics/+/t'", function + "-gone")
    off = create_rule(aws, "SELECT * FROM 'metrics/+/t'", function, disabled=True)
    counts = Counts(
        cw,
        *[("TopicMatch", {"RuleName": r}) for r in (ok, missing, off)],
        ("Success", {"RuleName": ok, "ActionType": "Lambda"}),
        ("Failure", {"RuleName": ok, "ActionType": "Lambda"}),
        ("Success", {"RuleName": missing, "ActionType": "Lambda"}),
        ("Failure", {"RuleName": missing, "ActionType": "Lambda"}),
    )
    marker = unique("m")
    publish(aws, "metrics/a/t", {"n": 1})  # matches both enabled rules; `ok` selects nothing
    publish(aws, "metrics/b/t", {"n": 2, "marker": marker})
    publish(aws, "metrics/a/other", {"n": 3})  # no rule listens
    wait_for(aws, function, marker)
    deadline = time.monotonic() + SETTLE
    want = {
        ("TopicMatch", ok): 2,
        ("TopicMatch", missing): 2,
        ("TopicMatch", off): 0,
        ("Success", ok): 1,
        ("Failure", ok): 0,
        ("Success", missing): 0,
        ("Failure", missing): 2,
    }
    got = {}
    while time.monotonic() < deadline:
        got = {
            (metric, dims["RuleName"]): value
            for (metric, dims_items), value in counts.now().items()
            for dims in [dict(dims_items)]
        }
        if got == want:
            break
        time.sleep(0.3)
    assert got == want


# -- reading them back: GetMetricData, ListMetrics, CBOR --------------------------------


def test_get_metric_data_and_list_metrics_over_json_and_cbor(gateway, make_device, clients, aws, cbor_cw):  # noqa: F811
    device = make_device()
    connected(clients, gateway, device)
    start, end = _window()
    query = {
        "Id": "connects",
        "MetricStat": {
            "Metric": {"Namespace": "AWS/IoT", "MetricName": "Connect.Success", "Dimensions": [MQTT_DIM]},
            "Period": 300,
            "Stat": "Sum",
        },
    }
    for cw in (aws("cloudwatch"), cbor_cw):
        deadline = time.monotonic() + SETTLE
        while True:
            result = cw.get_metric_data(MetricDataQueries=[query], StartTime=start, EndTime=end)
            values = result["MetricDataResults"][0]["Values"]
            if sum(values) >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert sum(values) >= 1, result
        stamps = result["MetricDataResults"][0]["Timestamps"]
        assert all(t.second == 0 for t in stamps), stamps  # periods from whole minutes
        listed = cw.list_metrics(Namespace="AWS/IoT", MetricName="Connect.Success")["Metrics"]
        assert listed == [{"Namespace": "AWS/IoT", "MetricName": "Connect.Success", "Dimensions": [MQTT_DIM]}]
        stats = cw.get_metric_statistics(
            Namespace="AWS/IoT", MetricName="Connect.Success", Dimensions=[MQTT_DIM],
            StartTime=start, EndTime=end, Period=60, Statistics=["Sum", "SampleCount"],
        )["Datapoints"]
        assert sum(p["Sum"] for p in stats) == sum(p["SampleCount"] for p in stats) >= 1


MQTT_DIM = {"Name": "Protocol", "Value": "MQTT"}


def test_a_metric_is_its_namespace_name_and_exact_dimensions(aws, name):
    cw = aws("cloudwatch")
    now = datetime.datetime.now(datetime.timezone.utc)
    two = [{"Name": "RuleName", "Value": name}, {"Name": "ActionType", "Value": "Lambda"}]
    for namespace, value in ((f"{name}/A", 3.0), (f"{name}/B", 100.0)):
        for _ in range(3):  # several datapoints of the same metric
            cw.put_metric_data(Namespace=namespace, MetricData=[{"MetricName": "Failure", "Dimensions": two, "Value": value, "Timestamp": now}])
    cw.put_metric_data(Namespace=f"{name}/A", MetricData=[{"MetricName": "Failure", "Value": 7.0, "Timestamp": now}])

    def data(dims) -> list:
        start, end = _window()
        q = {"Id": "q", "MetricStat": {"Metric": {"Namespace": f"{name}/A", "MetricName": "Failure", "Dimensions": dims}, "Period": 3600, "Stat": "Sum"}}
        return cw.get_metric_data(MetricDataQueries=[q], StartTime=start, EndTime=end)["MetricDataResults"][0]["Values"]

    assert data(two) == [9.0]  # not the other namespace's 300
    assert data(list(reversed(two))) == [9.0]  # order does not matter
    assert data([]) == [7.0]  # only the metric without dimensions
    assert data(two[:1]) == []  # a combination never published
    assert total(cw, "Failure", {"RuleName": name}, namespace=f"{name}/A") == 0.0
    assert total(cw, "Failure", {"ActionType": "Lambda", "RuleName": name}, namespace=f"{name}/A") == 9.0
    listed = cw.list_metrics(Namespace=f"{name}/A")["Metrics"]
    assert len(listed) == 2, listed  # one per dimension set, not per datapoint


def test_reset_empties_them_and_counting_goes_on():
    server = start_emulator()
    try:
        cw, data = server.client("cloudwatch"), server.client("iot-data")
        data.publish(topic="a/b", qos=0, payload=b"{}")
        deadline = time.monotonic() + SETTLE
        while total(cw, "PublishIn.Success", HTTP) < 1 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert total(cw, "PublishIn.Success", HTTP) == 1
        urllib.request.urlopen(urllib.request.Request(server.url + "/moto-api/reset", method="POST"), timeout=WAIT)
        assert cw.list_metrics(Namespace="AWS/IoT")["Metrics"] == []
        data.publish(topic="a/b", qos=0, payload=b"{}")
        deadline = time.monotonic() + SETTLE
        while total(cw, "PublishIn.Success", HTTP) < 1 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert total(cw, "PublishIn.Success", HTTP) == 1
    finally:
        assert server.stop() == 0
