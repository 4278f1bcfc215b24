"""The IoT rules engine: route an iot-data Publish through the topic rules.

moto 5.2.1's Publish only records the message. The emulator answers Publish
as before (200, at once) and hands the message to one dispatcher thread,
which, in publish order, for every rule of the publisher's account/region in
moto's IoT backend:

1. skips a disabled rule;
2. parses its SQL (iotsql.py); SQL outside the supported subset, or an
   unknown awsIotSqlVersion, skips the rule with one stderr line per rule
   and statement;
3. matches the FROM topic filter (topics.py) and evaluates SELECT / WHERE;
   a message the rule does not select goes nowhere;
4. runs each action with the selected message: ``lambda`` is emulated
   (below), ``kinesis`` too (kinesis_action.py); every other action is
   ignored with one stderr line per rule and action type. ``errorAction`` is
   never run.

Lambda action: the function named by ``functionArn`` (an ARN with optional
qualifier, looked up in the ARN's account/region) must exist, and its
resource policy must allow the rule, as AWS checks it: an Allow statement
whose principal is the service ``iot.amazonaws.com`` (or ``*``), whose action
is ``lambda:InvokeFunction`` (or ``lambda:*`` / ``*``), and whose conditions
all hold for ``AWS:SourceArn`` = the rule's ARN
(``arn:aws:iot:REGION:ACCOUNT:rule/NAME``) and ``AWS:SourceAccount`` = the
rule's account (ArnLike / ArnEquals / StringLike with ``*`` and ``?``,
StringEquals, their Not- and IfExists forms); a matching Deny wins. Otherwise
nothing is invoked and a line goes to stderr. The check is made when the
dispatcher handles the message, so a permission removed before a Publish is
honoured for that message. The function is then invoked asynchronously
(as AWS IoT does: invocation type Event) by lambda_runtime.py; its result is
discarded and a failed invocation is not retried.

Metrics (emulator/metrics.py, AWS/IoT, the emulator's account and region
only): ``TopicMatch`` (RuleName) for every enabled rule whose topic filter
matches, whatever WHERE then selects; the lambda action's ``Success`` or
``Failure`` (RuleName, ActionType ``Lambda``): invoked, or not invoked because
the function is missing, not Active or does not allow the rule; the kinesis
action's (ActionType ``Kinesis``): a record written, or not.  iot-data
Publish counts ``PublishIn.Success`` (Protocol ``HTTP``), the message broker's
HTTP publish.
"""

from __future__ import annotations

import queue
import re
import threading
import time
import traceback
from typing import Any

import metrics

from . import iotsql, kinesis_action, lambda_runtime, topics
from .lambda_runtime import note

SQL_VERSIONS = {"2015-10-08", "2016-03-23", "beta"}
IOT_PRINCIPAL = "iot.amazonaws.com"

_queue: queue.Queue = queue.Queue()
_dispatcher: threading.Thread | None = None
_dispatcher_lock = threading.Lock()
_noted: set = set()
_noted_lock = threading.Lock()


def note_once(key: Any, message: str) -> None:
    with _noted_lock:
        if key in _noted:
            return
        if len(_noted) > 4096:
            _noted.clear()
        _noted.add(key)
    note(message)


def enqueue(account_id: str, region: str, topic: str, payload: Any) -> None:
    """Called by the patched Publish: route the message in the background."""
    global _dispatcher
    with _dispatcher_lock:
        if _dispatcher is None or not _dispatcher.is_alive():
            _dispatcher = threading.Thread(target=_dispatch_forever, name="iot-rules", daemon=True)
            _dispatcher.start()
    _queue.put((account_id, region, topic, payload, int(time.time() * 1000)))


def _dispatch_forever() -> None:
    while True:
        item = _queue.get()
        try:
            route(*item)
        except Exception:  # noqa: BLE001 - the engine must never die
            note("rules engine error:\n" + traceback.format_exc().rstrip())


