"""The data path: Publish -> topic rule -> Lambda handler (python3) -> CloudWatch Logs,
and the Lambda Invoke API without Docker (emulator/datapath/)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
import uuid
import zipfile

import pytest

from conftest import error_code, http_status

ACCOUNT = "123456789012"
REGION = "us-east-1"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE_HANDLER = os.path.join(REPO, "templates", "lambda-function.py")
RECIPE_SQL = "SELECT *, topic(3) as device, timestamp() as aws_timestamp FROM 'sensor/temperature/+'"
TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
REPORT_RE = re.compile(
    rf"^REPORT RequestId: ({UUID})\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\t"
    r"Memory Size: (\d+) MB\tMax Memory Used: \d+ MB\t(Status: timeout\t)?\n$"
)
STREAM_RE = re.compile(r"^\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}$")
WAIT = 10.0  # upper bound for anything to show up
QUIET = 0.4  # extra time given to a message that must NOT show up

TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)

ECHO = """
import json
def handler(event, context):
    print("EVENT " + json.dumps(event, sort_keys=True))
    return event
"""

CONTEXT = """
import json, logging, os, sys
log = logging.getLogger("child")

def handler(event, context):
    print("plain line 1\\nplain line 2")
    print("to stderr", file=sys.stderr)
    logging.getLogger().setLevel(logging.INFO)
    log.info("multi\\nline %s", "\\u00b0C")
    logging.warning("warn %s", event.get("x"))
    names = ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_ENDPOINT_URL", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION",
             "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
             "AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT", "_HANDLER", "MY_VAR", "AWS_PROFILE"]
    return {
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "remaining": context.get_remaining_time_in_millis(),
        "group": context.log_group_name,
        "stream": context.log_stream_name,
        "env": {name: os.environ.get(name) for name in names},
        "cwd": os.getcwd(),
        "event": event,
    }
"""

BOTO = """
import logging
import boto3
logger = logging.getLogger()
logger.setLevel(logging.INFO)

def handler(event, context):
    account = boto3.client("sts").get_caller_identity()["Account"]
    logger.info("account=%s", account)
    thing = boto3.client("iot").describe_thing(thingName=event["thing"])
    logger.info("thing=%s", thing["thingName"])
    return {"account": account, "thing": thing["thingName"]}
"""

FAILING = """
def helper(value):
    raise ValueError("boom " + value)

def handler(event, context):
    print("about to fail")
    helper("\\u00b0C")
"""

SLOW = """
import time
def handler(event, context):
    print("sleeping")
    time.sleep(30)
    return "never"
"""


# -- helpers -----------------------------------------------------------------


def zip_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buf.getvalue()


def recipe_zip() -> bytes:
    with open(RECIPE_HANDLER, encoding="utf-8") as handle:
        return zip_of({"lambda-function.py": handle.read()})


def rule_arn(rule: str) -> str:
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:rule/{rule}"


def function_arn(function: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def role(aws):
    return aws("iam").create_role(RoleName=unique("role"), AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]


@pytest.fixture(scope="module")
def make_function(aws, role):
    def make(code: bytes | str, handler: str = "index.handler", timeout: int = 3, memory: int = 128, env=None) -> str:
        name = unique("fn")
        if isinstance(code, str):
            code = zip_of({"index.py": code})
        kwargs = {}
        if env:
            kwargs["Environment"] = {"Variables": env}
        aws("lambda").create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler=handler,
            Code={"ZipFile": code},
            Timeout=timeout,
            MemorySize=memory,
            **kwargs,
        )
        return name

    return make


def create_rule(aws, sql: str, function: str, disabled: bool = False, extra_actions=()) -> str:
    name = unique("rule_")
    aws("iot").create_topic_rule(
        ruleName=name,
        topicRulePayload={
            "sql": sql,
            "actions": [{"lambda": {"functionArn": function_arn(function)}}, *extra_actions],
            "ruleDisabled": disabled,
            "awsIotSqlVersion": "2016-03-23",
        },
    )
    return name


def allow(aws, function: str, rule: str, sid: str | None = None, source_arn: str | None = None) -> str:
    sid = sid or unique("sid")
    aws("lambda").add_permission(
        FunctionName=function,
        StatementId=sid,
        Action="lambda:InvokeFunction",
        Principal="iot.amazonaws.com",
        SourceArn=source_arn or rule_arn(rule),
    )
    return sid


def publish(aws, topic: str, payload) -> None:
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    aws("iot-data").publish(topic=topic, qos=1, payload=body)


def events_of(aws, function: str) -> list[dict]:
    logs = aws("logs")
    group = f"/aws/lambda/{function}"
    events, token = [], None
    while True:
        kwargs = {"logGroupName": group}
        if token:
            kwargs["nextToken"] = token
        try:
            page = logs.filter_log_events(**kwargs)
        except logs.exceptions.ResourceNotFoundException:
            return []
        events.extend(page["events"])
        token = page.get("nextToken")
        if not token:
            return events


def wait_for(aws, function: str, *needles: str, timeout: float = WAIT) -> list[dict]:
    """Poll the function's log group until every needle is in some event."""
    deadline = time.monotonic() + timeout
    while True:
        events = events_of(aws, function)
        text = [e["message"] for e in events]
        if all(any(n in m for m in text) for n in needles):
            return events
        if time.monotonic() > deadline:
            missing = [n for n in needles if not any(n in m for m in text)]
            raise AssertionError(f"not logged within {timeout}s: {missing}; log: {text}")
        time.sleep(0.05)


