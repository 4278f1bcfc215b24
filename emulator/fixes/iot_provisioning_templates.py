"""Fix: IoT provisioning templates and their versions (the fleet provisioning control plane).

AWS behaviour restored (API reference of each operation and botocore's IoT model)
    * ``CreateProvisioningTemplate`` (``POST /provisioning-templates``):
      ``templateName`` (required, 1-36 characters of ``[0-9A-Za-z_-]``),
      ``templateBody`` (required, at most 10240 characters, a JSON template),
      ``provisioningRoleArn`` (required, 20-2048 characters, an IAM role ARN),
      ``description`` (at most 500 characters), ``enabled`` (default false),
      ``preProvisioningHook`` ``{targetArn, payloadVersion}`` (only for type
      ``FLEET_PROVISIONING``; ``payloadVersion`` 10-32 characters of
      ``[0-9-]``, and ``2020-04-01`` is the one version there is, also the
      default; the target must be a Lambda function of the account: "This
      Lambda function must exist in your account before you provision a
      device"), ``tags``, ``type`` ``FLEET_PROVISIONING`` (default) | ``JITP``
      (cannot be changed later).  Answers ``{templateArn, templateName,
      defaultVersionId}``; the body becomes version 1, the default.  The ARN
      is ``arn:aws:iot:REGION:ACCOUNT:provisioningtemplate/NAME``.  A name
      already used -> ResourceAlreadyExistsException (409).
    * ``DescribeProvisioningTemplate`` (``GET /provisioning-templates/{name}``):
      ``templateArn, templateName, description, creationDate,
      lastModifiedDate, defaultVersionId, templateBody`` (of the default
      version) ``, enabled, provisioningRoleArn, preProvisioningHook, type``.
    * ``UpdateProvisioningTemplate`` (``PATCH``): ``description``, ``enabled``,
      ``defaultVersionId`` (must be a version of the template),
      ``provisioningRoleArn``, ``preProvisioningHook``,
      ``removePreProvisioningHook``; empty answer.
    * ``DeleteProvisioningTemplate`` (``DELETE``): the template and all its
      versions (and its tags).
    * ``ListProvisioningTemplates`` (``GET /provisioning-templates``,
      ``maxResults`` 1-250, ``nextToken``): ``templates`` of
      ``{templateArn, templateName, description, creationDate,
      lastModifiedDate, enabled, type}``.
    * ``CreateProvisioningTemplateVersion`` (``POST .../versions?setAsDefault``):
      ``{templateArn, templateName, versionId, isDefaultVersion}``; at most 5
      versions per template -> VersionsLimitExceededException (409).
    * ``DescribeProvisioningTemplateVersion`` (``GET .../versions/{versionId}``):
      ``{versionId, creationDate, templateBody, isDefaultVersion}``.
    * ``ListProvisioningTemplateVersions`` (``GET .../versions``, paged):
      ``versions`` of ``{versionId, creationDate, isDefaultVersion}``.
    * ``DeleteProvisioningTemplateVersion`` (``DELETE .../versions/{id}``):
      the default version cannot be deleted.
    * Unknown template or version -> ResourceNotFoundException (404); a bad
      parameter -> InvalidRequestException (400).
    * Tags: ``tags`` of the create call, then TagResource / UntagResource /
      ListTagsForResource on the template ARN (stored by the ``iot_tags``
      fix, which knows the ``provisioningtemplate`` resource kind).

What moto 5.2.1 does instead
    None of these operations is implemented: moto finds them in botocore's
    model (``IoTResponse.dispatch``) and answers 404 "Action
    create_provisioning_template has not been implemented".

Where the emulator guesses (not found in AWS's documentation)
    * Template body checks: a JSON object; ``Resources`` an object whose
      entries each have a ``Type`` of ``AWS::IoT::Thing``,
      ``AWS::IoT::Certificate`` or ``AWS::IoT::Policy`` and, if present, an
      object ``Properties``; ``Parameters`` (if present) an object of objects
      whose ``Type`` (if present) is ``String``; ``DeviceConfiguration`` (if
      present) an object; ``Mappings`` and ``Conditions`` allowed; no other
      top-level key (the engine checks the rest when it renders).  AWS validates templates
      but does not document the rules or messages.
    * The role ARN is checked for its form only
      (``arn:aws:iam::<12 digits>:role/<name>``) at create/update; whether
      the role exists is checked when a device is provisioned (see
      ``emulator/gateway/provisioning.py``).
    * The hook's function must exist (Lambda GetFunction of the ARN, in the
      template's account/region) when the template is created or its hook
      updated.
    * Deleting the default version -> DeleteConflictException (409): the
      operation's model lists it, and DeletePolicyVersion of a default
      version is refused the same way on AWS; the message is the emulator's.
    * ``defaultVersionId`` naming no version -> ResourceNotFoundException;
      ``preProvisioningHook`` together with ``removePreProvisioningHook`` ->
      InvalidRequestException; a hook on a JITP template ->
      InvalidRequestException.
    * ``description`` is left out of Describe/List answers when it was never
      set (as GetTopicRule does on AWS).
    * Listing order: by template name; versions by id.  ``nextToken`` is the
      emulator's own (a decimal offset).
"""

