"""The jobs engine: jobs, job executions and their life cycle, for one account/region.

What AWS does is cited where it is done below; the developer guide pages are
"Jobs and job execution states" (iot-jobs-lifecycle.html), "How job
configurations work" (jobs-configurations-details.html), "Specify job
configurations by using the AWS IoT Jobs API" (job-configurations-api.html),
"Jobs notifications" (jobs-comm-notifications.html), "Jobs device MQTT API
operations" (jobs-mqtt-api.html), "Create and manage jobs by using the AWS
CLI" (manage-job-cli.html) and "AWS IoT metrics and dimensions" (Jobs metrics).

Concurrency: every public method runs under the IoT backend's lock
(``fixes.iot_concurrency.lock_for``), the same lock the IoT API handlers hold,
so a job, its executions and moto's things and groups change together; the
background ticker (rollout windows, timeouts, CONTINUOUS membership, deletion)
and the device gateway take the same lock.  Every status change goes through
``_set_status``; notifications for the things an operation touched are worked
out when it ends (``_flush``) and handed to the listeners (the gateway).
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .clock import Clock

STATUSES = ("QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED")
PENDING = ("QUEUED", "IN_PROGRESS")
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED")
# What a device may set with UpdateJobExecution ("IN_PROGRESS, FAILED, SUCCEEDED, or REJECTED").
DEVICE_STATUSES = ("IN_PROGRESS", "SUCCEEDED", "FAILED", "REJECTED")
# Executions that count as "executed" for the abort criteria: the device (or its timer) finished them.
EXECUTED = ("SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT")
JOB_STATUSES = ("IN_PROGRESS", "CANCELED", "COMPLETED", "DELETION_IN_PROGRESS", "SCHEDULED")
MAX_RATE = 1000
TICK = 0.05  # seconds between ticker passes
NOTIFY_LIST_MAX = 10  # "A ListNotification contains a list of no more than 10 pending job executions"
ABORT_REASON = "ABORT_CRITERIA_MET"  # AWS auto-populates reasonCode/comment; its values are not documented

# "AWS IoT metrics and dimensions" -> Jobs metrics, with AWS's spelling ("Succeded").
# TIMED_OUT has no metric in that list.
METRIC_PREFIX = {
    "QUEUED": "Queued",
    "IN_PROGRESS": "InProgress",
    "SUCCEEDED": "Succeded",
    "FAILED": "Failed",
    "REJECTED": "Rejected",
    "REMOVED": "Removed",
    "CANCELED": "Canceled",
}
METRICS_ACCOUNT = "123456789012"
METRICS_REGION = "us-east-1"

ENGINE_KEY = "_emulator_jobs_engine"
_seq = itertools.count(1)


class JobsError(Exception):
    """A refused device (data plane) request: the Jobs MQTT API's ErrorResponse."""

    def __init__(self, code: str, message: str, execution: "Execution | None" = None, job_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.execution = execution
        self.job_id = job_id


def _not_found(message: str):
    from moto.iot.exceptions import ResourceNotFoundException

    return ResourceNotFoundException(message)


def _invalid(message: str):
    from moto.iot.exceptions import InvalidRequestException

    return InvalidRequestException(message)


def _bad_transition(message: str):
    from moto.iot.exceptions import InvalidStateTransitionException

    return InvalidStateTransitionException(message)


def _drop_none(document: dict) -> dict:
    return {k: v for k, v in document.items() if v is not None}


# -- the model --------------------------------------------------------------------------


@dataclass
class Execution:
    job_id: str
    thing_name: str
    thing_arn: str
    execution_number: int
    queued_at: float
    status: str = "QUEUED"
    status_details: dict = field(default_factory=dict)
    started_at: float | None = None
    last_updated_at: float = 0.0
    version: int = 1
    retry_attempt: int = 0
    force_canceled: bool = False
    in_progress_deadline: float | None = None  # monotonic
    step_deadline: float | None = None  # monotonic
    seq: int = field(default_factory=lambda: next(_seq))

    def deadline(self) -> float | None:
        deadlines = [d for d in (self.in_progress_deadline, self.step_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def seconds_left(self, clock: Clock) -> int | None:
        deadline = self.deadline()
        if deadline is None or self.status != "IN_PROGRESS":
            return None
        return max(0, int(round(clock.aws_seconds(deadline - clock.monotonic()))))

    # -- shapes --

    def control_summary(self) -> dict:
        """JobExecutionSummary (control plane)."""
        return _drop_none({
            "status": self.status,
            "queuedAt": self.queued_at,
            "startedAt": self.started_at,
            "lastUpdatedAt": self.last_updated_at,
            "executionNumber": self.execution_number,
            "retryAttempt": self.retry_attempt,
        })

    def control_execution(self, clock: Clock) -> dict:
        """JobExecution (control plane DescribeJobExecution)."""
        return _drop_none({
            "jobId": self.job_id,
            "status": self.status,
            "forceCanceled": self.force_canceled,
            "statusDetails": {"detailsMap": dict(self.status_details)},
            "thingArn": self.thing_arn,
            "queuedAt": self.queued_at,
            "startedAt": self.started_at,
            "lastUpdatedAt": self.last_updated_at,
            "executionNumber": self.execution_number,
            "versionNumber": self.version,
            "approximateSecondsBeforeTimedOut": self.seconds_left(clock),
        })

    def device_summary(self) -> dict:
        """JobExecutionSummary (data plane: GetPendingJobExecutions, notify)."""
        return _drop_none({
            "jobId": self.job_id,
            "queuedAt": int(self.queued_at),
            "startedAt": int(self.started_at) if self.started_at is not None else None,
            "lastUpdatedAt": int(self.last_updated_at),
            "executionNumber": self.execution_number,
            "versionNumber": self.version,
        })

    def device_state(self) -> dict:
        """JobExecutionState (data plane)."""
        return {"status": self.status, "statusDetails": dict(self.status_details), "versionNumber": self.version}

    def device_execution(self, clock: Clock, document: Any = None, with_document: bool = False) -> dict:
        """JobExecution (data plane)."""
        out = _drop_none({
            "jobId": self.job_id,
            "thingName": self.thing_name,
            "status": self.status,
            "statusDetails": dict(self.status_details),
            "queuedAt": int(self.queued_at),
            "startedAt": int(self.started_at) if self.started_at is not None else None,
            "lastUpdatedAt": int(self.last_updated_at),
            "versionNumber": self.version,
            "executionNumber": self.execution_number,
            "approximateSecondsBeforeTimedOut": self.seconds_left(clock),
        })
        if with_document:
            out["jobDocument"] = document
        return out


@dataclass
class Template:
    template_id: str
    arn: str
    created_at: float
    description: str | None = None
    document: str | None = None
    document_source: str | None = None
    presigned_url_config: dict | None = None
    rollout: dict | None = None
    abort: dict | None = None
    timeout: dict | None = None
    retry: dict | None = None
    maintenance_windows: list | None = None
    destination_package_versions: list | None = None

    def describe(self) -> dict:
        return _drop_none({
            "jobTemplateArn": self.arn,
            "jobTemplateId": self.template_id,
            "description": self.description,
            "documentSource": self.document_source,
            "document": self.document,
            "createdAt": self.created_at,
            "presignedUrlConfig": self.presigned_url_config,
            "jobExecutionsRolloutConfig": self.rollout,
            "abortConfig": self.abort,
            "timeoutConfig": self.timeout,
            "jobExecutionsRetryConfig": self.retry,
            "maintenanceWindows": self.maintenance_windows,
            "destinationPackageVersions": self.destination_package_versions,
        })

    def summary(self) -> dict:
        return _drop_none({
            "jobTemplateArn": self.arn,
            "jobTemplateId": self.template_id,
            "description": self.description,
            "createdAt": self.created_at,
        })


@dataclass
class Job:
    job_id: str
    arn: str
    targets: list[str]
    target_selection: str
    document: str
    created_at: float
    document_source: str | None = None
    description: str | None = None
    presigned_url_config: dict | None = None
    rollout: dict | None = None
    abort: dict | None = None
    timeout: dict | None = None
    retry: dict | None = None
    scheduling: dict | None = None
    document_parameters: dict | None = None
    template_arn: str | None = None
    destination_package_versions: list | None = None
    status: str = "IN_PROGRESS"
    force_canceled: bool = False
    reason_code: str | None = None
    comment: str | None = None
    last_updated_at: float = 0.0
    completed_at: float | None = None
    # thing name -> its executions of this job, oldest first (executionNumber 1, 2, ...)
    executions: dict[str, list[Execution]] = field(default_factory=dict)
    # rollout: things not notified yet, in target order
    pending: list[tuple[str, str]] = field(default_factory=list)
    rollout_start: float = 0.0
    rate: int = MAX_RATE
    window: int = -1
    window_quota: int = 0
    window_used: int = 0
    notified_since: int = 0
    succeeded_since: int = 0
    # things that are targets right now (CONTINUOUS: followed as groups change)
    members: dict[str, str] = field(default_factory=dict)
    retries_used: dict[str, dict[str, int]] = field(default_factory=dict)
    deleting_since: float | None = None

    def latest(self) -> list[Execution]:
        return [runs[-1] for runs in self.executions.values() if runs]

    def all_executions(self) -> list[Execution]:
        return [e for runs in self.executions.values() for e in runs]

    def counts(self) -> dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for execution in self.latest():
            counts[execution.status] += 1
        return counts

    def process_details(self) -> dict:
        counts = self.counts()
        details = {
            "numberOfCanceledThings": counts["CANCELED"],
            "numberOfSucceededThings": counts["SUCCEEDED"],
            "numberOfFailedThings": counts["FAILED"],
            "numberOfRejectedThings": counts["REJECTED"],
            "numberOfQueuedThings": counts["QUEUED"],
            "numberOfInProgressThings": counts["IN_PROGRESS"],
            "numberOfRemovedThings": counts["REMOVED"],
            "numberOfTimedOutThings": counts["TIMED_OUT"],
        }
        if self.pending:
            # "This value will be null after the job execution has finished rolling out"
            details["processingTargets"] = list(self.targets)
        return details

    def describe(self) -> dict:
        return _drop_none({
            "jobArn": self.arn,
            "jobId": self.job_id,
            "targetSelection": self.target_selection,
            "status": self.status,
            "forceCanceled": self.force_canceled,
            "reasonCode": self.reason_code,
            "comment": self.comment,
            "targets": list(self.targets),
            "description": self.description,
            "presignedUrlConfig": self.presigned_url_config,
            "jobExecutionsRolloutConfig": self.rollout,
            "abortConfig": self.abort,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.last_updated_at,
            "completedAt": self.completed_at,
            "jobProcessDetails": self.process_details(),
            "timeoutConfig": self.timeout,
            "jobTemplateArn": self.template_arn,
            "jobExecutionsRetryConfig": self.retry,
            "documentParameters": self.document_parameters,
            "isConcurrent": bool(self.pending) or self.status == "DELETION_IN_PROGRESS",
            "schedulingConfig": self.scheduling,
            "destinationPackageVersions": self.destination_package_versions,
        })

    def summary(self, group_id: str | None) -> dict:
        return _drop_none({
            "jobArn": self.arn,
            "jobId": self.job_id,
            "thingGroupId": group_id,
            "targetSelection": self.target_selection,
            "status": self.status,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.last_updated_at,
            "completedAt": self.completed_at,
            "isConcurrent": bool(self.pending) or self.status == "DELETION_IN_PROGRESS",
        })

    def rate_cap(self) -> int:
        return int((self.rollout or {}).get("maximumPerMinute") or MAX_RATE)


# -- listeners and the ticker ----------------------------------------------------------

_listeners: list[Callable[[str, str, str, bytes], None]] = []
_engines: set["Engine"] = set()
_registry_lock = threading.Lock()
_ticker: threading.Thread | None = None


def add_listener(fn: Callable[[str, str, str, bytes], None]) -> None:
    if fn not in _listeners:
        _listeners.append(fn)


def remove_listener(fn: Callable[[str, str, str, bytes], None]) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def note(message: str) -> None:
    try:
        sys.stderr.write(f"iotreg-emulator: jobs: {message}\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass


def _tick_forever() -> None:
    while True:
        time.sleep(TICK)
        with _registry_lock:
            engines = list(_engines)
        for engine in engines:
            if not engine.alive or not engine.jobs:
                continue
            try:
                engine.tick()
            except Exception as error:  # noqa: BLE001 - the ticker must keep going
                note(f"ticker: {error!r}")


def _register(engine: "Engine") -> None:
    global _ticker
    with _registry_lock:
        _engines.add(engine)
        if _ticker is None:
            _ticker = threading.Thread(target=_tick_forever, name="jobs-ticker", daemon=True)
            _ticker.start()


def forget(backend) -> None:
    """Drop the backend's engine (IoTBackend.reset): its timers stop, nothing more is sent."""
    engine = backend.__dict__.get(ENGINE_KEY)
    if engine is not None:
        engine.alive = False
        with _registry_lock:
            _engines.discard(engine)


def engine_for(backend) -> "Engine":
    engine = backend.__dict__.get(ENGINE_KEY)
    if engine is None:
        with _registry_lock:
            engine = backend.__dict__.get(ENGINE_KEY)
            if engine is None:
                engine = Engine(backend)
                setattr(backend, ENGINE_KEY, engine)
        _register(engine)
    return engine


def _locked(method):
    """Run under the backend lock, then send the notifications the change calls for."""

    def run(self: "Engine", *args, **kwargs):
        with self.lock:
            try:
                return method(self, *args, **kwargs)
            finally:
                self._flush()

    run.__name__ = method.__name__
    run.__doc__ = method.__doc__
    return run


# -- the engine -------------------------------------------------------------------------


class Engine:
    def __init__(self, backend, clock: Clock | None = None) -> None:
        from fixes.iot_concurrency import lock_for

        self.backend = backend
        self.account = backend.account_id
        self.region = backend.region_name
        self.lock = lock_for(backend)
        self.clock = clock or Clock()
        self.jobs: dict[str, Job] = {}
        self.templates: dict[str, Template] = {}
        self.alive = True
        self._dirty: set[str] = set()
        # thing -> (pending execution keys, next execution key) as last notified
        self._sent: dict[str, tuple[frozenset, tuple | None]] = {}
        self._outbox: list[tuple[str, bytes]] = []

    # -- moto's registry -----------------------------------------------------------

    def thing(self, name: str):
        for thing in list(self.backend.things.values()):
            if thing.thing_name == name:
                return thing
        return None

    def _group_by_arn(self, arn: str):
        return self.backend.thing_groups.get(arn)

    def _group_members(self, group) -> dict[str, str]:
        """Things in a static group and in all its descendants ("Static thing groups")."""
        members: dict[str, str] = {}
        todo = [group]
        seen = set()
        groups = list(self.backend.thing_groups.values())
        while todo:
            current = todo.pop(0)
            if current.thing_group_name in seen:
                continue
            seen.add(current.thing_group_name)
            for thing in list(current.things.values()):
                if thing.arn in self.backend.things:
                    members.setdefault(thing.thing_name, thing.arn)
            todo.extend(g for g in groups if g.parent_group_name == current.thing_group_name)
        return members

    def expand(self, targets: list[str]) -> dict[str, str]:
        """The things the targets name right now: thing name -> thing ARN, in target order."""
        members: dict[str, str] = {}
        for arn in targets:
            if ":thinggroup/" in arn:
                group = self._group_by_arn(arn)
                if group is not None:
                    for name, thing_arn in self._group_members(group).items():
                        members.setdefault(name, thing_arn)
            else:
                thing = self.backend.things.get(arn)
                if thing is not None:
                    members.setdefault(thing.thing_name, thing.arn)
        return members

    def check_targets(self, targets: Any) -> list[str]:
        if not isinstance(targets, list) or not targets:
            raise _invalid("targets must list at least one thing or thing group ARN")
        out = []
        for arn in targets:
            if not isinstance(arn, str) or not arn.startswith("arn:"):
                raise _invalid(f"Target {arn} is not a thing or thing group ARN")
            if ":thinggroup/" in arn:
                if self._group_by_arn(arn) is None:
                    raise _not_found(f"Thing group {arn} does not exist")
            elif ":thing/" in arn:
                if arn not in self.backend.things:
                    raise _not_found(f"Thing {arn} does not exist")
            else:
                raise _invalid(f"Target {arn} is not a thing or thing group ARN")
            if arn not in out:
                out.append(arn)
        return out

    # -- control plane --------------------------------------------------------------

    def job(self, job_id: Any) -> Job:
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise _not_found(f"Job {job_id} does not exist")
        return job

    @_locked
    def create_job(self, job: Job) -> Job:
        from moto.iot.exceptions import ResourceAlreadyExistsException

        if job.job_id in self.jobs:
            raise ResourceAlreadyExistsException(f"Job {job.job_id} already exists", job.job_id, job.arn)
        now = self.clock.wall()
        job.created_at = job.last_updated_at = now
        job.rollout_start = self.clock.monotonic()
        exponential = (job.rollout or {}).get("exponentialRate")
        job.rate = min(job.rate_cap(), int(exponential["baseRatePerMinute"])) if exponential else job.rate_cap()
        job.members = self.expand(job.targets)
        job.pending = list(job.members.items())
        self.jobs[job.job_id] = job
        self._rollout(job)
        self._check_complete(job)
        return job

    @_locked
    def cancel_job(self, job_id: str, force: bool, reason_code: str | None, comment: str | None) -> Job:
        job = self.job(job_id)
        if job.status == "DELETION_IN_PROGRESS":
            raise _invalid(f"Job {job_id} is being deleted (DELETION_IN_PROGRESS) and cannot be canceled")
        if job.status == "COMPLETED":
            raise _invalid(f"Job {job_id} is COMPLETED and cannot be canceled")
        self._cancel(job, force, reason_code, comment)
        return job

    def _cancel(self, job: Job, force: bool, reason_code: str | None, comment: str | None) -> None:
        # "Canceling a job stops AWS IoT from rolling out any new job executions for the job.
        # It also cancels any job executions that are in a QUEUED state ... If the status of a job
        # execution is IN_PROGRESS, it also remains untouched unless you use the optional --force"
        job.status = "CANCELED"
        job.force_canceled = job.force_canceled or force
        if reason_code is not None:
            job.reason_code = reason_code
        if comment is not None:
            job.comment = comment
        job.pending = []
        job.last_updated_at = self.clock.wall()
        for execution in job.latest():
            if execution.status == "QUEUED" or (force and execution.status == "IN_PROGRESS"):
                execution.force_canceled = execution.status == "IN_PROGRESS"
                self._set_status(job, execution, "CANCELED")

    @_locked
    def delete_job(self, job_id: str, force: bool) -> None:
        job = self.job(job_id)
        if job.status == "DELETION_IN_PROGRESS":
            raise _bad_transition(f"Job {job_id} is already being deleted")
        if job.status == "IN_PROGRESS" and not force:
            raise _bad_transition(
                f"Job {job_id} is IN_PROGRESS; only a COMPLETED or CANCELED job can be deleted without force")
        job.status = "DELETION_IN_PROGRESS"
        job.pending = []
        job.deleting_since = self.clock.monotonic()
        job.last_updated_at = self.clock.wall()
        for name in list(job.executions):
            self._dirty.add(name)
        job.executions.clear()

    def describe_execution(self, job_id: str, thing_name: str, number: int | None) -> Execution:
        job = self.job(job_id)
        runs = job.executions.get(thing_name) or []
        if number is None:
            if runs:
                return runs[-1]
        else:
            for execution in runs:
                if execution.execution_number == number:
                    return execution
        raise _not_found(f"No execution of job {job_id} on thing {thing_name}"
                         + (f" with executionNumber {number}" if number is not None else ""))

    @_locked
    def cancel_execution(self, job_id: str, thing_name: str, force: bool, expected_version: int | None,
                         details: dict | None) -> None:
        from moto.iot.exceptions import VersionConflictException

        job = self.job(job_id)
        execution = self.describe_execution(job_id, thing_name, None)
        if expected_version is not None and expected_version != execution.version:
            error = VersionConflictException(thing_name)
            error.message = (f"The expected version {expected_version} does not match the job execution's "
                             f"version {execution.version}")
            raise error
        if execution.status == "IN_PROGRESS" and not force:
            raise _bad_transition("The job execution is IN_PROGRESS; it can be canceled only with force")
        if execution.status in TERMINAL:
            raise _bad_transition(f"The job execution is {execution.status} (a terminal state)")
        if details:
            execution.status_details.update(details)
        execution.force_canceled = execution.status == "IN_PROGRESS"
        self._set_status(job, execution, "CANCELED")

    @_locked
    def delete_execution(self, job_id: str, thing_name: str, number: int, force: bool) -> None:
        job = self.job(job_id)
        execution = self.describe_execution(job_id, thing_name, number)
        if execution.status in PENDING and not force:
            raise _bad_transition(
                f"The job execution is {execution.status}; only a terminal one can be deleted without force")
        runs = job.executions[thing_name]
        runs.remove(execution)
        if not runs:
            del job.executions[thing_name]
        self._dirty.add(thing_name)
        job.last_updated_at = self.clock.wall()
        self._check_complete(job)

    def list_jobs(self, status: str | None, target_selection: str | None, group_arn: str | None) -> list[Job]:
        jobs = sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)
        return [
            j for j in jobs
            if (status is None or j.status == status)
            and (target_selection is None or j.target_selection == target_selection)
            and (group_arn is None or group_arn in j.targets)
        ]

    def group_id_of(self, job: Job) -> str | None:
        for arn in job.targets:
            group = self._group_by_arn(arn)
            if group is not None:
                return group.thing_group_id
        return None

    def executions_for_thing(self, thing_name: str, status: str | None, job_id: str | None) -> list[Execution]:
        out = []
        for job in sorted(self.jobs.values(), key=lambda j: j.created_at):
            if job_id is not None and job.job_id != job_id:
                continue
            for execution in job.executions.get(thing_name) or []:
                if status is None or execution.status == status:
                    out.append(execution)
        return out

    # -- membership -----------------------------------------------------------------

    @_locked
    def reconcile(self) -> None:
        """CONTINUOUS jobs follow their groups; deleted things lose their pending executions."""
        for job in list(self.jobs.values()):
            self._reconcile(job)

    def _reconcile(self, job: Job) -> None:
        if job.status not in ("IN_PROGRESS", "CANCELED"):
            return
        continuous = job.target_selection == "CONTINUOUS" and job.status == "IN_PROGRESS"
        now_members = self.expand(job.targets)
        gone = [name for name in job.members if name not in now_members]
        if not continuous:
            # A SNAPSHOT job keeps its targets; only a thing that no longer exists drops out.
            gone = [name for name in gone if self.thing(name) is None]
        for name in gone:
            del job.members[name]
            job.pending = [(n, a) for n, a in job.pending if n != name]
            runs = job.executions.get(name) or []
            if runs and runs[-1].status in PENDING:
                # REMOVED: "When your device is no longer a valid target for the job execution"
                self._set_status(job, runs[-1], "REMOVED")
            # "when a thing is removed from the thing group, additional retry attempts are canceled"
            # and the count starts again if it rejoins.
            job.retries_used.pop(name, None)
        if not continuous:
            return
        for name, arn in now_members.items():
            if name in job.members:
                continue
            job.members[name] = arn
            runs = job.executions.get(name) or []
            if runs and runs[-1].status in PENDING:
                continue
            if any(n == name for n, _ in job.pending):
                continue
            # "for any new devices, the job executions are created in near-real time as soon as the
            # devices join the target group" (not paced by the rollout configuration)
            self._new_execution(job, name, arn)

    @_locked
    def thing_deleted(self, thing_name: str) -> None:
        for job in list(self.jobs.values()):
            self._reconcile(job)
        self._dirty.add(thing_name)

    # -- data plane (device requests) ---------------------------------------------------

    def _pending(self, thing_name: str) -> list[tuple[Job, Execution]]:
        """Pending executions of a thing: IN_PROGRESS first, then QUEUED, each in queue order."""
        found = []
        for job in self.jobs.values():
            if job.status == "DELETION_IN_PROGRESS":
                continue
            runs = job.executions.get(thing_name)
            if runs and runs[-1].status in PENDING:
                found.append((job, runs[-1]))
        found.sort(key=lambda pair: (0 if pair[1].status == "IN_PROGRESS" else 1, pair[1].queued_at, pair[1].seq))
        return found

    def document_for(self, job: Job) -> Any:
        from .documents import resolve

        return resolve(job.document, job.presigned_url_config, self.region)

    @_locked
    def get_pending(self, thing_name: str) -> tuple[list[dict], list[dict]]:
        pending = self._pending(thing_name)
        in_progress = [e.device_summary() for _, e in pending if e.status == "IN_PROGRESS"]
        queued = [e.device_summary() for _, e in pending if e.status == "QUEUED"]
        return in_progress, queued

    @_locked
    def start_next(self, thing_name: str, details: dict | None, step: int | None) -> dict | None:
        from .documents import PresignError

        pending = self._pending(thing_name)
        if not pending:
            return None
        job, execution = pending[0]
        try:
            document = self.document_for(job)
        except PresignError as error:
            raise JobsError("InvalidRequest", str(error), job_id=job.job_id)
        if execution.status == "QUEUED":
            if details:
                execution.status_details.update(details)
            self._set_status(job, execution, "IN_PROGRESS")
        if step is not None:
            self._step_timer(job, execution, step)
        return execution.device_execution(self.clock, document, with_document=True)

    def _device_job(self, job_id: str, thing_name: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or job.status == "DELETION_IN_PROGRESS":
            raise JobsError("ResourceNotFound", f"Job {job_id} does not exist", job_id=job_id)
        return job

    def _device_execution(self, job: Job, thing_name: str, number: int | None) -> Execution:
        runs = job.executions.get(thing_name) or []
        for execution in reversed(runs):
            if number is None or execution.execution_number == number:
                return execution
        raise JobsError("ResourceNotFound",
                        f"Job execution of job {job.job_id} on thing {thing_name} does not exist", job_id=job.job_id)

    @_locked
    def describe_for_device(self, thing_name: str, job_id: str, number: int | None, with_document: bool) -> dict | None:
        from .documents import PresignError

        if job_id == "$next":
            pending = self._pending(thing_name)
            if not pending:
                return None
            job, execution = pending[0]
        else:
            job = self._device_job(job_id, thing_name)
            execution = self._device_execution(job, thing_name, number)
            # "TerminalStateReached: Occurs when a command to describe a job is performed on a job
            # that is in a terminal state": the job is COMPLETED/CANCELED and this execution is done.
            if job.status in ("COMPLETED", "CANCELED") and execution.status in TERMINAL:
                raise JobsError("TerminalStateReached", f"Job {job_id} is {job.status}", job_id=job_id)
        document = None
        if with_document:
            try:
                document = self.document_for(job)
            except PresignError as error:
                raise JobsError("InvalidRequest", str(error), job_id=job.job_id)
        return execution.device_execution(self.clock, document, with_document=with_document)

    @_locked
    def update_for_device(self, thing_name: str, job_id: str, status: str, details: dict | None,
                          expected_version: int | None, number: int | None, step: int | None,
                          include_state: bool, include_document: bool) -> dict:
        from .documents import PresignError

        job = self._device_job(job_id, thing_name)
        execution = self._device_execution(job, thing_name, number)
        if execution.status in TERMINAL:
            raise JobsError("InvalidStateTransition",
                            f"The job execution is {execution.status} and cannot be changed to {status}",
                            execution, job_id)
        if expected_version is not None and expected_version != execution.version:
            raise JobsError("VersionMismatch",
                            f"expectedVersion {expected_version} does not match the job execution's version "
                            f"{execution.version}", execution, job_id)
        if status not in DEVICE_STATUSES:
            raise JobsError("InvalidStateTransition",
                            f"A device cannot set a job execution to {status}", execution, job_id)
        document = None
        if include_document:
            try:
                document = self.document_for(job)
            except PresignError as error:
                raise JobsError("InvalidRequest", str(error), job_id=job_id)
        if details:
            execution.status_details.update(details)
        self._set_status(job, execution, status)
        if step is not None and execution.status == "IN_PROGRESS":
            self._step_timer(job, execution, step)
        answer: dict[str, Any] = {}
        if include_state:
            answer["executionState"] = execution.device_state()
        if include_document:
            answer["jobDocument"] = document
        return answer

    def _step_timer(self, job: Job, execution: Execution, step: int) -> None:
        if execution.status != "IN_PROGRESS":
            return
        if step == -1:  # "A value of -1 ... will cancel the current step timer"
            execution.step_deadline = None
        else:
            deadline = self.clock.monotonic() + self.clock.minutes(step)
            # "The step timer can't exceed the in-progress timer's absolute bound."
            if execution.in_progress_deadline is not None:
                deadline = min(deadline, execution.in_progress_deadline)
            execution.step_deadline = deadline

    # -- the one place executions change status ---------------------------------------------

    def _new_execution(self, job: Job, thing_name: str, thing_arn: str, retry_attempt: int = 0) -> Execution:
        runs = job.executions.setdefault(thing_name, [])
        now = self.clock.wall()
        number = (runs[-1].execution_number + 1) if runs else 1
        execution = Execution(job.job_id, thing_name, thing_arn, number, queued_at=now, last_updated_at=now,
                              retry_attempt=retry_attempt)
        runs.append(execution)
        job.last_updated_at = now
        self._dirty.add(thing_name)
        self._metrics(job, None, "QUEUED")
        return execution

    def _set_status(self, job: Job, execution: Execution, status: str) -> None:
        old = execution.status
        now = self.clock.wall()
        execution.status = status
        execution.version += 1
        execution.last_updated_at = now
        job.last_updated_at = now
        if status == "IN_PROGRESS" and old != "IN_PROGRESS":
            execution.started_at = now
            minutes = (job.timeout or {}).get("inProgressTimeoutInMinutes")
            if minutes:
                # The in-progress timer starts when the execution goes IN_PROGRESS.
                execution.in_progress_deadline = self.clock.monotonic() + self.clock.minutes(minutes)
        if status in TERMINAL:
            execution.in_progress_deadline = execution.step_deadline = None
        self._dirty.add(execution.thing_name)
        if old != status:
            self._metrics(job, old, status)
        if status in TERMINAL and old not in TERMINAL:
            self._after_terminal(job, execution)

    def _after_terminal(self, job: Job, execution: Execution) -> None:
        if execution.status == "SUCCEEDED":
            job.succeeded_since += 1
        if job.status == "IN_PROGRESS" and execution.status in EXECUTED:
            self._check_abort(job)
        if job.status == "IN_PROGRESS" and execution.status in ("FAILED", "TIMED_OUT"):
            self._retry(job, execution)
        self._check_complete(job)

    def _retry(self, job: Job, execution: Execution) -> None:
        """"AWS IoT Jobs will attempt to retry the job execution" for FAILED / TIMED_OUT, per criterion."""
        criteria = (job.retry or {}).get("criteriaList") or []
        used = job.retries_used.setdefault(execution.thing_name, {})
        for failure_type in (execution.status, "ALL"):
            for criterion in criteria:
                if criterion["failureType"] != failure_type:
                    continue
                if used.get(failure_type, 0) < criterion["numberOfRetries"]:
                    used[failure_type] = used.get(failure_type, 0) + 1
                    self._new_execution(job, execution.thing_name, execution.thing_arn,
                                        retry_attempt=execution.retry_attempt + 1)
                    return

    def _check_abort(self, job: Job) -> None:
        criteria = (job.abort or {}).get("criteriaList") or []
        if not criteria:
            return
        executed = [e for e in job.all_executions() if e.status in EXECUTED]
        for criterion in criteria:
            # "AWS IoT doesn't check to see if a job abort should occur until at least
            # [minNumberOfExecutedThings] devices have completed job executions"
            if len(executed) < criterion["minNumberOfExecutedThings"]:
                continue
            kinds = ("FAILED", "REJECTED", "TIMED_OUT") if criterion["failureType"] == "ALL" else (criterion["failureType"],)
            failures = sum(1 for e in executed if e.status in kinds)
            if failures * 100.0 >= criterion["thresholdPercentage"] * len(executed):
                self._abort(job, criterion, failures, len(executed))
                return

    def _abort(self, job: Job, criterion: dict, failures: int, executed: int) -> None:
        # "When the abort criteria is met for canceling a job execution, only QUEUED job executions
        # are canceled. Any queued retries for the device will not be attempted. However, current job
        # executions that have an IN_PROGRESS status will not be canceled." The service "adds
        # auto-populated values for the comment and reasonCode fields".
        comment = (f"Job aborted: {failures} of {executed} executed things "
                   f"({100.0 * failures / executed:.2f}%) had failure type {criterion['failureType']}, "
                   f"threshold {criterion['thresholdPercentage']:g}% after at least "
                   f"{criterion['minNumberOfExecutedThings']} executed things")
        note(f"job {job.job_id}: {comment}")
        self._cancel(job, False, ABORT_REASON, comment)

    def _check_complete(self, job: Job) -> None:
        # "For a snapshot job, the job status changes to COMPLETED when all its job executions enter
        # a terminal state"; "A continuous job ... The status [never becomes] COMPLETED".
        if job.status != "IN_PROGRESS" or job.target_selection != "SNAPSHOT" or job.pending:
            return
        if all(e.status in TERMINAL for e in job.latest()):
            job.status = "COMPLETED"
            job.completed_at = job.last_updated_at = self.clock.wall()

    # -- rollout ---------------------------------------------------------------------------

    def _rollout(self, job: Job) -> None:
        """Notify the next things, at most ``rate`` per (scaled) minute window."""
        if job.status != "IN_PROGRESS" or not job.pending:
            return
        window = int((self.clock.monotonic() - job.rollout_start) // self.clock.minute)
        if window != job.window:
            if job.window >= 0:
                self._maybe_increase(job)
            job.window, job.window_quota, job.window_used = window, job.rate, 0
        while job.pending and job.window_used < job.window_quota and job.status == "IN_PROGRESS":
            name, arn = job.pending.pop(0)
            job.window_used += 1
            job.notified_since += 1
            self._new_execution(job, name, arn)

    def _maybe_increase(self, job: Job) -> None:
        """Exponential rollout, at the start of each window: the rate grows by incrementFactor when
        the things notified, or succeeded, since the last increase reached rateIncreaseCriteria
        (at most one increase per window: AWS's rates are per minute)."""
        exponential = (job.rollout or {}).get("exponentialRate")
        if not exponential or not job.pending:
            return
        criteria = exponential["rateIncreaseCriteria"]
        notified = criteria.get("numberOfNotifiedThings")
        succeeded = criteria.get("numberOfSucceededThings")
        if (notified and job.notified_since >= notified) or (succeeded and job.succeeded_since >= succeeded):
            grown = math.ceil(round(job.rate * float(exponential["incrementFactor"]), 6))
            job.rate = min(job.rate_cap(), max(job.rate + 1, grown))
            job.notified_since = job.succeeded_since = 0

    # -- the ticker ---------------------------------------------------------------------------

    @_locked
    def tick(self) -> None:
        if not self.alive:
            return
        now = self.clock.monotonic()
        for job in list(self.jobs.values()):
            if job.status == "COMPLETED":
                continue  # every execution is terminal: no timer, nothing to roll out
            if job.status == "DELETION_IN_PROGRESS":
                # The executions went at DeleteJob; the job itself disappears a moment later.
                if job.deleting_since is not None and now - job.deleting_since >= TICK:
                    del self.jobs[job.job_id]
                continue
            if job.status == "IN_PROGRESS":
                self._rollout(job)
                if job.target_selection == "CONTINUOUS":
                    self._reconcile(job)
            for execution in job.latest():
                deadline = execution.deadline()
                if execution.status == "IN_PROGRESS" and deadline is not None and now >= deadline:
                    self._set_status(job, execution, "TIMED_OUT")

    # -- notifications and metrics ---------------------------------------------------------

    def _flush(self) -> None:
        """Notifications for the things whose pending list or next execution changed."""
        dirty, self._dirty = self._dirty, set()
        if not self.alive:
            return
        for thing_name in sorted(dirty):
            pending = self._pending(thing_name)
            keys = frozenset((j.job_id, e.execution_number) for j, e in pending)
            next_key = (pending[0][0].job_id, pending[0][1].execution_number) if pending else None
            old_keys, old_next = self._sent.get(thing_name, (frozenset(), None))
            timestamp = int(self.clock.wall())
            base = f"$aws/things/{thing_name}/jobs"
            if keys != old_keys:
                jobs: dict[str, list] = {}
                for _, execution in pending[:NOTIFY_LIST_MAX]:
                    jobs.setdefault(execution.status, []).append(execution.device_summary())
                self._outbox.append((f"{base}/notify", json.dumps({"timestamp": timestamp, "jobs": jobs}).encode()))
            if next_key != old_next:
                message: dict[str, Any] = {"timestamp": timestamp}
                if pending:
                    job, execution = pending[0]
                    try:
                        document, with_document = self.document_for(job), True
                    except Exception as error:  # noqa: BLE001 - PresignError: sent without the document
                        note(f"notify-next for {thing_name}: job document left out: {error}")
                        document, with_document = None, False
                    message["execution"] = execution.device_execution(self.clock, document, with_document)
                self._outbox.append((f"{base}/notify-next", json.dumps(message).encode()))
            if keys or next_key is not None:
                self._sent[thing_name] = (keys, next_key)
            else:
                self._sent.pop(thing_name, None)
        outbox, self._outbox = self._outbox, []
        for topic, payload in outbox:
            for listener in list(_listeners):
                try:
                    listener(self.account, self.region, topic, payload)
                except Exception as error:  # noqa: BLE001
                    note(f"notification listener failed: {error!r}")

    def _metrics(self, job: Job, old: str | None, new: str) -> None:
        if (self.account, self.region) != (METRICS_ACCOUNT, METRICS_REGION):
            return
        import metrics

        dimensions = {"JobId": job.job_id}
        if new in METRIC_PREFIX:
            metrics.record(f"{METRIC_PREFIX[new]}JobExecutionCount", 1.0, dimensions)
        executions = job.all_executions()
        for status in {old, new}:
            if status in METRIC_PREFIX:
                total = sum(1 for e in executions if e.status == status)
                metrics.record(f"{METRIC_PREFIX[status]}JobExecutionTotalCount", float(total), dimensions)

    def client_error(self, job_id: str | None) -> None:
        """ClientErrorCount: "The number of client errors generated while executing the job"."""
        if job_id and job_id in self.jobs and (self.account, self.region) == (METRICS_ACCOUNT, METRICS_REGION):
            import metrics

            metrics.record("ClientErrorCount", 1.0, {"JobId": job_id})
