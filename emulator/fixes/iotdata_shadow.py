"""Fix: the classic (and named) device shadow behaves like AWS's.

AWS behaviour restored (IoT data plane: UpdateThingShadow, GetThingShadow,
DeleteThingShadow, ListNamedShadowsForThing)
    * Shadows live apart from the thing registry: "Deleting a thing object
      does not delete the corresponding device's shadow", and a shadow can be
      written for a thing name that is not (or no longer) registered.
    * Version: every accepted update adds 1.  DeleteThingShadow answers
      ``{"version": <current>, "timestamp": ...}`` without adding 1, and
      "deleting a shadow does not reset its version number to 0": the next
      update after a delete gets version current+1.  An update carrying
      ``version`` that is not the current version is refused with
      ConflictException (HTTP 409, "Version conflict").
    * Merge: an update changes only the fields it names; nested objects are
      merged; arrays and scalars are replaced; a field set to null is removed;
      ``"desired": null`` (or ``"reported": null``) removes that whole
      section; a section left empty disappears.
    * GetThingShadow returns state.desired / state.reported / state.delta
      (delta = desired fields that differ from reported, recursively; arrays
      compared whole), metadata with a timestamp per leaf, version, timestamp.
    * A shadow that does not exist, or was deleted, is ResourceNotFoundException
      (HTTP 404) for Get and for Delete ("No shadow exists with name: ...").
    * The update answer echoes the request's state (nulls included) with
      metadata for the fields written, the new version, timestamp, and the
      request's clientToken if any.

What moto 5.2.1 does instead
    Stores shadows on the registry thing (deleting the thing deletes them and
    a shadow for an unregistered thing is ResourceNotFound); ignores
    ``"desired": null``; DeleteThingShadow adds 1 to the version, and
    succeeds again on an already deleted shadow (adding 1 each time); an
    update with ``version`` on a shadow that never existed is HTTP 500.

Listeners (the device gateway, emulator/gateway/)
    ``add_listener(fn)``: after every accepted update and every delete, from
    whichever API (iot-data HTTP or the gateway's MQTT shadow topics),
    ``fn(event)`` is called with a dict: ``op`` ("update" / "delete"),
    ``account``, ``region``, ``thing``, ``shadow`` (None = classic) and the
    documents AWS publishes on the shadow's MQTT topics: ``accepted`` (the
    answer), for an update ``documents`` ({"previous"?, "current",
    "timestamp", "clientToken"?}) and ``delta`` (None unless the update had a
    ``desired`` section and desired still differs from reported).  Called
    under the store's lock, so listeners see changes in order; a listener must
    not block (the gateway only schedules work on its event loop).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

from ._util import patch

_lock = threading.Lock()
_listeners: list = []
# Moves on every accepted update and delete (any account/region), so a reader
# that caches something derived from shadows (fleet indexing's query matches,
# fixes/iot_search_index.py) knows when to rebuild it.
_changes = [0]


def version() -> int:
    """The shadow store's change counter."""
    return _changes[0]


def add_listener(fn) -> None:
    """Call ``fn(event)`` after every accepted update and delete (see above)."""
    if fn not in _listeners:
        _listeners.append(fn)


def remove_listener(fn) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def _notify(backend, event: dict) -> None:
    event["account"] = getattr(backend, "account_id", None)
    event["region"] = getattr(backend, "region_name", None)
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception as error:  # noqa: BLE001 - a listener must never fail an API call
            import sys

            sys.stderr.write(f"iotreg-emulator: shadow listener failed: {error!r}\n")


class ShadowDocument:
    def __init__(self) -> None:
        self.desired: dict | None = None
        self.reported: dict | None = None
        self.meta_desired: dict | None = None
        self.meta_reported: dict | None = None
        self.version = 0
        self.deleted = False
        self.timestamp = int(time.time())


def _store(backend) -> dict[tuple[str, str | None], ShadowDocument]:
    store = getattr(backend, "_emulator_shadows", None)
    if store is None:
        store = {}
        backend._emulator_shadows = store
    return store


def _not_found(thing_name: str, shadow_name: str | None):
    from moto.core.exceptions import JsonRESTError

    name = thing_name if shadow_name is None else f"{thing_name}~{shadow_name}"
    error = JsonRESTError("ResourceNotFoundException", f"No shadow exists with name: '{name}'")
    error.code = 404
    return error


def _invalid(message: str):
    from moto.iotdata.exceptions import InvalidRequestException

    return InvalidRequestException(message)