from __future__ import annotations

import datetime
import json
import re
import threading
from dataclasses import dataclass, field

from ._util import patch, truthy

NAME_RE = re.compile(r"^[0-9A-Za-z_-]{1,36}$")
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}$")
LAMBDA_ARN_RE = re.compile(
    r"^arn:aws[a-z-]*:lambda:([a-z0-9-]+):(\d{12}):function:([A-Za-z0-9_-]{1,64})(?::(\$LATEST|[A-Za-z0-9_-]+))?$"
)
PAYLOAD_VERSIONS = ("2020-04-01",)
TYPES = ("FLEET_PROVISIONING", "JITP")
RESOURCE_TYPES = ("AWS::IoT::Thing", "AWS::IoT::Certificate", "AWS::IoT::Policy")
TOP_LEVEL_KEYS = ("Parameters", "Mappings", "Conditions", "Resources", "DeviceConfiguration")
MAX_VERSIONS = 5
MAX_BODY = 10240
MAX_DESCRIPTION = 500
STORE = "_emulator_provisioning_templates"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass
class Version:
    version_id: int
    body: str
    created: datetime.datetime


@dataclass
class Template:
    name: str
    arn: str
    account: str
    region: str
    description: str | None
    enabled: bool
    role_arn: str
    hook: dict | None
    type: str
    created: datetime.datetime
    modified: datetime.datetime
    versions: dict[int, Version] = field(default_factory=dict)
    default_version_id: int = 1
    next_version_id: int = 1

    @property
    def body(self) -> str:
        """The default version's body: what RegisterThing provisions with."""
        return self.versions[self.default_version_id].body


_store_lock = threading.Lock()


def templates(backend) -> dict[str, Template]:
    """The templates of one IoT backend (kept on it, so /moto-api/reset clears them)."""
    store = backend.__dict__.get(STORE)
    if store is None:
        with _store_lock:
            store = backend.__dict__.get(STORE)
            if store is None:
                store = {}
                setattr(backend, STORE, store)
    return store


def get_template(backend, name: str) -> Template | None:
    return templates(backend).get(name)


# -- validation ------------------------------------------------------------------


def _invalid(message: str):
    from moto.iot.exceptions import InvalidRequestException

    return InvalidRequestException(message)


def _not_found(message: str):
    from moto.iot.exceptions import ResourceNotFoundException

    return ResourceNotFoundException(message)


def _check_name(name) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _invalid(
            f"1 validation error detected: Value '{name}' at 'templateName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: ^[0-9A-Za-z_-]+$ "
            "and have length between 1 and 36"
        )
    return name


