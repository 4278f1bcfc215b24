"""--request-log FILE: one JSON line per AWS API request, right service + operation."""

from __future__ import annotations

import io
import json
import os
import re
import sys
import threading
import urllib.error
import urllib.request
import zipfile

import pytest

from conftest import start_emulator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import request_log  # noqa: E402

KEYS = ["service", "operation", "method", "path", "status"]
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)
IOT_POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}
)
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


def read_log(path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert text == "" or text.endswith("\n")
    lines = text.splitlines()
    records = [json.loads(line) for line in lines]
    for line, record in zip(lines, records):
        assert list(record) == KEYS, line
        assert line == json.dumps(record)  # {"service": "iot", "operation": ...}
    return records


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
    return buf.getvalue()


@pytest.fixture
def logged(tmp_path):
    path = tmp_path / "requests.jsonl"
    server = start_emulator("--request-log", str(path), env={"IOTREG_EMULATOR_REQUEST_LOG": None})
    try:
        yield server, path
    finally:
        assert server.stop() == 0


def test_every_request_is_logged_with_service_and_operation(logged, name):
    server, path = logged
    assert path.exists() and path.read_text() == ""  # created at start-up, empty
    sts, iam, iot, lam, data, logs = (
        server.client(s) for s in ("sts", "iam", "iot", "lambda", "iot-data", "logs")
    )
    expected: list[tuple[str, str]] = []

    def call(client, service: str, operation: str, method: str, **kwargs):
        result = getattr(client, method)(**kwargs)
        expected.append((service, operation))
        # Written before the response is sent: already in the file now.
        assert read_log(path)[-1]["operation"] == operation
        return result

    call(sts, "sts", "GetCallerIdentity", "get_caller_identity")

    role = call(iam, "iam", "CreateRole", "create_role", RoleName=name, AssumeRolePolicyDocument=TRUST)["Role"]
    call(iam, "iam", "GetRole", "get_role", RoleName=name)
    call(iam, "iam", "AttachRolePolicy", "attach_role_policy", RoleName=name, PolicyArn=BASIC_EXECUTION)
    call(iam, "iam", "ListAttachedRolePolicies", "list_attached_role_policies", RoleName=name)

    call(iot, "iot", "CreateThingType", "create_thing_type", thingTypeName=name)
    call(iot, "iot", "DescribeThingType", "describe_thing_type", thingTypeName=name)
    call(iot, "iot", "CreateThing", "create_thing", thingName=name, thingTypeName=name)
    call(iot, "iot", "DescribeThing", "describe_thing", thingName=name)
    call(iot, "iot", "UpdateThing", "update_thing", thingName=name,
         attributePayload={"attributes": {"k": "v"}})
    call(iot, "iot", "CreatePolicy", "create_policy", policyName=name, policyDocument=IOT_POLICY)
    call(iot, "iot", "GetPolicy", "get_policy", policyName=name)
    cert = call(iot, "iot", "CreateKeysAndCertificate", "create_keys_and_certificate", setAsActive=False)
    cert_arn, cert_id = cert["certificateArn"], cert["certificateId"]
    call(iot, "iot", "ListCertificates", "list_certificates")
    call(iot, "iot", "DescribeCertificate", "describe_certificate", certificateId=cert_id)
    call(iot, "iot", "UpdateCertificate", "update_certificate", certificateId=cert_id, newStatus="ACTIVE")
    call(iot, "iot", "AttachPolicy", "attach_policy", policyName=name, target=cert_arn)
    call(iot, "iot", "ListAttachedPolicies", "list_attached_policies", target=cert_arn)
    call(iot, "iot", "ListTargetsForPolicy", "list_targets_for_policy", policyName=name)
    call(iot, "iot", "AttachThingPrincipal", "attach_thing_principal", thingName=name, principal=cert_arn)
    call(iot, "iot", "ListThingPrincipals", "list_thing_principals", thingName=name)
    function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    call(iot, "iot", "CreateTopicRule", "create_topic_rule", ruleName=name, topicRulePayload={
        "sql": "SELECT * FROM 'iotreg/+/telemetry'",
        "actions": [{"lambda": {"functionArn": function_arn}}],
    })
    call(iot, "iot", "GetTopicRule", "get_topic_rule", ruleName=name)
    call(iot, "iot", "ListTopicRules", "list_topic_rules")
    call(iot, "iot", "DescribeEndpoint", "describe_endpoint", endpointType="iot:Data-ATS")

    call(lam, "lambda", "CreateFunction", "create_function", FunctionName=name, Runtime="python3.12",
         Role=role["Arn"], Handler="handler.handler", Code={"ZipFile": zip_bytes()})
    call(lam, "lambda", "GetFunction", "get_function", FunctionName=name)
    call(lam, "lambda", "AddPermission", "add_permission", FunctionName=name, StatementId="iot-invoke",
         Action="lambda:InvokeFunction", Principal="iot.amazonaws.com",
         SourceArn=f"arn:aws:iot:us-east-1:123456789012:rule/{name}")
    call(lam, "lambda", "GetPolicy", "get_policy", FunctionName=name)
    call(lam, "lambda", "RemovePermission", "remove_permission", FunctionName=name, StatementId="iot-invoke")

    call(data, "iot-data", "UpdateThingShadow", "update_thing_shadow", thingName=name,
         payload=json.dumps({"state": {"reported": {"x": 1}}}))
    call(data, "iot-data", "GetThingShadow", "get_thing_shadow", thingName=name)
    call(data, "iot-data", "DeleteThingShadow", "delete_thing_shadow", thingName=name)

    call(logs, "logs", "DescribeLogGroups", "describe_log_groups")
    call(logs, "logs", "CreateLogGroup", "create_log_group", logGroupName=f"/aws/lambda/{name}")
    call(logs, "logs", "DeleteLogGroup", "delete_log_group", logGroupName=f"/aws/lambda/{name}")

    records = read_log(path)
    assert [(r["service"], r["operation"]) for r in records] == expected
    assert len(records) == 36
    by_op = {(r["service"], r["operation"]): r for r in records}
    assert all(r["status"] in (200, 201, 204) for r in records), records

    assert by_op["iot", "CreateThing"]["method"] == "POST"
    assert by_op["iot", "CreateThing"]["path"] == f"/things/{name}"
    assert by_op["iot", "ListAttachedPolicies"]["method"] == "POST"
    assert by_op["iot", "ListAttachedPolicies"]["path"] == f"/attached-policies/{cert_arn}"
    assert by_op["iot", "ListTargetsForPolicy"]["method"] == "POST"
    assert by_op["iot", "ListTargetsForPolicy"]["path"] == f"/policy-targets/{name}"
    assert by_op["iot", "UpdateCertificate"]["path"] == f"/certificates/{cert_id}"
    assert by_op["iot-data", "UpdateThingShadow"]["path"] == f"/things/{name}/shadow"
    assert by_op["lambda", "GetPolicy"]["method"] == "GET"
    assert by_op["lambda", "AddPermission"]["method"] == "POST"
    assert by_op["lambda", "CreateFunction"]["status"] == 201  # status as sent by the server
    assert by_op["lambda", "RemovePermission"]["status"] == 204
    assert by_op["lambda", "RemovePermission"]["method"] == "DELETE"
    assert by_op["lambda", "RemovePermission"]["path"].endswith(f"/functions/{name}/policy/iot-invoke")
    assert by_op["sts", "GetCallerIdentity"]["method"] == "POST"
    assert by_op["logs", "DeleteLogGroup"]["path"] == "/"


def test_errors_are_logged_with_their_status_and_moto_api_is_not(logged, name):
    server, path = logged
    iot, lam, iam = server.client("iot"), server.client("lambda"), server.client("iam")
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_thing(thingName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName=name)
    for url in (f"{server.url}/moto-api/reset", f"{server.url}/moto-api/data.json"):
        method = "POST" if url.endswith("reset") else "GET"
        request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
    assert [(r["service"], r["operation"], r["status"]) for r in read_log(path)] == [
        ("iot", "DescribeThing", 404),
        ("lambda", "GetPolicy", 404),
        ("iam", "GetRole", 404),
    ]


def test_unresolvable_request_logs_null_operation(logged):
    server, path = logged
    request = urllib.request.Request(
        f"{server.url}/no/such/iot/route",
        method="GET",
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/iot/aws4_request, "
            "SignedHeaders=host, Signature=0"
        },
    )
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as error:
        error.close()
    [record] = read_log(path)
    assert record["service"] == "iot" and record["operation"] is None
    assert record["method"] == "GET" and record["path"] == "/no/such/iot/route"
    assert isinstance(record["status"], int)


