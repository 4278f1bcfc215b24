"""AWS IoT Jobs' device MQTT API on the device gateway: ``$aws/things/<thing>/jobs/...``.

What AWS does (developer guide "Jobs device MQTT API operations",
jobs-mqtt-api.html; "Jobs device MQTT and HTTPS APIs and data types",
jobs-mqtt-https-api.html; "AWS IoT jobs API operations" -> ErrorResponse,
jobs-api.html; "Jobs notifications", jobs-comm-notifications.html)

    A device publishes requests, each answered on ``<request topic>/accepted``
    or ``<request topic>/rejected``:

    * ``$aws/things/<thing>/jobs/get`` (GetPendingJobExecutions) ->
      ``{"inProgressJobs": [JobExecutionSummary], "queuedJobs": [...],
      "timestamp", "clientToken"}``;
    * ``.../jobs/start-next`` (StartNextPendingJobExecution; ``statusDetails``,
      ``stepTimeoutInMinutes``) -> ``{"execution": JobExecution, "timestamp",
      "clientToken"}``, no ``execution`` when nothing is pending; IN_PROGRESS
      executions come first, then QUEUED, each in the order they were
      created; a QUEUED one becomes IN_PROGRESS with the request's status
      details, an IN_PROGRESS one keeps its details;
    * ``.../jobs/<jobId>/get`` (DescribeJobExecution; jobId may be ``$next``;
      ``executionNumber``, ``includeJobDocument`` default true) ->
      ``{"execution", "timestamp", "clientToken"}``;
    * ``.../jobs/<jobId>/update`` (UpdateJobExecution; ``status`` required:
      IN_PROGRESS, FAILED, SUCCEEDED or REJECTED; ``statusDetails``,
      ``expectedVersion``, ``executionNumber``, ``includeJobExecutionState``,
      ``includeJobDocument`` (both default false), ``stepTimeoutInMinutes``) ->
      ``{"executionState", "jobDocument", "timestamp", "clientToken"}``.

    ``clientToken`` is "reflected in the response"; ``timestamp`` is seconds
    since the epoch.  Rejections are ``{"code", "message", "clientToken",
    "timestamp", "executionState"}`` with code InvalidTopic, InvalidJson,
    InvalidRequest, InvalidStateTransition, ResourceNotFound, VersionMismatch,
    InternalError, RequestThrottled or TerminalStateReached;
    ``executionState`` "is included only when the code field has the value
    InvalidStateTransition or VersionMismatch".  "The message broker will
    publish response message topics to the client that published the command
    message, whether or not your client has subscribed to the response message
    topics.  These response messages don't pass through the message broker and
    can't be subscribed to by other clients or rules."

    Notifications (``$aws/things/<thing>/jobs/notify`` and ``notify-next``)
    are ordinary messages to every subscriber; the engine (jobs/engine.py)
    decides when, the gateway delivers them (and hands them to the rules engine).

What the emulator does
    All of the above.  A request is an ordinary publish first: the
    connection's policies must allow ``iot:Publish`` on the request topic
    (else the connection is closed, broker.py), so a device whose policy
    names only ``$aws/things/${iot:Connection.Thing.ThingName}/jobs/*``
    cannot touch another thing's jobs.  The request acts on the topic's
    thing.  It is consumed by the service (no subscriber or rule sees it);
    the answer goes to the requesting connection only, subscribed or not, if
    ``iot:Receive`` allows the answer topic (QoS = its subscription's, else 0).
    A topic under ``$aws/things/<thing>/jobs/`` that maps to no operation
    is answered InvalidTopic on ``<topic>/rejected``.  Job documents in
    answers and in notify-next are JSON objects with their presigned-URL
    placeholders replaced (jobs/documents.py).

Guessed (not documented; codes from the list above, messages the emulator's)
    * a payload that is JSON but not an object, a field of the wrong type or
      out of range (statusDetails keys ``[a-zA-Z0-9:_-]{1,128}`` and values of
      1-1024 characters as in the API reference; stepTimeoutInMinutes 1-10080
      or -1; status not one of the eight statuses) -> InvalidRequest;
    * update to a status a device may not set (QUEUED, TIMED_OUT, REMOVED,
      CANCELED) or of an execution in a terminal state (including one canceled
      by CancelJob/CancelJobExecution with force) -> InvalidStateTransition;
    * ``<jobId>/get`` of a terminal execution of a COMPLETED or CANCELED job
      -> TerminalStateReached; of an unknown job or execution -> ResourceNotFound;
    * a document with presigned-URL placeholders whose job has no usable
      presignedUrlConfig role -> InvalidRequest naming the reason (start-next,
      get, update with includeJobDocument); notify-next is then sent without
      ``jobDocument``;
    * requests published by iot-data Publish (no connection) are carried out
      and their answers dropped.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from .authz import note

_PREFIX = re.compile(r"^\$aws/things/(?P<thing>[^/#+]+)/jobs/(?P<rest>.+)$")
_JOB_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_DETAIL_KEY = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
STATUSES = ("QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED")


def parse_request_topic(topic: str) -> tuple[str, str] | None:
    """(thing name, the rest of the topic) of any topic under ``$aws/things/<thing>/jobs/``."""
    match = _PREFIX.match(topic)
    if not match:
        return None
    return match["thing"], match["rest"]


def operation(rest: str) -> tuple[str, str | None] | None:
    """(operation, job id) of a request topic's tail, None when it maps to no operation."""
    if rest == "get":
        return "get", None
    if rest == "start-next":
        return "start-next", None
    job_id, _, op = rest.rpartition("/")
    if op == "get" and (job_id == "$next" or _JOB_ID.match(job_id)):
        return "describe", job_id
    if op == "update" and _JOB_ID.match(job_id):
        return "update", job_id
    return None


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# -- request fields ----------------------------------------------------------------


