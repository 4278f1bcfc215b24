"""Device Shadow over MQTT: the reserved ``$aws/things/<thing>/shadow/...`` topics.

Requests (published by a client, or by iot-data / HTTPS Publish to the same
topics) are served from the same store as the iot-data HTTP API
(``fixes/iotdata_shadow.py``); ``<prefix>`` is ``$aws/things/<thing>/shadow``
(classic shadow) or ``$aws/things/<thing>/shadow/name/<shadow>`` (named):

* ``<prefix>/update`` (request state document) -> ``/update/accepted``;
  ``/update/delta`` when the update had a ``desired`` section and desired
  still differs from reported (only the differing desired fields, with their
  desired metadata); ``/update/documents`` ({"previous", "current",
  "timestamp", "clientToken"}; "previous" absent when there was no shadow).
  Invalid JSON / state, or a version conflict -> ``/update/rejected`` with
  ``{"code": 400|409, "message", "timestamp", "clientToken"?}``.
* ``<prefix>/get`` -> ``/get/accepted`` (the shadow, as GetThingShadow) or
  ``/get/rejected`` (404 "No shadow exists with name: ...").
* ``<prefix>/delete`` -> ``/delete/accepted`` ({"version", "timestamp"}) or
  ``/delete/rejected`` (404).

The accepted / delta / documents messages come from the store's listener,
so an UpdateThingShadow or DeleteThingShadow over HTTP publishes them too;
rejected and get answers go only to MQTT requests (AWS: "If the client
updates the document using the REST API ... no MQTT error messages are
emitted").  Every message the shadow service publishes is also routed
through the rules engine, like any other message.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

_REQUEST = re.compile(
    r"^\$aws/things/(?P<thing>[^/#+]+)/shadow(?:/name/(?P<shadow>[^/#+]+))?/(?P<op>update|get|delete)$"
)


def parse_request_topic(topic: str) -> tuple[str, str | None, str] | None:
    match = _REQUEST.match(topic)
    if not match:
        return None
    return match["thing"], match["shadow"], match["op"]


def prefix(thing: str, shadow: str | None) -> str:
    if shadow is None:
        return f"$aws/things/{thing}/shadow"
    return f"$aws/things/{thing}/shadow/name/{shadow}"


def _client_token(payload: bytes) -> Any:
    try:
        document = json.loads(payload or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(document, dict):
        return document.get("clientToken")
    return None


def _error(error: Exception) -> tuple[int, str]:
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or str(error)
    if not isinstance(code, int):
        code = 500
    return code, message


def handle_request(backend, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
    """Serve one shadow request; the (topic, payload) answers only MQTT gets.

    Accepted updates and deletes are published by the store's listener
    (``events_for``) instead, whatever API made them.
    """
    from fixes import iotdata_shadow

    parsed = parse_request_topic(topic)
    if parsed is None:
        return []
    thing, shadow, op = parsed
    base = prefix(thing, shadow)
    token = _client_token(payload)
    try:
        if op == "update":
            iotdata_shadow.update_shadow(backend, thing, shadow, payload)
            return []
        if op == "delete":
            iotdata_shadow.delete_shadow(backend, thing, shadow, token if isinstance(token, str) else None)
            return []
        answer = iotdata_shadow.get_shadow(backend, thing, shadow)
        if token is not None:
            answer["clientToken"] = token
        return [(f"{base}/get/accepted", json.dumps(answer).encode())]
    except Exception as error:  # noqa: BLE001 - moto's JsonRESTError subclasses
        code, message = _error(error)
        document: dict = {"code": code, "message": message, "timestamp": int(time.time())}
        if token is not None:
            document["clientToken"] = token
        return [(f"{base}/{op}/rejected", json.dumps(document).encode())]


def events_for(event: dict) -> list[tuple[str, bytes]]:
    """The messages AWS publishes for one store event (see iotdata_shadow)."""
    base = prefix(event["thing"], event["shadow"])
    if event["op"] == "delete":
        return [(f"{base}/delete/accepted", json.dumps(event["accepted"]).encode())]
    out = [(f"{base}/update/accepted", json.dumps(event["accepted"]).encode())]
    if event.get("delta") is not None:
        out.append((f"{base}/update/delta", json.dumps(event["delta"]).encode()))
    out.append((f"{base}/update/documents", json.dumps(event["documents"]).encode()))
    return out
