"""Fix: AWS IoT Jobs' control plane, backed by the emulator's jobs engine (emulator/jobs/).

Operations (moto's IoTResponse handlers replaced; the request log names them
from botocore's model as before)::

    CreateJob, DescribeJob, CancelJob, DeleteJob, ListJobs, GetJobDocument,
    DescribeJobExecution, CancelJobExecution, DeleteJobExecution,
    ListJobExecutionsForJob, ListJobExecutionsForThing,
    CreateJobTemplate, DescribeJobTemplate, DeleteJobTemplate, ListJobTemplates

What AWS does: the API reference pages of those operations, the developer
guide's "Jobs" chapter (see jobs/engine.py and emulator/README.md, "Jobs").

What moto 5.2.1 does instead
    Executions never leave QUEUED, numberOfQueuedThings is always 1, thing
    group targets are not expanded, jobTemplateArn, documentSource and the
    rollout / abort / timeout / retry configurations are stored and ignored,
    a duplicate jobId silently replaces the job, CancelJob of an IN_PROGRESS
    job with force=false cancels nothing and sets status CANCELED, executions
    have executionNumber/versionNumber 123, and there is no device API.

What this fix does
    Every handler above works on the account/region's ``jobs.Engine`` (kept on
    moto's IoT backend: ``/moto-api/reset`` drops it and stops its timers).
    Inputs are checked with AWS's ranges (jobs/validate.py; every refusal is
    InvalidRequestException 400); a duplicate jobId is
    ResourceAlreadyExistsException 409, a duplicate template id
    ConflictException 409; unknown jobs, templates, executions, things or
    thing groups are ResourceNotFoundException 404; forbidden state changes
    (DeleteJob of an IN_PROGRESS job without force, CancelJobExecution of an
    IN_PROGRESS execution without force or of a terminal one, DeleteJobExecution
    of a pending one without force) are InvalidStateTransitionException 409;
    CancelJobExecution's expectedVersion mismatch is VersionConflictException 409.
    Moto's own job dictionaries are not used.

    Membership: AddThingToThingGroup / RemoveThingFromThingGroup /
    UpdateThingGroupsForThing / DeleteThingGroup / DeleteThing tell the engine
    at once (CONTINUOUS jobs follow their groups; a deleted thing's pending
    executions become REMOVED); things put into a group another way (the
    provisioning template engine, bulk registration) are picked up by the
    engine's ticker within 50 ms.
"""

from __future__ import annotations

import json
from typing import Any

from ._util import truthy

JOB_STATUSES = ("IN_PROGRESS", "CANCELED", "COMPLETED", "DELETION_IN_PROGRESS", "SCHEDULED")
EXECUTION_STATUSES = ("QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED")
DEFAULT_PAGE = 50
MAX_PAGE = 250


def _engine(response):
    from jobs import engine_for

    return engine_for(response.iot_backend)


def _invalid(message: str):
    from moto.iot.exceptions import InvalidRequestException

    return InvalidRequestException(message)


def _not_found(message: str):
    from moto.iot.exceptions import ResourceNotFoundException

    return ResourceNotFoundException(message)


def _arn(response, kind: str, name: str) -> str:
    from moto.utilities.utils import get_partition

    region = response.region
    return f"arn:{get_partition(region)}:iot:{region}:{response.current_account}:{kind}/{name}"


