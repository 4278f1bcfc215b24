"""Fleet indexing and fleet-scale paging (fixes iot_indexing_configuration, iot_search_index,
iot_connectivity, iot_list_things, iot_list_certificates, iot_list_targets_for_policy,
iot_list_things_in_thing_group), on an emulator of this module's own (the indexing
configuration is account-wide).  Where it matters, the same call against plain moto 5.2.1
(``moto_server`` from the venv) shows what the fix changed.  Connectivity is driven by
paho-mqtt and mosquitto's clients against the device gateway."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config

from conftest import clients_of, http_status, start_emulator
from test_gateway import (  # noqa: F401 (fixtures)
    WAIT,
    clients,
    connected,
    gateway,
    make_device,
    unique,
)

# The gateway's modules, for the in-process test of disconnect reasons.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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


@pytest.fixture(scope="module")
def raw_iot(emulator):
    """An IoT client that sends what it is given (botocore checks ranges itself otherwise)."""
    return boto3.client(
        "iot",
        endpoint_url=emulator.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, parameter_validation=False),
    )


@pytest.fixture(scope="module")
def plain_moto():
    """moto 5.2.1's own server, no fixes: what the emulator's fixes changed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.1)
    try:
        yield boto3.client(
            "iot",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"total_max_attempts": 1}, parameter_validation=False),
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


def indexing(iot, mode="REGISTRY_AND_SHADOW", connectivity="STATUS"):
    iot.update_indexing_configuration(
        thingIndexingConfiguration={"thingIndexingMode": mode, "thingConnectivityIndexingMode": connectivity}
    )


def search_all(iot, query: str, page: int = 100) -> tuple[list[dict], int]:
    """Every ThingDocument the query matches, and the number of pages it took."""
    things, pages, token = [], 0, None
    while True:
        kwargs = {"queryString": query, "maxResults": page}
        if token:
            kwargs["nextToken"] = token
        answer = iot.search_index(**kwargs)
        pages += 1
        things.extend(answer["things"])
        assert answer["thingGroups"] == []
        token = answer.get("nextToken")
        if not token:
            assert "nextToken" not in answer  # absent, not empty, on the last page
            return things, pages


def names(iot, query: str) -> set[str]:
    found, _ = search_all(iot, query)
    return {t["thingName"] for t in found}


def list_all(call, key: str, token_in: str, token_out: str, **kwargs) -> tuple[list, int]:
    items, pages, token = [], 0, None
    while True:
        if token:
            kwargs[token_in] = token
        answer = call(**kwargs)
        pages += 1
        items.extend(answer[key])
        token = answer.get(token_out)
        if not token:
            assert token_out not in answer
            return items, pages


# -- indexing configuration ---------------------------------------------------------------


