"""Fix: S3 buckets have AWS's defaults: SSE-S3 encryption and Block Public Access.

AWS behaviour restored
    * Default encryption.  Since 5 January 2023 every general purpose bucket
      has a default encryption configuration, SSE-S3 (API reference,
      GetBucketEncryption: "By default, all buckets have a default encryption
      configuration that uses server-side encryption with Amazon S3 managed
      keys (SSE-S3)"; DeleteBucketEncryption "resets the default encryption
      for the bucket as server-side encryption with Amazon S3 managed keys
      (SSE-S3)").  So GetBucketEncryption of a bucket nobody configured, or
      after DeleteBucketEncryption, answers 200 with one rule
      ``{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
      "BucketKeyEnabled": false}``; ServerSideEncryptionConfigurationNotFoundError
      is no longer answered for such buckets.  And every object stored
      without SSE request headers is SSE-S3: PutObject, HeadObject and
      GetObject answer ``x-amz-server-side-encryption: AES256``.
    * Block Public Access.  Since April 2023 S3 enables all four Block Public
      Access settings on every new bucket, whatever API creates it: a new
      bucket's GetPublicAccessBlock answers BlockPublicAcls, IgnorePublicAcls,
      BlockPublicPolicy and RestrictPublicBuckets all true.  Only after
      DeletePublicAccessBlock is it NoSuchPublicAccessBlockConfiguration 404.

What moto 5.2.1 does instead
    * A new bucket has no encryption configuration (``FakeBucket.encryption``
      None): GetBucketEncryption answers 404
      ServerSideEncryptionConfigurationNotFoundError, also after
      DeleteBucketEncryption; objects written without SSE headers carry no
      ``x-amz-server-side-encryption``.
    * A new bucket has no public access block (``FakeBucket.public_access_block``
      None): GetPublicAccessBlock answers 404
      NoSuchPublicAccessBlockConfiguration.

What this fix does
    * ``S3Backend.get_bucket_encryption`` returns the SSE-S3 default when the
      bucket has no configuration of its own (moto's DeleteBucketEncryption
      still removes the stored one, so the default is what is left).  The
      bucket's stored configuration stays None, so nothing else in moto
      changes (an in-place CopyObject without changes is still refused, as
      on AWS).
    * ``S3Backend.put_object`` (PutObject, CopyObject, CompleteMultipartUpload
      all end there) stores ``AES256`` as the object's encryption when the
      request names none and the bucket has no configuration of its own
      (with one, moto applies it as before).
    * A new ``FakeBucket`` gets a public access block with all four settings
      true; PutPublicAccessBlock / DeletePublicAccessBlock work on it as in
      moto.  moto enforces none of the settings (neither before nor now).

Not changed: an explicit PutBucketEncryption / PutPublicAccessBlock
configuration is stored and answered as moto does; the account-level public
access block (S3 Control) is moto's.
"""

from __future__ import annotations

import copy
import inspect

from ._util import patch

DEFAULT_ENCRYPTION = {
    "Rule": {
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
        "BucketKeyEnabled": "false",
    }
}


def _make_get_bucket_encryption(original):
    def get_bucket_encryption(self, bucket_name):
        configured = original(self, bucket_name)  # NoSuchBucket for a missing bucket
        return configured if configured else copy.deepcopy(DEFAULT_ENCRYPTION)

    return get_bucket_encryption


def _make_put_object(original):
    signature = inspect.signature(original)

    def put_object(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        if not bound.arguments.get("encryption"):
            bucket = self.get_bucket(bound.arguments["bucket_name"])
            if not bucket.encryption:
                bound.arguments["encryption"] = "AES256"
        return original(*bound.args, **bound.kwargs)

    return put_object


def _make_bucket_init(original):
    def __init__(self, *args, **kwargs):
        from moto.s3.models import PublicAccessBlock

        original(self, *args, **kwargs)
        self.public_access_block = PublicAccessBlock(True, True, True, True)

    return __init__


def apply() -> None:
    from moto.s3.models import FakeBucket, S3Backend

    for owner, name, make in (
        (S3Backend, "get_bucket_encryption", _make_get_bucket_encryption),
        (S3Backend, "put_object", _make_put_object),
        (FakeBucket, "__init__", _make_bucket_init),
    ):
        original = getattr(owner, f"_emulator_orig_{name}", getattr(owner, name))
        patch(owner, name, make(original))
