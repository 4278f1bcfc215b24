"""Fix: IoT certificate ids are the SHA-256 fingerprint of the DER certificate.

AWS behaviour restored
    A certificateId (and the last part of the certificate ARN) is the hex
    SHA-256 of the certificate's DER encoding, so a client can compute the id
    of a certificate it holds and find it again.

What moto 5.2.1 does instead
    By default (``iot.use_valid_cert`` = False in moto's config) it hashes the
    PEM *text*, which no client can reproduce.  moto already has the correct
    code path; this fix only switches it on.
"""

from __future__ import annotations


def apply() -> None:
    from moto.core.config import default_user_config

    default_user_config.setdefault("iot", {})["use_valid_cert"] = True
