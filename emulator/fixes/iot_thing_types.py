"""Fix: IoT thing types follow AWS's create / deprecate / delete rules.

AWS behaviour restored
    * CreateThingType is idempotent: the same name and properties return the
      existing type; the same name with other properties is refused with
      ResourceAlreadyExistsException.  The answer includes ``thingTypeId``.
    * DescribeThingType's ``thingTypeMetadata`` has ``deprecationDate`` while
      the type is deprecated.
    * DeleteThingType is refused (InvalidRequestException) unless the type is
      deprecated and no thing still uses it.  AWS also makes you wait five
      minutes after deprecation ("Cannot delete thing type : NAME. Please wait
      for 5 minutes after deprecation and then retry"); the emulator applies
      that wait only when IOTREG_EMULATOR_THING_TYPE_DELETE_DELAY (seconds,
      default 0, or server.py --thing-type-delete-delay) is set, so tests stay
      fast but a retry loop can still be exercised.

What moto 5.2.1 does instead
    CreateThingType silently replaces an existing type (new id, deprecation
    forgotten) and omits thingTypeId; no deprecationDate; DeleteThingType
    deletes any type at once, deprecated or not, in use or not.
"""

from __future__ import annotations

import os

from ._util import patch

DELAY_ENV = "IOTREG_EMULATOR_THING_TYPE_DELETE_DELAY"


def _find_type(backend, name):
    for thing_type in backend.thing_types.values():
        if thing_type.thing_type_name == name:
            return thing_type
    return None


def _create_thing_type(self):
    from moto.core.responses import ActionResult
    from moto.iot.exceptions import ResourceAlreadyExistsException

    name = self._get_param("thingTypeName")
    properties = self._get_param("thingTypeProperties") or {}
    backend = self.iot_backend
    thing_type = _find_type(backend, name)
    if thing_type is None:
        backend.create_thing_type(thing_type_name=name, thing_type_properties=properties)
        thing_type = _find_type(backend, name)
    elif (thing_type.thing_type_properties or {}) != properties:
        raise ResourceAlreadyExistsException(
            f"Thing type {name} already exists with different properties",
            thing_type.thing_type_id,
            thing_type.arn,
        )
    return ActionResult(
        {
            "thingTypeName": thing_type.thing_type_name,
            "thingTypeArn": thing_type.arn,
            "thingTypeId": thing_type.thing_type_id,
        }
    )


def _deprecate_thing_type(self, thing_type_name, undo_deprecate):
    from moto.core.utils import utcnow
    from moto.iot.exceptions import ResourceNotFoundException

    thing_type = _find_type(self, thing_type_name)
    if thing_type is None:
        raise ResourceNotFoundException()
    if undo_deprecate:
        thing_type.metadata["deprecated"] = False
        thing_type.metadata.pop("deprecationDate", None)
    elif not thing_type.metadata.get("deprecated"):
        thing_type.metadata["deprecated"] = True
        thing_type.metadata["deprecationDate"] = utcnow()
    return thing_type


def _delete_thing_type(self, thing_type_name):
    from moto.core.utils import utcnow
    from moto.iot.exceptions import InvalidRequestException

    thing_type = self.describe_thing_type(thing_type_name)  # ResourceNotFound
    if not thing_type.metadata.get("deprecated"):
        raise InvalidRequestException(
            f"Cannot delete thing type : {thing_type_name}. "
            "The thing type must be deprecated before it can be deleted"
        )
    if any(
        t.thing_type is not None and t.thing_type.thing_type_name == thing_type_name
        for t in self.things.values()
    ):
        raise InvalidRequestException(
            f"Cannot delete thing type : {thing_type_name}. "
            "There are things still associated with it"
        )
    delay = float(os.environ.get(DELAY_ENV) or 0)
    deprecated_at = thing_type.metadata.get("deprecationDate")
    if delay > 0 and deprecated_at is not None:
        if (utcnow() - deprecated_at).total_seconds() < delay:
            raise InvalidRequestException(
                f"Cannot delete thing type : {thing_type_name}. "
                "Please wait for 5 minutes after deprecation and then retry"
            )
    del self.thing_types[thing_type.arn]


def apply() -> None:
    from moto.iot.models import IoTBackend
    from moto.iot.responses import IoTResponse

    patch(IoTResponse, "create_thing_type", _create_thing_type)
    patch(IoTBackend, "deprecate_thing_type", _deprecate_thing_type)
    patch(IoTBackend, "delete_thing_type", _delete_thing_type)