def test_indexing_configuration_defaults_validation_and_replace(aws, raw_iot, plain_moto):
    iot = aws("iot")
    iot.update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "OFF"})
    got = iot.get_indexing_configuration()
    assert got["thingIndexingConfiguration"] == {
        "thingIndexingMode": "OFF",
        "thingConnectivityIndexingMode": "OFF",
        "deviceDefenderIndexingMode": "OFF",
        "namedShadowIndexingMode": "OFF",
    }
    assert got["thingGroupIndexingConfiguration"] == {"thingGroupIndexingMode": "OFF"}

    fields = [{"name": "attributes.fw", "type": "String"}]
    iot.update_indexing_configuration(
        thingIndexingConfiguration={
            "thingIndexingMode": "REGISTRY_AND_SHADOW",
            "thingConnectivityIndexingMode": "STATUS",
            "namedShadowIndexingMode": "ON",
            "customFields": fields,
            "filter": {"namedShadowNames": ["config"]},
        },
        thingGroupIndexingConfiguration={"thingGroupIndexingMode": "ON"},
    )
    thing = iot.get_indexing_configuration()["thingIndexingConfiguration"]
    assert thing["thingIndexingMode"] == "REGISTRY_AND_SHADOW"
    assert thing["thingConnectivityIndexingMode"] == "STATUS"
    assert thing["namedShadowIndexingMode"] == "ON"
    assert thing["customFields"] == fields and thing["filter"] == {"namedShadowNames": ["config"]}

    # The section sent replaces the previous one (a mode not given is OFF); the other stays.
    iot.update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "REGISTRY"})
    got = iot.get_indexing_configuration()
    assert got["thingIndexingConfiguration"]["thingConnectivityIndexingMode"] == "OFF"
    assert "customFields" not in got["thingIndexingConfiguration"]
    assert got["thingGroupIndexingConfiguration"]["thingGroupIndexingMode"] == "ON"

    bad = [
        {"thingIndexingMode": "OFF", "thingConnectivityIndexingMode": "STATUS"},
        {"thingIndexingMode": "OFF", "namedShadowIndexingMode": "ON"},
        {"thingIndexingMode": "BOGUS"},
        {"thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": "ON"},
        {"thingConnectivityIndexingMode": "STATUS"},
    ]
    for section in bad:
        with pytest.raises(raw_iot.exceptions.InvalidRequestException) as refused:
            raw_iot.update_indexing_configuration(thingIndexingConfiguration=section)
        assert http_status(refused) == 400, section
    # Nothing changed by the refused calls.
    assert iot.get_indexing_configuration()["thingIndexingConfiguration"]["thingIndexingMode"] == "REGISTRY"

    # moto took all of it: STATUS with indexing OFF, an unknown mode.
    plain_moto.update_indexing_configuration(
        thingIndexingConfiguration={"thingIndexingMode": "OFF", "thingConnectivityIndexingMode": "STATUS"}
    )
    plain_moto.update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "BOGUS"})
    assert plain_moto.get_indexing_configuration()["thingIndexingConfiguration"]["thingIndexingMode"] == "BOGUS"


def test_search_index_needs_thing_indexing(aws, plain_moto):
    iot = aws("iot")
    iot.update_indexing_configuration(
        thingIndexingConfiguration={"thingIndexingMode": "OFF"},
        thingGroupIndexingConfiguration={"thingGroupIndexingMode": "OFF"},
    )
    with pytest.raises(iot.exceptions.ResourceNotFoundException) as missing:
        iot.search_index(queryString="thingName:*")
    assert http_status(missing) == 404
    assert "Index AWS_Things does not exist" in missing.value.response["Error"]["Message"]
    assert iot.list_indices()["indexNames"] == []
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_index(indexName="AWS_Things")

    indexing(iot, "REGISTRY", "OFF")
    assert iot.list_indices()["indexNames"] == ["AWS_Things"]
    assert iot.describe_index(indexName="AWS_Things")["schema"] == "REGISTRY"
    indexing(iot)
    described = iot.describe_index(indexName="AWS_Things")
    assert described["indexStatus"] == "ACTIVE"
    assert described["schema"] == "REGISTRY_AND_SHADOW_AND_CONNECTIVITY_STATUS"
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.search_index(indexName="NoSuchIndex", queryString="thingName:*")

    # moto answered with indexing OFF.
    plain_moto.update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "OFF"})
    assert "things" in plain_moto.search_index(queryString="thingName:*")


# -- SearchIndex --------------------------------------------------------------------------


