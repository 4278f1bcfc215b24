"""The broker's subscription index (gateway/broker.py, ``Subscriptions``).

amqtt matches every message against every subscribed filter of every session; the gateway
looks the filters up level by level instead.  What is checked here: the index finds exactly
the filters amqtt's own matching finds (random filters and topics, wildcards and ``$``
topics included), it follows subscribes, unsubscribes and sessions going away, and, end to
end over MQTT, a shadow answer still reaches every subscriber of its topic — the device that
asked and another client watching that thing's shadow (exact filter, ``+`` and ``#``) — and
no one else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
import time
import types

import pytest

from test_gateway import (  # noqa: F401 (fixtures)
    OBSERVER_POLICY,
    clients,
    connected,
    gateway,
    make_device,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gateway.broker import GatewayBroker, Subscriptions, matches  # noqa: E402


def amqtt_matches(topic: str, topic_filter: str) -> bool:
    """amqtt 0.12.1's own ``Broker._matches``, the reference."""
    from amqtt.broker import Broker

    return Broker._matches(types.SimpleNamespace(logger=logging.getLogger("amqtt-reference")), topic, topic_filter)


LEVELS = ["$aws", "things", "t1", "t2", "shadow", "update", "accepted", "jobs", "", "a", "+", "#"]


def random_filter(rng: random.Random) -> str:
    n = rng.randint(1, 6)
    levels = [rng.choice(LEVELS) for _ in range(n)]
    if rng.random() < 0.05:
        levels[rng.randrange(n)] = rng.choice(["a+", "x#", "#"])  # invalid filters too
    return "/".join(levels)


def random_topic(rng: random.Random) -> str:
    n = rng.randint(1, 7)
    return "/".join(rng.choice(LEVELS[:-2]) for _ in range(n))


def test_matches_is_amqtts():
    rng = random.Random(7)
    for _ in range(3000):
        topic, topic_filter = random_topic(rng), random_filter(rng)
        assert matches(topic, topic_filter) == amqtt_matches(topic, topic_filter), (topic, topic_filter)


def test_the_index_finds_what_scanning_every_filter_finds():
    rng = random.Random(16)
    subs = Subscriptions()
    filters: list[str] = []
    for round_ in range(40):
        for _ in range(25):
            f = random_filter(rng)
            subs[f] = [("session", 1)]
            filters.append(f)
        for _ in range(10):  # some go away, through each way amqtt removes them
            if filters:
                f = filters.pop(rng.randrange(len(filters)))
                if f in subs:
                    if round_ % 3 == 0:
                        del subs[f]
                    elif round_ % 3 == 1:
                        subs.pop(f)
                    else:
                        subs.pop(f, None)
        for _ in range(50):
            topic = random_topic(rng)
            want = sorted(f for f in subs if amqtt_matches(topic, f))
            assert sorted(subs.filters_matching(topic)) == want, topic
    subs.clear()
    assert subs.filters_matching("$aws/things/t1/shadow/update/accepted") == []


def test_dollar_topics_and_wildcards():
    subs = Subscriptions()
    for f in ("#", "+/things/t1/shadow/update/accepted", "$aws/things/+/shadow/#", "$aws/things/t1/shadow/update/accepted",
              "$aws/things/t1/shadow/update", "a/#", "a/+/c"):
        subs[f] = []
    assert sorted(subs.filters_matching("$aws/things/t1/shadow/update/accepted")) == [
        "$aws/things/+/shadow/#",
        "$aws/things/t1/shadow/update/accepted",
    ]
    assert sorted(subs.filters_matching("a")) == ["#", "a/#"]  # '#' also matches its parent level
    assert sorted(subs.filters_matching("a/b/c")) == ["#", "a/#", "a/+/c"]
    assert subs.filters_matching("b/c") == ["#"]


