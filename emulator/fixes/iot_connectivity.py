"""Thing connectivity as fleet indexing sees it, fed by the device gateway.

AWS behaviour (developer guide, "Managing thing indexing" / "Fleet indexing",
"Lifecycle events"; API reference, "SearchIndex")
    With ``thingConnectivityIndexingMode`` STATUS, each thing's index
    document has ``connectivity``: ``connected`` (boolean), ``timestamp``
    (epoch milliseconds of the last connect or disconnect) and, once
    disconnected, ``disconnectReason``.  Connectivity is driven by the
    lifecycle events of the MQTT client whose client id equals the thing's
    name.  "If a device has never connected to IoT Core or was disconnected
    for more than 1 hour before fleet indexing's thingConnectivityIndexingMode
    was enabled, the connectivity object for this device in the response will
    have the connected field set to false with no additional session details"
    (boto3's SearchIndex documentation, from the API model).
    ``disconnectReason`` values used here (lifecycle events table):
    CLIENT_INITIATED_DISCONNECT (an MQTT DISCONNECT packet, or a WebSocket
    close frame), CONNECTION_LOST (the connection dropped without one),
    DUPLICATE_CLIENTID (another connection took the client id over),
    MQTT_KEEP_ALIVE_TIMEOUT (nothing within 1.5 x keep-alive), AUTH_ERROR
    (the certificate stopped being ACTIVE, or an action was not authorized
    and the connection was closed), CLIENT_ERROR (a protocol error of the
    client: QoS 2, a wildcard or reserved topic), SERVER_INITIATED_DISCONNECT
    (the server shutting down).

What moto 5.2.1 does instead
    No connectivity at all: its SearchIndex reports every thing as
    ``{"connected": true, "timestamp": <now, in seconds>}``.

This module is the store (no moto patch): one record per account, region and
client id, ``(connected, timestamp_ms, reason)``, written by the gateway
(``connected`` / ``disconnected``) from its event loop and read by SearchIndex
(``iot_search_index``) from request threads, under one lock.  ``version()``
moves on every write, so SearchIndex's cached matches of a query that looks at
``connectivity.*`` are rebuilt after a change and kept otherwise.
``/moto-api/reset`` clears it (IoTBackend.reset is wrapped).  Things are not
tied to records: a record follows the name, so a thing deleted and made again
keeps its predecessor's connectivity (AWS keys connectivity by thing; not
emulated further).
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import NamedTuple

CLIENT_INITIATED_DISCONNECT = "CLIENT_INITIATED_DISCONNECT"
CONNECTION_LOST = "CONNECTION_LOST"
DUPLICATE_CLIENTID = "DUPLICATE_CLIENTID"
MQTT_KEEP_ALIVE_TIMEOUT = "MQTT_KEEP_ALIVE_TIMEOUT"
AUTH_ERROR = "AUTH_ERROR"
CLIENT_ERROR = "CLIENT_ERROR"
SERVER_INITIATED_DISCONNECT = "SERVER_INITIATED_DISCONNECT"


class Record(NamedTuple):
    connected: bool
    timestamp: int  # epoch milliseconds
    reason: str | None


_lock = threading.Lock()
_records: dict[tuple[str, str], dict[str, Record]] = {}
_clock = itertools.count(1)
_version = [0]


def now_ms() -> int:
    return int(time.time() * 1000)


def version() -> int:
    return _version[0]


def connected(account: str, region: str, client_id: str, timestamp_ms: int | None = None) -> None:
    """An accepted CONNECT of ``client_id``."""
    if not client_id:
        return
    with _lock:
        _records.setdefault((account, region), {})[client_id] = Record(
            True, timestamp_ms if timestamp_ms is not None else now_ms(), None
        )
        _version[0] = next(_clock)


def disconnected(account: str, region: str, client_id: str, reason: str, timestamp_ms: int | None = None) -> None:
    """The connection of ``client_id`` ended, for ``reason`` (a lifecycle disconnectReason)."""
    if not client_id:
        return
    with _lock:
        _records.setdefault((account, region), {})[client_id] = Record(
            False, timestamp_ms if timestamp_ms is not None else now_ms(), reason
        )
        _version[0] = next(_clock)


def get(account: str, region: str, name: str) -> Record | None:
    with _lock:
        return _records.get((account, region), {}).get(name)


def snapshot(account: str, region: str) -> dict[str, Record]:
    """A copy of every record of the account/region (for building a query's matches)."""
    with _lock:
        return dict(_records.get((account, region), {}))


def document(record: Record | None) -> dict:
    """The ``connectivity`` object of a ThingDocument."""
    if record is None:
        return {"connected": False}
    out: dict = {"connected": record.connected, "timestamp": record.timestamp}
    if not record.connected and record.reason:
        out["disconnectReason"] = record.reason
    return out


def clear(account: str, region: str) -> None:
    with _lock:
        _records.pop((account, region), None)
        _version[0] = next(_clock)


def _make_reset(original):
    def reset(self, *args, **kwargs):
        clear(self.account_id, self.region_name)
        return original(self, *args, **kwargs)

    reset._emulator_connectivity_reset = True
    return reset


def apply() -> None:
    from moto.iot.models import IoTBackend

    if not getattr(IoTBackend.reset, "_emulator_connectivity_reset", False):
        IoTBackend.reset = _make_reset(IoTBackend.reset)
