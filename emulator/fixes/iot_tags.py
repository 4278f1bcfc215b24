"""Fix: IoT keeps resource tags (CreateThingType/CreateTopicRule/CreatePolicy
``tags``, TagResource, UntagResource, ListTagsForResource).

AWS behaviour restored
    Tags given when a thing type, topic rule or IoT policy is created are
    stored, ListTagsForResource(resourceArn) returns them as
    ``[{"Key": ..., "Value": ...}]``, TagResource adds/overwrites and
    UntagResource removes keys.  A resource that does not exist is
    ResourceNotFoundException.  Deleting the resource forgets its tags.

What moto 5.2.1 does instead
    Drops the ``tags`` of those create calls, and TagResource, UntagResource
    and ListTagsForResource are not implemented for IoT (HTTP 500).
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from ._util import patch


def _tags(backend) -> dict[str, dict[str, str]]:
    store = getattr(backend, "_emulator_tags", None)
    if store is None:
        store = {}
        backend._emulator_tags = store
    return store


def _tag_list_to_dict(tags) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in (tags or [])}


def _resource_exists(backend, arn: str) -> bool | None:
    """True/False for resource kinds the emulator knows, None otherwise."""
    kind, _, name = arn.split(":", 5)[-1].partition("/")
    if kind == "thingtype":
        return any(t.arn == arn for t in backend.thing_types.values())
    if kind == "rule":
        return name in backend.rules
    if kind == "policy":
        return name in backend.policies
    if kind == "thing":
        return any(t.arn == arn for t in backend.things.values())
    if kind == "provisioningtemplate":  # fix iot_provisioning_templates
        return name in backend.__dict__.get("_emulator_provisioning_templates", {})
    return None


def _check(backend, arn: str) -> None:
    from moto.iot.exceptions import InvalidRequestException, ResourceNotFoundException

    if not arn or not arn.startswith("arn:"):
        raise InvalidRequestException(f"Invalid resource ARN: {arn}")
    if _resource_exists(backend, arn) is False:
        raise ResourceNotFoundException(f"Resource not found: {arn}")


def _wrap_create(original, arn_of, tags_of):
    def create(self):
        backend = self.iot_backend
        result = original(self)
        arn = arn_of(self, backend)
        tags = tags_of(self)
        if arn and tags:
            _tags(backend).setdefault(arn, {}).update(tags)
        return result

    return create


def _thing_type_arn(response, backend):
    name = response._get_param("thingTypeName")
    for thing_type in backend.thing_types.values():
        if thing_type.thing_type_name == name:
            return thing_type.arn
    return None


def _rule_arn(response, backend):
    rule = backend.rules.get(response._get_param("ruleName"))
    return rule.arn if rule else None


def _policy_arn(response, backend):
    policy = backend.policies.get(response._get_param("policyName"))
    return policy.arn if policy else None


def _body_tags(response):
    return _tag_list_to_dict(response._get_param("tags"))


def _header_tags(response):
    header = response.headers.get("x-amz-tagging")
    return dict(parse_qsl(header, keep_blank_values=True)) if header else {}


def _forget_tags(original, arn_of):
    def delete(self, *args, **kwargs):
        # moto calls these with the name positionally or as a keyword
        name = args[0] if args else next(iter(kwargs.values()), None)
        arn = arn_of(self, name)
        result = original(self, *args, **kwargs)
        if arn:
            _tags(self).pop(arn, None)
        return result

    return delete


def _list_tags_for_resource(self):
    from moto.core.responses import ActionResult

    arn = self._get_param("resourceArn")
    _check(self.iot_backend, arn)
    tags = _tags(self.iot_backend).get(arn, {})
    return ActionResult({"tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]})


def _tag_resource(self):
    from moto.core.responses import EmptyResult

    arn = self._get_param("resourceArn")
    _check(self.iot_backend, arn)
    _tags(self.iot_backend).setdefault(arn, {}).update(_body_tags(self))
    return EmptyResult()


def _untag_resource(self):
    from moto.core.responses import EmptyResult

    arn = self._get_param("resourceArn")
    _check(self.iot_backend, arn)
    current = _tags(self.iot_backend).get(arn, {})
    for key in self._get_param("tagKeys") or []:
        current.pop(key, None)
    return EmptyResult()


def _keep_tags_on_replace(original):
    def replace_topic_rule(self, rule_name, **kwargs):
        rule = self.rules.get(rule_name)
        saved = _tags(self).get(rule.arn) if rule else None
        result = original(self, rule_name, **kwargs)
        if saved is not None:
            _tags(self)[self.rules[rule_name].arn] = saved
        return result

    return replace_topic_rule


def apply() -> None:
    from moto.iot.models import IoTBackend
    from moto.iot.responses import IoTResponse

    if getattr(IoTResponse, "_emulator_tags_applied", False):
        return
    IoTResponse._emulator_tags_applied = True
    # Wrap whatever is in place now (possibly another fix's replacement).
    IoTResponse.create_thing_type = _wrap_create(
        IoTResponse.create_thing_type, _thing_type_arn, _body_tags
    )
    IoTResponse.create_topic_rule = _wrap_create(
        IoTResponse.create_topic_rule, _rule_arn, _header_tags
    )
    IoTResponse.create_policy = _wrap_create(
        IoTResponse.create_policy, _policy_arn, _body_tags
    )
    patch(IoTResponse, "list_tags_for_resource", _list_tags_for_resource)
    patch(IoTResponse, "tag_resource", _tag_resource)
    patch(IoTResponse, "untag_resource", _untag_resource)

    def thing_type_arn(backend, name):
        for thing_type in backend.thing_types.values():
            if thing_type.thing_type_name == name:
                return thing_type.arn
        return None

    IoTBackend.delete_thing_type = _forget_tags(IoTBackend.delete_thing_type, thing_type_arn)
    IoTBackend.delete_topic_rule = _forget_tags(
        IoTBackend.delete_topic_rule,
        lambda backend, name: backend.rules[name].arn if name in backend.rules else None,
    )
    # ReplaceTopicRule is delete + create inside moto: keep the rule's tags.
    IoTBackend.replace_topic_rule = _keep_tags_on_replace(IoTBackend.replace_topic_rule)
    IoTBackend.delete_policy = _forget_tags(
        IoTBackend.delete_policy,
        lambda backend, name: backend.policies[name].arn if name in backend.policies else None,
    )
