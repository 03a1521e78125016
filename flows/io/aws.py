"""The one place boto3 clients are made.

Every client honours boto3's own settings (AWS_ENDPOINT_URL, AWS_REGION, the credentials chain); no
setting of ours duplicates them. Each call makes a fresh Session: boto3's default session is shared
module state and not thread-safe, while the flows make clients from task threads.
"""

from __future__ import annotations

from typing import Any


def aws_client(
    service: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    session: Any = None,
    **config: Any,
) -> Any:
    """A boto3 client for `service`; `config` goes to botocore's `Config` (timeouts, retries, pools)."""
    import boto3
    from botocore.config import Config

    return (session or boto3.session.Session()).client(
        service,
        region_name=region or None,
        endpoint_url=endpoint_url or None,
        config=Config(**config) if config else None,
    )