def test_search_index_pages_a_fleet_by_thing_type(aws, raw_iot, plain_moto):
    iot = aws("iot")
    indexing(iot)
    fleet_type, other_type = unique("T"), unique("U")
    iot.create_thing_type(thingTypeName=fleet_type)
    iot.create_thing_type(thingTypeName=other_type)
    fleet = [f"{fleet_type}-{i:03d}" for i in range(57)]
    for thing in fleet:
        iot.create_thing(thingName=thing, thingTypeName=fleet_type)
    for i in range(5):
        iot.create_thing(thingName=f"{other_type}-{i}", thingTypeName=other_type)

    found, pages = search_all(iot, f"thingTypeName:{fleet_type}", page=10)
    assert [t["thingName"] for t in found] == sorted(fleet)  # each once, stable order
    assert pages == 6
    first = iot.search_index(queryString=f"thingTypeName:{fleet_type}")
    assert len(first["things"]) == 10 and first["nextToken"]  # default page: 10

    # A thing made between two pages is seen once, nothing is repeated or skipped.
    page1 = iot.search_index(queryString=f"thingTypeName:{fleet_type}", maxResults=20)
    iot.create_thing(thingName=f"{fleet_type}-000a", thingTypeName=fleet_type)
    rest, _ = list_all(
        iot.search_index, "things", "nextToken", "nextToken",
        queryString=f"thingTypeName:{fleet_type}", maxResults=20, nextToken=page1["nextToken"],
    )
    seen = [t["thingName"] for t in page1["things"] + rest]
    assert len(seen) == len(set(seen))
    assert set(fleet) <= set(seen)

    for size in (0, 101, -1):
        with pytest.raises(raw_iot.exceptions.InvalidRequestException):
            raw_iot.search_index(queryString=f"thingTypeName:{fleet_type}", maxResults=size)
    assert len(iot.search_index(queryString=f"thingTypeName:{fleet_type}", maxResults=100)["things"]) == 58
    with pytest.raises(iot.exceptions.InvalidRequestException):  # another query's token
        iot.search_index(queryString=f"thingTypeName:{other_type}", nextToken=first["nextToken"])
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.search_index(queryString=f"thingTypeName:{fleet_type}", nextToken="bm90IG91cnM=")

    # moto: every match on one page whatever maxResults, no nextToken.
    plain_moto.create_thing_type(thingTypeName=fleet_type)
    for i in range(15):
        plain_moto.create_thing(thingName=f"{fleet_type}-{i}", thingTypeName=fleet_type)
    plain_moto.update_indexing_configuration(thingIndexingConfiguration={"thingIndexingMode": "REGISTRY"})
    moto_answer = plain_moto.search_index(queryString=f"thingTypeName:{fleet_type}", maxResults=10)
    assert len(moto_answer["things"]) == 15 and "nextToken" not in moto_answer


def test_thing_document_shape(aws, emulator):
    iot, data = aws("iot"), aws("iot-data")
    kind = unique("D")
    iot.create_thing_type(thingTypeName=kind)
    group = unique("g")
    iot.create_thing_group(thingGroupName=group)
    shadowed, bare = f"{kind}-shadowed", f"{kind}-bare"
    iot.create_thing(thingName=shadowed, thingTypeName=kind, attributePayload={"attributes": {"fw": "1.2"}})
    iot.create_thing(thingName=bare)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=shadowed)
    data.update_thing_shadow(
        thingName=shadowed, payload=json.dumps({"state": {"desired": {"mode": "eco"}, "reported": {"mode": "max"}}})
    )

    indexing(iot, "REGISTRY", "OFF")
    doc = iot.search_index(queryString=f"thingName:{shadowed}")["things"][0]
    assert set(doc) == {"thingName", "thingId", "thingTypeName", "thingGroupNames", "attributes"}
    assert doc["thingTypeName"] == kind and doc["thingGroupNames"] == [group]
    assert doc["attributes"] == {"fw": "1.2"}
    assert doc["thingId"] == iot.describe_thing(thingName=shadowed)["thingId"]

    indexing(iot)
    doc = iot.search_index(queryString=f"thingName:{shadowed}")["things"][0]
    shadow = json.loads(doc["shadow"])  # a JSON string, as the API model has it
    assert shadow["desired"] == {"mode": "eco"} and shadow["reported"] == {"mode": "max"}
    assert set(shadow["metadata"]) == {"desired", "reported"}
    assert shadow["version"] == 1 and shadow["hasDelta"] is True
    assert doc["connectivity"] == {"connected": False}  # never connected: no session details
    plain = iot.search_index(queryString=f"thingName:{bare}")["things"][0]
    assert "shadow" not in plain and "thingTypeName" not in plain and "thingGroupNames" not in plain

    data.update_thing_shadow(thingName=shadowed, payload=json.dumps({"state": {"reported": {"mode": "eco"}}}))
    shadow = json.loads(iot.search_index(queryString=f"thingName:{shadowed}")["things"][0]["shadow"])
    assert shadow["version"] == 2 and shadow["hasDelta"] is False