def validate_body(body) -> dict:
    """The parsed template; InvalidRequestException when it is not a template (see docstring)."""
    if not isinstance(body, str):
        raise _invalid("templateBody is required")
    if len(body) > MAX_BODY:
        raise _invalid(f"templateBody must be at most {MAX_BODY} characters")
    try:
        document = json.loads(body)
    except ValueError as error:
        raise _invalid(f"The template body is not valid JSON: {error}")
    if not isinstance(document, dict):
        raise _invalid("The template body must be a JSON object")
    unknown = [key for key in document if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise _invalid(f"Invalid template: unknown top-level key(s) {', '.join(map(repr, unknown))}")
    resources = document.get("Resources")
    if not isinstance(resources, dict):
        raise _invalid("Invalid template: Resources must be an object")
    for logical, resource in resources.items():
        if not isinstance(resource, dict):
            raise _invalid(f"Invalid template: resource {logical!r} must be an object")
        if resource.get("Type") not in RESOURCE_TYPES:
            raise _invalid(
                f"Invalid template: resource {logical!r} has Type {resource.get('Type')!r}; "
                f"supported: {', '.join(RESOURCE_TYPES)}"
            )
        if "Properties" in resource and not isinstance(resource["Properties"], dict):
            raise _invalid(f"Invalid template: Properties of resource {logical!r} must be an object")
    parameters = document.get("Parameters", {})
    if not isinstance(parameters, dict):
        raise _invalid("Invalid template: Parameters must be an object")
    for name, declaration in parameters.items():
        if not isinstance(declaration, dict):
            raise _invalid(f"Invalid template: parameter {name!r} must be an object")
        if declaration.get("Type", "String") != "String":
            raise _invalid(f"Invalid template: parameter {name!r} has Type {declaration.get('Type')!r}; supported: String")
    if not isinstance(document.get("DeviceConfiguration", {}), dict):
        raise _invalid("Invalid template: DeviceConfiguration must be an object")
    return document


def _check_role(role_arn) -> str:
    if not isinstance(role_arn, str) or not (20 <= len(role_arn) <= 2048) or not ROLE_ARN_RE.match(role_arn):
        raise _invalid(f"provisioningRoleArn {role_arn!r} is not a valid IAM role ARN")
    return role_arn


def _check_description(description) -> str | None:
    if description is None:
        return None
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise _invalid(f"description must be a string of at most {MAX_DESCRIPTION} characters")
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in description):
        raise _invalid("description must not contain control characters")
    return description


def _check_hook(hook, template_type: str, account: str, region: str) -> dict:
    if not isinstance(hook, dict) or not hook.get("targetArn"):
        raise _invalid("preProvisioningHook.targetArn is required")
    if template_type != "FLEET_PROVISIONING":
        raise _invalid("A pre-provisioning hook is only supported for templates of type FLEET_PROVISIONING")
    target = hook["targetArn"]
    version = hook.get("payloadVersion") or PAYLOAD_VERSIONS[0]
    if not isinstance(version, str) or not (10 <= len(version) <= 32) or not re.fullmatch(r"[0-9-]+", version):
        raise _invalid(f"preProvisioningHook.payloadVersion {version!r} is not valid")
    if version not in PAYLOAD_VERSIONS:
        raise _invalid(
            f"preProvisioningHook.payloadVersion {version!r} is not supported; supported: {', '.join(PAYLOAD_VERSIONS)}"
        )
    match = LAMBDA_ARN_RE.match(str(target)) if len(str(target)) <= 2048 else None
    if not match:
        raise _invalid(f"preProvisioningHook.targetArn {target!r} is not a Lambda function ARN")
    if match.group(2) != account or match.group(1) != region:
        raise _invalid(f"The pre-provisioning hook function {target} must be in account {account}, region {region}")
    from moto.awslambda.utils import get_backend

    try:
        get_backend(account, region).get_function(target)
    except Exception:  # noqa: BLE001 - moto's UnknownFunctionException and the like
        raise _invalid(f"The pre-provisioning hook function {target} does not exist")
    return {"targetArn": target, "payloadVersion": version}


def _describe_template(template: Template) -> dict:
    answer = {
        "templateArn": template.arn,
        "templateName": template.name,
        "creationDate": template.created,
        "lastModifiedDate": template.modified,
        "defaultVersionId": template.default_version_id,
        "templateBody": template.body,
        "enabled": template.enabled,
        "provisioningRoleArn": template.role_arn,
        "type": template.type,
    }
    if template.hook is not None:
        answer["preProvisioningHook"] = dict(template.hook)
    if template.description is not None:
        answer["description"] = template.description
    return answer


def _without_none(item: dict) -> dict:
    return {k: v for k, v in item.items() if v is not None}


def _page(items: list, max_results, next_token) -> tuple[list, str | None]:
    try:
        size = int(max_results) if max_results not in (None, "") else 250
    except (TypeError, ValueError):
        raise _invalid(f"maxResults {max_results!r} is not a number")
    if not 1 <= size <= 250:
        raise _invalid("maxResults must be between 1 and 250")
    try:
        start = int(next_token) if next_token else 0
    except ValueError:
        raise _invalid("The nextToken is not valid")
    if start < 0 or start > len(items):
        raise _invalid("The nextToken is not valid")
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)


