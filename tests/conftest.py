"""Shared fixtures: real servers on ephemeral ports, talked to over real gRPC channels."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from embedserve.client import Client
from embedserve.config import ServerConfig
from tests.tiny_models import make_clip_bundle, make_image_bundle, make_text_bundle

ROOT = Path(__file__).resolve().parent.parent


class ServerThread:
    """An in-process EmbedServer on its own event loop in a background thread."""

    def __init__(self, config: ServerConfig) -> None:
        from embedserve.server.app import EmbedServer

        self.config = config
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def build():
            server = EmbedServer(config)
            await server.start()
            return server

        self.server = asyncio.run_coroutine_threadsafe(build(), self.loop).result(timeout=120)
        self.target = f"127.0.0.1:{self.server.port}"

    def client(self, **kw) -> Client:
        return Client(self.target, **kw)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace=1.0), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> Path:
    """A models directory with tiny image, text and image+text bundles."""
    root = tmp_path_factory.mktemp("models")
    make_image_bundle(root, "tiny-image", channels=1, size=(8, 8), dim=16)
    make_text_bundle(root, "tiny-text", dim=16)
    make_clip_bundle(root, "tiny-clip", dim=16)
    return root


def make_config(bundles: Path, data: Path, **overrides) -> ServerConfig:
    base = ServerConfig(
        host="127.0.0.1",
        port=0,
        models=(bundles,),
        default_model="tiny-image",
        data=data,
        device="cpu",
        max_delay_ms=2.0,
        grace_s=1.0,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    """One shared server per test module (tests use their own collection names)."""
    srv = ServerThread(make_config(bundles, tmp_path_factory.mktemp("data")))
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


def start_subprocess_server(args: list[str], env: dict | None = None, timeout: float = 60.0):
    """Run ``python -m embedserve serve ARGS --port 0``; return (process, target) once it listens and is ready."""
    cmd = [sys.executable, "-m", "embedserve", "serve", "--host", "127.0.0.1", "--port", "0", *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    target = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        m = re.search(r"listening on ([\d.]+:\d+)", line)
        if m:
            target = m.group(1)
        if "ready:" in line and target:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, target
    proc.kill()
    raise RuntimeError("server did not start:\n" + "".join(lines))


def encode_image(pixels, fmt: str = "PNG") -> bytes:
    """uint8 array [H, W] (grayscale) or [H, W, 3] -> encoded image bytes."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def random_images(n: int, seed: int = 0, size: int = 8) -> list[bytes]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [encode_image(rng.integers(0, 256, (size, size))) for _ in range(n)]


def status_of(call) -> tuple:
    """Run ``call`` expecting a grpc.RpcError; return (code, details)."""
    import grpc

    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details()
    raise AssertionError("expected an RPC error")
