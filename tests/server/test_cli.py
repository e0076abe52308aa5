"""The embedserve CLI against a real server."""

import json

import numpy as np

from embedserve.cli import main
from tests.conftest import encode_image


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_session(server, capsys, tmp_path):
    t = ["--target", server.target]
    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, (2, 8, 8))
    for label, proto in zip(("cats", "dogs"), protos):
        (tmp_path / "train" / label).mkdir(parents=True)
        for j in range(4):
            noisy = np.clip(proto + rng.integers(-8, 9, proto.shape), 0, 255)
            (tmp_path / "train" / label / f"{j}.png").write_bytes(encode_image(noisy))
    query = tmp_path / "q.png"
    query.write_bytes(encode_image(protos[1]))

    code, out, _ = run(capsys, "collections", "create", "cli-pets", *t)
    assert code == 0 and json.loads(out)["name"] == "cli-pets"
    code, out, _ = run(capsys, "index", "cli-pets", str(tmp_path / "train"), "--label-from-dir", *t)
    assert code == 0 and json.loads(out)["upserted"] == "8"
    code, out, _ = run(capsys, "collections", "describe", "cli-pets", *t)
    assert json.loads(out)["count"] == "8"
    code, out, _ = run(capsys, "search", "cli-pets", str(query), "-k", "3", *t)
    hits = json.loads(out)["hits"]
    assert len(hits) == 3 and all(h["label"] == "dogs" for h in hits) and hits[0]["id"].startswith("dogs/")
    code, out, _ = run(capsys, "classify", "--collection", "cli-pets", str(query), *t)
    assert json.loads(out)["label"] == "dogs"
    code, out, _ = run(capsys, "classify", "--support", str(tmp_path / "train"), str(query), *t)
    assert json.loads(out)["label"] == "dogs"
    code, out, _ = run(capsys, "embed", str(query), *t)
    assert len(json.loads(out)["embedding"]) == 16
    code, out, _ = run(capsys, "collections", "list", *t)
    assert "cli-pets" in out
    code, out, _ = run(capsys, "health", *t)
    assert code == 0 and out.strip() == "SERVING"


def test_cli_reports_errors(server, capsys, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code, _, err = run(capsys, "embed", str(bad), "--target", server.target)
    assert code == 1 and "INVALID_ARGUMENT" in err and "item 0" in err
    code, _, err = run(capsys, "collections", "describe", "nope", "--target", server.target)
    assert code == 1 and "NOT_FOUND" in err
