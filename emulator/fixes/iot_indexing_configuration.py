"""Fix: Fleet Indexing's configuration (UpdateIndexingConfiguration / GetIndexingConfiguration).

AWS behaviour restored (API reference "UpdateIndexingConfiguration",
"ThingIndexingConfiguration", "ThingGroupIndexingConfiguration"; developer
guide "Managing thing indexing", whose table lists the allowed mode
combinations)
    * One configuration per account and region; the default is everything
      OFF (``{"thingIndexingConfiguration": {"thingIndexingMode": "OFF",
      "thingConnectivityIndexingMode": "OFF"}, ...}`` in the guide's example).
    * ``thingIndexingConfiguration.thingIndexingMode`` is required:
      ``OFF | REGISTRY | REGISTRY_AND_SHADOW``.
      ``thingConnectivityIndexingMode``: ``OFF | STATUS`` ("To enable thing
      connectivity indexing, thingIndexMode must not be set to OFF"),
      ``deviceDefenderIndexingMode``: ``OFF | VIOLATIONS``,
      ``namedShadowIndexingMode``: ``OFF | ON`` (same rule for both).  A mode
      not given is OFF: the guide's table gives "REGISTRY / Not specified"
      the same effect as "REGISTRY / OFF", so the section sent replaces the
      previous one.  ``customFields``, ``managedFields`` and ``filter``
      (``namedShadowNames``, ``geoLocations``) are kept and returned.
    * ``thingGroupIndexingConfiguration.thingGroupIndexingMode`` is required:
      ``OFF | ON``; ``customFields`` / ``managedFields`` kept.
    * A section not sent keeps its previous value.  A bad value, a missing
      required mode, or a mode needing thing indexing while it is OFF is
      InvalidRequestException (HTTP 400), and nothing changes.

What moto 5.2.1 does instead
    Accepts anything: STATUS connectivity with thing indexing OFF, unknown
    modes (``"thingIndexingMode": "BOGUS"``), a section without its required
    mode; merges a new section into the old one (a mode not sent keeps its old
    value); and GetIndexingConfiguration returns empty ``customFields``,
    ``managedFields`` and ``filter`` nobody set.

The emulator's choice
    ``managedFields`` are returned as sent (AWS fills in the fields it manages
    for the modes chosen); an index is usable at once (AWS builds it first:
    DescribeIndex's ``indexStatus`` BUILDING, then ACTIVE).

Readers: ``thing_indexing(backend)`` / ``thing_group_indexing(backend)`` give
the current sections (dicts as GetIndexingConfiguration answers them); the
configuration lives on moto's IoT backend, so ``/moto-api/reset`` clears it.
"""

from __future__ import annotations

import copy
import json

from ._util import patch

THING_MODES = ("OFF", "REGISTRY", "REGISTRY_AND_SHADOW")
CONNECTIVITY_MODES = ("OFF", "STATUS")
DEFENDER_MODES = ("OFF", "VIOLATIONS")
NAMED_SHADOW_MODES = ("OFF", "ON")
GROUP_MODES = ("OFF", "ON")
FIELD_TYPES = ("Number", "String", "Boolean")

ATTRIBUTE = "_emulator_indexing_configuration"

DEFAULT_THING = {
    "thingIndexingMode": "OFF",
    "thingConnectivityIndexingMode": "OFF",
    "deviceDefenderIndexingMode": "OFF",
    "namedShadowIndexingMode": "OFF",
}
DEFAULT_GROUP = {"thingGroupIndexingMode": "OFF"}


def _invalid(message: str):
    from moto.iot.exceptions import InvalidRequestException

    return InvalidRequestException(message)


def _config(backend) -> dict:
    config = backend.__dict__.get(ATTRIBUTE)
    if config is None:
        config = {"thing": dict(DEFAULT_THING), "group": dict(DEFAULT_GROUP)}
        object.__setattr__(backend, ATTRIBUTE, config)
    return config


def thing_indexing(backend) -> dict:
    return copy.deepcopy(_config(backend)["thing"])


