"""The MQTT 3.1.1 broker: amqtt's Broker with AWS IoT's authorization rules.

amqtt (pinned in emulator/requirements.txt) does the MQTT protocol: packet
codec, sessions, keep-alive, QoS 0/1 flows, retained messages, subscriptions
and topic matching.  The gateway accepts the TLS (or WebSocket) connections
itself and hands each one to ``Broker.external_connected`` with adapters
that carry the connection's principal (``Connection``).  This subclass
changes what AWS IoT does differently from a plain broker:

* CONNECT: the certificate must still be registered and ACTIVE and
  ``iot:Connect`` on ``client/<clientId>`` allowed; otherwise CONNACK return
  code 5 (not authorized) and the connection is closed, before any session
  state is touched.  A client id already connected is taken over: the older
  connection is closed (AWS drops it too).
* PUBLISH (checked when the packet arrives, before any PUBACK):
  ``iot:Publish`` on ``topic/<topic>``; denied, QoS 2 (AWS IoT has no QoS 2),
  a wildcard in the topic, or a ``$`` topic other than the shadow, fleet
  provisioning and Jobs request topics -> the connection is closed, no PUBACK.
* SUBSCRIBE: ``iot:Subscribe`` on ``topicfilter/<filter>`` for every filter;
  one denied -> the connection is closed, no SUBACK.  Granted QoS is at most 1.
* delivery: ``iot:Receive`` on ``topic/<topic>`` per message and subscriber
  (retained messages included); denied -> not delivered to that subscriber.
* keep-alive: no packet within 1.5 x the interval -> closed (amqtt's broker
  ignores the timeout).
* the will message needs ``iot:Publish`` too and also reaches the rules engine.
* a message a client publishes goes to ``Gateway.ingest`` (shadow service,
  MQTT subscribers, rules engine) instead of straight to subscribers.
* subscriptions are indexed (``Subscriptions``): a message is matched against the filters
  that can match its topic, found level by level, not against every filter of every
  session (amqtt scans them all for each message; with 1,000 devices of 10 filters each
  that made shadow answers wait more than a minute in the one broadcast queue).  Who
  receives what does not change.
* each outcome is counted as AWS IoT's message broker metric (emulator/metrics.py,
  namespace AWS/IoT, dimension ``Protocol`` = ``MQTT``): Connect.Success /
  AuthError / ClientError, PublishIn.Success / AuthError / ClientError,
  Subscribe.Success / AuthError.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import format_client_message, gen_client_id

import metrics

from .authz import Principal, note

if TYPE_CHECKING:
    from . import Gateway

CONN_KEY = "iotreg.connection"

# Lifecycle events' disconnectReason values (developer guide, "Lifecycle events"),
# as fleet indexing reports them in connectivity.disconnectReason.
AUTH_ERROR = "AUTH_ERROR"
CLIENT_ERROR = "CLIENT_ERROR"
CLIENT_INITIATED_DISCONNECT = "CLIENT_INITIATED_DISCONNECT"
CONNECTION_LOST = "CONNECTION_LOST"
DUPLICATE_CLIENTID = "DUPLICATE_CLIENTID"
MQTT_KEEP_ALIVE_TIMEOUT = "MQTT_KEEP_ALIVE_TIMEOUT"
SERVER_INITIATED_DISCONNECT = "SERVER_INITIATED_DISCONNECT"
SHADOW_REQUEST_SUFFIXES = ("/update", "/get", "/delete")

# The Protocol dimension of AWS IoT's message broker metrics: "Valid values are: MQTT or
# HTTP" (developer guide, "AWS IoT metrics and dimensions"). MQTT over WebSockets is MQTT.
MQTT = "MQTT"
HTTP = "HTTP"


def count(metric: str, protocol: str) -> None:
    """One message broker metric (Connect.Success, PublishIn.AuthError, ...) of AWS/IoT."""
    metrics.record(metric, dimensions={"Protocol": protocol})


def matches(topic: str, topic_filter: str) -> bool:
    """amqtt 0.12.1's ``Broker._matches``: whether ``topic`` matches ``topic_filter``.

    A filter starting with a wildcard does not match a ``$`` topic [MQTT-4.7.2-1]; ``+`` is one
    level; ``#`` (last) is any number of levels, none included (``a/#`` matches ``a``)."""
    if topic.startswith("$") and topic_filter.startswith(("+", "#")):
        return False
    if "#" not in topic_filter and "+" not in topic_filter:
        return topic_filter == topic
    sub_levels = topic_filter.split("/")
    pub_levels = topic.split("/")
    for i, level in enumerate(sub_levels):
        if ("+" in level and level != "+") or ("#" in level and level != "#"):
            return False
        if level == "#":
            return i == len(sub_levels) - 1
        if i >= len(pub_levels) or level not in ("+", pub_levels[i]):
            return False
    return len(sub_levels) == len(pub_levels)


