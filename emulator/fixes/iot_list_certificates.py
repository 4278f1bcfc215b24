"""Fix: IoT ListCertificates sorts by creation date and paginates.

AWS behaviour restored
    ListCertificates returns at most ``pageSize`` certificates (default 25,
    1..250) sorted by creationDate, newest first unless
    ``ascendingOrder=true``, and a ``nextMarker`` to pass back as ``marker``
    for the next page (absent on the last page).  Every entry carries
    certificateArn, certificateId, status, certificateMode and creationDate.

What moto 5.2.1 does instead
    It ignores pageSize, marker and ascendingOrder and returns every
    certificate in insertion order (oldest first) on a single page.  A client
    that scans newest-first and stops at the first certificate older than a
    cut-off (how iotreg finds its certificate after a crash) would stop at
    once and miss it.

At scale
    The order is kept as a sorted snapshot of (creationDate, certificateId)
    keys, rebuilt only after the registry changed (``_registry_version``);
    ``nextMarker`` names the last certificate of its page (``_paging``), so
    one page of 250 out of 100,000 certificates costs a bisect plus its own
    entries, not a sort of all of them.  Certificates created in the same
    instant are ordered by certificateId (AWS documents no tie order).
"""

from __future__ import annotations

from . import _paging
from ._registry_version import Snapshots
from ._util import patch, truthy

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 250
OP = "ListCertificates"

snapshots = Snapshots("_emulator_list_certificates")


def sorted_keys(backend, ascending: bool) -> list[tuple[float, str]]:
    """(sort value, certificateId) of every certificate, in listing order."""

    def build() -> list[tuple[float, str]]:
        sign = 1.0 if ascending else -1.0
        keys = [
            (sign * cert.creation_date.timestamp(), cert.certificate_id)
            for cert in list(backend.certificates.values())
        ]
        keys.sort()
        return keys

    return snapshots.get(backend, ascending, build)


def _list_certificates(self):
    query = self.querystring
    page_size = _paging.page_size(
        query.get("pageSize", [None])[0], DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, "pageSize"
    )
    ascending = truthy(query.get("isAscendingOrder", [None])[0])
    after = _paging.decode(OP, query.get("marker", [None])[0], "marker")
    backend = self.iot_backend
    chunk, next_after = _paging.page(sorted_keys(backend, ascending), after, page_size)
    entries = []
    for _, certificate_id in chunk:
        cert = backend.certificates.get(certificate_id)
        if cert is None:
            continue
        entry = {k: v for k, v in cert.to_dict().items() if v is not None}
        entry["creationDate"] = _paging.epoch_seconds(cert.creation_date)
        entry.setdefault("certificateMode", "DEFAULT")
        entries.append(entry)
    return _paging.answer(
        {
            "certificates": entries,
            "nextMarker": _paging.encode(OP, list(next_after)) if next_after is not None else None,
        }
    )


def apply() -> None:
    from moto.iot.responses import IoTResponse

    from . import _registry_version

    _registry_version.install()
    patch(IoTResponse, "list_certificates", _list_certificates)
