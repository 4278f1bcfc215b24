"""AWS IoT provisioning templates: render a template, then apply it to moto's IoT backend.

Used by bulk registration (``fixes/iot_registration_tasks``, one render + apply
per input line) and by fleet provisioning's RegisterThing.

API
---
``render(template_body, parameters, *, account=None, region=None) -> Rendered``
    ``template_body`` is the JSON text (or the parsed dict) of a provisioning
    template; ``parameters`` maps parameter names to string values (one bulk
    input line, or RegisterThing's ``parameters``; fleet provisioning also
    passes the pseudo parameter ``AWS::IoT::Certificate::Id``).  Returns the
    resources with every intrinsic function evaluated and conditions applied.
    Raises ``TemplateError`` (``code`` is the AWS error code, ``message`` its
    message, ``status`` the HTTP status) when the template is not valid or
    does not render.

``apply(account, region, rendered, *, certificate_id=None) -> dict``
    Creates/updates the resources in moto's IoT backend for that
    account/region, under ``fixes.iot_concurrency.lock_for(backend)``, and
    returns::

        {"certificateId": str | None, "certificateArn": str | None,
         "certificatePem": str | None, "thingName": str | None,
         "thingArn": str | None, "thingId": str | None,
         "policyNames": [str], "policyArns": [str],
         "thingGroupArns": [str],
         "resourceArns": {"certificate": arn, "thing": arn, "policy": arn},
         "deviceConfiguration": {...}}

    ``resourceArns`` is what AWS reports (RegisterThing's ``resourceArns``
    and a bulk RESULTS line's ``ResourceArns``): one ARN per resource type
    present (with several policies, the last one; AWS's map has one key per
    type).  ``certificate_id`` (fleet provisioning: the certificate the device
    already has) is used for a certificate resource that names no CSR/PEM;
    a template ``CertificateId`` that differs from it is refused.  Raises
    ``TemplateError`` (nothing is left behind, see "Partial failure").

What AWS does (IoT developer guide, "Provisioning templates",
docs.aws.amazon.com/iot/latest/developerguide/provision-template.html)
    * ``Parameters``: each has a ``Type`` (``String``) and an optional
      ``Default``, used when the supplied dictionary has no value for it.
    * ``Resources``: ``AWS::IoT::Thing`` (``ThingName``, optional
      ``AttributePayload`` (name-value pairs), ``ThingTypeName``,
      ``ThingGroups`` (a list), ``BillingGroup``), ``AWS::IoT::Certificate``
      (exactly one of ``CertificateSigningRequest``, ``CertificateId``,
      ``CertificatePem`` (+ ``CACertificatePem``); ``Status`` ``ACTIVE`` |
      ``INACTIVE``, default ACTIVE), ``AWS::IoT::Policy`` (``PolicyName`` of
      an existing policy, or ``PolicyDocument``, not both; "Defaults to a
      hash of the policy document").
    * ``OverrideSettings`` for a resource that already exists: ``DO_NOTHING``
      (leave it), ``REPLACE``, ``FAIL`` (the request fails with
      ResourceConflictsException), ``MERGE`` (only ``ThingGroups`` and
      ``AttributePayload``).  Thing: ``AttributePayload``, ``ThingTypeName``,
      ``ThingGroups``; certificate: ``Status``; none for policies.
    * Fleet provisioning templates may also have ``Mappings`` (no functions
      inside) and ``DeviceConfiguration`` (flat, no nested objects), and use
      intrinsic functions ``Fn::Join``, ``Fn::Select`` (an out-of-range index
      or a null is a provisioning error), ``Fn::FindInMap``, ``Fn::Split``,
      ``Fn::Sub``, and ``Ref`` to parameters.

Guessed (not in the AWS pages found) and done like CloudFormation
    * ``Conditions`` (``Fn::Equals``, ``Fn::And``, ``Fn::Or``, ``Fn::Not``,
      ``{"Condition": name}``), ``Fn::If`` and a resource's ``Condition``
      key, plus ``{"Ref": "AWS::NoValue"}`` (drops the property); pseudo
      parameters ``AWS::Region`` and ``AWS::AccountId``.
    * Error codes and messages: a template that is not JSON, has no
      ``Resources``, an unknown resource type or function, or a bad function
      argument -> ``InvalidRequestException`` (HTTP 400); a missing
      parameter without a default -> ``InvalidRequestException`` "Parameter
      <name> is required but was not provided" (checked when the template
      refers to it, not for unused declarations); FAIL override ->
      ``ResourceConflictsException`` (409, the name the guide gives); a
      missing thing type / thing group / billing group / policy / certificate
      -> ``ResourceNotFoundException`` (404).
    * A thing resource without ``OverrideSettings`` for an existing thing:
      ``DO_NOTHING`` for every property (re-provisioning a device does not
      fail).
    * The generated policy name is the lowercase hex SHA-256 of the policy
      document text as it appears in the rendered template (an object is
      serialized compactly with sorted keys first); provisioning the same
      document again reuses that policy.
    * Partial failure: all or nothing.  Whatever ``apply`` created before
      the failing step (certificate, policy, thing, attachments, group
      memberships) is removed again; existing resources it changed are not
      restored.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

THING = "AWS::IoT::Thing"
CERTIFICATE = "AWS::IoT::Certificate"
POLICY = "AWS::IoT::Policy"
RESOURCE_TYPES = (THING, CERTIFICATE, POLICY)

_NO_VALUE = object()  # Ref AWS::NoValue: the property is dropped

_OVERRIDE_ACTIONS = ("DO_NOTHING", "REPLACE", "FAIL", "MERGE")
_THING_OVERRIDES = ("AttributePayload", "ThingTypeName", "ThingGroups")
# The guide names them both ways (ATTRIBUTE_PAYLOAD in prose, AttributePayload
# in its examples); both are accepted.
_OVERRIDE_ALIASES = {
    "ATTRIBUTE_PAYLOAD": "AttributePayload",
    "THING_TYPE_NAME": "ThingTypeName",
    "THING_GROUPS": "ThingGroups",
    "STATUS": "Status",
}


class TemplateError(Exception):
    """A template that is not valid, does not render or cannot be applied.

    ``code`` is AWS's error code (``InvalidRequestException``,
    ``ResourceConflictsException``, ``ResourceNotFoundException``, ...),
    ``message`` AWS-style text, ``status`` the HTTP status AWS answers with.
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def _invalid(message: str) -> TemplateError:
    return TemplateError("InvalidRequestException", message, 400)


