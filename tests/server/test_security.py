"""Bearer tokens and TLS on a real server."""

import subprocess

import grpc
import pytest

from embedserve.client import Client
from tests.conftest import ServerThread, make_config, status_of


@pytest.fixture(scope="module")
def token_server(bundles, tmp_path_factory):
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text("# one token per line\nsecret-one\nsecret-two\n")
    srv = ServerThread(make_config(bundles, tmp_path_factory.mktemp("data"), auth_tokens_file=tokens))
    yield srv
    srv.stop()


def test_missing_and_wrong_tokens_are_unauthenticated(token_server):
    with token_server.client() as c:
        got, details = status_of(c.list_models)
        assert got == grpc.StatusCode.UNAUTHENTICATED and "missing" in details
        got, _ = status_of(lambda: c.upsert_stream("x", [[]]))  # streaming RPCs too
        assert got == grpc.StatusCode.UNAUTHENTICATED
        assert c.health() == "SERVING"  # health stays open for probes
    with token_server.client(token="wrong") as c:
        got, details = status_of(c.list_models)
        assert got == grpc.StatusCode.UNAUTHENTICATED and "invalid" in details
    sample = token_server.server.metrics.registry.get_sample_value
    assert sample("embedserve_requests_total", {"rpc": "ListModels", "code": "UNAUTHENTICATED"}) == 2


def test_made_up_method_names_do_not_grow_the_metrics(token_server):
    """Unauthenticated calls to invented methods count under one label, not one series per name."""
    registry = token_server.server.metrics.registry
    with grpc.insecure_channel(f"127.0.0.1:{token_server.server.port}") as channel:
        for i in range(40):
            call = channel.unary_unary(f"/embedserve.v1.EmbedService/Invented{i}")
            got, _ = status_of(lambda call=call: call(b"", timeout=5))
            assert got == grpc.StatusCode.UNAUTHENTICATED
    names = {s.labels.get("rpc") for metric in registry.collect() for s in metric.samples}
    assert not any(str(n).startswith("Invented") for n in names)
    assert (
        registry.get_sample_value("embedserve_requests_total", {"rpc": "unknown", "code": "UNAUTHENTICATED"})
        == 40
    )


def test_valid_tokens_work(token_server):
    for token in ("secret-one", "secret-two"):
        with token_server.client(token=token) as c:
            assert len(c.list_models().models) == 3


def _self_signed(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def test_tls(bundles, tmp_path):
    key, cert = _self_signed(tmp_path)
    srv = ServerThread(make_config(bundles, tmp_path / "data", tls_cert=cert, tls_key=key))
    try:
        with Client(f"localhost:{srv.server.port}", tls_ca=cert) as c:
            assert c.embed(["the cat"], model="tiny-text").shape == (1, 16)
            assert len(c.list_models().models) == 3
        with Client(f"localhost:{srv.server.port}", timeout=3) as plain:
            got, _ = status_of(plain.list_models)
            assert got == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("example.com", False)],
)  # fmt: skip
def test_loopback_addresses(host, loopback):
    from embedserve.server.app import is_loopback

    assert is_loopback(host) is loopback


def test_an_open_api_on_a_public_address_needs_insecure(bundles, tmp_path):
    """0.0.0.0 without tokens refuses to start; tokens or an explicit --insecure let it."""
    with pytest.raises(RuntimeError, match="refusing to listen on 0.0.0.0.*--insecure"):
        ServerThread(make_config(bundles, tmp_path / "a", host="0.0.0.0"))
    for overrides in ({"insecure": True}, {"auth_tokens": ("tok",)}):
        srv = ServerThread(make_config(bundles, tmp_path / "b", host="0.0.0.0", **overrides))
        try:
            with Client(f"127.0.0.1:{srv.server.port}", token="tok") as c:
                assert c.health() == "SERVING" and len(c.list_models().models) == 3
        finally:
            srv.stop()


def test_cli_refuses_an_open_public_address(tmp_path):
    import sys

    from tests.conftest import ROOT, start_subprocess_server

    cmd = [
        sys.executable,
        "-m",
        "embedserve",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--data",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "refusing to listen on 0.0.0.0" in done.stderr, done.stderr[-2000:]
    proc, _ = start_subprocess_server(["--host", "0.0.0.0", "--insecure", "--data", str(tmp_path)])
    proc.kill()
    proc.wait()
