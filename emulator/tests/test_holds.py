"""POST /iotreg-test/hold: hold one response of an operation (crash testing)."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError

from conftest import start_emulator


def control(server, path: str, body=None, method: str = "POST") -> tuple[int, dict]:
    """Call the test-control endpoint (plain HTTP, unsigned)."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    elif method == "POST":
        data = b""
    request = urllib.request.Request(
        f"{server.url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def iot_client(server, read_timeout: float = 60):
    return boto3.client(
        "iot",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        # Exactly one attempt: a retry would be a second (unheld) CreateThing.
        config=Config(
            connect_timeout=5,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
        ),
    )


def read_log(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def warm_up(server) -> None:
    """A new server's first few requests take up to ~1 s (moto loads lazily);
    make them before anything is timed."""
    iot = iot_client(server)
    iot.create_thing(thingName="warm-up")
    iot.describe_thing(thingName="warm-up")
    iot.list_things()
    iot.delete_thing(thingName="warm-up")


class Log:
    """The request log's lines written after the warm-up."""

    def __init__(self, path) -> None:
        self.path = path
        self.skip = len(read_log(path))

    def __call__(self) -> list[dict]:
        return read_log(self.path)[self.skip :]


@pytest.fixture
def logged(tmp_path):
    path = tmp_path / "requests.jsonl"
    server = start_emulator("--request-log", str(path), env={"IOTREG_EMULATOR_REQUEST_LOG": None})
    try:
        warm_up(server)
        yield server, Log(path)
    finally:
        assert server.stop() == 0


def test_held_create_thing_happens_but_answer_is_late(logged, name):
    server, log = logged
    assert control(server, "/iotreg-test/hold", {"operation": "CreateThing", "seconds": 3}) == (
        200,
        {"armed": {"CreateThing": 3.0}},
    )
    impatient = iot_client(server, read_timeout=1)
    other = iot_client(server)

    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        impatient.create_thing(thingName=name)  # the "crashed" client gives up
    assert time.monotonic() - started < 2.5

    # The server is still sleeping on that request; others are served at once.
    asked = time.monotonic()
    thing = other.describe_thing(thingName=name)
    assert time.monotonic() - asked < 0.5
    assert time.monotonic() - started < 3  # really during the hold
    assert thing["thingName"] == name

    def create_lines():
        return [r for r in log() if r["operation"] == "CreateThing"]

    assert create_lines() == [
        {
            "service": "iot",
            "operation": "CreateThing",
            "method": "POST",
            "path": f"/things/{name}",
            "status": 200,
            "held": True,
        }
    ]
    describe = [r for r in log() if r["operation"] == "DescribeThing"]
    assert describe == [
        {"service": "iot", "operation": "DescribeThing", "method": "GET", "path": f"/things/{name}", "status": 200}
    ]

    # After the hold the answer goes to a closed socket: no second line, no noise.
    time.sleep(max(0.0, started + 3.8 - time.monotonic()))
    assert create_lines()[0]["held"] is True and len(create_lines()) == 1
    assert all("/iotreg-test" not in r["path"] for r in log())
    assert other.list_things()["things"][0]["thingName"] == name
    stderr = server.log()
    for noise in ("Traceback", "BrokenPipe", "ConnectionReset", "Error on request"):
        assert noise not in stderr


def test_hold_is_one_shot_and_the_answer_still_arrives(logged, name):
    server, log = logged
    iot = iot_client(server)
    control(server, "/iotreg-test/hold", {"operation": "CreateThing", "seconds": 1})

    started = time.monotonic()
    first = iot.create_thing(thingName=name)  # a patient client gets the answer
    assert 1 <= time.monotonic() - started < 5
    assert first["thingName"] == name
    assert control(server, "/iotreg-test/holds", method="GET") == (200, {"armed": {}})

    started = time.monotonic()
    iot.create_thing(thingName=name + "b")
    assert time.monotonic() - started < 0.5

    lines = [r for r in log() if r["operation"] == "CreateThing"]
    assert [(r["path"], r.get("held")) for r in lines] == [
        (f"/things/{name}", True),
        (f"/things/{name}b", None),
    ]


def test_several_holds_replace_and_reset(logged, name):
    server, log = logged
    iot = iot_client(server)
    control(server, "/iotreg-test/hold", {"operation": "CreateThing", "seconds": 5})
    assert control(server, "/iotreg-test/hold", {"operation": "DescribeThing", "seconds": 1000}) == (
        200,
        {"armed": {"CreateThing": 5.0, "DescribeThing": 60.0}},  # capped at 60 s
    )
    # Arming again replaces; other operations are not held.
    assert control(server, "/iotreg-test/hold", {"operation": "CreateThing", "seconds": 0}) == (
        200,
        {"armed": {"CreateThing": 0, "DescribeThing": 60.0}},
    )
    iot.list_things()
    started = time.monotonic()
    iot.create_thing(thingName=name)  # held for 0 s: marked, not delayed
    assert time.monotonic() - started < 0.5
    assert control(server, "/iotreg-test/holds", method="GET") == (200, {"armed": {"DescribeThing": 60.0}})

    assert control(server, "/iotreg-test/reset-holds") == (200, {"armed": {}})
    started = time.monotonic()
    iot.describe_thing(thingName=name)
    assert time.monotonic() - started < 0.5

    control(server, "/iotreg-test/hold", {"operation": "DescribeThing", "seconds": 60})
    request = urllib.request.Request(f"{server.url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    assert control(server, "/iotreg-test/holds", method="GET") == (200, {"armed": {}})
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)  # not held: answered at once

    records = log()
    assert [(r["operation"], r.get("held")) for r in records] == [
        ("ListThings", None),
        ("CreateThing", True),
        ("DescribeThing", None),
        ("DescribeThing", None),
    ]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "not JSON"),
        (b"", "not JSON"),
        (["CreateThing", 3], "JSON object"),
        ({"operation": "CreateThing", "seconds": 3, "extra": 1}, "unknown field"),
        ({"operation": "CreateThing"}, "seconds"),
        ({"seconds": 3}, "operation"),
        ({"operation": "", "seconds": 3}, "operation"),
        ({"operation": 7, "seconds": 3}, "operation"),
        ({"operation": "CreateThing", "seconds": "3"}, "seconds"),
        ({"operation": "CreateThing", "seconds": True}, "seconds"),
        ({"operation": "CreateThing", "seconds": -1}, "seconds"),
    ],
)
def test_bad_hold_requests_are_400(emulator, body, message):
    status, answer = control(emulator, "/iotreg-test/hold", body)
    assert status == 400
    assert message in answer["error"]
    assert control(emulator, "/iotreg-test/holds", method="GET") == (200, {"armed": {}})


