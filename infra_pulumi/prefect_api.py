"""The few Prefect REST calls the dynamic providers make (`work_pool.py`, `automation.py`, `limits.py`).

One client for both: the same refusal to send the API key anywhere but `https://` (or loopback
`http://`), the same bearer header, the same error text (method, URL, status, the API's detail).
It holds the key only for the duration of one provider call; providers are stateless and receive
the key as a secret resource input (see `work_pool.py` for why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from flows.run_env import api_url_problem

if TYPE_CHECKING:  # annotations only; httpx is imported where used
    import httpx
    from pulumi.dynamic import CheckFailure

HTTP_TIMEOUT_SECONDS = 30.0
OK = (200, 201, 204)


class PrefectApiError(Exception):
    """Prefect's API refused a call; the message has the status and the API's detail."""


class PrefectApi:
    """Prefect's REST API (Cloud or self-hosted), bearer-authenticated when keyed.

    Subclasses name their own error type (`error`), so a caller catching a work-pool error does
    not also catch an automation's.
    """

    error: ClassVar[type[PrefectApiError]] = PrefectApiError

    def __init__(self, api_url: str, api_key: str | None):
        problem = api_url_problem(api_url)
        if api_key and problem:  # also for state written before `check` refused such URLs
            raise self.error(f"{problem}; refusing to send the Prefect API key there")
        self.api_url = api_url
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def url(self, path: str) -> str:
        """`{api_url}/{path}` (path like `work_pools/` or `automations/<id>`)."""
        return f"{self.api_url.rstrip('/')}/{path.lstrip('/')}"

    def call(
        self, method: str, url: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = OK
    ) -> httpx.Response:
        import httpx

        response = httpx.request(method, url, json=body, headers=self.headers, timeout=HTTP_TIMEOUT_SECONDS)
        if response.status_code not in ok:
            detail = response.text[:500]
            raise self.error(f"{method} {url} answered {response.status_code}: {detail}")
        return response


def target_failures(news: dict[str, Any], what: str) -> list[CheckFailure]:
    """What every provider's `check` refuses first: no name, or an API URL the key must not go to."""
    from pulumi.dynamic import CheckFailure

    failures = []
    if not news.get("name"):
        failures.append(CheckFailure("name", f"{what} needs a name"))
    problem = api_url_problem(news.get("api_url"))
    if problem:
        failures.append(CheckFailure("api_url", problem))
    return failures
