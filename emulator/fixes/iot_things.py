"""Fix: IoT CreateThing / UpdateThing / DeleteThing follow AWS's rules.

AWS behaviour restored
    * CreateThing is idempotent: the same name with the same thing type,
      attributes and billing group returns the existing thing (same thingId);
      the same name with a different configuration is refused with
      ResourceAlreadyExistsException (HTTP 409).
    * UpdateThing increments the thing's ``version`` and honours
      ``expectedVersion`` (VersionConflictException, HTTP 409, on mismatch).
    * DeleteThing "returns successfully with no error if the deletion is
      successful or you specify a thing that doesn't exist" (API reference),
      honours ``expectedVersion``, and refuses a thing that still has
      principals attached with InvalidRequestException (HTTP 400).
    * DeleteThing leaves the thing's shadows alone (see iotdata_shadow).

What moto 5.2.1 does instead
    CreateThing silently replaces an existing thing (new thingId, new
    attributes, new type); UpdateThing never changes ``version`` and ignores
    expectedVersion; DeleteThing of a missing thing is ResourceNotFound, of an
    attached thing is InvalidRequestException with HTTP 409, and ignores
    expectedVersion.

At scale
    moto keys things by ARN but found one by name with a pass over all of them
    (``describe_thing``, used by DescribeThing, UpdateThing, DeleteThing,
    Attach/DetachThingPrincipal, ...; and this fix's CreateThing check), so
    creating 100,000 things cost a quadratic number of comparisons.  The ARN is
    made from the name (``FakeThing``: ``arn:<partition>:iot:<region>:<account>:thing/<name>``),
    so both now look the thing up by its ARN: same answers, one dict lookup.
"""

from __future__ import annotations

from ._util import patch


def _find_thing(backend, thing_name):
    """The thing named ``thing_name`` or None: moto keys things by their ARN, made from the name."""
    from moto.utilities.utils import get_partition

    if not isinstance(thing_name, str):
        return None
    region, account = backend.region_name, backend.account_id
    thing = backend.things.get(f"arn:{get_partition(region)}:iot:{region}:{account}:thing/{thing_name}")
    return thing if thing is not None and thing.thing_name == thing_name else None


def _describe_thing(self, thing_name):
    from moto.iot.exceptions import ResourceNotFoundException

    thing = _find_thing(self, thing_name)
    if thing is None:
        raise ResourceNotFoundException()
    return thing


def _requested_attributes(attribute_payload) -> dict:
    if not attribute_payload:
        return {}
    return dict(attribute_payload.get("attributes") or {})


def _make_create_thing(original):
    def create_thing(self, thing_name, thing_type_name, attribute_payload, billing_group_name=None):
        from moto.iot.exceptions import ResourceAlreadyExistsException

        thing = _find_thing(self, thing_name)
        if thing is None:
            return original(
                self, thing_name, thing_type_name, attribute_payload, billing_group_name
            )
        current_type = thing.thing_type.thing_type_name if thing.thing_type else None
        same = (
            (thing.attributes or {}) == _requested_attributes(attribute_payload)
            and current_type == (thing_type_name or None)
            and (thing.billing_group_name or None) == (billing_group_name or None)
        )
        if same:
            return thing
        raise ResourceAlreadyExistsException(
            f"Thing {thing_name} already exists in account with different attributes",
            thing.thing_id,
            thing.arn,
        )

    return create_thing


def _make_update_thing(original):
    def update_thing(self):
        from moto.iot.exceptions import VersionConflictException

        thing_name = self._get_param("thingName")
        expected = self._get_param("expectedVersion")
        thing = self.iot_backend.describe_thing(thing_name)
        if expected is not None and int(expected) != thing.version:
            raise VersionConflictException(thing_name)
        result = original(self)
        thing.version += 1
        return result

    return update_thing


def _delete_thing(self):
    from moto.core.responses import EmptyResult
    from moto.iot.exceptions import InvalidRequestException, VersionConflictException

    thing_name = self._get_param("thingName")
    expected = self._get_param("expectedVersion")
    backend = self.iot_backend
    thing = _find_thing(backend, thing_name)
    if thing is None:
        return EmptyResult()
    if expected is not None and int(expected) != thing.version:
        raise VersionConflictException(thing_name)
    if any(key[1] == thing_name for key in backend.principal_things):
        raise InvalidRequestException(
            f"Cannot delete. Thing {thing_name} is still attached to one or more principals"
        )
    backend.delete_thing(thing_name)
    return EmptyResult()


def apply() -> None:
    from moto.iot.models import IoTBackend
    from moto.iot.responses import IoTResponse

    original_create = getattr(IoTBackend, "_emulator_orig_create_thing", IoTBackend.create_thing)
    patch(IoTBackend, "create_thing", _make_create_thing(original_create))
    patch(IoTBackend, "describe_thing", _describe_thing)
    original_update = getattr(IoTResponse, "_emulator_orig_update_thing", IoTResponse.update_thing)
    patch(IoTResponse, "update_thing", _make_update_thing(original_update))
    patch(IoTResponse, "delete_thing", _delete_thing)
