"""The data path moto lacks: IoT rules engine -> Lambda (python) -> CloudWatch Logs.

* rules.py          Publish (iot-data) is routed through the enabled topic
                    rules in a background thread; the lambda action invokes.
* iotsql.py         the AWS IoT SQL subset the rules use (SELECT/FROM/WHERE).
* topics.py         MQTT topic filters (``+``, ``#``).
* kinesis_action.py the rules' kinesis action (PutRecord as the rule's role,
                    checked by iam_eval.py).
* stream_poller.py  runs Lambda event source mappings of Kinesis streams.
* lambda_runtime.py runs a function's python handler from its zip in a
                    subprocess (bootstrap.py), logs to CloudWatch Logs as
                    Lambda does, and replaces moto's Docker-based Invoke.

server.py calls ``apply()`` before serving, ``set_endpoint(url)`` once the
port is known (the handlers' AWS_ENDPOINT_URL), ``start()`` to start the
event source mapping poller, and ``shutdown()`` on exit.
"""

from __future__ import annotations

from . import lambda_runtime, rules, stream_poller


def apply() -> None:
    """Patch moto (this process only); safe to call more than once."""
    rules.apply()
    lambda_runtime.apply()


def set_endpoint(url: str) -> None:
    lambda_runtime.set_endpoint(url)


def start() -> None:
    """Start the event source mapping poller (stream_poller.py)."""
    stream_poller.start()


def shutdown() -> None:
    """Stop the poller, kill handlers still running and remove unpacked function code."""
    stream_poller.stop()
    lambda_runtime.cleanup()
