"""Fix: IoT TestAuthorization answers from the policies attached to the principal.

AWS behaviour restored
    ``POST /test-authorization[?clientId=ID]`` with ``principal`` (a
    certificate ARN; the emulator also takes a bare certificate id or a thing
    group ARN), ``authInfos`` (1-10 of ``{"actionType": PUBLISH | SUBSCRIBE |
    RECEIVE | CONNECT, "resources": [ARN, ...]}``), ``policyNamesToAdd``,
    ``policyNamesToSkip`` answers ``{"authResults": [...]}``, one result per
    authInfo, in order: ``authInfo`` (echoed), ``allowed.policies``,
    ``denied.implicitDeny.policies``, ``denied.explicitDeny.policies`` (each
    ``[{"policyName", "policyArn"}]``), ``authDecision`` ALLOWED |
    EXPLICIT_DENY | IMPLICIT_DENY, ``missingContextValues``.  The policies are
    the **default versions** of those attached to the principal
    (AttachPolicy), minus ``policyNamesToSkip``, plus ``policyNamesToAdd``;
    ``clientId`` is ``${iot:ClientId}`` and, when a thing of that name is
    attached to the certificate, supplies the ``iot:Connection.Thing.*``
    variables and adds the policies attached to that thing's thing groups and
    their ancestor groups (evaluated as the certificate's own; the same rule
    as the device gateway).  The developer guide ("Static thing groups",
    "Test authorization for MQTT actions") says TestAuthorization tests
    "whether an MQTT action is allowed for a thing" and that ``--client-id``
    "further refine[s] your results"; that the client id is what brings the
    group policies in is the emulator's reading (guessed), matching how a
    connection is tied to a thing.  A thing group ARN as principal gets its
    own and its ancestors' policies.  Evaluation: ``emulator/iotpolicy`` (see its docstring for what
    is and is not evaluated).

What moto 5.2.1 does instead
    Nothing: TestAuthorization has no handler in ``IoTResponse`` (moto routes
    every IoT path to ``IoTResponse.dispatch``, which finds the operation from
    botocore's model, ``POST /test-authorization`` -> ``test_authorization``,
    and answered 404 ``Action test_authorization has not been implemented``).
    This fix adds the handler; it must run before ``iot_concurrency`` so the
    handler is locked like every other IoT handler.

Where the emulator guesses (AWS documents only the shapes)
    * Several resources in one authInfo: EXPLICIT_DENY if any resource is
      explicitly denied, ALLOWED if every resource is allowed, else
      IMPLICIT_DENY.
    * The policy lists: ALLOWED lists the policies with an applicable Allow
      statement (for any of the resources); EXPLICIT_DENY lists the policies
      with an applicable Deny under ``explicitDeny`` and nothing else;
      IMPLICIT_DENY lists every evaluated policy under ``implicitDeny``.  The
      other lists are present and empty.
    * ``missingContextValues``: the policy variable names that had no value
      while evaluating (e.g. ``iot:Connection.Thing.ThingName`` when the client
      id is not an attached thing), without ``${}``; AWS's exact format is
      unknown.
    * Errors: no ``authInfos`` or more than 10, an actionType outside the four
      of the API model (shadow operations are not action types of this API),
      an authInfo without resources, or no principal and no
      ``policyNamesToAdd`` -> InvalidRequestException (400); an unknown
      certificate / principal or an unknown name in ``policyNamesToAdd`` ->
      ResourceNotFoundException (404).  ``cognitoIdentityPoolId`` is accepted
      and ignored; Cognito principals get only the policies attached to them.
    * The certificate's status (INACTIVE, REVOKED) is not checked.
"""

from __future__ import annotations

from ._util import patch

ACTIONS = {
    "PUBLISH": "iot:Publish",
    "SUBSCRIBE": "iot:Subscribe",
    "RECEIVE": "iot:Receive",
    "CONNECT": "iot:Connect",
}


def _policy_ref(backend, name: str) -> dict:
    policy = backend.policies.get(name)
    arn = policy.arn if policy else (
        f"arn:aws:iot:{backend.region_name}:{backend.account_id}:policy/{name}"
    )
    return {"policyName": name, "policyArn": arn}