def _metadata_for(value: Any, ts: int) -> Any:
    if isinstance(value, dict):
        return {k: _metadata_for(v, ts) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_metadata_for(v, ts) for v in value]
    return {"timestamp": ts}


def _merge(target: dict, meta: dict, update: dict, ts: int) -> None:
    """Merge ``update`` into ``target`` (and its metadata) the way AWS does."""
    for key, value in update.items():
        if value is None:
            target.pop(key, None)
            meta.pop(key, None)
        elif isinstance(value, dict):
            if not isinstance(target.get(key), dict):
                target[key] = {}
                meta[key] = {}
            if not isinstance(meta.get(key), dict):
                meta[key] = {}
            _merge(target[key], meta[key], value, ts)
            if not target[key]:
                target.pop(key)
                meta.pop(key, None)
        else:
            target[key] = copy.deepcopy(value)
            meta[key] = _metadata_for(value, ts)


def _delta(desired: Any, reported: Any) -> Any:
    if isinstance(desired, dict) and isinstance(reported, dict):
        out = {}
        for key, value in desired.items():
            if key not in reported:
                out[key] = value
                continue
            sub = _delta(value, reported[key])
            if sub is not None:
                out[key] = sub
        return out or None
    return None if desired == reported else desired


def _document(doc: ShadowDocument) -> dict:
    """{"state", "metadata", "version"} of a stored shadow (for /update/documents)."""
    state: dict = {}
    metadata: dict = {}
    for section in ("desired", "reported"):
        value = getattr(doc, section)
        if value:
            state[section] = copy.deepcopy(value)
            metadata[section] = copy.deepcopy(getattr(doc, f"meta_{section}") or {})
    return {"state": state, "metadata": metadata, "version": doc.version}


def _delta_metadata(delta: dict, meta: Any) -> dict:
    """The desired metadata of the fields in ``delta`` (AWS: delta metadata = desired's)."""
    out: dict = {}
    if not isinstance(meta, dict):
        return out
    for key, value in delta.items():
        sub = meta.get(key)
        if isinstance(value, dict) and isinstance(sub, dict) and "timestamp" not in sub:
            out[key] = _delta_metadata(value, sub)
        elif sub is not None:
            out[key] = copy.deepcopy(sub)
    return out


def _validate(payload: bytes | str | None) -> dict:
    try:
        document = json.loads(payload or b"")
    except (ValueError, TypeError):
        raise _invalid("Payload contains invalid json")
    if not isinstance(document, dict):
        raise _invalid("Payload contains invalid json")
    if "state" not in document:
        raise _invalid("Missing required node: state")
    state = document["state"]
    if state is not None and not isinstance(state, dict):
        raise _invalid("State node must be an object")
    for key in state or {}:
        if key not in ("desired", "reported"):
            raise _invalid(f"State contains an invalid node: '{key}'")
        if state[key] is not None and not isinstance(state[key], dict):
            raise _invalid(f"Invalid {key} node: must be an object")
    if "version" in document and not isinstance(document["version"], int):
        raise _invalid("Invalid version")
    return document


def update_shadow(backend, thing_name: str, shadow_name: str | None, payload) -> dict:
    from moto.iotdata.exceptions import ConflictException

    request = _validate(payload)
    with _lock:
        store = _store(backend)
        doc = store.get((thing_name, shadow_name))
        current_version = doc.version if doc is not None else 0
        if "version" in request and request["version"] != current_version:
            raise ConflictException("Version conflict")
        if doc is None:
            doc = ShadowDocument()
            store[(thing_name, shadow_name)] = doc
        previous = None if doc.deleted or doc.version == 0 else _document(doc)
        if doc.deleted:
            doc.desired = doc.reported = doc.meta_desired = doc.meta_reported = None
            doc.deleted = False
        ts = int(time.time())
        state = request["state"] or {}
        answer_meta: dict = {}
        for section in ("desired", "reported"):
            if section not in state:
                continue
            value = state[section]
            if value is None:
                setattr(doc, section, None)
                setattr(doc, f"meta_{section}", None)
                continue
            target = getattr(doc, section) or {}
            meta = getattr(doc, f"meta_{section}") or {}
            _merge(target, meta, value, ts)
            setattr(doc, section, target or None)
            setattr(doc, f"meta_{section}", meta or None)
            answer_meta[section] = _metadata_for(value, ts)
        if request["state"] is None:
            doc.desired = doc.reported = doc.meta_desired = doc.meta_reported = None
        doc.version = current_version + 1
        doc.timestamp = ts
        _changes[0] += 1
        answer: dict = {
            "state": request["state"],
            "metadata": answer_meta,
            "version": doc.version,
            "timestamp": ts,
        }
        if "clientToken" in request:
            answer["clientToken"] = request["clientToken"]
        if _listeners:
            documents: dict = {}
            if previous is not None:
                documents["previous"] = previous
            documents["current"] = _document(doc)
            documents["timestamp"] = ts
            delta_doc = None
            if isinstance(state.get("desired"), dict) and doc.desired:
                delta = _delta(doc.desired, doc.reported or {})
                if delta:
                    delta_doc = {
                        "version": doc.version,
                        "timestamp": ts,
                        "state": delta,
                        "metadata": _delta_metadata(delta, doc.meta_desired),
                    }
            if "clientToken" in request:
                documents["clientToken"] = request["clientToken"]
                if delta_doc is not None:
                    delta_doc["clientToken"] = request["clientToken"]
            _notify(
                backend,
                {
                    "op": "update",
                    "thing": thing_name,
                    "shadow": shadow_name,
                    "accepted": copy.deepcopy(answer),
                    "documents": documents,
                    "delta": delta_doc,
                },
            )
        return answer