@dataclass
class Resource:
    """One rendered resource: its logical name, type, properties (every
    function evaluated) and override settings (property -> action)."""

    logical_name: str
    type: str
    properties: dict[str, Any]
    override_settings: dict[str, str] = field(default_factory=dict)


@dataclass
class Rendered:
    """A rendered template (``render``'s result, ``apply``'s input)."""

    parameters: dict[str, str]
    resources: list[Resource]
    device_configuration: dict[str, Any]

    def of_type(self, resource_type: str) -> list[Resource]:
        return [r for r in self.resources if r.type == resource_type]


# ---------------------------------------------------------------- render


class _Renderer:
    def __init__(self, template: dict, parameters: dict, pseudo: dict) -> None:
        self.declared = template.get("Parameters") or {}
        if not isinstance(self.declared, dict):
            raise _invalid("The Parameters section must be an object.")
        self.mappings = template.get("Mappings") or {}
        if not isinstance(self.mappings, dict):
            raise _invalid("The Mappings section must be an object.")
        self.condition_defs = template.get("Conditions") or {}
        if not isinstance(self.condition_defs, dict):
            raise _invalid("The Conditions section must be an object.")
        self.supplied = {str(k): v for k, v in (parameters or {}).items()}
        self.pseudo = pseudo
        self.used: dict[str, str] = {}
        self.conditions: dict[str, bool] = {}
        self.evaluating: set[str] = set()

    # -- values

    def ref(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise _invalid("Ref takes the name of a parameter.")
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.supplied:
            value = self.supplied[name]
        elif name in self.declared and isinstance(self.declared[name], dict) and "Default" in self.declared[name]:
            value = self.declared[name]["Default"]
        elif name in self.pseudo and self.pseudo[name] is not None:
            value = self.pseudo[name]
        else:
            raise _invalid(f"Parameter {name} is required but was not provided")
        if value is None:
            raise _invalid(f"Parameter {name} is required but was not provided")
        value = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        self.used[name] = value
        return value

    def condition(self, name: Any) -> bool:
        if not isinstance(name, str) or name not in self.condition_defs:
            raise _invalid(f"Condition {name} is not defined in the Conditions section")
        if name in self.conditions:
            return self.conditions[name]
        if name in self.evaluating:
            raise _invalid(f"Condition {name} refers to itself")
        self.evaluating.add(name)
        value = self.boolean(self.condition_defs[name])
        self.evaluating.discard(name)
        self.conditions[name] = value
        return value

    def boolean(self, node: Any) -> bool:
        if isinstance(node, dict) and len(node) == 1:
            (key, arg), = node.items()
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::Equals":
                if not isinstance(arg, list) or len(arg) != 2:
                    raise _invalid("Fn::Equals takes a list of two values.")
                return self.value(arg[0]) == self.value(arg[1])
            if key in ("Fn::And", "Fn::Or"):
                if not isinstance(arg, list) or not 2 <= len(arg) <= 10:
                    raise _invalid(f"{key} takes a list of 2 to 10 conditions.")
                results = [self.boolean(a) for a in arg]
                return all(results) if key == "Fn::And" else any(results)
            if key == "Fn::Not":
                if not isinstance(arg, list) or len(arg) != 1:
                    raise _invalid("Fn::Not takes a list of one condition.")
                return not self.boolean(arg[0])
        if isinstance(node, bool):
            return node
        if isinstance(node, str) and node.lower() in ("true", "false"):
            return node.lower() == "true"
        raise _invalid("A condition must be Fn::Equals, Fn::And, Fn::Or, Fn::Not or Condition.")

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            out = [self.value(v) for v in node]
            return [v for v in out if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key.startswith("Fn::"):
                return self.function(key, arg)
        out = {}
        for k, v in node.items():
            rendered = self.value(v)
            if rendered is not _NO_VALUE:
                out[k] = rendered
        return out

    def function(self, name: str, arg: Any) -> Any:
        if name == "Fn::Join":
            if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str)):
                raise _invalid("Fn::Join takes a delimiter and a list of values.")
            values = self.value(arg[1])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise _invalid("Fn::Join takes a list of strings.")
            return arg[0].join(values)
        if name == "Fn::Select":
            if not (isinstance(arg, list) and len(arg) == 2):
                raise _invalid("Fn::Select takes an index and a list of values.")
            index, values = self.value(arg[0]), self.value(arg[1])
            try:
                index = int(index)
            except (TypeError, ValueError):
                raise _invalid("Fn::Select's index must be an integer.")
            if not isinstance(values, list) or not 0 <= index < len(values) or values[index] is None:
                raise _invalid("Fn::Select's index is out of bounds or selects a null value.")
            return values[index]
        if name == "Fn::Split":
            if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and arg[0]):
                raise _invalid("Fn::Split takes a delimiter and a string.")
            source = self.value(arg[1])
            if not isinstance(source, str):
                raise _invalid("Fn::Split takes a string to split.")
            return source.split(arg[0])
        if name == "Fn::FindInMap":
            if not (isinstance(arg, list) and len(arg) == 3):
                raise _invalid("Fn::FindInMap takes a map name, a top-level key and a second-level key.")
            map_name, top, second = (self.value(a) for a in arg)
            try:
                return copy.deepcopy(self.mappings[map_name][top][second])
            except (KeyError, TypeError):
                raise _invalid(f"Fn::FindInMap: no value for [{map_name}][{top}][{second}] in Mappings")
        if name == "Fn::Sub":
            if isinstance(arg, str):
                text, variables = arg, {}
            elif isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
                text, variables = arg[0], {k: self.value(v) for k, v in arg[1].items()}
            else:
                raise _invalid("Fn::Sub takes a string, or a string and a map of variables.")

            def substitute(match: re.Match) -> str:
                token = match.group(1)
                if token.startswith("!"):
                    return "${" + token[1:] + "}"  # ${!Literal}
                value = variables[token] if token in variables else self.ref(token)
                if not isinstance(value, str):
                    raise _invalid(f"Fn::Sub: {token} is not a string")
                return value

            return re.sub(r"\$\{([^}]*)\}", substitute, text)
        if name == "Fn::If":
            if not (isinstance(arg, list) and len(arg) == 3):
                raise _invalid("Fn::If takes a condition name and two values.")
            return self.value(arg[1] if self.condition(arg[0]) else arg[2])
        raise _invalid(f"Unsupported function {name}")


