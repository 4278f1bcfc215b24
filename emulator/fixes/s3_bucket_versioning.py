"""Fix: GetBucketVersioning answers with S3's own root element.

AWS behaviour restored
    GetBucketVersioning's body is a ``VersioningConfiguration`` element in
    S3's namespace: empty for a bucket whose versioning was never set,
    with ``<Status>Enabled</Status>`` or ``<Status>Suspended</Status>`` (and
    ``<MfaDelete>`` when set) otherwise.  Clients built from the Smithy
    model, the AWS SDK for Rust among them, check that root element and
    refuse any other.

What moto 5.2.1 does instead
    Its generic REST-XML serializer wraps every result in
    ``<{Operation}Response>`` unless the output has a payload member, so the
    answer is ``<GetBucketVersioningResponse>``: botocore ignores root names,
    the Rust SDK fails to parse it ("invalid root").  The payload operations
    iotreg reads (GetPublicAccessBlock, GetBucketEncryption) are serialized
    correctly and are left alone.
"""

from __future__ import annotations

import re

from ._util import patch

WRONG_ROOT = re.compile(r"<(/?)GetBucketVersioningResponse\b")
REQUEST_ID = re.compile(r"<requestId>[^<]*</requestId>")


def apply() -> None:
    from moto.core import serialize

    cls = serialize.S3Serializer
    original = getattr(cls, "_emulator_orig__serialized_result_to_response", None) or cls._serialized_result_to_response

    def _serialized_result_to_response(self, resp, result, shape, serialized_result):
        resp = original(self, resp, result, shape, serialized_result)
        if self.operation_model.name == "GetBucketVersioning":
            body = resp.get("body")
            text = body.decode() if isinstance(body, bytes) else body
            if isinstance(text, str):
                text = WRONG_ROOT.sub(r"<\1VersioningConfiguration", text)
                text = REQUEST_ID.sub("", text)
                resp["body"] = text.encode() if isinstance(body, bytes) else text
        return resp

    patch(cls, "_serialized_result_to_response", _serialized_result_to_response)
