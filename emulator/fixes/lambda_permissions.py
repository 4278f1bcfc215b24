"""Fix: Lambda AddPermission refuses a statement id that is already used.

AWS behaviour restored
    AddPermission with a StatementId already present in the function's
    resource policy fails with ResourceConflictException (HTTP 409): "The
    statement id (ID) provided already exists. Please provide a new statement
    id, or remove the existing statement."  A provisioning tool relies on this
    to detect that its permission is already there.

What moto 5.2.1 does instead
    Appends a second statement with the same Sid and answers 200.
"""

from __future__ import annotations

import json

from ._util import patch


def _make_add_statement(original):
    def add_statement(self, raw, qualifier=None):
        from moto.awslambda.exceptions import LambdaClientError

        sid = json.loads(raw).get("StatementId")
        if sid and any(statement.get("Sid") == sid for statement in self.statements):
            error = LambdaClientError(
                "ResourceConflictException",
                f"The statement id ({sid}) provided already exists. Please provide "
                "a new statement id, or remove the existing statement.",
            )
            error.code = 409
            raise error
        return original(self, raw, qualifier)

    return add_statement


def apply() -> None:
    from moto.awslambda.policy import Policy

    original = getattr(Policy, "_emulator_orig_add_statement", Policy.add_statement)
    patch(Policy, "add_statement", _make_add_statement(original))
