"""Fleet provisioning by claim: the device provisioning MQTT API on the device gateway.

What AWS does (AWS IoT developer guide, "Device provisioning MQTT API",
docs.aws.amazon.com/iot/latest/developerguide/fleet-provision-api.html, and
"Pre-provisioning hooks", .../pre-provisioning-hook.html)
    A device connected with a *claim* certificate publishes requests on
    reserved topics and gets the answer on ``<request topic>/accepted`` or
    ``<request topic>/rejected``; ``<format>`` is ``json`` or ``cbor`` (the
    payloads are then CBOR maps with the same keys).  "IoT Core Fleet
    Provisioning returns the device provisioning MQTT API results through the
    same MQTT connection used to publish the API request", and the device
    must subscribe to the response topics *before* publishing the request,
    or it "might not receive the results".

    * ``$aws/certificates/create-from-csr/<format>``
      ``{"certificateSigningRequest": PEM}`` -> accepted ``{certificateId,
      certificatePem, certificateOwnershipToken}``.  The certificate is
      issued for the CSR's key and "has a PENDING_ACTIVATION status. When
      you call RegisterThing to provision a thing with this certificate, the
      certificate status changes to ACTIVE or INACTIVE as described in the
      template."
    * ``$aws/certificates/create/<format>`` (empty payload) -> accepted
      ``{certificateId, certificatePem, privateKey,
      certificateOwnershipToken}``; same status rules.
    * The ownership token "expires after one hour. RegisterThing must be
      called before the certificateOwnershipToken expires. If the
      certificate ... isn't activated and hasn't been attached to a policy
      or a thing by the time the token expires, the certificate is deleted."
    * ``$aws/provisioning-templates/<templateName>/provision/<format>``
      ``{certificateOwnershipToken, parameters}`` -> accepted
      ``{deviceConfiguration, thingName}``.
    * rejected: ``{statusCode, errorCode, errorMessage}``.  An empty token is
      answered ``400 InvalidCertificateOwnershipToken "Certificate ownership
      token cannot be empty."`` (reported by users of the AWS IoT Device SDK
      for JavaScript v2, aws/aws-iot-device-sdk-js-v2 issue 69).
    * Pre-provisioning hook (payload version 2020-04-01): AWS IoT invokes the
      Lambda function with ``{claimCertificateId, certificateId,
      certificatePem, templateArn, clientId, parameters}``; provisioning
      proceeds only if it returns ``{"allowProvisioning": true}``;
      ``parameterOverrides`` are added to the parameters.  "If the Lambda
      function fails or doesn't return the allowProvisioning parameter in the
      response, the provisioning request will fail" (the current guide: it
      fails with ACCESS_DENIED); "The Lambda function must finish running and
      return within 5 seconds, otherwise the provisioning request fails."
      AWS IoT invokes the function as the service principal
      ``iot.amazonaws.com`` (the guide asks for ``source-arn`` /
      ``source-account`` conditions "in the policies attached to your Lambda
      action"), so the function's resource policy must allow it.

What the emulator does
    Everything above, for JSON and CBOR (``fixes/_cbor.py``).  Requests are
    ordinary publishes first: the connection's policies must allow
    ``iot:Publish`` on the request topic and ``iot:Subscribe`` /
    ``iot:Receive`` on the response topics (broker.py; a denied publish or
    subscribe closes the connection, a denied receive drops the answer).  A
    request message is consumed by the service: it does not reach other
    subscribers or the rules engine.  The answer is sent only to the
    requesting connection, and only if that connection is subscribed to a
    filter matching the answer's topic at that moment (QoS = the
    subscription's).  Certificates are issued the way the API issues them
    (``create_certificate_from_csr`` patched by ``fixes/iot_csr``,
    ``create_keys_and_certificate``; ids by ``fixes/iot_certificate_id``)
    and set to ``PENDING_ACTIVATION``, so the gateway refuses them until
    RegisterThing activates them.

    RegisterThing: the token must be known, unexpired and its certificate
    still registered; the template (``fixes/iot_provisioning_templates``)
    must exist, be of type FLEET_PROVISIONING and enabled; its
    ``provisioningRoleArn`` must name an existing IAM role whose trust policy
    allows ``iot.amazonaws.com`` sts:AssumeRole (conditions are not
    evaluated); then the hook
    (if any) runs with a 5-second limit through the data path's Lambda
    runtime (``datapath/lambda_runtime.py``; permission checked like a
    rule's, with ``AWS:SourceArn`` = the template ARN); then the template's
    default version is rendered and applied by the template engine
    (``emulator/provisioning``) with the parameters (overrides applied) plus
    ``AWS::IoT::Certificate::Id`` = the token's certificate; the certificate
    then gets the template certificate resource's ``Status`` (default
    ACTIVE) if it is still PENDING_ACTIVATION.  The token is spent on
    success.  An expired token is refused and its certificate deleted when
    still unused (not active, no policy or thing attached); expired tokens
    are also swept at every provisioning request.

    Token lifetime: 3600 s, or ``IOTREG_EMULATOR_PROVISIONING_TOKEN_SECONDS``
    (read when the gateway starts); the clock is ``Tokens.clock`` (injectable).

Guessed (AWS does not document them; codes are AWS-like, messages the emulator's)
    * unknown or expired token, or a token whose certificate is gone ->
      ``400 InvalidCertificateOwnershipToken``;
    * template missing -> ``404 ResourceNotFound``; not enabled or of type
      JITP -> ``400 InvalidRequest``;
    * provisioning role missing in IAM, or not trusting iot.amazonaws.com ->
      ``403 AccessDenied`` (AWS IoT cannot assume it);
    * hook refused, failed, timed out, function missing / not permitted /
      not runnable by the emulator -> ``403 AccessDenied``;
    * a template that does not render or apply -> the engine's status and
      code (``InvalidRequestException`` 400, ``ResourceConflictsException``
      409, ``ResourceNotFoundException`` 404);
    * a payload that does not decode, or ``parameters`` that is not a map of
      strings -> ``400 InvalidPayload``; a CSR that does not parse ->
      ``400 InvalidCsr``;
    * a token is not bound to the claim certificate or connection that got
      it (any connection allowed to publish RegisterThing may spend it);
      ``claimCertificateId`` in the hook event is the certificate of the
      connection that publishes RegisterThing (null over WebSockets, where
      there is no certificate);
    * a template without a certificate resource leaves the certificate
      PENDING_ACTIVATION.

Not emulated: the hook's invocation is not retried; the time the hook keeps
running after the 5 s is its own (its CloudWatch Logs stream shows it);
``$aws/provisioning-templates/...`` over HTTPS publish (refused like any
other reserved topic).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .authz import note

LIFETIME_ENV = "IOTREG_EMULATOR_PROVISIONING_TOKEN_SECONDS"
TOKEN_LIFETIME = 3600.0
HOOK_TIMEOUT = 5.0
PENDING = "PENDING_ACTIVATION"

_REQUEST = re.compile(
    r"^\$aws/(?:certificates/(?P<cert>create-from-csr|create)"
    r"|provisioning-templates/(?P<template>[^/#+]+)/provision)/(?P<fmt>json|cbor)$"
)


def parse_request_topic(topic: str) -> tuple[str, str | None, str] | None:
    """(operation, template name, payload format) of a provisioning request topic, else None.

    operation: ``create-from-csr``, ``create`` or ``provision``."""
    match = _REQUEST.match(topic)
    if not match:
        return None
    if match["cert"]:
        return match["cert"], None, match["fmt"]
    return "provision", match["template"], match["fmt"]


class Rejected(Exception):
    """A provisioning request refused: the ``rejected`` payload."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def payload(self) -> dict:
        return {"statusCode": self.status, "errorCode": self.code, "errorMessage": self.message}


