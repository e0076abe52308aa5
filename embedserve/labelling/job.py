"""Control of one long labelling job: progress reports, the caller's deadline, cancellation.

A job runs in a worker thread off the request path. It calls ``job.step(stage, done, total)``
between chunks of work (a block of neighbour queries, one spreading iteration); that call
reports progress and raises if the job must stop: DeadlineExceeded once the caller's deadline
has passed, Cancelled once ``cancel()`` was called (the client went away). So a job stops
within one chunk of either, and chunks are sized to take well under a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from embedserve.errors import Cancelled, DeadlineExceeded

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class Job:
    def __init__(self, deadline: float | None = None, on_progress: Progress | None = None) -> None:
        """``deadline``: a time.monotonic() value, or None for none."""
        self.deadline = deadline
        self._on_progress = on_progress
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled("the labelling job was cancelled")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExceeded("the deadline passed before the labelling job finished")

    def step(self, stage: str, done: int, total: int) -> None:
        """Report progress through ``stage`` (done of total units), then stop if the job must."""
        self.check()
        if self._on_progress is not None:
            self._on_progress(stage, done, total)