class _Node:
    __slots__ = ("children", "filter")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.filter: str | None = None


class Subscriptions(dict):
    """amqtt's ``Broker._subscriptions`` (topic filter -> ``[(session, qos)]``), indexed.

    amqtt keeps this dict and edits it itself (``add_subscription``, ``_del_subscription``,
    ``_del_all_subscriptions``, ``start``); this subclass keeps, beside it, its filters in a
    tree of topic levels (``+`` and ``#`` as levels of their own) and, per client id, the
    filters it is subscribed to.  ``filters_matching(topic)`` walks the tree along the topic's
    levels: the cost depends on the topic's depth and the wildcards on its path, not on how
    many filters there are.  It returns what testing every filter with ``matches`` would."""

    def __init__(self) -> None:
        super().__init__()
        self._root = _Node()
        self._odd: set[str] = set()  # a wildcard inside a level, '#' not last: tested one by one
        self._by_client: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        # amqtt logs repr(self._subscriptions) at debug level after every SUBSCRIBE, built
        # whether or not debug is on: every filter and session, O(all subscriptions) each time.
        return f"<Subscriptions: {len(self)} filters>"

    # -- the dict, with the tree kept in step -----------------------------------------------
    def __setitem__(self, key: str, value) -> None:
        if key not in self:
            self._index(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._unindex(key)

    def pop(self, key, *default):
        if key in self:
            value = super().pop(key)
            self._unindex(key)
            return value
        return super().pop(key, *default)

    def popitem(self):
        key, value = super().popitem()
        self._unindex(key)
        return key, value

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args, **kwargs) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def clear(self) -> None:
        super().clear()
        self._root = _Node()
        self._odd.clear()
        self._by_client.clear()

    def _index(self, key: str) -> None:
        levels = key.split("/")
        if any(
            ("+" in level and level != "+") or ("#" in level and (level != "#" or i != len(levels) - 1))
            for i, level in enumerate(levels)
        ):
            self._odd.add(key)
            return
        node = self._root
        for level in levels:
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        node.filter = key

    def _unindex(self, key: str) -> None:
        if key in self._odd:
            self._odd.discard(key)
            return
        path = []
        node = self._root
        for level in key.split("/"):
            child = node.children.get(level)
            if child is None:
                return
            path.append((node, level))
            node = child
        node.filter = None
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.filter is not None or child.children:
                break
            del parent.children[level]

    # -- lookups ---------------------------------------------------------------------------
    def filters_matching(self, topic: str) -> list[str]:
        """Every filter (a key of this dict) that ``topic`` matches."""
        levels = topic.split("/")
        n = len(levels)
        dollar = topic.startswith("$")
        out: list[str] = []
        stack = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            children = node.children
            if not (dollar and i == 0):  # [MQTT-4.7.2-1]
                rest = children.get("#")
                if rest is not None and rest.filter is not None:
                    out.append(rest.filter)
            if i == n:
                if node.filter is not None:
                    out.append(node.filter)
                continue
            if not (dollar and i == 0):
                plus = children.get("+")
                if plus is not None:
                    stack.append((plus, i + 1))
            child = children.get(levels[i])
            if child is not None:
                stack.append((child, i + 1))
        if "+" in topic or "#" in topic:
            out = list(dict.fromkeys(out))  # a level '+' or '#' in the topic itself: found twice
        out.extend(f for f in self._odd if matches(topic, f))
        return out

    def matching(self, topic: str) -> list[tuple[str, list]]:
        """(filter, its subscriptions) for every filter ``topic`` matches."""
        return [(f, self[f]) for f in self.filters_matching(topic) if f in self]

    # -- per client ------------------------------------------------------------------------
    def subscribed(self, client_id: str, topic_filter: str) -> None:
        self._by_client.setdefault(client_id, set()).add(topic_filter)

    def unsubscribed(self, client_id: str, topic_filter: str) -> None:
        filters = self._by_client.get(client_id)
        if filters is not None:
            filters.discard(topic_filter)
            if not filters:
                del self._by_client[client_id]

    def filters_of(self, client_id: str) -> list[str]:
        """The filters ``client_id`` subscribed to (and has not left)."""
        return [f for f in self._by_client.get(client_id, ()) if f in self]