def _template_or_404(backend, name) -> Template:
    _check_name(name)
    template = get_template(backend, name)
    if template is None:
        raise _not_found(f"The provisioning template {name} does not exist")
    return template


def _version_id(raw) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise _invalid(f"versionId {raw!r} is not a number")


# -- handlers (IoTResponse methods) ------------------------------------------------


def _create_provisioning_template(self):
    from moto.core.responses import ActionResult
    from moto.iot.exceptions import ResourceAlreadyExistsException

    backend = self.iot_backend
    name = _check_name(self._get_param("templateName"))
    body = self._get_param("templateBody")
    validate_body(body)
    role_arn = _check_role(self._get_param("provisioningRoleArn"))
    description = _check_description(self._get_param("description"))
    template_type = self._get_param("type") or "FLEET_PROVISIONING"
    if template_type not in TYPES:
        raise _invalid(f"type must be one of {', '.join(TYPES)}")
    hook = self._get_param("preProvisioningHook")
    if hook is not None:
        hook = _check_hook(hook, template_type, backend.account_id, backend.region_name)
    store = templates(backend)
    arn = f"arn:aws:iot:{backend.region_name}:{backend.account_id}:provisioningtemplate/{name}"
    if name in store:
        raise ResourceAlreadyExistsException(f"The provisioning template {name} already exists", name, arn)
    now = _now()
    template = Template(
        name=name, arn=arn, account=backend.account_id, region=backend.region_name,
        description=description, enabled=truthy(self._get_param("enabled")), role_arn=role_arn,
        hook=hook, type=template_type, created=now, modified=now,
    )
    template.versions[1] = Version(1, body, now)
    template.default_version_id = 1
    template.next_version_id = 2
    store[name] = template
    tags = self._get_param("tags") or []
    if tags:
        from . import iot_tags

        iot_tags._tags(backend).setdefault(arn, {}).update(iot_tags._tag_list_to_dict(tags))
    return ActionResult({"templateArn": arn, "templateName": name, "defaultVersionId": 1})


def _describe_provisioning_template(self):
    from moto.core.responses import ActionResult

    template = _template_or_404(self.iot_backend, self._get_param("templateName"))
    return ActionResult(_describe_template(template))


def _update_provisioning_template(self):
    from moto.core.responses import EmptyResult

    backend = self.iot_backend
    template = _template_or_404(backend, self._get_param("templateName"))
    description = self._get_param("description")
    enabled = self._get_param("enabled")
    default_version = self._get_param("defaultVersionId")
    role_arn = self._get_param("provisioningRoleArn")
    hook = self._get_param("preProvisioningHook")
    remove_hook = truthy(self._get_param("removePreProvisioningHook"))
    if hook is not None and remove_hook:
        raise _invalid("preProvisioningHook and removePreProvisioningHook cannot be used together")
    # Check everything before changing anything: a refused update changes nothing.
    if description is not None:
        description = _check_description(description)
    if role_arn is not None:
        _check_role(role_arn)
    if default_version is not None:
        default_version = _version_id(default_version)
        if default_version not in template.versions:
            raise _not_found(f"Version {default_version} of provisioning template {template.name} does not exist")
    if hook is not None:
        hook = _check_hook(hook, template.type, backend.account_id, backend.region_name)
    if description is not None:
        template.description = description
    if enabled is not None:
        template.enabled = truthy(enabled)
    if role_arn is not None:
        template.role_arn = role_arn
    if default_version is not None:
        template.default_version_id = default_version
    if hook is not None:
        template.hook = hook
    if remove_hook:
        template.hook = None
    template.modified = _now()
    return EmptyResult()


def _delete_provisioning_template(self):
    from moto.core.responses import EmptyResult

    backend = self.iot_backend
    template = _template_or_404(backend, self._get_param("templateName"))
    del templates(backend)[template.name]
    from . import iot_tags

    iot_tags._tags(backend).pop(template.arn, None)
    return EmptyResult()


