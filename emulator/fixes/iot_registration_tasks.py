"""Fix: IoT bulk registration (thing registration tasks), which moto 5.2.1 lacks.

Operations added to moto's IoT service (rest-json; moto dispatches a request to
the ``IoTResponse`` method named after the operation that botocore's model
matches for the method + path, so each is one method here)::

    StartThingRegistrationTask        POST /thing-registration-tasks
    DescribeThingRegistrationTask     GET  /thing-registration-tasks/{taskId}
    ListThingRegistrationTasks        GET  /thing-registration-tasks?status&maxResults&nextToken
    ListThingRegistrationTaskReports  GET  /thing-registration-tasks/{taskId}/reports?reportType
    StopThingRegistrationTask         PUT  /thing-registration-tasks/{taskId}/cancel

What AWS does (confirmed)
    * Bulk registration takes a provisioning template, an S3 bucket and key
      and a role ARN; the input object is newline-delimited JSON, each line
      the parameter values of one device ("Bulk registration", IoT developer
      guide, docs.aws.amazon.com/iot/latest/developerguide/bulk-provisioning.html).
    * "Only one bulk registration operation task can run at a time (per
      account)" (same page; the IoT limits page: "Allowed registration tasks:
      1"); "Maximum line length 256K: each line in an Amazon S3 input JSON file
      cannot exceed 256K in length" (AWS IoT limits, "Bulk Thing Registration
      Limits").
    * Request/response shapes, statuses InProgress | Completed | Failed |
      Cancelled | Cancelling, maxResults 1..250, templateBody at most 10240
      characters, taskId at most 40 characters; StartThingRegistrationTask's
      only client error is InvalidRequestException (HTTP 400);
      StopThingRegistrationTask also has ResourceNotFoundException (404)
      (IoT API reference pages of the five operations).
    * A RESULTS report line is ``{"offset": N, "response": {"CertificatePem":
      "...", "ResourceArns": {"certificate": arn, "thing": arn, "policy":
      arn}}}`` (the AWS IoT device management workshop's bulk-result.py reads
      ``response.CertificatePem`` and ``response.ResourceArns.thing``).
    * The role is assumed by AWS IoT (its trust policy names the service
      principal ``iot.amazonaws.com``; the managed policy
      AWSIoTThingsRegistration grants what registration needs).
    * Report ``resourceLinks`` are URLs (presigned S3 URLs into a bucket AWS
      owns) that a client downloads with a plain GET.

What the emulator does (and what is guessed)
    * StartThingRegistrationTask checks, in this order, and answers
      InvalidRequestException (400) with these messages (the messages are
      guessed; the error code is the only one the model allows):
      the template body is JSON with a Resources object, at most 10240
      characters ("The template body is not valid: ..."); the role exists in
      IAM ("The role <arn> does not exist") and its trust policy lets
      ``iot.amazonaws.com`` call sts:AssumeRole ("The role <arn> cannot be
      assumed by AWS IoT"; its permissions are not checked); the input object
      exists in the emulator's S3 ("The input file s3://<bucket>/<key> does
      not exist"); no task of the account is InProgress or Cancelling
      ("A thing registration task is already in progress in this account:
      <taskId>").  Then it answers ``{"taskId": <uuid4>}`` at once.
    * The task runs on a background thread: it reads the object again, and
      for each line (blank lines are skipped but still count for ``offset``,
      the 0-based line number -- guessed) renders the template with the
      line's parameters and applies it (``emulator/provisioning``: the
      certificate from the CSR through CreateCertificateFromCsr's code path,
      the thing, the policy, the attachments, all or nothing per line).  A
      line that is not a JSON object, is longer than 256 KiB or fails to
      render/apply goes to ERRORS as ``{"offset": N, "errorCode": "<AWS
      error code>", "errorMessage": "..."}`` (this shape is guessed) and
      only that line fails.
    * Pace: ``IOTREG_EMULATOR_REGISTRATION_RATE`` (lines per second, read at
      each start; unset, empty or 0 = as fast as possible).  AWS paces tasks
      itself; a slow rate lets a test see InProgress and stop a task.
    * Reports are written when the task ends (Completed, Cancelled, or Failed
      part-way) into the emulator's S3, bucket ``REPORT_BUCKET`` of the account
      (created on first use), key ``<taskId>/<results|errors>/<n>.json``, at
      most ``REPORT_CHUNK`` lines per object.  ListThingRegistrationTaskReports
      returns one link per object: a path-style presigned GET URL,
      ``http://<Host of the StartThingRegistrationTask request>/<bucket>/<key>
      ?X-Amz-Algorithm=...&X-Amz-Signature=...`` (signed in-process with the
      fake credentials, valid 7 days), that a plain GET downloads; no link
      while the task runs, and no ERRORS link when no line failed (guessed:
      AWS's timing of report objects is not documented).
    * DescribeThingRegistrationTask: ``percentageProgress`` is lines done /
      lines in the file (0..100), ``successCount``/``failureCount`` count lines,
      ``message`` says why a task Failed (input unreadable at run time);
      creationDate/lastModifiedDate are epoch seconds.  An unknown taskId is
      ResourceNotFoundException (404) for Describe and Stop, and
      InvalidRequestException for ListThingRegistrationTaskReports (its
      model has no ResourceNotFoundException).
    * StopThingRegistrationTask of an InProgress task: Cancelling at once,
      Cancelled once the line in hand is done and the reports are written;
      of a task that is not InProgress: InvalidRequestException (guessed).
    * ListThingRegistrationTasks: task ids, newest first, filtered by
      ``status``; ``nextToken`` is an opaque offset.
    * ``/moto-api/reset`` stops every task (its thread ends after the line in
      hand and writes nothing) and forgets it: tasks live on the IoT backend,
      and IoTBackend.reset is wrapped to stop them first.
    * Tasks are per account/region (as the API), "one running" is per account.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from ._util import patch

STORE = "_emulator_registration_tasks"
RATE_ENV = "IOTREG_EMULATOR_REGISTRATION_RATE"
REPORT_CHUNK = 1000  # lines per report object
MAX_LINE = 256 * 1024
MAX_TEMPLATE = 10240
LINK_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may be valid
STATUSES = ("InProgress", "Completed", "Failed", "Cancelled", "Cancelling")


def report_bucket(account: str) -> str:
    """The emulator's bucket for task reports (AWS uses a bucket of its own)."""
    return f"iot-registration-reports-{account}"


