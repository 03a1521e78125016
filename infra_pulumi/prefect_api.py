"""The few Prefect REST calls the dynamic providers make (`work_pool.py`, `automation.py`, `limits.py`).

One client for both: the same refusal to send the API key anywhere but `https://` (or loopback
`http://`), the same bearer header, the same error text (method, URL, status, the API's detail).
It holds the key only for the duration of one provider call; providers are stateless and receive
the key as a secret resource input (see `work_pool.py` for why).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from flows.run_env import api_url_problem

if TYPE_CHECKING:  # annotations only; httpx is imported where used
    import httpx
    from pulumi.dynamic import CheckFailure

HTTP_TIMEOUT_SECONDS = 30.0
OK = (200, 201, 204)
ATTEMPTS = 4
# Answers that mean "not done, ask again": Cloud's rate limit, a self-hosted server whose database
# was busy (Prefect answers 503), a proxy in between. A POST is retried only on the two that say
# the request was not processed, so a create is never made twice.
TRANSIENT = frozenset({429, 502, 503, 504})
TRANSIENT_FOR_POST = frozenset({429, 503})
RETRY_BASE_SECONDS = 0.5  # doubling per attempt; a Retry-After longer than that is honoured
MAX_RETRY_SECONDS = 10.0


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
        """One call; a transient answer is asked again (up to `ATTEMPTS` times, waiting as the
        upstream client does: `flows.io.http.RetryPolicy`, honouring Retry-After), any other
        refusal raises at once with the API's detail."""
        import httpx

        from flows.io.http import RetryPolicy, parse_retry_after

        policy = RetryPolicy(ATTEMPTS - 1, RETRY_BASE_SECONDS, MAX_RETRY_SECONDS, jitter=0.0)
        retry_on = TRANSIENT_FOR_POST if method.upper() == "POST" else TRANSIENT
        for attempt in range(1, ATTEMPTS + 1):
            response = httpx.request(
                method, url, json=body, headers=self.headers, timeout=HTTP_TIMEOUT_SECONDS
            )
            if response.status_code in ok:
                return response
            if response.status_code not in retry_on or attempt == ATTEMPTS:
                break
            time.sleep(policy.delay(attempt, parse_retry_after(response.headers.get("retry-after"))))
        detail = response.text[:500]
        tries = f" (after {attempt} attempts)" if attempt > 1 else ""
        raise self.error(f"{method} {url} answered {response.status_code}{tries}: {detail}")


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