def _list_provisioning_templates(self):
    from moto.core.responses import ActionResult

    everything = sorted(templates(self.iot_backend).values(), key=lambda t: t.name)
    page, token = _page(everything, self._get_param("maxResults"), self._get_param("nextToken"))
    answer = {
        "templates": [
            _without_none(
                {
                    "templateArn": t.arn,
                    "templateName": t.name,
                    "description": t.description,
                    "creationDate": t.created,
                    "lastModifiedDate": t.modified,
                    "enabled": t.enabled,
                    "type": t.type,
                }
            )
            for t in page
        ]
    }
    if token:
        answer["nextToken"] = token
    return ActionResult(answer)


def _create_provisioning_template_version(self):
    from moto.core.responses import ActionResult
    from moto.iot.exceptions import IoTClientError

    template = _template_or_404(self.iot_backend, self._get_param("templateName"))
    body = self._get_param("templateBody")
    validate_body(body)
    if len(template.versions) >= MAX_VERSIONS:
        # moto's VersionsLimitExceededException speaks of policies; same code, this message.
        error = IoTClientError(
            "VersionsLimitExceededException",
            f"The provisioning template {template.name} already has the maximum number of versions ({MAX_VERSIONS})",
        )
        error.code = 409
        raise error
    now = _now()
    version_id = template.next_version_id
    template.next_version_id += 1
    template.versions[version_id] = Version(version_id, body, now)
    set_default = truthy(self._get_param("setAsDefault"))
    if set_default:
        template.default_version_id = version_id
    template.modified = now
    return ActionResult(
        {
            "templateArn": template.arn,
            "templateName": template.name,
            "versionId": version_id,
            "isDefaultVersion": set_default,
        }
    )


def _version_or_404(template: Template, raw) -> Version:
    version_id = _version_id(raw)
    version = template.versions.get(version_id)
    if version is None:
        raise _not_found(f"Version {version_id} of provisioning template {template.name} does not exist")
    return version


def _describe_provisioning_template_version(self):
    from moto.core.responses import ActionResult

    template = _template_or_404(self.iot_backend, self._get_param("templateName"))
    version = _version_or_404(template, self._get_param("versionId"))
    return ActionResult(
        {
            "versionId": version.version_id,
            "creationDate": version.created,
            "templateBody": version.body,
            "isDefaultVersion": version.version_id == template.default_version_id,
        }
    )


def _list_provisioning_template_versions(self):
    from moto.core.responses import ActionResult

    template = _template_or_404(self.iot_backend, self._get_param("templateName"))
    versions = [template.versions[k] for k in sorted(template.versions)]
    page, token = _page(versions, self._get_param("maxResults"), self._get_param("nextToken"))
    answer = {
        "versions": [
            {
                "versionId": v.version_id,
                "creationDate": v.created,
                "isDefaultVersion": v.version_id == template.default_version_id,
            }
            for v in page
        ]
    }
    if token:
        answer["nextToken"] = token
    return ActionResult(answer)


def _delete_provisioning_template_version(self):
    from moto.core.responses import EmptyResult
    from moto.iot.exceptions import DeleteConflictException

    template = _template_or_404(self.iot_backend, self._get_param("templateName"))
    version = _version_or_404(template, self._get_param("versionId"))
    if version.version_id == template.default_version_id:
        raise DeleteConflictException(
            f"Cannot delete the default version ({version.version_id}) of provisioning template {template.name}"
        )
    del template.versions[version.version_id]
    template.modified = _now()
    return EmptyResult()


HANDLERS = {
    "create_provisioning_template": _create_provisioning_template,
    "describe_provisioning_template": _describe_provisioning_template,
    "update_provisioning_template": _update_provisioning_template,
    "delete_provisioning_template": _delete_provisioning_template,
    "list_provisioning_templates": _list_provisioning_templates,
    "create_provisioning_template_version": _create_provisioning_template_version,
    "describe_provisioning_template_version": _describe_provisioning_template_version,
    "list_provisioning_template_versions": _list_provisioning_template_versions,
    "delete_provisioning_template_version": _delete_provisioning_template_version,
}


def apply() -> None:
    """Install the handlers; must run before ``iot_concurrency`` so they are locked too."""
    from moto.iot.responses import IoTResponse

    for name, handler in HANDLERS.items():
        patch(IoTResponse, name, handler)