def _payload(data: bytes) -> dict:
    if not data or not data.strip():
        return {}
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise Refused("InvalidJson", f"The request could not be interpreted as UTF-8 JSON: {error}")
    if not isinstance(document, dict):
        raise Refused("InvalidRequest", "The request must be a JSON object")
    return document


def _details(request: dict) -> dict | None:
    value = request.get("statusDetails")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Refused("InvalidRequest", "statusDetails must be an object of strings")
    for key, item in value.items():
        if not _DETAIL_KEY.match(key):
            raise Refused("InvalidRequest", f"statusDetails key {key!r} must match [a-zA-Z0-9:_-]{{1,128}}")
        if not isinstance(item, str) or not 1 <= len(item) <= 1024 or any(ord(c) < 32 for c in item):
            raise Refused("InvalidRequest", f"statusDetails value of {key!r} must be a string of 1-1024 characters")
    if len(value) > 10:
        raise Refused("InvalidRequest", "statusDetails may hold at most 10 name/value pairs")
    return dict(value)


def _integer(request: dict, name: str) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise Refused("InvalidRequest", f"{name} must be an integer")
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise Refused("InvalidRequest", f"{name} must be an integer")
    return value


def _step(request: dict) -> int | None:
    step = _integer(request, "stepTimeoutInMinutes")
    if step is not None and step != -1 and not 1 <= step <= 10080:
        raise Refused("InvalidRequest", "stepTimeoutInMinutes must be between 1 and 10080, or -1")
    return step


def _flag(request: dict, name: str, default: bool) -> bool:
    value = request.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Refused("InvalidRequest", f"{name} must be true or false")
    return value


# -- the service ------------------------------------------------------------------------


