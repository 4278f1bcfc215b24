"""Fixes applied to moto 5.2.1 before the emulator starts serving.

Each module restores one AWS behaviour that moto gets wrong in a way iotreg
can notice; its docstring says what AWS does and what moto did instead.
Every module exposes ``apply()``, which monkeypatches moto in this process
only (nothing on disk is changed) and is safe to call more than once.
"""

from __future__ import annotations

from . import (
    cloudwatch_cbor,
    cloudwatch_metrics,
    iot_certificate_id,
    iot_certificate_issuer,
    iot_concurrency,
    iot_connectivity,
    iot_csr,
    iot_endpoint,
    iot_indexing_configuration,
    iot_jobs,
    iot_list_certificates,
    iot_list_targets_for_policy,
    iot_list_things,
    iot_list_things_in_thing_group,
    iot_provisioning_templates,
    iot_registration_tasks,
    iot_search_index,
    iot_tags,
    iot_test_authorization,
    iot_thing_group_policies,
    iot_thing_types,
    iot_things,
    iot_topic_rules,
    iot_update_certificate,
    iotdata_shadow,
    lambda_event_source_mappings,
    lambda_permissions,
    s3_bucket_defaults,
    s3_bucket_versioning,
    s3_conditional,
    sns_email_pending,
)

FIXES = [
    iot_csr,  # Fix 1: CreateCertificateFromCsr keeps the CSR's public key
    iot_certificate_id,
    iot_certificate_issuer,
    iot_list_certificates,
    iot_update_certificate,
    iot_endpoint,
    iot_things,
    iot_thing_types,
    iot_topic_rules,
    iot_tags,  # after iot_thing_types: wraps its CreateThingType
    iot_test_authorization,  # IoT TestAuthorization by emulator/iotpolicy
    iot_provisioning_templates,  # provisioning templates and versions (fleet provisioning)
    iot_registration_tasks,  # bulk registration: StartThingRegistrationTask and friends
    iot_thing_group_policies,  # group policy attachments: recursive listing, dropped with the group
    iot_jobs,  # AWS IoT Jobs' control plane on the emulator's jobs engine (after the group/thing fixes it hooks)
    iot_list_things,  # ListThings: AWS's page sizes and filters, keyset pages over a cached sorted snapshot
    iot_list_targets_for_policy,  # ListTargetsForPolicy: pageSize/marker, targets indexed once per registry change
    iot_list_things_in_thing_group,  # ListThingsInThingGroup: maxResults/nextToken, recursive
    iot_indexing_configuration,  # Fleet Indexing configuration: AWS's modes, validation, defaults
    iot_connectivity,  # connectivity store the gateway feeds (cleared by /moto-api/reset)
    iot_search_index,  # SearchIndex on AWS_Things (query subset, pages), DescribeIndex, ListIndices
    iot_concurrency,  # after every iot_* fix: locks the handlers they installed
    iotdata_shadow,
    lambda_permissions,
    lambda_event_source_mappings,  # Kinesis mappings: AWS's defaults, states, checks; no push in PutRecord
    sns_email_pending,  # email/email-json subscriptions stay pending confirmation
    cloudwatch_cbor,  # CloudWatch over RPC v2 CBOR (aws-sdk-cloudwatch for Rust)
    cloudwatch_metrics,  # GetMetricData/GetMetricStatistics/ListMetrics: exact metric identity
    s3_bucket_defaults,  # new buckets: SSE-S3 default encryption, Block Public Access on
    s3_bucket_versioning,  # GetBucketVersioning's root element (aws-sdk-s3 for Rust)
    s3_conditional,  # atomic conditional PutObject/DeleteObject; DeleteObject If-Match: *
]


def apply_all() -> list[str]:
    """Apply every fix; return the module names applied, in order."""
    applied = []
    for fix in FIXES:
        fix.apply()
        applied.append(fix.__name__.rsplit(".", 1)[-1])
    return applied
