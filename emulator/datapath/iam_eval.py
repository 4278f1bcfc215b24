"""A small IAM identity-policy evaluator for the roles the rules engine assumes.

What AWS does (IAM user guide, "Policy evaluation logic",
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html):
a request is allowed when some statement of the principal's policies allows
it and no statement denies it; an explicit Deny wins; otherwise it is
implicitly denied. ``Action`` / ``Resource`` values may use ``*`` and ``?``
wildcards (actions case-insensitive, resources case-sensitive);
``NotAction`` / ``NotResource`` match everything except the listed values.

What the emulator evaluates: the role's inline policies and the default
version of each attached managed policy (moto's IAM backend), Effect,
Action / NotAction, Resource / NotResource. A statement with a ``Condition``
is not evaluated: an Allow with a condition does not allow, a Deny with a
condition denies (the emulator errs towards refusing). Permission
boundaries, SCPs, session policies and resource policies are not considered.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _wildcard(pattern: str, value: str, ignore_case: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def load_document(document: Any) -> dict:
    """A policy document as moto keeps it (dict, JSON text, URL-encoded JSON text)."""
    if isinstance(document, dict):
        return document
    if isinstance(document, str):
        for text in (document, unquote(document)):
            try:
                loaded = json.loads(text)
            except ValueError:
                continue
            if isinstance(loaded, dict):
                return loaded
    return {}


def _matches(statement: dict, action: str, resource: str) -> bool:
    if "NotAction" in statement:
        if any(_wildcard(str(a), action, True) for a in _as_list(statement["NotAction"])):
            return False
    elif not any(_wildcard(str(a), action, True) for a in _as_list(statement.get("Action"))):
        return False
    if "NotResource" in statement:
        if any(_wildcard(str(r), resource, False) for r in _as_list(statement["NotResource"])):
            return False
    elif not any(_wildcard(str(r), resource, False) for r in _as_list(statement.get("Resource"))):
        return False
    return True


def evaluate(documents: list[Any], action: str, resource: str) -> tuple[bool, str]:
    """(allowed, reason) for ``action`` on ``resource`` under these identity policies."""
    allowed = False
    for document in documents:
        for statement in _as_list(load_document(document).get("Statement")):
            if not isinstance(statement, dict) or not _matches(statement, action, resource):
                continue
            effect = statement.get("Effect")
            if effect == "Deny":
                return False, f"explicitly denied by statement {statement.get('Sid')!r}"
            if effect == "Allow" and not statement.get("Condition"):
                allowed = True
    if allowed:
        return True, "allowed"
    return False, f"no statement allows {action} on {resource}"


def role_documents(role: Any) -> list[Any]:
    """The inline policies and the default versions of the attached managed policies of a moto role."""
    documents: list[Any] = list((getattr(role, "policies", None) or {}).values())
    for policy in (getattr(role, "managed_policies", None) or {}).values():
        for version in getattr(policy, "versions", None) or []:
            if getattr(version, "is_default", False):
                documents.append(version.document)
    return documents


def role_allows(role_arn: str, action: str, resource: str) -> tuple[bool, str]:
    """(allowed, reason): does the role exist, trust iot.amazonaws.com and allow ``action`` on ``resource``?"""
    from moto.iam.models import iam_backends

    from gateway.provisioning import trusts_iot

    parts = str(role_arn or "").split(":")
    if len(parts) < 6 or parts[2] != "iam" or not parts[5].startswith("role/"):
        return False, f"{role_arn!r} is not an IAM role ARN"
    try:
        role = iam_backends[parts[4]]["global"].get_role_by_arn(role_arn)
    except Exception:  # noqa: BLE001 - NotFoundException, unknown account
        return False, f"the role {role_arn} does not exist"
    if not trusts_iot(role.assume_role_policy_document):
        return False, f"the role {role_arn} cannot be assumed by iot.amazonaws.com (trust policy)"
    return evaluate(role_documents(role), action, resource)