def absent(aws, function: str, *needles: str) -> None:
    time.sleep(QUIET)
    text = [e["message"] for e in events_of(aws, function)]
    for needle in needles:
        assert not any(needle in m for m in text), f"{needle!r} was logged: {text}"


def invocation(aws, function: str, needle: str, timeout: float = WAIT) -> tuple[str, list[str]]:
    """(stream, messages) of the finished invocation whose log contains needle.

    Events are written as the handler produces them: wait for its REPORT.
    """
    deadline = time.monotonic() + timeout
    while True:
        events = events_of(aws, function)
        stream = next((e["logStreamName"] for e in events if needle in e["message"]), None)
        messages = [e["message"] for e in events if e["logStreamName"] == stream]
        if stream and messages[-1].startswith("REPORT RequestId: "):
            return stream, messages
        if time.monotonic() > deadline:
            raise AssertionError(f"no finished invocation logging {needle!r} within {timeout}s: {messages}")
        time.sleep(0.05)


def check_frame(messages: list[str], memory: int = 128, timeout: bool = False) -> str:
    """START first, END and REPORT last, all with one request id; return it."""
    match = re.fullmatch(rf"START RequestId: ({UUID}) Version: \$LATEST\n", messages[0])
    assert match, messages
    request_id = match.group(1)
    assert messages[-2] == f"END RequestId: {request_id}\n"
    report = REPORT_RE.match(messages[-1])
    assert report, messages[-1]
    assert report.group(1) == request_id and int(report.group(2)) == memory
    assert bool(report.group(3)) is timeout
    return request_id


def log_line(level: str, request_id: str, text: str) -> re.Pattern:
    return re.compile(rf"^\[{level}\]\t{TIMESTAMP}\t{request_id}\t{re.escape(text)}\n$", re.DOTALL)


# -- the recipe --------------------------------------------------------------


@pytest.fixture(scope="module")
def recipe(aws, make_function):
    function = make_function(recipe_zip(), handler="lambda-function.lambda_handler", timeout=60, memory=256)
    rule = create_rule(aws, RECIPE_SQL, function)
    allow(aws, function, rule, sid="iot-lambda-permission")
    return function


@pytest.mark.parametrize(
    "temperature, level, text",
    [
        (85.5, "WARNING", "High temperature alert: 85.5°C from dev1"),
        (65, "INFO", "Moderate temperature warning: 65°C from dev1"),
        (20, "INFO", "Normal temperature reading: 20°C from dev1"),
    ],
)
def test_recipe_publish_runs_handler_and_logs(aws, recipe, temperature, level, text):
    marker = unique("m")
    before = int(time.time() * 1000)
    publish(aws, "sensor/temperature/dev1", {"temperature": temperature, "device": "overridden", "marker": marker})
    stream, messages = invocation(aws, recipe, marker)
    request_id = check_frame(messages, memory=256)
    assert len(messages) == 5, messages
    received = messages[1]
    assert re.match(rf"^\[INFO\]\t{TIMESTAMP}\t{request_id}\tReceived IoT data: ", received), received
    event = json.loads(received.split("Received IoT data: ", 1)[1])
    assert event["marker"] == marker and event["temperature"] == temperature
    assert event["device"] == "dev1"  # topic(3) overrides the payload's field
    assert before <= event["aws_timestamp"] <= int(time.time() * 1000)
    assert log_line(level, request_id, text).match(messages[2]), messages[2]
    # The recipe's validation: newest stream, get-log-events.
    logs = aws("logs")
    assert STREAM_RE.match(stream)
    streams = logs.describe_log_streams(logGroupName=f"/aws/lambda/{recipe}")["logStreams"]
    assert stream in [s["logStreamName"] for s in streams]
    got = logs.get_log_events(logGroupName=f"/aws/lambda/{recipe}", logStreamName=stream, startFromHead=True)
    assert [e["message"] for e in got["events"]] == messages
    assert all(before - 1000 <= e["timestamp"] <= int(time.time() * 1000) for e in got["events"])