def get_shadow(backend, thing_name: str, shadow_name: str | None) -> dict:
    with _lock:
        doc = _store(backend).get((thing_name, shadow_name))
        if doc is None or doc.deleted:
            raise _not_found(thing_name, shadow_name)
        state: dict = {}
        metadata: dict = {}
        if doc.desired:
            state["desired"] = copy.deepcopy(doc.desired)
            metadata["desired"] = copy.deepcopy(doc.meta_desired)
        if doc.reported:
            state["reported"] = copy.deepcopy(doc.reported)
            metadata["reported"] = copy.deepcopy(doc.meta_reported)
        if doc.desired:
            delta = _delta(doc.desired, doc.reported or {})
            if delta:
                state["delta"] = delta
        return {
            "state": state,
            "metadata": metadata,
            "version": doc.version,
            "timestamp": int(time.time()),
        }


def delete_shadow(
    backend, thing_name: str, shadow_name: str | None, client_token: str | None = None
) -> dict:
    with _lock:
        doc = _store(backend).get((thing_name, shadow_name))
        if doc is None or doc.deleted:
            raise _not_found(thing_name, shadow_name)
        doc.deleted = True
        doc.desired = doc.reported = doc.meta_desired = doc.meta_reported = None
        _changes[0] += 1
        answer: dict = {"version": doc.version, "timestamp": int(time.time())}
        if client_token is not None:
            answer["clientToken"] = client_token
        if _listeners:
            _notify(
                backend,
                {"op": "delete", "thing": thing_name, "shadow": shadow_name, "accepted": dict(answer)},
            )
        return answer


def list_named_shadows(backend, thing_name: str) -> list[str]:
    with _lock:
        return sorted(
            shadow
            for (thing, shadow), doc in _store(backend).items()
            if thing == thing_name and shadow is not None and not doc.deleted
        )


# --- response-layer replacements (moto's IoTDataPlaneResponse) -------------


def _shadow_name(response) -> str | None:
    return response.querystring.get("name", [None])[0]


def _update_thing_shadow(self) -> str:
    answer = update_shadow(
        self.iotdata_backend, self._get_param("thingName"), _shadow_name(self), self.body
    )
    return json.dumps(answer)


def _get_thing_shadow(self) -> str:
    answer = get_shadow(self.iotdata_backend, self._get_param("thingName"), _shadow_name(self))
    return json.dumps(answer)


def _delete_thing_shadow(self) -> str:
    answer = delete_shadow(
        self.iotdata_backend, self._get_param("thingName"), _shadow_name(self)
    )
    return json.dumps(answer)


def _list_named_shadows_for_thing(self) -> str:
    names = list_named_shadows(self.iotdata_backend, self._get_param("thingName"))
    return json.dumps({"results": names, "timestamp": int(time.time())})


def apply() -> None:
    from moto.iotdata.responses import IoTDataPlaneResponse

    patch(IoTDataPlaneResponse, "update_thing_shadow", _update_thing_shadow)
    patch(IoTDataPlaneResponse, "get_thing_shadow", _get_thing_shadow)
    patch(IoTDataPlaneResponse, "delete_thing_shadow", _delete_thing_shadow)
    patch(IoTDataPlaneResponse, "list_named_shadows_for_thing", _list_named_shadows_for_thing)
