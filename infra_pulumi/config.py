"""The stack's configuration: one typed object, defaults in code, validated before any resource exists.

Defaults live here rather than in `Pulumi.yaml` because only the CLI applies `Pulumi.yaml`
defaults; mock tests and every reader of this file see the same values. Keys are the camelCase
names `pulumi config set` uses (`quest:functionTimeoutSeconds`, ...). The Prefect API key is a
secret and never enters this object: it stays a secret `Output` (see `load`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pulumi
from pulumi.runtime.config import is_config_secret
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from flows.core.errors import QuestError
from flows.core.names import (
    BLS_MAX_CONCURRENT_REQUESTS_DEFAULT,
    BLS_REQUESTS_PER_SECOND_DEFAULT,
    DLQ_MAX_RECEIVE_COUNT_DEFAULT,
)
from flows.run_env import api_url_problem

# The retention values CloudWatch Logs accepts.
LOG_RETENTION_DAYS = frozenset(
    {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)
# SQS's ceiling for a queue's visibility timeout.
SQS_MAX_VISIBILITY_SECONDS = 12 * 3600
# AWS's guidance: the source queue's visibility timeout at least 6x the function timeout (plus the
# batching window), so a message is not redelivered while a throttled or retried invocation still runs.
VISIBILITY_TIMEOUT_FACTOR = 6
# The function's concurrency on work-pool stacks. It serves three kinds of invocation, and its
# reserved concurrency is their sum, so none can starve the others and a burst cannot take the
# account's whole pool: the flow runs (`maxConcurrentRuns`, also the work pool's concurrency limit,
# so Prefect holds further runs back instead of Lambda throttling them), the SQS reports batches
# (the mapping's maximum concurrency, set explicitly; 2 is the lowest SQS allows) and the
# every-minute poll (one at a time).
REPORTS_MAX_CONCURRENCY = 2
POLL_CONCURRENCY = 1
# Lambda keeps 100 of an account's default 1000 concurrent executions unreserved.
MAX_RESERVED_CONCURRENCY = 900


class StackConfigError(QuestError, ValueError):
    """The stack configuration is invalid; the message names the key and how to fix it."""


class StackConfig(BaseModel):
    """Every non-secret setting of a stack. Field `x_y` is config key `quest:xY`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")

    # What the flows need (becomes the function's QUEST_* environment).
    contact: str = Field(min_length=3, description="email or URL for the User-Agent BLS requires")
    bls_surveys: list[str] = Field(default_factory=lambda: ["pr"])
    bls_base_url: str | None = None
    population_url: str | None = None

    # Storage.
    encryption: Literal["sse-s3", "sse-kms"] = "sse-s3"
    kms_key_arn: str | None = Field(None, description="with sse-kms: this key, else the stack creates one")
    noncurrent_version_expiration_days: int = Field(30, ge=1, le=3650)
    force_destroy: bool = Field(False, description="let `pulumi destroy` delete a non-empty bucket")

    # Queue.
    dlq_max_receive_count: int = Field(DLQ_MAX_RECEIVE_COUNT_DEFAULT, ge=1, le=1000)
    alarm_topic_arn: str | None = Field(None, description="SNS topic notified when the DLQ holds messages")

    # Runner.
    function_timeout_seconds: int = Field(600, ge=30, le=900)
    function_memory_mb: int = Field(1024, ge=128, le=10240)
    batch_size: int = Field(1, ge=1, le=10000)
    batching_window_seconds: int = Field(0, ge=0, le=300)
    schedule_expression: str = "cron(0 6 * * ? *)"
    poll_schedule_expression: str = "rate(1 minute)"
    log_retention_days: int = 14
    lambda_package_path: str | None = Field(None, description="a prebuilt zip instead of building one")

    # Prefect (optional): with an API URL the stack also creates the Lambda work pool.
    prefect_api_url: str | None = None
    work_pool_name: str = Field("quest-lambda", min_length=1)
    # Flow runs in flight at once: the pool's concurrency limit and most of the function's
    # reserved concurrency (see REPORTS_MAX_CONCURRENCY). 10 keeps a backfill from occupying
    # much of an account's default 1000 while leaving daily runs far from the limit.
    max_concurrent_runs: int = Field(
        10, ge=1, le=MAX_RESERVED_CONCURRENCY - REPORTS_MAX_CONCURRENCY - POLL_CONCURRENCY
    )
    # Politeness to BLS across every invocation at once: Prefect global limits created with the
    # pool (limits.py). BLS blocks robots making several requests per second; the bounds match
    # the function's own settings (QUEST_BLS_MAX_CONCURRENT_REQUESTS / _REQUESTS_PER_SECOND).
    bls_max_concurrent_requests: int = Field(BLS_MAX_CONCURRENT_REQUESTS_DEFAULT, ge=1, le=64)
    bls_requests_per_second: float = Field(BLS_REQUESTS_PER_SECOND_DEFAULT, gt=0, le=1000)

    @field_validator("bls_surveys", mode="before")
    @classmethod
    def _surveys(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list):
            surveys = [str(s).strip().lower() for s in value if str(s).strip()]
            bad = [s for s in surveys if not s.isalnum()]
            if bad or not surveys:
                raise ValueError(f"blsSurveys needs survey names of letters and digits, got {value!r}")
            return surveys
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"CloudWatch accepts one of {sorted(LOG_RETENTION_DAYS)}, got {value}")
        return value

    @field_validator("schedule_expression", "poll_schedule_expression")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if not (value.startswith(("cron(", "rate(")) and value.endswith(")")):
            raise ValueError(f"an EventBridge schedule is cron(...) or rate(...), got {value!r}")
        return value

    @field_validator("prefect_api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        # The function sends its Prefect API key to this URL: https only (loopback http for tests).
        problem = api_url_problem(value) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StackConfig:
        if self.kms_key_arn and self.encryption != "sse-kms":
            raise ValueError("kmsKeyArn is set but encryption is not sse-kms")
        if self.batch_size > 10 and self.batching_window_seconds < 1:
            raise ValueError("SQS batches over 10 need batchingWindowSeconds >= 1")
        if self.queue_visibility_timeout_seconds > SQS_MAX_VISIBILITY_SECONDS:
            raise ValueError("functionTimeoutSeconds and batchingWindowSeconds exceed SQS's visibility limit")
        return self

    @property
    def queue_visibility_timeout_seconds(self) -> int:
        return visibility_timeout(self.function_timeout_seconds, self.batching_window_seconds)

    @property
    def uses_work_pool(self) -> bool:
        return bool(self.prefect_api_url)

    @property
    def function_reserved_concurrency(self) -> int:
        """Runs + reports batches + the poll: every invocation the work-pool function serves."""
        return reserved_concurrency(self.max_concurrent_runs)


def visibility_timeout(function_timeout: int, batching_window: int = 0) -> int:
    """The notification queue's visibility timeout for a consumer with this timeout."""
    return VISIBILITY_TIMEOUT_FACTOR * function_timeout + batching_window


def reserved_concurrency(max_concurrent_runs: int) -> int:
    """The function's reserved concurrency for this many concurrent flow runs."""
    return max_concurrent_runs + REPORTS_MAX_CONCURRENCY + POLL_CONCURRENCY


def parse(raw: dict[str, str | None]) -> StackConfig:
    """A StackConfig from raw config strings keyed by camelCase name; unset keys keep their defaults."""
    values = {key: value for key, value in raw.items() if value is not None}
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
        )
        raise StackConfigError(f"invalid stack configuration: {problems}") from exc