def _int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _invalid(f"{name} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _invalid(f"{name} must be an integer")


def _page(response, items: list) -> tuple[list, str | None]:
    size = _int(response._get_param("maxResults"), "maxResults")
    size = DEFAULT_PAGE if size is None else size
    if not 1 <= size <= MAX_PAGE:
        raise _invalid(f"maxResults must be between 1 and {MAX_PAGE}")
    token = response._get_param("nextToken")
    try:
        start = int(token) if token else 0
    except ValueError:
        raise _invalid("The nextToken is not valid")
    if start < 0:
        raise _invalid("The nextToken is not valid")
    return items[start:start + size], (str(start + size) if start + size < len(items) else None)


def _answer(document: dict) -> str:
    return json.dumps({k: v for k, v in document.items() if v is not None})


def _status_filter(value: Any, allowed: tuple) -> str | None:
    if value in (None, ""):
        return None
    if value not in allowed:
        raise _invalid(f"status must be one of {', '.join(allowed)}")
    return value


def _details(value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _invalid("statusDetails must be a map of strings")
    if len(value) > 10:
        raise _invalid("statusDetails may hold at most 10 name/value pairs")
    return dict(value)


# -- documents and templates --------------------------------------------------------------


def _document(response, document: Any, source: Any, what: str) -> tuple[str, str | None]:
    """(document text, documentSource) of a create request: exactly one of the two."""
    from jobs import documents, validate

    if document is not None and source is not None:
        raise _invalid(f"{what}: give either document or documentSource, not both")
    if document is None and source is None:
        raise _invalid(f"{what}: a document or a documentSource is required")
    if source is not None:
        if not isinstance(source, str) or not 1 <= len(source) <= 1350:
            raise _invalid("documentSource must be 1-1350 characters")
        return validate.document_text(documents.read_source(response.current_account, source)), source
    return validate.document_text(document), None


def _template_by_arn(response, arn: Any):
    engine = _engine(response)
    for template in engine.templates.values():
        if template.arn == arn:
            return template
    raise _not_found(f"Job template {arn} does not exist")


def _create_job(self):
    from jobs import validate
    from jobs.engine import Job

    engine = _engine(self)
    job_id = validate.job_id(self._get_param("jobId"))
    template_arn = self._get_param("jobTemplateArn")
    template = _template_by_arn(self, template_arn) if template_arn is not None else None
    if self._get_param("documentParameters"):
        # "documentParameters can only be used when creating jobs from AWS managed templates"
        raise _invalid("documentParameters can only be used with AWS managed job templates")

    def given(name: str, from_template: Any) -> Any:
        value = self._get_param(name)
        return from_template if value is None and template is not None else value

    document, source = self._get_param("document"), self._get_param("documentSource")
    if document is None and source is None and template is not None:
        document, source = template.document, template.document_source
    text, source = _document(self, document, source, "CreateJob")
    targets = engine.check_targets(self._get_param("targets"))
    job = Job(
        job_id=job_id,
        arn=_arn(self, "job", job_id),
        targets=targets,
        target_selection=validate.target_selection(self._get_param("targetSelection")),
        document=text,
        document_source=source,
        created_at=0.0,
        description=validate.description(self._get_param("description")),
        presigned_url_config=validate.presigned_url_config(
            given("presignedUrlConfig", template.presigned_url_config if template else None)),
        rollout=validate.rollout_config(given("jobExecutionsRolloutConfig", template.rollout if template else None)),
        abort=validate.abort_config(given("abortConfig", template.abort if template else None)),
        timeout=validate.timeout_config(given("timeoutConfig", template.timeout if template else None)),
        retry=validate.retry_config(given("jobExecutionsRetryConfig", template.retry if template else None)),
        scheduling=self._get_param("schedulingConfig"),
        template_arn=template.arn if template else None,
        destination_package_versions=self._get_param("destinationPackageVersions"),
    )
    tags = validate.tags(self._get_param("tags"))
    engine.create_job(job)
    if tags:
        from .iot_tags import _tags

        _tags(self.iot_backend).setdefault(job.arn, {}).update(tags)
    return _answer({"jobArn": job.arn, "jobId": job.job_id, "description": job.description})


def _describe_job(self):
    job = _engine(self).job(self._get_param("jobId"))
    return _answer({"documentSource": job.document_source, "job": job.describe()})


def _get_job_document(self):
    job = _engine(self).job(self._get_param("jobId"))
    # "placeholder URLs aren't replaced by presigned Amazon S3 URLs" here.
    return _answer({"document": job.document})


def _cancel_job(self):
    job = _engine(self).cancel_job(
        self._get_param("jobId"),
        truthy(self._get_param("force")),
        self._get_param("reasonCode"),
        self._get_param("comment"),
    )
    return _answer({"jobArn": job.arn, "jobId": job.job_id, "description": job.description})


def _delete_job(self):
    _engine(self).delete_job(self._get_param("jobId"), truthy(self._get_param("force")))
    return "{}"


def _list_jobs(self):
    engine = _engine(self)
    status = _status_filter(self._get_param("status"), JOB_STATUSES)
    selection = self._get_param("targetSelection") or None
    if selection is not None and selection not in ("SNAPSHOT", "CONTINUOUS"):
        raise _invalid("targetSelection must be SNAPSHOT or CONTINUOUS")
    group_arn = None
    group_name, group_id = self._get_param("thingGroupName"), self._get_param("thingGroupId")
    if group_name:
        group_arn = self.iot_backend.describe_thing_group(group_name).arn
    elif group_id:
        group = next((g for g in self.iot_backend.thing_groups.values() if g.thing_group_id == group_id), None)
        if group is None:
            raise _not_found(f"Thing group {group_id} does not exist")
        group_arn = group.arn
    jobs = engine.list_jobs(status, selection, group_arn)
    page, token = _page(self, jobs)
    return _answer({"jobs": [j.summary(engine.group_id_of(j)) for j in page], "nextToken": token})


def _describe_job_execution(self):
    engine = _engine(self)
    execution = engine.describe_execution(
        self._get_param("jobId"), self._get_param("thingName"),
        _int(self._get_param("executionNumber"), "executionNumber"))
    return _answer({"execution": execution.control_execution(engine.clock)})


def _cancel_job_execution(self):
    _engine(self).cancel_execution(
        self._get_param("jobId"),
        self._get_param("thingName"),
        truthy(self._get_param("force")),
        _int(self._get_param("expectedVersion"), "expectedVersion"),
        _details(self._get_param("statusDetails")),
    )
    return "{}"


def _delete_job_execution(self):
    number = _int(self._get_param("executionNumber"), "executionNumber")
    if number is None:
        raise _invalid("executionNumber is required")
    _engine(self).delete_execution(
        self._get_param("jobId"), self._get_param("thingName"), number, truthy(self._get_param("force")))
    return "{}"


def _list_job_executions_for_job(self):
    engine = _engine(self)
    job = engine.job(self._get_param("jobId"))
    status = _status_filter(self._get_param("status"), EXECUTION_STATUSES)
    found = [e for e in job.all_executions() if status is None or e.status == status]
    page, token = _page(self, found)
    return _answer({
        "executionSummaries": [{"thingArn": e.thing_arn, "jobExecutionSummary": e.control_summary()} for e in page],
        "nextToken": token,
    })


def _list_job_executions_for_thing(self):
    engine = _engine(self)
    status = _status_filter(self._get_param("status"), EXECUTION_STATUSES)
    found = engine.executions_for_thing(self._get_param("thingName"), status, self._get_param("jobId") or None)
    page, token = _page(self, found)
    return _answer({
        "executionSummaries": [{"jobId": e.job_id, "jobExecutionSummary": e.control_summary()} for e in page],
        "nextToken": token,
    })


# -- job templates --------------------------------------------------------------------------


def _create_job_template(self):
    from moto.iot.exceptions import ConflictException

    from jobs import validate
    from jobs.engine import Template

    engine = _engine(self)
    template_id = validate.job_id(self._get_param("jobTemplateId"), "jobTemplateId")
    base_arn = self._get_param("jobArn")
    base = None
    if base_arn is not None:
        base = next((j for j in engine.jobs.values() if j.arn == base_arn), None)
        if base is None:
            raise _not_found(f"Job {base_arn} does not exist")

    def given(name: str, from_job: Any) -> Any:
        value = self._get_param(name)
        return from_job if value is None and base is not None else value

    if given("description", base.description if base else None) is None:
        raise _invalid("description is required")  # CreateJobTemplate's model requires it
    document, source = self._get_param("document"), self._get_param("documentSource")
    if document is None and source is None and base is not None:
        document, source = (base.document, None) if base.document_source is None else (None, base.document_source)
    with engine.lock:
        if template_id in engine.templates:
            raise ConflictException(template_id)
        text, source = _document(self, document, source, "CreateJobTemplate")
        template = Template(
            template_id=template_id,
            arn=_arn(self, "jobtemplate", template_id),
            created_at=engine.clock.wall(),
            description=validate.description(given("description", base.description if base else None)),
            document=None if source is not None else text,
            document_source=source,
            presigned_url_config=validate.presigned_url_config(
                given("presignedUrlConfig", base.presigned_url_config if base else None)),
            rollout=validate.rollout_config(given("jobExecutionsRolloutConfig", base.rollout if base else None)),
            abort=validate.abort_config(given("abortConfig", base.abort if base else None)),
            timeout=validate.timeout_config(given("timeoutConfig", base.timeout if base else None)),
            retry=validate.retry_config(given("jobExecutionsRetryConfig", base.retry if base else None)),
            maintenance_windows=self._get_param("maintenanceWindows"),
            destination_package_versions=self._get_param("destinationPackageVersions"),
        )
        engine.templates[template_id] = template
    tags = validate.tags(self._get_param("tags"))
    if tags:
        from .iot_tags import _tags

        _tags(self.iot_backend).setdefault(template.arn, {}).update(tags)
    return _answer({"jobTemplateArn": template.arn, "jobTemplateId": template.template_id})


def _template(self):
    template_id = self._get_param("jobTemplateId")
    template = _engine(self).templates.get(template_id) if isinstance(template_id, str) else None
    if template is None:
        raise _not_found(f"Job template {template_id} does not exist")
    return template


def _describe_job_template(self):
    return _answer(_template(self).describe())


def _delete_job_template(self):
    template = _template(self)
    engine = _engine(self)
    with engine.lock:
        engine.templates.pop(template.template_id, None)
    return "{}"


def _list_job_templates(self):
    engine = _engine(self)
    templates = sorted(engine.templates.values(), key=lambda t: t.created_at)
    page, token = _page(self, templates)
    return _answer({"jobTemplates": [t.summary() for t in page], "nextToken": token})


HANDLERS = {
    "create_job": _create_job,
    "describe_job": _describe_job,
    "get_job_document": _get_job_document,
    "cancel_job": _cancel_job,
    "delete_job": _delete_job,
    "list_jobs": _list_jobs,
    "describe_job_execution": _describe_job_execution,
    "cancel_job_execution": _cancel_job_execution,
    "delete_job_execution": _delete_job_execution,
    "list_job_executions_for_job": _list_job_executions_for_job,
    "list_job_executions_for_thing": _list_job_executions_for_thing,
    "create_job_template": _create_job_template,
    "describe_job_template": _describe_job_template,
    "delete_job_template": _delete_job_template,
    "list_job_templates": _list_job_templates,
}


# -- the engine hears about membership changes and resets -------------------------------------

MARK = "_iotreg_jobs_hook"


def _hook(owner, name: str, after) -> None:
    """Wrap ``owner.name`` (whatever is installed now) so that ``after(self, args, kwargs)`` runs
    after it; applied again, a wrapper that is already in place is left alone."""
    current = getattr(owner, name)
    if getattr(current, MARK, False):
        return

    def wrapper(self, *args, **kwargs):
        result = current(self, *args, **kwargs)
        after(self, args, kwargs)
        return result

    setattr(wrapper, MARK, True)
    wrapper.__name__ = name
    setattr(owner, name, wrapper)


def _engine_of(backend):
    from jobs.engine import ENGINE_KEY

    engine = backend.__dict__.get(ENGINE_KEY)
    return engine if engine is not None and engine.jobs else None


def _membership_changed(backend, args, kwargs) -> None:
    engine = _engine_of(backend)
    if engine is not None:
        engine.reconcile()


def _thing_deleted(backend, args, kwargs) -> None:
    engine = _engine_of(backend)
    if engine is not None:
        engine.thing_deleted(kwargs.get("thing_name") or (args[0] if args else ""))


def _before_reset(original):
    def reset(self, *args, **kwargs):
        from jobs.engine import forget

        forget(self)
        return original(self, *args, **kwargs)

    setattr(reset, MARK, True)
    return reset


def apply() -> None:
    from moto.iot.models import IoTBackend
    from moto.iot.responses import IoTResponse

    from ._util import patch

    for name, handler in HANDLERS.items():
        patch(IoTResponse, name, handler)
    for name in ("add_thing_to_thing_group", "remove_thing_from_thing_group", "delete_thing_group"):
        _hook(IoTBackend, name, _membership_changed)
    _hook(IoTBackend, "delete_thing", _thing_deleted)
    if not getattr(IoTBackend.reset, MARK, False):
        IoTBackend.reset = _before_reset(IoTBackend.reset)
