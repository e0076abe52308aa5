"""The server's configuration: one typed object, built once.

Sources, highest precedence first: command-line flags, ``EMBEDSERVE_*``
environment variables, a TOML file (``--config``), the defaults below. Nothing
else in the code reads the environment.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from embedserve.limits import LIMIT_NAMES, Limits

ENV_PREFIX = "EMBEDSERVE_"
DEVICES = ("auto", "cpu", "cuda")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def default_models_dir() -> Path:
    """The bundles shipped in the source tree (``models/`` beside the package)."""
    return Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    models: tuple[Path, ...] = ()  # bundle dirs or dirs of bundles; empty = default_models_dir()
    default_model: str = ""  # empty = first bundle loaded
    data: Path = Path("./embedserve-data")
    device: str = "auto"  # auto | cpu | cuda: ONNX Runtime provider and FAISS GPU
    max_batch_size: int = 32
    max_batch_tokens: int = 256  # text towers: rows x longest sequence per batch (CPU; raise it on a GPU)
    max_delay_ms: float = 0.0  # 0: batch whatever queued while the previous batch ran (no added latency)
    max_message_bytes: int = 64 << 20
    max_image_bytes: int = 20 << 20
    max_image_pixels: int = 40_000_000
    max_text_bytes: int = 64 << 10  # UTF-8 bytes of one text (tokens past a model's max_length are cut)
    # Threads: see embedserve.server.pools for what each pool runs and why these sizes.
    decode_threads: int = 0  # image decode / tokenization pool; 0 = os.cpu_count()
    # pool that calls ONNX Runtime (batches per tower at once: models.tower.concurrent_batches)
    infer_threads: int = 2
    search_threads: int = 0  # FAISS searches and reads; 0 = os.cpu_count()
    write_threads: int = 0  # upserts, deletes, snapshots, create/delete collection; 0 = max(4, cpus)
    # ONNX Runtime threads per call; 0 = its default (every core); 1 = a batch per core at once
    intra_op_threads: int = 0
    faiss_threads: int = 1  # OpenMP threads per FAISS call; requests already run in parallel (search_threads)
    snapshot_wal_bytes: int = 64 << 20
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_tokens: tuple[str, ...] = field(default=(), repr=False)
    auth_tokens_file: Path | None = None
    metrics_port: int = 0  # Prometheus /metrics on this HTTP port; 0 = off
    metrics_host: str = "127.0.0.1"
    grace_s: float = 10.0  # SIGTERM: time in-flight requests get to finish
    log_level: str = "INFO"
    event_loop: str = (
        "auto"  # auto | uvloop | asyncio: auto = uvloop where installed (embedserve.server.loop)
    )
    insecure: bool = False  # allow a non-loopback address without bearer tokens (an open API)
    # collections in Milvus (embedserve.store.milvus): new collections are created there;
    # "./file.db" runs Milvus Lite embedded, "http://host:19530" a Milvus standalone or cluster
    milvus_uri: str = ""
    milvus_token: str = field(default="", repr=False)  # EMBEDSERVE_MILVUS_TOKEN or the config file
    snapshot_replay_s: float = 1.0  # snapshot once replaying the log since the last one would take this long
    label_threads: int = (
        1  # labelling jobs (k-NN graphs, spreading) run at once, each on faiss OpenMP threads = cpus
    )
    label_cache_bytes: int = (
        1 << 30
    )  # k-NN graphs kept for labelling sessions (embedserve.labelling.labeller)
    # per-request limits (embedserve.limits); each is a setting of its own name (--max-queries, ...)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.event_loop not in EVENT_LOOPS:
            raise ValueError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, not {self.event_loop!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        for name in (
            "max_batch_size",
            "max_batch_tokens",
            "max_message_bytes",
            "max_image_bytes",
            "max_image_pixels",
            "max_text_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.max_delay_ms < 0:
            raise ValueError("max_delay_ms must be >= 0")
        threads = ("decode_threads", "infer_threads", "search_threads", "write_threads", "intra_op_threads")
        for name in threads:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.infer_threads < 1 or self.label_threads < 1:
            raise ValueError("infer_threads and label_threads must be >= 1")
        if self.label_cache_bytes < 0:
            raise ValueError("label_cache_bytes must be >= 0")
        if not 0 <= self.port < 65536 or not 0 <= self.metrics_port < 65536:
            raise ValueError("ports must be in 0..65535")
        if not self.snapshot_replay_s > 0:
            raise ValueError("snapshot_replay_s must be positive")

    def model_dirs(self) -> tuple[Path, ...]:
        return self.models or (default_models_dir(),)

    def tokens(self) -> frozenset[str]:
        """Bearer tokens accepted: those given directly plus one per line of the tokens file."""
        tokens = set(self.auth_tokens)
        if self.auth_tokens_file is not None:
            lines = [line.strip() for line in self.auth_tokens_file.read_text().splitlines()]
            from_file = {line for line in lines if line and not line.startswith("#")}
            if not from_file:
                # fail closed: a tokens file that yields no token must not mean "no auth"
                raise ValueError(f"auth_tokens_file {self.auth_tokens_file} holds no token")
            tokens |= from_file
        return frozenset(tokens)


def setting_names() -> list[str]:
    """Every setting: the ServerConfig fields, with ``limits`` spread into its own fields."""
    return [f.name for f in fields(ServerConfig) if f.name != "limits"] + [f.name for f in fields(Limits)]


_TYPES = {f.name: f.type for f in fields(ServerConfig)} | {f.name: f.type for f in fields(Limits)}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def _coerce(name: str, raw: Any) -> Any:
    """Convert a value from the environment, a TOML file or a flag to the field's type."""
    kind = _TYPES[name]
    if raw is None:
        return None
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text not in _TRUE + _FALSE:
            raise ValueError(f"{name} must be true or false, not {raw!r}")
        return text in _TRUE
    if kind in ("Path", "Path | None"):
        return Path(raw)
    if kind == "tuple[Path, ...]":
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return tuple(Path(p) for p in items if str(p).strip())
    if kind == "tuple[str, ...]":
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return tuple(str(t).strip() for t in items if str(t).strip())
    return str(raw)


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for name in setting_names():
        key = ENV_PREFIX + name.upper()
        if key in environ and environ[key] != "":
            values[name] = _coerce(name, environ[key])
    return values


def _from_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        doc = tomllib.load(fh)
    section = doc.get("server", doc)
    known = set(setting_names())
    unknown = sorted(set(section) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    return {k: _coerce(k, v) for k, v in section.items()}


def load_config(
    flags: Mapping[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Merge defaults < TOML file < environment < flags (``None`` flags are unset)."""
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(environ[ENV_PREFIX + "CONFIG"])
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_from_toml(config_file))
    values.update(_from_env(environ))
    for name, raw in (flags or {}).items():
        if raw is not None:
            values[name] = _coerce(name, raw)
    limits = Limits(**{name: values.pop(name) for name in list(values) if name in LIMIT_NAMES})
    return dataclasses.replace(ServerConfig(), limits=limits, **values)
