"""`embedserve serve` in a subprocess, as the restart and soak benches run it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One data directory, served by a new process at each ``start`` (default models, loopback)."""

    def __init__(self, data: Path, *extra: str) -> None:
        """``extra``: more ``serve`` flags."""
        self.data, self.port, self.extra = data, free_port(), extra
        self.target = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log: list[str] = []

    def start(self) -> float:
        """Start the server; seconds from exec to health SERVING (imports and model loading included)."""
        cmd = [
            sys.executable,
            "-m",
            "embedserve",
            "serve",
            "--port",
            str(self.port),
            "--data",
            str(self.data),
            *self.extra,
        ]
        started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.log = []
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        # reconnect at once: with gRPC's default backoff (1 s, growing) a probe that found the port
        # still closed would wait that long before trying again, and the wait would be measured
        # as start-up time (it was: up to 1.6 s of a 2.7 s "restart")
        fast_retry = [
            ("grpc.initial_reconnect_backoff_ms", 10),
            ("grpc.min_reconnect_backoff_ms", 10),
            ("grpc.max_reconnect_backoff_ms", 20),
        ]
        stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(self.target, options=fast_retry))
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return time.perf_counter() - started
            except grpc.RpcError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.log[-20:]))
            time.sleep(0.005)

    def _drain(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line)

    def rss_mb(self) -> float | None:
        """The server's resident memory, MB (None if it is not running)."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():  # type: ignore[union-attr]
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except (OSError, AttributeError):
            return None
        return None

    def peak_mb(self) -> float | None:
        """The server's peak resident memory (VmHWM) since start or ``reset_peak``, MB."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():  # type: ignore[union-attr]
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, AttributeError):
            return None
        return None

    def reset_peak(self) -> bool:
        """Start the peak (VmHWM) afresh from the current RSS; False where the kernel refuses."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")  # type: ignore[union-attr]
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM: drain and flush."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no drain, no flush, as a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