def test_recipe_topics_that_do_not_match(aws, recipe):
    humidity, deeper, control = unique("m"), unique("m"), unique("m")
    publish(aws, "sensor/humidity/dev1", {"temperature": 90, "marker": humidity})
    publish(aws, "sensor/temperature/a/b", {"temperature": 90, "marker": deeper})
    publish(aws, "sensor/temperature", {"temperature": 90, "marker": deeper})
    publish(aws, "sensor/temperature/dev2", {"temperature": 10, "marker": control})
    wait_for(aws, recipe, control)
    absent(aws, recipe, humidity, deeper)


def test_invoke_recipe_request_response_and_tail(aws, recipe):
    lam = aws("lambda")
    response = lam.invoke(
        FunctionName=recipe, Payload=json.dumps({"temperature": 85.5, "device": "d1"}), LogType="Tail"
    )
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    result = json.loads(response["Payload"].read())
    assert result["statusCode"] == 200
    body = json.loads(result["body"])
    assert body["alert_level"] == "HIGH" and body["device"] == "d1" and body["temperature"] == 85.5
    tail = base64.b64decode(response["LogResult"]).decode("utf-8")
    lines = tail.splitlines()
    assert lines[0].startswith("START RequestId: ") and lines[-2].startswith("END RequestId: ")
    assert lines[-1].startswith("REPORT RequestId: ")
    assert "High temperature alert: 85.5°C from d1" in tail
    # Without LogType=Tail there is no log in the response.
    assert "LogResult" not in lam.invoke(FunctionName=recipe, Payload=b"{}")


def test_invoke_event_type_runs_in_background(aws, recipe):
    marker = unique("m")
    response = aws("lambda").invoke(
        FunctionName=recipe, InvocationType="Event", Payload=json.dumps({"temperature": 1, "marker": marker})
    )
    assert response["StatusCode"] == 202
    assert response["Payload"].read() == b""
    wait_for(aws, recipe, marker, "Normal temperature reading: 1°C from unknown")
    dry = aws("lambda").invoke(FunctionName=recipe, InvocationType="DryRun", Payload=b"{}")
    assert dry["StatusCode"] == 204


def test_invoke_missing_function_is_404(aws):
    lam = aws("lambda")
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as excinfo:
        lam.invoke(FunctionName=unique("missing"), Payload=b"{}")
    assert error_code(excinfo) == "ResourceNotFoundException"
    assert http_status(excinfo) == 404


def test_invoke_rejects_a_payload_that_is_not_json(aws, make_function):
    function = make_function(ECHO)
    lam = aws("lambda")
    with pytest.raises(lam.exceptions.InvalidRequestContentException) as excinfo:
        lam.invoke(FunctionName=function, Payload=b"{not json")
    assert http_status(excinfo) == 400


# -- rule semantics ----------------------------------------------------------