class Connection:
    """One client connection and what the gateway knows about it."""

    def __init__(self, principal: Principal, transport: asyncio.BaseTransport, listener: str, peer) -> None:
        self.principal = principal
        self.transport = transport
        self.listener = listener
        self.peer = peer
        self.client_id: str | None = None
        self.killed = False
        self.done = asyncio.Event()
        # Why the connection ended, as a lifecycle event's disconnectReason (fleet indexing's
        # connectivity.disconnectReason): set by kill(), or by a DISCONNECT packet.
        self.close_reason: str | None = None
        self.client_disconnected = False

    @property
    def protocol(self) -> str:
        """The Protocol dimension of this connection's metrics."""
        return HTTP if self.listener == "https" else MQTT

    def kill(self, why: str, reason: str = SERVER_INITIATED_DISCONNECT) -> None:
        """Close the connection at once (AWS: the server closes the TCP connection).

        ``reason``: the lifecycle disconnectReason AWS gives for it (the first one counts)."""
        if not self.killed:
            self.killed = True
            self.close_reason = reason
            who = self.client_id if self.client_id is not None else f"{self.peer}"
            note(f"closing connection of client {who!r} ({self.principal.label}): {why}")
        try:
            self.transport.abort()
        except Exception:  # noqa: BLE001
            pass


    def disconnect_reason(self) -> str:
        """The disconnectReason of a connection that has ended (developer guide, "Lifecycle events")."""
        if self.close_reason is not None:
            return self.close_reason
        if self.client_disconnected:
            return CLIENT_INITIATED_DISCONNECT
        return CONNECTION_LOST


class GatewayStreamReader(StreamReaderAdapter):
    def __init__(self, reader: asyncio.StreamReader, conn: Connection) -> None:
        super().__init__(reader)
        self.conn = conn


class GatewayStreamWriter(StreamWriterAdapter):
    def __init__(self, writer: asyncio.StreamWriter, conn: Connection) -> None:
        super().__init__(writer)
        self.conn = conn

    def write(self, data: bytes) -> None:
        if not self.conn.killed:
            super().write(data)

    async def drain(self) -> None:
        if self.conn.killed:
            return
        try:
            await super().drain()
        except (ConnectionError, RuntimeError):
            pass

    async def close(self) -> None:
        try:
            await super().close()
        except (ConnectionError, OSError, RuntimeError):
            pass


def is_shadow_request(topic: str) -> bool:
    from .shadow import parse_request_topic

    return parse_request_topic(topic) is not None


def is_served_request(topic: str) -> bool:
    """A reserved topic a client may publish to: the shadow, fleet provisioning or Jobs requests."""
    from . import jobs
    from .provisioning import parse_request_topic

    return (
        is_shadow_request(topic)
        or parse_request_topic(topic) is not None
        or jobs.parse_request_topic(topic) is not None
    )