def test_query_subset(aws, raw_iot):
    iot, data = aws("iot"), aws("iot-data")
    indexing(iot)
    kind = unique("Q")
    iot.create_thing_type(thingTypeName=kind)
    group = unique("grp")
    iot.create_thing_group(thingGroupName=group)
    rows = {
        "a": ({"fw": "1.0", "site": "north"}, {"desired": {"temp": 20}, "reported": {"temp": 20, "battery": 80}}),
        "b": ({"fw": "1.1", "site": "north"}, {"desired": {"temp": 22}, "reported": {"temp": 19, "battery": 15}}),
        "c": ({"fw": "2.0", "site": "south"}, {"reported": {"temp": 25, "tags": ["x", "y"]}}),
        "d": ({"fw": "2.1", "site": "South Pole"}, None),
    }
    for suffix, (attributes, state) in rows.items():
        thing = f"{kind}-{suffix}"
        iot.create_thing(thingName=thing, thingTypeName=kind, attributePayload={"attributes": attributes})
        if state:
            data.update_thing_shadow(thingName=thing, payload=json.dumps({"state": state}))
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=f"{kind}-a")
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=f"{kind}-c")

    def q(query: str) -> set[str]:
        return {n.rsplit("-", 1)[1] for n in names(iot, f"thingTypeName:{kind} AND ({query})")}

    assert q("thingName:*") == {"a", "b", "c", "d"}
    assert q("attributes.fw:1.0") == {"a"}
    assert q("attributes.fw:1*") == {"a", "b"}
    assert q("attributes.fw:?.1") == {"b", "d"}
    assert q("attributes.site:NORTH") == {"a", "b"}  # search is case-insensitive
    assert q('attributes.site:"south pole"') == {"d"}
    assert q("attributes.site:north attributes.fw:1.1") == {"b"}  # implicit AND
    assert q("attributes.fw:1.0 OR attributes.fw:2.0") == {"a", "c"}
    assert q("NOT attributes.site:north") == {"c", "d"}
    assert q("-attributes.site:north") == {"c", "d"}
    assert q("(attributes.fw:1.0 OR attributes.fw:2.1) AND NOT thingName:*-d") == {"a"}
    assert q(f"thingGroupNames:{group}") == {"a", "c"}
    assert q("shadow.reported.battery<20") == {"b"}
    assert q("shadow.reported.battery>=80") == {"a"}
    assert q("shadow.reported.temp:[19 TO 22]") == {"a", "b"}
    assert q("shadow.reported.temp:{19 TO 25]") == {"a", "c"}
    assert q("shadow.reported.temp>20") == {"c"}
    assert q("shadow.desired.temp:22") == {"b"}
    assert q("shadow.reported.tags:y") == {"c"}
    assert q("shadow.hasDelta:true") == {"b"}
    assert q("shadow.hasDelta:false") == {"a", "c"}
    assert q("shadow.reported.temp:*") == {"a", "b", "c"}
    assert q("shadow.version:1") == {"a", "b", "c"}
    assert q("connectivity.connected:false") == {"a", "b", "c", "d"}
    assert q("connectivity.connected:true") == set()
    assert q("attributes.missing:*") == set()

    # Shadow fields need REGISTRY_AND_SHADOW, connectivity fields need STATUS.
    indexing(iot, "REGISTRY", "OFF")
    assert q("shadow.reported.temp:*") == set()
    assert q("connectivity.connected:false") == set()
    indexing(iot)

    for query in ("north", "thingName:(a OR b)", "(thingName:a", "thingName:a AND", "thingName:",
                  " ".join(f"attributes.k{i}:v" for i in range(13))):
        with pytest.raises(iot.exceptions.InvalidQueryException) as refused:
            iot.search_index(queryString=query)
        assert http_status(refused) == 400, query


