"""Tests for the iam-role module: a role a service assumes, with an inline read policy.

Run against a local moto server, no AWS account needed:
    pytest --iac-aws-sandbox=moto examples/modules/iam-role
"""

import json

BUCKET_ARN = "arn:aws:s3:::reports"


def test_role_trusts_the_service_and_reads_the_buckets(iac_deploy, iac_name, aws_sandbox):
    stack = iac_deploy(
        vars={"name": iac_name, "service": "lambda.amazonaws.com", "read_buckets": [BUCKET_ARN]}
    )
    iam = aws_sandbox.client("iam")

    role = iam.get_role(RoleName=stack.outputs["role_name"])["Role"]
    assert role["Arn"] == stack.outputs["role_arn"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    # The provider's default_tags reached the role, the run's tags merged in.
    tags = {t["Key"]: t["Value"] for t in role.get("Tags", [])}
    assert tags["pytest-iac:test"].startswith(iac_name)

    document = iam.get_role_policy(
        RoleName=stack.outputs["role_name"], PolicyName=stack.outputs["policy_name"]
    )["PolicyDocument"]
    if isinstance(document, str):
        document = json.loads(document)
    statements = {s["Sid"]: s for s in document["Statement"]}
    assert statements["ListBuckets"]["Resource"] == BUCKET_ARN
    assert statements["ReadObjects"]["Resource"] == f"{BUCKET_ARN}/*"
    assert statements["ReadObjects"]["Action"] == "s3:GetObject"
