"""Who is connected, and may they do it: certificate status and IoT policies.

A connection's principal is either an X.509 client certificate (MQTT on the
``mqtt`` port, MQTT over ALPN ``x-amzn-mqtt-ca`` and HTTPS publish on the
``tls443`` port) or the IAM identity of a SigV4-presigned WebSocket URL.

Certificates: registered in moto's IoT backend of the gateway's account and
region (looked up by certificate id = hex SHA-256 of the DER, which is how
AWS and the ``iot_certificate_id`` fix name certificates) and ``ACTIVE``.

Policies: every check reads the principal's attached policies *now*
(``iotpolicy.policies_for_principal``, which adds the policies of the thing
groups of the thing named by the client id when that thing is attached to the
certificate) and evaluates them with the policy
engine in ``emulator/iotpolicy/`` (``iotpolicy.evaluate`` /
``iotpolicy.context_for``), so an edited, attached or detached policy counts
from the next action on.  The IAM principal of a WebSocket connection is
allowed everything: the emulator does not enforce IAM anywhere.

Checks run on the gateway's event loop, under the IoT backend's lock
(``fixes/iot_concurrency.lock_for``) because the policy helpers iterate
moto's dicts while API threads may change them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass


def note(message: str) -> None:
    sys.stderr.write(f"iotreg-emulator: gateway: {message}\n")
    sys.stderr.flush()


@dataclass
class Principal:
    kind: str  # "certificate" | "iam"
    certificate_id: str | None = None
    certificate_arn: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "certificate":
            return f"certificate {self.certificate_id[:12]}..."
        return "IAM (SigV4) identity"


def certificate_id(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class Authorizer:
    def __init__(self, account: str, region: str) -> None:
        self.account = account
        self.region = region

    # -- moto state ------------------------------------------------------------

    def iot_backend(self):
        from moto.iot.models import iot_backends

        return iot_backends[self.account][self.region]

    def _lock(self, backend):
        from fixes.iot_concurrency import lock_for

        return lock_for(backend)

    def certificate(self, cert_id: str):
        """moto's certificate object for ``cert_id`` or None (a plain dict lookup)."""
        return self.iot_backend().certificates.get(cert_id)

    def certificate_status(self, principal: Principal) -> tuple[bool, str]:
        if principal.kind != "certificate":
            return True, "not a certificate"
        cert = self.certificate(principal.certificate_id)
        if cert is None:
            return False, f"certificate {principal.certificate_id} is not registered in {self.account}/{self.region}"
        if cert.status != "ACTIVE":
            return False, f"certificate {principal.certificate_id} is {cert.status}"
        return True, "ACTIVE"

    def principal_for_certificate(self, der: bytes) -> Principal:
        cert_id = certificate_id(der)
        cert = self.certificate(cert_id)
        arn = cert.arn if cert is not None else (
            f"arn:aws:iot:{self.region}:{self.account}:cert/{cert_id}"
        )
        return Principal("certificate", cert_id, arn)

    # -- decisions -------------------------------------------------------------

    def resource(self, kind: str, name: str) -> str:
        return f"arn:aws:iot:{self.region}:{self.account}:{kind}/{name}"

    def check(
        self,
        principal: Principal,
        action: str,
        resource: str,
        client_id: str | None,
        source_ip: str | None = None,
    ) -> tuple[bool, str]:
        """(allowed, reason) for ``action`` on ``resource`` by ``principal``."""
        if principal.kind == "iam":
            return True, "IAM is not enforced by the emulator"
        ok, reason = self.certificate_status(principal)
        if not ok:
            return False, reason
        try:
            import iotpolicy
        except ImportError as error:  # the policy engine is part of the emulator
            return False, f"policy engine unavailable ({error})"
        backend = self.iot_backend()
        try:
            with self._lock(backend):
                # client_id: a thing of that name attached to the certificate brings
                # its thing groups' policies (iotpolicy.policies_for_principal).
                policies = iotpolicy.policies_for_principal(
                    backend, principal.certificate_arn, client_id
                )
                context = iotpolicy.context_for(
                    backend, principal.certificate_arn, client_id, self.region, self.account
                )
            if source_ip is not None:
                context = dataclasses.replace(context, source_ip=source_ip)
            decision = iotpolicy.evaluate(policies, action, resource, context)
        except Exception as error:  # noqa: BLE001 - a bug must deny, not crash the gateway
            return False, f"policy evaluation failed: {error!r}"
        reason = decision.reason
        if decision.policy_name and not decision.allowed:
            reason += f" (policy {decision.policy_name})"
        if not policies:
            reason += " (no policy attached to the certificate or its thing's groups)"
        if decision.missing_context_values:
            reason += f" (no value for {', '.join(decision.missing_context_values)})"
        return decision.allowed, reason
