"""embedserve-batch on a real local Ray (2 CPUs), writing to a real server and to real Parquet files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedserve.wire import tensor_to_array
from tests.conftest import ROOT, random_images

ray = pytest.importorskip("ray")
ray_data = pytest.importorskip("ray.data")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")

from embedserve.batch import cli as batch_cli  # noqa: E402

CLASSES = ("cat", "dog", "fish")
PER_CLASS = 12


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """cat/ dog/ fish/ with 12 PNGs each, plus a broken file, an oversized one and a non-image."""
    root = tmp_path_factory.mktemp("images")
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i, data in enumerate(random_images(PER_CLASS, seed=c)):
            (root / name / f"{i:02d}.png").write_bytes(data)
    (root / "dog" / "broken.png").write_bytes(b"this is not a png")
    (root / "fish" / "huge.png").write_bytes(random_images(1, seed=9, size=64)[0])  # over --max-image-bytes
    (root / "notes.txt").write_text("not an image: ignored")
    return root


def run_batch(*args: str) -> dict:
    """``embedserve-batch index ARGS`` in this process (Ray already up); the JSON summary."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert batch_cli.main(["index", *args, "--no-progress"]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def errors_of(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {row["id"]: row["error"] for row in csv.DictReader(f)}


def stored(client, collection: str, ids: list[str]):
    return {item.id: item for item in client.get(collection, ids, include_vector=True)}


def test_folder_to_server_matches_server_embed_and_resumes(
    ray_local, folder, bundles, server, client, tmp_path
):
    bundle = str(bundles / "tiny-image")
    errors = tmp_path / "errors.csv"
    common = [str(folder), "--model", bundle, "--to-server", server.target, "--collection", "batch-a"]
    common += ["--label-from-dir", "--errors", str(errors), "--max-image-bytes", "2000", "--batch-size", "5"]
    summary = run_batch(*common)
    n = len(CLASSES) * PER_CLASS
    assert (summary["done"], summary["failed"], summary["skipped"]) == (n, 2, 0)
    assert summary["items_per_s"] > 0
    failed = errors_of(errors)
    assert set(failed) == {"dog/broken.png", "fish/huge.png"}
    assert "cannot decode image" in failed["dog/broken.png"]
    assert "limit 2000" in failed["fish/huge.png"]
    assert client.describe_collection("batch-a").count == n

    # the vectors are the server's own for the same files, labels come from the folders
    ids = [f"{c}/{i:02d}.png" for c in CLASSES for i in (0, 5, 11)]
    items = stored(client, "batch-a", ids)
    files = [(folder / x).read_bytes() for x in ids]
    expected = client.embed(files, model="tiny-image")
    got = np.stack([tensor_to_array(items[x].vector) for x in ids])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [items[x].label for x in ids] == [x.split("/")[0] for x in ids]
    assert items[ids[0]].metadata["path"] == str(folder / ids[0])

    # a re-run skips everything stored; after losing some items it redoes exactly those
    again = run_batch(*common)
    assert (again["done"], again["failed"], again["skipped"]) == (0, 2, n)
    client.delete("batch-a", ids[:4])
    third = run_batch(*common)
    assert (third["done"], third["failed"], third["skipped"]) == (4, 2, n - 4)
    assert client.describe_collection("batch-a").count == n
    # --no-resume embeds and upserts everything again (replaces by id: still exactly the input set)
    forced = run_batch(*common, "--no-resume")
    assert (forced["done"], forced["skipped"]) == (n, 0)
    assert client.describe_collection("batch-a").count == n


