"""Storage: the private, encrypted, versioned bucket the flows write `bls/`, `population/`, `reports/` to."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws

from infra_pulumi import iam

# Incomplete multipart uploads (a stream that failed mid-way) cost storage until aborted.
ABORT_INCOMPLETE_MULTIPART_DAYS = 7


@dataclass(frozen=True, kw_only=True)
class StorageArgs:
    """The bucket's settings: plain stack-config values, known before any resource exists."""

    encryption: Literal["sse-s3", "sse-kms"] = "sse-s3"
    kms_key_arn: str | None = None  # with sse-kms: this key, else the component creates one
    noncurrent_version_expiration_days: int = 30
    force_destroy: bool = False


class Storage(pulumi.ComponentResource):
    """The data bucket with public access blocked, default encryption, versioning, lifecycle, TLS-only."""

    bucket: aws.s3.Bucket
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("quest:storage:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=args.force_destroy, opts=child)
        bucket_id = self.bucket.id

        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket_id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket_id,
            rule={"object_ownership": "BucketOwnerEnforced"},  # ACLs off: the policy alone decides
            opts=child,
        )

        self.kms_key_arn = None
        rule: aws.s3.BucketServerSideEncryptionConfigurationRuleArgsDict
        if args.encryption == "sse-kms":
            if args.kms_key_arn:
                key_arn = pulumi.Output.from_input(args.kms_key_arn)
            else:
                key = aws.kms.Key(
                    f"{name}-key",
                    description=f"{name}: data bucket encryption",
                    enable_key_rotation=True,
                    deletion_window_in_days=30,
                    opts=child,
                )
                key_arn = key.arn
            self.kms_key_arn = key_arn
            # Bucket key: one data key per bucket, not one KMS call per object.
            rule = {
                "apply_server_side_encryption_by_default": {
                    "sse_algorithm": "aws:kms",
                    "kms_master_key_id": key_arn,
                },
                "bucket_key_enabled": True,
            }
        else:
            rule = {"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=bucket_id, rules=[rule], opts=child
        )

        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket_id,
            versioning_configuration={"status": "Enabled"},
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket_id,
            rules=[
                {
                    "id": "expire-noncurrent-versions",
                    "status": "Enabled",
                    "filter": {},
                    "noncurrent_version_expiration": {
                        "noncurrent_days": args.noncurrent_version_expiration_days
                    },
                },
                {
                    "id": "abort-incomplete-multipart-uploads",
                    "status": "Enabled",
                    "filter": {},
                    "abort_incomplete_multipart_upload": {
                        "days_after_initiation": ABORT_INCOMPLETE_MULTIPART_DAYS
                    },
                },
            ],
            # S3 rejects noncurrent-version rules racing the versioning change.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        aws.s3.BucketPolicy(
            f"{name}-tls-only",
            bucket=bucket_id,
            policy=self.bucket.arn.apply(lambda arn: json.dumps(iam.tls_only_bucket_policy(arn))),
            # The public access block goes first so no policy is ever evaluated without it.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )

        self.bucket_name = self.bucket.bucket
        self.bucket_arn = self.bucket.arn
        self.register_outputs(
            {"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn, "kms_key_arn": self.kms_key_arn}
        )
