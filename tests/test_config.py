"""One typed config from flags > EMBEDSERVE_* env > TOML file > defaults."""

import asyncio
from pathlib import Path

import pytest

from embedserve.config import ServerConfig, load_config


def test_precedence(tmp_path):
    toml = tmp_path / "embedserve.toml"
    toml.write_text(
        '[server]\nport = 6000\nmax_batch_size = 8\ndata = "/from/file"\nmodels = ["/m1", "/m2"]\n'
    )
    env = {"EMBEDSERVE_PORT": "7000", "EMBEDSERVE_DEVICE": "cpu", "EMBEDSERVE_AUTH_TOKENS": "a,b"}
    cfg = load_config({"port": "8000", "host": None}, config_file=toml, environ=env)
    assert cfg.port == 8000  # flag beats env beats file
    assert cfg.device == "cpu"  # env
    assert cfg.max_batch_size == 8 and cfg.data == Path("/from/file")  # file
    assert cfg.models == (Path("/m1"), Path("/m2"))
    assert cfg.tokens() == frozenset({"a", "b"})
    assert cfg.host == ServerConfig().host  # default


def test_config_file_from_env_and_errors(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("max_delay_ms = 5.5\n")
    assert load_config(environ={"EMBEDSERVE_CONFIG": str(toml)}).max_delay_ms == 5.5
    toml.write_text("no_such_setting = 1\n")
    with pytest.raises(ValueError, match="no_such_setting"):
        load_config(config_file=toml, environ={})
    with pytest.raises(ValueError, match="device"):
        load_config({"device": "tpu"}, environ={})
    with pytest.raises(ValueError, match="together"):
        load_config({"tls_cert": "/c.pem"}, environ={})


def test_empty_tokens_file_fails_closed(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# nobody yet\n   \n")
    cfg = load_config({"auth_tokens_file": str(tokens)}, environ={})
    with pytest.raises(ValueError, match="no token"):
        cfg.tokens()
    tokens.write_text("  # comment\n  tok-1  \n")
    assert cfg.tokens() == frozenset({"tok-1"})


def test_insecure_is_a_boolean_setting(tmp_path):
    assert load_config(environ={"EMBEDSERVE_INSECURE": "1"}).insecure is True
    assert load_config({"insecure": "true"}, environ={}).insecure is True
    assert load_config(environ={}).insecure is False
    toml = tmp_path / "c.toml"
    toml.write_text("insecure = true\nmax_queries = 7\n")
    cfg = load_config(config_file=toml, environ={})
    assert cfg.insecure is True and cfg.limits.max_queries == 7
    with pytest.raises(ValueError, match="insecure"):
        load_config(environ={"EMBEDSERVE_INSECURE": "maybe"})


def test_event_loop_setting(monkeypatch):
    import importlib.util

    from embedserve.server.loop import loop_name, run

    with pytest.raises(ValueError, match="event_loop must be one of"):
        ServerConfig(event_loop="trio")
    assert loop_name("asyncio") == "asyncio"
    installed = importlib.util.find_spec("uvloop") is not None
    assert loop_name("auto") == ("uvloop" if installed else "asyncio")

    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert run(kind(), "asyncio") == "asyncio"
    if installed:
        assert run(kind(), "auto") == "uvloop"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as if it were not installed
    assert loop_name("auto") == "asyncio"
    with pytest.raises(ValueError, match="uvloop is not installed"):
        loop_name("uvloop")