@dataclass
class Task:
    task_id: str
    account: str
    region: str
    template_body: str
    bucket: str
    key: str
    role_arn: str
    base_url: str
    backend: Any = None  # the IoT backend it was started on (reset replaces it)
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)
    status: str = "InProgress"
    success: int = 0
    failure: int = 0
    progress: int = 0
    message: str | None = None
    links: dict[str, list[str]] = field(default_factory=lambda: {"RESULTS": [], "ERRORS": []})
    stop: threading.Event = field(default_factory=threading.Event)
    forgotten: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self) -> dict:
        with self.lock:
            out = {
                "taskId": self.task_id,
                "creationDate": self.created,
                "lastModifiedDate": self.modified,
                "templateBody": self.template_body,
                "inputFileBucket": self.bucket,
                "inputFileKey": self.key,
                "roleArn": self.role_arn,
                "status": self.status,
                "successCount": self.success,
                "failureCount": self.failure,
                "percentageProgress": self.progress,
            }
            if self.message:
                out["message"] = self.message
            return out

    def set(self, **changes) -> None:
        with self.lock:
            for name, value in changes.items():
                setattr(self, name, value)
            self.modified = time.time()


_running_lock = threading.Lock()
_running: dict[str, Task] = {}  # account -> its task that is InProgress/Cancelling


def tasks(backend) -> dict[str, Task]:
    """The tasks of one IoT backend, oldest first (kept on it, so reset clears them)."""
    store = backend.__dict__.get(STORE)
    if store is None:
        with _running_lock:
            store = backend.__dict__.get(STORE)
            if store is None:
                store = {}
                setattr(backend, STORE, store)
    return store


