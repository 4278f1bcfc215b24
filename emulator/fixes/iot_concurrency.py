"""Fix: IoT requests are safe under concurrency (one lock per IoT backend).

AWS behaviour restored
    Concurrent control-plane calls each get their own answer: deleting a
    fleet with many calls in flight (DetachThingPrincipal, DetachPolicy,
    UpdateCertificate, DeleteCertificate, DeleteThing from 16 threads) never
    fails with an internal error, and every call costs about the same however
    many certificates and attachments the account holds.

What moto 5.2.1 does instead
    The emulator serves each request on its own thread (threaded werkzeug),
    but moto's IoTBackend keeps its state in plain OrderedDicts with no
    locking, and many calls iterate them:

    * DeleteCertificate -> ``delete_certificate`` -> ``describe_certificate``
      (iterates ``certificates``) and ``_validation_delete``, which iterates
      ``principal_things.items()`` and then ``principal_policies.items()``,
      calling ``_get_principal`` for every entry, which iterates
      ``certificates.values()`` again (moto/iot/models.py, lines 1829-1861
      and 2120-2149);
    * ListThingPrincipals (``things``, ``principal_things``),
      ListPrincipalThings (``principal_things``), ListTargetsForPolicy /
      ListPolicyPrincipals / ListAttachedPolicies / ListPrincipalPolicies /
      DeletePolicy (``principal_policies``), DescribeThing and DeleteThing
      (``things``; DeleteThing also ``list(principal_things.keys())``),
      Attach/Detach* (``_get_principal``: ``certificates``; ``get_policy``:
      ``policies``; ``describe_thing``: ``things``).

    Meanwhile other threads insert into or delete from the same dicts:
    Attach/DetachThingPrincipal (``principal_things``, lines 2205/2215),
    AttachPolicy/DetachPolicy and Attach/DetachPrincipalPolicy
    (``principal_policies``, lines 2008/2018/2157/2167),
    CreateKeysAndCertificate / CreateCertificateFromCsr / RegisterCertificate*
    / DeleteCertificate (``certificates``, lines 1821/1950/1963/1832),
    CreateThing / DeleteThing (``things``, lines 1619/1726), CreatePolicy /
    DeletePolicy (``policies``).  An iteration that sees the dict change size
    raises ``RuntimeError: OrderedDict mutated during iteration``, answered
    as HTTP 500.  Check-then-act sequences (detach, then delete; DeleteThing's
    "still attached?" check) can also interleave.

    DeleteCertificate was also quadratic: ``_validation_delete`` resolves
    every attachment's principal with a full scan of ``certificates``, so
    one delete cost (things attached + policies attached) x certificates, and
    tearing down a fleet of N devices about N**3.

What this fix does
    * Every IoT operation handler (every public method of moto's
      ``IoTResponse``, as installed after the other iot_* fixes) runs under
      one ``threading.RLock`` per IoTBackend instance, i.e. per
      account/region.  Calls to one backend are serialized; different
      accounts/regions do not wait for each other.  Re-entrant because
      handlers call backend methods that call each other (and a fix's handler
      may call the one it replaced).
    * ``IoTBackend._validation_delete`` (DeleteCertificate,
      DeleteCACertificate) resolves certificate principals through a dict
      built once per call (ARN -> first certificate with that ARN, exactly
      what ``_get_principal`` finds) instead of a scan per attachment: one
      delete costs certificates + attachments (linear; a teardown of N
      devices is still about N**2 in all).  Answers are unchanged,
      including moto's own: the same exceptions and messages in the same
      order; an attachment whose certificate no longer exists (left by
      ``forceDelete``) is still ResourceNotFoundException; non-certificate
      principals still go through ``_get_principal``.

Why the lock sits on the response handlers, not on backend methods
    Several fixes read or change the backend's dicts in the handler itself,
    outside any backend method: iot_things' DeleteThing (``things``,
    ``principal_things``), iot_list_certificates' ListCertificates (sorts
    ``certificates.values()``, a live view), iot_tags (``things``,
    ``thing_types``), iot_thing_types' CreateThingType.  A lock on backend
    methods would leave those iterations racing, and would not make a
    handler's check-then-act atomic.  The handler is the outermost callable
    of a request, so this fix is applied after every other iot_* fix and
    wraps whatever handler is in place (moto's or a fix's); every backend
    method a request reaches, wrapped by a fix or not, then runs inside the
    lock.  Locking all handlers rather than a list of them: nearly every IoT
    call reads ``things``, ``certificates`` or ``policies`` somewhere
    (thing groups, billing groups, tags, SearchIndex, ...), a shorter list is
    easy to get wrong, and an uncontended lock costs about a microsecond.
    The longest hold is CreateKeysAndCertificate (a fresh RSA-2048 key, about
    40 ms, during which the account/region's other IoT calls wait; iotreg
    sends at most 10 a second); CreateCertificateFromCsr only signs (under
    1 ms).  A held response (holds.py) sleeps outside moto, not under the lock.

    Not covered (no IoTResponse involved): the rules engine
    (emulator/datapath) reads ``rules`` from its own thread; shadows
    (iotdata_shadow) keep their own store and lock.

``apply()`` marks its wrappers; applied again it leaves a locked handler as
it is (one lock layer), and it wraps a handler that a fix installed after it.
"""

