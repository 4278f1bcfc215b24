"""MQTT over WebSockets: amqtt reader/writer adapters on the websockets sans-I/O protocol.

The gateway reads the HTTP upgrade request itself (to check the SigV4
signature before upgrading, and because the same TLS port also serves HTTPS
publish and ALPN MQTT), then drives ``websockets.server.ServerProtocol``
(the websockets library's sans-I/O WebSocket implementation: framing,
masking, fragmentation, ping/pong, close handshake) over the TLS stream.
Each MQTT packet amqtt writes goes out as one binary message; incoming
binary (or text) messages are concatenated into the byte stream amqtt reads.
"""

from __future__ import annotations

import asyncio

from amqtt.adapters import ReaderAdapter, WriterAdapter
from websockets.frames import OP_BINARY, OP_CONT, OP_TEXT, Frame
from websockets.protocol import CLOSED


def _flush(protocol, writer: asyncio.StreamWriter) -> bool:
    """Write what the protocol wants sent; False once it asked to close the stream."""
    alive = True
    for data in protocol.data_to_send():
        if data:
            writer.write(data)
        else:
            alive = False
    return alive


class WebSocketReader(ReaderAdapter):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol, conn) -> None:
        self._reader = reader
        self._writer = writer
        self._protocol = protocol
        self.conn = conn
        self._buffer = bytearray()
        self._eof = False

    async def _fill(self) -> None:
        try:
            data = await self._reader.read(65536)
        except (ConnectionError, OSError):
            data = b""
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        for event in self._protocol.events_received():
            if isinstance(event, Frame) and event.opcode in (OP_BINARY, OP_TEXT, OP_CONT):
                self._buffer.extend(event.data)
        if not _flush(self._protocol, self._writer) or not data or self._protocol.state is CLOSED:
            self._eof = True

    async def read(self, n: int = -1) -> bytes:
        if n < 0:
            while not self._buffer and not self._eof:
                await self._fill()
            n = len(self._buffer)
        while len(self._buffer) < n and not self._eof:
            await self._fill()
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def feed_eof(self) -> None:
        self._eof = True


class WebSocketWriter(WriterAdapter):
    def __init__(self, writer: asyncio.StreamWriter, protocol, conn) -> None:
        self._writer = writer
        self._protocol = protocol
        self.conn = conn
        self._pending = bytearray()

    def write(self, data: bytes) -> None:
        if not self.conn.killed:
            self._pending.extend(data)

    async def drain(self) -> None:
        if self.conn.killed or not self._pending:
            return
        data = bytes(self._pending)
        self._pending.clear()
        try:
            self._protocol.send_binary(data)
        except Exception:  # noqa: BLE001 - connection already closing
            return
        _flush(self._protocol, self._writer)
        try:
            await self._writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    def get_peer_info(self):
        peer = self._writer.get_extra_info("peername")
        return (peer[0], peer[1]) if peer else None

    def get_ssl_info(self):
        return self._writer.get_extra_info("ssl_object")

    async def close(self) -> None:
        try:
            self._protocol.send_close(1000)
            _flush(self._protocol, self._writer)
            await self._writer.drain()
        except Exception:  # noqa: BLE001
            pass
        self._writer.transport.abort()
