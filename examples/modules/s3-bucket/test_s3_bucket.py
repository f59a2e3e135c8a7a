"""Tests for the s3-bucket module: deployed once, inspected with boto3.

Run against a local moto server, no AWS account needed:
    pytest --iac-aws-sandbox=moto examples/modules/s3-bucket
"""

import secrets

import pytest

NAME = f"pytest-iac-example-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def bucket(iac_module_deploy):
    # One deployment for every test here: an AWS provider init + apply takes seconds.
    return iac_module_deploy(vars={"name": NAME, "tags": {"team": "storage"}})


def test_versioning_is_enabled(bucket, aws_sandbox):
    s3 = aws_sandbox.client("s3")
    versioning = s3.get_bucket_versioning(Bucket=bucket.outputs["bucket_name"])
    assert versioning["Status"] == "Enabled"


def test_objects_are_encrypted_at_rest(bucket, aws_sandbox):
    s3 = aws_sandbox.client("s3")
    encryption = s3.get_bucket_encryption(Bucket=bucket.outputs["bucket_name"])
    [rule] = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_public_access_is_blocked(bucket, aws_sandbox):
    s3 = aws_sandbox.client("s3")
    block = s3.get_public_access_block(Bucket=bucket.outputs["bucket_name"])
    assert all(block["PublicAccessBlockConfiguration"].values())


def test_tags_carry_the_callers_and_the_runs(bucket, aws_sandbox):
    s3 = aws_sandbox.client("s3")
    tag_set = s3.get_bucket_tagging(Bucket=bucket.outputs["bucket_name"])["TagSet"]
    tags = {t["Key"]: t["Value"] for t in tag_set}
    assert tags["team"] == "storage"
    assert "pytest-iac:run" in tags  # what the leak sweep after teardown looks for
    assert bucket.outputs["bucket_arn"] == f"arn:aws:s3:::{NAME}"