def test_concurrent_requests_each_write_one_whole_line(logged):
    server, path = logged
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            sts = server.client("sts")
            for _ in range(10):
                sts.get_caller_identity()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    records = read_log(path)
    assert len(records) == 80
    assert {(r["service"], r["operation"], r["status"]) for r in records} == {("sts", "GetCallerIdentity", 200)}


def test_env_variable_sets_the_log_and_appends(tmp_path):
    path = tmp_path / "env.jsonl"
    path.write_text(json.dumps({"earlier": True}) + "\n")
    server = start_emulator(env={"IOTREG_EMULATOR_REQUEST_LOG": str(path)})
    try:
        server.client("logs").describe_log_groups()
    finally:
        assert server.stop() == 0
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"earlier": True}
    assert [json.loads(line)["operation"] for line in lines[1:]] == ["DescribeLogGroups"]


def test_without_the_flag_no_file_is_written(tmp_path):
    server = start_emulator(env={"IOTREG_EMULATOR_REQUEST_LOG": None}, cwd=str(tmp_path))
    try:
        server.client("sts").get_caller_identity()
        server.client("iot").list_things()
    finally:
        assert server.stop() == 0
    assert list(tmp_path.iterdir()) == []


# -- the resolver alone, against botocore's models (no server) ---------------


