"""The built-in handler (templates/lambda-function.py) on its own: which readings alert, what an
alert says, and how a refused publish is retried (IAM propagation) or fails the invocation. The
SNS client is a stub; the end-to-end tests run the same handler against the local AWS."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from botocore.exceptions import ClientError

HANDLER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "templates",
    "lambda-function.py",
)
TOPIC = "arn:aws:sns:us-east-1:123456789012:iot-temperature-alerts-t1"


class StubSns:
    """Answers publish with the given outcomes in turn (an exception or a MessageId)."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = []

    def publish(self, **kwargs):
        self.calls.append(kwargs)
        outcome = self.outcomes.pop(0) if self.outcomes else "id-0"
        if isinstance(outcome, Exception):
            raise outcome
        return {"MessageId": outcome}


def refused(code="AuthorizationError"):
    return ClientError({"Error": {"Code": code, "Message": "not authorized"}}, "Publish")


def load(monkeypatch, topic=TOPIC, sns=None):
    """The handler module as Lambda would load it, with ALERT_TOPIC_ARN set (or not)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    if topic:
        monkeypatch.setenv("ALERT_TOPIC_ARN", topic)
    else:
        monkeypatch.delenv("ALERT_TOPIC_ARN", raising=False)
    spec = importlib.util.spec_from_file_location("lambda_function", HANDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.sns = sns
    module.slept = []
    monkeypatch.setattr(module.time, "sleep", module.slept.append)
    return module


def reading(temperature):
    return {"device": "temperature-sensor-t1", "temperature": temperature,
            "timestamp": "2026-11-29T10:00:00Z"}


def test_only_high_readings_alert(monkeypatch):
    sns = StubSns()
    h = load(monkeypatch, sns=sns)
    for t in (21, 65, 80):
        assert json.loads(h.lambda_handler(reading(t), None)["body"])["alert_level"] != "HIGH"
    assert sns.calls == []
    assert json.loads(h.lambda_handler(reading(91), None)["body"])["alert_level"] == "HIGH"
    assert len(sns.calls) == 1
    call = sns.calls[0]
    assert call["TopicArn"] == TOPIC
    assert call["Subject"] == "HIGH temperature 91 C from temperature-sensor-t1"
    message = json.loads(call["Message"])
    assert message["device"] == "temperature-sensor-t1"
    assert message["temperature"] == 91
    assert message["alert_level"] == "HIGH"
    assert message["timestamp"] == "2026-11-29T10:00:00Z"


def test_no_topic_no_alert(monkeypatch):
    h = load(monkeypatch, topic=None)
    assert h.sns is None
    assert json.loads(h.lambda_handler(reading(91), None)["body"])["alert_level"] == "HIGH"


def test_the_subject_stays_within_what_sns_accepts(monkeypatch):
    sns = StubSns()
    h = load(monkeypatch, sns=sns)
    h.lambda_handler(dict(reading(91), device="d" * 200), None)
    subject = sns.calls[0]["Subject"]
    assert len(subject) <= 100 and subject.isascii()


def test_a_refusal_is_retried_while_iam_propagates(monkeypatch, caplog):
    sns = StubSns(refused(), refused(), "id-3")
    h = load(monkeypatch, sns=sns)
    with caplog.at_level("INFO"):
        h.lambda_handler(reading(91), None)
    assert len(sns.calls) == 3
    assert h.slept == [1, 2]
    assert f"Alert published to {TOPIC}: MessageId id-3" in caplog.text


def test_a_lasting_refusal_fails_the_invocation_after_the_budget(monkeypatch, caplog):
    sns = StubSns(*[refused()] * 10)
    h = load(monkeypatch, sns=sns)
    with pytest.raises(ClientError):
        h.lambda_handler(reading(91), None)
    assert len(sns.calls) == 5
    assert h.slept == [1, 2, 4, 8]
    assert f"Alert not published to {TOPIC}" in caplog.text


def test_other_errors_fail_at_once(monkeypatch, caplog):
    sns = StubSns(refused("NotFound"))
    h = load(monkeypatch, sns=sns)
    with pytest.raises(ClientError):
        h.lambda_handler(reading(91), None)
    assert len(sns.calls) == 1
    assert h.slept == []
    assert "Alert not published" in caplog.text
