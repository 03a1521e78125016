"""What the function reads from Lambda's context object, for tests that run a flow run in-process
the way the function does (`run_flow_run(..., context=FakeContext(seconds))`)."""

from __future__ import annotations

import time
import uuid


class FakeContext:
    """A Lambda context whose deadline is `seconds` from now."""

    def __init__(self, seconds: float) -> None:
        self.aws_request_id = f"req-{uuid.uuid4().hex[:8]}"
        self.log_group_name = "/aws/lambda/quest-test-runner"
        self.log_stream_name = "2025/01/02/[$LATEST]0123abcd"
        self._deadline = time.monotonic() + seconds
        self._clock = time.monotonic

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))