from __future__ import annotations

import inspect
import threading

from ._util import BackendLock, patch

_LOCK = BackendLock("_emulator_iot_lock", "iot_backend")


def lock_for(backend) -> threading.RLock:
    """The IoT backend's re-entrant lock (see ``_util.BackendLock``)."""
    return _LOCK.lock_for(backend)


_locked = _LOCK.wrap
is_locked = _LOCK.is_wrapped


def handler_names(response_class) -> list[str]:
    """The operation handlers: every public function of the response class."""
    return sorted(
        name
        for name, value in vars(response_class).items()
        if inspect.isfunction(value) and not name.startswith("_")
    )


def _principal_resolver(backend):
    """``_get_principal`` with certificates looked up in a dict, not scanned."""
    from moto.iot.exceptions import ResourceNotFoundException

    by_arn: dict | None = None

    def resolve(principal_arn: str):
        nonlocal by_arn
        if ":cert/" not in principal_arn:
            return backend._get_principal(principal_arn)
        if by_arn is None:
            by_arn = {}
            for cert in backend.certificates.values():
                by_arn.setdefault(cert.arn, cert)  # first match, as moto's scan
        try:
            return by_arn[principal_arn]
        except KeyError:
            raise ResourceNotFoundException()

    return resolve


class _NotACertificate:
    certificate_id = None


_NOT_A_CERTIFICATE = _NotACertificate()


def _validation_delete(self, cert, force_delete: bool = False) -> None:
    from moto.iot.exceptions import CertificateStateException, DeleteConflictException

    if cert.status == "ACTIVE":
        raise CertificateStateException(
            "Certificate must be deactivated (not ACTIVE) before deletion.",
            cert.certificate_id,
        )

    resolve = _principal_resolver(self)

    def principal(arn: str):
        # A thing group target (a group-attached policy) is no certificate: moto's own check
        # took it for one and answered 500 (see iot_thing_group_policies).
        p = resolve(arn)
        return p if hasattr(p, "certificate_id") else _NOT_A_CERTIFICATE

    certs = [
        k[0]
        for k in self.principal_things
        if principal(k[0]).certificate_id == cert.certificate_id
    ]
    if len(certs) > 0:
        raise DeleteConflictException(
            f"Things must be detached before deletion (arn: {certs[0]})"
        )

    certs = [
        k[0]
        for k in self.principal_policies
        if principal(k[0]).certificate_id == cert.certificate_id
    ]
    if len(certs) > 0 and not force_delete:
        raise DeleteConflictException(
            f"Certificate policies must be detached before deletion (arn: {certs[0]})"
        )


def apply() -> None:
    from moto.iot.models import IoTBackend
    from moto.iot.responses import IoTResponse

    patch(IoTBackend, "_validation_delete", _validation_delete)
    for name in handler_names(IoTResponse):
        current = getattr(IoTResponse, name)
        if not is_locked(current):
            patch(IoTResponse, name, _locked(current))