def _parse(template_body: str | dict) -> dict:
    if isinstance(template_body, dict):
        return copy.deepcopy(template_body)
    try:
        template = json.loads(template_body)
    except (TypeError, ValueError):
        raise _invalid("The template body is not valid JSON.")
    if not isinstance(template, dict):
        raise _invalid("The template body must be a JSON object.")
    return template


def _validate_mappings(mappings: dict) -> None:
    # "You cannot include parameters, pseudo parameters, or call intrinsic
    # functions in the Mappings section."
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "Ref" or key.startswith("Fn::"):
                    raise _invalid("The Mappings section cannot use parameters or functions.")
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(mappings)


def _override_settings(logical: str, rtype: str, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _invalid(f"OverrideSettings of {logical} must be an object.")
    if rtype == POLICY:
        raise _invalid("OverrideSettings are not available for policy resources.")
    allowed = _THING_OVERRIDES if rtype == THING else ("Status",)
    out = {}
    for key, action in raw.items():
        prop = _OVERRIDE_ALIASES.get(key, key)
        if prop not in allowed:
            raise _invalid(f"OverrideSettings of {logical}: {key} cannot be overridden.")
        if action not in _OVERRIDE_ACTIONS:
            raise _invalid(f"OverrideSettings of {logical}: {action} is not one of {', '.join(_OVERRIDE_ACTIONS)}.")
        if action == "MERGE" and prop not in ("AttributePayload", "ThingGroups"):
            raise _invalid(f"OverrideSettings of {logical}: MERGE is valid only for ThingGroups and AttributePayload.")
        out[prop] = action
    return out


def _check_properties(logical: str, rtype: str, props: dict) -> None:
    def string(name: str, required: bool = False) -> None:
        if name not in props:
            if required:
                raise _invalid(f"Resource {logical}: property {name} is required.")
            return
        if not isinstance(props[name], str) or not props[name]:
            raise _invalid(f"Resource {logical}: property {name} must be a non-empty string.")

    if rtype == THING:
        string("ThingName", required=True)
        string("ThingTypeName")
        string("BillingGroup")
        attrs = props.get("AttributePayload")
        if attrs is not None and not (isinstance(attrs, dict) and all(isinstance(v, str) for v in attrs.values())):
            raise _invalid(f"Resource {logical}: AttributePayload must map names to strings.")
        groups = props.get("ThingGroups")
        if groups is not None and not (isinstance(groups, list) and all(isinstance(g, str) and g for g in groups)):
            raise _invalid(f"Resource {logical}: ThingGroups must be a list of group names.")
    elif rtype == CERTIFICATE:
        ways = [k for k in ("CertificateSigningRequest", "CertificateId", "CertificatePem") if k in props]
        if len(ways) > 1:
            raise _invalid(f"Resource {logical}: specify only one of CertificateSigningRequest, CertificateId, CertificatePem.")
        for key in ways + ["CACertificatePem"]:
            string(key)
        status = props.get("Status")
        if status is not None:
            if not isinstance(status, str) or status.upper() not in ("ACTIVE", "INACTIVE"):
                raise _invalid(f"Resource {logical}: Status must be ACTIVE or INACTIVE.")
            props["Status"] = status.upper()  # the guide's own example writes "Active"
    elif rtype == POLICY:
        has_name, has_doc = "PolicyName" in props, "PolicyDocument" in props
        if has_name == has_doc:
            raise _invalid(f"Resource {logical}: specify PolicyName or PolicyDocument, but not both.")
        if has_name:
            string("PolicyName")
        else:
            doc = props["PolicyDocument"]
            if isinstance(doc, str):
                try:
                    parsed = json.loads(doc)
                except ValueError:
                    raise _invalid(f"Resource {logical}: PolicyDocument is not valid JSON.")
            else:
                parsed = doc
            if not isinstance(parsed, dict):
                raise _invalid(f"Resource {logical}: PolicyDocument must be a JSON object.")


def render(template_body: str | dict, parameters: dict[str, str] | None, *,
           account: str | None = None, region: str | None = None) -> Rendered:
    """Evaluate a provisioning template with ``parameters``; see the module docstring."""
    template = _parse(template_body)
    resources = template.get("Resources")
    if not isinstance(resources, dict) or not resources:
        raise _invalid("The template has no Resources section.")
    _validate_mappings(template.get("Mappings") or {})
    renderer = _Renderer(template, parameters or {}, {"AWS::Region": region, "AWS::AccountId": account})

    out: list[Resource] = []
    for logical, spec in resources.items():
        if not isinstance(spec, dict):
            raise _invalid(f"Resource {logical} must be an object.")
        rtype = spec.get("Type")
        if rtype not in RESOURCE_TYPES:
            raise _invalid(f"Resource {logical}: unsupported type {rtype}.")
        if "Condition" in spec and not renderer.condition(spec["Condition"]):
            continue
        props = renderer.value(spec.get("Properties") or {})
        if not isinstance(props, dict):
            raise _invalid(f"Resource {logical}: Properties must be an object.")
        _check_properties(logical, rtype, props)
        out.append(Resource(logical, rtype, props, _override_settings(logical, rtype, spec.get("OverrideSettings"))))
    for rtype in (THING, CERTIFICATE):
        if sum(1 for r in out if r.type == rtype) > 1:
            raise _invalid(f"A template can declare only one {rtype} resource.")

    device_configuration = renderer.value(template.get("DeviceConfiguration") or {})
    if not isinstance(device_configuration, dict):
        raise _invalid("DeviceConfiguration must be an object.")
    for key, value in device_configuration.items():
        if isinstance(value, dict):
            raise _invalid(f"DeviceConfiguration does not support nested objects ({key}).")
    return Rendered(parameters=dict(renderer.used), resources=out,
                    device_configuration=device_configuration)


# ---------------------------------------------------------------- apply


def policy_name_for(document: Any) -> str:
    """The name AWS gives a policy declared only by its document: a hash of it."""
    text = document if isinstance(document, str) else json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _policy_text(document: Any) -> str:
    return document if isinstance(document, str) else json.dumps(document)


def _moto_error(exc: Exception) -> TemplateError:
    code = getattr(exc, "error_type", None) or type(exc).__name__
    message = getattr(exc, "message", None) or str(exc)
    status = getattr(exc, "code", 400)
    return TemplateError(code, message, status if isinstance(status, int) else 400)


def _backend(account: str, region: str):
    from moto.iot.models import iot_backends

    return iot_backends[account][region]


class _Undo:
    """What apply created, removed again in reverse order if a later step fails."""

    def __init__(self) -> None:
        self.steps: list = []

    def add(self, step) -> None:
        self.steps.append(step)

    def run(self) -> None:
        for step in reversed(self.steps):
            try:
                step()
            except Exception:  # best effort: undo the rest regardless
                pass


def apply(account: str, region: str, rendered: Rendered, *, certificate_id: str | None = None,
          backend=None) -> dict:
    """Create/update the rendered resources in moto; see the module docstring.

    ``backend``: the IoT backend to use instead of looking up account/region
    (a long-running caller keeps the one it started with, so that after
    ``/moto-api/reset`` it cannot write into the fresh state).
    """
    from fixes.iot_concurrency import lock_for

    backend = backend if backend is not None else _backend(account, region)
    with lock_for(backend):
        undo = _Undo()
        try:
            return _apply(backend, rendered, certificate_id, undo)
        except TemplateError:
            undo.run()
            raise
        except Exception as exc:
            undo.run()
            if hasattr(exc, "error_type") or hasattr(exc, "code"):
                raise _moto_error(exc) from exc
            raise


def _apply(backend, rendered: Rendered, certificate_id: str | None, undo: _Undo) -> dict:
    from moto.iot.exceptions import ResourceNotFoundException

    result: dict[str, Any] = {
        "certificateId": None, "certificateArn": None, "certificatePem": None,
        "thingName": None, "thingArn": None, "thingId": None,
        "policyNames": [], "policyArns": [], "thingGroupArns": [],
        "resourceArns": {}, "deviceConfiguration": rendered.device_configuration,
    }

    # Certificate first: it is what policies and the thing get attached to.
    cert = None
    for res in rendered.of_type(CERTIFICATE):
        cert = _apply_certificate(backend, res, certificate_id, undo)
    if cert is not None:
        result.update(certificateId=cert.certificate_id, certificateArn=cert.arn,
                      certificatePem=cert.certificate_pem)
        result["resourceArns"]["certificate"] = cert.arn

    for res in rendered.of_type(POLICY):
        props = res.properties
        if "PolicyName" in props:
            try:
                policy = backend.get_policy(props["PolicyName"])
            except ResourceNotFoundException:
                raise TemplateError("ResourceNotFoundException",
                                    f"Policy {props['PolicyName']} does not exist", 404)
        else:
            name = policy_name_for(props["PolicyDocument"])
            policy = backend.policies.get(name)
            if policy is None:
                policy = backend.create_policy(name, _policy_text(props["PolicyDocument"]))
                undo.add(lambda n=name: backend.policies.pop(n, None))
        result["policyNames"].append(policy.name)
        result["policyArns"].append(policy.arn)
        result["resourceArns"]["policy"] = policy.arn
        if cert is not None and (cert.arn, policy.name) not in backend.principal_policies:
            backend.attach_policy(policy.name, cert.arn)
            undo.add(lambda p=policy.name, a=cert.arn: backend.principal_policies.pop((a, p), None))

    for res in rendered.of_type(THING):
        thing = _apply_thing(backend, res, undo)
        result.update(thingName=thing.thing_name, thingArn=thing.arn, thingId=thing.thing_id)
        result["resourceArns"]["thing"] = thing.arn
        result["thingGroupArns"] = [g.arn for g in backend.thing_groups.values() if thing.arn in g.things]
        if cert is not None and (cert.arn, thing.thing_name) not in backend.principal_things:
            backend.attach_thing_principal(thing.thing_name, cert.arn)
            undo.add(lambda t=thing.thing_name, a=cert.arn: backend.principal_things.pop((a, t), None))
    return result


def _apply_certificate(backend, res: Resource, certificate_id: str | None, undo: _Undo):
    from moto.iot.exceptions import ResourceNotFoundException

    props = res.properties
    status = props.get("Status", "ACTIVE")
    if "CertificateSigningRequest" in props:
        # The same backend method as CreateCertificateFromCsr (patched by the
        # iot_csr fix: the CSR's own key; iot_certificate_id: SHA-256 ids).
        cert = backend.create_certificate_from_csr(props["CertificateSigningRequest"], status == "ACTIVE")
        undo.add(lambda c=cert.certificate_id: backend.certificates.pop(c, None))
        return cert
    if "CertificatePem" in props:
        existing = _certificate_by_pem(backend, props["CertificatePem"])
        if existing is not None:
            return _existing_certificate(backend, res, existing)
        cert = backend.register_certificate(props["CertificatePem"], props.get("CACertificatePem"),
                                            status == "ACTIVE", "INACTIVE")
        undo.add(lambda c=cert.certificate_id: backend.certificates.pop(c, None))
        return cert
    wanted = props.get("CertificateId")
    if wanted and certificate_id and wanted != certificate_id:
        raise _invalid("The template's CertificateId is not the certificate of this request.")
    wanted = wanted or certificate_id
    if not wanted:
        raise _invalid(f"Resource {res.logical_name}: no certificate (CertificateSigningRequest, CertificateId or CertificatePem).")
    try:
        cert = backend.describe_certificate(wanted)
    except ResourceNotFoundException:
        raise TemplateError("ResourceNotFoundException", f"Certificate {wanted} does not exist", 404)
    return _existing_certificate(backend, res, cert)


def _certificate_by_pem(backend, pem: str):
    for cert in backend.certificates.values():
        if cert.certificate_pem.strip() == pem.strip():
            return cert
    return None


def _existing_certificate(backend, res: Resource, cert):
    action = res.override_settings.get("Status", "DO_NOTHING")
    status = res.properties.get("Status")
    if status and status != cert.status:
        if action == "FAIL":
            raise TemplateError("ResourceConflictsException",
                                f"Certificate {cert.certificate_id} already exists with status {cert.status}", 409)
        if action == "REPLACE":
            cert.status = status
    return cert


def _apply_thing(backend, res: Resource, undo: _Undo):
    props = res.properties
    name = props["ThingName"]
    attrs = dict(props.get("AttributePayload") or {})
    type_name = props.get("ThingTypeName")
    groups = list(props.get("ThingGroups") or [])
    billing = props.get("BillingGroup")

    # Everything named must exist before anything is created.
    if type_name:
        _require(lambda: backend.describe_thing_type(type_name), f"Thing type {type_name} does not exist")
    group_objs = [_require(lambda g=g: backend.describe_thing_group(g), f"Thing group {g} does not exist")
                  for g in groups]
    if billing:
        _require(lambda: backend.describe_billing_group(billing), f"Billing group {billing} does not exist")

    thing = next((t for t in backend.things.values() if t.thing_name == name), None)
    if thing is None:
        thing = backend.create_thing(name, type_name, {"attributes": attrs} if attrs else None, None)
        undo.add(lambda a=thing.arn: _forget_thing(backend, a))
        added = group_objs
    else:
        added = _override_thing(backend, res, thing, attrs, type_name, group_objs)
    for group in added:
        if thing.arn not in group.things:
            group.things[thing.arn] = thing
            undo.add(lambda g=group, a=thing.arn: g.things.pop(a, None))
    if billing and thing.billing_group_name != billing:
        previous = thing.billing_group_name
        backend.add_thing_to_billing_group(billing_group_name=billing, thing_name=name)
        undo.add(lambda: _undo_billing(backend, thing, billing, previous))
    return thing


def _override_thing(backend, res: Resource, thing, attrs, type_name, group_objs) -> list:
    """Apply OverrideSettings to an existing thing; return the groups to join."""
    settings = res.override_settings
    changed_attrs = bool(attrs) and attrs != thing.attributes
    current_type = thing.thing_type.thing_type_name if thing.thing_type else None
    changed_type = bool(type_name) and type_name != current_type
    current_groups = {g.arn for g in backend.thing_groups.values() if thing.arn in g.things}
    changed_groups = bool(group_objs) and {g.arn for g in group_objs} != current_groups
    for prop, changed in (("AttributePayload", changed_attrs), ("ThingTypeName", changed_type),
                          ("ThingGroups", changed_groups)):
        if changed and settings.get(prop) == "FAIL":
            raise TemplateError("ResourceConflictsException",
                                f"Thing {thing.thing_name} already exists with a different {prop}", 409)
    action = settings.get("AttributePayload", "DO_NOTHING")
    if changed_attrs and action == "REPLACE":
        thing.attributes = dict(attrs)
    elif changed_attrs and action == "MERGE":
        thing.attributes.update(attrs)
    if changed_type and settings.get("ThingTypeName") == "REPLACE":
        thing.thing_type = backend.describe_thing_type(type_name)
    if changed_attrs or changed_type:
        thing.version += 1
    action = settings.get("ThingGroups", "DO_NOTHING")
    if action == "REPLACE":
        keep = {g.arn for g in group_objs}
        for group in backend.thing_groups.values():
            if thing.arn in group.things and group.arn not in keep:
                del group.things[thing.arn]
        return group_objs
    if action == "MERGE":
        return group_objs
    return []


def _require(lookup, message: str):
    from moto.iot.exceptions import ResourceNotFoundException

    try:
        return lookup()
    except ResourceNotFoundException:
        raise TemplateError("ResourceNotFoundException", message, 404)


def _forget_thing(backend, arn: str) -> None:
    thing = backend.things.pop(arn, None)
    if thing is None:
        return
    for group in backend.thing_groups.values():
        group.things.pop(arn, None)
    for billing in backend.billing_groups.values():
        if arn in billing.things:
            billing.things.remove(arn)


def _undo_billing(backend, thing, billing: str, previous: str | None) -> None:
    group = backend.billing_groups.get(billing)
    if group is not None and thing.arn in group.things:
        group.things.remove(thing.arn)
    thing.billing_group_name = previous
