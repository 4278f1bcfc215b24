"""The device gateway: the AWS IoT data endpoint (MQTT, HTTPS, WebSockets), emulated.

Started by emulator/server.py in the same process: an asyncio event loop in
its own thread, two listeners on 127.0.0.1 (free ports):

* ``mqtt`` (AWS: 8883): TLS, client certificate required, MQTT 3.1.1.
* ``tls443`` (AWS: 443): TLS, client certificate optional.  ALPN
  ``x-amzn-mqtt-ca`` -> MQTT (client certificate required); otherwise
  HTTP/1.1: ``POST /topics/<topic>?qos=N`` with a client certificate
  (HTTPS publish) and ``GET /mqtt`` WebSocket upgrade (subprotocol ``mqtt``)
  authenticated by a SigV4-presigned query string (sigv4.py) = MQTT over
  WebSockets.

The MQTT protocol itself is amqtt's broker (broker.py); TLS and the client
certificate checks are tls.py; authorization (certificate status, IoT
policies evaluated by ``emulator/iotpolicy``) is authz.py; the shadow topics
are shadow.py; fleet provisioning's MQTT API is provisioning.py; the Jobs device API
(and the jobs notifications) is jobs.py.  Every message, whichever way it arrives (MQTT, HTTPS
publish, iot-data Publish on the emulator's HTTP port), goes through
``Gateway.ingest``: the rules engine (datapath/rules.py), the shadow service
for shadow request topics, and the MQTT subscribers.

``GET /iotreg-test/gateway`` on the emulator's HTTP port reports
``Gateway.info()``.  See emulator/README.md, "Device gateway".

What happens is counted as AWS IoT's message broker metrics (broker.py's
``count``, into the emulator's CloudWatch): a certificate refused in the TLS
handshake is ``Connection.AuthNError``; HTTPS publish counts
``PublishIn.Success`` / ``AuthError`` / ``ClientError`` with Protocol ``HTTP``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import threading
import uuid
from functools import partial
from urllib.parse import parse_qs, unquote

from .authz import Authorizer, Principal, note
from .broker import (
    AUTH_ERROR,
    HTTP,
    MQTT,
    SERVER_INITIATED_DISCONNECT,
    Connection,
    GatewayBroker,
    GatewayStreamReader,
    GatewayStreamWriter,
    count,
    quiet_amqtt,
)
from . import jobs, provisioning, shadow, sigv4
from .tls import start_tls_server

DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
ALPN_MQTT = "x-amzn-mqtt-ca"
CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
SWEEP_INTERVAL = 0.5
MAX_HTTP_BODY = 128 * 1024

_running: "Gateway | None" = None


def current() -> "Gateway | None":
    """The gateway running in this process, if any."""
    return _running


class Gateway:
    def __init__(
        self,
        host: str = "127.0.0.1",
        account: str = DEFAULT_ACCOUNT,
        region: str = DEFAULT_REGION,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self.account = account
        self.region = region
        self.verbose = verbose
        self.authorizer = Authorizer(account, region)
        # Fleet provisioning's MQTT API ($aws/certificates/..., $aws/provisioning-templates/...).
        self.provisioning = provisioning.FleetProvisioning(self)
        # AWS IoT Jobs' device API ($aws/things/<thing>/jobs/...) and its notifications.
        self.jobs = jobs.JobsService(self)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.broker: GatewayBroker | None = None
        self.tls = None
        self.ports: dict[str, int] = {}
        self.connections: set[Connection] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._sweeper: asyncio.Task | None = None
        # Every task the gateway starts, until it ends (see _spawn).
        self._tasks: set[asyncio.Task] = set()
        self._unpatch = None

    # -- life cycle ------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> "Gateway":
        global _running
        quiet_amqtt(self.verbose)
        self._thread = threading.Thread(target=self._run, name="iot-gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("device gateway did not start")
        if self._error is not None:
            raise RuntimeError(f"device gateway failed to start: {self._error!r}") from self._error
        self._install_hooks()
        _running = self
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as error:  # noqa: BLE001 - reported by start()
            self._error = error
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
            loop.run_until_complete(asyncio.wait_for(self._shutdown(), 0.7))
        except BaseException:  # noqa: BLE001 - shutting down anyway
            pass
        finally:
            try:
                loop.close()
            except Exception:  # noqa: BLE001
                pass

    async def _start(self) -> None:
        from fixes.iot_endpoint import endpoint_prefix

        from .tls import TlsMaterial

        ats_host = f"{endpoint_prefix(self.account, self.region)}-ats.iot.{self.region}.amazonaws.com"
        self.tls = TlsMaterial(["localhost", ats_host], ["127.0.0.1"], self._active_certificate_ids)
        self.broker = GatewayBroker(
            self,
            {
                "listeners": {
                    "default": {"type": "external"},
                    "mqtt": {"type": "external"},
                    "alpn": {"type": "external"},
                    "wss": {"type": "external"},
                },
                "plugins": {},
            },
        )
        await self.broker.start()
        loop = asyncio.get_running_loop()
        for name in ("mqtt", "tls443"):
            server = await loop.create_server(partial(_Accepting, self, name), self.host, 0)
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.ensure_future(self._sweep())

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.killed = True
            conn.close_reason = conn.close_reason or SERVER_INITIATED_DISCONNECT
            conn.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.broker is not None:
            try:
                await asyncio.wait_for(self.broker.shutdown(), 0.5)
            except BaseException:  # noqa: BLE001
                pass

    def stop(self, timeout: float = 1.0) -> None:
        global _running
        if _running is self:
            _running = None
        self._remove_hooks()
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            try:
                self.loop.call_soon_threadsafe(self.loop.stop)
            except RuntimeError:
                pass
            self._thread.join(timeout)
        if self.tls is not None:
            self.tls.cleanup()

    def info(self) -> dict:
        tls443 = self.ports["tls443"]
        return {
            "endpoint": "localhost",
            "ca_file": self.tls.ca_file,
            "ports": {"mqtt": self.ports["mqtt"], "alpn": tls443, "https": tls443, "wss": tls443},
        }

    # -- hooks into the rest of the emulator -----------------------------------

    def _install_hooks(self) -> None:
        from fixes import iotdata_shadow
        from moto.iotdata.models import IoTDataPlaneBackend

        iotdata_shadow.add_listener(self._on_shadow_event)
        import jobs as jobs_engine

        jobs_engine.add_listener(self._on_jobs_notification)
        previous = IoTDataPlaneBackend.publish
        gateway = self

        def publish(backend, topic: str, payload) -> None:
            previous(backend, topic, payload)  # records it; the rules engine gets it there
            if backend.account_id == gateway.account and backend.region_name == gateway.region:
                gateway._from_http_publish(topic, payload)

        publish._iotreg_datapath = getattr(previous, "_iotreg_datapath", False)
        IoTDataPlaneBackend.publish = publish

        def unpatch() -> None:
            iotdata_shadow.remove_listener(self._on_shadow_event)
            jobs_engine.remove_listener(self._on_jobs_notification)
            if IoTDataPlaneBackend.publish is publish:
                IoTDataPlaneBackend.publish = previous

        self._unpatch = unpatch

    def _remove_hooks(self) -> None:
        if self._unpatch is not None:
            self._unpatch()
            self._unpatch = None

    def _active_certificate_ids(self) -> set[str]:
        backend = self.authorizer.iot_backend()
        for _ in range(5):
            try:
                return {cid for cid, cert in list(backend.certificates.items()) if cert.status == "ACTIVE"}
            except RuntimeError:  # changed while being copied: try again
                continue
        return set()

    def _iotdata_backend(self):
        from moto.iotdata.models import iotdata_backends

        return iotdata_backends[self.account][self.region]

    def _on_shadow_event(self, event: dict) -> None:
        """Called by the shadow store (any thread) after an update or delete."""
        if event.get("account") != self.account or event.get("region") != self.region:
            return
        messages = shadow.events_for(event)
        for topic, payload in messages:
            self._to_rules(topic, payload)
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._broadcast_many, messages)
            except RuntimeError:
                pass

    def _on_jobs_notification(self, account: str, region: str, topic: str, payload: bytes) -> None:
        """Called by the jobs engine (any thread, under its lock): notify / notify-next.

        Published like any message: to the rules engine and to every subscriber
        whose policy allows iot:Receive (nothing here may block)."""
        if account != self.account or region != self.region:
            return
        self._to_rules(topic, payload)
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._broadcast_many, [(topic, payload)])
            except RuntimeError:
                pass

    def _from_http_publish(self, topic: str, payload) -> None:
        """iot-data Publish (emulator HTTP port): to MQTT subscribers and the shadow service."""
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        loop = self.loop
        if loop is None or loop.is_closed():
            return

        def run() -> None:
            self._spawn(self.ingest(topic, data, 0, False, None, to_rules=False))

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:
            pass

    def _spawn(self, coro) -> asyncio.Task:
        """A task the gateway holds on to until it is done.

        The event loop keeps only weak references to tasks.  A connection's
        task waiting for data (the CONNECT after the TLS handshake, say) is
        reachable only through its own StreamReader (asyncio's protocol holds
        that weakly), so without this reference the cyclic garbage collector
        destroys it mid-connection and its ``finally`` aborts the socket: the
        client sees a reset right after sending CONNECT."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the data path ---------------------------------------------------------

    def _to_rules(self, topic: str, payload: bytes) -> None:
        from datapath import rules

        rules.enqueue(self.account, self.region, topic, payload)

    def _broadcast(self, topic: str, payload: bytes, session=None) -> None:
        # put_nowait keeps the order in which messages were ingested.
        self.broker._broadcast_queue.put_nowait({"session": session, "topic": topic, "data": payload})

    def _broadcast_many(self, messages) -> None:
        for topic, payload in messages:
            self._broadcast(topic, payload)

    async def ingest(self, topic: str, payload: bytes, qos: int, retain: bool, session, to_rules: bool = True) -> None:
        """One message into AWS IoT: rules engine, subscribers, shadow service."""
        if provisioning.parse_request_topic(topic) is not None:
            # A request to the fleet provisioning service: consumed by it, answered on the
            # publishing connection only (none for an iot-data Publish, which has no session).
            if session is not None:
                self._spawn(self.provisioning.handle(topic, payload, session))
            return
        if jobs.parse_request_topic(topic) is not None:
            # A request to the Jobs service: consumed by it; the answer goes to the requesting
            # connection only (an iot-data Publish has none: carried out, not answered).
            self._spawn(self.jobs.handle(topic, payload, session))
            return
        if to_rules:
            self._to_rules(topic, payload)
        self._broadcast(topic, payload, session)
        if retain:
            await self.broker.retain_message(session, topic, payload, qos)
        if shadow.parse_request_topic(topic) is not None:
            answers = shadow.handle_request(self._iotdata_backend(), topic, payload)
            for answer_topic, answer in answers:
                self._to_rules(answer_topic, answer)
                self._broadcast(answer_topic, answer)

    # -- connectivity (fleet indexing's connectivity.*, fixes/iot_connectivity.py) -------------

    def connectivity_connected(self, client_id: str) -> None:
        """An accepted CONNECT: the thing named ``client_id`` is connected, as of now."""
        from fixes import iot_connectivity

        iot_connectivity.connected(self.account, self.region, client_id)

    def connectivity_disconnected(self, client_id: str, reason: str) -> None:
        from fixes import iot_connectivity

        iot_connectivity.disconnected(self.account, self.region, client_id, reason)

    def authorize(self, conn: Connection, action: str, kind: str, name: str) -> tuple[bool, str]:
        peer = conn.peer
        return self.authorizer.check(
            conn.principal,
            action,
            self.authorizer.resource(kind, name),
            conn.client_id,
            peer[0] if isinstance(peer, tuple) and peer else None,
        )

    async def _sweep(self) -> None:
        """Close connections whose certificate stopped being ACTIVE (AWS disconnects them)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            for conn in list(self.connections):
                if conn.killed or conn.principal.kind != "certificate":
                    continue
                ok, reason = self.authorizer.certificate_status(conn.principal)
                if not ok:
                    conn.kill(reason, AUTH_ERROR)

    # -- connections -------------------------------------------------------------

    async def _accept(self, listener: str, transport: asyncio.Transport) -> None:
        """A new TCP connection (reading paused): TLS handshake, then MQTT or HTTP."""
        loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        reader = asyncio.StreamReader(limit=2**16)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            # The context is chosen now, not at accept time of the listening
            # socket, so its CRL reflects the registry as of this connection.
            if listener == "mqtt":
                context = self.tls.context(True)
            else:
                context = self.tls.context(False, (ALPN_MQTT, "http/1.1"))
            tls_transport = await start_tls_server(loop, transport, protocol, context, HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError) as error:
            reason = getattr(error, "verify_message", None) or getattr(error, "reason", None) or type(error).__name__
            note(f"TLS handshake on port {listener} from {peer} failed: {reason}")
            if refused_client_certificate(error):
                # AWS: Connection.AuthNError, "connection attempts that AWS IoT Core rejects
                # due to authentication failures" (the connection never gets to CONNECT).
                mqtt = listener == "mqtt" or getattr(error, "iotreg_alpn", None) == ALPN_MQTT
                count("Connection.AuthNError", MQTT if mqtt else HTTP)
            transport.abort()
            return
        protocol.connection_made(tls_transport)
        writer = asyncio.StreamWriter(tls_transport, protocol, reader, loop)
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        principal = self.authorizer.principal_for_certificate(der) if der else None
        try:
            if listener == "mqtt":
                await self._serve_mqtt("mqtt", reader, writer, principal)
            elif ssl_object.selected_alpn_protocol() == ALPN_MQTT:
                if principal is None:
                    note(f"ALPN {ALPN_MQTT} connection from {peer} without a client certificate: closed")
                    writer.transport.abort()
                    return
                await self._serve_mqtt("alpn", reader, writer, principal)
            else:
                await self._serve_http(reader, writer, principal, peer)
        except Exception as error:  # noqa: BLE001 - one connection must not take the gateway down
            if self.verbose:
                note(f"connection from {peer} ended with {error!r}")
        finally:
            writer.transport.abort()

    async def _serve_mqtt(self, listener: str, reader, writer, principal: Principal) -> None:
        conn = Connection(principal, writer.transport, listener, writer.get_extra_info("peername"))
        await self._run_mqtt(conn, GatewayStreamReader(reader, conn), GatewayStreamWriter(writer, conn))

    async def _run_mqtt(self, conn: Connection, reader_adapter, writer_adapter) -> None:
        ok, reason = self.authorizer.certificate_status(conn.principal)
        if not ok:
            # Deactivated between the handshake and now: refused like a CONNECT not authorized.
            count("Connect.AuthError", conn.protocol)
            conn.kill(reason)
            return
        self.connections.add(conn)
        watchdog = self.loop.call_later(
            CONNECT_TIMEOUT,
            lambda: conn.client_id is None and conn.kill(f"no CONNECT within {CONNECT_TIMEOUT:.0f} s"),
        )
        try:
            await self.broker.external_connected(reader_adapter, writer_adapter, conn.listener)
        finally:
            watchdog.cancel()
            conn.done.set()
            self.connections.discard(conn)
            if conn.client_id and self.broker.live.get(conn.client_id) is conn:
                del self.broker.live[conn.client_id]
                # Only the connection that holds the client id speaks for its thing: one taken
                # over has been replaced by a connected one already.
                self.connectivity_disconnected(conn.client_id, conn.disconnect_reason())
            conn.transport.abort()

    # -- HTTP on the tls443 port -------------------------------------------------

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, principal, peer) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            lines = head.decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                await self._http_answer(writer, 400, {"message": "Bad Request"}, close=True)
                return
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            path, _, query = target.partition("?")
            close = version.upper() != "HTTP/1.1" or headers.get("connection", "").lower() == "close"

            if method.upper() == "GET" and path == "/mqtt" and headers.get("upgrade", "").lower() == "websocket":
                await self._serve_websocket(reader, writer, head, path, query, headers, peer)
                return

            if "transfer-encoding" in headers:
                await self._http_answer(writer, 411, {"message": "Length Required"}, close=True)
                return
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_HTTP_BODY:
                await self._http_answer(writer, 413, {"message": "Request entity too large"}, close=True)
                return
            try:
                body = await reader.readexactly(length) if length else b""
            except (asyncio.IncompleteReadError, ConnectionError):
                return

            if method.upper() == "POST" and path.startswith("/topics/"):
                status, answer = await self._https_publish(principal, unquote(path[len("/topics/"):]), query, body, peer)
            else:
                status, answer = 404, {"message": "Not Found"}
            await self._http_answer(writer, status, answer, close=close)
            if close:
                return

    async def _https_publish(self, principal, topic: str, query: str, body: bytes, peer) -> tuple[int, dict]:
        if principal is None:
            count("PublishIn.AuthError", HTTP)
            note(f"HTTPS publish to {topic!r} from {peer} without a client certificate: 403")
            return 403, {"message": "Forbidden"}
        qos_values = parse_qs(query).get("qos", ["0"])
        if qos_values[0] not in ("0", "1"):
            count("PublishIn.ClientError", HTTP)
            return 400, {"message": "Invalid QoS value. Valid values are 0 and 1."}
        if not topic or "#" in topic or "+" in topic:
            count("PublishIn.ClientError", HTTP)
            return 400, {"message": "Invalid topic name"}
        conn = Connection(principal, None, "https", peer)
        allowed, reason = self.authorize(conn, "iot:Publish", "topic", topic)
        if not allowed or (topic.startswith("$") and shadow.parse_request_topic(topic) is None):
            count("PublishIn.AuthError", HTTP)
            note(f"HTTPS publish to {topic!r} ({principal.label}) refused, 403: {reason if not allowed else 'reserved topic'}")
            return 403, {"message": "Forbidden"}
        count("PublishIn.Success", HTTP)
        await self.ingest(topic, body, int(qos_values[0]), False, None)
        return 200, {"message": "OK"}

    async def _http_answer(self, writer: asyncio.StreamWriter, status: int, body: dict, close: bool) -> None:
        reasons = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
                   411: "Length Required", 413: "Payload Too Large"}
        body = dict(body, traceId=str(uuid.uuid4()))
        data = json.dumps(body).encode()
        head = (
            f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n"
            f"x-amzn-RequestId: {body['traceId']}\r\n"
            f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%a, %d %b %Y %H:%M:%S GMT')}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        writer.write(head.encode() + data)
        try:
            await writer.drain()
        except ConnectionError:
            pass

    async def _serve_websocket(self, reader, writer, head: bytes, path: str, query: str, headers, peer) -> None:
        from websockets.server import ServerProtocol
        from websockets.typing import Subprotocol

        from .websocket import WebSocketReader, WebSocketWriter

        ok, reason = sigv4.verify_presigned("GET", path, query, headers)
        if not ok:
            note(f"WebSocket upgrade from {peer} refused, 403: {reason}")
            await self._http_answer(writer, 403, {"message": "Forbidden"}, close=True)
            return
        protocol = ServerProtocol(subprotocols=[Subprotocol("mqtt")], max_size=None)
        protocol.receive_data(head)
        events = protocol.events_received()
        if not events:
            await self._http_answer(writer, 400, {"message": "Bad Request"}, close=True)
            return
        response = protocol.accept(events[0])
        if response.status_code == 101 and "Sec-WebSocket-Protocol" not in response.headers:
            response = protocol.reject(400, "the WebSocket subprotocol must be mqtt\n")
        protocol.send_response(response)
        for data in protocol.data_to_send():
            if data:
                writer.write(data)
        await writer.drain()
        if response.status_code != 101:
            return
        conn = Connection(Principal("iam"), writer.transport, "wss", peer)
        await self._run_mqtt(conn, WebSocketReader(reader, writer, protocol, conn), WebSocketWriter(writer, protocol, conn))


def refused_client_certificate(error: BaseException) -> bool:
    """Whether a failed handshake refused the client's certificate (or its lack of one)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return True  # another CA's, or revoked by the CRL (not registered, not ACTIVE)
    reason = getattr(error, "reason", None) if isinstance(error, ssl.SSLError) else None
    return reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_REQUIRED")


class _Accepting(asyncio.Protocol):
    """Holds a just-accepted TCP connection, not reading, until TLS starts.

    Reading is paused at once so the client's ClientHello stays in the
    socket for the TLS layer that ``Gateway._accept`` puts in place."""

    def __init__(self, gateway: Gateway, listener: str) -> None:
        self.gateway = gateway
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()
        self.gateway._spawn(self.gateway._accept(self.listener, transport))

    def data_received(self, data: bytes) -> None:  # not reached: reading is paused
        pass


def start(host: str = "127.0.0.1", verbose: bool = False) -> Gateway:
    return Gateway(host=host, verbose=verbose).start()


__all__ = ["Gateway", "current", "start"]
