"""Opaque page tokens and keyset paging over a sorted snapshot (see _registry_version).

A token names the last key of the page it ends (base64 of JSON ``{"op", "after"}``),
not an offset: the next page starts right after that key in the current
snapshot, so things created or deleted between two pages never make a page
repeat or skip an entry that existed throughout (AWS documents only that the
token is opaque).  A token of another operation, or one that is not ours, is
InvalidRequestException (HTTP 400), as AWS answers a malformed token.
"""

from __future__ import annotations

import base64
import bisect
import datetime
import json
from typing import Any


def invalid(message: str):
    from moto.iot.exceptions import InvalidRequestException

    return InvalidRequestException(message)


def page_size(raw: Any, default: int, maximum: int, name: str) -> int:
    """The requested page size, or ``default``; outside 1..maximum -> InvalidRequestException."""
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except (TypeError, ValueError):
        raise invalid(f"{name} must be an integer between 1 and {maximum}.")
    if not 1 <= size <= maximum:
        raise invalid(f"{name} must be between 1 and {maximum}.")
    return size


def encode(op: str, after: Any) -> str:
    raw = json.dumps({"op": op, "after": after}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def decode(op: str, token: str | None, kind: str = "token") -> Any:
    """The key the token's page ended with, or None for no token."""
    if token is None or token == "":
        return None
    try:
        data = json.loads(base64.b64decode(token.encode(), validate=True).decode())
        if not isinstance(data, dict) or data.get("op") != op or "after" not in data:
            raise ValueError(token)
        after = data["after"]
        return tuple(after) if isinstance(after, list) else after
    except (ValueError, UnicodeDecodeError, TypeError):
        raise invalid(f"The {kind} is not valid.")


def answer(body: dict) -> str:
    """The JSON body of a list answer, keys whose value is None left out (``nextToken`` on
    the last page).  Written by hand rather than through moto's model-driven serializer,
    which costs about 40 ms for a page of 100 thing documents; the values are plain JSON
    already (timestamps converted by the caller)."""
    return json.dumps({k: v for k, v in body.items() if v is not None}, separators=(",", ":"))


def epoch_seconds(moment) -> float:
    """A moto datetime (naive = UTC, as moto's utcnow makes them) as epoch seconds, truncated
    to milliseconds as moto's serializer (and the Smithy spec) does it."""
    import calendar

    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc)
    return calendar.timegm(moment.timetuple()) + (moment.microsecond // 1000) / 1000.0


def page(keys: list, after: Any, size: int) -> tuple[list, Any]:
    """(the page's keys, the key to continue after or None when this is the last page)."""
    start = 0 if after is None else bisect.bisect_right(keys, after)
    chunk = keys[start : start + size]
    more = start + size < len(keys)
    return chunk, (chunk[-1] if more and chunk else None)