class GatewayHandler(BrokerProtocolHandler):
    """Checks PUBLISH and SUBSCRIBE when the packet arrives (before PUBACK / SUBACK)."""

    gateway: "Gateway"

    def _conn(self) -> Connection | None:
        if self.session is None:
            return None
        return self.session.attributes.get(CONN_KEY)

    async def handle_publish(self, publish_packet) -> None:
        conn = self._conn()
        if conn is None or conn.killed:
            return
        topic = publish_packet.topic_name or ""
        # Synchronous checks: no await before the message is queued, so the
        # client's messages keep their order.
        if publish_packet.qos == 2:
            count("PublishIn.ClientError", conn.protocol)
            conn.kill(f"PUBLISH with QoS 2 on {topic!r} (AWS IoT supports QoS 0 and 1 only)", CLIENT_ERROR)
            return
        if not topic or "#" in topic or "+" in topic:
            count("PublishIn.ClientError", conn.protocol)
            conn.kill(f"PUBLISH to invalid topic {topic!r}", CLIENT_ERROR)
            return
        if topic.startswith("$") and not is_served_request(topic):
            # The emulator's limit, not the client's error: no metric (AWS serves more topics).
            conn.kill(f"PUBLISH to reserved topic {topic!r} is not supported", CLIENT_ERROR)
            return
        allowed, reason = self.gateway.authorize(conn, "iot:Publish", "topic", topic)
        if not allowed:
            count("PublishIn.AuthError", conn.protocol)
            conn.kill(f"iot:Publish on topic {topic!r} denied: {reason}", AUTH_ERROR)
            return
        count("PublishIn.Success", conn.protocol)
        await super().handle_publish(publish_packet)

    async def handle_disconnect(self, disconnect) -> None:
        # A DISCONNECT packet (None: the connection closed without one).
        conn = self._conn()
        if conn is not None and disconnect is not None:
            conn.client_disconnected = True
        await super().handle_disconnect(disconnect)

    def handle_read_timeout(self) -> None:
        # amqtt's broker handler ignores it; AWS closes the connection after
        # 1.5 x the keep-alive interval without a packet.
        conn = self._conn()
        if conn is not None:
            conn.kill("keep-alive timeout (no packet within 1.5 x the keep-alive interval)", MQTT_KEEP_ALIVE_TIMEOUT)

    async def handle_subscribe(self, subscribe) -> None:
        conn = self._conn()
        if conn is None or conn.killed:
            return
        topics = subscribe.payload.topics if subscribe.payload is not None else []
        for topic_filter, _qos in topics:
            allowed, reason = self.gateway.authorize(conn, "iot:Subscribe", "topicfilter", topic_filter)
            if not allowed:
                count("Subscribe.AuthError", conn.protocol)
                conn.kill(f"iot:Subscribe on topic filter {topic_filter!r} denied: {reason}", AUTH_ERROR)
                return
        # One per SUBSCRIBE request, whatever the number of filters in it.
        count("Subscribe.Success", conn.protocol)
        await super().handle_subscribe(subscribe)


