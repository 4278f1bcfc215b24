"""Classic device shadow: versions, merge, delete, independence from the registry."""

from __future__ import annotations

import json

import pytest

from conftest import error_code, http_status


def update(data, thing, doc):
    return json.loads(data.update_thing_shadow(thingName=thing, payload=json.dumps(doc))["payload"].read())


def get(data, thing):
    return json.loads(data.get_thing_shadow(thingName=thing)["payload"].read())


def test_missing_shadow_is_not_found(aws, name):
    data = aws("iot-data")
    with pytest.raises(data.exceptions.ResourceNotFoundException) as excinfo:
        data.get_thing_shadow(thingName=name)
    assert http_status(excinfo) == 404
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.delete_thing_shadow(thingName=name)


def test_versions_and_merge(aws, name):
    aws("iot").create_thing(thingName=name)
    data = aws("iot-data")
    first = update(data, name, {"state": {"desired": {"mode": "on", "cfg": {"a": 1, "b": 2}}}})
    assert first["version"] == 1
    assert first["state"] == {"desired": {"mode": "on", "cfg": {"a": 1, "b": 2}}}
    assert first["metadata"]["desired"]["cfg"]["a"]["timestamp"] == first["timestamp"]

    assert update(data, name, {"state": {"reported": {"mode": "off", "list": [1, 2]}}})[
        "version"
    ] == 2
    assert update(data, name, {"state": {"desired": {"cfg": {"a": None, "c": 3}}}})["version"] == 3
    doc = get(data, name)
    assert doc["version"] == 3
    assert doc["state"]["desired"] == {"mode": "on", "cfg": {"b": 2, "c": 3}}
    assert doc["state"]["reported"] == {"mode": "off", "list": [1, 2]}
    assert doc["state"]["delta"] == {"mode": "on", "cfg": {"b": 2, "c": 3}}
    assert set(doc["metadata"]) == {"desired", "reported"}
    assert "a" not in doc["metadata"]["desired"]["cfg"]

    update(data, name, {"state": {"reported": {"list": [3]}}})  # arrays are replaced
    assert get(data, name)["state"]["reported"]["list"] == [3]

    update(data, name, {"state": {"reported": {"mode": "on", "cfg": {"b": 2, "c": 3}}}})
    assert "delta" not in get(data, name)["state"]

    update(data, name, {"state": {"desired": None}})  # removes the whole section
    doc = get(data, name)
    assert "desired" not in doc["state"] and "desired" not in doc["metadata"]
    assert doc["version"] == 6


def test_optimistic_locking(aws, name):
    data = aws("iot-data")
    update(data, name, {"state": {"reported": {"x": 1}}})
    with pytest.raises(data.exceptions.ConflictException) as excinfo:
        update(data, name, {"state": {"reported": {"x": 2}}, "version": 5})
    assert http_status(excinfo) == 409
    accepted = update(data, name, {"state": {"reported": {"x": 2}}, "version": 1, "clientToken": "c1"})
    assert accepted["version"] == 2 and accepted["clientToken"] == "c1"


def test_delete_keeps_version_counting(aws, name):
    data = aws("iot-data")
    update(data, name, {"state": {"reported": {"x": 1}}})
    update(data, name, {"state": {"reported": {"x": 2}}})
    deleted = json.loads(data.delete_thing_shadow(thingName=name)["payload"].read())
    assert deleted["version"] == 2 and "timestamp" in deleted
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        data.get_thing_shadow(thingName=name)
    with pytest.raises(data.exceptions.ResourceNotFoundException) as excinfo:
        data.delete_thing_shadow(thingName=name)
    assert error_code(excinfo) == "ResourceNotFoundException"
    again = update(data, name, {"state": {"reported": {"y": 1}}})
    assert again["version"] == 3
    assert get(data, name)["state"] == {"reported": {"y": 1}}


def test_shadow_outlives_the_thing(aws, name):
    iot, data = aws("iot"), aws("iot-data")
    iot.create_thing(thingName=name)
    update(data, name, {"state": {"desired": {"x": 1}}})
    iot.delete_thing(thingName=name)
    assert get(data, name)["state"]["desired"] == {"x": 1}
    data.delete_thing_shadow(thingName=name)


def test_invalid_documents(aws, name):
    data = aws("iot-data")
    for bad in ("not json", json.dumps({"desired": {}}), json.dumps({"state": {"delta": {}}})):
        with pytest.raises(data.exceptions.InvalidRequestException):
            data.update_thing_shadow(thingName=name, payload=bad)