def test_search_index_sees_changes_at_once(aws):
    iot, data = aws("iot"), aws("iot-data")
    indexing(iot)
    kind, other = unique("C"), unique("C")
    iot.create_thing_type(thingTypeName=kind)
    iot.create_thing_type(thingTypeName=other)
    for i in range(3):
        iot.create_thing(thingName=f"{kind}-{i}", thingTypeName=kind, attributePayload={"attributes": {"fw": "1"}})
    query = f"thingTypeName:{kind}"
    assert len(names(iot, query)) == 3
    iot.create_thing(thingName=f"{kind}-3", thingTypeName=kind)
    assert len(names(iot, query)) == 4
    iot.delete_thing(thingName=f"{kind}-3")
    assert names(iot, query) == {f"{kind}-{i}" for i in range(3)}
    iot.update_thing(thingName=f"{kind}-2", thingTypeName=other)
    assert names(iot, query) == {f"{kind}-0", f"{kind}-1"}
    iot.update_thing(thingName=f"{kind}-1", attributePayload={"attributes": {"fw": "2"}})
    assert names(iot, f"{query} attributes.fw:2") == {f"{kind}-1"}
    delta = f"{query} shadow.hasDelta:true"
    assert names(iot, delta) == set()
    data.update_thing_shadow(thingName=f"{kind}-0", payload=json.dumps({"state": {"desired": {"x": 1}}}))
    assert names(iot, delta) == {f"{kind}-0"}
    data.update_thing_shadow(thingName=f"{kind}-0", payload=json.dumps({"state": {"reported": {"x": 1}}}))
    assert names(iot, delta) == set()
    group = unique("grp")
    iot.create_thing_group(thingGroupName=group)
    iot.add_thing_to_thing_group(thingGroupName=group, thingName=f"{kind}-0")
    assert names(iot, f"thingGroupNames:{group}") == {f"{kind}-0"}
    iot.remove_thing_from_thing_group(thingGroupName=group, thingName=f"{kind}-0")
    assert names(iot, f"thingGroupNames:{group}") == set()


# -- connectivity, from the device gateway -------------------------------------------------


def connectivity(iot, thing: str) -> dict:
    return iot.search_index(queryString=f"thingName:{thing}")["things"][0]["connectivity"]


def wait_connectivity(iot, thing: str, connected: bool) -> dict:
    deadline = time.monotonic() + WAIT
    while True:
        state = connectivity(iot, thing)
        if state["connected"] is connected:
            return state
        assert time.monotonic() < deadline, f"{thing}: still {state}"
        time.sleep(0.05)


