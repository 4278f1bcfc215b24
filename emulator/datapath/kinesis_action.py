"""The topic rule ``kinesis`` action: PutRecord of the selected message into a stream.

What AWS does (AWS IoT developer guide, "Kinesis Data Streams" rule action,
https://docs.aws.amazon.com/iot/latest/developerguide/kinesis-rule-action.html,
and "Substitution templates",
https://docs.aws.amazon.com/iot/latest/developerguide/iot-substitution-templates.html):
the action ``{"kinesis": {"roleArn", "streamName", "partitionKey"}}`` writes
the rule's output (the SELECT result, as JSON) to the stream with
``kinesis:PutRecord``, as the role, which AWS IoT must be able to assume and
which must allow ``kinesis:PutRecord`` on the stream. ``partitionKey`` (and
``streamName``, from the API) may hold substitution templates
``${expression}``, evaluated on the ORIGINAL message (not the SELECT result:
an alias made with AS cannot be referenced), e.g. ``${topic(3)}``,
``${newuuid()}``, ``${timestamp()}``, ``${device}``.

What the emulator does, when the dispatcher handles the message (so a change
to the role or stream is seen by the next message):

* templates: each ``${...}`` is evaluated with iotsql.py (its expression
  subset: fields, ``topic()``, ``topic(n)``, ``timestamp()``, ``newuuid()``,
  operators); a string is inserted as is, another value as JSON, Undefined as
  the empty string; an expression outside the subset fails the action;
* the stream (looked up in the rule's account and region) must exist and the
  partition key must be 1..256 characters;
* the role must exist, trust ``iot.amazonaws.com`` and allow
  ``kinesis:PutRecord`` on the stream's ARN (iam_eval.py: inline and attached
  managed policies, wildcards, Deny wins);
* then one record: data = the selected message as compact JSON (UTF-8),
  partition key as substituted, no explicit hash key, in the order the
  dispatcher handles messages (one thread: publish order is kept per
  partition key).

Otherwise no record is written and one stderr line says why. The action
counts AWS IoT's ``Success`` / ``Failure`` metric (RuleName, ActionType
``Kinesis``).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from . import iam_eval, iotsql
from .lambda_runtime import note

_TEMPLATE = re.compile(r"\$\{([^}]*)\}")


class TemplateError(ValueError):
    pass


def substitute(template: str, message: iotsql.Message) -> str:
    """``template`` with every ``${expression}`` replaced by its value on ``message``."""

    def value_of(match: re.Match) -> str:
        expression = match.group(1).strip()
        if not expression:
            raise TemplateError("empty substitution template ${}")
        try:
            stmt = iotsql.parse(f"SELECT {expression} AS v FROM '#'")
        except iotsql.UnsupportedSql as error:
            raise TemplateError(f"cannot evaluate ${{{expression}}}: {error}") from None
        result = iotsql.evaluate(stmt, message) or {}
        if "v" not in result:
            return ""
        value = result["v"]
        return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

    return _TEMPLATE.sub(value_of, str(template))


def run(rule: Any, config: dict, selected: dict, message: iotsql.Message) -> bool:
    """Put one record; True when written (the action succeeded)."""
    name = rule.rule_name
    try:
        stream_name = substitute(config.get("streamName") or "", message)
        partition_key = substitute(config.get("partitionKey") or "", message)
    except TemplateError as error:
        note(f"rule {name}: kinesis action: {error}; no record written")
        return False
    if not stream_name:
        note(f"rule {name}: kinesis action has no streamName; no record written")
        return False
    from moto.kinesis.models import kinesis_backends

    stream = kinesis_backends[rule.account_id][rule.region_name].streams.get(stream_name)
    if stream is None:
        note(f"rule {name}: kinesis stream {stream_name} does not exist in {rule.region_name}; no record written")
        return False
    if not 1 <= len(partition_key) <= 256:
        note(f"rule {name}: kinesis partition key {partition_key!r} must be 1 to 256 characters; no record written")
        return False
    allowed, reason = iam_eval.role_allows(str(config.get("roleArn") or ""), "kinesis:PutRecord", stream.arn)
    if not allowed:
        note(f"rule {name}: not allowed to put records into {stream.arn} ({reason}); no record written")
        return False
    data = json.dumps(selected, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    try:
        stream.put_record(partition_key, None, base64.b64encode(data).decode("ascii"))
    except Exception as error:  # noqa: BLE001 - moto refusing the record
        note(f"rule {name}: PutRecord into {stream.arn} failed: {error!r}")
        return False
    return True