class GatewayBroker(Broker):
    def __init__(self, gateway: "Gateway", config: dict[str, Any]) -> None:
        super().__init__(config)
        self.gateway = gateway
        self.live: dict[str, Connection] = {}
        self._subscriptions: Subscriptions = Subscriptions()
        self._closing = False
        self._handler_class = type("BoundGatewayHandler", (GatewayHandler,), {"gateway": gateway})

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        conn: Connection = writer.conn  # type: ignore[attr-defined]
        try:
            handler, client_session = await self._handler_class.init_from_connect(reader, writer, self.plugins_manager)
        except AMQTTError as exc:
            raise AMQTTError(exc) from exc
        except MQTTError as exc:
            # A CONNECT that is not MQTT 3.1.1 as AWS IoT takes it (another protocol name or
            # level, a will flag without a will, ...): refused, like AWS's Connect.ClientError.
            count("Connect.ClientError", conn.protocol)
            await writer.close()
            raise MQTTError(exc) from exc
        except NoDataError as exc:
            raise AMQTTError(exc) from exc
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise AMQTTError(exc) from exc

        client_id = client_session.client_id or ""
        conn.client_id = client_id
        allowed, reason = self.gateway.authorize(conn, "iot:Connect", "client", client_id)
        if not allowed:
            count("Connect.AuthError", conn.protocol)
            note(f"CONNECT of client {client_id!r} ({conn.principal.label}) refused, CONNACK 5: {reason}")
            try:
                await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            except Exception:  # noqa: BLE001
                pass
            await writer.close()
            raise MQTTError(f"client {client_id!r} not authorized to connect")

        count("Connect.Success", conn.protocol)
        client_session.attributes[CONN_KEY] = conn
        if client_id:
            old = self.live.get(client_id)
            if old is not None and old is not conn:
                old.kill(f"another connection with client id {client_id!r} connected", DUPLICATE_CLIENTID)
                try:
                    await asyncio.wait_for(old.done.wait(), 2.0)
                except asyncio.TimeoutError:
                    pass
            self.live[client_id] = conn
            # After the take-over above: the old connection's disconnect is recorded first.
            self.gateway.connectivity_connected(client_id)

        # The rest is amqtt 0.12.1's own session set-up.
        if client_session.clean_session:
            if client_session.client_id:
                await self._delete_session(client_session.client_id)
            else:
                client_session.client_id = gen_client_id()
            client_session.parent = 0
        elif client_session.client_id in self._sessions:
            existing, _ = self._sessions[client_session.client_id]
            existing.will_flag = client_session.will_flag
            existing.will_message = client_session.will_message
            existing.will_topic = client_session.will_topic
            existing.will_qos = client_session.will_qos
            existing.keep_alive = client_session.keep_alive
            existing.username = client_session.username
            existing.password = client_session.password
            existing.attributes[CONN_KEY] = conn
            client_session = existing
            client_session.parent = 1
        else:
            client_session.parent = 0
        # AWS allows 1.5 x the keep-alive interval before closing.
        if client_session.keep_alive > 0:
            client_session.keep_alive = client_session.keep_alive * 1.5  # type: ignore[assignment]
        return handler, client_session

    async def _cleanup_session(self, client_id: str) -> None:
        """amqtt's session monitor drops disconnected clean sessions by client id.

        It lists them first and then awaits each cleanup, so by the time it
        reaches a client id a new connection may have registered under it;
        amqtt would then stop that connection's handler (close it right after
        its CONNACK).  Only the broker's shutdown cleans up connected sessions."""
        session = self._sessions.get(client_id, (None, None))[0]
        if session is not None and session.transitions.is_connected() and not self._closing:
            return
        await super()._cleanup_session(client_id)

    async def shutdown(self) -> None:
        self._closing = True
        await super().shutdown()

    async def _authenticate(self, session: Session, _listener) -> bool:  # noqa: ARG002
        return True  # checked in _initialize_client_session (iot:Connect)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        topic_filter, qos = subscription
        granted = await super().add_subscription((topic_filter, min(qos, 1)), session)
        if granted != 0x80 and session.client_id:
            self._subscriptions.subscribed(session.client_id, topic_filter)
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        deleted = super()._del_subscription(a_filter, session)
        if deleted and session.client_id:
            self._subscriptions.unsubscribed(session.client_id, a_filter)
        return deleted

    async def _del_all_subscriptions(self, session: Session) -> None:
        """amqtt's, over the session's own filters instead of every filter of every session."""
        for topic_filter in self._subscriptions.filters_of(session.client_id) if session.client_id else []:
            if self._del_subscription(topic_filter, session) and not self._subscriptions.get(topic_filter, True):
                del self._subscriptions[topic_filter]

    def _matches(self, topic: str, a_filter: str) -> bool:
        return matches(topic, a_filter)

    def subscriptions_matching(self, topic: str) -> list[tuple[str, list]]:
        """(filter, [(session, qos)]) for every subscribed filter ``topic`` matches (indexed)."""
        return self._subscriptions.matching(topic)

    async def _run_broadcast(self, running_tasks: deque) -> None:
        """amqtt 0.12.1's, with the subscriptions looked up in the index (``Subscriptions``).

        The rest is unchanged: per matching filter and subscriber, iot:Receive
        (``_topic_filtering``), a disconnected persistent session keeps QoS 1 messages, a
        connected one gets the message (QoS: the broadcast's own, else the subscription's)."""
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        for _filter, subscriptions in self._subscriptions.matching(topic):
            for target_session, sub_qos in list(subscriptions):
                qos = broadcast.get("qos", sub_qos)
                if not await self._topic_filtering(target_session, topic=topic, action=Action.RECEIVE):
                    continue
                if (
                    target_session.transitions.state != "connected"
                    and not target_session.clean_session
                    and qos in (QOS_1, QOS_2)
                    and not target_session.is_anonymous
                ):
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                if target_session.transitions.state != "connected":
                    continue
                handler = self._get_handler(target_session)
                if handler:
                    running_tasks.append(
                        asyncio.ensure_future(handler.mqtt_publish(topic, broadcast["data"], qos, retain=False))
                    )

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        if action != Action.RECEIVE:
            return True  # publish / subscribe are checked when the packet arrives
        conn = session.attributes.get(CONN_KEY)
        if conn is None or conn.killed:
            return False
        allowed, reason = self.gateway.authorize(conn, "iot:Receive", "topic", topic)
        if not allowed:
            note(f"message on {topic!r} not delivered to client {conn.client_id!r}: iot:Receive denied: {reason}")
        return allowed

    async def _broadcast_message(self, session, topic, data, force_qos=None) -> None:
        """amqtt's own broadcasts: the will message of a client gone without DISCONNECT.

        Like any publish it needs iot:Publish (checked now) and goes to the
        rules engine too."""
        conn = session.attributes.get(CONN_KEY) if session is not None else None
        if conn is not None and topic is not None:
            allowed, reason = self.gateway.authorize(conn, "iot:Publish", "topic", topic)
            if not allowed:
                note(f"will message of client {conn.client_id!r} on {topic!r} dropped: iot:Publish denied: {reason}")
                return
        if topic is not None and data is not None:
            self.gateway._to_rules(topic, bytes(data))
        await super()._broadcast_message(session, topic, data, force_qos)

    async def _handle_message_delivery(self, client_session: Session, handler, wait_deliver) -> bool:
        app_message = wait_deliver.result()
        if app_message is None:
            return True
        conn = client_session.attributes.get(CONN_KEY)
        if conn is None or conn.killed:
            return True
        retain = bool(app_message.publish_packet and app_message.publish_packet.retain_flag)
        await self.gateway.ingest(
            app_message.topic, bytes(app_message.data or b""), app_message.qos or 0, retain, client_session
        )
        return True

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int], session: Session) -> None:
        topic_filter, qos = subscription
        if not self._retained_messages:
            return  # amqtt calls this for every filter of every session at each connect
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        for topic, retained in list(self._retained_messages.items()):
            if not self._matches(topic, topic_filter):
                continue
            if not await self._topic_filtering(session, topic, Action.RECEIVE):
                continue
            tasks.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(retained.topic, retained.data, min(qos, retained.qos or qos), retain=True)
                )
            )
        if tasks:
            await asyncio.wait(tasks)


def quiet_amqtt(verbose: bool) -> None:
    """amqtt logs every closed connection as a warning; keep stderr readable."""
    level = logging.INFO if verbose else logging.CRITICAL
    for name in ("amqtt", "transitions", "websockets"):
        logging.getLogger(name).setLevel(level)


__all__ = [
    "HTTP",
    "MQTT",
    "Connection",
    "Subscriptions",
    "count",
    "GatewayBroker",
    "GatewayStreamReader",
    "GatewayStreamWriter",
    "format_client_message",
    "matches",
    "quiet_amqtt",
]
