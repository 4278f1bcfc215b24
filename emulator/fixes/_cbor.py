"""Minimal CBOR (RFC 8949) codec for the rpc-v2-cbor bridge (cloudwatch_cbor.py).

Only what Smithy RPC v2 CBOR uses: integers, byte and text strings (definite
and indefinite length), arrays, maps, tag 1 (epoch-seconds timestamps),
half/single/double floats, true/false/null/undefined. Other tags decode to
their content. The standard library has no CBOR module and the emulator adds
no dependencies, hence this file.
"""

from __future__ import annotations

import struct
from typing import Any


class CBORError(ValueError):
    """The bytes are not well-formed CBOR (or use something unsupported)."""


class Timestamp(float):
    """A decoded tag-1 value (epoch seconds), so callers can tell it from a number."""


class Float32(float):
    """Encode as a single-precision float (Smithy ``float``), not a double."""


BREAK = object()


def decode(data: bytes) -> Any:
    """The single data item in ``data`` (trailing bytes are an error)."""
    value, end = _item(data, 0)
    if value is BREAK:
        raise CBORError("unexpected break")
    if end != len(data):
        raise CBORError(f"{len(data) - end} trailing bytes after the data item")
    return value


def _argument(data: bytes, pos: int, info: int) -> tuple[int | None, int]:
    if info < 24:
        return info, pos
    sizes = {24: 1, 25: 2, 26: 4, 27: 8}
    if info in sizes:
        size = sizes[info]
        if pos + size > len(data):
            raise CBORError("truncated data")
        return int.from_bytes(data[pos : pos + size], "big"), pos + size
    if info == 31:
        return None, pos  # indefinite length
    raise CBORError(f"reserved additional information {info}")


def _item(data: bytes, pos: int) -> tuple[Any, int]:
    if pos >= len(data):
        raise CBORError("truncated data")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if major == 7:
        if info == 20:
            return False, pos
        if info == 21:
            return True, pos
        if info in (22, 23):
            return None, pos
        if info == 31:
            return BREAK, pos
        formats = {25: (">e", 2), 26: (">f", 4), 27: (">d", 8)}
        if info in formats:
            fmt, size = formats[info]
            if pos + size > len(data):
                raise CBORError("truncated float")
            return struct.unpack(fmt, data[pos : pos + size])[0], pos + size
        if info < 24:
            return None, pos  # unassigned simple value
        if info == 24:
            return None, pos + 1
        raise CBORError(f"unsupported simple value {info}")
    arg, pos = _argument(data, pos, info)
    if major == 0:
        if arg is None:
            raise CBORError("indefinite-length integer")
        return arg, pos
    if major == 1:
        if arg is None:
            raise CBORError("indefinite-length integer")
        return -1 - arg, pos
    if major in (2, 3):
        if arg is None:
            chunks = []
            while True:
                if pos >= len(data):
                    raise CBORError("truncated string")
                if data[pos] == 0xFF:
                    pos += 1
                    break
                chunk, pos = _item(data, pos)
                if not isinstance(chunk, (bytes, str)):
                    raise CBORError("bad chunk in an indefinite-length string")
                chunks.append(chunk)
            if major == 2:
                return b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks), pos
            return "".join(c if isinstance(c, str) else c.decode() for c in chunks), pos
        if pos + arg > len(data):
            raise CBORError("truncated string")
        raw = data[pos : pos + arg]
        pos += arg
        if major == 2:
            return bytes(raw), pos
        try:
            return raw.decode("utf-8"), pos
        except UnicodeDecodeError as error:
            raise CBORError(f"invalid UTF-8 in a text string: {error}") from None
    if major == 4:
        items = []
        while arg is None or len(items) < arg:
            item, pos = _item(data, pos)
            if item is BREAK:
                if arg is None:
                    break
                raise CBORError("unexpected break")
            items.append(item)
        return items, pos
    if major == 5:
        result: dict = {}
        count = 0
        while arg is None or count < arg:
            key, pos = _item(data, pos)
            if key is BREAK:
                if arg is None:
                    break
                raise CBORError("unexpected break")
            value, pos = _item(data, pos)
            if value is BREAK:
                raise CBORError("map key without a value")
            if isinstance(key, (list, dict)):
                raise CBORError("unhashable map key")
            result[key] = value
            count += 1
        return result, pos
    # major == 6: a tag
    if arg is None:
        raise CBORError("indefinite-length tag")
    value, pos = _item(data, pos)
    if arg == 1 and isinstance(value, (int, float)) and not isinstance(value, bool):
        return Timestamp(value), pos
    return value, pos


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | info]) + value.to_bytes(size, "big")
    raise CBORError(f"integer too large for CBOR: {value}")


def encode(value: Any) -> bytes:
    """Encode (definite lengths; Timestamp as tag 1 + double; other floats as doubles)."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(value: Any, out: bytearray) -> None:
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, Timestamp):
        out.append(0xC1)  # tag 1
        out += b"\xfb" + struct.pack(">d", float(value))
    elif isinstance(value, Float32):
        out += b"\xfa" + struct.pack(">f", float(value))
    elif isinstance(value, float):
        out += b"\xfb" + struct.pack(">d", value)
    elif isinstance(value, int):
        out += _head(0, value) if value >= 0 else _head(1, -1 - value)
    elif isinstance(value, (bytes, bytearray)):
        out += _head(2, len(value)) + bytes(value)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out += _head(3, len(raw)) + raw
    elif isinstance(value, (list, tuple)):
        out += _head(4, len(value))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        out += _head(5, len(value))
        for key, item in value.items():
            _encode(key, out)
            _encode(item, out)
    else:
        raise CBORError(f"cannot encode {type(value).__name__}")