def test_parquet_shards_then_collections_import(ray_local, folder, bundles, server, client, tmp_path):
    bundle = str(bundles / "tiny-image")
    shards = tmp_path / "shards"
    args = [str(folder), "--model", bundle, "--to-parquet", str(shards), "--errors", str(tmp_path / "e.csv")]
    summary = run_batch(*args, "--label-from-dir", "--max-image-bytes", "2000")
    n = len(CLASSES) * PER_CLASS
    assert (summary["done"], summary["failed"]) == (n, 2)
    files = sorted(shards.glob("part-*.parquet"))
    assert files and not list(shards.glob(".*"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.num_rows == n and set(table.column_names) == {"id", "vector", "label", "metadata"}
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 16)
    info = json.loads(pq.read_schema(files[0]).metadata[b"embedserve"])
    assert info == {"model": "tiny-image", "dim": 16, "metric": "cosine"}
    assert run_batch(*args, "--label-from-dir", "--max-image-bytes", "2000")["skipped"] == n  # resumes

    # embedserve collections import NAME DIR, as a user runs it (a separate process)
    cmd = [sys.executable, "-m", "embedserve", "collections", "import", "imported", str(shards)]
    done = subprocess.run([*cmd, "--target", server.target], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["upserted"] == str(n)
    info = client.describe_collection("imported")
    assert (info.count, info.model, info.dim, info.labelled_count) == (n, "tiny-image", 16, n)
    ids = table.column("id").to_pylist()[:5]
    items = stored(client, "imported", ids)
    rows = {r["id"]: r for r in table.slice(0, 5).to_pylist()}
    for x in ids:
        np.testing.assert_array_equal(
            tensor_to_array(items[x].vector), np.asarray(rows[x]["vector"], np.float32)
        )
        assert items[x].label == rows[x]["label"]
        assert dict(items[x].metadata) == dict(rows[x]["metadata"])


def test_manifests_csv_jsonl_parquet(ray_local, folder, bundles, server, client, tmp_path):
    images = tmp_path / "m"
    images.mkdir()
    datas = random_images(4, seed=42)
    for i, data in enumerate(datas):
        (images / f"{i}.png").write_bytes(data)
    csv_path = images / "list.csv"
    csv_path.write_text(
        "path,id,label,metadata\n"
        + "".join(f'{i}.png,00{i},{"ab"[i % 2]},"{{""k"": ""v{i}""}}"\n' for i in range(4))
        + "missing.png,0099,a,\n"
    )
    summary = run_batch(
        str(csv_path), "--model", str(bundles / "tiny-image"), "--to-server", server.target,
        "--collection", "csv", "--errors", str(tmp_path / "e1.csv"),
    )  # fmt: skip
    assert (summary["done"], summary["failed"]) == (4, 1)
    assert errors_of(tmp_path / "e1.csv") == {"0099": "file not found"}
    items = stored(client, "csv", ["000", "003"])  # ids stay text: "000", not 0
    assert items["003"].label == "b" and dict(items["003"].metadata) == {"k": "v3"}
    np.testing.assert_allclose(
        tensor_to_array(items["003"].vector), client.embed([datas[3]], model="tiny-image")[0], atol=1e-5
    )

    # texts from JSON lines, with the text bundle; an empty text is an error row, not a failed job
    jsonl = tmp_path / "texts.jsonl"
    texts = ["a red car", "two dogs", "   ", "the big house"]
    jsonl.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    summary = run_batch(
        str(jsonl), "--model", str(bundles / "tiny-text"), "--to-server", server.target,
        "--collection", "texts", "--errors", str(tmp_path / "e2.csv"),
    )  # fmt: skip
    assert (summary["done"], summary["failed"]) == (3, 1)
    assert errors_of(tmp_path / "e2.csv") == {"t2": "text is empty"}
    got = tensor_to_array(stored(client, "texts", ["t3"])["t3"].vector)
    np.testing.assert_allclose(got, client.embed(["the big house"], model="tiny-text")[0], atol=1e-5)

    # image bytes in a Parquet column
    manifest = tmp_path / "bytes.parquet"
    pq.write_table(
        pa.table({"id": ["p0", "p1"], "image": [datas[0], b"junk"], "label": ["x", None]}), manifest
    )
    summary = run_batch(
        str(manifest), "--model", str(bundles / "tiny-image"), "--to-server", server.target,
        "--collection", "bytes", "--errors", str(tmp_path / "e3.csv"),
    )  # fmt: skip
    assert (summary["done"], summary["failed"]) == (1, 1)
    assert stored(client, "bytes", ["p0"])["p0"].label == "x"


def test_bad_jobs_are_refused_before_work(ray_local, bundles, server, tmp_path, capsys):
    texts = tmp_path / "t.csv"
    texts.write_text("text\nhello\n")
    cases = [
        (
            [str(texts), "--model", str(bundles / "tiny-text"), "--to-parquet", str(tmp_path / "o")],
            "needs an 'id'",
        ),
        (
            [
                str(tmp_path / "nope"),
                "--model",
                "tiny-image",
                "--models",
                str(bundles),
                "--to-parquet",
                str(tmp_path),
            ],
            "no such file",
        ),
        ([str(texts), "--model", "no-such-model", "--to-parquet", str(tmp_path / "o")], "no-such-model"),
        ([str(texts), "--model", str(bundles / "tiny-text"), "--to-server", server.target], "--collection"),
    ]
    for args, message in cases:
        assert batch_cli.main(["index", *args]) == 2
        assert message in capsys.readouterr().err
    # a collection of another dim is refused: nothing embedded, nothing written
    with server.client() as c:
        c.create_collection("dim16", model="tiny-image")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(random_images(1)[0])
    other = tmp_path / "models"
    from tests.tiny_models import make_image_bundle

    make_image_bundle(other, "wide", dim=32)
    args = [
        str(tmp_path / "img"),
        "--model",
        str(other / "wide"),
        "--to-server",
        server.target,
        "--collection",
        "dim16",
    ]
    assert batch_cli.main(["index", *args]) == 2
    assert "holds 16-d vectors" in capsys.readouterr().err


def test_command_line_on_a_running_cluster(ray_local, folder, bundles, server, client, tmp_path):
    """The installed command, as another process, joining this test's Ray with --address."""
    address = ray.get_runtime_context().gcs_address
    exe = Path(sys.executable).parent / "embedserve-batch"
    cmd = [
        str(exe),
        "index",
        str(folder / "cat"),
        "--model",
        str(bundles / "tiny-image"),
        "--address",
        address,
    ]
    cmd += [
        "--to-server",
        server.target,
        "--collection",
        "cli",
        "--num-workers",
        "1",
        "--errors",
        str(tmp_path / "e"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["done"] == PER_CLASS and summary["failed"] == 0
    assert client.describe_collection("cli").count == PER_CLASS


def test_folder_to_milvus_lite_then_served(ray_local, folder, bundles, tmp_path):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from embedserve.store.milvus import MilvusStore
    from tests.conftest import ServerThread, make_config

    lite = str(tmp_path / "lite.db")
    args = [
        str(folder / "cat"),
        "--model",
        str(bundles / "tiny-image"),
        "--to-milvus",
        lite,
        "--collection",
        "cats",
    ]
    args += ["--label-from-dir", "--errors", str(tmp_path / "e.csv")]
    assert run_batch(*args)["done"] == PER_CLASS
    assert run_batch(*args)["skipped"] == PER_CLASS  # resumes from the ids already in Milvus
    store = MilvusStore(lite)
    collection = store.get("cats")
    assert (collection.spec.model, collection.spec.dim, collection.size) == ("tiny-image", 16, PER_CLASS)
    store.close()
    # a server started on the same Milvus Lite file serves the job's collection as it is
    srv = ServerThread(make_config(bundles, tmp_path / "data", milvus_uri=lite))
    try:
        with srv.client() as c:
            data = (folder / "cat" / "03.png").read_bytes()
            hit = c.search("cats", [data], k=1)[0][0]
            assert (hit.id, hit.label) == ("03.png", "cat")
            assert hit.score == pytest.approx(1.0, abs=1e-5)
    finally:
        srv.stop()


def test_server_sink_takes_out_what_the_server_refuses_and_writes_the_rest(bundles, tmp_path):
    """Items the job's own checks pass but this server refuses (its label limit is smaller):
    each is reported with the server's reason; every other item, before and after it, is written."""
    from embedserve.batch.sinks import Rows, ServerSink
    from embedserve.limits import Limits
    from tests.conftest import ServerThread, make_config

    srv = ServerThread(make_config(bundles, tmp_path / "data", limits=Limits(max_label_bytes=8)))
    try:
        sink = ServerSink(srv.target, "strict", message_items=4)
        from embedserve.models.bundle import load_manifest

        sink.prepare(load_manifest(bundles / "tiny-image"))
        n = 10
        labels = ["ok"] * n
        labels[1] = labels[6] = "far too long a label"
        rows = Rows([f"r{i}" for i in range(n)], random_vectors_16(n), labels, [{} for _ in range(n)])
        refused = sink.write(rows)
        assert [i for i, _ in refused] == [1, 6]
        assert all("RESOURCE_EXHAUSTED" in why and "max_label_bytes" in why for _, why in refused)
        assert "earlier batches" not in refused[1][1]
        with srv.client() as c:
            assert c.describe_collection("strict").count == n - 2
            assert sink.existing([f"r{i}" for i in range(n)]) == {f"r{i}" for i in range(n)} - {"r1", "r6"}
    finally:
        srv.stop()


def random_vectors_16(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)
