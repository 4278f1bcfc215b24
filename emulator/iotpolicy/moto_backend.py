"""Read what policy evaluation needs out of moto 5.2.1's IoT backend.

Only reads ``IoTBackend.principal_policies`` ({(target ARN, policy name):
(principal, FakePolicy)}), ``policies`` / ``FakePolicy.versions``
(``is_default``), ``principal_things`` ({(principal ARN, thing name):
(principal, FakeThing)}), ``things`` and ``certificates``.  Call it under the
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


def policies_for_principal(iot_backend, certificate_arn: str) -> list[tuple[str, dict]]:
    """``(policy_name, document)`` of every policy attached to the principal.

    The document is the policy's **default version**.  ``certificate_arn`` may
    also be a certificate id, or any other attach target ARN (a thing group).
    Policies attached to thing groups the thing belongs to are not included.
    """
    arn = _principal_arn(iot_backend, certificate_arn)
    result = []
    for (target, policy_name), (_principal, attached) in list(iot_backend.principal_policies.items()):
        if target != arn:
            continue
        policy = iot_backend.policies.get(policy_name, attached)
        result.append((policy_name, default_document(policy)))
    return result


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