def _invalid(message: str):
    from moto.iot.exceptions import InvalidRequestException

    return InvalidRequestException(message)


def _rate() -> float:
    try:
        return max(0.0, float(os.environ.get(RATE_ENV) or 0))
    except ValueError:
        return 0.0


# ---------------------------------------------------------------- checks


def _check_template(body: Any) -> str:
    if not isinstance(body, str):
        raise _invalid("The template body is not valid: templateBody is required")
    if len(body) > MAX_TEMPLATE:
        raise _invalid(f"The template body is not valid: longer than {MAX_TEMPLATE} characters")
    try:
        document = json.loads(body)
    except ValueError as error:
        raise _invalid(f"The template body is not valid: not JSON ({error})")
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise _invalid("The template body is not valid: it has no Resources object")
    return body


def _trust_document(role) -> dict:
    document = role.assume_role_policy_document
    if isinstance(document, str):
        text = document if document.lstrip().startswith("{") else unquote(document)
        try:
            document = json.loads(text)
        except ValueError:
            return {}
    return document if isinstance(document, dict) else {}


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _check_role(account: str, role_arn: Any) -> str:
    from moto.iam.models import iam_backends

    if not isinstance(role_arn, str) or not role_arn:
        raise _invalid("roleArn is required")
    try:
        role = iam_backends[account]["global"].get_role_by_arn(role_arn)
    except Exception:
        raise _invalid(f"The role {role_arn} does not exist")
    for statement in _as_list(_trust_document(role).get("Statement") or []):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        actions = [str(a).lower() for a in _as_list(statement.get("Action") or [])]
        if not any(a in ("sts:assumerole", "sts:*", "*") for a in actions):
            continue
        principal = statement.get("Principal") or {}
        services = _as_list(principal.get("Service") or []) if isinstance(principal, dict) else []
        if "iot.amazonaws.com" in services:
            return role_arn
    raise _invalid(f"The role {role_arn} cannot be assumed by AWS IoT")


def _s3(account: str):
    from moto.s3.models import s3_backends

    return s3_backends[account]["aws"]


def _read_input(account: str, bucket: str, key: str) -> bytes:
    """The input object's bytes; ValueError when there is none."""
    try:
        obj = _s3(account).get_object(bucket, key)
    except Exception:  # MissingBucket and the like
        obj = None
    if obj is None:
        raise ValueError(f"The input file s3://{bucket}/{key} does not exist")
    return bytes(obj.value)


# ---------------------------------------------------------------- the task thread


def _process_line(task: Task, offset: int, raw: bytes) -> tuple[str | None, str | None]:
    """(RESULTS line, ERRORS line) of one input line: exactly one is set."""
    from provisioning import TemplateError, apply, render

    def error(code: str, message: str) -> tuple[None, str]:
        return None, json.dumps({"offset": offset, "errorCode": code, "errorMessage": message})

    if len(raw) > MAX_LINE:
        return error("InvalidRequestException", f"The line is longer than {MAX_LINE} bytes")
    try:
        parameters = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return error("InvalidRequestException", "The line is not valid JSON")
    if not isinstance(parameters, dict):
        return error("InvalidRequestException", "The line is not a JSON object of parameter values")
    parameters = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in parameters.items()}
    try:
        rendered = render(task.template_body, parameters, account=task.account, region=task.region)
        result = apply(task.account, task.region, rendered, backend=task.backend)
    except TemplateError as failure:
        return error(failure.code, failure.message)
    except Exception as failure:  # an unexpected error fails the line, not the task
        return error("InternalFailureException", f"{type(failure).__name__}: {failure}")
    response = {"ResourceArns": result["resourceArns"]}
    if result["certificatePem"]:
        response = {"CertificatePem": result["certificatePem"], **response}
    return json.dumps({"offset": offset, "response": response}), None