def route(account_id: str, region: str, topic: str, payload: Any, timestamp_ms: int) -> int:
    """Run every enabled rule on one message; the number of actions started."""
    from moto.iot.models import iot_backends

    backend = iot_backends[account_id][region]
    rules = list(getattr(backend, "rules", {}).values())
    if not rules:
        return 0
    decoded = iotsql.decode_payload(payload)
    started = 0
    # The emulator's CloudWatch metrics are those of its one account and region.
    counted = (account_id, region) == (metrics.ACCOUNT, metrics.REGION)
    for rule in rules:
        if getattr(rule, "rule_disabled", False):
            continue
        sql = getattr(rule, "sql", "") or ""
        version = getattr(rule, "aws_iot_sql_version", None) or "2016-03-23"
        if version not in SQL_VERSIONS:
            note_once(
                (rule.arn, sql, "version", version),
                f"rule {rule.rule_name}: skipped, awsIotSqlVersion {version!r} is not supported",
            )
            continue
        try:
            stmt = iotsql.parse(sql)
        except iotsql.UnsupportedSql as error:
            note_once(
                (rule.arn, sql, "sql"),
                f"rule {rule.rule_name}: skipped, SQL not supported by the emulator ({error}): {sql}",
            )
            continue
        if not topics.matches(stmt.topic_filter, topic):
            continue
        # "The number of incoming messages published on a topic on which a rule is
        # listening": counted before WHERE selects anything.
        if counted:
            metrics.record("TopicMatch", dimensions={"RuleName": rule.rule_name})
        message = iotsql.Message(topic, decoded, timestamp_ms)
        try:
            selected = iotsql.evaluate(stmt, message)
        except Exception as error:  # noqa: BLE001 - a bug here must not stop other rules
            note(f"rule {rule.rule_name}: cannot evaluate SQL for topic {topic}: {error!r}")
            continue
        if selected is None:
            continue
        for action in getattr(rule, "actions", None) or []:
            if not isinstance(action, dict):
                continue
            for kind, config in action.items():
                if kind == "lambda":
                    ok = _lambda_action(rule, config or {}, selected)
                    if ok is not None:
                        if counted:
                            action_metric(rule.rule_name, "Lambda", bool(ok))
                        started += ok
                elif kind == "kinesis":
                    written = kinesis_action.run(rule, config or {}, selected, message)
                    if counted:
                        action_metric(rule.rule_name, "Kinesis", written)
                    started += int(written)
                else:
                    note_once(
                        (rule.arn, "action", kind),
                        f"rule {rule.rule_name}: action {kind!r} is not emulated; ignored",
                    )
    return started


# -- the lambda action -------------------------------------------------------

_FUNCTION_ARN = re.compile(
    r"^arn:(?P<partition>[^:]+):lambda:(?P<region>[^:]+):(?P<account>\d{12}):function:(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$"
)


def action_metric(rule_name: str, action_type: str, succeeded: bool) -> None:
    """AWS IoT's rule action metric: Success or Failure, per RuleName and ActionType.

    ``ActionType`` is ``Lambda`` for the lambda action, the value iotreg's rule alarm and
    dashboard use (docs/decisions.md, "Monitoring")."""
    metrics.record(
        "Success" if succeeded else "Failure",
        dimensions={"RuleName": rule_name, "ActionType": action_type},
    )