def test_connectivity_from_paho_connect_disconnect_and_take_over(aws, gateway, make_device, clients):
    iot = aws("iot")
    indexing(iot)
    device = make_device()
    assert connectivity(iot, device.thing) == {"connected": False}

    before = int(time.time() * 1000)
    client = connected(clients, gateway, device)
    state = wait_connectivity(iot, device.thing, True)
    assert before <= state["timestamp"] <= int(time.time() * 1000)
    assert "disconnectReason" not in state
    assert names(iot, f"thingName:{device.thing} connectivity.connected:true") == {device.thing}

    client.close()  # paho sends DISCONNECT
    state = wait_connectivity(iot, device.thing, False)
    assert state["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"
    assert state["timestamp"] >= before
    assert names(iot, f"thingName:{device.thing} connectivity.disconnectReason:CLIENT_INITIATED_DISCONNECT") == {
        device.thing
    }

    # Take-over: the old connection's DUPLICATE_CLIENTID does not overwrite the new one.
    first = connected(clients, gateway, device)
    wait_connectivity(iot, device.thing, True)
    taken = int(time.time() * 1000)
    second = connected(clients, gateway, device)
    assert first.disconnected.wait(WAIT)
    time.sleep(0.3)
    state = connectivity(iot, device.thing)
    assert state["connected"] is True and state["timestamp"] >= taken
    second.close()
    assert wait_connectivity(iot, device.thing, False)["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"


def test_connectivity_keep_alive_timeout(aws, gateway, make_device, clients):
    iot = aws("iot")
    indexing(iot)
    device = make_device()
    client = clients(gateway, device)
    client.client.connect("localhost", gateway["ports"]["mqtt"], keepalive=1)
    client.client.loop_start()
    assert client.connack.get(timeout=WAIT) == 0
    client.client.loop_stop()  # no more PINGREQ
    time.sleep(2.0)
    assert wait_connectivity(iot, device.thing, False)["disconnectReason"] == "MQTT_KEEP_ALIVE_TIMEOUT"


def test_connectivity_publish_denied_is_auth_error(aws, gateway, make_device, clients):
    iot = aws("iot")
    indexing(iot)
    device = make_device()
    client = connected(clients, gateway, device)
    wait_connectivity(iot, device.thing, True)
    client.publish("not/allowed", b"x")
    assert client.disconnected.wait(WAIT)
    assert wait_connectivity(iot, device.thing, False)["disconnectReason"] == "AUTH_ERROR"


@pytest.mark.skipif(shutil.which("mosquitto_sub") is None, reason="mosquitto clients not installed")
def test_connectivity_with_mosquitto_clients(aws, gateway, make_device):
    iot = aws("iot")
    indexing(iot)
    device = make_device()
    common = ["--cafile", gateway["ca_file"], "--cert", device.certfile, "--key", device.keyfile,
              "-h", "localhost", "-p", str(gateway["ports"]["mqtt"]), "-i", device.thing]
    # mosquitto_pub ends with DISCONNECT.
    subprocess.run(["mosquitto_pub", *common, "-t", f"dev/{device.thing}/x", "-m", "1", "-q", "1"],
                   check=True, timeout=WAIT)
    assert wait_connectivity(iot, device.thing, False)["disconnectReason"] == "CLIENT_INITIATED_DISCONNECT"
    # mosquitto_sub killed: the connection just drops.
    sub = subprocess.Popen(["mosquitto_sub", *common, "-t", f"dev/{device.thing}/#"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_connectivity(iot, device.thing, True)
    finally:
        sub.send_signal(signal.SIGKILL)
        sub.wait(timeout=WAIT)
    assert wait_connectivity(iot, device.thing, False)["disconnectReason"] == "CONNECTION_LOST"


def test_disconnect_reason_of_a_connection():
    from gateway.broker import Connection

    class Transport:
        def abort(self):
            pass

    def conn():
        return Connection(principal=type("P", (), {"label": "test"})(), transport=Transport(), listener="mqtt", peer=None)

    lost = conn()
    assert lost.disconnect_reason() == "CONNECTION_LOST"
    polite = conn()
    polite.client_disconnected = True
    assert polite.disconnect_reason() == "CLIENT_INITIATED_DISCONNECT"
    taken = conn()
    taken.kill("taken over", "DUPLICATE_CLIENTID")
    taken.kill("again", "AUTH_ERROR")  # the first reason counts
    assert taken.disconnect_reason() == "DUPLICATE_CLIENTID"
    closed = conn()
    closed.kill("operational")
    assert closed.disconnect_reason() == "SERVER_INITIATED_DISCONNECT"


# -- registry lists: AWS's page sizes ---------------------------------------------------------


def test_list_things_pages_and_filters(aws, raw_iot, plain_moto):
    iot = aws("iot")
    kind = unique("L")
    iot.create_thing_type(thingTypeName=kind)
    for i in range(60):
        iot.create_thing(thingName=f"{kind}-{i:02d}", thingTypeName=kind,
                         attributePayload={"attributes": {"fw": f"{i % 3}.{i}"}})
    things, pages = list_all(iot.list_things, "things", "nextToken", "nextToken", thingTypeName=kind)
    assert [t["thingName"] for t in things] == [f"{kind}-{i:02d}" for i in range(60)]
    assert pages == 3  # default page: 25
    assert set(things[0]) >= {"thingName", "thingArn", "thingTypeName", "attributes", "version"}
    _, pages = list_all(iot.list_things, "things", "nextToken", "nextToken", thingTypeName=kind, maxResults=250)
    assert pages == 1
    exact = iot.list_things(thingTypeName=kind, attributeName="fw", attributeValue="1.1", maxResults=250)["things"]
    assert [t["thingName"] for t in exact] == [f"{kind}-01"]
    prefixed = iot.list_things(thingTypeName=kind, attributeName="fw", attributeValue="1.", maxResults=250,
                               usePrefixAttributeValue=True)["things"]
    assert len(prefixed) == 20
    for size in (0, 251):
        with pytest.raises(raw_iot.exceptions.InvalidRequestException):
            raw_iot.list_things(maxResults=size)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.list_things(nextToken=base64.b64encode(b"offset:3").decode())

    # moto: a default page of 50, 251 accepted, the prefix flag ignored (no value equals "1.").
    plain_moto.create_thing_type(thingTypeName=kind)
    for i in range(60):
        plain_moto.create_thing(thingName=f"{kind}-{i}", thingTypeName=kind,
                                attributePayload={"attributes": {"fw": f"1.{i}"}})
    assert len(plain_moto.list_things(thingTypeName=kind)["things"]) == 50
    assert len(plain_moto.list_things(thingTypeName=kind, maxResults=251)["things"]) == 60
    assert plain_moto.list_things(attributeName="fw", attributeValue="1.", usePrefixAttributeValue=True)["things"] == []


def test_list_certificates_keyset_pages(aws):
    iot = aws("iot")
    made = [iot.create_keys_and_certificate(setAsActive=False)["certificateId"] for _ in range(7)]
    everything, _ = list_all(iot.list_certificates, "certificates", "marker", "nextMarker", pageSize=250)
    page = iot.list_certificates(pageSize=3)
    extra = iot.create_keys_and_certificate(setAsActive=False)["certificateId"]  # newest: before the marker
    rest, _ = list_all(iot.list_certificates, "certificates", "marker", "nextMarker", pageSize=3,
                       marker=page["nextMarker"])
    ids = [c["certificateId"] for c in page["certificates"] + rest]
    assert ids == [c["certificateId"] for c in everything]  # nothing repeated or skipped
    assert extra not in ids and set(made) <= set(ids)
    listed = next(c for c in everything if c["certificateId"] == made[0])
    described = iot.describe_certificate(certificateId=made[0])["certificateDescription"]
    assert listed["creationDate"] == described["creationDate"]
    assert listed["status"] == "INACTIVE" and listed["certificateMode"] == "DEFAULT"


def test_list_targets_for_policy_pages(aws, raw_iot, plain_moto):
    iot = aws("iot")
    policy = unique("pol")
    document = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]})
    iot.create_policy(policyName=policy, policyDocument=document)
    arns = []
    for _ in range(30):
        arn = iot.create_keys_and_certificate(setAsActive=False)["certificateArn"]
        iot.attach_policy(policyName=policy, target=arn)
        arns.append(arn)
    targets, pages = list_all(iot.list_targets_for_policy, "targets", "marker", "nextMarker",
                              policyName=policy, pageSize=13)
    assert targets == sorted(arns) and pages == 3
    first = iot.list_targets_for_policy(policyName=policy)
    assert len(first["targets"]) == 25 and first["nextMarker"]  # default page: 25
    iot.detach_policy(policyName=policy, target=arns[0])
    assert arns[0] not in list_all(iot.list_targets_for_policy, "targets", "marker", "nextMarker", policyName=policy)[0]
    for size in (0, 251):
        with pytest.raises(raw_iot.exceptions.InvalidRequestException):
            raw_iot.list_targets_for_policy(policyName=policy, pageSize=size)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.list_targets_for_policy(policyName=unique("nopol"))

    # moto: every target on one page, pageSize ignored.
    plain_moto.create_policy(policyName=policy, policyDocument=document)
    for _ in range(4):
        plain_moto.attach_policy(policyName=policy, target=plain_moto.create_keys_and_certificate()["certificateArn"])
    answer = plain_moto.list_targets_for_policy(policyName=policy, pageSize=2)
    assert len(answer["targets"]) == 4 and "nextMarker" not in answer


def test_list_things_in_thing_group_pages_and_recursive(aws, raw_iot, plain_moto):
    iot = aws("iot")
    parent, child, grandchild = unique("p"), unique("c"), unique("gc")
    iot.create_thing_group(thingGroupName=parent)
    iot.create_thing_group(thingGroupName=child, parentGroupName=parent)
    iot.create_thing_group(thingGroupName=grandchild, parentGroupName=child)
    prefix = unique("m")
    members = {parent: [], child: [], grandchild: []}
    for i in range(40):
        group = (parent, child, grandchild)[i % 3]
        thing = f"{prefix}-{i:02d}"
        iot.create_thing(thingName=thing)
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)
        members[group].append(thing)
    iot.add_thing_to_thing_group(thingGroupName=child, thingName=members[parent][0])  # in two groups
    direct, pages = list_all(iot.list_things_in_thing_group, "things", "nextToken", "nextToken", thingGroupName=parent)
    assert direct == sorted(members[parent]) and pages == 1
    everything, pages = list_all(iot.list_things_in_thing_group, "things", "nextToken", "nextToken",
                                 thingGroupName=parent, recursive=True, maxResults=10)
    assert everything == sorted(sum(members.values(), [])) and pages == 4  # each thing once
    first = iot.list_things_in_thing_group(thingGroupName=parent, recursive=True)
    assert len(first["things"]) == 25 and first["nextToken"]
    with pytest.raises(raw_iot.exceptions.InvalidRequestException):
        raw_iot.list_things_in_thing_group(thingGroupName=parent, maxResults=251)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.list_things_in_thing_group(thingGroupName=unique("none"))

    # moto: recursive ignored, one page.
    plain_moto.create_thing_group(thingGroupName=parent)
    plain_moto.create_thing_group(thingGroupName=child, parentGroupName=parent)
    for i in range(3):
        plain_moto.create_thing(thingName=f"{prefix}-{i}")
        plain_moto.add_thing_to_thing_group(thingGroupName=(parent, child, child)[i], thingName=f"{prefix}-{i}")
    assert plain_moto.list_things_in_thing_group(thingGroupName=parent, recursive=True, maxResults=1)["things"] == [
        f"{prefix}-0"
    ]


def test_reset_clears_indexing_and_connectivity(emulator, aws):
    iot = aws("iot")
    indexing(iot)
    urllib.request.urlopen(urllib.request.Request(emulator.url + "/moto-api/reset", method="POST"), timeout=10).close()
    assert iot.get_indexing_configuration()["thingIndexingConfiguration"]["thingIndexingMode"] == "OFF"
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.search_index(queryString="thingName:*")
