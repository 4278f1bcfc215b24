"""The launcher itself: listening line, one port for every service, shutdown."""

from __future__ import annotations

import signal
import time

import pytest

from conftest import LISTENING, start_emulator


def test_prints_exactly_one_listening_line(emulator, aws):
    assert LISTENING.match(emulator.first_line)
    assert emulator.port > 0
    aws("sts").get_caller_identity()  # traffic must not add stdout lines
    time.sleep(0.2)
    assert emulator.extra_stdout == []


def test_startup_is_quick(emulator):
    # Measured from process start to the listening line (typically < 2 s).
    assert emulator.startup_seconds < 30


def test_all_services_share_one_port(aws):
    assert aws("sts").get_caller_identity()["Account"] == "123456789012"
    aws("iot").list_things()
    aws("iam").list_roles()
    aws("lambda").list_functions()
    aws("logs").describe_log_groups()
    with pytest.raises(aws("iot-data").exceptions.ResourceNotFoundException):
        aws("iot-data").get_thing_shadow(thingName="no-such-thing-anywhere")


def test_aws_managed_policies_are_loaded(aws):
    # MOTO_IAM_LOAD_MANAGED_POLICIES=true is set by server.py when unset.
    policy = aws("iam").get_policy(
        PolicyArn="arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    )["Policy"]
    assert policy["PolicyName"] == "AWSLambdaBasicExecutionRole"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(sig):
    server = start_emulator()
    server.client("sts").get_caller_identity()
    assert server.stop(sig) == 0
    with pytest.raises(Exception):
        server.client("sts").get_caller_identity()


def test_moto_api_reset_clears_everything(name):
    import json
    import urllib.request

    server = start_emulator()
    try:
        iot, data = server.client("iot"), server.client("iot-data")
        iot.create_thing(thingName=name)
        data.update_thing_shadow(thingName=name, payload=json.dumps({"state": {"reported": {"x": 1}}}))
        request = urllib.request.Request(f"{server.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        assert iot.list_things()["things"] == []
        with pytest.raises(data.exceptions.ResourceNotFoundException):
            data.get_thing_shadow(thingName=name)
    finally:
        assert server.stop() == 0