def sample_environ(service: str, signing_name: str, operation: dict, shapes: dict) -> dict:
    """A request as an SDK would send it for this operation (labels filled in)."""
    http = operation["http"]
    path, _, template_query = http["requestUri"].partition("?")
    path = re.sub(r"\{[^}]+\+\}", "arn%3Aaws%3Aiot/a/b", path)
    path = re.sub(r"\{[^}]+\}", "v%2F1", path)
    query = [part for part in template_query.split("&") if part]
    environ = {
        "REQUEST_METHOD": http["method"],
        "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/{signing_name}/"
        "aws4_request, SignedHeaders=host, Signature=0",
    }
    shape = shapes.get((operation.get("input") or {}).get("shape", ""), {})
    for member in shape.get("required", []):
        ref = shape["members"][member]
        wire = ref.get("locationName", member)
        if ref.get("location") == "header":
            environ["HTTP_" + wire.upper().replace("-", "_")] = "x"
        elif ref.get("location") == "querystring":
            query.append(f"{wire}=x")
    environ["QUERY_STRING"] = "&".join(query)
    environ["RAW_URI"] = path + ("?" + environ["QUERY_STRING"] if query else "")
    environ["PATH_INFO"] = path
    return environ


@pytest.mark.parametrize("service", ["iot", "iot-data", "lambda", "iam", "sts", "logs"])
def test_resolver_names_every_operation_of_iotregs_services(service):
    models = request_log.ServiceModels()
    model = models._get_loader().load_service_model(service, "service-2")
    metadata = model["metadata"]
    signing_name = metadata.get("signingName") or metadata["endpointPrefix"]
    wrong = []
    for op_name, operation in model["operations"].items():
        environ = sample_environ(service, signing_name, operation, model["shapes"])
        form = None
        if metadata["protocol"] == "query":
            form = f"Action={op_name}&Version={metadata['apiVersion']}".encode()
        elif metadata["protocol"] == "json":
            environ["HTTP_X_AMZ_TARGET"] = f"{metadata['targetPrefix']}.{op_name}"
        got = request_log.resolve(models, request_log._Request(environ, form))
        if got != (service, op_name):
            wrong.append((op_name, got))
    assert wrong == []
    assert len(model["operations"]) >= 5


def test_resolver_leaves_identical_routes_unresolved():
    # S3 GetBucketLifecycle and GetBucketLifecycleConfiguration share
    # GET /{Bucket}?lifecycle: null, not a guess.
    models = request_log.ServiceModels()
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/bucket",
        "RAW_URI": "/bucket?lifecycle",
        "QUERY_STRING": "lifecycle",
        "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=0",
    }
    assert request_log.resolve(models, request_log._Request(environ, None)) == ("s3", None)
    environ["RAW_URI"], environ["QUERY_STRING"] = "/bucket", ""
    assert request_log.resolve(models, request_log._Request(environ, None)) == ("s3", "ListObjects")