def _write_reports(task: Task, results: list[str], errors: list[str]) -> None:
    s3 = _s3(task.account)
    bucket = report_bucket(task.account)
    from moto.s3.exceptions import MissingBucket

    try:
        s3.get_bucket(bucket)
    except MissingBucket:
        s3.create_bucket(bucket, task.region)
    links: dict[str, list[str]] = {"RESULTS": [], "ERRORS": []}
    for report_type, lines in (("RESULTS", results), ("ERRORS", errors)):
        for n, start in enumerate(range(0, len(lines), REPORT_CHUNK)):
            key = f"{task.task_id}/{report_type.lower()}/{n}.json"
            body = "\n".join(lines[start:start + REPORT_CHUNK]) + "\n"
            s3.put_object(bucket, key, body.encode("utf-8"))
            links[report_type].append(_presign(task, bucket, key))
    task.set(links=links)


_presigners: dict[tuple[str, str], Any] = {}
_presigners_lock = threading.Lock()


def _presign(task: Task, bucket: str, key: str) -> str:
    """A path-style presigned GET URL of the report object at the emulator.

    Like AWS's links it carries a SigV4 query signature (fake credentials; moto
    serves an object to a request signed in the URL without checking it), so a
    client downloads it with a plain GET.  Signed locally: no request is sent.
    """
    import botocore.session
    from botocore.config import Config

    with _presigners_lock:
        client = _presigners.get((task.base_url, task.region))
        if client is None:
            client = botocore.session.get_session().create_client(
                "s3", region_name=task.region, endpoint_url=task.base_url,
                aws_access_key_id="testing", aws_secret_access_key="testing",
                config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
            )
            _presigners[(task.base_url, task.region)] = client
    return client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=LINK_SECONDS)


