"""Fix: S3 conditional PutObject / DeleteObject are atomic; DeleteObject takes ``If-Match: *``.

iotreg's S3 state backend (issue 14) builds a lock and compare-and-swap
state writes on S3's conditional requests: PutObject ``KEY.lock`` with
``If-None-Match: *`` (create only), DeleteObject ``KEY.lock`` with
``If-Match: <etag>``, PutObject ``KEY`` with ``If-Match: <etag>``.

AWS behaviour restored
    * A conditional write is one atomic step: S3 evaluates the precondition
      against the current object and writes in one go, so of several
      concurrent PutObjects of one key with ``If-None-Match: *`` exactly one
      succeeds and the others fail (412 PreconditionFailed, or 409
      ConditionalRequestConflict when they overlap; API reference,
      PutObject ``IfNoneMatch``/``IfMatch``), and of several writers holding
      the same ETag (``If-Match``) only one can replace the object.
    * DeleteObject ``If-Match: *`` deletes the current object whatever its
      ETag (API reference, DeleteObject ``IfMatch``: "If-Match does accept a
      string value of an '*' (asterisk) character to denote a match of any
      ETag"; User Guide, "How to perform conditional deletes": ``*`` checks
      that the object exists).  With no current object (a missing key, or a
      delete marker as the current version) the conditional delete fails
      with 404 NoSuchKey, ``*`` or not (moto already answers that).

What moto 5.2.1 does instead
    * ``S3Response.put_object`` (moto/s3/responses.py, lines 2249-2283)
      checks ``If-Match`` / ``If-None-Match`` with ``backend.get_object``,
      then parses checksum, lock, ACL and tagging headers and only then calls
      ``backend.put_object``; ``delete_object`` (lines 3048-3058) likewise
      checks, then deletes.  Nothing holds the two steps together while the
      emulator serves every request on its own thread, so two requests can
      both pass the check: with 8 threads racing ``If-None-Match: *`` on one
      key, 1 round in 150 had two winners (two holders of the same lock), and
      a conditional delete could remove an object another request had just
      replaced.
    * DeleteObject compares ``*`` with the ETag literally: 412
      PreconditionFailed for every existing object.

What this fix does
    * ``S3Response.put_object`` and ``S3Response.delete_object`` run under
      one re-entrant lock per S3 backend (account/partition), kept on the
      backend instance (``/moto-api/reset`` starts it afresh).  The request
      body is read before the handler runs, so the lock covers only
      in-memory work.  Serialized, a losing conditional request sees the
      winner's object and gets 412; the emulator never answers 409
      ConditionalRequestConflict (AWS may; a client must handle both).
      Other writers (CopyObject, CompleteMultipartUpload, DeleteObjects,
      tagging/ACL calls) are not serialized with them (iotreg sends none).
    * DeleteObject: moto's handler with one change, ``If-Match: *`` matches
      any current object.  Everything else is moto's: a missing bucket is
      NoSuchBucket 404, a missing key or a delete marker with ``If-Match``
      NoSuchKey 404 (without ``<Key>``), a wrong ETag 412 PreconditionFailed
      with ``<Condition>If-Match</Condition>``, quotes around the ETag
      optional, a versioned bucket gets a delete marker.

Already right in moto 5.2.1 (checked by tests/test_s3_state.py, unchanged):
PutObject ``If-None-Match: *`` on an existing key 412 (a delete marker does
not count as existing), ``If-Match`` right/wrong ETag 200/412, ``If-Match`` on
a missing key or a delete marker 404 NoSuchKey, ETags quoted and the same in
PutObject/HeadObject/GetObject/ListObjectsV2.

``apply()`` is idempotent: it always wraps moto's original handlers (one lock
layer, however often it runs).
"""

from __future__ import annotations

import threading

from ._util import BackendLock, patch

_LOCK = BackendLock("_emulator_s3_write_lock", "backend")


def lock_for(backend) -> threading.RLock:
    """The S3 backend's write lock (see ``_util.BackendLock``)."""
    return _LOCK.lock_for(backend)


_locked = _LOCK.wrap
is_locked = _LOCK.is_wrapped


def _delete_object(self):
    """moto 5.2.1's ``S3Response.delete_object``, with ``If-Match: *`` = any ETag."""
    from moto.s3.exceptions import MissingKey, PreconditionFailed

    bypass = self.headers.get("X-Amz-Bypass-Governance-Retention")
    key_name = self.parse_key_name()
    version_id = self._get_param("versionId")
    if_match = self.headers.get("If-Match")

    if if_match:
        if not (obj := self.backend.get_object(self.bucket_name, key_name)):
            raise MissingKey
        if if_match.strip() != "*" and if_match.replace('"', "") != obj.etag.replace('"', ""):
            raise PreconditionFailed("If-Match")

    _, response_meta = self.backend.delete_object(
        self.bucket_name, key_name, version_id=version_id, bypass=bypass
    )
    response_headers = {}
    for k in response_meta:
        response_headers[f"x-amz-{k}"] = response_meta[k]
    return 204, response_headers, ""


def apply() -> None:
    from moto.s3.responses import S3Response

    put_original = getattr(S3Response, "_emulator_orig_put_object", S3Response.put_object)
    patch(S3Response, "put_object", _locked(put_original))
    patch(S3Response, "delete_object", _locked(_delete_object))