def field_keys() -> list[str]:
    """The config keys this project reads (besides the secret `prefectApiKey`)."""
    return [field.alias or name for name, field in StackConfig.model_fields.items()]


@dataclass(frozen=True)
class Stack:
    """The stack being deployed: names, region, settings, and the Prefect API key as a secret."""

    project: str
    stack: str
    region: str
    settings: StackConfig
    prefect_api_key: pulumi.Output[str] | None

    @property
    def name_prefix(self) -> str:
        return f"{self.project}-{self.stack}"


PREFECT_API_KEY = "prefectApiKey"


def configured_keys(project: str) -> list[str]:
    """The project's keys set in this stack (so a typo'd key fails instead of being ignored)."""
    from pulumi.runtime import config as runtime_config

    names = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    return [name.split(":", 1)[1] for name in names if name.startswith(f"{project}:")]


def load() -> Stack:
    """Read and validate this stack's configuration (the only place the program reads config)."""
    project, stack = pulumi.get_project(), pulumi.get_stack()
    cfg = pulumi.Config()
    unknown = sorted(set(configured_keys(project)) - {*field_keys(), PREFECT_API_KEY})
    if unknown:
        raise StackConfigError(f"unknown config keys {unknown}; known: {sorted(field_keys())}")
    settings = parse({key: cfg.get(key) for key in field_keys()})
    region = pulumi.Config("aws").get("region")
    if not region:
        raise StackConfigError("aws:region is not set: `pulumi config set aws:region us-east-1`")
    api_key = None
    if settings.uses_work_pool:
        full_key = f"{project}:{PREFECT_API_KEY}"
        if cfg.get(PREFECT_API_KEY) is not None and not is_config_secret(full_key):
            raise StackConfigError(
                f"{PREFECT_API_KEY} is stored in plain text: remove it and set it again with "
                f"`pulumi config set --secret {PREFECT_API_KEY} <key>`"
            )
        api_key = cfg.require_secret(PREFECT_API_KEY)
    return Stack(project=project, stack=stack, region=region, settings=settings, prefect_api_key=api_key)