def test_where_filter_hash_wildcard_nested_field_and_alias(aws, make_function):
    function = make_function(ECHO)
    prefix = unique("x")
    where_rule = create_rule(
        aws, f"SELECT temperature FROM '{prefix}/#' WHERE temperature > 50 AND device <> 'skip'", function
    )
    nested_rule = create_rule(
        aws,
        f"select sensor.reading.value AS v, sensor.name, topic(2) as t2, 'fixed' AS kind "
        f"FROM '{prefix}n/+/n' WHERE sensor.reading.value >= 3.5",
        function,
    )
    allow(aws, function, where_rule)
    allow(aws, function, nested_rule)
    # Not selected (published first; the rules engine handles messages in order).
    publish(aws, f"{prefix}/a", {"temperature": 40.25, "device": "a"})
    publish(aws, f"{prefix}/a", {"temperature": 70.25, "device": "skip"})
    publish(aws, f"{prefix}/a", {"temperature": 71.25})  # device undefined
    publish(aws, f"other/{prefix}", {"temperature": 72.25, "device": "a"})
    publish(aws, f"{prefix}n/dev9/n", {"sensor": {"reading": {"value": 1.5}, "name": "low"}})
    # Selected.
    publish(aws, f"{prefix}/a", {"temperature": 60.25, "device": "a"})
    publish(aws, prefix, {"temperature": 61.25, "device": "a"})  # 'x/#' matches 'x'
    publish(aws, f"{prefix}/a/b/c", {"temperature": 62.25, "device": "b", "extra": 1})
    publish(aws, f"{prefix}n/dev9/n", {"sensor": {"reading": {"value": 3.5}, "name": "s1"}, "other": 2})
    selected = [
        'EVENT {"temperature": 60.25}\n',
        'EVENT {"temperature": 61.25}\n',
        'EVENT {"temperature": 62.25}\n',
        'EVENT {"kind": "fixed", "name": "s1", "t2": "dev9", "v": 3.5}\n',
    ]
    wait_for(aws, function, *selected)
    time.sleep(QUIET)
    printed = sorted(e["message"] for e in events_of(aws, function) if e["message"].startswith("EVENT "))
    assert printed == sorted(selected)


def test_disabled_rule_and_missing_permission_invoke_nothing(aws, make_function):
    function = make_function(ECHO)
    prefix = unique("p")
    control_rule = create_rule(aws, f"SELECT * FROM '{prefix}/control'", function)
    allow(aws, function, control_rule)
    rule = create_rule(aws, f"SELECT * FROM '{prefix}/+'", function, disabled=True)
    iot = aws("iot")

    def round_trip(expect_routed: bool) -> None:
        marker, control = unique("m"), unique("c")
        publish(aws, f"{prefix}/dev", {"marker": marker})
        publish(aws, f"{prefix}/control", {"marker": control})
        if expect_routed:
            wait_for(aws, function, marker, control)
        else:
            wait_for(aws, function, control)
            absent(aws, function, marker)

    # Disabled, though permitted: nothing.
    sid = allow(aws, function, rule)
    round_trip(expect_routed=False)
    iot.enable_topic_rule(ruleName=rule)
    round_trip(expect_routed=True)
    # Permission removed: nothing.
    aws("lambda").remove_permission(FunctionName=function, StatementId=sid)
    round_trip(expect_routed=False)
    # A permission for another rule's ARN does not count.
    allow(aws, function, rule, source_arn=rule_arn("some_other_rule"))
    round_trip(expect_routed=False)
    allow(aws, function, rule)
    round_trip(expect_routed=True)
    iot.disable_topic_rule(ruleName=rule)
    round_trip(expect_routed=False)


def test_deleted_function_invokes_nothing(aws, emulator, make_function):
    function = make_function(ECHO)
    prefix = unique("d")
    rule = create_rule(aws, f"SELECT * FROM '{prefix}/+'", function)
    allow(aws, function, rule)
    first = unique("m")
    publish(aws, f"{prefix}/a", {"marker": first})
    wait_for(aws, function, first)
    aws("lambda").delete_function(FunctionName=function)
    second = unique("m")
    publish(aws, f"{prefix}/a", {"marker": second})
    deadline = time.monotonic() + WAIT
    note = f"rule {rule}: function {function_arn(function)} does not exist; nothing invoked"
    while note not in emulator.log():
        assert time.monotonic() < deadline, "no stderr note for the deleted function"
        time.sleep(0.05)
    absent(aws, function, second)


def test_unsupported_sql_and_actions_are_noted_not_fatal(aws, emulator, make_function):
    function = make_function(ECHO)
    prefix = unique("u")
    bad = create_rule(aws, f"SELECT upper(name) AS n FROM '{prefix}/+'", function)
    allow(aws, function, bad)
    good = create_rule(
        aws,
        f"SELECT * FROM '{prefix}/+'",
        function,
        extra_actions=[{"sns": {"targetArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:t", "roleArn": "arn:aws:iam::1:role/r"}}],
    )
    allow(aws, function, good)
    marker = unique("m")
    publish(aws, f"{prefix}/a", {"marker": marker, "name": "n"})
    wait_for(aws, function, marker)
    log = emulator.log()
    assert f"rule {bad}: skipped, SQL not supported by the emulator" in log
    assert f"rule {good}: action 'sns' is not emulated; ignored" in log
    # Exactly one invocation: the good rule's.
    assert sum(marker in e["message"] for e in events_of(aws, function)) == 1


