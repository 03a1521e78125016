"""The Pulumi program: `pulumi up` runs this file (Pulumi.yaml `main: infra_pulumi/`).

Every AWS resource goes through one explicit provider whose `default_tags` put `Project` and
`Stack` on everything: unlike `aws:defaultTags` stack config, an explicit provider's tags are
inputs of the program (visible to the mock tests and to policy checks) and cannot be forgotten
in a new stack's YAML.
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_aws as aws

from infra_pulumi import config as stack_config
from infra_pulumi.package import BuiltPackage, PackageSpec, build, describe_zip
from infra_pulumi.queue import NotificationQueue, NotificationQueueArgs
from infra_pulumi.runner import (
    POLL_MAX_EVENT_AGE_SECONDS,
    Runner,
    RunnerArgs,
    RunnerSchedule,
    RunnerScheduleArgs,
)
from infra_pulumi.storage import Storage, StorageArgs


def lambda_package(path: str | None) -> BuiltPackage:
    """The prebuilt zip from config, else a build (cached by its inputs: a no-op when unchanged)."""
    if path:
        return describe_zip(Path(path).expanduser())
    return build(PackageSpec())


def main() -> None:
    stack = stack_config.load()
    cfg = stack.settings
    prefix = stack.name_prefix

    provider = aws.Provider(
        "aws",
        region=stack.region,
        default_tags={"tags": {"Project": stack.project, "Stack": stack.stack}},
    )
    with_aws = pulumi.ResourceOptions(providers=[provider])
    account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(provider=provider)).account_id

    storage = Storage(
        f"{prefix}-storage",
        StorageArgs(
            encryption=cfg.encryption,
            kms_key_arn=cfg.kms_key_arn,
            noncurrent_version_expiration_days=cfg.noncurrent_version_expiration_days,
            force_destroy=cfg.force_destroy,
        ),
        opts=with_aws,
    )
    queue = NotificationQueue(
        f"{prefix}-notifications",
        NotificationQueueArgs(
            bucket_name=storage.bucket_name,
            bucket_arn=storage.bucket_arn,
            account_id=account_id,
            visibility_timeout_seconds=cfg.queue_visibility_timeout_seconds,
            max_receive_count=cfg.dlq_max_receive_count,
            alarm_topic_arn=cfg.alarm_topic_arn,
        ),
        opts=with_aws,
    )
    runner = Runner(
        f"{prefix}-runner",
        RunnerArgs(
            package=lambda_package(cfg.lambda_package_path),
            bucket_name=storage.bucket_name,
            bucket_arn=storage.bucket_arn,
            queue_arn=queue.queue_arn,
            region=stack.region,
            kms_key_arn=storage.kms_key_arn,
            prefect_api_key=stack.prefect_api_key,
            contact=cfg.contact,
            bls_surveys=cfg.bls_surveys,
            timeout_seconds=cfg.function_timeout_seconds,
            memory_mb=cfg.function_memory_mb,
            batch_size=cfg.batch_size,
            batching_window_seconds=cfg.batching_window_seconds,
            log_retention_days=cfg.log_retention_days,
            bls_base_url=cfg.bls_base_url,
            population_url=cfg.population_url,
            prefect_api_url=cfg.prefect_api_url,
            bls_max_concurrent_requests=cfg.bls_max_concurrent_requests,
            bls_requests_per_second=cfg.bls_requests_per_second,
            invoke_self=cfg.uses_work_pool,
            # The pool's run limit plus the reports batches and the poll (config.py): only the
            # work-pool function reserves concurrency.
            reserved_concurrency=cfg.function_reserved_concurrency if cfg.uses_work_pool else None,
            reports_max_concurrency=stack_config.REPORTS_MAX_CONCURRENCY,
        ),
        opts=with_aws,
    )

    if cfg.uses_work_pool:
        # Prefect schedules the deployments; EventBridge only wakes the worker poll every minute.
        from infra_pulumi.automation import ZombieRunAutomation, ZombieRunAutomationArgs
        from infra_pulumi.limits import BlsPolitenessLimits, BlsPolitenessLimitsArgs
        from infra_pulumi.work_pool import LambdaWorkPool, LambdaWorkPoolArgs

        pool = LambdaWorkPool(
            f"{prefix}-work-pool",
            LambdaWorkPoolArgs(
                pool_name=cfg.work_pool_name,
                function_arn=runner.function_arn,
                region=stack.region,
                api_url=str(cfg.prefect_api_url),
                api_key=stack.prefect_api_key,
                concurrency_limit=cfg.max_concurrent_runs,
                # Where the worker (in the poll or anywhere else) reads the invocations that died,
                # and the log lines it forwards to their runs.
                invoke_failure_queue_url=runner.invoke_failure_queue_url,
                log_group_name=runner.log_group_name,
            ),
        )
        # Crashes a run the function executes (tagged quest-in-lambda) whose heartbeats stop.
        zombies = ZombieRunAutomation(
            f"{prefix}-zombie-runs",
            ZombieRunAutomationArgs(
                automation_name=f"{prefix}: crash flow runs whose heartbeats stopped",
                api_url=str(cfg.prefect_api_url),
                api_key=stack.prefect_api_key,
                pool_name=pool.pool_name,
            ),
        )
        # At most N requests in flight and R per second to BLS, across every invocation at once.
        limits = BlsPolitenessLimits(
            f"{prefix}-bls-limits",
            BlsPolitenessLimitsArgs(
                api_url=str(cfg.prefect_api_url),
                api_key=stack.prefect_api_key,
                max_concurrent_requests=cfg.bls_max_concurrent_requests,
                requests_per_second=cfg.bls_requests_per_second,
            ),
        )
        RunnerSchedule(
            f"{prefix}-poll-work-pool",
            RunnerScheduleArgs(
                function_arn=runner.function_arn,
                schedule_expression=cfg.poll_schedule_expression,
                payload=pool.pool_name.apply(lambda name: {"poll_work_pool": name}),
                description="one polling round of the Lambda work pool's worker",
                max_event_age_seconds=POLL_MAX_EVENT_AGE_SECONDS,  # the next poll is a minute away
            ),
            opts=pulumi.ResourceOptions(parent=runner),
        )
        pulumi.export("workPoolName", pool.pool_name)
        pulumi.export("zombieAutomationId", zombies.automation_id)
        pulumi.export("blsConcurrencyLimitName", limits.concurrency_limit_name)
        pulumi.export("blsRateLimitName", limits.rate_limit_name)
    else:
        RunnerSchedule(
            f"{prefix}-daily-ingest",
            RunnerScheduleArgs(
                function_arn=runner.function_arn,
                schedule_expression=cfg.schedule_expression,
                description="the ingest flow (BLS mirror + population snapshot)",
            ),
            opts=pulumi.ResourceOptions(parent=runner),
        )

    pulumi.export("bucketName", storage.bucket_name)
    pulumi.export("queueUrl", queue.queue_url)
    pulumi.export("dlqUrl", queue.dlq_url)
    pulumi.export("functionName", runner.function_name)
    pulumi.export("functionArn", runner.function_arn)
    pulumi.export("logGroupName", runner.log_group_name)
    # Where Lambda leaves the record of an async invoke it gave up on (every stack).
    pulumi.export("invokeFailureQueueUrl", runner.invoke_failure_queue_url)


if __name__ == "__main__":
    main()