class JobsService:
    def __init__(self, gateway) -> None:
        self.gateway = gateway

    def engine(self):
        from jobs import engine_for

        return engine_for(self.gateway.authorizer.iot_backend())

    async def handle(self, topic: str, payload: bytes, session) -> None:
        loop = asyncio.get_running_loop()
        answer_topic, answer = await loop.run_in_executor(None, self.serve, topic, payload)
        if session is None:
            return  # iot-data Publish: nobody to answer
        await self.deliver(session, answer_topic, json.dumps(answer).encode())

    def serve(self, topic: str, payload: bytes) -> tuple[str, dict]:
        """Carry out one request (executor thread): (answer topic, answer document)."""
        from jobs import JobsError

        parsed = parse_request_topic(topic)
        thing, rest = parsed if parsed else ("", "")
        token = None
        job_id = None
        try:
            op = operation(rest)
            if op is None:
                raise Refused("InvalidTopic", f"The topic {topic} does not map to any Jobs API")
            name, job_id = op
            request = _payload(payload)
            token = request.get("clientToken")
            answer = self._run(name, thing, job_id, request)
            answer["timestamp"] = int(time.time())
            if token is not None:
                answer["clientToken"] = token
            return f"{topic}/accepted", answer
        except Refused as error:
            return f"{topic}/rejected", self._rejected(error.code, error.message, token)
        except JobsError as error:
            note(f"jobs {rest} of thing {thing!r} rejected: {error.code}: {error.message}")
            self.engine().client_error(error.job_id or job_id)
            state = error.execution.device_state() if error.execution is not None and error.code in (
                "InvalidStateTransition", "VersionMismatch") else None
            return f"{topic}/rejected", self._rejected(error.code, error.message, token, state)
        except Exception as error:  # noqa: BLE001 - a bug answers InternalError, never kills the gateway
            note(f"jobs {rest} of thing {thing!r} failed: {error!r}")
            return f"{topic}/rejected", self._rejected("InternalError", str(error), token)

    @staticmethod
    def _rejected(code: str, message: str, token: Any, state: dict | None = None) -> dict:
        document: dict[str, Any] = {"code": code, "message": message, "timestamp": int(time.time())}
        if token is not None:
            document["clientToken"] = token
        if state is not None:
            document["executionState"] = state
        return document

    def _run(self, name: str, thing: str, job_id: str | None, request: dict) -> dict:
        engine = self.engine()
        if name == "get":
            in_progress, queued = engine.get_pending(thing)
            return {"inProgressJobs": in_progress, "queuedJobs": queued}
        if name == "start-next":
            details, step = _details(request), _step(request)
            execution = engine.start_next(thing, details, step)
            return {"execution": execution} if execution is not None else {}
        if name == "describe":
            number = _integer(request, "executionNumber")
            execution = engine.describe_for_device(
                thing, job_id, number, _flag(request, "includeJobDocument", True))
            return {"execution": execution} if execution is not None else {}
        status = request.get("status")
        if not isinstance(status, str) or status not in STATUSES:
            raise Refused("InvalidRequest", "status is required: IN_PROGRESS, SUCCEEDED, FAILED or REJECTED")
        return engine.update_for_device(
            thing, job_id, status, _details(request), _integer(request, "expectedVersion"),
            _integer(request, "executionNumber"), _step(request),
            _flag(request, "includeJobExecutionState", False), _flag(request, "includeJobDocument", False),
        )

    async def deliver(self, session, topic: str, data: bytes) -> None:
        """The answer to the requesting connection alone, subscribed or not (see the docstring)."""
        from amqtt.contexts import Action

        broker = self.gateway.broker
        qos = 0
        for _filter, subscriptions in broker.subscriptions_matching(topic):
            for target, sub_qos in subscriptions:
                if target is session or (session.client_id and target.client_id == session.client_id):
                    qos = max(qos, min(sub_qos or 0, 1))
        if session.transitions.state != "connected":
            return
        if not await broker._topic_filtering(session, topic, Action.RECEIVE):
            return  # _topic_filtering wrote why
        handler = broker._get_handler(session)
        if handler is not None:
            # Not awaited: a QoS 1 answer waits for the client's PUBACK.
            self.gateway._spawn(handler.mqtt_publish(topic, data, qos, retain=False))