def test_unknown_control_paths_and_methods(emulator):
    assert control(emulator, "/iotreg-test/nope", {})[0] == 404
    assert control(emulator, "/iotreg-test/hold", method="GET")[0] == 405
    assert control(emulator, "/iotreg-test/reset-holds", method="GET")[0] == 405


def test_sigterm_during_a_hold_exits_quickly(name):
    server = start_emulator()  # no request log: holds work without one
    try:
        warm_up(server)
        control(server, "/iotreg-test/hold", {"operation": "CreateThing", "seconds": 30})
        outcome: list[object] = []

        def create() -> None:
            try:
                outcome.append(iot_client(server).create_thing(thingName=name))
            except Exception as error:  # noqa: BLE001 - the server goes away
                outcome.append(error)

        creator = threading.Thread(target=create, daemon=True)
        creator.start()
        other = iot_client(server)
        deadline = time.monotonic() + 10
        while True:  # wait until moto has created the thing: the hold is on
            try:
                other.describe_thing(thingName=name)
                break
            except other.exceptions.ResourceNotFoundException:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        time.sleep(0.2)
        assert creator.is_alive() and outcome == []  # the answer is being held
    finally:
        started = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        elapsed = time.monotonic() - started
    # Not a speed goal: far below the 30 s hold is what shows the hold does not delay the
    # exit (1.5 s was missed by 10 ms on a loaded 2-core machine).
    assert elapsed < 10
    creator.join(timeout=10)
    assert not creator.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Exception)