def test_non_json_payload(aws, make_function):
    function = make_function(ECHO)
    prefix = unique("b")
    rule = create_rule(aws, f"SELECT *, topic(2) AS device FROM '{prefix}/+'", function)
    allow(aws, function, rule)
    publish(aws, f"{prefix}/bin1", b"\x00\xffnot json")
    wait_for(aws, function, 'EVENT {"device": "bin1"}\n')


# -- the handler's environment and logging ------------------------------------


def test_context_environment_and_log_format(aws, make_function):
    function = make_function(
        CONTEXT, memory=192, timeout=7, env={"MY_VAR": "v", "AWS_ENDPOINT_URL": "https://example.invalid", "AWS_PROFILE": "p"}
    )
    response = aws("lambda").invoke(FunctionName=function, Payload=json.dumps({"x": "°C"}), LogType="Tail")
    assert "FunctionError" not in response
    result = json.loads(response["Payload"].read())
    request_id = result["request_id"]
    assert re.fullmatch(UUID, request_id)
    assert result["function_name"] == function
    assert result["function_version"] == "$LATEST"
    assert result["arn"] == function_arn(function)
    assert result["memory"] == "192"
    assert 0 < result["remaining"] <= 7000
    assert result["group"] == f"/aws/lambda/{function}"
    assert STREAM_RE.match(result["stream"])
    assert result["event"] == {"x": "°C"}
    env = result["env"]
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == REGION
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "testing"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", env["AWS_ENDPOINT_URL"])  # the emulator, never AWS
    assert env["AWS_PROFILE"] is None
    assert env["MY_VAR"] == "v"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == function
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "192"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == result["group"]
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == result["stream"]
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12"
    assert env["_HANDLER"] == "index.handler"
    assert env["LAMBDA_TASK_ROOT"] == result["cwd"]

    got = aws("logs").get_log_events(
        logGroupName=result["group"], logStreamName=result["stream"], startFromHead=True
    )
    messages = [e["message"] for e in got["events"]]
    assert check_frame(messages, memory=192) == request_id
    body = messages[1:-2]
    assert body[:3] == ["plain line 1\n", "plain line 2\n", "to stderr\n"]
    assert log_line("INFO", request_id, "multi\nline °C").match(body[3]), body[3]  # one event
    assert log_line("WARNING", request_id, "warn °C").match(body[4]), body[4]
    assert len(body) == 5
    tail = base64.b64decode(response["LogResult"]).decode("utf-8")
    assert tail == "".join(messages)


def test_handler_boto3_calls_reach_the_emulator(aws, make_function):
    thing = unique("thing")
    aws("iot").create_thing(thingName=thing)
    function = make_function(BOTO, timeout=10)
    response = aws("lambda").invoke(FunctionName=function, Payload=json.dumps({"thing": thing}), LogType="Tail")
    assert "FunctionError" not in response, response["Payload"].read()
    assert json.loads(response["Payload"].read()) == {"account": ACCOUNT, "thing": thing}
    tail = base64.b64decode(response["LogResult"]).decode("utf-8")
    assert f"\taccount={ACCOUNT}\n" in tail and f"\tthing={thing}\n" in tail


def test_handler_exception_is_logged_and_returned(aws, make_function):
    function = make_function(FAILING)
    prefix = unique("e")
    rule = create_rule(aws, f"SELECT * FROM '{prefix}/+'", function)
    allow(aws, function, rule)
    # Through the rules engine: logged like Lambda's Python runtime does.
    publish(aws, f"{prefix}/dev", {"k": 1})
    _, messages = invocation(aws, function, "[ERROR] ValueError: boom °C")
    request_id = check_frame(messages)
    assert messages[1] == "about to fail\n"
    error = messages[2]
    lines = error.split("\n")
    assert lines[0] == "[ERROR] ValueError: boom °C"
    assert lines[1] == "Traceback (most recent call last):"
    assert re.fullmatch("\u00a0\u00a0File \".*index.py\", line 7, in handler", lines[2]), lines
    assert lines[3] == "\u00a0\u00a0\u00a0\u00a0helper(\"\\u00b0C\")"
    assert re.fullmatch("\u00a0\u00a0File \".*index.py\", line 3, in helper", lines[4]), lines
    assert len(messages) == 5
    # Through Invoke: the error payload and the Unhandled header.
    response = aws("lambda").invoke(FunctionName=function, Payload=b"{}")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    payload = json.loads(response["Payload"].read())
    assert set(payload) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert payload["errorMessage"] == "boom °C" and payload["errorType"] == "ValueError"
    assert re.fullmatch(UUID, payload["requestId"]) and payload["requestId"] != request_id
    assert len(payload["stackTrace"]) == 2 and "in helper" in payload["stackTrace"][1]