# -- ownership tokens ---------------------------------------------------------------


@dataclass
class Token:
    account: str
    region: str
    certificate_id: str
    issued_at: float


class Tokens:
    """Certificate ownership tokens: opaque, valid ``lifetime`` seconds from issue."""

    def __init__(self, clock: Callable[[], float] = time.time, lifetime: float | None = None) -> None:
        self.clock = clock
        if lifetime is None:
            raw = os.environ.get(LIFETIME_ENV)
            lifetime = float(raw) if raw else TOKEN_LIFETIME
        self.lifetime = lifetime
        self._tokens: dict[str, Token] = {}
        self._lock = threading.Lock()

    def issue(self, account: str, region: str, certificate_id: str) -> str:
        token = secrets.token_urlsafe(96)  # AWS's tokens are long opaque strings too
        with self._lock:
            self._tokens[token] = Token(account, region, certificate_id, self.clock())
        return token

    def expired(self, entry: Token) -> bool:
        return self.clock() >= entry.issued_at + self.lifetime

    def lookup(self, token: str) -> Token:
        """The token's entry; Rejected when unknown or expired (an expired one is dropped)."""
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                raise Rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token is not valid.")
            if self.expired(entry):
                del self._tokens[token]
                raise _Expired(entry)
            return entry

    def spend(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def take_expired(self) -> list[Token]:
        """Remove and return every expired token."""
        with self._lock:
            gone = [(t, e) for t, e in self._tokens.items() if self.expired(e)]
            for token, _ in gone:
                del self._tokens[token]
        return [entry for _, entry in gone]


class _Expired(Rejected):
    def __init__(self, entry: Token) -> None:
        super().__init__(400, "InvalidCertificateOwnershipToken", "Certificate ownership token has expired.")
        self.entry = entry


# -- payloads -------------------------------------------------------------------------


def decode(payload: bytes, fmt: str) -> dict:
    if not payload or not payload.strip():
        return {}
    try:
        if fmt == "cbor":
            from fixes import _cbor

            document = _cbor.decode(payload)
        else:
            document = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as error:
        raise Rejected(400, "InvalidPayload", f"The request payload is not valid {fmt.upper()}: {error}")
    if not isinstance(document, dict):
        raise Rejected(400, "InvalidPayload", "The request payload must be an object")
    return document


def encode(document: dict, fmt: str) -> bytes:
    if fmt == "cbor":
        from fixes import _cbor

        return _cbor.encode(document)
    return json.dumps(document).encode()


def trusts_iot(document) -> bool:
    """Does a role's trust policy let ``iot.amazonaws.com`` call sts:AssumeRole (no condition)?"""
    from urllib.parse import unquote

    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            try:
                document = json.loads(unquote(document))
            except ValueError:
                return False
    statements = document.get("Statement") if isinstance(document, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    allowed = False
    for statement in statements or []:
        if not isinstance(statement, dict):
            continue
        principal = statement.get("Principal")
        services = principal.get("Service") if isinstance(principal, dict) else None
        services = [services] if isinstance(services, str) else list(services or [])
        if principal != "*" and "iot.amazonaws.com" not in services:
            continue
        actions = statement.get("Action")
        actions = [actions] if isinstance(actions, str) else list(actions or [])
        if not any(a in ("sts:AssumeRole", "sts:*", "*") for a in actions):
            continue
        if statement.get("Effect") == "Deny":
            return False
        # A condition (sts:ExternalId, aws:SourceArn ...) is not evaluated: counted as met.
        allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


# -- the service ------------------------------------------------------------------------


class FleetProvisioning:
    def __init__(self, gateway, tokens: Tokens | None = None) -> None:
        self.gateway = gateway
        self.tokens = tokens or Tokens()

    # moto state, under the IoT backend's lock (API threads change it meanwhile)

    def _backend(self):
        return self.gateway.authorizer.iot_backend()

    def _lock(self, backend):
        from fixes.iot_concurrency import lock_for

        return lock_for(backend)

    # -- entry point (gateway event loop) --

    async def handle(self, topic: str, payload: bytes, session) -> None:
        from .broker import CONN_KEY

        parsed = parse_request_topic(topic)
        if parsed is None or session is None:
            return
        operation, template_name, fmt = parsed
        conn = session.attributes.get(CONN_KEY)
        loop = asyncio.get_running_loop()
        try:
            request = decode(payload, fmt)
            # Blocking work (moto under its lock, the hook up to 5 s) off the event loop.
            if operation == "create-from-csr":
                answer = await loop.run_in_executor(None, self.create_from_csr, request)
            elif operation == "create":
                answer = await loop.run_in_executor(None, self.create_keys_and_certificate)
            else:
                answer = await loop.run_in_executor(None, self.register_thing, template_name, request, conn)
            await self.deliver(session, f"{topic}/accepted", encode(answer, fmt))
        except Rejected as error:
            who = conn.client_id if conn is not None else "?"
            note(f"fleet provisioning {operation} of client {who!r} rejected: {error}")
            await self.deliver(session, f"{topic}/rejected", encode(error.payload(), fmt))
        except Exception as error:  # noqa: BLE001 - a bug answers 500, never kills the gateway
            note(f"fleet provisioning {operation} failed: {error!r}")
            await self.deliver(
                session, f"{topic}/rejected",
                encode({"statusCode": 500, "errorCode": "InternalFailure", "errorMessage": str(error)}, fmt),
            )

    async def deliver(self, session, topic: str, data: bytes) -> None:
        """Send ``topic`` to this session alone, if it is subscribed to it (AWS answers on the
        requesting connection; an answer nobody subscribed to is lost)."""
        from amqtt.contexts import Action

        broker = self.gateway.broker
        qos = None
        for _filter, subscriptions in broker.subscriptions_matching(topic):
            for target, sub_qos in subscriptions:
                if target is session or (session.client_id and target.client_id == session.client_id):
                    qos = max(qos or 0, min(sub_qos or 0, 1))
        if qos is None:
            note(f"fleet provisioning answer on {topic!r} not delivered to client {session.client_id!r}: not subscribed")
            return
        if session.transitions.state != "connected":
            return
        if not await broker._topic_filtering(session, topic, Action.RECEIVE):
            return  # _topic_filtering wrote why
        handler = broker._get_handler(session)
        if handler is not None:
            # Not awaited: a QoS 1 answer waits for the client's PUBACK.
            self.gateway._spawn(handler.mqtt_publish(topic, data, qos, retain=False))

    # -- the three operations (executor threads) --

    def _issue(self, backend, certificate) -> str:
        certificate.status = PENDING
        return self.tokens.issue(backend.account_id, backend.region_name, certificate.certificate_id)

    def create_from_csr(self, request: dict) -> dict:
        self.sweep()
        csr = request.get("certificateSigningRequest")
        if not isinstance(csr, str) or not csr.strip():
            raise Rejected(400, "InvalidCsr", "certificateSigningRequest is required")
        backend = self._backend()
        with self._lock(backend):
            try:
                certificate = backend.create_certificate_from_csr(csr, False)
            except Exception as error:  # noqa: BLE001 - InvalidRequestException from fixes/iot_csr
                raise Rejected(400, "InvalidCsr", getattr(error, "message", None) or str(error))
            token = self._issue(backend, certificate)
        return {
            "certificateId": certificate.certificate_id,
            "certificatePem": certificate.certificate_pem,
            "certificateOwnershipToken": token,
        }

    def create_keys_and_certificate(self) -> dict:
        self.sweep()
        backend = self._backend()
        with self._lock(backend):
            certificate, key_pair = backend.create_keys_and_certificate(False)
            token = self._issue(backend, certificate)
        return {
            "certificateId": certificate.certificate_id,
            "certificatePem": certificate.certificate_pem,
            "privateKey": key_pair["PrivateKey"],
            "certificateOwnershipToken": token,
        }

    def register_thing(self, template_name: str, request: dict, conn) -> dict:
        from fixes.iot_provisioning_templates import get_template

        token = request.get("certificateOwnershipToken")
        if not isinstance(token, str) or not token:
            raise Rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token cannot be empty.")
        parameters = request.get("parameters") or {}
        if not isinstance(parameters, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parameters.items()
        ):
            raise Rejected(400, "InvalidPayload", "parameters must be a map of strings to strings")
        try:
            entry = self.tokens.lookup(token)
        except _Expired as expired:
            self._delete_if_unused(expired.entry)
            raise
        finally:
            self.sweep()  # after the lookup, so this token's own expiry is reported as such
        backend = self._backend()
        with self._lock(backend):
            certificate = backend.certificates.get(entry.certificate_id)
            template = get_template(backend, template_name)
            if certificate is None or (entry.account, entry.region) != (backend.account_id, backend.region_name):
                raise Rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token is not valid.")
            if template is None:
                raise Rejected(404, "ResourceNotFound", f"The provisioning template {template_name} does not exist")
            if template.type != "FLEET_PROVISIONING":
                raise Rejected(400, "InvalidRequest", f"The provisioning template {template_name} is not a fleet provisioning template")
            if not template.enabled:
                raise Rejected(400, "InvalidRequest", f"The provisioning template {template_name} is not enabled")
            # A snapshot: an update of the template meanwhile does not change this request.
            body, hook, role_arn, template_arn = template.body, template.hook, template.role_arn, template.arn
            certificate_pem = certificate.certificate_pem
        self._check_role(role_arn, template_name)

        claim = conn.principal.certificate_id if conn is not None and conn.principal.kind == "certificate" else None
        if hook is not None:
            event = {
                "claimCertificateId": claim,
                "certificateId": entry.certificate_id,
                "certificatePem": certificate_pem,
                "templateArn": template_arn,
                "clientId": conn.client_id if conn is not None else None,
                "parameters": dict(parameters),
            }
            parameters = {**parameters, **self._run_hook(hook, template_arn, event)}

        import provisioning.template as engine

        rendered_parameters = {**parameters, "AWS::IoT::Certificate::Id": entry.certificate_id}
        try:
            rendered = engine.render(body, rendered_parameters, account=backend.account_id, region=backend.region_name)
            result = engine.apply(backend.account_id, backend.region_name, rendered, certificate_id=entry.certificate_id)
        except engine.TemplateError as error:
            raise Rejected(error.status, error.code, error.message)
        self._activate(backend, entry.certificate_id, rendered)
        self.tokens.spend(token)
        answer: dict[str, Any] = {"deviceConfiguration": result.get("deviceConfiguration") or {}}
        if result.get("thingName"):
            answer["thingName"] = result["thingName"]
        return answer

    # -- helpers --

    def _check_role(self, role_arn: str, template_name: str) -> None:
        """The role must exist and trust ``iot.amazonaws.com`` (AWS IoT assumes it to provision)."""
        from moto.iam.models import iam_backends

        account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
        try:
            role = iam_backends[account]["global"].get_role_by_arn(role_arn)
        except Exception:  # noqa: BLE001 - IAMNotFoundException, or an account moto never saw
            raise Rejected(
                403, "AccessDenied", f"The provisioning role {role_arn} of template {template_name} does not exist",
            )
        if not trusts_iot(role.assume_role_policy_document):
            raise Rejected(
                403, "AccessDenied",
                f"The provisioning role {role_arn} of template {template_name} cannot be assumed by AWS IoT",
            )

    def _run_hook(self, hook: dict, template_arn: str, event: dict) -> dict:
        """The hook's parameterOverrides; Rejected unless it allows provisioning within 5 s."""
        import datapath.lambda_runtime as lambda_runtime
        from datapath.rules import invoke_permitted
        from moto.awslambda.utils import get_backend

        arn = hook["targetArn"]
        account, region = template_arn.split(":")[4], template_arn.split(":")[3]
        refused = "Pre-provisioning hook validation failed."
        try:
            fn = get_backend(account, region).get_function(arn)
        except Exception:  # noqa: BLE001
            note(f"pre-provisioning hook {arn} does not exist")
            raise Rejected(403, "AccessDenied", refused)
        allowed, reason = invoke_permitted(fn, template_arn, account)
        if not allowed:
            note(f"pre-provisioning hook {arn}: not allowed to invoke it ({reason})")
            raise Rejected(403, "AccessDenied", refused)
        if not lambda_runtime.handles(fn):
            note(f"pre-provisioning hook {arn} (runtime {fn.run_time}) is not run by the emulator")
            raise Rejected(403, "AccessDenied", refused)

        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = lambda_runtime.invoke(fn, event, arn)
            except Exception as error:  # noqa: BLE001
                outcome["error"] = error

        # The function keeps its own Timeout (as on Lambda); AWS IoT stops waiting after 5 s.
        worker = threading.Thread(target=run, name="provisioning-hook", daemon=True)
        worker.start()
        worker.join(HOOK_TIMEOUT)
        if worker.is_alive():
            note(f"pre-provisioning hook {arn} did not answer within {HOOK_TIMEOUT:.0f} s")
            raise Rejected(403, "AccessDenied", refused)
        result = outcome.get("result")
        if result is None or result.error is not None:
            note(f"pre-provisioning hook {arn} failed: {outcome.get('error') or result.error}")
            raise Rejected(403, "AccessDenied", refused)
        try:
            answer = json.loads(result.payload or b"null")
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("allowProvisioning") is not True:
            note(f"pre-provisioning hook {arn} did not allow provisioning: {str(answer)[:200]}")
            raise Rejected(403, "AccessDenied", refused)
        overrides = answer.get("parameterOverrides") or {}
        if not isinstance(overrides, dict):
            note(f"pre-provisioning hook {arn}: parameterOverrides is not an object")
            raise Rejected(403, "AccessDenied", refused)
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in overrides.items()}

    def _activate(self, backend, certificate_id: str, rendered) -> None:
        """The template's Status for a certificate still PENDING_ACTIVATION (default ACTIVE)."""
        status = "ACTIVE"
        resources = rendered.of_type("AWS::IoT::Certificate")
        if not resources:
            return
        status = str(resources[0].properties.get("Status") or status).upper()
        with self._lock(backend):
            certificate = backend.certificates.get(certificate_id)
            if certificate is not None and certificate.status == PENDING and status in ("ACTIVE", "INACTIVE"):
                certificate.status = status

    def _delete_if_unused(self, entry: Token) -> None:
        """AWS deletes a certificate whose token expired before it was activated or attached."""
        from moto.iot.models import iot_backends

        try:
            backend = iot_backends[entry.account][entry.region]
        except KeyError:
            return
        with self._lock(backend):
            certificate = backend.certificates.get(entry.certificate_id)
            if certificate is None or certificate.status != PENDING:
                return
            arn = certificate.arn
            if any(principal == arn for principal, _ in backend.principal_policies):
                return
            if any(principal == arn for principal, _ in backend.principal_things):
                return
            del backend.certificates[entry.certificate_id]
        note(f"certificate {entry.certificate_id[:12]}... deleted: its ownership token expired unused")

    def sweep(self) -> None:
        for entry in self.tokens.take_expired():
            self._delete_if_unused(entry)
