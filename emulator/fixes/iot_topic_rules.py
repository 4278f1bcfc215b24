"""Fix: IoT GetTopicRule leaves out fields that were never set.

AWS behaviour restored
    GetTopicRule's ``rule`` has no ``errorAction`` when the rule has no error
    action and no ``description`` when none was given, so a client comparing
    the rule it wants with the rule it reads sees no difference.

What moto 5.2.1 does instead
    Always returns ``"errorAction": {}`` and ``"description": ""`` (an SDK
    reads the first as an error action with no target).
"""

from __future__ import annotations

from ._util import patch


def _make_to_get_dict(original):
    def to_get_dict(self):
        result = original(self)
        rule = result.get("rule", {})
        if not rule.get("errorAction"):
            rule.pop("errorAction", None)
        if not rule.get("description"):
            rule.pop("description", None)
        return result

    return to_get_dict


def apply() -> None:
    from moto.iot.models import FakeRule

    original = getattr(FakeRule, "_emulator_orig_to_get_dict", FakeRule.to_get_dict)
    patch(FakeRule, "to_get_dict", _make_to_get_dict(original))