def test_handler_timeout_is_killed(aws, make_function):
    function = make_function(SLOW, timeout=1)
    started = time.monotonic()
    response = aws("lambda").invoke(FunctionName=function, Payload=b"{}", LogType="Tail")
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 4.0
    assert response["FunctionError"] == "Unhandled"
    payload = json.loads(response["Payload"].read())
    assert payload["errorType"] == "Sandbox.Timedout"
    assert re.fullmatch(rf"RequestId: {UUID} Error: Task timed out after 1\.00 seconds", payload["errorMessage"])
    messages = base64.b64decode(response["LogResult"]).decode("utf-8").splitlines(keepends=True)
    request_id = check_frame(messages, timeout=True)
    assert messages[1] == "sleeping\n"
    assert re.fullmatch(rf"{TIMESTAMP} {request_id} Task timed out after 1\.00 seconds\n", messages[2])
    assert len(messages) == 5
    events = wait_for(aws, function, "Task timed out after 1.00 seconds")
    assert [e["message"] for e in events] == messages


def test_handler_import_errors(aws, make_function):
    lam = aws("lambda")
    missing_module = make_function(ECHO, handler="nope.handler")
    payload = json.loads(lam.invoke(FunctionName=missing_module, Payload=b"{}")["Payload"].read())
    assert payload["errorType"] == "Runtime.ImportModuleError"
    assert payload["errorMessage"].startswith("Unable to import module 'nope'")
    missing_function = make_function(ECHO, handler="index.nope")
    response = lam.invoke(FunctionName=missing_function, Payload=b"{}")
    assert response["FunctionError"] == "Unhandled"
    payload = json.loads(response["Payload"].read())
    assert payload["errorType"] == "Runtime.HandlerNotFound"
    assert payload["errorMessage"] == "Handler 'nope' missing on module 'index'"
    _, messages = invocation(aws, missing_function, "[ERROR] Runtime.HandlerNotFound")
    check_frame(messages)
    # As on Lambda: an empty traceback block follows.
    assert messages[1] == (
        "[ERROR] Runtime.HandlerNotFound: Handler 'nope' missing on module 'index'\n"
        "Traceback (most recent call last):"
    )


def test_queued_events_of_a_deleted_function_are_dropped(aws, emulator, make_function):
    # AWS discards the asynchronous events still queued for a function that is deleted; running
    # them would write logs and recreate the log group `down` just removed. Twice as many slow
    # events as the emulator runs at once (16 workers) leave some queued at the delete.
    function = make_function("import time\ndef handler(event, context):\n    time.sleep(1)\n")
    lam = aws("lambda")
    for _ in range(32):
        assert lam.invoke(FunctionName=function, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    lam.delete_function(FunctionName=function)
    note = f"asynchronous invocation of {function} dropped: the function was deleted"
    deadline = time.monotonic() + WAIT
    while note not in emulator.log():
        assert time.monotonic() < deadline, "queued events were run after the delete"
        time.sleep(0.05)


def test_a_running_invocation_does_not_recreate_its_deleted_log_group(aws, emulator, make_function):
    # `down` deletes the function, then its log group, while an invocation may still be
    # running: its later output must not bring the group back.
    function = make_function("import time\ndef handler(event, context):\n    time.sleep(1.5)\n    print('late line')\n")
    group = f"/aws/lambda/{function}"
    lam, logs = aws("lambda"), aws("logs")
    assert lam.invoke(FunctionName=function, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    deadline = time.monotonic() + WAIT
    while not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        assert time.monotonic() < deadline, "the invocation never started"
        time.sleep(0.05)
    lam.delete_function(FunctionName=function)
    logs.delete_log_group(logGroupName=group)
    note = f"log of {group} dropped: the function and its log group were deleted"
    while note not in emulator.log():
        assert time.monotonic() < deadline, "the late line recreated the group or was lost silently"
        time.sleep(0.05)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []
