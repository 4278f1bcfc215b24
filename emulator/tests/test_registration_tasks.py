"""Bulk registration (fixes/iot_registration_tasks): StartThingRegistrationTask and friends,
with boto3 against started servers (one at full speed with a request log, one paced)."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import error_code, http_status, start_emulator

ACCOUNT = "123456789012"
TRUST_IOT = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
TRUST_LAMBDA = {"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
POLICY_DOC = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]})
TEMPLATE = json.dumps({
    "Parameters": {"ThingName": {"Type": "String"}, "SerialNumber": {"Type": "String"},
                   "CSR": {"Type": "String"}},
    "Resources": {
        "thing": {"Type": "AWS::IoT::Thing", "Properties": {
            "ThingName": {"Ref": "ThingName"},
            "AttributePayload": {"serial_number": {"Ref": "SerialNumber"}}}},
        "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
            "CertificateSigningRequest": {"Ref": "CSR"}, "Status": "ACTIVE"}},
        "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": POLICY_DOC}},
    },
})


def make_csr(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


class Setup:
    def __init__(self, server, prefix: str) -> None:
        self.server = server
        self.iot = server.client("iot")
        self.s3 = server.client("s3")
        self.iam = server.client("iam")
        self.prefix = prefix
        self.bucket = f"{prefix}-input"
        self.role_arn = self.iam.create_role(
            RoleName=f"{prefix}-reg", AssumeRolePolicyDocument=json.dumps(TRUST_IOT))["Role"]["Arn"]
        self.s3.create_bucket(Bucket=self.bucket)

    def upload(self, key: str, lines: list[str]) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body="\n".join(lines).encode() + b"\n")

    def start(self, key: str, **overrides) -> str:
        args = dict(templateBody=TEMPLATE, inputFileBucket=self.bucket, inputFileKey=key,
                    roleArn=self.role_arn)
        args.update(overrides)
        return self.iot.start_thing_registration_task(**args)["taskId"]

    def wait(self, task_id: str, statuses=("Completed", "Failed", "Cancelled"), timeout=60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            task = self.iot.describe_thing_registration_task(taskId=task_id)
            if task["status"] in statuses:
                return task
            assert time.monotonic() < deadline, task
            time.sleep(0.1)

    def lines(self, prefix: str, count: int) -> tuple[list[str], dict]:
        keys = {}
        out = []
        for i in range(count):
            name = f"{prefix}-{i:03d}"
            csr, key = make_csr(name)
            keys[name] = key
            out.append(json.dumps({"ThingName": name, "SerialNumber": f"SN{i}", "CSR": csr}))
        return out, keys


def get(url: str) -> str:
    assert url.startswith("http://127.0.0.1:"), url  # the emulator, never anything else
    with urllib.request.urlopen(url, timeout=10) as response:  # a plain GET, no signature
        return response.read().decode()


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    log = tmp_path_factory.mktemp("reglog") / "requests.jsonl"
    server = start_emulator("--request-log", str(log),
                            env={"IOTREG_EMULATOR_REGISTRATION_RATE": None,
                                 "IOTREG_EMULATOR_REQUEST_LOG": None})
    server.request_log = log
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def slow():
    server = start_emulator(env={"IOTREG_EMULATOR_REGISTRATION_RATE": "20"})
    try:
        yield server
    finally:
        server.stop()


def test_300_lines_with_csrs_results_and_errors(fast):
    s = Setup(fast, "bulk300")
    lines, keys = s.lines("bulk", 300)
    lines[17] = json.dumps({"ThingName": "bulk-bad-csr", "SerialNumber": "x", "CSR": "not a csr"})
    lines[250] = "{this is not json"
    s.upload("devices.jsonl", lines)
    task_id = s.start("devices.jsonl")
    assert len(task_id) <= 40

    task = s.wait(task_id)
    assert task["status"] == "Completed", task
    assert (task["successCount"], task["failureCount"], task["percentageProgress"]) == (298, 2, 100)
    assert (task["inputFileBucket"], task["inputFileKey"], task["roleArn"], task["templateBody"]) == (
        s.bucket, "devices.jsonl", s.role_arn, TEMPLATE)
    assert task["creationDate"] <= task["lastModifiedDate"]

    results = s.iot.list_thing_registration_task_reports(taskId=task_id, reportType="RESULTS")
    assert results["reportType"] == "RESULTS" and results["resourceLinks"]
    result_lines = [json.loads(line) for link in results["resourceLinks"]
                    for line in get(link).splitlines()]
    assert len(result_lines) == 298
    offsets = sorted(r["offset"] for r in result_lines)
    assert offsets == [i for i in range(300) if i not in (17, 250)]

    policy_arns = set()
    for r in result_lines:
        arns = r["response"]["ResourceArns"]
        name = arns["thing"].rsplit("/", 1)[-1]
        assert name == f"bulk-{r['offset']:03d}"
        issued = x509.load_pem_x509_certificate(r["response"]["CertificatePem"].encode())
        # the device's own key was certified, and the ARN's id is the DER's SHA-256
        assert issued.public_key().public_numbers() == keys[name].public_key().public_numbers()
        assert arns["certificate"].endswith(
            "/" + hashlib.sha256(issued.public_bytes(serialization.Encoding.DER)).hexdigest())
        policy_arns.add(arns["policy"])
    assert len(policy_arns) == 1  # one policy for the one inline document

    errors = s.iot.list_thing_registration_task_reports(taskId=task_id, reportType="ERRORS")
    error_lines = sorted((json.loads(line) for link in errors["resourceLinks"]
                          for line in get(link).splitlines()), key=lambda e: e["offset"])
    assert [e["offset"] for e in error_lines] == [17, 250]
    assert all(e["errorCode"] == "InvalidRequestException" and e["errorMessage"] for e in error_lines)

    # the things, certificates and attachments exist as the API sees them
    thing = s.iot.describe_thing(thingName="bulk-042")
    assert thing["attributes"] == {"serial_number": "SN42"}
    principals = s.iot.list_thing_principals(thingName="bulk-042")["principals"]
    assert len(principals) == 1
    cert_id = principals[0].rsplit("/", 1)[-1]
    assert s.iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"] == "ACTIVE"
    policy_name = policy_arns.pop().rsplit("/", 1)[-1]
    assert [p["policyName"] for p in s.iot.list_attached_policies(target=principals[0])["policies"]] == [policy_name]
    with pytest.raises(ClientError):
        s.iot.describe_thing(thingName="bulk-bad-csr")  # the failed line left nothing behind

    listed = s.iot.list_thing_registration_tasks(status="Completed")["taskIds"]
    assert task_id in listed
    assert task_id not in s.iot.list_thing_registration_tasks(status="InProgress")["taskIds"]


def test_start_refusals(fast):
    s = Setup(fast, "refuse")
    s.upload("one.jsonl", [json.dumps({"ThingName": "r1", "SerialNumber": "1", "CSR": make_csr("r1")[0]})])

    with pytest.raises(ClientError) as err:
        s.start("one.jsonl", roleArn=f"arn:aws:iam::{ACCOUNT}:role/no-such-role")
    assert error_code(err) == "InvalidRequestException" and http_status(err) == 400
    assert "does not exist" in err.value.response["Error"]["Message"]

    lam = s.iam.create_role(RoleName="refuse-lambda",
                            AssumeRolePolicyDocument=json.dumps(TRUST_LAMBDA))["Role"]["Arn"]
    with pytest.raises(ClientError) as err:
        s.start("one.jsonl", roleArn=lam)
    assert error_code(err) == "InvalidRequestException"
    assert "cannot be assumed" in err.value.response["Error"]["Message"]

    with pytest.raises(ClientError) as err:
        s.start("missing.jsonl")
    assert error_code(err) == "InvalidRequestException"
    assert "missing.jsonl" in err.value.response["Error"]["Message"]

    with pytest.raises(ClientError) as err:
        s.start("one.jsonl", templateBody="{not json")
    assert error_code(err) == "InvalidRequestException"

    with pytest.raises(ClientError) as err:
        s.iot.describe_thing_registration_task(taskId="no-such-task")
    assert error_code(err) == "ResourceNotFoundException" and http_status(err) == 404

    # and a good start still works after the refusals
    assert s.wait(s.start("one.jsonl"))["successCount"] == 1


def test_operations_are_named_in_the_request_log(fast):
    s = Setup(fast, "logged")
    s.upload("l.jsonl", [json.dumps({"ThingName": "lg1", "SerialNumber": "1", "CSR": make_csr("lg1")[0]})])
    task_id = s.start("l.jsonl")
    s.wait(task_id)
    s.iot.list_thing_registration_tasks()
    s.iot.list_thing_registration_task_reports(taskId=task_id, reportType="ERRORS")
    with pytest.raises(ClientError):
        s.iot.stop_thing_registration_task(taskId=task_id)  # already Completed
    entries = [json.loads(line) for line in fast.request_log.read_text().splitlines()]
    ops = {(e["operation"], e["method"], e["status"]) for e in entries if e["service"] == "iot"}
    for expected in [("StartThingRegistrationTask", "POST", 200),
                     ("DescribeThingRegistrationTask", "GET", 200),
                     ("ListThingRegistrationTasks", "GET", 200),
                     ("ListThingRegistrationTaskReports", "GET", 200),
                     ("StopThingRegistrationTask", "PUT", 400)]:
        assert expected in ops, expected


def test_in_progress_duplicate_start_and_stop(slow):
    s = Setup(slow, "paced")
    lines, _ = s.lines("paced", 100)  # 5 s at 20 lines/s
    s.upload("paced.jsonl", lines)
    task_id = s.start("paced.jsonl")
    time.sleep(1.0)
    task = s.iot.describe_thing_registration_task(taskId=task_id)
    assert task["status"] == "InProgress"
    assert 0 < task["percentageProgress"] < 100
    assert 0 < task["successCount"] < 100
    assert s.iot.list_thing_registration_tasks(status="InProgress")["taskIds"] == [task_id]

    # one task per account at a time
    with pytest.raises(ClientError) as err:
        s.start("paced.jsonl")
    assert error_code(err) == "InvalidRequestException"
    assert task_id in err.value.response["Error"]["Message"]

    s.iot.stop_thing_registration_task(taskId=task_id)
    assert s.iot.describe_thing_registration_task(taskId=task_id)["status"] in ("Cancelling", "Cancelled")
    task = s.wait(task_id, statuses=("Cancelled",), timeout=10)
    assert task["successCount"] < 100 and task["failureCount"] == 0
    done = task["successCount"]
    time.sleep(0.5)  # nothing more is provisioned after the stop
    assert s.iot.describe_thing_registration_task(taskId=task_id)["successCount"] == done
    things = s.iot.list_things(maxResults=250)["things"]
    assert len([t for t in things if t["thingName"].startswith("paced-")]) == done
    results = s.iot.list_thing_registration_task_reports(taskId=task_id, reportType="RESULTS")
    assert sum(len(get(link).splitlines()) for link in results["resourceLinks"]) == done
    assert s.iot.list_thing_registration_task_reports(
        taskId=task_id, reportType="ERRORS")["resourceLinks"] == []

    with pytest.raises(ClientError) as err:
        s.iot.stop_thing_registration_task(taskId=task_id)
    assert error_code(err) == "InvalidRequestException"

    # the account may start another one now
    second = s.start("paced.jsonl")
    s.iot.stop_thing_registration_task(taskId=second)
    s.wait(second, statuses=("Cancelled",), timeout=10)


def test_reset_stops_and_forgets_tasks(slow):
    s = Setup(slow, "reset")
    lines, _ = s.lines("reset", 100)
    s.upload("r.jsonl", lines)
    task_id = s.start("r.jsonl")
    time.sleep(0.5)
    req = urllib.request.Request(f"{slow.url}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=10):
        pass
    with pytest.raises(ClientError) as err:
        s.iot.describe_thing_registration_task(taskId=task_id)
    assert error_code(err) == "ResourceNotFoundException"
    time.sleep(0.5)  # the old task provisions nothing more
    assert not [t for t in s.iot.list_things()["things"] if t["thingName"].startswith("reset-")]

    s2 = Setup(slow, "reset")  # role and bucket again, after the reset
    s2.upload("r.jsonl", lines[:3])
    again = s2.start("r.jsonl")  # not refused: the forgotten task no longer counts
    assert s2.wait(again)["successCount"] == 3