def _run(task: Task) -> None:
    results: list[str] = []
    errors: list[str] = []
    try:
        try:
            data = _read_input(task.account, task.bucket, task.key)
        except ValueError as missing:
            task.set(status="Failed", message=str(missing))
            return
        lines = data.split(b"\n")
        todo = [(offset, raw) for offset, raw in enumerate(lines) if raw.strip()]
        rate = _rate()
        started = time.monotonic()
        for done, (offset, raw) in enumerate(todo):
            if rate:
                # Line n starts no earlier than n / rate seconds after the first.
                if task.stop.wait(max(0.0, started + done / rate - time.monotonic())):
                    break
            if task.stop.is_set():
                break
            ok, failed = _process_line(task, offset, raw)
            if ok is not None:
                results.append(ok)
            else:
                errors.append(failed)
            task.set(success=len(results), failure=len(errors),
                     progress=(done + 1) * 100 // len(todo))
        if not todo:
            task.set(progress=100)
        if task.forgotten:
            return
        _write_reports(task, results, errors)
        task.set(status="Cancelled" if task.status == "Cancelling" else "Completed")
    except Exception as failure:  # the task fails, the server goes on
        if not task.forgotten:
            try:
                _write_reports(task, results, errors)
            except Exception:
                pass
            task.set(status="Failed", message=f"{type(failure).__name__}: {failure}")
    finally:
        with _running_lock:
            if _running.get(task.account) is task:
                del _running[task.account]


# ---------------------------------------------------------------- handlers


def _task(self, task_id: Any, *, not_found: str = "ResourceNotFoundException") -> Task:
    task = tasks(self.iot_backend).get(task_id) if isinstance(task_id, str) else None
    if task is None:
        if not_found == "InvalidRequestException":
            raise _invalid(f"Thing registration task {task_id} does not exist")
        from moto.iot.exceptions import ResourceNotFoundException

        raise ResourceNotFoundException(f"Thing registration task {task_id} does not exist")
    return task


def _start_thing_registration_task(self):
    account = self.current_account
    body = _check_template(self._get_param("templateBody"))
    role_arn = _check_role(account, self._get_param("roleArn"))
    bucket, key = self._get_param("inputFileBucket"), self._get_param("inputFileKey")
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise _invalid("inputFileBucket and inputFileKey are required")
    try:
        _read_input(account, bucket, key)
    except ValueError as missing:
        raise _invalid(str(missing))
    host = self.headers.get("Host") or "127.0.0.1"
    task = Task(task_id=str(uuid.uuid4()), account=account, region=self.region,
                template_body=body, bucket=bucket, key=key, role_arn=role_arn,
                base_url=f"http://{host}", backend=self.iot_backend)
    with _running_lock:
        running = _running.get(account)
        if running is not None and not running.forgotten and running.status in ("InProgress", "Cancelling"):
            raise _invalid(f"A thing registration task is already in progress in this account: {running.task_id}")
        _running[account] = task
    tasks(self.iot_backend)[task.task_id] = task
    threading.Thread(target=_run, args=(task,), name=f"thing-registration-{task.task_id}",
                     daemon=True).start()
    return json.dumps({"taskId": task.task_id})


def _describe_thing_registration_task(self):
    return json.dumps(_task(self, self._get_param("taskId")).describe())


def _page(self, items: list) -> tuple[list, str | None]:
    max_results = self._get_param("maxResults")
    try:
        size = int(max_results) if max_results not in (None, "") else 250
    except (TypeError, ValueError):
        raise _invalid("maxResults must be an integer between 1 and 250")
    if not 1 <= size <= 250:
        raise _invalid("maxResults must be an integer between 1 and 250")
    token = self._get_param("nextToken")
    try:
        start = int(token) if token else 0
    except ValueError:
        raise _invalid("The nextToken is not valid")
    page = items[start:start + size]
    return page, (str(start + size) if start + size < len(items) else None)


def _list_thing_registration_tasks(self):
    status = self._get_param("status")
    if status is not None and status not in STATUSES:
        raise _invalid(f"status must be one of {', '.join(STATUSES)}")
    found = [t for t in reversed(list(tasks(self.iot_backend).values()))
             if status is None or t.status == status]
    page, token = _page(self, [t.task_id for t in found])
    out: dict[str, Any] = {"taskIds": page}
    if token:
        out["nextToken"] = token
    return json.dumps(out)


def _list_thing_registration_task_reports(self):
    task = _task(self, self._get_param("taskId"), not_found="InvalidRequestException")
    report_type = self._get_param("reportType")
    if report_type not in ("RESULTS", "ERRORS"):
        raise _invalid("reportType must be RESULTS or ERRORS")
    with task.lock:
        links = list(task.links[report_type])
    page, token = _page(self, links)
    out: dict[str, Any] = {"resourceLinks": page, "reportType": report_type}
    if token:
        out["nextToken"] = token
    return json.dumps(out)


def _stop_thing_registration_task(self):
    task = _task(self, self._get_param("taskId"))
    with task.lock:
        if task.status != "InProgress":
            raise _invalid(f"Thing registration task {task.task_id} is {task.status}, not InProgress")
        task.status = "Cancelling"
        task.modified = time.time()
    task.stop.set()
    return json.dumps({})


def _make_reset(original):
    def reset(self, *args, **kwargs):
        for task in list((self.__dict__.get(STORE) or {}).values()):
            task.forgotten = True
            task.stop.set()
        return original(self, *args, **kwargs)

    return reset


HANDLERS = {
    "start_thing_registration_task": _start_thing_registration_task,
    "describe_thing_registration_task": _describe_thing_registration_task,
    "list_thing_registration_tasks": _list_thing_registration_tasks,
    "list_thing_registration_task_reports": _list_thing_registration_task_reports,
    "stop_thing_registration_task": _stop_thing_registration_task,
}


def apply() -> None:
    from moto.iot.models import IoTBackend
    from moto.iot.responses import IoTResponse

    for name, handler in HANDLERS.items():
        patch(IoTResponse, name, handler)
    original = getattr(IoTBackend, "_emulator_orig_reset", None) or IoTBackend.reset
    patch(IoTBackend, "reset", _make_reset(original))