def _resolve_principal(backend, principal: str) -> str:
    """The ARN AttachPolicy used for this principal; 404 when it does not exist."""
    from moto.iot.exceptions import ResourceNotFoundException

    if ":" not in principal:  # a bare certificate id
        cert = backend.certificates.get(principal)
        if cert is None:
            raise ResourceNotFoundException(f"Principal not found: {principal}")
        return cert.arn
    try:
        backend._get_principal(principal)
    except ResourceNotFoundException:
        raise ResourceNotFoundException(f"Principal not found: {principal}")
    return principal


def authorize(backend, principal, client_id, auth_infos, to_add=(), to_skip=()) -> list[dict]:
    """The ``authResults`` of a TestAuthorization request (module docstring)."""
    from moto.iot.exceptions import InvalidRequestException, ResourceNotFoundException

    import iotpolicy

    if not auth_infos or len(auth_infos) > 10:
        raise InvalidRequestException("authInfos must contain between 1 and 10 items")
    for info in auth_infos:
        if not isinstance(info, dict) or info.get("actionType") not in ACTIONS:
            raise InvalidRequestException(
                f"Invalid actionType; valid values: {', '.join(ACTIONS)}"
            )
        if not info.get("resources"):
            raise InvalidRequestException("Each authInfo needs at least one resource")
    if not principal and not to_add:
        raise InvalidRequestException("A principal or policyNamesToAdd is required")

    arn = _resolve_principal(backend, principal) if principal else None
    policies: list[tuple[str, dict]] = []
    if arn:
        skip = set(to_skip or ())
        policies = [
            p for p in iotpolicy.policies_for_principal(backend, arn, client_id) if p[0] not in skip
        ]
    present = {name for name, _ in policies}
    for name in to_add or ():
        policy = backend.policies.get(name)
        if policy is None:
            raise ResourceNotFoundException(f"Policy not found: {name}")
        if name not in present:
            policies.append((name, iotpolicy.default_document(policy)))
            present.add(name)

    if arn:
        context = iotpolicy.context_for(
            backend, arn, client_id, backend.region_name, backend.account_id
        )
    else:
        context = iotpolicy.Context(
            client_id=client_id, region=backend.region_name, account=backend.account_id
        )

    results = []
    for info in auth_infos:
        action = ACTIONS[info["actionType"]]
        decisions = [iotpolicy.evaluate(policies, action, r, context) for r in info["resources"]]
        missing = list(dict.fromkeys(m for d in decisions for m in d.missing_context_values))
        allowed, implicit, explicit = [], [], []
        if any(d.reason == iotpolicy.EXPLICIT_DENY for d in decisions):
            outcome = "EXPLICIT_DENY"
            names = dict.fromkeys(m.policy_name for d in decisions for m in d.denies)
            explicit = [_policy_ref(backend, n) for n in names]
        elif all(d.allowed for d in decisions):
            outcome = "ALLOWED"
            names = dict.fromkeys(m.policy_name for d in decisions for m in d.allows)
            allowed = [_policy_ref(backend, n) for n in names]
        else:
            outcome = "IMPLICIT_DENY"
            implicit = [_policy_ref(backend, n) for n, _ in policies]
        results.append(
            {
                "authInfo": {"actionType": info["actionType"], "resources": list(info["resources"])},
                "allowed": {"policies": allowed},
                "denied": {
                    "implicitDeny": {"policies": implicit},
                    "explicitDeny": {"policies": explicit},
                },
                "authDecision": outcome,
                "missingContextValues": missing,
            }
        )
    return results


def _test_authorization(self):
    from moto.core.responses import ActionResult

    results = authorize(
        self.iot_backend,
        self._get_param("principal"),
        self._get_param("clientId"),
        self._get_param("authInfos"),
        self._get_param("policyNamesToAdd") or [],
        self._get_param("policyNamesToSkip") or [],
    )
    return ActionResult({"authResults": results})


def apply() -> None:
    import os
    import sys

    from moto.iot.responses import IoTResponse

    # iotpolicy lives next to fixes/ in emulator/ (server.py puts it on sys.path).
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if here not in sys.path:
        sys.path.insert(0, here)
    patch(IoTResponse, "test_authorization", _test_authorization)
