"""Run flow bodies orchestrated by Prefect, or as plain Python when no Prefect API exists.

Inside a flow run, tasks and subflows go through Prefect (retries, the run logger, artifacts: what
the UI shows). With no Prefect API at all (the Lambda on a stack without Prefect: prefect-client
carries no local server, and every task or flow call would fail for want of PREFECT_API_URL), the
same bodies call the plain functions behind the decorators and log through `logging`.
"""

from __future__ import annotations

import logging
from typing import Any


def in_flow_run() -> bool:
    from prefect.context import FlowRunContext

    return FlowRunContext.get() is not None


def call(prefect_callable: Any, *args: Any, **kwargs: Any) -> Any:
    """A task or subflow through Prefect inside a flow run; its plain function outside one."""
    if in_flow_run():
        return prefect_callable(*args, **kwargs)
    return prefect_callable.fn(*args, **kwargs)


def run_logger(name: str) -> Any:
    """Prefect's run logger inside a run (it reaches the UI), else the module's logger."""
    if in_flow_run():
        from prefect import get_run_logger

        return get_run_logger()
    return logging.getLogger(name)


def markdown_artifact(markdown: str, key: str, description: str) -> None:
    """Publish a markdown artifact when there is a run to attach it to."""
    if in_flow_run():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown=markdown, key=key, description=description)


def table_artifact(table: list[dict[str, Any]], key: str, description: str) -> None:
    if in_flow_run():
        from prefect.artifacts import create_table_artifact

        create_table_artifact(table=table, key=key, description=description)


def prefect_api_available() -> bool:
    """True when flows can report to a Prefect API: PREFECT_API_URL, or a local ephemeral server."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return True
    try:
        import prefect.server.api.server  # noqa: F401  (absent from prefect-client)
    except ImportError:
        return False
    return True


def run_flow(flow_obj: Any, **parameters: Any) -> Any:
    """A flow run when a Prefect API exists; otherwise the flow's body as plain Python (with a warning)."""
    if prefect_api_available():
        return flow_obj(**parameters)
    logging.getLogger(__name__).warning(
        "no Prefect API configured (PREFECT_API_URL unset): running %s without orchestration", flow_obj.name
    )
    return flow_obj.fn(**parameters)
