"""Fix: IoT UpdateCertificate validates the status and stamps lastModifiedDate.

AWS behaviour restored
    UpdateCertificate accepts ACTIVE, INACTIVE, REVOKED and REGISTER_INACTIVE;
    PENDING_TRANSFER and PENDING_ACTIVATION are internal states that AWS
    refuses (InvalidRequestException), as is any other word.  A successful
    update moves DescribeCertificate's lastModifiedDate.

What moto 5.2.1 does instead
    Stores any string as the status ("TODO: validate new_status") and never
    changes lastModifiedDate.
"""

from __future__ import annotations

from ._util import patch

SETTABLE = {"ACTIVE", "INACTIVE", "REVOKED", "REGISTER_INACTIVE"}


def _update_certificate(self, certificate_id: str, new_status: str) -> None:
    from moto.core.utils import utcnow
    from moto.iot.exceptions import InvalidRequestException

    cert = self.describe_certificate(certificate_id)
    if new_status not in SETTABLE:
        raise InvalidRequestException(
            f"Certificate status cannot be set to {new_status}."
        )
    if cert.status != new_status:
        cert.status = new_status
        cert.last_modified_date = utcnow()


def apply() -> None:
    from moto.iot.models import IoTBackend

    patch(IoTBackend, "update_certificate", _update_certificate)
