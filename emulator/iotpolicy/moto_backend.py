"""Read what policy evaluation needs out of moto 5.2.1's IoT backend.

Only reads ``IoTBackend.principal_policies`` ({(target ARN, policy name):
(principal, FakePolicy)}), ``policies`` / ``FakePolicy.versions``
(``is_default``), ``principal_things`` ({(principal ARN, thing name):
(principal, FakeThing)}), ``things``, ``certificates`` and ``thing_groups``
({ARN: FakeThingGroup}, with ``things`` {thing ARN: FakeThing} and
``parent_group_name``).  Call it under the
backend's lock when the server is running (the emulator's TestAuthorization
handler is wrapped by the ``iot_concurrency`` fix).
"""

from __future__ import annotations

import json
from typing import Any

from .evaluator import Context


def _principal_arn(iot_backend, principal: str) -> str:
    """A certificate ARN for a certificate id; anything else unchanged."""
    if principal and ":" not in principal:
        cert = iot_backend.certificates.get(principal)
        if cert is not None:
            return cert.arn
    return principal


def _certificate(iot_backend, principal_arn: str):
    if ":cert/" not in (principal_arn or ""):
        return None
    return iot_backend.certificates.get(principal_arn.rsplit("/", 1)[-1])


def default_document(policy) -> dict:
    """The document of the policy's default version, parsed ({} if it is not JSON)."""
    document: Any = policy.document
    for version in getattr(policy, "versions", []) or []:
        if getattr(version, "is_default", False):
            document = version.document
            break
    if isinstance(document, (str, bytes)):
        try:
            document = json.loads(document)
        except ValueError:
            return {}
    return document if isinstance(document, dict) else {}


def _attached(iot_backend, target: str) -> list[tuple[str, dict]]:
    """(name, default document) of the policies attached to exactly ``target``."""
    result = []
    for (attached_to, policy_name), (_principal, attached) in list(iot_backend.principal_policies.items()):
        if attached_to != target:
            continue
        policy = iot_backend.policies.get(policy_name, attached)
        result.append((policy_name, default_document(policy)))
    return result


def group_lineage(iot_backend, group) -> list:
    """``group`` and its ancestors, nearest first (static groups: parent_group_name)."""
    by_name = {g.thing_group_name: g for g in list(iot_backend.thing_groups.values())}
    chain, seen = [], set()
    while group is not None and group.thing_group_name not in seen:
        chain.append(group)
        seen.add(group.thing_group_name)
        group = by_name.get(group.parent_group_name) if group.parent_group_name else None
    return chain


def thing_group_policies(iot_backend, thing_name: str) -> list[tuple[str, dict]]:
    """The policies a thing inherits from its thing groups: those attached to every
    group it is a member of and to each of their ancestor groups (AWS: a policy
    attached to a parent group "is inherited by its child groups, and by all of the
    things in the group and in its child groups").  Nearest groups first."""
    thing = next((t for t in list(iot_backend.things.values()) if t.thing_name == thing_name), None)
    if thing is None:
        return []
    result: list[tuple[str, dict]] = []
    for group in list(iot_backend.thing_groups.values()):
        if thing.arn not in group.things:
            continue
        for member_of in group_lineage(iot_backend, group):
            result.extend(_attached(iot_backend, member_of.arn))
    return result


def policies_for_principal(iot_backend, certificate_arn: str,
                           client_id: str | None = None) -> list[tuple[str, dict]]:
    """``(policy_name, document)`` of every policy that applies to the principal.

    The document is the policy's **default version**.  ``certificate_arn`` may
    also be a certificate id, or any other attach target ARN; for a thing group
    ARN the policies of its ancestor groups are included (inherited).

    With ``client_id``: when a thing of that name is attached to the certificate
    (AttachThingPrincipal), the policies of the thing groups it belongs to (and
    their ancestors) are included too and evaluated as the certificate's own.
    AWS applies thing group policies to a connection only through the thing
    whose name is the client id, so a client id that names no attached thing
    gets the certificate's own policies only.  Each policy appears once.
    """
    arn = _principal_arn(iot_backend, certificate_arn)
    result = list(_attached(iot_backend, arn))
    if ":thinggroup/" in (arn or ""):
        group = iot_backend.thing_groups.get(arn)
        for ancestor in group_lineage(iot_backend, group)[1:] if group is not None else []:
            result.extend(_attached(iot_backend, ancestor.arn))
    elif client_id is not None and (arn, client_id) in iot_backend.principal_things:
        result.extend(thing_group_policies(iot_backend, client_id))
    seen: set[str] = set()
    unique = []
    for name, document in result:
        if name not in seen:
            seen.add(name)
            unique.append((name, document))
    return unique


_NAME_FIELDS = {
    "CommonName": "2.5.4.3",
    "Country": "2.5.4.6",
    "Organization": "2.5.4.10",
    "OrganizationalUnit": "2.5.4.11",
    "State": "2.5.4.8",
    "Locality": "2.5.4.7",
    "SerialNumber": "2.5.4.5",
}


def certificate_variables(pem: str) -> dict[str, str]:
    """``Subject.<Field>``/``Issuer.<Field>`` (single-valued fields) and
    ``SerialNumber`` of a PEM certificate; {} when ``cryptography`` is missing
    or the PEM does not parse."""
    try:
        from cryptography import x509
    except ImportError:  # the evaluator itself is stdlib only
        return {}
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except (ValueError, AttributeError):
        return {}
    out: dict[str, str] = {"SerialNumber": str(cert.serial_number)}
    for prefix, name in (("Subject", cert.subject), ("Issuer", cert.issuer)):
        for field, oid in _NAME_FIELDS.items():
            values = [a.value for a in name if a.oid.dotted_string == oid]
            if len(values) == 1:
                out[f"{prefix}.{field}"] = str(values[0])
    return out


def context_for(iot_backend, certificate_arn: str, client_id: str | None,
                region: str, account: str) -> Context:
    """The evaluation context of a connection by ``client_id`` with that certificate.

    When a thing named ``client_id`` is attached to the certificate
    (AttachThingPrincipal), its name, thing type and attributes are the
    ``iot:Connection.Thing.*`` variables and ``is_attached`` is true;
    otherwise those variables have no value.
    """
    arn = _principal_arn(iot_backend, certificate_arn)
    cert = _certificate(iot_backend, arn)
    thing = None
    if client_id is not None and (arn, client_id) in iot_backend.principal_things:
        thing = next(
            (t for t in list(iot_backend.things.values()) if t.thing_name == client_id),
            None,
        )
    if thing is None:
        return Context(
            client_id=client_id,
            principal=cert.certificate_id if cert else None,
            region=region,
            account=account,
            certificate=certificate_variables(cert.certificate_pem) if cert else {},
        )
    thing_type = getattr(thing, "thing_type", None)
    return Context(
        client_id=client_id,
        thing_name=thing.thing_name,
        is_attached=True,
        thing_type_name=thing_type.thing_type_name if thing_type else None,
        attributes={k: str(v) for k, v in (thing.attributes or {}).items()},
        principal=cert.certificate_id if cert else None,
        region=region,
        account=account,
        certificate=certificate_variables(cert.certificate_pem) if cert else {},
    )
