"""Thing types: idempotent create, deprecation metadata, delete preconditions."""

from __future__ import annotations

import time

import pytest

from conftest import start_emulator


def test_create_thing_type_is_idempotent(aws, name):
    iot = aws("iot")
    props = {"thingTypeDescription": "iotreg device", "searchableAttributes": ["serial"]}
    first = iot.create_thing_type(thingTypeName=name, thingTypeProperties=props)
    assert first["thingTypeId"]
    again = iot.create_thing_type(thingTypeName=name, thingTypeProperties=props)
    assert again["thingTypeId"] == first["thingTypeId"]
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException):
        iot.create_thing_type(
            thingTypeName=name, thingTypeProperties={"thingTypeDescription": "other"}
        )
    described = iot.describe_thing_type(thingTypeName=name)
    assert described["thingTypeId"] == first["thingTypeId"]
    assert described["thingTypeProperties"] == props
    assert described["thingTypeMetadata"]["deprecated"] is False
    assert "creationDate" in described["thingTypeMetadata"]


def test_deprecate_and_undo(aws, name):
    iot = aws("iot")
    iot.create_thing_type(thingTypeName=name)
    iot.deprecate_thing_type(thingTypeName=name)
    meta = iot.describe_thing_type(thingTypeName=name)["thingTypeMetadata"]
    assert meta["deprecated"] is True and "deprecationDate" in meta
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.create_thing(thingName=name, thingTypeName=name)
    iot.deprecate_thing_type(thingTypeName=name, undoDeprecate=True)
    meta = iot.describe_thing_type(thingTypeName=name)["thingTypeMetadata"]
    assert meta["deprecated"] is False and "deprecationDate" not in meta
    iot.create_thing(thingName=name, thingTypeName=name)


def test_delete_thing_type_preconditions(aws, name):
    iot = aws("iot")
    iot.create_thing_type(thingTypeName=name)
    iot.create_thing(thingName=name, thingTypeName=name)
    with pytest.raises(iot.exceptions.InvalidRequestException) as excinfo:
        iot.delete_thing_type(thingTypeName=name)  # not deprecated
    assert "deprecated" in str(excinfo.value)
    iot.deprecate_thing_type(thingTypeName=name)
    with pytest.raises(iot.exceptions.InvalidRequestException):
        iot.delete_thing_type(thingTypeName=name)  # a thing still uses it
    iot.update_thing(thingName=name, removeThingType=True)
    iot.delete_thing_type(thingTypeName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing_type(thingTypeName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.delete_thing_type(thingTypeName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.deprecate_thing_type(thingTypeName=name)


def test_delete_waits_after_deprecation_when_configured(name):
    server = start_emulator("--thing-type-delete-delay", "1.5")
    try:
        iot = server.client("iot")
        iot.create_thing_type(thingTypeName=name)
        iot.deprecate_thing_type(thingTypeName=name)
        with pytest.raises(iot.exceptions.InvalidRequestException) as excinfo:
            iot.delete_thing_type(thingTypeName=name)
        assert "Please wait for 5 minutes after deprecation" in str(excinfo.value)
        time.sleep(1.6)
        iot.delete_thing_type(thingTypeName=name)
    finally:
        assert server.stop() == 0
