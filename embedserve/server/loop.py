"""Which asyncio event loop the server runs on.

The server is one event loop (grpc.aio) handing work to thread pools
(``embedserve.server.pools``), so the loop's own cost per callback, timer and
thread hand-off is paid several times per request. uvloop (libuv) does that
work in C: on the 2-core bench machine it took a bare grpc.aio echo server from
533 to 500 µs of CPU per request and an executor round trip from about 200 to
about 117 µs, and the server's ListModels from 770 to 610 µs (``bench/request_overhead.py``).
grpc.aio runs on any asyncio loop, so ``auto`` takes uvloop where it is
installed (it is a dependency on Linux and macOS) and the standard loop elsewhere.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_name(setting: str) -> str:
    """The loop a setting selects: "uvloop" or "asyncio". ``uvloop`` without it installed is a ValueError."""
    installed = importlib.util.find_spec("uvloop") is not None
    if setting == "uvloop" and not installed:
        raise ValueError("event_loop = uvloop, but uvloop is not installed (pip install uvloop)")
    return "uvloop" if setting in ("auto", "uvloop") and installed else "asyncio"


def run(main: Coroutine[Any, Any, T], setting: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``setting`` selects."""
    if loop_name(setting) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
