"""AWS IoT Core policy evaluation for the emulator (stdlib only, no network).

    evaluate(policies, action, resource, context) -> Decision
    policies_for_principal(iot_backend, certificate_arn, client_id=None) -> [(policy_name, document)]
    context_for(iot_backend, certificate_arn, client_id, region, account) -> Context

See ``evaluator`` for exactly what is evaluated and ``emulator/README.md``
("IoT policy evaluation and TestAuthorization").  Used by the fix
``fixes/iot_test_authorization`` (IoT TestAuthorization); tested by
``tests/test_iotpolicy.py`` and ``tests/test_fix_test_authorization.py``.
"""

from __future__ import annotations

from .evaluator import (
    ALLOWED,
    EXPLICIT_DENY,
    IMPLICIT_DENY,
    Context,
    Decision,
    Match,
    evaluate,
)
from .moto_backend import (
    certificate_variables,
    context_for,
    default_document,
    group_lineage,
    policies_for_principal,
    thing_group_policies,
)

__all__ = [
    "ALLOWED",
    "EXPLICIT_DENY",
    "IMPLICIT_DENY",
    "Context",
    "Decision",
    "Match",
    "certificate_variables",
    "context_for",
    "default_document",
    "evaluate",
    "group_lineage",
    "policies_for_principal",
    "thing_group_policies",
]