def test_subscribe_unsubscribe_and_a_session_going_away_keep_the_index():
    from amqtt.session import Session

    async def run() -> None:
        broker = GatewayBroker(gateway=None, config={"listeners": {"default": {"type": "external"}}, "plugins": {}})  # type: ignore[arg-type]
        sessions = {}
        for name in ("dev-1", "dev-2", "app"):
            session = Session()
            session.client_id = name
            sessions[name] = session
        for thing in ("dev-1", "dev-2"):
            for op in ("accepted", "rejected", "delta"):
                await broker.add_subscription((f"$aws/things/{thing}/shadow/update/{op}", 1), sessions[thing])
        await broker.add_subscription(("$aws/things/+/shadow/update/accepted", 1), sessions["app"])
        await broker.add_subscription(("$aws/things/dev-1/shadow/update/accepted", 0), sessions["app"])

        def who(topic: str) -> list[tuple[str, int]]:
            return sorted((s.client_id, q) for _, subs in broker.subscriptions_matching(topic) for s, q in subs)

        assert who("$aws/things/dev-1/shadow/update/accepted") == [("app", 0), ("app", 1), ("dev-1", 1)]
        assert who("$aws/things/dev-2/shadow/update/accepted") == [("app", 1), ("dev-2", 1)]
        assert who("$aws/things/dev-2/shadow/update/delta") == [("dev-2", 1)]
        # UNSUBSCRIBE (amqtt's _handle_unsubscription calls _del_subscription).
        broker._del_subscription("$aws/things/dev-1/shadow/update/accepted", sessions["app"])
        assert who("$aws/things/dev-1/shadow/update/accepted") == [("app", 1), ("dev-1", 1)]
        # A session that goes away takes only its own subscriptions, and empty filters go too.
        await broker._del_all_subscriptions(sessions["dev-1"])
        assert who("$aws/things/dev-1/shadow/update/accepted") == [("app", 1)]
        assert who("$aws/things/dev-2/shadow/update/accepted") == [("app", 1), ("dev-2", 1)]
        assert not any(k.startswith("$aws/things/dev-1/") for k in broker._subscriptions)
        assert broker._subscriptions.filters_of("dev-1") == []
        await broker._del_all_subscriptions(sessions["app"])
        await broker._del_all_subscriptions(sessions["dev-2"])
        assert dict(broker._subscriptions) == {}
        assert broker._subscriptions.filters_matching("$aws/things/dev-2/shadow/update/accepted") == []

    asyncio.run(run())


# -- end to end: other subscribers still receive shadow answers ----------------------------


def seen(client, topic: str, want: set, key: str = "clientToken", timeout: float = 5.0) -> None:
    """Reads ``topic`` until every value of ``want`` was seen under ``key`` (a client whose
    filters overlap may get a message once per matching filter, as with amqtt before)."""
    got: set = set()
    deadline = time.monotonic() + timeout
    while not want <= got:
        got.add(json.loads(client.expect(topic, timeout=max(0.1, deadline - time.monotonic()))).get(key))


def test_shadow_answers_reach_the_requester_and_every_other_subscriber(gateway, make_device, clients):
    device = make_device()
    other = make_device()  # another device: its own shadow only
    app = make_device(policy=OBSERVER_POLICY)  # an application watching the fleet
    prefix = f"$aws/things/{device.thing}/shadow"
    dev = connected(clients, gateway, device)
    assert dev.subscribe(f"{prefix}/update/accepted", f"{prefix}/update/delta", f"{prefix}/update/documents") == [1, 1, 1]
    watcher = connected(clients, gateway, app)
    assert watcher.subscribe(f"{prefix}/update/accepted", "$aws/things/+/shadow/update/delta",
                             f"$aws/things/{device.thing}/shadow/update/#") == [1, 1, 1]
    bystander = connected(clients, gateway, other)
    other_prefix = f"$aws/things/{other.thing}/shadow"
    assert bystander.subscribe(f"{other_prefix}/update/accepted", f"{other_prefix}/update/delta") == [1, 1]

    dev.publish(f"{prefix}/update", {"state": {"desired": {"fw": "2"}, "reported": {"fw": "1"}}, "clientToken": "c1"})
    for client in (dev, watcher):
        seen(client, f"{prefix}/update/accepted", {"c1"})
        seen(client, f"{prefix}/update/delta", {"c1"})
        seen(client, f"{prefix}/update/documents", {"c1"})
    bystander.nothing_on(f"{prefix}/update/accepted")
    bystander.nothing_on(f"{prefix}/update/delta", quiet=0.1)

    # The watcher leaves its exact filter: it still gets accepted through '#', the device too.
    watcher.client.unsubscribe(f"{prefix}/update/accepted")
    time.sleep(0.3)
    dev.publish(f"{prefix}/update", {"state": {"reported": {"fw": "2"}}, "clientToken": "c2"})
    seen(dev, f"{prefix}/update/accepted", {"c2"})
    seen(watcher, f"{prefix}/update/accepted", {"c2"})
    seen(watcher, f"{prefix}/update/documents", {"c2"})

    # The device disconnects; the watcher's subscriptions stay: another thing's delta reaches it.
    dev.close()
    bystander.publish(f"{other_prefix}/update", {"state": {"desired": {"x": 1}}, "clientToken": "o1"})
    seen(bystander, f"{other_prefix}/update/accepted", {"o1"})
    seen(watcher, f"{other_prefix}/update/delta", {"o1"})
