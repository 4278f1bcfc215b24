"""AWS IoT Jobs on the emulator: the control plane (boto3) and devices (paho-mqtt) playing the
Jobs MQTT API on the device gateway, with one AWS minute lasting one second (--jobs-minute 1).

Each device connects with its own certificate under a policy that allows only its own
thing's jobs topics (the device policy iotreg writes when jobs are configured).
"""

from __future__ import annotations

import json
import queue
import time
import urllib.request

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import clients_of, error_code, http_status, start_emulator
from test_gateway import (  # noqa: F401 (fixtures)
    ARN,
    THING,
    Client,
    clients,
    gateway,
    make_device,
    unique,
)

MINUTE = 1.0  # --jobs-minute
WAIT = 5.0

JOBS_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{ARN}:client/{THING}"},
        {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": f"{ARN}:topic/$aws/things/{THING}/jobs/*"},
        {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": f"{ARN}:topicfilter/$aws/things/{THING}/jobs/*"},
    ],
}

IOT_TRUST = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}],
})
FIRMWARE = {"operation": "firmware_update", "firmware": {"version": "2.0.0", "file": "fw.bin"}}


@pytest.fixture(scope="module")
def emulator():
    server = start_emulator("--jobs-minute", str(MINUTE))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def aws(emulator):
    return clients_of(emulator)


@pytest.fixture(scope="module")
def loose_iot(emulator):
    """An IoT client that sends out-of-range values (botocore would refuse some itself)."""
    import boto3

    return boto3.client("iot", endpoint_url=emulator.url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing",
                        config=Config(parameter_validation=False, retries={"total_max_attempts": 1}))


class JobsDevice:
    """A paho-mqtt device subscribed to its own thing's jobs topics."""

    def __init__(self, client: Client, thing: str) -> None:
        self.client = client
        self.thing = thing
        self.base = f"$aws/things/{thing}/jobs"
        assert client.subscribe(f"{self.base}/#") == [mqtt_granted(1)]

    def request(self, suffix: str, payload: dict | bytes | None = None) -> tuple[str, dict]:
        """Publish ``<base>/<suffix>``; ("accepted" | "rejected", answer)."""
        topic = f"{self.base}/{suffix}"
        self.client.publish(topic, b"" if payload is None else payload)
        got_topic, answer = expect_any(self.client, [f"{topic}/accepted", f"{topic}/rejected"])
        return got_topic.rsplit("/", 1)[-1], answer

    def start_next(self, **fields) -> dict:
        outcome, answer = self.request("start-next", fields)
        assert outcome == "accepted", answer
        return answer

    def update(self, job_id: str, status: str, **fields) -> tuple[str, dict]:
        return self.request(f"{job_id}/update", {"status": status, **fields})

    def notification(self, which: str = "notify-next", timeout: float = WAIT) -> dict:
        return json.loads(self.client.expect(f"{self.base}/{which}", timeout=timeout))


def mqtt_granted(qos: int):
    from paho.mqtt.reasoncodes import ReasonCode
    from paho.mqtt.packettypes import PacketTypes

    return ReasonCode(PacketTypes.SUBACK, identifier=qos)


def expect_any(client: Client, topics: list[str], timeout: float = WAIT) -> tuple[str, dict]:
    for index, (topic, payload) in enumerate(client.backlog):
        if topic in topics:
            del client.backlog[index]
            return topic, json.loads(payload)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no message on {topics} within {timeout}s; got {[t for t, _ in client.backlog]}")
        try:
            topic, payload = client.messages.get(timeout=remaining)
        except queue.Empty:
            continue
        if topic in topics:
            return topic, json.loads(payload)
        client.backlog.append((topic, payload))


@pytest.fixture
def devices(gateway, make_device, clients):
    """``devices(n)``: n things, each a connected paho device with the jobs policy."""

    def make(count: int) -> list[JobsDevice]:
        out = []
        for _ in range(count):
            device = make_device(policy=JOBS_POLICY)
            client = clients(gateway, device)
            assert client.connect(gateway["ports"]["mqtt"]) == 0
            out.append(JobsDevice(client, device.thing))
        return out

    return make


def thing_arn(name: str) -> str:
    return f"{ARN}:thing/{name}"


def things(aws, count: int) -> list[str]:
    names = [unique("thing") for _ in range(count)]
    for name in names:
        aws("iot").create_thing(thingName=name)
    return names


def group(aws, members: list[str], parent: str | None = None) -> tuple[str, str]:
    name = unique("grp")
    kwargs = {"parentGroupName": parent} if parent else {}
    arn = aws("iot").create_thing_group(thingGroupName=name, **kwargs)["thingGroupArn"]
    for member in members:
        aws("iot").add_thing_to_thing_group(thingGroupName=name, thingName=member)
    return name, arn


def create_job(aws, targets: list[str], document: dict | None = None, **kwargs) -> str:
    job_id = unique("job")
    aws("iot").create_job(jobId=job_id, targets=targets, document=json.dumps(document or FIRMWARE), **kwargs)
    return job_id


def describe(aws, job_id: str) -> dict:
    return aws("iot").describe_job(jobId=job_id)["job"]


def executions(aws, job_id: str, **kwargs) -> list[dict]:
    return aws("iot").list_job_executions_for_job(jobId=job_id, maxResults=250, **kwargs)["executionSummaries"]


def execution(aws, job_id: str, thing: str, **kwargs) -> dict:
    return aws("iot").describe_job_execution(jobId=job_id, thingName=thing, **kwargs)["execution"]


def eventually(check, timeout: float = WAIT, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


# -- devices complete a snapshot job ------------------------------------------------------------


def run_to_success(device: JobsDevice, job_id: str) -> None:
    started = device.start_next(statusDetails={"step": "downloading"}, clientToken="tok-1")
    assert started["clientToken"] == "tok-1"
    assert started["execution"]["jobId"] == job_id
    assert started["execution"]["status"] == "IN_PROGRESS"
    assert started["execution"]["statusDetails"] == {"step": "downloading"}
    assert started["execution"]["jobDocument"] == FIRMWARE
    outcome, answer = device.update(job_id, "SUCCEEDED", statusDetails={"firmware_version": "2.0.0"},
                                    includeJobExecutionState=True)
    assert outcome == "accepted", answer
    assert answer["executionState"]["status"] == "SUCCEEDED"
    # statusDetails merge: the step stays, the version is added
    assert answer["executionState"]["statusDetails"] == {"step": "downloading", "firmware_version": "2.0.0"}


def test_snapshot_job_to_three_things_completes(aws, devices):
    fleet = devices(3)
    job_id = create_job(aws, [thing_arn(d.thing) for d in fleet])
    for device in fleet:
        # notify-next arrives on creation, with the document
        note = device.notification("notify-next")
        assert note["execution"]["jobId"] == job_id
        assert note["execution"]["status"] == "QUEUED"
        assert note["execution"]["jobDocument"] == FIRMWARE
        listed = device.notification("notify")
        assert [j["jobId"] for j in listed["jobs"]["QUEUED"]] == [job_id]
    assert describe(aws, job_id)["jobProcessDetails"]["numberOfQueuedThings"] == 3
    for device in fleet:
        run_to_success(device, job_id)
        # nothing pending any more: notify-next without an execution
        assert "execution" not in device.notification("notify-next")
    job = describe(aws, job_id)
    assert job["status"] == "COMPLETED"
    assert job["jobProcessDetails"]["numberOfSucceededThings"] == 3
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 0
    assert "completedAt" in job
    record = execution(aws, job_id, fleet[0].thing)
    assert record["status"] == "SUCCEEDED"
    assert record["executionNumber"] == 1
    assert record["versionNumber"] == 3  # queued 1, IN_PROGRESS 2, SUCCEEDED 3
    assert record["statusDetails"]["detailsMap"]["firmware_version"] == "2.0.0"


def test_group_of_five_with_a_child_group(aws, devices):
    fleet = devices(5)
    parent, parent_arn = group(aws, [d.thing for d in fleet[:3]])
    group(aws, [d.thing for d in fleet[3:]], parent=parent)
    job_id = create_job(aws, [parent_arn])
    listed = executions(aws, job_id)
    assert sorted(e["thingArn"] for e in listed) == sorted(thing_arn(d.thing) for d in fleet)
    for device in fleet[:4]:
        run_to_success(device, job_id)
    device = fleet[4]
    assert device.start_next()["execution"]["jobId"] == job_id
    outcome, _ = device.update(job_id, "FAILED", statusDetails={"reason": "checksum mismatch"})
    assert outcome == "accepted"
    job = describe(aws, job_id)
    assert job["status"] == "COMPLETED"
    details = job["jobProcessDetails"]
    assert (details["numberOfSucceededThings"], details["numberOfFailedThings"]) == (4, 1)
    jobs = aws("iot").list_jobs(thingGroupName=parent)["jobs"]
    assert [j["jobId"] for j in jobs] == [job_id]


# -- rollout -------------------------------------------------------------------------------------


def test_rollout_maximum_per_minute(aws):
    names = things(aws, 20)
    job_id = create_job(aws, [thing_arn(n) for n in names],
                        jobExecutionsRolloutConfig={"maximumPerMinute": 10})
    first = len(executions(aws, job_id))
    job = describe(aws, job_id)
    assert first == 10
    assert job["isConcurrent"] is True
    assert job["jobProcessDetails"]["numberOfQueuedThings"] == 10
    assert "processingTargets" in job["jobProcessDetails"]
    time.sleep(0.5 * MINUTE)
    assert len(executions(aws, job_id)) == 10  # still the first minute
    eventually(lambda: _count_is(aws, job_id, 20), timeout=1.5 * MINUTE)
    job = describe(aws, job_id)
    assert job["isConcurrent"] is False
    assert "processingTargets" not in job["jobProcessDetails"]


def _count_is(aws, job_id: str, count: int) -> None:
    assert len(executions(aws, job_id)) == count


def test_exponential_rollout(aws):
    names = things(aws, 20)
    job_id = create_job(aws, [thing_arn(n) for n in names], jobExecutionsRolloutConfig={
        "exponentialRate": {"baseRatePerMinute": 2, "incrementFactor": 2,
                            "rateIncreaseCriteria": {"numberOfNotifiedThings": 2}}})
    start = time.monotonic()
    seen = []
    for minute in range(4):
        # the middle of each (scaled) minute: 2, then 2+4, 2+4+8, then the rest
        time.sleep(max(0.0, start + (minute + 0.5) * MINUTE - time.monotonic()))
        seen.append(len(executions(aws, job_id)))
    assert seen == [2, 6, 14, 20]


# -- abort ----------------------------------------------------------------------------------------


def test_abort_at_twenty_percent_failures(aws, devices):
    fleet = devices(8)
    job_id = create_job(aws, [thing_arn(d.thing) for d in fleet], abortConfig={"criteriaList": [
        {"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 20, "minNumberOfExecutedThings": 5}]})
    late = fleet[5]
    assert late.start_next()["execution"]["status"] == "IN_PROGRESS"
    for device in fleet[:4]:
        run_to_success(device, job_id)
    assert describe(aws, job_id)["status"] == "IN_PROGRESS"
    device = fleet[4]
    device.start_next()
    assert device.update(job_id, "FAILED", statusDetails={"reason": "flash error"})[0] == "accepted"
    job = describe(aws, job_id)
    assert job["status"] == "CANCELED"
    assert job["reasonCode"] == "ABORT_CRITERIA_MET"
    assert "FAILED" in job["comment"]
    assert job["forceCanceled"] is False
    details = job["jobProcessDetails"]
    assert details["numberOfCanceledThings"] == 2  # the two still QUEUED
    assert details["numberOfInProgressThings"] == 1  # left running
    for queued in fleet[6:]:
        assert execution(aws, job_id, queued.thing)["status"] == "CANCELED"
        assert "execution" not in queued.start_next()  # nothing to start any more
    # the IN_PROGRESS device may still finish its execution
    assert late.update(job_id, "SUCCEEDED")[0] == "accepted"
    assert describe(aws, job_id)["status"] == "CANCELED"


# -- timeouts and retries ---------------------------------------------------------------------------


def test_in_progress_timeout_and_retry(aws, devices):
    (device,) = devices(1)
    job_id = create_job(aws, [thing_arn(device.thing)], timeoutConfig={"inProgressTimeoutInMinutes": 1},
                        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "TIMED_OUT", "numberOfRetries": 1}]})
    device.notification("notify-next")
    started = device.start_next()["execution"]
    assert 0 < started["approximateSecondsBeforeTimedOut"] <= 60
    # the retry shows up as the next execution when the first times out
    note = device.notification("notify-next", timeout=MINUTE + WAIT)
    assert note["execution"]["executionNumber"] == 2
    assert note["execution"]["status"] == "QUEUED"
    first = execution(aws, job_id, device.thing, executionNumber=1)
    assert first["status"] == "TIMED_OUT"
    second = execution(aws, job_id, device.thing)
    assert (second["executionNumber"], second["status"]) == (2, "QUEUED")
    retries = {e["jobExecutionSummary"]["executionNumber"]: e["jobExecutionSummary"]["retryAttempt"]
               for e in executions(aws, job_id)}
    assert retries == {1: 0, 2: 1}
    assert describe(aws, job_id)["status"] == "IN_PROGRESS"
    assert device.start_next()["execution"]["executionNumber"] == 2
    eventually(lambda: _status_is(aws, job_id, device.thing, "TIMED_OUT"), timeout=MINUTE + WAIT)
    job = describe(aws, job_id)  # no retries left
    assert job["status"] == "COMPLETED"
    assert job["jobProcessDetails"]["numberOfTimedOutThings"] == 1


def _status_is(aws, job_id: str, thing: str, status: str) -> None:
    assert execution(aws, job_id, thing)["status"] == status


def test_failed_execution_is_retried(aws, devices):
    (device,) = devices(1)
    job_id = create_job(aws, [thing_arn(device.thing)],
                        jobExecutionsRetryConfig={"criteriaList": [{"failureType": "ALL", "numberOfRetries": 2}]})
    for attempt in (1, 2, 3):
        assert device.start_next()["execution"]["executionNumber"] == attempt
        assert device.update(job_id, "FAILED", statusDetails={"reason": f"try {attempt}"})[0] == "accepted"
    assert "execution" not in device.start_next()
    assert [e["jobExecutionSummary"]["status"] for e in executions(aws, job_id)] == ["FAILED"] * 3
    assert describe(aws, job_id)["status"] == "COMPLETED"


def test_step_timeout(aws, devices):
    timed, kept = devices(2)
    job_id = create_job(aws, [thing_arn(timed.thing), thing_arn(kept.thing)])
    assert timed.start_next(stepTimeoutInMinutes=1)["execution"]["approximateSecondsBeforeTimedOut"] > 0
    kept.start_next(stepTimeoutInMinutes=1)
    # -1 discards the step timer
    outcome, _ = kept.update(job_id, "IN_PROGRESS", stepTimeoutInMinutes=-1, statusDetails={"step": "applying"})
    assert outcome == "accepted"
    eventually(lambda: _status_is(aws, job_id, timed.thing, "TIMED_OUT"), timeout=MINUTE + WAIT)
    time.sleep(0.5 * MINUTE)
    assert execution(aws, job_id, kept.thing)["status"] == "IN_PROGRESS"
    outcome, answer = timed.update(job_id, "SUCCEEDED")
    assert outcome == "rejected"
    assert answer["code"] == "InvalidStateTransition"
    assert answer["executionState"]["status"] == "TIMED_OUT"


# -- cancel and delete ----------------------------------------------------------------------------------


def test_cancel_without_and_with_force(aws, devices):
    busy, idle = devices(2)
    targets = [thing_arn(busy.thing), thing_arn(idle.thing)]
    soft = create_job(aws, targets)
    busy.start_next()
    answer = aws("iot").cancel_job(jobId=soft, reasonCode="OPERATOR", comment="stop the rollout")
    assert answer["jobId"] == soft
    job = describe(aws, soft)
    assert (job["status"], job["reasonCode"], job["comment"], job["forceCanceled"]) == (
        "CANCELED", "OPERATOR", "stop the rollout", False)
    assert execution(aws, soft, idle.thing)["status"] == "CANCELED"
    assert execution(aws, soft, busy.thing)["status"] == "IN_PROGRESS"
    assert busy.update(soft, "SUCCEEDED")[0] == "accepted"

    hard = create_job(aws, targets)
    busy.start_next()
    aws("iot").cancel_job(jobId=hard, force=True)
    record = execution(aws, hard, busy.thing)
    assert (record["status"], record["forceCanceled"]) == ("CANCELED", True)
    assert describe(aws, hard)["forceCanceled"] is True
    outcome, answer = busy.update(hard, "SUCCEEDED")
    assert outcome == "rejected"
    assert answer["code"] == "InvalidStateTransition"
    assert answer["executionState"]["status"] == "CANCELED"


def test_cancel_and_delete_job_execution(aws, devices):
    (device,) = devices(1)
    job_id = create_job(aws, [thing_arn(device.thing)])
    device.start_next()
    iot = aws("iot")
    with pytest.raises(ClientError) as refused:
        iot.cancel_job_execution(jobId=job_id, thingName=device.thing)
    assert (error_code(refused), http_status(refused)) == ("InvalidStateTransitionException", 409)
    with pytest.raises(ClientError) as refused:
        iot.cancel_job_execution(jobId=job_id, thingName=device.thing, force=True, expectedVersion=7)
    assert error_code(refused) == "VersionConflictException"
    with pytest.raises(ClientError) as refused:
        iot.delete_job_execution(jobId=job_id, thingName=device.thing, executionNumber=1)
    assert error_code(refused) == "InvalidStateTransitionException"
    iot.cancel_job_execution(jobId=job_id, thingName=device.thing, force=True, expectedVersion=2,
                             statusDetails={"why": "operator"})
    record = execution(aws, job_id, device.thing)
    assert (record["status"], record["forceCanceled"]) == ("CANCELED", True)
    assert record["statusDetails"]["detailsMap"] == {"why": "operator"}
    assert describe(aws, job_id)["status"] == "COMPLETED"
    iot.delete_job_execution(jobId=job_id, thingName=device.thing, executionNumber=1)
    with pytest.raises(ClientError) as missing:
        execution(aws, job_id, device.thing)
    assert (error_code(missing), http_status(missing)) == ("ResourceNotFoundException", 404)


def test_delete_job(aws, devices):
    (device,) = devices(1)
    job_id = create_job(aws, [thing_arn(device.thing)])
    assert device.notification("notify-next")["execution"]["jobId"] == job_id
    device.start_next()
    iot = aws("iot")
    with pytest.raises(ClientError) as refused:
        iot.delete_job(jobId=job_id)
    assert (error_code(refused), http_status(refused)) == ("InvalidStateTransitionException", 409)
    iot.delete_job(jobId=job_id, force=True)
    assert "execution" not in device.notification("notify-next")
    outcome, answer = device.update(job_id, "SUCCEEDED")
    assert (outcome, answer["code"]) == ("rejected", "ResourceNotFound")

    def gone() -> None:
        try:
            status = describe(aws, job_id)["status"]
        except ClientError as missing:
            assert missing.response["Error"]["Code"] == "ResourceNotFoundException"
        else:
            raise AssertionError(f"job still there ({status})")

    eventually(gone)
    assert job_id not in [j["jobId"] for j in iot.list_jobs(maxResults=250)["jobs"]]


# -- continuous jobs ----------------------------------------------------------------------------------------


def test_continuous_job_follows_the_group(aws, devices):
    first, joiner = devices(2)
    name, arn = group(aws, [first.thing])
    job_id = create_job(aws, [arn], targetSelection="CONTINUOUS")
    run_to_success(first, job_id)
    assert describe(aws, job_id)["status"] == "IN_PROGRESS"  # never COMPLETED
    aws("iot").add_thing_to_thing_group(thingGroupName=name, thingName=joiner.thing)
    assert execution(aws, job_id, joiner.thing)["status"] == "QUEUED"
    assert joiner.notification("notify-next")["execution"]["jobId"] == job_id
    aws("iot").remove_thing_from_thing_group(thingGroupName=name, thingName=joiner.thing)
    assert execution(aws, job_id, joiner.thing)["status"] == "REMOVED"
    assert "execution" not in joiner.notification("notify-next")
    assert describe(aws, job_id)["jobProcessDetails"]["numberOfRemovedThings"] == 1
    # rejoining gets a new execution
    aws("iot").add_thing_to_thing_group(thingGroupName=name, thingName=joiner.thing)
    assert execution(aws, job_id, joiner.thing)["executionNumber"] == 2
    run_to_success(joiner, job_id)
    assert describe(aws, job_id)["status"] == "IN_PROGRESS"
    assert [j["jobId"] for j in aws("iot").list_jobs(targetSelection="CONTINUOUS", maxResults=250)["jobs"]].count(job_id) == 1


def test_deleted_thing_execution_is_removed(aws):
    names = things(aws, 2)
    job_id = create_job(aws, [thing_arn(n) for n in names])
    aws("iot").delete_thing(thingName=names[0])
    assert execution(aws, job_id, names[0])["status"] == "REMOVED"
    assert describe(aws, job_id)["jobProcessDetails"]["numberOfRemovedThings"] == 1


# -- presigned URLs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def firmware(aws):
    bucket = unique("firmware")
    aws("s3").create_bucket(Bucket=bucket)
    blob = bytes(range(256)) * 40
    aws("s3").put_object(Bucket=bucket, Key="fw/2.0.0/fw.bin", Body=blob)
    return bucket, "fw/2.0.0/fw.bin", blob


def test_presigned_urls_are_substituted_and_download(aws, devices, firmware, emulator):
    bucket, key, blob = firmware
    role = aws("iam").create_role(RoleName=unique("s3dl"), AssumeRolePolicyDocument=IOT_TRUST)["Role"]["Arn"]
    document = {
        "operation": "firmware_update",
        "firmware": {"url": f"${{aws:iot:s3-presigned-url-v2:https://s3.us-east-1.amazonaws.com/{bucket}/{key}}}"},
        "legacy": f"${{aws:iot:s3-presigned-url:https://{bucket}.s3.amazonaws.com/{key}}}",
    }
    (device,) = devices(1)
    job_id = create_job(aws, [thing_arn(device.thing)], document,
                        presignedUrlConfig={"roleArn": role, "expiresInSec": 300})
    note = device.notification("notify-next")["execution"]["jobDocument"]
    started = device.start_next()["execution"]["jobDocument"]
    for doc in (note, started):
        for url in (doc["firmware"]["url"], doc["legacy"]):
            assert url.startswith(f"{emulator.url}/{bucket}/{key}?")
            assert "X-Amz-Signature=" in url and "X-Amz-Expires=300" in url
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert answer.read() == blob
    # the control plane keeps the placeholders
    assert json.loads(aws("iot").get_job_document(jobId=job_id)["document"]) == document


def test_presigned_url_without_a_usable_role(aws, devices, firmware):
    bucket, key, _ = firmware
    document = {"url": f"${{aws:iot:s3-presigned-url-v2:https://s3.us-east-1.amazonaws.com/{bucket}/{key}}}"}
    lambda_trust = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
    untrusting = aws("iam").create_role(RoleName=unique("notiot"), AssumeRolePolicyDocument=lambda_trust)["Role"]["Arn"]
    for role in (f"arn:aws:iam::123456789012:role/{unique('missing')}", untrusting):
        (device,) = devices(1)
        job_id = create_job(aws, [thing_arn(device.thing)], document, presignedUrlConfig={"roleArn": role})
        note = device.notification("notify-next")
        assert note["execution"]["jobId"] == job_id
        assert "jobDocument" not in note["execution"]
        outcome, answer = device.request("start-next", {"clientToken": "c"})
        assert outcome == "rejected"
        assert (answer["code"], answer["clientToken"]) == ("InvalidRequest", "c")
        assert role in answer["message"]
        assert execution(aws, job_id, device.thing)["status"] == "QUEUED"  # nothing started


# -- the device API's other answers -------------------------------------------------------------------------


def test_device_api_answers(aws, devices):
    (device,) = devices(1)
    first = create_job(aws, [thing_arn(device.thing)])
    second = create_job(aws, [thing_arn(device.thing)], {"operation": "config", "set": {"reporting_interval": 30}})
    outcome, pending = device.request("get", {"clientToken": "list"})
    assert outcome == "accepted" and pending["clientToken"] == "list"
    assert [j["jobId"] for j in pending["queuedJobs"]] == [first, second]
    assert pending["inProgressJobs"] == []
    outcome, described = device.request("$next/get", {})
    assert described["execution"]["jobId"] == first and "jobDocument" in described["execution"]
    outcome, described = device.request(f"{second}/get", {"includeJobDocument": False})
    assert outcome == "accepted" and "jobDocument" not in described["execution"]
    # starting the second one explicitly makes it the next one (IN_PROGRESS first)
    outcome, answer = device.update(second, "IN_PROGRESS", expectedVersion=1, includeJobDocument=True)
    assert outcome == "accepted"
    assert answer["jobDocument"] == {"operation": "config", "set": {"reporting_interval": 30}}
    assert device.notification("notify-next")["execution"]["jobId"] == first  # on creation
    assert device.notification("notify-next")["execution"]["jobId"] == second
    outcome, pending = device.request("get")
    assert [j["jobId"] for j in pending["inProgressJobs"]] == [second]
    # wrong version
    outcome, answer = device.update(second, "SUCCEEDED", expectedVersion=1, clientToken="v")
    assert (outcome, answer["code"], answer["clientToken"]) == ("rejected", "VersionMismatch", "v")
    assert answer["executionState"]["versionNumber"] == 2
    # bad requests
    device.client.publish(f"{device.base}/start-next", b"{not json")
    assert expect_any(device.client, [f"{device.base}/start-next/rejected"])[1]["code"] == "InvalidJson"
    assert device.request("frobnicate", {})[1]["code"] == "InvalidTopic"
    assert device.request(f"{second}/update", {"status": "DONE"})[1]["code"] == "InvalidRequest"
    assert device.request(f"{second}/update", {"status": "QUEUED"})[1]["code"] == "InvalidStateTransition"
    assert device.request("start-next", {"stepTimeoutInMinutes": 0})[1]["code"] == "InvalidRequest"
    assert device.request("nope/get", {})[1]["code"] == "ResourceNotFound"
    for job_id in (first, second):
        assert device.update(job_id, "SUCCEEDED")[0] == "accepted"
    assert device.request(f"{first}/get", {})[1]["code"] == "TerminalStateReached"
    outcome, answer = device.request("start-next")
    assert outcome == "accepted" and "execution" not in answer and "timestamp" in answer
    listed = aws("iot").list_job_executions_for_thing(thingName=device.thing, maxResults=1)
    assert len(listed["executionSummaries"]) == 1 and listed["nextToken"]
    rest = aws("iot").list_job_executions_for_thing(thingName=device.thing, nextToken=listed["nextToken"])
    assert {s["jobId"] for s in listed["executionSummaries"] + rest["executionSummaries"]} == {first, second}


def test_a_thing_cannot_touch_another_things_execution(aws, devices):
    mallory, victim = devices(2)
    job_id = create_job(aws, [thing_arn(victim.thing)])
    mallory.client.publish(f"$aws/things/{victim.thing}/jobs/{job_id}/update", json.dumps({"status": "SUCCEEDED"}))
    assert mallory.client.disconnected.wait(WAIT)  # iot:Publish denied: connection closed
    record = execution(aws, job_id, victim.thing)
    assert (record["status"], record["versionNumber"]) == ("QUEUED", 1)


# -- control plane: inputs, templates, lists -----------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"jobExecutionsRolloutConfig": {"maximumPerMinute": 0}},
        {"jobExecutionsRolloutConfig": {"maximumPerMinute": 1001}},
        {"jobExecutionsRolloutConfig": {"exponentialRate": {"baseRatePerMinute": 0, "incrementFactor": 2,
                                                            "rateIncreaseCriteria": {"numberOfNotifiedThings": 1}}}},
        {"jobExecutionsRolloutConfig": {"exponentialRate": {"baseRatePerMinute": 5, "incrementFactor": 1.0,
                                                            "rateIncreaseCriteria": {"numberOfNotifiedThings": 1}}}},
        {"jobExecutionsRolloutConfig": {"exponentialRate": {"baseRatePerMinute": 5, "incrementFactor": 5.5,
                                                            "rateIncreaseCriteria": {"numberOfNotifiedThings": 1}}}},
        {"jobExecutionsRolloutConfig": {"exponentialRate": {"baseRatePerMinute": 5, "incrementFactor": 1.55,
                                                            "rateIncreaseCriteria": {"numberOfNotifiedThings": 1}}}},
        {"jobExecutionsRolloutConfig": {"exponentialRate": {"baseRatePerMinute": 5, "incrementFactor": 2,
                                                            "rateIncreaseCriteria": {}}}},
        {"abortConfig": {"criteriaList": [{"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 101,
                                           "minNumberOfExecutedThings": 1}]}},
        {"abortConfig": {"criteriaList": [{"failureType": "FAILED", "action": "CANCEL", "thresholdPercentage": 10,
                                           "minNumberOfExecutedThings": 0}]}},
        {"abortConfig": {"criteriaList": [{"failureType": "LOST", "action": "CANCEL", "thresholdPercentage": 10,
                                           "minNumberOfExecutedThings": 1}]}},
        {"abortConfig": {"criteriaList": [{"failureType": "FAILED", "action": "PAUSE", "thresholdPercentage": 10,
                                           "minNumberOfExecutedThings": 1}]}},
        {"abortConfig": {"criteriaList": []}},
        {"timeoutConfig": {"inProgressTimeoutInMinutes": 0}},
        {"timeoutConfig": {"inProgressTimeoutInMinutes": 10081}},
        {"jobExecutionsRetryConfig": {"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 11}]}},
        {"jobExecutionsRetryConfig": {"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 6},
                                                       {"failureType": "TIMED_OUT", "numberOfRetries": 6}]}},
        {"jobExecutionsRetryConfig": {"criteriaList": [{"failureType": "REJECTED", "numberOfRetries": 1}]}},
        {"presignedUrlConfig": {"roleArn": "arn:aws:iam::123456789012:role/r", "expiresInSec": 59}},
        {"presignedUrlConfig": {"roleArn": "arn:aws:iam::123456789012:role/r", "expiresInSec": 3601}},
        {"targetSelection": "SOMETIMES"},
        {"document": "{not json"},
        {"document": json.dumps({"pad": "x" * 32768})},
        {"document": None},
        {"documentSource": "https://s3.amazonaws.com/no-such-bucket/doc.json"},
        {"jobId": "bad id!"},
        {"targets": []},
    ],
)
def test_bad_create_job_input_is_invalid_request(aws, loose_iot, change):
    (name,) = things(aws, 1)
    request = {"jobId": unique("bad"), "targets": [thing_arn(name)], "document": json.dumps(FIRMWARE)}
    request.update(change)
    request = {k: v for k, v in request.items() if v is not None}
    with pytest.raises(ClientError) as refused:
        loose_iot.create_job(**request)
    assert (error_code(refused), http_status(refused)) == ("InvalidRequestException", 400)


def test_create_job_conflicts_and_missing_targets(aws):
    (name,) = things(aws, 1)
    job_id = create_job(aws, [thing_arn(name)])
    with pytest.raises(ClientError) as duplicate:
        aws("iot").create_job(jobId=job_id, targets=[thing_arn(name)], document="{}")
    assert (error_code(duplicate), http_status(duplicate)) == ("ResourceAlreadyExistsException", 409)
    for target in (thing_arn(unique("ghost")), f"{ARN}:thinggroup/{unique('ghost')}"):
        with pytest.raises(ClientError) as missing:
            aws("iot").create_job(jobId=unique("job"), targets=[target], document="{}")
        assert (error_code(missing), http_status(missing)) == ("ResourceNotFoundException", 404)
    for call in (lambda: describe(aws, unique("nojob")), lambda: aws("iot").get_job_document(jobId=unique("nojob")),
                 lambda: aws("iot").cancel_job(jobId=unique("nojob")),
                 lambda: aws("iot").describe_job_template(jobTemplateId=unique("notpl"))):
        with pytest.raises(ClientError) as missing:
            call()
        assert error_code(missing) == "ResourceNotFoundException"


def test_document_source_and_job_templates(aws, firmware):
    bucket, _, _ = firmware
    aws("s3").put_object(Bucket=bucket, Key="jobs/config.json", Body=json.dumps({"operation": "config"}).encode())
    source = f"https://s3.us-east-1.amazonaws.com/{bucket}/jobs/config.json"
    iot = aws("iot")
    role = "arn:aws:iam::123456789012:role/download"
    configs = {
        "presignedUrlConfig": {"roleArn": role, "expiresInSec": 600},
        "jobExecutionsRolloutConfig": {"maximumPerMinute": 50},
        "abortConfig": {"criteriaList": [{"failureType": "ALL", "action": "CANCEL", "thresholdPercentage": 25.5,
                                          "minNumberOfExecutedThings": 10}]},
        "timeoutConfig": {"inProgressTimeoutInMinutes": 30},
        "jobExecutionsRetryConfig": {"criteriaList": [{"failureType": "FAILED", "numberOfRetries": 3}]},
    }
    template_id = unique("tpl")
    created = iot.create_job_template(jobTemplateId=template_id, description="firmware", documentSource=source, **configs)
    assert created["jobTemplateArn"].endswith(f":jobtemplate/{template_id}")
    described = iot.describe_job_template(jobTemplateId=template_id)
    for key, value in configs.items():
        assert described[key] == value, key
    assert (described["documentSource"], described["description"]) == (source, "firmware")
    with pytest.raises(ClientError) as conflict:
        iot.create_job_template(jobTemplateId=template_id, description="again", document="{}")
    assert (error_code(conflict), http_status(conflict)) == ("ConflictException", 409)

    (name,) = things(aws, 1)
    job_id = unique("job")
    iot.create_job(jobId=job_id, targets=[thing_arn(name)], jobTemplateArn=created["jobTemplateArn"],
                   timeoutConfig={"inProgressTimeoutInMinutes": 5})
    job = describe(aws, job_id)
    assert job["jobTemplateArn"] == created["jobTemplateArn"]
    assert job["timeoutConfig"] == {"inProgressTimeoutInMinutes": 5}  # the request wins
    for key in ("presignedUrlConfig", "jobExecutionsRolloutConfig", "abortConfig", "jobExecutionsRetryConfig"):
        assert job[key] == configs[key], key
    assert iot.describe_job(jobId=job_id)["documentSource"] == source
    assert json.loads(iot.get_job_document(jobId=job_id)["document"]) == {"operation": "config"}

    more = [unique("tpl") for _ in range(3)]
    for other in more:
        iot.create_job_template(jobTemplateId=other, description="other", document="{}")
    ids, token = [], None
    while True:
        page = iot.list_job_templates(maxResults=2, **({"nextToken": token} if token else {}))
        assert len(page["jobTemplates"]) <= 2
        ids += [t["jobTemplateId"] for t in page["jobTemplates"]]
        token = page.get("nextToken")
        if not token:
            break
    assert set(more + [template_id]) <= set(ids)
    iot.delete_job_template(jobTemplateId=template_id)
    with pytest.raises(ClientError) as missing:
        iot.delete_job_template(jobTemplateId=template_id)
    assert error_code(missing) == "ResourceNotFoundException"


def test_list_jobs_filters_and_pages(aws):
    names = things(aws, 1)
    mine = [create_job(aws, [thing_arn(names[0])]) for _ in range(3)]
    aws("iot").cancel_job(jobId=mine[0])
    iot = aws("iot")
    canceled = [j["jobId"] for j in iot.list_jobs(status="CANCELED", maxResults=250)["jobs"]]
    assert mine[0] in canceled and mine[1] not in canceled
    seen, token = [], None
    while True:
        page = iot.list_jobs(maxResults=2, **({"nextToken": token} if token else {}))
        seen += [j["jobId"] for j in page["jobs"]]
        token = page.get("nextToken")
        if not token:
            break
    assert set(mine) <= set(seen) and len(seen) == len(set(seen))
    queued = iot.list_job_executions_for_job(jobId=mine[1], status="QUEUED")["executionSummaries"]
    assert [e["thingArn"] for e in queued] == [thing_arn(names[0])]


def test_job_execution_metrics(aws, devices):
    (device,) = devices(1)
    job_id = create_job(aws, [thing_arn(device.thing)])
    run_to_success(device, job_id)
    cloudwatch = aws("cloudwatch")

    def recorded() -> None:
        metrics = cloudwatch.list_metrics(Namespace="AWS/IoT", Dimensions=[{"Name": "JobId", "Value": job_id}])
        names = {m["MetricName"] for m in metrics["Metrics"]}
        assert {"QueuedJobExecutionCount", "InProgressJobExecutionCount", "SuccededJobExecutionCount",
                "SuccededJobExecutionTotalCount"} <= names, names

    eventually(recorded, timeout=3)


def test_reset_clears_jobs():
    server = start_emulator("--jobs-minute", "1")
    try:
        iot = server.client("iot")
        iot.create_thing(thingName="t1")
        iot.create_job(jobId="j1", targets=[thing_arn("t1")], document="{}")
        iot.create_job_template(jobTemplateId="tp1", description="t", document="{}")
        urllib.request.urlopen(urllib.request.Request(server.url + "/moto-api/reset", method="POST"), timeout=5)
        assert iot.list_jobs()["jobs"] == []
        assert iot.list_job_templates()["jobTemplates"] == []
        with pytest.raises(ClientError) as missing:
            iot.describe_job(jobId="j1")
        assert error_code(missing) == "ResourceNotFoundException"
        iot.create_thing(thingName="t1")
        iot.create_job(jobId="j1", targets=[thing_arn("t1")], document="{}")  # the id is free again
        assert iot.describe_job(jobId="j1")["job"]["jobProcessDetails"]["numberOfQueuedThings"] == 1
    finally:
        server.stop()


def test_answers_go_to_the_requester_only_subscribed_or_not(aws, gateway, make_device, clients, devices):
    from test_gateway import OBSERVER_POLICY

    (device,) = devices(1)
    observer = clients(gateway, make_device(policy=OBSERVER_POLICY))
    assert observer.connect(gateway["ports"]["mqtt"]) == 0
    observer.subscribe(f"{device.base}/#")
    # a second connection of another thing, not subscribed to anything, asks about its own jobs
    silent_device = make_device(policy=JOBS_POLICY)
    silent = clients(gateway, silent_device)
    assert silent.connect(gateway["ports"]["mqtt"]) == 0
    job_id = create_job(aws, [thing_arn(device.thing), thing_arn(silent_device.thing)])
    silent.publish(f"$aws/things/{silent_device.thing}/jobs/get", {"clientToken": "unsubscribed"})
    answer = json.loads(silent.expect(f"$aws/things/{silent_device.thing}/jobs/get/accepted"))
    assert ([j["jobId"] for j in answer["queuedJobs"]], answer["clientToken"]) == ([job_id], "unsubscribed")
    # notifications reach every subscriber; answers only the requester
    assert json.loads(observer.expect(f"{device.base}/notify-next"))["execution"]["jobId"] == job_id
    assert device.request("get")[0] == "accepted"
    observer.nothing_on(f"{device.base}/get")
    observer.nothing_on(f"{device.base}/get/accepted")


def test_thing_provisioned_into_the_group_joins_a_continuous_job(aws):
    name, arn = group(aws, [])
    job_id = create_job(aws, [arn], targetSelection="CONTINUOUS")
    bucket = unique("bulk")
    aws("s3").create_bucket(Bucket=bucket)
    thing = unique("bulkthing")
    aws("s3").put_object(Bucket=bucket, Key="input.json", Body=json.dumps({"ThingName": thing}).encode())
    role = aws("iam").create_role(RoleName=unique("reg"), AssumeRolePolicyDocument=IOT_TRUST)["Role"]["Arn"]
    template = {"Parameters": {"ThingName": {"Type": "String"}}, "Resources": {"thing": {
        "Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}, "ThingGroups": [name]}}}}
    task = aws("iot").start_thing_registration_task(templateBody=json.dumps(template), inputFileBucket=bucket,
                                                    inputFileKey="input.json", roleArn=role)["taskId"]

    def joined() -> None:
        status = aws("iot").describe_thing_registration_task(taskId=task)["status"]
        assert status == "Completed", status
        assert execution(aws, job_id, thing)["status"] == "QUEUED"

    eventually(joined)