def _lambda_action(rule: Any, config: dict, event: dict) -> int | None:
    """1: invoked (the action succeeded); 0: not invoked, as AWS's action would fail (the
    function is missing, not active or does not allow the rule); None: not invoked because
    the emulator does not run that function (no action metric: AWS would have invoked it)."""
    arn = str(config.get("functionArn") or "")
    match = _FUNCTION_ARN.match(arn)
    if not match:
        note(f"rule {rule.rule_name}: lambda action has an invalid functionArn {arn!r}; nothing invoked")
        return 0
    from moto.awslambda.utils import get_backend

    try:
        fn = get_backend(match["account"], match["region"]).get_function(arn)
    except Exception:  # noqa: BLE001 - UnknownFunctionException and the like
        note(f"rule {rule.rule_name}: function {arn} does not exist; nothing invoked")
        return 0
    if getattr(fn, "state", "Active") not in (None, "Active"):
        note(f"rule {rule.rule_name}: function {arn} is in state {fn.state}; nothing invoked")
        return 0
    allowed, reason = invoke_permitted(fn, rule.arn, rule.account_id)
    if not allowed:
        note(
            f"rule {rule.rule_name}: not allowed to invoke {arn} ({reason}); nothing invoked. "
            f"Grant it with AddPermission --principal {IOT_PRINCIPAL} --source-arn {rule.arn}"
        )
        return 0
    if not lambda_runtime.handles(fn):
        note(f"rule {rule.rule_name}: function {arn} (runtime {fn.run_time}) is not run by the emulator")
        return None
    lambda_runtime.submit(fn, event, arn)
    return 1


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _wildcard(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _principal_ok(principal: Any) -> bool:
    if principal == "*" or principal == IOT_PRINCIPAL:
        return True
    if isinstance(principal, dict):
        if IOT_PRINCIPAL in _as_list(principal.get("Service")):
            return True
        if "*" in _as_list(principal.get("AWS")):
            return True
    return False


def _action_ok(actions: Any) -> bool:
    return any(_wildcard(str(a), "lambda:InvokeFunction", ignore_case=True) for a in _as_list(actions))


def _resource_ok(resources: Any, fn: Any) -> bool:
    resources = _as_list(resources)
    if not resources:
        return True
    arn = str(fn.function_arn)
    unqualified = arn.split(":$LATEST")[0]
    candidates = {arn, unqualified, unqualified + ":$LATEST"}
    return any(_wildcard(str(r), c) for r in resources for c in candidates)


def _condition_ok(condition: Any, context: dict[str, str]) -> bool:
    if not condition:
        return True
    if not isinstance(condition, dict):
        return False
    for operator, pairs in condition.items():
        if not isinstance(pairs, dict):
            return False
        op = str(operator)
        if_exists = op.endswith("IfExists")
        if if_exists:
            op = op[: -len("IfExists")]
        for key, values in pairs.items():
            actual = context.get(str(key).lower())
            if actual is None:
                if if_exists:
                    continue
                return False
            values = [str(v) for v in _as_list(values)]
            if op in ("ArnLike", "ArnEquals", "StringLike"):
                ok = any(_wildcard(v, actual) for v in values)
            elif op in ("ArnNotLike", "ArnNotEquals", "StringNotLike"):
                ok = not any(_wildcard(v, actual) for v in values)
            elif op == "StringEquals":
                ok = actual in values
            elif op == "StringNotEquals":
                ok = actual not in values
            elif op == "StringEqualsIgnoreCase":
                ok = actual.lower() in (v.lower() for v in values)
            elif op == "StringNotEqualsIgnoreCase":
                ok = actual.lower() not in (v.lower() for v in values)
            else:
                return False  # an operator the emulator does not evaluate: not satisfied
            if not ok:
                return False
    return True


def invoke_permitted(fn: Any, source_arn: str, source_account: str) -> tuple[bool, str]:
    """(allowed, reason): may the IoT rule ``source_arn`` invoke ``fn``?"""
    policy = getattr(fn, "policy", None)
    statements = list(getattr(policy, "statements", None) or [])
    if not statements:
        return False, "the function has no resource-based policy"
    context = {"aws:sourcearn": source_arn, "aws:sourceaccount": source_account}
    allowed = False
    for statement in statements:
        if not isinstance(statement, dict):
            continue
        if not _principal_ok(statement.get("Principal")):
            continue
        if not _action_ok(statement.get("Action")):
            continue
        if not _resource_ok(statement.get("Resource"), fn):
            continue
        if not _condition_ok(statement.get("Condition"), context):
            continue
        if str(statement.get("Effect", "Allow")) == "Deny":
            return False, f"statement {statement.get('Sid')!r} denies it"
        allowed = True
    if allowed:
        return True, "allowed"
    return False, f"no statement allows {IOT_PRINCIPAL} lambda:InvokeFunction for {source_arn}"


# -- moto patch: Publish -----------------------------------------------------


def apply() -> None:
    from moto.iotdata.models import IoTDataPlaneBackend

    current = IoTDataPlaneBackend.publish
    if getattr(current, "_iotreg_datapath", False):
        return

    def publish(self, topic: str, payload: Any) -> None:
        current(self, topic, payload)
        # iot-data Publish is the message broker's HTTP publish (Protocol HTTP), like a
        # device's HTTPS publish on the gateway (counted there).
        if (self.account_id, self.region_name) == (metrics.ACCOUNT, metrics.REGION):
            metrics.record("PublishIn.Success", dimensions={"Protocol": "HTTP"})
        enqueue(self.account_id, self.region_name, topic, payload)

    publish._iotreg_datapath = True
    IoTDataPlaneBackend._emulator_orig_publish = current
    IoTDataPlaneBackend.publish = publish
