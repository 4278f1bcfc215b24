"""Thing registry: idempotent create, versioned update, AWS-style delete."""

from __future__ import annotations

import pytest

from conftest import error_code, http_status


def test_create_thing_is_idempotent_and_conflicts_on_change(aws, name):
    iot = aws("iot")
    iot.create_thing_type(thingTypeName=name)
    payload = {"attributes": {"serial": "42"}}
    first = iot.create_thing(thingName=name, thingTypeName=name, attributePayload=payload)
    again = iot.create_thing(thingName=name, thingTypeName=name, attributePayload=payload)
    assert again["thingId"] == first["thingId"]
    assert again["thingArn"] == first["thingArn"]
    with pytest.raises(iot.exceptions.ResourceAlreadyExistsException) as excinfo:
        iot.create_thing(thingName=name, attributePayload={"attributes": {"serial": "43"}})
    assert http_status(excinfo) == 409
    described = iot.describe_thing(thingName=name)
    assert described["thingTypeName"] == name
    assert described["attributes"] == {"serial": "42"}
    assert described["thingId"] == first["thingId"]


def test_list_things_by_type(aws, name):
    iot = aws("iot")
    iot.create_thing_type(thingTypeName=name)
    iot.create_thing(thingName=name, thingTypeName=name)
    iot.create_thing(thingName=name + "x")
    things = iot.list_things(thingTypeName=name)["things"]
    assert [t["thingName"] for t in things] == [name]
    assert things[0]["thingTypeName"] == name


def test_update_thing_bumps_version_and_checks_expected_version(aws, name):
    iot = aws("iot")
    iot.create_thing(thingName=name, attributePayload={"attributes": {"a": "1", "b": "2"}})
    assert iot.describe_thing(thingName=name)["version"] == 1
    iot.update_thing(thingName=name, attributePayload={"attributes": {"a": "3"}, "merge": True})
    described = iot.describe_thing(thingName=name)
    assert described["version"] == 2
    assert described["attributes"] == {"a": "3", "b": "2"}
    iot.update_thing(thingName=name, attributePayload={"attributes": {"c": "1"}})
    assert iot.describe_thing(thingName=name)["attributes"] == {"c": "1"}
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.update_thing(thingName=name, expectedVersion=1, attributePayload={"attributes": {}})
    iot.update_thing(thingName=name, expectedVersion=3, attributePayload={"attributes": {"d": "1"}})
    assert iot.describe_thing(thingName=name)["version"] == 4


def test_delete_thing_rules(aws, name):
    iot = aws("iot")
    iot.create_thing(thingName=name)
    cert = iot.create_keys_and_certificate(setAsActive=False)
    iot.attach_thing_principal(thingName=name, principal=cert["certificateArn"])
    with pytest.raises(iot.exceptions.InvalidRequestException) as excinfo:
        iot.delete_thing(thingName=name)
    assert http_status(excinfo) == 400
    iot.detach_thing_principal(thingName=name, principal=cert["certificateArn"])
    with pytest.raises(iot.exceptions.VersionConflictException):
        iot.delete_thing(thingName=name, expectedVersion=7)
    iot.delete_thing(thingName=name)
    with pytest.raises(iot.exceptions.ResourceNotFoundException) as excinfo:
        iot.describe_thing(thingName=name)
    assert error_code(excinfo) == "ResourceNotFoundException"
    # AWS: deleting a thing that does not exist succeeds.
    iot.delete_thing(thingName=name)


def test_thing_principal_listings(aws, name):
    iot = aws("iot")
    iot.create_thing(thingName=name)
    cert = iot.create_keys_and_certificate(setAsActive=True)
    arn = cert["certificateArn"]
    iot.attach_thing_principal(thingName=name, principal=arn)
    iot.attach_thing_principal(thingName=name, principal=arn)  # idempotent
    assert iot.list_thing_principals(thingName=name)["principals"] == [arn]
    assert iot.list_principal_things(principal=arn)["things"] == [name]
    iot.detach_thing_principal(thingName=name, principal=arn)
    assert iot.list_thing_principals(thingName=name)["principals"] == []
    assert iot.list_principal_things(principal=arn)["things"] == []
