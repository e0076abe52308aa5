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


def test_cli_labelling_session(server, capsys, tmp_path):
    import csv

    t = ["--target", server.target]
    rng = np.random.default_rng(1)
    protos = rng.integers(0, 256, (3, 8, 8))
    truth = {}
    for c, proto in enumerate(protos):
        folder = tmp_path / "imgs" / f"kind{c}"
        folder.mkdir(parents=True)
        for j in range(10):
            noisy = np.clip(proto + rng.integers(-6, 7, proto.shape), 0, 255)
            (folder / f"{j}.png").write_bytes(encode_image(noisy))
            truth[f"kind{c}/{j}.png"] = f"kind{c}"
    assert run(capsys, "collections", "create", "cli-label", *t)[0] == 0
    assert run(capsys, "index", "cli-label", str(tmp_path / "imgs"), *t)[0] == 0  # no labels

    code, _, err = run(
        capsys, "label", "suggest", "cli-label", "-n", "3", "-o", str(tmp_path / "next.csv"), *t
    )
    assert code == 0 and json.loads(err)["strategy"] == "typical"
    with open(tmp_path / "next.csv") as f:
        picked = [row["id"] for row in csv.DictReader(f)]
    assert len(picked) == 3 and {truth[i] for i in picked} == {"kind0", "kind1", "kind2"}
    (tmp_path / "answers.csv").write_text("id,label\n" + "".join(f"{i},{truth[i]}\n" for i in picked))
    code, out, _ = run(capsys, "label", "set", "cli-label", str(tmp_path / "answers.csv"), *t)
    assert code == 0 and json.loads(out) == {"labelled": 3, "cleared": 0, "unchanged": 0}

    code, out, err = run(capsys, "label", "predict", "cli-label", "--progress", "--write-back", *t)
    assert code == 0 and "spreading [" in err and "27/27" in err
    rows = list(csv.DictReader(out.splitlines()))
    assert len(rows) == 27 and all(r["label"] == truth[r["id"]] for r in rows)
    assert all(0 < float(r["confidence"]) <= 1 for r in rows)

    (tmp_path / "all.csv").write_text("".join(f"{i},{label}\n" for i, label in truth.items()))  # no header
    assert run(capsys, "label", "set", "cli-label", str(tmp_path / "all.csv"), *t)[0] == 0
    (tmp_path / "wrong.csv").write_text(f"id,label\n{picked[0]},{truth[picked[1]]}\n")
    run(capsys, "label", "set", "cli-label", str(tmp_path / "wrong.csv"), *t)
    code, out, _ = run(capsys, "label", "audit", "cli-label", "-n", "1", *t)
    finding = next(csv.DictReader(out.splitlines()))
    assert code == 0 and finding["id"] == picked[0] and finding["label"] == truth[picked[1]]
    code, _, err = run(
        capsys,
        "label",
        "set",
        "cli-label",
        str(tmp_path / "answers.csv"),
        "--target",
        "127.0.0.1:1",
        "--timeout",
        "2",
    )
    assert code == 1 and "UNAVAILABLE" in err
