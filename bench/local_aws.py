"""What every bench/ helper does first: fake credentials only, and nothing from ~/.aws, so
that no call can reach real AWS. Imported before boto3 (it reads the environment once)."""

from __future__ import annotations

import os

FAKE = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
DROPPED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")


def isolate() -> None:
    """Sets the fake credentials and drops anything that could point elsewhere."""
    os.environ.update(FAKE)
    for k in DROPPED:
        os.environ.pop(k, None)
