"""Storage component under Pulumi mocks: the bucket's security-relevant properties."""

from __future__ import annotations

from pulumi_mocks import install, policy_doc, run

from infra_pulumi.storage import ABORT_INCOMPLETE_MULTIPART_DAYS, Storage, StorageArgs


def _storage(**kwargs):
    mocks = install({"contact": "me@example.com", "aws:region": "us-east-1"})
    arn = run(lambda: Storage("data", StorageArgs(**kwargs)).bucket_arn)
    return mocks, arn


def test_bucket_is_private_encrypted_versioned_and_expires_old_versions():
    mocks, arn = _storage(noncurrent_version_expiration_days=9)
    bucket = mocks.one("aws:s3/bucket:Bucket")
    assert arn == f"arn:aws:s3:::{bucket.id}"
    assert bucket.type == "aws:s3/bucket:Bucket"  # v7 name, not the deprecated BucketV2
    assert not mocks.of_type("aws:s3/bucketV2:BucketV2")
    assert bucket.inputs.get("forceDestroy") is False

    block = mocks.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert block["bucket"] == bucket.id
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block[flag] is True, flag

    sse = mocks.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs
    (rule,) = sse["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    assert not mocks.of_type("aws:kms/key:Key")

    versioning = mocks.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"] == {"status": "Enabled"}

    rules = {
        r["id"]: r
        for r in mocks.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    }
    assert rules["expire-noncurrent-versions"]["noncurrentVersionExpiration"]["noncurrentDays"] == 9
    abort = rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"]
    assert abort["daysAfterInitiation"] == ABORT_INCOMPLETE_MULTIPART_DAYS == 7
    assert all(r["status"] == "Enabled" for r in rules.values())

    (deny,) = policy_doc(mocks.one("aws:s3/bucketPolicy:BucketPolicy"))["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [arn, f"{arn}/*"]


def test_sse_kms_creates_a_rotating_key_when_none_is_given():
    mocks, _ = _storage(encryption="sse-kms")
    key = mocks.one("aws:kms/key:Key")
    assert key.inputs["enableKeyRotation"] is True
    (rule,) = mocks.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"]
    default = rule["applyServerSideEncryptionByDefault"]
    assert default == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key.outputs["arn"]}
    assert rule["bucketKeyEnabled"] is True


def test_sse_kms_uses_the_configured_key():
    given = "arn:aws:kms:us-east-1:123456789012:key/given"
    mocks, _ = _storage(encryption="sse-kms", kms_key_arn=given, force_destroy=True)
    assert not mocks.of_type("aws:kms/key:Key")
    (rule,) = mocks.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"] == given
    assert mocks.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is True


def test_children_are_parented_to_the_component():
    mocks, _ = _storage()
    aws_children = [r for r in mocks.resources if r.type.startswith("aws:")]
    assert len(aws_children) >= 7
    # The mock monitor names children's URNs after their parent's type.
    assert all(r.name.startswith("data-") for r in aws_children)