def thing_group_indexing(backend) -> dict:
    return copy.deepcopy(_config(backend)["group"])


def _mode(section: dict, key: str, allowed: tuple, required: bool = False) -> str:
    value = section.get(key)
    if value is None:
        if required:
            raise _invalid(f"{key} is required.")
        return "OFF"
    if value not in allowed:
        raise _invalid(f"{key} must be one of {', '.join(allowed)}; got {value!r}.")
    return value


def _fields(section: dict, key: str) -> list | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _invalid(f"{key} must be a list.")
    out = []
    for item in value:
        if not isinstance(item, dict) or not item.get("name"):
            raise _invalid(f"each of {key} needs a name.")
        if "type" in item and item["type"] not in FIELD_TYPES:
            raise _invalid(f"{key} type must be one of {', '.join(FIELD_TYPES)}; got {item['type']!r}.")
        out.append({k: item[k] for k in ("name", "type") if k in item})
    return out


def validate_thing(section) -> dict:
    if not isinstance(section, dict):
        raise _invalid("thingIndexingConfiguration must be an object.")
    out = {"thingIndexingMode": _mode(section, "thingIndexingMode", THING_MODES, required=True)}
    out["thingConnectivityIndexingMode"] = _mode(section, "thingConnectivityIndexingMode", CONNECTIVITY_MODES)
    out["deviceDefenderIndexingMode"] = _mode(section, "deviceDefenderIndexingMode", DEFENDER_MODES)
    out["namedShadowIndexingMode"] = _mode(section, "namedShadowIndexingMode", NAMED_SHADOW_MODES)
    if out["thingIndexingMode"] == "OFF":
        for key in ("thingConnectivityIndexingMode", "deviceDefenderIndexingMode", "namedShadowIndexingMode"):
            if out[key] != "OFF":
                raise _invalid(f"{key} {out[key]} requires thing indexing: thingIndexingMode must not be OFF.")
    for key in ("managedFields", "customFields"):
        fields = _fields(section, key)
        if fields is not None:
            out[key] = fields
    if section.get("filter") is not None:
        if not isinstance(section["filter"], dict):
            raise _invalid("filter must be an object.")
        out["filter"] = copy.deepcopy(section["filter"])
    return out


def validate_group(section) -> dict:
    if not isinstance(section, dict):
        raise _invalid("thingGroupIndexingConfiguration must be an object.")
    out = {"thingGroupIndexingMode": _mode(section, "thingGroupIndexingMode", GROUP_MODES, required=True)}
    for key in ("managedFields", "customFields"):
        fields = _fields(section, key)
        if fields is not None:
            out[key] = fields
    return out


def _body(response) -> dict:
    try:
        data = json.loads(response.body or "{}")
    except (TypeError, ValueError):
        raise _invalid("The request body is not valid JSON.")
    if not isinstance(data, dict):
        raise _invalid("The request body must be a JSON object.")
    return data


def _update_indexing_configuration(self):
    from moto.core.responses import EmptyResult

    body = _body(self)
    thing = body.get("thingIndexingConfiguration")
    group = body.get("thingGroupIndexingConfiguration")
    # Validate both sections before changing either (nothing changes on an error).
    new_thing = validate_thing(thing) if thing is not None else None
    new_group = validate_group(group) if group is not None else None
    config = _config(self.iot_backend)
    if new_thing is not None:
        config["thing"] = new_thing
    if new_group is not None:
        config["group"] = new_group
    return EmptyResult()


def _get_indexing_configuration(self):
    from moto.core.responses import ActionResult

    backend = self.iot_backend
    return ActionResult(
        {
            "thingIndexingConfiguration": thing_indexing(backend),
            "thingGroupIndexingConfiguration": thing_group_indexing(backend),
        }
    )


def apply() -> None:
    from moto.iot.responses import IoTResponse

    patch(IoTResponse, "update_indexing_configuration", _update_indexing_configuration)
    patch(IoTResponse, "get_indexing_configuration", _get_indexing_configuration)
