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
"""

from __future__ import annotations

import base64

from ._util import patch, truthy

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 250


def _encode_marker(offset: int) -> str:
    return base64.b64encode(f"offset:{offset}".encode()).decode()


def _decode_marker(marker: str) -> int:
    from moto.iot.exceptions import InvalidRequestException

    try:
        text = base64.b64decode(marker.encode(), validate=True).decode()
        kind, _, value = text.partition(":")
        if kind != "offset":
            raise ValueError(marker)
        offset = int(value)
        if offset < 0:
            raise ValueError(marker)
        return offset
    except ValueError:
        raise InvalidRequestException("The marker is not valid.")


def _list_certificates(self):
    from moto.core.responses import ActionResult
    from moto.iot.exceptions import InvalidRequestException

    query = self.querystring
    raw_size = query.get("pageSize", [None])[0]
    try:
        page_size = int(raw_size) if raw_size is not None else DEFAULT_PAGE_SIZE
    except ValueError:
        page_size = 0
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequestException(
            f"pageSize must be between 1 and {MAX_PAGE_SIZE}."
        )
    ascending = truthy(query.get("isAscendingOrder", [None])[0])
    marker = query.get("marker", [None])[0]
    offset = _decode_marker(marker) if marker else 0

    certificates = sorted(
        self.iot_backend.list_certificates(),
        key=lambda cert: cert.creation_date,
        reverse=not ascending,
    )
    page = certificates[offset : offset + page_size]
    next_offset = offset + page_size
    entries = []
    for cert in page:
        entry = cert.to_dict()
        entry.setdefault("certificateMode", "DEFAULT")
        entries.append(entry)
    return ActionResult(
        {
            "certificates": entries,
            "nextMarker": _encode_marker(next_offset)
            if next_offset < len(certificates)
            else None,
        }
    )


def apply() -> None:
    from moto.iot.responses import IoTResponse

    patch(IoTResponse, "list_certificates", _list_certificates)
